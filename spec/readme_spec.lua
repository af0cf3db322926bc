-- The self-contained Lua examples of the README and of docs/ run as
-- written, so the documentation cannot drift from the module.
local function readme_blocks(file)
  local f = assert(io.open(file or "README.md", "r"))
  local text = f:read("a")
  f:close()
  local blocks, heading = {}, nil
  local in_code, code = false, nil
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if in_code then
      if line == "```" then
        blocks[#blocks + 1] = { heading = heading, code = table.concat(code, "\n") }
        in_code = false
      else
        code[#code + 1] = line
      end
    elseif line == "```lua" then
      in_code, code = true, {}
    else
      heading = line:match("^## (.+)") or heading
    end
  end
  return blocks
end

local function block_under(heading, file)
  for _, b in ipairs(readme_blocks(file)) do
    if b.heading == heading then return b.code end
  end
  error((file or "README.md") .. " has no Lua block under '" .. heading .. "'")
end

describe("README examples", function()
  it("'Ten lines of Lua' maps and releases a disk", function()
    local printed = {}
    local env = setmetatable({ print = function(...)
      printed[#printed + 1] = table.concat({ tostring((...)) }, "\t")
    end }, { __index = _G })
    local chunk = assert(load(block_under("Ten lines of Lua"), "README", "t", env))
    chunk()
    assert.are.equal("/run/mounts/scsi/0_0_0", printed[1])
    assert.truthy(printed[2]:find("1 of 64 slots used", 1, true))
  end)

  it("docs/lua-api.md 'Writing a backend' builds a working controller", function()
    local code = block_under("Writing a backend", "docs/lua-api.md") .. "\nreturn ctl, log"
    local lines = {}
    local env = setmetatable({ print = function(s) lines[#lines + 1] = s end },
      { __index = _G })
    local ctl = assert(load(code, "README", "t", env))()
    local id = assert(ctl:reserve({ host_path = "/img/x.vhdx" }))
    assert.are.equal("/run/mounts/scsi/0_0_0", ctl:map_to_guest(id))
    assert.is_true(ctl:unmap_from_guest(id))
    assert.are.same({ "hot-add /img/x.vhdx at 0:0", "mount /run/mounts/scsi/0_0_0",
                      "unmount /run/mounts/scsi/0_0_0", "eject 0:0", "hot-remove 0:0" },
                    lines)
  end)
end)
