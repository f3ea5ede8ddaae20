//! nvmf-identify: connect to an NVMe/TCP subsystem and print Identify
//! Controller, then Identify Namespace and the namespace identification
//! descriptors of every active namespace, like `nvme id-ctrl` / `nvme id-ns`
//! / `nvme ns-descs`; then shut the controller down.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nvmf_initiator::{parse_uuid, print, Controller, QueueOptions};

/// Identify an NVMe/TCP controller and its namespaces.
#[derive(Parser, Debug)]
#[command(name = "nvmf-identify", version)]
struct Args {
    /// Transport address of the target (IP address or host name).
    #[arg(short = 'a', long = "traddr")]
    traddr: String,
    /// Transport service id (TCP port).
    #[arg(short = 's', long = "trsvcid", default_value_t = 4420)]
    trsvcid: u16,
    /// Subsystem NQN.
    #[arg(short = 'n', long = "nqn")]
    nqn: String,
    /// Host NQN (default: a fixed UUID-based NQN).
    #[arg(short = 'q', long = "hostnqn")]
    hostnqn: Option<String>,
    /// Host identifier (UUID).
    #[arg(short = 'I', long = "hostid")]
    hostid: Option<String>,
    /// Request header digests.
    #[arg(short = 'g', long = "hdr-digest")]
    hdr_digest: bool,
    /// Request data digests.
    #[arg(short = 'G', long = "data-digest")]
    data_digest: bool,
    /// Timeout for each network operation, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    timeout_ms: u64,
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolves to no address"))
}

fn identify_all(ctrl: &mut Controller) -> Result<(), String> {
    print!("{}", print::id_ctrl_text(&ctrl.id));
    // Discovery controllers (CNTRLTYPE 2) have no namespaces.
    if ctrl.id.cntrltype == 2 {
        return Ok(());
    }
    let nsids = ctrl
        .active_namespaces()
        .map_err(|e| format!("active namespace list: {e}"))?;
    for nsid in nsids {
        let ns = ctrl
            .identify_namespace(nsid)
            .map_err(|e| format!("identify namespace {nsid}: {e}"))?;
        println!();
        print!("{}", print::id_ns_text(&ns, nsid));
        let descs = ctrl
            .ns_descriptors(nsid)
            .map_err(|e| format!("namespace {nsid} descriptors: {e}"))?;
        println!();
        print!("{}", print::ns_descs_text(&descs, nsid));
    }
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    let addr = resolve(&args.traddr, args.trsvcid)?;
    let mut opts = QueueOptions {
        // Tolerate what other targets do and Linux accepts (SPDK: SUCCESS flag, SQID).
        lenient: true,
        ..QueueOptions::default()
    };
    if let Some(n) = args.hostnqn {
        opts.hostnqn = n;
    }
    if let Some(h) = args.hostid {
        opts.hostid =
            parse_uuid(&h).ok_or_else(|| format!("invalid host id {h:?} (expected a UUID)"))?;
    }
    opts.hdr_digest = args.hdr_digest;
    opts.data_digest = args.data_digest;
    opts.io_timeout = Duration::from_millis(args.timeout_ms.max(1));
    opts.connect_timeout = opts.io_timeout;
    let mut ctrl = Controller::connect(addr, &args.nqn, &opts, 0)
        .map_err(|e| format!("connecting to {} at {addr} failed: {e}", args.nqn))?;
    let r = identify_all(&mut ctrl);
    let shut = ctrl.shutdown().map_err(|e| format!("shutdown failed: {e}"));
    r?;
    shut
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmf-identify: {e}");
            ExitCode::FAILURE
        }
    }
}
