//! Termination signals taken synchronously: the process blocks them in every thread and one
//! thread waits for them, so a `SIGTERM` or `SIGINT` becomes an orderly shutdown instead of
//! the default instant death (which leaves io_uring requests holding sockets, listeners
//! among them, until the kernel tears the rings down some time later).

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

/// A set of signals blocked in the calling thread (and every thread it starts afterwards).
pub struct Blocked {
    set: libc::sigset_t,
}

impl Blocked {
    /// Blocks `signals` in the calling thread; threads spawned later inherit the mask. Call
    /// it before starting other threads, so that none of them takes the signals.
    pub fn new(signals: &[i32]) -> io::Result<Blocked> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `sigemptyset` initialises the set it is given a valid pointer to.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(crate::last_error());
        }
        // SAFETY: initialised by `sigemptyset` above.
        let mut set = unsafe { set.assume_init() };
        for &s in signals {
            // SAFETY: `set` is a valid, initialised signal set.
            if unsafe { libc::sigaddset(&mut set, s) } != 0 {
                return Err(crate::last_error());
            }
        }
        // SAFETY: `set` is a valid signal set; the old mask is not asked for (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Blocked { set })
    }

    /// Waits up to `timeout` for one of the signals; returns its number, or `None` when the
    /// time passes first (or the wait is interrupted by another signal).
    pub fn wait(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.set` is a valid signal set and `ts` a live timespec; no siginfo is
        // asked for (null).
        let s = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (s > 0).then_some(s)
    }
}

/// `SIGTERM`, `SIGINT`: the signals a service manager or a terminal stops a program with.
pub const TERMINATE: [i32; 2] = [libc::SIGTERM, libc::SIGINT];
/// `SIGHUP`: reload the config.
pub const HANGUP: i32 = libc::SIGHUP;

/// The conventional name of a signal number, for logs.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
