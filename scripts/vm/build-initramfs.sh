#!/usr/bin/env bash
# Builds the guest kernel and initramfs for the kernel-host VM tests, from Debian 12 packages
# fetched with `apt-get download` (no debootstrap), and caches both.
#
#   scripts/vm/build-initramfs.sh        prints the image directory (last line of stdout)
#
# The image directory holds `kernel` (the Debian kernel, uncompressed ELF vmlinux booted
# through PVH), `initramfs.cpio` (uncompressed), `kernel-version` and `packages` (name=version lines).
# Everything lives in ${NVMF_VM_CACHE:-/var/cache/nvmf-target-vm}: downloads in debs/,
# images in images/KEY/ where KEY hashes the resolved package versions and this script, so
# a second run neither downloads nor rebuilds. Progress goes to stderr.
#
# Environment:
#   NVMF_VM_CACHE            cache directory (default /var/cache/nvmf-target-vm)
#   NVMF_VM_KERNEL_PKG       kernel package (default: what linux-image-amd64 depends on)
#   NVMF_VM_EXTRA_PACKAGES   more Debian packages to put in the guest (space-separated)
#   NVMF_VM_OFFLINE=1        do not consult apt: reuse the newest image already built
#
# It installs the host tools it needs (qemu-system-x86, cpio, xz-utils, binutils)
# with apt-get when they are missing.
set -euo pipefail

SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
CACHE="${NVMF_VM_CACHE:-/var/cache/nvmf-target-vm}"
ARCH=amd64
MULTIARCH=x86_64-linux-gnu

log() { echo "build-initramfs: [${SECONDS}s] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: cannot run apt-get"
  SUDO=(sudo)
fi

# --- host tools -------------------------------------------------------------------------
apt_updated=0
apt_update() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq >&2
    apt_updated=1
  fi
}

ensure_host_tools() {
  local -A tool_pkg=(
    [qemu-system-x86_64]=qemu-system-x86
    [cpio]=cpio
    [xz]=xz-utils
    [readelf]=binutils
    [dpkg-deb]=dpkg
    [timeout]=coreutils
    [flock]=util-linux
    [sha256sum]=coreutils
  )
  local missing=() t
  for t in "${!tool_pkg[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("${tool_pkg[$t]}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    apt_update
    log "installing host packages: ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >&2
  fi
}

# --- package resolution -------------------------------------------------------------------
# User-space packages whose files go into the guest whole (less docs); their shared libraries
# come from the library packages among their dependencies, copied per ELF DT_NEEDED.
GUEST_PACKAGES=(busybox-static bash nvme-cli libnvme1 e2fsprogs xfsprogs iproute2 fio rdma-core
  libibverbs1 librdmacm1 ibverbs-providers ibverbs-utils rdmacm-utils)
# Kernel modules the guest gets (with their modules.dep closure).
GUEST_MODULES=(
  virtio_pci virtio_net
  nvme-core nvme-fabrics nvme-tcp nvme-rdma
  nvmet nvmet-tcp nvmet-rdma null_blk loop
  rdma_rxe ib_uverbs rdma_ucm crc32_generic
  nvme vfio vfio-pci vfio_iommu_type1
  ext4 xfs crc32c_generic crc32c-intel
)

resolve_kernel_pkg() {
  if [ -n "${NVMF_VM_KERNEL_PKG:-}" ]; then
    echo "$NVMF_VM_KERNEL_PKG"
    return
  fi
  local k
  k="$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')"
  if [ -z "$k" ]; then
    apt_update
    k="$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')"
  fi
  [ -n "$k" ] || die "apt-cache offers no linux-image-*-amd64 (is this Debian 12?)"
  echo "$k"
}

# Prints "name=version" for every package an empty system needs to install PKGS.
resolve_closure() {
  local empty
  empty="$(mktemp)"
  # shellcheck disable=SC2064
  trap "rm -f '$empty'" RETURN
  apt-get -s -q -o Dir::State::status="$empty" -o APT::Install-Recommends=false \
    -o APT::Install-Suggests=false install "$@" 2>&1 |
    awk '$1 == "Inst" { v = $3; sub(/^\(/, "", v); print $2 "=" v }'
}

deb_file() { # name=version -> file name apt-get download writes
  local name="${1%%=*}" ver="${1#*=}"
  ver="${ver//:/%3a}"
  local f
  for f in "$CACHE/debs/${name}_${ver}_${ARCH}.deb" "$CACHE/debs/${name}_${ver}_all.deb"; do
    [ -e "$f" ] && {
      echo "$f"
      return 0
    }
  done
  return 1
}

# --- main -----------------------------------------------------------------------------------
ensure_host_tools
mkdir -p "$CACHE/debs" "$CACHE/images" 2>/dev/null || die "cannot create $CACHE (set NVMF_VM_CACHE)"
[ -w "$CACHE" ] || die "$CACHE is not writable (set NVMF_VM_CACHE)"

exec 9>"$CACHE/.lock"
flock 9
rm -rf "$CACHE"/build.* # left by an interrupted build (we hold the lock)

if [ "${NVMF_VM_OFFLINE:-0}" = 1 ]; then
  img="$(find "$CACHE/images" -mindepth 2 -maxdepth 2 -name complete -printf '%T@ %h\n' 2>/dev/null |
    sort -rn | awk 'NR == 1 { print $2 }')"
  [ -n "$img" ] || die "NVMF_VM_OFFLINE=1 but no image in $CACHE/images"
  echo "$img"
  exit 0
fi

# Resolving with apt takes seconds: remember the answer for this state of apt's lists.
apt_fingerprint() {
  {
    stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* /etc/apt/sources.list \
      /etc/apt/sources.list.d/* /etc/apt/preferences.d/* 2>/dev/null || true
    echo "${NVMF_VM_KERNEL_PKG:-} ${NVMF_VM_EXTRA_PACKAGES:-}"
    sha256sum "$SCRIPT_PATH"
  } | sha256sum | cut -c1-16
}
mkdir -p "$CACHE/resolved"
resolved="$CACHE/resolved/$(apt_fingerprint)"
if [ -s "$resolved" ]; then
  mapfile -t closure <"$resolved"
  kernel_pkg="${closure[0]}"
  closure=("${closure[@]:1}")
else
  kernel_pkg="$(resolve_kernel_pkg)"
fi
read -r -a extra_pkgs <<<"${NVMF_VM_EXTRA_PACKAGES:-}"
explicit=("$kernel_pkg" "${GUEST_PACKAGES[@]}" "${extra_pkgs[@]}")
if [ ! -s "$resolved" ]; then
  mapfile -t closure < <(resolve_closure "${explicit[@]}")
  if [ "${#closure[@]}" -eq 0 ] || ! printf '%s\n' "${closure[@]}" | grep -q "^${kernel_pkg}="; then
    apt_update
    mapfile -t closure < <(resolve_closure "${explicit[@]}")
  fi
  printf '%s\n' "${closure[@]}" | grep -q "^${kernel_pkg}=" ||
    die "apt cannot resolve: ${explicit[*]}: $(resolve_closure "${explicit[@]}" 2>&1 | tail -5)"
  rm -f "$CACHE"/resolved/*
  resolved="$CACHE/resolved/$(apt_fingerprint)"
  printf '%s\n' "$kernel_pkg" "${closure[@]}" >"$resolved"
fi

# Download the explicit packages and the shared-library packages among their dependencies.
is_explicit() {
  local p
  for p in "${explicit[@]}"; do [ "$p" = "$1" ] && return 0; done
  return 1
}
wanted=()
for pv in "${closure[@]}"; do
  name="${pv%%=*}"
  if is_explicit "$name" || [[ "$name" =~ ^(lib|zlib1g$) ]]; then
    wanted+=("$pv")
  fi
done
mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | sort)

key="$( (
  printf '%s\n' "${wanted[@]}"
  sha256sum "$SCRIPT_PATH"
) | sha256sum | cut -c1-16)"
img="$CACHE/images/$key"
if [ -e "$img/complete" ]; then
  log "cached image $img ($kernel_pkg)"
  echo "$img"
  exit 0
fi

t0=$SECONDS
to_fetch=()
for pv in "${wanted[@]}"; do
  deb_file "$pv" >/dev/null || to_fetch+=("$pv")
done
if [ "${#to_fetch[@]}" -gt 0 ]; then
  log "downloading ${#to_fetch[@]} packages into $CACHE/debs"
  (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "${to_fetch[@]}" >&2)
fi
for pv in "${wanted[@]}"; do
  deb_file "$pv" >/dev/null || die "download of $pv did not produce a .deb"
done

work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
libs="$work/libs"
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{dev,proc,sys,tmp,run,mnt,etc/nvme,root,var/tmp} "$libs"
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
chmod 1777 "$root/tmp" "$root/var/tmp"

# Unpack. The kernel and the user-space packages each on their own; libraries together.
log "unpacking"
dpkg-deb -x "$(deb_file "$(printf '%s\n' "${wanted[@]}" | grep "^${kernel_pkg}=")")" "$work/kernel"
mkdir -p "$work/pkg"
pids=()
lib_debs=()
for pv in "${wanted[@]}"; do
  name="${pv%%=*}"
  [ "$name" = "$kernel_pkg" ] && continue
  if is_explicit "$name"; then
    dpkg-deb -x "$(deb_file "$pv")" "$work/pkg/$name" &
    pids+=($!)
  else
    lib_debs+=("$(deb_file "$pv")")
  fi
done
(for d in "${lib_debs[@]}"; do dpkg-deb -x "$d" "$libs"; done) &
pids+=($!)
unpack_failed=0
for p in "${pids[@]}"; do wait "$p" || unpack_failed=1; done
[ "$unpack_failed" -eq 0 ] || die "dpkg-deb -x failed"

# User-space packages into the merged-/usr root, without documentation and service files.
for name in "${explicit[@]}"; do
  [ "$name" = "$kernel_pkg" ] && continue
  (cd "$work/pkg/$name" && tar -c \
    --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/info \
    --exclude=./usr/share/locale --exclude=./usr/share/lintian \
    --exclude=./usr/share/bash-completion --exclude=./usr/share/zsh \
    --exclude=./usr/share/initramfs-tools --exclude=./usr/include \
    --exclude=./lib/systemd --exclude=./usr/lib/systemd --exclude=./lib/udev \
    --exclude=./etc/init.d --exclude=./etc/cron.d --exclude="./usr/lib/$MULTIARCH/tc" .) |
    (cd "$root" && tar -x --keep-directory-symlink)
done

# Shared libraries: follow DT_NEEDED (and RUNPATH) from every ELF object in the root.
norm() { # path relative to a Debian tree -> path in the merged-/usr root
  case "$1" in
  lib/* | lib64/* | bin/* | sbin/*) echo "usr/$1" ;;
  *) echo "$1" ;;
  esac
}
find_lib() { # soname runpath-dirs... -> path relative to root, copying it in when needed
  local so="$1" d rel
  shift
  for d in "$@" lib/$MULTIARCH usr/lib/$MULTIARCH lib usr/lib; do
    rel="$(norm "$d/$so")"
    if [ -e "$root/$rel" ]; then
      echo "$rel"
      return 0
    fi
    if [ -e "$libs/$d/$so" ]; then
      mkdir -p "$(dirname "$root/$rel")"
      cp -L "$libs/$d/$so" "$root/$rel"
      echo "$rel"
      return 0
    fi
  done
  return 1
}
log "resolving shared libraries"
mapfile -t queue < <(cd "$root" && find usr -type f \( -perm -u+x -o -name '*.so*' \) -print)
declare -A seen=()
missing_libs=()
while [ "${#queue[@]}" -gt 0 ]; do
  f="${queue[0]}"
  queue=("${queue[@]:1}")
  [ -n "${seen[$f]:-}" ] && continue
  seen[$f]=1
  dyn="$(readelf -d "$root/$f" 2>/dev/null)" || continue
  rp=()
  while read -r dir; do
    dir="${dir//\$ORIGIN/$(dirname "$f")}"
    rp+=("${dir#/}")
  done < <(sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p' <<<"$dyn" | tr ':' '\n')
  while read -r so; do
    if rel="$(find_lib "$so" "${rp[@]}")"; then
      queue+=("$rel")
    else
      missing_libs+=("$so (needed by /$f)")
    fi
  done < <(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dyn")
done
[ "${#missing_libs[@]}" -eq 0 ] || die "unresolved libraries: ${missing_libs[*]}"
find_lib ld-linux-x86-64.so.2 >/dev/null || die "no dynamic loader"
ln -sf "../lib/$MULTIARCH/ld-linux-x86-64.so.2" "$root/usr/lib64/ld-linux-x86-64.so.2"
printf '/usr/lib/%s\n/usr/lib\n' "$MULTIARCH" >"$root/etc/ld.so.conf"
if command -v ldconfig >/dev/null 2>&1; then ldconfig -r "$root" 2>/dev/null || true; fi

# Kernel modules: the wanted ones and their modules.dep closure.
kver="$(ls "$work/kernel/lib/modules")"
[ "$(wc -w <<<"$kver")" -eq 1 ] || die "expected one kernel version in $kernel_pkg, found: $kver"
busybox="$root/usr/bin/busybox"
[ -x "$busybox" ] || die "busybox-static did not provide /bin/busybox"
log "modules for $kver"
"$busybox" depmod -b "$work/kernel" "$kver"
moddir="$work/kernel/lib/modules/$kver"
declare -A modsel=()
for m in "${GUEST_MODULES[@]}"; do
  alt="${m//-/_}"
  alt2="${m//_/-}"
  line="$(grep -E "/(${m}|${alt}|${alt2})\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1)" ||
    die "module $m not in $kernel_pkg"
  for p in ${line//:/ }; do modsel[$p]=1; done
done
for p in "${!modsel[@]}"; do
  mkdir -p "$(dirname "$root/usr/lib/modules/$kver/$p")"
  cp "$moddir/$p" "$root/usr/lib/modules/$kver/$p"
done
cp "$moddir"/modules.builtin* "$moddir/modules.order" "$root/usr/lib/modules/$kver/"
"$busybox" depmod -b "$root" "$kver"

# The kernel, booted as an uncompressed ELF through its PVH entry point (no decompression
# under TCG). Debian's bzImage is xz-compressed; the payload starts at the xz magic.
vmlinuz="$work/kernel/boot/vmlinuz-$kver"
off="$(LC_ALL=C grep -abo -m1 -P '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)" ||
  die "no xz payload in $vmlinuz"
tail -c +"$((off + 1))" "$vmlinuz" | xz -dc 2>/dev/null >"$work/vmlinux" || true
readelf -h "$work/vmlinux" >/dev/null 2>&1 || die "could not extract vmlinux from $vmlinuz"
readelf -n "$work/vmlinux" 2>/dev/null | grep -q 'Xen' || log "warning: vmlinux has no PVH note"

# Busybox applets for whatever the packages do not provide; they come last in PATH so the
# real ip, mount helpers, etc. win. Kernel helpers call /sbin/modprobe.
mkdir -p "$root/usr/libexec/busybox"
for a in $("$busybox" --list); do
  ln -s /usr/bin/busybox "$root/usr/libexec/busybox/$a"
done
for a in modprobe insmod rmmod lsmod depmod modinfo poweroff reboot halt; do
  [ -e "$root/usr/sbin/$a" ] || ln -s /usr/bin/busybox "$root/usr/sbin/$a"
done
[ -e "$root/usr/bin/sh" ] || ln -s busybox "$root/usr/bin/sh"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
disk:x:6:
EOF
ln -s /proc/self/mounts "$root/etc/mtab"
echo nvmf-guest >"$root/etc/hostname"
echo "$kver" >"$root/etc/kernel-version"

cat >"$root/init" <<'EOF'
#!/bin/bash
# Guest init: mounts, modules, network, NVMe host identity, then /test/script.
export PATH=/usr/sbin:/usr/bin:/usr/libexec/busybox HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr

die() {
  echo "init: $*"
  echo "VM-EXIT-STATUS=125"
  poweroff -f
  echo o >/proc/sysrq-trigger
  sleep 10
}

for m in virtio_pci virtio_net configfs crc32c_generic crc32c-intel nvme-tcp; do
  modprobe "$m" || echo "init: modprobe $m failed"
done
grep -q " /sys/kernel/config " /proc/mounts || mount -t configfs configfs /sys/kernel/config

ip link set lo up
# No IPv6 autoconfiguration (no default route): tests add fec0::15/64 when they need IPv6.
for f in /proc/sys/net/ipv6/conf/*/accept_ra /proc/sys/net/ipv6/conf/*/autoconf; do
  echo 0 >"$f" 2>/dev/null || true
done
for _ in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
for f in /proc/sys/net/ipv6/conf/eth0/accept_ra /proc/sys/net/ipv6/conf/eth0/autoconf; do
  echo 0 >"$f" 2>/dev/null || true
done
ip link set eth0 up || die "no eth0"
# Only the slirp subnet: the guest reaches the host's loopback at 10.0.2.2 and nothing else.
ip addr add 10.0.2.15/24 dev eth0

uuid="$(cat /proc/sys/kernel/random/uuid)"
echo "nqn.2014-08.org.nvmexpress:uuid:$uuid" >/etc/nvme/hostnqn
echo "$uuid" >/etc/nvme/hostid

if [ -r /test/env ]; then
  set -a
  # shellcheck disable=SC1091
  . /test/env
  set +a
fi
args=()
[ -r /test/args ] && mapfile -d '' -t args </test/args
echo "init: up after $(cut -d' ' -f1 /proc/uptime)s; running ${NVMF_VM_SCRIPT_NAME:-/test/script}"
status=125
if [ -r /test/script ]; then
  cd /test && bash /test/script "${args[@]}"
  status=$?
  cd /
else
  echo "init: no /test/script"
fi
sync
echo "VM-EXIT-STATUS=$status"
poweroff -f
echo o >/proc/sysrq-trigger
sleep 10
EOF
chmod 755 "$root/init"

# dev/console so the kernel's early console open succeeds.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

log "packing initramfs"
mkdir -p "$work/out"
# Uncompressed: under TCG the kernel takes seconds to decompress it, but copies it quickly.
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --owner=0:0 --quiet) >"$work/out/initramfs.cpio"
mv "$work/vmlinux" "$work/out/kernel"
echo "$kver" >"$work/out/kernel-version"
printf '%s\n' "${wanted[@]}" >"$work/out/packages"
touch "$work/out/complete"
rm -rf "$img"
mv "$work/out" "$img"

# Keep only this image and the packages it was built from.
for d in "$CACHE"/images/*; do
  [ "$d" = "$img" ] || rm -rf "$d"
done
declare -A keep=()
for pv in "${wanted[@]}"; do keep["$(deb_file "$pv")"]=1; done
for f in "$CACHE"/debs/*.deb; do
  [ -n "${keep[$f]:-}" ] || rm -f "$f"
done

log "built $img in $((SECONDS - t0))s: $(du -h "$img/initramfs.cpio" | cut -f1) initramfs, kernel $kver"
echo "$img"
