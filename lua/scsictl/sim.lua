--[[
scsictl.sim — an in-process simulated VM and guest for scsictl.

A pure-Lua model of a hypervisor with SCSI controllers and of the guest
running in it. It implements every backend callback of spec §4 and
enforces the protocol the way a real hypervisor and guest would, so a
controller (or a hand-written script) can be checked against it, and people
can experiment without a hypervisor.

  local sim = require("scsictl.sim")
  local s = sim.new{
    controllers = 4,            -- default 4
    luns_per_controller = 64,   -- default 64
    guest = "linux",            -- "linux" (default) or "windows"
    partitions = 1,             -- partitions per disk (default 1): partition
                                -- 0 (whole disk) and 1..n are mountable
    disks = { ["/img/a.vhdx"] = { partitions = 3 } },  -- per-disk overrides
    seed = 1,                   -- seed of the fault-injection generator
    forgiving = false,          -- true: re-issued removals of things already
                                --   gone succeed (crash recovery, spec §8)
    strict = true,              -- check callback arguments have exactly the
                                -- fields of spec §4 (default true)
  }
  local ctl = scsictl.new{ controllers = 4, vm = s, linux_guest = s }
  -- or, in one go:  local ctl, s = sim.controller{ controllers = 4 }

CALLBACKS (methods of `s`, stored on the object itself; arguments as spec §4)
  s:add_scsi_disk(attachment, controller, lun)      VM hot-add
  s:remove_scsi_disk(controller, lun)               VM hot-remove
  s:add_mapped_virtual_disk(settings)               guest mount (Linux or
                                                    Windows settings, by the
                                                    sim's guest flavour)
  s:add_mapped_virtual_disk_for_container_scratch(settings)   Windows only
  s:remove_mapped_virtual_disk(settings)            guest unmount
  s:remove_scsi_device(device)                      Linux guest eject
  Success returns true. A refusal returns nil, "message".

PROTOCOL (a refusal is logged with ok = false and listed by s:refusals())
  VM:    refuses add at an occupied slot or outside the geometry, and the same
         host path at a second slot; refuses remove of an empty slot, of a
         slot whose disk a Linux guest has not ejected, or (Windows) of a disk
         with mounted partitions.
  Guest: refuses to mount a LUN that is not attached or is ejected, a
         partition the disk does not have, a path already mounted by another
         device or partition; refuses to eject a device with a mounted
         partition or one already ejected; refuses to unmount an unknown path
         (or a path holding another device).
  Re-issuing a step that already took effect is a success (logged with
  already = true) so that recovery converges: adding the same host path with
  the same attachment at the same slot (even if the guest ejected it: the
  disk then stays ejected), or mounting the same device and partition at the
  same path with the same read_only. Removing something absent is a refusal,
  unless the sim was made with forgiving = true: then removing, ejecting or
  unmounting something already gone also succeeds (already = true), as a
  real backend recovering after a host-agent crash must accept.
  Windows settings carry only { container_path, lun }: the device is found
  from the path `...\<controller>_<lun>_<partition>` when it names an attached
  slot with that lun, else from the lun alone (it must then be unambiguous;
  partition 0).
  In strict mode a callback whose arguments do not have exactly the fields of
  spec §4 with the right types is refused with a "protocol:" message.

FAULT INJECTION (injected failures change nothing and are logged with
injected = true). Op names are callback names, or the aliases "attach",
"detach", "mount" (both add_mapped_* callbacks), "unmount", "eject"; `ops`
is a name, an array of names, or nil for every callback.
  s:fail_next(op, n, message, form)  the next n calls of op fail (replaces any
                                     earlier fail_next for op; n = 0 cancels)
  s:fail_rate(p, ops, form)          each call of ops fails with probability p
                                     (seeded xorshift generator; p = 0 clears)
  s:set_fault_form(form)             default form for both (initially "nil")
  s:clear_faults()                   cancels fail_next and fail_rate
  form: "nil" (return nil, msg), "false" (return false), "error" (raise msg),
        "mixed" (one of the three, chosen by the seeded generator).
  s:random()                         next float in [0, 1) of the generator
  s:reseed(seed)

LATENCY
  s:set_latency(n, ops)   those callbacks call coroutine.yield() n times
                          before acting, only when coroutine.isyieldable()
  s:in_flight()           array of { op, controller, lun, host_path, path }
                          for callbacks currently suspended in latency

EVENT LOG
  s.log                   ordered array of entries { seq, op, controller,
                          lun, host_path, partition, path, read_only, ok,
                          message, injected, already }
  s:events(filter)        copy of the log; filter = op name or alias, or a
                          function(entry) -> boolean, or nil for all
  s:refusals()            entries refused by protocol (not injected)
  s:counts()              { calls, ok, failed, injected, refused, already,
                            by_op = { [op] = { calls, ok, failed } } }
  s:clear_log()

STATE
  s:attached()            array of { controller, lun, host_path, ejected,
                          read_only, type } sorted by slot
  s:mounts()              array of { path, controller, lun, partition,
                          read_only, host_path, scratch } sorted by slot,
                          partition, path
  s:is_empty()            nothing attached and nothing mounted
  s:partitions_of(path)   partition count of a host disk
  s:set_partitions(path, n)

RENDERING
  tostring(s), s:render([ctl])   grid of controllers x LUNs (at most 16 of
                          each shown), legend, disks and mounts. With a
                          controller (argument, or the one given to
                          s:set_view(ctl), which sim.controller does), pinned
                          slots, slots reserved but not yet added, claim and
                          reference counts are shown from ctl:slots().

sim.controller(opts) -> ctl, s
  Requires "scsictl", builds sim.new(opts) and scsictl.new{ controllers,
  luns_per_controller, vm = s, linux_guest | windows_guest = s, state_file }.
]]

local sim = {}

local M = {}

local OPS = {
  "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk",
  "add_mapped_virtual_disk_for_container_scratch",
  "remove_mapped_virtual_disk", "remove_scsi_device",
}
local IS_OP = {}
for _, op in ipairs(OPS) do IS_OP[op] = true end

local ALIASES = {
  attach = { "add_scsi_disk" },
  detach = { "remove_scsi_disk" },
  mount = { "add_mapped_virtual_disk",
            "add_mapped_virtual_disk_for_container_scratch" },
  unmount = { "remove_mapped_virtual_disk" },
  eject = { "remove_scsi_device" },
}

local FORMS = { ["nil"] = true, ["false"] = true, error = true, mixed = true }
local DISK_TYPES = { VirtualDisk = true, PassThru = true,
                     ExtensibleVirtualDisk = true }

-- Expand an op selector (name, alias, array of those, or nil) to a set.
local function op_set(ops, fname)
  local set = {}
  local function add(name)
    if IS_OP[name] then
      set[name] = true
    elseif ALIASES[name] then
      for _, op in ipairs(ALIASES[name]) do set[op] = true end
    else
      error(("%s: unknown operation %q"):format(fname, tostring(name)), 3)
    end
  end
  if ops == nil then
    for _, op in ipairs(OPS) do set[op] = true end
  elseif type(ops) == "table" then
    for _, name in ipairs(ops) do add(name) end
  else
    add(ops)
  end
  return set
end

---------------------------------------------------------------------------
-- Deterministic generator: splitmix64 seeding, xorshift64* output.

local function splitmix64(x)
  x = x + 0x9E3779B97F4A7C15
  local z = x
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

function M:reseed(seed)
  seed = math.tointeger(seed or 1)
  if not seed then error("reseed: seed must be an integer", 2) end
  local x = splitmix64(seed)
  if x == 0 then x = 0x2545F4914F6CDD1D end
  self._rng = x
end

function M:random()
  local x = self._rng
  x = x ~ (x >> 12)
  x = x ~ (x << 25)
  x = x ~ (x >> 27)
  self._rng = x
  return ((x * 0x2545F4914F6CDD1D) >> 11) * (1.0 / 9007199254740992.0)
end

---------------------------------------------------------------------------
-- Argument checks.

local function is_uint(v) return math.type(v) == "integer" and v >= 0 end

local KIND_OK = {
  string = function(v) return type(v) == "string" end,
  path = function(v) return type(v) == "string" and v ~= "" end,
  uint = is_uint,
  boolean = function(v) return type(v) == "boolean" end,
  optstring = function(v) return v == nil or type(v) == "string" end,
  disktype = function(v) return DISK_TYPES[v] == true end,
  strings = function(v)
    if type(v) ~= "table" then return false end
    local n = #v
    for k, x in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > n or type(x) ~= "string" then
        return false
      end
    end
    return true
  end,
  -- disk options: nil, or option names to strings
  optoptions = function(v)
    if v == nil then return true end
    if type(v) ~= "table" then return false end
    for k, x in pairs(v) do
      if type(k) ~= "string" or type(x) ~= "string" then return false end
    end
    return true
  end,
  -- nil, or { root_hash = 64 hex digits, hash_offset = integer >= 0 }
  optverity = function(v)
    return v == nil or (type(v) == "table" and type(v.root_hash) == "string"
      and #v.root_hash == 64 and not v.root_hash:find("[^0-9a-f]") and is_uint(v.hash_offset))
  end,
}
local KIND_WHAT = {
  string = "a string", path = "a non-empty string", uint = "an integer >= 0",
  boolean = "a boolean", optstring = "nil or a string",
  disktype = "VirtualDisk, PassThru or ExtensibleVirtualDisk",
  strings = "an array of strings",
  optoptions = "nil or a table of option names to strings",
  optverity = "nil or { root_hash = 64 hex digits, hash_offset = integer >= 0 }",
}

-- shape: array of { field, kind, essential }. Essential fields are checked
-- even when not strict.
local ATTACHMENT = {
  { "path", "path", true }, { "type", "disktype" },
  { "read_only", "boolean" }, { "evd_type", "optstring" }, { "options", "optoptions" },
}
local LINUX_SETTINGS = {
  { "mount_path", "path", true }, { "controller", "uint", true },
  { "lun", "uint", true }, { "partition", "uint", true },
  { "read_only", "boolean" }, { "encrypted", "boolean" },
  { "options", "strings" }, { "ensure_filesystem", "boolean" },
  { "filesystem", "string" }, { "block_dev", "boolean" }, { "verity", "optverity" },
}
local DEVICE = { { "controller", "uint", true }, { "lun", "uint", true } }
local WINDOWS_SETTINGS = { { "container_path", "path", true },
                           { "lun", "uint", true } }

local function check_shape(strict, t, shape, what)
  if type(t) ~= "table" then
    return ("protocol: %s must be a table, got %s"):format(what, type(t))
  end
  local known = {}
  for _, f in ipairs(shape) do
    local name, kind, essential = f[1], f[2], f[3]
    known[name] = true
    if (strict or essential) and not KIND_OK[kind](t[name]) then
      return ("protocol: %s.%s must be %s, got %s"):format(
        what, name, KIND_WHAT[kind], t[name] == nil and "nil" or type(t[name]))
    end
  end
  if strict then
    local extra = {}
    for k in pairs(t) do
      if not known[k] then extra[#extra + 1] = tostring(k) end
    end
    if #extra > 0 then
      table.sort(extra)
      return ("protocol: %s has unexpected field(s) %s"):format(
        what, table.concat(extra, ", "))
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- Construction.

function sim.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("sim.new: options must be a table", 2) end
  local controllers = opts.controllers or 4
  local luns = opts.luns_per_controller or 64
  local guest = opts.guest or "linux"
  local partitions = opts.partitions or 1
  if not is_uint(controllers) then
    error("sim.new: controllers must be an integer >= 0", 2)
  end
  if not is_uint(luns) or luns < 1 then
    error("sim.new: luns_per_controller must be an integer >= 1", 2)
  end
  if guest ~= "linux" and guest ~= "windows" then
    error("sim.new: guest must be \"linux\" or \"windows\"", 2)
  end
  if not is_uint(partitions) then
    error("sim.new: partitions must be an integer >= 0", 2)
  end
  local s = {
    controllers = controllers,
    luns_per_controller = luns,
    guest = guest,
    partitions = partitions,
    strict = opts.strict ~= false,
    forgiving = opts.forgiving == true,
    log = {},
    _seq = 0,
    _flights = 0,
    _slots = {},       -- slot index -> disk record
    _by_path = {},     -- host path -> disk record
    _mounts = {},      -- guest path -> mount record
    _disk_parts = {},  -- host path -> partition count override
    _fail_next = {},   -- op -> { n, message, form }
    _fail_rate = {},   -- op -> { p, form }
    _fault_form = "nil",
    _latency = {},     -- op -> n
    _inflight = setmetatable({}, { __mode = "k" }),  -- thread -> info
    _view = setmetatable({}, { __mode = "v" }),
  }
  for path, d in pairs(opts.disks or {}) do
    if type(d) ~= "table" or not is_uint(d.partitions) then
      error(("sim.new: disks[%q].partitions must be an integer >= 0")
        :format(tostring(path)), 2)
    end
    s._disk_parts[path] = d.partitions
  end
  -- Methods live on the object itself so that backends looked up with raw
  -- access find them too; the metatable only adds tostring.
  for k, v in pairs(M) do s[k] = v end
  setmetatable(s, sim._mt)
  s:reseed(opts.seed or 1)
  return s
end

sim._mt = {
  __name = "scsictl.sim",
  __tostring = function(s) return s:render() end,
}

function sim.controller(opts)
  opts = opts or {}
  local scsictl = require("scsictl")
  local s = sim.new(opts)
  local cfg = {
    controllers = s.controllers,
    luns_per_controller = s.luns_per_controller,
    vm = s,
    state_file = opts.state_file,
  }
  cfg[s.guest == "windows" and "windows_guest" or "linux_guest"] = s
  local ctl, msg, code = scsictl.new(cfg)
  if not ctl then error(("sim.controller: %s (%s)"):format(msg, code), 2) end
  s:set_view(ctl)
  return ctl, s
end

function M:set_view(ctl) self._view.ctl = ctl end

function M:partitions_of(host_path)
  return self._disk_parts[host_path] or self.partitions
end

function M:set_partitions(host_path, n)
  if not is_uint(n) then error("set_partitions: n must be an integer >= 0", 2) end
  self._disk_parts[host_path] = n
end

---------------------------------------------------------------------------
-- Faults and latency.

local function check_form(form, fname)
  if form ~= nil and not FORMS[form] then
    error(("%s: form must be \"nil\", \"false\", \"error\" or \"mixed\"")
      :format(fname), 3)
  end
end

function M:set_fault_form(form)
  check_form(form, "set_fault_form")
  self._fault_form = form or "nil"
end

function M:fail_next(op, n, message, form)
  n = n or 1
  if not is_uint(n) then error("fail_next: n must be an integer >= 0", 2) end
  check_form(form, "fail_next")
  for name in pairs(op_set(op, "fail_next")) do
    self._fail_next[name] = n > 0 and { n = n, message = message, form = form }
      or nil
  end
end

function M:fail_rate(p, ops, form)
  if type(p) ~= "number" or p < 0 or p > 1 then
    error("fail_rate: p must be a number in [0, 1]", 2)
  end
  check_form(form, "fail_rate")
  for name in pairs(op_set(ops, "fail_rate")) do
    self._fail_rate[name] = p > 0 and { p = p, form = form } or nil
  end
end

function M:clear_faults()
  self._fail_next, self._fail_rate = {}, {}
end

function M:set_latency(n, ops)
  if not is_uint(n) then error("set_latency: n must be an integer >= 0", 2) end
  for name in pairs(op_set(ops, "set_latency")) do
    self._latency[name] = n > 0 and n or nil
  end
end

function M:in_flight()
  local out = {}
  for _, info in pairs(self._inflight) do
    out[#out + 1] = { op = info.op, controller = info.controller,
                      lun = info.lun, host_path = info.host_path,
                      path = info.path, since = info.since }
  end
  table.sort(out, function(a, b) return a.since < b.since end)
  return out
end

-- Returns form, message when this call of op is to fail.
function M:_injected(op)
  local f = self._fail_next[op]
  if f then
    f.n = f.n - 1
    if f.n <= 0 then self._fail_next[op] = nil end
    return f.form or self._fault_form,
      f.message or ("injected failure of " .. op)
  end
  local r = self._fail_rate[op]
  if r and self:random() < r.p then
    return r.form or self._fault_form,
      ("injected failure of %s (rate %g)"):format(op, r.p)
  end
  return nil
end

---------------------------------------------------------------------------
-- The call skeleton shared by every callback.

local function log_entry(self, e)
  self._seq = self._seq + 1
  e.seq = self._seq
  self.log[#self.log + 1] = e
end

-- e: log entry pre-filled from the arguments (best effort); act(e) checks and
-- applies the call, returning nil on success or a refusal message.
function M:_call(op, e, act)
  e.op = op
  local n = self._latency[op]
  if n and coroutine.isyieldable() then
    local co = coroutine.running()
    self._flights = self._flights + 1
    self._inflight[co] = { op = op, controller = e.controller, lun = e.lun,
                           host_path = e.host_path, path = e.path,
                           since = self._flights }
    for _ = 1, n do coroutine.yield() end
    self._inflight[co] = nil
  end
  local form, msg = self:_injected(op)
  if form then
    e.ok, e.message, e.injected = false, msg, true
    log_entry(self, e)
    if form == "mixed" then
      local r = self:random()
      form = r < 1 / 3 and "nil" or r < 2 / 3 and "false" or "error"
    end
    if form == "error" then error(msg, 0)
    elseif form == "false" then return false end
    return nil, msg
  end
  local refusal = act(e)
  if refusal then
    e.ok, e.message = false, refusal
    log_entry(self, e)
    return nil, refusal
  end
  e.ok = true
  log_entry(self, e)
  return true
end

local function slot_name(c, l) return ("controller %d lun %d"):format(c, l) end

function M:_in_geometry(c, l)
  if c >= self.controllers or l >= self.luns_per_controller then
    return ("%s is outside the VM (%d controllers x %d luns)"):format(
      slot_name(c, l), self.controllers, self.luns_per_controller)
  end
end

-- The disk at (c, l), nil when empty or outside the geometry.
function M:_slot(c, l)
  if c >= self.controllers or l >= self.luns_per_controller then return nil end
  return self._slots[c * self.luns_per_controller + l]
end

local function mounts_on(self, rec)
  local paths = {}
  for path, m in pairs(self._mounts) do
    if m.disk == rec then paths[#paths + 1] = path end
  end
  table.sort(paths)
  return paths
end

local function pick(t, k) if type(t) == "table" then return t[k] end end

---------------------------------------------------------------------------
-- VM callbacks.

function M:add_scsi_disk(attachment, controller, lun)
  local e = { controller = controller, lun = lun,
              host_path = pick(attachment, "path"),
              read_only = pick(attachment, "read_only") }
  return self:_call("add_scsi_disk", e, function()
    local bad = check_shape(self.strict, attachment, ATTACHMENT, "attachment")
    if bad then return bad end
    if not is_uint(controller) or not is_uint(lun) then
      return "protocol: controller and lun must be integers >= 0"
    end
    bad = self:_in_geometry(controller, lun)
    if bad then return "add_scsi_disk: " .. bad end
    local path = attachment.path
    local rec = self:_slot(controller, lun)
    if rec then
      if rec.host_path ~= path then
        return ("add_scsi_disk: %s is occupied by '%s'"):format(
          slot_name(controller, lun), rec.host_path)
      end
      if rec.type ~= (attachment.type or "VirtualDisk")
          or rec.read_only ~= (attachment.read_only == true)
          or rec.evd_type ~= attachment.evd_type then
        return ("add_scsi_disk: '%s' is already attached at %s with a "
          .. "different attachment"):format(path, slot_name(controller, lun))
      end
      e.already = true
      return nil
    end
    local other = self._by_path[path]
    if other then
      return ("add_scsi_disk: '%s' is already attached at %s"):format(
        path, slot_name(other.controller, other.lun))
    end
    rec = { controller = controller, lun = lun, host_path = path,
            type = attachment.type or "VirtualDisk",
            read_only = attachment.read_only == true,
            evd_type = attachment.evd_type, ejected = false }
    self._slots[controller * self.luns_per_controller + lun] = rec
    self._by_path[path] = rec
  end)
end

function M:remove_scsi_disk(controller, lun)
  local rec = is_uint(controller) and is_uint(lun)
    and self:_slot(controller, lun) or nil
  local e = { controller = controller, lun = lun,
              host_path = rec and rec.host_path }
  return self:_call("remove_scsi_disk", e, function()
    if not is_uint(controller) or not is_uint(lun) then
      return "protocol: controller and lun must be integers >= 0"
    end
    local bad = self:_in_geometry(controller, lun)
    if bad then return "remove_scsi_disk: " .. bad end
    rec = self:_slot(controller, lun)
    if not rec then
      if self.forgiving then e.already = true; return nil end
      return ("remove_scsi_disk: no disk at %s"):format(
        slot_name(controller, lun))
    end
    local mounted = mounts_on(self, rec)
    if #mounted > 0 then
      return ("remove_scsi_disk: '%s' at %s still has mounted partition(s): %s")
        :format(rec.host_path, slot_name(controller, lun),
                table.concat(mounted, ", "))
    end
    if self.guest == "linux" and not rec.ejected then
      return ("remove_scsi_disk: the guest has not ejected '%s' at %s "
        .. "(remove_scsi_device first)"):format(rec.host_path,
        slot_name(controller, lun))
    end
    e.host_path = rec.host_path
    self._slots[controller * self.luns_per_controller + lun] = nil
    self._by_path[rec.host_path] = nil
  end)
end

---------------------------------------------------------------------------
-- Guest callbacks.

-- Shared by both guests once the device is known: checks and records a mount.
function M:_mount(e, rec, partition, path, read_only, scratch)
  e.host_path, e.controller, e.lun = rec.host_path, rec.controller, rec.lun
  e.partition = partition
  if rec.ejected then
    return ("mount: '%s' at %s has been ejected by the guest"):format(
      rec.host_path, slot_name(rec.controller, rec.lun))
  end
  local nparts = self:partitions_of(rec.host_path)
  if partition > nparts then
    return ("mount: '%s' has no partition %d (it has partitions 1..%d; "
      .. "0 is the whole disk)"):format(rec.host_path, partition, nparts)
  end
  local m = self._mounts[path]
  if m then
    if m.disk == rec and m.partition == partition
        and m.read_only == read_only then
      e.already = true
      return nil
    end
    return ("mount: %s is already mounted (%s partition %d, '%s')"):format(
      path, slot_name(m.controller, m.lun), m.partition, m.host_path)
  end
  self._mounts[path] = { path = path, disk = rec, host_path = rec.host_path,
                         controller = rec.controller, lun = rec.lun,
                         partition = partition, read_only = read_only,
                         scratch = scratch }
end

-- Windows: find the attached disk a { container_path, lun } names.
function M:_windows_device(path, lun)
  local c, l, p = path:match("(%d+)_(%d+)_(%d+)$")
  c, l, p = math.tointeger(tonumber(c)), math.tointeger(tonumber(l)),
    math.tointeger(tonumber(p))
  if c and l == lun and c < self.controllers
      and l < self.luns_per_controller then
    local rec = self:_slot(c, l)
    if rec then return rec, p end
  end
  local found = {}
  for _, rec in pairs(self._slots) do
    if rec.lun == lun then found[#found + 1] = rec end
  end
  if #found == 0 then
    return nil, ("mount: no disk is attached at lun %d"):format(lun)
  elseif #found > 1 then
    return nil, ("mount: lun %d is ambiguous (%d controllers have a disk "
      .. "there) and %s does not name one"):format(lun, #found, path)
  end
  return found[1], 0
end

function M:_add_mapped(op, settings, scratch)
  local e = {}
  if self.guest == "linux" then
    e.path = pick(settings, "mount_path")
    e.controller, e.lun = pick(settings, "controller"), pick(settings, "lun")
    e.partition, e.read_only = pick(settings, "partition"),
      pick(settings, "read_only")
    local rec = is_uint(e.controller) and is_uint(e.lun)
      and self:_slot(e.controller, e.lun)
    e.host_path = rec and rec.host_path or nil
    return self:_call(op, e, function()
      if scratch then
        return "protocol: a Linux guest has no " .. op
      end
      local bad = check_shape(self.strict, settings, LINUX_SETTINGS, "settings")
      if bad then return bad end
      local c, l = settings.controller, settings.lun
      bad = self:_in_geometry(c, l)
      if bad then return "mount: " .. bad end
      local disk = self:_slot(c, l)
      if not disk then
        return ("mount: no disk is attached at %s"):format(slot_name(c, l))
      end
      return self:_mount(e, disk, settings.partition, settings.mount_path,
                         settings.read_only == true, false)
    end)
  end
  e.path, e.lun = pick(settings, "container_path"), pick(settings, "lun")
  if type(e.path) == "string" and is_uint(e.lun) then
    local rec, p = self:_windows_device(e.path, e.lun)
    if rec then
      e.controller, e.host_path, e.partition = rec.controller, rec.host_path, p
    end
  end
  return self:_call(op, e, function()
    local bad = check_shape(self.strict, settings, WINDOWS_SETTINGS, "settings")
    if bad then return bad end
    local rec, p = self:_windows_device(settings.container_path, settings.lun)
    if not rec then return p end
    return self:_mount(e, rec, p, settings.container_path, false, scratch)
  end)
end

function M:add_mapped_virtual_disk(settings)
  return self:_add_mapped("add_mapped_virtual_disk", settings, false)
end

function M:add_mapped_virtual_disk_for_container_scratch(settings)
  return self:_add_mapped("add_mapped_virtual_disk_for_container_scratch",
                          settings, true)
end

function M:remove_mapped_virtual_disk(settings)
  local linux = self.guest == "linux"
  local path = pick(settings, linux and "mount_path" or "container_path")
  local m = type(path) == "string" and self._mounts[path] or nil
  local e = { path = path, lun = pick(settings, "lun"),
              controller = linux and pick(settings, "controller")
                or (m and m.controller),
              partition = linux and pick(settings, "partition")
                or (m and m.partition),
              host_path = m and m.host_path }
  return self:_call("remove_mapped_virtual_disk", e, function()
    local bad = check_shape(self.strict, settings,
      linux and LINUX_SETTINGS or WINDOWS_SETTINGS, "settings")
    if bad then return bad end
    m = self._mounts[path]
    if not m then
      if self.forgiving then e.already = true; return nil end
      return ("unmount: nothing is mounted at %s"):format(path)
    end
    e.host_path = m.host_path
    if m.lun ~= settings.lun or (linux and (m.controller ~= settings.controller
        or m.partition ~= settings.partition)) then
      return ("unmount: %s holds %s partition %d, not the device named"):format(
        path, slot_name(m.controller, m.lun), m.partition)
    end
    self._mounts[path] = nil
  end)
end

function M:remove_scsi_device(device)
  local c, l = pick(device, "controller"), pick(device, "lun")
  local rec = is_uint(c) and is_uint(l) and self:_slot(c, l) or nil
  local e = { controller = c, lun = l, host_path = rec and rec.host_path }
  return self:_call("remove_scsi_device", e, function()
    if self.guest ~= "linux" then
      return "protocol: a Windows guest has no remove_scsi_device"
    end
    local bad = check_shape(self.strict, device, DEVICE, "device")
    if bad then return bad end
    bad = self:_in_geometry(c, l)
    if bad then return "eject: " .. bad end
    rec = self:_slot(c, l)
    if not rec then
      if self.forgiving then e.already = true; return nil end
      return ("eject: no device at %s"):format(slot_name(c, l))
    end
    e.host_path = rec.host_path
    if rec.ejected then
      if self.forgiving then e.already = true; return nil end
      return ("eject: '%s' at %s is already ejected"):format(
        rec.host_path, slot_name(c, l))
    end
    local mounted = mounts_on(self, rec)
    if #mounted > 0 then
      return ("eject: '%s' at %s has mounted partition(s): %s"):format(
        rec.host_path, slot_name(c, l), table.concat(mounted, ", "))
    end
    rec.ejected = true
  end)
end

---------------------------------------------------------------------------
-- Log and state queries.

local function copy(t)
  local r = {}
  for k, v in pairs(t) do r[k] = v end
  return r
end

function M:events(filter)
  local pred
  if filter == nil then
    pred = function() return true end
  elseif type(filter) == "function" then
    pred = filter
  else
    local set = op_set(filter, "events")
    pred = function(e) return set[e.op] end
  end
  local out = {}
  for _, e in ipairs(self.log) do
    if pred(e) then out[#out + 1] = copy(e) end
  end
  return out
end

function M:refusals()
  return self:events(function(e) return e.ok == false and not e.injected end)
end

function M:counts()
  local c = { calls = 0, ok = 0, failed = 0, injected = 0, refused = 0,
              already = 0, by_op = {} }
  for _, e in ipairs(self.log) do
    local b = c.by_op[e.op]
    if not b then
      b = { calls = 0, ok = 0, failed = 0 }
      c.by_op[e.op] = b
    end
    c.calls, b.calls = c.calls + 1, b.calls + 1
    if e.ok then
      c.ok, b.ok = c.ok + 1, b.ok + 1
      if e.already then c.already = c.already + 1 end
    else
      c.failed, b.failed = c.failed + 1, b.failed + 1
      if e.injected then c.injected = c.injected + 1
      else c.refused = c.refused + 1 end
    end
  end
  return c
end

function M:clear_log()
  self.log = {}
end

function M:attached()
  local idx = {}
  for i in pairs(self._slots) do idx[#idx + 1] = i end
  table.sort(idx)
  local out = {}
  for _, i in ipairs(idx) do
    local r = self._slots[i]
    out[#out + 1] = { controller = r.controller, lun = r.lun,
                      host_path = r.host_path, ejected = r.ejected,
                      read_only = r.read_only, type = r.type }
  end
  return out
end

function M:mounts()
  local out = {}
  for _, m in pairs(self._mounts) do
    out[#out + 1] = { path = m.path, controller = m.controller, lun = m.lun,
                      partition = m.partition, read_only = m.read_only,
                      host_path = m.host_path, scratch = m.scratch }
  end
  table.sort(out, function(a, b)
    if a.controller ~= b.controller then return a.controller < b.controller end
    if a.lun ~= b.lun then return a.lun < b.lun end
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.path < b.path
  end)
  return out
end

function M:is_empty()
  return next(self._slots) == nil and next(self._mounts) == nil
end

---------------------------------------------------------------------------
-- Rendering.

local MAX_SHOWN = 16

function M:render(ctl)
  ctl = ctl or self._view.ctl
  local L = self.luns_per_controller
  -- Controller view: slot index -> slots() entry.
  local cv = {}
  if ctl then
    local ok, slots = pcall(function() return ctl:slots() end)
    if ok and type(slots) == "table" then
      for _, e in ipairs(slots) do
        if is_uint(e.controller) and is_uint(e.lun) then
          cv[e.controller * L + e.lun] = e
        end
      end
    end
  end
  local nmounts = {}
  for _, m in pairs(self._mounts) do
    local i = m.controller * L + m.lun
    nmounts[i] = (nmounts[i] or 0) + 1
  end

  local function cell(i)
    local rec, c = self._slots[i], cv[i]
    local mark
    if rec then
      mark = rec.ejected and "E" or "A"
    elseif c and c.host_path then
      mark = "r"
    elseif c and c.pinned then
      return "P"
    else
      return "."
    end
    if nmounts[i] then mark = mark .. nmounts[i] end
    if c and c.pinned then mark = mark .. "*" end
    return mark
  end

  local out = {}
  local function add(fmt, ...)
    out[#out + 1] = (fmt:format(...):gsub("%s+$", ""))
  end
  local nattached = 0
  for _ in pairs(self._slots) do nattached = nattached + 1 end
  local nm = 0
  for _ in pairs(self._mounts) do nm = nm + 1 end
  add("simulated VM (%s guest): %d controller%s x %d luns, %d disk%s attached, "
    .. "%d mount%s%s", self.guest, self.controllers,
    self.controllers == 1 and "" or "s", L, nattached,
    nattached == 1 and "" or "s", nm, nm == 1 and "" or "s",
    ctl and "" or " (no controller view: pins and refs not shown)")
  local shown_l = math.min(L, MAX_SHOWN)
  local shown_c = math.min(self.controllers, MAX_SHOWN)
  local hdr = { ("%14s"):format("lun") }
  for l = 0, shown_l - 1 do hdr[#hdr + 1] = ("%-4d"):format(l) end
  add("%s", table.concat(hdr, " "))
  for c = 0, shown_c - 1 do
    local row = { ("controller %-3d"):format(c) }
    for l = 0, shown_l - 1 do row[#row + 1] = ("%-4s"):format(cell(c * L + l)) end
    add("%s", table.concat(row, " "))
  end
  if shown_l < L or shown_c < self.controllers then
    local hidden = 0
    local function count(i)
      if self._slots[i] or cv[i] then hidden = hidden + 1 end
    end
    for i in pairs(self._slots) do
      if i % L >= shown_l or i // L >= shown_c then count(i) end
    end
    for i in pairs(cv) do
      if not self._slots[i] and (i % L >= shown_l or i // L >= shown_c) then
        count(i)
      end
    end
    local what = {}
    if shown_l < L then
      what[#what + 1] = ("luns 0-%d of %d"):format(shown_l - 1, L)
    end
    if shown_c < self.controllers then
      what[#what + 1] = ("controllers 0-%d of %d"):format(shown_c - 1,
        self.controllers)
    end
    add("(showing %s; %d used slot%s outside the grid, listed below)",
      table.concat(what, " and "), hidden, hidden == 1 and "" or "s")
  end
  add("legend: . free  A attached  E ejected by the guest, VM removal pending")
  add("        r reserved by the controller, not yet added  P pinned, empty")
  add("        digit = mounted partitions  * = pinned slot")

  -- Disks: union of the VM's and the controller's view, by slot index.
  local idx, seen = {}, {}
  for i in pairs(self._slots) do idx[#idx + 1], seen[i] = i, true end
  for i in pairs(cv) do if not seen[i] then idx[#idx + 1] = i end end
  table.sort(idx)
  local width = 16
  for _, i in ipairs(idx) do
    local path = self._slots[i] and self._slots[i].host_path
      or (cv[i] and cv[i].host_path) or ""
    width = math.max(width, #path)
  end
  local pathfmt = "%-" .. width .. "s"
  if #idx > 0 then add("disks:") end
  for _, i in ipairs(idx) do
    local rec, c = self._slots[i], cv[i]
    local parts = { ("  %-6s"):format(("%d:%d"):format(i // L, i % L)) }
    local path = rec and rec.host_path or (c and c.host_path)
    parts[#parts + 1] = pathfmt:format(path or "(pinned, empty)")
    if rec then
      parts[#parts + 1] = rec.ejected and "ejected" or "attached"
      if rec.read_only then parts[#parts + 1] = "ro" end
    elseif c and c.host_path then
      parts[#parts + 1] = "reserved, not in the VM"
    end
    if c then
      if c.pinned and path then parts[#parts + 1] = "pinned" end
      if c.busy then parts[#parts + 1] = "BUSY" end
      if c.host_path then
        parts[#parts + 1] = ("claims %s"):format(tostring(c.reservations))
      end
      local ps = {}
      for _, p in ipairs(c.partitions or {}) do
        ps[#ps + 1] = ("p%s:%s refs %s"):format(tostring(p.partition),
          tostring(p.state), tostring(p.refs))
      end
      if #ps > 0 then parts[#parts + 1] = "[" .. table.concat(ps, ", ") .. "]" end
    end
    add("%s", table.concat(parts, "  "))
  end

  local ms = self:mounts()
  if #ms > 0 then add("mounts:") end
  for _, m in ipairs(ms) do
    local refs = ""
    local c = cv[m.controller * L + m.lun]
    for _, p in ipairs(c and c.partitions or {}) do
      if p.partition == m.partition then
        refs = ("  refs %s"):format(tostring(p.refs))
      end
    end
    add("  %-26s %d:%d partition %d  %s%s%s", m.path, m.controller, m.lun,
      m.partition, m.read_only and "ro" or "rw", m.scratch and " scratch" or "",
      refs)
  end
  return table.concat(out, "\n")
end

return sim
