-- Busted spec for encrypted scratch disks and dm-verity layers in a real
-- Linux guest (scsictl.qemu_guest over scsictl.qemu, spec §9): a controller
-- maps them, the guest sets up dm-crypt or dm-verity and mounts the mapping;
-- the host then looks at what reached the image files.
--
-- One guest for the file (spec/support/guest.lua: TCG unless
-- SCSICTL_QEMU_ACCEL says otherwise, the guest built by
-- scripts/build-guest.sh when missing). Verity layers come from
-- scripts/make-verity-layer.sh (veritysetup, Debian's cryptsetup-bin). If the
-- guest cannot be booted every test FAILS with the reason.
--
-- Each test releases its claims and checks that nothing is left: no mount,
-- no device-mapper mapping, no SCSI disk in the guest, no disk in QEMU.
-- What a closing note quotes goes to stderr: the plaintext search and the
-- messages of the flipped-byte and wrong-hash failures.

local root = debug.getinfo(1, "S").source:match("^@(.-)spec/[^/]*$") or ""
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. root .. "spec/?.lua;" .. package.path

local G = require("support.guest")
local value, gsh, shquote = G.value, G.gsh, G.shquote

local SCRATCH = { encrypted = true, ensure_filesystem = true }

local function note(fmt, ...)
  io.stderr:write(("guest_crypt_spec: " .. fmt .. "\n"):format(...))
end

-- How often `needle` occurs in the bytes of the file at path.
local function occurrences(path, needle)
  local data, n, at = G.read_file(path), 0, 1
  while true do
    local s = data:find(needle, at, true)
    if not s then return n, #data end
    n, at = n + 1, s + 1
  end
end

-- A marker unlikely to occur by chance, written many times so that a leak
-- of any block of the file would show.
local function marker()
  local p = io.open("/dev/urandom", "rb")
  local r = p:read(8)
  p:close()
  return "scsictl-plaintext-" .. r:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
end

local function write_marker(path, m)
  gsh(("m=%s; i=0; while [ $i -lt 512 ]; do echo \"$m $i\"; i=$((i + 1)); done > %s/marker.txt; sync")
    :format(shquote(m), path))
  assert.equal(m .. " 511", gsh("tail -n 1 " .. path .. "/marker.txt"):gsub("%s+$", ""))
end

-- A verity layer made on the host: ROOT_HASH and HASH_OFFSET as printed.
local function verity_layer(name, files)
  local src = G.tree(name .. ".d", files)
  local img = G.made(G.path_of(name))
  local out = G.sh(("sh %sscripts/make-verity-layer.sh %s %s 8"):format(root, shquote(src), shquote(img)))
  G.sh("rm -rf " .. shquote(src))
  local hash = out:match("ROOT_HASH=(%x+)")
  local offset = tonumber(out:match("HASH_OFFSET=(%d+)"))
  assert(hash and #hash == 64 and offset, "make-verity-layer.sh printed: " .. out)
  return img, hash, math.tointeger(offset)
end

local LAYER_DATA = {}
for i = 0, 511 do LAYER_DATA[#LAYER_DATA + 1] = ("verity-protected layer data %04d\n"):format(i) end
LAYER_DATA = table.concat(LAYER_DATA)

describe("encrypted scratch disks and dm-verity layers in a real Linux guest", function()
  setup(function() G.boot{ controllers = 2 } end)
  after_each(G.scrub)
  teardown(G.shutdown)

  it("an encrypted scratch disk: readable in the guest, no plaintext in the image; a new map is a new disk",
      function()
    G.need()
    local log = {}
    local ctl <close> = G.new_ctl(log)
    local m = marker()
    -- The control: the same marker on a plain scratch disk reaches its image.
    local plain = G.blank("plain-scratch.img", 16)
    local pid = value(ctl:reserve({ host_path = plain }, { ensure_filesystem = true }))
    write_marker(value(ctl:map_to_guest(pid)), m)
    value(ctl:unmap_from_guest(pid))
    local plain_hits = occurrences(plain, m)
    assert.is_true(plain_hits >= 512)

    local img = G.blank("crypt-scratch.img", 16)
    local id = value(ctl:reserve({ host_path = img }, SCRATCH))
    local path = value(ctl:map_to_guest(id))
    assert.equal("/run/mounts/scsi/0_0_0", path)
    write_marker(path, m)
    assert.matches("^/dev/dm%-%d+ /run/mounts/scsi/0_0_0$", G.guest_mounts()[1])
    assert.same({ "scsictl-c0-l0-p0 crypt" }, G.guest_mappings())
    -- The cipher; dmsetup shows the key only with --showkeys.
    assert.matches("crypt aes%-xts%-plain64 0+ 0 8:%d+ 0", gsh("dmsetup table scsictl-c0-l0-p0"))
    assert.equal(128, #gsh("dmsetup table --showkeys scsictl-c0-l0-p0"):match("plain64 (%x+)"))
    value(ctl:unmap_from_guest(id))
    assert.same({}, G.guest_mappings())
    local hits, size = occurrences(img, m)
    note("plaintext search: marker %q (512 lines of it, written and synced in the guest) found %d times in "
      .. "the %d bytes of the encrypted scratch image, %d times in the plain scratch image (the control)",
      m, hits, size, plain_hits)
    assert.equal(0, hits)
    assert.equal(16 * 1024 * 1024, size)

    -- Mapped again: a fresh key, so a fresh file system: the old file is gone.
    id = value(ctl:reserve({ host_path = img }, SCRATCH))
    path = value(ctl:map_to_guest(id))
    assert.equal("lost+found\n", gsh("ls " .. path))
    value(ctl:unmap_from_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
      "remove_scsi_device", "remove_scsi_disk" }, { table.unpack(G.names(log), 11, 15) })
    G.assert_clean(ctl)
  end)

  it("two claims on one encrypted partition share one mount and one mapping; the last release closes it",
      function()
    G.need()
    local log = {}
    local ctl <close> = G.new_ctl(log)
    local img = G.blank("shared-scratch.img", 16)
    local a = value(ctl:reserve({ host_path = img }, SCRATCH))
    local b = value(ctl:reserve({ host_path = img }, SCRATCH))
    local pa = value(ctl:map_to_guest(a))
    local pb = value(ctl:map_to_guest(b))
    assert.equal(pa, pb)
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, G.names(log))
    assert.same({ "scsictl-c0-l0-p0 crypt" }, G.guest_mappings())
    gsh("echo shared > " .. pa .. "/s.txt")
    value(ctl:unmap_from_guest(a))
    assert.equal(2, #log)                            -- still mounted for b
    assert.same({ "scsictl-c0-l0-p0 crypt" }, G.guest_mappings())
    assert.equal("shared\n", gsh("cat " .. pb .. "/s.txt"))
    value(ctl:unmap_from_guest(b))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
      "remove_scsi_device", "remove_scsi_disk" }, G.names(log))
    G.assert_clean(ctl)
  end)

  it("encrypted block_dev is a raw encrypted device; read-only or neither file system nor block_dev is refused",
      function()
    G.need()
    local ctl <close> = G.new_ctl({})
    local img = G.blank("crypt-raw.img", 8)
    local id = value(ctl:reserve({ host_path = img }, { encrypted = true, block_dev = true }))
    local path = value(ctl:map_to_guest(id))
    gsh("echo RAW-ENCRYPTED-BLOCK | dd of=" .. path .. " conv=fsync 2>/dev/null")
    assert.equal("RAW-ENCRYPTED-BLOCK", gsh("dd if=" .. path .. " bs=19 count=1 2>/dev/null"))
    assert.same({ "scsictl-c0-l0-p0 crypt" }, G.guest_mappings())
    value(ctl:unmap_from_guest(id))
    assert.equal(0, (occurrences(img, "RAW-ENCRYPTED-BLOCK")))
    G.assert_clean(ctl)

    for _, c in ipairs({
      { { encrypted = true, ensure_filesystem = true, read_only = true }, "not supported read%-only" },
      { { encrypted = true }, "encrypted disks are not supported without ensure_filesystem" },
    }) do
      local rid = value(ctl:reserve({ host_path = img }, c[1]))
      local ok, msg, code = ctl:map_to_guest(rid)
      assert.is_nil(ok)
      assert.equal("backend", code)
      assert.matches(c[2], msg)
      value(ctl:unmap_from_guest(rid))
    end
    G.release_all(ctl)
    G.assert_clean(ctl)
  end)

  it("re-issued mounts and unmounts that took effect succeed; eject closes a mapping of ours left behind",
      function()
    local vm, guest = G.need()
    local vmb = vm:vm_backend()
    value(vmb:add_scsi_disk({ path = G.blank("again-crypt.img", 16), type = "VirtualDisk", read_only = false }, 1, 2))
    local s = { mount_path = "/run/mounts/scsi/1_2_0", controller = 1, lun = 2, partition = 0,
      read_only = false, encrypted = true, options = {}, ensure_filesystem = true, filesystem = "ext4" }
    value(guest:add_mapped_virtual_disk(s))
    gsh("echo kept > /run/mounts/scsi/1_2_0/k.txt")
    value(guest:add_mapped_virtual_disk(s))          -- already mounted: success, same mapping and data
    assert.equal("kept\n", gsh("cat /run/mounts/scsi/1_2_0/k.txt"))
    assert.same({ "scsictl-c1-l2-p0 crypt" }, G.guest_mappings())
    value(guest:remove_mapped_virtual_disk(s))
    value(guest:remove_mapped_virtual_disk(s))       -- already gone: success
    assert.same({}, G.guest_mappings())

    -- A verity layer, mounted twice, and a mapping left without its mount
    -- (a run that died after dmsetup) taken up again.
    local img, hash = verity_layer("again-verity.img", { ["v.txt"] = "verity again\n" })
    value(vmb:add_scsi_disk({ path = img, type = "VirtualDisk", read_only = true }, 1, 3))
    local v = { mount_path = "/run/mounts/scsi/1_3_0", controller = 1, lun = 3, partition = 0,
      read_only = true, encrypted = false, options = {}, filesystem = "ext4",
      verity = { root_hash = hash, hash_offset = 0 } }
    value(guest:add_mapped_virtual_disk(v))
    value(guest:add_mapped_virtual_disk(v))
    assert.same({ "scsictl-c1-l3-p0 verity" }, G.guest_mappings())
    gsh("umount /run/mounts/scsi/1_3_0")
    value(guest:add_mapped_virtual_disk(v))
    assert.equal("verity again\n", gsh("cat /run/mounts/scsi/1_3_0/v.txt"))
    assert.same({ "scsictl-c1-l3-p0 verity" }, G.guest_mappings())
    -- The eject refuses while the mapping is mounted, naming it; after a
    -- umount that left the mapping open, it closes the mapping and ejects.
    local ok, msg = guest:remove_scsi_device({ controller = 1, lun = 3 })
    assert.is_nil(ok)
    assert.matches("/dev/dm%-%d+ %(device%-mapper mapping scsictl%-c1%-l3%-p0 over sd%a+%) is still mounted", msg)
    gsh("umount /run/mounts/scsi/1_3_0 && rmdir /run/mounts/scsi/1_3_0")
    value(guest:remove_scsi_device({ controller = 1, lun = 3 }))
    assert.same({}, G.guest_mappings())
    value(guest:remove_mapped_virtual_disk(v))       -- nothing there: success
    value(guest:remove_scsi_device({ controller = 1, lun = 2 }))
    value(vmb:remove_scsi_disk(1, 2))
    value(vmb:remove_scsi_disk(1, 3))
    G.assert_clean()
  end)

  it("a verity layer made by make-verity-layer.sh mounts read-only and reads; shared; with its explicit offset",
      function()
    local _, guest = G.need()
    local log = {}
    local ctl <close> = G.new_ctl(log)
    local img, hash, offset = verity_layer("layer.img", { ["data.txt"] = LAYER_DATA })
    local disk = { host_path = img, read_only = true }
    local mount = { read_only = true, verity = { root_hash = hash } }
    local a = value(ctl:reserve(disk, mount))
    local b = value(ctl:reserve(disk, mount))
    local path = value(ctl:map_to_guest(a))
    assert.equal(path, value(ctl:map_to_guest(b)))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk" }, G.names(log))
    assert.equal(LAYER_DATA, gsh("cat " .. path .. "/data.txt"))
    assert.matches("^/dev/dm%-%d+ ", G.guest_mounts()[1])
    assert.same({ "scsictl-c0-l0-p0 verity" }, G.guest_mappings())
    assert.matches(" verity V", gsh("dmsetup status scsictl-c0-l0-p0"))
    assert.matches("verity 1 8:%d+ 8:%d+ 4096 4096 %d+ %d+ sha256 " .. hash, gsh("dmsetup table scsictl-c0-l0-p0"))
    local out = guest:sh("touch " .. path .. "/new.txt")
    assert.is_nil(out)
    value(ctl:unmap_from_guest(a))
    assert.equal(LAYER_DATA, gsh("cat " .. path .. "/data.txt"))
    value(ctl:unmap_from_guest(b))
    G.assert_clean(ctl)

    local explicit = { read_only = true, verity = { root_hash = hash:upper(), hash_offset = offset } }
    local c = value(ctl:reserve(disk, explicit))
    path = value(ctl:map_to_guest(c))
    assert.equal(LAYER_DATA, gsh("cat " .. path .. "/data.txt"))
    value(ctl:unmap_from_guest(c))
    G.assert_clean(ctl)
  end)

  it("partitions of one disk: a verity layer on partition 1, an encrypted scratch on partition 2", function()
    G.need()
    local img, hash = verity_layer("p1-layer.img", { ["p1.txt"] = "layer on partition 1\n" })
    local layer = G.read_file(img)
    -- An MBR disk: partition 1 from 1 MiB holds the layer (file system and
    -- tree), partition 2 after it 8 MiB of zeros for the scratch.
    local start1, n1 = 2048, (#layer + 511) // 512
    local start2, n2 = start1 + n1 + 2048, 16384
    local disk = G.made(G.path_of("two-parts.img"))
    local f = assert(io.open(disk, "wb"))
    local function entry(start, n) return string.pack("<BBBBBBBBI4I4", 0, 0xfe, 0xff, 0xff, 0x83, 0xfe, 0xff, 0xff,
      start, n) end
    f:write(string.rep("\0", 446), entry(start1, n1), entry(start2, n2), string.rep("\0", 32), "\x55\xaa")
    f:seek("set", start1 * 512)
    f:write(layer)
    f:seek("set", (start2 + n2) * 512 - 1)
    f:write("\0")
    f:close()
    local ctl <close> = G.new_ctl({})
    local l = value(ctl:reserve({ host_path = disk },
      { partition = 1, read_only = true, verity = { root_hash = hash } }))
    local s = value(ctl:reserve({ host_path = disk }, { partition = 2, encrypted = true, ensure_filesystem = true }))
    local lp, sp = value(ctl:map_to_guest(l)), value(ctl:map_to_guest(s))
    assert.equal("layer on partition 1\n", gsh("cat " .. lp .. "/p1.txt"))
    gsh("echo scratch > " .. sp .. "/s.txt && sync")
    assert.same({ "scsictl-c0-l0-p1 verity", "scsictl-c0-l0-p2 crypt" }, G.guest_mappings())
    assert.matches("%(sd%a+1%)", gsh("dmsetup deps -o devname scsictl-c0-l0-p1"))
    assert.matches("%(sd%a+2%)", gsh("dmsetup deps -o devname scsictl-c0-l0-p2"))
    value(ctl:unmap_from_guest(l))
    assert.same({ "scsictl-c0-l0-p2 crypt" }, G.guest_mappings())
    value(ctl:unmap_from_guest(s))
    G.assert_clean(ctl)
  end)

  it("one byte flipped in a file's data: the read fails and dm-verity reports it; nothing is left", function()
    local _, guest = G.need()
    local ctl <close> = G.new_ctl({})
    local img, hash, offset = verity_layer("good.img", { ["data.txt"] = LAYER_DATA })
    local data = G.read_file(img)
    local at = assert(data:find("layer data 0300", 1, true), "the file's data is not in the image")
    assert.is_true(at < offset)
    local bad = G.made(G.path_of("flipped.img"))
    local f = assert(io.open(bad, "wb"))
    f:write(data:sub(1, at - 1), string.char(data:byte(at) ~ 1), data:sub(at + 1))
    f:close()

    local id = value(ctl:reserve({ host_path = bad, read_only = true },
      { read_only = true, verity = { root_hash = hash } }))
    local path, msg = ctl:map_to_guest(id)
    if path then
      -- The superblock and the directory pass their checks; the file's
      -- block does not: the read fails and dm-verity marks the mapping.
      local out, err = guest:sh("cat " .. path .. "/data.txt >/dev/null")
      assert.is_nil(out)
      assert.matches("Input/output error", err)
      assert.matches(" verity C", gsh("dmsetup status scsictl-c0-l0-p0"))
      local klog = gsh("dmesg | grep 'device-mapper: verity' | tail -n 1"):gsub("%s+$", "")
      assert.matches("device%-mapper: verity: 8:%d+: data block %d+ is corrupted", klog)
      note("flipped byte at %d of %s: the map succeeded; the read failed: %s; kernel: %s", at - 1, bad,
        err, klog:gsub("^%[[^%]]*%] ", ""))
    else
      assert.matches("dm%-verity", msg)
      note("flipped byte at %d of %s: the map failed: %s", at - 1, bad, msg)
    end
    value(ctl:unmap_from_guest(id))
    G.assert_clean(ctl)
  end)

  it("a wrong root hash fails the map with a dm-verity message; nothing is left", function()
    G.need()
    local log = {}
    local ctl <close> = G.new_ctl(log)
    local img, hash = verity_layer("wrong.img", { ["data.txt"] = LAYER_DATA })
    local wrong = (hash:sub(1, 1) == "0" and "1" or "0") .. hash:sub(2)
    local id = value(ctl:reserve({ host_path = img, read_only = true },
      { read_only = true, verity = { root_hash = wrong } }))
    local ok, msg, code = ctl:map_to_guest(id)
    assert.is_nil(ok)
    assert.equal("backend", code)
    assert.matches("dm%-verity: /dev/sd%a+ failed verification against root hash " .. wrong:sub(1, 16), msg)
    note("wrong root hash: %s", msg)
    -- The failed mount took its mapping and directory away again.
    assert.same({}, G.guest_mappings())
    assert.same({}, G.guest_mounts())
    value(ctl:unmap_from_guest(id))
    G.assert_clean(ctl)

    -- A layer without a hash tree: no verity superblock where it should be.
    local plain = G.ext4("no-tree.img", { ["x.txt"] = "x\n" })
    id = value(ctl:reserve({ host_path = plain, read_only = true },
      { read_only = true, verity = { root_hash = hash } }))
    ok, msg = ctl:map_to_guest(id)
    assert.is_nil(ok)
    assert.matches("dm%-verity: no verity superblock at byte %d+ of /dev/sd%a+", msg)
    value(ctl:unmap_from_guest(id))
    G.assert_clean(ctl)
  end)
end)
