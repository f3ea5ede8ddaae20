//! Ring tests: TCP loopback, files, timeouts, eventfd wake-ups, bounds, SQ overflow, drop.
#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nvmf_sys::file::{open_file, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
use nvmf_sys::{Completion, EventFd, Op, Region, RegionSlice, Ring, SendBuf};
use std::sync::Arc;

fn bytes_of(bufs: &[SendBuf]) -> Vec<Vec<u8>> {
    bufs.iter()
        .map(|b| {
            let mut v = Vec::new();
            b.extend_into(&mut v);
            v
        })
        .collect()
}

/// Pushes `op` and waits (up to 5 s) for its completion.
fn run(ring: &mut Ring, op: Op, token: u64) -> Completion {
    ring.push(op, token).unwrap();
    wait_for(ring, token)
}

fn wait_for(ring: &mut Ring, token: u64) -> Completion {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    loop {
        ring.submit_and_wait(Some(Duration::from_millis(100)))
            .unwrap();
        ring.drain(&mut out);
        if let Some(i) = out.iter().position(|c| c.token == token) {
            assert_eq!(out.len(), 1, "unexpected extra completions: {out:?}");
            return out.swap_remove(i);
        }
        assert!(Instant::now() < deadline, "op {token} did not complete");
    }
}

/// A connected pair: (server fd accepted through the ring, client stream).
fn tcp_pair(ring: &mut Ring) -> (OwnedFd, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.push(
        Op::Accept {
            fd: listener.as_raw_fd(),
        },
        1,
    )
    .unwrap();
    ring.submit().unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = wait_for(ring, 1);
    assert!(c.result >= 0, "accept failed: {}", c.result);
    assert!(c.buf.is_none());
    // SAFETY: a successful Accept returns a new fd that nothing else owns.
    let server = unsafe { OwnedFd::from_raw_fd(c.result) };
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (server, client)
}

#[test]
fn tcp_send_recv_round_trip_with_offsets() {
    let mut ring = Ring::new(8).unwrap();
    let (server, mut client) = tcp_pair(&mut ring);
    let fd = server.as_raw_fd();

    // Send buf[6..11] only.
    let c = run(
        &mut ring,
        Op::Send {
            fd,
            buf: b"hello world!".to_vec(),
            offset: 6,
            len: 5,
        },
        2,
    );
    assert_eq!(c.result, 5);
    assert_eq!(c.buf.as_deref(), Some(&b"hello world!"[..]));
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"world");

    // Recv into buf[4..]; the first 4 bytes must stay untouched.
    client.write_all(b"ping data").unwrap();
    let c = run(
        &mut ring,
        Op::Recv {
            fd,
            buf: vec![0xAA; 16],
            offset: 4,
        },
        3,
    );
    assert_eq!(c.result, 9);
    let buf = c.buf.unwrap();
    assert_eq!(&buf[..4], &[0xAA; 4]);
    assert_eq!(&buf[4..13], b"ping data");
    assert_eq!(&buf[13..], &[0xAA; 3]);

    // Recv into a partial buffer: only len - offset bytes are taken, the rest stays queued.
    client.write_all(b"0123456789").unwrap();
    let c = run(
        &mut ring,
        Op::Recv {
            fd,
            buf: vec![0; 8],
            offset: 4,
        },
        4,
    );
    assert_eq!(c.result, 4);
    assert_eq!(&c.buf.unwrap()[4..], b"0123");
    let c = run(
        &mut ring,
        Op::Recv {
            fd,
            buf: vec![0; 6],
            offset: 0,
        },
        5,
    );
    assert_eq!(c.result, 6);
    assert_eq!(c.buf.unwrap(), b"456789");

    // Peer closes: recv returns 0.
    drop(client);
    let c = run(
        &mut ring,
        Op::Recv {
            fd,
            buf: vec![0; 4],
            offset: 0,
        },
        6,
    );
    assert_eq!(c.result, 0);
    // Send to a closed peer fails with an errno instead of raising SIGPIPE.
    let mut errors = 0;
    for t in 0..4 {
        let c = run(
            &mut ring,
            Op::Send {
                fd,
                buf: vec![1; 4096],
                offset: 0,
                len: 4096,
            },
            100 + t,
        );
        if c.result < 0 {
            assert!(c.result == -libc::EPIPE || c.result == -libc::ECONNRESET);
            errors += 1;
        }
    }
    assert!(errors > 0);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn sendv_gathers_buffers_and_returns_them() {
    let mut ring = Ring::new(8).unwrap();
    let (server, mut client) = tcp_pair(&mut ring);
    let bufs = vec![
        b"XXhead".to_vec(),
        b"-middle-".to_vec(),
        vec![],
        b"tail".to_vec(),
    ];
    let c = run(
        &mut ring,
        Op::SendV {
            fd: server.as_raw_fd(),
            bufs: bufs.iter().cloned().map(SendBuf::from).collect(),
            first_offset: 2,
        },
        7,
    );
    assert_eq!(c.result, 16);
    assert_eq!(bytes_of(&c.bufs), bufs);
    assert!(c.buf.is_none());
    let mut got = [0u8; 16];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"head-middle-tail");

    // A large gather, many times, reusing the slot (and its iovec array).
    let big: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1000 + i as usize]).collect();
    let expected: Vec<u8> = big.concat();
    let reader = std::thread::spawn(move || {
        let mut all = vec![0u8; expected.len() * 3];
        client.read_exact(&mut all).unwrap();
        all.chunks(expected.len()).all(|c| c == expected)
    });
    let mut bufs: Vec<SendBuf> = big.into_iter().map(SendBuf::from).collect();
    for round in 0..3 {
        let c = run(
            &mut ring,
            Op::SendV {
                fd: server.as_raw_fd(),
                bufs,
                first_offset: 0,
            },
            10 + round,
        );
        let total: usize = c.bufs.iter().map(SendBuf::len).sum();
        assert_eq!(c.result as usize, total);
        bufs = c.bufs;
    }
    assert!(reader.join().unwrap());
}

#[test]
fn sendv_sends_region_bytes_without_copying_them() {
    let mut ring = Ring::new(8).unwrap();
    let (server, mut client) = tcp_pair(&mut ring);
    let region = Arc::new(Region::new(1 << 20).unwrap());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert!(region.write(12_345, &data));
    let slice = RegionSlice::new(region.clone(), 12_345, data.len()).unwrap();
    assert!(RegionSlice::new(region.clone(), (1 << 20) - 10, 11).is_none());
    assert!(RegionSlice::new(region.clone(), u64::MAX, 1).is_none());
    let expected: Vec<u8> = [b"hdr".as_slice(), &data[5..], b"ddgst"].concat();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).unwrap();
        got == expected
    });
    // The slice first (starting 5 bytes in), then owned bytes, as a resumed send would be.
    let mut bufs = vec![SendBuf::Region(slice.clone()), b"ddgst".to_vec().into()];
    let c = run(
        &mut ring,
        Op::SendV {
            fd: server.as_raw_fd(),
            bufs: vec![b"hdr".to_vec().into()],
            first_offset: 0,
        },
        1,
    );
    assert_eq!(c.result, 3);
    let mut off = 5;
    while !bufs.is_empty() {
        let c = run(
            &mut ring,
            Op::SendV {
                fd: server.as_raw_fd(),
                bufs,
                first_offset: off,
            },
            2,
        );
        assert!(c.result > 0, "send failed: {}", c.result);
        bufs = c.bufs;
        off += c.result as usize;
        while let Some(b) = bufs.first() {
            if off < b.len() {
                break;
            }
            off -= b.len();
            bufs.remove(0);
        }
    }
    assert!(reader.join().unwrap());
    // The region stays usable, and the slice still reads what it covers.
    drop(region);
    let mut back = vec![0u8; data.len()];
    assert!(slice.copy_to(&mut back));
    assert_eq!(back, data);
}

#[test]
fn recv_all_waits_for_every_byte() {
    let mut ring = Ring::new(8).unwrap();
    let (server, mut client) = tcp_pair(&mut ring);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        // In pieces, with pauses: a plain recv would return after the first.
        for piece in sent.chunks(30_000) {
            client.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        client.write_all(b"after").unwrap();
        client
    });
    let c = run(
        &mut ring,
        Op::RecvAll {
            fd: server.as_raw_fd(),
            buf: vec![0xAA; 100_010],
            offset: 7,
            len: 100_000,
        },
        3,
    );
    assert_eq!(c.result, 100_000);
    let buf = c.buf.unwrap();
    assert_eq!(&buf[..7], &[0xAA; 7]);
    assert_eq!(&buf[7..100_007], &data[..]);
    assert_eq!(&buf[100_007..], &[0xAA; 3]);
    // The bytes after it are left for the next receive.
    let client = writer.join().unwrap();
    let c = run(
        &mut ring,
        Op::Recv {
            fd: server.as_raw_fd(),
            buf: vec![0; 16],
            offset: 0,
        },
        4,
    );
    assert_eq!(&c.buf.unwrap()[..c.result as usize], b"after");
    // End of stream before all bytes: a short count, not a hang.
    drop(client);
    let c = run(
        &mut ring,
        Op::RecvAll {
            fd: server.as_raw_fd(),
            buf: vec![0; 64],
            offset: 0,
            len: 64,
        },
        5,
    );
    assert_eq!(c.result, 0);
}

/// A polling receive into a 16-byte buffer of `fill` bytes, from `offset`.
fn recv_now(ring: &mut Ring, fd: i32, fill: u8, offset: usize, token: u64) -> Completion {
    let buf = vec![fill; 16];
    run(ring, Op::RecvNow { fd, buf, offset }, token)
}

#[test]
fn recv_now_never_waits() {
    for local in [false, true] {
        let mut ring = if local {
            Ring::new_local(8).unwrap()
        } else {
            Ring::new(8).unwrap()
        };
        let (server, mut client) = tcp_pair(&mut ring);
        let fd = server.as_raw_fd();
        // Nothing queued: -EAGAIN at once, and the buffer comes back untouched.
        let c = recv_now(&mut ring, fd, 0xAA, 2, 2);
        assert_eq!(c.result, -libc::EAGAIN, "local ring: {local}");
        assert_eq!(c.buf.as_deref(), Some(&[0xAA; 16][..]));
        // Queued bytes are taken, into the buffer from the offset.
        client.write_all(b"abc").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let c = loop {
            let c = recv_now(&mut ring, fd, 0xAA, 2, 3);
            if c.result != -libc::EAGAIN || Instant::now() > deadline {
                break c;
            }
        };
        assert_eq!(c.result, 3);
        assert_eq!(&c.buf.unwrap()[..6], b"\xAA\xAAabc\xAA");
        // End of stream: 0, not -EAGAIN.
        drop(client);
        assert_eq!(recv_now(&mut ring, fd, 0, 0, 4).result, 0);
    }
}

#[test]
fn out_of_range_ops_are_rejected() {
    let mut ring = Ring::new(4).unwrap();
    let bad = [
        Op::Recv {
            fd: 0,
            buf: vec![0; 4],
            offset: 5,
        },
        Op::Send {
            fd: 0,
            buf: vec![0; 4],
            offset: 2,
            len: 3,
        },
        Op::Send {
            fd: 0,
            buf: vec![0; 4],
            offset: usize::MAX,
            len: 2,
        },
        Op::Read {
            fd: 0,
            buf: vec![0; 4],
            offset: 0,
            len: 5,
            file_offset: 0,
        },
        Op::Write {
            fd: 0,
            buf: vec![],
            offset: 1,
            len: 0,
            file_offset: 0,
        },
        Op::SendV {
            fd: 0,
            bufs: vec![vec![0; 3].into()],
            first_offset: 4,
        },
        Op::RecvAll {
            fd: 0,
            buf: vec![0; 8],
            offset: 4,
            len: 5,
        },
        Op::SendV {
            fd: 0,
            bufs: vec![],
            first_offset: 1,
        },
    ];
    for op in bad {
        let e = ring.push(op, 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(ring.in_flight(), 0);
    // Edge cases that are in range.
    let c = run(
        &mut ring,
        Op::Write {
            fd: -1,
            buf: vec![0; 4],
            offset: 4,
            len: 0,
            file_offset: 0,
        },
        2,
    );
    assert_eq!(c.result, -libc::EBADF);
    assert_eq!(c.buf.unwrap().len(), 4);
}

#[test]
fn file_write_read_fsync_punch_hole() {
    let path = std::env::temp_dir().join(format!(
        "nvmf-sys-ring-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let file = open_file(&path, true, false).unwrap();
    std::fs::remove_file(&path).unwrap();
    let fd = file.as_raw_fd();
    let mut ring = Ring::new(8).unwrap();

    let data: Vec<u8> = (0..3 * 4096).map(|i| (i * 7 % 251) as u8).collect();
    let mut buf = vec![0u8; 100];
    buf.extend_from_slice(&data);
    let c = run(
        &mut ring,
        Op::Write {
            fd,
            buf,
            offset: 100,
            len: data.len(),
            file_offset: 4096,
        },
        1,
    );
    assert_eq!(c.result as usize, data.len());
    for (t, datasync) in [(2, false), (3, true)] {
        assert_eq!(run(&mut ring, Op::Fsync { fd, datasync }, t).result, 0);
    }
    assert_eq!(file.metadata().unwrap().len(), 4 * 4096);

    let c = run(
        &mut ring,
        Op::Read {
            fd,
            buf: vec![0xEE; 5 * 4096],
            offset: 10,
            len: 4 * 4096,
            file_offset: 0,
        },
        4,
    );
    assert_eq!(c.result, 4 * 4096);
    let buf = c.buf.unwrap();
    assert_eq!(&buf[..10], &[0xEE; 10]);
    assert!(buf[10..10 + 4096].iter().all(|&b| b == 0));
    assert_eq!(&buf[10 + 4096..10 + 4 * 4096], &data[..]);

    let c = run(
        &mut ring,
        Op::Fallocate {
            fd,
            mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            offset: 2 * 4096,
            len: 4096,
        },
        5,
    );
    assert_eq!(c.result, 0);
    assert!(c.buf.is_none());
    assert_eq!(file.metadata().unwrap().len(), 4 * 4096);
    let c = run(
        &mut ring,
        Op::Read {
            fd,
            buf: vec![0xEE; 3 * 4096],
            offset: 0,
            len: 3 * 4096,
            file_offset: 4096,
        },
        6,
    );
    assert_eq!(c.result, 3 * 4096);
    let buf = c.buf.unwrap();
    assert_eq!(&buf[..4096], &data[..4096]);
    assert!(buf[4096..8192].iter().all(|&b| b == 0));
    assert_eq!(&buf[8192..], &data[8192..]);

    // Reading past the end returns 0 bytes.
    let c = run(
        &mut ring,
        Op::Read {
            fd,
            buf: vec![0; 512],
            offset: 0,
            len: 512,
            file_offset: 1 << 20,
        },
        7,
    );
    assert_eq!(c.result, 0);
}

#[test]
fn wait_with_timeout_returns_when_nothing_completes() {
    let mut ring = Ring::new(4).unwrap();
    let efd = EventFd::new().unwrap();
    let mut out = Vec::new();
    for in_flight in [false, true] {
        if in_flight {
            ring.push(Op::PollIn { fd: efd.fd() }, 9).unwrap();
        }
        let t = Instant::now();
        ring.submit_and_wait(Some(Duration::from_millis(50)))
            .unwrap();
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        ring.drain(&mut out);
        assert!(out.is_empty());
    }
    assert_eq!(ring.in_flight(), 1);
    // Nothing in flight and no timeout: returns at once instead of hanging.
    let mut idle = Ring::new(4).unwrap();
    idle.submit_and_wait(None).unwrap();
}

#[test]
fn eventfd_wakes_a_ring_moved_to_another_thread() {
    let ring = Ring::new(4).unwrap(); // created here, used on another thread
    let efd = std::sync::Arc::new(EventFd::new().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let efd = efd.clone();
        std::thread::spawn(move || {
            let mut ring = ring;
            ring.push(Op::PollIn { fd: efd.fd() }, 42).unwrap();
            ring.submit().unwrap();
            tx.send(()).unwrap();
            let mut out = Vec::new();
            let mut waits = 0;
            while out.is_empty() {
                ring.submit_and_wait(None).unwrap();
                ring.drain(&mut out);
                waits += 1;
                assert!(waits < 1000);
            }
            // Then an 8-byte read of the counter.
            let c = run(
                &mut ring,
                Op::Read {
                    fd: efd.fd(),
                    buf: vec![0; 8],
                    offset: 0,
                    len: 8,
                    file_offset: 0,
                },
                43,
            );
            (out, c)
        })
    };
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // One notification: the waiter may read the counter as soon as the poll
    // fires, so a second one could land before or after its read.
    efd.notify();
    let (out, read) = waiter.join().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].token, 42);
    assert!(out[0].result & libc::POLLIN as i32 != 0);
    assert_eq!(read.result, 8);
    assert_eq!(u64::from_ne_bytes(read.buf.unwrap().try_into().unwrap()), 1);

    // After drain the fd is no longer readable: a poll does not fire.
    efd.notify();
    efd.drain();
    let mut ring = Ring::new(4).unwrap();
    ring.push(Op::PollIn { fd: efd.fd() }, 1).unwrap();
    ring.submit_and_wait(Some(Duration::from_millis(30)))
        .unwrap();
    let mut out = Vec::new();
    ring.drain(&mut out);
    assert!(out.is_empty());
    efd.notify();
    assert_eq!(wait_for(&mut ring, 1).token, 1);
}

#[test]
fn more_ops_than_sq_entries_are_all_completed() {
    let mut ring = Ring::new(4).unwrap();
    for t in 0..100 {
        ring.push(Op::Nop, t).unwrap();
    }
    assert_eq!(ring.in_flight(), 100);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring.in_flight() > 0 {
        ring.submit_and_wait(Some(Duration::from_millis(100)))
            .unwrap();
        ring.drain(&mut out);
        assert!(Instant::now() < deadline);
    }
    let mut tokens: Vec<u64> = out.iter().map(|c| c.token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (0..100).collect::<Vec<_>>());
    assert!(out.iter().all(|c| c.result == 0));
    assert_eq!(ring.submit().unwrap(), 0);
}

#[test]
fn drop_with_pending_recv_cancels_it() {
    let mut ring = Ring::new(4).unwrap();
    let (server, client) = tcp_pair(&mut ring);
    ring.push(
        Op::Recv {
            fd: server.as_raw_fd(),
            buf: vec![0; 64],
            offset: 0,
        },
        5,
    )
    .unwrap();
    ring.submit().unwrap();
    assert_eq!(ring.in_flight(), 1);
    let t = Instant::now();
    drop(ring);
    // The cancel completes the recv promptly, well before the leak deadline.
    assert!(t.elapsed() < nvmf_sys::ring::DROP_WAIT);
    drop(client);
}

#[test]
fn a_delay_completes_after_its_time_with_its_buffer() {
    let mut ring = Ring::new(4).unwrap();
    let start = Instant::now();
    ring.push(
        Op::Delay {
            buf: vec![7u8; 100],
            after: Duration::from_millis(200),
            result: -libc::EIO,
        },
        1,
    )
    .unwrap();
    ring.push(Op::Nop, 2).unwrap();
    // The Nop is not held behind the delay.
    assert_eq!(wait_for(&mut ring, 2).token, 2);
    let c = wait_for(&mut ring, 1);
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(c.result, -libc::EIO, "the result given, not the timeout's");
    assert_eq!(c.buf.as_deref(), Some(&[7u8; 100][..]));
}
