#!/usr/bin/env bash
# Kernel-host tests: the Linux kernel's NVMe/TCP host, in a QEMU guest (scripts/vm/run.sh),
# against nvmf-target running here on the loopback; its NVMe/RDMA host over Soft-RoCE against
# nvmf-target running in the guest (guest-rdma.sh: this machine's kernel has no RDMA); and
# nvmf-target driving emulated NVMe SSDs through VFIO in the guest (guest-nvme.sh).
#
#   tests/kernel/run.sh [GUEST_SCRIPT...]     default: tests/kernel/guest-*.sh
#
# Builds the target, writes a config (RAM subsystems with 512-byte and 4096-byte blocks, one
# open to a single host NQN, a null one, a file-backed one), starts the target in the
# background, runs each guest script in its own VM, stops the target, and exits non-zero
# when any check failed, printing the target's log. Guest scripts may ask for host actions
# with a console line "HOST-REQUEST: restart-target" (SIGKILL, then start it again).
# Logs are kept in target/kernel-tests/ (*.console.log, target.log, target.toml).
#
# When something the harness needs is missing (root or sudo for apt-get, a Debian-like
# system), it fails under CI=true and otherwise skips with the reason.
#
# Environment:
#   NVMF_KTEST_PORT, NVMF_KTEST_DISCOVERY_PORT   target ports (default 4420, 8009)
#   NVMF_KTEST_RELOAD_PORT, NVMF_KTEST_METRICS_PORT  the listener a reload adds and the
#                                                metrics endpoint (default PORT+3, PORT+4)
#   NVMF_KTEST_LOG_LEVEL                         target log level (default info)
#   NVMF_KTEST_CORES                             the target's cores (default "0"; "0, 1"
#                                                spreads queues over two reactors)
#   NVMF_KTEST_TARGET_EXTRA                      more lines for the config's [target], e.g.
#                                                max_io_size = "1MiB"
#   NVMF_KTEST_REFERENCE=1                       run the guest tests against the kernel's
#                                                nvmet in the guest instead (no nvmf-target)
#   NVMF_VM_*                                    see scripts/vm/run.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

say() { echo "kernel-tests: $*"; }
skip_or_fail() {
  if [ "${CI:-}" = true ]; then
    say "FAIL: $*"
    exit 1
  fi
  say "SKIP: $*"
  exit 0
}

command -v apt-get >/dev/null || skip_or_fail "needs a Debian-like host (apt-get) for the guest's packages"
if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  skip_or_fail "needs root or password-less sudo to install QEMU and fetch packages"
fi
[ -w "${NVMF_VM_CACHE:-/var/cache/nvmf-target-vm}" ] || [ -w "$(dirname "${NVMF_VM_CACHE:-/var/cache/nvmf-target-vm}")" ] ||
  skip_or_fail "cache ${NVMF_VM_CACHE:-/var/cache/nvmf-target-vm} not writable (set NVMF_VM_CACHE)"

port="${NVMF_KTEST_PORT:-4420}"
dport="${NVMF_KTEST_DISCOVERY_PORT:-8009}"
# A listener the reload test adds and removes (guest-advanced.sh).
lport="${NVMF_KTEST_RELOAD_PORT:-$((port + 3))}"
# The Prometheus endpoint, scraped from the guest.
mport="${NVMF_KTEST_METRICS_PORT:-$((port + 4))}"
# An IPv6 listener on ::1 when this machine has IPv6 loopback (the guest reaches it at fec0::2).
v6port=""
if grep -qE '^0{31}1 .* lo$' /proc/net/if_inet6 2>/dev/null; then
  v6port="${NVMF_KTEST_V6_PORT:-4421}"
fi
nqn512=nqn.2026-01.io.nvmf-target:ram512
nqn4k=nqn.2026-01.io.nvmf-target:ram4k
nqn_restricted=nqn.2026-01.io.nvmf-target:restricted
nqn_null=nqn.2026-01.io.nvmf-target:null0
nqn_file=nqn.2026-01.io.nvmf-target:file0
nqn_multi=nqn.2026-01.io.nvmf-target:multi
nqn_direct=nqn.2026-01.io.nvmf-target:file-direct
nqn_fault=nqn.2026-01.io.nvmf-target:faulty
nqn_reload=nqn.2026-01.io.nvmf-target:reload
allowed_host=nqn.2014-08.org.nvmexpress:uuid:6b1e8c1e-0d55-4f55-9d1e-5ad0c0dec0de
scripts=("$@")
if [ "${#scripts[@]}" -eq 0 ]; then
  scripts=(tests/kernel/guest-basic.sh)
  for s in tests/kernel/guest-*.sh; do
    [ "$s" = tests/kernel/guest-basic.sh ] || scripts+=("$s")
  done
fi

logs="$repo/target/kernel-tests"
mkdir -p "$logs"
rm -f "$logs"/*.log

t0=$SECONDS
say "building the guest image"
scripts/vm/build-initramfs.sh >/dev/null
if [ "${NVMF_KTEST_REFERENCE:-0}" = 1 ]; then
  # The same guest tests against the kernel's own target (nvmet) inside the guest.
  say "reference run: the guest tests its own nvmet target"
  rc=0
  for s in "${scripts[@]}"; do
    # Only guest-basic.sh and guest-rdma.sh know how to set nvmet up.
    case "$(basename "$s")" in guest-basic.sh | guest-rdma.sh) ;; *) continue ;; esac
    NVMF_VM_FILES="tests/kernel/lib-guest.sh scripts/soft-roce.sh" NVMF_GUEST_REFERENCE=1 \
      NVMF_GUEST_SUBSYSTEMS="$nqn512=512 $nqn4k=4096" NVMF_VM_MEMORY="${NVMF_VM_MEMORY:-2048M}" \
      NVMF_VM_LOG="$logs/$(basename "$s" .sh).reference.console.log" scripts/vm/run.sh "$s" || rc=1
  done
  exit "$rc"
fi
say "building nvmf-target"
cargo build --release --bin nvmf-target
bin="$repo/target/release/nvmf-target"
# The guest runs its own copy for the RDMA suite: without debug info it is a 2 MB file.
guest_bin="$logs/nvmf-target"
cp "$bin" "$guest_bin"
strip "$guest_bin" 2>/dev/null || true

cfg="$logs/target.toml"
cat >"$cfg" <<EOF
# Written by tests/kernel/run.sh.
[target]
cores = [${NVMF_KTEST_CORES:-0}]
control_socket = "$logs/ctl.sock"
${NVMF_KTEST_TARGET_EXTRA:-}

[metrics]
listen = "127.0.0.1:$mport"

[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = $port

[[listener]]
name = "discovery"
transport = "tcp"
address = "127.0.0.1"
port = $dport
discovery = true
$(if [ -n "$v6port" ]; then printf '\n[[listener]]\ntransport = "tcp"\naddress = "::1"\nport = %s\n' "$v6port"; fi)

[[subsystem]]
nqn = "$nqn512"
allow_any_host = true

[[subsystem.namespace]]
backend = "ram"
size = "512MiB"
block_size = 512

[[subsystem]]
nqn = "$nqn4k"
allow_any_host = true

[[subsystem.namespace]]
backend = "ram"
size = "512MiB"
block_size = 4096

# Only one host may see or connect to this one.
[[subsystem]]
nqn = "$nqn_restricted"
allow_any_host = false
hosts = ["$allowed_host"]

[[subsystem.namespace]]
backend = "ram"
size = "64MiB"
block_size = 512

[[subsystem]]
nqn = "$nqn_null"
allow_any_host = true

[[subsystem.namespace]]
backend = "null"
size = "1GiB"

# Three namespaces with sparse NSIDs and different block sizes.
[[subsystem]]
nqn = "$nqn_multi"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
backend = "ram"
size = "64MiB"
block_size = 512

[[subsystem.namespace]]
nsid = 3
backend = "ram"
size = "32MiB"
block_size = 4096

[[subsystem.namespace]]
nsid = 7
backend = "null"
size = "16MiB"
block_size = 512

# Survives a restart of the target (the crash-and-restart test).
[[subsystem]]
nqn = "$nqn_file"
allow_any_host = true

[[subsystem.namespace]]
backend = "file"
path = "$logs/file0.img"
size = "512MiB"
block_size = 4096
direct = false


# A namespace that fails on purpose (configs/fault-injection.toml): the host must see I/O
# errors, not hangs. Blocks are 512 bytes; 4 KiB block N is LBA 8N.
[[subsystem]]
nqn = "$nqn_fault"
allow_any_host = true

[[subsystem.namespace]]
backend = "fault"
size = "64MiB"
block_size = 512
fault = [
  { op = "read", lba = 2048, blocks = 8, error = "media" },
  { op = "write", lba = 4096, blocks = 8, error = "media" },
  { op = "write", lba = 6144, blocks = 8, error = "no_space" },
  { op = "read", lba = 8192, blocks = 8, delay_ms = 3000 },
  { op = "read", lba = 10240, blocks = 8, error = "short" },
]

# The same through O_DIRECT.
[[subsystem]]
nqn = "$nqn_direct"
allow_any_host = true

[[subsystem.namespace]]
backend = "file"
path = "$logs/file1.img"
size = "64MiB"
block_size = 4096
direct = true
EOF
# The last subsystem: the reload test (guest-advanced.sh) has the host rewrite it and
# `nvmf-target reload` at each stage: a namespace appears, grows and goes; the host is denied.
reload_section() { # STAGE
  local ns2="" hosts='allow_any_host = true'
  case "$1" in
  add-ns) ns2=32M ;;
  grow-ns) ns2=64M ;;
  deny-host) hosts='hosts = ["nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000dead"]' ;;
  listener-add)
    # A listener of its own, and the subsystem served there and on the first one.
    printf '\n# reload-section\n[[listener]]\nname = "reloaded"\ntransport = "tcp"\naddress = "127.0.0.1"\nport = %s\n' "$lport"
    hosts="$hosts"$'\n'"listeners = [\"reloaded\", \"tcp:127.0.0.1:$port\"]"
    ;;
  listener-remove) hosts="$hosts"$'\n'"listeners = [\"tcp:127.0.0.1:$port\"]" ;;
  gone) return 0 ;;
  esac
  [ "$1" = listener-add ] || printf '\n# reload-section\n'
  printf '[[subsystem]]\nnqn = "%s"\n%s\n\n[[subsystem.namespace]]\nnsid = 1\nbackend = "ram"\nsize = "16MiB"\n' \
    "$nqn_reload" "$hosts"
  if [ -n "$ns2" ]; then
    printf '\n[[subsystem.namespace]]\nnsid = 2\nbackend = "file"\npath = "%s"\nsize = "%siB"\nblock_size = 512\n' \
      "$logs/reload2.img" "$ns2"
  fi
}
reload_section initial >>"$cfg"
rm -f "$logs/file0.img" "$logs/file1.img" "$logs/reload2.img"
truncate -s 512M "$logs/file0.img"
truncate -s 64M "$logs/file1.img"
"$bin" check "$cfg"

listening() { # PORT: is a socket listening on 127.0.0.1, 0.0.0.0, ::1 or :: at PORT?
  local hex out
  # ss asks the kernel over netlink; /proc/net/tcp when it is missing. (Its
  # output is taken whole first: grep -q ending a pipe early would fail it
  # under pipefail.)
  if command -v ss >/dev/null; then
    out="$(ss -Hltn "sport = :$1" 2>/dev/null)" || true
    grep -qE '(127\.0\.0\.1|\*|0\.0\.0\.0|\[::1?\]):'"$1"' ' <<<"$out"
    return
  fi
  hex="$(printf '%04X' "$1")"
  grep -qE "^ *[0-9]+: (0100007F|00000000):$hex [0-9A-F]{8}:0000 0A " /proc/net/tcp ||
    grep -qE "^ *[0-9]+: 0{24}(0{8}|01000000):$hex 0{32}:0000 0A " /proc/net/tcp6 2>/dev/null
}
listening_all() {
  listening "$port" && listening "$dport" && { [ -z "$v6port" ] || listening "$v6port"; }
}
for p in "$port" "$dport" $v6port "$lport" "$mport"; do
  if listening "$p"; then
    say "FAIL: port $p is already in use on 127.0.0.1 (another target running?); set NVMF_KTEST_PORT/NVMF_KTEST_DISCOVERY_PORT (and _RELOAD_PORT, _METRICS_PORT)"
    exit 1
  fi
done

target_log="$logs/target.log"
target_pid=""
stop_forced=0
# shellcheck disable=SC2317 # called by the trap
stop_target() {
  [ -n "$target_pid" ] || return 0
  if kill -0 "$target_pid" 2>/dev/null; then
    kill -TERM "$target_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$target_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$target_pid" 2>/dev/null; then
      say "target did not stop on SIGTERM within 5s: killing it"
      kill -KILL "$target_pid" 2>/dev/null || true
      stop_forced=1
    fi
  fi
  wait "$target_pid" 2>/dev/null || true
  target_pid=""
}
trap stop_target EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_target_log() {
  local n
  n="$(wc -l <"$target_log")"
  echo "---- target log ($target_log, $n lines; the last 400) ----"
  tail -n 400 "$target_log"
  echo "---- end of target log ----"
}

start_target() {
  say "starting $bin --config $cfg"
  echo "---- kernel-tests: target started $(date +%T) ----" >>"$target_log"
  "$bin" --config "$cfg" --log-level "${NVMF_KTEST_LOG_LEVEL:-info}" >>"$target_log" 2>&1 &
  target_pid=$!
  for _ in $(seq 100); do
    if listening_all; then break; fi
    if ! kill -0 "$target_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if ! listening_all; then
    say "FAIL: the target is not listening on 127.0.0.1:$port and :$dport${v6port:+ and [::1]:$v6port}"
    local p
    for p in "$port" "$dport" $v6port; do
      listening "$p" && say "  port $p: listening" || say "  port $p: not listening"
    done
    kill -0 "$target_pid" 2>/dev/null && say "  the target (pid $target_pid) is running" ||
      say "  the target (pid $target_pid) is not running"
    command -v ss >/dev/null && ss -ltnp 2>/dev/null | sed 's/^/  /' | head -n 20
    return 1
  fi
}

# A guest script asks for host actions with console lines "HOST-REQUEST: ACTION".
host_request() {
  case "$1" in
  restart-target)
    say "guest asked: kill -KILL the target and start it again"
    kill -KILL "$target_pid" 2>/dev/null || true
    wait "$target_pid" 2>/dev/null || true
    echo "---- kernel-tests: target killed (SIGKILL) $(date +%T) ----" >>"$target_log"
    start_target || restart_failed=1
    ;;
  reload\ *)
    local stage="${1#reload }"
    say "guest asked: reload with the reload subsystem at stage $stage"
    sed -i '/^# reload-section/,$d' "$cfg"
    reload_section "$stage" >>"$cfg"
    "$bin" reload --config "$cfg" 2>&1 | sed 's/^/  reload: /' || say "reload failed"
    ;;
  *) say "unknown host request: $1" ;;
  esac
}

: >"$target_log"
if ! start_target; then
  show_target_log
  exit 1
fi

export NVMF_GUEST_PORT="$port" NVMF_GUEST_DISCOVERY_PORT="$dport" NVMF_GUEST_V6_PORT="$v6port"
export NVMF_GUEST_RELOAD_PORT="$lport" NVMF_GUEST_METRICS_PORT="$mport"
export NVMF_GUEST_SUBSYSTEMS="$nqn512=512 $nqn4k=4096"
export NVMF_GUEST_RESTRICTED_NQN="$nqn_restricted" NVMF_GUEST_ALLOWED_HOSTNQN="$allowed_host"
export NVMF_GUEST_NULL_NQN="$nqn_null" NVMF_GUEST_FILE_NQN="$nqn_file" NVMF_GUEST_MULTI_NQN="$nqn_multi"
export NVMF_GUEST_DIRECT_NQN="$nqn_direct" NVMF_GUEST_FAULT_NQN="$nqn_fault" NVMF_GUEST_RELOAD_NQN="$nqn_reload"
export NVMF_VM_FILES=tests/kernel/lib-guest.sh
export NVMF_VM_TIMEOUT="${NVMF_VM_TIMEOUT:-1200}" # TCG on a loaded machine is slow
failed=()
restart_failed=0
shopt -s lastpipe
for s in "${scripts[@]}"; do
  name="$(basename "$s" .sh)"
  say "running $s in the guest"
  extra=()
  case "$name" in
  guest-nvme*)
    # A q35 machine with an IOMMU and three NVMe controllers on image files; the target runs
    # in the guest and drives two through VFIO, the third through the kernel (passthrough),
    # and exports them over NVMe/TCP and NVMe/RDMA.
    rm -f "$logs/nvme512.img" "$logs/nvme4k.img" "$logs/nvmepass.img"
    truncate -s 512M "$logs/nvme512.img" "$logs/nvme4k.img" "$logs/nvmepass.img"
    # The same subsystems over NVMe/RDMA too (Soft-RoCE in the guest).
    extra=(NVMF_VM_FILES="tests/kernel/lib-guest.sh scripts/nvme-setup.sh scripts/soft-roce.sh $guest_bin"
      NVMF_VM_MEMORY="${NVMF_VM_MEMORY:-2048M}" NVMF_VM_IOMMU=1
      NVMF_VM_NVME="$logs/nvme512.img:512 $logs/nvme4k.img:4096 $logs/nvmepass.img:512")
    ;;
  guest-rdma*)
    # The target runs in the guest, next to its RAM namespaces: more guest memory.
    # Two vCPUs: the target runs a reactor on each, so RDMA connections are handed over.
    extra=(NVMF_VM_FILES="tests/kernel/lib-guest.sh scripts/soft-roce.sh $guest_bin"
      NVMF_VM_MEMORY="${NVMF_VM_MEMORY:-2560M}" NVMF_VM_CPUS="${NVMF_VM_CPUS:-2}")
    ;;
  esac
  set +e
  env "${extra[@]}" NVMF_VM_LOG="$logs/$name.console.log" scripts/vm/run.sh "$s" 2>&1 |
    while IFS= read -r line; do
      printf '%s\n' "$line"
      case "$line" in
      "HOST-REQUEST: "*) host_request "${line#HOST-REQUEST: }" ;;
      esac
    done
  rc="${PIPESTATUS[0]}"
  set -e
  if [ "$restart_failed" -ne 0 ]; then
    say "FAIL: the target did not start again after a restart"
    failed+=("$s (target restart)")
    break
  fi
  if ! kill -0 "$target_pid" 2>/dev/null; then
    say "FAIL: the target exited during $s"
    failed+=("$s (target died)")
    break
  fi
  if [ "$rc" -ne 0 ]; then
    say "FAIL: $s exited $rc"
    failed+=("$s (exit $rc)")
  fi
  case "$name" in
  guest-nvme*)
    # What the guest wrote through the target is in the drives' image files.
    for img in "$logs/nvme512.img" "$logs/nvme4k.img" "$logs/nvmepass.img"; do
      if grep -qa "nvmf-target-nvme-marker" "$img"; then
        say "ok: $(basename "$img") holds the marker the guest wrote through the target"
      else
        say "FAIL: $(basename "$img") does not hold the guest's marker"
        failed+=("$s ($(basename "$img") lacks the marker)")
      fi
    done
    ;;
  esac
done
stop_target

if [ "$stop_forced" -ne 0 ]; then
  say "FAIL: the target did not exit on SIGTERM"
  failed+=("target ignored SIGTERM")
fi
if grep -qE 'panicked at|RUST_BACKTRACE' "$target_log"; then
  say "FAIL: the target panicked"
  failed+=("target panic")
fi
# The guest scripts' closing lines, added up: "kernel-host: N passed, N failed".
read -r npass nfail < <(cat "$logs"/*.console.log 2>/dev/null |
  sed -n 's/^kernel-host: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' |
  awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }')
if [ "${#failed[@]}" -gt 0 ]; then
  show_target_log
  say "FAILED after $((SECONDS - t0))s: ${failed[*]} (logs in $logs)"
  echo "kernel-tests: $npass passed, $((nfail > 0 ? nfail : 1)) failed"
  exit 1
fi
say "all passed in $((SECONDS - t0))s (logs in $logs)"
echo "kernel-tests: $npass passed, 0 failed"
