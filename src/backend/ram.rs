//! RAM backend: an anonymous memory region, allocated lazily by the kernel.

use super::{check, run_memory, Backend, BackendError, BackendResult, IoOp, Submitted};
use nvmf_sys::mem::{Region, RegionSlice};
use std::sync::Arc;

pub struct RamBackend {
    region: Arc<Region>,
}

impl RamBackend {
    pub fn new(size: u64) -> std::io::Result<RamBackend> {
        let len = usize::try_from(size)
            .map_err(|_| std::io::Error::other("RAM namespace larger than the address space"))?;
        Ok(RamBackend {
            region: Arc::new(Region::new(len)?),
        })
    }
}

fn ok_or_range(ok: bool) -> BackendResult {
    if ok {
        Ok(())
    } else {
        Err(BackendError::OutOfRange)
    }
}

impl Backend for RamBackend {
    fn kind(&self) -> &'static str {
        "ram"
    }
    fn size(&self) -> u64 {
        self.region.len() as u64
    }
    fn volatile_write_cache(&self) -> bool {
        false
    }
    fn read_shared(&self, offset: u64, len: usize) -> Option<RegionSlice> {
        RegionSlice::new(self.region.clone(), offset, len)
    }
    fn write_in_place(&self, offset: u64, len: usize) -> Option<RegionSlice> {
        RegionSlice::new(self.region.clone(), offset, len)
    }
    fn submit(&self, op: IoOp) -> Submitted {
        let r = &self.region;
        run_memory(
            op,
            |off, dst| ok_or_range(r.read(off, dst)),
            |off, src| ok_or_range(r.write(off, src)),
            |op| match *op {
                IoOp::WriteZeroes { offset, len } => {
                    check(self.size(), offset, len)?;
                    ok_or_range(r.zero(offset, len))
                }
                IoOp::Deallocate { offset, len } => {
                    check(self.size(), offset, len)?;
                    ok_or_range(r.discard(offset, len))
                }
                _ => Ok(()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::run_blocking;

    fn read(b: &RamBackend, offset: u64, len: usize) -> Result<Vec<u8>, BackendError> {
        let d = run_blocking(
            b,
            IoOp::Read {
                offset,
                buf: vec![0xEE; len],
                at: 0,
                len,
            },
        );
        d.result.map(|()| d.buf)
    }

    #[test]
    fn ram_shared_reads_see_later_writes_through_the_same_memory() {
        let b = RamBackend::new(1 << 20).unwrap();
        let s = b.read_shared(4096, 512).expect("a shared read");
        let w = run_blocking(
            &b,
            IoOp::Write {
                offset: 4096,
                buf: vec![0x5A; 512],
                at: 0,
                len: 512,
            },
        );
        assert_eq!(w.result, Ok(()));
        let mut got = vec![0u8; 512];
        assert!(s.copy_to(&mut got));
        assert!(
            got.iter().all(|&x| x == 0x5A),
            "a slice is a view, not a copy"
        );
        assert!(b.read_shared((1 << 20) - 511, 512).is_none());
        assert!(b.read_shared(u64::MAX, 1).is_none());
    }

    #[test]
    fn ram_round_trip_zero_and_deallocate() {
        let b = RamBackend::new(1 << 20).unwrap();
        let w = run_blocking(
            &b,
            IoOp::Write {
                offset: 8192,
                buf: vec![5u8; 8192],
                at: 0,
                len: 8192,
            },
        );
        assert_eq!(w.result, Ok(()));
        assert!(read(&b, 8192, 8192).unwrap().iter().all(|&x| x == 5));
        run_blocking(
            &b,
            IoOp::WriteZeroes {
                offset: 8192,
                len: 512,
            },
        )
        .result
        .unwrap();
        let r = read(&b, 8192, 8192).unwrap();
        assert!(r[..512].iter().all(|&x| x == 0) && r[512] == 5);
        run_blocking(
            &b,
            IoOp::Deallocate {
                offset: 8192,
                len: 8192,
            },
        )
        .result
        .unwrap();
        assert!(read(&b, 8192, 8192).unwrap().iter().all(|&x| x == 0));
        assert_eq!(
            read(&b, (1 << 20) - 10, 8192),
            Err(BackendError::OutOfRange)
        );
        let z = run_blocking(
            &b,
            IoOp::WriteZeroes {
                offset: u64::MAX,
                len: 2,
            },
        );
        assert_eq!(z.result, Err(BackendError::OutOfRange));
        // A buffer shorter than the asked length is refused, not a panic.
        let d = run_blocking(
            &b,
            IoOp::Read {
                offset: 0,
                buf: vec![0; 4],
                at: 2,
                len: 4,
            },
        );
        assert_eq!(d.result, Err(BackendError::OutOfRange));
    }
}
