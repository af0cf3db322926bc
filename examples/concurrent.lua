-- concurrent.lua — several disks attached at once from coroutines.
--
-- Every simulated backend call takes a while (it yields a few times). A tiny
-- round-robin scheduler runs one coroutine per task. While a call for a disk
-- is in flight, that disk is busy: a second task wanting the same disk gets
-- "busy" and waits, while tasks on other disks keep making progress.
--
--   lua5.4 examples/concurrent.lua

local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$")
  or ((arg and arg[0] or ""):match("^examples/") and ".") or ".."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath_given = os.getenv("LUA_CPATH_5_4") or os.getenv("LUA_CPATH") -- make: from BUILD=
if not cpath_given then package.cpath = root .. "/build/lua/?.so;" .. package.cpath end

local sim = require("scsictl.sim")

local ctl, vm = sim.controller{ controllers = 1, luns_per_controller = 8 }
vm:set_latency(3)      -- every callback yields 3 times before acting

-- The scheduler: resume every live task once per tick, in order.
local tasks = {}
local function spawn(name, fn)
  tasks[#tasks + 1] = { name = name, co = coroutine.create(fn) }
end

local max_in_flight = 0
local function run(label)
  local tick = 0
  while #tasks > 0 do
    tick = tick + 1
    local live = {}
    for _, t in ipairs(tasks) do
      local ok, err = coroutine.resume(t.co)
      if not ok then error(("task %s failed: %s"):format(t.name, tostring(err)), 0) end
      if coroutine.status(t.co) ~= "dead" then live[#live + 1] = t end
    end
    tasks = live
    -- What is the simulated VM doing right now?
    local doing = {}
    for _, f in ipairs(vm:in_flight()) do
      doing[#doing + 1] = ("%s(%s)"):format(f.op, f.host_path or f.path or "?")
    end
    max_in_flight = math.max(max_in_flight, #doing)
    print(("  %s tick %2d: %d task(s) left; in flight: %s"):format(label, tick,
      #tasks, #doing > 0 and table.concat(doing, ", ") or "nothing"))
  end
end

-- Calls fn() until it stops answering "busy", yielding to others meanwhile.
local busy_seen = 0
local function patiently(who, what, fn)
  local waited = 0
  while true do
    local res, msg, code = fn()
    if res ~= nil then return res end
    if code ~= "busy" then error(("%s: %s failed: %s (%s)"):format(who, what, msg, code)) end
    busy_seen, waited = busy_seen + 1, waited + 1
    print(waited == 1 and ("  [%s] %s: busy (%s); waiting"):format(who, what, msg)
      or ("  [%s] %s: still busy"):format(who, what))
    coroutine.yield()
  end
end

local claims = {}   -- task name -> { id, path }

local function attach_task(name, disk)
  spawn(name, function()
    local id = patiently(name, "reserve " .. disk,
      function() return ctl:reserve({ host_path = disk, read_only = true },
                                    { read_only = true }) end)
    local path = patiently(name, "map " .. disk,
      function() return ctl:map_to_guest(id) end)
    claims[name] = { id = id, path = path }
    print(("  [%s] %s is mounted at %s"):format(name, disk, path))
  end)
end

print("attaching: three disks at once, and a second claim on the first disk")
attach_task("alpha", "/data/a.vhdx")
attach_task("alpha-too", "/data/a.vhdx")   -- same disk: waits while a is busy
attach_task("beta", "/data/b.vhdx")
attach_task("gamma", "/data/c.vhdx")
run("attach")

assert(claims["alpha"].path == claims["alpha-too"].path, "one shared mount")
assert(#vm:attached() == 3 and #vm:mounts() == 3)
print("\n" .. vm:render(ctl) .. "\n")

print("detaching everything at once")
local names = {}
for name in pairs(claims) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  local c = claims[name]
  spawn(name, function()
    patiently(name, "unmap", function() return ctl:unmap_from_guest(c.id) end)
    print(("  [%s] released"):format(name))
  end)
end
run("detach")

print(("\n%d busy answers, at most %d callbacks in flight at once")
  :format(busy_seen, max_in_flight))
assert(busy_seen > 0, "the shared disk was busy at some point")
assert(max_in_flight >= 2, "calls on different disks overlapped")
assert(vm:is_empty(), "the VM still has disks or mounts")
assert(#vm:refusals() == 0, "the simulator refused a call")
assert(ctl:stats().reservations == 0)
assert(ctl:close())
print(("concurrent: ok, %d callbacks overlapped, nothing left attached"):format(max_in_flight))
