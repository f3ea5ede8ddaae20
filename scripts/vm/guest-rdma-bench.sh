#!/bin/bash
# Runs inside the QEMU guest for scripts/rdma-bench.sh: the kernel's nvme-rdma host over
# Soft-RoCE, the same fio jobs against nvmf-target (/test/nvmf-target) and against the kernel's
# nvmet-rdma, taking turns every round; each on a 256 MiB memory namespace of 4096-byte blocks
# (ours: a RAM namespace; nvmet: a memory-backed null_blk), on 10.0.2.15:4420.
# Prints one BENCH line per run (scripts/vm/bench-lib.sh).
set -euo pipefail
ROUNDS="${NVMF_GUEST_BENCH_ROUNDS:-3}"
SECS="${NVMF_GUEST_BENCH_SECS:-10}"
CASES="${NVMF_GUEST_BENCH_CASES:-randread:4k:1 randread:4k:32 read:128k:16 write:128k:16}"
NQN=nqn.2026-01.io.nvmf-target:bench
NQN2=nqn.2026-01.io.nvmet:bench
ADDR=10.0.2.15
CFG=/tmp/bench.toml

bash /test/soft-roce.sh eth0 >/dev/null
modprobe nvme-rdma
modprobe nvmet
modprobe nvmet-rdma
modprobe null_blk nr_devices=0

cat >"$CFG" <<EOF
[target]
cores = [${NVMF_GUEST_BENCH_CORE:-0}]
idle = "${NVMF_GUEST_BENCH_IDLE:-sleep}"
[[listener]]
transport = "rdma"
address = "$ADDR"
[[subsystem]]
nqn = "$NQN"
allow_any_host = true
[[subsystem.namespace]]
backend = "ram"
size = "256MiB"
block_size = 4096
EOF

# Both targets run all along, on one address: nvmf-target on port 4420, nvmet on 4421.
nvmet_up() {
  local cfg=/sys/kernel/config/nvmet nb=/sys/kernel/config/nullb/bench
  mkdir -p "$nb"
  echo 256 >"$nb/size"
  echo 4096 >"$nb/blocksize"
  echo 1 >"$nb/memory_backed"
  echo 1 >"$nb/power"
  mkdir -p "$cfg/ports/1"
  echo rdma >"$cfg/ports/1/addr_trtype"
  echo ipv4 >"$cfg/ports/1/addr_adrfam"
  echo "$ADDR" >"$cfg/ports/1/addr_traddr"
  echo 4421 >"$cfg/ports/1/addr_trsvcid"
  mkdir -p "$cfg/subsystems/$NQN2/namespaces/1"
  echo 1 >"$cfg/subsystems/$NQN2/attr_allow_any_host"
  echo /dev/bench >"$cfg/subsystems/$NQN2/namespaces/1/device_path"
  echo 1 >"$cfg/subsystems/$NQN2/namespaces/1/enable"
  ln -s "$cfg/subsystems/$NQN2" "$cfg/ports/1/subsystems/$NQN2"
}

/test/nvmf-target --config "$CFG" --log-level warn >/tmp/bench-target.log 2>&1 &
TPID=$!
nvmet_up
sleep 1

# shellcheck source=scripts/vm/bench-lib.sh
. /test/bench-lib.sh

run_case() { # TARGET CASE
  if [ "$1" = ours ]; then
    bench_case ours "$2" rdma "$ADDR" 4420 "$NQN" "$TPID"
  else
    bench_case nvmet "$2" rdma "$ADDR" 4421 "$NQN2"
  fi
}

for r in $(seq "$ROUNDS"); do
  order="ours nvmet"
  [ $((r % 2)) -eq 0 ] && order="nvmet ours"
  for tgt in $order; do
    for c in $CASES; do run_case "$tgt" "$c"; done
  done
done
kill -TERM "$TPID"
echo "BENCH-DONE"
