//! NVMe commands sent to a namespace's character device (`/dev/ngXnY`) as io_uring
//! passthrough commands (`IORING_OP_URING_CMD`, 128-byte submission and 32-byte completion
//! entries): the kernel keeps the device, and the commands skip its block layer.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// `NVME_URING_CMD_IO`: `_IOWR('N', 0x80, struct nvme_uring_cmd)` (72 bytes).
const NVME_URING_CMD_IO: u32 = 0xC048_4E80;
/// `NVME_IOCTL_ID`: `_IO('N', 0x40)`, the namespace id of a namespace device.
const NVME_IOCTL_ID: libc::c_ulong = 0x4E40;

/// One NVM command: opcode, namespace, CDW10-15 and its data buffer (empty for none; the
/// device reads it for writes and fills it for reads).
#[derive(Debug)]
pub struct NvmeIo {
    /// The NVM opcode.
    pub opcode: u8,
    /// The namespace.
    pub nsid: u32,
    /// CDW10 to CDW15.
    pub cdw: [u32; 6],
    /// The data buffer (its whole length is transferred).
    pub data: Vec<u8>,
}

/// A finished command.
#[derive(Debug)]
pub struct CmdDone {
    /// What [`CmdRing::push`] was given.
    pub token: u64,
    /// The NVMe status (status field without the phase tag: SC in bits 7:0, SCT in 10:8,
    /// DNR in 14), or a negative errno when the command could not be run.
    pub status: i32,
    /// Completion dword 0.
    pub result: u64,
    /// The command's data buffer, back.
    pub data: Vec<u8>,
}

/// A ring for passthrough commands; it owns each command's buffer until its completion is
/// drained.
pub struct CmdRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry32>,
    /// By slot: the token and the buffer of the command in flight.
    slots: Vec<Option<(u64, Vec<u8>)>>,
    free: Vec<u32>,
    queued: usize,
}

impl CmdRing {
    /// A ring of `entries` commands.
    pub fn new(entries: u32) -> io::Result<CmdRing> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry32>::builder().build(entries)?;
        Ok(CmdRing {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            queued: 0,
        })
    }

    /// The ring's descriptor (readable when completions wait).
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Commands queued or running.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Queues `io` for namespace device `dev`; its completion carries `token`. Fails with
    /// `WouldBlock` (giving `io` back) when the ring is full.
    pub fn push(&mut self, dev: &File, io: NvmeIo, token: u64) -> Result<(), (io::Error, NvmeIo)> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let mut cmd = [0u8; 80];
        cmd[0] = io.opcode;
        cmd[4..8].copy_from_slice(&io.nsid.to_le_bytes());
        if !io.data.is_empty() {
            cmd[24..32].copy_from_slice(&(io.data.as_ptr() as usize as u64).to_le_bytes());
            cmd[36..40].copy_from_slice(&(io.data.len() as u32).to_le_bytes());
        }
        for (i, d) in io.cdw.iter().enumerate() {
            cmd[40 + 4 * i..44 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        let sqe = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), NVME_URING_CMD_IO)
            .cmd(cmd)
            .build()
            .user_data(slot as u64);
        // SAFETY: the entry names the buffer of `io.data`, which is moved into `slots` below
        // and neither read, written nor freed by us until its completion is drained (a Vec's
        // heap memory does not move when the Vec does); the device file is kept open by the
        // kernel for the duration of the command.
        let pushed = unsafe { self.ring.submission().push(&sqe) };
        if pushed.is_err() {
            self.free.push(slot);
            return Err((io::Error::from(io::ErrorKind::WouldBlock), io));
        }
        self.slots[slot as usize] = Some((token, io.data));
        self.queued += 1;
        Ok(())
    }

    /// Submits what was queued (one system call, none when nothing was).
    pub fn submit(&mut self) -> io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        self.ring.submit()?;
        self.queued = 0;
        Ok(())
    }

    /// Moves every completion there into `out`, with its buffer.
    pub fn drain(&mut self, out: &mut Vec<CmdDone>) {
        for c in self.ring.completion() {
            let slot = c.user_data() as usize;
            let Some((token, data)) = self.slots.get_mut(slot).and_then(|s| s.take()) else {
                continue;
            };
            self.free.push(slot as u32);
            out.push(CmdDone {
                token,
                status: c.result(),
                result: c.big_cqe()[0],
                data,
            });
        }
    }
}

impl Drop for CmdRing {
    fn drop(&mut self) {
        // Buffers of commands still running must outlive them: wait for their completions.
        let mut out = Vec::new();
        for _ in 0..1000 {
            if self.in_flight() == 0 {
                break;
            }
            let _ = self.ring.submit_and_wait(1);
            self.drain(&mut out);
            out.clear();
        }
        // Anything left running is leaked rather than freed under the device.
        for s in self.slots.iter_mut() {
            if let Some((_, data)) = s.take() {
                std::mem::forget(data);
            }
        }
    }
}

/// The namespace id of NVMe namespace device `dev` (`/dev/ngXnY` or `/dev/nvmeXnY`).
pub fn namespace_id(dev: &File) -> io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument and returns the id; the descriptor is borrowed
    // from `dev` for the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), NVME_IOCTL_ID) };
    if rc < 0 {
        return Err(crate::last_error());
    }
    Ok(rc as u32)
}
