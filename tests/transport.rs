//! NVMe/TCP transport robustness against the real target: malformed PDUs get
//! a C2HTermReq with the right FES (and FEI for header fields), only that
//! connection closes and connections opened before keep working; thousands
//! of random and mutated PDUs and random commands never bring the target
//! down.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use nvmf_initiator::command::{self, Command};
use nvmf_initiator::pdu::{
    self, IcReq, Pdu, PduConfig, TermReq, FES_DATA_LIMIT_EXCEEDED, FES_DATA_OUT_OF_RANGE,
    FES_HEADER_DIGEST_ERROR, FES_INVALID_HEADER_FIELD, FES_PDU_SEQUENCE_ERROR,
    FES_UNSUPPORTED_PARAMETER,
};
use nvmf_initiator::queue::connect_data;
use nvmf_initiator::{Controller, Error, Queue};

const NONE: PduConfig = PduConfig {
    hdr_digest: false,
    data_digest: false,
    pda: 0,
};

/// A controller with one I/O queue, connected before the bad connection, that
/// must keep working.
struct Bystander(Controller);

impl Bystander {
    fn new(addr: SocketAddr) -> Bystander {
        let mut c = connect(addr, 1);
        write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 1, 4096);
        Bystander(c)
    }

    fn check(mut self) {
        let c = &mut self.0;
        write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 2, 65536);
        c.keep_alive().unwrap();
        c.identify(1, 0, 0, 0).unwrap();
        self.0.shutdown().expect("bystander shutdown");
    }
}

fn capsule(cmd: &Command, data: &[u8], cfg: &PduConfig) -> Vec<u8> {
    pdu::encode_capsule_cmd(&cmd.to_bytes(), data, cfg)
}

fn keep_alive_capsule(cfg: &PduConfig) -> Vec<u8> {
    let mut c = Command::keep_alive();
    c.cid = 9;
    c.dptr = command::sgl_descriptor(0, 0, command::SGL_TRANSPORT_DATA_BLOCK);
    capsule(&c, &[], cfg)
}

fn write_cmd(cid: u16, len: u32, in_capsule: bool) -> Command {
    let mut c = Command::write(NS_RAM512, 0, (len / 512).max(1) as u16 - 1);
    c.cid = cid;
    c.dptr = command::sgl_descriptor(
        0,
        len,
        if in_capsule {
            command::SGL_DATA_BLOCK_OFFSET
        } else {
            command::SGL_TRANSPORT_DATA_BLOCK
        },
    );
    c
}

/// The Terminate Request echoes the header of the PDU in error.
#[track_caller]
fn assert_echo(t: &TermReq, sent: &[u8]) {
    let n = t.data.len().min(sent.len());
    assert!(n >= 8, "C2HTermReq echoes {} header bytes", t.data.len());
    assert_eq!(
        &t.data[..n],
        &sent[..n],
        "C2HTermReq data is not the bad PDU's header"
    );
}

/// Runs one malformed-PDU case on a fresh raw connection with a bystander
/// controller connected before it.
fn bad_pdu_case(
    ic: Option<(bool, bool)>,
    build: impl FnOnce(&PduConfig) -> Vec<u8>,
    fes: u16,
    fei: Option<u32>,
) -> TermReq {
    let t = start_basic();
    let bystander = Bystander::new(t.addr());
    let mut c = match ic {
        Some((h, d)) => RawConn::open_ic(t.addr(), h, d),
        None => RawConn::open(t.addr()),
    };
    let cfg = c.rx;
    let bytes = build(&cfg);
    c.send(&bytes);
    let term = c.expect_term(fes);
    if let Some(fei) = fei {
        assert_eq!(term.fei, fei, "FEI of FES {fes:#x}");
    }
    assert_echo(&term, &bytes);
    bystander.check();
    term
}

#[test]
fn bad_hlen() {
    bad_pdu_case(
        Some((false, false)),
        |cfg| {
            let mut b = keep_alive_capsule(cfg);
            b[2] = 64;
            b
        },
        FES_INVALID_HEADER_FIELD,
        Some(2),
    );
}

#[test]
fn bad_plen_smaller_than_the_header() {
    bad_pdu_case(
        Some((false, false)),
        |cfg| {
            let mut b = keep_alive_capsule(cfg);
            b[4..8].copy_from_slice(&16u32.to_le_bytes());
            b
        },
        FES_INVALID_HEADER_FIELD,
        Some(4),
    );
}

#[test]
fn bad_plen_absurdly_large() {
    bad_pdu_case(
        Some((false, false)),
        |cfg| {
            let mut b = keep_alive_capsule(cfg);
            b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        },
        FES_INVALID_HEADER_FIELD,
        Some(4),
    );
}

#[test]
fn bad_pdo() {
    bad_pdu_case(
        Some((false, false)),
        |cfg| {
            let mut b = capsule(&write_cmd(3, 512, true), &[1u8; 512], cfg);
            b[3] = 40; // inside the header
            b
        },
        FES_INVALID_HEADER_FIELD,
        Some(3),
    );
}

#[test]
fn unknown_pdu_type() {
    bad_pdu_case(
        Some((false, false)),
        |_| {
            let mut b = vec![0u8; 24];
            b[0] = 0x0A;
            b[2] = 24;
            b[4] = 24;
            b
        },
        FES_INVALID_HEADER_FIELD,
        Some(0),
    );
}

#[test]
fn controller_to_host_pdu_type_from_the_host() {
    // A CapsuleResp (C2H only) sent by the host.
    bad_pdu_case(
        Some((false, false)),
        |cfg| Pdu::CapsuleResp(pdu::CapsuleResp { cqe: [0; 16] }).encode(cfg),
        FES_INVALID_HEADER_FIELD,
        Some(0),
    );
}

#[test]
fn pdu_before_icreq() {
    bad_pdu_case(None, keep_alive_capsule, FES_PDU_SEQUENCE_ERROR, None);
}

#[test]
fn second_icreq() {
    bad_pdu_case(
        Some((false, false)),
        |_| icreq(false, false),
        FES_PDU_SEQUENCE_ERROR,
        None,
    );
}

#[test]
fn icreq_with_unsupported_pfv() {
    bad_pdu_case(
        None,
        |_| {
            let mut b = icreq(false, false);
            b[8] = 1;
            b
        },
        FES_UNSUPPORTED_PARAMETER,
        Some(8),
    );
}

#[test]
fn icreq_with_bad_hpda() {
    bad_pdu_case(
        None,
        |_| {
            Pdu::IcReq(IcReq {
                pfv: 0,
                hpda: 32,
                hdgst: false,
                ddgst: false,
                maxr2t: 0,
            })
            .encode(&NONE)
        },
        FES_INVALID_HEADER_FIELD,
        Some(10),
    );
}

#[test]
fn icreq_with_bad_plen() {
    bad_pdu_case(
        None,
        |_| {
            let mut b = icreq(false, false);
            b.truncate(64);
            b[4..8].copy_from_slice(&64u32.to_le_bytes());
            b
        },
        FES_INVALID_HEADER_FIELD,
        Some(4),
    );
}

#[test]
fn bad_header_digest() {
    bad_pdu_case(
        Some((true, false)),
        |cfg| {
            assert!(cfg.hdr_digest);
            let mut b = keep_alive_capsule(cfg);
            b[72] ^= 0x5A;
            b
        },
        FES_HEADER_DIGEST_ERROR,
        None,
    );
}

#[test]
fn header_digest_flag_without_negotiation() {
    bad_pdu_case(
        Some((false, false)),
        |_| keep_alive_capsule(&PduConfig::new(true, false, 0)),
        FES_INVALID_HEADER_FIELD,
        Some(1),
    );
}

#[test]
fn data_digest_flag_without_negotiation() {
    bad_pdu_case(
        Some((false, false)),
        |_| {
            capsule(
                &write_cmd(4, 512, true),
                &[2u8; 512],
                &PduConfig::new(false, true, 0),
            )
        },
        FES_INVALID_HEADER_FIELD,
        Some(1),
    );
}

#[test]
fn h2c_data_with_unknown_transfer_tag() {
    bad_pdu_case(
        Some((false, false)),
        |cfg| pdu::encode_data_pdu(pdu::PDU_H2C_DATA, 1, 77, 0, &[0u8; 512], true, false, cfg),
        FES_INVALID_HEADER_FIELD,
        Some(10),
    );
}

/// Opens a connection, sends a write with a transport SGL of `len` bytes and
/// returns the connection and the R2T's transfer tag.
fn r2t_conn(addr: SocketAddr, cid: u16, len: u32) -> (RawConn, u16) {
    let mut c = RawConn::open_ic(addr, false, false);
    let cfg = c.rx;
    c.send(&capsule(&write_cmd(cid, len, false), &[], &cfg));
    match c.recv() {
        Pdu::R2t(r) => {
            assert_eq!((r.cccid, r.r2to, r.r2tl), (cid, 0, len));
            (c, r.ttag)
        }
        other => panic!("expected R2T, got {other:?}"),
    }
}

#[test]
fn h2c_data_beyond_the_r2t() {
    let t = start_basic();
    let bystander = Bystander::new(t.addr());
    // More data than requested.
    let (mut c, ttag) = r2t_conn(t.addr(), 5, 4096);
    let b = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        5,
        ttag,
        0,
        &[0u8; 8192],
        true,
        false,
        &NONE,
    );
    c.send(&b);
    let term = c.expect_term(FES_DATA_OUT_OF_RANGE);
    assert_echo(&term, &b);
    // Data at an offset past the end.
    let (mut c, ttag) = r2t_conn(t.addr(), 6, 4096);
    let b = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        6,
        ttag,
        4096,
        &[0u8; 512],
        true,
        false,
        &NONE,
    );
    c.send(&b);
    c.expect_term(FES_DATA_OUT_OF_RANGE);
    // Data out of order (a gap).
    let (mut c, ttag) = r2t_conn(t.addr(), 7, 4096);
    let b = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        7,
        ttag,
        512,
        &[0u8; 512],
        false,
        false,
        &NONE,
    );
    c.send(&b);
    c.expect_term(FES_DATA_OUT_OF_RANGE);
    bystander.check();
}

#[test]
fn h2c_data_with_wrong_command_id_or_flags() {
    let t = start_basic();
    let bystander = Bystander::new(t.addr());
    // CCCID of another command than the transfer tag's.
    let (mut c, ttag) = r2t_conn(t.addr(), 8, 4096);
    let b = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        99,
        ttag,
        0,
        &[0u8; 4096],
        true,
        false,
        &NONE,
    );
    c.send(&b);
    let term = c.expect_term(FES_INVALID_HEADER_FIELD);
    assert_eq!(term.fei, 8, "FEI: CCCID");
    // The last piece without LAST_PDU.
    let (mut c, ttag) = r2t_conn(t.addr(), 9, 4096);
    let b = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        9,
        ttag,
        0,
        &[0u8; 4096],
        false,
        false,
        &NONE,
    );
    c.send(&b);
    let term = c.expect_term(FES_INVALID_HEADER_FIELD);
    assert_eq!(term.fei, 1, "FEI: FLAGS");
    // DATAL that disagrees with PLEN.
    let (mut c, ttag) = r2t_conn(t.addr(), 10, 4096);
    let mut b = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        10,
        ttag,
        0,
        &[0u8; 4096],
        true,
        false,
        &NONE,
    );
    b[16..20].copy_from_slice(&2048u32.to_le_bytes());
    c.send(&b);
    let term = c.expect_term(FES_INVALID_HEADER_FIELD);
    assert_eq!(term.fei, 16, "FEI: DATAL");
    bystander.check();
}

#[test]
fn h2c_data_larger_than_maxh2cdata() {
    let t = start_basic();
    let bystander = Bystander::new(t.addr());
    let mut probe = Queue::connect_transport(t.addr(), &opts()).unwrap();
    let max = probe.maxh2cdata();
    assert!(max >= 4096);
    probe.send_raw(&keep_alive_capsule(&NONE)).unwrap();
    drop(probe);
    // The R2T asks for MDTS bytes (>= MAXH2CDATA); one PDU carries more
    // than MAXH2CDATA.
    let (mut c, ttag) = r2t_conn(t.addr(), 11, MAX_IO);
    assert!(MAX_IO <= max, "MAXH2CDATA {max} below MDTS");
    let b = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        11,
        ttag,
        0,
        &vec![0u8; max as usize + 512],
        true,
        false,
        &NONE,
    );
    c.send(&b);
    let term = match c.recv() {
        Pdu::C2hTermReq(t) => t,
        other => panic!("expected C2HTermReq, got {other:?}"),
    };
    assert!(
        term.fes == FES_DATA_LIMIT_EXCEEDED || term.fes == FES_DATA_OUT_OF_RANGE,
        "FES {:#x}",
        term.fes
    );
    c.expect_closed();
    bystander.check();
}

#[test]
fn too_much_in_capsule_data() {
    let t = start_basic();
    let bystander = Bystander::new(t.addr());
    // I/O queue: the limit is in_capsule_data_size (8 KiB here).
    let mut c = connect(t.addr(), 1);
    let q = &mut c.io[0];
    let len = 8192 + 512;
    let b = capsule(
        &write_cmd(12, len, true),
        &vec![3u8; len as usize],
        &q.tx_config(),
    );
    q.send_raw(&b).unwrap();
    let term = expect_queue_term(q, FES_DATA_LIMIT_EXCEEDED);
    assert_echo(&term, &b);
    // That controller's admin queue is on another connection: it works.
    c.admin.keep_alive().unwrap();
    // Admin queue: 8 KiB.
    let len = 8192 + 16;
    let b = capsule(&write_cmd(13, len, true), &vec![3u8; len as usize], &NONE);
    c.admin.send_raw(&b).unwrap();
    expect_queue_term(&mut c.admin, FES_DATA_LIMIT_EXCEEDED);
    bystander.check();
}

#[test]
fn in_capsule_data_on_a_read_or_no_data_command() {
    let t = start_basic();
    let bystander = Bystander::new(t.addr());
    let mut c = RawConn::open_ic(t.addr(), false, false);
    let mut cmd = Command::read(NS_RAM512, 0, 0);
    cmd.cid = 1;
    cmd.dptr = command::sgl_descriptor(0, 512, command::SGL_DATA_BLOCK_OFFSET);
    c.send(&capsule(&cmd, &[0u8; 512], &NONE));
    c.expect_term(FES_DATA_OUT_OF_RANGE);
    let mut c = RawConn::open_ic(t.addr(), false, false);
    let mut cmd = Command::keep_alive();
    cmd.cid = 2;
    cmd.dptr = command::sgl_descriptor(0, 64, command::SGL_DATA_BLOCK_OFFSET);
    c.send(&capsule(&cmd, &[0u8; 64], &NONE));
    c.expect_term(FES_DATA_OUT_OF_RANGE);
    bystander.check();
}

#[test]
fn h2c_term_req_closes_only_that_connection() {
    let t = start_basic();
    let bystander = Bystander::new(t.addr());
    let mut c = connect(t.addr(), 1);
    let term = Pdu::H2cTermReq(TermReq {
        fes: FES_PDU_SEQUENCE_ERROR,
        fei: 0,
        data: vec![0u8; 24],
    });
    c.io[0].send_raw(&term.encode(&NONE)).unwrap();
    c.io[0]
        .wait_closed(Duration::from_secs(10))
        .expect("the target closes after an H2CTermReq");
    // The controller's admin queue is still there.
    c.admin.keep_alive().unwrap();
    bystander.check();
}

#[test]
fn a_pdu_split_into_tiny_pieces_is_reassembled() {
    let t = start_basic();
    let mut s = TcpStream::connect(t.addr()).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut bytes = icreq(true, true);
    let cfg = PduConfig::new(true, true, 0);
    let o = opts();
    let mut conn = Command::connect(0, 31, 0, 0);
    conn.cid = 1;
    conn.dptr = command::sgl_descriptor(0, 1024, command::SGL_DATA_BLOCK_OFFSET);
    let data = connect_data(&o.hostid, 0xFFFF, NQN, &o.hostnqn).unwrap();
    let mut after_ic = capsule(&conn, &data, &cfg);
    let mut pg = Command::property_get(0, true);
    pg.cid = 2;
    pg.dptr = command::sgl_descriptor(0, 0, command::SGL_TRANSPORT_DATA_BLOCK);
    after_ic.extend(capsule(&pg, &[], &cfg));
    // The ICReq must be answered before digests apply, but the target may
    // read everything at once: send it all, one to seven bytes at a time.
    bytes.extend(after_ic);
    let mut rng = Rng::new(3);
    let mut i = 0;
    while i < bytes.len() {
        let n = (1 + rng.below(7) as usize).min(bytes.len() - i);
        s.write_all(&bytes[i..i + n]).unwrap();
        i += n;
        if rng.chance(8) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut rc = RawConn { s, rx: NONE };
    match rc.recv() {
        Pdu::IcResp(r) => assert!(r.hdgst && r.ddgst),
        other => panic!("expected ICResp, got {other:?}"),
    }
    rc.rx = cfg;
    for cid in [1u16, 2] {
        match rc.recv() {
            Pdu::CapsuleResp(r) => {
                let cqe = command::Cqe::parse(&r.cqe);
                assert_eq!(cqe.cid, cid);
                assert_eq!(cqe.status(), 0, "command {cid}");
            }
            other => panic!("expected CapsuleResp, got {other:?}"),
        }
    }
}

/// FEI is defined for Invalid PDU Header Field and Unsupported Parameter
/// only; for the other fatal error statuses it is reserved (zero).
#[test]
fn term_req_fei_is_reserved_for_data_errors() {
    let t = start_basic();
    let (mut c, ttag) = r2t_conn(t.addr(), 5, 4096);
    c.send(&pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        5,
        ttag,
        0,
        &[0u8; 8192],
        true,
        false,
        &NONE,
    ));
    assert_eq!(c.expect_term(FES_DATA_OUT_OF_RANGE).fei, 0);
    let (mut c, ttag) = r2t_conn(t.addr(), 6, MAX_IO);
    c.send(&pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        6,
        ttag,
        0,
        &vec![0u8; MAX_IO as usize + 512],
        true,
        false,
        &NONE,
    ));
    let term = match c.recv() {
        Pdu::C2hTermReq(t) => t,
        other => panic!("expected C2HTermReq, got {other:?}"),
    };
    assert_eq!(term.fei, 0, "FEI for FES {:#x}", term.fes);
}

// ----------------------------------------------------------------- fuzzing

/// A valid host-to-controller PDU of a random kind.
fn sample_pdu(rng: &mut Rng, cfg: &PduConfig) -> Vec<u8> {
    let o = opts();
    let cid = rng.below(8) as u16;
    match rng.below(11) {
        0 => Pdu::IcReq(IcReq {
            pfv: if rng.chance(4) {
                rng.below(3) as u16
            } else {
                0
            },
            hpda: rng.below(40) as u8,
            hdgst: rng.chance(2),
            ddgst: rng.chance(2),
            maxr2t: rng.below(4) as u32,
        })
        .encode(&NONE),
        1 | 2 => {
            let nqn = if rng.chance(3) { DISCOVERY_NQN } else { NQN };
            let qid = if rng.chance(3) {
                rng.below(3) as u16
            } else {
                0
            };
            let mut c = Command::connect(qid, rng.below(40) as u16, rng.byte() & 4, 0);
            c.cid = cid;
            c.dptr = command::sgl_descriptor(0, 1024, command::SGL_DATA_BLOCK_OFFSET);
            let cntlid = if qid == 0 {
                0xFFFF
            } else {
                rng.below(4) as u16
            };
            let data = connect_data(&o.hostid, cntlid, nqn, &o.hostnqn).unwrap();
            capsule(&c, &data, cfg)
        }
        3 => {
            let mut c = if rng.chance(2) {
                Command::property_get(
                    [0u32, 8, 0x14, 0x1C, 0x30][rng.below(5) as usize],
                    rng.chance(2),
                )
            } else {
                Command::property_set(0x14, false, 0x0046_0001 | (rng.below(4) << 14))
            };
            c.cid = cid;
            capsule(&c, &[], cfg)
        }
        4 => {
            let mut c = Command::identify(rng.below(4) as u8, rng.below(4) as u32, 0, 0);
            c.cid = cid;
            c.dptr = command::sgl_descriptor(0, 4096, command::SGL_TRANSPORT_DATA_BLOCK);
            capsule(&c, &[], cfg)
        }
        5 => {
            let len = 512 * (1 + rng.below(20)) as u32;
            let mut d = vec![0u8; len as usize];
            rng.fill(&mut d);
            capsule(&write_cmd(cid, len, true), &d, cfg)
        }
        6 => capsule(
            &write_cmd(cid, 512 * (1 + rng.below(300)) as u32, false),
            &[],
            cfg,
        ),
        7 => {
            let len = 1 + rng.below(9000) as usize;
            let mut d = vec![0u8; len];
            rng.fill(&mut d);
            pdu::encode_data_pdu(
                pdu::PDU_H2C_DATA,
                cid,
                rng.below(3) as u16,
                (rng.below(4) * 512) as u32,
                &d,
                rng.chance(2),
                false,
                cfg,
            )
        }
        8 => Pdu::H2cTermReq(TermReq {
            fes: rng.below(7) as u16,
            fei: 0,
            data: vec![0u8; rng.below(130) as usize],
        })
        .encode(&NONE),
        9 => keep_alive_capsule(cfg),
        _ => {
            let mut b = vec![0u8; 8 + rng.below(200) as usize];
            rng.fill(&mut b);
            b
        }
    }
}

fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    match rng.below(10) {
        0..=3 => {
            for _ in 0..1 + rng.below(4) {
                let i = if rng.chance(2) {
                    rng.below(b.len().min(24) as u64)
                } else {
                    rng.below(b.len() as u64)
                } as usize;
                b[i] = rng.byte();
            }
        }
        4 => {
            let n = rng.below(b.len() as u64 + 1) as usize;
            b.truncate(n);
        }
        5 => {
            for _ in 0..rng.below(64) {
                b.push(rng.byte());
            }
        }
        6 if b.len() >= 8 => {
            let plen = match rng.below(4) {
                0 => rng.next() as u32,
                1 => b.len() as u32 + rng.below(16) as u32,
                2 => (b.len() as u32).saturating_sub(rng.below(16) as u32),
                _ => rng.below(300) as u32,
            };
            b[4..8].copy_from_slice(&plen.to_le_bytes());
        }
        7 if b.len() >= 4 => {
            let f = rng.below(4) as usize;
            b[f] = rng.byte();
        }
        _ => {} // unmodified
    }
}

/// Reads everything the target sends until it closes; checks the stream is
/// a sequence of controller-to-host PDUs. Panics if it does not close.
fn drain_until_closed(s: &mut TcpStream) {
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the target did not close a connection after the host's FIN")
            }
            Err(e) => panic!("reading from the target: {e}"),
        }
    }
    let mut pos = 0;
    while pos + 8 <= all.len() {
        let t = all[pos];
        let plen = le32(&all, pos + 4) as usize;
        assert!(
            matches!(t, 0x01 | 0x03 | 0x05 | 0x07 | 0x09),
            "the target sent PDU type {t:#04x}"
        );
        assert!(plen >= 8, "the target sent PLEN {plen}");
        if t == 0x03 {
            assert_eq!(pos + plen, all.len(), "bytes after a C2HTermReq");
        }
        pos += plen;
    }
}

fn fuzz_worker(addr: SocketAddr, seed: u64, iterations: usize) {
    let mut rng = Rng::new(seed);
    for _ in 0..iterations {
        let mut s = TcpStream::connect(addr).expect("the target accepts connections");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut cfg = NONE;
        let mut out = Vec::new();
        if !rng.chance(6) {
            let (h, d) = (rng.chance(2), rng.chance(2));
            out.extend(icreq(h, d));
            cfg = PduConfig::new(h, d, 0);
        }
        for _ in 0..1 + rng.below(4) {
            let mut p = sample_pdu(&mut rng, &cfg);
            if !rng.chance(4) {
                mutate(&mut rng, &mut p);
            }
            out.extend(p);
        }
        // Sometimes in pieces, sometimes at once.
        if rng.chance(3) {
            let mut i = 0;
            while i < out.len() {
                let n = (1 + rng.below(100) as usize).min(out.len() - i);
                if s.write_all(&out[i..i + n]).is_err() {
                    break;
                }
                i += n;
            }
        } else {
            let _ = s.write_all(&out);
        }
        let _ = s.shutdown(Shutdown::Write);
        drain_until_closed(&mut s);
    }
}

#[test]
fn thousands_of_random_and_mutated_pdus_never_crash_the_target() {
    let t = start_basic();
    let addr = t.addr();
    let bystander = Bystander::new(addr);
    let workers: Vec<_> = (0..4u64)
        .map(|i| std::thread::spawn(move || fuzz_worker(addr, 0xF022 + i, 700)))
        .collect();
    for w in workers {
        w.join().expect("fuzz worker");
    }
    bystander.check();
    // Fresh controllers on every reactor still work.
    let mut ctrls: Vec<Controller> = (0..4).map(|_| connect(addr, 2)).collect();
    for (i, c) in ctrls.iter_mut().enumerate() {
        for (j, q) in c.io.iter_mut().enumerate() {
            let lba = 1000 + (i * 2 + j) as u64 * 256;
            write_read_check(q, NS_RAM512, 512, lba, lba, 65536);
        }
    }
    for c in ctrls {
        c.shutdown().unwrap();
    }
}

/// A random command with data consistent with its opcode's direction.
fn random_command(rng: &mut Rng, admin: bool) -> (Command, Option<Vec<u8>>, u32) {
    let op = if rng.chance(5) {
        rng.byte()
    } else if admin {
        [0x02u8, 0x06, 0x08, 0x09, 0x0A, 0x18, 0x7F][rng.below(7) as usize]
    } else {
        [0x00u8, 0x01, 0x02, 0x05, 0x08, 0x09, 0x0C, 0x19, 0x7F][rng.below(9) as usize]
    };
    // AERs are held until an event: not fuzzed (see admin.rs).
    let op = if op == 0x0C && admin { 0x18 } else { op };
    let mut c = Command::new(op);
    if rng.chance(10) {
        c.flags = rng.byte() & !0x03;
    }
    c.nsid = match rng.below(6) {
        0 => 0,
        1 => 0xFFFF_FFFF,
        2 => rng.next() as u32,
        _ => 1 + rng.below(3) as u32,
    };
    let small = |rng: &mut Rng| -> u32 {
        if rng.chance(3) {
            rng.next() as u32
        } else {
            rng.below(64) as u32
        }
    };
    if op == 0x7F {
        c.nsid = [0u32, 1, 4, 8, 0x10][rng.below(5) as usize] | (rng.below(2) << 8) as u32;
        c.nsid &= 0xFF;
    }
    c.cdw10 = small(rng);
    c.cdw11 = small(rng);
    c.cdw12 = small(rng);
    c.cdw13 = small(rng);
    c.cdw14 = small(rng);
    c.cdw15 = small(rng);
    if op == 0x7F && c.fctype() == 0x00 {
        // Keep CC writes to ones that leave the controller usable.
        c.cdw11 = 0x14;
        c.cdw12 = 0x0046_0001;
    }
    if op == 0x7F && c.fctype() == 0x01 {
        c.nsid = 0x04; // no second Connect: that only tests one status
    }
    if admin && op == 0x09 && c.cdw10 as u8 == 0x0F {
        c.cdw11 = 0; // do not arm a short keep-alive timer
    }
    let dir = if op == 0x7F { c.fctype() & 3 } else { op & 3 };
    let len = match rng.below(4) {
        0 => 512,
        1 => 4096,
        2 => 512 * (1 + rng.below(300) as u32),
        _ => 1 + rng.below(9000) as u32,
    };
    match dir {
        1 => {
            let mut d = vec![0u8; len as usize];
            rng.fill(&mut d);
            (c, Some(d), 0)
        }
        2 => (c, None, len),
        _ => (c, None, 0),
    }
}

#[test]
fn random_commands_on_connected_queues_never_crash_the_target() {
    let t = start_basic();
    let addr = t.addr();
    let bystander = Bystander::new(addr);
    let mut rng = Rng::new(0xC0DE);
    let mut o = opts();
    o.io_timeout = Duration::from_secs(10);
    o.in_capsule_max = if rng.chance(2) { 8192 } else { 0 };
    let mut ctrl: Option<Controller> = None;
    let (mut reconnects, mut statuses, mut ok) = (0, 0, 0);
    for i in 0..2500 {
        let c = ctrl.get_or_insert_with(|| {
            reconnects += 1;
            connect_with(addr, NQN, &o, 1)
        });
        let admin = i % 3 == 0;
        let (cmd, data, len) = random_command(&mut rng, admin);
        let q = if admin { &mut c.admin } else { &mut c.io[0] };
        match q.execute(cmd, data, len) {
            Ok(r) if r.status == 0 => ok += 1,
            Ok(_) => statuses += 1,
            Err(Error::Timeout) => panic!("command {cmd:?} never completed"),
            // The library is strict about what it receives (for example a
            // shorter transfer than its buffer): start over.
            Err(e) => {
                eprintln!("reconnecting after {cmd:?}: {e}");
                ctrl = None;
            }
        }
    }
    eprintln!("random commands: {ok} succeeded, {statuses} failed with a status, {reconnects} connections");
    assert!(ok > 100 && statuses > 100, "ok {ok}, errors {statuses}");
    assert!(reconnects < 2000, "{reconnects} reconnects");
    drop(ctrl);
    bystander.check();
    let mut c = connect(addr, 1);
    write_read_check(&mut c.io[0], NS_RAM4K, 4096, 0, 5, 65536);
    c.shutdown().unwrap();
}

#[test]
fn connections_that_vanish_mid_pdu_are_cleaned_up() {
    let t = start_basic();
    let addr = t.addr();
    let bystander = Bystander::new(addr);
    let mut rng = Rng::new(77);
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut b = icreq(false, false);
        b.extend(capsule(&write_cmd(1, 65536, false), &[], &NONE));
        b.extend(capsule(&write_cmd(2, 4096, true), &[7u8; 4096], &NONE));
        let cut = rng.below(b.len() as u64) as usize;
        let _ = s.write_all(&b[..cut]);
        // Abrupt close, sometimes with unread data (RST).
        drop(s);
    }
    bystander.check();
    let c = connect(addr, 2);
    c.shutdown().unwrap();
}

/// On a machine without RDMA (this one, and CI's), an RDMA listener stops
/// the target from starting with a sentence that says why and what to do;
/// with `fallback = "tcp"` the target serves NVMe/TCP there instead and the
/// discovery log says TCP.
#[test]
fn an_rdma_listener_without_rdma_says_why_or_falls_back_to_tcp() {
    if std::path::Path::new("/dev/infiniband/rdma_cm").exists() {
        eprintln!("SKIP: this machine has RDMA (the test needs one without)");
        return;
    }
    let rdma = basic_toml("").replace("transport = \"tcp\"", "transport = \"rdma\"");
    let mut cfg = nvmf_target::config::Config::parse(&rdma, "test.toml").unwrap();
    cfg.listeners[0].addr.set_port(0);
    let e = match nvmf_target::reactor::Runtime::start(&cfg) {
        Ok(_) => panic!("an RDMA listener started on a machine without RDMA"),
        Err(e) => e.to_string(),
    };
    for want in [
        "cannot listen for NVMe/RDMA on 127.0.0.1:0",
        "scripts/soft-roce.sh",
        "fallback = \"tcp\"",
    ] {
        assert!(e.contains(want), "{want:?} not in: {e}");
    }

    let fallback = rdma.replace(
        "transport = \"rdma\"",
        "transport = \"rdma\"\nfallback = \"tcp\"",
    );
    let t = start(&fallback);
    let log = nvmf_initiator::discover(t.addr(), &opts()).unwrap();
    assert!(!log.entries.is_empty());
    for e in &log.entries {
        assert_eq!(e.trtype, 3, "the discovery log tells the truth: TCP");
        assert_eq!(e.tsas[0], 0, "TCP TSAS: no security");
    }
    let mut c = connect(t.addr(), 1);
    write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 8, 4096);
    c.shutdown().unwrap();
}

/// A host with a 1024-entry queue that submits 1000 reads in one burst: every
/// one is served. (Their responses once took more than IOV_MAX segments in
/// one gathered send, which failed and dropped the connection silently.)
#[test]
fn a_burst_of_1000_reads_on_a_1024_entry_queue_is_served() {
    let t = start(&basic_toml("max_queue_depth = 1024"));
    let mut o = opts();
    o.queue_size = 1024;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    let cfg = c.io[0].tx_config();
    let mut burst = Vec::new();
    for cid in 0..1000u16 {
        let mut r = Command::read(NS_RAM512, cid as u64, 0);
        r.cid = cid;
        r.dptr = command::sgl_descriptor(0, 512, command::SGL_TRANSPORT_DATA_BLOCK);
        burst.extend(capsule(&r, &[], &cfg));
    }
    c.io[0].send_raw(&burst).unwrap();
    let (mut data, mut done) = (0, std::collections::HashSet::new());
    while done.len() < 1000 {
        match c.io[0].recv_raw_pdu() {
            Ok(Pdu::C2hData(d)) => data += d.data.len(),
            Ok(Pdu::CapsuleResp(r)) => {
                let cid = u16::from_le_bytes([r.cqe[12], r.cqe[13]]);
                let status = u16::from_le_bytes([r.cqe[14], r.cqe[15]]) >> 1;
                assert_eq!(status, 0, "read {cid} failed");
                assert!(done.insert(cid), "cid {cid} completed twice");
            }
            other => panic!("after {} completions: {other:?}", done.len()),
        }
    }
    assert_eq!(data, 1000 * 512);
}

/// A host that keeps sending writes on a 16-entry queue and never sends
/// their data (every one waits on its R2T): the target takes 32 (twice the
/// queue's entries, as nvmet does) and then ends the connection with a
/// C2HTermReq (PDU Sequence Error) instead of queueing without bound; a
/// host that stays within it is served.
#[test]
fn a_host_past_twice_its_queue_size_of_unanswered_commands_is_cut_off() {
    let t = start_basic();
    let mut o = opts();
    o.queue_size = 16;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    let q = &mut c.io[0];
    assert_eq!(q.queue_size(), 16);
    let cfg = q.tx_config();
    let mut burst = Vec::new();
    for cid in 0..40u16 {
        burst.extend(capsule(&write_cmd(cid, 65536, false), &[], &cfg));
    }
    q.send_raw(&burst).unwrap();
    let mut r2ts = 0;
    let fes = loop {
        match q.recv_raw_pdu() {
            Ok(Pdu::R2t(_)) => r2ts += 1,
            Ok(Pdu::C2hTermReq(t)) => break t.fes,
            other => panic!("after {r2ts} R2Ts: {other:?}"),
        }
    };
    assert_eq!(fes, FES_PDU_SEQUENCE_ERROR);
    assert!(r2ts <= 32, "{r2ts} R2Ts for a 16-entry queue");
    q.wait_closed(Duration::from_secs(10)).unwrap();
    // Within the bound (16 waiting writes), all is well.
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    let q = &mut c.io[0];
    let mut burst = Vec::new();
    for cid in 0..16u16 {
        burst.extend(capsule(&write_cmd(cid, 4096, false), &[], &cfg));
    }
    q.send_raw(&burst).unwrap();
    for _ in 0..16 {
        assert!(matches!(q.recv_raw_pdu(), Ok(Pdu::R2t(_))));
    }
    assert!(!q.is_closed());
}
