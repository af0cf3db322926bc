-- scsictl.qemu_guest.locate: where the guest builder and the guest cache
-- are, in a checkout and when installed (a LuaRocks tree, /usr/local).
-- Nothing here boots QEMU or builds a guest: locate is given a module path,
-- an environment and a file system as plain values.
local qemu_guest = require("scsictl.qemu_guest")

local function shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local p = assert(io.popen("env -u LD_PRELOAD sh -c " .. shquote(cmd) .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

-- locate with `files` as the only existing paths and `env` as the environment.
local function locate(source, files, env)
  local set = {}
  for _, f in ipairs(files or {}) do set[f] = true end
  return qemu_guest.locate{
    source = source,
    exists = function(p) return set[p] == true end,
    getenv = function(k) return (env or {})[k] end,
  }
end

describe("qemu_guest.locate", function()
  local HOME = { HOME = "/home/u", PATH = "/usr/local/bin:/usr/bin" }

  -- In a checkout: { what, module path, files that exist, builder, guest dir }
  for _, case in ipairs {
    { "uses the checkout's scripts/build-guest.sh and build/guest", "/src/scsictl/lua/scsictl/qemu_guest.lua",
      { "/src/scsictl/scripts/build-guest.sh", "/usr/bin/scsictl-build-guest" },
      "/src/scsictl/scripts/build-guest.sh", "/src/scsictl/build/guest" },
    { "reads a module path relative to the working directory as a checkout", "lua/scsictl/qemu_guest.lua",
      { "./scripts/build-guest.sh" }, "./scripts/build-guest.sh", "./build/guest" },
    { "falls back to PATH in a checkout that has no scripts/build-guest.sh", "/src/lua/scsictl/qemu_guest.lua",
      { "/usr/bin/scsictl-build-guest" }, "/usr/bin/scsictl-build-guest", "/src/build/guest" },
  } do
    it(case[1], function()
      local r = locate(case[2], case[3], HOME)
      assert.equal(case[4], r.builder)
      assert.equal(case[5], r.guest_dir)
      assert.equal(case[5]:match("^(.*/)build/guest$"), r.checkout)
    end)
  end

  it("uses the builder installed next to the module before one on PATH", function()
    local r = locate("/t/share/lua/5.4/scsictl/qemu_guest.lua",
                     { "/t/bin/scsictl-build-guest", "/usr/bin/scsictl-build-guest" }, HOME)
    assert.equal("/t/bin/scsictl-build-guest", r.builder)
    assert.is_nil(r.checkout)
    assert.equal("/home/u/.cache/scsictl/guest", r.guest_dir)
    assert.same({ "/t/bin/scsictl-build-guest", "/usr/local/bin/scsictl-build-guest",
                  "/usr/bin/scsictl-build-guest" }, r.tried)
  end)

  it("finds scsictl-build-guest on PATH, in PATH's order", function()
    local r = locate("/usr/local/share/lua/5.4/scsictl/qemu_guest.lua",
                     { "/opt/b/scsictl-build-guest", "/usr/bin/scsictl-build-guest" },
                     { HOME = "/h", PATH = "/nope:/opt/b:/usr/bin" })
    assert.equal("/opt/b/scsictl-build-guest", r.builder)
    -- An empty PATH entry is the working directory.
    r = locate("/x/share/lua/5.4/scsictl/qemu_guest.lua", { "./scsictl-build-guest" },
               { HOME = "/h", PATH = "/a::/b" })
    assert.equal("./scsictl-build-guest", r.builder)
  end)


  it("finds nothing when nothing is there, and says where it looked", function()
    local r = locate("/t/share/lua/5.4/scsictl/qemu_guest.lua", {}, HOME)
    assert.is_nil(r.builder)
    assert.equal(3, #r.tried)
  end)

  it("takes the cache from SCSICTL_GUEST_DIR, then an absolute XDG_CACHE_HOME, then HOME", function()
    local src = "/t/share/lua/5.4/scsictl/qemu_guest.lua"
    assert.equal("/g", locate(src, {}, { SCSICTL_GUEST_DIR = "/g", HOME = "/h" }).guest_dir)
    assert.equal("/g", locate("/c/lua/scsictl/qemu_guest.lua", {}, { SCSICTL_GUEST_DIR = "/g" }).guest_dir)
    assert.equal("/x/scsictl/guest", locate(src, {}, { XDG_CACHE_HOME = "/x", HOME = "/h" }).guest_dir)
    assert.equal("/h/.cache/scsictl/guest",
                 locate(src, {}, { XDG_CACHE_HOME = "rel", HOME = "/h", SCSICTL_GUEST_DIR = "" }).guest_dir)
    assert.is_nil(locate(src, {}, {}).guest_dir)
  end)

  it("finds this checkout's builder from the module as loaded", function()
    local r = qemu_guest.locate()
    assert.is_string(r.checkout)
    assert.equal(r.checkout .. "scripts/build-guest.sh", r.builder)
  end)

  it("image() reports where it looked when there is no image and no builder", function()
    local real = qemu_guest.locate
    qemu_guest.locate = function() return { tried = { "/nowhere/scsictl-build-guest" } } end
    local ok, img, msg = pcall(qemu_guest.image, { guest_dir = "/nonexistent/scsictl-guest" })
    qemu_guest.locate = real
    assert.is_true(ok, tostring(img))
    assert.is_nil(img)
    assert.matches("no guest builder", msg)
    assert.matches("/nowhere/scsictl-build-guest", msg, 1, true)
  end)

  it("the installed scsictl-build-guest defaults to the cache locate() uses", function()
    local d = (run("mktemp -d " .. shquote((os.getenv("TMPDIR") or "/tmp") .. "/scsictl-locate.XXXXXX"))
               :gsub("%s+$", ""))
    finally(function() run("rm -rf " .. shquote(d)) end)
    -- Only what the script runs before its first tool check.
    assert(run(("mkdir -p %s/bin %s/home && cp scripts/build-guest.sh %s/bin/scsictl-build-guest"
      .. " && ln -s \"$(command -v dirname)\" %s/bin/dirname && ln -s \"$(command -v mkdir)\" %s/bin/mkdir")
      :format(shquote(d), shquote(d), shquote(d), shquote(d), shquote(d))))
    local out, ok = run(("cd %s && HOME=%s/home PATH=%s/bin /bin/bash %s/bin/scsictl-build-guest")
      :format(shquote(d), shquote(d), shquote(d), shquote(d)))
    assert.is_false(ok)
    assert.matches("build%-guest: needs 'apt%-get'", out)
    local r = qemu_guest.locate{ source = d .. "/share/lua/5.4/scsictl/qemu_guest.lua",
      getenv = function(k) return ({ HOME = d .. "/home" })[k] end }
    assert.equal(d .. "/home/.cache/scsictl/guest", r.guest_dir)
    local _, made = run("test -d " .. shquote(r.guest_dir))
    assert.is_true(made, r.guest_dir .. " was not the script's default")
  end)
end)
