//! NVM command set I/O commands: Read, Write, Flush, Write Zeroes, Dataset
//! Management, Compare, fused Compare-and-Write, Verify, Copy.
//!
//! Each command runs as a short program of steps with at most one backend
//! operation outstanding. Memory backends complete a step at once; ring
//! backends hand it to the reactor as an [`IoRequest`] and the program
//! continues in [`Queue::io_done`].

use super::nsstats::{Dir, QueueNsStats};
use super::queue::{Queue, Response, Role};
use crate::backend::{BackendError, IoDone, IoOp, Submitted};
use crate::nvme::{io_op, le16, le32, le64, Command, Fuse, Status};
use crate::subsystem::Namespace;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Bytes read per step when verifying.
const VERIFY_CHUNK: usize = 128 * 1024;

/// A backend operation for the reactor to run, through its ring or its
/// device driver; its completion goes back to [`Queue::io_done`] or
/// [`Queue::device_done`] with the same tag.
#[derive(Debug)]
pub struct IoRequest {
    pub tag: u32,
    pub work: IoWork,
}

#[derive(Debug)]
pub enum IoWork {
    Ring(nvmf_sys::Op),
    Device(crate::backend::DeviceRequest),
}

fn backend_status(e: &BackendError, write: bool) -> Status {
    match e {
        BackendError::OutOfRange => Status::LBA_OUT_OF_RANGE.dnr(),
        BackendError::Read(_) => Status::UNRECOVERED_READ_ERROR,
        BackendError::Write(_) if write => Status::WRITE_FAULT,
        BackendError::Write(_) => Status::INTERNAL_ERROR,
        BackendError::Device(st) => *st,
    }
}

pub(super) enum Step {
    /// Read into the accumulator, appended or (verify) overwriting it.
    Read {
        off: u64,
        len: usize,
        append: bool,
    },
    /// Write the host's data.
    WriteHost {
        off: u64,
        len: usize,
    },
    /// Write the accumulator (copy).
    WriteAcc {
        off: u64,
    },
    Flush(Arc<Namespace>),
    Zero {
        off: u64,
        len: u64,
    },
    Dealloc {
        off: u64,
        len: u64,
    },
    /// Compare the accumulator with the host's data.
    Compare,
    /// Have the backend compare the host's data with its own.
    CompareHost {
        off: u64,
        len: usize,
    },
    /// Take the namespace's gate for a Compare and Write, then wait until
    /// the writes in flight have drained.
    Exclusive,
    Drain,
}

/// What a finished command counts in the SMART log.
#[derive(Debug, Clone, Copy)]
enum Count {
    None,
    Read(u64),
    Write(u64),
}

/// Which buffer the outstanding operation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    Nothing,
    Acc,
    Host,
}

pub(super) struct InFlight {
    cmd: Command,
    /// The Write half of a fused Compare-and-Write.
    fused_write: Option<Command>,
    /// The write data of a Compare-and-Write, until the compare passes.
    parked: Vec<u8>,
    compare_failed: bool,
    ns: Arc<Namespace>,
    steps: VecDeque<Step>,
    status: Status,
    acc: Vec<u8>,
    host: Vec<u8>,
    /// Send the accumulator to the host (Read).
    reply: bool,
    /// The read's data as backend memory, sent instead of the accumulator.
    shared: Option<nvmf_sys::RegionSlice>,
    count: Count,
    holds: Holds,
    /// Backend and expected length of the ring operation outstanding.
    ring_ns: Option<Arc<Namespace>>,
    ring_expected: usize,
    ring_write: bool,
    /// The outstanding operation is a write counted at the gate.
    counted: bool,
    /// Holds the namespace's gate (a Compare and Write).
    exclusive: bool,
    /// Since when a Compare and Write waits for writes to drain.
    drain_since: Option<std::time::Instant>,
    /// When the command came in (the reactor's clock).
    start: std::time::Instant,
    /// A staged write's buffer and its count at the gate, kept until the
    /// device has written it.
    placed: Option<super::Placed>,
}

/// How long a Compare and Write waits for writes in flight to drain (a
/// host may never send the data of a write it was asked for) before it
/// gives up with Command Interrupted, which the host retries.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

impl InFlight {
    /// Leaves the gate: the write counted, the namespace held.
    pub(super) fn release_gate(&mut self, writes: &mut super::gate::Writers) {
        if std::mem::take(&mut self.counted) {
            writes.leave(&self.ns.gate);
        }
        if std::mem::take(&mut self.exclusive) {
            self.ns.gate.unlock();
        }
    }
}

impl Queue {
    fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        match &self.role {
            Role::Io(_) => self.exports.namespace(nsid).cloned(),
            _ => None,
        }
    }

    /// Checks an LBA range and returns its byte offset and length.
    fn range(ns: &Namespace, slba: u64, nlb: u64) -> Result<(u64, u64), Status> {
        match slba.checked_add(nlb) {
            Some(end) if end <= ns.num_blocks => Ok((slba << ns.lba_shift, nlb << ns.lba_shift)),
            _ => Err(Status::LBA_OUT_OF_RANGE.dnr()),
        }
    }

    /// Range and transfer-size checks shared by Read, Write and Compare.
    fn rw_range(&self, ns: &Namespace, cmd: &Command) -> Result<(u64, usize), Status> {
        let (off, len) = Self::range(ns, cmd.slba(), cmd.nlb() as u64)?;
        if len > self.max_transfer() as u64 {
            return Err(Status::INVALID_FIELD.dnr());
        }
        Ok((off, len as usize))
    }

    /// A buffer from the reactor's pool, length 0.
    pub fn alloc_buf(&mut self) -> Vec<u8> {
        self.bufs.alloc()
    }

    /// A buffer of `len` bytes from the reactor's pool, for data that will
    /// overwrite all of it (see [`Buffers::alloc_len`](crate::buf::Buffers::alloc_len)).
    pub fn alloc_len(&mut self, len: usize) -> Vec<u8> {
        self.bufs.alloc_len(len)
    }

    /// Returns a buffer to the reactor's pool.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.bufs.recycle(buf);
    }

    /// Backend operations waiting for the reactor's ring.
    pub fn take_io(&mut self, out: &mut Vec<IoRequest>) {
        out.append(&mut self.io_out);
    }

    pub fn has_io(&self) -> bool {
        !self.io_out.is_empty()
    }

    /// For a plain Write of `len` bytes that will succeed, the backend
    /// memory its data belongs in, so the transport can receive it straight
    /// there and then call [`execute_placed`](Self::execute_placed). `None`
    /// for every other command (including a Write that fails its checks:
    /// it goes through [`execute`](Self::execute) and gets its status).
    pub fn placed_write(&mut self, cmd: &Command, len: u32) -> Option<super::Placed> {
        self.refresh_exports();
        let (region, i, iova) = self.placed_region(cmd, len, true)?;
        let gate = &self.exports.namespaces[i].gate;
        // Counted as a write in flight until the transport drops it (or,
        // staged, until the device has written it).
        let w = self.writes.of(gate);
        if !w.enter(gate) {
            return None;
        }
        let mut p = super::Placed::new(region, iova, w.clone());
        if iova.is_some() {
            // Staged: the device the buffer belongs to writes it.
            p.ns = Some(self.exports.namespaces[i].clone());
        }
        Some(p)
    }

    /// The backend memory of a plain Write, or (`stage`) a staged DMA
    /// buffer of its device and the buffer's IOVA; and its namespace's
    /// position in `exports`.
    fn placed_region(
        &self,
        cmd: &Command,
        len: u32,
        stage: bool,
    ) -> Option<(nvmf_sys::RegionSlice, usize, Option<u64>)> {
        let Role::Io(c) = &self.role else {
            return None;
        };
        if cmd.opcode != io_op::WRITE
            || cmd.fuse() != Fuse::None
            || self.fused.is_some()
            || !c.is_ready()
            || !c.io_queue_live(self.epoch)
        {
            return None;
        }
        let i = self
            .exports
            .namespaces
            .binary_search_by_key(&cmd.nsid, |n| n.nsid)
            .ok()?;
        let ns = &self.exports.namespaces[i];
        let (off, n) = self.rw_range(ns, cmd).ok()?;
        if n != len as usize || ns.gate.is_exclusive() {
            return None;
        }
        if let Some(s) = ns.backend.write_in_place(off, n) {
            return Some((s, i, None));
        }
        if !stage {
            return None;
        }
        let (s, iova) = ns.backend.stage(self.reactor, n)?;
        Some((s, i, Some(iova)))
    }

    /// For a plain Write whose data is at hand (in the capsule): copies it
    /// straight into backend memory if the backend has some, or into a
    /// staged DMA buffer of its device (one copy, not two through a buffer
    /// and a bounce buffer). `Some` if it did, with the staged buffer if
    /// that is where it went; the transport then calls
    /// [`execute_placed`](Self::execute_placed) with it.
    pub fn place_write_now(&mut self, cmd: &Command, data: &[u8]) -> Option<Option<super::Placed>> {
        self.refresh_exports();
        let (region, i, iova) = self.placed_region(cmd, data.len() as u32, true)?;
        let gate = &self.exports.namespaces[i].gate;
        let w = self.writes.of(gate);
        if !w.enter(gate) {
            return None;
        }
        if iova.is_some() {
            // Counted until the device has written it.
            let mut p = super::Placed::new(region, iova, w.clone());
            p.ns = Some(self.exports.namespaces[i].clone());
            return p.region.copy_from(0, data).then_some(Some(p));
        }
        let ok = region.copy_from(0, data);
        w.leave();
        ok.then_some(None)
    }

    /// Completes a Write whose `len` bytes of data the transport has put in
    /// the memory [`placed_write`](Self::placed_write) gave for it
    /// (`placed`, `None` for [`place_write_now`](Self::place_write_now)):
    /// a staged DMA buffer is written to the device from where it is.
    pub fn execute_placed(
        &mut self,
        cmd: &Command,
        len: usize,
        placed: Option<super::Placed>,
        now: Instant,
        out: &mut Vec<Response>,
    ) {
        // A staged write's latency starts here, when its data is in.
        self.now = now;
        self.accept(cmd, out);
        let ready =
            matches!(&self.role, Role::Io(c) if c.is_ready() && c.io_queue_live(self.epoch));
        if !ready {
            // Disabled meanwhile (a reset): the data is in, the command fails.
            return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR, 0, out);
        }
        if let Some(p) = placed.filter(|p| p.iova.is_some()) {
            return self.write_staged(cmd, len, p, out);
        }
        self.stats.add_write(len as u64);
        // (Fields apart: no reference count taken on the namespace.)
        let cntlid = self.cntlid();
        if let Some(ns) = self.exports.namespace(cmd.nsid) {
            self.ns_stats
                .get(ns.nsid, &ns.stats, cntlid, self.qid, self.reactor)
                .add(Dir::Write, true, len as u64, 0);
        }
        self.complete(cmd, Status::SUCCESS, 0, out);
    }

    /// A Write whose data is in a staged DMA buffer: the device writes it
    /// from there (no copy), and the write counts at its namespace's gate
    /// until then.
    fn write_staged(
        &mut self,
        cmd: &Command,
        len: usize,
        p: super::Placed,
        out: &mut Vec<Response>,
    ) {
        // The namespace the buffer was staged for (its device's memory),
        // even if a reload has replaced the NSID's namespace since.
        let Some(ns) = p.ns.clone() else {
            return self.complete(cmd, Status::INTERNAL_ERROR, 0, out);
        };
        let off = match self.rw_range(&ns, cmd) {
            Ok((off, n)) if n == len => off,
            Ok(_) => return self.complete(cmd, Status::DATA_SGL_LENGTH_INVALID.dnr(), 0, out),
            Err(st) => return self.complete(cmd, st, 0, out),
        };
        let (Some(iova), src) = (p.iova, p.region.clone()) else {
            return self.complete(cmd, Status::INTERNAL_ERROR, 0, out);
        };
        let op = IoOp::WriteDma {
            offset: off,
            len,
            iova,
            src,
        };
        let tag = self.start_inflight(
            cmd,
            ns.clone(),
            VecDeque::new(),
            Vec::new(),
            false,
            Count::Write(len as u64),
        );
        if let Some(f) = self.inflight.get_mut(tag as usize).and_then(|f| f.as_mut()) {
            f.placed = Some(p);
        }
        if !self.submit_op(tag, ns, op) {
            self.advance(tag, out);
        }
    }

    /// This queue's statistics for `ns` (registered at its first command
    /// on the namespace; then a scan of a few entries).
    fn ns_stats(&mut self, ns: &Namespace) -> &QueueNsStats {
        let cntlid = self.cntlid();
        self.ns_stats
            .get(ns.nsid, &ns.stats, cntlid, self.qid, self.reactor)
    }

    /// The controller's ID (0 before Connect).
    fn cntlid(&self) -> u16 {
        match &self.role {
            Role::Io(c) => c.cntlid,
            Role::Admin(a) => a.ctrl.cntlid,
            Role::Unconnected => 0,
        }
    }

    pub(super) fn io_command(&mut self, cmd: &Command, data: Vec<u8>, out: &mut Vec<Response>) {
        if let Role::Io(c) = &self.role {
            // A queue a controller reset deleted (CC.EN 1 -> 0) is closed at
            // the reactor's next tick; until then it executes nothing, and
            // says so with DNR: retrying on a deleted queue cannot succeed.
            if !c.io_queue_live(self.epoch) {
                self.recycle(data);
                return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out);
            }
            // A controller torn down, or disabled by the host (CC.EN = 0),
            // executes no I/O.
            if !c.is_ready() {
                self.recycle(data);
                return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR, 0, out);
            }
        }
        if let Err(st) = self.plan(cmd, data, out) {
            // A second half refused before it met its first (an invalid
            // namespace, say) fails the first too, rather than leaving it
            // waiting. Found by fuzzing.
            if cmd.fuse() == Fuse::Second {
                if let Some((first, cdata)) = self.fused.take() {
                    self.recycle(cdata);
                    self.complete(&first, Status::ABORTED_FAILED_FUSED, 0, out);
                }
            }
            self.complete(cmd, st, 0, out);
        }
    }

    /// Validates a command and starts its program.
    fn plan(
        &mut self,
        cmd: &Command,
        data: Vec<u8>,
        out: &mut Vec<Response>,
    ) -> Result<(), Status> {
        // Only Compare and Write fuse (and FUSE 11b is reserved); checked
        // before anything else so that no path runs a fused command alone.
        match (cmd.fuse(), cmd.opcode) {
            (Fuse::None, _) | (Fuse::First, io_op::COMPARE) | (Fuse::Second, io_op::WRITE) => {}
            _ => return Err(Status::INVALID_FIELD.dnr()),
        }
        if cmd.opcode == io_op::FLUSH && cmd.nsid == 0xFFFF_FFFF {
            if !matches!(self.role, Role::Io(_)) {
                return Err(Status::INVALID_NAMESPACE.dnr());
            }
            let all: Vec<Arc<Namespace>> = self.exports.namespaces.clone();
            let Some(first) = all.first().cloned() else {
                return Err(Status::SUCCESS);
            };
            let steps = all.into_iter().map(Step::Flush).collect();
            self.start(cmd, first, steps, data, false, Count::None, out);
            return Ok(());
        }
        let Some(ns) = self.namespace(cmd.nsid) else {
            return Err(if known_opcode(cmd.opcode) {
                Status::INVALID_NAMESPACE.dnr()
            } else {
                Status::INVALID_OPCODE.dnr()
            });
        };
        match (cmd.fuse(), cmd.opcode) {
            (Fuse::First, io_op::COMPARE) => {
                self.fused = Some((*cmd, data));
                return Ok(());
            }
            (Fuse::Second, io_op::WRITE) => {
                let Some((first, cdata)) = self.fused.take() else {
                    return Err(Status::ABORTED_MISSING_FUSED);
                };
                return self.plan_compare_and_write(&ns, first, cdata, cmd, data, out);
            }
            (Fuse::None, _) => {}
            _ => return Err(Status::INVALID_FIELD.dnr()),
        }
        // Step lists are recycled: no allocation per command.
        let mut steps = self.step_pool.pop().unwrap_or_default();
        let (reply, count) = match cmd.opcode {
            io_op::READ => {
                let (off, len) = self.rw_range(&ns, cmd)?;
                // SGLS bit 18 is clear: the host's buffer must be exactly
                // the transfer, neither shorter nor longer.
                if cmd.sgl().length as usize != len {
                    return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
                }
                steps.push_back(Step::Read {
                    off,
                    len,
                    append: true,
                });
                (true, Count::Read(len as u64))
            }
            io_op::WRITE => {
                let (off, len) = self.rw_range(&ns, cmd)?;
                if data.len() != len {
                    return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
                }
                steps.push_back(Step::WriteHost { off, len });
                (false, Count::Write(len as u64))
            }
            io_op::FLUSH => {
                steps.push_back(Step::Flush(ns.clone()));
                (false, Count::None)
            }
            io_op::WRITE_ZEROES => {
                let (off, len) = Self::range(&ns, cmd.slba(), cmd.nlb() as u64)?;
                // DEAC (bit 25): the host allows deallocation; both read back as zeros.
                steps.push_back(if cmd.cdw12 & (1 << 25) != 0 {
                    Step::Dealloc { off, len }
                } else {
                    Step::Zero { off, len }
                });
                (false, Count::Write(0))
            }
            io_op::DATASET_MANAGEMENT => {
                let nr = (cmd.cdw10 & 0xFF) as usize + 1;
                if data.len() < nr * 16 {
                    return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
                }
                // Validate every range before touching any.
                let mut ranges = Vec::with_capacity(nr);
                for r in data[..nr * 16].chunks_exact(16) {
                    ranges.push(Self::range(&ns, le64(r, 8), le32(r, 4) as u64)?);
                }
                if cmd.cdw11 & (1 << 2) != 0 {
                    steps.extend(
                        ranges
                            .into_iter()
                            .filter(|r| r.1 > 0)
                            .map(|(off, len)| Step::Dealloc { off, len }),
                    );
                }
                (false, Count::None)
            }
            io_op::COMPARE => {
                let (off, len) = self.rw_range(&ns, cmd)?;
                if data.len() != len {
                    return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
                }
                if ns.backend.compares() {
                    // The device compares (its status comes back as is).
                    steps.push_back(Step::CompareHost { off, len });
                } else {
                    steps.push_back(Step::Read {
                        off,
                        len,
                        append: true,
                    });
                    steps.push_back(Step::Compare);
                }
                (false, Count::Read(len as u64))
            }
            io_op::VERIFY => {
                let (mut off, len) = Self::range(&ns, cmd.slba(), cmd.nlb() as u64)?;
                let end = off + len;
                while off < end {
                    let n = ((end - off) as usize).min(VERIFY_CHUNK);
                    steps.push_back(Step::Read {
                        off,
                        len: n,
                        append: false,
                    });
                    off += n as u64;
                }
                (false, Count::None)
            }
            io_op::COPY => {
                let total = self.plan_copy(&ns, cmd, &data, &mut steps)?;
                (false, Count::Write(total))
            }
            _ => return Err(Status::INVALID_OPCODE.dnr()),
        };
        self.start(cmd, ns, steps, data, reply, count, out);
        Ok(())
    }

    fn plan_copy(
        &self,
        ns: &Namespace,
        cmd: &Command,
        data: &[u8],
        steps: &mut VecDeque<Step>,
    ) -> Result<u64, Status> {
        let nr = (cmd.cdw12 & 0xFF) as usize + 1;
        if (cmd.cdw12 >> 8) & 0xF != 0 {
            return Err(Status::INVALID_FIELD.dnr());
        }
        if data.len() < nr * 32 {
            return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        let max_blocks = (self.max_transfer() >> ns.lba_shift).clamp(1, 0xFFFF) as u64;
        if nr > 128 {
            return Err(Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr());
        }
        let mut blocks = 0u64;
        for d in data[..nr * 32].chunks_exact(32) {
            let nlb = le16(d, 16) as u64 + 1;
            blocks += nlb;
            if nlb > max_blocks || blocks > max_blocks {
                return Err(Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr());
            }
            let (off, len) = Self::range(ns, le64(d, 8), nlb)?;
            steps.push_back(Step::Read {
                off,
                len: len as usize,
                append: true,
            });
        }
        let (dst, len) = Self::range(ns, cmd.slba(), blocks)?;
        steps.push_back(Step::WriteAcc { off: dst });
        Ok(len)
    }

    fn plan_compare_and_write(
        &mut self,
        ns: &Arc<Namespace>,
        first: Command,
        cdata: Vec<u8>,
        second: &Command,
        wdata: Vec<u8>,
        out: &mut Vec<Response>,
    ) -> Result<(), Status> {
        let same = first.nsid == second.nsid
            && first.slba() == second.slba()
            && first.nlb() == second.nlb();
        let checked = if same {
            self.rw_range(ns, &first)
        } else {
            Err(Status::INVALID_FIELD.dnr())
        };
        let (off, len) = match checked {
            Ok(r) if cdata.len() == r.1 && wdata.len() == r.1 => r,
            other => {
                let st = other.err().unwrap_or(Status::DATA_SGL_LENGTH_INVALID.dnr());
                self.complete(&first, st, 0, out);
                return Err(Status::ABORTED_FAILED_FUSED);
            }
        };
        let mut steps = self.step_pool.pop().unwrap_or_default();
        steps.extend([
            Step::Exclusive,
            Step::Drain,
            Step::Read {
                off,
                len,
                append: true,
            },
            Step::Compare,
            Step::WriteHost { off, len },
        ]);
        // The compare data is the host data for the compare; the write data
        // waits parked until the compare passes.
        let tag = self.start_inflight(
            &first,
            ns.clone(),
            steps,
            cdata,
            false,
            Count::Write(len as u64),
        );
        if let Some(f) = self.inflight[tag as usize].as_mut() {
            f.fused_write = Some(*second);
            f.parked = wdata;
        }
        self.advance(tag, out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        cmd: &Command,
        ns: Arc<Namespace>,
        steps: VecDeque<Step>,
        data: Vec<u8>,
        reply: bool,
        count: Count,
        out: &mut Vec<Response>,
    ) {
        let tag = self.start_inflight(cmd, ns, steps, data, reply, count);
        self.advance(tag, out);
    }

    fn start_inflight(
        &mut self,
        cmd: &Command,
        ns: Arc<Namespace>,
        steps: VecDeque<Step>,
        host: Vec<u8>,
        reply: bool,
        count: Count,
    ) -> u32 {
        let acc = self.alloc_buf();
        let f = InFlight {
            cmd: *cmd,
            fused_write: None,
            parked: Vec::new(),
            compare_failed: false,
            ns,
            steps,
            status: Status::SUCCESS,
            acc,
            host,
            reply,
            shared: None,
            count,
            holds: Holds::Nothing,
            ring_ns: None,
            ring_expected: 0,
            ring_write: false,
            counted: false,
            exclusive: false,
            drain_since: None,
            start: self.now,
            placed: None,
        };
        match self.free_tags.pop() {
            Some(t) => {
                self.inflight[t as usize] = Some(f);
                t
            }
            None => {
                self.inflight.push(Some(f));
                (self.inflight.len() - 1) as u32
            }
        }
    }

    /// Runs a command's steps until one waits on the ring or all are done.
    fn advance(&mut self, tag: u32, out: &mut Vec<Response>) {
        loop {
            let Some(f) = self.inflight.get_mut(tag as usize).and_then(|f| f.as_mut()) else {
                return;
            };
            let Some(step) = f.steps.pop_front() else {
                return self.finish(tag, out);
            };
            // A write waits while a Compare and Write holds the namespace
            // (unless it is that Compare and Write's own).
            let gated = matches!(
                step,
                Step::WriteHost { .. }
                    | Step::WriteAcc { .. }
                    | Step::Zero { .. }
                    | Step::Dealloc { .. }
            ) && !f.exclusive;
            if gated {
                if !self.writes.enter(&f.ns.gate) {
                    f.steps.push_front(step);
                    self.waiting.push(tag);
                    return;
                }
                f.counted = true;
            }
            let (ns, op, holds) = match step {
                Step::Exclusive => {
                    if !f.ns.gate.try_lock() {
                        f.steps.push_front(Step::Exclusive);
                        self.waiting.push(tag);
                        return;
                    }
                    f.exclusive = true;
                    continue;
                }
                Step::Drain => {
                    if !f.ns.gate.drained() {
                        let since = *f.drain_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() < DRAIN_LIMIT {
                            f.steps.push_front(Step::Drain);
                            self.waiting.push(tag);
                            return;
                        }
                        log::warn!(
                            "{} nsid {}: a Compare and Write waited {DRAIN_LIMIT:?} for writes \
                             in flight (a host not sending the data of a write?); interrupted",
                            super::queue::who(&self.role, self.qid, self.peer),
                            f.ns.nsid
                        );
                        f.status = Status::COMMAND_INTERRUPTED;
                        f.compare_failed = true;
                        f.steps.clear();
                    }
                    continue;
                }
                Step::Compare => {
                    let n = f.acc.len();
                    if f.host.len() < n || f.acc[..] != f.host[..n] {
                        f.status = Status::COMPARE_FAILURE.dnr();
                        f.compare_failed = true;
                        f.steps.clear();
                    } else if f.fused_write.is_some() {
                        // Compare-and-write: the parked write data becomes the
                        // host data; the compare data goes back to be recycled.
                        std::mem::swap(&mut f.host, &mut f.parked);
                    }
                    continue;
                }
                Step::Read { off, len, append } => {
                    // A read whose data goes straight to the host: send the
                    // backend's own memory if it has some, no copy; or have
                    // the device put it in a staged DMA buffer and send
                    // that, no copy either.
                    if f.reply && append && f.acc.is_empty() && f.steps.is_empty() {
                        if let Some(s) = f.ns.backend.read_shared(off, len) {
                            f.shared = Some(s);
                            continue;
                        }
                        if let Some((s, iova)) = f.ns.backend.stage(self.reactor, len) {
                            f.shared = Some(s.clone());
                            f.holds = Holds::Nothing;
                            let op = IoOp::ReadDma {
                                offset: off,
                                len,
                                iova,
                                dst: s,
                            };
                            let ns = f.ns.clone();
                            if self.submit_op(tag, ns, op) {
                                return;
                            }
                            continue;
                        }
                    }
                    let mut buf = std::mem::take(&mut f.acc);
                    let at = if append { buf.len() } else { 0 };
                    if at == 0 && buf.len() != len {
                        // The backend overwrites all of it: a pooled buffer
                        // of the right size, not a zeroed one.
                        let old = std::mem::replace(&mut buf, self.bufs.alloc_len(len));
                        self.bufs.recycle(old);
                    }
                    buf.resize(at + len, 0);
                    (
                        f.ns.clone(),
                        IoOp::Read {
                            offset: off,
                            buf,
                            at,
                            len,
                        },
                        Holds::Acc,
                    )
                }
                Step::WriteHost { off, len } => {
                    let buf = std::mem::take(&mut f.host);
                    (
                        f.ns.clone(),
                        IoOp::Write {
                            offset: off,
                            buf,
                            at: 0,
                            len,
                        },
                        Holds::Host,
                    )
                }
                Step::CompareHost { off, len } => {
                    let buf = std::mem::take(&mut f.host);
                    (
                        f.ns.clone(),
                        IoOp::Compare {
                            offset: off,
                            buf,
                            at: 0,
                            len,
                        },
                        Holds::Host,
                    )
                }
                Step::WriteAcc { off } => {
                    let buf = std::mem::take(&mut f.acc);
                    let len = buf.len();
                    (
                        f.ns.clone(),
                        IoOp::Write {
                            offset: off,
                            buf,
                            at: 0,
                            len,
                        },
                        Holds::Acc,
                    )
                }
                Step::Flush(ns) => (ns, IoOp::Flush, Holds::Nothing),
                Step::Zero { off, len } => (
                    f.ns.clone(),
                    IoOp::WriteZeroes { offset: off, len },
                    Holds::Nothing,
                ),
                Step::Dealloc { off, len } => (
                    f.ns.clone(),
                    IoOp::Deallocate { offset: off, len },
                    Holds::Nothing,
                ),
            };
            f.holds = holds;
            if self.submit_op(tag, ns, op) {
                return;
            }
        }
    }

    /// Hands command `tag`'s backend operation to its backend: true when it
    /// waits for the ring or a device, false when it completed at once (and
    /// was applied).
    fn submit_op(&mut self, tag: u32, ns: Arc<Namespace>, op: IoOp) -> bool {
        let expected = op.transfer_len();
        let write = op.is_write();
        let work = match ns.backend.submit(op) {
            Submitted::Done(d) => {
                self.apply(tag, d, write);
                return false;
            }
            Submitted::Ring(op) => IoWork::Ring(op),
            Submitted::Device(d) => IoWork::Device(d),
        };
        if let Some(f) = self.inflight.get_mut(tag as usize).and_then(|f| f.as_mut()) {
            f.ring_ns = Some(ns);
            f.ring_expected = expected;
            f.ring_write = write;
        }
        self.io_out.push(IoRequest { tag, work });
        true
    }

    /// Takes a finished backend operation's buffer and result.
    fn apply(&mut self, tag: u32, d: IoDone, write: bool) {
        let Some(f) = self.inflight.get_mut(tag as usize).and_then(|f| f.as_mut()) else {
            return;
        };
        match f.holds {
            Holds::Acc => f.acc = d.buf,
            Holds::Host => f.host = d.buf,
            Holds::Nothing => {}
        }
        f.holds = Holds::Nothing;
        if std::mem::take(&mut f.counted) {
            self.writes.leave(&f.ns.gate);
        }
        if let Err(e) = &d.result {
            f.status = backend_status(e, write);
            f.steps.clear();
        }
    }

    /// A device completed the backend operation of command `tag` with its
    /// NVMe status.
    pub fn device_done(
        &mut self,
        tag: u32,
        result: Result<(), Status>,
        buf: Vec<u8>,
        out: &mut Vec<Response>,
    ) {
        let Some(f) = self.inflight.get_mut(tag as usize).and_then(|f| f.as_mut()) else {
            return;
        };
        if f.ring_ns.take().is_none() {
            return;
        }
        let write = f.ring_write;
        let d = IoDone {
            result: result.map_err(BackendError::Device),
            buf,
        };
        self.apply(tag, d, write);
        self.advance(tag, out);
    }

    /// The ring completed the backend operation of command `tag`.
    pub fn io_done(&mut self, tag: u32, result: i32, buf: Vec<u8>, out: &mut Vec<Response>) {
        let Some(f) = self.inflight.get_mut(tag as usize).and_then(|f| f.as_mut()) else {
            return;
        };
        let Some(ns) = f.ring_ns.take() else { return };
        let d = ns
            .backend
            .ring_done(result, f.ring_expected, f.ring_write, buf);
        let write = f.ring_write;
        self.apply(tag, d, write);
        self.advance(tag, out);
    }

    fn finish(&mut self, tag: u32, out: &mut Vec<Response>) {
        let Some(mut f) = self.inflight.get_mut(tag as usize).and_then(|f| f.take()) else {
            return;
        };
        f.release_gate(&mut self.writes);
        let mut steps = std::mem::take(&mut f.steps);
        steps.clear();
        if self.step_pool.len() < 64 {
            self.step_pool.push(steps);
        }
        self.free_tags.push(tag);
        let ok = f.status.is_success();
        if ok {
            match f.count {
                Count::Read(n) => self.stats.add_read(n),
                Count::Write(n) => self.stats.add_write(n),
                Count::None => {}
            }
        }
        let (dir, bytes) = match f.count {
            Count::Read(n) => (Dir::Read, n),
            Count::Write(n) => (Dir::Write, n),
            Count::None => (Dir::Other, 0),
        };
        let latency = self.now.saturating_duration_since(f.start).as_nanos() as u64;
        self.ns_stats(&f.ns).add(dir, ok, bytes, latency);
        if let Some(second) = f.fused_write {
            let (s1, s2) = if f.compare_failed {
                (f.status, Status::ABORTED_FAILED_FUSED)
            } else {
                (Status::SUCCESS, f.status)
            };
            self.complete(&f.cmd, s1, 0, out);
            self.complete(&second, s2, 0, out);
        } else if f.reply && ok {
            if let Some(shared) = f.shared.take() {
                out.push(Response {
                    cqe: self.cqe(f.cmd.cid, Status::SUCCESS, 0, 0),
                    data: Vec::new(),
                    shared: Some(shared),
                });
            } else {
                self.complete_with(&f.cmd, Status::SUCCESS, 0, f.acc, out);
                self.recycle(f.host);
                return;
            }
        } else {
            self.complete(&f.cmd, f.status, 0, out);
        }
        self.recycle(f.acc);
        self.recycle(f.host);
        self.recycle(f.parked);
    }

    /// Whether commands wait at a namespace's gate (the reactor then calls
    /// [`retry_waiting`](Self::retry_waiting) on every turn of its loop).
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Lets the commands waiting at a gate try again.
    pub fn retry_waiting(&mut self, out: &mut Vec<Response>) {
        let mut w = std::mem::take(&mut self.waiting);
        for tag in w.drain(..) {
            self.advance(tag, out);
        }
        if self.waiting.is_empty() {
            self.waiting = w;
        }
    }

    /// Commands still waiting on the backend.
    pub fn io_in_flight(&self) -> usize {
        self.inflight.len() - self.free_tags.len()
    }
}

fn known_opcode(op: u8) -> bool {
    matches!(
        op,
        io_op::FLUSH
            | io_op::WRITE
            | io_op::READ
            | io_op::COMPARE
            | io_op::WRITE_ZEROES
            | io_op::DATASET_MANAGEMENT
            | io_op::VERIFY
            | io_op::COPY
    )
}
