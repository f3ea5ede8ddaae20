//! CPU clocks and thread names.

use std::time::Duration;

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed by the whole process, all threads (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Names the calling thread (as seen in `top -H`, `/proc/self/task/*/comm`). The kernel keeps
/// at most 15 bytes; longer names are truncated, and the name stops at an interior NUL.
pub fn set_thread_name(name: &str) {
    let mut buf = [0u8; 16];
    for (d, s) in buf[..15]
        .iter_mut()
        .zip(name.bytes().take_while(|&b| b != 0))
    {
        *d = s;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes; `buf` is 16 bytes
    // and its last byte is always 0.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Raises the soft limit on open file descriptors to the hard limit (a target holds a socket
/// per queue; the usual soft limit of 1,024 is reached by 256 controllers of four queues).
/// Returns the (old, new) soft limits.
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(crate::last_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one needs no
        // privilege and affects only this process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(crate::last_error());
        }
    }
    Ok((old, lim.rlim_cur))
}
