//! A simulated NVMe controller and DMA memory, in process: what the driver's
//! tests and benchmarks run against instead of a device. Doorbell writes are
//! handled at once (commands run, completions are posted with the phase
//! tag), unless the test holds completions back, drops them, or makes the
//! controller fail (CSTS.CFS).

use super::{admin, prp, qpair, reg, DmaMem, Regs};
use crate::nvme::{le64, put16, put32, put64, Command, Completion, Status};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// DMA memory: one zeroed region at IOVA 0 (shared memory, as a device's
/// is, so transports can use parts of it directly).
pub struct SimMem {
    region: Arc<nvmf_sys::Region>,
}

impl SimMem {
    /// `len` bytes (at least one).
    pub fn new(len: usize) -> Arc<SimMem> {
        let region = nvmf_sys::Region::new(len.max(1))
            .unwrap_or_else(|e| panic!("simulated DMA memory of {len} bytes: {e}"));
        Arc::new(SimMem {
            region: Arc::new(region),
        })
    }
}

impl DmaMem for SimMem {
    fn read(&self, iova: u64, dst: &mut [u8]) -> bool {
        self.region.read(iova, dst)
    }

    fn write(&self, iova: u64, src: &[u8]) -> bool {
        self.region.write(iova, src)
    }

    fn load64(&self, iova: u64) -> Option<u64> {
        if !iova.is_multiple_of(8) {
            return None;
        }
        self.region.load_u64(iova)
    }

    fn region(&self) -> Option<(Arc<nvmf_sys::Region>, u64)> {
        Some((self.region.clone(), 0))
    }
}

/// What the test makes the controller do with completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Complete every command at once.
    #[default]
    Immediate,
    /// Keep completions of I/O commands until [`SimController::release`].
    Hold,
    /// Never complete I/O commands (they time out); Abort completes them.
    Drop,
}

struct SimQueue {
    sq: u64,
    cq: u64,
    entries: u16,
    head: u16,
    cq_tail: u16,
    phase: bool,
    /// Completion queue of a submission queue.
    cqid: u16,
    /// A completion queue's interrupt vector, when its interrupts are on.
    vector: Option<u16>,
}

struct State {
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    sqs: HashMap<u16, SimQueue>,
    cqs: HashMap<u16, SimQueue>,
    blocks: Vec<u8>,
    lba_shift: u32,
    mdts: u8,
    mqes: u16,
    mode: Mode,
    held: Vec<(u16, Completion)>,
    commands: u64,
    /// Whether it takes SGLs for NVM commands (Identify SGLS), and how many
    /// commands came with one.
    sgl: bool,
    sgl_commands: u64,
    /// MSI-X vectors and the eventfd each signals (as VFIO routes them).
    vectors: Vec<Option<Arc<nvmf_sys::EventFd>>>,
    /// Interrupts raised.
    interrupts: u64,
}

/// The simulated controller's registers, backed by its state.
pub struct SimController {
    mem: Arc<SimMem>,
    st: Mutex<State>,
}

impl SimController {
    /// A controller with one namespace of `blocks` blocks of `1 << lba_shift`
    /// bytes, MDTS `mdts` (in 4 KiB pages, log2) and at most `mqes + 1`
    /// entries per I/O queue.
    pub fn new(
        mem: Arc<SimMem>,
        blocks: u64,
        lba_shift: u32,
        mdts: u8,
        mqes: u16,
    ) -> SimController {
        SimController {
            mem,
            st: Mutex::new(State {
                cc: 0,
                csts: 0,
                aqa: 0,
                asq: 0,
                acq: 0,
                sqs: HashMap::new(),
                cqs: HashMap::new(),
                blocks: vec![0u8; (blocks << lba_shift) as usize],
                lba_shift,
                mdts,
                mqes,
                mode: Mode::Immediate,
                held: Vec::new(),
                commands: 0,
                sgl: false,
                sgl_commands: 0,
                vectors: Vec::new(),
                interrupts: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_mode(&self, m: Mode) {
        self.state().mode = m;
    }

    /// Posts the held completions, in the order given by `order` over their
    /// indices (e.g. reversed: out of order).
    pub fn release(&self, reverse: bool) {
        let mut st = self.state();
        let mut held = std::mem::take(&mut st.held);
        if reverse {
            held.reverse();
        }
        for (cqid, c) in held {
            post(&self.mem, &mut st, cqid, c);
        }
    }

    /// Completions held back.
    pub fn held(&self) -> usize {
        self.state().held.len()
    }

    /// The controller fails: CSTS.CFS is set and it stops processing.
    pub fn fail(&self) {
        self.state().csts |= reg::CSTS_CFS;
    }

    /// Gives the controller MSI-X vectors, vector `i` signalling `fds[i]`
    /// (before its queues are created).
    pub fn route_interrupts(&self, fds: Vec<Option<Arc<nvmf_sys::EventFd>>>) {
        self.state().vectors = fds;
    }

    /// Interrupts raised so far.
    pub fn interrupts(&self) -> u64 {
        self.state().interrupts
    }

    /// Offers SGLs for NVM commands (before the driver identifies it).
    pub fn offer_sgls(&self) {
        self.state().sgl = true;
    }

    /// NVM commands that came with an SGL.
    pub fn sgl_commands(&self) -> u64 {
        self.state().sgl_commands
    }

    /// Commands processed.
    pub fn commands(&self) -> u64 {
        self.state().commands
    }

    /// The namespace's bytes at `offset`.
    pub fn media(&self, offset: usize, len: usize) -> Vec<u8> {
        self.state().blocks[offset..offset + len].to_vec()
    }
}

/// Posts a completion on completion queue `cqid` (with the queue's phase).
fn post(mem: &SimMem, st: &mut State, cqid: u16, c: Completion) {
    let Some(q) = st.cqs.get_mut(&cqid) else {
        return;
    };
    let mut b = c.to_bytes();
    b[14] = (b[14] & !1) | q.phase as u8;
    mem.write(q.cq + q.cq_tail as u64 * qpair::CQE, &b);
    q.cq_tail += 1;
    if q.cq_tail == q.entries {
        q.cq_tail = 0;
        q.phase = !q.phase;
    }
    // An interrupt per completion posted (no coalescing).
    if let Some(fd) = q
        .vector
        .and_then(|v| st.vectors.get(v as usize))
        .and_then(|f| f.as_ref())
    {
        fd.notify();
        st.interrupts += 1;
    }
}

/// The bytes a command's one SGL Data Block descriptor describes, which
/// must be exactly the transfer's.
fn sgl_run(cmd: &Command, len: usize) -> Result<Vec<(u64, usize)>, Status> {
    let id = cmd.dptr[15];
    if id >> 4 != 0 || id & 0xF != 0 {
        return Err(Status::SGL_TYPE_INVALID.dnr());
    }
    if crate::nvme::le32(&cmd.dptr, 8) as usize != len {
        return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
    }
    Ok(vec![(le64(&cmd.dptr, 0), len)])
}

/// The bytes a command's PRPs describe: (iova, len) runs.
fn prp_runs(mem: &SimMem, cmd: &Command, len: usize) -> Option<Vec<(u64, usize)>> {
    let prp1 = le64(&cmd.dptr, 0);
    let prp2 = le64(&cmd.dptr, 8);
    let first = (prp::PAGE - prp1 % prp::PAGE).min(len as u64) as usize;
    let mut runs = vec![(prp1, first)];
    let mut left = len - first;
    if left == 0 {
        return Some(runs);
    }
    if left <= prp::PAGE as usize {
        runs.push((prp2, left));
        return Some(runs);
    }
    let mut list = vec![0u8; prp::PAGE as usize];
    if !mem.read(prp2, &mut list) {
        return None;
    }
    let mut i = 0;
    while left > 0 {
        let page = le64(&list, i * 8);
        let n = left.min(prp::PAGE as usize);
        runs.push((page, n));
        left -= n;
        i += 1;
        if i >= prp::LIST_ENTRIES {
            return None;
        }
    }
    Some(runs)
}

fn execute(mem: &SimMem, st: &mut State, qid: u16, cmd: &Command) -> (Status, u32) {
    st.commands += 1;
    if qid == 0 {
        return admin_command(mem, st, cmd);
    }
    let shift = st.lba_shift;
    let nblocks = st.blocks.len() as u64 >> shift;
    let slba = cmd.slba();
    let nlb = cmd.nlb() as u64;
    let in_range = slba.checked_add(nlb).is_some_and(|e| e <= nblocks);
    let (off, len) = ((slba << shift) as usize, (nlb << shift) as usize);
    match cmd.opcode {
        0x00 => (Status::SUCCESS, 0),
        0x01 | 0x02 | 0x05 if !in_range => (Status::LBA_OUT_OF_RANGE.dnr(), 0),
        0x01 | 0x02 | 0x05 if st.mdts > 0 && len > (4096usize << st.mdts) => {
            (Status::INVALID_FIELD.dnr(), 0)
        }
        0x01 | 0x02 | 0x05 => {
            let runs = match cmd.psdt() {
                0 => prp_runs(mem, cmd, len),
                1 if st.sgl => {
                    st.sgl_commands += 1;
                    match sgl_run(cmd, len) {
                        Ok(r) => Some(r),
                        Err(st) => return (st, 0),
                    }
                }
                _ => return (Status::INVALID_FIELD.dnr(), 0),
            };
            let Some(runs) = runs else {
                return (Status::DATA_TRANSFER_ERROR, 0);
            };
            let mut at = off;
            for (iova, n) in runs {
                let ok = match cmd.opcode {
                    0x01 => mem.read(iova, &mut st.blocks[at..at + n]),
                    0x02 => mem.write(iova, &st.blocks[at..at + n]),
                    _ => {
                        let mut b = vec![0u8; n];
                        if mem.read(iova, &mut b) && b != st.blocks[at..at + n] {
                            return (Status::COMPARE_FAILURE.dnr(), 0);
                        }
                        true
                    }
                };
                if !ok {
                    return (Status::DATA_TRANSFER_ERROR, 0);
                }
                at += n;
            }
            (Status::SUCCESS, 0)
        }
        0x08 if !in_range => (Status::LBA_OUT_OF_RANGE.dnr(), 0),
        0x08 => {
            st.blocks[off..off + len].fill(0);
            (Status::SUCCESS, 0)
        }
        0x09 => (Status::SUCCESS, 0),
        _ => (Status::INVALID_OPCODE.dnr(), 0),
    }
}

fn admin_command(mem: &SimMem, st: &mut State, cmd: &Command) -> (Status, u32) {
    let prp1 = le64(&cmd.dptr, 0);
    match cmd.opcode {
        admin::IDENTIFY => {
            let mut b = vec![0u8; 4096];
            match cmd.cdw10 & 0xFF {
                1 => {
                    b[4..24].copy_from_slice(b"SIM0000000000000001 ");
                    b[24..64].copy_from_slice(&[b'S'; 40]);
                    b[77] = st.mdts;
                    put32(&mut b, 516, 1);
                    put16(&mut b, 520, 0x000D); // Compare, DSM, Write Zeroes
                    b[525] = 1;
                    if st.sgl {
                        put32(&mut b, 536, 1); // SGLs, no alignment required
                    }
                }
                0 if cmd.nsid == 1 => {
                    let n = st.blocks.len() as u64 >> st.lba_shift;
                    put64(&mut b, 0, n);
                    put64(&mut b, 8, n);
                    put64(&mut b, 16, n);
                    b[26] = 0;
                    put32(&mut b, 128, st.lba_shift << 16);
                }
                0 => {}
                _ => return (Status::INVALID_FIELD, 0),
            }
            if mem.write(prp1, &b) {
                (Status::SUCCESS, 0)
            } else {
                (Status::DATA_TRANSFER_ERROR, 0)
            }
        }
        admin::SET_FEATURES if cmd.cdw10 & 0xFF == 0x07 => {
            // Grants at most 4 queue pairs.
            let want = (cmd.cdw11 & 0xFFFF).min(3);
            (Status::SUCCESS, want | (want << 16))
        }
        admin::CREATE_CQ | admin::CREATE_SQ => {
            let qid = cmd.cdw10 as u16;
            let entries = (cmd.cdw10 >> 16) as u16 + 1;
            if qid == 0 || entries as u32 > st.mqes as u32 + 1 {
                return (Status::INVALID_FIELD, 0);
            }
            let mut q = SimQueue {
                sq: prp1,
                cq: prp1,
                entries,
                head: 0,
                cq_tail: 0,
                phase: true,
                cqid: (cmd.cdw11 >> 16) as u16,
                vector: None,
            };
            if cmd.opcode == admin::CREATE_CQ {
                // Interrupts enabled (IEN): on vector IV, which must exist.
                if cmd.cdw11 & 2 != 0 {
                    let iv = (cmd.cdw11 >> 16) as u16;
                    if iv as usize >= st.vectors.len() {
                        return (Status::INVALID_INTERRUPT_VECTOR, 0);
                    }
                    q.vector = Some(iv);
                }
                st.cqs.insert(qid, q);
            } else {
                if !st.cqs.contains_key(&q.cqid) {
                    return (Status::INVALID_FIELD, 0);
                }
                st.sqs.insert(qid, q);
            }
            (Status::SUCCESS, 0)
        }
        admin::ABORT => {
            let sqid = cmd.cdw10 as u16;
            let cid = (cmd.cdw10 >> 16) as u16;
            let cqid = st.sqs.get(&sqid).map_or(0, |q| q.cqid);
            // A held (or dropped) command is completed as aborted.
            let held = st.held.iter().position(|(q, c)| *q == cqid && c.cid == cid);
            match held {
                Some(i) => {
                    let (q, mut c) = st.held.remove(i);
                    c.status = Status::ABORT_REQUESTED;
                    post(mem, st, q, c);
                    (Status::SUCCESS, 0)
                }
                // Not aborted (DW0 bit 0 set).
                None => (Status::SUCCESS, 1),
            }
        }
        _ => (Status::INVALID_OPCODE, 0),
    }
}

impl Regs for SimController {
    fn read32(&self, off: u32) -> u32 {
        let st = self.state();
        match off {
            // MQES, CQR, TO = 1 (500 ms), DSTRD 0; CSS bit 37 (high word bit 5).
            reg::CAP => st.mqes as u32 | (1 << 16) | (1 << 24),
            0x04 => 1 << 5,
            reg::VS => 0x0001_0400,
            reg::CC => st.cc,
            reg::CSTS => st.csts,
            reg::AQA => st.aqa,
            _ => 0,
        }
    }

    fn write32(&self, off: u32, v: u32) {
        let mut st = self.state();
        match off {
            reg::CC => {
                let was = st.cc & 1;
                st.cc = v;
                if v & 1 == 1 && was == 0 {
                    let (asq, acq, aqa) = (st.asq, st.acq, st.aqa);
                    st.sqs.clear();
                    st.cqs.clear();
                    st.held.clear();
                    let admin_q = |base: u64, entries: u16| SimQueue {
                        sq: base,
                        cq: base,
                        entries,
                        head: 0,
                        cq_tail: 0,
                        phase: true,
                        cqid: 0,
                        // The admin queue's interrupts are always on, on vector 0.
                        vector: Some(0),
                    };
                    st.sqs.insert(0, admin_q(asq, (aqa & 0xFFF) as u16 + 1));
                    st.cqs
                        .insert(0, admin_q(acq, ((aqa >> 16) & 0xFFF) as u16 + 1));
                    st.csts = (st.csts & !reg::CSTS_CFS) | reg::CSTS_RDY;
                } else if v & 1 == 0 {
                    st.csts &= !(reg::CSTS_RDY | reg::CSTS_CFS);
                    st.sqs.clear();
                    st.cqs.clear();
                    st.held.clear();
                }
            }
            reg::AQA => st.aqa = v,
            reg::ASQ => st.asq = (st.asq & !0xFFFF_FFFF) | v as u64,
            0x2C => st.asq = (st.asq & 0xFFFF_FFFF) | (v as u64) << 32,
            reg::ACQ => st.acq = (st.acq & !0xFFFF_FFFF) | v as u64,
            0x34 => st.acq = (st.acq & 0xFFFF_FFFF) | (v as u64) << 32,
            off if off >= reg::DOORBELLS => {
                let idx = (off - reg::DOORBELLS) / 4;
                let qid = (idx / 2) as u16;
                if idx % 2 == 1 || st.csts & reg::CSTS_CFS != 0 {
                    // A completion head, or a failed controller: nothing runs.
                    return;
                }
                let Some(q) = st.sqs.get(&qid) else { return };
                let (base, entries, cqid) = (q.sq, q.entries, q.cqid);
                let mut head = q.head;
                let tail = v as u16;
                while head != tail && tail < entries {
                    let mut b = [0u8; 64];
                    self.mem.read(base + head as u64 * qpair::SQE, &mut b);
                    let cmd = Command::parse(&b);
                    head = (head + 1) % entries;
                    if let Some(q) = st.sqs.get_mut(&qid) {
                        q.head = head;
                    }
                    let (status, dw0) = execute(&self.mem, &mut st, qid, &cmd);
                    let c = Completion {
                        dw0,
                        dw1: 0,
                        sqhd: head,
                        sqid: qid,
                        cid: cmd.cid,
                        status,
                    };
                    match (qid, st.mode) {
                        (0, _) | (_, Mode::Immediate) => post(&self.mem, &mut st, cqid, c),
                        (_, Mode::Hold) | (_, Mode::Drop) => st.held.push((cqid, c)),
                    }
                }
            }
            _ => {}
        }
    }
}
