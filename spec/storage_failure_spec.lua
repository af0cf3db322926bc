-- Storage that fails: random state file write failures (between calls and
-- inside callbacks, so that they hit the writes made before a step and
-- after it) and random restarts from the file, against the simulator.
--
-- What must hold after every action:
--   * no crash, and an id the script still holds is never `not_found`
--     (a call that failed with `io` leaves the id valid);
--   * a restart from the file keeps every claim the script holds and
--     brings back none that unmap reported released. A claim whose unmap
--     failed with io may have been released in memory and a later write
--     may have recorded that: it is gone after a restart, but the file
--     lists its id as "gone", so its retried unmap still succeeds;
--   * once storage is back, retrying unmap of every held id converges and
--     nothing is left attached or mounted in the simulated VM.
--
-- And after every action, memory and file agree about every claim: each
-- id the controller lists is in the file, and each id in the file is
-- listed or is one whose unmap failed with io (its release may have
-- finished in memory, not yet in the file).
--
-- Each guest runs with the file written in place and with
-- scsictl.state_writer (written through libuv's threadpool, the loop run by
-- each call).
--
-- A write is made to fail by moving the state file's directory aside and
-- putting a regular file in its place (the writer cannot create its
-- temporary file there; the owner's lock stays held). SCSICTL_STORAGE_ACTIONS
-- sets the number of actions (default 10000, over 10 seeds); the file lives
-- in /dev/shm when there is one (fsync there is cheap).

local scsictl = require("scsictl")
local H = require("helper")
local sim = require("scsictl.sim")

local ACTIONS = tonumber(os.getenv("SCSICTL_STORAGE_ACTIONS") or "10000")
local SEEDS = 10

local base = (io.open("/dev/shm", "r") and "/dev/shm") or os.getenv("TMPDIR") or "/tmp"

local state_writer = require("scsictl.state_writer")

-- writer: nil (the file is written in place) or "loop" (scsictl.state_writer,
-- through libuv's threadpool).
local function run(seed, actions, guest, writer)
  local rng = math.random
  math.randomseed(seed)
  local dir = ("%s/scsictl-storage-%s-%d-%d"):format(base, guest, seed, math.random(1 << 30))
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  local name = "state"
  local path = dir .. "/" .. name
  local failing, chaos = false, true
  local function set_failing(on)
    if on == failing then return end
    failing = on
    if on then
      assert(os.rename(dir, dir .. ".away"))
      assert(io.open(dir, "w")):close()
    else
      assert(os.remove(dir))
      assert(os.rename(dir .. ".away", dir))
    end
  end
  -- The ids in the state file, wherever its directory is now.
  local function file_ids()
    local f = assert(io.open((failing and dir .. ".away" or dir) .. "/" .. name))
    local ids = {}
    for id in f:read("a"):gmatch("\nres (%S+)") do ids[id] = true end
    f:close()
    return ids
  end

  -- Forgiving: a restart from a file that lags memory re-issues removals
  -- that already took effect, which backends accept (spec §8).
  local s = sim.new{ guest = guest, controllers = 2, luns_per_controller = 3, partitions = 3,
                     forgiving = true }
  local proxy = {}
  for _, m in ipairs({ "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk",
                       "add_mapped_virtual_disk_for_container_scratch",
                       "remove_mapped_virtual_disk", "remove_scsi_device" }) do
    proxy[m] = function(_, ...)
      if chaos and rng() < 0.25 then set_failing(rng() < 0.5) end
      return s[m](s, ...)
    end
  end
  local backends = { vm = proxy, [guest == "windows" and "windows_guest" or "linux_guest"] = proxy }
  local function fresh()
    local o = { controllers = 2, luns_per_controller = 3, state_file = path,
                state_writer = writer and state_writer.new() or nil }
    for k, v in pairs(backends) do o[k] = v end
    return assert(scsictl.new(o))
  end
  local ctl = fresh()

  local held, released = {}, {}     -- id -> true
  local ios, restarts = 0, 0        -- calls that returned io; restarts
  local unsure = {}                 -- held ids whose last unmap failed with io
  local function where(step, what)
    return ("seed %d (%s guest), action %d: %s"):format(seed, guest, step, what)
  end

  for step = 1, actions do
    local r = rng()
    if r < 0.08 then
      set_failing(not failing)
    elseif r < 0.12 and not failing then
      -- A crash and a restart from the file: the old controller is dropped
      -- unclosed (close is recorded in the file: a closed controller
      -- reopens closed) and never touched again. A file has one owner, and
      -- a dropped controller gives it up only once collected (a stale copy
      -- in a register can delay that), so the restart opens a copy of the
      -- file as the crash left it, as a new process would find it.
      ctl = nil -- luacheck: ignore 311 (dropped)
      restarts = restarts + 1
      name = "state." .. restarts
      local from, to = assert(io.open(path, "rb")), assert(io.open(dir .. "/" .. name, "wb"))
      to:write(from:read("a"))
      from:close()
      to:close()
      path = dir .. "/" .. name
      local b = {}
      for k, v in pairs(backends) do b[k] = v end
      b.state_writer = writer and state_writer.new() or nil
      local c, msg, code = scsictl.open(path, b)
      assert(c, where(step, ("open: %s (%s)"):format(tostring(msg), tostring(code))))
      ctl = c
      for _, id in ipairs(H.keys(held)) do
        if not ctl:reservation(id) then
          -- Only a claim whose last unmap failed with io may be gone: that
          -- release finished in memory and a later write recorded it, with
          -- the id as "gone", so the id stays held: its retried unmap must
          -- succeed (never not_found), as the checks below require.
          assert(unsure[id], where(step, "a held claim was lost by the restart: " .. id))
        end
      end
      for _, id in ipairs(H.keys(released)) do
        assert.is_nil(ctl:reservation(id), where(step, "a released claim came back: " .. id))
      end
    elseif r < 0.4 then
      local id, msg, code = ctl:reserve({ host_path = "/img/" .. rng(4) }, { partition = rng(0, 2) })
      if id then
        held[id] = true
      else
        ios = ios + (code == "io" and 1 or 0)
        assert(code == "io" or code == "busy",
          where(step, ("reserve: %s (%s)"):format(tostring(msg), tostring(code))))
      end
    else
      local ids = H.keys(held)
      if #ids > 0 then
        local id = ids[rng(#ids)]
        if r < 0.7 then
          local p, msg, code = ctl:map_to_guest(id)
          assert(p or code ~= "not_found", where(step, "map of a held id: " .. tostring(msg)))
        else
          local ok, msg, code = ctl:unmap_from_guest(id)
          assert(ok or code ~= "not_found", where(step, "unmap of a held id: " .. tostring(msg)))
          if ok then
            held[id], released[id], unsure[id] = nil, true, nil
          else
            unsure[id] = code == "io" or nil
            ios = ios + (code == "io" and 1 or 0)
          end
        end
      end
    end
    local in_file, in_memory = file_ids(), {}
    for _, res in ipairs(ctl:reservations()) do
      in_memory[res.id] = true
      assert(in_file[res.id], where(step, "a claim in memory is not in the file: " .. res.id))
    end
    for id in pairs(in_file) do
      assert(in_memory[id] or unsure[id], where(step, "a claim in the file is not in memory: " .. id))
    end
  end

  -- The run met failing writes and restarts, or it tested nothing.
  assert(ios > 0 and restarts > 0, where(actions, ("%d io results, %d restarts"):format(ios, restarts)))

  -- Storage is back: every held id is released by retrying unmap.
  chaos = false
  set_failing(false)
  for _, id in ipairs(H.keys(held)) do
    local ok, msg, code
    for _ = 1, 8 do
      ok, msg, code = ctl:unmap_from_guest(id)
      if ok then break end
    end
    assert(ok, where(actions, ("final unmap of %s: %s (%s)"):format(id, tostring(msg), tostring(code))))
  end
  assert.equal(0, ctl:stats().reservations)
  assert.is_true(s:is_empty(), where(actions, "the simulated VM still holds something"))
  ctl:close()
  ctl = nil -- luacheck: ignore 311
  collectgarbage()
  assert(os.execute("rm -rf '" .. dir .. "'"))
end

describe("a state file on storage that fails", function()
  for _, guest in ipairs({ "linux", "windows" }) do
    for _, writer in ipairs({ false, "loop" }) do
      it(("keeps held ids valid, restarts without losing or reviving claims, converges "
          .. "(%s guest, %s)"):format(guest, writer and "state_writer on the loop" or "written in place"),
        function()
          local per = math.max(1, ACTIONS // SEEDS)
          for seed = 1, SEEDS // 4 + (writer and 0 or SEEDS % 4) do
            run(seed, per, guest, writer)
          end
        end)
    end
  end
end)
