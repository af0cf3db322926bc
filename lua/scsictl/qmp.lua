--[==[
scsictl.qmp — a small QMP (QEMU Machine Protocol) client over a UNIX socket.

  local qmp = require("scsictl.qmp")
  local c = assert(qmp.connect("/run/vm1/qmp.sock", { timeout = 10 }))
  local info = assert(c:execute("query-status"))
  local blocks = assert(c:execute("query-block"))
  local ok, msg, class = c:execute("device_del", { id = "nope" })
  --> nil, "device_del: DeviceNotFound: Device 'nope' not found", "DeviceNotFound"
  local ev = c:wait_event("DEVICE_DELETED", function(e) return e.data.device == "d1" end, 5)
  c:close()

Needs Debian's lua-socket (socket.unix) and lua-cjson.

API
  qmp.connect(path [, opts]) -> client | nil, msg, class
      opts.timeout   default timeout in seconds for every wait (default 10)
      Reads the greeting and negotiates capabilities (qmp_capabilities).
  client:execute(command [, arguments [, timeout]]) -> result | nil, msg, class
      Sends { execute, arguments, id } and waits for the reply with that id.
      Asynchronous events read meanwhile are queued (client:events()).
      Failure: msg = "<command>: <class>: <desc>", class = QMP's error class
      ("GenericError", "DeviceNotFound", ...) or one of the client's own:
      "Timeout" (no reply in time; the connection stays usable, a late reply
      is discarded), "Closed" (the socket closed or broke; every later call
      fails at once with "Closed"), "Protocol" (undecodable data).
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
  client:poll([timeout])               reads whatever arrives within timeout
                                       (default 0) into the event queue
  client:is_closed() -> boolean, reason
  client:close()
  client.greeting                      the decoded greeting's QMP member
]==]

local cjson, socket, unix = require("scsictl.deps")("scsictl.qmp")

local qmp = {}
qmp.null = cjson.null
qmp.DEFAULT_TIMEOUT = 10

local Client = {}
Client.__index = Client
Client.__name = "scsictl.qmp.client"

local now = socket.gettime

local function fail(self, class, msg)
  if class == "Closed" and not self._closed then
    self._closed = msg
    if self._sock then self._sock:close() end
    self._sock = nil
  end
  return nil, msg, class
end

-- Reads one line (without the line terminator) before `deadline`.
-- Returns line, or nil, msg, class.
function Client:_read_line(deadline)
  if self._closed then
    return nil, "QMP connection closed: " .. self._closed, "Closed"
  end
  while true do
    local left = deadline - now()
    if left < 0 then left = 0 end
    self._sock:settimeout(left)
    local line, err, partial = self._sock:receive("*l", self._partial)
    if line then
      self._partial = nil
      line = line:gsub("\r$", "")
      if line ~= "" then return line end
    elseif err == "timeout" then
      self._partial = partial ~= "" and partial or nil
      return nil, "timed out", "Timeout"
    else
      return fail(self, "Closed", "QMP connection closed (" .. tostring(err) .. ")")
    end
  end
end

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

-- Reads and decodes one message. Events are queued and returned too.
function Client:_read_message(deadline)
  local line, msg, class = self:_read_line(deadline)
  if not line then return nil, msg, class end
  local obj = qmp.decode(line)
  if not obj then
    return nil, "undecodable QMP message: " .. line:sub(1, 200), "Protocol"
  end
  if obj.event then
    self._queue[#self._queue + 1] = obj
  end
  return obj
end

function Client:_send(obj)
  if self._closed then
    return nil, "QMP connection closed: " .. self._closed, "Closed"
  end
  local data = cjson.encode(obj) .. "\n"
  local sent = 0
  local deadline = now() + self.timeout
  while sent < #data do
    local left = deadline - now()
    if left <= 0 then
      -- A half-written command cannot be taken back: the stream is unusable.
      return fail(self, "Closed", "QMP connection closed (send timed out)")
    end
    self._sock:settimeout(left)
    local last, err, partial = self._sock:send(data, sent + 1)
    if last then
      sent = last
    elseif err == "timeout" then
      sent = partial or sent
    else
      return fail(self, "Closed", "QMP connection closed (" .. tostring(err) .. ")")
    end
  end
  return true
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
  timeout = timeout or self.timeout
  self._next_id = self._next_id + 1
  local id = "scsictl-" .. self._next_id
  local req = { execute = command, id = id }
  if arguments ~= nil and next(arguments) ~= nil then req.arguments = arguments end
  local ok, msg, class = self:_send(req)
  if not ok then return nil, command .. ": " .. msg, class end
  local deadline = now() + timeout
  while true do
    local obj
    obj, msg, class = self:_read_message(deadline)
    if not obj then
      if class == "Timeout" then
        msg = ("no reply within %gs"):format(timeout)
      end
      return nil, ("%s: %s: %s"):format(command, class, msg), class
    end
    if obj.id == id then
      if obj["return"] ~= nil then return obj["return"] end
      local m, c = describe(command, obj.error)
      return nil, m, c
    end
    -- Anything else is an event (queued) or a late reply to a command that
    -- timed out earlier (discarded).
  end
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

function Client:wait_event(name, match, timeout)
  timeout = timeout or self.timeout
  local ev = take(self._queue, name, match)
  if ev then return ev end
  local deadline = now() + timeout
  while true do
    local obj, msg, class = self:_read_message(deadline)
    if not obj then
      if class == "Timeout" then
        msg = ("no %s event within %gs"):format(name or "", timeout)
      end
      return nil, ("waiting for %s: %s: %s"):format(name or "an event", class, msg), class
    end
    if obj.event then
      ev = take(self._queue, name, match)
      if ev then return ev end
    end
  end
end

function Client:poll(timeout)
  local deadline = now() + (timeout or 0)
  while true do
    local obj, msg, class = self:_read_message(deadline)
    if not obj then
      if class == "Timeout" then return true end
      return nil, msg, class
    end
  end
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
  if self._sock then self._sock:close() end
  self._sock = nil
  self._closed = self._closed or "closed by the client"
  return true
end

Client.__gc = Client.close
Client.__close = Client.close

function Client:__tostring()
  return ("scsictl.qmp.client(%s%s)"):format(self.path,
    self._closed and ", closed" or "")
end

function qmp.connect(path, opts)
  if type(path) ~= "string" or path == "" then
    error("qmp.connect: path must be a non-empty string", 2)
  end
  opts = opts or {}
  local timeout = opts.timeout or qmp.DEFAULT_TIMEOUT
  if type(timeout) ~= "number" or timeout <= 0 then
    error("qmp.connect: timeout must be a positive number", 2)
  end
  local sock, err = unix.stream()
  if not sock then
    return nil, ("QMP connect to %s: %s"):format(path, tostring(err)), "Closed"
  end
  sock:settimeout(timeout)
  local ok
  ok, err = sock:connect(path)
  if not ok then
    sock:close()
    return nil, ("QMP connect to %s: %s"):format(path, tostring(err)), "Closed"
  end
  local self = setmetatable({
    path = path, timeout = timeout, _sock = sock, _queue = {}, _next_id = 0,
  }, Client)
  local deadline = now() + timeout
  local greeting, msg, class
  repeat
    greeting, msg, class = self:_read_message(deadline)
  until not greeting or greeting.QMP
  if not greeting then
    self:close()
    return nil, ("QMP connect to %s: no greeting: %s"):format(path, msg), class
  end
  self.greeting = greeting.QMP
  local _
  _, msg, class = self:execute("qmp_capabilities")
  if msg then
    self:close()
    return nil, ("QMP connect to %s: %s"):format(path, msg), class
  end
  return self
end

-- Decodes one JSON object, integral numbers as Lua integers; nil if the
-- text is not a JSON object. Shared with the guest-agent client.
function qmp.decode(text)
  local ok, obj = pcall(cjson.decode, text)
  if ok and type(obj) == "table" then return integers(obj) end
end

return qmp
