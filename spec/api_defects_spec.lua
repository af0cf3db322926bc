-- Regressions for the reference design's defects D1-D6 (spec §6), checked
-- against P1-P4 over the whole callback history.
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

local where = H.where

-- Every callback in the history that names a host path or slot agrees with
-- the given path and slot.
local function only_for(R, from, path, c, l)
  for i = from, #R.history do
    local e = R.history[i]
    local n = e[1]
    if n == "add_scsi_disk" then
      assert.same({ path, c, l }, { e[2].path, e[3], e[4] }, "add_scsi_disk at history entry " .. i)
    elseif n == "remove_scsi_disk" then
      assert.same({ c, l }, { e[2], e[3] })
    elseif n == "remove_scsi_device" then
      assert.same({ controller = c, lun = l }, e[2])
    else
      local s = e[2]
      assert.equal(l, s.lun)
      local gp = s.mount_path or s.container_path
      assert.truthy(gp:find(string.format("%d_%d_%%d+$", c, l)), gp)
    end
  end
end

for _, guest in ipairs(H.GUESTS) do
  -- In a describe: every test starts with a fresh one-controller ctl, R.
  local ctl, R
  local function fresh_ctl_each()
    before_each(function()
      ctl, R = H.new_ctl{ guest = guest, controllers = 1, luns = 4 }
    end)
  end

  describe("D1 (" .. guest .. "): a failed guest mount", function()
    fresh_ctl_each()

    it("does not make unmap_from_guest fail or leak the disk", function()
      local id = H.value(ctl:reserve(A))
      R:fail("add_mapped_virtual_disk", "raise", "mount failed")
      H.fails("backend", ctl:map_to_guest(id))
      R:clear()
      assert.is_true(ctl:unmap_from_guest(id))
      assert.same(H.disk_teardown_names(guest), R:names())
      assert.same({}, ctl:slots())
      assert.equal(0, ctl:stats().reservations)
      H.check_no_leak(R, guest)
    end)

    it("does not stop a second reservation on that partition from mapping", function()
      local id1 = H.value(ctl:reserve(A))
      R:fail("add_mapped_virtual_disk", "false", "mount failed")
      H.fails("backend", ctl:map_to_guest(id1))
      local id2 = H.value(ctl:reserve(A))
      H.maps_again(ctl, R, id2, H.guest_path(guest, 0, 0, 0), { "add_mapped_virtual_disk" })
      -- the first id now maps with no callback
      H.maps_again(ctl, R, id1, H.guest_path(guest, 0, 0, 0), {})
      assert.is_true(ctl:unmap_from_guest(id1))
      assert.same({}, R.log)
      assert.is_true(ctl:unmap_from_guest(id2))
      assert.same(H.teardown_names(guest), R:names())
      H.check_no_leak(R, guest)
    end)

    it("given up by its first caller still lets the second map", function()
      local id1 = H.value(ctl:reserve(A))
      local id2 = H.value(ctl:reserve(A))
      R:fail("add_mapped_virtual_disk", "nil", "mount failed")
      H.fails("backend", ctl:map_to_guest(id1))
      assert.is_true(ctl:unmap_from_guest(id1))
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id2))
      assert.is_true(ctl:unmap_from_guest(id2))
      H.check_all_released(ctl, R, guest)
    end)
  end)

  describe("D2 (" .. guest .. "): a never-mapped partition claim", function()
    fresh_ctl_each()

    -- Partition 1 of A reserved and mapped, partition 2 only reserved:
    -- the two ids.
    local function one_mapped_one_never()
      local mapped = H.value(ctl:reserve(A, { partition = 1 }))
      local never = H.value(ctl:reserve(A, { partition = 2 }))
      H.value(ctl:map_to_guest(mapped))
      return mapped, never
    end

    it("released last tears the disk down", function()
      local mapped, never = one_mapped_one_never()
      H.unmaps_again(ctl, R, mapped, { "remove_mapped_virtual_disk" })
      assert.equal("attached", H.slot(ctl, 0, 0).state)
      H.unmaps_again(ctl, R, never, H.disk_teardown_names(guest))
      H.check_all_released(ctl, R, guest)
    end)

    it("released first makes no callback, and the last release tears everything down", function()
      local mapped, never = one_mapped_one_never()
      H.unmaps_again(ctl, R, never, {})
      assert.is_true(ctl:unmap_from_guest(mapped))
      assert.same(H.teardown_names(guest), R:names())
      H.check_all_released(ctl, R, guest)
    end)
  end)

  describe("D3 (" .. guest .. "): a failed attach shared by two reservations", function()
    fresh_ctl_each()

    it("keeps the slot for the second reservation", function()
      local id1 = H.value(ctl:reserve(A))
      local id2 = H.value(ctl:reserve(A))
      R:fail("add_scsi_disk", "raise", "attach failed")
      H.fails("backend", ctl:map_to_guest(id1))
      local idb = H.value(ctl:reserve(B))
      assert.same({ 0, 1 }, where(ctl, idb))
      assert.same({ 0, 0 }, where(ctl, id2))
      local from = #R.history + 1
      assert.equal(H.guest_path(guest, 0, 0, 0), ctl:map_to_guest(id2))
      only_for(R, from, "/img/a.vhdx", 0, 0)
      assert.equal("/img/a.vhdx", H.slot(ctl, 0, 0).host_path)
    end)

    it("given up by the first caller keeps the slot for the second", function()
      local id1 = H.value(ctl:reserve(A, { partition = 1 }))
      local id2 = H.value(ctl:reserve(A, { partition = 2 }))
      R:fail("add_scsi_disk", "false")
      H.fails("backend", ctl:map_to_guest(id1))
      assert.is_true(ctl:unmap_from_guest(id1))
      local idb = H.value(ctl:reserve(B))
      assert.same({ 0, 1 }, where(ctl, idb))
      local from = #R.history + 1
      assert.equal(H.guest_path(guest, 0, 0, 2), ctl:map_to_guest(id2))
      only_for(R, from, "/img/a.vhdx", 0, 0)
      H.value(ctl:map_to_guest(idb))
      H.value(ctl:unmap_from_guest(id2))
      H.value(ctl:unmap_from_guest(idb))
      H.check_no_leak(R, guest)
    end)
  end)

  describe("D4 (" .. guest .. "): reserve then unmap without mapping", function()
    it("frees the slot every time", function()
      ctl, R = H.new_ctl{ guest = guest, controllers = 1, luns = 2 }
      for i = 1, 10 do
        local id = H.value(ctl:reserve{ host_path = "/img/d4-" .. i })
        assert.same({ 0, 0 }, where(ctl, id))
        assert.is_true(ctl:unmap_from_guest(id))
      end
      assert.same({}, R.log)
      H.stats_include(ctl, { used = 0, disks = 0, reservations = 0 })
    end)
  end)

  describe("D5 (" .. guest .. "): retrying a failed release after another caller claims the disk", function()
    fresh_ctl_each()

    it("is safe when the release failed at remove_scsi_disk: the disk is busy until torn down", function()
      local id1 = H.release_pending(ctl, R, A, "remove_scsi_disk")
      H.fails_quietly(ctl, R, "busy", "reserve", A)
      H.unmaps_again(ctl, R, id1, { "remove_scsi_disk" })
      local id2 = H.value(ctl:reserve(A))
      assert.same({ 0, 0 }, where(ctl, id2))
      H.maps_again(ctl, R, id2, H.guest_path(guest, 0, 0, 0), { "add_scsi_disk", "add_mapped_virtual_disk" })
      assert.is_true(ctl:unmap_from_guest(id2))
      H.check_no_leak(R, guest)
    end)

    it("is safe when the release failed at unmount: the new caller joins the mount", function()
      local id1, path = H.mapped(ctl, A)
      R:fail("remove_mapped_virtual_disk", "raise")
      H.fails("backend", ctl:unmap_from_guest(id1))
      local id2 = H.value(ctl:reserve(A))
      H.maps_again(ctl, R, id2, path, {})
      assert.is_true(ctl:unmap_from_guest(id1))
      assert.same({}, R.log)
      local p = H.partition(ctl, 0, 0, 0)
      assert.same({ partition = 0, state = "mounted", refs = 1, guest_path = path }, p)
      assert.equal(1, ctl:stats().reservations)
      H.fails("not_found", ctl:unmap_from_guest(id1))
      assert.equal(1, H.partition(ctl, 0, 0, 0).refs)
      assert.is_true(ctl:unmap_from_guest(id2))
      assert.same(H.teardown_names(guest), R:names())
      H.check_all_released(ctl, R, guest)
    end)

    it("never lets a reference count go negative over repeated failed retries", function()
      local id1, path = H.mapped(ctl, A)
      local id2 = H.mapped(ctl, A)
      assert.is_true(ctl:unmap_from_guest(id1))
      R:fail("remove_mapped_virtual_disk", "raise", nil, 3)
      for _ = 1, 3 do
        H.fails("backend", ctl:unmap_from_guest(id2))
        H.fails("not_found", ctl:unmap_from_guest(id1))
        local p = H.partition(ctl, 0, 0, 0)
        assert.equal("mounted", p.state)
        assert.equal(1, p.refs)
      end
      local id3 = H.value(ctl:reserve(A))
      assert.equal(2, H.partition(ctl, 0, 0, 0).refs)
      assert.equal(path, ctl:map_to_guest(id3))
      H.unmaps_again(ctl, R, id2, {})
      assert.is_true(ctl:unmap_from_guest(id3))
      assert.same(H.teardown_names(guest), R:names())
      H.check_no_leak(R, guest)
    end)
  end)
end

describe("D5 (linux): retrying an unmap that failed at eject", function()
  it("does not unmount or remove another caller's disk", function()
    local ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
    local id1 = H.release_pending(ctl, R, A, "remove_scsi_device", "eject failed")
    -- another caller asks for the same disk and partition: busy, not joined
    H.fails_quietly(ctl, R, "busy", "reserve", A)
    H.fails_quietly(ctl, R, "busy", "reserve", A, { partition = 1 })
    -- another disk is unaffected
    local idb = H.value(ctl:reserve(B))
    assert.same({ 0, 1 }, where(ctl, idb))
    H.unmaps_again(ctl, R, id1, { "remove_scsi_device", "remove_scsi_disk" })
    -- now the other caller gets the disk afresh, at the lowest free slot
    local id2 = H.value(ctl:reserve(A))
    assert.same({ 0, 0 }, where(ctl, id2))
    H.maps_again(ctl, R, id2, "/run/mounts/scsi/0_0_0", { "add_scsi_disk", "add_mapped_virtual_disk" })
    assert.equal(1, H.partition(ctl, 0, 0, 0).refs)
    assert.is_true(ctl:unmap_from_guest(id2))
    assert.is_true(ctl:unmap_from_guest(idb))
    H.check_no_leak(R, "linux")
  end)
end)

describe("D6: reserve_for_rootfs outside the geometry", function()
  it("refuses a lun past luns_per_controller instead of pinning the next controller's slot", function()
    local ctl = H.new_ctl{ controllers = 2, luns = 4 }
    H.fails("out_of_range", ctl:reserve_for_rootfs(0, 4))
    H.fails("out_of_range", ctl:reserve_for_rootfs(0, 7))
    assert.equal(0, ctl:stats().pinned)
    assert.same({}, ctl:slots())
    for i = 1, 5 do
      local id = H.value(ctl:reserve{ host_path = "/img/" .. i })
      if i == 5 then
        assert.same({ 1, 0 }, where(ctl, id))
      end
    end
    assert.is_true(ctl:reserve_for_rootfs(1, 3))
  end)

  it("refuses huge values without crashing or wrapping", function()
    local ctl = H.new_ctl{ controllers = 2, luns = 4 }
    H.fails("out_of_range", ctl:reserve_for_rootfs(0, math.maxinteger))
    H.fails("out_of_range", ctl:reserve_for_rootfs(math.maxinteger, 0))
    H.fails("out_of_range", ctl:reserve_for_rootfs(math.maxinteger, math.maxinteger))
    H.fails("out_of_range", ctl:reserve_for_rootfs(0, 1 << 32))
    H.fails("out_of_range", ctl:reserve_for_rootfs(1 << 32, 0))
    H.fails("out_of_range", ctl:reserve_for_rootfs(0, (1 << 30) * 4))
    H.fails("out_of_range", ctl:reserve_for_rootfs(0, 1 << 62))
    assert.equal(0, ctl:stats().pinned)
    local id = H.value(ctl:reserve(A))
    assert.same({ 0, 0 }, where(ctl, id))
  end)
end)
