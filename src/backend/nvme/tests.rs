//! The driver's pieces against the simulated controller: bring-up, I/O with
//! PRP lists, wrap-around, a full queue, completions out of order, timeouts
//! and aborts, a controller that fails.

use super::sim::{Mode, SimController, SimMem};
use super::*;
use crate::nvme::io_op;
use std::time::{Duration, Instant};

const MEM: usize = 8 << 20;

fn want(nsid: u32, queues: u16, depth: u32, vectors: u16) -> Want {
    Want {
        nsid,
        queues,
        depth,
        vectors,
    }
}

fn up(depth: u32) -> (Arc<SimMem>, SimController, Up, DmaArena) {
    let mem = SimMem::new(MEM);
    // 16 MiB of 512-byte blocks, MDTS 5 (128 KiB), up to 64 entries.
    let sim = SimController::new(mem.clone(), 32768, 9, 5, 63);
    let mut arena = DmaArena::new(0, MEM as u64);
    let up = bring_up(&sim, &*mem, &mut arena, want(1, 2, depth, 0), &mut |_| {})
        .expect("the simulated controller comes up");
    (mem, sim, up, arena)
}

use std::sync::Arc;

fn rw(op: u8, slba: u64, blocks: u32, prp1: u64, prp2: u64) -> Command {
    Command {
        opcode: op,
        nsid: 1,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: blocks - 1,
        dptr: prp_dptr(prp1, prp2),
        ..Default::default()
    }
}

/// Submits and rings; polls and acknowledges; returns what completed.
fn run(
    sim: &SimController,
    mem: &SimMem,
    q: &mut QueuePair,
    dstrd: u32,
    cmds: Vec<(Command, u64)>,
) -> Vec<Done> {
    let far = Instant::now() + Duration::from_secs(60);
    for (c, t) in cmds {
        q.submit(mem, c, t, far).expect("room in the queue");
    }
    if let Some(tail) = q.sq_doorbell() {
        sim.write32(doorbell(q.qid, false, dstrd), tail as u32);
    }
    let mut done = Vec::new();
    if let Some(head) = q.poll(mem, &mut done) {
        sim.write32(doorbell(q.qid, true, dstrd), head as u32);
    }
    done
}

#[test]
fn bring_up_reads_the_controller_and_namespace_and_creates_queues() {
    let (_mem, sim, up, _) = up(32);
    assert_eq!(up.identity.max_transfer, 128 << 10);
    assert_eq!(up.identity.namespaces, 1);
    assert!(up.identity.vwc);
    assert_eq!(up.ns.blocks, 32768);
    assert_eq!(up.ns.lba_shift, 9);
    assert_eq!(up.io.len(), 2, "the two queue pairs asked for");
    assert_eq!(up.io[0].entries(), 32);
    assert_eq!(sim.read32(reg::CSTS) & reg::CSTS_RDY, 1);
    // Identify, Identify, Set Features, and Create CQ + SQ twice.
    assert_eq!(sim.commands(), 7);
}

#[test]
fn bring_up_refuses_what_it_cannot_drive() {
    let mem = SimMem::new(MEM);
    let sim = SimController::new(mem.clone(), 1024, 9, 5, 63);
    let mut arena = DmaArena::new(0, MEM as u64);
    let e = bring_up(&sim, &*mem, &mut arena, want(2, 1, 32, 0), &mut |_| {})
        .err()
        .unwrap();
    assert!(e.contains("namespace 2 does not exist"), "{e}");
    // Queue depth is clamped to what CAP.MQES allows.
    let mut arena = DmaArena::new(0, MEM as u64);
    let up = bring_up(&sim, &*mem, &mut arena, want(1, 1, 1000, 0), &mut |_| {}).unwrap();
    assert_eq!(up.io[0].entries(), 64);
    // No DMA memory left for queues.
    let mut tiny = DmaArena::new(0, 8192);
    assert!(bring_up(&sim, &*mem, &mut tiny, want(1, 1, 32, 0), &mut |_| {}).is_err());
}

#[test]
fn writes_and_reads_through_prp_lists_reach_the_media() {
    let (mem, sim, mut up, mut arena) = up(32);
    let q = &mut up.io[0];
    let data: Vec<u8> = (0..128 * 1024u32).map(|i| (i * 13 + 7) as u8).collect();
    let buf = arena.alloc(128 << 10).unwrap();
    let list = arena.alloc(4096).unwrap();
    let mut entries = Vec::new();
    // An unaligned start: 33 pages, a PRP list.
    let at = buf + 512;
    let (p1, p2) = prp::build(at, 64 << 10, list, &mut entries).unwrap();
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    assert!(mem.write(list, &bytes));
    assert!(mem.write(at, &data[..64 << 10]));
    let done = run(
        &sim,
        &mem,
        q,
        up.dstrd,
        vec![(rw(io_op::WRITE, 100, 128, p1, p2), 7)],
    );
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].token, done[0].status), (7, Status::SUCCESS));
    assert_eq!(sim.media(100 * 512, 64 << 10), data[..64 << 10]);
    // Read it back into another place.
    assert!(mem.write(at, &vec![0u8; 64 << 10]));
    let done = run(
        &sim,
        &mem,
        q,
        up.dstrd,
        vec![(rw(io_op::READ, 100, 128, p1, p2), 8)],
    );
    assert_eq!(done[0].status, Status::SUCCESS);
    let mut back = vec![0u8; 64 << 10];
    assert!(mem.read(at, &mut back));
    assert_eq!(back, data[..64 << 10]);
    // The device's status goes back unchanged: past the end of the namespace.
    let done = run(
        &sim,
        &mem,
        q,
        up.dstrd,
        vec![(rw(io_op::READ, 32767, 2, p1, p2), 9)],
    );
    assert_eq!(done[0].status, Status::LBA_OUT_OF_RANGE.dnr());
}

#[test]
fn queues_wrap_around_with_the_phase_tag() {
    let (mem, sim, mut up, mut arena) = up(4);
    let q = &mut up.io[0];
    let buf = arena.alloc(4096).unwrap();
    // 100 commands through a 4-entry queue: the tail, the head and the
    // phase wrap 25 times.
    for i in 0..100u64 {
        let done = run(
            &sim,
            &mem,
            q,
            up.dstrd,
            vec![(rw(io_op::READ, i, 1, buf, 0), i)],
        );
        assert_eq!(done.len(), 1, "command {i}");
        assert_eq!(done[0].token, i);
        assert!(done[0].status.is_success());
    }
    assert_eq!(q.in_flight(), 0);
    assert_eq!(q.stray, 0);
}

#[test]
fn a_full_queue_refuses_until_completions_come() {
    let (mem, sim, mut up, mut arena) = up(4);
    sim.set_mode(Mode::Hold);
    let q = &mut up.io[0];
    let buf = arena.alloc(4096).unwrap();
    let far = Instant::now() + Duration::from_secs(60);
    for i in 0..3 {
        q.submit(&*mem, rw(io_op::READ, i, 1, buf, 0), i, far)
            .unwrap();
    }
    assert!(!q.has_room());
    assert_eq!(
        q.submit(&*mem, rw(io_op::READ, 9, 1, buf, 0), 9, far),
        Err(SubmitError::Full)
    );
    sim.write32(
        doorbell(1, false, up.dstrd),
        q.sq_doorbell().unwrap() as u32,
    );
    sim.release(false);
    let mut done = Vec::new();
    q.poll(&*mem, &mut done).unwrap();
    assert_eq!(done.len(), 3);
    assert!(q.has_room());
}

/// Memory whose byte-wise reads of the completion queue see a torn entry:
/// the new phase tag beside the command id and SQ head of the entry one lap
/// before (what an emulated CPU's byte-by-byte copy sees when it races the
/// device's write). Word loads see the truth.
struct Torn {
    mem: Arc<SimMem>,
    cq: std::ops::Range<u64>,
}

impl DmaMem for Torn {
    fn read(&self, iova: u64, dst: &mut [u8]) -> bool {
        if !self.mem.read(iova, dst) {
            return false;
        }
        if self.cq.contains(&iova) && dst.len() >= 16 {
            dst[8..10].copy_from_slice(&0u16.to_le_bytes());
            dst[12..14].copy_from_slice(&5u16.to_le_bytes());
        }
        true
    }
    fn write(&self, iova: u64, src: &[u8]) -> bool {
        self.mem.write(iova, src)
    }
    fn load64(&self, iova: u64) -> Option<u64> {
        self.mem.load64(iova)
    }
}

#[test]
fn a_completion_is_read_whole_not_byte_by_byte() {
    let (mem, sim, mut up, mut arena) = up(8);
    let q = &mut up.io[0];
    let cq = q.cq_iova()..q.cq_iova() + 8 * qpair::CQE;
    let torn = Torn {
        mem: mem.clone(),
        cq,
    };
    let buf = arena.alloc(4096).unwrap();
    let far = Instant::now() + Duration::from_secs(60);
    for round in 0..3u64 {
        for i in 0..6u64 {
            q.submit(&torn, rw(io_op::READ, i, 1, buf, 0), round * 10 + i, far)
                .unwrap();
        }
        sim.write32(
            doorbell(1, false, up.dstrd),
            q.sq_doorbell().unwrap() as u32,
        );
        let mut done = Vec::new();
        let head = q.poll(&torn, &mut done).unwrap();
        sim.write32(doorbell(1, true, up.dstrd), head as u32);
        let tokens: Vec<u64> = done.iter().map(|d| d.token).collect();
        assert_eq!(tokens, (0..6).map(|i| round * 10 + i).collect::<Vec<_>>());
        assert_eq!(q.in_flight(), 0);
        assert_eq!(
            q.room(),
            7,
            "the SQ head the device reported, not a stale one"
        );
    }
    assert_eq!(q.stray, 0);
}

#[test]
fn completions_out_of_order_find_their_commands() {
    let (mem, sim, mut up, mut arena) = up(16);
    sim.set_mode(Mode::Hold);
    let q = &mut up.io[0];
    let buf = arena.alloc(4096).unwrap();
    let cmds = (0..10u64)
        .map(|i| (rw(io_op::READ, i, 1, buf, 0), 100 + i))
        .collect();
    assert!(run(&sim, &mem, q, up.dstrd, cmds).is_empty());
    assert_eq!(sim.held(), 10);
    sim.release(true);
    let mut done = Vec::new();
    let head = q.poll(&*mem, &mut done).unwrap();
    sim.write32(doorbell(1, true, up.dstrd), head as u32);
    let tokens: Vec<u64> = done.iter().map(|d| d.token).collect();
    assert_eq!(tokens, (100..110).rev().collect::<Vec<_>>());
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn an_overdue_command_is_aborted_and_the_queue_goes_on() {
    let (mem, sim, mut up, mut arena) = up(8);
    sim.set_mode(Mode::Drop);
    let buf = arena.alloc(4096).unwrap();
    let start = Instant::now();
    let q = &mut up.io[0];
    let cid = q
        .submit(
            &*mem,
            rw(io_op::READ, 5, 1, buf, 0),
            42,
            start + Duration::from_millis(5),
        )
        .unwrap();
    sim.write32(
        doorbell(1, false, up.dstrd),
        q.sq_doorbell().unwrap() as u32,
    );
    let mut done = Vec::new();
    assert!(q.poll(&*mem, &mut done).is_none());
    assert_eq!(q.overdue(start).count(), 0);
    let late = start + Duration::from_millis(10);
    assert_eq!(q.overdue(late).collect::<Vec<_>>(), vec![(cid, 42)]);
    // The driver aborts it on the admin queue; the command completes aborted.
    let abort = Command {
        opcode: admin::ABORT,
        cdw10: 1 | (cid as u32) << 16,
        ..Default::default()
    };
    let a = run(&sim, &mem, &mut up.admin, up.dstrd, vec![(abort, 1)]);
    assert_eq!(a[0].dw0 & 1, 0, "aborted");
    let q = &mut up.io[0];
    q.poll(&*mem, &mut done).unwrap();
    assert_eq!(done[0].token, 42);
    assert_eq!(done[0].status, Status::ABORT_REQUESTED);
    // The queue keeps working.
    sim.set_mode(Mode::Immediate);
    let d = run(
        &sim,
        &mem,
        q,
        up.dstrd,
        vec![(rw(io_op::READ, 6, 1, buf, 0), 43)],
    );
    assert_eq!((d[0].token, d[0].status), (43, Status::SUCCESS));
}

#[test]
fn a_command_given_up_on_frees_its_id_only_when_it_completes() {
    let (mem, sim, mut up, mut arena) = up(4);
    sim.set_mode(Mode::Hold);
    let buf = arena.alloc(4096).unwrap();
    let q = &mut up.io[0];
    let far = Instant::now() + Duration::from_secs(60);
    let cid = q
        .submit(&*mem, rw(io_op::READ, 1, 1, buf, 0), 1, far)
        .unwrap();
    sim.write32(
        doorbell(1, false, up.dstrd),
        q.sq_doorbell().unwrap() as u32,
    );
    assert_eq!(q.forget(cid), Some(1));
    // Two ids left of three; the forgotten one is not reused yet.
    for t in 2..4 {
        let c = q
            .submit(&*mem, rw(io_op::READ, t, 1, buf, 0), t, far)
            .unwrap();
        assert_ne!(c, cid);
    }
    assert!(!q.has_room());
    sim.write32(
        doorbell(1, false, up.dstrd),
        q.sq_doorbell().unwrap() as u32,
    );
    sim.release(false);
    let mut done = Vec::new();
    q.poll(&*mem, &mut done).unwrap();
    // The late completion is not delivered; the other two are.
    assert_eq!(done.iter().map(|d| d.token).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(q.stray, 0);
    assert!(q.has_room());
}

#[test]
fn a_failed_controller_completes_nothing_and_its_commands_are_given_back() {
    let (mem, sim, mut up, mut arena) = up(8);
    let buf = arena.alloc(4096).unwrap();
    sim.fail();
    assert_ne!(sim.read32(reg::CSTS) & reg::CSTS_CFS, 0);
    let q = &mut up.io[0];
    let d = run(
        &sim,
        &mem,
        q,
        up.dstrd,
        vec![
            (rw(io_op::READ, 1, 1, buf, 0), 5),
            (rw(io_op::READ, 2, 1, buf, 0), 6),
        ],
    );
    assert!(d.is_empty());
    let mut lost = q.forget_all();
    lost.sort();
    assert_eq!(lost, vec![5, 6]);
    // Bring-up again resets and re-enables it (CC.EN 1 -> 0 -> 1).
    let mut arena = DmaArena::new(0, MEM as u64);
    let again = bring_up(&sim, &*mem, &mut arena, want(1, 1, 8, 0), &mut |_| {}).unwrap();
    assert_eq!(sim.read32(reg::CSTS) & reg::CSTS_CFS, 0);
    let mut q = again.io.into_iter().next().unwrap();
    let d = run(
        &sim,
        &mem,
        &mut q,
        again.dstrd,
        vec![(rw(io_op::READ, 1, 1, buf, 0), 7)],
    );
    assert_eq!((d[0].token, d[0].status), (7, Status::SUCCESS));
}

/// One read through queue pair `q` of `dev`: its status.
fn read_one(dev: &device::NvmeDevice, q: &mut QueuePair, buf: u64, token: u64) -> Option<Status> {
    let far = Instant::now() + Duration::from_secs(60);
    q.submit(dev.mem(), rw(io_op::READ, 1, 1, buf, 0), token, far)
        .ok()?;
    if let Some(tail) = q.sq_doorbell() {
        dev.ring_sq(q.qid, tail);
    }
    let mut done = Vec::new();
    if let Some(head) = q.poll(dev.mem(), &mut done) {
        dev.ring_cq(q.qid, head);
    }
    done.iter().find(|d| d.token == token).map(|d| d.status)
}

#[test]
fn a_failed_controller_is_reset_and_its_queues_work_again() {
    let (dev, sim) = device::NvmeDevice::open_sim_shared(1 << 20, 9, 1, false).unwrap();
    let mut q = dev.take_queue().unwrap();
    let buf = dev.alloc(4096).unwrap();
    // Some commands, so that the queue's head, tail and phase are not where
    // a new queue starts.
    for t in 0..200 {
        assert_eq!(read_one(&dev, &mut q, buf, t), Some(Status::SUCCESS));
    }
    assert!(!dev.check_failed());
    assert_eq!(dev.generation(), 0);
    sim.fail();
    assert!(dev.check_failed());
    assert!(dev.is_failed());
    assert_eq!(
        read_one(&dev, &mut q, buf, 500),
        None,
        "a failed controller completes nothing"
    );

    // The reset runs in a thread of its own; the namespace comes back in a
    // new generation.
    dev.recover();
    let until = Instant::now() + Duration::from_secs(30);
    while dev.is_failed() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!dev.is_failed(), "the reset brought the controller back");
    assert_eq!(dev.generation(), 1);
    assert!(!dev.check_failed());
    // The reactor's queue pair starts over on the new queues.
    q.reset();
    for t in 1000..1200 {
        assert_eq!(read_one(&dev, &mut q, buf, t), Some(Status::SUCCESS));
    }
    // A second failure is not reset again before the retry interval.
    sim.fail();
    assert!(dev.check_failed());
    dev.recover();
    std::thread::sleep(Duration::from_millis(500));
    assert!(dev.is_failed());
    // Reset by hand, it comes back.
    dev.reset().unwrap();
    assert_eq!(dev.generation(), 2);
}

#[test]
fn a_controller_that_takes_sgls_is_identified_and_given_data_blocks() {
    let mem = SimMem::new(MEM);
    let sim = SimController::new(mem.clone(), 32768, 9, 5, 63);
    // Without SGL support, PSDT 01b is refused.
    let mut arena = DmaArena::new(0, MEM as u64);
    let plain = bring_up(&sim, &*mem, &mut arena, want(1, 1, 16, 0), &mut |_| {}).unwrap();
    assert!(!plain.identity.takes_sgls());
    let buf = arena.alloc(3 * 4096).unwrap();
    let mut q = plain.io.into_iter().next().unwrap();
    let sgl_read = |slba: u64, blocks: u32, at: u64, len: u32, id: u8| {
        let mut c = rw(io_op::READ, slba, blocks, 0, 0);
        c.flags = PSDT_SGL;
        c.dptr = sgl_dptr(at, len);
        c.dptr[15] = id;
        c
    };
    let d = run(
        &sim,
        &mem,
        &mut q,
        plain.dstrd,
        vec![(sgl_read(0, 8, buf, 4096, 0), 1)],
    );
    assert_eq!(d[0].status, Status::INVALID_FIELD.dnr());

    // With it: Identify says so, and one descriptor moves a page-crossing,
    // multi-page transfer (what PRPs need a list for).
    sim.offer_sgls();
    let mut arena = DmaArena::new(0, MEM as u64);
    let up = bring_up(&sim, &*mem, &mut arena, want(1, 1, 16, 0), &mut |_| {}).unwrap();
    assert!(up.identity.takes_sgls());
    let buf = arena.alloc(4 * 4096).unwrap();
    let data: Vec<u8> = (0..10_240u32).map(|i| (i * 7 + 3) as u8).collect();
    assert!(mem.write(buf + 512, &data));
    let mut q = up.io.into_iter().next().unwrap();
    let mut w = rw(io_op::WRITE, 100, 20, 0, 0);
    w.flags = PSDT_SGL;
    w.dptr = sgl_dptr(buf + 512, 10_240);
    let before = sim.sgl_commands();
    let d = run(&sim, &mem, &mut q, up.dstrd, vec![(w, 2)]);
    assert_eq!(d[0].status, Status::SUCCESS);
    assert!(mem.write(buf + 512, &vec![0u8; 10_240]));
    let d = run(
        &sim,
        &mem,
        &mut q,
        up.dstrd,
        vec![(sgl_read(100, 20, buf + 512, 10_240, 0), 3)],
    );
    assert_eq!(d[0].status, Status::SUCCESS);
    let mut back = vec![0u8; 10_240];
    assert!(mem.read(buf + 512, &mut back));
    assert_eq!(back, data);
    assert_eq!(sim.sgl_commands() - before, 2);
    // A descriptor of another type, or whose length is not the transfer's.
    let d = run(
        &sim,
        &mem,
        &mut q,
        up.dstrd,
        vec![(sgl_read(0, 8, buf, 4096, 0x20), 4)],
    );
    assert_eq!(d[0].status, Status::SGL_TYPE_INVALID.dnr());
    let d = run(
        &sim,
        &mem,
        &mut q,
        up.dstrd,
        vec![(sgl_read(0, 8, buf, 2048, 0), 5)],
    );
    assert_eq!(d[0].status, Status::DATA_SGL_LENGTH_INVALID.dnr());
}

#[test]
fn completion_interrupts_signal_each_queue_vector_and_come_back_after_a_reset() {
    let (dev, sim) = device::NvmeDevice::open_sim_shared(1 << 20, 9, 2, true).unwrap();
    let mut a = dev.take_queue().unwrap();
    let mut b = dev.take_queue().unwrap();
    // I/O queue N on vector N; vector 0 (the admin queue's) signals nothing.
    for q in [&a, &b] {
        assert_eq!(q.vector, Some(q.qid));
        assert!(dev.irq(q.qid).is_some());
    }
    assert!(dev.irq(0).is_none());
    let (fa, fb) = (dev.irq(a.qid).unwrap(), dev.irq(b.qid).unwrap());
    fa.drain();
    fb.drain();
    let buf = dev.alloc(4096).unwrap();
    assert_eq!(read_one(&dev, &mut a, buf, 1), Some(Status::SUCCESS));
    assert_eq!(fa.drain(), 1, "one interrupt for one completion on queue a");
    assert_eq!(fb.drain(), 0, "nothing on the other queue's vector");
    // Held back: no interrupt until the completion is posted.
    sim.set_mode(Mode::Hold);
    assert_eq!(read_one(&dev, &mut b, buf, 2), None);
    assert_eq!(fb.drain(), 0);
    sim.release(false);
    assert_eq!(fb.drain(), 1, "the interrupt comes with the completion");
    let mut done = Vec::new();
    if let Some(head) = b.poll(dev.mem(), &mut done) {
        dev.ring_cq(b.qid, head);
    }
    assert_eq!(done.len(), 1);
    sim.set_mode(Mode::Immediate);
    // A reset creates the queues again on the same vectors.
    sim.fail();
    assert!(dev.check_failed());
    dev.reset().unwrap();
    a.reset();
    assert_eq!(a.vector, Some(a.qid));
    assert_eq!(read_one(&dev, &mut a, buf, 3), Some(Status::SUCCESS));
    assert_eq!(fa.drain(), 1);
    let u = dev.dma_use();
    assert_eq!(
        u.irq,
        Some(device::IrqUse {
            queues: 2,
            waits: 0,
            wakes: 0
        }),
        "two queues interrupt; no reactor slept yet"
    );
    // Without interrupts, queues are created with them off.
    let (plain, psim) = device::NvmeDevice::open_sim_shared(1 << 20, 9, 1, false).unwrap();
    let mut q = plain.take_queue().unwrap();
    assert_eq!(q.vector, None);
    assert_eq!(read_one(&plain, &mut q, buf, 4), Some(Status::SUCCESS));
    assert_eq!(psim.interrupts(), 0);
    assert_eq!(plain.dma_use().irq, None);
}

#[test]
fn a_queue_on_a_vector_the_controller_lacks_is_refused() {
    let mem = SimMem::new(MEM);
    let sim = SimController::new(mem.clone(), 32768, 9, 5, 63);
    // Two vectors: the admin queue's and one more.
    let fd = Arc::new(nvmf_sys::EventFd::new().unwrap());
    sim.route_interrupts(vec![None, Some(fd.clone())]);
    let mut arena = DmaArena::new(0, MEM as u64);
    let e = bring_up(&sim, &*mem, &mut arena, want(1, 2, 16, 3), &mut |_| {})
        .err()
        .unwrap();
    assert!(e.contains("Invalid Interrupt Vector"), "{e}");
    // Within the vectors it has, queue 1 interrupts on vector 1.
    let mut arena = DmaArena::new(0, MEM as u64);
    let mut up = bring_up(&sim, &*mem, &mut arena, want(1, 1, 16, 2), &mut |_| {}).unwrap();
    let dstrd = up.dstrd;
    let q = &mut up.io[0];
    assert_eq!(q.vector, Some(1));
    let buf = arena.alloc(4096).unwrap();
    fd.drain();
    let done = run(
        &sim,
        &mem,
        q,
        dstrd,
        vec![(rw(io_op::READ, 0, 8, buf, 0), 1)],
    );
    assert_eq!(done.len(), 1);
    assert_eq!(fd.drain(), 1);
}
