//! Null backend: reads return zeros, writes are dropped. For benchmarks.

use super::{check, run_memory, Backend, IoOp, Submitted};
use nvmf_sys::mem::{Region, RegionSlice};
use std::sync::Arc;

/// Reads up to this long are sent from a mapping that is never written (the
/// kernel's zero page backs it), without filling a buffer with zeros.
const ZEROS_LEN: usize = 4 << 20;

pub struct NullBackend {
    size: u64,
    zeros: Option<Arc<Region>>,
}

impl NullBackend {
    pub fn new(size: u64) -> NullBackend {
        NullBackend {
            size,
            // Address space only; if it cannot be mapped, reads fill buffers.
            zeros: Region::new(ZEROS_LEN).ok().map(Arc::new),
        }
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
    fn read_shared(&self, offset: u64, len: usize) -> Option<RegionSlice> {
        check(self.size, offset, len as u64).ok()?;
        RegionSlice::new(self.zeros.clone()?, 0, len)
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
    fn null_shared_reads_are_zeros_within_range() {
        let b = NullBackend::new(16 << 20);
        let s = b.read_shared(8 << 20, 1 << 20).expect("a shared read");
        let mut got = vec![7u8; 1 << 20];
        assert!(s.copy_to(&mut got));
        assert!(got.iter().all(|&x| x == 0));
        assert!(b.read_shared((16 << 20) - 512, 1024).is_none());
        // Longer than the zero mapping: the copying path takes it.
        assert!(b.read_shared(0, ZEROS_LEN + 512).is_none());
    }

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
