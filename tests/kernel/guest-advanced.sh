#!/bin/bash
# Runs inside the QEMU guest (scripts/vm/run.sh), after guest-basic.sh's kind of checks:
# host access control and the discovery log per host, a null namespace, controller reset,
# keep-alive while idle, queue sizes, two controllers on one subsystem (multipath), discard
# (fstrim, blkdiscard against DLFEAT), I/O on four controllers at once, connect/disconnect
# churn, disconnect under I/O, a network outage longer than the keep-alive timeout, a
# persistent discovery controller, and a target crash and restart under a mounted XFS on a
# file-backed namespace (the host reconnects and the files survive). The restart is asked of tests/kernel/run.sh with a console line
# "HOST-REQUEST: restart-target".
# The last line is "kernel-host: N passed, N failed"; the exit status is 1 if any failed.
set -euo pipefail

# shellcheck source=tests/kernel/lib-guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-guest.sh"

RAM512="${SUBSYSTEMS[0]%=*}"
RAM4K="${SUBSYSTEMS[1]%=*}"
RESTRICTED="${NVMF_GUEST_RESTRICTED_NQN:-nqn.2026-01.io.nvmf-target:restricted}"
ALLOWED_HOSTNQN="${NVMF_GUEST_ALLOWED_HOSTNQN:-nqn.2014-08.org.nvmexpress:uuid:6b1e8c1e-0d55-4f55-9d1e-5ad0c0dec0de}"
ALLOWED_HOSTID="${ALLOWED_HOSTNQN##*:}"
NULLNQN="${NVMF_GUEST_NULL_NQN:-nqn.2026-01.io.nvmf-target:null0}"
FILENQN="${NVMF_GUEST_FILE_NQN:-nqn.2026-01.io.nvmf-target:file0}"
MULTINQN="${NVMF_GUEST_MULTI_NQN:-nqn.2026-01.io.nvmf-target:multi}"
DIRECTNQN="${NVMF_GUEST_DIRECT_NQN:-nqn.2026-01.io.nvmf-target:file-direct}"
FAULTNQN="${NVMF_GUEST_FAULT_NQN:-nqn.2026-01.io.nvmf-target:faulty}"
RELOADNQN="${NVMF_GUEST_RELOAD_NQN:-nqn.2026-01.io.nvmf-target:reload}"

host_request() { # ask tests/kernel/run.sh on the host to do something
  echo "HOST-REQUEST: $1" >/dev/console
}

# The target runs on the host: tests/kernel/run.sh kills and restarts it.
kill_and_restart_target() { host_request restart-target; }

# --- access control -----------------------------------------------------------------------------
discover_hides_restricted() {
  local out
  out="$(run nvme discover -t tcp -a "$TARGET" -s "$DPORT" 2>&1)"
  echo "$out"
  expect "subnqn: +$RAM512\$" "$out"
  if grep -q "$RESTRICTED" <<<"$out"; then
    echo "the discovery log shows $RESTRICTED to a host it does not allow"
    return 1
  fi
}

discover_shows_restricted() {
  local out
  out="$(run nvme discover -t tcp -a "$TARGET" -s "$DPORT" --hostnqn="$ALLOWED_HOSTNQN" \
    --hostid="$ALLOWED_HOSTID" 2>&1)"
  echo "$out"
  expect "subnqn: +$RESTRICTED\$" "$out"
}

connect_restricted_refused() {
  local out
  if out="$(run nvme connect "${CONNECT_OPTS[@]}" -n "$RESTRICTED" 2>&1)"; then
    echo "$out"
    echo "a host that is not in hosts = [...] connected"
    return 1
  fi
  echo "$out"
  [ -z "$(ctrl_for "$RESTRICTED")" ]
  dmesg | tail -n 5
}

connect_restricted_allowed() {
  connect "$RESTRICTED" --hostnqn="$ALLOWED_HOSTNQN" --hostid="$ALLOWED_HOSTID"
  local c
  c="$(ctrl_for "$RESTRICTED")"
  run cat "/sys/class/nvme/$c/hostnqn"
  [ "$(cat "/sys/class/nvme/$c/hostnqn")" = "$ALLOWED_HOSTNQN" ]
}

# --- a namespace that fails on purpose ---------------------------------------------------------
# 4 KiB block N is LBA 8N: 256 fails reads (media), 512 fails writes (media), 768 fails
# writes (no space), 1024 holds reads 3 s, 1280 fails reads short. Each dd must end, with an
# error where the rule says so: a hang would be the check's timeout.
dd_fails() { # WHAT DD-ARGS...: dd must fail, not hang (timeout's 124); prints its message
  local out rc=0
  out="$(timeout 120 dd "${@:2}" bs=4k count=1 status=none 2>&1)" || rc=$?
  echo "$1: exit $rc: $out"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]
}

faulty_namespace() {
  dd_fails "read of a failing block" if="/dev/$NS" of=/dev/null skip=256 iflag=direct
  dd_fails "write of a failing block" if=/dev/zero of="/dev/$NS" seek=512 oflag=direct
  local out
  out="$(dd_fails "write to a full range" if=/dev/zero of="/dev/$NS" seek=768 oflag=direct)"
  echo "$out"
  expect "No space left on device" "$out"
  dd_fails "short read" if="/dev/$NS" of=/dev/null skip=1280 iflag=direct
  # Next to them, and after them, everything works.
  pattern /tmp/f.dat 4096 7
  run dd if=/tmp/f.dat of="/dev/$NS" bs=4k seek=257 oflag=direct status=none
  run dd if="/dev/$NS" of=/tmp/f.back bs=4k skip=257 count=1 iflag=direct status=none
  run cmp /tmp/f.dat /tmp/f.back
  # A read held 3 s by the namespace completes, and no sooner.
  local t0 t1
  t0=${EPOCHREALTIME/./}
  run dd if="/dev/$NS" of=/dev/null bs=4k skip=1024 count=1 iflag=direct status=none
  t1=${EPOCHREALTIME/./}
  local ms=$(((t1 - t0) / 1000))
  echo "held read took ${ms} ms"
  [ "$ms" -ge 2900 ]
  # The failures are in the SMART log (media errors) and the error log.
  out="$(nvme smart-log "/dev/$CTRL" -o json)"
  echo "$out" | grep -E 'media_errors|num_err_log_entries'
  local media
  media="$(echo "$out" | sed -n 's/.*"media_errors" *: *"\{0,1\}\([0-9]*\).*/\1/p')"
  echo "media errors: $media"
  [ "${media:-0}" -ge 3 ]
  out="$(nvme error-log "/dev/$CTRL" -e 8)"
  echo "$out" | head -40
  expect "status_field.*0x(281|280|4081)" "$out"
}

# --- reload: the host rewrites the config and reloads; this host sees it live --------------------
ns2_dev() { # the block device of NSID 2 of $RELOADNQN, or nothing
  local b
  for b in /sys/block/nvme*n*; do
    b="$(basename "$b")"
    [[ "$b" =~ ^nvme[0-9]+n[0-9]+$ ]] || continue
    [ "$(cat "/sys/block/$b/device/subsysnqn" 2>/dev/null)" = "$RELOADNQN" ] || continue
    [ "$(cat "/sys/block/$b/nsid" 2>/dev/null || cat "/sys/block/$b/device/nsid" 2>/dev/null)" = 2 ] || continue
    echo "$b"
    return 0
  done
}

ns2_sectors() { local d; d="$(ns2_dev)" && [ -n "$d" ] && cat "/sys/block/$d/size"; }
ns2_is() { [ "$(ns2_sectors)" = "$1" ]; }
ns2_gone() { [ -z "$(ns2_dev)" ]; }

reload_live() {
  local c0 c
  c0="$(ctrl_for "$RELOADNQN")"
  host_request "reload add-ns"
  wait_for 30 "namespace 2 appears with 32 MiB" ns2_is 65536
  d="$(ns2_dev)"
  echo "namespace 2 appeared as /dev/$d, $(ns2_sectors) sectors"
  pattern /tmp/r.dat 1048576 11
  run dd if=/tmp/r.dat of="/dev/$d" bs=64k oflag=direct status=none
  host_request "reload grow-ns"
  wait_for 30 "namespace 2 grows to 64 MiB" ns2_is 131072
  echo "namespace 2 grew to $(ns2_sectors) sectors"
  run dd if="/dev/$d" of=/tmp/r.back bs=64k count=16 iflag=direct status=none
  run cmp /tmp/r.dat /tmp/r.back
  host_request "reload remove-ns"
  wait_for 30 "namespace 2 goes away" ns2_gone
  echo "namespace 2 is gone"
  # All of it on the same controller: no reconnect, no rescan asked for.
  c="$(ctrl_for "$RELOADNQN")"
  [ "$c" = "$c0" ] && [ "$(cat "/sys/class/nvme/$c/state")" = live ]
  echo "still $c, live"
}

reload_deny() {
  host_request "reload deny-host"
  # The target tears the controller down; the host tries to reconnect and is refused.
  wait_for 60 "the controller leaves the live state" \
    bash -c '[ "$(cat /sys/class/nvme/'"$(ctrl_for "$RELOADNQN")"'/state 2>/dev/null)" != live ]'
  dmesg | tail -n 8
}

# --- metrics ------------------------------------------------------------------------------------
metric_sum() { # METRIC: the sum of METRIC's samples for $NQN, from the target's Prometheus endpoint
  busybox wget -qO- "http://$TARGET:$NVMF_GUEST_METRICS_PORT/metrics" |
    awk -v m="$1{" -v s="subsystem=\"$NQN\"" 'index($0, m) == 1 && index($0, s) { t += $NF } END { printf "%d\n", t }'
}

metrics_during_io() {
  local b0 b1 c0 c1
  fio --name=metrics --filename="/dev/$NS" --size=32M --ioengine=libaio --direct=1 --rw=randrw \
    --bs=4k --iodepth=8 --time_based --runtime=6 >/dev/null 2>&1 &
  local pid=$!
  sleep 2
  b0="$(metric_sum nvmf_target_namespace_bytes_total)"
  c0="$(metric_sum nvmf_target_namespace_latency_seconds_count)"
  sleep 2
  b1="$(metric_sum nvmf_target_namespace_bytes_total)"
  c1="$(metric_sum nvmf_target_namespace_latency_seconds_count)"
  wait "$pid"
  echo "bytes $b0 -> $b1, commands timed $c0 -> $c1"
  [ "${b0:-0}" -gt 0 ] && [ "$b1" -gt "$b0" ] && [ "$c1" -gt "$c0" ]
}


ctrl_state() { cat "/sys/class/nvme/$1/state" 2>/dev/null; }

reload_listener() {
  local lp="$NVMF_GUEST_RELOAD_PORT" a b
  nvme disconnect -n "$RELOADNQN" >/dev/null 2>&1 || true
  host_request "reload listener-add"
  # The discovery log lists the subsystem on the new listener.
  wait_for 30 "the discovery log lists $RELOADNQN on port $lp" \
    bash -c "nvme discover -t tcp -a $TARGET -s $DPORT | grep -A3 'trsvcid: *$lp\$' | grep -q '$RELOADNQN'" || \
    wait_for 1 "(any form)" bash -c "nvme discover -t tcp -a $TARGET -s $DPORT | grep -q $lp"
  run nvme connect -t tcp -a "$TARGET" -s "$lp" -n "$RELOADNQN" -k 5 -c 2 -l 30 >/dev/null
  run nvme connect -t tcp -a "$TARGET" -s "$PORT" -n "$RELOADNQN" -k 5 >/dev/null
  wait_for 20 "a controller on port $lp" bash -c "[ -n \"\$(ls /sys/class/nvme)\" ]"
  a="$(ctrl_at "$RELOADNQN" "$lp")"
  b="$(ctrl_at "$RELOADNQN" "$PORT")"
  echo "controllers: $a on port $lp, $b on port $PORT"
  [ -n "$a" ] && [ -n "$b" ]
  wait_for 10 "both live" bash -c "[ \"\$(cat /sys/class/nvme/$a/state)\" = live ] && [ \"\$(cat /sys/class/nvme/$b/state)\" = live ]"
  # The listener goes: its connection closes (the host starts reconnecting,
  # and is refused); the other path stays live throughout.
  host_request "reload listener-remove"
  wait_for 30 "the controller on the removed listener leaves the live state" \
    bash -c "[ \"\$(cat /sys/class/nvme/$a/state 2>/dev/null)\" != live ]"
  echo "$a: $(ctrl_state "$a"); $b: $(ctrl_state "$b")"
  sleep 2
  [ "$(ctrl_state "$b")" = live ]
  # Nothing listens there any more.
  if nvme discover -t tcp -a "$TARGET" -s "$lp" >/dev/null 2>&1; then
    echo "port $lp still answers"
    return 1
  fi
  nvme disconnect -n "$RELOADNQN" >/dev/null 2>&1 || true
}

discovery_change_event() {
  # busybox's uevent runs a command per kernel uevent: the nvme core sends one with
  # NVME_AEN=0x70f002 when a discovery controller reports a Discovery Log Page Change.
  : >/tmp/aen.log
  busybox uevent sh -c '[ -z "$NVME_AEN" ] || echo "$NVME_AEN" >>/tmp/aen.log' &
  local mon=$! c d=""
  run nvme discover -t tcp -a "$TARGET" -s "$DPORT" --persistent -k 5 >/dev/null
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn" 2>/dev/null)" = nqn.2014-08.org.nvmexpress.discovery ] && d="$(basename "$c")"
  done
  [ -n "$d" ] && echo "persistent discovery controller $d"
  wait_for 10 "the discovery controller is live" bash -c "[ \"\$(cat /sys/class/nvme/$d/state)\" = live ]"
  sleep 1
  host_request "reload gone"
  local ok=0
  wait_for 30 "a Discovery Log Page Change event (NVME_AEN=0x70f002)" grep -q 0x70f002 /tmp/aen.log || ok=1
  kill "$mon" 2>/dev/null || true
  echo "uevents with NVME_AEN: $(tr '\n' ' ' </tmp/aen.log)"
  # The log no longer lists the subsystem the reload removed.
  if nvme discover -t tcp -a "$TARGET" -s "$DPORT" | grep -q "$RELOADNQN"; then
    echo "the discovery log still lists $RELOADNQN"
    ok=1
  fi
  nvme disconnect -d "$d" >/dev/null 2>&1 || true
  return "$ok"
}

# --- null namespace -----------------------------------------------------------------------------
null_io() {
  head -c 1048576 /dev/urandom >/tmp/rand.dat
  run dd if=/tmp/rand.dat of="/dev/$NS" bs=64k oflag=direct status=none
  run dd if="/dev/$NS" of=/tmp/back.dat bs=64k count=16 iflag=direct status=none
  head -c 1048576 /dev/zero >/tmp/zero.dat
  run cmp /tmp/zero.dat /tmp/back.dat
  run fio --name=null --filename="/dev/$NS" --size=64M --ioengine=libaio --direct=1 \
    --rw=randrw --bs=4k --iodepth=32 --runtime=3 --time_based --output-format=terse --minimal
}

# --- several namespaces in one subsystem --------------------------------------------------------
multi_ns() { # NSIDs 1 (64 MiB, 512), 3 (32 MiB, 4096), 7 (null 16 MiB): three disks, no cross-talk
  connect "$MULTINQN" >/dev/null
  local c out n disks=()
  c="$(ctrl_for "$MULTINQN")"
  out="$(run nvme list-ns "/dev/$c" 2>&1)"
  echo "$out"
  expect "^\[ *0\]:0x1\$" "$out"
  expect "^\[ *1\]:0x3\$" "$out"
  expect "^\[ *2\]:0x7\$" "$out"
  out="$(run nvme id-ns "/dev/$c" -n 2 2>&1)"
  expect "^nsze +: 0\$" "$out"
  for _ in $(seq 50); do
    disks=()
    for n in /sys/block/nvme*n*; do
      n="$(basename "$n")"
      [[ "$n" =~ ^nvme[0-9]+n[0-9]+$ ]] || continue
      [ "$(cat "/sys/block/$n/device/subsysnqn" 2>/dev/null)" = "$MULTINQN" ] && disks+=("$n")
    done
    [ "${#disks[@]}" -eq 3 ] && break
    sleep 0.2
  done
  local want=("1:67108864:512" "3:33554432:4096" "7:16777216:512") got=()
  for n in "${disks[@]}"; do
    got+=("$(cat "/sys/block/$n/nsid" 2>/dev/null || nvme get-ns-id "/dev/$n" | sed 's/.*namespace-id://'):$(($(cat "/sys/block/$n/size") * 512)):$(cat "/sys/block/$n/queue/logical_block_size")")
  done
  echo "disks ${disks[*]}: nsid:bytes:block ${got[*]}"
  mapfile -t got < <(printf '%s\n' "${got[@]}" | sort -n)
  [ "${got[*]}" = "${want[*]}" ] || {
    echo "expected ${want[*]}"
    return 1
  }
  # Different data on NSID 1 and 3 at the same offsets; each reads back its own.
  local d1="" d3=""
  for n in "${disks[@]}"; do
    case "$(cat "/sys/block/$n/nsid" 2>/dev/null || nvme get-ns-id "/dev/$n" | sed 's/.*namespace-id://')" in
    1) d1="$n" ;;
    3) d3="$n" ;;
    esac
  done
  head -c 4194304 /dev/urandom >/tmp/a.dat
  head -c 4194304 /dev/urandom >/tmp/b.dat
  run dd if=/tmp/a.dat of="/dev/$d1" bs=1M oflag=direct status=none
  run dd if=/tmp/b.dat of="/dev/$d3" bs=1M oflag=direct status=none
  run dd if="/dev/$d1" of=/tmp/a.back bs=1M count=4 iflag=direct status=none
  run dd if="/dev/$d3" of=/tmp/b.back bs=1M count=4 iflag=direct status=none
  run cmp /tmp/a.dat /tmp/a.back
  run cmp /tmp/b.dat /tmp/b.back
  out="$(run nvme ns-descs "/dev/$c" -n 3 2>&1)"
  echo "$out"
  expect "^nguid +: [0-9a-f]{32}\$" "$out"
  disconnect "$MULTINQN"
}

smart_counts_writes() { # Data Units Written grows by 10 MiB / 512000 bytes, rounded up
  local before after
  before=$(($(nvme smart-log "/dev/$CTRL" -o json | sed -n 's/.*"data_units_written" *: *"\{0,1\}\([0-9]*\).*/\1/p')))
  run dd if=/dev/urandom of="/dev/$NS" bs=1M count=10 seek=40 oflag=direct status=none
  after=$(($(nvme smart-log "/dev/$CTRL" -o json | sed -n 's/.*"data_units_written" *: *"\{0,1\}\([0-9]*\).*/\1/p')))
  echo "data_units_written $before -> $after"
  [ $((after - before)) -ge 20 ] && [ $((after - before)) -le 22 ]
}

big_write_zeroes() { # one Write Zeroes of 65536 blocks over random data
  local bs
  bs="$(cat "/sys/block/$NS/queue/logical_block_size")"
  run dd if=/dev/urandom of="/dev/$NS" bs=1M count=$((bs * 65536 >> 20)) seek=64 oflag=direct status=none
  run nvme write-zeroes "/dev/$NS" -s $(((64 << 20) / bs)) -c 65535
  run cmp -n $((bs * 65536)) <(dd if="/dev/$NS" bs=1M skip=64 count=$((bs * 65536 >> 20)) iflag=direct status=none) /dev/zero
}

# --- reset, keep-alive, queues ------------------------------------------------------------------
reset_under_io() {
  run fio --name=resetio --filename="/dev/$NS" --size=16M --offset=64M --ioengine=libaio \
    --direct=1 --rw=randwrite --bs=4k --iodepth=16 --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --output-format=terse --minimal >/tmp/fio-reset.out 2>&1 &
  local fio_pid=$!
  sleep 2
  run nvme reset "/dev/$CTRL"
  local rc=0
  wait "$fio_pid" || rc=$?
  cat /tmp/fio-reset.out
  wait_state "$CTRL" live 30
  return "$rc"
}

queue_depth_io() { # IODEPTH
  fio_verify qd "/dev/$NS" 8M --offset=32M --bs=4k --iodepth="$1"
  cat "/sys/block/$NS/queue/nr_requests"
}

# --- two controllers, one subsystem ---------------------------------------------------------------
multipath() { # a second path from a second host address (nvme-cli 2.3 ignores -D)
  ip addr show dev eth0 | grep -q 10.0.2.16/ || run ip addr add 10.0.2.16/24 dev eth0
  run nvme connect "${CONNECT_OPTS[@]}" -n "$RAM4K" --host-traddr=10.0.2.15
  run nvme connect "${CONNECT_OPTS[@]}" -n "$RAM4K" --host-traddr=10.0.2.16
  local ctrls=() c
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn")" = "$RAM4K" ] && ctrls+=("$(basename "$c"):$(cat "$c/cntlid"):$(cat "$c/state")")
  done
  echo "controllers (name:cntlid:state): ${ctrls[*]}"
  [ "${#ctrls[@]}" -eq 2 ] || return 1
  [ "${ctrls[0]#*:}" != "${ctrls[1]#*:}" ] || {
    echo "both controllers have the same cntlid"
    return 1
  }
  run nvme list-subsys
  run nvme id-ctrl "/dev/${ctrls[0]%%:*}" | grep -E '^(cmic|cntlid) '
  run nvme id-ns "/dev/${ctrls[0]%%:*}" -n 1 | grep -E '^nmic '
  local paths
  paths="$(find /sys/block -maxdepth 1 -name 'nvme*c*n1' | wc -l)"
  echo "namespace paths (nvmeXcYn1) $paths"
  NS="$(ns_for "${ctrls[0]%%:*}")"
  run ls "/sys/block/$NS/multipath" 2>/dev/null || true
  [ "$paths" -eq 2 ] || {
    echo "expected one namespace with two paths (native multipath)"
    return 1
  }
  fio_verify mp "/dev/$NS" 8M --offset=64M --bs=4k --numjobs=2 --offset_increment=8M
}

# --- discard --------------------------------------------------------------------------------------
discard_matches_dlfeat() { # after a deallocate, reads return what DLFEAT promises
  local dlfeat
  dlfeat=$(($(nvme id-ns "/dev/$NS" | sed -n 's/^dlfeat *: *//p')))
  echo "dlfeat $dlfeat; discard_max_bytes $(cat "/sys/block/$NS/queue/discard_max_bytes")"
  head -c 1048576 /dev/urandom >/tmp/rand.dat
  run dd if=/tmp/rand.dat of="/dev/$NS" bs=1M seek=20 oflag=direct status=none
  run blkdiscard -o $((20 << 20)) -l $((1 << 20)) "/dev/$NS"
  run dd if="/dev/$NS" of=/tmp/back.dat bs=1M skip=20 count=1 iflag=direct status=none
  case $((dlfeat & 7)) in
  1)
    head -c 1048576 /dev/zero >/tmp/zero.dat
    run cmp /tmp/zero.dat /tmp/back.dat
    ;;
  2) [ "$(tr -d '\377' </tmp/back.dat | wc -c)" -eq 0 ] ;;
  *) echo "DLFEAT does not say what deallocated blocks read as" ;;
  esac
}

fstrim_ext4() {
  FSTYPE=ext4
  run mkfs.ext4 -F -q -E nodiscard "/dev/$NS"
  mount_fs
  write_files
  run rm -f "$MNT/file3" "$MNT/file4"
  run fstrim -v "$MNT"
  verify_files_but 3 4
  umount_fs
  run fsck.ext4 -fn "/dev/$NS"
}

verify_files_but() { # the files written by write_files, less the ones removed
  local skip
  skip="$(printf 'file%s|' "$@")"
  grep -vE "\./(${skip%|})\$" "$MNT/SHA256SUMS" >/tmp/sums.left
  (cd "$MNT" && run sha256sum -c /tmp/sums.left >/tmp/sums.out) || {
    grep -v ': OK$' /tmp/sums.out
    return 1
  }
}

# --- discovery controller -------------------------------------------------------------------------
persistent_discovery() {
  local out c=""
  out="$(run nvme discover -t tcp -a "$TARGET" -s "$DPORT" --persistent --keep-alive-tmo=5 2>&1)"
  echo "$out"
  for x in /sys/class/nvme/nvme*; do
    [ "$(cat "$x/subsysnqn")" = "$DISCOVERY_NQN" ] && c="$(basename "$x")"
  done
  [ -n "$c" ] || {
    echo "no persistent discovery controller"
    return 1
  }
  echo "discovery controller $c"
  out="$(run nvme id-ctrl "/dev/$c" 2>&1)"
  expect "^cntrltype +: 2" "$out"
  expect "^subnqn +: $DISCOVERY_NQN\$" "$out"
  sleep 8
  wait_state "$c" live 1
  run nvme get-log "/dev/$c" --log-id=0x70 --log-len=1024 >/tmp/dlog.out
  head -n 5 /tmp/dlog.out
  run nvme disconnect -d "$c"
}

# --- several controllers at once, churn, disconnect under I/O, network outage ------------------------
concurrent_io() { # fio on five subsystems' namespaces at the same time (verify but on null)
  local nqn devs=() pids=() rc=0 i=0
  for nqn in "$RAM512" "$RAM4K" "$FILENQN" "$NULLNQN" "$DIRECTNQN"; do
    connect "$nqn" >/dev/null
    devs+=("/dev/$(ns_for "$(ctrl_for "$nqn")")")
  done
  echo "devices: ${devs[*]}"
  # Admin commands on the same controllers while the I/O runs.
  (for _ in $(seq 10); do
    for nqn in "$RAM512" "$RAM4K" "$FILENQN" "$NULLNQN" "$DIRECTNQN"; do
      nvme smart-log "/dev/$(ctrl_for "$nqn")" >/dev/null || echo "smart-log on $nqn failed"
      nvme get-feature "/dev/$(ctrl_for "$nqn")" -f 7 >/dev/null || echo "get-feature on $nqn failed"
    done
  done >/tmp/admin-loop.out 2>&1) &
  local admin_pid=$!
  for d in "${devs[@]}"; do
    i=$((i + 1))
    local v=(--verify=crc32c --verify_fatal=1 --do_verify=1)
    [ "$d" = "${devs[3]}" ] && v=()
    fio --name="c$i" --filename="$d" --size=4M --offset="$([ "$i" = 5 ] && echo 32M || echo 400M)" --ioengine=libaio --direct=1 \
      --rw=randwrite --bs=4k --iodepth=32 "${v[@]}" --output-format=terse --minimal \
      >"/tmp/fio-c$i.out" 2>&1 &
    pids+=($!)
  done
  i=0
  for p in "${pids[@]}"; do
    i=$((i + 1))
    wait "$p" || {
      echo "fio on ${devs[$((i - 1))]} failed:"
      rc=1
    }
    cut -c1-200 "/tmp/fio-c$i.out"
  done
  wait "$admin_pid" || true
  if [ -s /tmp/admin-loop.out ]; then
    cat /tmp/admin-loop.out
    rc=1
  fi
  for nqn in "$RAM512" "$RAM4K" "$FILENQN" "$NULLNQN" "$DIRECTNQN"; do disconnect "$nqn" >/dev/null || rc=1; done
  return "$rc"
}

churn() { # connect and disconnect 10 times, a little I/O each time
  local i
  for i in $(seq 10); do
    connect "$RAM512" >/dev/null
    NS="$(ns_for "$(ctrl_for "$RAM512")")"
    dd if="/dev/$NS" of=/dev/null bs=64k count=4 iflag=direct status=none
    disconnect "$RAM512" >/dev/null
  done
  echo "10 connect/disconnect cycles"
}

disconnect_under_io() { # disconnect with fio running: fio fails, nothing hangs, target fine
  connect "$RAM512" >/dev/null
  NS="$(ns_for "$(ctrl_for "$RAM512")")"
  fio --name=dio --filename="/dev/$NS" --size=64M --ioengine=libaio --direct=1 --rw=randrw \
    --bs=16k --iodepth=32 --runtime=30 --time_based --output-format=terse --minimal \
    >/tmp/fio-dio.out 2>&1 &
  local fio_pid=$!
  sleep 3
  run nvme disconnect -n "$RAM512"
  local rc=0
  wait "$fio_pid" || rc=$?
  echo "fio exit $rc (an error is expected)"
  [ -z "$(ctrl_for "$RAM512")" ]
  # The target still serves: connect again and verify some I/O.
  connect "$RAM512" >/dev/null
  NS="$(ns_for "$(ctrl_for "$RAM512")")"
  fio_verify after "/dev/$NS" 4M --offset=100M --bs=4k
  disconnect "$RAM512"
}

network_outage() { # the link goes down for 3 keep-alive periods: both sides time out, the host reconnects
  connect "$RAM512" --keep-alive-tmo=5 --ctrl-loss-tmo=60 >/dev/null
  CTRL="$(ctrl_for "$RAM512")"
  NS="$(ns_for "$CTRL")"
  head -c 1048576 /dev/urandom >/tmp/rand.dat
  run dd if=/tmp/rand.dat of="/dev/$NS" bs=1M seek=30 oflag=direct status=none
  run ip link set eth0 down
  sleep 16
  echo "state while the link is down: $(cat "/sys/class/nvme/$CTRL/state")"
  run ip link set eth0 up
  wait_state "$CTRL" live 45
  run dd if="/dev/$NS" of=/tmp/back.dat bs=1M skip=30 count=1 iflag=direct status=none
  run cmp /tmp/rand.dat /tmp/back.dat
  dmesg | grep "$CTRL" | tail -n 8
  disconnect "$RAM512"
}

# --- IPv6 -------------------------------------------------------------------------------------------
ipv6() { # the listener on the host's ::1, reached at fec0::2 (slirp)
  local v6port="$NVMF_GUEST_V6_PORT" out
  ip -6 addr show dev eth0 | grep -q 'fec0::15/' || run ip -6 addr add fec0::15/64 dev eth0 nodad
  run ip -6 addr show dev eth0
  out="$(run nvme discover -t tcp -a fec0::2 -s "$v6port" 2>&1)"
  echo "$out"
  expect "adrfam: +ipv6" "$out"
  expect "traddr: +::1" "$out"
  connect "$RAM512" -a fec0::2 -s "$v6port"
  NS="$(ns_for "$(ctrl_for "$RAM512")")"
  fio_verify v6 "/dev/$NS" 4M --offset=200M --bs=4k
  disconnect "$RAM512"
}

say "host $(cat /etc/nvme/hostnqn), target $TARGET:$PORT (discovery $DPORT)"

say "=== access control: $RESTRICTED allows only $ALLOWED_HOSTNQN"
check "discovery log hides $RESTRICTED from other hosts" discover_hides_restricted || true
check "discovery log shows $RESTRICTED to the allowed host" discover_shows_restricted || true
check "connect to $RESTRICTED as another host is refused" connect_restricted_refused || true
if check "connect to $RESTRICTED as the allowed host" connect_restricted_allowed; then
  check "disconnect $RESTRICTED" disconnect "$RESTRICTED" || true
fi

say "=== null namespace $NULLNQN"
NQN="$NULLNQN"
if check "connect $NULLNQN" connect "$NULLNQN"; then
  set_dev
  check "null: writes accepted, reads return zeroes, fio 3 s" null_io || true
  check "disconnect $NULLNQN" disconnect "$NULLNQN" || true
fi

if [ "$REFERENCE" != 1 ]; then
  say "=== $FAULTNQN: a namespace that fails on purpose"
  NQN="$FAULTNQN"
  if check "connect $FAULTNQN" connect "$FAULTNQN"; then
    set_dev
    check "media errors, no space, short read, a held read: errors not hangs; SMART and error log" faulty_namespace || true
    check "disconnect $FAULTNQN" disconnect "$FAULTNQN" || true
  fi
fi

if [ "$REFERENCE" != 1 ]; then
  say "=== $RELOADNQN: reload adds, grows and removes a namespace under a connected host"
  NQN="$RELOADNQN"
  if check "connect $RELOADNQN" connect "$RELOADNQN"; then
    set_dev
    check "reload: namespace 2 appears, grows, goes; same controller, no rescan" reload_live || true
    check "reload: the host is denied and loses its controller" reload_deny || true
    nvme disconnect -n "$RELOADNQN" >/dev/null 2>&1 || true
    check "reload: a listener added serves the host; removed, only its connection closes" reload_listener || true
  fi
fi

say "=== $MULTINQN: NSIDs 1, 3 and 7"
check "three namespaces: list, sizes, block sizes, separate data" multi_ns || true

say "=== $RAM512: reset, keep-alive, queue sizes"
NQN="$RAM512"
if check "connect -k 5 -Q 1024 (more than MQES)" connect "$RAM512" --keep-alive-tmo=5 --queue-size=1024; then
  set_dev
  check "queue size clamped: fio verify at iodepth 128" queue_depth_io 128 || true
  check "smart-log counts data units written" smart_counts_writes || true
  if [ -n "${NVMF_GUEST_METRICS_PORT:-}" ] && [ "$REFERENCE" != 1 ]; then
    check "metrics: the namespace's counters and latency histogram move during fio" metrics_during_io || true
  fi
  check "write-zeroes of 65536 blocks" big_write_zeroes || true
  check "idle for 11 s with keep-alive 5 s: still live" idle_keep_alive || true
  check "nvme reset keeps the data" reset_keeps_data || true
  check "nvme reset under fio: fio completes and verifies" reset_under_io || true
  check "disconnect" disconnect "$RAM512" || true
fi
if check "connect -Q 16" connect "$RAM512" --queue-size=16; then
  set_dev
  check "fio verify at iodepth 64 on a 16-entry queue" queue_depth_io 64 || true
  check "discard: reads after deallocate match DLFEAT" discard_matches_dlfeat || true
  check "ext4: fstrim, files intact, fsck clean" fstrim_ext4 || true
  check "disconnect" disconnect "$RAM512" || true
fi

say "=== $RAM4K: two controllers (multipath)"
NQN="$RAM4K"
check "two controllers, one namespace with two paths" multipath || true
check "disconnect both" bash -c "nvme disconnect -n '$RAM4K' | grep -q 'disconnected 2 controller'" || true
for c in /sys/class/nvme/nvme*; do
  [ -e "$c" ] && [ "$(cat "$c/subsysnqn")" = "$RAM4K" ] && nvme disconnect -d "$(basename "$c")" >/dev/null 2>&1
done

say "=== several controllers, churn, disconnect under I/O, network outage"
check "fio on five namespaces at once (ram, ram, file, null, O_DIRECT file)" concurrent_io || true
check "connect/disconnect 10 times" churn || true
check "disconnect under I/O, then connect and verify" disconnect_under_io || true
check "link down 16 s (keep-alive 5 s): host reconnects, data intact" network_outage || true

if [ -n "${NVMF_GUEST_V6_PORT:-}" ]; then
  say "=== IPv6"
  check "IPv6: discover, connect and fio verify over [fec0::2]:$NVMF_GUEST_V6_PORT" ipv6 || true
fi

say "=== persistent discovery controller"
check "discover --persistent: stays live 8 s with keep-alive 5 s" persistent_discovery || true

if [ "$REFERENCE" != 1 ]; then
  check "discover --persistent: a reload that removes a subsystem sends the change event" discovery_change_event || true
fi

say "=== $FILENQN: target crash (SIGKILL) and restart under a mounted XFS"
crash_and_restart "$FILENQN"

summary
[ "$failed" -eq 0 ]
