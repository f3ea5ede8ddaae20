//! An anonymous memory region shared by threads: the RAM disk.
//!
//! Concurrent (even overlapping) reads and writes from several threads must be data-race free
//! in the Rust memory model; their content is unspecified, as NVMe allows. On x86_64 every
//! access is a `rep movsb` / `rep stosb` in inline assembly: an opaque sequence of byte-sized
//! accesses, each single-copy atomic on x86, so it behaves as relaxed `AtomicU8` loads and
//! stores would, at memcpy speed (measured 2x faster than word atomics for 128 KiB). Elsewhere
//! the same operations use relaxed `AtomicU64` words (a compare-and-swap for ragged edges).
//! The two are never mixed on one architecture. The kernel also reads and writes the region
//! (zero-copy sends of [`RegionSlice`]), outside the Rust model. Ordering between an I/O and
//! its completion comes from whatever carries the completion (channels, io_uring), not from
//! the region.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

const HUGE_PAGE: usize = 2 << 20;

/// An anonymous private mapping (`MAP_NORESERVE`: pages cost nothing until touched), usable
/// from many threads at once. Unmapped on drop.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    page: usize,
    huge: bool,
    /// A device holds the pages (an RDMA registration): they must stay where they are.
    pinned: std::sync::atomic::AtomicBool,
}

// SAFETY: the region is plain memory owned by this value; every access through `&self` is an
// atomic word operation, so sharing or moving it between threads cannot cause a data race.
unsafe impl Send for Region {}
// SAFETY: as above; there is no interior state besides the atomically accessed bytes.
unsafe impl Sync for Region {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn map(len: usize, flags: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: a new anonymous mapping at an address of the kernel's choice; it does not alias
    // any existing Rust object.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

impl Region {
    /// Maps `len` bytes of zeroed memory. With `NVMF_HUGEPAGES=1` in the environment and `len`
    /// a multiple of 2 MiB, 2 MiB huge pages are tried first (reserved up front, so a short
    /// pool fails here rather than with SIGBUS later); otherwise, or if that fails, normal
    /// pages with `MAP_NORESERVE`. `len == 0` is an `InvalidInput` error.
    pub fn new(len: usize) -> io::Result<Region> {
        Self::with_pages(
            len,
            std::env::var_os("NVMF_HUGEPAGES").is_some_and(|v| v == "1"),
        )
    }

    /// Maps `len` bytes for DMA: 2 MiB huge pages first whenever `len` is a multiple of 2 MiB
    /// and the pool has them (fewer IOMMU entries, pages that never move), else as
    /// [`new`](Self::new) does.
    pub fn new_dma(len: usize) -> io::Result<Region> {
        Self::with_pages(len, true)
    }

    fn with_pages(len: usize, try_huge: bool) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty memory region",
            ));
        }
        let want_huge = len.is_multiple_of(HUGE_PAGE) && try_huge;
        if want_huge {
            if let Some(ptr) = map(len, libc::MAP_HUGETLB | libc::MAP_HUGE_2MB) {
                return Ok(Region {
                    ptr,
                    len,
                    map_len: len,
                    page: HUGE_PAGE,
                    huge: true,
                    pinned: Default::default(),
                });
            }
        }
        let page = page_size();
        let map_len = len
            .checked_next_multiple_of(page)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        let ptr = map(map_len, libc::MAP_NORESERVE).ok_or_else(crate::last_error)?;
        // Transparent huge pages where the kernel offers them on request
        // (`madvise` mode): fewer faults and TLB misses for a RAM disk. Only
        // advice; failure changes nothing.
        // SAFETY: the range is exactly the mapping just created above.
        unsafe { libc::madvise(ptr.as_ptr().cast(), map_len, libc::MADV_HUGEPAGE) };
        Ok(Region {
            ptr,
            len,
            map_len,
            page,
            huge: false,
            pinned: Default::default(),
        })
    }

    /// How many of the region's pages are in memory (`mincore`): what it costs now.
    pub fn resident_pages(&self) -> io::Result<usize> {
        let sys_page = page_size();
        let mut vec = vec![0u8; self.map_len.div_ceil(sys_page)];
        // SAFETY: the range is exactly our mapping and `vec` has one byte per page of it, as
        // mincore requires; it only writes `vec`.
        let rc = unsafe { libc::mincore(self.ptr.as_ptr().cast(), self.map_len, vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(vec.iter().filter(|&&b| b & 1 != 0).count())
    }

    /// Records that a device now reaches the pages by their physical addresses (an RDMA
    /// memory registration pinned them): from here on [`discard`](Self::discard) zeroes the
    /// bytes instead of giving the pages back, since new pages would no longer be the ones
    /// the device reads and writes.
    pub fn set_pinned(&self) {
        self.pinned.store(true, Relaxed);
    }

    /// The virtual address of byte 0, as a number: what a device descriptor (an RDMA
    /// scatter/gather entry, a DMA mapping) names the memory by. Not a pointer: the bytes are
    /// still reached only through this region's methods.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as usize as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a region is never empty); provided for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the region is backed by 2 MiB huge pages.
    pub fn is_hugepage(&self) -> bool {
        self.huge
    }

    /// The whole mapping as atomic words.
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page aligned (so 8-byte aligned), `map_len` (a multiple of the
        // page size, so of 8) bytes long, readable and writable, and lives as long as `self`.
        // All bit patterns are valid `u64`s, and the memory is only ever accessed through
        // atomics (or by the kernel), so shared references to `AtomicU64` are sound.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.map_len / 8) }
    }

    /// The 8-byte word at `offset` (a multiple of 8), read with one atomic load with acquire
    /// ordering: what a device wrote into it is seen whole, and reads after this one see what
    /// the device wrote before it. `None` if out of bounds or unaligned.
    pub fn load_u64(&self, offset: u64) -> Option<u64> {
        let off = self.check(offset, 8)?;
        if off % 8 != 0 {
            return None;
        }
        Some(self.words()[off / 8].load(std::sync::atomic::Ordering::Acquire))
    }

    /// `offset` as a usize if `offset..offset+len` is inside the region.
    fn check(&self, offset: u64, len: u64) -> Option<usize> {
        let end = offset.checked_add(len)?;
        if end > self.len as u64 {
            return None;
        }
        usize::try_from(offset).ok()
    }

    /// Splits `off..off+len` (in bounds) into a ragged head inside one word, whole words,
    /// and a ragged tail.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn parts(&self, off: usize, len: usize) -> Parts<'_> {
        let words = self.words();
        let head_len = ((8 - off % 8) % 8).min(len);
        let first = (off + head_len) / 8;
        let n = (len - head_len) / 8;
        let tail_len = len - head_len - 8 * n;
        Parts {
            head: (head_len > 0).then(|| (&words[off / 8], off % 8)),
            head_len,
            body: &words[first..first + n],
            tail: (tail_len > 0).then(|| &words[first + n]),
        }
    }

    /// Stores `bytes` into `word[b..b+bytes.len()]` without touching its other bytes.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn store_part(word: &AtomicU64, b: usize, bytes: &[u8]) {
        let _ = word.fetch_update(Relaxed, Relaxed, |old| {
            let mut v = old.to_ne_bytes();
            v[b..b + bytes.len()].copy_from_slice(bytes);
            Some(u64::from_ne_bytes(v))
        });
    }

    /// Copies `dst.len()` bytes at `offset` into `dst`; false (and nothing copied) if out of
    /// bounds.
    pub fn read(&self, offset: u64, dst: &mut [u8]) -> bool {
        let Some(off) = self.check(offset, dst.len() as u64) else {
            return false;
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `off..off + dst.len()` is inside the mapping (checked above); `dst` is an
        // exclusive buffer outside it (no Rust reference into the mapping exists).
        unsafe {
            bytes::copy(dst.as_mut_ptr(), self.ptr.as_ptr().add(off), dst.len())
        };
        #[cfg(not(target_arch = "x86_64"))]
        self.read_words(off, dst);
        true
    }

    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn read_words(&self, off: usize, dst: &mut [u8]) {
        let p = self.parts(off, dst.len());
        let (head, rest) = dst.split_at_mut(p.head_len);
        let (body, tail) = rest.split_at_mut(8 * p.body.len());
        if let Some((w, b)) = p.head {
            head.copy_from_slice(&w.load(Relaxed).to_ne_bytes()[b..b + head.len()]);
        }
        for (d, w) in body.chunks_exact_mut(8).zip(p.body) {
            d.copy_from_slice(&w.load(Relaxed).to_ne_bytes());
        }
        if let Some(w) = p.tail {
            tail.copy_from_slice(&w.load(Relaxed).to_ne_bytes()[..tail.len()]);
        }
    }

    /// Copies `src` to `offset`; false (and nothing written) if out of bounds.
    pub fn write(&self, offset: u64, src: &[u8]) -> bool {
        let Some(off) = self.check(offset, src.len() as u64) else {
            return false;
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `off..off + src.len()` is inside the mapping (checked above); `src` is a
        // shared buffer outside it.
        unsafe {
            bytes::copy(self.ptr.as_ptr().add(off), src.as_ptr(), src.len())
        };
        #[cfg(not(target_arch = "x86_64"))]
        self.write_words(off, src);
        true
    }

    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn write_words(&self, off: usize, src: &[u8]) {
        let p = self.parts(off, src.len());
        let (head, rest) = src.split_at(p.head_len);
        let (body, tail) = rest.split_at(8 * p.body.len());
        if let Some((w, b)) = p.head {
            Self::store_part(w, b, head);
        }
        for (s, w) in body.chunks_exact(8).zip(p.body) {
            let mut v = [0u8; 8];
            v.copy_from_slice(s);
            w.store(u64::from_ne_bytes(v), Relaxed);
        }
        if let Some(w) = p.tail {
            Self::store_part(w, 0, tail);
        }
    }

    /// Sets `len` bytes at `offset` to zero; false if out of bounds.
    pub fn zero(&self, offset: u64, len: u64) -> bool {
        let Some(off) = self.check(offset, len) else {
            return false;
        };
        self.zero_range(off, len as usize);
        true
    }

    /// Zeroes `off..off + len`, which the caller has checked is inside the region.
    fn zero_range(&self, off: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(off.checked_add(len).is_some_and(|end| end <= self.len));
            // SAFETY: the range is inside the mapping (asserted above).
            unsafe { bytes::zero(self.ptr.as_ptr().add(off), len) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.zero_words(off, len);
    }

    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn zero_words(&self, off: usize, len: usize) {
        let p = self.parts(off, len);
        if let Some((w, b)) = p.head {
            Self::store_part(w, b, &[0; 8][..p.head_len]);
        }
        for w in p.body {
            w.store(0, Relaxed);
        }
        if let Some(w) = p.tail {
            let tail_len = len - p.head_len - 8 * p.body.len();
            Self::store_part(w, 0, &[0; 8][..tail_len]);
        }
    }

    /// Like [`zero`](Self::zero), but the whole pages inside the range are given back to the
    /// kernel with `madvise(MADV_DONTNEED)` (they read as zeros afterwards and cost no memory);
    /// the partial pages at the edges are zeroed. False if out of bounds.
    pub fn discard(&self, offset: u64, len: u64) -> bool {
        let Some(off) = self.check(offset, len) else {
            return false;
        };
        let end = off + len as usize;
        let first = off.next_multiple_of(self.page);
        let last = end - end % self.page;
        if first >= last || self.pinned.load(Relaxed) {
            self.zero_range(off, end - off);
            return true;
        }
        // SAFETY: `first..last` is a page-aligned range inside our private anonymous mapping;
        // dropping those pages only makes them read as zeros, which every byte pattern allows,
        // and no Rust reference into them assumes anything about their content.
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(first).cast(),
                last - first,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            self.zero_range(first, last - first);
        }
        self.zero_range(off, first - off);
        self.zero_range(last, end - last);
        true
    }
}

/// `len` bytes of a shared [`Region`] at some offset, keeping the region alive: the handle for
/// sending region bytes to a socket, or receiving into them, without copying them through a
/// buffer (see [`crate::ring::SendBuf`] and [`crate::ring::Op::RecvRegion`]). Other
/// threads may write those bytes at any time, so the bytes themselves are only reachable
/// through copies ([`copy_to`](Self::copy_to)) or the kernel.
#[derive(Clone)]
pub struct RegionSlice {
    region: Arc<Region>,
    off: usize,
    len: usize,
    /// Held as long as the slice or a clone of it lives: a lease on the bytes (a buffer pool
    /// takes them back when the last holder is gone).
    keep: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for RegionSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionSlice")
            .field("off", &self.off)
            .field("len", &self.len)
            .field("leased", &self.keep.is_some())
            .finish()
    }
}

impl RegionSlice {
    /// The range `offset..offset + len` of `region`, or `None` if it is out of bounds.
    pub fn new(region: Arc<Region>, offset: u64, len: usize) -> Option<RegionSlice> {
        let off = region.check(offset, len as u64)?;
        Some(RegionSlice {
            region,
            off,
            len,
            keep: None,
        })
    }

    /// The same range, holding `lease` until the slice and all its clones are dropped.
    pub fn with_lease(mut self, lease: Arc<dyn std::any::Any + Send + Sync>) -> RegionSlice {
        self.keep = Some(lease);
        self
    }

    /// Whether the slice holds a lease (its bytes go back to a pool when it is dropped).
    pub fn is_leased(&self) -> bool {
        self.keep.is_some()
    }

    /// The region the range is in.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Where the range starts in its region.
    pub fn offset(&self) -> u64 {
        self.off as u64
    }

    /// Start of the range, for an iovec handed to the kernel.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        // SAFETY: `off + len <= region.len <= map_len`, so the result stays inside (or one past)
        // the mapping, which lives as long as the `Arc` held here.
        unsafe { self.region.ptr.as_ptr().add(self.off) }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the range, for an iovec the kernel writes into (a receive).
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.as_ptr().cast_mut()
    }

    /// Copies the bytes into `dst` (which must be exactly `len()` long; false otherwise).
    pub fn copy_to(&self, dst: &mut [u8]) -> bool {
        dst.len() == self.len && self.region.read(self.off as u64, dst)
    }

    /// Copies `src` into the range at `at` (false, copying nothing, if it does not fit).
    pub fn copy_from(&self, at: usize, src: &[u8]) -> bool {
        match at.checked_add(src.len()) {
            Some(end) if end <= self.len => self.region.write((self.off + at) as u64, src),
            _ => false,
        }
    }
}

/// Byte copies and fills in inline assembly (see the module docs for why).
#[cfg(target_arch = "x86_64")]
mod bytes {
    /// Copies `n` bytes from `src` to `dst` with `rep movsb`.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `n` bytes, the two not overlapping,
    /// and no Rust reference may cover bytes of `dst` that others can observe.
    pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: per the caller's contract the instruction touches exactly `src..src+n` and
        // `dst..dst+n`; the direction flag is clear at any Rust code boundary (asm! requires it),
        // so it copies upwards; the registers it consumes are declared clobbered.
        unsafe {
            core::arch::asm!(
                "rep movsb",
                inout("rcx") n => _,
                inout("rdi") dst => _,
                inout("rsi") src => _,
                options(nostack, preserves_flags)
            )
        };
    }

    /// Sets `n` bytes at `dst` to zero with `rep stosb`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `n` bytes, with no Rust reference covering them.
    pub(super) unsafe fn zero(dst: *mut u8, n: usize) {
        // SAFETY: per the caller's contract the instruction writes exactly `dst..dst+n` (upwards,
        // the direction flag being clear); its registers are declared clobbered.
        unsafe {
            core::arch::asm!(
                "rep stosb",
                inout("rcx") n => _,
                inout("rdi") dst => _,
                in("al") 0u8,
                options(nostack, preserves_flags)
            )
        };
    }
}

/// A range of a region cut at word boundaries.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
struct Parts<'a> {
    /// The word holding the first bytes, and the first byte's index in it.
    head: Option<(&'a AtomicU64, usize)>,
    head_len: usize,
    body: &'a [AtomicU64],
    /// The word holding the last bytes (from its byte 0).
    tail: Option<&'a AtomicU64>,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+map_len` is exactly the mapping created in `new`, and `&mut self`
        // proves no borrow of it is alive (a `RegionSlice` holds an `Arc`, so none is).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}
