-- scsictl.new, module fields, geometry, and every malformed argument to new
-- (spec §5).
local H = require("helper")
local scsictl = require("scsictl")

describe("module", function()
  it("is a table with new and a _VERSION string", function()
    assert.is_table(scsictl)
    assert.is_function(scsictl.new)
    assert.is_string(scsictl._VERSION)
    assert.truthy(scsictl._VERSION:find("%d+%.%d+"), "no version number in " .. scsictl._VERSION)
  end)

  it("has the spec §5 defaults in scsictl.defaults (documented in docs/lua-api.md)", function()
    assert.is_table(scsictl.defaults)
    assert.equal(64, scsictl.defaults.luns_per_controller)
    assert.same({ read_only = false, type = "VirtualDisk" }, scsictl.defaults.disk)
    assert.same({
      partition = 0, read_only = false, encrypted = false, options = {}, ensure_filesystem = false,
      filesystem = "", block_dev = false, format_with_refs = false,
    }, scsictl.defaults.mount)
  end)

  it("has the geometry limits in scsictl.limits (documented in docs/lua-api.md)", function()
    assert.same({ controllers = 1024, luns_per_controller = 16384, slots = 1 << 20 }, scsictl.limits)
  end)

  -- The invalid_snapshot error code of spec §5 belongs to scsictl.import /
  -- scsictl.open (spec §8): a corrupted or empty snapshot is refused.
  it("refuses a corrupted snapshot in scsictl.import with invalid_snapshot", function()
    assert.is_function(scsictl.import, "scsictl.import is missing (spec §5 error code invalid_snapshot, §8)")
    local R = H.recorder()
    local backends = { vm = R.vm, linux_guest = R.linux_guest }
    H.fails("invalid_snapshot", scsictl.import("this is not a snapshot", backends))
    H.fails("invalid_snapshot", scsictl.import("", backends))
    assert.same({}, R.log)
  end)

  it("is the same table on a second require", function()
    assert.equal(scsictl, require("scsictl"))
  end)
end)

describe("scsictl.new", function()
  it("returns a controller userdata and makes no backend call", function()
    local ctl, R = H.new_ctl{ controllers = 4 }
    assert.equal("userdata", type(ctl))
    assert.same({}, R.log)
  end)

  it("defaults luns_per_controller to 64", function()
    local ctl = H.new_ctl{ controllers = 4 }
    assert.same({
      controllers = 4, luns_per_controller = 64, slots = 256, used = 0, free = 256,
      pinned = 0, disks = 0, reservations = 0,
    }, ctl:stats())
  end)

  it("takes luns_per_controller", function()
    local ctl = H.new_ctl{ controllers = 3, luns = 5 }
    H.stats_include(ctl, { controllers = 3, luns_per_controller = 5, slots = 15, free = 15 })
  end)

  it("accepts zero controllers", function()
    local ctl = H.new_ctl{ controllers = 0 }
    H.stats_include(ctl, { controllers = 0, slots = 0, free = 0 })
  end)

  it("accepts the geometry limits", function()
    local a = H.new_ctl{ controllers = 1024, luns = 1024 }
    assert.equal(1024 * 1024, a:stats().slots)
    local b = H.new_ctl{ controllers = 64, luns = 16384 }
    assert.equal(64 * 16384, b:stats().slots)
    local c = H.new_ctl{ controllers = 1, luns = 1 }
    assert.equal(1, c:stats().slots)
    local d = H.new_ctl{ controllers = 1024, luns = 1 }
    assert.equal(1024, d:stats().slots)
  end)

  it("works with a Windows guest", function()
    local ctl, R = H.new_ctl{ guest = "windows", controllers = 1 }
    local id = H.value(ctl:reserve{ host_path = "/img/w.vhdx" })
    assert.equal("C:\\mounts\\scsi\\0_0_0", H.value(ctl:map_to_guest(id)))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
  end)

  it("accepts backends that are objects with methods on a metatable", function()
    local calls = {}
    local Class = {}
    Class.__index = Class
    for _, n in ipairs{ "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk",
                        "remove_mapped_virtual_disk", "remove_scsi_device" } do
      Class[n] = function(self)
        calls[#calls + 1] = { n, self }
      end
    end
    local vm = setmetatable({}, Class)
    local guest = setmetatable({}, Class)
    local ctl = scsictl.new{ controllers = 1, vm = vm, linux_guest = guest }
    local id = H.value(ctl:reserve{ host_path = "/img/o.vhdx" })
    H.value(ctl:map_to_guest(id))
    assert.equal(2, #calls)
    assert.equal("add_scsi_disk", calls[1][1])
    assert.equal(vm, calls[1][2])
    assert.equal("add_mapped_virtual_disk", calls[2][1])
    assert.equal(guest, calls[2][2])
  end)

  it("accepts callable tables as callbacks", function()
    local R = H.recorder()
    local called = 0
    local vm = {
      add_scsi_disk = setmetatable({}, { __call = function() called = called + 1 end }),
      remove_scsi_disk = R.vm.remove_scsi_disk,
    }
    local ctl = scsictl.new{ controllers = 1, vm = vm, linux_guest = R.linux_guest }
    local id = H.value(ctl:reserve{ host_path = "/img/c.vhdx" })
    H.value(ctl:map_to_guest(id))
    assert.equal(1, called)
  end)

  it("does not require the other flavour's callbacks", function()
    local R = H.recorder()
    -- a Linux guest table without the Windows scratch callback, and a
    -- Windows guest table without remove_scsi_device
    assert.is_nil(R.linux_guest.add_mapped_virtual_disk_for_container_scratch)
    assert.is_nil(R.windows_guest.remove_scsi_device)
    assert.equal("userdata", type(scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux_guest }))
    assert.equal("userdata", type(scsictl.new{ controllers = 1, vm = R.vm, windows_guest = R.windows_guest }))
  end)
end)

describe("scsictl.new with a malformed argument", function()
  -- each row: description, function(R) returning the argument list
  local function with(fields)
    return function(R)
      local t = { controllers = 2, vm = R.vm, linux_guest = R.linux_guest }
      for k, v in pairs(fields) do
        if v == "<nil>" then
          t[k] = nil
        else
          t[k] = v
        end
      end
      return t
    end
  end
  local function without(backend, name)
    return function(R)
      local b = H.deep_copy(R[backend])
      b[name] = nil
      local t = { controllers = 2, vm = R.vm }
      if backend == "windows_guest" then
        t.windows_guest = b
      else
        t.linux_guest = R.linux_guest
        t[backend] = b
      end
      return t
    end
  end
  local function replaced(backend, name, value)
    return function(R)
      local t = without(backend, name)(R)
      t[backend][name] = value
      return t
    end
  end

  local rows = {
    { "no argument", nil, true },
    { "a number", function() return 4 end },
    { "a string", function() return "controllers=4" end },
    { "a boolean", function() return true end },
    { "controllers missing", with{ controllers = "<nil>" } },
    { "controllers a string", with{ controllers = "4" } },
    { "controllers a boolean", with{ controllers = true } },
    { "controllers not an integer", with{ controllers = 1.5 } },
    { "controllers negative", with{ controllers = -1 } },
    { "controllers above 1024", with{ controllers = 1025 } },
    { "controllers huge", with{ controllers = math.maxinteger } },
    { "luns_per_controller a string", with{ luns_per_controller = "64" } },
    { "luns_per_controller a boolean", with{ luns_per_controller = false } },
    { "luns_per_controller not an integer", with{ luns_per_controller = 1.5 } },
    { "luns_per_controller negative", with{ luns_per_controller = -1 } },
    { "luns_per_controller zero", with{ luns_per_controller = 0 } },
    { "luns_per_controller above 16384", with{ luns_per_controller = 16385 } },
    { "controllers * luns above 2^20", with{ controllers = 1024, luns_per_controller = 1025 } },
    { "controllers * luns above 2^20 (65 x 16384)", with{ controllers = 65, luns_per_controller = 16384 } },
    { "vm missing", with{ vm = "<nil>" } },
    { "vm a number", with{ vm = 42 } },
    { "vm a string", with{ vm = "vm" } },
    { "vm a boolean", with{ vm = true } },
    { "vm without add_scsi_disk", without("vm", "add_scsi_disk") },
    { "vm without remove_scsi_disk", without("vm", "remove_scsi_disk") },
    { "vm add_scsi_disk a string", replaced("vm", "add_scsi_disk", "add") },
    { "vm remove_scsi_disk a number", replaced("vm", "remove_scsi_disk", 42) },
    { "vm add_scsi_disk a plain table", replaced("vm", "add_scsi_disk", {}) },
    { "neither guest", with{ linux_guest = "<nil>" } },
    { "both guests", function(R)
        return { controllers = 2, vm = R.vm, linux_guest = R.linux_guest, windows_guest = R.windows_guest }
      end },
    { "linux_guest a number", with{ linux_guest = 7 } },
    { "linux_guest a string", with{ linux_guest = "linux" } },
    { "windows_guest a number", function(R) return { controllers = 2, vm = R.vm, windows_guest = 7 } end },
  }
  for _, n in ipairs(H.LINUX_CALLBACKS) do
    rows[#rows + 1] = { "linux_guest without " .. n, without("linux_guest", n) }
    rows[#rows + 1] = { "linux_guest " .. n .. " a boolean", replaced("linux_guest", n, true) }
  end
  for _, n in ipairs(H.WINDOWS_CALLBACKS) do
    rows[#rows + 1] = { "windows_guest without " .. n, without("windows_guest", n) }
    rows[#rows + 1] = { "windows_guest " .. n .. " a string", replaced("windows_guest", n, "f") }
  end

  for _, row in ipairs(rows) do
    local desc, make, no_arg = row[1], row[2], row[3]
    it("raises for " .. desc, function()
      local R = H.recorder()
      if no_arg then
        H.raises("bad argument #1 to 'new'", function()
          local c = scsictl.new()
          return c
        end)
      else
        local arg = make(R)
        H.raises("bad argument #1 to 'new'", function()
          local c = scsictl.new(arg)
          return c
        end)
      end
      assert.same({}, R.log)
    end)
  end
end)
