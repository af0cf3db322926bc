-- disk.options (spec §2), backends.remap of scsictl.import / scsictl.open
-- (spec §8), ctl:set_disk_state / ctl:set_mount_state (spec §8).
local H = require("helper")
local scsictl = H.scsictl

local OPTS = { cache = "none", bps = 1048576, serial = "disk-7", ["x-flag"] = true }
local AS_STRINGS = { cache = "none", bps = "1048576", serial = "disk-7", ["x-flag"] = "true" }

local function disk(path, options) return { host_path = path, options = options } end

describe("disk.options", function()
  local ctl, R
  before_each(function() ctl, R = H.new_ctl{ controllers = 1, luns = 4 } end)

  it("reach add_scsi_disk as strings and are listed by slots()", function()
    local id = H.value(ctl:reserve(disk("/img/a", OPTS)))
    H.value(ctl:map_to_guest(id))
    local add = R.log[1]
    assert.equal("add_scsi_disk", add[1])
    assert.same(AS_STRINGS, add[2].options)
    assert.same(AS_STRINGS, ctl:slots()[1].options)
  end)

  it("are absent from the attachment of a disk without options", function()
    local id = H.value(ctl:reserve(disk("/img/a")))
    H.value(ctl:map_to_guest(id))
    assert.is_nil(R.log[1][2].options)
    assert.same({}, ctl:slots()[1].options)
  end)

  it("are part of the disk's identity: other options on the same path are config_mismatch", function()
    H.value(ctl:reserve(disk("/img/a", OPTS)))
    -- the same settings in another order and with integers as strings share the disk
    H.value(ctl:reserve(disk("/img/a", { ["x-flag"] = "true", serial = "disk-7", bps = "1048576",
                                         cache = "none" })))
    assert.equal(2, ctl:slots()[1].reservations)
    H.fails("config_mismatch", ctl:reserve(disk("/img/a", { cache = "writeback" })))
    H.fails("config_mismatch", ctl:reserve(disk("/img/a")))
    H.fails("config_mismatch", ctl:reserve(disk("/img/a", {})))
    assert.equal(1, #ctl:slots())
  end)

  it("survive save and import", function()
    local id = H.value(ctl:reserve(disk("/img/a", OPTS)))
    H.value(ctl:map_to_guest(id))
    local snap = ctl:save()
    assert.truthy(snap:find("=/img/a 4 =bps%3D1048576 =cache%3Dnone =serial%3Ddisk-7 =x-flag%3Dtrue", 1, true))
    local R2 = H.recorder()
    local c2 = H.value(scsictl.import(snap, { vm = R2.vm, linux_guest = R2.linux_guest }))
    assert.same(AS_STRINGS, c2:slots()[1].options)
    assert.equal(snap, c2:save())
    H.fails("config_mismatch", c2:reserve(disk("/img/a", { cache = "none" })))
  end)

  it("raise on malformed input, and nothing changes", function()
    local many = {}
    for i = 1, 65 do many["k" .. i] = i end
    for what, options in pairs{
      ["not a table"] = "cache=none",
      ["a non-string key"] = { [1] = "none" },
      ["an empty key"] = { [""] = "x" },
      ["a key with '='"] = { ["a=b"] = "x" },
      ["a key with NUL"] = { ["a\0b"] = "x" },
      ["a table value"] = { cache = {} },
      ["a float value"] = { bps = 1.5 },
      ["a value with NUL"] = { serial = "a\0b" },
      ["more than 64 options"] = many,
      ["an option over 1024 bytes"] = { serial = ("x"):rep(1100) },
    } do
      local ok, err = pcall(ctl.reserve, ctl, disk("/img/a", options))
      assert.is_false(ok, what)
      assert.truthy(tostring(err):find("bad argument #1", 1, true) or tostring(err):find("bad argument #2", 1, true),
        what .. ": " .. tostring(err))
      assert.truthy(tostring(err):find("disk.options", 1, true), what .. ": " .. tostring(err))
    end
    assert.same({}, ctl:slots())
  end)
end)

describe("backends.remap", function()
  local R, snap
  before_each(function()
    local ctl
    ctl, R = H.new_ctl{ controllers = 1, luns = 4 }
    assert.is_true(ctl:reserve_for_rootfs(0, 0, { host_path = "/old/root" }))
    local a = H.value(ctl:reserve(disk("/old/a", OPTS)))
    H.value(ctl:reserve(disk("/old/b")))
    H.value(ctl:map_to_guest(a))
    snap = ctl:save()
    R:clear()
  end)

  local function import(remap)
    return scsictl.import(snap, { vm = R.vm, linux_guest = R.linux_guest, remap = remap })
  end

  local function paths(ctl)
    local out = {}
    for _, s in ipairs(ctl:slots()) do out[#out + 1] = s.host_path or "-" end
    return table.concat(out, " ")
  end

  it("renames host paths by a table; paths it does not name stay", function()
    local ctl = H.value(import{ ["/old/a"] = "/new/a", ["/old/root"] = "/new/root", ["/absent"] = "/x" })
    assert.equal("- /new/a /old/b", paths(ctl)) -- slots() shows a pin without its disk bare
    assert.same(AS_STRINGS, ctl:slots()[2].options)
    -- the pin moved with its path: a reserve of the new path takes the pinned slot
    local r = H.value(ctl:reserve{ host_path = "/new/root" })
    assert.same({ 0, 0 }, H.where(ctl, r))
  end)

  it("renames host paths by a function; nil keeps a path; a swap works", function()
    local ctl = H.value(import(function(p) return (p:gsub("^/old/", "/moved/")) end))
    assert.equal("- /moved/a /moved/b", paths(ctl))
    assert.same({ 0, 0 }, H.where(ctl, H.value(ctl:reserve{ host_path = "/moved/root" })))
    ctl = H.value(import{ ["/old/a"] = "/old/b", ["/old/b"] = "/old/a" })
    assert.equal("- /old/b /old/a", paths(ctl))
    ctl = H.value(import(function() return nil end))
    assert.equal("- /old/a /old/b", paths(ctl))
  end)

  it("maps the disks of an imported snapshot at the new paths", function()
    local ctl = H.value(import{ ["/old/b"] = "/new/b" })
    local id
    for _, r in ipairs(ctl:reservations()) do
      if r.host_path == "/new/b" then id = r.id end
    end
    H.value(ctl:map_to_guest(id))
    assert.equal("add_scsi_disk", R.log[1][1])
    assert.equal("/new/b", R.log[1][2].path)
  end)

  it("refuses a remap that makes two disks one (invalid_argument), building nothing", function()
    local msg = H.fails("invalid_argument", import{ ["/old/a"] = "/old/b" })
    assert.truthy(msg:find("makes two disks one", 1, true), msg)
    H.fails("invalid_argument", import{ ["/old/a"] = "/same", ["/old/b"] = "/same" })
    H.fails("invalid_argument", import{ ["/old/b"] = "/old/root" })
    H.fails("invalid_argument", import{ ["/old/b"] = "" })
  end)

  it("raises for a malformed remap or a remap function that raises", function()
    H.raises("backends.remap must be a table", import, 42)
    H.raises("gave a number", import, function() return 7 end)
    H.raises("gave a boolean", import, { ["/old/a"] = true })
    H.raises("NUL byte", import, { ["/old/a"] = "/a\0b" })
    H.raises("remap failed here", import, function() error("remap failed here") end)
  end)

  it("open writes the remapped state to the file before it returns", function()
    local dir = H.tmpdir()
    local path = dir .. "/state"
    local f = assert(io.open(path, "w"))
    f:write(snap)
    f:close()
    local ctl = H.value(scsictl.open(path, { vm = R.vm, linux_guest = R.linux_guest,
                                             remap = { ["/old/a"] = "/new/a" } }))
    assert.equal(ctl:save(), H.read(path))
    assert.truthy(H.read(path):find("=/new/a", 1, true))
    ctl:close()
    ctl = nil -- luacheck: ignore 311
    H.full_gc() -- gives the file up
    H.fails("invalid_argument", scsictl.open(path, { vm = R.vm, linux_guest = R.linux_guest,
                                                     remap = { ["/new/a"] = "/old/b" } }))
    H.rmdir(dir)
  end)
end)

describe("ctl:set_disk_state / ctl:set_mount_state", function()
  local ctl, R
  before_each(function() ctl, R = H.new_ctl{ controllers = 1, luns = 4 } end)

  it("record what a reconciler found; the next map and unmap act on it", function()
    local id = H.value(ctl:reserve(disk("/img/a"), { partition = 1 }))
    H.value(ctl:map_to_guest(id))
    assert.is_true(ctl:set_disk_state(0, 0, "reserved"))
    local s = ctl:slots()[1]
    assert.equal("reserved", s.state)
    assert.equal("reserved", s.partitions[1].state)
    R:clear()
    H.value(ctl:map_to_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, H.pluck(R.log, 1))
    assert.is_true(ctl:set_mount_state(0, 0, 1, "reserved"))
    R:clear()
    H.value(ctl:map_to_guest(id))
    assert.same({ "add_mapped_virtual_disk" }, H.pluck(R.log, 1))
    R:clear()
    H.value(ctl:unmap_from_guest(id))
    assert.same({ "remove_mapped_virtual_disk", "remove_scsi_device", "remove_scsi_disk" }, H.pluck(R.log, 1))
  end)

  it("return not_found, invalid_argument and busy as documented", function()
    local id = H.value(ctl:reserve(disk("/img/a")))
    H.fails("not_found", ctl:set_disk_state(0, 1, "attached"))
    H.fails("not_found", ctl:set_disk_state(0, 2 ^ 40 // 1, "attached"))
    H.fails("not_found", ctl:set_mount_state(0, 0, 5, "mounted"))
    H.fails("invalid_argument", ctl:set_mount_state(0, 0, 0, "mounted"))
    H.fails("invalid_argument", ctl:set_disk_state(0, 0, "ejected"))
    R:yield("add_scsi_disk", 1)
    local co = coroutine.wrap(function() return ctl:map_to_guest(id) end)
    co()
    H.fails("busy", ctl:set_disk_state(0, 0, "attached"))
    H.fails("busy", ctl:set_mount_state(0, 0, 0, "reserved"))
    co()
    -- a closed controller still takes repairs: its remaining unmaps need them
    assert.is_true(ctl:close())
    assert.is_true(ctl:set_disk_state(0, 0, "reserved"))
    assert.equal("reserved", ctl:slots()[1].state)
  end)

  it("raise on malformed arguments", function()
    H.value(ctl:reserve(disk("/img/a")))
    H.raises("invalid option 'plugged'", ctl.set_disk_state, ctl, 0, 0, "plugged")
    H.raises("invalid option 'ejected'", ctl.set_mount_state, ctl, 0, 0, 0, "ejected")
    H.raises("controller must be a non-negative integer", ctl.set_disk_state, ctl, -1, 0, "attached")
    H.raises("lun must be a non-negative integer", ctl.set_disk_state, ctl, 0, 0.5, "attached")
    H.raises("partition must be a non-negative integer", ctl.set_mount_state, ctl, 0, 0, "x", "mounted")
    assert.equal("reserved", ctl:slots()[1].state)
  end)
end)
