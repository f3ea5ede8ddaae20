//! Hugepage request (own test binary, since it sets an environment variable).

use nvmf_sys::Region;

#[test]
fn hugepage_request_falls_back_or_works() {
    std::env::set_var("NVMF_HUGEPAGES", "1");
    let len = 4 << 20;
    let free: u64 =
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
    let r = Region::new(len).unwrap();
    // With a free pool of 2 MiB pages the mapping uses it; without, it falls back silently.
    assert_eq!(r.is_hugepage(), free >= 2);
    assert!(r.write(0, b"head"));
    assert!(r.write((2 << 20) - 2, b"span"));
    assert!(r.write(len as u64 - 4, b"tail"));
    // The first (huge) page is released, one byte after it zeroed.
    assert!(r.discard(0, (2 << 20) + 1));
    let mut buf = [0u8; 4];
    for (off, want) in [
        (0, b"\0\0\0\0"),
        ((2 << 20) - 2, b"\0\0\0n"),
        (len as u64 - 4, b"tail"),
    ] {
        assert!(r.read(off, &mut buf));
        assert_eq!(&buf, want);
    }
    // Not a multiple of 2 MiB: never hugepages.
    assert!(!Region::new(len + 4096).unwrap().is_hugepage());
}
