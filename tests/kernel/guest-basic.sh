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

# (basic and multiqueue are in lib-guest.sh: the RDMA suite runs them too.)

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
