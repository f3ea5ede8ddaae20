//! Subsystems, namespaces and host access: the read-mostly tables every
//! reactor consults.

use crate::backend::{self, Backend};
use crate::config::{Config, ListenerConfig, SubsystemConfig, TargetConfig, DISCOVERY_NQN};
use crate::fabrics::controller::ControllerTable;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Highest namespace ID a subsystem may hold (Identify Controller NN).
pub const MAX_NSID: u32 = 1024;

/// One exported namespace.
pub struct Namespace {
    pub nsid: u32,
    pub block_size: u32,
    pub lba_shift: u32,
    pub num_blocks: u64,
    pub uuid: [u8; 16],
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    pub backend: Arc<dyn Backend>,
    /// Makes Compare and Write atomic against writes from every queue
    /// (shared by the namespace's versions over the same storage: a
    /// resize keeps it).
    pub gate: Arc<crate::fabrics::gate::Gate>,
    /// Per-queue I/O statistics (kept, like the gate, by a resize).
    pub stats: Arc<crate::fabrics::nsstats::Registry>,
}

impl Namespace {
    /// Opens the backend a namespace config names.
    pub fn open(
        nqn: &str,
        n: &crate::config::NamespaceConfig,
        t: &TargetConfig,
    ) -> std::io::Result<Namespace> {
        let reactors = t.cores.len().max(1);
        let err = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{nqn} nsid {}: {e}", n.nsid))
        };
        let interrupts = t.idle != crate::config::IdlePolicy::Busy;
        let backend = backend::open(
            &n.backend,
            n.block_size,
            reactors,
            t.max_io_size,
            interrupts,
        )
        .map_err(err)?;
        // A device's own block size wins over the config's.
        let block_size = backend.block_size().unwrap_or(n.block_size);
        let num_blocks = backend.size() / block_size as u64;
        Ok(Namespace {
            nsid: n.nsid,
            block_size,
            lba_shift: block_size.trailing_zeros(),
            num_blocks,
            uuid: n.uuid,
            nguid: n.nguid,
            eui64: n.eui64,
            backend,
            gate: Default::default(),
            stats: Default::default(),
        })
    }
}

/// An NVM subsystem (or the discovery subsystem).
pub struct Subsystem {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    pub discovery: bool,
    /// Who may connect and what it exports: replaced whole by a reload.
    state: Mutex<Arc<Exports>>,
    /// Bumped with every replacement of `state`: an I/O queue compares it
    /// with its own copy's on each command (a load of a line written only
    /// by reloads) and takes the new state when it moved.
    pub generation: AtomicU64,
}

/// A subsystem's hosts and namespaces at one moment.
pub struct Exports {
    pub allow_any_host: bool,
    pub hosts: Vec<String>,
    /// Sorted by nsid.
    pub namespaces: Vec<Arc<Namespace>>,
    /// Names of the listeners it is served on; `None`: every listener that
    /// is not a discovery port.
    pub listeners: Option<Vec<String>>,
}

impl Exports {
    pub fn namespace(&self, nsid: u32) -> Option<&Arc<Namespace>> {
        self.namespaces
            .binary_search_by_key(&nsid, |n| n.nsid)
            .ok()
            .map(|i| &self.namespaces[i])
    }

    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.iter().any(|h| h == hostnqn)
    }

    /// Whether an NVM subsystem with these exports is served on `l`.
    pub fn served_on(&self, l: &Listener) -> bool {
        match &self.listeners {
            None => !l.discovery,
            Some(names) => names.contains(&l.name),
        }
    }
}

impl Subsystem {
    /// The current hosts and namespaces (a lock and a reference count: not
    /// for the I/O path, which keeps its own copy).
    pub fn exports(&self) -> Arc<Exports> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the hosts and namespaces (a reload).
    pub fn set_exports(&self, e: Exports) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *g = Arc::new(e);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.discovery || self.exports().host_allowed(hostnqn)
    }

    /// Whether it is served on listener `l` (the discovery subsystem is
    /// served on every listener).
    pub fn served_on(&self, l: &Listener) -> bool {
        self.discovery || self.exports().served_on(l)
    }

    pub fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.exports().namespace(nsid).cloned()
    }

    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.exports().namespaces.clone()
    }

    pub fn from_config(c: &SubsystemConfig, t: &TargetConfig) -> std::io::Result<Subsystem> {
        let mut namespaces = Vec::new();
        for n in &c.namespaces {
            namespaces.push(Arc::new(Namespace::open(&c.nqn, n, t)?));
        }
        namespaces.sort_by_key(|n| n.nsid);
        Ok(Subsystem {
            nqn: c.nqn.clone(),
            serial: c.serial.clone(),
            model: c.model.clone(),
            discovery: false,
            state: Mutex::new(Arc::new(Exports {
                allow_any_host: c.allow_any_host,
                hosts: c.hosts.clone(),
                namespaces,
                listeners: c.listeners.clone(),
            })),
            generation: AtomicU64::new(0),
        })
    }

    fn discovery_subsystem() -> Subsystem {
        Subsystem {
            nqn: DISCOVERY_NQN.to_string(),
            serial: "DISCOVERY".to_string(),
            model: "nvmf-target discovery".to_string(),
            discovery: true,
            state: Mutex::new(Arc::new(Exports {
                allow_any_host: true,
                hosts: Vec::new(),
                namespaces: Vec::new(),
                listeners: None,
            })),
            generation: AtomicU64::new(0),
        }
    }
}

/// A listener as the discovery log describes it: which transport, where,
/// and the transport's address subtype (TSAS), as the transport says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// TRTYPE: 1 = RDMA, 3 = TCP.
    pub trtype: u8,
    pub addr: std::net::SocketAddr,
    pub tsas: [u8; 8],
}

/// A listener of the running target, as Connect and the discovery log see
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its port ID in the discovery log (PORTID), and what a connection
    /// accepted on it is marked with; never reused while the target runs.
    pub id: u16,
    pub name: String,
    /// A discovery port: only the discovery subsystem is served on it.
    pub discovery: bool,
    pub port: Port,
}

impl Listener {
    /// A listener as `l` describes it (with the address it is bound to).
    pub fn new(id: u16, l: &ListenerConfig) -> Listener {
        Listener {
            id,
            name: l.name.clone(),
            discovery: l.discovery,
            port: crate::transport::port(l),
        }
    }
}

/// Everything the queues of a running target share.
pub struct Target {
    pub config: TargetConfig,
    /// The listeners (the discovery log's ports), replaced whole when one
    /// is added or removed; read at Connect and for the discovery log.
    listeners: Mutex<Arc<Vec<Listener>>>,
    next_listener: std::sync::atomic::AtomicU16,
    /// The NVM subsystems; a reload adds and removes them (locked at
    /// Connect, for the discovery log and by the control plane only).
    subsystems: Mutex<Vec<Arc<Subsystem>>>,
    pub discovery: Arc<Subsystem>,
    /// Controllers by ID; locked only at Connect and teardown, never per I/O.
    pub controllers: Mutex<ControllerTable>,
    /// Discovery log generation counter.
    pub genctr: AtomicU64,
}

impl Target {
    /// Opens every namespace's backend.
    pub fn new(cfg: &Config) -> std::io::Result<Target> {
        let subsystems = cfg
            .subsystems
            .iter()
            .map(|s| Subsystem::from_config(s, &cfg.target).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let listeners: Vec<Listener> = cfg
            .listeners
            .iter()
            .zip(1..)
            .map(|(l, id)| Listener::new(id, l))
            .collect();
        Ok(Target {
            config: cfg.target.clone(),
            next_listener: std::sync::atomic::AtomicU16::new(listeners.len() as u16 + 1),
            listeners: Mutex::new(Arc::new(listeners)),
            subsystems: Mutex::new(subsystems),
            discovery: Arc::new(Subsystem::discovery_subsystem()),
            controllers: Mutex::new(ControllerTable::default()),
            genctr: AtomicU64::new(1),
        })
    }

    pub fn find_subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        if nqn == DISCOVERY_NQN {
            return Some(self.discovery.clone());
        }
        self.subsystems().into_iter().find(|s| s.nqn == nqn)
    }

    /// The NVM subsystems, in config order.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the list of NVM subsystems (a reload); the discovery log's
    /// generation counter moves.
    pub fn set_subsystems(&self, v: Vec<Arc<Subsystem>>) {
        *self.subsystems.lock().unwrap_or_else(|e| e.into_inner()) = v;
        self.genctr
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The listeners, in the order they were added.
    pub fn listeners(&self) -> Arc<Vec<Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Listener `id`, while it exists.
    pub fn listener(&self, id: u16) -> Option<Listener> {
        self.listeners().iter().find(|l| l.id == id).cloned()
    }

    /// An ID for a new listener (1 to 65535; IDs are not reused).
    pub fn new_listener_id(&self) -> Option<u16> {
        use std::sync::atomic::Ordering::Relaxed;
        self.next_listener
            .fetch_update(Relaxed, Relaxed, |n| n.checked_add(1))
            .ok()
            .filter(|&id| id != 0)
    }

    /// Replaces the listeners (a reload); the discovery log's generation
    /// counter moves.
    pub fn set_listeners(&self, v: Vec<Listener>) {
        *self.listeners.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(v);
        self.genctr
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// MDTS value for Identify Controller: max transfer = 2^mdts * 4 KiB.
    pub fn mdts(&self) -> u8 {
        (self.config.max_io_size / 4096).max(1).trailing_zeros() as u8
    }
}
