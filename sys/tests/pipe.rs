//! Pipe tests: bytes and region pages spliced into a TCP socket, in order.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nvmf_sys::{Pipe, Region, RegionSlice};

#[test]
fn bytes_and_region_pages_reach_the_socket_in_order() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut rx, _) = l.accept().unwrap();
    let region = Arc::new(Region::new(1 << 20).unwrap());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    assert!(region.write(1000, &data));
    let pipe = Pipe::new(1 << 20).unwrap();
    assert!(pipe.capacity() >= 4096);
    // A header, 100,000 region bytes from an unaligned offset (starting 7 bytes in), a trailer.
    let s = RegionSlice::new(region.clone(), 1000, 100_007).unwrap();
    let mut want = b"header".to_vec();
    let mut expect_len = 0;
    expect_len += pipe.put_bytes(b"header").unwrap();
    let mut at = 7;
    while at < s.len() {
        let n = pipe.put_region(&s, at).unwrap();
        if n == 0 {
            // Full (a small pipe): drain it into the socket and go on.
            let mut left = expect_len;
            while left > 0 {
                left -= pipe.splice_to(tx.as_raw_fd(), left).unwrap();
            }
            expect_len = 0;
            continue;
        }
        expect_len += n;
        at += n;
    }
    want.extend_from_slice(&data[7..100_007]);
    expect_len += pipe.put_bytes(b"trailer").unwrap();
    want.extend_from_slice(b"trailer");
    let mut left = expect_len;
    while left > 0 {
        let n = pipe.splice_to(tx.as_raw_fd(), left).unwrap();
        assert!(n > 0, "the socket has room for this much");
        left -= n;
    }
    drop(tx);
    let mut got = Vec::new();
    rx.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "bytes differ");
    // Out of range and empty puts put nothing.
    assert_eq!(pipe.put_region(&s, s.len()).unwrap(), 0);
    assert_eq!(pipe.put_bytes(b"").unwrap(), 0);
}

#[test]
fn a_full_pipe_takes_nothing_more() {
    let pipe = Pipe::new(4096).unwrap();
    let cap = pipe.capacity();
    let big = vec![1u8; cap * 2];
    let n = pipe.put_bytes(&big).unwrap();
    assert!(n > 0 && n <= cap, "{n} of {cap}");
    let mut more = 0;
    while let Ok(k) = pipe.put_bytes(&big) {
        if k == 0 {
            break;
        }
        more += k;
        assert!(n + more <= cap, "more than the capacity went in");
    }
    let region = Arc::new(Region::new(1 << 16).unwrap());
    let s = RegionSlice::new(region, 0, 1 << 16).unwrap();
    assert_eq!(pipe.put_region(&s, 0).unwrap(), 0);
}
