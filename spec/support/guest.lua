--[[
support/guest.lua — one booted test guest for a spec file, and what such
specs check with it (spec/linux_guest_spec.lua, spec/guest_crypt_spec.lua,
spec/reconcile_spec.lua and its child spec/support/agent_child.lua).

  local G = require("support.guest")
  setup(G.boot)                 -- boots once (TCG unless SCSICTL_QEMU_ACCEL says)
  after_each(G.scrub)           -- whatever a failed test left goes
  teardown(G.shutdown)          -- stops QEMU, removes the images and the directory
  it("...", function()
    local vm, guest = G.need()  -- fails the test with the reason when no guest
    ...
    G.assert_clean(ctl)
  end)

G.boot{ controllers = n, timeout = s, second_qmp = true }: second_qmp gives
QEMU a second QMP socket (G.qmp2()) for another process's client; G.endpoints()
names what such a child needs and G.attach(...) connects it (agent_child.lua).

If the guest cannot be built or booted, every test that calls G.need()
FAILS with the reason: nothing passes without a guest.
]]

local assert = require("luassert")   -- busted's assert, also outside a spec file
local scsictl = require("scsictl")
local okq, qemu_guest = pcall(require, "scsictl.qemu_guest")
local qemu = okq and require("scsictl.qemu") or nil
local uv = okq and require("luv") or nil

local M = {}

local NOPRELOAD = (os.getenv("LD_PRELOAD") or ""):find("lib%a*san") and "env -u LD_PRELOAD " or ""

function M.shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local shquote = M.shquote

function M.value(v, msg, code)
  assert(v, ("expected success, got %s (%s)"):format(tostring(msg), tostring(code)))
  return v
end
local value = M.value

local vm, guest, boot_error, dir, qmp2
local made = {}

-- opts: controllers (default 2), timeout (the guest backend's, default 30),
-- second_qmp (a second QMP socket in the spec's directory: G.qmp2()).
function M.boot(opts)
  opts = opts or {}
  local p = io.popen("mktemp -d " .. shquote((os.getenv("TMPDIR") or "/tmp") .. "/scsictl-guest-spec.XXXXXX"))
  dir = p:read("l")
  p:close()
  if not okq then
    boot_error = qemu_guest
    return
  end
  local args
  if opts.second_qmp then
    qmp2 = dir .. "/qmp2.sock"
    args = { "-qmp", "unix:" .. qmp2 .. ",server=on,wait=off" }
  end
  local ok, a, b = pcall(qemu_guest.launch, { controllers = opts.controllers or 2, timeout = opts.timeout or 30,
    args = args })
  if not ok then
    boot_error = a
  elseif not a then
    boot_error = b
  else
    vm, guest = a, b
  end
end

function M.need()
  assert(okq, "scsictl.qemu_guest cannot be loaded: " .. tostring(qemu_guest))
  assert(vm, "the Linux guest could not be booted: " .. tostring(boot_error))
  assert(vm:alive(), "the guest's QEMU died: " .. vm:log())
  return vm, guest
end

-- Stops QEMU; removes the images and the directory with whatever else a
-- spec left in it (state files, the second QMP socket).
function M.shutdown()
  if vm then vm:stop() end
  for _, path in ipairs(made) do os.remove(path) end
  if dir then os.execute("rm -rf " .. shquote(dir)) end
end

-- The second QMP socket's path (boot with second_qmp), else nil.
function M.qmp2() return qmp2 end

-- What a child process needs to drive this guest: the second QMP socket,
-- qemu-ga's socket (it serves one client: close the guest backend's agent
-- while the child runs) and the controllers' PCI addresses, "a,b,...".
function M.endpoints()
  local pci = {}
  for c = 0, vm.controllers - 1 do pci[#pci + 1] = vm:pci_address(c) end
  return qmp2, vm.agent_socket, table.concat(pci, ",")
end

-- In that child: a QEMU backend over the QMP socket and a Linux guest
-- backend over qemu-ga's socket, its agent connected and synced; or nil, msg.
function M.attach(qmp_path, agent_path, pci_list)
  local pci, n = {}, 0
  for a in pci_list:gmatch("[^,]+") do
    pci[n], n = a, n + 1          -- controller numbers start at 0
  end
  local vmb = qemu.vm_backend{ qmp = qmp_path, timeout = 10 }
  local ok, msg = vmb:client()
  if not ok then return nil, msg end
  local g = qemu_guest.linux_guest{ agent = agent_path, pci = pci, timeout = 30 }
  local agent
  agent, msg = g:agent()
  if not agent then return nil, msg end
  ok, msg = agent:sync(20)
  if not ok then return nil, msg end
  return vmb, g
end

-- Runs a guest command that must succeed; its stdout.
function M.gsh(script)
  local out, msg = guest:sh(script)
  assert(out, "guest command failed: " .. tostring(msg))
  return out
end
local gsh = M.gsh

---------------------------------------------------------------------------
-- Images (made on the host, never mounted there).

function M.path_of(name) return dir .. "/" .. name end
local path_of = M.path_of

-- Marks a file for removal at shutdown.
function M.made(path)
  made[#made + 1] = path
  return path
end

-- Runs a host command that must succeed; its output (stdout and stderr).
function M.sh(cmd)
  local p = io.popen(NOPRELOAD .. cmd .. " 2>&1", "r")
  local out = p:read("a")
  local ok = p:close()
  assert(ok, ("command failed: %s\n%s"):format(cmd, out))
  return out
end
local sh = M.sh

-- A sparse file of mib MiB (zeros).
function M.blank(name, mib)
  local path = M.made(path_of(name))
  local f = assert(io.open(path, "wb"))
  f:seek("set", (mib or 16) * 1024 * 1024 - 1)
  f:write("\0")
  f:close()
  return path
end

-- A directory holding `files` (name -> content); the caller removes it.
function M.tree(name, files)
  local src = path_of(name)
  sh("mkdir -p " .. shquote(src))
  for fname, content in pairs(files) do
    local f = assert(io.open(src .. "/" .. fname, "wb"))
    f:write(content)
    f:close()
  end
  return src
end

-- An ext4 image holding `files` (name -> content), by mkfs.ext4 -d.
function M.ext4(name, files, mib)
  local src = M.tree(name .. ".d", files)
  local path = M.made(path_of(name))
  sh(("mkfs.ext4 -q -F -d %s %s %dM"):format(shquote(src), shquote(path), mib or 8))
  sh("rm -rf " .. shquote(src))
  return path
end

function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

---------------------------------------------------------------------------
-- Controllers whose backends record every callback.

-- Backends that record every callback (name, args, outcome, time) into log
-- before passing it on to QEMU / the guest. With opts.guest_had_device,
-- remove_scsi_disk also records whether the guest still had the SCSI
-- device when the hot-remove began.
function M.logged(log, opts)
  local vmb = vm:vm_backend()
  local function rec(name, f)
    return function(_, ...)
      local e = { name, ... }
      e.t = uv.hrtime() / 1e9
      log[#log + 1] = e
      local r = table.pack(f(...))
      e.ok = r[1] ~= nil and r[1] ~= false
      e.msg = r[2]
      return table.unpack(r, 1, r.n)
    end
  end
  local remove = function(...) return vmb:remove_scsi_disk(...) end
  if opts and opts.guest_had_device then
    remove = function(c, l)
      local dev, why = guest:device(c, l)
      log[#log].guest_had_device = dev ~= nil or not tostring(why):find("no disk at", 1, true)
      return vmb:remove_scsi_disk(c, l)
    end
  end
  local v = {
    add_scsi_disk = rec("add_scsi_disk", function(...) return vmb:add_scsi_disk(...) end),
    remove_scsi_disk = rec("remove_scsi_disk", remove),
  }
  local g = {}
  for _, n in ipairs({ "add_mapped_virtual_disk", "remove_mapped_virtual_disk", "remove_scsi_device" }) do
    g[n] = rec(n, function(...) return guest[n](guest, ...) end)
  end
  return v, g
end

-- A controller over M.logged's backends (opts as M.logged's).
function M.new_ctl(log, controllers, luns, opts)
  local v, g = M.logged(log or {}, opts)
  return scsictl.new{ controllers = controllers or 2, luns_per_controller = luns or 4,
    vm = v, linux_guest = g }
end

function M.names(log)
  local out = {}
  for i, e in ipairs(log) do out[i] = e[1] end
  return out
end

-- Everything still reserved is released.
function M.release_all(ctl)
  for _ = 1, 3 do
    for _, r in ipairs(ctl:reservations()) do ctl:unmap_from_guest(r.id) end
  end
end

---------------------------------------------------------------------------
-- What is left.

function M.guest_mounts()
  local out = {}
  for line in gsh("cat /proc/mounts"):gmatch("[^\n]+") do
    local dev, mp = line:match("^(%S+) (%S+)")
    if mp and mp:find("^/run/mounts/") then out[#out + 1] = dev .. " " .. mp end
  end
  return out
end

function M.guest_scsi_disks()
  local out = {}
  for name in gsh("ls /sys/bus/scsi/devices"):gmatch("%S+") do
    if name:match("^%d+:%d+:%d+:%d+$") then out[#out + 1] = name end
  end
  return out
end

-- The guest's device-mapper mappings: "name target" (dmsetup table's first
-- target), from sysfs and dmsetup alike.
function M.guest_mappings()
  local out = {}
  for line in gsh("dmsetup table 2>/dev/null | grep -v '^No devices found' || true"):gmatch("[^\n]+") do
    local name, target = line:match("^(%S+): %d+ %d+ (%S+)")
    out[#out + 1] = name and (name .. " " .. target) or line
  end
  local sys = gsh("for d in /sys/block/dm-*; do [ -e \"$d\" ] && echo ${d##*/}; done; true")
  assert.equal(#out, select(2, sys:gsub("dm%-%d+", "")), "dmsetup and /sys/block disagree: " .. sys)
  return out
end

function M.qemu_disks()
  local out = {}
  for _, d in ipairs(value(qemu.scsi_disks(vm:qmp()))) do
    out[#out + 1] = ("%s %s lun %d"):format(d.device, d.bus, d.lun)
  end
  return out
end

function M.qemu_nodes()
  local out = {}
  for _, n in ipairs(value(vm:qmp():execute("query-named-block-nodes", { flat = true }))) do
    if tostring(n["node-name"]):find("^scsictl%-") then out[#out + 1] = n["node-name"] end
  end
  return out
end

-- What is left: QEMU's nodes and devices of the scsictl prefix (observe),
-- the guest's mounts under /run/mounts, its SCSI disks and what is under
-- /run/mounts/scsi, as strings.
function M.leftovers()
  local out = {}
  for _, s in ipairs(assert(vm:vm_backend():observe())) do
    out[#out + 1] = ("qemu c%d l%d device=%s nodes=%s"):format(s.controller, s.lun, tostring(s.device),
      table.concat(s.nodes, ","))
  end
  for _, m in ipairs(M.guest_mounts()) do out[#out + 1] = "guest mount " .. m end
  for _, name in ipairs(M.guest_scsi_disks()) do out[#out + 1] = "guest disk " .. name end
  local rest = gsh("ls -A /run/mounts/scsi 2>/dev/null || true"):gsub("%s+$", "")
  if rest ~= "" then out[#out + 1] = "guest entries " .. rest end
  return out
end

-- No claim, no mount, no mapping, no SCSI disk in the guest or in QEMU.
-- opts.mappings = false leaves the device-mapper mappings unchecked.
function M.assert_clean(ctl, opts)
  if ctl then assert.equal(0, ctl:stats().used) end
  assert.same({}, M.guest_mounts())
  if not (opts and opts.mappings == false) then assert.same({}, M.guest_mappings()) end
  assert.same({}, M.guest_scsi_disks())
  assert.same({}, M.qemu_disks())
  assert.same({}, M.qemu_nodes())
  assert.equal("", gsh("ls /run/mounts/scsi 2>/dev/null || true"))
end

-- After a failed test: whatever it left in the guest and QEMU goes, so the
-- next test starts clean (each test still checks that it cleaned up itself).
function M.scrub()
  if not (vm and vm:alive()) then return end
  guest:sh([[
    for mp in $(awk '$2 ~ "^/run/mounts/" { print $2 }' /proc/mounts | sort -r); do umount "$mp"; done
    rm -rf /run/mounts/scsi
    for d in /sys/block/dm-*; do [ -e "$d/dm/name" ] && dmsetup remove "$(cat "$d/dm/name")"; done
    for d in /sys/bus/scsi/devices/*:*:*:*; do [ -e "$d/delete" ] && echo 1 > "$d/delete"; done
    true]])
  -- Every slot QEMU holds under the scsictl prefix: a device, or only the
  -- block nodes an interrupted add left.
  local vmb = vm:vm_backend()
  for _, s in ipairs(vmb:observe() or {}) do vmb:remove_scsi_disk(s.controller, s.lun) end
end

return M
