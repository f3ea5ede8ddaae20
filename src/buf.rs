//! Data buffers: one pool per reactor, shared by that reactor's queues and
//! transport connections. A handle is an `Rc`: a pool never leaves the
//! reactor thread that made it, so taking and returning a buffer is a plain
//! push or pop, with no lock and no atomic.

use std::cell::RefCell;
use std::rc::Rc;

/// Buffers at least this large are pooled apart from small ones, so PDU
/// and response buffers do not take them and lose their length.
pub const BIG_BUF: usize = 32 * 1024;
/// Small buffers kept for reuse per reactor.
const SMALL_KEPT: usize = 1024;
/// Large buffers kept for reuse per reactor (at 128 KiB, 32 MiB).
const BIG_KEPT: usize = 256;

#[derive(Default)]
struct Pool {
    small: Vec<Vec<u8>>,
    big: Vec<Vec<u8>>,
}

/// A handle to a reactor's buffer pool.
#[derive(Clone, Default)]
pub struct Buffers(Rc<RefCell<Pool>>);

impl Buffers {
    pub fn new() -> Buffers {
        Buffers::default()
    }

    /// An empty buffer (length 0) for output to be appended to.
    pub fn alloc(&self) -> Vec<u8> {
        let mut b = self.0.borrow_mut().small.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// A buffer of `len` bytes for data that will overwrite all of it: its
    /// contents are whatever it last held (only bytes beyond its recycled
    /// length are zeroed), which saves zeroing 128 KiB per large write.
    pub fn alloc_len(&self, len: usize) -> Vec<u8> {
        let mut p = self.0.borrow_mut();
        let pool = if len >= BIG_BUF {
            &mut p.big
        } else {
            &mut p.small
        };
        let mut b = pool.pop().unwrap_or_default();
        drop(p);
        b.resize(len, 0);
        b
    }

    /// Returns a buffer (its length is kept, see [`alloc_len`](Self::alloc_len)).
    pub fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let mut p = self.0.borrow_mut();
        let (pool, kept) = if buf.capacity() >= BIG_BUF {
            (&mut p.big, BIG_KEPT)
        } else {
            (&mut p.small, SMALL_KEPT)
        };
        if pool.len() < kept {
            pool.push(buf);
        }
    }

    /// Buffers waiting for reuse (small, large).
    pub fn kept(&self) -> (usize, usize) {
        let p = self.0.borrow();
        (p.small.len(), p.big.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_by_size_and_bounded() {
        let b = Buffers::new();
        let big = b.alloc_len(128 * 1024);
        let ptr = big.as_ptr();
        b.recycle(big);
        // A small request does not take the large buffer.
        let small = b.alloc_len(512);
        assert_ne!(small.as_ptr(), ptr);
        let again = b.alloc_len(64 * 1024);
        assert_eq!(again.as_ptr(), ptr, "the large buffer is reused");
        assert_eq!(again.len(), 64 * 1024);
        b.recycle(again);
        b.recycle(small);
        assert_eq!(b.kept(), (1, 1));
        for _ in 0..BIG_KEPT + 10 {
            b.recycle(vec![0u8; BIG_BUF]);
        }
        assert_eq!(b.kept().1, BIG_KEPT);
        // Handles share one pool.
        let h = b.clone();
        assert_eq!(h.alloc().len(), 0);
        assert_eq!(b.kept().0, 0);
    }
}
