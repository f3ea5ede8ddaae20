//! Region tests: read/write/zero/discard, bounds, concurrency, a 1 GiB lazy region.

use std::sync::Arc;

use nvmf_sys::{Region, RegionSlice};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn read(r: &Region, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xEE; len];
    assert!(r.read(off, &mut v));
    v
}

#[test]
fn read_write_unaligned_and_overlapping() {
    let r = Region::new(1 << 20).unwrap();
    assert_eq!(r.len(), 1 << 20);
    assert!(!r.is_empty());
    assert!(read(&r, 0, 4096).iter().all(|&b| b == 0));
    // Unaligned start and end, shorter than a word, and spanning words.
    for (off, len) in [(3u64, 100usize), (1000, 1), (2001, 7), (4093, 4096), (8, 8)] {
        let p = pattern(len, off as u8);
        assert!(r.write(off, &p));
        assert_eq!(read(&r, off, len), p);
        // Neighbours are untouched.
        assert_eq!(read(&r, off - 1, 1), [0]);
        assert_eq!(read(&r, off + len as u64, 1), [0]);
        assert!(r.zero(off, len as u64));
    }
    // Overlapping writes: the later one wins.
    assert!(r.write(10, &[1; 20]));
    assert!(r.write(15, &[2; 5]));
    let got = read(&r, 10, 20);
    assert_eq!(&got[..5], &[1; 5]);
    assert_eq!(&got[5..10], &[2; 5]);
    assert_eq!(&got[10..], &[1; 10]);
    // Empty accesses at the very end are in bounds.
    assert!(r.write(1 << 20, &[]));
    assert!(r.read(1 << 20, &mut []));
}

#[test]
fn out_of_bounds_is_refused_without_effect() {
    let r = Region::new(4099).unwrap(); // not a multiple of the page or word size
    assert_eq!(r.len(), 4099);
    assert!(r.write(4091, &[7; 8]));
    assert_eq!(read(&r, 4091, 8), [7; 8]);
    let mut buf = [0u8; 8];
    assert!(!r.read(4092, &mut buf));
    assert!(!r.write(4092, &[9; 8]));
    assert!(!r.write(u64::MAX, &[1]));
    assert!(!r.read(u64::MAX - 2, &mut buf));
    assert!(!r.zero(4000, 100));
    assert!(!r.zero(1, u64::MAX));
    assert!(!r.discard(0, 4100));
    assert!(!r.discard(u64::MAX, 1));
    let r = Arc::new(r);
    assert!(RegionSlice::new(r.clone(), 4098, 2).is_none());
    assert!(RegionSlice::new(r.clone(), u64::MAX, 0).is_none());
    assert_eq!(read(&r, 4091, 8), [7; 8]);
    let s = RegionSlice::new(r.clone(), 4091, 8).unwrap();
    assert_eq!(s.len(), 8);
    assert!(!s.is_empty());
    let mut out = [0u8; 8];
    assert!(s.copy_to(&mut out));
    assert_eq!(out, [7; 8]);
    assert!(
        !s.copy_to(&mut [0u8; 7]),
        "a destination of the wrong length is refused"
    );
    assert!(Region::new(0).is_err());
}

#[test]
fn zero_and_discard() {
    let page = 4096;
    let r = Region::new(16 * page).unwrap();
    let p = pattern(16 * page, 5);
    assert!(r.write(0, &p));
    assert!(r.zero(100, 5000));
    let got = read(&r, 0, 16 * page);
    assert_eq!(&got[..100], &p[..100]);
    assert!(got[100..5100].iter().all(|&b| b == 0));
    assert_eq!(&got[5100..], &p[5100..]);

    // Discard partial page + 3 whole pages + partial page; then a range inside one page.
    assert!(r.write(0, &p));
    let (off, len) = (page as u64 + 123, 4 * page as u64);
    assert!(r.discard(off, len));
    assert!(r.discard(10 * page as u64 + 1, 10));
    let got = read(&r, 0, 16 * page);
    let (s, e) = (off as usize, (off + len) as usize);
    assert_eq!(&got[..s], &p[..s]);
    assert!(got[s..e].iter().all(|&b| b == 0));
    assert_eq!(&got[e..10 * page + 1], &p[e..10 * page + 1]);
    assert!(got[10 * page + 1..10 * page + 11].iter().all(|&b| b == 0));
    assert_eq!(&got[10 * page + 11..], &p[10 * page + 11..]);
    // Discarded pages are usable again.
    assert!(r.write(2 * page as u64, b"again"));
    assert_eq!(read(&r, 2 * page as u64, 5), b"again");
}

#[test]
fn a_pinned_region_is_zeroed_not_released_on_discard() {
    // 8 MiB; 4 MiB discarded at 2 MiB (whole pages, huge or not).
    let mib = 1u64 << 20;
    let len = 8 * mib as usize;
    for pinned in [false, true] {
        let r = Region::new(len).unwrap();
        assert!(r.write(0, &vec![7u8; len]));
        let resident = r.resident_pages().unwrap();
        assert!(
            resident * 4096 >= len,
            "{resident} pages resident after writing all"
        );
        if pinned {
            r.set_pinned();
        }
        assert!(r.discard(2 * mib, 4 * mib));
        // Unpinned, the 4 MiB go back to the kernel; pinned, they stay (a
        // device holds them) and are zeroed in place. (Counted before the
        // read below, which maps the zero page over what was given back.)
        let after = r.resident_pages().unwrap();
        if pinned {
            assert_eq!(after, resident, "pinned pages were given back");
        } else {
            assert_eq!(after, resident - 1024, "discarded pages still resident");
        }
        let got = read(&r, 0, len);
        assert!(got[..2 << 20].iter().all(|&b| b == 7));
        assert!(got[2 << 20..6 << 20].iter().all(|&b| b == 0));
        assert!(got[6 << 20..].iter().all(|&b| b == 7));
    }
}

#[test]
fn discard_releases_memory() {
    let len = 64 << 20;
    let r = Region::new(len).unwrap();
    let rss = || -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    };
    let before = rss();
    let chunk = vec![0x5Au8; 1 << 20];
    for i in 0..64u64 {
        assert!(r.write(i << 20, &chunk));
    }
    let touched = rss();
    assert!(r.discard(0, len as u64));
    let after = rss();
    // Other tests run concurrently, so only require most of the 64 MiB to come and go.
    assert!(touched > before + (48 << 20), "{before} {touched}");
    assert!(after + (48 << 20) < touched, "{touched} {after}");
    assert!(read(&r, 0, 1 << 20).iter().all(|&b| b == 0));
}

#[test]
fn one_gib_region_is_lazy() {
    let rss = || -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    };
    let before = rss();
    let r = Region::new(1 << 30).unwrap();
    // Nothing is touched until written (other tests in this process may
    // grow it meanwhile, but not by a gibibyte).
    assert!(rss() < before + (256 << 20), "{} -> {}", before, rss());
    assert!(!r.is_hugepage());
    assert_eq!(r.len(), 1 << 30);
    let last = (1u64 << 30) - 8;
    assert!(r.write(last, b"lastword"));
    assert_eq!(read(&r, last, 8), b"lastword");
    assert!(read(&r, 512 << 20, 4096).iter().all(|&b| b == 0));
}

#[test]
fn shared_between_threads() {
    let r = Arc::new(Region::new(8 << 20).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                // Each thread owns every 4th 4 KiB block; edges are unaligned on purpose.
                for blk in (t as u64..2048).step_by(4) {
                    let p = pattern(4096 - 6, t);
                    assert!(r.write(blk * 4096 + 3, &p));
                }
                // Everybody also hammers one shared word range; content is unspecified.
                for _ in 0..1000 {
                    r.write(8 << 19, &[t; 13]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for blk in 0..2048u64 {
        if blk * 4096 <= 4 << 20 && 4 << 20 < (blk + 1) * 4096 {
            continue;
        }
        let p = pattern(4096 - 6, (blk % 4) as u8);
        assert_eq!(read(&r, blk * 4096 + 3, 4096 - 6), p, "block {blk}");
    }
    let shared = read(&r, 4 << 20, 13);
    assert!(shared.iter().all(|&b| b < 4));
}

#[test]
fn every_small_offset_and_length_matches_a_model() {
    let r = Region::new(64).unwrap();
    let mut model = vec![0u8; 64];
    let mut seed = 1u8;
    for off in 0..24usize {
        for len in 0..40usize {
            seed = seed.wrapping_add(1);
            let p = pattern(len, seed);
            assert!(r.write(off as u64, &p));
            model[off..off + len].copy_from_slice(&p);
            assert_eq!(read(&r, 0, 64), model, "write {off}+{len}");
            assert_eq!(read(&r, off as u64, len), p);
            if len % 3 == 0 {
                assert!(r.zero(off as u64 + 1, len as u64 / 2));
                model[off + 1..off + 1 + len / 2].fill(0);
                assert_eq!(read(&r, 0, 64), model, "zero {off}+{len}");
            }
        }
    }
}
