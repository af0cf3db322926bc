-- ctl:reservation, ctl:reservations, ctl:slots, ctl:stats, tostring(ctl)
-- (spec §5).
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

describe("ctl:reservation", function()
  local ctl
  before_each(function()
    ctl = H.new_ctl{ controllers = 2, luns = 4 }
  end)

  it("returns exactly { id, controller, lun, partition, host_path, release_pending }", function()
    H.value(ctl:reserve(B))
    local id = H.value(ctl:reserve(A, { partition = 7, read_only = true, options = { "x" } }))
    local r = ctl:reservation(id)
    assert.same({ "controller", "host_path", "id", "lun", "partition", "release_pending" }, H.keys(r))
    assert.same({ id = id, controller = 0, lun = 1, partition = 7, host_path = "/img/a.vhdx",
                  release_pending = false }, r)
    assert.equal("integer", math.type(r.controller))
    assert.equal("integer", math.type(r.lun))
    assert.equal("integer", math.type(r.partition))
  end)

  it("returns nil for an unknown well-formed id", function()
    H.value(ctl:reserve(A))
    assert.is_nil(ctl:reservation(H.UNKNOWN_ID))
    assert.equal(1, select("#", ctl:reservation(H.UNKNOWN_ID)))
  end)

  it("returns nil for a released id", function()
    local id = H.value(ctl:reserve(A))
    H.value(ctl:unmap_from_guest(id))
    assert.is_nil(ctl:reservation(id))
  end)

  it("matches ids case-insensitively and reports the lowercase id", function()
    local id = H.value(ctl:reserve(A))
    local r = ctl:reservation(id:upper())
    assert.is_table(r)
    assert.equal(id, r.id)
    local mixed = id:sub(1, 18):upper() .. id:sub(19)
    assert.equal(id, ctl:reservation(mixed).id)
  end)

  it("keeps listing an id whose release is pending", function()
    local ctl2, R = H.new_ctl{ controllers = 1 }
    local id = H.release_pending(ctl2, R, A, "remove_mapped_virtual_disk")
    assert.same({ id = id, controller = 0, lun = 0, partition = 0, host_path = "/img/a.vhdx",
                  release_pending = true }, ctl2:reservation(id))
    assert.equal(1, #ctl2:reservations())
    assert.is_true(ctl2:reservations()[1].release_pending)
    assert.equal(1, ctl2:stats().reservations)
    -- a retry finishes it (the injected failure was used up)
    H.value(ctl2:unmap_from_guest(id))
    assert.is_nil(ctl2:reservation(id))
  end)

  it("shows release_pending after a restart from the state file, so a script can finish it", function()
    local path = os.tmpname()
    local R = H.recorder()
    local ctl2 = H.value(require("scsictl").new{ controllers = 1, state_file = path,
                                                 vm = R.vm, linux_guest = R.linux_guest })
    local kept = H.value(ctl2:reserve(B))
    local id = H.value(ctl2:reserve(A))
    H.value(ctl2:map_to_guest(id))
    R:fail("remove_mapped_virtual_disk", "raise")
    H.fails("backend", ctl2:unmap_from_guest(id))
    ctl2 = nil -- luacheck: ignore 311 (a crash: dropped without close)
    H.full_gc()
    local again = H.value(require("scsictl").open(path, { vm = R.vm, linux_guest = R.linux_guest }))
    local pending = {}
    for _, r in ipairs(again:reservations()) do
      if r.release_pending then pending[#pending + 1] = r.id end
    end
    assert.same({ id }, pending)
    assert.is_false(again:reservation(kept).release_pending)
    for _, p in ipairs(pending) do H.value(again:unmap_from_guest(p)) end
    assert.same({ kept }, H.pluck(again:reservations(), "id"))
    assert.is_true(again:close())
    os.remove(path)
  end)
end)

-- { method, test, controllers }: a fresh controller lists nothing.
for _, case in ipairs({
  { "reservations", "is empty with no reservation", 1 },
  { "slots", "is empty for a fresh controller", 2 },
}) do
  describe("ctl:" .. case[1], function()
    it(case[2], function()
      local ctl = H.new_ctl{ controllers = case[3] }
      assert.same({}, ctl[case[1]](ctl))
    end)
  end)
end

describe("ctl:reservations", function()

  it("lists every reservation sorted by controller, lun, partition, id", function()
    local ctl = H.new_ctl{ controllers = 2, luns = 2 }
    local made = {}
    local function res(path, p)
      local id = H.value(ctl:reserve({ host_path = path }, { partition = p }))
      made[#made + 1] = ctl:reservation(id)
    end
    -- created out of order: disks land at (0,0) d1, (0,1) d2, (1,0) d3
    res("/d1", 5)
    res("/d2", 0)
    res("/d1", 2)
    res("/d3", 1)
    res("/d1", 5)
    res("/d2", 0)
    res("/d1", 5)
    res("/d3", 0)
    local expect = H.sort_by(H.deep_copy(made), "controller", "lun", "partition", "id")
    local got = ctl:reservations()
    assert.equal(8, #got)
    assert.same(expect, got)
    for _, r in ipairs(got) do
      assert.same({ "controller", "host_path", "id", "lun", "partition", "release_pending" }, H.keys(r))
    end
    assert.same({ "/d1", "/d1", "/d1", "/d1", "/d2", "/d2", "/d3", "/d3" }, H.pluck(got, "host_path"))
  end)
end)

describe("ctl:slots", function()

  it("lists occupied and pinned slots by slot index with exactly the documented fields", function()
    local ctl = H.new_ctl{ controllers = 2, luns = 3 }
    assert.is_true(ctl:reserve_for_rootfs(1, 0))
    local a1 = H.value(ctl:reserve(A, { partition = 1 }))
    H.value(ctl:reserve(A, { partition = 1 }))
    H.value(ctl:reserve(A, { partition = 2 }))
    H.value(ctl:reserve(B))
    for i = 3, 5 do
      H.value(ctl:reserve{ host_path = "/img/" .. i })
    end
    H.value(ctl:map_to_guest(a1))
    local slots = ctl:slots()
    local where = {}
    for i, s in ipairs(slots) do
      where[i] = { s.controller, s.lun }
    end
    assert.same({ { 0, 0 }, { 0, 1 }, { 0, 2 }, { 1, 0 }, { 1, 1 }, { 1, 2 } }, where)

    local s1 = slots[1]
    assert.same({ "busy", "controller", "host_path", "lun", "options", "partitions", "pinned", "reservations",
                  "state", "tearing_down" },
      H.keys(s1))
    assert.same({}, s1.options)
    assert.is_false(s1.tearing_down)
    assert.equal(0, s1.controller)
    assert.equal(0, s1.lun)
    assert.is_false(s1.pinned)
    assert.is_false(s1.busy)
    assert.equal("/img/a.vhdx", s1.host_path)
    assert.equal("attached", s1.state)
    assert.equal(3, s1.reservations)
    local parts = s1.partitions
    table.sort(parts, function(x, y) return x.partition < y.partition end)
    assert.same({
      { partition = 1, state = "mounted", refs = 2, guest_path = "/run/mounts/scsi/0_0_1" },
      { partition = 2, state = "reserved", refs = 1 },
    }, parts)
    assert.same({ "guest_path", "partition", "refs", "state" }, H.keys(parts[1]))
    assert.same({ "partition", "refs", "state" }, H.keys(parts[2]))

    assert.same({ controller = 0, lun = 1, pinned = false, busy = false, tearing_down = false,
                  host_path = "/img/b.vhdx", state = "reserved", reservations = 1, options = {},
                  partitions = { { partition = 0, state = "reserved", refs = 1 } } }, slots[2])
    -- the bare pinned slot: no host_path, no state
    assert.same({ controller = 1, lun = 0, pinned = true, busy = false, tearing_down = false, reservations = 0,
                  partitions = {} },
      slots[4])
    assert.same({ "busy", "controller", "lun", "partitions", "pinned", "reservations", "tearing_down" },
      H.keys(slots[4]))
    assert.equal("/img/5", slots[6].host_path)
  end)

  it("reports the ejected state of a Linux disk whose removal failed", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    H.release_pending(ctl, R, A, "remove_scsi_disk")
    assert.equal("ejected", H.slot(ctl, 0, 0).state)
  end)

  it("returns fresh tables: changing them changes nothing", function()
    local ctl = H.new_ctl{ controllers = 1 }
    H.value(ctl:reserve(A))
    local s = ctl:slots()
    s[1].host_path = "/changed"
    s[1].partitions[1].refs = 99
    s[2] = "junk"
    local st = ctl:stats()
    st.used = 42
    local rs = ctl:reservations()
    rs[1].host_path = "/changed"
    assert.equal("/img/a.vhdx", ctl:slots()[1].host_path)
    assert.equal(1, ctl:slots()[1].partitions[1].refs)
    assert.equal(1, #ctl:slots())
    assert.equal(1, ctl:stats().used)
    assert.equal("/img/a.vhdx", ctl:reservations()[1].host_path)
  end)
end)

describe("ctl:stats", function()
  it("has exactly the documented fields", function()
    local ctl = H.new_ctl{ controllers = 3, luns = 5 }
    assert.same({ "controllers", "disks", "free", "luns_per_controller", "pinned", "reservations", "slots", "used" },
      H.keys(ctl:stats()))
  end)

  it("counts used, free, pinned, disks and reservations exactly", function()
    local ctl, R = H.new_ctl{ controllers = 3, luns = 5 }
    local function check(used, pinned, disks, reservations)
      assert.same({ controllers = 3, luns_per_controller = 5, slots = 15, used = used, free = 15 - used,
                    pinned = pinned, disks = disks, reservations = reservations }, ctl:stats())
    end
    check(0, 0, 0, 0)
    assert.is_true(ctl:reserve_for_rootfs(2, 4, { host_path = "/img/root" }))
    check(1, 1, 0, 0)
    local a1 = H.value(ctl:reserve(A))
    local a2 = H.value(ctl:reserve(A, { partition = 1 }))
    check(2, 1, 1, 2)
    local b = H.value(ctl:reserve(B))
    check(3, 1, 2, 3)
    -- a pinned slot holding a disk counts once in used
    local r1 = H.value(ctl:reserve{ host_path = "/img/root" })
    check(3, 1, 3, 4)
    H.value(ctl:map_to_guest(a1))
    H.value(ctl:map_to_guest(r1))
    check(3, 1, 3, 4)
    -- a pending release still counts
    R:fail("remove_mapped_virtual_disk", "raise")
    H.fails("backend", ctl:unmap_from_guest(r1))
    check(3, 1, 3, 4)
    -- the root disk goes, its slot stays pinned (still used)
    H.value(ctl:unmap_from_guest(r1))
    check(3, 1, 2, 3)
    H.value(ctl:unmap_from_guest(a1))
    check(3, 1, 2, 2)
    H.value(ctl:unmap_from_guest(a2))
    check(2, 1, 1, 1)
    H.value(ctl:unmap_from_guest(b))
    check(1, 1, 0, 0)
  end)

  it("returns integers", function()
    local ctl = H.new_ctl{ controllers = 2 }
    for k, v in pairs(ctl:stats()) do
      assert.equal("integer", math.type(v), k)
    end
  end)
end)

describe("tostring(ctl)", function()
  local function has_number(s, n)
    return s:find("%f[%d]" .. n .. "%f[%D]") ~= nil
  end

  it("is one line naming the geometry, used slots and reservations", function()
    local ctl = H.new_ctl{ controllers = 3, luns = 7 }
    local s0 = tostring(ctl)
    assert.is_string(s0)
    assert.is_nil(s0:find("\n", 1, true))
    assert.truthy(has_number(s0, 3), s0)
    assert.truthy(has_number(s0, 7), s0)
    H.fill(ctl, 5)
    for _ = 1, 6 do
      H.value(ctl:reserve{ host_path = "/img/1" })
    end
    local s1 = tostring(ctl)
    assert.is_nil(s1:find("\n", 1, true))
    assert.are_not.equal(s0, s1)
    assert.truthy(has_number(s1, 5), s1)   -- used slots
    assert.truthy(has_number(s1, 11), s1)  -- reservations
  end)

  it("keeps working after close", function()
    local ctl = H.new_ctl{ controllers = 3, luns = 7 }
    H.value(ctl:reserve(A))
    assert.is_true(ctl:close())
    local s = tostring(ctl)
    assert.is_string(s)
    assert.truthy(has_number(s, 3), s)
    assert.truthy(has_number(s, 7), s)
  end)
end)
