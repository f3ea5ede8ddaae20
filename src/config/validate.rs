//! The schema: walks the spanned tree, checks every field, and collects every
//! error with the position of the offending key or value.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use super::ident::{
    derived_namespace_ids, derived_serial, format_uuid, hex_lower, is_discovery_nqn, parse_eui64,
    parse_nguid, parse_uuid, validate_nqn,
};
use super::size::parse_size;
use super::tree::{Entry, Node, Value};
use super::{
    BackendConfig, Config, ConfigError, FaultError, FaultOp, FaultRule, IdlePolicy, ListenerConfig,
    NamespaceConfig, SubsystemConfig, TargetConfig, TransportKind,
};

type Span = Option<Range<usize>>;

pub(crate) const SERIAL_MAX_LEN: usize = 20;
pub(crate) const MODEL_MAX_LEN: usize = 40;
pub(crate) const MAX_NSID: u32 = 1024;
pub(crate) const IN_CAPSULE_DATA_SIZE_MAX: u64 = 128 * 1024;
pub(crate) const MAX_IO_SIZE_MIN: u64 = 4096;
pub(crate) const MAX_IO_SIZE_MAX: u64 = 8 << 20;

const ROOT_KEYS: &[&str] = &["target", "listener", "subsystem", "metrics"];
const TARGET_KEYS: &[&str] = &[
    "cores",
    "idle",
    "in_capsule_data_size",
    "max_io_size",
    "max_queue_depth",
    "max_io_queues",
    "hdr_digest",
    "data_digest",
    "keep_alive_timeout_ms_max",
    "control_socket",
];
/// Keys earlier versions took that do nothing now: why, for the error.
fn removed_key(path: &str, key: &str) -> Option<&'static str> {
    match (path, key) {
        ("target", "max_r2t") => Some(
            "this setting was removed: the target sends one R2T per write, for all of its \
             data (up to max_io_size), so there is nothing to limit; delete the line",
        ),
        _ => None,
    }
}

const LISTENER_KEYS: &[&str] = &[
    "name",
    "transport",
    "address",
    "port",
    "fallback",
    "discovery",
];
/// Longest listener name.
pub(crate) const LISTENER_NAME_MAX_LEN: usize = 64;
const SUBSYSTEM_KEYS: &[&str] = &[
    "nqn",
    "serial",
    "model",
    "allow_any_host",
    "hosts",
    "listeners",
    "namespace",
];
const NAMESPACE_KEYS: &[&str] = &[
    "nsid",
    "backend",
    "size",
    "block_size",
    "path",
    "direct",
    "pci",
    "device_nsid",
    "uuid",
    "nguid",
    "eui64",
    "fault",
];

const FAULT_KEYS: &[&str] = &["op", "lba", "blocks", "error", "delay_ms", "every"];

/// 1-based line and column (in characters) of a byte offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Where errors go.
pub(crate) struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
    cpus: usize,
    pub errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub fn new(text: &'a str, file: &'a str, cpus: usize) -> Self {
        Ctx {
            text,
            file,
            cpus: cpus.max(1),
            errors: Vec::new(),
        }
    }

    pub fn error_at(&mut self, offset: usize, message: String) {
        let (line, col) = line_col(self.text, offset);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            col,
            message,
        });
    }

    fn error(&mut self, span: &Span, message: String) {
        self.error_at(span.as_ref().map_or(0, |s| s.start), message);
    }

    fn line(&self, span: &Span) -> usize {
        line_col(self.text, span.as_ref().map_or(0, |s| s.start)).0
    }
}

/// One table of the document, with the path used in messages
/// (`subsystem[1].namespace[0]`, empty for the root).
struct Table<'n> {
    path: String,
    span: Span,
    entries: &'n [Entry],
}

impl<'n> Table<'n> {
    fn get(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Reports every key that is not in `allowed`, at the key.
    fn check_keys(&self, ctx: &mut Ctx, allowed: &[&str]) {
        for entry in self.entries {
            if allowed.contains(&entry.key.as_str()) {
                continue;
            }
            if let Some(why) = removed_key(&self.path, &entry.key) {
                ctx.error(
                    &entry.key_span,
                    format!("{}: {why}", self.field(&entry.key)),
                );
                continue;
            }
            let hint = match suggest(&entry.key, allowed) {
                Some(s) => format!("did you mean {s:?}?"),
                None => format!("expected one of: {}", allowed.join(", ")),
            };
            let message = if self.path.is_empty() {
                format!("unknown top-level key {:?} ({hint})", entry.key)
            } else {
                format!("{}: unknown key {:?} ({hint})", self.path, entry.key)
            };
            ctx.error(&entry.key_span, message);
        }
    }

    /// Reports a missing required field, at the table's header.
    fn missing(&self, ctx: &mut Ctx, key: &str, why: &str) {
        let what = if self.path.is_empty() {
            "the top level".to_owned()
        } else {
            self.path.clone()
        };
        ctx.error(
            &self.span,
            format!("{what}: missing required field {key:?}{why}"),
        );
    }
}

/// The allowed key closest to a misspelt one, if any is close.
fn suggest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let squashed = squash(key);
    if let Some(hit) = allowed.iter().find(|a| squash(a) == squashed) {
        return Some(hit);
    }
    allowed
        .iter()
        .map(|a| (levenshtein(key, a), *a))
        .filter(|(d, a)| *d <= 2 && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// "the string \"abc\"", "the integer 5", "a table": the found side of a type error.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the float {f}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        other => other.type_name().to_owned(),
    }
}

fn type_error(ctx: &mut Ctx, path: &str, node: &Node, expected: &str) {
    ctx.error(
        &node.span,
        format!(
            "{path}: expected {expected}, found {}",
            describe(&node.value)
        ),
    );
}

fn as_table<'n>(ctx: &mut Ctx, path: String, node: &'n Node) -> Option<Table<'n>> {
    match &node.value {
        Value::Table(entries) => Some(Table {
            path,
            span: node.span.clone(),
            entries,
        }),
        _ => {
            type_error(ctx, &path, node, "a table");
            None
        }
    }
}

fn as_bool(ctx: &mut Ctx, path: &str, node: &Node) -> Option<bool> {
    match node.value {
        Value::Boolean(b) => Some(b),
        _ => {
            type_error(ctx, path, node, "a boolean (true or false)");
            None
        }
    }
}

fn as_str<'n>(ctx: &mut Ctx, path: &str, node: &'n Node) -> Option<&'n str> {
    match &node.value {
        Value::String(s) => Some(s),
        _ => {
            type_error(ctx, path, node, "a string");
            None
        }
    }
}

fn as_int(ctx: &mut Ctx, path: &str, node: &Node) -> Option<i64> {
    match node.value {
        Value::Integer(i) => Some(i),
        _ => {
            type_error(ctx, path, node, "an integer");
            None
        }
    }
}

fn as_array<'n>(ctx: &mut Ctx, path: &str, node: &'n Node) -> Option<&'n [Node]> {
    match &node.value {
        Value::Array(items) => Some(items),
        _ => {
            type_error(ctx, path, node, "an array");
            None
        }
    }
}

/// An integer in `lo..=hi`, converted to `T` (which must hold the range).
fn int_in<T: TryFrom<i64>>(ctx: &mut Ctx, path: &str, node: &Node, lo: i64, hi: i64) -> Option<T> {
    let v = as_int(ctx, path, node)?;
    if v < lo || v > hi {
        ctx.error(
            &node.span,
            format!("{path}: {v} is out of range (it must be between {lo} and {hi})"),
        );
        return None;
    }
    T::try_from(v).ok()
}

/// A size: an integer number of bytes or a string such as "1GiB".
fn size(ctx: &mut Ctx, path: &str, node: &Node) -> Option<u64> {
    match &node.value {
        Value::Integer(i) => match u64::try_from(*i) {
            Ok(v) => Some(v),
            Err(_) => {
                ctx.error(
                    &node.span,
                    format!("{path}: a size cannot be negative ({i})"),
                );
                None
            }
        },
        Value::String(s) => match parse_size(s) {
            Ok(v) => Some(v),
            Err(e) => {
                ctx.error(&node.span, format!("{path}: {e}"));
                None
            }
        },
        _ => {
            type_error(
                ctx,
                path,
                node,
                "a size (a number of bytes, or a string such as \"1GiB\")",
            );
            None
        }
    }
}

/// The tables of an array of tables (`[[listener]]`), with their index.
fn array_of_tables<'n>(ctx: &mut Ctx, path: &str, node: &'n Node, header: &str) -> Vec<Table<'n>> {
    let Value::Array(items) = &node.value else {
        type_error(
            ctx,
            path,
            node,
            &format!("an array of tables (write [[{header}]])"),
        );
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| as_table(ctx, format!("{path}[{i}]"), item))
        .collect()
}

/// `fault = [...]` of a fault namespace (an array of inline tables, or
/// `[[subsystem.namespace.fault]]` tables): at least one rule.
fn fault_rules(
    ctx: &mut Ctx,
    t: &Table,
    block_size: Option<u32>,
    size: u64,
) -> Option<Vec<FaultRule>> {
    let Some(entry) = t.get("fault") else {
        t.missing(
            ctx,
            "fault",
            " (the fault backend needs at least one rule, e.g. \
             fault = [{ op = \"read\", error = \"media\" }])",
        );
        return None;
    };
    let before = ctx.errors.len();
    let path = t.field("fault");
    let tables = array_of_tables(ctx, &path, &entry.node, "subsystem.namespace.fault");
    if tables.is_empty() && ctx.errors.len() == before {
        ctx.error(
            &entry.key_span,
            format!("{path}: at least one rule is needed"),
        );
    }
    let blocks_total = size / u64::from(block_size.unwrap_or(512));
    let mut rules = Vec::new();
    for r in tables {
        r.check_keys(ctx, FAULT_KEYS);
        let op = match r.get("op") {
            None => Some(FaultOp::Any),
            Some(e) => match as_str(ctx, &r.field("op"), &e.node) {
                Some("read") => Some(FaultOp::Read),
                Some("write") => Some(FaultOp::Write),
                Some("flush") => Some(FaultOp::Flush),
                Some("write_zeroes") => Some(FaultOp::WriteZeroes),
                Some("any") => Some(FaultOp::Any),
                Some(other) => {
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{}: unknown operation {other:?} (expected \"read\", \"write\", \
                             \"flush\", \"write_zeroes\" or \"any\")",
                            r.field("op")
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        let error = match r.get("error") {
            None => Some(None),
            Some(e) => match as_str(ctx, &r.field("error"), &e.node) {
                Some("media") => Some(Some(FaultError::Media)),
                Some("no_space") => Some(Some(FaultError::NoSpace)),
                Some("short") => Some(Some(FaultError::Short)),
                Some(other) => {
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{}: unknown error {other:?} (expected \"media\", \"no_space\" \
                             or \"short\")",
                            r.field("error")
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        let num = |ctx: &mut Ctx, key: &str, lo: i64, hi: i64, dflt: Option<u64>| match r.get(key) {
            None => Some(dflt),
            Some(e) => int_in::<u64>(ctx, &r.field(key), &e.node, lo, hi).map(Some),
        };
        let last = blocks_total.saturating_sub(1).min(i64::MAX as u64) as i64;
        let lba = num(ctx, "lba", 0, last, Some(0));
        let blocks = num(ctx, "blocks", 1, last + 1, None);
        let delay_ms = num(ctx, "delay_ms", 0, 600_000, Some(0));
        let every = num(ctx, "every", 1, 1_000_000, Some(1));
        let (
            Some(op),
            Some(error),
            Some(Some(lba)),
            Some(blocks),
            Some(Some(delay_ms)),
            Some(Some(every)),
        ) = (op, error, lba, blocks, delay_ms, every)
        else {
            continue;
        };
        if error.is_none() && delay_ms == 0 {
            r.missing(
                ctx,
                "error",
                " (a rule needs an error, a delay_ms, or both)",
            );
            continue;
        }
        if error == Some(FaultError::Short) && !matches!(op, FaultOp::Read | FaultOp::Write) {
            ctx.error(
                &r.span,
                format!(
                    "{}: a short transfer needs op = \"read\" or \"write\"",
                    r.path
                ),
            );
            continue;
        }
        rules.push(FaultRule {
            op,
            lba,
            blocks,
            error,
            delay_ms,
            every,
        });
    }
    (ctx.errors.len() == before).then_some(rules)
}

/// Validates the whole document. Returns the config when no error was found.
pub(crate) fn validate(ctx: &mut Ctx, root: &Node) -> Option<Config> {
    let root = as_table(ctx, String::new(), root)?;
    root.check_keys(ctx, ROOT_KEYS);

    let target = match root.get("target") {
        Some(entry) => target(ctx, &entry.node),
        None => Some(TargetConfig::default()),
    };

    let mut listeners = Vec::new();
    match root.get("listener") {
        None => ctx.error(
            &root.span,
            "at least one [[listener]] is required (for example transport = \"tcp\", \
             address = \"127.0.0.1\", port = 4420)"
                .to_owned(),
        ),
        Some(entry) => {
            if matches!(&entry.node.value, Value::Array(items) if items.is_empty()) {
                ctx.error(
                    &entry.key_span,
                    "listener: at least one listener is required".to_owned(),
                );
            }
            let mut seen: Vec<(SocketAddr, Vec<TransportKind>, Span)> = Vec::new();
            let mut names: HashMap<String, Span> = HashMap::new();
            for table in array_of_tables(ctx, "listener", &entry.node, "listener") {
                if let Some(l) = listener(ctx, &table, &mut seen) {
                    let span = table
                        .get("name")
                        .map_or(table.span.clone(), |e| e.node.span.clone());
                    if let Some(first) = names.get(&l.name) {
                        let line = ctx.line(first);
                        ctx.error(
                            &span,
                            format!(
                                "{}.name: duplicate listener name {:?} (first used at line {line})",
                                table.path, l.name
                            ),
                        );
                        continue;
                    }
                    names.insert(l.name.clone(), span);
                    listeners.push(l);
                }
            }
        }
    }

    let mut subsystems = Vec::new();
    if let Some(entry) = root.get("subsystem") {
        let mut nqns: HashMap<String, Span> = HashMap::new();
        let mut ids = IdRegistry::default();
        for table in array_of_tables(ctx, "subsystem", &entry.node, "subsystem") {
            if let Some(s) = subsystem(ctx, &table, &mut nqns, &mut ids, &listeners) {
                subsystems.push(s);
            }
        }
    }

    let metrics = match root.get("metrics") {
        None => Some(None),
        Some(entry) => metrics(ctx, &entry.node).map(Some),
    };
    let config = Config {
        target: target?,
        listeners,
        subsystems,
        metrics: metrics?,
    };
    ctx.errors.is_empty().then_some(config)
}

fn target(ctx: &mut Ctx, node: &Node) -> Option<TargetConfig> {
    if !matches!(node.value, Value::Table(_)) {
        type_error(ctx, "target", node, "a table (write [target])");
        return None;
    }
    let t = as_table(ctx, "target".to_owned(), node)?;
    t.check_keys(ctx, TARGET_KEYS);
    let mut cfg = TargetConfig::default();
    let before = ctx.errors.len();

    if let Some(e) = t.get("cores") {
        let path = t.field("cores");
        if let Some(items) = as_array(ctx, &path, &e.node) {
            if items.is_empty() {
                ctx.error(
                    &e.node.span,
                    format!("{path}: at least one core is required"),
                );
            }
            let mut cores = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                let Some(core) = as_int(ctx, &path, item) else {
                    continue;
                };
                let Ok(core) = usize::try_from(core) else {
                    ctx.error(
                        &item.span,
                        format!("{path}: {core} is not a core number (cores are numbered from 0)"),
                    );
                    continue;
                };
                if core >= ctx.cpus {
                    let cpus = ctx.cpus;
                    ctx.error(
                        &item.span,
                        format!(
                            "{path}: core {core} does not exist (this machine has {cpus} CPU{} \
                             online, cores 0 to {})",
                            if cpus == 1 { "" } else { "s" },
                            cpus - 1
                        ),
                    );
                } else if cores.contains(&core) {
                    ctx.error(&item.span, format!("{path}: core {core} is listed twice"));
                } else {
                    cores.push(core);
                }
            }
            cfg.cores = cores;
        }
    }

    if let Some(e) = t.get("idle") {
        let path = t.field("idle");
        match as_str(ctx, &path, &e.node) {
            Some("adaptive") => cfg.idle = IdlePolicy::Adaptive,
            Some("busy") => cfg.idle = IdlePolicy::Busy,
            Some("sleep") => cfg.idle = IdlePolicy::Sleep,
            Some(other) => ctx.error(
                &e.node.span,
                format!(
                    "{path}: unknown idle policy {other:?} (expected \"adaptive\", \"busy\" \
                     or \"sleep\")"
                ),
            ),
            None => {}
        }
    }

    let mut icds_ok = false;
    if let Some(e) = t.get("in_capsule_data_size") {
        let path = t.field("in_capsule_data_size");
        if let Some(v) = size(ctx, &path, &e.node) {
            if v > IN_CAPSULE_DATA_SIZE_MAX {
                ctx.error(
                    &e.node.span,
                    format!("{path}: {v} is larger than the maximum {IN_CAPSULE_DATA_SIZE_MAX}"),
                );
            } else if !v.is_multiple_of(16) {
                ctx.error(&e.node.span, format!("{path}: {v} is not a multiple of 16"));
            } else {
                cfg.in_capsule_data_size = v as u32;
                icds_ok = true;
            }
        }
    } else {
        icds_ok = true;
    }

    let mut mios_ok = false;
    if let Some(e) = t.get("max_io_size") {
        let path = t.field("max_io_size");
        if let Some(v) = size(ctx, &path, &e.node) {
            if !(MAX_IO_SIZE_MIN..=MAX_IO_SIZE_MAX).contains(&v) {
                ctx.error(
                    &e.node.span,
                    format!(
                        "{path}: {v} is out of range (it must be between {MAX_IO_SIZE_MIN} and \
                         {MAX_IO_SIZE_MAX})"
                    ),
                );
            } else if !v.is_power_of_two() {
                ctx.error(&e.node.span, format!("{path}: {v} is not a power of two"));
            } else {
                cfg.max_io_size = v as u32;
                mios_ok = true;
            }
        }
    } else {
        mios_ok = true;
    }

    if icds_ok && mios_ok && cfg.in_capsule_data_size > cfg.max_io_size {
        let span = t
            .get("in_capsule_data_size")
            .map_or(t.span.clone(), |e| e.node.span.clone());
        ctx.error(
            &span,
            format!(
                "target.in_capsule_data_size: {} is larger than max_io_size ({})",
                cfg.in_capsule_data_size, cfg.max_io_size
            ),
        );
    }

    if let Some(e) = t.get("max_queue_depth") {
        if let Some(v) = int_in(ctx, &t.field("max_queue_depth"), &e.node, 2, 1024) {
            cfg.max_queue_depth = v;
        }
    }
    if let Some(e) = t.get("max_io_queues") {
        if let Some(v) = int_in(ctx, &t.field("max_io_queues"), &e.node, 1, 128) {
            cfg.max_io_queues = v;
        }
    }
    if let Some(e) = t.get("hdr_digest") {
        if let Some(v) = as_bool(ctx, &t.field("hdr_digest"), &e.node) {
            cfg.hdr_digest = v;
        }
    }
    if let Some(e) = t.get("data_digest") {
        if let Some(v) = as_bool(ctx, &t.field("data_digest"), &e.node) {
            cfg.data_digest = v;
        }
    }
    if let Some(e) = t.get("keep_alive_timeout_ms_max") {
        let path = t.field("keep_alive_timeout_ms_max");
        if let Some(v) = int_in(ctx, &path, &e.node, 1000, 3_600_000) {
            cfg.keep_alive_timeout_ms_max = v;
        }
    }
    if let Some(e) = t.get("control_socket") {
        let path = t.field("control_socket");
        match as_str(ctx, &path, &e.node) {
            Some("") => cfg.control_socket = None,
            Some(p) if p.starts_with('/') => cfg.control_socket = Some(PathBuf::from(p)),
            Some(p) => ctx.error(
                &e.node.span,
                format!("{path}: {p:?} is not an absolute path (\"\" turns the socket off)"),
            ),
            None => {}
        }
    }

    (ctx.errors.len() == before).then_some(cfg)
}

/// `[metrics]`: `listen = "ADDRESS:PORT"`.
fn metrics(ctx: &mut Ctx, node: &Node) -> Option<SocketAddr> {
    if !matches!(node.value, Value::Table(_)) {
        type_error(ctx, "metrics", node, "a table (write [metrics])");
        return None;
    }
    let t = as_table(ctx, "metrics".to_owned(), node)?;
    t.check_keys(ctx, &["listen"]);
    let Some(e) = t.get("listen") else {
        t.missing(ctx, "listen", " (for example \"127.0.0.1:9464\")");
        return None;
    };
    let path = t.field("listen");
    let s = as_str(ctx, &path, &e.node)?;
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            ctx.error(
                &e.node.span,
                format!("{path}: {s:?} is not an address and port (such as \"127.0.0.1:9464\")"),
            );
            None
        }
    }
}

fn listener(
    ctx: &mut Ctx,
    t: &Table,
    seen: &mut Vec<(SocketAddr, Vec<TransportKind>, Span)>,
) -> Option<ListenerConfig> {
    t.check_keys(ctx, LISTENER_KEYS);

    let transport = match t.get("transport") {
        None => {
            t.missing(ctx, "transport", " (\"tcp\" or \"rdma\")");
            None
        }
        Some(e) => {
            let path = t.field("transport");
            match as_str(ctx, &path, &e.node) {
                Some("tcp") => Some(TransportKind::Tcp),
                Some("rdma") => Some(TransportKind::Rdma),
                Some(other) => {
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{path}: unknown transport {other:?} (expected \"tcp\" or \"rdma\")"
                        ),
                    );
                    None
                }
                None => None,
            }
        }
    };

    let address = match t.get("address") {
        None => {
            t.missing(ctx, "address", " (an IPv4 or IPv6 address)");
            None
        }
        Some(e) => {
            let path = t.field("address");
            as_str(ctx, &path, &e.node).and_then(|s| {
                let bare = s
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .unwrap_or(s);
                match bare.parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        ctx.error(
                            &e.node.span,
                            format!(
                                "{path}: {s:?} is not an IPv4 or IPv6 address (host names are \
                                 not resolved)"
                            ),
                        );
                        None
                    }
                }
            })
        }
    };

    let port = match t.get("port") {
        // RDMA listeners default to the NVMe over Fabrics port.
        None if transport == Some(TransportKind::Rdma) => Some(4420),
        None => {
            t.missing(ctx, "port", " (4420 is the NVMe/TCP port, 8009 discovery)");
            None
        }
        Some(e) => int_in::<u16>(ctx, &t.field("port"), &e.node, 1, 65535),
    };

    let fallback = match t.get("fallback") {
        None => None,
        Some(e) => {
            let path = t.field("fallback");
            match as_str(ctx, &path, &e.node) {
                Some("tcp") if transport == Some(TransportKind::Rdma) => Some(TransportKind::Tcp),
                Some("tcp") => {
                    ctx.error(
                        &e.node.span,
                        format!("{path}: only an RDMA listener can fall back to TCP"),
                    );
                    None
                }
                Some(other) => {
                    ctx.error(
                        &e.node.span,
                        format!("{path}: unknown fallback {other:?} (expected \"tcp\")"),
                    );
                    None
                }
                None => None,
            }
        }
    };

    let discovery = match t.get("discovery") {
        None => Some(false),
        Some(e) => as_bool(ctx, &t.field("discovery"), &e.node),
    };
    let name = match t.get("name") {
        None => Some(None),
        Some(e) => {
            let path = t.field("name");
            as_str(ctx, &path, &e.node).and_then(|n| match listener_name_problem(n) {
                Some(why) => {
                    ctx.error(&e.node.span, format!("{path}: {n:?} {why}"));
                    None
                }
                None => Some(Some(n.to_owned())),
            })
        }
    };

    let (transport, ip, port) = (transport?, address?, port?);
    let (discovery, name) = (discovery?, name?);
    let addr = SocketAddr::new(ip, port);
    // TCP and RDMA have separate port spaces: a TCP and an RDMA listener may share an
    // address and port (hosts then have two paths), unless the RDMA one may become TCP.
    let kinds = |t: TransportKind, f: Option<TransportKind>| {
        [Some(t), f].into_iter().flatten().collect::<Vec<_>>()
    };
    let mine = kinds(transport, fallback);
    for (other, other_kinds, span) in seen.iter() {
        let shared = mine.iter().any(|k| other_kinds.contains(k));
        let overlaps = shared
            && other.port() == port
            && other.is_ipv4() == addr.is_ipv4()
            && (other.ip() == ip || other.ip().is_unspecified() || ip.is_unspecified());
        if overlaps {
            let line = ctx.line(span);
            let message = if other_kinds[0] != transport {
                format!(
                    "{}: {addr} overlaps {other} (line {line}) once the RDMA one falls back \
                     to TCP",
                    t.path
                )
            } else if *other == addr {
                format!(
                    "{}: duplicate listener {addr} (first defined at line {line})",
                    t.path
                )
            } else {
                format!(
                    "{}: listener {addr} overlaps listener {other} (defined at line {line})",
                    t.path
                )
            };
            ctx.error(&t.span, message);
            return None;
        }
    }
    seen.push((addr, mine, t.span.clone()));
    Some(ListenerConfig {
        name: name.unwrap_or_else(|| ListenerConfig::default_name(transport, addr)),
        transport,
        addr,
        fallback,
        discovery,
    })
}

/// Why `n` cannot name a listener, if it cannot.
pub(crate) fn listener_name_problem(n: &str) -> Option<String> {
    if n.is_empty() {
        Some("is empty".into())
    } else if n.len() > LISTENER_NAME_MAX_LEN {
        Some(format!(
            "is {} characters long; the maximum is {LISTENER_NAME_MAX_LEN}",
            n.len()
        ))
    } else if !n.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Some("has a space or a character that is not printable ASCII".into())
    } else {
        None
    }
}

/// Every namespace identifier given or derived so far, to find duplicates
/// across the whole config (hosts and multipath rely on them being unique).
#[derive(Default)]
struct IdRegistry {
    seen: HashMap<(&'static str, Vec<u8>), (String, Span)>,
}

impl IdRegistry {
    /// Records `bytes` as the `kind` of namespace `owner`; reports a clash at `span`.
    fn claim(&mut self, ctx: &mut Ctx, kind: &'static str, bytes: &[u8], owner: &str, span: &Span) {
        match self.seen.get(&(kind, bytes.to_vec())) {
            Some((first, first_span)) => {
                let text = match bytes.len() {
                    16 if kind == "uuid" => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(bytes);
                        format_uuid(&b)
                    }
                    _ => hex_lower(bytes),
                };
                let line = ctx.line(first_span);
                ctx.error(
                    span,
                    format!(
                        "{owner}.{kind}: {kind} {text} is already used by {first} (line {line})"
                    ),
                );
            }
            None => {
                self.seen
                    .insert((kind, bytes.to_vec()), (owner.to_owned(), span.clone()));
            }
        }
    }
}

fn printable_ascii(ctx: &mut Ctx, path: &str, node: &Node, max: usize) -> Option<String> {
    let s = as_str(ctx, path, node)?;
    if s.is_empty() {
        ctx.error(&node.span, format!("{path}: must not be empty"));
        None
    } else if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        ctx.error(
            &node.span,
            format!("{path}: {s:?} contains a character that is not printable ASCII"),
        );
        None
    } else if s.len() > max {
        ctx.error(
            &node.span,
            format!(
                "{path}: {s:?} is {} characters long; the maximum is {max}",
                s.len()
            ),
        );
        None
    } else {
        Some(s.to_owned())
    }
}

fn subsystem(
    ctx: &mut Ctx,
    t: &Table,
    nqns: &mut HashMap<String, Span>,
    ids: &mut IdRegistry,
    all_listeners: &[ListenerConfig],
) -> Option<SubsystemConfig> {
    t.check_keys(ctx, SUBSYSTEM_KEYS);

    let nqn = match t.get("nqn") {
        None => {
            t.missing(ctx, "nqn", "");
            None
        }
        Some(e) => {
            let path = t.field("nqn");
            as_str(ctx, &path, &e.node).and_then(|nqn| {
                if is_discovery_nqn(nqn) {
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{path}: {nqn:?} is the discovery subsystem's NQN and cannot name \
                             a subsystem"
                        ),
                    );
                    return None;
                }
                if let Err(why) = validate_nqn(nqn) {
                    ctx.error(
                        &e.node.span,
                        format!("{path}: {nqn:?} is not a valid NQN: {why}"),
                    );
                    return None;
                }
                if let Some(first) = nqns.get(nqn) {
                    let line = ctx.line(first);
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{path}: duplicate subsystem nqn {nqn:?} (first defined at line {line})"
                        ),
                    );
                    return None;
                }
                nqns.insert(nqn.to_owned(), e.node.span.clone());
                Some(nqn.to_owned())
            })
        }
    };

    let serial = match t.get("serial") {
        Some(e) => printable_ascii(ctx, &t.field("serial"), &e.node, SERIAL_MAX_LEN),
        None => nqn.as_deref().map(derived_serial),
    };
    let model = match t.get("model") {
        Some(e) => printable_ascii(ctx, &t.field("model"), &e.node, MODEL_MAX_LEN),
        None => Some(super::DEFAULT_MODEL.to_owned()),
    };
    let allow_any_host = match t.get("allow_any_host") {
        Some(e) => as_bool(ctx, &t.field("allow_any_host"), &e.node),
        None => Some(false),
    };

    let mut hosts = Vec::new();
    if let Some(e) = t.get("hosts") {
        let path = t.field("hosts");
        if let Some(items) = as_array(ctx, &path, &e.node) {
            if allow_any_host == Some(true) && !items.is_empty() {
                ctx.error(
                    &e.key_span,
                    format!("{path}: hosts has no effect when allow_any_host = true"),
                );
            }
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                let Some(host) = as_str(ctx, &path, item) else {
                    continue;
                };
                if let Err(why) = validate_nqn(host) {
                    ctx.error(
                        &item.span,
                        format!("{path}: {host:?} is not a valid host NQN: {why}"),
                    );
                } else if hosts.iter().any(|h| h == host) {
                    ctx.error(&item.span, format!("{path}: host {host:?} is listed twice"));
                } else {
                    hosts.push(host.to_owned());
                }
            }
        }
    }

    let listeners = match t.get("listeners") {
        None => {
            if !all_listeners.is_empty() && all_listeners.iter().all(|l| l.discovery) {
                ctx.error(
                    &t.span,
                    format!(
                        "{}: served on no listener: every listener is a discovery port \
                         (discovery = true); add one that is not, or name one in listeners",
                        t.path
                    ),
                );
            }
            None
        }
        Some(e) => {
            let path = t.field("listeners");
            let mut names: Vec<String> = Vec::new();
            if let Some(items) = as_array(ctx, &path, &e.node) {
                if items.is_empty() {
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{path}: empty, so the subsystem would be served nowhere (leave \
                             listeners out to serve it on every listener that is not discovery)"
                        ),
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    let Some(n) = as_str(ctx, &path, item) else {
                        continue;
                    };
                    match all_listeners.iter().find(|l| l.name == n) {
                        None => {
                            let known: Vec<&str> =
                                all_listeners.iter().map(|l| l.name.as_str()).collect();
                            ctx.error(
                                &item.span,
                                format!(
                                    "{path}: no listener is named {n:?} (listeners: {})",
                                    known.join(", ")
                                ),
                            );
                        }
                        Some(l) if l.discovery => ctx.error(
                            &item.span,
                            format!(
                                "{path}: listener {n:?} is a discovery port (discovery = true) \
                                 and serves no NVM subsystem"
                            ),
                        ),
                        Some(_) if names.iter().any(|x| x == n) => {
                            ctx.error(&item.span, format!("{path}: {n:?} is listed twice"))
                        }
                        Some(_) => names.push(n.to_owned()),
                    }
                }
            }
            Some(names)
        }
    };

    let mut drafts = Vec::new();
    if let Some(e) = t.get("namespace") {
        let path = t.field("namespace");
        for table in array_of_tables(ctx, &path, &e.node, "subsystem.namespace") {
            drafts.push(namespace(ctx, table));
        }
    }
    let namespaces = assign_nsids(ctx, nqn.as_deref(), drafts, ids);

    Some(SubsystemConfig {
        nqn: nqn?,
        serial: serial?,
        model: model?,
        allow_any_host: allow_any_host?,
        hosts,
        listeners,
        namespaces,
    })
}

/// A namespace table after its own checks, before NSIDs are assigned.
struct NsDraft<'n> {
    table: Table<'n>,
    /// The NSID given in the config, valid or not.
    nsid: Option<(Option<u32>, Span)>,
    backend: Option<BackendConfig>,
    block_size: Option<u32>,
    uuid: Option<([u8; 16], Span)>,
    nguid: Option<([u8; 16], Span)>,
    eui64: Option<([u8; 8], Span)>,
    ok: bool,
}

/// `backend = "nvme"`: `pci` (a PCI address, or "sim"), `device_nsid`
/// (default 1); a size only for "sim" (a device has its own).
fn nvme_backend(
    ctx: &mut Ctx,
    t: &Table,
    size_value: Option<Option<u64>>,
    path_entry: Option<&Entry>,
    direct_entry: Option<&Entry>,
) -> Option<BackendConfig> {
    if let Some(e) = direct_entry {
        ctx.error(
            &e.key_span,
            format!(
                "{}: direct is not used by the nvme backend",
                t.field("direct")
            ),
        );
    }
    if let Some(e) = path_entry {
        return nvme_passthru(ctx, t, size_value, e);
    }
    let pci = match t.get("pci") {
        None => {
            t.missing(
                ctx,
                "pci",
                " (the nvme backend needs the controller's PCI address, e.g. \"0000:01:00.0\", \
                 or path, the namespace's character device the kernel keeps, e.g. \
                 \"/dev/ng0n1\")",
            );
            None
        }
        Some(e) => {
            let field = t.field("pci");
            match as_str(ctx, &field, &e.node) {
                Some(p) if p == "sim" || is_pci_address(p) => Some(p.to_string()),
                Some(p) => {
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{field}: {p:?} is not a PCI address (DDDD:BB:DD.F, e.g. \
                             \"0000:01:00.0\", or \"sim\" for a simulated controller)"
                        ),
                    );
                    None
                }
                None => None,
            }
        }
    };
    let nsid = match t.get("device_nsid") {
        None => Some(1),
        Some(e) => int_in::<u32>(
            ctx,
            &t.field("device_nsid"),
            &e.node,
            1,
            u32::MAX as i64 - 1,
        ),
    };
    let size = match (&pci, size_value) {
        (Some(p), None) if p == "sim" => {
            t.missing(ctx, "size", " (a simulated controller needs a size)");
            return None;
        }
        (Some(p), Some(Some(_))) if p != "sim" => {
            if let Some(e) = t.get("size") {
                ctx.error(
                    &e.key_span,
                    format!(
                        "{}: a device's namespace has its own size; leave size out",
                        t.field("size")
                    ),
                );
            }
            return None;
        }
        (_, Some(None)) => return None,
        (_, v) => v.flatten(),
    };
    Some(BackendConfig::Nvme {
        pci: pci?,
        nsid: nsid?,
        size,
    })
}

/// `backend = "nvme"` with `path`: a namespace the kernel keeps, driven
/// through its character device with passthrough commands.
fn nvme_passthru(
    ctx: &mut Ctx,
    t: &Table,
    size_value: Option<Option<u64>>,
    path_entry: &Entry,
) -> Option<BackendConfig> {
    for (key, why) in [
        (
            "pci",
            "a controller of ours (pci) or a namespace of the kernel's (path), not both",
        ),
        (
            "device_nsid",
            "the character device is one namespace already",
        ),
        ("size", "a device's namespace has its own size"),
    ] {
        if let Some(e) = t.get(key) {
            ctx.error(
                &e.key_span,
                format!("{}: {why}; leave {key} out", t.field(key)),
            );
        }
    }
    if matches!(size_value, Some(None)) {
        return None;
    }
    let field = t.field("path");
    let p = as_str(ctx, &field, &path_entry.node)?;
    let name = std::path::Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_ng = name
        .strip_prefix("ng")
        .and_then(|r| r.split_once('n'))
        .is_some_and(|(c, n)| {
            !c.is_empty()
                && !n.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && n.bytes().all(|b| b.is_ascii_digit())
        });
    if !is_ng {
        ctx.error(
            &path_entry.node.span,
            format!(
                "{field}: {p:?} is not an NVMe namespace character device (/dev/ngXnY, e.g. \
                 \"/dev/ng0n1\"; the block device /dev/nvmeXnY goes to the file backend)"
            ),
        );
        return None;
    }
    Some(BackendConfig::NvmePassthru {
        path: PathBuf::from(p),
    })
}

/// DDDD:BB:DD.F in hex.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && [0..4, 5..7, 8..10, 11..12]
            .into_iter()
            .all(|r| b[r].iter().all(u8::is_ascii_hexdigit))
}

fn namespace<'n>(ctx: &mut Ctx, t: Table<'n>) -> NsDraft<'n> {
    let before = ctx.errors.len();
    t.check_keys(ctx, NAMESPACE_KEYS);

    let nsid = t.get("nsid").map(|e| {
        let path = t.field("nsid");
        (
            int_in::<u32>(ctx, &path, &e.node, 1, i64::from(MAX_NSID)),
            e.node.span.clone(),
        )
    });

    let block_size = match t.get("block_size") {
        None => Some(512),
        Some(e) => {
            let path = t.field("block_size");
            match as_int(ctx, &path, &e.node) {
                Some(v @ (512 | 4096)) => Some(v as u32),
                Some(v) => {
                    ctx.error(
                        &e.node.span,
                        format!("{path}: {v} is not a supported block size (512 or 4096)"),
                    );
                    None
                }
                None => None,
            }
        }
    };

    let kind = match t.get("backend") {
        None => {
            t.missing(
                ctx,
                "backend",
                " (\"ram\", \"null\", \"file\", \"nvme\" or \"fault\")",
            );
            None
        }
        Some(e) => {
            let path = t.field("backend");
            match as_str(ctx, &path, &e.node) {
                Some(k @ ("ram" | "null" | "file" | "nvme" | "fault")) => Some(k),
                Some(other) => {
                    ctx.error(
                        &e.node.span,
                        format!(
                            "{path}: unknown backend {other:?} (expected \"ram\", \"null\", \
                             \"file\", \"nvme\" or \"fault\")"
                        ),
                    );
                    None
                }
                None => None,
            }
        }
    };

    // size: Some(Some(v)) valid, Some(None) present but invalid, None absent.
    let size_value = t.get("size").map(|e| {
        let path = t.field("size");
        let v = size(ctx, &path, &e.node)?;
        if v == 0 {
            ctx.error(&e.node.span, format!("{path}: the size must not be zero"));
            return None;
        }
        if let Some(bs) = block_size {
            if !v.is_multiple_of(u64::from(bs)) {
                ctx.error(
                    &e.node.span,
                    format!("{path}: {v} bytes is not a multiple of the block size {bs}"),
                );
                return None;
            }
        }
        Some(v)
    });

    let path_entry = t.get("path");
    let direct_entry = t.get("direct");
    if kind != Some("fault") {
        if let Some(e) = t.get("fault") {
            ctx.error(
                &e.key_span,
                format!("{}: only the fault backend takes faults", t.field("fault")),
            );
        }
    }
    // Keys only the nvme backend takes.
    if kind != Some("nvme") {
        for key in ["pci", "device_nsid"] {
            if let Some(e) = t.get(key) {
                ctx.error(
                    &e.key_span,
                    format!("{}: {key} is only valid for the nvme backend", t.field(key)),
                );
            }
        }
    }
    let backend = match kind {
        None => {
            // Still report type errors in the backend-specific fields.
            if let Some(e) = path_entry {
                as_str(ctx, &t.field("path"), &e.node);
            }
            if let Some(e) = direct_entry {
                as_bool(ctx, &t.field("direct"), &e.node);
            }
            None
        }
        Some("nvme") => nvme_backend(ctx, &t, size_value, path_entry, direct_entry),
        Some(kind @ ("ram" | "null" | "fault")) => {
            for (key, entry) in [("path", path_entry), ("direct", direct_entry)] {
                if let Some(e) = entry {
                    ctx.error(
                        &e.key_span,
                        format!(
                            "{}: {key} is only valid for the file backend, not {kind:?}",
                            t.field(key)
                        ),
                    );
                }
            }
            match size_value {
                None => {
                    t.missing(ctx, "size", &format!(" (the {kind} backend needs a size)"));
                    None
                }
                Some(None) => None,
                Some(Some(size)) if kind == "ram" => Some(BackendConfig::Ram { size }),
                Some(Some(size)) if kind == "fault" => fault_rules(ctx, &t, block_size, size)
                    .map(|faults| BackendConfig::Fault { size, faults }),
                Some(Some(size)) => Some(BackendConfig::Null { size }),
            }
        }
        Some(_) => {
            let path = match path_entry {
                None => {
                    t.missing(ctx, "path", " (the file backend needs a path)");
                    None
                }
                Some(e) => {
                    let field = t.field("path");
                    match as_str(ctx, &field, &e.node) {
                        Some("") => {
                            ctx.error(&e.node.span, format!("{field}: must not be empty"));
                            None
                        }
                        Some(p) => Some(PathBuf::from(p)),
                        None => None,
                    }
                }
            };
            let direct = match direct_entry {
                None => Some(false),
                Some(e) => as_bool(ctx, &t.field("direct"), &e.node),
            };
            let size = match size_value {
                None => Some(None),
                Some(None) => None,
                Some(Some(v)) => Some(Some(v)),
            };
            match (path, size, direct) {
                (Some(path), Some(size), Some(direct)) => {
                    Some(BackendConfig::File { path, size, direct })
                }
                _ => None,
            }
        }
    };

    fn id<const N: usize>(
        ctx: &mut Ctx,
        t: &Table,
        key: &str,
        parse: fn(&str) -> Result<[u8; N], String>,
    ) -> Option<([u8; N], Span)> {
        let e = t.get(key)?;
        let path = t.field(key);
        let s = as_str(ctx, &path, &e.node)?;
        match parse(s) {
            Ok(bytes) if bytes.iter().all(|b| *b == 0) => {
                ctx.error(
                    &e.node.span,
                    format!("{path}: must not be all zeros (that means \"no {key}\" to a host)"),
                );
                None
            }
            Ok(bytes) => Some((bytes, e.node.span.clone())),
            Err(why) => {
                ctx.error(&e.node.span, format!("{path}: {why}"));
                None
            }
        }
    }
    let uuid = id(ctx, &t, "uuid", parse_uuid);
    let nguid = id(ctx, &t, "nguid", parse_nguid);
    let eui64 = id(ctx, &t, "eui64", parse_eui64);

    NsDraft {
        table: t,
        nsid,
        backend,
        block_size,
        uuid,
        nguid,
        eui64,
        ok: ctx.errors.len() == before,
    }
}

/// Gives NSIDs to the namespaces that have none (the lowest free ones, from 1),
/// reports duplicates, and derives the missing identifiers.
fn assign_nsids(
    ctx: &mut Ctx,
    nqn: Option<&str>,
    drafts: Vec<NsDraft>,
    ids: &mut IdRegistry,
) -> Vec<NamespaceConfig> {
    let mut used: HashMap<u32, Span> = HashMap::new();
    let mut nsids: Vec<Option<u32>> = Vec::with_capacity(drafts.len());
    for d in &drafts {
        let nsid = match &d.nsid {
            Some((Some(nsid), span)) => {
                if let Some(first) = used.get(nsid) {
                    let line = ctx.line(first);
                    ctx.error(
                        span,
                        format!(
                            "{}: duplicate nsid {nsid} in this subsystem (first defined at line \
                             {line})",
                            d.table.field("nsid")
                        ),
                    );
                    None
                } else {
                    used.insert(*nsid, span.clone());
                    Some(*nsid)
                }
            }
            _ => None,
        };
        nsids.push(nsid);
    }
    let taken: BTreeSet<u32> = used.keys().copied().collect();
    let mut free = (1..=MAX_NSID).filter(|n| !taken.contains(n));
    for (d, nsid) in drafts.iter().zip(nsids.iter_mut()) {
        if d.nsid.is_none() {
            *nsid = free.next();
            if nsid.is_none() {
                ctx.error(
                    &d.table.span,
                    format!(
                        "{}: no free nsid is left (the maximum is {MAX_NSID})",
                        d.table.path
                    ),
                );
            }
        }
    }

    let mut out = Vec::with_capacity(drafts.len());
    for (d, nsid) in drafts.into_iter().zip(nsids) {
        let (Some(nsid), Some(nqn)) = (nsid, nqn) else {
            continue;
        };
        let (uuid, nguid, eui64) = derived_namespace_ids(nqn, nsid);
        let header = d.table.span.clone();
        let uuid = d.uuid.unwrap_or((uuid, header.clone()));
        let nguid = d.nguid.unwrap_or((nguid, header.clone()));
        let eui64 = d.eui64.unwrap_or((eui64, header));
        let owner = &d.table.path;
        ids.claim(ctx, "uuid", &uuid.0, owner, &uuid.1);
        ids.claim(ctx, "nguid", &nguid.0, owner, &nguid.1);
        ids.claim(ctx, "eui64", &eui64.0, owner, &eui64.1);
        if let (true, Some(backend), Some(block_size)) = (d.ok, d.backend, d.block_size) {
            out.push(NamespaceConfig {
                nsid,
                backend,
                block_size,
                uuid: uuid.0,
                nguid: nguid.0,
                eui64: eui64.0,
            });
        }
    }
    out
}
