--[[
guest_vm.lua — a booted Linux guest and host-made images for the specs that
need one (spec/reconcile_spec.lua), as spec/linux_guest_spec.lua does it.

  local guest_vm = require("support.guest_vm")
  local g = guest_vm.new{ controllers = 2, second_qmp = true }
  g:boot()                       -- once per spec file, in setup()
  g.vm, g.guest                  -- scsictl.qemu_guest.launch's vm and backend
  g.qmp2                         -- a second QMP socket (another process's client)
  g:ext4(name, files [, mib])    -- an ext4 image made with mkfs.ext4 -d
  g:gsh(script)                  -- a guest command that must succeed
  g:leftovers()                  -- what scsictl left in QEMU and the guest
  g:scrub()                      -- takes it all away (after a failed test)
  g:stop()                       -- QEMU down, images and directory removed

Boot failures are kept in g.boot_error and raised by g:need() in each test:
nothing passes without a guest.
]]

local qemu_guest = require("scsictl.qemu_guest")
local qemu = require("scsictl.qemu")

local M = {}
M.__index = M

local NOPRELOAD = (os.getenv("LD_PRELOAD") or ""):find("lib%a*san") and "env -u LD_PRELOAD " or ""

local function shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.shquote = shquote

-- A host command that must succeed; its output.
local function sh(cmd)
  local p = io.popen(NOPRELOAD .. cmd .. " 2>&1", "r")
  local out = p:read("a")
  local ok = p:close()
  assert(ok, ("command failed: %s\n%s"):format(cmd, out))
  return out
end
M.sh = sh

function M.new(opts)
  local p = io.popen("mktemp -d " .. shquote((os.getenv("TMPDIR") or "/tmp") .. "/scsictl-rec.XXXXXX"))
  local dir = p:read("l")
  p:close()
  return setmetatable({ controllers = opts.controllers, second_qmp = opts.second_qmp, dir = dir,
                        made = {} }, M)
end

function M:boot()
  local args
  if self.second_qmp then
    self.qmp2 = self.dir .. "/qmp2.sock"
    args = { "-qmp", "unix:" .. self.qmp2 .. ",server=on,wait=off" }
  end
  local ok, a, b = pcall(qemu_guest.launch, { controllers = self.controllers, timeout = 30, args = args })
  if not ok then
    self.boot_error = a
  elseif not a then
    self.boot_error = b
  else
    self.vm, self.guest = a, b
  end
end

function M:need()
  assert(self.vm, "the Linux guest could not be booted: " .. tostring(self.boot_error))
  assert(self.vm:alive(), "the guest's QEMU died: " .. self.vm:log())
  return self.vm, self.guest
end

function M:path(name) return self.dir .. "/" .. name end

-- An ext4 image holding `files` (name -> content), by mkfs.ext4 -d.
function M:ext4(name, files, mib)
  local src = self:path(name .. ".d")
  sh("mkdir -p " .. shquote(src))
  for fname, content in pairs(files) do
    local f = assert(io.open(src .. "/" .. fname, "wb"))
    f:write(content)
    f:close()
  end
  local path = self:path(name)
  sh(("mkfs.ext4 -q -F -d %s %s %dM"):format(shquote(src), shquote(path), mib or 8))
  sh("rm -rf " .. shquote(src))
  self.made[#self.made + 1] = path
  return path
end

function M:gsh(script)
  local out, msg = self.guest:sh(script)
  assert(out, "guest command failed: " .. tostring(msg))
  return out
end

-- What is left: QEMU's nodes and devices of the scsictl prefix (observe),
-- the guest's mounts under /run/mounts and its SCSI disks, as strings.
function M:leftovers()
  local out = {}
  for _, s in ipairs(assert(self.vm:vm_backend():observe())) do
    out[#out + 1] = ("qemu c%d l%d device=%s nodes=%s"):format(s.controller, s.lun, tostring(s.device),
      table.concat(s.nodes, ","))
  end
  for line in self:gsh("cat /proc/mounts"):gmatch("[^\n]+") do
    local dev, mp = line:match("^(%S+) (%S+)")
    if mp and mp:find("^/run/mounts/") then out[#out + 1] = "guest mount " .. dev .. " " .. mp end
  end
  for name in self:gsh("ls /sys/bus/scsi/devices"):gmatch("%S+") do
    if name:match("^%d+:%d+:%d+:%d+$") then out[#out + 1] = "guest disk " .. name end
  end
  local rest = self:gsh("ls -A /run/mounts/scsi 2>/dev/null || true"):gsub("%s+$", "")
  if rest ~= "" then out[#out + 1] = "guest entries " .. rest end
  return out
end

-- Whatever a failed test left in the guest and QEMU goes.
function M:scrub()
  self.guest:sh([[
    for mp in $(awk '$2 ~ "^/run/mounts/" { print $2 }' /proc/mounts | sort -r); do umount "$mp"; done
    rm -rf /run/mounts/scsi
    for d in /sys/bus/scsi/devices/*:*:*:*; do [ -e "$d/delete" ] && echo 1 > "$d/delete"; done
    true]])
  local vmb = self.vm:vm_backend()
  for _, s in ipairs(vmb:observe() or {}) do vmb:remove_scsi_disk(s.controller, s.lun) end
end

function M:stop()
  if self.vm then self.vm:stop() end
  for _, path in ipairs(self.made) do os.remove(path) end
  if self.dir then os.execute("rm -rf " .. shquote(self.dir)) end
end

M.qemu = qemu
return M
