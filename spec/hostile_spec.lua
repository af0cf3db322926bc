-- Hostile and extreme inputs, table-driven.
--
-- Each row: name, guest ("linux" default / "windows"), and run(f) that does
-- something hostile to a fixture and returns what happened. The expected
-- outcome is one of
--   raise = "<text>"      the call raises an error containing <text>, and
--                         every observable state is unchanged;
--   fail  = "<code>"      the call returns nil, <string>, <code>, and the
--                         state is unchanged;
--   ok    = function(f, ...)  a documented (or, where the README is silent,
--                         the recorded) result; checked by the function.
-- After every row the fixture is torn down with good backends: every
-- reservation releases, only pins stay used, and every successful add /
-- mount of the recording backend has its remove / unmount (P3), so a row
-- cannot leave the controller corrupted without failing.
--
-- Results the README / docs/semantics.md do not spell out are marked
-- "(recorded)" in the row name: they pin down what the module does today.
local scsictl = require("scsictl")

local MiB = 1024 * 1024

---------------------------------------------------------------------------
-- fixture: a controller with a pin, a mapped id and a reserved id
---------------------------------------------------------------------------
local function recorder()
  local R = { log = {}, adds = 0, removes = 0, mounts = 0, unmounts = 0 }
  local function rec(name, ...)
    R.log[#R.log + 1] = { name, ... }
    local hook = R.hook and R.hook[name]
    if hook then
      return hook(...)
    end
  end
  local function counted(name, field, ...)
    local r = table.pack(rec(name, ...))
    local a, b = r[1], r[2]
    local failed = (r.n >= 1 and a == false) or (r.n >= 2 and a == nil and b ~= nil)
    if not failed then R[field] = R[field] + 1 end
    return table.unpack(r, 1, r.n)
  end
  R.vm = {
    add_scsi_disk = function(_, ...) return counted("add_scsi_disk", "adds", ...) end,
    remove_scsi_disk = function(_, ...) return counted("remove_scsi_disk", "removes", ...) end,
  }
  R.linux = {
    add_mapped_virtual_disk = function(_, ...) return counted("add_mapped_virtual_disk", "mounts", ...) end,
    remove_mapped_virtual_disk = function(_, ...) return counted("remove_mapped_virtual_disk", "unmounts", ...) end,
    remove_scsi_device = function(_, ...) return rec("remove_scsi_device", ...) end,
  }
  R.windows = {
    add_mapped_virtual_disk = function(_, ...) return counted("add_mapped_virtual_disk", "mounts", ...) end,
    add_mapped_virtual_disk_for_container_scratch = function(_, ...)
      return counted("add_mapped_virtual_disk_for_container_scratch", "mounts", ...)
    end,
    remove_mapped_virtual_disk = function(_, ...) return counted("remove_mapped_virtual_disk", "unmounts", ...) end,
  }
  return R
end

local function fixture(guest)
  local R = recorder()
  local opts = { controllers = 2, luns_per_controller = 4, vm = R.vm }
  if guest == "windows" then opts.windows_guest = R.windows else opts.linux_guest = R.linux end
  local ctl = scsictl.new(opts)
  assert(ctl:reserve_for_rootfs(1, 3))
  local id_a = assert(ctl:reserve({ host_path = "/img/a.vhdx" }, { options = { "ro" } }))
  assert(ctl:map_to_guest(id_a))
  local id_b = assert(ctl:reserve{ host_path = "/img/b.vhdx" })
  return { ctl = ctl, R = R, id_a = id_a, id_b = id_b, guest = guest or "linux", opts = opts }
end

local function ser(v, seen)
  if type(v) ~= "table" then return type(v) == "string" and ("%q"):format(v) or tostring(v) end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local ks = {}
  for k in pairs(v) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(ks) do out[#out + 1] = tostring(k) .. "=" .. ser(v[k], seen) end
  return "{" .. table.concat(out, ",") .. "}"
end

local function observe(ctl)
  return ser(ctl:stats()) .. ser(ctl:slots()) .. ser(ctl:reservations()) .. tostring(ctl)
end

-- Releases everything with good backends; checks P3 on the way out.
local function teardown(f)
  f.R.hook = nil
  local ctl = f.ctl
  local st = ctl:stats()
  if st.reservations > 0 and select(3, ctl:reserve({ host_path = "/probe" })) == "closed" then
    return -- a closed controller keeps its claims by design
  end
  for _, r in ipairs(ctl:reservations()) do
    local ok, msg = ctl:unmap_from_guest(r.id)
    assert(ok == true, "teardown: release of " .. r.id .. " failed: " .. tostring(msg))
  end
  st = ctl:stats()
  assert(st.reservations == 0 and st.disks == 0 and st.used == st.pinned,
    "P3: after teardown " .. ser(st))
  assert(f.R.adds == f.R.removes, ("P3: %d adds, %d removes"):format(f.R.adds, f.R.removes))
  assert(f.R.mounts == f.R.unmounts, ("P3: %d mounts, %d unmounts"):format(f.R.mounts, f.R.unmounts))
end

local function big(n, ch) return string.rep(ch or "x", n) end

local function assert_fail(code, r)
  assert(r[1] == nil and type(r[2]) == "string" and r[3] == code,
    ("expected nil, msg, %q; got %s"):format(code, ser(r)))
end

---------------------------------------------------------------------------
-- the rows
---------------------------------------------------------------------------
local rows = {}
local function row(t) rows[#rows + 1] = t end

-- spec §5 categories, at their extremes -----------------------------------
row{ name = "new: controllers = math.maxinteger", raise = "controllers must be an integer",
  run = function(f) return scsictl.new{ controllers = math.maxinteger, vm = f.R.vm, linux_guest = f.R.linux } end }
row{ name = "new: controllers = 2^32 (no wrap to 0)", raise = "controllers must be an integer",
  run = function(f) return scsictl.new{ controllers = 1 << 32, vm = f.R.vm, linux_guest = f.R.linux } end }
row{ name = "new: controllers = math.mininteger", raise = "controllers must be an integer",
  run = function(f) return scsictl.new{ controllers = math.mininteger, vm = f.R.vm, linux_guest = f.R.linux } end }
row{ name = "new: luns = 2^32 + 1 (no wrap to 1)", raise = "luns_per_controller must be an integer",
  run = function(f)
    return scsictl.new{ controllers = 1, luns_per_controller = (1 << 32) + 1, vm = f.R.vm, linux_guest = f.R.linux }
  end }
for _, v in ipairs({ 0 / 0, math.huge, -math.huge, 1.5, "2", true }) do
  row{ name = "new: controllers = " .. tostring(v), raise = "controllers must be an integer",
    run = function(f) return scsictl.new{ controllers = v, vm = f.R.vm, linux_guest = f.R.linux } end }
end
row{ name = "new: 1024.0 x 1024.0 (integer-valued floats, the slot limit)",
  ok = function(_, ctl)
    local st = ctl:stats()
    assert(st.slots == 1 << 20 and st.controllers == 1024 and st.luns_per_controller == 1024)
    local id = assert(ctl:reserve{ host_path = "/x" })
    assert(ctl:reservation(id).controller == 0)
    assert(ctl:unmap_from_guest(id))
  end,
  run = function(f)
    return scsictl.new{ controllers = 1024.0, luns_per_controller = 1024.0, vm = f.R.vm, linux_guest = f.R.linux }
  end }
row{ name = "new: 1025 x 1024 (one controller over the slot limit)", raise = "at most 1048576",
  run = function(f)
    return scsictl.new{ controllers = 1024, luns_per_controller = 1025, vm = f.R.vm, linux_guest = f.R.linux }
  end }
row{ name = "new: controllers = 0, reserve gives no_slots",
  ok = function(_, ctl)
    local r = table.pack(ctl:reserve{ host_path = "/x" })
    assert_fail("no_slots", r)
    assert(ctl:stats().used == 0)
  end,
  run = function(f) return scsictl.new{ controllers = 0, vm = f.R.vm, linux_guest = f.R.linux } end }

-- partitions at the integer edges
row{ name = "partition = 2^63-1 maps to its own guest path",
  ok = function(f, id)
    local path = assert(f.ctl:map_to_guest(id))
    local want = ("/run/mounts/scsi/0_2_%d"):format(math.maxinteger)
    assert(path == want, path)
    local e = f.R.log[#f.R.log]
    assert(e[1] == "add_mapped_virtual_disk" and e[2].partition == math.maxinteger and e[2].mount_path == want)
    assert(f.ctl:reservation(id).partition == math.maxinteger)
  end,
  run = function(f) return f.ctl:reserve({ host_path = "/img/c" }, { partition = math.maxinteger }) end }
row{ name = "partition = 2^63-1 on Windows", guest = "windows",
  ok = function(f, id)
    local path = assert(f.ctl:map_to_guest(id))
    assert(path == ("C:\\mounts\\scsi\\0_2_%d"):format(math.maxinteger), path)
  end,
  run = function(f) return f.ctl:reserve({ host_path = "/img/c" }, { partition = math.maxinteger }) end }
for _, v in ipairs({ math.mininteger, -1, 2 ^ 63, -(2 ^ 63), 0 / 0, math.huge, -math.huge, 0.5, "1", false }) do
  row{ name = "partition = " .. tostring(v), raise = "partition must be a non-negative integer",
    run = function(f) return f.ctl:reserve({ host_path = "/img/c" }, { partition = v }) end }
end
row{ name = "partition = 3.0 is partition 3 (shares with 3)",
  ok = function(f, id)
    local id2 = assert(f.ctl:reserve({ host_path = "/img/a.vhdx" }, { partition = 3 }))
    local p = assert(f.ctl:map_to_guest(id))
    local n = #f.R.log
    assert(f.ctl:map_to_guest(id2) == p and #f.R.log == n, "3.0 and 3 are one partition mount")
  end,
  run = function(f) return f.ctl:reserve({ host_path = "/img/a.vhdx" }, { partition = 3.0 }) end }

-- reserve_for_rootfs at the edges
for _, cl in ipairs({ { math.maxinteger, 0 }, { 0, math.maxinteger }, { 1 << 32, 0 }, { 0, (1 << 32) + 1 },
  { 2, 0 }, { 0, 4 } }) do
  row{ name = ("rootfs pin %d:%d is out_of_range (no wrap)"):format(cl[1], cl[2]), fail = "out_of_range",
    run = function(f) return f.ctl:reserve_for_rootfs(cl[1], cl[2]) end }
end
for _, cl in ipairs({ { math.mininteger, 0 }, { 0, -1 }, { 0 / 0, 0 }, { 0, math.huge }, { 0.5, 0 }, { "0", 0 } }) do
  row{ name = ("rootfs pin %s:%s raises"):format(tostring(cl[1]), tostring(cl[2])), raise = "bad argument",
    run = function(f) return f.ctl:reserve_for_rootfs(cl[1], cl[2]) end }
end
row{ name = "rootfs pin 1.0:0.0 (integer-valued floats) pins slot 1:0",
  ok = function(f, ok)
    assert(ok == true)
    local id = assert(f.ctl:reserve{ host_path = "/img/n" })
    local r = f.ctl:reservation(id)
    assert(not (r.controller == 1 and r.lun == 0))
  end,
  run = function(f) return f.ctl:reserve_for_rootfs(1.0, 0.0) end }

-- huge strings
row{ name = "1 MiB host path: reserved, mapped, passed whole to add_scsi_disk, messages bounded",
  ok = function(f, id)
    local path = big(MiB, "p")
    f.R.hook = { add_scsi_disk = function(att)
      assert(att.path == "/" .. path)
      return nil, big(MiB, "m")
    end }
    local r = table.pack(f.ctl:map_to_guest(id))
    assert_fail("backend", r)
    assert(#r[2] < 4096, "error message is bounded, got " .. #r[2])
    f.R.hook = nil
    assert(f.ctl:map_to_guest(id))
    assert(f.ctl:reservation(id).host_path == "/" .. path)
    -- a second 1 MiB path differing only in the last byte is another disk
    local id2 = assert(f.ctl:reserve{ host_path = "/" .. path:sub(1, -2) .. "q" })
    assert(f.ctl:reservation(id2).lun ~= f.ctl:reservation(id).lun or
      f.ctl:reservation(id2).controller ~= f.ctl:reservation(id).controller)
  end,
  run = function(f) return f.ctl:reserve{ host_path = "/" .. big(MiB, "p") } end }
row{ name = "10^5 mount options: passed in order, equal lists share, a change at the end mismatches",
  ok = function(f, id)
    local opts = {}
    for i = 1, 100000 do opts[i] = "o" .. i end
    assert(f.ctl:map_to_guest(id))
    local e = f.R.log[#f.R.log]
    assert(#e[2].options == 100000 and e[2].options[100000] == "o100000" and e[2].options[1] == "o1")
    local id2 = assert(f.ctl:reserve({ host_path = "/img/o" }, { options = opts }))
    opts[100000] = "changed"
    assert_fail("config_mismatch", table.pack(f.ctl:reserve({ host_path = "/img/o" }, { options = opts })))
    assert(f.ctl:unmap_from_guest(id2))
  end,
  run = function(f)
    local opts = {}
    for i = 1, 100000 do opts[i] = "o" .. i end
    return f.ctl:reserve({ host_path = "/img/o" }, { options = opts })
  end }
row{ name = "10^5 options with a number at the end", raise = "mount.options[100000] must be a string",
  run = function(f)
    local opts = {}
    for i = 1, 99999 do opts[i] = "o" end
    opts[100000] = 1
    return f.ctl:reserve({ host_path = "/img/o" }, { options = opts })
  end }
row{ name = "1 MiB filesystem and evd_type",
  ok = function(f, id)
    assert(f.ctl:map_to_guest(id))
    local add, mnt = f.R.log[#f.R.log - 1], f.R.log[#f.R.log]
    assert(add[2].evd_type == big(MiB, "e") and mnt[2].filesystem == big(MiB, "f"))
  end,
  run = function(f)
    return f.ctl:reserve({ host_path = "/img/fs", type = "ExtensibleVirtualDisk", evd_type = big(MiB, "e") },
      { filesystem = big(MiB, "f") })
  end }
row{ name = "1 MiB id string", raise = "reservation id must be a UUID",
  run = function(f) return f.ctl:map_to_guest(big(MiB, "a")) end }
row{ name = "1 MiB snapshot of garbage", fail = "invalid_snapshot",
  run = function(f) return scsictl.import(big(MiB, "g"), { vm = f.R.vm, linux_guest = f.R.linux }) end }
row{ name = "snapshot with a NUL inside", fail = "invalid_snapshot",
  run = function(f)
    local s = assert(f.ctl:save())
    return scsictl.import(s:sub(1, 30) .. "\0" .. s:sub(32), { vm = f.R.vm, linux_guest = f.R.linux })
  end }
row{ name = "state_file of 1 MiB (recorded: nil, msg, io)",
  ok = function(_, r, msg, code)
    assert(r == nil and code == "io" and type(msg) == "string" and #msg < 4096, tostring(code))
  end,
  run = function(f)
    return scsictl.new{ controllers = 1, vm = f.R.vm, linux_guest = f.R.linux, state_file = "/tmp/" .. big(MiB) }
  end }

-- strings differing only after a NUL byte: never accepted, never aliased
for _, field in ipairs({ "host_path", "evd_type" }) do
  row{ name = "disk." .. field .. " with a NUL", raise = "contains a NUL byte",
    run = function(f)
      local d = { host_path = "/img/a.vhdx" }
      d[field] = "/img/a.vhdx\0tail"
      return f.ctl:reserve(d)
    end }
end
row{ name = "mount.filesystem with a NUL", raise = "contains a NUL byte",
  run = function(f) return f.ctl:reserve({ host_path = "/img/a.vhdx" }, { filesystem = "ext4\0xfs" }) end }
row{ name = "mount.options[1] differing from the mapped one after a NUL", raise = "contains a NUL byte",
  run = function(f) return f.ctl:reserve({ host_path = "/img/a.vhdx" }, { options = { "ro\0rw" } }) end }
row{ name = "\"/img/a.vhdx\\0x\" never aliases /img/a.vhdx (raises, the real disk keeps one claim)",
  raise = "NUL",
  run = function(f)
    local r = f.ctl:slots()
    assert(r[1].host_path == "/img/a.vhdx" and r[1].reservations == 1)
    return f.ctl:reserve{ host_path = "/img/a.vhdx\0x" }
  end }

-- upper-case UUIDs
row{ name = "upper-case id maps (P6: same path, no callback) and releases",
  ok = function(f, path)
    assert(path == "/run/mounts/scsi/0_0_0", tostring(path))
    assert(f.ctl:reservation(f.id_a:upper()).id == f.id_a)
    assert(f.ctl:unmap_from_guest(f.id_a:upper()) == true)
    assert_fail("not_found", table.pack(f.ctl:unmap_from_guest(f.id_a)))
  end,
  run = function(f)
    local n = #f.R.log
    local p = f.ctl:map_to_guest(f.id_a:upper())
    assert(#f.R.log == n)
    return p
  end }
row{ name = "mixed-case unknown id", fail = "not_found",
  run = function() return scsictl.new{ controllers = 1, vm = {
    add_scsi_disk = print, remove_scsi_disk = print }, linux_guest = {
    add_mapped_virtual_disk = print, remove_mapped_virtual_disk = print, remove_scsi_device = print } }
    :map_to_guest("3F2504E0-4f89-41D3-9a0c-0305E82C3301") end }

-- backends
for _, v in ipairs({ 1, "add", true, {}, setmetatable({}, { __index = function() return print end }) }) do
  row{ name = "new: vm.add_scsi_disk = " .. type(v) .. " (not callable)", raise = "vm.add_scsi_disk must be a function",
    run = function(f)
      local vm = { add_scsi_disk = v, remove_scsi_disk = f.R.vm.remove_scsi_disk }
      return scsictl.new{ controllers = 1, vm = vm, linux_guest = f.R.linux }
    end }
end
row{ name = "a callable table as a callback is called with (table, backend, args)",
  ok = function(f, path)
    assert(path == "/run/mounts/scsi/0_1_0")
    assert(f.called == 1)
  end,
  run = function(f)
    local vm = f.R.vm
    local orig = vm.add_scsi_disk
    vm.add_scsi_disk = setmetatable({}, { __call = function(_, self, ...)
      f.called = (f.called or 0) + 1
      return orig(self, ...)
    end })
    local p = f.ctl:map_to_guest(f.id_b)
    vm.add_scsi_disk = orig
    return p
  end }
-- Sets f.R[backend][name] to v; f.restore() puts the original back.
local function replace_callback(f, backend, name, v)
  local t = f.R[backend]
  local orig = t[name]
  t[name] = v
  f.restore = function() t[name] = orig end
end
for _, v in ipairs({ false, 42, "add_scsi_disk", {} }) do
  row{ name = "callback replaced mid-run by a " .. type(v) .. ": backend failure, then retry works",
    ok = function(f, ...)
      assert_fail("backend", table.pack(...))
      assert((select(2, ...)):find("not callable", 1, true))
      assert(f.ctl:stats().disks == 2 and not f.ctl:slots()[2].busy)
      f.restore()
      assert(f.ctl:map_to_guest(f.id_b))
    end,
    run = function(f)
      replace_callback(f, "vm", "add_scsi_disk", v)
      return f.ctl:map_to_guest(f.id_b)
    end }
end
row{ name = "callback removed mid-run (unmount): release pending, retry converges",
  ok = function(f, ...)
    assert_fail("backend", table.pack(...))
    assert_fail("busy", table.pack(f.ctl:map_to_guest(f.id_a)))
    f.restore()
    assert(f.ctl:unmap_from_guest(f.id_a) == true)
  end,
  run = function(f)
    replace_callback(f, "linux", "remove_mapped_virtual_disk", nil)
    return f.ctl:unmap_from_guest(f.id_a)
  end }
row{ name = "backend whose __index raises at a step (recorded: the error propagates, disk not left busy)",
  ok = function(f, ok, err)
    assert(ok == false and tostring(err):find("lookup boom", 1, true), tostring(err))
    for _, s in ipairs(f.ctl:slots()) do assert(not s.busy) end
    f.broken = false
    assert(f.ctl:map_to_guest(f.id_b))
  end,
  run = function(f)
    local vm = f.R.vm
    local add = vm.add_scsi_disk
    vm.add_scsi_disk = nil
    setmetatable(vm, { __index = function(_, k)
      if f.broken and k == "add_scsi_disk" then error("lookup boom", 0) end
      return k == "add_scsi_disk" and add or nil
    end })
    f.broken = true
    return pcall(f.ctl.map_to_guest, f.ctl, f.id_b)
  end }

-- callbacks returning odd values: success unless spec §4 says failure
local odd = {
  { "true, 'x'", function() return true, "x" end, true },
  { "0", function() return 0 end, true },
  { "''", function() return "" end, true },
  { "a table", function() return {} end, true },
  { "a function", function() return print end, true },
  { "a coroutine", function() return coroutine.create(print) end, true },
  { "nil, nil", function() return nil, nil end, true },
  { "nil, nil, 'x'", function() return nil, nil, "x" end, true },
  { "10000 values", function() return table.unpack({}, 1, 10000) end, true },
  { "nil, false (a non-nil message)", function() return nil, false end, false },
  { "false, nil", function() return false, nil end, false },
  { "false, {}", function() return false, {} end, false },
  { "nil, 1 MiB message", function() return nil, big(MiB, "m") end, false },
  { "false, 0/0", function() return false, 0 / 0 end, false },
}
for _, o in ipairs(odd) do
  row{ name = "add_scsi_disk returns " .. o[1] .. (o[3] and " (success)" or " (failure)"),
    ok = function(f, ...)
      if o[3] then
        assert((...) == "/run/mounts/scsi/0_1_0", ser(table.pack(...)))
        assert(f.R.adds == 2)
      else
        assert_fail("backend", table.pack(...))
        assert(#(select(2, ...)) < 4096)
        assert(f.ctl:slots()[2].state == "reserved")
      end
    end,
    run = function(f)
      f.R.hook = { add_scsi_disk = o[2] }
      local r = table.pack(f.ctl:map_to_guest(f.id_b))
      f.R.hook = nil
      return table.unpack(r, 1, r.n)
    end }
end

-- raising non-string errors
local raised = {
  { "a table", { 1 }, "table value" },
  { "a table with __tostring", setmetatable({}, { __tostring = function() error("never called") end }), "table value" },
  { "nil", nil, "raised an error" },
  { "a number", 42, "42" },
  { "a boolean", false, "boolean value" },
  { "a function", print, "function value" },
  { "a coroutine", coroutine.create(print), "thread value" },
  { "a userdata", io.stdout, "userdata value" },
}
for _, e in ipairs(raised) do
  row{ name = "mount callback raises " .. e[1],
    ok = function(f, ...)
      local r = table.pack(...)
      assert_fail("backend", r)
      assert(r[2]:find(e[3], 1, true), r[2])
      assert(r[2]:find("/img/b.vhdx", 1, true), "message names the host path: " .. r[2])
      assert(f.ctl:slots()[2].state == "attached" and not f.ctl:slots()[2].busy)
    end,
    run = function(f)
      f.R.hook = { add_mapped_virtual_disk = function() error(e[2]) end }
      local r = table.pack(f.ctl:map_to_guest(f.id_b))
      f.R.hook = nil
      return table.unpack(r, 1, r.n)
    end }
end

-- closing from inside a callback
row{ name = "close() inside a callback: busy, the operation completes, close works after",
  ok = function(f, path)
    assert(path == "/run/mounts/scsi/0_1_0")
    assert(f.inner[1] == nil and f.inner[3] == "busy", ser(f.inner))
    assert(f.ctl:close() == true)
    assert_fail("closed", table.pack(f.ctl:unmap_from_guest(f.id_b)))
    assert(f.ctl:stats().reservations == 2, "introspection after close")
  end,
  run = function(f)
    f.R.hook = { add_scsi_disk = function() f.inner = table.pack(f.ctl:close()) end }
    return f.ctl:map_to_guest(f.id_b)
  end }
row{ name = "to-be-closed controller going out of scope inside a callback (recorded: stays open)",
  ok = function(f, path)
    assert(path == "/run/mounts/scsi/0_1_0")
    assert(f.ctl:unmap_from_guest(f.id_b) == true, "still open")
  end,
  run = function(f)
    f.R.hook = { add_scsi_disk = function()
      local c <close> = f.ctl -- luacheck: ignore
    end }
    return f.ctl:map_to_guest(f.id_b)
  end }
row{ name = "every reference dropped while a callback is suspended, then collected",
  ok = function(f)
    assert(f.ctl:stats().reservations == 2)
  end,
  run = function()
    local R = recorder()
    R.hook = { add_scsi_disk = function() coroutine.yield() end }
    do
      local c = scsictl.new{ controllers = 1, vm = R.vm, linux_guest = R.linux }
      local id = c:reserve{ host_path = "/x" }
      local co = coroutine.create(function() return c:map_to_guest(id) end)
      assert(coroutine.resume(co))
      assert(coroutine.status(co) == "suspended")
    end
    collectgarbage("collect")
    collectgarbage("collect")
    return true
  end }
row{ name = "a callback that collects garbage and unmaps the same id (busy)",
  ok = function(f, path)
    assert(path == "/run/mounts/scsi/0_1_0")
    assert(f.inner[3] == "busy", ser(f.inner))
  end,
  run = function(f)
    f.R.hook = { add_mapped_virtual_disk = function()
      collectgarbage("collect")
      f.inner = table.pack(f.ctl:unmap_from_guest(f.id_b))
    end }
    return f.ctl:map_to_guest(f.id_b)
  end }

-- argument tables with metatables
row{ name = "disk table whose host_path comes from __index (recorded: accepted)",
  ok = function(f, id) assert(f.ctl:reservation(id).host_path == "/img/meta") end,
  run = function(f) return f.ctl:reserve(setmetatable({}, { __index = { host_path = "/img/meta" } })) end }
row{ name = "disk table whose __index raises (recorded: that error propagates)", raise = "index boom",
  run = function(f) return f.ctl:reserve(setmetatable({}, { __index = function() error("index boom") end })) end }
row{ name = "disk table with an unknown raw key and an __index field (as many as the known fields)",
  raise = "unknown field 'bogus' in disk",
  run = function(f)
    local t = setmetatable({ host_path = "/img/meta2", bogus = 1 }, { __index = { read_only = true } })
    return f.ctl:reserve(t)
  end }
row{ name = "mount table with an unknown raw key and an __index field",
  raise = "unknown field 'bogus' in mount",
  run = function(f)
    local m = setmetatable({ partition = 1, bogus = true }, { __index = { read_only = true } })
    return f.ctl:reserve({ host_path = "/img/meta3" }, m)
  end }
row{ name = "options with a __len but no elements (recorded: raw length, empty list)",
  ok = function(f, id)
    assert(f.ctl:map_to_guest(id))
    assert(#f.R.log[#f.R.log][2].options == 0)
  end,
  run = function(f)
    local opts = setmetatable({}, { __len = function() return 5 end })
    return f.ctl:reserve({ host_path = "/img/len" }, { options = opts })
  end }
row{ name = "methods called on a non-controller self", raise = "bad argument #1",
  run = function(f) return f.ctl.reserve({}, { host_path = "/x" }) end }

---------------------------------------------------------------------------
-- the runner
---------------------------------------------------------------------------
describe("hostile inputs", function()
  for _, r in ipairs(rows) do
    it(r.name, function()
      local f = fixture(r.guest)
      local before = observe(f.ctl)
      local log_before = #f.R.log
      if r.raise then
        local ok, err = pcall(r.run, f)
        assert(not ok, "expected an error containing '" .. r.raise .. "', the call succeeded")
        assert(tostring(err):find(r.raise, 1, true), "error: " .. tostring(err))
        assert(observe(f.ctl) == before, "state changed by a raising call")
        assert(#f.R.log == log_before, "a raising call made a callback")
      elseif r.fail then
        local res = table.pack(r.run(f))
        assert_fail(r.fail, res)
        assert(observe(f.ctl) == before, "state changed by a failing call")
        assert(#f.R.log == log_before, "a failing call made a callback")
      else
        r.ok(f, r.run(f))
      end
      teardown(f)
      collectgarbage("collect")
    end)
  end

  it("tried every row", function()
    assert(#rows >= 90, "rows: " .. #rows)
    io.stderr:write(("hostile_spec: %d cases\n"):format(#rows))
  end)
end)
