-- Yields inside callbacks, busy disks, re-entrant calls and abandoned
-- coroutines (spec §4 last paragraphs; docs/semantics.md "Busy").
local H = require("helper")

local A = { host_path = "/img/a.vhdx" }
local B = { host_path = "/img/b.vhdx" }

-- A coroutine running ctl[method](ctl, ...) (not as a tail call).
local function op(ctl, method, ...)
  local args = table.pack(...)
  return coroutine.create(function()
    local r = table.pack(ctl[method](ctl, table.unpack(args, 1, args.n)))
    return table.unpack(r, 1, r.n)
  end)
end

-- Resumes co and asserts that it yielded from the callback `name`.
local function resume_to(co, name, ...)
  local r = table.pack(coroutine.resume(co, ...))
  assert(r[1], "coroutine raised: " .. tostring(r[2]))
  assert.equal("suspended", coroutine.status(co))
  assert.equal(name, r[2])
  return r[3]
end

-- Resumes co and returns what the operation returned (co must finish).
local function finish(co, ...)
  local r = table.pack(coroutine.resume(co, ...))
  assert(r[1], "coroutine raised: " .. tostring(r[2]))
  assert.equal("dead", coroutine.status(co))
  return table.unpack(r, 2, r.n)
end

-- Every test starts with a fresh one-controller ctl.
local ctl, R
before_each(function()
  ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
end)

-- Makes the callback `step` yield once and runs ctl[method](ctl, id) in a
-- coroutine until it yields there: the coroutine and the callback's entry.
local function suspend_at(step, method, id)
  R:yield(step)
  local co = op(ctl, method, id)
  return co, resume_to(co, step)
end

-- The disk at (0, 0) is idle in `state`, and mapping the id again returns
-- its first partition's path after exactly the callbacks `names`.
local function idle_then_maps(id, state, names)
  assert.is_false(H.slot(ctl, 0, 0).busy)
  assert.equal(state, H.slot(ctl, 0, 0).state)
  H.maps_again(ctl, R, id, "/run/mounts/scsi/0_0_0", names)
end

describe("a callback that yields", function()

  it("suspends the operation, and the resume completes it", function()
    local co, entry = suspend_at("add_scsi_disk", "map_to_guest", H.value(ctl:reserve(A)))
    assert.equal("/img/a.vhdx", entry[2].path)
    assert.same({ "add_scsi_disk" }, R:names())
    assert.is_true(H.slot(ctl, 0, 0).busy)
    assert.equal("reserved", H.slot(ctl, 0, 0).state)
    assert.equal("/run/mounts/scsi/0_0_0", finish(co))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
    assert.is_false(H.slot(ctl, 0, 0).busy)
    assert.equal("mounted", H.partition(ctl, 0, 0, 0).state)
  end)

  it("makes its disk busy for reserve, map, unmap and close, while other disks proceed", function()
    local id1 = H.value(ctl:reserve(A))
    local id2 = H.value(ctl:reserve(A, { partition = 1 }))
    local idb = H.value(ctl:reserve(B))
    local idc = H.value(ctl:reserve{ host_path = "/img/c" })
    H.value(ctl:map_to_guest(idc))
    R:clear()
    local co = suspend_at("add_mapped_virtual_disk", "map_to_guest", id1)
    R:clear()
    H.fails("busy", ctl:map_to_guest(id1))
    H.fails("busy", ctl:map_to_guest(id2))
    H.fails("busy", ctl:unmap_from_guest(id2))
    H.fails("busy", ctl:reserve(A))
    H.fails("busy", ctl:reserve(A, { partition = 1 }))
    H.fails("busy", ctl:close())
    assert.same({}, R.log)
    assert.equal(4, ctl:stats().reservations)
    -- introspection works while suspended
    assert.equal(4, #ctl:reservations())
    assert.equal(id1, ctl:reservation(id1).id)
    assert.is_string(tostring(ctl))
    -- other disks
    assert.equal("/run/mounts/scsi/0_1_0", ctl:map_to_guest(idb))
    assert.is_true(ctl:unmap_from_guest(idc))
    local idd = H.value(ctl:reserve{ host_path = "/img/d" })
    assert.is_table(ctl:reservation(idd))
    assert.is_true(ctl:reserve_for_rootfs(0, 3))
    assert.is_true(H.slot(ctl, 0, 0).busy)
    assert.is_false(H.slot(ctl, 0, 1).busy)
    assert.equal("/run/mounts/scsi/0_0_0", finish(co))
    assert.is_false(H.slot(ctl, 0, 0).busy)
    assert.equal("/run/mounts/scsi/0_0_1", ctl:map_to_guest(id2))
    assert.is_true(ctl:close())
  end)

  it("returns the resume values as its results: false, msg fails the step", function()
    local id = H.value(ctl:reserve(A))
    local co = suspend_at("add_scsi_disk", "map_to_guest", id)
    local r = table.pack(finish(co, false, "refused after yield"))
    H.fails_with("backend", "refused after yield", table.unpack(r, 1, r.n))
    idle_then_maps(id, "reserved", { "add_scsi_disk", "add_mapped_virtual_disk" })
  end)

  it("returns the resume values as its results: nil, msg fails the step", function()
    local co = suspend_at("add_mapped_virtual_disk", "map_to_guest", H.value(ctl:reserve(A)))
    local r = table.pack(finish(co, nil, "mount refused"))
    H.fails_with("backend", "mount refused", table.unpack(r, 1, r.n))
    assert.equal("attached", H.slot(ctl, 0, 0).state)
    assert.equal("reserved", H.partition(ctl, 0, 0, 0).state)
  end)

  it("returns the resume values as its results: true succeeds", function()
    local co = suspend_at("add_scsi_disk", "map_to_guest", H.value(ctl:reserve(A)))
    assert.equal("/run/mounts/scsi/0_0_0", finish(co, true))
  end)

  it("may yield several times in one call", function()
    local id = H.value(ctl:reserve(A))
    R:yield("add_scsi_disk", 3)
    local co = op(ctl, "map_to_guest", id)
    for _ = 1, 3 do
      resume_to(co, "add_scsi_disk")
      assert.is_true(H.slot(ctl, 0, 0).busy)
    end
    assert.equal("/run/mounts/scsi/0_0_0", finish(co))
    assert.equal(1, R:count("add_scsi_disk"))
  end)

  for _, guest in ipairs(H.GUESTS) do
    local steps = guest == "linux"
      and { "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_device",
            "remove_scsi_disk" }
      or { "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_disk" }
    it("works at every step of map and unmap (" .. guest .. ")", function()
      local c, Rg = H.new_ctl{ guest = guest, controllers = 1 }
      local id = H.value(c:reserve(A))
      for _, s in ipairs(steps) do
        Rg:yield(s)
      end
      local co = coroutine.create(function()
        local path = c:map_to_guest(id)
        local ok = c:unmap_from_guest(id)
        return path, ok
      end)
      for _, s in ipairs(steps) do
        resume_to(co, s)
        assert.is_true(H.slot(c, 0, 0).busy)
        H.fails("busy", c:reserve(A))
      end
      local path, ok = finish(co)
      assert.equal(H.guest_path(guest, 0, 0, 0), path)
      assert.is_true(ok)
      H.check_all_released(c, Rg, guest)
    end)
  end

  it("lets two operations on two disks be suspended at once", function()
    local ida = H.value(ctl:reserve(A))
    local idb = H.value(ctl:reserve(B))
    R:yield("add_scsi_disk", 1, 2)
    local co1 = op(ctl, "map_to_guest", ida)
    local co2 = op(ctl, "map_to_guest", idb)
    resume_to(co1, "add_scsi_disk")
    resume_to(co2, "add_scsi_disk")
    assert.is_true(H.slot(ctl, 0, 0).busy)
    assert.is_true(H.slot(ctl, 0, 1).busy)
    assert.equal("/run/mounts/scsi/0_1_0", finish(co2))
    assert.is_true(H.slot(ctl, 0, 0).busy)
    assert.is_false(H.slot(ctl, 0, 1).busy)
    assert.equal("/run/mounts/scsi/0_0_0", finish(co1))
    assert.is_false(H.slot(ctl, 0, 0).busy)
  end)

  it("outside a coroutine counts as a failure of that step", function()
    local _, main = coroutine.running()
    assert.is_true(main)
    local id = H.value(ctl:reserve(A))
    R:yield("add_scsi_disk")
    H.fails("backend", ctl:map_to_guest(id))
    idle_then_maps(id, "reserved", { "add_scsi_disk", "add_mapped_virtual_disk" })
  end)

  it("across a non-yieldable C boundary counts as a failure of that step", function()
    local id = H.value(ctl:reserve(A))
    R:yield("add_scsi_disk")
    local co = coroutine.create(function()
      local r
      string.gsub("x", "x", function()
        r = table.pack(ctl:map_to_guest(id))
      end)
      return table.unpack(r, 1, r.n)
    end)
    local res = table.pack(finish(co))
    H.fails("backend", table.unpack(res, 1, res.n))
    assert.is_false(H.slot(ctl, 0, 0).busy)
    assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
  end)
end)

-- Maps A and abandons its unmap suspended at `step`, by coroutine.close or
-- (how == "gc") to the garbage collector; the disk is idle again. Returns
-- the id.
local function abandon_unmap(step, how)
  local id = H.mapped(ctl, A)
  R:clear()
  do
    local co = suspend_at(step, "unmap_from_guest", id)
    if how == "close" then
      coroutine.close(co)
    end
  end
  if how == "gc" then
    H.full_gc()
  end
  assert.is_false(H.slot(ctl, 0, 0).busy)
  return id
end

describe("an abandoned suspended operation", function()
  it("closed with coroutine.close counts as failed at that step (map)", function()
    local id = H.value(ctl:reserve(A))
    local co = suspend_at("add_mapped_virtual_disk", "map_to_guest", id)
    H.fails("busy", ctl:close())
    coroutine.close(co)
    assert.equal("dead", coroutine.status(co))
    assert.equal("reserved", H.slot(ctl, 0, 0).partitions[1].state)
    idle_then_maps(id, "attached", { "add_mapped_virtual_disk" })
    assert.is_true(ctl:close())
  end)

  it("closed with coroutine.close counts as failed at that step (unmap)", function()
    local id = abandon_unmap("remove_scsi_device", "close")
    -- the release is pending
    assert.is_table(ctl:reservation(id))
    H.fails("busy", ctl:map_to_guest(id))
    H.unmaps_again(ctl, R, id, { "remove_scsi_device", "remove_scsi_disk" })
    assert.same({}, ctl:slots())
  end)

  it("garbage collected counts as failed at that step", function()
    local id = H.value(ctl:reserve(A))
    do
      local co = suspend_at("add_scsi_disk", "map_to_guest", id)
      assert.equal("suspended", coroutine.status(co))
      assert.is_true(H.slot(ctl, 0, 0).busy)
    end
    H.full_gc()
    idle_then_maps(id, "reserved", { "add_scsi_disk", "add_mapped_virtual_disk" })
    assert.is_true(ctl:close())
  end)

  it("garbage collected during unmap leaves the release pending and retryable", function()
    local id = abandon_unmap("remove_mapped_virtual_disk", "gc")
    assert.equal(1, ctl:stats().reservations)
    H.fails("busy", ctl:map_to_guest(id))
    H.unmaps_again(ctl, R, id, H.teardown_names("linux"))
    H.check_no_leak(R, "linux")
  end)
end)

describe("re-entrant calls from a callback", function()

  it("work on other disks and get busy on the callback's own disk", function()
    local ida = H.value(ctl:reserve(A))
    local ida2 = H.value(ctl:reserve(A, { partition = 2 }))
    local got = {}
    R:hook("add_scsi_disk", function()
      got.slots = ctl:slots()
      got.stats = ctl:stats()
      got.reserve_a = table.pack(ctl:reserve(A))
      got.map_a2 = table.pack(ctl:map_to_guest(ida2))
      got.unmap_a2 = table.pack(ctl:unmap_from_guest(ida2))
      got.close = table.pack(ctl:close())
      local idb = ctl:reserve(B)
      got.idb = idb
      got.map_b = ctl:map_to_guest(idb)
      got.unmap_b = ctl:unmap_from_guest(idb)
    end, 1)
    assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(ida))
    assert.is_true(got.slots[1].busy)
    assert.equal(2, got.stats.reservations)
    H.fails("busy", table.unpack(got.reserve_a, 1, got.reserve_a.n))
    H.fails("busy", table.unpack(got.map_a2, 1, got.map_a2.n))
    H.fails("busy", table.unpack(got.unmap_a2, 1, got.unmap_a2.n))
    H.fails("busy", table.unpack(got.close, 1, got.close.n))
    assert.is_true(H.is_uuid(got.idb))
    assert.equal("/run/mounts/scsi/0_1_0", got.map_b)
    assert.is_true(got.unmap_b)
    assert.same({ "add_scsi_disk", "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
                  "remove_scsi_device", "remove_scsi_disk", "add_mapped_virtual_disk" }, R:names())
    assert.equal("/img/b.vhdx", R.log[2][2].path)
    assert.same({ 0, 1 }, { R.log[2][3], R.log[2][4] })
    assert.equal(2, ctl:stats().reservations)
    assert.equal("/run/mounts/scsi/0_0_2", ctl:map_to_guest(ida2))
    assert.is_true(ctl:close())
  end)

  it("work from a guest callback during unmap", function()
    local ida = H.mapped(ctl, A)
    local idb = H.mapped(ctl, B)
    local inner
    R:hook("remove_mapped_virtual_disk", function()
      inner = table.pack(ctl:unmap_from_guest(idb))
    end, 1)
    assert.is_true(ctl:unmap_from_guest(ida))
    assert.is_true(inner[1])
    H.check_all_released(ctl, R, "linux")
  end)

  it("may themselves yield, suspending the outer operation too", function()
    local ida = H.value(ctl:reserve(A))
    local idb = H.value(ctl:reserve(B))
    local inner
    R:hook("add_scsi_disk", function()
      local r = table.pack(ctl:map_to_guest(idb))
      inner = r
    end, 1)
    local co, entry = suspend_at("add_scsi_disk", "map_to_guest", ida)
    assert.equal("/img/b.vhdx", entry[2].path)
    assert.is_true(H.slot(ctl, 0, 0).busy)
    assert.is_true(H.slot(ctl, 0, 1).busy)
    assert.equal("/run/mounts/scsi/0_0_0", finish(co))
    assert.equal("/run/mounts/scsi/0_1_0", inner[1])
    assert.is_false(H.slot(ctl, 0, 0).busy)
    assert.is_false(H.slot(ctl, 0, 1).busy)
  end)
end)
