//! One NVMe queue (admin or I/O) of a fabrics controller: Connect, Property
//! Get/Set, and dispatch to the admin and I/O command handlers.

use super::admin::AdminState;
use super::admit::TransportCaps;
use super::controller::{csts, ControllerShared, IoStats};
use crate::buf::Buffers;
use crate::nvme::log::ErrorEntry;
use crate::nvme::{fctype, get_str, prop, Command, Completion, Status};
use crate::subsystem::Target;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// A completed command: the completion and, for reads, the data to send to
/// the host before it: `shared` (backend memory sent without copying) when
/// set, `data` otherwise.
#[derive(Debug, Default)]
pub struct Response {
    pub cqe: Completion,
    pub data: Vec<u8>,
    pub shared: Option<nvmf_sys::RegionSlice>,
}

/// What the transport should do after a timer tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Continue,
    /// Close the connection: the controller is gone.
    Close(&'static str),
}

pub(super) enum Role {
    Unconnected,
    Admin(Box<AdminState>),
    Io(Arc<ControllerShared>),
}

/// Connect command fields (SQE bytes 40-51).
struct ConnectCmd {
    recfmt: u16,
    qid: u16,
    sqsize: u16,
    cattr: u8,
    kato: u32,
}

/// Offsets used in Connect Invalid Parameters responses (IPO), with IATTR.
mod ipo {
    pub const SQE_QID: u32 = 42;
    pub const SQE_SQSIZE: u32 = 44;
    pub const DATA_CNTLID: u32 = (1 << 16) | 16;
    pub const DATA_SUBNQN: u32 = (1 << 16) | 256;
    pub const DATA_HOSTNQN: u32 = (1 << 16) | 512;
}

pub struct Queue {
    pub(super) target: Arc<Target>,
    pub(super) local: SocketAddr,
    /// ID of the listener the connection came in on (0: none, an
    /// in-process host in tests, served every subsystem).
    pub(super) listener: u16,
    /// The host's address, when the transport knows it.
    pub(super) peer: Option<SocketAddr>,
    /// The reactor that serves the connection.
    pub(super) reactor: u16,
    /// The reactor's clock at the last command or completion handed in.
    pub(super) now: Instant,
    /// Per-namespace statistics.
    pub(super) ns_stats: super::nsstats::QueueStatsList,
    pub(super) qid: u16,
    /// Submission queue entries (SQSIZE + 1), 0 before Connect.
    sq_entries: u32,
    sqhd: u16,
    sqflow_disabled: bool,
    pub(super) role: Role,
    pub(super) stats: Arc<IoStats>,
    /// First half of a fused command waiting for its second half.
    pub(super) fused: Option<(Command, Vec<u8>)>,
    /// Commands waiting on backend operations, by tag.
    pub(super) inflight: Vec<Option<super::io::InFlight>>,
    pub(super) free_tags: Vec<u32>,
    /// Backend operations for the reactor's ring.
    pub(super) io_out: Vec<super::io::IoRequest>,
    /// The reactor's data buffers.
    pub(super) bufs: Buffers,
    /// What the transport carrying this queue can do.
    caps: TransportCaps,
    /// Recycled step lists of I/O commands.
    pub(super) step_pool: Vec<std::collections::VecDeque<super::io::Step>>,
    /// An I/O queue's controller reset epoch (see
    /// [`ControllerShared::delete_io_queues`]).
    pub(super) epoch: u32,
    /// Writes this queue has in flight, for Compare and Write (see
    /// [`super::gate`]).
    pub(super) writes: super::gate::Writers,
    /// Commands waiting at a namespace's gate, by tag.
    pub(super) waiting: Vec<u32>,
    /// An I/O queue's copy of its subsystem's namespaces, and the
    /// generation it was taken at (see [`Subsystem::generation`]).
    pub(super) exports: Arc<crate::subsystem::Exports>,
    exports_gen: u64,
}

/// Where a connection comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The address the host reached us at (the discovery log reports it
    /// for a listener on a wildcard address).
    pub local: SocketAddr,
    /// The host's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The ID of the listener that accepted it (0: none, an in-process
    /// host in tests, which every subsystem is served to).
    pub listener: u16,
    /// The reactor that serves it.
    pub reactor: u16,
}

impl Origin {
    /// An in-process connection (tests, fuzzing) reaching `local`.
    pub fn local(local: SocketAddr) -> Origin {
        Origin {
            local,
            peer: None,
            listener: 0,
            reactor: 0,
        }
    }
}

/// [`Queue::who`] from its parts (for callers holding other fields).
pub(super) fn who(role: &Role, qid: u16, peer: Option<SocketAddr>) -> String {
    let from = peer.map_or(String::new(), |p| format!(" from {p}"));
    let ctrl = match role {
        Role::Unconnected => return format!("unconnected queue{from}"),
        Role::Admin(a) => &a.ctrl,
        Role::Io(c) => c,
    };
    format!(
        "host {} cntlid {} qid {qid}{from}",
        ctrl.hostnqn, ctrl.cntlid
    )
}

impl Queue {
    /// A queue on a new connection of a transport with `caps`, from
    /// `origin`; `bufs` is the reactor's buffer pool.
    pub fn new(target: Arc<Target>, origin: Origin, caps: TransportCaps, bufs: Buffers) -> Queue {
        Queue {
            target,
            local: origin.local,
            listener: origin.listener,
            peer: origin.peer,
            reactor: origin.reactor,
            now: Instant::now(),
            ns_stats: Default::default(),
            qid: 0,
            sq_entries: 0,
            sqhd: 0,
            sqflow_disabled: false,
            role: Role::Unconnected,
            stats: Arc::new(IoStats::default()),
            fused: None,
            inflight: Vec::new(),
            free_tags: Vec::new(),
            io_out: Vec::new(),
            bufs,
            caps,
            step_pool: Vec::new(),
            epoch: 0,
            writes: Default::default(),
            waiting: Vec::new(),
            exports: Arc::new(crate::subsystem::Exports {
                allow_any_host: false,
                hosts: Vec::new(),
                namespaces: Vec::new(),
                listeners: None,
            }),
            exports_gen: 0,
        }
    }

    /// Whether `subsys` is served on the listener this connection came in
    /// on (a listener removed meanwhile serves nothing).
    fn served(&self, subsys: &crate::subsystem::Subsystem) -> bool {
        self.listener == 0
            || self
                .target
                .listener(self.listener)
                .is_some_and(|l| subsys.served_on(&l))
    }

    fn origin(&self) -> Origin {
        Origin {
            local: self.local,
            peer: self.peer,
            listener: self.listener,
            reactor: self.reactor,
        }
    }

    /// Registers this queue's counters with its controller.
    fn register(&self, ctrl: &ControllerShared, qid: u16) {
        self.stats.qid.store(qid, Relaxed);
        self.stats.reactor.store(self.reactor, Relaxed);
        ctrl.register_stats(self.stats.clone());
    }

    /// Who the queue serves, for log lines: the host NQN, cntlid and qid
    /// once connected, and the host's address.
    pub fn who(&self) -> String {
        who(&self.role, self.qid, self.peer)
    }

    /// Sets the clock for what is handed in next (backend completions):
    /// command latencies are measured with the reactor's loop clock.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The ID of the listener the connection came in on (0: none).
    pub fn listener(&self) -> u16 {
        self.listener
    }

    pub fn is_connected(&self) -> bool {
        !matches!(self.role, Role::Unconnected)
    }

    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// What the transport carrying this queue can do.
    pub fn caps(&self) -> &TransportCaps {
        &self.caps
    }

    /// The reactor's buffer pool.
    pub fn buffers(&self) -> &Buffers {
        &self.bufs
    }

    /// Queue depth (SQSIZE + 1) agreed at Connect, 0 before.
    pub fn depth(&self) -> u32 {
        self.sq_entries
    }

    /// The host disabled SQ flow control at Connect (the transport may then
    /// complete reads with the C2HData SUCCESS flag).
    pub fn sqflow_disabled(&self) -> bool {
        self.sqflow_disabled
    }

    pub fn controller(&self) -> Option<&Arc<ControllerShared>> {
        match &self.role {
            Role::Unconnected => None,
            Role::Admin(a) => Some(&a.ctrl),
            Role::Io(c) => Some(c),
        }
    }

    /// Largest data transfer for one command, in bytes.
    pub fn max_transfer(&self) -> u32 {
        self.target.config.max_io_size
    }

    /// Executes one command with its host-to-controller data (empty if none)
    /// and appends its response(s) to `out`. A held Asynchronous Event
    /// Request or the first half of a fused pair appends nothing yet.
    pub fn execute(&mut self, cmd: &Command, data: Vec<u8>, now: Instant, out: &mut Vec<Response>) {
        self.now = now;
        self.refresh_exports();
        self.accept(cmd, out);
        if cmd.is_fabrics() {
            self.fabrics(cmd, &data, now, out);
            return;
        }
        match &self.role {
            Role::Unconnected => self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out),
            Role::Admin(_) => self.admin_command(cmd, data, now, out),
            Role::Io(_) => self.io_command(cmd, data, out),
        }
    }

    /// An I/O queue takes its subsystem's namespaces anew when a reload
    /// changed them (one load per command otherwise).
    pub(super) fn refresh_exports(&mut self) {
        let Role::Io(c) = &self.role else { return };
        let g = c.subsys.generation.load(Acquire);
        if g == self.exports_gen {
            return;
        }
        let new = c.subsys.exports();
        for ns in &new.namespaces {
            self.writes.of(&ns.gate);
        }
        self.writes
            .retain(|g| new.namespaces.iter().any(|n| Arc::ptr_eq(&n.gate, g)));
        self.exports_gen = g;
        self.exports = new;
    }

    /// Completes a command the transport refused (bad SGL, digest error)
    /// without executing it.
    pub fn reject(&mut self, cmd: &Command, status: Status, out: &mut Vec<Response>) {
        self.accept(cmd, out);
        // A refused second half fails its first half too.
        if let Some((first, data)) = self.fused.take() {
            self.recycle(data);
            self.complete(&first, Status::ABORTED_FAILED_FUSED, 0, out);
        }
        self.complete(cmd, status, 0, out);
    }

    /// Takes a command off the submission queue: SQ head, and a fused first
    /// half that this command does not complete is aborted.
    pub(super) fn accept(&mut self, cmd: &Command, out: &mut Vec<Response>) {
        self.advance_sqhd();
        if self.fused.is_some() && cmd.fuse() != crate::nvme::Fuse::Second {
            if let Some((first, data)) = self.fused.take() {
                self.recycle(data);
                self.complete(&first, Status::ABORTED_MISSING_FUSED, 0, out);
            }
        }
    }

    fn advance_sqhd(&mut self) {
        if self.sq_entries > 0 {
            self.sqhd = ((self.sqhd as u32 + 1) % self.sq_entries) as u16;
        }
    }

    /// Events for the host (a reload changed the namespaces): completes an
    /// outstanding Asynchronous Event Request. The reactor calls it on its
    /// timer.
    pub fn poll_events(&mut self, out: &mut Vec<Response>) {
        if matches!(self.role, Role::Admin(_)) {
            self.deliver_events(out);
        }
    }

    /// Timer check: keep-alive expiry on the admin queue, controller
    /// teardown on I/O queues.
    pub fn tick(&mut self, now: Instant) -> Tick {
        match &mut self.role {
            Role::Unconnected => Tick::Continue,
            Role::Io(c) => {
                if c.is_dead() {
                    Tick::Close("controller torn down")
                } else if !c.io_queue_live(self.epoch) {
                    // A controller reset deletes the I/O queues: the
                    // connection of one that is gone closes.
                    Tick::Close("controller reset: the I/O queue is deleted")
                } else {
                    Tick::Continue
                }
            }
            Role::Admin(a) => {
                if a.ctrl.is_dead() {
                    return Tick::Close("controller torn down");
                }
                if a.kato_ms > 0
                    && now.saturating_duration_since(a.last_ka).as_millis() > a.kato_ms as u128
                {
                    a.ctrl.kill();
                    log::warn!(
                        "controller {} of {} (host {}): keep-alive timeout of {} ms expired; tearing it down",
                        a.ctrl.cntlid,
                        a.ctrl.subsys.nqn,
                        a.ctrl.hostnqn,
                        a.kato_ms
                    );
                    return Tick::Close("keep-alive timeout expired");
                }
                Tick::Continue
            }
        }
    }

    /// Builds a completion for `cmd` and records errors in the error log.
    pub(super) fn complete(
        &self,
        cmd: &Command,
        status: Status,
        dw0: u32,
        out: &mut Vec<Response>,
    ) {
        self.complete_with(cmd, status, dw0, Vec::new(), out);
    }

    pub(super) fn complete_with(
        &self,
        cmd: &Command,
        status: Status,
        dw0: u32,
        data: Vec<u8>,
        out: &mut Vec<Response>,
    ) {
        if !status.is_success() {
            self.record_error(cmd, status);
        }
        out.push(Response {
            cqe: self.cqe(cmd.cid, status, dw0, 0),
            data,
            shared: None,
        });
    }

    pub(super) fn cqe(&self, cid: u16, status: Status, dw0: u32, dw1: u32) -> Completion {
        Completion {
            dw0,
            dw1,
            sqhd: self.sqhd,
            sqid: self.qid,
            cid,
            status,
        }
    }

    pub(super) fn record_error(&self, cmd: &Command, status: Status) {
        if let Some(c) = self.controller() {
            c.record_error(ErrorEntry {
                sqid: self.qid,
                cid: cmd.cid,
                status: status.0,
                param_location: 0xFFFF,
                lba: if matches!(self.role, Role::Io(_)) {
                    cmd.slba()
                } else {
                    0
                },
                nsid: cmd.nsid,
                ..Default::default()
            });
        }
    }

    fn fabrics(&mut self, cmd: &Command, data: &[u8], now: Instant, out: &mut Vec<Response>) {
        match cmd.fctype() {
            fctype::CONNECT => self.connect(cmd, data, now, out),
            fctype::PROPERTY_GET | fctype::PROPERTY_SET => {
                let ctrl = match &self.role {
                    Role::Admin(a) => a.ctrl.clone(),
                    Role::Unconnected => {
                        return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out)
                    }
                    // Properties are reached through the admin queue only.
                    Role::Io(_) => return self.complete(cmd, Status::INVALID_OPCODE.dnr(), 0, out),
                };
                if cmd.fctype() == fctype::PROPERTY_GET {
                    self.property_get(cmd, &ctrl, out)
                } else {
                    self.property_set(cmd, &ctrl, out)
                }
            }
            _ => self.complete(cmd, Status::INVALID_OPCODE.dnr(), 0, out),
        }
    }

    fn connect(&mut self, cmd: &Command, data: &[u8], now: Instant, out: &mut Vec<Response>) {
        if self.is_connected() {
            return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out);
        }
        let start = out.len();
        self.connect_new(cmd, data, now, out);
        // A Connect is submitted to the queue it creates: its completion
        // carries that queue's ID (CQE SQID) even when the Connect fails.
        let qid = (cmd.cdw10 >> 16) as u16;
        for r in &mut out[start..] {
            r.cqe.sqid = qid;
        }
    }

    fn connect_new(&mut self, cmd: &Command, data: &[u8], now: Instant, out: &mut Vec<Response>) {
        let c = ConnectCmd {
            recfmt: cmd.cdw10 as u16,
            qid: (cmd.cdw10 >> 16) as u16,
            sqsize: cmd.cdw11 as u16,
            cattr: (cmd.cdw11 >> 16) as u8,
            kato: cmd.cdw12,
        };
        // Every refusal is logged with its reason: the host only sees a status.
        let invalid = |q: &Queue, out: &mut Vec<Response>, ipo: u32, why: String| {
            log::warn!("Connect (queue {}) {} refused: {why}", c.qid, q.who());
            q.complete(cmd, Status::CONNECT_INVALID_PARAMETERS.dnr(), ipo, out)
        };
        if c.recfmt != 0 {
            return self.complete(cmd, Status::CONNECT_INCOMPATIBLE_FORMAT.dnr(), 0, out);
        }
        if data.len() < 1024 {
            return self.complete(cmd, Status::DATA_SGL_LENGTH_INVALID.dnr(), 0, out);
        }
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&data[0..16]);
        let cntlid = crate::nvme::le16(data, 16);
        let subnqn = get_str(data, 256, 256);
        let hostnqn = get_str(data, 512, 256);
        let target = self.target.clone();
        let Some(subsys) = target.find_subsystem(&subnqn) else {
            return invalid(
                self,
                out,
                ipo::DATA_SUBNQN,
                format!("no subsystem {subnqn:?}"),
            );
        };
        if !self.served(&subsys) {
            let on = target
                .listener(self.listener)
                .map_or("a removed listener".to_string(), |l| {
                    format!("listener {:?}", l.name)
                });
            return invalid(
                self,
                out,
                ipo::DATA_SUBNQN,
                format!("subsystem {subnqn:?} is not served on {on}"),
            );
        }
        if !subsys.host_allowed(&hostnqn) {
            log::warn!(
                "host {hostnqn} ({}) refused: not allowed to use {}",
                self.who(),
                subsys.nqn
            );
            // (Unconnected: no controller's error log to record it in.)
            let st = Status::CONNECT_INVALID_HOST.dnr();
            return self.complete(cmd, st, ipo::DATA_HOSTNQN, out);
        }
        let entries = c.sqsize as u32 + 1;
        if c.sqsize == 0 {
            return invalid(self, out, ipo::SQE_SQSIZE, "SQSIZE 0".into());
        }
        let cfg = &target.config;
        if c.qid == 0 {
            if entries > super::ADMIN_QUEUE_DEPTH {
                return invalid(
                    self,
                    out,
                    ipo::SQE_SQSIZE,
                    format!(
                        "admin queue of {entries} entries, at most {} allowed",
                        super::ADMIN_QUEUE_DEPTH
                    ),
                );
            }
            if cntlid != 0xFFFF && cntlid != 0xFFFE {
                return invalid(
                    self,
                    out,
                    ipo::DATA_CNTLID,
                    format!("admin Connect with CNTLID {cntlid:#x}, not FFFFh/FFFEh"),
                );
            }
            if c.kato > cfg.keep_alive_timeout_ms_max {
                return self.complete(cmd, Status::KEEP_ALIVE_INVALID.dnr(), 0, out);
            }
            let io_queues = cfg.max_io_queues;
            let mut table = target.controllers.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the table's lock, which a reload holds while
            // it swaps what is exported: a controller is either made before
            // the reload looks at the table (and torn down by it) or checked
            // against what the reload left.
            let still = target
                .find_subsystem(&subnqn)
                .is_some_and(|s| Arc::ptr_eq(&s, &subsys))
                && subsys.host_allowed(&hostnqn)
                && self.served(&subsys);
            if !still {
                drop(table);
                log::warn!(
                    "host {hostnqn} refused: {} changed while it connected",
                    subsys.nqn
                );
                let st = Status::CONNECT_INVALID_HOST.dnr();
                return self.complete(cmd, st, ipo::DATA_HOSTNQN, out);
            }
            let made = table.create(|id| {
                ControllerShared::new(
                    id,
                    subsys.clone(),
                    hostnqn.clone(),
                    hostid,
                    io_queues,
                    &self.origin(),
                )
            });
            drop(table);
            let Some(ctrl) = made else {
                return self.complete(cmd, Status::CONNECT_CONTROLLER_BUSY, 0, out);
            };
            self.register(&ctrl, 0);
            let id = ctrl.cntlid;
            log::info!(
                "controller {id} of {} created for host {hostnqn} (keep-alive {} ms)",
                subsys.nqn,
                c.kato
            );
            self.role = Role::Admin(Box::new(AdminState::new(ctrl, c.kato, now)));
            self.finish_connect(cmd, &c, entries, id, out);
        } else {
            let found = target
                .controllers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(cntlid);
            let Some(ctrl) = found else {
                return invalid(
                    self,
                    out,
                    ipo::DATA_CNTLID,
                    format!("no controller {cntlid}"),
                );
            };
            if ctrl.subsys.nqn != subsys.nqn || ctrl.subsys.discovery {
                return invalid(
                    self,
                    out,
                    ipo::DATA_SUBNQN,
                    format!(
                        "controller {cntlid} is not of {subnqn:?}, or is a discovery controller"
                    ),
                );
            }
            if ctrl.hostnqn != hostnqn {
                return invalid(
                    self,
                    out,
                    ipo::DATA_HOSTNQN,
                    format!("controller {cntlid} belongs to another host than {hostnqn:?}"),
                );
            }
            if ctrl.hostid != hostid {
                return self.complete(cmd, Status::HOST_ID_INCONSISTENT.dnr(), 0, out);
            }
            if !ctrl.is_ready() {
                return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out);
            }
            if c.qid > ctrl.io_queues.load(Relaxed) {
                return invalid(
                    self,
                    out,
                    ipo::SQE_QID,
                    format!(
                        "queue {} beyond the {} granted",
                        c.qid,
                        ctrl.io_queues.load(Relaxed)
                    ),
                );
            }
            if entries > cfg.max_queue_depth as u32 {
                return invalid(
                    self,
                    out,
                    ipo::SQE_SQSIZE,
                    format!(
                        "I/O queue of {entries} entries, at most {} allowed (MQES)",
                        cfg.max_queue_depth
                    ),
                );
            }
            let Some(epoch) = ctrl.claim_qid(c.qid) else {
                return invalid(
                    self,
                    out,
                    ipo::SQE_QID,
                    format!("queue {} already connected", c.qid),
                );
            };
            self.epoch = epoch;
            self.register(&ctrl, c.qid);
            self.exports_gen = ctrl.subsys.generation.load(Acquire);
            self.exports = ctrl.subsys.exports();
            for ns in &self.exports.namespaces {
                self.writes.of(&ns.gate);
            }
            let id = ctrl.cntlid;
            self.role = Role::Io(ctrl);
            self.finish_connect(cmd, &c, entries, id, out);
        }
    }

    fn finish_connect(
        &mut self,
        cmd: &Command,
        c: &ConnectCmd,
        entries: u32,
        cntlid: u16,
        out: &mut Vec<Response>,
    ) {
        self.qid = c.qid;
        self.sq_entries = entries;
        // The Connect command was the first entry of the queue.
        self.sqhd = 1 % entries as u16;
        self.sqflow_disabled = c.cattr & (1 << 2) != 0;
        out.push(Response {
            cqe: self.cqe(cmd.cid, Status::SUCCESS, cntlid as u32, 0),
            data: Vec::new(),
            shared: None,
        });
    }

    fn cap(&self) -> u64 {
        let mqes = (self.target.config.max_queue_depth as u64).saturating_sub(1);
        let to = 15u64; // 7.5 s ready timeout, in 500 ms units
        mqes | (1 << 16) | (to << 24) | (1 << 37)
    }

    fn property_get(&self, cmd: &Command, ctrl: &ControllerShared, out: &mut Vec<Response>) {
        let size8 = cmd.cdw10 & 7 == 1;
        let value: u64 = match (cmd.cdw11, size8) {
            (prop::CAP, true) => self.cap(),
            (prop::VS, false) => super::NVME_VERSION as u64,
            (prop::CC, false) => ctrl.cc.load(Relaxed) as u64,
            (prop::CSTS, false) => ctrl.csts.load(Relaxed) as u64,
            _ => return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out),
        };
        out.push(Response {
            cqe: self.cqe(cmd.cid, Status::SUCCESS, value as u32, (value >> 32) as u32),
            data: Vec::new(),
            shared: None,
        });
    }

    fn property_set(&self, cmd: &Command, ctrl: &ControllerShared, out: &mut Vec<Response>) {
        let size8 = cmd.cdw10 & 7 == 1;
        if cmd.cdw11 != prop::CC || size8 {
            return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
        }
        let new = cmd.cdw12;
        let old = ctrl.cc.swap(new, Relaxed);
        let en = |v: u32| v & 1 != 0;
        let shn = |v: u32| (v >> 14) & 3;
        if en(new) && !en(old) {
            let iosqes = (new >> 16) & 0xF;
            let iocqes = (new >> 20) & 0xF;
            let mps = (new >> 7) & 0xF;
            let css = (new >> 4) & 7;
            let io_ctrl = !ctrl.subsys.discovery;
            if mps != 0 || css != 0 || (io_ctrl && (iosqes != 6 || iocqes != 4)) {
                ctrl.csts.fetch_or(csts::CFS, Relaxed);
            } else {
                ctrl.csts.fetch_or(csts::RDY, Relaxed);
            }
        } else if !en(new) && en(old) {
            ctrl.csts
                .fetch_and(!(csts::RDY | csts::SHST_MASK | csts::CFS), Relaxed);
            ctrl.delete_io_queues();
        }
        if shn(new) != 0 && shn(old) == 0 {
            ctrl.csts.fetch_or(csts::SHST_COMPLETE, Relaxed);
        } else if shn(new) == 0 && shn(old) != 0 {
            ctrl.csts.fetch_and(!csts::SHST_MASK, Relaxed);
        }
        self.complete(cmd, Status::SUCCESS, 0, out);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Writes abandoned in flight stop counting, and a Compare and Write
        // lets go of its namespace.
        for f in self.inflight.iter_mut().flatten() {
            f.release_gate(&mut self.writes);
        }
        self.stats.closed.store(true, Relaxed);
        self.ns_stats.close_all();
        match &self.role {
            Role::Unconnected => {}
            Role::Io(c) => c.release_qid(self.qid, self.epoch),
            Role::Admin(a) => {
                // The association ends with its admin queue.
                log::info!(
                    "controller {} of {} closed",
                    a.ctrl.cntlid,
                    a.ctrl.subsys.nqn
                );
                a.ctrl.kill();
                self.target
                    .controllers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(a.ctrl.cntlid);
            }
        }
    }
}
