--[==[
scsictl.qmp — a QMP (QEMU Machine Protocol) client over a UNIX socket, on
the event loop (scsictl.loop). One connection serves many operations at
once: commands carry ids and replies are matched by id; events go to whoever
waits for them. Inside a scsictl.loop task every call yields while it waits;
elsewhere it runs the loop until its answer (so plain scripts block as
before).

  local qmp = require("scsictl.qmp")
  local c = assert(qmp.connect("/run/vm1/qmp.sock", { timeout = 10 }))
  local info = assert(c:execute("query-status"))
  local blocks = assert(c:execute("query-block"))
  local ok, msg, class = c:execute("device_del", { id = "nope" })
  --> nil, "device_del: DeviceNotFound: Device 'nope' not found", "DeviceNotFound"
  local ev = c:wait_event("DEVICE_DELETED", function(e) return e.data.device == "d1" end, 5)
  c:close()

Needs Debian's lua-luv and lua-cjson.

API
  qmp.connect(path [, opts]) -> client | nil, msg, class
      opts.timeout   default timeout in seconds for every wait (default 10)
      Reads the greeting and negotiates capabilities (qmp_capabilities).
  client:execute(command [, arguments [, timeout]]) -> result | nil, msg, class
      Sends { execute, arguments, id } and waits for the reply with that id.
      Asynchronous events read meanwhile are queued (client:events()).
      Failure: msg = "<command>: <class>: <desc>", class = QMP's error class
      ("GenericError", "DeviceNotFound", ...) or one of the client's own:
      "Timeout" (no reply in time, or the task's deadline passed; the
      connection stays usable, a late reply is discarded), "Cancelled" (the
      task was cancelled), "Closed" (the socket closed or broke, or the peer
      broke a cap below; every call waiting and every later call fails at
      once with the reason).
      Caps (the peer cannot grow our memory without bound): a line longer
      than qmp.MAX_LINE (1 MiB) or undecodable data closes the connection;
      at most qmp.MAX_EVENTS (256) events nobody waits for are kept, the
      oldest dropped first (client.dropped counts them).
      A result that is JSON null (none for the commands used here) is
      returned as qmp.null.
  client:hmp(command_line [, timeout]) -> text | nil, msg, class
      human-monitor-command.
  client:wait_event(name [, match [, timeout]]) -> event | nil, msg, class
      Returns (and removes) the first queued or arriving event called name
      for which match(event) is true (match may be nil). event = { event,
      data, timestamp = { seconds, microseconds } }.
  client:events([name]) -> array       removes and returns queued events
                                       (all, or those called name)
  client:drop_events(name [, match])   discards matching queued events
  client:poll([timeout])               lets the loop run for timeout seconds
                                       (default 0), queueing what arrives
  client:watch(name [, match]) -> watch   starts collecting the first event
      called name for which match(event) is true, before the command that
      causes it is sent; watch:wait([timeout]) -> event | nil, msg, class;
      watch:cancel()
  client.on_close                      function(reason) called once when the
                                       connection closes (not by close())
  client.explain                       function(reason, done) that may
      replace the reason given to waiting calls when the peer goes away
      (scsictl.qemu's launcher says how QEMU exited); must call done(text)
  client:is_closed() -> boolean, reason
  client:close()
  client.greeting                      the decoded greeting's QMP member
]==]

local cjson = require("scsictl.deps")("scsictl.qmp", "cjson")
local loop = require("scsictl.loop")
local conn = require("scsictl.conn")

local qmp = {}
qmp.null = cjson.null
qmp.DEFAULT_TIMEOUT = 10
qmp.MAX_LINE = 1024 * 1024
qmp.MAX_EVENTS = 256

local Client = {}
Client.__index = Client
Client.__name = "scsictl.qmp.client"

-- cjson decodes every JSON number as a float; QMP's (and qemu-ga's) numbers
-- (luns, ids, sizes, timestamps, pids) are integers, so integral values
-- become Lua integers.
local function integers(v)
  if type(v) == "table" then
    for k, x in pairs(v) do
      if type(x) == "number" or type(x) == "table" then v[k] = integers(x) end
    end
    return v
  end
  if math.type(v) == "float" then return math.tointeger(v) or v end
  return v
end

-- Decodes one JSON object, integral numbers as Lua integers; nil if the
-- text is not a JSON object. Shared with the guest-agent client.
function qmp.decode(text)
  local ok, obj = pcall(cjson.decode, text)
  if ok and type(obj) == "table" then return integers(obj) end
end

-- The connection is gone: fail everything waiting, once, with the reason.
-- (Called once, by the connection, which is closed already.)
function Client:_broken(reason)
  if self._closed then return end
  self._closed = reason
  local function fail_all(text)
    self._closed = text
    local pending, watches = self._pending, self._watches
    self._pending, self._watches = {}, {}
    for _, done in pairs(pending) do done(nil, text, "Closed") end
    for _, w in ipairs(watches) do w.done(nil, text, "Closed") end
    if self.on_close then pcall(self.on_close, text) end
  end
  if self.explain then
    local ok = pcall(self.explain, reason, fail_all)
    if not ok then fail_all(reason) end
  else
    fail_all(reason)
  end
end

function Client:_on_message(obj)
  if obj.QMP then
    self.greeting = obj.QMP
    local g = self._on_greeting
    self._on_greeting = nil
    if g then g(obj.QMP) end
    return
  end
  if obj.event then
    for i, w in ipairs(self._watches) do
      if w.name == obj.event and (w.match == nil or w.match(obj)) then
        table.remove(self._watches, i)
        w.done(obj)
        return
      end
    end
    local q = self._queue
    q[#q + 1] = obj
    if #q > qmp.MAX_EVENTS then
      table.remove(q, 1)
      self.dropped = self.dropped + 1
    end
    return
  end
  local done = obj.id ~= nil and self._pending[obj.id]
  if done then
    self._pending[obj.id] = nil
    done(obj)
  end
  -- Anything else: a late reply to a command given up on (discarded).
end

local function describe(command, err)
  local class = type(err) == "table" and err.class or "GenericError"
  local desc = type(err) == "table" and err.desc or tostring(err)
  if type(class) ~= "string" then class = "GenericError" end
  if type(desc) ~= "string" then desc = "(no description)" end
  return ("%s: %s: %s"):format(command, class, desc), class
end

function Client:execute(command, arguments, timeout)
  if type(command) ~= "string" then
    error("execute: command must be a string", 2)
  end
  if self._closed then return nil, ("%s: %s"):format(command, self._closed), "Closed" end
  self._next_id = self._next_id + 1
  local id = "scsictl-" .. self._next_id
  local req = { execute = command, id = id }
  if arguments ~= nil and next(arguments) ~= nil then req.arguments = arguments end
  local data = cjson.encode(req) .. "\n"
  local obj, msg, class = loop.wait(command, function(done)
    self._pending[id] = done
    self._conn:write(data)
    return function() self._pending[id] = nil end
  end, timeout or self.timeout)
  if not obj then
    if class == "Closed" then msg = ("%s: %s"):format(command, msg) end
    return nil, msg, class
  end
  if obj["return"] ~= nil then return obj["return"] end
  local m, c = describe(command, obj.error)
  return nil, m, c
end

function Client:hmp(command_line, timeout)
  return self:execute("human-monitor-command",
    { ["command-line"] = command_line }, timeout)
end

local function take(queue, name, match)
  for i, ev in ipairs(queue) do
    if (name == nil or ev.event == name) and (match == nil or match(ev)) then
      table.remove(queue, i)
      return ev
    end
  end
end

local Watch = {}
Watch.__index = Watch

function Client:watch(name, match)
  local w = setmetatable({ client = self, name = name, match = match }, Watch)
  w.done = function(...) w.result = table.pack(...) if w.wake then w.wake(...) end end
  if self._closed then
    w.result = table.pack(nil, self._closed, "Closed")
  else
    self._watches[#self._watches + 1] = w
  end
  return w
end

function Watch:cancel()
  for i, x in ipairs(self.client._watches) do
    if x == self then table.remove(self.client._watches, i) break end
  end
end

function Watch:wait(timeout)
  local what = ("waiting for %s"):format(self.name)
  if not self.result then
    local _, msg, class = loop.wait(what, function(done)
      self.wake = done
      return function() self.wake = nil end
    end, timeout or self.client.timeout)
    self.wake = nil
    if not self.result then return nil, msg, class end
  end
  local r = self.result
  if r[1] == nil then return nil, ("%s: %s"):format(what, r[2]), r[3] end
  return r[1]
end

function Client:wait_event(name, match, timeout)
  local ev = take(self._queue, name, match)
  if ev then return ev end
  local w = self:watch(name, match)
  local r, msg, class = w:wait(timeout)
  w:cancel()
  return r, msg, class
end

function Client:poll(timeout)
  if (timeout or 0) > 0 then loop.sleep(timeout) end
  if self._closed then return nil, self._closed, "Closed" end
  return true
end

function Client:events(name)
  local out, keep = {}, {}
  for _, ev in ipairs(self._queue) do
    if name == nil or ev.event == name then out[#out + 1] = ev
    else keep[#keep + 1] = ev end
  end
  self._queue = keep
  return out
end

function Client:drop_events(name, match)
  while take(self._queue, name, match) do end
end

function Client:is_closed()
  return self._closed ~= nil, self._closed
end

function Client:close()
  if not self._closed then
    self.on_close, self.explain = nil, nil
    self._conn:close("closed by the client")
  end
  return true
end

-- Nothing to do at collection: luv closes an unreachable handle itself.
Client.__close = Client.close

function Client:__tostring()
  return ("scsictl.qmp.client(%s%s)"):format(self.path,
    self._closed and ", closed" or "")
end

function qmp.connect(path, opts)
  local _, timeout = conn.connect_args("qmp.connect", path, opts, qmp.DEFAULT_TIMEOUT)
  local what = "QMP connect to " .. path
  local deadline = loop.now() + timeout
  local pipe, msg = conn.connect(path, what, timeout)
  if not pipe then return nil, msg, "Closed" end
  local self = setmetatable({
    path = path, timeout = timeout, _queue = {}, _next_id = 0,
    _pending = {}, _watches = {}, dropped = 0,
  }, Client)
  self._conn = conn.open(pipe, {
    max_line = qmp.MAX_LINE,
    texts = { broke = ("QMP connection to %s broke: %%s"):format((path:gsub("%%", "%%%%"))),
              peer_closed = ("QMP connection to %s closed by the peer"):format(path),
              too_long = "QMP peer sent %s; connection dropped" },
    on_line = function(line)
      local obj = qmp.decode(line)
      if not obj then
        return "undecodable QMP message: " .. line:sub(1, 200) .. "; connection dropped"
      end
      self:_on_message(obj)
    end,
    on_broken = function(reason) self:_broken(reason) end,
  })
  local greeting, class
  greeting, msg, class = loop.wait(what .. ": greeting", function(done)
    if self.greeting then return done(self.greeting) end
    self._on_greeting = done
    return function() self._on_greeting = nil end
  end, math.max(0.001, deadline - loop.now()))
  if not greeting then
    if self._closed then msg = self._closed end
    self:close()
    return nil, ("%s: no greeting: %s"):format(what, msg), class or "Closed"
  end
  local _
  _, msg, class = self:execute("qmp_capabilities", nil, math.max(0.001, deadline - loop.now()))
  if msg then
    self:close()
    return nil, ("%s: %s"):format(what, msg), class
  end
  return self
end

return qmp
