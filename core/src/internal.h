/* internal.h — the controller's data structures, shared by the core's files.
 *
 *   scsictl ──disks (host path → disk)──► disk ──mounts list──► mount
 *           ──mounts ((disk, partition) → mount)──────────────────┘
 *           ──res (id → reservation)──► reservation ─► disk, mount
 *           ──pins (host path → pin)──► pin (rootfs pin with a disk config)
 *           taken: multi-level bitmap of used slots; pinned: flat bitmap
 *
 * One mutex guards all of it. Config strings are immutable once created, so
 * a driver may read a step's config with no lock held. */
#ifndef SCSICTL_INTERNAL_H
#define SCSICTL_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>

#include "alloc.h"
#include "bitmap.h"
#include "hmap.h"
#include "scsictl.h"

typedef struct mount mount;

/* Id generator state (ids.c): a ChaCha8 keystream keyed from libuuid;
 * all zero is a valid, empty generator (keyed on first use). */
#define SC_IDS_PER_BUFFER 16

typedef struct sc_idgen {
    uint32_t key[8];
    uint64_t counter;
    uint8_t buf[16 * SC_IDS_PER_BUFFER]; /* four keystream blocks */
    unsigned left; /* ids not yet taken from buf (0 = empty) */
} sc_idgen;

typedef struct disk {
    scsictl_disk_config cfg; /* strings live in `strings` below */
    size_t path_len;
    uint64_t hash;
    uint32_t slot;
    uint8_t state;      /* scsictl_disk_state */
    bool busy;          /* a step is in flight */
    bool tearing_down;  /* the last claim's release reached the disk stage */
    bool uncertain;     /* imported while its add was in flight: it may be
                           in the VM, so a release removes it anyway */
    uint8_t step_kind;  /* the step in flight, when busy */
    mount *step_mount;  /* its mount, for a mount step */
    size_t refs;        /* claims (reservations) on this disk */
    size_t n_mounts;
    mount *mounts;      /* intrusive list of this disk's partition mounts */
    /* followed in the same allocation by host_path and evd_type */
} disk;

struct mount {
    scsictl_mount_config cfg; /* options/filesystem live in `data` below */
    disk *disk;
    mount *prev, *next;
    uint64_t hash;
    size_t refs;        /* claims on this partition */
    uint8_t state;      /* scsictl_mount_state */
    bool uncertain;     /* imported while its mount was in flight */
    /* the guest path is derived (slot, partition), formatted when needed */
    /* followed in the same allocation by the options array and strings */
};

typedef struct reservation {
    scsictl_id id;
    uint64_t hash;
    disk *disk;
    mount *mount;       /* NULL once the partition claim is released */
    uint64_t partition;
    bool pending;       /* a release failed; only unmap moves it on */
} reservation;

typedef struct pin {
    scsictl_disk_config cfg;
    size_t path_len;
    uint64_t hash;
    uint32_t slot;
    /* followed in the same allocation by host_path and evd_type */
} pin;

struct scsictl {
    pthread_mutex_t lock;
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
    sc_cache cache;     /* freed object blocks for reuse */
    char *state_path;   /* durable state file, or NULL */
    bool dirty;         /* state changed since the state file was written */
};

/* errors.c */
int sc_fail(scsictl_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ids.c */
void sc_id_generate(sc_idgen *g, scsictl_id *id);
void sc_chacha_blocks4(const uint32_t key[8], uint64_t counter, int rounds, uint8_t out[256]);
uint64_t sc_id_hash(const scsictl_id *id);

/* disk.c — disk configs and the disk state machine */
bool sc_disk_config_valid(const scsictl_disk_config *c);
bool sc_disk_config_equal(const scsictl_disk_config *a, const scsictl_disk_config *b);
disk *sc_disk_find(scsictl *ctl, const char *path, size_t len, uint64_t hash);
disk *sc_disk_create(scsictl *ctl, const scsictl_disk_config *c, size_t len,
                     uint64_t hash, uint32_t slot);
void sc_disk_insert(scsictl *ctl, disk *d);
void sc_disk_forget(scsictl *ctl, disk *d);
pin *sc_pin_find(scsictl *ctl, const char *path, size_t len, uint64_t hash);
pin *sc_pin_create(scsictl *ctl, const scsictl_disk_config *c, size_t len,
                   uint64_t hash, uint32_t slot);
void *sc_config_copy(scsictl *ctl, size_t head, const scsictl_disk_config *c);
bool sc_slot_pinned(const scsictl *ctl, uint32_t slot);
void sc_slot_take(scsictl *ctl, uint32_t slot);
void sc_slot_release(scsictl *ctl, uint32_t slot);

/* mount.c — mount configs and the mount state machine */
bool sc_mount_config_valid(const scsictl_mount_config *c);
bool sc_mount_config_equal(const scsictl_mount_config *a, const scsictl_mount_config *b);
mount *sc_mount_find(scsictl *ctl, const disk *d, uint64_t partition);
mount *sc_mount_create(scsictl *ctl, disk *d, const scsictl_mount_config *c);
void sc_mount_insert(scsictl *ctl, mount *m);
void sc_mount_forget(scsictl *ctl, mount *m);
uint64_t sc_mount_hash(const disk *d, uint64_t partition);

/* controller.c */
reservation *sc_res_find(scsictl *ctl, const scsictl_id *id);
void sc_res_forget(scsictl *ctl, reservation *r);

/* snapshot.c, persist.c — the caller holds the lock */
int sc_snapshot_write(scsictl *ctl, char **out, size_t *len, scsictl_error *err);
int sc_persist_locked(scsictl *ctl, scsictl_error *err);

/* Disks, mounts, reservations and pins: blocks through the object cache. */
static inline void *sc_obj_new(scsictl *ctl, size_t n)
{
    return sc_obj_alloc(&ctl->alloc, &ctl->cache, n);
}

static inline void sc_obj_del(scsictl *ctl, void *p)
{
    sc_obj_free(&ctl->alloc, &ctl->cache, p);
}

/* Formatting helpers (errors.c) */
size_t sc_fmt_u64(char *out, uint64_t v);

#endif
