//! The TOML configuration: schema, validation with `file:line:col` errors,
//! derived identities, and the embedded default.
//!
//! ```toml
//! [target]
//! cores = [0]
//!
//! [[listener]]
//! transport = "tcp"
//! address = "127.0.0.1"
//! port = 4420
//!
//! [[subsystem]]
//! nqn = "nqn.2026-01.io.nvmf-target:ram0"
//! allow_any_host = true
//!
//! [[subsystem.namespace]]
//! backend = "ram"
//! size = "1GiB"
//! ```
//!
//! [`Config::parse`] reports every problem it finds, each at the position of
//! the offending key or value (a missing field at the header of its table).
//! Identifiers left out of the config (serial, namespace UUID/NGUID/EUI-64)
//! are derived from the subsystem NQN and NSID, so they are stable across
//! restarts; see [`derived_serial`] and [`derived_namespace_ids`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

mod emit;
mod ident;
mod size;
mod tree;
mod validate;

pub use ident::{
    derived_namespace_ids, derived_serial, format_uuid, parse_eui64, parse_nguid, parse_uuid,
    validate_nqn, NQN_MAX_LEN,
};
pub use size::parse_size;

/// The well-known NQN of the discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// The model number a subsystem reports when the config gives none.
pub const DEFAULT_MODEL: &str = "nvmf-target";

/// NQN of the subsystem in [`Config::embedded_default`].
pub const DEFAULT_SUBSYSTEM_NQN: &str = "nqn.2026-01.io.nvmf-target:default";

/// The whole configuration of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub target: TargetConfig,
    pub listeners: Vec<ListenerConfig>,
    pub subsystems: Vec<SubsystemConfig>,
    /// `[metrics] listen`: where the Prometheus endpoint listens (off when
    /// absent).
    pub metrics: Option<SocketAddr>,
}

/// Where `nvmf-target ctl` finds a target that does not say otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/nvmf-target.sock";

/// `[target]`: reactors and transport limits.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Cores to run a reactor on (unique, each below the number of online CPUs).
    pub cores: Vec<usize>,
    pub idle: IdlePolicy,
    /// Bytes of data a command capsule may carry (multiple of 16, at most 128 KiB).
    pub in_capsule_data_size: u32,
    /// Largest transfer of one command in bytes (power of two, 4 KiB to 8 MiB); becomes MDTS.
    pub max_io_size: u32,
    /// Entries per I/O queue (2 to 1024).
    pub max_queue_depth: u16,
    /// I/O queues per controller (1 to 128).
    pub max_io_queues: u16,
    /// Whether the target accepts header digests.
    pub hdr_digest: bool,
    /// Whether the target accepts data digests.
    pub data_digest: bool,
    /// Largest keep-alive timeout a host may ask for, in milliseconds.
    pub keep_alive_timeout_ms_max: u32,
    /// Unix socket of `nvmf-target ctl` (mode 0600); `None`: none.
    pub control_socket: Option<PathBuf>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            cores: vec![0],
            idle: IdlePolicy::Adaptive,
            in_capsule_data_size: 8192,
            max_io_size: 131072,
            max_queue_depth: 128,
            max_io_queues: 8,
            hdr_digest: true,
            data_digest: true,
            keep_alive_timeout_ms_max: 120_000,
            control_socket: Some(PathBuf::from(DEFAULT_CONTROL_SOCKET)),
        }
    }
}

/// What a reactor does when it has no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Keep polling: lowest latency, one full core per reactor.
    Busy,
    /// Poll while there is work, then sleep in the kernel with a timeout.
    Adaptive,
    /// Sleep in the kernel as soon as nothing is left to do: for machines
    /// where polling takes the CPU from what the target waits on (a
    /// one-CPU VM running Soft-RoCE, whose work is the kernel's).
    Sleep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Rdma,
}

impl TransportKind {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Rdma => "rdma",
        }
    }
}

/// `[[listener]]`: an address the target accepts connections on.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// What subsystems' `listeners` and `ctl` call it; unique. Defaults to
    /// `TRANSPORT:ADDRESS:PORT` ([`ListenerConfig::default_name`]).
    pub name: String,
    pub transport: TransportKind,
    pub addr: SocketAddr,
    /// For an RDMA listener: serve this transport instead when RDMA cannot
    /// be set up on the address (`fallback = "tcp"`).
    pub fallback: Option<TransportKind>,
    /// A discovery port: it serves the discovery subsystem only, and no
    /// NVM subsystem is served or advertised on it.
    pub discovery: bool,
}

impl ListenerConfig {
    /// The name a listener gets when the config gives none, such as
    /// `tcp:127.0.0.1:4420` or `rdma:[fe80::1]:4420`.
    pub fn default_name(transport: TransportKind, addr: SocketAddr) -> String {
        format!("{}:{addr}", transport.name())
    }

    /// A listener with its default name.
    pub fn new(transport: TransportKind, addr: SocketAddr, discovery: bool) -> ListenerConfig {
        ListenerConfig {
            name: Self::default_name(transport, addr),
            transport,
            addr,
            fallback: None,
            discovery,
        }
    }
}

/// `[[subsystem]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubsystemConfig {
    pub nqn: String,
    /// At most 20 printable ASCII characters.
    pub serial: String,
    /// At most 40 printable ASCII characters.
    pub model: String,
    pub allow_any_host: bool,
    /// Host NQNs allowed to connect (empty when `allow_any_host`).
    pub hosts: Vec<String>,
    /// Names of the listeners it is served on; `None`: every listener that
    /// is not a discovery port.
    pub listeners: Option<Vec<String>>,
    /// In the order of the config file.
    pub namespaces: Vec<NamespaceConfig>,
}

/// `[[subsystem.namespace]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceConfig {
    pub nsid: u32,
    pub backend: BackendConfig,
    /// 512 or 4096.
    pub block_size: u32,
    pub uuid: [u8; 16],
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    Ram {
        size: u64,
    },
    Null {
        size: u64,
    },
    /// A file or block device. Without `size`, the size of the file or device
    /// at open time is used.
    File {
        path: PathBuf,
        size: Option<u64>,
        direct: bool,
    },
    /// An NVMe controller this process drives (`pci` a PCI address, or
    /// "sim" for a simulated one of `size` bytes), its namespace `nsid`.
    Nvme {
        pci: String,
        nsid: u32,
        size: Option<u64>,
    },
    /// An NVMe namespace the kernel keeps, driven through its character
    /// device (`/dev/ngXnY`) with io_uring passthrough commands.
    NvmePassthru {
        path: PathBuf,
    },
    /// Memory that fails on purpose, as `faults` say: for testing hosts,
    /// multipath and the target's own error handling.
    Fault {
        size: u64,
        faults: Vec<FaultRule>,
    },
}

/// One `[[subsystem.namespace.fault]]`: which operations it hits, and what
/// it does to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub op: FaultOp,
    /// First block of the range it hits.
    pub lba: u64,
    /// Blocks in the range (`None`: to the end).
    pub blocks: Option<u64>,
    /// The failure; `None` with a delay: the operation succeeds late.
    pub error: Option<FaultError>,
    /// Held this long before completing (or failing).
    pub delay_ms: u64,
    /// Hits every `every`-th matching operation (1: all of them).
    pub every: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Read,
    Write,
    Flush,
    WriteZeroes,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// EIO: Unrecovered Read Error, Write Fault.
    Media,
    /// ENOSPC: Capacity Exceeded.
    NoSpace,
    /// Half the bytes moved, then the error a short transfer gets.
    Short,
}

impl FaultOp {
    pub fn name(self) -> &'static str {
        match self {
            FaultOp::Read => "read",
            FaultOp::Write => "write",
            FaultOp::Flush => "flush",
            FaultOp::WriteZeroes => "write_zeroes",
            FaultOp::Any => "any",
        }
    }
}

impl FaultError {
    pub fn name(self) -> &'static str {
        match self {
            FaultError::Media => "media",
            FaultError::NoSpace => "no_space",
            FaultError::Short => "short",
        }
    }
}

impl BackendConfig {
    /// The size in bytes the config gives, if any.
    pub fn size(&self) -> Option<u64> {
        match self {
            BackendConfig::Ram { size }
            | BackendConfig::Null { size }
            | BackendConfig::Fault { size, .. } => Some(*size),
            BackendConfig::File { size, .. } | BackendConfig::Nvme { size, .. } => *size,
            BackendConfig::NvmePassthru { .. } => None,
        }
    }
}

/// One problem in a config file, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a config. On failure, returns every error found,
    /// sorted by position; a TOML syntax error is reported alone.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, Vec<ConfigError>> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::parse_with_cpus(text, file_name, cpus)
    }

    /// [`Config::parse`] for a machine with `cpus` online CPUs.
    pub(crate) fn parse_with_cpus(
        text: &str,
        file_name: &str,
        cpus: usize,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut ctx = validate::Ctx::new(text, file_name, cpus);
        match tree::parse_document(text) {
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let detail = e
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                ctx.error_at(offset, format!("TOML syntax error: {detail}"));
                Err(ctx.errors)
            }
            Ok(root) => match validate::validate(&mut ctx, &root) {
                Some(config) if ctx.errors.is_empty() => Ok(config),
                _ => {
                    let mut errors = ctx.errors;
                    errors.sort_by_key(|e| (e.line, e.col));
                    Err(errors)
                }
            },
        }
    }

    /// Reads and parses a config file. A file that cannot be read gives one
    /// error at 1:1.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &name),
            Err(e) => Err(vec![ConfigError {
                file: name,
                line: 1,
                col: 1,
                message: format!("cannot read the config file: {e}"),
            }]),
        }
    }

    /// The config used when none is given: listeners on 127.0.0.1 ports 4420
    /// and 8009 (the discovery port), and one subsystem open to any host with a 1 GiB RAM namespace.
    pub fn embedded_default() -> Config {
        let nqn = DEFAULT_SUBSYSTEM_NQN;
        let (uuid, nguid, eui64) = derived_namespace_ids(nqn, 1);
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Config {
            target: TargetConfig::default(),
            listeners: vec![
                ListenerConfig::new(TransportKind::Tcp, SocketAddr::new(localhost, 4420), false),
                ListenerConfig::new(TransportKind::Tcp, SocketAddr::new(localhost, 8009), true),
            ],
            subsystems: vec![SubsystemConfig {
                nqn: nqn.to_owned(),
                serial: derived_serial(nqn),
                model: DEFAULT_MODEL.to_owned(),
                allow_any_host: true,
                hosts: Vec::new(),
                listeners: None,
                namespaces: vec![NamespaceConfig {
                    nsid: 1,
                    backend: BackendConfig::Ram { size: 1 << 30 },
                    block_size: 512,
                    uuid,
                    nguid,
                    eui64,
                }],
            }],
            metrics: None,
        }
    }

    /// The config as TOML text that [`Config::parse`] reads back to an equal
    /// config. Identifiers equal to the derived ones are left out, so that a
    /// copy with another NQN gets identifiers of its own.
    pub fn to_toml(&self) -> String {
        emit::to_toml(self)
    }
}

#[cfg(test)]
mod tests;
