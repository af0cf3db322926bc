/* mount.c — partition mounts: the mount state machine and mount configs.
 *
 * The machine is the table below: (state, event) -> (next state, step
 * issued), driven by ops.c, checked by snapshot import. "map" reaches a
 * partition once its disk is attached; "release" with its last claim (a
 * claim released while others remain only drops a reference). While a
 * mount step is in flight its disk is busy. A failed unmount leaves the
 * partition mounted: a new claim may join it (mapping it makes no step)
 * and the pending release, retried, only drops its own claim.
 *
 * The MOUNT step is LINUX_MOUNT, or on Windows WINDOWS_MOUNT_SCRATCH when
 * format_with_refs is set and WINDOWS_MOUNT otherwise. */
#include <string.h>

#include "alloc.h"
#include "internal.h"

#define MOVE(next, step) { (uint8_t)(next), (uint8_t)(step), true }
#define M(x) SC_M_##x
#define DO(x) SC_DO_##x

const sc_move sc_mount_table[SC_M_COUNT][SC_EV_COUNT] = {
    /* state                event                  next                  step */
    [M(RESERVED)] = {
        [SC_EV_MAP]             = MOVE(M(MOUNTING),         DO(MOUNT)),
        [SC_EV_RELEASE_LINUX]   = MOVE(M(GONE),             DO(NOTHING)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(M(GONE),             DO(NOTHING)),
    },
    [M(MOUNTING)] = {
        [SC_EV_OK]              = MOVE(M(MOUNTED),          DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(M(RESERVED),         DO(NOTHING)),
    },
    [M(MAYBE_MOUNTED)] = { /* a map mounts it again; a release unmounts it anyway */
        [SC_EV_MAP]             = MOVE(M(REMOUNTING),       DO(MOUNT)),
        [SC_EV_RELEASE_LINUX]   = MOVE(M(UNMOUNTING_MAYBE), DO(UNMOUNT)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(M(UNMOUNTING_MAYBE), DO(UNMOUNT)),
    },
    [M(REMOUNTING)] = {
        [SC_EV_OK]              = MOVE(M(MOUNTED),          DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(M(MAYBE_MOUNTED),    DO(NOTHING)),
    },
    [M(MOUNTED)] = { /* a map is done: the same guest path (P6) */
        [SC_EV_MAP]             = MOVE(M(MOUNTED),          DO(NOTHING)),
        [SC_EV_RELEASE_LINUX]   = MOVE(M(UNMOUNTING),       DO(UNMOUNT)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(M(UNMOUNTING),       DO(UNMOUNT)),
    },
    [M(UNMOUNTING)] = { /* unmounted: the release then forgets it */
        [SC_EV_OK]              = MOVE(M(RESERVED),         DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(M(MOUNTED),          DO(NOTHING)),
    },
    [M(UNMOUNTING_MAYBE)] = {
        [SC_EV_OK]              = MOVE(M(RESERVED),         DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(M(MAYBE_MOUNTED),    DO(NOTHING)),
    },
};

#define R SCSICTL_MOUNT_RESERVED
#define MD SCSICTL_MOUNT_MOUNTED

const sc_mstate_info sc_mount_states[SC_M_COUNT] = {
    /*                       name                shown file word   in flight attached only */
    [M(RESERVED)]         = { "reserved",         R,  "reserved", false, false },
    [M(MOUNTING)]         = { "mounting",         R,  "mounting", true,  true },
    [M(MAYBE_MOUNTED)]    = { "maybe_mounted",    R,  "mounting", false, true },
    [M(REMOUNTING)]       = { "remounting",       R,  "mounting", true,  true },
    [M(MOUNTED)]          = { "mounted",          MD, "mounted",  false, true },
    [M(UNMOUNTING)]       = { "unmounting",       MD, "mounted",  true,  true },
    [M(UNMOUNTING_MAYBE)] = { "unmounting_maybe", R,  "mounting", true,  true },
};

#undef R
#undef MD
#undef M
#undef DO
#undef MOVE

const char *scsictl_mount_state_name(scsictl_mount_state s)
{
    switch (s) {
    case SCSICTL_MOUNT_RESERVED: return "reserved";
    case SCSICTL_MOUNT_MOUNTED: return "mounted";
    }
    return "unknown";
}

bool sc_mount_config_valid(const scsictl_mount_config *c)
{
    if (!c)
        return true;
    if (c->partition > (uint64_t)INT64_MAX)
        return false;
    if (c->n_options && !c->options)
        return false;
    for (size_t i = 0; i < c->n_options; i++)
        if (!c->options[i])
            return false;
    return c->verity_root_hash ? sc_verity_valid(c) : c->verity_hash_offset == 0;
}

bool sc_verity_valid(const scsictl_mount_config *c)
{
    const char *h = c->verity_root_hash;
    if (!c->read_only || c->encrypted || c->verity_hash_offset % 512 != 0 ||
        strlen(h) != SCSICTL_VERITY_HASH_HEX)
        return false;
    for (; *h; h++)
        if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f')))
            return false;
    return true;
}

static const char *fs_of(const scsictl_mount_config *c)
{
    return c->filesystem ? c->filesystem : "";
}

uint64_t sc_mount_hash(const disk *d, uint64_t partition)
{
    /* d->hash is already well mixed: one multiply folds the partition in. */
    uint64_t x = (d->hash ^ partition) * 0x9e3779b97f4a7c15ull;
    return x ^ x >> 32;
}

typedef struct mount_key {
    const disk *disk;
    uint64_t partition;
} mount_key;

static bool mount_eq(const void *item, const void *key)
{
    const mount *m = item;
    const mount_key *k = key;
    return m->disk == k->disk && m->partition == k->partition;
}

uint64_t sc_mount_hash_of(const void *item)
{
    const mount *m = item;
    return sc_mount_hash(m->disk, m->partition);
}

mount *sc_mount_find(scsictl *ctl, const disk *d, uint64_t partition)
{
    mount_key key = { d, partition };
    return hmap_find(&ctl->mounts, sc_mount_hash(d, partition), &key, mount_eq);
}

/* Whether m was made with config c (the mount's partition included).
 * Compared in place: every reserve of a shared partition asks. */
bool sc_mount_matches(const mount *m, const scsictl_mount_config *c)
{
    const char *fs = fs_of(c);
    if (m->partition != c->partition || m->read_only != c->read_only ||
        m->encrypted != c->encrypted || m->ensure_filesystem != c->ensure_filesystem ||
        m->block_dev != c->block_dev || m->format_with_refs != c->format_with_refs ||
        m->n_options != c->n_options ||
        (m->fs_offset ? strcmp((const char *)m + m->fs_offset, fs) != 0 : fs[0] != '\0') ||
        (m->verity_offset != 0) != (c->verity_root_hash != NULL))
        return false;
    if (m->verity_offset &&
        (sc_mount_verity_hash_offset(m) != c->verity_hash_offset ||
         strcmp((const char *)m + m->verity_offset + 8, c->verity_root_hash) != 0))
        return false;
    const char *const *options = sc_mount_options(m);
    for (size_t i = 0; i < c->n_options; i++)
        if (strcmp(options[i], c->options[i]) != 0)
            return false;
    return true;
}

size_t sc_mount_size(const mount *m)
{
    if (m->verity_offset)
        return m->verity_offset + 8 + SCSICTL_VERITY_HASH_HEX + 1;
    if (m->fs_offset) {
        const char *fs = (const char *)m + m->fs_offset;
        return m->fs_offset + strlen(fs) + 1;
    }
    if (m->n_options) {
        const char *last = sc_mount_options(m)[m->n_options - 1];
        return (size_t)(last - (const char *)m) + strlen(last) + 1;
    }
    return sizeof *m;
}

/* Blocks are limited to 32-bit offsets; a bigger config is refused as out
 * of memory. */
#define MOUNT_MAX_BYTES (UINT32_MAX / 2)

mount *sc_mount_create(scsictl *ctl, disk *d, const scsictl_mount_config *c)
{
    static const scsictl_mount_config defaults = { 0 };
    if (!c)
        c = &defaults;
    if (c->n_options > MOUNT_MAX_BYTES / sizeof(char *))
        return NULL;
    size_t bytes = sizeof(mount) + c->n_options * sizeof(char *);
    for (size_t i = 0; i < c->n_options && bytes <= MOUNT_MAX_BYTES; i++)
        bytes += strlen(c->options[i]) + 1; /* stays far below SIZE_MAX */
    size_t fs_len = strlen(fs_of(c));
    size_t fs_offset = fs_len ? bytes : 0;
    if (bytes > MOUNT_MAX_BYTES || fs_len >= MOUNT_MAX_BYTES - bytes)
        return NULL;
    if (fs_len)
        bytes += fs_len + 1;
    size_t verity_offset = c->verity_root_hash ? bytes : 0;
    if (verity_offset)
        bytes += 8 + SCSICTL_VERITY_HASH_HEX + 1;
    mount *m = sc_obj_new(ctl, bytes);
    if (!m)
        return NULL;
    const char **opts = (const char **)(void *)(m + 1); /* mount is pointer-aligned */
    char *s = (char *)(opts + c->n_options);
    for (size_t i = 0; i < c->n_options; i++) {
        size_t n = strlen(c->options[i]) + 1;
        memcpy(s, c->options[i], n);
        opts[i] = s;
        s += n;
    }
    if (fs_len)
        memcpy(s, c->filesystem, fs_len + 1);
    if (verity_offset) {
        memcpy((char *)m + verity_offset, &c->verity_hash_offset, 8);
        memcpy((char *)m + verity_offset + 8, c->verity_root_hash, SCSICTL_VERITY_HASH_HEX + 1);
    }
    /* Field by field, cheaper than clearing the record first. */
    m->partition = c->partition;
    m->disk = d;
    m->refs = 0;
    m->n_options = (uint32_t)c->n_options;
    m->fs_offset = (uint32_t)fs_offset;
    m->verity_offset = (uint32_t)verity_offset;
    m->read_only = c->read_only;
    m->encrypted = c->encrypted;
    m->ensure_filesystem = c->ensure_filesystem;
    m->block_dev = c->block_dev;
    m->format_with_refs = c->format_with_refs;
    m->state = SC_M_RESERVED;
    return m;
}

void sc_mount_free(scsictl *ctl, mount *m)
{
    if (m)
        sc_obj_del(ctl, m, sc_mount_size(m));
}

void sc_mount_insert(scsictl *ctl, mount *m)
{
    hmap_insert(&ctl->mounts, sc_mount_hash(m->disk, m->partition), m);
}

/* Drops a mount whose last claim is gone and that is not mounted. */
void sc_mount_forget(scsictl *ctl, mount *m)
{
    hmap_remove(&ctl->mounts, sc_mount_hash(m->disk, m->partition), m);
    sc_mount_free(ctl, m);
}
