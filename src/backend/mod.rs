//! Namespace backends behind one trait: `ram`, `null`, `file` (files and
//! block devices through the reactor's io_uring ring); direct NVMe next.

mod fault;
mod file;
mod null;
pub mod nvme;
mod ram;

pub use fault::FaultBackend;
pub use file::FileBackend;
pub use null::NullBackend;
pub use ram::RamBackend;

use std::fmt;
use std::sync::Arc;

/// A backend failure, mapped to an NVMe status by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The byte range is outside the backing store.
    OutOfRange,
    /// The medium failed to read.
    Read(String),
    /// The medium failed to write.
    Write(String),
    /// A device's own NVMe status, passed to the host unchanged.
    Device(crate::nvme::Status),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::OutOfRange => write!(f, "range outside the backing store"),
            BackendError::Read(e) => write!(f, "read failed: {e}"),
            BackendError::Write(e) => write!(f, "write failed: {e}"),
            BackendError::Device(st) => write!(f, "the device says {st}"),
        }
    }
}

pub type BackendResult = Result<(), BackendError>;

/// One backend operation. Buffers travel with the operation and come back
/// in its [`IoDone`], so nothing is copied or allocated on the way.
#[derive(Debug)]
pub enum IoOp {
    /// Read `len` bytes at `offset` into `buf[at..at + len]`.
    Read {
        offset: u64,
        buf: Vec<u8>,
        at: usize,
        len: usize,
    },
    /// Write `buf[at..at + len]` at `offset`.
    Write {
        offset: u64,
        buf: Vec<u8>,
        at: usize,
        len: usize,
    },
    /// Make every completed write durable.
    Flush,
    WriteZeroes {
        offset: u64,
        len: u64,
    },
    /// Release the range; it reads back as zeros.
    Deallocate {
        offset: u64,
        len: u64,
    },
    /// Compare `buf[at..at + len]` with the data at `offset` (only for
    /// backends whose [`Backend::compares`] is true): a mismatch is the
    /// device's Compare Failure.
    Compare {
        offset: u64,
        buf: Vec<u8>,
        at: usize,
        len: usize,
    },
    /// Read `len` bytes at `offset` straight into DMA memory the backend
    /// staged ([`Backend::stage`]): `dst`, at device address `iova`.
    ReadDma {
        offset: u64,
        len: usize,
        iova: u64,
        dst: nvmf_sys::RegionSlice,
    },
    /// Write `len` bytes at `offset` from staged DMA memory (`src`, at
    /// device address `iova`) that the transport received the host's data
    /// into.
    WriteDma {
        offset: u64,
        len: usize,
        iova: u64,
        src: nvmf_sys::RegionSlice,
    },
}

impl IoOp {
    /// Bytes a read or write must transfer to succeed (0 for the others).
    pub fn transfer_len(&self) -> usize {
        match self {
            IoOp::Read { len, .. }
            | IoOp::Write { len, .. }
            | IoOp::ReadDma { len, .. }
            | IoOp::WriteDma { len, .. } => *len,
            _ => 0,
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            IoOp::Read { .. } | IoOp::Compare { .. } | IoOp::ReadDma { .. }
        )
    }

    /// Gives the operation's buffer back (empty for bufferless ops).
    pub fn into_buf(self) -> Vec<u8> {
        match self {
            IoOp::Read { buf, .. } | IoOp::Write { buf, .. } | IoOp::Compare { buf, .. } => buf,
            _ => Vec::new(),
        }
    }
}

/// A finished backend operation with its buffer handed back.
#[derive(Debug)]
pub struct IoDone {
    pub result: BackendResult,
    pub buf: Vec<u8>,
}

/// How a backend runs an operation.
pub enum Submitted {
    /// Completed at once (memory backends).
    Done(IoDone),
    /// Must be run through the reactor's io_uring ring as this operation.
    Ring(nvmf_sys::Op),
    /// Goes to a device the reactor's NVMe driver drives.
    Device(DeviceRequest),
}

/// A device the reactor's NVMe driver sends commands to.
#[derive(Clone)]
pub enum DeviceRef {
    /// A controller this process drives through VFIO (or the simulator).
    Pci(Arc<nvme::device::NvmeDevice>),
    /// A namespace the kernel keeps, through io_uring passthrough.
    Passthru(Arc<nvme::passthru::PassthruDevice>),
}

impl DeviceRef {
    pub fn name(&self) -> &str {
        match self {
            DeviceRef::Pci(d) => &d.name,
            DeviceRef::Passthru(d) => &d.name,
        }
    }
}

/// An operation for a device the process drives itself.
pub struct DeviceRequest {
    pub dev: DeviceRef,
    pub op: IoOp,
}

impl fmt::Debug for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceRequest({}, {:?})", self.dev.name(), self.op)
    }
}

/// A device operation finished: for session `slot`'s command `tag`, with
/// the operation's buffer back.
#[derive(Debug)]
pub struct DeviceDone {
    pub slot: usize,
    pub tag: u32,
    pub result: Result<(), crate::nvme::Status>,
    pub buf: Vec<u8>,
}

/// The one interface every namespace backend implements. Offsets and lengths
/// are in bytes and already validated against the namespace size by the
/// controller; implementations still check and return `OutOfRange` rather
/// than panic.
pub trait Backend: Send + Sync {
    /// Short kind name for logs: "ram", "null", "file".
    fn kind(&self) -> &'static str;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether the backend compares data itself ([`IoOp::Compare`]); the
    /// others are compared by reading.
    fn compares(&self) -> bool {
        false
    }
    /// The block size the backend imposes (a device's own), if any.
    fn block_size(&self) -> Option<u32> {
        None
    }
    /// Whether acknowledged writes may be lost without a Flush (reported to
    /// the host as a volatile write cache).
    fn volatile_write_cache(&self) -> bool;
    /// The bytes of a read as a slice of the backend's own memory, to be sent
    /// to the host without copying; `None` (the default) when the backend has
    /// no such memory or the range is out of bounds: then the read goes
    /// through [`submit`](Self::submit).
    fn read_shared(&self, _offset: u64, _len: usize) -> Option<nvmf_sys::RegionSlice> {
        None
    }
    /// The backend memory of a write's range, for the transport to put the
    /// host's data straight into (no copy through a buffer); `None` (the
    /// default) when the backend has no such memory or the range is out of
    /// bounds: then the write goes through [`submit`](Self::submit).
    fn write_in_place(&self, _offset: u64, _len: usize) -> Option<nvmf_sys::RegionSlice> {
        None
    }
    /// A DMA buffer of `len` bytes for one transfer of a device this
    /// process drives, from reactor `reactor`'s share, and its device
    /// address: the transport receives a write's data into it, or the
    /// device reads into it and the transport sends from it, with no copy
    /// ([`IoOp::ReadDma`], [`IoOp::WriteDma`]). It goes back to its pool
    /// when the slice and its clones are dropped. `None` (the default) when
    /// the backend has no DMA memory or none is free just now.
    fn stage(&self, _reactor: u16, _len: usize) -> Option<(nvmf_sys::RegionSlice, u64)> {
        None
    }
    /// For a device this process drives: the bytes copied through bounce
    /// buffers so far (transfers that could not be staged), the staged
    /// buffers free in each reactor's pool, and its completion interrupts.
    fn dma_use(&self) -> Option<nvme::device::DeviceUse> {
        self.nvme().map(|d| d.dma_use())
    }
    /// The NVMe controller this process drives for the backend, if any.
    fn nvme(&self) -> Option<&Arc<nvme::device::NvmeDevice>> {
        None
    }
    /// Starts an operation: memory backends complete it here; ring backends
    /// turn it into an io_uring operation for the reactor.
    fn submit(&self, op: IoOp) -> Submitted;
    /// Interprets the ring completion of an operation this backend turned
    /// into a ring op (`result` is bytes or -errno, `expected` the bytes the
    /// operation had to transfer).
    fn ring_done(&self, result: i32, expected: usize, write: bool, buf: Vec<u8>) -> IoDone {
        let result = if result < 0 {
            let err = std::io::Error::from_raw_os_error(-result);
            let full = matches!(
                err.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            );
            let e = err.to_string();
            Err(if write && full {
                // The file system is full (a sparse file, a thin device):
                // the host is told the namespace has no room, not that the
                // medium failed.
                BackendError::Device(crate::nvme::Status::CAPACITY_EXCEEDED.dnr())
            } else if write {
                BackendError::Write(e)
            } else {
                BackendError::Read(e)
            })
        } else if (result as usize) < expected {
            let e = format!("short transfer: {result} of {expected} bytes");
            Err(if write {
                BackendError::Write(e)
            } else {
                BackendError::Read(e)
            })
        } else {
            Ok(())
        };
        IoDone { result, buf }
    }
}

/// Runs an operation to completion on the calling thread, through a private
/// ring for ring backends. For tools and tests, never the I/O path.
pub fn run_blocking(backend: &dyn Backend, op: IoOp) -> IoDone {
    let expected = op.transfer_len();
    let write = op.is_write();
    match backend.submit(op) {
        Submitted::Done(d) => d,
        Submitted::Device(r) => IoDone {
            result: Err(BackendError::Write(
                "a device operation needs a reactor".to_string(),
            )),
            buf: r.op.into_buf(),
        },
        Submitted::Ring(rop) => {
            let fail = |e: std::io::Error| IoDone {
                result: Err(BackendError::Write(e.to_string())),
                buf: Vec::new(),
            };
            let mut ring = match nvmf_sys::Ring::new(4) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if let Err(e) = ring.push(rop, 0) {
                return fail(e);
            }
            let mut out = Vec::new();
            while out.is_empty() {
                if let Err(e) = ring.submit_and_wait(Some(std::time::Duration::from_secs(1))) {
                    return fail(e);
                }
                ring.drain(&mut out);
            }
            let c = out.remove(0);
            backend.ring_done(c.result, expected, write, c.buf.unwrap_or_default())
        }
    }
}

/// Runs a memory backend's operation: shared by `ram` and `null`.
pub(crate) fn run_memory(
    op: IoOp,
    read: impl FnOnce(u64, &mut [u8]) -> BackendResult,
    write: impl FnOnce(u64, &[u8]) -> BackendResult,
    other: impl FnOnce(&IoOp) -> BackendResult,
) -> Submitted {
    let done = match op {
        IoOp::Read {
            offset,
            mut buf,
            at,
            len,
        } => {
            let result = match buf.get_mut(at..at + len) {
                Some(dst) => read(offset, dst),
                None => Err(BackendError::OutOfRange),
            };
            IoDone { result, buf }
        }
        IoOp::Write {
            offset,
            buf,
            at,
            len,
        } => {
            let result = match buf.get(at..at + len) {
                Some(src) => write(offset, src),
                None => Err(BackendError::OutOfRange),
            };
            IoDone { result, buf }
        }
        IoOp::ReadDma { .. } | IoOp::WriteDma { .. } => IoDone {
            result: Err(BackendError::Write(
                "a staged DMA transfer for a memory backend".into(),
            )),
            buf: Vec::new(),
        },
        op => IoDone {
            result: other(&op),
            buf: Vec::new(),
        },
    };
    Submitted::Done(done)
}

/// Opens the backend a namespace config names; `reactors` is how many
/// reactors will use it (a device gets a queue pair for each). A device
/// this process drives gets completion interrupts (to wake a reactor that
/// sleeps) when `interrupts`: reactors that never sleep do not need them.
pub fn open(
    cfg: &crate::config::BackendConfig,
    block_size: u32,
    reactors: usize,
    max_io: u32,
    interrupts: bool,
) -> std::io::Result<Arc<dyn Backend>> {
    use crate::config::BackendConfig;
    match cfg {
        BackendConfig::Nvme { pci, size, .. } if pci == "sim" => {
            let shift = block_size.trailing_zeros();
            let dev = nvme::device::NvmeDevice::open_sim(
                size.unwrap_or(1 << 30),
                shift,
                reactors.max(1) as u16,
                interrupts,
            )?;
            dev.enable_staging(max_io, reactors.max(1) as u16);
            Ok(Arc::new(nvme::device::NvmeBackend { dev }))
        }
        BackendConfig::NvmePassthru { path } => {
            let dev = nvme::passthru::PassthruDevice::open(path)?;
            Ok(Arc::new(nvme::passthru::PassthruBackend { dev }))
        }
        BackendConfig::Nvme { pci, nsid, .. } => {
            let dev = nvme::device::NvmeDevice::open_vfio(
                pci,
                *nsid,
                reactors.max(1) as u16,
                max_io,
                interrupts,
            )?;
            dev.enable_staging(max_io, reactors.max(1) as u16);
            Ok(Arc::new(nvme::device::NvmeBackend { dev }))
        }
        BackendConfig::Ram { size } => Ok(Arc::new(RamBackend::new(*size)?)),
        BackendConfig::Null { size } => Ok(Arc::new(NullBackend::new(*size))),
        BackendConfig::Fault { size, faults } => {
            Ok(Arc::new(FaultBackend::new(*size, block_size, faults)?))
        }
        BackendConfig::File { path, size, direct } => {
            Ok(Arc::new(FileBackend::open(path, *size, *direct)?))
        }
    }
}

fn check(size: u64, offset: u64, len: u64) -> BackendResult {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange),
    }
}
