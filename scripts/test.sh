#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
echo "== fuzzing: a minute (scripts/fuzz.sh; longer runs: scripts/fuzz.sh -t SECONDS)"
scripts/fuzz.sh -t 30
echo "== kernel host tests: the Linux NVMe/TCP host in a QEMU guest against this target"
tests/kernel/run.sh
