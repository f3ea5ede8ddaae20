//! Identify data structures (NVMe base spec 2.0, Identify command, and the
//! NVMe over Fabrics additions), built from plain parameters.

use super::{put16, put32, put64, put_str};

pub const IDENTIFY_LEN: usize = 4096;

/// Identify CNS values.
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    pub const NS_DESCRIPTORS: u8 = 0x03;
    pub const CSI_NAMESPACE: u8 = 0x05;
    pub const CSI_CONTROLLER: u8 = 0x06;
    pub const CSI_ACTIVE_NS_LIST: u8 = 0x07;
    pub const CS_INDEPENDENT_NS: u8 = 0x08;
    pub const COMMAND_SET_LIST: u8 = 0x1C;
}

/// Controller types (CNTRLTYPE).
pub const CNTRLTYPE_IO: u8 = 1;
pub const CNTRLTYPE_DISCOVERY: u8 = 2;

/// ONCS bits.
pub mod oncs {
    pub const COMPARE: u16 = 1 << 0;
    pub const DSM: u16 = 1 << 2;
    pub const WRITE_ZEROES: u16 = 1 << 3;
    pub const VERIFY: u16 = 1 << 7;
    pub const COPY: u16 = 1 << 8;
}

/// OAES bit: Namespace Attribute Notices.
pub const OAES_NS_ATTR: u32 = 1 << 8;
/// OAES bit: Discovery Log Page Change Notices (discovery controllers).
pub const OAES_DISC_CHANGE: u32 = 1 << 31;
/// LPA bits: commands supported and effects log, extended data for Get Log Page.
pub const LPA_EFFECTS: u8 = 1 << 1;
pub const LPA_EXTENDED: u8 = 1 << 2;

/// What goes into an Identify Controller structure.
#[derive(Debug, Clone)]
pub struct ControllerInfo<'a> {
    pub serial: &'a str,
    pub model: &'a str,
    pub firmware: &'a str,
    pub cntlid: u16,
    pub version: u32,
    pub mdts: u8,
    pub cntrltype: u8,
    pub subnqn: &'a str,
    pub nn: u32,
    pub oncs: u16,
    pub fuses: u16,
    pub vwc: bool,
    pub ocfs: u16,
    pub aerl: u8,
    pub elpe: u8,
    pub oaes: u32,
    pub lpa: u8,
    pub maxcmd: u16,
    /// Keep-alive granularity in 100 ms units.
    pub kas: u16,
    /// In-capsule data size in bytes (IOCCSZ = (64 + this) / 16).
    pub in_capsule: u32,
    /// SGL support (SGLS), as the transport says.
    pub sgls: u32,
}

/// Builds the 4096-byte Identify Controller data structure.
pub fn controller(c: &ControllerInfo) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    put_str(&mut b, 4, 20, c.serial, b' ');
    put_str(&mut b, 24, 40, c.model, b' ');
    put_str(&mut b, 64, 8, c.firmware, b' ');
    b[72] = 6; // RAB: 64 commands
    b[76] = 1 << 1; // CMIC: may have two or more controllers (several hosts)
    b[77] = c.mdts;
    put16(&mut b, 78, c.cntlid);
    put32(&mut b, 80, c.version);
    put32(&mut b, 92, c.oaes);
    b[111] = c.cntrltype;
    // OACS 0: no security, format, firmware or namespace management.
    b[258] = 3; // ACL: 4 concurrent Aborts (zero-based)
    b[259] = c.aerl;
    b[260] = (1 << 1) | 1; // FRMW: 1 slot, slot 1 read-only
    b[261] = c.lpa;
    b[262] = c.elpe;
    put16(&mut b, 266, 358); // WCTEMP 85 C
    put16(&mut b, 268, 373); // CCTEMP 100 C
    put16(&mut b, 320, c.kas);
    b[512] = 0x66; // SQES: 64 bytes required and max
    b[513] = 0x44; // CQES: 16 bytes
    put16(&mut b, 514, c.maxcmd);
    put32(&mut b, 516, c.nn);
    put16(&mut b, 520, c.oncs);
    put16(&mut b, 522, c.fuses);
    b[524] = 0; // FNA
    b[525] = if c.vwc { 1 | (3 << 1) } else { 3 << 1 }; // VWC present; flush with NSID FFFFFFFFh supported
    put16(&mut b, 534, c.ocfs);
    put32(&mut b, 536, c.sgls);
    put_str(&mut b, 768, 256, c.subnqn, 0);
    // Fabrics fields.
    put32(&mut b, 1792, (64 + c.in_capsule) / 16); // IOCCSZ
    put32(&mut b, 1796, 1); // IORCSZ
    put16(&mut b, 1800, 0); // ICDOFF
    b[1802] = 0; // FCATT: dynamic controller model
    b[1803] = 1; // MSDBD
                 // Power state 0: 0 W max power is allowed (not reported).
    b
}

/// What goes into an Identify Namespace structure.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    pub nsze: u64,
    pub lba_shift: u8,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    /// Copy limits: max single source range length, max copy length (both in
    /// blocks), max source range count (zero-based).
    pub mssrl: u16,
    pub mcl: u32,
    pub msrc: u8,
}

/// Builds the 4096-byte Identify Namespace (NVM command set) structure.
pub fn namespace(n: &NamespaceInfo) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    put64(&mut b, 0, n.nsze);
    put64(&mut b, 8, n.nsze);
    put64(&mut b, 16, n.nsze);
    b[24] = 0; // NSFEAT
    b[25] = 0; // NLBAF: one format
    b[26] = 0; // FLBAS: format 0
    b[30] = 1; // NMIC: may be attached to several controllers
    b[33] = 1 | (1 << 3); // DLFEAT: deallocated blocks read zeros; Write Zeroes may deallocate
    put16(&mut b, 74, n.mssrl);
    put32(&mut b, 76, n.mcl);
    b[80] = n.msrc;
    b[104..120].copy_from_slice(&n.nguid);
    b[120..128].copy_from_slice(&n.eui64);
    // LBA format 0: no metadata, LBADS, best performance.
    b[130] = n.lba_shift;
    b
}

/// Namespace identification descriptor types.
pub mod nidt {
    pub const EUI64: u8 = 1;
    pub const NGUID: u8 = 2;
    pub const UUID: u8 = 3;
    pub const CSI: u8 = 4;
}

/// Builds the Namespace Identification Descriptor list (CNS 03h).
pub fn ns_descriptors(eui64: &[u8; 8], nguid: &[u8; 16], uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let mut off = 0;
    let mut put = |t: u8, v: &[u8]| {
        b[off] = t;
        b[off + 1] = v.len() as u8;
        b[off + 4..off + 4 + v.len()].copy_from_slice(v);
        off += 4 + v.len();
    };
    put(nidt::EUI64, eui64);
    put(nidt::NGUID, nguid);
    put(nidt::UUID, uuid);
    put(nidt::CSI, &[0]);
    b
}

/// Builds an active namespace ID list of the IDs greater than `after`.
pub fn active_ns_list(nsids: impl Iterator<Item = u32>, after: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    for (i, id) in nsids
        .filter(|&id| id > after)
        .take(IDENTIFY_LEN / 4)
        .enumerate()
    {
        put32(&mut b, i * 4, id);
    }
    b
}

/// I/O Command Set Independent Identify Namespace (CNS 08h).
pub fn cs_independent_namespace() -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    b[1] = 1; // NMIC
    b[13] = 1; // NSTAT: namespace ready
    b
}

/// Identify I/O Command Set data structure (CNS 1Ch): only the NVM set.
pub fn command_set_list() -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    put64(&mut b, 0, 1);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::{get_str, le16, le32, le64};

    #[test]
    fn controller_fields_at_spec_offsets() {
        let b = controller(&ControllerInfo {
            serial: "SN1",
            model: "model",
            firmware: "0.1.0",
            cntlid: 7,
            version: 0x0001_0400,
            mdts: 5,
            cntrltype: CNTRLTYPE_IO,
            subnqn: "nqn.x:y",
            nn: 1024,
            oncs: oncs::COMPARE | oncs::DSM,
            fuses: 1,
            vwc: false,
            ocfs: 1,
            aerl: 3,
            elpe: 63,
            oaes: OAES_NS_ATTR,
            lpa: LPA_EFFECTS | LPA_EXTENDED,
            maxcmd: 128,
            kas: 10,
            in_capsule: 8192,
            sgls: 1 | (1 << 20),
        });
        assert_eq!(&b[4..24], b"SN1                 ");
        assert_eq!(get_str(&b, 24, 40), "model");
        assert_eq!(b[77], 5);
        assert_eq!(le16(&b, 78), 7);
        assert_eq!(le32(&b, 80), 0x10400);
        assert_eq!(b[111], 1);
        assert_eq!(le32(&b, 516), 1024);
        assert_eq!(le16(&b, 520), 5);
        assert_eq!(get_str(&b, 768, 256), "nqn.x:y");
        assert_eq!(le32(&b, 1792), (64 + 8192) / 16);
        assert_eq!(le32(&b, 1796), 1);
        assert_ne!(le32(&b, 536) & 1, 0);
        assert_eq!(le16(&b, 320), 10);
    }

    #[test]
    fn namespace_and_descriptors() {
        let b = namespace(&NamespaceInfo {
            nsze: 2048,
            lba_shift: 12,
            nguid: [2; 16],
            eui64: [1; 8],
            mssrl: 32,
            mcl: 32,
            msrc: 7,
        });
        assert_eq!(le64(&b, 0), 2048);
        assert_eq!(b[130], 12);
        assert_eq!(&b[104..120], &[2; 16]);
        let d = ns_descriptors(&[1; 8], &[2; 16], &[3; 16]);
        assert_eq!((d[0], d[1]), (1, 8));
        assert_eq!((d[12], d[13]), (2, 16));
        assert_eq!((d[32], d[33]), (3, 16));
        assert_eq!(&d[36..52], &[3; 16]);
        assert_eq!((d[52], d[53], d[56]), (4, 1, 0));
        let l = active_ns_list([1u32, 3, 9].into_iter(), 1);
        assert_eq!((le32(&l, 0), le32(&l, 4), le32(&l, 8)), (3, 9, 0));
    }
}
