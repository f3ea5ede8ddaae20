//! Null backend: reads return zeros, writes are dropped. For benchmarks.

use super::{check, Backend, BackendResult};

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
    fn read(&self, offset: u64, buf: &mut [u8]) -> BackendResult {
        check(self.size, offset, buf.len() as u64)?;
        buf.fill(0);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> BackendResult {
        check(self.size, offset, data.len() as u64)
    }
    fn flush(&self) -> BackendResult {
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> BackendResult {
        check(self.size, offset, len)
    }
    fn deallocate(&self, offset: u64, len: u64) -> BackendResult {
        check(self.size, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;

    #[test]
    fn null_reads_zeros_and_checks_range() {
        let b = NullBackend::new(4096);
        b.write(0, &[1u8; 512]).unwrap();
        let mut r = vec![9u8; 512];
        b.read(0, &mut r).unwrap();
        assert!(r.iter().all(|&x| x == 0));
        assert_eq!(b.write(4000, &[0u8; 512]), Err(BackendError::OutOfRange));
    }
}
