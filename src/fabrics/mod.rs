//! NVMe over Fabrics: the controller and queue state machines. Transport
//! independent: a transport hands a queue decoded commands with their
//! host-to-controller data and sends back the responses it returns.

mod admin;
pub mod admit;
pub mod controller;
pub mod gate;
pub mod io;
pub mod queue;

pub use admit::{DataMap, Request, TransportCaps};
pub use gate::Placed;
pub use io::{IoRequest, IoWork};
pub use queue::{Origin, Queue, Response, Tick};
pub mod nsstats;

/// NVMe version this controller reports (1.4.0).
pub const NVME_VERSION: u32 = 0x0001_0400;
/// Firmware revision reported in Identify and the firmware slot log.
pub const FIRMWARE: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// Admin queue depth the host may ask for at most (ASQSZ).
pub const ADMIN_QUEUE_DEPTH: u32 = 32;
/// Outstanding Asynchronous Event Requests accepted (AERL + 1).
pub const MAX_AERS: usize = 4;
/// Error log entries kept per controller (ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 64;
/// Keep-alive granularity in 100 ms units (KAS).
pub const KAS: u16 = 10;
