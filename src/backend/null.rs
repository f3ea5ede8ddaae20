//! Null backend: reads return zeros, writes are dropped. For benchmarks.

use super::{check, run_memory, Backend, IoOp, Submitted};

pub struct NullBackend {
    size: u64,
}

impl NullBackend {
    pub fn new(size: u64) -> NullBackend {
        NullBackend { size }
    }
}

impl Backend for NullBackend {
    fn kind(&self) -> &'static str {
        "null"
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn volatile_write_cache(&self) -> bool {
        false
    }
    fn submit(&self, op: IoOp) -> Submitted {
        let size = self.size;
        run_memory(
            op,
            |off, dst| {
                check(size, off, dst.len() as u64)?;
                dst.fill(0);
                Ok(())
            },
            |off, src| check(size, off, src.len() as u64),
            |op| match *op {
                IoOp::WriteZeroes { offset, len } | IoOp::Deallocate { offset, len } => {
                    check(size, offset, len)
                }
                _ => Ok(()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{run_blocking, BackendError};

    #[test]
    fn null_reads_zeros_and_checks_range() {
        let b = NullBackend::new(4096);
        let w = run_blocking(
            &b,
            IoOp::Write {
                offset: 0,
                buf: vec![1u8; 512],
                at: 0,
                len: 512,
            },
        );
        assert_eq!(w.result, Ok(()));
        let r = run_blocking(
            &b,
            IoOp::Read {
                offset: 0,
                buf: vec![9u8; 512],
                at: 0,
                len: 512,
            },
        );
        assert!(r.buf.iter().all(|&x| x == 0));
        let w = run_blocking(
            &b,
            IoOp::Write {
                offset: 4000,
                buf: vec![0u8; 512],
                at: 0,
                len: 512,
            },
        );
        assert_eq!(w.result, Err(BackendError::OutOfRange));
    }
}
