//! nvmf-target: a user-space NVMe over Fabrics target.
//!
//! Layering (see DESIGN.md): `nvme` holds spec types and knows nothing of I/O;
//! `fabrics` holds the controller and queue state machines; `transport::tcp`
//! holds the sans-IO PDU codec and connection state machine; `reactor` performs
//! the I/O the state machines ask for.
#![forbid(unsafe_code)]

pub mod backend;
pub mod buf;
pub mod config;
pub mod control;
pub mod fabrics;
#[doc(hidden)]
pub mod fuzzing;
pub mod nvme;
pub mod reactor;
pub mod reload;
pub mod subsystem;
pub mod transport;
