//! I/O commands over loopback against the real target, on RAM (512- and
//! 4096-byte blocks), null and file namespaces: Read, Write (in-capsule and
//! R2T, 1 block to MDTS, multi-PDU H2CData), Flush, Write Zeroes, Dataset
//! Management, Compare, fused Compare-and-Write, Verify and Copy, with every
//! byte checked, without and with header and data digests.

mod common;

use common::*;
use nvmf_initiator::command::{self, Command};
use nvmf_initiator::pdu::{self, Pdu};
use nvmf_initiator::{Controller, Queue};

const NS_FILE: u32 = 4;
const FILE_SIZE: u64 = 16 << 20;
const IN_CAPSULE: usize = 16384;

/// [`basic_toml`] with 16 KiB of in-capsule data and a file namespace 4.
fn io_toml(file: &std::path::Path) -> String {
    format!(
        "{}\n[[subsystem.namespace]]\nnsid = 4\nbackend = \"file\"\npath = \"{}\"\nsize = \"16MiB\"\nblock_size = 512\n",
        basic_toml(&format!("in_capsule_data_size = {IN_CAPSULE}")),
        file.display()
    )
}

fn connect_io(t: &TestTarget, hd: bool, dd: bool, queues: u16) -> Controller {
    let mut o = opts();
    o.hdr_digest = hd;
    o.data_digest = dd;
    o.in_capsule_max = 1 << 20;
    let c = connect_with(t.addr(), NQN, &o, queues);
    for q in c.io.iter().chain([&c.admin]) {
        assert_eq!(q.hdr_digest(), hd, "header digest negotiation");
        assert_eq!(q.data_digest(), dd, "data digest negotiation");
    }
    assert_eq!(
        c.io[0].in_capsule_max(),
        IN_CAPSULE as u32,
        "in-capsule limit from IOCCSZ"
    );
    c
}

/// Transfer sizes from one block to MDTS, on both sides of the in-capsule
/// limit.
fn sizes(bs: usize) -> Vec<usize> {
    let mut v = vec![
        bs,
        2 * bs,
        8192,
        IN_CAPSULE,
        IN_CAPSULE + bs,
        65536,
        MAX_IO as usize,
    ];
    v.dedup();
    v
}

fn nlb0(len: usize, bs: u32) -> u16 {
    (len / bs as usize - 1) as u16
}

/// Every data command on one namespace holding real data.
fn exercise_namespace(q: &mut Queue, nsid: u32, bs: u32, seed: u64) {
    let b = bs as usize;
    let blocks = |n: usize| n * b;
    // The queue's own in-capsule limit, restored after R2T-only parts.
    let icmax = q.in_capsule_max();
    // Read/Write: in-capsule and R2T, then R2T only.
    let mut lba = 0u64;
    for pass in 0..2 {
        if pass == 1 {
            q.set_in_capsule_max(0);
        }
        for len in sizes(b) {
            write_read_check(q, nsid, bs, lba, seed + lba, len);
            lba += (len / b) as u64;
        }
    }
    q.set_in_capsule_max(icmax);
    // Unaligned to anything in particular: an odd LBA near the end.
    let nblocks = q_blocks(nsid, bs);
    write_read_check(q, nsid, bs, nblocks - 3, seed + 7, blocks(3));
    // A large read spanning several earlier writes is their concatenation.
    let first = q.read(nsid, 0, nlb0(blocks(3), bs), bs).unwrap();
    let mut want = pattern(seed, b);
    want.extend(pattern(seed + 1, 2 * b));
    assert_same(&first, &want, "read across two writes");

    q.flush(nsid).unwrap();

    // Write Zeroes without and with DEAC, leaving the neighbours alone.
    let base = 4096 / b as u64 * 100;
    let data = pattern(seed + 100, blocks(8));
    for deac in [false, true] {
        q.write(nsid, base, &data, bs).unwrap();
        let cmd = Command::write_zeroes(nsid, base + 2, 3, deac);
        q.execute(cmd, None, 0).unwrap().check().unwrap();
        let got = q.read(nsid, base, 7, bs).unwrap();
        let mut want = data.clone();
        want[blocks(2)..blocks(6)].fill(0);
        assert_same(&got, &want, &format!("write zeroes (deac {deac})"));
    }

    // Dataset Management deallocate over several ranges reads back zeros.
    q.write(nsid, base, &data, bs).unwrap();
    q.dsm_deallocate(nsid, &[(base, 1), (base + 3, 2), (base + 7, 1)])
        .unwrap();
    let got = q.read(nsid, base, 7, bs).unwrap();
    let mut want = data.clone();
    for (s, n) in [(0, 1), (3, 2), (7, 1)] {
        want[blocks(s)..blocks(s + n)].fill(0);
    }
    assert_same(&got, &want, "DSM deallocate");
    // A DSM without the AD attribute changes nothing.
    let r = q
        .execute(
            Command::dsm(nsid, 0, false),
            Some(command::dsm_ranges(&[(base + 1, 2)])),
            0,
        )
        .unwrap();
    assert_eq!(r.status, 0);
    assert_same(&q.read(nsid, base, 7, bs).unwrap(), &want, "DSM without AD");

    // Compare: match and miscompare.
    let cbase = base + 16;
    let cdata = pattern(seed + 200, blocks(4));
    q.write(nsid, cbase, &cdata, bs).unwrap();
    q.compare(nsid, cbase, &cdata, bs)
        .expect("compare of equal data");
    let mut other = cdata.clone();
    other[blocks(3) + 5] ^= 0x40;
    expect_status_dnr(q.compare(nsid, cbase, &other, bs), sc::COMPARE_FAILURE);
    // Compare through R2T as well.
    q.set_in_capsule_max(0);
    q.compare(nsid, cbase, &cdata, bs).unwrap();
    expect_status(q.compare(nsid, cbase, &other, bs), sc::COMPARE_FAILURE);
    q.set_in_capsule_max(icmax);

    // Fused Compare-and-Write: success, then a miscompare aborts the write.
    let new = pattern(seed + 300, blocks(4));
    let (c1, w1) = q.compare_and_write(nsid, cbase, &cdata, &new, bs).unwrap();
    assert_eq!((c1.status, w1.status), (0, 0), "compare-and-write");
    assert_same(&q.read(nsid, cbase, 3, bs).unwrap(), &new, "after C&W");
    let newer = pattern(seed + 301, blocks(4));
    let (c2, w2) = q
        .compare_and_write(nsid, cbase, &cdata, &newer, bs)
        .unwrap();
    assert_eq!(c2.status, sc::COMPARE_FAILURE, "fused compare status");
    assert_eq!(w2.status, sc::ABORTED_FAILED_FUSED, "fused write status");
    assert_same(
        &q.read(nsid, cbase, 3, bs).unwrap(),
        &new,
        "data after a failed C&W",
    );
    // Larger than the in-capsule limit: both halves go through R2T.
    let big_old = pattern(seed + 400, 32768);
    let big_new = pattern(seed + 401, 32768);
    q.write(nsid, cbase, &big_old, bs).unwrap();
    let (c3, w3) = q
        .compare_and_write(nsid, cbase, &big_old, &big_new, bs)
        .unwrap();
    assert_eq!((c3.status, w3.status), (0, 0));
    assert_same(
        &q.read(nsid, cbase, nlb0(32768, bs), bs).unwrap(),
        &big_new,
        "after a large C&W",
    );

    // Verify: in range and beyond.
    q.verify(nsid, 0, nlb0(MAX_IO as usize, bs)).unwrap();
    q.verify(nsid, nblocks - 1, 0).unwrap();
    expect_status_dnr(q.verify(nsid, nblocks - 1, 1), sc::LBA_OUT_OF_RANGE);

    // Copy several ranges to one destination.
    let src = base + 64;
    let sdata = pattern(seed + 500, blocks(10));
    q.write(nsid, src, &sdata, bs).unwrap();
    let dst = base + 128;
    q.copy(nsid, dst, &[(src + 6, 2), (src, 3), (src + 9, 1)])
        .unwrap();
    let got = q.read(nsid, dst, 5, bs).unwrap();
    let mut want = sdata[blocks(6)..blocks(8)].to_vec();
    want.extend_from_slice(&sdata[..blocks(3)]);
    want.extend_from_slice(&sdata[blocks(9)..blocks(10)]);
    assert_same(&got, &want, "copy destination");
    assert_same(
        &q.read(nsid, src, 9, bs).unwrap(),
        &sdata,
        "copy source unchanged",
    );
    // Copy limits: more than MSRC + 1 = 128 ranges, a range longer than
    // MSSRL, a total longer than MCL.
    let max_blocks = MAX_IO / bs;
    let many: Vec<(u64, u32)> = (0..129).map(|i| (i, 1)).collect();
    expect_status_dnr(q.copy(nsid, dst, &many), sc::COMMAND_SIZE_LIMIT);
    expect_status_dnr(
        q.copy(nsid, dst, &[(0, max_blocks + 1)]),
        sc::COMMAND_SIZE_LIMIT,
    );
    expect_status_dnr(
        q.copy(nsid, dst, &[(0, max_blocks), (0, 1)]),
        sc::COMMAND_SIZE_LIMIT,
    );
    let n = 128.min(max_blocks as u64);
    let few: Vec<(u64, u32)> = (0..n).map(|i| (src + i % 10, 1)).collect();
    q.copy(nsid, dst, &few).expect("many ranges of one block");
    let got = q.read(nsid, dst, n as u16 - 1, bs).unwrap();
    for i in 0..n as usize {
        let s = i % 10;
        assert_same(
            &got[blocks(i)..blocks(i + 1)],
            &sdata[blocks(s)..blocks(s + 1)],
            "copy of many ranges",
        );
    }
    // Out of range source or destination.
    expect_status_dnr(q.copy(nsid, nblocks, &[(0, 1)]), sc::LBA_OUT_OF_RANGE);
    expect_status_dnr(q.copy(nsid, 0, &[(nblocks, 1)]), sc::LBA_OUT_OF_RANGE);
}

fn q_blocks(nsid: u32, bs: u32) -> u64 {
    match nsid {
        NS_RAM512 | NS_RAM4K => RAM_SIZE / bs as u64,
        NS_NULL => NULL_SIZE / bs as u64,
        NS_FILE => FILE_SIZE / bs as u64,
        _ => unreachable!(),
    }
}

fn exercise_null(q: &mut Queue) {
    let nsid = NS_NULL;
    for len in sizes(512) {
        q.write(nsid, 1000, &pattern(1, len), 512).unwrap();
        let got = q.read(nsid, 1000, nlb0(len, 512), 512).unwrap();
        assert!(got.iter().all(|&b| b == 0), "null namespace read non-zero");
    }
    q.flush(nsid).unwrap();
    q.write_zeroes(nsid, 0, 100).unwrap();
    q.dsm_deallocate(nsid, &[(0, 8)]).unwrap();
    q.verify(nsid, 0, 255).unwrap();
    q.compare(nsid, 5, &vec![0u8; 1024], 512)
        .expect("a null namespace compares equal to zeros");
    expect_status_dnr(
        q.compare(nsid, 5, &pattern(3, 512), 512),
        sc::COMPARE_FAILURE,
    );
    expect_status_dnr(q.read(nsid, NULL_SIZE / 512, 0, 512), sc::LBA_OUT_OF_RANGE);
}

fn io_suite(hd: bool, dd: bool) {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&io_toml(&dir.path().join("ns4.img")));
    let mut c = connect_io(&t, hd, dd, 1);
    let seed = (hd as u64) << 40 | (dd as u64) << 41;
    exercise_namespace(&mut c.io[0], NS_RAM512, 512, seed + 1);
    exercise_namespace(&mut c.io[0], NS_RAM4K, 4096, seed + 2);
    exercise_namespace(&mut c.io[0], NS_FILE, 512, seed + 3);
    exercise_null(&mut c.io[0]);
    // Flush of every namespace at once.
    c.io[0].flush(0xFFFF_FFFF).unwrap();
    c.shutdown().unwrap();
}

#[test]
fn io_without_digests() {
    io_suite(false, false);
}

#[test]
fn io_with_header_digest() {
    io_suite(true, false);
}

#[test]
fn io_with_data_digest() {
    io_suite(false, true);
}

#[test]
fn io_with_both_digests() {
    io_suite(true, true);
}

#[test]
fn digests_are_not_enabled_when_the_target_disallows_them() {
    let t = start(&basic_toml("hdr_digest = false\ndata_digest = false"));
    let mut o = opts();
    o.hdr_digest = true;
    o.data_digest = true;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    assert!(!c.io[0].hdr_digest() && !c.io[0].data_digest());
    write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 1, 65536);
    c.shutdown().unwrap();
}

#[test]
fn file_namespace_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns4.img");
    let toml = io_toml(&path);
    let data = pattern(77, 256 * 1024);
    {
        let t = start(&toml);
        let mut c = connect_io(&t, false, false, 1);
        c.io[0]
            .write(NS_FILE, 2048, &data[..MAX_IO as usize], 512)
            .unwrap();
        c.io[0]
            .write(NS_FILE, 2048 + 256, &data[MAX_IO as usize..], 512)
            .unwrap();
        c.io[0].flush(NS_FILE).unwrap();
        c.shutdown().unwrap();
        t.shutdown();
    }
    // The file holds the data at the right offset.
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len() as u64, FILE_SIZE);
    assert_same(
        &on_disk[2048 * 512..2048 * 512 + data.len()],
        &data,
        "file contents",
    );
    let t = start(&toml);
    let mut c = connect_io(&t, false, false, 1);
    let mut got = c.io[0].read(NS_FILE, 2048, 255, 512).unwrap();
    got.extend(c.io[0].read(NS_FILE, 2048 + 256, 255, 512).unwrap());
    assert_same(&got, &data, "file namespace after restart");
    c.shutdown().unwrap();
}

#[test]
fn reads_complete_with_c2h_success_when_sq_flow_control_is_disabled() {
    let t = start_basic();
    for disable in [false, true] {
        let mut o = opts();
        o.disable_sqflow = disable;
        let mut c = connect_with(t.addr(), NQN, &o, 1);
        let data = pattern(5, 8192);
        c.io[0].write(NS_RAM512, 0, &data, 512).unwrap();
        let r = c.io[0]
            .execute(Command::read(NS_RAM512, 0, 15), None, 8192)
            .unwrap();
        assert_eq!(r.status, 0);
        assert_eq!(
            r.c2h_success, disable,
            "C2HData SUCCESS flag with SQ flow control disabled = {disable}"
        );
        assert_same(&r.data, &data, "read data");
        // A failed read still gets a response capsule.
        let r = c.io[0]
            .execute(Command::read(NS_RAM512, RAM_SIZE / 512, 0), None, 512)
            .unwrap();
        assert_eq!(r.status, sc::LBA_OUT_OF_RANGE);
        assert!(!r.c2h_success);
        // Admin data (Identify) follows the admin queue's own setting.
        let r = c
            .admin
            .execute(Command::identify(1, 0, 0, 0), None, 4096)
            .unwrap();
        assert_eq!(r.c2h_success, disable);
        c.shutdown().unwrap();
    }
}

#[test]
fn host_pdu_data_alignment_is_honoured() {
    let t = start_basic();
    for hpda in [1u8, 3, 7, 31] {
        let mut o = opts();
        o.hpda = hpda;
        o.hdr_digest = hpda % 2 == 1;
        o.data_digest = true;
        let mut c = connect_with(t.addr(), NQN, &o, 1);
        // The strict initiator checks the PDO of every C2HData.
        write_read_check(
            &mut c.io[0],
            NS_RAM4K,
            4096,
            hpda as u64,
            hpda as u64,
            12288,
        );
        c.shutdown().unwrap();
    }
}

/// Sends a write with a transport SGL by hand and answers its R2T with
/// several H2CData PDUs of the given sizes.
fn write_multi_pdu(q: &mut Queue, nsid: u32, slba: u64, data: &[u8], bs: u32, chunks: &[usize]) {
    let mut cmd = Command::write(nsid, slba, nlb0(data.len(), bs));
    cmd.cid = 0x0777;
    cmd.dptr = command::sgl_descriptor(0, data.len() as u32, command::SGL_TRANSPORT_DATA_BLOCK);
    let tx = q.tx_config();
    q.send_raw(&pdu::encode_capsule_cmd(&cmd.to_bytes(), &[], &tx))
        .unwrap();
    let r2t = match q.recv_raw_pdu().unwrap() {
        Pdu::R2t(r) => r,
        other => panic!("expected R2T, got {other:?}"),
    };
    assert_eq!(r2t.cccid, 0x0777);
    assert_eq!(r2t.r2to, 0);
    assert_eq!(r2t.r2tl as usize, data.len(), "one R2T for the whole write");
    assert!(q.maxh2cdata() >= 4096);
    let mut off = 0;
    for (i, &n) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let n = if last { data.len() - off } else { n };
        assert!(n as u32 <= q.maxh2cdata());
        q.send_raw(&pdu::encode_data_pdu(
            pdu::PDU_H2C_DATA,
            0x0777,
            r2t.ttag,
            off as u32,
            &data[off..off + n],
            last,
            false,
            &tx,
        ))
        .unwrap();
        off += n;
    }
    match q.recv_raw_pdu().unwrap() {
        Pdu::CapsuleResp(r) => {
            let cqe = command::Cqe::parse(&r.cqe);
            assert_eq!(cqe.cid, 0x0777);
            assert_eq!(cqe.status(), 0, "multi-PDU write failed");
        }
        other => panic!("expected CapsuleResp, got {other:?}"),
    }
}

#[test]
fn write_data_in_several_h2c_data_pdus() {
    let t = start_basic();
    for (hd, dd) in [(false, false), (true, true)] {
        let mut o = opts();
        o.hdr_digest = hd;
        o.data_digest = dd;
        let mut c = connect_with(t.addr(), NQN, &o, 1);
        let q = &mut c.io[0];
        let data = pattern(31, MAX_IO as usize);
        write_multi_pdu(q, NS_RAM512, 64, &data, 512, &[4096; 32]);
        let got = q.read(NS_RAM512, 64, 255, 512).unwrap();
        assert_same(&got, &data, "multi-PDU write (4 KiB pieces)");
        // Odd piece sizes, not multiples of anything.
        let data = pattern(32, 65536);
        write_multi_pdu(q, NS_RAM4K, 3, &data, 4096, &[1000, 4, 12288, 777, 0]);
        let got = q.read(NS_RAM4K, 3, 15, 4096).unwrap();
        assert_same(&got, &data, "multi-PDU write (odd pieces)");
        c.shutdown().unwrap();
    }
}

#[test]
fn queue_depth_on_one_queue_with_mixed_commands() {
    let t = start_basic();
    let mut o = opts();
    o.in_capsule_max = 1 << 20;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    let q = &mut c.io[0];
    let mut rng = Rng::new(99);
    let mut contents: Vec<Option<u64>> = vec![None; 256];
    for round in 0..8u64 {
        // 64 writes in flight, in-capsule and R2T mixed, on distinct slots.
        let mut cids = Vec::new();
        let mut order: Vec<usize> = (0..64).map(|i| (i * 4 + round as usize) % 256).collect();
        rng.shuffle(&mut order);
        for &slot in &order {
            let seed = round << 32 | slot as u64;
            let len = if slot % 3 == 0 { 16384 } else { 4096 };
            let data = pattern(seed, len);
            let cid = q
                .submit(
                    Command::write(NS_RAM4K, slot as u64 * 4, (len / 4096 - 1) as u16),
                    Some(data),
                    0,
                )
                .unwrap();
            cids.push(cid);
            contents[slot] = Some(seed);
        }
        for _ in &cids {
            let r = q.wait().unwrap();
            assert_eq!(r.status, 0);
        }
        // Every slot written so far read back, 64 reads in flight.
        let mut pending = std::collections::HashMap::new();
        let written = contents
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| c.map(|seed| (slot, seed)));
        for (slot, seed) in written {
            if pending.len() == 64 {
                let r = q.wait().unwrap();
                assert_eq!(r.status, 0);
                let (seed, len) = pending.remove(&r.cid).expect("a read we sent");
                assert_same(&r.data, &pattern(seed, len), "read under queue depth");
            }
            let len = if slot % 3 == 0 { 16384 } else { 4096 };
            let cid = q
                .submit(
                    Command::read(NS_RAM4K, slot as u64 * 4, (len / 4096 - 1) as u16),
                    None,
                    len as u32,
                )
                .unwrap();
            pending.insert(cid, (seed, len));
        }
        while !pending.is_empty() {
            let r = q.wait().unwrap();
            assert_eq!(r.status, 0);
            let (seed, len) = pending
                .remove(&r.cid)
                .expect("a response to a read we sent");
            assert_same(&r.data, &pattern(seed, len), "read under queue depth");
        }
    }
    c.shutdown().unwrap();
}

#[test]
fn sqhd_advances_with_every_command() {
    let t = start_basic();
    let mut o = opts();
    o.queue_size = 8;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    let q = &mut c.io[0];
    assert_eq!(q.queue_size(), 8);
    // The Connect took entry 0; command k (from 1) moves the head to k + 1.
    for k in 1..=20u16 {
        let r = match k % 3 {
            0 => q.flush(NS_RAM512).unwrap(),
            1 => q
                .execute(Command::read(NS_RAM512, 0, 0), None, 512)
                .unwrap(),
            // Failed commands are consumed too.
            _ => q.execute(Command::read(99, 0, 0), None, 512).unwrap(),
        };
        assert_eq!(r.sqhd, (k + 1) % 8, "SQHD after command {k}");
        assert_eq!(r.sqid, 1);
    }
    // On the admin queue (32 entries) as well.
    let mut a = Queue::connect(t.addr(), 0, NQN, 0xFFFF, &opts()).unwrap();
    for k in 1..=40u16 {
        let r = a
            .execute(Command::property_get(command::PROP_VS, false), None, 0)
            .unwrap();
        assert_eq!(r.sqhd, (k + 1) % 32, "admin SQHD after command {k}");
        assert_eq!(r.sqid, 0);
    }
    c.shutdown().unwrap();
}

#[test]
fn largest_transfers_with_an_8_mib_mdts() {
    let t = start(&basic_toml("max_io_size = \"8MiB\""));
    for (hd, dd) in [(false, false), (true, true)] {
        let mut o = opts();
        o.hdr_digest = hd;
        o.data_digest = dd;
        let mut c = connect_with(t.addr(), NQN, &o, 1);
        assert_eq!(c.id.mdts, 11);
        assert_eq!(c.max_transfer_size(), 1 << 20, "the library caps at 1 MiB");
        let q = &mut c.io[0];
        assert!(q.maxh2cdata() >= 4096);
        // 8 MiB in one command each way: one H2CData PDU far larger than a
        // receive buffer, one C2HData PDU as large.
        let data = pattern(8 + dd as u64, 8 << 20);
        q.write(NS_RAM4K, 1024, &data, 4096).unwrap();
        let got = q.read(NS_RAM4K, 1024, 2047, 4096).unwrap();
        assert_same(&got, &data, "8 MiB read back");
        // One block more is beyond MDTS.
        expect_status_dnr(q.read(NS_RAM4K, 0, 2048, 4096), sc::INVALID_FIELD);
        c.shutdown().unwrap();
    }
}

#[test]
fn all_data_through_r2t_without_in_capsule_data() {
    let t = start(&basic_toml("in_capsule_data_size = 0"));
    let mut o = opts();
    o.in_capsule_max = 1 << 20;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    assert_eq!(c.id.ioccsz, 4, "IOCCSZ: the 64-byte command only");
    assert_eq!(c.io[0].in_capsule_max(), 0);
    // Writes, DSM ranges, Copy descriptors and compare data all go
    // through R2T; the admin queue still takes 8 KiB in the capsule.
    exercise_namespace(&mut c.io[0], NS_RAM512, 512, 900);
    c.shutdown().unwrap();
}
