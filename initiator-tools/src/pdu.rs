//! NVMe/TCP PDU codec (sans-IO).
//!
//! Layouts follow the NVMe/TCP Transport Specification 1.0:
//!
//! ```text
//! common header (8 bytes): PDU-Type(1) FLAGS(1) HLEN(1) PDO(1) PLEN(4, LE)
//! PDU = header (HLEN bytes) [HDGST 4] [PAD up to PDO] [DATA] [DDGST 4]
//! ```
//!
//! Header digest = CRC32C over the HLEN header bytes; data digest = CRC32C over
//! the data bytes only (not the padding); both little-endian on the wire.
//! ICReq, ICResp and the TermReq PDUs never carry digests.
//!
//! [`decode`] is strict: every deviation from the specification is an
//! [`Error::Protocol`] whose message names the PDU and the field.

use crate::{Error, Result};

/// PDU type codes.
pub const PDU_ICREQ: u8 = 0x00;
pub const PDU_ICRESP: u8 = 0x01;
pub const PDU_H2C_TERM_REQ: u8 = 0x02;
pub const PDU_C2H_TERM_REQ: u8 = 0x03;
pub const PDU_CAPSULE_CMD: u8 = 0x04;
pub const PDU_CAPSULE_RESP: u8 = 0x05;
pub const PDU_H2C_DATA: u8 = 0x06;
pub const PDU_C2H_DATA: u8 = 0x07;
pub const PDU_R2T: u8 = 0x09;

/// Common-header FLAGS bits.
pub const FLAG_HDGSTF: u8 = 0x01;
pub const FLAG_DDGSTF: u8 = 0x02;
/// H2CData/C2HData: last data PDU of the transfer (of the R2T for H2CData).
pub const FLAG_LAST_PDU: u8 = 0x04;
/// C2HData: command completed successfully, no CapsuleResp follows.
pub const FLAG_SUCCESS: u8 = 0x08;

/// ICReq/ICResp DGST bits.
pub const DGST_HDGST_ENABLE: u8 = 0x01;
pub const DGST_DDGST_ENABLE: u8 = 0x02;

/// Fatal error status values of TermReq PDUs.
pub const FES_INVALID_HEADER_FIELD: u16 = 0x01;
pub const FES_PDU_SEQUENCE_ERROR: u16 = 0x02;
pub const FES_HEADER_DIGEST_ERROR: u16 = 0x03;
pub const FES_DATA_OUT_OF_RANGE: u16 = 0x04;
pub const FES_DATA_LIMIT_EXCEEDED: u16 = 0x05;
pub const FES_UNSUPPORTED_PARAMETER: u16 = 0x06;

pub const COMMON_HEADER_LEN: usize = 8;
pub const DIGEST_LEN: usize = 4;
pub const IC_PDU_LEN: usize = 128;
pub const TERM_REQ_HLEN: usize = 24;
/// Maximum length of the error data carried by a TermReq (the PDU header in error).
pub const TERM_REQ_MAX_DATA: usize = 128;
pub const CAPSULE_CMD_HLEN: usize = 72;
pub const CAPSULE_RESP_HLEN: usize = 24;
pub const DATA_HLEN: usize = 24;
pub const R2T_HLEN: usize = 24;
/// Smallest MAXH2CDATA a controller may announce.
pub const MIN_MAXH2CDATA: u32 = 4096;
/// Largest HPDA/CPDA value.
pub const MAX_PDA: u8 = 31;

/// Name of a PDU type, for messages.
pub fn pdu_type_name(t: u8) -> &'static str {
    match t {
        PDU_ICREQ => "ICReq",
        PDU_ICRESP => "ICResp",
        PDU_H2C_TERM_REQ => "H2CTermReq",
        PDU_C2H_TERM_REQ => "C2HTermReq",
        PDU_CAPSULE_CMD => "CapsuleCmd",
        PDU_CAPSULE_RESP => "CapsuleResp",
        PDU_H2C_DATA => "H2CData",
        PDU_C2H_DATA => "C2HData",
        PDU_R2T => "R2T",
        _ => "unknown PDU",
    }
}

/// The fixed HLEN of each PDU type.
pub fn expected_hlen(t: u8) -> Option<usize> {
    match t {
        PDU_ICREQ | PDU_ICRESP => Some(IC_PDU_LEN),
        PDU_H2C_TERM_REQ | PDU_C2H_TERM_REQ => Some(TERM_REQ_HLEN),
        PDU_CAPSULE_CMD => Some(CAPSULE_CMD_HLEN),
        PDU_CAPSULE_RESP => Some(CAPSULE_RESP_HLEN),
        PDU_H2C_DATA | PDU_C2H_DATA => Some(DATA_HLEN),
        PDU_R2T => Some(R2T_HLEN),
        _ => None,
    }
}

/// Description of a fatal error status.
pub fn fes_str(fes: u16) -> &'static str {
    match fes {
        FES_INVALID_HEADER_FIELD => "Invalid PDU Header Field",
        FES_PDU_SEQUENCE_ERROR => "PDU Sequence Error",
        FES_HEADER_DIGEST_ERROR => "Header Digest Error",
        FES_DATA_OUT_OF_RANGE => "Data Transfer Out of Range",
        FES_DATA_LIMIT_EXCEEDED => "Data Transfer Limit Exceeded",
        FES_UNSUPPORTED_PARAMETER => "Unsupported Parameter",
        _ => "reserved",
    }
}

/// CRC32C (Castagnoli) as used for NVMe/TCP digests.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Digest and alignment settings for PDUs travelling in one direction.
///
/// `pda` is the alignment parameter that applies to that direction: CPDA (from
/// ICResp) for host-to-controller PDUs, HPDA (from ICReq) for
/// controller-to-host PDUs. Required data alignment is `(pda + 1) * 4` bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PduConfig {
    pub hdr_digest: bool,
    pub data_digest: bool,
    pub pda: u8,
}

impl PduConfig {
    pub fn new(hdr_digest: bool, data_digest: bool, pda: u8) -> Self {
        PduConfig {
            hdr_digest,
            data_digest,
            pda,
        }
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> usize {
        (self.pda as usize + 1) * 4
    }

    fn hd_len(&self) -> usize {
        if self.hdr_digest {
            DIGEST_LEN
        } else {
            0
        }
    }

    fn dd_len(&self) -> usize {
        if self.data_digest {
            DIGEST_LEN
        } else {
            0
        }
    }

    /// PDO to use for a data-carrying PDU with header length `hlen`: the end of
    /// the header (and header digest) rounded up to the data alignment.
    pub fn data_offset(&self, hlen: usize) -> usize {
        let min = hlen + self.hd_len();
        min.div_ceil(self.alignment()) * self.alignment()
    }
}

/// The 8-byte common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonHeader {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

impl CommonHeader {
    /// Parse the first 8 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < COMMON_HEADER_LEN {
            return Err(Error::Protocol(format!(
                "PDU shorter than the common header ({} bytes)",
                b.len()
            )));
        }
        Ok(CommonHeader {
            pdu_type: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: le32(b, 4),
        })
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.pdu_type;
        b[1] = self.flags;
        b[2] = self.hlen;
        b[3] = self.pdo;
        b[4..8].copy_from_slice(&self.plen.to_le_bytes());
        b
    }

    fn name(&self) -> &'static str {
        pdu_type_name(self.pdu_type)
    }
}

/// Whether a PDU type carries header/data digests when they are enabled.
fn digest_capable(t: u8) -> bool {
    !matches!(
        t,
        PDU_ICREQ | PDU_ICRESP | PDU_H2C_TERM_REQ | PDU_C2H_TERM_REQ
    )
}

fn allowed_flags(t: u8) -> u8 {
    match t {
        PDU_CAPSULE_CMD => FLAG_HDGSTF | FLAG_DDGSTF,
        PDU_CAPSULE_RESP | PDU_R2T => FLAG_HDGSTF,
        PDU_H2C_DATA => FLAG_HDGSTF | FLAG_DDGSTF | FLAG_LAST_PDU,
        PDU_C2H_DATA => FLAG_HDGSTF | FLAG_DDGSTF | FLAG_LAST_PDU | FLAG_SUCCESS,
        _ => 0,
    }
}

fn proto<T>(msg: String) -> Result<T> {
    Err(Error::Protocol(msg))
}

/// Check that a PDO value is acceptable for a data-carrying PDU.
///
/// With alignment 4 (PDA 0) the data must immediately follow the header and
/// header digest. For larger alignments both readings seen in the field are
/// accepted: "rounded up to a multiple of the alignment" and "at least the
/// alignment" (SPDK's interpretation).
fn check_pdo(ch: &CommonHeader, cfg: &PduConfig) -> Result<()> {
    let min = ch.hlen as usize + cfg.hd_len();
    let rounded = cfg.data_offset(ch.hlen as usize);
    let spdk_style = min.max(cfg.alignment());
    let pdo = ch.pdo as usize;
    if pdo != rounded && pdo != spdk_style {
        return proto(format!(
            "{}: PDO {} is invalid, expected {} (HLEN {} + header digest {}, data alignment {} bytes)",
            ch.name(),
            pdo,
            rounded,
            ch.hlen,
            cfg.hd_len(),
            cfg.alignment()
        ));
    }
    Ok(())
}

/// Validate a received common header before reading the rest of the PDU:
/// known type, HLEN for the type, FLAGS against negotiated digests, PDO and
/// the PLEN arithmetic. Upper bounds on the data length are the caller's job.
pub fn check_common_header(ch: &CommonHeader, cfg: &PduConfig) -> Result<()> {
    let t = ch.pdu_type;
    let name = ch.name();
    let Some(hlen) = expected_hlen(t) else {
        return proto(format!("unknown PDU type {t:#04x}"));
    };
    if ch.hlen as usize != hlen {
        return proto(format!("{name}: HLEN {} is wrong, must be {hlen}", ch.hlen));
    }
    let reserved = ch.flags & !allowed_flags(t);
    if reserved != 0 {
        return proto(format!(
            "{name}: FLAGS {:#04x} has bits not allowed for this PDU type ({reserved:#04x})",
            ch.flags
        ));
    }
    let hd = if digest_capable(t) { cfg.hd_len() } else { 0 };
    if digest_capable(t) {
        let hflag = ch.flags & FLAG_HDGSTF != 0;
        if hflag != cfg.hdr_digest {
            return proto(format!(
                "{name}: HDGSTF flag is {} but header digests are {}",
                if hflag { "set" } else { "clear" },
                if cfg.hdr_digest {
                    "enabled"
                } else {
                    "disabled"
                }
            ));
        }
    }
    if ch.flags & FLAG_SUCCESS != 0 && ch.flags & FLAG_LAST_PDU == 0 {
        return proto(format!("{name}: SUCCESS flag set without LAST_PDU"));
    }
    let plen = ch.plen as usize;
    let dflag = ch.flags & FLAG_DDGSTF != 0;
    let check_ddgstf = |has_data: bool| -> Result<()> {
        let want = has_data && cfg.data_digest;
        if dflag != want {
            return proto(format!(
                "{name}: DDGSTF flag is {} but {}",
                if dflag { "set" } else { "clear" },
                if !has_data {
                    "the PDU carries no data"
                } else if cfg.data_digest {
                    "data digests are enabled"
                } else {
                    "data digests are disabled"
                }
            ));
        }
        Ok(())
    };
    match t {
        PDU_ICREQ | PDU_ICRESP => {
            if plen != IC_PDU_LEN {
                return proto(format!(
                    "{name}: PLEN {plen} is wrong, must be {IC_PDU_LEN}"
                ));
            }
            if ch.pdo != 0 {
                return proto(format!("{name}: PDO {} must be 0", ch.pdo));
            }
        }
        PDU_H2C_TERM_REQ | PDU_C2H_TERM_REQ => {
            if !(TERM_REQ_HLEN..=TERM_REQ_HLEN + TERM_REQ_MAX_DATA).contains(&plen) {
                return proto(format!(
                    "{name}: PLEN {plen} out of range {TERM_REQ_HLEN}..={}",
                    TERM_REQ_HLEN + TERM_REQ_MAX_DATA
                ));
            }
            if ch.pdo != 0 && ch.pdo as usize != TERM_REQ_HLEN {
                return proto(format!(
                    "{name}: PDO {} must be 0 (or {TERM_REQ_HLEN})",
                    ch.pdo
                ));
            }
        }
        PDU_CAPSULE_RESP | PDU_R2T => {
            if plen != hlen + hd {
                return proto(format!(
                    "{name}: PLEN {plen} is wrong, must be {} (HLEN {hlen} + header digest {hd})",
                    hlen + hd
                ));
            }
            if ch.pdo != 0 {
                return proto(format!("{name}: PDO {} must be 0 (no data)", ch.pdo));
            }
            check_ddgstf(false)?;
        }
        PDU_CAPSULE_CMD => {
            if plen < hlen + hd {
                return proto(format!(
                    "{name}: PLEN {plen} smaller than HLEN {hlen} + header digest {hd}"
                ));
            }
            if plen == hlen + hd {
                if ch.pdo != 0 {
                    return proto(format!("{name}: PDO {} must be 0 (no data)", ch.pdo));
                }
                check_ddgstf(false)?;
            } else {
                check_ddgstf(true)?;
                check_pdo(ch, cfg)?;
                let dd = cfg.dd_len();
                if plen <= ch.pdo as usize + dd {
                    return proto(format!(
                        "{name}: PLEN {plen} leaves no room for data after PDO {} and data digest {dd}",
                        ch.pdo
                    ));
                }
            }
        }
        PDU_H2C_DATA | PDU_C2H_DATA => {
            check_ddgstf(true)?;
            check_pdo(ch, cfg)?;
            let dd = cfg.dd_len();
            if plen <= ch.pdo as usize + dd {
                return proto(format!(
                    "{name}: PLEN {plen} leaves no room for data after PDO {} and data digest {dd}",
                    ch.pdo
                ));
            }
        }
        _ => unreachable!("type checked by expected_hlen"),
    }
    Ok(())
}

/// Initialize Connection Request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcReq {
    pub pfv: u16,
    pub hpda: u8,
    pub hdgst: bool,
    pub ddgst: bool,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

/// Initialize Connection Response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcResp {
    pub pfv: u16,
    pub cpda: u8,
    pub hdgst: bool,
    pub ddgst: bool,
    pub maxh2cdata: u32,
}

/// H2CTermReq / C2HTermReq body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermReq {
    pub fes: u16,
    pub fei: u32,
    /// Error data: the header of the PDU in error (up to 128 bytes).
    pub data: Vec<u8>,
}

/// Command capsule: the SQE and optional in-capsule data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsuleCmd {
    pub sqe: [u8; 64],
    pub data: Vec<u8>,
}

/// Response capsule: the CQE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapsuleResp {
    pub cqe: [u8; 16],
}

/// H2CData / C2HData. DATAL is `data.len()`. `ttag` is reserved (0) in C2HData,
/// `success` only exists in C2HData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPdu {
    pub cccid: u16,
    pub ttag: u16,
    pub datao: u32,
    pub last: bool,
    pub success: bool,
    pub data: Vec<u8>,
}

/// Ready to Transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct R2t {
    pub cccid: u16,
    pub ttag: u16,
    pub r2to: u32,
    pub r2tl: u32,
}

/// A parsed PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    IcReq(IcReq),
    IcResp(IcResp),
    H2cTermReq(TermReq),
    C2hTermReq(TermReq),
    CapsuleCmd(CapsuleCmd),
    CapsuleResp(CapsuleResp),
    H2cData(DataPdu),
    C2hData(DataPdu),
    R2t(R2t),
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn header(t: u8, flags: u8, hlen: usize, pdo: usize, plen: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(plen);
    v.push(t);
    v.push(flags);
    v.push(hlen as u8);
    v.push(pdo as u8);
    v.extend_from_slice(&(plen as u32).to_le_bytes());
    v
}

/// Append header digest (if enabled), padding up to `pdo`, data and data
/// digest (if enabled) to a header of `hlen` bytes already in `v`.
fn finish(v: &mut Vec<u8>, hlen: usize, hd: bool, pdo: usize, data: &[u8], dd: bool) {
    debug_assert_eq!(v.len(), hlen);
    if hd {
        let c = crc32c(&v[..hlen]);
        v.extend_from_slice(&c.to_le_bytes());
    }
    if !data.is_empty() {
        v.resize(pdo, 0);
        v.extend_from_slice(data);
        if dd {
            v.extend_from_slice(&crc32c(data).to_le_bytes());
        }
    }
}

/// Encode an H2CData or C2HData PDU straight from a data slice.
#[allow(clippy::too_many_arguments)]
pub fn encode_data_pdu(
    pdu_type: u8,
    cccid: u16,
    ttag: u16,
    datao: u32,
    data: &[u8],
    last: bool,
    success: bool,
    cfg: &PduConfig,
) -> Vec<u8> {
    let mut flags = 0;
    if cfg.hdr_digest {
        flags |= FLAG_HDGSTF;
    }
    if cfg.data_digest && !data.is_empty() {
        flags |= FLAG_DDGSTF;
    }
    if last {
        flags |= FLAG_LAST_PDU;
    }
    if success {
        flags |= FLAG_SUCCESS;
    }
    let pdo = cfg.data_offset(DATA_HLEN);
    let plen = pdo + data.len() + if flags & FLAG_DDGSTF != 0 { 4 } else { 0 };
    let mut v = header(pdu_type, flags, DATA_HLEN, pdo, plen);
    v.extend_from_slice(&cccid.to_le_bytes());
    v.extend_from_slice(&ttag.to_le_bytes());
    v.extend_from_slice(&datao.to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(&[0u8; 4]);
    finish(
        &mut v,
        DATA_HLEN,
        cfg.hdr_digest,
        pdo,
        data,
        cfg.data_digest,
    );
    v
}

/// Encode a CapsuleCmd PDU from an SQE and in-capsule data.
pub fn encode_capsule_cmd(sqe: &[u8; 64], data: &[u8], cfg: &PduConfig) -> Vec<u8> {
    let mut flags = 0;
    if cfg.hdr_digest {
        flags |= FLAG_HDGSTF;
    }
    let (pdo, plen) = if data.is_empty() {
        (0, CAPSULE_CMD_HLEN + cfg.hd_len())
    } else {
        if cfg.data_digest {
            flags |= FLAG_DDGSTF;
        }
        let pdo = cfg.data_offset(CAPSULE_CMD_HLEN);
        (pdo, pdo + data.len() + cfg.dd_len())
    };
    let mut v = header(PDU_CAPSULE_CMD, flags, CAPSULE_CMD_HLEN, pdo, plen);
    v.extend_from_slice(sqe);
    finish(
        &mut v,
        CAPSULE_CMD_HLEN,
        cfg.hdr_digest,
        pdo,
        data,
        cfg.data_digest,
    );
    v
}

impl Pdu {
    /// The PDU type code.
    pub fn pdu_type(&self) -> u8 {
        match self {
            Pdu::IcReq(_) => PDU_ICREQ,
            Pdu::IcResp(_) => PDU_ICRESP,
            Pdu::H2cTermReq(_) => PDU_H2C_TERM_REQ,
            Pdu::C2hTermReq(_) => PDU_C2H_TERM_REQ,
            Pdu::CapsuleCmd(_) => PDU_CAPSULE_CMD,
            Pdu::CapsuleResp(_) => PDU_CAPSULE_RESP,
            Pdu::H2cData(_) => PDU_H2C_DATA,
            Pdu::C2hData(_) => PDU_C2H_DATA,
            Pdu::R2t(_) => PDU_R2T,
        }
    }

    /// Encode to wire bytes. Digest flags, HLEN, PDO and PLEN are computed from
    /// `cfg` (digests are never applied to ICReq/ICResp/TermReq).
    pub fn encode(&self, cfg: &PduConfig) -> Vec<u8> {
        match self {
            Pdu::IcReq(p) => {
                let mut v = header(PDU_ICREQ, 0, IC_PDU_LEN, 0, IC_PDU_LEN);
                v.extend_from_slice(&p.pfv.to_le_bytes());
                v.push(p.hpda);
                v.push(dgst_bits(p.hdgst, p.ddgst));
                v.extend_from_slice(&p.maxr2t.to_le_bytes());
                v.resize(IC_PDU_LEN, 0);
                v
            }
            Pdu::IcResp(p) => {
                let mut v = header(PDU_ICRESP, 0, IC_PDU_LEN, 0, IC_PDU_LEN);
                v.extend_from_slice(&p.pfv.to_le_bytes());
                v.push(p.cpda);
                v.push(dgst_bits(p.hdgst, p.ddgst));
                v.extend_from_slice(&p.maxh2cdata.to_le_bytes());
                v.resize(IC_PDU_LEN, 0);
                v
            }
            Pdu::H2cTermReq(p) | Pdu::C2hTermReq(p) => {
                let plen = TERM_REQ_HLEN + p.data.len();
                let mut v = header(self.pdu_type(), 0, TERM_REQ_HLEN, 0, plen);
                v.extend_from_slice(&p.fes.to_le_bytes());
                v.extend_from_slice(&p.fei.to_le_bytes());
                v.resize(TERM_REQ_HLEN, 0);
                v.extend_from_slice(&p.data);
                v
            }
            Pdu::CapsuleCmd(p) => encode_capsule_cmd(&p.sqe, &p.data, cfg),
            Pdu::CapsuleResp(p) => {
                let flags = if cfg.hdr_digest { FLAG_HDGSTF } else { 0 };
                let plen = CAPSULE_RESP_HLEN + cfg.hd_len();
                let mut v = header(PDU_CAPSULE_RESP, flags, CAPSULE_RESP_HLEN, 0, plen);
                v.extend_from_slice(&p.cqe);
                finish(&mut v, CAPSULE_RESP_HLEN, cfg.hdr_digest, 0, &[], false);
                v
            }
            Pdu::H2cData(p) | Pdu::C2hData(p) => encode_data_pdu(
                self.pdu_type(),
                p.cccid,
                p.ttag,
                p.datao,
                &p.data,
                p.last,
                p.success,
                cfg,
            ),
            Pdu::R2t(p) => {
                let flags = if cfg.hdr_digest { FLAG_HDGSTF } else { 0 };
                let plen = R2T_HLEN + cfg.hd_len();
                let mut v = header(PDU_R2T, flags, R2T_HLEN, 0, plen);
                v.extend_from_slice(&p.cccid.to_le_bytes());
                v.extend_from_slice(&p.ttag.to_le_bytes());
                v.extend_from_slice(&p.r2to.to_le_bytes());
                v.extend_from_slice(&p.r2tl.to_le_bytes());
                v.extend_from_slice(&[0u8; 4]);
                finish(&mut v, R2T_HLEN, cfg.hdr_digest, 0, &[], false);
                v
            }
        }
    }
}

fn dgst_bits(h: bool, d: bool) -> u8 {
    (if h { DGST_HDGST_ENABLE } else { 0 }) | (if d { DGST_DDGST_ENABLE } else { 0 })
}

fn check_reserved(name: &str, b: &[u8], from: usize, to: usize) -> Result<()> {
    if let Some(i) = (from..to).find(|&i| b[i] != 0) {
        return proto(format!(
            "{name}: reserved byte {i} is {:#04x}, must be 0",
            b[i]
        ));
    }
    Ok(())
}

/// Decode one complete PDU (exactly PLEN bytes) strictly.
pub fn decode(buf: &[u8], cfg: &PduConfig) -> Result<Pdu> {
    let ch = CommonHeader::parse(buf)?;
    check_common_header(&ch, cfg)?;
    let name = ch.name();
    let plen = ch.plen as usize;
    if buf.len() != plen {
        return proto(format!(
            "{name}: PLEN {plen} but {} bytes were supplied",
            buf.len()
        ));
    }
    let t = ch.pdu_type;
    let hlen = ch.hlen as usize;
    let hd = digest_capable(t) && cfg.hdr_digest;
    if hd {
        let got = le32(buf, hlen);
        let want = crc32c(&buf[..hlen]);
        if got != want {
            return proto(format!(
                "{name}: header digest mismatch (received {got:#010x}, computed {want:#010x})"
            ));
        }
    }
    let hdr_end = hlen + if hd { DIGEST_LEN } else { 0 };
    // Data region (data-carrying PDUs only).
    let data: &[u8] = match t {
        PDU_CAPSULE_CMD | PDU_H2C_DATA | PDU_C2H_DATA if plen > hdr_end => {
            let pdo = ch.pdo as usize;
            check_reserved(&format!("{name} PAD"), buf, hdr_end, pdo)?;
            let dd = ch.flags & FLAG_DDGSTF != 0;
            let end = plen - if dd { DIGEST_LEN } else { 0 };
            let data = &buf[pdo..end];
            if dd {
                let got = le32(buf, end);
                let want = crc32c(data);
                if got != want {
                    return proto(format!(
                        "{name}: data digest mismatch (received {got:#010x}, computed {want:#010x})"
                    ));
                }
            }
            data
        }
        PDU_H2C_TERM_REQ | PDU_C2H_TERM_REQ => {
            let start = if ch.pdo == 0 { hlen } else { ch.pdo as usize };
            &buf[start..]
        }
        _ => &[],
    };
    let pdu = match t {
        PDU_ICREQ | PDU_ICRESP => {
            let pfv = le16(buf, 8);
            if pfv != 0 {
                return proto(format!("{name}: PFV {pfv} unsupported, must be 0"));
            }
            let pda = buf[10];
            if pda > MAX_PDA {
                let f = if t == PDU_ICREQ { "HPDA" } else { "CPDA" };
                return proto(format!("{name}: {f} {pda} exceeds {MAX_PDA}"));
            }
            let dgst = buf[11];
            if dgst & !(DGST_HDGST_ENABLE | DGST_DDGST_ENABLE) != 0 {
                return proto(format!("{name}: DGST {dgst:#04x} has reserved bits set"));
            }
            let v = le32(buf, 12);
            check_reserved(name, buf, 16, IC_PDU_LEN)?;
            let hdgst = dgst & DGST_HDGST_ENABLE != 0;
            let ddgst = dgst & DGST_DDGST_ENABLE != 0;
            if t == PDU_ICREQ {
                Pdu::IcReq(IcReq {
                    pfv,
                    hpda: pda,
                    hdgst,
                    ddgst,
                    maxr2t: v,
                })
            } else {
                if v < MIN_MAXH2CDATA {
                    return proto(format!(
                        "{name}: MAXH2CDATA {v} is below the minimum {MIN_MAXH2CDATA}"
                    ));
                }
                Pdu::IcResp(IcResp {
                    pfv,
                    cpda: pda,
                    hdgst,
                    ddgst,
                    maxh2cdata: v,
                })
            }
        }
        PDU_H2C_TERM_REQ | PDU_C2H_TERM_REQ => {
            let fes = le16(buf, 8);
            if !(FES_INVALID_HEADER_FIELD..=FES_UNSUPPORTED_PARAMETER).contains(&fes) {
                return proto(format!("{name}: FES {fes:#x} is a reserved value"));
            }
            let fei = le32(buf, 10);
            check_reserved(name, buf, 14, TERM_REQ_HLEN)?;
            let tr = TermReq {
                fes,
                fei,
                data: data.to_vec(),
            };
            if t == PDU_H2C_TERM_REQ {
                Pdu::H2cTermReq(tr)
            } else {
                Pdu::C2hTermReq(tr)
            }
        }
        PDU_CAPSULE_CMD => {
            let mut sqe = [0u8; 64];
            sqe.copy_from_slice(&buf[8..72]);
            Pdu::CapsuleCmd(CapsuleCmd {
                sqe,
                data: data.to_vec(),
            })
        }
        PDU_CAPSULE_RESP => {
            let mut cqe = [0u8; 16];
            cqe.copy_from_slice(&buf[8..24]);
            Pdu::CapsuleResp(CapsuleResp { cqe })
        }
        PDU_H2C_DATA | PDU_C2H_DATA => {
            let cccid = le16(buf, 8);
            let ttag = le16(buf, 10);
            let datao = le32(buf, 12);
            let datal = le32(buf, 16);
            if t == PDU_C2H_DATA {
                check_reserved(name, buf, 10, 12)?;
            }
            check_reserved(name, buf, 20, 24)?;
            if datal as usize != data.len() {
                return proto(format!(
                    "{name}: DATAL {datal} but the PDU carries {} data bytes (PLEN {plen}, PDO {})",
                    data.len(),
                    ch.pdo
                ));
            }
            if datao.checked_add(datal).is_none() {
                return proto(format!(
                    "{name}: DATAO {datao} + DATAL {datal} overflows 32 bits"
                ));
            }
            let d = DataPdu {
                cccid,
                ttag,
                datao,
                last: ch.flags & FLAG_LAST_PDU != 0,
                success: ch.flags & FLAG_SUCCESS != 0,
                data: data.to_vec(),
            };
            if t == PDU_H2C_DATA {
                Pdu::H2cData(d)
            } else {
                Pdu::C2hData(d)
            }
        }
        PDU_R2T => {
            let r = R2t {
                cccid: le16(buf, 8),
                ttag: le16(buf, 10),
                r2to: le32(buf, 12),
                r2tl: le32(buf, 16),
            };
            check_reserved(name, buf, 20, 24)?;
            if r.r2tl == 0 {
                return proto(format!("{name}: R2TL is 0"));
            }
            if r.r2to.checked_add(r.r2tl).is_none() {
                return proto(format!(
                    "{name}: R2TO {} + R2TL {} overflows 32 bits",
                    r.r2to, r.r2tl
                ));
            }
            Pdu::R2t(r)
        }
        _ => unreachable!("type checked by check_common_header"),
    };
    Ok(pdu)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: PduConfig = PduConfig {
        hdr_digest: false,
        data_digest: false,
        pda: 0,
    };
    const BOTH: PduConfig = PduConfig {
        hdr_digest: true,
        data_digest: true,
        pda: 0,
    };

    fn err_msg(r: Result<Pdu>) -> String {
        match r {
            Err(Error::Protocol(m)) => m,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // 32 bytes of zeros (iSCSI test vector, RFC 3720 B.4).
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn icreq_layout() {
        let p = Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: 2,
            hdgst: true,
            ddgst: true,
            maxr2t: 0x0102_0304,
        });
        // Digests never apply to ICReq, whatever the config says.
        let b = p.encode(&BOTH);
        assert_eq!(b.len(), 128);
        assert_eq!(&b[..8], &[0x00, 0x00, 128, 0, 128, 0, 0, 0]);
        assert_eq!(&b[8..10], &[0, 0]); // PFV
        assert_eq!(b[10], 2); // HPDA
        assert_eq!(b[11], 0x03); // DGST
        assert_eq!(&b[12..16], &[0x04, 0x03, 0x02, 0x01]); // MAXR2T
        assert!(b[16..].iter().all(|&x| x == 0));
        assert_eq!(decode(&b, &BOTH).unwrap(), p);
        assert_eq!(decode(&b, &NONE).unwrap(), p);
    }

    #[test]
    fn icresp_layout_and_checks() {
        let p = Pdu::IcResp(IcResp {
            pfv: 0,
            cpda: 0,
            hdgst: false,
            ddgst: true,
            maxh2cdata: 0x20000,
        });
        let b = p.encode(&NONE);
        assert_eq!(b.len(), 128);
        assert_eq!(&b[..8], &[0x01, 0, 128, 0, 128, 0, 0, 0]);
        assert_eq!(b[11], 0x02);
        assert_eq!(&b[12..16], &0x20000u32.to_le_bytes());
        assert_eq!(decode(&b, &NONE).unwrap(), p);

        let mut bad = b.clone();
        bad[8] = 1;
        assert!(err_msg(decode(&bad, &NONE)).contains("PFV 1"));
        let mut bad = b.clone();
        bad[12..16].copy_from_slice(&4092u32.to_le_bytes());
        assert!(err_msg(decode(&bad, &NONE)).contains("MAXH2CDATA 4092"));
        let mut bad = b.clone();
        bad[10] = 32;
        assert!(err_msg(decode(&bad, &NONE)).contains("CPDA 32"));
        let mut bad = b.clone();
        bad[11] = 0x04;
        assert!(err_msg(decode(&bad, &NONE)).contains("DGST"));
        let mut bad = b.clone();
        bad[100] = 1;
        assert!(err_msg(decode(&bad, &NONE)).contains("reserved byte 100"));
        let mut bad = b.clone();
        bad[1] = FLAG_HDGSTF;
        assert!(err_msg(decode(&bad, &BOTH)).contains("FLAGS"));
        let mut bad = b.clone();
        bad[2] = 24;
        assert!(err_msg(decode(&bad, &NONE)).contains("HLEN 24 is wrong, must be 128"));
        let mut bad = b;
        bad[4] = 129;
        bad.push(0);
        assert!(err_msg(decode(&bad, &NONE)).contains("PLEN 129"));
    }

    fn sample_sqe() -> [u8; 64] {
        let mut s = [0u8; 64];
        for (i, b) in s.iter_mut().enumerate() {
            *b = i as u8;
        }
        s
    }

    #[test]
    fn capsule_cmd_no_data() {
        let p = Pdu::CapsuleCmd(CapsuleCmd {
            sqe: sample_sqe(),
            data: vec![],
        });
        let b = p.encode(&NONE);
        assert_eq!(b.len(), 72);
        assert_eq!(&b[..8], &[0x04, 0, 72, 0, 72, 0, 0, 0]);
        assert_eq!(&b[8..72], &sample_sqe());
        assert_eq!(decode(&b, &NONE).unwrap(), p);

        let b = p.encode(&BOTH);
        assert_eq!(b.len(), 76);
        // HDGSTF only: no data so no DDGSTF, PDO 0.
        assert_eq!(&b[..8], &[0x04, 0x01, 72, 0, 76, 0, 0, 0]);
        assert_eq!(&b[72..76], &crc32c(&b[..72]).to_le_bytes());
        assert_eq!(decode(&b, &BOTH).unwrap(), p);
    }

    #[test]
    fn capsule_cmd_with_data() {
        let data: Vec<u8> = (0..10u8).collect();
        let p = Pdu::CapsuleCmd(CapsuleCmd {
            sqe: sample_sqe(),
            data: data.clone(),
        });
        let b = p.encode(&NONE);
        assert_eq!(&b[..8], &[0x04, 0, 72, 72, 82, 0, 0, 0]);
        assert_eq!(&b[72..], &data[..]);
        assert_eq!(decode(&b, &NONE).unwrap(), p);

        let b = p.encode(&BOTH);
        // 72 hdr + 4 hdgst + 10 data + 4 ddgst
        assert_eq!(&b[..8], &[0x04, 0x03, 72, 76, 90, 0, 0, 0]);
        assert_eq!(&b[72..76], &crc32c(&b[..72]).to_le_bytes());
        assert_eq!(&b[76..86], &data[..]);
        assert_eq!(&b[86..90], &crc32c(&data).to_le_bytes());
        assert_eq!(decode(&b, &BOTH).unwrap(), p);

        // CPDA 7 => 32-byte alignment: data at 96, zero padding 76..96.
        let cfg = PduConfig::new(true, false, 7);
        let b = p.encode(&cfg);
        assert_eq!(&b[..8], &[0x04, 0x01, 72, 96, 106, 0, 0, 0]);
        assert!(b[76..96].iter().all(|&x| x == 0));
        assert_eq!(&b[96..], &data[..]);
        assert_eq!(decode(&b, &cfg).unwrap(), p);
        // The same PDU is wrong for a receiver expecting no padding.
        let m = err_msg(decode(&b, &PduConfig::new(true, false, 0)));
        assert!(m.contains("PDO 96 is invalid, expected 76"), "{m}");
        // Non-zero padding is rejected.
        let mut bad = b;
        bad[80] = 1;
        assert!(err_msg(decode(&bad, &cfg)).contains("PAD"));
    }

    #[test]
    fn capsule_resp_layout() {
        let mut cqe = [0u8; 16];
        cqe[0] = 0xAA;
        cqe[12] = 0x34;
        cqe[13] = 0x12;
        let p = Pdu::CapsuleResp(CapsuleResp { cqe });
        let b = p.encode(&NONE);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &[0x05, 0, 24, 0, 24, 0, 0, 0]);
        assert_eq!(&b[8..24], &cqe);
        assert_eq!(decode(&b, &NONE).unwrap(), p);

        let b = p.encode(&BOTH);
        assert_eq!(b.len(), 28);
        assert_eq!(&b[..8], &[0x05, 0x01, 24, 0, 28, 0, 0, 0]);
        assert_eq!(&b[24..28], &crc32c(&b[..24]).to_le_bytes());
        assert_eq!(decode(&b, &BOTH).unwrap(), p);

        // Header digest corruption.
        let mut bad = b.clone();
        bad[26] ^= 0xff;
        assert!(err_msg(decode(&bad, &BOTH)).contains("header digest mismatch"));
        // Body corruption is also caught by the header digest.
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert!(err_msg(decode(&bad, &BOTH)).contains("header digest mismatch"));
        // Digest negotiated but not sent.
        let plain = p.encode(&NONE);
        let m = err_msg(decode(&plain, &BOTH));
        assert!(m.contains("HDGSTF flag is clear"), "{m}");
        // Digest sent but not negotiated.
        let m = err_msg(decode(&b, &NONE));
        assert!(m.contains("HDGSTF flag is set"), "{m}");
        // Wrong PLEN.
        let mut bad = plain.clone();
        bad[4] = 28;
        bad.extend_from_slice(&[0; 4]);
        assert!(err_msg(decode(&bad, &NONE)).contains("PLEN 28 is wrong, must be 24"));
        // Wrong HLEN.
        let mut bad = plain.clone();
        bad[2] = 16;
        assert!(err_msg(decode(&bad, &NONE)).contains("CapsuleResp: HLEN 16 is wrong"));
        // PDO set on a PDU without data.
        let mut bad = plain.clone();
        bad[3] = 24;
        assert!(err_msg(decode(&bad, &NONE)).contains("PDO 24 must be 0"));
        // DDGSTF on a PDU without data.
        let mut bad = plain;
        bad[1] = FLAG_DDGSTF;
        let m = err_msg(decode(&bad, &NONE));
        assert!(m.contains("FLAGS 0x02 has bits not allowed"), "{m}");
    }

    #[test]
    fn c2h_data_layout() {
        let data: Vec<u8> = (0..16u8).collect();
        let p = Pdu::C2hData(DataPdu {
            cccid: 0x0102,
            ttag: 0,
            datao: 0x1000,
            last: true,
            success: true,
            data: data.clone(),
        });
        let b = p.encode(&NONE);
        assert_eq!(&b[..8], &[0x07, 0x0C, 24, 24, 40, 0, 0, 0]);
        assert_eq!(&b[8..10], &[0x02, 0x01]);
        assert_eq!(&b[10..12], &[0, 0]);
        assert_eq!(&b[12..16], &0x1000u32.to_le_bytes());
        assert_eq!(&b[16..20], &16u32.to_le_bytes());
        assert_eq!(&b[20..24], &[0; 4]);
        assert_eq!(&b[24..40], &data[..]);
        assert_eq!(decode(&b, &NONE).unwrap(), p);

        let b = p.encode(&BOTH);
        assert_eq!(&b[..8], &[0x07, 0x0F, 24, 28, 48, 0, 0, 0]);
        assert_eq!(&b[24..28], &crc32c(&b[..24]).to_le_bytes());
        assert_eq!(&b[28..44], &data[..]);
        assert_eq!(&b[44..48], &crc32c(&data).to_le_bytes());
        assert_eq!(decode(&b, &BOTH).unwrap(), p);

        // Data digest corruption.
        let mut bad = b.clone();
        bad[30] ^= 0x80;
        assert!(err_msg(decode(&bad, &BOTH)).contains("data digest mismatch"));
        // DATAL disagreeing with PLEN: must recompute the header digest so that
        // the DATAL check itself is what fires.
        let mut bad = b.clone();
        bad[16] = 15;
        let c = crc32c(&bad[..24]);
        bad[24..28].copy_from_slice(&c.to_le_bytes());
        let m = err_msg(decode(&bad, &BOTH));
        assert!(m.contains("DATAL 15 but the PDU carries 16"), "{m}");
        // SUCCESS without LAST_PDU.
        let mut bad = p.encode(&NONE);
        bad[1] = FLAG_SUCCESS;
        assert!(err_msg(decode(&bad, &NONE)).contains("SUCCESS flag set without LAST_PDU"));
        // Reserved TTAG in C2HData.
        let mut bad = p.encode(&NONE);
        bad[10] = 1;
        assert!(err_msg(decode(&bad, &NONE)).contains("reserved byte 10"));
        // No data at all.
        let mut bad = p.encode(&NONE);
        bad.truncate(24);
        bad[4] = 24;
        assert!(err_msg(decode(&bad, &NONE)).contains("no room for data"));
        // DDGSTF missing while data digests are on.
        let mut bad = b;
        bad[1] &= !FLAG_DDGSTF;
        assert!(err_msg(decode(&bad, &BOTH)).contains("DDGSTF flag is clear"));
    }

    #[test]
    fn h2c_data_layout() {
        let data = vec![0x5a; 8];
        let p = Pdu::H2cData(DataPdu {
            cccid: 7,
            ttag: 0xBEEF,
            datao: 4096,
            last: true,
            success: false,
            data: data.clone(),
        });
        let b = p.encode(&NONE);
        assert_eq!(&b[..8], &[0x06, 0x04, 24, 24, 32, 0, 0, 0]);
        assert_eq!(&b[8..10], &7u16.to_le_bytes());
        assert_eq!(&b[10..12], &0xBEEFu16.to_le_bytes());
        assert_eq!(&b[12..16], &4096u32.to_le_bytes());
        assert_eq!(&b[16..20], &8u32.to_le_bytes());
        assert_eq!(&b[24..], &data[..]);
        assert_eq!(decode(&b, &NONE).unwrap(), p);
        let b = p.encode(&BOTH);
        assert_eq!(&b[..8], &[0x06, 0x07, 24, 28, 40, 0, 0, 0]);
        assert_eq!(decode(&b, &BOTH).unwrap(), p);
        // SUCCESS is not a valid H2CData flag.
        let mut bad = p.encode(&NONE);
        bad[1] |= FLAG_SUCCESS;
        assert!(err_msg(decode(&bad, &NONE)).contains("not allowed"));
    }

    #[test]
    fn r2t_layout() {
        let p = Pdu::R2t(R2t {
            cccid: 3,
            ttag: 9,
            r2to: 8192,
            r2tl: 65536,
        });
        let b = p.encode(&NONE);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &[0x09, 0, 24, 0, 24, 0, 0, 0]);
        assert_eq!(&b[8..10], &3u16.to_le_bytes());
        assert_eq!(&b[10..12], &9u16.to_le_bytes());
        assert_eq!(&b[12..16], &8192u32.to_le_bytes());
        assert_eq!(&b[16..20], &65536u32.to_le_bytes());
        assert_eq!(decode(&b, &NONE).unwrap(), p);
        let b = p.encode(&BOTH);
        assert_eq!(b.len(), 28);
        assert_eq!(&b[..8], &[0x09, 0x01, 24, 0, 28, 0, 0, 0]);
        assert_eq!(decode(&b, &BOTH).unwrap(), p);

        let mut bad = p.encode(&NONE);
        bad[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(err_msg(decode(&bad, &NONE)).contains("R2TL is 0"));
        let mut bad = p.encode(&NONE);
        bad[1] = FLAG_LAST_PDU;
        assert!(err_msg(decode(&bad, &NONE)).contains("not allowed"));
    }

    #[test]
    fn term_req_layout() {
        let p = Pdu::C2hTermReq(TermReq {
            fes: FES_INVALID_HEADER_FIELD,
            fei: 0x0000_0002,
            data: vec![0x04, 0x00, 0x48, 0x00, 0x48, 0, 0, 0],
        });
        // Never digested, even when digests are on.
        let b = p.encode(&BOTH);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..8], &[0x03, 0, 24, 0, 32, 0, 0, 0]);
        assert_eq!(&b[8..10], &[1, 0]); // FES
        assert_eq!(&b[10..14], &[2, 0, 0, 0]); // FEI at offset 10 (unaligned)
        assert!(b[14..24].iter().all(|&x| x == 0));
        assert_eq!(decode(&b, &BOTH).unwrap(), p);

        let h = Pdu::H2cTermReq(TermReq {
            fes: FES_HEADER_DIGEST_ERROR,
            fei: 0,
            data: vec![],
        });
        let b = h.encode(&NONE);
        assert_eq!(&b[..8], &[0x02, 0, 24, 0, 24, 0, 0, 0]);
        assert_eq!(decode(&b, &NONE).unwrap(), h);

        let mut bad = p.encode(&NONE);
        bad[8] = 0x07;
        assert!(err_msg(decode(&bad, &NONE)).contains("FES 0x7"));
        let mut big = Pdu::C2hTermReq(TermReq {
            fes: 1,
            fei: 0,
            data: vec![0; 129],
        })
        .encode(&NONE);
        assert!(err_msg(decode(&big, &NONE)).contains("out of range"));
        big[1] = FLAG_HDGSTF;
        assert!(err_msg(decode(&big, &NONE)).contains("FLAGS"));
    }

    #[test]
    fn unknown_type_and_short_buffers() {
        let mut b = [0u8; 24];
        b[0] = 0x08;
        b[2] = 24;
        b[4] = 24;
        assert!(err_msg(decode(&b, &NONE)).contains("unknown PDU type 0x08"));
        assert!(err_msg(decode(&b[..5], &NONE)).contains("shorter than the common header"));
        // PLEN larger than the buffer.
        let r = Pdu::R2t(R2t {
            cccid: 1,
            ttag: 1,
            r2to: 0,
            r2tl: 1,
        })
        .encode(&NONE);
        assert!(err_msg(decode(&r[..20], &NONE)).contains("PLEN 24 but 20 bytes"));
    }

    /// Decoding mutated and truncated PDUs must return errors, never panic.
    #[test]
    fn decode_never_panics_on_garbage() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let samples = [
            Pdu::IcResp(IcResp {
                pfv: 0,
                cpda: 0,
                hdgst: true,
                ddgst: true,
                maxh2cdata: 8192,
            }),
            Pdu::CapsuleResp(CapsuleResp { cqe: [7; 16] }),
            Pdu::C2hData(DataPdu {
                cccid: 1,
                ttag: 0,
                datao: 0,
                last: true,
                success: false,
                data: vec![3; 40],
            }),
            Pdu::R2t(R2t {
                cccid: 1,
                ttag: 2,
                r2to: 0,
                r2tl: 100,
            }),
            Pdu::C2hTermReq(TermReq {
                fes: 2,
                fei: 0,
                data: vec![1; 24],
            }),
            Pdu::CapsuleCmd(CapsuleCmd {
                sqe: [1; 64],
                data: vec![2; 33],
            }),
        ];
        let cfgs = [NONE, BOTH, PduConfig::new(true, false, 7)];
        let mut accepted = 0;
        for _ in 0..20_000 {
            let p = &samples[(rnd() % samples.len() as u64) as usize];
            let cfg = cfgs[(rnd() % 3) as usize];
            let mut b = p.encode(&cfg);
            for _ in 0..(rnd() % 4) {
                let i = (rnd() % b.len() as u64) as usize;
                b[i] = rnd() as u8;
            }
            if rnd() % 4 == 0 {
                let n = (rnd() % (b.len() as u64 + 1)) as usize;
                b.truncate(n);
            }
            let rx = cfgs[(rnd() % 3) as usize];
            if let Ok(ch) = CommonHeader::parse(&b) {
                let _ = check_common_header(&ch, &rx);
            }
            if decode(&b, &rx).is_ok() {
                accepted += 1;
            }
        }
        // Some unmutated PDUs decode; most garbage is rejected.
        assert!(accepted > 0 && accepted < 20_000, "{accepted}");
    }

    #[test]
    fn common_header_round_trip() {
        let ch = CommonHeader {
            pdu_type: 7,
            flags: 0x0c,
            hlen: 24,
            pdo: 28,
            plen: 0x0102_0304,
        };
        let b = ch.to_bytes();
        assert_eq!(b, [7, 0x0c, 24, 28, 4, 3, 2, 1]);
        assert_eq!(CommonHeader::parse(&b).unwrap(), ch);
    }

    #[test]
    fn data_offset_alignment() {
        assert_eq!(PduConfig::new(false, false, 0).data_offset(24), 24);
        assert_eq!(PduConfig::new(true, false, 0).data_offset(24), 28);
        assert_eq!(PduConfig::new(true, false, 3).data_offset(72), 80);
        assert_eq!(PduConfig::new(false, false, 31).data_offset(24), 128);
        // SPDK-style PDO (max(min, alignment)) is accepted too.
        let cfg = PduConfig::new(false, false, 3); // 16-byte alignment
        let mut b = Pdu::C2hData(DataPdu {
            cccid: 1,
            ttag: 0,
            datao: 0,
            last: false,
            success: false,
            data: vec![1, 2, 3, 4],
        })
        .encode(&cfg);
        assert_eq!(b[3], 32);
        // Rebuild with PDO 24 (= max(24, 16)).
        b.drain(24..32);
        b[3] = 24;
        b[4] = 28;
        assert!(decode(&b, &cfg).is_ok());
        b[3] = 20;
        assert!(decode(&b, &cfg).is_err());
    }
}
