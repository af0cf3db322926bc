--[[
make bench-guest: many disks on a real VM. Boots the test guest (QEMU, TCG
here), then maps and unmaps N read-only ext4 disks for N = 1, 4, 16, 64, each
N serially (one disk after another) and concurrently (a scsictl.loop task per
disk), in the same run. Prints a table and writes one JSON object per case
to <build>/bench-guest.jsonl: name, n, mode, wall_s, the median of each step
(add, mount, unmount, eject, remove, in ms), max_loop_stall_ms (the longest
gap of a 1 ms repeating timer during the case), max_loop_busy_ms (the most CPU
time this process spent within one gap: the part of a stall that is scsictl
blocking the loop rather than the OS running QEMU), and what bounds the
speed-up: guest_cpu_s and guest_busy (the guest's CPU use over its vCPUs;
guest_kernel_s is the kernel's part),
guest_processes (processes the guest started), agent_busy (the share of the
wall time a request was in flight on the one agent connection), qemu_cpu_s,
lua_cpu_s and host_busy (their CPU use over the host's cores).

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
-- Each case spreads its N disks over the controllers (the slot policy takes
-- the lowest free slot, so a case's scsictl gets ceil(N / controllers) luns
-- per controller): Linux adds and removes the devices of one SCSI host one
-- at a time, so disks on one controller do not overlap in the guest. One
-- more case, N = 16 on a single controller, shows that.
local controllers = math.tointeger(tonumber(os.getenv("BENCH_CONTROLLERS") or "4"))
assert(controllers and controllers >= 1, "BENCH_CONTROLLERS must be a positive integer")

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
io.stderr:write(("bench-guest: booting the test guest with %d controller(s)...\n"):format(controllers))
local vm, guest = qemu_guest.launch{ controllers = controllers, timeout = 60,
                                    args = { "-smp", tostring(tonumber(os.getenv("BENCH_SMP") or "2")) } }
must(vm, guest)
io.stderr:write(("bench-guest: booted in %.2f s (%s)\n"):format(vm.boot_seconds, vm.accel))

local images = {}
for i = 1, max_n do
  local path = ("%s/disk%02d.img"):format(dir, i)
  must(loop.command({ "mkfs.ext4", "-q", "-F", path, "4M" }, { env = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin" } }))
  images[i] = path
end

local vm_backend = vm:vm_backend{ timeout = 60 }
local timed_vm = timed(vm_backend, { add = "add_scsi_disk", remove = "remove_scsi_disk" })
local timed_guest = timed(guest, { mount = "add_mapped_virtual_disk", unmount = "remove_mapped_virtual_disk",
                                   eject = "remove_scsi_device" })
local ctl

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

-- The guest's CPU time (all vCPUs, seconds), the kernel's part of it
-- (system, irq, softirq), and the last pid it started.
local function guest_counters()
  local out = must(guest:sh("read -r _ u n s i w q sq rest < /proc/stat; echo $u $n $s $q $sq; "
    .. "read -r l < /proc/loadavg; echo $l"))
  local f = {}
  for v in out:match("^[^\n]*"):gmatch("%d+") do f[#f + 1] = tonumber(v) end
  local pid = out:match("(%d+)%s*$")
  return (f[1] + f[2] + f[3] + f[4] + f[5]) / 100, (f[3] + f[4] + f[5]) / 100, tonumber(pid)
end

-- CPU seconds used so far by QEMU (all its threads) and by this process.
local TICK = 100   -- USER_HZ of /proc/<pid>/stat
local function host_cpu()
  local stat = must(loop.read_file(("/proc/%d/stat"):format(vm.pid)))
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  local r = loop.uv.getrusage()
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICK,
    r.utime.sec + r.stime.sec + (r.utime.usec + r.stime.usec) / 1e6
end
local cores = #loop.uv.cpu_info()
local smp = tonumber(os.getenv("BENCH_SMP") or "2")
local agent = must(guest:agent())

local function run_case(n, mode, used)
  local luns = math.max(1, (n + used - 1) // used)
  ctl = scsictl.new{ controllers = used, luns_per_controller = luns, vm = timed_vm, linux_guest = timed_guest }
  times = { add = {}, mount = {}, unmount = {}, eject = {}, remove = {} }
  local cpu0, sys0, pid0 = guest_counters()
  local qemu0, self0 = host_cpu()
  local agent0, req0 = agent.busy_seconds, agent.requests
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
  local stall_ms, busy_ms = stall.max_ms(), stall.max_busy_ms()
  stall.stop()
  local qemu1, self1 = host_cpu()
  local agent1, req1 = agent.busy_seconds, agent.requests
  local cpu1, sys1, pid1 = guest_counters()
  assert(ctl:stats().used == 0, "a disk was left attached")
  local r = { name = "map_unmap_ro_ext4", n = n, mode = mode, controllers = used, wall_s = wall,
              max_loop_stall_ms = stall_ms, max_loop_busy_ms = busy_ms, guest_cpu_s = cpu1 - cpu0,
              guest_kernel_s = sys1 - sys0,
              guest_processes = pid1 - pid0 - 1, qemu_cpu_s = qemu1 - qemu0, lua_cpu_s = self1 - self0,
              host_busy = (qemu1 - qemu0 + self1 - self0) / (wall * cores),
              guest_busy = (cpu1 - cpu0) / (wall * smp), agent_busy = (agent1 - agent0) / wall,
              agent_requests = req1 - req0 }
  for step, list in pairs(times) do r[step .. "_ms"] = median(list) end
  return r
end

local out = assert(io.open(build .. "/bench-guest.jsonl", "w"))
local results = {}
local HEAD = "%-4s %-4s %-10s %6s %8s %6s %6s %7s %6s %6s %6s %6s %6s %6s %6s"
local ROW = "%-4d %-4d %-10s %6.2f %8s %6.1f %6.1f %7.1f %6.1f %6.1f %6.1f %6.1f %5.0f%% %5.0f%% %5.0f%%"
print(HEAD:format("N", "ctl", "mode", "wall s", "speed-up", "add", "mount", "unmount", "eject", "remove",
  "stall", "busy", "guest", "agent", "host"))
local cases = {}
for _, n in ipairs(sizes) do cases[#cases + 1] = { n, math.min(n, controllers) } end
if controllers > 1 and max_n >= 16 then cases[#cases + 1] = { 16, 1 } end
for _, case in ipairs(cases) do
  local n, used = case[1], case[2]
  for _, mode in ipairs({ "serial", "concurrent" }) do
    local r = run_case(n, mode, used)
    local key = n .. "/" .. used .. "/"
    results[key .. mode] = r
    r.speedup = mode == "concurrent" and results[key .. "serial"].wall_s / r.wall_s or nil
    print(ROW:format(n, used, mode,
      r.wall_s, r.speedup and ("%.1fx"):format(r.speedup) or "", r.add_ms, r.mount_ms, r.unmount_ms,
      r.eject_ms, r.remove_ms, r.max_loop_stall_ms, r.max_loop_busy_ms, r.guest_busy * 100,
      r.agent_busy * 100, r.host_busy * 100))
    out:write(cjson.encode(r), "\n")
    out:flush()
  end
end
out:close()
print(([[
ctl: controllers the disks were spread over; add .. remove: median ms of each step (a
step's time includes its wait for the agent connection, which serves one request at a
time); stall: longest gap of a 1 ms loop timer, ms; busy: most CPU time this process
used within one gap, ms (a long stall with little busy time is the OS running QEMU,
not scsictl blocking the loop); guest: the guest's CPU use over %d vCPU(s); agent: time
a request was in flight on the agent channel; host: QEMU's and this process's CPU use
over the host's %d core(s).]]):format(smp, cores))
vm:stop()
for _, p in ipairs(images) do loop.fs("unlink", p) end
loop.fs("rmdir", dir)
