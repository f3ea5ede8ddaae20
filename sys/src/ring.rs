//! A safe io_uring wrapper for a per-core polled reactor: sockets and files.
//!
//! Buffers travel inside an [`Op`] and come back in its [`Completion`]; while an operation is
//! in flight the ring owns them (in a reusable slab slot whose index is the SQE `user_data`),
//! so the kernel never sees freed memory. Dropping a ring with operations in flight cancels
//! them and waits up to [`DROP_WAIT`] for their completions; buffers of operations that still
//! have not completed by then are leaked, never freed.
//!
//! The ring is `Send`: it may be created on one thread and used on another. Submit from one
//! thread at a time (it takes `&mut self`); if the thread that submitted a request exits
//! before it completes, the kernel may complete it with `-ECANCELED`.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::aligned::AlignedBuf;
use crate::mem::RegionSlice;
use io_uring::{opcode, types, IoUring};

/// How long dropping a ring waits for cancelled operations before leaking their buffers.
pub const DROP_WAIT: Duration = Duration::from_secs(2);

/// `user_data` of the ring's own SQEs (cancellation); never a slab index.
const INTERNAL: u64 = u64::MAX;

/// One operation. Lengths above `u32::MAX` are clamped (a short transfer, as for any
/// read/write); out-of-range `offset`/`len` make [`Ring::push`] fail with `InvalidInput`.
#[derive(Debug)]
pub enum Op {
    /// `accept4(fd, NULL, NULL, SOCK_CLOEXEC)`; the result is the new fd.
    Accept {
        /// Listening socket.
        fd: RawFd,
    },
    /// `recv` into `buf[offset..]`.
    Recv {
        /// Socket.
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Where in `buf` the data goes.
        offset: usize,
    },
    /// `recv(MSG_DONTWAIT)` into `buf[offset..]`: completes at once, with `-EAGAIN` when
    /// nothing is queued on the socket (never waits for data; for polling a socket from a
    /// spinning thread).
    RecvNow {
        /// Socket.
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Where in `buf` the data goes.
        offset: usize,
    },
    /// `recv(MSG_WAITALL)` into `buf[offset..offset + len]`: completes when all `len` bytes
    /// are in, or with fewer only at end of stream or on an error.
    RecvAll {
        /// Socket.
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Where in `buf` the data goes.
        offset: usize,
        /// Bytes to receive.
        len: usize,
    },
    /// `recv(MSG_WAITALL)` straight into bytes `offset..offset + len` of a shared memory
    /// region (kept alive until the completion, which hands it back in `Completion::bufs`);
    /// completes like [`Op::RecvAll`]. Other threads may read those bytes meanwhile and see
    /// them change.
    RecvRegion {
        /// Socket.
        fd: RawFd,
        /// Where the data goes.
        dst: RegionSlice,
        /// Start in `dst`.
        offset: usize,
        /// Bytes to receive.
        len: usize,
    },
    /// `send(MSG_NOSIGNAL)` of `buf[offset..offset + len]`.
    Send {
        /// Socket.
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Start of the data in `buf`.
        offset: usize,
        /// Bytes to send.
        len: usize,
    },
    /// `sendmsg(MSG_NOSIGNAL)` gathering all of `bufs`, the first from `first_offset`.
    SendV {
        /// Socket.
        fd: RawFd,
        /// Buffers, returned in `Completion::bufs`.
        bufs: Vec<SendBuf>,
        /// Start of the data in `bufs[0]` (0 when `bufs` is empty).
        first_offset: usize,
    },
    /// `pread` into `buf[offset..offset + len]`.
    Read {
        /// File (or any readable fd; use `file_offset` 0 for non-seekable ones).
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Where in `buf` the data goes.
        offset: usize,
        /// Bytes to read.
        len: usize,
        /// Position in the file.
        file_offset: u64,
    },
    /// `pwrite` from `buf[offset..offset + len]`.
    Write {
        /// File.
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Start of the data in `buf`.
        offset: usize,
        /// Bytes to write.
        len: usize,
        /// Position in the file.
        file_offset: u64,
    },
    /// `pread` for a file opened with `O_DIRECT`: the kernel reads into an aligned bounce
    /// buffer, copied into `buf[offset..offset + len]` on completion. `len` and
    /// `file_offset` must suit the file's direct-I/O alignment.
    ReadDirect {
        /// File.
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Where in `buf` the data goes.
        offset: usize,
        /// Bytes to read.
        len: usize,
        /// Position in the file.
        file_offset: u64,
    },
    /// `pwrite` for a file opened with `O_DIRECT`: `buf[offset..offset + len]` is copied into
    /// an aligned bounce buffer first.
    WriteDirect {
        /// File.
        fd: RawFd,
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// Start of the data in `buf`.
        offset: usize,
        /// Bytes to write.
        len: usize,
        /// Position in the file.
        file_offset: u64,
    },
    /// `fsync`, or `fdatasync` when `datasync`.
    Fsync {
        /// File.
        fd: RawFd,
        /// Only data (and the metadata needed to read it back).
        datasync: bool,
    },
    /// `fallocate(fd, mode, offset, len)`.
    Fallocate {
        /// File.
        fd: RawFd,
        /// `FALLOC_FL_*` flags (see [`crate::file`]).
        mode: i32,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
    },
    /// One-shot poll for `POLLIN`; the result is the ready event mask.
    PollIn {
        /// Any pollable fd.
        fd: RawFd,
    },
    /// Completes immediately with result 0.
    Nop,
    /// Completes after `after` has passed (an io_uring timeout), with `result` as its result
    /// and `buf` handed back: for holding an operation back on purpose (fault injection).
    Delay {
        /// Buffer, returned in the completion.
        buf: Vec<u8>,
        /// How long to wait.
        after: std::time::Duration,
        /// The completion's result (the timeout's own, `-ETIME`, is replaced).
        result: i32,
    },
}

/// One piece of a gathered send: owned bytes, or bytes of a shared memory region sent
/// without copying them.
#[derive(Debug)]
pub enum SendBuf {
    /// A buffer owned by the send.
    Bytes(Vec<u8>),
    /// A range of a RAM region, kept alive until the send completes.
    Region(RegionSlice),
}

impl SendBuf {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            SendBuf::Bytes(b) => b.len(),
            SendBuf::Region(r) => r.len(),
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a copy of the bytes to `out` (for tests and tools).
    pub fn extend_into(&self, out: &mut Vec<u8>) {
        match self {
            SendBuf::Bytes(b) => out.extend_from_slice(b),
            SendBuf::Region(r) => {
                let at = out.len();
                out.resize(at + r.len(), 0);
                r.copy_to(&mut out[at..]);
            }
        }
    }

    fn as_ptr(&self) -> *const u8 {
        match self {
            SendBuf::Bytes(b) => b.as_ptr(),
            SendBuf::Region(r) => r.as_ptr(),
        }
    }
}

impl From<Vec<u8>> for SendBuf {
    fn from(b: Vec<u8>) -> SendBuf {
        SendBuf::Bytes(b)
    }
}

/// The outcome of one [`Op`].
#[derive(Debug)]
pub struct Completion {
    /// The token given to [`Ring::push`].
    pub token: u64,
    /// `>= 0` on success (bytes, fd, or event mask), `-errno` on failure.
    pub result: i32,
    /// The buffer of `Recv`, `Send`, `Read`, `Write`.
    pub buf: Option<Vec<u8>>,
    /// The buffers of `SendV`, the region of `RecvRegion` (empty for other ops).
    pub bufs: Vec<SendBuf>,
}

/// A slab slot: what the kernel may access while the op is in flight.
struct Slot {
    busy: bool,
    token: u64,
    buf: Option<Vec<u8>>,
    bufs: Vec<SendBuf>,
    /// iovecs and message header of a `SendV`; heap-allocated so they do not move when the
    /// slab grows.
    iov: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
    /// Aligned memory of a direct read or write, and for a read where its data goes in `buf`.
    bounce: Option<AlignedBuf>,
    copy_back: Option<(usize, usize)>,
    /// Timespec of a `Delay`; boxed so it does not move when the slab grows.
    ts: Box<types::Timespec>,
    /// The result a `Delay` completes with.
    delay_result: Option<i32>,
}

// SAFETY: the raw pointers in `iov` and `msg` only point into buffers owned by this same slot
// (or its own `iov`, or a region kept alive by an `Arc` in `bufs`), never to thread-local data,
// so moving the slot to another thread is fine.
unsafe impl Send for Slot {}

impl Slot {
    fn new() -> Slot {
        Slot {
            busy: false,
            token: 0,
            buf: None,
            bufs: Vec::new(),
            iov: Vec::new(),
            // SAFETY: all-zero bytes are a valid `msghdr` (null pointers, zero lengths).
            msg: Box::new(unsafe { mem::zeroed() }),
            bounce: None,
            copy_back: None,
            ts: Box::new(types::Timespec::new()),
            delay_result: None,
        }
    }
}

/// An io_uring instance plus the slab of its in-flight operations. See the module docs.
pub struct Ring {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    in_flight: usize,
    /// Completions reaped internally (to relieve a full CQ) and not yet handed out.
    backlog: Vec<Completion>,
    /// Created by [`Ring::new_local`]: completions wait in the kernel until this
    /// thread enters it.
    local: bool,
}

/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("in_flight", &self.in_flight)
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn check_range(buf: &[u8], offset: usize, len: usize) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= buf.len() => Ok(()),
        _ => Err(invalid("buffer offset/len out of range")),
    }
}

fn clamp(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

impl Ring {
    /// Creates a ring with `entries` submission slots (rounded up to a power of two by the
    /// kernel; the completion queue is twice as large and completions never drop). Needs
    /// Linux 5.11+ (`IORING_FEAT_EXT_ARG`).
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::new(entries)?;
        if !ring.params().is_feature_ext_arg() || !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks EXT_ARG/NODROP (Linux 5.11+ needed)",
            ));
        }
        Ok(Self::wrap(ring, entries, false))
    }

    fn wrap(ring: IoUring, entries: u32, local: bool) -> Ring {
        let n = entries as usize;
        Ring {
            ring,
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            in_flight: 0,
            backlog: Vec::new(),
            local,
        }
    }

    /// A ring for a polling thread that is its only user: the kernel defers
    /// completion work to this thread instead of interrupting it
    /// (`SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`), and [`Ring::poll`]
    /// collects it. Must be created, and then used only, on that thread.
    /// Falls back to [`Ring::new`] where the kernel lacks these flags (6.1+).
    pub fn new_local(entries: u32) -> io::Result<Ring> {
        let built = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(entries);
        match built {
            Ok(ring) if ring.params().is_feature_ext_arg() && ring.params().is_feature_nodrop() => {
                Ok(Self::wrap(ring, entries, true))
            }
            _ => Self::new(entries),
        }
    }

    /// Submits queued SQEs and collects completions the kernel holds for
    /// this thread, without blocking: one `io_uring_enter` when there is
    /// something to submit or collect, none otherwise.
    pub fn poll(&mut self) -> io::Result<()> {
        if !self.local || !self.ring.submission().taskrun() {
            return self.submit().map(drop);
        }
        let to_submit = self.ring.submission().len() as u32;
        let mut tries = 0;
        loop {
            // SAFETY: no argument pointer is passed; GETEVENTS with a minimum of zero
            // completions only runs deferred completion work and never waits.
            let r = unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if errno(&e) == libc::EINTR => {}
                Err(e) if matches!(errno(&e), libc::EBUSY | libc::EAGAIN) && tries < 8 => {
                    tries += 1;
                    self.stash();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `op`; the ring owns its buffers until the matching [`Completion`] is drained.
    /// Submits first if the SQ is full. Fails with `InvalidInput` (dropping `op`) if an offset
    /// or length is outside its buffer.
    pub fn push(&mut self, op: Op, token: u64) -> io::Result<()> {
        match &op {
            Op::Recv { buf, offset, .. } | Op::RecvNow { buf, offset, .. } => {
                check_range(buf, *offset, 0)?
            }
            Op::Send {
                buf, offset, len, ..
            }
            | Op::RecvAll {
                buf, offset, len, ..
            }
            | Op::Read {
                buf, offset, len, ..
            }
            | Op::Write {
                buf, offset, len, ..
            }
            | Op::ReadDirect {
                buf, offset, len, ..
            }
            | Op::WriteDirect {
                buf, offset, len, ..
            } => check_range(buf, *offset, *len)?,
            Op::RecvRegion {
                dst, offset, len, ..
            } => match offset.checked_add(*len) {
                Some(end) if end <= dst.len() => {}
                _ => return Err(invalid("region offset/len out of range")),
            },
            Op::SendV {
                bufs, first_offset, ..
            } => match bufs.first() {
                Some(b) if *first_offset <= b.len() => {}
                Some(_) => return Err(invalid("buffer offset/len out of range")),
                None if *first_offset == 0 => {}
                None => return Err(invalid("SendV first_offset with no buffers")),
            },
            _ => {}
        }
        self.make_room()?;

        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::new());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[idx];
        slot.busy = true;
        slot.token = token;
        let entry = match op {
            Op::Accept { fd } => {
                opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            }
            Op::Recv { fd, buf, offset } => {
                let data = &mut slot.buf.insert(buf)[offset..];
                opcode::Recv::new(types::Fd(fd), data.as_mut_ptr(), clamp(data.len())).build()
            }
            Op::RecvNow { fd, buf, offset } => {
                // MSG_DONTWAIT makes io_uring complete the request with -EAGAIN rather
                // than wait for the socket to become readable.
                let data = &mut slot.buf.insert(buf)[offset..];
                opcode::Recv::new(types::Fd(fd), data.as_mut_ptr(), clamp(data.len()))
                    .flags(libc::MSG_DONTWAIT)
                    .build()
            }
            Op::RecvAll {
                fd,
                buf,
                offset,
                len,
            } => {
                let data = &mut slot.buf.insert(buf)[offset..offset + len];
                opcode::Recv::new(types::Fd(fd), data.as_mut_ptr(), clamp(len))
                    .flags(libc::MSG_WAITALL)
                    .build()
            }
            Op::RecvRegion {
                fd,
                dst,
                offset,
                len,
            } => {
                // `wrapping_add`: `offset + len <= dst.len()` was checked, so this stays
                // inside the region without an unsafe pointer offset.
                let ptr = dst.as_mut_ptr().wrapping_add(offset);
                slot.bufs.push(SendBuf::Region(dst));
                opcode::Recv::new(types::Fd(fd), ptr, clamp(len))
                    .flags(libc::MSG_WAITALL)
                    .build()
            }
            Op::Send {
                fd,
                buf,
                offset,
                len,
            } => {
                let data = &slot.buf.insert(buf)[offset..offset + len];
                opcode::Send::new(types::Fd(fd), data.as_ptr(), clamp(len))
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            Op::SendV {
                fd,
                bufs,
                first_offset,
            } => {
                slot.bufs = bufs;
                slot.iov.clear();
                for (i, b) in slot.bufs.iter().enumerate() {
                    let skip = if i == 0 { first_offset } else { 0 };
                    slot.iov.push(libc::iovec {
                        // `wrapping_add`: `skip <= b.len()` was checked, so this stays inside
                        // (or one past) the buffer without an unsafe pointer offset.
                        iov_base: b.as_ptr().wrapping_add(skip) as *mut libc::c_void,
                        iov_len: b.len() - skip,
                    });
                }
                slot.msg.msg_iov = slot.iov.as_mut_ptr();
                slot.msg.msg_iovlen = slot.iov.len() as _;
                opcode::SendMsg::new(types::Fd(fd), &*slot.msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            }
            Op::Read {
                fd,
                buf,
                offset,
                len,
                file_offset,
            } => {
                let data = &mut slot.buf.insert(buf)[offset..offset + len];
                opcode::Read::new(types::Fd(fd), data.as_mut_ptr(), clamp(len))
                    .offset(file_offset)
                    .build()
            }
            Op::Write {
                fd,
                buf,
                offset,
                len,
                file_offset,
            } => {
                let data = &slot.buf.insert(buf)[offset..offset + len];
                opcode::Write::new(types::Fd(fd), data.as_ptr(), clamp(len))
                    .offset(file_offset)
                    .build()
            }
            Op::ReadDirect {
                fd,
                buf,
                offset,
                len,
                file_offset,
            } => {
                slot.buf = Some(buf);
                slot.copy_back = Some((offset, len));
                let bounce = slot.bounce.insert(AlignedBuf::new(len));
                opcode::Read::new(types::Fd(fd), bounce.as_mut_ptr(), clamp(len))
                    .offset(file_offset)
                    .build()
            }
            Op::WriteDirect {
                fd,
                buf,
                offset,
                len,
                file_offset,
            } => {
                let mut bounce = AlignedBuf::new(len);
                bounce
                    .as_mut_slice()
                    .copy_from_slice(&buf[offset..offset + len]);
                slot.buf = Some(buf);
                let bounce = slot.bounce.insert(bounce);
                opcode::Write::new(types::Fd(fd), bounce.as_ptr(), clamp(len))
                    .offset(file_offset)
                    .build()
            }
            Op::Fsync { fd, datasync } => {
                let flags = if datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                opcode::Fsync::new(types::Fd(fd)).flags(flags).build()
            }
            Op::Fallocate {
                fd,
                mode,
                offset,
                len,
            } => opcode::Fallocate::new(types::Fd(fd), len)
                .offset(offset)
                .mode(mode)
                .build(),
            Op::PollIn { fd } => opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build(),
            Op::Nop => opcode::Nop::new().build(),
            Op::Delay { buf, after, result } => {
                slot.buf = Some(buf);
                slot.delay_result = Some(result);
                *slot.ts = types::Timespec::from(after);
                opcode::Timeout::new(&*slot.ts).build()
            }
        };
        let entry = entry.user_data(idx as u64);
        // SAFETY: every pointer in `entry` points into memory owned by slot `idx` (its buffers'
        // heap storage or regions held by `Arc`, its iovec array, its boxed msghdr or timespec), none of which moves or is freed
        // until the completion for `idx` is reaped (the slot stays `busy` and is not reused),
        // or ever if the ring is dropped before that (see `Drop`).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Unreachable after `make_room`; undo rather than panic.
            let slot = &mut self.slots[idx];
            slot.busy = false;
            slot.buf = None;
            slot.bufs.clear();
            self.free.push(idx);
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "SQ full"));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Ensures the SQ has a free entry, submitting if needed.
    fn make_room(&mut self) -> io::Result<()> {
        for _ in 0..16 {
            if !self.ring.submission().is_full() {
                return Ok(());
            }
            self.submit()?;
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "io_uring submission queue stays full",
        ))
    }

    /// Submits all queued SQEs with one `io_uring_enter` (none if nothing is queued); returns
    /// how many the kernel consumed. EINTR is retried; if the kernel reports a full CQ
    /// (EBUSY/EAGAIN) completions are moved aside for the next [`drain`](Self::drain) and
    /// the submission retried.
    pub fn submit(&mut self) -> io::Result<usize> {
        if self.ring.submission().is_empty() {
            return Ok(0);
        }
        let mut tries = 0;
        loop {
            match self.ring.submit() {
                Ok(n) => return Ok(n),
                Err(e) if errno(&e) == libc::EINTR => {}
                Err(e) if matches!(errno(&e), libc::EBUSY | libc::EAGAIN) && tries < 8 => {
                    tries += 1;
                    self.stash();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits queued SQEs and blocks until at least one completion is available or
    /// `timeout` passes. Interruptions and timeouts are not errors. Returns at once if
    /// completions are already waiting, or if `timeout` is `None` and nothing is in flight
    /// (nothing could ever complete).
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !self.backlog.is_empty() {
            return self.submit().map(drop);
        }
        let res = match timeout {
            None if self.in_flight == 0 => return Ok(()),
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) if matches!(errno(&e), libc::EINTR | libc::ETIME) => Ok(()),
            Err(e) if matches!(errno(&e), libc::EBUSY | libc::EAGAIN) => {
                self.stash();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out`, with its buffers.
    pub fn drain(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.backlog);
        self.reap(out);
    }

    /// Operations pushed and not yet drained (queued, submitted, or completed but not reaped).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn stash(&mut self) {
        let mut backlog = mem::take(&mut self.backlog);
        self.reap(&mut backlog);
        self.backlog = backlog;
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            let idx = cqe.user_data();
            if idx == INTERNAL {
                continue;
            }
            let Some(slot) = self.slots.get_mut(idx as usize).filter(|s| s.busy) else {
                continue;
            };
            slot.busy = false;
            let bounce = slot.bounce.take();
            if let (Some((at, len)), Some(b), Some(buf)) =
                (slot.copy_back.take(), &bounce, slot.buf.as_mut())
            {
                let n = (cqe.result().max(0) as usize).min(len);
                buf[at..at + n].copy_from_slice(&b.as_slice()[..n]);
            }
            let result = match slot.delay_result.take() {
                Some(r) if cqe.result() == -libc::ETIME => r,
                _ => cqe.result(),
            };
            out.push(Completion {
                token: slot.token,
                result,
                buf: slot.buf.take(),
                bufs: mem::take(&mut slot.bufs),
            });
            self.free.push(idx as usize);
            self.in_flight -= 1;
        }
    }
}

impl Drop for Ring {
    /// Cancels everything in flight and waits (bounded by [`DROP_WAIT`]) for the completions;
    /// if some never come, all slot memory is leaked so the kernel cannot write freed memory.
    fn drop(&mut self) {
        self.backlog.clear();
        if self.in_flight == 0 {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(INTERNAL);
        if self.make_room().is_ok() {
            // SAFETY: a cancel SQE carries no pointers to memory.
            let _ = unsafe { self.ring.submission().push(&cancel) };
        }
        let deadline = Instant::now() + DROP_WAIT;
        let mut sink: Vec<Completion> = Vec::new();
        while self.in_flight > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            if self.submit_and_wait(Some(wait)).is_err() {
                break;
            }
            self.drain(&mut sink);
            sink.clear();
        }
        if self.in_flight > 0 {
            mem::forget(mem::take(&mut self.slots));
        }
    }
}

/// Compile-time check that the ring can move between threads.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Ring>();
};
