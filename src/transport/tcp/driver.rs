//! The NVMe/TCP driver: listeners, sockets, and the receives and sends that
//! carry each connection's PDUs through the reactor's ring. The protocol is
//! in [`TcpConn`]; this file only moves bytes.

use super::conn::{ConnParams, DirectRecv, TcpConn};
use crate::fabrics::{Response, TransportCaps};
use crate::reactor::{token, Cx, Driver, Handoff};
use nvmf_sys::{Completion, Op, SendBuf};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Receive buffer of a busy I/O queue's connection: large, so that one
/// receive takes many PDUs. A connection gets it after a receive that
/// filled half of the small one, and goes back to the small one after a
/// receive that did not (an idle I/O connection holds 16 KiB, not 256).
const RECV_BUF: usize = 256 * 1024;
/// Receive buffer of a connection before its Connect, and of an admin
/// queue's (a few commands at a time): what an idle or silent connection
/// costs.
const RECV_BUF_SMALL: usize = 16 * 1024;
/// How long a new connection has to send its ICReq and Connect: one that
/// does not (silent, or a byte at a time) would hold its socket forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a send may wait for a host that does not read its socket
/// before the connection is closed (keep-alive may be off; this bounds what
/// such a host holds either way).
const SEND_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Write data at least this long still to come in an H2CData PDU is
/// received straight into the write's buffer rather than through the
/// receive buffer (one copy fewer).
const DIRECT_RECV_MIN: usize = 16 * 1024;
/// An I/O connection that received data this recently has its socket
/// polled (`recv(MSG_DONTWAIT)` on every pass of the spinning reactor)
/// rather than a receive waiting in the ring: the next command is picked up
/// by a plain receive, without the wake-up and deferred work of a waiting
/// one on either side. Shorter than the reactor's spin window, so every
/// socket has a waiting receive again before the reactor sleeps.
const POLL_WINDOW: Duration = Duration::from_micros(200);
/// At most this many sockets are polled at once: each costs a receive
/// attempt on every pass, which delays noticing the others.
const POLL_MAX: usize = 4;

/// This driver's token kinds.
const K_RECV: u8 = 1;
const K_SEND: u8 = 2;
const K_LISTEN: u8 = 3;
const K_RECV_DIRECT: u8 = 4;

/// errno EAGAIN: a polled socket had nothing to receive.
const EAGAIN: i32 = 11;

/// How long binding a listener retries while its address is in use: after
/// a previous instance was killed, the kernel still holds its listening
/// socket for a few milliseconds, until it has torn down that process's
/// rings (their requests held the socket).
const BIND_RETRY: Duration = Duration::from_secs(3);

/// Binds a TCP listener (non-blocking), retrying while the address is
/// still held by a killed instance.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let start = Instant::now();
    let mut said = false;
    let l = loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && start.elapsed() < BIND_RETRY => {
                if !said {
                    log::info!("{addr} is in use; retrying for up to {BIND_RETRY:?}");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(l) => {
                if said {
                    log::info!("{addr} bound after {:?}", start.elapsed());
                }
                break l;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e}"),
                ))
            }
        }
    };
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Who session `slot` serves, for log lines.
fn who(cx: &Cx, slot: usize) -> String {
    cx.sessions
        .get(slot)
        .map_or_else(|| "a closed session".into(), |s| s.queue.who())
}

/// One socket and the ring operations on it.
struct Sock {
    stream: TcpStream,
    tcp: TcpConn,
    recv_busy: bool,
    send_busy: bool,
    /// Socket shut down; the slot is released when no op is in flight.
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
    /// The last receive filled half of a small buffer: the next one gets a
    /// large buffer.
    busy_rx: bool,
    /// The receive in flight is a polling one (`Op::RecvNow`).
    polling: bool,
    /// When data last came in.
    last_rx: Instant,
    /// When the connection was accepted.
    accepted: Instant,
    /// When the send in flight was posted.
    send_since: Instant,
}

/// A listening socket of reactor 0's.
struct Listening {
    /// The target's ID of the listener.
    id: u16,
    sock: TcpListener,
    /// Removed: shut down, dropped when its poll in the ring ends.
    closing: bool,
}

pub struct TcpDriver {
    id: u8,
    params: ConnParams,
    caps: TransportCaps,
    /// By ring slot (a removed one's slot is reused).
    listeners: Vec<Option<Listening>>,
    /// By session slot.
    socks: Vec<Option<Sock>>,
    /// Recycled iovec lists for gathered sends.
    iov_pool: Vec<Vec<SendBuf>>,
    /// Polling receives in flight.
    polling: usize,
}

impl TcpDriver {
    /// A driver with driver id `id`, accepting on `listeners` (reactor 0's,
    /// with the target's listener IDs; the others get connections handed
    /// to them).
    pub fn new(
        id: u8,
        params: ConnParams,
        caps: TransportCaps,
        listeners: Vec<(u16, TcpListener)>,
    ) -> TcpDriver {
        TcpDriver {
            id,
            params,
            caps,
            listeners: listeners
                .into_iter()
                .map(|(id, sock)| {
                    Some(Listening {
                        id,
                        sock,
                        closing: false,
                    })
                })
                .collect(),
            socks: Vec::new(),
            iov_pool: Vec::new(),
            polling: 0,
        }
    }

    fn sock(&mut self, slot: usize) -> Option<&mut Sock> {
        self.socks.get_mut(slot).and_then(|s| s.as_mut())
    }

    fn add(&mut self, cx: &mut Cx, stream: TcpStream, listener: u16) {
        let _ = stream.set_nodelay(true);
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
            cx.sessions.abandon();
            return;
        };
        log::debug!("reactor {}: connection from {peer}", cx.index);
        let queue = cx.new_queue(local, Some(peer), listener, self.caps);
        let slot = cx.sessions.open(self.id, queue);
        if self.socks.len() <= slot {
            self.socks.resize_with(slot + 1, || None);
        }
        self.socks[slot] = Some(Sock {
            stream,
            tcp: TcpConn::new(self.params, cx.bufs.clone()),
            recv_busy: false,
            send_busy: false,
            shut: false,
            send_off: 0,
            recv_off: 0,
            rx_spare: None,
            rx_next: None,
            direct: None,
            busy_rx: false,
            polling: false,
            last_rx: cx.now,
            accepted: cx.now,
            send_since: cx.now,
        });
        let buf = cx.bufs.alloc_len(RECV_BUF_SMALL);
        self.post_recv(cx, slot, buf);
    }

    /// The receive buffer a connection calls for: large for an I/O queue
    /// that is receiving a lot (`busy`), else small.
    fn recv_size(cx: &Cx, slot: usize, busy: bool) -> usize {
        match cx.sessions.get(slot) {
            Some(s) if busy && s.queue.qid() != 0 => RECV_BUF,
            _ => RECV_BUF_SMALL,
        }
    }

    /// Closes a connection at once, dropping what it has not sent (the
    /// host stopped reading, or never spoke): the send in flight then
    /// fails and the slot is released.
    fn abort(&mut self, cx: &mut Cx, slot: usize, why: &str) {
        let who = who(cx, slot);
        if let Some(c) = self.sock(slot) {
            if !c.shut {
                log::info!("reactor {}: closing connection of {who}: {why}", cx.index);
                c.tcp.close(why);
                // Reset, rather than wait for a host that may never read
                // what is queued (the send in flight fails on the shutdown).
                let _ = nvmf_sys::net::set_abortive_close(&c.stream);
            }
        }
        self.shut(cx, slot);
    }

    fn post_recv(&mut self, cx: &mut Cx, slot: usize, buf: Vec<u8>) {
        let io_queue = cx.sessions.get(slot).is_some_and(|s| s.queue.qid() != 0);
        let (polling, id) = (self.polling, self.id);
        let Some(c) = self.socks.get_mut(slot).and_then(|s| s.as_mut()) else {
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
        let poll = io_queue && polling < POLL_MAX && cx.now.duration_since(c.last_rx) < POLL_WINDOW;
        let op = if poll {
            Op::RecvNow { fd, buf, offset }
        } else {
            Op::Recv { fd, buf, offset }
        };
        match cx.ring.push(op, token(id, K_RECV, slot)) {
            Ok(()) => {
                c.recv_busy = true;
                c.polling = poll;
                self.polling += usize::from(poll);
            }
            Err(e) => {
                log::warn!("reactor {}: cannot post recv: {e}", cx.index);
                self.shut(cx, slot);
            }
        }
    }

    /// Posts the connection's next receive: straight into a write's buffer
    /// when a large H2CData PDU is arriving, else into `buf`.
    fn next_recv(&mut self, cx: &mut Cx, slot: usize, buf: Vec<u8>) {
        let id = self.id;
        let Some(c) = self.socks.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        if c.tcp.is_closing() {
            return;
        }
        let Some(d) = c.tcp.take_direct(DIRECT_RECV_MIN) else {
            let want = Self::recv_size(cx, slot, c.busy_rx);
            let buf = if buf.len() == want {
                buf
            } else {
                cx.bufs.recycle(buf);
                cx.bufs.alloc_len(want)
            };
            return self.post_recv(cx, slot, buf);
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
        match cx.ring.push(op, token(id, K_RECV_DIRECT, slot)) {
            Ok(()) => c.recv_busy = true,
            Err(e) => {
                log::warn!("reactor {}: cannot post a receive: {e}", cx.index);
                self.shut(cx, slot);
            }
        }
    }

    fn recv_done(&mut self, cx: &mut Cx, slot: usize, c: Completion) -> bool {
        let Some(sock) = self.socks.get_mut(slot).and_then(|s| s.as_mut()) else {
            return true;
        };
        sock.recv_busy = false;
        if sock.polling {
            sock.polling = false;
            self.polling -= 1;
        }
        let buf = c.buf.unwrap_or_default();
        if c.result == -EAGAIN && !sock.shut {
            // Polled and empty: ask again (or wait, once the connection has
            // been quiet for a while).
            self.post_recv(cx, slot, buf);
            return false;
        }
        if c.result <= 0 || sock.shut {
            if c.result < 0 && !sock.shut {
                log::debug!("recv error {}", c.result);
            }
            self.shut(cx, slot);
        } else if let Some(q) = cx.sessions.queue(slot) {
            let off = sock.recv_off;
            sock.last_rx = cx.now;
            sock.busy_rx = c.result as usize >= RECV_BUF_SMALL / 2;
            sock.tcp
                .receive(&buf[off..off + c.result as usize], q, cx.now);
            sock.rx_next = Some(buf);
            cx.sessions.mark_dirty(slot);
        }
        self.maybe_release(cx, slot);
        true
    }

    fn direct_done(&mut self, cx: &mut Cx, slot: usize, c: Completion) {
        let Some(sock) = self.socks.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        sock.recv_busy = false;
        let (offset, len) = sock.direct.take().unwrap_or_default();
        let d = DirectRecv {
            buf: c.buf.unwrap_or_default(),
            region: None, // the connection keeps its own handle
            offset,
            len,
        };
        if c.result <= 0 || sock.shut {
            self.shut(cx, slot);
        } else if let Some(q) = cx.sessions.queue(slot) {
            sock.last_rx = cx.now;
            sock.tcp.direct_done(d, c.result as usize, q, cx.now);
            sock.rx_next = sock.rx_spare.take();
            cx.sessions.mark_dirty(slot);
        }
        self.maybe_release(cx, slot);
    }

    fn send_done(&mut self, cx: &mut Cx, slot: usize, c: Completion) {
        let Some(sock) = self.socks.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        sock.send_busy = false;
        let mut bufs = c.bufs;
        if c.result < 0 && !sock.shut {
            log::warn!(
                "reactor {}: send to {} failed: {}; closing the connection",
                cx.index,
                who(cx, slot),
                io::Error::from_raw_os_error(-c.result)
            );
        }
        if c.result < 0 || sock.shut {
            for b in bufs.drain(..) {
                sock.tcp.recycle(b);
            }
            self.iov_pool.push(bufs);
            self.shut(cx, slot);
        } else {
            // Drop the fully sent buffers; resend the rest.
            let mut off = sock.send_off + c.result as usize;
            let mut done = 0;
            while done < bufs.len() && off >= bufs[done].len() {
                off -= bufs[done].len();
                done += 1;
            }
            for b in bufs.drain(..done) {
                sock.tcp.recycle(b);
            }
            if bufs.is_empty() {
                self.iov_pool.push(bufs);
                cx.sessions.mark_dirty(slot);
            } else {
                sock.send_off = off;
                sock.send_busy = true;
                if c.result > 0 {
                    sock.send_since = cx.now;
                }
                let fd = sock.stream.as_raw_fd();
                let op = Op::SendV {
                    fd,
                    bufs,
                    first_offset: off,
                };
                if let Err(e) = cx.ring.push(op, token(self.id, K_SEND, slot)) {
                    log::error!(
                        "reactor {}: cannot queue a send: {e}; closing the connection",
                        cx.index
                    );
                    sock.send_busy = false;
                    self.shut(cx, slot);
                }
            }
        }
        self.maybe_release(cx, slot);
    }

    fn accept_all(&mut self, cx: &mut Cx, slot: usize) {
        let Some(l) = self.listeners.get(slot).and_then(|l| l.as_ref()) else {
            return;
        };
        let id = l.id;
        loop {
            let Some(l) = self.listeners.get(slot).and_then(|l| l.as_ref()) else {
                return;
            };
            match l.sock.accept() {
                Ok((s, _)) => {
                    let r = cx.place();
                    if r == cx.index {
                        self.add(cx, s, id);
                    } else {
                        cx.hand_off(r, self.id, Box::new((s, id)));
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

    fn shut(&mut self, cx: &mut Cx, slot: usize) {
        if let Some(c) = self.sock(slot) {
            if !c.shut {
                c.shut = true;
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
        self.maybe_release(cx, slot);
    }

    /// Gives the session back once the socket is shut and no operation on
    /// it is in flight.
    fn maybe_release(&mut self, cx: &mut Cx, slot: usize) {
        let done = matches!(self.sock(slot), Some(c) if c.shut && !c.recv_busy && !c.send_busy);
        if done {
            if let Some(mut c) = self.socks[slot].take() {
                for b in [c.rx_spare.take(), c.rx_next.take()].into_iter().flatten() {
                    cx.bufs.recycle(b);
                }
            }
            cx.sessions.release(slot);
        }
    }
}

impl Driver for TcpDriver {
    fn start(&mut self, cx: &mut Cx) -> io::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(l) = l {
                cx.ring.push(
                    Op::PollIn {
                        fd: l.sock.as_raw_fd(),
                    },
                    token(self.id, K_LISTEN, i),
                )?;
            }
        }
        Ok(())
    }

    fn listen(&mut self, cx: &mut Cx, id: u16, what: Handoff) -> io::Result<SocketAddr> {
        let sock = what
            .downcast::<TcpListener>()
            .map_err(|_| io::Error::other("not a TCP listener"))?;
        let addr = sock.local_addr()?;
        let slot = match self.listeners.iter().position(|l| l.is_none()) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        cx.ring.push(
            Op::PollIn {
                fd: sock.as_raw_fd(),
            },
            token(self.id, K_LISTEN, slot),
        )?;
        self.listeners[slot] = Some(Listening {
            id,
            sock: *sock,
            closing: false,
        });
        Ok(addr)
    }

    fn unlisten(&mut self, _cx: &mut Cx, id: u16) -> bool {
        let Some(l) = self.listeners.iter_mut().flatten().find(|l| l.id == id) else {
            return false;
        };
        // Shutting a listening socket down ends the ring's poll on it (with
        // POLLHUP); it is dropped, and its port freed, when that completes.
        l.closing = true;
        let _ = nvmf_sys::net::shutdown_listener(&l.sock);
        true
    }

    fn completion(&mut self, cx: &mut Cx, kind: u8, slot: usize, c: Completion) -> bool {
        match kind {
            K_LISTEN => {
                let closing = match self.listeners.get(slot) {
                    Some(Some(l)) => l.closing,
                    _ => return true,
                };
                if closing {
                    self.listeners[slot] = None;
                    return true;
                }
                self.accept_all(cx, slot);
                let Some(Some(l)) = self.listeners.get(slot) else {
                    return true;
                };
                let fd = l.sock.as_raw_fd();
                if let Err(e) = cx.ring.push(Op::PollIn { fd }, c.token) {
                    log::error!("reactor {}: cannot wait on a listener: {e}", cx.index);
                }
            }
            K_RECV => return self.recv_done(cx, slot, c),
            K_RECV_DIRECT => self.direct_done(cx, slot, c),
            K_SEND => self.send_done(cx, slot, c),
            _ => {}
        }
        true
    }

    fn adopt(&mut self, cx: &mut Cx, conn: Handoff) {
        match conn.downcast::<(TcpStream, u16)>() {
            Ok(s) => self.add(cx, s.0, s.1),
            Err(_) => cx.sessions.abandon(),
        }
    }

    fn respond(&mut self, cx: &mut Cx, slot: usize, r: &mut Vec<Response>) {
        let Some(sock) = self.socks.get_mut(slot).and_then(|s| s.as_mut()) else {
            return;
        };
        if let Some(s) = cx.sessions.get(slot) {
            sock.tcp.respond(r, &s.queue);
        }
    }

    fn flush(&mut self, cx: &mut Cx, slot: usize) {
        let Some(c) = self.sock(slot) else {
            return;
        };
        if c.shut {
            return;
        }
        if !c.send_busy && c.tcp.has_output() {
            let mut bufs = self.iov_pool.pop().unwrap_or_default();
            let Some(c) = self.socks[slot].as_mut() else {
                return;
            };
            c.tcp.take_output(&mut bufs);
            c.send_busy = true;
            c.send_off = 0;
            c.send_since = cx.now;
            let fd = c.stream.as_raw_fd();
            let op = Op::SendV {
                fd,
                bufs,
                first_offset: 0,
            };
            if let Err(e) = cx.ring.push(op, token(self.id, K_SEND, slot)) {
                log::error!(
                    "reactor {}: cannot queue a send: {e}; closing the connection",
                    cx.index
                );
                c.send_busy = false;
                self.shut(cx, slot);
            }
        } else if !c.send_busy && c.tcp.is_closing() {
            if let Some(r) = c.tcp.close_reason() {
                let who = cx
                    .sessions
                    .get(slot)
                    .map_or(String::new(), |s| s.queue.who());
                log::info!("reactor {}: closing connection of {who}: {r}", cx.index);
            }
            self.shut(cx, slot);
        }
        // After the send: the response leaves before the receive is armed.
        let next = match self.sock(slot) {
            Some(c) if !c.shut => c.rx_next.take(),
            _ => None,
        };
        if let Some(buf) = next {
            self.next_recv(cx, slot, buf);
        }
    }

    fn close(&mut self, cx: &mut Cx, slot: usize, why: &str) {
        // The controller is gone (keep-alive expired, torn down): nothing
        // queued for the host matters, and a host that stopped reading
        // must not keep the connection open.
        self.abort(cx, slot, why);
    }

    fn tick(&mut self, cx: &mut Cx) {
        for slot in 0..self.socks.len() {
            let Some(c) = self.socks[slot].as_ref() else {
                continue;
            };
            if c.shut {
                continue;
            }
            let connected = cx
                .sessions
                .get(slot)
                .is_some_and(|s| s.queue.is_connected());
            if !connected && cx.now.duration_since(c.accepted) > HANDSHAKE_TIMEOUT {
                let why = format!("no ICReq and Connect within {HANDSHAKE_TIMEOUT:?}");
                self.abort(cx, slot, &why);
            } else if c.send_busy && cx.now.duration_since(c.send_since) > SEND_STALL_TIMEOUT {
                let why = format!("the host read nothing for {SEND_STALL_TIMEOUT:?}");
                self.abort(cx, slot, &why);
            }
        }
    }

    fn stop(&mut self, _cx: &mut Cx) {
        for c in self.socks.iter().flatten() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}
