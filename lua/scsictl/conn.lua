--[==[
scsictl.conn — a line-based connection to a UNIX socket on the event loop:
the one socket client under the QMP client (scsictl.qmp) and the guest-agent
client (scsictl.qemu_guest). It connects, splits what arrives into lines
under a length cap, writes, and ends once, with one reason. The backends
over those clients (scsictl.qemu, scsictl.qemu_guest) take their client, or
a socket path to connect on first use, through conn.owner and conn.owned.

  conn.connect_args(fname, path, opts, default_timeout) -> opts, timeout
      checks a connect function's arguments (path a non-empty string,
      opts.timeout a positive number) and raises at its caller's caller
  conn.connect(path, what, timeout) -> pipe | nil, msg
      a connected luv pipe; `what` names the wait in messages
  conn.line_reader(max) -> feed
      feed(data) -> the complete lines (without "\r\n"), or nil, msg when a
      line grows past max bytes
  conn.open(pipe, opts) -> c
      opts.max_line         the cap on one line
      opts.on_line(line)    each non-blank line; returns nil, or a reason to
                            drop the connection
      opts.on_broken(reason) called once when the connection ends
      opts.texts            { broke = "...%s" (a read or write error),
                              peer_closed = "...", too_long = "...%s" }
  c:write(data)             a failed write ends the connection
  c:close(reason)           ends it (on_broken runs)
  c.closed                  the reason it ended, or nil
  conn.owner(fname, opts, key, what, method, default_timeout) -> owner
      checks a backend constructor's options (a table; opts[key] a client,
      a table with `method`, or a socket path; opts.timeout a positive
      number), raising at its caller's caller as "<fname>: <key> must be
      <what> or a socket path"; returns the backend's fields: ["_" .. key]
      (the client), _path, _own (a client of its own, made from the path)
      and timeout
  conn.owned(field, what, connect) -> client_method, close_method, tostring
      three methods of a backend built by conn.owner: client_method(self)
      returns self[field] while it is open; once it closed, a new client
      from connect(self._path, { timeout = self.timeout }) kept in its
      place, or, for a backend given a client rather than a path, nil and
      "<what> connection closed: <reason>". close_method(self) closes the
      client only if the backend made it (-> true). tostring(self) is
      "<the metatable's __name>(<socket path>)".
]==]

local uv = require("scsictl.deps")("scsictl.conn", "luv")
local loop = require("scsictl.loop")

local M = {}

function M.connect_args(fname, path, opts, default_timeout)
  if type(path) ~= "string" or path == "" then
    error(fname .. ": path must be a non-empty string", 3)
  end
  opts = opts or {}
  local timeout = opts.timeout or default_timeout
  if type(timeout) ~= "number" or timeout <= 0 then
    error(fname .. ": timeout must be a positive number", 3)
  end
  return opts, timeout
end

function M.connect(path, what, timeout)
  local pipe = uv.new_pipe(false)
  local ok, msg = loop.wait(what, function(done)
    local _, err = pipe:connect(path, function(e) done(not e, e) end)
    if err then done(false, err) end
    return function() loop.close(pipe) end
  end, timeout)
  if not ok then
    loop.close(pipe)
    return nil, msg and msg:find(what, 1, true) and msg or ("%s: %s"):format(what, tostring(msg))
  end
  return pipe
end

function M.owner(fname, opts, key, what, method, default_timeout)
  if type(opts) ~= "table" then error(fname .. ": options must be a table", 3) end
  local c = opts[key]
  if type(c) ~= "string" and not (type(c) == "table" and c[method]) then
    error(("%s: %s must be %s or a socket path"):format(fname, key, what), 3)
  end
  local timeout = opts.timeout or default_timeout
  if type(timeout) ~= "number" or timeout <= 0 then
    error(fname .. ": timeout must be a positive number", 3)
  end
  local path = type(c) == "string" and c or nil
  return { ["_" .. key] = not path and c or nil, _path = path, _own = path ~= nil, timeout = timeout }
end

function M.owned(field, what, connect)
  local function client(self)
    local c = self[field]
    if c and not c:is_closed() then return c end
    if not self._path then
      return nil, ("%s connection closed: %s"):format(what, tostring(c and select(2, c:is_closed())))
    end
    local msg
    c, msg = connect(self._path, { timeout = self.timeout })
    if not c then return nil, msg end
    self[field] = c
    return c
  end
  local function close(self)
    if self._own and self[field] then self[field]:close() end
    return true
  end
  local function describe(self)
    return ("%s(%s)"):format(getmetatable(self).__name, self._path or (self[field] and self[field].path) or "?")
  end
  return client, close, describe
end

function M.line_reader(max)
  local partial = {}
  local size = 0
  return function(data)
    local lines = {}
    local start = 1
    while true do
      local nl = data:find("\n", start, true)
      if not nl then break end
      local piece = data:sub(start, nl - 1)
      if size + #piece > max then return nil, ("a line longer than %d bytes"):format(max) end
      partial[#partial + 1] = piece
      local line = table.concat(partial):gsub("\r$", "")
      partial, size = {}, 0
      lines[#lines + 1] = line
      start = nl + 1
    end
    local rest = data:sub(start)
    if rest ~= "" then
      size = size + #rest
      if size > max then return nil, ("a line longer than %d bytes"):format(max) end
      partial[#partial + 1] = rest
    end
    return lines
  end
end

local Conn = {}
Conn.__index = Conn
Conn.__name = "scsictl.conn"

function Conn:close(reason)
  if self.closed then return end
  self.closed = reason
  loop.close(self._pipe)
  self._on_broken(reason)
end

function Conn:write(data)
  if self.closed then return end
  self._pipe:write(data, function(err)
    if err then self:close(self._texts.broke:format(err)) end
  end)
end

function Conn:_on_data(err, data)
  if self.closed then return end
  if err then return self:close(self._texts.broke:format(err)) end
  if not data then return self:close(self._texts.peer_closed) end
  local lines, msg = self._reader(data)
  if not lines then return self:close(self._texts.too_long:format(msg)) end
  for _, line in ipairs(lines) do
    if line:find("%S") then
      local stop = self._on_line(line)
      if stop then return self:close(stop) end
      if self.closed then return end
    end
  end
end

function M.open(pipe, opts)
  local self = setmetatable({
    _pipe = pipe, _reader = M.line_reader(opts.max_line), _on_line = opts.on_line,
    _on_broken = opts.on_broken, _texts = opts.texts,
  }, Conn)
  pipe:read_start(function(err, data) self:_on_data(err, data) end)
  return self
end

return M
