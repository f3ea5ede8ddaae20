//! Transports: drivers the reactor runs beside the fabrics core. Each one
//! frames capsules and moves data for its connections, and says who it is
//! (its discovery log entry, in-capsule data size and SGL support); the
//! controller logic is the same for all of them.
pub mod rdma;
pub mod tcp;

use crate::config::{Config, ListenerConfig, TargetConfig, TransportKind};
use crate::reactor::Driver;
use crate::subsystem::Port;
use nvmf_sys::rdma::{CmId, EventChannel};
use std::io;
use std::net::TcpListener;

/// A transport connection beside its queue: commands go to the queue with
/// the connection's spare response vector, and what the queue answers goes
/// to the connection's `answer`, which encodes it for the wire.
pub(crate) trait QueueConn {
    /// The connection's spare response vector (kept to reuse its memory).
    fn spare(&mut self) -> &mut Vec<crate::fabrics::Response>;
    /// Turns responses into the connection's output.
    fn answer(&mut self, r: &mut Vec<crate::fabrics::Response>, q: &crate::fabrics::Queue);

    /// Runs `f` on the queue and answers what it produced.
    fn with_queue(
        &mut self,
        q: &mut crate::fabrics::Queue,
        f: impl FnOnce(&mut crate::fabrics::Queue, &mut Vec<crate::fabrics::Response>),
    ) {
        let mut r = std::mem::take(self.spare());
        f(q, &mut r);
        self.answer(&mut r, q);
        *self.spare() = r;
    }

    /// Completes a command the transport refuses before the queue runs it.
    fn reject(
        &mut self,
        cmd: &crate::nvme::Command,
        st: crate::nvme::Status,
        q: &mut crate::fabrics::Queue,
    ) {
        self.with_queue(q, |q, r| q.reject(cmd, st, r));
    }

    fn execute(
        &mut self,
        cmd: crate::nvme::Command,
        data: Vec<u8>,
        q: &mut crate::fabrics::Queue,
        now: std::time::Instant,
    ) {
        self.with_queue(q, |q, r| q.execute(&cmd, data, now, r));
    }

    /// A write whose data is already in backend memory, or in a staged
    /// DMA buffer (`placed`, as [`crate::fabrics::Queue::placed_write`] gave it).
    fn execute_placed(
        &mut self,
        cmd: &crate::nvme::Command,
        len: usize,
        placed: Option<crate::fabrics::Placed>,
        q: &mut crate::fabrics::Queue,
        now: std::time::Instant,
    ) {
        self.with_queue(q, |q, r| q.execute_placed(cmd, len, placed, now, r));
    }
}

/// Driver ids (a reactor's drivers, in this order).
pub const DRIVER_TCP: u8 = 0;
pub const DRIVER_RDMA: u8 = 1;
/// Not a transport: the NVMe devices the reactor drives (see `backend::nvme`).
pub const DRIVER_NVME: u8 = 2;

/// Connect requests an RDMA listener queues.
pub(crate) const RDMA_BACKLOG: i32 = 128;

/// The discovery log's view of a listener.
pub fn port(l: &ListenerConfig) -> Port {
    match l.transport {
        TransportKind::Tcp => tcp::port(l.addr),
        TransportKind::Rdma => rdma::port(l.addr),
    }
}

/// Every listener of a config, opened before the reactors start (so that
/// an address in use is an error at start-up, not in a reactor).
pub struct Listeners {
    /// With the target's listener IDs (1, 2, ... in config order).
    tcp: Vec<(u16, TcpListener)>,
    rdma: Option<rdma::driver::Listening>,
}

/// Why an RDMA listener could not be opened, and what to do about it.
pub(crate) fn rdma_help(addr: std::net::SocketAddr, e: &io::Error) -> String {
    format!(
        "cannot listen for NVMe/RDMA on {addr}: {e}. RDMA needs rdma-core's libraries \
         (libibverbs1, librdmacm1, ibverbs-providers) and an RDMA device that has this address; \
         on a machine with no RDMA NIC, scripts/soft-roce.sh NETDEV sets up Soft-RoCE on a \
         network interface, or add fallback = \"tcp\" to the listener to serve NVMe/TCP instead"
    )
}

impl Listeners {
    /// Opens the config's listeners. A listener on port 0 gets its bound
    /// port written back into `cfg`; an RDMA listener that falls back to
    /// TCP is written back as a TCP one (the discovery log tells the truth).
    pub fn open(cfg: &mut Config) -> io::Result<Listeners> {
        let mut tcp = Vec::new();
        let mut rdma: Option<rdma::driver::Listening> = None;
        for (l, lid) in cfg.listeners.iter_mut().zip(1u16..) {
            if l.transport == TransportKind::Rdma {
                let opened = (|| {
                    nvmf_sys::rdma::available().map_err(io::Error::other)?;
                    let ch = match &rdma {
                        Some((c, _)) => c.clone(),
                        None => EventChannel::new()?,
                    };
                    let id = CmId::listen(&ch, l.addr, RDMA_BACKLOG)?;
                    Ok::<_, io::Error>((ch, id))
                })();
                match opened {
                    Ok((ch, id)) => {
                        if let Some(a) = id.local_addr() {
                            l.addr = a;
                        }
                        rdma.get_or_insert_with(|| (ch, Vec::new()))
                            .1
                            .push((lid, id));
                        continue;
                    }
                    Err(e) if l.fallback == Some(TransportKind::Tcp) => {
                        log::error!(
                            "{}; FALLING BACK to NVMe/TCP on {} as the config allows \
                             (the discovery log says TCP)",
                            rdma_help(l.addr, &e),
                            l.addr
                        );
                        l.transport = TransportKind::Tcp;
                    }
                    Err(e) => return Err(io::Error::new(e.kind(), rdma_help(l.addr, &e))),
                }
            }
            let sock = tcp::driver::bind(l.addr)?;
            l.addr = sock.local_addr()?;
            tcp.push((lid, sock));
        }
        Ok(Listeners { tcp, rdma })
    }
}

/// A reactor's drivers, by driver id; `listeners` for the reactor that
/// accepts connections (the others get theirs handed over).
pub fn drivers(cfg: &TargetConfig, listeners: Option<Listeners>) -> Vec<Box<dyn Driver>> {
    let l = listeners.unwrap_or(Listeners {
        tcp: Vec::new(),
        rdma: None,
    });
    let params = tcp::conn::ConnParams {
        max_io_size: cfg.max_io_size,
        allow_hdgst: cfg.hdr_digest,
        allow_ddgst: cfg.data_digest,
    };
    let rdma_params = rdma::driver::Params {
        in_capsule_data: cfg.in_capsule_data_size,
        max_io_size: cfg.max_io_size,
        limits: rdma::cm::Limits {
            admin_depth: crate::fabrics::ADMIN_QUEUE_DEPTH,
            io_depth: cfg.max_queue_depth as u32,
            io_queues: cfg.max_io_queues,
        },
    };
    vec![
        Box::new(tcp::driver::TcpDriver::new(
            DRIVER_TCP,
            params,
            tcp::caps(cfg.in_capsule_data_size),
            l.tcp,
        )),
        Box::new(rdma::driver::RdmaDriver::new(
            DRIVER_RDMA,
            rdma_params,
            l.rdma,
        )),
        Box::new(crate::backend::nvme::driver::NvmeDriver::new(
            cfg.max_io_size,
        )),
    ]
}
