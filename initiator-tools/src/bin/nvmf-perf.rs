//! nvmf-perf: an NVMe/TCP load generator in the spirit of spdk_nvme_perf and
//! fio. Prints IOPS, MiB/s and latency percentiles, optionally as JSON; a
//! verify mode writes a pattern and reads it back.

use clap::Parser;
use nvmf_initiator::perf::{self, EngineQueue, Pattern, PerfConfig, PerfResult};
use nvmf_initiator::{Controller, QueueOptions};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "nvmf-perf", version, about = "NVMe/TCP load generator")]
struct Args {
    /// Target address.
    #[arg(short = 'a', long, default_value = "127.0.0.1")]
    traddr: String,
    /// Target port.
    #[arg(short = 's', long, default_value_t = 4420)]
    trsvcid: u16,
    /// Subsystem NQN.
    #[arg(
        short = 'n',
        long,
        default_value = "nqn.2026-01.io.nvmf-target:default"
    )]
    nqn: String,
    /// Namespace ID.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    /// Queue depth per I/O queue.
    #[arg(short = 'q', long, default_value_t = 32)]
    queue_depth: usize,
    /// I/O size in bytes.
    #[arg(short = 'o', long, default_value_t = 4096)]
    io_size: u32,
    /// Pattern: randread, randwrite, randrw, read, write, rw.
    #[arg(short = 'w', long, default_value = "randread")]
    pattern: String,
    /// Read percentage for randrw and rw.
    #[arg(short = 'M', long, default_value_t = 70)]
    rwmixread: u8,
    /// Measured run time in seconds.
    #[arg(short = 't', long, default_value_t = 10.0)]
    time: f64,
    /// Warm-up before measuring, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// I/O queues per connection (controller).
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Controllers (each with its own admin queue and I/O queues).
    #[arg(long, default_value_t = 1)]
    connections: u16,
    /// CPU core to pin to.
    #[arg(long)]
    core: Option<usize>,
    /// Bytes of the namespace to use, e.g. 64MiB (default: all of it).
    #[arg(long, value_parser = parse_size)]
    span: Option<u64>,
    /// Enable header digests.
    #[arg(long)]
    hdr_digest: bool,
    /// Enable data digests.
    #[arg(long)]
    data_digest: bool,
    /// Ask the controller to disable SQ flow control (as `nvme connect
    /// --disable-sqflow`): responses then carry no SQ head, and a target may
    /// end a read with the C2HData SUCCESS flag instead of a response capsule.
    #[arg(long)]
    disable_sqflow: bool,
    /// Write a pattern over the span, read it back and compare.
    #[arg(long)]
    verify: bool,
    /// Also write the result as JSON to this file ("-" for stdout).
    #[arg(long)]
    json: Option<String>,
    /// Pattern and random seed.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
}

/// Parses a byte count with an optional binary suffix (K, M, G, KiB, MiB, GiB).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("nvmf-perf: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let a = Args::parse();
    let Some(pattern) = Pattern::parse(&a.pattern) else {
        return fail(format!("unknown pattern {:?}", a.pattern));
    };
    let addr: SocketAddr = match (a.traddr.as_str(), a.trsvcid)
        .to_socket_addrs()
        .map(|mut i| i.next())
    {
        Ok(Some(x)) => x,
        _ => return fail(format!("cannot resolve {}:{}", a.traddr, a.trsvcid)),
    };
    if let Some(core) = a.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            return fail(format!("cannot pin to core {core}"));
        }
    }
    let opts = QueueOptions {
        hdr_digest: a.hdr_digest,
        data_digest: a.data_digest,
        disable_sqflow: a.disable_sqflow,
        queue_size: (a.queue_depth as u16).max(2),
        // Tolerate what other targets do and Linux accepts (SPDK: SUCCESS flag, SQID).
        lenient: true,
        ..QueueOptions::default()
    };
    let mut ctrls = Vec::new();
    let mut queues = Vec::new();
    let mut geometry = None;
    for _ in 0..a.connections.max(1) {
        let mut c = match Controller::connect(addr, &a.nqn, &opts, a.queues.max(1)) {
            Ok(c) => c,
            Err(e) => return fail(format!("connect to {addr} {}: {e}", a.nqn)),
        };
        if geometry.is_none() {
            match c.identify_namespace(a.nsid) {
                Ok(ns) => match ns.block_size() {
                    Some(bs) if ns.nsze > 0 => geometry = Some((bs, ns.nsze)),
                    _ => return fail(format!("namespace {} is not active", a.nsid)),
                },
                Err(e) => return fail(format!("identify namespace {}: {e}", a.nsid)),
            }
        }
        for q in std::mem::take(&mut c.io) {
            let eq = EngineQueue {
                hdr_digest: q.hdr_digest(),
                data_digest: q.data_digest(),
                cpda: q.cpda(),
                maxh2cdata: q.maxh2cdata(),
                in_capsule_max: q.in_capsule_max(),
                queue_size: q.queue_size(),
                stream: match q.into_stream() {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                },
            };
            queues.push(eq);
        }
        ctrls.push(c);
    }
    let (block_size, nsze) = geometry.unwrap_or((512, 0));
    let span_blocks = a
        .span
        .map(|s| s / block_size as u64)
        .unwrap_or(nsze)
        .min(nsze);
    let cfg = PerfConfig {
        nsid: a.nsid,
        block_size,
        span_blocks,
        io_size: a.io_size,
        queue_depth: a.queue_depth,
        pattern,
        mixed_read_pct: a.rwmixread,
        duration: Duration::from_secs_f64(a.time.max(0.0)),
        warmup: Duration::from_secs_f64(a.warmup.max(0.0)),
        seed: a.seed,
    };
    let nq = queues.len();
    if a.verify {
        let (w, r) = match perf::run_verify(queues, &cfg) {
            Ok(x) => x,
            Err(e) => return fail(e),
        };
        println!(
            "nvmf-perf verify: wrote {} I/Os ({:.1} MiB/s), read back {} I/Os ({:.1} MiB/s); errors {}; mismatches {}",
            w.ios,
            w.mib_s(),
            r.ios,
            r.mib_s(),
            w.errors + r.errors,
            r.verify_failures
        );
        let bad = w.errors + r.errors + r.verify_failures > 0 || r.ios == 0;
        return if bad {
            fail("verify failed")
        } else {
            ExitCode::SUCCESS
        };
    }
    let r = match perf::run(queues, &cfg) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    for c in ctrls {
        let _ = c.shutdown();
    }
    print_result(&a, pattern, nq, &r);
    if let Some(path) = &a.json {
        let j = json(&a, pattern, nq, &r);
        if path == "-" {
            println!("{j}");
        } else if let Err(e) = std::fs::write(path, j + "\n") {
            return fail(format!("{path}: {e}"));
        }
    }
    if r.errors > 0 {
        return fail(format!("{} commands failed", r.errors));
    }
    ExitCode::SUCCESS
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn print_result(a: &Args, p: Pattern, nq: usize, r: &PerfResult) {
    let h = &r.latency;
    println!(
        "nvmf-perf: {} {} B, QD {} x {} queue(s), {:.1} s",
        p.name(),
        a.io_size,
        a.queue_depth,
        nq,
        r.elapsed.as_secs_f64()
    );
    println!(
        "  IOPS {:>12.0}   MiB/s {:>10.1}   I/Os {} (reads {}, writes {})",
        r.iops(),
        r.mib_s(),
        r.ios,
        r.reads,
        r.writes
    );
    println!(
        "  latency us: mean {:.1}  p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        h.mean() / 1000.0,
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
        us(h.max)
    );
    println!("  errors {}", r.errors);
}

fn json(a: &Args, p: Pattern, nq: usize, r: &PerfResult) -> String {
    let h = &r.latency;
    format!(
        "{{\"pattern\":\"{}\",\"io_size\":{},\"queue_depth\":{},\"queues\":{},\"seconds\":{:.3},\"ios\":{},\"reads\":{},\"writes\":{},\"errors\":{},\"iops\":{:.1},\"mib_s\":{:.2},\"lat_us\":{{\"mean\":{:.2},\"p50\":{:.2},\"p99\":{:.2},\"p999\":{:.2},\"max\":{:.2}}}}}",
        p.name(),
        a.io_size,
        a.queue_depth,
        nq,
        r.elapsed.as_secs_f64(),
        r.ios,
        r.reads,
        r.writes,
        r.errors,
        r.iops(),
        r.mib_s(),
        h.mean() / 1000.0,
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
        us(h.max)
    )
}
