//! Reload: apply an edited config to the running target as a diff.
//!
//! What can change at run time is applied; what cannot (reactor cores,
//! transport limits, listeners, a subsystem's serial or model, a RAM
//! namespace's size) is reported as needing a restart and left as it is.
//! A config with any error is refused whole before this is reached
//! ([`Config::load`]), and everything a change needs (new namespaces'
//! backends) is opened before anything is changed, so a reload applies
//! completely or not at all.
//!
//! - Subsystems added are served at once; subsystems removed stop being
//!   served and their controllers are torn down (their hosts see the
//!   controller go away).
//! - Namespaces added, removed or changed in a running subsystem: its
//!   controllers get a Namespace Attribute Changed event and the Changed
//!   Namespace List names them, so a host rescans without reconnecting.
//!   A file namespace's new size is taken by opening the file again.
//! - Hosts removed from `hosts` (or `allow_any_host` turned off) lose their
//!   controllers; new ones may connect.

use crate::config::{BackendConfig, Config, SubsystemConfig};
use crate::subsystem::{Exports, Namespace, Subsystem, Target};
use std::sync::Arc;

/// What a reload did, and what it could not do without a restart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
}

/// Target-wide differences that need a restart, by field.
fn target_changes(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (&old.target, &new.target);
    let mut v = Vec::new();
    let mut diff = |name: &str, differs: bool| {
        if differs {
            v.push(format!("[target] {name} changed: restart to apply it"));
        }
    };
    diff("cores", a.cores != b.cores);
    diff("idle", a.idle != b.idle);
    diff(
        "in_capsule_data_size",
        a.in_capsule_data_size != b.in_capsule_data_size,
    );
    diff("max_io_size", a.max_io_size != b.max_io_size);
    diff("max_queue_depth", a.max_queue_depth != b.max_queue_depth);
    diff("max_io_queues", a.max_io_queues != b.max_io_queues);
    diff("hdr_digest", a.hdr_digest != b.hdr_digest);
    diff("data_digest", a.data_digest != b.data_digest);
    diff(
        "keep_alive_timeout_ms_max",
        a.keep_alive_timeout_ms_max != b.keep_alive_timeout_ms_max,
    );
    diff("control_socket", a.control_socket != b.control_socket);
    if old.listeners != new.listeners {
        v.push("listeners changed: restart to apply them".into());
    }
    if old.metrics != new.metrics {
        v.push("[metrics] changed: restart to apply it".into());
    }
    v
}

/// A subsystem that stays, prepared: its new exports and what changed.
struct Kept {
    subsys: Arc<Subsystem>,
    exports: Exports,
    changed_ns: Vec<u32>,
}

/// Applies `new` to `target`, which runs `old`. `Err` when something
/// needed cannot be opened (nothing is changed then).
pub fn apply(target: &Target, old: &Config, new: &Config) -> Result<Outcome, String> {
    let mut out = Outcome {
        needs_restart: target_changes(old, new),
        ..Default::default()
    };
    let current = target.subsystems();
    // Prepare: open everything new, change nothing.
    let mut list: Vec<Arc<Subsystem>> = Vec::new();
    let mut kept: Vec<Kept> = Vec::new();
    for sc in &new.subsystems {
        match current.iter().find(|s| s.nqn == sc.nqn) {
            None => {
                let s = Subsystem::from_config(sc, &target.config)
                    .map_err(|e| format!("subsystem {}: {e}", sc.nqn))?;
                out.applied.push(format!("subsystem {} added", sc.nqn));
                list.push(Arc::new(s));
            }
            Some(s) => {
                let oc = old.subsystems.iter().find(|c| c.nqn == sc.nqn);
                let k = prepare_kept(target, s, oc, sc, &mut out)?;
                list.push(s.clone());
                kept.push(k);
            }
        }
    }
    let removed: Vec<Arc<Subsystem>> = current
        .iter()
        .filter(|s| !new.subsystems.iter().any(|c| c.nqn == s.nqn))
        .cloned()
        .collect();
    // Apply, holding the controller table: a Connect checks what is
    // exported and makes its controller under the same lock, so every
    // controller made before the swap is in the list below.
    let table = target.controllers.lock().unwrap_or_else(|e| e.into_inner());
    let subsystems_changed = !removed.is_empty() || list.len() != current.len();
    let mut hosts_changed_any = false;
    let mut changed: Vec<(Arc<Subsystem>, Vec<u32>)> = Vec::new();
    for k in kept {
        let before = k.subsys.exports();
        let hosts_changed =
            before.hosts != k.exports.hosts || before.allow_any_host != k.exports.allow_any_host;
        hosts_changed_any |= hosts_changed;
        if k.changed_ns.is_empty() && !hosts_changed {
            continue;
        }
        k.subsys.set_exports(k.exports);
        changed.push((k.subsys, k.changed_ns));
    }
    if subsystems_changed {
        target.set_subsystems(list);
    } else if hosts_changed_any {
        // What the discovery log lists for some host changed.
        target
            .genctr
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let ctrls = table.all();
    drop(table);
    for (s, nsids) in &changed {
        for c in ctrls.iter().filter(|c| Arc::ptr_eq(&c.subsys, s)) {
            if !s.host_allowed(&c.hostnqn) {
                log::info!(
                    "controller {} of {}: host {} is no longer allowed; tearing it down",
                    c.cntlid,
                    s.nqn,
                    c.hostnqn
                );
                c.kill();
            } else if !nsids.is_empty() {
                c.namespaces_changed(nsids);
            }
        }
    }
    // What discovery controllers list changed: tell their hosts.
    if subsystems_changed || hosts_changed_any {
        for c in ctrls.iter().filter(|c| c.subsys.discovery) {
            c.discovery_changed();
        }
    }
    for s in &removed {
        out.applied.push(format!("subsystem {} removed", s.nqn));
        for c in ctrls.iter().filter(|c| Arc::ptr_eq(&c.subsys, s)) {
            log::info!(
                "controller {} of {}: the subsystem is gone; tearing it down",
                c.cntlid,
                s.nqn
            );
            c.kill();
        }
    }
    Ok(out)
}

fn prepare_kept(
    target: &Target,
    s: &Arc<Subsystem>,
    oc: Option<&SubsystemConfig>,
    sc: &SubsystemConfig,
    out: &mut Outcome,
) -> Result<Kept, String> {
    if s.serial != sc.serial || s.model != sc.model {
        out.needs_restart.push(format!(
            "subsystem {}: serial or model changed: restart to apply it",
            sc.nqn
        ));
    }
    let cur = s.exports();
    if cur.allow_any_host != sc.allow_any_host || cur.hosts != sc.hosts {
        out.applied
            .push(format!("subsystem {}: hosts changed", sc.nqn));
    }
    let mut namespaces = Vec::new();
    let mut changed = Vec::new();
    let open = |nc| Namespace::open(&sc.nqn, nc, &target.config).map_err(|e| e.to_string());
    for nc in &sc.namespaces {
        let old_ns = cur.namespace(nc.nsid);
        let old_cfg = oc.and_then(|c| c.namespaces.iter().find(|n| n.nsid == nc.nsid));
        match (old_ns, old_cfg) {
            (Some(ns), Some(o)) if o == nc => namespaces.push(ns.clone()),
            (Some(ns), Some(o)) => {
                let size_only = NamespaceKey::of(o) == NamespaceKey::of(nc);
                let in_memory = matches!(
                    o.backend,
                    BackendConfig::Ram { .. }
                        | BackendConfig::Null { .. }
                        | BackendConfig::Fault { .. }
                );
                if size_only && in_memory {
                    out.needs_restart.push(format!(
                        "subsystem {} nsid {}: a new size for a {} namespace would lose its data: \
                         remove the namespace and add it, or restart",
                        sc.nqn,
                        nc.nsid,
                        ns.backend.kind()
                    ));
                    namespaces.push(ns.clone());
                    continue;
                }
                let mut n = open(nc)?;
                if size_only {
                    // The same storage: Compare and Write keeps one gate
                    // across the old and the new version.
                    n.gate = ns.gate.clone();
                }
                out.applied.push(format!(
                    "subsystem {} nsid {}: {}",
                    sc.nqn,
                    nc.nsid,
                    if size_only {
                        format!("resized to {} bytes", n.num_blocks << n.lba_shift)
                    } else {
                        "replaced".to_string()
                    }
                ));
                namespaces.push(Arc::new(n));
                changed.push(nc.nsid);
            }
            _ => {
                let n = open(nc)?;
                out.applied
                    .push(format!("subsystem {} nsid {}: added", sc.nqn, nc.nsid));
                namespaces.push(Arc::new(n));
                changed.push(nc.nsid);
            }
        }
    }
    for ns in &cur.namespaces {
        if !sc.namespaces.iter().any(|n| n.nsid == ns.nsid) {
            out.applied
                .push(format!("subsystem {} nsid {}: removed", sc.nqn, ns.nsid));
            changed.push(ns.nsid);
        }
    }
    namespaces.sort_by_key(|n| n.nsid);
    changed.sort_unstable();
    Ok(Kept {
        subsys: s.clone(),
        exports: Exports {
            allow_any_host: sc.allow_any_host,
            hosts: sc.hosts.clone(),
            namespaces,
        },
        changed_ns: changed,
    })
}

/// A namespace config without its size: equal keys mean a resize.
#[derive(PartialEq)]
struct NamespaceKey {
    block_size: u32,
    ids: ([u8; 16], [u8; 16], [u8; 8]),
    backend: BackendConfig,
}

impl NamespaceKey {
    fn of(n: &crate::config::NamespaceConfig) -> NamespaceKey {
        let backend = match &n.backend {
            BackendConfig::Ram { .. } => BackendConfig::Ram { size: 0 },
            BackendConfig::Null { .. } => BackendConfig::Null { size: 0 },
            BackendConfig::Fault { faults, .. } => BackendConfig::Fault {
                size: 0,
                faults: faults.clone(),
            },
            BackendConfig::File { path, direct, .. } => BackendConfig::File {
                path: path.clone(),
                size: None,
                direct: *direct,
            },
            other => other.clone(),
        };
        NamespaceKey {
            block_size: n.block_size,
            ids: (n.uuid, n.nguid, n.eui64),
            backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra_ns: &str, file: &std::path::Path, file_size: &str) -> Config {
        let text = format!(
            "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n\
             [[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:r\"\nallow_any_host = true\n\
             [[subsystem.namespace]]\nnsid = 1\nbackend = \"ram\"\nsize = \"1MiB\"\n{extra_ns}\
             [[subsystem.namespace]]\nnsid = 2\nbackend = \"file\"\npath = \"{}\"\nsize = \"{file_size}\"\n",
            file.display()
        );
        Config::parse(&text, "r.toml").unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_file_grows_a_ram_namespace_keeps_its_size_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ns2.img");
        let old = cfg("", &f, "1MiB");
        let t = Target::new(&old).unwrap();
        let s = t.subsystems()[0].clone();
        let ram = s.namespace(1).unwrap();
        // Nothing changed: nothing done.
        assert_eq!(apply(&t, &old, &old).unwrap(), Outcome::default());
        let new = cfg("", &f, "2MiB");
        let out = apply(&t, &old, &new).unwrap();
        assert_eq!(
            out.applied,
            vec!["subsystem nqn.2026-01.io.nvmf-target:r nsid 2: resized to 2097152 bytes"]
        );
        assert_eq!(s.namespace(2).unwrap().num_blocks, 4096);
        assert!(
            Arc::ptr_eq(&ram, &s.namespace(1).unwrap()),
            "nsid 1 is the same namespace"
        );
        let bigger = Config::parse(
            &crate::config::Config::to_toml(&new).replace("size = \"1MiB\"", "size = \"4MiB\""),
            "r.toml",
        )
        .unwrap();
        let out = apply(&t, &new, &bigger).unwrap();
        assert!(out.applied.is_empty(), "{out:?}");
        assert_eq!(out.needs_restart.len(), 1, "{out:?}");
        assert!(
            out.needs_restart[0].contains("would lose its data"),
            "{out:?}"
        );
        assert!(
            Arc::ptr_eq(&ram, &s.namespace(1).unwrap()),
            "the RAM namespace stays"
        );
    }
}
