-- luacheck configuration: `luacheck lua/ spec/ examples/`
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

files[".busted"] = {
  std = "lua54",
}
