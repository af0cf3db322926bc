#!/bin/bash
# Runs the README's two commands (`make test`, `make demo`) in a minimal
# Debian 12 root, as a new user on a bare machine would: proof that
# scripts/deps.sh installs everything the tests and examples call.
#
#   debootstrap --variant=minbase bookworm, from the mirror this machine's apt
#   uses; `make` added (the one thing the README assumes); a fresh `git clone`
#   of this checkout's HEAD copied in; then, chrooted with /proc, /sys and
#   /dev mounted: make test && make demo. Everything is unmounted and removed
#   afterwards, also on failure or interrupt.
#
# Usage: scripts/fresh-root.sh [--cache DIR] [--keep] [COMMAND...]
#   --cache DIR  keep the debootstrapped base in DIR/base and reuse it on the
#                next run (local runs only; CI starts from nothing)
#   --keep       leave the root in place (for a look inside after a failure)
#   COMMAND      run instead of the README's commands (inside the checkout)
# Needs root. Prints the time of each phase.
set -euo pipefail
unset LD_PRELOAD

here=$(cd "$(dirname "$0")/.." && pwd)
cache= keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --cache) cache=${2:?--cache needs a directory}; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -*) echo "fresh-root: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
cmd=${*:-make test && make demo}

die() { echo "fresh-root: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
# debootstrap (group ci of scripts/deps.txt) and git (group test, which
# `make fresh-root` does not install) are installed here when missing.
for tool in debootstrap git; do
    command -v "$tool" >/dev/null && continue
    echo "fresh-root: installing $tool"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq --no-install-recommends "$tool" >/dev/null; } \
        || die "cannot install $tool"
done

# The mirror this machine's apt uses for bookworm (deb822 or one-line form).
mirror() {
    local f u
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        u=$(awk 'BEGIN { RS = ""; FS = "\n" }
                 /Suites:[^\n]*bookworm( |\n|$)/ && !/debian-security/ {
                     for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) {
                         sub(/^URIs: */, "", $i); split($i, w, " "); print w[1]; exit
                     }
                 }' "$f")
        [ -n "$u" ] && { echo "$u"; return; }
    done
    if [ -f /etc/apt/sources.list ]; then
        u=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
        [ -n "$u" ] && { echo "$u"; return; }
    fi
    echo http://deb.debian.org/debian
}
url=$(mirror)

work=$(mktemp -d /var/tmp/scsictl-fresh-root.XXXXXX)
root=$work/root
cleanup() {
    local rc=$?
    # Unmount everything under the root, deepest first; lazily if busy.
    if [ -d "$root" ]; then
        awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts \
            | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    fi
    if [ "$keep" = 1 ]; then
        echo "fresh-root: kept $root" >&2
    elif awk -v r="$root" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
        echo "fresh-root: $root still has mounts; not removing it" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(date +%s)
phase() { echo "fresh-root: $1 ($(( $(date +%s) - t0 )) s so far)"; }

# 1. The base: debootstrap, or a copy of the cached one.
if [ -n "$cache" ] && [ -f "$cache/base/.complete" ]; then
    phase "copying the cached base from $cache/base"
    cp -a "$cache/base" "$root"
else
    phase "debootstrap --variant=minbase bookworm from $url"
    target=$root
    [ -n "$cache" ] && { mkdir -p "$cache"; rm -rf "$cache/base"; target=$cache/base; }
    debootstrap --variant=minbase bookworm "$target" "$url" > "$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    # The one thing the README assumes a machine has.
    cp /etc/resolv.conf "$target/etc/resolv.conf"
    chroot "$target" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends make' \
        > "$work/make.log" 2>&1 || { cat "$work/make.log" >&2; die "cannot install make in the root"; }
    if [ -n "$cache" ]; then
        touch "$cache/base/.complete"
        cp -a "$cache/base" "$root"
    fi
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"

# 2. A fresh checkout of HEAD (committed work only, as CI would see it).
phase "cloning $(git -C "$here" rev-parse --short HEAD) into the root"
git clone -q --no-local "$here" "$root/src/scsictl"

# 3. The mounts the tests need (QEMU, loop devices, /proc for pids).
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"

# 4. The commands, with a clean environment.
phase "running in the root: $cmd"
start=$(date +%s)
set +e
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /src/scsictl && $cmd"
rc=$?
set -e
phase "commands exited $rc after $(( $(date +%s) - start )) s"
[ "$rc" = 0 ] || die "'$cmd' failed in the fresh root"
phase "passed"
