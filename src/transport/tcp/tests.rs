//! State-machine tests of an NVMe/TCP connection and its fabrics queue, fed
//! raw bytes: no sockets, no threads.

use super::conn::ConnParams;
use super::host::{self, Loopback};
use super::pdu::{self, fes, flags, pdu_type};
use crate::config::Config;
use crate::nvme::{le16, le32, put16, sgl_id, Command, Completion, Sgl, Status};
use crate::subsystem::Target;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2026-01.io.nvmf-target:test";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

fn target() -> Arc<Target> {
    let text = format!(
        r#"
[target]
max_io_size = 131072
in_capsule_data_size = 8192
[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = 4420
[[subsystem]]
nqn = "{SUBNQN}"
allow_any_host = true
[[subsystem.namespace]]
backend = "ram"
size = "4MiB"
block_size = 512
[[subsystem]]
nqn = "nqn.2026-01.io.nvmf-target:private"
hosts = ["nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"]
[[subsystem.namespace]]
backend = "null"
size = "1MiB"
"#
    );
    let cfg = Config::parse(&text, "test.toml").expect("test config parses");
    Arc::new(Target::new(&cfg).expect("target opens"))
}

/// A minimal host: encodes PDUs, decodes the target's output.
struct Host {
    conn: Loopback,
    now: Instant,
    hdgst: bool,
    ddgst: bool,
    cid: u16,
    /// Bytes the target sent that are not parsed yet.
    rx: Vec<u8>,
}

#[derive(Debug)]
enum Got {
    IcResp(Vec<u8>),
    Resp(Completion),
    Data {
        cid: u16,
        off: u32,
        data: Vec<u8>,
        fl: u8,
    },
    R2t {
        cid: u16,
        ttag: u16,
        off: u32,
        len: u32,
    },
    Term {
        fes: u16,
        fei: u32,
    },
}

impl Host {
    fn new(t: &Arc<Target>) -> Host {
        let params = ConnParams {
            max_io_size: 131072,
            allow_hdgst: true,
            allow_ddgst: true,
        };
        Host {
            conn: Loopback::new(t.clone(), params, 8192),
            now: Instant::now(),
            hdgst: false,
            ddgst: false,
            cid: 0,
            rx: Vec::new(),
        }
    }

    fn send(&mut self, b: &[u8]) {
        self.conn.receive(b, self.now);
        let mut bufs = Vec::new();
        self.conn.take_output(&mut bufs);
        for b in bufs {
            b.extend_into(&mut self.rx);
        }
    }

    fn recv(&mut self) -> Option<Got> {
        if self.rx.len() < 8 {
            return None;
        }
        let plen = le32(&self.rx, 4) as usize;
        assert!(self.rx.len() >= plen, "partial PDU in output");
        let p: Vec<u8> = self.rx.drain(..plen).collect();
        let hd = if p[1] & flags::HDGSTF != 0 { 4 } else { 0 };
        if hd > 0 {
            let hlen = p[2] as usize;
            assert_eq!(le32(&p, hlen), pdu::crc32c(&p[..hlen]), "header digest");
        }
        Some(match p[0] {
            pdu_type::IC_RESP => Got::IcResp(p),
            pdu_type::CAPSULE_RESP => {
                let mut c = [0u8; 16];
                c.copy_from_slice(&p[8..24]);
                Got::Resp(Completion::parse(&c))
            }
            pdu_type::C2H_DATA => {
                let pdo = p[3] as usize;
                let len = le32(&p, 16) as usize;
                let data = p[pdo..pdo + len].to_vec();
                if p[1] & flags::DDGSTF != 0 {
                    assert_eq!(le32(&p, pdo + len), pdu::crc32c(&data), "data digest");
                }
                Got::Data {
                    cid: le16(&p, 8),
                    off: le32(&p, 12),
                    data,
                    fl: p[1],
                }
            }
            pdu_type::R2T => Got::R2t {
                cid: le16(&p, 8),
                ttag: le16(&p, 10),
                off: le32(&p, 12),
                len: le32(&p, 16),
            },
            pdu_type::C2H_TERM_REQ => Got::Term {
                fes: le16(&p, 8),
                fei: le32(&p, 10),
            },
            t => panic!("unexpected PDU type {t}"),
        })
    }

    fn icreq(&mut self, hdgst: bool, ddgst: bool) {
        let b = host::icreq(hdgst, ddgst);
        self.send(&b);
        match self.recv() {
            Some(Got::IcResp(p)) => {
                assert_eq!(p[11], b[11], "digests granted as asked");
                assert!(le32(&p, 12) >= 4096, "MAXH2CDATA");
            }
            g => panic!("expected ICResp, got {g:?}"),
        }
        self.hdgst = hdgst;
        self.ddgst = ddgst;
    }

    fn capsule_bytes(&self, cmd: &Command, data: &[u8]) -> Vec<u8> {
        host::capsule(cmd, data, self.hdgst, self.ddgst)
    }

    /// Sends a command; `inline` puts write data in the capsule, otherwise
    /// the SGL asks for R2T (`xfer` bytes for reads or R2T writes).
    fn submit(&mut self, mut cmd: Command, inline: &[u8], xfer: u32) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        cmd.cid = self.cid;
        host::set_sgl(&mut cmd, inline.len(), xfer);
        let b = self.capsule_bytes(&cmd, inline);
        self.send(&b);
        cmd.cid
    }

    fn h2c(&mut self, cid: u16, ttag: u16, off: u32, data: &[u8], last: bool) {
        let b = host::h2c_data(cid, ttag, off, data, last, self.hdgst, self.ddgst);
        self.send(&b);
    }

    /// Runs a command to completion: returns its completion and any data.
    fn exec(&mut self, cmd: Command, inline: &[u8], xfer: u32) -> (Completion, Vec<u8>) {
        let cid = self.submit(cmd, inline, xfer);
        let mut data = Vec::new();
        loop {
            match self.recv() {
                Some(Got::Resp(c)) => {
                    assert_eq!(c.cid, cid);
                    return (c, data);
                }
                Some(Got::Data {
                    cid: c,
                    off,
                    data: d,
                    fl,
                }) => {
                    assert_eq!((c, off as usize), (cid, data.len()));
                    data.extend_from_slice(&d);
                    if fl & flags::SUCCESS != 0 {
                        return (
                            Completion {
                                cid,
                                ..Default::default()
                            },
                            data,
                        );
                    }
                }
                g => panic!("unexpected {g:?}"),
            }
        }
    }

    fn connect(
        &mut self,
        qid: u16,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
        kato: u32,
        cattr: u8,
    ) -> Completion {
        let (cmd, data) = host::connect(qid, cntlid, subnqn, hostnqn, kato, cattr);
        self.exec(cmd, &data, 0).0
    }

    fn prop_set_cc(&mut self, v: u32) -> Completion {
        let cmd = Command {
            opcode: 0x7F,
            nsid: 0x00,
            cdw11: 0x14,
            cdw12: v,
            ..Default::default()
        };
        self.exec(cmd, &[], 0).0
    }

    fn prop_get(&mut self, off: u32, size8: bool) -> u64 {
        let cmd = Command {
            opcode: 0x7F,
            nsid: 0x04,
            cdw10: size8 as u32,
            cdw11: off,
            ..Default::default()
        };
        let (c, _) = self.exec(cmd, &[], 0);
        assert!(c.status.is_success(), "{:?}", c.status);
        c.dw0 as u64 | ((c.dw1 as u64) << 32)
    }

    /// ICReq, admin Connect, CC.EN = 1: returns the controller ID.
    fn admin_up(&mut self, hd: bool, dd: bool) -> u16 {
        self.icreq(hd, dd);
        let c = self.connect(0, 0xFFFF, SUBNQN, HOSTNQN, 0, 0);
        assert!(c.status.is_success(), "{:?}", c.status);
        assert!(self
            .prop_set_cc(1 | (6 << 16) | (4 << 20))
            .status
            .is_success());
        assert_eq!(self.prop_get(0x1C, false) & 1, 1, "CSTS.RDY");
        c.dw0 as u16
    }
}

/// An enabled controller's admin host and one connected I/O queue (qid 1)
/// with the given digests.
fn io_up(t: &Arc<Target>, hd: bool, dd: bool) -> (Host, Host) {
    let mut a = Host::new(t);
    let cntlid = a.admin_up(false, false);
    let mut q = Host::new(t);
    q.icreq(hd, dd);
    let c = q.connect(1, cntlid, SUBNQN, HOSTNQN, 0, 0);
    assert!(c.status.is_success(), "{:?}", c.status);
    (a, q)
}

use host::rw;

#[test]
fn admin_connect_enable_identify() {
    let t = target();
    let mut h = Host::new(&t);
    h.icreq(true, true);
    // Admin commands before Connect are a sequence error.
    let (c, _) = h.exec(
        Command {
            opcode: 0x06,
            cdw10: 1,
            ..Default::default()
        },
        &[],
        4096,
    );
    assert_eq!(c.status.code(), Status::COMMAND_SEQUENCE_ERROR);
    let c = h.connect(0, 0xFFFF, SUBNQN, HOSTNQN, 0, 0);
    assert!(c.status.is_success());
    let cap = h.prop_get(0, true);
    assert_eq!(cap & 0xFFFF, 127, "MQES from max_queue_depth");
    assert_ne!(cap & (1 << 37), 0, "NVM command set");
    assert_eq!(h.prop_get(0x08, false), 0x10400);
    // Before CC.EN, Identify is refused.
    let (c, _) = h.exec(
        Command {
            opcode: 0x06,
            cdw10: 1,
            ..Default::default()
        },
        &[],
        4096,
    );
    assert_eq!(c.status.code(), Status::COMMAND_SEQUENCE_ERROR);
    h.prop_set_cc(1 | (6 << 16) | (4 << 20));
    let (c, id) = h.exec(
        Command {
            opcode: 0x06,
            cdw10: 1,
            ..Default::default()
        },
        &[],
        4096,
    );
    assert!(c.status.is_success());
    assert_eq!(id.len(), 4096);
    assert_eq!(crate::nvme::get_str(&id, 768, 256), SUBNQN);
    assert_eq!(id[111], 1, "I/O controller");
    assert_eq!(id[77], 5, "MDTS for 128 KiB");
    // Shutdown reports completion.
    h.prop_set_cc(1 | (6 << 16) | (4 << 20) | (1 << 14));
    assert_eq!((h.prop_get(0x1C, false) >> 2) & 3, 2);
}

#[test]
fn io_queue_write_read_with_digests_in_capsule_and_r2t() {
    let t = target();
    let (_admin, mut q) = io_up(&t, true, true);
    // In-capsule write of 4 KiB.
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let (c, _) = q.exec(rw(0x01, 1, 8, 8), &data, 0);
    assert!(c.status.is_success());
    // R2T write of 64 KiB in two H2CData PDUs.
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let cid = q.submit(rw(0x01, 1, 100, 128), &[], 65536);
    let Some(Got::R2t {
        cid: rc,
        ttag,
        off,
        len,
    }) = q.recv()
    else {
        panic!("no R2T")
    };
    assert_eq!((rc, off, len), (cid, 0, 65536));
    q.h2c(cid, ttag, 0, &big[..32768], false);
    assert!(q.recv().is_none(), "no completion before all data");
    q.h2c(cid, ttag, 32768, &big[32768..], true);
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert!(c.status.is_success() && c.cid == cid);
    // Read both back.
    let (c, r) = q.exec(rw(0x02, 1, 8, 8), &[], 4096);
    assert!(c.status.is_success());
    assert_eq!(r, data);
    let (_, r) = q.exec(rw(0x02, 1, 100, 128), &[], 65536);
    assert_eq!(r, big);
}

#[test]
fn success_flag_only_when_sq_flow_control_is_disabled() {
    let t = target();
    let mut a = Host::new(&t);
    let cntlid = a.admin_up(false, false);
    for (cattr, want_success) in [(0u8, false), (1 << 2, true)] {
        let mut q = Host::new(&t);
        q.icreq(false, false);
        let qid = if want_success { 2 } else { 1 };
        assert!(q
            .connect(qid, cntlid, SUBNQN, HOSTNQN, 0, cattr)
            .status
            .is_success());
        q.submit(rw(0x02, 1, 0, 1), &[], 512);
        let Some(Got::Data { fl, .. }) = q.recv() else {
            panic!("no data")
        };
        assert_eq!(fl & flags::SUCCESS != 0, want_success);
        assert_eq!(fl & flags::LAST_PDU, flags::LAST_PDU);
        assert_eq!(matches!(q.recv(), Some(Got::Resp(_))), !want_success);
    }
}

#[test]
fn io_errors_have_their_status() {
    let t = target();
    let (mut a, mut q) = io_up(&t, false, false);
    let blocks = 4 * 1024 * 1024 / 512;
    let cases: Vec<(Command, u32, Status)> = vec![
        (rw(0x02, 1, blocks - 1, 2), 1024, Status::LBA_OUT_OF_RANGE),
        (rw(0x02, 9, 0, 1), 512, Status::INVALID_NAMESPACE),
        (rw(0x02, 1, 0, 512), 512 * 512, Status::INVALID_FIELD), // beyond MDTS
        (
            Command {
                opcode: 0x7E,
                nsid: 1,
                ..Default::default()
            },
            0,
            Status::INVALID_OPCODE,
        ),
        (rw(0x02, 1, 0, 8), 512, Status::DATA_SGL_LENGTH_INVALID),
    ];
    for (cmd, xfer, want) in cases {
        let (c, _) = q.exec(cmd, &[], xfer);
        assert_eq!(c.status.code(), want, "opcode {:#x}", cmd.opcode);
        assert!(c.status.has_dnr());
    }
    // Compare failure, then a compare that matches.
    let (c, _) = q.exec(rw(0x05, 1, 0, 1), &[1u8; 512], 0);
    assert_eq!(c.status.code(), Status::COMPARE_FAILURE);
    let (c, _) = q.exec(rw(0x05, 1, 0, 1), &[0u8; 512], 0);
    assert!(c.status.is_success());
    // The error log of the controller saw them.
    let (c, log) = a.exec(
        Command {
            opcode: 0x02,
            cdw10: 0x01 | (15 << 16),
            ..Default::default()
        },
        &[],
        64,
    );
    assert!(c.status.is_success());
    assert_eq!(crate::nvme::le64(&log, 0), 6, "six errors counted");
}

#[test]
fn disallowed_host_and_unknown_subsystem_are_refused() {
    let t = target();
    let mut h = Host::new(&t);
    h.icreq(false, false);
    let c = h.connect(
        0,
        0xFFFF,
        "nqn.2026-01.io.nvmf-target:private",
        HOSTNQN,
        0,
        0,
    );
    assert_eq!(c.status.code(), Status::CONNECT_INVALID_HOST);
    assert_eq!(c.dw0, (1 << 16) | 512, "IATTR data, IPO hostnqn");
    let c = h.connect(0, 0xFFFF, "nqn.2026-01.io.nvmf-target:nope", HOSTNQN, 0, 0);
    assert_eq!(c.status.code(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(c.dw0, (1 << 16) | 256);
    // An I/O queue for a controller that does not exist.
    let c = h.connect(1, 77, SUBNQN, HOSTNQN, 0, 0);
    assert_eq!(c.status.code(), Status::CONNECT_INVALID_PARAMETERS);
}

#[test]
fn keep_alive_expiry_tears_down_the_controller() {
    let t = target();
    let mut a = Host::new(&t);
    a.icreq(false, false);
    let c = a.connect(0, 0xFFFF, SUBNQN, HOSTNQN, 1000, 0);
    let cntlid = c.dw0 as u16;
    a.prop_set_cc(1 | (6 << 16) | (4 << 20));
    let mut q = Host::new(&t);
    q.icreq(false, false);
    assert!(q
        .connect(1, cntlid, SUBNQN, HOSTNQN, 0, 0)
        .status
        .is_success());
    // A Keep Alive at 0.8 s keeps it alive past 1 s.
    a.now += Duration::from_millis(800);
    let (c, _) = a.exec(
        Command {
            opcode: 0x18,
            ..Default::default()
        },
        &[],
        0,
    );
    assert!(c.status.is_success());
    a.conn.tick(a.now + Duration::from_millis(900));
    assert!(!a.conn.is_closing());
    a.conn.tick(a.now + Duration::from_millis(1100));
    assert!(a.conn.is_closing());
    q.conn.tick(q.now);
    assert!(q.conn.is_closing(), "I/O queue follows its controller");
}

#[test]
fn malformed_pdus_get_a_terminate_request() {
    let t = target();
    // Unknown transfer tag.
    let mut q = Host::new(&t);
    q.admin_up(false, false);
    q.h2c(1, 42, 0, &[0u8; 16], true);
    match q.recv() {
        Some(Got::Term { fes: f, fei }) => assert_eq!((f, fei), (fes::INVALID_HEADER_FIELD, 10)),
        g => panic!("expected a terminate request, got {g:?}"),
    }
    assert!(q.conn.is_closing());
    // Bad header digest.
    let mut q = Host::new(&t);
    q.icreq(true, false);
    let mut b = q.capsule_bytes(
        &Command {
            opcode: 0x7F,
            nsid: 4,
            ..Default::default()
        },
        &[],
    );
    b[30] ^= 0xFF;
    q.send(&b);
    assert!(matches!(
        q.recv(),
        Some(Got::Term {
            fes: fes::HEADER_DIGEST_ERROR,
            ..
        })
    ));
    // Wrong HLEN.
    let mut q = Host::new(&t);
    q.icreq(false, false);
    let mut b = q.capsule_bytes(&Command::default(), &[]);
    b[2] = 71;
    q.send(&b);
    assert!(matches!(
        q.recv(),
        Some(Got::Term {
            fes: fes::INVALID_HEADER_FIELD,
            fei: 2
        })
    ));
    // Data beyond what the R2T asked for.
    let mut q = Host::new(&t);
    let mut a = Host::new(&t);
    let cntlid = a.admin_up(false, false);
    q.icreq(false, false);
    assert!(q
        .connect(1, cntlid, SUBNQN, HOSTNQN, 0, 0)
        .status
        .is_success());
    let cid = q.submit(rw(0x01, 1, 0, 1), &[], 512);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    q.h2c(cid, ttag, 0, &[0u8; 1024], true);
    assert!(matches!(
        q.recv(),
        Some(Got::Term {
            fes: fes::DATA_OUT_OF_RANGE,
            ..
        })
    ));
    // A data digest error completes the command with a transport error.
    let mut q = Host::new(&t);
    q.icreq(false, true);
    assert!(q
        .connect(2, cntlid, SUBNQN, HOSTNQN, 0, 0)
        .status
        .is_success());
    let mut cmd = rw(0x01, 1, 0, 1);
    cmd.cid = 9;
    cmd.flags = 0x40;
    cmd.dptr = Sgl {
        key: 0,
        address: 0,
        length: 512,
        id: sgl_id::DATA_BLOCK_OFFSET,
    }
    .to_bytes();
    let mut b = q.capsule_bytes(&cmd, &[5u8; 512]);
    let n = b.len();
    b[n - 1] ^= 1;
    q.send(&b);
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert_eq!(c.status.code(), Status(0x22));
    assert!(!q.conn.is_closing());
}

#[test]
fn bytes_split_at_every_boundary_still_frame() {
    let t = target();
    let mut h = Host::new(&t);
    h.icreq(false, false);
    let mut data = vec![0u8; 1024];
    crate::nvme::put_str(&mut data, 256, 256, SUBNQN, 0);
    crate::nvme::put_str(&mut data, 512, 256, HOSTNQN, 0);
    put16(&mut data, 16, 0xFFFF);
    let cmd = Command {
        opcode: 0x7F,
        flags: 0x40,
        cid: 1,
        nsid: 1,
        cdw11: 31,
        dptr: Sgl {
            key: 0,
            address: 0,
            length: 1024,
            id: sgl_id::DATA_BLOCK_OFFSET,
        }
        .to_bytes(),
        ..Default::default()
    };
    let b = h.capsule_bytes(&cmd, &data);
    for byte in b {
        h.send(&[byte]);
    }
    let Some(Got::Resp(c)) = h.recv() else {
        panic!("no completion")
    };
    assert!(c.status.is_success());
}

#[test]
fn h2c_data_streams_in_any_chunking_with_digests() {
    let t = target();
    let (_admin, mut q) = io_up(&t, true, true);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 % 253) as u8).collect();
    for (round, chunk) in [1usize, 7, 24, 28, 29, 1000, 4097, 70000]
        .into_iter()
        .enumerate()
    {
        let lba = round as u64 * 128;
        let cid = q.submit(rw(0x01, 1, lba, 128), &[], 65536);
        let Some(Got::R2t { ttag, .. }) = q.recv() else {
            panic!("no R2T")
        };
        // Two H2CData PDUs, concatenated, fed `chunk` bytes at a time.
        let mut wire = host::h2c_data(cid, ttag, 0, &data[..40000], false, true, true);
        wire.extend(host::h2c_data(
            cid,
            ttag,
            40000,
            &data[40000..],
            true,
            true,
            true,
        ));
        for piece in wire.chunks(chunk) {
            q.send(piece);
        }
        let Some(Got::Resp(c)) = q.recv() else {
            panic!("no completion (chunk {chunk})")
        };
        assert!(c.status.is_success(), "chunk {chunk}: {:?}", c.status);
        let (c, back) = q.exec(rw(0x02, 1, lba, 128), &[], 65536);
        assert!(c.status.is_success());
        assert!(back == data, "data differs after chunk size {chunk}");
    }
    // A corrupted data digest in a streamed PDU fails the command only.
    let cid = q.submit(rw(0x01, 1, 0, 8), &[], 4096);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    let mut wire = host::h2c_data(cid, ttag, 0, &[9u8; 4096], true, true, true);
    let n = wire.len();
    wire[n - 2] ^= 0x40;
    for piece in wire.chunks(100) {
        q.send(piece);
    }
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert_eq!(c.status.code(), Status(0x22));
    assert!(!q.conn.is_closing());
    // An unknown transfer tag is caught from the header alone.
    q.send(&host::h2c_data(cid, 99, 0, &[0u8; 4096], true, true, true)[..40]);
    assert!(matches!(
        q.recv(),
        Some(Got::Term {
            fes: fes::INVALID_HEADER_FIELD,
            fei: 10
        })
    ));
}

/// Feeds an H2CData PDU the way the reactor does for large data: the header
/// and the first bytes through `receive`, the data straight into the
/// write's buffer in `pieces`, the digest through `receive` again.
fn send_direct(q: &mut Host, wire: &[u8], head: usize, pieces: &[usize]) {
    q.send(&wire[..head]);
    let mut at = head;
    let data_end = wire.len() - 4; // data digest on
    for &n in pieces {
        let mut d = q.conn.take_direct(1).expect("buffer lent out for the data");
        assert_eq!(d.len, data_end - at, "asks for exactly the data left");
        assert!(q.conn.take_direct(1).is_none(), "lent out only once");
        let n = n.min(d.len);
        d.buf[d.offset..d.offset + n].copy_from_slice(&wire[at..at + n]);
        q.conn.direct_done(d, n, q.now);
        at += n;
    }
    assert_eq!(at, data_end, "pieces cover the data");
    assert!(q.conn.take_direct(1).is_none(), "no data left to lend for");
    q.send(&wire[data_end..]);
}

#[test]
fn h2c_data_received_straight_into_the_write_buffer() {
    let t = target();
    let (_admin, mut q) = io_up(&t, true, true);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 251) as u8).collect();
    for (round, pieces) in [vec![65436usize], vec![30000, 35436], vec![1, 65435]]
        .into_iter()
        .enumerate()
    {
        let lba = 512 + round as u64 * 128;
        let cid = q.submit(rw(0x01, 1, lba, 128), &[], 65536);
        let Some(Got::R2t { ttag, .. }) = q.recv() else {
            panic!("no R2T")
        };
        let wire = host::h2c_data(cid, ttag, 0, &data, true, true, true);
        let head = wire.len() - 4 - data.len() + 100;
        // Less than `min` bytes to come: no lending.
        q.send(&wire[..head]);
        assert!(q.conn.take_direct(70_000).is_none());
        let wire2 = &wire[head..];
        // The rest of the data directly, then the digest.
        let mut at = 0;
        for &n in &pieces {
            let mut d = q.conn.take_direct(1).expect("lent");
            assert_eq!(d.offset, 100 + at);
            d.buf[d.offset..d.offset + n].copy_from_slice(&wire2[at..at + n]);
            q.conn.direct_done(d, n, q.now);
            at += n;
        }
        q.send(&wire2[at..]);
        let Some(Got::Resp(c)) = q.recv() else {
            panic!("no completion (round {round})")
        };
        assert!(c.status.is_success(), "round {round}: {:?}", c.status);
        let (c, back) = q.exec(rw(0x02, 1, lba, 128), &[], 65536);
        assert!(c.status.is_success());
        assert!(back == data, "data differs in round {round}");
    }
    // A byte corrupted on the direct path is caught by the data digest.
    let cid = q.submit(rw(0x01, 1, 0, 64), &[], 32768);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    let mut wire = host::h2c_data(cid, ttag, 0, &[3u8; 32768], true, true, true);
    let n = wire.len();
    wire[n - 4 - 1000] ^= 1;
    let head = n - 4 - 32768;
    send_direct(&mut q, &wire, head, &[20000, 12768]);
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert_eq!(c.status.code(), Status(0x22));
    assert!(!q.conn.is_closing());
    // Bytes fed through `receive` while the buffer is lent out close the
    // connection instead of being lost (or panicking).
    let cid = q.submit(rw(0x01, 1, 0, 64), &[], 32768);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    let wire = host::h2c_data(cid, ttag, 0, &[5u8; 32768], true, true, true);
    let head = wire.len() - 4 - 32768;
    q.send(&wire[..head]);
    let d = q.conn.take_direct(1).expect("lent");
    q.send(&wire[head..head + 10]);
    assert!(q.conn.is_closing());
    q.conn.direct_done(d, 0, q.now);
}

#[test]
fn receives_are_limited_only_while_writes_wait_for_data() {
    let t = target();
    let (_admin, mut q) = io_up(&t, false, false);
    assert_eq!(q.conn.recv_limit(), None, "nothing outstanding");
    // A small write waiting: large receives still serve best.
    let cid = q.submit(rw(0x01, 1, 0, 64), &[], 32768);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    assert_eq!(q.conn.recv_limit(), None);
    q.send(&host::h2c_data(
        cid,
        ttag,
        0,
        &[6u8; 32768],
        true,
        false,
        false,
    ));
    assert!(matches!(q.recv(), Some(Got::Resp(_))));
    let cid = q.submit(rw(0x01, 1, 0, 256), &[], 131072);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    let limit = q
        .conn
        .recv_limit()
        .expect("a large write waits for its data");
    assert!(limit < 131072);
    // Mid-PDU (data arriving), the receive size is the stream's business.
    let wire = host::h2c_data(cid, ttag, 0, &[7u8; 131072], true, false, false);
    q.send(&wire[..100]);
    assert_eq!(q.conn.recv_limit(), None);
    q.send(&wire[100..]);
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert!(c.status.is_success());
    assert_eq!(q.conn.recv_limit(), None, "the write has all its data");
}

#[test]
fn number_of_queues_is_set_only_before_io_queues_exist() {
    let t = target();
    let mut a = Host::new(&t);
    let cntlid = a.admin_up(false, false);
    let set = |a: &mut Host, n: u32| {
        let cmd = Command {
            opcode: 0x09,
            cdw10: 0x07,
            cdw11: n | (n << 16),
            ..Default::default()
        };
        a.exec(cmd, &[], 0).0
    };
    let get = |a: &mut Host, sel: u32| {
        let cmd = Command {
            opcode: 0x0A,
            cdw10: 0x07 | (sel << 8),
            ..Default::default()
        };
        a.exec(cmd, &[], 0).0
    };
    let c = set(&mut a, 1);
    assert!(c.status.is_success());
    assert_eq!(c.dw0, 1 | (1 << 16), "two queues granted (zero-based)");
    assert_eq!(get(&mut a, 0).dw0, 1 | (1 << 16), "current");
    assert_eq!(
        get(&mut a, 1).dw0,
        7 | (7 << 16),
        "default: max_io_queues = 8"
    );
    let mut q = Host::new(&t);
    q.icreq(false, false);
    assert!(q
        .connect(1, cntlid, SUBNQN, HOSTNQN, 0, 0)
        .status
        .is_success());
    let c = set(&mut a, 3);
    assert_eq!(c.status.code(), Status::COMMAND_SEQUENCE_ERROR);
    assert_eq!(get(&mut a, 0).dw0, 1 | (1 << 16), "unchanged");
}

/// A read sent from backend memory and a write to the same blocks that the
/// target handles before the read's data goes out: the read's data digest
/// must still match the bytes it carries (found by SPDK's initiator with data
/// digests on a mixed workload).
#[test]
fn read_data_digest_holds_when_a_write_overtakes_the_send() {
    let t = target();
    let (_admin, mut q) = io_up(&t, false, true);
    let old = vec![0x11u8; 4096];
    let (c, _) = q.exec(rw(0x01, 1, 8, 8), &old, 0);
    assert!(c.status.is_success());
    // One receive carries the read, then a write of the same blocks.
    let mut read = rw(0x02, 1, 8, 8);
    read.cid = 100;
    host::set_sgl(&mut read, 0, 4096);
    let mut write = rw(0x01, 1, 8, 8);
    write.cid = 101;
    let new = vec![0x22u8; 4096];
    host::set_sgl(&mut write, new.len(), 0);
    let mut wire = q.capsule_bytes(&read, &[]);
    wire.extend_from_slice(&q.capsule_bytes(&write, &new));
    q.send(&wire);
    let mut got_data = false;
    let mut done = Vec::new();
    while let Some(g) = q.recv() {
        match g {
            // `recv` checks the data digest against the data.
            Got::Data { cid, data, .. } => {
                assert_eq!(cid, 100);
                assert_eq!(
                    data, old,
                    "the read sees the blocks as they were when it ran"
                );
                got_data = true;
            }
            Got::Resp(c) => {
                assert!(c.status.is_success(), "{:?}", c.status);
                done.push(c.cid);
            }
            g => panic!("unexpected {g:?}"),
        }
    }
    assert!(got_data, "the read sent its data");
    done.sort_unstable();
    assert_eq!(done, [100, 101]);
    // A later read sees the write.
    let (c, r) = q.exec(rw(0x02, 1, 8, 8), &[], 4096);
    assert!(c.status.is_success());
    assert_eq!(r, new);
}

/// Without data digests, write data for a RAM namespace goes straight into
/// its memory: in-capsule data, data through the receive buffer, and direct
/// receives (lent out as the region, not a buffer). Writes that fail their
/// checks still get their status.
#[test]
fn writes_land_in_backend_memory_without_data_digests() {
    let t = target();
    let (_admin, mut q) = io_up(&t, true, false);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 % 253) as u8).collect();
    // In-capsule.
    let (c, _) = q.exec(rw(0x01, 1, 16, 8), &data[..4096], 0);
    assert!(c.status.is_success());
    let (_, back) = q.exec(rw(0x02, 1, 16, 8), &[], 4096);
    assert_eq!(back, data[..4096]);
    // R2T: 100 bytes through the receive buffer, then two direct receives.
    let cid = q.submit(rw(0x01, 1, 1024, 128), &[], 65536);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    let wire = host::h2c_data(cid, ttag, 0, &data, true, true, false);
    let head = wire.len() - data.len() + 100;
    q.send(&wire[..head]);
    let mut at = 100;
    for n in [40000, 65536 - 40100] {
        let d = q.conn.take_direct(1).expect("lent");
        assert!(d.buf.is_empty(), "no buffer: the data goes to the region");
        let region = d.region.clone().expect("backend memory lent out");
        assert_eq!((d.offset, d.len), (at, 65536 - at));
        assert!(q.conn.take_direct(1).is_none(), "lent out only once");
        assert!(region.copy_from(d.offset, &data[at..at + n]));
        q.conn.direct_done(d, n, q.now);
        at += n;
    }
    q.send(&[]); // collects the output
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert!(c.status.is_success() && c.cid == cid, "{:?}", c.status);
    let (_, back) = q.exec(rw(0x02, 1, 1024, 128), &[], 65536);
    assert!(back == data, "the write's data is in the namespace");
    // Out of range (4 MiB namespace = 8192 blocks): nothing placed, the
    // command fails with its status, in-capsule or through R2T.
    let (c, _) = q.exec(rw(0x01, 1, 8190, 8), &data[..4096], 0);
    assert_eq!(c.status.code(), Status::LBA_OUT_OF_RANGE);
    let cid = q.submit(rw(0x01, 1, 8190, 128), &[], 65536);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    q.h2c(cid, ttag, 0, &data, true);
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert_eq!(c.status.code(), Status::LBA_OUT_OF_RANGE);
    // An SGL shorter than the blocks: Data SGL Length Invalid, as before.
    let cid = q.submit(rw(0x01, 1, 0, 16), &[], 4096);
    let Some(Got::R2t { ttag, .. }) = q.recv() else {
        panic!("no R2T")
    };
    q.h2c(cid, ttag, 0, &data[..4096], true);
    let Some(Got::Resp(c)) = q.recv() else {
        panic!("no completion")
    };
    assert_eq!(c.status.code(), Status::DATA_SGL_LENGTH_INVALID);
}

/// A target whose subsystem has two RAM namespaces.
fn two_ns_target() -> Arc<Target> {
    let text = format!(
        "[target]\nmax_io_size = 131072\n[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\n\
         port = 4420\n[[subsystem]]\nnqn = \"{SUBNQN}\"\nallow_any_host = true\n\
         [[subsystem.namespace]]\nnsid = 1\nbackend = \"ram\"\nsize = \"1MiB\"\n\
         [[subsystem.namespace]]\nnsid = 2\nbackend = \"ram\"\nsize = \"1MiB\"\n"
    );
    let cfg = Config::parse(&text, "test.toml").expect("test config parses");
    Arc::new(Target::new(&cfg).expect("target opens"))
}

impl Host {
    /// Lets commands waiting at a gate try again (the reactor does it on
    /// every turn).
    fn retry(&mut self) {
        let mut r = Vec::new();
        self.conn.queue.retry_waiting(&mut r);
        self.conn.conn.respond(&mut r, &self.conn.queue);
        let mut bufs = Vec::new();
        self.conn.take_output(&mut bufs);
        for b in bufs {
            b.extend_into(&mut self.rx);
        }
    }

    /// Sends a fused Compare (of `old`) and Write (of `new`) of LBA 0 of
    /// `nsid`, in the capsules.
    fn compare_and_write(&mut self, nsid: u32, old: &[u8], new: &[u8]) {
        let mut c = rw(0x05, nsid, 0, 1);
        c.flags = 1;
        self.submit(c, old, 0);
        let mut w = rw(0x01, nsid, 0, 1);
        w.flags = 2;
        self.submit(w, new, 0);
    }
}

/// A write whose data the host never sends holds only its own namespace:
/// a Compare and Write on another namespace goes ahead at once, one on the
/// same namespace waits, then gives up after 2 s with Command Interrupted
/// (retryable), and the gate is free again.
#[test]
fn a_write_waiting_for_its_data_holds_only_its_namespace_and_not_forever() {
    let t = two_ns_target();
    let (_a, mut q1) = io_up(&t, false, false);
    let mut q2 = Host::new(&t);
    q2.icreq(false, false);
    let cntlid = _a.conn.queue.controller().unwrap().cntlid;
    assert!(q2
        .connect(2, cntlid, SUBNQN, HOSTNQN, 0, 0)
        .status
        .is_success());
    // A 4 KiB write to nsid 2 through R2T; its data never comes.
    let cid = q1.submit(rw(0x01, 2, 8, 8), &[], 4096);
    assert!(matches!(q1.recv(), Some(Got::R2t { cid: c, .. }) if c == cid));

    let zero = vec![0u8; 512];
    q2.compare_and_write(1, &zero, &[7u8; 512]);
    let mut got = Vec::new();
    while let Some(Got::Resp(c)) = q2.recv() {
        got.push(c.status.code());
    }
    assert_eq!(
        got,
        vec![Status::SUCCESS, Status::SUCCESS],
        "nsid 1 is not held by nsid 2's write"
    );

    q2.compare_and_write(2, &zero, &[9u8; 512]);
    q2.retry();
    assert!(
        q2.recv().is_none(),
        "nsid 2's Compare and Write waits for the write in flight"
    );
    std::thread::sleep(Duration::from_millis(2100));
    q2.retry();
    let got: Vec<Status> = std::iter::from_fn(|| match q2.recv() {
        Some(Got::Resp(c)) => Some(c.status.code()),
        _ => None,
    })
    .collect();
    assert_eq!(
        got,
        vec![Status::COMMAND_INTERRUPTED, Status::ABORTED_FAILED_FUSED],
        "the Compare and Write gives up"
    );
    // The gate is free: a plain write to nsid 2 goes through, and the held
    // write completes when its data comes.
    let (c, _) = q2.exec(rw(0x01, 2, 100, 1), &[1u8; 512], 0);
    assert!(c.status.is_success(), "{:?}", c.status);
    q1.h2c(cid, 0, 0, &[3u8; 4096], true);
    assert!(matches!(q1.recv(), Some(Got::Resp(c)) if c.cid == cid && c.status.is_success()));
}
