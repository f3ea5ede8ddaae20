//! Unsafe kernel interfaces. Every `unsafe` block of the project lives in this crate, each
//! with a `// SAFETY:` comment; everything exported here is a safe API.
//!
//! - [`ring`]: an io_uring instance that owns the buffers of its in-flight operations;
//! - [`mem`]: an anonymous memory region shared by threads (the RAM disk);
//! - [`event`]: an eventfd to wake a reactor sleeping in its ring;
//! - [`cpu`]: thread and process CPU clocks, thread names;
//! - [`file`]: opening files and block devices for the file backend;
//! - [`net`]: socket options std does not offer;
//! - [`signal`]: termination signals taken synchronously, for an orderly shutdown;
//! - [`rdma`]: RDMA verbs and connection manager, loaded at run time;
//! - [`nvme_cmd`]: NVMe passthrough commands to namespace devices through io_uring;
//! - [`vfio`]: PCI devices given to the process through VFIO (registers, DMA mappings).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod aligned;
pub mod cpu;
pub mod event;
pub mod file;
pub mod mem;
pub mod net;
pub mod nvme_cmd;
pub mod rdma;
pub mod ring;
pub mod signal;
pub mod vfio;

pub use event::EventFd;
pub use mem::{Region, RegionSlice};
pub use ring::{Completion, Op, Ring, SendBuf};

/// The last OS error as an `io::Error` (errno is thread-local, read it right after the call).
pub(crate) fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}
