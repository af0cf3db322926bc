-- Randomized model-based spec of spec §6 (P1-P9) through the Lua API.
--
-- Each run (a seed and a guest flavour) drives a controller with random
-- actions over a small pool (4 host paths x 2 disk configs, 3 partitions x
-- 2 mount configs, rootfs pins) while the backend's Lua callbacks, chosen at
-- random per call:
--   * succeed (returning nothing, true, 0, "", a table, "ok", nil, nil);
--   * fail in all three spec §4 ways: raise (a string, a table, nil, a
--     number), return false (with or without a message), return nil, msg;
--   * yield (when running in a coroutine) and are resumed later, in random
--     order, with success or failure values -- or abandoned, by
--     coroutine.close or by dropping the coroutine and collecting it;
--   * yield outside a coroutine (a callback failure by the README);
--   * re-enter: call ctl:reserve / map_to_guest / unmap_from_guest on other
--     disks and on their own disk (busy), ctl:save and ctl:close (busy).
-- Operations run in coroutines driven by a small scheduler, or directly.
--
-- A shadow model is built from the callback log (a slot is attached after a
-- successful add, ejected after a successful eject, partitions mounted after
-- a successful mount) plus the ids the spec holds; after every action:
--   P1 every callback is checked on entry: add only when not attached,
--      remove only when attached (and ejected, Linux), eject only attached
--      and not ejected, mount only when not mounted, unmount only mounted;
--   P2 mount only on an attached, not ejected disk; eject/remove only with
--      nothing mounted on that slot;
--   P3 the final teardown (backends succeed) leaves nothing used but pins,
--      and every add has its remove, every mount its unmount;
--   P4 every callback of an operation names the slot its id's disk holds
--      (and the host path, partition, guest path); map returns the
--      canonical path; a slot never holds two disks;
--   P5 a failed reserve / pin leaves every observable state unchanged;
--   P6 mapping a mounted partition makes no callback, returns the path;
--   P7 the teardown's retried map and unmap succeed on the first call;
--   P8 unknown and released ids: nil, msg, "not_found", no callback;
--   P9 a new disk takes the lowest free unpinned slot (or its pin);
-- and slots() / stats() / reservations() agree with the model.
--
-- Environment: SCSICTL_MODEL_STEPS (actions per run, default 400),
-- SCSICTL_MODEL_SEED (run only that seed).

local scsictl = require("scsictl")

local PATHS = { "/m/a.vhdx", "/m/b.vhdx", "/m/c", "/m/d" }
local NPART = 3
local STEPS = tonumber(os.getenv("SCSICTL_MODEL_STEPS") or "") or 400
local SEEDS = { 11, 22, 33, 44, 55 }
if os.getenv("SCSICTL_MODEL_SEED") then
  SEEDS = { tonumber(os.getenv("SCSICTL_MODEL_SEED")) }
end

local totals = { actions = 0, callbacks = 0, failures = 0, yields = 0, abandoned = 0, reentries = 0,
  checks = 0 }

local function run(seed, guest)
  local rng_state = seed
  local function rnd(n) -- deterministic LCG, independent of math.random
    rng_state = (rng_state * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff
    return (rng_state >> 17) % n + 1
  end
  local function pct(p) return rnd(100) <= p end

  local C, L = rnd(2), 1 + rnd(2)
  local NSLOTS = C * L
  local ctl -- set below
  local M = {
    slot = {},        -- [s] = { attached, ejected, mounted = {[part]=true}, pinned, pin_path, pin_dcfg }
    disk = {},        -- [path] = { slot, dcfg, tearing }
    ids = {},         -- [id] = { path, part, dcfg, mcfg, pending }
    part_mcfg = {},   -- [path .. "#" .. part] = mcfg while the partition exists
    released = {},
    inflight = {},    -- [path] = number of callbacks running or suspended
    adds = {}, removes = {}, mounts = {}, unmounts = {},
  }
  for s = 0, NSLOTS - 1 do
    M.slot[s] = { mounted = {} }
  end
  local ctx = {}      -- [coroutine] = stack of { id, path, part, failed }
  local active = {}   -- [coroutine] = list of callback records in flight
  local no_fail = false
  local depth = 0
  local log_n = 0

  local function fail(fmt, ...)
    error(string.format("[seed %d %s] " .. fmt, seed, guest, ...), 2)
  end
  local function check(cond, fmt, ...)
    totals.checks = totals.checks + 1
    if not cond then fail(fmt, ...) end
  end

  local function slot_of(c, l) return c * L + l end
  local function gpath(s, part)
    local c, l = s // L, s % L
    if guest == "windows" then
      return string.format("C:\\mounts\\scsi\\%d_%d_%d", c, l, part)
    end
    return string.format("/run/mounts/scsi/%d_%d_%d", c, l, part)
  end
  local function disk_cfg(path, dc)
    if dc == 2 then return { host_path = path, read_only = true } end
    return { host_path = path }
  end
  local function mount_cfg(part, mc)
    if mc == 2 then
      return { partition = part, read_only = true, options = { "ro", "x y" }, format_with_refs = true }
    end
    return { partition = part }
  end
  local function claims(path)
    local n = 0
    for _, r in pairs(M.ids) do
      if r.path == path then n = n + 1 end
    end
    return n
  end
  local function any_mounted(s)
    return next(M.slot[s].mounted) ~= nil
  end

  -- the id of the innermost operation of the running coroutine
  local function current()
    local stack = ctx[coroutine.running()]
    return stack and stack[#stack]
  end

  ---------------------------------------------------------------------------
  -- the backend
  ---------------------------------------------------------------------------
  local reenter -- forward

  -- Checks P1/P2/P4 for a callback entering on slot s (partition part).
  local function on_enter(name, s, part, args)
    local op = current()
    check(op ~= nil, "%s called outside any operation", name)
    check(s >= 0 and s < NSLOTS, "%s on slot %d outside the geometry", name, s)
    local d = M.disk[op.path]
    check(d and d.slot == s, "P4: %s at slot %d for id on %s (holds slot %s)", name, s, op.path,
      d and d.slot or "none")
    local st = M.slot[s]
    if name == "add_scsi_disk" then
      check(not st.attached, "P1: add at slot %d while attached", s)
      check(args.path == op.path, "P4: add names %s, id holds %s", tostring(args.path), op.path)
      check(args.read_only == (d.dcfg == 2) and args.type == "VirtualDisk" and args.evd_type == nil,
        "attachment fields")
    elseif name == "remove_scsi_disk" then
      check(st.attached and not any_mounted(s), "P1/P2: remove at %d attached %s", s, tostring(st.attached))
      check(guest == "windows" or st.ejected, "P1: linux remove without eject at slot %d", s)
      d.tearing = true
    elseif name == "remove_scsi_device" then
      check(st.attached and not st.ejected and not any_mounted(s), "P1/P2: eject at %d", s)
      d.tearing = true
    elseif name == "remove_mapped_virtual_disk" then
      check(part == op.part, "P4: unmount of partition %d for id on partition %d", part, op.part)
      check(st.mounted[part], "P1: unmount of %d:%d not mounted", s, part)
    else
      check(part == op.part, "P4: mount of partition %d for id on partition %d", part, op.part)
      check(st.attached and not st.ejected and not st.mounted[part], "P1/P2: mount %d:%d", s, part)
      local want = guest == "windows" and (M.part_mcfg[op.path .. "#" .. part] == 2) and
        "add_mapped_virtual_disk_for_container_scratch" or "add_mapped_virtual_disk"
      check(name == want, "mount callback %s, want %s", name, want)
    end
  end

  local function on_success(name, s, part)
    local st = M.slot[s]
    if name == "add_scsi_disk" then
      st.attached, st.ejected = true, false
      M.adds[s] = (M.adds[s] or 0) + 1
    elseif name == "remove_scsi_disk" then
      st.attached, st.ejected = false, false
      M.removes[s] = (M.removes[s] or 0) + 1
    elseif name == "remove_scsi_device" then
      st.ejected = true
    elseif name == "remove_mapped_virtual_disk" then
      st.mounted[part] = nil
      M.unmounts[s] = (M.unmounts[s] or 0) + 1
    else
      st.mounted[part] = true
      M.mounts[s] = (M.mounts[s] or 0) + 1
    end
  end

  local SUCCESS_VALUES = {
    function() end,
    function() return true end,
    function() return 0 end,
    function() return "" end,
    function() return {} end,
    function() return "ok", "ignored" end,
    function() return nil, nil end,
    function() return nil end,
  }
  local FAILURES = {
    function() error("injected raise", 0) end,
    function() error({ code = 7 }) end,
    function() error(nil) end,
    function() error(42) end,
    function() return false end,
    function() return false, "injected false" end,
    function() return nil, "injected nil+msg" end,
    function() return nil, { "table message" } end,
    function() return false, 3.5 end,
  }
  local function is_failure(...)
    local n = select("#", ...)
    local a, b = ...
    return (n >= 1 and a == false) or (n >= 2 and a == nil and b ~= nil)
  end

  -- Every callback: parse arguments to (slot, partition), check, then decide.
  local function callback(name, s, part, args)
    totals.callbacks = totals.callbacks + 1
    log_n = log_n + 1
    on_enter(name, s, part, args)
    local op = current()
    local co = coroutine.running()
    local rec = { name = name, s = s, part = part, path = op.path, op = op }
    active[co] = active[co] or {}
    table.insert(active[co], rec)
    M.inflight[op.path] = (M.inflight[op.path] or 0) + 1
    local function leave(ok)
      for i, r in ipairs(active[co]) do
        if r == rec then table.remove(active[co], i) break end
      end
      M.inflight[op.path] = M.inflight[op.path] - 1
      if ok then on_success(name, s, part) else op.failed = true end
    end
    if not no_fail then
      if depth == 0 and pct(12) then reenter(op) end
      local _, main = coroutine.running()
      if pct(15) then
        if main then
          -- yielding outside a coroutine is a callback failure
          local ok = pcall(coroutine.yield)
          check(not ok, "yield on the main thread did not fail")
          leave(false)
          totals.failures = totals.failures + 1
          error("yield outside a coroutine", 0)
        end
        totals.yields = totals.yields + 1
        local r = table.pack(coroutine.yield("callback", name))
        -- resumed: the resume values are the callback's results
        local failed = is_failure(table.unpack(r, 1, r.n))
        leave(not failed)
        if failed then totals.failures = totals.failures + 1 end
        return table.unpack(r, 1, r.n)
      end
      if pct(18) then
        totals.failures = totals.failures + 1
        local f = FAILURES[rnd(#FAILURES)]
        leave(false)
        return f()
      end
    end
    leave(true)
    return SUCCESS_VALUES[rnd(#SUCCESS_VALUES)]()
  end

  local function parse_win(path)
    local c, l, p = path:match("^C:\\mounts\\scsi\\(%d+)_(%d+)_(%d+)$")
    return tonumber(c), tonumber(l), tonumber(p)
  end

  local vm = {
    add_scsi_disk = function(self, att, c, l)
      assert(self.kind == "vm")
      return callback("add_scsi_disk", slot_of(c, l), nil, att)
    end,
    remove_scsi_disk = function(_, c, l)
      return callback("remove_scsi_disk", slot_of(c, l), nil, {})
    end,
    kind = "vm",
  }
  local lg = {}
  function lg.add_mapped_virtual_disk(_, st)
    local s = slot_of(st.controller, st.lun)
    local op = current()
    if op then
      check(st.mount_path == gpath(s, st.partition), "P4: mount_path %s", st.mount_path)
      local want = mount_cfg(op.part, M.part_mcfg[op.path .. "#" .. op.part] or 1)
      check(st.read_only == (want.read_only or false) and #st.options == #(want.options or {}),
        "linux settings follow the mount config")
    end
    return callback("add_mapped_virtual_disk", s, st.partition, st)
  end
  function lg.remove_mapped_virtual_disk(_, st)
    local s = slot_of(st.controller, st.lun)
    check(st.mount_path == gpath(s, st.partition), "P4: unmount mount_path %s", st.mount_path)
    return callback("remove_mapped_virtual_disk", s, st.partition, st)
  end
  function lg.remove_scsi_device(_, dev)
    return callback("remove_scsi_device", slot_of(dev.controller, dev.lun), nil, dev)
  end
  local wg = {}
  local function win(name)
    return function(_, st)
      local c, l, p = parse_win(st.container_path)
      check(c and l == st.lun, "P4: windows settings %s lun %s", tostring(st.container_path), tostring(st.lun))
      return callback(name, slot_of(c, l), p, st)
    end
  end
  wg.add_mapped_virtual_disk = win("add_mapped_virtual_disk")
  wg.add_mapped_virtual_disk_for_container_scratch = win("add_mapped_virtual_disk_for_container_scratch")
  wg.remove_mapped_virtual_disk = win("remove_mapped_virtual_disk")

  if guest == "linux" then
    ctl = scsictl.new{ controllers = C, luns_per_controller = L, vm = vm, linux_guest = lg }
  else
    ctl = scsictl.new{ controllers = C, luns_per_controller = L, vm = vm, windows_guest = wg }
  end

  ---------------------------------------------------------------------------
  -- observable state and the model's view of it
  ---------------------------------------------------------------------------
  local function ser(v)
    if type(v) ~= "table" then return tostring(v) end
    local ks = {}
    for k in pairs(v) do ks[#ks + 1] = k end
    table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
    local out = {}
    for _, k in ipairs(ks) do out[#out + 1] = tostring(k) .. "=" .. ser(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
  end
  local function observe()
    return ser(ctl:stats()) .. ser(ctl:slots()) .. ser(ctl:reservations()) .. tostring(ctl)
  end

  local function check_introspection()
    local used, pins, disks, live = 0, 0, 0, 0
    for _ in pairs(M.ids) do live = live + 1 end
    local by_slot = {}
    for path, d in pairs(M.disk) do
      check(by_slot[d.slot] == nil, "P4: slot %d holds %s and %s", d.slot, path, tostring(by_slot[d.slot]))
      by_slot[d.slot] = path
    end
    local listed = ctl:slots()
    local k = 1
    for s = 0, NSLOTS - 1 do
      local path, st = by_slot[s], M.slot[s]
      if not path then
        check(not st.attached and not any_mounted(s), "P3: free slot %d attached or mounted", s)
      end
      if path or st.pinned then
        used = used + 1
        if st.pinned then pins = pins + 1 end
        if path then disks = disks + 1 end
        local e = listed[k]
        k = k + 1
        check(e and e.controller == s // L and e.lun == s % L, "slot %d missing from slots()", s)
        check(e.pinned == (st.pinned or false), "slot %d pinned", s)
        if path then
          local want = not st.attached and "reserved" or (st.ejected and "ejected" or "attached")
          check(e.host_path == path and e.state == want and e.reservations == claims(path),
            "slot %d: %s %s r%s; model %s %s r%d", s, tostring(e.host_path), tostring(e.state),
            tostring(e.reservations), path, want, claims(path))
          check(e.busy == ((M.inflight[path] or 0) > 0), "slot %d busy %s", s, tostring(e.busy))
          for _, p in ipairs(e.partitions) do
            check((p.state == "mounted") == (st.mounted[p.partition] == true),
              "partition %d:%d state %s", s, p.partition, p.state)
            check((p.guest_path ~= nil) == (p.state == "mounted"), "guest_path iff mounted")
            if p.guest_path then
              check(p.guest_path == gpath(s, p.partition), "P4: listed guest path %s", p.guest_path)
            end
          end
        else
          check(e.host_path == nil and e.state == nil, "bare pin %d lists a disk", s)
        end
      end
    end
    check(listed[k] == nil, "slots() lists more than the model")
    local st = ctl:stats()
    check(st.used == used and st.pinned == pins and st.disks == disks and st.reservations == live and
      st.free == st.slots - st.used and st.slots == NSLOTS,
      "stats used %d/%d pinned %d/%d disks %d/%d reservations %d/%d", st.used, used, st.pinned, pins,
      st.disks, disks, st.reservations, live)
    for _, r in ipairs(ctl:reservations()) do
      local m = M.ids[r.id]
      check(m ~= nil, "listed id %s unknown to the model", r.id)
      local d = M.disk[m.path]
      check(r.host_path == m.path and r.partition == m.part and r.controller == d.slot // L and
        r.lun == d.slot % L, "P4: reservation %s listed at %d:%d", r.id, r.controller, r.lun)
    end
  end

  ---------------------------------------------------------------------------
  -- operations (top level or re-entrant)
  ---------------------------------------------------------------------------
  local function lowest_free()
    for s = 0, NSLOTS - 1 do
      local taken = M.slot[s].pinned
      for _, d in pairs(M.disk) do
        if d.slot == s then taken = true end
      end
      if not taken then return s end
    end
  end
  local function pin_of(path)
    for s = 0, NSLOTS - 1 do
      if M.slot[s].pinned and M.slot[s].pin_path == path then return s end
    end
  end

  local function do_reserve(path, dc, part, mc)
    local before = observe()
    local n0 = log_n
    local id, msg, code = ctl:reserve(disk_cfg(path, dc), mount_cfg(part, mc))
    check(log_n == n0, "reserve made a callback")
    local d = M.disk[path]
    local key = path .. "#" .. part
    if id == nil then
      check(type(msg) == "string", "reserve failure without message")
      if code == "busy" then
        check(d and ((M.inflight[path] or 0) > 0 or d.tearing), "reserve busy on a quiet disk %s", path)
      elseif code == "config_mismatch" then
        local pin = pin_of(path)
        check((d and (d.dcfg ~= dc or (M.part_mcfg[key] and M.part_mcfg[key] ~= mc))) or
          (not d and pin and M.slot[pin].pin_dcfg ~= dc), "config_mismatch unexpected for %s", path)
      elseif code == "no_slots" then
        check(not d and not pin_of(path) and lowest_free() == nil, "no_slots with a free slot")
      else
        fail("reserve %s: unexpected %s (%s)", path, tostring(code), tostring(msg))
      end
      check(observe() == before, "P5: a failed reserve changed state")
      return nil
    end
    check(type(id) == "string" and id == id:lower() and #id == 36, "id form %s", tostring(id))
    check(not (d and ((M.inflight[path] or 0) > 0 or d.tearing)), "reserve accepted on a busy disk %s", path)
    check(not (d and d.dcfg ~= dc), "reserve accepted a different disk config")
    check(not (M.part_mcfg[key] and M.part_mcfg[key] ~= mc), "reserve accepted a different mount config")
    local r = ctl:reservation(id)
    if not d then
      local want = pin_of(path) or lowest_free()
      check(r.controller * L + r.lun == want, "P9: %s got %d:%d, model slot %s", path, r.controller, r.lun,
        tostring(want))
      check(not M.slot[want].attached and not any_mounted(want), "P4: slot %d handed out while in use", want)
      M.disk[path] = { slot = want, dcfg = dc }
    else
      check(r.controller * L + r.lun == d.slot, "P4: shared disk at another slot")
    end
    M.part_mcfg[key] = M.part_mcfg[key] or mc
    M.ids[id] = { path = path, part = part }
    return id
  end

  local function forget_disk_if_unclaimed(path)
    if claims(path) == 0 then
      local d = M.disk[path]
      check(not M.slot[d.slot].attached and not any_mounted(d.slot),
        "P3: last claim on %s released with slot %d still attached/mounted", path, d.slot)
      M.disk[path] = nil
      for p = 0, NPART - 1 do M.part_mcfg[path .. "#" .. p] = nil end
    end
  end

  local function part_refs(path, part)
    local n = 0
    for _, r in pairs(M.ids) do
      if r.path == path and r.part == part and not r.dropped then n = n + 1 end
    end
    return n
  end

  -- map or unmap of id; checks the result against the model.
  local function do_op(kind, id)
    local m = M.ids[id]
    local co = coroutine.running()
    if not m then
      local n0 = log_n
      local r, msg, code = ctl[kind](ctl, id)
      check(r == nil and code == "not_found" and type(msg) == "string", "P8: %s of an unknown id: %s",
        kind, tostring(code))
      check(log_n == n0, "P8: unknown id made a callback")
      return
    end
    local busy_before = (M.inflight[m.path] or 0) > 0
    local d = M.disk[m.path]
    local p6 = kind == "map_to_guest" and not busy_before and not m.pending and
      M.slot[d.slot].mounted[m.part]
    local op = { id = id, path = m.path, part = m.part, failed = false, kind = kind }
    ctx[co] = ctx[co] or {}
    table.insert(ctx[co], op)
    local n0 = log_n
    local r, msg, code = ctl[kind](ctl, id)
    table.remove(ctx[co])
    if p6 then
      check(log_n == n0 and r == gpath(d.slot, m.part), "P6: map of a mounted partition: %s, %d callbacks",
        tostring(r), log_n - n0)
    end
    if r == nil then
      check(type(msg) == "string", "%s failure without message", kind)
      if code == "busy" then
        check(busy_before or (kind == "map_to_guest" and m.pending), "%s busy on a quiet disk: %s", kind, msg)
        check(log_n == n0, "a busy %s made a callback", kind)
      elseif code == "backend" then
        check(op.failed, "%s reported a backend failure no callback had: %s", kind, msg)
        if kind == "unmap_from_guest" then m.pending = true end
      else
        fail("%s: unexpected code %s (%s)", kind, tostring(code), tostring(msg))
      end
      -- the partition claim may have been dropped before the failing step
      return
    end
    check(not op.failed, "%s succeeded although a callback failed", kind)
    if kind == "map_to_guest" then
      check(r == gpath(d.slot, m.part), "P4: map returned %s, want %s", tostring(r), gpath(d.slot, m.part))
      check(M.slot[d.slot].attached and M.slot[d.slot].mounted[m.part], "map succeeded but model not mounted")
    else
      check(r == true, "unmap returned %s", tostring(r))
      M.ids[id] = nil
      M.released[#M.released + 1] = id
      check(ctl:reservation(id) == nil, "released id still listed")
      if part_refs(m.path, m.part) == 0 then
        check(not M.slot[d.slot].mounted[m.part] or false, "P3: last claim on a partition left it mounted")
        M.part_mcfg[m.path .. "#" .. m.part] = nil
      end
      forget_disk_if_unclaimed(m.path)
    end
  end

  local function random_id()
    local ids = {}
    for id in pairs(M.ids) do ids[#ids + 1] = id end
    table.sort(ids)
    if #ids == 0 then return nil end
    return ids[rnd(#ids)]
  end

  local function do_pin()
    local c, l = rnd(C + 1) - 1, rnd(L + 1) - 1
    local path = pct(50) and PATHS[rnd(#PATHS)] or nil
    local dc = rnd(2)
    local pins = 0
    for s = 0, NSLOTS - 1 do if M.slot[s].pinned then pins = pins + 1 end end
    if pins * 2 >= NSLOTS - 1 then return end -- keep slots for disks
    local before = observe()
    local ok, msg, code = ctl:reserve_for_rootfs(c, l, path and disk_cfg(path, dc) or nil)
    local want
    if c >= C or l >= L then
      want = "out_of_range"
    else
      local s = slot_of(c, l)
      local holder
      for _, d in pairs(M.disk) do if d.slot == s then holder = true end end
      if M.slot[s].pinned or holder or (path and (pin_of(path) or M.disk[path])) then
        want = "slot_taken"
      end
    end
    if want then
      check(ok == nil and code == want and type(msg) == "string", "pin %d:%d: got %s, want %s", c, l,
        tostring(code), want)
      check(observe() == before, "P5: a failed pin changed state")
      return
    end
    check(ok == true, "pin %d:%d refused: %s", c, l, tostring(msg))
    local s = slot_of(c, l)
    M.slot[s].pinned, M.slot[s].pin_path, M.slot[s].pin_dcfg = true, path, dc
    check(pins + 1 <= NSLOTS, "pins")
  end

  -- Re-entry from inside a callback of `op`.
  function reenter(op)
    totals.reentries = totals.reentries + 1
    depth = depth + 1
    local r = rnd(6)
    if r == 1 then
      -- the same disk: busy, no callback
      local n0 = log_n
      local res, _, code = ctl:reserve(disk_cfg(op.path, M.disk[op.path].dcfg), mount_cfg(op.part, 1))
      check(res == nil and code == "busy" and log_n == n0, "re-entrant reserve of a busy disk: %s",
        tostring(code))
      local res2, _, code2 = ctl:map_to_guest(op.id)
      check(res2 == nil and code2 == "busy" and log_n == n0, "re-entrant map of the busy id: %s",
        tostring(code2))
    elseif r == 2 then
      local res, _, code = ctl:close()
      check(res == nil and code == "busy", "close inside a callback: %s", tostring(code))
      local res2, _, code2 = ctl:save()
      check(res2 == nil and code2 == "busy", "save inside a callback: %s", tostring(code2))
    elseif r == 3 then
      do_reserve(PATHS[rnd(#PATHS)], pct(85) and 1 or 2, rnd(NPART) - 1, pct(85) and 1 or 2)
    else
      local id = random_id()
      if id then do_op(pct(50) and "map_to_guest" or "unmap_from_guest", id) end
    end
    check_introspection()
    depth = depth - 1
  end

  ---------------------------------------------------------------------------
  -- the scheduler
  ---------------------------------------------------------------------------
  local tasks = {} -- suspended coroutines

  local function after_resume(co, ok, ...)
    if not ok then
      fail("task raised: %s", tostring((...)))
    end
    if coroutine.status(co) == "dead" then
      ctx[co], active[co] = nil, nil
      return
    end
    tasks[#tasks + 1] = co
  end

  local function spawn(kind, id)
    local co = coroutine.create(function() do_op(kind, id) end)
    after_resume(co, coroutine.resume(co))
  end

  local RESUME_VALUES = {
    {}, { true }, { 0 }, { "" }, { false }, { false, "resumed false" }, { nil, "resumed nil+msg" },
    { nil, nil }, { {} },
  }

  local function resume_one()
    local i = rnd(#tasks)
    local co = table.remove(tasks, i)
    local v = no_fail and { true } or RESUME_VALUES[rnd(#RESUME_VALUES)]
    after_resume(co, coroutine.resume(co, table.unpack(v, 1, 2)))
  end

  local function abandon_one()
    local i = rnd(#tasks)
    local co = table.remove(tasks, i)
    totals.abandoned = totals.abandoned + 1
    local recs = active[co] or {}
    ctx[co], active[co] = nil, nil
    for _, rec in ipairs(recs) do
      -- the suspended steps count as failed
      M.inflight[rec.path] = M.inflight[rec.path] - 1
      if rec.op.kind == "unmap_from_guest" and M.ids[rec.op.id] then
        M.ids[rec.op.id].pending = true
      end
    end
    if pct(50) then
      local ok = coroutine.close(co)
      check(ok == true, "coroutine.close of a suspended task failed")
    else
      co = nil -- luacheck: ignore
      collectgarbage("collect")
      collectgarbage("collect")
    end
    for _, rec in ipairs(recs) do
      local d = M.disk[rec.path]
      if d then
        local e
        for _, x in ipairs(ctl:slots()) do
          if x.controller * L + x.lun == d.slot then e = x end
        end
        check(e and e.busy == ((M.inflight[rec.path] or 0) > 0), "abandoned step left %s busy", rec.path)
      end
    end
  end

  for _ = 1, STEPS do
    totals.actions = totals.actions + 1
    local a = rnd(100)
    if a <= 22 then
      do_reserve(PATHS[rnd(#PATHS)], pct(85) and 1 or 2, rnd(NPART) - 1, pct(85) and 1 or 2)
    elseif a <= 40 then
      local id = random_id()
      if id then spawn("map_to_guest", id) end
    elseif a <= 55 then
      local id = random_id()
      if id then spawn("unmap_from_guest", id) end
    elseif a <= 62 then
      local id = random_id()
      if id then do_op(pct(50) and "map_to_guest" or "unmap_from_guest", id) end
    elseif a <= 84 then
      if #tasks > 0 then resume_one() end
    elseif a <= 89 then
      if #tasks > 0 then abandon_one() end
    elseif a <= 92 then
      do_pin()
    elseif a <= 96 then
      local id = (#M.released > 0 and pct(60)) and M.released[rnd(#M.released)] or
        "3f2504e0-4f89-41d3-9a0c-0305e82c33" .. string.format("%02x", rnd(200))
      if pct(30) then id = id:upper() end
      do_op(pct(50) and "map_to_guest" or "unmap_from_guest", id)
    else
      if #tasks > 0 then
        local r, _, code = ctl:close()
        check(r == nil and code == "busy", "close with suspended callbacks: %s", tostring(code))
        local s, _, code2 = ctl:save()
        check(s == nil and code2 == "busy", "save with suspended callbacks: %s", tostring(code2))
      else
        -- save + import round trip (the import is a second, independent view)
        local snap = assert(ctl:save())
        local ctl2 = assert(scsictl.import(snap, guest == "linux" and { vm = vm, linux_guest = lg } or
          { vm = vm, windows_guest = wg }))
        check(ser(ctl2:slots()) == ser(ctl:slots()) and ser(ctl2:stats()) == ser(ctl:stats()),
          "import differs from the original")
        check(ctl2:save() == snap, "save/import/save differs")
      end
    end
    check_introspection()
  end

  -- P7 / P3: from here on the backends succeed.
  no_fail = true
  while #tasks > 0 do
    resume_one()
    check_introspection()
  end
  local ids = {}
  for id in pairs(M.ids) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do
    if not M.ids[id].pending then
      local n0 = log_n
      local op = { id = id, path = M.ids[id].path, part = M.ids[id].part }
      local co = coroutine.running()
      ctx[co] = { op }
      local path = ctl:map_to_guest(id)
      ctx[co] = nil
      check(path == gpath(M.disk[op.path].slot, op.part), "P7: retried map: %s (%d callbacks)", tostring(path),
        log_n - n0)
      check_introspection()
    end
  end
  for _, id in ipairs(ids) do
    do_op("unmap_from_guest", id)
    check(M.ids[id] == nil, "P7: a retried release with good backends did not complete")
    check_introspection()
  end
  local st = ctl:stats()
  check(st.used == st.pinned and st.disks == 0 and st.reservations == 0, "P3: stats after teardown %s",
    ser(st))
  for s = 0, NSLOTS - 1 do
    check((M.adds[s] or 0) == (M.removes[s] or 0), "P3: slot %d adds %d removes %d", s, M.adds[s] or 0,
      M.removes[s] or 0)
    check((M.mounts[s] or 0) == (M.unmounts[s] or 0), "P3: slot %d mounts %d unmounts %d", s,
      M.mounts[s] or 0, M.unmounts[s] or 0)
  end
  assert(ctl:close())
  collectgarbage("collect")
end

describe("randomized model (P1-P9) through the Lua API", function()
  for _, guest in ipairs({ "linux", "windows" }) do
    for _, seed in ipairs(SEEDS) do
      it(("%s guest, seed %d"):format(guest, seed), function()
        run(seed, guest)
      end)
    end
  end

  it("exercised every kind of behaviour", function()
    -- the runs above must have done what this spec claims
    assert.is_true(totals.callbacks > 500, "callbacks " .. totals.callbacks)
    assert.is_true(totals.failures > 50, "failures " .. totals.failures)
    assert.is_true(totals.yields > 50, "yields " .. totals.yields)
    assert.is_true(totals.abandoned > 5, "abandoned " .. totals.abandoned)
    assert.is_true(totals.reentries > 20, "re-entries " .. totals.reentries)
    io.stderr:write(("model_spec: %d actions, %d callbacks, %d failures, %d yields, %d abandoned, " ..
      "%d re-entries, %d checks\n"):format(totals.actions, totals.callbacks, totals.failures, totals.yields,
      totals.abandoned, totals.reentries, totals.checks))
  end)
end)
