-- scsictl.state_writer: the state file written on the event loop (libuv's
-- threadpool), shared by the tasks whose changes are in flight together.
local scsictl = require("scsictl")
local sim = require("scsictl.sim")
local loop = require("scsictl.loop")
local state_writer = require("scsictl.state_writer")

local H = require("helper")
local read = H.read

local tmpdir = H.tmpdir

-- Backends that wait on the loop inside a task (a VM call takes 2 ms).
local function slow(s)
  return setmetatable({}, { __index = function(_, k)
    return function(_, ...)
      if loop.current() then loop.sleep(0.002) end
      return s[k](s, ...)
    end
  end })
end

local storage_fails = H.storage_fails

describe("scsictl.state_writer", function()
  local dir, s, ctl, writer
  before_each(function()
    dir = tmpdir()
    s = sim.new{ guest = "linux", controllers = 2, luns_per_controller = 8 }
    writer = state_writer.new()
    local b = slow(s)
    ctl = assert(scsictl.new{ controllers = 2, luns_per_controller = 8, vm = b, linux_guest = b,
                              state_file = dir .. "/state", state_writer = writer })
  end)
  after_each(function()
    ctl = nil
    collectgarbage()
    H.rmdir(dir)
  end)

  it("writes every change outside a task, as the in-place writer does", function()
    local id = assert(ctl:reserve{ host_path = "/img/a" })
    assert.are.equal(ctl:save(), read(dir .. "/state"))
    assert(ctl:map_to_guest(id))
    assert.are.equal(ctl:save(), read(dir .. "/state"))
    assert.is_true(ctl:unmap_from_guest(id))
    assert.are.equal(ctl:save(), read(dir .. "/state"))
    assert.are.equal(8, writer.writes) -- reserve 1, map 3, unmap 4
    assert.is_true(ctl:reserve_for_rootfs(1, 7))
    assert.are.equal(ctl:save(), read(dir .. "/state"))
    assert.is_true(ctl:close())
    assert.is_truthy(read(dir .. "/state"):match("geometry 2 8 linux closed\n"))
    assert.are.equal(dir .. "/state", ctl:state_file())
    assert.is_truthy(tostring(writer):match("^scsictl.state_writer %(10 writes, 0 failed%)$"))
  end)

  it("writes a repaired record (set_disk_state / set_mount_state) before the call returns, in a task too", function()
    local id = assert(ctl:reserve{ host_path = "/img/a" })
    assert(ctl:map_to_guest(id))
    local before = writer.writes
    assert.is_true(ctl:set_mount_state(0, 0, 0, "reserved"))
    assert.are.equal(ctl:save(), read(dir .. "/state"))
    loop.run(function()
      assert.is_true(ctl:set_disk_state(0, 0, "reserved"))
      assert.are.equal(ctl:save(), read(dir .. "/state"))
    end)
    assert.is_truthy(read(dir .. "/state"):find("disk 0 0 reserved 0 ", 1, true))
    assert.are.equal(before + 2, writer.writes)
  end)

  it("shares writes between tasks: 16 cycles at once write far less than 16 alone", function()
    loop.run(function()
      local tasks = {}
      for i = 1, 16 do
        tasks[i] = loop.spawn(function()
          local id = assert(ctl:reserve{ host_path = "/img/" .. i })
          assert(ctl:map_to_guest(id))
          assert(ctl:unmap_from_guest(id))
          return true
        end)
      end
      for i = 1, 16 do assert.is_true(tasks[i]:join()) end
    end)
    assert.is_true(writer.writes < 16 * 8 / 2, tostring(writer))
    assert.are.equal(ctl:save(), read(dir .. "/state"))
    assert.are.equal(0, ctl:stats().reservations)
    assert.is_true(s:is_empty())
  end)

  it("fails the calls whose write failed with io, undoes reserves, and converges", function()
    local a = assert(ctl:reserve{ host_path = "/img/a" })
    local before, file = ctl:save(), read(dir .. "/state")
    local back = storage_fails(dir)
    local none, msg, code = ctl:reserve{ host_path = "/img/b" }
    assert.is_nil(none)
    assert.are.equal("io", code)
    assert.is_truthy(msg:find("cannot create a file beside", 1, true), msg)
    local ok, _
    ok, _, code = ctl:map_to_guest(a) -- the add cannot be recorded first: not issued
    assert.is_nil(ok)
    assert.are.equal("io", code)
    assert.are.equal(0, #s:attached())
    assert.are.equal(before, ctl:save())
    back()
    assert.are.equal(file, read(dir .. "/state"))
    assert(ctl:map_to_guest(a))
    back = storage_fails(dir)
    ok, _, code = ctl:unmap_from_guest(a)
    assert.is_nil(ok)
    assert.are.equal("io", code)
    back()
    for _ = 1, 6 do
      ok = ctl:unmap_from_guest(a)
      if ok then break end
    end
    assert.is_true(ok)
    assert.are.equal(ctl:save(), read(dir .. "/state"))
    assert.is_true(s:is_empty())
    assert.is_true(writer.failures >= 3)
  end)

  it("treats a writer that raises or returns without writing as a failed write", function()
    local calls = 0
    local bad = function(c, seq, tentative)
      calls = calls + 1
      if calls == 1 then error("boom") end
      if calls == 2 then return true end -- claims success without writing
      return writer(c, seq, tentative)
    end
    local b = slow(s)
    local d2 = tmpdir()
    local c2 = assert(scsictl.new{ controllers = 1, vm = b, linux_guest = b,
                                   state_file = d2 .. "/state", state_writer = bad })
    local none, msg, code = c2:reserve{ host_path = "/img/x" }
    assert.is_nil(none)
    assert.are.equal("io", code)
    assert.is_truthy(msg:find("boom", 1, true), msg)
    none, msg, code = c2:reserve{ host_path = "/img/x" }
    assert.is_nil(none)
    assert.are.equal("io", code)
    assert.is_truthy(msg:find("returned before the change was written", 1, true), msg)
    assert.are.equal(0, c2:stats().reservations) -- both undone
    local id = assert(c2:reserve{ host_path = "/img/x" })
    assert.are.equal(c2:save(), read(d2 .. "/state"))
    assert.is_true(c2:unmap_from_guest(id))
    c2 = nil -- luacheck: ignore 311
    collectgarbage()
    H.rmdir(d2)
  end)

  it("takes a step back when its task is cancelled while the change is written", function()
    local id = assert(ctl:reserve{ host_path = "/img/a" })
    loop.run(function()
      local t = loop.spawn(ctl.map_to_guest, ctl, id)
      t:cancel("test")
      local ok, msg = t:join()
      assert.is_nil(ok)
      assert.is_string(msg)
    end)
    assert.is_false(ctl:slots()[1].busy)
    assert(ctl:map_to_guest(id))
    assert.is_true(ctl:unmap_from_guest(id))
    assert.is_true(s:is_empty())
    assert.are.equal(ctl:save(), read(dir .. "/state"))
  end)

  it("refuses a writer without a state file, or one that cannot be called", function()
    local b = slow(s)
    assert.has_error(function()
      scsictl.new{ controllers = 1, vm = b, linux_guest = b, state_writer = writer }
    end, "bad argument #1 to 'new' (state_writer needs a state file)")
    assert.has_error(function()
      scsictl.new{ controllers = 1, vm = b, linux_guest = b, state_file = dir .. "/x",
                   state_writer = 42 }
    end, "bad argument #1 to 'new' (state_writer must be a function, got number)")
    assert.has_error(function() ctl:write_begin("x") end)
    assert.has_error(function() ctl:write_begin(-1) end)
  end)

  it("is used by scsictl.open, and __close still records the closed state", function()
    local id = assert(ctl:reserve{ host_path = "/img/a" })
    ctl = nil
    collectgarbage()
    collectgarbage()
    local b = slow(s)
    local w2 = state_writer.new()
    do
      local c <close> = assert(scsictl.open(dir .. "/state", { vm = b, linux_guest = b,
                                                               state_writer = w2 }))
      assert(c:map_to_guest(id))
      assert.is_true(c:unmap_from_guest(id))
      assert.are.equal(7, w2.writes)
    end
    assert.is_truthy(read(dir .. "/state"):match(" closed\n"))
  end)
end)
