-- qemu_hotplug.lua — hot-plug disks into a real QEMU through scsictl.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/lua/?.so;;' lua5.4 examples/qemu_hotplug.lua
--
-- Launches a paused QEMU (no guest OS) with two virtio-scsi controllers,
-- maps a few disk images through a scsictl controller whose VM backend is
-- scsictl.qemu, prints QEMU's own view of its SCSI buses (query-block and
-- HMP "info qtree"), times every hot-add and hot-remove, tears everything
-- down and checks that nothing is left in QEMU.
--
-- The guest is the simulator's (scsictl.sim). Its guest half only mounts
-- luns that its own VM half has attached, so the VM backend handed to the
-- controller drives QEMU first and then mirrors each successful step into
-- the sim's VM half.
--
-- Needs qemu-system-x86, qemu-utils, lua-luv and lua-cjson. Prints
-- "qemu_hotplug: ok" at the end; exits non-zero on anything unexpected.

local here = debug.getinfo(1, "S").source:match("^@(.-)examples/[^/]*$") or ""
package.path = here .. "lua/?.lua;" .. here .. "lua/?/init.lua;" .. package.path

local scsictl = require("scsictl")
local sim = require("scsictl.sim")
local qemu = require("scsictl.qemu")
local uv = require("luv")

local CONTROLLERS, LUNS = 2, 4

local function check(cond, fmt, ...)
  if not cond then error(fmt:format(...), 2) end
  return cond
end

local function shquote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local cleanup = {}

local function run()
  -- Images: two raw files and two qcow2 images (one of them read-only).
  local p = io.popen("mktemp -d " .. shquote((os.getenv("TMPDIR") or "/tmp") .. "/qemu_hotplug.XXXXXX"))
  local dir = p:read("l")
  p:close()
  check(dir and dir ~= "", "cannot create a temporary directory")
  local files = {}
  cleanup[#cleanup + 1] = function()
    for _, f in ipairs(files) do os.remove(f) end
    os.remove(dir)
  end
  local function raw(name)
    local path = dir .. "/" .. name
    local f = assert(io.open(path, "wb"))
    f:seek("set", 8 * 1024 * 1024 - 1)
    f:write("\0")
    f:close()
    files[#files + 1] = path
    return path
  end
  local function qcow2(name)
    local path = dir .. "/" .. name
    -- (without a sanitizer runtime that a sanitizer build may preload)
    local env = (os.getenv("LD_PRELOAD") or ""):find("lib%a*san") and "env -u LD_PRELOAD " or ""
    check(os.execute(("%sqemu-img create -q -f qcow2 %s 64M"):format(env, shquote(path))) == true,
      "qemu-img create failed (install qemu-utils)")
    files[#files + 1] = path
    return path
  end

  local vm, err = qemu.launch{ controllers = CONTROLLERS }
  check(vm, "QEMU could not start: %s", tostring(err))
  cleanup[#cleanup + 1] = function() vm:stop() end
  local greeting = vm:qmp().greeting.version.qemu
  print(("QEMU %d.%d.%d, pid %d, accel %s, QMP %s"):format(greeting.major, greeting.minor,
    greeting.micro, vm.pid, vm.accel, vm.socket))
  for i = 0, CONTROLLERS - 1 do
    print(("  controller %d = virtio-scsi-pci id scsi%d at PCI %s, bus scsi%d.0"):format(
      i, i, vm:pci_address(i), i))
  end

  -- The VM backend: QEMU, timed, then mirrored into the simulator.
  local s = sim.new{ controllers = CONTROLLERS, luns_per_controller = LUNS, partitions = 2 }
  local backend = vm:vm_backend()
  local times = { add = {}, remove = {} }
  local vm_cb = {
    add_scsi_disk = function(_, attachment, controller, lun)
      local t0 = uv.hrtime() / 1e9
      local ok, msg = backend:add_scsi_disk(attachment, controller, lun)
      if not ok then return nil, msg end
      times.add[#times.add + 1] = uv.hrtime() / 1e9 - t0
      return s:add_scsi_disk(attachment, controller, lun)
    end,
    remove_scsi_disk = function(_, controller, lun)
      local t0 = uv.hrtime() / 1e9
      local ok, msg = backend:remove_scsi_disk(controller, lun)
      if not ok then return nil, msg end
      times.remove[#times.remove + 1] = uv.hrtime() / 1e9 - t0
      return s:remove_scsi_disk(controller, lun)
    end,
  }
  local ctl = scsictl.new{ controllers = CONTROLLERS, luns_per_controller = LUNS,
                           vm = vm_cb, linux_guest = s }
  s:set_view(ctl)

  -- Map: a read-only base layer shared by two containers, a scratch disk
  -- each, a qcow2 data volume, and enough disks to spill onto controller 1.
  local base = qcow2("base-layer.qcow2")
  local requests = {
    { "ctr1 base", { host_path = base, read_only = true }, { read_only = true } },
    { "ctr2 base", { host_path = base, read_only = true }, { read_only = true } },
    { "ctr1 scratch", { host_path = raw("ctr1-scratch.raw") } },
    { "ctr2 scratch", { host_path = raw("ctr2-scratch.raw") } },
    { "data volume p1", { host_path = qcow2("data.qcow2") }, { partition = 1 } },
    { "data volume p2", { host_path = dir .. "/data.qcow2" }, { partition = 2 } },
    { "logs", { host_path = raw("logs.raw") } },
    { "cache", { host_path = raw("cache.raw") } },
  }
  local ids = {}
  print("\nmapping through scsictl:")
  for _, r in ipairs(requests) do
    local id, msg, code = ctl:reserve(r[2], r[3])
    check(id, "reserve %s: %s (%s)", r[1], tostring(msg), tostring(code))
    local path
    path, msg, code = ctl:map_to_guest(id)
    check(path, "map %s: %s (%s)", r[1], tostring(msg), tostring(code))
    ids[#ids + 1] = id
    local res = ctl:reservation(id)
    print(("  %-15s %-40s -> %d:%d  %s"):format(r[1], res.host_path:match("[^/]+$"),
      res.controller, res.lun, path))
  end
  check(#times.add == 6, "expected 6 hot-adds, got %d", #times.add)

  -- QEMU's own view.
  print("\nQEMU's view (query-block + qom-get of each SCSI device):")
  local disks = assert(qemu.scsi_disks(vm:qmp()))
  check(#disks == 6, "QEMU has %d SCSI disks, expected 6", #disks)
  for _, d in ipairs(disks) do
    print(("  %-8s scsi-id %d lun %d  %-9s %-18s %-6s %s  %s"):format(d.bus, d.scsi_id, d.lun,
      d.type, d.device, d.format, d.ro and "ro" or "rw", d.file:match("[^/]+$")))
  end
  -- Cross-check against the controller's slots and the simulator's VM half.
  local attached = s:attached()
  check(#attached == #disks, "sim has %d disks, QEMU %d", #attached, #disks)
  for i, a in ipairs(attached) do
    local d = disks[i]
    check(d.bus == ("scsi%d.0"):format(a.controller) and d.lun == a.lun and d.file == a.host_path
      and d.ro == a.read_only, "QEMU disagrees at %d:%d", a.controller, a.lun)
  end

  print("\nQEMU's view (HMP info qtree, SCSI buses only):")
  local qtree = assert(vm:qmp():hmp("info qtree"))
  -- Collect controllers, their addresses, buses and devices; print sorted.
  local ctrls, cur, cur_bus, cur_dev, bus_indent = {}, nil, nil, nil, nil
  for line in qtree:gmatch("[^\r\n]+") do
    local indent = #line:match("^%s*")
    if bus_indent and indent <= bus_indent then cur_bus, bus_indent = nil, nil end
    local id = line:match('dev: virtio%-scsi%-pci, id "([^"]*)"')
    if id then
      cur = { id = id, devs = {} }
      ctrls[#ctrls + 1] = cur
    elseif cur and not cur.addr and line:match("^%s*addr = ") then
      cur.addr = line:match("^%s*addr = (%S+)")
    end
    local bus = line:match("bus: (scsi%d+%.0)")
    if bus and cur then
      cur.bus, cur_bus, bus_indent = bus, cur, indent
    elseif cur_bus then
      local dev, devid = line:match('dev: (%S+), id "([^"]*)"')
      if dev then
        cur_dev = { dev = dev, id = devid, props = {} }
        cur_bus.devs[#cur_bus.devs + 1] = cur_dev
      end
      local k, v = line:match("^%s*(%S+) = (.*)$")
      if cur_dev and (k == "drive" or k == "channel" or k == "scsi-id" or k == "lun") then
        cur_dev.props[k] = v:gsub(" %(0x%x+%)$", "")
      end
    end
  end
  table.sort(ctrls, function(a, b) return a.id < b.id end)
  for _, c in ipairs(ctrls) do
    print(("  dev: virtio-scsi-pci, id %q, addr = %s"):format(c.id, tostring(c.addr)))
    print(("    bus: %s"):format(tostring(c.bus)))
    table.sort(c.devs, function(a, b) return tonumber(a.props.lun) < tonumber(b.props.lun) end)
    for _, d in ipairs(c.devs) do
      print(("      dev: %s, id %q  drive = %s  channel = %s  scsi-id = %s  lun = %s"):format(
        d.dev, d.id, d.props.drive, d.props.channel, d.props["scsi-id"], d.props.lun))
    end
  end
  check(#ctrls == CONTROLLERS, "info qtree shows %d virtio-scsi controllers", #ctrls)

  print("\nscsictl + simulated guest:")
  print(s:render(ctl))

  -- Tear down.
  print("\nunmapping:")
  for i, id in ipairs(ids) do
    local ok, msg, code = ctl:unmap_from_guest(id)
    check(ok, "unmap %s: %s (%s)", requests[i][1], tostring(msg), tostring(code))
  end
  check(#times.remove == 6, "expected 6 hot-removes, got %d", #times.remove)
  local left = assert(qemu.scsi_disks(vm:qmp()))
  check(#left == 0, "%d disks left in QEMU", #left)
  local nodes = assert(vm:qmp():execute("query-named-block-nodes", { flat = true }))
  check(#nodes == 0, "%d block nodes left in QEMU", #nodes)
  check(s:is_empty() and #s:refusals() == 0, "the simulator saw a protocol error")
  check(ctl:stats().used == 0, "slots still used")
  print("  QEMU has no SCSI disk and no block node left; every slot is free")

  local function summary(t)
    local sum, lo, hi = 0, math.huge, 0
    for _, x in ipairs(t) do
      sum, lo, hi = sum + x, math.min(lo, x), math.max(hi, x)
    end
    return ("%d x, mean %.1f ms (min %.1f, max %.1f)"):format(#t, sum / #t * 1000, lo * 1000, hi * 1000)
  end
  print(("\nhot-add    (blockdev-add + device_add): %s"):format(summary(times.add)))
  print(("hot-remove (device_del + DEVICE_DELETED + blockdev-del): %s"):format(summary(times.remove)))
  ctl:close()
end

local ok, err = xpcall(run, debug.traceback)
for i = #cleanup, 1, -1 do pcall(cleanup[i]) end
if not ok then
  io.stderr:write("qemu_hotplug: FAILED: ", tostring(err), "\n")
  os.exit(1)
end
print("qemu_hotplug: ok")
