//! Socket options std does not offer on stable.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Makes the connection's last close abortive (`SO_LINGER` on, timeout 0): the kernel then
/// drops what is still unsent and resets the connection instead of holding its buffers for a
/// peer that does not read.
pub fn set_abortive_close(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live local; the descriptor is
    // borrowed from `s` for the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(crate::last_error());
    }
    Ok(())
}

/// Stops a listening socket (`shutdown(SHUT_RDWR)`): it accepts no more connections, and
/// whoever polls it (a ring's poll request) is woken with `POLLHUP`. The port stays taken until
/// the socket is closed.
pub fn shutdown_listener(l: &std::net::TcpListener) -> io::Result<()> {
    // SAFETY: shutdown takes a descriptor borrowed from `l` for the call and no memory.
    let rc = unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
    if rc != 0 {
        return Err(crate::last_error());
    }
    Ok(())
}
