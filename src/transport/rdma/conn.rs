//! One NVMe/RDMA queue pair as a sans-IO state machine: fed command
//! capsules (as received) and the ends of its RDMA READs, it hands commands
//! to the fabrics queue beside it and says what the driver must post:
//! RDMA READs of write data, and responses (an RDMA WRITE of read data
//! followed by the completion's SEND, with invalidation when the host asks).

use crate::buf::Buffers;
use crate::fabrics::{DataMap, Queue, Response};
use crate::nvme::{Command, DataDir, Status};
use crate::transport::QueueConn;
use nvmf_sys::RegionSlice;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Bytes of a command capsule before its in-capsule data.
pub const SQE_LEN: usize = 64;

/// Read data for the host.
#[derive(Debug)]
pub enum ReadData {
    /// A buffer the driver copies into registered memory.
    Bytes(Vec<u8>),
    /// Backend memory, written to the host straight from its registration.
    Shared(RegionSlice),
}

impl ReadData {
    pub fn len(&self) -> usize {
        match self {
            ReadData::Bytes(b) => b.len(),
            ReadData::Shared(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the driver must post.
#[derive(Debug)]
pub enum Action {
    /// RDMA READ `len` bytes of host memory at `addr` (key `key`) for the
    /// write `tag`: straight into backend memory `placed` when given, else
    /// into a buffer of the driver's, handed back with
    /// [`RdmaConn::read_done`].
    Read {
        tag: u16,
        addr: u64,
        key: u32,
        len: u32,
        placed: Option<RegionSlice>,
    },
    /// A response: first RDMA WRITE `data` to the host's memory at
    /// (`addr`, `key`) when there is data, then SEND the completion
    /// (invalidating the host's key `invalidate` when set).
    Respond {
        cqe: [u8; 16],
        data: Option<(ReadData, u64, u32)>,
        invalidate: Option<u32>,
    },
}

/// Host memory of a command in flight: where its read data goes, and the
/// key to invalidate with its response.
#[derive(Debug, Clone, Copy)]
struct Keyed {
    addr: u64,
    key: u32,
    len: u32,
    invalidate: bool,
}

/// A write whose data is still in host memory.
struct PendingWrite {
    cmd: Command,
    len: u32,
    addr: u64,
    key: u32,
    placed: Option<crate::fabrics::Placed>,
}

pub struct RdmaConn {
    bufs: Buffers,
    /// RDMA READs the queue pair may have outstanding (the initiator
    /// depth agreed at connect).
    ord: u32,
    reads: u32,
    /// Writes waiting for their data, by tag.
    writes: Vec<Option<PendingWrite>>,
    free_tags: Vec<u16>,
    /// Writes waiting for an RDMA READ slot, in arrival order.
    read_wait: VecDeque<u16>,
    /// By command identifier.
    keyed: HashMap<u16, Keyed>,
    actions: Vec<Action>,
    responses: Vec<Response>,
    close_reason: Option<String>,
}

impl crate::transport::QueueConn for RdmaConn {
    fn spare(&mut self) -> &mut Vec<Response> {
        &mut self.responses
    }
    fn answer(&mut self, r: &mut Vec<Response>, q: &Queue) {
        self.respond(r, q);
    }
}

impl RdmaConn {
    /// A queue pair that may have `ord` RDMA READs outstanding (at least 1).
    pub fn new(bufs: Buffers, ord: u32) -> RdmaConn {
        RdmaConn {
            bufs,
            ord: ord.max(1),
            reads: 0,
            writes: Vec::new(),
            free_tags: Vec::new(),
            read_wait: VecDeque::new(),
            keyed: HashMap::new(),
            actions: Vec::new(),
            responses: Vec::new(),
            close_reason: None,
        }
    }

    /// What the driver must post, in order.
    pub fn take_actions(&mut self, out: &mut Vec<Action>) {
        out.append(&mut self.actions);
    }

    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Bytes write `tag` transfers.
    pub fn write_len(&self, tag: u16) -> Option<u32> {
        Some(self.writes.get(tag as usize)?.as_ref()?.len)
    }

    /// RDMA READs outstanding.
    pub fn reads_in_flight(&self) -> u32 {
        self.reads
    }

    /// The connection must close (a protocol error); why.
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// A received command capsule: the 64-byte command and the in-capsule
    /// data after it (empty when none; a pooled buffer, taken).
    pub fn capsule(&mut self, sqe: &[u8; SQE_LEN], data: Vec<u8>, q: &mut Queue, now: Instant) {
        let cmd = Command::parse(sqe);
        let req = match q.admit(&cmd) {
            Ok(r) => r,
            Err(st) => {
                self.bufs.recycle(data);
                return self.reject(&cmd, st, q);
            }
        };
        match req.map {
            DataMap::InCapsule { offset } => {
                let fits = offset
                    .checked_add(req.len as u64)
                    .is_some_and(|end| end <= data.len() as u64);
                if !fits {
                    // Data beyond what the capsule carries.
                    let st = if offset > data.len() as u64 {
                        Status::SGL_OFFSET_INVALID.dnr()
                    } else {
                        Status::DATA_SGL_LENGTH_INVALID.dnr()
                    };
                    self.bufs.recycle(data);
                    return self.reject(&cmd, st, q);
                }
                let (off, len) = (offset as usize, req.len as usize);
                if let Some(placed) = q.place_write_now(&cmd, &data[off..off + len]) {
                    self.bufs.recycle(data);
                    return self.execute_placed(&cmd, len, placed, q, now);
                }
                let mut data = data;
                if off > 0 {
                    data.copy_within(off..off + len, 0);
                }
                data.truncate(len);
                self.execute(cmd, data, q, now);
            }
            DataMap::Keyed {
                addr,
                key,
                invalidate,
            } => {
                self.bufs.recycle(data);
                let reads = req.dir == DataDir::CtrlToHost;
                if reads || invalidate {
                    self.keyed.insert(
                        cmd.cid,
                        Keyed {
                            addr,
                            key,
                            len: req.len,
                            invalidate,
                        },
                    );
                }
                if req.dir == DataDir::HostToCtrl && req.len > 0 {
                    self.start_read(cmd, req.len, addr, key, q);
                } else {
                    self.execute(cmd, Vec::new(), q, now);
                }
            }
            // No data (or an SGL this transport does not map, which
            // admission refused already).
            _ => {
                self.bufs.recycle(data);
                self.execute(cmd, Vec::new(), q, now);
            }
        }
    }

    fn start_read(&mut self, cmd: Command, len: u32, addr: u64, key: u32, q: &mut Queue) {
        let tag = match self.free_tags.pop() {
            Some(t) => t,
            None if self.writes.len() < u16::MAX as usize => {
                self.writes.push(None);
                (self.writes.len() - 1) as u16
            }
            None => return self.reject(&cmd, Status::INTERNAL_ERROR, q),
        };
        let placed = q.placed_write(&cmd, len);
        self.writes[tag as usize] = Some(PendingWrite {
            cmd,
            len,
            addr,
            key,
            placed,
        });
        self.read_wait.push_back(tag);
        self.next_reads();
    }

    /// Starts waiting RDMA READs while the initiator depth allows.
    fn next_reads(&mut self) {
        while self.reads < self.ord {
            let Some(tag) = self.read_wait.pop_front() else {
                return;
            };
            let Some(w) = self.writes.get(tag as usize).and_then(|w| w.as_ref()) else {
                continue;
            };
            self.reads += 1;
            self.actions.push(Action::Read {
                tag,
                addr: w.addr,
                key: w.key,
                len: w.len,
                placed: w.placed.as_ref().map(|p| p.region.clone()),
            });
        }
    }

    /// The RDMA READ of write `tag` finished: its data is in the backend
    /// memory it was placed in (`data` is `None`), or in `data`.
    pub fn read_done(&mut self, tag: u16, data: Option<Vec<u8>>, q: &mut Queue, now: Instant) {
        self.reads = self.reads.saturating_sub(1);
        let w = self.writes.get_mut(tag as usize).and_then(|w| w.take());
        match w {
            Some(w) => {
                self.free_tags.push(tag);
                match (w.placed.is_some(), data) {
                    (true, d) => {
                        // The data landed in a staging buffer (the placed
                        // memory could not be registered): put it in place.
                        if let Some(d) = d {
                            let ok = w.placed.as_ref().is_some_and(|p| {
                                d.len() == w.len as usize && p.region.copy_from(0, &d)
                            });
                            self.bufs.recycle(d);
                            if !ok {
                                return self.close(
                                    "an RDMA READ's data could not be put where its write goes",
                                );
                            }
                        }
                        self.execute_placed(&w.cmd, w.len as usize, w.placed, q, now);
                    }
                    (false, Some(d)) if d.len() == w.len as usize => self.execute(w.cmd, d, q, now),
                    (false, d) => {
                        if let Some(d) = d {
                            self.bufs.recycle(d);
                        }
                        self.close("an RDMA READ returned less data than its write needs");
                    }
                }
            }
            None => {
                if let Some(d) = data {
                    self.bufs.recycle(d);
                }
                self.close(format!("RDMA READ completion for unknown write {tag}"));
            }
        }
        self.next_reads();
    }

    fn close(&mut self, why: impl Into<String>) {
        if self.close_reason.is_none() {
            self.close_reason = Some(why.into());
        }
    }

    /// Turns the queue's responses into what the driver posts.
    pub fn respond(&mut self, r: &mut Vec<Response>, _q: &Queue) {
        for resp in r.drain(..) {
            let k = self.keyed.remove(&resp.cqe.cid);
            let invalidate = k.filter(|k| k.invalidate).map(|k| k.key);
            let data = match resp.shared {
                Some(s) => Some(ReadData::Shared(s)),
                None if !resp.data.is_empty() => Some(ReadData::Bytes(resp.data)),
                None => {
                    self.bufs.recycle(resp.data);
                    None
                }
            };
            let data = match (data, k) {
                (Some(d), Some(k)) if !d.is_empty() && d.len() <= k.len as usize => {
                    Some((d, k.addr, k.key))
                }
                (Some(d), _) => {
                    // Data with nowhere to go (or more than the host's
                    // buffer): a bug above; the host gets the completion.
                    log::error!(
                        "command {}: {} bytes of read data and no host buffer for them",
                        resp.cqe.cid,
                        d.len()
                    );
                    if let ReadData::Bytes(b) = d {
                        self.bufs.recycle(b);
                    }
                    None
                }
                (None, _) => None,
            };
            self.actions.push(Action::Respond {
                cqe: resp.cqe.to_bytes(),
                data,
                invalidate,
            });
        }
    }
}
