--[==[
scsictl.loop — the event loop under the real backends (libuv through
Debian's lua-luv): tasks, waits with deadlines, cancellation.

  local loop = require("scsictl.loop")
  local t = loop.spawn(ctl.map_to_guest, ctl, id)        -- runs on the loop
  local u = loop.spawn({ timeout = 5 }, ctl.unmap_from_guest, ctl, other)
  t:cancel()                                              -- gives up t's wait
  print(t:join())        --> nil, "... cancelled", "backend"
  print(u:join())        --> true, or nil, "... deadline exceeded", "backend"
  print(loop.timeout(5, ctl.map_to_guest, ctl, id))      -- bounded, blocking

Every wait of the QMP and guest-agent clients goes through loop.wait:
  - inside a task (a coroutine made by loop.spawn) it yields, and the task is
    resumed when the answer arrives, so other tasks run meanwhile;
  - anywhere else (the main chunk, the REPL, a coroutine of your own) it runs
    the loop until the answer arrives: blocking use works unchanged;
  - anywhere else while the loop is already running (inside a luv callback)
    it raises: the loop cannot be re-entered; wrap the call in loop.spawn.

API
  loop.uv                           the luv module
  loop.spawn([opts,] fn, ...) -> task
      Runs fn(...) in a new task at once, until its first wait. opts.timeout:
      seconds for the whole task (its deadline); opts.name: for messages.
  task:join() -> fn's results       waits for the task; re-raises its error;
                                    nil, msg, class if the joiner's own
                                    deadline or cancel ends the wait first
  task:done() -> boolean
  task:cancel([why])                the task's current and later waits fail
                                    with "<what>: cancelled (<why>)"
  task.name, task.deadline (loop.now() seconds, or nil)
  loop.timeout(seconds, fn, ...) -> fn's results
      fn(...) with a deadline seconds from now: in a task, for that scope;
      elsewhere in a new task that is joined.
  loop.shield(seconds, fn, ...) -> fn's results
      fn(...) ignoring the task's cancellation and deadline, with a deadline
      of its own: for undoing what a cancelled step half did.
  loop.wait(what, start [, timeout]) -> the values start's callback gave
      start(done) begins the work and may return a canceller; done(...) ends
      the wait with those values. On deadline or cancel the wait returns
      nil, "<what>: deadline exceeded" | "<what>: cancelled", "Timeout" |
      "Cancelled" and calls the canceller.
  loop.sleep(seconds)               a wait on a timer
  loop.run(fn, ...) -> fn's results runs fn in a task and the loop until it ends
  loop.now() -> seconds             the loop's clock (monotonic, ms resolution)
  loop.close(handle)                closes a luv handle and lets the close finish
  loop.fs(name, ...)                uv.fs_<name> in the threadpool, waited for
  loop.read_file(path)              a file's contents, through loop.fs
  loop.command(argv [, opts])       runs a program to its end (opts.timeout,
                                    env, cwd) -> true, output | nil, msg, output
  loop.child_env()                  the env for children (drops a sanitizer
                                    runtime from LD_PRELOAD)
  loop.current() -> task | nil
  loop.stall_monitor() -> monitor   a 1 ms repeating timer; monitor:max_ms()
                                    is the longest gap seen, monitor:max_busy_ms()
                                    the most CPU time this process used within
                                    one gap (a gap with little CPU time is the
                                    OS running someone else); monitor:stop()
]==]

local uv = require("scsictl.deps")("scsictl.loop", "luv")

local M = { uv = uv }

-- A write to a peer that went away (QEMU killed, the guest's agent gone)
-- raises SIGPIPE, whose default action ends the whole process; with the
-- signal handled, libuv reports EPIPE to that one write instead. The
-- handle is unreferenced: it never keeps the loop running.
local sigpipe = uv.new_signal()
sigpipe:start("sigpipe", function() end)
sigpipe:unref()

local Task = {}
Task.__index = Task
Task.__name = "scsictl.loop.task"

local tasks = setmetatable({}, { __mode = "k" })    -- coroutine -> task
local WAKE = {}                                      -- marks our own resumes

function M.now() return uv.now() / 1000 end
function M.current() return tasks[coroutine.running()] end

local function pack(...) return { n = select("#", ...), ... } end

-- Resumes a task's coroutine; a task that ends records its results.
local function step(task, ...)
  local ok, err = coroutine.resume(task.co, ...)
  if not ok then
    task.error = debug.traceback(task.co, tostring(err))
    task.finished = true
  end
  if task.finished then
    for _, waiter in ipairs(task.joiners) do waiter() end
    task.joiners = {}
  end
end

function M.wait(what, start, timeout)
  local task = M.current()
  local co = coroutine.running()
  if not task and uv.loop_mode() ~= nil then
    error(("%s: a blocking wait inside a luv callback, outside a task: the loop cannot be "
      .. "re-entered; run the call in scsictl.loop.spawn"):format(what), 2)
  end
  local shielded = task and task.shields > 0
  if task and not shielded and task.cancelled then
    return nil, ("%s: cancelled (%s)"):format(what, task.cancelled), "Cancelled"
  end
  -- The deadline in force is the innermost scope's (a shield pushes its own).
  local deadline = task and task.scopes[#task.scopes]
  local expired = "deadline exceeded"          -- the task's or its scope's
  if timeout then
    local mine = M.now() + timeout
    if not deadline or mine < deadline then
      deadline = mine
      expired = ("no answer within %gs"):format(timeout)
    end
  end
  local result, timer, canceller
  local function finish(...)
    if result then return end
    result = pack(...)
    if timer then
      timer:stop()
      timer:close()
      timer = nil
    end
    if task then
      task.wake = nil
      if coroutine.status(co) == "suspended" then step(task, WAKE) end
    end
  end
  local function give_up(msg, class)
    if result then return end
    if canceller then pcall(canceller) end
    finish(nil, ("%s: %s"):format(what, msg), class)
  end
  if deadline then
    local ms = math.max(0, math.ceil((deadline - M.now()) * 1000))
    timer = uv.new_timer()
    timer:start(ms, 0, function() give_up(expired, "Timeout") end)
  end
  local ok, c = pcall(start, finish)
  if not ok then
    result = pack()
    if timer then timer:close() end
    error(c, 0)
  end
  canceller = c
  if task and not result then
    if not shielded then
      task.wake = function(why) give_up(("cancelled (%s)"):format(why), "Cancelled") end
    end
    while not result do
      local token = coroutine.yield()
      if token ~= WAKE and not result then
        error(("%s: the task was resumed by something other than its wait"):format(what), 2)
      end
    end
  else
    while not result do
      if not uv.run("once") and not result then
        give_up("nothing left on the loop that could answer", "Closed")
      end
    end
    -- Finish the closes that run's last phase started: a handle still
    -- closing when Lua exits crashes luv.
    uv.run("nowait")
  end
  return table.unpack(result, 1, result.n)
end

-- Closes a luv handle; outside a running loop, also runs the loop once so
-- the close completes (a handle still closing when Lua exits crashes luv).
function M.close(handle)
  if handle and not handle:is_closing() then
    handle:close()
    if uv.loop_mode() == nil then uv.run("nowait") end
  end
end

-- libuv's file system call `name` (uv.fs_<name>) on its threadpool, waited
-- for: the loop never blocks on a file. Returns its results, or nil, msg
-- ("no such file or directory"), code ("ENOENT").
function M.fs(name, ...)
  local args = pack(...)
  -- luv's messages read "ENOENT: no such file or directory: <path>".
  local function failed(err)
    local code, text = tostring(err):match("^(%u+): ([^:]+)")
    return nil, text or tostring(err), code
  end
  return M.wait(("%s %s"):format(name, tostring(args[1])), function(done)
    args[args.n + 1] = function(err, ...)
      if err then done(failed(err)) else done(...) end
    end
    local req, err = uv["fs_" .. name](table.unpack(args, 1, args.n + 1))
    if not req then done(failed(err)) end
  end)
end

-- A whole file's contents through the threadpool, or nil, msg.
function M.read_file(path, max)
  local fd, msg = M.fs("open", path, "r", 0)
  if not fd then return nil, msg end
  -- Read to the end, not to fstat's size: /proc files say 0 and logs grow.
  local parts, total = {}, 0
  while not max or total < max do
    local want = 65536
    if max then want = math.min(want, max - total) end
    local chunk
    chunk, msg = M.fs("read", fd, want, total)
    if not chunk or chunk == "" then break end
    parts[#parts + 1] = chunk
    total = total + #chunk
  end
  M.fs("close", fd)
  if msg then return nil, msg end
  return table.concat(parts)
end

-- Runs argv (no shell) to its end; returns true or nil, msg, and the
-- output (stdout and stderr as they arrive, at most 1 MiB kept).
function M.command(argv, opts)
  opts = opts or {}
  local out, n, spawn_err = {}, 0, nil
  local status, sig_or_msg = M.wait(argv[1], function(done)
    local pipes = { uv.new_pipe(false), uv.new_pipe(false) }
    local open, exited, code, signal = 2, false, nil, nil
    local function maybe()
      if exited and open == 0 then done(code, signal) end
    end
    local args = {}
    for i = 2, #argv do args[i - 1] = argv[i] end
    local proc, err
    proc, err = uv.spawn(argv[1], { args = args, stdio = { nil, pipes[1], pipes[2] }, env = opts.env,
                                    cwd = opts.cwd }, function(c, s)
      code, signal, exited = c, s, true
      if proc then M.close(proc) end
      maybe()
    end)
    if not proc then
      M.close(pipes[1])
      M.close(pipes[2])
      spawn_err = tostring(err)
      done(nil)
      return
    end
    for _, pipe in ipairs(pipes) do
      pipe:read_start(function(e, data)
        if data and n < 1048576 then n = n + #data; out[#out + 1] = data end
        if e or not data then
          M.close(pipe)
          open = open - 1
          maybe()
        end
      end)
    end
    return function() pcall(proc.kill, proc, "sigkill") end
  end, opts.timeout)
  local text = table.concat(out)
  if status == nil then   -- not started, or the wait's deadline or cancel
    return nil, spawn_err and ("%s: %s"):format(argv[1], spawn_err) or sig_or_msg, text
  end
  if sig_or_msg ~= 0 then return nil, ("%s killed by signal %d"):format(argv[1], sig_or_msg), text end
  if status == 0 then return true, text end
  return nil, ("%s exited with status %d"):format(argv[1], status), text
end

-- The environment for a child that is not ours to instrument: under a
-- sanitizer build lua5.4 runs with the runtime in LD_PRELOAD, which must not
-- reach QEMU or host tools (they can hang there). nil (inherit) otherwise.
function M.child_env()
  local preload = os.getenv("LD_PRELOAD")
  if not (preload and preload:find("lib%a*san")) then return nil end
  local env = {}
  for _, k in ipairs({ "PATH", "HOME", "TMPDIR", "LANG", "SCSICTL_GUEST_REBUILD" }) do
    if os.getenv(k) then env[#env + 1] = k .. "=" .. os.getenv(k) end
  end
  return env
end

function M.sleep(seconds)
  return M.wait("sleep", function(done)
    local t = uv.new_timer()
    t:start(math.max(0, math.floor(seconds * 1000)), 0, function()
      t:close()
      done(true)
    end)
    return function() M.close(t) end
  end)
end

function M.spawn(opts, fn, ...)
  if type(opts) == "function" then return M.spawn({}, opts, fn, ...) end
  if type(opts) ~= "table" or type(fn) ~= "function" then
    error("spawn: expected ([opts,] function, ...)", 2)
  end
  local args = pack(...)
  local task = setmetatable({ name = opts.name or "task", joiners = {}, scopes = {},
                              shields = 0 }, Task)
  if opts.timeout ~= nil then
    if type(opts.timeout) ~= "number" or opts.timeout < 0 then
      error("spawn: timeout must be a number of seconds >= 0", 2)
    end
    task.deadline = M.now() + opts.timeout
    task.scopes[1] = task.deadline
  end
  task.co = coroutine.create(function()
    task.results = pack(fn(table.unpack(args, 1, args.n)))
    task.finished = true
  end)
  tasks[task.co] = task
  step(task)
  return task
end

function Task:done() return self.finished == true end

function Task:cancel(why)
  if self.finished then return false end
  self.cancelled = why and tostring(why) or "by the caller"
  local wake = self.wake
  if wake then wake(self.cancelled) end
  return true
end

function Task:join()
  if not self.finished then
    local _, msg, class = M.wait(self.name, function(done)
      self.joiners[#self.joiners + 1] = done
    end)
    -- The joiner's own deadline or cancel ended the wait; the task goes on.
    if not self.finished then return nil, msg, class end
  end
  if self.error then error(self.error, 0) end
  return table.unpack(self.results, 1, self.results.n)
end

function Task:__tostring()
  return ("scsictl.loop.task(%s, %s)"):format(self.name,
    self.finished and (self.error and "failed" or "done") or "running")
end

function M.timeout(seconds, fn, ...)
  if type(seconds) ~= "number" or seconds < 0 then
    error("timeout: seconds must be a number >= 0", 2)
  end
  local task = M.current()
  if not task then return M.spawn({ timeout = seconds }, fn, ...):join() end
  local mine = M.now() + seconds
  local outer = task.scopes[#task.scopes]
  task.scopes[#task.scopes + 1] = (outer and outer < mine) and outer or mine
  local r = pack(pcall(fn, ...))
  table.remove(task.scopes)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

function M.shield(seconds, fn, ...)
  local task = M.current()
  if not task then return M.spawn({ timeout = seconds }, fn, ...):join() end
  task.shields = task.shields + 1
  task.scopes[#task.scopes + 1] = M.now() + seconds
  local r = pack(pcall(fn, ...))
  table.remove(task.scopes)
  task.shields = task.shields - 1
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

function M.run(fn, ...)
  return M.spawn(fn, ...):join()
end

function M.stall_monitor()
  local timer = uv.new_timer()
  local function cpu()
    local r = uv.getrusage()
    return (r.utime.sec + r.stime.sec) * 1e3 + (r.utime.usec + r.stime.usec) / 1e3
  end
  local last, last_cpu, worst, worst_busy = uv.hrtime(), cpu(), 0, 0
  timer:start(1, 1, function()
    local t, c = uv.hrtime(), cpu()
    local gap, busy = (t - last) / 1e6, c - last_cpu
    if gap > worst then worst = gap end
    if busy > worst_busy then worst_busy = busy end
    last, last_cpu = t, c
  end)
  timer:unref()
  return {
    max_ms = function() return worst end,
    max_busy_ms = function() return worst_busy end,
    stop = function() M.close(timer) end,
  }
end

return M
