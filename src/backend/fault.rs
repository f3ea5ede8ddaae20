//! `backend = "fault"`: a RAM namespace that fails on purpose, as its rules
//! say: media errors, a full device, short transfers, and operations held
//! for seconds. For testing what hosts (and the target's own error paths,
//! error log and SMART counters) do when a disk misbehaves.
//!
//! Rules are checked in order; the first whose operation and block range
//! match an operation owns it: it counts it, and hits every `every`-th one
//! (the others pass unharmed, whatever later rules say). A delay is
//! a timeout operation on the reactor's ring: the reactor keeps serving
//! everything else meanwhile. The data of a delayed read or write moves
//! when it is submitted; only its completion waits.

use super::{ram::RamBackend, Backend, IoOp, Submitted};
use crate::config::{FaultError, FaultOp, FaultRule};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub struct FaultBackend {
    ram: RamBackend,
    block_size: u64,
    rules: Vec<(FaultRule, AtomicU64)>,
}

impl FaultBackend {
    pub fn new(size: u64, block_size: u32, rules: &[FaultRule]) -> std::io::Result<FaultBackend> {
        Ok(FaultBackend {
            ram: RamBackend::new(size)?,
            block_size: block_size as u64,
            rules: rules
                .iter()
                .map(|r| (r.clone(), AtomicU64::new(0)))
                .collect(),
        })
    }

    /// The rule that hits this operation, if any.
    fn hit(&self, op: &IoOp) -> Option<&FaultRule> {
        let (kind, range) = match *op {
            IoOp::Read { offset, len, .. } | IoOp::Compare { offset, len, .. } => {
                (FaultOp::Read, Some((offset, len as u64)))
            }
            IoOp::Write { offset, len, .. } | IoOp::WriteDma { offset, len, .. } => {
                (FaultOp::Write, Some((offset, len as u64)))
            }
            IoOp::ReadDma { offset, len, .. } => (FaultOp::Read, Some((offset, len as u64))),
            IoOp::WriteZeroes { offset, len } | IoOp::Deallocate { offset, len } => {
                (FaultOp::WriteZeroes, Some((offset, len)))
            }
            IoOp::Flush => (FaultOp::Flush, None),
        };
        let (r, count) = self.rules.iter().find(|(r, _)| {
            if r.op != FaultOp::Any && r.op != kind {
                return false;
            }
            let Some((off, len)) = range else {
                return true;
            };
            let start = r.lba.saturating_mul(self.block_size);
            let end = match r.blocks {
                Some(b) => start.saturating_add(b.saturating_mul(self.block_size)),
                None => u64::MAX,
            };
            off < end && off.saturating_add(len) > start
        })?;
        let n = count.fetch_add(1, Relaxed) + 1;
        n.is_multiple_of(r.every).then_some(r)
    }
}

impl Backend for FaultBackend {
    fn kind(&self) -> &'static str {
        "fault"
    }
    fn size(&self) -> u64 {
        self.ram.size()
    }
    fn volatile_write_cache(&self) -> bool {
        false
    }
    // No read_shared / write_in_place: every operation goes through
    // `submit`, where the rules are.
    fn submit(&self, op: IoOp) -> Submitted {
        let Some(rule) = self.hit(&op) else {
            return self.ram.submit(op);
        };
        let expected = op.transfer_len();
        let write = op.is_write();
        // The outcome as a ring operation's result (bytes moved, or
        // -errno), which `ring_done` maps as it does for a file.
        let (op, result) = match rule.error {
            Some(FaultError::Media) => (Err(op), -EIO),
            Some(FaultError::NoSpace) => (Err(op), -ENOSPC),
            // Half the data really moves, as in a short transfer.
            Some(FaultError::Short) => (Ok(half(op)), (expected / 2) as i32),
            None => (Ok(op), expected as i32),
        };
        let buf = match op {
            Err(op) => op.into_buf(),
            Ok(op) => match self.ram.submit(op) {
                Submitted::Done(d) if d.result.is_ok() => d.buf,
                other => return other,
            },
        };
        if rule.delay_ms > 0 {
            return Submitted::Ring(nvmf_sys::Op::Delay {
                buf,
                after: Duration::from_millis(rule.delay_ms),
                result,
            });
        }
        Submitted::Done(self.ring_done(result, expected, write, buf))
    }
}

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// A read or write of half the bytes.
fn half(op: IoOp) -> IoOp {
    match op {
        IoOp::Read {
            offset,
            buf,
            at,
            len,
        } => IoOp::Read {
            offset,
            buf,
            at,
            len: len / 2,
        },
        IoOp::Write {
            offset,
            buf,
            at,
            len,
        } => IoOp::Write {
            offset,
            buf,
            at,
            len: len / 2,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{run_blocking, BackendError};
    use crate::config::Config;

    fn backend(rules: &str) -> FaultBackend {
        let text = format!(
            "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n\
             [[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:f\"\nallow_any_host = true\n\
             [[subsystem.namespace]]\nbackend = \"fault\"\nsize = \"1MiB\"\nfault = [{rules}]\n"
        );
        let cfg = Config::parse(&text, "f.toml").unwrap_or_else(|e| panic!("{e:?}"));
        let crate::config::BackendConfig::Fault { size, faults } =
            &cfg.subsystems[0].namespaces[0].backend
        else {
            panic!("not a fault backend");
        };
        FaultBackend::new(*size, 512, faults).unwrap()
    }

    fn write(b: &FaultBackend, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let len = data.len();
        let op = IoOp::Write {
            offset,
            buf: data.to_vec(),
            at: 0,
            len,
        };
        run_blocking(b, op).result
    }

    fn read(b: &FaultBackend, offset: u64, len: usize) -> Result<Vec<u8>, BackendError> {
        let d = run_blocking(
            b,
            IoOp::Read {
                offset,
                buf: vec![0; len],
                at: 0,
                len,
            },
        );
        d.result.map(|_| d.buf)
    }

    #[test]
    fn a_short_write_moves_half_and_fails() {
        let b = backend(r#"{ op = "write", lba = 8, blocks = 8, error = "short" }"#);
        write(&b, 0, &[1; 8192]).unwrap_err(); // blocks 0..16 overlap the rule
        assert_eq!(
            read(&b, 0, 8192).unwrap(),
            [&[1u8; 4096][..], &[0; 4096]].concat()
        );
        write(&b, 16 * 512, &[2; 512]).unwrap();
        assert_eq!(read(&b, 16 * 512, 512).unwrap(), vec![2; 512]);
        let e = write(&b, 8 * 512, &[3; 1024]).unwrap_err();
        assert!(
            matches!(&e, BackendError::Write(m) if m.contains("short transfer: 512 of 1024")),
            "{e:?}"
        );
    }

    #[test]
    fn every_nth_and_first_rule_wins() {
        let b = backend(
            r#"{ op = "read", error = "media", every = 3 }, { op = "any", error = "no_space" }"#,
        );
        let r: Vec<bool> = (0..6).map(|_| read(&b, 0, 512).is_ok()).collect();
        assert_eq!(r, [true, true, false, true, true, false]);
        // Reads the first rule lets pass are not the second's: the first
        // rule that matches owns the operation, hit or not.
        assert_eq!(
            write(&b, 0, &[0; 512]).unwrap_err(),
            BackendError::Device(crate::nvme::Status::CAPACITY_EXCEEDED.dnr())
        );
        // ENOSPC on a read is a read error.
        let b = backend(r#"{ op = "read", error = "no_space" }"#);
        assert!(matches!(read(&b, 0, 512), Err(BackendError::Read(_))));
    }

    #[test]
    fn a_delay_is_a_ring_operation_with_the_outcome() {
        let b = backend(r#"{ op = "flush", error = "media", delay_ms = 1500 }"#);
        match b.submit(IoOp::Flush) {
            Submitted::Ring(nvmf_sys::Op::Delay { after, result, .. }) => {
                assert_eq!((after, result), (Duration::from_millis(1500), -EIO));
            }
            _ => panic!("a delayed flush is not a ring delay"),
        }
        let d = b.ring_done(-EIO, 0, true, Vec::new());
        assert!(matches!(d.result, Err(BackendError::Write(_))));
    }

    #[test]
    fn rules_are_checked_with_their_place_in_the_file() {
        let bad = [
            (
                r#"{ op = "erase", error = "media" }"#,
                "unknown operation \"erase\"",
            ),
            (
                r#"{ op = "read", error = "fire" }"#,
                "unknown error \"fire\"",
            ),
            (
                r#"{ op = "read" }"#,
                "a rule needs an error, a delay_ms, or both",
            ),
            (
                r#"{ op = "flush", error = "short" }"#,
                "a short transfer needs op",
            ),
            (
                r#"{ op = "read", error = "media", lba = 2048 }"#,
                "lba: 2048 is out of range",
            ),
            (
                r#"{ op = "read", error = "media", every = 0 }"#,
                "every: 0 is out of range",
            ),
            (
                r#"{ op = "read", error = "media", colour = 1 }"#,
                "unknown key \"colour\"",
            ),
        ];
        for (rule, want) in bad {
            let text = format!(
                "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n\
                 [[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:f\"\nallow_any_host = true\n\
                 [[subsystem.namespace]]\nbackend = \"fault\"\nsize = \"1MiB\"\nfault = [{rule}]\n"
            );
            let errs = Config::parse(&text, "f.toml").unwrap_err();
            let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(
                all.iter()
                    .any(|e| e.contains(want) && e.starts_with("f.toml:11:")),
                "{rule}: {all:?}"
            );
        }
        let text = "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n\
                    [[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:f\"\nallow_any_host = true\n\
                    [[subsystem.namespace]]\nbackend = \"ram\"\nsize = \"1MiB\"\n\
                    fault = [{ op = \"read\", error = \"media\" }]\n";
        let errs = Config::parse(text, "f.toml").unwrap_err();
        assert!(
            errs[0]
                .to_string()
                .contains("only the fault backend takes faults"),
            "{errs:?}"
        );
    }
}
