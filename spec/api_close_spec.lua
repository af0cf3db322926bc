-- ctl:close(), <close> variables, garbage collection, __name (spec §5).
local H = require("helper")
local scsictl = require("scsictl")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

describe("ctl:close", function()
  it("returns true and is idempotent", function()
    local ctl = H.new_ctl{ controllers = 1 }
    assert.is_true(ctl:close())
    assert.is_true(ctl:close())
    assert.is_true(ctl:close())
  end)

  it("makes every later mutating call return closed", function()
    local ctl, R = H.new_ctl{ controllers = 2 }
    local id = H.value(ctl:reserve(A))
    H.value(ctl:map_to_guest(id))
    local id2 = H.value(ctl:reserve(B))
    R:clear()
    assert.is_true(ctl:close())
    H.fails("closed", ctl:reserve(A))
    H.fails("closed", ctl:reserve{ host_path = "/img/new" })
    H.fails("closed", ctl:map_to_guest(id))
    H.fails("closed", ctl:map_to_guest(id2))
    H.fails("closed", ctl:unmap_from_guest(id))
    H.fails("closed", ctl:unmap_from_guest(id2))
    H.fails("closed", ctl:reserve_for_rootfs(1, 0))
    assert.same({}, R.log)
  end)

  it("makes no backend call, even with disks attached and mounted", function()
    local ctl, R = H.new_ctl{ controllers = 2 }
    for i = 1, 3 do
      H.value(ctl:map_to_guest(H.value(ctl:reserve{ host_path = "/img/" .. i })))
    end
    R:clear()
    assert.is_true(ctl:close())
    assert.same({}, R.log)
  end)

  it("keeps introspection working as a read-only view", function()
    local ctl, R = H.new_ctl{ controllers = 2, luns = 3 }
    assert.is_true(ctl:reserve_for_rootfs(1, 2))
    local id = H.value(ctl:reserve(A, { partition = 1 }))
    H.value(ctl:map_to_guest(id))
    local id2 = H.value(ctl:reserve(B))
    local before = H.state(ctl)
    local r1 = ctl:reservation(id)
    assert.is_true(ctl:close())
    assert.same(before.stats, ctl:stats())
    assert.same(before.slots, ctl:slots())
    assert.same(before.reservations, ctl:reservations())
    assert.same(r1, ctl:reservation(id))
    assert.same(r1, ctl:reservation(id:upper()))
    assert.equal(id2, ctl:reservation(id2).id)
    assert.is_nil(ctl:reservation(H.UNKNOWN_ID))
    assert.is_string(tostring(ctl))
    assert.same({}, R:calls("remove_scsi_disk"))
  end)

  it("returns busy while a callback is in flight, and the controller stays open", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    local id = H.value(ctl:reserve(A))
    local inside
    R:hook("add_scsi_disk", function()
      inside = table.pack(ctl:close())
    end, 1)
    assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
    H.fails("busy", table.unpack(inside, 1, inside.n))
    -- still open
    local id2 = H.value(ctl:reserve(B))
    assert.equal("/run/mounts/scsi/0_1_0", ctl:map_to_guest(id2))
    assert.is_true(ctl:close())
  end)

  it("returns busy while a callback is suspended in a coroutine", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    local id = H.value(ctl:reserve(A))
    R:yield("add_scsi_disk")
    local co = coroutine.create(function()
      local r = ctl:map_to_guest(id)
      return r
    end)
    assert.is_true(coroutine.resume(co))
    H.fails("busy", ctl:close())
    local ok, path = coroutine.resume(co)
    assert.is_true(ok)
    assert.equal("/run/mounts/scsi/0_0_0", path)
    assert.is_true(ctl:close())
  end)
end)

describe("a <close> variable", function()
  it("closes the controller at the end of its scope, with no backend call", function()
    local R = H.recorder()
    local outer
    do
      local ctl <close> = scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux_guest }
      outer = ctl
      H.value(ctl:map_to_guest(H.value(ctl:reserve(A))))
      R:clear()
    end
    assert.same({}, R.log)
    H.fails("closed", outer:reserve(B))
    assert.equal(1, outer:stats().disks)
    assert.is_true(outer:close())
  end)

  it("closes the controller when the scope is left by an error", function()
    local R = H.recorder()
    local outer
    local ok = pcall(function()
      local ctl <close> = scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux_guest }
      outer = ctl
      error("leaving")
    end)
    assert.is_false(ok)
    H.fails("closed", outer:reserve(A))
  end)

  it("accepts a controller that was already closed", function()
    local R = H.recorder()
    local outer
    do
      local ctl <close> = scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux_guest }
      outer = ctl
      assert.is_true(ctl:close())
    end
    H.fails("closed", outer:reserve(A))
  end)
end)

describe("garbage collection", function()
  -- A controller on a fresh recorder, brought into some state by
  -- set_up(ctl, R), then dropped: collecting it makes no backend call.
  local function collected_quietly(controllers, set_up)
    local R = H.recorder()
    do
      local ctl = scsictl.new{ controllers = controllers, vm = R.vm, linux_guest = R.linux_guest }
      set_up(ctl, R)
    end
    R:clear()
    H.full_gc()
    assert.same({}, R.log)
  end

  it("collecting a controller with attached and mounted disks makes no backend call", function()
    collected_quietly(2, function(ctl, R)
      for i = 1, 3 do
        H.mapped(ctl, { host_path = "/img/" .. i })
      end
      -- one release pending, one reservation never mapped
      H.release_pending(ctl, R, { host_path = "/img/p" }, "remove_scsi_device")
      H.value(ctl:reserve{ host_path = "/img/never" })
    end)
  end)

  it("collecting a controller with a suspended callback makes no backend call and does not crash", function()
    collected_quietly(1, function(ctl, R)
      R:yield("add_scsi_disk")
      local id = H.value(ctl:reserve(A))
      local co = coroutine.create(function()
        local r = ctl:map_to_guest(id)
        return r
      end)
      assert.is_true(coroutine.resume(co))
    end)
  end)

  it("collecting a controller that was closed makes no backend call", function()
    collected_quietly(1, function(ctl)
      H.mapped(ctl, A)
      assert.is_true(ctl:close())
    end)
  end)

  it("keeps the backend tables alive while the controller lives", function()
    local calls = 0
    local function backend()
      local t = {}
      for _, n in ipairs{ "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk",
                          "remove_mapped_virtual_disk", "remove_scsi_device" } do
        t[n] = function() calls = calls + 1 end
      end
      return t
    end
    local ctl = scsictl.new{ controllers = 1, vm = backend(), linux_guest = backend() }
    H.full_gc()
    local id = H.value(ctl:reserve(A))
    assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
    H.full_gc()
    assert.is_true(ctl:unmap_from_guest(id))
    assert.equal(5, calls)
  end)

  it("lets the backend tables go once the controller is collected", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local R = H.recorder()
      weak.vm = R.vm
      weak.guest = R.linux_guest
      local ctl = scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux_guest }
      H.value(ctl:map_to_guest(H.value(ctl:reserve(A))))
      assert.is_true(ctl:close())
    end
    H.full_gc()
    assert.is_nil(weak.vm)
    assert.is_nil(weak.guest)
  end)
end)

describe("the controller's metatable", function()
  it("has a __name string, __gc, __close and __tostring", function()
    local ctl = H.new_ctl{ controllers = 1 }
    local mt = getmetatable(ctl)
    assert.is_table(mt)
    assert.is_string(mt.__name)
    assert.truthy(#mt.__name > 0)
    assert.is_not_nil(mt.__gc)
    assert.is_not_nil(mt.__close)
    assert.is_not_nil(mt.__tostring)
  end)
end)

describe("a controller reached after its finaliser ran", function()
  -- Another object's __gc can resurrect a controller collected in the same
  -- cycle; it then has no core and must behave as closed, never read freed
  -- memory.
  local function resurrect()
    local ctl = H.new_ctl{ controllers = 2 }
    local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    local saved = {}
    -- Finalisers run in reverse order of marking: the holder, marked after
    -- the controller, is finalised first and makes it reachable again; the
    -- controller's own finaliser still runs in that cycle.
    do
      local victim = ctl
      setmetatable({}, { __gc = function() saved.ctl = victim end })
    end
    ctl = nil -- luacheck: ignore 311 (collected, then resurrected)
    H.full_gc()
    H.full_gc()
    assert.is_not_nil(saved.ctl)
    return saved.ctl, id
  end

  it("behaves as a closed, empty controller", function()
    local ctl, id = resurrect()
    assert.equal("scsictl.controller (finalized, closed)", tostring(ctl))
    H.fails("closed", ctl:reserve{ host_path = "/img/b.vhdx" })
    H.fails("closed", ctl:reserve_for_rootfs(0, 1))
    H.fails("closed", ctl:map_to_guest(id))
    H.fails("closed", ctl:unmap_from_guest(id))
    H.fails("closed", ctl:save())
    assert.is_nil(ctl:reservation(id))
    assert.same({}, ctl:reservations())
    assert.same({}, ctl:slots())
    assert.same({ controllers = 0, luns_per_controller = 0, slots = 0, used = 0, free = 0,
                  pinned = 0, disks = 0, reservations = 0 }, ctl:stats())
    assert.is_true(ctl:close())
    assert.is_true(ctl:close())
    -- malformed arguments still raise
    H.raises("bad argument", function() ctl:reserve(42) end)
  end)
end)
