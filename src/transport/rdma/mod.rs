//! NVMe/RDMA transport: command capsules arrive by SEND into receive buffers
//! posted for every submission queue slot; data moves by RDMA READ (host
//! to controller) and RDMA WRITE (controller to host) of the host memory a
//! keyed SGL names, or in the capsule; responses go back by SEND. The RDMA
//! connection manager (CM) carries the connect request, whose private data
//! sizes the queue. `conn` is the sans-IO protocol, `driver` the verbs.
pub mod cm;
pub mod conn;
pub mod driver;

#[cfg(test)]
mod tests;

use crate::fabrics::TransportCaps;
use crate::subsystem::Port;
use std::net::SocketAddr;

/// TRTYPE of NVMe/RDMA.
pub const TRTYPE: u8 = 1;

/// What NVMe/RDMA can do: keyed SGLs (host memory) and in-capsule data
/// on I/O queues (the kernel host sends none on the admin queue).
pub fn caps(in_capsule_data: u32) -> TransportCaps {
    TransportCaps {
        trtype: TRTYPE,
        in_capsule_data,
        admin_in_capsule_data: 0,
        keyed_sgl: true,
        transport_sgl: false,
    }
}

/// An RDMA listener in the discovery log. TSAS: RDMA_QPTYPE 1 (reliable
/// connected), RDMA_PRTYPE 1 (no provider specified), RDMA_CMS 1 (RDMA
/// IP-based CM), P_KEY 0.
pub fn port(addr: SocketAddr) -> Port {
    Port {
        trtype: TRTYPE,
        addr,
        tsas: [1, 1, 1, 0, 0, 0, 0, 0],
    }
}
