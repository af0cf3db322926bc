-- Shared helpers for the scsictl busted specs.
--
--   local H = require("helper")
--   local ctl, R = H.new_ctl{ guest = "linux", controllers = 2, luns = 4 }
--   local id = H.value(ctl:reserve{ host_path = "/img/a.vhdx" })
--   R:fail("add_scsi_disk", "false", "no room")
--   local msg = H.fails("backend", ctl:map_to_guest(id))
--
-- The recording backend (H.recorder) gives vm / linux_guest / windows_guest
-- tables whose callbacks append an entry to R.log and succeed, unless told
-- otherwise:
--   entry[1]      callback name ("add_scsi_disk", ...)
--   entry[2..]    deep copies of the arguments (after self)
--   entry.n       number of arguments
--   entry.raw     the arguments themselves (table.pack), to test freshness
--   entry.self    the self the callback was called with
--   entry.backend "vm" | "linux_guest" | "windows_guest"
--   entry.ok      true / false once the callback's outcome is known by spec §4
--                 (nil while suspended or if abandoned)
-- R.history has every entry ever logged (R:clear() only empties R.log); the
-- property checks (H.check_log, H.check_no_leak) replay R.history.
-- Controls (each applies to the next `times` calls of that callback name):
--   R:fail(name, form, msg, times)  form: "raise" (error(msg, 0)),
--        "raise_value" (error(msg) where msg is any non-string value),
--        "false" (return false, msg), "nil" (return nil, msg)
--   R:yield(name, count, times)     the callback yields `count` times
--        (coroutine.yield(name, entry)) and returns the values of the last
--        resume as its results
--   R:hook(name, fn, times)         fn(entry, ...) runs inside the callback
--        before anything else; if it returns any values, the callback returns
--        them as its results
--   R:returns(name, ...)            the callback returns these values from
--        now on (default: nothing)

local scsictl = require("scsictl")
-- busted's assertions (the global `assert` is Lua's own in this module).
local luassert = require("luassert")

local H = {}

H.scsictl = scsictl

H.VM_CALLBACKS = { "add_scsi_disk", "remove_scsi_disk" }
H.LINUX_CALLBACKS = { "add_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_device" }
H.WINDOWS_CALLBACKS = {
  "add_mapped_virtual_disk",
  "add_mapped_virtual_disk_for_container_scratch",
  "remove_mapped_virtual_disk",
}
H.GUESTS = { "linux", "windows" }

-- An id that is well-formed (version 4) but never handed out.
H.UNKNOWN_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

---------------------------------------------------------------------------
-- Generic helpers
---------------------------------------------------------------------------

function H.deep_copy(v, seen)
  if type(v) ~= "table" then
    return v
  end
  seen = seen or {}
  if seen[v] then
    return seen[v]
  end
  local t = {}
  seen[v] = t
  for k, x in pairs(v) do
    t[H.deep_copy(k, seen)] = H.deep_copy(x, seen)
  end
  return t
end

-- Sorted list of the keys of t (tostring'ed), for exact field-set checks.
function H.keys(t)
  local ks = {}
  for k in pairs(t) do
    ks[#ks + 1] = tostring(k)
  end
  table.sort(ks)
  return ks
end

-- A shell word: s in single quotes.
function H.shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command without the sanitizer runtime (LD_PRELOAD) or an
-- enclosing tmux session (TMUX); returns its output (stdout and stderr) and
-- whether it exited 0.
function H.sh(cmd)
  local p = assert(io.popen("env -u LD_PRELOAD -u TMUX sh -c " .. H.shquote(cmd) .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

function H.sorted(list)
  local t = {}
  for i, v in ipairs(list) do
    t[i] = v
  end
  table.sort(t)
  return t
end

-- The values of field `key` of a list of tables, in order.
function H.pluck(list, key)
  local t = {}
  for i, x in ipairs(list) do
    t[i] = x[key]
  end
  return t
end

-- Sorts list in place by the given fields, the first one deciding first;
-- returns it.
function H.sort_by(list, ...)
  local fields = { ... }
  table.sort(list, function(x, y)
    for _, f in ipairs(fields) do
      if x[f] ~= y[f] then
        return x[f] < y[f]
      end
    end
    return false
  end)
  return list
end

-- Full garbage collection, run twice so finalizers and what they free go.
-- A fresh directory (removed by H.rmdir) and a whole file's contents (nil
-- when it cannot be read), for the specs that write files.
function H.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  return p
end

function H.rmdir(p)
  os.execute("rm -rf '" .. p .. "' '" .. p .. ".away'")
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Storage that fails: the directory d is moved aside and a regular file
-- takes its name, so nothing can be created in it (a state file's owner
-- keeps its lock). Returns the function that undoes it.
function H.storage_fails(d)
  assert(os.rename(d, d .. ".away"))
  assert(io.open(d, "w")):close()
  return function()
    assert(os.remove(d))
    assert(os.rename(d .. ".away", d))
  end
end

function H.full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
  collectgarbage("collect")
end

local UUID_PATTERN = "^" .. string.rep("%x", 8) .. "%-" .. string.rep("%x", 4) .. "%-4" .. string.rep("%x", 3)
  .. "%-[89ab]" .. string.rep("%x", 3) .. "%-" .. string.rep("%x", 12) .. "$"

-- Canonical lowercase version-4 UUID string.
function H.is_uuid(s)
  return type(s) == "string" and #s == 36 and s == s:lower() and s:find(UUID_PATTERN) ~= nil
end

function H.guest_path(guest, controller, lun, partition)
  if guest == "windows" then
    return string.format("C:\\mounts\\scsi\\%d_%d_%d", controller, lun, partition)
  end
  return string.format("/run/mounts/scsi/%d_%d_%d", controller, lun, partition)
end

-- Name of the guest-side unmount/mount callbacks for a flavour.
function H.mount_name(guest, format_with_refs)
  if guest == "windows" and format_with_refs then
    return "add_mapped_virtual_disk_for_container_scratch"
  end
  return "add_mapped_virtual_disk"
end

-- The callback sequence of a full teardown of a mounted partition + disk.
function H.teardown_names(guest)
  if guest == "windows" then
    return { "remove_mapped_virtual_disk", "remove_scsi_disk" }
  end
  return { "remove_mapped_virtual_disk", "remove_scsi_device", "remove_scsi_disk" }
end

-- The callback sequence of tearing down a disk with nothing mounted.
function H.disk_teardown_names(guest)
  if guest == "windows" then
    return { "remove_scsi_disk" }
  end
  return { "remove_scsi_device", "remove_scsi_disk" }
end

---------------------------------------------------------------------------
-- Results
---------------------------------------------------------------------------

local function describe_results(r)
  local parts = {}
  for i = 1, r.n do
    parts[#parts + 1] = string.format("%q", tostring(r[i]))
  end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- Asserts `nil, msg, code` and returns msg.
function H.fails(code, ...)
  local r = table.pack(...)
  assert(r[1] == nil and type(r[2]) == "string" and r[3] == code,
    "expected nil, <message>, " .. string.format("%q", code) .. " but got " .. describe_results(r))
  assert(r.n == 3, "expected exactly 3 results, got " .. r.n .. " " .. describe_results(r))
  return r[2]
end

-- Asserts a successful result (first value not nil/false) and returns it.
function H.value(...)
  local r = table.pack(...)
  assert(r[1] ~= nil and r[1] ~= false, "expected success but got " .. describe_results(r))
  return r[1]
end

-- Asserts `nil, msg, code` with msg containing `text` (plain); returns msg.
function H.fails_with(code, text, ...)
  local msg = H.fails(code, ...)
  H.contains(msg, text)
  return msg
end

-- Asserts that fn raises an error whose message contains `text` (plain).
function H.raises(text, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error containing '" .. text .. "' but the call succeeded")
  assert(type(err) == "string", "expected a string error, got " .. type(err) .. " " .. tostring(err))
  assert(err:find(text, 1, true), "expected an error containing '" .. text .. "' but got: " .. err)
  return err
end

-- Plain-text containment with a useful failure message.
function H.contains(haystack, needle)
  assert(type(haystack) == "string", "expected a string, got " .. type(haystack))
  assert(haystack:find(needle, 1, true), string.format("expected %q to contain %q", haystack, needle))
end

-- Everything observable about a controller's state.
function H.state(ctl)
  return {
    stats = ctl:stats(),
    slots = ctl:slots(),
    reservations = ctl:reservations(),
    text = tostring(ctl),
  }
end

-- Reserves disk (with the mount config opts, if any) and maps the id;
-- returns the id and its guest path.
function H.mapped(ctl, disk, opts)
  local id = H.value(ctl:reserve(disk, opts))
  return id, H.value(ctl:map_to_guest(id))
end

-- Reserves and maps disk, then unmaps it with the callback `step` raising
-- (msg, if given): the unmap returns backend and the release is left
-- pending. Returns the id.
function H.release_pending(ctl, R, disk, step, msg)
  local id = H.mapped(ctl, disk)
  R:fail(step, "raise", msg)
  H.fails("backend", ctl:unmap_from_guest(id))
  return id
end

-- Reserves and maps disk, then unmaps it: a released id.
function H.released(ctl, disk)
  local id = H.mapped(ctl, disk)
  luassert.is_true(ctl:unmap_from_guest(id))
  return id
end

-- Reserves n distinct disks, /img/1 to /img/n (filling the lowest free
-- slots); returns their ids.
function H.fill(ctl, n)
  local ids = {}
  for i = 1, n do
    ids[i] = H.value(ctl:reserve{ host_path = "/img/" .. i })
  end
  return ids
end

-- On a cleared log, maps id (again): it must return `path` after exactly
-- the callbacks `names`.
function H.maps_again(ctl, R, id, path, names)
  R:clear()
  luassert.equal(path, ctl:map_to_guest(id))
  luassert.same(names, R:names())
end

-- On a cleared log, unmaps id (again): it must return true after exactly
-- the callbacks `names`.
function H.unmaps_again(ctl, R, id, names)
  R:clear()
  luassert.is_true(ctl:unmap_from_guest(id))
  luassert.same(names, R:names())
end

-- { controller, lun } of a reservation id.
function H.where(ctl, id)
  local r = ctl:reservation(id)
  return { r.controller, r.lun }
end

-- On a cleared log, calls ctl[method](ctl, id) with the callback `step`
-- failing once (R:fail(step, form, msg)): it must return backend with msg
-- after exactly the callbacks `names`.
function H.fails_at(ctl, R, method, id, step, form, msg, names)
  R:clear()
  R:fail(step, form, msg)
  H.fails_with("backend", msg, ctl[method](ctl, id))
  luassert.same(names, R:names())
end

-- On a cleared log, ctl[method](ctl, ...) must return `code` and make no
-- callback and no observable change.
function H.fails_quietly(ctl, R, code, method, ...)
  R:clear()
  local before = H.state(ctl)
  H.fails(code, ctl[method](ctl, ...))
  luassert.same({}, R.log)
  luassert.same(before, H.state(ctl))
end

-- Asserts the given fields of ctl:stats() (the others are not checked).
function H.stats_include(ctl, expected)
  local s, got = ctl:stats(), {}
  for k in pairs(expected) do
    got[k] = s[k]
  end
  luassert.same(expected, got)
end

-- Nothing is left: no slot in use, and over the whole history every
-- successful add and mount has been undone (P3).
function H.check_all_released(ctl, R, guest)
  luassert.same({}, ctl:slots())
  H.check_no_leak(R, guest)
end

-- The slots() entry for (controller, lun), or nil.
function H.slot(ctl, controller, lun)
  for _, s in ipairs(ctl:slots()) do
    if s.controller == controller and s.lun == lun then
      return s
    end
  end
  return nil
end

-- The partitions entry of slot (controller, lun), partition p, or nil.
function H.partition(ctl, controller, lun, p)
  local s = H.slot(ctl, controller, lun)
  if not s then
    return nil
  end
  for _, e in ipairs(s.partitions) do
    if e.partition == p then
      return e
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- Recording backend
---------------------------------------------------------------------------

-- spec §4: a callback fails when it returns false first, or nil followed by
-- a non-nil value.
function H.is_success(r)
  if r.n >= 1 and r[1] == false then
    return false
  end
  if r.n >= 2 and r[1] == nil and r[2] ~= nil then
    return false
  end
  return true
end

local Recorder = {}
Recorder.__index = Recorder

local function take(queue, name)
  local q = queue[name]
  if not q or #q == 0 then
    return nil
  end
  local item = q[1]
  item.times = item.times - 1
  if item.times <= 0 then
    table.remove(q, 1)
  end
  return item
end

local function push(queue, name, item)
  queue[name] = queue[name] or {}
  table.insert(queue[name], item)
end

function Recorder:fail(name, form, msg, times)
  form = form or "raise"
  if msg == nil and form ~= "false" and form ~= "nil" then
    msg = "injected " .. name .. " failure"
  end
  push(self.failures, name, { form = form, msg = msg, times = times or 1 })
  return self
end

function Recorder:yield(name, count, times)
  push(self.yields, name, { count = count or 1, times = times or 1 })
  return self
end

function Recorder:hook(name, fn, times)
  push(self.hooks, name, { fn = fn, times = times or math.huge })
  return self
end

function Recorder:returns(name, ...)
  self.results[name] = table.pack(...)
  return self
end

function Recorder:clear()
  for i = #self.log, 1, -1 do
    self.log[i] = nil
  end
  return self
end

-- Names of the logged calls, in order.
function Recorder:names()
  return H.pluck(self.log, 1)
end

function Recorder:calls(name)
  local t = {}
  for _, e in ipairs(self.log) do
    if e[1] == name then
      t[#t + 1] = e
    end
  end
  return t
end

function Recorder:count(name)
  return #self:calls(name)
end

function Recorder:last()
  return self.log[#self.log]
end

local function run_callback(R, backend, name, self, ...)
  local raw = table.pack(...)
  local entry = { name, backend = backend, self = self, raw = raw, n = raw.n }
  for i = 1, raw.n do
    entry[i + 1] = H.deep_copy(raw[i])
  end
  table.insert(R.log, entry)
  table.insert(R.history, entry)

  local hook = take(R.hooks, name)
  if hook then
    local r = table.pack(hook.fn(entry, ...))
    if r.n > 0 then
      entry.results = r
      entry.ok = H.is_success(r)
      return table.unpack(r, 1, r.n)
    end
  end

  local y = take(R.yields, name)
  if y then
    if not coroutine.isyieldable() then
      entry.ok = false -- the yield below raises
    end
    local r = table.pack()
    for _ = 1, y.count do
      r = table.pack(coroutine.yield(name, entry))
    end
    entry.results = r
    entry.ok = H.is_success(r)
    return table.unpack(r, 1, r.n)
  end

  local f = take(R.failures, name)
  if f then
    entry.ok = false
    if f.form == "raise" then
      error(f.msg, 0)
    elseif f.form == "raise_value" then
      error(f.msg)
    elseif f.form == "false" then
      if f.msg == nil then
        return false
      end
      return false, f.msg
    elseif f.form == "nil" then
      return nil, f.msg
    end
    error("helper: unknown failure form " .. tostring(f.form))
  end

  entry.ok = true
  local r = R.results[name]
  if r then
    return table.unpack(r, 1, r.n)
  end
end

local function make_backend(R, backend, names)
  local t = {}
  for _, name in ipairs(names) do
    t[name] = function(self, ...)
      return run_callback(R, backend, name, self, ...)
    end
  end
  return t
end

-- A fresh recording backend with one shared log.
function H.recorder()
  local R = setmetatable({ log = {}, history = {}, failures = {}, yields = {}, hooks = {}, results = {} }, Recorder)
  R.vm = make_backend(R, "vm", H.VM_CALLBACKS)
  R.linux_guest = make_backend(R, "linux_guest", H.LINUX_CALLBACKS)
  R.windows_guest = make_backend(R, "windows_guest", H.WINDOWS_CALLBACKS)
  return R
end

-- new_ctl{ guest = "linux"|"windows", controllers = 4, luns = nil|n,
--          recorder = R } -> ctl, R
function H.new_ctl(opts)
  opts = opts or {}
  local R = opts.recorder or H.recorder()
  local args = {
    controllers = opts.controllers or 4,
    luns_per_controller = opts.luns,
    vm = R.vm,
  }
  if (opts.guest or "linux") == "windows" then
    args.windows_guest = R.windows_guest
  else
    args.linux_guest = R.linux_guest
  end
  return scsictl.new(args), R
end

---------------------------------------------------------------------------
-- Properties over the log (spec §6 P1, P2, P3)
---------------------------------------------------------------------------

local function mount_key(entry)
  local s = entry[2]
  local path = s.mount_path or s.container_path
  local c, l, p = path:match("(%d+)_(%d+)_(%d+)$")
  assert(c, "cannot parse guest path " .. tostring(path))
  return c .. ":" .. l, c .. ":" .. l .. ":" .. p
end

-- Replays every successful callback of the log and checks P1 (alternation)
-- and P2 (ordering); guest is "linux" (default) or "windows". Returns the sets of attached slots and mounted
-- partitions left at the end.
function H.check_log(R, guest)
  local linux = guest ~= "windows"
  local attached, ejected, mounted = {}, {}, {}
  local function mounts_on(slot)
    for k in pairs(mounted) do
      if k:sub(1, #slot + 1) == slot .. ":" then
        return true
      end
    end
    return false
  end
  for i, e in ipairs(R.history) do
    if e.ok then
      local name = e[1]
      local where = " (log entry " .. i .. ")"
      if name == "add_scsi_disk" then
        local slot = e[3] .. ":" .. e[4]
        assert(not attached[slot], "P1: add_scsi_disk twice at " .. slot .. where)
        attached[slot] = true
        ejected[slot] = nil
      elseif name == "remove_scsi_disk" then
        local slot = e[2] .. ":" .. e[3]
        assert(attached[slot], "P1: remove_scsi_disk without add at " .. slot .. where)
        assert(not mounts_on(slot), "P2: remove_scsi_disk with a partition mounted at " .. slot .. where)
        if linux then
          assert(ejected[slot], "P1: remove_scsi_disk without remove_scsi_device at " .. slot .. where)
        end
        attached[slot] = nil
        ejected[slot] = nil
      elseif name == "remove_scsi_device" then
        local slot = e[2].controller .. ":" .. e[2].lun
        assert(attached[slot], "P2: remove_scsi_device on a slot not attached " .. slot .. where)
        assert(not mounts_on(slot), "P2: remove_scsi_device with a partition mounted at " .. slot .. where)
        ejected[slot] = true
      elseif name == "add_mapped_virtual_disk" or name == "add_mapped_virtual_disk_for_container_scratch" then
        local slot, key = mount_key(e)
        assert(attached[slot], "P2: mount on a disk not attached " .. key .. where)
        assert(not mounted[key], "P1: mounted twice " .. key .. where)
        mounted[key] = true
      elseif name == "remove_mapped_virtual_disk" then
        local _, key = mount_key(e)
        assert(mounted[key], "P1: unmount without mount " .. key .. where)
        mounted[key] = nil
      end
    end
  end
  return attached, mounted
end

-- P3: every successful add has had its remove, every mount its unmount.
function H.check_no_leak(R, guest)
  local attached, mounted = H.check_log(R, guest)
  assert(next(attached) == nil, "P3: a disk is still attached: " .. tostring(next(attached)))
  assert(next(mounted) == nil, "P3: a partition is still mounted: " .. tostring(next(mounted)))
end

return H
