//! The reactor's NVMe driver: each reactor takes one I/O queue pair of each
//! controller it uses, builds the commands of its sessions' backend
//! operations, writes the doorbells once per pass and polls completions in
//! its loop. Completions are never taken from interrupts: a reactor that
//! polls ignores them (and with idle = "busy" they are off). A reactor that
//! goes to sleep with commands in flight waits on its queue's MSI-X vector,
//! routed to an eventfd the ring polls, instead of waking on a timer. Data
//! moves through staged DMA buffers (no copy), or the reactor's bounce
//! buffers where a transfer cannot be staged.

use super::device::NvmeDevice;
use super::passthru::PassQ;
use super::{prp, prp_dptr, DmaMem, Done, Faults, QueuePair, SubmitError};
use crate::backend::{DeviceDone, DeviceRef, DeviceRequest, IoOp};
use crate::fabrics::Response;
use crate::nvme::{Command, Status};
use crate::reactor::{token, Cx, Driver, Handoff};
use crate::transport::DRIVER_NVME;
use nvmf_sys::ring::Op;
use nvmf_sys::Completion;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How long a command may take before it is aborted and failed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sleeping reactor waits between looks at a controller's
/// completion queue while commands are in flight (a busy reactor never
/// sleeps; see the idle policy).
pub const POLL_SLEEP: Duration = Duration::from_micros(20);
/// Bounce buffers per queue pair: up to this many transfers in flight.
const BOUNCE: usize = 64;
/// Largest transfer one command carries (one PRP list page).
const MAX_COMMAND: u32 = (2 << 20) - 4096;
/// Blocks one Write Zeroes command covers at most (NLB is 16 bits).
const MAX_ZERO_BLOCKS: u64 = 65536;

/// NVM opcodes.
mod op {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const COMPARE: u8 = 0x05;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DSM: u8 = 0x09;
}

/// One backend operation in flight, perhaps split over several commands.
struct Req {
    slot: usize,
    tag: u32,
    op: IoOp,
    chunk: Option<u32>,
    /// Commands not completed yet.
    parts: u32,
    status: Status,
    /// A command of it timed out: the device may still move its data.
    timed_out: bool,
}

/// A reactor's hold on one controller.
struct DevQ {
    dev: Arc<NvmeDevice>,
    qp: QueuePair,
    /// Bounce buffers: `BOUNCE` chunks of `chunk` bytes at `bounce`, each
    /// with its own PRP list pages at `lists`.
    bounce: u64,
    lists: u64,
    chunk: u64,
    /// List pages per chunk (one per command a transfer is split into).
    lists_per_chunk: u64,
    free_chunks: Vec<u32>,
    reqs: Vec<Option<Req>>,
    free_reqs: Vec<u32>,
    /// Operations waiting for a bounce buffer or room in the queue.
    waiting: VecDeque<(usize, u32, IoOp)>,
    /// Largest transfer per command.
    max_cmd: u32,
    prps: Vec<u64>,
    /// Scratch, kept to reuse its memory: an operation's commands, and a
    /// PRP list's bytes.
    cmds: Vec<Command>,
    prp_bytes: Vec<u8>,
    faults: Faults,
    /// The controller generation the queue pair's state belongs to.
    generation: u64,
    /// Memory of commands that timed out (a bounce chunk, staged buffers
    /// in the operation): the device may still read or write it, so it is
    /// not reused until the controller is reset.
    quarantine: Vec<(Option<u32>, Option<IoOp>)>,
    /// A ring poll is armed on the queue's interrupt eventfd.
    irq_armed: bool,
}

pub struct NvmeDriver {
    max_io: u32,
    /// The reactor went to sleep waiting on completion interrupts (cleared
    /// by the next pass): only then is an interrupt counted as a wake-up.
    asleep: bool,
    devs: Vec<DevQ>,
    done: Vec<Done>,
    /// Passthrough commands to namespaces the kernel keeps (made when first
    /// needed).
    pass: Option<PassQ>,
}

/// Ring token kind: the passthrough ring has completions.
const K_CMD: u8 = 1;
/// Ring token kind: a controller's completion interrupt (the token's slot
/// is the controller's index in the driver).
const K_IRQ: u8 = 2;

impl NvmeDriver {
    /// A driver whose operations are at most `max_io` bytes (the target's
    /// MDTS).
    pub fn new(max_io: u32) -> NvmeDriver {
        NvmeDriver {
            max_io,
            asleep: false,
            devs: Vec::new(),
            done: Vec::new(),
            pass: None,
        }
    }

    fn dev_index(&mut self, dev: &Arc<NvmeDevice>) -> io::Result<usize> {
        if let Some(i) = self.devs.iter().position(|d| Arc::ptr_eq(&d.dev, dev)) {
            return Ok(i);
        }
        let qp = dev.take_queue().ok_or_else(|| {
            io::Error::other(format!(
                "NVMe controller {}: no I/O queue pair left for this reactor",
                dev.name
            ))
        })?;
        let max_cmd = match dev.identity.max_transfer {
            0 => MAX_COMMAND,
            n => n.min(MAX_COMMAND),
        };
        let chunk = (self.max_io as u64).next_multiple_of(prp::PAGE);
        let lists_per_chunk = chunk.div_ceil(max_cmd as u64).max(1);
        let bounce = dev.alloc(chunk * BOUNCE as u64);
        let lists = dev.alloc(prp::PAGE * lists_per_chunk * BOUNCE as u64);
        let (Some(bounce), Some(lists)) = (bounce, lists) else {
            return Err(io::Error::other(format!(
                "NVMe controller {}: no DMA memory for a reactor's buffers",
                dev.name
            )));
        };
        self.devs.push(DevQ {
            dev: dev.clone(),
            qp,
            bounce,
            lists,
            chunk,
            lists_per_chunk,
            free_chunks: (0..BOUNCE as u32).rev().collect(),
            reqs: Vec::new(),
            free_reqs: Vec::new(),
            waiting: VecDeque::new(),
            max_cmd,
            prps: Vec::new(),
            cmds: Vec::new(),
            prp_bytes: Vec::new(),
            faults: Faults::default(),
            generation: dev.generation(),
            quarantine: Vec::new(),
            irq_armed: false,
        });
        Ok(self.devs.len() - 1)
    }
}

/// The NVM opcode an operation's (first) command has.
fn opcode_of(op: &IoOp) -> u8 {
    match op {
        IoOp::Read { .. } | IoOp::ReadDma { .. } => op::READ,
        IoOp::Write { .. } | IoOp::WriteDma { .. } => op::WRITE,
        IoOp::Compare { .. } => op::COMPARE,
        IoOp::Flush => op::FLUSH,
        IoOp::WriteZeroes { .. } => op::WRITE_ZEROES,
        IoOp::Deallocate { .. } => op::DSM,
    }
}

fn fail(cx: &mut Cx, slot: usize, tag: u32, op: IoOp, st: Status) {
    cx.device_done.push(DeviceDone {
        slot,
        tag,
        result: Err(st),
        buf: op.into_buf(),
    });
}

impl DevQ {
    fn new_req(&mut self, r: Req) -> u32 {
        match self.free_reqs.pop() {
            Some(i) => {
                self.reqs[i as usize] = Some(r);
                i
            }
            None => {
                self.reqs.push(Some(r));
                (self.reqs.len() - 1) as u32
            }
        }
    }

    /// Whether the controller is usable. After a reset (a new generation)
    /// what was in flight on the old queues is failed and the queue pair
    /// starts over.
    fn sync(&mut self, cx: &mut Cx) -> bool {
        if self.dev.is_failed() {
            return false;
        }
        let g = self.dev.generation();
        if g != self.generation {
            self.fail_all(cx, super::NOT_READY);
            self.qp.reset();
            self.generation = g;
            // The reset stopped every transfer: what timed-out commands
            // held is free again.
            self.free_chunks
                .extend(self.quarantine.drain(..).filter_map(|(c, _)| c));
        }
        true
    }

    /// Starts an operation; gives it back when it must wait.
    fn start(&mut self, cx: &mut Cx, slot: usize, tag: u32, op: IoOp) -> Option<IoOp> {
        if !self.sync(cx) {
            fail(cx, slot, tag, op, super::NOT_READY);
            return None;
        }
        let shift = self.dev.ns.lba_shift;
        let nsid = self.dev.ns.nsid;
        let dev = self.dev.clone();
        let mem: &dyn DmaMem = dev.mem();
        // Commands this operation needs, and whether it needs a chunk.
        let (needs_chunk, cmds) = match &op {
            // (A staged transfer takes a chunk only for its PRP list pages.)
            IoOp::Read { len, .. }
            | IoOp::Write { len, .. }
            | IoOp::Compare { len, .. }
            | IoOp::ReadDma { len, .. }
            | IoOp::WriteDma { len, .. } => {
                (true, (*len as u64).div_ceil(self.max_cmd as u64).max(1))
            }
            IoOp::Flush => (false, 1),
            IoOp::WriteZeroes { len, .. } => {
                (false, (len >> shift).div_ceil(MAX_ZERO_BLOCKS).max(1))
            }
            IoOp::Deallocate { .. } => (true, 1),
        };
        if self.qp.entries() as u64 - 1 < cmds {
            self.faults
                .add("the operation needs more commands than the queue holds");
            fail(cx, slot, tag, op, Status::INTERNAL_ERROR);
            return None;
        }
        // Room for every command of it, so that none waits half-submitted.
        if self.qp.room() < cmds as usize || (needs_chunk && self.free_chunks.is_empty()) {
            return Some(op);
        }
        let chunk = if needs_chunk {
            self.free_chunks.pop()
        } else {
            None
        };
        let c_iova = chunk.map(|c| self.bounce + c as u64 * self.chunk);
        let mut commands = std::mem::take(&mut self.cmds);
        commands.clear();
        let ok = match &op {
            IoOp::Read { offset, len, .. }
            | IoOp::Write { offset, len, .. }
            | IoOp::Compare { offset, len, .. }
            | IoOp::ReadDma { offset, len, .. }
            | IoOp::WriteDma { offset, len, .. } => {
                let opcode = opcode_of(&op);
                // The data's device address: the staged buffer the host's
                // data is in (or goes to), else the chunk it is copied
                // through.
                let c_iova = match &op {
                    IoOp::ReadDma { iova, .. } | IoOp::WriteDma { iova, .. } => *iova,
                    _ => c_iova.unwrap_or(0),
                };
                if let IoOp::Write { buf, at, len, .. } | IoOp::Compare { buf, at, len, .. } = &op {
                    dev.count_copy(*len);
                    if buf.len() < at + len || !mem.write(c_iova, &buf[*at..at + len]) {
                        self.faults
                            .add("the data could not be copied to the bounce buffer");
                        self.free_chunk(chunk);
                        fail(cx, slot, tag, op, Status::INTERNAL_ERROR);
                        return None;
                    }
                }
                let mut done = 0u64;
                let mut ok = true;
                let mut part = 0u64;
                // The data of each command is contiguous in IOVA space: one
                // SGL Data Block descriptor says it all, where the
                // controller takes SGLs; else PRPs (and a list page).
                let sgl = self.dev.identity.takes_sgls();
                while sgl && done < *len as u64 {
                    let n = (*len as u64 - done).min(self.max_cmd as u64);
                    let slba = (offset + done) >> shift;
                    commands.push(Command {
                        opcode,
                        flags: super::PSDT_SGL,
                        nsid,
                        cdw10: slba as u32,
                        cdw11: (slba >> 32) as u32,
                        cdw12: ((n >> shift) as u32).saturating_sub(1),
                        dptr: super::sgl_dptr(c_iova + done, n as u32),
                        ..Default::default()
                    });
                    done += n;
                }
                while done < *len as u64 {
                    let n = (*len as u64 - done).min(self.max_cmd as u64);
                    let list = self.lists
                        + (chunk.unwrap_or(0) as u64 * self.lists_per_chunk + part) * prp::PAGE;
                    match prp::build(c_iova + done, n as u32, list, &mut self.prps) {
                        // (A staged buffer is page-aligned, as chunks are.)
                        Some((p1, p2)) => {
                            if !self.prps.is_empty() {
                                self.prp_bytes.clear();
                                self.prp_bytes
                                    .extend(self.prps.iter().flat_map(|e| e.to_le_bytes()));
                                ok &= mem.write(list, &self.prp_bytes);
                            }
                            let slba = (offset + done) >> shift;
                            commands.push(Command {
                                opcode,
                                nsid,
                                cdw10: slba as u32,
                                cdw11: (slba >> 32) as u32,
                                cdw12: ((n >> shift) as u32).saturating_sub(1),
                                dptr: prp_dptr(p1, p2),
                                ..Default::default()
                            });
                        }
                        None => ok = false,
                    }
                    done += n;
                    part += 1;
                }
                ok
            }
            IoOp::Flush => {
                commands.push(Command {
                    opcode: op::FLUSH,
                    nsid,
                    ..Default::default()
                });
                true
            }
            IoOp::WriteZeroes { offset, len } => {
                let (mut slba, mut left) = (offset >> shift, len >> shift);
                while left > 0 {
                    let n = left.min(MAX_ZERO_BLOCKS);
                    commands.push(Command {
                        opcode: op::WRITE_ZEROES,
                        nsid,
                        cdw10: slba as u32,
                        cdw11: (slba >> 32) as u32,
                        cdw12: (n - 1) as u32,
                        ..Default::default()
                    });
                    slba += n;
                    left -= n;
                }
                true
            }
            IoOp::Deallocate { offset, len } => {
                // One range: context attributes 0, length in blocks, start.
                let mut range = [0u8; 16];
                range[4..8].copy_from_slice(&((len >> shift) as u32).to_le_bytes());
                range[8..16].copy_from_slice(&(offset >> shift).to_le_bytes());
                let at = c_iova.unwrap_or(0);
                commands.push(Command {
                    opcode: op::DSM,
                    nsid,
                    // One range; Attribute - Deallocate.
                    cdw10: 0,
                    cdw11: 1 << 2,
                    dptr: prp_dptr(at, 0),
                    ..Default::default()
                });
                mem.write(at, &range) && (len >> shift) <= u32::MAX as u64
            }
        };
        if !ok {
            self.cmds = commands;
            self.faults
                .add("no PRP list for the transfer, or its memory not written");
            self.free_chunk(chunk);
            fail(cx, slot, tag, op, Status::INTERNAL_ERROR);
            return None;
        }
        let parts = commands.len() as u32;
        let r = self.new_req(Req {
            slot,
            tag,
            op,
            chunk,
            parts,
            status: Status::SUCCESS,
            timed_out: false,
        });
        let deadline = cx.now + COMMAND_TIMEOUT;
        for c in commands.drain(..) {
            match self.qp.submit(self.dev.mem(), c, r as u64, deadline) {
                Ok(_) => {}
                Err(SubmitError::Full | SubmitError::Memory) => {
                    // (Room was checked above; memory is ours.) The parts not
                    // queued count as failed.
                    self.faults
                        .add("the queue refused a command it had room for");
                    self.part_done(cx, r as u64, Status::INTERNAL_ERROR);
                }
            }
        }
        self.cmds = commands;
        None
    }

    fn free_chunk(&mut self, chunk: Option<u32>) {
        if let Some(c) = chunk {
            self.free_chunks.push(c);
        }
    }

    /// One command of request `token` finished with `st`.
    fn part_done(&mut self, cx: &mut Cx, token: u64, st: Status) {
        let Some(r) = self.reqs.get_mut(token as usize).and_then(|r| r.as_mut()) else {
            return;
        };
        if !st.is_success() && r.status.is_success() {
            r.status = st;
        }
        r.parts -= 1;
        if r.parts > 0 {
            return;
        }
        let Some(mut r) = self.reqs[token as usize].take() else {
            return;
        };
        self.free_reqs.push(token as u32);
        if r.status.is_success() {
            if let (IoOp::Read { buf, at, len, .. }, Some(c)) = (&mut r.op, r.chunk) {
                let from = self.bounce + c as u64 * self.chunk;
                self.dev.count_copy(*len);
                if buf.len() < *at + *len || !self.dev.mem().read(from, &mut buf[*at..*at + *len]) {
                    self.faults
                        .add("the data read could not be copied from the bounce buffer");
                    r.status = Status::INTERNAL_ERROR;
                }
            }
        }
        let result = if r.status.is_success() {
            Ok(())
        } else {
            Err(r.status)
        };
        let buf = if r.timed_out {
            // Kept out of use until a reset: the device may still move
            // this command's data (the host's buffer goes back: the device
            // never touches it, only the bounce chunk or staged buffer).
            match r.op {
                op @ (IoOp::ReadDma { .. } | IoOp::WriteDma { .. }) => {
                    self.quarantine.push((r.chunk, Some(op)));
                    Vec::new()
                }
                op => {
                    self.quarantine.push((r.chunk, None));
                    op.into_buf()
                }
            }
        } else {
            self.free_chunk(r.chunk);
            r.op.into_buf()
        };
        cx.device_done.push(DeviceDone {
            slot: r.slot,
            tag: r.tag,
            result,
            buf,
        });
    }

    /// Operations that waited, while there is room.
    fn run_waiting(&mut self, cx: &mut Cx) {
        while let Some((slot, tag, op)) = self.waiting.pop_front() {
            if let Some(op) = self.start(cx, slot, tag, op) {
                self.waiting.push_front((slot, tag, op));
                return;
            }
        }
    }

    /// Everything in flight and waiting fails with `st` (the controller is
    /// gone).
    fn fail_all(&mut self, cx: &mut Cx, st: Status) {
        for t in self.qp.forget_all() {
            // Every part of the request: it is given up whole.
            while self.reqs.get(t as usize).is_some_and(|r| r.is_some()) {
                self.part_done(cx, t, st);
            }
        }
        while let Some((slot, tag, op)) = self.waiting.pop_front() {
            fail(cx, slot, tag, op, st);
        }
    }
}

impl Driver for NvmeDriver {
    fn start(&mut self, _cx: &mut Cx) -> io::Result<()> {
        Ok(())
    }

    fn completion(&mut self, cx: &mut Cx, kind: u8, slot: usize, c: Completion) -> bool {
        match (kind, self.pass.as_mut()) {
            (K_CMD, Some(p)) => {
                p.armed = false;
                p.poll(cx)
            }
            (K_IRQ, _) => {
                let Some(d) = self.devs.get_mut(slot) else {
                    return false;
                };
                d.irq_armed = false;
                // An interrupt that woke the reactor (not one that came
                // while it still had work, nor a poll cancelled or failed);
                // the loop polls every queue next.
                let woke = self.asleep && c.result > 0;
                if woke {
                    d.dev.count_irq_wake();
                }
                woke
            }
            _ => false,
        }
    }

    fn poll(&mut self, cx: &mut Cx) -> bool {
        self.asleep = false;
        let mut worked = false;
        for d in self.devs.iter_mut() {
            let mut done = std::mem::take(&mut self.done);
            // (A failed controller's queues are not read: a reset may be
            // rewriting them.)
            if d.sync(cx) {
                if let Some(head) = d.qp.poll(d.dev.mem(), &mut done) {
                    d.dev.ring_cq(d.qp.qid, head);
                    worked = true;
                }
            }
            for c in done.drain(..) {
                if !c.status.is_success() {
                    let opcode = d.reqs.get(c.token as usize).and_then(|r| r.as_ref());
                    d.faults
                        .device(opcode.map_or(0xff, |r| opcode_of(&r.op)), c.status);
                }
                d.part_done(cx, c.token, c.status);
            }
            self.done = done;
            if !d.waiting.is_empty() {
                d.run_waiting(cx);
            }
            if let Some(tail) = d.qp.sq_doorbell() {
                d.dev.ring_sq(d.qp.qid, tail);
            }
        }
        if let Some(p) = self.pass.as_mut() {
            worked |= p.poll(cx);
        }
        worked
    }

    fn submit_io(&mut self, cx: &mut Cx, slot: usize, tag: u32, req: DeviceRequest) {
        let DeviceRequest { dev, op } = req;
        let dev = match dev {
            DeviceRef::Pci(d) => d,
            DeviceRef::Passthru(d) => {
                if self.pass.is_none() {
                    match PassQ::new() {
                        Ok(p) => self.pass = Some(p),
                        Err(e) => {
                            log::error!("reactor {}: {}: {e}", cx.index, d.name);
                            return fail(cx, slot, tag, op, super::NOT_READY);
                        }
                    }
                }
                if let Some(p) = self.pass.as_mut() {
                    p.submit(cx, d, slot, tag, op);
                }
                return;
            }
        };
        let i = match self.dev_index(&dev) {
            Ok(i) => i,
            Err(e) => {
                log::error!("reactor {}: {e}", cx.index);
                return fail(cx, slot, tag, op, super::NOT_READY);
            }
        };
        let d = &mut self.devs[i];
        if d.waiting.is_empty() {
            if let Some(op) = d.start(cx, slot, tag, op) {
                d.waiting.push_back((slot, tag, op));
            }
        } else {
            d.waiting.push_back((slot, tag, op));
        }
        // The doorbell is written once per pass, in `flush_io`.
    }

    fn flush_io(&mut self, cx: &mut Cx) {
        for d in self.devs.iter_mut() {
            if let Some(tail) = d.qp.sq_doorbell() {
                d.dev.ring_sq(d.qp.qid, tail);
            }
        }
        if let Some(p) = self.pass.as_mut() {
            p.flush(cx);
        }
    }

    /// While a controller has commands, a reactor that sleeps (idle policy
    /// "sleep", or "adaptive" once idle) wakes on the queue's completion
    /// interrupt when it has one (see `before_sleep`), and otherwise every
    /// [`POLL_SLEEP`] to poll.
    fn sleep_limit(&self) -> Option<Duration> {
        self.devs
            .iter()
            .any(|d| {
                let busy = d.qp.in_flight() > 0;
                // Commands in flight on a queue that interrupts need no
                // timer (nor operations waiting for the room or buffer a
                // completion frees).
                (busy || !d.waiting.is_empty()) && !(busy && d.dev.irq(d.qp.qid).is_some())
            })
            .then_some(POLL_SLEEP)
    }

    fn before_sleep(&mut self, cx: &mut Cx) -> io::Result<bool> {
        // Queues whose completions interrupt: wake on the interrupt's
        // eventfd. Cleared before the poll is armed, so that only an
        // interrupt from now on wakes the reactor; completions posted
        // before are found by the poll below.
        let mut armed = false;
        for (i, d) in self.devs.iter_mut().enumerate() {
            if d.irq_armed || d.qp.in_flight() == 0 {
                continue;
            }
            if let Some(fd) = d.dev.irq(d.qp.qid) {
                fd.drain();
                cx.ring
                    .push(Op::PollIn { fd: fd.fd() }, token(DRIVER_NVME, K_IRQ, i))?;
                d.irq_armed = true;
                armed = true;
            }
        }
        // (Operations it failed, e.g. after a reset, are work too.)
        if armed && (self.poll(cx) || !cx.device_done.is_empty()) {
            return Ok(false);
        }
        let sleep = match self.pass.as_mut() {
            None => true,
            Some(p) => {
                if p.busy() && !p.armed {
                    cx.ring
                        .push(Op::PollIn { fd: p.fd() }, token(DRIVER_NVME, K_CMD, 0))?;
                    p.armed = true;
                }
                // Completions that came before the poll was armed.
                !p.poll(cx)
            }
        };
        if sleep {
            self.asleep = true;
            for d in self.devs.iter().filter(|d| d.irq_armed) {
                d.dev.count_irq_wait();
            }
        }
        Ok(sleep)
    }

    fn adopt(&mut self, cx: &mut Cx, _conn: Handoff) {
        cx.sessions.abandon();
    }

    fn respond(&mut self, _cx: &mut Cx, _slot: usize, _r: &mut Vec<Response>) {}

    fn flush(&mut self, _cx: &mut Cx, _slot: usize) {}

    fn close(&mut self, _cx: &mut Cx, _slot: usize, _why: &str) {}

    fn tick(&mut self, cx: &mut Cx) {
        for d in self.devs.iter_mut() {
            if !d.faults.is_empty() {
                d.faults
                    .report(cx.index, &format!("NVMe controller {}", d.dev.name));
            }
            if d.dev.check_failed() {
                d.fail_all(cx, super::NOT_READY);
                d.dev.recover();
                continue;
            }
            // Commands past their deadline: abort them and fail their
            // requests; the queue goes on.
            let late: Vec<(u16, u64)> = d.qp.overdue(cx.now).collect();
            for (cid, token) in late {
                log::warn!(
                    "reactor {}: NVMe controller {}: command {cid} on queue {} not done in \
                     {COMMAND_TIMEOUT:?}; aborting it",
                    cx.index,
                    d.dev.name,
                    d.qp.qid
                );
                d.dev.abort(d.qp.qid, cid);
                d.qp.forget(cid);
                if let Some(Some(r)) = d.reqs.get_mut(token as usize) {
                    r.timed_out = true;
                }
                d.part_done(cx, token, Status::ABORT_REQUESTED);
            }
        }
    }

    fn stop(&mut self, cx: &mut Cx) {
        for d in self.devs.iter_mut() {
            d.fail_all(cx, Status::ABORTED_SQ_DELETION);
        }
        if let Some(p) = self.pass.as_mut() {
            p.stop(cx);
        }
    }
}
