#!/usr/bin/env bash
# Soak: the target under a verify workload, connection storms and hostile hosts at once, for a
# given time, then a summary. Not part of the test command (it runs for minutes or hours).
#
#   scripts/soak.sh [-t SECONDS] [-p PORT]        default 1800 s (30 min), port 7420
#
# Runs nvmf-target (release build, pinned to core 0) with a RAM and a file namespace, and on
# the other core, all together until the time is up:
#   verify   nvmf-perf --verify rounds over 64 MiB of each namespace (write a pattern, read back,
#            compare), alternating namespaces: any mismatch or error is counted;
#   load     nvmf-perf randrw runs, 4 queues at QD 32, 5 s each: operations and p99 latency;
#   storm    nvmf-perf runs of 50 controllers at once for 1 s each: connect, I/O, disconnect;
#   hostile  every 5 s, 20 connections that never send ICReq, one that sends random bytes,
#            and one that sends its ICReq a byte a second (all must be closed by the target);
# and samples the target's RSS, descriptors and threads every 2 s. Prints a summary
# (operations, errors, p99, max RSS, max descriptors, threads) and exits 1 if anything failed
# (a verify error, a perf run that failed, the target gone or its log saying it panicked).
# Everything is in target/soak/ (target.log, samples.txt, perf JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=1800
port=7420
while [ $# -gt 0 ]; do
  case "$1" in
  -t) secs=$2; shift 2 ;;
  -p) port=$2; shift 2 ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
  esac
done
out=target/soak
rm -rf "$out"
mkdir -p "$out"
cargo build --release --bin nvmf-target >&2
cargo build --release -p nvmf-initiator --bin nvmf-perf >&2
tgt=target/release/nvmf-target
perf=target/release/nvmf-perf
nqn=nqn.2026-01.io.nvmf-target:soak
cat >"$out/soak.toml" <<EOF
[target]
cores = [0]

[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = $port

[[subsystem]]
nqn = "$nqn"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
backend = "ram"
size = "64MiB"
block_size = 512

[[subsystem.namespace]]
nsid = 2
backend = "file"
path = "$PWD/$out/disk.img"
size = "256MiB"
block_size = 4096

# The load and the storms run here, so that they never touch what verify wrote.
[[subsystem.namespace]]
nsid = 3
backend = "ram"
size = "64MiB"
block_size = 4096
EOF
"$tgt" check "$out/soak.toml" >/dev/null
"$tgt" --config "$out/soak.toml" --log-level info >"$out/target.log" 2>&1 &
tpid=$!
cleanup() {
  # shellcheck disable=SC2046
  kill $(jobs -p) 2>/dev/null || true
  kill -TERM "$tpid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
end=$(($(date +%s) + secs))
alive() { [ "$(date +%s)" -lt "$end" ] && kill -0 "$tpid" 2>/dev/null; }
p() { "$perf" -s "$port" -n "$nqn" --core 1 "$@"; }

verify_loop() {
  local i=0 ns
  while alive; do
    ns=$((i % 2 + 1))
    if p --nsid "$ns" --span 64MiB --verify --queues 2 -q 16 --seed "$i" >"$out/verify.$((i % 4)).txt" 2>&1; then
      echo "verify ok ns=$ns"
    else
      echo "verify FAILED ns=$ns: $(tail -n 2 "$out/verify.$((i % 4)).txt" | tr '\n' ' ')"
    fi
    i=$((i + 1))
  done >"$out/verify.log"
}

load_loop() {
  while alive; do
    if p -w randrw --nsid 3 --queues 4 -q 32 -t 5 --warmup 0 \
      --json "$out/load.json" >/dev/null 2>"$out/load.err"; then
      python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("load", j["ios"], j["errors"], j["lat_us"]["p99"])' "$out/load.json"
    else
      echo "load FAILED: $(tail -n 1 "$out/load.err")"
    fi
  done >"$out/load.log"
}

storm_loop() {
  while alive; do
    if p -w randread --nsid 3 --connections 50 -q 4 -t 1 --warmup 0 --json "$out/storm.json" \
      >/dev/null 2>"$out/storm.err"; then
      python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("storm", j["ios"], j["errors"])' "$out/storm.json"
    else
      echo "storm FAILED: $(tail -n 1 "$out/storm.err")"
    fi
  done >"$out/storm.log"
}

hostile_loop() {
  python3 - "$port" "$end" <<'PY' >"$out/hostile.log" 2>&1
import os, random, socket, sys, time
port, end = int(sys.argv[1]), int(sys.argv[2])
rounds = 0
trickle = None
while time.time() < end:
    silent = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        silent.append(s)
    g = socket.create_connection(("127.0.0.1", port))
    try:
        g.sendall(os.urandom(random.randint(1, 4096)))
    except OSError:
        pass
    if trickle is None:
        trickle = socket.create_connection(("127.0.0.1", port))
        icreq = bytes([0, 0, 128, 0, 128, 0, 0, 0]) + bytes(120)
        sent = 0
    try:
        for _ in range(5):
            trickle.send(icreq[sent:sent + 1])
            sent += 1
            time.sleep(1)
    except OSError:
        print("trickler closed by the target after", sent, "bytes", flush=True)
        trickle = None
    # The silent ones must be closed by the target (its handshake timeout).
    for s in silent:
        s.settimeout(30)
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        if not closed:
            print("FAILED: a silent connection stayed open 30 s", flush=True)
        s.close()
    g.close()
    rounds += 1
print("hostile rounds", rounds, flush=True)
PY
}

sample_loop() {
  while alive; do
    printf '%s %s %s %s\n' "$(date +%s)" \
      "$(awk '/^VmRSS:/ { print $2 }' "/proc/$tpid/status")" \
      "$(ls "/proc/$tpid/fd" | wc -l)" \
      "$(awk '/^Threads:/ { print $2 }' "/proc/$tpid/status")"
    sleep 2
  done >"$out/samples.txt"
}

echo "soak: $secs s against $tgt (pid $tpid) on 127.0.0.1:$port; logs in $out" >&2
verify_loop &
load_loop &
storm_loop &
hostile_loop &
sample_loop &
wait "$(jobs -p | tail -n 1)" 2>/dev/null || true
while [ "$(date +%s)" -lt "$end" ] && kill -0 "$tpid" 2>/dev/null; do sleep 5; done
# Let the last runs finish.
for j in $(jobs -p); do
  [ "$j" = "$tpid" ] || wait "$j" 2>/dev/null || true
done

failed=0
kill -0 "$tpid" 2>/dev/null || {
  echo "FAILED: the target is gone"
  failed=1
}
grep -q panicked "$out/target.log" && {
  echo "FAILED: the target panicked"
  failed=1
}
v_ok=$(grep -c '^verify ok' "$out/verify.log" || true)
v_bad=$(grep -c '^verify FAILED' "$out/verify.log" || true)
read -r l_runs l_ios l_err < <(awk '$1 == "load" { n++; ios += $2; err += $3 }
  END { printf "%d %d %d\n", n, ios, err }' "$out/load.log")
l_p99=$(awk '$1 == "load" { print $4 }' "$out/load.log" | sort -n |
  awk '{ a[NR] = $1 } END { print NR ? a[int((NR + 1) / 2)] : "-" }')
l_bad=$(grep -c '^load FAILED' "$out/load.log" || true)
read -r s_runs s_ios s_err < <(awk '$1 == "storm" { n++; ios += $2; err += $3 } END { printf "%d %d %d\n", n, ios, err }' "$out/storm.log")
s_bad=$(grep -c '^storm FAILED' "$out/storm.log" || true)
h_bad=$(grep -c '^FAILED' "$out/hostile.log" || true)
read -r rss_max fds_max thr_max < <(awk '{ if ($2 > r) r = $2; if ($3 > f) f = $3; if ($4 > t) t = $4 }
  END { printf "%d %d %d\n", r, f, t }' "$out/samples.txt")
# RSS once the RAM namespaces (128 MiB) are written and the pools warm (a quarter in), and at
# the end: what the target holds should not grow after that.
read -r rss_q rss_last < <(awk '{ r[NR] = $2 } END { printf "%d %d\n", r[int(NR / 4) + 1], r[NR] }' "$out/samples.txt")
echo "== soak summary: $secs s"
echo "verify rounds:   $v_ok passed, $v_bad failed"
echo "load runs:       $l_runs, $l_ios operations, $l_err errors, median p99 ${l_p99} us, $l_bad runs failed"
echo "storm runs:      $s_runs (50 controllers each), $s_ios operations, $s_err errors, $s_bad runs failed"
echo "hostile:         $(tail -n 1 "$out/hostile.log"); $h_bad failures"
echo "target:          RSS max $rss_max KiB (a quarter in $rss_q, at the end $rss_last; 128 MiB of it RAM namespaces), descriptors max $fds_max, threads max $thr_max"
[ $((v_bad + l_err + l_bad + s_err + s_bad + h_bad)) -eq 0 ] || failed=1
exit "$failed"
