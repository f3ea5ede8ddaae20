//! What the reactor offers its drivers: sessions, ring tokens, and the
//! context passed to every driver call. A driver (a transport such as TCP
//! or RDMA, and later a direct NVMe backend) owns its sockets or queue
//! pairs; the reactor owns the loop, the ring and the sessions.

use super::ReactorLink;
use crate::buf::Buffers;
use crate::fabrics::{Queue, Response, TransportCaps};
use crate::subsystem::Target;
use nvmf_sys::{Completion, Ring};
use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// A connection handed from the reactor that accepted it to the one that
/// will serve it (a socket, an RDMA CM id, ...), opened by the driver.
pub type Handoff = Box<dyn Any + Send>;

/// One transport driver of a reactor.
pub trait Driver {
    /// Arms what the driver waits on in the ring (listeners, event
    /// channels) before the loop starts.
    fn start(&mut self, cx: &mut Cx) -> io::Result<()>;
    /// A ring completion with one of this driver's tokens (see [`token`]):
    /// `kind` is the driver's own kind (0 to 15), `slot` the session or
    /// listener it named. Returns whether it was work (a polled socket
    /// that had nothing is not).
    fn completion(&mut self, cx: &mut Cx, kind: u8, slot: usize, c: Completion) -> bool;
    /// Polls what the ring does not see (RDMA completion queues, NVMe
    /// queue pairs); returns whether it found work.
    fn poll(&mut self, _cx: &mut Cx) -> bool {
        false
    }
    /// A connection another reactor accepted for this one.
    fn adopt(&mut self, cx: &mut Cx, conn: Handoff);
    /// Starts accepting on a listener added at run time (`what` is the
    /// driver's own: a bound socket, an address), marking its connections
    /// with listener `id`; returns the address it listens on. Only reactor
    /// 0 listens.
    fn listen(&mut self, _cx: &mut Cx, _id: u16, _what: Handoff) -> io::Result<SocketAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this driver has no listeners",
        ))
    }
    /// Stops accepting on listener `id`; false when it is not this
    /// driver's. (Its connections are closed by the reactors.)
    fn unlisten(&mut self, _cx: &mut Cx, _id: u16) -> bool {
        false
    }
    /// Responses of session `slot`'s queue (its backend I/O finished) for
    /// the connection to send. A driver whose connection is gone recycles
    /// their buffers.
    fn respond(&mut self, cx: &mut Cx, slot: usize, responses: &mut Vec<Response>);
    /// Session `slot` has work: start its sends and receives, or finish
    /// closing it.
    fn flush(&mut self, cx: &mut Cx, slot: usize);
    /// Closes session `slot`'s connection once what is queued is sent.
    fn close(&mut self, cx: &mut Cx, slot: usize, why: &str);
    /// The reactor's timer (every 100 ms).
    fn tick(&mut self, _cx: &mut Cx) {}
    /// A backend operation of session `slot`'s command `tag` for a device
    /// this driver drives; its end goes to `cx.device_done`. Drivers of no
    /// device refuse it.
    fn submit_io(
        &mut self,
        cx: &mut Cx,
        slot: usize,
        tag: u32,
        req: crate::backend::DeviceRequest,
    ) {
        cx.device_done.push(crate::backend::DeviceDone {
            slot,
            tag,
            result: Err(crate::nvme::Status::INTERNAL_ERROR),
            buf: req.op.into_buf(),
        });
    }
    /// The end of a pass: write the doorbells of what was submitted.
    fn flush_io(&mut self, _cx: &mut Cx) {}
    /// The reactor is about to sleep in its ring: arm the wake-ups of the
    /// queues the ring does not see. `Ok(false)` when work turned up
    /// meanwhile (the reactor then polls again instead of sleeping).
    fn before_sleep(&mut self, _cx: &mut Cx) -> io::Result<bool> {
        Ok(true)
    }
    /// The longest the reactor may sleep now: queues that wake nobody (a
    /// polled NVMe completion queue with commands in flight) need a look
    /// soon. `None`: the ring wakes the reactor for everything of this
    /// driver's.
    fn sleep_limit(&self) -> Option<std::time::Duration> {
        None
    }
    /// The reactor stops: close every connection.
    fn stop(&mut self, cx: &mut Cx);
}

/// Ring token kinds of the reactor itself (driver nibble 0).
pub(super) const T_WAKE: u8 = 1;
pub(super) const T_IO: u8 = 2;

/// A ring token: the kind in bits 7:0 (driver + 1 in the high nibble, the
/// driver's own kind in the low one), a slot in bits 31:8, and a tag in
/// bits 63:32 (backend operations).
pub fn token(driver: u8, kind: u8, slot: usize) -> u64 {
    ((slot as u64 & 0xFF_FFFF) << 8) | ((driver as u64 + 1) << 4) | (kind as u64 & 0xF)
}

pub(super) fn reactor_token(kind: u8, slot: usize, tag: u32) -> u64 {
    ((tag as u64) << 32) | ((slot as u64 & 0xFF_FFFF) << 8) | kind as u64
}

/// Splits a token into (driver, kind, slot, tag); driver `None` is the
/// reactor's own.
pub(super) fn split(token: u64) -> (Option<u8>, u8, usize, u32) {
    let k = token as u8;
    let driver = (k >> 4).checked_sub(1);
    (
        driver,
        k & 0xF,
        ((token >> 8) & 0xFF_FFFF) as usize,
        (token >> 32) as u32,
    )
}

/// A transport connection's fabrics queue and what the reactor tracks of
/// it. The driver keeps the connection itself, under the same slot.
pub struct Session {
    pub queue: Queue,
    pub(super) driver: u8,
    /// Backend operations in the ring.
    pub(super) io_busy: u32,
    /// The driver is done with the connection.
    pub(super) released: bool,
    in_dirty: bool,
    /// In `Sessions::gated`.
    pub(super) in_gated: bool,
}

/// The reactor's sessions, by slot.
pub struct Sessions {
    slots: Vec<Option<Session>>,
    free: Vec<usize>,
    pub(super) dirty: Vec<usize>,
    /// Sessions with commands waiting at a namespace's gate (a Compare and
    /// Write), retried on every turn of the loop.
    pub(super) gated: Vec<usize>,
    /// This reactor's connection count (for placing new connections).
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Sessions {
    pub(super) fn new(count: Arc<std::sync::atomic::AtomicUsize>) -> Sessions {
        Sessions {
            slots: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            gated: Vec::new(),
            count,
        }
    }

    /// Starts a session for a new connection of `driver`; returns its slot.
    /// (The connection was counted when it was placed on this reactor.)
    pub fn open(&mut self, driver: u8, queue: Queue) -> usize {
        let s = Session {
            queue,
            driver,
            io_busy: 0,
            released: false,
            in_dirty: false,
            in_gated: false,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(s);
                i
            }
            None => {
                self.slots.push(Some(s));
                self.slots.len() - 1
            }
        }
    }

    /// A connection placed here that never became a session.
    pub fn abandon(&mut self) {
        self.count.fetch_sub(1, Relaxed);
    }

    pub fn get(&self, slot: usize) -> Option<&Session> {
        self.slots.get(slot).and_then(|s| s.as_ref())
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Session> {
        self.slots.get_mut(slot).and_then(|s| s.as_mut())
    }

    /// The queue of session `slot`.
    pub fn queue(&mut self, slot: usize) -> Option<&mut Queue> {
        self.get_mut(slot).map(|s| &mut s.queue)
    }

    /// Session `slot` has work to push this iteration.
    pub fn mark_dirty(&mut self, slot: usize) {
        if let Some(s) = self.get_mut(slot) {
            if !s.in_dirty {
                s.in_dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    pub(super) fn clear_dirty(&mut self, slot: usize) -> bool {
        match self.get_mut(slot) {
            Some(s) => {
                s.in_dirty = false;
                true
            }
            None => false,
        }
    }

    /// The driver is done with session `slot`'s connection (closed, with
    /// nothing of it in flight): the session ends once its backend
    /// operations are back.
    pub fn release(&mut self, slot: usize) {
        if let Some(s) = self.get_mut(slot) {
            s.released = true;
        }
        self.maybe_free(slot);
    }

    pub(super) fn maybe_free(&mut self, slot: usize) {
        if matches!(self.get(slot), Some(s) if s.released && s.io_busy == 0) {
            self.slots[slot] = None;
            self.free.push(slot);
            self.count.fetch_sub(1, Relaxed);
        }
    }

    /// Slots in use, for timers.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Sessions open.
    pub fn open_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// The reactor's context for a driver call.
pub struct Cx<'a> {
    pub ring: &'a mut Ring,
    pub sessions: &'a mut Sessions,
    /// This iteration's clock reading.
    pub now: Instant,
    /// This reactor's index.
    pub index: usize,
    pub target: &'a Arc<Target>,
    pub bufs: &'a Buffers,
    /// Device operations that finished (the reactor hands them to their
    /// sessions' queues).
    pub device_done: &'a mut Vec<crate::backend::DeviceDone>,
    pub(super) links: &'a Arc<Vec<ReactorLink>>,
}

impl Cx<'_> {
    /// A fabrics queue for a new connection of a transport with `caps`;
    /// `local` is the address the host reached.
    /// A queue for a connection that listener `listener` accepted, from
    /// `peer` to `local`.
    pub fn new_queue(
        &self,
        local: SocketAddr,
        peer: Option<SocketAddr>,
        listener: u16,
        caps: TransportCaps,
    ) -> Queue {
        let origin = crate::fabrics::Origin {
            local,
            peer,
            listener,
            reactor: self.index as u16,
        };
        Queue::new(self.target.clone(), origin, caps, self.bufs.clone())
    }

    /// Chooses the reactor for a new connection (the least loaded) and
    /// counts the connection there at once, so a burst spreads.
    pub fn place(&self) -> usize {
        let r = (0..self.links.len())
            .min_by_key(|&i| self.links[i].connections.load(Relaxed))
            .unwrap_or(0);
        self.links[r].connections.fetch_add(1, Relaxed);
        r
    }

    /// Hands a connection placed on `reactor` to that reactor's `driver`.
    pub fn hand_off(&self, reactor: usize, driver: u8, conn: Handoff) {
        self.links[reactor].send(super::Msg::Adopt { driver, conn });
    }
}
