--[[
crash_child.lua — the process that spec/snapshot_spec.lua kills with SIGKILL.

As a script:   lua5.4 spec/support/crash_child.lua <dir> <seed> <guest>
  <dir>/state   the controller's durable state file
  <dir>/events  append-only log of the simulated VM's effective callbacks

  1. Builds a scsictl.sim VM + guest and replays <dir>/events into it: that
     log *is* the VM's state (a crashed host agent does not take the VM down
     with it, so every child continues the VM of the children before it).
  2. Opens <dir>/state with scsictl.open (or creates it with scsictl.new{
     state_file = ... } the first time), prints "ready" and flushes.
  3. Runs random reserve / map / unmap calls forever, with random injected
     callback failures, until it is killed.

Every callback goes to the sim; when the sim accepts it, one line describing
the call is appended to <dir>/events and flushed (write(2)) *before* the
callback returns to the controller, that is before the controller writes the
state file for the completed step. So at any instant the events log is at
most one effective callback ahead of the state file. A kill between the sim
acting and the line being written counts as the VM never having done it
(the line is the VM's commit point); a partial last line is ignored.

As a module (require("support.crash_child")), it returns the helpers the
spec shares with the child: serialise, parse_events, replay, state strings.
]]

local M = {}

M.CONTROLLERS, M.LUNS = 2, 4
M.PATHS = { "/img/a.vhdx", "/img/b c.vhdx", "/img/d.vhdx", "/img/e.vhdx", "/img/f.vhdx" }
M.CALLBACKS = {
  linux = { vm = { "add_scsi_disk", "remove_scsi_disk" },
            guest = { "add_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_device" } },
  windows = { vm = { "add_scsi_disk", "remove_scsi_disk" },
              guest = { "add_mapped_virtual_disk", "add_mapped_virtual_disk_for_container_scratch",
                        "remove_mapped_virtual_disk" } },
}

-- One-line Lua literal of strings, integers, booleans and tables of those.
function M.serialise(v)
  local t = type(v)
  if t == "string" then
    return (("%q"):format(v):gsub("\\\n", "\\n"):gsub("\r", "\\r"))
  elseif t == "number" then
    assert(math.type(v) == "integer", "only integers are logged")
    return tostring(v)
  elseif t == "boolean" or t == "nil" then
    return tostring(v)
  end
  assert(t == "table", "cannot serialise a " .. t)
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  local out = {}
  for _, k in ipairs(keys) do
    out[#out + 1] = "[" .. M.serialise(k) .. "]=" .. M.serialise(v[k])
  end
  return "{" .. table.concat(out, ",") .. "}"
end

-- The complete lines of an events file, as { op, n, args } (a trailing
-- partial line, cut by the kill, is left out).
function M.parse_events(path)
  local f = io.open(path, "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local events = {}
  for line in text:gmatch("([^\n]*)\n") do
    local chunk = assert(load("return " .. line, "event", "t", {}))
    events[#events + 1] = chunk()
  end
  return events
end

-- Replays events[1..upto] into sim s; every one must be accepted again.
function M.replay(s, events, upto)
  for i = 1, upto or #events do
    local e = events[i]
    local ok, msg = s[e.op](s, table.unpack(e.args, 1, e.n))
    if not ok then
      error(("replay of event %d (%s) refused: %s"):format(i, e.op, tostring(msg)))
    end
  end
end

-- The items (disk at a slot, mount of a partition) an event changes.
function M.event_items(e)
  local a = e.args
  if e.op == "add_scsi_disk" then
    return { ("disk %d:%d"):format(a[2], a[3]) }
  elseif e.op == "remove_scsi_disk" then
    return { ("disk %d:%d"):format(a[1], a[2]) }
  elseif e.op == "remove_scsi_device" then
    return { ("disk %d:%d"):format(a[1].controller, a[1].lun) }
  end
  local st = a[1]
  if st.mount_path then
    return { ("mount %d:%d:%d"):format(st.controller, st.lun, st.partition) }
  end
  local c, l, p = st.container_path:match("(%d+)_(%d+)_(%d+)$")
  return { ("mount %d:%d:%d"):format(tonumber(c), tonumber(l), tonumber(p)) }
end

-- key -> value maps of a sim's and of a controller's view.
function M.sim_items(s)
  local t = {}
  for _, d in ipairs(s:attached()) do
    t[("disk %d:%d"):format(d.controller, d.lun)] = d.host_path .. (d.ejected and " ejected" or "")
  end
  for _, m in ipairs(s:mounts()) do t[("mount %d:%d:%d"):format(m.controller, m.lun, m.partition)] = "mounted" end
  return t
end

function M.ctl_items(ctl)
  local t = {}
  for _, sl in ipairs(ctl:slots()) do
    if sl.state == "attached" or sl.state == "ejected" then
      t[("disk %d:%d"):format(sl.controller, sl.lun)] = sl.host_path .. (sl.state == "ejected" and " ejected" or "")
    end
    for _, p in ipairs(sl.partitions or {}) do
      if p.state == "mounted" then t[("mount %d:%d:%d"):format(sl.controller, sl.lun, p.partition)] = "mounted" end
    end
  end
  return t
end

-- The VM and guest state as one string: attached disks and mounts.
function M.sim_state(s)
  local out = {}
  for _, d in ipairs(s:attached()) do
    out[#out + 1] = ("disk %d:%d %s%s"):format(d.controller, d.lun, d.host_path, d.ejected and " ejected" or "")
  end
  for _, m in ipairs(s:mounts()) do
    out[#out + 1] = ("mount %d:%d:%d"):format(m.controller, m.lun, m.partition)
  end
  return table.concat(out, "; ")
end

-- What a controller believes the VM and guest hold, in the same form.
function M.ctl_state(ctl)
  local out, mounts = {}, {}
  for _, sl in ipairs(ctl:slots()) do
    if sl.state == "attached" or sl.state == "ejected" then
      out[#out + 1] = ("disk %d:%d %s%s"):format(sl.controller, sl.lun, sl.host_path,
        sl.state == "ejected" and " ejected" or "")
    end
    for _, p in ipairs(sl.partitions or {}) do
      if p.state == "mounted" then
        mounts[#mounts + 1] = ("mount %d:%d:%d"):format(sl.controller, sl.lun, p.partition)
      end
    end
  end
  for _, m in ipairs(mounts) do out[#out + 1] = m end
  return table.concat(out, "; ")
end

-- The backend tables of `guest`: { vm = ..., <guest>_guest = ... }, each
-- callback returning around(name, ...) (its arguments after self).
function M.wrapped_backends(guest, around)
  local function wrap(names)
    local t = {}
    for _, name in ipairs(names) do
      t[name] = function(_, ...)
        return around(name, ...)
      end
    end
    return t
  end
  local cb = M.CALLBACKS[guest]
  return { vm = wrap(cb.vm), [guest .. "_guest"] = wrap(cb.guest) }
end

-- Backends that forward to sim s and log each accepted call to `log` (a
-- file, flushed per line) before returning.
function M.logging_backends(s, guest, log)
  return M.wrapped_backends(guest, function(name, ...)
    local ok, msg = s[name](s, ...)
    if ok then
      log:write(M.serialise({ op = name, n = select("#", ...), args = { ... } }), "\n")
      log:flush()
    end
    return ok, msg
  end)
end

local function main(dir, seed, guest)
  local scsictl = require("scsictl")
  local sim = require("scsictl.sim")
  local s = sim.new{ controllers = M.CONTROLLERS, luns_per_controller = M.LUNS, guest = guest,
                     forgiving = true,
                     partitions = 2, seed = seed }
  M.replay(s, M.parse_events(dir .. "/events"))
  local log = assert(io.open(dir .. "/events", "ab"))
  local b = M.logging_backends(s, guest, log)
  local state = dir .. "/state"
  local ctl, msg, code
  local f = io.open(state, "rb")
  if f then
    f:close()
    ctl, msg, code = scsictl.open(state, b)
  else
    b.controllers, b.luns_per_controller, b.state_file = M.CONTROLLERS, M.LUNS, state
    ctl, msg, code = scsictl.new(b)
  end
  if not ctl then
    io.stdout:write(("error: cannot open the state file: %s (%s)\n"):format(msg, code))
    io.stdout:flush()
    os.exit(3)
  end
  math.randomseed(seed)
  io.stdout:write("ready\n")
  io.stdout:flush()
  -- Recovery, as a restarted agent does it (spec §8: a step in flight at the
  -- crash counts as not done and the retried operation issues it again):
  -- re-map every reservation without a pending release before anything
  -- else, so that no claim whose map was in flight is released unmapped.
  for _, r in ipairs(ctl:reservations()) do
    if not r.release_pending then
      for _ = 1, 3 do
        local ok, _, c = ctl:map_to_guest(r.id)
        if ok or c == "busy" then break end
      end
    end
  end
  s:fail_rate(0.15, nil, "mixed")
  for _ = 1, 1e7 do
    local res = ctl:reservations()
    local r = math.random()
    if #res == 0 or (r < 0.3 and #res < 10) then
      ctl:reserve({ host_path = M.PATHS[math.random(#M.PATHS)] }, { partition = math.random(0, 2) })
    elseif r < 0.65 then
      ctl:map_to_guest(res[math.random(#res)].id)
    else
      ctl:unmap_from_guest(res[math.random(#res)].id)
    end
  end
end

if select("#", ...) >= 3 and arg and arg[0] and arg[0]:match("crash_child%.lua$") then
  main(arg[1], math.tointeger(tonumber(arg[2])), arg[3])
  return
end
return M
