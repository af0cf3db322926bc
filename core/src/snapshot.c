/* snapshot.c — save the whole state as text (snapshot_read.c imports it).
 *
 * The format is described once, in docs/snapshot-format.md; in short:
 *
 * Format (version 1), one record per line, fields separated by one space,
 * records in this order, each group sorted:
 *
 *   scsictl-snapshot 1
 *   geometry <controllers> <luns> <linux|windows> <open|closed>
 *   pin <c> <l>                                        bare rootfs pin
 *   pin <c> <l> <ro> <type> <evd> <path> <n> <option>*n  pin with a disk config
 *   disk <c> <l> <state> <teardown> <ro> <type> <evd> <path> <n> <option>*n
 *        state: reserved | attached | ejected | adding (an add was in
 *        flight: treated as reserved, but a release removes it anyway)
 *   part <c> <l> <partition> <state> <refs> <ro> <encrypted> <ensure_fs>
 *        <block_dev> <format_with_refs> <filesystem> <verity> <hash_offset>
 *        <n> <option>*n   (version 1: no disk options, no verity fields)
 *        state: reserved | mounted | mounting (a mount was in flight)
 *   res <id> <c> <l> <partition> <holds_partition> <pending>
 *   gone <id>      a released id whose caller was told io (its write
 *                  failed): a retried unmap of it succeeds
 *   end <records> <checksum>
 *
 * Numbers are decimal with no sign or leading zero; flags are 0 or 1;
 * states and types are their names. Strings are "-" for absent, else "="
 * followed by the bytes, with every byte outside [A-Za-z0-9/._:@+,~-]
 * written as %XX. The checksum is FNV-1a 64 (16 lowercase hex digits) of
 * every byte before the "end" line, so truncation and bit flips are caught.
 *
 * Import checks the text and the consistency of what it describes (one disk
 * per slot, slots inside the geometry, references that resolve, reference
 * counts that match the claims, states that P1-P9 allow) and builds nothing
 * unless all of it holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "internal.h"

/* ---- output ------------------------------------------------------------ */

typedef struct outbuf {
    const scsictl_allocator *a;
    char *p;
    size_t len, cap;
    bool failed;
} outbuf;

static void out_bytes(outbuf *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (n + 1 > o->cap - o->len) {
        size_t cap = o->cap ? o->cap : 256;
        while (n + 1 > cap - o->len) {
            if (cap > SIZE_MAX / 2) {
                o->failed = true;
                return;
            }
            cap *= 2;
        }
        char *p = o->p ? o->a->realloc_fn(o->a->ud, o->p, cap) : sc_malloc(o->a, cap);
        if (!p) {
            o->failed = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(outbuf *o, const char *s)
{
    out_bytes(o, s, strlen(s));
}

static void out_u64(outbuf *o, uint64_t v)
{
    char buf[24];
    out_bytes(o, " ", 1);
    out_bytes(o, buf, sc_fmt_u64(buf, v));
}

static void out_word(outbuf *o, const char *w)
{
    out_bytes(o, " ", 1);
    out_str(o, w);
}

/* Bytes written as they are in strings; every other byte is %XX. */
bool sc_snapshot_safe_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("/._:@+,~-", c) != NULL);
}

static void out_text(outbuf *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    out_bytes(o, " ", 1);
    if (!s) {
        out_bytes(o, "-", 1);
        return;
    }
    out_bytes(o, "=", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (sc_snapshot_safe_byte(*p)) {
            out_bytes(o, (const char *)p, 1);
        } else {
            char esc[3] = { '%', hex[*p >> 4], hex[*p & 15] };
            out_bytes(o, esc, 3);
        }
    }
}

static void out_slot(outbuf *o, const scsictl *ctl, uint32_t slot)
{
    out_u64(o, slot / ctl->luns);
    out_u64(o, slot % ctl->luns);
}

static void out_disk_config(outbuf *o, const scsictl_disk_config *c)
{
    out_u64(o, c->read_only);
    out_word(o, scsictl_disk_type_name(c->type));
    out_text(o, c->evd_type);
    out_text(o, c->host_path);
    out_u64(o, c->n_options);
    for (size_t k = 0; k < c->n_options; k++)
        out_text(o, c->options[k]);
}

uint64_t sc_snapshot_checksum(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int cmp_res_ptr(const void *a, const void *b)
{
    const reservation *x = *(const reservation *const *)a;
    const reservation *y = *(const reservation *const *)b;
    if (x->disk->slot != y->disk->slot)
        return x->disk->slot < y->disk->slot ? -1 : 1;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return memcmp(x->id.bytes, y->id.bytes, sizeof x->id.bytes);
}

static int cmp_gone(const void *a, const void *b)
{
    return memcmp(((const sc_gone *)a)->id.bytes, ((const sc_gone *)b)->id.bytes, 16);
}

static int cmp_pin_ptr(const void *a, const void *b)
{
    const pin *x = *(const pin *const *)a, *y = *(const pin *const *)b;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* Serialises the state; the caller holds the lock. */
int sc_snapshot_write(scsictl *ctl, char **out, size_t *len, scsictl_error *err)
{
    bool nomem = false;
    void **disks = sc_sorted_items(ctl, &ctl->disks, sc_cmp_disk_slot, &nomem);
    void **mounts = sc_sorted_items(ctl, &ctl->mounts, sc_cmp_mount_slot, &nomem);
    void **res = sc_sorted_items(ctl, &ctl->res, cmp_res_ptr, &nomem);
    void **pins = sc_sorted_items(ctl, &ctl->pins, cmp_pin_ptr, &nomem);
    outbuf o = { .a = &ctl->alloc };
    size_t records = 2;

    out_str(&o, "scsictl-snapshot");
    out_u64(&o, SCSICTL_SNAPSHOT_VERSION);
    out_str(&o, "\ngeometry");
    out_u64(&o, ctl->controllers);
    out_u64(&o, ctl->luns);
    out_word(&o, ctl->guest == SCSICTL_GUEST_LINUX ? "linux" : "windows");
    out_word(&o, ctl->closed ? "closed" : "open");
    out_str(&o, "\n");
    /* Pins in slot order; configs come from the pins map (sorted too). */
    size_t pi = 0;
    for (uint32_t w = 0; !nomem && w < (ctl->nslots + 63) / 64; w++) {
        for (uint64_t bits = ctl->pinned[w]; bits; bits &= bits - 1) {
            uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(bits);
            out_str(&o, "pin");
            out_slot(&o, ctl, slot);
            if (pi < ctl->pins.len && ((pin *)pins[pi])->slot == slot)
                out_disk_config(&o, &((pin *)pins[pi++])->cfg);
            out_str(&o, "\n");
            records++;
        }
    }
    for (size_t i = 0; !nomem && i < ctl->disks.len; i++) {
        const disk *d = disks[i];
        const sc_dstate_info *st = &sc_disk_states[d->state];
        out_str(&o, "disk");
        out_slot(&o, ctl, d->slot);
        out_word(&o, st->file_word); /* a step in flight counts as not done */
        out_u64(&o, st->file_teardown);
        scsictl_disk_config dc = sc_disk_cfg(d);
        out_disk_config(&o, &dc);
        out_str(&o, "\n");
        records++;
    }
    for (size_t i = 0; !nomem && i < ctl->mounts.len; i++) {
        const mount *m = mounts[i];
        const scsictl_mount_config mc = sc_mount_cfg(m), *c = &mc;
        const disk *md = m->disk;
        out_str(&o, "part");
        out_slot(&o, ctl, md->slot);
        out_u64(&o, c->partition);
        out_word(&o, sc_mount_states[m->state].file_word);
        out_u64(&o, m->refs);
        out_u64(&o, c->read_only);
        out_u64(&o, c->encrypted);
        out_u64(&o, c->ensure_filesystem);
        out_u64(&o, c->block_dev);
        out_u64(&o, c->format_with_refs);
        out_text(&o, c->filesystem);
        out_text(&o, c->verity_root_hash);
        out_u64(&o, c->verity_hash_offset);
        out_u64(&o, c->n_options);
        for (size_t k = 0; k < c->n_options; k++)
            out_text(&o, c->options[k]);
        out_str(&o, "\n");
        records++;
    }
    for (size_t i = 0; !nomem && i < ctl->res.len; i++) {
        const reservation *r = res[i];
        char id[SCSICTL_ID_STRLEN + 1];
        scsictl_id_format(&r->id, id);
        out_str(&o, "res");
        out_word(&o, id);
        out_slot(&o, ctl, r->disk->slot);
        out_u64(&o, r->partition);
        out_u64(&o, r->mount != NULL);
        /* A claim already off its partition is mid-release: pending, as
         * it is once its disk step fails (the state file is written while
         * that step is in flight). */
        out_u64(&o, r->pending || r->mount == NULL);
        out_str(&o, "\n");
        records++;
    }
    sc_gone gone[SC_RELEASED_MAX];
    size_t ngone = 0;
    for (size_t i = 0; i < ctl->nreleased; i++)
        if (ctl->released[i].in_file)
            gone[ngone++] = ctl->released[i];
    qsort(gone, ngone, sizeof *gone, cmp_gone);
    for (size_t i = 0; !nomem && i < ngone; i++) {
        char id[SCSICTL_ID_STRLEN + 1];
        scsictl_id_format(&gone[i].id, id);
        out_str(&o, "gone");
        out_word(&o, id);
        out_str(&o, "\n");
        records++;
    }
    sc_free(&ctl->alloc, disks);
    sc_free(&ctl->alloc, mounts);
    sc_free(&ctl->alloc, res);
    sc_free(&ctl->alloc, pins);
    if (!nomem && !o.failed) {
        char tail[64];
        uint64_t sum = sc_snapshot_checksum(o.p, o.len);
        snprintf(tail, sizeof tail, "end %zu %016llx\n", records + 1, (unsigned long long)sum);
        out_str(&o, tail);
    }
    if (nomem || o.failed) {
        sc_free(&ctl->alloc, o.p);
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "save: out of memory");
    }
    *out = o.p;
    *len = o.len;
    return SCSICTL_OK;
}

int scsictl_save(scsictl *ctl, char **out, size_t *len, scsictl_error *err)
{
    if (!ctl || !out || !len)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "save: missing argument");
    int rc;
    sc_lock_acquire(&ctl->lock);
    if (ctl->inflight)
        rc = sc_fail(err, SCSICTL_E_BUSY,
                     "save: %zu backend call(s) in flight; save when they are done",
                     ctl->inflight);
    else
        rc = sc_snapshot_write(ctl, out, len, err);
    sc_lock_release(&ctl->lock);
    return rc;
}

int scsictl_copy(scsictl *ctl, const scsictl_allocator *allocator, scsictl **out,
                 scsictl_error *err)
{
    if (!ctl || !out)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "copy: missing argument");
    char *text = NULL;
    size_t len = 0;
    /* What a state file write would say now: a step in flight is "maybe
     * done", which the copy takes as after a restart. */
    sc_lock_acquire(&ctl->lock);
    int rc = sc_snapshot_write(ctl, &text, &len, err);
    sc_lock_release(&ctl->lock);
    if (rc != SCSICTL_OK)
        return rc;
    rc = scsictl_import(text, len, allocator, out, err);
    sc_free(&ctl->alloc, text);
    return rc;
}
