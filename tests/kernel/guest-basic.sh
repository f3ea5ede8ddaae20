#!/bin/bash
# Runs inside the QEMU guest (scripts/vm/run.sh): the Linux kernel NVMe/TCP host against
# nvmf-target on the host's loopback, reached at 10.0.2.2.
#
# For each subsystem (one namespace each) in NVMF_GUEST_SUBSYSTEMS ("NQN=BLOCK_SIZE ..."):
#   discovery on both ports; connect; nvme list, id-ctrl, id-ns, ns-descs, logs, features;
#   write/read/compare/write-zeroes/dsm/flush; raw fio verify; ext4 and XFS: mkfs, mount,
#   files, fio verify, fsck; disconnect; then reconnect with header and data digests (the
#   XFS files must still be there), with several I/O, write and poll queues, and with SQ
#   flow control disabled.
# Every check prints "ok" or "FAIL" with the command's output and the new kernel messages.
# The last line is "kernel-host: N passed, N failed"; the exit status is 1 if any failed.
set -euo pipefail

# shellcheck source=tests/kernel/lib-guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-guest.sh"

# --- per subsystem ------------------------------------------------------------------------------
basic() { # NQN BS
  NQN="$1"
  local bs="$2"
  say "=== $NQN (block size $bs): discovery, connect, admin, I/O, filesystems"
  if [ "$REFERENCE" != 1 ]; then
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

digests() { # NQN BS
  NQN="$1"
  local bs="$2"
  say "=== $NQN: reconnect with --hdr-digest --data-digest"
  check "connect --hdr-digest --data-digest" connect "$NQN" --hdr-digest --data-digest || return 0
  set_dev
  FSTYPE=xfs
  check "digest: dmesg/sysfs show no digest errors" bash -c "! dmesg | grep -i 'digest error'" || true
  if check "digest: mount xfs written by the last connection" mount_fs; then
    check "digest: xfs files intact" verify_files || true
    check "digest: umount" umount_fs || true
    check "digest: xfs_repair -n" fsck_xfs || true
  fi
  check "digest: dd 8 MiB O_DIRECT" dd_verify 8 200 || true
  check "digest: fio randwrite verify 16 MiB, 4k-128k" fio_verify digest "/dev/$NS" 16M --offset=256M --bsrange="$bs"-128k || true
  check "digest: disconnect" disconnect "$NQN" || true
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

sqflow() { # NQN BS
  NQN="$1"
  local bs="$2"
  say "=== $NQN: reconnect with --disable-sqflow (reads may then end with a C2HData SUCCESS flag, no response capsule)"
  check "connect --disable-sqflow" connect "$NQN" --disable-sqflow || return 0
  set_dev
  check "sqflow: dd 8 MiB O_DIRECT" dd_verify 8 360 || true
  check "sqflow: fio randrw verify 8 MiB, $bs-128k" fio_verify sqflow "/dev/$NS" 8M --offset=380M \
    --bsrange="$bs"-128k --rw=randrw || true
  check "sqflow: disconnect" disconnect "$NQN" || true
}

if [ "$REFERENCE" = 1 ]; then
  check "reference: set up nvmet" reference_setup || exit 1
fi
say "host $(cat /etc/nvme/hostnqn), target $TARGET:$PORT (discovery $DPORT), subsystems: ${SUBSYSTEMS[*]}"
check "connect to an unknown NQN fails" connect_bad_nqn || true
for entry in "${SUBSYSTEMS[@]}"; do
  nqn="${entry%=*}"
  bs="${entry##*=}"
  basic "$nqn" "$bs"
  digests "$nqn" "$bs"
  multiqueue "$nqn" "$bs"
  sqflow "$nqn" "$bs"
done
summary
[ "$failed" -eq 0 ]
