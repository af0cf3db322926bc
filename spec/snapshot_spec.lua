--[[
snapshot_spec.lua — spec §8 through Lua: ctl:save(), scsictl.import,
scsictl.open and the state_file option, for both guest flavours.

  * save / import / open / state_file basics, errors and argument checks;
  * save returns "busy" while a callback is suspended in a coroutine;
  * P10 randomized: random sequences with random failures; at a random point
    save, import into a second controller and run the same remaining actions
    on both. Each controller has its own scsictl.sim; the second sim is
    brought to the first one's state by replaying the first one's accepted
    callbacks, and failures are injected by a wrapper from one shared
    per-action script, so both backends behave identically. Results, error
    messages (ids replaced by their position), callback logs and states
    must be identical;
  * invalid_snapshot: truncation at every byte, bit flips, other versions,
    inconsistent content with a correct checksum;
  * the crash test, designed as follows.

CRASH TEST
  A child process (spec/support/crash_child.lua, started with io.popen so
  that this process reaps it) runs random reserve / map / unmap calls with
  random callback failures against a controller with a state file, on a
  simulated VM. It is killed with SIGKILL at a random moment, many times.

  The VM must outlive the host agent, so the VM's state cannot live only in
  the child's memory: the child appends one line per *accepted* callback to
  an append-only events log and flushes it before the callback returns, i.e.
  before the controller writes the state file for that step. The events log
  therefore is the VM: replaying it into a fresh sim rebuilds the VM's real
  state (a kill between the sim acting and the line reaching the file counts
  as the VM never having done it; a partial last line is ignored). Since the
  controller writes the state file after every completed step and the child
  issues one callback at a time, the state file lags the events log by at
  most one effective callback.

  After each kill this spec:
    1. copies the state file aside and opens the copy with scsictl.open: it
       must parse and import;
    2. replays the events log into a sim S (the VM now) and all but its last
       event into a sim S' (the VM one step earlier); what the reopened
       controller believes is attached / ejected / mounted must equal S or
       S' exactly (the state as of the last completed step);
    3. tears everything down on the reopened copy against S, the way a
       restarted agent recovers: every reservation without a pending release
       is mapped (re-issuing a step that was in flight at the kill, which the
       sim accepts as "already present"), then every reservation is unmapped,
       each call retried a few times. Afterwards there must be no
       reservation, no disk, nothing attached or mounted in S, and S must
       have refused no call (P1/P2 as the sim enforces them; P3).
  The next child then continues from the *original* state file and events
  log (not the torn-down copy), so recoveries from many consecutive kills
  are exercised. A lineage restarts in a fresh directory every few kills (and
  after a failure), alternating Linux and Windows guests.

  SCSICTL_CRASH_KILLS (default 40) sets the number of kills.
]]

local scsictl = require("scsictl")
local sim = require("scsictl.sim")
local child = require("support.crash_child")
local H = require("helper")

local GUESTS = { "linux", "windows" }
local GUEST_KEY = { linux = "linux_guest", windows = "windows_guest" }

local tmpdir, rmdir, read = H.tmpdir, H.rmdir, H.read

-- Whether a temporary file of the state file writer is left in dir.
local function tmp_left(d)
  local ls = assert(io.popen("ls -a '" .. d .. "'"))
  local names = ls:read("a")
  ls:close()
  return names:find(".tmp-", 1, true) ~= nil
end

local storage_fails = H.storage_fails

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function backends(s, guest)
  return { vm = s, [GUEST_KEY[guest]] = s }
end

-- FNV-1a 64 as 16 hex digits (Lua integers wrap like uint64_t).
local function fnv1a(s)
  local h = -3750763034362895579 -- 0xcbf29ce484222325
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 0x100000001b3
  end
  return ("%016x"):format(h)
end

-- A body of lines with a correct end record.
local function with_end(body)
  local _, lines = body:gsub("\n", "")
  return body .. ("end %d %s\n"):format(lines + 1, fnv1a(body))
end

local function invalid(...)
  local ctl, msg, code = ...
  assert.is_nil(ctl)
  assert.are.equal("invalid_snapshot", code)
  assert.is_string(msg)
  return msg
end

describe("snapshots", function()
  for _, guest in ipairs(GUESTS) do
    describe(guest .. " guest", function()
      local dir
      before_each(function() dir = tmpdir() end)
      after_each(function() rmdir(dir) end)

      local function populated(extra)
        local opts = { controllers = 2, luns_per_controller = 4, guest = guest, partitions = 3 }
        for k, v in pairs(extra or {}) do opts[k] = v end
        local ctl, s = sim.controller(opts)
        assert(ctl:reserve_for_rootfs(1, 3))
        assert(ctl:reserve_for_rootfs(1, 2, { host_path = "/img/root fs.vhdx", read_only = true }))
        local a = assert(ctl:reserve({ host_path = "/img/a.vhdx" }, { partition = 1, options = { "x y", "%" } }))
        local b = assert(ctl:reserve({ host_path = "/img/a.vhdx" }, { partition = 1, options = { "x y", "%" } }))
        local c = assert(ctl:reserve({ host_path = "/img/b\n.vhdx", type = "ExtensibleVirtualDisk",
                                       evd_type = "" }, { partition = 2, format_with_refs = true }))
        local d = assert(ctl:reserve{ host_path = "/img/root fs.vhdx", read_only = true })
        assert(ctl:map_to_guest(a))
        assert(ctl:map_to_guest(c))
        s:fail_next("unmount", 1)
        local ok, _, code = ctl:unmap_from_guest(c)
        assert.is_nil(ok)
        assert.are.equal("backend", code)
        return ctl, s, { a, b, c, d }
      end

      it("save returns a versioned text snapshot; import rebuilds exactly that state with no callback", function()
        local ctl = populated()
        local snap = assert(ctl:save())
        assert.is_string(snap)
        assert.is_truthy(snap:match("^scsictl%-snapshot 2\ngeometry 2 4 " .. guest .. " open\n"))
        assert.is_truthy(snap:match("\nend %d+ %x+\n$"))
        assert.are.equal(snap, ctl:save()) -- no change, same bytes
        local s2 = sim.new{ controllers = 2, luns_per_controller = 4, guest = guest }
        local ctl2 = assert(scsictl.import(snap, backends(s2, guest)))
        assert.are.equal(0, #s2.log)
        assert.are.equal(snap, ctl2:save())
        assert.are.same(ctl:reservations(), ctl2:reservations())
        assert.are.same(ctl:slots(), ctl2:slots())
        assert.are.same(ctl:stats(), ctl2:stats())
        assert.are.equal(tostring(ctl), tostring(ctl2))
      end)

      it("an imported controller continues: pending release, shared mount, pinned path", function()
        local ctl, s, ids = populated()
        local ctl2 = assert(scsictl.import(assert(ctl:save()), backends(s, guest)))
        s:clear_log()
        -- the pending release of ids[3] is not mappable; retried, it finishes
        local _, msg, code = ctl2:map_to_guest(ids[3])
        assert.are.equal("busy", code)
        assert.is_truthy(msg:find("release", 1, true))
        assert.is_true(ctl2:unmap_from_guest(ids[3]))
        -- the mounted partition maps without a callback
        local n = #s.log
        assert.are.equal(guest == "linux" and "/run/mounts/scsi/0_0_1" or "C:\\mounts\\scsi\\0_0_1",
          assert(ctl2:map_to_guest(ids[2])))
        assert.are.equal(n, #s.log)
        -- the pinned path goes to its pin
        assert(ctl2:map_to_guest(ids[4]))
        assert.are.equal("/img/root fs.vhdx", ctl2:reservation(ids[4]).host_path)
        assert.are.equal(1, ctl2:reservation(ids[4]).controller)
        assert.are.equal(2, ctl2:reservation(ids[4]).lun)
        for _, id in ipairs({ ids[1], ids[2], ids[4] }) do assert.is_true(ctl2:unmap_from_guest(id)) end
        assert.is_true(s:is_empty())
        assert.are.same({}, s:refusals())
        assert.are.equal(2, ctl2:stats().used) -- the two pins
      end)

      it("import refuses backends of the other guest flavour", function()
        local ctl = populated()
        local other = guest == "linux" and "windows" or "linux"
        local s2 = sim.new{ guest = other, controllers = 2, luns_per_controller = 4 }
        assert.has_error(function() scsictl.import(assert(ctl:save()), backends(s2, other)) end)
        local ok, err = pcall(scsictl.import, assert(ctl:save()), backends(s2, other))
        assert.is_false(ok)
        assert.is_truthy(tostring(err):find("bad argument #2", 1, true))
        assert.has_error(function() scsictl.import(assert(ctl:save())) end)
        assert.has_error(function() scsictl.import(nil, backends(s2, guest)) end)
        assert.has_error(function() scsictl.import(assert(ctl:save()), { vm = s2 }) end)
      end)

      it("state_file: the file equals save() after every call, and open restores it", function()
        local path = dir .. "/state"
        local ctl, s, ids = populated{ state_file = path }
        assert.are.equal(ctl:save(), read(path))
        local id = assert(ctl:reserve{ host_path = "/img/new.vhdx" })
        assert.are.equal(ctl:save(), read(path))
        assert(ctl:map_to_guest(id))
        assert.are.equal(ctl:save(), read(path))
        s:fail_next("attach", 1)
        local id2 = assert(ctl:reserve{ host_path = "/img/new2.vhdx" })
        assert.is_nil((ctl:map_to_guest(id2)))
        assert.are.equal(ctl:save(), read(path))
        assert.is_true(ctl:unmap_from_guest(id2))
        assert.are.equal(ctl:save(), read(path))
        assert.is_false(tmp_left(dir))
        -- one owner: open is refused while ctl holds the file
        local none, why, busy = scsictl.open(path, backends(s, guest))
        assert.is_nil(none)
        assert.are.equal("busy", busy)
        assert.is_truthy(why:find("in use by another controller", 1, true))
        local saved, slots = ctl:save(), ctl:slots()
        ctl = nil -- luacheck: ignore 311 (dropped without close, as by a crash: collecting it gives the file up)
        collectgarbage()
        collectgarbage()
        local ctl2 = assert(scsictl.open(path, backends(s, guest)))
        assert.are.equal(saved, ctl2:save())
        assert.are.same(slots, ctl2:slots())
        -- the opened controller keeps writing the file
        assert.is_true(ctl2:unmap_from_guest(ids[1]))
        assert.are.equal(ctl2:save(), read(path))
        assert.is_true(ctl2:close())
        assert.is_truthy(read(path):match("geometry 2 4 " .. guest .. " closed\n"))
        ctl2 = nil -- luacheck: ignore 311 (collected: it gives the file up)
        collectgarbage()
        collectgarbage()
        local ctl3 = assert(scsictl.open(path, backends(s, guest)))
        local _, _, code = ctl3:reserve{ host_path = "/x" }
        assert.are.equal("closed", code)
      end)

      it("state_file: io errors from new and open, invalid_snapshot from open", function()
        local s = sim.new{ guest = guest }
        local opts = backends(s, guest)
        opts.controllers = 1
        opts.state_file = dir .. "/no/such/dir/state"
        local ctl, msg, code = scsictl.new(opts)
        assert.is_nil(ctl)
        assert.are.equal("io", code)
        assert.is_truthy(msg:find("no/such/dir", 1, true))
        ctl, msg, code = scsictl.open(dir .. "/missing", backends(s, guest))
        assert.is_nil(ctl)
        assert.are.equal("io", code)
        assert.is_string(msg)
        write(dir .. "/garbage", "hello\n")
        invalid(scsictl.open(dir .. "/garbage", backends(s, guest)))
        write(dir .. "/empty", "")
        invalid(scsictl.open(dir .. "/empty", backends(s, guest)))
        assert.has_error(function() scsictl.open("", backends(s, guest)) end)
        assert.has_error(function() scsictl.open("a\0b", backends(s, guest)) end)
        assert.has_error(function()
          local o = backends(s, guest)
          o.controllers, o.state_file = 1, 42
          scsictl.new(o)
        end)
      end)

      -- A one-controller sim controller owning the state file dir/state,
      -- with /img/a reserved: ctl, its sim, the file's path and a's id.
      local function owner_of_state()
        local path = dir .. "/state"
        local ctl, s = sim.controller{ guest = guest, controllers = 1, luns_per_controller = 4,
                                       state_file = path }
        return ctl, s, path, assert(ctl:reserve{ host_path = "/img/a" })
      end

      it("state_file: a write that fails gives io; a failed reserve changes nothing", function()
        local ctl, s, path, a = owner_of_state()
        local before, file = ctl:save(), read(path)
        local storage_back = storage_fails(dir)
        local id, msg, code = ctl:reserve{ host_path = "/img/b" }
        assert.is_nil(id)
        assert.are.equal("io", code)
        assert.is_string(msg)
        local ok
        ok, msg, code = ctl:reserve_for_rootfs(0, 3)
        assert.is_nil(ok)
        assert.are.equal("io", code)
        assert.is_truthy(msg:find(path, 1, true))
        assert.are.equal(before, ctl:save())
        storage_back()
        assert.are.equal(file, read(path))
        assert(ctl:map_to_guest(a))
        assert.are.equal(ctl:save(), read(path))
        assert.is_true(ctl:unmap_from_guest(a))
        assert.is_true(s:is_empty())
      end)

      it("state_file: one owner; another process is refused and the owner is unharmed", function()
        local ctl, s, path, a = owner_of_state()
        local function q(x) return "'" .. x:gsub("'", "'\\''") .. "'" end
        local script = ([[
          local scsictl = require("scsictl")
          local s = require("scsictl.sim").new{ guest = %q }
          local b = { vm = s, %s_guest = s }
          local _, msg, code = scsictl.open(%q, b)
          local o = { controllers = 1, state_file = %q }
          for k, v in pairs(b) do o[k] = v end
          local _, msg2, code2 = scsictl.new(o)
          io.write(tostring(code), "|", tostring(code2), "|", tostring(msg), "\n")
        ]]):format(guest, guest, path, path)
        local p = assert(io.popen(("LUA_PATH=%s LUA_CPATH=%s lua5.4 -e %s 2>&1"):format(
          q(package.path), q(package.cpath), q(script))))
        local out = p:read("a")
        p:close()
        assert.are.equal("busy|busy", out:match("^(%a+|%a+)|"), out)
        assert.is_truthy(out:find("in use by another controller (pid " .. tostring(
          math.tointeger(tonumber(read(path .. ".lock"):match("%d+")))) .. ")", 1, true), out)
        -- the owner goes on writing, unharmed
        assert(ctl:map_to_guest(a))
        assert.are.equal(ctl:save(), read(path))
        assert.is_true(ctl:unmap_from_guest(a))
        assert.are.equal(ctl:save(), read(path))
        assert.is_true(s:is_empty())
      end)

      it("save is busy while a callback is suspended in a coroutine", function()
        local ctl, s = sim.controller{ guest = guest, controllers = 1, luns_per_controller = 4 }
        local a = assert(ctl:reserve{ host_path = "/img/a" })
        local b = assert(ctl:reserve{ host_path = "/img/b" })
        assert(ctl:map_to_guest(b))
        local snap = assert(ctl:save())
        s:set_latency(1, "attach")
        local co = coroutine.create(function() return ctl:map_to_guest(a) end)
        assert.is_true((coroutine.resume(co)))
        assert.are.equal("suspended", coroutine.status(co))
        local none, msg, code = ctl:save()
        assert.is_nil(none)
        assert.are.equal("busy", code)
        assert.is_string(msg)
        -- other disks still work, and save is still busy
        assert.is_true(ctl:unmap_from_guest(b))
        assert.are.equal("busy", select(3, ctl:save()))
        local ok, path = coroutine.resume(co)
        assert.is_true(ok)
        assert.is_string(path)
        local after = assert(ctl:save())
        assert.are_not.equal(snap, after)
        local s2 = sim.new{ guest = guest, controllers = 1, luns_per_controller = 4 }
        assert.are.equal(after, assert(scsictl.import(after, backends(s2, guest))):save())
      end)
    end)
  end

  describe("invalid_snapshot", function()
    local function sample()
      local ctl, s = sim.controller{ controllers = 2, luns_per_controller = 2, partitions = 2 }
      local a = assert(ctl:reserve({ host_path = "/img/a b" }, { partition = 1, options = { "ro" } }))
      assert(ctl:reserve({ host_path = "/img/a b" }, { partition = 1, options = { "ro" } }))
      assert(ctl:reserve{ host_path = "/img/c" })
      assert(ctl:reserve_for_rootfs(1, 1))
      assert(ctl:map_to_guest(a))
      return assert(ctl:save()), s
    end

    it("is returned for truncation at every byte", function()
      local snap, s = sample()
      assert(scsictl.import(snap, { vm = s, linux_guest = s }))
      for cut = 0, #snap - 1 do
        local ctl, msg, code = scsictl.import(snap:sub(1, cut), { vm = s, linux_guest = s })
        if code ~= "invalid_snapshot" then
          error(("cut at %d of %d: %s %s %s"):format(cut, #snap, tostring(ctl), tostring(msg), tostring(code)))
        end
      end
    end)

    it("is returned for bit flips", function()
      local snap, s = sample()
      math.randomseed(7)
      for _ = 1, 300 do
        local i, bit = math.random(#snap), math.random(0, 7)
        local flipped = snap:sub(1, i - 1) .. string.char(snap:byte(i) ~ (1 << bit)) .. snap:sub(i + 1)
        invalid(scsictl.import(flipped, { vm = s, linux_guest = s }))
      end
    end)

    it("is not returned for the example of docs/snapshot-format.md, which saves back byte for byte", function()
      local f = assert(io.open("docs/snapshot-format.md"))
      local doc = f:read("a")
      f:close()
      local example = doc:match("Example:\n\n```\n(scsictl%-snapshot.-\nend [^\n]*\n)```")
      assert.is_string(example)
      local s = sim.new{}
      local ctl = assert(scsictl.import(example, { vm = s, linux_guest = s }))
      assert.are.equal(example, ctl:save())
    end)

    it("is returned for other versions, even with a correct checksum", function()
      local s = sim.new{}
      local b = { vm = s, linux_guest = s }
      assert(scsictl.import(with_end("scsictl-snapshot 1\ngeometry 1 1 linux open\n"), b))
      assert(scsictl.import(with_end("scsictl-snapshot 2\ngeometry 1 1 linux open\n"), b))
      for _, v in ipairs({ "0", "3", "10", "01", "1.0", "-1", "18446744073709551616", "" }) do
        local msg = invalid(scsictl.import(with_end("scsictl-snapshot " .. v .. "\ngeometry 1 1 linux open\n"), b))
        if v == "3" then assert.is_truthy(msg:find("version 3", 1, true)) end
      end
    end)

    it("is returned for inconsistent content with a correct checksum", function()
      local s = sim.new{}
      local b = { vm = s, linux_guest = s }
      local HDR = "scsictl-snapshot 2\ngeometry 2 4 linux open\n"
      local ID1, ID2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
      local D = "disk 0 1 attached 0 0 VirtualDisk - =/a 0\n"
      local P = "part 0 1 0 mounted 2 0 0 0 0 0 = - 0 0\n"
      local R = "res " .. ID1 .. " 0 1 0 1 0\nres " .. ID2 .. " 0 1 0 1 0\n"
      local good = HDR .. D .. P .. R
      assert.are.equal(with_end(good), assert(scsictl.import(with_end(good), b)):save())
      for what, body in pairs{
        two_disks_one_slot = HDR .. D .. "disk 0 1 attached 0 0 VirtualDisk - =/b 0\n" .. P .. R,
        reservation_at_empty_slot = HDR .. D .. P .. R .. "res 33333333-3333-4333-8333-333333333333 0 2 0 1 0\n",
        negative_refs = HDR .. D .. "part 0 1 0 mounted -1 0 0 0 0 0 = - 0 0\n" .. R,
        slot_outside_geometry = HDR .. "disk 0 4 attached 0 0 VirtualDisk - =/a 0\n"
          .. "part 0 4 0 mounted 1 0 0 0 0 0 = - 0 0\nres " .. ID1 .. " 0 4 0 1 0\n",
        refs_not_claims = HDR .. D .. "part 0 1 0 mounted 3 0 0 0 0 0 = - 0 0\n" .. R,
        mounted_on_reserved_disk = HDR .. "disk 0 1 reserved 0 0 VirtualDisk - =/a 0\n" .. P .. R,
        duplicate_id = HDR .. D .. P .. "res " .. ID1 .. " 0 1 0 1 0\nres " .. ID1 .. " 0 1 0 1 0\n",
        windows_guest_ejected = "scsictl-snapshot 2\ngeometry 2 4 windows open\n"
          .. "disk 0 1 ejected 1 0 VirtualDisk - =/a 0\nres " .. ID1 .. " 0 1 0 0 1\n",
      } do
        local ctl, msg, code = scsictl.import(with_end(body), b)
        if code ~= "invalid_snapshot" then
          error(("%s: %s %s %s"):format(what, tostring(ctl), tostring(msg), tostring(code)))
        end
      end
    end)
  end)

  ---------------------------------------------------------------------------
  -- P10
  ---------------------------------------------------------------------------

  describe("P10: an imported controller behaves exactly as the original", function()
    local PATHS = { "/img/a.vhdx", "/img/b c.vhdx", "/img/d%.vhdx", "/img/e.vhdx" }

    -- Backends over sim s that log every call (name, arguments, outcome) to
    -- w.calls, record accepted calls in w.effects (for replay), and fail the
    -- j-th call of the current action when w.script[j] is set.
    local function world(guest, s)
      local w = { calls = {}, effects = {}, script = {}, j = 0, ids = {} }
      w.backends = child.wrapped_backends(guest, function(name, ...)
        w.j = w.j + 1
        local line = name .. " " .. child.serialise({ ... })
        if w.script[w.j] then
          w.calls[#w.calls + 1] = line .. " -> injected"
          return nil, "injected failure"
        end
        local ok, msg = s[name](s, ...)
        w.calls[#w.calls + 1] = line .. " -> " .. tostring(ok) .. " " .. tostring(msg)
        if ok then
          w.effects[#w.effects + 1] = { op = name, n = select("#", ...), args = child.serialise({ ... }) }
        end
        return ok, msg
      end)
      return w
    end

    local function idmap(w, v)
      if type(v) ~= "string" then return tostring(v) end
      for k, id in ipairs(w.ids) do
        v = v:gsub(id:gsub("%-", "%%-"), "#" .. k)
      end
      return v
    end

    local function run(w, ctl, a)
      w.script, w.j, w.calls = a.script, 0, {}
      local r
      if a.kind == "reserve" then
        r = table.pack(ctl:reserve({ host_path = PATHS[a.path], read_only = a.ro },
                                   { partition = a.part, options = a.opts }))
        if r[1] then w.ids[#w.ids + 1] = r[1] end
        r[1] = r[1] and "id"
      elseif a.kind == "pin" then
        r = table.pack(ctl:reserve_for_rootfs(a.c, a.l, a.path and { host_path = PATHS[a.path] } or nil))
      else
        local id = w.ids[a.idx] or "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
        if a.kind == "map" then r = table.pack(ctl:map_to_guest(id))
        else r = table.pack(ctl:unmap_from_guest(id)) end
      end
      local res = {}
      for i = 1, r.n do res[i] = idmap(w, r[i]) end
      local rs = {}
      for _, x in ipairs(ctl:reservations()) do
        local k = "?"
        for i, id in ipairs(w.ids) do if id == x.id then k = i end end
        rs[#rs + 1] = ("#%s@%d:%d:%d"):format(k, x.controller, x.lun, x.partition)
      end
      table.sort(rs)
      return table.concat(res, " | ") .. "\n" .. table.concat(w.calls, "\n") .. "\n"
        .. child.serialise(ctl:slots()) .. "\n" .. table.concat(rs, " ")
    end

    for seed = 1, 12 do
      local guest = GUESTS[seed % 2 + 1]
      it(("seed %d (%s)"):format(seed, guest), function()
        math.randomseed(seed)
        local actions, nres = {}, 0
        for i = 1, 150 do
          local r, a = math.random(), { script = {} }
          for j = 1, 4 do a.script[j] = math.random() < 0.2 end
          if r < 0.35 then
            nres = nres + 1
            a.kind, a.path, a.part = "reserve", math.random(#PATHS), math.random(0, 2)
            a.ro = math.random() < 0.1
            a.opts = math.random() < 0.2 and { "x y" } or nil
          elseif r < 0.97 then
            a.kind = r < 0.66 and "map" or "unmap"
            a.idx = math.max(1, nres - math.random(0, 6))
            if math.random() < 0.05 then a.idx = nres + 5 end
          else
            a.kind, a.c, a.l = "pin", math.random(0, 2), math.random(0, 3)
            a.path = math.random() < 0.5 and math.random(#PATHS) or nil
          end
          actions[i] = a
        end
        local k = math.random(0, #actions)
        local s1 = sim.new{ guest = guest, controllers = 2, luns_per_controller = 3, partitions = 2 }
        local w1 = world(guest, s1)
        local o1 = { controllers = 2, luns_per_controller = 3 }
        for key, v in pairs(w1.backends) do o1[key] = v end
        local ctl1 = assert(scsictl.new(o1))
        for i = 1, k do run(w1, ctl1, actions[i]) end
        local snap = assert(ctl1:save())
        -- the second VM: replay what the first one accepted
        local s2 = sim.new{ guest = guest, controllers = 2, luns_per_controller = 3, partitions = 2 }
        for _, e in ipairs(w1.effects) do
          local args = load("return " .. e.args)()
          assert(s2[e.op](s2, table.unpack(args, 1, e.n)))
        end
        assert.are.equal(child.sim_state(s1), child.sim_state(s2))
        local w2 = world(guest, s2)
        for i, id in ipairs(w1.ids) do w2.ids[i] = id end
        local ctl2 = assert(scsictl.import(snap, w2.backends))
        assert.are.equal(snap, ctl2:save())
        for i = k + 1, #actions do
          local r1 = run(w1, ctl1, actions[i])
          local r2 = run(w2, ctl2, actions[i])
          if r1 ~= r2 then
            error(("action %d (imported after %d) differs:\noriginal:\n%s\nimported:\n%s"):format(i, k, r1, r2))
          end
        end
        assert.are.equal(child.sim_state(s1), child.sim_state(s2))
        assert.are.same(s1:refusals(), s2:refusals())
      end)
    end
  end)

  ---------------------------------------------------------------------------
  -- Crash recovery, deterministic: the agent dies inside one callback (the
  -- callback acts on the VM, then never returns); what survives is the
  -- state file as it is at that instant and the VM.
  ---------------------------------------------------------------------------

  describe("crash inside a callback (deterministic)", function()
    local dir
    before_each(function() dir = tmpdir() end)
    after_each(function() rmdir(dir) end)

    -- A controller whose `hang_at` callback performs its step on vm and then
    -- yields forever; crash() returns the state file's bytes at that instant.
    local function agent(guest, hang_at)
      local vm = sim.new{ guest = guest, controllers = 1, luns_per_controller = 4, partitions = 2,
                          forgiving = true }
      local image
      local b = child.wrapped_backends(guest, function(name, ...)
        local ok, msg = vm[name](vm, ...)
        if name == hang_at then
          image = read(dir .. "/state")
          coroutine.yield()
        end
        return ok, msg
      end)
      b.controllers, b.luns_per_controller, b.state_file = 1, 4, dir .. "/state"
      local ctl = assert(scsictl.new(b))
      return ctl, vm, function() return image end
    end

    local function reopen(image, vm, guest)
      write(dir .. "/reopened", assert(image, "the callback was not reached"))
      local ctl, msg, code = scsictl.open(dir .. "/reopened", backends(vm, guest))
      assert(ctl, ("the state file at the crash does not reopen: %s (%s)\n%s"):format(
        tostring(msg), tostring(code), image))
      return ctl
    end

    -- Releases id on the reopened controller, retrying a release that fails
    -- (an in-flight step the crash left uncertain is re-issued, and the
    -- simulated backend may refuse once); asserts that it converges.
    local function release(ctl, id)
      local ok, msg
      for _ = 1, 3 do
        ok, msg = ctl:unmap_from_guest(id)
        if ok then break end
      end
      assert(ok, msg)
    end

    -- Reserves /img/a, starts map_to_guest (op "map") or, after mapping,
    -- unmap_from_guest (op "release"), lets the agent die while `step` is in
    -- flight, and reopens its state file: the reopened controller, the VM,
    -- the id.
    local function crash_in(guest, step, op)
      local ctl, vm, image = agent(guest, step)
      local id = assert(ctl:reserve{ host_path = "/img/a" })
      if op == "release" then assert(ctl:map_to_guest(id)) end
      local co = coroutine.create(function()
        if op == "map" then return ctl:map_to_guest(id) end
        return ctl:unmap_from_guest(id)
      end)
      assert(coroutine.resume(co))
      assert.are.equal("suspended", coroutine.status(co))
      return reopen(image(), vm, guest), vm, id
    end

    for _, guest in ipairs(GUESTS) do
      local release_steps = guest == "linux"
        and { "remove_mapped_virtual_disk", "remove_scsi_device", "remove_scsi_disk" }
        or { "remove_mapped_virtual_disk", "remove_scsi_disk" }
      for _, step in ipairs(release_steps) do
        it(("%s: the state file written while %s is in flight reopens"):format(guest, step), function()
          local ctl2 = crash_in(guest, step, "release")
          assert.are.equal(1, #ctl2:reservations())
        end)

        it(("%s: after a crash in %s, the retried release converges (the step is re-issued)"):format(guest, step),
          function()
            local ctl2, vm, id = crash_in(guest, step, "release")
            release(ctl2, id)
            assert.is_true(vm:is_empty())
          end)
      end

      -- An add or mount may have taken effect when the agent died inside it:
      -- re-mapping re-issues it, and releasing instead removes it anyway.
      for step, what in pairs{ add_scsi_disk = "hot-add", add_mapped_virtual_disk = "mount" } do
        it(("%s: after a crash in the %s, re-mapping re-issues it and the teardown leaks nothing")
          :format(guest, what), function()
          local ctl2, vm, id = crash_in(guest, step, "map")
          assert(ctl2:map_to_guest(id))
          assert.are.equal(1, #vm:events(function(e) return e.already end))
          assert.is_true(ctl2:unmap_from_guest(id))
          assert.is_true(vm:is_empty())
        end)

        it(("%s: after a crash in the %s, releasing without re-mapping leaks nothing (spec §1)")
          :format(guest, what), function()
          local ctl2, vm, id = crash_in(guest, step, "map")
          release(ctl2, id)
          assert.are.same({}, vm:mounts())
          assert.is_true(vm:is_empty())
          assert.are.equal(0, ctl2:stats().used)
        end)
      end
    end
  end)

  ---------------------------------------------------------------------------
  -- Crash test
  ---------------------------------------------------------------------------

  describe("crash test", function()
    local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

    local function sleep(sec) os.execute(("sleep %.3f"):format(sec)) end

    -- Starts the child; returns the popen handle and its pid once it is
    -- ready, or nil and the line it printed.
    local function spawn(dir, seed, guest)
      local src = debug.getinfo(1, "S").source:sub(2)
      local script = src:gsub("[^/]*$", "") .. "support/crash_child.lua"
      local cmd = ("echo $$; LUA_PATH=%s LUA_CPATH=%s exec lua5.4 %s %s %d %s 2>>%s"):format(
        shq(package.path), shq(package.cpath), shq(script), shq(dir), seed, guest, shq(dir .. "/child.err"))
      local p = assert(io.popen(cmd, "r"))
      local pid = math.tointeger(tonumber(p:read("l")))
      local line = p:read("l")
      if line ~= "ready" then
        p:close()
        return nil, tostring(line) .. " " .. (read(dir .. "/child.err") or "")
      end
      return p, pid
    end

    -- Checks one crash image; returns nil or a description of the failure.
    -- `explained` is the set of items (disk at a slot, mount) changed by
    -- the last VM event of some child of this lineage that was killed: the
    -- only places where the state file may disagree with the VM.
    local function check(dir, guest, kill_no, explained)
      local state = read(dir .. "/state")
      if not state then return nil end -- killed before the first write
      local copy = dir .. "/check"
      rmdir(copy)
      assert(os.execute("mkdir " .. shq(copy)))
      write(copy .. "/state", state)
      local events = child.parse_events(dir .. "/events")
      local S = sim.new{ controllers = child.CONTROLLERS, luns_per_controller = child.LUNS,
                         guest = guest, partitions = 2, forgiving = true }
      child.replay(S, events)
      -- 1. the file parses
      local ctl, msg, code = scsictl.open(copy .. "/state", backends(S, guest))
      if not ctl then
        return ("kill %d: scsictl.open failed: %s (%s)\n%s"):format(kill_no, msg, code, state)
      end
      -- 2. consistent with the VM, except where a step was in flight at a kill
      local believed, real = child.ctl_items(ctl), child.sim_items(S)
      local keys = {}
      for k in pairs(believed) do keys[k] = true end
      for k in pairs(real) do keys[k] = true end
      for k in pairs(keys) do
        if believed[k] ~= real[k] and not explained[k] then
          return ("kill %d: the controller believes %s is %s, the VM has %s, and no step on it was in flight "
            .. "at a kill\ncontroller: %s\nVM: %s"):format(kill_no, k, tostring(believed[k]), tostring(real[k]),
            child.ctl_state(ctl), child.sim_state(S))
        end
      end
      local st = ctl:stats()
      if st.reservations ~= #ctl:reservations() or st.used ~= #ctl:slots() then
        return ("kill %d: stats disagree with the listings"):format(kill_no)
      end
      -- 3. full teardown: re-map (re-issues a step in flight at a kill), then release
      local last
      for _, r in ipairs(ctl:reservations()) do
        for _ = 1, 3 do
          local ok, m, c = ctl:map_to_guest(r.id)
          if ok or c == "busy" then break end
          last = m
        end
      end
      for _, r in ipairs(ctl:reservations()) do
        for _ = 1, 3 do
          local ok, m = ctl:unmap_from_guest(r.id)
          if ok then break end
          last = m
        end
      end
      if #ctl:reservations() > 0 or ctl:stats().disks > 0 or not S:is_empty() then
        local refused = S:refusals()
        return ("kill %d: teardown after reopening did not converge: %d reservation(s), %d disk(s), VM '%s'; "
          .. "%d refused call(s), first: %s; last error: %s\nstate file was:\n%s")
          :format(kill_no, #ctl:reservations(), ctl:stats().disks, child.sim_state(S), #refused,
                  refused[1] and (refused[1].op .. ": " .. tostring(refused[1].message)) or "-",
                  tostring(last), state)
      end
      ctl:close()
      return nil
    end

    it("SIGKILL at random moments: the state file always reopens, matches the VM, and tears down cleanly",
      function()
        local kills = math.tointeger(tonumber(os.getenv("SCSICTL_CRASH_KILLS") or "")) or 40
        local per_lineage = 10
        math.randomseed(os.time())
        local seed0 = math.random(1, 1e6)
        local failures, done, events_total = {}, 0, 0
        local started = os.time()
        local dir, guest, lineage_kills, explained = nil, nil, 0, {}
        local lineage = 0
        for kill_no = 1, kills do
          if not dir or lineage_kills >= per_lineage then
            if dir then rmdir(dir) end
            dir, lineage_kills, lineage, explained = tmpdir(), 0, lineage + 1, {}
            guest = GUESTS[lineage % 2 + 1]
          end
          local before = #child.parse_events(dir .. "/events")
          local p, pid = spawn(dir, seed0 + kill_no, guest)
          local failure
          if not p then
            failure = ("kill %d: the child could not start: %s"):format(kill_no, pid)
          else
            sleep(math.random() * 0.15)
            os.execute("kill -9 " .. pid)
            p:close()
            done = done + 1
            lineage_kills = lineage_kills + 1
            local events = child.parse_events(dir .. "/events")
            if #events > before then
              for _, item in ipairs(child.event_items(events[#events])) do explained[item] = true end
            end
            local ok, err = pcall(check, dir, guest, kill_no, explained)
            failure = not ok and ("kill %d: check raised: %s"):format(kill_no, tostring(err)) or err
          end
          if failure then
            failures[#failures + 1] = failure .. (" [%s guest, seed %d]"):format(guest, seed0 + kill_no)
            rmdir(dir)
            dir = nil -- start a fresh lineage
          else
            events_total = events_total + #child.parse_events(dir .. "/events")
          end
        end
        if dir then rmdir(dir) end
        io.stderr:write(("\ncrash test: %d kills in ~%ds, %d failed, %d VM events checked, seed %d\n"):format(
          done, os.time() - started, #failures, events_total, seed0))
        if #failures > 0 then
          local shown = {}
          for i = 1, math.min(3, #failures) do shown[i] = failures[i] end
          error(("%d of %d crash checks failed; first ones:\n%s"):format(#failures, kills,
            table.concat(shown, "\n----\n")))
        end
        assert.is_true(done >= kills)
      end)
  end)
end)
