//! Many queues and controllers at once on several reactors, deep queues,
//! queues and controllers that disappear while commands are in flight, and
//! keep-alive expiry — against the real target over loopback.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nvmf_initiator::command::Command;
use nvmf_initiator::{Controller, Queue};

const NS_FILE: u32 = 4;

/// [`basic_toml`] plus a 64 MiB file namespace 4 (through io_uring).
fn toml_with_file(dir: &std::path::Path) -> String {
    format!(
        "{}\n[[subsystem.namespace]]\nnsid = 4\nbackend = \"file\"\npath = \"{}\"\nsize = \"64MiB\"\nblock_size = 4096\n",
        basic_toml("max_io_queues = 8\nmax_queue_depth = 128"),
        dir.join("ns4.img").display()
    )
}

/// Work for [`hammer`]: `slots` slots of 64 KiB from `first_lba` of a
/// namespace, `rounds` rounds at queue depth `qd`.
#[derive(Clone, Copy)]
struct Load {
    nsid: u32,
    bs: u32,
    first_lba: u64,
    slots: usize,
    qd: usize,
    rounds: u64,
    seed: u64,
}

/// Drives one I/O queue at queue depth `qd` over a private LBA range of a
/// namespace: rounds of writes (sizes from one block to 64 KiB, in-capsule
/// and R2T) then reads, every byte checked.
fn hammer(q: &mut Queue, l: Load) {
    let Load {
        nsid,
        bs,
        first_lba,
        slots,
        qd,
        rounds,
        seed,
    } = l;
    let mut rng = Rng::new(seed);
    let slot_blocks = 65536 / bs as u64;
    let mut contents: Vec<Option<(u64, usize)>> = vec![None; slots];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..slots).collect();
        rng.shuffle(&mut order);
        // Writes, qd in flight.
        let mut inflight = HashMap::new();
        for &slot in &order {
            if inflight.len() >= qd {
                let r = q.wait().expect("write completion");
                assert_eq!(r.status, 0, "write failed");
                inflight.remove(&r.cid);
            }
            let nblocks = 1 + rng.below(slot_blocks) as usize;
            let len = nblocks * bs as usize;
            let s = seed ^ (round << 40) ^ slot as u64;
            let lba = first_lba + slot as u64 * slot_blocks;
            let cid = q
                .submit(
                    Command::write(nsid, lba, nblocks as u16 - 1),
                    Some(pattern(s, len)),
                    0,
                )
                .expect("submit write");
            inflight.insert(cid, slot);
            contents[slot] = Some((s, len));
        }
        while !inflight.is_empty() {
            let r = q.wait().expect("write completion");
            assert_eq!(r.status, 0, "write failed");
            inflight.remove(&r.cid);
        }
        // Reads, qd in flight, checked.
        rng.shuffle(&mut order);
        let mut reads: HashMap<u16, (u64, usize)> = HashMap::new();
        let check = |r: nvmf_initiator::Response, reads: &mut HashMap<u16, (u64, usize)>| {
            assert_eq!(r.status, 0, "read failed");
            let (s, len) = reads.remove(&r.cid).expect("a read we sent");
            assert_same(&r.data, &pattern(s, len), "data read back under load");
        };
        for &slot in &order {
            let Some((s, len)) = contents[slot] else {
                continue;
            };
            if reads.len() >= qd {
                let r = q.wait().expect("read completion");
                check(r, &mut reads);
            }
            let lba = first_lba + slot as u64 * slot_blocks;
            let nblocks = len / bs as usize;
            let cid = q
                .submit(
                    Command::read(nsid, lba, nblocks as u16 - 1),
                    None,
                    len as u32,
                )
                .expect("submit read");
            reads.insert(cid, (s, len));
        }
        while !reads.is_empty() {
            let r = q.wait().expect("read completion");
            check(r, &mut reads);
        }
    }
}

#[test]
fn several_io_queues_on_several_reactors_at_queue_depth_32_and_more() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&toml_with_file(dir.path()));
    assert_eq!(t.config.target.cores.len(), test_cores().len());
    let mut o = opts();
    o.in_capsule_max = 1 << 20;
    let mut c = connect_with(t.addr(), NQN, &o, 6);
    assert_eq!(c.io.len(), 6);
    let queues = std::mem::take(&mut c.io);
    let workers: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(i, mut q)| {
            thread::spawn(move || {
                // Two queues per namespace, each on its own range.
                let (nsid, bs) = match i % 3 {
                    0 => (NS_RAM512, 512),
                    1 => (NS_RAM4K, 4096),
                    _ => (NS_FILE, 4096),
                };
                let per_queue = 32u64 * 65536 / bs as u64;
                let first = (i / 3) as u64 * per_queue;
                hammer(
                    &mut q,
                    Load {
                        nsid,
                        bs,
                        first_lba: first,
                        slots: 32,
                        qd: 32 + i * 8,
                        rounds: 3,
                        seed: 0xA000 + i as u64,
                    },
                );
                q
            })
        })
        .collect();
    for w in workers {
        let q = w.join().expect("I/O worker");
        c.io.push(q);
    }
    // The admin queue was idle meanwhile and still answers.
    c.keep_alive().unwrap();
    let smart = c.get_log_page(2, 0xFFFF_FFFF, 512, 0, 0).unwrap();
    assert!(le64(&smart, 64) >= 6 * 3 * 32, "host read commands counted");
    c.shutdown().unwrap();
}

#[test]
fn many_controllers_at_once() {
    let t = start_basic();
    let addr = t.addr();
    let workers: Vec<_> = (0..12u64)
        .map(|i| {
            thread::spawn(move || {
                let mut o = if i % 2 == 0 {
                    opts()
                } else {
                    opts_for_host(i as u8)
                };
                o.hdr_digest = i % 3 == 0;
                o.data_digest = i % 4 == 0;
                let mut c = connect_with(addr, NQN, &o, 2);
                let id = c.cntlid;
                for (j, q) in c.io.iter_mut().enumerate() {
                    let first = (i * 2 + j as u64) * 1024;
                    hammer(
                        q,
                        Load {
                            nsid: NS_RAM512,
                            bs: 512,
                            first_lba: first,
                            slots: 8,
                            qd: 16,
                            rounds: 2,
                            seed: i << 8 | j as u64,
                        },
                    );
                }
                c.shutdown().unwrap();
                id
            })
        })
        .collect();
    let mut ids: Vec<u16> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        12,
        "controller IDs are unique among live controllers"
    );
}

#[test]
fn closing_an_io_queue_with_commands_in_flight_disturbs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(&toml_with_file(dir.path()));
    let addr = t.addr();
    let mut o = opts();
    o.in_capsule_max = 1 << 20;
    let mut c = connect_with(addr, NQN, &o, 3);
    let id = c.cntlid;
    // Another controller working all along.
    let other = {
        let o = o.clone();
        thread::spawn(move || {
            let mut c = connect_with(addr, NQN, &o, 1);
            hammer(
                &mut c.io[0],
                Load {
                    nsid: NS_RAM4K,
                    bs: 4096,
                    first_lba: 8192,
                    slots: 16,
                    qd: 32,
                    rounds: 6,
                    seed: 0xBEEF,
                },
            );
            c.shutdown().unwrap();
        })
    };
    // Queues 2 and 3 keep working while queue 1 is closed again and again.
    let mut steady: Vec<Queue> = c.io.drain(1..).collect();
    let steady_workers: Vec<_> = steady
        .drain(..)
        .enumerate()
        .map(|(i, mut q)| {
            thread::spawn(move || {
                let nsid = if i == 0 { NS_RAM512 } else { NS_FILE };
                let bs = if i == 0 { 512 } else { 4096 };
                hammer(
                    &mut q,
                    Load {
                        nsid,
                        bs,
                        first_lba: 4096,
                        slots: 16,
                        qd: 32,
                        rounds: 6,
                        seed: 0xC000 + i as u64,
                    },
                );
                q
            })
        })
        .collect();
    let mut q1 = c.io.pop().unwrap();
    let mut rng = Rng::new(17);
    for round in 0..15 {
        // Writes through R2T and in-capsule, reads, to RAM and to the file.
        for k in 0..40u64 {
            let (nsid, bs) = if k % 2 == 0 {
                (NS_RAM4K, 4096)
            } else {
                (NS_FILE, 4096)
            };
            let lba = 10000 + k * 16;
            let r = if rng.chance(2) {
                q1.submit(Command::write(nsid, lba, 15), Some(pattern(k, 16 * bs)), 0)
            } else {
                q1.submit(Command::read(nsid, lba, 15), None, 16 * bs as u32)
            };
            r.expect("submit on queue 1");
        }
        // Sometimes wait for a few completions first.
        for _ in 0..rng.below(5) {
            q1.wait().expect("completion on queue 1");
        }
        q1.close();
        // Queue ID 1 is released when the target has cleaned up.
        let mut next = None;
        let released = wait_until(Duration::from_secs(15), || {
            match Queue::connect(addr, 1, NQN, id, &o) {
                Ok(q) => {
                    next = Some(q);
                    true
                }
                Err(_) => false,
            }
        });
        assert!(released, "round {round}: queue ID 1 never released");
        q1 = next.unwrap();
        q1.set_in_capsule_max(8192);
        write_read_check(&mut q1, NS_RAM4K, 4096, 12000, round, 8192);
    }
    for w in steady_workers {
        w.join().expect("steady queue worker");
    }
    other.join().expect("other controller");
    c.keep_alive().unwrap();
    c.io.push(q1);
    c.shutdown().unwrap();
}

#[test]
fn closing_the_admin_queue_tears_down_the_controller() {
    let t = start_basic();
    let addr = t.addr();
    let mut bystander = connect(addr, 1);
    let mut c = connect(addr, 3);
    let id = c.cntlid;
    // Commands in flight on the I/O queues when the admin queue goes.
    for q in c.io.iter_mut() {
        for k in 0..16u64 {
            q.submit(
                Command::write(NS_RAM512, k * 8, 7),
                Some(pattern(k, 4096)),
                0,
            )
            .unwrap();
        }
    }
    let Controller { admin, mut io, .. } = c;
    admin.close();
    for q in io.iter_mut() {
        // Completions may arrive first; then the target closes the queue.
        loop {
            match q.wait() {
                // Done before the teardown, or refused because of it.
                Ok(r) => assert!(
                    [0, sc::CMD_SEQ_ERROR, 0x0008].contains(&r.status),
                    "status {:#06x} for a write racing the teardown",
                    r.status
                ),
                Err(nvmf_initiator::Error::Invalid(_)) => {
                    wait_closed(q, "I/O queue of a closed admin queue");
                    break;
                }
                Err(nvmf_initiator::Error::Closed) => break,
                Err(e) => panic!("I/O queue {} after its admin queue closed: {e}", q.qid()),
            }
        }
    }
    // The controller ID is gone for new I/O queues.
    expect_status_dnr(
        Queue::connect(addr, 1, NQN, id, &opts()),
        sc::CONNECT_INVALID_PARAM,
    );
    // Others are unaffected.
    write_read_check(&mut bystander.io[0], NS_RAM512, 512, 9000, 1, 65536);
    bystander.shutdown().unwrap();
}

fn wait_closed(q: &mut Queue, what: &str) -> Duration {
    let start = Instant::now();
    match q.wait_closed(Duration::from_secs(15)) {
        Ok(()) => start.elapsed(),
        Err(nvmf_initiator::Error::Timeout) => {
            panic!("{what}: still open after {:?}", start.elapsed())
        }
        // Bytes before the close would be a bug: nothing is outstanding.
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Connects an admin queue with `kato_ms`, enables the controller and
/// connects I/O queue 1, with as few round trips as possible so that a slow
/// machine does not see the timer expire during bring-up (retried if it
/// does).
fn kato_controller(addr: std::net::SocketAddr, kato_ms: u32) -> (Queue, Queue, Instant) {
    let mut o = opts();
    o.kato_ms = kato_ms;
    for _ in 0..5 {
        let connected = Instant::now();
        let mut admin = Queue::connect(addr, 0, NQN, 0xFFFF, &o).expect("admin queue");
        let cc = nvmf_initiator::controller::cc_enable_value(1 << 37);
        admin
            .property_set(nvmf_initiator::command::PROP_CC, false, cc as u64)
            .expect("CC.EN");
        match Queue::connect(addr, 1, NQN, admin.cntlid(), &o) {
            Ok(io) => return (admin, io, connected),
            Err(e) => eprintln!("bring-up slower than KATO ({e}); again"),
        }
    }
    panic!("could not bring a controller up within KATO {kato_ms} ms");
}

#[test]
fn keep_alive_timeout_closes_the_admin_and_io_queues() {
    let t = start_basic();
    let addr = t.addr();
    let mut bystander = connect(addr, 1);
    let (mut admin, mut io, connected) = kato_controller(addr, 1000);
    let id = admin.cntlid();
    // No keep-alives from here on.
    wait_closed(&mut admin, "admin queue");
    let total = connected.elapsed();
    assert!(
        total >= Duration::from_millis(900),
        "closed {total:?} after Connect, before KATO"
    );
    wait_closed(&mut io, "I/O queue 1");
    expect_status_dnr(
        Queue::connect(addr, 2, NQN, id, &opts()),
        sc::CONNECT_INVALID_PARAM,
    );
    // The bystander (no KATO) and new controllers are fine.
    write_read_check(&mut bystander.io[0], NS_RAM512, 512, 0, 1, 4096);
    connect(addr, 1).shutdown().unwrap();
    bystander.shutdown().unwrap();
}

#[test]
fn keep_alive_timer_armed_by_set_features_expires() {
    let t = start_basic();
    let mut c = connect(t.addr(), 1);
    c.set_features(0x0F, 0, 1000, 0, false).unwrap();
    wait_closed(&mut c.admin, "admin queue");
    wait_closed(&mut c.io[0], "I/O queue");
}

/// Setting the Keep Alive Timer restarts it (as in Linux nvmet): a host
/// that connected without KATO and arms it later is not torn down at once
/// for the time that passed before.
#[test]
fn set_features_keep_alive_timer_restarts_the_timer() {
    let t = start_basic();
    let mut c = connect(t.addr(), 1);
    thread::sleep(Duration::from_millis(2300));
    c.set_features(0x0F, 0, 2000, 0, false).unwrap();
    thread::sleep(Duration::from_millis(300));
    c.keep_alive()
        .expect("keep-alive 300 ms after arming a 2 s timer");
    write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 1, 4096);
    c.shutdown().unwrap();
}

#[test]
fn keep_alives_keep_the_controller_alive() {
    let t = start_basic();
    let (mut admin, mut io, _) = kato_controller(t.addr(), 1000);
    admin.keep_alive().unwrap();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(300));
        admin.keep_alive().expect("keep-alive within KATO");
        write_read_check(&mut io, NS_RAM512, 512, n, n, 512);
        n += 1;
    }
    assert!(!admin.is_closed());
    assert!(!io.is_closed());
    admin.identify(1, 0, 0, 0).unwrap();
}

#[test]
fn a_controller_survives_the_end_of_another_on_the_same_reactor() {
    // Controllers torn down by keep-alive while another does I/O: the
    // teardown must not touch the survivor's queues.
    let t = start_basic();
    let addr = t.addr();
    let worker = thread::spawn(move || {
        let mut o = opts();
        o.in_capsule_max = 1 << 20;
        let mut c = connect_with(addr, NQN, &o, 2);
        for (i, q) in c.io.iter_mut().enumerate() {
            hammer(
                q,
                Load {
                    nsid: NS_RAM4K,
                    bs: 4096,
                    first_lba: 100 + i as u64 * 512,
                    slots: 16,
                    qd: 32,
                    rounds: 4,
                    seed: i as u64,
                },
            );
        }
        c.shutdown().unwrap();
    });
    let mut doomed = Vec::new();
    for _ in 0..4 {
        let mut c = connect(addr, 2);
        c.set_features(0x0F, 0, 500, 0, false).unwrap();
        doomed.push(c);
    }
    for c in doomed.iter_mut() {
        wait_closed(&mut c.admin, "doomed admin queue");
        for q in c.io.iter_mut() {
            wait_closed(q, "doomed I/O queue");
        }
    }
    worker.join().expect("surviving controller");
}

#[test]
fn reconnecting_after_a_disconnect_sees_the_data() {
    let t = start_basic();
    let data = pattern(1234, 131072);
    {
        let mut c = connect(t.addr(), 1);
        c.io[0].write(NS_RAM4K, 500, &data, 4096).unwrap();
        // Abrupt: no shutdown, sockets dropped.
        drop(c);
    }
    let mut c = connect(t.addr(), 1);
    assert_same(
        &c.io[0].read(NS_RAM4K, 500, 31, 4096).unwrap(),
        &data,
        "data after reconnect",
    );
    c.shutdown().unwrap();
}

/// A host that stops reading its responses (its socket buffer fills up and
/// the target's sends stall) must not hold up other connections on the same
/// reactor; when it reads again, everything arrives intact.
#[test]
fn a_host_that_stops_reading_blocks_nobody_else() {
    let mut cfg =
        nvmf_target::config::Config::parse(&basic_toml("max_io_size = \"1MiB\""), "t.toml")
            .unwrap();
    cfg.listeners[0].addr.set_port(0);
    cfg.target.cores = vec![0]; // one reactor for everybody
    let t = start_config(cfg);
    let addr = t.addr();
    let mut stalled = connect(addr, 1);
    let data = pattern(66, 1 << 20);
    stalled.io[0].write(NS_RAM4K, 0, &data, 4096).unwrap();
    // 48 MiB of reads requested, none of it read for now.
    let mut cids = Vec::new();
    for _ in 0..48 {
        cids.push(
            stalled.io[0]
                .submit(Command::read(NS_RAM4K, 0, 255), None, 1 << 20)
                .unwrap(),
        );
    }
    thread::sleep(Duration::from_millis(200));
    // Meanwhile another host is served normally on the same reactor.
    let mut other = connect(addr, 2);
    for (i, q) in other.io.iter_mut().enumerate() {
        hammer(
            q,
            Load {
                nsid: NS_RAM512,
                bs: 512,
                first_lba: 20000 + i as u64 * 4096,
                slots: 16,
                qd: 16,
                rounds: 2,
                seed: 70 + i as u64,
            },
        );
    }
    other.shutdown().unwrap();
    // The stalled host catches up.
    for cid in cids {
        let r = stalled.io[0].wait_for(cid).unwrap();
        assert_eq!(r.status, 0);
        assert_same(&r.data, &data, "read delivered after the stall");
    }
    stalled.shutdown().unwrap();
}

/// TCP state of our end of a loopback connection, from /proc/net/tcp
/// ("01" established, "08" close-wait: the target closed its end; gone
/// when the target reset it).
fn tcp_state(s: &std::net::TcpStream) -> Option<String> {
    let hex = |a: std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => {
            format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port())
        }
        std::net::IpAddr::V6(_) => String::new(),
    };
    let (local, peer) = (hex(s.local_addr().ok()?), hex(s.peer_addr().ok()?));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // The row of this connection (both ends: an old one in TIME_WAIT may
    // have had the same local port).
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&peer.as_str()))
            .then(|| f.get(3).map(|s| s.to_string()))?
    })
}

/// Waits until the target has closed or reset its end.
fn wait_closed_by_target(s: &std::net::TcpStream, within: Duration) -> bool {
    wait_until(within, || {
        matches!(tcp_state(s).as_deref(), None | Some("08") | Some("07"))
    })
}

/// Connections that never send an ICReq, or send it a byte at a time, are
/// closed after the handshake timeout (10 s); a well-behaved host is served
/// meanwhile.
#[test]
fn silent_and_trickling_connections_are_closed_after_the_handshake_timeout() {
    use std::io::Write;
    let t = start_basic();
    let mut silent: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(t.addr()).unwrap())
        .collect();
    let mut slow = std::net::TcpStream::connect(t.addr()).unwrap();
    slow.write_all(&[0x00, 0x00, 128]).unwrap();
    silent.push(slow);
    let mut c = connect(t.addr(), 1);
    write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 8, 4096);
    let start = Instant::now();
    for (i, s) in silent.iter().enumerate() {
        assert!(
            wait_closed_by_target(s, Duration::from_secs(40)),
            "connection {i} still {:?}",
            tcp_state(s)
        );
    }
    eprintln!("all closed after {:?}", start.elapsed());
    // The host that did its handshake is still served.
    write_read_check(&mut c.io[0], NS_RAM512, 512, 8, 8, 4096);
    c.shutdown().unwrap();
}

/// A host that stops reading its I/O queue's socket while reads are
/// outstanding, and stops its keep-alives: when keep-alive expires the
/// target closes that connection too, though its sends are stuck.
#[test]
fn an_expired_controller_closes_an_io_connection_whose_host_does_not_read() {
    let t = start_basic();
    let (admin, io, _) = kato_controller(t.addr(), 1000);
    let mut io = io;
    // 64 reads of 128 KiB: 8 MiB the host never takes.
    let cfg = io.tx_config();
    let mut burst = Vec::new();
    for i in 0..64u16 {
        let mut r = Command::read(NS_RAM512, i as u64 * 256, 255);
        r.cid = i;
        r.dptr = nvmf_initiator::command::sgl_descriptor(
            0,
            128 * 1024,
            nvmf_initiator::command::SGL_TRANSPORT_DATA_BLOCK,
        );
        burst.extend(nvmf_initiator::pdu::encode_capsule_cmd(
            &r.to_bytes(),
            &[],
            &cfg,
        ));
    }
    io.send_raw(&burst).unwrap();
    let stream = io.into_stream().unwrap();
    assert!(
        wait_closed_by_target(&stream, Duration::from_secs(40)),
        "the I/O connection is still {:?} long after keep-alive expired",
        tcp_state(&stream)
    );
    drop(admin);
}
