/* mount.c — partition mounts: configs and the mount state machine.
 *
 * Transition table (ops.c drives it; "claims" are reservations):
 *
 *   state      event                                  next       step issued
 *   ---------  -------------------------------------  ---------  ------------------
 *   (none)     reserve: first claim on (disk, part)   reserved
 *   reserved   map, disk attached                     reserved   *_MOUNT, disk busy
 *   reserved   *_MOUNT ok                             mounted
 *   reserved   *_MOUNT failed                         reserved   (map fails; retry re-mounts; D1)
 *   reserved   last claim released                    (none)     no step (D1, D2)
 *   mounted    map                                    mounted    none: same path (P6)
 *   mounted    a claim released, others remain        mounted    none (refs - 1)
 *   mounted    last claim released                    mounted    *_UNMOUNT, disk busy
 *   mounted    *_UNMOUNT ok                           reserved   then forgotten
 *   mounted    *_UNMOUNT failed                       mounted    (release pending; a new
 *                                                                 claim may join it)
 *
 * The *_MOUNT step is LINUX_MOUNT, or on Windows WINDOWS_MOUNT_SCRATCH when
 * format_with_refs is set and WINDOWS_MOUNT otherwise. */
#include <string.h>

#include "alloc.h"
#include "internal.h"

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
    return true;
}

static const char *fs_of(const scsictl_mount_config *c)
{
    return c->filesystem ? c->filesystem : "";
}

bool sc_mount_config_equal(const scsictl_mount_config *a, const scsictl_mount_config *b)
{
    if (a->partition != b->partition || a->read_only != b->read_only ||
        a->encrypted != b->encrypted ||
        a->ensure_filesystem != b->ensure_filesystem ||
        a->block_dev != b->block_dev ||
        a->format_with_refs != b->format_with_refs ||
        a->n_options != b->n_options || strcmp(fs_of(a), fs_of(b)) != 0)
        return false;
    for (size_t i = 0; i < a->n_options; i++)
        if (strcmp(a->options[i], b->options[i]) != 0)
            return false;
    return true;
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
    return m->disk == k->disk && m->cfg.partition == k->partition;
}

mount *sc_mount_find(scsictl *ctl, const disk *d, uint64_t partition)
{
    mount_key key = { d, partition };
    return hmap_find(&ctl->mounts, sc_mount_hash(d, partition), &key, mount_eq);
}

/* One allocation: the mount, its option pointer array, then the strings. */
mount *sc_mount_create(scsictl *ctl, disk *d, const scsictl_mount_config *c)
{
    static const scsictl_mount_config defaults = { 0 };
    if (!c)
        c = &defaults;
    size_t bytes = sizeof(mount);
    if (c->n_options > (SIZE_MAX / 2) / sizeof(char *))
        return NULL;
    bytes += c->n_options * sizeof(char *);
    size_t strings = strlen(fs_of(c)) + 1;
    for (size_t i = 0; i < c->n_options; i++) {
        size_t n = strlen(c->options[i]) + 1;
        if (n > SIZE_MAX / 2 - strings)
            return NULL;
        strings += n;
    }
    if (strings > SIZE_MAX / 2 - bytes)
        return NULL;
    mount *m = sc_obj_new(ctl, bytes + strings);
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
    memcpy(s, fs_of(c), strlen(fs_of(c)) + 1);
    /* Field by field: a memset of the record compiles to rep stos, which
     * costs more than the rest of this function. */
    m->cfg = *c;
    m->cfg.filesystem = s;
    m->cfg.options = c->n_options ? opts : NULL;
    m->disk = d;
    m->prev = m->next = NULL;
    m->hash = sc_mount_hash(d, c->partition);
    m->refs = 0;
    m->state = SCSICTL_MOUNT_RESERVED;
    m->uncertain = false;
    return m;
}

void sc_mount_insert(scsictl *ctl, mount *m)
{
    disk *d = m->disk;
    hmap_insert(&ctl->mounts, m->hash, m);
    m->prev = NULL;
    m->next = d->mounts;
    if (d->mounts)
        d->mounts->prev = m;
    d->mounts = m;
    d->n_mounts++;
}

/* Drops a mount whose last claim is gone and that is not mounted. */
void sc_mount_forget(scsictl *ctl, mount *m)
{
    disk *d = m->disk;
    hmap_remove(&ctl->mounts, m->hash, m);
    if (m->prev)
        m->prev->next = m->next;
    else
        d->mounts = m->next;
    if (m->next)
        m->next->prev = m->prev;
    d->n_mounts--;
    sc_obj_del(ctl, m);
}
