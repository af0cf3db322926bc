-- ctl:plan(id, "map" | "unmap"): the steps an operation would run now, with
-- their arguments, changing nothing.
local H = require("helper")

-- What a controller shows of its state (plan must leave it as it was).
local function view(ctl)
  return { slots = ctl:slots(), reservations = ctl:reservations(), stats = ctl:stats() }
end

-- The calls the backend saw, as plan lists steps.
local function calls(R)
  local t = {}
  for _, e in ipairs(R.log) do
    local args = {}
    for i = 2, e.n + 1 do args[i - 1] = e[i] end
    t[#t + 1] = { step = e[1], backend = e.backend, args = args }
  end
  return t
end

describe("ctl:plan", function()
  it("lists a map's and an unmap's steps with the arguments the callbacks then get", function()
    local ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
    local id = H.value(ctl:reserve({ host_path = "/img/a.vhdx", read_only = true },
                                   { partition = 1, read_only = true, options = { "noatime" } }))
    local plan = ctl:plan(id, "map")
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, H.pluck(plan, "step"))
    assert.same({ { path = "/img/a.vhdx", type = "VirtualDisk", read_only = true }, 0, 0 },
                plan[1].args)
    H.value(ctl:map_to_guest(id))
    assert.same(calls(R), plan)
    R:clear()
    plan = ctl:plan(id, "unmap")
    assert.same({ "remove_mapped_virtual_disk", "remove_scsi_device", "remove_scsi_disk" },
                H.pluck(plan, "step"))
    H.value(ctl:unmap_from_guest(id))
    assert.same(calls(R), plan)
  end)

  it("is empty when the operation has nothing to do", function()
    local ctl = H.new_ctl{ controllers = 1, luns = 4 }
    local a = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    local b = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    H.value(ctl:map_to_guest(a))
    assert.same({}, ctl:plan(a, "map"))
    H.value(ctl:map_to_guest(b))
    assert.same({}, ctl:plan(b, "unmap")) -- a still holds the disk and partition
  end)

  it("equals the steps the next operation runs, over random sequences, and changes nothing", function()
    local compared = 0
    for seed = 1, 30 do
      math.randomseed(seed)
      local guest = seed % 3 == 0 and "windows" or "linux"
      local ctl, R = H.new_ctl{ guest = guest, controllers = 2, luns = 3 }
      local names = { "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk",
                      "remove_mapped_virtual_disk", guest == "linux" and "remove_scsi_device" or nil }
      local ids = {}
      for _ = 1, 50 do
        if math.random() < 0.3 or #ids == 0 then
          local scratch = guest == "windows" and math.random() < 0.3
          local id = ctl:reserve({ host_path = "/img/" .. math.random(4) .. ".vhdx" },
                                 { partition = math.random(0, 1), format_with_refs = scratch or nil })
          if id then ids[#ids + 1] = id end
        else
          local i = math.random(#ids)
          local what = math.random() < 0.5 and "map" or "unmap"
          local before = view(ctl)
          local plan = ctl:plan(ids[i], what)
          assert.same(before, view(ctl), "seed " .. seed)
          local fails = math.random() < 0.3
          if fails then R:fail(names[math.random(#names)], "nil", "injected") end
          R:clear()
          local method = what == "map" and ctl.map_to_guest or ctl.unmap_from_guest
          local ok = method(ctl, ids[i])
          if what == "unmap" and ok then table.remove(ids, i) end
          if plan and ok then -- it ran as planned, every step succeeding
            assert.same(plan, calls(R), "seed " .. seed)
            compared = compared + 1
          elseif not plan then
            assert.same({}, R.log, "seed " .. seed) -- refused: so is the operation
          end
          R.failures = {}
        end
      end
    end
    assert.truthy(compared > 200, compared)
  end)

  it("says busy for a reservation whose step is in flight, and plans the others", function()
    local ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
    local a = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    local b = H.value(ctl:reserve{ host_path = "/img/b.vhdx" })
    R:yield("add_scsi_disk")
    local co = coroutine.wrap(function() return ctl:map_to_guest(a) end)
    co()
    H.fails("busy", ctl:plan(a, "map"))
    H.fails("busy", ctl:plan(a, "unmap"))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, H.pluck(ctl:plan(b, "map"), "step"))
    assert.equal("/run/mounts/scsi/0_0_0", co())
  end)

  it("answers what the operation would answer when it cannot start", function()
    local ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
    H.fails("not_found", ctl:plan("00000000-0000-4000-8000-000000000000", "map"))
    local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    H.value(ctl:map_to_guest(id))
    R:fail("remove_scsi_disk", "nil", "in use")
    H.fails("backend", ctl:unmap_from_guest(id))
    H.fails("busy", ctl:plan(id, "map")) -- a pending release
    assert.same({ "remove_scsi_disk" }, H.pluck(ctl:plan(id, "unmap"), "step"))
    H.value(ctl:unmap_from_guest(id))
    assert.is_true(ctl:close())
    H.fails("closed", ctl:plan(id, "unmap"))
  end)

  it("raises on malformed arguments", function()
    local ctl = H.new_ctl{ controllers = 1, luns = 4 }
    local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    -- (as methods, Lua counts the arguments after self)
    H.raises("bad argument #1 to 'plan' (reservation id", function() ctl:plan(42, "map") end)
    H.raises("reservation id must be a UUID", function() ctl:plan("not-a-uuid", "map") end)
    H.raises("bad argument #2 to 'plan' (invalid option 'remap')", function() ctl:plan(id, "remap") end)
    H.raises("bad argument #2 to 'plan'", function() ctl:plan(id) end)
    H.raises("scsictl.controller expected", function() ctl.plan({}, id, "map") end)
  end)
end)
