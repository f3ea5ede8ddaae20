//! The control plane of a running target: the Unix socket `nvmf-target
//! ctl` talks to, and the Prometheus metrics endpoint. Both run on threads
//! of their own and only read what the reactors publish (controller
//! tables, per-queue counters, per-reactor load): nothing on the I/O path
//! waits for them.
//!
//! The socket protocol is one request line (`COMMAND [ARGS...] [--json]`)
//! and one response: text (or JSON) ending the connection, an error as a
//! line starting with `error: `.

use crate::config::{BackendConfig, Config, SubsystemConfig};
use crate::fabrics::nsstats::{DirTotals, QueueTotals, Totals};
use crate::reactor::StatsSource;
use crate::subsystem::Target;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the control plane reads.
pub struct Control {
    pub target: Arc<Target>,
    pub reactors: StatsSource,
    /// Opens and closes listeners (a reload, `ctl listener`).
    pub listening: crate::reactor::ListenerControl,
    pub started: Instant,
    /// The file the target was started with (`None`: the embedded default).
    pub config_path: Option<PathBuf>,
    /// The config it runs (after command-line overrides; a reload
    /// replaces it).
    pub running: std::sync::Mutex<Config>,
    /// `--cores` given on the command line (a reload keeps it).
    pub cores_override: Option<Vec<usize>>,
    /// Changes the file asks for that wait for a restart; one reload at a
    /// time.
    pub pending_restart: std::sync::Mutex<Vec<String>>,
}

/// The commands the socket takes (for `help` and errors).
pub const COMMANDS: &str = "status, subsystems, namespaces, controllers, listeners, stats, \
    disconnect CNTLID, reload, subsystem add|remove, ns add|remove|resize, host allow|deny, \
    listener add|remove, config save";

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn backend_name(b: &BackendConfig) -> String {
    match b {
        BackendConfig::Ram { .. } => "ram".into(),
        BackendConfig::Null { .. } => "null".into(),
        BackendConfig::Fault { .. } => "fault".into(),
        BackendConfig::File { path, .. } => format!("file {}", path.display()),
        BackendConfig::Nvme { pci, nsid, .. } => format!("nvme {pci} nsid {nsid}"),
        BackendConfig::NvmePassthru { path } => format!("nvme {}", path.display()),
    }
}

fn uuid(u: &[u8; 16]) -> String {
    crate::config::format_uuid(u)
}

/// A JSON array of `items`, or the text `out`.
fn listing(json: bool, items: &[String], out: String) -> String {
    if json {
        format!("[{}]\n", items.join(","))
    } else {
        out
    }
}

impl Control {
    /// The live controllers, by ID.
    fn controllers_now(&self) -> Vec<Arc<crate::fabrics::controller::ControllerShared>> {
        self.target
            .controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .all()
    }

    /// Answers one request line.
    pub fn handle(&self, line: &str) -> Result<String, String> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let json = words.contains(&"--json");
        words.retain(|w| *w != "--json");
        match words.as_slice() {
            ["status"] => Ok(self.status(json)),
            ["subsystems"] => Ok(self.subsystems(json)),
            ["namespaces"] => Ok(self.namespaces(json)),
            ["controllers"] => Ok(self.controllers(json)),
            ["listeners"] => Ok(self.listeners(json)),
            ["stats"] => Ok(self.stats(json)),
            ["disconnect", id] => self.disconnect(id, json),
            ["reload"] => self.reload(json),
            ["subsystem" | "ns" | "host" | "listener", ..] => self.change(&words, json),
            ["config", "save"] => self.save(),
            [] => Err(format!("no command (commands: {COMMANDS})")),
            [cmd, ..] => Err(format!(
                "unknown command {cmd:?} or wrong arguments (commands: {COMMANDS})"
            )),
        }
    }

    /// Whether the file the target was started with still says what it
    /// runs: "matches", "differs", "unreadable: ...", or "embedded default".
    fn config_state(&self) -> String {
        let Some(p) = &self.config_path else {
            return "embedded default".into();
        };
        let running = self.running();
        let n = self
            .pending_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        match Config::load(p) {
            Ok(c) if n == 0 && same_config(&c, &running) => "matches".into(),
            Ok(mut c) if n > 0 => {
                // What only a restart would change is not running yet.
                c.target = running.target.clone();
                c.metrics = running.metrics;
                if same_config(&c, &running) {
                    format!("matches, but {n} change(s) wait for a restart")
                } else {
                    "differs".into()
                }
            }
            Ok(_) => "differs".into(),
            Err(errs) => format!("has {} error(s)", errs.len()),
        }
    }

    /// The config it runs now.
    pub fn running(&self) -> Config {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn status(&self, json: bool) -> String {
        let running = self.running();
        let t = &running.target;
        let up = self.started.elapsed().as_secs();
        let file = self
            .config_path
            .as_ref()
            .map_or("(embedded default)".to_string(), |p| {
                p.display().to_string()
            });
        let state = self.config_state();
        let ctrls = self
            .target
            .controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let conns: usize = self.reactors.read().iter().map(|r| r.connections).sum();
        if json {
            format!(
                "{{\"version\":{},\"uptime_seconds\":{up},\"cores\":{:?},\"idle\":{},\"config_file\":{},\"config_file_state\":{},\"controllers\":{ctrls},\"connections\":{conns}}}\n",
                js(env!("CARGO_PKG_VERSION")),
                t.cores,
                js(&format!("{:?}", t.idle).to_lowercase()),
                js(&file),
                js(&state)
            )
        } else {
            format!(
                "version:      {}\nuptime:       {up} s\ncores:        {:?}\nidle policy:  {}\nconfig file:  {file} ({state})\ncontrollers:  {ctrls}\nconnections:  {conns}\n",
                env!("CARGO_PKG_VERSION"),
                t.cores,
                format!("{:?}", t.idle).to_lowercase(),
            )
        }
    }

    fn subsystems(&self, json: bool) -> String {
        let ctrls = self.controllers_now();
        let mut out = String::new();
        let mut items = Vec::new();
        for s in self.target.subsystems() {
            let e = s.exports();
            let n = ctrls.iter().filter(|c| Arc::ptr_eq(&c.subsys, &s)).count();
            if json {
                let hosts: Vec<String> = e.hosts.iter().map(|h| js(h)).collect();
                items.push(format!(
                    "{{\"nqn\":{},\"serial\":{},\"model\":{},\"allow_any_host\":{},\"hosts\":[{}],\"namespaces\":{},\"controllers\":{n}}}",
                    js(&s.nqn),
                    js(&s.serial),
                    js(&s.model),
                    e.allow_any_host,
                    hosts.join(","),
                    e.namespaces.len()
                ));
            } else {
                let _ = writeln!(
                    out,
                    "{}\n  serial {}, model {:?}, {} namespace(s), {n} controller(s)\n  hosts: {}",
                    s.nqn,
                    s.serial,
                    s.model,
                    e.namespaces.len(),
                    if e.allow_any_host {
                        "any".to_string()
                    } else {
                        e.hosts.join(", ")
                    }
                );
            }
        }
        listing(json, &items, out)
    }

    fn namespaces(&self, json: bool) -> String {
        let running = self.running();
        let mut out = String::new();
        let mut items = Vec::new();
        for s in self.target.subsystems() {
            let cfg = running.subsystems.iter().find(|c| c.nqn == s.nqn);
            for ns in &s.namespaces() {
                let kind = cfg
                    .and_then(|c| c.namespaces.iter().find(|n| n.nsid == ns.nsid))
                    .map_or_else(
                        || ns.backend.kind().to_string(),
                        |n| backend_name(&n.backend),
                    );
                let bytes = ns.num_blocks << ns.lba_shift;
                // A device this process drives: how much went through its
                // bounce buffers, and its staged buffers free per reactor.
                let dma = ns.backend.dma_use();
                if json {
                    let dma = dma.map_or(String::new(), |u| {
                        let f: Vec<String> = u.staged_free.iter().map(|n| n.to_string()).collect();
                        let i = u.irq.unwrap_or_default();
                        format!(
                            ",\"dma_copied_bytes\":{},\"staged_buffers_free\":[{}],\"interrupt_queues\":{},\"interrupt_waits\":{},\"interrupt_wakes\":{}",
                            u.copied,
                            f.join(","),
                            i.queues,
                            i.waits,
                            i.wakes
                        )
                    });
                    items.push(format!(
                        "{{\"subsystem\":{},\"nsid\":{},\"backend\":{},\"bytes\":{bytes},\"block_size\":{},\"uuid\":{}{dma}}}",
                        js(&s.nqn),
                        ns.nsid,
                        js(&kind),
                        ns.block_size,
                        js(&uuid(&ns.uuid))
                    ));
                } else {
                    let dma = dma.map_or(String::new(), |u| {
                        let irq = match u.irq {
                            None => "completions polled, no interrupts".to_string(),
                            Some(i) => format!(
                                "completion interrupts on {} queue(s): a reactor slept waiting on them {} time(s), woken by one {} time(s)",
                                i.queues, i.waits, i.wakes
                            ),
                        };
                        format!(
                            "\n  {} bytes copied through bounce buffers; staged DMA buffers free per reactor: {:?}; {irq}",
                            u.copied, u.staged_free
                        )
                    });
                    let _ = writeln!(
                        out,
                        "{} nsid {}: {kind}, {bytes} bytes in blocks of {}, uuid {}{dma}",
                        s.nqn,
                        ns.nsid,
                        ns.block_size,
                        uuid(&ns.uuid)
                    );
                }
            }
        }
        listing(json, &items, out)
    }

    fn listeners(&self, json: bool) -> String {
        let running = self.running();
        let subsystems = self.target.subsystems();
        let mut out = String::new();
        let mut items = Vec::new();
        for l in self.target.listeners().iter() {
            let transport = running
                .listeners
                .iter()
                .find(|c| c.name == l.name)
                .map_or("?", |c| {
                    if l.port.trtype == crate::transport::rdma::TRTYPE {
                        "rdma"
                    } else if c.transport == crate::config::TransportKind::Rdma {
                        "tcp (RDMA fell back)"
                    } else {
                        "tcp"
                    }
                });
            let served: Vec<&str> = subsystems
                .iter()
                .filter(|s| s.served_on(l))
                .map(|s| s.nqn.as_str())
                .collect();
            if json {
                let sv: Vec<String> = served.iter().map(|s| js(s)).collect();
                items.push(format!(
                    "{{\"name\":{},\"id\":{},\"transport\":{},\"address\":{},\"discovery\":{},\"subsystems\":[{}]}}",
                    js(&l.name),
                    l.id,
                    js(transport),
                    js(&l.port.addr.to_string()),
                    l.discovery,
                    sv.join(",")
                ));
            } else {
                let _ = writeln!(
                    out,
                    "{} (port ID {}): {transport} {}{}\n  serves: {}",
                    l.name,
                    l.id,
                    l.port.addr,
                    if l.discovery { ", discovery port" } else { "" },
                    if l.discovery {
                        "the discovery subsystem".to_string()
                    } else if served.is_empty() {
                        "no subsystem (and the discovery subsystem)".to_string()
                    } else {
                        format!("{} (and the discovery subsystem)", served.join(", "))
                    }
                );
            }
        }
        listing(json, &items, out)
    }

    fn controllers(&self, json: bool) -> String {
        let ctrls = self.controllers_now();
        let mut out = String::new();
        let mut items = Vec::new();
        for c in ctrls {
            let since = c.created.elapsed().as_secs();
            let kato = c.kato_ms.load(Relaxed);
            let io = c.io_queue_count();
            let state = if c.is_dead() {
                "closing"
            } else if c.is_ready() {
                "ready"
            } else {
                "not enabled"
            };
            let addr = c.host_addr.map_or("unknown".to_string(), |a| a.to_string());
            let listener = self
                .target
                .listener(c.listener)
                .map_or("(removed)".to_string(), |l| l.name);
            let queues = c.queues();
            if json {
                let qs: Vec<String> = queues
                    .iter()
                    .map(|(q, r)| format!("{{\"qid\":{q},\"reactor\":{r}}}"))
                    .collect();
                items.push(format!(
                    "{{\"cntlid\":{},\"subsystem\":{},\"host_nqn\":{},\"host_id\":{},\"host_address\":{},\"listener\":{},\"io_queues\":{io},\"queues\":[{}],\"kato_ms\":{kato},\"connected_seconds\":{since},\"state\":{}}}",
                    c.cntlid,
                    js(&c.subsys.nqn),
                    js(&c.hostnqn),
                    js(&uuid(&c.hostid)),
                    js(&addr),
                    js(&listener),
                    qs.join(","),
                    js(state)
                ));
            } else {
                let qs: Vec<String> = queues
                    .iter()
                    .map(|(q, r)| format!("{q}@reactor{r}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "cntlid {} of {}\n  host {} ({}) at {addr}, via listener {listener}\n  {io} I/O queue(s) granted; queues {}\n  keep-alive {kato} ms, connected {since} s ago, {state}",
                    c.cntlid,
                    c.subsys.nqn,
                    c.hostnqn,
                    uuid(&c.hostid),
                    qs.join(" ")
                );
            }
        }
        if json {
            format!("[{}]\n", items.join(","))
        } else if out.is_empty() {
            "no controllers\n".into()
        } else {
            out
        }
    }

    /// Every namespace's statistics: (subsystem, nsid, by reactor, live
    /// queues).
    #[allow(clippy::type_complexity)]
    fn namespace_stats(&self) -> Vec<(String, u32, Vec<Totals>, Vec<QueueTotals>)> {
        let mut v = Vec::new();
        for s in self.target.subsystems() {
            for ns in &s.namespaces() {
                let (by_reactor, queues) = ns.stats.read();
                v.push((s.nqn.clone(), ns.nsid, by_reactor, queues));
            }
        }
        v
    }

    fn stats(&self, json: bool) -> String {
        let ctrls = self.controllers_now();
        let mut out = String::new();
        let mut items = Vec::new();
        let mut ns_items = Vec::new();
        let mut q_items = Vec::new();
        let mut ns_text = String::new();
        let mut q_text = String::new();
        for (nqn, nsid, by_reactor, queues) in self.namespace_stats() {
            let mut t = Totals::default();
            for r in &by_reactor {
                t.add(r);
            }
            if json {
                ns_items.push(format!(
                    "{{\"subsystem\":{},\"nsid\":{nsid},{}}}",
                    js(&nqn),
                    totals_json(&t)
                ));
            } else {
                let _ = writeln!(ns_text, "{nqn} nsid {nsid}: {}", totals_text(&t));
            }
            for q in queues {
                if json {
                    q_items.push(format!(
                        "{{\"subsystem\":{},\"nsid\":{nsid},\"cntlid\":{},\"qid\":{},\"reactor\":{},{}}}",
                        js(&nqn),
                        q.cntlid,
                        q.qid,
                        q.reactor,
                        totals_json(&q.totals)
                    ));
                } else {
                    let _ = writeln!(
                        q_text,
                        "cntlid {} queue {} (reactor {}) on {nqn} nsid {nsid}: {}",
                        q.cntlid,
                        q.qid,
                        q.reactor,
                        totals_text(&q.totals)
                    );
                }
            }
        }
        for c in ctrls {
            let h = c.health();
            if json {
                items.push(format!(
                    "{{\"cntlid\":{},\"subsystem\":{},\"reads\":{},\"writes\":{},\"bytes_read\":{},\"bytes_written\":{},\"errors\":{},\"media_errors\":{}}}",
                    c.cntlid,
                    js(&c.subsys.nqn),
                    h.read_cmds,
                    h.write_cmds,
                    h.bytes_read,
                    h.bytes_written,
                    h.error_entries,
                    h.media_errors
                ));
            } else {
                let _ = writeln!(
                    out,
                    "cntlid {} ({}): {} reads, {} writes, {} bytes read, {} bytes written, {} errors ({} media)",
                    c.cntlid,
                    c.subsys.nqn,
                    h.read_cmds,
                    h.write_cmds,
                    h.bytes_read,
                    h.bytes_written,
                    h.error_entries,
                    h.media_errors
                );
            }
        }
        let reactors = self.reactors.read();
        if json {
            let rs: Vec<String> = reactors
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    format!(
                        "{{\"reactor\":{i},\"connections\":{},\"busy_seconds\":{:.3},\"seconds\":{:.3}}}",
                        r.connections,
                        r.busy_ns as f64 / 1e9,
                        r.total_ns as f64 / 1e9
                    )
                })
                .collect();
            format!(
                "{{\"controllers\":[{}],\"namespaces\":[{}],\"queues\":[{}],\"reactors\":[{}]}}\n",
                items.join(","),
                ns_items.join(","),
                q_items.join(","),
                rs.join(",")
            )
        } else {
            out.push_str(&ns_text);
            out.push_str(&q_text);
            for (i, r) in reactors.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "reactor {i}: {} connection(s), busy {:.3} s of {:.3} s",
                    r.connections,
                    r.busy_ns as f64 / 1e9,
                    r.total_ns as f64 / 1e9
                );
            }
            out
        }
    }

    fn disconnect(&self, id: &str, json: bool) -> Result<String, String> {
        let cntlid: u16 = id
            .parse()
            .map_err(|_| format!("disconnect: {id:?} is not a controller ID"))?;
        let c = self
            .target
            .controllers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cntlid)
            .ok_or_else(|| format!("disconnect: no controller {cntlid}"))?;
        // Its queues see it dead at their reactors' next tick and close.
        c.kill();
        log::info!(
            "controller {cntlid} of {} (host {}): disconnected by the control socket",
            c.subsys.nqn,
            c.hostnqn
        );
        Ok(if json {
            format!("{{\"disconnected\":{cntlid}}}\n")
        } else {
            format!("controller {cntlid} disconnected\n")
        })
    }

    /// Re-reads the config file and applies what changed (see
    /// [`crate::reload`]); a file with errors changes nothing.
    pub fn reload(&self, json: bool) -> Result<String, String> {
        let mut pending = self
            .pending_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.config_path else {
            return Err("the target runs the embedded default: there is no file to reload".into());
        };
        let mut new = Config::load(path).map_err(|errs| {
            let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            format!(
                "{} has {} error(s); nothing changed:\n{}",
                path.display(),
                lines.len(),
                lines.join("\n")
            )
        })?;
        if let Some(c) = &self.cores_override {
            new.target.cores = c.clone();
        }
        let old = self.running();
        let out = crate::reload::apply(&self.target, &self.listening, &old, &new)
            .map_err(|e| format!("{e}; nothing changed"))?;
        // What runs now: the new subsystems and listeners; the rest as it
        // was.
        let mut running = new;
        running.target = old.target.clone();
        running.metrics = old.metrics;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = running;
        *pending = out.needs_restart.clone();
        for a in &out.applied {
            log::info!("reload: {a}");
        }
        for r in &out.needs_restart {
            log::warn!("reload: {r}");
        }
        Ok(if json {
            let a: Vec<String> = out.applied.iter().map(|s| js(s)).collect();
            let r: Vec<String> = out.needs_restart.iter().map(|s| js(s)).collect();
            format!(
                "{{\"applied\":[{}],\"needs_restart\":[{}]}}\n",
                a.join(","),
                r.join(",")
            )
        } else if out.applied.is_empty() && out.needs_restart.is_empty() {
            "nothing changed\n".into()
        } else {
            let mut s = String::new();
            for a in &out.applied {
                let _ = writeln!(s, "applied: {a}");
            }
            for r in &out.needs_restart {
                let _ = writeln!(s, "needs restart: {r}");
            }
            s
        })
    }

    /// An editing command (`subsystem`, `ns`, `host`): the running config
    /// changed as asked, checked whole as a file would be, and applied as a
    /// reload would apply it (the same events for hosts). It lasts until
    /// the next reload, unless `config save` writes it to the file.
    fn change(&self, words: &[&str], json: bool) -> Result<String, String> {
        let mut pending = self
            .pending_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let old = self.running();
        let mut new = old.clone();
        let what = edit_config(&mut new, words)?;
        let new = Config::parse(&new.to_toml(), "(the running config)").map_err(|errs| {
            let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            format!(
                "{what} would not make a valid config; nothing changed:\n{}",
                lines.join("\n")
            )
        })?;
        let out = crate::reload::apply(&self.target, &self.listening, &old, &new)
            .map_err(|e| format!("{e}; nothing changed"))?;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = new;
        pending.extend(out.needs_restart.iter().cloned());
        for a in &out.applied {
            log::info!("ctl: {a}");
        }
        Ok(if json {
            let a: Vec<String> = out.applied.iter().map(|s| js(s)).collect();
            format!("{{\"applied\":[{}]}}\n", a.join(","))
        } else {
            out.applied
                .iter()
                .map(|a| format!("applied: {a}\n"))
                .collect()
        })
    }

    /// Writes the running config (with the changes `ctl` made) to the file
    /// the target was started with; its comments are not kept.
    fn save(&self) -> Result<String, String> {
        let _g = self
            .pending_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.config_path else {
            return Err("the target runs the embedded default: there is no file to save to".into());
        };
        let mut running = self.running();
        if let Some(c) = &self.cores_override {
            // The file keeps its own cores; --cores stays a command-line thing.
            if let Ok(f) = Config::load(path) {
                running.target.cores = f.target.cores;
            } else {
                running.target.cores = c.clone();
            }
        }
        let tmp = path.with_extension("toml.new");
        std::fs::write(&tmp, running.to_toml())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(format!("saved to {}\n", path.display()))
    }

    /// The Prometheus text exposition of the target's counters.
    pub fn metrics(&self) -> String {
        let mut o = String::new();
        let ctrls = self.controllers_now();
        let _ = writeln!(
            o,
            "# HELP nvmf_target_info The target's version.\n# TYPE nvmf_target_info gauge"
        );
        let _ = writeln!(
            o,
            "nvmf_target_info{{version={}}} 1",
            js(env!("CARGO_PKG_VERSION"))
        );
        let _ = writeln!(o, "# HELP nvmf_target_uptime_seconds Time since the target started.\n# TYPE nvmf_target_uptime_seconds gauge");
        let _ = writeln!(
            o,
            "nvmf_target_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        let _ = writeln!(o, "# HELP nvmf_target_controllers Controllers connected.\n# TYPE nvmf_target_controllers gauge");
        let _ = writeln!(o, "nvmf_target_controllers {}", ctrls.len());
        let reactors = self.reactors.read();
        let _ = writeln!(o, "# HELP nvmf_target_connections Transport connections per reactor.\n# TYPE nvmf_target_connections gauge");
        for (i, r) in reactors.iter().enumerate() {
            let _ = writeln!(
                o,
                "nvmf_target_connections{{reactor=\"{i}\"}} {}",
                r.connections
            );
        }
        let _ = writeln!(o, "# HELP nvmf_target_reactor_busy_seconds_total Time reactors spent in loop iterations that found work.\n# TYPE nvmf_target_reactor_busy_seconds_total counter");
        for (i, r) in reactors.iter().enumerate() {
            let _ = writeln!(
                o,
                "nvmf_target_reactor_busy_seconds_total{{reactor=\"{i}\"}} {:.6}",
                r.busy_ns as f64 / 1e9
            );
        }
        let _ = writeln!(o, "# HELP nvmf_target_reactor_idle_seconds_total Time reactors spent in loop iterations that found nothing to do (polling or asleep).\n# TYPE nvmf_target_reactor_idle_seconds_total counter");
        for (i, r) in reactors.iter().enumerate() {
            let _ = writeln!(
                o,
                "nvmf_target_reactor_idle_seconds_total{{reactor=\"{i}\"}} {:.6}",
                r.total_ns.saturating_sub(r.busy_ns) as f64 / 1e9
            );
        }
        let _ = writeln!(o, "# HELP nvmf_target_reactor_seconds_total Time reactors have run, busy or idle.\n# TYPE nvmf_target_reactor_seconds_total counter");
        for (i, r) in reactors.iter().enumerate() {
            let _ = writeln!(
                o,
                "nvmf_target_reactor_seconds_total{{reactor=\"{i}\"}} {:.6}",
                r.total_ns as f64 / 1e9
            );
        }
        type Get = fn(&crate::nvme::log::Health) -> u64;
        let series: [(&str, &str, Get); 6] = [
            (
                "nvmf_target_read_commands_total",
                "Read commands completed successfully.",
                |h| h.read_cmds,
            ),
            (
                "nvmf_target_write_commands_total",
                "Write commands completed successfully.",
                |h| h.write_cmds,
            ),
            (
                "nvmf_target_read_bytes_total",
                "Bytes read by hosts.",
                |h| h.bytes_read,
            ),
            (
                "nvmf_target_written_bytes_total",
                "Bytes written by hosts.",
                |h| h.bytes_written,
            ),
            (
                "nvmf_target_errors_total",
                "Commands completed with an error status.",
                |h| h.error_entries,
            ),
            (
                "nvmf_target_media_errors_total",
                "Unrecovered data errors (SMART media errors).",
                |h| h.media_errors,
            ),
        ];
        let healths: Vec<_> = ctrls.iter().map(|c| c.health()).collect();
        for (name, help, get) in series {
            let _ = writeln!(
                o,
                "# HELP {name} {help} Per controller.\n# TYPE {name} counter"
            );
            for (c, h) in ctrls.iter().zip(&healths) {
                let _ = writeln!(
                    o,
                    "{name}{{subsystem={},cntlid=\"{}\",host={}}} {}",
                    js(&c.subsys.nqn),
                    c.cntlid,
                    js(&c.hostnqn),
                    get(h)
                );
            }
        }
        self.namespace_metrics(&mut o);
        device_metrics(&self.target, &mut o);
        o
    }

    /// Per-namespace and per-reactor counters and latency histograms.
    fn namespace_metrics(&self, o: &mut String) {
        let stats = self.namespace_stats();
        let ops = |t: &Totals| [("read", t.read), ("write", t.write), ("other", t.other)];
        type Get = fn(&DirTotals) -> u64;
        let counters: [(&str, &str, Get); 3] = [
            (
                "nvmf_target_namespace_commands_total",
                "Commands completed successfully, per namespace and operation.",
                |d| d.commands,
            ),
            (
                "nvmf_target_namespace_bytes_total",
                "Bytes read or written, per namespace and operation.",
                |d| d.bytes,
            ),
            (
                "nvmf_target_namespace_errors_total",
                "Commands completed with an error status, per namespace and operation.",
                |d| d.errors,
            ),
        ];
        let per_ns: Vec<(String, Totals)> = stats
            .iter()
            .map(|(nqn, nsid, by_r, _)| {
                let mut t = Totals::default();
                for r in by_r {
                    t.add(r);
                }
                (format!("subsystem={},nsid=\"{nsid}\"", js(nqn)), t)
            })
            .collect();
        for (name, help, get) in counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, t) in &per_ns {
                for (op, d) in ops(t) {
                    let _ = writeln!(o, "{name}{{{labels},op=\"{op}\"}} {}", get(&d));
                }
            }
        }
        let name = "nvmf_target_namespace_latency_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Command latency in the target (the command in, to its completion \
             queued), per namespace and operation.\n# TYPE {name} histogram"
        );
        for (labels, t) in &per_ns {
            for (op, d) in ops(t) {
                histogram(o, name, &format!("{labels},op=\"{op}\""), &d);
            }
        }
        // Per reactor: every namespace's queues on it.
        let mut by_reactor: Vec<Totals> = Vec::new();
        for (_, _, by_r, _) in &stats {
            for (i, t) in by_r.iter().enumerate() {
                if by_reactor.len() <= i {
                    by_reactor.resize(i + 1, Totals::default());
                }
                by_reactor[i].add(t);
            }
        }
        by_reactor.resize(
            by_reactor.len().max(self.reactors.read().len()),
            Totals::default(),
        );
        let name = "nvmf_target_reactor_commands_total";
        let _ = writeln!(
            o,
            "# HELP {name} I/O commands completed (successfully or not) per reactor and operation.\n# TYPE {name} counter"
        );
        for (i, t) in by_reactor.iter().enumerate() {
            for (op, d) in ops(t) {
                let _ = writeln!(o, "{name}{{reactor=\"{i}\",op=\"{op}\"}} {}", d.observed());
            }
        }
        let name = "nvmf_target_reactor_latency_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Command latency in the target per reactor, all namespaces.\n# TYPE {name} histogram"
        );
        for (i, t) in by_reactor.iter().enumerate() {
            histogram(o, name, &format!("reactor=\"{i}\""), &t.all());
        }
    }
}

/// What the NVMe controllers this process drives show of their DMA memory
/// and completion interrupts, per namespace on one (Prometheus text).
pub fn device_metrics(target: &Target, o: &mut String) {
    let mut devs = Vec::new();
    for s in target.subsystems() {
        for ns in &s.namespaces() {
            if let Some(u) = ns.backend.dma_use() {
                devs.push((format!("subsystem={},nsid=\"{}\"", js(&s.nqn), ns.nsid), u));
            }
        }
    }
    if devs.is_empty() {
        return;
    }
    let name = "nvmf_target_device_copied_bytes_total";
    let _ = writeln!(
        o,
        "# HELP {name} Bytes copied through the driver's bounce buffers (transfers that could \
         not be staged in DMA memory).\n# TYPE {name} counter"
    );
    for (labels, u) in &devs {
        let _ = writeln!(o, "{name}{{{labels}}} {}", u.copied);
    }
    let name = "nvmf_target_device_staged_buffers_free";
    let _ = writeln!(
        o,
        "# HELP {name} Staged DMA buffers free, per reactor.\n# TYPE {name} gauge"
    );
    for (labels, u) in &devs {
        for (r, n) in u.staged_free.iter().enumerate() {
            let _ = writeln!(o, "{name}{{{labels},reactor=\"{r}\"}} {n}");
        }
    }
    type Get = fn(&crate::backend::nvme::device::IrqUse) -> u64;
    let irq: [(&str, &str, &str, Get); 3] = [
        (
            "nvmf_target_device_interrupt_queues",
            "I/O queues whose completions interrupt (to wake a sleeping reactor).",
            "gauge",
            |i| i.queues as u64,
        ),
        (
            "nvmf_target_device_interrupt_waits_total",
            "Times a reactor went to sleep waiting on a completion interrupt.",
            "counter",
            |i| i.waits,
        ),
        (
            "nvmf_target_device_interrupt_wakes_total",
            "Times a completion interrupt woke a sleeping reactor.",
            "counter",
            |i| i.wakes,
        ),
    ];
    for (name, help, kind, get) in irq {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, u) in &devs {
            let _ = writeln!(o, "{name}{{{labels}}} {}", u.irq.as_ref().map_or(0, get));
        }
    }
}

/// Percentiles `ctl stats` shows.
const PERCENTILES: [(&str, f64); 3] = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)];

fn micros(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{:.1}", s * 1e6))
}

/// Commands, bytes, errors and latency percentiles, in words.
fn totals_text(t: &Totals) -> String {
    let all = t.all();
    let pct: Vec<String> = PERCENTILES
        .iter()
        .map(|(n, q)| format!("{n} {}", micros(all.quantile(*q))))
        .collect();
    format!(
        "{} reads ({} bytes), {} writes ({} bytes), {} other, {} errors; latency us {}",
        t.read.commands,
        t.read.bytes,
        t.write.commands,
        t.write.bytes,
        t.other.commands,
        t.read.errors + t.write.errors + t.other.errors,
        pct.join(", ")
    )
}

/// The same as JSON fields (latencies in microseconds; null with none).
fn totals_json(t: &Totals) -> String {
    let all = t.all();
    let pct: Vec<String> = PERCENTILES
        .iter()
        .map(|(n, q)| {
            let v = all
                .quantile(*q)
                .map_or("null".into(), |s| format!("{:.3}", s * 1e6));
            format!("\"latency_{}_us\":{v}", n.replace('.', "_"))
        })
        .collect();
    format!(
        "\"reads\":{},\"writes\":{},\"other\":{},\"bytes_read\":{},\"bytes_written\":{},\"errors\":{},{}",
        t.read.commands,
        t.write.commands,
        t.other.commands,
        t.read.bytes,
        t.write.bytes,
        t.read.errors + t.write.errors + t.other.errors,
        pct.join(",")
    )
}

/// Writes one Prometheus histogram series (`name_bucket`, `_sum`,
/// `_count`) with `labels`.
fn histogram(o: &mut String, name: &str, labels: &str, t: &DirTotals) {
    let mut cum = 0u64;
    for (i, c) in t.hist.iter().enumerate() {
        cum += c;
        let le = crate::fabrics::nsstats::bucket_bound(i);
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{le:e}")
        };
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
    }
    let _ = writeln!(o, "{name}_sum{{{labels}}} {:.9}", t.latency_ns as f64 / 1e9);
    let _ = writeln!(o, "{name}_count{{{labels}}} {cum}");
}

/// Whether the file says what runs: the same config once the command
/// line's `--cores` and the ports bound at start are taken into account.
fn same_config(file: &Config, running: &Config) -> bool {
    let mut f = file.clone();
    f.target.cores = running.target.cores.clone();
    for (l, r) in f.listeners.iter_mut().zip(&running.listeners) {
        if l.addr.port() == 0 {
            l.addr.set_port(r.addr.port());
        }
    }
    f == *running
}

/// Binds the control socket at `path` (mode 0600; a stale socket file of
/// a dead target is replaced, a live one is not) and serves it on a thread.
pub fn serve_socket(path: &Path, control: Arc<Control>) -> io::Result<std::thread::JoinHandle<()>> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{}: another target answers on this control socket",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("nvmf-control".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let mut r = BufReader::new(&s).take(4096);
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let reply = match control.handle(line.trim()) {
                    Ok(text) => text,
                    Err(e) => format!("error: {e}\n"),
                };
                let _ = (&s).write_all(reply.as_bytes());
            }
        })
}

/// Sends one request to the control socket at `path`; the response, or the
/// target's error message as `Err`.
pub fn request(path: &Path, line: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "{}: {e} (is the target running, with this control_socket, and may you open it?)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match out.strip_prefix("error: ") {
        Some(e) => Err(e.trim_end().to_string()),
        None => Ok(out),
    }
}

/// Serves `GET /metrics` (any path, in fact) on `addr` on a thread: the
/// Prometheus text format, read from the counters when scraped.
pub fn serve_metrics(
    addr: std::net::SocketAddr,
    control: Arc<Control>,
) -> io::Result<(std::net::SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let h = std::thread::Builder::new()
        .name("nvmf-metrics".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                // The request line and headers, up to the blank line.
                let mut r = BufReader::new(&s).take(16 * 1024);
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                let mut l = String::new();
                while r.read_line(&mut l).is_ok_and(|n| n > 0) && l.trim() != "" {
                    l.clear();
                }
                let (status, body) = if first.starts_with("GET ") {
                    ("200 OK", control.metrics())
                } else {
                    ("405 Method Not Allowed", "only GET\n".to_string())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok((bound, h))
}

/// systemd's notification protocol (`sd_notify`), without libsystemd: a
/// datagram to `$NOTIFY_SOCKET`. False when not started by systemd.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let p = path.to_string_lossy();
    if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &*p)?;
    }
    Ok(true)
}

/// The watchdog period systemd asks for (`WatchdogSec=`), if it is meant
/// for this process.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Options of an editing command: `--name value` pairs and flags.
struct Opts<'a> {
    args: Vec<&'a str>,
    pairs: Vec<(&'a str, &'a str)>,
    flags: Vec<&'a str>,
}

impl<'a> Opts<'a> {
    fn parse(words: &[&'a str], flags: &[&str]) -> Result<Opts<'a>, String> {
        let mut o = Opts {
            args: Vec::new(),
            pairs: Vec::new(),
            flags: Vec::new(),
        };
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            if let Some(name) = w.strip_prefix("--") {
                if flags.contains(&name) {
                    o.flags.push(name);
                } else {
                    let v = words
                        .get(i + 1)
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    o.pairs.push((name, v));
                    i += 1;
                }
            } else {
                o.args.push(w);
            }
            i += 1;
        }
        Ok(o)
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .collect()
    }

    /// Refuses options the command does not take.
    fn only(&self, names: &[&str]) -> Result<(), String> {
        match self.pairs.iter().find(|(n, _)| !names.contains(n)) {
            Some((n, _)) => Err(format!("unknown option --{n}")),
            None => Ok(()),
        }
    }
}

/// `[tcp:|rdma:]ADDRESS:PORT` of `--listen`.
fn parse_listen(
    spec: &str,
) -> Result<(crate::config::TransportKind, std::net::SocketAddr), String> {
    use crate::config::TransportKind;
    let (t, rest) = match spec.split_once(':') {
        Some(("tcp", r)) => (TransportKind::Tcp, r),
        Some(("rdma", r)) => (TransportKind::Rdma, r),
        _ => (TransportKind::Tcp, spec),
    };
    let addr = rest
        .parse()
        .map_err(|_| format!("--listen {spec:?}: expected [tcp:|rdma:]ADDRESS:PORT"))?;
    Ok((t, addr))
}

fn subsystem_mut<'c>(cfg: &'c mut Config, nqn: &str) -> Result<&'c mut SubsystemConfig, String> {
    cfg.subsystems
        .iter_mut()
        .find(|s| s.nqn == nqn)
        .ok_or_else(|| format!("no subsystem {nqn}"))
}

/// Applies an editing command to a copy of the running config: `subsystem
/// add|remove`, `ns add|remove|resize`, `host allow|deny`. Returns what it
/// did, in words.
pub fn edit_config(cfg: &mut Config, words: &[&str]) -> Result<String, String> {
    use crate::config::{
        derived_namespace_ids, derived_serial, parse_size, parse_uuid, NamespaceConfig,
    };
    let usage = "usage: subsystem add NQN [--host HOSTNQN]... [--listener NAME]... [--listen \
                 [tcp:|rdma:]ADDRESS:PORT] [--size SIZE [--uuid UUID]] | subsystem remove NQN | \
                 ns add NQN --size SIZE [--nsid N] [--uuid UUID] [--block-size 512|4096] \
                 [--backend ram|null|file] [--path PATH] | ns remove NQN NSID | ns resize NQN \
                 NSID SIZE | host allow NQN HOSTNQN | host deny NQN HOSTNQN | listener add NAME \
                 --address ADDRESS --port PORT [--transport tcp|rdma] [--fallback tcp] \
                 [--discovery] | listener remove NAME";
    let (Some(&what), Some(&verb)) = (words.first(), words.get(1)) else {
        return Err(usage.into());
    };
    let o = Opts::parse(&words[2..], &["discovery"])?;
    if !o.flags.is_empty() && (what, verb) != ("listener", "add") {
        return Err(format!("unknown option --{}", o.flags[0]));
    }
    match (what, verb, o.args.as_slice()) {
        ("subsystem", "add", [nqn]) => {
            o.only(&["host", "listener", "listen", "size", "uuid"])?;
            if cfg.subsystems.iter().any(|s| s.nqn == *nqn) {
                return Err(format!("subsystem {nqn} exists already"));
            }
            let hosts = o.all("host");
            let mut listeners = o.all("listener");
            if let Some(spec) = o.get("listen") {
                let (transport, addr) = parse_listen(spec)?;
                let name = match cfg
                    .listeners
                    .iter()
                    .find(|l| l.transport == transport && l.addr == addr)
                {
                    Some(l) if l.discovery => {
                        return Err(format!("--listen {spec}: {} is a discovery port", l.name))
                    }
                    Some(l) => l.name.clone(),
                    None => {
                        let l = crate::config::ListenerConfig::new(transport, addr, false);
                        let name = l.name.clone();
                        cfg.listeners.push(l);
                        name
                    }
                };
                if !listeners.contains(&name) {
                    listeners.push(name);
                }
            }
            let mut namespaces = Vec::new();
            if let Some(size) = o.get("size") {
                let size = parse_size(size)?;
                let (mut uuid, nguid, eui64) = derived_namespace_ids(nqn, 1);
                if let Some(u) = o.get("uuid") {
                    uuid = parse_uuid(u).map_err(|e| format!("--uuid: {e}"))?;
                }
                namespaces.push(NamespaceConfig {
                    nsid: 1,
                    backend: BackendConfig::Ram { size },
                    block_size: 512,
                    uuid,
                    nguid,
                    eui64,
                });
            } else if o.get("uuid").is_some() {
                return Err("--uuid needs --size (the namespace to make)".into());
            }
            cfg.subsystems.push(SubsystemConfig {
                nqn: nqn.to_string(),
                serial: derived_serial(nqn),
                model: crate::config::DEFAULT_MODEL.to_string(),
                allow_any_host: hosts.is_empty(),
                hosts,
                listeners: (!listeners.is_empty()).then_some(listeners),
                namespaces,
            });
            Ok(format!("subsystem {nqn} added"))
        }
        ("listener", "add", [name]) => {
            o.only(&["transport", "address", "port", "fallback"])?;
            use crate::config::TransportKind;
            let transport = match o.get("transport").unwrap_or("tcp") {
                "tcp" => TransportKind::Tcp,
                "rdma" => TransportKind::Rdma,
                t => return Err(format!("--transport {t:?}: tcp or rdma")),
            };
            let ip: std::net::IpAddr = o
                .get("address")
                .ok_or("listener add needs --address")?
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map_err(|_| "--address: not an IPv4 or IPv6 address".to_string())?;
            let port: u16 = match o.get("port") {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("--port {p:?} is not a port number"))?,
                None if transport == TransportKind::Rdma => 4420,
                None => return Err("listener add needs --port".into()),
            };
            let mut l = crate::config::ListenerConfig::new(
                transport,
                std::net::SocketAddr::new(ip, port),
                o.flags.contains(&"discovery"),
            );
            l.name = name.to_string();
            l.fallback = match o.get("fallback") {
                None => None,
                Some("tcp") => Some(TransportKind::Tcp),
                Some(f) => return Err(format!("--fallback {f:?}: only tcp")),
            };
            if cfg.listeners.iter().any(|x| x.name == *name) {
                return Err(format!("listener {name} exists already"));
            }
            cfg.listeners.push(l);
            Ok(format!("listener {name} added"))
        }
        ("listener", "remove", [name]) => {
            o.only(&[])?;
            if !cfg.listeners.iter().any(|l| l.name == *name) {
                return Err(format!("no listener {name}"));
            }
            if let Some(s) = cfg.subsystems.iter().find(|s| {
                s.listeners
                    .as_ref()
                    .is_some_and(|v| v.iter().any(|n| n == name))
            }) {
                return Err(format!(
                    "subsystem {} names listener {name}: remove it from that subsystem first \
                     (or remove the subsystem)",
                    s.nqn
                ));
            }
            cfg.listeners.retain(|l| l.name != *name);
            Ok(format!("listener {name} removed"))
        }
        ("subsystem", "remove", [nqn]) => {
            o.only(&[])?;
            let n = cfg.subsystems.len();
            cfg.subsystems.retain(|s| s.nqn != *nqn);
            if cfg.subsystems.len() == n {
                return Err(format!("no subsystem {nqn}"));
            }
            Ok(format!("subsystem {nqn} removed"))
        }
        ("ns", "add", [nqn]) => {
            o.only(&["size", "nsid", "uuid", "block-size", "backend", "path"])?;
            let s = subsystem_mut(cfg, nqn)?;
            let size = parse_size(o.get("size").ok_or("ns add needs --size")?)?;
            let nsid = match o.get("nsid") {
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("--nsid {v:?} is not a number"))?,
                None => (1..=crate::subsystem::MAX_NSID)
                    .find(|n| !s.namespaces.iter().any(|x| x.nsid == *n))
                    .ok_or("no free NSID")?,
            };
            let block_size = match o.get("block-size") {
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("--block-size {v:?} is not a number"))?,
                None => 512,
            };
            let backend = match (o.get("backend").unwrap_or("ram"), o.get("path")) {
                ("ram", None) => BackendConfig::Ram { size },
                ("null", None) => BackendConfig::Null { size },
                ("file", Some(p)) => BackendConfig::File {
                    path: PathBuf::from(p),
                    size: Some(size),
                    direct: false,
                },
                ("file", None) => return Err("--backend file needs --path".into()),
                (b, _) => return Err(format!("--backend {b:?}: ram, null or file (with --path)")),
            };
            let (mut uuid, nguid, eui64) = derived_namespace_ids(nqn, nsid);
            if let Some(u) = o.get("uuid") {
                uuid = parse_uuid(u).map_err(|e| format!("--uuid: {e}"))?;
            }
            s.namespaces.push(NamespaceConfig {
                nsid,
                backend,
                block_size,
                uuid,
                nguid,
                eui64,
            });
            Ok(format!("subsystem {nqn} nsid {nsid} added"))
        }
        ("ns", "remove", [nqn, nsid]) => {
            o.only(&[])?;
            let s = subsystem_mut(cfg, nqn)?;
            let n = s.namespaces.len();
            s.namespaces.retain(|x| x.nsid.to_string() != *nsid);
            if s.namespaces.len() == n {
                return Err(format!("subsystem {nqn} has no namespace {nsid}"));
            }
            Ok(format!("subsystem {nqn} nsid {nsid} removed"))
        }
        ("ns", "resize", [nqn, nsid, size]) => {
            o.only(&[])?;
            let size = parse_size(size)?;
            let s = subsystem_mut(cfg, nqn)?;
            let ns = s
                .namespaces
                .iter_mut()
                .find(|x| x.nsid.to_string() == *nsid)
                .ok_or_else(|| format!("subsystem {nqn} has no namespace {nsid}"))?;
            match &mut ns.backend {
                BackendConfig::File { size: s, .. } => *s = Some(size),
                _ => {
                    return Err(format!(
                        "nsid {nsid} is a {} namespace: only file namespaces resize in place",
                        backend_name(&ns.backend)
                    ))
                }
            }
            Ok(format!(
                "subsystem {nqn} nsid {nsid} resized to {size} bytes"
            ))
        }
        ("host", "allow", [nqn, host]) => {
            o.only(&[])?;
            let s = subsystem_mut(cfg, nqn)?;
            if !s.hosts.iter().any(|h| h == host) {
                s.hosts.push(host.to_string());
            }
            s.allow_any_host = false;
            Ok(format!("subsystem {nqn}: host {host} allowed"))
        }
        ("host", "deny", [nqn, host]) => {
            o.only(&[])?;
            let s = subsystem_mut(cfg, nqn)?;
            if s.allow_any_host {
                return Err(format!(
                    "subsystem {nqn} allows any host: allow the ones it should serve first"
                ));
            }
            let n = s.hosts.len();
            s.hosts.retain(|h| h != host);
            if s.hosts.len() == n {
                return Err(format!("subsystem {nqn} does not list host {host}"));
            }
            Ok(format!("subsystem {nqn}: host {host} denied"))
        }
        _ => Err(usage.into()),
    }
}
