-- Busted spec for scsictl.qemu / scsictl.qmp against a real QEMU process.
--
-- Needs qemu-system-x86 and qemu-utils (qemu-img), lua-luv and lua-cjson.
-- If QEMU cannot start (or the Lua packages are missing), every test FAILS
-- with the reason: nothing here passes without a real QEMU.
--
-- The guest is a small table (not the simulator's guest: scsictl.sim's guest
-- refuses to mount a lun that the sim's own VM half has not attached). It
-- records its calls and, when asked to mount, checks through QMP that QEMU
-- really has a disk at that controller and lun. One test pairs QEMU with the
-- simulator by mirroring every successful QEMU hot-plug into the sim's VM half.

local root = debug.getinfo(1, "S").source:match("^@(.-)spec/[^/]*$") or ""
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. root .. "spec/?.lua;" .. package.path

local scsictl = require("scsictl")
-- Starting QEMU, shell quoting and the images' directory: support/qemu_vm.lua.
local Q = require("support.qemu_vm")
local okq, qemu = Q.okq, Q.qemu
local qmp = okq and require("scsictl.qmp") or nil
local uv = okq and require("luv") or nil

local need_qemu_module, start = Q.need, Q.start
local shquote, NOPRELOAD = Q.shquote, Q.NOPRELOAD

local function now() return uv.hrtime() / 1e9 end

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true
end

---------------------------------------------------------------------------
-- Images (in scratch.dir, removed at teardown).

local scratch = Q.scratch()

local function raw(name, size)
  local path = scratch:path(name)
  local f = assert(io.open(path, "wb"))
  f:seek("set", (size or 1024 * 1024) - 1)
  f:write("\0")
  f:close()
  return path
end

local function qcow2(name, size)
  local path = scratch:path(name)
  assert(sh(("%sqemu-img create -q -f qcow2 %s %s >/dev/null 2>&1"):format(NOPRELOAD,
    shquote(path), size or "1M")), "qemu-img create failed (is qemu-utils installed?)")
  return path
end

---------------------------------------------------------------------------
-- QEMU's view.

local function disks(vm)
  return assert(qemu.scsi_disks(vm:qmp()))
end

-- Names of the named block nodes (auto-named "#block..." children left out).
local function nodes(vm)
  local out = {}
  for _, n in ipairs(assert(vm:qmp():execute("query-named-block-nodes", { flat = true }))) do
    if not n["node-name"]:find("^#") then out[#out + 1] = n["node-name"] end
  end
  table.sort(out)
  return out
end

local function node_info(vm, name)
  for _, n in ipairs(assert(vm:qmp():execute("query-named-block-nodes", { flat = true }))) do
    if n["node-name"] == name then return n end
  end
end

local function disk_at(vm, controller, lun)
  for _, d in ipairs(disks(vm)) do
    if d.bus == ("scsi%d.0"):format(controller) and d.lun == lun then return d end
  end
end

local function assert_empty(vm)
  assert.same({}, disks(vm))
  assert.same({}, nodes(vm))
end

---------------------------------------------------------------------------
-- A small guest.

local function new_guest(vm, backend)
  local g = { log = {} }
  function g.add_mapped_virtual_disk(_, s)
    g.log[#g.log + 1] = { "mount", s.controller, s.lun, s.partition }
    local lun = vm:qmp():execute("qom-get", {
      path = "/machine/peripheral/" .. backend:device_id(s.controller, s.lun),
      property = "lun" })
    if lun ~= s.lun then
      return nil, ("guest: no disk at controller %d lun %d"):format(s.controller, s.lun)
    end
    return true
  end
  function g.remove_mapped_virtual_disk(_, s)
    g.log[#g.log + 1] = { "unmount", s.controller, s.lun, s.partition }
  end
  function g.remove_scsi_device(_, d)
    g.log[#g.log + 1] = { "eject", d.controller, d.lun }
  end
  return g
end

local function new_ctl(vm, opts)
  opts = opts or {}
  local backend = vm:vm_backend(opts.backend)
  local guest = new_guest(vm, backend)
  local ctl = scsictl.new{ controllers = opts.controllers or vm.controllers,
                           luns_per_controller = opts.luns, vm = backend,
                           linux_guest = guest }
  return ctl, backend, guest
end

local function value(v, msg, code)
  assert(v, ("expected success, got %s (%s)"):format(tostring(msg), tostring(code)))
  return v
end

---------------------------------------------------------------------------

describe("scsictl.qemu", function()
  setup(function() scratch:create("scsictl-spec") end)
  teardown(function() scratch:remove() end)

  describe("dependencies", function()
    it("the core never loads lua-luv or lua-cjson; scsictl.qemu names the Debian packages", function()
      local so = assert(package.searchpath("scsictl", package.cpath), "scsictl.so not on package.cpath")
      local lpath = root .. "lua/?.lua;" .. root .. "lua/?/init.lua"
      local script = [[
        local scsictl = require("scsictl")
        assert(scsictl.new)
        assert(package.loaded.luv == nil and package.loaded.cjson == nil, "core loaded them")
        local ok, err = pcall(require, "scsictl.qemu")
        assert(not ok, "scsictl.qemu loaded without its dependencies")
        io.write(err)
      ]]
      -- Only the module's own directories: the system's luv and cjson
      -- cannot be found.
      local cmd = ("LUA_PATH=%s LUA_CPATH=%s lua5.4 -e %s 2>&1"):format(
        shquote(lpath), shquote((so:gsub("scsictl%.so$", "?.so"))), shquote(script))
      local p = io.popen(cmd)
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, out)
      assert.matches("lua%-luv", out)
      assert.matches("lua%-cjson", out)
      assert.matches("apt%-get install", out)
    end)
  end)

  describe("backend constructors (no QEMU needed)", function()
    -- Both backends take a client or a socket path (conn.owner) and share
    -- the client, close and __tostring methods (conn.owned).
    local qemu_guest = okq and require("scsictl.qemu_guest") or nil
    local cases = {
      { "vm_backend", function(o)
        local b = qemu.vm_backend(o) -- not a tail call: the error must point here
        return b
      end, "qmp", "execute", "a QMP client", "QMP",
        "client", "scsictl.qemu.backend" },
      { "linux_guest", function(o)
        if type(o) == "table" then o.pci = o.pci or {} end
        local b = qemu_guest.linux_guest(o)
        return b
      end, "agent", "exec",
        "an agent client", "guest agent", "agent", "scsictl.qemu_guest.backend" },
    }
    for _, case in ipairs(cases) do
      local fname, new, key, method, what, label, getter, name = table.unpack(case)

      it(fname .. ": malformed options raise at the caller, naming the option", function()
        need_qemu_module()
        local function raises(opts, msg)
          local ok, err = pcall(new, opts)
          assert.is_false(ok)
          assert.equal(("%s: %s"):format(fname, msg), (tostring(err):gsub("^.-:%d+: ", "")))
          assert.matches("^[^:]*qemu_spec%.lua:%d+:", tostring(err))
        end
        raises("x", "options must be a table")
        raises({ [key] = 42 }, ("%s must be %s or a socket path"):format(key, what))
        raises({ [key] = {} }, ("%s must be %s or a socket path"):format(key, what))
        raises({ [key] = "/x.sock", timeout = 0 }, "timeout must be a positive number")
        raises({ [key] = "/x.sock", timeout = "1" }, "timeout must be a positive number")
      end)

      it(fname .. ": a given client is used, never closed by the backend, and reported once closed", function()
        need_qemu_module()
        local closed, closes = nil, 0
        local client = { path = "/given.sock", [method] = function() end,
          is_closed = function() return closed ~= nil, closed end,
          close = function() closes = closes + 1 end }
        local b = new({ [key] = client })
        assert.equal(client, b[getter](b))
        assert.equal(name .. "(/given.sock)", tostring(b))
        closed = "peer went away"
        assert.same({ nil, label .. " connection closed: peer went away" }, { b[getter](b) })
        assert.is_true(b:close())
        assert.equal(0, closes)
      end)

      it(fname .. ": a socket path is connected on first use, and a failed connect says why", function()
        need_qemu_module()
        local b = new({ [key] = scratch:path("nobody.sock"), timeout = 0.5 })
        assert.equal(name .. "(" .. scratch:path("nobody.sock") .. ")", tostring(b))
        local c, msg = b[getter](b)
        assert.is_nil(c)
        assert.matches("nobody%.sock", msg)
        assert.is_true(b:close())
      end)
    end
  end)

  describe("launch", function()
    it("starts QEMU with controllers scsi0..N-1 at fixed PCI addresses and stops it cleanly", function()
      local vm = start(3)
      assert.is_true(vm:alive())
      assert.is_true(vm.accel == "kvm" or vm.accel == "tcg")
      local status = assert(vm:qmp():execute("query-status"))
      assert.equal("prelaunch", status.status)
      local by_id = {}
      for _, bus in ipairs(assert(vm:qmp():execute("query-pci"))) do
        for _, d in ipairs(bus.devices) do
          by_id[d.qdev_id] = ("0000:%02x:%02x.%d"):format(bus.bus, d.slot, d["function"])
        end
      end
      for i = 0, 2 do
        assert.equal(vm:pci_address(i), by_id["scsi" .. i])
        assert.equal(("0000:00:%02x.0"):format(4 + i), vm:pci_address(i))
      end
      assert.same({ [0] = "0000:00:04.0", "0000:00:05.0", "0000:00:06.0" }, vm:pci_addresses())
      -- No network, no other disks.
      assert.same({}, assert(vm:qmp():execute("query-block")))
      local dirname, pid = vm.dir, vm.pid
      assert.is_true(vm:stop())
      assert.is_false(vm:alive())
      assert.is_false(sh(("kill -0 %d 2>/dev/null && ! grep -q '^%d (.*) Z' /proc/%d/stat"):format(pid, pid, pid)))
      assert.is_nil(io.open(dirname .. "/qmp.sock"))
      assert.is_false(sh("test -e " .. shquote(dirname)))
      assert.is_true(vm:stop())          -- idempotent
    end)

    it("reports why QEMU could not start", function()
      need_qemu_module()
      local vm, err = qemu.launch{ controllers = 1, binary = "/nonexistent/qemu-system-x86_64" }
      assert.is_nil(vm)
      assert.matches("exited at startup", err)
      vm, err = qemu.launch{ controllers = 1, args = { "-device", "no-such-device" } }
      assert.is_nil(vm)
      assert.matches("no%-such%-device", err)
      assert.has_error(function() qemu.launch{ controllers = 29 } end)
    end)

    it("is stopped by <close>", function()
      local pid, dirname
      do
        local vm <close> = start(1)
        pid, dirname = vm.pid, vm.dir
      end
      assert.is_false(sh(("kill -0 %d 2>/dev/null && ! grep -q '^%d (.*) Z' /proc/%d/stat"):format(pid, pid, pid)))
      assert.is_false(sh("test -e " .. shquote(dirname)))
    end)
  end)

  describe("a script that never stops its VM", function()
    -- At exit Lua collects the VM and its luv handles together; the VM's
    -- collector kills QEMU by pid (luv may have finalized the process
    -- handle first: calling it then crashed the script).
    for _, case in ipairs({ { "ends", "", 0 }, { "fails", "error('on purpose')", 1 } }) do
      it(case[1] .. ": the script exits normally, and QEMU goes with it", function()
        need_qemu_module()
        local child = ("package.path = %q .. package.path\n"):format(root .. "lua/?.lua;")
          .. "local vm = assert(require('scsictl.qemu').launch{ controllers = 1 })\n"
          .. "io.write(vm.pid, '\\n') io.stdout:flush()\n" .. case[2] .. "\n"
        local p = assert(io.popen("lua5.4 -e " .. shquote(child) .. " 2>/dev/null"))
        local pid = tonumber(p:read("l"))
        local _, how, code = p:close()
        assert.is_number(pid)
        assert.same({ "exit", case[3] }, { how, code })
        local gone = false
        for _ = 1, 100 do
          if not sh(("kill -0 %d 2>/dev/null && ! grep -q '^%d (.*) Z' /proc/%d/stat"):format(pid, pid, pid)) then
            gone = true
            break
          end
          uv.sleep(20)
        end
        assert.is_true(gone, "QEMU is still running")
      end)
    end
  end)

  describe("through the controller", function()
    local vm
    before_each(function() vm = start(2) end)
    after_each(function() if vm then vm:stop() end end)

    it("attaches disks at the right controller and lun with the right file and read-only flag", function()
      local ctl, backend, guest = new_ctl(vm, { luns = 4 })
      local a, b, c = raw("a.raw"), qcow2("b.qcow2"), raw("c.img")
      local ida = value(ctl:reserve({ host_path = a }))
      local idb = value(ctl:reserve({ host_path = b, read_only = true }, { read_only = true }))
      assert(ctl:reserve_for_rootfs(0, 2))
      local idc = value(ctl:reserve({ host_path = c, read_only = true }))
      assert.equal("/run/mounts/scsi/0_0_0", value(ctl:map_to_guest(ida)))
      assert.equal("/run/mounts/scsi/0_1_0", value(ctl:map_to_guest(idb)))
      assert.equal("/run/mounts/scsi/0_3_0", value(ctl:map_to_guest(idc)))

      local view = disks(vm)
      assert.equal(3, #view)
      local want = {
        { lun = 0, file = a, format = "raw", ro = false },
        { lun = 1, file = b, format = "qcow2", ro = true },
        { lun = 3, file = c, format = "raw", ro = true },
      }
      for i, w in ipairs(want) do
        local d = view[i]
        assert.equal("scsi0.0", d.bus)
        assert.equal("scsi0", d.controller_id)
        assert.equal("scsi-hd", d.type)
        assert.equal(0, d.scsi_id)
        assert.equal(0, d.channel)
        assert.equal(w.lun, d.lun)
        assert.equal(w.file, d.file)
        assert.equal(w.format, d.format)
        assert.equal(w.ro, d.ro)
        assert.equal(backend:device_id(0, w.lun), d.device)
        assert.equal(backend:node_name(0, w.lun), d.node)
        local n = assert(node_info(vm, d.node))
        assert.equal(w.file, n.file)
        assert.equal(w.ro, n.ro)
        assert.equal(w.format, n.drv)
      end
      -- The image's format child is read-only too.
      for _, n in ipairs(assert(vm:qmp():execute("query-named-block-nodes", { flat = true }))) do
        if n.drv == "file" then assert.equal(n.file ~= a, n.ro) end
      end
      -- The second controller: lun 0 of controller 1 once controller 0 is full.
      local d = raw("d.raw")
      local idd = value(ctl:reserve({ host_path = d }))
      assert.equal("/run/mounts/scsi/1_0_0", value(ctl:map_to_guest(idd)))
      local at = disk_at(vm, 1, 0)
      assert.equal("scsi1", at.controller_id)
      assert.equal(d, at.file)

      -- Unmap: each disk leaves QEMU, node included.
      assert.is_true(ctl:unmap_from_guest(idb))
      assert.is_nil(disk_at(vm, 0, 1))
      assert.is_nil(node_info(vm, backend:node_name(0, 1)))
      for _, id in ipairs({ ida, idc, idd }) do assert.is_true(ctl:unmap_from_guest(id)) end
      assert_empty(vm)
      local mounts, ejects = 0, 0
      for _, e in ipairs(guest.log) do
        if e[1] == "mount" then mounts = mounts + 1 end
        if e[1] == "eject" then ejects = ejects + 1 end
      end
      assert.equal(4, mounts)
      assert.equal(4, ejects)
      assert.equal(1, ctl:stats().used)   -- the pinned slot
      ctl:close()
    end)

    it("fills a controller, then uses the next one, then empties both", function()
      local ctl = new_ctl(vm)               -- 64 luns per controller
      local ids = {}
      local t0 = now()
      for i = 0, 64 do
        ids[#ids + 1] = value(ctl:reserve({ host_path = raw(("fill%02d.raw"):format(i)) }))
        value(ctl:map_to_guest(ids[#ids]))
      end
      local t_add = now() - t0
      local view = disks(vm)
      assert.equal(65, #view)
      local on0 = 0
      for _, d in ipairs(view) do
        if d.bus == "scsi0.0" then
          on0 = on0 + 1
          assert.equal(scratch.dir .. ("/fill%02d.raw"):format(d.lun), d.file)
        end
      end
      assert.equal(64, on0)
      assert.equal(scratch.dir .. "/fill64.raw", disk_at(vm, 1, 0).file)
      t0 = now()
      for _, id in ipairs(ids) do assert.is_true(ctl:unmap_from_guest(id)) end
      local t_remove = now() - t0
      assert_empty(vm)
      assert.equal(0, ctl:stats().used)
      print(("      [fill] 65 hot-adds %.1f ms each, 65 hot-removes %.1f ms each"):format(
        t_add / 65 * 1000, t_remove / 65 * 1000))
    end)

    it("gives no slot once every lun of every controller is taken", function()
      local ctl = new_ctl(vm, { luns = 2 })
      local ids = {}
      for i = 1, 4 do
        ids[i] = value(ctl:reserve({ host_path = raw(("full%d.raw"):format(i)) }))
        value(ctl:map_to_guest(ids[i]))
      end
      local id, _, code = ctl:reserve({ host_path = raw("full5.raw") })
      assert.is_nil(id)
      assert.equal("no_slots", code)
      assert.equal(4, #disks(vm))
      for _, x in ipairs(ids) do assert.is_true(ctl:unmap_from_guest(x)) end
      assert_empty(vm)
    end)

    it("shares one disk between two reservations", function()
      local ctl, _, guest = new_ctl(vm, { luns = 4 })
      local img = qcow2("shared.qcow2")
      local disk = { host_path = img, read_only = true }
      local id1 = value(ctl:reserve(disk, { read_only = true }))
      local id2 = value(ctl:reserve(disk, { read_only = true }))
      local id3 = value(ctl:reserve(disk, { partition = 1 }))
      assert.equal(value(ctl:map_to_guest(id1)), value(ctl:map_to_guest(id2)))
      assert.equal("/run/mounts/scsi/0_0_1", value(ctl:map_to_guest(id3)))
      assert.equal(1, #disks(vm))
      assert.equal(2, #guest.log)           -- two mounts, one hot-add
      assert.is_true(ctl:unmap_from_guest(id1))
      assert.equal(1, #disks(vm))
      assert.is_true(ctl:unmap_from_guest(id3))
      assert.equal(1, #disks(vm))
      assert.is_true(ctl:unmap_from_guest(id2))
      assert_empty(vm)
    end)

    it("fails cleanly for a missing image, leaving nothing in QEMU", function()
      local ctl = new_ctl(vm, { luns = 4 })
      local missing = scratch.dir .. "/does-not-exist.qcow2"
      local id = value(ctl:reserve({ host_path = missing }))
      local v, msg, code = ctl:map_to_guest(id)
      assert.is_nil(v)
      assert.equal("backend", code)
      assert.matches("add_scsi_disk", msg)
      assert.matches("image '[^']*does%-not%-exist%.qcow2': no such file or directory", msg)
      assert_empty(vm)
      assert.is_true(ctl:unmap_from_guest(id))
      assert.equal(0, ctl:stats().used)

      -- With the format forced, the same check runs first: nothing reaches QEMU.
      local ctl2 = new_ctl(vm, { luns = 4, backend = { format = "raw" } })
      id = value(ctl2:reserve({ host_path = missing }))
      v, msg, code = ctl2:map_to_guest(id)
      assert.is_nil(v)
      assert.equal("backend", code)
      assert.matches("no such file or directory", msg)
      assert_empty(vm)
      assert.is_true(ctl2:unmap_from_guest(id))
    end)

    it("fails at once, never hangs, for a FIFO or a directory as an image", function()
      local ctl = new_ctl(vm, { luns = 4 })
      local fifo = scratch:path("image.fifo")
      assert(sh("mkfifo " .. shquote(fifo)))
      for _, case in ipairs({ { fifo, "is a fifo, not a regular file" },
                              { scratch.dir, "is a directory, not a regular file" } }) do
        local id = value(ctl:reserve({ host_path = case[1] }))
        local t0 = now()
        local v, msg, code = ctl:map_to_guest(id)
        assert.is_nil(v)
        assert.equal("backend", code)
        assert.matches(case[2], msg, 1, true)
        assert.is_true(now() - t0 < 2)
        assert_empty(vm)
        assert.is_true(ctl:unmap_from_guest(id))
      end
    end)

    it("deletes the node again when device_add fails", function()
      -- The controller believes in 3 controllers; QEMU has 2.
      local ctl = new_ctl(vm, { controllers = 3, luns = 1 })
      local ids = {}
      for i = 1, 2 do
        ids[i] = value(ctl:reserve({ host_path = raw(("bus%d.raw"):format(i)) }))
        value(ctl:map_to_guest(ids[i]))
      end
      local id = value(ctl:reserve({ host_path = raw("bus3.raw") }))
      local v, msg, code = ctl:map_to_guest(id)
      assert.is_nil(v)
      assert.equal("backend", code)
      assert.matches("device_add: GenericError: Bus 'scsi2%.0' not found", msg)
      assert.equal(2, #disks(vm))
      assert.equal(2, #nodes(vm))
      for _, x in ipairs(ids) do assert.is_true(ctl:unmap_from_guest(x)) end
      assert.is_true(ctl:unmap_from_guest(id))
      assert_empty(vm)
    end)

    it("refuses ExtensibleVirtualDisk with a clear message", function()
      local ctl = new_ctl(vm, { luns = 4 })
      local id = value(ctl:reserve({ host_path = raw("evd.raw"), type = "ExtensibleVirtualDisk",
                                     evd_type = "space" }))
      local v, msg, code = ctl:map_to_guest(id)
      assert.is_nil(v)
      assert.equal("backend", code)
      assert.matches("not supported by the QEMU backend", msg)
      assert_empty(vm)
      assert.is_true(ctl:unmap_from_guest(id))
    end)

    it("attaches a PassThru host block device", function()
      local ctl = new_ctl(vm, { luns = 4 })
      -- A regular file is not a host block device: refused before QEMU.
      local id = value(ctl:reserve({ host_path = raw("notadev.raw"), type = "PassThru" }))
      local v, msg = ctl:map_to_guest(id)
      assert.is_nil(v)
      assert.matches("notadev.raw' is a file, not a block device", msg, 1, true)
      assert_empty(vm)
      assert.is_true(ctl:unmap_from_guest(id))

      local img = raw("loop.raw", 4 * 1024 * 1024)
      local attached = Q.with_loop_device(img, function(loopdev)
        id = value(ctl:reserve({ host_path = loopdev, type = "PassThru", read_only = true }))
        value(ctl:map_to_guest(id))
        local d = assert(disk_at(vm, 0, 0))
        assert.equal(loopdev, d.file)
        assert.equal("host_device", d.format)
        assert.is_true(d.ro)
        assert.is_true(ctl:unmap_from_guest(id))
        assert_empty(vm)
      end)
      if not attached then
        pending("no loop device available (needs root and losetup) to test a real PassThru attach")
      end
    end)

    it("works with the simulator's guest when the sim's VM half mirrors QEMU", function()
      local sim = require("scsictl.sim")
      local s = sim.new{ controllers = 2, luns_per_controller = 4 }
      local backend = vm:vm_backend()
      local tee = {
        add_scsi_disk = function(_, a, c, l)
          local ok, msg = backend:add_scsi_disk(a, c, l)
          if not ok then return nil, msg end
          return s:add_scsi_disk(a, c, l)
        end,
        remove_scsi_disk = function(_, c, l)
          local ok, msg = backend:remove_scsi_disk(c, l)
          if not ok then return nil, msg end
          return s:remove_scsi_disk(c, l)
        end,
      }
      local ctl = scsictl.new{ controllers = 2, luns_per_controller = 4, vm = tee, linux_guest = s }
      local ids = {}
      for i = 1, 5 do
        ids[i] = value(ctl:reserve({ host_path = raw(("sim%d.raw"):format(i)), read_only = i % 2 == 0 }))
        value(ctl:map_to_guest(ids[i]))
      end
      local view = disks(vm)
      local attached = s:attached()
      assert.equal(#attached, #view)
      for i, a in ipairs(attached) do
        assert.equal(("scsi%d.0"):format(a.controller), view[i].bus)
        assert.equal(a.lun, view[i].lun)
        assert.equal(a.host_path, view[i].file)
        assert.equal(a.read_only, view[i].ro)
      end
      for _, id in ipairs(ids) do assert.is_true(ctl:unmap_from_guest(id)) end
      assert.same({}, s:refusals())
      assert.is_true(s:is_empty())
      assert_empty(vm)
    end)
  end)

  describe("re-issued steps (recovery)", function()
    local vm
    before_each(function() vm = start(1) end)
    after_each(function() if vm then vm:stop() end end)

    it("treats an add that already took effect as success, and a repeated remove too", function()
      local backend = vm:vm_backend()
      local img = qcow2("again.qcow2")
      local att = { path = img, type = "VirtualDisk", read_only = true }
      assert.is_true(backend:add_scsi_disk(att, 0, 5))
      assert.is_true(backend:add_scsi_disk(att, 0, 5))
      assert.equal(1, #disks(vm))
      assert.equal(5, disks(vm)[1].lun)

      -- Another file (or the same file read-write) at that slot is refused.
      local v, msg = backend:add_scsi_disk({ path = raw("other.raw"), type = "VirtualDisk",
                                             read_only = false }, 0, 5)
      assert.is_nil(v)
      assert.matches("controller 0 lun 5 already holds '.*again%.qcow2'", msg)
      v = backend:add_scsi_disk({ path = img, type = "VirtualDisk", read_only = false }, 0, 5)
      assert.is_nil(v)
      assert.equal(1, #disks(vm))

      assert.is_true(backend:remove_scsi_disk(0, 5))
      assert_empty(vm)
      assert.is_true(backend:remove_scsi_disk(0, 5))   -- already removed
      assert_empty(vm)
    end)

    it("completes an add interrupted between blockdev-add and device_add", function()
      local backend = vm:vm_backend()
      local img = raw("half.raw")
      local node = backend:node_name(0, 2)
      -- Left over by an add interrupted after its first step: same file.
      assert(vm:qmp():execute("blockdev-add", { driver = "raw", ["node-name"] = node,
        ["read-only"] = false, file = { driver = "file", filename = img } }))
      assert.is_true(backend:add_scsi_disk({ path = img, type = "VirtualDisk", read_only = false }, 0, 2))
      local d = disk_at(vm, 0, 2)
      assert.equal(img, d.file)
      assert.is_true(backend:remove_scsi_disk(0, 2))
      -- Left over for another file: replaced.
      assert(vm:qmp():execute("blockdev-add", { driver = "raw", ["node-name"] = node,
        file = { driver = "file", filename = raw("stale.raw") } }))
      assert.is_true(backend:add_scsi_disk({ path = img, type = "VirtualDisk", read_only = true }, 0, 2))
      d = disk_at(vm, 0, 2)
      assert.equal(img, d.file)
      assert.is_true(d.ro)
      -- A remove interrupted after device_del: only the node is left.
      assert(vm:qmp():execute("device_del", { id = backend:device_id(0, 2) }))
      assert(vm:qmp():wait_event("DEVICE_DELETED", nil, 5))
      assert.same({ node }, nodes(vm))
      assert.is_true(backend:remove_scsi_disk(0, 2))
      assert_empty(vm)
    end)

    it("converges through the controller after a failed step is retried", function()
      local ctl, backend = new_ctl(vm, { luns = 4 })
      local img = raw("retry.raw")
      local id = value(ctl:reserve({ host_path = img }))
      -- The hot-add took effect in QEMU but its reply was "lost".
      local real = backend.add_scsi_disk
      backend.add_scsi_disk = function(self, ...)
        assert(real(self, ...))
        return nil, "reply lost"
      end
      assert.is_nil(ctl:map_to_guest(id))
      backend.add_scsi_disk = nil             -- back to the class method
      assert.equal("/run/mounts/scsi/0_0_0", value(ctl:map_to_guest(id)))
      assert.equal(1, #disks(vm))
      -- The same for the hot-remove.
      local real_rm = backend.remove_scsi_disk
      backend.remove_scsi_disk = function(self, ...)
        assert(real_rm(self, ...))
        return nil, "reply lost"
      end
      assert.is_nil(ctl:unmap_from_guest(id))
      backend.remove_scsi_disk = nil
      assert.is_true(ctl:unmap_from_guest(id))
      assert_empty(vm)
    end)
  end)

  describe("a QEMU that dies or hangs", function()
    it("gives backend errors, not hangs, once QEMU is killed mid-run", function()
      local vm = start(1)
      local ok, err = pcall(function()
        local ctl = new_ctl(vm, { luns = 8 })
        local a = value(ctl:reserve({ host_path = raw("k1.raw") }))
        value(ctl:map_to_guest(a))
        local b = value(ctl:reserve({ host_path = raw("k2.raw") }))
        assert.is_true(vm:kill("KILL"))
        assert.is_true(vm:wait(5), "QEMU survived SIGKILL")
        local t0 = now()
        local v, msg, code = ctl:map_to_guest(b)
        assert.is_nil(v)
        assert.equal("backend", code)
        -- The cause, once: how QEMU ended.
        assert.matches(("QEMU exited (pid %d, killed by signal 9)"):format(vm.pid), msg, 1, true)
        assert.is_nil(msg:find("closed.*closed"), msg)
        v, msg, code = ctl:unmap_from_guest(a)
        assert.is_nil(v)
        assert.equal("backend", code)
        assert.matches("remove_scsi_disk", msg)
        assert.matches("QEMU exited", msg, 1, true)
        assert.is_true(now() - t0 < 3, "backend calls took too long after QEMU died")
        assert.is_false(vm:alive())
      end)
      vm:stop()
      assert(ok, err)
    end)

    it("bounds every wait on a hung QEMU and recovers when it resumes", function()
      local vm = start(1)
      local ok, err = pcall(function()
        local backend = vm:vm_backend{ timeout = 0.5 }
        local img = raw("hang.raw")
        local att = { path = img, type = "VirtualDisk", read_only = false }
        assert.is_true(vm:kill("STOP"))
        local t0 = now()
        local v, msg = backend:add_scsi_disk(att, 0, 0)
        local took = now() - t0
        assert.is_true(vm:kill("CONT"))
        assert.is_nil(v)
        assert.matches("blockdev%-add: no answer within 0%.5s", msg)
        assert.is_true(took < 2.5, ("waited %.2fs"):format(took))
        -- QEMU did the blockdev-add late; its reply is discarded and the
        -- re-issued add completes.
        assert.is_true(backend:add_scsi_disk(att, 0, 0))
        assert.equal(img, disk_at(vm, 0, 0).file)
        assert.is_true(backend:remove_scsi_disk(0, 0))
        assert_empty(vm)
      end)
      vm:kill("CONT")
      vm:stop()
      assert(ok, err)
    end)
  end)

  describe("scsictl.qmp", function()
    local vm
    before_each(function() vm = start(1) end)
    after_each(function() if vm then vm:stop() end end)

    it("carries QMP's error class and description", function()
      local c = vm:qmp()
      local v, msg, class = c:execute("qom-get", { path = "/machine/peripheral/nope", property = "type" })
      assert.is_nil(v)
      assert.equal("DeviceNotFound", class)
      assert.equal("qom-get: DeviceNotFound: Device '/machine/peripheral/nope' not found", msg)
      v, msg, class = c:execute("no-such-command")
      assert.is_nil(v)
      assert.equal("CommandNotFound", class)
      assert.matches("no%-such%-command", msg)
      assert.is_truthy(c.greeting.version.qemu.major)
      assert.matches("^%d+%.%d+", assert(c:hmp("info version")))
    end)

    it("queues events that arrive between replies", function()
      local c = vm:qmp()
      local backend = vm:vm_backend()
      assert.is_true(backend:add_scsi_disk({ path = raw("ev.raw"), type = "VirtualDisk",
                                             read_only = false }, 0, 0))
      local id = backend:device_id(0, 0)
      assert(c:execute("device_del", { id = id }))
      -- Other commands meanwhile; the event arrives during one of them.
      local t0 = now()
      while #c:events("NONE") == 0 and now() - t0 < 0.3 do
        assert(c:execute("query-status"))
      end
      local ev = assert(c:wait_event("DEVICE_DELETED", function(e) return e.data.device == id end, 0))
      assert.equal(id, ev.data.device)
      assert.is_number(ev.timestamp.seconds)
      -- Nothing matching left: a bounded wait says so.
      local v, msg, class = c:wait_event("DEVICE_DELETED", nil, 0.1)
      assert.is_nil(v)
      assert.equal("Timeout", class)
      assert.matches("DEVICE_DELETED", msg)
      assert(c:execute("blockdev-del", { ["node-name"] = backend:node_name(0, 0) }))
      assert_empty(vm)
    end)

    it("connects to a QEMU by socket path, as with a user's own QEMU", function()
      vm:qmp():close()                  -- QEMU serves one QMP client at a time
      local backend = qemu.vm_backend{ qmp = vm.socket, timeout = 5 }
      local img = qcow2("own.qcow2")
      assert.is_true(backend:add_scsi_disk({ path = img, type = "VirtualDisk", read_only = true }, 0, 7))
      local c = assert(backend:client())
      local d = assert(qemu.scsi_disks(c))[1]
      assert.equal(7, d.lun)
      assert.equal(img, d.file)
      assert.is_true(d.ro)
      -- The connection breaks: the next call reconnects.
      c:close()
      assert.is_true(backend:remove_scsi_disk(0, 7))
      assert.same({}, assert(backend:disks()))
      backend:close()
      local c2, err = qmp.connect(vm.socket, { timeout = 2 })
      assert(c2, err)
      c2:close()
    end)
  end)
end)
