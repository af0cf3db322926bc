-- orchestrator.lua — a container host on the event loop (scsictl.loop).
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/lua/?.so;;' lua5.4 examples/orchestrator.lua
--
-- Boots the test guest (scripts/build-guest.sh, QEMU under TCG unless
-- SCSICTL_QEMU_ACCEL says otherwise) with four virtio-scsi controllers. Eight
-- containers arrive at once. Each maps two read-only image layers shared by
-- all of them (one disk and one mount each, eight claims) and a scratch disk
-- of its own (blank, formatted in the guest by ensure_filesystem), runs a
-- command in the guest that reads both layers and writes to its scratch
-- disk, and tears down. Each container is a loop task; its disks are mapped
-- by tasks of their own, so every step overlaps with the others'.
--
-- The same eight containers first run one after another, for comparison.
-- Then the concurrent run's timeline: a row per container, a column per
-- slice of time, a letter for the step that container was in.
--
-- Needs qemu-system-x86, e2fsprogs, lua-luv and lua-cjson. Prints
-- "orchestrator: ok" at the end; exits non-zero on anything unexpected.

local here = debug.getinfo(1, "S").source:match("^@(.-)examples/[^/]*$") or ""
package.path = here .. "lua/?.lua;" .. here .. "lua/?/init.lua;" .. package.path

local scsictl = require("scsictl")
local loop = require("scsictl.loop")
local qemu_guest = require("scsictl.qemu_guest")

local CONTAINERS = 8

local function must(v, msg, code)
  if v == nil or v == false then
    error(("unexpected failure: %s (%s)"):format(tostring(msg), tostring(code)), 2)
  end
  return v
end

---------------------------------------------------------------------------
-- Images, made on the host without blocking the loop.

local tmp = must(loop.fs("mkdtemp", (os.getenv("TMPDIR") or "/tmp") .. "/scsictl-orchestrator.XXXXXX"))
local made = {}

local function write_file(path, data)
  local fd = must(loop.fs("open", path, "w", tonumber("644", 8)))
  must(loop.fs("write", fd, data, 0))
  must(loop.fs("close", fd))
  made[#made + 1] = path
end

local function layer(name, text)
  local src = tmp .. "/" .. name .. ".d"
  must(loop.fs("mkdir", src, tonumber("755", 8)))
  made[#made + 1] = src
  write_file(src .. "/layer.txt", text)
  local img = tmp .. "/" .. name .. ".img"
  must(loop.command({ "mkfs.ext4", "-q", "-F", "-d", src, img, "8M" },
    { env = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin" } }))
  made[#made + 1] = img
  return img
end

local function scratch(i)
  local img = ("%s/scratch%d.img"):format(tmp, i)
  local fd = must(loop.fs("open", img, "w", tonumber("644", 8)))
  must(loop.fs("ftruncate", fd, 16 * 1024 * 1024))
  must(loop.fs("close", fd))
  made[#made + 1] = img
  return img
end

local layers = { layer("base", "base layer\n"), layer("app", "app layer\n") }
local scratches = {}
for i = 1, CONTAINERS do scratches[i] = scratch(i) end

---------------------------------------------------------------------------
-- The VM, with backends that note which container ran which step when.

io.stderr:write("orchestrator: booting the test guest...\n")
local vm, guest = qemu_guest.launch{ controllers = 4, args = { "-smp", "2" } }
must(vm, guest)

local events = {}       -- { who, letter, t0, t1 }
local owner = setmetatable({}, { __mode = "k" })    -- task -> container number
local arrived = {}      -- container number -> when it arrived
local function noted(backend, letters)
  local proxy = {}
  for method, letter in pairs(letters) do
    proxy[method] = function(_, ...)
      local e = { who = owner[loop.current() or false], letter = letter, t0 = loop.now() }
      local r = table.pack(backend[method](backend, ...))
      e.t1 = loop.now()
      events[#events + 1] = e
      return table.unpack(r, 1, r.n)
    end
  end
  return proxy
end

-- Four luns a controller: Linux adds and removes the devices of one SCSI
-- host one at a time, so spreading the disks lets the guest overlap them.
local ctl = scsictl.new{
  controllers = 4, luns_per_controller = 4,
  vm = noted(vm:vm_backend(), { add_scsi_disk = "A", remove_scsi_disk = "R" }),
  linux_guest = noted(guest, { add_mapped_virtual_disk = "M", remove_mapped_virtual_disk = "U",
                               remove_scsi_device = "E" }),
}

---------------------------------------------------------------------------
-- The orchestration policy, in Lua.

-- A disk another container is mapping or releasing right now is "busy":
-- wait a little and try again.
local function patiently(op, ...)
  while true do
    local r, msg, code = op(ctl, ...)
    if r or code ~= "busy" then return r, msg, code end
    loop.sleep(0.005)
  end
end

-- Runs fn(i) for i = 1..n, each in a task of the current container; returns
-- their first results.
local function together(n, fn)
  local who = owner[loop.current()]
  local tasks = {}
  for i = 1, n do
    tasks[i] = loop.spawn(function()
      owner[loop.current()] = who          -- before its first step
      return fn(i)
    end)
  end
  local out = {}
  for i = 1, n do out[i] = must(tasks[i]:join()) end
  return out
end

local function container(i)
  owner[loop.current()] = i
  arrived[i] = loop.now()
  local ro = { read_only = true }
  local ids = {
    must(patiently(ctl.reserve, { host_path = layers[1], read_only = true }, ro)),
    must(patiently(ctl.reserve, { host_path = layers[2], read_only = true }, ro)),
    must(patiently(ctl.reserve, { host_path = scratches[i] }, { ensure_filesystem = true, filesystem = "ext4" })),
  }
  local paths = together(3, function(k) return patiently(ctl.map_to_guest, ids[k]) end)
  local t0 = loop.now()
  local out = must(guest:sh(("cat %s/layer.txt %s/layer.txt > %s/out.txt && echo container %d >> %s/out.txt"
    .. " && cat %s/out.txt"):format(paths[1], paths[2], paths[3], i, paths[3], paths[3])))
  events[#events + 1] = { who = i, letter = "X", t0 = t0, t1 = loop.now() }
  if out ~= ("base layer\napp layer\ncontainer %d\n"):format(i) then
    error(("container %d read %q"):format(i, out))
  end
  together(3, function(k) return patiently(ctl.unmap_from_guest, ids[k]) end)
  return true
end

local function run(concurrently)
  events = {}
  local t0 = loop.now()
  loop.run(function()
    if concurrently then
      local tasks = {}
      for i = 1, CONTAINERS do
        tasks[i] = loop.spawn({ timeout = 120, name = "container " .. i }, container, i)
      end
      for i = 1, CONTAINERS do must(tasks[i]:join()) end
    else
      for i = 1, CONTAINERS do
        must(loop.spawn({ timeout = 120, name = "container " .. i }, container, i):join())
      end
    end
  end)
  assert(ctl:stats().used == 0, "a disk was left attached")
  return loop.now() - t0, t0
end

local serial = run(false)
local total, start = run(true)

---------------------------------------------------------------------------
-- The timeline of the concurrent run.

local WIDTH = 64
local slice = total / WIDTH
print(("timeline of %d containers at once, one column = %.0f ms"):format(CONTAINERS, slice * 1000))
print("A hot-add  M mount  X command in the guest  U unmount  E eject  R hot-remove  - waiting")
local overlap = 0
for i = 1, CONTAINERS do
  local row, first, last = {}, math.floor((arrived[i] - start) / slice) + 1, 1
  for c = 1, WIDTH do row[c] = " " end
  -- A container's disks overlap: longer steps first, so that the short
  -- ones (a hot-add takes milliseconds) stay visible on top.
  local mine = {}
  for _, e in ipairs(events) do if e.who == i then mine[#mine + 1] = e end end
  table.sort(mine, function(x, y) return x.t1 - x.t0 > y.t1 - y.t0 end)
  for _, e in ipairs(mine) do
    do
      local a = math.max(1, math.floor((e.t0 - start) / slice) + 1)
      local b = math.min(WIDTH, math.floor((e.t1 - start) / slice) + 1)
      for c = a, b do row[c] = e.letter end
      first, last = math.min(first, a), math.max(last, b)
    end
  end
  for c = first, last do if row[c] == " " then row[c] = "-" end end
  print(("container %d |%s|"):format(i, table.concat(row)))
end
-- How many steps ran at the same time, at most.
for _, e in ipairs(events) do
  local n = 0
  for _, f in ipairs(events) do
    if f.t0 <= e.t0 and e.t0 < f.t1 then n = n + 1 end
  end
  overlap = math.max(overlap, n)
end
print(("serial %.2f s, concurrent %.2f s: %.1fx; up to %d steps at once")
  :format(serial, total, serial / total, overlap))

vm:stop()
for k = #made, 1, -1 do
  local p = made[k]
  if not loop.fs("unlink", p) then loop.fs("rmdir", p) end
end
loop.fs("rmdir", tmp)
assert(overlap > 1, "no two steps overlapped")
print("orchestrator: ok")
