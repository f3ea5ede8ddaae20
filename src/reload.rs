//! Reload: apply an edited config to the running target as a diff.
//!
//! What can change at run time is applied; what cannot (reactor cores,
//! transport limits, a subsystem's serial or model, a RAM namespace's
//! size) is reported as needing a restart and left as it is.
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
//! - Listeners added start accepting before anything else changes (one
//!   that cannot be opened refuses the whole reload); listeners removed
//!   stop, and the connections they accepted close. A listener whose
//!   address changed is closed and opened again; one only renamed, or
//!   made a discovery port or not, keeps its socket. A subsystem no longer
//!   served on a listener loses the controllers made through it.
//! - Whatever changes what the discovery log lists moves its generation
//!   counter and sends a Discovery Log Page Change event to persistent
//!   discovery controllers.

use crate::config::{BackendConfig, Config, ListenerConfig, SubsystemConfig};
use crate::subsystem::{Exports, Listener, Namespace, Subsystem, Target};
use std::sync::Arc;

/// Opens and closes listeners for a reload: the running target's
/// [`crate::reactor::ListenerControl`], or a stand-in in tests.
pub trait Listening {
    /// Starts accepting on `l` under a new ID (not yet in the target's
    /// list).
    fn open(&self, l: &ListenerConfig) -> std::io::Result<Listener>;
    /// Stops listener `id` and closes its connections.
    fn close(&self, id: u16);
}

impl Listening for crate::reactor::ListenerControl {
    fn open(&self, l: &ListenerConfig) -> std::io::Result<Listener> {
        crate::reactor::ListenerControl::open(self, l)
    }
    fn close(&self, id: u16) {
        crate::reactor::ListenerControl::close(self, id)
    }
}

/// The listeners a reload keeps, opens and closes.
struct ListenerPlan {
    /// The new list, in config order.
    list: Vec<Listener>,
    removed: Vec<Listener>,
    opened: Vec<u16>,
    /// Listeners kept with another name or discovery setting.
    renamed: bool,
}

/// Opens the listeners `new` adds (closing them again if one fails).
fn plan_listeners(
    target: &Target,
    listening: &dyn Listening,
    old: &Config,
    new: &Config,
    out: &mut Outcome,
) -> Result<ListenerPlan, String> {
    let current = target.listeners();
    // Kept: the same settings under the same name in both configs.
    let kept = |name: &str| {
        let a = old.listeners.iter().find(|l| l.name == name);
        let b = new.listeners.iter().find(|l| l.name == name);
        a.is_some() && a == b
    };
    // The same socket: a listener renamed, or made a discovery port or
    // not, on the same address keeps its socket and ID (opening a second
    // one there first would fail: the address is taken).
    let same_socket = |a: &ListenerConfig, b: &ListenerConfig| {
        a.transport == b.transport && a.addr == b.addr && a.fallback == b.fallback
    };
    let mut reused: Vec<u16> = Vec::new();
    let mut plan = ListenerPlan {
        list: Vec::new(),
        removed: Vec::new(),
        opened: Vec::new(),
        renamed: false,
    };
    for lc in &new.listeners {
        if let Some(l) = current.iter().find(|l| l.name == lc.name && kept(&l.name)) {
            plan.list.push(l.clone());
            continue;
        }
        let same = old.listeners.iter().find_map(|o| {
            let l = current.iter().find(|l| l.name == o.name)?;
            (same_socket(o, lc) && !kept(&o.name) && !reused.contains(&l.id)).then_some(l)
        });
        if let Some(l) = same {
            reused.push(l.id);
            out.applied.push(format!(
                "listener {} ({}) is now {}{}",
                l.name,
                l.port.addr,
                lc.name,
                if lc.discovery {
                    ", a discovery port"
                } else {
                    ""
                }
            ));
            let mut l = l.clone();
            l.name = lc.name.clone();
            l.discovery = lc.discovery;
            plan.list.push(l);
            continue;
        }
        match listening.open(lc) {
            Ok(l) => {
                out.applied.push(format!(
                    "listener {} ({} {}) added",
                    l.name,
                    lc.transport.name(),
                    l.port.addr
                ));
                plan.opened.push(l.id);
                plan.list.push(l);
            }
            Err(e) => {
                for id in &plan.opened {
                    listening.close(*id);
                }
                return Err(format!("listener {}: {e}", lc.name));
            }
        }
    }
    plan.renamed = !reused.is_empty();
    plan.removed = current
        .iter()
        .filter(|l| !kept(&l.name) && !reused.contains(&l.id))
        .cloned()
        .collect();
    for l in &plan.removed {
        out.applied
            .push(format!("listener {} ({}) removed", l.name, l.port.addr));
    }
    Ok(plan)
}

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

/// Applies `new` to `target`, which runs `old`, opening and closing
/// listeners through `listening`. `Err` when something needed cannot be
/// opened (nothing is changed then).
pub fn apply(
    target: &Target,
    listening: &dyn Listening,
    old: &Config,
    new: &Config,
) -> Result<Outcome, String> {
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
    // Last of the preparations: new listeners accept from here on, but
    // serve nothing until the list below is swapped in.
    let lp = plan_listeners(target, listening, old, new, &mut out)?;
    let listeners_changed = !lp.removed.is_empty() || !lp.opened.is_empty() || lp.renamed;
    // Apply, holding the controller table: a Connect checks what is
    // exported and makes its controller under the same lock, so every
    // controller made before the swap is in the list below.
    let table = target.controllers.lock().unwrap_or_else(|e| e.into_inner());
    let subsystems_changed = !removed.is_empty() || list.len() != current.len();
    let mut hosts_changed_any = false;
    let mut changed: Vec<(Arc<Subsystem>, Vec<u32>)> = Vec::new();
    for k in kept {
        let before = k.subsys.exports();
        let hosts_changed = before.hosts != k.exports.hosts
            || before.allow_any_host != k.exports.allow_any_host
            || before.listeners != k.exports.listeners;
        hosts_changed_any |= hosts_changed;
        if k.changed_ns.is_empty() && !hosts_changed {
            continue;
        }
        k.subsys.set_exports(k.exports);
        changed.push((k.subsys, k.changed_ns));
    }
    if listeners_changed {
        target.set_listeners(lp.list);
    }
    if subsystems_changed {
        target.set_subsystems(list);
    } else if hosts_changed_any && !listeners_changed {
        // What the discovery log lists for some host changed.
        target
            .genctr
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let ctrls = table.all();
    drop(table);
    for l in &lp.removed {
        listening.close(l.id);
    }
    // Controllers of a changed subsystem, and every controller when the
    // listeners changed: a host no longer allowed, or connected through a
    // listener that no longer serves its subsystem (made a discovery port,
    // renamed away from its list, removed), loses its controller; the
    // others hear of their changed namespaces.
    for c in ctrls.iter().filter(|c| !c.subsys.discovery) {
        let nsids = changed
            .iter()
            .find(|(s, _)| Arc::ptr_eq(&c.subsys, s))
            .map(|(_, n)| n);
        if nsids.is_none() && !listeners_changed {
            continue;
        }
        let s = &c.subsys;
        let served =
            c.listener == 0 || target.listener(c.listener).is_some_and(|l| s.served_on(&l));
        if !s.host_allowed(&c.hostnqn) || !served {
            log::info!(
                "controller {} of {}: host {} {}; tearing it down",
                c.cntlid,
                s.nqn,
                c.hostnqn,
                if served {
                    "is no longer allowed"
                } else {
                    "connected through a listener that no longer serves it"
                }
            );
            c.kill();
        } else if let Some(n) = nsids.filter(|n| !n.is_empty()) {
            c.namespaces_changed(n);
        }
    }
    // What discovery controllers list changed: tell their hosts.
    if subsystems_changed || hosts_changed_any || listeners_changed {
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
    if cur.listeners != sc.listeners {
        out.applied
            .push(format!("subsystem {}: listeners changed", sc.nqn));
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
                    n.stats = ns.stats.clone();
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
            listeners: sc.listeners.clone(),
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
    use std::cell::RefCell;

    /// Listeners that open unless their port is 1, and what was closed.
    struct Fake<'t> {
        target: &'t Target,
        closed: RefCell<Vec<u16>>,
    }

    impl<'t> Fake<'t> {
        fn new(target: &'t Target) -> Fake<'t> {
            Fake {
                target,
                closed: RefCell::new(Vec::new()),
            }
        }
    }

    impl Listening for Fake<'_> {
        fn open(&self, l: &ListenerConfig) -> std::io::Result<Listener> {
            if l.addr.port() == 1 {
                return Err(std::io::Error::other("port 1 is taken"));
            }
            Ok(Listener::new(self.target.new_listener_id().unwrap(), l))
        }
        fn close(&self, id: u16) {
            self.closed.borrow_mut().push(id);
        }
    }

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
        assert_eq!(
            apply(&t, &Fake::new(&t), &old, &old).unwrap(),
            Outcome::default()
        );
        let new = cfg("", &f, "2MiB");
        let out = apply(&t, &Fake::new(&t), &old, &new).unwrap();
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
        let out = apply(&t, &Fake::new(&t), &new, &bigger).unwrap();
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

    fn with_listeners(listeners: &str, served_on: &str) -> Config {
        let text = format!(
            "{listeners}\n[[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:l\"\n\
             allow_any_host = true\n{served_on}\n[[subsystem.namespace]]\nbackend = \"ram\"\n\
             size = \"1MiB\"\n"
        );
        Config::parse(&text, "l.toml").unwrap_or_else(|e| panic!("{e:?}"))
    }

    const DATA: &str = "[[listener]]\nname = \"data\"\ntransport = \"tcp\"\n\
                        address = \"127.0.0.1\"\nport = 4420\n";
    const DISC: &str = "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\n\
                        port = 8009\ndiscovery = true\n";

    #[test]
    fn listeners_are_added_removed_and_reopened_by_name() {
        let old = with_listeners(DATA, "");
        let t = Target::new(&old).unwrap();
        let data_id = t.listeners()[0].id;
        let s = t.subsystems()[0].clone();
        let genctr = t.genctr.load(std::sync::atomic::Ordering::Relaxed);

        // A discovery listener is added: the data one stays as it was.
        let both = with_listeners(&format!("{DATA}{DISC}"), "");
        let fake = Fake::new(&t);
        let out = apply(&t, &fake, &old, &both).unwrap();
        assert_eq!(
            out.applied,
            vec!["listener tcp:127.0.0.1:8009 (tcp 127.0.0.1:8009) added"]
        );
        let ls = t.listeners();
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[0].id, data_id);
        assert!(ls[1].discovery && ls[1].id != data_id);
        assert!(s.served_on(&ls[0]) && !s.served_on(&ls[1]));
        assert!(fake.closed.borrow().is_empty());
        assert!(t.genctr.load(std::sync::atomic::Ordering::Relaxed) > genctr);

        // The data listener moves to another port: closed and opened again
        // under a new ID; the discovery one stays.
        let moved = with_listeners(&format!("{}{DISC}", DATA.replace("4420", "4421")), "");
        let fake = Fake::new(&t);
        let out = apply(&t, &fake, &both, &moved).unwrap();
        assert_eq!(
            out.applied,
            vec![
                "listener data (tcp 127.0.0.1:4421) added",
                "listener data (127.0.0.1:4420) removed"
            ]
        );
        assert_eq!(*fake.closed.borrow(), vec![data_id]);
        let ls = t.listeners();
        assert_eq!(ls[0].port.addr.port(), 4421);
        assert_ne!(ls[0].id, data_id);
        assert_eq!(ls[1].id, t.listeners()[1].id);

        // One that cannot be opened refuses the whole reload: nothing
        // changes, and what it had opened is closed again.
        let extra = "[[listener]]\nname = \"x\"\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\n\
                     port = 5000\n[[listener]]\nname = \"bad\"\ntransport = \"tcp\"\n\
                     address = \"127.0.0.1\"\nport = 1\n";
        let broken = with_listeners(
            &format!("{}{DISC}{extra}", DATA.replace("4420", "4421")),
            "",
        );
        let before = t.listeners();
        let fake = Fake::new(&t);
        let e = apply(&t, &fake, &moved, &broken).unwrap_err();
        assert!(e.contains("listener bad: port 1 is taken"), "{e}");
        assert_eq!(fake.closed.borrow().len(), 1, "x was closed again");
        assert_eq!(*t.listeners(), *before);
    }

    #[test]
    fn a_subsystem_served_on_named_listeners_only() {
        let two = format!(
            "{DATA}[[listener]]\nname = \"other\"\ntransport = \"tcp\"\n\
             address = \"127.0.0.1\"\nport = 4430\n{DISC}"
        );
        let everywhere = with_listeners(&two, "");
        let t = Target::new(&everywhere).unwrap();
        let s = t.subsystems()[0].clone();
        let ls = t.listeners();
        assert_eq!(
            ls.iter().map(|l| s.served_on(l)).collect::<Vec<_>>(),
            vec![true, true, false],
            "every listener but the discovery one"
        );
        let only = with_listeners(&two, "listeners = [\"other\"]");
        let out = apply(&t, &Fake::new(&t), &everywhere, &only).unwrap();
        assert_eq!(
            out.applied,
            vec!["subsystem nqn.2026-01.io.nvmf-target:l: listeners changed"]
        );
        assert_eq!(
            ls.iter().map(|l| s.served_on(l)).collect::<Vec<_>>(),
            vec![false, true, false]
        );
        assert!(t.discovery.served_on(&ls[2]));
    }

    #[test]
    fn a_listener_renamed_or_made_a_discovery_port_keeps_its_socket() {
        let old = with_listeners(DATA, "");
        let t = Target::new(&old).unwrap();
        let id = t.listeners()[0].id;
        let renamed = with_listeners(&DATA.replace("\"data\"", "\"fast\""), "");
        let fake = Fake::new(&t);
        let out = apply(&t, &fake, &old, &renamed).unwrap();
        assert_eq!(
            out.applied,
            vec!["listener data (127.0.0.1:4420) is now fast"]
        );
        assert!(fake.closed.borrow().is_empty(), "nothing closed");
        let ls = t.listeners();
        assert_eq!((ls[0].id, ls[0].name.as_str()), (id, "fast"));
        // Made a discovery port (the subsystem then names another one).
        let other = "[[listener]]\nname = \"o\"\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\n\
                     port = 4431\n";
        let with_o = with_listeners(
            &format!("{}{other}", DATA.replace("\"data\"", "\"fast\"")),
            "",
        );
        apply(&t, &Fake::new(&t), &renamed, &with_o).unwrap();
        let disc = with_listeners(
            &format!(
                "{}discovery = true\n{other}",
                DATA.replace("\"data\"", "\"fast\"")
            ),
            "",
        );
        let fake = Fake::new(&t);
        let out = apply(&t, &fake, &with_o, &disc).unwrap();
        assert_eq!(
            out.applied,
            vec!["listener fast (127.0.0.1:4420) is now fast, a discovery port"]
        );
        assert!(fake.closed.borrow().is_empty());
        let l = t.listener(id).unwrap();
        assert!(l.discovery);
        assert!(!t.subsystems()[0].served_on(&l));
    }
}
