-- Malformed arguments raise "bad argument #N to 'name' (...)" and change
-- nothing (spec §5 "Malformed arguments raise"). Table-driven: each row is
-- a description, the method, the argument position expected in the message,
-- and a function building the argument list from a prepared fixture.
local H = require("helper")

-- A controller with some state, so that a change would show:
-- a pinned slot, a mapped disk (id_a), a reserved disk (id_b).
local function fixture()
  local ctl, R = H.new_ctl{ controllers = 2, luns = 4 }
  assert.is_true(ctl:reserve_for_rootfs(1, 3))
  local id_a = H.value(ctl:reserve({ host_path = "/img/a.vhdx" }, { options = { "ro" } }))
  H.value(ctl:map_to_guest(id_a))
  local id_b = H.value(ctl:reserve{ host_path = "/img/b.vhdx" })
  R:clear()
  return { ctl = ctl, R = R, id_a = id_a, id_b = id_b }
end

local function nul_into(s, at)
  return s:sub(1, at - 1) .. "\0" .. s:sub(at + 1)
end

-- Malformed ids built from a real id, so that a lax parser would find it.
local function bad_ids(real)
  return {
    { "no argument", nil, true },
    { "nil", function() return nil end },
    { "a number", function() return 42 end },
    { "a boolean", function() return true end },
    { "a table", function() return {} end },
    { "an empty string", function() return "" end },
    { "not a uuid", function() return "not-a-uuid" end },
    { "one character short", function(f) return f[real]:sub(1, 35) end },
    { "one character long", function(f) return f[real] .. "0" end },
    { "in braces", function(f) return "{" .. f[real] .. "}" end },
    { "without dashes", function(f) return (f[real]:gsub("-", "")) end },
    { "dashes moved", function(f)
        local h = f[real]:gsub("-", "")
        return h:sub(1, 9) .. "-" .. h:sub(10, 12) .. "-" .. h:sub(13, 16) .. "-" .. h:sub(17, 20) .. "-"
          .. h:sub(21)
      end },
    { "a non-hex digit", function(f) return "g" .. f[real]:sub(2) end },
    { "a leading space", function(f) return " " .. f[real]:sub(2) end },
    { "a trailing space", function(f) return f[real] .. " " end },
    { "a NUL inside", function(f) return nul_into(f[real], 10) end },
    { "a NUL after it", function(f) return f[real] .. "\0" end },
    { "a NUL instead of a dash", function(f) return nul_into(f[real], 9) end },
  }
end

local rows = {}
local function add(method, argn, desc, build, no_args)
  rows[#rows + 1] = { method = method, argn = argn, desc = desc, build = build, no_args = no_args }
end

---------------------------------------------------------------------------
-- reserve(disk [, mount])
---------------------------------------------------------------------------
local function disk_row(desc, disk)
  add("reserve", 1, "disk " .. desc, function() return { disk } end)
end
local function mount_row(desc, mount)
  add("reserve", 2, "mount " .. desc, function() return { { host_path = "/img/new.vhdx" }, mount } end)
end

add("reserve", 1, "no argument", nil, true)
add("reserve", 1, "disk nil", function() return { nil, {} } end)
disk_row("a number", 42)
disk_row("a string", "/img/new.vhdx")
disk_row("a boolean", true)
disk_row("a function", print)
disk_row("without host_path", {})
disk_row("without host_path but with other fields", { read_only = true, type = "PassThru" })
disk_row("host_path a number", { host_path = 42 })
disk_row("host_path a boolean", { host_path = true })
disk_row("host_path a table", { host_path = {} })
disk_row("host_path empty", { host_path = "" })
disk_row("host_path with a NUL", { host_path = "/img/a\0b" })
disk_row("host_path of an existing disk with a NUL after it", { host_path = "/img/a.vhdx\0" })
disk_row("host_path only a NUL", { host_path = "\0" })
disk_row("read_only a string", { host_path = "/img/new.vhdx", read_only = "yes" })
disk_row("read_only a number", { host_path = "/img/new.vhdx", read_only = 1 })
disk_row("read_only a table", { host_path = "/img/new.vhdx", read_only = {} })
disk_row("type unknown", { host_path = "/img/new.vhdx", type = "Floppy" })
disk_row("type empty", { host_path = "/img/new.vhdx", type = "" })
disk_row("type with a NUL", { host_path = "/img/new.vhdx", type = "VirtualDisk\0" })
disk_row("type a number", { host_path = "/img/new.vhdx", type = 1 })
disk_row("type a boolean", { host_path = "/img/new.vhdx", type = true })
disk_row("evd_type a number", { host_path = "/img/new.vhdx", type = "ExtensibleVirtualDisk", evd_type = 7 })
disk_row("evd_type a boolean", { host_path = "/img/new.vhdx", type = "ExtensibleVirtualDisk", evd_type = true })
disk_row("evd_type with a NUL", { host_path = "/img/new.vhdx", type = "ExtensibleVirtualDisk", evd_type = "a\0b" })

mount_row("a number", 42)
mount_row("a string", "partition=1")
mount_row("a boolean", true)
mount_row("partition not an integer", { partition = 1.5 })
mount_row("partition negative", { partition = -1 })
mount_row("partition most negative", { partition = math.mininteger })
mount_row("partition a string", { partition = "1" })
mount_row("partition a boolean", { partition = true })
mount_row("partition not a number", { partition = 0 / 0 })
mount_row("partition infinite", { partition = math.huge })
for _, flag in ipairs{ "read_only", "encrypted", "ensure_filesystem", "block_dev", "format_with_refs" } do
  mount_row(flag .. " a string", { [flag] = "true" })
  mount_row(flag .. " a number", { [flag] = 1 })
  mount_row(flag .. " a table", { [flag] = {} })
end
mount_row("filesystem a number", { filesystem = 4 })
mount_row("filesystem a boolean", { filesystem = true })
mount_row("filesystem a table", { filesystem = {} })
mount_row("filesystem with a NUL", { filesystem = "ext4\0" })
mount_row("options a string", { options = "ro" })
mount_row("options a number", { options = 1 })
mount_row("options a boolean", { options = true })
mount_row("options with a number", { options = { 1 } })
mount_row("options with a boolean", { options = { true } })
mount_row("options with a table", { options = { {} } })
mount_row("options with a NUL", { options = { "a\0b" } })
mount_row("options with a bad element after a good one", { options = { "ro", false } })
-- a malformed mount on an existing disk and partition must not join it
add("reserve", 2, "mount of an existing partition with a bad flag", function()
  return { { host_path = "/img/a.vhdx" }, { options = { "ro" }, encrypted = "no" } }
end)

---------------------------------------------------------------------------
-- map_to_guest(id), unmap_from_guest(id), reservation(id)
---------------------------------------------------------------------------
-- map_to_guest uses ids built from id_b (reserved, unmapped: a lax parser
-- would attach it); unmap_from_guest and reservation from id_a.
for _, spec in ipairs{ { "map_to_guest", "id_b" }, { "unmap_from_guest", "id_a" }, { "reservation", "id_a" } } do
  local method, which = spec[1], spec[2]
  for _, b in ipairs(bad_ids(which)) do
    local desc, build, no_args = b[1], b[2], b[3]
    if no_args then
      add(method, 1, "id " .. desc, nil, true)
    else
      add(method, 1, "id " .. desc, function(f) return { build(f) }, 1 end)
    end
  end
end

---------------------------------------------------------------------------
-- reserve_for_rootfs(controller, lun [, disk])
---------------------------------------------------------------------------
local function rootfs_row(argn, desc, c, l, d, n)
  add("reserve_for_rootfs", argn, desc, function() return { c, l, d }, n end)
end
add("reserve_for_rootfs", 1, "no argument", nil, true)
rootfs_row(1, "controller nil", nil, 2, nil, 2)
rootfs_row(1, "controller a string", "0", 2)
rootfs_row(1, "controller a boolean", true, 2)
rootfs_row(1, "controller a table", {}, 2)
rootfs_row(1, "controller not an integer", 0.5, 2)
rootfs_row(1, "controller negative", -1, 2)
rootfs_row(1, "controller most negative", math.mininteger, 2)
rootfs_row(2, "lun missing", 0, nil, nil, 1)
rootfs_row(2, "lun a string", 0, "2")
rootfs_row(2, "lun a boolean", 0, false)
rootfs_row(2, "lun not an integer", 0, 2.5)
rootfs_row(2, "lun negative", 0, -1)
rootfs_row(2, "lun most negative", 0, math.mininteger)
rootfs_row(3, "disk a number", 0, 2, 42)
rootfs_row(3, "disk a string", 0, 2, "/img/root")
rootfs_row(3, "disk a boolean", 0, 2, true)
rootfs_row(3, "disk without host_path", 0, 2, {})
rootfs_row(3, "disk host_path empty", 0, 2, { host_path = "" })
rootfs_row(3, "disk host_path with a NUL", 0, 2, { host_path = "/img/r\0t" })
rootfs_row(3, "disk host_path a number", 0, 2, { host_path = 1 })
rootfs_row(3, "disk type unknown", 0, 2, { host_path = "/img/root", type = "Tape" })
rootfs_row(3, "disk read_only a string", 0, 2, { host_path = "/img/root", read_only = "no" })
rootfs_row(3, "disk evd_type a number", 0, 2, { host_path = "/img/root", evd_type = 3 })

---------------------------------------------------------------------------

-- Calls ctl:<method>(...) with method-call syntax (so the error names the
-- method and counts arguments after self), not as a tail call.
local function invoke(ctl, method, args, n)
  local r
  if method == "reserve" then
    r = table.pack(ctl:reserve(table.unpack(args, 1, n)))
  elseif method == "map_to_guest" then
    r = table.pack(ctl:map_to_guest(table.unpack(args, 1, n)))
  elseif method == "unmap_from_guest" then
    r = table.pack(ctl:unmap_from_guest(table.unpack(args, 1, n)))
  elseif method == "reservation" then
    r = table.pack(ctl:reservation(table.unpack(args, 1, n)))
  elseif method == "reserve_for_rootfs" then
    r = table.pack(ctl:reserve_for_rootfs(table.unpack(args, 1, n)))
  else
    error("no such method in the table: " .. method)
  end
  return r
end

describe("malformed arguments", function()
  for _, row in ipairs(rows) do
    local expect = "bad argument #" .. row.argn .. " to '" .. row.method .. "'"
    it(row.method .. ": " .. row.desc .. " raises " .. expect .. " and changes nothing", function()
      local f = fixture()
      local ctl = f.ctl
      local before = H.state(ctl)
      local args, n = {}, 0
      if not row.no_args then
        args, n = row.build(f)
        n = n or 3
        while n > 1 and args[n] == nil do
          n = n - 1
        end
      end
      H.raises(expect, invoke, ctl, row.method, args, n)
      assert.same(before, H.state(ctl))
      assert.same({}, f.R.log)
      -- and the controller still works
      assert.equal("/run/mounts/scsi/0_1_0", ctl:map_to_guest(f.id_b))
    end)
  end
end)
