-- ctl:map_to_guest(id) (spec §3, §5, P6, P7, P8; docs/semantics.md "Map").
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

for _, guest in ipairs(H.GUESTS) do
  describe("ctl:map_to_guest (" .. guest .. " guest)", function()
    local ctl, R
    before_each(function()
      ctl, R = H.new_ctl{ guest = guest, controllers = 2, luns = 4 }
    end)

    it("attaches, mounts and returns the guest path", function()
      local id = H.value(ctl:reserve(A))
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id))
      assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
      local s = H.slot(ctl, 0, 0)
      assert.equal("attached", s.state)
      assert.same({ { partition = 0, state = "mounted", refs = 1, guest_path = H.guest_path(guest, 0, 0, 0) } },
        s.partitions)
    end)

    it("takes the id just reserved only when every character matches it", function()
      -- the binding keeps the last reserved id, text and parsed; an id
      -- that differs in any one place is another (unknown) id
      local id = H.value(ctl:reserve(A))
      for _, at in ipairs({ 1, 18, 36 }) do
        local c = id:sub(at, at) == "0" and "1" or "0"
        local other = id:sub(1, at - 1) .. c .. id:sub(at + 1)
        H.fails("not_found", ctl:map_to_guest(other))
        H.fails("not_found", ctl:unmap_from_guest(other))
      end
      assert.same({}, R.log)
      -- the same id in capitals is the same id (parsed, not remembered)
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id:upper()))
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id))
    end)

    it("takes no id as remembered before the first reserve", function()
      -- the remembered pair starts as the all-zero id and its text, so 36
      -- bytes of anything else are still checked as a UUID
      H.raises("reservation id must be a UUID", ctl.map_to_guest, ctl, ("\0"):rep(36))
      H.raises("reservation id must be a UUID", ctl.unmap_from_guest, ctl, (" "):rep(36))
      H.fails("not_found", ctl:map_to_guest("00000000-0000-0000-0000-000000000000"))
      assert.same({}, R.log)
    end)

    it("names the slot and partition in the guest path", function()
      H.fill(ctl, 6)
      local id = H.value(ctl:reserve({ host_path = "/img/7" }, { partition = 12 }))
      local r = ctl:reservation(id)
      assert.same({ 1, 2 }, { r.controller, r.lun })
      assert.equal(H.guest_path(guest, 1, 2, 12), ctl:map_to_guest(id))
      assert.same({ "/img/7", 1, 2 }, { R.log[1][2].path, R.log[1][3], R.log[1][4] })
    end)

    it("mounts a second partition of an attached disk without attaching again", function()
      local id1 = H.value(ctl:reserve(A, { partition = 1 }))
      local id2 = H.value(ctl:reserve(A, { partition = 2 }))
      assert.equal(H.guest_path(guest, 0, 0, 1), ctl:map_to_guest(id1))
      R:clear()
      assert.equal(H.guest_path(guest, 0, 0, 2), ctl:map_to_guest(id2))
      assert.same({ "add_mapped_virtual_disk" }, R:names())
    end)

    it("is idempotent: mapping a mapped id again makes no callback and returns the same path", function()
      local id = H.value(ctl:reserve(A, { partition = 3 }))
      local path = H.value(ctl:map_to_guest(id))
      R:clear()
      assert.equal(path, ctl:map_to_guest(id))
      assert.equal(path, ctl:map_to_guest(id))
      assert.same({}, R.log)
    end)

    it("makes no callback for another id on an already mounted partition", function()
      local id1 = H.value(ctl:reserve(A))
      local id2 = H.value(ctl:reserve(A))
      local path = H.value(ctl:map_to_guest(id1))
      R:clear()
      assert.equal(path, ctl:map_to_guest(id2))
      assert.same({}, R.log)
    end)

    it("returns not_found for an unknown id and makes no callback", function()
      H.value(ctl:reserve(A))
      H.fails_quietly(ctl, R, "not_found", "map_to_guest", H.UNKNOWN_ID)
    end)

    it("returns not_found for a released id", function()
      H.fails_quietly(ctl, R, "not_found", "map_to_guest", H.released(ctl, A))
    end)

    it("matches ids case-insensitively", function()
      local id = H.value(ctl:reserve(A))
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id:upper()))
      R:clear()
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id))
      assert.same({}, R.log)
    end)

    it("returns backend on an attach error, leaves the disk reserved, and a retry attaches then mounts", function()
      local id = H.value(ctl:reserve(A))
      H.fails_at(ctl, R, "map_to_guest", id, "add_scsi_disk", "raise", "no room on the bus", { "add_scsi_disk" })
      local s = H.slot(ctl, 0, 0)
      assert.equal("reserved", s.state)
      assert.is_false(s.busy)
      assert.equal("reserved", s.partitions[1].state)
      assert.equal(1, ctl:stats().reservations)
      H.maps_again(ctl, R, id, H.guest_path(guest, 0, 0, 0), { "add_scsi_disk", "add_mapped_virtual_disk" })
    end)

    it("returns backend on a mount error, leaves the disk attached, and a retry only mounts", function()
      local id = H.value(ctl:reserve(A))
      H.fails_at(ctl, R, "map_to_guest", id, "add_mapped_virtual_disk", "false", "bad superblock",
        { "add_scsi_disk", "add_mapped_virtual_disk" })
      local s = H.slot(ctl, 0, 0)
      assert.equal("attached", s.state)
      assert.same({ { partition = 0, state = "reserved", refs = 1 } }, s.partitions)
      H.maps_again(ctl, R, id, H.guest_path(guest, 0, 0, 0), { "add_mapped_virtual_disk" })
      assert.equal("mounted", H.partition(ctl, 0, 0, 0).state)
    end)

    it("does not disturb other disks when one fails", function()
      local ida = H.value(ctl:reserve(A))
      local idb = H.value(ctl:reserve(B))
      H.fails_at(ctl, R, "map_to_guest", ida, "add_scsi_disk", "nil", "nope", { "add_scsi_disk" })
      assert.equal(H.guest_path(guest, 0, 1, 0), ctl:map_to_guest(idb))
      assert.equal("reserved", H.slot(ctl, 0, 0).state)
      assert.equal("attached", H.slot(ctl, 0, 1).state)
    end)

    it("returns busy for an id whose release is pending, with a message about retrying the release", function()
      local id1 = H.release_pending(ctl, R, A, "remove_mapped_virtual_disk", "device busy")
      R:clear()
      local msg = H.fails("busy", ctl:map_to_guest(id1))
      assert.truthy(msg:lower():find("release", 1, true) or msg:find("unmap_from_guest", 1, true),
        "message does not mention retrying the release: " .. msg)
      assert.same({}, R.log)
      -- the release then completes on retry
      assert.is_true(ctl:unmap_from_guest(id1))
      H.fails("not_found", ctl:map_to_guest(id1))
    end)

    it("returns closed after close and makes no callback", function()
      local id = H.value(ctl:reserve(A))
      assert.is_true(ctl:close())
      H.fails("closed", ctl:map_to_guest(id))
      H.fails("closed", ctl:map_to_guest(H.UNKNOWN_ID))
      assert.same({}, R.log)
    end)
  end)
end

describe("ctl:map_to_guest (windows guest, format_with_refs)", function()
  it("mounts with add_mapped_virtual_disk_for_container_scratch", function()
    local ctl, R = H.new_ctl{ guest = "windows", controllers = 1 }
    local id = H.value(ctl:reserve(A, { format_with_refs = true }))
    assert.equal("C:\\mounts\\scsi\\0_0_0", ctl:map_to_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk_for_container_scratch" }, R:names())
  end)

  it("uses add_mapped_virtual_disk when format_with_refs is false", function()
    local ctl, R = H.new_ctl{ guest = "windows", controllers = 1 }
    local id = H.value(ctl:reserve(A, { format_with_refs = false, partition = 1 }))
    assert.equal("C:\\mounts\\scsi\\0_0_1", ctl:map_to_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
  end)
end)
