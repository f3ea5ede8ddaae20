//! Parsers for Identify data structures and the Discovery log page.
//!
//! Offsets follow the NVMe Base Specification 2.0 (Identify Controller,
//! Identify Namespace for the NVM command set, Namespace Identification
//! Descriptor list, Active Namespace ID list) and the NVMe over Fabrics
//! specification (Discovery Log Page).

use crate::{Error, Result};

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn u128_at(b: &[u8], o: usize) -> u128 {
    u128::from_le_bytes(b[o..o + 16].try_into().expect("16 bytes"))
}
fn arr<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    b[o..o + N].try_into().expect("N bytes")
}

/// A fixed-width ASCII field: up to the first NUL, trailing spaces removed.
pub fn ascii_field(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end])
        .trim_end_matches(' ')
        .to_string()
}

/// Copy `b` into a zero-filled buffer of at least `n` bytes.
fn padded(b: &[u8], n: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    if v.len() < n {
        v.resize(n, 0);
    }
    v
}

/// One power state descriptor (32 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerState {
    pub mp: u16,
    pub flags: u8,
    pub enlat: u32,
    pub exlat: u32,
    pub rrt: u8,
    pub rrl: u8,
    pub rwt: u8,
    pub rwl: u8,
    pub idlp: u16,
    pub ips: u8,
    pub actp: u16,
    pub apws: u8,
}

impl PowerState {
    fn parse(b: &[u8]) -> Self {
        PowerState {
            mp: u16_at(b, 0),
            flags: b[3],
            enlat: u32_at(b, 4),
            exlat: u32_at(b, 8),
            rrt: b[12] & 0x1f,
            rrl: b[13] & 0x1f,
            rwt: b[14] & 0x1f,
            rwl: b[15] & 0x1f,
            idlp: u16_at(b, 16),
            ips: b[18],
            actp: u16_at(b, 20),
            apws: b[22],
        }
    }
}

/// Identify Controller data structure (CNS 01h).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifyController {
    pub vid: u16,
    pub ssvid: u16,
    pub sn: String,
    pub mn: String,
    pub fr: String,
    pub rab: u8,
    /// IEEE OUI, as stored (least significant byte first).
    pub ieee: [u8; 3],
    pub cmic: u8,
    pub mdts: u8,
    pub cntlid: u16,
    pub ver: u32,
    pub rtd3r: u32,
    pub rtd3e: u32,
    pub oaes: u32,
    pub ctratt: u32,
    pub rrls: u16,
    pub cntrltype: u8,
    pub fguid: [u8; 16],
    pub crdt1: u16,
    pub crdt2: u16,
    pub crdt3: u16,
    pub nvmsr: u8,
    pub vwci: u8,
    pub mec: u8,
    pub oacs: u16,
    pub acl: u8,
    pub aerl: u8,
    pub frmw: u8,
    pub lpa: u8,
    pub elpe: u8,
    pub npss: u8,
    pub avscc: u8,
    pub apsta: u8,
    pub wctemp: u16,
    pub cctemp: u16,
    pub mtfa: u16,
    pub hmpre: u32,
    pub hmmin: u32,
    pub tnvmcap: u128,
    pub unvmcap: u128,
    pub rpmbs: u32,
    pub edstt: u16,
    pub dsto: u8,
    pub fwug: u8,
    pub kas: u16,
    pub hctma: u16,
    pub mntmt: u16,
    pub mxtmt: u16,
    pub sanicap: u32,
    pub hmminds: u32,
    pub hmmaxd: u16,
    pub nsetidmax: u16,
    pub endgidmax: u16,
    pub anatt: u8,
    pub anacap: u8,
    pub anagrpmax: u32,
    pub nanagrpid: u32,
    pub pels: u32,
    pub domainid: u16,
    pub megcap: u128,
    pub sqes: u8,
    pub cqes: u8,
    pub maxcmd: u16,
    pub nn: u32,
    pub oncs: u16,
    pub fuses: u16,
    pub fna: u8,
    pub vwc: u8,
    pub awun: u16,
    pub awupf: u16,
    pub icsvscc: u8,
    pub nwpc: u8,
    pub acwu: u16,
    pub ocfs: u16,
    pub sgls: u32,
    pub mnan: u32,
    pub maxdna: u128,
    pub maxcna: u32,
    pub oaqd: u32,
    pub subnqn: String,
    pub ioccsz: u32,
    pub iorcsz: u32,
    pub icdoff: u16,
    pub fcatt: u8,
    pub msdbd: u8,
    pub ofcs: u16,
    pub dctype: u8,
    /// Power state descriptors 0..=npss.
    pub psd: Vec<PowerState>,
    /// The raw 4096 bytes (zero-filled if the input was shorter).
    pub raw: Vec<u8>,
}

impl IdentifyController {
    /// Parse an Identify Controller buffer; a short buffer is zero-filled.
    pub fn parse(data: &[u8]) -> IdentifyController {
        let b = padded(data, 4096);
        let npss = b[263];
        // NPSS is 0's based with at most 32 descriptors; clamp garbage.
        let psd = (0..=(npss as usize).min(31))
            .map(|i| PowerState::parse(&b[2048 + 32 * i..2048 + 32 * (i + 1)]))
            .collect();
        IdentifyController {
            vid: u16_at(&b, 0),
            ssvid: u16_at(&b, 2),
            sn: ascii_field(&b[4..24]),
            mn: ascii_field(&b[24..64]),
            fr: ascii_field(&b[64..72]),
            rab: b[72],
            ieee: arr(&b, 73),
            cmic: b[76],
            mdts: b[77],
            cntlid: u16_at(&b, 78),
            ver: u32_at(&b, 80),
            rtd3r: u32_at(&b, 84),
            rtd3e: u32_at(&b, 88),
            oaes: u32_at(&b, 92),
            ctratt: u32_at(&b, 96),
            rrls: u16_at(&b, 100),
            cntrltype: b[111],
            fguid: arr(&b, 112),
            crdt1: u16_at(&b, 128),
            crdt2: u16_at(&b, 130),
            crdt3: u16_at(&b, 132),
            nvmsr: b[253],
            vwci: b[254],
            mec: b[255],
            oacs: u16_at(&b, 256),
            acl: b[258],
            aerl: b[259],
            frmw: b[260],
            lpa: b[261],
            elpe: b[262],
            npss,
            avscc: b[264],
            apsta: b[265],
            wctemp: u16_at(&b, 266),
            cctemp: u16_at(&b, 268),
            mtfa: u16_at(&b, 270),
            hmpre: u32_at(&b, 272),
            hmmin: u32_at(&b, 276),
            tnvmcap: u128_at(&b, 280),
            unvmcap: u128_at(&b, 296),
            rpmbs: u32_at(&b, 312),
            edstt: u16_at(&b, 316),
            dsto: b[318],
            fwug: b[319],
            kas: u16_at(&b, 320),
            hctma: u16_at(&b, 322),
            mntmt: u16_at(&b, 324),
            mxtmt: u16_at(&b, 326),
            sanicap: u32_at(&b, 328),
            hmminds: u32_at(&b, 332),
            hmmaxd: u16_at(&b, 336),
            nsetidmax: u16_at(&b, 338),
            endgidmax: u16_at(&b, 340),
            anatt: b[342],
            anacap: b[343],
            anagrpmax: u32_at(&b, 344),
            nanagrpid: u32_at(&b, 348),
            pels: u32_at(&b, 352),
            domainid: u16_at(&b, 356),
            megcap: u128_at(&b, 368),
            sqes: b[512],
            cqes: b[513],
            maxcmd: u16_at(&b, 514),
            nn: u32_at(&b, 516),
            oncs: u16_at(&b, 520),
            fuses: u16_at(&b, 522),
            fna: b[524],
            vwc: b[525],
            awun: u16_at(&b, 526),
            awupf: u16_at(&b, 528),
            icsvscc: b[530],
            nwpc: b[531],
            acwu: u16_at(&b, 532),
            ocfs: u16_at(&b, 534),
            sgls: u32_at(&b, 536),
            mnan: u32_at(&b, 540),
            maxdna: u128_at(&b, 544),
            maxcna: u32_at(&b, 560),
            oaqd: u32_at(&b, 564),
            subnqn: ascii_field(&b[768..1024]),
            ioccsz: u32_at(&b, 1792),
            iorcsz: u32_at(&b, 1796),
            icdoff: u16_at(&b, 1800),
            fcatt: b[1802],
            msdbd: b[1803],
            ofcs: u16_at(&b, 1804),
            dctype: b[1806],
            psd,
            raw: b[..4096].to_vec(),
        }
    }

    /// Maximum in-capsule data for I/O commands in bytes (IOCCSZ * 16 - 64),
    /// or `None` if IOCCSZ is below the 64-byte SQE.
    pub fn in_capsule_data_size(&self) -> Option<u32> {
        (self.ioccsz >= 4).then(|| self.ioccsz.saturating_mul(16) - 64)
    }
}

/// An LBA format descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbaFormat {
    /// Metadata size in bytes.
    pub ms: u16,
    /// LBA data size as a power of two.
    pub lbads: u8,
    /// Relative performance (2 bits).
    pub rp: u8,
}

/// Identify Namespace data structure for the NVM command set (CNS 00h).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifyNamespace {
    pub nsze: u64,
    pub ncap: u64,
    pub nuse: u64,
    pub nsfeat: u8,
    /// Number of LBA formats, 0's based.
    pub nlbaf: u8,
    pub flbas: u8,
    pub mc: u8,
    pub dpc: u8,
    pub dps: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    pub dlfeat: u8,
    pub nawun: u16,
    pub nawupf: u16,
    pub nacwu: u16,
    pub nabsn: u16,
    pub nabo: u16,
    pub nabspf: u16,
    pub noiob: u16,
    pub nvmcap: u128,
    pub npwg: u16,
    pub npwa: u16,
    pub npdg: u16,
    pub npda: u16,
    pub nows: u16,
    pub mssrl: u16,
    pub mcl: u32,
    pub msrc: u8,
    pub kpios: u8,
    pub nulbaf: u8,
    pub kpiodaag: u32,
    pub anagrpid: u32,
    pub nsattr: u8,
    pub nvmsetid: u16,
    pub endgid: u16,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    /// LBA formats 0..=nlbaf+nulbaf (at most 64).
    pub lbaf: Vec<LbaFormat>,
    /// The raw 4096 bytes (zero-filled if the input was shorter).
    pub raw: Vec<u8>,
}

impl IdentifyNamespace {
    /// Parse an Identify Namespace buffer; a short buffer is zero-filled.
    pub fn parse(data: &[u8]) -> IdentifyNamespace {
        let b = padded(data, 4096);
        let nlbaf = b[25];
        let nulbaf = b[82];
        let count = (nlbaf as usize + nulbaf as usize + 1).min(64);
        let lbaf = (0..count)
            .map(|i| {
                let o = 128 + 4 * i;
                LbaFormat {
                    ms: u16_at(&b, o),
                    lbads: b[o + 2],
                    rp: b[o + 3] & 0x3,
                }
            })
            .collect();
        IdentifyNamespace {
            nsze: u64_at(&b, 0),
            ncap: u64_at(&b, 8),
            nuse: u64_at(&b, 16),
            nsfeat: b[24],
            nlbaf,
            flbas: b[26],
            mc: b[27],
            dpc: b[28],
            dps: b[29],
            nmic: b[30],
            rescap: b[31],
            fpi: b[32],
            dlfeat: b[33],
            nawun: u16_at(&b, 34),
            nawupf: u16_at(&b, 36),
            nacwu: u16_at(&b, 38),
            nabsn: u16_at(&b, 40),
            nabo: u16_at(&b, 42),
            nabspf: u16_at(&b, 44),
            noiob: u16_at(&b, 46),
            nvmcap: u128_at(&b, 48),
            npwg: u16_at(&b, 64),
            npwa: u16_at(&b, 66),
            npdg: u16_at(&b, 68),
            npda: u16_at(&b, 70),
            nows: u16_at(&b, 72),
            mssrl: u16_at(&b, 74),
            mcl: u32_at(&b, 76),
            msrc: b[80],
            kpios: b[81],
            nulbaf,
            kpiodaag: u32_at(&b, 84),
            anagrpid: u32_at(&b, 92),
            nsattr: b[99],
            nvmsetid: u16_at(&b, 100),
            endgid: u16_at(&b, 102),
            nguid: arr(&b, 104),
            eui64: arr(&b, 120),
            lbaf,
            raw: b[..4096].to_vec(),
        }
    }

    /// Index of the formatted LBA format (FLBAS bits 3:0, plus bits 6:5 as
    /// the upper bits when more than 16 formats exist).
    pub fn lba_format_index(&self) -> usize {
        let lo = (self.flbas & 0x0f) as usize;
        let hi = ((self.flbas >> 5) & 0x3) as usize;
        if self.nlbaf >= 16 {
            hi << 4 | lo
        } else {
            lo
        }
    }

    /// The formatted LBA format, if the index is within the list.
    pub fn lba_format(&self) -> Option<LbaFormat> {
        self.lbaf.get(self.lba_format_index()).copied()
    }

    /// Logical block size in bytes of the formatted LBA format (`None` if the
    /// format is missing or its LBADS is not a valid size, 9..=31).
    pub fn block_size(&self) -> Option<u32> {
        let f = self.lba_format()?;
        (9..32).contains(&f.lbads).then(|| 1u32 << f.lbads)
    }
}

/// A Namespace Identification Descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NsDescriptor {
    Eui64([u8; 8]),
    Nguid([u8; 16]),
    Uuid([u8; 16]),
    Csi(u8),
    Other { nidt: u8, data: Vec<u8> },
}

pub const NIDT_EUI64: u8 = 1;
pub const NIDT_NGUID: u8 = 2;
pub const NIDT_UUID: u8 = 3;
pub const NIDT_CSI: u8 = 4;

/// Parse a Namespace Identification Descriptor list (CNS 03h). Strict: a
/// descriptor with the wrong NIDL for its type, one running past the buffer,
/// non-zero reserved bytes or a repeated type are errors.
pub fn parse_ns_descriptors(b: &[u8]) -> Result<Vec<NsDescriptor>> {
    let mut out = Vec::new();
    let mut seen = [false; 256];
    let mut pos = 0;
    while pos + 4 <= b.len() {
        let nidt = b[pos];
        let nidl = b[pos + 1] as usize;
        if nidt == 0 && nidl == 0 {
            break;
        }
        let err = |m: String| {
            Err(Error::Protocol(format!(
                "NS descriptor at offset {pos}: {m}"
            )))
        };
        if nidt == 0 {
            return err(format!("NIDT 0 with NIDL {nidl}"));
        }
        if b[pos + 2] != 0 || b[pos + 3] != 0 {
            return err("reserved bytes 2..4 are not zero".into());
        }
        let want = match nidt {
            NIDT_EUI64 => Some(8),
            NIDT_NGUID | NIDT_UUID => Some(16),
            NIDT_CSI => Some(1),
            _ => None,
        };
        if let Some(w) = want {
            if nidl != w {
                return err(format!("NIDT {nidt} must have NIDL {w}, got {nidl}"));
            }
        }
        if nidl == 0 {
            return err(format!("NIDL 0 for NIDT {nidt}"));
        }
        let start = pos + 4;
        let end = start + nidl;
        if end > b.len() {
            return err(format!("NIDL {nidl} runs past the end of the list"));
        }
        if seen[nidt as usize] {
            return err(format!("NIDT {nidt} appears more than once"));
        }
        seen[nidt as usize] = true;
        let d = &b[start..end];
        out.push(match nidt {
            NIDT_EUI64 => NsDescriptor::Eui64(arr(d, 0)),
            NIDT_NGUID => NsDescriptor::Nguid(arr(d, 0)),
            NIDT_UUID => NsDescriptor::Uuid(arr(d, 0)),
            NIDT_CSI => NsDescriptor::Csi(d[0]),
            _ => NsDescriptor::Other {
                nidt,
                data: d.to_vec(),
            },
        });
        pos = end;
    }
    Ok(out)
}

/// Parse an Active Namespace ID list (CNS 02h): IDs up to the first zero.
/// Strict: IDs must be strictly increasing and every entry after the first
/// zero must be zero.
pub fn parse_ns_list(b: &[u8]) -> Result<Vec<u32>> {
    let mut out: Vec<u32> = Vec::new();
    let mut ended = false;
    for (i, c) in b.chunks_exact(4).enumerate() {
        let id = u32::from_le_bytes(c.try_into().expect("4 bytes"));
        if ended {
            if id != 0 {
                return Err(Error::Protocol(format!(
                    "active namespace list: non-zero NSID {id} at entry {i} after the terminating zero"
                )));
            }
            continue;
        }
        if id == 0 {
            ended = true;
            continue;
        }
        if let Some(&prev) = out.last() {
            if id <= prev {
                return Err(Error::Protocol(format!(
                    "active namespace list: NSID {id} at entry {i} is not greater than the previous {prev}"
                )));
            }
        }
        out.push(id);
    }
    Ok(out)
}

/// One Discovery Log Page Entry (1024 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryLogEntry {
    pub trtype: u8,
    pub adrfam: u8,
    pub subtype: u8,
    pub treq: u8,
    pub portid: u16,
    pub cntlid: u16,
    pub asqsz: u16,
    pub eflags: u16,
    pub trsvcid: String,
    pub subnqn: String,
    pub traddr: String,
    /// Transport Specific Address Subtype (256 bytes).
    pub tsas: Vec<u8>,
}

impl DiscoveryLogEntry {
    pub fn parse(b: &[u8]) -> DiscoveryLogEntry {
        let b = padded(b, 1024);
        DiscoveryLogEntry {
            trtype: b[0],
            adrfam: b[1],
            subtype: b[2],
            treq: b[3],
            portid: u16_at(&b, 4),
            cntlid: u16_at(&b, 6),
            asqsz: u16_at(&b, 8),
            eflags: u16_at(&b, 10),
            trsvcid: ascii_field(&b[32..64]),
            subnqn: ascii_field(&b[256..512]),
            traddr: ascii_field(&b[512..768]),
            tsas: b[768..1024].to_vec(),
        }
    }

    /// TCP security type (TSAS byte 0).
    pub fn sectype(&self) -> u8 {
        self.tsas.first().copied().unwrap_or(0)
    }
}

/// Discovery Log Page (log identifier 70h).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryLog {
    pub genctr: u64,
    pub numrec: u64,
    pub recfmt: u16,
    pub entries: Vec<DiscoveryLogEntry>,
}

/// Size of the Discovery log header and of each entry.
pub const DISCOVERY_HEADER_LEN: usize = 1024;
pub const DISCOVERY_ENTRY_LEN: usize = 1024;

impl DiscoveryLog {
    /// Parse the 1024-byte header only (`entries` left empty).
    pub fn parse_header(b: &[u8]) -> Result<DiscoveryLog> {
        if b.len() < 18 {
            return Err(Error::Protocol(format!(
                "discovery log: {} bytes is too short for the header",
                b.len()
            )));
        }
        Ok(DiscoveryLog {
            genctr: u64_at(b, 0),
            numrec: u64_at(b, 8),
            recfmt: u16_at(b, 16),
            entries: Vec::new(),
        })
    }

    /// Parse a whole Discovery log: the header and NUMREC entries, which must
    /// all be present in `b`.
    pub fn parse(b: &[u8]) -> Result<DiscoveryLog> {
        let mut log = DiscoveryLog::parse_header(b)?;
        let have = b.len().saturating_sub(DISCOVERY_HEADER_LEN) / DISCOVERY_ENTRY_LEN;
        if (have as u64) < log.numrec {
            return Err(Error::Protocol(format!(
                "discovery log: NUMREC {} but the data holds only {} entries ({} bytes)",
                log.numrec,
                have,
                b.len()
            )));
        }
        log.entries = (0..log.numrec as usize)
            .map(|i| {
                let o = DISCOVERY_HEADER_LEN + i * DISCOVERY_ENTRY_LEN;
                DiscoveryLogEntry::parse(&b[o..o + DISCOVERY_ENTRY_LEN])
            })
            .collect();
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut [u8], o: usize, v: &[u8]) {
        b[o..o + v.len()].copy_from_slice(v);
    }

    #[test]
    fn identify_controller_offsets() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, &0x1b36u16.to_le_bytes());
        put(&mut b, 2, &0x1af4u16.to_le_bytes());
        put(&mut b, 4, b"SERIAL01            ");
        put(&mut b, 24, b"Rust NVMe-oF target");
        put(&mut b, 64, b"0.1.0   ");
        b[72] = 6;
        put(&mut b, 73, &[0x11, 0x22, 0x33]);
        b[76] = 0x0b;
        b[77] = 5;
        put(&mut b, 78, &0x0042u16.to_le_bytes());
        put(&mut b, 80, &0x0002_0000u32.to_le_bytes());
        put(&mut b, 84, &1000u32.to_le_bytes());
        put(&mut b, 88, &2000u32.to_le_bytes());
        put(&mut b, 92, &0x0000_0900u32.to_le_bytes());
        put(&mut b, 96, &0x0000_0080u32.to_le_bytes());
        b[111] = 1;
        put(&mut b, 112, &[0xAB; 16]);
        put(&mut b, 256, &0x000au16.to_le_bytes());
        b[258] = 3;
        b[259] = 4;
        b[260] = 0x03;
        b[261] = 0x07;
        b[262] = 63;
        b[263] = 1; // npss: two power states
        put(&mut b, 320, &10u16.to_le_bytes()); // kas
        b[512] = 0x66;
        b[513] = 0x44;
        put(&mut b, 514, &128u16.to_le_bytes());
        put(&mut b, 516, &1024u32.to_le_bytes());
        put(&mut b, 520, &0x015du16.to_le_bytes());
        put(&mut b, 522, &1u16.to_le_bytes());
        b[524] = 0x04;
        b[525] = 0x07;
        put(&mut b, 526, &7u16.to_le_bytes());
        put(&mut b, 528, &3u16.to_le_bytes());
        put(&mut b, 534, &1u16.to_le_bytes()); // ocfs
        put(&mut b, 536, &0x0010_0005u32.to_le_bytes());
        put(&mut b, 768, b"nqn.2024-01.io.example:sub1");
        put(&mut b, 1792, &260u32.to_le_bytes());
        put(&mut b, 1796, &1u32.to_le_bytes());
        put(&mut b, 1800, &0u16.to_le_bytes());
        b[1802] = 0;
        b[1803] = 1;
        put(&mut b, 1804, &1u16.to_le_bytes());
        put(&mut b, 2048, &2500u16.to_le_bytes()); // psd0.mp
        put(&mut b, 2048 + 32 + 4, &77u32.to_le_bytes()); // psd1.enlat

        let c = IdentifyController::parse(&b);
        assert_eq!(c.vid, 0x1b36);
        assert_eq!(c.ssvid, 0x1af4);
        assert_eq!(c.sn, "SERIAL01");
        assert_eq!(c.mn, "Rust NVMe-oF target");
        assert_eq!(c.fr, "0.1.0");
        assert_eq!(c.rab, 6);
        assert_eq!(c.ieee, [0x11, 0x22, 0x33]);
        assert_eq!(c.cmic, 0x0b);
        assert_eq!(c.mdts, 5);
        assert_eq!(c.cntlid, 0x42);
        assert_eq!(c.ver, 0x0002_0000);
        assert_eq!((c.rtd3r, c.rtd3e), (1000, 2000));
        assert_eq!(c.oaes, 0x900);
        assert_eq!(c.ctratt, 0x80);
        assert_eq!(c.cntrltype, 1);
        assert_eq!(c.fguid, [0xAB; 16]);
        assert_eq!(c.oacs, 0x0a);
        assert_eq!((c.acl, c.aerl, c.frmw, c.lpa, c.elpe), (3, 4, 3, 7, 63));
        assert_eq!(c.npss, 1);
        assert_eq!(c.psd.len(), 2);
        assert_eq!(c.psd[0].mp, 2500);
        assert_eq!(c.psd[1].enlat, 77);
        assert_eq!(c.kas, 10);
        assert_eq!((c.sqes, c.cqes, c.maxcmd, c.nn), (0x66, 0x44, 128, 1024));
        assert_eq!((c.oncs, c.fuses, c.fna, c.vwc), (0x15d, 1, 4, 7));
        assert_eq!((c.awun, c.awupf, c.ocfs), (7, 3, 1));
        assert_eq!(c.sgls, 0x0010_0005);
        assert_eq!(c.subnqn, "nqn.2024-01.io.example:sub1");
        assert_eq!((c.ioccsz, c.iorcsz, c.icdoff), (260, 1, 0));
        assert_eq!((c.fcatt, c.msdbd, c.ofcs), (0, 1, 1));
        assert_eq!(c.in_capsule_data_size(), Some(260 * 16 - 64));
        assert_eq!(c.raw.len(), 4096);

        // Short input is zero-filled rather than panicking.
        let short = IdentifyController::parse(&b[..100]);
        assert_eq!(short.vid, 0x1b36);
        assert_eq!(short.nn, 0);
        assert_eq!(short.in_capsule_data_size(), None);

        // A garbage NPSS does not index past the power state table.
        let mut bad = b.clone();
        bad[263] = 255;
        assert_eq!(IdentifyController::parse(&bad).psd.len(), 32);
    }

    #[test]
    fn identify_namespace_offsets() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, &0x10_0000u64.to_le_bytes());
        put(&mut b, 8, &0x0f_0000u64.to_le_bytes());
        put(&mut b, 16, &0x1234u64.to_le_bytes());
        b[24] = 0x04; // nsfeat
        b[25] = 1; // nlbaf: two formats
        b[26] = 0x01; // flbas -> format 1
        b[30] = 1; // nmic
        b[33] = 0x09; // dlfeat
        put(&mut b, 74, &128u16.to_le_bytes()); // mssrl
        put(&mut b, 76, &1024u32.to_le_bytes()); // mcl
        b[80] = 7; // msrc
        put(&mut b, 92, &3u32.to_le_bytes()); // anagrpid
        put(&mut b, 104, &[0x5a; 16]);
        put(&mut b, 120, &[1, 2, 3, 4, 5, 6, 7, 8]);
        // lbaf0: 512 bytes, lbaf1: 4096 bytes + 8 bytes metadata, rp 2
        put(&mut b, 128, &[0, 0, 9, 0]);
        put(&mut b, 132, &[8, 0, 12, 0x02]);
        let n = IdentifyNamespace::parse(&b);
        assert_eq!((n.nsze, n.ncap, n.nuse), (0x10_0000, 0x0f_0000, 0x1234));
        assert_eq!((n.nsfeat, n.nlbaf, n.flbas), (4, 1, 1));
        assert_eq!((n.nmic, n.dlfeat), (1, 9));
        assert_eq!((n.mssrl, n.mcl, n.msrc), (128, 1024, 7));
        assert_eq!(n.anagrpid, 3);
        assert_eq!(n.nguid, [0x5a; 16]);
        assert_eq!(n.eui64, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(n.lbaf.len(), 2);
        assert_eq!(
            n.lbaf[1],
            LbaFormat {
                ms: 8,
                lbads: 12,
                rp: 2
            }
        );
        assert_eq!(n.lba_format_index(), 1);
        assert_eq!(n.block_size(), Some(4096));

        // Format index with the upper bits (more than 16 formats).
        let mut b2 = b.clone();
        b2[25] = 20;
        b2[26] = 0x20 | 0x02; // index 0x12 = 18
        let n2 = IdentifyNamespace::parse(&b2);
        assert_eq!(n2.lba_format_index(), 18);
        assert_eq!(n2.lbaf.len(), 21);
        assert_eq!(n2.block_size(), None); // lbads 0 there

        // Garbage nlbaf is clamped to 64 formats.
        let mut b3 = b;
        b3[25] = 255;
        b3[82] = 255;
        assert_eq!(IdentifyNamespace::parse(&b3).lbaf.len(), 64);
        assert_eq!(IdentifyNamespace::parse(&[]).nsze, 0);
    }

    #[test]
    fn ns_descriptor_list() {
        let mut b = vec![0u8; 4096];
        let mut o = 0;
        for (t, d) in [
            (1u8, vec![0xE0; 8]),
            (2, vec![0x6E; 16]),
            (3, (0..16u8).collect::<Vec<_>>()),
            (4, vec![0]),
        ] {
            b[o] = t;
            b[o + 1] = d.len() as u8;
            put(&mut b, o + 4, &d);
            o += 4 + d.len();
        }
        let v = parse_ns_descriptors(&b).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], NsDescriptor::Eui64([0xE0; 8]));
        assert_eq!(v[1], NsDescriptor::Nguid([0x6E; 16]));
        assert_eq!(
            v[2],
            NsDescriptor::Uuid((0..16u8).collect::<Vec<_>>().try_into().unwrap())
        );
        assert_eq!(v[3], NsDescriptor::Csi(0));

        // UUID with NIDL 8 is a target bug.
        let mut bad = vec![0u8; 64];
        bad[0] = 3;
        bad[1] = 8;
        let e = parse_ns_descriptors(&bad).unwrap_err().to_string();
        assert!(e.contains("NIDT 3 must have NIDL 16, got 8"), "{e}");
        // Running past the end.
        let mut bad = vec![0u8; 12];
        bad[0] = 2;
        bad[1] = 16;
        assert!(parse_ns_descriptors(&bad)
            .unwrap_err()
            .to_string()
            .contains("runs past"));
        // Duplicate type.
        let mut bad = vec![0u8; 64];
        bad[0] = 4;
        bad[1] = 1;
        bad[5] = 4;
        bad[6] = 1;
        assert!(parse_ns_descriptors(&bad)
            .unwrap_err()
            .to_string()
            .contains("more than once"));
        // Unknown types are kept.
        let mut other = vec![0u8; 64];
        other[0] = 9;
        other[1] = 2;
        other[4] = 0xAA;
        assert_eq!(
            parse_ns_descriptors(&other).unwrap(),
            vec![NsDescriptor::Other {
                nidt: 9,
                data: vec![0xAA, 0]
            }]
        );
        assert!(parse_ns_descriptors(&[0u8; 4096]).unwrap().is_empty());
    }

    #[test]
    fn ns_list() {
        let mut b = vec![0u8; 4096];
        put(&mut b, 0, &1u32.to_le_bytes());
        put(&mut b, 4, &2u32.to_le_bytes());
        put(&mut b, 8, &7u32.to_le_bytes());
        assert_eq!(parse_ns_list(&b).unwrap(), vec![1, 2, 7]);
        let mut bad = b.clone();
        put(&mut bad, 8, &2u32.to_le_bytes());
        assert!(parse_ns_list(&bad).is_err());
        let mut bad = b;
        put(&mut bad, 20, &9u32.to_le_bytes());
        assert!(parse_ns_list(&bad).is_err());
        assert!(parse_ns_list(&[0u8; 4096]).unwrap().is_empty());
    }

    fn disc_entry(subnqn: &str, port: &str, subtype: u8) -> Vec<u8> {
        let mut e = vec![0u8; 1024];
        e[0] = 3; // tcp
        e[1] = 1; // ipv4
        e[2] = subtype;
        e[3] = 0x02; // not required
        put(&mut e, 4, &7u16.to_le_bytes());
        put(&mut e, 6, &0xffffu16.to_le_bytes());
        put(&mut e, 8, &32u16.to_le_bytes());
        put(&mut e, 10, &0x0003u16.to_le_bytes());
        put(&mut e, 32, port.as_bytes());
        put(&mut e, 256, subnqn.as_bytes());
        put(&mut e, 512, b"127.0.0.1");
        e[768] = 0; // sectype none
        e
    }

    #[test]
    fn discovery_log() {
        let mut b = vec![0u8; 1024];
        put(&mut b, 0, &42u64.to_le_bytes());
        put(&mut b, 8, &2u64.to_le_bytes());
        b.extend(disc_entry(
            "nqn.2014-08.org.nvmexpress.discovery",
            "4420",
            3,
        ));
        b.extend(disc_entry("nqn.2024-01.io.example:sub1", "4420", 2));
        let log = DiscoveryLog::parse(&b).unwrap();
        assert_eq!((log.genctr, log.numrec, log.recfmt), (42, 2, 0));
        assert_eq!(log.entries.len(), 2);
        let e = &log.entries[1];
        assert_eq!((e.trtype, e.adrfam, e.subtype, e.treq), (3, 1, 2, 2));
        assert_eq!((e.portid, e.cntlid, e.asqsz, e.eflags), (7, 0xffff, 32, 3));
        assert_eq!(e.trsvcid, "4420");
        assert_eq!(e.subnqn, "nqn.2024-01.io.example:sub1");
        assert_eq!(e.traddr, "127.0.0.1");
        assert_eq!(e.sectype(), 0);
        assert_eq!(e.tsas.len(), 256);

        // NUMREC larger than the data.
        let mut bad = b.clone();
        put(&mut bad, 8, &3u64.to_le_bytes());
        let m = DiscoveryLog::parse(&bad).unwrap_err().to_string();
        assert!(m.contains("NUMREC 3 but the data holds only 2"), "{m}");
        // Header only.
        let h = DiscoveryLog::parse_header(&b[..1024]).unwrap();
        assert_eq!((h.genctr, h.numrec), (42, 2));
        assert!(DiscoveryLog::parse_header(&b[..10]).is_err());
        // Huge NUMREC does not allocate or panic.
        let mut huge = b;
        put(&mut huge, 8, &u64::MAX.to_le_bytes());
        assert!(DiscoveryLog::parse(&huge).is_err());
    }

    /// Random buffers never make the parsers panic.
    #[test]
    fn parsers_never_panic_on_garbage() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let len = (rnd() % 5000) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            // Bias towards plausible descriptor headers now and then.
            if len >= 8 && rnd() % 2 == 0 {
                b[0] = (rnd() % 6) as u8;
                b[1] = [0u8, 1, 8, 16, 200][(rnd() % 5) as usize];
                b[2] = 0;
                b[3] = 0;
            }
            let _ = IdentifyController::parse(&b);
            let n = IdentifyNamespace::parse(&b);
            let _ = n.block_size();
            let _ = parse_ns_descriptors(&b);
            let _ = parse_ns_list(&b);
            let _ = DiscoveryLog::parse(&b);
        }
    }

    #[test]
    fn ascii_fields() {
        assert_eq!(ascii_field(b"abc   "), "abc");
        assert_eq!(ascii_field(b"ab\0cd"), "ab");
        assert_eq!(ascii_field(b""), "");
    }
}
