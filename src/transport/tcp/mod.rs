//! NVMe/TCP transport: the sans-IO PDU codec and connection state machine,
//! and the driver that runs them on the reactor's sockets.
pub mod conn;
pub mod driver;
pub mod host;
pub mod pdu;

#[cfg(test)]
mod tests;

use crate::fabrics::TransportCaps;
use crate::subsystem::Port;
use std::net::SocketAddr;

/// TRTYPE of NVMe/TCP.
pub const TRTYPE: u8 = 3;
/// In-capsule data the admin queue accepts (NVMe/TCP fixes it at 8 KiB).
pub const ADMIN_IN_CAPSULE: u32 = 8192;

/// What NVMe/TCP can do, with the configured in-capsule data size.
pub fn caps(in_capsule_data: u32) -> TransportCaps {
    TransportCaps {
        trtype: TRTYPE,
        in_capsule_data,
        admin_in_capsule_data: ADMIN_IN_CAPSULE,
        keyed_sgl: false,
        transport_sgl: true,
    }
}

/// A TCP listener in the discovery log: TSAS SECTYPE 0 (no security).
pub fn port(addr: SocketAddr) -> Port {
    Port {
        trtype: TRTYPE,
        addr,
        tsas: [0; 8],
    }
}
