//! Per-core reactors. Each reactor is one pinned thread that owns its
//! connections and one io_uring ring; a poll iteration drains completions,
//! advances the connection state machines, queues every send and receive,
//! and enters the kernel once. Reactors share nothing but message channels.

use crate::config::{Config, IdlePolicy};
use crate::fabrics::Queue;
use crate::subsystem::Target;
use crate::transport::tcp::conn::{ConnParams, DirectRecv, TcpConn};
use crossbeam_channel::{Receiver, Sender};
use nvmf_sys::{EventFd, Op, Ring};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Receive buffer per connection.
const RECV_BUF: usize = 256 * 1024;
/// Write data at least this long still to come in an H2CData PDU is
/// received straight into the write's buffer rather than through the
/// receive buffer (one copy fewer).
const DIRECT_RECV_MIN: usize = 16 * 1024;
/// How often connection timers (keep-alive) are checked.
const TICK: Duration = Duration::from_millis(100);
/// How long an adaptive reactor keeps polling after its last work before it
/// sleeps in its ring: long enough that a host at queue depth 1 never finds
/// it asleep, short enough that an idle target costs nothing.
const SPIN_WINDOW: Duration = Duration::from_micros(500);
/// An I/O connection that received data this recently has its socket
/// polled (`recv(MSG_DONTWAIT)` on every pass of the spinning reactor)
/// rather than a receive waiting in the ring: the next command is picked up
/// by a plain receive, without the wake-up and deferred work of a waiting
/// one on either side. Shorter than `SPIN_WINDOW`, so every socket has a
/// waiting receive again before the reactor sleeps.
const POLL_WINDOW: Duration = Duration::from_micros(200);
/// At most this many sockets are polled at once: each costs a receive
/// attempt on every pass, which delays noticing the others.
const POLL_MAX: usize = 4;
const RING_ENTRIES: u32 = 1024;

/// Token kinds, in the low byte of a ring token; the slot is above.
const T_RECV: u64 = 1;
const T_SEND: u64 = 2;
const T_LISTEN: u64 = 3;
const T_WAKE: u64 = 4;
const T_IO: u64 = 5;
const T_RECV_DIRECT: u64 = 6;

/// Ring token: kind in bits 7:0, connection slot in 31:8, backend tag in 63:32.
fn token(kind: u64, slot: usize) -> u64 {
    ((slot as u64 & 0xFF_FFFF) << 8) | kind
}

/// errno EIO, for a backend operation that could not be queued.
const EIO: i32 = 5;
/// errno EAGAIN: a polled socket had nothing to receive.
const EAGAIN: i32 = 11;

fn io_token(slot: usize, tag: u32) -> u64 {
    token(T_IO, slot) | ((tag as u64) << 32)
}

enum Msg {
    NewConn(TcpStream),
    Stop,
}

/// How long binding a listener retries while its address is in use: after
/// a previous instance was killed, the kernel still holds its listening
/// socket for a few milliseconds, until it has torn down that process's
/// rings (their requests held the socket).
const BIND_RETRY: Duration = Duration::from_secs(3);

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let start = Instant::now();
    let mut said = false;
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && start.elapsed() < BIND_RETRY => {
                if !said {
                    log::info!("{addr} is in use; retrying for up to {BIND_RETRY:?}");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(l) if said => {
                log::info!("{addr} bound after {:?}", start.elapsed());
                return Ok(l);
            }
            r => return r,
        }
    }
}

/// Shared view of one reactor, for the others and the control plane.
struct ReactorLink {
    tx: Sender<Msg>,
    wake: Arc<EventFd>,
    connections: Arc<AtomicUsize>,
}

impl ReactorLink {
    fn send(&self, m: Msg) {
        if self.tx.send(m).is_ok() {
            self.wake.notify();
        }
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
    /// Binds every listener, opens every namespace and starts one reactor per
    /// core. A listener on port 0 gets an ephemeral port (for tests); the
    /// discovery log reports the bound port.
    pub fn start(cfg: &Config) -> io::Result<Runtime> {
        let mut cfg = cfg.clone();
        let mut listeners = Vec::new();
        for l in &mut cfg.listeners {
            let sock = bind(l.addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.addr))
            })?;
            sock.set_nonblocking(true)?;
            l.addr = sock.local_addr()?;
            listeners.push(sock);
        }
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
            });
            inboxes.push(rx);
        }
        let links = Arc::new(links);
        let stopped = Arc::new(AtomicBool::new(false));
        let params = ConnParams {
            in_capsule_data_size: cfg.target.in_capsule_data_size,
            max_io_size: cfg.target.max_io_size,
            allow_hdgst: cfg.target.hdr_digest,
            allow_ddgst: cfg.target.data_digest,
        };
        let mut threads = Vec::new();
        let mut listeners = Some(listeners);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        for (i, (core, inbox)) in cores.iter().copied().zip(inboxes).enumerate() {
            let links = links.clone();
            let target = target.clone();
            let idle = cfg.target.idle;
            let my_listeners = if i == 0 {
                listeners.take().unwrap_or_default()
            } else {
                Vec::new()
            };
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
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    let mut r = Reactor {
                        index: i,
                        ring,
                        inbox,
                        links,
                        target,
                        params,
                        idle,
                        listeners: my_listeners,
                        conns: Vec::new(),
                        free: Vec::new(),
                        iov_pool: Vec::new(),
                        dirty: Vec::new(),
                        io_reqs: Vec::new(),
                        now: Instant::now(),
                        polling: 0,
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

    fn account(&mut self, now: Instant, worked: bool, reactor: usize) {
        if worked {
            self.busy += now.duration_since(self.last);
        }
        self.last = now;
        self.polls += 1;
        let span = now.duration_since(self.since);
        if span >= LOAD_PERIOD {
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

struct Conn {
    stream: TcpStream,
    tcp: TcpConn,
    recv_busy: bool,
    send_busy: bool,
    /// Backend operations in the ring.
    io_busy: u32,
    /// Socket shut down; the slot is freed when no op is in flight.
    shut: bool,
    /// Where the send in flight starts in its first buffer.
    send_off: usize,
    /// Where in the receive buffer the receive in flight puts its data.
    recv_off: usize,
    /// The receive buffer, parked while a direct receive is in flight.
    rx_spare: Option<Vec<u8>>,
    /// The receive buffer of a finished receive: the next receive is posted
    /// after this iteration's send, so arming it never delays a response.
    rx_next: Option<Vec<u8>>,
    /// Where the direct receive in flight puts its data.
    direct: Option<(usize, usize)>,
    /// The receive in flight is a polling one (`Op::RecvNow`).
    polling: bool,
    /// When data last came in.
    last_rx: Instant,
    last_tick: Instant,
    in_dirty: bool,
}

struct Reactor {
    index: usize,
    ring: Ring,
    inbox: Receiver<Msg>,
    links: Arc<Vec<ReactorLink>>,
    target: Arc<Target>,
    params: ConnParams,
    idle: IdlePolicy,
    listeners: Vec<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Recycled iovec lists for gathered sends.
    iov_pool: Vec<Vec<nvmf_sys::SendBuf>>,
    /// Connections with work to push this iteration.
    dirty: Vec<usize>,
    /// Backend requests being moved to the ring (reused).
    io_reqs: Vec<crate::fabrics::IoRequest>,
    /// This iteration's clock reading.
    now: Instant,
    /// Polling receives in flight.
    polling: usize,
    stop: bool,
}

impl Reactor {
    fn run(&mut self) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            self.ring.push(
                Op::PollIn {
                    fd: self.listeners[i].as_raw_fd(),
                },
                token(T_LISTEN, i),
            )?;
        }
        let wake_fd = self.links[self.index].wake.as_raw_fd();
        self.ring
            .push(Op::PollIn { fd: wake_fd }, token(T_WAKE, 0))?;
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
                    Msg::NewConn(s) => self.add_conn(s),
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
            load.account(now, prev_worked, self.index);
            for c in comps.drain(..) {
                worked |= self.completion(c, now)?;
            }
            if now.duration_since(last_tick) >= TICK {
                last_tick = now;
                self.tick(now);
            }
            self.flush_dirty()?;
            if worked {
                last_work = now;
            }
            prev_worked = worked;
            if self.idle == IdlePolicy::Adaptive && now.duration_since(last_work) > SPIN_WINDOW {
                self.ring.submit_and_wait(Some(TICK))?;
            } else {
                self.ring.poll()?;
            }
        }
        for i in 0..self.conns.len() {
            if let Some(c) = &self.conns[i] {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
        Ok(())
    }

    fn add_conn(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
            self.links[self.index].connections.fetch_sub(1, Relaxed);
            return;
        };
        log::debug!("reactor {}: connection from {peer}", self.index);
        let queue = Queue::new(self.target.clone(), local);
        let conn = Conn {
            stream,
            tcp: TcpConn::new(queue, self.params),
            recv_busy: false,
            send_busy: false,
            io_busy: 0,
            shut: false,
            send_off: 0,
            recv_off: 0,
            rx_spare: None,
            rx_next: None,
            direct: None,
            polling: false,
            last_rx: self.now,
            last_tick: Instant::now(),
            in_dirty: false,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.conns[s] = Some(conn);
                s
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.post_recv(slot, vec![0u8; RECV_BUF]);
    }

    fn post_recv(&mut self, slot: usize, buf: Vec<u8>) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        let fd = c.stream.as_raw_fd();
        // Receive into the end of the buffer when the connection wants only
        // a few bytes (see `TcpConn::recv_limit`).
        let offset = match c.tcp.recv_limit() {
            Some(n) if n < buf.len() => buf.len() - n,
            _ => 0,
        };
        c.recv_off = offset;
        let poll = c.tcp.queue().qid() != 0
            && self.polling < POLL_MAX
            && self.now.duration_since(c.last_rx) < POLL_WINDOW;
        let op = if poll {
            Op::RecvNow { fd, buf, offset }
        } else {
            Op::Recv { fd, buf, offset }
        };
        match self.ring.push(op, token(T_RECV, slot)) {
            Ok(()) => {
                c.recv_busy = true;
                c.polling = poll;
                self.polling += usize::from(poll);
            }
            Err(e) => {
                log::warn!("reactor {}: cannot post recv: {e}", self.index);
                self.shut(slot);
            }
        }
    }

    /// Posts the connection's next receive: straight into a write's buffer
    /// when a large H2CData PDU is arriving, else into `buf`.
    fn next_recv(&mut self, slot: usize, buf: Vec<u8>) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if c.tcp.is_closing() {
            return;
        }
        let Some(d) = c.tcp.take_direct(DIRECT_RECV_MIN) else {
            let buf = if buf.len() == RECV_BUF {
                buf
            } else {
                vec![0u8; RECV_BUF]
            };
            return self.post_recv(slot, buf);
        };
        c.rx_spare = Some(buf);
        c.direct = Some((d.offset, d.len));
        let fd = c.stream.as_raw_fd();
        let op = match d.region {
            Some(dst) => Op::RecvRegion {
                fd,
                dst,
                offset: d.offset,
                len: d.len,
            },
            None => Op::RecvAll {
                fd,
                buf: d.buf,
                offset: d.offset,
                len: d.len,
            },
        };
        match self.ring.push(op, token(T_RECV_DIRECT, slot)) {
            Ok(()) => c.recv_busy = true,
            Err(e) => {
                log::warn!("reactor {}: cannot post a receive: {e}", self.index);
                self.shut(slot);
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].as_mut() {
            if !c.in_dirty {
                c.in_dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Handles one completion; false when it was no work (a polled socket
    /// with nothing in it).
    fn completion(&mut self, c: nvmf_sys::Completion, now: Instant) -> io::Result<bool> {
        let slot = ((c.token >> 8) & 0xFF_FFFF) as usize;
        match c.token & 0xFF {
            T_LISTEN => {
                self.accept_all(slot);
                let fd = self.listeners[slot].as_raw_fd();
                self.ring.push(Op::PollIn { fd }, c.token)?;
            }
            T_WAKE => {
                self.links[self.index].wake.drain();
                let fd = self.links[self.index].wake.as_raw_fd();
                self.ring.push(Op::PollIn { fd }, c.token)?;
            }
            T_RECV => {
                let Some(conn) = self.conns.get_mut(slot).and_then(|c| c.as_mut()) else {
                    return Ok(true);
                };
                conn.recv_busy = false;
                if conn.polling {
                    conn.polling = false;
                    self.polling -= 1;
                }
                let buf = c.buf.unwrap_or_default();
                if c.result == -EAGAIN && !conn.shut {
                    // Polled and empty: ask again (or wait, once the
                    // connection has been quiet for a while).
                    self.post_recv(slot, buf);
                    return Ok(false);
                }
                if c.result <= 0 || conn.shut {
                    if c.result < 0 && !conn.shut {
                        log::debug!("recv error {}", c.result);
                    }
                    self.shut(slot);
                } else {
                    let off = conn.recv_off;
                    conn.last_rx = now;
                    conn.tcp.receive(&buf[off..off + c.result as usize], now);
                    conn.rx_next = Some(buf);
                    self.mark_dirty(slot);
                }
                self.maybe_free(slot);
            }
            T_RECV_DIRECT => {
                let Some(conn) = self.conns.get_mut(slot).and_then(|c| c.as_mut()) else {
                    return Ok(true);
                };
                conn.recv_busy = false;
                let (offset, len) = conn.direct.take().unwrap_or_default();
                let d = DirectRecv {
                    buf: c.buf.unwrap_or_default(),
                    region: None, // the connection keeps its own handle
                    offset,
                    len,
                };
                if c.result <= 0 || conn.shut {
                    self.shut(slot);
                } else {
                    conn.last_rx = now;
                    conn.tcp.direct_done(d, c.result as usize, now);
                    conn.rx_next = conn.rx_spare.take();
                    self.mark_dirty(slot);
                }
                self.maybe_free(slot);
            }
            T_SEND => {
                let Some(conn) = self.conns.get_mut(slot).and_then(|c| c.as_mut()) else {
                    return Ok(true);
                };
                conn.send_busy = false;
                let mut bufs = c.bufs;
                if c.result < 0 || conn.shut {
                    bufs.clear();
                    self.iov_pool.push(bufs);
                    self.shut(slot);
                } else {
                    // Drop the fully sent buffers; resend the rest.
                    let mut off = conn.send_off + c.result as usize;
                    let mut done = 0;
                    while done < bufs.len() && off >= bufs[done].len() {
                        off -= bufs[done].len();
                        done += 1;
                    }
                    for b in bufs.drain(..done) {
                        conn.tcp.recycle(b);
                    }
                    if bufs.is_empty() {
                        self.iov_pool.push(bufs);
                        self.mark_dirty(slot);
                    } else {
                        conn.send_off = off;
                        conn.send_busy = true;
                        let fd = conn.stream.as_raw_fd();
                        let op = Op::SendV {
                            fd,
                            bufs,
                            first_offset: off,
                        };
                        if let Err(e) = self.ring.push(op, token(T_SEND, slot)) {
                            log::error!(
                                "reactor {}: cannot queue a send: {e}; closing the connection",
                                self.index
                            );
                            conn.send_busy = false;
                            self.shut(slot);
                        }
                    }
                }
                self.maybe_free(slot);
            }
            T_IO => {
                let Some(conn) = self.conns.get_mut(slot).and_then(|c| c.as_mut()) else {
                    return Ok(true);
                };
                conn.io_busy -= 1;
                conn.tcp
                    .io_done((c.token >> 32) as u32, c.result, c.buf.unwrap_or_default());
                self.mark_dirty(slot);
                self.maybe_free(slot);
            }
            _ => {}
        }
        Ok(true)
    }

    fn accept_all(&mut self, listener: usize) {
        loop {
            match self.listeners[listener].accept() {
                Ok((s, _)) => {
                    let target = (0..self.links.len())
                        .min_by_key(|&i| self.links[i].connections.load(Relaxed))
                        .unwrap_or(0);
                    // Counted now, before the hand-off, so a burst spreads.
                    self.links[target].connections.fetch_add(1, Relaxed);
                    if target == self.index {
                        self.add_conn(s);
                    } else {
                        self.links[target].send(Msg::NewConn(s));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    break;
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            if let Some(c) = self.conns[slot].as_mut() {
                if now.duration_since(c.last_tick) >= TICK {
                    c.last_tick = now;
                    c.tcp.tick(now);
                    if c.tcp.is_closing() {
                        self.mark_dirty(slot);
                    }
                }
            }
        }
    }

    /// Starts sends for connections with output and closes finished ones.
    fn flush_dirty(&mut self) -> io::Result<()> {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            let Some(c) = self.conns[slot].as_mut() else {
                continue;
            };
            c.in_dirty = false;
            if c.tcp.has_io() {
                c.tcp.take_io(&mut self.io_reqs);
                for r in self.io_reqs.drain(..) {
                    match self.ring.push(r.op, io_token(slot, r.tag)) {
                        Ok(()) => c.io_busy += 1,
                        Err(e) => {
                            // Only this command fails; the reactor goes on.
                            log::error!(
                                "reactor {}: cannot queue a backend operation: {e}",
                                self.index
                            );
                            c.tcp.io_done(r.tag, -EIO, Vec::new());
                        }
                    }
                }
            }
            if c.shut {
                continue;
            }
            if !c.send_busy && c.tcp.has_output() {
                let mut bufs = self.iov_pool.pop().unwrap_or_default();
                c.tcp.take_output(&mut bufs);
                c.send_busy = true;
                c.send_off = 0;
                let fd = c.stream.as_raw_fd();
                let op = Op::SendV {
                    fd,
                    bufs,
                    first_offset: 0,
                };
                if let Err(e) = self.ring.push(op, token(T_SEND, slot)) {
                    log::error!(
                        "reactor {}: cannot queue a send: {e}; closing the connection",
                        self.index
                    );
                    c.send_busy = false;
                    self.shut(slot);
                }
            } else if !c.send_busy && c.tcp.is_closing() {
                if let Some(r) = c.tcp.close_reason() {
                    log::info!("reactor {}: closing connection: {r}", self.index);
                }
                self.shut(slot);
            }
            // After the send: the response leaves before the receive is armed.
            let next = match self.conns[slot].as_mut() {
                Some(c) if !c.shut => c.rx_next.take(),
                _ => None,
            };
            if let Some(buf) = next {
                self.next_recv(slot, buf);
            }
        }
        self.dirty = dirty;
        Ok(())
    }

    fn shut(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].as_mut() {
            if !c.shut {
                c.shut = true;
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
        self.maybe_free(slot);
    }

    fn maybe_free(&mut self, slot: usize) {
        let done = matches!(&self.conns[slot], Some(c) if c.shut && !c.recv_busy && !c.send_busy && c.io_busy == 0);
        if done {
            self.conns[slot] = None;
            self.free.push(slot);
            self.links[self.index].connections.fetch_sub(1, Relaxed);
        }
    }
}
