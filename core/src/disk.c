/* disk.c — disks: configs, the slot they hold, and their state machine.
 *
 * Transition table (ops.c drives it; "claims" are reservations):
 *
 *   state      event                                   next       step issued
 *   ---------  --------------------------------------  ---------  ----------------
 *   (none)     reserve: first claim on the host path   reserved   (lowest free or pinned slot taken)
 *   reserved   map                                     reserved   ADD_SCSI_DISK, disk busy
 *   reserved   ADD_SCSI_DISK ok                        attached
 *   reserved   ADD_SCSI_DISK failed                    reserved   (map fails; retry re-adds)
 *   reserved   last claim released                     (none)     slot freed, no step (D2, D4)
 *   attached   last claim released, Linux guest        attached   LINUX_EJECT, tearing down
 *   attached   LINUX_EJECT ok                          ejected
 *   attached   LINUX_EJECT failed                      attached   (release pending)
 *   attached   last claim released, Windows guest      attached   REMOVE_SCSI_DISK, tearing down
 *   ejected    release continues                       ejected    REMOVE_SCSI_DISK
 *   attached,
 *   ejected    REMOVE_SCSI_DISK ok                     reserved   then forgotten: slot freed
 *   attached,
 *   ejected    REMOVE_SCSI_DISK failed                 unchanged  (release pending)
 *   reserved*  last claim released                     reserved*  LINUX_EJECT (Linux) or
 *                                                                 REMOVE_SCSI_DISK, tearing down
 *
 *   reserved* = "uncertain": restored from a state file written while its
 *   ADD was in flight; map re-adds it, release removes it anyway (ops.c).
 *
 * Rules that keep P1-P4: a disk keeps its slot until it is forgotten (D3);
 * it is ejected or removed only when no partition is mounted (unmounts come
 * first); while tearing down, reserve of its host path is busy (D5); while a
 * step is in flight, everything touching it is busy. */
#include <stddef.h>
#include <string.h>

#include "alloc.h"
#include "internal.h"

bool sc_disk_config_valid(const scsictl_disk_config *c)
{
    return c && c->host_path && c->host_path[0] &&
           (unsigned)c->type <= SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK;
}

static bool str_equal_nullable(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

bool sc_disk_config_equal(const scsictl_disk_config *a, const scsictl_disk_config *b)
{
    return a->read_only == b->read_only && a->type == b->type &&
           strcmp(a->host_path, b->host_path) == 0 &&
           str_equal_nullable(a->evd_type, b->evd_type);
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

/* The size of a block of `head` bytes followed by c's host_path (len
 * bytes) and evd_type, each with its NUL; 0 when that would not fit in
 * 32 bits (such a path is refused as out of memory). */
static size_t config_block_size(size_t head, const scsictl_disk_config *c, size_t len)
{
    size_t elen = c->evd_type ? strlen(c->evd_type) + 1 : 0;
    if (len >= UINT32_MAX / 2 || elen >= UINT32_MAX / 2)
        return 0;
    return head + len + 1 + elen;
}

/* Copies c's strings to `to`: host_path, then evd_type if set. */
static void copy_strings(char *to, const scsictl_disk_config *c, size_t len)
{
    memcpy(to, c->host_path, len + 1);
    if (c->evd_type)
        memcpy(to + len + 1, c->evd_type, strlen(c->evd_type) + 1);
}

/* Whether a disk found by c's host path was made with the rest of c. */
bool sc_disk_same_settings(const disk *d, const scsictl_disk_config *c)
{
    return d->read_only == c->read_only && d->type == (uint8_t)c->type &&
           str_equal_nullable(d->has_evd ? d->strings + d->path_len + 1 : NULL,
                              c->evd_type);
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
    copy_strings(d->strings, c, len);
    /* Field by field: a memset of the record compiles to rep stos, which
     * costs more than the rest of this function. */
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
    d->state = SCSICTL_DISK_RESERVED;
    d->busy = false;
    d->tearing_down = false;
    d->uncertain = false;
    d->step_kind = 0;
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
    char *strings = (char *)(p + 1);
    copy_strings(strings, c, len);
    p->cfg = *c;
    p->cfg.host_path = strings;
    p->cfg.evd_type = c->evd_type ? strings + len + 1 : NULL;
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
