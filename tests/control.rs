//! The control plane of the running binary: `nvmf-target ctl` over the
//! control socket, the Prometheus endpoint, and systemd's notify protocol
//! (readiness, watchdog, stopping), as an admin and systemd would use them.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nvmf-target"))
}

/// `nvmf-target ctl --socket S ARGS...`: (success, stdout, stderr).
fn ctl(sock: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(bin())
        .arg("ctl")
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out
}

/// The value of the first sample of `metric` whose labels contain `label`.
fn sample(text: &str, metric: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn recv_until(sock: &UnixDatagram, want: &str, secs: u64) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    for _ in 0..secs {
        if let Ok(n) = sock.recv(&mut b) {
            got.push(String::from_utf8_lossy(&b[..n]).into_owned());
            if got.last().unwrap().contains(want) {
                return got;
            }
        }
    }
    panic!("no {want} from the target within {secs} s; got {got:?}");
}

#[test]
fn ctl_metrics_and_systemd_notify_against_the_running_target() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    let (port, mport) = (free_port(), free_port());
    let cfg_path = dir.path().join("target.toml");
    let text = basic_toml(&format!("control_socket = \"{}\"", sock.display()))
        .replace("port = 4420", &format!("port = {port}"))
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n");
    std::fs::write(&cfg_path, &text).unwrap();
    let child = Spawned::start(
        &cfg_path,
        &[
            ("NOTIFY_SOCKET", notify.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("4000000")),
        ],
    );
    recv_until(&listener, "READY=1", 30);
    // Ready means serving: a host connects at once.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = connect(addr, 2);
    {
        // Only root's (the owner's) business.
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "control socket mode");

        let (ok, out, err) = ctl(&sock, &["status"]);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("config file:  {} (matches)", cfg_path.display())),
            "{out}"
        );
        assert!(out.contains("controllers:  1"), "{out}");
        let (ok, out, _) = ctl(&sock, &["subsystems", "--json"]);
        assert!(
            ok && out.contains(&format!("\"nqn\":\"{NQN}\"")) && out.contains("\"controllers\":1"),
            "{out}"
        );
        let (ok, out, _) = ctl(&sock, &["namespaces"]);
        assert!(
            ok && out.contains(&format!(
                "{NQN} nsid 2: ram, 67108864 bytes in blocks of 4096"
            )),
            "{out}"
        );

        // I/O moves the counters, in ctl stats and in the metrics.
        let before = scrape(format!("127.0.0.1:{mport}").parse().unwrap());
        let w0 = sample(&before, "nvmf_target_written_bytes_total", "cntlid=").unwrap();
        write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 1, 65536);
        write_read_check(&mut c.io[1], NS_RAM512, 512, 128, 2, 4096);
        let after = scrape(format!("127.0.0.1:{mport}").parse().unwrap());
        let w1 = sample(&after, "nvmf_target_written_bytes_total", "cntlid=").unwrap();
        assert_eq!(w1 - w0, 69632.0, "bytes written per the metrics");
        // Per namespace: bytes by operation, and a latency histogram whose
        // count is every command and whose +Inf bucket equals it.
        let ns = format!("subsystem=\"{NQN}\",nsid=\"{NS_RAM512}\"");
        let bytes = |t: &str, op: &str| {
            sample(
                t,
                "nvmf_target_namespace_bytes_total",
                &format!("{ns},op=\"{op}\""),
            )
            .unwrap_or(0.0)
        };
        assert_eq!(bytes(&after, "write") - bytes(&before, "write"), 69632.0);
        assert_eq!(bytes(&after, "read") - bytes(&before, "read"), 69632.0);
        let count = |t: &str, op: &str| {
            sample(
                t,
                "nvmf_target_namespace_latency_seconds_count",
                &format!("{ns},op=\"{op}\""),
            )
            .unwrap_or(0.0)
        };
        assert_eq!(count(&after, "write") - count(&before, "write"), 2.0);
        let inf = sample(
            &after,
            "nvmf_target_namespace_latency_seconds_bucket",
            &format!("{ns},op=\"write\",le=\"+Inf\""),
        )
        .unwrap();
        assert_eq!(inf, count(&after, "write"));
        assert!(after.contains("# TYPE nvmf_target_namespace_latency_seconds histogram"));
        assert!(
            sample(
                &after,
                "nvmf_target_reactor_latency_seconds_count",
                "reactor=\"0\""
            )
            .unwrap()
                >= 4.0
        );
        assert!(
            sample(
                &after,
                "nvmf_target_reactor_commands_total",
                "reactor=\"0\",op=\"read\""
            )
            .unwrap()
                >= 2.0
        );
        assert_eq!(sample(&after, "nvmf_target_controllers", "").unwrap(), 1.0);
        assert!(sample(&after, "nvmf_target_connections", "reactor=\"0\"").unwrap() >= 3.0);
        assert!(after.contains("# TYPE nvmf_target_reactor_busy_seconds_total counter"));
        assert!(sample(
            &after,
            "nvmf_target_reactor_idle_seconds_total",
            "reactor=\"0\""
        )
        .is_some());
        let (ok, out, _) = ctl(&sock, &["stats"]);
        assert!(
            ok && out.contains("2 writes, ") && out.contains("69632 bytes written"),
            "{out}"
        );
        // Per namespace and per queue, with latency percentiles.
        assert!(
            out.contains(&format!(
                "{NQN} nsid {NS_RAM512}: 2 reads (69632 bytes), 2 writes (69632 bytes), 0 other, 0 errors; latency us p50 "
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "cntlid {} queue 1 (reactor 0) on {NQN} nsid {NS_RAM512}: 1 reads (65536 bytes)",
                c.cntlid
            )) && out.contains(&format!(
                "cntlid {} queue 2 (reactor 0) on {NQN} nsid {NS_RAM512}: 1 reads (4096 bytes)",
                c.cntlid
            )),
            "{out}"
        );
        let (ok, out, _) = ctl(&sock, &["stats", "--json"]);
        assert!(
            ok && out.contains(&format!(
                "\"subsystem\":\"{NQN}\",\"nsid\":{NS_RAM512},\"reads\":2,\"writes\":2"
            )) && out.contains("\"latency_p99_9_us\":")
                && out.contains(&format!(
                    "\"cntlid\":{},\"qid\":2,\"reactor\":0,\"reads\":1",
                    c.cntlid
                )),
            "{out}"
        );

        let (ok, out, _) = ctl(&sock, &["controllers", "--json"]);
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!("\"cntlid\":{}", c.cntlid)) && out.contains("\"io_queues\":2"),
            "{out}"
        );

        // Bad requests: a clear error, exit status 1, nothing changes.
        let (ok, _, err) = ctl(&sock, &["frobnicate"]);
        assert!(
            !ok && err.contains("unknown command \"frobnicate\""),
            "{err}"
        );
        let (ok, _, err) = ctl(&sock, &["disconnect", "999"]);
        assert!(!ok && err.contains("no controller 999"), "{err}");
        c.keep_alive().unwrap();

        // The file changes under the running target: status says so.
        std::fs::write(
            &cfg_path,
            text.replace("size = \"64MiB\"", "size = \"32MiB\""),
        )
        .unwrap();
        let (_, out, _) = ctl(&sock, &["status"]);
        assert!(out.contains("(differs)"), "{out}");

        // Disconnect: the host's queues are closed.
        let (ok, out, _) = ctl(&sock, &["disconnect", &c.cntlid.to_string()]);
        assert!(ok && out.contains("disconnected"), "{out}");
        c.admin
            .wait_closed(Duration::from_secs(10))
            .expect("admin queue closed");
        c.io[0]
            .wait_closed(Duration::from_secs(10))
            .expect("I/O queue closed");
        assert!(wait_until(Duration::from_secs(10), || ctl(
            &sock,
            &["controllers"]
        )
        .1
            == "no controllers\n"));

        // The reactors feed systemd's watchdog.
        recv_until(&listener, "WATCHDOG=1", 20);
    }
    let mut child = child;
    // SIGTERM: STOPPING=1, and the socket is gone.
    Command::new("kill")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    recv_until(&listener, "STOPPING=1", 20);
    assert!(child.0.wait().unwrap().success());
    assert!(!sock.exists(), "control socket left behind");
    let (ok, _, err) = ctl(&sock, &["status"]);
    assert!(!ok && err.contains("is the target running"), "{err}");
}
