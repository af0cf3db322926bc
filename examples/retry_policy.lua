-- retry_policy.lua — orchestration policy as a script: retry backend
-- failures with exponential backoff, and when every slot is taken, release
-- idle disks to make room. The simulated VM injects faults all along.
--
--   lua5.4 examples/retry_policy.lua

local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$")
  or ((arg and arg[0] or ""):match("^examples/") and ".") or ".."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath_given = os.getenv("LUA_CPATH_5_4") or os.getenv("LUA_CPATH") -- make: from BUILD=
if not cpath_given then package.cpath = root .. "/build/lua/?.so;" .. package.cpath end

local sim = require("scsictl.sim")

-- A small VM: one controller with 4 LUNs, so we run out of slots quickly.
local ctl, vm = sim.controller{ controllers = 1, luns_per_controller = 4, seed = 42 }

-- Faults: the first two hot-adds time out; then a quarter of all guest and
-- teardown calls fail, in all three failure forms (nil+msg, false, error).
vm:fail_next("add_scsi_disk", 2, "hypervisor: timed out waiting for the disk")
vm:fail_rate(0.25, { "mount", "unmount", "eject", "detach" }, "mixed")

-- Simulated time: backoff advances a clock instead of sleeping.
local clock_ms = 0
local POLICY = { attempts = 8, first_delay_ms = 50 }

local idle = {}   -- disks kept attached after use, least recently used first
local retries, evictions = 0, 0

-- Calls fn() until it succeeds. "backend" (and "busy") failures are retried
-- after an exponentially growing delay; "no_slots" releases the least
-- recently used idle disk and tries again; anything else is returned.
local function with_retry(what, fn)
  local delay = POLICY.first_delay_ms
  for attempt = 1, POLICY.attempts do
    local res, msg, code = fn()
    if res ~= nil then return res end
    if code == "backend" or code == "busy" then
      retries = retries + 1
      print(("    %s: attempt %d failed (%s), retry in %d ms: %s")
        :format(what, attempt, code, delay, msg))
      clock_ms = clock_ms + delay
      delay = delay * 2
    elseif code == "no_slots" and #idle > 0 then
      local victim = table.remove(idle, 1)
      evictions = evictions + 1
      print(("    %s: no free slot, releasing idle disk %s"):format(what, victim.disk))
      assert(with_retry("release " .. victim.disk,
        function() return ctl:unmap_from_guest(victim.id) end))
    else
      return nil, msg, code
    end
  end
  return nil, what .. ": still failing after " .. POLICY.attempts .. " attempts", "backend"
end

-- Get a disk mounted: reuse an idle one, or reserve and map a new one. A map
-- that finally fails is given up with a (retried) unmap, so nothing leaks.
local function acquire(disk)
  for i, c in ipairs(idle) do
    if c.disk == disk then
      table.remove(idle, i)
      print(("  %s: reused, still mounted at %s"):format(disk, c.path))
      return c
    end
  end
  local id = assert(with_retry("reserve " .. disk,
    function() return ctl:reserve{ host_path = disk } end))
  local path, msg = with_retry("map " .. disk,
    function() return ctl:map_to_guest(id) end)
  if not path then
    assert(with_retry("give up " .. disk, function() return ctl:unmap_from_guest(id) end))
    error(msg)
  end
  print(("  %s: mapped at %s"):format(disk, path))
  return { id = id, disk = disk, path = path }
end

-- The workload: jobs needing disks, more distinct disks than slots.
local jobs = { "/data/a.vhdx", "/data/b.vhdx", "/data/c.vhdx", "/data/a.vhdx",
               "/data/d.vhdx", "/data/e.vhdx", "/data/b.vhdx", "/data/f.vhdx" }
for n, disk in ipairs(jobs) do
  print(("job %d needs %s  (t = %d ms)"):format(n, disk, clock_ms))
  local claim = acquire(disk)
  -- ... the job would run here, using claim.path ...
  idle[#idle + 1] = claim        -- keep it attached for the next job
end

print("\nslot map after the jobs (idle disks are kept attached):")
print(vm:render(ctl))

print("\nshutting down: releasing every idle disk")
while #idle > 0 do
  local c = table.remove(idle, 1)
  assert(with_retry("release " .. c.disk, function() return ctl:unmap_from_guest(c.id) end))
  print(("  %s released"):format(c.disk))
end

local counts = vm:counts()
print(("\n%d backend calls, %d injected failures, %d retries, %d evictions, "
  .. "%d ms of simulated backoff"):format(counts.calls, counts.injected,
  retries, evictions, clock_ms))
assert(counts.injected >= 2 and retries >= counts.injected, "every fault was retried")
assert(evictions > 0, "the policy had to make room")
assert(#vm:refusals() == 0, "the simulator refused a call")
assert(vm:is_empty(), "the VM still has disks or mounts")
assert(ctl:stats().reservations == 0 and ctl:stats().disks == 0)
assert(ctl:close())
print(("retry_policy: ok, %d injected faults absorbed, nothing left attached")
  :format(counts.injected))
