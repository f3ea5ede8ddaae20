#!/usr/bin/env bash
# Gives NVMe SSDs to nvmf-target's user-space driver (vfio-pci) and back to the kernel
# (nvme), sets up hugepages, and says what is missing, as SPDK's setup.sh does.
#
#   scripts/nvme-setup.sh status              NVMe controllers: driver, IOMMU group, disks
#   scripts/nvme-setup.sh bind PCI...         give them to vfio-pci (for backend = "nvme")
#   scripts/nvme-setup.sh unbind PCI...       give them back to the kernel's nvme driver
#   scripts/nvme-setup.sh hugepages N         reserve N 2 MiB hugepages
#
# PCI addresses look like 0000:01:00.0 (`status` lists them). A device given to vfio-pci
# leaves the kernel: its /dev/nvme* disks disappear, so nothing on them may be mounted or in
# use; bind refuses if anything is. Needs root, the IOMMU on (intel_iommu=on / amd_iommu=on),
# and the vfio-pci module.
set -euo pipefail

die() {
  echo "nvme-setup: $*" >&2
  exit 1
}
say() { echo "nvme-setup: $*"; }

[ "$(id -u)" -eq 0 ] || die "needs root"
sys=/sys/bus/pci/devices

nvme_controllers() { # PCI addresses of NVMe controllers (class 0x010802)
  local d
  for d in "$sys"/*; do
    [ "$(cat "$d/class" 2>/dev/null)" = 0x010802 ] && basename "$d"
  done
  return 0
}

driver_of() { basename "$(readlink "$sys/$1/driver" 2>/dev/null)" 2>/dev/null || echo none; }

disks_of() { # block devices of a controller bound to nvme
  local c
  for c in "$sys/$1"/nvme/nvme*; do
    [ -d "$c" ] || continue
    ls -d "$c"/nvme*n* 2>/dev/null | xargs -r -n1 basename
  done
}

in_use() { # PCI: prints what uses its disks (mounts, holders, swap); empty if nothing
  local d
  for d in $(disks_of "$1"); do
    grep -E "^/dev/${d}(p[0-9]+)? " /proc/mounts | awk '{ print "mounted: " $1 " on " $2 }'
    grep -E "^/dev/${d}(p[0-9]+)? " /proc/swaps | awk '{ print "swap: " $1 }'
    ls "/sys/block/$d/holders" 2>/dev/null | sed 's/^/held by: /'
    for p in /sys/block/"$d"/"$d"p*; do
      [ -d "$p" ] && ls "$p/holders" 2>/dev/null | sed 's/^/held by: /'
    done
  done
  return 0
}

check_iommu() {
  if [ -z "$(ls /sys/kernel/iommu_groups 2>/dev/null)" ]; then
    die "no IOMMU groups: turn the IOMMU on (intel_iommu=on or amd_iommu=on on the kernel command line, and VT-d/AMD-Vi in the firmware)"
  fi
}

status() {
  local any=0 p grp
  for p in $(nvme_controllers); do
    any=1
    grp="$(basename "$(readlink "$sys/$p/iommu_group" 2>/dev/null)" 2>/dev/null || echo -)"
    echo "$p  driver $(driver_of "$p")  iommu group ${grp:--}  disks: $(disks_of "$p" | tr '\n' ' ')"
  done
  [ "$any" = 1 ] || echo "no NVMe controllers"
  if [ -z "$(ls /sys/kernel/iommu_groups 2>/dev/null)" ]; then
    echo "IOMMU: off (vfio-pci needs it: intel_iommu=on / amd_iommu=on)"
  else
    echo "IOMMU: on"
  fi
  echo "hugepages (2 MiB): $(cat /proc/sys/vm/nr_hugepages) reserved, $(awk '/HugePages_Free/ { print $2 }' /proc/meminfo) free"
  [ -e /dev/vfio/vfio ] && echo "vfio: loaded" || echo "vfio: not loaded (modprobe vfio-pci)"
}

bind() {
  local p users
  check_iommu
  modprobe vfio-pci 2>/dev/null || [ -d /sys/bus/pci/drivers/vfio-pci ] ||
    die "cannot load vfio-pci"
  # The type-1 IOMMU backend VFIO containers use.
  modprobe vfio_iommu_type1 2>/dev/null || true
  for p in "$@"; do
    [ -e "$sys/$p" ] || die "no PCI device $p"
    [ "$(cat "$sys/$p/class")" = 0x010802 ] || die "$p is not an NVMe controller"
    if [ "$(driver_of "$p")" = vfio-pci ]; then
      say "$p: already bound to vfio-pci"
      continue
    fi
    users="$(in_use "$p")"
    [ -z "$users" ] || die "$p is in use, leaving it with the kernel:
$users"
    echo vfio-pci >"$sys/$p/driver_override"
    if [ -e "$sys/$p/driver" ]; then echo "$p" >"$sys/$p/driver/unbind"; fi
    echo "$p" >/sys/bus/pci/drivers_probe
    [ "$(driver_of "$p")" = vfio-pci ] || die "$p did not bind to vfio-pci (dmesg says why)"
    grp="$(basename "$(readlink "$sys/$p/iommu_group")")"
    say "$p: bound to vfio-pci (IOMMU group $grp, /dev/vfio/$grp)"
  done
}

unbind() {
  local p
  modprobe nvme 2>/dev/null || true
  for p in "$@"; do
    [ -e "$sys/$p" ] || die "no PCI device $p"
    echo "" >"$sys/$p/driver_override"
    if [ -e "$sys/$p/driver" ]; then echo "$p" >"$sys/$p/driver/unbind"; fi
    echo "$p" >/sys/bus/pci/drivers_probe
    say "$p: bound to $(driver_of "$p")"
  done
}

hugepages() {
  echo "$1" >/proc/sys/vm/nr_hugepages
  mkdir -p /dev/hugepages
  grep -q " /dev/hugepages " /proc/mounts || mount -t hugetlbfs nodev /dev/hugepages
  say "$(cat /proc/sys/vm/nr_hugepages) hugepages of 2 MiB reserved"
}

case "${1:-status}" in
status) status ;;
bind) shift; [ $# -gt 0 ] || die "bind: which PCI address?"; bind "$@" ;;
unbind) shift; [ $# -gt 0 ] || die "unbind: which PCI address?"; unbind "$@" ;;
hugepages) [ $# -eq 2 ] || die "hugepages N"; hugepages "$2" ;;
*) sed -n '2,13p' "$0"; exit 2 ;;
esac
