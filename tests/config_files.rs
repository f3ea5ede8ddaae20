//! The example configs in `configs/`: each one parses, `default.toml` is the
//! embedded default, `to_toml` reads back to the same config, and no mangled
//! version of them makes the parser panic.

use std::net::SocketAddr;
use std::panic;
use std::path::{Path, PathBuf};

use nvmf_target::config::{
    derived_namespace_ids, BackendConfig, Config, ConfigError, FaultError, FaultOp, FaultRule,
    IdlePolicy, DISCOVERY_NQN,
};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

/// Every `*.toml` in configs/, sorted, with its text.
fn example_configs() -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .expect("configs/ exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable config");
            (p, text)
        })
        .collect()
}

fn load(name: &str) -> Config {
    let path = configs_dir().join(name);
    match Config::load(&path) {
        Ok(c) => c,
        Err(errors) => panic!("{name}:\n{}", render(&errors)),
    }
}

fn render(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_example_config_parses() {
    let files = example_configs();
    assert!(
        files.len() >= 4,
        "expected the example configs, found {files:?}"
    );
    for (path, _) in &files {
        if let Err(errors) = Config::load(path) {
            panic!("{} does not parse:\n{}", path.display(), render(&errors));
        }
    }
}

#[test]
fn every_example_config_round_trips_through_to_toml() {
    for (path, text) in example_configs() {
        let config = Config::parse(&text, &path.display().to_string()).unwrap();
        let out = config.to_toml();
        match Config::parse(&out, "to_toml") {
            Ok(again) => assert_eq!(again, config, "{}:\n{out}", path.display()),
            Err(errors) => panic!("{}:\n{out}\n{}", path.display(), render(&errors)),
        }
    }
    let default = Config::embedded_default();
    assert_eq!(Config::parse(&default.to_toml(), "x"), Ok(default));
}

#[test]
fn default_toml_is_the_embedded_default() {
    assert_eq!(load("default.toml"), Config::embedded_default());
}

#[test]
fn ram_and_null_example() {
    let c = load("ram-and-null.toml");
    assert_eq!(c.subsystems.len(), 2);
    let ram = &c.subsystems[0];
    assert!(!ram.allow_any_host);
    assert_eq!(ram.hosts.len(), 1);
    assert_eq!(ram.namespaces.len(), 1);
    assert_eq!(ram.namespaces[0].block_size, 4096);
    assert!(matches!(
        ram.namespaces[0].backend,
        BackendConfig::Ram { .. }
    ));
    let null = &c.subsystems[1];
    assert!(null.allow_any_host);
    assert_eq!(null.namespaces[0].nsid, 1);
    assert!(matches!(
        null.namespaces[0].backend,
        BackendConfig::Null { size } if size == 1 << 40
    ));
    // Different subsystems, same nsid: different identities.
    assert_ne!(ram.namespaces[0].uuid, null.namespaces[0].uuid);
    assert_eq!(
        null.namespaces[0].uuid,
        derived_namespace_ids(&null.nqn, 1).0
    );
    assert!(c.subsystems.iter().all(|s| s.nqn != DISCOVERY_NQN));
}

#[test]
fn file_example() {
    let c = load("file.toml");
    let ns = &c.subsystems[0].namespaces[0];
    assert_eq!(
        ns.backend,
        BackendConfig::File {
            path: "/var/lib/nvmf-target/disk0.img".into(),
            size: Some(10 << 30),
            direct: false,
        }
    );
    assert_eq!(c.subsystems[0].namespaces.len(), 1);
}

#[test]
fn multi_core_example() {
    let c = load("multi-core.toml");
    assert_eq!(c.target.cores, vec![0, 1]);
    assert_eq!(c.target.idle, IdlePolicy::Busy);
    let addrs: Vec<SocketAddr> = c.listeners.iter().map(|l| l.addr).collect();
    assert_eq!(
        addrs,
        vec![
            "127.0.0.1:4420".parse::<SocketAddr>().unwrap(),
            "[::1]:4420".parse().unwrap()
        ]
    );
}

/// xorshift64*: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&str] = &[
    "[[subsystem]]\n",
    "[[subsystem.namespace]]\n",
    "[[listener]]\n",
    "[target]\n",
    "[subsystem]\n",
    "[subsystem.namespace]\n",
    "nsid = 0\n",
    "nsid = 1\n",
    "nsid = 1025\n",
    "size = \"-1\"\n",
    "size = \"16777216TiB\"\n",
    "size = 1.5\n",
    "block_size = 1000\n",
    "block_size = 4096\n",
    "port = 70000\n",
    "cores = [99999999999]\n",
    "cores = [-9223372036854775808]\n",
    "cores = []\n",
    "backend = \"file\"\n",
    "backend = \"ram\"\n",
    "path = \"/x\"\n",
    "direct = true\n",
    "allow_any_host = true\n",
    "hosts = [\"nqn.2014-08.org.nvmexpress:uuid:x\", 1]\n",
    "uuid = \"00000000-0000-0000-0000-000000000000\"\n",
    "eui64 = \"0123456789abcdef\"\n",
    "nqn = \"nqn.2014-08.org.nvmexpress.discovery\"\n",
    "nqn = \"\u{e9}\"\n",
    "transport = \"rdma\"\n",
    "address = \"::\"\n",
    "max_io_size = \"8MiB\"\n",
    "in_capsule_data_size = 131088\n",
    "x.y.z = 1\n",
    "a = { b = [ { c = 1 } ] }\n",
    "listener = 5\n",
    "9223372036854775807",
    "-9223372036854775808",
    "1e400",
    "nan",
    "-inf",
    "1979-05-27T07:32:00Z",
    "\"\"\"",
    "'''",
    "= = =",
    "[[[[",
    "]]",
    "{",
    "}",
    ",",
    "\\u0000",
    "\u{0}",
    "\r\n",
    "\n\n",
    "# comment\n",
    "\u{1F600}",
    "\"$__serde_spanned_private_start\" = 1\n",
    "\"$__toml_private_datetime\" = \"x\"\n",
];

const CHARS: &[u8] = b"[]{}=\".,#\n \t0123456789abcdefxyz-_:'\\+";

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        match rng.below(7) {
            0 => {
                if len > 0 {
                    let i = rng.below(len);
                    bytes[i] = CHARS[rng.below(CHARS.len())];
                }
            }
            1 => {
                let start = rng.below(len + 1);
                let end = (start + 1 + rng.below(20)).min(len);
                bytes.drain(start..end);
            }
            2 | 3 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            4 => {
                // Duplicate a line somewhere else.
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let line = lines[rng.below(lines.len())].to_vec();
                let at = rng.below(len + 1);
                bytes.splice(at..at, line.into_iter().chain([b'\n']));
            }
            5 => {
                // Swap two lines.
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|b| *b == b'\n').map(|l| l.to_vec()).collect();
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(a, b);
                bytes = lines.join(&b'\n');
            }
            _ => {
                let at = rng.below(len + 1);
                bytes.truncate(at);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses `text`; fails the test (showing the input) on a panic, on errors
/// outside the text, or on a config that does not survive `to_toml`.
fn check(text: &str) -> bool {
    let result = panic::catch_unwind(|| Config::parse(text, "fuzz.toml"));
    let Ok(result) = result else {
        panic!("Config::parse panicked on:\n{text}");
    };
    match result {
        Ok(config) => {
            let out = config.to_toml();
            assert_eq!(
                Config::parse(&out, "again.toml").as_ref(),
                Ok(&config),
                "to_toml did not round-trip for input:\n{text}\noutput:\n{out}"
            );
            true
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "no errors for:\n{text}");
            let line_count = text.split('\n').count();
            for e in &errors {
                assert!(
                    e.line >= 1 && e.line <= line_count && e.col >= 1,
                    "{e} outside of:\n{text}"
                );
                let line = text.split('\n').nth(e.line - 1).unwrap_or("");
                assert!(e.col <= line.chars().count() + 1, "{e} outside of:\n{text}");
                assert!(!e.message.is_empty() && !e.message.contains('\n'), "{e}");
                assert!(e.to_string().starts_with("fuzz.toml:"), "{e}");
            }
            assert!(
                errors
                    .windows(2)
                    .all(|w| (w[0].line, w[0].col) <= (w[1].line, w[1].col)),
                "errors not sorted: {errors:?}"
            );
            false
        }
    }
}

#[test]
fn mangled_configs_never_panic() {
    let mut seeds: Vec<String> = example_configs().into_iter().map(|(_, t)| t).collect();
    seeds.push(Config::embedded_default().to_toml());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..600 {
        let seed = &seeds[round % seeds.len()];
        let text = mutate(&mut rng, seed);
        if check(&text) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    // Random junk from the token list alone.
    for _ in 0..200 {
        let mut text = String::new();
        for _ in 0..rng.below(30) {
            text.push_str(TOKENS[rng.below(TOKENS.len())]);
        }
        if check(&text) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    // Both outcomes must have been exercised.
    assert!(
        accepted > 10 && rejected > 100,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn every_single_line_deletion_is_handled() {
    for (_, text) in example_configs() {
        let lines: Vec<&str> = text.lines().collect();
        for skip in 0..lines.len() {
            let mangled: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect();
            check(&mangled.join("\n"));
        }
    }
}

#[test]
fn deeply_nested_values_are_rejected_without_crashing() {
    let listener = "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n";
    for depth in [10, 60, 100, 10_000] {
        let arrays = format!("{listener}x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let tables = format!(
            "{listener}x = {}1{}\n",
            "{ a = ".repeat(depth),
            " }".repeat(depth)
        );
        let dotted = format!("{listener}{} = 1\n", vec!["a"; depth].join("."));
        for text in [arrays, tables, dotted] {
            let errors = Config::parse(&text, "deep.toml").unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].line, 5, "{}", errors[0]);
        }
    }
}

#[test]
fn fault_injection_example() {
    let c = load("fault-injection.toml");
    let ns = &c.subsystems[0].namespaces[0];
    let BackendConfig::Fault { size, faults } = &ns.backend else {
        panic!("not a fault namespace: {:?}", ns.backend);
    };
    assert_eq!(*size, 64 << 20);
    assert_eq!(faults.len(), 4);
    assert_eq!(
        faults[0],
        FaultRule {
            op: FaultOp::Read,
            lba: 2048,
            blocks: Some(8),
            error: Some(FaultError::Media),
            delay_ms: 0,
            every: 1
        }
    );
    assert_eq!((faults[2].error, faults[2].delay_ms), (None, 3000));
    assert_eq!(
        (faults[3].op, faults[3].blocks, faults[3].every),
        (FaultOp::Flush, None, 10)
    );
}
