//! State-machine tests of an NVMe/RDMA queue pair and its fabrics queue, fed
//! synthetic capsules and RDMA READ completions: no device, no threads.

use super::conn::{Action, RdmaConn, ReadData, SQE_LEN};
use crate::buf::Buffers;
use crate::config::Config;
use crate::fabrics::Queue;
use crate::nvme::{io_op, sgl_id, Command, Completion, Sgl, Status};
use crate::subsystem::Target;
use crate::transport::tcp::host;
use std::sync::Arc;
use std::time::Instant;

const SUBNQN: &str = "nqn.2026-01.io.nvmf-target:rdma";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

fn target() -> Arc<Target> {
    let text = format!(
        r#"
[target]
max_io_size = 131072
in_capsule_data_size = 4096
[[listener]]
transport = "rdma"
address = "10.0.2.15"
[[subsystem]]
nqn = "{SUBNQN}"
allow_any_host = true
[[subsystem.namespace]]
backend = "ram"
size = "4MiB"
block_size = 512
[[subsystem.namespace]]
nsid = 2
backend = "null"
size = "4MiB"
"#
    );
    let cfg = Config::parse(&text, "test.toml").expect("test config parses");
    Arc::new(Target::new(&cfg).expect("target opens"))
}

/// A queue pair and its queue, as the RDMA driver pairs them.
struct Qp {
    conn: RdmaConn,
    queue: Queue,
    now: Instant,
    actions: Vec<Action>,
}

/// Host memory the keyed SGLs point at: address -> bytes.
#[derive(Default)]
struct HostMem(std::collections::HashMap<u64, Vec<u8>>);

fn keyed(cmd: &mut Command, addr: u64, key: u32, len: u32, invalidate: bool) {
    cmd.flags |= 0x40;
    cmd.dptr = Sgl {
        address: addr,
        length: len,
        key,
        id: if invalidate {
            sgl_id::KEYED_DATA_BLOCK_INV
        } else {
            sgl_id::KEYED_DATA_BLOCK
        },
    }
    .to_bytes();
}

impl Qp {
    fn new(t: &Arc<Target>, ord: u32) -> Qp {
        let bufs = Buffers::new();
        Qp {
            conn: RdmaConn::new(bufs.clone(), ord),
            queue: Queue::new(
                t.clone(),
                crate::fabrics::Origin::local("10.0.2.15:4420".parse().unwrap()),
                super::caps(4096),
                bufs,
            ),
            now: Instant::now(),
            actions: Vec::new(),
        }
    }

    /// Sends a capsule; returns the actions it caused.
    fn capsule(&mut self, cmd: &Command, inline: &[u8]) -> Vec<Action> {
        let sqe: [u8; SQE_LEN] = cmd.to_bytes();
        self.conn
            .capsule(&sqe, inline.to_vec(), &mut self.queue, self.now);
        self.take()
    }

    fn take(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.conn.take_actions(&mut out);
        self.actions.append(&mut out);
        std::mem::take(&mut self.actions)
    }

    /// Plays the host's side of every action: RDMA READs take bytes from
    /// `mem`, RDMA WRITEs put read data there. Returns the completions.
    fn serve(&mut self, actions: Vec<Action>, mem: &mut HostMem) -> Vec<(Completion, Option<u32>)> {
        let mut done = Vec::new();
        let mut todo = actions;
        while !todo.is_empty() {
            for a in std::mem::take(&mut todo) {
                match a {
                    Action::Read {
                        tag,
                        addr,
                        len,
                        placed,
                        ..
                    } => {
                        let src = mem.0.get(&addr).expect("host buffer").clone();
                        assert_eq!(src.len(), len as usize, "RDMA READ length");
                        let data = match placed {
                            Some(p) => {
                                assert!(p.copy_from(0, &src));
                                None
                            }
                            None => Some(src),
                        };
                        self.conn.read_done(tag, data, &mut self.queue, self.now);
                        todo.extend(self.take());
                    }
                    Action::Respond {
                        cqe,
                        data,
                        invalidate,
                    } => {
                        if let Some((d, addr, _key)) = data {
                            let bytes = match d {
                                ReadData::Bytes(b) => b,
                                ReadData::Shared(s) => {
                                    let mut b = vec![0u8; s.len()];
                                    assert!(s.copy_to(&mut b));
                                    b
                                }
                            };
                            mem.0.insert(addr, bytes);
                        }
                        done.push((Completion::parse(&cqe), invalidate));
                    }
                }
            }
        }
        done
    }

    /// Runs one command to completion through host memory.
    fn run(
        &mut self,
        cmd: &Command,
        inline: &[u8],
        mem: &mut HostMem,
    ) -> (Completion, Option<u32>) {
        let a = self.capsule(cmd, inline);
        let mut got = self.serve(a, mem);
        assert_eq!(got.len(), 1, "one completion for {cmd:?}");
        got.remove(0)
    }
}

/// Connects an admin queue (its Connect data by RDMA READ, as the kernel
/// host sends it) and enables the controller; returns the controller ID.
fn admin(t: &Arc<Target>, mem: &mut HostMem) -> (Qp, u16) {
    let mut a = Qp::new(t, 4);
    let (mut cmd, data) = host::connect(0, 0xFFFF, SUBNQN, HOSTNQN, 0, 0);
    mem.0.insert(0x10_0000, data);
    keyed(&mut cmd, 0x10_0000, 0x77, 1024, true);
    let acts = a.capsule(&cmd, &[]);
    assert!(
        matches!(
            acts.as_slice(),
            [Action::Read {
                len: 1024,
                addr: 0x10_0000,
                key: 0x77,
                ..
            }]
        ),
        "the Connect data is read from host memory: {acts:?}"
    );
    let got = a.serve(acts, mem);
    assert!(got[0].0.status.is_success(), "{:?}", got[0].0);
    assert_eq!(
        got[0].1,
        Some(0x77),
        "the key is invalidated with the response"
    );
    let cntlid = got[0].0.dw0 as u16;
    let (c, _) = a.run(&property_set_cc(), &[], mem);
    assert!(c.status.is_success(), "{c:?}");
    (a, cntlid)
}

fn property_set_cc() -> Command {
    let mut cmd = Command {
        opcode: 0x7F,
        nsid: 0x00, // FCTYPE 00h: Property Set
        cdw11: 0x14,
        cdw12: 1 | (6 << 16) | (4 << 20),
        ..Default::default()
    };
    keyed(&mut cmd, 0, 0, 0, false);
    cmd
}

/// An I/O queue of controller `cntlid`, its Connect data in the capsule.
fn io_queue(t: &Arc<Target>, cntlid: u16, mem: &mut HostMem, ord: u32) -> Qp {
    let mut q = Qp::new(t, ord);
    let (cmd, data) = host::connect(1, cntlid, SUBNQN, HOSTNQN, 0, 0);
    let (c, _) = q.run(&cmd, &data, mem);
    assert!(c.status.is_success(), "I/O queue Connect: {c:?}");
    q
}

#[test]
fn connect_identify_and_io_through_keyed_and_in_capsule_sgls() {
    let t = target();
    let mut mem = HostMem::default();
    let (mut a, cntlid) = admin(&t, &mut mem);
    // Identify Controller into host memory, with invalidation.
    let mut id = Command {
        opcode: 0x06,
        cdw10: 1,
        ..Default::default()
    };
    keyed(&mut id, 0x20_0000, 0x99, 4096, true);
    let (c, inv) = a.run(&id, &[], &mut mem);
    assert!(c.status.is_success());
    assert_eq!(inv, Some(0x99));
    let idc = &mem.0[&0x20_0000];
    assert_eq!(idc.len(), 4096);
    // SGLS: keyed SGLs and in-capsule offsets; IOCCSZ from the transport.
    let sgls = u32::from_le_bytes(idc[536..540].try_into().unwrap());
    assert_eq!(sgls, 1 | (1 << 2) | (1 << 20));
    let ioccsz = u32::from_le_bytes(idc[1792..1796].try_into().unwrap());
    assert_eq!(ioccsz, (64 + 4096) / 16);

    let mut q = io_queue(&t, cntlid, &mut mem, 4);
    // An in-capsule write of 8 blocks (into RAM), then a keyed read of them.
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut w = host::rw(io_op::WRITE, 1, 100, 8);
    host::set_sgl(&mut w, 4096, 0);
    let (c, inv) = q.run(&w, &data, &mut mem);
    assert!(c.status.is_success(), "{c:?}");
    assert_eq!(inv, None);
    let mut r = host::rw(io_op::READ, 1, 100, 8);
    keyed(&mut r, 0x30_0000, 0x5, 4096, false);
    let (c, _) = q.run(&r, &[], &mut mem);
    assert!(c.status.is_success(), "{c:?}");
    assert_eq!(mem.0[&0x30_0000], data, "read back what was written");

    // A keyed write of 64 KiB (RDMA READ straight into RAM), read back.
    let big: Vec<u8> = (0..65536u32).map(|i| (i ^ (i >> 8)) as u8).collect();
    mem.0.insert(0x40_0000, big.clone());
    let mut w = host::rw(io_op::WRITE, 1, 1000, 128);
    keyed(&mut w, 0x40_0000, 0x6, 65536, true);
    let (c, inv) = q.run(&w, &[], &mut mem);
    assert!(c.status.is_success(), "{c:?}");
    assert_eq!(inv, Some(0x6));
    let mut r = host::rw(io_op::READ, 1, 1000, 128);
    keyed(&mut r, 0x50_0000, 0x7, 65536, true);
    let (c, inv) = q.run(&r, &[], &mut mem);
    assert!(c.status.is_success());
    assert_eq!(inv, Some(0x7));
    assert_eq!(mem.0[&0x50_0000], big);

    // The null namespace: its write data goes through a buffer (no place).
    let mut w = host::rw(io_op::WRITE, 2, 0, 8);
    mem.0.insert(0x60_0000, vec![1u8; 4096]);
    keyed(&mut w, 0x60_0000, 0x8, 4096, false);
    let acts = q.capsule(&w, &[]);
    assert!(matches!(
        acts.as_slice(),
        [Action::Read { placed: None, .. }]
    ));
    let got = q.serve(acts, &mut mem);
    assert!(got[0].0.status.is_success());
}

#[test]
fn rdma_reads_are_limited_by_the_initiator_depth() {
    let t = target();
    let mut mem = HostMem::default();
    let (_a, cntlid) = admin(&t, &mut mem);
    let mut q = io_queue(&t, cntlid, &mut mem, 2);
    let mut reads = Vec::new();
    for i in 0..5u64 {
        mem.0.insert(0x100_0000 + i * 0x1_0000, vec![i as u8; 8192]);
        let mut w = host::rw(io_op::WRITE, 1, i * 16, 16);
        w.cid = i as u16 + 10;
        keyed(
            &mut w,
            0x100_0000 + i * 0x1_0000,
            0x10 + i as u32,
            8192,
            false,
        );
        reads.extend(q.capsule(&w, &[]));
    }
    assert_eq!(
        reads.len(),
        2,
        "two RDMA READs outstanding at most: {reads:?}"
    );
    assert_eq!(q.conn.reads_in_flight(), 2);
    // Each READ that ends starts the next one, in arrival order.
    let done = q.serve(reads, &mut mem);
    assert_eq!(done.len(), 5);
    let cids: Vec<u16> = done.iter().map(|(c, _)| c.cid).collect();
    assert_eq!(cids, vec![10, 11, 12, 13, 14]);
    assert!(done.iter().all(|(c, _)| c.status.is_success()));
    assert_eq!(q.conn.reads_in_flight(), 0);
}

#[test]
fn sgls_the_transport_does_not_map_get_their_status() {
    let t = target();
    let mut mem = HostMem::default();
    let (_a, cntlid) = admin(&t, &mut mem);
    let mut q = io_queue(&t, cntlid, &mut mem, 4);
    // NVMe/TCP's transport data block means nothing on RDMA.
    let mut r = host::rw(io_op::READ, 1, 0, 1);
    host::set_sgl(&mut r, 0, 512);
    let (c, _) = q.run(&r, &[], &mut mem);
    assert_eq!(c.status, Status::SGL_TYPE_INVALID.dnr());
    // In-capsule data that is not all there.
    let mut w = host::rw(io_op::WRITE, 1, 0, 2);
    host::set_sgl(&mut w, 1024, 0);
    let (c, _) = q.run(&w, &[0u8; 512], &mut mem);
    assert_eq!(c.status, Status::DATA_SGL_LENGTH_INVALID.dnr());
    let mut w = host::rw(io_op::WRITE, 1, 0, 1);
    w.flags |= 0x40;
    w.dptr = Sgl {
        address: 1024,
        length: 512,
        key: 0,
        id: sgl_id::DATA_BLOCK_OFFSET,
    }
    .to_bytes();
    let (c, _) = q.run(&w, &[0u8; 512], &mut mem);
    assert_eq!(c.status, Status::SGL_OFFSET_INVALID.dnr());
    // In-capsule data beyond the I/O queue's in-capsule size.
    let mut w = host::rw(io_op::WRITE, 1, 0, 16);
    host::set_sgl(&mut w, 8192, 0);
    let (c, _) = q.run(&w, &[0u8; 8192], &mut mem);
    assert_eq!(c.status, Status::DATA_SGL_LENGTH_INVALID.dnr());
    // The queue still works.
    let mut r = host::rw(io_op::READ, 1, 0, 1);
    keyed(&mut r, 0x70_0000, 1, 512, false);
    assert!(q.run(&r, &[], &mut mem).0.status.is_success());
}
