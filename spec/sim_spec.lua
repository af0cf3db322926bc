-- Busted spec for scsictl.sim: the simulator is driven by calling its
-- callbacks directly, the way a controller would (no C module needed).

local root = debug.getinfo(1, "S").source:match("^@(.-)spec/[^/]*$") or ""
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
local sim = require("scsictl.sim")

local function att(path, ro)
  return { path = path, type = "VirtualDisk", read_only = ro or false }
end

local function lset(c, l, p, ro, path)
  return { mount_path = path or ("/run/mounts/scsi/%d_%d_%d"):format(c, l, p),
           controller = c, lun = l, partition = p, read_only = ro or false,
           encrypted = false, options = {}, ensure_filesystem = false,
           filesystem = "", block_dev = false }
end

local function wset(c, l, p)
  return { container_path = ("C:\\mounts\\scsi\\%d_%d_%d"):format(c, l, p),
           lun = l }
end

local function dev(c, l) return { controller = c, lun = l } end

-- Asserts a callback refusal (nil, message) whose message matches pattern.
local function refused(pattern, ok, msg)
  assert.is_nil(ok)
  assert.is_string(msg)
  assert.is_truthy(msg:find(pattern), ("%q does not match %q"):format(msg, pattern))
end

describe("scsictl.sim", function()
  local s
  before_each(function()
    s = sim.new{ controllers = 2, luns_per_controller = 4, partitions = 2,
                 disks = { ["/three"] = { partitions = 3 } } }
  end)

  describe("construction", function()
    it("has defaults and exposes every callback on the object itself", function()
      local d = sim.new()
      assert.equal(4, d.controllers)
      assert.equal(64, d.luns_per_controller)
      assert.equal("linux", d.guest)
      for _, op in ipairs{ "add_scsi_disk", "remove_scsi_disk",
          "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
          "remove_scsi_device", "add_mapped_virtual_disk_for_container_scratch" } do
        assert.is_function(rawget(d, op), op)
      end
      assert.is_true(d:is_empty())
    end)

    it("rejects bad options", function()
      assert.has_error(function() sim.new{ controllers = -1 } end)
      assert.has_error(function() sim.new{ luns_per_controller = 0 } end)
      assert.has_error(function() sim.new{ guest = "bsd" } end)
      assert.has_error(function() sim.new{ disks = { ["/x"] = { partitions = "2" } } } end)
    end)

    it("knows partition counts", function()
      assert.equal(2, s:partitions_of("/any"))
      assert.equal(3, s:partitions_of("/three"))
      s:set_partitions("/any", 5)
      assert.equal(5, s:partitions_of("/any"))
    end)
  end)

  describe("VM", function()
    it("adds and removes (linux: after eject)", function()
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 1))
      assert.same({ { controller = 0, lun = 1, host_path = "/a", ejected = false,
                      read_only = false, type = "VirtualDisk" } }, s:attached())
      refused("not ejected", s:remove_scsi_disk(0, 1))
      assert.is_true(s:remove_scsi_device(dev(0, 1)))
      assert.is_true(s:attached()[1].ejected)
      assert.is_true(s:remove_scsi_disk(0, 1))
      assert.is_true(s:is_empty())
    end)

    it("refuses an occupied slot, a slot outside the VM, a path at two slots", function()
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 0))
      refused("occupied by '/a'", s:add_scsi_disk(att("/b"), 0, 0))
      refused("outside the VM", s:add_scsi_disk(att("/b"), 2, 0))
      refused("outside the VM", s:add_scsi_disk(att("/b"), 0, 4))
      refused("already attached at controller 0 lun 0", s:add_scsi_disk(att("/a"), 1, 0))
      assert.equal(1, #s:attached())
    end)

    it("treats re-adding the same path at the same slot as success", function()
      assert.is_true(s:add_scsi_disk(att("/a", true), 0, 2))
      assert.is_true(s:add_scsi_disk(att("/a", true), 0, 2))
      local e = s.log[#s.log]
      assert.is_true(e.ok)
      assert.is_true(e.already)
      refused("different attachment", s:add_scsi_disk(att("/a", false), 0, 2))
      assert.equal(1, #s:attached())
    end)

    it("refuses removing an empty slot or one outside the VM", function()
      refused("no disk at controller 1 lun 3", s:remove_scsi_disk(1, 3))
      refused("outside the VM", s:remove_scsi_disk(5, 0))
      -- A lun past the end must not alias the next controller's slot.
      assert.is_true(s:add_scsi_disk(att("/a"), 1, 1))
      refused("outside the VM", s:remove_scsi_device(dev(0, 5)))
      refused("outside the VM", s:add_mapped_virtual_disk(lset(0, 5, 0)))
      refused("outside the VM", s:remove_scsi_disk(0, 5))
      assert.is_nil(s.log[#s.log].host_path)
    end)

    it("refuses malformed arguments in strict mode", function()
      refused("attachment.type", s:add_scsi_disk({ path = "/a", type = "Floppy",
                                                  read_only = false }, 0, 0))
      refused("unexpected field", s:add_scsi_disk({ path = "/a", type = "VirtualDisk",
                                                   read_only = false, junk = 1 }, 0, 0))
      refused("controller and lun", s:add_scsi_disk(att("/a"), 0.5, 0))
      local lax = sim.new{ strict = false }
      assert.is_true(lax:add_scsi_disk({ path = "/a", junk = 1 }, 0, 0))
    end)
  end)

  describe("Linux guest", function()
    before_each(function()
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 1))
      assert.is_true(s:add_scsi_disk(att("/three"), 1, 0))
    end)

    it("mounts and unmounts partitions", function()
      assert.is_true(s:add_mapped_virtual_disk(lset(0, 1, 0)))
      assert.is_true(s:add_mapped_virtual_disk(lset(0, 1, 2, true)))
      assert.is_true(s:add_mapped_virtual_disk(lset(1, 0, 3)))
      local ms = s:mounts()
      assert.equal(3, #ms)
      assert.same({ path = "/run/mounts/scsi/0_1_2", controller = 0, lun = 1,
                    partition = 2, read_only = true, host_path = "/a",
                    scratch = false }, ms[2])
      assert.is_true(s:remove_mapped_virtual_disk(lset(0, 1, 2, true)))
      assert.equal(2, #s:mounts())
    end)

    it("refuses a LUN not attached, a missing partition, a taken path", function()
      refused("no disk is attached at controller 0 lun 2",
              s:add_mapped_virtual_disk(lset(0, 2, 0)))
      refused("no partition 3", s:add_mapped_virtual_disk(lset(0, 1, 3)))
      assert.is_true(s:add_mapped_virtual_disk(lset(0, 1, 1, false, "/m")))
      refused("/m is already mounted", s:add_mapped_virtual_disk(lset(1, 0, 1, false, "/m")))
      refused("already mounted", s:add_mapped_virtual_disk(lset(0, 1, 2, false, "/m")))
    end)

    it("treats mounting the same device and partition at the same path as success", function()
      assert.is_true(s:add_mapped_virtual_disk(lset(0, 1, 1)))
      assert.is_true(s:add_mapped_virtual_disk(lset(0, 1, 1)))
      assert.is_true(s.log[#s.log].already)
      assert.equal(1, #s:mounts())
      refused("already mounted", s:add_mapped_virtual_disk(lset(0, 1, 1, true)))
    end)

    it("refuses to eject with a mounted partition, or twice; refuses mounting ejected", function()
      assert.is_true(s:add_mapped_virtual_disk(lset(0, 1, 0)))
      refused("mounted partition", s:remove_scsi_device(dev(0, 1)))
      refused("mounted partition", s:remove_scsi_disk(0, 1))
      assert.is_true(s:remove_mapped_virtual_disk(lset(0, 1, 0)))
      assert.is_true(s:remove_scsi_device(dev(0, 1)))
      refused("already ejected", s:remove_scsi_device(dev(0, 1)))
      refused("ejected", s:add_mapped_virtual_disk(lset(0, 1, 0)))
      refused("no device", s:remove_scsi_device(dev(0, 3)))
      -- Re-adding an ejected disk is an idempotent success; it stays ejected.
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 1))
      assert.is_true(s:attached()[1].ejected)
    end)

    it("refuses to unmount an unknown path or one holding another device", function()
      refused("nothing is mounted", s:remove_mapped_virtual_disk(lset(0, 1, 0)))
      assert.is_true(s:add_mapped_virtual_disk(lset(0, 1, 0, false, "/m")))
      refused("not the device named", s:remove_mapped_virtual_disk(lset(1, 0, 0, false, "/m")))
    end)

    it("refuses Windows-shaped settings and the scratch callback", function()
      refused("protocol", s:add_mapped_virtual_disk(wset(0, 1, 0)))
      refused("Linux guest has no", s:add_mapped_virtual_disk_for_container_scratch(lset(0, 1, 0)))
      local bad = lset(0, 1, 0)
      bad.options = { 1 }
      refused("settings.options", s:add_mapped_virtual_disk(bad))
    end)
  end)

  describe("Windows guest", function()
    local w
    before_each(function()
      w = sim.new{ controllers = 2, luns_per_controller = 4, guest = "windows" }
      assert.is_true(w:add_scsi_disk(att("/a"), 0, 1))
      assert.is_true(w:add_scsi_disk(att("/b"), 1, 1))
    end)

    it("mounts by container path and lun, scratch too, and unmounts", function()
      assert.is_true(w:add_mapped_virtual_disk(wset(0, 1, 0)))
      assert.is_true(w:add_mapped_virtual_disk_for_container_scratch(wset(1, 1, 1)))
      local ms = w:mounts()
      assert.equal(2, #ms)
      assert.equal("/b", ms[2].host_path)
      assert.is_true(ms[2].scratch)
      assert.equal(1, ms[2].partition)
      refused("still has mounted", w:remove_scsi_disk(0, 1))
      assert.is_true(w:remove_mapped_virtual_disk(wset(0, 1, 0)))
      assert.is_true(w:remove_scsi_disk(0, 1)) -- no eject step on Windows
      refused("no remove_scsi_device", w:remove_scsi_device(dev(1, 1)))
    end)

    it("resolves a bare lun only when unambiguous", function()
      refused("ambiguous", w:add_mapped_virtual_disk{ container_path = "C:\\x", lun = 1 })
      assert.is_true(w:add_scsi_disk(att("/c"), 0, 2))
      assert.is_true(w:add_mapped_virtual_disk{ container_path = "C:\\x", lun = 2 })
      assert.equal("/c", w:mounts()[1].host_path)
      refused("no disk is attached at lun 3", w:add_mapped_virtual_disk{ container_path = "C:\\y", lun = 3 })
      refused("lun", w:remove_mapped_virtual_disk{ container_path = "C:\\x", lun = 1 })
      refused("nothing is mounted", w:remove_mapped_virtual_disk{ container_path = "C:\\z", lun = 2 })
      assert.is_true(w:remove_mapped_virtual_disk{ container_path = "C:\\x", lun = 2 })
    end)
  end)

  describe("fault injection", function()
    it("fails the next n calls, then succeeds, changing nothing", function()
      s:fail_next("add_scsi_disk", 2, "hypervisor busy")
      refused("hypervisor busy", s:add_scsi_disk(att("/a"), 0, 0))
      refused("hypervisor busy", s:add_scsi_disk(att("/a"), 0, 0))
      assert.is_true(s:is_empty())
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 0))
      local c = s:counts()
      assert.equal(3, c.calls)
      assert.equal(2, c.injected)
      assert.equal(0, c.refused)
      assert.is_true(s.log[1].injected)
      assert.equal(0, #s:refusals())
    end)

    it("supports the three failure forms and aliases", function()
      s:fail_next("attach", 1, "boom", "error")
      assert.has_error(function() s:add_scsi_disk(att("/a"), 0, 0) end, "boom")
      s:fail_next("attach", 1, "boom", "false")
      assert.is_false(s:add_scsi_disk(att("/a"), 0, 0))
      s:set_fault_form("error")
      s:fail_next("attach", 1)
      assert.has_error(function() s:add_scsi_disk(att("/a"), 0, 0) end)
      s:set_fault_form("nil")
      s:fail_next("mount", 1)
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 0))
      refused("injected failure of add_mapped_virtual_disk",
              s:add_mapped_virtual_disk(lset(0, 0, 0)))
      assert.has_error(function() s:fail_next("frobnicate", 1) end)
      assert.has_error(function() s:fail_next("attach", 1, nil, "loud") end)
    end)

    it("cancels with n = 0 and clear_faults", function()
      s:fail_next("add_scsi_disk", 3)
      s:fail_next("add_scsi_disk", 0)
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 0))
      s:fail_next("remove_scsi_device", 1)
      s:fail_rate(1)
      s:clear_faults()
      assert.is_true(s:remove_scsi_device(dev(0, 0)))
    end)

    it("fails at a seeded rate, deterministically", function()
      local function run(seed)
        local r = sim.new{ seed = seed, luns_per_controller = 64, controllers = 4 }
        r:fail_rate(0.5, { "attach" }, "mixed")
        local outcomes = {}
        for i = 0, 199 do
          local ok, res = pcall(r.add_scsi_disk, r, att("/d" .. i), i // 64, i % 64)
          outcomes[#outcomes + 1] = not ok and "error" or res == true and "ok"
            or res == false and "false" or "nil"
        end
        return outcomes, r
      end
      local a, ra = run(7)
      local b = run(7)
      local c = run(8)
      assert.same(a, b)
      assert.are_not.same(a, c)
      local n = {}
      for _, o in ipairs(a) do n[o] = (n[o] or 0) + 1 end
      assert.is_true(n.ok > 60 and n.ok < 140)
      assert.is_true((n.error or 0) > 10 and (n["false"] or 0) > 10 and (n["nil"] or 0) > 10)
      assert.equal(n.ok, #ra:attached())
      -- Other ops are not affected.
      assert.is_true(ra:remove_scsi_device(dev(ra:attached()[1].controller,
                                               ra:attached()[1].lun)))
    end)

    it("has a generator in [0, 1) independent of math.random", function()
      local r1, r2 = sim.new{ seed = 3 }, sim.new{ seed = 3 }
      for _ = 1, 100 do
        math.random()
        local x = r1:random()
        assert.equal(x, r2:random())
        assert.is_true(x >= 0 and x < 1)
      end
    end)
  end)

  describe("latency", function()
    it("yields n times inside a coroutine, acts after", function()
      s:set_latency(3, "attach")
      local co = coroutine.wrap(function()
        return s:add_scsi_disk(att("/a"), 0, 0)
      end)
      for _ = 1, 3 do
        assert.is_nil(co())
        assert.is_true(s:is_empty())
        local f = s:in_flight()
        assert.equal(1, #f)
        assert.equal("add_scsi_disk", f[1].op)
        assert.equal("/a", f[1].host_path)
      end
      assert.is_true(co())
      assert.equal(0, #s:in_flight())
      assert.equal(1, #s:attached())
    end)

    it("does not yield outside a coroutine, nor for other ops", function()
      s:set_latency(2, "attach")
      assert.is_true(s:add_scsi_disk(att("/a"), 0, 0))
      local co = coroutine.wrap(function()
        return s:remove_scsi_device(dev(0, 0))
      end)
      assert.is_true(co())
      s:set_latency(0)
      co = coroutine.wrap(function() return s:remove_scsi_disk(0, 0) end)
      assert.is_true(co())
    end)

    it("leaves state untouched when the coroutine is abandoned", function()
      s:set_latency(1)
      local co = coroutine.create(function() return s:add_scsi_disk(att("/a"), 0, 0) end)
      assert.is_true(coroutine.resume(co))
      assert.is_true(coroutine.close(co))
      co = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      assert.is_true(s:is_empty())
      assert.equal(0, #s.log)
    end)
  end)

  describe("log", function()
    it("records ordered entries with context", function()
      s:add_scsi_disk(att("/a"), 0, 1)
      s:add_mapped_virtual_disk(lset(0, 1, 1, true))
      s:add_scsi_disk(att("/b"), 0, 1)
      s:remove_mapped_virtual_disk(lset(0, 1, 1, true))
      s:remove_scsi_device(dev(0, 1))
      s:remove_scsi_disk(0, 1)
      local ops = {}
      for i, e in ipairs(s.log) do
        assert.equal(i, e.seq)
        ops[i] = e.op
      end
      assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "add_scsi_disk",
                    "remove_mapped_virtual_disk", "remove_scsi_device",
                    "remove_scsi_disk" }, ops)
      local m = s.log[2]
      assert.same({ 0, 1, "/a", 1, "/run/mounts/scsi/0_1_1", true, true },
        { m.controller, m.lun, m.host_path, m.partition, m.path, m.read_only, m.ok })
      assert.is_false(s.log[3].ok)
      assert.equal("/a", s.log[5].host_path)
      assert.equal("/a", s.log[6].host_path)
      assert.equal(2, #s:events("add_scsi_disk"))
      assert.equal(1, #s:events("eject"))
      assert.equal(1, #s:refusals())
      assert.equal(5, #s:events(function(e) return e.ok end))
      s:clear_log()
      assert.equal(0, #s.log)
      assert.equal(0, #s:events())
    end)
  end)

  describe("rendering", function()
    it("draws the grid, legend, disks and mounts", function()
      s:add_scsi_disk(att("/a", true), 0, 1)
      s:add_mapped_virtual_disk(lset(0, 1, 0, true))
      s:add_mapped_virtual_disk(lset(0, 1, 1, true))
      s:add_scsi_disk(att("/b"), 1, 2)
      s:remove_scsi_device(dev(1, 2))
      local text = tostring(s)
      assert.equal(text, s:render())
      assert.is_truthy(text:find("controller 0   .    A2   .    .", 1, true), text)
      assert.is_truthy(text:find("controller 1   .    .    E    .", 1, true), text)
      assert.is_truthy(text:find("legend", 1, true))
      assert.is_truthy(text:find("/run/mounts/scsi/0_1_1", 1, true))
      assert.is_truthy(text:find("/b", 1, true))
    end)

    it("shows pins, reservations and refs from a controller view", function()
      s:add_scsi_disk(att("/a"), 0, 1)
      s:add_mapped_virtual_disk(lset(0, 1, 0))
      local fake = { slots = function()
        return {
          { controller = 0, lun = 0, pinned = true, busy = false, reservations = 0,
            partitions = {} },
          { controller = 0, lun = 1, pinned = false, busy = false, host_path = "/a",
            state = "attached", reservations = 3,
            partitions = { { partition = 0, state = "mounted", refs = 3,
                             guest_path = "/run/mounts/scsi/0_1_0" } } },
          { controller = 0, lun = 2, pinned = false, busy = true, host_path = "/c",
            state = "reserved", reservations = 1,
            partitions = { { partition = 0, state = "reserved", refs = 1 } } },
        }
      end }
      local text = s:render(fake)
      assert.is_truthy(text:find("controller 0   P    A1   r    .", 1, true), text)
      assert.is_truthy(text:find("refs 3", 1, true), text)
      assert.is_truthy(text:find("claims 3", 1, true), text)
      assert.is_truthy(text:find("BUSY", 1, true), text)
      s:set_view(fake)
      assert.equal(text, tostring(s))
    end)

    it("shows only the first 16 luns of a large VM and says so", function()
      local big = sim.new{ controllers = 2, luns_per_controller = 64 }
      big:add_scsi_disk(att("/far"), 1, 40)
      local text = tostring(big)
      assert.is_truthy(text:find("showing luns 0-15 of 64", 1, true), text)
      assert.is_truthy(text:find("1:40", 1, true), text)
      assert.is_falsy(text:find(" 16 ", 1, true))
    end)
  end)

  describe("sim.controller", function()
    local have = pcall(require, "scsictl")
    local t = have and it or pending
    t("builds a controller over the simulator", function()
      local ctl, vm = sim.controller{ controllers = 2, luns_per_controller = 4 }
      local id = assert(ctl:reserve{ host_path = "/img/x.vhdx" })
      local path = assert(ctl:map_to_guest(id))
      assert.equal("/run/mounts/scsi/0_0_0", path)
      assert.equal(1, #vm:mounts())
      assert.is_truthy(tostring(vm):find("claims 1", 1, true))
      assert.is_true(ctl:unmap_from_guest(id))
      assert.is_true(vm:is_empty())
      assert.equal(0, #vm:refusals())
    end)
  end)
end)
