-- The REPL (examples/repl.lua, `make repl`) in a real terminal: started in
-- tmux on a private socket, typed at with send-keys, read with capture-pane.
-- tmux comes from scripts/deps.txt (group test): without it this fails.

local H = require("helper")
local shquote, run = H.shquote, H.sh

local PROMPT = "scsictl>"      -- lines are compared without trailing spaces

describe("examples/repl.lua in a terminal", function()
  local socket = ("scsictl-repl-%d-%d"):format(os.time(), math.random(1, 1e9))
  local started, socket_path = false, nil

  local function tmux(args)
    local out, ok = run("tmux -f /dev/null -L " .. socket .. " " .. args)
    assert(ok, "tmux " .. args .. ": " .. out)
    return out
  end

  -- The pane's text: the visible screen, or everything since the start.
  local function screen(all)
    return tmux("capture-pane -p -J -t repl" .. (all and " -S - -E -" or ""))
  end

  local function lines_of(text)
    local t = {}
    for l in text:gmatch("([^\n]*)\n") do t[#t + 1] = l:gsub("%s+$", "") end
    while #t > 0 and t[#t] == "" do t[#t] = nil end
    return t
  end

  local function prompts(text)
    local n = 0
    for _, l in ipairs(lines_of(text)) do
      if l:sub(1, #PROMPT) == PROMPT then n = n + 1 end
    end
    return n
  end

  -- Polls the pane until pred(all text) holds; fails with the screen after
  -- the deadline.
  local function wait_for(what, pred)
    local deadline = os.time() + 20
    local text
    repeat
      text = screen(true)
      if pred(text) then return text end
      run("sleep 0.05")
    until os.time() > deadline
    error("timed out waiting for " .. what .. "; the pane shows:\n"
      .. table.concat(lines_of(text), "\n"))
  end

  local function last_line(text)
    local t = lines_of(text)
    return t[#t]
  end

  -- Types a line and waits for the next prompt (or `expect`, e.g. ">>");
  -- returns the output between the typed line and that prompt.
  local function type_line(line, expect)
    local before = screen(true)
    local n = prompts(before)
    tmux("send-keys -t repl -l " .. shquote(line))
    tmux("send-keys -t repl Enter")
    local text = wait_for(("the prompt after %q"):format(line), function(t)
      local last = last_line(t)
      if expect then
        return last == expect and #lines_of(t) > #lines_of(before)
      end
      return last == PROMPT and prompts(t) > n
    end)
    local t = lines_of(text)
    local out = {}
    for i = #lines_of(before) + 1, #t - 1 do out[#out + 1] = t[i] end
    return table.concat(out, "\n"), text
  end

  teardown(function()
    if started then run("tmux -L " .. socket .. " kill-server") end
    if socket_path then os.remove(socket_path) end   -- the server leaves it
  end)

  it("shows the banner, results, the slot map and errors, and leaves on Ctrl-D", function()
    local _, have = run("command -v tmux")
    assert(have, "tmux is missing: install the Debian package tmux (scripts/deps.sh test)")

    local env = {}
    for _, name in ipairs({ "LD_PRELOAD", "ASAN_OPTIONS" }) do
      if os.getenv(name) then env[#env + 1] = name .. "=" .. shquote(os.getenv(name)) end
    end
    local cmd = ("env LUA_PATH=%s LUA_CPATH=%s %s lua5.4 examples/repl.lua;"
      .. " echo \"[repl exited $?]\"; exec sleep 600"):format(
      shquote(package.path), shquote(package.cpath), table.concat(env, " "))
    local cwd = run("pwd"):gsub("\n$", "")
    tmux(("new-session -d -s repl -x 100 -y 40 -c %s %s"):format(shquote(cwd), shquote(cmd)))
    started = true
    socket_path = tmux("display-message -p -t repl '#{socket_path}'"):gsub("\n$", "")

    -- The banner: the module's version, the VM's geometry and guest, what to try.
    local text = wait_for("the first prompt", function(t) return last_line(t) == PROMPT end)
    assert.matches("scsictl %d+%.%d+%.%d+ REPL %(Lua 5%.4%)", text)
    assert.matches("with 2 controllers x 8 LUNs, a linux guest, 2 partitions per disk", text, 1, true)
    assert.matches('Try:  id = attach("/images/base.vhdx")', text, 1, true)
    assert.matches("      print(ctl:slot_map())", text, 1, true)

    -- A reserve, its id, a map and the guest path.
    assert.equal("", (type_line('id = ctl:reserve{ host_path = "/images/base.vhdx" }')))
    local id = type_line("id")
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", id)
    assert.equal("/run/mounts/scsi/0_0_0", (type_line("ctl:map_to_guest(id)")))

    -- The slot map: header, rows, legend.
    local map = type_line("print(ctl:slot_map())")
    assert.matches("scsictl slot map: 2 controllers x 8 LUNs, 1 of 16 slots used", map, 1, true)
    assert.matches("\nc0    M%.%.%.%.%.%.%.\n", map)
    assert.matches("\nc1    %.%.%.%.%.%.%.%.\n", map)
    assert.matches("\nlegend: . free  r reserved  a attached  M mounted", map, 1, true)

    -- A table as a table; several results tab-separated.
    local res = type_line("ctl:reservation(id)")
    assert.equal(table.concat({
      "{",
      '  controller = 0, host_path = "/images/base.vhdx",',
      '  id = "' .. id .. '", lun = 0, partition = 0,',
      "  release_pending = false",
      "}" }, "\n"), res)
    assert.matches('^{ 1, { a = "x" } }%s+true$', (type_line('{ 1, { a = "x" } }, true')))

    -- Errors: a message without a traceback; a syntax error; a refusal.
    assert.equal("stdin:1: attempt to call a nil value (global 'nosuch')", (type_line("nosuch()")))
    assert.matches("^stdin:1: ", (type_line("x = = 1")))
    assert.matches("^nil%s+map_to_guest: no reservation %S+%s+not_found$",
      (type_line('ctl:map_to_guest("00000000-0000-0000-0000-000000000000")')))

    -- A chunk over three lines.
    assert.equal("", (type_line("for i = 1, 2 do", ">>")))
    assert.equal("", (type_line("print(i * 10)", ">>")))
    assert.equal("10\n20", (type_line("end")))

    -- The helpers: detach, show (the slot map and the summary line).
    assert.equal("true", (type_line("detach(id)")))
    local shown = type_line("show()")
    assert.matches("\nc0    %.%.%.%.%.%.%.%.\n", shown)
    assert.matches("scsictl.controller (linux guest, 2 controllers x 8 luns): 0 of 16 slots used",
      shown, 1, true)

    text = screen(true)
    assert.falsy(text:find("stack traceback", 1, true), text)

    -- Ctrl-D leaves with status 0.
    tmux("send-keys -t repl C-d")
    wait_for("the REPL to exit", function(t) return t:find("[repl exited 0]", 1, true) ~= nil end)
  end)
end)
