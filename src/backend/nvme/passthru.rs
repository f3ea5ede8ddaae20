//! NVMe I/O passthrough: a namespace the kernel's nvme driver keeps, reached
//! through its character device (`/dev/ngXnY`) with NVMe commands sent as
//! io_uring commands from the reactor, with no block layer in between.

use crate::backend::{Backend, DeviceDone, DeviceRef, DeviceRequest, IoOp, Submitted};
use crate::nvme::Status;
use crate::reactor::Cx;
use nvmf_sys::nvme_cmd::{CmdDone, CmdRing, NvmeIo};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

pub struct PassthruDevice {
    /// The character device's path.
    pub name: String,
    pub file: File,
    pub nsid: u32,
    pub lba_shift: u32,
    pub blocks: u64,
    /// Largest transfer one command may carry, in bytes.
    pub max_transfer: u32,
    pub vwc: bool,
}

fn sysfs(block: &str, what: &str) -> io::Result<String> {
    let p = Path::new("/sys/block").join(block).join(what);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

impl PassthruDevice {
    /// Opens namespace character device `path` (`/dev/ngXnY`).
    pub fn open(path: &Path) -> io::Result<Arc<PassthruDevice>> {
        let name = path.display().to_string();
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(rest) = base.strip_prefix("ng") else {
            return Err(io::Error::other(format!(
                "{name} is not an NVMe namespace character device (/dev/ngXnY)"
            )));
        };
        // The block device of the same namespace tells its geometry.
        let block = format!("nvme{rest}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
        let nsid = nvmf_sys::nvme_cmd::namespace_id(&file)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: NVME_IOCTL_ID: {e}")))?;
        let num = |what: &str| -> io::Result<u64> {
            sysfs(&block, what)?
                .parse::<u64>()
                .map_err(|e| io::Error::other(format!("/sys/block/{block}/{what}: {e}")))
        };
        let lbs = num("queue/logical_block_size")?;
        if !matches!(lbs, 512 | 4096) {
            return Err(io::Error::other(format!(
                "{name}: {lbs}-byte blocks; 512 or 4096 are supported"
            )));
        }
        let sectors = num("size")?;
        let max_kb = num("queue/max_hw_sectors_kb")?;
        let vwc = sysfs(&block, "queue/write_cache").is_ok_and(|s| s == "write back");
        log::info!(
            "{name}: NVMe namespace {nsid} passthrough, {} blocks of {lbs} bytes, largest \
             transfer {max_kb} KiB",
            (sectors * 512) / lbs
        );
        Ok(Arc::new(PassthruDevice {
            name,
            file,
            nsid,
            lba_shift: lbs.trailing_zeros(),
            blocks: (sectors * 512) / lbs,
            max_transfer: (max_kb * 1024).min(u32::MAX as u64) as u32,
            vwc,
        }))
    }
}

pub struct PassthruBackend {
    pub dev: Arc<PassthruDevice>,
}

impl Backend for PassthruBackend {
    fn kind(&self) -> &'static str {
        "nvme-passthru"
    }
    fn size(&self) -> u64 {
        self.dev.blocks << self.dev.lba_shift
    }
    fn block_size(&self) -> Option<u32> {
        Some(1 << self.dev.lba_shift)
    }
    fn volatile_write_cache(&self) -> bool {
        self.dev.vwc
    }
    fn submit(&self, op: IoOp) -> Submitted {
        Submitted::Device(DeviceRequest {
            dev: DeviceRef::Passthru(self.dev.clone()),
            op,
        })
    }
}

/// Commands one passthrough ring keeps in flight at most.
const DEPTH: usize = 128;
/// Largest transfer per command when the device tells none.
const DEFAULT_TRANSFER: u32 = 128 * 1024;
/// Blocks one Write Zeroes command covers at most (NLB is 16 bits).
const MAX_ZERO_BLOCKS: u64 = 65536;

/// One backend operation in flight, perhaps split over several commands.
struct PassReq {
    slot: usize,
    tag: u32,
    op: IoOp,
    parts: u32,
    status: Status,
    /// The operation's own buffer went to the device (one command carrying
    /// all of it); it comes back with the completion.
    lent: bool,
    /// Bytes per part (the offset of part `i` is `i * step`).
    step: usize,
}

/// A reactor's passthrough commands, for every namespace it uses: one ring,
/// submitted once per pass, its completions drained in the loop.
pub struct PassQ {
    ring: CmdRing,
    reqs: Vec<Option<PassReq>>,
    free: Vec<u32>,
    /// Operations waiting for room in the ring.
    waiting: VecDeque<(Arc<PassthruDevice>, usize, u32, IoOp)>,
    done: Vec<CmdDone>,
    /// The reactor's ring polls the command ring's descriptor.
    pub armed: bool,
}

fn range_cdws(slba: u64, blocks: u64) -> [u32; 6] {
    [
        slba as u32,
        (slba >> 32) as u32,
        (blocks as u32).saturating_sub(1),
        0,
        0,
        0,
    ]
}

impl PassQ {
    pub fn new() -> io::Result<PassQ> {
        Ok(PassQ {
            ring: CmdRing::new(DEPTH as u32)
                .map_err(|e| io::Error::new(e.kind(), format!("NVMe passthrough ring: {e}")))?,
            reqs: Vec::new(),
            free: Vec::new(),
            waiting: VecDeque::new(),
            done: Vec::new(),
            armed: false,
        })
    }

    /// The command ring's descriptor (readable when completions wait).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.ring.fd()
    }

    /// Commands in flight or operations waiting.
    pub fn busy(&self) -> bool {
        self.ring.in_flight() > 0 || !self.waiting.is_empty()
    }

    /// Queues an operation (its end goes to `cx.device_done`).
    pub fn submit(
        &mut self,
        cx: &mut Cx,
        dev: Arc<PassthruDevice>,
        slot: usize,
        tag: u32,
        op: IoOp,
    ) {
        if !self.waiting.is_empty() {
            self.waiting.push_back((dev, slot, tag, op));
            return;
        }
        if let Some(op) = self.start(cx, &dev, slot, tag, op) {
            self.waiting.push_back((dev, slot, tag, op));
        }
    }

    /// Starts an operation; gives it back when the ring has no room for it.
    fn start(
        &mut self,
        cx: &mut Cx,
        dev: &Arc<PassthruDevice>,
        slot: usize,
        tag: u32,
        mut op: IoOp,
    ) -> Option<IoOp> {
        let shift = dev.lba_shift;
        let nsid = dev.nsid;
        let step = match dev.max_transfer {
            0 => DEFAULT_TRANSFER,
            n => n,
        };
        let step = ((step >> shift) << shift).max(1 << shift) as usize;
        // Commands the operation needs: room for all of them first, so that
        // none waits half-submitted.
        let count = match &op {
            IoOp::Read { len, .. } | IoOp::Write { len, .. } | IoOp::Compare { len, .. } => {
                len.div_ceil(step).max(1)
            }
            // (The kernel keeps the device: nothing is staged for it.)
            IoOp::ReadDma { .. } | IoOp::WriteDma { .. } => {
                fail(cx, slot, tag, op, Status::INTERNAL_ERROR);
                return None;
            }
            IoOp::Flush | IoOp::Deallocate { .. } => 1,
            IoOp::WriteZeroes { len, .. } => {
                (len >> shift).div_ceil(MAX_ZERO_BLOCKS).max(1) as usize
            }
        };
        if count > DEPTH {
            fail(cx, slot, tag, op, Status::INTERNAL_ERROR);
            return None;
        }
        if DEPTH - self.ring.in_flight() < count {
            return Some(op);
        }
        let opcode = match &op {
            IoOp::Read { .. } => OP_READ,
            IoOp::Write { .. } => OP_WRITE,
            IoOp::Compare { .. } => OP_COMPARE,
            IoOp::Flush => OP_FLUSH,
            IoOp::WriteZeroes { .. } => OP_WRITE_ZEROES,
            IoOp::Deallocate { .. } => OP_DSM,
            IoOp::ReadDma { .. } | IoOp::WriteDma { .. } => return Some(op),
        };
        let mut cmds: Vec<NvmeIo> = Vec::with_capacity(count);
        let mut lent = false;
        match &mut op {
            IoOp::Read {
                offset,
                buf,
                at,
                len,
            }
            | IoOp::Write {
                offset,
                buf,
                at,
                len,
            }
            | IoOp::Compare {
                offset,
                buf,
                at,
                len,
            } => {
                if buf.len() < *at + *len || *len % (1 << shift) != 0 {
                    fail(cx, slot, tag, op, Status::INTERNAL_ERROR);
                    return None;
                }
                if count == 1 && *at == 0 && *len == buf.len() {
                    // The operation's buffer is the command's: no copy.
                    lent = true;
                    let slba = *offset >> shift;
                    cmds.push(NvmeIo {
                        opcode,
                        nsid,
                        cdw: range_cdws(slba, (*len >> shift) as u64),
                        data: std::mem::take(buf),
                    });
                } else {
                    let mut done = 0;
                    while done < *len {
                        let n = (*len - done).min(step);
                        // (From the reactor's pool: the device overwrites or
                        // gets all of it.)
                        let mut data = cx.bufs.alloc_len(n);
                        if opcode != OP_READ {
                            data.copy_from_slice(&buf[*at + done..*at + done + n]);
                        }
                        let slba = (*offset + done as u64) >> shift;
                        cmds.push(NvmeIo {
                            opcode,
                            nsid,
                            cdw: range_cdws(slba, (n >> shift) as u64),
                            data,
                        });
                        done += n;
                    }
                }
            }
            IoOp::Flush => cmds.push(NvmeIo {
                opcode,
                nsid,
                cdw: [0; 6],
                data: Vec::new(),
            }),
            // (Refused above.)
            IoOp::ReadDma { .. } | IoOp::WriteDma { .. } => return Some(op),
            IoOp::WriteZeroes { offset, len } => {
                let (mut slba, mut left) = (*offset >> shift, *len >> shift);
                while left > 0 {
                    let n = left.min(MAX_ZERO_BLOCKS);
                    cmds.push(NvmeIo {
                        opcode,
                        nsid,
                        cdw: range_cdws(slba, n),
                        data: Vec::new(),
                    });
                    slba += n;
                    left -= n;
                }
            }
            IoOp::Deallocate { offset, len } => {
                let blocks = *len >> shift;
                if blocks > u32::MAX as u64 {
                    fail(cx, slot, tag, op, Status::INTERNAL_ERROR);
                    return None;
                }
                // One range: context attributes 0, length in blocks, start.
                let mut range = vec![0u8; 16];
                range[4..8].copy_from_slice(&(blocks as u32).to_le_bytes());
                range[8..16].copy_from_slice(&(*offset >> shift).to_le_bytes());
                cmds.push(NvmeIo {
                    opcode,
                    nsid,
                    // One range (NR is 0's based); attribute Deallocate.
                    cdw: [0, 1 << 2, 0, 0, 0, 0],
                    data: range,
                });
            }
        }
        if cmds.is_empty() {
            // A zero-length operation: nothing for the device to do.
            cx.device_done.push(DeviceDone {
                slot,
                tag,
                result: Ok(()),
                buf: op.into_buf(),
            });
            return None;
        }
        let r = PassReq {
            slot,
            tag,
            op,
            parts: cmds.len() as u32,
            status: Status::SUCCESS,
            lent,
            step,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.reqs[i as usize] = Some(r);
                i
            }
            None => {
                self.reqs.push(Some(r));
                (self.reqs.len() - 1) as u32
            }
        };
        for (part, io) in cmds.into_iter().enumerate() {
            let token = idx as u64 | ((part as u64) << 32);
            if let Err((e, io)) = self.ring.push(&dev.file, io, token) {
                // (Room was checked above.)
                log::error!(
                    "reactor {}: {}: cannot queue a command: {e}",
                    cx.index,
                    dev.name
                );
                self.part_done(
                    cx,
                    CmdDone {
                        token,
                        status: -5, // EIO
                        result: 0,
                        data: io.data,
                    },
                );
            }
        }
        None
    }

    /// One command finished.
    fn part_done(&mut self, cx: &mut Cx, c: CmdDone) {
        let idx = (c.token & 0xffff_ffff) as usize;
        let part = (c.token >> 32) as usize;
        let Some(r) = self.reqs.get_mut(idx).and_then(|r| r.as_mut()) else {
            return;
        };
        let st = match c.status {
            0 => Status::SUCCESS,
            s if s > 0 => Status(s as u16),
            e => {
                log::warn!(
                    "reactor {}: NVMe passthrough command failed: {}",
                    cx.index,
                    io::Error::from_raw_os_error(-e)
                );
                Status::INTERNAL_ERROR
            }
        };
        if !st.is_success() && r.status.is_success() {
            r.status = st;
        }
        let is_read = matches!(r.op, IoOp::Read { .. });
        match &mut r.op {
            IoOp::Read { buf, at, len, .. }
            | IoOp::Write { buf, at, len, .. }
            | IoOp::Compare { buf, at, len, .. } => {
                if r.lent {
                    // The buffer comes home whatever happened.
                    *buf = c.data;
                } else {
                    if is_read && st.is_success() {
                        let from = *at + part * r.step;
                        let n = c.data.len().min(*len - part * r.step);
                        buf[from..from + n].copy_from_slice(&c.data[..n]);
                    }
                    cx.bufs.recycle(c.data);
                }
            }
            _ => {}
        }
        r.parts -= 1;
        if r.parts > 0 {
            return;
        }
        let Some(r) = self.reqs[idx].take() else {
            return;
        };
        self.free.push(idx as u32);
        cx.device_done.push(DeviceDone {
            slot: r.slot,
            tag: r.tag,
            result: if r.status.is_success() {
                Ok(())
            } else {
                Err(r.status)
            },
            buf: r.op.into_buf(),
        });
    }

    /// Drains completions and starts what waited; whether anything finished.
    pub fn poll(&mut self, cx: &mut Cx) -> bool {
        let mut done = std::mem::take(&mut self.done);
        self.ring.drain(&mut done);
        let worked = !done.is_empty();
        for c in done.drain(..) {
            self.part_done(cx, c);
        }
        self.done = done;
        while let Some((dev, slot, tag, op)) = self.waiting.pop_front() {
            if let Some(op) = self.start(cx, &dev, slot, tag, op) {
                self.waiting.push_front((dev, slot, tag, op));
                break;
            }
        }
        worked
    }

    /// Submits what was queued (one system call per pass).
    pub fn flush(&mut self, cx: &mut Cx) {
        if let Err(e) = self.ring.submit() {
            log::error!("reactor {}: NVMe passthrough submit: {e}", cx.index);
        }
    }

    /// Fails every operation waiting (the reactor stops; commands already
    /// with the kernel finish as the ring is dropped).
    pub fn stop(&mut self, cx: &mut Cx) {
        while let Some((_, slot, tag, op)) = self.waiting.pop_front() {
            fail(cx, slot, tag, op, Status::ABORTED_SQ_DELETION);
        }
    }
}

const OP_FLUSH: u8 = 0x00;
const OP_WRITE: u8 = 0x01;
const OP_READ: u8 = 0x02;
const OP_COMPARE: u8 = 0x05;
const OP_WRITE_ZEROES: u8 = 0x08;
const OP_DSM: u8 = 0x09;

fn fail(cx: &mut Cx, slot: usize, tag: u32, op: IoOp, st: Status) {
    cx.device_done.push(DeviceDone {
        slot,
        tag,
        result: Err(st),
        buf: op.into_buf(),
    });
}
