//! The NVMe backend end to end over NVMe/TCP, on a simulated controller
//! (`pci = "sim"`): every I/O command goes through the reactor's NVMe
//! driver, its queue pair, doorbells and polled completions.

mod common;

use common::*;

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
