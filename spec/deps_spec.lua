-- The dependency step: scripts/deps.txt is the one list of Debian packages
-- and the tools taken from them; scripts/deps.sh installs and checks them;
-- a script that finds a tool missing names the package to install.

local H = require("helper")
local shquote, run = H.shquote, H.sh

local function tmpdir()
  local out = run("mktemp -d " .. shquote((os.getenv("TMPDIR") or "/tmp") .. "/scsictl-deps.XXXXXX"))
  return (out:gsub("%s+$", ""))
end

-- The rows of scripts/deps.txt: { group, package, provides = { ... } }.
local function rows()
  local t = {}
  for line in io.lines("scripts/deps.txt") do
    local g, p, what = line:match("^(%l+)%s+(%S+)%s+(%S+)")
    if g then
      local provides = {}
      for w in what:gmatch("[^,]+") do provides[#provides + 1] = w end
      t[#t + 1] = { group = g, package = p, provides = provides }
    end
  end
  return t
end

describe("the dependency step", function()
  local dirs = {}
  local function scratch()
    local d = tmpdir()
    dirs[#dirs + 1] = d
    return d
  end
  teardown(function()
    for _, d in ipairs(dirs) do run("rm -rf " .. shquote(d)) end
  end)

  it("lists each tool once, in known groups, with a package that dpkg knows", function()
    local seen = {}
    local groups = { base = true, build = true, test = true, fuzz = true, ci = true }
    local t = rows()
    assert.is_true(#t >= 30, "scripts/deps.txt has " .. #t .. " rows")
    for _, r in ipairs(t) do
      assert.is_true(groups[r.group], "unknown group " .. r.group)
      for _, w in ipairs(r.provides) do
        assert.is_nil(seen[w], w .. " is listed twice")
        seen[w] = r.package
      end
    end
    -- The tools the guest builder and the specs call are all there.
    for _, tool in ipairs({ "xz", "zstd", "mkfs.ext4", "qemu-img", "qemu-system-x86_64",
                            "losetup", "flock", "dpkg-deb", "apt-get", "busted", "luacheck",
                            "valgrind", "debootstrap", "clang" }) do
      assert.is_string(seen[tool], tool .. " is not in scripts/deps.txt")
    end
    assert.equal("xz-utils", seen.xz)
  end)

  it("names every tool that build-guest.sh checks for", function()
    local f = assert(io.open("scripts/build-guest.sh"))
    local text = f:read("a")
    f:close()
    local list = assert(text:match("\nfor tool in ([^;]+); do need"), "build-guest.sh's need list")
    local listed = {}
    for _, r in ipairs(rows()) do
      for _, w in ipairs(r.provides) do listed[w] = true end
    end
    for tool in list:gmatch("%S+") do
      assert.is_true(listed[tool] == true, tool .. " (build-guest.sh) is not in scripts/deps.txt")
    end
  end)

  it("passes on this machine: every listed tool of base, build and test is present", function()
    local out, ok = run("sh scripts/deps.sh base build test")
    assert.is_true(ok, out)
  end)

  it("fails naming the tool and its package when a tool is missing after install", function()
    local d = scratch()
    assert(run(("cp scripts/deps.sh %s/ && printf '%%s\\n' %s %s %s > %s/deps.txt"):format(
      shquote(d), shquote("build  coreutils  ls,no-such-tool-xyz  a tool"),
      shquote("build  coreutils  lua:no_such_module_xyz  a module"),
      shquote("build  coreutils  file:/no/such/*.a  a file"), shquote(d))))
    local out, ok = run("sh " .. shquote(d .. "/deps.sh") .. " build")
    assert.is_false(ok)
    assert.matches("'no%-such%-tool%-xyz' is missing: install the Debian package coreutils", out)
    assert.matches("'no_such_module_xyz' is missing: install the Debian package coreutils", out)
    assert.matches("'/no/such/%*%.a' is missing", out)
    assert.not_matches("'ls' is missing", out)
  end)

  it("refuses an unknown group", function()
    local out, ok = run("sh scripts/deps.sh no-such-group")
    assert.is_false(ok)
    assert.matches("unknown group 'no%-such%-group'", out)
  end)

  it("build-guest.sh names the Debian package of a tool it cannot find", function()
    -- A PATH holding every program of /usr/bin and /bin except xz.
    local d = scratch()
    assert(run(("mkdir %s/bin && for f in /usr/bin/* /bin/*; do n=${f##*/}; "
      .. "[ \"$n\" = xz ] || [ -e %s/bin/$n ] || ln -s \"$f\" %s/bin/$n; done")
      :format(shquote(d), shquote(d), shquote(d))))
    local out, ok = run(("PATH=%s/bin /bin/bash scripts/build-guest.sh %s/guest")
      :format(shquote(d), shquote(d)))
    assert.is_false(ok)
    assert.matches("build%-guest: needs 'xz': install the Debian package xz%-utils", out)
  end)
end)
