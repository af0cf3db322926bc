-- repl.lua — an interactive scsictl session on a simulated VM.
--
--   lua5.4 -i examples/repl.lua     (then type at the > prompt)
--
-- Loads the module, builds a controller `ctl` over a simulated Linux VM `vm`
-- and defines a few helpers. Run without -i it prints the help and exits.

-- luacheck: globals scsictl sim ctl vm attach detach show ids help

local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$")
  or ((arg and arg[0] or ""):match("^examples/") and ".") or ".."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/lua/?.so;" .. package.cpath

scsictl = require("scsictl")
sim = require("scsictl.sim")
ctl, vm = sim.controller{ controllers = 2, luns_per_controller = 8, partitions = 2 }

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

-- show(): the slot map, with pins and reference counts, and the summary line.
function show()
  print(vm:render(ctl))
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
scsictl REPL: `ctl` is a controller over the simulated VM `vm`
(2 controllers x 8 luns, Linux guest, 2 partitions per disk).

  id, path = attach("/img/a.vhdx")                  reserve + map (partition 0)
  id2 = attach("/img/a.vhdx", { partition = 1 })    another partition, same slot
  detach(id)                                        release a claim
  show()                                            slot map, pins, refs
  ids()                                             outstanding reservations

  ctl:reserve({ host_path = "/img/b.vhdx", read_only = true }, { read_only = true })
  ctl:map_to_guest(id)   ctl:unmap_from_guest(id)   ctl:reserve_for_rootfs(1, 7)
  ctl:stats()   ctl:slots()   ctl:reservations()   print(ctl)

  vm:fail_next("add_scsi_disk", 1, "no luck")       the next hot-add fails
  vm:fail_rate(0.3)   vm:clear_faults()             random failures (seeded)
  vm:events("mount")  vm.log  vm:attached()  vm:mounts()  print(vm)
  help()                                            this text]]

function help() print(HELP) end

help()
assert(ctl:stats().reservations == 0 and vm:is_empty())
print("repl: ready (start it with `lua5.4 -i examples/repl.lua` to type commands)")
