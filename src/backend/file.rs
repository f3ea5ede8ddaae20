//! File and block-device backend: every operation runs through the reactor's
//! io_uring ring (no thread pool). Flush is fdatasync; Write Zeroes is
//! fallocate(ZERO_RANGE), or fallocate(PUNCH_HOLE) on a file system without
//! it (tmpfs), which reads back as zeros too; deallocate is
//! fallocate(PUNCH_HOLE). With
//! `direct`, the file is opened O_DIRECT and reads and writes go through
//! page-aligned bounce buffers in the ring (one copy; no page cache).

use super::{check, Backend, BackendError, IoDone, IoOp, Submitted};
use nvmf_sys::file::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE};
use nvmf_sys::Op;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

pub struct FileBackend {
    file: File,
    size: u64,
    block_device: bool,
    /// Opened with O_DIRECT: reads and writes go through aligned buffers.
    direct: bool,
    /// The `fallocate` mode of Write Zeroes.
    zero_mode: i32,
}

/// How Write Zeroes is done on `file` (a regular file of `size` bytes):
/// ZERO_RANGE where the file system has it, else PUNCH_HOLE (tmpfs), tried
/// past the end of the file, where no data is.
fn zero_mode(file: &File, size: u64) -> i32 {
    let zero = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    let punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    let at = size.next_multiple_of(4096);
    match nvmf_sys::file::fallocate(file, zero, at, 4096) {
        Ok(()) => {
            // Give back the block the probe may have allocated.
            let _ = nvmf_sys::file::fallocate(file, punch, at, 4096);
            zero
        }
        Err(e) if e.raw_os_error() == Some(nvmf_sys::file::EOPNOTSUPP) => punch,
        // Anything else: ZERO_RANGE, and its errors show at Write Zeroes.
        Err(_) => zero,
    }
}

impl FileBackend {
    /// Opens (or creates, sparse, when `size` is given) a file, or opens a
    /// block device, which always exports its own size.
    pub fn open(path: &Path, size: Option<u64>, direct: bool) -> io::Result<FileBackend> {
        let err = |e: io::Error, what: &str| {
            io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
        };
        let exists = path.exists();
        let file =
            nvmf_sys::file::open_file(path, size.is_some() && !exists, direct).map_err(|e| {
                if direct && e.raw_os_error() == Some(22) {
                    err(
                        e,
                        "cannot open with O_DIRECT (does the file system support it?)",
                    )
                } else {
                    err(e, "cannot open")
                }
            })?;
        let dev_size =
            nvmf_sys::file::block_device_size(&file).map_err(|e| err(e, "cannot size"))?;
        let size = match (dev_size, size) {
            (Some(dev), Some(want)) if want != dev => {
                log::warn!(
                    "{}: block device has {dev} bytes; the configured size {want} is ignored",
                    path.display()
                );
                dev
            }
            (Some(dev), _) => dev,
            (None, Some(want)) => {
                let len = file.metadata().map_err(|e| err(e, "cannot stat"))?.len();
                if len < want {
                    file.set_len(want).map_err(|e| err(e, "cannot extend"))?;
                }
                want
            }
            (None, None) => {
                let len = file.metadata().map_err(|e| err(e, "cannot stat"))?.len();
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{}: the file is empty; give the namespace a size",
                            path.display()
                        ),
                    ));
                }
                len
            }
        };
        // (Block devices take ZERO_RANGE.)
        let zero_mode = if dev_size.is_some() {
            FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
        } else {
            zero_mode(&file, size)
        };
        if zero_mode & FALLOC_FL_PUNCH_HOLE != 0 {
            log::info!(
                "{}: the file system has no fallocate(ZERO_RANGE); Write Zeroes punches holes",
                path.display()
            );
        }
        Ok(FileBackend {
            file,
            size,
            block_device: dev_size.is_some(),
            direct,
            zero_mode,
        })
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }
}

impl Backend for FileBackend {
    fn kind(&self) -> &'static str {
        if self.block_device {
            "block"
        } else {
            "file"
        }
    }
    fn size(&self) -> u64 {
        self.size
    }
    /// Writes land in the page cache (or the device's cache) first.
    fn volatile_write_cache(&self) -> bool {
        true
    }
    fn submit(&self, op: IoOp) -> Submitted {
        let fd = self.fd();
        let range = |offset: u64, len: u64| check(self.size, offset, len);
        let refused = |op: IoOp| {
            Submitted::Done(IoDone {
                result: Err(BackendError::OutOfRange),
                buf: op.into_buf(),
            })
        };
        match op {
            IoOp::Read {
                offset,
                buf,
                at,
                len,
            } => {
                if range(offset, len as u64).is_err() {
                    return refused(IoOp::Read {
                        offset,
                        buf,
                        at,
                        len,
                    });
                }
                Submitted::Ring(if self.direct {
                    Op::ReadDirect {
                        fd,
                        buf,
                        offset: at,
                        len,
                        file_offset: offset,
                    }
                } else {
                    Op::Read {
                        fd,
                        buf,
                        offset: at,
                        len,
                        file_offset: offset,
                    }
                })
            }
            IoOp::Write {
                offset,
                buf,
                at,
                len,
            } => {
                if range(offset, len as u64).is_err() {
                    return refused(IoOp::Write {
                        offset,
                        buf,
                        at,
                        len,
                    });
                }
                Submitted::Ring(if self.direct {
                    Op::WriteDirect {
                        fd,
                        buf,
                        offset: at,
                        len,
                        file_offset: offset,
                    }
                } else {
                    Op::Write {
                        fd,
                        buf,
                        offset: at,
                        len,
                        file_offset: offset,
                    }
                })
            }
            IoOp::Flush => Submitted::Ring(Op::Fsync { fd, datasync: true }),
            IoOp::WriteZeroes { offset, len } | IoOp::Deallocate { offset, len }
                if range(offset, len).is_err() =>
            {
                refused(IoOp::Flush)
            }
            IoOp::WriteZeroes { offset, len } => Submitted::Ring(Op::Fallocate {
                fd,
                mode: self.zero_mode,
                offset,
                len,
            }),
            IoOp::Deallocate { offset, len } => Submitted::Ring(Op::Fallocate {
                fd,
                mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            }),
            // (Files have no staged DMA memory: `stage` is `None`.)
            op @ (IoOp::ReadDma { .. } | IoOp::WriteDma { .. }) => refused(op),
            // (Files are compared by reading: `compares` is false.)
            op @ IoOp::Compare { .. } => Submitted::Done(IoDone {
                result: Err(BackendError::Read("compare is not a file operation".into())),
                buf: op.into_buf(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::run_blocking;

    #[test]
    fn file_round_trip_flush_zero_punch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let b = FileBackend::open(&path, Some(1 << 20), false).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        assert!(b.volatile_write_cache() && !b.is_block_device());
        let w = run_blocking(
            &b,
            IoOp::Write {
                offset: 4096,
                buf: vec![7u8; 8192],
                at: 0,
                len: 8192,
            },
        );
        assert_eq!(w.result, Ok(()));
        assert_eq!(run_blocking(&b, IoOp::Flush).result, Ok(()));
        let r = run_blocking(
            &b,
            IoOp::Read {
                offset: 4096,
                buf: vec![0u8; 8192],
                at: 0,
                len: 8192,
            },
        );
        assert!(r.result.is_ok() && r.buf.iter().all(|&x| x == 7));
        // The data is in the file itself.
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[4096..12288].iter().all(|&x| x == 7));
        assert_eq!(
            run_blocking(
                &b,
                IoOp::Deallocate {
                    offset: 4096,
                    len: 4096
                }
            )
            .result,
            Ok(())
        );
        let z = run_blocking(
            &b,
            IoOp::WriteZeroes {
                offset: 8192,
                len: 512,
            },
        );
        let r = run_blocking(
            &b,
            IoOp::Read {
                offset: 4096,
                buf: vec![9u8; 8192],
                at: 0,
                len: 8192,
            },
        );
        assert!(
            r.buf[..4096].iter().all(|&x| x == 0),
            "punched range reads zeros"
        );
        if z.result.is_ok() {
            assert!(r.buf[4096..4608].iter().all(|&x| x == 0));
        }
        assert!(r.buf[4608..].iter().all(|&x| x == 7));
        let oob = run_blocking(
            &b,
            IoOp::Read {
                offset: 1 << 20,
                buf: vec![0; 512],
                at: 0,
                len: 512,
            },
        );
        assert_eq!(oob.result, Err(BackendError::OutOfRange));
        drop(b);
        // Reopened without a size: the file's own size.
        let b = FileBackend::open(&path, None, false).unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert!(FileBackend::open(&dir.path().join("missing"), None, false).is_err());
    }

    #[test]
    fn direct_io_round_trip_bypasses_nothing_it_should_not() {
        // /tmp may be tmpfs elsewhere (no O_DIRECT): use the build directory.
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let path = dir.path().join("direct.img");
        let b = FileBackend::open(&path, Some(1 << 20), true).unwrap();
        // Unaligned source memory (offset 3 in the Vec) still works.
        let mut src = vec![0u8; 3 + 8192];
        for (i, x) in src[3..].iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
        let w = run_blocking(
            &b,
            IoOp::Write {
                offset: 4096,
                buf: src.clone(),
                at: 3,
                len: 8192,
            },
        );
        assert_eq!(w.result, Ok(()));
        assert_eq!(w.buf, src, "the caller's buffer comes back unchanged");
        assert_eq!(run_blocking(&b, IoOp::Flush).result, Ok(()));
        let r = run_blocking(
            &b,
            IoOp::Read {
                offset: 4096,
                buf: vec![0xEE; 5 + 8192],
                at: 5,
                len: 8192,
            },
        );
        assert_eq!(r.result, Ok(()));
        assert_eq!(&r.buf[5..], &src[3..]);
        assert!(
            r.buf[..5].iter().all(|&x| x == 0xEE),
            "bytes before `at` untouched"
        );
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[4096..12288], &src[3..]);
        // The descriptor really is O_DIRECT (0o40000 on Linux x86-64 and arm64).
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", b.fd())).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .unwrap()
            .trim();
        assert_ne!(
            u32::from_str_radix(flags, 8).unwrap() & 0o40000,
            0,
            "fdinfo flags {flags}"
        );
    }

    /// On tmpfs (no fallocate ZERO_RANGE) Write Zeroes still zeroes, by
    /// punching a hole; it used to fail with Write Fault.
    #[test]
    fn write_zeroes_on_a_file_system_without_zero_range() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "/dev/shm (tmpfs) is missing"
            );
            eprintln!("SKIP: no /dev/shm on this machine");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let path = dir.path().join("disk.img");
        let b = FileBackend::open(&path, Some(1 << 20), false).unwrap();
        let w = run_blocking(
            &b,
            IoOp::Write {
                offset: 0,
                buf: vec![5u8; 65536],
                at: 0,
                len: 65536,
            },
        );
        assert_eq!(w.result, Ok(()));
        let z = run_blocking(
            &b,
            IoOp::WriteZeroes {
                offset: 4096,
                len: 8192 + 512,
            },
        );
        assert_eq!(z.result, Ok(()), "Write Zeroes on tmpfs");
        let r = run_blocking(
            &b,
            IoOp::Read {
                offset: 0,
                buf: vec![9u8; 65536],
                at: 0,
                len: 65536,
            },
        );
        assert_eq!(r.result, Ok(()));
        assert!(r.buf[..4096].iter().all(|&x| x == 5));
        assert!(r.buf[4096..4096 + 8704].iter().all(|&x| x == 0), "zeroed");
        assert!(r.buf[4096 + 8704..].iter().all(|&x| x == 5));
        // The file keeps its size.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
    }

    /// A full file system is Capacity Exceeded to the host (ENOSPC or
    /// EDQUOT on a write); other errors are the medium's.
    #[test]
    fn a_full_file_system_is_capacity_exceeded() {
        use crate::nvme::Status;
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(&dir.path().join("d.img"), Some(1 << 20), false).unwrap();
        let err = |r: i32, write: bool| b.ring_done(r, 4096, write, Vec::new()).result;
        let enospc = -28;
        let edquot = -122;
        let eio = -5;
        let full = Err(BackendError::Device(Status::CAPACITY_EXCEEDED.dnr()));
        assert_eq!(err(enospc, true), full);
        assert_eq!(err(edquot, true), full);
        assert!(matches!(err(eio, true), Err(BackendError::Write(_))));
        assert!(matches!(err(eio, false), Err(BackendError::Read(_))));
        assert!(
            matches!(err(100, true), Err(BackendError::Write(_))),
            "short write"
        );
        assert_eq!(err(4096, true), Ok(()));
    }
}
