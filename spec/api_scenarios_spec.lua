-- The reference design's own controller tests, ported, for both guest
-- flavours where they apply.
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

local where = H.where

for _, guest in ipairs(H.GUESTS) do
  describe("scenario (" .. guest .. " guest)", function()
    local ctl, R
    before_each(function()
      ctl, R = H.new_ctl{ guest = guest, controllers = 4 }
    end)

    -- Reserve -------------------------------------------------------------

    it("reserve success", function()
      local id = ctl:reserve(A, { partition = 1 })
      assert.is_true(H.is_uuid(id))
      assert.same({ id = id, controller = 0, lun = 0, partition = 1, host_path = "/img/a.vhdx",
                    release_pending = false }, ctl:reservation(id))
      assert.same({}, R.log)
    end)

    -- Reserves A twice, on partitions p1 and p2: two ids, one slot.
    local function reserve_twice(p1, p2)
      local id1 = H.value(ctl:reserve(A, { partition = p1 }))
      local id2 = H.value(ctl:reserve(A, { partition = p2 }))
      assert.are_not.equal(id1, id2)
      assert.same(where(ctl, id1), where(ctl, id2))
    end

    it("same disk, same partition gives distinct ids", function()
      reserve_twice(1, 1)
      assert.equal(2, H.partition(ctl, 0, 0, 1).refs)
    end)

    it("same disk, different partition", function()
      reserve_twice(1, 2)
      assert.equal(1, H.partition(ctl, 0, 0, 1).refs)
      assert.equal(1, H.partition(ctl, 0, 0, 2).refs)
      assert.equal(1, ctl:stats().disks)
    end)

    it("same path, different disk config fails", function()
      H.value(ctl:reserve(A))
      H.fails_quietly(ctl, R, "config_mismatch", "reserve", { host_path = "/img/a.vhdx", read_only = true })
    end)

    it("different disks", function()
      local id1 = H.value(ctl:reserve(A))
      local id2 = H.value(ctl:reserve(B))
      assert.same({ 0, 0 }, where(ctl, id1))
      assert.same({ 0, 1 }, where(ctl, id2))
      assert.equal(2, ctl:stats().disks)
    end)

    it("zero controllers has no slots", function()
      local c0 = H.new_ctl{ guest = guest, controllers = 0 }
      H.fails("no_slots", c0:reserve(A))
      assert.equal(0, c0:stats().reservations)
    end)

    it("filling every slot, then one more fails", function()
      local full = H.new_ctl{ guest = guest, controllers = 4 }
      for i = 1, 4 * 64 do
        local id = H.value(full:reserve{ host_path = "/img/fill-" .. i })
        local r = full:reservation(id)
        assert.equal((i - 1) // 64, r.controller)
        assert.equal((i - 1) % 64, r.lun)
      end
      assert.equal(0, full:stats().free)
      H.fails("no_slots", full:reserve(A))
      assert.equal(256, full:stats().disks)
    end)

    -- Map -----------------------------------------------------------------

    it("map success", function()
      local id = H.value(ctl:reserve(A))
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id))
      assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
    end)

    for _, method in ipairs({ "map", "unmap" }) do
      it(method .. " unknown id", function()
        local call = method == "map" and ctl.map_to_guest or ctl.unmap_from_guest
        H.fails("not_found", call(ctl, H.UNKNOWN_ID))
        assert.same({}, R.log)
      end)
    end

    -- { test, failing callback, its message, the callbacks made }
    for _, case in ipairs({
      { "map attach error", "add_scsi_disk", "attach error", { "add_scsi_disk" } },
      { "map mount error", "add_mapped_virtual_disk", "mount error", { "add_scsi_disk", "add_mapped_virtual_disk" } },
    }) do
      it(case[1], function()
        local id = H.value(ctl:reserve(A))
        H.fails_at(ctl, R, "map_to_guest", id, case[2], "raise", case[3], case[4])
      end)
    end

    it("idempotent map", function()
      local id = H.value(ctl:reserve(A))
      local p1 = H.value(ctl:map_to_guest(id))
      local p2 = H.value(ctl:map_to_guest(id))
      assert.equal(p1, p2)
      assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
    end)

    -- Unmap ---------------------------------------------------------------

    it("unmap success", function()
      local id = H.mapped(ctl, A)
      H.unmaps_again(ctl, R, id, H.teardown_names(guest))
    end)

    it("slot freed after full unmap", function()
      local id = H.mapped(ctl, A)
      H.value(ctl:unmap_from_guest(id))
      assert.equal(0, ctl:stats().used)
      assert.same({}, ctl:slots())
    end)

    -- { test, failing callback, its message, the callbacks made }
    for _, case in ipairs({
      { "unmap unmount error", "remove_mapped_virtual_disk", "unmount error", { "remove_mapped_virtual_disk" } },
      { "unmap detach error", "remove_scsi_disk", "detach error", H.teardown_names(guest) },
    }) do
      it(case[1], function()
        H.fails_at(ctl, R, "unmap_from_guest", H.mapped(ctl, A), case[2], "raise", case[3], case[4])
        assert.equal(1, ctl:stats().used)
      end)
    end

    it("unmap two reservations on one disk", function()
      local id1 = H.mapped(ctl, A)
      local id2 = H.mapped(ctl, A)
      R:clear()
      assert.is_true(ctl:unmap_from_guest(id1))
      assert.same({}, R.log)
      assert.equal(1, ctl:stats().used)
      assert.is_true(ctl:unmap_from_guest(id2))
      assert.same(H.teardown_names(guest), R:names())
      assert.equal(0, ctl:stats().used)
    end)

    -- Combined --------------------------------------------------------------

    it("reserve after unmap reuses the slot", function()
      local id1 = H.mapped(ctl, A)
      H.value(ctl:unmap_from_guest(id1))
      local id2 = H.value(ctl:reserve(B))
      assert.same({ 0, 0 }, where(ctl, id2))
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id2))
    end)

    it("unmap after a failed map cleans up", function()
      local id = H.value(ctl:reserve(A))
      R:fail("add_mapped_virtual_disk", "raise")
      H.fails("backend", ctl:map_to_guest(id))
      assert.is_true(ctl:unmap_from_guest(id))
      assert.same({}, ctl:slots())
      assert.same({ controllers = 4, luns_per_controller = 64, slots = 256, used = 0, free = 256, pinned = 0,
                    disks = 0, reservations = 0 }, ctl:stats())
      H.check_no_leak(R, guest)
    end)

    it("unmap retried after a detach failure succeeds", function()
      local id = H.release_pending(ctl, R, A, "remove_scsi_disk")
      H.unmaps_again(ctl, R, id, { "remove_scsi_disk" })
      assert.equal(0, ctl:stats().used)
      assert.is_nil(ctl:reservation(id))
      H.check_no_leak(R, guest)
    end)
  end)
end

describe("scenario: Windows guest", function()
  it("maps and unmaps with the Windows callbacks and paths, and never ejects", function()
    local ctl, R = H.new_ctl{ guest = "windows", controllers = 4 }
    local id = H.value(ctl:reserve(A, { partition = 2 }))
    assert.equal("C:\\mounts\\scsi\\0_0_2", ctl:map_to_guest(id))
    assert.is_true(ctl:unmap_from_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_disk" },
      R:names())
    assert.equal(0, R:count("remove_scsi_device"))
    for _, e in ipairs(R.log) do
      assert.is_not.equal("linux_guest", e.backend)
    end
  end)
end)
