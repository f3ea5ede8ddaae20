//! NVM command set I/O commands: Read, Write, Flush, Write Zeroes, Dataset
//! Management, Compare, fused Compare-and-Write, Verify, Copy.

use super::queue::{Queue, Response, Role};
use crate::backend::BackendError;
use crate::nvme::{io_op, le16, le32, le64, Command, Fuse, Status};
use crate::subsystem::Namespace;
use std::sync::Arc;

/// Blocks read per step when verifying.
const VERIFY_CHUNK: usize = 128 * 1024;

fn backend_status(e: BackendError, write: bool) -> Status {
    match e {
        BackendError::OutOfRange => Status::LBA_OUT_OF_RANGE.dnr(),
        BackendError::Read(_) => Status::UNRECOVERED_READ_ERROR,
        BackendError::Write(_) if write => Status::WRITE_FAULT,
        BackendError::Write(_) => Status::INTERNAL_ERROR,
    }
}

impl Queue {
    fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        match &self.role {
            Role::Io(c) => c.subsys.namespace(nsid).cloned(),
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

    pub(super) fn io_command(&mut self, cmd: &Command, data: Vec<u8>, out: &mut Vec<Response>) {
        if let Role::Io(c) = &self.role {
            if c.is_dead() {
                return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR, 0, out);
            }
        }
        if cmd.fuse() == Fuse::Reserved {
            return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
        }
        if cmd.opcode == io_op::FLUSH && cmd.nsid == 0xFFFF_FFFF {
            return self.flush_all(cmd, out);
        }
        let Some(ns) = self.namespace(cmd.nsid) else {
            let st = if known_opcode(cmd.opcode) {
                Status::INVALID_NAMESPACE.dnr()
            } else {
                Status::INVALID_OPCODE.dnr()
            };
            return self.complete(cmd, st, 0, out);
        };
        match (cmd.fuse(), cmd.opcode) {
            (Fuse::First, io_op::COMPARE) => {
                self.fused = Some((*cmd, data));
                return;
            }
            (Fuse::Second, io_op::WRITE) => {
                return match self.fused.take() {
                    Some((first, cdata)) => {
                        self.compare_and_write(&ns, &first, cdata, cmd, data, out)
                    }
                    None => self.complete(cmd, Status::ABORTED_MISSING_FUSED, 0, out),
                };
            }
            (Fuse::None, _) => {}
            _ => return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out),
        }
        let r = match cmd.opcode {
            io_op::READ => return self.read(&ns, cmd, out),
            io_op::WRITE => self.write(&ns, cmd, &data),
            io_op::FLUSH => ns.backend.flush().map_err(|e| backend_status(e, true)),
            io_op::WRITE_ZEROES => self.write_zeroes(&ns, cmd),
            io_op::DATASET_MANAGEMENT => self.dsm(&ns, cmd, &data),
            io_op::COMPARE => self.compare(&ns, cmd, &data),
            io_op::VERIFY => self.verify(&ns, cmd),
            io_op::COPY => self.copy(&ns, cmd, &data),
            _ => Err(Status::INVALID_OPCODE.dnr()),
        };
        let st = r.err().unwrap_or(Status::SUCCESS);
        self.complete(cmd, st, 0, out)
    }

    fn flush_all(&mut self, cmd: &Command, out: &mut Vec<Response>) {
        let mut st = Status::SUCCESS;
        if let Role::Io(c) = &self.role {
            for ns in &c.subsys.namespaces {
                if let Err(e) = ns.backend.flush() {
                    st = backend_status(e, true);
                }
            }
        }
        self.complete(cmd, st, 0, out)
    }

    /// Range and transfer-size checks shared by Read, Write and Compare.
    fn rw_range(&self, ns: &Namespace, cmd: &Command) -> Result<(u64, usize), Status> {
        let (off, len) = Self::range(ns, cmd.slba(), cmd.nlb() as u64)?;
        if len > self.max_transfer() as u64 {
            return Err(Status::INVALID_FIELD.dnr());
        }
        Ok((off, len as usize))
    }

    fn read(&mut self, ns: &Namespace, cmd: &Command, out: &mut Vec<Response>) {
        let (off, len) = match self.rw_range(ns, cmd) {
            Ok(r) => r,
            Err(st) => return self.complete(cmd, st, 0, out),
        };
        if (cmd.sgl().length as usize) < len {
            return self.complete(cmd, Status::DATA_SGL_LENGTH_INVALID.dnr(), 0, out);
        }
        let mut buf = vec![0u8; len];
        match ns.backend.read(off, &mut buf) {
            Ok(()) => {
                self.stats.add_read(len as u64);
                self.complete_with(cmd, Status::SUCCESS, 0, buf, out)
            }
            Err(e) => self.complete(cmd, backend_status(e, false), 0, out),
        }
    }

    fn write(&mut self, ns: &Namespace, cmd: &Command, data: &[u8]) -> Result<(), Status> {
        let (off, len) = self.rw_range(ns, cmd)?;
        if data.len() < len {
            return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        ns.backend
            .write(off, &data[..len])
            .map_err(|e| backend_status(e, true))?;
        self.stats.add_write(len as u64);
        Ok(())
    }

    fn write_zeroes(&mut self, ns: &Namespace, cmd: &Command) -> Result<(), Status> {
        let (off, len) = Self::range(ns, cmd.slba(), cmd.nlb() as u64)?;
        // DEAC (bit 25): deallocation is allowed; both read back as zeros.
        let r = if cmd.cdw12 & (1 << 25) != 0 {
            ns.backend.deallocate(off, len)
        } else {
            ns.backend.write_zeroes(off, len)
        };
        r.map_err(|e| backend_status(e, true))?;
        self.stats.add_write(0);
        Ok(())
    }

    fn dsm(&mut self, ns: &Namespace, cmd: &Command, data: &[u8]) -> Result<(), Status> {
        let nr = (cmd.cdw10 & 0xFF) as usize + 1;
        if data.len() < nr * 16 {
            return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        let ranges: Vec<(u64, u64)> = (0..nr)
            .map(|i| {
                let r = &data[i * 16..i * 16 + 16];
                (le64(r, 8), le32(r, 4) as u64)
            })
            .collect();
        // Validate every range before touching any.
        let mut checked = Vec::with_capacity(nr);
        for &(slba, nlb) in &ranges {
            checked.push(Self::range(ns, slba, nlb)?);
        }
        if cmd.cdw11 & (1 << 2) != 0 {
            for (off, len) in checked {
                if len > 0 {
                    ns.backend
                        .deallocate(off, len)
                        .map_err(|e| backend_status(e, true))?;
                }
            }
        }
        Ok(())
    }

    fn compare(&mut self, ns: &Namespace, cmd: &Command, data: &[u8]) -> Result<(), Status> {
        let (off, len) = self.rw_range(ns, cmd)?;
        if data.len() < len {
            return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(len, 0);
        let r = ns.backend.read(off, &mut buf);
        let same = buf[..] == data[..len];
        self.scratch = buf;
        r.map_err(|e| backend_status(e, false))?;
        self.stats.add_read(len as u64);
        if same {
            Ok(())
        } else {
            Err(Status::COMPARE_FAILURE.dnr())
        }
    }

    fn compare_and_write(
        &mut self,
        ns: &Namespace,
        first: &Command,
        cdata: Vec<u8>,
        second: &Command,
        wdata: Vec<u8>,
        out: &mut Vec<Response>,
    ) {
        if first.nsid != second.nsid || first.slba() != second.slba() || first.nlb() != second.nlb()
        {
            self.complete(first, Status::INVALID_FIELD.dnr(), 0, out);
            return self.complete(second, Status::ABORTED_FAILED_FUSED, 0, out);
        }
        // Both halves run back to back on this queue's reactor, with nothing
        // in between from this queue.
        match self.compare(ns, first, &cdata) {
            Err(st) => {
                self.complete(first, st, 0, out);
                self.complete(second, Status::ABORTED_FAILED_FUSED, 0, out)
            }
            Ok(()) => {
                let st = self
                    .write(ns, second, &wdata)
                    .err()
                    .unwrap_or(Status::SUCCESS);
                self.complete(first, Status::SUCCESS, 0, out);
                self.complete(second, st, 0, out)
            }
        }
    }

    fn verify(&mut self, ns: &Namespace, cmd: &Command) -> Result<(), Status> {
        let (mut off, len) = Self::range(ns, cmd.slba(), cmd.nlb() as u64)?;
        let end = off + len;
        let mut buf = std::mem::take(&mut self.scratch);
        let mut r = Ok(());
        while off < end && r.is_ok() {
            let n = ((end - off) as usize).min(VERIFY_CHUNK);
            buf.resize(n, 0);
            r = ns.backend.read(off, &mut buf[..n]);
            off += n as u64;
        }
        self.scratch = buf;
        r.map_err(|e| backend_status(e, false))
    }

    fn copy(&mut self, ns: &Namespace, cmd: &Command, data: &[u8]) -> Result<(), Status> {
        let nr = (cmd.cdw12 & 0xFF) as usize + 1;
        let format = (cmd.cdw12 >> 8) & 0xF;
        if format != 0 {
            return Err(Status::INVALID_FIELD.dnr());
        }
        if data.len() < nr * 32 {
            return Err(Status::DATA_SGL_LENGTH_INVALID.dnr());
        }
        let max_blocks = (self.max_transfer() >> ns.lba_shift).clamp(1, 0xFFFF) as u64;
        let mut total = 0u64;
        let mut sources = Vec::with_capacity(nr);
        for i in 0..nr {
            let d = &data[i * 32..i * 32 + 32];
            let slba = le64(d, 8);
            let nlb = le16(d, 16) as u64 + 1;
            if nlb > max_blocks {
                return Err(Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr());
            }
            total += nlb;
            sources.push(Self::range(ns, slba, nlb)?);
        }
        if total > max_blocks || nr > 128 {
            return Err(Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr());
        }
        let (dst, _) = Self::range(ns, cmd.slba(), total)?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let mut r = Ok(());
        for (off, len) in sources {
            let start = buf.len();
            buf.resize(start + len as usize, 0);
            r = ns
                .backend
                .read(off, &mut buf[start..])
                .map_err(|e| backend_status(e, false));
            if r.is_err() {
                break;
            }
        }
        if r.is_ok() {
            r = ns
                .backend
                .write(dst, &buf)
                .map_err(|e| backend_status(e, true));
        }
        self.scratch = buf;
        r
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
