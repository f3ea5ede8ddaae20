//! NVMe/TCP PDU codec (NVMe over TCP Transport spec 1.0). Sans-IO: frames PDUs
//! out of a byte buffer and encodes the controller-to-host PDUs.

use crate::nvme::{le16, le32, put16, put32};

/// PDU types.
pub mod pdu_type {
    pub const IC_REQ: u8 = 0x00;
    pub const IC_RESP: u8 = 0x01;
    pub const H2C_TERM_REQ: u8 = 0x02;
    pub const C2H_TERM_REQ: u8 = 0x03;
    pub const CAPSULE_CMD: u8 = 0x04;
    pub const CAPSULE_RESP: u8 = 0x05;
    pub const H2C_DATA: u8 = 0x06;
    pub const C2H_DATA: u8 = 0x07;
    pub const R2T: u8 = 0x09;
}

/// Common-header flags.
pub mod flags {
    pub const HDGSTF: u8 = 1 << 0;
    pub const DDGSTF: u8 = 1 << 1;
    pub const LAST_PDU: u8 = 1 << 2;
    pub const SUCCESS: u8 = 1 << 3;
}

/// Fatal error status values of a Terminate Request.
pub mod fes {
    pub const INVALID_HEADER_FIELD: u16 = 0x01;
    pub const PDU_SEQUENCE_ERROR: u16 = 0x02;
    pub const HEADER_DIGEST_ERROR: u16 = 0x03;
    pub const DATA_OUT_OF_RANGE: u16 = 0x04;
    pub const DATA_LIMIT_EXCEEDED: u16 = 0x05;
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

pub const COMMON_HEADER_LEN: usize = 8;
pub const IC_LEN: usize = 128;
pub const CAPSULE_CMD_HLEN: usize = 72;
pub const CAPSULE_RESP_HLEN: usize = 24;
pub const DATA_HLEN: usize = 24;
pub const R2T_HLEN: usize = 24;
pub const TERM_HLEN: usize = 24;
/// Most header bytes a Terminate Request echoes back.
pub const TERM_MAX_DATA: usize = 152 - TERM_HLEN;
pub const DIGEST_LEN: usize = 4;
/// Largest plen we accept on any PDU; far above any legal size, it only
/// protects the receive buffer from a nonsense length.
pub const MAX_PLEN: u32 = 16 << 20;

/// CRC32C as NVMe/TCP uses it for header and data digests.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// A fatal transport error: the connection gets a C2H Terminate Request with
/// this FES and FEI, then closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub fes: u16,
    /// For an invalid header field: the byte offset of that field.
    pub fei: u32,
    pub reason: String,
}

impl Fatal {
    pub fn new(fes: u16, fei: u32, reason: impl Into<String>) -> Fatal {
        Fatal {
            fes,
            fei,
            reason: reason.into(),
        }
    }
    fn field(offset: u32, reason: impl Into<String>) -> Fatal {
        Fatal::new(fes::INVALID_HEADER_FIELD, offset, reason)
    }
}

/// The 8-byte common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

impl CommonHeader {
    pub fn parse(b: &[u8]) -> CommonHeader {
        CommonHeader {
            pdu_type: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: le32(b, 4),
        }
    }
}

/// Where the parts of one PDU lie, relative to its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub ch: CommonHeader,
    /// Header length in bytes (hlen, without the digest).
    pub hlen: usize,
    /// Data offset and length (length 0 when the PDU has no data).
    pub data_off: usize,
    pub data_len: usize,
    /// The data is followed by a data digest.
    pub ddgst: bool,
    pub plen: usize,
}

/// Negotiated digests and alignment, as seen by the receiver of H2C PDUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    pub hdgst: bool,
    pub ddgst: bool,
    /// Controller PDU data alignment in dwords minus one (CPDA).
    pub cpda: u8,
}

/// Frames a host-to-controller PDU at the start of `buf`. Returns `Ok(None)`
/// when more bytes are needed to decide. `ic_done` tells whether the
/// connection is past initialization (only an ICReq is legal before).
/// Digests are checked here for the header; the caller checks data digests.
pub fn frame_h2c(buf: &[u8], neg: &Negotiated, ic_done: bool) -> Result<Option<Frame>, Fatal> {
    if buf.len() < COMMON_HEADER_LEN {
        return Ok(None);
    }
    let ch = CommonHeader::parse(buf);
    let hlen = ch.hlen as usize;
    let plen = ch.plen as usize;
    let (want_hlen, may_have_data) = match ch.pdu_type {
        pdu_type::IC_REQ => (IC_LEN, false),
        pdu_type::H2C_TERM_REQ => (TERM_HLEN, true),
        pdu_type::CAPSULE_CMD => (CAPSULE_CMD_HLEN, true),
        pdu_type::H2C_DATA => (DATA_HLEN, true),
        t => {
            return Err(Fatal::field(
                0,
                format!("PDU type {t:#04x} is not one a host may send"),
            ))
        }
    };
    if !ic_done && ch.pdu_type != pdu_type::IC_REQ {
        return Err(Fatal::new(
            fes::PDU_SEQUENCE_ERROR,
            0,
            format!("PDU type {:#04x} before ICReq", ch.pdu_type),
        ));
    }
    if ic_done && ch.pdu_type == pdu_type::IC_REQ {
        return Err(Fatal::new(
            fes::PDU_SEQUENCE_ERROR,
            0,
            "a second ICReq on an initialized connection",
        ));
    }
    if hlen != want_hlen {
        return Err(Fatal::field(
            2,
            format!(
                "HLEN {hlen} is wrong for PDU type {:#04x} (must be {want_hlen})",
                ch.pdu_type
            ),
        ));
    }
    if ch.plen > MAX_PLEN {
        return Err(Fatal::field(4, format!("PLEN {plen} is too large")));
    }
    // Terminate requests and ICReq never carry digests.
    let digests_apply = matches!(ch.pdu_type, pdu_type::CAPSULE_CMD | pdu_type::H2C_DATA);
    let hd = ch.flags & flags::HDGSTF != 0;
    let dd = ch.flags & flags::DDGSTF != 0;
    if digests_apply {
        if hd != neg.hdgst {
            return Err(Fatal::field(
                1,
                format!(
                    "HDGSTF is {} but header digests were {}negotiated",
                    hd as u8,
                    if neg.hdgst { "" } else { "not " }
                ),
            ));
        }
        if dd && !neg.ddgst {
            return Err(Fatal::field(
                1,
                "DDGSTF set but data digests were not negotiated",
            ));
        }
    } else if ch.flags & (flags::HDGSTF | flags::DDGSTF) != 0 {
        return Err(Fatal::field(
            1,
            "digest flags set on a PDU that has no digests",
        ));
    }
    let hd_len = if digests_apply && hd { DIGEST_LEN } else { 0 };
    if plen < hlen + hd_len {
        return Err(Fatal::field(
            4,
            format!("PLEN {plen} is smaller than the header ({})", hlen + hd_len),
        ));
    }
    let (data_off, data_len, ddgst) = if ch.pdu_type == pdu_type::H2C_TERM_REQ {
        if plen > TERM_HLEN + TERM_MAX_DATA {
            return Err(Fatal::field(
                4,
                format!("PLEN {plen} is too large for a Terminate Request"),
            ));
        }
        (hlen, plen - hlen, false)
    } else if !may_have_data || plen == hlen + hd_len {
        if ch.pdu_type == pdu_type::IC_REQ && plen != IC_LEN {
            return Err(Fatal::field(4, format!("ICReq PLEN {plen} must be 128")));
        }
        if dd {
            return Err(Fatal::field(1, "DDGSTF set on a PDU without data"));
        }
        (0, 0, false)
    } else {
        let pdo = ch.pdo as usize;
        let align = (neg.cpda as usize + 1) * 4;
        if pdo < hlen + hd_len || !pdo.is_multiple_of(align) || pdo > plen {
            return Err(Fatal::field(
                3,
                format!(
                    "PDO {pdo} is invalid (header ends at {}, alignment {align})",
                    hlen + hd_len
                ),
            ));
        }
        if dd != neg.ddgst {
            return Err(Fatal::field(
                1,
                "DDGSTF does not match the negotiated data digest",
            ));
        }
        let dd_len = if dd { DIGEST_LEN } else { 0 };
        if plen < pdo + dd_len {
            return Err(Fatal::field(
                4,
                format!("PLEN {plen} is smaller than PDO plus digest"),
            ));
        }
        let len = plen - pdo - dd_len;
        if len == 0 {
            return Err(Fatal::field(4, "PDU with a data offset but no data"));
        }
        (pdo, len, dd)
    };
    if buf.len() < hlen + hd_len {
        return Ok(None);
    }
    if hd_len != 0 {
        let want = crc32c(&buf[..hlen]);
        let got = le32(buf, hlen);
        if want != got {
            return Err(Fatal::new(
                fes::HEADER_DIGEST_ERROR,
                0,
                format!("header digest {got:#010x} does not match {want:#010x}"),
            ));
        }
    }
    Ok(Some(Frame {
        ch,
        hlen,
        data_off,
        data_len,
        ddgst,
        plen,
    }))
}

/// Fields of an ICReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    pub pfv: u16,
    pub hpda: u8,
    pub hdgst: bool,
    pub ddgst: bool,
    /// Maximum outstanding R2Ts per command, zero-based.
    pub maxr2t: u32,
}

impl IcReq {
    pub fn parse(b: &[u8]) -> IcReq {
        IcReq {
            pfv: le16(b, 8),
            hpda: b[10],
            hdgst: b[11] & 1 != 0,
            ddgst: b[11] & 2 != 0,
            maxr2t: le32(b, 12),
        }
    }
}

/// Fields of an H2CData header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2CData {
    pub cccid: u16,
    pub ttag: u16,
    pub datao: u32,
    pub datal: u32,
}

impl H2CData {
    pub fn parse(b: &[u8]) -> H2CData {
        H2CData {
            cccid: le16(b, 8),
            ttag: le16(b, 10),
            datao: le32(b, 12),
            datal: le32(b, 16),
        }
    }
}

fn header(out: &mut Vec<u8>, t: u8, fl: u8, hlen: usize, pdo: usize, plen: usize) -> usize {
    let start = out.len();
    out.resize(start + hlen, 0);
    let h = &mut out[start..];
    h[0] = t;
    h[1] = fl;
    h[2] = hlen as u8;
    h[3] = pdo as u8;
    put32(h, 4, plen as u32);
    start
}

fn header_digest(out: &mut Vec<u8>, start: usize, on: bool) {
    if on {
        let d = crc32c(&out[start..]);
        out.extend_from_slice(&d.to_le_bytes());
    }
}

/// Appends an ICResp.
pub fn encode_ic_resp(out: &mut Vec<u8>, cpda: u8, hdgst: bool, ddgst: bool, maxh2cdata: u32) {
    let s = header(out, pdu_type::IC_RESP, 0, IC_LEN, 0, IC_LEN);
    let h = &mut out[s..];
    put16(h, 8, 0);
    h[10] = cpda;
    h[11] = hdgst as u8 | ((ddgst as u8) << 1);
    put32(h, 12, maxh2cdata);
}

/// Appends a CapsuleResp carrying a 16-byte completion.
pub fn encode_capsule_resp(out: &mut Vec<u8>, cqe: &[u8; 16], hdgst: bool) {
    let hd = if hdgst { DIGEST_LEN } else { 0 };
    let fl = if hdgst { flags::HDGSTF } else { 0 };
    let s = header(
        out,
        pdu_type::CAPSULE_RESP,
        fl,
        CAPSULE_RESP_HLEN,
        0,
        CAPSULE_RESP_HLEN + hd,
    );
    out[s + 8..s + 24].copy_from_slice(cqe);
    header_digest(out, s, hdgst);
}

/// Digest and alignment settings for controller-to-host PDUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxParams {
    pub hdgst: bool,
    pub ddgst: bool,
    /// Host PDU data alignment (HPDA), dwords minus one.
    pub hpda: u8,
}

impl TxParams {
    fn data_offset(&self, hlen: usize) -> usize {
        let hd = if self.hdgst { DIGEST_LEN } else { 0 };
        let align = (self.hpda as usize + 1) * 4;
        (hlen + hd).div_ceil(align) * align
    }
}

/// Appends a C2HData PDU header and the padding up to its data; the caller
/// sends `datal` bytes of data next, then the data digest if enabled.
pub fn encode_c2h_data_header(
    out: &mut Vec<u8>,
    tx: &TxParams,
    cccid: u16,
    datao: u32,
    datal: usize,
    last: bool,
    success: bool,
) {
    let pdo = tx.data_offset(DATA_HLEN);
    let dd = if tx.ddgst { DIGEST_LEN } else { 0 };
    let mut fl = 0;
    if tx.hdgst {
        fl |= flags::HDGSTF;
    }
    if tx.ddgst {
        fl |= flags::DDGSTF;
    }
    if last {
        fl |= flags::LAST_PDU;
    }
    if success {
        fl |= flags::SUCCESS;
    }
    let s = header(
        out,
        pdu_type::C2H_DATA,
        fl,
        DATA_HLEN,
        pdo,
        pdo + datal + dd,
    );
    {
        let h = &mut out[s..];
        put16(h, 8, cccid);
        put32(h, 12, datao);
        put32(h, 16, datal as u32);
    }
    header_digest(out, s, tx.hdgst);
    out.resize(s + pdo, 0);
}

/// Appends a whole C2HData PDU: header, padding, data and data digest.
pub fn encode_c2h_data(
    out: &mut Vec<u8>,
    tx: &TxParams,
    cccid: u16,
    datao: u32,
    data: &[u8],
    last: bool,
    success: bool,
) {
    encode_c2h_data_header(out, tx, cccid, datao, data.len(), last, success);
    out.extend_from_slice(data);
    if tx.ddgst {
        out.extend_from_slice(&crc32c(data).to_le_bytes());
    }
}

/// Appends an R2T.
pub fn encode_r2t(out: &mut Vec<u8>, hdgst: bool, cccid: u16, ttag: u16, r2to: u32, r2tl: u32) {
    let hd = if hdgst { DIGEST_LEN } else { 0 };
    let fl = if hdgst { flags::HDGSTF } else { 0 };
    let s = header(out, pdu_type::R2T, fl, R2T_HLEN, 0, R2T_HLEN + hd);
    let h = &mut out[s..];
    put16(h, 8, cccid);
    put16(h, 10, ttag);
    put32(h, 12, r2to);
    put32(h, 16, r2tl);
    header_digest(out, s, hdgst);
}

/// Appends a C2H Terminate Request echoing (part of) the offending header.
pub fn encode_c2h_term_req(out: &mut Vec<u8>, fes: u16, fei: u32, offending: &[u8]) {
    let n = offending.len().min(TERM_MAX_DATA);
    let s = header(
        out,
        pdu_type::C2H_TERM_REQ,
        0,
        TERM_HLEN,
        if n > 0 { TERM_HLEN } else { 0 },
        TERM_HLEN + n,
    );
    let h = &mut out[s..];
    put16(h, 8, fes);
    put32(h, 10, fei);
    out.extend_from_slice(&offending[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(h: bool, d: bool) -> Negotiated {
        Negotiated {
            hdgst: h,
            ddgst: d,
            cpda: 0,
        }
    }

    fn icreq() -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b[2] = 128;
        put32(&mut b, 4, 128);
        b[11] = 3;
        b
    }

    fn capsule(data: &[u8], h: bool, d: bool) -> Vec<u8> {
        let hd = if h { 4 } else { 0 };
        let dd = if d && !data.is_empty() { 4 } else { 0 };
        let mut b = vec![0u8; 72];
        b[0] = pdu_type::CAPSULE_CMD;
        b[1] = (if h { flags::HDGSTF } else { 0 }) | (if dd > 0 { flags::DDGSTF } else { 0 });
        b[2] = 72;
        b[3] = if data.is_empty() { 0 } else { (72 + hd) as u8 };
        put32(&mut b, 4, (72 + hd + data.len() + dd) as u32);
        if h {
            let c = crc32c(&b);
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.extend_from_slice(data);
        if dd > 0 {
            b.extend_from_slice(&crc32c(data).to_le_bytes());
        }
        b
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn frames_icreq_and_needs_more_bytes() {
        let b = icreq();
        assert_eq!(frame_h2c(&b[..5], &neg(false, false), false), Ok(None));
        let f = frame_h2c(&b, &neg(false, false), false).unwrap().unwrap();
        assert_eq!(f.plen, 128);
        let ic = IcReq::parse(&b);
        assert!(ic.hdgst && ic.ddgst);
        // A second ICReq is a sequence error.
        let e = frame_h2c(&b, &neg(false, false), true).unwrap_err();
        assert_eq!(e.fes, fes::PDU_SEQUENCE_ERROR);
    }

    #[test]
    fn frames_capsules_with_and_without_digests() {
        for (h, d) in [(false, false), (true, false), (false, true), (true, true)] {
            let b = capsule(&[7u8; 100], h, d);
            let f = frame_h2c(&b, &neg(h, d), true).unwrap().unwrap();
            assert_eq!(f.data_len, 100, "h={h} d={d}");
            assert_eq!(f.ddgst, d);
            assert_eq!(&b[f.data_off..f.data_off + 100], &[7u8; 100]);
            assert_eq!(f.plen, b.len());
            let nd = capsule(&[], h, d);
            let f = frame_h2c(&nd, &neg(h, d), true).unwrap().unwrap();
            assert_eq!(f.data_len, 0);
        }
    }

    #[test]
    fn rejects_bad_headers_with_the_right_fes() {
        let n = neg(false, false);
        let mut b = capsule(&[], false, false);
        b[2] = 70;
        assert_eq!(frame_h2c(&b, &n, true).unwrap_err().fei, 2);
        let mut b = capsule(&[], false, false);
        b[0] = pdu_type::C2H_DATA;
        let e = frame_h2c(&b, &n, true).unwrap_err();
        assert_eq!((e.fes, e.fei), (fes::INVALID_HEADER_FIELD, 0));
        let mut b = capsule(&[], false, false);
        put32(&mut b, 4, 10);
        assert_eq!(frame_h2c(&b, &n, true).unwrap_err().fei, 4);
        let b = capsule(&[], false, false);
        assert_eq!(
            frame_h2c(&b, &n, false).unwrap_err().fes,
            fes::PDU_SEQUENCE_ERROR
        );
        // Header digest mismatch.
        let mut b = capsule(&[], true, false);
        b[20] ^= 1;
        assert_eq!(
            frame_h2c(&b, &neg(true, false), true).unwrap_err().fes,
            fes::HEADER_DIGEST_ERROR
        );
        // Digest flag disagreeing with negotiation.
        let b = capsule(&[], true, false);
        assert_eq!(frame_h2c(&b, &n, true).unwrap_err().fei, 1);
        // Misaligned PDO.
        let mut b = capsule(&[1, 2, 3, 4], false, false);
        b[3] = 73;
        assert_eq!(frame_h2c(&b, &n, true).unwrap_err().fei, 3);
    }

    #[test]
    fn encodes_controller_pdus() {
        let mut out = Vec::new();
        encode_ic_resp(&mut out, 0, true, false, 131072);
        assert_eq!(out.len(), 128);
        assert_eq!((out[0], out[2], le32(&out, 4), out[11]), (1, 128, 128, 1));
        assert_eq!(le32(&out, 12), 131072);

        out.clear();
        encode_capsule_resp(&mut out, &[0xAB; 16], true);
        assert_eq!(out.len(), 28);
        assert_eq!(le32(&out, 24), crc32c(&out[..24]));

        out.clear();
        let tx = TxParams {
            hdgst: true,
            ddgst: true,
            hpda: 3,
        };
        encode_c2h_data(&mut out, &tx, 5, 4096, &[9u8; 10], true, true);
        // Header 24 + digest 4 = 28, aligned to 16 -> PDO 32.
        assert_eq!(out[3], 32);
        assert_eq!(
            out[1],
            flags::HDGSTF | flags::DDGSTF | flags::LAST_PDU | flags::SUCCESS
        );
        assert_eq!(le32(&out, 4) as usize, out.len());
        assert_eq!(out.len(), 32 + 10 + 4);
        assert_eq!(le32(&out, 42), crc32c(&[9u8; 10]));
        assert_eq!(
            (le16(&out, 8), le32(&out, 12), le32(&out, 16)),
            (5, 4096, 10)
        );

        out.clear();
        encode_r2t(&mut out, false, 7, 3, 0, 65536);
        assert_eq!((out[0], out.len()), (pdu_type::R2T, 24));
        assert_eq!(
            (le16(&out, 8), le16(&out, 10), le32(&out, 16)),
            (7, 3, 65536)
        );

        out.clear();
        encode_c2h_term_req(&mut out, fes::HEADER_DIGEST_ERROR, 0, &[1u8; 300]);
        assert_eq!(out.len(), 152);
        assert_eq!(le16(&out, 8), fes::HEADER_DIGEST_ERROR);
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20000 {
            let mut b = vec![0u8; (x % 200) as usize];
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u8;
            }
            if b.len() > 2 {
                b[0] %= 10;
            }
            for ic in [false, true] {
                let _ = frame_h2c(&b, &neg(x & 1 == 1, x & 2 == 2), ic);
            }
        }
    }
}
