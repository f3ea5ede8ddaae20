//! The NVMe/RDMA driver: RDMA CM listeners and events, one RC queue pair
//! per NVMe queue, a completion queue per device per reactor (shared by its
//! queue pairs, polled while the reactor spins, its completion channel in
//! the ring while it sleeps), registered memory for receives and data. The
//! protocol is in [`RdmaConn`]; this file only posts and polls.

use super::cm::{self, ConnectRequest, Limits};
use super::conn::{Action, RdmaConn, ReadData, SQE_LEN};
use crate::fabrics::{Response, TransportCaps};
use crate::reactor::{token, Cx, Driver, Handoff};
use nvmf_sys::rdma::{
    self, CmEvent, CmEventKind, CmId, CompChannel, Cq, Device, DeviceAttr, EventChannel, Mr, Pd,
    QpCap, SendData, SendOp, SendWr, Wc,
};
use nvmf_sys::{Completion, Op, Region};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This driver's ring token kinds.
const K_CM: u8 = 1;
const K_COMP: u8 = 2;

/// Work request kinds (bits 31:24 of a work request id).
const W_RECV: u8 = 1;
const W_RESP: u8 = 2;
const W_READ: u8 = 3;
const W_DRAIN: u8 = 4;

/// No staging buffer (in a work request id's chunk field).
const NO_CHUNK: u32 = 0xFFF;

/// Completions taken per poll.
const POLL_BATCH: usize = 32;
/// Completion queue entries per device per reactor.
const CQ_ENTRIES: u32 = 16384;
/// Staging buffers (each of MDTS bytes) per device per reactor, for data
/// that is not in registered backend memory.
const STAGING_CHUNKS: usize = 256;
/// How long a closing queue pair waits for its send queue to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A work request id: connection generation (bits 63:56), session slot
/// (55:32), kind (31:24), value (23:0: a receive index; a staging chunk;
/// or a write tag in 23:12 and a chunk in 11:0).
fn wr_id(slot: usize, gen: u8, kind: u8, value: u32) -> u64 {
    ((gen as u64) << 56)
        | ((slot as u64 & 0xFF_FFFF) << 32)
        | ((kind as u64) << 24)
        | (value as u64 & 0xFF_FFFF)
}

fn wr_split(id: u64) -> (usize, u8, u8, u32) {
    (
        ((id >> 32) & 0xFF_FFFF) as usize,
        (id >> 56) as u8,
        (id >> 24) as u8,
        (id & 0xFF_FFFF) as u32,
    )
}

/// Responses are signalled at least this often (see `post_plans`).
const SIGNAL_EVERY: u32 = 16;

/// Where a work request's local data is.
enum Local {
    None,
    /// The plan's staging chunk.
    Staging,
    /// Registered backend memory.
    Region(nvmf_sys::RegionSlice),
}

enum PlanKind {
    Read {
        tag: u16,
        addr: u64,
        key: u32,
    },
    Respond {
        cqe: [u8; 16],
        invalidate: Option<u32>,
        /// The host memory the read data goes to.
        write: Option<(u64, u32)>,
    },
}

/// An action ready to post: its local data decided.
struct Plan {
    kind: PlanKind,
    len: u32,
    local: Local,
    /// The staging chunk it holds (NO_CHUNK if none).
    chunk: u32,
}

/// A connect request placed on a reactor, for its driver to accept.
pub struct Pending {
    id: CmId,
    /// The target's ID of the listener it came to.
    listener: u16,
    req: ConnectRequest,
    /// The host's responder resources (RDMA READs it serves at once).
    host_rd: u8,
}

/// Settings from the target config.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub in_capsule_data: u32,
    pub max_io_size: u32,
    pub limits: Limits,
}

/// Registered buffers for data not in registered backend memory.
struct Staging {
    mr: Mr,
    chunk: usize,
    free: Vec<u32>,
}

/// What a reactor has of one RDMA device.
struct DeviceRes {
    dev: Device,
    attr: DeviceAttr,
    pd: Arc<Pd>,
    cq: Cq,
    cq_used: u32,
    staging: Staging,
    /// Backend memory registered for zero copy, by region address.
    regions: HashMap<u64, Mr>,
    armed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QpState {
    Open,
    /// Disconnected; waiting for the drain marker's completion.
    Draining(Instant),
}

/// One queue pair and its connection.
struct Qp {
    id: CmId,
    dev: usize,
    gen: u8,
    conn: RdmaConn,
    recv: Mr,
    slot_size: usize,
    /// Entries of the completion queue this queue pair may fill.
    cq_share: u32,
    state: QpState,
    /// Staging buffers this queue pair's work requests hold.
    chunks: Vec<u32>,
    /// Actions waiting for a staging buffer.
    waiting: Vec<Action>,
    peer: Option<SocketAddr>,
    /// Responses posted since the last signalled one.
    unsignaled: u32,
    /// Responses posted so far (a sequence number), the numbers of the
    /// signalled ones not completed yet, and leased memory (staged DMA
    /// buffers) that posted RDMA WRITEs read from, with the number of its
    /// response: kept until a signalled response at or after it completes
    /// (the send queue completes in order), so the buffer is not reused
    /// while the NIC may still read it.
    resp_seq: u64,
    signaled_resps: std::collections::VecDeque<u64>,
    held: std::collections::VecDeque<(u64, nvmf_sys::RegionSlice)>,
}

/// Reactor 0's CM event channel and RDMA listeners (with the target's
/// listener IDs).
pub type Listening = (Arc<EventChannel>, Vec<(u16, CmId)>);

pub struct RdmaDriver {
    id: u8,
    params: Params,
    caps: TransportCaps,
    /// This reactor's CM event channel (made when first needed).
    channel: Option<Arc<EventChannel>>,
    /// With the target's listener IDs.
    listeners: Vec<(u16, CmId)>,
    /// By session slot. (Before `devices`: queue pairs go before the
    /// completion queues and protection domains they use.)
    qps: Vec<Option<Qp>>,
    devices: Vec<DeviceRes>,
    gen: u8,
    wcs: Vec<Wc>,
    actions: Vec<Action>,
    plans: Vec<Plan>,
}

impl RdmaDriver {
    /// A driver; `listen` holds reactor 0's channel and listeners.
    pub fn new(id: u8, params: Params, listen: Option<Listening>) -> RdmaDriver {
        let (channel, listeners) = match listen {
            Some((c, l)) => (Some(c), l),
            None => (None, Vec::new()),
        };
        RdmaDriver {
            id,
            params,
            caps: super::caps(params.in_capsule_data),
            channel,
            listeners,
            qps: Vec::new(),
            devices: Vec::new(),
            gen: 0,
            wcs: vec![Wc::default(); POLL_BATCH],
            actions: Vec::new(),
            plans: Vec::new(),
        }
    }

    fn channel(&mut self, cx: &mut Cx) -> io::Result<Arc<EventChannel>> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let c = EventChannel::new()?;
        cx.ring
            .push(Op::PollIn { fd: c.fd() }, token(self.id, K_CM, 0))?;
        self.channel = Some(c.clone());
        Ok(c)
    }

    fn device(&mut self, cx: &mut Cx, dev: Device) -> io::Result<usize> {
        if let Some(i) = self.devices.iter().position(|d| d.dev == dev) {
            return Ok(i);
        }
        let attr = dev.query()?;
        let pd = Pd::new(dev)?;
        let ch = CompChannel::new(dev)?;
        let cq = Cq::new(dev, CQ_ENTRIES.min(attr.max_cqe.max(1)), ch.clone())?;
        let chunk = self.params.max_io_size as usize;
        let region = Arc::new(Region::new(chunk * STAGING_CHUNKS)?);
        let staging = Staging {
            mr: pd.register(region)?,
            chunk,
            free: (0..STAGING_CHUNKS as u32).rev().collect(),
        };
        let i = self.devices.len();
        cx.ring
            .push(Op::PollIn { fd: ch.fd() }, token(self.id, K_COMP, i))?;
        log::info!(
            "reactor {}: RDMA device ready (queue pairs of up to {} work requests, {} SGEs, \
             {} RDMA READs outstanding)",
            cx.index,
            attr.max_qp_wr,
            attr.max_sge,
            attr.max_qp_init_rd_atom
        );
        self.devices.push(DeviceRes {
            dev,
            attr,
            pd,
            cq,
            cq_used: 0,
            staging,
            regions: HashMap::new(),
            armed: false,
        });
        Ok(i)
    }

    /// A connect request: checked here, then placed on a reactor.
    fn connect_request(&mut self, cx: &mut Cx, mut ev: CmEvent) {
        let Some(id) = ev.take_request() else {
            return;
        };
        let peer = id.peer_addr();
        let req = match cm::parse(&ev.private_data, &self.params.limits) {
            Ok(r) => r,
            Err(sts) => {
                log::warn!(
                    "RDMA connect from {peer:?} refused with status {sts:#x}: private data {:02x?}",
                    &ev.private_data[..ev.private_data.len().min(8)]
                );
                if let Err(e) = id.reject(&cm::reject(sts)) {
                    log::warn!("RDMA connect from {peer:?}: {e}");
                }
                return;
            }
        };
        // The event's initiator depth is the host's responder resources
        // (the CM swaps the two for the passive side): how many RDMA READs
        // the host serves at once.
        let listener = self
            .listeners
            .iter()
            .find(|(_, l)| l.key() == ev.listen_id)
            .map_or(0, |(lid, _)| *lid);
        if listener == 0 {
            // Its listener was removed after the request was queued.
            if let Err(e) = id.reject(&cm::reject(cm::sts::NO_RESOURCES)) {
                log::warn!("RDMA connect from {peer:?}: {e}");
            }
            return;
        }
        let p = Pending {
            id,
            listener,
            req,
            host_rd: ev.initiator_depth,
        };
        let r = cx.place();
        if r == cx.index {
            self.accept(cx, p);
        } else {
            cx.hand_off(r, self.id, Box::new(p));
        }
    }

    /// Sets a connection up on this reactor and accepts it.
    fn accept(&mut self, cx: &mut Cx, p: Pending) {
        let peer = p.id.peer_addr();
        let (qid, depth) = (p.req.qid, p.req.depth());
        let mut id = Some(p.id);
        match self.setup(cx, &mut id, p.req, p.host_rd, p.listener) {
            Ok((slot, ord)) => {
                let Some(q) = self.qps[slot].as_mut() else {
                    return;
                };
                match q.id.accept(&cm::accept(depth as u16), 0, ord) {
                    Ok(()) => log::debug!(
                        "reactor {}: RDMA queue {qid} from {peer:?}: {depth} entries, {ord} \
                         RDMA READs outstanding",
                        cx.index
                    ),
                    Err(e) => {
                        log::warn!("RDMA connect from {peer:?}: {e}");
                        self.destroy(cx, slot);
                    }
                }
            }
            Err(e) => {
                log::warn!("RDMA connect from {peer:?} refused (no resources): {e}");
                // (Without the id, the session it had is closed already.)
                if let Some(id) = id {
                    if let Err(e) = id.reject(&cm::reject(cm::sts::NO_RESOURCES)) {
                        log::warn!("RDMA connect from {peer:?}: {e}");
                    }
                    cx.sessions.abandon();
                }
            }
        }
    }

    /// Creates the queue pair, posts its receives and opens its session;
    /// returns the slot and the RDMA READ depth. The id stays in `idp`
    /// until the session takes it.
    fn setup(
        &mut self,
        cx: &mut Cx,
        idp: &mut Option<CmId>,
        req: ConnectRequest,
        host_rd: u8,
        listener: u16,
    ) -> io::Result<(usize, u8)> {
        let Some(id) = idp.as_mut() else {
            return Err(io::Error::other("no id"));
        };
        let made = {
            let ch = self.channel(cx)?;
            id.migrate(&ch)?;
            let dev = id
                .device()
                .ok_or_else(|| io::Error::other("the connection has no device"))?;
            let di = self.device(cx, dev)?;
            let depth = req.depth();
            // Per command at most an RDMA READ, or an RDMA WRITE and a SEND;
            // plus unsignalled sends not yet reclaimed, and the drain marker.
            let send_wr = depth * 3 + 2 * SIGNAL_EVERY + 1;
            let cq_share = depth + send_wr;
            let d = &mut self.devices[di];
            if d.cq_used + cq_share > CQ_ENTRIES.min(d.attr.max_cqe) {
                return Err(io::Error::other("the completion queue is full"));
            }
            if send_wr > d.attr.max_qp_wr {
                return Err(io::Error::other(format!(
                    "a queue of {depth} entries needs {send_wr} work requests; the device \
                     allows {}",
                    d.attr.max_qp_wr
                )));
            }
            let cap = QpCap {
                max_send_wr: send_wr,
                max_recv_wr: depth,
                max_send_sge: d.attr.max_sge.clamp(1, rdma::MAX_SGE as u32),
                max_recv_sge: 1,
                max_inline_data: 16,
            };
            id.create_qp(&d.pd, &d.cq, cap)?;
            // RDMA READs outstanding: what the host serves, within the
            // device's limit, at least one (with none, READs never start).
            let ord = (host_rd as u32)
                .min(d.attr.max_qp_init_rd_atom)
                .clamp(1, 255) as u8;
            let slot_size = SQE_LEN + self.params.in_capsule_data as usize;
            let recv =
                d.pd.register(Arc::new(Region::new(slot_size * depth as usize)?))?;
            (di, depth, cq_share, ord, slot_size, recv)
        };
        let (di, depth, cq_share, ord, slot_size, recv) = made;
        let Some(id) = idp.take() else {
            return Err(io::Error::other("no id"));
        };
        self.gen = self.gen.wrapping_add(1);
        let gen = self.gen;
        let local = id
            .local_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let queue = cx.new_queue(local, id.peer_addr(), listener, self.caps);
        let slot = cx.sessions.open(self.id, queue);
        id.set_context(slot + 1);
        self.devices[di].cq_used += cq_share;
        if self.qps.len() <= slot {
            self.qps.resize_with(slot + 1, || None);
        }
        let peer = id.peer_addr();
        self.qps[slot] = Some(Qp {
            id,
            dev: di,
            gen,
            conn: RdmaConn::new(cx.bufs.clone(), ord as u32),
            recv,
            slot_size,
            cq_share,
            state: QpState::Open,
            chunks: Vec::new(),
            waiting: Vec::new(),
            peer,
            unsignaled: 0,
            resp_seq: 0,
            signaled_resps: Default::default(),
            held: Default::default(),
        });
        for i in 0..depth {
            if let Err(e) = self.post_recv(slot, i) {
                // Destroying the id refuses the connection.
                self.destroy(cx, slot);
                return Err(e);
            }
        }
        Ok((slot, ord))
    }

    fn post_recv(&self, slot: usize, i: u32) -> io::Result<()> {
        let q = self
            .qps
            .get(slot)
            .and_then(|q| q.as_ref())
            .ok_or_else(|| io::Error::other("no queue pair"))?;
        let sge = q
            .recv
            .sge((i as usize * q.slot_size) as u64, q.slot_size as u32)
            .ok_or_else(|| io::Error::other("receive buffer out of bounds"))?;
        q.id.post_recv(wr_id(slot, q.gen, W_RECV, i), &[sge])
    }

    /// Starts closing a queue pair: disconnect (its queue pair goes to the
    /// error state and its work requests are flushed), then wait for a
    /// marker posted behind them; the queue pair is destroyed when the
    /// marker completes (or after [`DRAIN_TIMEOUT`]).
    fn teardown(&mut self, cx: &mut Cx, slot: usize, why: &str) {
        let Some(q) = self.qps.get_mut(slot).and_then(|q| q.as_mut()) else {
            return;
        };
        if q.state != QpState::Open {
            return;
        }
        let who = cx
            .sessions
            .get(slot)
            .map_or_else(|| format!("{:?}", q.peer), |s| s.queue.who());
        log::info!(
            "reactor {}: closing RDMA queue pair of {who}: {why}",
            cx.index
        );
        q.state = QpState::Draining(cx.now);
        let _ = q.id.disconnect();
        let marker = SendWr {
            wr_id: wr_id(slot, q.gen, W_DRAIN, 0),
            op: SendOp::Send,
            data: SendData::None,
            signaled: true,
        };
        if let Err(e) = q.id.post_send(&[marker]) {
            log::debug!("drain marker not posted ({e}); destroying the queue pair now");
            self.destroy(cx, slot);
        }
    }

    /// Destroys a queue pair (no work request of it is in the device any
    /// more, or the device is told to forget them) and ends its session.
    fn destroy(&mut self, cx: &mut Cx, slot: usize) {
        let Some(mut q) = self.qps.get_mut(slot).and_then(|q| q.take()) else {
            return;
        };
        for a in q.waiting.drain(..) {
            recycle_action(cx, a);
        }
        let mut left = Vec::new();
        q.conn.take_actions(&mut left);
        for a in left {
            recycle_action(cx, a);
        }
        let d = &mut self.devices[q.dev];
        d.cq_used = d.cq_used.saturating_sub(q.cq_share);
        // The queue pair goes first (with the id): the device then holds
        // none of the staging buffers it had.
        let chunks = std::mem::take(&mut q.chunks);
        drop(q);
        d.staging.free.extend(chunks);
        cx.sessions.release(slot);
    }

    /// Takes a staging chunk for `slot`'s queue pair.
    fn take_chunk(&mut self, slot: usize) -> Option<u32> {
        let q = self.qps.get_mut(slot)?.as_mut()?;
        let c = self.devices[q.dev].staging.free.pop()?;
        q.chunks.push(c);
        Some(c)
    }

    /// A signalled response completed: it and every response posted before
    /// it are done, and the leased memory they read from goes back.
    fn response_sent(&mut self, slot: usize) {
        let Some(q) = self.qps.get_mut(slot).and_then(|q| q.as_mut()) else {
            return;
        };
        let Some(done) = q.signaled_resps.pop_front() else {
            return;
        };
        while q.held.front().is_some_and(|(seq, _)| *seq <= done) {
            q.held.pop_front();
        }
    }

    fn put_chunk(&mut self, slot: usize, c: u32) {
        let Some(q) = self.qps.get_mut(slot).and_then(|q| q.as_mut()) else {
            return;
        };
        if let Some(i) = q.chunks.iter().position(|&x| x == c) {
            q.chunks.swap_remove(i);
            self.devices[q.dev].staging.free.push(c);
        }
    }

    /// Registers backend memory `region` on first use; false if it cannot
    /// be (the data is then copied through staging buffers).
    fn ensure_region(&mut self, dev: usize, region: &Arc<Region>) -> bool {
        let d = &mut self.devices[dev];
        let key = region.addr();
        if !d.regions.contains_key(&key) {
            match d.pd.register(region.clone()) {
                Ok(mr) => {
                    log::info!(
                        "RDMA: registered {} MiB of backend memory for zero copy",
                        region.len() >> 20
                    );
                    d.regions.insert(key, mr);
                }
                Err(e) => {
                    log::warn!("RDMA: backend memory not registered ({e}); copying instead");
                    return false;
                }
            }
        }
        true
    }

    /// Posts what `slot`'s connection asks for, in as few posts as the
    /// chain limit allows (each post is a doorbell, a system call on
    /// Soft-RoCE); actions that need a staging buffer wait for one.
    fn run_actions(&mut self, cx: &mut Cx, slot: usize) {
        let mut actions = std::mem::take(&mut self.actions);
        if let Some(q) = self.qps.get_mut(slot).and_then(|q| q.as_mut()) {
            // Waiting ones first: they are older.
            actions.append(&mut q.waiting);
            q.conn.take_actions(&mut actions);
        }
        let mut plans = std::mem::take(&mut self.plans);
        let mut failed = None;
        for a in actions.drain(..) {
            let open = matches!(self.qps.get(slot), Some(Some(q)) if q.state == QpState::Open);
            if !open || failed.is_some() {
                recycle_action(cx, a);
                continue;
            }
            match self.plan(cx, slot, a) {
                Ok(Ok(p)) => plans.push(p),
                Ok(Err(a)) => {
                    if let Some(q) = self.qps.get_mut(slot).and_then(|q| q.as_mut()) {
                        q.waiting.push(a);
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        self.actions = actions;
        if let Err(e) = self.post_plans(slot, &plans) {
            failed.get_or_insert(e);
        }
        // (Staging buffers of plans not posted stay with the queue pair
        // until it is destroyed: some of its work requests may be posted.)
        plans.clear();
        self.plans = plans;
        if let Some(e) = failed {
            self.teardown(cx, slot, &format!("posting work requests failed: {e}"));
        }
    }

    /// Decides where an action's local data is (copying it into a staging
    /// buffer when it is not in registered memory); gives the action back
    /// when it must wait for a staging buffer.
    fn plan(&mut self, cx: &mut Cx, slot: usize, a: Action) -> io::Result<Result<Plan, Action>> {
        let Some(dev) = self.qps.get(slot).and_then(|q| q.as_ref()).map(|q| q.dev) else {
            return Err(io::Error::other("no queue pair"));
        };
        match a {
            Action::Read {
                tag,
                addr,
                key,
                len,
                placed,
            } => {
                let mut p = Plan {
                    kind: PlanKind::Read { tag, addr, key },
                    len,
                    local: Local::None,
                    chunk: NO_CHUNK,
                };
                if let Some(s) = &placed {
                    if self.ensure_region(dev, s.region()) {
                        p.local = Local::Region(s.clone());
                        return Ok(Ok(p));
                    }
                }
                let Some(c) = self.take_chunk(slot) else {
                    return Ok(Err(Action::Read {
                        tag,
                        addr,
                        key,
                        len,
                        placed,
                    }));
                };
                p.local = Local::Staging;
                p.chunk = c;
                Ok(Ok(p))
            }
            Action::Respond {
                cqe,
                data,
                invalidate,
            } => {
                let Some((d, addr, key)) = data else {
                    return Ok(Ok(Plan {
                        kind: PlanKind::Respond {
                            cqe,
                            invalidate,
                            write: None,
                        },
                        len: 0,
                        local: Local::None,
                        chunk: NO_CHUNK,
                    }));
                };
                let len = d.len() as u32;
                let kind = PlanKind::Respond {
                    cqe,
                    invalidate,
                    write: Some((addr, key)),
                };
                // Backend memory straight from its registration, else a copy
                // in a staging buffer.
                if let ReadData::Shared(s) = &d {
                    if self.ensure_region(dev, s.region()) {
                        return Ok(Ok(Plan {
                            kind,
                            len,
                            local: Local::Region(s.clone()),
                            chunk: NO_CHUNK,
                        }));
                    }
                }
                let Some(c) = self.take_chunk(slot) else {
                    return Ok(Err(Action::Respond {
                        cqe,
                        data: Some((d, addr, key)),
                        invalidate,
                    }));
                };
                let st = &self.devices[dev].staging;
                let at = c as u64 * st.chunk as u64;
                let copied = match &d {
                    ReadData::Bytes(b) => b.len() <= st.chunk && st.mr.region().write(at, b),
                    ReadData::Shared(s) => {
                        let mut tmp = cx.bufs.alloc_len(s.len());
                        let ok = s.len() <= st.chunk
                            && s.copy_to(&mut tmp)
                            && st.mr.region().write(at, &tmp);
                        cx.bufs.recycle(tmp);
                        ok
                    }
                };
                if let ReadData::Bytes(b) = d {
                    cx.bufs.recycle(b);
                }
                if !copied {
                    self.put_chunk(slot, c);
                    return Err(io::Error::other("read data larger than a staging buffer"));
                }
                Ok(Ok(Plan {
                    kind,
                    len,
                    local: Local::Staging,
                    chunk: c,
                }))
            }
        }
    }

    /// Posts the planned work requests of `slot`'s queue pair, chained.
    fn post_plans(&mut self, slot: usize, plans: &[Plan]) -> io::Result<()> {
        if plans.is_empty() {
            return Ok(());
        }
        let Some(q) = self.qps.get_mut(slot).and_then(|q| q.as_mut()) else {
            return Ok(());
        };
        // Responses are signalled when they hold a staging buffer, and every
        // SIGNAL_EVERY-th one otherwise, so that the send queue's slots come
        // back: fewer completions to take, and fewer wake-ups.
        let mut signal = Vec::with_capacity(plans.len());
        for p in plans {
            let s = match p.kind {
                PlanKind::Read { .. } => true,
                PlanKind::Respond { .. } => {
                    q.unsignaled += 1;
                    q.resp_seq += 1;
                    let leased = match &p.local {
                        Local::Region(s) if s.is_leased() => Some(s.clone()),
                        _ => None,
                    };
                    let s = p.chunk != NO_CHUNK || leased.is_some() || q.unsignaled >= SIGNAL_EVERY;
                    if let Some(slice) = leased {
                        q.held.push_back((q.resp_seq, slice));
                    }
                    if s {
                        q.unsignaled = 0;
                        q.signaled_resps.push_back(q.resp_seq);
                    }
                    s
                }
            };
            signal.push(s);
        }
        let q = self.qps[slot].as_ref().expect("checked above");
        let d = &self.devices[q.dev];
        let gen = q.gen;
        // Every local buffer first (the work requests borrow them).
        let mut sges = Vec::with_capacity(plans.len());
        for p in plans {
            let sge = match &p.local {
                Local::None => None,
                Local::Staging => d
                    .staging
                    .mr
                    .sge(p.chunk as u64 * d.staging.chunk as u64, p.len),
                Local::Region(s) => d
                    .regions
                    .get(&s.region().addr())
                    .and_then(|mr| mr.sge(s.offset(), p.len)),
            };
            if !matches!(p.local, Local::None) && sge.is_none() {
                return Err(io::Error::other("data outside registered memory"));
            }
            sges.push(sge.map(|s| [s]));
        }
        let mut wrs: Vec<SendWr> = Vec::with_capacity(plans.len() * 2);
        for ((p, sge), &signaled) in plans.iter().zip(&sges).zip(&signal) {
            let local = match sge {
                Some(s) => SendData::Sges(s),
                None => SendData::None,
            };
            match &p.kind {
                PlanKind::Read { tag, addr, key } => wrs.push(SendWr {
                    wr_id: wr_id(slot, gen, W_READ, ((*tag as u32) << 12) | p.chunk),
                    op: SendOp::RdmaRead {
                        addr: *addr,
                        rkey: *key,
                    },
                    data: local,
                    signaled: true,
                }),
                PlanKind::Respond {
                    cqe,
                    invalidate,
                    write,
                } => {
                    if let Some((addr, key)) = write {
                        wrs.push(SendWr {
                            wr_id: wr_id(slot, gen, W_RESP, NO_CHUNK),
                            op: SendOp::RdmaWrite {
                                addr: *addr,
                                rkey: *key,
                            },
                            data: local,
                            signaled: false,
                        });
                    }
                    wrs.push(SendWr {
                        wr_id: wr_id(slot, gen, W_RESP, p.chunk),
                        op: match invalidate {
                            Some(k) => SendOp::SendInv(*k),
                            None => SendOp::Send,
                        },
                        data: SendData::Inline(cqe),
                        signaled,
                    });
                }
            }
        }
        for chain in wrs.chunks(rdma::MAX_CHAIN) {
            q.id.post_send(chain)?;
        }
        Ok(())
    }

    /// Polls every device's completion queue once; true if it found work.
    fn poll_all(&mut self, cx: &mut Cx) -> bool {
        let mut worked = false;
        for di in 0..self.devices.len() {
            loop {
                let n = match self.devices[di].cq.poll(&mut self.wcs) {
                    Ok(n) => n,
                    Err(e) => {
                        log::error!("reactor {}: {e}", cx.index);
                        0
                    }
                };
                for i in 0..n {
                    let wc = self.wcs[i];
                    self.work_completion(cx, di, wc);
                }
                worked |= n > 0;
                if n < POLL_BATCH {
                    break;
                }
            }
        }
        worked
    }

    fn work_completion(&mut self, cx: &mut Cx, dev: usize, wc: Wc) {
        let (slot, gen, kind, value) = wr_split(wc.wr_id);
        let live = matches!(self.qps.get(slot), Some(Some(q)) if q.gen == gen && q.dev == dev);
        if !live {
            // A late completion of a queue pair already destroyed (its
            // resources went with it).
            return;
        }
        let ok = wc.status == 0;
        match kind {
            W_DRAIN => {
                self.destroy(cx, slot);
                return;
            }
            W_RESP => {
                if ok {
                    self.response_sent(slot);
                }
                if value != NO_CHUNK {
                    self.put_chunk(slot, value);
                }
            }
            W_READ => {
                let (tag, chunk) = ((value >> 12) as u16, value & 0xFFF);
                if ok {
                    self.read_done(cx, slot, tag, chunk);
                } else if chunk != NO_CHUNK {
                    self.put_chunk(slot, chunk);
                }
            }
            W_RECV if ok => self.received(cx, slot, value, wc.byte_len),
            _ => {}
        }
        if !ok {
            let what = match kind {
                W_RECV => "receive",
                W_RESP => "response send",
                W_READ => "RDMA READ",
                _ => "work request",
            };
            let why = format!("{what} failed: {}", rdma::wc_status_str(wc.status));
            if wc.status != 5 {
                // Not a flush (of a queue pair closing anyway): worth saying.
                log::warn!("reactor {}: RDMA {why}", cx.index);
            }
            self.teardown(cx, slot, &why);
            return;
        }
        // Staging buffers came free: actions waiting for one go now.
        if kind == W_RESP || kind == W_READ {
            self.run_waiting(cx);
        }
        self.after(cx, slot);
    }

    /// Queue pairs with actions waiting for a staging buffer try again.
    fn run_waiting(&mut self, cx: &mut Cx) {
        for s in 0..self.qps.len() {
            if matches!(&self.qps[s], Some(q) if !q.waiting.is_empty()) {
                self.run_actions(cx, s);
            }
        }
    }

    /// A command capsule arrived in receive buffer `i`.
    fn received(&mut self, cx: &mut Cx, slot: usize, i: u32, len: u32) {
        let Some(q) = self.qps.get_mut(slot).and_then(|q| q.as_mut()) else {
            return;
        };
        let len = len as usize;
        if len < SQE_LEN || len > q.slot_size {
            let why = format!("a {len}-byte capsule (a command is {SQE_LEN} bytes)");
            return self.teardown(cx, slot, &why);
        }
        let at = (i as usize * q.slot_size) as u64;
        let mut sqe = [0u8; SQE_LEN];
        let region = q.recv.region();
        let mut data = Vec::new();
        let read = region.read(at, &mut sqe)
            && (len == SQE_LEN || {
                data = cx.bufs.alloc_len(len - SQE_LEN);
                region.read(at + SQE_LEN as u64, &mut data)
            });
        // The buffer is free again: post it before handling the command.
        if let Err(e) = self.post_recv(slot, i) {
            return self.teardown(cx, slot, &format!("cannot post a receive: {e}"));
        }
        if !read {
            return self.teardown(cx, slot, "receive buffer out of bounds");
        }
        let (Some(q), Some(queue)) = (
            self.qps.get_mut(slot).and_then(|q| q.as_mut()),
            cx.sessions.queue(slot),
        ) else {
            return;
        };
        q.conn.capsule(&sqe, data, queue, cx.now);
        cx.sessions.mark_dirty(slot);
    }

    /// The RDMA READ of write `tag` finished (into `chunk`, or into backend
    /// memory when there is none).
    fn read_done(&mut self, cx: &mut Cx, slot: usize, tag: u16, chunk: u32) {
        let data = if chunk == NO_CHUNK {
            None
        } else {
            let Some(q) = self.qps.get(slot).and_then(|q| q.as_ref()) else {
                return;
            };
            let n = q.conn.write_len(tag).unwrap_or(0);
            let st = &self.devices[q.dev].staging;
            let mut d = cx.bufs.alloc_len(n as usize);
            if !st.mr.region().read(chunk as u64 * st.chunk as u64, &mut d) {
                d.clear();
            }
            self.put_chunk(slot, chunk);
            Some(d)
        };
        let (Some(q), Some(queue)) = (
            self.qps.get_mut(slot).and_then(|q| q.as_mut()),
            cx.sessions.queue(slot),
        ) else {
            return;
        };
        q.conn.read_done(tag, data, queue, cx.now);
        cx.sessions.mark_dirty(slot);
    }

    /// After the connection moved: close it on a protocol error.
    fn after(&mut self, cx: &mut Cx, slot: usize) {
        let why = self
            .qps
            .get(slot)
            .and_then(|q| q.as_ref())
            .and_then(|q| q.conn.close_reason().map(str::to_string));
        if let Some(why) = why {
            self.teardown(cx, slot, &why);
        }
    }

    fn cm_event(&mut self, cx: &mut Cx, ev: CmEvent) {
        if ev.kind == CmEventKind::ConnectRequest {
            return self.connect_request(cx, ev);
        }
        if self.listeners.iter().any(|(_, l)| l.key() == ev.id) {
            // Events on a listener: the device went away, or its address.
            log::error!(
                "RDMA listener: {} (status {}); it no longer accepts connections",
                ev.name(),
                ev.status
            );
            if ev.kind == CmEventKind::DeviceRemoval {
                self.listeners.retain(|(_, l)| l.key() != ev.id);
            }
            return;
        }
        let Some(slot) = ev.context.checked_sub(1) else {
            return;
        };
        let ours = matches!(self.qps.get(slot), Some(Some(q)) if q.id.key() == ev.id);
        if !ours {
            return;
        }
        match ev.kind {
            CmEventKind::Established => {
                log::debug!("reactor {}: RDMA connection established", cx.index);
            }
            CmEventKind::Disconnected => self.teardown(cx, slot, "the host disconnected"),
            CmEventKind::TimewaitExit => self.teardown(cx, slot, "timewait exit"),
            CmEventKind::DeviceRemoval => self.teardown(cx, slot, "the RDMA device is gone"),
            CmEventKind::AddrChange => self.teardown(cx, slot, "the address changed"),
            CmEventKind::ConnectError | CmEventKind::Unreachable | CmEventKind::Rejected => {
                let why = format!("connection failed ({})", ev.name());
                self.teardown(cx, slot, &why)
            }
            _ => log::debug!("RDMA: {} ignored", ev.name()),
        }
    }
}

/// Gives back the buffers of an action that will not be posted.
fn recycle_action(cx: &mut Cx, a: Action) {
    if let Action::Respond {
        data: Some((ReadData::Bytes(b), _, _)),
        ..
    } = a
    {
        cx.bufs.recycle(b);
    }
}

impl Driver for RdmaDriver {
    fn start(&mut self, cx: &mut Cx) -> io::Result<()> {
        if let Some(c) = &self.channel {
            cx.ring
                .push(Op::PollIn { fd: c.fd() }, token(self.id, K_CM, 0))?;
        }
        Ok(())
    }

    fn completion(&mut self, cx: &mut Cx, kind: u8, slot: usize, c: Completion) -> bool {
        match kind {
            K_CM => {
                let Some(ch) = self.channel.clone() else {
                    return true;
                };
                loop {
                    match ch.get_event() {
                        Ok(Some(ev)) => self.cm_event(cx, ev),
                        Ok(None) => break,
                        Err(e) => {
                            log::error!("reactor {}: {e}", cx.index);
                            break;
                        }
                    }
                }
                if let Err(e) = cx.ring.push(Op::PollIn { fd: ch.fd() }, c.token) {
                    log::error!("reactor {}: cannot wait for RDMA CM events: {e}", cx.index);
                }
            }
            K_COMP => {
                if let Some(d) = self.devices.get_mut(slot) {
                    d.cq.take_event();
                    d.armed = false;
                    let fd = d.cq.channel().fd();
                    if let Err(e) = cx.ring.push(Op::PollIn { fd }, c.token) {
                        log::error!(
                            "reactor {}: cannot wait for RDMA completions: {e}",
                            cx.index
                        );
                    }
                }
                self.poll_all(cx);
            }
            _ => {}
        }
        true
    }

    fn poll(&mut self, cx: &mut Cx) -> bool {
        self.poll_all(cx)
    }

    fn adopt(&mut self, cx: &mut Cx, conn: Handoff) {
        match conn.downcast::<Pending>() {
            Ok(p) => self.accept(cx, *p),
            Err(_) => cx.sessions.abandon(),
        }
    }

    fn listen(&mut self, cx: &mut Cx, id: u16, what: Handoff) -> io::Result<SocketAddr> {
        let addr = *what
            .downcast::<SocketAddr>()
            .map_err(|_| io::Error::other("not an address"))?;
        nvmf_sys::rdma::available().map_err(io::Error::other)?;
        let ch = self.channel(cx)?;
        let l = CmId::listen(&ch, addr, crate::transport::RDMA_BACKLOG)?;
        let bound = l.local_addr().unwrap_or(addr);
        self.listeners.push((id, l));
        Ok(bound)
    }

    fn unlisten(&mut self, _cx: &mut Cx, id: u16) -> bool {
        let n = self.listeners.len();
        // Dropping the id stops it listening.
        self.listeners.retain(|(lid, _)| *lid != id);
        self.listeners.len() != n
    }

    fn respond(&mut self, cx: &mut Cx, slot: usize, r: &mut Vec<Response>) {
        let (Some(q), Some(s)) = (
            self.qps.get_mut(slot).and_then(|q| q.as_mut()),
            cx.sessions.get(slot),
        ) else {
            return;
        };
        q.conn.respond(r, &s.queue);
    }

    fn flush(&mut self, cx: &mut Cx, slot: usize) {
        let pending = matches!(&self.qps.get(slot), Some(Some(q)) if q.conn.has_actions());
        if pending {
            self.run_actions(cx, slot);
        }
        self.after(cx, slot);
    }

    fn close(&mut self, cx: &mut Cx, slot: usize, why: &str) {
        self.teardown(cx, slot, why);
    }

    fn tick(&mut self, cx: &mut Cx) {
        for slot in 0..self.qps.len() {
            let stuck = matches!(&self.qps[slot], Some(q) if matches!(q.state, QpState::Draining(t) if cx.now.duration_since(t) > DRAIN_TIMEOUT));
            if stuck {
                log::warn!(
                    "reactor {}: RDMA queue pair did not drain in {DRAIN_TIMEOUT:?}; destroying it",
                    cx.index
                );
                self.destroy(cx, slot);
            }
        }
    }

    fn before_sleep(&mut self, cx: &mut Cx) -> io::Result<bool> {
        for d in self.devices.iter_mut() {
            if !d.armed {
                d.cq.arm()?;
                d.armed = true;
            }
        }
        // Completions that came before the arming would not signal.
        Ok(!self.poll_all(cx))
    }

    fn stop(&mut self, cx: &mut Cx) {
        for slot in 0..self.qps.len() {
            if self.qps[slot].is_some() {
                if let Some(q) = self.qps[slot].as_ref() {
                    let _ = q.id.disconnect();
                }
                self.destroy(cx, slot);
            }
        }
        self.listeners.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_request_ids_carry_slot_generation_kind_and_value() {
        for (slot, gen, kind, value) in [
            (0usize, 0u8, W_RECV, 0u32),
            (0xFF_FFFF, 255, W_DRAIN, 0xFF_FFFF),
            (12345, 7, W_READ, (1023 << 12) | NO_CHUNK),
            (3, 1, W_RESP, 255),
        ] {
            let id = wr_id(slot, gen, kind, value);
            assert_eq!(wr_split(id), (slot, gen, kind, value), "{id:#x}");
        }
        // A value wider than 24 bits cannot spill into the kind.
        assert_eq!(wr_split(wr_id(1, 2, W_RESP, 0xFFFF_FFFF)).2, W_RESP);
    }
}
