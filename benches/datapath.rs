//! Micro-benchmarks of the data path: PDU framing and encoding, CRC32C
//! digests, and command dispatch through the NVMe/TCP connection and
//! controller state machines (RAM and null namespaces, no sockets).
//!
//! `cargo bench --bench datapath`; under `cargo test` each runs once.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nvmf_sys::SendBuf;
use nvmf_target::config::Config;
use nvmf_target::nvme::{io_op, Completion};
use nvmf_target::subsystem::Target;
use nvmf_target::transport::tcp::conn::ConnParams;
use nvmf_target::transport::tcp::host::{self, Loopback};
use nvmf_target::transport::tcp::pdu::{self, Negotiated, TxParams};
use std::sync::Arc;
use std::time::Instant;

const SUBNQN: &str = "nqn.2026-01.io.nvmf-target:bench";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000be";

fn target(backend: &str) -> Arc<Target> {
    let text = format!(
        "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n\
         [[subsystem]]\nnqn = \"{SUBNQN}\"\nallow_any_host = true\n\
         [[subsystem.namespace]]\nbackend = \"{backend}\"\nsize = \"64MiB\"\nblock_size = 4096\n"
    );
    let cfg = Config::parse(&text, "bench.toml").expect("bench config");
    Arc::new(Target::new(&cfg).expect("bench target"))
}

fn params() -> ConnParams {
    ConnParams {
        max_io_size: 131072,
        allow_hdgst: true,
        allow_ddgst: true,
    }
}

/// Feeds `b` and drains the output; returns the number of output bytes.
fn feed(c: &mut Loopback, b: &[u8], out: &mut Vec<SendBuf>) -> usize {
    c.receive(b, Instant::now());
    c.take_output(out);
    let n = out.iter().map(|v| v.len()).sum();
    for v in out.drain(..) {
        c.recycle(v);
    }
    n
}

/// The bytes of a gathered send, concatenated.
fn flat(out: &[SendBuf]) -> Vec<u8> {
    let mut v = Vec::new();
    for b in out {
        b.extend_into(&mut v);
    }
    v
}

/// The completion in the last CapsuleResp PDU of `out`.
fn last_completion(out: &[u8]) -> Completion {
    let mut at = 0;
    let mut cqe = [0u8; 16];
    while at + 8 <= out.len() {
        let plen =
            u32::from_le_bytes([out[at + 4], out[at + 5], out[at + 6], out[at + 7]]) as usize;
        if out[at] == 0x05 {
            cqe.copy_from_slice(&out[at + 8..at + 24]);
        }
        at += plen.max(8);
    }
    Completion::parse(&cqe)
}

/// An admin queue and one I/O queue, connected and enabled.
fn io_queue(t: &Arc<Target>, digests: bool) -> (Loopback, Loopback) {
    let mut admin = Loopback::new(t.clone(), params(), 8192);
    let mut out = Vec::new();
    feed(&mut admin, &host::icreq(false, false), &mut out);
    let (cmd, data) = host::connect(0, 0xFFFF, SUBNQN, HOSTNQN, 0, 0);
    admin.receive(&host::capsule(&cmd, &data, false, false), Instant::now());
    admin.take_output(&mut out);
    let resp = flat(&out);
    out.clear();
    let cntlid = last_completion(&resp).dw0 as u16;
    let mut cc = nvmf_target::nvme::Command {
        opcode: 0x7F,
        nsid: 0,
        cdw11: 0x14,
        cdw12: 1 | (6 << 16) | (4 << 20),
        ..Default::default()
    };
    host::set_sgl(&mut cc, 0, 0);
    feed(&mut admin, &host::capsule(&cc, &[], false, false), &mut out);
    let mut io = Loopback::new(t.clone(), params(), 8192);
    feed(&mut io, &host::icreq(digests, digests), &mut out);
    let (cmd, data) = host::connect(1, cntlid, SUBNQN, HOSTNQN, 0, 0);
    io.receive(
        &host::capsule(&cmd, &data, digests, digests),
        Instant::now(),
    );
    io.take_output(&mut out);
    let resp = flat(&out);
    assert!(
        last_completion(&resp).status.is_success(),
        "I/O queue connect failed"
    );
    (admin, io)
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("pdu");
    let mut cmd = host::rw(io_op::READ, 1, 8, 1);
    host::set_sgl(&mut cmd, 0, 4096);
    let plain = host::capsule(&cmd, &[], false, false);
    let digested = host::capsule(&cmd, &[], true, true);
    g.bench_function("frame_capsule", |b| {
        b.iter(|| pdu::frame_h2c(black_box(&plain), &Negotiated::default(), true))
    });
    let neg = Negotiated {
        hdgst: true,
        ddgst: true,
        cpda: 0,
    };
    g.bench_function("frame_capsule_hdgst", |b| {
        b.iter(|| pdu::frame_h2c(black_box(&digested), &neg, true))
    });
    let mut out = Vec::with_capacity(256);
    let cqe = [0u8; 16];
    g.bench_function("encode_capsule_resp", |b| {
        b.iter(|| {
            out.clear();
            pdu::encode_capsule_resp(&mut out, black_box(&cqe), false);
        })
    });
    let tx = TxParams::default();
    g.bench_function("encode_c2h_data_header", |b| {
        b.iter(|| {
            out.clear();
            pdu::encode_c2h_data_header(&mut out, &tx, 1, 0, black_box(4096), true, false);
        })
    });
    g.finish();
}

fn digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for size in [4096usize, 131072] {
        let data = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{}KiB", size / 1024), |b| {
            b.iter(|| pdu::crc32c(black_box(&data)))
        });
    }
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    for backend in ["ram", "null"] {
        let t = target(backend);
        let (_admin, mut io) = io_queue(&t, false);
        let mut out = Vec::new();
        let mut read = host::rw(io_op::READ, 1, 16, 1);
        host::set_sgl(&mut read, 0, 4096);
        let read_pdu = host::capsule(&read, &[], false, false);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{backend}_read_4k"), |b| {
            b.iter(|| feed(&mut io, black_box(&read_pdu), &mut out))
        });
        let mut write = host::rw(io_op::WRITE, 1, 16, 1);
        host::set_sgl(&mut write, 4096, 0);
        let write_pdu = host::capsule(&write, &[0x5A; 4096], false, false);
        g.bench_function(format!("{backend}_write_4k_in_capsule"), |b| {
            b.iter(|| feed(&mut io, black_box(&write_pdu), &mut out))
        });
    }
    // Reads with both digests on.
    let t = target("ram");
    let (_admin, mut io) = io_queue(&t, true);
    let mut out = Vec::new();
    let mut read = host::rw(io_op::READ, 1, 16, 1);
    host::set_sgl(&mut read, 0, 4096);
    let read_pdu = host::capsule(&read, &[], true, true);
    g.bench_function("ram_read_4k_digests", |b| {
        b.iter(|| feed(&mut io, black_box(&read_pdu), &mut out))
    });
    // A 128 KiB R2T write: capsule, R2T, one H2CData PDU.
    let mut write = host::rw(io_op::WRITE, 1, 0, 32);
    host::set_sgl(&mut write, 0, 131072);
    let cap = host::capsule(&write, &[], true, true);
    let data = vec![0x3Cu8; 131072];
    g.bench_function("ram_write_128k_r2t_digests", |b| {
        b.iter_batched(
            || (),
            |()| {
                io.receive(&cap, Instant::now());
                io.take_output(&mut out);
                let r2t = flat(&out);
                for v in out.drain(..) {
                    io.recycle(v);
                }
                let ttag = u16::from_le_bytes([r2t[10], r2t[11]]);
                let h2c = host::h2c_data(write.cid, ttag, 0, &data, true, true, true);
                feed(&mut io, &h2c, &mut out)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The NVMe driver's path per command against the simulated controller:
/// build and queue the command, write the doorbell, poll the completion,
/// write the completion doorbell. The simulator runs the command inside the
/// doorbell write (a Flush does nothing; a 4 KiB read copies its data), so
/// this is the driver plus a minimal device.
fn nvme_driver(c: &mut Criterion) {
    use nvmf_target::backend::nvme::sim::{SimController, SimMem};
    use nvmf_target::backend::nvme::{bring_up, doorbell, prp_dptr, DmaArena, Regs, Want};
    use nvmf_target::nvme::Command;
    let mem = SimMem::new(16 << 20);
    let sim = SimController::new(mem.clone(), 1 << 15, 9, 5, 127);
    let mut arena = DmaArena::new(0, 16 << 20);
    let mut up = bring_up(
        &sim,
        &*mem,
        &mut arena,
        Want {
            nsid: 1,
            queues: 1,
            depth: 128,
            vectors: 0,
        },
        &mut |_| {},
    )
    .unwrap();
    let buf = arena.alloc(4096).unwrap();
    let q = &mut up.io[0];
    let far = Instant::now() + std::time::Duration::from_secs(3600);
    let mut done = Vec::with_capacity(8);
    let mut g = c.benchmark_group("nvme");
    for (name, cmd) in [
        (
            "flush_submit_poll",
            Command {
                opcode: 0x00,
                nsid: 1,
                ..Default::default()
            },
        ),
        (
            "read4k_submit_poll",
            Command {
                opcode: 0x02,
                nsid: 1,
                cdw12: 7,
                dptr: prp_dptr(buf, 0),
                ..Default::default()
            },
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                q.submit(&*mem, black_box(cmd), 1, far).unwrap();
                let tail = q.sq_doorbell().unwrap();
                sim.write32(doorbell(1, false, up.dstrd), tail as u32);
                let head = q.poll(&*mem, &mut done).unwrap();
                sim.write32(doorbell(1, true, up.dstrd), head as u32);
                done.clear();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, digest, dispatch, nvme_driver);
criterion_main!(benches);
