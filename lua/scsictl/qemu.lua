--[==[
scsictl.qemu — a VM backend that hot-plugs SCSI disks into a running QEMU
through its QMP socket, and a launcher for a disposable QEMU.

  local scsictl = require("scsictl")
  local qemu = require("scsictl.qemu")
  local vm <close> = assert(qemu.launch{ controllers = 2 })
  local ctl = scsictl.new{ controllers = 2, vm = vm:vm_backend(), linux_guest = guest }

or, with your own QEMU:

  local vm = qemu.vm_backend{ qmp = "/run/myvm/qmp.sock" }

Needs Debian's lua-socket and lua-cjson (the core module `scsictl` does not).

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
      fails, "not supported by the QEMU backend". If device_add fails, the
      node is deleted again.
      Re-issuing an add that already took effect (the same file, format and
      read-only flag at this slot) succeeds, also when only the node was
      left by an interrupted add; a slot holding another file fails.
  backend:remove_scsi_disk(controller, lun)
      device_del, wait for DEVICE_DELETED of that device id, blockdev-del.
      What is already gone is skipped, so a re-issued remove succeeds (also
      when nothing is left at the slot).
  Failures return nil, message (SPEC §4); the message carries QMP's error
  class and description ("device_add: GenericError: Bus 'scsi9.0' not found").

  backend:node_name(controller, lun), backend:device_id(controller, lun)
  backend:client() -> qmp client | nil, msg
  backend:disks() -> QEMU's own view of the SCSI disks (qemu.scsi_disks)
  backend:close()  closes a connection the backend opened itself

qemu.scsi_disks(client) -> array | nil, msg
  Every SCSI disk QEMU has, from query-block plus qom-get of each device's
  bus, scsi-id and lun: { device, bus, controller_id, scsi_id, lun, channel,
  node, file, format, ro }, sorted by bus then lun. controller_id is the
  qdev id of the controller owning the bus.

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
  vm:wait([seconds])  waits (default 5s) until the process has exited;
                      true if it has
  vm:log() -> QEMU's stdout/stderr so far
  vm:stop()  quit over QMP, then TERM, then KILL if needed; removes the
             temporary directory. Idempotent. Also run by <close> and __gc.
]==]

local _, socket = require("scsictl.deps")("scsictl.qemu")
local qmp = require("scsictl.qmp")

local qemu = {}
qemu.qmp = qmp
qemu.QCOW2_MAGIC = "QFI\xfb"
qemu.MAX_LUN = 16383

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

local function detect_format(path, forced)
  if forced ~= "auto" then return forced end
  local f, err = io.open(path, "rb")
  if not f then
    return nil, ("cannot open image '%s': %s"):format(path, tostring(err))
  end
  local head = f:read(4)
  f:close()
  return head == qemu.QCOW2_MAGIC and "qcow2" or "raw"
end

function qemu.vm_backend(opts)
  if type(opts) ~= "table" then error("vm_backend: options must be a table", 2) end
  local c = opts.qmp
  if type(c) ~= "string" and not (type(c) == "table" and c.execute) then
    error("vm_backend: qmp must be a QMP client or a socket path", 2)
  end
  local timeout = opts.timeout or qmp.DEFAULT_TIMEOUT
  if type(timeout) ~= "number" or timeout <= 0 then
    error("vm_backend: timeout must be a positive number", 2)
  end
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
  return setmetatable({
    _qmp = type(c) ~= "string" and c or nil,
    _path = type(c) == "string" and c or nil,
    _own = type(c) == "string",
    timeout = timeout, bus = bus, format = format,
    passthru_driver = pt, prefix = prefix,
  }, Backend)
end

function Backend:node_name(controller, lun)
  return ("%s-node-c%d-l%d"):format(self.prefix, controller, lun)
end

function Backend:device_id(controller, lun)
  return ("%s-disk-c%d-l%d"):format(self.prefix, controller, lun)
end

function Backend:client()
  local c = self._qmp
  if c and not c:is_closed() then return c end
  if not self._path then
    local _, why = c:is_closed()
    return nil, "QMP connection closed: " .. tostring(why)
  end
  local msg
  c, msg = qmp.connect(self._path, { timeout = self.timeout })
  if not c then return nil, msg end
  self._qmp = c
  return c
end

function Backend:close()
  if self._own and self._qmp then self._qmp:close() end
  return true
end

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

local function slot_name(controller, lun)
  return ("controller %d lun %d"):format(controller, lun)
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
  local path, ro = attachment.path, attachment.read_only == true
  if kind == "ExtensibleVirtualDisk" then
    return nil, ("ExtensibleVirtualDisk%s is not supported by the QEMU backend")
      :format(attachment.evd_type and (" (evd_type '" .. tostring(attachment.evd_type) .. "')") or "")
  end
  local node, dev = self:node_name(controller, lun), self:device_id(controller, lun)
  local spec, driver, device_driver
  if kind == "PassThru" then
    driver, device_driver = "host_device", self.passthru_driver
    spec = { driver = driver, ["node-name"] = node, filename = path, ["read-only"] = ro }
  elseif kind == "VirtualDisk" then
    local msg
    driver, msg = detect_format(path, self.format)
    if not driver then return nil, msg end
    device_driver = "scsi-hd"
    spec = { driver = driver, ["node-name"] = node, ["read-only"] = ro,
             file = { driver = "file", filename = path, ["read-only"] = ro } }
  else
    return nil, ("add_scsi_disk: unknown disk type '%s'"):format(tostring(kind))
  end
  local c, msg = self:client()
  if not c then return nil, msg end
  local t = self.timeout

  local function same(n)
    return n.file == path and n.drv == driver and n.ro == ro
  end

  -- 1. The node.
  local ok, class
  ok, msg, class = c:execute("blockdev-add", spec, t)
  if not ok then
    if class == "Closed" or class == "Timeout" then return nil, msg end
    -- Already there (a re-issued add), left over, or a real failure?
    local n, err = find_node(c, node, t)
    if n == nil then return nil, msg .. "; then " .. err end
    if n and not same(n) then
      local d
      d, err = find_device(c, dev, t)
      if d == nil then return nil, msg .. "; then " .. err end
      if d then
        return nil, ("%s already holds '%s' (%s%s) in QEMU"):format(
          slot_name(controller, lun), tostring(n.file), tostring(n.drv),
          n.ro and ", read-only" or "")
      end
      -- A node without its device, left by an interrupted add: replace it.
      ok, err = c:execute("blockdev-del", { ["node-name"] = node }, t)
      if not ok then return nil, msg .. "; then " .. err end
      ok, msg = c:execute("blockdev-add", spec, t)
      if not ok then return nil, msg end
    elseif not n then
      return nil, msg
    end
  end

  -- 2. The device.
  local dspec = { driver = device_driver, id = dev, drive = node,
                  bus = self.bus(controller), channel = 0, ["scsi-id"] = 0,
                  lun = lun }
  ok, msg, class = c:execute("device_add", dspec, t)
  if ok then return true end
  if class == "Closed" then return nil, msg end
  local d, err = find_device(c, dev, t)
  if d == nil then return nil, msg .. "; then " .. err end
  if d and d.drive == node and d.lun == lun and d.bus == dspec.bus then
    return true                  -- re-issued: it is already there
  end
  if d then
    -- Our device id, somewhere else: never touch it.
    return nil, ("%s; device '%s' exists at %s lun %s"):format(msg, dev,
      tostring(d.bus), tostring(d.lun))
  end
  local gone
  gone, err = c:execute("blockdev-del", { ["node-name"] = node }, t)
  if not gone then
    return nil, ("%s; removing node '%s' again also failed: %s"):format(msg, node, err)
  end
  return nil, msg
end

function Backend:remove_scsi_disk(controller, lun)
  if not is_uint(controller) or not is_uint(lun) then
    return nil, "remove_scsi_disk: controller and lun must be integers >= 0"
  end
  local c, msg = self:client()
  if not c then return nil, msg end
  local t = self.timeout
  local node, dev = self:node_name(controller, lun), self:device_id(controller, lun)
  local function ours(e) return type(e.data) == "table" and e.data.device == dev end

  c:drop_events("DEVICE_DELETED", ours)
  local ok, class
  ok, msg, class = c:execute("device_del", { id = dev }, t)
  local wait = ok ~= nil
  if not ok then
    if class == "DeviceNotFound" then
      wait = false               -- already gone
    elseif class == "GenericError" and msg:find("in the process of unplug", 1, true) then
      wait = true                -- a previous remove is still under way
    else
      return nil, msg
    end
  end
  if wait then
    ok, msg = c:wait_event("DEVICE_DELETED", ours, t)
    if not ok then return nil, ("device_del '%s': %s"):format(dev, msg) end
  end
  ok, msg, class = c:execute("blockdev-del", { ["node-name"] = node }, t)
  if ok then return true end
  if class == "Closed" or class == "Timeout" then return nil, msg end
  local n, err = find_node(c, node, t)
  if n == false then return true end  -- already gone
  if n == nil then return nil, msg .. "; then " .. err end
  return nil, msg
end

Backend.__tostring = function(self)
  return ("scsictl.qemu.backend(%s)"):format(self._path
    or (self._qmp and self._qmp.path) or "?")
end

---------------------------------------------------------------------------
-- The launcher.

local VM = {}
VM.__index = VM
VM.__name = "scsictl.qemu.vm"

local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a") or ""
  f:close()
  return s
end

local function kvm_usable()
  local f = io.open("/dev/kvm", "r+")
  if f then f:close() return true end
  return false
end

-- Is process `pid` running (not a zombie) with `mark` in its command line?
-- The mark (the private directory) makes sure a recycled pid is never
-- mistaken for our QEMU, so stop() and kill() never signal another process.
local function pid_alive(pid, mark)
  local stat = io.open("/proc/" .. pid .. "/stat", "r")
  if stat then
    local s = stat:read("a") or ""
    stat:close()
    local state = s:match("^%d+ %b() (%a)")
    if state == nil or state == "Z" or state == "X" then return false end
    local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
    local cmdline = f and f:read("a") or ""
    if f then f:close() end
    -- Empty while the process is between fork and exec.
    return cmdline == "" or cmdline:find(mark, 1, true) ~= nil
  end
  if io.open("/proc/self/stat", "r") then return false end
  -- No procfs: ask kill(1).
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

function qemu.pci_address(controller, base)
  return ("0000:00:%02x.0"):format((base or 4) + controller)
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
  if accel == "auto" then accel = kvm_usable() and "kvm" or "tcg" end
  if accel ~= "kvm" and accel ~= "tcg" then
    error("launch: accel must be \"auto\", \"kvm\" or \"tcg\"", 2)
  end
  local parent = opts.tmpdir or os.getenv("TMPDIR") or "/tmp"
  local p = io.popen("mktemp -d " .. shquote(parent .. "/scsictl-qemu.XXXXXX"), "r")
  local dir = p and p:read("l")
  if p then p:close() end
  if not dir or dir == "" then
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
    pci_base = base, timeout = timeout, _logfile = dir .. "/qemu.log",
  }, VM)

  local words = {}
  for i, a in ipairs(argv) do words[i] = shquote(a) end
  -- An uninstrumented QEMU must not run under a sanitizer runtime that a
  -- sanitizer build preloads into lua5.4 (qemu-img and QEMU can hang there).
  local preload = os.getenv("LD_PRELOAD")
  local env = preload and preload:find("lib%a*san") and "env -u LD_PRELOAD " or ""
  local cmd = ("cd / || exit 1; %s%s </dev/null >%s 2>&1 & echo $!"):format(
    env, table.concat(words, " "), shquote(self._logfile))
  p = io.popen(cmd, "r")
  local pid = p and p:read("l")
  if p then p:close() end
  self.pid = math.tointeger(tonumber(pid or ""))
  if not self.pid then
    self:stop()
    return nil, "launch: could not start " .. argv[1]
  end

  local deadline = socket.gettime() + timeout
  local last
  while true do
    if not pid_alive(self.pid, dir) then
      local log = self:log()
      self:stop()
      return nil, ("launch: %s exited at startup: %s"):format(argv[1],
        log ~= "" and log:gsub("%s+$", "") or "(no output)")
    end
    local c, msg = qmp.connect(sock, { timeout = timeout })
    if c then
      self._qmp = c
      break
    end
    last = msg
    if socket.gettime() > deadline then
      local log = self:log()
      self:stop()
      return nil, ("launch: no QMP connection within %gs (%s)%s"):format(
        timeout, tostring(last), log ~= "" and ("; QEMU said: " .. log) or "")
    end
    socket.sleep(0.02)
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
  return self.pid ~= nil and not self._stopped and pid_alive(self.pid, self.dir)
end

function VM:kill(signal)
  signal = signal or "KILL"
  if type(signal) ~= "string" or not signal:match("^%w+$") then
    error("kill: signal must be a name such as \"KILL\" or a number", 2)
  end
  if not self.pid or self._stopped or not pid_alive(self.pid, self.dir) then return false end
  return os.execute(("kill -%s %d 2>/dev/null"):format(signal, self.pid)) == true
end

function VM:log()
  if self._final_log then return self._final_log end
  return read_all(self._logfile)
end

local function wait_dead(pid, mark, seconds)
  local deadline = socket.gettime() + seconds
  while pid_alive(pid, mark) do
    if socket.gettime() > deadline then return false end
    socket.sleep(0.01)
  end
  return true
end

function VM:wait(seconds)
  if not self.pid then return true end
  return wait_dead(self.pid, self.dir, seconds or 5)
end

function VM:stop()
  if self._stopped then return true end
  self._stopped = true
  if self.pid and pid_alive(self.pid, self.dir) then
    if self._qmp and not self._qmp:is_closed() then
      self._qmp:execute("quit", nil, 2)
    end
    if not wait_dead(self.pid, self.dir, 5) and pid_alive(self.pid, self.dir) then
      os.execute(("kill -TERM %d 2>/dev/null"):format(self.pid))
      if not wait_dead(self.pid, self.dir, 2) and pid_alive(self.pid, self.dir) then
        os.execute(("kill -KILL %d 2>/dev/null"):format(self.pid))
        wait_dead(self.pid, self.dir, 2)
      end
    end
  end
  if self._qmp then self._qmp:close() end
  self._final_log = read_all(self._logfile)
  for _, f in ipairs({ "qmp.sock", "qemu.log", "qemu.pid" }) do
    os.remove(self.dir .. "/" .. f)
  end
  os.remove(self.dir)
  return true
end

VM.__close = function(self) pcall(VM.stop, self) end
VM.__gc = function(self) pcall(VM.stop, self) end
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
