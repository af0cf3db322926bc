--- scsictl.deps: the optional libraries of the QEMU backends, each loaded on
-- demand with a message naming its Debian package when it is missing. The
-- core module never loads this (nor lua-luv or lua-cjson).
--
--   local uv = require("scsictl.deps").luv("scsictl.qmp")
--   local cjson = require("scsictl.deps").cjson("scsictl.qmp")
local M = {}

local function load(module_name, lua_module, package)
  local ok, mod = pcall(require, lua_module)
  if ok then return mod end
  error(("%s needs the Debian package %s: apt-get install %s (%s)")
    :format(module_name, package, package, tostring(mod)), 0)
end

function M.luv(module_name) return load(module_name, "luv", "lua-luv") end
function M.cjson(module_name) return load(module_name, "cjson", "lua-cjson") end

return M
