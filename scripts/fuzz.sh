#!/usr/bin/env bash
# Coverage-guided fuzzing of the wire-facing code with libFuzzer, on the
# stable toolchain (see fuzz/README.md for why this fuzzer).
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [TARGET...]
#
# Runs each target (default: tcp_stream and controller) for SECONDS
# (default 30), starting from the committed seeds in fuzz/corpus/TARGET and
# the inputs it found before (target/fuzz/corpus/TARGET, kept between runs).
# Prints, per target: executions, executions per second, edges covered of
# those instrumented, corpus size and peak RSS. Exits non-zero if a target
# crashed, leaked past its memory limit or hung; the input is saved under
# target/fuzz/artifacts/TARGET/ and belongs in fuzz/regressions/TARGET/
# once fixed (tests/fuzz_corpus.rs replays it from then on).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=30
jobs=1
while getopts "t:j:" o; do
  case $o in
    t) secs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tcp_stream controller)

command -v c++ >/dev/null || { echo "fuzz: no C++ compiler (libFuzzer is C++): scripts/setup.sh installs build-essential" >&2; exit 1; }
host=$(rustc -vV | sed -n 's/^host: //p')
out=$PWD/target/fuzz
# Coverage instrumentation as cargo-fuzz sets it, without its nightly-only
# sanitizer flag; --target keeps it off build scripts.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "== fuzz: building ${targets[*]} (libFuzzer, coverage-instrumented, $host)"
(cd fuzz && CARGO_TARGET_DIR=$out cargo build --release --locked --target "$host" --bins)

status=0
summary=()
for t in "${targets[@]}"; do
  bin=$out/$host/release/$t
  [ -x "$bin" ] || { echo "fuzz: no target named $t" >&2; exit 2; }
  work=$out/corpus/$t
  art=$out/artifacts/$t
  log=$out/$t.log
  mkdir -p "$work" "$art"
  echo "== fuzz: $t for ${secs}s (log $log)"
  par=()
  [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
  set +e
  # Parallel jobs write fuzz-N.log in the working directory: keep them in
  # target/fuzz.
  (cd "$out" && "$bin" "$work" "$OLDPWD/fuzz/corpus/$t" -max_total_time="$secs" \
    -print_final_stats=1 -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -max_len=16384 "${par[@]}" -artifact_prefix="$art/") >"$log" 2>&1
  rc=$?
  set -e
  if [ "$jobs" -gt 1 ]; then cat "$out"/fuzz-*.log >>"$log" 2>/dev/null || true; rm -f "$out"/fuzz-*.log; fi
  total=$(sed -n 's/^INFO: Loaded [0-9]* modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  runs=$(grep -h '^stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
  eps=$(grep -h '^stat::average_exec_per_sec' "$log" | awk '{s+=$2} END {print s+0}')
  rss=$(grep -h '^stat::peak_rss_mb' "$log" | awk '{if ($2>m) m=$2} END {print m+0}')
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | head -1)
  line="$t: ${runs} executions in ${took:-?}s (${eps}/s), ${cov:-?} of ${total:-?} edges covered, ${ft:-?} features, corpus ${corp:-?}, peak RSS ${rss} MB"
  if [ $rc -ne 0 ]; then
    status=1
    line="$line: FAILED (exit $rc)"
    grep -E '^(==[0-9]+== ERROR|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "$log" | head -20 || true
    tail -40 "$log"
    echo "fuzz: $t failed; the input is in $art/. Once fixed, copy it to fuzz/regressions/$t/."
  fi
  echo "$line"
  summary+=("$line")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $status
