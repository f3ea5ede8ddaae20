//! NVMe spec types: submission and completion queue entries, status codes,
//! opcodes, identify and log page structures. Plain data, no I/O.

pub mod identify;
pub mod log;
pub mod status;

pub use status::Status;

/// Little-endian field readers over a byte slice that never panic: a short
/// slice reads as zeros past its end.
pub fn le16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    copy_avail(&mut a, b, off);
    u16::from_le_bytes(a)
}
/// See [`le16`].
pub fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    copy_avail(&mut a, b, off);
    u32::from_le_bytes(a)
}
/// See [`le16`].
pub fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    copy_avail(&mut a, b, off);
    u64::from_le_bytes(a)
}
fn copy_avail(dst: &mut [u8], src: &[u8], off: usize) {
    if off < src.len() {
        let n = dst.len().min(src.len() - off);
        dst[..n].copy_from_slice(&src[off..off + n]);
    }
}
/// Writes `v` little-endian at `off`; the buffer must be large enough (our own
/// fixed-size structures only).
pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
/// See [`put16`].
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
/// See [`put16`].
pub fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
/// Copies an ASCII string into a fixed field padded with `pad` (spaces for
/// identify strings, NUL for NQNs), truncating if too long.
pub fn put_str(b: &mut [u8], off: usize, len: usize, s: &str, pad: u8) {
    let field = &mut b[off..off + len];
    field.fill(pad);
    let n = s.len().min(len);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}
/// Reads a NUL- or space-terminated ASCII field.
pub fn get_str(b: &[u8], off: usize, len: usize) -> String {
    let end = (off + len).min(b.len());
    if off >= end {
        return String::new();
    }
    let f = &b[off..end];
    let n = f.iter().position(|&c| c == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..n]).trim_end().to_string()
}

/// Admin command opcodes.
pub mod admin_op {
    pub const DELETE_IO_SQ: u8 = 0x00;
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const DELETE_IO_CQ: u8 = 0x04;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0A;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    pub const KEEP_ALIVE: u8 = 0x18;
    pub const FABRICS: u8 = 0x7F;
}

/// NVM command set I/O opcodes.
pub mod io_op {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const COMPARE: u8 = 0x05;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    pub const VERIFY: u8 = 0x0C;
    pub const COPY: u8 = 0x19;
    pub const FABRICS: u8 = 0x7F;
}

/// Fabrics command types (FCTYPE, byte 4 of a fabrics command).
pub mod fctype {
    pub const PROPERTY_SET: u8 = 0x00;
    pub const CONNECT: u8 = 0x01;
    pub const PROPERTY_GET: u8 = 0x04;
    pub const AUTH_SEND: u8 = 0x05;
    pub const AUTH_RECV: u8 = 0x06;
    pub const DISCONNECT: u8 = 0x08;
}

/// Controller property offsets (fabrics Property Get/Set).
pub mod prop {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1C;
    pub const NSSR: u32 = 0x20;
}

/// Direction of a command's data transfer, from the opcode's low two bits
/// (and for fabrics commands, from FCTYPE's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    None,
    HostToCtrl,
    CtrlToHost,
    Both,
}

impl DataDir {
    pub fn from_bits(b: u8) -> DataDir {
        match b & 3 {
            0 => DataDir::None,
            1 => DataDir::HostToCtrl,
            2 => DataDir::CtrlToHost,
            _ => DataDir::Both,
        }
    }
}

/// A 64-byte submission queue entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Command {
    pub opcode: u8,
    /// Byte 1: FUSE in bits 1:0, PSDT in bits 7:6.
    pub flags: u8,
    pub cid: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub mptr: u64,
    /// Data pointer: for fabrics always one SGL descriptor.
    pub dptr: [u8; 16],
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

/// Fused operation bits of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fuse {
    None,
    First,
    Second,
    Reserved,
}

impl Command {
    pub const SIZE: usize = 64;

    pub fn parse(b: &[u8; 64]) -> Command {
        let mut dptr = [0u8; 16];
        dptr.copy_from_slice(&b[24..40]);
        Command {
            opcode: b[0],
            flags: b[1],
            cid: le16(b, 2),
            nsid: le32(b, 4),
            cdw2: le32(b, 8),
            cdw3: le32(b, 12),
            mptr: le64(b, 16),
            dptr,
            cdw10: le32(b, 40),
            cdw11: le32(b, 44),
            cdw12: le32(b, 48),
            cdw13: le32(b, 52),
            cdw14: le32(b, 56),
            cdw15: le32(b, 60),
        }
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = self.opcode;
        b[1] = self.flags;
        put16(&mut b, 2, self.cid);
        put32(&mut b, 4, self.nsid);
        put32(&mut b, 8, self.cdw2);
        put32(&mut b, 12, self.cdw3);
        put64(&mut b, 16, self.mptr);
        b[24..40].copy_from_slice(&self.dptr);
        put32(&mut b, 40, self.cdw10);
        put32(&mut b, 44, self.cdw11);
        put32(&mut b, 48, self.cdw12);
        put32(&mut b, 52, self.cdw13);
        put32(&mut b, 56, self.cdw14);
        put32(&mut b, 60, self.cdw15);
        b
    }

    pub fn fuse(&self) -> Fuse {
        match self.flags & 3 {
            0 => Fuse::None,
            1 => Fuse::First,
            2 => Fuse::Second,
            _ => Fuse::Reserved,
        }
    }

    /// PSDT: 0 = PRP, 1 = SGL (metadata buffer), 2 = SGL (metadata segment).
    pub fn psdt(&self) -> u8 {
        self.flags >> 6
    }

    /// Fabrics command type (byte 4), meaningful when opcode is 0x7F.
    pub fn fctype(&self) -> u8 {
        self.nsid as u8
    }

    pub fn is_fabrics(&self) -> bool {
        self.opcode == admin_op::FABRICS
    }

    pub fn data_dir(&self) -> DataDir {
        if self.is_fabrics() {
            DataDir::from_bits(self.fctype())
        } else {
            DataDir::from_bits(self.opcode)
        }
    }

    /// The data SGL descriptor.
    pub fn sgl(&self) -> Sgl {
        Sgl::parse(&self.dptr)
    }

    /// Starting LBA of a read/write-style command (CDW10-11).
    pub fn slba(&self) -> u64 {
        (self.cdw10 as u64) | ((self.cdw11 as u64) << 32)
    }

    /// Number of logical blocks, one-based (CDW12 bits 15:0 are zero-based).
    pub fn nlb(&self) -> u32 {
        (self.cdw12 & 0xFFFF) + 1
    }
}

/// SGL descriptor identifier values used by NVMe over Fabrics.
pub mod sgl_id {
    /// Data Block, subtype Offset: data is in the capsule.
    pub const DATA_BLOCK_OFFSET: u8 = 0x01;
    /// Transport SGL Data Block, transport specific subtype A (NVMe/TCP).
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5A;
    /// Keyed SGL data block (RDMA), address subtype.
    pub const KEYED_DATA_BLOCK: u8 = 0x40;
    /// Keyed SGL data block with invalidate.
    pub const KEYED_DATA_BLOCK_INV: u8 = 0x4F;
}

/// One SGL descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sgl {
    pub address: u64,
    /// Bytes 8-11, or for a keyed data block its 24-bit length (bytes 8-10).
    pub length: u32,
    /// A keyed data block's key (bytes 11-14); 0 for other descriptors.
    pub key: u32,
    /// Byte 15: descriptor type in bits 7:4, subtype in bits 3:0.
    pub id: u8,
}

impl Sgl {
    /// Descriptor type 4: Keyed SGL Data Block (host memory, RDMA).
    pub fn is_keyed(&self) -> bool {
        self.id >> 4 == 4
    }

    pub fn parse(b: &[u8; 16]) -> Sgl {
        let id = b[15];
        if id >> 4 == 4 {
            Sgl {
                address: le64(b, 0),
                length: le32(b, 8) & 0xFF_FFFF,
                key: le32(b, 11),
                id,
            }
        } else {
            Sgl {
                address: le64(b, 0),
                length: le32(b, 8),
                key: 0,
                id,
            }
        }
    }
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        put64(&mut b, 0, self.address);
        if self.is_keyed() {
            put32(&mut b, 11, self.key);
            b[8..11].copy_from_slice(&self.length.to_le_bytes()[..3]);
        } else {
            put32(&mut b, 8, self.length);
        }
        b[15] = self.id;
        b
    }
}

/// A 16-byte completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Completion {
    pub dw0: u32,
    pub dw1: u32,
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    /// Status field without the phase bit: SC in bits 7:0, SCT in 10:8,
    /// CRD in 12:11, More in 13, DNR in 14 (i.e. the CQE's bits 15:1).
    pub status: Status,
}

impl Completion {
    pub const SIZE: usize = 16;

    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        put32(&mut b, 0, self.dw0);
        put32(&mut b, 4, self.dw1);
        put16(&mut b, 8, self.sqhd);
        put16(&mut b, 10, self.sqid);
        put16(&mut b, 12, self.cid);
        put16(&mut b, 14, self.status.0 << 1);
        b
    }

    pub fn parse(b: &[u8; 16]) -> Completion {
        Completion {
            dw0: le32(b, 0),
            dw1: le32(b, 4),
            sqhd: le16(b, 8),
            sqid: le16(b, 10),
            cid: le16(b, 12),
            status: Status(le16(b, 14) >> 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trip_and_offsets() {
        let c = Command {
            opcode: 0x02,
            flags: 0x41,
            cid: 0x1234,
            nsid: 7,
            cdw10: 0x1111_2222,
            cdw11: 0x3,
            cdw12: 7,
            dptr: Sgl {
                key: 0,
                address: 0,
                length: 4096,
                id: sgl_id::TRANSPORT_DATA_BLOCK,
            }
            .to_bytes(),
            ..Default::default()
        };
        let b = c.to_bytes();
        assert_eq!(b[0], 0x02);
        assert_eq!(&b[2..4], &[0x34, 0x12]);
        assert_eq!(b[4], 7);
        assert_eq!(b[39], 0x5A);
        assert_eq!(le32(&b, 32), 4096);
        assert_eq!(Command::parse(&b), c);
        assert_eq!(c.slba(), 0x3_1111_2222);
        assert_eq!(c.nlb(), 8);
        assert_eq!(c.fuse(), Fuse::First);
        assert_eq!(c.psdt(), 1);
        assert_eq!(c.data_dir(), DataDir::CtrlToHost);
    }

    #[test]
    fn fabrics_direction_comes_from_fctype() {
        let mut c = Command {
            opcode: 0x7F,
            ..Default::default()
        };
        c.nsid = fctype::CONNECT as u32;
        assert_eq!(c.data_dir(), DataDir::HostToCtrl);
        c.nsid = fctype::PROPERTY_GET as u32;
        assert_eq!(c.data_dir(), DataDir::None);
    }

    #[test]
    fn completion_status_has_phase_bit_clear() {
        let c = Completion {
            cid: 9,
            sqhd: 3,
            status: Status::INVALID_FIELD.dnr(),
            ..Default::default()
        };
        let b = c.to_bytes();
        assert_eq!(le16(&b, 14), (0x02 << 1) | (1 << 15));
        assert_eq!(Completion::parse(&b), c);
    }

    #[test]
    fn readers_never_panic_on_short_input() {
        assert_eq!(le32(&[1, 2], 0), 0x0201);
        assert_eq!(le64(&[], 10), 0);
        assert_eq!(get_str(b"ab\0cd", 0, 5), "ab");
        assert_eq!(get_str(b"ab  ", 0, 10), "ab");
    }
}
