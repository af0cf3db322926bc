--[[
support/qemu_vm.lua — a real QEMU (no guest OS) and a directory of images,
for the specs that drive scsictl.qemu directly (spec/qemu_spec.lua,
spec/qemu_options_spec.lua).

  local Q = require("support.qemu_vm")
  Q.okq, Q.qemu                  -- pcall(require, "scsictl.qemu")'s results
  Q.need()                       -- fails the test when scsictl.qemu cannot be loaded
  local vm = Q.start(n [, opts]) -- qemu.launch with n controllers, or fails the test
  local scratch = Q.scratch()
  setup(function() scratch:create("scsictl-spec" [, base]) end)   -- mktemp -d
  teardown(function() scratch:remove() end)   -- the files from :path, then the directory
  scratch:path(name)             -- a path in the directory, removed by :remove()
  scratch.dir
  Q.with_loop_device(img, function(loopdev) ... end)   -- false: no loop device

If QEMU cannot start (or the Lua packages are missing), every test that
starts one FAILS with the reason.
]]

local M = {}

M.okq, M.qemu = pcall(require, "scsictl.qemu")

function M.need()
  assert(M.okq, "scsictl.qemu cannot be loaded: " .. tostring(M.qemu))
  return M.qemu
end

-- Starts a QEMU with n controllers (opts: more of qemu.launch's options),
-- or fails the test with the reason.
function M.start(n, opts)
  local qemu = M.need()
  opts = opts or {}
  opts.controllers = n
  local vm, err = qemu.launch(opts)
  assert(vm, "QEMU could not start: " .. tostring(err))
  return vm
end

function M.shquote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- External tools run without a sanitizer runtime that a sanitizer build
-- preloads into lua5.4 (qemu-img hangs under a preloaded libasan).
M.NOPRELOAD = (os.getenv("LD_PRELOAD") or ""):find("lib%a*san") and "env -u LD_PRELOAD " or ""

-- Runs fn(loopdev) with the image file img on a free loop device (losetup
-- -f), which is detached afterwards whatever fn did (fn's error is raised
-- then). False, without calling fn, when no loop device can be had (it
-- needs root and losetup); else true.
function M.with_loop_device(img, fn)
  local p = io.popen(M.NOPRELOAD .. "losetup -f --show " .. M.shquote(img) .. " 2>/dev/null")
  local loopdev = p:read("l")
  p:close()
  if not loopdev or loopdev == "" then return false end
  local ok, err = pcall(fn, loopdev)
  os.execute(M.NOPRELOAD .. "losetup -d " .. M.shquote(loopdev))
  assert(ok, err)
  return true
end

---------------------------------------------------------------------------
-- A spec file's directory of images.

local Scratch = {}
Scratch.__index = Scratch

function M.scratch() return setmetatable({ made = {} }, Scratch) end

-- Makes the directory: prefix.XXXXXX under base (default $TMPDIR or /tmp).
function Scratch:create(prefix, base)
  local p = io.popen("mktemp -d " .. M.shquote((base or os.getenv("TMPDIR") or "/tmp") .. "/" .. prefix .. ".XXXXXX"))
  self.dir = p:read("l")
  p:close()
  return self.dir
end

-- The path of name in the directory, removed by :remove().
function Scratch:path(name)
  local path = self.dir .. "/" .. name
  self.made[#self.made + 1] = path
  return path
end

-- Removes the paths handed out (and any added to .made), then the directory.
function Scratch:remove()
  for _, path in ipairs(self.made) do os.remove(path) end
  if self.dir then os.remove(self.dir) end
end

return M
