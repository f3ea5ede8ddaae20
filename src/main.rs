//! nvmf-target: command line.

use clap::{Parser, Subcommand};
use nvmf_target::config::Config;
use nvmf_target::control::{self, Control};
use nvmf_target::reactor::Runtime;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "nvmf-target",
    version,
    about = "A user-space NVMe over Fabrics target"
)]
struct Cli {
    /// TOML configuration file (default: the embedded default: a 1 GiB RAM
    /// namespace on 127.0.0.1:4420, discovery on 127.0.0.1:8009).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Reactor cores, overriding `[target] cores`, e.g. `0,1`.
    #[arg(long, value_delimiter = ',')]
    cores: Option<Vec<usize>>,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate config files; print each error as FILE:LINE:COL: sentence.
    Check { files: Vec<PathBuf> },
    /// Print the embedded default config as TOML.
    PrintDefaultConfig,
    /// Make a running target re-read its config file and apply what
    /// changed (`ctl reload`; SIGHUP does the same).
    Reload {
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Ask a running target: status, subsystems, namespaces, controllers,
    /// stats, disconnect CNTLID. Its control socket is the one in --config's
    /// [target] control_socket, or --socket, or /run/nvmf-target.sock.
    Ctl {
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Answer in JSON.
        #[arg(long)]
        json: bool,
        /// The command and its arguments (options such as `--size` go to
        /// the command).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

struct StderrLog(log::LevelFilter);

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "nvmf-target: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level.parse().unwrap_or(log::LevelFilter::Info);
    let _ = log::set_boxed_logger(Box::new(StderrLog(level))).map(|()| log::set_max_level(level));
    match cli.command {
        Some(Cmd::Check { files }) => check(&files),
        Some(Cmd::PrintDefaultConfig) => {
            print!("{}", Config::embedded_default().to_toml());
            ExitCode::SUCCESS
        }
        Some(Cmd::Reload { socket }) => ctl(cli.config, socket, false, &["reload".to_string()]),
        Some(Cmd::Ctl {
            socket,
            json,
            command,
        }) => ctl(cli.config, socket, json, &command),
        None => run(cli.config, cli.cores),
    }
}

fn ctl(
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
    json: bool,
    command: &[String],
) -> ExitCode {
    let path = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(f)) => match Config::load(&f) {
            Ok(c) => match c.target.control_socket {
                Some(p) => p,
                None => {
                    eprintln!("nvmf-target ctl: {}: control_socket is off", f.display());
                    return ExitCode::FAILURE;
                }
            },
            Err(errs) => {
                let n = errs.len();
                for e in errs {
                    eprintln!("{e}");
                }
                if command.first().map(String::as_str) == Some("reload") {
                    eprintln!(
                        "nvmf-target reload: {} has {n} error(s); nothing changed: the running \
                         target keeps its config",
                        f.display()
                    );
                }
                return ExitCode::FAILURE;
            }
        },
        (None, None) => PathBuf::from(nvmf_target::config::DEFAULT_CONTROL_SOCKET),
    };
    let mut line = command.join(" ");
    if json {
        line.push_str(" --json");
    }
    match nvmf_target::control::request(&path, &line) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nvmf-target ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    if files.is_empty() {
        eprintln!("nvmf-target check: name at least one config file");
        return ExitCode::from(2);
    }
    let mut ok = true;
    for f in files {
        match Config::load(f) {
            Ok(_) => println!("{}: ok", f.display()),
            Err(errs) => {
                ok = false;
                for e in errs {
                    eprintln!("{e}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(config: Option<PathBuf>, cores: Option<Vec<usize>>) -> ExitCode {
    let mut cfg = match &config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(errs) => {
                for e in errs {
                    eprintln!("{e}");
                }
                return ExitCode::FAILURE;
            }
        },
        None => Config::embedded_default(),
    };
    let cores_override = cores.clone();
    if let Some(cores) = cores {
        let online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if let Some(bad) = cores.iter().find(|&&c| c >= online) {
            eprintln!(
                "nvmf-target: --cores: core {bad} does not exist (this machine has {online} CPUs)"
            );
            return ExitCode::FAILURE;
        }
        if cores.is_empty() {
            eprintln!("nvmf-target: --cores needs at least one core");
            return ExitCode::FAILURE;
        }
        cfg.target.cores = cores;
    }
    // A socket per queue: the usual soft limit of 1,024 descriptors is
    // 256 controllers of four queues.
    match nvmf_sys::cpu::raise_fd_limit() {
        Ok((old, new)) if new > old => {
            log::debug!("open file limit raised from {old} to {new}")
        }
        Ok((_, n)) if n < 4096 => log::warn!(
            "open file limit {n}: each queue takes one; raise the hard limit (ulimit -Hn) for \
             more hosts"
        ),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open file limit: {e}"),
    }
    // Blocked before any thread starts, so none of them takes these: the
    // main thread waits for them below and stops the reactors in order.
    let mut taken = nvmf_sys::signal::TERMINATE.to_vec();
    taken.push(nvmf_sys::signal::HANGUP);
    let signals = match nvmf_sys::signal::Blocked::new(&taken) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nvmf-target: cannot block termination signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match Runtime::start(&cfg) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nvmf-target: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (l, a) in cfg.listeners.iter().zip(rt.listen_addrs()) {
        log::info!("listening on {:?} {a}", l.transport);
    }
    for s in &rt.target.subsystems() {
        for ns in &s.namespaces() {
            log::info!(
                "{} nsid {}: {} {} blocks of {} bytes",
                s.nqn,
                ns.nsid,
                ns.backend.kind(),
                ns.num_blocks,
                ns.block_size
            );
        }
    }
    let control = Arc::new(Control {
        target: rt.target.clone(),
        reactors: rt.stats_source(),
        listening: rt.listener_control(),
        started: Instant::now(),
        config_path: config.clone(),
        running: std::sync::Mutex::new(cfg.clone()),
        cores_override: cores_override.clone(),
        pending_restart: std::sync::Mutex::new(Vec::new()),
    });
    let socket = cfg.target.control_socket.clone();
    if let Some(path) = &socket {
        match control::serve_socket(path, control.clone()) {
            Ok(_) => log::info!("control socket {}", path.display()),
            Err(e) => log::warn!(
                "no control socket: {}: {e} (set [target] control_socket, or \"\" for none)",
                path.display()
            ),
        }
    }
    if let Some(addr) = cfg.metrics {
        match control::serve_metrics(addr, control.clone()) {
            Ok((a, _)) => log::info!("metrics on http://{a}/metrics"),
            Err(e) => {
                eprintln!("nvmf-target: [metrics] listen = \"{addr}\": {e}");
                rt.shutdown();
                return ExitCode::FAILURE;
            }
        }
    }
    log::info!(
        "serving on {} reactor(s), cores {:?}, idle policy {:?}",
        cfg.target.cores.len(),
        cfg.target.cores,
        cfg.target.idle
    );
    // Every listener is up: tell systemd (Type=notify), and feed its
    // watchdog as long as every reactor's heartbeat moves.
    if let Err(e) = control::sd_notify("READY=1") {
        log::warn!("cannot notify systemd: {e}");
    }
    let watchdog = control::watchdog_period().map(|p| p / 2);
    let mut last_feed = Instant::now();
    let mut beats: Vec<u64> = control
        .reactors
        .read()
        .iter()
        .map(|r| r.heartbeat)
        .collect();
    let cleanup = |socket: &Option<PathBuf>| {
        if let Some(p) = socket {
            let _ = std::fs::remove_file(p);
        }
    };
    loop {
        let sig = signals.wait(std::time::Duration::from_millis(200));
        if sig == Some(nvmf_sys::signal::HANGUP) {
            match control.reload(false) {
                Ok(out) => log::info!("SIGHUP: reloaded: {}", out.trim_end().replace('\n', "; ")),
                Err(e) => log::error!("SIGHUP: reload refused: {e}"),
            }
            continue;
        }
        if let Some(sig) = sig {
            log::info!(
                "{}: closing every connection and stopping",
                nvmf_sys::signal::name(sig)
            );
            let _ = control::sd_notify("STOPPING=1");
            rt.shutdown();
            cleanup(&socket);
            return ExitCode::SUCCESS;
        }
        if rt.reactor_exited() {
            log::error!("a reactor stopped on an error; stopping the target");
            rt.shutdown();
            cleanup(&socket);
            return ExitCode::FAILURE;
        }
        if let Some(period) = watchdog {
            if last_feed.elapsed() >= period {
                let now: Vec<u64> = control
                    .reactors
                    .read()
                    .iter()
                    .map(|r| r.heartbeat)
                    .collect();
                let stuck: Vec<usize> = (0..now.len()).filter(|&i| now[i] == beats[i]).collect();
                if stuck.is_empty() {
                    let _ = control::sd_notify("WATCHDOG=1");
                } else {
                    log::error!("reactor(s) {stuck:?} made no progress in {period:?}: not feeding the watchdog");
                }
                beats = now;
                last_feed = Instant::now();
            }
        }
    }
}
