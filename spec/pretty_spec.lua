-- scsictl.pretty: values as text for the REPL.

local pretty = require("scsictl.pretty")

describe("scsictl.pretty.format", function()
  it("writes scalars, quoting strings with escapes", function()
    assert.equal("nil", pretty.format(nil))
    assert.equal("true", pretty.format(true))
    assert.equal("42", pretty.format(42))
    assert.equal("1.5", pretty.format(1.5))
    assert.equal([["a\"b\\c\n\t\0"]], pretty.format('a"b\\c\n\t\0'))
  end)

  it("writes a small table on one line: the array first, then sorted keys", function()
    assert.equal("{}", pretty.format({}))
    assert.equal("{ 1, 2, 3 }", pretty.format({ 1, 2, 3 }))
    assert.equal('{ 3, 1, b = "x", c = { d = true }, z = 1 }',
      pretty.format({ 3, 1, z = 1, b = "x", c = { d = true } }))
    assert.equal('{ [1.5] = 1, [5] = 2, ["a b"] = 3, x = 4, [false] = 5, [true] = 6 }',
      pretty.format({ [true] = 6, x = 4, ["a b"] = 3, [5] = 2, [1.5] = 1, [false] = 5 }))
  end)

  it("breaks a table that does not fit over lines, indenting by two", function()
    local t = { name = ("n"):rep(40), sub = { path = ("p"):rep(40), refs = 1 } }
    assert.equal(table.concat({
      "{",
      '  name = "' .. ("n"):rep(40) .. '",',
      '  sub = { path = "' .. ("p"):rep(40) .. '", refs = 1 }',
      "}" }, "\n"), pretty.format(t))
    assert.equal(table.concat({
      "{",
      '  name = "' .. ("n"):rep(40) .. '",',
      "  sub = {",
      '    path = "' .. ("p"):rep(40) .. '",',
      "    refs = 1",
      "  }",
      "}" }, "\n"), pretty.format(t, { width = 60 }))
  end)

  it("keeps every line within the width when the atoms allow it", function()
    local list = {}
    for i = 1, 40 do list[i] = i * 1000 end
    local t = { list = list, r = { controller = 0, host_path = "/images/base.vhdx",
                                   id = "12a264a9-1477-4e5f-ad29-17246d513ef3", lun = 0,
                                   deeper = { { a = ("x"):rep(30), b = ("y"):rep(30) } } } }
    for _, width in ipairs({ 50, 60, 78, 100 }) do
      local s = pretty.format(t, { width = width })
      for line in s:gmatch("[^\n]+") do
        assert.is_true(#line <= width, ("width %d: %q"):format(width, line))
      end
      assert.equal(pretty.format(t, { width = 1000 }), (s:gsub("\n%s*", " "):gsub("{ }", "{}")))
    end
  end)

  it("packs a long array's short items into lines within the width", function()
    local t = {}
    for i = 1, 30 do t[i] = i * 1000 end
    local s = pretty.format(t, { width = 40 })
    local lines = {}
    for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("{", lines[1])
    assert.equal("}", lines[#lines])
    assert.is_true(#lines > 3 and #lines < 15, s)
    for _, l in ipairs(lines) do assert.is_true(#l <= 40, l) end
    assert.equal("  1000, 2000, 3000, 4000, 5000, 6000,", lines[2])
  end)

  it("limits depth and items, and marks cycles", function()
    assert.equal("{ { { {...} } } }", pretty.format({ { { { { 1 } } } } }, { depth = 3 }))
    assert.equal("{ 1, 2, ... (3 more) }", pretty.format({ 1, 2, 3, 4, 5 }, { items = 2 }))
    local t = { name = "loop" }
    t.self = t
    t.list = { t }
    assert.equal('{ list = { <cycle> }, name = "loop", self = <cycle> }', pretty.format(t))
    -- A table met twice but not inside itself is written twice.
    local shared = { 1 }
    assert.equal("{ { 1 }, { 1 } }", pretty.format({ shared, shared }))
  end)

  it("writes values with __tostring by it, and <__name> when that is several lines", function()
    local one = setmetatable({}, { __tostring = function() return "one line" end })
    local many = setmetatable({}, { __name = "thing", __tostring = function() return "a\nb" end })
    assert.equal("{ a = one line, b = <thing> }", pretty.format({ a = one, b = many }))
    assert.matches("^function: ", pretty.format(print))
  end)

  it("writes a controller by its summary line", function()
    local sim = require("scsictl.sim")
    local ctl, vm = sim.controller{ controllers = 2, luns_per_controller = 8 }
    local s = pretty.format({ ctl = ctl, vm = vm })
    assert.matches("ctl = scsictl.controller %(linux guest, 2 controllers x 8 luns%)", s)
    assert.matches("vm = <scsictl.sim>", s, 1, true)
    ctl:close()
  end)
end)

describe("scsictl.pretty.results", function()
  it("shows top-level strings as they are, values tab-separated", function()
    assert.equal("", pretty.results())
    assert.equal("nil", pretty.results(nil))
    assert.equal('id\tnil\t{ "x" }', pretty.results("id", nil, { "x" }))
  end)

  it("puts values on their own lines when one spans several", function()
    local sim = require("scsictl.sim")
    local ctl = sim.controller{ controllers = 2, luns_per_controller = 8 }
    local map = ctl:slot_map()
    assert.equal(map .. "\n1", pretty.results(map, 1))
    assert.equal(tostring(ctl), pretty.results(ctl))
    ctl:close()
  end)
end)
