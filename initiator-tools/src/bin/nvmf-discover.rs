//! nvmf-discover: read the Discovery log page of an NVMe/TCP discovery
//! controller and print it like `nvme discover`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use nvmf_initiator::{discover, parse_uuid, print, QueueOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Normal,
    Json,
}

/// Discover NVMe/TCP subsystems (like `nvme discover -t tcp`).
#[derive(Parser, Debug)]
#[command(name = "nvmf-discover", version)]
struct Args {
    /// Transport address of the discovery controller (IP address or host name).
    #[arg(short = 'a', long = "traddr")]
    traddr: String,
    /// Transport service id (TCP port).
    #[arg(short = 's', long = "trsvcid", default_value_t = 8009)]
    trsvcid: u16,
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
    /// Output format.
    #[arg(
        short = 'o',
        long = "output-format",
        value_enum,
        default_value = "normal"
    )]
    output: Format,
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolves to no address"))
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
    let log = discover(addr, &opts).map_err(|e| format!("discovery at {addr} failed: {e}"))?;
    match args.output {
        Format::Normal => print!("{}", print::discovery_log_text(&log)),
        Format::Json => print!("{}", print::discovery_log_json(&log)),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvmf-discover: {e}");
            ExitCode::FAILURE
        }
    }
}
