#!/bin/sh
# Installs the Debian packages scsictl needs, when they are missing.
# Usage: scripts/deps.sh [extra packages...]
# As root it runs apt-get itself; otherwise it says what to install.
set -eu

# qemu-system-x86 .. lua-cjson are for the QEMU backends and their specs;
# e2fsprogs makes the Linux-guest spec's images (scripts/build-guest.sh
# fetches the guest's own packages with apt-get download, installing nothing).
packages="cmake gcc make pkg-config lua5.4 liblua5.4-dev uuid-dev lua-busted luarocks lua-check valgrind qemu-system-x86 qemu-utils lua-socket lua-cjson e2fsprogs $*"

missing=""
for p in $packages; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "scsictl needs these Debian packages:$missing" >&2
    echo "install them with: sudo apt-get install -y$missing" >&2
    exit 1
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
