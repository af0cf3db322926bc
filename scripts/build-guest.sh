#!/bin/bash
# Builds a tiny Linux guest for scsictl's end-to-end tests: a kernel and an
# initramfs holding busybox, qemu-ga (guest-exec allowed), e2fsprogs' mke2fs,
# util-linux's blkid, dmsetup (encrypted scratch disks, dm-verity layers) and
# the kernel modules for virtio-scsi disks, ext4, dm-crypt and dm-verity.
# Debian packages only: the kernel package that linux-image-amd64 depends on,
# busybox-static, qemu-guest-agent, dmsetup and libdevmapper1.02.1 are
# fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is
# installed on the host); the other shared libraries, mke2fs and blkid come
# from the host's own Debian packages (qemu-ga's libraries are those
# qemu-system-x86 already needs: glib, numa, uring, udev; dmsetup's others,
# libselinux and libpcre2, are in Debian's required set). Needs apt access
# (apt-get update done) on the first build.
#
# Usage: scripts/build-guest.sh [cache-dir]
#        (installed with the rock, or by `cmake --install`, as scsictl-build-guest)
#   cache-dir   default $SCSICTL_GUEST_DIR, else build/guest in a checkout,
#               else ${XDG_CACHE_HOME:-~/.cache}/scsictl/guest (the defaults
#               of scsictl.qemu_guest.locate). The guest goes to
#               <cache-dir>/<kernel version>/ and <cache-dir>/latest points
#               at it. A finished build is reused (delete the directory, or
#               set SCSICTL_GUEST_REBUILD=1, to rebuild).
# Output (in <cache-dir>/<kernel version>/):
#   vmlinuz        the kernel as Debian ships it (bzImage)
#   vmlinux        the same kernel uncompressed (ELF with a PVH note: QEMU
#                  boots it directly, ~2x faster under TCG); absent when the
#                  kernel has no CONFIG_PVH
#   initrd.cpio.gz the initramfs
#   guest.env      FORMAT=, KVER=, KERNEL=, VMLINUX=, INITRD=, MODULES= (shell syntax)
# The last line on stdout is the output directory.
#
# Guest layout: /init mounts proc, sysfs, devtmpfs and a tmpfs on /run, loads
# the modules (in dependency order, from /lib/modules/load-order), finds the
# virtio-serial port named org.qemu.guest_agent.0 under
# /sys/class/virtio-ports and runs `qemu-ga -m virtio-serial -p /dev/vportNpM
# -t /run` in a respawn loop. Boot it with
#   -kernel vmlinux -initrd initrd.cpio.gz -append "console=ttyS0 quiet"
#   -chardev socket,id=qga0,path=qga.sock,server=on,wait=off
#   -device virtio-serial-pci -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0
#   -device virtio-rng-pci      (entropy: without it mke2fs waits ~4 s for the RNG)
# (scsictl.qemu_guest.launch does all that.)
set -euo pipefail
unset LD_PRELOAD                      # a sanitizer runtime must not reach host tools

if [ -f "$(dirname "$0")/../core/include/scsictl.h" ]; then
    default=build/guest                              # scripts/ of a checkout
else
    case ${XDG_CACHE_HOME:-} in /*) default=$XDG_CACHE_HOME ;; *) default=${HOME:?}/.cache ;; esac
    default=$default/scsictl/guest
fi
cache=${1:-${SCSICTL_GUEST_DIR:-$default}}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

die() { echo "build-guest: $*" >&2; exit 1; }
# A missing tool is named with its Debian package (scripts/deps.txt).
need() {
    local pkg
    PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null && return 0
    pkg=$(awk -v t="$1" '$1 !~ /^#/ { n = split($3, w, ","); for (i = 1; i <= n; i++) if (w[i] == t) { print $2; exit } }' \
          "$(dirname "$0")/deps.txt" 2>/dev/null || true)
    die "needs '$1': install the Debian package ${pkg:-that provides it} (scripts/deps.sh does)"
}
for tool in apt-get apt-cache dpkg-deb xz gzip ldd find sort od tr flock mke2fs blkid; do need "$tool"; done

# The kernel package linux-image-amd64 depends on (its version is the key).
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1
}
# A fresh machine may have no package lists yet: as root, fetch them once.
apt_update_once() {
    if [ -z "${updated:-}" ] && [ "$(id -u)" = 0 ]; then
        updated=1
        apt-get update -qq >/dev/null 2>&1 || true
        return 0
    fi
    return 1
}
kpkg=$(kernel_package)
if [ -z "$kpkg" ] && apt_update_once; then kpkg=$(kernel_package); fi
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (run apt-get update)"
kver=${kpkg#linux-image-}
out=$cache/$kver

# One build at a time per cache (parallel test runs share it).
exec 9> "$cache/.lock"
flock 9

# Bumped whenever the guest's content changes (scsictl.qemu_guest checks it).
format=4
if [ -f "$out/guest.env" ] && grep -qx "FORMAT=$format" "$out/guest.env" \
        && [ "${SCSICTL_GUEST_REBUILD:-0}" != 1 ]; then
    ln -sfn "$kver" "$cache/latest"
    echo "$out"
    exit 0
fi

start=$(date +%s)
work=$(mktemp -d "$cache/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"                     # apt's _apt user downloads into it

# 1. Packages.
# dmsetup alone drives dm-crypt and dm-verity (tables written by the guest
# scripts): cryptsetup would add libcryptsetup, libcrypto, argon2 and json-c,
# some 6 MB, for features a scratch key that dies with its mapping and a
# verity superblock read by the script do not use.
packages="$kpkg busybox-static qemu-guest-agent dmsetup libdevmapper1.02.1"
# shellcheck disable=SC2086  # a list of package names
download() { (cd "$work" && apt-get download -q $packages) > "$work/apt.log" 2>&1; }
if ! download && ! { apt_update_once && download; }; then
    cat "$work/apt.log" >&2
    die "apt-get download $packages failed"
fi
for p in $packages; do
    deb=
    for f in "$work/${p}"_*.deb; do [ -f "$f" ] && deb=$f; done
    [ -n "$deb" ] || die "apt-get download did not fetch $p"
    dpkg-deb -x "$deb" "$work/x"
done
x=$work/x
moddir=$x/lib/modules/$kver
[ -f "$x/boot/vmlinuz-$kver" ] || die "no /boot/vmlinuz-$kver in $kpkg"
[ -d "$moddir" ] || die "no /lib/modules/$kver in $kpkg"

# 2. The initramfs tree.
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc,lib/modules,lib64,mnt}
cp "$x/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -s bin "$root/sbin"

# Dynamic executables with their libraries and the loader (through ldd);
# a library unpacked from a fetched package is taken from there (and goes to
# its path without the unpack directory), the others from the host.
unpacked_libs=$x/lib/x86_64-linux-gnu:$x/usr/lib/x86_64-linux-gnu
copy_libs() {
    local line lib dest
    while read -r line; do
        case $line in
        *"not found"*) die "$1 needs a library the host lacks: $line" ;;
        *"=> /"*) lib=${line#*=> }; lib=${lib%% (*} ;;
        /*) lib=${line%% (*} ;;
        *) continue ;;
        esac
        dest=${lib#"$x"}
        mkdir -p "$root$(dirname "$dest")"
        [ -e "$root$dest" ] || cp -L "$lib" "$root$dest"
    done < <(LD_LIBRARY_PATH=$unpacked_libs ldd "$1")
}
install_exe() {                       # install_exe <source> <name in /bin>
    rm -f "$root/bin/$2"
    cp -L "$1" "$root/bin/$2"
    copy_libs "$1"
}
install_exe "$x/usr/sbin/qemu-ga" qemu-ga
install_exe "$x/sbin/dmsetup" dmsetup
for t in mke2fs blkid; do
    install_exe "$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$t")" "$t"
done
for fs in ext2 ext3 ext4; do
    rm -f "$root/bin/mkfs.$fs"
    ln -s mke2fs "$root/bin/mkfs.$fs"
done
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"

# 3. Kernel modules: the closure of what the guest needs, in load order.
# Dependencies come from each module's .modinfo "depends=" (no depmod run
# over the whole tree needed); built-in ones are skipped via modules.builtin.
# dm-crypt finds its cipher templates (xts, ecb; aes is built in) and
# dm-verity its hash (sha256, built in) through the crypto API, which would
# modprobe a missing one: the guest has no modprobe tree, so they are loaded
# at boot like the rest.
wanted="virtio_pci virtio_console virtio_scsi sd_mod ext4 crc32c_generic virtio_rng
        dm_mod dm_crypt dm_verity xts ecb"
norm() { echo "$1" | tr - _; }
declare -A modfile=() builtin=() done_mod=()
while read -r f; do
    n=${f##*/}; n=${n%%.ko*}
    modfile[$(norm "$n")]=$f
done < <(find "$moddir/kernel" -name '*.ko*')
while read -r f; do
    n=${f##*/}; n=${n%%.ko*}
    builtin[$(norm "$n")]=1
done < "$moddir/modules.builtin"
order=()
modinfo_depends() {
    case $1 in
    *.ko) tr '\0' '\n' < "$1" ;;
    *.ko.xz) xz -dc "$1" | tr '\0' '\n' ;;
    *.ko.zst) need zstd; zstd -dc "$1" | tr '\0' '\n' ;;
    *.ko.gz) gzip -dc "$1" | tr '\0' '\n' ;;
    esac | sed -n 's/^depends=//p' | head -n 1 | tr , ' '
}
add_module() {
    local m d
    m=$(norm "$1")
    [ -n "${done_mod[$m]:-}" ] && return 0
    done_mod[$m]=1
    [ -n "${builtin[$m]:-}" ] && return 0
    [ -n "${modfile[$m]:-}" ] || die "kernel $kver has no module $m"
    for d in $(modinfo_depends "${modfile[$m]}"); do add_module "$d"; done
    order+=("$m")
}
for m in $wanted; do add_module "$m"; done
: > "$root/lib/modules/load-order"
for m in "${order[@]}"; do
    f=${modfile[$m]}
    case $f in
    *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.zst) need zstd; zstd -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" > "$root/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$root/lib/modules/load-order"
done

# 4. /init.
cat > "$root/init" <<'EOF'
#!/bin/sh
# scsictl test guest. PID 1: never exits.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/pts /run/mounts
exec </dev/console >/dev/console 2>&1
for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || echo "scsictl-guest: insmod $m failed"
done
port=
i=0
while [ -z "$port" ] && [ $i -lt 500 ]; do
    for p in /sys/class/virtio-ports/*; do
        [ -f "$p/name" ] && [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && [ -e "$port" ] && break
    port=
    i=$((i + 1))
    sleep 0.02
done
if [ -z "$port" ]; then
    echo "scsictl-guest: no virtio port org.qemu.guest_agent.0"
    exec sh
fi
echo "scsictl-guest: agent on $port"
while true; do
    qemu-ga -m virtio-serial -p "$port" -t /run -f /run/qemu-ga.pid
    echo "scsictl-guest: qemu-ga exited ($?), restarting"
    sleep 0.5
done
EOF
chmod 755 "$root/init"

# 5. Outputs.
stage=$work/out
mkdir -p "$stage"
(cd "$root" && find . | LC_ALL=C sort | "$root/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) \
    | gzip -6 > "$stage/initrd.cpio.gz"
cp "$x/boot/vmlinuz-$kver" "$stage/vmlinuz"
vmlinux=
if grep -q '^CONFIG_PVH=y' "$x/boot/config-$kver"; then
    # The payload of the bzImage: the first xz stream (CONFIG_KERNEL_XZ),
    # else zstd or gzip, decompressed; keep it only if it is an ELF file.
    for magic in '\xfd\x37\x7a\x58\x5a\x00' '\x28\xb5\x2f\xfd' '\x1f\x8b\x08\x00'; do
        off=$(LC_ALL=C grep -obUaP "$magic" "$stage/vmlinuz" | head -n 1 | cut -d: -f1 || true)
        [ -n "$off" ] || continue
        case $magic in
        '\xfd'*) dec="xz -dc --single-stream" ;;
        '\x28'*) need zstd; dec="zstd -dcq" ;;
        *) dec="gzip -dcq" ;;
        esac
        tail -c +$((off + 1)) "$stage/vmlinuz" | $dec > "$stage/vmlinux" 2>/dev/null || true
        if [ "$(head -c 4 "$stage/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            vmlinux=$out/vmlinux
            break
        fi
        rm -f "$stage/vmlinux"
    done
fi
{
    echo "FORMAT=$format"
    echo "KVER=$kver"
    echo "KERNEL=$out/vmlinuz"
    echo "VMLINUX=$vmlinux"
    echo "INITRD=$out/initrd.cpio.gz"
    echo "MODULES=\"${order[*]}\""
} > "$stage/guest.env"
rm -rf "$out"
mv "$stage" "$out"
ln -sfn "$kver" "$cache/latest"
echo "build-guest: kernel $kver, initramfs $(du -k "$out/initrd.cpio.gz" | cut -f1) KiB," \
    "modules: ${order[*]} ($(( $(date +%s) - start ))s)" >&2
echo "$out"
