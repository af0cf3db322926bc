-- mount.verity (spec §2, §9): a dm-verity description of a read-only layer,
-- part of the mount's identity, handed to the guest's mount and unmount.
local H = require("helper")
local scsictl = H.scsictl

local HASH = ("0123456789abcdef"):rep(4)
local LAYER = { host_path = "/img/layer.vhdx", read_only = true }

local function verity(root_hash, hash_offset)
  return { read_only = true, verity = { root_hash = root_hash, hash_offset = hash_offset } }
end

describe("mount.verity", function()
  local ctl, R
  before_each(function() ctl, R = H.new_ctl{ controllers = 1, luns = 4 } end)

  it("reaches the mount and unmount settings, the root hash in lowercase", function()
    local id = H.value(ctl:reserve(LAYER, verity(HASH:upper(), 8192)))
    H.value(ctl:map_to_guest(id))
    H.value(ctl:unmap_from_guest(id))
    assert.same({ "add_scsi_disk", "add_mapped_virtual_disk", "remove_mapped_virtual_disk",
                  "remove_scsi_device", "remove_scsi_disk" }, H.pluck(R.log, 1))
    for _, k in ipairs{ 2, 3 } do
      assert.same({ root_hash = HASH, hash_offset = 8192 }, R.log[k][2].verity)
    end
  end)

  it("defaults hash_offset to 0 (the tree right after the file system) and is absent without verity", function()
    local a = H.value(ctl:reserve(LAYER, verity(HASH)))
    local b = H.value(ctl:reserve({ host_path = "/img/plain" }))
    H.value(ctl:map_to_guest(a))
    H.value(ctl:map_to_guest(b))
    assert.same({ root_hash = HASH, hash_offset = 0 }, R.log[2][2].verity)
    assert.is_nil(R.log[4][2].verity)
  end)

  it("is part of the mount's identity", function()
    H.value(ctl:reserve(LAYER, verity(HASH)))
    H.value(ctl:reserve(LAYER, verity(HASH:upper(), 0)))
    H.fails("config_mismatch", ctl:reserve(LAYER, verity(("f"):rep(64))))
    H.fails("config_mismatch", ctl:reserve(LAYER, verity(HASH, 512)))
    H.fails("config_mismatch", ctl:reserve(LAYER, { read_only = true }))
    -- another partition of the same disk may carry another tree
    H.value(ctl:reserve(LAYER, { partition = 1, read_only = true, verity = { root_hash = ("e"):rep(64) } }))
  end)

  it("survives save and import", function()
    local id = H.value(ctl:reserve(LAYER, verity(HASH, 4096)))
    H.value(ctl:map_to_guest(id))
    local snap = ctl:save()
    assert.truthy(snap:find(" =" .. HASH .. " 4096 0\n", 1, true))
    local R2 = H.recorder()
    local c2 = H.value(scsictl.import(snap, { vm = R2.vm, linux_guest = R2.linux_guest }))
    assert.equal(snap, c2:save())
    H.fails("config_mismatch", c2:reserve(LAYER, verity(HASH)))
    H.value(c2:unmap_from_guest(id))
    assert.same({ root_hash = HASH, hash_offset = 4096 }, R2.log[1][2].verity)
  end)

  it("raises bad argument for malformed fields, and nothing changes", function()
    for what, mount in pairs{
      ["not a table"] = { read_only = true, verity = HASH },
      ["no root hash"] = { read_only = true, verity = {} },
      ["a root hash that is not a string"] = { read_only = true, verity = { root_hash = 12 } },
      ["a root hash too short"] = verity(HASH:sub(2)),
      ["a root hash too long"] = verity(HASH .. "00"),
      ["a root hash that is not hex"] = verity(HASH:sub(2) .. "g"),
      ["a sha1 root hash"] = verity(("a"):rep(40)),
      ["a negative hash offset"] = verity(HASH, -512),
      ["a float hash offset"] = verity(HASH, 512.5),
      ["a hash offset not a multiple of 512"] = verity(HASH, 1000),
      ["a string hash offset"] = verity(HASH, "512"),
      ["an unknown field"] = { read_only = true, verity = { root_hash = HASH, salt = "00" } },
      ["a writable mount"] = { verity = { root_hash = HASH } },
      ["an encrypted mount"] = { read_only = true, encrypted = true, verity = { root_hash = HASH } },
    } do
      local ok, err = pcall(ctl.reserve, ctl, LAYER, mount)
      assert.is_false(ok, what)
      assert.truthy(tostring(err):find("bad argument #3", 1, true), what .. ": " .. tostring(err))
      assert.truthy(tostring(err):find("verity", 1, true), what .. ": " .. tostring(err))
    end
    assert.same({}, ctl:slots())
  end)
end)
