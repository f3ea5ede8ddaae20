//! End-to-end tests of `Queue`, `Controller`, `discover` and the tools
//! against a scripted fake target on a loopback `TcpListener`.
//!
//! The fake target decodes what the host sends with the strict codec (so host
//! encoding bugs fail these tests too) and checks the important fields of the
//! host's PDUs byte by byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command as Proc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nvmf_initiator::command::{self, Command, Cqe};
use nvmf_initiator::pdu::{
    self, CapsuleResp, DataPdu, IcResp, Pdu, PduConfig, R2t, TermReq, FLAG_HDGSTF,
};
use nvmf_initiator::{discover, Controller, Error, Queue, QueueOptions, DISCOVERY_NQN};

const SUBNQN: &str = "nqn.2024-01.io.example:fake";

// ---------------------------------------------------------------- fake target

struct Conn {
    s: TcpStream,
    h2c: PduConfig,
    c2h: PduConfig,
    qid: u16,
    qsize: u16,
    sqhd: u16,
    sqflow_disabled: bool,
}

impl Conn {
    fn accept(l: &TcpListener) -> Conn {
        let (s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            s,
            h2c: PduConfig::default(),
            c2h: PduConfig::default(),
            qid: 0,
            qsize: 32,
            sqhd: 0,
            sqflow_disabled: false,
        }
    }

    /// One PDU as raw bytes, or None on EOF.
    fn read_raw(&mut self) -> Option<Vec<u8>> {
        let mut h = [0u8; 8];
        if let Err(e) = self.s.read_exact(&mut h) {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "fake target read error: {e}"
            );
            return None;
        }
        let plen = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
        assert!((8..=(16 << 20)).contains(&plen), "bad plen {plen}");
        let mut b = vec![0u8; plen];
        b[..8].copy_from_slice(&h);
        self.s.read_exact(&mut b[8..]).expect("read PDU body");
        Some(b)
    }

    fn recv(&mut self) -> Option<Pdu> {
        let b = self.read_raw()?;
        Some(pdu::decode(&b, &self.h2c).expect("host sent an invalid PDU"))
    }

    fn recv_cmd(&mut self) -> Option<(Command, Vec<u8>)> {
        match self.recv()? {
            Pdu::CapsuleCmd(c) => Some((Command::from_bytes(&c.sqe), c.data)),
            other => panic!("expected CapsuleCmd, got {other:?}"),
        }
    }

    fn send(&mut self, p: &Pdu) {
        let b = p.encode(&self.c2h);
        self.s.write_all(&b).expect("fake target write");
    }

    fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("fake target write");
    }

    /// Answer ICReq; digests are enabled when the host asked for them.
    fn ic(&mut self, cpda: u8, maxh2cdata: u32) -> pdu::IcReq {
        let raw = self.read_raw().expect("ICReq");
        // Byte-exact check of the host's ICReq.
        assert_eq!(raw.len(), 128);
        assert_eq!(&raw[..8], &[0x00, 0x00, 128, 0, 128, 0, 0, 0]);
        assert_eq!(&raw[8..10], &[0, 0], "PFV");
        assert!(raw[16..].iter().all(|&b| b == 0), "ICReq reserved bytes");
        let req = match pdu::decode(&raw, &PduConfig::default()).unwrap() {
            Pdu::IcReq(r) => r,
            other => panic!("{other:?}"),
        };
        self.send(&Pdu::IcResp(IcResp {
            pfv: 0,
            cpda,
            hdgst: req.hdgst,
            ddgst: req.ddgst,
            maxh2cdata,
        }));
        self.h2c = PduConfig::new(req.hdgst, req.ddgst, cpda);
        self.c2h = PduConfig::new(req.hdgst, req.ddgst, req.hpda);
        req
    }

    /// Answer the Connect command; returns the command and its data.
    fn connect(&mut self, cntlid: u16) -> (Command, Vec<u8>) {
        let (c, data) = self.recv_cmd().expect("Connect");
        assert_eq!(c.opcode, 0x7F);
        assert_eq!(c.fctype(), 0x01);
        assert_eq!(c.flags & 0xC0, 0x40, "PSDT must be SGL");
        // In-capsule SGL data block, offset 0, 1024 bytes.
        assert_eq!(c.dptr, command::sgl_descriptor(0, 1024, 0x01));
        assert_eq!(data.len(), 1024);
        self.qid = (c.cdw10 >> 16) as u16;
        self.qsize = (c.cdw11 & 0xffff) as u16 + 1;
        self.sqflow_disabled = (c.cdw11 >> 16) & 0x04 != 0;
        self.respond(c.cid, 0, cntlid as u32, 0);
        (c, data)
    }

    fn respond(&mut self, cid: u16, status: u16, dw0: u32, dw1: u32) {
        self.sqhd = (self.sqhd + 1) % self.qsize;
        let cqe = Cqe {
            dw0,
            dw1,
            sqhd: if self.sqflow_disabled {
                0xffff
            } else {
                self.sqhd
            },
            sqid: self.qid,
            cid,
            status_raw: Cqe::make_status(status, status != 0),
        };
        self.send(&Pdu::CapsuleResp(CapsuleResp {
            cqe: cqe.to_bytes(),
        }));
    }

    fn c2h(&mut self, cid: u16, datao: u32, data: &[u8], last: bool, success: bool) {
        self.send(&Pdu::C2hData(DataPdu {
            cccid: cid,
            ttag: 0,
            datao,
            last,
            success,
            data: data.to_vec(),
        }));
    }
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().unwrap();
    (l, a)
}

fn spawn(f: impl FnOnce(TcpListener) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let (l, a) = listener();
    (a, thread::spawn(move || f(l)))
}

fn opts() -> QueueOptions {
    QueueOptions {
        io_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn proto_msg<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Protocol(m)) => m,
        other => panic!("expected Error::Protocol, got {other:?}"),
    }
}

// ---------------------------------------------------------------- Queue tests

#[test]
fn connect_sends_correct_icreq_and_connect() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        let req = c.ic(0, 0x10000);
        assert!(!req.hdgst && !req.ddgst);
        assert_eq!(req.maxr2t, 0);
        let (cmd, data) = c.connect(0x0005);
        let b = cmd.to_bytes();
        assert_eq!(&b[42..44], &0u16.to_le_bytes(), "QID");
        assert_eq!(&b[44..46], &31u16.to_le_bytes(), "SQSIZE");
        assert_eq!(b[46], 0, "CATTR");
        assert_eq!(&b[48..52], &15000u32.to_le_bytes(), "KATO");
        assert_eq!(&data[0..16], &[0xAB; 16], "HOSTID");
        assert_eq!(&data[16..18], &0xFFFFu16.to_le_bytes(), "CNTLID");
        assert_eq!(&data[256..256 + SUBNQN.len()], SUBNQN.as_bytes());
        assert_eq!(data[256 + SUBNQN.len()], 0);
        assert_eq!(&data[512..512 + 14], b"nqn.test:host1");
        assert!(data[18..256].iter().all(|&x| x == 0));
        // Keep the connection open until the host closes it.
        assert!(c.recv().is_none());
    });
    let o = QueueOptions {
        hostid: [0xAB; 16],
        hostnqn: "nqn.test:host1".into(),
        kato_ms: 15000,
        ..opts()
    };
    let q = Queue::connect(addr, 0, SUBNQN, 0xFFFF, &o).expect("connect");
    assert_eq!(q.cntlid(), 5);
    assert_eq!(q.qid(), 0);
    assert_eq!(q.maxh2cdata(), 0x10000);
    assert!(!q.hdr_digest() && !q.data_digest());
    q.close();
    t.join().unwrap();
}

#[test]
fn read_completed_by_c2h_data_success_with_digests() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        let req = c.ic(0, 0x10000);
        assert!(req.hdgst && req.ddgst);
        let (cmd, _) = c.connect(1);
        assert_eq!(cmd.cdw11 >> 16, 0x04, "CATTR: SQ flow control disabled");
        let (cmd, data) = c.recv_cmd().unwrap();
        assert_eq!(cmd.opcode, 0x02);
        assert_eq!(cmd.nsid, 1);
        assert_eq!((cmd.cdw10, cmd.cdw11, cmd.cdw12), (100, 0, 7));
        assert_eq!(cmd.dptr, command::sgl_descriptor(0, 4096, 0x5A));
        assert!(data.is_empty());
        let d = pattern(4096, 1);
        c.c2h(cmd.cid, 0, &d[..1024], false, false);
        c.c2h(cmd.cid, 1024, &d[1024..], true, true);
        assert!(c.recv().is_none());
    });
    let o = QueueOptions {
        hdr_digest: true,
        data_digest: true,
        disable_sqflow: true,
        ..opts()
    };
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &o).expect("connect");
    assert!(q.hdr_digest() && q.data_digest());
    let r = q.execute(Command::read(1, 100, 7), None, 4096).unwrap();
    assert!(r.is_success());
    assert!(r.c2h_success);
    assert_eq!(r.data, pattern(4096, 1));
    assert_eq!(q.outstanding(), 0);
    q.close();
    t.join().unwrap();
}

#[test]
fn write_answers_r2t_with_h2c_data_sized_by_maxh2cdata() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 4096);
        c.connect(1);
        // Large write: transport SGL, no in-capsule data.
        let (cmd, data) = c.recv_cmd().unwrap();
        assert_eq!(cmd.opcode, 0x01);
        assert_eq!(cmd.cdw12, 19, "NLB 20 blocks, 0's based");
        assert_eq!(cmd.dptr, command::sgl_descriptor(0, 10240, 0x5A));
        assert!(data.is_empty());
        let mut got = vec![0u8; 10240];
        for (r2to, r2tl, ttag) in [(0u32, 6000u32, 0x11u16), (6000, 4240, 0x22)] {
            c.send(&Pdu::R2t(R2t {
                cccid: cmd.cid,
                ttag,
                r2to,
                r2tl,
            }));
            let mut off = r2to;
            while off < r2to + r2tl {
                let d = match c.recv().unwrap() {
                    Pdu::H2cData(d) => d,
                    other => panic!("expected H2CData, got {other:?}"),
                };
                assert_eq!(d.cccid, cmd.cid);
                assert_eq!(d.ttag, ttag);
                assert_eq!(d.datao, off);
                let want = 4096.min(r2to + r2tl - off);
                assert_eq!(d.data.len() as u32, want, "H2CData size");
                assert_eq!(d.last, off + want == r2to + r2tl, "LAST_PDU");
                got[off as usize..(off + want) as usize].copy_from_slice(&d.data);
                off += want;
            }
        }
        assert_eq!(got, pattern(10240, 7));
        c.respond(cmd.cid, 0, 0, 0);
        // Small write: in-capsule.
        let (cmd, data) = c.recv_cmd().unwrap();
        assert_eq!(cmd.dptr, command::sgl_descriptor(0, 512, 0x01));
        assert_eq!(data, pattern(512, 9));
        c.respond(cmd.cid, 0, 0, 0);
        assert!(c.recv().is_none());
    });
    let o = QueueOptions {
        in_capsule_max: 4096,
        data_digest: true,
        ..opts()
    };
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &o).unwrap();
    assert_eq!(q.maxh2cdata(), 4096);
    q.write(1, 0, &pattern(10240, 7), 512).unwrap();
    q.write(1, 20, &pattern(512, 9), 512).unwrap();
    q.close();
    t.join().unwrap();
}

#[test]
fn c2h_term_req_terminates_the_queue() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let (_cmd, _) = c.recv_cmd().unwrap();
        c.send(&Pdu::C2hTermReq(TermReq {
            fes: pdu::FES_INVALID_HEADER_FIELD,
            fei: 3,
            data: vec![0x04, 0, 72, 0, 72, 0, 0, 0],
        }));
        // Then close the connection.
    });
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &opts()).unwrap();
    match q.execute(Command::flush(1), None, 0) {
        Err(Error::Terminated { fes, fei }) => assert_eq!((fes, fei), (1, 3)),
        other => panic!("expected Terminated, got {other:?}"),
    }
    // The queue stays dead.
    assert!(matches!(
        q.submit(Command::flush(1), None, 0),
        Err(Error::Terminated { fes: 1, fei: 3 })
    ));
    t.join().unwrap();
    q.wait_closed(Duration::from_secs(5)).unwrap();
    assert!(q.is_closed());
}

#[test]
fn raw_malformed_pdu_gets_term_req_and_close() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let raw = c.read_raw().unwrap();
        // CapsuleCmd with HLEN 70: the fake reports the HLEN field (offset 2).
        assert_eq!(raw[0], 0x04);
        assert_eq!(raw[2], 70);
        let hdr: Vec<u8> = raw.iter().take(70).copied().collect();
        c.send(&Pdu::C2hTermReq(TermReq {
            fes: pdu::FES_INVALID_HEADER_FIELD,
            fei: 2,
            data: hdr,
        }));
    });
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &opts()).unwrap();
    assert!(!q.is_closed());
    let mut bad = pdu::encode_capsule_cmd(&Command::flush(1).to_bytes(), &[], &q.tx_config());
    bad[2] = 70;
    bad.truncate(70);
    bad[4] = 70;
    q.send_raw(&bad).unwrap();
    match q.recv_raw_pdu().unwrap() {
        Pdu::C2hTermReq(t) => {
            assert_eq!(t.fes, 1);
            assert_eq!(t.fei, 2);
            assert_eq!(&t.data[..4], &[0x04, 0x00, 70, 0x00]);
        }
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    t.join().unwrap();
    q.wait_closed(Duration::from_secs(5)).unwrap();
    assert!(q.is_closed());
}

#[test]
fn several_commands_outstanding_complete_out_of_order() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let mut cmds = Vec::new();
        for _ in 0..3 {
            cmds.push(c.recv_cmd().unwrap().0);
        }
        // Distinct CIDs.
        assert_ne!(cmds[0].cid, cmds[1].cid);
        assert_ne!(cmds[1].cid, cmds[2].cid);
        // Answer in reverse order, interleaving data of two reads.
        let (a, b) = (cmds[2].cid, cmds[1].cid);
        c.c2h(a, 0, &pattern(256, 2)[..128], false, false);
        c.c2h(b, 0, &pattern(512, 1)[..512], true, false);
        c.c2h(a, 128, &pattern(512, 2)[128..512], true, false);
        c.respond(a, 0, 0xA, 0);
        c.respond(b, 0, 0xB, 0);
        c.respond(cmds[0].cid, command::SC_LBA_RANGE, 0, 0);
        assert!(c.recv().is_none());
    });
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &opts()).unwrap();
    let c0 = q.submit(Command::read(1, 1 << 40, 0), None, 512).unwrap();
    let c1 = q.submit(Command::read(1, 1, 0), None, 512).unwrap();
    let c2 = q.submit(Command::read(1, 2, 0), None, 512).unwrap();
    assert_eq!(q.outstanding(), 3);
    // wait_for a specific command buffers the others.
    let r0 = q.wait_for(c0).unwrap();
    assert_eq!(r0.status, command::SC_LBA_RANGE);
    assert!(r0.dnr);
    assert!(r0.data.is_empty());
    let r2 = q.wait().unwrap();
    assert_eq!((r2.cid, r2.dw0), (c2, 0xA));
    assert_eq!(r2.data, pattern(512, 2));
    let r1 = q.wait().unwrap();
    assert_eq!((r1.cid, r1.dw0), (c1, 0xB));
    assert_eq!(r1.data, pattern(512, 1));
    assert!(matches!(q.wait(), Err(Error::Invalid(_))));
    q.close();
    t.join().unwrap();
}

#[test]
fn timeout_at_pdu_boundary_is_recoverable() {
    let (tx, rx) = mpsc::channel::<()>();
    let (addr, t) = spawn(move |l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let (cmd, _) = c.recv_cmd().unwrap();
        rx.recv().unwrap(); // answer only once the host has timed out
        c.respond(cmd.cid, 0, 0x77, 0);
        assert!(c.recv().is_none());
    });
    let o = QueueOptions {
        io_timeout: Duration::from_millis(200),
        ..opts()
    };
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &o).unwrap();
    let cid = q.submit(Command::flush(1), None, 0).unwrap();
    assert!(matches!(q.wait(), Err(Error::Timeout)));
    tx.send(()).unwrap();
    let r = q.wait_for(cid).unwrap();
    assert_eq!(r.dw0, 0x77);
    q.close();
    t.join().unwrap();
}

#[test]
fn peer_closing_is_reported() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let _ = c.recv_cmd().unwrap();
        // drop: close without answering
    });
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &opts()).unwrap();
    let r = q.execute(Command::flush(1), None, 0);
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(q.is_closed());
    t.join().unwrap();
}

/// Run one command against a fake target whose answer is produced by
/// `misbehave`, and return the host's protocol error message.
fn violation(
    o: QueueOptions,
    cmd: Command,
    data_out: Option<Vec<u8>>,
    data_in: u32,
    misbehave: impl FnOnce(&mut Conn, Command) + Send + 'static,
) -> String {
    let (addr, t) = spawn(move |l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let (cmd, _) = c.recv_cmd().unwrap();
        misbehave(&mut c, cmd);
        // Hold the connection until the host goes away.
        while c.read_raw().is_some() {}
    });
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &o).unwrap();
    let m = proto_msg(q.execute(cmd, data_out, data_in));
    // Further use reports the original failure.
    let again = proto_msg(q.submit(Command::flush(1), None, 0));
    assert!(again.contains(&m), "{again}");
    q.close();
    t.join().unwrap();
    m
}

#[test]
fn strict_unknown_cid() {
    let m = violation(opts(), Command::read(1, 0, 0), None, 512, |c, cmd| {
        c.c2h(cmd.cid.wrapping_add(1), 0, &[0; 512], true, false);
    });
    assert!(m.contains("C2HData for unknown CID"), "{m}");
    let m = violation(opts(), Command::flush(1), None, 0, |c, cmd| {
        c.respond(cmd.cid ^ 0x100, 0, 0, 0);
    });
    assert!(m.contains("CapsuleResp for unknown CID"), "{m}");
}

#[test]
fn strict_data_offset_order() {
    let m = violation(opts(), Command::read(1, 0, 1), None, 1024, |c, cmd| {
        c.c2h(cmd.cid, 512, &[0; 512], false, false);
    });
    assert!(m.contains("DATAO 512 out of order, expected 0"), "{m}");
    let m = violation(opts(), Command::read(1, 0, 0), None, 512, |c, cmd| {
        c.c2h(cmd.cid, 0, &[0; 1024], true, false);
    });
    assert!(m.contains("exceeds the command's data length 512"), "{m}");
    let m = violation(opts(), Command::read(1, 0, 1), None, 1024, |c, cmd| {
        c.c2h(cmd.cid, 0, &[0; 512], true, false);
    });
    assert!(m.contains("LAST_PDU after 512 of 1024"), "{m}");
}

#[test]
fn strict_success_flag_needs_sqflow_disabled() {
    let m = violation(opts(), Command::read(1, 0, 0), None, 512, |c, cmd| {
        c.c2h(cmd.cid, 0, &[0; 512], true, true);
    });
    assert!(m.contains("SUCCESS flag"), "{m}");
}

#[test]
fn strict_completion_sqid() {
    let m = violation(opts(), Command::flush(1), None, 0, |c, cmd| {
        c.qid = 0;
        c.respond(cmd.cid, 0, 0, 0);
    });
    assert!(m.contains("SQID 0 but this is queue 1"), "{m}");
}

#[test]
fn lenient_accepts_what_spdk_sends() {
    // SPDK's nvmf_tgt sets C2HData SUCCESS without SQ flow control being
    // disabled, and answers with SQID 0 on I/O queues; the tools accept it.
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        c.qid = 0;
        let (cmd, _) = c.recv_cmd().unwrap();
        c.c2h(cmd.cid, 0, &[0x42; 512], true, true);
        let (cmd, _) = c.recv_cmd().unwrap();
        c.respond(cmd.cid, 0, 0x99, 0);
        while c.read_raw().is_some() {}
    });
    let o = QueueOptions {
        lenient: true,
        ..opts()
    };
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &o).unwrap();
    let r = q.execute(Command::read(1, 0, 0), None, 512).unwrap();
    assert!(r.c2h_success);
    assert_eq!(r.data, vec![0x42; 512]);
    let r = q.execute(Command::flush(1), None, 0).unwrap();
    assert_eq!(r.dw0, 0x99);
    q.close();
    t.join().unwrap();
}

#[test]
fn strict_response_before_data() {
    let m = violation(opts(), Command::read(1, 0, 0), None, 512, |c, cmd| {
        c.respond(cmd.cid, 0, 0, 0);
    });
    assert!(m.contains("after only 0 of 512 data bytes"), "{m}");
    // An error status without data is fine: checked in the QD test above.
    let o = QueueOptions {
        in_capsule_max: 0,
        ..opts()
    };
    let m = violation(
        o,
        Command::write(1, 0, 0),
        Some(vec![1; 512]),
        0,
        |c, cmd| {
            c.respond(cmd.cid, 0, 0, 0);
        },
    );
    assert!(m.contains("before the write data was requested"), "{m}");
}

#[test]
fn strict_r2t_checks() {
    let m = violation(
        opts(),
        Command::write(1, 0, 0),
        Some(vec![1; 512]),
        0,
        |c, cmd| {
            c.send(&Pdu::R2t(R2t {
                cccid: cmd.cid,
                ttag: 1,
                r2to: 0,
                r2tl: 512,
            }));
        },
    );
    assert!(m.contains("sent in-capsule"), "{m}");
    let o = QueueOptions {
        in_capsule_max: 0,
        ..opts()
    };
    let m = violation(
        o,
        Command::write(1, 0, 0),
        Some(vec![1; 512]),
        0,
        |c, cmd| {
            c.send(&Pdu::R2t(R2t {
                cccid: cmd.cid,
                ttag: 1,
                r2to: 256,
                r2tl: 256,
            }));
        },
    );
    assert!(m.contains("R2TO 256 out of order, expected 0"), "{m}");
    let m = violation(opts(), Command::read(1, 0, 0), None, 512, |c, cmd| {
        c.send(&Pdu::R2t(R2t {
            cccid: cmd.cid,
            ttag: 1,
            r2to: 0,
            r2tl: 512,
        }));
    });
    assert!(m.contains("transfers no data to the controller"), "{m}");
}

#[test]
fn strict_header_digest_and_framing() {
    let o = QueueOptions {
        hdr_digest: true,
        ..opts()
    };
    let m = violation(o.clone(), Command::flush(1), None, 0, |c, cmd| {
        let cqe = Cqe {
            dw0: 0,
            dw1: 0,
            sqhd: 1,
            sqid: 1,
            cid: cmd.cid,
            status_raw: 0,
        };
        let mut b = Pdu::CapsuleResp(CapsuleResp {
            cqe: cqe.to_bytes(),
        })
        .encode(&c.c2h);
        b[25] ^= 0x40;
        c.send_bytes(&b);
    });
    assert!(m.contains("CapsuleResp: header digest mismatch"), "{m}");
    // Digest negotiated but missing.
    let m = violation(o, Command::flush(1), None, 0, |c, cmd| {
        let cqe = Cqe {
            dw0: 0,
            dw1: 0,
            sqhd: 1,
            sqid: 1,
            cid: cmd.cid,
            status_raw: 0,
        };
        let b = Pdu::CapsuleResp(CapsuleResp {
            cqe: cqe.to_bytes(),
        })
        .encode(&PduConfig::default());
        assert_eq!(b[1] & FLAG_HDGSTF, 0);
        c.send_bytes(&b);
    });
    assert!(m.contains("HDGSTF flag is clear"), "{m}");
    // Wrong HLEN for R2T.
    let m = violation(opts(), Command::flush(1), None, 0, |c, _cmd| {
        let mut b = vec![0u8; 28];
        b[0] = 0x09;
        b[2] = 28;
        b[4] = 28;
        c.send_bytes(&b);
    });
    assert!(m.contains("R2T: HLEN 28 is wrong, must be 24"), "{m}");
    // A host-to-controller PDU type from the controller.
    let m = violation(opts(), Command::flush(1), None, 0, |c, cmd| {
        let b = Pdu::H2cData(DataPdu {
            cccid: cmd.cid,
            ttag: 0,
            datao: 0,
            last: true,
            success: false,
            data: vec![0; 4],
        })
        .encode(&c.c2h);
        c.send_bytes(&b);
    });
    assert!(m.contains("unexpected H2CData PDU"), "{m}");
    // Wrong SQID in the CQE.
    let m = violation(opts(), Command::flush(1), None, 0, |c, cmd| {
        c.qid = 3;
        c.respond(cmd.cid, 0, 0, 0);
    });
    assert!(m.contains("SQID 3 but this is queue 1"), "{m}");
}

#[test]
fn icresp_problems() {
    // Digest enabled that the host did not request.
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        let _ = c.read_raw().unwrap();
        c.send(&Pdu::IcResp(IcResp {
            pfv: 0,
            cpda: 0,
            hdgst: true,
            ddgst: false,
            maxh2cdata: 8192,
        }));
        let _ = c.read_raw();
    });
    let m = proto_msg(Queue::connect(addr, 0, SUBNQN, 0xFFFF, &opts()));
    assert!(m.contains("enables header digests"), "{m}");
    t.join().unwrap();

    // Connect rejected with a status.
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        let (cmd, _) = c.recv_cmd().unwrap();
        c.respond(cmd.cid, command::SC_CONNECT_INVALID_HOST, 0, 0);
        let _ = c.read_raw();
    });
    match Queue::connect(addr, 0, SUBNQN, 0xFFFF, &opts()) {
        Err(Error::Status { status, dnr, .. }) => {
            assert_eq!(status, 0x0184);
            assert!(dnr);
        }
        other => panic!("{other:?}"),
    }
    t.join().unwrap();

    // Nothing listening.
    let (l, addr) = listener();
    drop(l);
    assert!(Queue::connect(addr, 0, SUBNQN, 0xFFFF, &opts()).is_err());
}

#[test]
fn cpda_padding_is_honoured() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(7, 8192); // 32-byte alignment for host data
        let raw = c.read_raw().unwrap(); // Connect with 1024 bytes in-capsule
        assert_eq!(raw[3], 96, "PDO: 72 + 4 (HDGST) rounded up to 32");
        assert!(raw[76..96].iter().all(|&b| b == 0));
        let p = pdu::decode(&raw, &c.h2c).unwrap();
        let Pdu::CapsuleCmd(cc) = p else { panic!() };
        let cmd = Command::from_bytes(&cc.sqe);
        c.qid = 0;
        c.respond(cmd.cid, 0, 9, 0);
        assert!(c.recv().is_none());
    });
    let o = QueueOptions {
        hdr_digest: true,
        ..opts()
    };
    let q = Queue::connect(addr, 0, SUBNQN, 0xFFFF, &o).unwrap();
    assert_eq!(q.cpda(), 7);
    assert_eq!(q.cntlid(), 9);
    q.close();
    t.join().unwrap();
}

#[test]
fn compare_and_write_is_fused() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let (a, da) = c.recv_cmd().unwrap();
        let (b, db) = c.recv_cmd().unwrap();
        assert_eq!((a.opcode, a.flags), (0x05, 0x41));
        assert_eq!((b.opcode, b.flags), (0x01, 0x42));
        assert_eq!((a.cdw10, a.cdw12), (8, 0));
        assert_eq!((b.cdw10, b.cdw12), (8, 0));
        assert_eq!(da, vec![1; 512]);
        assert_eq!(db, vec![2; 512]);
        c.respond(a.cid, command::SC_COMPARE_FAILED, 0, 0);
        c.respond(b.cid, command::SC_FUSED_FAIL, 0, 0);
        assert!(c.recv().is_none());
    });
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &opts()).unwrap();
    let (r1, r2) = q
        .compare_and_write(1, 8, &[1; 512], &[2; 512], 512)
        .unwrap();
    assert_eq!(r1.status, 0x0285);
    assert_eq!(r2.status, 0x0009);
    q.close();
    t.join().unwrap();
}

#[test]
fn dsm_and_copy_payloads() {
    let (addr, t) = spawn(|l| {
        let mut c = Conn::accept(&l);
        c.ic(0, 8192);
        c.connect(1);
        let (d, data) = c.recv_cmd().unwrap();
        assert_eq!((d.opcode, d.cdw10, d.cdw11), (0x09, 1, 4));
        assert_eq!(data.len(), 32);
        assert_eq!(&data[4..8], &8u32.to_le_bytes());
        assert_eq!(&data[8..16], &16u64.to_le_bytes());
        assert_eq!(&data[20..24], &1u32.to_le_bytes());
        assert_eq!(&data[24..32], &99u64.to_le_bytes());
        c.respond(d.cid, 0, 0, 0);
        let (cp, data) = c.recv_cmd().unwrap();
        assert_eq!((cp.opcode, cp.cdw10, cp.cdw12), (0x19, 1000, 0));
        assert_eq!(data.len(), 32);
        assert_eq!(&data[8..16], &5u64.to_le_bytes());
        assert_eq!(&data[16..18], &3u16.to_le_bytes());
        c.respond(cp.cid, 0, 0, 0);
        assert!(c.recv().is_none());
    });
    let mut q = Queue::connect(addr, 1, SUBNQN, 1, &opts()).unwrap();
    q.dsm_deallocate(1, &[(16, 8), (99, 1)]).unwrap();
    q.copy(1, 1000, &[(5, 4)]).unwrap();
    assert!(matches!(q.copy(1, 0, &[(5, 0)]), Err(Error::Invalid(_))));
    assert!(matches!(q.dsm_deallocate(1, &[]), Err(Error::Invalid(_))));
    q.close();
    t.join().unwrap();
}

// ------------------------------------------------ fake controller (admin)

/// A small admin-command model: enough for Controller::connect, identify,
/// discovery and shutdown.
struct Model {
    discovery: bool,
    cntlid: u16,
    genctr: u64,
    nsids: Vec<u32>,
    cc: u32,
    csts: u32,
    log_reads: u32,
}

fn disc_log(genctr: u64, port: u16) -> Vec<u8> {
    let mut b = vec![0u8; 1024 * 3];
    b[0..8].copy_from_slice(&genctr.to_le_bytes());
    b[8..16].copy_from_slice(&2u64.to_le_bytes());
    for (i, (subtype, nqn)) in [(3u8, DISCOVERY_NQN), (2, SUBNQN)].iter().enumerate() {
        let e = &mut b[1024 * (i + 1)..1024 * (i + 2)];
        e[0] = 3;
        e[1] = 1;
        e[2] = *subtype;
        e[3] = 0x02;
        e[4..6].copy_from_slice(&1u16.to_le_bytes());
        e[6..8].copy_from_slice(&0xffffu16.to_le_bytes());
        e[8..10].copy_from_slice(&32u16.to_le_bytes());
        let svc = port.to_string();
        e[32..32 + svc.len()].copy_from_slice(svc.as_bytes());
        e[256..256 + nqn.len()].copy_from_slice(nqn.as_bytes());
        e[512..521].copy_from_slice(b"127.0.0.1");
    }
    b
}

fn id_ctrl(m: &Model) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
    b[4..12].copy_from_slice(b"FAKE0001");
    b[24..33].copy_from_slice(b"Fake Ctrl");
    b[64..69].copy_from_slice(b"1.0.0");
    b[77] = 2; // mdts: 16 KiB with 4 KiB pages, forces chunked log reads
    b[78..80].copy_from_slice(&m.cntlid.to_le_bytes());
    b[80..84].copy_from_slice(&0x0002_0000u32.to_le_bytes());
    b[111] = if m.discovery { 2 } else { 1 };
    b[512] = 0x66;
    b[513] = 0x44;
    b[516..520].copy_from_slice(&(m.nsids.len() as u32).to_le_bytes());
    let nqn = if m.discovery { DISCOVERY_NQN } else { SUBNQN };
    b[768..768 + nqn.len()].copy_from_slice(nqn.as_bytes());
    b[1792..1796].copy_from_slice(&(8192u32 / 16 + 4).to_le_bytes());
    b[1796..1800].copy_from_slice(&1u32.to_le_bytes());
    b
}

fn id_ns(nsid: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..8].copy_from_slice(&(0x1000u64 * nsid as u64).to_le_bytes());
    b[8..16].copy_from_slice(&(0x1000u64 * nsid as u64).to_le_bytes());
    b[25] = 0; // one format
    b[104..120].copy_from_slice(&[nsid as u8; 16]);
    b[128..132].copy_from_slice(&[0, 0, 12, 0]); // 4096-byte blocks
    b
}

fn ns_descs(nsid: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0] = 3;
    b[1] = 16;
    b[4..20].copy_from_slice(&[0x10 + nsid as u8; 16]);
    b[20] = 2;
    b[21] = 16;
    b[24..40].copy_from_slice(&[nsid as u8; 16]);
    b
}

/// Answer one admin command that has already been read.
fn dispatch(c: &mut Conn, m: &mut Model, cmd: Command, port: u16) {
    let cid = cmd.cid;
    let send_data = |c: &mut Conn, d: &[u8]| {
        // Split into two C2HData PDUs to exercise reassembly.
        let h = d.len() / 2;
        c.c2h(cid, 0, &d[..h], false, false);
        c.c2h(cid, h as u32, &d[h..], true, false);
        c.respond(cid, 0, 0, 0);
    };
    match (cmd.opcode, cmd.fctype()) {
        (0x7F, 0x04) => {
            let v: u64 = match cmd.cdw11 {
                0x00 => {
                    assert_eq!(cmd.cdw10 & 7, 1, "CAP is 8 bytes");
                    let css = if m.discovery { 1u64 << 44 } else { 1u64 << 37 };
                    css | 2 << 24 | 127
                }
                0x08 => 0x0002_0000,
                0x14 => m.cc as u64,
                0x1C => m.csts as u64,
                o => panic!("unexpected property {o:#x}"),
            };
            c.respond(cid, 0, v as u32, (v >> 32) as u32);
        }
        (0x7F, 0x00) => {
            assert_eq!(cmd.cdw11, 0x14, "only CC is set");
            let v = cmd.cdw12;
            if m.cc & 1 == 0 && v & 1 == 1 {
                // Enabling: check IOSQES/IOCQES and CSS.
                assert_eq!((v >> 16) & 0xf, 6);
                assert_eq!((v >> 20) & 0xf, 4);
                assert_eq!((v >> 4) & 7, if m.discovery { 7 } else { 0 });
                m.csts |= 1;
            }
            if (v >> 14) & 3 == 1 {
                m.csts = (m.csts & !0xc) | 0x8; // shutdown complete
            }
            m.cc = v;
            c.respond(cid, 0, 0, 0);
        }
        (0x06, _) => {
            assert_eq!(cmd.dptr, command::sgl_descriptor(0, 4096, 0x5A));
            let cns = cmd.cdw10 as u8;
            let d = match cns {
                1 => id_ctrl(m),
                0 => id_ns(cmd.nsid),
                2 => {
                    let mut b = vec![0u8; 4096];
                    for (i, n) in m.nsids.iter().filter(|&&n| n > cmd.nsid).enumerate() {
                        b[4 * i..4 * i + 4].copy_from_slice(&n.to_le_bytes());
                    }
                    b
                }
                3 => ns_descs(cmd.nsid),
                _ => panic!("cns {cns}"),
            };
            send_data(c, &d);
        }
        (0x02, _) => {
            assert_eq!(cmd.cdw10 & 0xff, 0x70);
            let numd = ((cmd.cdw10 >> 16) | (cmd.cdw11 << 16)) + 1;
            let len = numd as usize * 4;
            let off = cmd.cdw12 as usize | (cmd.cdw13 as usize) << 32;
            assert!(len <= 16384, "log read of {len} exceeds MDTS");
            let log = disc_log(m.genctr, port);
            send_data(c, &log[off..off + len]);
            m.log_reads += 1;
            // The generation counter changes once, after the first read, so
            // the host has to retry.
            m.genctr = 7;
        }
        (0x09, _) => {
            assert_eq!(cmd.cdw10 & 0xff, 7);
            assert_eq!(cmd.cdw11, 0x0002_0002, "asked for 3 queues, 0's based");
            // Grant 2 queues.
            c.respond(cid, 0, 0x0001_0001, 0);
        }
        (0x18, _) => c.respond(cid, 0, 0, 0),
        (op, _) => panic!("unexpected admin opcode {op:#x}"),
    }
}

fn spawn_controller(discovery: bool, io_queues: u16) -> (SocketAddr, JoinHandle<Model>) {
    let (l, addr) = listener();
    let port = addr.port();
    let t = thread::spawn(move || {
        let mut m = Model {
            discovery,
            cntlid: 0x21,
            genctr: 6,
            nsids: if discovery { vec![] } else { vec![1, 3] },
            cc: 0,
            csts: 0,
            log_reads: 0,
        };
        let mut admin = Conn::accept(&l);
        admin.ic(0, 8192);
        let (_, data) = admin.connect(m.cntlid);
        assert_eq!(&data[16..18], &0xFFFFu16.to_le_bytes());
        let nqn = if discovery { DISCOVERY_NQN } else { SUBNQN };
        assert_eq!(&data[256..256 + nqn.len()], nqn.as_bytes());
        let mut ios = Vec::new();
        if io_queues > 0 {
            // Serve admin commands up to Number of Queues, then accept the
            // I/O queue connections.
            loop {
                let (cmd, _) = admin.recv_cmd().expect("admin command");
                let last = cmd.opcode == 0x09;
                dispatch(&mut admin, &mut m, cmd, port);
                if last {
                    break;
                }
            }
            for qid in 1..=2u16 {
                let mut q = Conn::accept(&l);
                q.ic(0, 8192);
                let (c, data) = q.connect(m.cntlid);
                assert_eq!((c.cdw10 >> 16) as u16, qid);
                assert_eq!(
                    c.cdw11 & 0xffff,
                    127,
                    "queue size clamped to CAP.MQES + 1 = 128"
                );
                assert_eq!(c.cdw12, 0, "KATO is 0 on I/O queues");
                assert_eq!(&data[16..18], &m.cntlid.to_le_bytes());
                ios.push(q);
            }
        }
        while let Some((cmd, _)) = admin.recv_cmd() {
            dispatch(&mut admin, &mut m, cmd, port);
        }
        for mut q in ios {
            assert!(q.recv().is_none());
        }
        m
    });
    (addr, t)
}

// ------------------------------------------------ Controller / discover tests

#[test]
fn discover_reads_whole_log_and_retries_on_genctr_change() {
    let (addr, t) = spawn_controller(true, 0);
    let log = discover(addr, &opts()).expect("discover");
    assert_eq!(log.genctr, 7);
    assert_eq!(log.numrec, 2);
    assert_eq!(log.entries.len(), 2);
    assert_eq!(log.entries[0].subnqn, DISCOVERY_NQN);
    assert_eq!(log.entries[1].subnqn, SUBNQN);
    assert_eq!(log.entries[1].traddr, "127.0.0.1");
    assert_eq!(log.entries[1].trsvcid, addr.port().to_string());
    let m = t.join().unwrap();
    // Shutdown was requested and completed.
    assert_eq!((m.cc >> 14) & 3, 1);
    assert_eq!(m.csts & 0xc, 0x8);
    // First round: header + 1 chunk (3 KiB) + header (changed); second
    // round: the same three reads.
    assert_eq!(m.log_reads, 6);
}

#[test]
fn controller_connect_with_io_queues_and_shutdown() {
    let (addr, t) = spawn_controller(false, 3);
    let o = QueueOptions {
        queue_size: 1024,
        ..opts()
    };
    let mut c = Controller::connect(addr, SUBNQN, &o, 3).expect("controller connect");
    assert_eq!(c.cntlid, 0x21);
    assert_eq!(c.vs, 0x0002_0000);
    assert_eq!(c.cap & 0xffff, 127);
    assert_eq!(c.cc & 1, 1);
    assert_eq!(c.id.sn, "FAKE0001");
    assert_eq!(c.id.mn, "Fake Ctrl");
    assert_eq!(c.io.len(), 2, "granted 2 of 3");
    for (i, q) in c.io.iter().enumerate() {
        assert_eq!(q.qid(), i as u16 + 1);
        assert_eq!(q.cntlid(), 0x21);
        assert_eq!(q.in_capsule_max(), 8192);
    }
    assert_eq!(c.max_transfer_size(), 16384);
    assert_eq!(c.active_namespaces().unwrap(), vec![1, 3]);
    let ns = c.identify_namespace(3).unwrap();
    assert_eq!(ns.nsze, 0x3000);
    assert_eq!(ns.block_size(), Some(4096));
    let d = c.ns_descriptors(3).unwrap();
    assert_eq!(d.len(), 2);
    c.keep_alive().unwrap();
    c.shutdown().expect("shutdown");
    let m = t.join().unwrap();
    assert_eq!(m.csts & 0xc, 0x8);
}

#[test]
fn nvmf_discover_tool_output() {
    let (addr, t) = spawn_controller(true, 0);
    let out = Proc::new(env!("CARGO_BIN_EXE_nvmf-discover"))
        .args(["-a", "127.0.0.1", "-s", &addr.port().to_string()])
        .output()
        .expect("run nvmf-discover");
    t.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Discovery Log Number of Records 2, Generation counter 7\n"));
    assert!(stdout.contains(
        "=====Discovery Log Entry 1======\ntrtype:  tcp\nadrfam:  ipv4\nsubtype: nvme subsystem\n"
    ));
    assert!(stdout.contains(&format!("subnqn:  {SUBNQN}\n")));
    assert!(stdout.contains("sectype: none\n"));

    let (addr, t) = spawn_controller(true, 0);
    let out = Proc::new(env!("CARGO_BIN_EXE_nvmf-discover"))
        .args([
            "-a",
            "127.0.0.1",
            "-s",
            &addr.port().to_string(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    t.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("\"genctr\":7"), "{stdout}");
    assert!(stdout.contains(&format!("\"subnqn\":\"{SUBNQN}\"")));
}

#[test]
fn nvmf_identify_tool_output() {
    let (addr, t) = spawn_controller(false, 0);
    let out = Proc::new(env!("CARGO_BIN_EXE_nvmf-identify"))
        .args([
            "-a",
            "127.0.0.1",
            "-s",
            &addr.port().to_string(),
            "-n",
            SUBNQN,
        ])
        .output()
        .expect("run nvmf-identify");
    let m = t.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("NVME Identify Controller:\nvid       : 0x1b36\n"));
    assert!(stdout.contains("\nsn        : FAKE0001\n"));
    assert!(stdout.contains("\ncntlid    : 0x21\n"));
    assert!(stdout.contains("\nNVME Identify Namespace 3:\nnsze    : 0x3000\n"));
    assert!(stdout.contains("\nlbaf  0 : ms:0   lbads:12 rp:0 (in use)\n"));
    assert!(stdout.contains("NVME Namespace Identification Descriptors NS 1:\nuuid    : 11111111-1111-1111-1111-111111111111\nnguid   : 01010101010101010101010101010101\n"));
    // Disconnected cleanly: shutdown completed.
    assert_eq!(m.csts & 0xc, 0x8);
}

#[test]
fn tools_fail_cleanly_without_a_target() {
    let (l, addr) = listener();
    drop(l);
    let out = Proc::new(env!("CARGO_BIN_EXE_nvmf-identify"))
        .args([
            "-a",
            "127.0.0.1",
            "-s",
            &addr.port().to_string(),
            "-n",
            SUBNQN,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("nvmf-identify: connecting to"), "{err}");
    let out = Proc::new(env!("CARGO_BIN_EXE_nvmf-discover"))
        .args(["-a", "127.0.0.1", "-s", &addr.port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("nvmf-discover: discovery at"));
}
