//! Transports: drivers the reactor runs beside the fabrics core. Each one
//! frames capsules and moves data for its connections, and says who it is
//! (its discovery log entry, in-capsule data size and SGL support); the
//! controller logic is the same for all of them.
pub mod tcp;

use crate::config::{Config, ListenerConfig, TargetConfig, TransportKind};
use crate::reactor::Driver;
use crate::subsystem::Port;
use std::io;
use std::net::TcpListener;

/// Driver ids (a reactor's drivers, in this order).
pub const DRIVER_TCP: u8 = 0;

/// The discovery log's view of a listener.
pub fn port(l: &ListenerConfig) -> Port {
    match l.transport {
        TransportKind::Tcp => tcp::port(l.addr),
    }
}

/// Every listener of a config, opened before the reactors start (so that
/// an address in use is an error at start-up, not in a reactor).
pub struct Listeners {
    tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Opens the config's listeners; a listener on port 0 gets its bound
    /// port written back into `cfg`.
    pub fn open(cfg: &mut Config) -> io::Result<Listeners> {
        let mut tcp = Vec::new();
        for l in &mut cfg.listeners {
            match l.transport {
                TransportKind::Tcp => {
                    let sock = tcp::driver::bind(l.addr)?;
                    l.addr = sock.local_addr()?;
                    tcp.push(sock);
                }
            }
        }
        Ok(Listeners { tcp })
    }
}

/// A reactor's drivers, by driver id; `listeners` for the reactor that
/// accepts connections (the others get theirs handed over).
pub fn drivers(cfg: &TargetConfig, listeners: Option<Listeners>) -> Vec<Box<dyn Driver>> {
    let l = listeners.unwrap_or(Listeners { tcp: Vec::new() });
    let params = tcp::conn::ConnParams {
        max_io_size: cfg.max_io_size,
        allow_hdgst: cfg.hdr_digest,
        allow_ddgst: cfg.data_digest,
    };
    vec![Box::new(tcp::driver::TcpDriver::new(
        DRIVER_TCP,
        params,
        tcp::caps(cfg.in_capsule_data_size),
        l.tcp,
    ))]
}
