//! Fused Compare and Write is atomic against writes to its namespace from
//! every queue, on every reactor (issue 12 item 7), not just its own queue.

mod common;

use common::*;
use nvmf_initiator::command::Command;
use std::sync::Arc;
use std::time::Duration;

fn counter_block(v: u64) -> Vec<u8> {
    let mut b = pattern(v, 512);
    b[..8].copy_from_slice(&v.to_le_bytes());
    b
}

/// A fault namespace whose block 77 takes `delay_ms` to read, on the
/// reactors of [`test_cores`].
fn slow_block_toml(delay_ms: u64) -> String {
    format!(
        r#"
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
size = "1MiB"
block_size = 512
fault = [{{ op = "read", lba = 77, blocks = 1, delay_ms = {delay_ms} }}]
"#
    )
}

/// Hosts on both reactors increment a counter in one block with Compare
/// and Write (read it, compare with what was read, write it plus one): no
/// increment may be lost, so the block ends at the number of successes.
/// The block's reads take 2 ms, so that the compare of one host and the
/// write of another would overlap if nothing kept them apart.
#[test]
fn compare_and_write_increments_from_every_queue_are_never_lost() {
    const NS_RAM512: u32 = 1;
    let t = start(&slow_block_toml(2));
    let addr = t.addr();
    let lba = 77;
    let mut c = connect(addr, 1);
    c.io[0]
        .write(NS_RAM512, lba, &counter_block(0), 512)
        .unwrap();
    const HOSTS: usize = 4;
    const EACH: u64 = 150;
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..HOSTS)
        .map(|h| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut c = connect_with(addr, NQN, &opts_for_host(h as u8 + 1), 1);
                let q = &mut c.io[0];
                let (mut ok, mut miss) = (0u64, 0u64);
                while ok < EACH {
                    let cur = q.read(NS_RAM512, lba, 0, 512).unwrap();
                    // (A read racing a write on another reactor may see a
                    // mix of both: then the compare fails, and it is retried.)
                    let v = u64::from_le_bytes(cur[..8].try_into().unwrap());
                    let (r1, r2) = q
                        .compare_and_write(NS_RAM512, lba, &cur, &counter_block(v + 1), 512)
                        .unwrap();
                    match (r1.status, r2.status) {
                        (0, 0) => ok += 1,
                        (sc::COMPARE_FAILURE, sc::ABORTED_FAILED_FUSED) => miss += 1,
                        other => panic!("compare and write: {other:x?}"),
                    }
                }
                done.fetch_add(ok, std::sync::atomic::Ordering::SeqCst);
                miss
            })
        })
        .collect();
    let misses: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let total = done.load(std::sync::atomic::Ordering::SeqCst);
    let end = c.io[0].read(NS_RAM512, lba, 0, 512).unwrap();
    let v = u64::from_le_bytes(end[..8].try_into().unwrap());
    assert_same(&end, &counter_block(v), "the counter block at the end");
    eprintln!("{total} increments by compare and write ({misses} compare failures, retried); the counter says {v}");
    assert_eq!(v, total, "increments lost");
}

/// A Compare and Write whose read is held 1.5 s by a fault namespace, and
/// a plain write to the same block from another controller meanwhile: the
/// write waits for the Compare and Write, so the block ends with the
/// write's data (had the write gone in between, the Compare and Write would
/// have compared old data and overwritten it).
#[test]
fn a_write_from_another_queue_waits_for_a_compare_and_write() {
    let toml = slow_block_toml(1500).replace("lba = 77", "lba = 100");
    let t = start(&toml);
    let mut a = connect_with(t.addr(), NQN, &opts_for_host(1), 1);
    let mut b = connect_with(t.addr(), NQN, &opts_for_host(2), 1);
    let (zeros, aa, bb) = (vec![0u8; 512], vec![0xAA; 512], vec![0xBB; 512]);
    let mut cmp = Command::compare(1, 100, 0);
    cmp.flags |= nvmf_initiator::command::FUSE_FIRST;
    let mut wr = Command::write(1, 100, 0);
    wr.flags |= nvmf_initiator::command::FUSE_SECOND;
    let c1 = a.io[0].submit(cmp, Some(zeros.clone()), 0).unwrap();
    let c2 = a.io[0].submit(wr, Some(aa.clone()), 0).unwrap();
    // The Compare and Write is holding the namespace, its read delayed.
    std::thread::sleep(Duration::from_millis(300));
    b.io[0].write(1, 100, &bb, 512).unwrap();
    let (r1, r2) = (a.io[0].wait_for(c1).unwrap(), a.io[0].wait_for(c2).unwrap());
    let end = b.io[0].read(1, 100, 0, 512).unwrap();
    match (r1.status, r2.status) {
        // In order: the Compare and Write, then the write.
        (0, 0) => assert_same(&end, &bb, "the block after both"),
        // Or the write came first and the compare saw it.
        (sc::COMPARE_FAILURE, sc::ABORTED_FAILED_FUSED) => assert_same(&end, &bb, "the block"),
        other => panic!("compare and write: {other:x?}"),
    }
    // Plain writes go on as before once it is done.
    write_read_check(&mut b.io[0], 1, 512, 200, 3, 4096);
}
