//! A pipe for sending RAM region bytes to a socket without copying them
//! (`vmsplice` the region's pages into the pipe, then splice the pipe into
//! the socket with [`Pipe::splice_to`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::mem::RegionSlice;

/// A non-blocking pipe: bytes are put in with [`Pipe::put_bytes`] (copied)
/// and [`Pipe::put_region`] (the pages referenced, not copied) and taken out
/// by [`Pipe::splice_to`].
#[derive(Debug)]
pub struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A pipe holding up to `capacity` bytes, as far as the system allows
    /// (`F_SETPIPE_SZ`; the default 64 KiB where it refuses more).
    pub fn new(capacity: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(crate::last_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are new and owned by nobody else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(capacity).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ take an int and touch no memory of ours.
        let got = unsafe {
            libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, want);
            libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let capacity = usize::try_from(got).unwrap_or(0).max(4096);
        Ok(Pipe { rd, wr, capacity })
    }

    /// How many bytes the pipe holds when full.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` bytes from the pipe into `fd` (a socket) without
    /// waiting: `Ok(0)` when the socket has no room (poll it for `POLLOUT`).
    /// Region pages go into the socket by reference; the kernel copies them
    /// only on delivery.
    pub fn splice_to(&self, fd: RawFd, len: usize) -> io::Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        // SAFETY: no pointers are passed (null offsets: both ends are streams); splice only
        // moves bytes between two fds.
        let n = unsafe {
            libc::splice(
                self.rd.as_raw_fd(),
                std::ptr::null_mut(),
                fd,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        Self::result(n)
    }

    /// Copies as much of `b` into the pipe as fits; `Ok(0)` when it is full.
    pub fn put_bytes(&self, b: &[u8]) -> io::Result<usize> {
        if b.is_empty() {
            return Ok(0);
        }
        // SAFETY: `b` is valid for reads of `b.len()` bytes for the call.
        let n = unsafe { libc::write(self.wr.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        Self::result(n)
    }

    /// Puts the pages of `s[at..]` into the pipe as far as it has room,
    /// referencing them rather than copying: what leaves the pipe later is
    /// what the region holds then (a write meanwhile shows through).
    /// `Ok(0)` when the pipe is full.
    pub fn put_region(&self, s: &RegionSlice, at: usize) -> io::Result<usize> {
        if at >= s.len() {
            return Ok(0);
        }
        let iov = libc::iovec {
            iov_base: s.as_ptr().wrapping_add(at).cast_mut().cast(),
            iov_len: s.len() - at,
        };
        // SAFETY: the iovec covers `s[at..]`, inside a mapping that `s` keeps alive for the
        // call; vmsplice takes its own references to the pages, so they outlive the mapping
        // if it goes away while the bytes are still in the pipe or a socket.
        let n = unsafe { libc::vmsplice(self.wr.as_raw_fd(), &iov, 1, libc::SPLICE_F_NONBLOCK) };
        Self::result(n)
    }

    fn result(n: isize) -> io::Result<usize> {
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = crate::last_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        }
    }
}
