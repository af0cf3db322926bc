/* controller.c — creating a controller, reserving claims, pinning slots.
 *
 * Reserve is all-or-nothing: it checks everything, then allocates
 * everything it may need (objects and hash-map room), and only then
 * changes state, so every failure point leaves the controller untouched. */
#include <string.h>

#include "alloc.h"
#include "internal.h"

static bool res_eq(const void *item, const void *key)
{
    const reservation *r = item;
    return memcmp(r->id.bytes, key, sizeof r->id.bytes) == 0;
}

void sc_res_free(scsictl *ctl, reservation *r)
{
    sc_obj_del(ctl, r, sizeof *r);
}

reservation *sc_res_find(scsictl *ctl, const scsictl_id *id)
{
    return hmap_find(&ctl->res, sc_id_hash(id), id->bytes, res_eq);
}

void sc_res_forget(scsictl *ctl, reservation *r)
{
    hmap_remove(&ctl->res, sc_id_hash(&r->id), r);
    sc_res_free(ctl, r);
}

int scsictl_new(const scsictl_options *opts, scsictl **out, scsictl_error *err)
{
    if (!opts || !out)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "new: options and out are required");
    uint32_t luns = opts->luns_per_controller ? opts->luns_per_controller : SCSICTL_DEFAULT_LUNS;
    if (opts->controllers > SCSICTL_MAX_CONTROLLERS)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "new: controllers must be 0..%u, got %u",
                       SCSICTL_MAX_CONTROLLERS, opts->controllers);
    if (luns > SCSICTL_MAX_LUNS)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "new: luns_per_controller must be 1..%u, got %u",
                       SCSICTL_MAX_LUNS, luns);
    if ((uint64_t)opts->controllers * luns > SCSICTL_MAX_SLOTS)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "new: controllers * luns_per_controller must be at most %u",
                       SCSICTL_MAX_SLOTS);
    if (opts->guest != SCSICTL_GUEST_LINUX && opts->guest != SCSICTL_GUEST_WINDOWS)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "new: unknown guest flavour");
    const scsictl_allocator *a = opts->allocator ? opts->allocator : &sc_default_allocator;
    if (!a->malloc_fn || !a->realloc_fn || !a->free_fn)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "new: incomplete allocator");

    scsictl *ctl = sc_calloc(a, 1, sizeof *ctl);
    if (!ctl)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "new: out of memory");
    ctl->alloc = *a;
    ctl->controllers = opts->controllers;
    ctl->luns = luns;
    ctl->nslots = opts->controllers * luns;
    ctl->guest = opts->guest;
    hmap_init(&ctl->disks, sc_disk_hash_of);
    hmap_init(&ctl->mounts, sc_mount_hash_of);
    hmap_init(&ctl->res, NULL); /* keeps hashes: see hmap.h */
    hmap_init(&ctl->pins, sc_pin_hash_of);
    ctl->pinned = sc_calloc(a, (ctl->nslots + 63) / 64 + 1, sizeof(uint64_t));
    if (!sc_lock_init(&ctl->lock, opts->single_threaded)) {
        sc_free(a, ctl->pinned);
        sc_free(a, ctl);
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "new: cannot make a mutex");
    }
    if (!ctl->pinned || !slotmap_init(&ctl->taken, ctl->nslots, a)) {
        slotmap_destroy(&ctl->taken, a);
        sc_lock_destroy(&ctl->lock);
        sc_free(a, ctl->pinned);
        sc_free(a, ctl);
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "new: out of memory");
    }
    *out = ctl;
    return SCSICTL_OK;
}

/* Frees every item of m. */
static void free_all_items(scsictl *ctl, hmap *m, void (*free_item)(scsictl *, void *))
{
    for (size_t i = 0; i < m->cap; i++)
        if (hmap_item(m, i))
            free_item(ctl, hmap_item(m, i));
    hmap_destroy(m, &ctl->alloc);
}

static void free_res(scsictl *ctl, void *p) { sc_res_free(ctl, p); }
static void free_mount(scsictl *ctl, void *p) { sc_mount_free(ctl, p); }
static void free_disk(scsictl *ctl, void *p) { sc_disk_free(ctl, p); }
static void free_pin(scsictl *ctl, void *p) { sc_pin_free(ctl, p); }

void scsictl_free(scsictl *ctl)
{
    if (!ctl)
        return;
    scsictl_allocator a = ctl->alloc;
    free_all_items(ctl, &ctl->res, free_res);
    free_all_items(ctl, &ctl->mounts, free_mount);
    free_all_items(ctl, &ctl->disks, free_disk);
    free_all_items(ctl, &ctl->pins, free_pin);
    slotmap_destroy(&ctl->taken, &a);
    sc_free(&a, ctl->pinned);
    if (ctl->store)
        ctl->store->destroy(ctl->store); /* gives up the state file's lock */
    sc_free(&a, ctl->tentative);
    sc_free(&a, ctl->released);
    sc_lock_destroy(&ctl->lock);
    sc_free(&a, ctl);
}

void scsictl_set_single_threaded(scsictl *ctl, bool single_threaded)
{
    if (ctl)
        ctl->lock.off = single_threaded;
}

int scsictl_close(scsictl *ctl, scsictl_error *err)
{
    if (!ctl)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "close: no controller");
    int rc = SCSICTL_OK;
    uint64_t seq = 0;
    sc_lock_acquire(&ctl->lock);
    if (ctl->inflight && !ctl->closed) {
        rc = sc_fail(err, SCSICTL_E_BUSY,
                     "close: %zu backend call(s) in flight; finish them first",
                     ctl->inflight);
    } else {
        if (!ctl->closed) {
            ctl->closed = true;
            sc_changed(ctl);
        }
        seq = sc_unwritten(ctl); /* also retries a failed write */
    }
    sc_lock_release(&ctl->lock);
    return rc == SCSICTL_OK && seq ? sc_sync(ctl, seq, false, err) : rc;
}

/* Chooses the slot for a new disk: its pin if the path is pinned, else the
 * lowest free unpinned slot (pinned slots are always taken). */
static int choose_slot(scsictl *ctl, const scsictl_disk_config *dc, size_t len,
                       uint64_t hash, uint32_t *slot, scsictl_error *err)
{
    pin *p = sc_pin_find(ctl, dc->host_path, len, hash);
    if (p) {
        if (!sc_disk_config_equal(&p->cfg, dc))
            return sc_fail(err, SCSICTL_E_CONFIG_MISMATCH,
                           "reserve: '%.200s' is pinned at controller %u lun %u "
                           "with a different disk config",
                           dc->host_path, p->slot / ctl->luns, p->slot % ctl->luns);
        *slot = p->slot;
        return SCSICTL_OK;
    }
    int64_t free_slot = slotmap_first_clear(&ctl->taken);
    if (free_slot < 0)
        return sc_fail(err, SCSICTL_E_NO_SLOTS,
                       "reserve: no free slot for '%.200s' (%u slots, all used)",
                       dc->host_path, ctl->nslots);
    *slot = (uint32_t)free_slot;
    return SCSICTL_OK;
}

/* Undoes a reservation that was just made (nothing was mapped). */
void sc_unreserve(scsictl *ctl, reservation *r)
{
    mount *m = r->mount;
    disk *d = r->disk;
    if (--m->refs == 0)
        sc_mount_forget(ctl, m);
    if (--d->refs == 0)
        sc_disk_forget(ctl, d);
    sc_res_forget(ctl, r);
}

/* Why the disk d, in use already, cannot take another reservation with
 * these configs: busy, or a disk or partition config mismatch. Out of line
 * and cold: it keeps reserve's frame small. */
static __attribute__((noinline, cold)) int refuse_shared(const disk *d,
                                                        const scsictl_disk_config *dc,
                                                        const scsictl_mount_config *mc,
                                                        scsictl_error *err)
{
    if (sc_disk_busy(d) || sc_disk_tearing_down(d))
        return sc_fail(err, SCSICTL_E_BUSY,
                       "reserve: '%.200s' at controller %u lun %u is %s; retry later",
                       dc->host_path, d->controller, d->lun,
                       sc_disk_busy(d) ? "busy with a backend call"
                                       : "being torn down by a pending release");
    if (!sc_disk_same_settings(d, dc))
        return sc_fail(err, SCSICTL_E_CONFIG_MISMATCH,
                       "reserve: '%.200s' is already in use with a different disk config",
                       dc->host_path);
    return sc_fail(err, SCSICTL_E_CONFIG_MISMATCH,
                   "reserve: partition %llu of '%.200s' is already in use "
                   "with a different mount config",
                   (unsigned long long)mc->partition, dc->host_path);
}

/* Makes the reservation in memory; *seq is its change number when a store
 * must write it (0 otherwise). */
static int reserve_locked(scsictl *ctl, const scsictl_disk_config *dc,
                          const scsictl_mount_config *mc, scsictl_id *id,
                          uint64_t *seq, scsictl_error *err)
{
    static const scsictl_mount_config defaults = { 0 };
    if (!mc)
        mc = &defaults;
    if (ctl->closed)
        return sc_fail(err, SCSICTL_E_CLOSED, "reserve: controller is closed");

    size_t len = strlen(dc->host_path);
    uint64_t hash = hash_bytes(dc->host_path, len);
    disk *d = sc_disk_find(ctl, dc->host_path, len, hash);
    mount *m = NULL;
    uint32_t slot = 0;
    if (d) {
        m = sc_mount_find(ctl, d, mc->partition);
        if (sc_disk_busy(d) || sc_disk_tearing_down(d) || !sc_disk_same_settings(d, dc) ||
            (m && !sc_mount_matches(m, mc)))
            return refuse_shared(d, dc, mc, err);
    } else {
        int rc = choose_slot(ctl, dc, len, hash, &slot, err);
        if (rc)
            return rc;
    }

    /* Allocate everything first; nothing has changed yet. */
    disk *new_disk = NULL;
    mount *new_mount = NULL;
    reservation *r = sc_obj_new(ctl, sizeof *r);
    if (!r)
        goto nomem;
    if (!d) {
        new_disk = sc_disk_create(ctl, dc, len, hash, slot);
        if (!new_disk || !hmap_reserve(&ctl->disks, ctl->disks.len + 1, &ctl->alloc))
            goto nomem;
        d = new_disk;
    }
    if (!m) {
        new_mount = sc_mount_create(ctl, d, mc);
        if (!new_mount || !hmap_reserve(&ctl->mounts, ctl->mounts.len + 1, &ctl->alloc))
            goto nomem;
        m = new_mount;
    }
    if (!hmap_reserve(&ctl->res, ctl->res.len + 1, &ctl->alloc) ||
        (ctl->store && !sc_tentative_room(ctl)))
        goto nomem;

    /* Commit. */
    do { /* a repeat is 2^-122 per pair, but an id must never alias */
        sc_id_generate(&ctl->ids, &r->id);
    } while (!hmap_insert_unique(&ctl->res, sc_id_hash(&r->id), r, r->id.bytes, res_eq));
    r->disk = d;
    r->mount = m;
    r->partition = mc->partition;
    r->pending = false;
    /* The ids of the next reserves are already known, and in a big map
     * their slots are cache misses at random places: start loading the slot
     * of the one SC_ID_LOOKAHEAD reserves from now (the nearer ones were
     * started by the reserves before). A miss can take longer than a whole
     * reserve-map-unmap cycle, so one reserve of warning is not enough.
     * The record keeps that hash for map and unmap of this id to do the
     * same (see later_hash). */
    uint64_t later = sc_id_next_hash(&ctl->ids, SC_ID_LOOKAHEAD - 1);
    hmap_prefetch(&ctl->res, later);
    r->later_hash = (uint32_t)later;
    if (new_disk)
        sc_disk_insert(ctl, new_disk);
    if (new_mount)
        sc_mount_insert(ctl, new_mount);
    d->refs++;
    m->refs++;
    uint64_t n = sc_changed(ctl);
    if (ctl->store) { /* undone if its write fails (P5) */
        sc_tentative_add(ctl, n, &r->id, false, 0);
        *seq = n;
    }
    *id = r->id;
    return SCSICTL_OK;

nomem:
    sc_mount_free(ctl, new_mount);
    sc_disk_free(ctl, new_disk);
    sc_res_free(ctl, r);
    return sc_fail(err, SCSICTL_E_NO_MEMORY, "reserve: out of memory for '%.200s'",
                   dc->host_path);
}

int scsictl_reserve(scsictl *ctl, const scsictl_disk_config *disk_cfg,
                    const scsictl_mount_config *mount_cfg, scsictl_id *id,
                    scsictl_error *err)
{
    if (!ctl || !id)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "reserve: no controller or id");
    if (!sc_disk_config_valid(disk_cfg))
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "reserve: disk needs a non-empty host_path, a known type and options "
                       "as \"key=value\" strings sorted by key (at most %d)",
                       SCSICTL_DISK_OPTIONS_MAX);
    if (!sc_mount_config_valid(mount_cfg))
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "%s",
                       mount_cfg->verity_root_hash || mount_cfg->verity_hash_offset
                           ? "reserve: mount verity needs a root hash of 64 lowercase hex "
                             "digits (sha256), read_only, no encryption, and a hash offset "
                             "that is a multiple of 512"
                           : "reserve: mount partition must be 0..2^63-1 and options "
                             "non-NULL strings");
    scsictl_id made;
    uint64_t seq = 0;
    sc_lock_acquire(&ctl->lock);
    int rc = reserve_locked(ctl, disk_cfg, mount_cfg, &made, &seq, err);
    sc_lock_release(&ctl->lock);
    if (rc == SCSICTL_OK && seq)
        rc = sc_sync(ctl, seq, true, err);
    if (rc == SCSICTL_OK || rc == SCSICTL_PERSIST) /* PERSIST: deferred writes */
        *id = made;
    return rc;
}

/* Undoes a pin that was just made. */
void sc_pin_undo(scsictl *ctl, uint32_t slot)
{
    bool disk_there = false; /* a reserve of the pinned path took the slot */
    for (size_t i = 0; i < ctl->pins.cap; i++) {
        pin *p = hmap_item(&ctl->pins, i);
        if (p && p->slot == slot) {
            disk_there = sc_disk_find(ctl, p->cfg.host_path, p->path_len, p->hash) != NULL;
            hmap_remove(&ctl->pins, p->hash, p);
            sc_pin_free(ctl, p);
            break;
        }
    }
    ctl->pinned[slot >> 6] &= ~(1ull << (slot & 63));
    ctl->npinned--;
    if (!disk_there)
        sc_slot_release(ctl, slot);
}

static int pin_locked(scsictl *ctl, uint64_t controller, uint64_t lun,
                      const scsictl_disk_config *dc, uint64_t *seq, scsictl_error *err)
{
    if (ctl->closed)
        return sc_fail(err, SCSICTL_E_CLOSED, "reserve_for_rootfs: controller is closed");
    if (controller >= ctl->controllers || lun >= ctl->luns)
        return sc_fail(err, SCSICTL_E_OUT_OF_RANGE,
                       "reserve_for_rootfs: controller %llu lun %llu is outside "
                       "%u controllers x %u luns",
                       (unsigned long long)controller, (unsigned long long)lun,
                       ctl->controllers, ctl->luns);
    uint32_t slot = (uint32_t)(controller * ctl->luns + lun);
    if (slotmap_test(&ctl->taken, slot))
        return sc_fail(err, SCSICTL_E_SLOT_TAKEN,
                       "reserve_for_rootfs: controller %llu lun %llu is already %s",
                       (unsigned long long)controller, (unsigned long long)lun,
                       sc_slot_pinned(ctl, slot) ? "pinned" : "in use");
    if (ctl->store && !sc_tentative_room(ctl))
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "reserve_for_rootfs: out of memory");
    pin *p = NULL;
    if (dc) {
        size_t len = strlen(dc->host_path);
        uint64_t hash = hash_bytes(dc->host_path, len);
        const disk *d = sc_disk_find(ctl, dc->host_path, len, hash);
        const pin *other = sc_pin_find(ctl, dc->host_path, len, hash);
        if (d || other) {
            uint32_t at = d ? d->slot : other->slot;
            return sc_fail(err, SCSICTL_E_SLOT_TAKEN,
                           "reserve_for_rootfs: '%.200s' is already %s at controller %u lun %u",
                           dc->host_path, d ? "placed" : "pinned", at / ctl->luns,
                           at % ctl->luns);
        }
        p = sc_pin_create(ctl, dc, len, hash, slot);
        if (!p || !hmap_reserve(&ctl->pins, ctl->pins.len + 1, &ctl->alloc)) {
            sc_pin_free(ctl, p);
            return sc_fail(err, SCSICTL_E_NO_MEMORY, "reserve_for_rootfs: out of memory");
        }
        hmap_insert(&ctl->pins, p->hash, p);
    }
    ctl->pinned[slot >> 6] |= 1ull << (slot & 63);
    ctl->npinned++;
    sc_slot_take(ctl, slot);
    uint64_t n = sc_changed(ctl);
    if (ctl->store) { /* undone if its write fails */
        sc_tentative_add(ctl, n, NULL, true, slot);
        *seq = n;
    }
    return SCSICTL_OK;
}

int scsictl_reserve_for_rootfs(scsictl *ctl, uint64_t controller, uint64_t lun,
                               const scsictl_disk_config *disk_cfg,
                               scsictl_error *err)
{
    if (!ctl)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "reserve_for_rootfs: no controller");
    if (disk_cfg && !sc_disk_config_valid(disk_cfg))
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "reserve_for_rootfs: disk needs a non-empty host_path and a known type");
    uint64_t seq = 0;
    sc_lock_acquire(&ctl->lock);
    int rc = pin_locked(ctl, controller, lun, disk_cfg, &seq, err);
    sc_lock_release(&ctl->lock);
    return rc == SCSICTL_OK && seq ? sc_sync(ctl, seq, true, err) : rc;
}
