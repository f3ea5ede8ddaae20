//! Files and block devices for the file backend.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

pub use libc::{EOPNOTSUPP, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE};

/// `BLKGETSIZE64`: size of a block device in bytes (`_IOR(0x12, 114, size_t)`).
const BLKGETSIZE64: libc::Ioctl = libc::_IOR::<u64>(0x12, 114);

/// Opens `path` for reading and writing (close-on-exec), creating a regular file when `create`
/// is set, with `O_DIRECT` when `direct` is set (buffers, offsets and lengths must then be
/// aligned to the logical block size).
pub fn open_file(path: impl AsRef<Path>, create: bool, direct: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(create);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    opts.open(path)
}

/// The size in bytes of `file` if it is a block device (`BLKGETSIZE64`), `None` for any other
/// kind of file (use `metadata().len()` for those).
pub fn block_device_size(file: &File) -> io::Result<Option<u64>> {
    if !file.metadata()?.file_type().is_block_device() {
        return Ok(None);
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live local;
    // the fd is borrowed from `file` for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc < 0 {
        return Err(crate::last_error());
    }
    Ok(Some(size))
}

/// `fallocate(2)` on `file`: `mode` (the `FALLOC_FL_*` flags) over `len` bytes at `offset`.
pub fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: fallocate takes the fd (borrowed from `file` for the call) and plain integers; it
    // touches no memory of ours.
    if unsafe { libc::fallocate(file.as_raw_fd(), mode, off, n) } < 0 {
        return Err(crate::last_error());
    }
    Ok(())
}
