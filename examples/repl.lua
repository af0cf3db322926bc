-- repl.lua — an interactive scsictl session on a simulated VM.
--
--   make repl                  (or: lua5.4 examples/repl.lua)
--
-- Loads the module, builds a controller `ctl` over a simulated Linux VM `vm`,
-- defines a few helpers and reads Lua at a `scsictl>` prompt: an expression
-- prints its values (tables as tables, via scsictl.pretty), a statement runs,
-- an unfinished chunk continues on a `>>` line; Ctrl-D or os.exit() leaves.
-- Without a terminal it reads stdin without prompts and ends with "repl: ok"
-- (ctest runs it so).

-- luacheck: globals scsictl sim ctl vm attach detach show ids help

-- Find the module in this checkout (lua/, build/lua/) unless LUA_CPATH says
-- where (make repl sets it from BUILD=).
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$")
  or ((arg and arg[0] or ""):match("^examples/") and ".") or ".."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath_given = os.getenv("LUA_CPATH_5_4") or os.getenv("LUA_CPATH") -- make: from BUILD=
if not cpath_given then package.cpath = root .. "/build/lua/?.so;" .. package.cpath end

scsictl = require("scsictl")
sim = require("scsictl.sim")
local pretty = require("scsictl.pretty")
local GEOMETRY = { controllers = 2, luns_per_controller = 8, partitions = 2 }
ctl, vm = sim.controller(GEOMETRY)

-- attach(path [, mount]) -> id, guest path: reserve and map in one go.
function attach(path, mount)
  local id, msg, code = ctl:reserve({ host_path = path }, mount)
  if not id then return nil, msg, code end
  local guest, msg2, code2 = ctl:map_to_guest(id)
  if not guest then return id, msg2, code2 end   -- keep the id to retry or detach
  return id, guest
end

-- detach(id) -> true: release a claim (the last one tears the disk down).
function detach(id) return ctl:unmap_from_guest(id) end

-- show(): the slot map and the summary line.
function show()
  print(ctl:slot_map())
  print(tostring(ctl))
end

-- ids(): every outstanding reservation.
function ids()
  for _, r in ipairs(ctl:reservations()) do
    print(("%s  %d:%d partition %d  %s"):format(r.id, r.controller, r.lun,
      r.partition, r.host_path))
  end
end

local HELP = [[
  id, path = attach("/img/a.vhdx")                  reserve + map (partition 0)
  id2 = attach("/img/a.vhdx", { partition = 1 })    another partition, same slot
  detach(id)                                        release a claim
  show()                                            slot map and summary line
  ids()                                             outstanding reservations

  ctl:reserve({ host_path = "/img/b.vhdx", read_only = true }, { read_only = true })
  ctl:map_to_guest(id)   ctl:unmap_from_guest(id)   ctl:reserve_for_rootfs(1, 7)
  ctl:stats()   ctl:slots()   ctl:reservations()   ctl:slot_map()   ctl

  vm:fail_next("add_scsi_disk", 1, "no luck")       the next hot-add fails
  vm:fail_rate(0.3)   vm:clear_faults()             random failures (seeded)
  vm:events("mount")  vm.log  vm:attached()  vm:mounts()  vm (its own view)
  help()                                            this text]]

function help() print(HELP) end

local BANNER = ([[
%s REPL (%s): `ctl` is a controller over `vm`, a simulated VM
with %d controllers x %d LUNs, a %s guest, %d partitions per disk.
Try:  id = attach("/images/base.vhdx")
      print(ctl:slot_map())
      detach(id)
help() lists the helpers; Ctrl-D or os.exit() leaves.]]):format(scsictl._VERSION,
  _VERSION, GEOMETRY.controllers, GEOMETRY.luns_per_controller, vm.guest,
  GEOMETRY.partitions)

-- Compiles the lines typed so far: an expression (as `return <lines>`), else
-- a statement. Returns the function, or nil and the message, or nil when the
-- chunk is unfinished (the message ends in "<eof>", as lua.c checks).
local function compile(src)
  local fn = load("return " .. src, "=stdin")
  if fn then return fn end
  local err
  fn, err = load(src, "=stdin")
  if fn then return fn end
  if err:sub(-5) == "<eof>" then return nil end
  return nil, err
end

local function message(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if type(mt) == "table" and mt.__tostring then return tostring(e) end
  return "error object: " .. pretty.format(e)
end

-- One statement or expression, over as many lines as it takes. False at EOF.
local function step(prompts)
  local src
  repeat
    if prompts then io.write(src and ">> " or "scsictl> ") io.flush() end
    local line = io.read("l")
    if not line then return false end
    src = src and (src .. "\n" .. line) or line
    local fn, err = compile(src)
    if fn then
      local res = table.pack(xpcall(fn, message))
      if not res[1] then
        io.stderr:write(res[2], "\n")
      elseif res.n > 1 then
        print(pretty.results(table.unpack(res, 2, res.n)))
      end
      return true
    elseif err then
      io.stderr:write(err, "\n")
      return true
    end
  until false
end

-- Prompts when both ends are a terminal. Lines are read from a pipe or file
-- too, but not from a terminal whose output goes elsewhere (ctest hands its
-- tests the terminal it runs in and reads their output from a pipe).
local tty, tty_out = os.execute("test -t 0"), os.execute("test -t 1")
print(BANNER)
assert(ctl:stats().reservations == 0 and vm:is_empty())
while not tty or tty_out do
  -- A Ctrl-C at the prompt ("interrupted!", raised in this file) must not
  -- end the session. (lua5.4 catches only the first; a second one ends it.)
  local ok, more = pcall(step, tty)
  if not ok then io.stderr:write((message(more):gsub("^[^\n]-repl%.lua:%d+: ", "")), "\n") end
  if ok and not more then break end
end
if tty and tty_out then io.write("\n") else print("repl: ok") end
