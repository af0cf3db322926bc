--[[
scsictl.pretty — values as short, readable text (for REPLs and logs).

  local pretty = require("scsictl.pretty")
  pretty.format({ 3, 1, name = "a\n", sub = { x = true } })
    --> { 3, 1, name = "a\n", sub = { x = true } }
  print(pretty.results(ctl:reservation(id)))   -- what the REPL prints

pretty.format(v [, opts]) -> string
  Strings are quoted (escapes for quotes, backslashes and control bytes);
  numbers, booleans and nil as tostring; a value with a __tostring
  metamethod as its tostring (when that is one line; else <its __name>);
  other functions, threads and userdata as tostring ("function: 0x...").
  Tables: the array part 1..n first, then the other keys sorted (numbers,
  then strings, then the rest by type and tostring); identifier keys as
  `key = `, others as `[key] = `. A table is written on one line when that
  fits in opts.width, else over lines indented by two spaces: one-line
  entries share lines up to the width, an entry spanning lines has its own,
  and the keyed entries start on a new line after the array items.
  Tables deeper than opts.depth show as {...}, a table inside itself as
  <cycle>, and entries after the first opts.items as `... (n more)`.
  opts: depth (default 4), width (default 78), items (default 40).

pretty.results(...) -> string
  The results of a REPL line: each value by format, except that a top-level
  string is shown as is (so a multi-line string reads as written); values
  joined by tabs, or by newlines when one of them spans several lines.
  No values: "".
]]

local pretty = {}

local DEFAULTS = { depth = 4, width = 78, items = 40 }

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t",
                  ["\r"] = "\\r" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\%d"):format(c:byte())
  end) .. '"'
end

local TYPE_ORDER = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    return (TYPE_ORDER[ta] or 4) < (TYPE_ORDER[tb] or 4)
        or ((TYPE_ORDER[ta] or 4) == (TYPE_ORDER[tb] or 4) and ta < tb)
  end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return not a and b end
  return tostring(a) < tostring(b)
end

-- A value with a __tostring (controllers, the simulated VM): its one-line
-- tostring, or <name> when it spans lines.
local function via_tostring(v)
  local mt = getmetatable(v)
  if type(mt) ~= "table" or mt.__tostring == nil then return nil end
  local ok, s = pcall(tostring, v)
  if not ok or type(s) ~= "string" then return "<" .. tostring(mt.__name or type(v)) .. ">" end
  if s:find("\n") then return "<" .. tostring(mt.__name or type(v)) .. ">" end
  return s
end

-- `lead`: the columns before the value on its line (indent and key).
local function format(v, opts, depth, open, lead)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t ~= "table" then return via_tostring(v) or tostring(v) end
  local named = via_tostring(v)
  if named then return named end
  if open[v] then return "<cycle>" end
  if next(v) == nil then return "{}" end
  if depth >= opts.depth then return "{...}" end

  local n = 0
  while rawget(v, n + 1) ~= nil do n = n + 1 end
  local keys = {}
  for k in next, v do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_less)

  open[v] = true
  local parts, total = {}, n + #keys
  for i = 1, n do
    if #parts >= opts.items then break end
    parts[#parts + 1] = format(rawget(v, i), opts, depth + 1, open, depth * 2 + 2)
  end
  for _, k in ipairs(keys) do
    if #parts >= opts.items then break end
    local ks
    if type(k) == "string" and k:match("^[%a_][%w_]*$") then
      ks = k
    else
      ks = "[" .. format(k, opts, opts.depth, open, 0) .. "]"
    end
    parts[#parts + 1] = ks .. " = " .. format(rawget(v, k), opts, depth + 1, open,
                                              depth * 2 + 2 + #ks + 3)
  end
  open[v] = nil
  if total > #parts then parts[#parts + 1] = ("... (%d more)"):format(total - #parts) end

  local line = "{ " .. table.concat(parts, ", ") .. " }"
  if lead + #line + 1 <= opts.width and not line:find("\n") then return line end
  local room = opts.width - depth * 2 - 2
  -- Entries on lines within the width; one spanning lines has its own; the
  -- array items and the keyed entries start on lines of their own.
  local lines = {}
  for i, p in ipairs(parts) do
    local last = lines[#lines]
    if i > 1 and i ~= n + 1 and not p:find("\n") and not last:find("\n")
        and #last + #p + 3 <= room then
      lines[#lines] = last .. ", " .. p
    else
      lines[#lines + 1] = p
    end
  end
  for i, p in ipairs(lines) do lines[i] = "  " .. p:gsub("\n", "\n  ") end
  return "{\n" .. table.concat(lines, ",\n") .. "\n}"
end

function pretty.format(v, opts)
  local o = {}
  for k, d in pairs(DEFAULTS) do o[k] = opts and opts[k] or d end
  return format(v, o, 0, {}, 0)
end

function pretty.results(...)
  local out, sep = {}, "\t"
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local mt = getmetatable(v)
    local ok, s = false, nil
    if type(v) == "string" then
      ok, s = true, v
    elseif type(mt) == "table" and mt.__tostring ~= nil then
      ok, s = pcall(tostring, v)          -- the whole text, several lines or not
    end
    out[i] = ok and type(s) == "string" and s or pretty.format(v)
    if out[i]:find("\n") then sep = "\n" end
  end
  return table.concat(out, sep)
end

return pretty
