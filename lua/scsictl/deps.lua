--- scsictl.deps: the optional libraries of the QEMU backends.
-- `require("scsictl.deps")(module_name)` returns cjson, socket, socket.unix,
-- or raises a message naming the Debian packages to install. The core module
-- never loads this (nor lua-socket or lua-cjson).
return function(module_name)
  local okj, cjson = pcall(require, "cjson")
  local oks, socket = pcall(require, "socket")
  local oku, unix = pcall(require, "socket.unix")
  if okj and oks and oku then return cjson, socket, unix end
  local missing = {}
  if not (oks and oku) then missing[#missing + 1] = "lua-socket" end
  if not okj then missing[#missing + 1] = "lua-cjson" end
  error(("%s needs the Debian package%s %s: apt-get install %s (%s)")
    :format(module_name, #missing > 1 and "s" or "", table.concat(missing, " and "),
      table.concat(missing, " "), tostring(not okj and cjson or not oks and socket or unix)), 0)
end
