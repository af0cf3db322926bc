/*
 * scsictl.h — SCSI slot and guest-mount reservation controller.
 *
 * The whole public C API. The contract is docs/spec.md; this header says how the
 * C side of it is spelled.
 *
 * Model in one paragraph: a controller owns `controllers * luns_per_controller`
 * slots. scsictl_reserve() gives a caller an id naming a claim on one
 * (host disk, partition). Mapping the id attaches the disk to the VM and
 * mounts the partition in the guest; unmapping releases the claim, and the
 * last claim tears everything down. Disks and partition mounts are shared by
 * reference count.
 *
 * The core never calls out. Mapping and unmapping are *operations* made of
 * *steps* (add the disk, mount, unmount, eject, remove). A driver starts an
 * operation, performs each step the core hands out, and reports the result:
 *
 *     scsictl_op op;
 *     int st = scsictl_op_start_map(ctl, &op, &id, &err);
 *     while (st == SCSICTL_STEP) {
 *         bool ok = perform(&op.step, msg, sizeof msg);   // no lock held here
 *         st = scsictl_op_report(ctl, &op, ok, msg, &err);
 *     }
 *     if (st == SCSICTL_DONE) use(op.guest_path); else fail(&err);
 *
 * While a step is in flight its disk is *busy*: every other operation that
 * touches that disk fails fast with SCSICTL_E_BUSY; other disks proceed.
 * scsictl_map() and scsictl_unmap() are that loop over C callbacks (the
 * blocking driver).
 *
 * Thread safety: every function may be called from any thread at any time on
 * the same controller, except scsictl_free() (no other call may be running or
 * start afterwards), unless the controller was made single-threaded
 * (scsictl_options.single_threaded). The controller's lock, a pthread mutex,
 * is never held while a step is in flight.
 *
 * Strings: every `const char *` argument is a NUL-terminated UTF-8 or byte
 * string; the core copies what it keeps. Pointers inside a scsictl_step stay
 * valid until the step is reported (see scsictl_step for what they point
 * into).
 */
#ifndef SCSICTL_H
#define SCSICTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The release version: the one place it is written (CMake, the Lua module,
 * `make dist` and the release rockspec read this line; docs/release.md). */
#define SCSICTL_VERSION "0.1.0"

/* Public functions are exported; everything else in the library is hidden. */
#if defined(__GNUC__)
#define SCSICTL_API __attribute__((visibility("default")))
#else
#define SCSICTL_API
#endif

/* Geometry limits (spec §5). */
#define SCSICTL_MAX_CONTROLLERS 1024u
#define SCSICTL_MAX_LUNS 16384u
#define SCSICTL_DEFAULT_LUNS 64u
#define SCSICTL_MAX_SLOTS (1u << 20)

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Result codes. Functions return SCSICTL_OK (0) or a negative error code;
 * the operation functions may also return SCSICTL_STEP, SCSICTL_DONE or
 * SCSICTL_PERSIST. The
 * names of the error codes are the Lua error code strings. */
typedef enum scsictl_code {
    SCSICTL_PERSIST = 3,            /* op: make the state durable, then
                                       scsictl_op_persisted()             */
    SCSICTL_STEP = 2,               /* op: perform op->step, then report   */
    SCSICTL_DONE = 1,               /* op: finished successfully           */
    SCSICTL_OK = 0,
    SCSICTL_E_NOT_FOUND = -1,       /* unknown or already released id      */
    SCSICTL_E_NO_SLOTS = -2,        /* every slot is taken                 */
    SCSICTL_E_CONFIG_MISMATCH = -3, /* same path/partition, other config   */
    SCSICTL_E_SLOT_TAKEN = -4,      /* rootfs pin on a used or pinned slot */
    SCSICTL_E_OUT_OF_RANGE = -5,    /* controller or lun outside geometry  */
    SCSICTL_E_BUSY = -6,            /* disk has a step in flight / tearing down */
    SCSICTL_E_BACKEND = -7,         /* a step failed                       */
    SCSICTL_E_CLOSED = -8,          /* the controller was closed           */
    SCSICTL_E_INVALID_SNAPSHOT = -9,/* import refused a snapshot           */
    SCSICTL_E_INVALID_ARGUMENT = -10,/* caller mistake (NULL, bad value)   */
    SCSICTL_E_NO_MEMORY = -11,      /* an allocation failed; nothing changed */
    SCSICTL_E_IO = -12              /* the state file could not be read or written */
} scsictl_code;

#define SCSICTL_MESSAGE_MAX 512

/* Error detail. Every function taking `scsictl_error *err` accepts NULL.
 * On failure `code` is the returned code and `message` a NUL-terminated
 * sentence with context (operation, host path, controller, lun, partition,
 * the backend's own message), truncated to fit. Untouched on success. */
typedef struct scsictl_error {
    scsictl_code code;
    char message[SCSICTL_MESSAGE_MAX];
} scsictl_error;

/* "not_found", "no_slots", ... for error codes; "ok", "step", "done",
 * "persist" for the others; "unknown" otherwise. Static strings. */
SCSICTL_API const char *scsictl_code_name(int code);

/* ------------------------------------------------------------------------ */
/* Ids                                                                       */
/* ------------------------------------------------------------------------ */

/* A reservation id: a random (version 4) UUID, 16 bytes. */
typedef struct scsictl_id {
    uint8_t bytes[16];
} scsictl_id;

#define SCSICTL_ID_STRLEN 36

/* Writes the canonical lowercase form and a NUL (37 bytes). */
SCSICTL_API void scsictl_id_format(const scsictl_id *id, char out[SCSICTL_ID_STRLEN + 1]);

/* Parses the 36-character 8-4-4-4-12 hex form, either case, exactly `len`
 * bytes. Returns SCSICTL_OK or SCSICTL_E_INVALID_ARGUMENT. */
SCSICTL_API int scsictl_id_parse(const char *s, size_t len, scsictl_id *out);

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

typedef enum scsictl_guest {
    SCSICTL_GUEST_LINUX = 0,
    SCSICTL_GUEST_WINDOWS = 1
} scsictl_guest;

typedef enum scsictl_disk_type {
    SCSICTL_DISK_VIRTUAL_DISK = 0,          /* "VirtualDisk" (default)  */
    SCSICTL_DISK_PASSTHRU = 1,              /* "PassThru"               */
    SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK = 2 /* "ExtensibleVirtualDisk" */
} scsictl_disk_type;

/* "VirtualDisk", "PassThru", "ExtensibleVirtualDisk"; NULL if out of range. */
SCSICTL_API const char *scsictl_disk_type_name(scsictl_disk_type type);

/* At most this many backend options per disk, each at most
 * SCSICTL_DISK_OPTION_MAX bytes. */
#define SCSICTL_DISK_OPTIONS_MAX 64
#define SCSICTL_DISK_OPTION_MAX 1024

/* A host disk. Two reservations share a disk when host_path is equal; they
 * must then agree on every other field (else SCSICTL_E_CONFIG_MISMATCH).
 * options are the backend's per-disk settings (cache mode, I/O limits, ...),
 * opaque to the core: "key=value" strings, strictly sorted by key (so equal
 * settings are equal arrays), the key non-empty and without '='. They are
 * part of the disk's identity, saved in snapshots and handed to
 * add_scsi_disk with the disk. */
typedef struct scsictl_disk_config {
    const char *host_path;   /* required, non-empty */
    bool read_only;
    scsictl_disk_type type;
    const char *evd_type;    /* NULL when unset; "" is a set, empty value */
    const char *const *options; /* n_options strings; may be NULL if 0 */
    size_t n_options;
} scsictl_disk_config;

/* The length of a verity root hash: sha256, as hex digits. */
#define SCSICTL_VERITY_HASH_HEX 64

/* A partition mount. Zero-initialised means every spec default
 * (partition 0, no options, filesystem ""). Two reservations share a mount
 * when disk and partition are equal; every other field must then be equal
 * (options compared element by element, in order). */
typedef struct scsictl_mount_config {
    uint64_t partition;          /* 0 .. INT64_MAX */
    bool read_only;
    bool encrypted;
    bool ensure_filesystem;
    bool block_dev;
    bool format_with_refs;       /* Windows: mount with the scratch variant */
    const char *filesystem;      /* NULL means "" */
    const char *const *options;  /* n_options strings; may be NULL if 0 */
    size_t n_options;
    /* dm-verity (a read-only layer checked block by block as it is read):
     * NULL for none, else the sha256 root hash as 64 lowercase hex digits.
     * Needs read_only and not encrypted. */
    const char *verity_root_hash;
    /* Where the hash tree starts, in bytes from the start of the device or
     * partition (a multiple of 512); 0: right after the file system, whose
     * superblock gives its size (the tree appended to the image). */
    uint64_t verity_hash_offset;
} scsictl_mount_config;

/* Optional custom allocator (tests inject failures through it). All three
 * are required when given. `realloc_fn` is never called with size 0. */
typedef struct scsictl_allocator {
    void *(*malloc_fn)(void *ud, size_t size);
    void *(*realloc_fn)(void *ud, void *ptr, size_t size);
    void (*free_fn)(void *ud, void *ptr);
    void *ud;
} scsictl_allocator;

typedef struct scsictl_options {
    uint32_t controllers;          /* 0 .. 1024                           */
    uint32_t luns_per_controller;  /* 1 .. 16384; 0 means the default 64  */
    scsictl_guest guest;
    const scsictl_allocator *allocator; /* NULL: malloc/realloc/free (on
                                           Linux, blocks of 4 MiB or more,
                                           i.e. big hash-map tables, are
                                           2 MiB-aligned and advised for
                                           transparent huge pages);
                                           copied, must outlive nothing  */
    bool single_threaded;          /* true: the controller takes no lock;
                                      every call must then come from one
                                      thread at a time (the Lua binding,
                                      whose Lua state is one thread, sets
                                      it). Default false: thread-safe.    */
} scsictl_options;

/* ------------------------------------------------------------------------ */
/* Controller                                                                */
/* ------------------------------------------------------------------------ */

typedef struct scsictl scsictl;

/* Creates a controller. Errors: INVALID_ARGUMENT (geometry outside the
 * limits, controllers * luns > 2^20, unknown guest, NULL out),
 * NO_MEMORY. *out is set only on success. */
SCSICTL_API int scsictl_new(const scsictl_options *opts, scsictl **out, scsictl_error *err);

/* Makes a controller single-threaded (no locking) or thread-safe again, as
 * scsictl_options.single_threaded does for scsictl_new (for a controller
 * made by scsictl_import or scsictl_open). Call it before the controller is
 * shared between threads, with no other call running. NULL is a no-op. */
SCSICTL_API void scsictl_set_single_threaded(scsictl *ctl, bool single_threaded);

/* Frees the controller and everything it holds. Makes no backend call and
 * touches nothing outside the controller; steps in flight are abandoned
 * (their scsictl_op must not be reported afterwards). NULL is a no-op. */
SCSICTL_API void scsictl_free(scsictl *ctl);

/* Closes the controller: later mutating calls return SCSICTL_E_CLOSED;
 * introspection keeps working. Idempotent (SCSICTL_OK again).
 * Errors: BUSY while any step is in flight (nothing changes); with a state
 * file IO (closed in memory; a retried close writes it again), NO_MEMORY,
 * or with deferred writes PERSIST. */
SCSICTL_API int scsictl_close(scsictl *ctl, scsictl_error *err);

/* Reserves a claim on (disk, mount) and writes its new id to *id.
 * mount may be NULL (all defaults). The disk takes the lowest free unpinned
 * slot, or the pinned slot whose rootfs pin named this host path, or shares
 * the disk already holding this host path. All-or-nothing: on error nothing
 * changed. Errors: INVALID_ARGUMENT (NULL/empty host path, unknown type,
 * partition > INT64_MAX, NULL option string), CONFIG_MISMATCH, NO_SLOTS,
 * BUSY (the disk has a step in flight or is being torn down), CLOSED,
 * NO_MEMORY (also for a host path, or a mount's options and filesystem
 * together, of 2 GiB or more: records keep 32-bit offsets). With a state
 * file: IO (the write failed: the reservation is undone), and with
 * deferred writes PERSIST (see scsictl_set_write_deferred: *id is set). */
SCSICTL_API int scsictl_reserve(scsictl *ctl, const scsictl_disk_config *disk,
                    const scsictl_mount_config *mount, scsictl_id *id,
                    scsictl_error *err);

/* Pins slot (controller, lun) for the controller's lifetime; it is never
 * given to another disk. When disk is non-NULL, a later reserve of that
 * host path with an equal disk config uses this slot (a different config
 * gets CONFIG_MISMATCH). Errors: OUT_OF_RANGE, SLOT_TAKEN (slot used or
 * pinned, or disk->host_path already pinned or placed at another slot),
 * INVALID_ARGUMENT, CLOSED, NO_MEMORY; with a state file IO (undone) or,
 * with deferred writes, PERSIST. */
SCSICTL_API int scsictl_reserve_for_rootfs(scsictl *ctl, uint64_t controller, uint64_t lun,
                               const scsictl_disk_config *disk,
                               scsictl_error *err);

/* ------------------------------------------------------------------------ */
/* Operations and steps (the sans-I/O interface)                             */
/* ------------------------------------------------------------------------ */

typedef enum scsictl_step_kind {
    SCSICTL_STEP_ADD_SCSI_DISK = 0,          /* vm                       */
    SCSICTL_STEP_REMOVE_SCSI_DISK,           /* vm                       */
    SCSICTL_STEP_LINUX_MOUNT,                /* linux add_mapped_virtual_disk */
    SCSICTL_STEP_LINUX_UNMOUNT,              /* linux remove_mapped_virtual_disk */
    SCSICTL_STEP_LINUX_EJECT,                /* linux remove_scsi_device */
    SCSICTL_STEP_WINDOWS_MOUNT,              /* windows add_mapped_virtual_disk */
    SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH,      /* windows add_mapped_virtual_disk_for_container_scratch */
    SCSICTL_STEP_WINDOWS_UNMOUNT,            /* windows remove_mapped_virtual_disk */
    SCSICTL_STEP_KIND_COUNT
} scsictl_step_kind;

/* The callback name of a step ("add_scsi_disk", ...); NULL if out of range. */
SCSICTL_API const char *scsictl_step_name(scsictl_step_kind kind);
/* "vm", "linux_guest" or "windows_guest"; NULL if out of range. */
SCSICTL_API const char *scsictl_step_backend(scsictl_step_kind kind);

/* One backend call to perform. Which fields matter depends on kind:
 *   ADD_SCSI_DISK      disk (the attachment), controller, lun
 *   REMOVE_SCSI_DISK   controller, lun
 *   LINUX_EJECT        controller, lun (the device)
 *   LINUX_(UN)MOUNT    disk, mount, controller, lun, guest_path (mount_path)
 *   WINDOWS_*          disk, mount, lun, guest_path (container_path)
 * disk, mount and guest_path point into the op itself (so the op must not
 * move while a step is in flight); the strings they reach (host_path,
 * evd_type, filesystem, options) point into the controller's records and
 * stay valid and unchanged until the step is reported, or until
 * scsictl_free(). Linux settings are built from mount:
 * read_only, encrypted, options, ensure_filesystem, filesystem and
 * block_dev are the mount config's fields. */
typedef struct scsictl_step {
    scsictl_step_kind kind;
    uint32_t controller;
    uint32_t lun;
    const scsictl_disk_config *disk;
    const scsictl_mount_config *mount;  /* NULL for disk-level steps */
    const char *guest_path;             /* NULL for disk-level steps */
} scsictl_step;

#define SCSICTL_GUEST_PATH_MAX 64

/* An operation in progress. Owned by the driver (stack, heap, a Lua
 * userdata); the core keeps no pointer to it. Public fields are read-only. */
typedef struct scsictl_op {
    scsictl_step step;                        /* valid after SCSICTL_STEP */
    char guest_path[SCSICTL_GUEST_PATH_MAX];  /* map: valid after DONE    */
    uint64_t persist_seq;  /* after SCSICTL_PERSIST: the change to make durable */
    /* private */
    scsictl *ctl_;               /* the controller that started it */
    void *res_;
    scsictl_id id_;
    int kind_;
    int after_;                  /* what PERSIST stands in for: STEP or DONE */
    int path_len_;               /* of guest_path once this op formatted it */
    scsictl_disk_config disk_;   /* step.disk and step.mount point here */
    scsictl_mount_config mount_;
} scsictl_op;

/* Starts mapping reservation *id (spec §3). Returns
 *   SCSICTL_STEP     perform op->step, then call scsictl_op_report();
 *   SCSICTL_DONE     already mapped: op->guest_path is set, no step needed;
 *   SCSICTL_PERSIST  (only with a state file) the change must be durable
 *                    before the op goes on: scsictl_persist(ctl,
 *                    op->persist_seq), then scsictl_op_persisted();
 *   < 0              NOT_FOUND, BUSY (step in flight on the disk, or the
 *                    id's release is pending), CLOSED, INVALID_ARGUMENT.
 * Nothing changes on error. */
SCSICTL_API int scsictl_op_start_map(scsictl *ctl, scsictl_op *op, const scsictl_id *id,
                         scsictl_error *err);

/* Starts releasing reservation *id. Returns STEP, DONE (released with no
 * backend call needed), PERSIST (as for map), or NOT_FOUND, BUSY, CLOSED,
 * INVALID_ARGUMENT.
 * A release is pending from its first change until it ends: while a step
 * is in flight, and once a step or a state file write (IO) failed the id
 * stays valid with its release pending; a retried unmap finishes it. */
SCSICTL_API int scsictl_op_start_unmap(scsictl *ctl, scsictl_op *op, const scsictl_id *id,
                           scsictl_error *err);

/* Reports the result of op->step: ok, or failed with backend_message (may
 * be NULL). Returns the next SCSICTL_STEP, SCSICTL_DONE, SCSICTL_PERSIST,
 * or on failure SCSICTL_E_BACKEND with err->message naming the step, host
 * path, controller, lun, partition and backend_message; INVALID_ARGUMENT
 * when op has no step in flight or was started on another controller; BUSY
 * for an illegal move of a state machine (a bug: the message names the
 * state and the event). A
 * failed map leaves what earlier steps did (retrying continues from there);
 * a failed unmap leaves the release pending. Every op that returned STEP
 * must be reported exactly once per step (report failure to abandon it),
 * unless the controller is freed. With a state file, a failed step returns
 * PERSIST first (see scsictl_op_persisted). */
SCSICTL_API int scsictl_op_report(scsictl *ctl, scsictl_op *op, bool ok,
                      const char *backend_message, scsictl_error *err);

/* After SCSICTL_PERSIST: says whether the state up to op->persist_seq was
 * made durable (ok) or not (message says why). Returns what the op goes on
 * with: STEP or DONE when ok; on failure IO, and a step that was about to
 * be performed is taken back (its disk is not busy; the op is over), an
 * unmap that finished in memory stays pending for its id (a retried unmap
 * finishes once a write succeeds; a map of it is BUSY). After a failed
 * step (scsictl_op_report wrote the BACKEND error into err and returned
 * PERSIST, so that the file records the outcome), BACKEND again whatever
 * ok says, and err is left as the report set it. INVALID_ARGUMENT when op
 * awaits no write or was started on another controller. */
SCSICTL_API int scsictl_op_persisted(scsictl *ctl, scsictl_op *op, bool ok,
                                     const char *message, scsictl_error *err);

/* ------------------------------------------------------------------------ */
/* Blocking driver                                                           */
/* ------------------------------------------------------------------------ */

/* Settings of a Linux mount step (spec §4), built by the blocking driver. */
typedef struct scsictl_linux_settings {
    const char *mount_path;
    uint32_t controller;
    uint32_t lun;
    uint64_t partition;
    bool read_only;
    bool encrypted;
    const char *const *options;
    size_t n_options;
    bool ensure_filesystem;
    const char *filesystem;
    bool block_dev;
    const char *verity_root_hash;  /* NULL: no verity (see scsictl_mount_config) */
    uint64_t verity_hash_offset;
} scsictl_linux_settings;

typedef struct scsictl_windows_settings {
    const char *container_path;
    uint32_t lun;
} scsictl_windows_settings;

/* Callbacks for the blocking driver. Each returns 0 on success and non-zero
 * on failure, optionally writing a NUL-terminated message of at most
 * msg_size bytes into msg. Called with no lock held, from the thread that
 * called scsictl_map()/scsictl_unmap(); they may call back into the
 * controller. Only the callbacks of the controller's guest flavour are
 * used; a NULL callback that is needed fails its step. */
typedef struct scsictl_callbacks {
    void *user;
    int (*add_scsi_disk)(void *user, const scsictl_disk_config *attachment,
                         uint32_t controller, uint32_t lun,
                         char *msg, size_t msg_size);
    int (*remove_scsi_disk)(void *user, uint32_t controller, uint32_t lun,
                            char *msg, size_t msg_size);
    int (*linux_mount)(void *user, const scsictl_linux_settings *s,
                       char *msg, size_t msg_size);
    int (*linux_unmount)(void *user, const scsictl_linux_settings *s,
                         char *msg, size_t msg_size);
    int (*linux_eject)(void *user, uint32_t controller, uint32_t lun,
                       char *msg, size_t msg_size);
    int (*windows_mount)(void *user, const scsictl_windows_settings *s,
                         char *msg, size_t msg_size);
    int (*windows_mount_scratch)(void *user, const scsictl_windows_settings *s,
                                 char *msg, size_t msg_size);
    int (*windows_unmount)(void *user, const scsictl_windows_settings *s,
                           char *msg, size_t msg_size);
} scsictl_callbacks;

/* Fills the settings a step's guest callback receives. */
SCSICTL_API void scsictl_step_linux_settings(const scsictl_step *step,
                                 scsictl_linux_settings *out);
SCSICTL_API void scsictl_step_windows_settings(const scsictl_step *step,
                                   scsictl_windows_settings *out);

/* Maps *id, running every step through cb. On success writes the guest path
 * (NUL-terminated, truncated to path_size) if path is non-NULL. Errors: as
 * scsictl_op_start_map() and scsictl_op_report(). */
SCSICTL_API int scsictl_map(scsictl *ctl, const scsictl_callbacks *cb, const scsictl_id *id,
                char *path, size_t path_size, scsictl_error *err);

/* Releases *id, running every step through cb. */
SCSICTL_API int scsictl_unmap(scsictl *ctl, const scsictl_callbacks *cb,
                  const scsictl_id *id, scsictl_error *err);

/* ------------------------------------------------------------------------ */
/* Introspection (read-only; works after close)                              */
/* ------------------------------------------------------------------------ */

typedef struct scsictl_stats {
    uint32_t controllers;
    uint32_t luns_per_controller;
    uint32_t slots;          /* controllers * luns_per_controller       */
    uint32_t used;           /* slots holding a disk or pinned (once)   */
    uint32_t free;           /* slots - used                            */
    uint32_t pinned;
    size_t disks;
    size_t reservations;     /* includes ids whose release is pending   */
    scsictl_guest guest;
    bool closed;
    bool busy;               /* some step is in flight                  */
    uint64_t state_writes;   /* state file writes that succeeded        */
    uint64_t state_write_failures; /* ... and that failed               */
} scsictl_stats;

SCSICTL_API void scsictl_get_stats(scsictl *ctl, scsictl_stats *out);

typedef enum scsictl_disk_state {
    SCSICTL_DISK_RESERVED = 0,  /* has a slot, not added to the VM       */
    SCSICTL_DISK_ATTACHED = 1,  /* added to the VM                       */
    SCSICTL_DISK_EJECTED = 2    /* Linux guest released it; removal due */
} scsictl_disk_state;

typedef enum scsictl_mount_state {
    SCSICTL_MOUNT_RESERVED = 0, /* not mounted in the guest yet */
    SCSICTL_MOUNT_MOUNTED = 1
} scsictl_mount_state;

/* "reserved", "attached", "ejected" / "reserved", "mounted". */
SCSICTL_API const char *scsictl_disk_state_name(scsictl_disk_state s);
SCSICTL_API const char *scsictl_mount_state_name(scsictl_mount_state s);

/* Snapshot of one reservation. Strings point into the same allocation. */
typedef struct scsictl_reservation_info {
    scsictl_id id;
    uint32_t controller;
    uint32_t lun;
    uint64_t partition;
    const char *host_path;
    bool release_pending;    /* its release has begun and not ended      */
    bool busy;               /* its disk has a step in flight            */
} scsictl_reservation_info;

typedef struct scsictl_partition_info {
    uint64_t partition;
    scsictl_mount_state state;
    size_t refs;
    const char *guest_path;  /* NULL unless mounted */
} scsictl_partition_info;

typedef struct scsictl_slot_info {
    uint32_t controller;
    uint32_t lun;
    bool pinned;
    bool busy;                /* a step is in flight on its disk */
    bool tearing_down;        /* its disk's release began (removal under
                                 way or pending a retried unmap) */
    bool has_disk;
    const char *host_path;    /* NULL for a bare pinned slot */
    const char *const *options; /* the disk's options (NULL if none) */
    size_t n_options;
    scsictl_disk_state state; /* valid when has_disk */
    size_t reservations;      /* claims on the disk */
    size_t n_partitions;
    scsictl_partition_info *partitions; /* sorted by partition */
} scsictl_slot_info;

/* Looks up one reservation. On SCSICTL_OK, *out is one allocation made with
 * the controller's allocator; release it with scsictl_info_free().
 * Errors: NOT_FOUND, NO_MEMORY, INVALID_ARGUMENT. */
SCSICTL_API int scsictl_get_reservation(scsictl *ctl, const scsictl_id *id,
                            scsictl_reservation_info **out,
                            scsictl_error *err);

/* All reservations sorted by controller, lun, partition, id; *n entries in
 * one allocation (NULL when *n is 0). Free with scsictl_info_free(). */
SCSICTL_API int scsictl_list_reservations(scsictl *ctl, scsictl_reservation_info **out,
                              size_t *n, scsictl_error *err);

/* Every occupied or pinned slot, sorted by slot index; one allocation
 * (NULL when *n is 0). Free with scsictl_info_free(). */
SCSICTL_API int scsictl_list_slots(scsictl *ctl, scsictl_slot_info **out, size_t *n,
                       scsictl_error *err);

/* Frees what the three functions above returned. NULL is a no-op. */
SCSICTL_API void scsictl_info_free(scsictl *ctl, void *info);

/* ---- Records made to match the VM (reconciling after a restart) -------- *
 *
 * A reconciler that compared the records with the VM and the guest sets
 * what it found; no backend call is made. The disk in slot (controller,
 * lun) is recorded as not in the VM (RESERVED: every partition of it then
 * counts as not mounted), in the VM (ATTACHED) or, for a Linux guest's
 * disk whose release began, let go by the guest (EJECTED); whether its
 * release began is kept. A partition is recorded as mounted (its disk must
 * be attached) or not. The next map then adds or mounts what is missing,
 * and the next unmap removes what is present. With a state file the change
 * is written before they return (PERSIST with deferred writes).
 * Errors: NOT_FOUND (no disk in the slot, no claim on the partition), BUSY
 * (a step is in flight on the disk), INVALID_ARGUMENT (a state the record
 * cannot take), IO. */
SCSICTL_API int scsictl_set_disk_state(scsictl *ctl, uint32_t controller, uint32_t lun,
                                       scsictl_disk_state state, scsictl_error *err);
SCSICTL_API int scsictl_set_mount_state(scsictl *ctl, uint32_t controller, uint32_t lun,
                                        uint64_t partition, scsictl_mount_state state,
                                        scsictl_error *err);

/* Writes the guest path of (controller, lun, partition) for the given guest
 * flavour into out (NUL-terminated). Returns the length, or -1 if it does
 * not fit. */
SCSICTL_API int scsictl_guest_path(scsictl_guest guest, uint32_t controller, uint32_t lun,
                       uint64_t partition, char *out, size_t size);

/* ------------------------------------------------------------------------ */
/* Snapshots and the durable state file (spec §8)                            */
/* ------------------------------------------------------------------------ */

/* The snapshot format version written by scsictl_save(). scsictl_import()
 * reads it and version 1 (the same without disk options). The format is
 * documented in docs/snapshot-format.md. */
#define SCSICTL_SNAPSHOT_VERSION 2

/* Serialises the whole state: geometry, guest flavour, closed flag, pins
 * (with their disk configs), disks, partition mounts and reservations.
 * Makes no backend call. *out is one allocation (NUL-terminated, *len bytes
 * without the NUL) freed with scsictl_info_free(). Errors: BUSY while any
 * step is in flight, NO_MEMORY, INVALID_ARGUMENT. */
SCSICTL_API int scsictl_save(scsictl *ctl, char **out, size_t *len, scsictl_error *err);

/* Builds a controller in exactly the saved state (its steps are then driven
 * like any other's). allocator may be NULL. Errors: INVALID_SNAPSHOT
 * (truncated, corrupted, another version, or inconsistent: nothing is
 * built), NO_MEMORY, INVALID_ARGUMENT. *out is set only on success. */
SCSICTL_API int scsictl_import(const char *snapshot, size_t len,
                               const scsictl_allocator *allocator, scsictl **out,
                               scsictl_error *err);

/* Host paths renamed on import and open (a VM moved to another host finds
 * its disks at other paths): fn is called with each disk's and pin's host
 * path as the snapshot has it and returns the path to use instead, or NULL
 * to keep it. It must give the same answer for the same path, and the
 * string must stay valid until the import returns. */
typedef struct scsictl_remap {
    const char *(*fn)(void *ud, const char *host_path);
    void *ud;
} scsictl_remap;

/* scsictl_import with the host paths remapped (remap may be NULL). A remap
 * that gives two disks (or a disk and another slot's pin) one path, or an
 * empty path, is refused with INVALID_ARGUMENT naming the paths; nothing
 * is built. */
SCSICTL_API int scsictl_import_remap(const char *snapshot, size_t len,
                                     const scsictl_allocator *allocator,
                                     const scsictl_remap *remap, scsictl **out,
                                     scsictl_error *err);

/* A dry-run copy: a new controller in ctl's current state, with no state
 * file, on which operations can be driven (scsictl_op_start_map, ...) to see
 * the steps they would run, changing nothing in ctl. A step in flight on
 * ctl counts as maybe done in the copy, as after a restart. allocator may
 * be NULL. Free the copy with scsictl_free(). Errors: NO_MEMORY,
 * INVALID_ARGUMENT. */
SCSICTL_API int scsictl_copy(scsictl *ctl, const scsictl_allocator *allocator, scsictl **out,
                             scsictl_error *err);

/* The guest flavour a snapshot was taken from, without importing it.
 * Errors: INVALID_SNAPSHOT when the header cannot be read. */
SCSICTL_API int scsictl_snapshot_guest(const char *snapshot, size_t len,
                                       scsictl_guest *guest, scsictl_error *err);

/* Makes `path` the controller's durable state file: the snapshot is written
 * now and again after every completed step and every reservation change,
 * atomically (a uniquely named temporary file beside it, fsync, rename,
 * fsync of the directory), before the call that made the change returns
 * (ops return SCSICTL_PERSIST for that). The core itself does no I/O: the
 * file is written by the state-file store (core/store/) with no lock of
 * the controller held. Calls whose changes are in flight together share
 * one write (group commit). If a write fails, the calls whose changes it
 * carried return IO: reserve and reserve_for_rootfs are then undone; a
 * completed step is kept in memory and written by the next write.
 *
 * One owner per file: the controller holds an exclusive lock (flock on
 * "<path>.lock", which holds the owner's pid) for its lifetime, until
 * scsictl_free(); a second scsictl_set_state_file() or scsictl_open() of
 * the same file, from this process or another, fails with BUSY. A relative
 * path is resolved against the working directory now. A path that is a
 * symbolic link keeps its link: the target is written (atomically, beside
 * the target); a dangling link is refused (IO).
 * Errors: IO (the first write failed, or the path cannot be resolved; no
 * state file is set), BUSY (a step is in flight, or the file has another
 * owner), NO_MEMORY, INVALID_ARGUMENT (no path, or a state file is set
 * already). */
SCSICTL_API int scsictl_set_state_file(scsictl *ctl, const char *path, scsictl_error *err);

/* Makes the state up to change number seq durable, blocking: writes it, or
 * waits for the write in flight that carries it. SCSICTL_OK at once when
 * the controller has no state file. Called with no lock held by the driver
 * of an op that returned SCSICTL_PERSIST. Errors: IO (the write carrying
 * seq failed: the message says why), NO_MEMORY, INVALID_ARGUMENT. */
SCSICTL_API int scsictl_persist(scsictl *ctl, uint64_t seq, scsictl_error *err);

/* ---- Writing the state file yourself ------------------------------------ *
 *
 * A driver that must not block (the Lua module on its event loop) writes the
 * file itself. After scsictl_set_write_deferred(ctl, true, &err) (a state
 * file must be set), nothing in the library writes it any more: an op
 * returns SCSICTL_PERSIST as before, and so do scsictl_reserve (with *id
 * set: the reservation is tentative), scsictl_reserve_for_rootfs and
 * scsictl_close, for their change number scsictl_change_seq(ctl) (read it
 * right after the call; a deferred controller is driven from one thread).
 * The driver then loops on scsictl_write_begin(ctl, seq, tentative, &w):
 *   SCSICTL_DONE   change seq is written (tentative: and was kept);
 *   SCSICTL_STEP   write w.len bytes of w.data to scsictl_state_file_target()
 *                  atomically (uniquely named temporary file beside it,
 *                  fsync, rename, fsync of the directory), then
 *                  scsictl_write_end(ctl, &w, ok), which frees w.data; a
 *                  failed write undoes the reserves and pins it carried;
 *   SCSICTL_E_BUSY another write is in flight: wait for its end;
 *   SCSICTL_E_IO   the write carrying seq failed (tentative: it was undone).
 * tentative is true for a reserve or a pin, false otherwise. */
typedef struct scsictl_write {
    uint64_t seq;   /* the changes it carries: up to this one */
    char *data;     /* the snapshot, NUL-terminated */
    size_t len;
} scsictl_write;

/* Errors: INVALID_ARGUMENT (no state file), BUSY (a step or write in flight). */
SCSICTL_API int scsictl_set_write_deferred(scsictl *ctl, bool deferred, scsictl_error *err);
/* The number of the latest change (0 for NULL). */
SCSICTL_API uint64_t scsictl_change_seq(scsictl *ctl);
/* The file a write goes to (absolute, links resolved); NULL without one.
 * Valid until scsictl_free(). */
SCSICTL_API const char *scsictl_state_file_target(scsictl *ctl);
/* See above. Errors: INVALID_ARGUMENT, NO_MEMORY (the snapshot), BUSY, IO. */
SCSICTL_API int scsictl_write_begin(scsictl *ctl, uint64_t seq, bool tentative,
                                    scsictl_write *w, scsictl_error *err);
SCSICTL_API void scsictl_write_end(scsictl *ctl, scsictl_write *w, bool ok);

/* Reads a state file, imports it and keeps writing to it, as its owner
 * (see scsictl_set_state_file). Errors: IO (the file cannot be read),
 * BUSY (the file has another owner), INVALID_SNAPSHOT, NO_MEMORY,
 * INVALID_ARGUMENT. */
SCSICTL_API int scsictl_open(const char *path, const scsictl_allocator *allocator,
                             scsictl **out, scsictl_error *err);

/* scsictl_open with the host paths remapped (see scsictl_import_remap); the
 * remapped state is written to the file before it returns (IO if that
 * fails: nothing is opened). */
SCSICTL_API int scsictl_open_remap(const char *path, const scsictl_allocator *allocator,
                                   const scsictl_remap *remap, scsictl **out,
                                   scsictl_error *err);

/* Reads a whole file into one allocation made with `allocator` (NULL: malloc),
 * NUL-terminated. Free it with the same allocator's free (or free()).
 * Errors: IO, NO_MEMORY. */
SCSICTL_API int scsictl_read_file(const char *path, const scsictl_allocator *allocator,
                                  char **out, size_t *len, scsictl_error *err);

#ifdef __cplusplus
}
#endif

#endif /* SCSICTL_H */
