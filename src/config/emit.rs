//! `Config::to_toml`.

use std::fmt::Write;

use super::ident::{derived_namespace_ids, derived_serial, format_uuid, hex_lower};
use super::size::format_size;
use super::{BackendConfig, Config, IdlePolicy};

/// A TOML string literal (quoted and escaped).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn size_literal(bytes: u64) -> String {
    match format_size(bytes) {
        Some(text) => quote(&text),
        None => bytes.to_string(),
    }
}

pub(crate) fn to_toml(config: &Config) -> String {
    // Writing to a String cannot fail; the results are ignored on purpose.
    let mut out = String::new();
    let t = &config.target;
    let cores: Vec<String> = t.cores.iter().map(|c| c.to_string()).collect();
    let idle = match t.idle {
        IdlePolicy::Adaptive => "adaptive",
        IdlePolicy::Busy => "busy",
        IdlePolicy::Sleep => "sleep",
    };
    let _ = writeln!(out, "# nvmf-target configuration\n");
    let _ = writeln!(out, "[target]");
    let _ = writeln!(out, "cores = [{}]", cores.join(", "));
    let _ = writeln!(out, "idle = {}", quote(idle));
    let _ = writeln!(out, "in_capsule_data_size = {}", t.in_capsule_data_size);
    let _ = writeln!(out, "max_io_size = {}", t.max_io_size);
    let _ = writeln!(out, "max_queue_depth = {}", t.max_queue_depth);
    let _ = writeln!(out, "max_io_queues = {}", t.max_io_queues);
    let _ = writeln!(out, "hdr_digest = {}", t.hdr_digest);
    let _ = writeln!(out, "data_digest = {}", t.data_digest);
    let _ = writeln!(
        out,
        "keep_alive_timeout_ms_max = {}",
        t.keep_alive_timeout_ms_max
    );
    let socket = t
        .control_socket
        .as_ref()
        .map_or(String::new(), |p| p.display().to_string());
    let _ = writeln!(out, "control_socket = {}", quote(&socket));
    if let Some(m) = config.metrics {
        let _ = writeln!(out, "\n[metrics]\nlisten = {}", quote(&m.to_string()));
    }

    for l in &config.listeners {
        let _ = writeln!(out, "\n[[listener]]");
        if l.name != super::ListenerConfig::default_name(l.transport, l.addr) {
            let _ = writeln!(out, "name = {}", quote(&l.name));
        }
        let _ = writeln!(out, "transport = {}", quote(l.transport.name()));
        let _ = writeln!(out, "address = {}", quote(&l.addr.ip().to_string()));
        let _ = writeln!(out, "port = {}", l.addr.port());
        if let Some(f) = l.fallback {
            let _ = writeln!(out, "fallback = {}", quote(f.name()));
        }
        if l.discovery {
            let _ = writeln!(out, "discovery = true");
        }
    }

    for s in &config.subsystems {
        let _ = writeln!(out, "\n[[subsystem]]");
        let _ = writeln!(out, "nqn = {}", quote(&s.nqn));
        if s.serial != derived_serial(&s.nqn) {
            let _ = writeln!(out, "serial = {}", quote(&s.serial));
        }
        let _ = writeln!(out, "model = {}", quote(&s.model));
        let _ = writeln!(out, "allow_any_host = {}", s.allow_any_host);
        if !s.hosts.is_empty() {
            let _ = writeln!(out, "hosts = [");
            for h in &s.hosts {
                let _ = writeln!(out, "    {},", quote(h));
            }
            let _ = writeln!(out, "]");
        }
        if let Some(ls) = &s.listeners {
            let names: Vec<String> = ls.iter().map(|n| quote(n)).collect();
            let _ = writeln!(out, "listeners = [{}]", names.join(", "));
        }
        for ns in &s.namespaces {
            let _ = writeln!(out, "\n[[subsystem.namespace]]");
            let _ = writeln!(out, "nsid = {}", ns.nsid);
            match &ns.backend {
                BackendConfig::Ram { size } => {
                    let _ = writeln!(out, "backend = \"ram\"");
                    let _ = writeln!(out, "size = {}", size_literal(*size));
                }
                BackendConfig::Null { size } => {
                    let _ = writeln!(out, "backend = \"null\"");
                    let _ = writeln!(out, "size = {}", size_literal(*size));
                }
                BackendConfig::File { path, size, direct } => {
                    let _ = writeln!(out, "backend = \"file\"");
                    let _ = writeln!(out, "path = {}", quote(&path.to_string_lossy()));
                    if let Some(size) = size {
                        let _ = writeln!(out, "size = {}", size_literal(*size));
                    }
                    let _ = writeln!(out, "direct = {direct}");
                }
                BackendConfig::Nvme { pci, nsid, size } => {
                    let _ = writeln!(out, "backend = \"nvme\"");
                    let _ = writeln!(out, "pci = {}", quote(pci));
                    let _ = writeln!(out, "device_nsid = {nsid}");
                    if let Some(size) = size {
                        let _ = writeln!(out, "size = {}", size_literal(*size));
                    }
                }
                BackendConfig::NvmePassthru { path } => {
                    let _ = writeln!(out, "backend = \"nvme\"");
                    let _ = writeln!(out, "path = {}", quote(&path.display().to_string()));
                }
                BackendConfig::Fault { size, faults } => {
                    let _ = writeln!(out, "backend = \"fault\"");
                    let _ = writeln!(out, "size = {}", size_literal(*size));
                    let rules: Vec<String> = faults
                        .iter()
                        .map(|f| {
                            let mut r = format!("{{ op = {}, lba = {}", quote(f.op.name()), f.lba);
                            if let Some(b) = f.blocks {
                                r += &format!(", blocks = {b}");
                            }
                            if let Some(e) = f.error {
                                r += &format!(", error = {}", quote(e.name()));
                            }
                            r + &format!(", delay_ms = {}, every = {} }}", f.delay_ms, f.every)
                        })
                        .collect();
                    let _ = writeln!(out, "fault = [{}]", rules.join(", "));
                }
            }
            let _ = writeln!(out, "block_size = {}", ns.block_size);
            let (uuid, nguid, eui64) = derived_namespace_ids(&s.nqn, ns.nsid);
            if ns.uuid != uuid {
                let _ = writeln!(out, "uuid = {}", quote(&format_uuid(&ns.uuid)));
            }
            if ns.nguid != nguid {
                let _ = writeln!(out, "nguid = {}", quote(&hex_lower(&ns.nguid)));
            }
            if ns.eui64 != eui64 {
                let _ = writeln!(out, "eui64 = {}", quote(&hex_lower(&ns.eui64)));
            }
        }
    }
    out
}
