//! Physical Region Page (PRP) entries for a transfer: PRP1 points at the
//! first byte (any dword-aligned offset in its page), PRP2 at the second page
//! or, for more than two pages, at a list of the pages after the first.

/// The controller's memory page size this driver uses (CC.MPS = 0).
pub const PAGE: u64 = 4096;
/// Entries one PRP list page holds; transfers here never need a second
/// list page (the driver keeps MDTS at or under 2 MiB).
pub const LIST_ENTRIES: usize = (PAGE / 8) as usize;

/// PRP1 and PRP2 for `len` bytes (at least 1) at `iova`, contiguous in IOVA
/// space. When a list is needed its entries are put in `list` (cleared
/// first) and PRP2 is `list_iova`, where the caller writes them. `None`
/// when `iova` is not dword-aligned or the transfer needs more than one
/// list page.
pub fn build(iova: u64, len: u32, list_iova: u64, list: &mut Vec<u64>) -> Option<(u64, u64)> {
    list.clear();
    if !iova.is_multiple_of(4) || len == 0 {
        return None;
    }
    let first_page = iova & !(PAGE - 1);
    let end = iova + len as u64;
    let pages = (end - first_page).div_ceil(PAGE);
    match pages {
        1 => Some((iova, 0)),
        2 => Some((iova, first_page + PAGE)),
        n if (n - 1) as usize <= LIST_ENTRIES => {
            list.extend((1..n).map(|i| first_page + i * PAGE));
            Some((iova, list_iova))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_two_and_many_pages() {
        let mut l = Vec::new();
        assert_eq!(
            build(0x10_0000, 4096, 0xAA000, &mut l),
            Some((0x10_0000, 0))
        );
        assert!(l.is_empty());
        // 512 bytes at an offset: still one page.
        assert_eq!(build(0x10_0200, 512, 0xAA000, &mut l), Some((0x10_0200, 0)));
        // Crosses one page boundary: PRP2 is the next page.
        assert_eq!(
            build(0x10_0E00, 1024, 0xAA000, &mut l),
            Some((0x10_0E00, 0x10_1000))
        );
        assert_eq!(
            build(0x10_0000, 8192, 0xAA000, &mut l),
            Some((0x10_0000, 0x10_1000))
        );
        // 128 KiB aligned: 32 pages, a list of the 31 after the first.
        assert_eq!(
            build(0x10_0000, 128 << 10, 0xAA000, &mut l),
            Some((0x10_0000, 0xAA000))
        );
        assert_eq!(l.len(), 31);
        assert_eq!(l[0], 0x10_1000);
        assert_eq!(*l.last().unwrap(), 0x10_0000 + 31 * 4096);
        // Unaligned 128 KiB spans 33 pages.
        assert_eq!(
            build(0x10_0200, 128 << 10, 0xAA000, &mut l),
            Some((0x10_0200, 0xAA000))
        );
        assert_eq!(l.len(), 32);
        // 2 MiB aligned: 512 pages, 511 in the list; one more needs two lists.
        assert!(build(0x20_0000, 2 << 20, 0xAA000, &mut l).is_some());
        assert_eq!(l.len(), 511);
        assert!(build(0x20_0200, 2 << 20, 0xAA000, &mut l).is_some());
        assert_eq!(l.len(), 512);
        assert_eq!(build(0x20_0200, (2 << 20) + 4096, 0xAA000, &mut l), None);
        // Not dword-aligned, or empty.
        assert_eq!(build(0x10_0001, 512, 0xAA000, &mut l), None);
        assert_eq!(build(0x10_0000, 0, 0xAA000, &mut l), None);
    }
}
