#!/bin/sh
# The release rock, end to end and offline (ctest: rock_release; docs/release.md):
#   1. scripts/dist.sh: the tarball of HEAD, the release rockspec, the .src.rock
#   2. `luarocks install` of the .src.rock into an empty tree, with an empty
#      directory as the only server (nothing can be downloaded)
#   3. examples/quickstart.lua, copied away from the checkout, against that
#      tree only (LUA_PATH/LUA_CPATH of `luarocks path`); every scsictl module
#      it loads must come from the tree, and it must end with `quickstart: ok`;
#      the installed scsictl-build-guest, types/ and _VERSION are checked
#   4. `luarocks test` of the release rockspec in the unpacked tarball, against
#      the installed module, then of the dev rockspec there (which builds its
#      own module): the specs that need no QEMU
# Usage: scripts/rock-test.sh [WORKDIR]   (default: a temporary directory,
#   removed afterwards unless SCSICTL_KEEP=1). Exits 77 (skipped) outside a git
#   checkout: the tarball is a git archive.
set -eu
unset LD_PRELOAD
src=$(cd "$(dirname "$0")/.." && pwd)
if ! git -C "$src" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    echo "rock-test: $src is not a git checkout; skipped"
    exit 77
fi
if [ -n "${1:-}" ]; then
    work=$1
    rm -rf "$work"
    mkdir -p "$work"
    work=$(cd "$work" && pwd)
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/scsictl-rock.XXXXXX")
fi
[ "${SCSICTL_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

v=$(sh "$src/scripts/version.sh" "$src")
tree=$work/tree
lr() { luarocks --lua-version 5.4 "$@"; }
t0=$(date +%s)
phase_start=$t0
phase() {
    now=$(date +%s)
    echo "rock-test: $1 ($((now - phase_start)) s)"
    phase_start=$now
}
fail() { echo "rock-test: FAILED: $*" >&2; exit 1; }
quiet() {   # runs "$@" with its output in $work/log, shown on failure
    "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; fail "$*"; }
}

# 1. make dist
quiet sh "$src/scripts/dist.sh" "$work/dist"
rock=$work/dist/scsictl-$v-1.src.rock
[ -f "$rock" ] || fail "dist made no $rock"
phase "dist: $(cd "$work/dist" && ls | grep -v log | tr '\n' ' ')"

# 2. install, offline, into an empty tree
mkdir "$work/no-server"
quiet lr --tree "$tree" --only-server="$work/no-server" install "$rock"
phase "installed $rock into $tree"

# 3. the quickstart against the tree only
eval "$(lr --tree "$tree" path)"
export LUA_PATH LUA_CPATH
mkdir "$work/run"
cp "$src/examples/quickstart.lua" "$work/run/"
(cd "$work/run" && lua5.4 -e '
    local real = require
    function require(name)
      local m, where = real(name)
      if name:match("^scsictl") then io.stderr:write("loaded ", name, " ", tostring(where), "\n") end
      return m, where
    end' quickstart.lua) >"$work/quickstart.out" 2>"$work/quickstart.err" \
  || { cat "$work/quickstart.out" "$work/quickstart.err" >&2; fail "quickstart.lua"; }
last=$(tail -n 1 "$work/quickstart.out")
case $last in "quickstart: ok"*) ;; *) cat "$work/quickstart.out" >&2; fail "quickstart's last line: $last" ;; esac
grep -q '^loaded scsictl ' "$work/quickstart.err" || fail "quickstart did not load scsictl"
if grep '^loaded ' "$work/quickstart.err" | grep -v " $tree/"; then
    fail "the modules above did not come from $tree"
fi
phase "quickstart.lua against the tree: $last ($(grep -c '^loaded ' "$work/quickstart.err") scsictl modules, all from the tree)"

(cd "$work/run" && PATH=/usr/bin:/bin lua5.4 - "$tree" "$v") <<'EOF' || fail "the installed files"
local tree, v = ...
local scsictl, so = require("scsictl")
assert(so == tree .. "/lib/lua/5.4/scsictl.so", "scsictl from " .. tostring(so))
assert(scsictl._VERSION == "scsictl " .. v, scsictl._VERSION .. " is not the rock's version " .. v)
local where = require("scsictl.qemu_guest").locate()
assert(where.builder == tree .. "/bin/scsictl-build-guest", "the guest builder: " .. tostring(where.builder))
assert(where.checkout == nil, "a checkout at " .. tostring(where.checkout))
EOF
[ -x "$tree/bin/scsictl-build-guest" ] || fail "no executable $tree/bin/scsictl-build-guest"
[ -x "$tree/bin/scsictl-make-verity-layer" ] || fail "no executable $tree/bin/scsictl-make-verity-layer"
rockdir=$(lr --tree "$tree" show --rock-dir scsictl)
if tar tzf "$work/dist/scsictl-$v.tar.gz" | grep -q "^scsictl-$v/types/scsictl.lua$"; then
    [ -f "$rockdir/types/scsictl.lua" ] || fail "types/scsictl.lua is not in $rockdir"
    types="types in $rockdir/types"
else
    types="no types/ in this commit"
fi
phase "installed: scsictl $v, scsictl-build-guest found by qemu_guest.locate, $types"

# 4. luarocks test, in the unpacked tarball. Debian's busted is no rock:
# rocks_provided says it is there (otherwise luarocks tries to download it).
mkdir "$work/src"
tar xzf "$work/dist/scsictl-$v.tar.gz" -C "$work/src"
busted_v=$(dpkg-query -W -f='${Version}' lua-busted 2>/dev/null | sed 's/[^0-9.-].*//') || true
echo "rocks_provided = { busted = \"${busted_v:-2.1.1-1}\" }" > "$work/luarocks-config.lua"
export LUAROCKS_CONFIG="$work/luarocks-config.lua"
cd "$work/src/scsictl-$v"
start=$(date +%s)
quiet env SCSICTL_CPATH="$tree/lib/lua/5.4/?.so" luarocks --lua-version 5.4 --tree "$tree" \
    --only-server="$work/no-server" test "$work/dist/scsictl-$v-1.rockspec"
grep ' successes / ' "$work/log"
phase "luarocks test (release rockspec, the installed module): $(( $(date +%s) - start )) s"
start=$(date +%s)
quiet lr --tree "$tree" --only-server="$work/no-server" test rockspec/scsictl-dev-1.rockspec
grep ' successes / ' "$work/log"
phase "luarocks test (dev rockspec, its own build): $(( $(date +%s) - start )) s"
echo "rock-test: ok, scsictl $v in $(( $(date +%s) - t0 )) s"
