//! Every command error status the target returns, provoked over loopback:
//! invalid opcode, invalid field, invalid namespace, LBA out of range,
//! transfer beyond MDTS, compare failure, fused command errors, SGL errors,
//! command sequence errors, data digest errors. (Connect statuses, host
//! access, keep-alive and log/feature statuses are in admin.rs.)

mod common;

use common::*;
use nvmf_initiator::command::{self, Command, Cqe};
use nvmf_initiator::pdu::{self, Pdu};
use nvmf_initiator::{Controller, Queue};

/// Sends `cmd` exactly as given (CID and SGL included) with `data` in the
/// capsule, and returns its completion and any C2HData received before it.
/// Panics on an R2T (the callers never ask for one).
fn raw_cmd(q: &mut Queue, cmd: &Command, data: &[u8]) -> (Cqe, Vec<u8>) {
    let tx = q.tx_config();
    q.send_raw(&pdu::encode_capsule_cmd(&cmd.to_bytes(), data, &tx))
        .unwrap();
    let mut got = Vec::new();
    loop {
        match q.recv_raw_pdu() {
            Ok(Pdu::CapsuleResp(r)) => {
                let cqe = Cqe::parse(&r.cqe);
                assert_eq!(cqe.cid, cmd.cid, "response for another command");
                return (cqe, got);
            }
            Ok(Pdu::C2hData(d)) => {
                assert_eq!(d.cccid, cmd.cid);
                got.extend(d.data);
            }
            Ok(other) => panic!("unexpected PDU {other:?}"),
            Err(e) => panic!("waiting for the response to {cmd:?}: {e}"),
        }
    }
}

fn with_sgl(mut cmd: Command, cid: u16, id: u8, len: u32) -> Command {
    cmd.cid = cid;
    cmd.dptr = command::sgl_descriptor(0, len, id);
    cmd
}

#[track_caller]
fn assert_cqe(cqe: &Cqe, status: u16) {
    assert_eq!(
        cqe.status(),
        status,
        "status {:#06x} ({}), expected {status:#06x} ({})",
        cqe.status(),
        command::status_str(cqe.status()),
        command::status_str(status)
    );
}

fn setup() -> (TestTarget, Controller) {
    let t = start_basic();
    let mut o = opts();
    o.in_capsule_max = 1 << 20;
    let c = connect_with(t.addr(), NQN, &o, 1);
    (t, c)
}

/// After an error the queue still works.
fn still_works(c: &mut Controller) {
    write_read_check(&mut c.io[0], NS_RAM512, 512, 4000, 4000, 4096);
    c.keep_alive().unwrap();
}

#[test]
fn invalid_opcode() {
    let (_t, mut c) = setup();
    for op in [0x00u8, 0x01, 0x04, 0x05, 0x10, 0x11, 0x80, 0x81, 0xC4, 0xFE] {
        let r = c.admin.execute(Command::new(op), None, 0).unwrap();
        assert_eq!(r.status, sc::INVALID_OPCODE, "admin opcode {op:#04x}");
        assert!(r.dnr);
    }
    for op in [0x04u8, 0x0D, 0x0E, 0x11, 0x15, 0x7C, 0x80, 0x81, 0x84, 0xFC] {
        let mut cmd = Command::new(op);
        cmd.nsid = NS_RAM512;
        let r = c.io[0].execute(cmd, None, 0).unwrap();
        assert_eq!(r.status, sc::INVALID_OPCODE, "I/O opcode {op:#04x}");
        assert!(r.dnr);
        // With an inactive namespace, still an invalid opcode.
        cmd.nsid = 77;
        let r = c.io[0].execute(cmd, None, 0).unwrap();
        assert_eq!(
            r.status,
            sc::INVALID_OPCODE,
            "I/O opcode {op:#04x}, nsid 77"
        );
    }
    // Bidirectional opcodes (bits 1:0 = 11b) are not supported.
    let cmd = with_sgl(
        Command::new(0x03),
        0x100,
        command::SGL_TRANSPORT_DATA_BLOCK,
        0,
    );
    let (cqe, _) = raw_cmd(&mut c.io[0], &cmd, &[]);
    assert_cqe(&cqe, sc::INVALID_OPCODE);
    // Unknown fabrics command types, on both queues.
    for fctype in [0x08u8, 0x0C, 0x10, 0x7C] {
        let r = c.admin.execute(Command::fabrics(fctype), None, 0).unwrap();
        assert_eq!(r.status, sc::INVALID_OPCODE, "fabrics FCTYPE {fctype:#04x}");
        let r = c.io[0].execute(Command::fabrics(fctype), None, 0).unwrap();
        assert_eq!(r.status, sc::INVALID_OPCODE, "fabrics FCTYPE {fctype:#04x}");
    }
    still_works(&mut c);
}

#[test]
fn invalid_field() {
    let (_t, mut c) = setup();
    let q = &mut c.io[0];
    q.write(NS_RAM512, 0, &pattern(1, 4096), 512).unwrap();
    // PRPs (PSDT 00b) and the reserved PSDT 11b are not allowed on fabrics.
    for flags in [0x00u8, 0xC0] {
        let mut cmd = Command::read(NS_RAM512, 0, 0);
        cmd.flags = flags;
        let r = q.execute(cmd, None, 512).unwrap();
        assert_eq!(r.status, sc::INVALID_FIELD, "flags {flags:#04x}");
        assert!(r.dnr);
        assert!(r.data.is_empty());
    }
    // FUSE 11b is reserved.
    let mut cmd = Command::read(NS_RAM512, 0, 0);
    cmd.flags |= 0x03;
    assert_eq!(q.execute(cmd, None, 512).unwrap().status, sc::INVALID_FIELD);
    // Only Compare may be the first half of a fused operation.
    let mut cmd = Command::read(NS_RAM512, 0, 0);
    cmd.flags |= command::FUSE_FIRST;
    assert_eq!(q.execute(cmd, None, 512).unwrap().status, sc::INVALID_FIELD);
    // Write Zeroes is not a valid second half.
    let mut cmd = Command::write_zeroes(NS_RAM512, 0, 0, false);
    cmd.flags |= command::FUSE_SECOND;
    let st = q.execute(cmd, None, 0).unwrap().status;
    assert!(
        st == sc::INVALID_FIELD || st == sc::ABORTED_MISSING_FUSED,
        "lone fused Write Zeroes: {st:#06x}"
    );
    // Copy with a descriptor format other than 0.
    let r = q
        .execute(Command::copy(NS_RAM512, 100, 0, 1), Some(vec![0u8; 40]), 0)
        .unwrap();
    assert_eq!(r.status, sc::INVALID_FIELD, "copy descriptor format 1");
    // Fused Compare and Write of different ranges.
    let mut cmp = Command::compare(NS_RAM512, 0, 0);
    cmp.flags |= command::FUSE_FIRST;
    let mut wr = Command::write(NS_RAM512, 1, 0);
    wr.flags |= command::FUSE_SECOND;
    let d = pattern(1, 512);
    let c1 = q.submit(cmp, Some(d.clone()), 0).unwrap();
    let c2 = q.submit(wr, Some(d), 0).unwrap();
    let r1 = q.wait_for(c1).unwrap();
    let r2 = q.wait_for(c2).unwrap();
    assert_eq!(
        r1.status,
        sc::INVALID_FIELD,
        "fused compare of another range"
    );
    assert_eq!(r2.status, sc::ABORTED_FAILED_FUSED);
    // Nothing was written.
    assert_same(
        &q.read(NS_RAM512, 0, 7, 512).unwrap(),
        &pattern(1, 4096),
        "data after rejected fused commands",
    );
    // Get Log Page with a dword-unaligned offset.
    let r = c
        .admin
        .execute(Command::get_log_page(2, 0, 512, 6, 0, false), None, 512)
        .unwrap();
    assert_eq!(r.status, sc::INVALID_FIELD);
    still_works(&mut c);
}

#[test]
fn fused_commands_missing_their_other_half() {
    let (_t, mut c) = setup();
    let q = &mut c.io[0];
    let d = pattern(3, 1024);
    q.write(NS_RAM512, 10, &d, 512).unwrap();
    // A first half followed by an unrelated command: the compare is aborted
    // (Missing Fused Command) and the other command runs normally.
    let mut cmp = Command::compare(NS_RAM512, 10, 1);
    cmp.flags |= command::FUSE_FIRST;
    let c1 = q.submit(cmp, Some(d.clone()), 0).unwrap();
    let c2 = q
        .submit(Command::read(NS_RAM512, 10, 1), None, 1024)
        .unwrap();
    assert_eq!(q.wait_for(c1).unwrap().status, sc::ABORTED_MISSING_FUSED);
    let r2 = q.wait_for(c2).unwrap();
    assert_eq!(r2.status, 0);
    assert_same(&r2.data, &d, "read after an abandoned fused compare");
    // A first half followed by a command the transport refuses before it
    // reaches the controller (opcode 03h: data both ways): both complete,
    // the compare as Missing Fused Command. Found by fuzzing: the compare
    // was held forever.
    let mut cmp = Command::compare(NS_RAM512, 10, 1);
    cmp.flags |= command::FUSE_FIRST;
    let c1 = q.submit(cmp, Some(d.clone()), 0).unwrap();
    let mut both = Command::read(NS_RAM512, 10, 1);
    both.opcode = 0x03;
    let c2 = q.submit(both, None, 0).unwrap();
    assert_eq!(q.wait_for(c1).unwrap().status, sc::ABORTED_MISSING_FUSED);
    assert_eq!(
        q.wait_for(c2).unwrap().status & 0xFF,
        sc::INVALID_OPCODE & 0xFF
    );
    // A second half that fails before it meets its first (a namespace that
    // does not exist): the first is failed too (Failed Fused Command), not
    // held. Found by fuzzing.
    let mut cmp = Command::compare(NS_RAM512, 10, 1);
    cmp.flags |= command::FUSE_FIRST;
    let c1 = q.submit(cmp, Some(d.clone()), 0).unwrap();
    let mut wr = Command::write(77, 10, 1);
    wr.flags |= command::FUSE_SECOND;
    let c2 = q.submit(wr, Some(pattern(5, 1024)), 0).unwrap();
    assert_eq!(q.wait_for(c1).unwrap().status, sc::ABORTED_FAILED_FUSED);
    assert_eq!(q.wait_for(c2).unwrap().status & 0xFF, sc::INVALID_NS & 0xFF);
    // A "second half" that is a Flush of every namespace: not a command
    // that fuses, so it is refused, and the first half fails with it.
    // Found by fuzzing: the flush ran and the compare was held forever.
    let mut cmp = Command::compare(NS_RAM512, 10, 1);
    cmp.flags |= command::FUSE_FIRST;
    let c1 = q.submit(cmp, Some(d.clone()), 0).unwrap();
    let mut fl = Command::flush(0xFFFF_FFFF);
    fl.flags |= command::FUSE_SECOND;
    let c2 = q.submit(fl, None, 0).unwrap();
    assert_eq!(q.wait_for(c1).unwrap().status, sc::ABORTED_FAILED_FUSED);
    assert_eq!(q.wait_for(c2).unwrap().status & 0xFF, sc::INVALID_FIELD);
    // A second half alone.
    let mut wr = Command::write(NS_RAM512, 10, 1);
    wr.flags |= command::FUSE_SECOND;
    let r = q.execute(wr, Some(pattern(4, 1024)), 0).unwrap();
    assert_eq!(r.status, sc::ABORTED_MISSING_FUSED);
    assert_same(&q.read(NS_RAM512, 10, 1, 512).unwrap(), &d, "data kept");
    still_works(&mut c);
}

#[test]
fn invalid_namespace() {
    let (_t, mut c) = setup();
    let q = &mut c.io[0];
    for nsid in [0u32, 4, 77, 1024, 0xFFFF_FFFE, 0xFFFF_FFFF] {
        expect_status_dnr(q.read(nsid, 0, 0, 512), sc::INVALID_NS);
        expect_status_dnr(q.write(nsid, 0, &[0u8; 512], 512), sc::INVALID_NS);
        expect_status_dnr(q.write_zeroes(nsid, 0, 0), sc::INVALID_NS);
        expect_status_dnr(q.verify(nsid, 0, 0), sc::INVALID_NS);
        expect_status_dnr(q.dsm_deallocate(nsid, &[(0, 1)]), sc::INVALID_NS);
        expect_status_dnr(q.copy(nsid, 8, &[(0, 1)]), sc::INVALID_NS);
        expect_status_dnr(q.compare(nsid, 0, &[0u8; 512], 512), sc::INVALID_NS);
    }
    // Flush of an inactive namespace; FFFFFFFFh means all namespaces.
    expect_status_dnr(q.flush(77), sc::INVALID_NS);
    q.flush(0xFFFF_FFFF).unwrap();
    still_works(&mut c);
}

#[test]
fn lba_out_of_range() {
    let (_t, mut c) = setup();
    let q = &mut c.io[0];
    let end = RAM_SIZE / 512;
    for (slba, nlb0) in [
        (end, 0u16),
        (end - 1, 1),
        (end - 100, 200),
        (u64::MAX, 0),
        (u64::MAX - 1, 5),
    ] {
        expect_status_dnr(q.read(NS_RAM512, slba, nlb0, 512), sc::LBA_OUT_OF_RANGE);
        let data = vec![7u8; (nlb0 as usize + 1) * 512];
        expect_status_dnr(q.write(NS_RAM512, slba, &data, 512), sc::LBA_OUT_OF_RANGE);
        expect_status_dnr(q.compare(NS_RAM512, slba, &data, 512), sc::LBA_OUT_OF_RANGE);
        expect_status_dnr(q.write_zeroes(NS_RAM512, slba, nlb0), sc::LBA_OUT_OF_RANGE);
        expect_status_dnr(q.verify(NS_RAM512, slba, nlb0), sc::LBA_OUT_OF_RANGE);
        expect_status_dnr(
            q.dsm_deallocate(NS_RAM512, &[(0, 1), (slba, nlb0 as u32 + 1)]),
            sc::LBA_OUT_OF_RANGE,
        );
    }
    // The last block is fine.
    write_read_check(q, NS_RAM512, 512, end - 1, 5, 512);
    // A DSM with one bad range changes none of the good ones.
    q.write(NS_RAM512, 0, &pattern(9, 512), 512).unwrap();
    expect_status_dnr(
        q.dsm_deallocate(NS_RAM512, &[(0, 1), (end, 1)]),
        sc::LBA_OUT_OF_RANGE,
    );
    assert_same(
        &q.read(NS_RAM512, 0, 0, 512).unwrap(),
        &pattern(9, 512),
        "after a bad DSM",
    );
    // 4 KiB blocks: the boundary in blocks, not bytes.
    let end4 = RAM_SIZE / 4096;
    expect_status_dnr(q.read(NS_RAM4K, end4, 0, 4096), sc::LBA_OUT_OF_RANGE);
    write_read_check(q, NS_RAM4K, 4096, end4 - 1, 6, 4096);
    still_works(&mut c);
}

#[test]
fn transfers_beyond_mdts() {
    let (_t, mut c) = setup();
    let q = &mut c.io[0];
    let too_big = MAX_IO as usize + 512;
    // The host's buffer (SGL length) is larger than MDTS.
    expect_status_dnr(
        q.read(NS_RAM512, 0, (too_big / 512 - 1) as u16, 512),
        sc::INVALID_FIELD,
    );
    expect_status_dnr(
        q.write(NS_RAM512, 0, &vec![1u8; too_big], 512),
        sc::INVALID_FIELD,
    );
    expect_status_dnr(
        q.compare(NS_RAM512, 0, &vec![1u8; too_big], 512),
        sc::INVALID_FIELD,
    );
    // 4 KiB blocks: MDTS / 4096 + 1 blocks.
    expect_status_dnr(
        q.read(NS_RAM4K, 0, (MAX_IO / 4096) as u16, 4096),
        sc::INVALID_FIELD,
    );
    // NLB beyond MDTS with a small buffer.
    let cmd = with_sgl(
        Command::read(NS_RAM512, 0, (too_big / 512 - 1) as u16),
        0x200,
        command::SGL_TRANSPORT_DATA_BLOCK,
        4096,
    );
    let (cqe, data) = raw_cmd(q, &cmd, &[]);
    assert_cqe(&cqe, sc::INVALID_FIELD);
    assert!(data.is_empty());
    // Exactly MDTS is fine, both ways.
    write_read_check(q, NS_RAM512, 512, 0, 1, MAX_IO as usize);
    // Write Zeroes and Verify move no data: no MDTS limit.
    q.write_zeroes(NS_RAM512, 0, 0xFFFF).unwrap();
    q.verify(NS_RAM512, 0, 0xFFFF).unwrap();
    still_works(&mut c);
}

#[test]
fn sgl_errors() {
    let (_t, mut c) = setup();
    let q = &mut c.io[0];
    // A read must use a transport SGL: an in-capsule (offset) descriptor,
    // a keyed descriptor or a segment descriptor are the wrong type.
    for id in [command::SGL_DATA_BLOCK_OFFSET, 0x40, 0x20, 0x30] {
        let cmd = with_sgl(Command::read(NS_RAM512, 0, 0), 0x300, id, 512);
        let (cqe, data) = raw_cmd(q, &cmd, &[]);
        assert_cqe(&cqe, sc::SGL_TYPE_INVALID);
        assert!(cqe.dnr());
        assert!(data.is_empty());
    }
    // A write with a segment descriptor.
    let cmd = with_sgl(Command::write(NS_RAM512, 0, 0), 0x301, 0x20, 512);
    let (cqe, _) = raw_cmd(q, &cmd, &[]);
    assert_cqe(&cqe, sc::SGL_TYPE_INVALID);
    // In-capsule SGL longer than the data in the capsule.
    let cmd = with_sgl(
        Command::write(NS_RAM512, 0, 1),
        0x302,
        command::SGL_DATA_BLOCK_OFFSET,
        1024,
    );
    let (cqe, _) = raw_cmd(q, &cmd, &[5u8; 512]);
    assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
    // In-capsule data shorter than the blocks to write.
    let cmd = with_sgl(
        Command::write(NS_RAM512, 0, 1),
        0x303,
        command::SGL_DATA_BLOCK_OFFSET,
        512,
    );
    let (cqe, _) = raw_cmd(q, &cmd, &[5u8; 512]);
    assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
    // A read buffer smaller than the blocks to read.
    let cmd = with_sgl(
        Command::read(NS_RAM512, 0, 1),
        0x304,
        command::SGL_TRANSPORT_DATA_BLOCK,
        512,
    );
    let (cqe, data) = raw_cmd(q, &cmd, &[]);
    assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
    assert!(data.is_empty());
    // DSM with fewer range bytes than NR says.
    let cmd = with_sgl(
        Command::dsm(NS_RAM512, 3, true),
        0x305,
        command::SGL_DATA_BLOCK_OFFSET,
        32,
    );
    let (cqe, _) = raw_cmd(q, &cmd, &command::dsm_ranges(&[(0, 1), (2, 1)]));
    assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
    // Copy with fewer descriptor bytes than NR says.
    let cmd = with_sgl(
        Command::copy(NS_RAM512, 64, 2, 0),
        0x306,
        command::SGL_DATA_BLOCK_OFFSET,
        32,
    );
    let (cqe, _) = raw_cmd(q, &cmd, &command::copy_ranges_format0(&[(0, 0)]));
    assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
    // Identify into a buffer described in-capsule.
    let cmd = with_sgl(
        Command::identify(1, 0, 0, 0),
        0x307,
        command::SGL_DATA_BLOCK_OFFSET,
        4096,
    );
    let (cqe, _) = raw_cmd(&mut c.admin, &cmd, &[]);
    assert_cqe(&cqe, sc::SGL_TYPE_INVALID);
    still_works(&mut c);
}

/// SGLS bit 18 (SGL longer than the data) is clear in Identify Controller,
/// so an SGL longer than the transfer is Data SGL Length Invalid, and nothing
/// is transferred or written.
#[test]
fn sgl_longer_than_the_transfer() {
    let (_t, mut c) = setup();
    assert_eq!(c.id.sgls & (1 << 18), 0, "SGLS bit 18");
    let q = &mut c.io[0];
    let before = pattern(20, 1024);
    q.write(NS_RAM512, 200, &before, 512).unwrap();
    // A read of one block into a two-block buffer.
    let cmd = with_sgl(
        Command::read(NS_RAM512, 200, 0),
        0x500,
        command::SGL_TRANSPORT_DATA_BLOCK,
        1024,
    );
    let (cqe, data) = raw_cmd(q, &cmd, &[]);
    assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
    assert!(data.is_empty(), "data sent for a rejected read");
    // In-capsule data longer than the blocks written.
    let cmd = with_sgl(
        Command::write(NS_RAM512, 200, 0),
        0x501,
        command::SGL_DATA_BLOCK_OFFSET,
        1024,
    );
    let (cqe, _) = raw_cmd(q, &cmd, &pattern(21, 1024));
    assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
    // The same through R2T.
    q.set_in_capsule_max(0);
    let r = q
        .execute(
            Command::write(NS_RAM512, 200, 0),
            Some(pattern(22, 1024)),
            0,
        )
        .unwrap();
    assert_eq!(
        r.status,
        sc::SGL_LENGTH_INVALID,
        "R2T write longer than NLB"
    );
    // Compare data longer than the blocks compared.
    let r = q
        .execute(Command::compare(NS_RAM512, 200, 0), Some(before.clone()), 0)
        .unwrap();
    assert_eq!(r.status, sc::SGL_LENGTH_INVALID, "compare longer than NLB");
    assert_same(
        &q.read(NS_RAM512, 200, 1, 512).unwrap(),
        &before,
        "data unchanged",
    );
    still_works(&mut c);
}

#[test]
fn io_commands_on_a_disabled_controller_are_refused() {
    let (_t, mut c) = setup();
    let before = pattern(30, 4096);
    c.io[0].write(NS_RAM512, 300, &before, 512).unwrap();
    // Controller reset: CC.EN 1 -> 0.
    let cc = c.property_get(command::PROP_CC, false).unwrap();
    c.property_set(command::PROP_CC, false, 0).unwrap();
    assert_eq!(c.property_get(command::PROP_CSTS, false).unwrap() & 1, 0);
    // The reset deleted the I/O queue: it writes nothing more (Command
    // Sequence Error with DNR: a retry there cannot succeed), and the
    // target closes its connection at its next tick.
    match c.io[0].write(NS_RAM512, 300, &pattern(31, 4096), 512) {
        Err(nvmf_initiator::Error::Status { status, dnr, .. }) => {
            assert_eq!(status, sc::CMD_SEQ_ERROR, "write on a deleted queue");
            assert!(dnr, "Command Sequence Error without DNR on a deleted queue");
        }
        Err(nvmf_initiator::Error::Closed) => {}
        other => panic!("write on a disabled controller: {other:?}"),
    }
    c.io[0]
        .wait_closed(std::time::Duration::from_secs(10))
        .expect("the target closes an I/O queue a reset deleted");
    // Enabled again, the data is what it was before the reset, and the
    // old queue stays gone: the host connects a new one, with the same ID.
    c.property_set(command::PROP_CC, false, cc).unwrap();
    assert_eq!(c.property_get(command::PROP_CSTS, false).unwrap() & 1, 1);
    c.io.pop().unwrap().close();
    let (addr, id) = (c.admin.peer_addr(), c.cntlid);
    let mut q = None;
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            q = Queue::connect(addr, 1, NQN, id, &opts()).ok();
            q.is_some()
        }),
        "no new I/O queue after re-enabling"
    );
    let mut q = q.unwrap();
    assert_same(
        &q.read(NS_RAM512, 300, 7, 512).unwrap(),
        &before,
        "data written while disabled",
    );
}

#[test]
fn command_sequence_errors() {
    let t = start_basic();
    let o = opts();
    // Commands before Connect.
    let mut q = Queue::connect_transport(t.addr(), &o).unwrap();
    expect_status_dnr(q.property_get(command::PROP_CAP, true), sc::CMD_SEQ_ERROR);
    expect_status_dnr(q.identify(1, 0, 0, 0), sc::CMD_SEQ_ERROR);
    expect_status_dnr(q.keep_alive(), sc::CMD_SEQ_ERROR);
    let r = q.execute(Command::read(1, 0, 0), None, 512).unwrap();
    assert_eq!(r.status, sc::CMD_SEQ_ERROR);
    // The queue can still be connected afterwards.
    let data = nvmf_initiator::queue::connect_data(&o.hostid, 0xFFFF, NQN, &o.hostnqn).unwrap();
    let cntlid = q
        .execute(Command::connect(0, 31, 0, 0), Some(data), 0)
        .unwrap()
        .check()
        .expect("Connect after rejected commands")
        .dw0 as u16;
    // Admin commands before CC.EN.
    expect_status_dnr(q.identify(1, 0, 0, 0), sc::CMD_SEQ_ERROR);
    expect_status_dnr(q.get_log_page(2, 0, 512, 0, 0), sc::CMD_SEQ_ERROR);
    expect_status_dnr(q.set_number_of_queues(1, 1), sc::CMD_SEQ_ERROR);
    // Properties work.
    q.property_get(command::PROP_CAP, true).unwrap();
    // I/O queue before CC.EN.
    expect_status_dnr(
        Queue::connect(t.addr(), 1, NQN, cntlid, &o),
        sc::CMD_SEQ_ERROR,
    );
}

#[test]
fn data_digest_errors_complete_with_transient_transport_error() {
    let t = start_basic();
    let mut o = opts();
    o.data_digest = true;
    o.hdr_digest = true;
    o.in_capsule_max = 1 << 20;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    let q = &mut c.io[0];
    let before = pattern(10, 2048);
    q.write(NS_RAM512, 50, &before, 512).unwrap();
    let tx = q.tx_config();

    // In-capsule data with a bad data digest.
    let new = pattern(11, 2048);
    let cmd = with_sgl(
        Command::write(NS_RAM512, 50, 3),
        0x400,
        command::SGL_DATA_BLOCK_OFFSET,
        2048,
    );
    let mut bytes = pdu::encode_capsule_cmd(&cmd.to_bytes(), &new, &tx);
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    q.send_raw(&bytes).unwrap();
    match q.recv_raw_pdu().unwrap() {
        Pdu::CapsuleResp(r) => {
            let cqe = Cqe::parse(&r.cqe);
            assert_eq!(cqe.cid, 0x400);
            assert_cqe(&cqe, sc::TRANSIENT_TRANSPORT);
            assert!(!cqe.dnr(), "a transient transport error may be retried");
        }
        other => panic!("expected CapsuleResp, got {other:?}"),
    }
    assert_same(
        &q.read(NS_RAM512, 50, 3, 512).unwrap(),
        &before,
        "after bad in-capsule digest",
    );

    // H2CData with a bad data digest.
    let cmd = with_sgl(
        Command::write(NS_RAM512, 50, 3),
        0x401,
        command::SGL_TRANSPORT_DATA_BLOCK,
        2048,
    );
    q.send_raw(&pdu::encode_capsule_cmd(&cmd.to_bytes(), &[], &tx))
        .unwrap();
    let r2t = match q.recv_raw_pdu().unwrap() {
        Pdu::R2t(r) => r,
        other => panic!("expected R2T, got {other:?}"),
    };
    let mut bytes = pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        0x401,
        r2t.ttag,
        0,
        &new[..1024],
        false,
        false,
        &tx,
    );
    let n = bytes.len();
    bytes[n - 2] ^= 0x01;
    bytes.extend(pdu::encode_data_pdu(
        pdu::PDU_H2C_DATA,
        0x401,
        r2t.ttag,
        1024,
        &new[1024..],
        true,
        false,
        &tx,
    ));
    q.send_raw(&bytes).unwrap();
    match q.recv_raw_pdu().unwrap() {
        Pdu::CapsuleResp(r) => {
            let cqe = Cqe::parse(&r.cqe);
            assert_eq!(cqe.cid, 0x401);
            assert_cqe(&cqe, sc::TRANSIENT_TRANSPORT);
        }
        other => panic!("expected CapsuleResp, got {other:?}"),
    }
    assert_same(
        &q.read(NS_RAM512, 50, 3, 512).unwrap(),
        &before,
        "after bad H2CData digest",
    );
    // The connection is fine: a retry succeeds.
    q.write(NS_RAM512, 50, &new, 512).unwrap();
    assert_same(
        &q.read(NS_RAM512, 50, 3, 512).unwrap(),
        &new,
        "retried write",
    );
    c.shutdown().unwrap();
}

#[test]
fn errors_do_not_disturb_commands_in_flight() {
    let (_t, mut c) = setup();
    let q = &mut c.io[0];
    let mut rng = Rng::new(5);
    let mut expect = std::collections::HashMap::new();
    for i in 0..96u64 {
        let (cmd, data, want) = match rng.below(4) {
            0 => (
                Command::read(NS_RAM512, RAM_SIZE / 512, 0),
                None,
                sc::LBA_OUT_OF_RANGE,
            ),
            1 => (Command::read(99, 0, 0), None, sc::INVALID_NS),
            2 => {
                let mut w = Command::new(0x80);
                w.nsid = 1;
                (w, None, sc::INVALID_OPCODE)
            }
            _ => (
                Command::write(NS_RAM512, 6000 + i, 0),
                Some(pattern(i, 512)),
                0,
            ),
        };
        let len = if cmd.opcode == command::NVM_READ {
            512
        } else {
            0
        };
        let cid = q.submit(cmd, data, len).unwrap();
        expect.insert(cid, want);
        if expect.len() >= 32 {
            let r = q.wait().unwrap();
            assert_eq!(r.status, expect.remove(&r.cid).unwrap(), "cid {}", r.cid);
        }
    }
    while !expect.is_empty() {
        let r = q.wait().unwrap();
        assert_eq!(r.status, expect.remove(&r.cid).unwrap());
    }
    still_works(&mut c);
}

/// Identify, Get Log Page and Get Features (Host Identifier) return a fixed
/// amount of data: a host buffer (SGL) shorter or longer than that is Data
/// SGL Length Invalid (SGLS bit 18 is clear), as nvmet answers, and no data
/// is sent. The exact length works.
#[test]
fn admin_data_lengths_must_match_what_the_command_returns() {
    let (_t, mut c) = setup();
    let cases: Vec<(Command, u32)> = vec![
        (Command::identify(1, 0, 0, 0), 4096),
        (Command::identify(0, NS_RAM512, 0, 0), 4096),
        // SMART, NUMD for 512 bytes.
        (
            Command::get_log_page(0x02, 0xFFFF_FFFF, 512, 0, 0, false),
            512,
        ),
        // Error log, 4 entries.
        (Command::get_log_page(0x01, 0, 256, 0, 0, false), 256),
        // Host Identifier, 128-bit (EXHID).
        (Command::get_features(0x81, 0, 0, 1), 16),
    ];
    let mut cid = 0x700;
    for (cmd, len) in cases {
        for wrong in [len / 2, len + 4, 4, len * 2] {
            cid += 1;
            let c2 = with_sgl(cmd, cid, command::SGL_TRANSPORT_DATA_BLOCK, wrong);
            let (cqe, data) = raw_cmd(&mut c.admin, &c2, &[]);
            assert_cqe(&cqe, sc::SGL_LENGTH_INVALID);
            assert!(
                cqe.dnr(),
                "DNR for opcode {:#x} with {wrong} bytes",
                cmd.opcode
            );
            assert!(data.is_empty(), "data sent into a {wrong}-byte buffer");
        }
        cid += 1;
        let c2 = with_sgl(cmd, cid, command::SGL_TRANSPORT_DATA_BLOCK, len);
        let (cqe, data) = raw_cmd(&mut c.admin, &c2, &[]);
        assert_cqe(&cqe, 0);
        assert_eq!(data.len(), len as usize, "opcode {:#x}", cmd.opcode);
    }
    still_works(&mut c);
}

/// A reset and a re-enable in quick succession: an I/O queue from before
/// the reset is deleted even though the controller is ready again, so it
/// writes nothing (Command Sequence Error, DNR) and is closed.
#[test]
fn an_io_queue_from_before_a_reset_stays_deleted() {
    let (_t, mut c) = setup();
    let before = pattern(40, 4096);
    c.io[0].write(NS_RAM512, 400, &before, 512).unwrap();
    let cc = c.property_get(command::PROP_CC, false).unwrap();
    c.property_set(command::PROP_CC, false, 0).unwrap();
    c.property_set(command::PROP_CC, false, cc).unwrap();
    assert_eq!(c.property_get(command::PROP_CSTS, false).unwrap() & 1, 1);
    match c.io[0].write(NS_RAM512, 400, &pattern(41, 4096), 512) {
        Err(nvmf_initiator::Error::Status { status, dnr, .. }) => {
            assert_eq!(
                (status, dnr),
                (sc::CMD_SEQ_ERROR, true),
                "write on a deleted queue"
            );
        }
        Err(nvmf_initiator::Error::Closed) => {}
        other => panic!("write on a queue from before the reset: {other:?}"),
    }
    c.io[0]
        .wait_closed(std::time::Duration::from_secs(10))
        .expect("the target closes an I/O queue a reset deleted");
    c.io.pop().unwrap().close();
    let mut q = Queue::connect(c.admin.peer_addr(), 1, NQN, c.cntlid, &opts())
        .expect("a new I/O queue with the same ID");
    assert_same(&q.read(NS_RAM512, 400, 7, 512).unwrap(), &before, "data");
}
