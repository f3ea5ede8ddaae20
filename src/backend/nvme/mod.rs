//! A user-space driver for NVMe SSDs on PCIe, as sans-IO pieces: queue
//! pairs ([`qpair`]), PRP lists ([`prp`]) and the controller's bring-up
//! ([`bring_up`]) work over two small interfaces, the controller's registers
//! ([`Regs`]) and the memory it reaches by DMA ([`DmaMem`]). VFIO provides
//! both for a real device; [`sim`] provides both for tests, with a
//! simulated controller.

pub mod device;
pub mod driver;
pub mod passthru;
pub mod prp;
pub mod qpair;
pub mod sim;

pub use qpair::{Done, QueuePair, SubmitError};

use crate::nvme::{get_str, le16, le32, le64, Command, Status};
use std::sync::Arc;
use std::time::Duration;

/// Memory the controller reaches by DMA, addressed by I/O virtual address.
pub trait DmaMem {
    /// Copies `dst.len()` bytes at `iova` into `dst`; false if out of range.
    fn read(&self, iova: u64, dst: &mut [u8]) -> bool;
    /// Copies `src` to `iova`; false if out of range.
    fn write(&self, iova: u64, src: &[u8]) -> bool;
    /// The 8 bytes at `iova` (8-byte aligned) as one load that sees a
    /// device's write whole, ordered before the reads after it (a
    /// completion's phase tag, command id and status are read together).
    fn load64(&self, iova: u64) -> Option<u64>;
    /// The memory as one region and the IOVA of its first byte, when it is
    /// one (for buffers the transports use directly, with no copy).
    fn region(&self) -> Option<(Arc<nvmf_sys::Region>, u64)> {
        None
    }
}

/// The controller's registers (BAR0).
pub trait Regs {
    fn read32(&self, off: u32) -> u32;
    fn write32(&self, off: u32, v: u32);
    fn read64(&self, off: u32) -> u64 {
        self.read32(off) as u64 | (self.read32(off + 4) as u64) << 32
    }
    fn write64(&self, off: u32, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }
}

/// Register offsets.
pub mod reg {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const INTMS: u32 = 0x0C;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1C;
    pub const AQA: u32 = 0x24;
    pub const ASQ: u32 = 0x28;
    pub const ACQ: u32 = 0x30;
    pub const DOORBELLS: u32 = 0x1000;
    pub const CSTS_RDY: u32 = 1;
    pub const CSTS_CFS: u32 = 2;
}

/// Admin opcodes the driver uses.
pub mod admin {
    pub const CREATE_SQ: u8 = 0x01;
    pub const CREATE_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
}

/// Offset of queue `qid`'s submission tail (`cq` false) or completion head
/// doorbell, with CAP.DSTRD `dstrd`.
pub fn doorbell(qid: u16, cq: bool, dstrd: u32) -> u32 {
    reg::DOORBELLS + (2 * qid as u32 + cq as u32) * (4 << dstrd)
}

/// Hands out IOVA space of one DMA region, page-aligned, never freed (queue
/// memory and PRP list pages for the life of the controller).
#[derive(Debug, Clone)]
pub struct DmaArena {
    next: u64,
    end: u64,
}

impl DmaArena {
    pub fn new(base_iova: u64, len: u64) -> DmaArena {
        DmaArena {
            next: base_iova,
            end: base_iova + len,
        }
    }

    /// `len` bytes at a page boundary; `None` when the arena is used up.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let at = self.next.next_multiple_of(prp::PAGE);
        let end = at.checked_add(len)?;
        (end <= self.end).then(|| {
            self.next = end;
            at
        })
    }
}

/// What Identify Controller says that the driver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub serial: String,
    pub model: String,
    /// Largest transfer in bytes (MDTS; 0 = no limit reported).
    pub max_transfer: u32,
    /// Namespaces (NN).
    pub namespaces: u32,
    /// Optional NVM commands (ONCS).
    pub oncs: u16,
    /// A volatile write cache is present (VWC bit 0).
    pub vwc: bool,
    /// SGL support (SGLS): bits 1:0 nonzero when NVM commands take SGLs.
    pub sgls: u32,
}

impl Identity {
    /// Whether I/O commands may describe their data with an SGL.
    pub fn takes_sgls(&self) -> bool {
        self.sgls & 3 != 0
    }
}

/// What Identify Namespace says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    pub nsid: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// log2 of the logical block size in use.
    pub lba_shift: u32,
}

/// A controller brought up: its admin queue, I/O queue pairs (not yet
/// owned by anyone) and what it said about itself and the namespace.
pub struct Up {
    pub identity: Identity,
    pub ns: Namespace,
    pub admin: QueuePair,
    pub io: Vec<QueuePair>,
    /// CAP.DSTRD, for doorbell offsets.
    pub dstrd: u32,
    /// CAP.TO: how long the controller may take to become ready.
    pub ready_timeout: Duration,
}

/// Waits for `cond` on the registers, up to `timeout`, calling `wait`
/// between looks.
fn wait_for(
    regs: &dyn Regs,
    cond: impl Fn(u32) -> bool,
    timeout: Duration,
    wait: &mut dyn FnMut(Duration),
) -> Result<u32, u32> {
    let step = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        let v = regs.read32(reg::CSTS);
        if cond(v) {
            return Ok(v);
        }
        if waited >= timeout {
            return Err(v);
        }
        wait(step);
        waited += step;
    }
}

/// Runs one admin command to completion (bring-up only: polled).
fn admin_cmd(
    regs: &dyn Regs,
    mem: &dyn DmaMem,
    q: &mut QueuePair,
    dstrd: u32,
    cmd: Command,
    wait: &mut dyn FnMut(Duration),
) -> Result<u32, String> {
    let opcode = cmd.opcode;
    let far = std::time::Instant::now() + Duration::from_secs(3600);
    q.submit(mem, cmd, 0, far)
        .map_err(|e| format!("admin opcode {opcode:#x}: {e:?}"))?;
    if let Some(tail) = q.sq_doorbell() {
        regs.write32(doorbell(0, false, dstrd), tail as u32);
    }
    let mut done = Vec::new();
    for _ in 0..10_000 {
        if let Some(head) = q.poll(mem, &mut done) {
            regs.write32(doorbell(0, true, dstrd), head as u32);
        }
        if let Some(d) = done.pop() {
            return if d.status.is_success() {
                Ok(d.dw0)
            } else {
                Err(format!("admin opcode {opcode:#x} failed: {}", d.status))
            };
        }
        if regs.read32(reg::CSTS) & reg::CSTS_CFS != 0 {
            return Err(format!(
                "controller fatal status during admin opcode {opcode:#x}"
            ));
        }
        wait(Duration::from_millis(1));
    }
    Err(format!("admin opcode {opcode:#x}: no completion in 10 s"))
}

/// Resets the controller (CC.EN 0, waits for RDY 0), gives it the admin
/// queue at `asq`/`acq` (the completion queue zeroed here), enables it and
/// waits for RDY.
fn enable(
    regs: &dyn Regs,
    mem: &dyn DmaMem,
    asq: u64,
    acq: u64,
    ready_timeout: Duration,
    wait: &mut dyn FnMut(Duration),
) -> Result<(), String> {
    // Disable (a reset): whatever the controller was doing stops.
    if regs.read32(reg::CC) & 1 != 0 {
        regs.write32(reg::CC, regs.read32(reg::CC) & !1);
    }
    wait_for(regs, |v| v & reg::CSTS_RDY == 0, ready_timeout, wait)
        .map_err(|v| format!("the controller did not reset (CSTS {v:#x})"))?;
    if !mem.write(acq, &vec![0u8; (ADMIN_DEPTH as u64 * qpair::CQE) as usize]) {
        return Err("admin queue memory out of range".into());
    }
    regs.write32(reg::INTMS, 0xFFFF_FFFF);
    regs.write32(reg::AQA, ((ADMIN_DEPTH - 1) << 16) | (ADMIN_DEPTH - 1));
    regs.write64(reg::ASQ, asq);
    regs.write64(reg::ACQ, acq);
    // IOCQES 16 bytes, IOSQES 64 bytes, 4 KiB pages, NVM command set, enabled.
    regs.write32(reg::CC, (4 << 20) | (6 << 16) | 1);
    let csts = wait_for(
        regs,
        |v| v & (reg::CSTS_RDY | reg::CSTS_CFS) != 0,
        ready_timeout,
        wait,
    )
    .map_err(|v| format!("the controller did not become ready (CSTS {v:#x})"))?;
    if csts & reg::CSTS_CFS != 0 {
        return Err("the controller reports a fatal status (CSTS.CFS) after enabling".into());
    }
    Ok(())
}

/// Asks for `n` I/O queue pairs (Set Features, Number of Queues): how many
/// the controller grants, at most `n`.
fn set_queue_count(
    regs: &dyn Regs,
    mem: &dyn DmaMem,
    admin: &mut QueuePair,
    dstrd: u32,
    n: u16,
    wait: &mut dyn FnMut(Duration),
) -> Result<u32, String> {
    // Zero-based counts of submission and completion queues.
    let z = n.max(1) as u32 - 1;
    let granted = admin_cmd(
        regs,
        mem,
        admin,
        dstrd,
        Command {
            opcode: admin::SET_FEATURES,
            cdw10: 0x07,
            cdw11: z | (z << 16),
            ..Default::default()
        },
        wait,
    )?;
    Ok(((granted & 0xFFFF).min(granted >> 16) + 1).min(n.max(1) as u32))
}

/// Creates I/O queue pair `q` on the controller (its completion queue
/// memory zeroed first; interrupts on its vector if it has one, else off).
fn create_io_queue(
    regs: &dyn Regs,
    mem: &dyn DmaMem,
    admin: &mut QueuePair,
    dstrd: u32,
    q: &QueuePair,
    wait: &mut dyn FnMut(Duration),
) -> Result<(), String> {
    let depth = q.entries() as u32;
    if !mem.write(
        q.cq_iova(),
        &vec![0u8; (depth as u64 * qpair::CQE) as usize],
    ) {
        return Err("I/O queue memory out of range".into());
    }
    let size = (depth - 1) << 16 | q.qid as u32;
    admin_cmd(
        regs,
        mem,
        admin,
        dstrd,
        Command {
            opcode: admin::CREATE_CQ,
            dptr: prp_dptr(q.cq_iova(), 0),
            cdw10: size,
            // Physically contiguous (bit 0); interrupts enabled (bit 1) on
            // vector IV (bits 31:16), or off.
            cdw11: q.vector.map_or(1, |v| (v as u32) << 16 | 2 | 1),
            ..Default::default()
        },
        wait,
    )?;
    admin_cmd(
        regs,
        mem,
        admin,
        dstrd,
        Command {
            opcode: admin::CREATE_SQ,
            dptr: prp_dptr(q.sq_iova(), 0),
            cdw10: size,
            // Its completion queue, physically contiguous.
            cdw11: (q.qid as u32) << 16 | 1,
            ..Default::default()
        },
        wait,
    )?;
    Ok(())
}

/// Resets a controller that was brought up and brings it back with the same
/// queue memory: the admin queue `admin` and the I/O queues `io` (whose
/// state the caller resets; what was in flight is lost).
pub fn reenable(
    regs: &dyn Regs,
    mem: &dyn DmaMem,
    admin: &mut QueuePair,
    io: &[QueuePair],
    dstrd: u32,
    ready_timeout: Duration,
    wait: &mut dyn FnMut(Duration),
) -> Result<(), String> {
    enable(
        regs,
        mem,
        admin.sq_iova(),
        admin.cq_iova(),
        ready_timeout,
        wait,
    )?;
    admin.reset();
    let granted = set_queue_count(regs, mem, admin, dstrd, io.len() as u16, wait)?;
    if (granted as usize) < io.len() {
        return Err(format!(
            "the controller now grants {granted} I/O queue pairs of the {} it had",
            io.len()
        ));
    }
    for q in io {
        create_io_queue(regs, mem, admin, dstrd, q, wait)?;
    }
    Ok(())
}

/// Admin queue entries the driver uses.
pub const ADMIN_DEPTH: u32 = 32;

/// What a bring-up asks of the controller: namespace `nsid`, `queues` I/O
/// queue pairs of `depth` entries, and with `vectors` interrupt vectors
/// routed (0: none), I/O queue `qid` signals vector `qid` when there is one
/// (vector 0 is the admin queue's).
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub nsid: u32,
    pub queues: u16,
    pub depth: u32,
    pub vectors: u16,
}

/// Resets and enables the controller, sets up its admin queue, identifies it
/// and the namespace, asks for the I/O queue pairs and creates them (see
/// [`Want`]). Queue memory comes from `arena`; `wait` sleeps (a real clock
/// for a device, nothing for the simulator).
pub fn bring_up(
    regs: &dyn Regs,
    mem: &dyn DmaMem,
    arena: &mut DmaArena,
    want: Want,
    wait: &mut dyn FnMut(Duration),
) -> Result<Up, String> {
    let Want {
        nsid,
        queues: io_queues,
        depth,
        vectors,
    } = want;
    let cap = regs.read64(reg::CAP);
    let mqes = (cap & 0xFFFF) as u32 + 1;
    let ready_timeout = Duration::from_millis(500 * ((cap >> 24) & 0xFF).max(1));
    let dstrd = ((cap >> 32) & 0xF) as u32;
    let mpsmin = (cap >> 48) & 0xF;
    if cap & (1 << 37) == 0 {
        return Err("the controller does not support the NVM command set (CAP.CSS)".into());
    }
    if mpsmin != 0 {
        return Err(format!(
            "the controller's smallest memory page is {} bytes; this driver uses 4 KiB",
            4096u64 << mpsmin
        ));
    }
    let asq = arena.alloc(ADMIN_DEPTH as u64 * qpair::SQE);
    let acq = arena.alloc(ADMIN_DEPTH as u64 * qpair::CQE);
    let (Some(asq), Some(acq)) = (asq, acq) else {
        return Err("no DMA memory for the admin queue".into());
    };
    enable(regs, mem, asq, acq, ready_timeout, wait)?;
    let mut admin = QueuePair::new(0, ADMIN_DEPTH, asq, acq);
    let buf = arena.alloc(4096).ok_or("no DMA memory for Identify data")?;
    let mut id = [0u8; 4096];
    let identify = |cns: u32, nsid: u32| Command {
        opcode: admin::IDENTIFY,
        nsid,
        dptr: prp_dptr(buf, 0),
        cdw10: cns,
        ..Default::default()
    };
    admin_cmd(regs, mem, &mut admin, dstrd, identify(1, 0), wait)?;
    mem.read(buf, &mut id);
    let mdts = id[77];
    let identity = Identity {
        serial: get_str(&id, 4, 20),
        model: get_str(&id, 24, 40),
        max_transfer: if mdts == 0 {
            0
        } else {
            4096u32.checked_shl(mdts as u32).unwrap_or(0)
        },
        namespaces: le32(&id, 516),
        oncs: le16(&id, 520),
        vwc: id[525] & 1 != 0,
        sgls: le32(&id, 536),
    };
    if nsid == 0 || nsid > identity.namespaces {
        return Err(format!(
            "namespace {nsid} does not exist (the controller has {})",
            identity.namespaces
        ));
    }
    admin_cmd(regs, mem, &mut admin, dstrd, identify(0, nsid), wait)?;
    mem.read(buf, &mut id);
    let nsze = le64(&id, 0);
    let flbas = id[26];
    let fmt = ((flbas & 0xF) | ((flbas >> 1) & 0x30)) as usize;
    let lbaf = le32(&id, 128 + 4 * fmt);
    let (ms, lbads) = (lbaf & 0xFFFF, (lbaf >> 16) & 0xFF);
    if nsze == 0 {
        return Err(format!("namespace {nsid} is not active (NSZE 0)"));
    }
    if ms != 0 || !(9..=12).contains(&lbads) {
        return Err(format!(
            "namespace {nsid} is formatted with {}-byte blocks and {ms} bytes of metadata; \
             512 or 4096-byte blocks without metadata are supported",
            1u64 << lbads.min(63)
        ));
    }
    let ns = Namespace {
        nsid,
        blocks: nsze,
        lba_shift: lbads,
    };
    let granted = set_queue_count(regs, mem, &mut admin, dstrd, io_queues, wait)?;
    let depth = depth.clamp(2, mqes.min(4096));
    let mut io = Vec::new();
    for qid in 1..=granted as u16 {
        let sq = arena.alloc(depth as u64 * qpair::SQE);
        let cq = arena.alloc(depth as u64 * qpair::CQE);
        let (Some(sq), Some(cq)) = (sq, cq) else {
            return Err("no DMA memory for the I/O queues".into());
        };
        let mut q = QueuePair::new(qid, depth, sq, cq);
        q.vector = (qid < vectors).then_some(qid);
        create_io_queue(regs, mem, &mut admin, dstrd, &q, wait)?;
        io.push(q);
    }
    Ok(Up {
        identity,
        ns,
        admin,
        io,
        dstrd,
        ready_timeout,
    })
}

/// A command's data pointer holding PRP1 and PRP2.
pub fn prp_dptr(prp1: u64, prp2: u64) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&prp1.to_le_bytes());
    d[8..].copy_from_slice(&prp2.to_le_bytes());
    d
}

/// A command's data pointer holding one SGL Data Block descriptor: `len`
/// bytes at `iova` (the command's PSDT must say SGL, 01b).
pub fn sgl_dptr(iova: u64, len: u32) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&iova.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    // Byte 15, SGL identifier: type 0h (Data Block), sub type 0h (Address).
    d[15] = 0;
    d
}

/// Command flags with PSDT 01b: the data pointer is an SGL, its
/// descriptors contiguous in the command.
pub const PSDT_SGL: u8 = 1 << 6;

/// The NVMe status an I/O gets when the controller is not usable (failed,
/// being reset): the host may retry elsewhere.
pub const NOT_READY: Status = Status::NAMESPACE_NOT_READY;

/// Operations that failed since the last report, by reason: the I/O path
/// only counts, and the reactor's timer logs one line per reason.
#[derive(Default)]
pub struct Faults(Vec<(String, u64)>);

impl Faults {
    pub fn add(&mut self, why: &str) {
        match self.0.iter_mut().find(|(w, _)| w == why) {
            Some((_, n)) => *n += 1,
            None => self.0.push((why.to_string(), 1)),
        }
    }

    /// A command the device completed with an error status.
    pub fn device(&mut self, opcode: u8, st: Status) {
        self.add(&format!("opcode {opcode:#04x}: the device returned {st}"));
    }

    /// Logs and clears the tally (`who` names the device).
    pub fn report(&mut self, reactor: usize, who: &str) {
        for (why, n) in self.0.drain(..) {
            log::warn!("reactor {reactor}: {who}: {n} command(s) failed: {why}");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests;
