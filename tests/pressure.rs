//! Data under pressure (issue 12 item 6): several hosts write overlapping
//! ranges of a file namespace, flushing now and then, while their
//! connections are dropped mid-write and the target is SIGKILLed and
//! restarted. Afterwards every block must be whole (one write's bytes, or
//! never written), and no older than the newest write that was durable:
//! acknowledged, then covered by a Flush that succeeded.
//!
//! Every block written carries who wrote it, the write's sequence number and
//! its LBA, followed by bytes derived from them, so a block mixing two
//! writes (torn) or holding another block's data is caught, and the block's
//! content names the write it came from.

mod common;

use common::*;
use nvmf_initiator::command::Command;
use nvmf_initiator::Controller;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BS: usize = 512;
const BLOCKS: u64 = 8192; // a 4 MiB namespace
const HOSTS: u64 = 4;
/// Each host writes its own 3072 blocks, which overlap its neighbours'.
const SPAN: u64 = 3072;
const MAGIC: u32 = 0x6E76_6D66;

/// One write as the hosts record it: the logical clock when it was sent and
/// when its success came back (`u64::MAX`: never, it failed or its
/// connection went away, so it may or may not have landed).
#[derive(Debug, Clone, Copy)]
struct Write {
    sent: u64,
    acked: u64,
}

#[derive(Default)]
struct Log {
    /// (host, seq) -> the write.
    writes: HashMap<(u64, u64), Write>,
    /// Per block, the writes that touched it.
    blocks: HashMap<u64, Vec<(u64, u64)>>,
    /// The clock at the send of each successful Flush.
    flushes: Vec<u64>,
}

fn block(host: u64, seq: u64, lba: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..12].copy_from_slice(&host.to_le_bytes());
    b[12..20].copy_from_slice(&seq.to_le_bytes());
    b[20..28].copy_from_slice(&lba.to_le_bytes());
    let mut x = host.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq ^ (lba << 20) | 1;
    for v in &mut b[28..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = x as u8;
    }
    b
}

/// What a block read back says: never written (zeros), or written by
/// (host, seq). Panics on a torn or misplaced block.
fn decode(lba: u64, b: &[u8]) -> Option<(u64, u64)> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let host = u64::from_le_bytes(b[4..12].try_into().unwrap());
    let seq = u64::from_le_bytes(b[12..20].try_into().unwrap());
    let at = u64::from_le_bytes(b[20..28].try_into().unwrap());
    assert_eq!(
        u32::from_le_bytes(b[0..4].try_into().unwrap()),
        MAGIC,
        "LBA {lba}: not a block any host wrote (torn?): {:02x?}",
        &b[..32]
    );
    assert_eq!(at, lba, "LBA {lba} holds the data of LBA {at}");
    assert!(
        b == block(host, seq, lba).as_slice(),
        "LBA {lba}: torn: header of host {host} write {seq}, other bytes after it"
    );
    Some((host, seq))
}

/// The target binary, restartable on the same port and file.
struct Target {
    child: Option<Child>,
    cfg: PathBuf,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Target {
    fn start(dir: &Path) -> Target {
        let img = dir.join("pressure.img");
        std::fs::write(&img, vec![0u8; (BLOCKS as usize) * BS]).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.join("pressure.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"
[target]
cores = [0]
control_socket = ""
[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = {port}
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
[[subsystem.namespace]]
backend = "file"
path = "{}"
block_size = 512
"#,
                img.display()
            ),
        )
        .unwrap();
        let mut t = Target {
            child: None,
            cfg,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        t.spawn();
        t
    }

    fn spawn(&mut self) {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nvmf-target"))
            .arg("--config")
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nvmf-target");
        let stderr = child.stderr.take().unwrap();
        let sink = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = self.addr;
        let up = wait_until(Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(Some(_))) || TcpStream::connect(addr).is_ok()
        });
        assert!(
            up && matches!(child.try_wait(), Ok(None)),
            "nvmf-target did not come up on {addr}: {:?}",
            self.log.lock().unwrap()
        );
        self.child = Some(child);
    }

    /// A controller of its own, once the target takes one (it may still
    /// be starting).
    fn connect(&self) -> Controller {
        let mut last = None;
        for _ in 0..100 {
            match Controller::connect(self.addr, NQN, &host_opts(9), 1) {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "cannot connect: {last:?}; target log: {:?}",
            self.log.lock().unwrap()
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
    }
}

fn host_opts(h: u64) -> nvmf_initiator::QueueOptions {
    let mut o = opts_for_host(h as u8 + 1);
    o.io_timeout = Duration::from_secs(10);
    o.connect_timeout = Duration::from_secs(2);
    o
}

/// One host: writes of 1 to 8 blocks at random places in its span, up to 8
/// at a time, a Flush every so often, its connection dropped now and then
/// with writes in flight; reconnects whenever the connection is gone.
fn host(
    h: u64,
    addr: SocketAddr,
    clock: Arc<AtomicU64>,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
) -> (u64, u64, u64) {
    let mut rng = Rng::new(0x5EED + h);
    let (mut acked, mut lost, mut drops) = (0u64, 0u64, 0u64);
    let mut seq = 0u64;
    let base = h * (BLOCKS - SPAN) / (HOSTS - 1);
    while !stop.load(SeqCst) {
        let Ok(mut c) = Controller::connect(addr, NQN, &host_opts(h), 1) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let mut inflight: HashMap<u16, (u64, u64)> = HashMap::new(); // cid -> (seq, sent)
        let mut flush_cid: Option<(u16, u64)> = None;
        'conn: while !stop.load(SeqCst) {
            // Fill the queue.
            while inflight.len() < 8 {
                let nlb = 1 + rng.below(8);
                let slba = base + rng.below(SPAN - nlb);
                seq += 1;
                let mut data = Vec::with_capacity(nlb as usize * BS);
                for i in 0..nlb {
                    data.extend_from_slice(&block(h, seq, slba + i));
                }
                let sent = clock.fetch_add(1, SeqCst);
                {
                    let mut l = log.lock().unwrap();
                    l.writes.insert(
                        (h, seq),
                        Write {
                            sent,
                            acked: u64::MAX,
                        },
                    );
                    for i in 0..nlb {
                        l.blocks.entry(slba + i).or_default().push((h, seq));
                    }
                }
                match c.io[0].submit(Command::write(1, slba, nlb as u16 - 1), Some(data), 0) {
                    Ok(cid) => {
                        inflight.insert(cid, (seq, sent));
                    }
                    Err(_) => break 'conn,
                }
            }
            if flush_cid.is_none() && rng.chance(6) {
                let sent = clock.fetch_add(1, SeqCst);
                match c.io[0].submit(Command::flush(1), None, 0) {
                    Ok(cid) => flush_cid = Some((cid, sent)),
                    Err(_) => break 'conn,
                }
            }
            // Now and then the host goes away with everything in flight.
            if rng.chance(150) {
                drops += 1;
                break 'conn;
            }
            let r = match c.io[0].wait() {
                Ok(r) => r,
                Err(_) => break 'conn,
            };
            let now = clock.fetch_add(1, SeqCst);
            if let Some((cid, sent)) = flush_cid {
                if r.cid == cid {
                    flush_cid = None;
                    if r.status == 0 {
                        log.lock().unwrap().flushes.push(sent);
                    }
                    continue;
                }
            }
            if let Some((s, _)) = inflight.remove(&r.cid) {
                if r.status == 0 {
                    acked += 1;
                    log.lock().unwrap().writes.get_mut(&(h, s)).unwrap().acked = now;
                }
            }
        }
        lost += inflight.len() as u64;
        drop(c); // abrupt: no Disconnect, sockets just close
    }
    (acked, lost, drops)
}

#[test]
fn acknowledged_and_flushed_writes_survive_drops_and_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Target::start(dir.path());
    let clock = Arc::new(AtomicU64::new(1));
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let hosts: Vec<_> = (0..HOSTS)
        .map(|h| {
            let (addr, clock, log, stop) = (t.addr, clock.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || host(h, addr, clock, log, stop))
        })
        .collect();
    // The hosts write PHASE writes, then the target is SIGKILLed and
    // restarted; three times, then PHASE more writes.
    const PHASE: usize = 10_000;
    let written_for = |n: usize| {
        let before = log.lock().unwrap().writes.len();
        let t0 = Instant::now();
        while log.lock().unwrap().writes.len() < before + n {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the hosts stopped writing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut kills = 0;
    for _ in 0..3 {
        written_for(PHASE);
        t.kill();
        kills += 1;
        t.spawn();
    }
    written_for(PHASE);
    stop.store(true, SeqCst);
    let mut totals = (0, 0, 0);
    for h in hosts {
        let (a, l, d) = h.join().expect("a host thread panicked");
        totals = (totals.0 + a, totals.1 + l, totals.2 + d);
    }
    // A last Flush, then the last SIGKILL: everything acknowledged before
    // that Flush is durable.
    let mut c = t.connect();
    let sent = clock.fetch_add(1, SeqCst);
    c.io[0].flush(1).unwrap();
    log.lock().unwrap().flushes.push(sent);
    drop(c);
    t.kill();
    t.spawn();

    // Read everything back and judge each block.
    let mut c = t.connect();
    let l = log.lock().unwrap();
    let mut flushes = l.flushes.clone();
    flushes.sort_unstable();
    // A write is durable if a Flush that succeeded was sent after its ack.
    let durable = |w: &Write| w.acked != u64::MAX && flushes.last().is_some_and(|&f| f > w.acked);
    let (mut written, mut checked_durable) = (0u64, 0u64);
    for start in (0..BLOCKS).step_by(256) {
        let data = c.io[0].read(1, start, 255, BS as u32).unwrap();
        for (i, b) in data.chunks(BS).enumerate() {
            let lba = start + i as u64;
            let got = decode(lba, b);
            let touched = l.blocks.get(&lba).map(Vec::as_slice).unwrap_or(&[]);
            // The newest durable write to this block: what it holds must be
            // that write or one sent after that write was acknowledged...
            // more precisely, one not acknowledged before it was sent.
            let newest_durable = touched
                .iter()
                .map(|k| (k, l.writes[k]))
                .filter(|(_, w)| durable(w))
                .max_by_key(|(_, w)| w.sent);
            match got {
                None => assert!(
                    newest_durable.is_none(),
                    "LBA {lba} reads as never written, but write {:?} to it was acknowledged and flushed",
                    newest_durable.unwrap().0
                ),
                Some(k) => {
                    written += 1;
                    assert!(touched.contains(&k), "LBA {lba} holds write {k:?}, which never touched it");
                    if let Some((dk, d)) = newest_durable {
                        checked_durable += 1;
                        let w = l.writes[&k];
                        assert!(
                            w.acked == u64::MAX || w.acked > d.sent,
                            "LBA {lba} holds write {k:?} (sent {}, acked {}), older than the durable write {dk:?} (sent {}, acked {})",
                            w.sent, w.acked, d.sent, d.acked
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "pressure: {} writes sent by {HOSTS} hosts, {} acknowledged, {} lost in flight, {} connection drops, {kills} SIGKILLs + 1; {} flushes; {written} blocks written, {checked_durable} checked against a durable write",
        l.writes.len(),
        totals.0,
        totals.1,
        totals.2,
        flushes.len()
    );
    assert!(
        totals.0 > 5000 && totals.2 > 0 && checked_durable > 1000,
        "too little happened to judge"
    );
    let log = t.log.lock().unwrap();
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:?}");
}
