--[[
agent_child.lua — a host agent that spec/reconcile_spec.lua kills with
SIGKILL: a controller with a state file over a real QEMU and Linux guest,
running a random workload on the event loop until it is killed.

  lua5.4 spec/support/agent_child.lua <state> <qmp> <agent> <pci> <seed> <tasks> <image>...
    <state>  the state file: opened with scsictl.open when it exists, else
             made by scsictl.new{ state_file = ... } (2 controllers x 4 LUNs)
    <qmp>    a QMP socket of its own (QEMU's second -qmp: the parent keeps
             the first)
    <agent>  qemu-ga's socket (it serves one client: the parent lets go of
             it while the child runs)
    <pci>    controller PCI addresses, "0000:00:04.0,0000:00:05.0"
             (the three sockets and addresses: support/guest.lua's endpoints)
    <tasks>  how many loop tasks run the workload at once

Connects QMP and the guest agent, opens the state file, prints "ready",
then each task reserves, maps and unmaps at random (disk configs fixed per
image, so no call is a config_mismatch) until the process is killed.
Writes go through scsictl.state_writer, so nothing blocks the loop.
]]

local scsictl = require("scsictl")
local G = require("support.guest")
local loop = require("scsictl.loop")
local state_writer = require("scsictl.state_writer")

local CONTROLLERS, LUNS = 2, 4
local MAX_RESERVATIONS = 8

local function fail(msg)
  io.stdout:write("error: ", tostring(msg), "\n")
  io.stdout:flush()
  os.exit(3)
end

local function open(state, vm, guest)
  local backends = { vm = vm, linux_guest = guest, state_writer = state_writer.new() }
  local f = io.open(state, "rb")
  if f then
    f:close()
    return scsictl.open(state, backends)
  end
  backends.controllers, backends.luns_per_controller, backends.state_file = CONTROLLERS, LUNS, state
  return scsictl.new(backends)
end

-- One task's workload: a random call, then a short pause (a call that
-- returns busy does not yield, and the other tasks must get their turn).
local function worker(ctl, images)
  while true do
    local res = ctl:reservations()
    local r = math.random()
    if #res == 0 or (r < 0.35 and #res < MAX_RESERVATIONS) then
      ctl:reserve({ host_path = images[math.random(#images)] })
    elseif r < 0.7 then
      ctl:map_to_guest(res[math.random(#res)].id)
    else
      ctl:unmap_from_guest(res[math.random(#res)].id)
    end
    loop.sleep(0.005 + math.random() * 0.03)
  end
end

local function main(state, qmp_path, agent_path, pci_list, seed, tasks, images)
  math.randomseed(seed)
  loop.run(function()
    -- QMP and the guest agent, connected and synced (support/guest.lua).
    local vm, guest = G.attach(qmp_path, agent_path, pci_list)
    if not vm then fail(guest) end
    local ctl, msg, code = open(state, vm, guest)
    if not ctl then fail(("cannot open the state file: %s (%s)"):format(msg, code)) end
    io.stdout:write("ready\n")
    io.stdout:flush()
    local running = {}
    for i = 1, tasks do running[i] = loop.spawn(worker, ctl, images) end
    for _, t in ipairs(running) do t:join() end
  end)
end

if arg and arg[0] and arg[0]:match("agent_child%.lua$") then
  local images = {}
  for i = 7, #arg do images[#images + 1] = arg[i] end
  main(arg[1], arg[2], arg[3], arg[4], math.tointeger(tonumber(arg[5])), math.tointeger(tonumber(arg[6])), images)
end
