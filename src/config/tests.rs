use super::*;

const FILE: &str = "test.toml";

/// Parses as on a machine with 2 online CPUs.
fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::parse_with_cpus(text, FILE, 2)
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(errors) => panic!("unexpected errors:\n{}", render(&errors)),
    }
}

fn render(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The errors of `text`, one `file:line:col: message` string each.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("expected errors, parsed {c:?}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn lines(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

const LISTENER: [&str; 4] = [
    "[[listener]]",
    "transport = \"tcp\"",
    "address = \"127.0.0.1\"",
    "port = 4420",
];

/// LISTENER (lines 1-4), then `rest` from line 5 on.
fn with_listener(rest: &[&str]) -> String {
    let mut all: Vec<&str> = LISTENER.to_vec();
    all.extend_from_slice(rest);
    lines(&all)
}

#[test]
fn minimal_config_gets_all_defaults() {
    let c = ok(&with_listener(&[]));
    assert_eq!(c.target, TargetConfig::default());
    assert_eq!(c.target.cores, vec![0]);
    assert_eq!(c.target.idle, IdlePolicy::Adaptive);
    assert_eq!(c.target.in_capsule_data_size, 8192);
    assert_eq!(c.target.max_io_size, 131072);
    assert_eq!(c.target.max_queue_depth, 128);
    assert_eq!(c.target.max_io_queues, 8);
    assert!(c.target.hdr_digest && c.target.data_digest);
    assert_eq!(c.target.keep_alive_timeout_ms_max, 120_000);
    assert_eq!(
        c.listeners,
        vec![ListenerConfig::new(
            TransportKind::Tcp,
            "127.0.0.1:4420".parse().unwrap(),
            false
        )]
    );
    assert!(c.subsystems.is_empty());
}

#[test]
fn full_config_is_read_field_by_field() {
    let text = with_listener(&[
        "[target]",
        "cores = [1, 0]",
        "idle = \"busy\"",
        "in_capsule_data_size = \"4KiB\"",
        "max_io_size = 1048576",
        "max_queue_depth = 1024",
        "max_io_queues = 128",
        "hdr_digest = false",
        "data_digest = false",
        "keep_alive_timeout_ms_max = 1000",
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"::1\"",
        "port = 8009",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "serial = \"SN 1\"",
        "model = \"Model X\"",
        "hosts = [\"nqn.2014-08.org.nvmexpress:uuid:2f9e7c1a-5b3d-4e8f-9a6c-0d1b2c3e4f50\"]",
        "[[subsystem.namespace]]",
        "nsid = 7",
        "backend = \"file\"",
        "path = \"/dev/sdz\"",
        "direct = true",
        "uuid = \"6C1A5AB8-0c4c-4a5e-9b6f-3f2d1e0c9a7b\"",
        "nguid = \"000102030405060708090a0b0c0d0e0f\"",
        "eui64 = \"0011223344556677\"",
        "[[subsystem.namespace]]",
        "backend = \"null\"",
        "size = 4096",
        "block_size = 4096",
    ]);
    let c = ok(&text);
    let t = &c.target;
    assert_eq!(t.cores, vec![1, 0]);
    assert_eq!(t.idle, IdlePolicy::Busy);
    assert_eq!(t.in_capsule_data_size, 4096);
    assert_eq!(t.max_io_size, 1 << 20);
    assert_eq!(t.max_queue_depth, 1024);
    assert_eq!(t.max_io_queues, 128);
    assert!(!t.hdr_digest && !t.data_digest);
    assert_eq!(t.keep_alive_timeout_ms_max, 1000);
    assert_eq!(c.listeners[1].addr, "[::1]:8009".parse().unwrap());
    let s = &c.subsystems[0];
    assert_eq!(s.serial, "SN 1");
    assert_eq!(s.model, "Model X");
    assert!(!s.allow_any_host);
    assert_eq!(s.hosts.len(), 1);
    let ns = &s.namespaces[0];
    assert_eq!(ns.nsid, 7);
    assert_eq!(
        ns.backend,
        BackendConfig::File {
            path: "/dev/sdz".into(),
            size: None,
            direct: true
        }
    );
    assert_eq!(ns.block_size, 512);
    assert_eq!(
        format_uuid(&ns.uuid),
        "6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b"
    );
    assert_eq!(ns.nguid, core::array::from_fn(|i| i as u8));
    assert_eq!(ns.eui64, [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
    // The second namespace gets the lowest free nsid.
    let ns = &s.namespaces[1];
    assert_eq!(ns.nsid, 1);
    assert_eq!(ns.backend, BackendConfig::Null { size: 4096 });
    assert_eq!(ns.block_size, 4096);
}

#[test]
fn identities_are_derived_when_left_out() {
    let c = ok(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:ram0\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1GiB\"",
    ]));
    let s = &c.subsystems[0];
    assert_eq!(s.serial, derived_serial("nqn.2026-01.io.nvmf-target:ram0"));
    assert_eq!(s.serial.len(), 20);
    assert_eq!(s.model, "nvmf-target");
    let ns = &s.namespaces[0];
    assert_eq!(ns.nsid, 1);
    assert_eq!(ns.backend, BackendConfig::Ram { size: 1 << 30 });
    let (uuid, nguid, eui64) = derived_namespace_ids("nqn.2026-01.io.nvmf-target:ram0", 1);
    assert_eq!((ns.uuid, ns.nguid, ns.eui64), (uuid, nguid, eui64));
    // Parsing again gives the same identities.
    let again = ok(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:ram0\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1GiB\"",
    ]));
    assert_eq!(again, c);
}

#[test]
fn nsids_fill_the_gaps() {
    let c = ok(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"null\"",
        "size = 512",
        "[[subsystem.namespace]]",
        "nsid = 1",
        "backend = \"null\"",
        "size = 512",
        "[[subsystem.namespace]]",
        "backend = \"null\"",
        "size = 512",
        "[[subsystem.namespace]]",
        "nsid = 3",
        "backend = \"null\"",
        "size = 512",
        "[[subsystem.namespace]]",
        "backend = \"null\"",
        "size = 512",
    ]));
    let nsids: Vec<u32> = c.subsystems[0].namespaces.iter().map(|n| n.nsid).collect();
    assert_eq!(nsids, vec![2, 1, 4, 3, 5]);
}

// ---- the mistakes an admin makes, each at its exact position ----

#[test]
fn syntax_error() {
    let text = lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1",
        "port = 4420",
    ]);
    assert_eq!(
        errors(&text),
        vec!["test.toml:3:21: TOML syntax error: invalid basic string"]
    );
    assert_eq!(
        errors("[target\ncores = [0]\n"),
        vec!["test.toml:1:8: TOML syntax error: invalid table header: expected `.`, `]`"]
    );
    assert_eq!(
        errors(&with_listener(&["[[listener]]", "port = 1", "port = 2"])),
        vec!["test.toml:7:1: TOML syntax error: duplicate key `port` in table `listener`"]
    );
}

#[test]
fn unknown_keys() {
    let text = with_listener(&[
        "listen = 1",
        "[target]",
        "core = [0]",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1GiB\"",
        "  blocksize = 4096",
        "colour = \"red\"",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            // A key after [[listener]] belongs to the listener.
            "test.toml:5:1: listener[0]: unknown key \"listen\" (expected \
             one of: name, transport, address, port, fallback, discovery)",
            "test.toml:7:1: target: unknown key \"core\" (did you mean \"cores\"?)",
            "test.toml:14:3: subsystem[0].namespace[0]: unknown key \"blocksize\" \
             (did you mean \"block_size\"?)",
            "test.toml:15:1: subsystem[0].namespace[0]: unknown key \"colour\" (expected one \
             of: nsid, backend, size, block_size, path, direct, pci, device_nsid, uuid, nguid, eui64, fault)",
        ]
    );
    assert_eq!(
        errors(&format!("listeners = 5\n{}", with_listener(&[]))),
        vec!["test.toml:1:1: unknown top-level key \"listeners\" (did you mean \"listener\"?)"]
    );
}

#[test]
fn bad_block_size() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:b\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1GiB\"",
        "block_size = 1000",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:14:14: subsystem[1].namespace[0].block_size: 1000 is not a supported \
             block size (512 or 4096)"
        ]
    );
}

#[test]
fn duplicate_nqn() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:10:7: subsystem[1].nqn: duplicate subsystem nqn \
             \"nqn.2026-01.io.nvmf-target:a\" (first defined at line 6)"
        ]
    );
}

#[test]
fn duplicate_nsid() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "nsid = 2",
        "backend = \"null\"",
        "size = \"1GiB\"",
        "[[subsystem.namespace]]",
        "backend = \"null\"",
        "size = \"1GiB\"",
        "nsid = 2",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:15:8: subsystem[0].namespace[1].nsid: duplicate nsid 2 in this \
             subsystem (first defined at line 9)"
        ]
    );
}

#[test]
fn file_backend_without_path() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "",
        "  [[subsystem.namespace]]",
        "  backend = \"file\"",
        "  size = \"10GiB\"",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:9:3: subsystem[0].namespace[0]: missing required field \"path\" (the \
             file backend needs a path)"
        ]
    );
}

#[test]
fn bad_core() {
    let text = with_listener(&["[target]", "cores = [0, 1, 2, 1, -1]"]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:6:16: target.cores[2]: core 2 does not exist (this machine has 2 CPUs \
             online, cores 0 to 1)",
            "test.toml:6:19: target.cores[3]: core 1 is listed twice",
            "test.toml:6:22: target.cores[4]: -1 is not a core number (cores are numbered \
             from 0)",
        ]
    );
    assert_eq!(
        errors(&with_listener(&["[target]", "cores = []"])),
        vec!["test.toml:6:9: target.cores: at least one core is required"]
    );
}

#[test]
fn bad_core_on_this_machine() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let text = with_listener(&["[target]", &format!("cores = [{cpus}]")]);
    let errors = Config::parse(&text, FILE).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].col), (6, 10));
    assert_eq!(
        errors[0].message,
        format!(
            "target.cores[0]: core {cpus} does not exist (this machine has {cpus} CPU{} \
             online, cores 0 to {})",
            if cpus == 1 { "" } else { "s" },
            cpus - 1
        )
    );
    assert!(Config::parse(&with_listener(&["[target]", "cores = [0]"]), FILE).is_ok());
}

#[test]
fn bad_uuid_nguid_eui64() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1GiB\"",
        "uuid = \"6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7\"",
        "nguid = \"00000000000000000000000000000000\"",
        "eui64 = \"xyz\"",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:11:8: subsystem[0].namespace[0].uuid: \
             \"6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7\" is not a UUID in the form \
             xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
            "test.toml:12:9: subsystem[0].namespace[0].nguid: must not be all zeros (that \
             means \"no nguid\" to a host)",
            "test.toml:13:9: subsystem[0].namespace[0].eui64: \"xyz\" is not an EUI-64 (16 \
             hex digits)",
        ]
    );
}

#[test]
fn duplicate_identities_across_subsystems() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1GiB\"",
        "uuid = \"6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b\"",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:b\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1GiB\"",
        "uuid = \"6C1A5AB8-0C4C-4A5E-9B6F-3F2D1E0C9A7B\"",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:18:8: subsystem[1].namespace[0].uuid: uuid \
             6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b is already used by \
             subsystem[0].namespace[0] (line 11)"
        ]
    );
}

#[test]
fn hosts_with_allow_any_host() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "hosts = [\"nqn.2014-08.org.nvmexpress:uuid:2f9e7c1a-5b3d-4e8f-9a6c-0d1b2c3e4f50\"]",
    ]);
    assert_eq!(
        errors(&text),
        vec!["test.toml:8:1: subsystem[0].hosts: hosts has no effect when allow_any_host = true"]
    );
    // An empty list is harmless.
    ok(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "hosts = []",
    ]));
}

#[test]
fn bad_hosts() {
    let text = with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "hosts = [\"host1\", \"nqn.2026-01.com.example:h\", \"nqn.2026-01.com.example:h\", 5]",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:7:10: subsystem[0].hosts[0]: \"host1\" is not a valid host NQN: it must \
             start with \"nqn.\"",
            "test.toml:7:48: subsystem[0].hosts[2]: host \"nqn.2026-01.com.example:h\" is \
             listed twice",
            "test.toml:7:77: subsystem[0].hosts[3]: expected a string, found the integer 5",
        ]
    );
}

#[test]
fn port_out_of_range_and_wrong_types() {
    let text = lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 65536",
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = \"abc\"",
        "[[listener]]",
        "transport = \"rdma\"",
        "address = \"localhost\"",
        "port = 0",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:4:8: listener[0].port: 65536 is out of range (it must be between 1 and \
             65535)",
            "test.toml:8:8: listener[1].port: expected an integer, found the string \"abc\"",
            "test.toml:11:11: listener[2].address: \"localhost\" is not an IPv4 or IPv6 \
             address (host names are not resolved)",
            "test.toml:12:8: listener[2].port: 0 is out of range (it must be between 1 and \
             65535)",
        ]
    );
}

#[test]
fn missing_listener() {
    assert_eq!(
        errors("[target]\ncores = [0]\n"),
        vec![
            "test.toml:1:1: at least one [[listener]] is required (for example transport = \
             \"tcp\", address = \"127.0.0.1\", port = 4420)"
        ]
    );
    assert_eq!(
        errors(""),
        vec![
            "test.toml:1:1: at least one [[listener]] is required (for example transport = \
             \"tcp\", address = \"127.0.0.1\", port = 4420)"
        ]
    );
    assert_eq!(
        errors("listener = []\n"),
        vec!["test.toml:1:1: listener: at least one listener is required"]
    );
    assert_eq!(
        errors(&with_listener(&[
            "[[target]]",
            "[subsystem.namespace]",
            "backend = \"ram\""
        ])),
        vec![
            "test.toml:5:1: target: expected a table (write [target]), found an array",
            "test.toml:6:2: subsystem: expected an array of tables (write [[subsystem]]), found \
             a table",
        ]
    );
    assert_eq!(
        errors(&with_listener(&[
            "[[subsystem]]",
            "nqn = \"nqn.2026-01.io.x:a\"",
            "[subsystem.namespace]",
            "backend = \"ram\"",
        ])),
        vec![
            "test.toml:7:1: subsystem[0].namespace: expected an array of tables (write \
             [[subsystem.namespace]]), found a table"
        ]
    );
    assert_eq!(
        errors("[listener]\ntransport = \"tcp\"\n"),
        vec![
            "test.toml:1:1: listener: expected an array of tables (write [[listener]]), found \
             a table"
        ]
    );
}

#[test]
fn missing_required_fields_point_at_the_table_header() {
    let text = lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "",
        "[[subsystem]]",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "nsid = 3",
        "[[subsystem.namespace]]",
        "backend = \"null\"",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:1:1: listener[0]: missing required field \"address\" (an IPv4 or IPv6 \
             address)",
            "test.toml:1:1: listener[0]: missing required field \"port\" (4420 is the NVMe/TCP \
             port, 8009 discovery)",
            "test.toml:4:1: subsystem[0]: missing required field \"nqn\"",
            "test.toml:6:1: subsystem[0].namespace[0]: missing required field \"backend\" \
             (\"ram\", \"null\", \"file\", \"nvme\" or \"fault\")",
            "test.toml:8:1: subsystem[0].namespace[1]: missing required field \"size\" (the \
             null backend needs a size)",
        ]
    );
    // Inline tables: the position of the `{`.
    assert_eq!(
        errors("listener = [ { transport = \"tcp\", port = 1 } ]\n"),
        vec![
            "test.toml:1:14: listener[0]: missing required field \"address\" (an IPv4 or IPv6 \
             address)"
        ]
    );
}

#[test]
fn all_errors_are_reported_in_order() {
    let text = with_listener(&[
        "[target]",
        "idle = \"spin\"",
        "max_queue_depth = 1",
        "max_io_size = 5000",
        "in_capsule_data_size = 100",
        "max_r2t = 65",
        "max_io_queues = 1.5",
        "hdr_digest = \"yes\"",
        "keep_alive_timeout_ms_max = 999",
        "[[subsystem]]",
        "nqn = \"nqn.2014-08.org.nvmexpress.discovery\"",
        "serial = \"012345678901234567890\"",
        "model = \"caf\u{e9}\"",
        "[[subsystem.namespace]]",
        "nsid = 0",
        "backend = \"ram\"",
        "size = \"1000\"",
        "path = \"/tmp/x\"",
        "[[subsystem.namespace]]",
        "backend = \"disk\"",
        "size = \"1.5GiB\"",
        "direct = 1",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:6:8: target.idle: unknown idle policy \"spin\" (expected \"adaptive\", \
             \"busy\" or \"sleep\")",
            "test.toml:7:19: target.max_queue_depth: 1 is out of range (it must be between 2 \
             and 1024)",
            "test.toml:8:15: target.max_io_size: 5000 is not a power of two",
            "test.toml:9:24: target.in_capsule_data_size: 100 is not a multiple of 16",
            "test.toml:10:1: target.max_r2t: this setting was removed: the target sends one R2T \
             per write, for all of its data (up to max_io_size), so there is nothing to limit; \
             delete the line",
            "test.toml:11:17: target.max_io_queues: expected an integer, found the float 1.5",
            "test.toml:12:14: target.hdr_digest: expected a boolean (true or false), found the \
             string \"yes\"",
            "test.toml:13:29: target.keep_alive_timeout_ms_max: 999 is out of range (it must \
             be between 1000 and 3600000)",
            "test.toml:15:7: subsystem[0].nqn: \"nqn.2014-08.org.nvmexpress.discovery\" is the \
             discovery subsystem's NQN and cannot name a subsystem",
            "test.toml:16:10: subsystem[0].serial: \"012345678901234567890\" is 21 characters \
             long; the maximum is 20",
            "test.toml:17:9: subsystem[0].model: \"caf\u{e9}\" contains a character that is not \
             printable ASCII",
            "test.toml:19:8: subsystem[0].namespace[0].nsid: 0 is out of range (it must be \
             between 1 and 1024)",
            "test.toml:21:8: subsystem[0].namespace[0].size: 1000 bytes is not a multiple of \
             the block size 512",
            "test.toml:22:1: subsystem[0].namespace[0].path: path is only valid for the file \
             backend, not \"ram\"",
            "test.toml:24:11: subsystem[0].namespace[1].backend: unknown backend \"disk\" \
             (expected \"ram\", \"null\", \"file\", \"nvme\" or \"fault\")",
            "test.toml:25:8: subsystem[0].namespace[1].size: invalid size \"1.5GiB\": expected \
             a whole number of bytes, optionally followed by B, KiB, MiB, GiB or TiB (or K, M, \
             G, T)",
            "test.toml:26:10: subsystem[0].namespace[1].direct: expected a boolean (true or \
             false), found the integer 1",
        ]
    );
}

#[test]
fn more_value_checks() {
    let text = with_listener(&[
        "[target]",
        "in_capsule_data_size = \"64KiB\"",
        "max_io_size = \"16KiB\"",
        "[[listener]]",
        "transport = \"TCP\"",
        "address = \"0.0.0.0\"",
        "port = 4420",
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 4420",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"null\"",
        "size = 0",
        "[[subsystem.namespace]]",
        "backend = \"file\"",
        "path = \"\"",
        "size = -4096",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:6:24: target.in_capsule_data_size: 65536 is larger than max_io_size \
             (16384)",
            "test.toml:9:13: listener[1].transport: unknown transport \"TCP\" (expected \
             \"tcp\" or \"rdma\")",
            "test.toml:12:1: listener[2]: duplicate listener 127.0.0.1:4420 (first defined at \
             line 1)",
            "test.toml:21:8: subsystem[0].namespace[0].size: the size must not be zero",
            "test.toml:24:8: subsystem[0].namespace[1].path: must not be empty",
            "test.toml:25:8: subsystem[0].namespace[1].size: a size cannot be negative (-4096)",
        ]
    );
}

#[test]
fn overlapping_listeners() {
    let text = lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 4420",
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"0.0.0.0\"",
        "port = 4420",
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"[::1]\"",
        "port = 4420",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:5:1: listener[1]: listener 0.0.0.0:4420 overlaps listener \
             127.0.0.1:4420 (defined at line 1)"
        ]
    );
}

#[test]
fn implicit_and_dotted_tables_have_positions() {
    // `target.idle` as a dotted key; `[subsystem.x]` making `subsystem` an
    // implicit table instead of an array of tables.
    let text = with_listener(&["", "[x]", "target.idle = 3"]);
    assert_eq!(
        errors(&text),
        vec!["test.toml:6:2: unknown top-level key \"x\" (expected one of: target, listener, subsystem, metrics)"]
    );
    let text = lines(&["target.idle = 3", "[subsystem.a]", "b = 1"]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:1:1: at least one [[listener]] is required (for example transport = \
             \"tcp\", address = \"127.0.0.1\", port = 4420)",
            "test.toml:1:15: target.idle: expected a string, found the integer 3",
            "test.toml:2:2: subsystem: expected an array of tables (write [[subsystem]]), \
             found a table",
        ]
    );
}

#[test]
fn columns_count_characters_and_crlf_works() {
    let text = "[[listener]]\r\ntransport = \"tcp\"\r\naddress = \"127.0.0.1\"\r\n\
                port = 4420\r\n[[subsystem]]\r\nnqn = \"nqn.2026-01.io.x:\u{e9}\u{e9}\" ; x = 1\r\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        vec!["test.toml:6:29: TOML syntax error: expected newline, `#`"]
    );
    let text = with_listener(&["[[subsystem]]", "\"\u{e9}\u{e9}\" = 1 # caf\u{e9}"]);
    assert_eq!(
        errors(&text)[0],
        "test.toml:5:1: subsystem[0]: missing required field \"nqn\""
    );
    assert_eq!(
        errors(&text)[1],
        "test.toml:6:1: subsystem[0]: unknown key \"\u{e9}\u{e9}\" (expected one of: nqn, \
         serial, model, allow_any_host, hosts, listeners, namespace)"
    );
}

#[test]
fn error_display_and_load() {
    let e = ConfigError {
        file: "a.toml".into(),
        line: 3,
        col: 7,
        message: "m".into(),
    };
    assert_eq!(e.to_string(), "a.toml:3:7: m");

    let dir = std::env::temp_dir().join(format!("nvmf-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.toml");
    let errs = Config::load(&missing).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].col), (1, 1));
    assert_eq!(errs[0].file, missing.display().to_string());
    assert!(
        errs[0].message.starts_with("cannot read the config file: "),
        "{}",
        errs[0].message
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[target]\nidle = 1\n").unwrap();
    let errs = Config::load(&bad).unwrap_err();
    assert_eq!(errs[0].file, bad.display().to_string());
    assert_eq!(errs.len(), 2); // idle, and the missing listener
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn embedded_default_is_valid_and_round_trips() {
    let d = Config::embedded_default();
    assert_eq!(d.listeners.len(), 2);
    assert_eq!(d.listeners[0].addr, "127.0.0.1:4420".parse().unwrap());
    assert_eq!(d.listeners[1].addr, "127.0.0.1:8009".parse().unwrap());
    assert_eq!(d.subsystems[0].nqn, DEFAULT_SUBSYSTEM_NQN);
    assert!(d.subsystems[0].allow_any_host);
    assert_eq!(
        d.subsystems[0].namespaces[0].backend,
        BackendConfig::Ram { size: 1 << 30 }
    );
    let text = d.to_toml();
    assert_eq!(parse(&text), Ok(d));
    // Derived identities are not written out.
    assert!(!text.contains("uuid") && !text.contains("serial"), "{text}");
}

#[test]
fn to_toml_keeps_explicit_identities_and_odd_strings() {
    let text = with_listener(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"fe80::1\"",
        "port = 4421",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.x:\\\"quoted\\\" \\\\ caf\u{e9}\"",
        "serial = \"S'\\\"1\"",
        "model = \"m\"",
        "hosts = [\"nqn.2026-01.com.example:h1\", \"nqn.2026-01.com.example:h2\"]",
        "[[subsystem.namespace]]",
        "nsid = 1024",
        "backend = \"file\"",
        "path = \"/tmp/a b\\\\c\"",
        "size = 1536",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"3MiB\"",
        "block_size = 4096",
        "uuid = \"6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b\"",
        "nguid = \"0123456789abcdef0123456789abcdef\"",
        "eui64 = \"0123456789abcdef\"",
    ]);
    // The NQN contains a space and quotes: not valid.
    assert!(parse(&text).is_err());
    let text = text.replace(
        "nqn.2026-01.io.x:\\\"quoted\\\" \\\\ caf\u{e9}",
        "nqn.2026-01.io.x:\\\"quoted\\\"\\\\caf\u{e9}",
    );
    let c = ok(&text);
    assert_eq!(
        c.subsystems[0].nqn,
        "nqn.2026-01.io.x:\"quoted\"\\caf\u{e9}"
    );
    assert_eq!(c.subsystems[0].serial, "S'\"1");
    let out = c.to_toml();
    assert_eq!(parse(&out), Ok(c), "{out}");
    assert!(
        out.contains("uuid = \"6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b\""),
        "{out}"
    );
    assert!(out.contains("size = \"3MiB\""), "{out}");
    assert!(out.contains("size = 1536"), "{out}");
}

#[test]
fn rdma_listeners_default_to_4420_and_may_share_a_tcp_port() {
    let c = ok(&lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"10.0.2.15\"",
        "port = 4420",
        "[[listener]]",
        "transport = \"rdma\"",
        "address = \"10.0.2.15\"",
        "[[listener]]",
        "transport = \"rdma\"",
        "address = \"10.0.2.16\"",
        "port = 4421",
        "fallback = \"tcp\"",
    ]));
    assert_eq!(c.listeners[1].transport, TransportKind::Rdma);
    assert_eq!(c.listeners[1].addr, "10.0.2.15:4420".parse().unwrap());
    assert_eq!(c.listeners[1].fallback, None);
    assert_eq!(c.listeners[2].fallback, Some(TransportKind::Tcp));
    // What is printed parses back the same.
    let again = ok(&c.to_toml());
    assert_eq!(again.listeners, c.listeners);
}

#[test]
fn rdma_listener_errors() {
    let text = lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"10.0.2.15\"",
        "port = 4420",
        "fallback = \"tcp\"",
        "[[listener]]",
        "transport = \"rdma\"",
        "address = \"10.0.2.15\"",
        "fallback = \"tcp\"",
        "[[listener]]",
        "transport = \"rdma\"",
        "address = \"10.0.2.17\"",
        "fallback = \"iwarp\"",
    ]);
    assert_eq!(
        errors(&text),
        vec![
            "test.toml:5:12: listener[0].fallback: only an RDMA listener can fall back to TCP",
            "test.toml:6:1: listener[1]: 10.0.2.15:4420 overlaps 10.0.2.15:4420 (line 1) once \
             the RDMA one falls back to TCP",
            "test.toml:13:12: listener[2].fallback: unknown fallback \"iwarp\" (expected \"tcp\")",
        ]
    );
}

#[test]
fn nvme_namespaces() {
    let c = ok(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "pci = \"0000:01:00.0\"",
        "device_nsid = 2",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "pci = \"sim\"",
        "size = \"64MiB\"",
    ]));
    let ns = &c.subsystems[0].namespaces;
    assert_eq!(
        ns[0].backend,
        BackendConfig::Nvme {
            pci: "0000:01:00.0".into(),
            nsid: 2,
            size: None
        }
    );
    assert_eq!(
        ns[1].backend,
        BackendConfig::Nvme {
            pci: "sim".into(),
            nsid: 1,
            size: Some(64 << 20)
        }
    );
    assert_eq!(ok(&c.to_toml()).subsystems, c.subsystems);
    let errs = errors(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "pci = \"01:00.0\"",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "pci = \"0000:02:00.0\"",
        "size = \"1GiB\"",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "pci = \"sim\"",
        "[[subsystem.namespace]]",
        "backend = \"ram\"",
        "size = \"1MiB\"",
        "pci = \"0000:03:00.0\"",
    ]));
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].contains("\"01:00.0\" is not a PCI address"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("has its own size; leave size out"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("a simulated controller needs a size"),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].contains("pci is only valid for the nvme backend"),
        "{}",
        errs[3]
    );
}

#[test]
fn nvme_passthrough_namespaces_name_the_character_device() {
    let c = ok(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "path = \"/dev/ng1n2\"",
    ]));
    let ns = &c.subsystems[0].namespaces;
    assert_eq!(
        ns[0].backend,
        BackendConfig::NvmePassthru {
            path: "/dev/ng1n2".into()
        }
    );
    assert_eq!(ok(&c.to_toml()).subsystems, c.subsystems);
    let errs = errors(&with_listener(&[
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "path = \"/dev/nvme1n2\"",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "path = \"/dev/ng0n1\"",
        "pci = \"0000:02:00.0\"",
        "[[subsystem.namespace]]",
        "backend = \"nvme\"",
        "path = \"/dev/ng0n2\"",
        "size = \"1GiB\"",
    ]));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains("\"/dev/nvme1n2\" is not an NVMe namespace character device"),
        "{}",
        errs[0]
    );
    assert!(errs[1].contains("not both; leave pci out"), "{}", errs[1]);
    assert!(
        errs[2].contains("has its own size; leave size out"),
        "{}",
        errs[2]
    );
}

#[test]
fn control_socket_and_metrics() {
    let c = ok(&with_listener(&[
        "[target]",
        "control_socket = \"/tmp/x.sock\"",
        "[metrics]",
        "listen = \"127.0.0.1:9464\"",
    ]));
    assert_eq!(
        c.target.control_socket.as_deref(),
        Some(std::path::Path::new("/tmp/x.sock"))
    );
    assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    let c = ok(&with_listener(&["[target]", "control_socket = \"\""]));
    assert_eq!(c.target.control_socket, None);
    assert_eq!(c.metrics, None);
    assert_eq!(
        errors(&with_listener(&[
            "[target]",
            "control_socket = \"run/x\"",
            "[metrics]",
            "listen = \"localhost\"",
            "port = 1",
        ])),
        vec![
            "test.toml:6:18: target.control_socket: \"run/x\" is not an absolute path (\"\" \
             turns the socket off)",
            "test.toml:8:10: metrics.listen: \"localhost\" is not an address and port (such as \
             \"127.0.0.1:9464\")",
            "test.toml:9:1: metrics: unknown key \"port\" (expected one of: listen)",
        ]
    );
}

#[test]
fn listeners_have_names_discovery_ports_and_subsystems_choose_them() {
    let c = ok(&lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 4420",
        "[[listener]]",
        "name = \"fast\"",
        "transport = \"tcp\"",
        "address = \"::1\"",
        "port = 4420",
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 8009",
        "discovery = true",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "listeners = [\"fast\"]",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:b\"",
        "allow_any_host = true",
    ]));
    let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["tcp:127.0.0.1:4420", "fast", "tcp:127.0.0.1:8009"]);
    assert_eq!(
        c.listeners.iter().map(|l| l.discovery).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(c.subsystems[0].listeners, Some(vec!["fast".to_string()]));
    assert_eq!(c.subsystems[1].listeners, None);
    // Written and read back the same.
    assert_eq!(ok(&c.to_toml()), c);
}

#[test]
fn listener_name_and_subsystem_listener_errors() {
    let e = errors(&lines(&[
        "[[listener]]",
        "name = \"a\"",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 4420",
        "[[listener]]",
        "name = \"a\"",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 4421",
        "[[listener]]",
        "name = \"has space\"",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 4422",
        "[[listener]]",
        "name = \"d\"",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 8009",
        "discovery = \"yes\"",
        "[[listener]]",
        "name = \"disc\"",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 8010",
        "discovery = true",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
        "listeners = [\"a\", \"nope\", \"disc\", \"a\"]",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:b\"",
        "allow_any_host = true",
        "listeners = []",
    ]));
    assert_eq!(
        e,
        [
            "test.toml:7:8: listener[1].name: duplicate listener name \"a\" (first used at line 2)",
            "test.toml:12:8: listener[2].name: \"has space\" has a space or a character that is \
             not printable ASCII",
            "test.toml:21:13: listener[3].discovery: expected a boolean (true or false), found \
             the string \"yes\"",
            "test.toml:31:19: subsystem[0].listeners[1]: no listener is named \"nope\" \
             (listeners: a, disc)",
            "test.toml:31:27: subsystem[0].listeners[2]: listener \"disc\" is a discovery port \
             (discovery = true) and serves no NVM subsystem",
            "test.toml:31:35: subsystem[0].listeners[3]: \"a\" is listed twice",
            "test.toml:35:13: subsystem[1].listeners: empty, so the subsystem would be served \
             nowhere (leave listeners out to serve it on every listener that is not discovery)",
        ]
    );
    // Every listener a discovery port: a subsystem would be served nowhere.
    let e = errors(&lines(&[
        "[[listener]]",
        "transport = \"tcp\"",
        "address = \"127.0.0.1\"",
        "port = 8009",
        "discovery = true",
        "[[subsystem]]",
        "nqn = \"nqn.2026-01.io.nvmf-target:a\"",
        "allow_any_host = true",
    ]));
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("served on no listener"), "{e:?}");
}
