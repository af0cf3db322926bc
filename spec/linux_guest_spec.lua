-- Busted spec for scsictl.qemu_guest: the whole path against a real Linux
-- guest — controller, QEMU hot-plug, mount inside the guest, read the data,
-- unmount, eject, hot-remove.
--
-- One guest is booted for the whole file (spec/support/guest.lua:
-- scsictl.qemu_guest.launch, TCG unless SCSICTL_QEMU_ACCEL says otherwise).
-- Its kernel and initramfs come from scripts/build-guest.sh, run here into
-- $SCSICTL_GUEST_DIR or build/guest when missing. Needs qemu-system-x86,
-- e2fsprogs (mkfs.ext4 -d makes the images on the host, no host mount),
-- lua-luv, lua-cjson, and apt access for the first build. If the guest cannot be built or booted,
-- every test FAILS with the reason: nothing here passes without a guest.
--
-- Every test ends by releasing its claims and checking that nothing is left:
-- no scsictl mount in the guest's /proc/mounts, no SCSI disk under
-- /sys/bus/scsi/devices, no SCSI disk in QEMU's query-block.

local root = debug.getinfo(1, "S").source:match("^@(.-)spec/[^/]*$") or ""
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. root .. "spec/?.lua;" .. package.path

local scsictl = require("scsictl")
local G = require("support.guest")
local okq, qemu_guest = pcall(require, "scsictl.qemu_guest")
local qemu = okq and require("scsictl.qemu") or nil
local loop = okq and require("scsictl.loop") or nil

local CONTROLLERS = 2

-- The guest's boot and helpers are support/guest.lua's.
local value, gsh, path_of, blank, ext4 = G.value, G.gsh, G.path_of, G.blank, G.ext4
local names, release_all = G.names, G.release_all
local guest_mounts, guest_scsi_disks, qemu_disks, qemu_nodes = G.guest_mounts, G.guest_scsi_disks, G.qemu_disks,
  G.qemu_nodes

---------------------------------------------------------------------------
-- The guest (booted once).

local vm, guest

local function need_guest()
  vm, guest = G.need()
  return vm, guest
end

---------------------------------------------------------------------------
-- Images (made on the host, never mounted there).

-- A disk with an MBR partition table (written here) whose partition 1
-- (from 1 MiB) holds an ext4 file system made by mkfs.ext4 -d.
local function partitioned(name, files)
  local data = G.read_file(ext4(name .. ".p1", files, 8))
  local start = 2048                       -- sectors of 512 bytes
  local sectors = #data // 512
  local path = G.made(path_of(name))
  local out = assert(io.open(path, "wb"))
  local mbr = string.rep("\0", 446)
    .. string.pack("<BBBBBBBBI4I4", 0, 0xfe, 0xff, 0xff, 0x83, 0xfe, 0xff, 0xff, start, sectors)
    .. string.rep("\0", 48) .. "\x55\xaa"
  assert(#mbr == 512)
  out:write(mbr)
  out:seek("set", start * 512)
  out:write(data)
  out:seek("set", (start + sectors + 2048) * 512 - 1)
  out:write("\0")
  out:close()
  return path
end

---------------------------------------------------------------------------
-- Controllers with logging backends (G.logged), whose remove_scsi_disk
-- also records whether the guest still had the SCSI device when the
-- hot-remove began (guest_had_device).

local function new_ctl(log, controllers, luns)
  return G.new_ctl(log, controllers, luns, { guest_had_device = true })
end

---------------------------------------------------------------------------
-- What is left: no claim, no scsictl mount, no SCSI disk in the guest or
-- in QEMU, no scsictl block node (device-mapper mappings are
-- guest_crypt_spec.lua's to check).

local function assert_clean(ctl)
  G.assert_clean(ctl, { mappings = false })
end

---------------------------------------------------------------------------

describe("scsictl.qemu_guest (a real Linux guest)", function()
  setup(function() G.boot{ controllers = CONTROLLERS } end)
  after_each(G.scrub)
  teardown(G.shutdown)

  it("boots a guest whose agent runs commands and reports their failures with stderr", function()
    need_guest()
    assert.is_true(vm.accel == "tcg" or vm.accel == "kvm")
    assert.is_number(vm.boot_seconds)
    assert.matches("^%d+%.%d+", gsh("uname -r"))
    local out, msg = guest:sh("echo to-stderr >&2; exit 7")
    assert.is_nil(out)
    assert.matches("exit status 7: to%-stderr", msg)
    local r = value(guest:exec("/bin/echo", { "a", "b c" }))
    assert.same({ 0, "a b c\n", "" }, { r.exitcode, r.out, r.err })
    -- The controllers' PCI addresses, from the launcher's fixed layout and
    -- from QEMU (query-pci), agree; the guest has one SCSI host on each.
    local asked = qemu_guest.linux_guest{ agent = guest:agent(), qmp = vm:qmp() }
    local via_backend = qemu_guest.linux_guest{ agent = guest:agent(), qmp = vm:vm_backend() }
    for c = 0, CONTROLLERS - 1 do
      assert.equal(vm:pci_address(c), value(asked:pci_address(c)))
      assert.equal(vm:pci_address(c), value(via_backend:pci_address(c)))
      assert.matches("/host%d+/", gsh("for h in /sys/class/scsi_host/host*; do readlink -f $h; done | grep /"
        .. vm:pci_address(c) .. "/"))
    end
    assert_clean()
  end)

  it("maps an ext4 image made on the host and reads its file in the guest at the returned path", function()
    need_guest()
    local img = ext4("hello.img", { ["hello.txt"] = "hello from the host\n" })
    local log = {}
    local ctl <close> = new_ctl(log)
    local id = value(ctl:reserve({ host_path = img }, { filesystem = "ext4" }))
    local path = value(ctl:map_to_guest(id))
    assert.equal("/run/mounts/scsi/0_0_0", path)
    assert.equal("hello from the host\n", gsh("cat " .. path .. "/hello.txt"))
    local mounts = guest_mounts()
    assert.equal(1, #mounts)
    assert.matches("^/dev/sd%a+ /run/mounts/scsi/0_0_0$", mounts[1])
    assert.same({ ("scsictl-disk-c0-l0 scsi0.0 lun 0") }, qemu_disks())
    value(ctl:unmap_from_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
      "remove_scsi_device", "remove_scsi_disk" }, names(log))
    assert_clean(ctl)
  end)

  it("mounts partition 1 of a partitioned disk", function()
    need_guest()
    local img = partitioned("parted.img", { ["p1.txt"] = "partition one\n" })
    local ctl <close> = new_ctl({})
    local id = value(ctl:reserve({ host_path = img }, { partition = 1 }))
    local path = value(ctl:map_to_guest(id))
    assert.equal("/run/mounts/scsi/0_0_1", path)
    assert.equal("partition one\n", gsh("cat " .. path .. "/p1.txt"))
    assert.matches("^/dev/sd%a+1 /run/mounts/scsi/0_0_1$", guest_mounts()[1])
    -- Partition 2 does not exist: a clear failure, then a clean release.
    local id2 = value(ctl:reserve({ host_path = img }, { partition = 2 }))
    local ok, msg, code = ctl:map_to_guest(id2)
    assert.is_nil(ok)
    assert.equal("backend", code)
    assert.matches("has no partition 2", msg)
    value(ctl:unmap_from_guest(id2))
    value(ctl:unmap_from_guest(id))
    assert_clean(ctl)
  end)

  it("enforces read_only in the guest: reads work, writes fail", function()
    need_guest()
    local img = ext4("ro.img", { ["data.txt"] = "read me\n" })
    local ctl <close> = new_ctl({})
    -- A writable disk mounted read-only, and a read-only disk (read-only in
    -- QEMU too) mounted read-only.
    local id = value(ctl:reserve({ host_path = img }, { read_only = true }))
    local path = value(ctl:map_to_guest(id))
    assert.equal("read me\n", gsh("cat " .. path .. "/data.txt"))
    local out, msg = guest:sh("echo x > " .. path .. "/new.txt")
    assert.is_nil(out)
    assert.matches("[Rr]ead%-only file system", msg)
    assert.matches("ro[,%s]", gsh("grep ' " .. path .. " ' /proc/mounts"))
    value(ctl:unmap_from_guest(id))

    local id2 = value(ctl:reserve({ host_path = img, read_only = true }, { read_only = true }))
    path = value(ctl:map_to_guest(id2))
    assert.is_true(value(qemu.scsi_disks(vm:qmp()))[1].ro)
    assert.equal("read me\n", gsh("cat " .. path .. "/data.txt"))
    out = guest:sh("touch " .. path .. "/new.txt")
    assert.is_nil(out)
    value(ctl:unmap_from_guest(id2))
    assert_clean(ctl)
  end)

  it("shares one mount between two reservations", function()
    need_guest()
    local img = ext4("shared.img", { ["layer.txt"] = "shared layer\n" })
    local log = {}
    local ctl <close> = new_ctl(log)
    local a = value(ctl:reserve({ host_path = img }))
    local b = value(ctl:reserve({ host_path = img }))
    local pa = value(ctl:map_to_guest(a))
    local pb = value(ctl:map_to_guest(b))
    assert.equal(pa, pb)
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, names(log))
    value(ctl:unmap_from_guest(a))
    assert.equal(2, #log)                        -- still mounted for b
    assert.equal("shared layer\n", gsh("cat " .. pb .. "/layer.txt"))
    value(ctl:unmap_from_guest(b))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
      "remove_scsi_device", "remove_scsi_disk" }, names(log))
    assert_clean(ctl)
  end)

  it("maps disks on two controllers, each to its own guest SCSI host", function()
    need_guest()
    local ctl <close> = new_ctl({}, 2, 1)
    local ids, paths = {}, {}
    for i = 1, 2 do
      local img = ext4(("ctl%d.img"):format(i), { ["who.txt"] = ("disk %d\n"):format(i) })
      ids[i] = value(ctl:reserve({ host_path = img }))
      paths[i] = value(ctl:map_to_guest(ids[i]))
    end
    assert.same({ "/run/mounts/scsi/0_0_0", "/run/mounts/scsi/1_0_0" }, paths)
    assert.equal("disk 1\n", gsh("cat " .. paths[1] .. "/who.txt"))
    assert.equal("disk 2\n", gsh("cat " .. paths[2] .. "/who.txt"))
    assert.same({ "scsictl-disk-c0-l0 scsi0.0 lun 0", "scsictl-disk-c1-l0 scsi1.0 lun 0" }, qemu_disks())
    -- The two disks sit on two different SCSI hosts in the guest.
    local disks = guest_scsi_disks()
    assert.equal(2, #disks)
    assert.are_not.equal(disks[1]:match("^%d+"), disks[2]:match("^%d+"))
    for i = 1, 2 do value(ctl:unmap_from_guest(ids[i])) end
    assert_clean(ctl)
  end)

  it("ensure_filesystem formats a blank disk once; the data survives a remap", function()
    need_guest()
    local img = blank("blank-ensure.img", 16)
    local ctl <close> = new_ctl({})
    local mount = { ensure_filesystem = true, filesystem = "ext4" }
    local id = value(ctl:reserve({ host_path = img }, mount))
    local path = value(ctl:map_to_guest(id))
    assert.matches(" ext4 ", gsh("grep ' " .. path .. " ' /proc/mounts"))
    gsh("echo kept > " .. path .. "/kept.txt")
    value(ctl:unmap_from_guest(id))
    assert_clean(ctl)
    id = value(ctl:reserve({ host_path = img }, mount))
    path = value(ctl:map_to_guest(id))
    assert.equal("kept\n", gsh("cat " .. path .. "/kept.txt"))
    value(ctl:unmap_from_guest(id))
    assert_clean(ctl)
  end)

  it("a mount failure (no file system) then unmap leaves nothing in the guest or QEMU", function()
    need_guest()
    local img = blank("blank-fail.img", 8)
    local log = {}
    local ctl <close> = new_ctl(log)
    local id = value(ctl:reserve({ host_path = img }, { filesystem = "ext4" }))
    local ok, msg, code = ctl:map_to_guest(id)
    assert.is_nil(ok)
    assert.equal("backend", code)
    -- The guest's mount error, with context.
    assert.matches("add_mapped_virtual_disk failed", msg)
    assert.matches("mount: mounting /dev/sd%a+ on /run/mounts/scsi/0_0_0 failed", msg)
    assert.same({}, guest_mounts())
    assert.equal(1, #guest_scsi_disks())          -- the disk is still attached
    value(ctl:unmap_from_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_scsi_device", "remove_scsi_disk" },
      names(log))
    assert.is_false(log[2].ok)
    assert_clean(ctl)
    -- Nothing at all in query-block either (no SCSI disk, no scsictl node).
    for _, b in ipairs(value(vm:qmp():execute("query-block"))) do
      assert.is_nil(tostring(b.qdev or ""):find("scsictl"))
    end
  end)

  it("ejects in the guest before the hot-remove", function()
    need_guest()
    local img = ext4("order.img", { ["f"] = "x" })
    local log = {}
    local ctl <close> = new_ctl(log, 2, 4)
    local held = value(ctl:reserve({ host_path = img }))
    value(ctl:map_to_guest(held))
    local disk = guest_scsi_disks()[1]
    value(ctl:unmap_from_guest(held))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
      "remove_scsi_device", "remove_scsi_disk" }, names(log))
    local eject, remove = log[4], log[5]
    assert.is_true(eject.ok and remove.ok)
    assert.same({ controller = 0, lun = 0 }, eject[2])
    assert.is_true(eject.t <= remove.t)
    -- When QEMU's hot-remove began, the guest had already let the device go.
    assert.is_false(remove.guest_had_device)
    assert.is_string(disk)
    assert_clean(ctl)
  end)

  it("re-issued guest steps that already took effect succeed (spec §8)", function()
    need_guest()
    local img = ext4("again.img", { ["a.txt"] = "again\n" })
    local vmb = vm:vm_backend()
    value(vmb:add_scsi_disk({ path = img, type = "VirtualDisk", read_only = false }, 1, 2))
    local s = { mount_path = "/run/mounts/scsi/1_2_0", controller = 1, lun = 2, partition = 0,
      read_only = false, encrypted = false, options = { "noatime" }, ensure_filesystem = false,
      filesystem = "ext4", block_dev = false }
    value(guest:add_mapped_virtual_disk(s))
    value(guest:add_mapped_virtual_disk(s))          -- already mounted: success
    assert.equal(1, #guest_mounts())
    assert.matches("noatime", gsh("grep ' /run/mounts/scsi/1_2_0 ' /proc/mounts"))
    -- Another device at the same path is refused.
    local other = { mount_path = s.mount_path, controller = 0, lun = 3, partition = 0, options = {} }
    value(vmb:add_scsi_disk({ path = ext4("other.img", { o = "o" }), type = "VirtualDisk", read_only = false }, 0, 3))
    local ok, msg = guest:add_mapped_virtual_disk(other)
    assert.is_nil(ok)
    assert.matches("already has something else mounted", msg)
    value(guest:remove_mapped_virtual_disk(s))
    value(guest:remove_mapped_virtual_disk(s))       -- already gone: success
    for _, d in ipairs({ { controller = 1, lun = 2 }, { controller = 0, lun = 3 } }) do
      value(guest:remove_scsi_device(d))
      value(guest:remove_scsi_device(d))             -- already gone: success
      value(vmb:remove_scsi_disk(d.controller, d.lun))
    end
    assert_clean()
  end)

  it("refuses to eject a disk while it, a partition or its device node is mounted; unmount takes stacked mounts",
      function()
    need_guest()
    local vmb = vm:vm_backend()
    value(vmb:add_scsi_disk({ path = partitioned("busy.img", { ["p1.txt"] = "p1\n" }),
      type = "VirtualDisk", read_only = false }, 0, 4))
    local d = { controller = 0, lun = 4 }
    local base = { controller = 0, lun = 4, options = {}, filesystem = "ext4" }
    local function settings(t)
      local r = {}
      for k, v in pairs(base) do r[k] = v end
      for k, v in pairs(t) do r[k] = v end
      return r
    end
    local cases = {
      { settings{ mount_path = "/run/mounts/busy-p1", partition = 1 }, "1 is still mounted" },
      { settings{ mount_path = "/run/mounts/busy-node", partition = 0, block_dev = true }, " is still mounted" },
    }
    for _, c in ipairs(cases) do
      value(guest:add_mapped_virtual_disk(c[1]))
      local ok, msg = guest:remove_scsi_device(d)
      assert.is_nil(ok)
      assert.matches("/dev/sd%a+" .. c[2], msg)
      value(guest:remove_mapped_virtual_disk(c[1]))
    end
    -- Two mounts stacked on one path: one unmount takes both.
    local s = cases[1][1]
    value(guest:add_mapped_virtual_disk(s))
    gsh("mount -t tmpfs tmpfs " .. s.mount_path)
    value(guest:remove_mapped_virtual_disk(s))
    assert.equal("gone", gsh("[ -e " .. s.mount_path .. " ] || echo gone"):gsub("%s+$", ""))
    value(guest:remove_scsi_device(d))
    value(vmb:remove_scsi_disk(0, 4))
    assert_clean()
  end)

  it("block_dev exposes the device node at the mount path; encrypted needs a file system or block_dev", function()
    need_guest()
    local img = blank("raw.img", 8)
    local f = assert(io.open(img, "r+b"))
    f:write("RAW-DISK-MARKER")
    f:close()
    local ctl <close> = new_ctl({})
    local id = value(ctl:reserve({ host_path = img }, { block_dev = true, read_only = true }))
    local path = value(ctl:map_to_guest(id))
    assert.equal("RAW-DISK-MARKER", gsh("dd if=" .. path .. " bs=15 count=1 2>/dev/null"))
    local out = guest:sh("echo x | dd of=" .. path .. " 2>&1")
    assert.is_nil(out)                               -- read-only bind
    value(ctl:unmap_from_guest(id))
    assert_clean(ctl)

    local enc = value(ctl:reserve({ host_path = img }, { encrypted = true }))
    local ok, msg, code = ctl:map_to_guest(enc)
    assert.is_nil(ok)
    assert.equal("backend", code)
    assert.matches("encrypted disks are not supported without ensure_filesystem", msg)
    value(ctl:unmap_from_guest(enc))
    release_all(ctl)
    assert_clean(ctl)
  end)

  -------------------------------------------------------------------------
  -- Many disks at once (scsictl.loop): one task per operation.

  it("16 concurrent maps where one image is missing: that one fails alone, the other 15 map", function()
    need_guest()
    local ctl <close> = new_ctl({}, CONTROLLERS, 8)
    local ids, paths, errs = {}, {}, {}
    for i = 1, 16 do
      local img = i == 7 and path_of("missing.img") or ext4(("many%02d.img"):format(i), { ["n.txt"] = i .. "\n" })
      ids[i] = value(ctl:reserve({ host_path = img, read_only = true }, { read_only = true }))
    end
    loop.run(function()
      local tasks = {}
      for i = 1, 16 do tasks[i] = loop.spawn({ timeout = 60 }, ctl.map_to_guest, ctl, ids[i]) end
      for i = 1, 16 do
        local path, msg, code = tasks[i]:join()
        paths[i], errs[i] = path, { msg, code }
      end
    end)
    assert.is_nil(paths[7])
    assert.equal("backend", errs[7][2])
    assert.matches("missing%.img", errs[7][1])
    local script = {}
    for i = 1, 16 do
      if i ~= 7 then
        assert(paths[i], ("disk %d: %s"):format(i, tostring(errs[i][1])))
        script[#script + 1] = "cat " .. paths[i] .. "/n.txt"
      end
    end
    local want = {}
    for i = 1, 16 do if i ~= 7 then want[#want + 1] = tostring(i) end end
    assert.equal(table.concat(want, "\n") .. "\n", gsh(table.concat(script, "; ")))
    assert.equal(16, ctl:stats().used)              -- the failed one's reservation holds its slot
    loop.run(function()
      local tasks = {}
      for i = 1, 16 do tasks[i] = loop.spawn(ctl.unmap_from_guest, ctl, ids[i]) end
      for i = 1, 16 do value(tasks[i]:join()) end
    end)
    assert_clean(ctl)
  end)

  it("a deadline that expires during the guest mount (QEMU paused) fails the map; a retry converges", function()
    need_guest()
    local log = {}
    local ctl <close> = new_ctl(log)
    local img = ext4("deadline.img", { ["d.txt"] = "deadline\n" })
    local id = value(ctl:reserve({ host_path = img }, {}))
    local q = vm:qmp()
    -- The guest stops just as its mount begins: the agent's answer cannot come.
    local real = guest.add_mapped_virtual_disk
    local paused = false
    guest.add_mapped_virtual_disk = function(self, settings)
      value(q:execute("stop"))
      paused = true
      return real(self, settings)
    end
    local ok, msg, code = loop.run(function()
      return loop.spawn({ timeout = 1.5 }, ctl.map_to_guest, ctl, id):join()
    end)
    guest.add_mapped_virtual_disk = nil
    assert.is_true(paused)
    value(q:execute("cont"))
    assert.is_nil(ok)
    assert.equal("backend", code)
    assert.matches("deadline exceeded", msg)
    assert.matches("mount", msg)
    -- QEMU runs again; the guest may still carry out the abandoned mount.
    -- The retry converges whichever comes first.
    -- The re-issued mount and the abandoned one take turns on the path's
    -- lock file, and each removes it when done.
    local path = value(ctl:map_to_guest(id))
    assert.equal("", gsh("ls -A /run/scsictl-locks"))
    assert.equal("deadline\n", gsh("cat " .. path .. "/d.txt"))
    assert.equal(1, #guest_mounts())
    value(ctl:unmap_from_guest(id))
    assert_clean(ctl)
  end)

  it("a step waits for the lock of its mount path; a lock whose holder died is taken over", function()
    need_guest()
    local vmb = vm:vm_backend()
    value(vmb:add_scsi_disk({ path = ext4("lock.img", { l = "l" }), type = "VirtualDisk", read_only = false }, 0, 6))
    local quick = qemu_guest.linux_guest{ agent = value(guest:agent()), pci = vm:pci_addresses(), timeout = 2 }
    local s = { mount_path = "/run/mounts/locked", controller = 0, lun = 6, partition = 0, options = {},
      filesystem = "ext4" }
    local lockfile = "/run/scsictl-locks/%run%mounts%locked"
    -- Held by a live process (a guest sleep standing in for a step that
    -- does not end): the mount waits, then fails saying so.
    gsh("mkdir -p /run/scsictl-locks; sleep 30 </dev/null >/dev/null 2>&1 & echo $! > " .. lockfile)
    local ok, msg = quick:add_mapped_virtual_disk(s)
    assert.is_nil(ok)
    assert.matches("/run/mounts/locked is locked by another scsictl step %(pid %d+%) that did not end", msg)
    assert.same({}, guest_mounts())
    -- Its holder killed without removing it: taken over.
    gsh("kill $(cat " .. lockfile .. ")")
    value(quick:add_mapped_virtual_disk(s))
    assert.equal(1, #guest_mounts())
    value(quick:remove_mapped_virtual_disk(s))
    assert.equal("", gsh("ls -A /run/scsictl-locks"))
    -- An eject takes its slot's lock the same way: it waits for a live
    -- holder (an eject that outlived its host agent), then takes it over.
    local slotlock = "/run/scsictl-locks/%run%mounts%scsi%0_6"
    gsh("sleep 30 </dev/null >/dev/null 2>&1 & echo $! > " .. slotlock)
    ok, msg = quick:remove_scsi_device({ controller = 0, lun = 6 })
    assert.is_nil(ok)
    assert.matches("/run/mounts/scsi/0_6 is locked by another scsictl eject %(pid %d+%) that did not end", msg)
    value(guest:device(0, 6))                     -- not ejected
    gsh("kill $(cat " .. slotlock .. ")")
    value(guest:remove_scsi_device({ controller = 0, lun = 6 }))
    assert.equal("", gsh("ls -A /run/scsictl-locks"))
    value(vmb:remove_scsi_disk(0, 6))
    assert_clean()
  end)

  it("cancelling an unmap while the hot-remove waits for DEVICE_DELETED; the next unmap converges", function()
    need_guest()
    local ctl <close> = new_ctl({})
    local id = value(ctl:reserve({ host_path = ext4("cancel.img", { c = "c" }) }, {}))
    value(ctl:map_to_guest(id))
    -- Cancel the moment QEMU has accepted device_del: the backend is then
    -- waiting for DEVICE_DELETED (QEMU sends it some 50 ms later).
    local q = vm:qmp()
    local task
    q.execute = function(self, command, ...)
      local r = table.pack(getmetatable(self).execute(self, command, ...))
      if command == "device_del" and task then task:cancel("the container went away") end
      return table.unpack(r, 1, r.n)
    end
    local ok, msg, code = loop.run(function()
      task = loop.spawn(ctl.unmap_from_guest, ctl, id)
      return task:join()
    end)
    q.execute = nil
    assert.is_nil(ok)
    assert.equal("backend", code)
    assert.matches("device_del '[^']+': waiting for DEVICE_DELETED: cancelled %(the container went away%)", msg)
    assert.equal(1, ctl:stats().used)
    value(ctl:unmap_from_guest(id))
    assert_clean(ctl)
  end)

  it("a map cancelled between blockdev-add and device_add leaves no block node; a retry converges", function()
    need_guest()
    local ctl <close> = new_ctl({})
    local id = value(ctl:reserve({ host_path = ext4("undo.img", { ["u.txt"] = "undo\n" }) }, {}))
    local q = vm:qmp()
    local task
    q.execute = function(self, command, ...)
      local r = table.pack(getmetatable(self).execute(self, command, ...))
      if command == "blockdev-add" and task then task:cancel("changed my mind") end
      return table.unpack(r, 1, r.n)
    end
    local ok, msg, code = loop.run(function()
      task = loop.spawn(ctl.map_to_guest, ctl, id)
      return task:join()
    end)
    q.execute = nil
    assert.is_nil(ok)
    assert.equal("backend", code)
    assert.matches("cancelled %(changed my mind%)", msg)
    -- The node went in, its device never did: the backend deletes the node
    -- in the background (a loop task), within its grace period.
    local deadline = loop.now() + 5
    while #qemu_nodes() > 0 and loop.now() < deadline do loop.sleep(0.02) end
    assert.same({}, qemu_nodes())
    local path = value(ctl:map_to_guest(id))
    assert.equal("undo\n", gsh("cat " .. path .. "/u.txt"))
    value(ctl:unmap_from_guest(id))
    assert_clean(ctl)
  end)

  it("a hot-remove retried right after one that timed out converges on the first retry", function()
    need_guest()
    local vmb = vm:vm_backend()
    local img = ext4("retry.img", { r = "r" })
    value(vmb:add_scsi_disk({ path = img, type = "VirtualDisk", read_only = false }, 1, 5))
    -- 5 ms is too short for QEMU's unplug (DEVICE_DELETED comes ~50 ms later).
    local hasty = vm:vm_backend{ timeout = 0.005 }
    local ok, msg = hasty:remove_scsi_disk(1, 5)
    assert.is_nil(ok)
    assert.matches("waiting for DEVICE_DELETED: no answer within", msg)
    -- At once, with time to spare: device_del finds the unplug under way
    -- or done, and blockdev-del waits while QEMU still holds the node.
    value(vmb:remove_scsi_disk(1, 5))
    assert_clean()
  end)

  it("QEMU killed with 8 operations in flight: all fail promptly and clearly; a new VM works after", function()
    need_guest()
    local vm2, guest2 = qemu_guest.launch{ controllers = 2, timeout = 30 }
    assert(vm2, guest2)
    local ctl2 <close> = scsictl.new{ controllers = 2, luns_per_controller = 8,
      vm = vm2:vm_backend(), linux_guest = guest2 }
    local ids = {}
    for i = 1, 8 do
      ids[i] = value(ctl2:reserve({ host_path = ext4(("kill%d.img"):format(i), { k = "k" }) }, {}))
    end
    local results, t0, t1 = {}, nil, nil
    loop.run(function()
      local tasks = {}
      for i = 1, 8 do tasks[i] = loop.spawn(ctl2.map_to_guest, ctl2, ids[i]) end
      loop.sleep(0.05)                         -- the operations are under way
      t0 = loop.now()
      assert.is_true(vm2:kill("KILL"))
      for i = 1, 8 do results[i] = table.pack(tasks[i]:join()) end
      t1 = loop.now()
    end)
    local failed = 0
    for i = 1, 8 do
      local r = results[i]
      if r[1] == nil then
        failed = failed + 1
        assert.equal("backend", r[3])
        assert.matches("QEMU exited %(pid %d+, killed by signal 9%)", r[2])
      end
    end
    assert.is_true(failed >= 1)
    assert.is_true(t1 - t0 < 5, ("the operations took %.1f s to fail"):format(t1 - t0))
    vm2:stop()
    -- A new VM in the same process: boots and maps.
    local vm3, guest3 = qemu_guest.launch{ controllers = 1, timeout = 30 }
    assert(vm3, guest3)
    local ctl3 <close> = scsictl.new{ controllers = 1, vm = vm3:vm_backend(), linux_guest = guest3 }
    local id = value(ctl3:reserve({ host_path = ext4("after.img", { ["a.txt"] = "after\n" }) }, {}))
    local path = value(ctl3:map_to_guest(id))
    assert.equal("after\n", value(guest3:sh("cat " .. path .. "/a.txt")))
    value(ctl3:unmap_from_guest(id))
    vm3:stop()
  end)
end)
