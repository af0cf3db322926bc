-- trace.lua — every step as a JSON line, and a latency summary per step.
--
-- A controller over a simulated Linux VM; a trace function writes each
-- step's start and end as one JSON object per line (to a temporary file, or
-- the path given), and at the end we print how long each kind of step took.
-- (The simulator answers in microseconds; a real VM takes milliseconds.)
--
--   lua5.4 examples/trace.lua [trace.jsonl]

-- Find the module in this checkout (lua/ and build/lua/) before installed ones.
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$")
  or ((arg and arg[0] or ""):match("^examples/") and ".") or ".."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath_given = os.getenv("LUA_CPATH_5_4") or os.getenv("LUA_CPATH") -- make: from BUILD=
if not cpath_given then package.cpath = root .. "/build/lua/?.so;" .. package.cpath end

local scsictl = require("scsictl")
local sim = require("scsictl.sim")

-- A JSON object of the event's flat fields (strings, numbers, booleans).
local function json(event)
  local keys = {}
  for k in pairs(event) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = event[k]
    if type(v) == "string" then
      v = ("%q"):format(v):gsub("\\\n", "\\n")
    else
      v = tostring(v)
    end
    parts[#parts + 1] = ('"%s":%s'):format(k, v)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local path = arg[1] or (os.tmpname())
local out = assert(io.open(path, "w"))
local durations = {} -- step name -> list of seconds

local function trace(event)
  out:write(json(event), "\n")
  if event.event == "end" then
    local list = durations[event.step] or {}
    durations[event.step] = list
    list[#list + 1] = event.duration
  end
end

local vm = sim.new{ controllers = 2, luns_per_controller = 8 }
local ctl = scsictl.new{ controllers = 2, luns_per_controller = 8, vm = vm, linux_guest = vm,
                         trace = trace }
vm:set_view(ctl)

local ids = {}
for i = 1, 6 do
  ids[i] = assert(ctl:reserve({ host_path = ("/images/layer%d.vhdx"):format(i), read_only = true },
                              { read_only = true }))
  assert(ctl:map_to_guest(ids[i]))
end
for _, id in ipairs(ids) do assert(ctl:unmap_from_guest(id)) end
out:close()

-- The first lines of the trace, then the summary.
local f = assert(io.open(path))
for _ = 1, 2 do print(f:read("l")) end
f:close()
print()
print(("%-28s %5s %10s %10s"):format("step", "calls", "median us", "max us"))
local names = {}
for name in pairs(durations) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  local list = durations[name]
  table.sort(list)
  print(("%-28s %5d %10.1f %10.1f"):format(name, #list, list[(#list + 1) // 2] * 1e6,
    list[#list] * 1e6))
end
if not arg[1] then os.remove(path) end
print("trace: ok")
