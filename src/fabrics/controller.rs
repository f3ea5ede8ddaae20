//! Controller-wide state shared by a controller's admin and I/O queues.

use crate::nvme::log::{ErrorEntry, Health};
use crate::subsystem::Subsystem;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// Per-queue I/O counters. Each queue owns one and is its only writer; the
/// admin queue sums them for SMART.
#[derive(Default, Debug)]
pub struct IoStats {
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub read_cmds: AtomicU64,
    pub write_cmds: AtomicU64,
    /// The queue's ID and reactor, set when it connects.
    pub qid: AtomicU16,
    pub reactor: AtomicU16,
    /// The queue is gone (its counts still add to the controller's).
    pub closed: AtomicBool,
}

/// Adds to a counter that only this thread writes: a plain load and store,
/// not a locked read-modify-write (on x86 that is a full barrier, which
/// would wait for every store of the command's data copy to drain).
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl IoStats {
    pub fn add_read(&self, bytes: u64) {
        bump(&self.read_cmds, 1);
        bump(&self.bytes_read, bytes);
    }
    pub fn add_write(&self, bytes: u64) {
        bump(&self.write_cmds, 1);
        bump(&self.bytes_written, bytes);
    }
}

/// CSTS bits.
pub mod csts {
    pub const RDY: u32 = 1 << 0;
    pub const CFS: u32 = 1 << 1;
    pub const SHST_COMPLETE: u32 = 2 << 2;
    pub const SHST_MASK: u32 = 3 << 2;
}

#[derive(Default)]
struct ErrorLog {
    count: u64,
    /// Of the errors, unrecovered data errors (SMART's Media and Data
    /// Integrity Errors).
    media: u64,
    entries: VecDeque<ErrorEntry>,
}

/// State of one controller that its queues share. Queues on other reactors
/// read the atomics; the mutexes are taken only at Connect, on errors and for
/// log pages, never on the I/O fast path.
pub struct ControllerShared {
    pub cntlid: u16,
    pub subsys: Arc<Subsystem>,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    /// The listener its admin queue came in on, and the host's address.
    pub listener: u16,
    pub host_addr: Option<std::net::SocketAddr>,
    pub cc: AtomicU32,
    pub csts: AtomicU32,
    /// Number of I/O queues granted by Set Features (Number of Queues).
    pub io_queues: AtomicU16,
    /// Set when the controller is torn down (keep-alive expiry, admin queue
    /// gone): every queue of it closes.
    pub dead: AtomicBool,
    pub created: Instant,
    /// Keep-alive timeout in effect (for the control plane).
    pub kato_ms: AtomicU32,
    /// I/O queue IDs in use, and the reset epoch: a controller reset (CC.EN
    /// 1 -> 0) deletes every I/O queue, so it starts a new epoch and frees
    /// the IDs; queues of an older epoch are closed.
    io_qids: Mutex<(u32, Vec<bool>)>,
    epoch: AtomicU32,
    stats: Mutex<Vec<Arc<IoStats>>>,
    errors: Mutex<ErrorLog>,
    /// An event waits for an Asynchronous Event Request (a cheap check for
    /// the admin queue's timer).
    pub events_pending: AtomicBool,
    events: Mutex<Events>,
}

/// Asynchronous events not yet reported, and the Changed Namespace List.
#[derive(Default)]
struct Events {
    ns_changed: bool,
    discovery_changed: bool,
    changed: Vec<u32>,
}

/// Entries of the Changed Namespace List log page.
const CHANGED_NS_MAX: usize = 1024;

impl ControllerShared {
    pub fn new(
        cntlid: u16,
        subsys: Arc<Subsystem>,
        hostnqn: String,
        hostid: [u8; 16],
        io_queues: u16,
        origin: &super::Origin,
    ) -> ControllerShared {
        ControllerShared {
            cntlid,
            listener: origin.listener,
            host_addr: origin.peer,
            subsys,
            hostnqn,
            hostid,
            cc: AtomicU32::new(0),
            csts: AtomicU32::new(0),
            io_queues: AtomicU16::new(io_queues),
            dead: AtomicBool::new(false),
            created: Instant::now(),
            kato_ms: AtomicU32::new(0),
            io_qids: Mutex::new((0, Vec::new())),
            epoch: AtomicU32::new(0),
            stats: Mutex::new(Vec::new()),
            errors: Mutex::new(ErrorLog::default()),
            events_pending: AtomicBool::new(false),
            events: Mutex::new(Events::default()),
        }
    }

    /// Namespaces of the subsystem were added, removed or changed: a
    /// Namespace Attribute Changed event for the host, and their IDs in the
    /// Changed Namespace List.
    pub fn namespaces_changed(&self, nsids: &[u32]) {
        let mut e = self.events.lock().unwrap_or_else(|e| e.into_inner());
        for &n in nsids {
            if !e.changed.contains(&n) {
                e.changed.push(n);
            }
        }
        e.ns_changed = true;
        self.events_pending
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// What a discovery controller's host sees in the discovery log
    /// changed: a Discovery Log Page Change event.
    pub fn discovery_changed(&self) {
        let mut e = self.events.lock().unwrap_or_else(|e| e.into_inner());
        e.discovery_changed = true;
        self.events_pending
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Takes the pending events: (Namespace Attribute Changed, Discovery
    /// Log Page Change). One is reported per request; the other stays.
    pub fn take_events(&self) -> (bool, bool) {
        let mut e = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let ns = std::mem::take(&mut e.ns_changed);
        let disc = !ns && std::mem::take(&mut e.discovery_changed);
        self.events_pending
            .store(e.ns_changed || e.discovery_changed, Relaxed);
        (ns, disc)
    }

    /// The Changed Namespace List log page (4 KiB): the namespaces changed
    /// since it was last read, or FFFFFFFFh first when more than fit. Read
    /// without Retain Asynchronous Event, it starts over.
    pub fn changed_ns_log(&self, retain: bool) -> Vec<u8> {
        let mut e = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = vec![0u8; CHANGED_NS_MAX * 4];
        let mut ids = e.changed.clone();
        ids.sort_unstable();
        if ids.len() > CHANGED_NS_MAX {
            ids = vec![0xFFFF_FFFF];
        }
        for (i, n) in ids.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&n.to_le_bytes());
        }
        if !retain {
            e.changed.clear();
        }
        b
    }

    pub fn is_ready(&self) -> bool {
        self.csts.load(Relaxed) & csts::RDY != 0 && !self.dead.load(Relaxed)
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Relaxed)
    }

    pub fn kill(&self) {
        self.dead.store(true, Relaxed);
        self.csts.fetch_or(csts::CFS, Relaxed);
    }

    /// Claims an I/O queue ID: the reset epoch it belongs to, or `None` if
    /// the ID is in use.
    pub fn claim_qid(&self, qid: u16) -> Option<u32> {
        let mut g = self.io_qids.lock().unwrap_or_else(|e| e.into_inner());
        let (epoch, q) = &mut *g;
        let i = qid as usize;
        if q.len() <= i {
            q.resize(i + 1, false);
        }
        (!std::mem::replace(&mut q[i], true)).then_some(*epoch)
    }

    /// The controller was reset (CC.EN 1 -> 0): its I/O queues are deleted.
    pub fn delete_io_queues(&self) {
        let mut g = self.io_qids.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.wrapping_add(1);
        g.1.clear();
        self.epoch.store(g.0, Relaxed);
    }

    /// Whether an I/O queue of reset epoch `epoch` still exists.
    pub fn io_queue_live(&self, epoch: u32) -> bool {
        self.epoch.load(Relaxed) == epoch
    }

    /// Whether any I/O queue has ever been connected to this controller.
    /// I/O queues connected now.
    pub fn io_queue_count(&self) -> usize {
        let g = self.io_qids.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter().filter(|&&b| b).count()
    }

    pub fn had_io_queues(&self) -> bool {
        !self
            .io_qids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .is_empty()
    }

    /// Frees an I/O queue ID claimed in reset epoch `epoch` (a reset since
    /// has freed it already).
    pub fn release_qid(&self, qid: u16, epoch: u32) {
        let mut g = self.io_qids.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != epoch {
            return;
        }
        if let Some(s) = g.1.get_mut(qid as usize) {
            *s = false;
        }
    }

    pub fn register_stats(&self, s: Arc<IoStats>) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// The queues still open: (qid, reactor), by qid.
    pub fn queues(&self) -> Vec<(u16, u16)> {
        let mut v: Vec<(u16, u16)> = self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| !s.closed.load(Relaxed))
            .map(|s| (s.qid.load(Relaxed), s.reactor.load(Relaxed)))
            .collect();
        v.sort_unstable();
        v
    }

    pub fn health(&self) -> Health {
        let mut h = Health::default();
        for s in self.stats.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            h.bytes_read += s.bytes_read.load(Relaxed);
            h.bytes_written += s.bytes_written.load(Relaxed);
            h.read_cmds += s.read_cmds.load(Relaxed);
            h.write_cmds += s.write_cmds.load(Relaxed);
        }
        h.power_on_hours = self.created.elapsed().as_secs() / 3600;
        h.power_cycles = 1;
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        h.error_entries = errors.count;
        h.media_errors = errors.media;
        h
    }

    pub fn record_error(&self, mut e: ErrorEntry) {
        let mut log = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        log.count += 1;
        // Write Fault, Unrecovered Read Error and the end-to-end checks
        // (SCT 2, SC 80h-84h); a Compare Failure is not the medium's fault.
        let st = crate::nvme::Status(e.status);
        if st.sct() == 2 && (0x80..=0x84).contains(&st.sc()) {
            log.media += 1;
        }
        e.error_count = log.count;
        log.entries.push_front(e);
        log.entries.truncate(super::ERROR_LOG_ENTRIES);
    }

    /// Error log entries, newest first.
    pub fn error_entries(&self) -> Vec<ErrorEntry> {
        let log = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<ErrorEntry> = log.entries.iter().copied().collect();
        v.resize(super::ERROR_LOG_ENTRIES, ErrorEntry::default());
        v
    }
}

/// Live controllers by controller ID, for I/O queue Connect.
#[derive(Default)]
pub struct ControllerTable {
    next: u16,
    ctrls: HashMap<u16, Weak<ControllerShared>>,
}

/// Highest dynamic controller ID (FFF0h and up are reserved).
const MAX_CNTLID: u16 = 0xFFEF;

impl ControllerTable {
    /// Allocates a free controller ID and registers the controller `make`
    /// builds for it. None when all IDs are in use.
    pub fn create(
        &mut self,
        make: impl FnOnce(u16) -> ControllerShared,
    ) -> Option<Arc<ControllerShared>> {
        self.ctrls.retain(|_, w| w.strong_count() > 0);
        for _ in 0..MAX_CNTLID {
            self.next = if self.next >= MAX_CNTLID {
                1
            } else {
                self.next + 1
            };
            if !self.ctrls.contains_key(&self.next) {
                let c = Arc::new(make(self.next));
                self.ctrls.insert(self.next, Arc::downgrade(&c));
                return Some(c);
            }
        }
        None
    }

    pub fn get(&self, cntlid: u16) -> Option<Arc<ControllerShared>> {
        self.ctrls.get(&cntlid).and_then(|w| w.upgrade())
    }

    pub fn remove(&mut self, cntlid: u16) {
        self.ctrls.remove(&cntlid);
    }

    pub fn len(&self) -> usize {
        self.ctrls.values().filter(|w| w.strong_count() > 0).count()
    }

    /// The live controllers, by controller ID.
    pub fn all(&self) -> Vec<Arc<ControllerShared>> {
        let mut v: Vec<_> = self.ctrls.values().filter_map(|w| w.upgrade()).collect();
        v.sort_by_key(|c| c.cntlid);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
