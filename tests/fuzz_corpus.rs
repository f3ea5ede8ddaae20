//! Replays the fuzzing harnesses' inputs on an ordinary build: the seeds
//! (generated, and as committed under `fuzz/corpus/`), and every input that
//! ever crashed a harness (`fuzz/regressions/<target>/`), so that a fixed
//! crash stays fixed. `scripts/fuzz.sh` runs the harnesses under libFuzzer.

use nvmf_target::fuzzing;
use std::path::Path;

fn harness(target: &str) -> fn(&[u8]) {
    match target {
        "tcp_stream" => |d| {
            fuzzing::tcp_stream(d);
        },
        "controller" => |d| {
            fuzzing::controller(d);
        },
        t => panic!("no fuzzing harness named {t}"),
    }
}

/// Every file under `dir/<target>/`, run through its harness; returns how
/// many ran.
fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut n = 0;
    for target in ["tcp_stream", "controller"] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.expect("corpus entry").path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            eprintln!("{target}: {}", f.display());
            harness(target)(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn seeds_run_clean_and_reach_the_data_path() {
    for (target, name, data) in fuzzing::seeds() {
        if target == "tcp_stream" {
            let pdus = fuzzing::tcp_stream(&data);
            eprintln!("{target}: seed {name}: {pdus} PDUs out");
            // Every seed stream is a valid session: each command answered.
            assert!(pdus >= 2, "seed {name}: {pdus} PDUs");
            continue;
        }
        let o = fuzzing::controller(&data);
        eprintln!("{target}: seed {name}: {o:?}");
        match name {
            "admin-startup" => {
                // All but the AER complete, all successfully.
                assert_eq!((o.completed, o.succeeded), (10, 10), "{name}");
            }
            "io-mix" => {
                assert_eq!(o.completed, 15, "{name}");
                assert!(o.succeeded >= 14, "{name}: {o:?}");
                assert!(o.verified >= 4096 * 4 + 131072, "{name}: {o:?}");
            }
            "fused-compare-write" => {
                assert_eq!(
                    (o.completed, o.succeeded, o.verified),
                    (4, 4, 512),
                    "{name}"
                );
            }
            _ => panic!("no expectation for seed {name}"),
        }
    }
}

#[test]
fn committed_seeds_match_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, name, data) in fuzzing::seeds() {
        let f = root.join(target).join(format!("seed-{name}"));
        if std::env::var_os("NVMF_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, &data).unwrap();
        }
        let got = std::fs::read(&f).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (NVMF_WRITE_SEEDS=1 cargo test --test fuzz_corpus writes the seeds)",
                f.display()
            )
        });
        assert!(
            got == data,
            "{} differs from fuzzing::seeds(); NVMF_WRITE_SEEDS=1 rewrites it",
            f.display()
        );
    }
}

#[test]
fn corpus_and_regressions_run_clean() {
    let n = replay("fuzz/corpus") + replay("fuzz/regressions");
    assert!(n >= fuzzing::seeds().len(), "only {n} corpus inputs found");
}
