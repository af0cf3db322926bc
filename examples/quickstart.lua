-- quickstart.lua — scsictl in one minute, on a simulated VM (no hypervisor).
--
-- A container host: the VM booted from a rootfs disk whose slot we pin; three
-- containers share two read-only image layers, and each has its own scratch
-- disk. We start them, look at the slot map, stop one, look again, stop the
-- rest, and check that nothing is left attached.
--
--   lua5.4 examples/quickstart.lua

-- Find the module in this checkout (lua/ and build/lua/) before installed ones.
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$")
  or ((arg and arg[0] or ""):match("^examples/") and ".") or ".."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath_given = os.getenv("LUA_CPATH_5_4") or os.getenv("LUA_CPATH") -- make: from BUILD=
if not cpath_given then package.cpath = root .. "/build/lua/?.so;" .. package.cpath end

local sim = require("scsictl.sim")

-- Fail loudly on nil, msg, code (the module's failure convention).
local function must(v, msg, code)
  if v == nil then error(("%s (%s)"):format(tostring(msg), tostring(code)), 2) end
  return v
end

local function heading(text) print(("\n== %s"):format(text)) end

-- A controller over a simulated Linux VM with 2 SCSI controllers x 8 LUNs.
-- The app layer has two partitions; we mount partition 1 of it.
local ctl, vm = sim.controller{
  controllers = 2, luns_per_controller = 8,
  disks = { ["/images/app.vhdx"] = { partitions = 2 } },
}

heading("pin controller 0 lun 0 for the VM's boot disk")
must(ctl:reserve_for_rootfs(0, 0))

-- What every container mounts: two shared read-only layers, one scratch disk.
local LAYERS = {
  { disk = { host_path = "/images/base.vhdx", read_only = true },
    mount = { read_only = true } },
  { disk = { host_path = "/images/app.vhdx", read_only = true },
    mount = { partition = 1, read_only = true } },
}

local containers = {}   -- name -> array of { id, what, path }

local function start(name)
  local claims = {}
  local wanted = { LAYERS[1], LAYERS[2],
    { disk = { host_path = ("/containers/%s/scratch.vhdx"):format(name) } } }
  for _, w in ipairs(wanted) do
    local id = must(ctl:reserve(w.disk, w.mount))
    local path = must(ctl:map_to_guest(id))
    claims[#claims + 1] = { id = id, what = w.disk.host_path, path = path }
    print(("  %-8s %-30s -> %s"):format(name, w.disk.host_path, path))
  end
  containers[name] = claims
end

local function stop(name)
  for _, c in ipairs(containers[name]) do must(ctl:unmap_from_guest(c.id)) end
  containers[name] = nil
  print(("  %s stopped: its claims are released"):format(name))
end

local function show()
  print(vm:render(ctl))
  local st = ctl:stats()
  print(("stats: slots %d, used %d, free %d, pinned %d, disks %d, reservations %d")
    :format(st.slots, st.used, st.free, st.pinned, st.disks, st.reservations))
  return st
end

-- Reference counts of the partition mounted at a slot, from ctl:slots().
local function refs_of(host_path)
  for _, sl in ipairs(ctl:slots()) do
    if sl.host_path == host_path then return sl.partitions[1].refs, sl end
  end
end

heading("start three containers")
for _, name in ipairs{ "web", "worker", "cron" } do start(name) end

heading("slot map: the layers are attached once and shared")
local st = show()
assert(st.disks == 5 and st.reservations == 9 and st.pinned == 1 and st.used == 6)
assert(refs_of("/images/base.vhdx") == 3 and refs_of("/images/app.vhdx") == 3)

heading("mapping an id that is already mounted makes no backend call")
local before = #vm.log
local again = must(ctl:map_to_guest(containers.web[1].id))
assert(again == containers.web[1].path and #vm.log == before)
print(("  web's base layer again -> %s (event log unchanged: %d entries)")
  :format(again, before))

heading("stop one container")
stop("worker")
st = show()
assert(st.disks == 4 and st.reservations == 6)
assert(refs_of("/images/base.vhdx") == 2, "base layer shared by two now")
assert(not refs_of("/containers/worker/scratch.vhdx"), "scratch disk gone")

heading("stop the others")
stop("web")
stop("cron")
st = show()

heading("what the VM and guest saw, in order")
for _, e in ipairs(vm.log) do
  print(("  %3d %-28s %-32s %s"):format(e.seq, e.op, e.host_path or e.path or "",
    e.ok and "ok" or ("FAILED: " .. tostring(e.message))))
end

-- Nothing may be left: no disk, no mount, only the pinned slot in use.
assert(vm:is_empty(), "the VM still has disks or mounts")
assert(st.used == 1 and st.pinned == 1 and st.disks == 0 and st.reservations == 0)
assert(#vm:refusals() == 0, "the simulator refused a call")
assert(ctl:close())
print("quickstart: ok, nothing left attached")
