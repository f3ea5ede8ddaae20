# Shared by the guest test scripts (tests/kernel/guest-*.sh), sourced in the guest as
# /test/lib-guest.sh: settings from NVMF_GUEST_* variables, the check runner, and helpers.
# shellcheck shell=bash
# shellcheck disable=SC2034 # settings used by the scripts that source this

# NVMF_GUEST_REFERENCE=1: test the kernel's own target (nvmet) in this guest instead, with
# the same subsystems, to tell target bugs from test bugs.
REFERENCE="${NVMF_GUEST_REFERENCE:-0}"
# tcp, or rdma (then the target runs in this guest, on eth0's address: rxe does not route
# 127.0.0.1).
TRANSPORT="${NVMF_GUEST_TRANSPORT:-tcp}"
if [ "$TRANSPORT" = rdma ]; then
  TARGET=10.0.2.15
elif [ "$REFERENCE" = 1 ]; then
  TARGET=127.0.0.1
else
  TARGET="${NVMF_GUEST_TARGET_ADDR:-10.0.2.2}"
fi
PORT="${NVMF_GUEST_PORT:-4420}"
DPORT="${NVMF_GUEST_DISCOVERY_PORT:-8009}"
read -r -a SUBSYSTEMS <<<"${NVMF_GUEST_SUBSYSTEMS:-nqn.2026-01.io.nvmf-target:ram512=512 nqn.2026-01.io.nvmf-target:ram4k=4096}"
CHECK_TIMEOUT="${NVMF_GUEST_CHECK_TIMEOUT:-240}"
VERBOSE="${NVMF_GUEST_VERBOSE:-0}"
# A target that stops answering must fail the run quickly, not after the default 600 s.
CONNECT_OPTS=(-t "$TRANSPORT" -a "$TARGET" -s "$PORT" --ctrl-loss-tmo=20 --reconnect-delay=2)
DISCOVERY_NQN=nqn.2014-08.org.nvmexpress.discovery
# Namespace identifiers ns-descs must show (nvmet has no EUI-64).
read -r -a NIDS <<<"${NVMF_GUEST_EXPECT_NIDS:-eui64 nguid uuid}"
# Features get-feature must return: Arbitration, Power Management, Temperature Threshold,
# Error Recovery, Number of Queues, Write Atomicity, Async Event Config, Keep Alive Timer
# (nvmet implements only the last three of them and 7).
FEATURES=(1 2 4 5 7 0xa 0xb 0xf)
if [ "$REFERENCE" = 1 ]; then
  NIDS=(nguid uuid)
  FEATURES=(7 0xb 0xf)
fi

passed=0
failed=0
failures=()
T0=$(date +%s)
MNT=/mnt/nvmf
mkdir -p "$MNT"

say() { echo "[guest +$(($(date +%s) - T0))s] $*"; }
indent() { sed 's/^/    | /'; }

# check DESCRIPTION COMMAND [ARGS...]: runs COMMAND (a function or program) under `set -e`
# with a time limit; prints "ok" or "FAIL" with its output and the kernel messages it caused.
check() {
  local desc="$1"
  shift
  local out rc=0 start dmesg_before waited=0
  out="$(mktemp)"
  dmesg_before="$(dmesg | wc -l)"
  start=$(date +%s)
  # The command runs in a new bash with this shell's variables and functions: in a subshell
  # it would inherit the caller's `if check ...` / `check ... || true`, which turns `set -e`
  # off inside it, so a failing step in the middle of a function would go unnoticed.
  local state
  state="$(mktemp)"
  {
    declare -p | grep -Ev '^declare -[a-zA-Z-]*r|^declare -[a-zA-Z-]* (BASH[A-Z_]*|SHELLOPTS|EUID|PPID|UID|GROUPS|FUNCNAME|PIPESTATUS|DIRSTACK|RANDOM|SRANDOM|SECONDS|LINENO|HISTCMD|EPOCH[A-Z]*|_)='
    declare -f
  } >"$state"
  set +e
  bash -c 'source "$0" 2>/dev/null; set -eo pipefail; "$@"' "$state" "$@" >"$out" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    waited=$(($(date +%s) - start))
    if [ "$waited" -ge "$CHECK_TIMEOUT" ]; then
      kill -9 "$pid" 2>/dev/null
      echo "FAIL $desc: timed out after ${CHECK_TIMEOUT}s: $*"
      indent <"$out"
      echo "    kernel log:"
      dmesg | tail -n +"$((dmesg_before + 1))" | indent
      failed=$((failed + 1))
      failures+=("$desc (timeout)")
      summary
      exit 1
    fi
  done
  wait "$pid"
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $desc ($(($(date +%s) - start))s)"
    if [ "$VERBOSE" = 1 ]; then indent <"$out"; fi
  else
    failed=$((failed + 1))
    failures+=("$desc")
    echo "FAIL $desc: exit $rc: $*"
    indent <"$out"
    echo "    kernel log:"
    dmesg | tail -n +"$((dmesg_before + 1))" | indent
  fi
  rm -f "$out" "$state"
  return "$rc"
}

summary() {
  say "done"
  if [ "$failed" -gt 0 ]; then
    echo "failed checks:"
    printf '  - %s\n' "${failures[@]}"
  fi
  echo "kernel-host: $passed passed, $failed failed"
}

run() { # echo a command, then run it
  echo "+ $*"
  "$@"
}

expect() { # expect PATTERN TEXT...: grep -E for PATTERN in the text
  local pat="$1"
  shift
  if ! grep -qE -- "$pat" <<<"$*"; then
    echo "expected /$pat/ in the output above"
    return 1
  fi
}

# --- device lookup ------------------------------------------------------------------------------
ctrl_for() { # NQN -> live controller name (nvme0), or nothing
  local c
  for c in /sys/class/nvme/nvme*; do
    [ -e "$c/subsysnqn" ] || continue
    [ "$(cat "$c/subsysnqn")" = "$1" ] || continue
    [ "$(cat "$c/transport" 2>/dev/null)" = "$TRANSPORT" ] || continue
    basename "$c"
    return 0
  done
}

ns_for() { # CTRL -> its namespace block device (nvme0n1), waiting for it to appear
  local nqn b
  nqn="$(cat "/sys/class/nvme/$1/subsysnqn")"
  for _ in $(seq 100); do
    # device/ is the controller, or with native multipath the subsystem: both have subsysnqn.
    for b in /sys/block/nvme*n*; do
      b="$(basename "$b")"
      [[ "$b" =~ ^nvme[0-9]+n[0-9]+$ ]] || continue
      [ "$(cat "/sys/block/$b/device/subsysnqn" 2>/dev/null)" = "$nqn" ] || continue
      if [ -b "/dev/$b" ]; then
        echo "$b"
        return 0
      fi
    done
    sleep 0.1
  done
  return 1
}

# --- checks ---------------------------------------------------------------------------------
discover() { # PORT NQN
  local out
  out="$(run nvme discover -t "$TRANSPORT" -a "$TARGET" -s "$1" 2>&1)" || {
    echo "$out"
    return 1
  }
  echo "$out"
  expect "subnqn: +$2\$" "$out"
  expect "subnqn: +$DISCOVERY_NQN\$" "$out"
  expect "trsvcid: +$PORT( |\$)" "$out"
  expect "trtype: +$TRANSPORT( |\$)" "$out"
  if [ "$TRANSPORT" = rdma ]; then
    # TSAS: reliable connected, no provider specified, RDMA IP CM.
    expect "qptype: +connected" "$out"
    expect "cms: +rdma-cm" "$out"
  fi
}

discover_json() { # PORT NQN: the JSON form parses and lists the subsystem
  local out
  out="$(run nvme discover -t "$TRANSPORT" -a "$TARGET" -s "$1" -o json 2>&1)"
  echo "$out"
  expect "\"subnqn\" *: *\"$2\"" "$out"
}

wait_for() { # SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
  local s="$1" what="$2"
  shift 2
  for _ in $(seq $((s * 5))); do
    "$@" && return 0
    sleep 0.2
  done
  echo "waited ${s}s for: $what"
  return 1
}

ctrl_at() { # NQN PORT -> the controller of NQN connected to PORT, or nothing
  local c
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$1" ] || continue
    grep -q "trsvcid=$2\b" "$c/address" 2>/dev/null || continue
    basename "$c"
    return 0
  done
}

connect() { # NQN [OPTIONS...]: connects and checks a live controller and namespace appear
  local nqn="$1"
  shift
  run nvme connect "${CONNECT_OPTS[@]}" -n "$nqn" "$@"
  local ctrl ns
  ctrl="$(ctrl_for "$nqn")"
  [ -n "$ctrl" ] || {
    echo "no controller for $nqn in /sys/class/nvme"
    return 1
  }
  local state
  state="$(cat "/sys/class/nvme/$ctrl/state")"
  echo "controller $ctrl state $state"
  [ "$state" = live ] || return 1
  ns="$(ns_for "$ctrl")" || {
    echo "no namespace block device for $ctrl:"
    ls -l "/sys/class/nvme/$ctrl/" /dev/nvme*
    return 1
  }
  echo "namespace /dev/$ns"
}

disconnect() { # NQN
  local out
  out="$(run nvme disconnect -n "$1" 2>&1)"
  echo "$out"
  expect "disconnected 1 controller" "$out"
  local c
  for _ in $(seq 50); do
    c="$(ctrl_for "$1")"
    [ -z "$c" ] && return 0
    sleep 0.1
  done
  echo "controller $c still present after disconnect"
  return 1
}

nvme_list() {
  local out
  out="$(run nvme list 2>&1)"
  echo "$out"
  expect "/dev/$NS " "$out"
}

id_ctrl() {
  local out
  out="$(run nvme id-ctrl "/dev/$CTRL" 2>&1)"
  echo "$out"
  expect "^subnqn +: $NQN\$" "$out"
  expect "^sn +: [^ ]" "$out"
  expect "^mn +: [^ ]" "$out"
  expect "^ioccsz +: [1-9]" "$out"
  expect "^iorcsz +: [1-9]" "$out"
  expect "^sgls +: (0x)?0*[1-9a-f]" "$out"
  expect "^cntrltype +: 1" "$out"
}

id_ns() { # BS
  local out want_lbads bytes nsze
  out="$(run nvme id-ns "/dev/$NS" 2>&1)"
  echo "$out"
  want_lbads=$([ "$1" = 4096 ] && echo 12 || echo 9)
  expect "^lbaf +[0-9]+ : ms:0 +lbads:$want_lbads +rp:.*\(in use\)" "$out"
  nsze=$(($(sed -n 's/^nsze *: *//p' <<<"$out")))
  bytes="$(cat "/sys/block/$NS/size")"
  echo "nsze $nsze blocks of $1; kernel: $((bytes * 512)) bytes; logical_block_size $(cat "/sys/block/$NS/queue/logical_block_size")"
  [ "$((nsze * $1))" -eq "$((bytes * 512))" ]
  [ "$(cat "/sys/block/$NS/queue/logical_block_size")" -eq "$1" ]
}

ns_descs() {
  local out
  out="$(run nvme ns-descs "/dev/$NS" 2>&1)"
  echo "$out"
  local id
  for id in "${NIDS[@]}"; do
    case "$id" in
    eui64) expect "^eui64 +: [0-9a-f]{16}\$" "$out" ;;
    nguid) expect "^nguid +: [0-9a-f]{32}\$" "$out" ;;
    uuid) expect "^uuid +: [0-9a-f-]{36}\$" "$out" ;;
    esac
  done
  # The kernel took them too: sysfs shows each.
  local files=()
  for id in "${NIDS[@]}"; do
    case "$id" in
    eui64) files+=("/sys/block/$NS/eui") ;;
    *) files+=("/sys/block/$NS/$id") ;;
    esac
  done
  run cat "${files[@]}" "/sys/block/$NS/wwid"
}

smart_log() { run nvme smart-log "/dev/$CTRL"; }
error_log() { run nvme error-log "/dev/$CTRL" -e 4; }
fw_log() { run nvme fw-log "/dev/$CTRL"; }
get_feature() { run nvme get-feature "/dev/$CTRL" -f "$1" -H; }
list_ns() {
  local out
  out="$(run nvme list-ns "/dev/$CTRL" 2>&1)"
  echo "$out"
  expect "^\[ *0\]:0x1\$" "$out"
}
# (nvme show-regs in nvme-cli 2.3 fails on fabrics controllers, the kernel's nvmet too.)
properties() { # Property Get of CAP, VS, CC, CSTS: an enabled, ready controller
  local out v
  out="$(run nvme get-property "/dev/$CTRL" -o 0x0 2>&1)"
  echo "$out"
  expect "value: [0-9a-f]+" "$out"
  out="$(run nvme get-property "/dev/$CTRL" -o 0x8 2>&1)"
  echo "$out"
  v=$((0x$(sed -n 's/.*value: *\([0-9a-f]*\).*/\1/p' <<<"$out")))
  [ "$v" -ge $((0x10200)) ] || {
    echo "VS $v < 1.2"
    return 1
  }
  out="$(run nvme get-property "/dev/$CTRL" -o 0x14 2>&1)"
  echo "$out"
  v=$((0x$(sed -n 's/.*value: *\([0-9a-f]*\).*/\1/p' <<<"$out")))
  [ $((v & 1)) -eq 1 ] || {
    echo "CC.EN is 0"
    return 1
  }
  out="$(run nvme get-property "/dev/$CTRL" -o 0x1c 2>&1)"
  echo "$out"
  v=$((0x$(sed -n 's/.*value: *\([0-9a-f]*\).*/\1/p' <<<"$out")))
  [ $((v & 1)) -eq 1 ] || {
    echo "CSTS.RDY is 0"
    return 1
  }
}

pattern() { # FILE BYTES SEED: deterministic non-zero data
  # (`yes` ends on SIGPIPE: not a failure.)
  {
    yes "nvmf-target-$3-0123456789abcdef" || true
  } | head -c "$2" >"$1"
}

io_blocks() { # BS -> blocks per nvme-cli transfer: 8, or fewer if MDTS is smaller
  local max
  max=$(($(cat "/sys/block/$NS/queue/max_hw_sectors_kb") * 1024 / $1))
  echo $((max < 8 ? max : 8))
}

io_write_read() { # BS: nvme write, read back, cmp
  local bs="$1" blocks
  blocks="$(io_blocks "$bs")"
  pattern /tmp/w.dat $((bs * blocks)) a
  run nvme write "/dev/$NS" -s 16 -c $((blocks - 1)) -z $((bs * blocks)) -d /tmp/w.dat
  # (nvme-cli 2.3 opens its output without O_TRUNC: a longer file from an earlier
  # subsystem's read would keep its tail.)
  rm -f /tmp/r.dat
  run nvme read "/dev/$NS" -s 16 -c $((blocks - 1)) -z $((bs * blocks)) -d /tmp/r.dat
  run cmp /tmp/w.dat /tmp/r.dat
}

io_compare() { # BS: compare with the same data succeeds, with other data fails
  local bs="$1" blocks out
  blocks="$(io_blocks "$bs")"
  run nvme compare "/dev/$NS" -s 16 -c $((blocks - 1)) -z $((bs * blocks)) -d /tmp/w.dat
  pattern /tmp/x.dat $((bs * blocks)) b
  if out="$(run nvme compare "/dev/$NS" -s 16 -c $((blocks - 1)) -z $((bs * blocks)) -d /tmp/x.dat 2>&1)"; then
    echo "$out"
    echo "compare with different data succeeded"
    return 1
  fi
  echo "$out"
  expect "COMPARE_FAILED|Compare Failure|0x285|0x4285" "$out"
}

io_write_zeroes() { # BS
  local bs="$1" blocks
  blocks="$(io_blocks "$bs")"
  run nvme write-zeroes "/dev/$NS" -s 16 -c $((blocks - 1))
  rm -f /tmp/r.dat
  run nvme read "/dev/$NS" -s 16 -c $((blocks - 1)) -z $((bs * blocks)) -d /tmp/r.dat
  head -c $((bs * blocks)) /dev/zero >/tmp/z.dat
  run cmp /tmp/z.dat /tmp/r.dat
}

io_dsm() {
  run nvme dsm "/dev/$NS" --ad -s 16 -b 8
  run nvme dsm "/dev/$NS" --ad -s 0,4096 -b 4,4
}

io_flush() { run nvme flush "/dev/$NS" -n 1; }

io_oob() { # a read past the end must fail with LBA Out of Range
  local out nsze
  nsze=$(($(nvme id-ns "/dev/$NS" | sed -n 's/^nsze *: *//p')))
  if out="$(run nvme read "/dev/$NS" -s "$nsze" -c 0 -z "$1" -d /tmp/r.dat 2>&1)"; then
    echo "$out"
    echo "read at LBA $nsze (= nsze) succeeded"
    return 1
  fi
  echo "$out"
  expect "LBA_RANGE|LBA Out of Range|0x80" "$out"
}

dd_verify() { # MiB OFFSET_MiB: O_DIRECT write of random data, read back, compare
  head -c "$(($1 << 20))" /dev/urandom >/tmp/dd.dat
  run dd if=/tmp/dd.dat of="/dev/$NS" bs=1M seek="$2" oflag=direct conv=fsync status=none
  run dd if="/dev/$NS" of=/tmp/dd.back bs=1M skip="$2" count="$1" iflag=direct status=none
  run cmp /tmp/dd.dat /tmp/dd.back
  rm -f /tmp/dd.dat /tmp/dd.back
}

fio_verify() { # NAME FILE SIZE [FIO OPTIONS...]
  local name="$1" file="$2" size="$3"
  shift 3
  run fio --name="$name" --filename="$file" --size="$size" --ioengine=libaio --direct=1 \
    --rw=randwrite --iodepth=16 --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --randrepeat=0 --output-format=terse --terse-version=3 --minimal "$@" >/tmp/fio.out 2>&1 ||
    {
      cat /tmp/fio.out
      return 1
    }
  # terse v3: field 5 is read errors... the run failed above if verify failed; show the totals.
  awk -F';' '$3 != "" { printf "fio %s: read %s KiB, write %s KiB, errors %s\n", $3, $6, $47, $5 }' /tmp/fio.out
}

mkfs_ext4() { run mkfs.ext4 -F -q "/dev/$NS"; }
mkfs_xfs() { run mkfs.xfs -f -q "/dev/$NS"; }
mount_fs() { run mount -t "$FSTYPE" "/dev/$NS" "$MNT"; }
umount_fs() { run umount "$MNT"; }

write_files() {
  local i
  for i in 1 2 3 4; do
    run dd if=/dev/urandom of="$MNT/file$i" bs=1M count=$((i * 2)) status=none
  done
  mkdir -p "$MNT/dir/sub"
  for i in $(seq 200); do echo "small file $i" >"$MNT/dir/sub/f$i"; done
  (cd "$MNT" && find . -type f ! -name 'fio*' ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum) >/tmp/sums
  cp /tmp/sums "$MNT/SHA256SUMS"
  run sync
}

verify_files() {
  (cd "$MNT" && run sha256sum -c SHA256SUMS >/tmp/sums.out) || {
    grep -v ': OK$' /tmp/sums.out
    return 1
  }
  [ "$(wc -l <"$MNT/SHA256SUMS")" -ge 204 ]
}

fsck_ext4() { run fsck.ext4 -fn "/dev/$NS"; }
fsck_xfs() { run xfs_repair -n "/dev/$NS"; }

queues_mapped() { # expect the kernel to report the queue mapping for CTRL
  local line
  line="$(dmesg | grep "nvme $CTRL: mapped" | tail -1)"
  echo "$line"
  # -i 4 -W 1 -P 1: 1 default (write) queue, min(4, CPUs) read queues, 1 poll queue.
  local cpus
  cpus="$(nproc)"
  expect "mapped 1/$((cpus < 4 ? cpus : 4))/1 default/read/poll" "$line"
}

connect_bad_nqn() { # a connect to an unknown subsystem fails, and leaves no controller
  local out
  if out="$(run nvme connect "${CONNECT_OPTS[@]}" -n nqn.2026-01.io.nvmf-target:no-such-subsystem 2>&1)"; then
    echo "$out"
    echo "connect to an unknown NQN succeeded"
    return 1
  fi
  echo "$out"
  [ -z "$(ctrl_for nqn.2026-01.io.nvmf-target:no-such-subsystem)" ]
}

# --- device state -----------------------------------------------------------------------------
CTRL=""
NS=""
NQN=""
FSTYPE=""
set_dev() {
  CTRL="$(ctrl_for "$NQN")"
  NS="$(ns_for "$CTRL")"
  say "$NQN: controller /dev/$CTRL, namespace /dev/$NS"
}

reference_setup() { # nvmet on TARGET:PORT, each namespace a memory-backed null_blk
  local cfg=/sys/kernel/config/nvmet entry nqn bs nb
  run modprobe nvmet
  run modprobe "nvmet-$TRANSPORT"
  run modprobe null_blk nr_devices=0
  mkdir "$cfg/ports/1"
  echo "$TRANSPORT" >"$cfg/ports/1/addr_trtype"
  echo ipv4 >"$cfg/ports/1/addr_adrfam"
  echo "$TARGET" >"$cfg/ports/1/addr_traddr"
  echo "$PORT" >"$cfg/ports/1/addr_trsvcid"
  for entry in "${SUBSYSTEMS[@]}"; do
    nqn="${entry%=*}"
    bs="${entry##*=}"
    nb="/sys/kernel/config/nullb/nb$bs"
    mkdir "$nb"
    echo 512 >"$nb/size"
    echo "$bs" >"$nb/blocksize"
    echo 1 >"$nb/memory_backed"
    echo 1 >"$nb/discard"
    echo 1 >"$nb/power"
    mkdir "$cfg/subsystems/$nqn"
    echo 1 >"$cfg/subsystems/$nqn/attr_allow_any_host"
    mkdir "$cfg/subsystems/$nqn/namespaces/1"
    echo "/dev/nb$bs" >"$cfg/subsystems/$nqn/namespaces/1/device_path"
    printf "%032x\n" "$bs" >"$cfg/subsystems/$nqn/namespaces/1/device_nguid"
    echo 1 >"$cfg/subsystems/$nqn/namespaces/1/enable"
    ln -s "$cfg/subsystems/$nqn" "$cfg/ports/1/subsystems/$nqn"
  done
}

# --- per subsystem ------------------------------------------------------------------------------
basic() { # NQN BS
  NQN="$1"
  local bs="$2"
  say "=== $NQN (block size $bs): discovery, connect, admin, I/O, filesystems"
  if [ "$REFERENCE" != 1 ] && [ "$DPORT" != "$PORT" ]; then
    check "discover on port $DPORT lists $NQN" discover "$DPORT" "$NQN" || true
    check "discover -o json on port $DPORT" discover_json "$DPORT" "$NQN" || true
  fi
  check "discover on port $PORT lists $NQN" discover "$PORT" "$NQN" || true
  check "connect $NQN" connect "$NQN" || return 0
  set_dev
  check "nvme list shows /dev/$NS" nvme_list || true
  check "id-ctrl" id_ctrl || true
  check "id-ns: block size $bs, size" id_ns "$bs" || true
  check "ns-descs: ${NIDS[*]}" ns_descs || true
  check "list-ns" list_ns || true
  check "smart-log" smart_log || true
  check "error-log" error_log || true
  check "fw-log" fw_log || true
  check "get-property CAP, VS, CC, CSTS" properties || true
  local f
  for f in "${FEATURES[@]}"; do
    check "get-feature -f $f" get_feature "$f" || true
  done
  check "write + read" io_write_read "$bs" || true
  if [ "$REFERENCE" != 1 ]; then # nvmet has no Compare, and no range check on null_blk
    check "compare" io_compare "$bs" || true
    check "read past the end fails" io_oob "$bs" || true
  fi
  check "write-zeroes" io_write_zeroes "$bs" || true
  check "dsm --ad" io_dsm || true
  check "flush" io_flush || true
  check "dd 4 MiB O_DIRECT" dd_verify 4 64 || true
  check "fio raw randwrite verify 16 MiB" fio_verify raw "/dev/$NS" 16M --offset=128M --bsrange="$bs"-128k || true

  FSTYPE=ext4
  if check "mkfs.ext4" mkfs_ext4 && check "mount ext4" mount_fs; then
    check "ext4: write files" write_files || true
    check "ext4: fio randwrite verify 64 MiB" fio_verify fs "$MNT/fio.dat" 64M --bs=4k || true
    check "umount ext4" umount_fs || true
    check "fsck.ext4 -fn" fsck_ext4 || true
    if check "mount ext4 again" mount_fs; then
      check "ext4: files intact" verify_files || true
      check "umount ext4" umount_fs || true
    fi
  fi
  FSTYPE=xfs
  if check "mkfs.xfs" mkfs_xfs && check "mount xfs" mount_fs; then
    check "xfs: write files" write_files || true
    check "xfs: fio randwrite verify 64 MiB" fio_verify fs "$MNT/fio.dat" 64M --bsrange=4k-64k || true
    check "umount xfs" umount_fs || true
    check "xfs_repair -n" fsck_xfs || true
  fi
  check "disconnect $NQN" disconnect "$NQN" || true
}

multiqueue() { # NQN BS
  NQN="$1"
  local bs="$2"
  say "=== $NQN: reconnect with -i 4 --nr-write-queues=1 --nr-poll-queues=1"
  check "connect -i 4 -W 1 -P 1" connect "$NQN" -i 4 --nr-write-queues=1 --nr-poll-queues=1 || return 0
  set_dev
  check "queues: kernel mapped default/read/poll queues" queues_mapped || true
  check "queues: fio randrw verify, 2 jobs" fio_verify mq "/dev/$NS" 8M --offset=300M --numjobs=2 \
    --offset_increment=8M --bsrange="$bs"-64k --rw=randrw || true
  check "queues: fio polled (pvsync2 --hipri)" run fio --name=poll --filename="/dev/$NS" --size=2M \
    --offset=320M --ioengine=pvsync2 --hipri --direct=1 --rw=randwrite --bs=4k \
    --verify=crc32c --verify_fatal=1 --do_verify=1 --output-format=terse --minimal || true
  check "queues: disconnect" disconnect "$NQN" || true
}

wait_state() { # CTRL STATE SECONDS: wait until the controller is in STATE
  local s=""
  for _ in $(seq $(($3 * 5))); do
    s="$(cat "/sys/class/nvme/$1/state" 2>/dev/null || echo gone)"
    [ "$s" = "$2" ] && return 0
    sleep 0.2
  done
  echo "controller $1 is '$s', not '$2', after $3 s"
  return 1
}

reset_keeps_data() {
  head -c 1048576 /dev/urandom >/tmp/rand.dat
  run dd if=/tmp/rand.dat of="/dev/$NS" bs=1M seek=10 oflag=direct status=none
  run nvme reset "/dev/$CTRL"
  wait_state "$CTRL" live 30
  run dd if="/dev/$NS" of=/tmp/back.dat bs=1M skip=10 count=1 iflag=direct status=none
  run cmp /tmp/rand.dat /tmp/back.dat
  dmesg | grep "$CTRL" | tail -n 5
}

idle_keep_alive() { # connected with -k 5: idle for 2 keep-alive periods, still live
  wait_state "$CTRL" live 1
  echo "kato: $(cat "/sys/class/nvme/$CTRL/kato" 2>/dev/null || echo '?')"
  sleep 11
  wait_state "$CTRL" live 1
  if dmesg | grep -iE "$CTRL.*(keep-alive|keep alive)"; then
    echo "keep-alive trouble in the kernel log"
    return 1
  fi
  run dd if="/dev/$NS" of=/dev/null bs=4k count=1 iflag=direct status=none
}

# --- target crash and restart (each script defines kill_and_restart_target) -------------------
write_back_cache() { # a buffered file namespace has a volatile write cache: the host flushes
  local out
  out="$(run nvme id-ctrl "/dev/$CTRL" 2>&1)"
  expect "^vwc +: 0x7" "$out"
  run cat "/sys/block/$NS/queue/write_cache"
  [ "$(cat "/sys/block/$NS/queue/write_cache")" = "write back" ]
  run nvme get-feature "/dev/$CTRL" -f 6
  run nvme flush "/dev/$NS" -n 1
}

restart_prepare() {
  FSTYPE=xfs
  mkfs_xfs
  mount_fs
  write_files
  run sync
}

restart_target() {
  local before
  before="$(dmesg | grep -c "$CTRL" || true)"
  kill_and_restart_target
  # The controller notices the lost connection, then reconnects every 2 s.
  for _ in $(seq 100); do
    [ "$(cat "/sys/class/nvme/$CTRL/state")" != live ] && break
    sleep 0.2
  done
  echo "state after the crash: $(cat "/sys/class/nvme/$CTRL/state")"
  wait_state "$CTRL" live 40
  dmesg | grep "$CTRL" | tail -n +"$((before + 1))"
}

# The checks of a target crash under a mounted XFS on the file namespace NQN (a sequence of
# checks: run it in the script itself, not inside a check).
crash_and_restart() { # NQN
  NQN="$1"
  if check "connect $NQN" connect "$NQN"; then
    set_dev
    check "volatile write cache reported; the kernel flushes" write_back_cache || true
    if check "mkfs.xfs, mount, write files" restart_prepare; then
      if check "host reconnects after the target restarts" restart_target; then
        check "files intact after the restart, more writes, xfs_repair -n clean" restart_verify || true
      else
        umount -f "$MNT" 2>/dev/null || true
      fi
    fi
    check "disconnect $NQN" disconnect "$NQN" || true
  fi
}

restart_verify() {
  verify_files
  run dd if=/dev/urandom of="$MNT/after-restart" bs=1M count=4 status=none
  run sync
  umount_fs
  fsck_xfs
}

# --- a target running in this guest (the RDMA and NVMe suites) ------------------------------------
BIN=/test/nvmf-target
TLOG=/tmp/nvmf-target.log
# (Checks run in their own shells: the target's pid is kept in a file; its config is $CFG.)
target_pid() { cat /tmp/nvmf-target.pid; }

start_target() {
  local from
  touch "$TLOG"
  from=$(($(wc -l <"$TLOG") + 1))
  echo "---- target started $(date +%T) ----" >>"$TLOG"
  "$BIN" --config "$CFG" --log-level info >>"$TLOG" 2>&1 &
  echo $! >/tmp/nvmf-target.pid
  for _ in $(seq 100); do
    tail -n +"$from" "$TLOG" | grep -q "serving on" && break
    kill -0 "$(target_pid)" 2>/dev/null || break
    sleep 0.1
  done
  tail -n +"$from" "$TLOG" | tail -n 8
  kill -0 "$(target_pid)" 2>/dev/null && tail -n +"$from" "$TLOG" | grep -q "serving on"
}

# The target runs here: kill it as a crash would, and start it again.
kill_and_restart_target() {
  local pid
  pid="$(target_pid)"
  say "SIGKILL to the target (pid $pid), then start it again"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  start_target >/dev/null
}

stop_target() { # SIGTERM: an orderly stop, within 5 s, saying so in its log
  local pid
  pid="$(target_pid)"
  kill -TERM "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 3 "$TLOG"
  if kill -0 "$pid" 2>/dev/null; then
    echo "still running 5 s after SIGTERM"
    return 1
  fi
  grep -q "SIGTERM: closing every connection and stopping" "$TLOG"
}

target_log_clean() {
  if grep -nE 'panicked|RUST_BACKTRACE' "$TLOG"; then
    echo "the target panicked"
    return 1
  fi
  echo "error lines: $(grep -cE 'ERROR|error:' "$TLOG" || true)"
}

for m in ext4 xfs; do modprobe "$m"; done
