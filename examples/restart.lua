--[[
restart.lua — surviving a host-agent crash with the durable state file.

A controller with `state_file` attaches and mounts disks in a simulated VM.
Then the agent "crashes" in the middle of a map: the VM has hot-added the
disk, but the callback never returns, so the controller never learns it.
All that survives a crash is the state file on disk and the VM itself, so
the script abandons the old controller (no close, no cleanup, never touched
again), reopens the file with scsictl.open, and recovers:

  1. every reservation without a pending release is mapped again: a step
     that was in flight at the crash counts as not done, so it is issued
     again, and the VM answers "already present" (success);
  2. every reservation is released (pending releases resume where they
     failed).

At the end nothing is attached or mounted in the VM and no slot is used.

Run: lua5.4 examples/restart.lua   (with scsictl.so on LUA_CPATH and lua/ on
LUA_PATH, as ctest sets them). Exits non-zero on any unexpected outcome.
]]

local scsictl = require("scsictl")
local sim = require("scsictl.sim")

local function fail(fmt, ...)
  io.stderr:write("restart: FAILED: ", fmt:format(...), "\n")
  os.exit(1)
end

local function must(v, msg, code, ...)
  if v == nil or v == false then fail("%s (%s)", tostring(msg), tostring(code)) end
  return v, msg, code, ...
end

local function say(fmt, ...) print(fmt:format(...)) end

-- A private directory for the state file.
local dir = os.tmpname()
os.remove(dir)
must(os.execute("mkdir -p '" .. dir .. "'"), "cannot create " .. dir)
local state = dir .. "/scsi.state"

local function cleanup()
  os.execute("rm -rf '" .. dir .. "'")
end

-- The VM and its Linux guest, simulated. It outlives the agent.
local vm = sim.new{ controllers = 2, luns_per_controller = 4, guest = "linux", partitions = 2,
                   forgiving = true } -- a real backend accepts re-issued removals

-- The first agent's VM backend: forwards to the VM, except that once `hang`
-- is set, add_scsi_disk performs the hot-add and then never returns (the
-- agent dies inside the callback).
local hang = false
local vm_backend = {
  add_scsi_disk = function(_, attachment, controller, lun)
    local ok, msg = vm:add_scsi_disk(attachment, controller, lun)
    if hang then
      say("  [vm] hot-added %s at %d:%d ... and the agent dies before hearing back",
          attachment.path, controller, lun)
      coroutine.yield() -- never resumed
    end
    return ok, msg
  end,
  remove_scsi_disk = function(_, controller, lun) return vm:remove_scsi_disk(controller, lun) end,
}

say("== agent 1: state file %s", state)
local ctl = must(scsictl.new{ controllers = 2, luns_per_controller = 4, vm = vm_backend,
                              linux_guest = vm, state_file = state })

local os_id = must(ctl:reserve({ host_path = "/img/os.vhdx", read_only = true }, { partition = 1 }))
local data1 = must(ctl:reserve({ host_path = "/img/data.vhdx" }, { partition = 0 }))
local data2 = must(ctl:reserve({ host_path = "/img/data.vhdx" }, { partition = 0 }))
local logs = must(ctl:reserve({ host_path = "/img/logs.vhdx" }, { partition = 2 }))
for _, id in ipairs({ os_id, data1, data2, logs }) do
  local path = must(ctl:map_to_guest(id))
  say("mapped %s -> %s", ctl:reservation(id).host_path, path)
end

-- A release that fails half-way: the logs disk's unmount is refused once.
vm:fail_next("unmount", 1, "device is busy")
local ok, msg, code = ctl:unmap_from_guest(logs)
if ok or code ~= "backend" then fail("expected the unmount of logs to fail, got %s", tostring(code)) end
say("release of /img/logs.vhdx failed and is pending: %s", msg)

-- The crash: map a scratch disk inside a coroutine; the hot-add happens, the
-- callback never returns.
local scratch = must(ctl:reserve{ host_path = "/img/scratch.vhdx" })
hang = true
local co = coroutine.create(function() return ctl:map_to_guest(scratch) end)
local resumed = coroutine.resume(co)
if not resumed or coroutine.status(co) ~= "suspended" then fail("the map did not hang as planned") end
-- Keep the dead agent's objects referenced and never touch them again, so
-- nothing of it runs any more (a collected coroutine would count as a failed
-- step and write the file, which a killed process cannot do).
local crashed = { ctl = ctl, co = co }
say("== agent 1 crashed (%d disks in the VM, %d mounts)", #vm:attached(), #vm:mounts())

-- A state file has one owner: a killed agent's lock dies with its process.
-- Agent 1 lives on in this one-process demo, holding its lock, so agent 2
-- opens a copy of the file as the crash left it (what a new process finds).
local after_crash = dir .. "/after-crash.state"
do
  local from, to = assert(io.open(state, "rb")), assert(io.open(after_crash, "wb"))
  to:write(from:read("a"))
  from:close()
  to:close()
end
local again, why, busy = scsictl.open(state, { vm = vm, linux_guest = vm })
if again or busy ~= "busy" then fail("a second owner of the state file should be refused") end
say("(opening %s while agent 1 holds it: %s)", state, why)
say("== agent 2: scsictl.open(%q)", after_crash)
local ctl2 = must(scsictl.open(after_crash, { vm = vm, linux_guest = vm }))
local st = ctl2:stats()
say("restored: %d reservations on %d disks, %d slots used", st.reservations, st.disks, st.used)
for _, s in ipairs(ctl2:slots()) do
  say("  %d:%d %-20s %-9s claims %d", s.controller, s.lun, s.host_path, s.state, s.reservations)
end
if st.reservations ~= 5 or st.disks ~= 4 then fail("unexpected restored state") end
local sc = must(ctl2:reservation(scratch))
local slot_of_scratch
for _, s in ipairs(ctl2:slots()) do
  if s.host_path == "/img/scratch.vhdx" then slot_of_scratch = s end
end
if not slot_of_scratch or slot_of_scratch.state ~= "reserved" then
  fail("the in-flight hot-add should be recorded as not done")
end
say("the scratch disk (%d:%d) is 'reserved' in the file but attached in the VM: its add was in flight",
    sc.controller, sc.lun)

-- Recovery, step 1: re-run the map of every reservation without a pending
-- release (re-issues the in-flight add; the VM says "already present").
vm:clear_log()
for _, r in ipairs(ctl2:reservations()) do
  local path, err, c = ctl2:map_to_guest(r.id)
  if path then
    say("re-mapped %s partition %d -> %s", r.host_path, r.partition, path)
  elseif c == "busy" then
    say("skipped %s: release pending", r.host_path)
  else
    fail("map of %s: %s", r.host_path, err)
  end
end
local already = #vm:events(function(e) return e.already end)
say("%d step(s) re-issued and answered 'already present'", already)
if already ~= 1 then fail("expected exactly one re-issued step") end

-- Recovery, step 2: release everything (retrying, as a real agent would).
for _, r in ipairs(ctl2:reservations()) do
  local done, err
  for _ = 1, 3 do
    done, err = ctl2:unmap_from_guest(r.id)
    if done then break end
  end
  if not done then fail("release of %s: %s", r.host_path, err) end
  say("released %s partition %d", r.host_path, r.partition)
end

st = ctl2:stats()
if st.reservations ~= 0 or st.disks ~= 0 or st.used ~= 0 then fail("the controller still holds something") end
if not vm:is_empty() then fail("the VM still has something attached or mounted:\n%s", tostring(vm)) end
if #vm:refusals() > 0 then fail("the VM refused a call: %s", vm:refusals()[1].message) end
local f = io.open(after_crash, "rb")
local text = f and f:read("a")
if f then f:close() end
if text ~= ctl2:save() then fail("the state file does not hold the final state") end
must(ctl2:close())
say("VM after recovery: %d disks attached, %d mounts", #vm:attached(), #vm:mounts())
cleanup()
print("restart: ok, nothing leaked")
-- Leave without closing the Lua state: the dead agent's suspended coroutine
-- must not be collected (it would write into a file that no longer exists).
io.stdout:flush()
os.exit(0, false)
-- (not reached; keeps `crashed` visibly alive until the exit above)
---@diagnostic disable-next-line: unreachable-code
return crashed
