-- ctl:slot_map(): the controllers drawn as rows of one glyph per LUN, or a
-- summary per controller for geometries wider than 80 columns.
local H = require("helper")

local function lines(s)
  local t = {}
  for line in s:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  return t
end

-- The row of controller c in a drawn map.
local function row(map, c)
  for _, line in ipairs(lines(map)) do
    local glyphs = line:match("^c" .. c .. "%s+([%.%*pMar~]+)$")
    if glyphs then return glyphs end
  end
  error("no row for controller " .. c .. " in\n" .. map)
end

describe("ctl:slot_map()", function()
  it("draws 4 x 64 within 80 columns, with a legend of every glyph", function()
    local ctl = H.new_ctl{ controllers = 4, luns = 64 }
    local map = ctl:slot_map()
    assert.is_string(map)
    local t = lines(map)
    assert.equal("scsictl slot map: 4 controllers x 64 LUNs, 0 of 256 slots used", t[1])
    assert.equal("      0123456789012345678901234567890123456789012345678901234567890123", t[3])
    for c = 0, 3 do assert.equal(("."):rep(64), row(map, c)) end
    for _, line in ipairs(t) do assert.truthy(#line <= 80, line) end
    local legend = t[#t]
    for _, word in ipairs { ". free", "r reserved", "a attached", "M mounted",
                            "~ removing", "p pinned", "* busy" } do
      assert.truthy(legend:find(word, 1, true), word)
    end
  end)

  it("shows pinned, reserved, mounted and busy slots where they are", function()
    local ctl, R = H.new_ctl{ controllers = 2, luns = 8 }
    H.value(ctl:reserve_for_rootfs(0, 0))
    local mounted = H.value(ctl:reserve{ host_path = "/img/m.vhdx" })
    H.value(ctl:map_to_guest(mounted))
    H.value(ctl:reserve{ host_path = "/img/r.vhdx" })
    local busy = H.value(ctl:reserve{ host_path = "/img/b.vhdx" })
    R:yield("add_scsi_disk")
    local co = coroutine.wrap(function() return ctl:map_to_guest(busy) end)
    co()
    assert.equal("pMr*....", row(ctl:slot_map(), 0))
    assert.equal("........", row(ctl:slot_map(), 1))
    co()
    assert.equal("pMrM....", row(ctl:slot_map(), 0))
  end)

  it("shows a disk whose removal is pending as being torn down", function()
    local ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
    local id = H.value(ctl:reserve{ host_path = "/img/t.vhdx" })
    H.value(ctl:map_to_guest(id))
    R:fail("remove_scsi_disk", "false", "still in use")
    H.fails("backend", ctl:unmap_from_guest(id))
    assert.equal("~...", row(ctl:slot_map(), 0))
    H.value(ctl:unmap_from_guest(id))
    assert.equal("....", row(ctl:slot_map(), 0))
  end)

  it("shows a Windows disk whose removal failed as being torn down, though still attached", function()
    local ctl, R = H.new_ctl{ guest = "windows", controllers = 1, luns = 4 }
    local id = H.value(ctl:reserve{ host_path = "/img/w.vhdx" })
    H.value(ctl:map_to_guest(id))
    R:fail("remove_scsi_disk", "nil", "still in use")
    H.fails("backend", ctl:unmap_from_guest(id))
    assert.equal("attached", ctl:slots()[1].state)
    assert.equal("~...", row(ctl:slot_map(), 0))
  end)

  it("shows a disk added to the VM whose mount is not done as attached", function()
    local ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
    local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    R:fail("add_mapped_virtual_disk", "false", "no filesystem")
    H.fails("backend", ctl:map_to_guest(id))
    -- the disk stays in the VM, so a retry only mounts
    assert.equal("attached", ctl:slots()[1].state)
    assert.equal("a...", row(ctl:slot_map(), 0))
    H.value(ctl:map_to_guest(id))
    assert.equal("M...", row(ctl:slot_map(), 0))
  end)

  it("summarises geometries wider than the screen, controller by controller", function()
    local ctl = H.new_ctl{ controllers = 64, luns = 64 }
    for i = 1, 70 do H.value(ctl:reserve{ host_path = "/img/" .. i .. ".vhdx" }) end
    H.value(ctl:reserve_for_rootfs(5, 3))
    local t = lines(ctl:slot_map())
    assert.equal("scsictl slot map: 64 controllers x 64 LUNs, 71 of 4096 slots used", t[1])
    assert.equal("c0: 64 of 64 used: r 64", t[2])
    assert.equal("c1: 6 of 64 used: r 6", t[3])
    assert.equal("c5: 1 of 64 used: p 1", t[4])
    assert.equal("(61 controllers all free)", t[5])
    for _, line in ipairs(t) do assert.truthy(#line <= 80, line) end
  end)

  it("lists at most 16 controllers in use and counts the rest", function()
    local ctl = H.new_ctl{ controllers = 20, luns = 4 }
    for c = 0, 19 do H.value(ctl:reserve_for_rootfs(c, 0)) end
    local t = lines(ctl:slot_map())
    assert.equal("c15: 1 of 4 used: p 1", t[17])
    assert.equal("(4 more controllers in use)", t[18])
    assert.equal("(0 controllers all free)", t[19])
  end)

  it("says so for a closed controller", function()
    local ctl = H.new_ctl{ controllers = 1, luns = 4 }
    assert.is_true(ctl:close())
    assert.truthy(lines(ctl:slot_map())[1]:find("(closed)", 1, true))
  end)

  it("raises on a receiver that is not a controller", function()
    local ctl = H.new_ctl{ controllers = 1, luns = 4 }
    H.raises("bad argument", function() ctl.slot_map(42) end)
    H.raises("bad argument", function() ctl.slot_map({}) end)
  end)
end)
