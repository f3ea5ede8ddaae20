//! Transports.
pub mod tcp;
