//! Namespace backends behind one trait: `ram`, `null`, and next `file`
//! (io_uring) and direct NVMe.

mod null;
mod ram;

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
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::OutOfRange => write!(f, "range outside the backing store"),
            BackendError::Read(e) => write!(f, "read failed: {e}"),
            BackendError::Write(e) => write!(f, "write failed: {e}"),
        }
    }
}

pub type BackendResult = Result<(), BackendError>;

/// The one interface every namespace backend implements. Offsets and lengths
/// are in bytes and already validated against the namespace size by the
/// controller; implementations still check and return `OutOfRange` rather
/// than panic.
///
/// These calls complete synchronously, which suits memory backends; the
/// io_uring file backend will complete through the reactor's ring instead.
pub trait Backend: Send + Sync {
    /// Short kind name for logs: "ram", "null", "file".
    fn kind(&self) -> &'static str;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether acknowledged writes may be lost without a Flush (reported to
    /// the host as a volatile write cache).
    fn volatile_write_cache(&self) -> bool;
    fn read(&self, offset: u64, buf: &mut [u8]) -> BackendResult;
    fn write(&self, offset: u64, data: &[u8]) -> BackendResult;
    /// Makes every completed write durable.
    fn flush(&self) -> BackendResult;
    fn write_zeroes(&self, offset: u64, len: u64) -> BackendResult;
    /// Releases the range; reads of it return zeros afterwards.
    fn deallocate(&self, offset: u64, len: u64) -> BackendResult;
}

/// Opens the backend a namespace config names.
pub fn open(cfg: &crate::config::BackendConfig) -> std::io::Result<Arc<dyn Backend>> {
    use crate::config::BackendConfig;
    match cfg {
        BackendConfig::Ram { size } => Ok(Arc::new(RamBackend::new(*size)?)),
        BackendConfig::Null { size } => Ok(Arc::new(NullBackend::new(*size))),
        BackendConfig::File { path, .. } => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "{}: the file backend is not available in this build yet",
                path.display()
            ),
        )),
    }
}

fn check(size: u64, offset: u64, len: u64) -> BackendResult {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange),
    }
}
