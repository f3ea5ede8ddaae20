//! Log pages (Get Log Page) built from plain parameters.

use super::{put16, put32, put64, put_str};

/// Log page identifiers.
pub mod lid {
    pub const ERROR: u8 = 0x01;
    pub const SMART: u8 = 0x02;
    pub const FW_SLOT: u8 = 0x03;
    pub const CHANGED_NS: u8 = 0x04;
    pub const CMD_EFFECTS: u8 = 0x05;
    pub const DISCOVERY: u8 = 0x70;
}

pub const ERROR_ENTRY_LEN: usize = 64;

/// One Error Information log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorEntry {
    pub error_count: u64,
    pub sqid: u16,
    pub cid: u16,
    /// Status field as in the CQE bits 15:1 (we store it shifted into place).
    pub status: u16,
    pub param_location: u16,
    pub lba: u64,
    pub nsid: u32,
}

/// Error Information log: newest first, as many entries as asked for.
pub fn error_log(entries: &[ErrorEntry]) -> Vec<u8> {
    let mut b = vec![0u8; entries.len() * ERROR_ENTRY_LEN];
    for (i, e) in entries.iter().enumerate() {
        let o = i * ERROR_ENTRY_LEN;
        put64(&mut b, o, e.error_count);
        put16(&mut b, o + 8, e.sqid);
        put16(&mut b, o + 10, e.cid);
        put16(&mut b, o + 12, e.status << 1);
        put16(&mut b, o + 14, e.param_location);
        put64(&mut b, o + 16, e.lba);
        put32(&mut b, o + 24, e.nsid);
        b[o + 29] = 3; // transport type: TCP
    }
    b
}

/// Counters reported in the SMART / Health Information log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_cmds: u64,
    pub write_cmds: u64,
    pub busy_minutes: u64,
    pub power_on_hours: u64,
    pub power_cycles: u64,
    pub media_errors: u64,
    pub error_entries: u64,
}

/// SMART / Health Information log (512 bytes).
pub fn smart(h: &Health) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    put16(&mut b, 1, 273 + 35); // composite temperature: 35 C
    b[3] = 100; // available spare
    b[4] = 10; // spare threshold
               // Data units are thousands of 512-byte units, rounded up.
    let units = |bytes: u64| (bytes / 512).div_ceil(1000);
    put64(&mut b, 32, units(h.bytes_read));
    put64(&mut b, 48, units(h.bytes_written));
    put64(&mut b, 64, h.read_cmds);
    put64(&mut b, 80, h.write_cmds);
    put64(&mut b, 96, h.busy_minutes);
    put64(&mut b, 112, h.power_cycles);
    put64(&mut b, 128, h.power_on_hours);
    put64(&mut b, 160, h.media_errors);
    put64(&mut b, 176, h.error_entries);
    b
}

/// Firmware Slot Information log (512 bytes).
pub fn fw_slot(firmware: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 1; // AFI: slot 1 active
    put_str(&mut b, 8, 8, firmware, b' ');
    b
}

/// Commands Supported and Effects log (4096 bytes).
pub fn cmd_effects(admin: &[u8], io_read: &[u8], io_write: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    for &op in admin {
        put32(&mut b, op as usize * 4, 1);
    }
    for &op in io_read {
        put32(&mut b, 1024 + op as usize * 4, 1);
    }
    for &op in io_write {
        // CSUPP and LBCC (logical block content change).
        put32(&mut b, 1024 + op as usize * 4, 1 | (1 << 1));
    }
    b
}

pub const DISCOVERY_HEADER_LEN: usize = 1024;
pub const DISCOVERY_ENTRY_LEN: usize = 1024;

/// Discovery log entry subsystem types.
pub mod subtype {
    pub const REFERRAL: u8 = 1;
    pub const NVME: u8 = 2;
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// One discovery log page entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// 1 = RDMA, 3 = TCP.
    pub trtype: u8,
    /// 1 = IPv4, 2 = IPv6.
    pub adrfam: u8,
    pub subtype: u8,
    pub portid: u16,
    pub asqsz: u16,
    pub eflags: u16,
    pub trsvcid: String,
    pub subnqn: String,
    pub traddr: String,
    /// Transport specific address subtype (TSAS), its first bytes.
    pub tsas: [u8; 8],
}

/// Discovery log page: header plus entries.
pub fn discovery(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISCOVERY_HEADER_LEN + entries.len() * DISCOVERY_ENTRY_LEN];
    put64(&mut b, 0, genctr);
    put64(&mut b, 8, entries.len() as u64);
    put16(&mut b, 16, 0);
    for (i, e) in entries.iter().enumerate() {
        let o = DISCOVERY_HEADER_LEN + i * DISCOVERY_ENTRY_LEN;
        b[o] = e.trtype;
        b[o + 1] = e.adrfam;
        b[o + 2] = e.subtype;
        b[o + 3] = 2; // TREQ: secure channel not required
        put16(&mut b, o + 4, e.portid);
        put16(&mut b, o + 6, 0xFFFF); // dynamic controller
        put16(&mut b, o + 8, e.asqsz);
        put16(&mut b, o + 10, e.eflags);
        put_str(&mut b, o + 32, 32, &e.trsvcid, 0);
        put_str(&mut b, o + 256, 256, &e.subnqn, 0);
        put_str(&mut b, o + 512, 256, &e.traddr, 0);
        b[o + 768..o + 776].copy_from_slice(&e.tsas);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::{get_str, le16, le64};

    #[test]
    fn smart_counts_data_units_rounded_up() {
        let b = smart(&Health {
            bytes_read: 512 * 1001,
            bytes_written: 512,
            read_cmds: 3,
            write_cmds: 4,
            ..Default::default()
        });
        assert_eq!(le64(&b, 32), 2);
        assert_eq!(le64(&b, 48), 1);
        assert_eq!((le64(&b, 64), le64(&b, 80)), (3, 4));
    }

    #[test]
    fn discovery_layout() {
        let b = discovery(
            5,
            &[DiscoveryEntry {
                trtype: 3,
                adrfam: 1,
                subtype: subtype::NVME,
                portid: 1,
                asqsz: 32,
                eflags: 0,
                trsvcid: "4420".into(),
                subnqn: "nqn.a:b".into(),
                traddr: "127.0.0.1".into(),
                tsas: [1, 2, 1, 0, 0, 0, 0, 0],
            }],
        );
        assert_eq!(b.len(), 2048);
        assert_eq!((le64(&b, 0), le64(&b, 8)), (5, 1));
        assert_eq!((b[1024], b[1025], b[1026]), (3, 1, 2));
        assert_eq!(le16(&b, 1030), 0xFFFF);
        assert_eq!(get_str(&b, 1024 + 32, 32), "4420");
        assert_eq!(get_str(&b, 1024 + 256, 256), "nqn.a:b");
        assert_eq!(get_str(&b, 1024 + 512, 256), "127.0.0.1");
        assert_eq!(&b[1024 + 768..1024 + 772], &[1, 2, 1, 0]);
    }
}
