-- Backend callbacks: exact arguments (spec §4), fresh tables, lookup at each
-- call, the three failure forms and the error messages (docs/semantics.md
-- "Errors").
local H = require("helper")

local LINUX_SETTINGS_KEYS = { "block_dev", "controller", "encrypted", "ensure_filesystem", "filesystem", "lun",
                              "mount_path", "options", "partition", "read_only" }

-- A controller whose next disk lands at (1, 2): six filler disks first.
local function at_1_2(guest)
  local ctl, R = H.new_ctl{ guest = guest, controllers = 2, luns = 4 }
  for i = 1, 6 do
    H.value(ctl:reserve{ host_path = "/img/filler" .. i })
  end
  return ctl, R
end

-- The first logged call of `name`: it was made on R's backend table
-- `backend` ("vm", "linux_guest", ...) with n arguments after self.
local function first_call(R, name, backend, n)
  local e = R:calls(name)[1]
  assert.equal(R[backend], e.self)
  assert.equal(n, e.n)
  return e
end

describe("callback arguments", function()
  it("add_scsi_disk gets (attachment, controller, lun) with exactly path, type, read_only", function()
    local ctl, R = at_1_2("linux")
    H.mapped(ctl, { host_path = "/img/t.vhdx" })
    local e = first_call(R, "add_scsi_disk", "vm", 3)
    assert.same({ path = "/img/t.vhdx", type = "VirtualDisk", read_only = false }, e[2])
    assert.same({ "path", "read_only", "type" }, H.keys(e[2]))
    assert.equal(1, e[3])
    assert.equal(2, e[4])
    assert.equal("integer", math.type(e[3]))
    assert.equal("integer", math.type(e[4]))
  end)

  it("add_scsi_disk's attachment carries read_only, type and a set evd_type", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    local id1 = H.value(ctl:reserve{ host_path = "/dev/sdc", type = "PassThru", read_only = true })
    local id2 = H.value(ctl:reserve{ host_path = "/img/e", type = "ExtensibleVirtualDisk", evd_type = "space" })
    local id3 = H.value(ctl:reserve{ host_path = "/img/f", type = "ExtensibleVirtualDisk", evd_type = "" })
    H.value(ctl:map_to_guest(id1))
    H.value(ctl:map_to_guest(id2))
    H.value(ctl:map_to_guest(id3))
    local adds = R:calls("add_scsi_disk")
    assert.same({ path = "/dev/sdc", type = "PassThru", read_only = true }, adds[1][2])
    assert.same({ path = "/img/e", type = "ExtensibleVirtualDisk", read_only = false, evd_type = "space" }, adds[2][2])
    assert.same({ path = "/img/f", type = "ExtensibleVirtualDisk", read_only = false, evd_type = "" }, adds[3][2])
    assert.same({ 0, 1 }, { adds[2][3], adds[2][4] })
  end)

  it("Linux add_mapped_virtual_disk gets settings with exactly the §4 fields (defaults)", function()
    local ctl, R = at_1_2("linux")
    H.mapped(ctl, { host_path = "/img/t.vhdx" })
    local e = first_call(R, "add_mapped_virtual_disk", "linux_guest", 1)
    assert.same(LINUX_SETTINGS_KEYS, H.keys(e[2]))
    assert.same({
      mount_path = "/run/mounts/scsi/1_2_0", controller = 1, lun = 2, partition = 0, read_only = false,
      encrypted = false, options = {}, ensure_filesystem = false, filesystem = "", block_dev = false,
    }, e[2])
    assert.equal("integer", math.type(e[2].partition))
  end)

  it("Linux add_mapped_virtual_disk gets the mount config's values", function()
    local ctl, R = at_1_2("linux")
    local opts = { "noatime", "discard" }
    local id = H.value(ctl:reserve({ host_path = "/img/t.vhdx", read_only = true }, {
      partition = 3, read_only = true, encrypted = true, options = opts, ensure_filesystem = true,
      filesystem = "ext4", block_dev = true,
    }))
    H.value(ctl:map_to_guest(id))
    local e = R:calls("add_mapped_virtual_disk")[1]
    assert.same({
      mount_path = "/run/mounts/scsi/1_2_3", controller = 1, lun = 2, partition = 3, read_only = true,
      encrypted = true, options = { "noatime", "discard" }, ensure_filesystem = true, filesystem = "ext4",
      block_dev = true,
    }, e[2])
    assert.are_not.equal(opts, e.raw[1].options)
  end)

  it("Linux remove_mapped_virtual_disk gets the same fields as at mount, in fresh tables", function()
    local ctl, R = at_1_2("linux")
    local id = H.value(ctl:reserve({ host_path = "/img/t.vhdx" }, {
      partition = 1, options = { "a", "b" }, filesystem = "xfs", encrypted = true,
    }))
    H.value(ctl:map_to_guest(id))
    H.value(ctl:unmap_from_guest(id))
    local m = R:calls("add_mapped_virtual_disk")[1]
    local u = first_call(R, "remove_mapped_virtual_disk", "linux_guest", 1)
    assert.same(m[2], u[2])
    assert.are_not.equal(m.raw[1], u.raw[1])
    assert.are_not.equal(m.raw[1].options, u.raw[1].options)
  end)

  it("remove_scsi_device gets exactly { controller, lun } and remove_scsi_disk (controller, lun)", function()
    local ctl, R = at_1_2("linux")
    H.released(ctl, { host_path = "/img/t.vhdx" })
    local d = first_call(R, "remove_scsi_device", "linux_guest", 1)
    assert.same({ controller = 1, lun = 2 }, d[2])
    local r = first_call(R, "remove_scsi_disk", "vm", 2)
    assert.same({ 1, 2 }, { r[2], r[3] })
    assert.equal("integer", math.type(r[2]))
  end)

  it("Windows callbacks get exactly { container_path, lun }", function()
    local ctl, R = at_1_2("windows")
    local id1 = H.value(ctl:reserve({ host_path = "/img/t.vhdx" }, { partition = 1 }))
    local id2 = H.value(ctl:reserve({ host_path = "/img/t.vhdx" }, { partition = 2, format_with_refs = true }))
    H.value(ctl:map_to_guest(id1))
    H.value(ctl:map_to_guest(id2))
    H.value(ctl:unmap_from_guest(id1))
    H.value(ctl:unmap_from_guest(id2))
    local m = R:calls("add_mapped_virtual_disk")[1]
    local s = R:calls("add_mapped_virtual_disk_for_container_scratch")[1]
    local u = R:calls("remove_mapped_virtual_disk")
    assert.equal(R.windows_guest, m.self)
    assert.equal(R.windows_guest, s.self)
    assert.equal(1, m.n)
    assert.same({ container_path = "C:\\mounts\\scsi\\1_2_1", lun = 2 }, m[2])
    assert.same({ container_path = "C:\\mounts\\scsi\\1_2_2", lun = 2 }, s[2])
    assert.same({ container_path = "C:\\mounts\\scsi\\1_2_1", lun = 2 }, u[1][2])
    assert.same({ container_path = "C:\\mounts\\scsi\\1_2_2", lun = 2 }, u[2][2])
    assert.equal(R.windows_guest, u[1].self)
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "add_mapped_virtual_disk_for_container_scratch",
                  "remove_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_disk" }, R:names())
  end)

  it("hands out fresh tables: a callback changing them changes nothing", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    R:hook("add_scsi_disk", function(_, attachment)
      attachment.path = "/evil"
      attachment.read_only = true
      attachment.extra = 1
    end)
    R:hook("add_mapped_virtual_disk", function(_, settings)
      settings.mount_path = "/evil"
      settings.controller = 9
      settings.options[1] = "evil"
      settings.options[5] = "more"
      settings.extra = true
    end)
    local id = H.value(ctl:reserve({ host_path = "/img/t" }, { options = { "ro" } }))
    local id2 = H.value(ctl:reserve({ host_path = "/img/t" }, { partition = 1, options = { "ro" } }))
    assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
    assert.equal("/run/mounts/scsi/0_0_1", ctl:map_to_guest(id2))
    local m = R:calls("add_mapped_virtual_disk")
    assert.same({ "ro" }, m[2][2].options)
    assert.equal("/run/mounts/scsi/0_0_1", m[2][2].mount_path)
    assert.are_not.equal(m[1].raw[1], m[2].raw[1])
    assert.equal("/img/t", ctl:reservation(id).host_path)
    assert.equal("/img/t", H.slot(ctl, 0, 0).host_path)
    H.value(ctl:unmap_from_guest(id))
    local u = R:calls("remove_mapped_virtual_disk")[1]
    assert.same({
      mount_path = "/run/mounts/scsi/0_0_0", controller = 0, lun = 0, partition = 0, read_only = false,
      encrypted = false, options = { "ro" }, ensure_filesystem = false, filesystem = "", block_dev = false,
    }, u[2])
  end)
end)

describe("callback lookup", function()
  it("looks callbacks up at each call, so a script may swap them", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    local seen = {}
    R.vm.add_scsi_disk = function(self, attachment, c, l)
      seen[#seen + 1] = { "new add", self, attachment.path, c, l }
    end
    R.linux_guest.add_mapped_virtual_disk = setmetatable({}, {
      __call = function(_, self, settings)
        seen[#seen + 1] = { "callable mount", self, settings.mount_path }
      end,
    })
    local id = H.value(ctl:reserve{ host_path = "/img/s" })
    assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
    assert.same({ { "new add", R.vm, "/img/s", 0, 0 }, { "callable mount", R.linux_guest, "/run/mounts/scsi/0_0_0" } },
      seen)
    assert.same({}, R.log)
  end)

  it("uses a callback swapped in by another callback", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    local replaced = false
    R:hook("add_scsi_disk", function()
      R.linux_guest.add_mapped_virtual_disk = function() replaced = true end
    end, 1)
    local id = H.value(ctl:reserve{ host_path = "/img/s" })
    H.value(ctl:map_to_guest(id))
    assert.is_true(replaced)
    assert.equal(0, R:count("add_mapped_virtual_disk"))
  end)
end)

describe("callback results", function()
  local successes = {
    { "nothing", function() end },
    { "true", function() return true end },
    { "a lone nil", function() return nil end },
    { "nil, nil", function() return nil, nil end },
    { "0", function() return 0 end },
    { "an empty string", function() return "" end },
    { "a table", function() return {} end },
    { "true, 'message'", function() return true, "message" end },
    { "'ok', false", function() return "ok", false end },
  }
  for _, s in ipairs(successes) do
    it("returning " .. s[1] .. " is success", function()
      local ctl, R = H.new_ctl{ controllers = 1 }
      R:hook("add_scsi_disk", s[2])
      R:hook("add_mapped_virtual_disk", s[2])
      local id = H.value(ctl:reserve{ host_path = "/img/x" })
      assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
      assert.equal("mounted", H.partition(ctl, 0, 0, 0).state)
    end)
  end

  local failures = {
    { "raising a string", function() error("kaput", 0) end, "kaput" },
    { "raising a string with position", function() error("kaput") end, "kaput" },
    { "returning false", function() return false end, "returned false" },
    { "returning false, msg", function() return false, "kaput" end, "kaput" },
    { "returning nil, msg", function() return nil, "kaput" end, "kaput" },
    { "returning nil, false", function() return nil, false end },
    { "returning nil, a table", function() return nil, {} end },
    { "raising a table", function() error({ code = 5 }) end },
    { "raising a number", function() error(42) end },
    { "raising a boolean", function() error(true) end },
    { "raising nil", function() error(nil) end, "raised an error" },
    { "a runtime error", function() local t = nil; return t.x end, "attempt to index" },
    { "a message with format characters", function() return nil, "100% %s %d %%" end, "100% %s %d %%" },
  }
  for _, f in ipairs(failures) do
    it(f[1] .. " is failure, reported as backend", function()
      local ctl, R = H.new_ctl{ controllers = 1 }
      R:hook("add_scsi_disk", f[2], 1)
      local id = H.value(ctl:reserve{ host_path = "/img/x" })
      local msg = H.fails("backend", ctl:map_to_guest(id))
      H.contains(msg, "add_scsi_disk")
      H.contains(msg, "/img/x")
      if f[3] then
        H.contains(msg, f[3])
      end
      assert.equal("reserved", H.slot(ctl, 0, 0).state)
      assert.is_false(H.slot(ctl, 0, 0).busy)
      -- the step is retried and then succeeds
      R:clear()
      assert.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
      assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, R:names())
    end)
  end
end)

describe("error messages", function()
  it("read as in docs/semantics.md", function()
    local ctl, R = H.new_ctl{ controllers = 1 }
    H.value(ctl:reserve{ host_path = "/img/first" })
    local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
    R:fail("add_scsi_disk", "raise", "no capacity")
    local msg = H.fails("backend", ctl:map_to_guest(id))
    assert.equal("map_to_guest: add_scsi_disk failed for '/img/a.vhdx' at controller 0 lun 1: no capacity", msg)
  end)

  local steps = {
    { "linux", "map_to_guest", "add_scsi_disk" },
    { "linux", "map_to_guest", "add_mapped_virtual_disk" },
    { "linux", "unmap_from_guest", "remove_mapped_virtual_disk" },
    { "linux", "unmap_from_guest", "remove_scsi_device" },
    { "linux", "unmap_from_guest", "remove_scsi_disk" },
    { "windows", "map_to_guest", "add_scsi_disk" },
    { "windows", "map_to_guest", "add_mapped_virtual_disk" },
    { "windows", "map_to_guest", "add_mapped_virtual_disk_for_container_scratch" },
    { "windows", "unmap_from_guest", "remove_mapped_virtual_disk" },
    { "windows", "unmap_from_guest", "remove_scsi_disk" },
  }
  local forms = { "raise", "false", "nil" }
  for _, st in ipairs(steps) do
    local guest, op, step = st[1], st[2], st[3]
    for _, form in ipairs(forms) do
      it("name the operation, " .. step .. ", host path, controller and lun, then the message (" .. guest
        .. ", " .. form .. ")", function()
        local ctl, R = at_1_2(guest)
        local scratch = step == "add_mapped_virtual_disk_for_container_scratch"
        local id = H.value(ctl:reserve({ host_path = "/img/t.vhdx" }, { partition = 4, format_with_refs = scratch }))
        if op == "unmap_from_guest" then
          H.value(ctl:map_to_guest(id))
        end
        R:clear()
        local backend_msg = "the " .. form .. " message"
        R:fail(step, form, backend_msg)
        local msg = H.fails("backend", ctl[op](ctl, id))
        assert.equal(step, R:last()[1])
        local p_op = msg:find(op, 1, true)
        local p_step = msg:find(step, 1, true)
        local p_path = msg:find("/img/t.vhdx", 1, true)
        assert.truthy(p_op, "operation missing: " .. msg)
        assert.truthy(p_step, "step missing: " .. msg)
        assert.truthy(p_path, "host path missing: " .. msg)
        H.contains(msg, "controller 1")
        H.contains(msg, "lun 2")
        assert.equal(backend_msg, msg:sub(-#backend_msg), "message does not end with the backend's: " .. msg)
        assert.truthy(p_op < p_step and p_step < p_path, "operation, step, path out of order: " .. msg)
      end)
    end
  end
end)
