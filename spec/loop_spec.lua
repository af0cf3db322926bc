-- scsictl.loop (tasks, waits, deadlines, cancellation) and the QMP and
-- guest-agent clients against fake peers on UNIX sockets: replies matched
-- by id out of order, and the caps that keep a broken or hostile peer from
-- growing our memory or hanging a call.

local loop = require("scsictl.loop")
local qmp = require("scsictl.qmp")
local qemu_guest = require("scsictl.qemu_guest")
local cjson = require("cjson")
local uv = loop.uv

local dir
local function sock(name) return dir .. "/" .. name end

-- A fake peer: a UNIX socket server; on_client(client, line) is called for
-- every line the client sends; greet(client) when it connects.
local function serve(path, greet, on_line)
  local server = uv.new_pipe(false)
  assert(server:bind(path))
  local clients = {}
  server:listen(8, function()
    local c = uv.new_pipe(false)
    server:accept(c)
    clients[#clients + 1] = c
    local buf = ""
    if greet then greet(c) end
    c:read_start(function(err, data)
      if err or not data then loop.close(c) return end
      buf = buf .. data
      while true do
        local nl = buf:find("\n", 1, true)
        if not nl then break end
        local line = buf:sub(1, nl - 1)
        buf = buf:sub(nl + 1)
        if on_line then on_line(c, line) end
      end
    end)
  end)
  return {
    close = function()
      for _, c in ipairs(clients) do loop.close(c) end
      loop.close(server)
      os.remove(path)
    end,
  }
end

local function qmp_greet(c)
  c:write(cjson.encode({ QMP = { version = { qemu = { major = 7, minor = 2, micro = 0 } },
                                 capabilities = {} } }) .. "\n")
end

-- Answers qmp_capabilities; hands every other command to `handle`.
local function qmp_peer(path, handle)
  return serve(path, qmp_greet, function(c, line)
    local req = cjson.decode(line)
    if req.execute == "qmp_capabilities" then
      c:write(cjson.encode({ ["return"] = {}, id = req.id }) .. "\n")
    elseif handle then
      handle(c, req)
    end
  end)
end

describe("scsictl.loop", function()
  it("runs tasks side by side: every task starts before the first ends", function()
    local log = {}
    local tasks = {}
    for i = 1, 5 do
      tasks[i] = loop.spawn(function()
        log[#log + 1] = "start " .. i
        loop.sleep(0.02)
        log[#log + 1] = "end " .. i
        return i * 10
      end)
    end
    for i = 1, 5 do assert.equal(i * 10, tasks[i]:join()) end
    for i = 1, 5 do assert.equal("start " .. i, log[i]) end
    assert.equal(10, #log)
  end)

  it("blocks outside a task, as a plain script does", function()
    assert.is_nil(loop.current())
    assert.is_true(loop.sleep(0.001))
  end)

  it("ends a wait at the task's deadline with a Timeout", function()
    local t = loop.spawn({ timeout = 0.02 }, function() return loop.sleep(10) end)
    local v, msg, class = t:join()
    assert.is_nil(v)
    assert.equal("sleep: deadline exceeded", msg)
    assert.equal("Timeout", class)
    v, msg, class = loop.timeout(0.01, loop.sleep, 10)
    assert.is_nil(v)
    assert.equal("Timeout", class)
    assert.matches("deadline exceeded", msg)
  end)

  it("cancels a task's wait, and every later one, naming the reason", function()
    local second
    local t = loop.spawn(function()
      local a, b, c = loop.sleep(10)
      second = table.pack(loop.sleep(0))
      return a, b, c
    end)
    assert.is_false(t:done())
    assert.is_true(t:cancel("operator"))
    local v, msg, class = t:join()
    assert.is_nil(v)
    assert.equal("sleep: cancelled (operator)", msg)
    assert.equal("Cancelled", class)
    assert.equal("Cancelled", second[3])
    assert.is_false(t:cancel())           -- finished: nothing to cancel
  end)

  it("lets shielded cleanup finish after a cancel", function()
    local t = loop.spawn(function()
      local cancelled = table.pack(loop.sleep(10))
      local cleaned = loop.shield(1, loop.sleep, 0.001)
      return cancelled[3], cleaned
    end)
    t:cancel()
    local class, cleaned = t:join()
    assert.equal("Cancelled", class)
    assert.is_true(cleaned)
  end)

  it("refuses a blocking wait inside a luv callback outside a task, naming the way out", function()
    local timer = uv.new_timer()
    local ok, err
    timer:start(1, 0, function()
      ok, err = pcall(loop.sleep, 0.001)
      loop.close(timer)
    end)
    loop.run(function() loop.sleep(0.02) end)
    assert.is_false(ok)
    assert.matches("cannot be re%-entered; run the call in scsictl.loop.spawn", err)
  end)

  it("ends a join at the joiner's deadline, leaving the joined task running", function()
    local slow = loop.spawn(function() loop.sleep(0.05) return "slow" end)
    local v, msg, class = loop.timeout(0.001, slow.join, slow)
    assert.is_nil(v)
    assert.equal("Timeout", class)
    assert.matches("deadline exceeded", msg)
    assert.is_false(slow:done())
    assert.equal("slow", slow:join())
  end)

  it("re-raises a task's error from join", function()
    local t = loop.spawn(function() loop.sleep(0) error("boom", 0) end)
    local ok, err = pcall(t.join, t)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.equal("scsictl.loop.task(task, failed)", tostring(t))
  end)

  it("reads files in the threadpool and says why it cannot", function()
    local data = assert(loop.read_file("spec/loop_spec.lua"))
    assert.matches("^%-%- scsictl%.loop", data)
    local v, msg, code = loop.fs("stat", "/no/such/file")
    assert.is_nil(v)
    assert.equal("no such file or directory", msg)
    assert.equal("ENOENT", code)
  end)

  it("fails a write to a peer that hung up with EPIPE instead of ending the process", function()
    local fds = assert(uv.pipe())
    assert(uv.fs_close(fds.read))
    local p = uv.new_pipe(false)
    assert(p:open(fds.write))
    local _, err = p:try_write("x")      -- without the SIGPIPE handler: killed here
    assert.matches("^EPIPE", err)
    loop.close(p)
  end)

  it("runs a command to its end, bounded by a deadline", function()
    local ok, msg, out = loop.command({ "sh", "-c", "echo out; echo err >&2; exit 3" })
    assert.is_nil(ok)
    assert.equal("sh exited with status 3", msg)
    assert.matches("out", out)
    assert.matches("err", out)
    ok, msg = loop.command({ "sleep", "10" }, { timeout = 0.05 })
    assert.is_nil(ok)
    assert.matches("no answer within 0%.05s", msg)
  end)
end)

describe("scsictl.qmp against a fake peer", function()
  setup(function() dir = assert(loop.fs("mkdtemp", (os.getenv("TMPDIR") or "/tmp") .. "/scsictl-loop.XXXXXX")) end)
  teardown(function() loop.fs("rmdir", dir) end)

  it("matches replies to commands by id, whatever their order", function()
    local held = {}
    local peer = qmp_peer(sock("order.sock"), function(c, req)
      held[#held + 1] = req
      if #held == 3 then      -- answer the three in reverse
        for i = 3, 1, -1 do
          c:write(cjson.encode({ ["return"] = { n = held[i].arguments.n }, id = held[i].id }) .. "\n")
        end
      end
    end)
    local c = assert(qmp.connect(sock("order.sock"), { timeout = 2 }))
    local tasks = {}
    for n = 1, 3 do tasks[n] = loop.spawn(function() return c:execute("echo", { n = n }) end) end
    for n = 1, 3 do assert.equal(n, tasks[n]:join().n) end
    c:close()
    peer.close()
  end)

  it("bounds a wait on a peer that never answers, and stays usable", function()
    local answer = false
    local peer = qmp_peer(sock("silent.sock"), function(c, req)
      if answer then c:write(cjson.encode({ ["return"] = {}, id = req.id }) .. "\n") end
    end)
    local c = assert(qmp.connect(sock("silent.sock"), { timeout = 2 }))
    local v, msg, class = c:execute("query-status", nil, 0.05)
    assert.is_nil(v)
    assert.equal("Timeout", class)
    assert.equal("query-status: no answer within 0.05s", msg)
    answer = true
    assert.is_table(c:execute("query-status"))
    c:close()
    peer.close()
  end)

  it("drops the connection when a line passes 1 MiB, failing the call in flight", function()
    local peer = qmp_peer(sock("long.sock"), function(c)
      local chunk = string.rep("x", 65536)
      for _ = 1, 20 do c:write(chunk) end           -- 1.25 MiB, no newline
    end)
    local c = assert(qmp.connect(sock("long.sock"), { timeout = 2 }))
    local v, msg, class = c:execute("query-status")
    assert.is_nil(v)
    assert.equal("Closed", class)
    assert.matches("a line longer than 1048576 bytes; connection dropped", msg)
    assert.is_true((c:is_closed()))
    local again = table.pack(c:execute("query-status"))   -- later calls fail at once
    assert.is_nil(again[1])
    assert.equal("Closed", again[3])
    peer.close()
  end)

  it("keeps at most 256 events nobody waits for", function()
    local peer = qmp_peer(sock("flood.sock"), function(c, req)
      local ev = cjson.encode({ event = "RTC_CHANGE", data = {}, timestamp = { seconds = 1, microseconds = 0 } })
      c:write(string.rep(ev .. "\n", 5000))
      c:write(cjson.encode({ ["return"] = {}, id = req.id }) .. "\n")
    end)
    local c = assert(qmp.connect(sock("flood.sock"), { timeout = 2 }))
    assert.is_table(c:execute("query-status"))
    assert.equal(qmp.MAX_EVENTS, #c:events())
    assert.equal(5000 - qmp.MAX_EVENTS, c.dropped)
    c:close()
    peer.close()
  end)

  it("routes an event to the one waiting for it, before the command that causes it returns", function()
    local peer = qmp_peer(sock("event.sock"), function(c, req)
      local function ev(dev)
        return cjson.encode({ event = "DEVICE_DELETED", data = { device = dev },
                              timestamp = { seconds = 1, microseconds = 0 } }) .. "\n"
      end
      c:write(ev("other") .. ev(req.arguments.id) .. cjson.encode({ ["return"] = {}, id = req.id }) .. "\n")
    end)
    local c = assert(qmp.connect(sock("event.sock"), { timeout = 2 }))
    local w = c:watch("DEVICE_DELETED", function(e) return e.data.device == "mine" end)
    assert.is_table(c:execute("device_del", { id = "mine" }))
    local e = assert(w:wait(1))
    assert.equal("mine", e.data.device)
    local others = c:events("DEVICE_DELETED")
    assert.equal(1, #others)
    assert.equal("other", others[1].data.device)
    c:close()
    peer.close()
  end)
end)

describe("the guest-agent client against a fake agent", function()
  setup(function() dir = assert(loop.fs("mkdtemp", (os.getenv("TMPDIR") or "/tmp") .. "/scsictl-loop.XXXXXX")) end)
  teardown(function() loop.fs("rmdir", dir) end)

  -- An agent that answers guest-sync-delimited, then calls `handle`.
  local function agent_peer(path, handle)
    return serve(path, nil, function(c, line)
      local req = cjson.decode((line:gsub("^\255", "")))
      if req.execute == "guest-sync-delimited" then
        c:write("\255" .. cjson.encode({ ["return"] = req.arguments.id }) .. "\n")
      elseif handle then
        handle(c, req)
      end
    end)
  end

  it("serves concurrent requests one at a time, in order", function()
    local seen = {}
    local peer = agent_peer(sock("ga.sock"), function(c, req)
      seen[#seen + 1] = req.arguments.n
      c:write(cjson.encode({ ["return"] = { n = req.arguments.n }, id = req.id }) .. "\n")
    end)
    local a = assert(qemu_guest.agent_connect(sock("ga.sock"), { timeout = 2 }))
    local tasks = {}
    for n = 1, 4 do tasks[n] = loop.spawn(function() return a:execute("guest-echo", { n = n }) end) end
    for n = 1, 4 do assert.equal(n, tasks[n]:join().n) end
    assert.same({ 1, 2, 3, 4 }, seen)
    a:close()
    peer.close()
  end)

  -- Peers that break a cap after the sync: what each sends, what we say.
  for _, case in ipairs({
    { "floods messages answering nothing", string.rep('{"event":"x"}\n', 1000),
      "more than 256 messages that answer nothing; connection dropped" },
    { "streams a line without end", string.rep("y", 20 * 65536),
      "a line longer than 1048576 bytes; connection dropped" },
  }) do
    it("drops a guest that " .. case[1], function()
      local path = sock("gacap.sock")
      local peer = agent_peer(path, function(c) c:write(case[2]) end)
      local a = assert(qemu_guest.agent_connect(path, { timeout = 2 }))
      local v, msg, class = a:execute("guest-info")
      assert.is_nil(v)
      assert.equal("Closed", class)
      assert.matches(case[3], msg, 1, true)
      assert.is_true((a:is_closed()))
      peer.close()
    end)
  end

  it("gives up on an agent that never answers, within the timeout", function()
    local peer = serve(sock("gamute.sock"), nil, nil)
    local a = assert(qemu_guest.agent_connect(sock("gamute.sock"), { timeout = 0.2, retry = 0.05 }))
    local v, msg, class = a:execute("guest-info")
    assert.is_nil(v)
    assert.equal("Timeout", class)
    assert.matches("did not answer within 0%.2s", msg)
    a:close()
    peer.close()
  end)
end)
