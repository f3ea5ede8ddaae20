//! Backend faults (issue 12 item 5): a `fault` namespace fails reads and
//! writes with EIO, ENOSPC and short transfers, fails flushes, and holds
//! operations for seconds. Each failure reaches the host as the right NVMe
//! status, lands in the error log and (for the medium's failures) in the
//! SMART log's media error count; a held operation holds nothing else up.

mod common;

use common::*;
use nvmf_initiator::command::Command;
use std::time::{Duration, Instant};

const UNRECOVERED_READ: u16 = 0x0281;
const WRITE_FAULT: u16 = 0x0280;
const CAPACITY_EXCEEDED: u16 = 0x0081;
const DELAY_MS: u64 = 2000;
const FAILING_DELAY_MS: u64 = 700;

fn config() -> String {
    format!(
        r#"
[target]
cores = [0]

[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = 4420

[[subsystem]]
nqn = "{NQN}"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
backend = "fault"
size = "4MiB"
block_size = 512
fault = [
  {{ op = "read", lba = 0, blocks = 16, error = "media" }},
  {{ op = "write", lba = 16, blocks = 16, error = "media" }},
  {{ op = "write", lba = 32, blocks = 16, error = "no_space" }},
  {{ op = "read", lba = 48, blocks = 16, error = "short" }},
  {{ op = "read", lba = 64, blocks = 8, delay_ms = {DELAY_MS} }},
  {{ op = "write", lba = 72, blocks = 8, error = "media", delay_ms = {FAILING_DELAY_MS} }},
  {{ op = "flush", error = "media", every = 2 }},
]

[[subsystem.namespace]]
nsid = 2
backend = "ram"
size = "1MiB"
block_size = 512
"#
    )
}

/// SMART / Health Information: Media and Data Integrity Errors (bytes
/// 160..176, the low 8 are enough here).
fn media_errors(c: &mut nvmf_initiator::Controller) -> u64 {
    let smart = c.get_log_page(0x02, 0xFFFF_FFFF, 512, 0, 0).unwrap();
    le64(&smart, 160)
}

#[test]
fn injected_failures_reach_the_host_as_the_right_status() {
    let t = start(&config());
    let mut c = connect(t.addr(), 1);
    let q = &mut c.io[0];
    let data = pattern(1, 4096);

    // EIO on a read and on a write; ENOSPC on a write; a short read.
    expect_status(q.read(1, 0, 7, 512), UNRECOVERED_READ);
    expect_status(q.read(1, 10, 15, 512), UNRECOVERED_READ);
    expect_status(q.write(1, 16, &data, 512), WRITE_FAULT);
    expect_status_dnr(q.write(1, 32, &data, 512), CAPACITY_EXCEEDED);
    expect_status(q.read(1, 48, 7, 512), UNRECOVERED_READ);
    // Reads and writes the rules don't cover work, next to the ones they
    // do: a write of blocks 8..16 is fine, its read is not.
    q.write(1, 8, &data, 512).unwrap();
    expect_status(q.read(1, 8, 7, 512), UNRECOVERED_READ);
    write_read_check(q, 1, 512, 100, 7, 8192);

    // Every second flush fails, and fails as a failure.
    let mut flushes = Vec::new();
    for _ in 0..4 {
        flushes.push(q.flush(1).map(|_| ()).map_err(|e| format!("{e}")));
    }
    assert!(flushes[0].is_ok() && flushes[2].is_ok(), "{flushes:?}");
    for i in [1, 3] {
        let e = flushes[i].as_ref().unwrap_err();
        assert!(
            e.contains("0x0280") || e.contains("Write Fault"),
            "flush {i}: {e}"
        );
    }
    // Flush of all namespaces includes the faulty one, so it fails too
    // when its turn comes (the 5th flush of namespace 1 succeeds, the 6th
    // fails).
    q.flush(0xFFFF_FFFF).unwrap();
    expect_status(q.flush(0xFFFF_FFFF), WRITE_FAULT);

    // The error log has them, newest first, with their LBA and namespace.
    let log = c.get_log_page(0x01, 0, 64 * 16, 0, 0).unwrap();
    let entries: Vec<(u64, u16, u64, u32)> = log
        .chunks(64)
        .map(|e| (le64(e, 0), le16(e, 12) >> 1, le64(e, 16), le32(e, 24)))
        .filter(|e| e.0 != 0)
        .collect();
    let statuses: Vec<u16> = entries.iter().map(|e| e.1 & 0x7FF).collect();
    assert_eq!(
        statuses,
        vec![
            WRITE_FAULT,
            WRITE_FAULT,
            WRITE_FAULT,
            UNRECOVERED_READ,
            UNRECOVERED_READ,
            CAPACITY_EXCEEDED,
            WRITE_FAULT,
            UNRECOVERED_READ,
            UNRECOVERED_READ
        ],
        "error log statuses, newest first: {entries:x?}"
    );
    let lbas: Vec<u64> = entries[3..].iter().map(|e| e.2).collect();
    assert_eq!(lbas, vec![8, 48, 32, 16, 10, 0], "error log LBAs");
    assert!(entries[3..].iter().all(|e| e.3 == 1), "nsid: {entries:x?}");
    // The medium's failures count as media errors; a full device does not.
    assert_eq!(media_errors(&mut c), 8);
    still_serves(&mut c);
}

#[test]
fn a_held_operation_holds_nothing_else_up() {
    let t = start(&config());
    let mut c = connect(t.addr(), 1);
    let q = &mut c.io[0];
    let start = Instant::now();
    let slow = q.submit(Command::read(1, 64, 7), None, 4096).unwrap();
    let failing = q
        .submit(Command::write(1, 72, 0), Some(pattern(2, 512)), 0)
        .unwrap();
    let fast = q.submit(Command::read(2, 0, 7), None, 4096).unwrap();
    let fast_ns1 = q.submit(Command::read(1, 200, 7), None, 4096).unwrap();
    // Completions arrive in the order the operations finish: the ones not
    // held first, then the held failure, then the held read.
    let order: Vec<u16> = (0..4).map(|_| q.wait().unwrap().cid).collect();
    let mut first_two = order[..2].to_vec();
    first_two.sort();
    let mut want = vec![fast, fast_ns1];
    want.sort();
    assert_eq!(first_two, want, "completion order {order:?}");
    assert_eq!(order[2..], [failing, slow], "completion order {order:?}");
    assert!(start.elapsed() >= Duration::from_millis(DELAY_MS));
    // The held write failed as its rule says; the held read succeeded.
    let t0 = Instant::now();
    expect_status(q.write(1, 72, &pattern(3, 512), 512), WRITE_FAULT);
    assert!(t0.elapsed() >= Duration::from_millis(FAILING_DELAY_MS));
    q.read(1, 64, 7, 512).unwrap();
    still_serves(&mut c);
}

fn still_serves(c: &mut nvmf_initiator::Controller) {
    write_read_check(&mut c.io[0], 2, 512, 0, 9, 4096);
    c.keep_alive().unwrap();
}
