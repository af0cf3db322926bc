/* disk.c — disks: the disk state machine, configs, and the slot they hold.
 *
 * The machine is the table below: (state, event) -> (next state, step
 * issued). ops.c moves disks only through it, snapshot import accepts only
 * the states it names, and a move it does not list is refused, naming the
 * state and the event. "release" reaches the disk with its last claim,
 * after its partitions are unmounted and forgotten (P2); a Linux guest
 * ejects the device before the VM removes it. "failed" is a step that
 * failed or was taken back unperformed (its state file write failed).
 *
 * Rules that keep P1-P4: a disk keeps its slot until it is forgotten (D3);
 * while a step is in flight on it (or on one of its partitions), every
 * call touching it is busy; once its teardown began, reserve of its host
 * path is busy (D5). */
#include <stddef.h>
#include <string.h>

#include "alloc.h"
#include "internal.h"

#define MOVE(next, step) { (uint8_t)(next), (uint8_t)(step), true }
#define D(x) SC_D_##x
#define DO(x) SC_DO_##x

const sc_move sc_disk_table[SC_D_COUNT][SC_EV_COUNT] = {
    /* state                event                  next                   step */
    [D(RESERVED)] = {
        [SC_EV_MAP]             = MOVE(D(ADDING),            DO(ADD)),
        [SC_EV_RELEASE_LINUX]   = MOVE(D(GONE),              DO(NOTHING)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(D(GONE),              DO(NOTHING)),
    },
    [D(ADDING)] = {
        [SC_EV_OK]              = MOVE(D(ATTACHED),          DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(D(RESERVED),          DO(NOTHING)),
    },
    [D(MAYBE_ADDED)] = { /* a map adds it again; a release removes it anyway */
        [SC_EV_MAP]             = MOVE(D(READDING),          DO(ADD)),
        [SC_EV_RELEASE_LINUX]   = MOVE(D(MAYBE_EJECTING),    DO(EJECT)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(D(MAYBE_REMOVING),    DO(REMOVE)),
    },
    [D(READDING)] = {
        [SC_EV_OK]              = MOVE(D(ATTACHED),          DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(D(MAYBE_ADDED),       DO(NOTHING)),
    },
    [D(ATTACHED)] = { /* a map goes on to the partition's machine */
        [SC_EV_MAP]             = MOVE(D(ATTACHED),          DO(NOTHING)),
        [SC_EV_RELEASE_LINUX]   = MOVE(D(EJECTING),          DO(EJECT)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(D(REMOVING),          DO(REMOVE)),
    },
    [D(RELEASING)] = {
        [SC_EV_RELEASE_LINUX]   = MOVE(D(EJECTING),          DO(EJECT)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(D(REMOVING),          DO(REMOVE)),
    },
    [D(EJECTING)] = {
        [SC_EV_OK]              = MOVE(D(EJECTED),           DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(D(RELEASING),         DO(NOTHING)),
    },
    [D(EJECTED)] = { /* the release goes on: only the removal is left */
        [SC_EV_RELEASE_LINUX]   = MOVE(D(REMOVING_EJECTED),  DO(REMOVE)),
    },
    [D(REMOVING)] = { /* out of the VM: the release then forgets it */
        [SC_EV_OK]              = MOVE(D(RESERVED),          DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(D(RELEASING),         DO(NOTHING)),
    },
    [D(REMOVING_EJECTED)] = {
        [SC_EV_OK]              = MOVE(D(RESERVED),          DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(D(EJECTED),           DO(NOTHING)),
    },
    [D(MAYBE_RELEASING)] = {
        [SC_EV_RELEASE_LINUX]   = MOVE(D(MAYBE_EJECTING),    DO(EJECT)),
        [SC_EV_RELEASE_WINDOWS] = MOVE(D(MAYBE_REMOVING),    DO(REMOVE)),
    },
    [D(MAYBE_EJECTING)] = {
        [SC_EV_OK]              = MOVE(D(EJECTED),           DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(D(MAYBE_RELEASING),   DO(NOTHING)),
    },
    [D(MAYBE_REMOVING)] = {
        [SC_EV_OK]              = MOVE(D(RESERVED),          DO(NOTHING)),
        [SC_EV_FAILED]          = MOVE(D(MAYBE_RELEASING),   DO(NOTHING)),
    },
};

#define R SCSICTL_DISK_RESERVED
#define A SCSICTL_DISK_ATTACHED
#define E SCSICTL_DISK_EJECTED

const sc_dstate_info sc_disk_states[SC_D_COUNT] = {
    /*                       name                shown file word  td     in flight teardown linux */
    [D(RESERVED)]         = { "reserved",         R, "reserved", false, false, false, false },
    [D(ADDING)]           = { "adding",           R, "adding",   false, true,  false, false },
    [D(MAYBE_ADDED)]      = { "maybe_added",      R, "adding",   false, false, false, false },
    [D(READDING)]         = { "readding",         R, "adding",   false, true,  false, false },
    [D(ATTACHED)]         = { "attached",         A, "attached", false, false, false, false },
    [D(RELEASING)]        = { "releasing",        A, "attached", true,  false, true,  false },
    [D(EJECTING)]         = { "ejecting",         A, "attached", true,  true,  true,  true },
    [D(EJECTED)]          = { "ejected",          E, "ejected",  true,  false, true,  true },
    [D(REMOVING)]         = { "removing",         A, "attached", true,  true,  true,  false },
    [D(REMOVING_EJECTED)] = { "removing_ejected", E, "ejected",  true,  true,  true,  true },
    [D(MAYBE_RELEASING)]  = { "maybe_releasing",  R, "adding",   true,  false, true,  false },
    [D(MAYBE_EJECTING)]   = { "maybe_ejecting",   R, "adding",   true,  true,  true,  true },
    [D(MAYBE_REMOVING)]   = { "maybe_removing",   R, "adding",   true,  true,  true,  false },
};

#undef R
#undef A
#undef E
#undef D
#undef DO
#undef MOVE

const char *const sc_event_names[SC_EV_COUNT] = {
    [SC_EV_MAP] = "map",
    [SC_EV_RELEASE_LINUX] = "release (Linux guest)",
    [SC_EV_RELEASE_WINDOWS] = "release (Windows guest)",
    [SC_EV_OK] = "step ok",
    [SC_EV_FAILED] = "step failed",
};

/* The length of an option's key: the bytes before its '='. */
static size_t option_key_len(const char *o)
{
    const char *eq = strchr(o, '=');
    return eq ? (size_t)(eq - o) : 0;
}

/* Options are "key=value", keys non-empty and strictly ascending (so that
 * equal settings are equal arrays and a key appears once). */
static bool options_valid(const char *const *opts, size_t n)
{
    if (n > SCSICTL_DISK_OPTIONS_MAX || (n && !opts))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!opts[i] || strlen(opts[i]) > SCSICTL_DISK_OPTION_MAX)
            return false;
        size_t k = option_key_len(opts[i]);
        if (k == 0)
            return false;
        if (i > 0) {
            size_t pk = option_key_len(opts[i - 1]);
            int c = memcmp(opts[i - 1], opts[i], pk < k ? pk : k);
            if (c > 0 || (c == 0 && pk >= k))
                return false;
        }
    }
    return true;
}

bool sc_disk_config_valid(const scsictl_disk_config *c)
{
    return c && c->host_path && c->host_path[0] &&
           (unsigned)c->type <= SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK &&
           options_valid(c->options, c->n_options);
}

static bool str_equal_nullable(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool options_equal(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

bool sc_disk_config_equal(const scsictl_disk_config *a, const scsictl_disk_config *b)
{
    return a->read_only == b->read_only && a->type == b->type &&
           strcmp(a->host_path, b->host_path) == 0 &&
           str_equal_nullable(a->evd_type, b->evd_type) &&
           options_equal(a->options, a->n_options, b->options, b->n_options);
}

const char *scsictl_disk_type_name(scsictl_disk_type type)
{
    switch (type) {
    case SCSICTL_DISK_VIRTUAL_DISK: return "VirtualDisk";
    case SCSICTL_DISK_PASSTHRU: return "PassThru";
    case SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK: return "ExtensibleVirtualDisk";
    }
    return NULL;
}

const char *scsictl_disk_state_name(scsictl_disk_state s)
{
    switch (s) {
    case SCSICTL_DISK_RESERVED: return "reserved";
    case SCSICTL_DISK_ATTACHED: return "attached";
    case SCSICTL_DISK_EJECTED: return "ejected";
    }
    return "unknown";
}

/* A config's strings follow its record in the same block: host_path NUL,
 * [evd_type NUL], then, when it has options, the array of option pointers
 * (aligned) and the option strings. */
static size_t align_ptr(size_t n)
{
    return (n + _Alignof(char *) - 1) & ~(_Alignof(char *) - 1);
}

/* The size of a block of `head` bytes followed by c's strings (host_path is
 * len bytes); 0 when that would not fit in 32 bits (such a path is refused
 * as out of memory). Options are bounded by sc_disk_config_valid. */
static size_t config_block_size(size_t head, const scsictl_disk_config *c, size_t len)
{
    size_t elen = c->evd_type ? strlen(c->evd_type) + 1 : 0;
    if (len >= UINT32_MAX / 2 || elen >= UINT32_MAX / 2)
        return 0;
    size_t size = head + len + 1 + elen;
    if (c->n_options) {
        size = align_ptr(size) + c->n_options * sizeof(char *);
        for (size_t i = 0; i < c->n_options; i++)
            size += strlen(c->options[i]) + 1;
    }
    return size;
}

/* Copies c's strings into block after its head; returns the config
 * pointing at the copies. */
static scsictl_disk_config copy_config(char *block, size_t head, const scsictl_disk_config *c,
                                       size_t len)
{
    scsictl_disk_config out = *c;
    char *s = block + head;
    memcpy(s, c->host_path, len + 1);
    out.host_path = s;
    s += len + 1;
    if (c->evd_type) {
        size_t n = strlen(c->evd_type) + 1;
        memcpy(s, c->evd_type, n);
        out.evd_type = s;
        s += n;
    }
    if (c->n_options) {
        const char **opts = (const char **)(void *)(block + align_ptr((size_t)(s - block)));
        s = (char *)(opts + c->n_options);
        for (size_t i = 0; i < c->n_options; i++) {
            size_t n = strlen(c->options[i]) + 1;
            memcpy(s, c->options[i], n);
            opts[i] = s;
            s += n;
        }
        out.options = opts;
    } else {
        out.options = NULL;
    }
    return out;
}

const char *const *sc_disk_options(const disk *d)
{
    if (!d->n_options)
        return NULL;
    size_t end = offsetof(disk, strings) + d->path_len + 1;
    if (d->has_evd)
        end += strlen(d->strings + end - offsetof(disk, strings)) + 1;
    return (const char *const *)(const void *)((const char *)d + align_ptr(end));
}

/* Whether a disk found by c's host path was made with the rest of c. */
bool sc_disk_same_settings(const disk *d, const scsictl_disk_config *c)
{
    return d->read_only == c->read_only && d->type == (uint8_t)c->type &&
           str_equal_nullable(d->has_evd ? d->strings + d->path_len + 1 : NULL,
                              c->evd_type) &&
           options_equal(sc_disk_options(d), d->n_options, c->options, c->n_options);
}

size_t sc_disk_size(const disk *d)
{
    scsictl_disk_config c = sc_disk_cfg(d);
    return config_block_size(offsetof(disk, strings), &c, d->path_len);
}

/* A lookup key: the disk map keeps no hashes (hmap.h), so the stored one
 * is compared first and most other disks are told apart without a strcmp
 * over a long shared prefix. */
typedef struct path_key {
    const char *path;
    size_t len;
    uint64_t hash;
} path_key;

static bool disk_eq(const void *item, const void *key)
{
    const disk *d = item;
    const path_key *k = key;
    return d->hash == k->hash && d->path_len == k->len &&
           memcmp(d->strings, k->path, k->len) == 0;
}

uint64_t sc_disk_hash_of(const void *item)
{
    return ((const disk *)item)->hash;
}

disk *sc_disk_find(scsictl *ctl, const char *path, size_t len, uint64_t hash)
{
    path_key key = { path, len, hash };
    return hmap_find(&ctl->disks, hash, &key, disk_eq);
}

disk *sc_disk_create(scsictl *ctl, const scsictl_disk_config *c, size_t len,
                     uint64_t hash, uint32_t slot)
{
    /* the strings start where the fields end, before sizeof's padding */
    size_t size = config_block_size(offsetof(disk, strings), c, len);
    disk *d = size ? sc_obj_new(ctl, size) : NULL;
    if (!d)
        return NULL;
    copy_config((char *)d, offsetof(disk, strings), c, len);
    /* Field by field, cheaper than clearing the record first. */
    d->hash = hash;
    d->step_mount = NULL;
    d->refs = 0;
    d->slot = slot;
    d->controller = (uint16_t)(slot / ctl->luns); /* < 1024 */
    d->lun = (uint16_t)(slot % ctl->luns);        /* < 16384 */
    d->path_len = (uint32_t)len;
    d->type = (uint8_t)c->type;
    d->read_only = c->read_only;
    d->has_evd = c->evd_type != NULL;
    d->state = SC_D_RESERVED;
    d->n_options = (uint32_t)c->n_options;
    return d;
}

void sc_disk_free(scsictl *ctl, disk *d)
{
    if (d)
        sc_obj_del(ctl, d, sc_disk_size(d));
}

void sc_disk_insert(scsictl *ctl, disk *d)
{
    hmap_insert(&ctl->disks, d->hash, d);
    sc_slot_take(ctl, d->slot);
}

/* Drops a disk whose last claim is gone and that is not in the VM. */
void sc_disk_forget(scsictl *ctl, disk *d)
{
    hmap_remove(&ctl->disks, d->hash, d);
    sc_slot_release(ctl, d->slot);
    sc_disk_free(ctl, d);
}

static bool pin_eq(const void *item, const void *key)
{
    const pin *p = item;
    const path_key *k = key;
    return p->hash == k->hash && p->path_len == k->len &&
           memcmp(p->cfg.host_path, k->path, k->len) == 0;
}

uint64_t sc_pin_hash_of(const void *item)
{
    return ((const pin *)item)->hash;
}

pin *sc_pin_find(scsictl *ctl, const char *path, size_t len, uint64_t hash)
{
    path_key key = { path, len, hash };
    return hmap_find(&ctl->pins, hash, &key, pin_eq);
}

pin *sc_pin_create(scsictl *ctl, const scsictl_disk_config *c, size_t len,
                   uint64_t hash, uint32_t slot)
{
    size_t size = config_block_size(sizeof(pin), c, len);
    pin *p = size ? sc_obj_new(ctl, size) : NULL;
    if (!p)
        return NULL;
    p->cfg = copy_config((char *)p, sizeof *p, c, len);
    p->path_len = len;
    p->hash = hash;
    p->slot = slot;
    return p;
}

void sc_pin_free(scsictl *ctl, pin *p)
{
    if (p)
        sc_obj_del(ctl, p, config_block_size(sizeof *p, &p->cfg, p->path_len));
}

bool sc_slot_pinned(const scsictl *ctl, uint32_t slot)
{
    return (ctl->pinned[slot >> 6] >> (slot & 63)) & 1u;
}

/* A slot is taken when it holds a disk or is pinned; `used` counts each
 * slot once whichever holds it. */
void sc_slot_take(scsictl *ctl, uint32_t slot)
{
    if (!slotmap_test(&ctl->taken, slot)) {
        slotmap_set(&ctl->taken, slot);
        ctl->used++;
    }
}

void sc_slot_release(scsictl *ctl, uint32_t slot)
{
    if (!sc_slot_pinned(ctl, slot) && slotmap_test(&ctl->taken, slot)) {
        slotmap_clear(&ctl->taken, slot);
        ctl->used--;
    }
}
