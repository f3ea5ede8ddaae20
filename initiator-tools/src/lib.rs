//! User-space NVMe/TCP initiator (host) library.
//!
//! This crate is an implementation of the host side of NVMe over TCP that is
//! written independently of the target in this workspace, so that a codec bug
//! on one side is not silently shared by the other. It is deliberately strict
//! about what it receives: every protocol violation by the target is reported
//! as [`Error::Protocol`] with a precise message.
//!
//! Layers:
//! - [`pdu`]: sans-IO PDU codec (encode/decode, digests, padding);
//! - [`command`]: the 64-byte SQE, command builders, CQE parsing;
//! - [`identify`]: parsers for Identify and Discovery log data;
//! - [`queue`]: one TCP connection = one NVMe queue (blocking sockets);
//! - [`controller`]: controller bring-up/shutdown and [`discover`];
//! - [`print`]: nvme-cli style text output used by the tools;
//! - [`perf`]: the nonblocking load-generation engine behind `nvmf-perf`.
#![forbid(unsafe_code)]

pub mod command;
pub mod controller;
pub mod identify;
pub mod pdu;
pub mod perf;
pub mod print;
pub mod queue;

use std::fmt;

pub use command::{Command, Response};
pub use controller::{discover, Controller, DISCOVERY_NQN};
pub use identify::{
    parse_ns_descriptors, parse_ns_list, DiscoveryLog, DiscoveryLogEntry, IdentifyController,
    IdentifyNamespace, LbaFormat, NsDescriptor,
};
pub use pdu::Pdu;
pub use queue::{Queue, QueueOptions};

/// Errors returned by this library.
#[derive(Debug)]
pub enum Error {
    /// A socket error.
    Io(std::io::Error),
    /// The target violated the NVMe/TCP or NVMe-oF protocol.
    Protocol(String),
    /// A command completed with a non-zero status.
    /// `status` is `SCT << 8 | SC`.
    Status { status: u16, dnr: bool, dw0: u32 },
    /// The target sent a C2HTermReq.
    Terminated { fes: u16, fei: u32 },
    /// No answer within the configured timeout.
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// The caller asked for something this library cannot do
    /// (bad argument, queue full, ...). Not a target bug.
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Protocol(m) => write!(f, "protocol violation by target: {m}"),
            Error::Status { status, dnr, dw0 } => write!(
                f,
                "command failed: status {:#06x} (SCT {:#x}, SC {:#04x}: {}){}, dw0 {:#x}",
                status,
                status >> 8,
                status & 0xff,
                command::status_str(*status),
                if *dnr { ", DNR" } else { "" },
                dw0
            ),
            Error::Terminated { fes, fei } => write!(
                f,
                "connection terminated by target (C2HTermReq): FES {:#x} ({}), FEI {:#x}",
                fes,
                pdu::fes_str(*fes),
                fei
            ),
            Error::Timeout => write!(f, "timed out waiting for the target"),
            Error::Closed => write!(f, "connection closed by the target"),
            Error::Invalid(m) => write!(f, "invalid request: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::WouldBlock | K::TimedOut => Error::Timeout,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Error::Closed
            }
            _ => Error::Io(e),
        }
    }
}

/// Format 16 bytes as a canonical UUID string (8-4-4-4-12, lower-case hex).
pub fn uuid_to_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Parse a UUID string (with or without dashes) into 16 bytes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    if hex.len() != 32 || s.len() != 32 && s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (hex[2 * i] as char).to_digit(16)?;
        let lo = (hex[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip() {
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        let s = uuid_to_string(&u);
        assert_eq!(s, "12345678-9abc-def0-0123-456789abcdef");
        assert_eq!(parse_uuid(&s), Some(u));
        assert_eq!(parse_uuid("123456789abcdef0123456789abcdef"), None);
        assert_eq!(parse_uuid("12345678-9abc-def0-0123-456789abcdeg"), None);
    }

    #[test]
    fn io_error_mapping() {
        use std::io::{Error as IoE, ErrorKind as K};
        assert!(matches!(
            Error::from(IoE::from(K::TimedOut)),
            Error::Timeout
        ));
        assert!(matches!(
            Error::from(IoE::from(K::WouldBlock)),
            Error::Timeout
        ));
        assert!(matches!(
            Error::from(IoE::from(K::ConnectionReset)),
            Error::Closed
        ));
        assert!(matches!(
            Error::from(IoE::from(K::PermissionDenied)),
            Error::Io(_)
        ));
    }

    #[test]
    fn error_display() {
        let e = Error::Status {
            status: 0x0280,
            dnr: true,
            dw0: 0,
        };
        let s = e.to_string();
        assert!(s.contains("0x0280"), "{s}");
        assert!(s.contains("DNR"), "{s}");
        let t = Error::Terminated { fes: 1, fei: 2 }.to_string();
        assert!(t.contains("Invalid PDU Header Field"), "{t}");
    }
}
