-- ctl:unmap_from_guest(id) (spec §3, §5, P3, P7, P8; docs/semantics.md "Release").
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

local EMPTY_STATS = { controllers = 2, luns_per_controller = 4, slots = 8, used = 0, free = 8, pinned = 0,
                      disks = 0, reservations = 0 }

-- Maps A, then unmaps it with the callback `step` failing (form, msg): the
-- unmap returns backend with msg after the callbacks `names`, and keeps the
-- id. Returns the id.
local function unmap_failing_at(ctl, R, step, form, msg, names)
  local id = H.mapped(ctl, A)
  H.fails_at(ctl, R, "unmap_from_guest", id, step, form, msg, names)
  assert.is_table(ctl:reservation(id))
  return id
end

for _, guest in ipairs(H.GUESTS) do
  local linux = guest == "linux"

  describe("ctl:unmap_from_guest (" .. guest .. " guest)", function()
    local ctl, R
    before_each(function()
      ctl, R = H.new_ctl{ guest = guest, controllers = 2, luns = 4 }
    end)

    it("tears a mapped id down completely and returns true", function()
      local id = H.mapped(ctl, A)
      H.unmaps_again(ctl, R, id, H.teardown_names(guest))
      assert.same(EMPTY_STATS, ctl:stats())
      assert.same({}, ctl:slots())
      assert.same({}, ctl:reservations())
      assert.is_nil(ctl:reservation(id))
      H.check_no_leak(R, guest)
    end)

    it("returns not_found the second time", function()
      H.fails_quietly(ctl, R, "not_found", "unmap_from_guest", H.released(ctl, A))
    end)

    it("returns not_found for an unknown id and makes no callback", function()
      H.mapped(ctl, A)
      H.fails_quietly(ctl, R, "not_found", "unmap_from_guest", H.UNKNOWN_ID)
    end)

    it("matches ids case-insensitively", function()
      local id = H.mapped(ctl, A)
      assert.is_true(ctl:unmap_from_guest(id:upper()))
      assert.is_nil(ctl:reservation(id))
    end)

    it("frees the slot after the full unmap", function()
      local id = H.mapped(ctl, A)
      H.value(ctl:unmap_from_guest(id))
      assert.is_nil(H.slot(ctl, 0, 0))
      local idb = H.value(ctl:reserve(B))
      assert.same({ 0, 0 }, { ctl:reservation(idb).controller, ctl:reservation(idb).lun })
    end)

    it("releases a never-mapped id with no callback and frees its slot", function()
      local id = H.value(ctl:reserve(A))
      assert.is_true(ctl:unmap_from_guest(id))
      assert.same({}, R.log)
      assert.same(EMPTY_STATS, ctl:stats())
    end)

    it("drops one of two claims on a mounted partition with no callback", function()
      local id1 = H.value(ctl:reserve(A))
      local id2 = H.value(ctl:reserve(A))
      local path = H.value(ctl:map_to_guest(id1))
      assert.equal(path, ctl:map_to_guest(id2))
      R:clear()
      assert.is_true(ctl:unmap_from_guest(id1))
      assert.same({}, R.log)
      assert.equal(1, H.partition(ctl, 0, 0, 0).refs)
      assert.equal("mounted", H.partition(ctl, 0, 0, 0).state)
      assert.equal(path, ctl:map_to_guest(id2))
      assert.is_true(ctl:unmap_from_guest(id2))
      assert.same(H.teardown_names(guest), R:names())
      H.check_no_leak(R, guest)
    end)

    it("unmounts one partition of a shared disk and keeps the disk", function()
      local id1 = H.mapped(ctl, A, { partition = 1 })
      local id2 = H.mapped(ctl, A, { partition = 2 })
      H.unmaps_again(ctl, R, id1, { "remove_mapped_virtual_disk" })
      assert.equal(H.guest_path(guest, 0, 0, 1), R.log[1][2].mount_path or R.log[1][2].container_path)
      local s = H.slot(ctl, 0, 0)
      assert.equal("attached", s.state)
      assert.equal(1, s.reservations)
      assert.same({ { partition = 2, state = "mounted", refs = 1, guest_path = H.guest_path(guest, 0, 0, 2) } },
        s.partitions)
      H.unmaps_again(ctl, R, id2, H.teardown_names(guest))
      assert.same(EMPTY_STATS, ctl:stats())
    end)

    it("on an unmount error returns backend, keeps the id, and a retry finishes the teardown", function()
      local id = unmap_failing_at(ctl, R, "remove_mapped_virtual_disk", "raise", "target is busy",
        { "remove_mapped_virtual_disk" })
      assert.equal(1, ctl:stats().reservations)
      assert.equal("mounted", H.partition(ctl, 0, 0, 0).state)
      assert.equal("attached", H.slot(ctl, 0, 0).state)
      H.unmaps_again(ctl, R, id, H.teardown_names(guest))
      assert.same(EMPTY_STATS, ctl:stats())
    end)

    it("on a detach (remove_scsi_disk) error keeps the id, and a retry only repeats the detach", function()
      local id = unmap_failing_at(ctl, R, "remove_scsi_disk", "false", "hot-remove refused", H.teardown_names(guest))
      assert.equal(1, ctl:stats().reservations)
      assert.equal(1, ctl:stats().used)
      local s = H.slot(ctl, 0, 0)
      assert.equal(linux and "ejected" or "attached", s.state)
      for _, part in ipairs(s.partitions) do
        assert.are_not.equal("mounted", part.state)
      end
      H.unmaps_again(ctl, R, id, { "remove_scsi_disk" })
      assert.same(EMPTY_STATS, ctl:stats())
      H.check_no_leak(R, guest)
    end)

    it("returns closed after close and makes no callback", function()
      local id = H.mapped(ctl, A)
      R:clear()
      assert.is_true(ctl:close())
      H.fails("closed", ctl:unmap_from_guest(id))
      H.fails("closed", ctl:unmap_from_guest(H.UNKNOWN_ID))
      assert.same({}, R.log)
      assert.is_table(ctl:reservation(id))
    end)

    -- { test, the map's failing callback, the callbacks of the release }
    for _, case in ipairs({
      { "after a failed mount releases without unmounting", "add_mapped_virtual_disk", H.disk_teardown_names(guest) },
      { "after a failed attach releases with no callback", "add_scsi_disk", {} },
    }) do
      it(case[1], function()
        local id = H.value(ctl:reserve(A))
        R:fail(case[2], "raise")
        H.fails("backend", ctl:map_to_guest(id))
        H.unmaps_again(ctl, R, id, case[3])
        assert.same(EMPTY_STATS, ctl:stats())
      end)
    end
  end)
end

describe("ctl:unmap_from_guest (linux guest, eject)", function()
  it("on an eject error keeps the id, and a retry does not unmount again", function()
    local ctl, R = H.new_ctl{ controllers = 2, luns = 4 }
    local id = unmap_failing_at(ctl, R, "remove_scsi_device", "nil", "device held open",
      { "remove_mapped_virtual_disk", "remove_scsi_device" })
    assert.equal("attached", H.slot(ctl, 0, 0).state)
    H.unmaps_again(ctl, R, id, { "remove_scsi_device", "remove_scsi_disk" })
    assert.same(EMPTY_STATS, ctl:stats())
  end)

  it("passes the slot of the disk to remove_scsi_device and remove_scsi_disk", function()
    local ctl, R = H.new_ctl{ controllers = 2, luns = 4 }
    H.fill(ctl, 5)
    H.unmaps_again(ctl, R, H.mapped(ctl, A), H.teardown_names("linux"))
    assert.same({ controller = 1, lun = 1 }, R:calls("remove_scsi_device")[1][2])
    local rm = R:calls("remove_scsi_disk")[1]
    assert.same({ 1, 1 }, { rm[2], rm[3] })
  end)
end)

describe("ctl:unmap_from_guest (windows guest)", function()
  it("never ejects", function()
    local ctl, R = H.new_ctl{ guest = "windows", controllers = 1 }
    local id1 = H.value(ctl:reserve(A, { partition = 1 }))
    local id2 = H.value(ctl:reserve(A, { partition = 2, format_with_refs = true }))
    H.value(ctl:map_to_guest(id1))
    H.value(ctl:map_to_guest(id2))
    H.value(ctl:unmap_from_guest(id1))
    H.value(ctl:unmap_from_guest(id2))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "add_mapped_virtual_disk_for_container_scratch",
                  "remove_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_disk" }, R:names())
    H.check_no_leak(R, "windows")
  end)
end)
