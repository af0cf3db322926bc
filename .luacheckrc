-- luacheck configuration: `luacheck lua/ spec/ examples/ types/`
std = "lua54"
max_line_length = 120

exclude_files = {
  "build/",
  "build*/",
  "**/build/**",
  "**/build-*/**",
  ".git/",
}

files["spec/"] = {
  std = "+busted",
}

-- LuaCATS meta files (docs/lua-api.md, "Editor types"): empty declarations
-- whose arguments and class tables are never used; long annotation lines.
files["types/"] = {
  unused_args = false,
  ignore = { "241" },   -- a class table is mutated (methods declared) but never read
  max_line_length = false,
}

files[".busted"] = {
  std = "lua54",
}
