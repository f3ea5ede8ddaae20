//! Per-core reactors. Each reactor is one pinned thread with one io_uring
//! ring; it runs the loop, the timers, the messages, the load accounting
//! and the idle policy, and completes backend I/O. Transports are drivers
//! behind one trait ([`Driver`]): they own their sockets or queue pairs and
//! pair each connection with a fabrics queue in a [`Session`] the reactor
//! owns. A poll iteration drains completions, polls what the ring does not
//! see, advances the state machines, queues every operation and enters the
//! kernel once. Reactors share nothing but message channels.

mod driver;

pub use driver::{token, Cx, Driver, Handoff, Session, Sessions};

use crate::buf::Buffers;
use crate::config::{Config, IdlePolicy};
use crate::fabrics::{IoRequest, IoWork};

/// How a backend operation ended: a ring result (bytes or -errno), or a
/// device's NVMe status.
enum IoResult {
    Ring(i32),
    Device(Result<(), crate::nvme::Status>),
}
use crate::subsystem::Target;
use crate::transport;
use crossbeam_channel::{Receiver, Sender};
use driver::{reactor_token, split, T_IO, T_WAKE};
use nvmf_sys::{EventFd, Op, Ring};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often timers (keep-alive, controller teardown) are checked.
const TICK: Duration = Duration::from_millis(100);
/// How long a reactor with commands waiting at a gate sleeps at most.
const GATE_POLL: Duration = Duration::from_micros(200);
/// How long an adaptive reactor keeps polling after its last work before it
/// sleeps in its ring: long enough that a host at queue depth 1 never finds
/// it asleep, short enough that an idle target costs nothing.
pub const SPIN_WINDOW: Duration = Duration::from_micros(500);
const RING_ENTRIES: u32 = 1024;

/// errno EIO, for a backend operation that could not be queued.
const EIO: i32 = 5;

enum Msg {
    /// A connection placed on this reactor, for one of its drivers.
    Adopt {
        driver: u8,
        conn: Handoff,
    },
    /// Reactor 0: start accepting on a listener added at run time.
    Listen {
        driver: u8,
        id: u16,
        what: Handoff,
        reply: Sender<io::Result<SocketAddr>>,
    },
    /// Reactor 0: stop accepting on listener `id`.
    Unlisten {
        id: u16,
    },
    /// Every reactor: close the connections listener `id` accepted.
    CloseListener {
        id: u16,
    },
    Stop,
}

/// Shared view of one reactor, for the others and the control plane.
struct ReactorLink {
    tx: Sender<Msg>,
    wake: Arc<EventFd>,
    connections: Arc<AtomicUsize>,
    /// Time spent in iterations that found work, and in all, in
    /// nanoseconds; added once per [`LOAD_PERIOD`].
    busy_ns: AtomicU64,
    total_ns: AtomicU64,
    /// Advanced on every timer tick: the watchdog's sign of life.
    heartbeat: AtomicU64,
}

/// What a reactor has done, for the control plane.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReactorStats {
    pub connections: usize,
    pub busy_ns: u64,
    pub total_ns: u64,
    pub heartbeat: u64,
}

/// Reads every reactor's [`ReactorStats`]; cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct StatsSource(Arc<Vec<ReactorLink>>);

impl StatsSource {
    pub fn read(&self) -> Vec<ReactorStats> {
        self.0
            .iter()
            .map(|l| ReactorStats {
                connections: l.connections.load(Ordering::Relaxed),
                busy_ns: l.busy_ns.load(Ordering::Relaxed),
                total_ns: l.total_ns.load(Ordering::Relaxed),
                heartbeat: l.heartbeat.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl ReactorLink {
    fn send(&self, m: Msg) {
        if self.tx.send(m).is_ok() {
            self.wake.notify();
        }
    }
}

/// Opens and closes listeners of a running target (reactor 0 accepts on
/// them); cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ListenerControl {
    links: Arc<Vec<ReactorLink>>,
    target: Arc<Target>,
}

/// How long opening a listener waits for reactor 0.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

impl ListenerControl {
    /// Opens listener `l` under a new ID and starts accepting on it; the
    /// result (with the address it is bound to) is for
    /// [`Target::set_listeners`], which makes Connect and the discovery log
    /// see it. An RDMA listener that cannot be set up becomes a TCP one when
    /// its `fallback` allows.
    pub fn open(
        &self,
        l: &crate::config::ListenerConfig,
    ) -> io::Result<crate::subsystem::Listener> {
        use crate::config::TransportKind;
        let id = self
            .target
            .new_listener_id()
            .ok_or_else(|| io::Error::other("no listener IDs left: restart the target"))?;
        let mut l = l.clone();
        if l.transport == TransportKind::Rdma {
            match self.ask(transport::DRIVER_RDMA, id, Box::new(l.addr)) {
                Ok(a) => {
                    l.addr = a;
                    return Ok(crate::subsystem::Listener::new(id, &l));
                }
                Err(e) if l.fallback == Some(TransportKind::Tcp) => {
                    log::error!(
                        "{}; FALLING BACK to NVMe/TCP on {} as the config allows",
                        transport::rdma_help(l.addr, &e),
                        l.addr
                    );
                    l.transport = TransportKind::Tcp;
                }
                Err(e) => return Err(io::Error::new(e.kind(), transport::rdma_help(l.addr, &e))),
            }
        }
        let sock = transport::tcp::driver::bind(l.addr)?;
        l.addr = self.ask(transport::DRIVER_TCP, id, Box::new(sock))?;
        Ok(crate::subsystem::Listener::new(id, &l))
    }

    fn ask(&self, driver: u8, id: u16, what: Handoff) -> io::Result<SocketAddr> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.links[0].send(Msg::Listen {
            driver,
            id,
            what,
            reply,
        });
        match rx.recv_timeout(LISTEN_WAIT) {
            Ok(r) => r,
            Err(_) => {
                // It may still listen later: have it closed.
                self.links[0].send(Msg::Unlisten { id });
                Err(io::Error::other("reactor 0 did not answer"))
            }
        }
    }

    /// Stops accepting on listener `id` and closes the connections it
    /// accepted (call after [`Target::set_listeners`] dropped it).
    pub fn close(&self, id: u16) {
        self.links[0].send(Msg::Unlisten { id });
    }
}

/// A running target: its reactors and listeners.
pub struct Runtime {
    links: Arc<Vec<ReactorLink>>,
    threads: Vec<JoinHandle<()>>,
    listen_addrs: Vec<SocketAddr>,
    stopped: Arc<AtomicBool>,
    pub target: Arc<Target>,
}

impl Runtime {
    /// Opens every listener, opens every namespace and starts one reactor
    /// per core. A listener on port 0 gets an ephemeral port (for tests);
    /// the discovery log reports the bound port.
    pub fn start(cfg: &Config) -> io::Result<Runtime> {
        let mut cfg = cfg.clone();
        let listeners = transport::Listeners::open(&mut cfg)?;
        let listen_addrs = cfg.listeners.iter().map(|l| l.addr).collect();
        let target = Arc::new(Target::new(&cfg)?);
        let cores = if cfg.target.cores.is_empty() {
            vec![0]
        } else {
            cfg.target.cores.clone()
        };
        let mut links = Vec::new();
        let mut inboxes = Vec::new();
        for _ in &cores {
            let (tx, rx) = crossbeam_channel::unbounded();
            links.push(ReactorLink {
                tx,
                wake: Arc::new(EventFd::new()?),
                connections: Arc::new(AtomicUsize::new(0)),
                busy_ns: AtomicU64::new(0),
                total_ns: AtomicU64::new(0),
                heartbeat: AtomicU64::new(0),
            });
            inboxes.push(rx);
        }
        let links = Arc::new(links);
        let stopped = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut listeners = Some(listeners);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        for (i, (core, inbox)) in cores.iter().copied().zip(inboxes).enumerate() {
            let links = links.clone();
            let target = target.clone();
            let idle = cfg.target.idle;
            // Reactor 0 accepts; it places connections on the others.
            let mine = if i == 0 { listeners.take() } else { None };
            let tcfg = cfg.target.clone();
            let ready = ready_tx.clone();
            let name = format!("reactor-{i}");
            let t = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    nvmf_sys::cpu::set_thread_name(&name);
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        log::warn!("{name}: could not pin to core {core}; running unpinned");
                    }
                    // The ring is created here: it belongs to this thread only.
                    let ring = match Ring::new_local(RING_ENTRIES) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready.send(Err(io::Error::new(
                                e.kind(),
                                format!("{name}: io_uring: {e}"),
                            )));
                            return;
                        }
                    };
                    let drivers = transport::drivers(&tcfg, mine);
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    let count = links[i].connections.clone();
                    let mut r = Reactor {
                        index: i,
                        ring,
                        inbox,
                        links,
                        target,
                        idle,
                        bufs: Buffers::new(),
                        drivers,
                        sessions: Sessions::new(count),
                        io_reqs: Vec::new(),
                        responses: Vec::new(),
                        device_done: Vec::new(),
                        now: Instant::now(),
                        stop: false,
                    };
                    if let Err(e) = r.run() {
                        log::error!("{name}: stopped on error: {e}");
                    }
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut rt = Runtime {
            links,
            threads,
            listen_addrs,
            stopped,
            target,
        };
        for _ in 0..rt.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    rt.stop_all();
                    return Err(e);
                }
                Err(_) => {
                    rt.stop_all();
                    return Err(io::Error::other("a reactor thread exited during start-up"));
                }
            }
        }
        Ok(rt)
    }

    /// Reads the reactors' statistics from any thread.
    pub fn stats_source(&self) -> StatsSource {
        StatsSource(self.links.clone())
    }

    /// Adds and removes listeners while the target runs, from any thread.
    pub fn listener_control(&self) -> ListenerControl {
        ListenerControl {
            links: self.links.clone(),
            target: self.target.clone(),
        }
    }

    /// The addresses the listeners are bound to, in config order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// Stops every reactor and closes every connection.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.stopped.swap(true, Relaxed) {
            return;
        }
        for l in self.links.iter() {
            l.send(Msg::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Whether a reactor has exited (they exit only when stopped or on an
    /// error that leaves them unable to go on).
    pub fn reactor_exited(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// How busy a reactor is: the share of its time spent in poll iterations
/// that found work (the rest is spinning or sleeping), logged at debug
/// level every [`LOAD_PERIOD`].
struct Load {
    since: Instant,
    last: Instant,
    busy: Duration,
    polls: u64,
}

const LOAD_PERIOD: Duration = Duration::from_secs(1);

impl Load {
    fn new(now: Instant) -> Load {
        Load {
            since: now,
            last: now,
            busy: Duration::ZERO,
            polls: 0,
        }
    }

    fn account(&mut self, now: Instant, worked: bool, reactor: usize, link: &ReactorLink) {
        if worked {
            self.busy += now.duration_since(self.last);
        }
        self.last = now;
        self.polls += 1;
        let span = now.duration_since(self.since);
        if span >= LOAD_PERIOD {
            link.busy_ns
                .fetch_add(self.busy.as_nanos() as u64, Ordering::Relaxed);
            link.total_ns
                .fetch_add(span.as_nanos() as u64, Ordering::Relaxed);

            if self.busy > Duration::ZERO {
                log::debug!(
                    "reactor {reactor}: {:.1}% busy over the last {:.0} s ({} polls)",
                    100.0 * self.busy.as_secs_f64() / span.as_secs_f64(),
                    span.as_secs_f64(),
                    self.polls
                );
            }
            *self = Load::new(now);
        }
    }
}

struct Reactor {
    index: usize,
    ring: Ring,
    inbox: Receiver<Msg>,
    links: Arc<Vec<ReactorLink>>,
    target: Arc<Target>,
    idle: IdlePolicy,
    bufs: Buffers,
    /// By driver id (see [`transport::drivers`]).
    drivers: Vec<Box<dyn Driver>>,
    sessions: Sessions,
    /// Backend requests being moved to the ring (reused).
    io_reqs: Vec<IoRequest>,
    /// Responses of a backend completion (reused).
    responses: Vec<crate::fabrics::Response>,
    /// Device operations finished during a driver call.
    device_done: Vec<crate::backend::DeviceDone>,
    /// This iteration's clock reading.
    now: Instant,
    stop: bool,
}

/// Builds a driver context from the reactor's fields (a macro so that the
/// drivers, a separate field, can be borrowed beside it).
macro_rules! cx {
    ($r:ident) => {
        Cx {
            ring: &mut $r.ring,
            sessions: &mut $r.sessions,
            now: $r.now,
            index: $r.index,
            target: &$r.target,
            bufs: &$r.bufs,
            device_done: &mut $r.device_done,
            links: &$r.links,
        }
    };
}

impl Reactor {
    fn run(&mut self) -> io::Result<()> {
        for d in self.drivers.iter_mut() {
            d.start(&mut cx!(self))?;
        }
        let wake_fd = self.links[self.index].wake.as_raw_fd();
        self.ring
            .push(Op::PollIn { fd: wake_fd }, reactor_token(T_WAKE, 0, 0))?;
        let mut comps = Vec::with_capacity(256);
        let mut last_work = Instant::now();
        let mut last_tick = Instant::now();
        let mut load = Load::new(last_tick);
        let mut prev_worked = false;
        loop {
            let mut worked = false;
            while let Ok(m) = self.inbox.try_recv() {
                worked = true;
                match m {
                    Msg::Adopt { driver, conn } => match self.drivers.get_mut(driver as usize) {
                        Some(d) => d.adopt(&mut cx!(self), conn),
                        None => self.sessions.abandon(),
                    },
                    Msg::Listen {
                        driver,
                        id,
                        what,
                        reply,
                    } => {
                        let r = match self.drivers.get_mut(driver as usize) {
                            Some(d) => d.listen(&mut cx!(self), id, what),
                            None => Err(io::Error::other("no such driver")),
                        };
                        let _ = reply.send(r);
                    }
                    Msg::Unlisten { id } => {
                        for d in self.drivers.iter_mut() {
                            d.unlisten(&mut cx!(self), id);
                        }
                        // After the connections this reactor handed to the
                        // others, in the same channels: none is missed.
                        for (i, l) in self.links.iter().enumerate() {
                            if i != self.index {
                                l.send(Msg::CloseListener { id });
                            }
                        }
                        self.close_listener(id);
                    }
                    Msg::CloseListener { id } => self.close_listener(id),
                    Msg::Stop => self.stop = true,
                }
            }
            if self.stop {
                break;
            }
            self.ring.drain(&mut comps);
            let now = Instant::now();
            self.now = now;
            // The previous iteration, from its clock reading to this one
            // (its sends and receives in the kernel included), was work if
            // it found any.
            load.account(now, prev_worked, self.index, &self.links[self.index]);
            for c in comps.drain(..) {
                worked |= self.completion(c)?;
            }
            for d in self.drivers.iter_mut() {
                worked |= d.poll(&mut cx!(self));
            }
            if now.duration_since(last_tick) >= TICK {
                last_tick = now;
                self.tick(now);
            }
            self.finish_device_io();
            self.retry_gated();
            self.flush_dirty();
            for d in self.drivers.iter_mut() {
                d.flush_io(&mut cx!(self));
            }
            self.finish_device_io();
            if worked {
                last_work = now;
            }
            prev_worked = worked;
            let mut sleep = match self.idle {
                IdlePolicy::Busy => false,
                IdlePolicy::Adaptive => now.duration_since(last_work) > SPIN_WINDOW,
                // Even right after work: nothing is left to do but wait
                // (the drivers poll once more before the ring sleeps).
                IdlePolicy::Sleep => self.sessions.dirty.is_empty(),
            };
            if sleep {
                for d in self.drivers.iter_mut() {
                    sleep &= d.before_sleep(&mut cx!(self))?;
                }
            }
            if sleep {
                let mut limit = self.drivers.iter().filter_map(|d| d.sleep_limit()).min();
                if !self.sessions.gated.is_empty() {
                    // Commands wait at a gate for writes elsewhere to drain.
                    limit = Some(limit.map_or(GATE_POLL, |l| l.min(GATE_POLL)));
                }
                self.ring
                    .submit_and_wait(Some(limit.map_or(TICK, |l| l.min(TICK))))?;
            } else {
                self.ring.poll()?;
            }
        }
        for d in self.drivers.iter_mut() {
            d.stop(&mut cx!(self));
        }
        Ok(())
    }

    /// Handles one completion; false when it was no work (a polled socket
    /// with nothing in it).
    fn completion(&mut self, c: nvmf_sys::Completion) -> io::Result<bool> {
        let (driver, kind, slot, tag) = split(c.token);
        match driver {
            Some(d) => {
                let Some(drv) = self.drivers.get_mut(d as usize) else {
                    return Ok(true);
                };
                Ok(drv.completion(&mut cx!(self), kind, slot, c))
            }
            None if kind == T_WAKE => {
                self.links[self.index].wake.drain();
                let fd = self.links[self.index].wake.as_raw_fd();
                self.ring.push(Op::PollIn { fd }, c.token)?;
                Ok(true)
            }
            None if kind == T_IO => {
                self.io_done(
                    slot,
                    tag,
                    IoResult::Ring(c.result),
                    c.buf.unwrap_or_default(),
                );
                Ok(true)
            }
            None => Ok(true),
        }
    }

    /// Device operations that finished go to their sessions' queues.
    fn finish_device_io(&mut self) {
        while let Some(d) = self.device_done.pop() {
            self.io_done(d.slot, d.tag, IoResult::Device(d.result), d.buf);
        }
    }

    /// A backend operation finished: its result goes straight to the
    /// session's queue, and the queue's responses to the driver.
    fn io_done(&mut self, slot: usize, tag: u32, result: IoResult, buf: Vec<u8>) {
        let mut r = std::mem::take(&mut self.responses);
        let Some(s) = self.sessions.get_mut(slot) else {
            return;
        };
        s.io_busy -= 1;
        s.queue.set_now(self.now);
        match result {
            IoResult::Ring(res) => s.queue.io_done(tag, res, buf, &mut r),
            IoResult::Device(res) => s.queue.device_done(tag, res, buf, &mut r),
        }
        let driver = s.driver as usize;
        if !r.is_empty() {
            if let Some(d) = self.drivers.get_mut(driver) {
                d.respond(&mut cx!(self), slot, &mut r);
            }
        }
        for resp in r.drain(..) {
            self.bufs.recycle(resp.data);
        }
        self.responses = r;
        self.sessions.mark_dirty(slot);
        self.sessions.maybe_free(slot);
    }

    /// Sessions with commands waiting at a namespace's gate try them again;
    /// those still waiting stay on the list.
    fn retry_gated(&mut self) {
        if self.sessions.gated.is_empty() {
            return;
        }
        let mut gated = std::mem::take(&mut self.sessions.gated);
        let mut r = std::mem::take(&mut self.responses);
        gated.retain(|&slot| {
            let Some(s) = self.sessions.get_mut(slot) else {
                return false;
            };
            s.queue.retry_waiting(&mut r);
            let still = s.queue.has_waiting() && !s.released;
            s.in_gated = still;
            let driver = s.driver as usize;
            if !r.is_empty() {
                if let Some(d) = self.drivers.get_mut(driver) {
                    d.respond(&mut cx!(self), slot, &mut r);
                }
            }
            for resp in r.drain(..) {
                self.bufs.recycle(resp.data);
            }
            self.sessions.mark_dirty(slot);
            still
        });
        self.responses = r;
        gated.append(&mut self.sessions.gated);
        self.sessions.gated = gated;
    }

    /// Timers: keep-alive expiry and controller teardown close sessions.
    /// Closes every connection that listener `id` accepted (it was removed).
    fn close_listener(&mut self, id: u16) {
        for slot in 0..self.sessions.len() {
            let Some(s) = self.sessions.get_mut(slot) else {
                continue;
            };
            if s.released || s.queue.listener() != id {
                continue;
            }
            let driver = s.driver as usize;
            if let Some(d) = self.drivers.get_mut(driver) {
                d.close(&mut cx!(self), slot, "its listener was removed");
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        // The watchdog's sign of life, every tick (100 ms).
        self.links[self.index]
            .heartbeat
            .fetch_add(1, Ordering::Relaxed);
        for d in self.drivers.iter_mut() {
            d.tick(&mut cx!(self));
        }
        for slot in 0..self.sessions.len() {
            let Some(s) = self.sessions.get_mut(slot) else {
                continue;
            };
            if s.released {
                continue;
            }
            if let crate::fabrics::Tick::Close(why) = s.queue.tick(now) {
                let driver = s.driver as usize;
                if let Some(d) = self.drivers.get_mut(driver) {
                    d.close(&mut cx!(self), slot, why);
                }
                continue;
            }
            let mut r = std::mem::take(&mut self.responses);
            s.queue.poll_events(&mut r);
            if !r.is_empty() {
                let driver = s.driver as usize;
                if let Some(d) = self.drivers.get_mut(driver) {
                    d.respond(&mut cx!(self), slot, &mut r);
                }
                for resp in r.drain(..) {
                    self.bufs.recycle(resp.data);
                }
                self.sessions.mark_dirty(slot);
            }
            self.responses = r;
        }
    }

    /// Moves the backend operations of sessions with work to the ring, and
    /// lets their drivers start sends and receives.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.sessions.dirty);
        let mut reqs = std::mem::take(&mut self.io_reqs);
        for slot in dirty.drain(..) {
            if !self.sessions.clear_dirty(slot) {
                continue;
            }
            let Some(s) = self.sessions.get_mut(slot) else {
                continue;
            };
            let driver = s.driver as usize;
            let newly_gated = s.queue.has_waiting() && !s.in_gated;
            s.in_gated |= newly_gated;
            if s.queue.has_io() {
                s.queue.take_io(&mut reqs);
                s.io_busy += reqs.len() as u32;
                for r in reqs.drain(..) {
                    match r.work {
                        IoWork::Ring(op) => {
                            if let Err(e) = self.ring.push(op, reactor_token(T_IO, slot, r.tag)) {
                                // Only this command fails; the reactor goes on.
                                log::error!(
                                    "reactor {}: cannot queue a backend operation: {e}",
                                    self.index
                                );
                                self.io_done(slot, r.tag, IoResult::Ring(-EIO), Vec::new());
                            }
                        }
                        IoWork::Device(d) => {
                            let nvme = transport::DRIVER_NVME as usize;
                            if let Some(drv) = self.drivers.get_mut(nvme) {
                                drv.submit_io(&mut cx!(self), slot, r.tag, d);
                            }
                        }
                    }
                }
            }
            if newly_gated {
                self.sessions.gated.push(slot);
            }
            if let Some(d) = self.drivers.get_mut(driver) {
                d.flush(&mut cx!(self), slot);
            }
        }
        self.io_reqs = reqs;
        // Sessions marked while flushing wait for the next iteration.
        dirty.append(&mut self.sessions.dirty);
        self.sessions.dirty = dirty;
    }
}
