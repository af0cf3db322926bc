-- bench.lua — benchmarks of the Lua module `scsictl` with no-op Lua callbacks.
--
-- Cases: B1 reserve + map + unmap of one disk (B1_trace: with a trace
-- function that does nothing); B2 the same with
-- 4 controllers and 255 of 256 slots taken; B3 N reservations of one shared
-- disk+partition (reserve all, map all, unmap all) for N = 10, 1000, 100000;
-- B4 reserve + unmap without map; B5 reserve_for_rootfs; memory of 100000
-- live reservations; B1_floor, the Lua work alone that B1 cannot avoid.
--
-- Timing: os.clock() (process CPU time; the cases are single-threaded and
-- CPU-bound), each case calibrated to ~30 ms per sample and repeated
-- (default 7 times): median, min, max ns per op. Memory per op: Lua heap
-- bytes allocated per op (collectgarbage("count") delta with the collector
-- stopped); the C core's own malloc'd memory is not in the Lua heap (see the
-- C benchmark's allocs/bytes, and VmRSS below).
--
--   lua5.4 bench/bench.lua [--smoke] [--repeats N] [--only SUBSTR] [--out FILE]
--                          [--iters N] [--no-count]
--
-- --iters fixes the ops per sample (no calibration) and --no-count skips the
-- heap-counting pass, for profilers (valgrind --tool=callgrind lua5.4
-- bench/bench.lua --only B1 --repeats 1 --iters 20000 --no-count).
--
-- --out appends one JSON object per case per line to FILE.

local scsictl = require("scsictl")

local REF = { B1 = 1016, B1_allocs = 8, B1_bytes = 496, B2 = 1396, B3 = 579, B4 = 512, B5 = 52 }
local TARGET_B1 = 1016
local TARGET_FLOOR_RATIO = 2.0 -- what the binding and core may add: at most the floor again

local cfg = { smoke = false, repeats = 7, only = nil, out = nil, sample_s = 0.030, iters = nil,
              no_count = false }

local function usage()
  io.stderr:write("usage: lua5.4 bench/bench.lua [--smoke] [--repeats N] [--only SUBSTR] [--out FILE]"
    .. " [--iters N] [--no-count]\n")
  os.exit(2)
end

do
  local env = os.getenv("SCSICTL_BENCH_SMOKE")
  if env and env ~= "" and env ~= "0" then cfg.smoke = true end
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--smoke" then
      cfg.smoke = true
    elseif a == "--repeats" and arg[i + 1] then
      cfg.repeats = math.tointeger(tonumber(arg[i + 1])) or usage()
      i = i + 1
    elseif a == "--iters" and arg[i + 1] then
      cfg.iters = math.tointeger(tonumber(arg[i + 1])) or usage()
      i = i + 1
    elseif a == "--no-count" then
      cfg.no_count = true
    elseif a == "--only" and arg[i + 1] then
      cfg.only = arg[i + 1]
      i = i + 1
    elseif a == "--out" and arg[i + 1] then
      cfg.out = arg[i + 1]
      i = i + 1
    else
      usage()
    end
    i = i + 1
  end
  if cfg.smoke then cfg.repeats = 2 end
end

local clock = os.clock

-- ---------------------------------------------------------------------------
-- No-op backends: tables whose callbacks return nothing (success).

local function noop() end

local vm = { add_scsi_disk = noop, remove_scsi_disk = noop }
local guest = {
  add_mapped_virtual_disk = noop,
  remove_mapped_virtual_disk = noop,
  remove_scsi_device = noop,
}

local function new_ctl(controllers, luns, trace)
  return scsictl.new { controllers = controllers, luns_per_controller = luns, vm = vm, linux_guest = guest,
                       trace = trace }
end

local function must(v, msg, code)
  if v == nil then error(("bench: %s (%s)"):format(tostring(msg), tostring(code)), 2) end
  return v
end

local function fill(ctl, n)
  for i = 0, n - 1 do
    must(ctl:reserve { host_path = "/bench/fill/" .. i .. ".vhdx" })
  end
end

-- ---------------------------------------------------------------------------
-- Output: JSON lines and a table.

local NULL = setmetatable({}, { __name = "json null" }) -- an explicit null member

local function json(v)
  local t = type(v)
  if v == nil or v == NULL then
    return "null"
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return ("%.6g"):format(v)
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      return ("\\u%04x"):format(c:byte())
    end) .. '"'
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = json(tostring(k)) .. ":" .. json(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("json: cannot encode " .. t)
end

local out_file
if cfg.out then
  out_file = assert(io.open(cfg.out, "a"))
end

local function fmt(v, f)
  if v == nil then return "-" end
  return (f or "%.1f"):format(v)
end

local function header()
  print(("%-26s %-20s %10s %10s %10s %7s %8s %9s %8s %8s"):format("case (Lua module)", "params",
    "median ns", "min", "max", "spread", "allocs", "bytes", "ref ns", "ours/ref"))
  print(("-"):rep(126))
end

-- r = { name, label, params, repeats, iters, med, min, max, bytes, ref, note, extra = {} }
local function emit(r)
  local spread = r.med and r.med > 0 and 100 * (r.max - r.min) / r.med or nil
  local ratio = r.ref and r.med and r.med / r.ref or nil
  if out_file then
    -- the schema's members are always present (null when not measured)
    local o = {
      lang = "lua", name = r.name, params = r.params or {}, repeats = r.repeats, iters = r.iters,
      ns_per_op = { median = r.med or NULL, min = r.min or NULL, max = r.max or NULL },
      spread_pct = spread or NULL, allocs_per_op = NULL, bytes_per_op = r.bytes or NULL,
      bytes_per_op_kind = "Lua heap bytes allocated per op (GC stopped)",
      ref_ns = r.ref or NULL, ratio = ratio or NULL, timer = "os.clock",
    }
    for k, v in pairs(r.extra or {}) do o[k] = v end
    out_file:write(json(o), "\n")
    out_file:flush()
  end
  print(("%-26s %-20s %10s %10s %10s %7s %8s %9s %8s %8s%s"):format(r.name, r.label or "-",
    fmt(r.med), fmt(r.min), fmt(r.max), spread and ("%.1f%%"):format(spread) or "-", "-",
    fmt(r.bytes), r.ref and ("%.0f"):format(r.ref) or "-", fmt(ratio, "%.3f"),
    r.note and ("  " .. r.note) or ""))
  io.stdout:flush()
end

local function selected(name, label)
  if not cfg.only then return true end
  return ((name .. " " .. (label or "")):find(cfg.only, 1, true)) ~= nil
end

-- ---------------------------------------------------------------------------
-- Runner. A case is { name, label, params, unit, setup = function() -> state,
-- run = function(state, n) -> seconds measured }.

local function median_min_max(s)
  table.sort(s)
  local n = #s
  local med = n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
  return med, s[1], s[n]
end

local function round_up(n, unit)
  return ((n + unit - 1) // unit) * unit
end

-- The collector restarted in the mode lua5.4 runs scripts in (generational),
-- entered afresh: before each case and after each pass with it stopped. Its
-- state otherwise carries over from case to case, and an allocation-heavy
-- case or a plain restart left later cases running up to 2x slower.
local function restart_collector()
  collectgarbage("restart")
  collectgarbage("incremental")
  collectgarbage("generational")
end

-- The ops per sample: about cfg.sample_s of work (the runs also warm up).
local function calibrate(c, state)
  local n = cfg.iters and round_up(cfg.iters, c.unit) or c.unit
  if not cfg.smoke and not cfg.iters then
    while true do
      collectgarbage()
      local s = c.run(state, n)
      if s >= cfg.sample_s * 0.8 or n >= (1 << 32) then break end
      local f = s > 0 and cfg.sample_s * 1.1 / s or 100
      f = math.min(math.max(f, 2), 100)
      n = round_up(math.ceil(n * f), c.unit)
    end
  end
  return n
end

local function sample(c, state, n)
  collectgarbage()
  return c.run(state, n) * 1e9 / n
end

local function run_case(c)
  restart_collector() -- each case starts from the same collector state
  local state = c.setup()
  local n = calibrate(c, state)
  local samples = {}
  for i = 1, cfg.repeats do
    samples[i] = sample(c, state, n)
  end
  local med, mn, mx = median_min_max(samples)
  local r = { name = c.name, label = c.label, params = c.params, repeats = cfg.repeats, iters = n,
              med = med, min = mn, max = mx, ref = c.ref }
  if cfg.no_count then
    if c.teardown then c.teardown(state) end
    return r
  end
  -- Lua heap bytes per op, collector stopped
  collectgarbage()
  collectgarbage("stop")
  local k0 = collectgarbage("count")
  c.run(state, n)
  local k1 = collectgarbage("count")
  restart_collector()
  collectgarbage()
  if c.teardown then c.teardown(state) end
  r.bytes = (k1 - k0) * 1024 / n
  return r
end

-- ---------------------------------------------------------------------------
-- Cases

local cycle_disk = { host_path = "/bench/cycle/disk.vhdx" }
local cycle_mount = { partition = 0 }

-- n cycles; results are checked inline, since a helper call per method
-- would be harness cost that the floor's loop does not pay.
local function cycles(ctl, n)
  local t0 = clock()
  for _ = 1, n do
    local id, msg = ctl:reserve(cycle_disk, cycle_mount)
    if not id then error(msg) end
    local ok, err = ctl:map_to_guest(id)
    if not ok then error(err) end
    ok, err = ctl:unmap_from_guest(id)
    if not ok then error(err) end
  end
  return clock() - t0
end

local function cycle_case(name, label, controllers, luns, occupied, ref, params, trace)
  return {
    name = name, label = label, unit = 1, ref = ref, params = params,
    setup = function()
      local ctl = new_ctl(controllers, luns, trace)
      fill(ctl, occupied)
      return ctl
    end,
    run = cycles,
    teardown = function(ctl) ctl:close() end,
  }
end

local function b4_case()
  return {
    name = "B4", label = "1x64 empty", unit = 1, ref = REF.B4,
    params = { controllers = 1, luns = 64, occupied = 0 },
    setup = function() return new_ctl(1, 64) end,
    run = function(ctl, n)
      local t0 = clock()
      for _ = 1, n do
        local id = must(ctl:reserve(cycle_disk, cycle_mount))
        must(ctl:unmap_from_guest(id))
      end
      return clock() - t0
    end,
    teardown = function(ctl) ctl:close() end,
  }
end

-- B1_floor: the Lua work that spec §4 asks of every cycle, with no
-- controller at all: the five callbacks called as methods with fresh
-- argument tables exactly as the module builds them (attachment, two
-- 10-field settings tables with fresh options arrays, device). A lower
-- bound: the id string and the method calls on the controller are left
-- out. B1 minus this is what the binding and the core add.
local function floor_case()
  return {
    name = "B1_floor", label = "Lua work only", unit = 1,
    params = { what = "5 method calls with spec §4 argument tables, no controller" },
    setup = function() return {} end,
    run = function(_, n)
      local path = "/run/mounts/scsi/0_0_0"
      local t0 = clock()
      for _ = 1, n do
        vm:add_scsi_disk({ path = cycle_disk.host_path, type = "VirtualDisk", read_only = false }, 0, 0)
        guest:add_mapped_virtual_disk({ mount_path = path, controller = 0, lun = 0, partition = 0,
          read_only = false, encrypted = false, options = {}, ensure_filesystem = false,
          filesystem = "", block_dev = false })
        guest:remove_mapped_virtual_disk({ mount_path = path, controller = 0, lun = 0, partition = 0,
          read_only = false, encrypted = false, options = {}, ensure_filesystem = false,
          filesystem = "", block_dev = false })
        guest:remove_scsi_device({ controller = 0, lun = 0 })
        vm:remove_scsi_disk(0, 0)
      end
      return clock() - t0
    end,
  }
end

local shared_disk = { host_path = "/bench/shared/layer.vhdx", read_only = true }
local shared_mount = { read_only = true }

local function b3_case(N)
  return {
    name = "B3", label = "N=" .. N, unit = N, ref = N == 1000 and REF.B3 or nil,
    params = { reservations = N, unit = "ns per reservation" },
    setup = function() return { ctl = new_ctl(1, 64), ids = {} } end,
    run = function(st, n)
      local ctl, ids = st.ctl, st.ids
      local t0 = clock()
      for _ = 1, n // N do
        for i = 1, N do ids[i] = must(ctl:reserve(shared_disk, shared_mount)) end
        for i = 1, N do must(ctl:map_to_guest(ids[i])) end
        for i = 1, N do must(ctl:unmap_from_guest(ids[i])) end
      end
      return clock() - t0
    end,
    teardown = function(st) st.ctl:close() end,
  }
end

local B5_C, B5_L = 64, 64
local function b5_case()
  return {
    name = "B5", label = ("%dx%d fresh"):format(B5_C, B5_L), unit = B5_C * B5_L, ref = REF.B5,
    params = { controllers = B5_C, luns = B5_L, pins_per_controller = B5_C * B5_L },
    setup = function() return {} end,
    run = function(_, n)
      local total = 0
      for _ = 1, n // (B5_C * B5_L) do
        local ctl = new_ctl(B5_C, B5_L)
        local t0 = clock()
        for c = 0, B5_C - 1 do
          for l = 0, B5_L - 1 do must(ctl:reserve_for_rootfs(c, l)) end
        end
        total = total + (clock() - t0)
        ctl:close()
      end
      return total
    end,
  }
end

local function vmrss_kb()
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  for line in f:lines() do
    local kb = line:match("^VmRSS:%s*(%d+)")
    if kb then
      f:close()
      return tonumber(kb)
    end
  end
  f:close()
  return nil
end

-- 100000 live mapped reservations of one shared disk: Lua heap and VmRSS.
-- Runs first, in a fresh interpreter, so freed memory does not hide growth.
local function mem_case(n)
  local label = "n=" .. n
  if not selected("mem_live_shared", label) then return end
  collectgarbage()
  collectgarbage("stop")
  local rss0, k0 = vmrss_kb(), collectgarbage("count")
  local ctl = new_ctl(1, 64)
  local ids = {}
  local t0 = clock()
  for i = 1, n do
    ids[i] = must(ctl:reserve(shared_disk, shared_mount))
    must(ctl:map_to_guest(ids[i]))
  end
  local secs = clock() - t0
  local rss1, k1 = vmrss_kb(), collectgarbage("count")
  restart_collector()
  for i = 1, n do must(ctl:unmap_from_guest(ids[i])) end
  ctl:close()
  local lua_per = (k1 - k0) * 1024 / n
  local rss_per = rss0 and rss1 and (rss1 - rss0) * 1024 / n or nil
  local ns = secs * 1e9 / n
  emit {
    name = "mem_live_shared", label = label, repeats = 1, iters = n, med = ns, min = ns, max = ns,
    params = { reservations = n, disks = 1, geometry = "1x64" },
    note = ("Lua heap %.1f B/res, VmRSS %s -> %s kB (%s B/res)"):format(lua_per, tostring(rss0),
      tostring(rss1), rss_per and ("%.1f"):format(rss_per) or "?"),
    extra = {
      timed = "reserve+map per reservation (fill, GC stopped)",
      lua_heap_bytes_per_reservation = lua_per,
      vmrss_before_kb = rss0, vmrss_after_kb = rss1, rss_bytes_per_reservation = rss_per,
      note = "Lua heap = the ids table and id strings held by the script; VmRSS includes them and the core",
    },
  }
end

-- ---------------------------------------------------------------------------
-- main

print(("scsictl Lua module benchmarks%s (%s): %d repeats per case, ~%.0f ms per sample; "
  .. "ns per op (median, min, max over repeats) timed with os.clock; bytes = Lua heap per op")
  :format(cfg.smoke and " (SMOKE: tiny counts, numbers meaningless)" or "", _VERSION, cfg.repeats,
    cfg.smoke and 0 or cfg.sample_s * 1000))
print()
header()

mem_case(cfg.smoke and 1000 or 100000)

local b1, floor
local cases = {
  cycle_case("B1", "1x64 empty", 1, 64, 0, REF.B1,
    { controllers = 1, luns = 64, occupied = 0, guest = "linux" }),
  -- the same with a trace function that does nothing (B1 is without one)
  cycle_case("B1_trace", "1x64 empty", 1, 64, 0, nil,
    { controllers = 1, luns = 64, occupied = 0, guest = "linux", trace = "no-op" }, noop),
  cycle_case("B2", "4x64 255/256", 4, 64, 255, REF.B2,
    { controllers = 4, luns = 64, occupied = 255, guest = "linux" }),
}
for _, N in ipairs(cfg.smoke and { 10, 100 } or { 10, 1000, 100000 }) do
  cases[#cases + 1] = b3_case(N)
end
cases[#cases + 1] = b4_case()
cases[#cases + 1] = b5_case()
cases[#cases + 1] = floor_case()

for _, c in ipairs(cases) do
  if selected(c.name, c.label) then
    local r = run_case(c)
    if c.name == "B1" then
      b1 = r.med
      r.note = ("ref %d allocs %d B (Go)"):format(REF.B1_allocs, REF.B1_bytes)
    elseif c.name == "B1_floor" then
      floor = r.med
      if b1 then r.note = ("binding + core add %.0f ns to B1"):format(b1 - floor) end
    end
    emit(r)
  end
end

-- B1 against its floor with their samples interleaved, so that both see the
-- same machine and collector state: the floor alone reads 700-1000 ns
-- depending on what ran before it.
local function interleaved_ratio(a, b)
  restart_collector()
  local sa, sb = a.setup(), b.setup()
  local na, nb = calibrate(a, sa), calibrate(b, sb)
  local xa, xb = {}, {}
  for i = 1, cfg.repeats do
    xa[i] = sample(a, sa, na)
    xb[i] = sample(b, sb, nb)
  end
  if a.teardown then a.teardown(sa) end
  local ma, mina, maxa = median_min_max(xa)
  local mb = median_min_max(xb)
  return ma / mb, ma, mb, mina, maxa
end

local ratio, ratio_b1, ratio_floor
if b1 and floor then
  local b1_min, b1_max
  ratio, ratio_b1, ratio_floor, b1_min, b1_max = interleaved_ratio(cases[1], floor_case())
  if out_file then
    out_file:write(json { lang = "lua", name = "B1/B1_floor", params = { samples = "interleaved" },
      repeats = cfg.repeats, ns_per_op = { median = ratio_b1, min = b1_min, max = b1_max },
      allocs_per_op = NULL, bytes_per_op = NULL, ratio = ratio, floor_ns = ratio_floor,
      timer = "os.clock" }, "\n")
  end
end

print()
print("Targets, Lua module:")
if b1 then
  print(("  %-58s %10.2f %-6s target <= %-8.2f %s (%.2fx of target)"):format(
    "Lua B1 reserve+map+unmap with Lua callbacks, ns per cycle", b1, "ns", TARGET_B1,
    b1 <= TARGET_B1 and "MET" or "NOT MET", b1 / TARGET_B1))
  if floor then
    print(("  %-58s %10.2f %-6s (%.0f%% of B1; the target leaves %.0f ns for the binding and core)")
      :format("  of which the Lua work spec §4 asks for (B1_floor)", floor, "ns",
        100 * floor / b1, TARGET_B1 - floor))
  end
  if ratio then
    print(("  %-58s %10.2f %-6s target <= %-8.2f %s (%.0f / %.0f ns, samples interleaved)"):format(
      "Lua B1 / B1_floor", ratio, "x", TARGET_FLOOR_RATIO,
      ratio <= TARGET_FLOOR_RATIO and "MET" or "NOT MET", ratio_b1, ratio_floor))
  end
else
  print("  Lua B1: not measured")
end

if out_file then
  out_file:close()
  print()
  print("Lua results (JSON lines, appended): " .. cfg.out)
end
