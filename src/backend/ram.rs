//! RAM backend: an anonymous memory region, allocated lazily by the kernel.

use super::{check, Backend, BackendError, BackendResult};
use nvmf_sys::mem::Region;

pub struct RamBackend {
    region: Region,
}

impl RamBackend {
    pub fn new(size: u64) -> std::io::Result<RamBackend> {
        let len = usize::try_from(size)
            .map_err(|_| std::io::Error::other("RAM namespace larger than the address space"))?;
        Ok(RamBackend {
            region: Region::new(len)?,
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
    fn read(&self, offset: u64, buf: &mut [u8]) -> BackendResult {
        ok_or_range(self.region.read(offset, buf))
    }
    fn write(&self, offset: u64, data: &[u8]) -> BackendResult {
        ok_or_range(self.region.write(offset, data))
    }
    fn flush(&self) -> BackendResult {
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> BackendResult {
        check(self.size(), offset, len)?;
        ok_or_range(self.region.zero(offset, len))
    }
    fn deallocate(&self, offset: u64, len: u64) -> BackendResult {
        check(self.size(), offset, len)?;
        ok_or_range(self.region.discard(offset, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_round_trip_zero_and_deallocate() {
        let b = RamBackend::new(1 << 20).unwrap();
        b.write(8192, &[5u8; 8192]).unwrap();
        let mut r = vec![0u8; 8192];
        b.read(8192, &mut r).unwrap();
        assert!(r.iter().all(|&x| x == 5));
        b.write_zeroes(8192, 512).unwrap();
        b.read(8192, &mut r).unwrap();
        assert!(r[..512].iter().all(|&x| x == 0) && r[512] == 5);
        b.deallocate(8192, 8192).unwrap();
        b.read(8192, &mut r).unwrap();
        assert!(r.iter().all(|&x| x == 0));
        assert_eq!(
            b.read((1 << 20) - 10, &mut r),
            Err(BackendError::OutOfRange)
        );
        assert_eq!(b.write_zeroes(u64::MAX, 2), Err(BackendError::OutOfRange));
    }
}
