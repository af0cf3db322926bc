--[[
make bench-guest: many disks on a real VM. Boots the test guest (QEMU, TCG
here), then maps and unmaps N read-only ext4 disks for N = 1, 4, 16, 64, each
N serially (one disk after another) and concurrently (a scsictl.loop task per
disk), in the same run. Prints a table and writes one JSON object per case
to <build>/bench-guest.jsonl: name, n, mode, wall_s, the median of each step
(add, mount, unmount, eject, remove, in ms) and max_loop_stall_ms, the
longest gap of a 1 ms repeating timer during the case (how long the loop was
blocked).

  lua5.4 bench/bench_guest.lua [build-dir] [N...]
]]

local scsictl = require("scsictl")
local loop = require("scsictl.loop")
local qemu_guest = require("scsictl.qemu_guest")
local cjson = require("cjson")

local build = arg[1] or "build"
local sizes = {}
for i = 2, #arg do sizes[#sizes + 1] = assert(math.tointeger(tonumber(arg[i])), "N must be an integer") end
if #sizes == 0 then sizes = { 1, 4, 16, 64 } end
local max_n = math.max(table.unpack(sizes))
local LUNS = 16
local controllers = math.max(1, (max_n + LUNS - 1) // LUNS)

local function median(t)
  if #t == 0 then return nil end
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local m = #s // 2
  return #s % 2 == 1 and s[m + 1] or (s[m] + s[m + 1]) / 2
end

-- Backends that time every step (ms) into `times[step]`.
local times
local function timed(backend, names)
  local proxy = {}
  for step, method in pairs(names) do
    proxy[method] = function(_, ...)
      local t0 = loop.now()
      local r = table.pack(backend[method](backend, ...))
      local list = times[step]
      list[#list + 1] = (loop.now() - t0) * 1000
      return table.unpack(r, 1, r.n)
    end
  end
  return proxy
end

local function must(v, msg) if not v then error(msg, 2) end return v end

local dir = must(loop.fs("mkdtemp", (os.getenv("TMPDIR") or "/tmp") .. "/scsictl-bench-guest.XXXXXX"))
io.stderr:write(("bench-guest: booting the test guest with %d controller(s) of %d luns...\n")
  :format(controllers, LUNS))
local vm, guest = qemu_guest.launch{ controllers = controllers, timeout = 60,
                                    args = { "-smp", os.getenv("BENCH_SMP") or "2" } }
must(vm, guest)
io.stderr:write(("bench-guest: booted in %.2f s (%s)\n"):format(vm.boot_seconds, vm.accel))

local images = {}
for i = 1, max_n do
  local path = ("%s/disk%02d.img"):format(dir, i)
  must(loop.command({ "mkfs.ext4", "-q", "-F", path, "4M" }, { env = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin" } }))
  images[i] = path
end

local vm_backend = vm:vm_backend{ timeout = 60 }
local ctl = scsictl.new{
  controllers = controllers, luns_per_controller = LUNS,
  vm = timed(vm_backend, { add = "add_scsi_disk", remove = "remove_scsi_disk" }),
  linux_guest = timed(guest, { mount = "add_mapped_virtual_disk", unmount = "remove_mapped_virtual_disk",
                               eject = "remove_scsi_device" }),
}

-- One disk's whole life: reserve, map, unmap.
local function cycle(i)
  local id = must(ctl:reserve({ host_path = images[i], read_only = true }, { read_only = true }))
  local path, msg = ctl:map_to_guest(id)
  if not path then
    ctl:unmap_from_guest(id)
    error(("disk %d: %s"):format(i, msg))
  end
  return id
end

local function run_case(n, mode)
  times = { add = {}, mount = {}, unmount = {}, eject = {}, remove = {} }
  local stall = loop.stall_monitor()
  local t0 = loop.now()
  if mode == "serial" then
    local ids = {}
    loop.run(function()
      for i = 1, n do ids[i] = cycle(i) end
      for i = 1, n do must(ctl:unmap_from_guest(ids[i])) end
    end)
  else
    loop.run(function()
      local tasks = {}
      for i = 1, n do tasks[i] = loop.spawn(function() return cycle(i) end) end
      local ids = {}
      for i = 1, n do ids[i] = tasks[i]:join() end
      for i = 1, n do tasks[i] = loop.spawn(function() return must(ctl:unmap_from_guest(ids[i])) end) end
      for i = 1, n do tasks[i]:join() end
    end)
  end
  local wall = loop.now() - t0
  local stall_ms = stall.max_ms()
  stall.stop()
  assert(ctl:stats().used == 0, "a disk was left attached")
  local r = { name = "map_unmap_ro_ext4", n = n, mode = mode, wall_s = wall, max_loop_stall_ms = stall_ms }
  for step, list in pairs(times) do r[step .. "_ms"] = median(list) end
  return r
end

local out = assert(io.open(build .. "/bench-guest.jsonl", "w"))
local results = {}
print(("%-5s %-10s %9s %8s %8s %8s %8s %8s %9s %8s"):format("N", "mode", "wall s", "add", "mount",
  "unmount", "eject", "remove", "stall ms", "speed-up"))
for _, n in ipairs(sizes) do
  for _, mode in ipairs({ "serial", "concurrent" }) do
    local r = run_case(n, mode)
    results[n .. mode] = r
    local speedup = mode == "concurrent" and ("%.1fx"):format(results[n .. "serial"].wall_s / r.wall_s) or ""
    print(("%-5d %-10s %9.2f %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f %8s"):format(n, mode, r.wall_s, r.add_ms,
      r.mount_ms, r.unmount_ms, r.eject_ms, r.remove_ms, r.max_loop_stall_ms, speedup))
    r.speedup = speedup ~= "" and results[n .. "serial"].wall_s / r.wall_s or nil
    out:write(cjson.encode(r), "\n")
    out:flush()
  end
end
out:close()
print("(step columns: medians in ms; a step's time includes its wait for the agent connection,")
print(" which serves one request at a time)")
vm:stop()
for _, p in ipairs(images) do loop.fs("unlink", p) end
loop.fs("rmdir", dir)
