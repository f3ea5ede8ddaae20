//! Admission: the checks every transport makes before a command runs (as
//! the kernel's `nvmet_req_init`), in one place. A transport parses its
//! capsule, asks the queue to admit the command, and then only maps the
//! data its SGL names (TCP: in the capsule or through R2T; RDMA: in the
//! capsule or by RDMA READ/WRITE of a keyed block).

use super::queue::Queue;
use crate::nvme::{sgl_id, Command, DataDir, Status};

/// What a transport tells the controller about itself: what goes into
/// Identify Controller and which SGL descriptors it can map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportCaps {
    /// Discovery log TRTYPE (1 = RDMA, 3 = TCP).
    pub trtype: u8,
    /// In-capsule data an I/O queue accepts, in bytes (IOCCSZ is
    /// (64 + this) / 16).
    pub in_capsule_data: u32,
    /// In-capsule data the admin queue accepts.
    pub admin_in_capsule_data: u32,
    /// Keyed SGL data blocks (host memory reached by RDMA).
    pub keyed_sgl: bool,
    /// Transport SGL data blocks (NVMe/TCP: the transport moves the data).
    pub transport_sgl: bool,
}

impl TransportCaps {
    /// SGLS of Identify Controller: SGLs supported, keyed SGLs when the
    /// transport has them, and offsets into the capsule (in-capsule data).
    pub fn sgls(&self) -> u32 {
        1 | if self.keyed_sgl { 1 << 2 } else { 0 } | (1 << 20)
    }

    /// In-capsule data a queue accepts.
    pub fn in_capsule_limit(&self, qid: u16) -> u32 {
        if qid == 0 {
            self.admin_in_capsule_data.max(self.in_capsule_data)
        } else {
            self.in_capsule_data
        }
    }
}

/// Where a command's data is, from its SGL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMap {
    /// The command transfers no data.
    None,
    /// Host-to-controller data in the capsule, at this offset.
    InCapsule { offset: u64 },
    /// The transport moves the data (NVMe/TCP R2T/H2CData, C2HData).
    Transport,
    /// Host memory at `addr`, reached with `key`; `invalidate` asks the
    /// target to invalidate the key with its response (RDMA).
    Keyed {
        addr: u64,
        key: u32,
        invalidate: bool,
    },
}

/// An admitted command: what moves, which way, how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub cmd: Command,
    pub dir: DataDir,
    /// Bytes the SGL describes (0 when nothing moves).
    pub len: u32,
    pub map: DataMap,
}

impl Queue {
    /// Admits a command off the wire: SGL use (PSDT), data direction, the
    /// SGL descriptor against what the transport can map, and the transfer
    /// against MDTS. On `Err` the transport completes the command with that
    /// status through [`Queue::reject`] (which accounts for the SQ head).
    pub fn admit(&self, cmd: &Command) -> Result<Request, Status> {
        // Fabrics requires SGLs (PSDT 01b or 10b).
        if cmd.psdt() == 0 || cmd.psdt() == 3 {
            return Err(Status::INVALID_FIELD.dnr());
        }
        let dir = cmd.data_dir();
        let sgl = cmd.sgl();
        let caps = self.caps();
        let map = match dir {
            DataDir::None => {
                return Ok(Request {
                    cmd: *cmd,
                    dir,
                    len: 0,
                    map: DataMap::None,
                })
            }
            DataDir::Both => return Err(Status::INVALID_OPCODE.dnr()),
            _ => match sgl.id {
                sgl_id::DATA_BLOCK_OFFSET if dir == DataDir::HostToCtrl => DataMap::InCapsule {
                    offset: sgl.address,
                },
                sgl_id::TRANSPORT_DATA_BLOCK if caps.transport_sgl => DataMap::Transport,
                sgl_id::KEYED_DATA_BLOCK | sgl_id::KEYED_DATA_BLOCK_INV if caps.keyed_sgl => {
                    DataMap::Keyed {
                        addr: sgl.address,
                        key: sgl.key,
                        invalidate: sgl.id == sgl_id::KEYED_DATA_BLOCK_INV,
                    }
                }
                _ => return Err(Status::SGL_TYPE_INVALID.dnr()),
            },
        };
        let in_capsule = matches!(map, DataMap::InCapsule { .. });
        if in_capsule && sgl.length > caps.in_capsule_limit(self.qid()) {
            return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        if !in_capsule && sgl.length > self.max_transfer() {
            return Err(Status::INVALID_FIELD.dnr());
        }
        Ok(Request {
            cmd: *cmd,
            dir,
            len: sgl.length,
            map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::nvme::{io_op, Sgl};
    use crate::subsystem::Target;
    use std::sync::Arc;

    fn queue(keyed: bool) -> Queue {
        let cfg = Config::embedded_default();
        let t = Arc::new(Target::new(&cfg).unwrap());
        let caps = TransportCaps {
            trtype: if keyed { 1 } else { 3 },
            in_capsule_data: 4096,
            admin_in_capsule_data: 8192,
            keyed_sgl: keyed,
            transport_sgl: !keyed,
        };
        Queue::new(
            t,
            crate::fabrics::Origin::local("127.0.0.1:4420".parse().unwrap()),
            caps,
            crate::buf::Buffers::new(),
        )
    }

    fn cmd(opcode: u8, id: u8, len: u32) -> Command {
        Command {
            opcode,
            flags: 0x40,
            dptr: Sgl {
                address: 0x1000,
                length: len,
                key: 0xAABBCCDD,
                id,
            }
            .to_bytes(),
            ..Default::default()
        }
    }

    #[test]
    fn each_transport_admits_only_the_sgls_it_maps() {
        let tcp = queue(false);
        let rdma = queue(true);
        let read_t = cmd(io_op::READ, sgl_id::TRANSPORT_DATA_BLOCK, 4096);
        let read_k = cmd(io_op::READ, sgl_id::KEYED_DATA_BLOCK_INV, 4096);
        assert_eq!(tcp.admit(&read_t).unwrap().map, DataMap::Transport);
        assert_eq!(
            tcp.admit(&read_k).unwrap_err(),
            Status::SGL_TYPE_INVALID.dnr()
        );
        assert_eq!(
            rdma.admit(&read_k).unwrap().map,
            DataMap::Keyed {
                addr: 0x1000,
                key: 0xAABBCCDD,
                invalidate: true
            }
        );
        assert_eq!(
            rdma.admit(&read_t).unwrap_err(),
            Status::SGL_TYPE_INVALID.dnr()
        );
        // In-capsule data: writes only, within the in-capsule size.
        let w = cmd(io_op::WRITE, sgl_id::DATA_BLOCK_OFFSET, 4096);
        assert_eq!(
            rdma.admit(&w).unwrap().map,
            DataMap::InCapsule { offset: 0x1000 }
        );
        // (An unconnected queue is queue 0: the admin queue's 8 KiB apply.)
        let big = cmd(io_op::WRITE, sgl_id::DATA_BLOCK_OFFSET, 8192 + 16);
        assert_eq!(
            rdma.admit(&big).unwrap_err(),
            Status::DATA_SGL_LENGTH_INVALID.dnr()
        );
        let r = cmd(io_op::READ, sgl_id::DATA_BLOCK_OFFSET, 512);
        assert_eq!(rdma.admit(&r).unwrap_err(), Status::SGL_TYPE_INVALID.dnr());
    }

    #[test]
    fn admission_checks_psdt_direction_and_mdts() {
        let q = queue(true);
        let mut prp = cmd(io_op::READ, sgl_id::KEYED_DATA_BLOCK, 4096);
        prp.flags = 0;
        assert_eq!(q.admit(&prp).unwrap_err(), Status::INVALID_FIELD.dnr());
        let over = cmd(
            io_op::READ,
            sgl_id::KEYED_DATA_BLOCK,
            q.max_transfer() + 512,
        );
        assert_eq!(q.admit(&over).unwrap_err(), Status::INVALID_FIELD.dnr());
        let at = cmd(io_op::READ, sgl_id::KEYED_DATA_BLOCK, q.max_transfer());
        assert_eq!(q.admit(&at).unwrap().len, q.max_transfer());
        // Bidirectional opcodes (low two bits 11b) are not supported.
        let both = cmd(0x83, sgl_id::KEYED_DATA_BLOCK, 512);
        assert_eq!(q.admit(&both).unwrap_err(), Status::INVALID_OPCODE.dnr());
        // No data: the SGL is not looked at.
        let flush = cmd(io_op::FLUSH, 0xFF, 0);
        assert_eq!(q.admit(&flush).unwrap().map, DataMap::None);
    }

    #[test]
    fn sgls_and_in_capsule_size_come_from_the_transport() {
        assert_eq!(queue(true).caps().sgls(), 1 | (1 << 2) | (1 << 20));
        assert_eq!(queue(false).caps().sgls(), 1 | (1 << 20));
        assert_eq!(queue(false).caps().in_capsule_limit(0), 8192);
        assert_eq!(queue(false).caps().in_capsule_limit(1), 4096);
    }
}
