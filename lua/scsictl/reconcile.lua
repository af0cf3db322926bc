--[==[
scsictl.reconcile — after a restart, compares a controller's records with
what QEMU and the Linux guest really hold, and (on request) repairs the
differences so that the next map adds what is missing and the next unmap
removes what is there (P1-P9 hold against the real VM again).

  local reconcile = require("scsictl.reconcile")
  local ctl = assert(scsictl.open(state_file, { vm = vm, linux_guest = guest }))
  local diffs, summary = reconcile.reconcile(ctl, { vm = vm, guest = guest, repair = true })
  io.stderr:write(reconcile.format(diffs, summary))

reconcile.reconcile(ctl, opts) -> differences, summary | nil, msg
  opts.vm      a scsictl.qemu VM backend (its observe())          (required)
  opts.guest   a scsictl.qemu_guest backend (its observe(n), and for
               repairs remove_mapped_virtual_disk, remove_scsi_device)
                                                                  (required)
  opts.repair  true: carry the repairs out (default false: nothing changes)
  differences: array, sorted by slot, of { kind, controller, lun,
  partition, mount_path, detail (one sentence), repair (what repairing
  does, nil when nothing is to be done), repaired (boolean), error (why a
  repair failed or was not tried) }. summary: { slots (compared), total,
  repaired, failed, by_kind = { kind = count }, seconds }.
  nil, msg when QEMU or the guest cannot be observed (nothing changed).

reconcile.compare(slots, qemu_view, guest_view) -> differences
  The comparison alone, with no I/O: ctl:slots(), vm:observe(),
  guest:observe(n). Each difference carries its repair steps in `steps`.

reconcile.format(differences [, summary]) -> text
reconcile.KINDS  kind -> what it means (docs/reliability.md explains each)
reconcile.by_slot(a, b) -> boolean
  The order of every list of slots here and in the observe() of the QEMU
  and guest backends: by controller, then LUN (a table.sort comparator).

Repairs run in an order that keeps P1 and P2 true in the guest and QEMU:
unmounts, then guest ejects, then QEMU removals, then the records (disk
states before mount states). A failed step stops the later steps of its
slot, which keeps its records untouched. Slots with a step in flight
(`busy`), and slots whose mount path a guest step still locks, are left
alone; pinned slots without a disk (a rootfs) are not compared.
]==]

local M = {}

M.ROOT = "/run/mounts/scsi"   -- the Linux guest paths of scsictl (spec §4)

M.KINDS = {
  busy = "a step is in flight on the slot (or a guest step holds its mount path's lock): not compared",
  vm_unexplained = "QEMU has our device at a slot with no disk record, or holding another file",
  vm_missing = "the record says attached or ejected, QEMU has no device there",
  vm_unrecorded = "the record says reserved, QEMU has the device for this very disk",
  vm_leftover = "QEMU has our block nodes or throttle group at a slot without our device",
  guest_device_unexplained = "the guest has a SCSI disk at a slot that should have none",
  guest_device_gone = "the record says attached in a release, the guest already ejected the disk",
  guest_device_present = "the record says ejected, the guest still has the disk",
  guest_device_missing = "the record says attached (no release begun), the guest has no disk there",
  guest_missing_mount = "the record says mounted, the guest has no mount of that disk there",
  guest_unrecorded_mount = "the record says reserved, the guest has that disk mounted at that path",
  guest_unexplained_mount = "a mount under /run/mounts/scsi that no mounted partition explains",
  guest_leftover_path = "an empty directory or file under /run/mounts/scsi",
}

-- The order repairs run in: guest mounts, guest disks, QEMU, records.
local PHASE = { unmount = 1, eject = 2, remove = 3, disk_state = 4, mount_state = 5 }

function M.by_slot(a, b)
  if a.controller ~= b.controller then return a.controller < b.controller end
  return a.lun < b.lun
end

local function key(c, l) return c .. ":" .. l end

local function guest_path(c, l, p) return ("%s/%d_%d_%d"):format(M.ROOT, c, l, p) end

local function where(c, l) return ("controller %d lun %d"):format(c, l) end

local function index(list)
  local t = {}
  for _, e in ipairs(list or {}) do
    if e.controller ~= nil and e.lun ~= nil then t[key(e.controller, e.lun)] = e end
  end
  return t
end

-- Every slot any of the three views mentions, sorted.
local function all_slots(...)
  local seen, out = {}, {}
  for i = 1, select("#", ...) do
    for _, e in ipairs(select(i, ...) or {}) do
      local c, l = e.controller, e.lun
      if c ~= nil and l ~= nil and not seen[key(c, l)] then
        seen[key(c, l)] = true
        out[#out + 1] = { controller = c, lun = l }
      end
    end
  end
  table.sort(out, M.by_slot)
  return out
end

-- The comparison of one slot, collecting differences into `out`.
local Slot = {}
Slot.__index = Slot

function Slot:add(kind, detail, steps, extra)
  local d = { kind = kind, controller = self.c, lun = self.l, detail = detail, repaired = false,
              steps = steps or {} }
  for k, v in pairs(extra or {}) do d[k] = v end
  local what = {}
  for _, s in ipairs(d.steps) do what[#what + 1] = s.text end
  d.repair = #what > 0 and table.concat(what, ", then ") or nil
  self.out[#self.out + 1] = d
  return d
end

function Slot:remove_step()
  return { op = "remove", controller = self.c, lun = self.l,
           text = ("vm:remove_scsi_disk(%d, %d)"):format(self.c, self.l) }
end

function Slot:disk_step(state)
  return { op = "disk_state", controller = self.c, lun = self.l, state = state,
           text = ("record the disk %s"):format(state) }
end

-- QEMU against the disk record; sets self.target, the disk state the
-- record will have once repaired ("reserved", "attached", "ejected"; nil
-- without a disk record).
function Slot:compare_vm()
  local disk, q = self.disk, self.q
  local dev = q and q.device
  local file = q and q.file
  local nodes = q and (#(q.nodes or {}) > 0 or q.group) and not dev
  local name = ("our device at %s"):format(where(self.c, self.l))
  if not disk then
    if dev then
      self:add("vm_unexplained", ("QEMU has %s (file %s) and there is no disk record there")
        :format(name, tostring(file)), { self:remove_step() })
    elseif nodes then
      self:add("vm_leftover", ("QEMU has block nodes or a throttle group of ours at %s and no device")
        :format(where(self.c, self.l)), { self:remove_step() })
    end
    return
  end
  local same = dev and (file == nil or file == disk.host_path)
  if dev and not same then
    local steps = { self:remove_step() }
    if disk.state ~= "reserved" then steps[2] = self:disk_step("reserved") end
    self:add("vm_unexplained", ("QEMU has %s holding %s, the record has %s"):format(name, file, disk.host_path),
      steps)
    self.target = "reserved"
  elseif disk.state == "reserved" then
    if dev then
      self:add("vm_unrecorded", ("the record of %s says reserved, QEMU has its device (an add in flight at a crash)")
        :format(disk.host_path), { self:disk_step("attached") })
      self.target = "attached"
    else
      if nodes then
        self:add("vm_leftover", ("QEMU has block nodes of ours at %s and no device; the record says reserved")
          :format(where(self.c, self.l)), { self:remove_step() })
      end
      self.target = "reserved"
    end
  elseif dev then
    self.target = disk.state
  else
    local steps = { self:disk_step("reserved") }
    if nodes then table.insert(steps, 1, self:remove_step()) end
    self:add("vm_missing", ("the record of %s says %s, QEMU has no device at %s%s")
      :format(disk.host_path, disk.state, where(self.c, self.l), nodes and " (only leftover nodes)" or ""), steps)
    self.target = "reserved"
  end
end

-- The guest's SCSI disk against the target state.
function Slot:compare_device()
  local gd, t, disk = self.gd, self.target, self.disk
  if t == "attached" and not gd then
    if disk.tearing_down then
      self:add("guest_device_gone", ("the release of %s began and the guest has no disk at %s: it was ejected")
        :format(disk.host_path, where(self.c, self.l)), { self:disk_step("ejected") })
      self.target = "ejected"
    else
      self:add("guest_device_missing", ("QEMU has %s at %s, the guest has no disk there; the next mount asks "
        .. "the guest to scan the lun, the next release finds it gone"):format(disk.host_path, where(self.c, self.l)))
    end
  elseif t == "ejected" and gd then
    self:add("guest_device_present", ("the record of %s says ejected, the guest still has it as %s; the release "
      .. "ejects it again"):format(disk.host_path, tostring(gd.block)), { self:disk_step("attached") })
    self.target = "attached"
  elseif t ~= "attached" and t ~= "ejected" and gd then
    local why = disk and "the disk is not attached once repaired" or "no disk is recorded"
    self:add("guest_device_unexplained", ("the guest has a SCSI disk (%s) at %s, where %s"):format(
      tostring(gd.block), where(self.c, self.l), why),
      { { op = "eject", controller = self.c, lun = self.l,
          text = ("guest:remove_scsi_device{ controller = %d, lun = %d }"):format(self.c, self.l) } })
  end
end

-- The partition records against the guest's mounts; marks the mounts
-- they explain in `explained`.
function Slot:compare_mounts(mounts, explained)
  local disk, gd = self.disk, self.gd
  if not disk then return end
  local attached = self.target == "attached"
  for _, p in ipairs(disk.partitions or {}) do
    local path = p.guest_path or guest_path(self.c, self.l, p.partition)
    local m = mounts[path]
    local ours = attached and m and gd and m.block ~= nil and m.block == gd.block
    local extra = { partition = p.partition, mount_path = path }
    if p.state == "mounted" and ours then
      explained[path] = true
    elseif p.state == "mounted" and attached then
      -- (Not attached once repaired: the disk state's repair resets it.)
      self:add("guest_missing_mount", ("the record says partition %d of %s is mounted at %s, the guest has %s")
        :format(p.partition, disk.host_path, path, m and ("another device there (" .. m.device .. ")") or "no mount"),
        { { op = "mount_state", controller = self.c, lun = self.l, partition = p.partition, state = "reserved",
            text = "record the partition reserved" } }, extra)
    elseif p.state == "reserved" and ours then
      explained[path] = true
      self:add("guest_unrecorded_mount", ("the record says partition %d of %s is reserved, the guest has it "
        .. "mounted at %s (a mount in flight at a crash)"):format(p.partition, disk.host_path, path),
        { { op = "mount_state", controller = self.c, lun = self.l, partition = p.partition, state = "mounted",
            text = "record the partition mounted" } }, extra)
    end
  end
end

local function unmount_step(m)
  return { op = "unmount", controller = m.controller, lun = m.lun, partition = m.partition,
           mount_path = m.mount_path,
           text = ("guest:remove_mapped_virtual_disk{ mount_path = %q }"):format(m.mount_path) }
end

function M.compare(slots, qv, gv)
  if type(slots) ~= "table" then error("bad argument #1 to 'compare' (ctl:slots() expected)", 2) end
  if type(qv) ~= "table" then error("bad argument #2 to 'compare' (vm:observe() expected)", 2) end
  if type(gv) ~= "table" then error("bad argument #3 to 'compare' (guest:observe() expected)", 2) end
  local recs, qs, gds = index(slots), index(qv), index(gv.devices)
  local mounts, skip, out, explained = {}, {}, {}, {}
  for _, m in ipairs(gv.mounts or {}) do mounts[m.mount_path] = m end
  local locked = {}
  local root = "^" .. M.ROOT:gsub("%p", "%%%0") .. "/(%d+)_(%d+)"
  for _, p in ipairs(gv.locked or {}) do  -- a mount path's lock, or an eject's (no partition)
    local c, l = p:match(root .. "_%d+$")
    if not c then c, l = p:match(root .. "$") end
    if c then locked[key(math.tointeger(tonumber(c)), math.tointeger(tonumber(l)))] = p end
  end
  for _, s in ipairs(all_slots(slots, qv, gv.devices, gv.mounts, gv.leftovers)) do
    local k = key(s.controller, s.lun)
    local r = recs[k]
    local slot = setmetatable({ c = s.controller, l = s.lun, q = qs[k], gd = gds[k], out = out,
                                disk = r and r.host_path and r or nil }, Slot)
    if r and r.busy then
      skip[k] = true
      slot:add("busy", ("a step is in flight on %s: not compared"):format(where(s.controller, s.lun)))
    elseif locked[k] then
      skip[k] = true
      slot:add("busy", ("a guest step still holds the lock of %s: not compared"):format(locked[k]))
    elseif r and r.pinned and not slot.disk then
      skip[k] = true                     -- a rootfs slot: its disk is not ours to judge
    else
      slot:compare_vm()
      slot:compare_device()
      slot:compare_mounts(mounts, explained)
    end
  end
  for _, m in ipairs(gv.mounts or {}) do
    local k = m.controller and key(m.controller, m.lun)
    if not explained[m.mount_path] and not (k and skip[k]) then
      local d = { kind = "guest_unexplained_mount", controller = m.controller, lun = m.lun, partition = m.partition,
        mount_path = m.mount_path, repaired = false, steps = { unmount_step(m) },
        detail = ("the guest has %s mounted at %s%s and no mounted partition record explains it")
          :format(m.device or "?", m.mount_path, (m.count or 1) > 1 and (" (" .. m.count .. " stacked)") or "") }
      d.repair = d.steps[1].text
      out[#out + 1] = d
    end
  end
  for _, e in ipairs(gv.leftovers or {}) do
    local k = e.controller and key(e.controller, e.lun)
    if not (k and skip[k]) then
      local d = { kind = "guest_leftover_path", controller = e.controller, lun = e.lun, partition = e.partition,
        mount_path = e.mount_path, repaired = false, steps = { unmount_step(e) },
        detail = ("the guest has %s with nothing mounted on it"):format(e.mount_path) }
      d.repair = d.steps[1].text
      out[#out + 1] = d
    end
  end
  -- By slot, then path; within that in the order found (VM, then guest).
  local order = {}
  for i, d in ipairs(out) do order[d] = i end
  table.sort(out, function(a, b)
    local ac, bc = a.controller or math.maxinteger, b.controller or math.maxinteger
    if ac ~= bc then return ac < bc end
    local al, bl = a.lun or math.maxinteger, b.lun or math.maxinteger
    if al ~= bl then return al < bl end
    if (a.mount_path or "") ~= (b.mount_path or "") then return (a.mount_path or "") < (b.mount_path or "") end
    return order[a] < order[b]
  end)
  return out
end

---------------------------------------------------------------------------
-- Repairs.

local function run_step(ctl, opts, s)
  if s.op == "unmount" then
    return opts.guest:remove_mapped_virtual_disk{ mount_path = s.mount_path, controller = s.controller,
      lun = s.lun, partition = s.partition }
  elseif s.op == "eject" then
    return opts.guest:remove_scsi_device{ controller = s.controller, lun = s.lun }
  elseif s.op == "remove" then
    return opts.vm:remove_scsi_disk(s.controller, s.lun)
  elseif s.op == "disk_state" then
    return ctl:set_disk_state(s.controller, s.lun, s.state)
  end
  return ctl:set_mount_state(s.controller, s.lun, s.partition, s.state)
end

-- Every difference's steps, phase by phase; a failure blocks the later
-- steps of its slot (a path outside any slot blocks nothing else).
local function repair(ctl, opts, diffs)
  local work = {}
  for n, d in ipairs(diffs) do
    for i, s in ipairs(d.steps) do work[#work + 1] = { d = d, s = s, n = n, i = i } end
  end
  table.sort(work, function(a, b)
    if PHASE[a.s.op] ~= PHASE[b.s.op] then return PHASE[a.s.op] < PHASE[b.s.op] end
    if a.n ~= b.n then return a.n < b.n end
    return a.i < b.i
  end)
  local blocked, done = {}, {}
  for _, w in ipairs(work) do
    local d, s = w.d, w.s
    local k = s.controller and key(s.controller, s.lun) or s.mount_path
    if d.error == nil then
      if blocked[k] then
        d.error = ("not tried: %s failed first"):format(blocked[k])
      else
        -- One step may repair two differences (a removal and a state, say):
        -- it runs once.
        local id = table.concat({ s.op, tostring(s.controller), tostring(s.lun), tostring(s.partition),
                                  tostring(s.mount_path), tostring(s.state) }, " ")
        local ok, msg = done[id], nil
        if ok == nil then
          local r
          r, msg = run_step(ctl, opts, s)
          ok = r ~= nil and r ~= false
          done[id] = ok
        end
        if not ok then
          d.error = ("%s failed: %s"):format(s.text, tostring(msg or "an earlier run of it failed"))
          blocked[k] = s.text
        end
      end
    end
  end
  for _, d in ipairs(diffs) do d.repaired = #d.steps > 0 and d.error == nil end
end

local function check_opts(ctl, opts)
  local ok, slots = pcall(function() return ctl.slots end)
  if not ok or type(slots) ~= "function" then
    error("bad argument #1 to 'reconcile' (controller expected)", 3)
  end
  if type(opts) ~= "table" then error("bad argument #2 to 'reconcile' (options table expected)", 3) end
  for k in pairs(opts) do
    if k ~= "vm" and k ~= "guest" and k ~= "repair" then
      error(("bad argument #2 to 'reconcile' (unknown option '%s')"):format(tostring(k)), 3)
    end
  end
  if type(opts.vm) ~= "table" or type(opts.vm.observe) ~= "function" then
    error("bad argument #2 to 'reconcile' (opts.vm must be a VM backend with observe())", 3)
  end
  if type(opts.guest) ~= "table" or type(opts.guest.observe) ~= "function" then
    error("bad argument #2 to 'reconcile' (opts.guest must be a guest backend with observe(controllers))", 3)
  end
  if opts.repair ~= nil and type(opts.repair) ~= "boolean" then
    error("bad argument #2 to 'reconcile' (opts.repair must be a boolean)", 3)
  end
end

local function summarise(diffs, n, seconds)
  local s = { slots = n, total = #diffs, repaired = 0, failed = 0, by_kind = {}, seconds = seconds }
  for _, d in ipairs(diffs) do
    s.by_kind[d.kind] = (s.by_kind[d.kind] or 0) + 1
    if d.repaired then s.repaired = s.repaired + 1 elseif d.error then s.failed = s.failed + 1 end
  end
  return s
end

local function clock()
  local ok, uv = pcall(require, "luv")
  if ok then return uv.hrtime() / 1e9 end
  return os.clock()
end

function M.reconcile(ctl, opts)
  check_opts(ctl, opts)
  local started = clock()
  local slots = ctl:slots()
  local qv, msg = opts.vm:observe()
  if not qv then return nil, "reconcile: QEMU: " .. tostring(msg) end
  local gv
  gv, msg = opts.guest:observe(ctl:stats().controllers)
  if not gv then return nil, "reconcile: guest: " .. tostring(msg) end
  local diffs = M.compare(slots, qv, gv)
  if opts.repair then repair(ctl, opts, diffs) end
  local n = #all_slots(slots, qv, gv.devices, gv.mounts, gv.leftovers)
  return diffs, summarise(diffs, n, clock() - started)
end

function M.format(diffs, summary)
  local out = {}
  if summary then
    local kinds = {}
    for k, v in pairs(summary.by_kind) do kinds[#kinds + 1] = ("%s %d"):format(k, v) end
    table.sort(kinds)
    out[1] = ("reconcile: %d difference%s over %d slot%s (%d repaired, %d failed) in %.2f s%s"):format(
      summary.total, summary.total == 1 and "" or "s", summary.slots, summary.slots == 1 and "" or "s",
      summary.repaired, summary.failed, summary.seconds or 0,
      #kinds > 0 and (": " .. table.concat(kinds, ", ")) or "")
  end
  for _, d in ipairs(diffs) do
    local slot = d.controller and ("c%d l%d%s"):format(d.controller, d.lun, d.partition and (" p" .. d.partition) or "")
      or "-"
    local state = d.repaired and "repaired: " .. d.repair or d.error and "NOT repaired: " .. d.error
      or d.repair and "repair: " .. d.repair or "nothing to repair"
    out[#out + 1] = ("  %-24s %-12s %s [%s]"):format(d.kind, slot, d.detail, state)
  end
  return table.concat(out, "\n") .. "\n"
end

return M
