-- linux_guest.lua — scsictl driving a real Linux guest end to end.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/lua/?.so;;' lua5.4 examples/linux_guest.lua
--
-- Boots the small Linux guest of scripts/build-guest.sh (built into
-- build/guest, or $SCSICTL_GUEST_DIR, on first use) under QEMU with two
-- virtio-scsi controllers; the VM backend is scsictl.qemu (QMP hot-plug), the
-- guest backend scsictl.qemu_guest (qemu-ga: mount, unmount, eject).
--
-- Two "containers" each map two read-only image layers (shared: one disk and
-- one mount each, two claims) and a scratch disk of their own (blank,
-- formatted in the guest by ensure_filesystem). Then `ls` and `cat` run in
-- the guest on the mounted paths, each container writes to its scratch disk
-- and fails to write to a layer, and everything is torn down. Every backend
-- call is timed; the end shows each step's latency.
--
-- TCG unless SCSICTL_QEMU_ACCEL=kvm (or auto). Needs qemu-system-x86,
-- e2fsprogs, lua-luv and lua-cjson. Prints "linux_guest: ok" at the end;
-- exits non-zero on anything unexpected.

local here = debug.getinfo(1, "S").source:match("^@(.-)examples/[^/]*$") or ""
package.path = here .. "lua/?.lua;" .. here .. "lua/?/init.lua;" .. package.path

local scsictl = require("scsictl")
local qemu = require("scsictl.qemu")
local qemu_guest = require("scsictl.qemu_guest")
local uv = require("luv")

local function now() return uv.hrtime() / 1e9 end
local NOPRELOAD = (os.getenv("LD_PRELOAD") or ""):find("lib%a*san") and "env -u LD_PRELOAD " or ""

local function check(cond, fmt, ...)
  if not cond then error(fmt:format(...), 2) end
  return cond
end

local function ok(v, msg, code)
  if v == nil or v == false then
    error(("unexpected failure: %s (%s)"):format(tostring(msg), tostring(code)), 2)
  end
  return v
end

local function shquote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function ms(seconds) return ("%.1f ms"):format(seconds * 1000) end

local cleanup = {}

local function run()
  local dir
  do
    local p = io.popen("mktemp -d " .. shquote((os.getenv("TMPDIR") or "/tmp") .. "/linux_guest.XXXXXX"))
    dir = p:read("l")
    p:close()
    check(dir and dir ~= "", "cannot create a temporary directory")
  end
  cleanup[#cleanup + 1] = function() os.execute("rm -rf " .. shquote(dir)) end

  -- Images, made on the host without mounting anything.
  local function ext4(name, files)
    local src = dir .. "/" .. name .. ".d"
    os.execute("mkdir -p " .. shquote(src))
    for fname, content in pairs(files) do
      local f = assert(io.open(src .. "/" .. fname, "wb"))
      f:write(content)
      f:close()
    end
    local path = dir .. "/" .. name
    check(os.execute(("%smkfs.ext4 -q -F -d %s %s 8M >/dev/null 2>&1"):format(NOPRELOAD,
      shquote(src), shquote(path))) == true, "mkfs.ext4 -d failed (install e2fsprogs)")
    return path
  end
  local function blank(name)
    local path = dir .. "/" .. name
    local f = assert(io.open(path, "wb"))
    f:seek("set", 16 * 1024 * 1024 - 1)
    f:write("\0")
    f:close()
    return path
  end
  local base = ext4("base-layer.img", { ["os-release"] = "NAME=tiny\n", ["motd"] = "hello from the base layer\n" })
  local app = ext4("app-layer.img", { ["app.conf"] = "greeting=hi\n", ["VERSION"] = "1.2.3\n" })
  local scratch = { a = blank("scratch-a.img"), b = blank("scratch-b.img") }

  -- Boot.
  local t0 = now()
  local vm, guest = qemu_guest.launch{ controllers = 2 }
  check(vm, "the Linux guest did not boot: %s", tostring(guest))
  cleanup[#cleanup + 1] = function() vm:stop() end
  local boot = now() - t0
  local v = vm:qmp().greeting.version.qemu
  print(("QEMU %d.%d.%d (%s), guest kernel %s: booted to the guest agent in %.2f s%s"):format(
    v.major, v.minor, v.micro, vm.accel, ok(guest:sh("uname -r")):gsub("%s+$", ""), boot,
    vm.kvm_failure and " (KVM tried first and failed)" or ""))

  -- Timed backends.
  local timings = {}
  local order = { "hot-add", "guest mount", "unmount", "eject", "hot-remove" }
  local function timed(step, f)
    return function(_, ...)
      local t = now()
      local r = table.pack(f(...))
      local dt = now() - t
      timings[step] = timings[step] or {}
      table.insert(timings[step], dt)
      local what = select(1, ...)
      if type(what) == "table" then
        what = what.mount_path or (what.path and what.path:match("[^/]+$"))
          or ("controller %d lun %d"):format(what.controller, what.lun)
      else
        what = ("controller %d lun %d"):format(what, select(2, ...))
      end
      print(("  %-12s %-24s %10s%s"):format(step, what, ms(dt),
        (r[1] == nil or r[1] == false) and ("  FAILED: " .. tostring(r[2])) or ""))
      return table.unpack(r, 1, r.n)
    end
  end
  local vmb = vm:vm_backend()
  local ctl = scsictl.new{
    controllers = 2, luns_per_controller = 2,
    vm = {
      add_scsi_disk = timed("hot-add", function(a, c, l) return vmb:add_scsi_disk(a, c, l) end),
      remove_scsi_disk = timed("hot-remove", function(c, l) return vmb:remove_scsi_disk(c, l) end),
    },
    linux_guest = {
      add_mapped_virtual_disk = timed("guest mount", function(s) return guest:add_mapped_virtual_disk(s) end),
      remove_mapped_virtual_disk = timed("unmount", function(s) return guest:remove_mapped_virtual_disk(s) end),
      remove_scsi_device = timed("eject", function(d) return guest:remove_scsi_device(d) end),
    },
  }

  -- Two containers: shared read-only layers, a scratch disk each.
  print("map:")
  local containers = {}
  for _, name in ipairs({ "a", "b" }) do
    local c = { name = name, ids = {}, paths = {} }
    local function map(key, disk, mount)
      local id = ok(ctl:reserve(disk, mount))
      c.ids[#c.ids + 1] = id
      c.paths[key] = ok(ctl:map_to_guest(id))
    end
    map("base", { host_path = base, read_only = true }, { read_only = true })
    map("app", { host_path = app, read_only = true }, { read_only = true })
    map("scratch", { host_path = scratch[name] }, { ensure_filesystem = true, filesystem = "ext4" })
    containers[#containers + 1] = c
  end
  check(containers[1].paths.base == containers[2].paths.base, "the base layer is not shared")
  check(containers[1].paths.scratch ~= containers[2].paths.scratch, "the scratch disks are shared")

  print("slots:")
  for _, s in ipairs(ctl:slots()) do
    local p = s.partitions[1]
    print(("  controller %d lun %d  %-16s %s, %d claim%s, mounted at %s"):format(s.controller, s.lun,
      s.host_path:match("[^/]+$"), s.state, p.refs, p.refs == 1 and "" or "s", tostring(p.guest_path)))
  end
  print("QEMU's SCSI disks:")
  for _, d in ipairs(ok(qemu.scsi_disks(vm:qmp()))) do
    print(("  %s on %s lun %d: %s%s"):format(d.device, d.bus, d.lun, d.file:match("[^/]+$"),
      d.ro and " (read-only)" or ""))
  end

  -- Work inside the guest.
  print("in the guest:")
  for _, c in ipairs(containers) do
    local script = ("cd %s && ls -1 && cat motd %s/app.conf && echo container-%s > %s/hello && cat %s/hello")
      :format(c.paths.base, c.paths.app, c.name, c.paths.scratch, c.paths.scratch)
    local t = now()
    local out = ok(guest:sh(script))
    print(("  container %s ($ ls %s; cat ...; %s):"):format(c.name, c.paths.base, ms(now() - t)))
    for line in out:gmatch("[^\n]+") do print("    " .. line) end
    check(out:find("hello from the base layer", 1, true) and out:find("greeting=hi", 1, true)
      and out:find("container-" .. c.name, 1, true), "unexpected output in container %s", c.name)
    local refused, msg = guest:sh("echo x > " .. c.paths.app .. "/new")
    check(refused == nil and msg:find("Read-only", 1, true), "a layer accepted a write: %s", tostring(msg))
  end
  print("  $ grep /run/mounts /proc/mounts")
  local mounts = ok(guest:sh("grep /run/mounts /proc/mounts"))
  for line in mounts:gmatch("[^\n]+") do print("    " .. line) end
  local n = select(2, mounts:gsub("\n", ""))
  check(n == 4, "expected 4 mounts in the guest (2 shared layers, 2 scratch disks), found %d", n)

  -- Tear down: container a first (the layers stay mounted for b), then b.
  print("unmap:")
  for _, c in ipairs(containers) do
    for _, id in ipairs(c.ids) do ok(ctl:unmap_from_guest(id)) end
  end
  check(ctl:stats().used == 0, "slots still used: %s", tostring(ctl))
  check(ok(guest:sh("grep -c /run/mounts /proc/mounts || true")):match("^0") ~= nil, "mounts left in the guest")
  check(ok(guest:sh("ls /sys/bus/scsi/devices | grep -c : || true")):match("^0") ~= nil, "SCSI devices left")
  check(#ok(qemu.scsi_disks(vm:qmp())) == 0, "disks left in QEMU")
  ok(ctl:close())

  print(("timings (%s, %s):"):format(vm.accel, "per backend call"))
  print(("  %-12s %10s"):format("boot", ms(boot)))
  for _, step in ipairs(order) do
    local t = timings[step] or {}
    check(#t > 0, "no %s step was timed", step)
    table.sort(t)
    print(("  %-12s %10s median, %s min, %s max (%d calls)"):format(step, ms(t[(#t + 1) // 2]),
      ms(t[1]), ms(t[#t]), #t))
  end
  vm:stop()
  local log = vm:console()
  check(not log:find("Call Trace", 1, true), "the guest kernel logged a trace:\n%s", log)
end

local okr, err = xpcall(run, debug.traceback)
for i = #cleanup, 1, -1 do pcall(cleanup[i]) end
if not okr then
  io.stderr:write("linux_guest: FAILED: ", tostring(err), "\n")
  os.exit(1)
end
print("linux_guest: ok")
