--[==[
scsictl.qemu_guest — a real Linux guest for scsictl: a guest backend that
mounts, unmounts and ejects SCSI disks inside a running Linux guest through
the QEMU guest agent (qemu-ga), and a launcher that boots a small Linux guest
(built by scripts/build-guest.sh) under QEMU with scsictl.qemu's layout.

  local scsictl = require("scsictl")
  local qemu_guest = require("scsictl.qemu_guest")
  local vm <close>, guest = assert(qemu_guest.launch{ controllers = 2 })
  local ctl = scsictl.new{ controllers = 2, vm = vm:vm_backend(), linux_guest = guest }

or, with your own VM and guest:

  local vm = require("scsictl.qemu").vm_backend{ qmp = "/run/myvm/qmp.sock" }
  local guest = qemu_guest.linux_guest{
    agent = "/run/myvm/qga.sock",       -- qemu-ga's chardev socket on the host
    qmp = vm,                           -- the VM backend (qemu.vm_backend): its QMP
  }                                     -- connection finds each controller's PCI address

Needs Debian's lua-luv and lua-cjson, like scsictl.qemu. Runs on the event
loop (scsictl.loop): inside a loop task every call yields while the guest
works, so the steps of many disks overlap; one agent connection serves them
all, one request at a time in arrival order (qemu-ga answers in order), and
guest-exec's status is polled by loop timers. Elsewhere each call runs the
loop until its answer. The agent's channel is controlled by the guest and
treated as untrusted: a line longer than 1 MiB (M.MAX_LINE) or more than 256
messages that answer nothing (M.MAX_UNSOLICITED) fail the call in flight and
drop the connection (the next call reconnects).

WHAT THE GUEST NEEDS
  qemu-ga on a virtio-serial port named org.qemu.guest_agent.0 with
  guest-exec and guest-exec-status allowed (the default); /bin/sh with
  readlink, awk, mount, umount, mkdir, rmdir, mknod, sleep (busybox has them
  all); sysfs on /sys and /dev populated (devtmpfs; missing nodes are made
  with mknod); the virtio_scsi, sd_mod and file system modules loaded; for
  encrypted and verity, dmsetup, od and the dm_crypt (with xts, ecb, aes)
  and dm_verity (sha256) modules; for
  ensure_filesystem, mkfs.<type> (e2fsprogs' mke2fs for ext2/3/4) and
  util-linux's blkid (without blkid, ext2/3/4 are detected by their magic);
  a writable /run or /tmp for the lock files that make a mount, unmount or
  eject re-issued after a host deadline wait for the abandoned run of it,
  whose guest command goes on (/run/scsictl-locks, else /tmp).

qemu_guest.linux_guest(opts) -> backend
  opts.agent     a client from qemu_guest.agent_connect, or the path of the
                 agent's UNIX socket (connected on first use, reconnected on
                 the next call after the connection broke)        (required)
  opts.pci       controller -> PCI address ("0000:00:04.0"): a table indexed
                 by controller number or a function(controller). Default:
                 asked from QEMU with query-pci (opts.qmp), the device whose
                 qdev id is opts.controller_id:format(controller).
  opts.qmp       a scsictl.qmp client, a scsictl.qemu VM backend (its
                 connection is shared: QEMU serves one QMP client at a time),
                 a QMP socket path (a connection of its own), or a function
                 returning a client (only needed without opts.pci)
  opts.controller_id  format of the controllers' qdev ids (default "scsi%d")
  opts.timeout   seconds each callback may take in all, including the waits
                 inside the guest (default 30)

  spec §4 callbacks (failures return nil, message; the message carries the
  guest command's stderr):
  backend:add_mapped_virtual_disk(settings)
      Finds SCSI host H in the guest whose sysfs path holds the controller's
      PCI address, waits (bounded) for /sys/bus/scsi/devices/H:0:0:<lun>/block/sdX
      (asking the host to scan that lun if the hot-plug event is slow),
      takes /dev/sdX or, for partition N > 0, /dev/sdXN (waits for it; made
      with mknod if /dev lacks it). ensure_filesystem: if blkid finds no
      file system of type `filesystem` (default ext4), runs mkfs.<type>.
      Then `mount [-t filesystem] [-o ro,options...] node mount_path` after
      mkdir -p. block_dev: bind-mounts the device node onto a file at
      mount_path instead (when read_only: a read-only bind, and the block
      device made read-only with blockdev --setro, undone at unmount, as a
      read-only mount does not stop writes through a device node).
      encrypted: plain dm-crypt (aes-xts-plain64, a 512-bit key made in the
      guest for this mount, never sent nor stored) as the device-mapper
      mapping scsictl-c<C>-l<L>-p<P>, with a fresh file system
      (ensure_filesystem) or as a raw device (block_dev); refused read-only
      or with neither. verity = { root_hash, hash_offset }: dm-verity over
      the device (the tree's superblock at hash_offset, or with 0 right
      after the ext4 file system), mounted read-only, same mapping name; a
      failed check is a failure naming dm-verity. The same device already
      mounted there is success
      (re-issued step); something else mounted there is a failure. A failed
      mount removes the directory it created, and a mapping it made.
  backend:remove_mapped_virtual_disk(settings)
      umount mount_path if mounted, then removes the directory (or the
      block_dev file) and closes the slot's mapping if there is one.
      Nothing there is success.
  backend:remove_scsi_device(device)
      Refuses while the disk or one of its partitions is mounted (also
      through a device-mapper mapping), closes a mapping of scsictl's left
      over it (refuses for anyone else's); else
      `echo 1 > /sys/bus/scsi/devices/H:0:0:L/delete` and waits until the
      device is gone. Already gone is success.

  backend:sh(script [, timeout]) -> stdout | nil, msg
      Runs /bin/sh -c script in the guest; a non-zero exit is a failure
      whose message holds the exit status and stderr.
  backend:exec(path, args [, timeout]) -> { exitcode, signal, out, err } | nil, msg
  backend:device(controller, lun [, partition]) -> "/dev/sdX" | nil, msg
      the guest's node for a slot (no waiting)
  backend:observe(controllers) -> view | nil, msg
      The guest's view of scsictl's slots, in one guest command (for
      scsictl.reconcile): { devices = { { controller, lun, block = "sdX" },
      ... } (the SCSI disks at H:0:0:<lun> of controllers 0..controllers-1),
      mounts = { { mount_path, controller, lun, partition, device =
      "/dev/sdX1", block = "sdX", count }, ... } (every mount under
      /run/mounts/scsi, a block_dev bind included; controller, lun and
      partition from a <c>_<l>_<p> name, else nil; block is the SCSI disk
      under the mounted device, nil when it is gone; count > 1 for stacked
      mounts), leftovers = { { mount_path, controller, lun, partition } }
      (entries there with nothing mounted), locked = { path, ... } }.
      It first waits (bounded) until no live guest step holds a lock (a
      mount path's, or an eject's: /run/mounts/scsi/<c>_<l>); what is
      still locked is listed in locked.
  backend:pci_address(controller) -> address | nil, msg
  backend:agent() -> the agent client | nil, msg
  backend:close()

qemu_guest.agent_connect(path [, opts]) -> agent | nil, msg
  opts.timeout  default timeout of each wait (default 10)
  opts.retry    seconds between guest-sync-delimited attempts (default 0.5)
  agent:sync([timeout]) -> true | nil, msg
      guest-sync-delimited with a random id (a raw 0xFF first, to flush the
      agent's parser), retried every opts.retry (0.5 s) until the agent
      answers or the timeout passes; output before the answer is dropped.
  agent:execute(command [, arguments [, timeout]]) -> result | nil, msg, class
  agent:exec(path, args [, timeout]) -> { exitcode, signal, out, err } | nil, msg
      guest-exec with capture-output, then guest-exec-status polled by loop
      timers (2 ms, doubling to 10 ms, or to 5 ms times the commands running
      at once: each poll costs the guest CPU).
  agent.requests, agent.busy_seconds
      requests answered (or failed) so far, and the time one was in flight:
      the agent serves one at a time, so busy_seconds / wall time is how
      loaded the channel is.
  agent:close()

qemu_guest.launch(opts) -> vm, backend | nil, msg
  Boots a Linux guest: scsictl.qemu.launch (controllers scsi0.. at fixed
  PCI addresses, QMP) plus -kernel/-initrd/-append, -no-reboot, the serial
  console in a log file, and qemu-ga's chardev socket with a virtio-serial
  port org.qemu.guest_agent.0, in a private temporary directory; then `cont`
  and a wait (bounded) until the agent answers guest-sync-delimited.
  opts: controllers (required), kernel, initrd (default: the image built by
        scripts/build-guest.sh into guest_dir, built if missing unless
        build = false; the uncompressed vmlinux is preferred), guest_dir
        (default: qemu_guest.locate().guest_dir), append
        ("console=ttyS0 quiet panic=-1"), memory ("256M"), accel ("auto" |
        "kvm" | "tcg", default $SCSICTL_QEMU_ACCEL or "tcg"; "auto" boots
        under KVM when /dev/kvm opens and falls back to TCG when that boot
        does not reach the agent within kvm_timeout (default 10 s): /dev/kvm
        can exist and still fail to boot a guest; a failed KVM boot is not
        tried again by the same process), boot_timeout (seconds until the
        agent answers, default 60), timeout
        (the guest backend's, default 30), qemu_timeout (QMP, default 10),
        args (more QEMU arguments), binary, machine, tmpdir.
  The vm is scsictl.qemu's vm (pid, socket, accel, pci_address, qmp,
  vm_backend, alive, kill, wait, log) plus:
  vm.boot_seconds      launch to agent answer, seconds
  vm.kvm_failure       why a KVM attempt was given up (nil if none)
  vm.agent_socket, vm.guest_dir (the kernel's directory)
  vm:console() -> the guest's serial console output so far
  vm:guest() -> the backend
  vm:stop()  stops QEMU (scsictl.qemu's stop: quit, TERM, KILL) and removes
             the temporary directory; idempotent; also <close> and __gc.

qemu_guest.image([opts]) -> { kernel, vmlinux, initrd, dir, kver } | nil, msg
  The guest image in opts.guest_dir, built with the guest builder when
  missing (unless opts.build == false).

qemu_guest.locate([o]) -> { builder, guest_dir, checkout, tried }
  Where image() finds the guest builder and its default cache, for this
  module's file: in a checkout (<root>/lua/scsictl/qemu_guest.lua) the
  builder is <root>/scripts/build-guest.sh and the cache <root>/build/guest;
  installed (<prefix>/share/lua/5.x/scsictl/, a LuaRocks tree or
  /usr/local) it is <prefix>/bin/scsictl-build-guest, else
  scsictl-build-guest on $PATH, and the cache $XDG_CACHE_HOME/scsictl/guest
  or ~/.cache/scsictl/guest. $SCSICTL_GUEST_DIR overrides the cache.
  builder is nil when none exists; tried lists the paths looked at, in
  order; checkout is <root> or nil. o (tests): source (the module's path),
  getenv, exists (path -> boolean).
]==]

local uv, cjson = require("scsictl.deps")("scsictl.qemu_guest", "luv", "cjson")
local loop = require("scsictl.loop")
local qemu = require("scsictl.qemu")
local qmp = require("scsictl.qmp")
local conn = require("scsictl.conn")
local by_slot = require("scsictl.reconcile").by_slot

local M = {}
M.AGENT_PORT = "org.qemu.guest_agent.0"
M.DEFAULT_TIMEOUT = 30
M.DEFAULT_APPEND = "console=ttyS0 quiet panic=-1"
M.IMAGE_FORMAT = "4"        -- scripts/build-guest.sh's FORMAT
M.MAX_LINE = 1024 * 1024
M.MAX_UNSOLICITED = 256
-- guest-exec-status polls: the first after 2 ms, doubling up to 10 ms, or
-- 5 ms times the commands running at once when that is longer.
M.EXEC_POLL_FIRST = 0.002
M.EXEC_POLL_MAX = 0.01
M.EXEC_POLL_SHARE = 0.005   -- and at least this times the commands running

local now = loop.now

local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function is_uint(v) return math.type(v) == "integer" and v >= 0 end

---------------------------------------------------------------------------
-- Base64 (guest-exec's out-data / err-data).

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64DEC = {}
for i = 1, 64 do B64DEC[B64:byte(i)] = i - 1 end

local function b64decode(s)
  if type(s) ~= "string" then return "" end
  s = s:gsub("[^%w%+/]", "")
  local out, n = {}, 0
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    a, b = B64DEC[a] or 0, B64DEC[b] or 0
    local v = (a << 18) | (b << 12) | ((c and B64DEC[c] or 0) << 6) | (d and B64DEC[d] or 0)
    n = n + 1
    if d then
      out[n] = string.char(v >> 16, (v >> 8) & 255, v & 255)
    elseif c then
      out[n] = string.char(v >> 16, (v >> 8) & 255)
    else
      out[n] = string.char(v >> 16)
    end
  end
  return table.concat(out)
end
M.b64decode = b64decode

---------------------------------------------------------------------------
-- The guest agent client.

local Agent = {}
Agent.__index = Agent
Agent.__name = "scsictl.qemu_guest.agent"

local seeded = false
local function random_id()
  if not seeded then
    local seed = uv.hrtime()
    math.randomseed(seed, uv.os_getpid())
    seeded = true
  end
  return math.random(1, 0x7fffffff)
end

-- The connection is gone: the request in flight and every queued one fail.
-- (Called once, by the connection, which is closed already.)
function Agent:_broken(msg)
  if self._closed then return end
  self._closed = msg
  local fail = self._fail
  self._accept, self._fail = nil, nil
  if fail then fail(nil, msg, "Closed") end
  local queue = self._queue
  self._queue = {}
  for _, turn in ipairs(queue) do turn(true) end
end

-- One line from the agent: the answer awaited, or a stale one (too many of
-- those and the connection is dropped).
function Agent:_on_line(line)
  local accept = self._accept
  if accept and accept(line) then
    self._unsolicited = 0
    return nil
  end
  self._unsolicited = self._unsolicited + 1
  if self._unsolicited > M.MAX_UNSOLICITED then
    return ("the guest agent sent more than %d messages that answer nothing; "
      .. "connection dropped"):format(M.MAX_UNSOLICITED)
  end
end

-- Takes the connection's turn (requests go one at a time, in order).
function Agent:_acquire(what, timeout)
  if not self._busy then
    self._busy = true
    return true
  end
  local mine
  local ok, msg, class = loop.wait(what, function(done)
    mine = done
    self._queue[#self._queue + 1] = mine
    return function()
      for i, t in ipairs(self._queue) do if t == mine then table.remove(self._queue, i) break end end
    end
  end, timeout)
  if not ok then return nil, msg, class end
  return true
end

function Agent:_release()
  local nxt = table.remove(self._queue, 1)
  if nxt then nxt(true) else self._busy = false end
end

-- Sends data and waits for the first line that accept(line) turns into a
-- value (non-nil); other lines are stale answers and are skipped.
function Agent:_exchange(what, data, accept, timeout)
  if self._closed then return nil, ("%s: %s"):format(what, self._closed), "Closed" end
  local ok, msg, class = self:_acquire(what, timeout)
  if not ok then return nil, msg, class end
  if self._closed then
    self:_release()
    return nil, ("%s: %s"):format(what, self._closed), "Closed"
  end
  local sent = now()
  local r1, r2, r3 = loop.wait(what, function(done)
    self._accept = function(line)
      local v = accept(line)
      if v == nil then return false end
      self._accept, self._fail = nil, nil
      done(v)
      return true
    end
    self._fail = done
    self._conn:write(data)
    return function() self._accept, self._fail = nil, nil end
  end, timeout)
  self.requests, self.busy_seconds = self.requests + 1, self.busy_seconds + (now() - sent)
  self:_release()
  if r1 == nil and r3 == "Closed" and not r2:find(what, 1, true) then
    r2 = ("%s: %s"):format(what, r2)
  end
  return r1, r2, r3
end

local decode = qmp.decode -- JSON object, integral numbers as integers

function Agent:sync(timeout)
  timeout = timeout or self.timeout
  local deadline = now() + timeout
  local last = "no answer"
  while true do
    local id = random_id()
    local data = "\255" .. cjson.encode({ execute = "guest-sync-delimited", arguments = { id = id } }) .. "\n"
    local r, msg, class = self:_exchange("guest-sync-delimited", data, function(line)
      -- The answer follows a 0xFF byte; anything before it is stale.
      local at = line:find("\255[^\255]*$")
      if not at then return nil end
      local obj = decode(line:sub(at + 1))
      if obj and obj["return"] == id then return true end
      if obj and obj.error then
        last = tostring(type(obj.error) == "table" and obj.error.desc or obj.error)
      end
    end, math.max(0.001, math.min(self.retry, deadline - now())))
    if r then
      self._synced = true
      return true
    end
    if class ~= "Timeout" then return nil, msg, class end
    if loop.current() and loop.current().cancelled or now() >= deadline then
      return nil, ("guest-sync-delimited: the guest agent did not answer within %gs (%s)")
        :format(timeout, last), "Timeout"
    end
  end
end

function Agent:execute(command, arguments, timeout)
  timeout = timeout or self.timeout
  local deadline = now() + timeout
  if not self._synced then
    local ok, msg, class = self:sync(timeout)
    if not ok then return nil, msg, class end
  end
  self._next = self._next + 1
  local id = "scsictl-" .. self._next
  local req = { execute = command, id = id }
  if arguments and next(arguments) ~= nil then req.arguments = arguments end
  local obj, msg, class = self:_exchange(command, cjson.encode(req) .. "\n", function(line)
    local o = decode(line:gsub("^[^{]*", ""))
    if o and o.id == id then return o end
  end, math.max(0.001, deadline - now()))
  if not obj then
    if class == "Timeout" or class == "Cancelled" then
      self._synced = false   -- a late reply may come: resync before the next command
    end
    return nil, msg, class
  end
  if obj["return"] ~= nil then return obj["return"] end
  local e = type(obj.error) == "table" and obj.error or {}
  local cls = type(e.class) == "string" and e.class or "GenericError"
  return nil, ("%s: %s: %s"):format(command, cls, tostring(e.desc or "(no description)")), cls
end

-- Polls guest-exec-status for pid until it exits. Every poll costs the
-- guest CPU (qemu-ga under TCG: about half a millisecond), so the more
-- commands run at once, the less often each is polled.
function Agent:_await(path, pid, timeout, deadline)
  local delay = M.EXEC_POLL_FIRST
  while true do
    local left = deadline - now()
    if left <= 0 then
      return nil, ("guest-exec %s: still running in the guest after %gs (pid %s)")
        :format(path, timeout, tostring(pid)), "Timeout"
    end
    local st, msg, class = self:execute("guest-exec-status", { pid = pid }, left)
    if not st then return nil, msg, class end
    if st.exited then
      return { exitcode = st.exitcode, signal = st.signal,
               out = b64decode(st["out-data"]), err = b64decode(st["err-data"]) }
    end
    local slept
    slept, msg, class = loop.sleep(math.min(delay, math.max(deadline - now(), 0)))
    if not slept then return nil, ("guest-exec %s: %s"):format(path, msg), class end
    delay = math.min(delay * 2, math.max(M.EXEC_POLL_MAX, M.EXEC_POLL_SHARE * self._running))
  end
end

function Agent:exec(path, args, timeout)
  timeout = timeout or self.timeout
  local deadline = now() + timeout
  local spec = { path = path, ["capture-output"] = true }
  if args and #args > 0 then spec.arg = args end
  local r, msg, class = self:execute("guest-exec", spec, timeout)
  if not r then return nil, msg, class end
  self._running = self._running + 1
  local res
  res, msg, class = self:_await(path, r.pid, timeout, deadline)
  self._running = self._running - 1
  return res, msg, class
end

function Agent:is_closed() return self._closed ~= nil, self._closed end

function Agent:close()
  self._conn:close("closed by the client")
  return true
end

Agent.__close = Agent.close
Agent.__tostring = function(self)
  return ("scsictl.qemu_guest.agent(%s%s)"):format(self.path, self._closed and ", closed" or "")
end

function M.agent_connect(path, opts)
  local timeout
  opts, timeout = conn.connect_args("agent_connect", path, opts, 10)
  local pipe, msg = conn.connect(path, "agent connect to " .. path, timeout)
  if not pipe then return nil, msg, "Closed" end
  local self = setmetatable({ path = path, timeout = timeout, retry = opts.retry or 0.5,
    _next = 0, _queue = {}, _unsolicited = 0, _running = 0,
    requests = 0, busy_seconds = 0 }, Agent)
  self._conn = conn.open(pipe, {
    max_line = M.MAX_LINE,
    texts = { broke = "agent connection closed (%s)",
              peer_closed = "agent connection closed by the guest",
              too_long = "the guest agent sent %s; connection dropped" },
    on_line = function(line) return self:_on_line(line) end,
    on_broken = function(reason) self:_broken(reason) end,
  })
  return self
end

---------------------------------------------------------------------------
-- Guest-side shell snippets.
--
-- Under TCG every process the guest starts costs milliseconds of guest CPU,
-- which is what bounds many disks at once; so the scripts use shell builtins
-- (globs, read, test) for what they check and start a process only to act
-- (mkdir, mount, umount, rmdir) or to parse mountinfo once (awk).

-- Shared functions, all setting variables rather than printing (a $(...)
-- is a process): find_host <pci> sets host to the SCSI host number under
-- that PCI device; tick sets now to centiseconds since boot; wait_until
-- <centiseconds> <command...> polls a command; mounted_at <escaped path>
-- sets cur to "maj:min root fstype count" of the mounts there (empty if none).
local PRELUDE = [[
fail() { echo "$*" >&2; exit 1; }
find_host() {
  for h in /sys/bus/pci/devices/"$1"/host* /sys/bus/pci/devices/"$1"/*/host*; do
    [ -d "$h" ] && { host=${h##*/host}; return 0; }
  done
  # Another controller layout: any host whose sysfs path holds the address.
  for h in /sys/class/scsi_host/host*; do
    [ -e "$h" ] || continue
    case "$(readlink -f "$h")" in
    */"$1"/*) host=${h##*/host}; return 0 ;;
    esac
  done
  return 1
}
# lock_path <path>: a lock, held until the script exits, on a file named
# after a mount path: a guest command outlives a host deadline, so a step
# re-issued after one must wait for the abandoned run of it (or of an
# unmount of the same path). The file is made with noclobber (O_EXCL) and
# holds the owner's pid; a holder that died without removing it (killed)
# is taken over. No lock tool is needed: util-linux's flock, a dynamically
# linked program, costs some 25 ms of guest CPU per step under TCG.
lock_path() {
  _d=/run/scsictl-locks
  [ -d "$_d" ] || mkdir -p "$_d" 2>/dev/null || _d=/tmp
  _k=$1
  _lock=$_d/${_k//\//%}
  tick; _end=$(( now + wait ))
  while :; do
    set -C
    if { echo $$ > "$_lock"; } 2>/dev/null; then
      set +C
      trap 'rm -f "$_lock"' EXIT
      return 0
    fi
    set +C
    _pid=
    read -r _pid < "$_lock" 2>/dev/null
    if [ -n "$_pid" ] && [ ! -d "/proc/$_pid" ]; then rm -f "$_lock"; continue; fi
    tick; [ "$now" -ge "$_end" ] && return 1
    sleep "$step"
  done
}
tick() { read -r u _ < /proc/uptime; now=$(( ${u%%.*} * 100 + 1${u#*.} - 100 )); }
wait_until() {
  _cs=$1; shift
  "$@" && return 0
  tick; _end=$(( now + _cs ))
  until "$@"; do
    tick; [ "$now" -ge "$_end" ] && return 1
    sleep "$step"
  done
}
mounted_at() {
  cur=$(awk -v mp="$1" '$5 == mp { n++; r = ""; for (i = 7; i <= NF; i++) if ($i == "-") { r = $(i + 1); break }
    line = $3 " " $4 " " r } END { if (n) print line " " n }' /proc/self/mountinfo)
}
]]

local STEP = "0.02"          -- seconds between polls inside the guest

-- Mount path as /proc/self/mountinfo writes it.
local function mountinfo_escape(p)
  return (p:gsub("[ \t\n\\]", function(c) return ("\\%03o"):format(c:byte()) end))
end

-- Device-mapper helpers of the mount, unmount and eject scripts: dm_find
-- <name> sets dmdev (dm-N) and dmmm (maj:min) of the mapping of that name;
-- dm_close <name> removes it if it exists (dmsetup's --retry rides out a
-- last opener that is still letting go, such as an umount in progress).
local DM_PRELUDE = [[
dm_find() {
  dmdev=
  for _d in /sys/block/dm-*; do
    [ -e "$_d/dm/name" ] || continue
    read -r _n < "$_d/dm/name"
    [ "$_n" = "$1" ] || continue
    dmdev=${_d##*/}
    read -r dmmm < "$_d/dev"
    return 0
  done
  return 1
}
dm_close() {
  dm_find "$1" || return 0
  dmsetup remove --retry "$1" >/dev/null && return 0
  dm_find "$1" || return 0
  fail "cannot close the device-mapper mapping $1 (/dev/$dmdev)"
}
]]

-- The guest's device-mapper name of a partition's encrypted or verity
-- mapping: fixed by the slot, so that a re-issued step, the unmount and the
-- eject find it again without asking.
local function dm_name(controller, lun, partition)
  return ("scsictl-c%d-l%d-p%d"):format(controller, lun, partition or 0)
end

local function mount_script(s, pci, wait)
  local ft = s.filesystem
  local opts = {}
  if s.read_only then opts[#opts + 1] = "ro" end
  for _, o in ipairs(s.options) do opts[#opts + 1] = o end
  local v = {
    "pci=" .. shquote(pci), "lun=" .. s.lun, "part=" .. s.partition,
    "mp=" .. shquote(s.mount_path), "mpe=" .. shquote(mountinfo_escape(s.mount_path)),
    "fstype=" .. shquote(ft), "opts=" .. shquote(table.concat(opts, ",")),
    "ro=" .. (s.read_only and 1 or 0), "ensure=" .. (s.ensure_filesystem and 1 or 0),
    "blockdev=" .. (s.block_dev and 1 or 0), "wait=" .. wait, "pwait=" .. math.min(wait, 300),
    "step=" .. STEP, "dm=" .. s.dm, "dmname=" .. shquote(dm_name(s.controller, s.lun, s.partition)),
    "roothash=" .. (s.verity and s.verity.root_hash or ""),
    "hoff=" .. (s.verity and s.verity.hash_offset or 0),
  }
  return table.concat(v, "\n") .. "\n" .. PRELUDE .. DM_PRELUDE .. [[
lock_path "$mp" || fail "$mp is locked by another scsictl step (pid $_pid) that did not end"
find_host "$pci" || fail "no SCSI host in the guest for the controller at PCI $pci"
sd=/sys/bus/scsi/devices/$host:0:0:$lun
disk() {
  for b in "$sd"/block/*; do [ -e "$b" ] && { blk=${b##*/}; return 0; }; done
  return 1
}
# The hot-plug event normally makes the kernel scan; ask for that lun if slow.
if ! wait_until 50 disk; then
  echo "0 0 $lun" > "/sys/class/scsi_host/host$host/scan" 2>/dev/null
  wait_until "$wait" disk || fail "no disk appeared at $host:0:0:$lun (controller at PCI $pci, lun $lun)"
fi
name=$blk
[ "$part" -gt 0 ] && name=$blk$part
# Partitions are scanned as the disk is added: a short wait.
wait_until "$pwait" test -f "/sys/class/block/$name/dev" || fail "/dev/$blk has no partition $part"
read -r majmin < "/sys/class/block/$name/dev"
node=/dev/$name
if ! wait_until 50 test -b "$node"; then
  mknod "$node" b "${majmin%:*}" "${majmin#*:}" || fail "cannot create $node"
fi
# mounted_here: mounted_at, and success if it is this device; another
# device there is a failure.
mounted_here() {
  mounted_at "$mpe"
  [ -n "$cur" ] || return 1
  set -- $cur
  if [ "$blockdev" = 1 ]; then
    [ "$2" = "/$name" ] && exit 0
  else
    [ "$1" = "$majmin" ] && exit 0
  fi
  fail "$mp already has something else mounted on it ($1 $2 $3)"
}
# dm (crypt or verity): what is mounted is the mapping named $dmname over
# the device; dm_use makes it the node. An existing mapping must sit on
# this device; without one, anything mounted at the path is something else.
dm_use() {
  name=$dmdev majmin=$dmmm node=/dev/$dmdev
  wait_until 50 test -b "$node" || mknod "$node" b "${majmin%:*}" "${majmin#*:}" || fail "cannot create $node"
}
# Plain dm-crypt, aes-xts-plain64 with a 512-bit key made here from the
# guest's RNG and handed to the kernel through a pipe: it never crosses the
# agent channel nor touches a disk, and dies with the mapping (a scratch
# disk needs no header, key slot or passphrase stretching).
dm_crypt_create() {
  read -r size < "/sys/class/block/$rawname/size"
  key=$(od -An -vtx1 -N64 /dev/urandom)
  key=${key//[!0-9a-f]/}
  [ "${#key}" = 128 ] || fail "dm-crypt: cannot read a key from /dev/urandom"
  echo "0 $size crypt aes-xts-plain64 $key 0 $rawmm 0" | dmsetup create "$dmname" \
    || fail "dm-crypt: cannot set up $dmname over $raw"
  key=
}
# dm-verity over the device, data and hash tree on it: the tree's superblock
# (veritysetup's format) at byte hoff, or, with hoff 0, right after the ext4
# file system, whose superblock gives its size (blocks count x block size).
dm_verity_create() {
  off=$hoff
  if [ "$off" = 0 ]; then
    off=$(od -An -v -tu4 -j 1024 -N 1024 "$raw" | awk '{ for (i = 1; i <= NF; i++) w[n++] = $i }
      END { if (w[14] % 65536 != 61267) exit 1
            b = w[1] * 1024; if (int(w[24] / 128) % 2) b += w[84] * 4398046511104
            for (i = 0; i < w[6]; i++) b *= 2
            printf "%.0f\n", b }') \
      || fail "dm-verity: no ext4 file system on $raw to find the hash tree after (set verity.hash_offset)"
  fi
  sb=$(od -An -v -tx1 -j "$off" -N 512 "$raw" | awk '
    function h(s,  i, v) { for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
                           return v + 0 }
    function le(at, n,  i, s) { for (i = at + n - 1; i >= at; i--) s = s b[i]; return h(s) }
    { for (i = 1; i <= NF; i++) b[n++] = $i }
    END {
      for (i = 0; i < 8; i++) sig = sig b[i]
      if (sig != "7665726974790000") { print "no verity superblock"; exit 1 }
      if (le(8, 4) != 1) { print "verity superblock version " le(8, 4) " is not 1"; exit 1 }
      for (i = 32; i < 39; i++) alg = alg b[i]
      if (alg != "73686132353600") { print "the hash tree is not sha256"; exit 1 }
      ns = le(80, 2)
      if (ns > 256) { print "verity superblock salt of " ns " bytes"; exit 1 }
      for (i = 88; i < 88 + ns; i++) salt = salt b[i]
      printf "%d %d %.0f %s %d\n", le(64, 4), le(68, 4), le(72, 8), ns ? salt : "-", le(12, 4)
    }') || fail "dm-verity: ${sb:-cannot read} at byte $off of $raw"
  set -- $sb
  dbs=$1 hbs=$2 nb=$3 salt=$4 htype=$5
  [ "$dbs" -ge 512 ] && [ "$hbs" -ge 512 ] && [ $((nb * dbs)) -le "$off" ] \
    || fail "dm-verity: the verity superblock at byte $off of $raw is not valid ($nb blocks of $dbs bytes)"
  echo "0 $((nb * dbs / 512)) verity $htype $rawmm $rawmm $dbs $hbs $nb $(( (off + 512 + hbs - 1) / hbs ))" \
      "sha256 $roothash $salt" | dmsetup create -r "$dmname" \
    || fail "dm-verity: cannot set up $dmname over $raw"
}
# After a failed mount: dm-verity marks a mapping whose reads failed their
# check as corrupted (status C); that is the message, first and short (the
# core keeps 200 bytes of a callback's message).
verity_failed() {
  case " $(dmsetup status "$dmname" 2>/dev/null) " in
  *" verity C "*)
    fail "dm-verity: $raw failed verification against root hash ${roothash%"${roothash#????????????????}"}..." \
      "(a damaged layer or a wrong root hash)" ;;
  esac
}
if [ -n "$dm" ]; then
  raw=$node rawname=$name rawmm=$majmin
  if dm_find "$dmname"; then
    [ -e "/sys/block/$dmdev/slaves/$rawname" ] \
      || fail "device-mapper mapping $dmname (/dev/$dmdev) exists, but not over $raw"
    dm_use
  else
    name=none majmin=none
  fi
fi
# Nothing is mounted on a path that does not exist.
[ -e "$mp" ] && mounted_here
if [ -n "$dm" ]; then
  # A mapping that is not mounted here was left by a run that failed before
  # its mount: a verity one with this very table is used again; a crypt one
  # may hold a half-made file system and goes (a fresh key, a fresh mkfs).
  if [ -n "$dmdev" ]; then
    keep=0
    if [ "$dm" = verity ]; then
      case " $(dmsetup table "$dmname" 2>/dev/null) " in
      *" verity "*" $rawmm $rawmm "*" $roothash "*) keep=1 ;;
      esac
    fi
    [ "$keep" = 1 ] || { dm_close "$dmname"; dmdev=; }
  fi
  if [ -z "$dmdev" ]; then
    # From here a failure takes the new mapping away again (the lock's own
    # clean-up, lock_path's trap, is kept).
    trap 'st=$?; [ "$st" = 0 ] || dmsetup remove --retry "$dmname" >/dev/null 2>&1; rm -f "$_lock"' EXIT
    if [ "$dm" = crypt ]; then
      dm_crypt_create
    else
      dm_verity_create
    fi
    dm_find "$dmname" || fail "device-mapper mapping $dmname did not appear"
  fi
  dm_use
fi
if [ "$blockdev" = 1 ]; then
  [ -d "${mp%/*}" ] || mkdir -p "${mp%/*}" || exit 1
  [ -d "$mp" ] && { rmdir "$mp" || exit 1; }
  [ -e "$mp" ] || : > "$mp" || exit 1
  if ! mount --bind "$node" "$mp"; then mounted_here; rm -f "$mp"; exit 1; fi
  # A read-only mount does not stop writes through a device node: the
  # block device itself is made read-only too (undone at unmount).
  if [ "$ro" = 1 ] && ! { mount -o remount,bind,ro "$mp" && blockdev --setro "$node"; }; then
    umount "$mp"; rm -f "$mp"; exit 1
  fi
  exit 0
fi
if [ "$ensure" = 1 ]; then
  want=${fstype:-ext4}
  have=
  # A new crypt mapping (a fresh key) holds random data: always made.
  if [ "$dm" = crypt ]; then
    :
  elif command -v blkid >/dev/null 2>&1; then
    have=$(blkid -p -s TYPE -o value "$node" 2>/dev/null)
  elif [ "$(dd if="$node" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 53ef ]; then
    have=ext4
    case $want in ext2|ext3) have=$want ;; esac
  fi
  if [ "$have" != "$want" ]; then
    command -v "mkfs.$want" >/dev/null 2>&1 || fail "ensure_filesystem: the guest has no mkfs.$want"
    mkfs."$want" -F -q "$node" >/dev/null || fail "ensure_filesystem: mkfs.$want $node failed"
  fi
  fstype=$want
fi
made=0
if [ ! -d "$mp" ]; then mkdir -p "$mp" || exit 1; made=1; fi
set -- mount
[ -n "$fstype" ] && set -- "$@" -t "$fstype"
[ -n "$opts" ] && set -- "$@" -o "$opts"
# mount's message is kept: a verity failure is told instead of it.
if ! err=$("$@" "$node" "$mp" 2>&1); then
  # The same mount by an earlier, abandoned run of this step got there
  # first (its guest command outlives the host's deadline): success.
  mounted_here
  [ "$made" = 1 ] && rmdir "$mp" 2>/dev/null
  [ "$dm" = verity ] && verity_failed
  fail "$err"
fi
]]
end

local function unmount_script(s, wait)
  -- The slot names the partition's device-mapper mapping, closed after the
  -- umount whatever the settings say (a mapping left by a failed run goes too).
  local dmname = ""
  if is_uint(s.controller) and is_uint(s.lun) and is_uint(s.partition or 0) then
    dmname = dm_name(s.controller, s.lun, s.partition)
  end
  return table.concat({ "mp=" .. shquote(s.mount_path), "wait=" .. wait, "step=" .. STEP,
    "mpe=" .. shquote(mountinfo_escape(s.mount_path)), "dmname=" .. shquote(dmname),
    "rodev=" .. ((s.block_dev and s.read_only) and 1 or 0) }, "\n") .. "\n" .. PRELUDE .. DM_PRELUDE .. [[
if [ ! -e "$mp" ] && [ ! -L "$mp" ]; then
  [ -n "$dmname" ] && dm_find "$dmname" || exit 0
fi
lock_path "$mp" || fail "$mp is locked by another scsictl step (pid $_pid) that did not end"
mounted_at "$mpe"
if [ -n "$cur" ]; then
  set -- $cur
  if [ "$rodev" = 1 ] && [ "$3" = devtmpfs ] && [ -b "/dev$2" ]; then
    blockdev --setrw "/dev$2"
  fi
  # One umount for each mount stacked there, then a check that none is left.
  i=0
  # A failed umount is fine if an earlier, abandoned run of this step
  # took the mount away meanwhile.
  while [ "$i" -lt "$4" ]; do
    umount "$mp" || { mounted_at "$mpe"; [ -z "$cur" ] && break; exit 1; }
    i=$((i + 1))
  done
  mounted_at "$mpe"
  [ -z "$cur" ] || fail "$mp is still mounted after $i umounts"
fi
if [ -d "$mp" ]; then
  rmdir "$mp" || [ ! -e "$mp" ] || exit 1
elif [ -e "$mp" ] || [ -L "$mp" ]; then
  rm -f "$mp" || exit 1
fi
[ -n "$dmname" ] && dm_close "$dmname"
exit 0
]]
end

local function eject_script(pci, controller, lun, wait)
  return table.concat({ "pci=" .. shquote(pci), "lun=" .. lun, "wait=" .. wait,
    "slot=" .. shquote(("%s/%d_%d"):format(M.GUEST_ROOT, controller, lun)),
    "step=" .. STEP }, "\n") .. "\n" .. PRELUDE .. DM_PRELUDE .. [=[
# An eject of the slot that outlived its host agent ends first, so that an
# observe (which waits for live locks) never sees a disk half ejected.
lock_path "$slot" || fail "$slot is locked by another scsictl eject (pid $_pid) that did not end"
find_host "$pci" || exit 0
sd=/sys/bus/scsi/devices/$host:0:0:$lun
[ -e "$sd" ] || exit 0
# The disk and its partitions as "maj:min /name" pairs, checked against
# mountinfo in one pass (mounts of them, or binds of their device nodes);
# with them the device-mapper mappings over them (holders), mounted or not.
devs=
holders=
for b in "$sd"/block/*; do
  [ -e "$b" ] || continue
  blk=${b##*/}
  for d in "$b/dev" "$b"/"$blk"*/dev; do
    [ -f "$d" ] || continue
    read -r mm < "$d"
    n=${d%/dev}; n=${n##*/}
    devs="$devs $mm /$n"
    for h in "${d%/dev}"/holders/dm-*; do
      [ -f "$h/dev" ] || continue
      read -r mm < "$h/dev"
      devs="$devs $mm /${h##*/}"
      holders="$holders ${h##*/}"
    done
  done
done
if [ -n "$devs" ]; then
  busy=$(awk -v devs="$devs" 'BEGIN { n = split(devs, d, " ")
      for (i = 1; i < n; i += 2) { mm[d[i]] = d[i + 1]; root[d[i + 1]] = 1 } }
    $3 in mm || ($4 in root && $0 ~ / - devtmpfs /) { print ($3 in mm ? mm[$3] : $4); exit }' /proc/self/mountinfo)
  if [ -n "$busy" ]; then
    case $busy in
    /dm-*) read -r n < "/sys/block${busy}/dm/name"
           fail "/dev${busy} (device-mapper mapping $n over $blk) is still mounted" ;;
    esac
    fail "/dev${busy} is still mounted"
  fi
fi
# A mapping of ours still open after its unmount (a run that failed midway)
# is closed; anyone else's is left alone and stops the eject.
for h in $holders; do
  read -r n < "/sys/block/$h/dm/name" || continue
  case $n in
  scsictl-*) dm_close "$n" ;;
  *) fail "/dev/$blk is held by the device-mapper mapping $n (/dev/$h)" ;;
  esac
done
# No sync: umount wrote the file system back, and the kernel writes back a
# block device's cache when its last opener closes it.
echo 1 > "$sd/delete" 2>/dev/null || [ ! -e "$sd" ] || fail "cannot delete SCSI device $host:0:0:$lun"
wait_until "$wait" test ! -e "$sd" || fail "SCSI device $host:0:0:$lun is still there after the delete"
exit 0
]=]
end

---------------------------------------------------------------------------
-- The guest backend.

local Guest = {}
Guest.__index = Guest
Guest.__name = "scsictl.qemu_guest.backend"

function M.linux_guest(opts)
  local self = conn.owner("linux_guest", opts, "agent", "an agent client", "exec", M.DEFAULT_TIMEOUT)
  local pci = opts.pci
  if pci ~= nil and type(pci) ~= "table" and type(pci) ~= "function" then
    error("linux_guest: pci must be a table or a function", 2)
  end
  local q = opts.qmp
  if q ~= nil and type(q) ~= "string" and type(q) ~= "function"
      and not (type(q) == "table" and (q.execute or q.client)) then
    error("linux_guest: qmp must be a QMP client, a scsictl.qemu VM backend, a socket path or a function", 2)
  end
  if pci == nil and q == nil then
    error("linux_guest: needs pci (controller -> PCI address) or qmp (to ask QEMU)", 2)
  end
  local cid = opts.controller_id or "scsi%d"
  if type(cid) ~= "string" then error("linux_guest: controller_id must be a format string", 2) end
  self._pci, self._qmp, self.controller_id, self._pci_cache = pci, q, cid, {}
  return setmetatable(self, Guest)
end

Guest.agent, Guest.close, Guest.__tostring =
  conn.owned("_agent", "guest agent", M.agent_connect)

local function find_pci(devices, id)
  for _, d in ipairs(devices or {}) do
    if d.qdev_id == id then
      return ("0000:%02x:%02x.%x"):format(d.bus or 0, d.slot or 0, d["function"] or 0)
    end
    local br = type(d.pci_bridge) == "table" and d.pci_bridge.bus or nil
    if type(br) == "table" then
      local r = find_pci(d.pci_bridge.devices, id)
      if r then return r end
    end
  end
end

function Guest:pci_address(controller)
  local p = self._pci
  if type(p) == "table" and p[controller] then return p[controller] end
  if type(p) == "function" then
    local ok, r, msg = pcall(p, controller)
    if not ok then return nil, tostring(r) end
    if r then return r end
    return nil, msg or ("no PCI address for controller %d"):format(controller)
  end
  local cached = self._pci_cache[controller]
  if cached then return cached end
  local q = self._qmp
  if q == nil then return nil, ("no PCI address for controller %d"):format(controller) end
  if type(q) == "function" then q = q() end
  if type(q) == "table" and not q.execute and q.client then
    local c, msg = q:client()            -- a scsictl.qemu VM backend: share its connection
    if not c then return nil, msg end
    q = c
  end
  if type(q) == "string" then
    local c, msg = qmp.connect(q, { timeout = 10 })
    if not c then return nil, msg end
    self._qmp = c
    q = c
  end
  local buses, msg = q:execute("query-pci")
  if not buses then return nil, msg end
  local id = self.controller_id:format(controller)
  for _, b in ipairs(buses) do
    local r = find_pci(b.devices, id)
    if r then
      self._pci_cache[controller] = r
      return r
    end
  end
  return nil, ("QEMU has no PCI device '%s' (controller %d)"):format(id, controller)
end

function Guest:exec(path, args, timeout)
  local a, msg = self:agent()
  if not a then return nil, msg end
  return a:exec(path, args, timeout or self.timeout)
end

local function trim(s) return (s:gsub("%s+$", "")) end

function Guest:sh(script, timeout)
  local r, msg = self:exec("/bin/sh", { "-c", script }, timeout)
  if not r then return nil, msg end
  if r.exitcode ~= 0 or r.signal then
    local err = trim(r.err)
    if err == "" then err = trim(r.out) end
    return nil, ("%s%s"):format(r.signal and ("killed by signal " .. r.signal)
      or ("exit status " .. tostring(r.exitcode)), err ~= "" and (": " .. err) or "")
  end
  return r.out
end

-- Centiseconds the guest-side waits may take: most of the callback timeout,
-- so that the guest reports what it waited for before the host gives up.
function Guest:_wait()
  return math.max(1, math.floor(self.timeout * 70))
end

function Guest:device(controller, lun, partition)
  local pci, msg = self:pci_address(controller)
  if not pci then return nil, msg end
  local out
  out, msg = self:sh(table.concat({ "pci=" .. shquote(pci), "lun=" .. lun,
    "part=" .. (partition or 0) }, "\n") .. "\n" .. PRELUDE .. [[
find_host "$pci" || fail "no SCSI host for PCI $pci"
for b in /sys/bus/scsi/devices/$host:0:0:$lun/block/*; do
  [ -e "$b" ] || continue
  if [ "$part" -gt 0 ]; then echo "/dev/${b##*/}$part"; else echo "/dev/${b##*/}"; fi
  exit 0
done
fail "no disk at $host:0:0:$lun"
]])
  if not out then return nil, msg end
  return trim(out)
end

-- Guest:observe: the guest's view of the slots in one command, for
-- scsictl.reconcile. Steps of a host agent that went away go on in the
-- guest (a guest command outlives its caller), so the script first waits,
-- bounded, for every live holder of a mount path's lock (lock_path); paths
-- still locked after that are listed, to be left alone.
local OBSERVE = [[
live_locks() {
  held=
  for f in /run/scsictl-locks/%* /tmp/%run%*; do
    [ -f "$f" ] || continue
    _pid=
    read -r _pid < "$f" 2>/dev/null
    [ -n "$_pid" ] && [ -d "/proc/$_pid" ] && held="$held ${f##*/}"
  done
  [ -z "$held" ]
}
# whole_disk <name>: sets w to the SCSI disk under block device <name> (a
# disk, one of its partitions, or a device-mapper mapping over either).
whole_disk() {
  w=$1
  [ -n "$w" ] || { w=-; return 1; }
  case $w in dm-*) for s in /sys/block/"$w"/slaves/*; do [ -e "$s" ] && w=${s##*/}; done ;; esac
  [ -n "$w" ] && [ -e "/sys/block/$w" ] && return 0
  for p in /sys/block/*/"$w"; do [ -e "$p" ] && { p=${p%/*}; w=${p##*/}; return 0; }; done
  w=-
}
wait_until "$wait" live_locks
for l in $held; do echo "L $l"; done
set -- $pcis
while [ $# -gt 1 ]; do
  c=$1 pci=$2
  shift 2
  find_host "$pci" || continue
  for d in /sys/bus/scsi/devices/"$host":0:0:*; do
    [ -e "$d" ] || continue
    blk=-
    for b in "$d"/block/*; do [ -e "$b" ] && blk=${b##*/}; done
    echo "D $c ${d##*:} $blk"
  done
done
# Mounts under the root, top of each stack last; a bind of a device node
# (block_dev) is named by its root in devtmpfs, others by maj:min.
awk -v root="$root/" 'index($5, root) == 1 { for (i = 7; i <= NF; i++) if ($i == "-") break
    print $3, $4, $(i + 1), $(i + 2), $5 }' /proc/self/mountinfo |
while read -r mm r fs src mp; do
  name=
  if [ "$fs" = devtmpfs ]; then
    name=${r#/}
  elif [ -f "/sys/dev/block/$mm/uevent" ]; then
    while read -r kv; do case $kv in DEVNAME=*) name=${kv#DEVNAME=} ;; esac; done < "/sys/dev/block/$mm/uevent"
  fi
  whole_disk "$name"
  [ -n "$name" ] && src=/dev/$name
  echo "M $src $w $mp"
done
for e in "$root"/*; do
  [ -e "$e" ] || [ -L "$e" ] && echo "E ${e##*/}"
done
exit 0
]]

M.GUEST_ROOT = "/run/mounts/scsi"   -- where scsictl's Linux guest paths are

-- /proc/self/mountinfo's octal escapes undone.
local function mountinfo_unescape(s)
  return (s:gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8)) end))
end

-- A guest path's slot: "/run/mounts/scsi/C_L_P" -> C, L, P (nil otherwise).
local function slot_of(path)
  local c, l, p = path:match("^" .. M.GUEST_ROOT:gsub("%p", "%%%0") .. "/(%d+)_(%d+)_(%d+)$")
  if not c then return nil end
  return math.tointeger(tonumber(c)), math.tointeger(tonumber(l)), math.tointeger(tonumber(p))
end
M.slot_of = slot_of

-- The observe script's lines as the table observe returns.
local function parse_observed(out)
  local r = { devices = {}, mounts = {}, leftovers = {}, locked = {} }
  local mounts, entries = {}, {}
  for line in out:gmatch("[^\n]+") do
    local tag, rest = line:match("^(%u) (.*)$")
    if tag == "D" then
      local c, l, blk = rest:match("^(%d+) (%d+) (%S+)$")
      if c then
        r.devices[#r.devices + 1] = { controller = math.tointeger(tonumber(c)),
          lun = math.tointeger(tonumber(l)), block = blk ~= "-" and blk or nil }
      end
    elseif tag == "M" then
      local dev, blk, mp = rest:match("^(%S+) (%S+) (.+)$")
      if mp then
        mp = mountinfo_unescape(mp)
        local m = mounts[mp]
        if not m then
          local c, l, p = slot_of(mp)
          m = { mount_path = mp, controller = c, lun = l, partition = p, count = 0 }
          mounts[mp] = m
          r.mounts[#r.mounts + 1] = m
        end
        -- The last line of a path is the top of its stack: what it shows.
        m.device, m.block, m.count = mountinfo_unescape(dev), blk ~= "-" and blk or nil, m.count + 1
      end
    elseif tag == "E" then
      entries[#entries + 1] = M.GUEST_ROOT .. "/" .. rest
    elseif tag == "L" then
      r.locked[#r.locked + 1] = (rest:gsub("%%", "/"))
    end
  end
  for _, e in ipairs(entries) do
    if not mounts[e] then
      local c, l, p = slot_of(e)
      r.leftovers[#r.leftovers + 1] = { mount_path = e, controller = c, lun = l, partition = p }
    end
  end
  table.sort(r.devices, by_slot)
  table.sort(r.mounts, function(a, b) return a.mount_path < b.mount_path end)
  table.sort(r.leftovers, function(a, b) return a.mount_path < b.mount_path end)
  table.sort(r.locked)
  return r
end

function Guest:observe(controllers)
  if not is_uint(controllers) then
    error("bad argument #1 to 'observe' (controllers must be an integer >= 0)", 2)
  end
  local pcis = {}
  for c = 0, controllers - 1 do
    local pci, msg = self:pci_address(c)
    if not pci then return nil, "observe: " .. msg end
    pcis[#pcis + 1] = c .. " " .. pci
  end
  local out, msg = self:sh(table.concat({ "pcis=" .. shquote(table.concat(pcis, " ")),
    "root=" .. shquote(M.GUEST_ROOT), "wait=" .. self:_wait(), "step=" .. STEP }, "\n")
    .. "\n" .. PRELUDE .. OBSERVE)
  if not out then return nil, "observe: " .. msg end
  return parse_observed(out)
end

local function check_settings(s)
  if type(s) ~= "table" then return nil, "settings must be a table" end
  if type(s.mount_path) ~= "string" or s.mount_path:sub(1, 1) ~= "/" or s.mount_path == "/" then
    return nil, "settings.mount_path must be an absolute path below /"
  end
  if not is_uint(s.controller) or not is_uint(s.lun) or not is_uint(s.partition or 0) then
    return nil, "settings.controller, lun and partition must be integers >= 0"
  end
  if s.filesystem ~= nil and (type(s.filesystem) ~= "string" or not s.filesystem:match("^[%w_.-]*$")) then
    return nil, "settings.filesystem must be a file system type name"
  end
  for _, o in ipairs(s.options or {}) do
    if type(o) ~= "string" or o:find("[,%z]") then
      return nil, "settings.options must be strings without commas"
    end
  end
  return true
end

local function where(s)
  return ("controller %d lun %d partition %d at %s"):format(s.controller, s.lun,
    s.partition or 0, s.mount_path)
end

-- Which mapping a mount needs ("crypt", "verity" or ""), or nil and why it
-- cannot have one. An encrypted disk's key is made at each mount and dies
-- with its mapping, so the disk holds nothing readable before the mount:
-- it is a file system made at every mount (ensure_filesystem) or a raw
-- encrypted block device (block_dev), and never read-only.
local function dm_kind(s)
  local v = s.verity
  if v ~= nil then
    if type(v) ~= "table" or type(v.root_hash) ~= "string" or not v.root_hash:match("^" .. ("%x"):rep(64) .. "$")
        or not is_uint(v.hash_offset or 0) or (v.hash_offset or 0) % 512 ~= 0 then
      return nil, "settings.verity must be { root_hash = <64 hex digits>, hash_offset = <a multiple of 512> }"
    end
    if s.encrypted or not s.read_only then return nil, "verity needs a read-only, unencrypted mount" end
    return "verity"
  end
  if not s.encrypted then return "" end
  if s.read_only then
    return nil, "encrypted disks are not supported read-only: the key is made at mount, so there is nothing to read"
  end
  if not s.ensure_filesystem and not s.block_dev then
    return nil, "encrypted disks are not supported without ensure_filesystem (or block_dev): the key is made "
      .. "at mount and dies with the mapping, so the file system is made at every mount"
  end
  return "crypt"
end

function Guest:add_mapped_virtual_disk(settings)
  local ok, msg = check_settings(settings)
  if not ok then return nil, "mount: " .. msg end
  local dm
  dm, msg = dm_kind(settings)
  if not dm then return nil, ("mount %s: %s"):format(where(settings), msg) end
  local pci
  pci, msg = self:pci_address(settings.controller)
  if not pci then return nil, "mount: " .. msg end
  local s = {
    mount_path = settings.mount_path, controller = settings.controller, lun = settings.lun,
    partition = settings.partition or 0, read_only = settings.read_only == true,
    options = settings.options or {}, ensure_filesystem = settings.ensure_filesystem == true,
    filesystem = settings.filesystem or "", block_dev = settings.block_dev == true,
    dm = dm, verity = settings.verity and { root_hash = settings.verity.root_hash:lower(),
      hash_offset = settings.verity.hash_offset or 0 },
  }
  local out
  out, msg = self:sh(mount_script(s, pci, self:_wait()))
  if not out then return nil, ("mount %s: %s"):format(where(s), msg) end
  return true
end

function Guest:remove_mapped_virtual_disk(settings)
  if type(settings) ~= "table" or type(settings.mount_path) ~= "string"
      or settings.mount_path:sub(1, 1) ~= "/" or settings.mount_path == "/" then
    return nil, "unmount: settings.mount_path must be an absolute path below /"
  end
  local out, msg = self:sh(unmount_script(settings, self:_wait()))
  if not out then return nil, ("unmount %s: %s"):format(settings.mount_path, msg) end
  return true
end

function Guest:remove_scsi_device(device)
  if type(device) ~= "table" or not is_uint(device.controller) or not is_uint(device.lun) then
    return nil, "eject: device must be { controller, lun } with integers >= 0"
  end
  local pci, msg = self:pci_address(device.controller)
  if not pci then return nil, "eject: " .. msg end
  local out
  out, msg = self:sh(eject_script(pci, device.controller, device.lun, self:_wait()))
  if not out then
    return nil, ("eject controller %d lun %d: %s"):format(device.controller, device.lun, msg)
  end
  return true
end

---------------------------------------------------------------------------
-- The guest image.

-- Where the guest builder and the default image cache are (M.locate).
local BUILDER = "scsictl-build-guest"   -- the installed name of scripts/build-guest.sh

local function file_exists(path)
  return loop.fs("stat", path) ~= nil
end

function M.locate(o)
  o = o or {}
  local source = o.source or debug.getinfo(1, "S").source:match("^@(.*)$") or ""
  local getenv = o.getenv or os.getenv
  local exists = o.exists or file_exists
  local function env(name)
    local v = getenv(name)
    if v ~= nil and v ~= "" then return v end
  end
  local r = { tried = {} }
  local function try(path)
    r.tried[#r.tried + 1] = path
    if not r.builder and exists(path) then r.builder = path end
  end
  -- A checkout: <root>/lua/scsictl/qemu_guest.lua.
  local root = source:match("^(.-)lua/scsictl/[^/]*$")
  if root then
    if root == "" then root = "./" end
    r.checkout = root
    try(root .. "scripts/build-guest.sh")
  end
  -- Installed: <prefix>/share/lua/5.x/scsictl/qemu_guest.lua, the builder in
  -- <prefix>/bin (a LuaRocks tree, /usr/local), then anywhere on PATH.
  local prefix = source:match("^(.-)share/lua/5%.%d+/scsictl/[^/]*$")
  if prefix then try((prefix == "" and "./" or prefix) .. "bin/" .. BUILDER) end
  for d in ((env("PATH") or "") .. ":"):gmatch("([^:]*):") do
    try((d == "" and "." or d) .. "/" .. BUILDER)
  end
  local cache = env("XDG_CACHE_HOME")
  if cache and cache:sub(1, 1) ~= "/" then cache = nil end
  cache = cache or (env("HOME") and env("HOME") .. "/.cache")
  r.guest_dir = env("SCSICTL_GUEST_DIR") or (root and root .. "build/guest")
    or (cache and cache .. "/scsictl/guest")
  return r
end

local function read_env(path)
  local text = loop.read_file(path)
  if not text then return nil end
  local t = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^(%u+)=\"?(.-)\"?$")
    if k then t[k] = v end
  end
  return t
end

function M.image(opts)
  opts = opts or {}
  local found = M.locate()
  local dir = opts.guest_dir or found.guest_dir
  if not dir then
    return nil, "image: no guest_dir given, no $SCSICTL_GUEST_DIR, $HOME or checkout to default to"
  end
  local env = read_env(dir .. "/latest/guest.env")
  if env and env.FORMAT ~= M.IMAGE_FORMAT then env = nil end   -- built by an older script
  if not env and opts.build ~= false then
    local script = found.builder
    if not script then
      return nil, ("image: no guest image in %s and no guest builder (scripts/build-guest.sh or %s)"
        .. " found; tried %s"):format(dir, BUILDER, table.concat(found.tried, ", "))
    end
    -- Off the loop: the builder is a child process the loop waits for.
    local ok, msg, text = loop.command({ "bash", script, dir }, { env = loop.child_env(), timeout = 1800 })
    if not ok then
      local why = trim(text or "")
      return nil, ("image: %s %s failed: %s"):format(script, dir, why ~= "" and why or msg)
    end
    env = read_env(dir .. "/latest/guest.env")
  end
  if env and env.FORMAT ~= M.IMAGE_FORMAT then
    return nil, ("image: the guest in %s has format %s, this module needs %s (run scripts/build-guest.sh)")
      :format(dir, tostring(env.FORMAT), M.IMAGE_FORMAT)
  end
  if not env then return nil, "image: no guest image in " .. dir .. " (run scripts/build-guest.sh)" end
  return { kernel = env.KERNEL, vmlinux = env.VMLINUX ~= "" and env.VMLINUX or nil,
           initrd = env.INITRD, kver = env.KVER, dir = dir .. "/latest" }
end

---------------------------------------------------------------------------
-- The launcher.

local GuestVM = {}
GuestVM.__name = "scsictl.qemu_guest.vm"
local gvm_methods = {}

GuestVM.__index = function(t, k)
  local m = gvm_methods[k]
  if m ~= nil then return m end
  local inner = rawget(t, "_vm")
  local v = inner[k]
  if type(v) == "function" then
    return function(self, ...)
      if self == t then return v(inner, ...) end
      return v(self, ...)
    end
  end
  return v
end

local function read_all(path)
  return loop.read_file(path) or ""
end

function gvm_methods.console(self)
  if rawget(self, "_final_console") then return self._final_console end
  return read_all(self._gdir .. "/console.log")
end

function gvm_methods.guest(self) return self._guest end

function gvm_methods.stop(self)
  if rawget(self, "_stopped_g") then return true end
  self._stopped_g = true
  if self._guest then self._guest:close() end
  self._vm:stop()
  self._final_console = read_all(self._gdir .. "/console.log")
  for _, f in ipairs({ "qga.sock", "console.log" }) do loop.fs("unlink", self._gdir .. "/" .. f) end
  loop.fs("rmdir", self._gdir)
  return true
end

-- At collection nothing may wait: QEMU is killed by its own collector.
local function collect(self)
  if rawget(self, "_stopped_g") then return end
  self._stopped_g = true
  for _, f in ipairs({ "qga.sock", "console.log" }) do os.remove(self._gdir .. "/" .. f) end
  os.remove(self._gdir)
end

GuestVM.__close = function(self) pcall(gvm_methods.stop, self) end
GuestVM.__gc = function(self) pcall(collect, self) end
GuestVM.__tostring = function(self)
  return ("scsictl.qemu_guest.vm(pid %s, %d controller%s, %s, booted in %.2fs%s)"):format(
    tostring(self._vm.pid), self._vm.controllers, self._vm.controllers == 1 and "" or "s",
    tostring(self._vm.accel), self.boot_seconds or -1, rawget(self, "_stopped_g") and ", stopped" or "")
end

local function tail(s, n)
  s = trim(s:gsub("\27%[[%d;?]*%a", ""):gsub("\27c", ""):gsub("\r", ""))
  if #s > n then s = "..." .. s:sub(-n) end
  return s
end

-- Why a KVM boot failed in this process (KVM is then not tried again).
local kvm_probe_failure

local function boot(opts, accel, boot_timeout)
  local parent = opts.tmpdir or os.getenv("TMPDIR") or "/tmp"
  local gdir = loop.fs("mkdtemp", parent .. "/scsictl-guest.XXXXXX")
  if not gdir then return nil, "launch: cannot create a temporary directory in " .. parent end
  local agent_sock = gdir .. "/qga.sock"
  local args = {
    "-no-reboot",
    "-kernel", opts.kernel, "-initrd", opts.initrd,
    "-append", opts.append or M.DEFAULT_APPEND,
    "-serial", "file:" .. gdir .. "/console.log",
    "-chardev", "socket,id=scsictl-qga,path=" .. agent_sock .. ",server=on,wait=off",
    "-device", "virtio-serial-pci,id=scsictl-vser",
    "-device", "virtserialport,bus=scsictl-vser.0,chardev=scsictl-qga,name=" .. M.AGENT_PORT,
    -- Entropy: without it mke2fs (libuuid) waits ~4 s for the guest's RNG.
    "-device", "virtio-rng-pci",
  }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local started = now()
  local vm, msg = qemu.launch{
    controllers = opts.controllers, binary = opts.binary, accel = accel,
    machine = opts.machine, memory = opts.memory or "256M", args = args,
    timeout = opts.qemu_timeout or 10, tmpdir = opts.tmpdir, pci_base = opts.pci_base,
  }
  if not vm then
    loop.fs("unlink", gdir .. "/console.log")
    loop.fs("unlink", agent_sock)
    loop.fs("rmdir", gdir)
    return nil, msg
  end
  local self = setmetatable({ _vm = vm, _gdir = gdir, agent_socket = agent_sock,
    guest_dir = opts.guest_dir_used }, GuestVM)
  local function fail(why)
    local console = self:console()
    local log = vm:log()
    self:stop()
    return nil, ("launch: %s%s%s"):format(why,
      console ~= "" and ("; guest console: " .. tail(console, 1500)) or "; the guest console is empty",
      log ~= "" and ("; QEMU said: " .. tail(log, 500)) or "")
  end
  local ok
  ok, msg = vm:qmp():execute("cont")
  if not ok then return fail("cont: " .. msg) end
  local deadline = started + boot_timeout
  local agent
  while true do
    if not vm:alive() then return fail("QEMU exited while the guest booted") end
    agent, msg = M.agent_connect(agent_sock, { timeout = opts.timeout or M.DEFAULT_TIMEOUT, retry = 0.25 })
    if agent then break end
    if now() > deadline then return fail("no guest agent socket: " .. tostring(msg)) end
    loop.sleep(0.05)
  end
  while true do
    local left = deadline - now()
    if left <= 0 then
      agent:close()
      return fail(("the guest agent did not answer within %gs (accel %s; %s)"):format(boot_timeout,
        accel, tostring(msg)))
    end
    ok, msg = agent:sync(math.min(left, 1))
    if ok then break end
    if not vm:alive() then agent:close() return fail("QEMU exited while the guest booted") end
    if agent:is_closed() then
      agent = M.agent_connect(agent_sock, { timeout = opts.timeout or M.DEFAULT_TIMEOUT, retry = 0.25 })
      if not agent then
        if vm:wait(2) then return fail("QEMU exited while the guest booted") end
        return fail("lost the guest agent socket")
      end
    end
  end
  agent.retry = 0.5
  self.boot_seconds = now() - started
  local pci = vm:pci_addresses()
  self._guest = M.linux_guest{ agent = agent_sock, pci = pci, timeout = opts.timeout }
  self._guest._agent = agent             -- the synced connection; reconnects if it breaks
  return self
end

function M.launch(opts)
  if type(opts) ~= "table" then error("launch: options must be a table", 2) end
  local n = opts.controllers
  if not is_uint(n) then error("launch: controllers must be an integer >= 0", 2) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if not o.kernel or not o.initrd then
    local img, msg = M.image{ guest_dir = o.guest_dir, build = o.build }
    if not img then return nil, "launch: " .. msg end
    o.kernel = o.kernel or img.vmlinux or img.kernel
    o.initrd = o.initrd or img.initrd
    o.guest_dir_used = img.dir
  end
  for _, f in ipairs({ o.kernel, o.initrd }) do
    local fd, msg = loop.fs("open", f, "r", 0)
    if not fd then return nil, ("launch: cannot read %s: %s"):format(tostring(f), msg) end
    loop.fs("close", fd)
  end
  local accel = o.accel or os.getenv("SCSICTL_QEMU_ACCEL") or "tcg"
  if accel == "" then accel = "tcg" end
  if accel ~= "auto" and accel ~= "kvm" and accel ~= "tcg" then
    error("launch: accel must be \"auto\", \"kvm\" or \"tcg\"", 2)
  end
  local boot_timeout = o.boot_timeout or 60
  local kvm_failure
  if accel == "auto" then
    if qemu.kvm_usable() and kvm_probe_failure == nil then
      local vm, msg = boot(o, "kvm", o.kvm_timeout or 10)
      if vm then return vm, vm._guest end
      kvm_probe_failure = msg   -- not tried again by this process
    end
    kvm_failure = kvm_probe_failure
    accel = "tcg"
  end
  local vm, msg = boot(o, accel, boot_timeout)
  if not vm then
    if kvm_failure then msg = msg .. " (a boot under KVM failed first: " .. kvm_failure .. ")" end
    return nil, msg
  end
  vm.kvm_failure = kvm_failure
  return vm, vm._guest
end

return M
