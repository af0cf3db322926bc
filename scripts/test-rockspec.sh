#!/bin/sh
# Installs the rockspec into a private tree and requires the module from a
# clean lua5.4 that sees only that tree. Usage: scripts/test-rockspec.sh TREE
set -eu
tree=${1:?usage: test-rockspec.sh TREE}
rm -rf "$tree"
luarocks --lua-version 5.4 --tree "$tree" make rockspec/scsictl-dev-1.rockspec >"$tree.log" 2>&1 || {
    cat "$tree.log"
    exit 1
}
rm -rf build.luarocks
[ -x "$tree/bin/scsictl-build-guest" ] || { echo "rockspec: no $tree/bin/scsictl-build-guest" >&2; exit 1; }
ROCKTREE="$tree" LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua" \
LUA_CPATH="$tree/lib/lua/5.4/?.so" \
lua5.4 -e '
local scsictl = require("scsictl")
local where = package.searchpath("scsictl", package.cpath)
assert(where and where:find(os.getenv("ROCKTREE"), 1, true), "module not loaded from the tree")
local ok = function() return true end
local ctl = scsictl.new{ controllers = 1,
  vm = { add_scsi_disk = ok, remove_scsi_disk = ok },
  linux_guest = { add_mapped_virtual_disk = ok, remove_mapped_virtual_disk = ok,
                  remove_scsi_device = ok } }
local id = assert(ctl:reserve{ host_path = "/rock.vhdx" })
assert(ctl:map_to_guest(id) == "/run/mounts/scsi/0_0_0")
assert(ctl:unmap_from_guest(id) == true)
local sim_ok = pcall(require, "scsictl.sim")
print("rockspec: installed " .. scsictl._VERSION .. ", module works, scsictl.sim " ..
      (sim_ok and "loads" or "MISSING"))
assert(sim_ok, "scsictl.sim was not installed")
'
