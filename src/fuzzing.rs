//! Fuzzing harnesses: the wire-facing state machines driven in memory by
//! arbitrary input, with invariants checked (a broken one panics, which the
//! fuzzer reports as a crash).
//!
//! `fuzz/` runs them under libFuzzer with coverage instrumentation
//! (`scripts/fuzz.sh`); `tests/fuzz_corpus.rs` replays the seed corpus and
//! every input that ever crashed through the same functions on an ordinary
//! build, so a fixed crash stays fixed.
//!
//! - [`tcp_stream`]: an NVMe/TCP connection fed an arbitrary byte stream in
//!   arbitrary pieces, with time passing between them. Checks that the
//!   target's output is a sequence of well-formed controller-to-host PDUs
//!   and that the connection's buffered output stays bounded.
//! - [`controller`]: a well-behaved host (ICReq, Connect, CC.EN, one I/O
//!   queue, R2Ts answered) sending arbitrary commands (any opcode, flags,
//!   namespace, command dwords, SGL and data) on the admin and I/O queues.
//!   Checks that every command is completed exactly once with a valid
//!   status, and that every successful read returns what the model of the
//!   namespace (written, zeroed, or unknown bytes) says.

use crate::config::Config;
use crate::nvme::{le16, le32, sgl_id, Command, Completion, Sgl};
use crate::subsystem::Target;
use crate::transport::tcp::conn::ConnParams;
use crate::transport::tcp::host::{self, Loopback};
use crate::transport::tcp::pdu::{self, flags, pdu_type};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub const SUBNQN: &str = "nqn.2026-01.io.nvmf-target:fuzz";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:f0220000-0000-4000-8000-000000000001";
/// Namespace 1: 256 KiB of 512-byte blocks; namespace 2: 256 KiB of 4 KiB
/// blocks (both RAM, so every command completes within `receive`).
const NS: [(u32, usize); 2] = [(1, 512), (2, 4096)];
const NS_BYTES: usize = 256 * 1024;
const MAX_IO: u32 = 131072;
const IN_CAPSULE: u32 = 8192;
/// The most a single input may ask to move in one command.
const MAX_DATA: usize = MAX_IO as usize + 8192;

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let text = format!(
            r#"
[target]
max_io_size = {MAX_IO}
in_capsule_data_size = {IN_CAPSULE}
[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = 4420
[[subsystem]]
nqn = "{SUBNQN}"
allow_any_host = true
[[subsystem.namespace]]
backend = "ram"
size = "256KiB"
block_size = 512
[[subsystem.namespace]]
backend = "ram"
size = "256KiB"
block_size = 4096
"#
        );
        Config::parse(&text, "fuzz.toml").expect("the fuzzing config parses")
    })
}

/// A fresh target for one input: nothing carries over between inputs.
fn target() -> Arc<Target> {
    Arc::new(Target::new(config()).expect("the fuzzing target opens"))
}

fn params() -> ConnParams {
    ConnParams {
        max_io_size: MAX_IO,
        allow_hdgst: true,
        allow_ddgst: true,
    }
}

/// A PDU the target sent, decoded and checked for well-formedness.
#[derive(Debug)]
pub enum C2h {
    IcResp,
    Resp(Completion),
    Data {
        cid: u16,
        off: u32,
        data: Vec<u8>,
        success: bool,
    },
    R2t {
        cid: u16,
        ttag: u16,
        off: u32,
        len: u32,
    },
    Term,
}

/// Splits the front PDU off `rx` and checks it as a host would: a known
/// controller-to-host type, the header length that type has, a PDU length
/// that covers the header, digests that match. Panics on anything else.
pub fn next_pdu(rx: &mut Vec<u8>) -> Option<C2h> {
    if rx.is_empty() {
        return None;
    }
    assert!(rx.len() >= 8, "a partial common header in the output");
    let plen = le32(rx, 4) as usize;
    let hlen = rx[2] as usize;
    assert!(plen <= rx.len(), "a partial PDU in the output");
    assert!(
        hlen >= 8 && plen >= hlen,
        "PDU length {plen} < header {hlen}"
    );
    let p: Vec<u8> = rx.drain(..plen).collect();
    let hd = if p[1] & flags::HDGSTF != 0 { 4 } else { 0 };
    if hd > 0 {
        assert!(plen >= hlen + 4, "header digest flagged but missing");
        assert_eq!(le32(&p, hlen), pdu::crc32c(&p[..hlen]), "header digest");
    }
    let want_hlen = match p[0] {
        pdu_type::IC_RESP => 128,
        pdu_type::CAPSULE_RESP => 24,
        pdu_type::C2H_DATA | pdu_type::R2T => 24,
        pdu_type::C2H_TERM_REQ => 24,
        t => panic!("the target sent PDU type {t:#x}"),
    };
    assert_eq!(hlen, want_hlen, "header length of PDU type {:#x}", p[0]);
    Some(match p[0] {
        pdu_type::IC_RESP => {
            assert_eq!(plen, 128, "ICResp length");
            C2h::IcResp
        }
        pdu_type::CAPSULE_RESP => {
            assert_eq!(plen, 24 + hd, "CapsuleResp length");
            let mut c = [0u8; 16];
            c.copy_from_slice(&p[8..24]);
            C2h::Resp(Completion::parse(&c))
        }
        pdu_type::C2H_DATA => {
            let pdo = p[3] as usize;
            let len = le32(&p, 16) as usize;
            let dd = if p[1] & flags::DDGSTF != 0 { 4 } else { 0 };
            assert!(pdo >= hlen + hd, "C2HData PDO {pdo} inside the header");
            assert_eq!(pdo + len + dd, plen, "C2HData lengths");
            let data = p[pdo..pdo + len].to_vec();
            if dd > 0 {
                assert_eq!(le32(&p, pdo + len), pdu::crc32c(&data), "data digest");
            }
            C2h::Data {
                cid: le16(&p, 8),
                off: le32(&p, 12),
                data,
                success: p[1] & flags::SUCCESS != 0,
            }
        }
        pdu_type::R2T => {
            assert_eq!(plen, 24 + hd, "R2T length");
            C2h::R2t {
                cid: le16(&p, 8),
                ttag: le16(&p, 10),
                off: le32(&p, 12),
                len: le32(&p, 16),
            }
        }
        _ => C2h::Term,
    })
}

/// Reads input bytes front to back; past the end it yields zeros.
struct Input<'a> {
    b: &'a [u8],
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.b.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.b.split_first() {
            Some((&x, rest)) => {
                self.b = rest;
                x
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.b.len());
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        a
    }
}

/// Output drained after each piece, checked, and its size bounded: one piece
/// of input may not make the connection buffer more than a queue's worth of
/// maximum-size reads.
fn drain(c: &mut Loopback, rx: &mut Vec<u8>) {
    let mut bufs = Vec::new();
    c.take_output(&mut bufs);
    for b in bufs {
        b.extend_into(rx);
        c.recycle(b);
    }
    assert!(
        rx.len() <= 300 * (MAX_IO as usize + 64),
        "{} bytes of output from one piece of input",
        rx.len()
    );
}

/// An ICReq, admin Connect and CC.EN = 1 on a fresh connection; returns the
/// connection and its controller ID.
fn admin_controller(t: &Arc<Target>, now: Instant) -> (Loopback, u16) {
    let mut c = Loopback::new(t.clone(), params(), IN_CAPSULE);
    let mut rx = Vec::new();
    c.receive(&host::icreq(false, false), now);
    let (cmd, data) = host::connect(0, 0xFFFF, SUBNQN, HOSTNQN, 0, 0);
    c.receive(&host::capsule(&cmd, &data, false, false), now);
    let mut cc = Command {
        opcode: 0x7F,
        cid: 1,
        cdw11: 0x14,
        cdw12: 1 | (6 << 16) | (4 << 20),
        ..Default::default()
    };
    host::set_sgl(&mut cc, 0, 0);
    c.receive(&host::capsule(&cc, &[], false, false), now);
    drain(&mut c, &mut rx);
    let mut cntlid = None;
    while let Some(p) = next_pdu(&mut rx) {
        if let C2h::Resp(r) = p {
            assert!(r.status.is_success(), "admin setup: {:?}", r.status);
            if r.cid == 0 {
                cntlid = Some(r.dw0 as u16);
            }
        }
    }
    (c, cntlid.expect("the admin Connect completes"))
}

/// Fuzz target: an arbitrary byte stream on one connection.
///
/// Byte 0 chooses the setup: bit 0 sends a plain ICReq first (so the stream
/// starts at the capsules), bit 1 feeds the stream to the established admin
/// connection instead of a fresh one. Byte 1 seeds the split of the rest
/// into pieces of 1 to 256 bytes (0: the whole stream at once); before
/// each piece time moves on by 0, 1 or 31 seconds, which the connection's
/// handshake and keep-alive timers see.
/// Returns how many PDUs the target sent.
pub fn tcp_stream(data: &[u8]) -> usize {
    let mut inp = Input { b: data };
    let mode = inp.u8();
    let mut seed = inp.u8() as u32;
    let t = target();
    let mut now = Instant::now();
    // The admin controller exists either way, so that a stream may connect
    // an I/O queue to it (its controller ID is 1).
    let (mut admin, _cntlid) = admin_controller(&t, now);
    let mut fresh = Loopback::new(t.clone(), params(), IN_CAPSULE);
    let c = if mode & 2 != 0 {
        &mut admin
    } else {
        &mut fresh
    };
    let mut rx = Vec::new();
    let mut pdus = 0;
    if mode & 1 != 0 && mode & 2 == 0 {
        c.receive(&host::icreq(false, false), now);
        drain(c, &mut rx);
    }
    while !inp.done() && !c.is_closing() {
        let n = if seed == 0 {
            usize::MAX
        } else {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            now += Duration::from_secs([0, 0, 0, 0, 0, 0, 1, 31][(seed >> 16) as usize & 7]);
            c.tick(now);
            1 + (seed >> 20) as usize % 256
        };
        let piece = inp.take(n);
        c.receive(piece, now);
        drain(c, &mut rx);
        while next_pdu(&mut rx).is_some() {
            pdus += 1;
        }
    }
    pdus
}

/// What a [`controller`] run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Commands completed.
    pub completed: usize,
    /// Of them, successfully.
    pub succeeded: usize,
    /// Bytes of successful reads compared with the model.
    pub verified: usize,
}

/// What is known of a namespace's bytes.
struct Model {
    bs: usize,
    data: Vec<u8>,
    /// Per block: the model knows its bytes.
    known: Vec<bool>,
}

impl Model {
    fn new(bs: usize) -> Model {
        Model {
            bs,
            data: vec![0; NS_BYTES],
            known: vec![true; NS_BYTES / bs],
        }
    }
    fn blocks(&self) -> u64 {
        (NS_BYTES / self.bs) as u64
    }
    fn write(&mut self, slba: u64, src: &[u8]) {
        let at = slba as usize * self.bs;
        self.data[at..at + src.len()].copy_from_slice(src);
        let n = src.len() / self.bs;
        self.known[slba as usize..slba as usize + n].fill(true);
    }
    fn forget(&mut self, slba: u64, nlb: u64) {
        let end = slba.saturating_add(nlb).min(self.blocks());
        if slba < end {
            self.known[slba as usize..end as usize].fill(false);
        }
    }
    fn check(&self, slba: u64, got: &[u8], what: &str) {
        for (i, blk) in got.chunks(self.bs).enumerate() {
            let lba = slba as usize + i;
            if !self.known[lba] {
                continue;
            }
            let want = &self.data[lba * self.bs..lba * self.bs + blk.len()];
            if let Some(j) = (0..blk.len()).find(|&j| blk[j] != want[j]) {
                panic!(
                    "{what} of LBA {lba} (block size {}) returned {:#04x} at byte {j}, \
                     but {:#04x} was written there",
                    self.bs, blk[j], want[j]
                );
            }
        }
    }
}

/// One command as the input describes it.
struct Op {
    io: bool,
    /// Wait for its completion before the next one.
    wait: bool,
    cmd: Command,
    data: Vec<u8>,
    /// 0: in-capsule data, 1: transport data block (R2T write or read), 2:
    /// the data pointer and PSDT as the input gives them, 3: a zero-length
    /// transport data block whatever the data (as the kernel host sends
    /// commands without data).
    sgl: u8,
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = seed as u32 | 0x100;
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8 ^ i as u8
        })
        .collect()
}

fn next_op(inp: &mut Input) -> Op {
    let kind = inp.u8();
    let opcode = inp.u8();
    let fl = inp.u8();
    let nsid = match inp.u8() {
        0 => 0,
        1 | 3 | 5 => 1,
        2 | 4 => 2,
        6 => 0xFFFF_FFFF,
        7 => inp.u32(),
        n => n as u32,
    };
    let mut cmd = Command {
        opcode,
        flags: fl & 0x03,
        nsid,
        ..Default::default()
    };
    // A short form for the commands that matter most: SLBA and NLB from
    // four bytes; the long form gives all six command dwords.
    if kind & 0x20 != 0 {
        cmd.cdw10 = inp.u16() as u32 % 520;
        cmd.cdw12 = inp.u8() as u32 | ((inp.u8() as u32) << 24);
    } else {
        cmd.cdw10 = inp.u32();
        cmd.cdw11 = inp.u32();
        cmd.cdw12 = inp.u32();
        cmd.cdw13 = inp.u32();
        cmd.cdw14 = inp.u32();
        cmd.cdw15 = inp.u32();
    }
    let sgl = (kind >> 1) & 3;
    if sgl == 2 {
        cmd.flags |= fl & 0xC0;
        let d = inp.take(16);
        cmd.dptr[..d.len()].copy_from_slice(d);
    }
    let len = match kind >> 6 {
        0 => 0,
        1 => (inp.u8() as usize + 1) * 16,
        2 => (inp.u8() as usize + 1) * 512,
        // Up to 32 KiB in bytes, or in 8-byte units beyond.
        _ => match inp.u16() {
            v if v & 0x8000 != 0 => (v as usize & 0x7FFF) * 8,
            v => v as usize,
        }
        .min(MAX_DATA),
    };
    let seed = inp.u8();
    let mut data = pattern(seed, len);
    // Dataset Management ranges and Copy descriptors: let the input write
    // the first bytes of the data, not only choose its pattern.
    if kind & 0x10 != 0 {
        let d = inp.take(len.min(64));
        data[..d.len()].copy_from_slice(d);
    }
    Op {
        io: kind & 1 != 0,
        wait: kind & 8 == 0,
        cmd,
        data,
        sgl,
    }
}

/// One host queue: its connection, the commands it has outstanding and the
/// data they carry or return.
struct HostQueue {
    c: Loopback,
    rx: Vec<u8>,
    next_cid: u16,
    outstanding: BTreeMap<u16, Sent>,
    done: Vec<(Sent, Completion, Vec<u8>)>,
    /// The CID of the command sent last.
    last: Option<u16>,
}

struct Sent {
    cmd: Command,
    data: Vec<u8>,
    read: Vec<u8>,
    /// Bytes the host was asked for by R2T.
    r2t: u64,
}

impl HostQueue {
    fn closed(&self) -> bool {
        self.c.is_closing()
    }

    fn send(&mut self, b: &[u8], now: Instant) {
        self.c.receive(b, now);
        drain(&mut self.c, &mut self.rx);
    }

    /// Handles everything the target sent, answering R2Ts; completions go
    /// to `done`.
    fn pump(&mut self, now: Instant) {
        while let Some(p) = next_pdu(&mut self.rx) {
            match p {
                C2h::IcResp => panic!("a second ICResp"),
                C2h::Term => return,
                C2h::Resp(r) => self.complete(r),
                C2h::Data {
                    cid,
                    off,
                    data,
                    success,
                } => {
                    let s = self.outstanding.get_mut(&cid).unwrap_or_else(|| {
                        panic!("C2HData for CID {cid}, which is not outstanding")
                    });
                    assert_eq!(off as usize, s.read.len(), "C2HData offset of CID {cid}");
                    s.read.extend_from_slice(&data);
                    if success {
                        let r = Completion {
                            cid,
                            ..Default::default()
                        };
                        self.complete(r);
                    }
                }
                C2h::R2t {
                    cid,
                    ttag,
                    off,
                    len,
                } => {
                    let s = self
                        .outstanding
                        .get_mut(&cid)
                        .unwrap_or_else(|| panic!("R2T for CID {cid}, which is not outstanding"));
                    s.r2t += len as u64;
                    let sgl = Sgl::parse(&s.cmd.dptr);
                    assert!(
                        off as u64 + len as u64 <= sgl.length as u64,
                        "R2T for bytes {off}+{len} past the command's SGL length {}",
                        sgl.length
                    );
                    let mut chunk = vec![0u8; len as usize];
                    let have = s.data.len().saturating_sub(off as usize).min(len as usize);
                    chunk[..have].copy_from_slice(&s.data[off as usize..off as usize + have]);
                    let b = host::h2c_data(cid, ttag, off, &chunk, true, false, false);
                    self.c.receive(&b, now);
                    drain(&mut self.c, &mut self.rx);
                }
            }
        }
    }

    fn complete(&mut self, r: Completion) {
        let mut s = self.outstanding.remove(&r.cid).unwrap_or_else(|| {
            panic!(
                "a completion for CID {} ({:?}), which is not outstanding",
                r.cid, r.status
            )
        });
        let sct = r.status.sct();
        assert!(
            sct <= 3 || sct == 7,
            "status code type {sct} in {:?} for opcode {:#x}",
            r.status,
            s.cmd.opcode
        );
        let read = std::mem::take(&mut s.read);
        self.done.push((s, r, read));
    }

    fn submit(&mut self, op: &Op, now: Instant) {
        let mut cid = self.next_cid;
        while self.outstanding.contains_key(&cid) {
            cid = cid.wrapping_add(1);
        }
        self.next_cid = cid.wrapping_add(1);
        self.last = Some(cid);
        let mut cmd = op.cmd;
        cmd.cid = cid;
        let inline: &[u8] = match op.sgl {
            0 if !op.data.is_empty() => {
                host::set_sgl(&mut cmd, op.data.len(), 0);
                &op.data
            }
            0 | 1 => {
                host::set_sgl(&mut cmd, 0, op.data.len() as u32);
                &[]
            }
            2 => {
                // The input's own descriptor, with in-capsule data when it
                // says "offset data block".
                let sgl = Sgl::parse(&cmd.dptr);
                if sgl.id == sgl_id::DATA_BLOCK_OFFSET {
                    &op.data[..op.data.len().min(IN_CAPSULE as usize + 512)]
                } else {
                    &[]
                }
            }
            _ => {
                host::set_sgl(&mut cmd, 0, 0);
                &[]
            }
        };
        let b = host::capsule(&cmd, inline, false, false);
        self.outstanding.insert(
            cid,
            Sent {
                cmd,
                data: op.data.clone(),
                read: Vec::new(),
                r2t: 0,
            },
        );
        self.send(&b, now);
        self.pump(now);
    }
}

/// Fuzz target: arbitrary commands from a well-behaved host.
///
/// The input is a sequence of operations (see `next_op`): which queue,
/// whether to wait for the completion, opcode, flags, namespace, command
/// dwords, SGL form and data. After each waited-for operation every command
/// sent must be complete (the RAM namespaces complete within `receive`)
/// except Asynchronous Event Requests and the first half of a fused pair;
/// each completion must name an outstanding command; successful reads must
/// agree with the model of the namespace.
pub fn controller(data: &[u8]) -> Outcome {
    let mut inp = Input { b: data };
    let t = target();
    let now = Instant::now();
    let (admin, cntlid) = admin_controller(&t, now);
    let mut aq = HostQueue {
        c: admin,
        rx: Vec::new(),
        next_cid: 2,
        outstanding: BTreeMap::new(),
        done: Vec::new(),
        last: None,
    };
    let mut io = Loopback::new(t.clone(), params(), IN_CAPSULE);
    let mut rx = Vec::new();
    io.receive(&host::icreq(false, false), now);
    let (cmd, d) = host::connect(1, cntlid, SUBNQN, HOSTNQN, 0, 0);
    io.receive(&host::capsule(&cmd, &d, false, false), now);
    drain(&mut io, &mut rx);
    while let Some(p) = next_pdu(&mut rx) {
        if let C2h::Resp(r) = p {
            assert!(r.status.is_success(), "I/O queue Connect: {:?}", r.status);
        }
    }
    let mut iq = HostQueue {
        c: io,
        rx: Vec::new(),
        next_cid: 0,
        outstanding: BTreeMap::new(),
        done: Vec::new(),
        last: None,
    };
    let mut models: Vec<Model> = NS.iter().map(|&(_, bs)| Model::new(bs)).collect();
    let mut ops = 0;
    let mut out = Outcome::default();
    while !inp.done() && ops < 512 {
        ops += 1;
        let op = next_op(&mut inp);
        let q = if op.io { &mut iq } else { &mut aq };
        q.c.tick(now);
        if q.closed() {
            if aq.closed() {
                break;
            }
            continue;
        }
        q.submit(&op, now);
        if !op.wait {
            continue;
        }
        for (is_io, q) in [(false, &mut aq), (true, &mut iq)] {
            q.c.tick(now);
            drain(&mut q.c, &mut q.rx);
            q.pump(now);
            for (s, r, read) in q.done.drain(..) {
                out.completed += 1;
                if std::env::var_os("NVMF_FUZZ_TRACE").is_some() {
                    eprintln!(
                        "{} {:#04x} cid {}: {:?}",
                        if is_io { "io" } else { "admin" },
                        s.cmd.opcode,
                        s.cmd.cid,
                        r.status
                    );
                }
                out.succeeded += r.status.is_success() as usize;
                if is_io {
                    out.verified += model_io(&mut models, &s, &r, &read);
                } else if r.status.is_success() && !admin_read_only(s.cmd.opcode) {
                    for m in models.iter_mut() {
                        let n = m.blocks();
                        m.forget(0, n);
                    }
                }
            }
            if q.closed() {
                q.outstanding.clear();
                continue;
            }
            // Only AERs may still wait, and the first of a fused pair
            // while it is the queue's last command (its second is the next
            // command on the same queue).
            for (&cid, s) in &q.outstanding {
                let aer = s.cmd.opcode == 0x0C && !is_io;
                let first = s.cmd.flags & 3 == 1 && q.last == Some(cid);
                assert!(
                    aer || first,
                    "opcode {:#x} (CID {cid}, {} queue) was not completed",
                    s.cmd.opcode,
                    if is_io { "I/O" } else { "admin" }
                );
            }
        }
    }
    out
}

/// Admin opcodes that change no namespace data.
fn admin_read_only(op: u8) -> bool {
    matches!(op, 0x02 | 0x06 | 0x08 | 0x09 | 0x0A | 0x0C | 0x18 | 0x7F)
}

/// Applies a completed I/O command to the model, and checks a read; returns
/// the bytes read and checked.
fn model_io(models: &mut [Model], s: &Sent, r: &Completion, read: &[u8]) -> usize {
    let c = &s.cmd;
    let Some(m) = NS
        .iter()
        .position(|&(nsid, _)| nsid == c.nsid)
        .map(|i| &mut models[i])
    else {
        return 0;
    };
    let slba = c.cdw10 as u64 | ((c.cdw11 as u64) << 32);
    let nlb = (c.cdw12 & 0xFFFF) as u64 + 1;
    let bytes = nlb as usize * m.bs;
    let ok = r.status.is_success();
    match c.opcode {
        0x01 if ok => {
            assert!(
                slba.saturating_add(nlb) <= m.blocks(),
                "a write past the end succeeded"
            );
            assert!(
                s.data.len() >= bytes,
                "a write of {bytes} bytes succeeded with {} bytes of data",
                s.data.len()
            );
            m.write(slba, &s.data[..bytes]);
        }
        0x02 if ok => {
            assert!(
                slba.saturating_add(nlb) <= m.blocks(),
                "a read past the end succeeded"
            );
            assert_eq!(read.len(), bytes, "bytes returned by a successful read");
            m.check(slba, read, "a read");
            return bytes;
        }
        // Write Zeroes: zeros, deallocated or not (DLFEAT says deallocated
        // blocks read zeros).
        0x08 if ok => {
            assert!(
                slba.saturating_add(nlb) <= m.blocks(),
                "Write Zeroes past the end succeeded"
            );
            m.write(slba, &vec![0; bytes]);
        }
        // Dataset Management may deallocate less than it was asked to; Copy
        // is not modelled: forget what they may have touched.
        0x09 if ok => m.forget(0, m.blocks()),
        0x19 if ok => m.forget(0, m.blocks()),
        // A failed write may have written part of its range.
        0x01 | 0x08 => m.forget(slba, nlb),
        _ => {}
    }
    0
}

/// Encodes one operation the way `next_op` reads it (long form, data from a
/// pattern): for seeds.
fn encode_op(out: &mut Vec<u8>, io: bool, sgl: u8, cmd: &Command, len: u32, data: &[u8]) {
    let own = !data.is_empty();
    out.push(io as u8 | (sgl << 1) | ((own as u8) << 4) | (3 << 6));
    out.push(cmd.opcode);
    out.push(cmd.flags);
    out.push(7);
    out.extend_from_slice(&cmd.nsid.to_le_bytes());
    for d in [
        cmd.cdw10, cmd.cdw11, cmd.cdw12, cmd.cdw13, cmd.cdw14, cmd.cdw15,
    ] {
        out.extend_from_slice(&d.to_le_bytes());
    }
    let l = if len < 0x8000 {
        len
    } else {
        0x8000 | (len / 8)
    };
    out.extend_from_slice(&(l as u16).to_le_bytes());
    out.push(0x5A);
    if own {
        let mut d = data.to_vec();
        d.resize(64.min(len as usize), 0);
        out.extend_from_slice(&d);
    }
}

/// The seed corpus: a short session of each kind the harnesses know, from
/// which the fuzzer mutates. Returns (target, name, input).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut v = Vec::new();
    let rw = |op: u8, nsid: u32, slba: u64, nlb: u32| host::rw(op, nsid, slba, nlb);
    let cmd = |opcode: u8, nsid: u32, cdw10: u32, cdw11: u32| Command {
        opcode,
        nsid,
        cdw10,
        cdw11,
        ..Default::default()
    };

    // controller: admin commands a host sends at start-up.
    let mut a = Vec::new();
    encode_op(&mut a, false, 1, &cmd(0x06, 0, 1, 0), 4096, &[]);
    encode_op(&mut a, false, 1, &cmd(0x06, 0, 2, 0), 4096, &[]);
    encode_op(&mut a, false, 1, &cmd(0x06, 1, 0, 0), 4096, &[]);
    encode_op(&mut a, false, 1, &cmd(0x06, 1, 3, 0), 4096, &[]);
    encode_op(&mut a, false, 3, &cmd(0x09, 0, 0x0B, 0x100), 0, &[]);
    encode_op(&mut a, false, 3, &cmd(0x0A, 0, 0x07, 0), 0, &[]);
    encode_op(&mut a, false, 3, &cmd(0x0C, 0, 0, 0), 0, &[]);
    encode_op(
        &mut a,
        false,
        1,
        &cmd(0x02, 0xFFFF_FFFF, 0x007F_0002, 0),
        512,
        &[],
    );
    encode_op(&mut a, false, 1, &cmd(0x02, 0, 0x00FF_0001, 0), 1024, &[]);
    encode_op(&mut a, false, 3, &cmd(0x18, 0, 0, 0), 0, &[]);
    let mut get = cmd(0x7F, 4, 0, 0);
    get.cdw11 = 0x1C;
    encode_op(&mut a, false, 3, &get, 0, &[]);
    v.push(("controller", "admin-startup", a));

    // controller: writes (R2T and in-capsule), reads, and the other I/O
    // commands on both namespaces.
    let mut b = Vec::new();
    encode_op(&mut b, true, 1, &rw(0x01, 1, 0, 8), 4096, &[]);
    encode_op(&mut b, true, 1, &rw(0x02, 1, 0, 8), 4096, &[]);
    encode_op(&mut b, true, 0, &rw(0x01, 2, 3, 1), 4096, &[]);
    encode_op(&mut b, true, 1, &rw(0x02, 2, 2, 2), 8192, &[]);
    encode_op(&mut b, true, 1, &rw(0x01, 1, 100, 256), 131072, &[]);
    encode_op(&mut b, true, 1, &rw(0x02, 1, 96, 256), 131072, &[]);
    encode_op(&mut b, true, 3, &rw(0x08, 1, 4, 2), 0, &[]);
    encode_op(&mut b, true, 1, &rw(0x02, 1, 0, 8), 4096, &[]);
    encode_op(&mut b, true, 3, &cmd(0x00, 1, 0, 0), 0, &[]);
    encode_op(&mut b, true, 1, &rw(0x05, 1, 0, 8), 4096, &[]);
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&8u32.to_le_bytes());
    range[8..16].copy_from_slice(&16u64.to_le_bytes());
    encode_op(&mut b, true, 0, &cmd(0x09, 1, 0, 4), 16, &range);
    encode_op(&mut b, true, 1, &rw(0x02, 1, 16, 8), 4096, &[]);
    let mut copy = [0u8; 32];
    copy[8..16].copy_from_slice(&100u64.to_le_bytes());
    copy[16..18].copy_from_slice(&7u16.to_le_bytes());
    let mut c = cmd(0x19, 1, 200, 0);
    c.cdw12 = 0;
    encode_op(&mut b, true, 0, &c, 32, &copy);
    encode_op(&mut b, true, 1, &rw(0x02, 1, 200, 8), 4096, &[]);
    encode_op(&mut b, true, 1, &rw(0x0C, 1, 0, 8), 0, &[]);
    v.push(("controller", "io-mix", b));

    // controller: a write, a fused Compare (of what it wrote) and Write (of
    // other data), then a read of the block.
    let mut f = Vec::new();
    let mut first = rw(0x05, 1, 0, 1);
    first.flags = 1;
    let mut second = rw(0x01, 1, 0, 1);
    second.flags = 2;
    encode_op(&mut f, true, 0, &rw(0x01, 1, 0, 1), 512, &[]);
    let mut no_wait = Vec::new();
    encode_op(&mut no_wait, true, 0, &first, 512, &[]);
    no_wait[0] |= 8;
    f.extend_from_slice(&no_wait);
    encode_op(&mut f, true, 0, &second, 512, &[0xC3; 64]);
    encode_op(&mut f, true, 1, &rw(0x02, 1, 0, 1), 512, &[]);
    v.push(("controller", "fused-compare-write", f));

    // tcp_stream: a whole admin session from the ICReq, byte by byte and
    // whole.
    let mut s = Vec::new();
    s.extend_from_slice(&host::icreq(true, true));
    let (cmd_c, data) = host::connect(0, 0xFFFF, SUBNQN, HOSTNQN, 15000, 0);
    s.extend_from_slice(&host::capsule(&cmd_c, &data, true, true));
    let mut id = cmd(0x06, 0, 1, 0);
    id.cid = 3;
    host::set_sgl(&mut id, 0, 4096);
    s.extend_from_slice(&host::capsule(&id, &[], true, true));
    let mut whole = vec![0u8, 0];
    whole.extend_from_slice(&s);
    v.push(("tcp_stream", "admin-session-digests", whole));
    let mut pieces = vec![0u8, 7];
    pieces.extend_from_slice(&s);
    v.push(("tcp_stream", "admin-session-pieces", pieces));

    // tcp_stream: an I/O queue of controller 1 (ICReq already sent): an
    // R2T write with its H2CData, an in-capsule write, a read.
    let mut s = vec![1u8, 0];
    let (cmd_c, data) = host::connect(1, 1, SUBNQN, HOSTNQN, 0, 0);
    s.extend_from_slice(&host::capsule(&cmd_c, &data, false, false));
    let mut w = rw(0x01, 1, 0, 8);
    w.cid = 1;
    host::set_sgl(&mut w, 0, 4096);
    s.extend_from_slice(&host::capsule(&w, &[], false, false));
    s.extend_from_slice(&host::h2c_data(1, 0, 0, &[0xA5; 4096], true, false, false));
    let mut w = rw(0x01, 1, 8, 1);
    w.cid = 2;
    host::set_sgl(&mut w, 512, 0);
    s.extend_from_slice(&host::capsule(&w, &[0x3C; 512], false, false));
    let mut r = rw(0x02, 1, 0, 9);
    r.cid = 3;
    host::set_sgl(&mut r, 0, 4608);
    s.extend_from_slice(&host::capsule(&r, &[], false, false));
    v.push(("tcp_stream", "io-queue", s));

    // tcp_stream: commands on the established admin queue.
    let mut s = vec![2u8, 0];
    let mut g = cmd(0x02, 0xFFFF_FFFF, 0x007F_0002, 0);
    g.cid = 9;
    host::set_sgl(&mut g, 0, 512);
    s.extend_from_slice(&host::capsule(&g, &[], false, false));
    let mut k = cmd(0x18, 0, 0, 0);
    k.cid = 10;
    host::set_sgl(&mut k, 0, 0);
    s.extend_from_slice(&host::capsule(&k, &[], false, false));
    v.push(("tcp_stream", "admin-established", s));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "but 0x07 was written there")]
    fn the_model_catches_a_read_that_disagrees() {
        let mut m = Model::new(512);
        m.write(3, &[7u8; 1024]);
        m.forget(4, 1);
        // Block 4 is unknown, so only block 3's difference counts.
        let mut got = vec![7u8; 1024];
        got[600] = 1;
        m.check(3, &got, "a read");
        got[10] = 8;
        m.check(3, &got, "a read");
    }

    #[test]
    #[should_panic(expected = "PDU type 0x4")]
    fn the_output_check_rejects_a_host_to_controller_pdu() {
        let mut cmd = Command::default();
        host::set_sgl(&mut cmd, 0, 0);
        let mut rx = host::capsule(&cmd, &[], false, false);
        next_pdu(&mut rx);
    }

    #[test]
    #[should_panic(expected = "which is not outstanding")]
    fn a_completion_of_nothing_is_caught() {
        let t = target();
        let (c, _) = admin_controller(&t, Instant::now());
        let mut q = HostQueue {
            c,
            rx: Vec::new(),
            next_cid: 0,
            outstanding: BTreeMap::new(),
            done: Vec::new(),
            last: None,
        };
        q.complete(Completion {
            cid: 5,
            ..Default::default()
        });
    }
}
