-- Every Lua code block of README.md and docs/*.md runs, so the documents
-- cannot drift from the module. Each block runs in a process of its own, in
-- the order of the documents (a block may use a file an earlier one made,
-- as a restarted agent uses the state file of the one before), after a
-- prelude that gives the names the documents' fragments assume: `vm`,
-- `guest`, `vm_backend`, `lg_backend` (the simulator), `ctl` (a controller
-- on them) and `ids` (two ids reserved on it). Paths under /var/lib/agent
-- and /run/myvm go to a temporary directory instead. readme_spec checks
-- what two of the blocks print.
local root = debug.getinfo(1, "S").source:match("^@(.-)spec/[^/]*$") or ""

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function blocks_of(file)
  local f = assert(io.open(root .. file, "r"))
  local text = f:read("a")
  f:close()
  local out, code, heading = {}, nil, "(top)"
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if code then
      if line == "```" then
        out[#out + 1] = { file = file, heading = heading, code = table.concat(code, "\n") }
        code = nil
      else
        code[#code + 1] = line
      end
    elseif line == "```lua" then
      code = {}
    else
      heading = line:match("^#+ (.+)") or heading
    end
  end
  return out
end

local function documents()
  local files = { "README.md" }
  local ls = assert(io.popen("ls " .. q(root .. "docs") .. "/*.md"))
  for path in ls:lines() do files[#files + 1] = "docs/" .. path:match("([^/]+)$") end
  ls:close()
  return files
end

local prelude = [[
local scsictl = require("scsictl")
local sim = require("scsictl.sim")
local s = sim.new{ guest = "linux", controllers = 4, forgiving = true }
local vm, guest, vm_backend, lg_backend = s, s, s, s
local ctl = assert(scsictl.new{ controllers = 4, vm = s, linux_guest = s })
local ids = { assert(ctl:reserve{ host_path = "/img/doc-a.vhdx" }),
              assert(ctl:reserve{ host_path = "/img/doc-b.vhdx" }) }
]]

describe("the documents' Lua blocks", function()
  local dir
  setup(function()
    local p = io.popen("mktemp -d " .. q((os.getenv("TMPDIR") or "/tmp") .. "/scsictl-docs.XXXXXX"))
    dir = p:read("l")
    p:close()
    os.execute("mkdir -p " .. q(dir .. "/var/lib/agent") .. " " .. q(dir .. "/run/myvm"))
  end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  local all = {}
  for _, file in ipairs(documents()) do
    for _, b in ipairs(blocks_of(file)) do all[#all + 1] = b end
  end

  it("finds the blocks", function()
    assert.is_true(#all >= 8, ("%d blocks"):format(#all))
  end)

  for i, b in ipairs(all) do
    it(("%s, block %d under '%s' runs"):format(b.file, i, b.heading), function()
      local code = b.code:gsub("/var/lib/agent/", dir .. "/var/lib/agent/")
                         :gsub("/run/myvm/", dir .. "/run/myvm/")
      local script = dir .. ("/block%d.lua"):format(i)
      local f = assert(io.open(script, "w"))
      f:write(prelude, "do\n", code, "\nend\n")
      f:close()
      local cmd = ("cd %s && LUA_PATH=%s LUA_CPATH=%s lua5.4 %s 2>&1"):format(
        q(root ~= "" and root or "."), q(root .. "lua/?.lua;" .. package.path), q(package.cpath),
        q(script))
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      local ok, _, status = p:close()
      assert(ok, ("%s block %d exited with %s:\n%s\n--- code:\n%s"):format(
        b.file, i, tostring(status), out, b.code))
    end)
  end
end)
