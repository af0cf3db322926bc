rockspec_format = "3.0"
package = "scsictl"
version = "dev-1"
source = {
   url = "git+file://./",
}
description = {
   summary = "SCSI slot and guest-mount reservation controller for virtual machines",
   detailed = [[
scsictl hands each virtual disk a (controller, lun) slot in a VM, shares disks
and partition mounts between callers by reference count, and drives the
hypervisor and the guest through backend callbacks written in Lua. Every step
is retryable and nothing leaks.]],
   license = "MIT",
   labels = { "virtualization", "scsi", "qemu" },
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
external_dependencies = {
   UUID = { header = "uuid/uuid.h" },
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      CMAKE_C_FLAGS = "$(CFLAGS)",
      CMAKE_MODULE_LINKER_FLAGS = "$(LIBFLAG)",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      LUA_INCDIR = "$(LUA_INCDIR)",
      LUA_LIBDIR = "$(LIBDIR)",
      LUA_LUADIR = "$(LUADIR)",
      SCSICTL_LUAROCKS = "ON",
      SCSICTL_WERROR = "OFF",
      SCSICTL_BUILD_TESTS = "OFF",
      SCSICTL_BUILD_EXAMPLES = "OFF",
      SCSICTL_BUILD_BENCH = "OFF",
   },
   install = {
      -- The test guest's builder (scsictl.qemu_guest.launch finds it here)
      -- and the verity layer maker (docs/qemu.md).
      bin = { ["scsictl-build-guest"] = "scripts/build-guest.sh",
              ["scsictl-make-verity-layer"] = "scripts/make-verity-layer.sh" },
   },
}
-- `luarocks test`: the busted specs that need no QEMU, in the unpacked
-- source (scripts/luarocks-test.sh). Debian's lua-busted is not a rock:
-- tell LuaRocks it is there (docs/release.md), or it tries to download it.
test_dependencies = {
   "busted",
}
test = {
   type = "command",
   command = "sh scripts/luarocks-test.sh",
}
