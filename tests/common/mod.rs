//! Shared helpers for the loopback integration tests: start a real target
//! (reactors, io_uring, sockets) from TOML text on ephemeral ports, connect
//! the user-space initiator to it, and small utilities (deterministic data,
//! status checks, raw PDU connections).
//!
//! Every test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nvmf_initiator::pdu::{self, IcReq, Pdu, PduConfig, TermReq};
use nvmf_initiator::{Controller, Error, Queue, QueueOptions};
use nvmf_target::config::Config;
use nvmf_target::reactor::Runtime;

/// NQN of the subsystem in [`basic_toml`].
pub const NQN: &str = "nqn.2026-01.io.nvmf-target:test";
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// NSIDs of [`basic_toml`]: ram with 512-byte blocks, ram with 4096-byte
/// blocks, null with 512-byte blocks.
pub const NS_RAM512: u32 = 1;
pub const NS_RAM4K: u32 = 2;
pub const NS_NULL: u32 = 3;
/// Size of each RAM namespace of [`basic_toml`].
pub const RAM_SIZE: u64 = 64 << 20;
pub const NULL_SIZE: u64 = 1 << 30;

/// Default `[target]` max_io_size (MDTS) of [`basic_toml`].
pub const MAX_IO: u32 = 128 * 1024;

/// A config with one subsystem [`NQN`] open to any host, three namespaces
/// (see [`NS_RAM512`]...) and one TCP listener on 127.0.0.1. `target_extra`
/// is appended to the `[target]` table.
pub fn basic_toml(target_extra: &str) -> String {
    // Targets run side by side: none takes the default control socket.
    let socket = if target_extra.contains("control_socket") {
        ""
    } else {
        "control_socket = \"\""
    };
    format!(
        r#"
[target]
cores = [0]
{socket}
{target_extra}

[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = 4420

[[subsystem]]
nqn = "{NQN}"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
backend = "ram"
size = "64MiB"
block_size = 512

[[subsystem.namespace]]
nsid = 2
backend = "ram"
size = "64MiB"
block_size = 4096

[[subsystem.namespace]]
nsid = 3
backend = "null"
size = "1GiB"
block_size = 512
"#
    )
}

/// The cores the tests run reactors on: two when the machine has them.
/// A TCP port nothing listens on just now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn test_cores() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 2 {
        vec![0, 1]
    } else {
        vec![0]
    }
}

/// A running target; stopped when dropped.
pub struct TestTarget {
    pub rt: Option<Runtime>,
    /// Bound listener addresses, in config order.
    pub addrs: Vec<SocketAddr>,
    pub config: Config,
}

impl TestTarget {
    /// The first listener.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn shutdown(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown();
        }
    }
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown();
        }
    }
}

/// Parses `toml`, switches every listener to an ephemeral port, runs one
/// reactor per core of [`test_cores`] and starts the target.
pub fn start(toml: &str) -> TestTarget {
    let mut cfg = match Config::parse(toml, "test.toml") {
        Ok(c) => c,
        Err(errs) => panic!(
            "test config does not parse:\n{}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    for l in &mut cfg.listeners {
        l.addr.set_port(0);
    }
    cfg.target.cores = test_cores();
    start_config(cfg)
}

/// Starts a target from a config as given (ports included).
pub fn start_config(cfg: Config) -> TestTarget {
    let rt = Runtime::start(&cfg).expect("the target starts");
    let addrs = rt.listen_addrs().to_vec();
    TestTarget {
        rt: Some(rt),
        addrs,
        config: cfg,
    }
}

/// [`basic_toml`] with nothing extra, started.
pub fn start_basic() -> TestTarget {
    start(&basic_toml(""))
}

/// Queue options for tests: the library defaults with bounded waits.
pub fn opts() -> QueueOptions {
    QueueOptions {
        io_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        ..QueueOptions::default()
    }
}

/// Options for a host with another NQN and host ID.
pub fn opts_for_host(n: u8) -> QueueOptions {
    let mut hostid = nvmf_initiator::queue::DEFAULT_HOSTID;
    hostid[15] = n;
    QueueOptions {
        hostnqn: format!(
            "nqn.2014-08.org.nvmexpress:uuid:{}",
            nvmf_initiator::uuid_to_string(&hostid)
        ),
        hostid,
        ..opts()
    }
}

/// Connects and enables a controller of [`NQN`] with `io_queues` I/O queues.
pub fn connect(addr: SocketAddr, io_queues: u16) -> Controller {
    connect_with(addr, NQN, &opts(), io_queues)
}

pub fn connect_with(
    addr: SocketAddr,
    nqn: &str,
    opts: &QueueOptions,
    io_queues: u16,
) -> Controller {
    match Controller::connect(addr, nqn, opts, io_queues) {
        Ok(c) => c,
        Err(e) => panic!("connecting to {nqn} at {addr}: {e}"),
    }
}

/// The status (`SCT << 8 | SC`), DNR bit and dw0 of a failed command;
/// panics on success or on any other kind of error.
pub fn status_of<T: std::fmt::Debug>(r: nvmf_initiator::Result<T>) -> (u16, bool, u32) {
    match r {
        Err(Error::Status { status, dnr, dw0 }) => (status, dnr, dw0),
        Err(e) => panic!("expected an NVMe status, got error: {e}"),
        Ok(v) => panic!("expected an NVMe status, the command succeeded: {v:?}"),
    }
}

/// Asserts that `r` failed with `status` (`SCT << 8 | SC`); returns dw0.
#[track_caller]
pub fn expect_status<T: std::fmt::Debug>(r: nvmf_initiator::Result<T>, status: u16) -> u32 {
    let (got, _, dw0) = status_of(r);
    assert_eq!(
        got,
        status,
        "expected status {status:#06x} ({}), got {got:#06x} ({})",
        nvmf_initiator::command::status_str(status),
        nvmf_initiator::command::status_str(got)
    );
    dw0
}

/// Like [`expect_status`], and the DNR bit must be set.
#[track_caller]
pub fn expect_status_dnr<T: std::fmt::Debug>(r: nvmf_initiator::Result<T>, status: u16) -> u32 {
    let (got, dnr, dw0) = status_of(r);
    assert_eq!(
        got,
        status,
        "expected status {status:#06x} ({}), got {got:#06x} ({})",
        nvmf_initiator::command::status_str(status),
        nvmf_initiator::command::status_str(got)
    );
    assert!(dnr, "status {status:#06x} without DNR");
    dw0
}

/// A small deterministic PRNG (xorshift64*), no crates needed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// `len` bytes of deterministic data that differ with `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Asserts two buffers are equal, reporting the first difference.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} of {}: got {:#04x}, want {:#04x}",
            got.len(),
            got[i],
            want[i]
        );
    }
}

pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
/// A zero-padded ASCII field.
pub fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// Writes then reads back `len` bytes at `slba` of a namespace on an I/O
/// queue, checking every byte.
pub fn write_read_check(q: &mut Queue, nsid: u32, bs: u32, slba: u64, seed: u64, len: usize) {
    let data = pattern(seed, len);
    if let Err(e) = q.write(nsid, slba, &data, bs) {
        panic!("write of {len} bytes at LBA {slba} of ns {nsid}: {e}");
    }
    let nlb0 = (len / bs as usize - 1) as u16;
    let got = match q.read(nsid, slba, nlb0, bs) {
        Ok(g) => g,
        Err(e) => panic!("read of {len} bytes at LBA {slba} of ns {nsid}: {e}"),
    };
    assert_same(&got, &data, &format!("ns {nsid} LBA {slba} ({len} bytes)"));
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------ raw connections

/// A bare TCP connection to the target for hand-made PDUs (including ones
/// sent before or instead of the ICReq).
pub struct RawConn {
    pub s: TcpStream,
    /// Codec settings for controller-to-host PDUs.
    pub rx: PduConfig,
}

impl RawConn {
    pub fn open(addr: SocketAddr) -> RawConn {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        RawConn {
            s,
            rx: PduConfig::default(),
        }
    }

    /// Opens a connection and completes the ICReq/ICResp exchange.
    pub fn open_ic(addr: SocketAddr, hdgst: bool, ddgst: bool) -> RawConn {
        let mut c = RawConn::open(addr);
        c.send(&icreq(hdgst, ddgst));
        match c.recv() {
            Pdu::IcResp(r) => {
                c.rx = PduConfig::new(r.hdgst, r.ddgst, 0);
            }
            other => panic!("expected ICResp, got {other:?}"),
        }
        c
    }

    pub fn send(&mut self, b: &[u8]) {
        // The target may already have closed after an earlier bad PDU.
        let _ = self.s.write_all(b);
    }

    /// Reads one PDU's bytes; None on EOF/reset.
    pub fn recv_bytes(&mut self) -> Option<Vec<u8>> {
        let mut h = [0u8; 8];
        if let Err(e) = self.s.read_exact(&mut h) {
            return match e.kind() {
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => None,
                _ => panic!("reading a PDU header: {e}"),
            };
        }
        let plen = le32(&h, 4) as usize;
        assert!(
            (8..=(16 << 20)).contains(&plen),
            "target sent PLEN {plen} (header {h:02x?})"
        );
        let mut b = vec![0u8; plen];
        b[..8].copy_from_slice(&h);
        self.s
            .read_exact(&mut b[8..])
            .unwrap_or_else(|e| panic!("reading a PDU of {plen} bytes: {e}"));
        Some(b)
    }

    /// Reads and strictly decodes one PDU.
    pub fn recv(&mut self) -> Pdu {
        let b = self
            .recv_bytes()
            .expect("the target closed the connection instead of answering");
        pdu::decode(&b, &self.rx).unwrap_or_else(|e| panic!("undecodable PDU from target: {e}"))
    }

    /// Expects a C2HTermReq and then the connection to close.
    pub fn expect_term(&mut self, fes: u16) -> TermReq {
        let t = match self.recv() {
            Pdu::C2hTermReq(t) => t,
            other => panic!("expected C2HTermReq (FES {fes:#x}), got {other:?}"),
        };
        assert_eq!(
            t.fes,
            fes,
            "FES {:#x} ({}), expected {fes:#x} ({})",
            t.fes,
            pdu::fes_str(t.fes),
            pdu::fes_str(fes)
        );
        self.expect_closed();
        t
    }

    /// Expects the target to close the connection (no more bytes).
    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        match self.s.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("expected the connection to close, got {n} more bytes"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close: {e}"),
        }
    }

    pub fn close(self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }
}

/// An ICReq PDU (PFV 0, HPDA 0).
pub fn icreq(hdgst: bool, ddgst: bool) -> Vec<u8> {
    Pdu::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        hdgst,
        ddgst,
        maxr2t: 0,
    })
    .encode(&PduConfig::default())
}

/// Expects the queue to receive a C2HTermReq with `fes`, then be closed.
/// Returns the Terminate Request.
#[track_caller]
pub fn expect_queue_term(q: &mut Queue, fes: u16) -> TermReq {
    let t = match q.recv_raw_pdu() {
        Ok(Pdu::C2hTermReq(t)) => t,
        Ok(other) => panic!("expected C2HTermReq (FES {fes:#x}), got {other:?}"),
        Err(e) => panic!("expected C2HTermReq (FES {fes:#x}), got error: {e}"),
    };
    assert_eq!(
        t.fes,
        fes,
        "FES {:#x} ({}), expected {fes:#x} ({})",
        t.fes,
        pdu::fes_str(t.fes),
        pdu::fes_str(fes)
    );
    if let Err(e) = q.wait_closed(Duration::from_secs(10)) {
        panic!("the target did not close the connection after its C2HTermReq: {e}");
    }
    t
}

/// Status values (`SCT << 8 | SC`) the tests expect.
pub mod sc {
    pub const INVALID_OPCODE: u16 = 0x0001;
    pub const INVALID_FIELD: u16 = 0x0002;
    pub const ABORT_REQUESTED: u16 = 0x0007;
    pub const ABORTED_FAILED_FUSED: u16 = 0x0009;
    pub const ABORTED_MISSING_FUSED: u16 = 0x000A;
    pub const INVALID_NS: u16 = 0x000B;
    pub const CMD_SEQ_ERROR: u16 = 0x000C;
    pub const SGL_LENGTH_INVALID: u16 = 0x000F;
    pub const SGL_TYPE_INVALID: u16 = 0x0011;
    pub const HOST_ID_INCONSISTENT: u16 = 0x0018;
    pub const KEEP_ALIVE_INVALID: u16 = 0x001A;
    pub const TRANSIENT_TRANSPORT: u16 = 0x0022;
    pub const LBA_OUT_OF_RANGE: u16 = 0x0080;
    pub const AER_LIMIT: u16 = 0x0105;
    pub const INVALID_LOG_PAGE: u16 = 0x0109;
    pub const NOT_SAVEABLE: u16 = 0x010D;
    pub const NOT_CHANGEABLE: u16 = 0x010E;
    pub const CONNECT_FORMAT: u16 = 0x0180;
    pub const CONNECT_INVALID_PARAM: u16 = 0x0182;
    pub const COMMAND_SIZE_LIMIT: u16 = 0x0183;
    pub const CONNECT_INVALID_HOST: u16 = 0x0184;
    pub const COMPARE_FAILURE: u16 = 0x0285;
}

/// The target binary started with `--config CONFIG` (and `env`), quiet;
/// killed when dropped.
pub struct Spawned(pub std::process::Child);

impl Spawned {
    pub fn start(config: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> Spawned {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nvmf-target"));
        cmd.arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Spawned(cmd.spawn().expect("spawn nvmf-target"))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
