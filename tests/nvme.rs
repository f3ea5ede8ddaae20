//! The NVMe backend end to end over NVMe/TCP, on a simulated controller
//! (`pci = "sim"`): every I/O command goes through the reactor's NVMe
//! driver, its queue pair, doorbells and polled completions.

mod common;

use common::*;
use nvmf_target::backend::nvme::device::NvmeDevice;
use nvmf_target::backend::nvme::sim::Mode;
use std::sync::Arc;
use std::time::Duration;

const NQN_SIM: &str = "nqn.2026-01.io.nvmf-target:nvme-sim";

fn toml(block_size: u32) -> String {
    format!(
        r#"
[target]
cores = [0]

[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = 4420

[[subsystem]]
nqn = "{NQN_SIM}"
allow_any_host = true

[[subsystem.namespace]]
backend = "nvme"
pci = "sim"
size = "64MiB"
block_size = {block_size}
"#
    )
}

#[test]
fn io_commands_reach_the_simulated_controller() {
    for bs in [512u32, 4096] {
        let t = start(&toml(bs));
        let mut c = connect_with(t.addr(), NQN_SIM, &opts(), 2);
        // The namespace's block size and size come from the device.
        let id = c.admin.identify(0, 1, 0, 0).unwrap();
        let nsze = u64::from_le_bytes(id[0..8].try_into().unwrap());
        assert_eq!(nsze, (64 << 20) / bs as u64);
        let lbads = id[128 + 2];
        assert_eq!(1u32 << lbads, bs);
        // Small, page-crossing and MDTS-sized transfers, on both queues.
        for (q, slba, len) in [(0, 0, bs as usize), (1, 7, 3 * 4096), (0, 1000, 128 << 10)] {
            write_read_check(&mut c.io[q], 1, bs, slba, slba + 1, len);
        }
        // Flush, Write Zeroes, deallocate.
        c.io[0].flush(1).unwrap();
        write_read_check(&mut c.io[0], 1, bs, 64, 9, 8 * bs as usize);
        c.io[0].write_zeroes(1, 64, 7).unwrap();
        assert!(c.io[0].read(1, 64, 7, bs).unwrap().iter().all(|&b| b == 0));
        c.io[0].dsm_deallocate(1, &[(2000, 8)]).unwrap();
        // Compare: equal data passes, other data fails.
        write_read_check(&mut c.io[1], 1, bs, 300, 5, 2 * bs as usize);
        let same = pattern(5, 2 * bs as usize);
        c.io[1].compare(1, 300, &same, bs).unwrap();
        let other = pattern(6, 2 * bs as usize);
        expect_status_dnr(c.io[1].compare(1, 300, &other, bs), sc::COMPARE_FAILURE);
        c.shutdown().unwrap();
    }
}

#[test]
fn many_commands_in_flight_on_the_device_queue() {
    let t = start(&toml(512));
    let mut c = connect_with(t.addr(), NQN_SIM, &opts(), 1);
    let q = &mut c.io[0];
    // 64 writes outstanding at once, then read back.
    let mut cids = Vec::new();
    for i in 0..64u64 {
        let data = pattern(i, 4096);
        let cmd = nvmf_initiator::command::Command::write(1, i * 8, 7);
        cids.push(q.submit(cmd, Some(data), 0).unwrap());
    }
    for cid in cids {
        let r = q.wait_for(cid).unwrap();
        assert_eq!(r.status, 0, "write {cid}");
    }
    for i in 0..64u64 {
        let got = q.read(1, i * 8, 7, 512).unwrap();
        assert_same(&got, &pattern(i, 4096), &format!("block {}", i * 8));
    }
    c.shutdown().unwrap();
}

/// The host's data moves socket -> staged DMA buffer -> device and back
/// with no copy in the target: writes larger than the in-capsule data
/// (received after an R2T straight into a staged buffer) and reads (the
/// device writes a staged buffer, the socket sends from it) leave the
/// driver's bounce buffers unused, and every staged buffer goes back to its
/// pool. In-capsule writes, which arrive in a receive buffer, are copied
/// once, into a staged buffer, and not again.
#[test]
fn large_transfers_are_staged_in_dma_memory_not_copied() {
    let t = start(&toml(512));
    let dma = || {
        let rt = t.rt.as_ref().unwrap();
        let s = rt.target.find_subsystem(NQN_SIM).unwrap();
        let u = s.namespace(1).unwrap().backend.dma_use().unwrap();
        (u.copied, u.staged_free)
    };
    let (copied0, free0) = dma();
    assert!(free0.iter().all(|&n| n >= 4), "staged pools: {free0:?}");
    let mut c = connect_with(t.addr(), NQN_SIM, &opts(), 2);
    for (q, slba, len) in [(0, 0, 16 << 10), (1, 100, 128 << 10), (0, 2048, 64 << 10)] {
        write_read_check(&mut c.io[q], 1, 512, slba, slba + 3, len);
    }
    // Small reads are staged too.
    let small = c.io[1].read(1, 0, 7, 512).unwrap();
    assert!(
        small == pattern(3, 16 << 10)[..4096],
        "{} bytes",
        small.len()
    );
    let (copied, free) = dma();
    assert_eq!(copied, copied0, "nothing went through a bounce buffer");
    // An in-capsule write (4 KiB) is copied from the receive buffer into a
    // staged buffer, not through a bounce buffer.
    write_read_check(&mut c.io[0], 1, 512, 4000, 9, 4096);
    // Compare still goes through a bounce buffer: its data is counted.
    c.io[0].compare(1, 4000, &pattern(9, 4096), 512).unwrap();
    let (copied2, _) = dma();
    assert_eq!(copied2 - copied, 4096, "only the Compare's data was copied");
    c.shutdown().unwrap();
    assert!(
        wait_until(std::time::Duration::from_secs(5), || dma().1 == free0),
        "every staged buffer is back: {free:?} then {:?}, at first {free0:?}",
        dma().1
    );
}

/// The simulated controller's device, in a running target.
fn device(t: &TestTarget) -> Arc<NvmeDevice> {
    let rt = t.rt.as_ref().unwrap();
    let s = rt.target.find_subsystem(NQN_SIM).unwrap();
    let ns = s.namespace(1).unwrap();
    ns.backend.nvme().expect("an NVMe device backend").clone()
}

/// A reactor that sleeps (idle = "sleep") while the device has a command in
/// flight waits on the queue's completion interrupt, not on a timer: the
/// completion, held back by the controller while the reactor sleeps, wakes
/// it through the interrupt's eventfd, and the host gets its data. A target
/// whose reactors never sleep (idle = "busy") asks for no interrupts.
#[test]
fn a_sleeping_reactor_wakes_on_the_completion_interrupt() {
    let t = start(&toml(512).replace("cores = [0]", "cores = [0]\nidle = \"sleep\""));
    let dev = device(&t);
    let reactors = test_cores().len();
    let irq = || {
        dev.dma_use()
            .irq
            .expect("interrupts for a sleeping reactor")
    };
    assert_eq!(irq().queues, reactors, "one interrupting queue per reactor");
    let mut c = connect_with(t.addr(), NQN_SIM, &opts(), 1);
    write_read_check(&mut c.io[0], 1, 512, 40, 21, 8192);
    let sim = dev.simulator().unwrap().clone();
    sim.set_mode(Mode::Hold);
    let q = &mut c.io[0];
    let cid = q
        .submit(
            nvmf_initiator::command::Command::read(1, 40, 15),
            None,
            8192,
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || sim.held() == 1),
        "the read reached the device"
    );
    // The reactor goes to sleep waiting on the queue's interrupt (not on a
    // timer: it would not count a wait).
    let waits = irq().waits;
    assert!(
        wait_until(Duration::from_secs(10), || irq().waits > waits),
        "the reactor sleeps on the interrupt: {:?}",
        irq()
    );
    // And it stays asleep: a reactor polling on a timer would go back to
    // sleep thousands of times while the read is held (its tick wakes it
    // every 100 ms).
    let w1 = irq().waits;
    std::thread::sleep(Duration::from_millis(300));
    let slept = irq().waits - w1;
    assert!(slept <= 10, "{slept} sleeps in 300 ms: woken by a timer");
    let wakes = irq().wakes;
    sim.set_mode(Mode::Immediate);
    sim.release(false);
    let r = q.wait_for(cid).unwrap();
    assert_eq!(r.status, 0);
    assert_same(&r.data, &pattern(21, 8192), "the held read");
    assert!(
        wait_until(Duration::from_secs(5), || irq().wakes > wakes),
        "the completion interrupt woke the reactor: {:?}",
        irq()
    );
    // The same counts in the Prometheus text.
    let mut m = String::new();
    nvmf_target::control::device_metrics(&t.rt.as_ref().unwrap().target, &mut m);
    let labels = format!("subsystem=\"{NQN_SIM}\",nsid=\"1\"");
    let i = irq();
    for (name, v) in [
        ("nvmf_target_device_interrupt_queues", i.queues as u64),
        ("nvmf_target_device_interrupt_waits_total", i.waits),
        ("nvmf_target_device_interrupt_wakes_total", i.wakes),
        (
            "nvmf_target_device_copied_bytes_total",
            dev.dma_use().copied,
        ),
    ] {
        assert!(
            m.contains(&format!("{name}{{{labels}}} {v}\n")),
            "{name} {v}:\n{m}"
        );
    }
    assert!(m.contains(&format!(
        "nvmf_target_device_staged_buffers_free{{{labels},reactor=\"0\"}}"
    )));
    c.shutdown().unwrap();
    drop(t);

    let busy = start(&toml(512).replace("cores = [0]", "cores = [0]\nidle = \"busy\""));
    assert_eq!(
        device(&busy).dma_use().irq,
        None,
        "no interrupts for busy reactors"
    );
    let mut m = String::new();
    nvmf_target::control::device_metrics(&busy.rt.as_ref().unwrap().target, &mut m);
    assert!(
        m.contains(&format!(
            "nvmf_target_device_interrupt_queues{{{labels}}} 0\n"
        )),
        "{m}"
    );
}
