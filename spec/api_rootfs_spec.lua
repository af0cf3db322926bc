-- ctl:reserve_for_rootfs(controller, lun [, disk]) (spec §2, §5, D6;
-- docs/semantics.md "Pins").
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local ROOT = { host_path = "/img/rootfs.vhdx", read_only = true }

describe("ctl:reserve_for_rootfs", function()
  local ctl, R
  before_each(function()
    ctl, R = H.new_ctl{ controllers = 2, luns = 4 }
  end)

  it("pins a slot, returns true and makes no callback", function()
    assert.is_true(ctl:reserve_for_rootfs(1, 3))
    assert.same({}, R.log)
    H.stats_include(ctl, { pinned = 1, used = 1, free = 7, disks = 0 })
    assert.same({ { controller = 1, lun = 3, pinned = true, busy = false, tearing_down = false, reservations = 0,
                    partitions = {} } },
      ctl:slots())
  end)

  it("keeps the pinned slot away from new disks", function()
    assert.is_true(ctl:reserve_for_rootfs(0, 0))
    assert.is_true(ctl:reserve_for_rootfs(0, 1))
    local id = H.value(ctl:reserve(A))
    assert.same({ 0, 2 }, { ctl:reservation(id).controller, ctl:reservation(id).lun })
  end)

  it("returns slot_taken for a slot already pinned", function()
    assert.is_true(ctl:reserve_for_rootfs(0, 2))
    H.fails_quietly(ctl, R, "slot_taken", "reserve_for_rootfs", 0, 2)
    H.fails_quietly(ctl, R, "slot_taken", "reserve_for_rootfs", 0, 2, ROOT)
  end)

  it("returns slot_taken for a slot that holds a disk", function()
    H.value(ctl:reserve(A))
    H.fails_quietly(ctl, R, "slot_taken", "reserve_for_rootfs", 0, 0)
  end)

  it("returns slot_taken for a slot whose disk is attached", function()
    local id = H.value(ctl:reserve(A))
    H.value(ctl:map_to_guest(id))
    H.fails("slot_taken", ctl:reserve_for_rootfs(0, 0))
    assert.equal(0, ctl:stats().pinned)
  end)

  it("can pin a slot again once its disk has been released", function()
    local id = H.value(ctl:reserve(A))
    H.value(ctl:map_to_guest(id))
    H.value(ctl:unmap_from_guest(id))
    assert.is_true(ctl:reserve_for_rootfs(0, 0))
  end)

  describe("returns out_of_range and pins nothing", function()
    local cases = {
      { "controller == controllers", 2, 0 },
      { "lun == luns_per_controller (D6)", 0, 4 },
      { "lun of the next controller's range (D6)", 0, 5 },
      { "both past the end", 2, 4 },
      { "controller 2^32", 1 << 32, 0 },
      { "lun 2^32", 0, 1 << 32 },
      { "lun 2^32 + 1", 0, (1 << 32) + 1 },
      { "huge controller", math.maxinteger, 0 },
      { "huge lun", 0, math.maxinteger },
    }
    for _, c in ipairs(cases) do
      it("for " .. c[1], function()
        H.fails_quietly(ctl, R, "out_of_range", "reserve_for_rootfs", c[2], c[3])
        H.fails_quietly(ctl, R, "out_of_range", "reserve_for_rootfs", c[2], c[3], ROOT)
        assert.equal(0, ctl:stats().pinned)
      end)
    end

    it("for any slot with zero controllers", function()
      local c0 = H.new_ctl{ controllers = 0 }
      H.fails("out_of_range", c0:reserve_for_rootfs(0, 0))
      assert.equal(0, c0:stats().pinned)
    end)
  end)

  it("accepts the last slot of the geometry", function()
    assert.is_true(ctl:reserve_for_rootfs(1, 3))
    assert.truthy(H.slot(ctl, 1, 3))
  end)

  describe("with a disk config", function()
    it("gives a later reserve of that host path with an equal config the pinned slot", function()
      assert.is_true(ctl:reserve_for_rootfs(1, 2, ROOT))
      local other = H.value(ctl:reserve(A))
      assert.same({ 0, 0 }, { ctl:reservation(other).controller, ctl:reservation(other).lun })
      local id = H.value(ctl:reserve({ host_path = "/img/rootfs.vhdx", read_only = true }))
      assert.same({ 1, 2 }, { ctl:reservation(id).controller, ctl:reservation(id).lun })
      R:clear()
      assert.equal("/run/mounts/scsi/1_2_0", ctl:map_to_guest(id))
      local add = R:calls("add_scsi_disk")[1]
      assert.same({ "/img/rootfs.vhdx", 1, 2 }, { add[2].path, add[3], add[4] })
      local s = H.slot(ctl, 1, 2)
      assert.is_true(s.pinned)
      assert.equal("/img/rootfs.vhdx", s.host_path)
      assert.equal("attached", s.state)
      H.stats_include(ctl, { pinned = 1, used = 2, disks = 2 })
    end)

    it("returns config_mismatch for that host path with another disk config", function()
      assert.is_true(ctl:reserve_for_rootfs(1, 2, ROOT))
      H.fails_quietly(ctl, R, "config_mismatch", "reserve", { host_path = "/img/rootfs.vhdx" })
      H.fails_quietly(ctl, R, "config_mismatch", "reserve",
        { host_path = "/img/rootfs.vhdx", read_only = true, type = "PassThru" })
    end)

    it("keeps the slot pinned after the disk's last release, and the path goes back into it", function()
      assert.is_true(ctl:reserve_for_rootfs(0, 3, ROOT))
      local id = H.value(ctl:reserve(ROOT))
      H.value(ctl:map_to_guest(id))
      assert.is_true(ctl:unmap_from_guest(id))
      H.stats_include(ctl, { pinned = 1, used = 1, disks = 0 })
      local s = H.slot(ctl, 0, 3)
      assert.is_true(s.pinned)
      assert.equal(0, s.reservations)
      -- other disks still skip it
      for i = 1, 3 do
        local d = H.value(ctl:reserve{ host_path = "/img/" .. i })
        assert.are_not.same({ 0, 3 }, { ctl:reservation(d).controller, ctl:reservation(d).lun })
      end
      local again = H.value(ctl:reserve(ROOT))
      assert.same({ 0, 3 }, { ctl:reservation(again).controller, ctl:reservation(again).lun })
    end)

    it("returns slot_taken when the host path is already pinned at another slot", function()
      assert.is_true(ctl:reserve_for_rootfs(0, 1, ROOT))
      H.fails_quietly(ctl, R, "slot_taken", "reserve_for_rootfs", 0, 2, ROOT)
    end)

    it("returns slot_taken when the host path is already placed at another slot", function()
      H.value(ctl:reserve(ROOT))
      H.fails_quietly(ctl, R, "slot_taken", "reserve_for_rootfs", 1, 0, ROOT)
    end)
  end)

  it("returns closed after close", function()
    assert.is_true(ctl:close())
    H.fails("closed", ctl:reserve_for_rootfs(0, 0))
    H.fails("closed", ctl:reserve_for_rootfs(0, 1, ROOT))
    assert.equal(0, ctl:stats().pinned)
  end)

  it("returns slot_taken, not busy, for a slot whose disk has a callback in flight", function()
    local id = H.value(ctl:reserve(A))
    local got, other
    R:hook("add_scsi_disk", function()
      got = table.pack(ctl:reserve_for_rootfs(0, 0))
      other = table.pack(ctl:reserve_for_rootfs(0, 1))
    end, 1)
    H.value(ctl:map_to_guest(id))
    H.fails("slot_taken", table.unpack(got, 1, got.n))
    assert.is_true(other[1])
    assert.equal(1, ctl:stats().pinned)
  end)
end)
