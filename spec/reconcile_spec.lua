-- Busted spec for scsictl.reconcile: a controller's records against what
-- QEMU and the Linux guest hold, after changes made behind its back and
-- after a host agent killed with SIGKILL at random moments.
--
-- The first part needs no QEMU (stub views over a simulated controller).
-- The second boots one Linux guest for the file (spec/support/guest.lua:
-- TCG unless SCSICTL_QEMU_ACCEL says otherwise), with a second QMP socket
-- for the child agents of the kill test (spec/support/agent_child.lua). If
-- the guest cannot be booted every test of that part FAILS with the reason.
-- SCSICTL_RECONCILE_KILLS sets the number of kills (default 24).

local root = debug.getinfo(1, "S").source:match("^@(.-)spec/[^/]*$") or ""
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. root .. "spec/?.lua;" .. package.path

local scsictl = require("scsictl")
local sim = require("scsictl.sim")
local reconcile = require("scsictl.reconcile")
local H = require("helper")
local G = require("support.guest")

local value = G.value

local function kinds(diffs)
  local out = {}
  for _, d in ipairs(diffs) do
    out[#out + 1] = d.kind .. (d.controller and (" %d:%d"):format(d.controller, d.lun) or "")
  end
  return out
end

---------------------------------------------------------------------------
-- Without QEMU: stub views over a simulated controller.

describe("scsictl.reconcile (stub views)", function()
  -- A controller over a forgiving sim, and backends whose observe() returns
  -- the views given and whose repair callbacks are logged.
  local function setup_ctl()
    local s = sim.new{ guest = "linux", controllers = 2, luns_per_controller = 4, forgiving = true }
    return value(scsictl.new{ controllers = 2, luns_per_controller = 4, vm = s, linux_guest = s }), s
  end

  local function stubs(qv, gv, calls, fail)
    calls = calls or {}
    local function rec(name, ...)
      calls[#calls + 1] = name .. " " .. table.concat({ ... }, " ")
      if fail and fail[name] then return nil, name .. " refused by the stub" end
      return true
    end
    local vm = { observe = function() return qv end,
                 remove_scsi_disk = function(_, c, l) return rec("remove", c, l) end }
    local guest = { observe = function() return gv end,
      remove_mapped_virtual_disk = function(_, st) return rec("unmount", st.mount_path) end,
      remove_scsi_device = function(_, d) return rec("eject", d.controller, d.lun) end }
    return vm, guest, calls
  end

  local function dev(c, l, file) return { controller = c, lun = l, device = true, file = file,
                                          nodes = { ("scsictl-node-c%d-l%d"):format(c, l) }, group = false } end
  local function mnt(c, l, blk) return { mount_path = ("/run/mounts/scsi/%d_%d_0"):format(c, l), controller = c,
                                         lun = l, partition = 0, device = "/dev/" .. blk, block = blk, count = 1 } end

  it("agrees when the views match the records", function()
    local ctl = setup_ctl()
    local id = value(ctl:reserve{ host_path = "/img/a" })
    value(ctl:map_to_guest(id))
    local vm, guest = stubs({ dev(0, 0, "/img/a") },
      { devices = { { controller = 0, lun = 0, block = "sda" } }, mounts = { mnt(0, 0, "sda") } })
    local diffs, summary = reconcile.reconcile(ctl, { vm = vm, guest = guest, repair = true })
    assert.same({}, diffs)
    assert.same({ slots = 1, total = 0, repaired = 0, failed = 0, by_kind = {} },
      { slots = summary.slots, total = summary.total, repaired = summary.repaired, failed = summary.failed,
        by_kind = summary.by_kind })
  end)

  it("finds every kind; without repair nothing changes; with it the records and the VM follow", function()
    local ctl = setup_ctl()
    local a = value(ctl:reserve{ host_path = "/img/a" })             -- 0:0 mounted, QEMU lost it
    value(ctl:map_to_guest(a))
    value(ctl:reserve{ host_path = "/img/b" })                       -- 0:1 reserved, QEMU has it
    local c = value(ctl:reserve{ host_path = "/img/c" })             -- 0:2 mounted, guest unmounted it
    value(ctl:map_to_guest(c))
    local d = value(ctl:reserve{ host_path = "/img/d" })             -- 0:3 QEMU holds another file
    value(ctl:map_to_guest(d))
    local qv = { dev(0, 1, "/img/b"), dev(0, 2, "/img/c"), dev(0, 3, "/img/other"), dev(1, 0, "/img/x"),
                 { controller = 1, lun = 1, device = false, nodes = { "scsictl-node-c1-l1" }, group = false } }
    local gv = { devices = { { controller = 0, lun = 1, block = "sdb" }, { controller = 0, lun = 2, block = "sdc" },
                             { controller = 0, lun = 3, block = "sdd" }, { controller = 1, lun = 0, block = "sde" } },
                 mounts = { mnt(0, 0, "sda"), mnt(0, 1, "sdb"), mnt(0, 3, "sdd"), mnt(1, 2, "sdz") },
                 leftovers = { { mount_path = "/run/mounts/scsi/junk" } }, locked = {} }
    local before = ctl:save()
    local vm, guest, calls = stubs(qv, gv)
    local diffs = value(reconcile.reconcile(ctl, { vm = vm, guest = guest }))
    assert.same({
      "vm_missing 0:0", "guest_unexplained_mount 0:0",
      "vm_unrecorded 0:1", "guest_unrecorded_mount 0:1",
      "guest_missing_mount 0:2",
      "vm_unexplained 0:3", "guest_device_unexplained 0:3", "guest_unexplained_mount 0:3",
      "vm_unexplained 1:0", "guest_device_unexplained 1:0",
      "vm_leftover 1:1", "guest_unexplained_mount 1:2", "guest_leftover_path" }, kinds(diffs))
    for _, x in ipairs(diffs) do
      assert.is_false(x.repaired)
      assert.is_string(x.detail)
      assert.is_string(x.repair)
    end
    assert.same({}, calls)
    assert.equal(before, ctl:save())

    diffs = value(reconcile.reconcile(ctl, { vm = vm, guest = guest, repair = true }))
    for _, x in ipairs(diffs) do assert(x.repaired, x.kind .. ": " .. tostring(x.error)) end
    -- Unmounts, then ejects, then QEMU: P2 in the guest, P1's eject before remove.
    assert.same({ "unmount /run/mounts/scsi/0_0_0", "unmount /run/mounts/scsi/0_3_0", "unmount /run/mounts/scsi/1_2_0",
      "unmount /run/mounts/scsi/junk", "eject 0 3", "eject 1 0", "remove 0 3", "remove 1 0", "remove 1 1" }, calls)
    local states = {}
    for _, sl in ipairs(ctl:slots()) do
      states[#states + 1] = ("%d:%d %s %s"):format(sl.controller, sl.lun, sl.state, sl.partitions[1].state)
    end
    assert.same({ "0:0 reserved reserved", "0:1 attached mounted", "0:2 attached reserved", "0:3 reserved reserved" },
      states)
  end)

  it("leaves a slot alone while a guest step holds its lock: a mount path's, or an eject's", function()
    local gv = { devices = { { controller = 0, lun = 1, block = "sdb" }, { controller = 0, lun = 2, block = "sdc" } },
                 mounts = {}, leftovers = {},
                 locked = { "/run/mounts/scsi/0_1_0", "/run/mounts/scsi/0_2", "/run/mounts/elsewhere" } }
    assert.same({ "busy 0:1", "busy 0:2" }, kinds(reconcile.compare({}, {}, gv)))
    gv.locked = {}
    assert.same({ "guest_device_unexplained 0:1", "guest_device_unexplained 0:2" },
      kinds(reconcile.compare({}, {}, gv)))
  end)

  it("leaves busy and rootfs slots alone; a failed step stops the later steps of its slot", function()
    -- An add that yields: a map of `a` is in flight while reconcile runs.
    local function yes() return true end
    local ctl = value(scsictl.new{ controllers = 2, luns_per_controller = 4,
      vm = { add_scsi_disk = function() return coroutine.yield() end, remove_scsi_disk = yes },
      linux_guest = { add_mapped_virtual_disk = yes, remove_mapped_virtual_disk = yes, remove_scsi_device = yes } })
    value(ctl:reserve_for_rootfs(1, 3))
    local a = value(ctl:reserve{ host_path = "/img/a" })
    local co = coroutine.create(function() return ctl:map_to_guest(a) end)
    assert(coroutine.resume(co))
    local qv = { dev(0, 1, "/img/x"), dev(1, 3, "/img/rootfs") }
    local gv = { devices = { { controller = 0, lun = 1, block = "sdb" }, { controller = 1, lun = 3, block = "sdr" } },
                 mounts = { mnt(0, 1, "sdb") }, leftovers = {}, locked = {} }
    local vm, guest, calls = stubs(qv, gv, {}, { eject = true })
    local diffs = value(reconcile.reconcile(ctl, { vm = vm, guest = guest, repair = true }))
    assert.same({ "busy 0:0", "vm_unexplained 0:1", "guest_device_unexplained 0:1", "guest_unexplained_mount 0:1" },
      kinds(diffs))
    assert.same({ "unmount /run/mounts/scsi/0_1_0", "eject 0 1" }, calls)
    assert.is_true(diffs[4].repaired)
    assert.is_false(diffs[3].repaired)
    assert.matches("remove_scsi_device.*refused by the stub", diffs[3].error)
    assert.is_false(diffs[2].repaired)
    assert.matches("not tried: guest:remove_scsi_device", diffs[2].error)
    assert.is_false(diffs[1].repaired)
    assert.is_nil(diffs[1].repair)
    -- The map goes on untouched.
    assert(coroutine.resume(co, true))
    assert.equal("dead", coroutine.status(co))
    assert.equal("mounted", ctl:slots()[1].partitions[1].state)
  end)

  it("a release whose eject happened: guest_device_gone records it ejected; the reverse too", function()
    local s = sim.new{ guest = "linux", controllers = 1, luns_per_controller = 4, forgiving = true }
    local ctl = value(scsictl.new{ controllers = 1, luns_per_controller = 4, vm = s, linux_guest = s })
    local a = value(ctl:reserve{ host_path = "/img/a" })
    value(ctl:map_to_guest(a))
    -- The release stops at the eject: the disk stays attached, its release begun.
    s:fail_next("remove_scsi_device", 1, "injected")
    assert.is_nil(ctl:unmap_from_guest(a))
    assert.is_true(ctl:slots()[1].tearing_down)
    local vm, guest = stubs({ dev(0, 0, "/img/a") }, { devices = {}, mounts = {} })
    local diffs = value(reconcile.reconcile(ctl, { vm = vm, guest = guest, repair = true }))
    assert.same({ "guest_device_gone 0:0" }, kinds(diffs))
    assert.is_true(diffs[1].repaired)
    assert.equal("ejected", ctl:slots()[1].state)
    -- Ejected, but the guest has the disk again: recorded attached, and the
    -- release ejects it again.
    vm, guest = stubs({ dev(0, 0, "/img/a") },
      { devices = { { controller = 0, lun = 0, block = "sda" } }, mounts = {} })
    diffs = value(reconcile.reconcile(ctl, { vm = vm, guest = guest, repair = true }))
    assert.same({ "guest_device_present 0:0" }, kinds(diffs))
    assert.equal("attached", ctl:slots()[1].state)
    value(ctl:unmap_from_guest(a))
    assert.equal(0, ctl:stats().used)
  end)

  it("raises on malformed arguments and returns nil, msg when a view cannot be had", function()
    local ctl = setup_ctl()
    local vm, guest = stubs({}, { devices = {}, mounts = {} })
    assert.has_error(function() reconcile.reconcile(nil, { vm = vm, guest = guest }) end,
      "bad argument #1 to 'reconcile' (controller expected)")
    assert.has_error(function() reconcile.reconcile(ctl, { vm = vm }) end)
    assert.has_error(function() reconcile.reconcile(ctl, { vm = vm, guest = guest, repiar = true }) end,
      "bad argument #2 to 'reconcile' (unknown option 'repiar')")
    assert.has_error(function() reconcile.reconcile(ctl, { vm = vm, guest = guest, repair = 1 }) end)
    local broken = { observe = function() return nil, "QMP connection closed" end }
    local ok, msg = reconcile.reconcile(ctl, { vm = broken, guest = guest })
    assert.is_nil(ok)
    assert.equal("reconcile: QEMU: QMP connection closed", msg)
  end)
end)

---------------------------------------------------------------------------
-- A real Linux guest.

local okl, loop = pcall(require, "scsictl.loop")

describe("scsictl.reconcile (a real Linux guest)", function()
  local vm, guest                                    -- G.need()'s, set by need()

  setup(function() G.boot{ controllers = 2, second_qmp = true } end)
  after_each(G.scrub)
  teardown(G.shutdown)

  local function need()
    vm, guest = G.need()
    assert(okl, "scsictl.loop cannot be loaded: " .. tostring(loop))
    return vm, guest
  end

  local function new_ctl()
    return value(scsictl.new{ controllers = 2, luns_per_controller = 4, vm = vm:vm_backend(),
                              linux_guest = guest })
  end

  local function run(ctl, repair)
    local diffs, summary = reconcile.reconcile(ctl, { vm = vm:vm_backend(), guest = guest, repair = repair })
    assert(diffs, summary)
    if repair then
      for _, d in ipairs(diffs) do assert(d.repaired or not d.repair, d.kind .. ": " .. tostring(d.error)) end
    end
    return diffs, summary
  end

  -- Waits until neither QEMU nor the guest has a disk at the slot (the
  -- guest handles the unplug event a little later).
  local function wait_unplugged(c, l)
    local deadline = loop.now() + 5
    while loop.now() < deadline do
      local present = false
      for _, s in ipairs(value(vm:vm_backend():observe())) do
        if s.controller == c and s.lun == l and s.device then present = true end
      end
      for _, d in ipairs(value(guest:observe(2)).devices) do
        if d.controller == c and d.lun == l then present = true end
      end
      if not present then return end
      loop.sleep(0.02)
    end
    error("the disk is still there 5 s after its device_del")
  end

  it("a disk unplugged behind the controller's back: vm_missing, then map re-adds and unmap removes", function()
    need()
    local ctl <close> = new_ctl()
    local id = value(ctl:reserve{ host_path = G.ext4("gone.img", { ["g.txt"] = "gone\n" }) })
    local path = value(ctl:map_to_guest(id))
    value(vm:qmp():execute("device_del", { id = "scsictl-disk-c0-l0" }))
    wait_unplugged(0, 0)
    local before = ctl:save()
    local diffs = run(ctl, false)
    assert.same({ "vm_missing 0:0", "guest_unexplained_mount 0:0" }, kinds(diffs))
    assert.matches("only leftover nodes", diffs[1].detail)
    assert.equal(before, ctl:save())                       -- without repair nothing changes
    assert.equal(1, #value(guest:observe(2)).mounts)
    diffs = run(ctl, true)
    assert.same({ "vm_missing 0:0", "guest_unexplained_mount 0:0" }, kinds(diffs))
    assert.same({}, run(ctl, false))
    assert.equal("reserved", ctl:slots()[1].state)
    assert.equal(path, value(ctl:map_to_guest(id)))
    assert.equal("gone\n", G.gsh("cat " .. path .. "/g.txt"))
    value(ctl:unmap_from_guest(id))
    assert.same({}, G.leftovers())
  end)

  it("a disk and a lone node added with our names at unused slots are found and removed", function()
    need()
    local ctl <close> = new_ctl()
    local q = vm:qmp()
    local img = G.ext4("stray.img", { s = "s" })
    value(q:execute("blockdev-add", { driver = "raw", ["node-name"] = "scsictl-node-c1-l2",
      file = { driver = "file", filename = img } }))
    value(q:execute("device_add", { driver = "scsi-hd", id = "scsictl-disk-c1-l2", drive = "scsictl-node-c1-l2",
      bus = "scsi1.0", ["scsi-id"] = 0, channel = 0, lun = 2 }))
    value(q:execute("blockdev-add", { driver = "raw", ["node-name"] = "scsictl-node-c0-l3",
      file = { driver = "file", filename = G.ext4("lone.img", { l = "l" }) } }))
    -- The guest sees the disk once its hot-plug event is handled.
    local deadline = loop.now() + 10
    while #value(guest:observe(2)).devices == 0 and loop.now() < deadline do loop.sleep(0.05) end
    local diffs = run(ctl, true)
    assert.same({ "vm_leftover 0:3", "vm_unexplained 1:2", "guest_device_unexplained 1:2" }, kinds(diffs))
    assert.same({}, run(ctl, false))
    assert.same({}, G.leftovers())
    -- The slots work as usual afterwards.
    local id = value(ctl:reserve{ host_path = img })
    value(ctl:map_to_guest(id))
    value(ctl:unmap_from_guest(id))
    assert.same({}, G.leftovers())
  end)

  it("an unmount in the guest behind its back, and extra mounts under /run/mounts/scsi", function()
    need()
    local ctl <close> = new_ctl()
    local id = value(ctl:reserve{ host_path = G.ext4("um.img", { ["u.txt"] = "um\n" }) })
    local path = value(ctl:map_to_guest(id))
    G.gsh("umount " .. path)
    G.gsh("mkdir -p /run/mounts/scsi/1_3_0 /run/mounts/scsi/stale && mount -t tmpfs extra /run/mounts/scsi/1_3_0")
    local diffs = run(ctl, true)
    -- The umount left its directory behind: a leftover too.
    assert.same({ "guest_missing_mount 0:0", "guest_leftover_path 0:0", "guest_unexplained_mount 1:3",
      "guest_leftover_path" }, kinds(diffs))
    assert.equal("reserved", ctl:slots()[1].partitions[1].state)
    assert.same({}, run(ctl, false))
    -- The next map mounts again (it would have said "already mounted").
    assert.equal(path, value(ctl:map_to_guest(id)))
    assert.equal("um\n", G.gsh("cat " .. path .. "/u.txt"))
    value(ctl:unmap_from_guest(id))
    assert.same({}, G.leftovers())
  end)

  -- A crash just after `step` took effect: the controller's map runs in a
  -- coroutine of its own whose callback, once QEMU or the guest has done
  -- the step, takes a copy of the state file and yields for good.
  for _, case in ipairs({ { "add_scsi_disk", "vm_unrecorded 0:0" },
                          { "add_mapped_virtual_disk", "guest_unrecorded_mount 0:0" } }) do
    local step, want = case[1], case[2]
    it(("a crash with %s in flight: %s, recorded as done; the release removes it"):format(step, want:match("%S+")),
        function()
      need()
      local vmb = vm:vm_backend()
      local state = G.path_of("inflight-" .. step)
      local snapshot
      local function crash(name, f)
        return function(_, ...)
          local r = table.pack(f(...))
          if name == step then
            snapshot = value(loop.read_file(state))
            coroutine.yield()                        -- never resumed: the process "died" here
          end
          return table.unpack(r, 1, r.n)
        end
      end
      local function pass(f) return function(_, ...) return f(...) end end
      local ctl = value(scsictl.new{ controllers = 2, luns_per_controller = 4, state_file = state,
        vm = { add_scsi_disk = crash("add_scsi_disk", function(...) return vmb:add_scsi_disk(...) end),
               remove_scsi_disk = pass(function(...) return vmb:remove_scsi_disk(...) end) },
        linux_guest = {
          add_mapped_virtual_disk = crash("add_mapped_virtual_disk",
            function(...) return guest:add_mapped_virtual_disk(...) end),
          remove_mapped_virtual_disk = pass(function(...) return guest:remove_mapped_virtual_disk(...) end),
          remove_scsi_device = pass(function(...) return guest:remove_scsi_device(...) end) } })
      local id = value(ctl:reserve{ host_path = G.ext4("flight.img", { f = "f" }) })
      local co = coroutine.create(function() return ctl:map_to_guest(id) end)
      assert(coroutine.resume(co))
      assert.equal("suspended", coroutine.status(co))
      assert.is_string(snapshot)
      -- The restarted agent reads the file as it was at the crash.
      local copy = state .. ".restarted"
      local f = assert(io.open(copy, "wb"))
      f:write(snapshot)
      f:close()
      local ctl2 <close> = value(scsictl.open(copy, { vm = vmb, linux_guest = guest }))
      -- A hot-added disk shows in the guest once its hot-plug event is
      -- handled (before that: guest_device_missing, which needs no repair).
      local deadline = loop.now() + 10
      while #value(guest:observe(2)).devices == 0 and loop.now() < deadline do loop.sleep(0.05) end
      local diffs = run(ctl2, true)
      assert.same({ want }, kinds(diffs))
      assert.same({}, run(ctl2, false))
      local sl = ctl2:slots()[1]
      assert.equal("attached", sl.state)
      assert.equal(step == "add_scsi_disk" and "reserved" or "mounted", sl.partitions[1].state)
      value(ctl2:unmap_from_guest(id))
      assert.same({}, G.leftovers())
      co, ctl = nil, nil -- luacheck: ignore 311 (the "crashed" agent is dropped)
      collectgarbage()
    end)
  end

  -------------------------------------------------------------------------
  -- The kill test.

  local shq = G.shquote

  -- Starts an agent child; returns its popen handle and pid once it is
  -- ready, or nil and what it said.
  local function spawn(state, seed, images, errfile)
    local src = debug.getinfo(1, "S").source:sub(2)
    local script = src:gsub("[^/]*$", "") .. "support/agent_child.lua"
    local qmp2, agent_socket, pci = G.endpoints()
    local quoted = {}
    for i, img in ipairs(images) do quoted[i] = shq(img) end
    local cmd = ("echo $$; LUA_PATH=%s LUA_CPATH=%s exec lua5.4 %s %s %s %s %s %d %d %s 2>>%s"):format(
      shq(package.path), shq(package.cpath), shq(script), shq(state), shq(qmp2), shq(agent_socket),
      pci, seed, 4, table.concat(quoted, " "), shq(errfile))
    local p = assert(io.popen(cmd, "r"))
    local pid = math.tointeger(tonumber(p:read("l")))
    local line = p:read("l")
    if line ~= "ready" then
      p:close()
      return nil, tostring(line) .. " " .. (H.read(errfile) or "")
    end
    return p, pid
  end

  -- Calls f(id) for every reservation at once, each retried while busy
  -- or failing (a shared disk's calls take turns); the errors left.
  local function each_reservation(ctl, f)
    local errors = {}
    loop.run(function()
      local tasks = {}
      for _, r in ipairs(ctl:reservations()) do
        tasks[#tasks + 1] = loop.spawn(function()
          local msg
          for _ = 1, 20 do
            local ok, m, code = f(r)
            if ok or code == "not_found" then return end
            msg = ("%s: %s (%s)"):format(r.id, tostring(m), tostring(code))
            loop.sleep(code == "busy" and 0.05 or 0.2)
          end
          errors[#errors + 1] = msg
        end)
      end
      for _, t in ipairs(tasks) do t:join() end
    end)
    return errors
  end

  -- After one kill: reopen, reconcile with repair, check a second pass
  -- finds nothing, re-map what is held, release everything, check that
  -- nothing is left. Returns the report, or raises.
  local function restart(state, vmb, stats)
    -- Never closed (a closed controller's file says so, and the next child
    -- would find it closed): dropped, like the process it stands for.
    local ctl = value(scsictl.open(state, { vm = vmb, linux_guest = guest }))
    local diffs, summary = reconcile.reconcile(ctl, { vm = vmb, guest = guest, repair = true })
    assert(diffs, summary)
    for _, d in ipairs(diffs) do
      stats.kinds[d.kind] = (stats.kinds[d.kind] or 0) + 1
      assert(d.repaired or not d.repair, ("%s not repaired: %s\n%s"):format(d.kind, tostring(d.error),
        reconcile.format(diffs, summary)))
    end
    stats.found, stats.repaired = stats.found + summary.total, stats.repaired + summary.repaired
    local again = value(reconcile.reconcile(ctl, { vm = vmb, guest = guest }))
    local left = {}
    for _, d in ipairs(again) do
      if d.kind ~= "guest_device_missing" then left[#left + 1] = d end
    end
    assert(#left == 0, "a second pass still finds:\n" .. reconcile.format(left) .. "after\n"
      .. reconcile.format(diffs, summary))
    -- The next map adds and mounts what is missing: every held claim maps.
    local errs = each_reservation(ctl, function(r)
      if r.release_pending then return true end
      stats.maps = stats.maps + 1
      return ctl:map_to_guest(r.id)
    end)
    assert(#errs == 0, "re-map failed: " .. table.concat(errs, "; "))
    stats.releases = stats.releases + #ctl:reservations()
    errs = each_reservation(ctl, function(r) return ctl:unmap_from_guest(r.id) end)
    assert(#errs == 0, "release failed: " .. table.concat(errs, "; ") .. "\nafter\n"
      .. reconcile.format(diffs, summary))
    assert.equal(0, ctl:stats().used)
    local rest = G.leftovers()
    assert(#rest == 0, "left after the release: " .. table.concat(rest, "; ") .. "\nafter\n"
      .. reconcile.format(diffs, summary))
    return diffs, summary
  end

  it("a host agent killed at random moments: reconcile, re-map and release leave nothing", function()
    need()
    local kills = math.tointeger(tonumber(os.getenv("SCSICTL_RECONCILE_KILLS") or "")) or 24
    local images = {}
    for i = 1, 4 do images[i] = G.ext4(("agent%d.img"):format(i), { ["n.txt"] = i .. "\n" }) end
    local state, errfile = G.path_of("agent.state"), G.path_of("agent.err")
    local vmb = vm:vm_backend()
    local seed0 = math.random(1, 1e6)
    local stats = { kinds = {}, found = 0, repaired = 0, maps = 0, releases = 0, with_diffs = 0 }
    local best, failures = nil, {}
    local started = loop.now()
    for k = 1, kills do
      guest:close()                                -- qemu-ga serves one client: the child's turn
      local p, pid = spawn(state, seed0 + k, images, errfile)
      assert(p, ("kill %d: the child did not start: %s"):format(k, tostring(pid)))
      loop.sleep(0.5 + math.random() * 2)
      os.execute("kill -9 " .. pid)
      p:close()
      local ok, diffs, summary = pcall(restart, state, vmb, stats)
      collectgarbage()                               -- the dropped controller lets go of the file
      if not ok then
        failures[#failures + 1] = ("kill %d (seed %d): %s"):format(k, seed0 + k, tostring(diffs))
        G.scrub()
        os.remove(state)
      elseif #diffs > 0 then
        stats.with_diffs = stats.with_diffs + 1
        if not best or #diffs > #best[1] then best = { diffs, summary, k } end
      end
    end
    local seconds = loop.now() - started
    local by_kind = {}
    for kind, n in pairs(stats.kinds) do by_kind[#by_kind + 1] = ("%s %d"):format(kind, n) end
    table.sort(by_kind)
    io.stderr:write(("\nreconcile kill test: %d kills in %.1f s (%.2f s each), seed %d; %d restarts found "
      .. "differences: %d in all (%s), %d repaired; then %d re-maps and %d releases; %d failures\n"):format(
      kills, seconds, seconds / kills, seed0, stats.with_diffs, stats.found,
      #by_kind > 0 and table.concat(by_kind, ", ") or "none", stats.repaired, stats.maps, stats.releases,
      #failures))
    if best then
      io.stderr:write(("the reconcile report after kill %d:\n%s"):format(best[3], reconcile.format(best[1], best[2])))
    end
    assert(#failures == 0, table.concat(failures, "\n----\n"))
  end)
end)
