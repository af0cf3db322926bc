#!/bin/sh
# `luarocks test`'s command (both rockspecs): the busted specs that need no
# QEMU, run from the source root (a checkout or an unpacked release tarball)
# under Lua 5.4. The QEMU specs (names matching qemu, guest or reconcile:
# qemu_spec, linux_guest_spec, reconcile_spec) boot a VM and are left to
# `make test`.
#
# The module tested: SCSICTL_CPATH if set (a cpath template or a directory,
# as in .busted), e.g. the scsictl.so a `luarocks install` put in a tree;
# otherwise this script builds one from the source with CMake in a temporary
# directory (a few seconds). The pure-Lua modules come from ./lua.
# Usage: sh scripts/luarocks-test.sh [BUSTED-ARGS...]
set -eu
unset LD_PRELOAD
[ -f spec/helper.lua ] && [ -f .busted ] || { echo "luarocks-test: run from the source root" >&2; exit 2; }

# busted: Debian's /usr/bin/busted is a Lua script (run it with lua5.4); a
# LuaRocks-installed `busted` is a shell wrapper bound to its own Lua.
busted=$(command -v busted || true)
[ -n "$busted" ] || { echo "luarocks-test: needs busted (Debian package lua-busted)" >&2; exit 1; }
case $(head -n 1 "$busted") in
*lua*) run_busted() { lua5.4 "$busted" "$@"; } ;;
*) run_busted() { "$busted" "$@"; } ;;
esac

tmp=
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
if [ -z "${SCSICTL_CPATH:-}" ]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/scsictl-luarocks-test.XXXXXX")
    echo "luarocks-test: building the module in $tmp"
    cmake -S . -B "$tmp" -DCMAKE_BUILD_TYPE=Release -DSCSICTL_WERROR=OFF -DSCSICTL_LTO=OFF \
        -DSCSICTL_BUILD_TESTS=OFF -DSCSICTL_BUILD_EXAMPLES=OFF -DSCSICTL_BUILD_BENCH=OFF \
        >"$tmp/build.log" 2>&1 \
      && cmake --build "$tmp" -j 2 --target scsictl_lua >>"$tmp/build.log" 2>&1 \
      || { cat "$tmp/build.log" >&2; exit 1; }
    SCSICTL_CPATH=$tmp/lua/?.so
fi
export SCSICTL_CPATH

specs=$(ls spec/*_spec.lua | grep -Ev '(qemu|guest|reconcile)[^/]*_spec\.lua$')
qemu=$(ls spec/*_spec.lua | grep -E '(qemu|guest|reconcile)[^/]*_spec\.lua$' | sed 's|.*/||' | tr '\n' ' ')
echo "luarocks-test: module $SCSICTL_CPATH; $(echo "$specs" | wc -l) specs, not the QEMU ones: $qemu"
# shellcheck disable=SC2086
run_busted -o utfTerminal "$@" $specs
