--[==[
scsictl.state_writer — writes a controller's state file on the event loop.

  local loop = require("scsictl.loop")
  local state_writer = require("scsictl.state_writer")
  local ctl = scsictl.new{ controllers = 4, vm = vm, linux_guest = guest,
                           state_file = "/var/lib/agent/scsi.state",
                           state_writer = state_writer.new() }

Without a writer the controller writes its state file in place, on the
calling thread: each change costs a write and two fsyncs with the event loop
stopped. With one, every write goes through libuv's threadpool (loop.fs):
the calling task waits (yields) while other tasks run, and the changes that
tasks make while a write is in flight go out together in the next write.
Outside a task the call runs the loop until its write is done, as every
loop.wait does. The first write, when the controller is created, is still
made in place (creation is not on the step path).

A write is atomic: the snapshot goes to a uniquely named temporary file
beside the state file (mkstemp), which is fsynced and renamed over it; then
the directory is fsynced. A failed write returns the reason to the call that
waited for it, which returns nil, msg, "io" (a reserve is then undone).

  writer = state_writer.new()       a writer; one may serve many controllers
  writer.writes, writer.failures    counts of writes done and failed
  writer(ctl, seq, tentative)       called by the controller (see the C
                                    API: scsictl_write_begin); returns true
                                    or nil, msg
]==]

local loop = require("scsictl.loop")

local M = {}

-- One file system call through the threadpool; raises nothing.
local function fs(name, ...)
  local a, b, c = loop.fs(name, ...)
  return a, b, c
end

-- Writes data to target atomically; true or nil, msg.
local function write_atomic(target, data)
  local fd, tmp = fs("mkstemp", target .. ".tmp-XXXXXX")
  if not fd then return nil, ("cannot create a file beside '%s': %s"):format(target, tmp) end
  local ok, err = fs("fchmod", fd, tonumber("644", 8))
  local done = 0
  while ok and done < #data do
    local n, werr = fs("write", fd, data:sub(done + 1), -1)
    if not n then ok, err = nil, werr elseif n == 0 then ok, err = nil, "no progress" end
    done = done + (n or 0)
  end
  if ok then ok, err = fs("fsync", fd) end
  local closed, cerr = fs("close", fd)
  if ok and not closed then ok, err = nil, cerr end
  if ok then ok, err = fs("rename", tmp, target) end
  if not ok then
    fs("unlink", tmp)
    return nil, ("cannot write '%s': %s"):format(tmp, tostring(err))
  end
  local dir = target:match("^(.*)/[^/]*$")
  dir = (dir == nil or dir == "") and "/" or dir
  local dfd, derr = fs("open", dir, "r", 0)
  if not dfd then return nil, ("cannot sync the directory of '%s': %s"):format(target, derr) end
  local synced, serr = fs("fsync", dfd)
  fs("close", dfd)
  if not synced then
    return nil, ("cannot sync the directory of '%s': %s"):format(target, serr)
  end
  return true
end

function M.new()
  local self = { writes = 0, failures = 0 }
  local waiting = setmetatable({}, { __mode = "k" })   -- ctl -> { done functions }
  local last_error = setmetatable({}, { __mode = "k" }) -- ctl -> message

  local function wake(ctl)
    local list = waiting[ctl]
    waiting[ctl] = nil
    for _, done in ipairs(list or {}) do done() end
  end

  local function write(ctl, seq, tentative)
    while true do
      local what, data, wseq = ctl:write_begin(seq, tentative)
      if what == "done" then
        return true
      elseif what == nil then -- "io": the write that carried seq failed
        return nil, last_error[ctl] or data
      elseif what == "busy" then -- another task's write is in flight
        local ok, msg = loop.wait("state file write", function(done)
          local list = waiting[ctl] or {}
          waiting[ctl] = list
          list[#list + 1] = done
        end)
        if ok == nil and msg then return nil, msg end -- deadline or cancel
      else
        local ok, msg = write_atomic(ctl:state_file(), data)
        if ok then
          self.writes = self.writes + 1
        else
          self.failures = self.failures + 1
          last_error[ctl] = msg
        end
        ctl:write_end(wseq, ok and true or false)
        wake(ctl)
      end
    end
  end

  return setmetatable(self, {
    __call = function(_, ctl, seq, tentative) return write(ctl, seq, tentative) end,
    __name = "scsictl.state_writer",
    __tostring = function(w)
      return ("scsictl.state_writer (%d writes, %d failed)"):format(w.writes, w.failures)
    end,
  })
end

return M
