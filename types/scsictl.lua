---@meta scsictl
--
-- LuaCATS type definitions of the C module `scsictl`, for lua-language-server
-- (docs/lua-api.md, "Editor types"). Nothing here runs: the functions are
-- empty declarations. spec/types_spec.lua checks that every function the
-- module exports is declared here (as `function scsictl.NAME(` or
-- `function Controller:NAME(` at the start of a line) and that every function
-- declared here is exported.

---------------------------------------------------------------------------
-- Codes and names
---------------------------------------------------------------------------

---The third value of a failed call (`nil, msg, code`).
---@alias scsictl.ErrorCode
---| "not_found"        # unknown or already released reservation id
---| "no_slots"         # every slot is taken
---| "config_mismatch"  # same host path with another disk config, or same partition with another mount config
---| "slot_taken"       # `reserve_for_rootfs` on a slot in use or pinned (or a host path already placed elsewhere)
---| "out_of_range"     # controller or lun outside this controller's geometry
---| "busy"             # a callback is in flight on the disk, it is being torn down, or the id's release is pending
---| "backend"          # a callback failed; the message names the step, host path, controller, lun (and partition)
---| "closed"           # the controller was closed
---| "invalid_snapshot" # `scsictl.import` / `scsictl.open` refused a snapshot
---| "io"               # the state file could not be read or written

---How a disk is attached.
---@alias scsictl.DiskType
---| "VirtualDisk"           # the default
---| "PassThru"
---| "ExtensibleVirtualDisk"

---The backend a step's callback belongs to.
---@alias scsictl.BackendName
---| "vm"
---| "linux_guest"
---| "windows_guest"

---The name of a step: the callback called for it.
---@alias scsictl.StepName
---| "add_scsi_disk"                                 # vm: hot-add the disk at controller:lun
---| "remove_scsi_disk"                              # vm: hot-remove it
---| "add_mapped_virtual_disk"                       # linux_guest / windows_guest: mount a partition
---| "add_mapped_virtual_disk_for_container_scratch" # windows_guest: mount with `format_with_refs`
---| "remove_mapped_virtual_disk"                    # linux_guest / windows_guest: unmount
---| "remove_scsi_device"                            # linux_guest: eject the device before the vm removes it

---A reservation id: a canonical lowercase UUID (any case is accepted on input).
---@alias scsictl.Id string

---------------------------------------------------------------------------
-- Arguments: disk and mount
---------------------------------------------------------------------------

---The disk of `ctl:reserve` and `ctl:reserve_for_rootfs`. Unknown fields raise.
---@class scsictl.Disk
---The disk image on the host (a non-empty string without NUL bytes); required.
---@field host_path string
---Attach read-only. Default `false`.
---@field read_only? boolean
---Default `"VirtualDisk"`.
---@field type? scsictl.DiskType
---Default `nil`.
---@field evd_type? string
---Backend settings of the disk (for `scsictl.qemu`: cache, aio, discard,
---detect_zeroes, serial, wwn, bps, iops, ...): option names to strings,
---integers or booleans, at most 64. Part of the disk's identity: the same
---host path with other options is `config_mismatch`. Default none.
---@field options? table<string, string|integer|boolean>

---The mount of `ctl:reserve`: which partition of the disk, and how. Omitted
---fields take these defaults; unknown fields raise.
---@class scsictl.Mount
---Default `0` (the whole disk).
---@field partition? integer
---Default `false`.
---@field read_only? boolean
---Default `false`.
---@field encrypted? boolean
---Mount options (strings). Default `{}`.
---@field options? string[]
---Default `false`.
---@field ensure_filesystem? boolean
---Default `""`.
---@field filesystem? string
---Default `false`.
---@field block_dev? boolean
---Windows guests: mount with `add_mapped_virtual_disk_for_container_scratch`. Default `false`.
---@field format_with_refs? boolean
---dm-verity of a read-only layer (needs `read_only = true`, not `encrypted`):
---the guest opens the device through dm-verity and mounts the verified
---device. Part of the mount's identity. Default none.
---@field verity? scsictl.Verity

---------------------------------------------------------------------------
-- Backends and the arguments their callbacks receive
---------------------------------------------------------------------------
-- A backend is a table (or an object with `__index`); each callback is
-- looked up by name at each call and called as a method. A callback fails
-- when it raises, returns `false` (optionally followed by a message), or
-- returns `nil, message`; anything else, including returning nothing, is
-- success. Inside a coroutine a callback may `coroutine.yield()`: the resume
-- values are its results.

---The first argument of `vm:add_scsi_disk`.
---@class scsictl.Attachment
---The disk's `host_path`.
---@field path string
---@field type scsictl.DiskType
---@field read_only boolean
---Nil unless set on the disk.
---@field evd_type? string
---The disk's options, values as strings; nil when it has none.
---@field options? table<string, string>

---A dm-verity description.
---@class scsictl.Verity
---The sha256 root hash, 64 hex digits (kept lowercase).
---@field root_hash string
---Where the hash tree starts, in bytes (a multiple of 512); 0 or nil: right
---after the file system, whose superblock gives its size (the tree appended
---to the image by `scripts/make-verity-layer.sh`).
---@field hash_offset? integer

---The argument of a Linux guest's `add_mapped_virtual_disk` and
---`remove_mapped_virtual_disk` (the same fields at unmount as at mount).
---@class scsictl.LinuxMountSettings
---`/run/mounts/scsi/<controller>_<lun>_<partition>`
---@field mount_path string
---@field controller integer
---@field lun integer
---@field partition integer
---@field read_only boolean
---@field encrypted boolean
---A fresh array at each call.
---@field options string[]
---@field ensure_filesystem boolean
---@field filesystem string
---@field block_dev boolean
---Nil unless the mount has verity; `hash_offset` is then always set.
---@field verity? scsictl.Verity

---The argument of a Linux guest's `remove_scsi_device`.
---@class scsictl.LinuxDevice
---@field controller integer
---@field lun integer

---The argument of every Windows guest callback.
---@class scsictl.WindowsMountSettings
---`C:\mounts\scsi\<controller>_<lun>_<partition>`
---@field container_path string
---@field lun integer

---The VM backend (`vm`): attaches and detaches disks.
---@class scsictl.VmBackend
---Hot-add the disk at `controller:lun`.
---@field add_scsi_disk fun(self: scsictl.VmBackend, attachment: scsictl.Attachment, controller: integer, lun: integer): any, string?
---Hot-remove the disk at `controller:lun` (the last claim was released; on Linux after `remove_scsi_device`).
---@field remove_scsi_disk fun(self: scsictl.VmBackend, controller: integer, lun: integer): any, string?

---The Linux guest backend (`linux_guest`).
---@class scsictl.LinuxGuestBackend
---Mount a partition of an attached disk at `settings.mount_path`.
---@field add_mapped_virtual_disk fun(self: scsictl.LinuxGuestBackend, settings: scsictl.LinuxMountSettings): any, string?
---Unmount it (the last claim on the partition was released).
---@field remove_mapped_virtual_disk fun(self: scsictl.LinuxGuestBackend, settings: scsictl.LinuxMountSettings): any, string?
---Eject the device (the last claim on the disk was released), before the VM's `remove_scsi_disk`.
---@field remove_scsi_device fun(self: scsictl.LinuxGuestBackend, device: scsictl.LinuxDevice): any, string?

---The Windows guest backend (`windows_guest`). Windows guests have no eject step.
---@class scsictl.WindowsGuestBackend
---Mount, when the mount's `format_with_refs` is false.
---@field add_mapped_virtual_disk fun(self: scsictl.WindowsGuestBackend, settings: scsictl.WindowsMountSettings): any, string?
---Mount, when the mount's `format_with_refs` is true.
---@field add_mapped_virtual_disk_for_container_scratch fun(self: scsictl.WindowsGuestBackend, settings: scsictl.WindowsMountSettings): any, string?
---Unmount.
---@field remove_mapped_virtual_disk fun(self: scsictl.WindowsGuestBackend, settings: scsictl.WindowsMountSettings): any, string?

---Writes the state file on behalf of a controller: drives
---`ctl:write_begin(seq, tentative)` / `ctl:write_end(wseq, ok)` to the file
---`ctl:state_file()` names; returns `true`, or `nil, msg`.
---`require("scsictl.state_writer").new()` makes one (a callable table).
---@alias scsictl.StateWriter fun(ctl: scsictl.Controller, seq: integer, tentative: boolean): true|nil, string?

---------------------------------------------------------------------------
-- Trace and plan
---------------------------------------------------------------------------

---What a `trace` function sees: each step's start and end.
---@class scsictl.TraceEvent
---@field event "start"|"end"
---The operation: `map_to_guest` or `unmap_from_guest`.
---@field op "map"|"unmap"
---The reservation id the operation runs for.
---@field id scsictl.Id
---The callback the step calls.
---@field step scsictl.StepName
---@field backend scsictl.BackendName
---@field controller integer
---@field lun integer
---Set for mount and unmount steps.
---@field partition? integer
---On `"end"`: how long the callback took, in seconds.
---@field duration? number
---On `"end"`: whether the step succeeded.
---@field ok? boolean
---On `"end"` of a failed step: the reason.
---@field error? string

---Called at each step's start and end. It runs protected and cannot yield:
---a raise (or a yield) becomes a Lua warning and the operation goes on. A
---step abandoned with its coroutine ends with `ok = false`.
---@alias scsictl.Trace fun(event: scsictl.TraceEvent)

---One step of `ctl:plan(id, what)`: what the operation would call now.
---@class scsictl.PlanStep
---@field step scsictl.StepName
---@field backend scsictl.BackendName
---The callback's arguments after `self`, as the callback would receive them.
---@field args any[]

---------------------------------------------------------------------------
-- Options
---------------------------------------------------------------------------

---The backends and per-controller hooks that `scsictl.new`, `scsictl.import`
---and `scsictl.open` share.
---@class scsictl.Hooks
---Required.
---@field vm scsictl.VmBackend
---@field linux_guest? scsictl.LinuxGuestBackend
---@field windows_guest? scsictl.WindowsGuestBackend
---With a state file (`scsictl.open`): write it through this writer, on the event loop.
---@field state_writer? scsictl.StateWriter
---Sees every step start and end.
---@field trace? scsictl.Trace

---The backends (and per-controller hooks) of `scsictl.import` and
---`scsictl.open`. Exactly one of `linux_guest` / `windows_guest`, matching
---the snapshot's guest flavour. Unknown fields raise.
---@class scsictl.Backends: scsictl.Hooks
---Host paths renamed as the snapshot is read (a VM moved to another host):
---a table of old path to new path, or a function of the old path returning
---the new one (or nil: kept). A remap that makes two disks one returns
---`nil, msg, "invalid_argument"`; a remap that raises or gives a non-string
---raises.
---@field remap? table<string, string>|fun(host_path: string): string?

---The options of `scsictl.new`. Exactly one of `linux_guest` /
---`windows_guest`; every callback must be present and callable. Unknown
---fields raise (a typo such as `lun_per_controller` is caught).
---@class scsictl.Options: scsictl.Hooks
---Integer 0..1024; required.
---@field controllers integer
---Integer 1..16384, default 64; `controllers * luns_per_controller <= 2^20`.
---@field luns_per_controller? integer
---Keep a durable copy of the state in this file (`nil, msg, "io"` if it
---cannot be written, `nil, msg, "busy"` if another controller owns it).
---@field state_file? string

---------------------------------------------------------------------------
-- Results
---------------------------------------------------------------------------

---A reservation, as `ctl:reservation` and `ctl:reservations` return it.
---@class scsictl.ReservationInfo
---@field id scsictl.Id
---@field controller integer
---@field lun integer
---@field partition integer
---@field host_path string
---An `unmap_from_guest` of the id began and has not finished: retry it.
---@field release_pending boolean

---A partition of a slot's disk (`ctl:slots()`).
---@class scsictl.PartitionInfo
---@field partition integer
---@field state "reserved"|"mounted"
---How many reservations hold it.
---@field refs integer
---Nil unless mounted.
---@field guest_path? string

---An occupied or pinned slot (`ctl:slots()`).
---@class scsictl.SlotInfo
---@field controller integer
---@field lun integer
---@field pinned boolean
---A callback is in flight on the disk.
---@field busy boolean
---The disk's release began (its removal is under way or pending a retried unmap).
---@field tearing_down boolean
---Nil for a bare pinned slot.
---@field host_path? string
---Nil for a bare pinned slot.
---@field state? "reserved"|"attached"|"ejected"
---The disk's options (values as strings); nil for a bare pinned slot.
---@field options? table<string, string>
---How many reservations the disk has.
---@field reservations integer
---@field partitions scsictl.PartitionInfo[]

---`ctl:stats()`.
---@class scsictl.Stats
---@field controllers integer
---@field luns_per_controller integer
---`controllers * luns_per_controller`
---@field slots integer
---Slots that hold a disk or are pinned (each once).
---@field used integer
---`slots - used`
---@field free integer
---@field pinned integer
---Disks held.
---@field disks integer
---Outstanding ids, including ids whose release awaits a retry.
---@field reservations integer

---`scsictl.defaults.disk`
---@class scsictl.DiskDefaults
---@field read_only boolean
---@field type scsictl.DiskType

---`scsictl.defaults.mount`
---@class scsictl.MountDefaults
---@field partition integer
---@field read_only boolean
---@field encrypted boolean
---@field options string[]
---@field ensure_filesystem boolean
---@field filesystem string
---@field block_dev boolean
---@field format_with_refs boolean

---`scsictl.defaults`
---@class scsictl.Defaults
---@field luns_per_controller integer
---@field disk scsictl.DiskDefaults
---@field mount scsictl.MountDefaults

---`scsictl.limits`
---@class scsictl.Limits
---@field controllers integer
---@field luns_per_controller integer
---@field slots integer

---------------------------------------------------------------------------
-- The module
---------------------------------------------------------------------------

---@class scsictl
local scsictl = {}

---`"scsictl 0.1.0"`
---@type string
scsictl._VERSION = "scsictl 0.1.0"

---`{ luns_per_controller = 64, disk = { read_only = false, type = "VirtualDisk" }, mount = { partition = 0, ... } }`
---@type scsictl.Defaults
scsictl.defaults = {}

---`{ controllers = 1024, luns_per_controller = 16384, slots = 1048576 }`
---@type scsictl.Limits
scsictl.limits = {}

---A new controller with no disks. Caller mistakes raise `bad argument #1`.
---With a `state_file`, `nil, msg, "io"` if it cannot be written and
---`nil, msg, "busy"` if another controller owns it.
---@param options scsictl.Options
---@return scsictl.Controller? ctl
---@return string? msg
---@return scsictl.ErrorCode? code
---@nodiscard
function scsictl.new(options) end

---A controller in exactly the state `ctl:save()` saved, with the given
---backends, making no callback. `nil, msg, "invalid_snapshot"` for a
---truncated, corrupted, other-version or inconsistent snapshot; backends of
---the wrong guest flavour raise `bad argument #2`.
---@param snapshot string
---@param backends scsictl.Backends
---@return scsictl.Controller? ctl
---@return string? msg
---@return scsictl.ErrorCode? code
---@nodiscard
function scsictl.import(snapshot, backends) end

---Reads the state file at `path` and imports it, and keeps writing to it.
---`nil, msg, "io"` if it cannot be read, `"busy"` if another controller owns
---it, `"invalid_snapshot"` if it holds no valid snapshot.
---@param path string
---@param backends scsictl.Backends
---@return scsictl.Controller? ctl
---@return string? msg
---@return scsictl.ErrorCode? code
---@nodiscard
function scsictl.open(path, backends) end

---------------------------------------------------------------------------
-- The controller
---------------------------------------------------------------------------

---A controller: the slots of a VM's SCSI controllers and the claims on
---them. Supports `local ctl <close> = scsictl.new{...}` (closing as
---`close()` does), `tostring(ctl)`, and is freed by the garbage collector;
---neither closing nor collecting makes a backend call.
---@class scsictl.Controller
local Controller = {}

---Reserves a slot (or shares the one already holding `disk.host_path`) and
---a claim on a partition of it. No callback is made. If it fails nothing was
---reserved.
---@param disk scsictl.Disk
---@param mount? scsictl.Mount
---@return scsictl.Id? id
---@return string? msg
---@return scsictl.ErrorCode? code
function Controller:reserve(disk, mount) end

---Pins the slot `controller:lun` (a rootfs the VM was started with),
---optionally naming the disk there, so that a later `reserve` of the same
---host path with an equal disk config uses it.
---@param controller integer
---@param lun integer
---@param disk? scsictl.Disk
---@return true? ok
---@return string? msg
---@return scsictl.ErrorCode? code
function Controller:reserve_for_rootfs(controller, lun, disk) end

---Attaches and mounts what `id` reserved, calling the backends; returns the
---guest path. On failure call it again (the failed step is retried) or
---`unmap_from_guest` to give up. Inside a coroutine callbacks may yield.
---@param id scsictl.Id
---@return string? guest_path
---@return string? msg
---@return scsictl.ErrorCode? code
function Controller:map_to_guest(id) end

---Releases `id`: unmounts, ejects and detaches what no other claim needs.
---On failure the id stays valid with its release pending: call it again
---(steps already done are not repeated).
---@param id scsictl.Id
---@return true? ok
---@return string? msg
---@return scsictl.ErrorCode? code
function Controller:unmap_from_guest(id) end

---The reservation `id`, or `nil` if there is none.
---@param id scsictl.Id
---@return scsictl.ReservationInfo?
---@nodiscard
function Controller:reservation(id) end

---Every reservation, sorted by controller, lun, partition, id.
---@return scsictl.ReservationInfo[]
---@nodiscard
function Controller:reservations() end

---The occupied or pinned slots, by slot index.
---@return scsictl.SlotInfo[]
---@nodiscard
function Controller:slots() end

---Records the disk in slot (controller, lun) as a reconciler found it: not
---in the VM (`"reserved"`: its partitions then count as not mounted), in
---the VM (`"attached"`) or, for a Linux guest's disk whose release began,
---let go by the guest (`"ejected"`). No callback is made; the next map adds
---what is missing and the next unmap removes what is present. See
---`scsictl.reconcile`.
---@param controller integer
---@param lun integer
---@param state "reserved"|"attached"|"ejected"
---@return true? ok
---@return string? msg
---@return scsictl.ErrorCode? code `not_found`, `busy`, `invalid_argument`, `closed`, `io`
function Controller:set_disk_state(controller, lun, state) end

---Records a claimed partition as mounted (its disk must be attached) or not.
---@param controller integer
---@param lun integer
---@param partition integer
---@param state "reserved"|"mounted"
---@return true? ok
---@return string? msg
---@return scsictl.ErrorCode? code `not_found`, `busy`, `invalid_argument`, `closed`, `io`
function Controller:set_mount_state(controller, lun, partition, state) end

---The slots drawn as text for a terminal: a row per controller, a glyph per
---LUN (`*` busy, `p` pinned, `~` being torn down, `M` mounted, `a` attached,
---`r` reserved, `.` free) and a legend.
---@return string
---@nodiscard
function Controller:slot_map() end

---The steps `map_to_guest(id)` (`what = "map"`) or `unmap_from_guest(id)`
---(`what = "unmap"`) would run now, each assumed to succeed, in order;
---changes nothing and makes no callback. An operation with nothing to do
---gives an empty array. `nil, msg, "busy"` while a callback is in flight on
---the id's disk; the operation's own failures otherwise (`not_found`,
---`busy` for a pending release, `closed`).
---@param id scsictl.Id
---@param what "map"|"unmap"
---@return scsictl.PlanStep[]? steps
---@return string? msg
---@return scsictl.ErrorCode? code
---@nodiscard
function Controller:plan(id, what) end

---Counts of slots, disks and reservations.
---@return scsictl.Stats
---@nodiscard
function Controller:stats() end

---Closes the controller (idempotent): later mutating calls return
---`nil, msg, "closed"`; introspection keeps working. `nil, msg, "busy"`
---while a callback is in flight.
---@return true? ok
---@return string? msg
---@return scsictl.ErrorCode? code
function Controller:close() end

---The controller's state as a snapshot string for `scsictl.import`. Makes
---no callback; `nil, msg, "busy"` while a callback is in flight.
---@return string? snapshot
---@return string? msg
---@return scsictl.ErrorCode? code
---@nodiscard
function Controller:save() end

---For state writers: begins the write of change `seq`. Returns `"done"`
---(already written), `"busy"` (another write is in flight), or `"write",
---data, wseq` (write `data` to the file, then call `write_end(wseq, ok)`);
---`nil, msg, "io"` on failure.
---@param seq integer
---@param tentative boolean
---@return "done"|"busy"|"write"|nil status
---@return string? data_or_msg
---@return integer|scsictl.ErrorCode|nil wseq_or_code
function Controller:write_begin(seq, tentative) end

---For state writers: the write of `wseq` ended, successfully or not.
---@param wseq integer
---@param ok boolean
function Controller:write_end(wseq, ok) end

---The state file written (absolute, links resolved), or `nil`.
---@return string?
---@nodiscard
function Controller:state_file() end

return scsictl
