//! One NVMe submission/completion queue pair on a PCIe controller, as a
//! sans-IO state machine: it writes commands into the submission queue's
//! memory and reads completions from the completion queue's, through a
//! [`DmaMem`], and says which doorbell values to write. Command ids, the
//! phase tag, wrap-around, a full queue and deadlines live here; the
//! registers and the memory are someone else's.

use super::DmaMem;
use crate::nvme::{Command, Completion, Status};
use std::time::Instant;

/// Bytes of a submission queue entry.
pub const SQE: u64 = 64;
/// Bytes of a completion queue entry.
pub const CQE: u64 = 16;

/// A finished command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// What the submitter passed in.
    pub token: u64,
    pub cid: u16,
    pub status: Status,
    pub dw0: u32,
}

/// Why a command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// No free entry: wait for completions.
    Full,
    /// The queue memory could not be written.
    Memory,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    token: u64,
    deadline: Instant,
}

#[derive(Clone)]
pub struct QueuePair {
    pub qid: u16,
    entries: u16,
    sq_iova: u64,
    cq_iova: u64,
    sq_tail: u16,
    /// The submission queue head the controller last reported.
    sq_head: u16,
    cq_head: u16,
    /// The phase tag of entries not consumed yet.
    phase: bool,
    /// By command id.
    slots: Vec<Option<Slot>>,
    /// How many of `slots` are taken.
    live: usize,
    /// Command ids given up on whose completion has not come yet.
    forgotten: Vec<bool>,
    free: Vec<u16>,
    /// The tail moved since the last doorbell.
    tail_moved: bool,
    /// Completions that named no command in flight.
    pub stray: u64,
    /// The interrupt vector its completion queue signals (`None`:
    /// interrupts off, the queue is only polled).
    pub vector: Option<u16>,
}

impl QueuePair {
    /// A queue pair of `entries` slots (2 to 4096) whose queues are at the
    /// given addresses (the completion queue zeroed).
    pub fn new(qid: u16, entries: u32, sq_iova: u64, cq_iova: u64) -> QueuePair {
        let entries = entries.clamp(2, 4096) as u16;
        QueuePair {
            qid,
            entries,
            sq_iova,
            cq_iova,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
            slots: vec![None; entries as usize],
            live: 0,
            forgotten: vec![false; entries as usize],
            // Command ids 0..entries-1; one queue slot always stays empty.
            free: (0..entries - 1).rev().collect(),
            tail_moved: false,
            stray: 0,
            vector: None,
        }
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Commands queued and not completed.
    pub fn in_flight(&self) -> usize {
        self.live
    }

    fn next(&self, i: u16) -> u16 {
        if i + 1 == self.entries {
            0
        } else {
            i + 1
        }
    }

    /// Commands that can be queued now: free command ids and free
    /// submission queue slots (by the head the controller last reported).
    pub fn room(&self) -> usize {
        let used = (self.sq_tail + self.entries - self.sq_head) % self.entries;
        self.free.len().min((self.entries - 1 - used) as usize)
    }

    /// Where the submission queue is.
    pub fn sq_iova(&self) -> u64 {
        self.sq_iova
    }

    /// Where the completion queue is.
    pub fn cq_iova(&self) -> u64 {
        self.cq_iova
    }

    /// Whether a command can be queued now.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty() && self.next(self.sq_tail) != self.sq_head
    }

    /// Queues `cmd` (its command id is set here) for `token`, due by
    /// `deadline`; returns the command id. The doorbell is written later,
    /// once for a batch (see [`sq_doorbell`](Self::sq_doorbell)).
    pub fn submit(
        &mut self,
        mem: &dyn DmaMem,
        mut cmd: Command,
        token: u64,
        deadline: Instant,
    ) -> Result<u16, SubmitError> {
        if !self.has_room() {
            return Err(SubmitError::Full);
        }
        let cid = self.free.pop().ok_or(SubmitError::Full)?;
        cmd.cid = cid;
        let at = self.sq_iova + self.sq_tail as u64 * SQE;
        if !mem.write(at, &cmd.to_bytes()) {
            self.free.push(cid);
            return Err(SubmitError::Memory);
        }
        self.slots[cid as usize] = Some(Slot { token, deadline });
        self.live += 1;
        self.sq_tail = self.next(self.sq_tail);
        self.tail_moved = true;
        Ok(cid)
    }

    /// The submission queue tail to write to its doorbell, if commands were
    /// queued since the last time.
    pub fn sq_doorbell(&mut self) -> Option<u16> {
        std::mem::take(&mut self.tail_moved).then_some(self.sq_tail)
    }

    /// Takes the completions the controller has posted into `out`; returns
    /// the completion queue head to write to its doorbell when any were
    /// taken.
    pub fn poll(&mut self, mem: &dyn DmaMem, out: &mut Vec<Done>) -> Option<u16> {
        let mut took = false;
        loop {
            let at = self.cq_iova + self.cq_head as u64 * CQE;
            // The second half (SQ head, SQ id, command id, status and phase)
            // in one load, then the first: a byte-wise copy racing the
            // device's write could see the new phase beside an old command
            // id (as an emulated CPU's `rep movsb` does).
            let Some(hi) = mem.load64(at + 8) else { break };
            if ((hi >> 48) & 1 != 0) != self.phase {
                break;
            }
            let Some(lo) = mem.load64(at) else { break };
            let mut b = [0u8; CQE as usize];
            b[..8].copy_from_slice(&lo.to_le_bytes());
            b[8..].copy_from_slice(&hi.to_le_bytes());
            let c = Completion::parse(&b);
            took = true;
            self.cq_head = self.next(self.cq_head);
            if self.cq_head == 0 {
                self.phase = !self.phase;
            }
            if c.sqhd < self.entries {
                self.sq_head = c.sqhd;
            }
            match self.slots.get_mut(c.cid as usize).and_then(|s| s.take()) {
                Some(s) => {
                    self.live -= 1;
                    self.free.push(c.cid);
                    out.push(Done {
                        token: s.token,
                        cid: c.cid,
                        status: c.status,
                        dw0: c.dw0,
                    });
                }
                None if self.forgotten.get(c.cid as usize) == Some(&true) => {
                    // A command given up on completed after all: its id is
                    // free again.
                    self.forgotten[c.cid as usize] = false;
                    self.free.push(c.cid);
                }
                None => self.stray += 1,
            }
        }
        took.then_some(self.cq_head)
    }

    /// Commands past their deadline: (command id, token).
    pub fn overdue(&self, now: Instant) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| match s {
                Some(s) if s.deadline <= now => Some((i as u16, s.token)),
                _ => None,
            })
    }

    /// Gives up on command `cid` (timed out): its token. Its id is not
    /// reused until its completion comes (or the queue is reset), so that a
    /// late completion is not taken for another command.
    pub fn forget(&mut self, cid: u16) -> Option<u64> {
        let token = self.slots.get_mut(cid as usize)?.take()?.token;
        self.live -= 1;
        self.forgotten[cid as usize] = true;
        Some(token)
    }

    /// Every command in flight, given up (the controller failed).
    pub fn forget_all(&mut self) -> Vec<u64> {
        self.live = 0;
        self.slots
            .iter_mut()
            .filter_map(|s| s.take().map(|s| s.token))
            .collect()
    }

    /// The queue as new (the controller was reset and the queue created
    /// again over the same memory, zeroed by the caller).
    pub fn reset(&mut self) {
        let vector = self.vector;
        *self = QueuePair::new(self.qid, self.entries as u32, self.sq_iova, self.cq_iova);
        self.vector = vector;
    }
}
