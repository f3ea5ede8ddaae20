//! The 64-byte submission queue entry, builders for the commands this library
//! issues, and completion queue entry parsing.
//!
//! Layouts: NVMe Base Specification 2.0 (common command format, admin and
//! NVM command set commands) and NVMe over Fabrics (Fabrics commands, whose
//! FCTYPE byte sits where the NSID field starts).

use crate::{Error, Result};

// Admin opcodes.
pub const ADMIN_GET_LOG_PAGE: u8 = 0x02;
pub const ADMIN_IDENTIFY: u8 = 0x06;
pub const ADMIN_ABORT: u8 = 0x08;
pub const ADMIN_SET_FEATURES: u8 = 0x09;
pub const ADMIN_GET_FEATURES: u8 = 0x0A;
pub const ADMIN_ASYNC_EVENT_REQUEST: u8 = 0x0C;
pub const ADMIN_KEEP_ALIVE: u8 = 0x18;
/// Fabrics command opcode (admin and I/O queues).
pub const FABRICS: u8 = 0x7F;

// Fabrics command types.
pub const FCTYPE_PROPERTY_SET: u8 = 0x00;
pub const FCTYPE_CONNECT: u8 = 0x01;
pub const FCTYPE_PROPERTY_GET: u8 = 0x04;
pub const FCTYPE_DISCONNECT: u8 = 0x08;

// NVM command set opcodes.
pub const NVM_FLUSH: u8 = 0x00;
pub const NVM_WRITE: u8 = 0x01;
pub const NVM_READ: u8 = 0x02;
pub const NVM_COMPARE: u8 = 0x05;
pub const NVM_WRITE_ZEROES: u8 = 0x08;
pub const NVM_DSM: u8 = 0x09;
pub const NVM_VERIFY: u8 = 0x0C;
pub const NVM_COPY: u8 = 0x19;

// Identify CNS values.
pub const CNS_NAMESPACE: u8 = 0x00;
pub const CNS_CONTROLLER: u8 = 0x01;
pub const CNS_ACTIVE_NS_LIST: u8 = 0x02;
pub const CNS_NS_DESCRIPTORS: u8 = 0x03;

// Log page identifiers.
pub const LID_ERROR: u8 = 0x01;
pub const LID_SMART: u8 = 0x02;
pub const LID_FW_SLOT: u8 = 0x03;
pub const LID_CHANGED_NS: u8 = 0x04;
pub const LID_CMD_EFFECTS: u8 = 0x05;
pub const LID_ANA: u8 = 0x0C;
pub const LID_DISCOVERY: u8 = 0x70;

// Feature identifiers.
pub const FID_ARBITRATION: u8 = 0x01;
pub const FID_VOLATILE_WRITE_CACHE: u8 = 0x06;
pub const FID_NUMBER_OF_QUEUES: u8 = 0x07;
pub const FID_ASYNC_EVENT_CONFIG: u8 = 0x0B;
pub const FID_KEEP_ALIVE_TIMER: u8 = 0x0F;

/// CDW0 FLAGS: PSDT = 01b, SGLs for data.
pub const PSDT_SGL: u8 = 0x40;
/// CDW0 FLAGS: fused operation, first command.
pub const FUSE_FIRST: u8 = 0x01;
/// CDW0 FLAGS: fused operation, second command.
pub const FUSE_SECOND: u8 = 0x02;

/// SGL identifier: Data Block descriptor, Offset subtype (in-capsule data).
pub const SGL_DATA_BLOCK_OFFSET: u8 = 0x01;
/// SGL identifier: Transport SGL Data Block, transport specific subtype
/// (data moved by C2HData / R2T+H2CData).
pub const SGL_TRANSPORT_DATA_BLOCK: u8 = 0x5A;

// Controller properties.
pub const PROP_CAP: u32 = 0x00;
pub const PROP_VS: u32 = 0x08;
pub const PROP_CC: u32 = 0x14;
pub const PROP_CSTS: u32 = 0x1C;

/// Connect CATTR bit: disable SQ flow control.
pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 0x04;

/// A 16-byte SGL descriptor: address, length, identifier (type << 4 | subtype).
pub fn sgl_descriptor(addr: u64, len: u32, id: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[15] = id;
    d
}

/// A submission queue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub opcode: u8,
    /// FUSE in bits 1:0, PSDT in bits 7:6.
    pub flags: u8,
    /// Filled by [`crate::Queue::submit`].
    pub cid: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub mptr: u64,
    /// Filled by [`crate::Queue::submit`] with an SGL descriptor.
    pub dptr: [u8; 16],
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Command {
    /// A command with the given opcode and PSDT set to SGL (required on fabrics).
    pub fn new(opcode: u8) -> Self {
        Command {
            opcode,
            flags: PSDT_SGL,
            ..Default::default()
        }
    }

    /// Serialize to the 64-byte SQE.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.cid.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[8..12].copy_from_slice(&self.cdw2.to_le_bytes());
        b[12..16].copy_from_slice(&self.cdw3.to_le_bytes());
        b[16..24].copy_from_slice(&self.mptr.to_le_bytes());
        b[24..40].copy_from_slice(&self.dptr);
        for (i, v) in [
            self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        ]
        .iter()
        .enumerate()
        {
            b[40 + 4 * i..44 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Parse a 64-byte SQE.
    pub fn from_bytes(b: &[u8; 64]) -> Self {
        let mut dptr = [0u8; 16];
        dptr.copy_from_slice(&b[24..40]);
        Command {
            opcode: b[0],
            flags: b[1],
            cid: u16::from_le_bytes([b[2], b[3]]),
            nsid: rd32(b, 4),
            cdw2: rd32(b, 8),
            cdw3: rd32(b, 12),
            mptr: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            dptr,
            cdw10: rd32(b, 40),
            cdw11: rd32(b, 44),
            cdw12: rd32(b, 48),
            cdw13: rd32(b, 52),
            cdw14: rd32(b, 56),
            cdw15: rd32(b, 60),
        }
    }

    /// A Fabrics command; FCTYPE occupies byte 4 (the low byte of NSID).
    pub fn fabrics(fctype: u8) -> Self {
        Command {
            nsid: fctype as u32,
            ..Command::new(FABRICS)
        }
    }

    /// FCTYPE of a Fabrics command.
    pub fn fctype(&self) -> u8 {
        self.nsid as u8
    }

    /// Fabrics Connect. `sqsize` is 0's based; `kato` in milliseconds.
    pub fn connect(qid: u16, sqsize: u16, cattr: u8, kato: u32) -> Self {
        Command {
            cdw10: (qid as u32) << 16, // RECFMT 0 in bits 15:0
            cdw11: sqsize as u32 | (cattr as u32) << 16,
            cdw12: kato,
            ..Command::fabrics(FCTYPE_CONNECT)
        }
    }

    /// Fabrics Property Get; `size8` selects an 8-byte property.
    pub fn property_get(offset: u32, size8: bool) -> Self {
        Command {
            cdw10: size8 as u32,
            cdw11: offset,
            ..Command::fabrics(FCTYPE_PROPERTY_GET)
        }
    }

    /// Fabrics Property Set.
    pub fn property_set(offset: u32, size8: bool, value: u64) -> Self {
        Command {
            cdw10: size8 as u32,
            cdw11: offset,
            cdw12: value as u32,
            cdw13: (value >> 32) as u32,
            ..Command::fabrics(FCTYPE_PROPERTY_SET)
        }
    }

    /// Identify (4096 bytes of data).
    pub fn identify(cns: u8, nsid: u32, cntid: u16, csi: u8) -> Self {
        Command {
            nsid,
            cdw10: cns as u32 | (cntid as u32) << 16,
            cdw11: (csi as u32) << 24,
            ..Command::new(ADMIN_IDENTIFY)
        }
    }

    /// Get Log Page for `len` bytes (a non-zero multiple of 4) at byte `offset`.
    pub fn get_log_page(lid: u8, nsid: u32, len: u32, offset: u64, lsp: u8, rae: bool) -> Self {
        let numd = (len / 4).saturating_sub(1);
        Command {
            nsid,
            cdw10: lid as u32
                | ((lsp & 0x7f) as u32) << 8
                | (rae as u32) << 15
                | (numd & 0xffff) << 16,
            cdw11: numd >> 16,
            cdw12: offset as u32,
            cdw13: (offset >> 32) as u32,
            ..Command::new(ADMIN_GET_LOG_PAGE)
        }
    }

    /// Get Features; `sel` 0 = current, 1 = default, 2 = saved, 3 = capabilities.
    pub fn get_features(fid: u8, sel: u8, nsid: u32, cdw11: u32) -> Self {
        Command {
            nsid,
            cdw10: fid as u32 | ((sel & 7) as u32) << 8,
            cdw11,
            ..Command::new(ADMIN_GET_FEATURES)
        }
    }

    /// Set Features.
    pub fn set_features(fid: u8, nsid: u32, cdw11: u32, cdw12: u32, save: bool) -> Self {
        Command {
            nsid,
            cdw10: fid as u32 | (save as u32) << 31,
            cdw11,
            cdw12,
            ..Command::new(ADMIN_SET_FEATURES)
        }
    }

    /// Set Features - Number of Queues (both counts 0's based).
    pub fn set_number_of_queues(nsqr: u16, ncqr: u16) -> Self {
        Command::set_features(
            FID_NUMBER_OF_QUEUES,
            0,
            nsqr as u32 | (ncqr as u32) << 16,
            0,
            false,
        )
    }

    pub fn keep_alive() -> Self {
        Command::new(ADMIN_KEEP_ALIVE)
    }

    pub fn async_event_request() -> Self {
        Command::new(ADMIN_ASYNC_EVENT_REQUEST)
    }

    pub fn abort(sqid: u16, cid: u16) -> Self {
        Command {
            cdw10: sqid as u32 | (cid as u32) << 16,
            ..Command::new(ADMIN_ABORT)
        }
    }

    fn lba_cmd(opcode: u8, nsid: u32, slba: u64, nlb0: u16) -> Self {
        Command {
            nsid,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: nlb0 as u32,
            ..Command::new(opcode)
        }
    }

    /// Read `nlb0 + 1` blocks.
    pub fn read(nsid: u32, slba: u64, nlb0: u16) -> Self {
        Command::lba_cmd(NVM_READ, nsid, slba, nlb0)
    }

    /// Write `nlb0 + 1` blocks.
    pub fn write(nsid: u32, slba: u64, nlb0: u16) -> Self {
        Command::lba_cmd(NVM_WRITE, nsid, slba, nlb0)
    }

    /// Compare `nlb0 + 1` blocks against the data sent.
    pub fn compare(nsid: u32, slba: u64, nlb0: u16) -> Self {
        Command::lba_cmd(NVM_COMPARE, nsid, slba, nlb0)
    }

    /// Verify `nlb0 + 1` blocks (no data transfer).
    pub fn verify(nsid: u32, slba: u64, nlb0: u16) -> Self {
        Command::lba_cmd(NVM_VERIFY, nsid, slba, nlb0)
    }

    /// Write Zeroes; `deac` asks the controller to deallocate.
    pub fn write_zeroes(nsid: u32, slba: u64, nlb0: u16, deac: bool) -> Self {
        let mut c = Command::lba_cmd(NVM_WRITE_ZEROES, nsid, slba, nlb0);
        c.cdw12 |= (deac as u32) << 25;
        c
    }

    pub fn flush(nsid: u32) -> Self {
        Command {
            nsid,
            ..Command::new(NVM_FLUSH)
        }
    }

    /// Dataset Management with `nr0 + 1` ranges; `ad` = attribute deallocate.
    pub fn dsm(nsid: u32, nr0: u8, ad: bool) -> Self {
        Command {
            nsid,
            cdw10: nr0 as u32,
            cdw11: (ad as u32) << 2,
            ..Command::new(NVM_DSM)
        }
    }

    /// Copy with `nr0 + 1` source ranges in descriptor format `desfmt`.
    pub fn copy(nsid: u32, sdlba: u64, nr0: u8, desfmt: u8) -> Self {
        Command {
            nsid,
            cdw10: sdlba as u32,
            cdw11: (sdlba >> 32) as u32,
            cdw12: nr0 as u32 | ((desfmt & 0xf) as u32) << 8,
            ..Command::new(NVM_COPY)
        }
    }
}

/// DSM range list (16 bytes per range: context attributes, length in blocks
/// (1-based), starting LBA).
pub fn dsm_ranges(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ranges.len() * 16);
    for &(slba, nlb) in ranges {
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&nlb.to_le_bytes());
        v.extend_from_slice(&slba.to_le_bytes());
    }
    v
}

/// Copy source range entries, descriptor format 0 (32 bytes each): SLBA at 8,
/// NLB (0's based) at 16, the rest zero. `ranges` are `(slba, nlb0)`.
pub fn copy_ranges_format0(ranges: &[(u64, u16)]) -> Vec<u8> {
    let mut v = vec![0u8; ranges.len() * 32];
    for (i, &(slba, nlb0)) in ranges.iter().enumerate() {
        let e = &mut v[i * 32..i * 32 + 32];
        e[8..16].copy_from_slice(&slba.to_le_bytes());
        e[16..18].copy_from_slice(&nlb0.to_le_bytes());
    }
    v
}

/// A completion queue entry as it travels in a CapsuleResp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cqe {
    pub dw0: u32,
    pub dw1: u32,
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    /// The raw 16-bit status halfword (phase tag in bit 0).
    pub status_raw: u16,
}

impl Cqe {
    pub fn parse(b: &[u8; 16]) -> Self {
        Cqe {
            dw0: rd32(b, 0),
            dw1: rd32(b, 4),
            sqhd: u16::from_le_bytes([b[8], b[9]]),
            sqid: u16::from_le_bytes([b[10], b[11]]),
            cid: u16::from_le_bytes([b[12], b[13]]),
            status_raw: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status_raw.to_le_bytes());
        b
    }

    /// Build a raw status halfword from `SCT << 8 | SC` and the DNR bit.
    pub fn make_status(status: u16, dnr: bool) -> u16 {
        let sc = status & 0xff;
        let sct = (status >> 8) & 0x7;
        (sc << 1) | (sct << 9) | ((dnr as u16) << 15)
    }

    /// `SCT << 8 | SC`.
    pub fn status(&self) -> u16 {
        let sc = (self.status_raw >> 1) & 0xff;
        let sct = (self.status_raw >> 9) & 0x7;
        sct << 8 | sc
    }

    pub fn phase(&self) -> bool {
        self.status_raw & 1 != 0
    }
    pub fn crd(&self) -> u8 {
        ((self.status_raw >> 12) & 0x3) as u8
    }
    pub fn more(&self) -> bool {
        self.status_raw & (1 << 14) != 0
    }
    pub fn dnr(&self) -> bool {
        self.status_raw & (1 << 15) != 0
    }
}

/// A completed command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub cid: u16,
    /// `SCT << 8 | SC`.
    pub status: u16,
    pub dnr: bool,
    pub more: bool,
    /// Command Retry Delay index.
    pub crd: u8,
    pub dw0: u32,
    pub dw1: u32,
    pub sqhd: u16,
    pub sqid: u16,
    /// Data received from the controller (read-direction commands).
    pub data: Vec<u8>,
    /// Completed by a C2HData PDU with the SUCCESS flag (no CapsuleResp):
    /// dw0/dw1/sqhd are then 0.
    pub c2h_success: bool,
}

impl Response {
    pub(crate) fn from_cqe(cqe: &Cqe, data: Vec<u8>) -> Self {
        Response {
            cid: cqe.cid,
            status: cqe.status(),
            dnr: cqe.dnr(),
            more: cqe.more(),
            crd: cqe.crd(),
            dw0: cqe.dw0,
            dw1: cqe.dw1,
            sqhd: cqe.sqhd,
            sqid: cqe.sqid,
            data,
            c2h_success: false,
        }
    }

    pub fn is_success(&self) -> bool {
        self.status == 0
    }
    /// Status Code Type.
    pub fn sct(&self) -> u8 {
        (self.status >> 8) as u8
    }
    /// Status Code.
    pub fn sc(&self) -> u8 {
        self.status as u8
    }

    /// `Ok(self)` if the status is success, otherwise [`Error::Status`].
    pub fn check(self) -> Result<Response> {
        if self.status == 0 {
            Ok(self)
        } else {
            Err(Error::Status {
                status: self.status,
                dnr: self.dnr,
                dw0: self.dw0,
            })
        }
    }
}

// Common status values (SCT << 8 | SC).
pub const SC_SUCCESS: u16 = 0x0000;
pub const SC_INVALID_OPCODE: u16 = 0x0001;
pub const SC_INVALID_FIELD: u16 = 0x0002;
pub const SC_CID_CONFLICT: u16 = 0x0003;
pub const SC_DATA_XFER_ERROR: u16 = 0x0004;
pub const SC_INTERNAL: u16 = 0x0006;
pub const SC_ABORT_REQUESTED: u16 = 0x0007;
pub const SC_FUSED_FAIL: u16 = 0x0009;
pub const SC_FUSED_MISSING: u16 = 0x000A;
pub const SC_INVALID_NS: u16 = 0x000B;
pub const SC_CMD_SEQ_ERROR: u16 = 0x000C;
pub const SC_SGL_INVALID_DATA_LEN: u16 = 0x000F;
pub const SC_SGL_INVALID_TYPE: u16 = 0x0011;
pub const SC_LBA_RANGE: u16 = 0x0080;
pub const SC_CAP_EXCEEDED: u16 = 0x0081;
pub const SC_NS_NOT_READY: u16 = 0x0082;
pub const SC_RESERVATION_CONFLICT: u16 = 0x0083;
pub const SC_INVALID_LOG_PAGE: u16 = 0x0109;
pub const SC_CONNECT_FORMAT: u16 = 0x0180;
pub const SC_CONNECT_CTRL_BUSY: u16 = 0x0181;
pub const SC_CONNECT_INVALID_PARAM: u16 = 0x0182;
pub const SC_CONNECT_RESTART_DISC: u16 = 0x0183;
pub const SC_CONNECT_INVALID_HOST: u16 = 0x0184;
pub const SC_COMPARE_FAILED: u16 = 0x0285;
pub const SC_ACCESS_DENIED: u16 = 0x0286;

/// Short description of a status value (`SCT << 8 | SC`).
pub fn status_str(status: u16) -> &'static str {
    match status {
        0x0000 => "Successful Completion",
        0x0001 => "Invalid Command Opcode",
        0x0002 => "Invalid Field in Command",
        0x0003 => "Command ID Conflict",
        0x0004 => "Data Transfer Error",
        0x0005 => "Commands Aborted due to Power Loss Notification",
        0x0006 => "Internal Error",
        0x0007 => "Command Abort Requested",
        0x0008 => "Command Aborted due to SQ Deletion",
        0x0009 => "Command Aborted due to Failed Fused Command",
        0x000A => "Command Aborted due to Missing Fused Command",
        0x000B => "Invalid Namespace or Format",
        0x000C => "Command Sequence Error",
        0x000D => "Invalid SGL Segment Descriptor",
        0x000E => "Invalid Number of SGL Descriptors",
        0x000F => "Data SGL Length Invalid",
        0x0010 => "Metadata SGL Length Invalid",
        0x0011 => "SGL Descriptor Type Invalid",
        0x0016 => "SGL Offset Invalid",
        0x0018 => "Host Identifier Inconsistent Format",
        0x0019 => "Keep Alive Timer Expired",
        0x001A => "Keep Alive Timeout Invalid",
        0x0020 => "Namespace is Write Protected",
        0x0021 => "Command Interrupted",
        0x0022 => "Transient Transport Error",
        0x0080 => "LBA Out of Range",
        0x0081 => "Capacity Exceeded",
        0x0082 => "Namespace Not Ready",
        0x0083 => "Reservation Conflict",
        0x0084 => "Format In Progress",
        0x0101 => "Invalid Queue Identifier",
        0x0102 => "Invalid Queue Size",
        0x0103 => "Abort Command Limit Exceeded",
        0x0105 => "Asynchronous Event Request Limit Exceeded",
        0x0109 => "Invalid Log Page",
        0x010D => "Feature Identifier Not Saveable",
        0x010E => "Feature Not Changeable",
        0x010F => "Feature Not Namespace Specific",
        0x0180 => "Connect Incompatible Format / Conflicting Attributes",
        0x0181 => "Connect Controller Busy / Invalid Protection Information",
        0x0182 => "Connect Invalid Parameters / Attempted Write to Read Only Range",
        0x0183 => "Connect Restart Discovery",
        0x0184 => "Connect Invalid Host",
        0x0280 => "Write Fault",
        0x0281 => "Unrecovered Read Error",
        0x0282 => "End-to-end Guard Check Error",
        0x0283 => "End-to-end Application Tag Check Error",
        0x0284 => "End-to-end Reference Tag Check Error",
        0x0285 => "Compare Failure",
        0x0286 => "Access Denied",
        0x0287 => "Deallocated or Unwritten Logical Block",
        0x0300 => "Internal Path Error",
        0x0301 => "Asymmetric Access Persistent Loss",
        0x0302 => "Asymmetric Access Inaccessible",
        0x0303 => "Asymmetric Access Transition",
        0x0360 => "Controller Pathing Error",
        0x0370 => "Host Pathing Error",
        0x0371 => "Command Aborted By Host",
        _ => "unknown status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_bytes_field_offsets() {
        let c = Command {
            opcode: 0xAB,
            flags: 0x41,
            cid: 0x1234,
            nsid: 0x0506_0708,
            cdw2: 0x1111_1111,
            cdw3: 0x2222_2222,
            mptr: 0x3333_3333_4444_4444,
            dptr: [0xDD; 16],
            cdw10: 0xA0A0_A0A0,
            cdw11: 0xA1A1_A1A1,
            cdw12: 0xA2A2_A2A2,
            cdw13: 0xA3A3_A3A3,
            cdw14: 0xA4A4_A4A4,
            cdw15: 0xA5A5_A5A5,
        };
        let b = c.to_bytes();
        assert_eq!(b[0], 0xAB);
        assert_eq!(b[1], 0x41);
        assert_eq!(&b[2..4], &[0x34, 0x12]);
        assert_eq!(&b[4..8], &[0x08, 0x07, 0x06, 0x05]);
        assert_eq!(&b[8..12], &[0x11; 4]);
        assert_eq!(&b[12..16], &[0x22; 4]);
        assert_eq!(
            &b[16..24],
            &[0x44, 0x44, 0x44, 0x44, 0x33, 0x33, 0x33, 0x33]
        );
        assert_eq!(&b[24..40], &[0xDD; 16]);
        assert_eq!(&b[40..44], &[0xA0; 4]);
        assert_eq!(&b[44..48], &[0xA1; 4]);
        assert_eq!(&b[48..52], &[0xA2; 4]);
        assert_eq!(&b[52..56], &[0xA3; 4]);
        assert_eq!(&b[56..60], &[0xA4; 4]);
        assert_eq!(&b[60..64], &[0xA5; 4]);
        assert_eq!(Command::from_bytes(&b), c);
    }

    #[test]
    fn connect_layout() {
        let b = Command::connect(3, 127, CATTR_DISABLE_SQ_FLOW_CONTROL, 5000).to_bytes();
        assert_eq!(b[0], 0x7F);
        assert_eq!(b[1], PSDT_SGL);
        assert_eq!(b[4], FCTYPE_CONNECT);
        assert!(b[5..24].iter().all(|&x| x == 0));
        assert_eq!(&b[40..42], &[0, 0]); // RECFMT
        assert_eq!(&b[42..44], &3u16.to_le_bytes()); // QID
        assert_eq!(&b[44..46], &127u16.to_le_bytes()); // SQSIZE
        assert_eq!(b[46], 0x04); // CATTR
        assert_eq!(b[47], 0);
        assert_eq!(&b[48..52], &5000u32.to_le_bytes()); // KATO
    }

    #[test]
    fn property_layout() {
        let b = Command::property_get(PROP_CAP, true).to_bytes();
        assert_eq!(b[4], FCTYPE_PROPERTY_GET);
        assert_eq!(b[40], 1); // ATTRIB size 8
        assert_eq!(&b[44..48], &0u32.to_le_bytes());
        let b = Command::property_set(PROP_CC, false, 0x0046_0001).to_bytes();
        assert_eq!(b[4], FCTYPE_PROPERTY_SET);
        assert_eq!(b[40], 0);
        assert_eq!(&b[44..48], &0x14u32.to_le_bytes());
        assert_eq!(&b[48..56], &0x0046_0001u64.to_le_bytes());
    }

    #[test]
    fn admin_builders() {
        let c = Command::identify(CNS_NS_DESCRIPTORS, 5, 0x22, 2);
        assert_eq!(c.opcode, 0x06);
        assert_eq!(c.nsid, 5);
        assert_eq!(c.cdw10, 0x0022_0003);
        assert_eq!(c.cdw11, 0x0200_0000);

        // 0x12345 * 4 bytes => NUMD = 0x12344 (0's based) split in NUMDL/NUMDU.
        let c = Command::get_log_page(0x70, 0, 0x12345 * 4, 0x1_0000_0200, 3, true);
        assert_eq!(c.cdw10, 0x70 | 3 << 8 | 1 << 15 | 0x2344 << 16);
        assert_eq!(c.cdw11, 0x1);
        assert_eq!(c.cdw12, 0x200);
        assert_eq!(c.cdw13, 0x1);

        let c = Command::set_number_of_queues(3, 3);
        assert_eq!(c.opcode, 0x09);
        assert_eq!(c.cdw10, 7);
        assert_eq!(c.cdw11, 0x0003_0003);
        let c = Command::set_features(6, 0, 1, 0, true);
        assert_eq!(c.cdw10, 0x8000_0006);
        let c = Command::get_features(7, 3, 0, 0);
        assert_eq!(c.cdw10, 0x307);
        let c = Command::abort(1, 0x55);
        assert_eq!(c.opcode, 0x08);
        assert_eq!(c.cdw10, 0x0055_0001);
        assert_eq!(Command::keep_alive().opcode, 0x18);
        assert_eq!(Command::async_event_request().opcode, 0x0C);
    }

    #[test]
    fn io_builders() {
        let c = Command::read(1, 0x1_2345_6789, 7);
        assert_eq!(c.opcode, 0x02);
        assert_eq!(c.nsid, 1);
        assert_eq!(c.cdw10, 0x2345_6789);
        assert_eq!(c.cdw11, 1);
        assert_eq!(c.cdw12, 7);
        assert_eq!(Command::write(1, 0, 0).opcode, 0x01);
        assert_eq!(Command::compare(1, 0, 0).opcode, 0x05);
        assert_eq!(Command::verify(1, 0, 0).opcode, 0x0C);
        let c = Command::write_zeroes(1, 8, 3, true);
        assert_eq!(c.opcode, 0x08);
        assert_eq!(c.cdw12, 3 | 1 << 25);
        let c = Command::dsm(2, 1, true);
        assert_eq!((c.opcode, c.cdw10, c.cdw11), (0x09, 1, 4));
        let c = Command::copy(1, 100, 2, 0);
        assert_eq!((c.opcode, c.cdw10, c.cdw11, c.cdw12), (0x19, 100, 0, 2));
        assert_eq!(Command::flush(9).nsid, 9);
    }

    #[test]
    fn range_layouts() {
        let d = dsm_ranges(&[(0x10, 8), (0x1_0000_0000, 1)]);
        assert_eq!(d.len(), 32);
        assert_eq!(&d[0..4], &[0; 4]);
        assert_eq!(&d[4..8], &8u32.to_le_bytes());
        assert_eq!(&d[8..16], &0x10u64.to_le_bytes());
        assert_eq!(&d[24..32], &0x1_0000_0000u64.to_le_bytes());

        let c = copy_ranges_format0(&[(5, 3), (100, 0)]);
        assert_eq!(c.len(), 64);
        assert_eq!(&c[0..8], &[0; 8]);
        assert_eq!(&c[8..16], &5u64.to_le_bytes());
        assert_eq!(&c[16..18], &3u16.to_le_bytes());
        assert!(c[18..32].iter().all(|&x| x == 0));
        assert_eq!(&c[40..48], &100u64.to_le_bytes());
    }

    #[test]
    fn sgl_layout() {
        let d = sgl_descriptor(0x10, 0x2000, SGL_TRANSPORT_DATA_BLOCK);
        assert_eq!(&d[0..8], &0x10u64.to_le_bytes());
        assert_eq!(&d[8..12], &0x2000u32.to_le_bytes());
        assert_eq!(&d[12..15], &[0, 0, 0]);
        assert_eq!(d[15], 0x5A);
    }

    #[test]
    fn cqe_status_bits() {
        let raw = Cqe::make_status(SC_COMPARE_FAILED, true);
        let cqe = Cqe {
            dw0: 1,
            dw1: 2,
            sqhd: 3,
            sqid: 4,
            cid: 5,
            status_raw: raw | 1 << 14 | 2 << 12 | 1,
        };
        let b = cqe.to_bytes();
        assert_eq!(&b[12..14], &5u16.to_le_bytes());
        let p = Cqe::parse(&b);
        assert_eq!(p, cqe);
        assert_eq!(p.status(), 0x0285);
        assert!(p.dnr() && p.more() && p.phase());
        assert_eq!(p.crd(), 2);
        let r = Response::from_cqe(&p, vec![]);
        assert_eq!((r.sct(), r.sc()), (2, 0x85));
        match r.check() {
            Err(Error::Status { status, dnr, dw0 }) => {
                assert_eq!((status, dnr, dw0), (0x0285, true, 1))
            }
            other => panic!("{other:?}"),
        }
        // Status field position: SC in bits 8:1, SCT in 11:9 of the halfword.
        assert_eq!(Cqe::make_status(0x0182, false), (0x82 << 1) | (1 << 9));
    }
}
