/* introspect.c — read-only views: stats, reservations, slots.
 *
 * Listings are copied out under the lock into one allocation each (entries,
 * then arrays, then strings), so the caller owns a consistent picture that
 * no other thread can change or free. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "internal.h"

void scsictl_get_stats(scsictl *ctl, scsictl_stats *out)
{
    if (!ctl || !out)
        return;
    sc_lock_acquire(&ctl->lock);
    *out = (scsictl_stats){
        .controllers = ctl->controllers,
        .luns_per_controller = ctl->luns,
        .slots = ctl->nslots,
        .used = ctl->used,
        .free = ctl->nslots - ctl->used,
        .pinned = ctl->npinned,
        .disks = ctl->disks.len,
        .reservations = ctl->res.len,
        .guest = ctl->guest,
        .closed = ctl->closed,
        .busy = ctl->inflight > 0,
        .state_writes = ctl->writes,
        .state_write_failures = ctl->write_failures,
    };
    sc_lock_release(&ctl->lock);
}

void scsictl_info_free(scsictl *ctl, void *info)
{
    if (ctl && info)
        sc_free(&ctl->alloc, info);
}

/* A bump allocator over one block: sizes are counted first, then filled. */
typedef struct arena {
    char *next;
} arena;

static const char *arena_str(arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = memcpy(a->next, s, n);
    a->next += n;
    return p;
}

static void fill_reservation(const scsictl *ctl, const reservation *r,
                             scsictl_reservation_info *info, arena *a)
{
    *info = (scsictl_reservation_info){
        .id = r->id,
        .controller = r->disk->slot / ctl->luns,
        .lun = r->disk->slot % ctl->luns,
        .partition = r->partition,
        .host_path = arena_str(a, r->disk->strings),
        .release_pending = r->pending,
        .busy = sc_disk_busy(r->disk),
    };
}

int scsictl_get_reservation(scsictl *ctl, const scsictl_id *id,
                            scsictl_reservation_info **out, scsictl_error *err)
{
    if (!ctl || !id || !out)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "reservation: missing argument");
    int rc = SCSICTL_OK;
    sc_lock_acquire(&ctl->lock);
    reservation *r = sc_res_find(ctl, id);
    if (!r) {
        rc = sc_fail(err, SCSICTL_E_NOT_FOUND, "reservation: no such id");
    } else {
        scsictl_reservation_info *info =
            sc_malloc(&ctl->alloc, sizeof *info + r->disk->path_len + 1);
        if (!info) {
            rc = sc_fail(err, SCSICTL_E_NO_MEMORY, "reservation: out of memory");
        } else {
            arena a = { (char *)(info + 1) };
            fill_reservation(ctl, r, info, &a);
            *out = info;
        }
    }
    sc_lock_release(&ctl->lock);
    return rc;
}

static int cmp_reservation(const void *pa, const void *pb)
{
    const scsictl_reservation_info *a = pa, *b = pb;
    uint64_t sa = (uint64_t)a->controller << 32 | a->lun;
    uint64_t sb = (uint64_t)b->controller << 32 | b->lun;
    if (sa != sb)
        return sa < sb ? -1 : 1;
    if (a->partition != b->partition)
        return a->partition < b->partition ? -1 : 1;
    return memcmp(a->id.bytes, b->id.bytes, sizeof a->id.bytes);
}

int scsictl_list_reservations(scsictl *ctl, scsictl_reservation_info **out,
                              size_t *n, scsictl_error *err)
{
    if (!ctl || !out || !n)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "reservations: missing argument");
    *out = NULL;
    *n = 0;
    int rc = SCSICTL_OK;
    sc_lock_acquire(&ctl->lock);
    size_t count = ctl->res.len, bytes = count * sizeof(scsictl_reservation_info);
    for (size_t i = 0; i < ctl->res.cap; i++) {
        const reservation *r = hmap_item(&ctl->res, i);
        if (r)
            bytes += r->disk->path_len + 1;
    }
    if (count) {
        scsictl_reservation_info *list = sc_malloc(&ctl->alloc, bytes);
        if (!list) {
            rc = sc_fail(err, SCSICTL_E_NO_MEMORY, "reservations: out of memory");
        } else {
            arena a = { (char *)(list + count) };
            size_t k = 0;
            for (size_t i = 0; i < ctl->res.cap; i++)
                if (hmap_item(&ctl->res, i))
                    fill_reservation(ctl, hmap_item(&ctl->res, i), &list[k++], &a);
            qsort(list, count, sizeof *list, cmp_reservation);
            *out = list;
            *n = count;
        }
    }
    sc_lock_release(&ctl->lock);
    return rc;
}

int sc_cmp_disk_slot(const void *pa, const void *pb)
{
    const disk *x = *(const disk *const *)pa, *y = *(const disk *const *)pb;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static int cmp_slot(const void *pa, const void *pb)
{
    const scsictl_slot_info *a = pa, *b = pb;
    uint64_t sa = (uint64_t)a->controller << 32 | a->lun;
    uint64_t sb = (uint64_t)b->controller << 32 | b->lun;
    return sa < sb ? -1 : sa > sb;
}

int sc_cmp_mount_slot(const void *pa, const void *pb)
{
    const mount *x = *(const mount *const *)pa, *y = *(const mount *const *)pb;
    if (x->disk->slot != y->disk->slot)
        return x->disk->slot < y->disk->slot ? -1 : 1;
    return x->partition < y->partition ? -1 : x->partition > y->partition;
}

/* Fills the slot entry of disk d; its partitions are the next run of
 * `mounts` (sorted by slot, then partition), starting at *next. */
static void fill_disk_slot(const scsictl *ctl, const disk *d, scsictl_slot_info *s,
                           scsictl_partition_info *parts, mount *const *mounts,
                           size_t n_mounts, size_t *next, const char ***opts, arena *a)
{
    const char *const *dopts = sc_disk_options(d);
    const char **copy = *opts;
    for (uint32_t i = 0; i < d->n_options; i++)
        copy[i] = arena_str(a, dopts[i]);
    *opts += d->n_options;
    *s = (scsictl_slot_info){
        .controller = d->slot / ctl->luns,
        .lun = d->slot % ctl->luns,
        .pinned = sc_slot_pinned(ctl, d->slot),
        .busy = sc_disk_busy(d),
        .tearing_down = sc_disk_tearing_down(d),
        .has_disk = true,
        .host_path = arena_str(a, d->strings),
        .options = d->n_options ? copy : NULL,
        .n_options = d->n_options,
        .state = (scsictl_disk_state)sc_disk_states[d->state].public_state,
        .reservations = d->refs,
    };
    size_t k = 0;
    for (; *next < n_mounts && mounts[*next]->disk == d; ++*next) {
        const mount *m = mounts[*next];
        char path[SCSICTL_GUEST_PATH_MAX];
        scsictl_mount_state shown = (scsictl_mount_state)sc_mount_states[m->state].public_state;
        bool mounted = shown == SCSICTL_MOUNT_MOUNTED;
        if (mounted)
            sc_guest_path(ctl->guest, s->controller, s->lun, m->partition, path);
        parts[k++] = (scsictl_partition_info){
            .partition = m->partition,
            .state = shown,
            .refs = m->refs,
            .guest_path = mounted ? arena_str(a, path) : NULL,
        };
    }
    s->n_partitions = k;
    s->partitions = k ? parts : NULL;
}

void **sc_sorted_items(scsictl *ctl, const hmap *m, int (*cmp)(const void *, const void *),
                       bool *nomem)
{
    if (m->len == 0)
        return NULL;
    void **v = sc_malloc(&ctl->alloc, m->len * sizeof *v);
    if (!v) {
        *nomem = true;
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < m->cap; i++)
        if (hmap_item(m, i))
            v[k++] = hmap_item(m, i);
    qsort(v, k, sizeof *v, cmp);
    return v;
}

int scsictl_list_slots(scsictl *ctl, scsictl_slot_info **out, size_t *n,
                       scsictl_error *err)
{
    if (!ctl || !out || !n)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "slots: missing argument");
    *out = NULL;
    *n = 0;
    int rc = SCSICTL_OK;
    sc_lock_acquire(&ctl->lock);
    /* Count: a slot per disk, plus pinned slots with no disk. */
    size_t count = ctl->disks.len, nparts = ctl->mounts.len, strings = 0, nopts = 0;
    for (size_t i = 0; i < ctl->disks.cap; i++) {
        const disk *d = hmap_item(&ctl->disks, i);
        if (!d)
            continue;
        strings += d->path_len + 1;
        const char *const *o = sc_disk_options(d);
        for (uint32_t k = 0; k < d->n_options; k++)
            strings += strlen(o[k]) + 1;
        nopts += d->n_options;
        if (sc_slot_pinned(ctl, d->slot))
            count--; /* counted again below with the pins */
    }
    count += ctl->npinned;
    strings += nparts * SCSICTL_GUEST_PATH_MAX;
    size_t bytes = count * sizeof(scsictl_slot_info) +
                   nparts * sizeof(scsictl_partition_info) + nopts * sizeof(char *) + strings;
    bool nomem = false;
    void **disks = sc_sorted_items(ctl, &ctl->disks, sc_cmp_disk_slot, &nomem);
    void **mounts = sc_sorted_items(ctl, &ctl->mounts, sc_cmp_mount_slot, &nomem);
    if (nomem) {
        rc = sc_fail(err, SCSICTL_E_NO_MEMORY, "slots: out of memory");
    } else if (count) {
        scsictl_slot_info *list = sc_malloc(&ctl->alloc, bytes);
        if (!list) {
            rc = sc_fail(err, SCSICTL_E_NO_MEMORY, "slots: out of memory");
        } else {
            scsictl_partition_info *parts = (scsictl_partition_info *)(list + count);
            const char **opts = (const char **)(void *)(parts + nparts);
            arena a = { (char *)(opts + nopts) };
            size_t k = 0, next = 0;
            for (size_t i = 0; i < ctl->disks.len; i++)
                fill_disk_slot(ctl, disks[i], &list[k++], parts + next,
                               (mount *const *)mounts, nparts, &next, &opts, &a);
            /* Bare pins: pinned slots that hold no disk right now. The disk
             * entries are in slot order, so each pin is a binary search. */
            size_t ndisks = k;
            for (uint32_t w = 0; w < (ctl->nslots + 63) / 64; w++) {
                for (uint64_t bits = ctl->pinned[w]; bits; bits &= bits - 1) {
                    uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(bits);
                    scsictl_slot_info key = { .controller = slot / ctl->luns,
                                              .lun = slot % ctl->luns };
                    if (!bsearch(&key, list, ndisks, sizeof *list, cmp_slot))
                        list[k++] = (scsictl_slot_info){
                            .controller = key.controller,
                            .lun = key.lun,
                            .pinned = true,
                        };
                }
            }
            qsort(list, k, sizeof *list, cmp_slot);
            *out = list;
            *n = k;
        }
    }
    sc_free(&ctl->alloc, disks);
    sc_free(&ctl->alloc, mounts);
    sc_lock_release(&ctl->lock);
    return rc;
}
