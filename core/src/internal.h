/* internal.h — the controller's data structures, shared by the core's files.
 *
 *   scsictl ──disks (host path → disk)──► disk ◄── mount.disk
 *           ──mounts ((disk, partition) → mount)──► mount
 *           ──res (id → reservation)──► reservation ─► disk, mount
 *           ──pins (host path → pin)──► pin (rootfs pin with a disk config)
 *           taken: multi-level bitmap of used slots; pinned: flat bitmap
 *
 * One mutex guards all of it. Config strings are immutable once created, so
 * a driver may read a step's config with no lock held. */
#ifndef SCSICTL_INTERNAL_H
#define SCSICTL_INTERNAL_H

#include <stdarg.h>
#include <string.h>

#include "alloc.h"
#include "bitmap.h"
#include "hmap.h"
#include "lock.h"
#include "scsictl.h"

typedef struct mount mount;

/* ---- the two state machines (tables in disk.c and mount.c) -------------- */

/* What a move asks the driver to do; ops.c turns it into a step kind (the
 * mount step depends on the guest and format_with_refs). */
typedef enum sc_do {
    SC_DO_NOTHING = 0,
    SC_DO_ADD,      /* ADD_SCSI_DISK */
    SC_DO_EJECT,    /* LINUX_EJECT */
    SC_DO_REMOVE,   /* REMOVE_SCSI_DISK */
    SC_DO_MOUNT,    /* LINUX_MOUNT, WINDOWS_MOUNT(_SCRATCH) */
    SC_DO_UNMOUNT,  /* LINUX_UNMOUNT, WINDOWS_UNMOUNT */
} sc_do;

/* Events. A release reaches a machine only with its last claim; the disk
 * tells the guests apart (a Linux guest ejects before the removal). */
typedef enum sc_event {
    SC_EV_MAP,
    SC_EV_RELEASE_LINUX,
    SC_EV_RELEASE_WINDOWS,
    SC_EV_OK,       /* the step in flight succeeded */
    SC_EV_FAILED,   /* ... failed, or was taken back unperformed */
    SC_EV_COUNT
} sc_event;

typedef enum sc_dstate {
    SC_D_RESERVED,          /* has a slot, not in the VM */
    SC_D_ADDING,            /* add in flight */
    SC_D_MAYBE_ADDED,       /* restored while its add was in flight: maybe in the VM */
    SC_D_READDING,          /* add of a maybe-added disk in flight */
    SC_D_ATTACHED,          /* in the VM */
    SC_D_RELEASING,         /* in the VM, its teardown began (a step failed) */
    SC_D_EJECTING,          /* Linux eject in flight */
    SC_D_EJECTED,           /* the Linux guest let go; removal due */
    SC_D_REMOVING,          /* removal in flight, not ejected (Windows) */
    SC_D_REMOVING_EJECTED,  /* removal in flight after the eject */
    SC_D_MAYBE_RELEASING,   /* maybe in the VM, its teardown began */
    SC_D_MAYBE_EJECTING,    /* eject of a maybe-added disk in flight */
    SC_D_MAYBE_REMOVING,    /* removal of a maybe-added disk in flight */
    SC_D_COUNT,
    SC_D_GONE = SC_D_COUNT  /* a move's next: the disk is forgotten, its slot freed */
} sc_dstate;

typedef enum sc_mstate {
    SC_M_RESERVED,          /* not mounted */
    SC_M_MOUNTING,          /* mount in flight */
    SC_M_MAYBE_MOUNTED,     /* restored while its mount was in flight */
    SC_M_REMOUNTING,        /* mount of a maybe-mounted partition in flight */
    SC_M_MOUNTED,
    SC_M_UNMOUNTING,        /* unmount in flight */
    SC_M_UNMOUNTING_MAYBE,  /* unmount of a maybe-mounted partition in flight */
    SC_M_COUNT,
    SC_M_GONE = SC_M_COUNT  /* a move's next: the mount is forgotten */
} sc_mstate;

/* One cell of a transition table; `legal` false: the move is refused. */
typedef struct sc_move {
    uint8_t next;
    uint8_t step;   /* sc_do */
    bool legal;
} sc_move;

/* What each state means outside the machine: introspection, the state
 * file (an in-flight state is written as what it is after a crash: its
 * step counts as not done) and the checks that depend on it. */
typedef struct sc_dstate_info {
    const char *name;
    uint8_t public_state;  /* scsictl_disk_state shown by list_slots */
    const char *file_word; /* the state file's state word ... */
    bool file_teardown;    /* ... and teardown flag */
    bool in_flight;        /* a disk step is in flight: the disk is busy */
    bool teardown;         /* its release began: reserve of the path is busy */
    bool linux_only;
} sc_dstate_info;

typedef struct sc_mstate_info {
    const char *name;
    uint8_t public_state;  /* scsictl_mount_state */
    const char *file_word;
    bool in_flight;
    bool on_attached_only; /* the disk must be attached (may be mounted) */
} sc_mstate_info;

extern const sc_move sc_disk_table[SC_D_COUNT][SC_EV_COUNT];
extern const sc_move sc_mount_table[SC_M_COUNT][SC_EV_COUNT];
extern const sc_dstate_info sc_disk_states[SC_D_COUNT];
extern const sc_mstate_info sc_mount_states[SC_M_COUNT];
extern const char *const sc_event_names[SC_EV_COUNT];

/* A durable store of the controller's snapshots, attached by a driver
 * (core/store/state_file.c). The core calls it only from the blocking
 * entry points, with no lock held, to wait until change `seq` is written;
 * it writes through sc_write_begin / sc_write_end. */
typedef struct sc_store sc_store;
struct sc_store {
    const char *target; /* the file written: absolute, links resolved */
    /* OK once change seq is written; IO if the write that carried it
     * failed (for a tentative change: if it was undone). */
    int (*sync)(sc_store *s, scsictl *ctl, uint64_t seq, bool tentative, scsictl_error *err);
    void (*destroy)(sc_store *s);
};

/* A reserve or pin whose change is not yet written: undone if the write
 * that first carries it fails. */
typedef struct sc_tentative {
    uint64_t seq;
    uint8_t outcome;   /* SC_PENDING, SC_WRITTEN, SC_UNDONE */
    bool is_pin;
    uint32_t slot;     /* a pin's slot */
    scsictl_id id;     /* a reservation's id */
} sc_tentative;

enum { SC_PENDING = 0, SC_WRITTEN = 1, SC_UNDONE = 2 };

/* An id whose release finished in memory but is not known written. */
typedef struct sc_gone {
    scsictl_id id;
    bool in_file;   /* its write failed: later writes carry it ("gone" records),
                       so that a restart still finishes its retried unmap */
} sc_gone;

typedef scsictl_write sc_write;

/* Id generator state (ids.c): a ChaCha8 keystream keyed from libuuid, in
 * a ring of two halves. The half after the ready ids is computed before
 * fewer than SC_ID_LOOKAHEAD are left, so the ids of the next reserves are
 * always known and reserve can prefetch their map slots (sc_id_next_hash).
 * All zero is a valid, empty generator (keyed on first use). */
#define SC_IDS_PER_HALF 16 /* four keystream blocks */
#define SC_ID_RING (2 * SC_IDS_PER_HALF)
#define SC_ID_LOOKAHEAD 8

typedef struct sc_idgen {
    uint32_t key[8];
    uint64_t counter;
    uint8_t ring[16 * SC_ID_RING];
    unsigned next;  /* ring index of the next id */
    unsigned ready; /* ids computed and not yet taken */
} sc_idgen;

/* Records are kept small: a live reservation on a disk of its own costs a
 * reservation, a mount, a disk and three hash-map slots (bench: mem_live).
 * Configs are stored compactly after the record and handed out as the
 * public structs by sc_disk_cfg() / sc_mount_cfg(). */
typedef struct disk {
    uint64_t hash;      /* of the host path */
    mount *step_mount;  /* the mount whose step is in flight (the disk is busy) */
    size_t refs;        /* claims (reservations) on this disk */
    uint32_t slot;
    uint16_t controller, lun; /* the slot's coordinates, for the step path:
                                 a division's latency grows with the quotient */
    uint32_t path_len;
    uint8_t type;       /* scsictl_disk_type */
    bool read_only;
    bool has_evd;       /* evd_type follows the host path */
    uint8_t state;      /* sc_dstate: the disk machine (disk.c) */
    uint32_t n_options; /* backend options (sc_disk_options) */
    char strings[];     /* host_path NUL [evd_type NUL] [options, see disk.c] */
} disk;

/* A partition mount; its options and filesystem follow it in the same
 * block (an array of n_options pointers, then the strings). */
struct mount {
    uint64_t partition;
    disk *disk;
    size_t refs;        /* claims on this partition */
    uint32_t n_options;
    uint32_t fs_offset; /* filesystem string at (char *)m + fs_offset; 0 = "" */
    uint32_t verity_offset; /* 0: no verity; else the hash offset (8 bytes,
                               unaligned) then the root hash string there */
    bool read_only, encrypted, ensure_filesystem, block_dev, format_with_refs;
    uint8_t state;      /* sc_mstate: the mount machine (mount.c) */
    /* the guest path is derived (slot, partition), formatted when needed */
};

/* The reservation map hashes the id itself (sc_id_hash): ids are random. */
typedef struct reservation {
    scsictl_id id;
    disk *disk;
    mount *mount;       /* NULL once the partition claim is released */
    uint64_t partition;
    bool pending;       /* a release failed; only unmap moves it on */
    /* Low bits of the hash of the id handed out SC_ID_LOOKAHEAD reserves
     * after this one (0 when unknown). Callers often use ids in the order
     * they got them, so map and unmap of this id start loading that id's
     * map slot; in the padding, so the record does not grow. */
    uint32_t later_hash;
} reservation;

typedef struct pin {
    scsictl_disk_config cfg;
    size_t path_len;
    uint64_t hash;
    uint32_t slot;
    /* followed in the same allocation by its config's strings (disk.c) */
} pin;

struct scsictl {
    sc_lock lock;
    scsictl_allocator alloc;
    uint32_t controllers, luns, nslots;
    scsictl_guest guest;
    bool closed;
    size_t inflight;    /* steps in flight */
    uint32_t used;      /* taken slots (disk or pin) */
    uint32_t npinned;
    slotmap taken;
    uint64_t *pinned;   /* flat bitmap, one bit per slot */
    hmap disks, mounts, res, pins;
    sc_idgen ids;
    /* Durability (persist.c). Every change is numbered; with a store
     * attached, a call whose change is not yet written waits for a write
     * (done by the store, outside the lock) before it returns. */
    sc_store *store;    /* NULL: nothing is written */
    bool deferred;      /* the driver writes: the blocking calls return PERSIST */
    uint64_t seq;       /* the number of the latest change */
    uint64_t durable;   /* changes up to this one are written */
    bool writing;       /* a write is in flight (one at a time) */
    uint64_t failed;    /* the latest failed write carried changes up to this one */
    uint64_t writes, write_failures; /* for scsictl_get_stats */
    /* Reserves and pins not yet written, oldest first (persist.c). */
    sc_tentative *tentative;
    size_t ntentative, tentative_cap;
    /* Ids whose release finished in memory but is not known written (the
     * call is waiting for the write, or it failed and returned io): the
     * caller still holds them, so a retried unmap finishes with success
     * once the file is written, and a map is refused as a pending release.
     * At most SC_RELEASED_MAX, oldest dropped first. */
    sc_gone *released;
    size_t nreleased;
};

#define SC_RELEASED_MAX 256

/* errors.c */
int sc_fail(scsictl_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ids.c */
void sc_id_generate(sc_idgen *g, scsictl_id *id);
/* The hash of the id that the (k+1)-th sc_id_generate() from now returns
 * (k < SC_ID_LOOKAHEAD), computing it now if needed. */
uint64_t sc_id_next_hash(sc_idgen *g, unsigned k);
void sc_chacha_blocks4(const uint32_t key[8], uint64_t counter, int rounds, uint8_t out[256]);

/* A disk is busy while a step on it or on one of its partitions is in
 * flight; it is being torn down once its last claim's release reached it. */
static inline bool sc_disk_busy(const disk *d)
{
    return sc_disk_states[d->state].in_flight || d->step_mount != NULL;
}

static inline bool sc_disk_tearing_down(const disk *d)
{
    return sc_disk_states[d->state].teardown;
}

/* disk.c — disk configs and the disk state machine */
bool sc_disk_config_valid(const scsictl_disk_config *c);
bool sc_disk_config_equal(const scsictl_disk_config *a, const scsictl_disk_config *b);
bool sc_disk_same_settings(const disk *d, const scsictl_disk_config *c);
size_t sc_disk_size(const disk *d);
disk *sc_disk_find(scsictl *ctl, const char *path, size_t len, uint64_t hash);
disk *sc_disk_create(scsictl *ctl, const scsictl_disk_config *c, size_t len,
                     uint64_t hash, uint32_t slot);
void sc_disk_insert(scsictl *ctl, disk *d);
void sc_disk_forget(scsictl *ctl, disk *d);
void sc_disk_free(scsictl *ctl, disk *d);      /* NULL is fine */
uint64_t sc_disk_hash_of(const void *disk_item);
pin *sc_pin_find(scsictl *ctl, const char *path, size_t len, uint64_t hash);
pin *sc_pin_create(scsictl *ctl, const scsictl_disk_config *c, size_t len,
                   uint64_t hash, uint32_t slot);
void sc_pin_free(scsictl *ctl, pin *p);         /* NULL is fine */
uint64_t sc_pin_hash_of(const void *pin_item);
bool sc_slot_pinned(const scsictl *ctl, uint32_t slot);
void sc_slot_take(scsictl *ctl, uint32_t slot);
void sc_slot_release(scsictl *ctl, uint32_t slot);

/* mount.c — mount configs and the mount state machine */
bool sc_mount_config_valid(const scsictl_mount_config *c);
bool sc_verity_valid(const scsictl_mount_config *c); /* c has a root hash */
bool sc_mount_matches(const mount *m, const scsictl_mount_config *c);
mount *sc_mount_find(scsictl *ctl, const disk *d, uint64_t partition);
mount *sc_mount_create(scsictl *ctl, disk *d, const scsictl_mount_config *c);
void sc_mount_insert(scsictl *ctl, mount *m);
void sc_mount_forget(scsictl *ctl, mount *m);
void sc_mount_free(scsictl *ctl, mount *m);    /* NULL is fine */
size_t sc_mount_size(const mount *m);          /* its block's size */
uint64_t sc_mount_hash_of(const void *mount_item);
uint64_t sc_mount_hash(const disk *d, uint64_t partition);

/* controller.c */
reservation *sc_res_find(scsictl *ctl, const scsictl_id *id);
void sc_res_forget(scsictl *ctl, reservation *r);
void sc_res_free(scsictl *ctl, reservation *r); /* NULL is fine */

/* introspect.c: every item of map m in a fresh array sorted with cmp
 * (NULL when the map is empty); sets *nomem if the array cannot be had. */
void **sc_sorted_items(scsictl *ctl, const hmap *m, int (*cmp)(const void *, const void *),
                       bool *nomem);
/* qsort comparators of disk / mount pointers: slot order (then partition). */
int sc_cmp_disk_slot(const void *pa, const void *pb);
int sc_cmp_mount_slot(const void *pa, const void *pb);

/* snapshot.c — the caller holds the lock */
int sc_snapshot_write(scsictl *ctl, char **out, size_t *len, scsictl_error *err);
/* The FNV-1a 64 checksum a snapshot's end record carries (snapshot.c). */
uint64_t sc_snapshot_checksum(const char *p, size_t n);
/* Whether a string byte is written as it is (else as %XX). */
bool sc_snapshot_safe_byte(unsigned char c);

/* persist.c — durability, sans I/O.
 * sc_changed numbers a change (the caller holds the lock). */
static inline uint64_t sc_changed(scsictl *ctl)
{
    return ++ctl->seq;
}
/* The change a call must see written before it returns (0: everything is
 * written). After a failed write the state is renumbered, so that a retry
 * writes again rather than collecting the old failure. */
static inline uint64_t sc_unwritten(scsictl *ctl)
{
    if (ctl->durable >= ctl->seq)
        return 0;
    if (ctl->failed >= ctl->seq)
        sc_changed(ctl);
    return ctl->seq;
}
/* Room for one more tentative record (caller holds the lock): false when
 * out of memory. sc_tentative_add records a reserve (id) or pin (slot)
 * made as change seq. */
bool sc_tentative_room(scsictl *ctl);
void sc_tentative_add(scsictl *ctl, uint64_t seq, const scsictl_id *id, bool is_pin,
                      uint32_t slot);
/* Waits until change seq is written, through the store; OK with no store.
 * Takes no lock itself; the caller holds none. */
int sc_sync(scsictl *ctl, uint64_t seq, bool tentative, scsictl_error *err);
/* For stores. sc_write_begin (takes the lock): DONE when change seq is
 * written (a tentative one: and was not undone), SCSICTL_E_IO when the
 * write carrying it failed (a tentative one: it was undone), BUSY while
 * another write is in flight (wait for its end, then call again), STEP
 * with a snapshot in w to write. sc_write_end (takes the lock) records the
 * outcome of w's write; on failure, undoes the tentative changes it
 * carried. */
int sc_write_begin(scsictl *ctl, uint64_t seq, bool tentative, sc_write *w,
                   scsictl_error *err);
void sc_write_end(scsictl *ctl, sc_write *w, bool ok);
/* Attaches a store (the state file is set): the lock is held. */
int sc_store_attach(scsictl *ctl, sc_store *s, scsictl_error *err);
/* Undoes a pin made just now (controller.c). */
void sc_pin_undo(scsictl *ctl, uint32_t slot);
/* Undoes a reservation made just now (controller.c). */
void sc_unreserve(scsictl *ctl, reservation *r);

/* Disks, mounts, reservations and pins: plain blocks of the controller's
 * allocator (a cache of freed blocks saved under 10% of B1: see
 * docs/performance.md). n is the size p was allocated with. */
static inline void *sc_obj_new(scsictl *ctl, size_t n)
{
    return sc_malloc(&ctl->alloc, n);
}

static inline void sc_obj_del(scsictl *ctl, void *p, size_t n)
{
    (void)n;
    sc_free(&ctl->alloc, p);
}

/* The public configs of a disk and a mount, pointing into the records.
 * Inline, so that they are built in place (a copy of an out-of-line
 * result stalls on store forwarding in the step path). */
const char *const *sc_disk_options(const disk *d); /* disk.c; NULL if none */

static inline scsictl_disk_config sc_disk_cfg(const disk *d)
{
    return (scsictl_disk_config){
        .host_path = d->strings,
        .read_only = d->read_only,
        .type = (scsictl_disk_type)d->type,
        .evd_type = d->has_evd ? d->strings + d->path_len + 1 : NULL,
        .options = d->n_options ? sc_disk_options(d) : NULL,
        .n_options = d->n_options,
    };
}

static inline const char *const *sc_mount_options(const mount *m)
{
    return m->n_options ? (const char *const *)(const void *)(m + 1) : NULL;
}

static inline uint64_t sc_mount_verity_hash_offset(const mount *m)
{
    uint64_t v = 0;
    if (m->verity_offset)
        memcpy(&v, (const char *)m + m->verity_offset, sizeof v);
    return v;
}

static inline scsictl_mount_config sc_mount_cfg(const mount *m)
{
    return (scsictl_mount_config){
        .partition = m->partition,
        .read_only = m->read_only,
        .encrypted = m->encrypted,
        .ensure_filesystem = m->ensure_filesystem,
        .block_dev = m->block_dev,
        .format_with_refs = m->format_with_refs,
        .filesystem = m->fs_offset ? (const char *)m + m->fs_offset : "",
        .options = sc_mount_options(m),
        .n_options = m->n_options,
        .verity_root_hash = m->verity_offset ? (const char *)m + m->verity_offset + 8 : NULL,
        .verity_hash_offset = sc_mount_verity_hash_offset(m),
    };
}

/* An id's hash for the reservation map. Generated ids are uniformly random
 * (bar 6 fixed bits, none in the low bytes), so their bytes are a hash
 * already. Ids that were not generated here (a lookup of an unknown id, an
 * imported snapshot) only cost longer probes if crafted; correctness never
 * depends on it. */
static inline uint64_t sc_id_hash(const scsictl_id *id)
{
    uint64_t a, b;
    memcpy(&a, id->bytes, 8);
    memcpy(&b, id->bytes + 8, 8);
    return a ^ b;
}

/* Formatting helpers (guest_path.c) */
size_t sc_fmt_u64_long(char *out, uint64_t v); /* v >= 10 */

/* Writes v in decimal at out (no NUL); the length. One digit inline: the
 * controllers, luns and partitions of guest paths are mostly below 10. */
static inline size_t sc_fmt_u64(char *out, uint64_t v)
{
    if (v < 10) {
        out[0] = (char)('0' + v);
        return 1;
    }
    return sc_fmt_u64_long(out, v);
}
/* scsictl_guest_path() into a buffer known to be big enough; the length. */
size_t sc_guest_path(scsictl_guest guest, uint32_t controller, uint32_t lun,
                     uint64_t partition, char out[SCSICTL_GUEST_PATH_MAX]);

#endif
