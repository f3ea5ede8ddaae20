#!/bin/bash
# Runs inside the QEMU guest (scripts/vm/run.sh): the Linux kernel's NVMe/RDMA host (nvme-rdma)
# over Soft-RoCE against nvmf-target running in this guest (tests/kernel/run.sh carries the
# binary in as /test/nvmf-target), on eth0's address 10.0.2.15 (rxe does not route 127.0.0.1).
#
# scripts/soft-roce.sh sets rxe up (twice: it must be idempotent); the target listens for RDMA
# and, on the same address and port, for TCP (a second path). Then, on 512 and 4096-byte
# namespaces: discovery over RDMA (RDMA TSAS), connect, identify, logs, features, I/O commands,
# ext4 and XFS with fio --verify and fsck, several queues (-i 4); keep-alive while idle,
# nvme reset, connect/disconnect churn, TCP and RDMA paths to one subsystem at once (native
# multipath), and a SIGKILL and restart of the target under a mounted XFS on a file namespace.
# NVMF_GUEST_REFERENCE=1 runs the same checks (less those that need our target) against the
# kernel's nvmet-rdma in this guest, to tell test mistakes from target bugs.
# The last line is "kernel-host: N passed, N failed"; the exit status is 1 if any failed.
set -euo pipefail

export NVMF_GUEST_TRANSPORT=rdma
# shellcheck source=tests/kernel/lib-guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-guest.sh"

# Discovery is on the NVMe/RDMA port itself.
DPORT="$PORT"
RAM512="${SUBSYSTEMS[0]%=*}"
RAM4K="${SUBSYSTEMS[1]%=*}"
FILENQN="${NVMF_GUEST_FILE_NQN:-nqn.2026-01.io.nvmf-target:file0}"
CFG=/tmp/nvmf-rdma.toml

setup_rxe() {
  local dev again
  echo "+ bash /test/soft-roce.sh eth0"
  dev="$(bash /test/soft-roce.sh eth0)"
  echo "device: $dev"
  again="$(bash /test/soft-roce.sh eth0)"
  [ "$again" = "$dev" ] || {
    echo "a second run gave '$again', not '$dev'"
    return 1
  }
  run rdma link show
  run ibv_devices
  [ -e /dev/infiniband/rdma_cm ]
}

write_config() {
  cat >"$CFG" <<EOF
# Written by tests/kernel/guest-rdma.sh.
[target]
# One reactor per vCPU (with two, connections are handed from reactor 0 to 1).
cores = [$(seq -s ", " 0 $(($(nproc) - 1)))]
# The vCPUs are shared with the kernel's rxe work: never spin.
idle = "sleep"
control_socket = "/tmp/nvmf-target.sock"

[[listener]]
transport = "rdma"
address = "$TARGET"
port = $PORT

# The same address and port over TCP: a second path to every subsystem.
[[listener]]
transport = "tcp"
address = "$TARGET"
port = $PORT

[[subsystem]]
nqn = "$RAM512"
allow_any_host = true
[[subsystem.namespace]]
backend = "ram"
size = "400MiB"
block_size = 512

[[subsystem]]
nqn = "$RAM4K"
allow_any_host = true
[[subsystem.namespace]]
backend = "ram"
size = "400MiB"
block_size = 4096

[[subsystem]]
nqn = "$FILENQN"
allow_any_host = true
[[subsystem.namespace]]
backend = "file"
path = "/var/tmp/file0.img"
size = "512MiB"
block_size = 4096
EOF
  run "$BIN" check "$CFG"
}

rdma_on_every_reactor() {
  echo "queue pairs closed: $(grep -cE 'closing RDMA queue pair' "$TLOG" || true)"
  # With two reactors, connections accepted by reactor 0 were handed to reactor 1.
  if [ "$(nproc)" -ge 2 ]; then
    grep -q "reactor 1: RDMA device ready" "$TLOG" || {
      echo "reactor 1 never served an RDMA connection"
      return 1
    }
  fi
}

multipath_tcp_rdma() { # NQN: a TCP and an RDMA path to one namespace
  local nqn="$1" c t ctrls=() transports=""
  run nvme connect -t rdma -a "$TARGET" -s "$PORT" -n "$nqn" --ctrl-loss-tmo=20
  run nvme connect -t tcp -a "$TARGET" -s "$PORT" -n "$nqn" --ctrl-loss-tmo=20
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn")" = "$nqn" ] || continue
    t="$(cat "$c/transport")"
    ctrls+=("$(basename "$c")")
    transports+=" $t:$(cat "$c/state")"
  done
  echo "controllers: ${ctrls[*]} (transport:state$transports)"
  [ "${#ctrls[@]}" -eq 2 ] && grep -q "rdma:live" <<<"$transports" && grep -q "tcp:live" <<<"$transports"
  run nvme list-subsys
  local paths
  paths="$(find /sys/block -maxdepth 1 -name 'nvme*c*n1' | wc -l)"
  echo "namespace paths (nvmeXcYn1): $paths"
  [ "$paths" -eq 2 ]
  NS="$(ns_for "${ctrls[0]}")"
  fio_verify mp "/dev/$NS" 16M --offset=64M --bsrange=4k-128k --numjobs=2 --offset_increment=16M
  # One path goes: I/O goes on over the other.
  local rdma_ctrl
  for c in "${ctrls[@]}"; do
    [ "$(cat "/sys/class/nvme/$c/transport")" = rdma ] && rdma_ctrl="$c"
  done
  run nvme disconnect -d "$rdma_ctrl"
  fio_verify mp1 "/dev/$NS" 8M --offset=128M --bs=4k
  run nvme disconnect -n "$nqn"
}

rdma_listener_at_run_time() { # an RDMA listener added by ctl serves nvme-rdma; removed, its connection closes
  local p2=$((PORT + 10)) c
  run "$BIN" --config "$CFG" ctl listener add rdma2 --transport rdma --address "$TARGET" --port "$p2"
  run "$BIN" --config "$CFG" ctl listeners
  run nvme connect -t rdma -a "$TARGET" -s "$p2" -n "$RAM512" --ctrl-loss-tmo=5 --keep-alive-tmo=5
  c="$(ctrl_at "$RAM512" "$p2")"
  [ -n "$c" ] && [ "$(cat "/sys/class/nvme/$c/transport")" = rdma ]
  dd if="/dev/$(ns_for "$c")" of=/dev/null bs=64k count=16 iflag=direct status=none
  echo "$c: RDMA on port $p2, $(cat "/sys/class/nvme/$c/state")"
  run "$BIN" --config "$CFG" ctl listener remove rdma2
  wait_for 30 "the controller on the removed listener leaves the live state" \
    bash -c "[ \"\$(cat /sys/class/nvme/$c/state 2>/dev/null)\" != live ]"
  echo "$c: $(cat "/sys/class/nvme/$c/state" 2>/dev/null || echo gone)"
  nvme disconnect -d "$c" >/dev/null 2>&1 || true
  # The first listener still serves.
  connect "$RAM512" >/dev/null
  disconnect "$RAM512" >/dev/null
}

churn_rdma() { # connect and disconnect 10 times, a little I/O each time
  local i
  for i in $(seq 10); do
    connect "$RAM512" >/dev/null
    NS="$(ns_for "$(ctrl_for "$RAM512")")"
    dd if="/dev/$NS" of=/dev/null bs=64k count=4 iflag=direct status=none
    disconnect "$RAM512" >/dev/null
  done
  echo "10 connect/disconnect cycles"
}


say "host $(cat /etc/nvme/hostnqn), NVMe/RDMA target $TARGET:$PORT, subsystems: ${SUBSYSTEMS[*]}"
check "soft-roce.sh sets up rxe on eth0 (twice: idempotent)" setup_rxe || {
  summary
  exit 1
}
run modprobe nvme-rdma
if [ "$REFERENCE" = 1 ]; then
  check "reference: set up nvmet-rdma" reference_setup || exit 1
else
  check "target config" write_config || exit 1
  check "target starts (RDMA and TCP listeners)" start_target || {
    cat "$TLOG"
    summary
    exit 1
  }
fi
check "connect to an unknown NQN fails" connect_bad_nqn || true
for entry in "${SUBSYSTEMS[@]}"; do
  nqn="${entry%=*}"
  bs="${entry##*=}"
  basic "$nqn" "$bs"
  multiqueue "$nqn" "$bs"
done

say "=== $RAM512: keep-alive, reset, churn"
NQN="$RAM512"
if check "connect -k 5" connect "$RAM512" --keep-alive-tmo=5; then
  set_dev
  check "idle for 11 s with keep-alive 5 s: still live" idle_keep_alive || true
  check "nvme reset keeps the data" reset_keeps_data || true
  check "disconnect" disconnect "$RAM512" || true
fi
check "connect/disconnect 10 times" churn_rdma || true
if [ "$REFERENCE" != 1 ]; then
  check "ctl listener add/remove: an RDMA listener at run time serves nvme-rdma; removed, its connection closes" \
    rdma_listener_at_run_time || true
fi

if [ "$REFERENCE" != 1 ]; then
  say "=== $RAM4K: an RDMA and a TCP path at once"
  check "TCP and RDMA paths to one namespace (native multipath), fio verify, one path gone" \
    multipath_tcp_rdma "$RAM4K" || true

  say "=== $FILENQN: target crash (SIGKILL) and restart under a mounted XFS"
  crash_and_restart "$FILENQN"
  check "target log: no panic" target_log_clean || true
  check "connections on every reactor" rdma_on_every_reactor || true
  check "SIGTERM stops the target in order" stop_target || true
  say "---- target log (last 60 lines) ----"
  tail -n 60 "$TLOG"
fi
summary
[ "$failed" -eq 0 ]
