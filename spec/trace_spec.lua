-- The trace option: scsictl.new{ ..., trace = fn } calls fn(event) when a
-- step starts and when it ends.
local scsictl = require("scsictl")
local H = require("helper")

local function traced(opts)
  opts = opts or {}
  local R = H.recorder()
  local events = {}
  local ctl = scsictl.new {
    controllers = opts.controllers or 2, luns_per_controller = opts.luns or 4, vm = R.vm,
    linux_guest = opts.guest ~= "windows" and R.linux_guest or nil,
    windows_guest = opts.guest == "windows" and R.windows_guest or nil,
    trace = opts.trace or function(e) events[#events + 1] = e end,
  }
  return ctl, R, events
end

-- The step of every start event, in order.
local function started(events)
  local t = {}
  for _, e in ipairs(events) do
    if e.event == "start" then t[#t + 1] = e.step end
  end
  return t
end

describe("trace", function()
  it("gives each step a start and an end event with the documented fields", function()
    local ctl, _, events = traced()
    local id = H.value(ctl:reserve({ host_path = "/img/a.vhdx" }, { partition = 2 }))
    H.value(ctl:map_to_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, started(events))
    assert.equal(4, #events)
    local s, e = events[1], events[2]
    assert.same({ event = "start", op = "map", id = id, step = "add_scsi_disk", backend = "vm",
                  controller = 0, lun = 0 }, s)
    assert.equal("end", e.event)
    assert.is_true(e.ok)
    assert.is_nil(e.error)
    assert.equal("float", math.type(e.duration))
    assert.truthy(e.duration >= 0 and e.duration < 60)
    assert.same({ event = "start", op = "map", id = id, step = "add_mapped_virtual_disk",
                  backend = "linux_guest", controller = 0, lun = 0, partition = 2 }, events[3])
  end)

  it("reports a failed step with ok = false and the callback's message", function()
    local ctl, R, events = traced()
    local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    R:fail("add_scsi_disk", "nil", "no room")
    H.fails("backend", ctl:map_to_guest(id))
    assert.equal(2, #events)
    assert.is_false(events[2].ok)
    assert.equal("no room", events[2].error)
    R:fail("add_scsi_disk", "raise", "kaput")
    H.fails("backend", ctl:map_to_guest(id))
    assert.equal("kaput", events[4].error)
  end)

  it("ends a step whose coroutine is closed while it is suspended", function()
    local ctl, R, events = traced()
    local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    R:yield("add_scsi_disk")
    local co = coroutine.create(function() return ctl:map_to_guest(id) end)
    assert.is_true(coroutine.resume(co))
    assert.equal(1, #events)
    assert.is_true(coroutine.close(co))
    assert.equal(2, #events)
    assert.equal("end", events[2].event)
    assert.is_false(events[2].ok)
    assert.truthy(events[2].error:find("abandoned", 1, true))
    assert.is_false(ctl:slots()[1].busy)
  end)

  it("matches the backend calls actually made, over random sequences", function()
    local steps, failed, resumed = 0, 0, 0
    for seed = 1, 40 do
      math.randomseed(seed)
      local guest = seed % 4 == 0 and "windows" or "linux"
      local ctl, R, events = traced { guest = guest, controllers = 2, luns = 3 }
      local names = guest == "windows"
        and { "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk" }
        or { "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
             "remove_scsi_device" }
      local ids = {}
      for _ = 1, 60 do
        local r = math.random()
        if r < 0.3 or #ids == 0 then
          local id = ctl:reserve({ host_path = "/img/" .. math.random(4) .. ".vhdx" },
                                 { partition = math.random(0, 1) })
          if id then ids[#ids + 1] = id end
        else
          local i = math.random(#ids)
          local map = r < 0.65
          local name = names[math.random(#names)]
          if math.random() < 0.3 then R:fail(name, ({ "raise", "false", "nil" })[math.random(3)], "injected") end
          if math.random() < 0.3 then R:yield(name) end
          R:clear()
          local before = #events
          local co = coroutine.wrap(function()
            if map then return ctl:map_to_guest(ids[i]) end
            return ctl:unmap_from_guest(ids[i])
          end)
          local done = table.pack(co())
          while type(done[2]) == "table" do -- the recorder yielded (name, entry): resume
            done = table.pack(co())
            resumed = resumed + 1
          end
          if not map and done[1] == true then table.remove(ids, i) end
          -- the steps traced for this call are the calls the backend saw
          local mine = {}
          for k = before + 1, #events do mine[#mine + 1] = events[k] end
          local calls = {}
          for k = 1, #mine, 2 do
            assert.equal("start", mine[k].event)
            assert.equal("end", mine[k + 1].event)
            assert.equal(mine[k].step, mine[k + 1].step)
            calls[#calls + 1] = mine[k].step
          end
          assert.same(R:names(), calls, "seed " .. seed)
          for k, entry in ipairs(R.log) do
            assert.equal(entry.ok, mine[2 * k].ok, "seed " .. seed)
            steps = steps + 1
            if not entry.ok then failed = failed + 1 end
          end
        end
      end
    end
    -- the sequences did exercise failures and yields
    assert.truthy(steps > 300 and failed > 30 and resumed > 30, ("%d steps, %d failed, %d resumed")
      :format(steps, failed, resumed))
  end)

  it("goes on when the trace function raises or yields", function()
    for _, bad in ipairs { function() error("trace boom") end, function() coroutine.yield() end } do
      local ctl, R = traced { trace = bad }
      local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
      local co = coroutine.wrap(function() return ctl:map_to_guest(id) end)
      assert.equal("/run/mounts/scsi/0_0_0", co())
      assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
    end
  end)

  it("turns a raising trace function into a Lua warning", function()
    local cpath = os.getenv("SCSICTL_CPATH") or "build/lua/?.so"
    local script = [[
      package.cpath = arg[1] .. ";" .. package.cpath
      local scsictl = require("scsictl")
      local noop = function() end
      local ctl = scsictl.new{ controllers = 1, vm = { add_scsi_disk = noop, remove_scsi_disk = noop },
        linux_guest = { add_mapped_virtual_disk = noop, remove_mapped_virtual_disk = noop,
                        remove_scsi_device = noop },
        trace = function() error("trace boom", 0) end }
      print(ctl:map_to_guest(ctl:reserve{ host_path = "/a" }))
    ]]
    local d = H.tmpdir()
    local f = assert(io.open(d .. "/t.lua", "w"))
    f:write(script)
    f:close()
    local p = assert(io.popen(("lua5.4 -W %s/t.lua '%s' 2>&1"):format(d, cpath)))
    local out = p:read("a")
    p:close()
    H.rmdir(d)
    assert.truthy(out:find("scsictl: the trace function failed: trace boom", 1, true), out)
    assert.truthy(out:find("/run/mounts/scsi/0_0_0", 1, true), out)
  end)

  it("is accepted by import and open, and checked like every option", function()
    local ctl = traced()
    local snap = H.value(ctl:save())
    local R = H.recorder()
    local events = {}
    local copy = scsictl.import(snap, { vm = R.vm, linux_guest = R.linux_guest,
                                        trace = function(e) events[#events + 1] = e end })
    H.value(copy:map_to_guest(H.value(copy:reserve{ host_path = "/img/b.vhdx" })))
    assert.equal(4, #events)
    -- open: a controller restarted from its state file
    local d = H.tmpdir()
    local owner = H.value(scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux_guest,
                                       state_file = d .. "/state" })
    local id = H.value(owner:reserve{ host_path = "/img/c.vhdx" })
    owner = nil -- luacheck: ignore 311 (collected, not closed: its lock goes, its claims stay)
    H.full_gc()
    local reopened = H.value(scsictl.open(d .. "/state", { vm = R.vm, linux_guest = R.linux_guest,
                                          trace = function(e) events[#events + 1] = e end }))
    H.value(reopened:map_to_guest(id))
    assert.equal(8, #events)
    assert.equal(id, events[8].id)
    reopened:close()
    H.rmdir(d)
    H.raises("trace must be a function", function()
      scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux_guest, trace = 42 }
    end)
    H.raises("trace must be a function", function()
      scsictl.import(snap, { vm = R.vm, linux_guest = R.linux_guest, trace = "x" })
    end)
  end)
end)
