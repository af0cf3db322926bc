-- Busted spec for the QEMU backend's per-disk options (attachment.options)
-- and its observe() call, against a real QEMU (launched as in qemu_spec.lua;
-- a QEMU that cannot start FAILS every test with the reason).
--
-- The backend is called directly, without a controller. What reached QEMU is
-- read back from QEMU: query-block, query-named-block-nodes, qom-get of the
-- device's properties and of the throttle group's limits; aio from QEMU's
-- process (a Linux AIO ring in its maps, an io_uring among its fds), since
-- QMP does not report it; discard and detect_zeroes from what QEMU does to
-- the image file when HMP's qemu-io discards or writes zeroes.
-- Images live in $TMPDIR (or /tmp), else build/ or /var/tmp: the first that
-- allows O_DIRECT (cache none).

local root = debug.getinfo(1, "S").source:match("^@(.-)spec/[^/]*$") or ""
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. root .. "spec/?.lua;" .. package.path

-- Starting QEMU (as qemu_spec.lua does), shell quoting and the images'
-- directory: support/qemu_vm.lua.
local Q = require("support.qemu_vm")
local okq = Q.okq
local uv = okq and require("luv") or nil

local start, shquote = Q.start, Q.shquote
local scratch = Q.scratch()

-- A raw image full of non-zero data (so that discards show as freed blocks).
local function image(name, size)
  size = size or 1024 * 1024
  local path = scratch:path(name)
  local f = assert(io.open(path, "wb"))
  f:write(string.rep("\xa5", size))
  f:close()
  return path
end

local function blocks(path) return assert(uv.fs_stat(path)).blocks end

---------------------------------------------------------------------------
-- QEMU's view.

local function exec(vm, cmd, args) return (assert(vm:qmp():execute(cmd, args))) end

local function named_nodes(vm) return exec(vm, "query-named-block-nodes", { flat = true }) end

local function node(vm, name)
  for _, n in ipairs(named_nodes(vm)) do
    if n["node-name"] == name then return n end
  end
end

-- The protocol ("file") node under a format node, found by its file.
local function file_node(vm, path)
  for _, n in ipairs(named_nodes(vm)) do
    if n.drv == "file" and n.file == path then return n end
  end
end

local function prop(vm, dev, p)
  return exec(vm, "qom-get", { path = "/machine/peripheral/" .. dev, property = p })
end

local function block_entry(vm, dev)
  for _, b in ipairs(exec(vm, "query-block")) do
    if b.qdev == dev then return b end
  end
end

-- Everything in QEMU named with our prefix: nodes, objects, devices, blocks.
local function ours(vm, prefix)
  prefix = prefix or "scsictl"
  local out = {}
  local function mine(name) return type(name) == "string" and name:sub(1, #prefix + 1) == prefix .. "-" end
  for _, n in ipairs(named_nodes(vm)) do
    if mine(n["node-name"]) then out[#out + 1] = "node " .. n["node-name"] end
  end
  for _, where in ipairs({ "/objects", "/machine/peripheral" }) do
    for _, e in ipairs(exec(vm, "qom-list", { path = where })) do
      if mine(e.name) then out[#out + 1] = where .. "/" .. e.name end
    end
  end
  for _, b in ipairs(exec(vm, "query-block")) do
    if mine(b.qdev) then out[#out + 1] = "block " .. b.qdev end
  end
  table.sort(out)
  return out
end

local function assert_clean(vm) assert.same({}, ours(vm)) end

local function count_lines(cmd)
  local p = assert(io.popen(cmd))
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

local function aio_rings(vm) return count_lines(("grep -F '/[aio]' /proc/%d/maps"):format(vm.pid)) end
local function io_urings(vm)
  return count_lines(("ls -l /proc/%d/fd | grep -F io_uring"):format(vm.pid))
end

local function add(backend, path, options, lun, kind)
  return backend:add_scsi_disk({ path = path, type = kind or "VirtualDisk", read_only = false,
                                 options = options }, 0, lun or 0)
end

local function ok(v, msg) assert(v, "expected success, got " .. tostring(msg)) return v end

---------------------------------------------------------------------------

describe("scsictl.qemu per-disk options", function()
  local vm, backend

  -- cache none opens images with O_DIRECT, which tmpfs refuses: the images
  -- go to the first of these directories where a direct write works.
  local function direct_ok(d)
    return d ~= "" and os.execute("dd if=/dev/zero of=" .. shquote(d .. "/.scsictl-direct-probe")
      .. " bs=4096 count=1 oflag=direct 2>/dev/null && rm -f " .. shquote(d .. "/.scsictl-direct-probe"))
  end

  setup(function()
    local base
    for _, d in ipairs{ os.getenv("TMPDIR") or "/tmp", (root ~= "" and root or "./") .. "build", "/var/tmp" } do
      if not base and direct_ok(d) then base = d end
    end
    assert(base, "no directory allows O_DIRECT writes (TMPDIR, build/, /var/tmp): cache none cannot be tested")
    scratch:create("scsictl-opts", base)
  end)

  teardown(function() scratch:remove() end)

  before_each(function()
    vm = start(1)
    backend = vm:vm_backend()
  end)
  after_each(function() if vm then vm:stop() end end)

  it("cache: each mode sets cache.direct/no-flush on both nodes and the device's write-cache", function()
    local want = {   -- mode -> direct, no-flush, write-cache
      none = { true, false, "on" }, writeback = { false, false, "on" },
      writethrough = { false, false, "off" }, directsync = { true, false, "off" },
      unsafe = { false, true, "on" },
    }
    local lun = 0
    for mode, w in pairs(want) do
      local path = image("cache-" .. mode .. ".raw")
      ok(add(backend, path, { cache = mode }, lun))
      for _, n in ipairs({ node(vm, backend:node_name(0, lun)), file_node(vm, path) }) do
        assert.equal(w[1], n.cache.direct, mode .. " direct on " .. n.drv)
        assert.equal(w[2], n.cache["no-flush"], mode .. " no-flush on " .. n.drv)
      end
      assert.equal(w[3], prop(vm, backend:device_id(0, lun), "write-cache"), mode)
      -- query-block's writeback is what the guest sees: the device's write cache.
      assert.equal(w[3] == "on", block_entry(vm, backend:device_id(0, lun)).inserted.cache.writeback)
      lun = lun + 1
    end
    -- Without the option QEMU's defaults stay: no O_DIRECT, write-cache auto.
    ok(add(backend, image("cache-default.raw"), nil, lun))
    assert.is_false(node(vm, backend:node_name(0, lun)).cache.direct)
    assert.equal("auto", prop(vm, backend:device_id(0, lun), "write-cache"))
    for l = 0, lun do ok(backend:remove_scsi_disk(0, l)) end
    assert_clean(vm)
  end)

  it("aio: threads, native (with O_DIRECT) and io_uring where this QEMU has it", function()
    ok(add(backend, image("aio-threads.raw"), { aio = "threads" }, 0))
    assert.equal(0, aio_rings(vm))
    ok(add(backend, image("aio-native.raw"), { aio = "native", cache = "none" }, 1))
    assert.is_true(aio_rings(vm) > 0, "no Linux AIO ring in QEMU's maps after aio native")

    local modes = ok(backend:aio_modes())
    assert.is_true(modes.threads and modes.native)
    local before = io_urings(vm)
    local v, msg = add(backend, image("aio-uring.raw"), { aio = "io_uring" }, 2)
    if modes.io_uring then
      ok(v, msg)
      assert.is_true(io_urings(vm) > before, "no new io_uring in QEMU's fds after aio io_uring")
      ok(backend:remove_scsi_disk(0, 2))
    else
      assert.is_nil(v)
      assert.equal("add_scsi_disk: option aio: this QEMU has no io_uring", msg)
    end
    -- A QEMU without it (the capability is cached per backend).
    local old = vm:vm_backend()
    old._aio = { threads = true, native = true }
    v, msg = add(old, image("aio-old.raw"), { aio = "io_uring" }, 3)
    assert.is_nil(v)
    assert.equal("add_scsi_disk: option aio: this QEMU has no io_uring", msg)

    for l = 0, 1 do ok(backend:remove_scsi_disk(0, l)) end
    assert_clean(vm)
  end)

  it("discard and detect_zeroes: what QEMU does to the image", function()
    local function qemu_io(dev, cmd)
      local out = assert(vm:qmp():hmp(("qemu-io -d %s %q"):format(dev, cmd)))
      assert.is_nil(out:find("error", 1, true), out)
      assert.is_nil(out:find("failed", 1, true), out)
    end
    -- discard unmap: a guest discard frees the file's blocks; ignore: kept.
    local freed, kept = image("discard-unmap.raw"), image("discard-ignore.raw")
    local full = blocks(freed)
    ok(add(backend, freed, { discard = "unmap" }, 0))
    ok(add(backend, kept, { discard = "ignore" }, 1))
    qemu_io(backend:device_id(0, 0), "discard 0 1M")
    qemu_io(backend:device_id(0, 1), "discard 0 1M")
    assert.is_true(blocks(freed) < full / 2, "discard unmap freed nothing")
    assert.equal(full, blocks(kept))

    -- detect_zeroes unmap: written zeroes become holes; off: written as data.
    local zu, zo = image("zeroes-unmap.raw"), image("zeroes-off.raw")
    ok(add(backend, zu, { detect_zeroes = "unmap", discard = "unmap" }, 2))
    ok(add(backend, zo, { detect_zeroes = "off", discard = "unmap" }, 3))
    ok(add(backend, image("zeroes-on.raw"), { detect_zeroes = "on" }, 4))
    assert.equal("unmap", node(vm, backend:node_name(0, 2)).detect_zeroes)
    assert.equal("off", node(vm, backend:node_name(0, 3)).detect_zeroes)
    assert.equal("on", node(vm, backend:node_name(0, 4)).detect_zeroes)
    qemu_io(backend:device_id(0, 2), "write -P 0 0 1M")
    qemu_io(backend:device_id(0, 3), "write -P 0 0 1M")
    assert.is_true(blocks(zu) < full / 2, "detect_zeroes unmap left the zeroes allocated")
    assert.equal(full, blocks(zo))

    for l = 0, 4 do ok(backend:remove_scsi_disk(0, l)) end
    assert_clean(vm)
  end)

  it("serial and wwn reach the scsi-hd device", function()
    local dev = backend:device_id(0, 0)
    ok(add(backend, image("id1.raw"), { serial = "SCSICTL-0001_a.b:c", wwn = "0x5000c50000000000" }, 0))
    assert.equal("SCSICTL-0001_a.b:c", prop(vm, dev, "serial"))
    assert.equal(0x5000c50000000000, prop(vm, dev, "wwn"))
    -- Decimal, and a value QMP's JSON (doubles) cannot carry exactly: QEMU's
    -- own hex rendering in info qtree shows every digit arrived.
    ok(add(backend, image("id2.raw"), { wwn = "5764824129537754068" }, 1))
    ok(add(backend, image("id3.raw"), { wwn = "0x6000C500A1B2C3D4" }, 2))
    local qtree = assert(vm:qmp():hmp("info qtree"))
    assert.matches("wwn = %d+ %(0x5000c500a1b2c3d4%)", qtree)
    assert.matches("wwn = %d+ %(0x6000c500a1b2c3d4%)", qtree)
    -- An integer from a direct caller.
    ok(add(backend, image("id4.raw"), { wwn = 0x5000c50000000001 + 1, serial = 42 }, 3))
    assert.equal("42", prop(vm, backend:device_id(0, 3), "serial"))
    for l = 0, 3 do ok(backend:remove_scsi_disk(0, l)) end
    assert_clean(vm)
  end)

  it("I/O limits: a throttle group and a throttle node the device uses", function()
    local path = image("limits.raw")
    ok(add(backend, path, { bps = "1048576", iops_rd = "200", iops_wr = 100 }, 4))
    local tg, tnode = backend:group_id(0, 4), backend:throttle_name(0, 4)
    assert.equal("scsictl-tg-c0-l4", tg)
    assert.equal("scsictl-throttle-c0-l4", tnode)
    local limits = exec(vm, "qom-get", { path = "/objects/" .. tg, property = "limits" })
    assert.equal(1048576, limits["bps-total"])
    assert.equal(200, limits["iops-read"])
    assert.equal(100, limits["iops-write"])
    assert.equal(0, limits["bps-read"])
    assert.equal(0, limits["iops-total"])
    local t = assert(node(vm, tnode))
    assert.equal("throttle", t.drv)
    assert.equal(tnode, prop(vm, backend:device_id(0, 4), "drive"))
    assert.equal("throttle", block_entry(vm, backend:device_id(0, 4)).inserted.drv)
    -- qemu.scsi_disks looks through the throttle node to the image.
    local d = assert(backend:disks())[1]
    assert.equal(path, d.file)
    assert.equal("raw", d.format)
    assert.is_true(d.throttled)

    ok(add(backend, image("limits2.raw"), { bps_rd = "1000", bps_wr = "2000", iops = "50" }, 5))
    limits = exec(vm, "qom-get", { path = "/objects/" .. backend:group_id(0, 5), property = "limits" })
    assert.same({ 1000, 2000, 50 }, { limits["bps-read"], limits["bps-write"], limits["iops-total"] })

    ok(backend:remove_scsi_disk(0, 4))
    ok(backend:remove_scsi_disk(0, 5))
    assert_clean(vm)
  end)

  describe("a bad option or value", function()
    local cases = {
      { { foo = "1" }, "add_scsi_disk: unknown disk option 'foo'" },
      { { cache = "fast" },
        "add_scsi_disk: option cache: 'fast' is not one of none, writeback, writethrough, directsync, unsafe" },
      { { aio = "posix" }, "add_scsi_disk: option aio: 'posix' is not one of threads, native, io_uring" },
      { { discard = "on" }, "add_scsi_disk: option discard: 'on' is not one of ignore, unmap" },
      { { detect_zeroes = "yes" }, "add_scsi_disk: option detect_zeroes: 'yes' is not one of off, on, unmap" },
      { { detect_zeroes = "unmap" }, "add_scsi_disk: option detect_zeroes: unmap needs discard unmap" },
      { { detect_zeroes = "unmap", discard = "ignore" }, "option detect_zeroes: unmap needs discard unmap" },
      { { aio = "native" },
        "add_scsi_disk: option aio: native needs cache none or directsync (O_DIRECT), not the default writeback" },
      { { aio = "native", cache = "unsafe" },
        "option aio: native needs cache none or directsync (O_DIRECT), not unsafe" },
      { { bps = "0" }, "add_scsi_disk: option bps: '0' is not a positive integer" },
      { { bps_rd = "-5" }, "option bps_rd: '-5' is not a positive integer" },
      { { iops = "1e3" }, "option iops: '1e3' is not a positive integer" },
      { { iops_wr = "fast" }, "option iops_wr: 'fast' is not a positive integer" },
      { { bps_wr = "100000000000000" },
        "option bps_wr: '100000000000000' is above the largest limit, 99999999999999" },
      { { bps = "1000", bps_rd = "10" }, "add_scsi_disk: options bps and bps_rd exclude each other" },
      { { iops = "10", iops_wr = "10" }, "add_scsi_disk: options iops and iops_wr exclude each other" },
      { { serial = string.rep("x", 37) }, "add_scsi_disk: option serial: '" .. string.rep("x", 37)
        .. "' is not 1 to 36 printable ASCII characters without spaces" },
      { { serial = "a b" }, "option serial: 'a b' is not 1 to 36" },
      { { serial = "" }, "option serial: '' is not 1 to 36" },
      { { serial = "a\nb" }, "option serial: 'a\\x0ab' is not" },
      { { wwn = "0x5000" }, "add_scsi_disk: option wwn: '0x5000' is not a 64-bit number" },
      { { wwn = "18446744073709551616" }, "option wwn: '18446744073709551616' is not a 64-bit number" },
      { { wwn = "0" }, "option wwn: 0 is not a WWN" },
      { { wwn = "0xzz00000000000000" }, "option wwn: '0xzz00000000000000' is not a 64-bit number" },
      { { cache = {} }, "add_scsi_disk: option cache: a table is not a string, an integer or a boolean" },
      { { bps = 1.5 }, "option bps: a float is not a string, an integer or a boolean" },
      { "none", "add_scsi_disk: attachment.options must be a table" },
      { { [1] = "cache" }, "add_scsi_disk: disk option names must be strings, not number" },
    }
    it("fails naming it, before anything reaches QEMU", function()
      local path = image("bad.raw")
      for _, case in ipairs(cases) do
        local v, msg = add(backend, path, case[1], 1)
        assert.is_nil(v)
        assert.is_string(msg)
        assert.is_truthy(msg:find(case[2], 1, true), ("%q does not contain %q"):format(msg, case[2]))
        assert_clean(vm)
      end
      -- The largest 64-bit WWN is fine, and so is the largest limit.
      ok(add(backend, path, { wwn = "18446744073709551615", bps = "99999999999999" }, 1))
      ok(backend:remove_scsi_disk(0, 1))
      assert_clean(vm)
    end)

    it("a QMP step failing later takes away the node, throttle node and group", function()
      -- The backend believes in a controller 3; QEMU has one controller.
      local v, msg = backend:add_scsi_disk({ path = image("late.raw"), type = "VirtualDisk",
        options = { bps = "1000", cache = "none", serial = "late" } }, 3, 0)
      assert.is_nil(v)
      assert.matches("device_add: GenericError: Bus 'scsi3%.0' not found", msg)
      assert_clean(vm)
      -- A slot held by another disk: the group this add made goes again.
      ok(add(backend, image("holder.raw"), nil, 2))
      v, msg = add(backend, image("intruder.raw"), { iops = "10" }, 2)
      assert.is_nil(v)
      assert.matches("controller 0 lun 2 already holds '.*holder%.raw' %(raw%) in QEMU, without a throttle node", msg)
      assert.same({ "/machine/peripheral/scsictl-disk-c0-l2", "block scsictl-disk-c0-l2",
                    "node scsictl-node-c0-l2" }, ours(vm))
      ok(backend:remove_scsi_disk(0, 2))
      assert_clean(vm)
    end)

    it("PassThru under scsi-block refuses every option, naming it", function()
      local pt = vm:vm_backend{ passthru_driver = "scsi-block" }
      local v, msg = add(pt, "/dev/null", { serial = "x" }, 0, "PassThru")
      assert.is_nil(v)
      assert.matches("option serial: not applied to a PassThru disk under scsi%-block", msg)
      assert_clean(vm)
    end)
  end)

  it("a PassThru host device under scsi-hd takes serial, wwn, cache, aio and limits", function()
    local img = image("pt.raw", 4 * 1024 * 1024)
    local attached = Q.with_loop_device(img, function(loopdev)
      ok(add(backend, loopdev, { serial = "pt1", wwn = "0x5000c50000000002", cache = "directsync",
                                  aio = "native", bps = "4096000" }, 0, "PassThru"))
      local n = assert(node(vm, backend:node_name(0, 0)))
      assert.equal("host_device", n.drv)
      assert.is_true(n.cache.direct)
      local dev = backend:device_id(0, 0)
      assert.equal("pt1", prop(vm, dev, "serial"))
      assert.equal("off", prop(vm, dev, "write-cache"))
      assert.equal(backend:throttle_name(0, 0), prop(vm, dev, "drive"))
      ok(backend:remove_scsi_disk(0, 0))
      assert_clean(vm)
    end)
    if not attached then pending("no loop device available (needs root and losetup)") end
  end)

  it("through a controller: the disk's options reach QEMU, other options on its path are refused", function()
    local scsictl = require("scsictl")
    local guest = { add_mapped_virtual_disk = function() return true end,
                    remove_mapped_virtual_disk = function() return true end,
                    remove_scsi_device = function() return true end }
    local ctl = assert(scsictl.new{ controllers = 1, luns_per_controller = 8, vm = backend, linux_guest = guest })
    local path = image("ctl.raw")
    local id = ok(ctl:reserve{ host_path = path, options = { cache = "directsync", serial = "ctl-1", bps = 2097152 } })
    ok(ctl:map_to_guest(id))
    local dev = backend:device_id(0, 0)
    assert.equal("ctl-1", prop(vm, dev, "serial"))
    assert.is_true(node(vm, backend:node_name(0, 0)).cache.direct)
    assert.equal(2097152, exec(vm, "qom-get", { path = "/objects/" .. backend:group_id(0, 0),
                                               property = "limits" })["bps-total"])
    assert.same({ bps = "2097152", cache = "directsync", serial = "ctl-1" }, ctl:slots()[1].options)
    -- sharing the disk with other options (or none) is refused before QEMU is asked
    local _, msg, code = ctl:reserve{ host_path = path, options = { cache = "none" } }
    assert.equal("config_mismatch", code, msg)
    _, _, code = ctl:reserve{ host_path = path }
    assert.equal("config_mismatch", code)
    -- a bad option fails the map by name and leaves QEMU clean; the id can be released
    local bad = ok(ctl:reserve{ host_path = image("bad.raw"), options = { cache = "fast" } })
    _, msg, code = ctl:map_to_guest(bad)
    assert.equal("backend", code)
    assert.truthy(msg:find("option cache: 'fast'", 1, true), msg)
    ok(ctl:unmap_from_guest(bad))
    ok(ctl:unmap_from_guest(id))
    assert_clean(vm)
  end)

  it("remove takes everything away and is idempotent", function()
    ok(add(backend, image("rm.raw"), { bps = "5000", serial = "rm", cache = "writethrough" }, 6))
    assert.equal(5, #ours(vm))     -- device, its block backend, node, throttle node, group
    ok(backend:remove_scsi_disk(0, 6))
    assert_clean(vm)
    ok(backend:remove_scsi_disk(0, 6))
    assert_clean(vm)
  end)

  it("a re-issued add with the same options succeeds; other options at that slot fail", function()
    local path = image("again.raw")
    local options = { bps = "1048576", serial = "again", wwn = "0x5000c500a1b2c3d4",
                      cache = "none", detect_zeroes = "on", discard = "unmap" }
    ok(add(backend, path, options, 7))
    local before = ours(vm)
    ok(add(backend, path, options, 7))
    assert.same(before, ours(vm))
    local v, msg = add(backend, path, { bps = "1048576", serial = "other", wwn = "0x5000c500a1b2c3d4",
                                       cache = "writeback", detect_zeroes = "on", discard = "unmap" }, 7)
    assert.is_nil(v)
    -- (none and writeback differ in O_DIRECT only: the write cache is on in both)
    assert.matches("controller 0 lun 7 already holds '.*again%.raw' %(raw%) in QEMU, "
      .. "unlike this add in: cache, serial$", msg)
    v, msg = add(backend, path, { bps = "1048576", serial = "again", wwn = "0x5000c500a1b2c3d4",
                                  cache = "directsync", detect_zeroes = "on", discard = "unmap" }, 7)
    assert.is_nil(v)
    assert.matches("unlike this add in: write%-cache$", msg)
    v, msg = add(backend, path, { bps = "2048", serial = "again", wwn = "0x5000c500a1b2c3d4",
                                  cache = "none", detect_zeroes = "on", discard = "unmap" }, 7)
    assert.is_nil(v)
    assert.matches("unlike this add in: limits$", msg)
    v, msg = add(backend, path, { bps = "1048576", serial = "again", wwn = "0x5000c500a1b2c3d5",
                                  cache = "none", detect_zeroes = "on", discard = "unmap" }, 7)
    assert.is_nil(v)
    assert.matches("unlike this add in: wwn$", msg)
    assert.same(before, ours(vm))

    -- QEMU's view of this disk, for the record; its top (throttle) node
    -- carries the cache mode and zero detection too.
    local entry = block_entry(vm, backend:device_id(0, 7))
    assert.same({ true, false, true }, { entry.inserted.cache.direct, entry.inserted.cache["no-flush"],
                                         entry.inserted.cache.writeback })
    assert.equal("on", entry.inserted.detect_zeroes)
    local cjson = require("cjson")
    io.stderr:write("\n[qemu_options] query-block entry of a disk with options ",
      cjson.encode(options), ":\n", cjson.encode(entry), "\n",
      "[qemu_options] its format node: ", cjson.encode(node(vm, backend:node_name(0, 7))), "\n",
      "[qemu_options] its throttle group's limits: ", cjson.encode(exec(vm, "qom-get",
        { path = "/objects/" .. backend:group_id(0, 7), property = "limits" })), "\n",
      "[qemu_options] its device: serial ", prop(vm, backend:device_id(0, 7), "serial"),
      ", write-cache ", prop(vm, backend:device_id(0, 7), "write-cache"), "\n")
    ok(backend:remove_scsi_disk(0, 7))
    assert_clean(vm)
  end)

  describe("observe()", function()
    it("reports the slots with our prefix: devices and leftovers", function()
      assert.same({}, ok(backend:observe()))
      local a, b = image("obs-a.raw"), image("obs-b.raw")
      ok(add(backend, a, { iops = "100" }, 3))
      ok(add(backend, b, nil, 1))
      -- Another backend's names are not ours.
      local other = vm:vm_backend{ prefix = "other" }
      ok(add(other, image("obs-other.raw"), nil, 2))
      assert.same({
        { controller = 0, lun = 1, device = true, file = b, group = false,
          nodes = { "scsictl-node-c0-l1" } },
        { controller = 0, lun = 3, device = true, file = a, group = true,
          nodes = { "scsictl-node-c0-l3", "scsictl-throttle-c0-l3" } },
      }, ok(backend:observe()))
      ok(backend:remove_scsi_disk(0, 1))
      ok(backend:remove_scsi_disk(0, 3))
      assert.same({}, ok(backend:observe()))
      ok(other:remove_scsi_disk(0, 2))
    end)

    it("reports the leftovers of an interrupted add, and remove_scsi_disk clears them", function()
      local c = vm:qmp()
      local path = image("half.raw")
      -- An add interrupted after its node, throttle node and group (by hand, our naming).
      assert(c:execute("object-add", { ["qom-type"] = "throttle-group", id = backend:group_id(0, 5),
                                       limits = { ["bps-total"] = 1000 } }))
      assert(c:execute("blockdev-add", { driver = "raw", ["node-name"] = backend:node_name(0, 5),
                                         file = { driver = "file", filename = path } }))
      assert(c:execute("blockdev-add", { driver = "throttle", ["node-name"] = backend:throttle_name(0, 5),
        ["throttle-group"] = backend:group_id(0, 5), file = backend:node_name(0, 5) }))
      -- Only a group left at another slot.
      assert(c:execute("object-add", { ["qom-type"] = "throttle-group", id = backend:group_id(1, 0),
                                       limits = { ["iops-total"] = 10 } }))
      assert.same({
        { controller = 0, lun = 5, device = false, file = path, group = true,
          nodes = { "scsictl-node-c0-l5", "scsictl-throttle-c0-l5" } },
        { controller = 1, lun = 0, device = false, group = true, nodes = {} },
      }, ok(backend:observe()))
      ok(backend:remove_scsi_disk(0, 5))
      ok(backend:remove_scsi_disk(1, 0))
      assert.same({}, ok(backend:observe()))
      assert_clean(vm)
    end)

    it("an add over the leftovers of an interrupted one replaces them", function()
      local c = vm:qmp()
      assert(c:execute("object-add", { ["qom-type"] = "throttle-group", id = backend:group_id(0, 0),
                                       limits = { ["bps-total"] = 1 } }))
      assert(c:execute("blockdev-add", { driver = "raw", ["node-name"] = backend:node_name(0, 0),
                                         file = { driver = "file", filename = image("stale.raw") } }))
      local path = image("fresh.raw")
      ok(add(backend, path, { bps = "777" }, 0))
      local s = ok(backend:observe())[1]
      assert.same({ true, path, true }, { s.device, s.file, s.group })
      assert.equal(777, exec(vm, "qom-get", { path = "/objects/" .. backend:group_id(0, 0),
                                             property = "limits" })["bps-total"])
      -- And the other way round: leftovers with a throttle, an add without limits.
      ok(backend:remove_scsi_disk(0, 0))
      assert(c:execute("object-add", { ["qom-type"] = "throttle-group", id = backend:group_id(0, 0),
                                       limits = { ["bps-total"] = 1 } }))
      assert(c:execute("blockdev-add", { driver = "raw", ["node-name"] = backend:node_name(0, 0),
                                         file = { driver = "file", filename = path } }))
      assert(c:execute("blockdev-add", { driver = "throttle", ["node-name"] = backend:throttle_name(0, 0),
        ["throttle-group"] = backend:group_id(0, 0), file = backend:node_name(0, 0) }))
      ok(add(backend, path, nil, 0))
      assert.same({ { controller = 0, lun = 0, device = true, file = path, group = false,
                      nodes = { "scsictl-node-c0-l0" } } }, ok(backend:observe()))
      ok(backend:remove_scsi_disk(0, 0))
      assert_clean(vm)
    end)
  end)
end)
