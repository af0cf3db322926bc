-- ctl:reserve(disk [, mount]) (spec §2, §3, §5; docs/semantics.md).
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

describe("ctl:reserve", function()
  local ctl, R
  before_each(function()
    ctl, R = H.new_ctl{ controllers = 2, luns = 3 }
  end)

  it("returns a canonical lowercase version-4 UUID and makes no callback", function()
    local id = ctl:reserve(A)
    assert.is_true(H.is_uuid(id), "not a canonical v4 uuid: " .. tostring(id))
    assert.same({}, R.log)
  end)

  it("returns a different id every time", function()
    local seen = {}
    for i = 1, 20 do
      local id = H.value(ctl:reserve(A, { partition = i % 3 }))
      assert.is_nil(seen[id])
      seen[id] = true
    end
  end)

  it("takes mount as optional (nil or omitted means partition 0 with defaults)", function()
    local id1 = H.value(ctl:reserve(A))
    local id2 = H.value(ctl:reserve(A, nil))
    local id3 = H.value(ctl:reserve(A, {}))
    for _, id in ipairs{ id1, id2, id3 } do
      assert.equal(0, ctl:reservation(id).partition)
    end
    local p = H.partition(ctl, 0, 0, 0)
    assert.equal(3, p.refs)
  end)

  it("gives the first disk slot (0, 0) in state reserved", function()
    local id = H.value(ctl:reserve(A))
    assert.same({ id = id, controller = 0, lun = 0, partition = 0, host_path = "/img/a.vhdx",
                  release_pending = false }, ctl:reservation(id))
    local s = H.slot(ctl, 0, 0)
    assert.equal("reserved", s.state)
    assert.equal("/img/a.vhdx", s.host_path)
    assert.equal(1, s.reservations)
    assert.same({ { partition = 0, state = "reserved", refs = 1 } }, s.partitions)
  end)

  it("numbers slots controller-major and takes the lowest free one", function()
    local want = { { 0, 0 }, { 0, 1 }, { 0, 2 }, { 1, 0 }, { 1, 1 }, { 1, 2 } }
    for i, w in ipairs(want) do
      local id = H.value(ctl:reserve{ host_path = "/img/" .. i })
      local r = ctl:reservation(id)
      assert.same(w, { r.controller, r.lun })
    end
  end)

  it("shares one slot between ids on the same disk and partition (distinct ids)", function()
    local id1 = H.value(ctl:reserve(A, { partition = 1 }))
    local id2 = H.value(ctl:reserve(A, { partition = 1 }))
    assert.are_not.equal(id1, id2)
    local r1, r2 = ctl:reservation(id1), ctl:reservation(id2)
    assert.same({ 0, 0, 1 }, { r1.controller, r1.lun, r1.partition })
    assert.same({ 0, 0, 1 }, { r2.controller, r2.lun, r2.partition })
    H.stats_include(ctl, { disks = 1, used = 1, reservations = 2 })
    local slot = H.slot(ctl, 0, 0)
    assert.equal(2, slot.reservations)
    assert.same({ { partition = 1, state = "reserved", refs = 2 } }, slot.partitions)
  end)

  it("shares the disk between different partitions", function()
    local id1 = H.value(ctl:reserve(A, { partition = 1 }))
    local id2 = H.value(ctl:reserve(A, { partition = 2 }))
    local r1, r2 = ctl:reservation(id1), ctl:reservation(id2)
    assert.same({ 0, 0 }, { r1.controller, r1.lun })
    assert.same({ 0, 0 }, { r2.controller, r2.lun })
    assert.equal(1, r1.partition)
    assert.equal(2, r2.partition)
    local slot = H.slot(ctl, 0, 0)
    assert.equal(2, slot.reservations)
    local parts = slot.partitions
    table.sort(parts, function(x, y) return x.partition < y.partition end)
    assert.same({ { partition = 1, state = "reserved", refs = 1 }, { partition = 2, state = "reserved", refs = 1 } },
      parts)
    assert.equal(1, ctl:stats().disks)
  end)

  it("gives different disks different slots", function()
    local id1 = H.value(ctl:reserve(A))
    local id2 = H.value(ctl:reserve(B))
    assert.same({ 0, 0 }, { ctl:reservation(id1).controller, ctl:reservation(id1).lun })
    assert.same({ 0, 1 }, { ctl:reservation(id2).controller, ctl:reservation(id2).lun })
    assert.equal(2, ctl:stats().disks)
    assert.equal(2, ctl:stats().used)
  end)

  it("treats explicit defaults as equal to omitted fields", function()
    H.value(ctl:reserve(A))
    H.value(ctl:reserve({ host_path = "/img/a.vhdx", read_only = false, type = "VirtualDisk" }, {
      partition = 0, read_only = false, encrypted = false, options = {}, ensure_filesystem = false,
      filesystem = "", block_dev = false, format_with_refs = false,
    }))
    assert.equal(1, ctl:stats().disks)
    assert.equal(2, H.partition(ctl, 0, 0, 0).refs)
  end)

  it("accepts every disk type", function()
    H.value(ctl:reserve{ host_path = "/img/1", type = "VirtualDisk" })
    H.value(ctl:reserve{ host_path = "/dev/sdb", type = "PassThru", read_only = true })
    H.value(ctl:reserve{ host_path = "/img/3", type = "ExtensibleVirtualDisk", evd_type = "space" })
    assert.equal(3, ctl:stats().disks)
  end)

  it("accepts the largest partition number", function()
    local id = H.value(ctl:reserve(A, { partition = math.maxinteger }))
    assert.equal(math.maxinteger, ctl:reservation(id).partition)
  end)

  describe("returns config_mismatch and changes nothing", function()
    local disk_variants = {
      { "read_only differs", { host_path = "/img/a.vhdx", read_only = true } },
      { "type differs", { host_path = "/img/a.vhdx", type = "PassThru" } },
      { "evd_type set vs unset", { host_path = "/img/a.vhdx", evd_type = "x" } },
      { "evd_type empty vs unset", { host_path = "/img/a.vhdx", evd_type = "" } },
    }
    for _, v in ipairs(disk_variants) do
      it("for the same host path when " .. v[1], function()
        H.value(ctl:reserve(A))
        H.fails_quietly(ctl, R, "config_mismatch", "reserve", v[2])
      end)
    end

    it("for evd_type values that differ", function()
      local d = { host_path = "/img/e", type = "ExtensibleVirtualDisk", evd_type = "one" }
      H.value(ctl:reserve(d))
      H.fails("config_mismatch", ctl:reserve{ host_path = "/img/e", type = "ExtensibleVirtualDisk", evd_type = "two" })
      H.value(ctl:reserve{ host_path = "/img/e", type = "ExtensibleVirtualDisk", evd_type = "one" })
    end)

    it("even when the second mount is for another partition", function()
      H.value(ctl:reserve(A, { partition = 1 }))
      H.fails_quietly(ctl, R, "config_mismatch", "reserve", { host_path = "/img/a.vhdx", read_only = true },
        { partition = 2 })
    end)

    local base = { partition = 1, options = { "ro", "noatime" }, filesystem = "ext4" }
    local mount_variants = {
      { "read_only", { read_only = true } },
      { "encrypted", { encrypted = true } },
      { "ensure_filesystem", { ensure_filesystem = true } },
      { "filesystem", { filesystem = "xfs" } },
      { "block_dev", { block_dev = true } },
      { "format_with_refs", { format_with_refs = true } },
      { "options with another value", { options = { "ro", "atime" } } },
      { "options in another order", { options = { "noatime", "ro" } } },
      { "options shorter", { options = { "ro" } } },
      { "options longer", { options = { "ro", "noatime", "sync" } } },
      { "options empty", { options = {} } },
    }
    for _, v in ipairs(mount_variants) do
      it("for the same partition when mount " .. v[1] .. " differs", function()
        H.value(ctl:reserve(A, base))
        local m = H.deep_copy(base)
        for k, x in pairs(v[2]) do
          m[k] = x
        end
        H.fails_quietly(ctl, R, "config_mismatch", "reserve", A, m)
        -- an equal mount config (fresh tables) is accepted
        H.value(ctl:reserve(A, H.deep_copy(base)))
      end)
    end

    it("but a different mount config on another partition is fine", function()
      H.value(ctl:reserve(A, { partition = 1, filesystem = "ext4" }))
      H.value(ctl:reserve(A, { partition = 2, filesystem = "xfs", read_only = true }))
      assert.equal(2, H.slot(ctl, 0, 0).reservations)
    end)
  end)

  it("returns no_slots with zero controllers", function()
    local c0, R0 = H.new_ctl{ controllers = 0 }
    H.fails_quietly(c0, R0, "no_slots", "reserve", A)
  end)

  it("returns no_slots once every slot is taken, changing nothing", function()
    H.fill(ctl, 6)
    H.stats_include(ctl, { used = 6, free = 0 })
    H.fails_quietly(ctl, R, "no_slots", "reserve", A)
    -- a disk already held still takes more claims
    H.value(ctl:reserve({ host_path = "/img/1" }, { partition = 3 }))
    assert.equal(6, ctl:stats().used)
  end)

  it("skips pinned slots", function()
    assert.is_true(ctl:reserve_for_rootfs(0, 0))
    assert.is_true(ctl:reserve_for_rootfs(0, 2))
    local id1 = H.value(ctl:reserve(A))
    local id2 = H.value(ctl:reserve(B))
    assert.same({ 0, 1 }, { ctl:reservation(id1).controller, ctl:reservation(id1).lun })
    assert.same({ 1, 0 }, { ctl:reservation(id2).controller, ctl:reservation(id2).lun })
  end)

  it("takes the lowest free slot after a release", function()
    local ids = H.fill(ctl, 4)
    assert.is_true(ctl:unmap_from_guest(ids[2]))
    local id = H.value(ctl:reserve(A))
    assert.same({ 0, 1 }, { ctl:reservation(id).controller, ctl:reservation(id).lun })
  end)

  it("does not alias the caller's tables (later changes to them have no effect)", function()
    local d = { host_path = "/img/m.vhdx" }
    local m = { partition = 1, options = { "a" } }
    local id = H.value(ctl:reserve(d, m))
    d.host_path = "/img/other"
    d.read_only = true
    m.partition = 5
    m.options[1] = "b"
    assert.equal("/img/m.vhdx", ctl:reservation(id).host_path)
    assert.equal(1, ctl:reservation(id).partition)
    H.value(ctl:reserve({ host_path = "/img/m.vhdx" }, { partition = 1, options = { "a" } }))
    H.value(ctl:map_to_guest(id))
    local add = R:calls("add_scsi_disk")[1]
    assert.equal("/img/m.vhdx", add[2].path)
    assert.same({ "a" }, R:calls("add_mapped_virtual_disk")[1][2].options)
  end)

  it("returns busy for a host path whose disk has a callback in flight", function()
    local id = H.value(ctl:reserve(A))
    local got
    R:hook("add_scsi_disk", function()
      got = table.pack(ctl:reserve(A))
    end, 1)
    H.value(ctl:map_to_guest(id))
    H.fails("busy", table.unpack(got, 1, got.n))
    assert.equal(1, ctl:stats().reservations)
  end)

  it("returns closed after close", function()
    H.value(ctl:reserve(A))
    assert.is_true(ctl:close())
    local before = H.state(ctl)
    H.fails("closed", ctl:reserve(B))
    H.fails("closed", ctl:reserve(A))
    assert.same(before.stats, ctl:stats())
    assert.same(before.slots, ctl:slots())
  end)
end)
