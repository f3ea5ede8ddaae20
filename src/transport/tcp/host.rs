//! Host-side PDU encoders for driving a [`super::conn::TcpConn`] in memory:
//! used by the state-machine tests and the dispatch benchmark. (The
//! user-space initiator in `initiator-tools/` has its own, independent
//! codec.)

use super::pdu::{self, flags, pdu_type};
use crate::nvme::{put16, put32, put_str, sgl_id, Command, Sgl};

/// An ICReq asking for the given digests.
pub fn icreq(hdgst: bool, ddgst: bool) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[2] = 128;
    put32(&mut b, 4, 128);
    b[11] = hdgst as u8 | ((ddgst as u8) << 1);
    b
}

/// A CapsuleCmd PDU with optional in-capsule data.
pub fn capsule(cmd: &Command, data: &[u8], hdgst: bool, ddgst: bool) -> Vec<u8> {
    let hd = if hdgst { 4 } else { 0 };
    let dd = if ddgst && !data.is_empty() { 4 } else { 0 };
    let mut b = vec![0u8; 72];
    b[0] = pdu_type::CAPSULE_CMD;
    b[1] = (if hd > 0 { flags::HDGSTF } else { 0 }) | (if dd > 0 { flags::DDGSTF } else { 0 });
    b[2] = 72;
    b[3] = if data.is_empty() { 0 } else { (72 + hd) as u8 };
    put32(&mut b, 4, (72 + hd + data.len() + dd) as u32);
    b[8..72].copy_from_slice(&cmd.to_bytes());
    if hd > 0 {
        let c = pdu::crc32c(&b);
        b.extend_from_slice(&c.to_le_bytes());
    }
    b.extend_from_slice(data);
    if dd > 0 {
        b.extend_from_slice(&pdu::crc32c(data).to_le_bytes());
    }
    b
}

/// An H2CData PDU.
pub fn h2c_data(
    cid: u16,
    ttag: u16,
    off: u32,
    data: &[u8],
    last: bool,
    hdgst: bool,
    ddgst: bool,
) -> Vec<u8> {
    let hd = if hdgst { 4 } else { 0 };
    let dd = if ddgst { 4 } else { 0 };
    let mut b = vec![0u8; 24];
    b[0] = pdu_type::H2C_DATA;
    b[1] = (if hd > 0 { flags::HDGSTF } else { 0 })
        | (if dd > 0 { flags::DDGSTF } else { 0 })
        | (if last { flags::LAST_PDU } else { 0 });
    b[2] = 24;
    b[3] = (24 + hd) as u8;
    put32(&mut b, 4, (24 + hd + data.len() + dd) as u32);
    put16(&mut b, 8, cid);
    put16(&mut b, 10, ttag);
    put32(&mut b, 12, off);
    put32(&mut b, 16, data.len() as u32);
    if hd > 0 {
        let c = pdu::crc32c(&b);
        b.extend_from_slice(&c.to_le_bytes());
    }
    b.extend_from_slice(data);
    if dd > 0 {
        b.extend_from_slice(&pdu::crc32c(data).to_le_bytes());
    }
    b
}

/// Sets the command's SGL: in-capsule data when `inline` is non-zero,
/// otherwise a transport data block of `xfer` bytes (read, or R2T write).
pub fn set_sgl(cmd: &mut Command, inline: usize, xfer: u32) {
    cmd.flags |= 0x40;
    let sgl = if inline > 0 {
        Sgl {
            key: 0,
            address: 0,
            length: inline as u32,
            id: sgl_id::DATA_BLOCK_OFFSET,
        }
    } else {
        Sgl {
            key: 0,
            address: 0,
            length: xfer,
            id: sgl_id::TRANSPORT_DATA_BLOCK,
        }
    };
    cmd.dptr = sgl.to_bytes();
}

/// A Connect command (with its SGL) and its 1024-byte data.
pub fn connect(
    qid: u16,
    cntlid: u16,
    subnqn: &str,
    hostnqn: &str,
    kato: u32,
    cattr: u8,
) -> (Command, Vec<u8>) {
    let mut data = vec![0u8; 1024];
    data[..16].copy_from_slice(&[7u8; 16]);
    put16(&mut data, 16, cntlid);
    put_str(&mut data, 256, 256, subnqn, 0);
    put_str(&mut data, 512, 256, hostnqn, 0);
    let mut cmd = Command {
        opcode: 0x7F,
        nsid: 0x01,
        cdw10: (qid as u32) << 16,
        cdw11: 31 | ((cattr as u32) << 16),
        cdw12: kato,
        ..Default::default()
    };
    set_sgl(&mut cmd, data.len(), 0);
    (cmd, data)
}

/// A read or write style command: opcode, namespace, first LBA, block count.
pub fn rw(op: u8, nsid: u32, slba: u64, nlb: u32) -> Command {
    Command {
        opcode: op,
        nsid,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: nlb - 1,
        ..Default::default()
    }
}

/// A connection and its fabrics queue side by side, as a reactor session
/// pairs them: for tests and benchmarks that drive the state machines in
/// memory (RAM and null backends complete at once). Derefs to the
/// connection for its other methods.
pub struct Loopback {
    pub conn: super::conn::TcpConn,
    pub queue: crate::fabrics::Queue,
}

impl Loopback {
    /// A connection to `target` as if it arrived at 127.0.0.1:4420, with
    /// `in_capsule` bytes of in-capsule data on I/O queues.
    pub fn new(
        target: std::sync::Arc<crate::subsystem::Target>,
        params: super::conn::ConnParams,
        in_capsule: u32,
    ) -> Loopback {
        let bufs = crate::buf::Buffers::new();
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 4420));
        Loopback {
            conn: super::conn::TcpConn::new(params, bufs.clone()),
            queue: crate::fabrics::Queue::new(
                target,
                crate::fabrics::Origin::local(local),
                super::caps(in_capsule),
                bufs,
            ),
        }
    }

    pub fn receive(&mut self, bytes: &[u8], now: std::time::Instant) {
        self.conn.receive(bytes, &mut self.queue, now);
    }

    pub fn direct_done(&mut self, d: super::conn::DirectRecv, n: usize, now: std::time::Instant) {
        self.conn.direct_done(d, n, &mut self.queue, now);
    }

    /// The reactor's timer: keep-alive expiry or controller teardown closes
    /// the connection.
    pub fn tick(&mut self, now: std::time::Instant) {
        if let crate::fabrics::Tick::Close(why) = self.queue.tick(now) {
            self.conn.close(why);
            return;
        }
        let mut r = Vec::new();
        self.queue.poll_events(&mut r);
        if !r.is_empty() {
            self.conn.respond(&mut r, &self.queue);
        }
    }
}

impl std::ops::Deref for Loopback {
    type Target = super::conn::TcpConn;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for Loopback {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}
