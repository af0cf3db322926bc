--[==[
scsictl.qemu — a VM backend that hot-plugs SCSI disks into a running QEMU
through its QMP socket, and a launcher for a disposable QEMU.

  local scsictl = require("scsictl")
  local qemu = require("scsictl.qemu")
  local vm <close> = assert(qemu.launch{ controllers = 2 })
  local ctl = scsictl.new{ controllers = 2, vm = vm:vm_backend(), linux_guest = guest }

or, with your own QEMU:

  local vm = qemu.vm_backend{ qmp = "/run/myvm/qmp.sock" }

Needs Debian's lua-luv and lua-cjson (the core module `scsictl` does not).
Everything runs on the event loop (scsictl.loop): inside a loop task each
call yields while QEMU works, so many disks are added and removed at once
over the one QMP connection; elsewhere each call runs the loop until done.
Image checks (format detection) run in libuv's threadpool.

WHAT QEMU MUST LOOK LIKE
  Controller n of scsictl is the virtio-scsi controller whose qdev id is
  "scsi<n>", so its bus is "scsi<n>.0":
      -device virtio-scsi-pci,id=scsi0,addr=0x4 -device virtio-scsi-pci,id=scsi1,addr=0x5
  and a QMP socket: -qmp unix:/path/qmp.sock,server=on,wait=off
  (another naming: the `bus` option). Disks are attached at target
  (scsi-id) 0, channel 0, lun = the scsictl lun; virtio-scsi accepts luns
  0..16383, so luns_per_controller up to 16384 works.

qemu.vm_backend(opts) -> backend
  opts.qmp       a client from scsictl.qmp, or the path of a QMP UNIX socket
                 (connected on first use and reconnected on the next call
                 after the connection closed)               (required)
  opts.timeout   seconds every QMP wait may take, including the wait for
                 DEVICE_DELETED (default 10)
  opts.bus       function(controller) -> bus name, or a format string with
                 one %d (default "scsi%d.0")
  opts.format    "auto" (default: qcow2 if the image starts with "QFI\xfb",
                 else raw), "raw" or "qcow2"
  opts.passthru_driver  device for PassThru disks: "scsi-hd" (default; any
                 host block device) or "scsi-block" (SCSI command passthrough,
                 needs a device that speaks SG_IO)
  opts.prefix    prefix of node names and device ids (default "scsictl")

  backend:add_scsi_disk(attachment, controller, lun)
      VirtualDisk: blockdev-add node "<prefix>-node-c<C>-l<L>" (driver qcow2
      or raw over a "file" child, "read-only" on both when
      attachment.read_only), then device_add scsi-hd id
      "<prefix>-disk-c<C>-l<L>" drive=<node> bus=<bus(C)> scsi-id=0 channel=0
      lun=<L>. The device's block backend is read-only exactly when the
      node is (scsi-hd has no property of its own for it; QEMU reports it as
      query-block's "ro"). PassThru: a "host_device" node on the host block
      device attachment.path, then passthru_driver. ExtensibleVirtualDisk:
      fails, "not supported by the QEMU backend". The host path must be a
      regular file (VirtualDisk) or a block device (PassThru): a FIFO, a
      directory or a missing file fails that add at once. If device_add
      fails, or the task is cancelled or its deadline passes after the node
      was added, the node is deleted again (within a grace of 5 s), so no
      node is left without its device.
      attachment.options (nil or { name = value }, values as strings, or
      integers and booleans from direct callers): cache, aio, discard,
      detect_zeroes, serial, wwn and the I/O limits bps, bps_rd, bps_wr,
      iops, iops_rd, iops_wr (docs/qemu.md, "Per-disk options"). Limits
      add a throttle-group object "<prefix>-tg-c<C>-l<L>" first and a
      "throttle" node "<prefix>-throttle-c<C>-l<L>" over the format node;
      the device uses the throttle node. Every option is checked before the
      first QMP command (an unknown option or a bad value fails naming it);
      aio io_uring only where this QEMU's schema has it (backend:aio_modes).
      If a later step fails, what this add made is taken away again.
      Re-issuing an add that already took effect (the same file, format,
      read-only flag and options at this slot) succeeds, also when only
      parts were left by an interrupted add (they are replaced); a slot
      holding another file or other options fails, naming what differs.
  backend:remove_scsi_disk(controller, lun)
      device_del, wait for DEVICE_DELETED of that device id, blockdev-del of
      the throttle node and the format node, object-del of the throttle
      group. What is already gone is skipped, so a re-issued remove succeeds
      (also when nothing is left at the slot, or only leftovers of an
      interrupted add). While QEMU still finishes an unplug that an earlier,
      abandoned remove started, blockdev-del answers that the node is in
      use: it is retried until the deadline.
  backend:observe() -> array | nil, msg
      QEMU's view of the slots named with this backend's prefix, sorted by
      controller then lun: { controller, lun, device (our device id exists),
      file (the format node's file, or nil), nodes (our node names there),
      group (our throttle group exists) }; slots holding only leftover nodes
      or a group are listed too (remove_scsi_disk clears them).
  backend:aio_modes() -> { threads = true, native = true, io_uring = true? }
      from query-qmp-schema, asked once per backend.
  Failures return nil, message (spec §4); the message carries QMP's error
  class and description ("device_add: GenericError: Bus 'scsi9.0' not found").

  backend:node_name(controller, lun), backend:device_id(controller, lun),
  backend:throttle_name(controller, lun), backend:group_id(controller, lun)
  backend:client() -> qmp client | nil, msg
  backend:disks() -> QEMU's own view of the SCSI disks (qemu.scsi_disks)
  backend:close()  closes a connection the backend opened itself

qemu.scsi_disks(client) -> array | nil, msg
  Every SCSI disk QEMU has, from query-block plus qom-get of each device's
  bus, scsi-id and lun: { device, bus, controller_id, scsi_id, lun, channel,
  node, file, format, ro, throttled }, sorted by bus then lun. controller_id
  is the qdev id of the controller owning the bus. For a throttled disk
  (I/O limits) node is the throttle node, file and format the image's.

qemu.kvm_usable() -> boolean
  Whether /dev/kvm opens read-write (what accel "auto" asks).

qemu.launch(opts) -> vm | nil, msg
  Starts qemu-system-x86_64 paused (-S) with -nodefaults -no-user-config
  -nographic -display none -nic none, opts.controllers virtio-scsi-pci
  controllers "scsi0".."scsi<N-1>" at fixed PCI addresses 00:<base+n>.0
  (base 0x4 by default, so at most 28 controllers), and a QMP socket in a
  private temporary directory. KVM only if /dev/kvm opens read-write.
  A sanitizer runtime in LD_PRELOAD (sanitizer builds) is not passed on.
  opts: controllers (required, 0..28), binary (default $SCSICTL_QEMU or
        "qemu-system-x86_64"), accel ("auto" | "kvm" | "tcg"; default
        $SCSICTL_QEMU_ACCEL or "auto"), machine (default QEMU's "pc"),
        memory ("64M"), pci_base (4), args (extra argument array),
        timeout (startup and QMP timeout, default 10), tmpdir (parent
        directory, default $TMPDIR or /tmp).
  vm.pid, vm.dir, vm.socket, vm.accel, vm.controllers, vm.argv
  vm:pci_address(n) -> "0000:00:04.0"       (controller n's PCI address)
  vm:pci_addresses() -> { [n] = address } for n = 0..controllers-1
  vm:qmp() -> the QMP client (one connection, shared)
  vm:vm_backend([opts]) -> qemu.vm_backend over vm:qmp() (opts as above)
  vm:alive() -> boolean
  vm:kill([signal])   sends a signal (default "KILL"): for crash tests
  vm:exit_status() -> nil while running, else "QEMU exited (pid N, ...)"
  vm:wait([seconds])  waits (default 5s) until the process has exited;
                      true if it has
  vm:log() -> QEMU's stdout/stderr so far
  vm:stop()  quit over QMP, then TERM, then KILL if needed; removes the
             temporary directory. Idempotent. Also run by <close> and __gc.
]==]

local uv = require("scsictl.deps")("scsictl.qemu", "luv", "cjson")
local loop = require("scsictl.loop")
local qmp = require("scsictl.qmp")
local conn = require("scsictl.conn")
local by_slot = require("scsictl.reconcile").by_slot

local qemu = {}
qemu.qmp = qmp
qemu.QCOW2_MAGIC = "QFI\xfb"
qemu.MAX_LUN = 16383
qemu.UNDO_GRACE = 5         -- seconds to take a node away after an abandoned add

local function is_uint(v) return math.type(v) == "integer" and v >= 0 end

---------------------------------------------------------------------------
-- QEMU's view of its SCSI disks.

local function is_str(v) return type(v) == "string" end

function qemu.scsi_disks(client)
  local blocks, msg = client:execute("query-block")
  if not blocks then return nil, msg end
  local out = {}
  for _, b in ipairs(blocks) do
    local qdev = b.qdev
    if is_str(qdev) and qdev ~= "" then
      local path = qdev:sub(1, 1) == "/" and qdev or ("/machine/peripheral/" .. qdev)
      local typ = client:execute("qom-get", { path = path, property = "type" })
      if typ == "scsi-hd" or typ == "scsi-block" or typ == "scsi-cd" then
        local d = { device = qdev, type = typ, path = path }
        local bus
        bus, msg = client:execute("qom-get", { path = path, property = "parent_bus" })
        if not bus then return nil, msg end
        d.bus = bus:match("([^/]+)$")
        d.controller_id = bus:match("^/machine/peripheral/([^/]+)/")
        for _, p in ipairs({ "scsi-id", "lun", "channel" }) do
          local v
          v, msg = client:execute("qom-get", { path = path, property = p })
          if v == nil then return nil, msg end
          d[p == "scsi-id" and "scsi_id" or p] = v
        end
        local ins = type(b.inserted) == "table" and b.inserted or {}
        d.node = ins["node-name"]
        d.file = ins.file
        d.format = ins.drv
        d.ro = ins.ro
        -- Throttled (per-disk I/O limits): the image is the throttle
        -- node's child, which QEMU's image info lists as its backing image.
        local under = ins.drv == "throttle" and type(ins.image) == "table" and ins.image["backing-image"]
        if type(under) == "table" then
          d.throttled, d.file, d.format = true, under.filename, under.format
        end
        out[#out + 1] = d
      end
    end
  end
  table.sort(out, function(a, b)
    if a.bus ~= b.bus then return tostring(a.bus) < tostring(b.bus) end
    return (a.lun or 0) < (b.lun or 0)
  end)
  return out
end

---------------------------------------------------------------------------
-- The VM backend.

local Backend = {}
Backend.__index = Backend
Backend.__name = "scsictl.qemu.backend"

-- The image's format (qcow2 by its magic, else raw), read in the threadpool.
-- The path must be a regular file: opening a FIFO would block.
local function detect_format(path, forced)
  local st, msg = loop.fs("stat", path)
  if not st then return nil, ("image '%s': %s"):format(path, msg) end
  if st.type ~= "file" then
    return nil, ("image '%s' is a %s, not a regular file"):format(path, tostring(st.type))
  end
  if forced ~= "auto" then return forced end
  local fd
  fd, msg = loop.fs("open", path, "r", 0)
  if not fd then return nil, ("image '%s': %s"):format(path, msg) end
  local head = loop.fs("read", fd, 4, 0)
  loop.fs("close", fd)
  return head == qemu.QCOW2_MAGIC and "qcow2" or "raw"
end

local function check_device(path)
  local st, msg = loop.fs("stat", path)
  if not st then return nil, ("device '%s': %s"):format(path, msg) end
  if st.type ~= "block" then
    return nil, ("'%s' is a %s, not a block device"):format(path, tostring(st.type))
  end
  return true
end

-- Did this failure come from the task's deadline or cancellation, or from
-- a connection that is gone? Then no further QMP command is worth sending.
local function final(class)
  return class == "Closed" or class == "Timeout" or class == "Cancelled"
end

function qemu.vm_backend(opts)
  local self = conn.owner("vm_backend", opts, "qmp", "a QMP client", "execute", qmp.DEFAULT_TIMEOUT)
  local bus = opts.bus or "scsi%d.0"
  if type(bus) == "string" then
    local fmt = bus
    bus = function(n) return fmt:format(n) end
  elseif type(bus) ~= "function" then
    error("vm_backend: bus must be a format string or a function", 2)
  end
  local format = opts.format or "auto"
  if format ~= "auto" and format ~= "raw" and format ~= "qcow2" then
    error("vm_backend: format must be \"auto\", \"raw\" or \"qcow2\"", 2)
  end
  local pt = opts.passthru_driver or "scsi-hd"
  if pt ~= "scsi-hd" and pt ~= "scsi-block" then
    error("vm_backend: passthru_driver must be \"scsi-hd\" or \"scsi-block\"", 2)
  end
  local prefix = opts.prefix or "scsictl"
  if type(prefix) ~= "string" or not prefix:match("^[%a][%w%-_]*$") then
    error("vm_backend: prefix must start with a letter and hold only letters, digits, - and _", 2)
  end
  self.bus, self.format, self.passthru_driver, self.prefix, self._undo = bus, format, pt, prefix, {}
  return setmetatable(self, Backend)
end

function Backend:node_name(controller, lun)
  return ("%s-node-c%d-l%d"):format(self.prefix, controller, lun)
end

function Backend:device_id(controller, lun)
  return ("%s-disk-c%d-l%d"):format(self.prefix, controller, lun)
end

Backend.client, Backend.close, Backend.__tostring =
  conn.owned("_qmp", "QMP", qmp.connect)

function Backend:disks()
  local c, msg = self:client()
  if not c then return nil, msg end
  return qemu.scsi_disks(c)
end

-- The node named `name`, from query-named-block-nodes, or false when absent.
local function find_node(c, name, timeout)
  local nodes, msg = c:execute("query-named-block-nodes", { flat = true }, timeout)
  if not nodes then return nil, msg end
  for _, n in ipairs(nodes) do
    if n["node-name"] == name then return n end
  end
  return false
end

-- What our device id refers to: { drive, lun, bus } or false when absent.
local function find_device(c, id, timeout)
  local path = "/machine/peripheral/" .. id
  local drive, msg, class = c:execute("qom-get", { path = path, property = "drive" }, timeout)
  if drive == nil then
    if class == "DeviceNotFound" then return false end
    return nil, msg
  end
  local d = { drive = drive }
  d.lun = c:execute("qom-get", { path = path, property = "lun" }, timeout)
  local bus = c:execute("qom-get", { path = path, property = "parent_bus" }, timeout)
  d.bus = is_str(bus) and bus:match("([^/]+)$") or nil
  return d
end

-- The limits of throttle-group `id`, or false when there is no such object.
local function find_group(c, id, timeout)
  local limits, msg, class = c:execute("qom-get", { path = "/objects/" .. id, property = "limits" }, timeout)
  if limits == nil then
    if class == "DeviceNotFound" then return false end
    return nil, msg
  end
  return limits
end

local function slot_name(controller, lun)
  return ("controller %d lun %d"):format(controller, lun)
end

---------------------------------------------------------------------------
-- Per-disk options (attachment.options), checked before QEMU sees any.

-- cache mode -> { node cache.direct, node cache.no-flush, device write-cache }
local CACHE = {
  none = { true, false, true }, writeback = { false, false, true },
  writethrough = { false, false, false }, directsync = { true, false, false },
  unsafe = { false, true, true },
}
-- I/O limit option -> member of the throttle-group's ThrottleLimits.
local LIMITS = { bps = "bps-total", bps_rd = "bps-read", bps_wr = "bps-write",
                 iops = "iops-total", iops_rd = "iops-read", iops_wr = "iops-write" }
-- The JSON encoder (lua-cjson, 14 significant digits) carries integers
-- exactly only below 10^14; QEMU's own ceiling is 10^15.
qemu.LIMIT_MAX = 99999999999999
qemu.SERIAL_MAX = 36          -- what scsi-hd puts in its VPD serial page

-- A value as a message shows it: quoted, control bytes escaped.
local function quote(s)
  return "'" .. s:gsub("[^\32-\126]", function(ch) return ("\\x%02x"):format(ch:byte()) end) .. "'"
end

local function one_of(...)
  local list = { ... }
  return function(s)
    for _, x in ipairs(list) do
      if s == x then return s end
    end
    return nil, ("%s is not one of %s"):format(quote(s), table.concat(list, ", "))
  end
end

local function limit(s)
  local n = s:match("^%d+$") and tonumber(s)
  if not n or n < 1 then return nil, quote(s) .. " is not a positive integer" end
  if n > qemu.LIMIT_MAX then
    return nil, ("%s is above the largest limit, %d"):format(quote(s), qemu.LIMIT_MAX)
  end
  return math.tointeger(n)
end

local function serial(s)
  if #s < 1 or #s > qemu.SERIAL_MAX or s:find("[^\33-\126]") then
    return nil, ("%s is not 1 to %d printable ASCII characters without spaces")
      :format(quote(s), qemu.SERIAL_MAX)
  end
  return s
end

-- A 64-bit unsigned decimal, as a (wrapping) Lua integer, or nil on overflow.
local function decimal_u64(s)
  local v = 0
  for i = 1, #s do
    local d = s:byte(i) - 48
    if math.ult(0x1999999999999999, v) or (v == 0x1999999999999999 and d > 5) then return nil end
    v = v * 10 + d
  end
  return v
end

-- The WWN as QEMU's device_add takes it: "0x" and 16 hex digits.
local function wwn(s)
  local hex = s:match("^0[xX](%x+)$")
  local v
  if hex then
    v = #hex == 16 and tonumber(hex, 16) or nil
  elseif s:match("^%d+$") then
    v = decimal_u64(s)
  end
  if not v then
    return nil, quote(s) .. ' is not a 64-bit number ("0x" and 16 hex digits, or decimal)'
  end
  if v == 0 then return nil, "0 is not a WWN (QEMU reads it as none)" end
  return ("0x%016x"):format(v)
end

local PARSE = {
  cache = one_of("none", "writeback", "writethrough", "directsync", "unsafe"),
  aio = one_of("threads", "native", "io_uring"),
  discard = one_of("ignore", "unmap"),
  detect_zeroes = one_of("off", "on", "unmap"),
  serial = serial, wwn = wwn,
}
for name in pairs(LIMITS) do PARSE[name] = limit end

-- The core hands option values over as strings; direct callers may use
-- integers and booleans (true/false as on/off).
local function option_text(name, v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "boolean" then return v and "on" or "off" end
  if type(v) == "string" then return v end
  return nil, ("option %s: a %s is not a string, an integer or a boolean")
    :format(name, math.type(v) or type(v))
end

-- Combinations QEMU refuses, refused first with our own words.
local function check_combinations(o)
  for _, total in ipairs({ "bps", "iops" }) do
    for _, part in ipairs({ total .. "_rd", total .. "_wr" }) do
      if o[total] and o[part] then
        return nil, ("options %s and %s exclude each other (a total limit, or read and write limits)")
          :format(total, part)
      end
    end
  end
  if o.aio == "native" and not (o.cache and CACHE[o.cache][1]) then
    return nil, ("option aio: native needs cache none or directsync (O_DIRECT), not %s")
      :format(o.cache or "the default writeback")
  end
  if o.detect_zeroes == "unmap" and o.discard ~= "unmap" then
    return nil, "option detect_zeroes: unmap needs discard unmap"
  end
  return o
end

-- attachment.options -> { name = checked value } | nil, msg
local function parse_options(opts, scsi_block)
  if opts == nil then return {} end
  if type(opts) ~= "table" then return nil, "attachment.options must be a table" end
  local names = {}
  for k in pairs(opts) do
    if type(k) ~= "string" then return nil, "disk option names must be strings, not " .. type(k) end
    names[#names + 1] = k
  end
  table.sort(names)
  local o = {}
  for _, name in ipairs(names) do
    if not PARSE[name] then return nil, ("unknown disk option '%s'"):format(quote(name):sub(2, -2)) end
    local text, why = option_text(name, opts[name])
    if not text then return nil, why end
    local v
    v, why = PARSE[name](text)
    if v == nil then return nil, ("option %s: %s"):format(name, why) end
    if scsi_block then
      return nil, ("option %s: not applied to a PassThru disk under scsi-block "
        .. "(its SCSI commands reach the device past QEMU's block layer)"):format(name)
    end
    o[name] = v
  end
  return check_combinations(o)
end

-- The aio modes this QEMU knows (BlockdevAioOptions in its QMP schema; the
-- enum's name is not stable, its values are), asked once per backend.
function Backend:aio_modes()
  if self._aio then return self._aio end
  local c, msg = self:client()
  if not c then return nil, msg end
  local schema
  schema, msg = c:execute("query-qmp-schema", nil, self.timeout)
  if not schema then return nil, msg end
  local modes = { threads = true, native = true }
  for _, e in ipairs(schema) do
    if e["meta-type"] == "enum" and type(e.values) == "table" then
      local set = {}
      for _, v in ipairs(e.values) do set[v] = true end
      if set.threads and set.native then modes = set break end
    end
  end
  self._aio = modes
  return modes
end

---------------------------------------------------------------------------
-- What QEMU gets for one slot: names, and the commands that make each part.

function Backend:throttle_name(controller, lun)
  return ("%s-throttle-c%d-l%d"):format(self.prefix, controller, lun)
end

function Backend:group_id(controller, lun)
  return ("%s-tg-c%d-l%d"):format(self.prefix, controller, lun)
end

local function slot_names(self, controller, lun)
  return { node = self:node_name(controller, lun), throttle = self:throttle_name(controller, lun),
           group = self:group_id(controller, lun), dev = self:device_id(controller, lun) }
end

-- Options every node of the slot carries (cache, discard), so that each
-- layer, and QEMU's report of the top one (query-block), shows the mode.
local function node_options(spec, o)
  if o.cache then
    local m = CACHE[o.cache]
    spec.cache = { direct = m[1], ["no-flush"] = m[2] }
  end
  spec.discard = o.discard
  return spec
end

-- The plan of an add: the steps, and what a slot holding it looks like.
local function make_plan(self, attachment, controller, lun, o, driver, device_driver)
  local path, ro = attachment.path, attachment.read_only == true
  local names = slot_names(self, controller, lun)
  local spec
  if driver == "host_device" then
    spec = node_options({ driver = driver, ["node-name"] = names.node, filename = path,
                          ["read-only"] = ro, aio = o.aio }, o)
  else
    spec = node_options({ driver = driver, ["node-name"] = names.node, ["read-only"] = ro,
      file = node_options({ driver = "file", filename = path, ["read-only"] = ro, aio = o.aio }, o) }, o)
  end
  spec["detect-zeroes"] = o.detect_zeroes
  local limits
  for name, member in pairs(LIMITS) do
    if o[name] then
      limits = limits or {}
      limits[member] = o[name]
    end
  end
  local plan = { names = names, path = path, ro = ro, driver = driver, o = o, limits = limits,
                 top = limits and names.throttle or names.node, steps = {} }
  local steps = plan.steps
  if limits then
    steps[#steps + 1] = { "object-add", { ["qom-type"] = "throttle-group", id = names.group, limits = limits } }
  end
  steps[#steps + 1] = { "blockdev-add", spec }
  if limits then
    steps[#steps + 1] = { "blockdev-add", node_options({ driver = "throttle", ["node-name"] = names.throttle,
      ["throttle-group"] = names.group, file = names.node, ["detect-zeroes"] = o.detect_zeroes }, o) }
  end
  local dspec = { driver = device_driver, id = names.dev, drive = plan.top,
                  bus = self.bus(controller), channel = 0, ["scsi-id"] = 0, lun = lun,
                  serial = o.serial, wwn = o.wwn }
  if o.cache then dspec["write-cache"] = CACHE[o.cache][3] and "on" or "off" end
  steps[#steps + 1] = { "device_add", dspec }
  plan.dspec = dspec
  return plan
end

-- The name a step creates (the thing that exists when it failed as a duplicate).
local function step_object(step)
  local args = step[2]
  return args["node-name"] or args.id
end

---------------------------------------------------------------------------
-- QEMU's view of a slot, and taking a slot's parts away.

-- { device = find_device result, nodes = { [name] = node info }, group = limits | false }
local function slot_view(c, names, timeout)
  local all, msg = c:execute("query-named-block-nodes", { flat = true }, timeout)
  if not all then return nil, msg end
  local v = { nodes = {} }
  for _, n in ipairs(all) do
    local name = n["node-name"]
    if name == names.node or name == names.throttle then v.nodes[name] = n end
  end
  v.group, msg = find_group(c, names.group, timeout)
  if v.group == nil then return nil, msg end
  v.device, msg = find_device(c, names.dev, timeout)
  if v.device == nil then return nil, msg end
  return v
end

-- Deletes block node `name` (absent is fine), retrying while QEMU still
-- holds it: after DEVICE_DELETED, or while an abandoned unplug finishes.
local function delete_node(c, name, deadline)
  local delay = 0.01
  while true do
    local ok, msg, class = c:execute("blockdev-del", { ["node-name"] = name },
      math.max(0.001, deadline - loop.now()))
    if ok then return true end
    if final(class) then return nil, msg end
    local n, err = find_node(c, name, math.max(0.001, deadline - loop.now()))
    if n == false then return true end  -- already gone
    if n == nil then return nil, msg .. "; then " .. err end
    if not msg:find("in use", 1, true) or loop.now() + delay > deadline then return nil, msg end
    local slept, msg2 = loop.sleep(delay)
    if not slept then return nil, ("%s; then %s"):format(msg, msg2) end
    delay = math.min(delay * 2, 0.2)
  end
end

local function delete_group(c, id, deadline)
  local ok, msg, class = c:execute("object-del", { id = id }, math.max(0.001, deadline - loop.now()))
  if ok then return true end
  if final(class) then return nil, msg end
  local g, err = find_group(c, id, math.max(0.001, deadline - loop.now()))
  if g == false then return true end
  return nil, g == nil and (msg .. "; then " .. err) or msg
end

-- Takes the slot's throttle node, format node and group away, top first
-- (each holds the one below); `view` (optional) says which exist.
local function clear_slot(c, names, deadline, view)
  for _, name in ipairs({ names.throttle, names.node }) do
    if not view or view.nodes[name] then
      local ok, msg = delete_node(c, name, deadline)
      if not ok then return nil, msg end
    end
  end
  if not view or view.group then return delete_group(c, names.group, deadline) end
  return true
end

-- After an add given up on (its deadline passed or its task was cancelled):
-- take the slot's parts away unless its device is there (a device_add QEMU
-- took after all). A task of its own does it, so the failed add returns at
-- once even when QEMU hangs; the next add or remove of that slot waits for it.
local function undo_slot(self, c, names)
  self._undo[names.node] = loop.spawn({ timeout = qemu.UNDO_GRACE, name = "undo " .. names.node }, function()
    if find_device(c, names.dev) == false then
      clear_slot(c, names, loop.now() + qemu.UNDO_GRACE)
    end
  end)
end

-- Waits (within the caller's deadline) for an undo of this slot to finish.
local function settle(self, node)
  local u = self._undo[node]
  if not u then return true end
  local _, msg = u:join()
  if not u:done() then return nil, msg end
  self._undo[node] = nil
  return true
end

---------------------------------------------------------------------------
-- Is the slot's device what the plan makes (a re-issued add)?

-- The WWN of device `id`, exactly, from HMP's info qtree (qom-get's number
-- reaches us as a double, which cannot hold every 64-bit value).
local function device_wwn(c, id, timeout)
  local tree = c:hmp("info qtree", timeout)
  if not tree then return nil end
  local at = tree:find('id "' .. id .. '"', 1, true)
  if not at then return nil end
  local stop = tree:find("dev:", at, true) or #tree + 1
  local hex = tree:sub(at, stop - 1):match("\n%s*wwn = %d+ %(0x(%x+)%)")
  return hex and tonumber(hex, 16)
end

-- Names of what differs between the slot (device present) and the plan.
local function differences(c, plan, view, timeout)
  local diff = {}
  local function differ(what, yes) if yes then diff[#diff + 1] = what end end
  local n, o = view.nodes[plan.names.node], plan.o
  if not n then return { "node" } end
  differ("file", n.file ~= plan.path)
  differ("format", n.drv ~= plan.driver)
  differ("read-only", n.ro ~= plan.ro)
  local m = CACHE[o.cache or "writeback"]
  local cache = type(n.cache) == "table" and n.cache or {}
  differ("cache", cache.direct ~= m[1] or cache["no-flush"] ~= m[2])
  differ("detect_zeroes", n.detect_zeroes ~= (o.detect_zeroes or "off"))
  differ("throttle", (view.nodes[plan.names.throttle] ~= nil) ~= (plan.limits ~= nil))
  if plan.limits and view.group then
    local other = false
    for _, member in pairs(LIMITS) do
      other = other or (view.group[member] or 0) ~= (plan.limits[member] or 0)
    end
    differ("limits", other)
  end
  if plan.dspec.driver == "scsi-hd" then
    local path = "/machine/peripheral/" .. plan.names.dev
    local function prop(p) return c:execute("qom-get", { path = path, property = p }, timeout) end
    differ("serial", (prop("serial") or "") ~= (o.serial or ""))
    local w = device_wwn(c, plan.names.dev, timeout)
    differ("wwn", w ~= nil and w ~= (o.wwn and tonumber(o.wwn:sub(3), 16) or 0))
    differ("write-cache", prop("write-cache") ~= (plan.dspec["write-cache"] or "auto"))
  end
  return diff
end

-- The slot holds a device unlike the plan: why, in words.
local function conflict(c, plan, view, msg, timeout)
  local d, n = view.device, view.nodes[plan.names.node] or {}
  local held = ("%s already holds '%s' (%s%s) in QEMU"):format(plan.slot,
    tostring(n.file), tostring(n.drv), n.ro and ", read-only" or "")
  if d.lun ~= plan.dspec.lun or d.bus ~= plan.dspec.bus then
    -- Our device id, somewhere else: never touch it.
    return ("%s; device '%s' exists at %s lun %s"):format(msg, plan.names.dev,
      tostring(d.bus), tostring(d.lun))
  end
  if d.drive ~= plan.top then
    return ("%s, %s a throttle node"):format(held, d.drive == plan.names.throttle and "with" or "without")
  end
  local diff = differences(c, plan, view, timeout)
  if #diff == 0 then return nil end
  return ("%s, unlike this add in: %s"):format(held, table.concat(diff, ", "))
end

-- Takes away what this add made, top first (the slot is someone else's).
local function unmake(c, made, deadline)
  for i = #made, 1, -1 do
    local step = made[i]
    local ok, msg
    if step[1] == "object-add" then
      ok, msg = delete_group(c, step[2].id, deadline)
    else
      ok, msg = delete_node(c, step[2]["node-name"], deadline)
    end
    if not ok then return nil, msg end
  end
  return true
end

-- A step failed with QEMU's own error (not a timeout): the slot is either
-- already what was asked (a re-issued add), held by something else, or
-- holds leftovers of an interrupted add, which are replaced once.
local function add_failed(self, c, plan, step, msg, made, retried)
  local t, names = self.timeout, plan.names
  local deadline = loop.now() + t
  local view, err = slot_view(c, names, t)
  if not view then return nil, msg .. "; then " .. err end
  if view.device then
    local why = conflict(c, plan, view, msg, t)
    if not why then return true end                  -- re-issued: it is all there
    local ok
    ok, err = unmake(c, made, deadline)
    if not ok then why = ("%s; removing what this add made also failed: %s"):format(why, err) end
    return nil, why
  end
  -- No device: what the slot holds is ours to take away (this add's parts,
  -- or leftovers of an interrupted one).
  local name = step_object(step)
  local leftover = step[1] ~= "device_add" and (view.nodes[name] or (name == names.group and view.group))
  local ok
  ok, err = clear_slot(c, names, deadline, view)
  if not ok then
    return nil, ("%s; removing what this slot held also failed: %s"):format(msg, err)
  end
  if leftover and not retried then return self:_create(c, plan, true) end
  return nil, msg
end

-- Runs the plan's steps; on a failure, sorts it out (add_failed).
function Backend:_create(c, plan, retried)
  local made = {}
  for _, step in ipairs(plan.steps) do
    local ok, msg, class = c:execute(step[1], step[2], self.timeout)
    if not ok then
      if class == "Closed" then return nil, msg end
      if final(class) then
        -- The step may still take effect in QEMU: take the slot's parts away again.
        undo_slot(self, c, plan.names)
        return nil, msg
      end
      return add_failed(self, c, plan, step, msg, made, retried)
    end
    made[#made + 1] = step
  end
  return true
end

function Backend:add_scsi_disk(attachment, controller, lun)
  if type(attachment) ~= "table" or not is_str(attachment.path) then
    return nil, "add_scsi_disk: attachment.path must be a string"
  end
  if not is_uint(controller) or not is_uint(lun) then
    return nil, "add_scsi_disk: controller and lun must be integers >= 0"
  end
  if lun > qemu.MAX_LUN then
    return nil, ("add_scsi_disk: lun %d is beyond virtio-scsi's limit of %d")
      :format(lun, qemu.MAX_LUN)
  end
  local kind = attachment.type or "VirtualDisk"
  if kind == "ExtensibleVirtualDisk" then
    return nil, ("ExtensibleVirtualDisk%s is not supported by the QEMU backend")
      :format(attachment.evd_type and (" (evd_type '" .. tostring(attachment.evd_type) .. "')") or "")
  end
  if kind ~= "PassThru" and kind ~= "VirtualDisk" then
    return nil, ("add_scsi_disk: unknown disk type '%s'"):format(tostring(kind))
  end
  local o, msg = parse_options(attachment.options, kind == "PassThru" and self.passthru_driver == "scsi-block")
  if not o then return nil, "add_scsi_disk: " .. msg end
  local driver, device_driver
  if kind == "PassThru" then
    local ok
    ok, msg = check_device(attachment.path)
    if not ok then return nil, msg end
    driver, device_driver = "host_device", self.passthru_driver
  else
    driver, msg = detect_format(attachment.path, self.format)
    if not driver then return nil, msg end
    device_driver = "scsi-hd"
  end
  local c
  c, msg = self:client()
  if not c then return nil, msg end
  if o.aio == "io_uring" then
    local modes
    modes, msg = self:aio_modes()
    if not modes then return nil, msg end
    if not modes.io_uring then return nil, "add_scsi_disk: option aio: this QEMU has no io_uring" end
  end
  local plan = make_plan(self, attachment, controller, lun, o, driver, device_driver)
  plan.slot = slot_name(controller, lun)
  local settled, why = settle(self, plan.names.node)
  if not settled then return nil, why end
  return self:_create(c, plan, false)
end

function Backend:remove_scsi_disk(controller, lun)
  if not is_uint(controller) or not is_uint(lun) then
    return nil, "remove_scsi_disk: controller and lun must be integers >= 0"
  end
  local c, msg = self:client()
  if not c then return nil, msg end
  local t = self.timeout
  local deadline = loop.now() + t
  local names = slot_names(self, controller, lun)
  local dev = names.dev
  local function ours(e) return type(e.data) == "table" and e.data.device == dev end
  local settled, why = settle(self, names.node)
  if not settled then return nil, why end

  c:drop_events("DEVICE_DELETED", ours)
  local deleted = c:watch("DEVICE_DELETED", ours)
  local ok, class
  ok, msg, class = c:execute("device_del", { id = dev }, t)
  local wait = ok ~= nil
  if not ok then
    if class == "DeviceNotFound" then
      wait = false               -- already gone
    elseif class == "GenericError" and msg:find("in the process of unplug", 1, true) then
      wait = true                -- a previous remove is still under way
    else
      deleted:cancel()
      return nil, msg
    end
  end
  if wait then
    ok, msg = deleted:wait(math.max(0.001, deadline - loop.now()))
    if not ok then
      deleted:cancel()
      return nil, ("device_del '%s': %s"):format(dev, msg)
    end
  end
  deleted:cancel()
  -- Which parts are left (a plain disk has no throttle node or group).
  local view
  view, msg = slot_view(c, names, math.max(0.001, deadline - loop.now()))
  if not view then return nil, msg end
  return clear_slot(c, names, deadline, view)
end

-- QEMU's view of the slots this backend names (its prefix): a device, or
-- only block nodes or a throttle group left by an interrupted add.
function Backend:observe()
  local c, msg = self:client()
  if not c then return nil, msg end
  local t = self.timeout
  local p = self.prefix:gsub("%-", "%%-")
  local slots, out = {}, {}
  local function slot(cs, ls)
    local cn, ln = math.tointeger(tonumber(cs)), math.tointeger(tonumber(ls))
    local key = cn .. ":" .. ln
    if not slots[key] then
      slots[key] = { controller = cn, lun = ln, device = false, nodes = {}, group = false }
      out[#out + 1] = slots[key]
    end
    return slots[key]
  end
  local nodes
  nodes, msg = c:execute("query-named-block-nodes", { flat = true }, t)
  if not nodes then return nil, msg end
  for _, n in ipairs(nodes) do
    local name = n["node-name"]
    local kind, cs, ls = tostring(name):match("^" .. p .. "%-(%a+)%-c(%d+)%-l(%d+)$")
    if kind == "node" or kind == "throttle" then
      local s = slot(cs, ls)
      s.nodes[#s.nodes + 1] = name
      if kind == "node" then s.file = n.file end
    end
  end
  for _, where in ipairs({ { "/objects", "tg" }, { "/machine/peripheral", "disk" } }) do
    local list
    list, msg = c:execute("qom-list", { path = where[1] }, t)
    if not list then return nil, msg end
    for _, e in ipairs(list) do
      local kind, cs, ls = tostring(e.name):match("^" .. p .. "%-(%a+)%-c(%d+)%-l(%d+)$")
      if kind == where[2] then
        slot(cs, ls)[kind == "tg" and "group" or "device"] = true
      end
    end
  end
  for _, s in ipairs(out) do table.sort(s.nodes) end
  table.sort(out, by_slot)
  return out
end

---------------------------------------------------------------------------
-- The launcher.

local VM = {}
VM.__index = VM
VM.__name = "scsictl.qemu.vm"


local function read_all(path)
  return loop.read_file(path) or ""
end

function qemu.kvm_usable()
  local fd = loop.fs("open", "/dev/kvm", "r+", 0)
  if fd then loop.fs("close", fd) return true end
  return false
end

function qemu.pci_address(controller, base)
  return ("0000:00:%02x.0"):format((base or 4) + controller)
end

-- Why the process ended, in words.
local function exit_words(name, pid, code, signal)
  if signal and signal ~= 0 then
    return ("%s exited (pid %d, killed by signal %d)"):format(name, pid, signal)
  end
  return ("%s exited (pid %d, status %d)"):format(name, pid, code or -1)
end

function qemu.launch(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("launch: options must be a table", 2) end
  local n = opts.controllers
  local base = opts.pci_base or 4
  if not is_uint(base) or base < 1 or base > 0x1f then
    error("launch: pci_base must be an integer 1..31", 2)
  end
  local max = 0x1f - base + 1
  if not is_uint(n) or n > max then
    error(("launch: controllers must be an integer 0..%d (one PCI slot each, "
      .. "00:%02x.0..00:1f.0)"):format(max, base), 2)
  end
  local timeout = opts.timeout or 10
  local accel = opts.accel or os.getenv("SCSICTL_QEMU_ACCEL") or "auto"
  if accel == "" then accel = "auto" end
  if accel == "auto" then accel = qemu.kvm_usable() and "kvm" or "tcg" end
  if accel ~= "kvm" and accel ~= "tcg" then
    error("launch: accel must be \"auto\", \"kvm\" or \"tcg\"", 2)
  end
  local parent = opts.tmpdir or os.getenv("TMPDIR") or "/tmp"
  local dir = loop.fs("mkdtemp", parent .. "/scsictl-qemu.XXXXXX")
  if not dir then
    return nil, "launch: cannot create a temporary directory in " .. parent
  end
  local sock = dir .. "/qmp.sock"
  local binary = opts.binary or os.getenv("SCSICTL_QEMU")
  if binary == nil or binary == "" then binary = "qemu-system-x86_64" end
  local argv = { binary,
    "-S", "-nodefaults", "-no-user-config", "-nographic", "-display", "none",
    "-nic", "none", "-accel", accel, "-m", opts.memory or "64M",
    "-name", "scsictl", "-pidfile", dir .. "/qemu.pid",
    "-qmp", "unix:" .. sock .. ",server=on,wait=off" }
  if opts.machine then
    argv[#argv + 1] = "-machine"
    argv[#argv + 1] = opts.machine
  end
  for i = 0, n - 1 do
    argv[#argv + 1] = "-device"
    argv[#argv + 1] = ("virtio-scsi-pci,id=scsi%d,addr=0x%x"):format(i, base + i)
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end

  local self = setmetatable({
    dir = dir, socket = sock, accel = accel, controllers = n, argv = argv,
    pci_base = base, timeout = timeout, _logfile = dir .. "/qemu.log", _exit_waiters = {},
  }, VM)

  -- QEMU's stdout and stderr go to the log file. An uninstrumented QEMU must
  -- not run under a sanitizer runtime that a sanitizer build preloads into
  -- lua5.4 (qemu-img and QEMU can hang there).
  local logfd = loop.fs("open", self._logfile, "w", 384)
  if not logfd then
    self:stop()
    return nil, "launch: cannot create " .. self._logfile
  end
  local env = loop.child_env()
  local args = {}
  for i = 2, #argv do args[i - 1] = argv[i] end
  local proc, pid = uv.spawn(binary, { args = args, stdio = { nil, logfd, logfd }, cwd = "/", env = env },
    function(code, signal)
      self._exit = exit_words("QEMU", self.pid or -1, code, signal)
      local waiters = self._exit_waiters
      self._exit_waiters = {}
      for _, w in ipairs(waiters) do w(true) end
      loop.close(self._proc)
    end)
  loop.fs("close", logfd)
  if not proc then
    self:stop()
    return nil, ("launch: %s exited at startup: %s"):format(binary, tostring(pid))
  end
  self._proc, self.pid = proc, pid

  local deadline = loop.now() + timeout
  local last
  while true do
    if self._exit then
      local log = self:log()
      self:stop()
      return nil, ("launch: %s exited at startup: %s"):format(binary,
        log ~= "" and log:gsub("%s+$", "") or "(no output)")
    end
    local c, msg = qmp.connect(sock, { timeout = math.max(0.05, deadline - loop.now()) })
    if c then
      self._qmp = c
      -- When the connection drops because QEMU died, say so.
      c.explain = function(reason, done)
        if self._exit then return done(self._exit) end
        local timer, fired = uv.new_timer(), false
        -- On QEMU's exit, or after 3 s: the exit usually follows the
        -- closed socket within milliseconds, but a machine loaded by other
        -- work was seen to take over a second to deliver it.
        local function finish()
          if fired then return end
          fired = true
          loop.close(timer)
          done(self._exit or reason)
        end
        self._exit_waiters[#self._exit_waiters + 1] = finish
        timer:start(3000, 0, finish)
      end
      break
    end
    last = msg
    if loop.now() > deadline then
      local log = self:log()
      self:stop()
      return nil, ("launch: no QMP connection within %gs (%s)%s"):format(
        timeout, tostring(last), log ~= "" and ("; QEMU said: " .. log) or "")
    end
    loop.sleep(0.02)
  end
  return self
end

function VM:pci_address(controller)
  return qemu.pci_address(controller, self.pci_base)
end

function VM:pci_addresses()
  local t = {}
  for i = 0, self.controllers - 1 do t[i] = self:pci_address(i) end
  return t
end

function VM:qmp() return self._qmp end

function VM:vm_backend(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.qmp = self._qmp
  o.timeout = o.timeout or self.timeout
  return qemu.vm_backend(o)
end

function VM:alive()
  return self.pid ~= nil and not self._stopped and self._exit == nil
end

function VM:exit_status() return self._exit end

function VM:kill(signal)
  signal = signal or "KILL"
  if type(signal) ~= "string" or not signal:match("^%w+$") then
    error("kill: signal must be a name such as \"KILL\" or a number", 2)
  end
  if not self:alive() then return false end
  local sig = tonumber(signal) or ("sig" .. signal:lower())
  return self._proc:kill(sig) == 0
end

function VM:log()
  if self._final_log then return self._final_log end
  return read_all(self._logfile)
end

function VM:wait(seconds)
  if not self.pid or self._exit then return true end
  loop.wait("waiting for QEMU to exit", function(done)
    self._exit_waiters[#self._exit_waiters + 1] = done
  end, seconds or 5)
  return self._exit ~= nil
end

function VM:stop()
  if self._stopped then return true end
  self._stopped = true
  if self.pid and self._exit == nil then
    if self._qmp and not self._qmp:is_closed() then
      self._qmp.explain = nil
      self._qmp:execute("quit", nil, 2)
    end
    if not self:wait(5) then
      self._proc:kill("sigterm")
      if not self:wait(2) then
        self._proc:kill("sigkill")
        self:wait(2)
      end
    end
  end
  if self._qmp then self._qmp:close() end
  self._final_log = read_all(self._logfile)
  for _, f in ipairs({ "qmp.sock", "qemu.log", "qemu.pid" }) do
    loop.fs("unlink", self.dir .. "/" .. f)
  end
  loop.fs("rmdir", self.dir)
  return true
end

-- At collection nothing may wait: kill QEMU outright and drop its files.
-- By pid, not through the process handle: when both become garbage
-- together, luv may have finalized the handle already (calling it then
-- crashes).
local function collect(self)
  if self._stopped then return end
  self._stopped = true
  if self.pid and self._exit == nil then uv.kill(self.pid, "sigkill") end
  for _, f in ipairs({ "qmp.sock", "qemu.log", "qemu.pid" }) do os.remove(self.dir .. "/" .. f) end
  os.remove(self.dir)
end

VM.__close = function(self) pcall(VM.stop, self) end
VM.__gc = function(self) pcall(collect, self) end
VM.__tostring = function(self)
  return ("scsictl.qemu.vm(pid %s, %d controller%s, %s%s)"):format(
    tostring(self.pid), self.controllers, self.controllers == 1 and "" or "s",
    self.accel, self._stopped and ", stopped" or "")
end

-- The Linux guest backend over the QEMU guest agent lives in
-- scsictl.qemu_guest; it is reachable from here too.
function qemu.linux_guest(opts)
  return require("scsictl.qemu_guest").linux_guest(opts)
end

return qemu
