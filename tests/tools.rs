//! The built binaries: `nvmf-target check` and `--config` on broken and good
//! config files (exact `FILE:LINE:COL: sentence` lines and exit statuses),
//! the target serving from its command line, and the initiator tools
//! `nvmf-discover` and `nvmf-identify` against a running target.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nvmf_target::config::{derived_namespace_ids, derived_serial, format_uuid};

fn target_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvmf-target"))
}

/// A binary of the initiator-tools package, built next to nvmf-target.
fn tool(name: &str) -> PathBuf {
    let dir = target_bin()
        .parent()
        .expect("the target binary has a directory")
        .to_path_buf();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the whole workspace first (`cargo build --workspace`, \
         or run the tests with `cargo test --workspace`)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const BAD_VALUES: &str = r#"[target]
cores = [0]
max_io_size = 5000
in_capsule_data_size = 100

[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = 4420

[[subsystem]]
nqn = "not an nqn"
allow_any_host = true

[[subsystem.namespace]]
backend = "ram"
size = "1MiB"
block_size = 1000
"#;

const BAD_SYNTAX: &str = "[target]\ncores = [0\n";

const BAD_KEYS: &str = r#"[target]
corez = [0]

[[listener]]
transport = "rdma"
address = "127.0.0.1"
fallback = "udp"

[[subsystem]]
nqn = "nqn.2026-01.io.x:y"
allow_any_host = true

[[subsystem.namespace]]
backend = "ram"
"#;

fn expected_errors(f: &str) -> Vec<String> {
    let lines: &[&str] = match Path::new(f).file_name().unwrap().to_str().unwrap() {
        "values.toml" => &[
            "3:15: target.max_io_size: 5000 is not a power of two",
            "4:24: target.in_capsule_data_size: 100 is not a multiple of 16",
            "12:7: subsystem[0].nqn: \"not an nqn\" is not a valid NQN: it contains the character ' '",
            "18:14: subsystem[0].namespace[0].block_size: 1000 is not a supported block size (512 or 4096)",
        ],
        "syntax.toml" => &["3:1: TOML syntax error: invalid array: expected `]`"],
        "keys.toml" => &[
            "2:1: target: unknown key \"corez\" (did you mean \"cores\"?)",
            "7:12: listener[0].fallback: unknown fallback \"udp\" (expected \"tcp\")",
            "13:1: subsystem[0].namespace[0]: missing required field \"size\" (the ram backend needs a size)",
        ],
        other => panic!("no expectations for {other}"),
    };
    lines.iter().map(|l| format!("{f}:{l}")).collect()
}

fn stderr_lines(o: &Output) -> Vec<String> {
    text(&o.stderr).lines().map(str::to_owned).collect()
}

#[test]
fn check_reports_every_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        write(dir.path(), "values.toml", BAD_VALUES),
        write(dir.path(), "syntax.toml", BAD_SYNTAX),
        write(dir.path(), "keys.toml", BAD_KEYS),
    ];
    for f in &files {
        let o = run(Command::new(target_bin()).arg("check").arg(f));
        assert_eq!(
            o.status.code(),
            Some(1),
            "exit status of check {}",
            f.display()
        );
        assert_eq!(
            stderr_lines(&o),
            expected_errors(&f.display().to_string()),
            "check {}",
            f.display()
        );
        assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
    }
    // Several files at once: every error of every file, in order.
    let o = run(Command::new(target_bin()).arg("check").args(&files));
    assert_eq!(o.status.code(), Some(1));
    let want: Vec<String> = files
        .iter()
        .flat_map(|f| expected_errors(&f.display().to_string()))
        .collect();
    assert_eq!(stderr_lines(&o), want);

    // A good file among bad ones is reported ok; alone it passes.
    let good = write(dir.path(), "good.toml", &basic_toml(""));
    let o = run(Command::new(target_bin())
        .arg("check")
        .arg(&good)
        .arg(&files[1]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), format!("{}: ok\n", good.display()));
    let o = run(Command::new(target_bin()).arg("check").arg(&good));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    // A missing file.
    let missing = dir.path().join("missing.toml");
    let o = run(Command::new(target_bin()).arg("check").arg(&missing));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr_lines(&o);
    assert_eq!(err.len(), 1);
    assert!(
        err[0].starts_with(&format!(
            "{}:1:1: cannot read the config file: ",
            missing.display()
        )),
        "{err:?}"
    );
    // No file at all is a usage error.
    let o = run(Command::new(target_bin()).arg("check"));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_shipped_example_configs_pass_check() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&configs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let o = run(Command::new(target_bin()).arg("check").args(&files));
    // configs/multi-core.toml names cores 0 and 1: it only checks on a
    // machine with two CPUs.
    if test_cores().len() >= 2 {
        assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
        for f in &files {
            assert!(
                text(&o.stdout).contains(&format!("{}: ok", f.display())),
                "{}",
                text(&o.stdout)
            );
        }
    }
}

#[test]
fn a_bad_config_stops_the_target_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("values.toml", BAD_VALUES),
        ("syntax.toml", BAD_SYNTAX),
        ("keys.toml", BAD_KEYS),
    ] {
        let f = write(dir.path(), name, body);
        let start = Instant::now();
        let o = run(Command::new(target_bin()).arg("--config").arg(&f));
        assert_eq!(o.status.code(), Some(1), "exit status for {name}");
        assert_eq!(stderr_lines(&o), expected_errors(&f.display().to_string()));
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    // A valid config whose listener cannot be bound: a clear error, exit 1.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let f = write(
        dir.path(),
        "busy.toml",
        &basic_toml("").replace("port = 4420", &format!("port = {port}")),
    );
    let o = run(Command::new(target_bin()).arg("--config").arg(&f));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "stderr: {err}"
    );
    // --cores naming a core the machine lacks.
    let good = write(dir.path(), "good.toml", &basic_toml(""));
    let o = run(Command::new(target_bin())
        .arg("--config")
        .arg(&good)
        .args(["--cores", "4096"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("core 4096 does not exist"),
        "{}",
        text(&o.stderr)
    );
}

/// The target binary, killed when dropped.
struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nvmf-target --config f` and waits until it accepts connections
/// on `addr` or exits.
fn spawn_target(f: &Path, addr: SocketAddr) -> Served {
    let child = Command::new(target_bin())
        .arg("--config")
        .arg(f)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nvmf-target");
    let mut served = Served { child };
    let up = wait_until(Duration::from_secs(20), || {
        if let Ok(Some(_)) = served.child.try_wait() {
            return true;
        }
        std::net::TcpStream::connect(addr).is_ok()
    });
    assert!(up, "nvmf-target did not start listening on {addr}");
    served
}

/// Starts `nvmf-target --config` on a free port and waits until it accepts
/// connections; also returns its config file.
fn serve_config(dir: &Path) -> (Served, SocketAddr, PathBuf) {
    for attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let f = write(
            dir,
            &format!("serve{attempt}.toml"),
            &basic_toml("").replace("port = 4420", &format!("port = {port}")),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut served = spawn_target(&f, addr);
        match served.child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = served.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                // Someone took the port in between: try another one.
                assert!(
                    err.contains("cannot listen"),
                    "nvmf-target exited ({status}): {err}"
                );
            }
            _ => return (served, addr, f),
        }
    }
    panic!("could not find a free port for nvmf-target");
}

fn serve(dir: &Path) -> (Served, SocketAddr) {
    let (served, addr, _) = serve_config(dir);
    (served, addr)
}

fn signal(child: &Child, sig: &str) {
    let o = run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string()));
    assert!(o.status.success(), "kill -{sig}: {}", text(&o.stderr));
}

/// Waits for the child to exit; its status, or `None` after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

#[test]
fn sigterm_stops_the_target_in_order_and_a_restart_takes_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let (mut served, addr, cfg) = serve_config(dir.path());
    let mut c = connect(addr, 1);
    write_read_check(&mut c.io[0], NS_RAM4K, 4096, 0, 1, 65536);
    signal(&served.child, "TERM");
    let status = wait_exit(&mut served.child, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status after SIGTERM: {status:?}"
    );
    let mut err = String::new();
    if let Some(mut e) = served.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        err.is_empty(),
        "nothing at warn level on a clean stop: {err}"
    );
    assert!(
        c.io[0].read(NS_RAM4K, 0, 8, 4096).is_err(),
        "the connection is closed"
    );
    // Killed, and started again at once on the same port: it serves. (The kernel still holds the dead process's
    // listener for some milliseconds: binding waits for it, and a host
    // that reaches the old listener meanwhile is closed on and retries.)
    for round in 0..5 {
        let mut again = spawn_target(&cfg, addr);
        let mut ctrl = None;
        wait_until(Duration::from_secs(5), || {
            ctrl = nvmf_initiator::Controller::connect(addr, NQN, &opts(), 2).ok();
            ctrl.is_some()
        });
        assert!(
            matches!(again.child.try_wait(), Ok(None)),
            "round {round}: the restarted target exited"
        );
        let mut c = ctrl.expect("the restarted target accepts a controller");
        write_read_check(&mut c.io[1], NS_RAM4K, 4096, 64, round, 131072);
        drop(c);
        // Killed the moment a load generator stops (as in a benchmark).
        let o = run(Command::new(tool("nvmf-perf")).args([
            "-s",
            &addr.port().to_string(),
            "-n",
            NQN,
            "-w",
            "write",
            "-o",
            "131072",
            "-q",
            "16",
            "-t",
            "0.2",
            "--warmup",
            "0",
        ]));
        assert!(o.status.success(), "nvmf-perf: {}", text(&o.stderr));
        signal(&again.child, "KILL");
        assert!(wait_exit(&mut again.child, Duration::from_secs(10)).is_some());
    }
}

#[test]
fn the_target_binary_serves_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let (_served, addr) = serve(dir.path());
    let mut c = connect(addr, 2);
    assert_eq!(c.id.subnqn, NQN);
    for (i, q) in c.io.iter_mut().enumerate() {
        write_read_check(q, NS_RAM4K, 4096, i as u64 * 64, i as u64, 131072);
    }
    c.shutdown().unwrap();
    let log = nvmf_initiator::discover(addr, &opts()).unwrap();
    assert!(log.entries.iter().any(|e| e.subnqn == NQN));
}

#[test]
fn nvmf_discover_prints_the_discovery_log() {
    let t = start(&format!(
        "{}\n[[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:second\"\nallow_any_host = true\n\n[[subsystem.namespace]]\nbackend = \"null\"\nsize = \"1MiB\"\n",
        basic_toml("")
    ));
    let port = t.addr().port().to_string();
    for extra in [&[][..], &["-g", "-G"][..]] {
        let o = run(Command::new(tool("nvmf-discover"))
            .args(["-a", "127.0.0.1", "-s", &port, "--timeout-ms", "20000"])
            .args(extra));
        assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
        let out = text(&o.stdout);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            out.contains("Discovery Log Number of Records 3, Generation counter"),
            "{out}"
        );
        for nqn in [NQN, "nqn.2026-01.io.nvmf-target:second", DISCOVERY_NQN] {
            assert!(
                lines.contains(&format!("subnqn:  {nqn}").as_str()),
                "{nqn} missing:\n{out}"
            );
        }
        assert_eq!(
            lines.iter().filter(|l| **l == "traddr:  127.0.0.1").count(),
            3,
            "{out}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| **l == format!("trsvcid: {port}"))
                .count(),
            3,
            "{out}"
        );
        assert!(lines.contains(&"trtype:  tcp"), "{out}");
        assert!(lines.contains(&"adrfam:  ipv4"), "{out}");
        assert!(lines.contains(&"subtype: nvme subsystem"), "{out}");
        assert!(
            lines.contains(&"subtype: current discovery subsystem"),
            "{out}"
        );
    }
    // JSON output names the same subsystems.
    let o = run(Command::new(tool("nvmf-discover")).args([
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-o",
        "json",
    ]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains(&format!("\"subnqn\":\"{NQN}\"")), "{out}");
    assert!(out.contains("\"traddr\":\"127.0.0.1\""), "{out}");
    // Nothing listening: a clear failure.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = run(Command::new(tool("nvmf-discover")).args([
        "-a",
        "127.0.0.1",
        "-s",
        &closed.to_string(),
        "--timeout-ms",
        "2000",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("nvmf-discover: "),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn nvmf_identify_prints_controller_and_namespaces() {
    let t = start(&basic_toml("max_io_size = \"256KiB\""));
    let port = t.addr().port().to_string();
    let o = run(Command::new(tool("nvmf-identify")).args([
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        NQN,
        "--timeout-ms",
        "20000",
    ]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let has = |l: &str| assert!(lines.contains(&l), "line {l:?} missing:\n{out}");
    has("NVME Identify Controller:");
    has("mdts      : 6");
    has(&format!("subnqn    : {NQN}"));
    has(&format!("sn        : {}", derived_serial(NQN)));
    has("mn        : nvmf-target");
    has("cntrltype : 1");
    has("ioccsz    : 516");
    has("iorcsz    : 1");
    has("icdoff    : 0");
    has("kas       : 10");
    has("nn        : 1024");
    for nsid in [1u32, 2, 3] {
        has(&format!("NVME Identify Namespace {nsid}:"));
        has(&format!(
            "NVME Namespace Identification Descriptors NS {nsid}:"
        ));
        let (uuid, _, _) = derived_namespace_ids(NQN, nsid);
        has(&format!("uuid    : {}", format_uuid(&uuid)));
    }
    has(&format!("nsze    : {:#x}", RAM_SIZE / 512));
    // The same UUIDs on a restarted target.
    drop(t);
    let t = start(&basic_toml("max_io_size = \"256KiB\""));
    let port = t.addr().port().to_string();
    let o = run(Command::new(tool("nvmf-identify")).args([
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        NQN,
        "-g",
        "-G",
    ]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let again = text(&o.stdout);
    let uuids = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("uuid") || l.starts_with("nguid") || l.starts_with("eui64"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(uuids(&out), uuids(&again));
    // Per namespace: NGUID and EUI-64 in Identify Namespace, and the three
    // descriptors.
    assert_eq!(uuids(&out).len(), 15, "{out}");
    // The discovery controller, and a subsystem that does not exist.
    let o = run(Command::new(tool("nvmf-identify")).args([
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        DISCOVERY_NQN,
    ]));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert!(text(&o.stdout).lines().any(|l| l == "cntrltype : 2"));
    let o = run(Command::new(tool("nvmf-identify")).args([
        "-a",
        "127.0.0.1",
        "-s",
        &port,
        "-n",
        "nqn.2026-01.io.example:none",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("nqn.2026-01.io.example:none"), "{err}");
    assert!(
        err.contains("0x0182") || err.contains("Invalid Param"),
        "{err}"
    );
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After "pid (comm) ": state is field 3, utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let o = run(Command::new("getconf").arg("CLK_TCK"));
    let hz: u64 = text(&o.stdout).trim().parse().unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn an_idle_target_sleeps_after_a_busy_host_pauses_and_serves_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (served, addr) = serve(dir.path());
    let pid = served.child.id();
    let mut c = connect(addr, 1);
    // Busy: the reactor spins and polls this I/O queue's socket.
    let busy = Instant::now();
    let mut round = 0;
    while busy.elapsed() < Duration::from_millis(200) {
        write_read_check(&mut c.io[0], NS_RAM4K, 4096, 0, round, 16384);
        round += 1;
    }
    // The host pauses with the connection open: within the spin window
    // the reactor stops polling, waits in its ring and sleeps.
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(1));
    let idle = cpu_time(pid) - before;
    assert!(
        idle < Duration::from_millis(250),
        "the target used {idle:?} of CPU in 1 s with nothing to do"
    );
    // And the next command, arriving while it sleeps, wakes it.
    write_read_check(&mut c.io[0], NS_RAM4K, 4096, 8, round, 16384);
}

/// The number after `key` in nvmf-perf's JSON (`"key":N`).
fn json_num(j: &str, key: &str) -> f64 {
    let at = j
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {j}"));
    let rest = &j[at + key.len() + 3..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {j}"))
}

/// Runs nvmf-perf with `args`; its standard output, after checking it succeeded.
fn perf_ok(what: &str, args: &[&[&str]]) -> String {
    let mut cmd = Command::new(tool("nvmf-perf"));
    for a in args {
        cmd.args(*a);
    }
    let o = run(&mut cmd);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{what}: {out} {}", text(&o.stderr));
    out
}

#[test]
fn nvmf_perf_verifies_and_measures_with_and_without_sq_flow_control() {
    let dir = tempfile::tempdir().unwrap();
    let (_served, addr) = serve(dir.path());
    let port = addr.port().to_string();
    let base = ["-s", &port, "-n", NQN, "--nsid", "2"];
    for extra in [
        &[][..],
        &["--disable-sqflow"][..],
        &["--disable-sqflow", "--hdr-digest", "--data-digest"][..],
    ] {
        // Verify mode: every block written with its pattern and read back.
        let verify = ["--verify", "--span", "4MiB", "-o", "65536", "-q", "8"];
        let out = perf_ok(&format!("verify {extra:?}"), &[&base, &verify, extra]);
        assert!(
            out.contains("errors 0; mismatches 0"),
            "verify {extra:?}: {out}"
        );
        // A timed mixed run, as JSON.
        let mixed = [
            "-w", "randrw", "-M", "50", "-o", "4096", "-q", "16", "-t", "0.3", "--warmup", "0",
            "--span", "4MiB", "--json", "-",
        ];
        let out = perf_ok(&format!("randrw {extra:?}"), &[&base, &mixed, extra]);
        let j = out.lines().last().unwrap_or_default();
        assert_eq!(json_num(j, "errors"), 0.0, "{j}");
        assert!(
            json_num(j, "reads") > 0.0 && json_num(j, "writes") > 0.0,
            "{j}"
        );
        let ios = json_num(j, "ios");
        assert_eq!(ios, json_num(j, "reads") + json_num(j, "writes"), "{j}");
        assert!(json_num(j, "iops") > 0.0, "{j}");
        let lat = ["p50", "p99", "p999", "max"].map(|k| json_num(j, k));
        assert!(
            lat.windows(2).all(|w| w[0] <= w[1]),
            "percentiles in order: {j}"
        );
    }
}
