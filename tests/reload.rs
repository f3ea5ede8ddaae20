//! Reload (issue 11 item 1), against the running binary: an edited config
//! applied as a diff, by `nvmf-target reload` and by SIGHUP. Hosts whose
//! subsystem or namespaces change see it without reconnecting (a Namespace
//! Attribute Changed event, the Changed Namespace List, the new namespace
//! usable on the queues they have); removed hosts and subsystems lose their
//! controllers; a config with errors changes nothing.

mod common;

use common::*;
use nvmf_initiator::Controller;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const B: &str = "nqn.2026-01.io.nvmf-target:reload-b";
const C: &str = "nqn.2026-01.io.nvmf-target:reload-c";

fn host(n: u8) -> String {
    let mut id = nvmf_initiator::queue::DEFAULT_HOSTID;
    id[15] = n;
    format!(
        "nqn.2014-08.org.nvmexpress:uuid:{}",
        nvmf_initiator::uuid_to_string(&id)
    )
}

/// The config: subsystem NQN (namespaces `nsids`), B for `b_host` only,
/// and C when `with_c`; `extra` goes into [target].
fn config(port: u16, sock: &Path, nsids: &[u32], b_host: u8, with_c: bool, extra: &str) -> String {
    let mut t = format!(
        "[target]\ncores = [0]\ncontrol_socket = \"{}\"\n{extra}\n\
         [[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = {port}\n\
         [[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\n",
        sock.display()
    );
    for n in nsids {
        t +=
            &format!("[[subsystem.namespace]]\nnsid = {n}\nbackend = \"ram\"\nsize = \"{n}MiB\"\n");
    }
    t += &format!(
        "[[subsystem]]\nnqn = \"{B}\"\nhosts = [\"{}\"]\n[[subsystem.namespace]]\nbackend = \"null\"\nsize = \"1MiB\"\n",
        host(b_host)
    );
    if with_c {
        t += &format!(
            "[[subsystem]]\nnqn = \"{C}\"\nallow_any_host = true\n[[subsystem.namespace]]\nbackend = \"ram\"\nsize = \"1MiB\"\n"
        );
    }
    t
}

fn run(args: &[&str], cfg: &Path) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_nvmf-target"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn connect_as(addr: SocketAddr, nqn: &str, h: u8) -> Controller {
    connect_with(addr, nqn, &opts_for_host(h), 1)
}

/// The binary serving [`config`] (namespaces `nsids`, B for host 2, C when
/// `with_c`) on a free port, up and answering on its control socket.
fn serve(
    nsids: &[u32],
    with_c: bool,
) -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    u16,
    SocketAddr,
    Spawned,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let cfg: PathBuf = dir.path().join("target.toml");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::fs::write(&cfg, config(port, &sock, nsids, 2, with_c, "")).unwrap();
    let child = Spawned::start(&cfg, &[]);
    assert!(wait_until(Duration::from_secs(30), || sock.exists()
        && std::net::TcpStream::connect(addr).is_ok()));
    (dir, cfg, sock, port, addr, child)
}

fn active_nsids(c: &mut Controller) -> Vec<u32> {
    let list = c.identify(2, 0, 0, 0).unwrap();
    list.chunks(4)
        .map(|b| le32(b, 0))
        .take_while(|&n| n != 0)
        .collect()
}

#[test]
fn an_edited_config_is_applied_as_a_diff() {
    let (_dir, cfg, sock, port, addr, child) = serve(&[1, 2, 3], false);

    let mut a = connect_as(addr, NQN, 1);
    // Namespace Attribute Notices on, an event request outstanding.
    a.set_features(0x0B, 0, 0x100, 0, false).unwrap();
    let aer = a.admin.async_event_request().unwrap();
    // A persistent discovery controller, with Discovery Log Page Change
    // Notices on (OAES bit 31 says it may).
    let mut d = Controller::connect(addr, nvmf_target::config::DISCOVERY_NQN, &opts(), 0).unwrap();
    assert_ne!(
        le32(&d.identify(1, 0, 0, 0).unwrap(), 92) & (1 << 31),
        0,
        "OAES DLPCN"
    );
    d.set_features(0x0B, 0, 1 << 31, 0, false).unwrap();
    let disc_aer = d.admin.async_event_request().unwrap();
    let mut b = connect_as(addr, B, 2);
    assert_eq!(active_nsids(&mut a), vec![1, 2, 3]);
    write_read_check(&mut a.io[0], 1, 512, 0, 1, 4096);

    // Namespace 5 added, 3 removed, 2 unchanged; B for host 3 only; C new;
    // a target-wide setting that needs a restart.
    std::fs::write(
        &cfg,
        config(port, &sock, &[1, 2, 5], 3, true, "max_io_queues = 4"),
    )
    .unwrap();
    let (ok, out, err) = run(&["reload"], &cfg);
    assert!(ok, "{err}");
    for want in [
        format!("applied: subsystem {NQN} nsid 5: added"),
        format!("applied: subsystem {NQN} nsid 3: removed"),
        format!("applied: subsystem {B}: hosts changed"),
        format!("applied: subsystem {C} added"),
        "needs restart: [target] max_io_queues changed".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains("nsid 1") && !out.contains("nsid 2:"), "{out}");

    // The host of A hears of it, reads which namespaces changed, and uses
    // the new one on the I/O queue it has.
    let r = a.admin.wait_for(aer).unwrap();
    assert_eq!(
        r.dw0, 0x0004_0002,
        "Notice, Namespace Attribute Changed, log page 04h"
    );
    // The discovery host hears that the log changed (C was added), and
    // reads it.
    let r = d.admin.wait_for(disc_aer).unwrap();
    assert_eq!(
        r.dw0, 0x0070_F002,
        "Notice, Discovery Log Page Change, log page 70h"
    );
    let log = d.get_log_page(0x70, 0, 4096, 0, 0).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains(C),
        "C in the discovery log"
    );
    let log = a.get_log_page(0x04, 0, 4096, 0, 0).unwrap();
    assert_eq!((le32(&log, 0), le32(&log, 4), le32(&log, 8)), (3, 5, 0));
    let log = a.get_log_page(0x04, 0, 4096, 0, 0).unwrap();
    assert_eq!(le32(&log, 0), 0, "read once, the list starts over");
    assert_eq!(active_nsids(&mut a), vec![1, 2, 5]);
    write_read_check(&mut a.io[0], 5, 512, 10, 2, 8192);
    expect_status_dnr(a.io[0].read(3, 0, 0, 512), sc::INVALID_NS);
    // Namespace 1 kept its data.
    assert_same(
        &a.io[0].read(1, 0, 7, 512).unwrap(),
        &pattern(1, 4096),
        "nsid 1",
    );

    // Host 2 may no longer use B: its controller goes away.
    b.admin
        .wait_closed(Duration::from_secs(10))
        .expect("B's controller of host 2 torn down");
    assert!(Controller::connect(addr, B, &opts_for_host(2), 1).is_err());
    let mut b3 = connect_as(addr, B, 3);
    b3.keep_alive().unwrap();
    let mut c = connect_as(addr, C, 1);
    write_read_check(&mut c.io[0], 1, 512, 0, 3, 4096);

    let (_, out, _) = run(&["ctl", "status"], &cfg);
    assert!(
        out.contains("(matches, but 1 change(s) wait for a restart)"),
        "{out}"
    );

    // A config with errors changes nothing.
    std::fs::write(
        &cfg,
        config(port, &sock, &[1], 3, false, "")
            .replace("size = \"1MiB\"", "size = \"1 lightyear\""),
    )
    .unwrap();
    let (ok, _, err) = run(&["reload"], &cfg);
    assert!(!ok, "a broken config was accepted");
    assert!(
        err.contains("nothing changed") && err.contains(&format!("{}:", cfg.display())),
        "{err}"
    );
    write_read_check(&mut a.io[0], 5, 512, 20, 4, 4096);
    write_read_check(&mut c.io[0], 1, 512, 0, 5, 4096);

    // SIGHUP reloads too: C goes, and so does its controller.
    std::fs::write(
        &cfg,
        config(port, &sock, &[1, 2, 5], 3, false, "max_io_queues = 4"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    c.admin
        .wait_closed(Duration::from_secs(10))
        .expect("C's controller torn down");
    let (_, out, _) = run(&["ctl", "subsystems"], &cfg);
    assert!(!out.contains(C) && out.contains(B), "{out}");
    a.keep_alive().unwrap();
}

/// `ctl` changes the running target as a reload would: a subsystem for one
/// host, a namespace of a given size and UUID that a connected host sees
/// appear, a file namespace resized, the host denied, the subsystem gone;
/// bad requests change nothing; `config save` writes it to the file.
#[test]
fn ctl_changes_the_running_target_as_a_reload_would() {
    let (dir, cfg, _sock, _port, addr, _child) = serve(&[1], false);
    let ctl = |args: &[&str]| {
        let mut a = vec!["ctl"];
        a.extend_from_slice(args);
        run(&a, &cfg)
    };
    const X: &str = "nqn.2026-01.io.nvmf-target:made-by-ctl";
    let h4 = host(4);
    let (ok, out, err) = ctl(&["subsystem", "add", X, "--host", &h4]);
    assert!(
        ok && out.contains(&format!("applied: subsystem {X} added")),
        "{out}{err}"
    );
    assert!(
        Controller::connect(addr, X, &opts_for_host(5), 1).is_err(),
        "host 5 is not allowed"
    );
    let mut c = connect_as(addr, X, 4);
    c.set_features(0x0B, 0, 0x100, 0, false).unwrap();
    let aer = c.admin.async_event_request().unwrap();
    let uuid = "6a0b1c2d-3e4f-4a5b-8c6d-7e8f90a1b2c3";
    let (ok, out, err) = ctl(&["ns", "add", X, "--size", "8MiB", "--uuid", uuid]);
    assert!(
        ok && out.contains(&format!("subsystem {X} nsid 1: added")),
        "{out}{err}"
    );
    assert_eq!(c.admin.wait_for(aer).unwrap().dw0, 0x0004_0002);
    assert_eq!(active_nsids(&mut c), vec![1]);
    let id = c.identify(0, 1, 0, 0).unwrap();
    assert_eq!(le64(&id, 0), 8 << 20 >> 9, "NSZE");
    let descs = c.identify(3, 1, 0, 0).unwrap();
    assert!(descs
        .windows(16)
        .any(|w| w == nvmf_target::config::parse_uuid(uuid).unwrap()));
    // The I/O queue the host had before the namespace existed serves it.
    write_read_check(&mut c.io[0], 1, 512, 0, 7, 4096);

    // Bad requests: an error, nothing changed.
    for (args, want) in [
        (vec!["ns", "add", X], "ns add needs --size"),
        (
            vec!["ns", "add", X, "--size", "1MiB", "--nsid", "1"],
            "would not make a valid config",
        ),
        (
            vec!["ns", "resize", X, "1", "16MiB"],
            "only file namespaces resize in place",
        ),
        (vec!["ns", "remove", X, "9"], "has no namespace 9"),
        (vec!["subsystem", "add", X], "exists already"),
        (vec!["host", "frob", X], "usage:"),
    ] {
        let (ok, _, err) = ctl(&args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(active_nsids(&mut c), vec![1]);

    // A file namespace, grown in place.
    let img = dir.path().join("x2.img");
    let aer = c.admin.async_event_request().unwrap();
    let (ok, out, err) = ctl(&[
        "ns",
        "add",
        X,
        "--size",
        "4MiB",
        "--backend",
        "file",
        "--path",
        img.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("nsid 2: added"), "{out}{err}");
    assert_eq!(c.admin.wait_for(aer).unwrap().dw0, 0x0004_0002);
    write_read_check(&mut c.io[0], 2, 512, 100, 8, 4096);
    let aer = c.admin.async_event_request().unwrap();
    let (ok, out, err) = ctl(&["ns", "resize", X, "2", "12MiB"]);
    assert!(
        ok && out.contains("nsid 2: resized to 12582912 bytes"),
        "{out}{err}"
    );
    assert_eq!(c.admin.wait_for(aer).unwrap().dw0, 0x0004_0002);
    assert_eq!(le64(&c.identify(0, 2, 0, 0).unwrap(), 0), 12 << 20 >> 9);
    assert_same(
        &c.io[0].read(2, 100, 7, 512).unwrap(),
        &pattern(8, 4096),
        "data after the resize",
    );

    // Saved, the file says what runs, and a reload changes nothing.
    let (ok, out, _) = ctl(&["config", "save"]);
    assert!(ok && out.contains("saved to"), "{out}");
    let (_, out, _) = ctl(&["status"]);
    assert!(out.contains("(matches)"), "{out}");
    let (ok, out, _) = run(&["reload"], &cfg);
    assert!(ok && out == "nothing changed\n", "{out}");

    // Denied, the host loses its controller; removed, the subsystem goes.
    let (ok, _, err) = ctl(&["host", "allow", X, &host(6)]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&["host", "deny", X, &h4]);
    assert!(ok, "{err}");
    c.admin
        .wait_closed(Duration::from_secs(10))
        .expect("host 4's controller torn down");
    let mut c6 = connect_as(addr, X, 6);
    let (ok, out, _) = ctl(&["subsystem", "remove", X]);
    assert!(
        ok && out.contains(&format!("subsystem {X} removed")),
        "{out}"
    );
    c6.admin
        .wait_closed(Duration::from_secs(10))
        .expect("the removed subsystem's controller torn down");
    assert!(Controller::connect(addr, X, &opts_for_host(6), 1).is_err());
}

/// Reloads while hosts do I/O on the subsystem they change (namespaces
/// added and removed) and on one they do not: no I/O fails, no queue is
/// dropped, and every block reads back as written.
#[test]
fn reloads_during_io_disturb_nothing_they_do_not_change() {
    let (_dir, cfg, sock, port, addr, _child) = serve(&[1], true);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = [(NQN, 1u8), (C, 2u8)]
        .into_iter()
        .map(|(nqn, h)| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = connect_as(addr, nqn, h);
                let mut rounds = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let lba = (rounds % 64) * 16;
                    write_read_check(&mut c.io[0], 1, 512, lba, rounds, 8192);
                    rounds += 1;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                c.keep_alive().unwrap();
                rounds
            })
        })
        .collect();
    // Reload until the hosts have done 2,000 write-and-read rounds between
    // them (and at least 20 times).
    let mut i = 0;
    while i < 20 || done.load(std::sync::atomic::Ordering::Relaxed) < 2000 {
        i += 1;
        assert!(i < 100_000, "the hosts stopped doing I/O");
        let nsids: &[u32] = if i % 2 == 1 { &[1, 2] } else { &[1] };
        std::fs::write(&cfg, config(port, &sock, nsids, 2, true, "")).unwrap();
        let (ok, out, err) = run(&["reload"], &cfg);
        assert!(ok && out.contains("nsid 2: "), "{out}{err}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let rounds = w.join().expect("I/O failed during the reloads");
        assert!(rounds > 0);
    }
}

/// Listeners added and removed at run time by `ctl` and by a reload: the
/// test-suite hook (a subsystem with one namespace of a given size and
/// UUID, one host, on a given port, connectable as soon as `ctl` returns;
/// deleted under a connected host and made again), connections on a removed
/// listener closed while the others go on, and what `ctl listeners` and
/// `ctl controllers` show.
#[test]
fn listeners_come_and_go_at_run_time() {
    let (_dir, cfg, _sock, port, addr, _child) = serve(&[1], false);
    let ctl = |args: &[&str]| {
        let mut a = vec!["ctl"];
        a.extend_from_slice(args);
        run(&a, &cfg)
    };
    // A host on the config's listener, there through everything below.
    let mut c = connect(addr, 1);
    const T: &str = "nqn.2026-01.io.nvmf-target:hook";
    let uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    let q = free_port();
    let qaddr: SocketAddr = format!("127.0.0.1:{q}").parse().unwrap();
    let spec = format!("127.0.0.1:{q}");
    let make = || {
        let (ok, out, err) = ctl(&[
            "subsystem",
            "add",
            T,
            "--host",
            &host(7),
            "--listen",
            &spec,
            "--size",
            "16MiB",
            "--uuid",
            uuid,
        ]);
        assert!(ok, "{out}{err}");
        out
    };
    let out = make();
    assert!(
        out.contains(&format!(
            "listener tcp:127.0.0.1:{q} (tcp 127.0.0.1:{q}) added"
        )),
        "{out}"
    );
    // Connectable the moment ctl returns, by that host only, on that port only.
    let mut h = connect_as(qaddr, T, 7);
    let id = h.identify_namespace(1).unwrap();
    assert_eq!(id.nsze, 16 << 20 >> 9);
    // The Namespace Identification Descriptor list: (NIDT, NIDL, id)...
    let descs = h.identify(3, 1, 0, 0).unwrap();
    let mut at = 0;
    while descs[at] != 3 {
        assert_ne!(descs[at], 0, "no UUID descriptor");
        at += 4 + descs[at + 1] as usize;
    }
    let got: [u8; 16] = descs[at + 4..at + 20].try_into().unwrap();
    assert_eq!(nvmf_initiator::uuid_to_string(&got), uuid);
    write_read_check(&mut h.io[0], 1, 512, 0, 3, 8192);
    assert!(Controller::connect(qaddr, T, &opts_for_host(8), 1).is_err());
    assert!(Controller::connect(addr, T, &opts_for_host(7), 1).is_err());
    // The config's subsystem names no listeners: it is served on every
    // listener that is not a discovery port, the new one too.
    connect(qaddr, 1).shutdown().unwrap();

    let (ok, out, _) = ctl(&["listeners", "--json"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("\"name\":\"tcp:127.0.0.1:{q}\""))
            && out.contains(&format!("\"{B}\",\"{T}\"]"))
            && out.contains(&format!("\"address\":\"127.0.0.1:{port}\"")),
        "{out}"
    );
    let (ok, out, _) = ctl(&["controllers", "--json"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("\"host_address\":\"127.0.0.1:")
            && out.contains(&format!("\"listener\":\"tcp:127.0.0.1:{q}\""))
            && out.contains("\"queues\":[{\"qid\":0,\"reactor\":0},{\"qid\":1,\"reactor\":0}]"),
        "{out}"
    );

    // Deleted under the connected host: its controller goes away.
    let (ok, out, err) = ctl(&["subsystem", "remove", T]);
    assert!(ok, "{out}{err}");
    h.admin
        .wait_closed(Duration::from_secs(10))
        .expect("the host's controller went away");
    // Made again with the same NQN: the host connects again, on the same
    // listener (kept), and finds a fresh namespace.
    let out = make();
    assert!(!out.contains("listener"), "the listener was kept: {out}");
    let mut h = connect_as(qaddr, T, 7);
    h.keep_alive().unwrap();

    // A listener in use by a subsystem that names it cannot be removed.
    let name = format!("tcp:127.0.0.1:{q}");
    let (ok, _, err) = ctl(&["listener", "remove", &name]);
    assert!(
        !ok && err.contains(&format!("subsystem {T} names listener")),
        "{err}"
    );
    // A discovery controller on it, then the subsystem and the listener go:
    // connections on that listener close, the port is free, and the host on
    // the other listener sees nothing.
    let mut d = Controller::connect(qaddr, nvmf_target::config::DISCOVERY_NQN, &opts(), 0).unwrap();
    d.keep_alive().unwrap();
    assert!(ctl(&["subsystem", "remove", T]).0);
    let (ok, out, err) = ctl(&["listener", "remove", &name]);
    assert!(
        ok && out.contains(&format!("listener {name} ({qaddr}) removed")),
        "{out}{err}"
    );
    d.admin
        .wait_closed(Duration::from_secs(10))
        .expect("the discovery connection on the removed listener closed");
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(qaddr).is_err()
    }));
    // The removed listener's socket is closed, not just stopped: its port
    // can be listened on again at once.
    let (ok, out, err) = ctl(&[
        "listener",
        "add",
        "again",
        "--address",
        "127.0.0.1",
        "--port",
        &q.to_string(),
    ]);
    assert!(ok, "{out}{err}");
    connect(qaddr, 1).shutdown().unwrap();
    assert!(ctl(&["listener", "remove", "again"]).0);
    c.keep_alive().unwrap();
    write_read_check(&mut c.io[0], 1, 512, 0, 4, 4096);

    // listener add: the config's subsystem (no list) is served there too;
    // a discovery listener serves only discovery.
    let r = free_port();
    let raddr: SocketAddr = format!("127.0.0.1:{r}").parse().unwrap();
    let (ok, out, err) = ctl(&[
        "listener",
        "add",
        "extra",
        "--address",
        "127.0.0.1",
        "--port",
        &r.to_string(),
    ]);
    assert!(ok, "{out}{err}");
    let mut e = connect(raddr, 1);
    write_read_check(&mut e.io[0], 1, 512, 8, 5, 4096);
    let dp = free_port();
    let daddr: SocketAddr = format!("127.0.0.1:{dp}").parse().unwrap();
    assert!(
        ctl(&[
            "listener",
            "add",
            "disc",
            "--address",
            "127.0.0.1",
            "--port",
            &dp.to_string(),
            "--discovery",
        ])
        .0
    );
    let log = nvmf_initiator::discover(daddr, &opts()).unwrap();
    let listed: Vec<(String, String)> = log
        .entries
        .iter()
        .map(|e| (e.subnqn.clone(), e.trsvcid.clone()))
        .collect();
    assert!(
        listed.contains(&(NQN.to_string(), r.to_string())),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&(NQN.to_string(), dp.to_string())),
        "{listed:?}"
    );
    assert!(Controller::connect(daddr, NQN, &opts(), 1).is_err());
    // A port in use: refused, nothing changes.
    let (ok, _, err) = ctl(&[
        "listener",
        "add",
        "dup",
        "--address",
        "127.0.0.1",
        "--port",
        &r.to_string(),
    ]);
    assert!(!ok && err.contains("nothing changed"), "{err}");

    // A reload goes back to the file: the listeners ctl added are removed
    // (their connections close), the file's one stays with its hosts.
    let (ok, out, err) = run(&["reload"], &cfg);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("applied: listener extra (") && out.contains("applied: listener disc ("),
        "{out}"
    );
    e.admin
        .wait_closed(Duration::from_secs(10))
        .expect("the connection on the listener the reload removed closed");
    c.keep_alive().unwrap();
    write_read_check(&mut c.io[0], 1, 512, 16, 6, 4096);
}
