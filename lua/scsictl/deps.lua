--- scsictl.deps: the optional libraries of the QEMU backends, loaded on
-- demand; when any is missing, one error names every Debian package to
-- install. The core module never loads this (nor lua-luv or lua-cjson).
--
--   local uv, cjson = require("scsictl.deps")("scsictl.qmp", "luv", "cjson")
local PACKAGES = { luv = "lua-luv", cjson = "lua-cjson" }

return function(module_name, ...)
  local mods, missing, why = {}, {}, nil
  for i, name in ipairs({ ... }) do
    local ok, mod = pcall(require, name)
    if ok then
      mods[i] = mod
    else
      missing[#missing + 1] = PACKAGES[name] or name
      why = why or tostring(mod)
    end
  end
  if #missing == 0 then return table.unpack(mods, 1, select("#", ...)) end
  error(("%s needs the Debian package%s %s: apt-get install %s (%s)")
    :format(module_name, #missing > 1 and "s" or "", table.concat(missing, " and "),
      table.concat(missing, " "), why), 0)
end
