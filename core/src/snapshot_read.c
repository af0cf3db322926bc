/* snapshot_read.c — import a snapshot strictly: the text (format in
 * docs/snapshot-format.md and snapshot.c), then what it describes (one disk
 * per slot, slots inside the geometry, references that resolve, reference
 * counts that match the claims, only the resting states of the two state
 * machines), building nothing unless all of it holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "internal.h"

/* ---- input ------------------------------------------------------------- */

#define TEXT_MAX ((size_t)1 << 30)

typedef struct parser {
    const char *p, *end;  /* the current line: [p, end) */
    const char *next;     /* start of the following line */
    size_t lineno;
    char *scratch;        /* decoded strings of this line, freed per line */
    size_t scratch_len, scratch_cap;
    const scsictl_allocator *a;
    scsictl_error *err;
    bool nomem;
    uint64_t version;     /* of the format: 1 has no disk options */
    const scsictl_remap *remap; /* host paths renamed as they are read */
    bool *remapped;       /* by slot: its path was renamed (NULL without remap) */
    bool remap_error;     /* the remap gave an empty path: err says so */
    uint32_t luns;
} parser;

static int bad(parser *ps, const char *what)
{
    if (ps->lineno == 0)
        return sc_fail(ps->err, SCSICTL_E_INVALID_SNAPSHOT, "import: invalid snapshot: %s", what);
    return sc_fail(ps->err, SCSICTL_E_INVALID_SNAPSHOT, "import: invalid snapshot: %s (line %zu)",
                   what, ps->lineno);
}

/* The path a host path is read as: the remap's answer, or itself. Marks
 * the slot as remapped (for path_clash); NULL after an empty answer. */
static const char *remapped(parser *ps, const char *path, uint32_t slot)
{
    const char *to = ps->remap ? ps->remap->fn(ps->remap->ud, path) : NULL;
    if (!to || strcmp(to, path) == 0)
        return path;
    if (!to[0]) {
        ps->remap_error = true;
        sc_fail(ps->err, SCSICTL_E_INVALID_ARGUMENT,
                "import: the remap gave an empty path for '%.200s'", path);
        return NULL;
    }
    ps->remapped[slot] = true;
    return to;
}

/* The record in `slot` finds path (as read) held by the one in `other`: a
 * remap that made two disks one when either was remapped; else a bad
 * snapshot. */
static int path_clash(parser *ps, const char *path, uint32_t slot, uint32_t other,
                      const char *what)
{
    if (!ps->remapped || !(ps->remapped[slot] || ps->remapped[other]))
        return bad(ps, what);
    return sc_fail(ps->err, SCSICTL_E_INVALID_ARGUMENT,
                   "import: the remap makes two disks one: the disks of controller %u lun %u "
                   "and controller %u lun %u would both be '%.200s'",
                   slot / ps->luns, slot % ps->luns, other / ps->luns, other % ps->luns, path);
}

/* Next space-separated token of the line, or false at the end of line. */
static bool token(parser *ps, const char **t, size_t *n)
{
    if (ps->p >= ps->end)
        return false;
    const char *s = ps->p;
    const char *e = memchr(s, ' ', (size_t)(ps->end - s));
    if (!e)
        e = ps->end;
    *t = s;
    *n = (size_t)(e - s);
    ps->p = e < ps->end ? e + 1 : e;
    return *n > 0 && !(e < ps->end && e + 1 == ps->end); /* no empty or trailing */
}

static bool tok_is(parser *ps, const char *word)
{
    const char *t;
    size_t n;
    return token(ps, &t, &n) && n == strlen(word) && memcmp(t, word, n) == 0;
}

static bool tok_u64(parser *ps, uint64_t max, uint64_t *v)
{
    const char *t;
    size_t n;
    if (!token(ps, &t, &n) || n > 20 || (n > 1 && t[0] == '0'))
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return false;
        unsigned d = (unsigned)(t[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    if (x > max)
        return false;
    *v = x;
    return true;
}

static bool tok_flag(parser *ps, bool *v)
{
    uint64_t x;
    if (!tok_u64(ps, 1, &x))
        return false;
    *v = x == 1;
    return true;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes a string token into the line's scratch space. *s is NULL for "-".
 * Returns an offset into scratch (strings move when scratch grows), or
 * SIZE_MAX on error; *absent says "-". */
static size_t tok_text(parser *ps, bool *absent)
{
    const char *t;
    size_t n;
    if (!token(ps, &t, &n))
        return SIZE_MAX;
    *absent = n == 1 && t[0] == '-';
    if (*absent)
        return 0;
    if (t[0] != '=' || n - 1 > TEXT_MAX)
        return SIZE_MAX;
    size_t need = ps->scratch_len + n; /* decoded length <= n - 1, plus NUL */
    if (need > ps->scratch_cap) {
        size_t cap = need * 2;
        char *p = ps->scratch ? ps->a->realloc_fn(ps->a->ud, ps->scratch, cap)
                              : sc_malloc(ps->a, cap);
        if (!p) {
            ps->nomem = true;
            return SIZE_MAX;
        }
        ps->scratch = p;
        ps->scratch_cap = cap;
    }
    size_t start = ps->scratch_len;
    char *o = ps->scratch + start;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c == '%') {
            if (i + 2 >= n)
                return SIZE_MAX;
            int hi = hexv(t[i + 1]), lo = hexv(t[i + 2]);
            if (hi < 0 || lo < 0)
                return SIZE_MAX;
            int v = hi << 4 | lo;
            if (v == 0 || sc_snapshot_safe_byte((unsigned char)v))
                return SIZE_MAX; /* one spelling per string: safe bytes stay literal */
            *o++ = (char)v;
            i += 2;
        } else if (sc_snapshot_safe_byte(c)) {
            *o++ = (char)c;
        } else {
            return SIZE_MAX;
        }
    }
    *o++ = '\0';
    ps->scratch_len = (size_t)(o - ps->scratch);
    return start;
}

static bool tok_slot(parser *ps, const scsictl *ctl, uint32_t *slot)
{
    uint64_t c, l;
    if (!tok_u64(ps, UINT32_MAX, &c) || !tok_u64(ps, UINT32_MAX, &l) ||
        c >= ctl->controllers || l >= ctl->luns)
        return false;
    *slot = (uint32_t)(c * ctl->luns + l);
    return true;
}

static bool tok_disk_type(parser *ps, scsictl_disk_type *type)
{
    const char *t;
    size_t n;
    if (!token(ps, &t, &n))
        return false;
    for (int k = SCSICTL_DISK_VIRTUAL_DISK; k <= SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK; k++) {
        const char *name = scsictl_disk_type_name((scsictl_disk_type)k);
        if (n == strlen(name) && memcmp(t, name, n) == 0) {
            *type = (scsictl_disk_type)k;
            return true;
        }
    }
    return false;
}

/* A disk config read from a line, its options array with it. */
typedef struct disk_cfg_buf {
    scsictl_disk_config c;
    const char *opts[SCSICTL_DISK_OPTIONS_MAX];
} disk_cfg_buf;

/* Parses "<ro> <type> <evd> <path>" and, from version 2 on, "<n> <option>..."
 * into b (strings in scratch); the config must be one reserve accepts. */
static bool tok_disk_config(parser *ps, uint32_t slot, disk_cfg_buf *b)
{
    bool absent_evd, absent_path, absent;
    scsictl_disk_config *c = &b->c;
    *c = (scsictl_disk_config){ 0 };
    if (!tok_flag(ps, &c->read_only) || !tok_disk_type(ps, &c->type))
        return false;
    size_t evd = tok_text(ps, &absent_evd);
    size_t path = evd == SIZE_MAX ? SIZE_MAX : tok_text(ps, &absent_path);
    if (path == SIZE_MAX || absent_path)
        return false;
    uint64_t nopt = 0;
    size_t offs[SCSICTL_DISK_OPTIONS_MAX];
    if (ps->version >= 2 && !tok_u64(ps, SCSICTL_DISK_OPTIONS_MAX, &nopt))
        return false;
    for (uint64_t k = 0; k < nopt; k++) {
        offs[k] = tok_text(ps, &absent);
        if (offs[k] == SIZE_MAX || absent)
            return false;
    }
    /* scratch may have moved while it grew: pointers are taken last */
    for (uint64_t k = 0; k < nopt; k++)
        b->opts[k] = ps->scratch + offs[k];
    c->evd_type = absent_evd ? NULL : ps->scratch + evd;
    c->host_path = remapped(ps, ps->scratch + path, slot);
    c->options = nopt ? b->opts : NULL;
    c->n_options = (size_t)nopt;
    return c->host_path && sc_disk_config_valid(c);
}

/* Moves to the next line; false at the end of the text. */
static bool next_line(parser *ps, const char *text_end)
{
    if (ps->next >= text_end)
        return false;
    ps->p = ps->next;
    const char *nl = memchr(ps->p, '\n', (size_t)(text_end - ps->p));
    if (!nl)
        return false; /* every line ends with a newline: this one is cut */
    ps->end = nl;
    ps->next = nl + 1;
    ps->lineno++;
    ps->scratch_len = 0;
    return true;
}

static bool line_is(parser *ps, const char *kind)
{
    size_t n = strlen(kind);
    return (size_t)(ps->end - ps->p) > n && memcmp(ps->p, kind, n) == 0 && ps->p[n] == ' ';
}

static int parse_header(parser *ps, const char *text_end, scsictl_options *opts, bool *closed)
{
    if (!next_line(ps, text_end) || !tok_is(ps, "scsictl-snapshot"))
        return bad(ps, "not a scsictl snapshot");
    uint64_t version;
    if (!tok_u64(ps, UINT64_MAX, &version) || ps->p != ps->end)
        return bad(ps, "bad header");
    if (version < 1 || version > SCSICTL_SNAPSHOT_VERSION)
        return sc_fail(ps->err, SCSICTL_E_INVALID_SNAPSHOT,
                       "import: invalid snapshot: format version %llu, this build reads 1 to %d",
                       (unsigned long long)version, SCSICTL_SNAPSHOT_VERSION);
    ps->version = version;
    uint64_t c, l;
    const char *t;
    size_t n;
    if (!next_line(ps, text_end) || !tok_is(ps, "geometry") ||
        !tok_u64(ps, SCSICTL_MAX_CONTROLLERS, &c) || !tok_u64(ps, SCSICTL_MAX_LUNS, &l) ||
        l == 0 || c * l > SCSICTL_MAX_SLOTS || !token(ps, &t, &n))
        return bad(ps, "bad geometry");
    if (n == 5 && memcmp(t, "linux", 5) == 0)
        opts->guest = SCSICTL_GUEST_LINUX;
    else if (n == 7 && memcmp(t, "windows", 7) == 0)
        opts->guest = SCSICTL_GUEST_WINDOWS;
    else
        return bad(ps, "unknown guest flavour");
    if (!token(ps, &t, &n) || ps->p != ps->end)
        return bad(ps, "bad geometry");
    if (n == 4 && memcmp(t, "open", 4) == 0)
        *closed = false;
    else if (n == 6 && memcmp(t, "closed", 6) == 0)
        *closed = true;
    else
        return bad(ps, "bad open/closed flag");
    opts->controllers = (uint32_t)c;
    opts->luns_per_controller = (uint32_t)l;
    return SCSICTL_OK;
}

/* Each record parser returns OK, or the error (INVALID_SNAPSHOT/NO_MEMORY). */

static int nomem_or_bad(parser *ps, const char *what)
{
    if (ps->remap_error)
        return SCSICTL_E_INVALID_ARGUMENT; /* err was set */
    if (ps->nomem)
        return sc_fail(ps->err, SCSICTL_E_NO_MEMORY, "import: out of memory");
    return bad(ps, what);
}

static int parse_pin(parser *ps, scsictl *ctl)
{
    uint32_t slot;
    if (!tok_is(ps, "pin") || !tok_slot(ps, ctl, &slot))
        return bad(ps, "bad pin");
    if (sc_slot_pinned(ctl, slot))
        return bad(ps, "slot pinned twice");
    disk_cfg_buf b;
    bool with_disk = ps->p < ps->end;
    if (with_disk && (!tok_disk_config(ps, slot, &b) || ps->p != ps->end))
        return nomem_or_bad(ps, "bad pin disk config");
    /* reserve_for_rootfs checks the rest: slot free, path not placed. */
    int rc = scsictl_reserve_for_rootfs(ctl, slot / ctl->luns, slot % ctl->luns,
                                        with_disk ? &b.c : NULL, NULL);
    if (rc == SCSICTL_E_NO_MEMORY)
        return sc_fail(ps->err, SCSICTL_E_NO_MEMORY, "import: out of memory");
    if (rc != SCSICTL_OK && with_disk) { /* the path is pinned already */
        size_t len = strlen(b.c.host_path);
        const pin *p = sc_pin_find(ctl, b.c.host_path, len, hash_bytes(b.c.host_path, len));
        if (p)
            return path_clash(ps, b.c.host_path, slot, p->slot,
                              "pin conflicts with an earlier record");
    }
    return rc == SCSICTL_OK ? SCSICTL_OK : bad(ps, "pin conflicts with an earlier record");
}

/* The machine state a disk record names: a resting state (no step in
 * flight) whose file word and teardown flag are these; -1 if none. */
static int resting_disk_state(const char *word, size_t n, bool teardown)
{
    for (int k = 0; k < SC_D_COUNT; k++) {
        const sc_dstate_info *st = &sc_disk_states[k];
        if (!st->in_flight && st->file_teardown == teardown && strlen(st->file_word) == n &&
            memcmp(st->file_word, word, n) == 0)
            return k;
    }
    return -1;
}

static int resting_mount_state(const char *word, size_t n)
{
    for (int k = 0; k < SC_M_COUNT; k++) {
        const sc_mstate_info *st = &sc_mount_states[k];
        if (!st->in_flight && strlen(st->file_word) == n && memcmp(st->file_word, word, n) == 0)
            return k;
    }
    return -1;
}

static int parse_disk(parser *ps, scsictl *ctl, disk **by_slot)
{
    uint32_t slot;
    const char *t;
    size_t n;
    bool teardown;
    disk_cfg_buf b;
    const scsictl_disk_config *c = &b.c;
    if (!tok_is(ps, "disk") || !tok_slot(ps, ctl, &slot) || !token(ps, &t, &n) ||
        !tok_flag(ps, &teardown) || !tok_disk_config(ps, slot, &b) || ps->p != ps->end)
        return nomem_or_bad(ps, "bad disk");
    int state = resting_disk_state(t, n, teardown);
    if (state < 0)
        return bad(ps, "unknown disk state, or a state and teardown flag that disagree");
    if (sc_disk_states[state].linux_only && ctl->guest != SCSICTL_GUEST_LINUX)
        return bad(ps, "disk state of a Linux guest in a Windows guest's snapshot");
    size_t len = strlen(c->host_path);
    uint64_t hash = hash_bytes(c->host_path, len);
    const disk *twin = sc_disk_find(ctl, c->host_path, len, hash);
    if (twin)
        return path_clash(ps, c->host_path, slot, twin->slot, "host path held by two disks");
    pin *p = sc_pin_find(ctl, c->host_path, len, hash);
    if (p && p->slot != slot)
        return path_clash(ps, c->host_path, slot, p->slot, "a disk outside its pinned slot");
    if (p ? !sc_disk_config_equal(&p->cfg, c) : slotmap_test(&ctl->taken, slot))
        return bad(ps, "two disks in one slot, or a disk outside its pinned slot");
    disk *d = sc_disk_create(ctl, c, len, hash, slot);
    if (!d || !hmap_reserve(&ctl->disks, ctl->disks.len + 1, &ctl->alloc)) {
        sc_disk_free(ctl, d);
        ps->nomem = true;
        return nomem_or_bad(ps, "");
    }
    d->state = (uint8_t)state;
    sc_disk_insert(ctl, d);
    by_slot[slot] = d;
    return SCSICTL_OK;
}

static int parse_part(parser *ps, scsictl *ctl, disk **by_slot)
{
    uint32_t slot;
    uint64_t partition, refs, nopt;
    const char *t;
    size_t n;
    scsictl_mount_config c = { 0 };
    if (!tok_is(ps, "part") || !tok_slot(ps, ctl, &slot) ||
        !tok_u64(ps, (uint64_t)INT64_MAX, &partition) || !token(ps, &t, &n) ||
        !tok_u64(ps, SIZE_MAX / 2, &refs) || !tok_flag(ps, &c.read_only) ||
        !tok_flag(ps, &c.encrypted) || !tok_flag(ps, &c.ensure_filesystem) ||
        !tok_flag(ps, &c.block_dev) || !tok_flag(ps, &c.format_with_refs))
        return bad(ps, "bad partition");
    bool absent, no_verity = true;
    size_t fs = tok_text(ps, &absent);
    size_t verity = 0;
    if (fs != SIZE_MAX && !absent && ps->version >= 2) {
        verity = tok_text(ps, &no_verity);
        if (verity == SIZE_MAX || !tok_u64(ps, UINT64_MAX, &c.verity_hash_offset))
            fs = SIZE_MAX;
    }
    if (fs == SIZE_MAX || absent || !tok_u64(ps, (uint64_t)(ps->end - ps->p), &nopt))
        return nomem_or_bad(ps, "bad partition");
    size_t *offs = nopt ? sc_calloc(ps->a, (size_t)nopt, sizeof *offs) : NULL;
    const char **opts = nopt ? sc_calloc(ps->a, (size_t)nopt, sizeof *opts) : NULL;
    int rc = SCSICTL_OK;
    if (nopt && (!offs || !opts)) {
        ps->nomem = true;
        rc = nomem_or_bad(ps, "");
    }
    for (uint64_t k = 0; rc == SCSICTL_OK && k < nopt; k++) {
        offs[k] = tok_text(ps, &absent);
        if (offs[k] == SIZE_MAX || absent)
            rc = nomem_or_bad(ps, "bad partition option");
    }
    if (rc == SCSICTL_OK && ps->p != ps->end)
        rc = bad(ps, "trailing data after partition options");
    int state = resting_mount_state(t, n);
    disk *d = by_slot[slot];
    if (rc == SCSICTL_OK) {
        if (state < 0)
            rc = bad(ps, "unknown partition state");
        else if (!d)
            rc = bad(ps, "partition of a slot with no disk");
        else if (refs == 0)
            rc = bad(ps, "partition with no claims");
        else if (sc_disk_tearing_down(d))
            rc = bad(ps, "partition of a disk being torn down");
        else if (sc_mount_states[state].on_attached_only && d->state != SC_D_ATTACHED)
            rc = bad(ps, "partition mounted on a disk that is not attached");
        else if (sc_mount_find(ctl, d, partition))
            rc = bad(ps, "partition listed twice");
    }
    if (rc == SCSICTL_OK) {
        for (uint64_t k = 0; k < nopt; k++)
            opts[k] = ps->scratch + offs[k];
        c.partition = partition;
        c.filesystem = ps->scratch + fs;
        c.options = opts;
        c.n_options = (size_t)nopt;
        c.verity_root_hash = no_verity ? NULL : ps->scratch + verity;
    }
    if (rc == SCSICTL_OK && !sc_mount_config_valid(&c))
        rc = bad(ps, "bad partition verity");
    if (rc == SCSICTL_OK) {
        mount *m = sc_mount_create(ctl, d, &c);
        if (!m || !hmap_reserve(&ctl->mounts, ctl->mounts.len + 1, &ctl->alloc)) {
            sc_mount_free(ctl, m);
            ps->nomem = true;
            rc = nomem_or_bad(ps, "");
        } else {
            m->state = (uint8_t)state;
            m->refs = (size_t)refs; /* checked against the claims at the end */
            sc_mount_insert(ctl, m);
        }
    }
    sc_free(ps->a, offs);
    sc_free(ps->a, (void *)opts);
    return rc;
}

static int parse_res(parser *ps, scsictl *ctl, disk **by_slot)
{
    const char *t;
    size_t n;
    scsictl_id id;
    uint32_t slot;
    uint64_t partition;
    bool holds, pending;
    if (!tok_is(ps, "res") || !token(ps, &t, &n) ||
        scsictl_id_parse(t, n, &id) != SCSICTL_OK || !tok_slot(ps, ctl, &slot) ||
        !tok_u64(ps, (uint64_t)INT64_MAX, &partition) || !tok_flag(ps, &holds) ||
        !tok_flag(ps, &pending) || ps->p != ps->end)
        return bad(ps, "bad reservation");
    char canon[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&id, canon);
    if (memcmp(canon, t, SCSICTL_ID_STRLEN) != 0)
        return bad(ps, "reservation id not in canonical lowercase form");
    disk *d = by_slot[slot];
    if (!d)
        return bad(ps, "reservation points at an empty slot");
    if (sc_res_find(ctl, &id))
        return bad(ps, "reservation id listed twice");
    mount *m = holds ? sc_mount_find(ctl, d, partition) : NULL;
    if (holds && !m)
        return bad(ps, "reservation holds a partition that is not listed");
    if (!holds && !pending)
        return bad(ps, "reservation without its partition claim must have a pending release");
    reservation *r = sc_obj_new(ctl, sizeof *r);
    if (!r || !hmap_reserve(&ctl->res, ctl->res.len + 1, &ctl->alloc)) {
        sc_res_free(ctl, r);
        ps->nomem = true;
        return nomem_or_bad(ps, "");
    }
    *r = (reservation){ .id = id, .disk = d, .mount = m,
                        .partition = partition, .pending = pending };
    hmap_insert(&ctl->res, sc_id_hash(&id), r);
    d->refs++;
    return SCSICTL_OK;
}

static int parse_gone(parser *ps, scsictl *ctl)
{
    const char *t;
    size_t n;
    scsictl_id id;
    if (!tok_is(ps, "gone") || !token(ps, &t, &n) || scsictl_id_parse(t, n, &id) != SCSICTL_OK ||
        ps->p != ps->end)
        return bad(ps, "bad gone record");
    char canon[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&id, canon);
    if (memcmp(canon, t, SCSICTL_ID_STRLEN) != 0)
        return bad(ps, "gone id not in canonical lowercase form");
    if (sc_res_find(ctl, &id))
        return bad(ps, "gone id is also a reservation");
    for (size_t i = 0; i < ctl->nreleased; i++)
        if (memcmp(ctl->released[i].id.bytes, id.bytes, 16) == 0)
            return bad(ps, "gone id listed twice");
    if (ctl->nreleased == SC_RELEASED_MAX)
        return bad(ps, "too many gone records");
    if (!ctl->released) {
        ctl->released = sc_calloc(&ctl->alloc, SC_RELEASED_MAX, sizeof *ctl->released);
        if (!ctl->released) {
            ps->nomem = true;
            return nomem_or_bad(ps, "");
        }
    }
    ctl->released[ctl->nreleased++] = (sc_gone){ .id = id, .in_file = true };
    return SCSICTL_OK;
}

/* Claims must match the recorded counts, and a disk being torn down must
 * have exactly the one claim whose release is pending. */
static int check_counts(parser *ps, scsictl *ctl)
{
    hmap *mounts = &ctl->mounts;
    size_t *held = sc_calloc(ps->a, mounts->cap ? mounts->cap : 1, sizeof *held);
    if (!held)
        return sc_fail(ps->err, SCSICTL_E_NO_MEMORY, "import: out of memory");
    int rc = SCSICTL_OK;
    for (size_t i = 0; i < ctl->res.cap; i++) {
        const reservation *r = hmap_item(&ctl->res, i);
        if (r && r->mount) { /* parse_res found the mount in the map */
            const mount *m = r->mount;
            held[hmap_index_of(mounts, sc_mount_hash(m->disk, m->partition), m)]++;
        }
    }
    for (size_t j = 0; j < mounts->cap && rc == SCSICTL_OK; j++) {
        const mount *m = hmap_item(mounts, j);
        if (m && m->refs != held[j])
            rc = sc_fail(ps->err, SCSICTL_E_INVALID_SNAPSHOT,
                         "import: invalid snapshot: partition %llu at controller %u lun %u "
                         "has refs %zu but %zu claims",
                         (unsigned long long)m->partition, m->disk->slot / ctl->luns,
                         m->disk->slot % ctl->luns, m->refs, held[j]);
    }
    sc_free(ps->a, held);
    for (size_t i = 0; i < ctl->disks.cap && rc == SCSICTL_OK; i++) {
        const disk *d = hmap_item(&ctl->disks, i);
        if (d && d->refs == 0)
            rc = sc_fail(ps->err, SCSICTL_E_INVALID_SNAPSHOT,
                         "import: invalid snapshot: disk '%.200s' has no claims", d->strings);
        else if (d && sc_disk_tearing_down(d) && d->refs != 1)
            rc = sc_fail(ps->err, SCSICTL_E_INVALID_SNAPSHOT,
                         "import: invalid snapshot: disk '%.200s' is torn down but has %zu claims",
                         d->strings, d->refs);
    }
    return rc;
}

static int import_body(parser *ps, const char *text_end, scsictl *ctl)
{
    /* slot -> disk for the part and res records (one array per import). */
    disk **by_slot = sc_calloc(ps->a, ctl->nslots ? ctl->nslots : 1, sizeof *by_slot);
    if (!by_slot)
        return sc_fail(ps->err, SCSICTL_E_NO_MEMORY, "import: out of memory");
    static const char *const order[] = { "pin", "disk", "part", "res", "gone" };
    int stage = 0, rc = SCSICTL_OK;
    size_t records = 2;
    for (;;) {
        if (!next_line(ps, text_end)) {
            rc = bad(ps, "truncated (no end record)");
            break;
        }
        if (line_is(ps, "end"))
            break;
        while (stage < 5 && !line_is(ps, order[stage]))
            stage++;
        if (stage == 5) {
            rc = bad(ps, "unknown or out-of-order record");
            break;
        }
        records++;
        switch (stage) {
        case 0: rc = parse_pin(ps, ctl); break;
        case 1: rc = parse_disk(ps, ctl, by_slot); break;
        case 2: rc = parse_part(ps, ctl, by_slot); break;
        case 3: rc = parse_res(ps, ctl, by_slot); break;
        default: rc = parse_gone(ps, ctl); break;
        }
        if (rc != SCSICTL_OK)
            break;
    }
    sc_free(ps->a, by_slot);
    if (rc != SCSICTL_OK)
        return rc;
    /* end <records> <checksum>: the checksum was verified before parsing. */
    uint64_t count;
    const char *t;
    size_t n;
    if (!tok_is(ps, "end") || !tok_u64(ps, UINT64_MAX, &count) || !token(ps, &t, &n) ||
        n != 16 || ps->p != ps->end || ps->next != text_end)
        return bad(ps, "bad end record");
    if (count != records + 1)
        return bad(ps, "record count does not match");
    return check_counts(ps, ctl);
}

int scsictl_snapshot_guest(const char *snapshot, size_t len, scsictl_guest *guest,
                           scsictl_error *err)
{
    if (!snapshot || !guest)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "import: missing argument");
    parser ps = { .next = snapshot, .err = err, .a = &sc_default_allocator };
    scsictl_options opts = { 0 };
    bool closed;
    int rc = parse_header(&ps, snapshot + len, &opts, &closed);
    if (rc == SCSICTL_OK)
        *guest = opts.guest;
    return rc;
}

int scsictl_import(const char *snapshot, size_t len, const scsictl_allocator *allocator,
                   scsictl **out, scsictl_error *err)
{
    return scsictl_import_remap(snapshot, len, allocator, NULL, out, err);
}

int scsictl_import_remap(const char *snapshot, size_t len, const scsictl_allocator *allocator,
                         const scsictl_remap *remap, scsictl **out, scsictl_error *err)
{
    if (!snapshot || !out)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "import: missing argument");
    if (remap && !remap->fn)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "import: a remap needs its function");
    const scsictl_allocator *a = allocator ? allocator : &sc_default_allocator;
    parser ps = { .next = snapshot, .err = err, .a = a, .remap = remap };
    if (memchr(snapshot, '\0', len))
        return bad(&ps, "NUL byte in snapshot");
    /* The checksum covers everything before the last line: check it first,
     * so a corrupted snapshot is refused whatever the damage looks like. */
    const char *last = len ? snapshot + len - 1 : snapshot;
    if (len < 2 || *last != '\n')
        return bad(&ps, "truncated (no final newline)");
    const char *start_of_last = last;
    while (start_of_last > snapshot && start_of_last[-1] != '\n')
        start_of_last--;
    size_t body = (size_t)(start_of_last - snapshot);
    size_t last_len = (size_t)(last - start_of_last);
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)sc_snapshot_checksum(snapshot, body));
    if (last_len < 16 || memcmp(last - 16, want, 16) != 0 ||
        memcmp(start_of_last, "end ", 4) != 0)
        return bad(&ps, "checksum mismatch or missing end record (corrupted or truncated)");

    scsictl_options opts = { .allocator = a };
    bool closed;
    int rc = parse_header(&ps, snapshot + len, &opts, &closed);
    if (rc != SCSICTL_OK)
        return rc;
    scsictl *ctl;
    rc = scsictl_new(&opts, &ctl, err);
    if (rc != SCSICTL_OK)
        return rc == SCSICTL_E_NO_MEMORY ? rc : bad(&ps, "bad geometry");
    ps.luns = ctl->luns;
    if (remap && !(ps.remapped = sc_calloc(a, ctl->nslots ? ctl->nslots : 1, sizeof *ps.remapped)))
        rc = sc_fail(err, SCSICTL_E_NO_MEMORY, "import: out of memory");
    else
        rc = import_body(&ps, snapshot + len, ctl);
    sc_free(a, ps.remapped);
    sc_free(a, ps.scratch);
    if (rc != SCSICTL_OK) {
        scsictl_free(ctl);
        return rc;
    }
    ctl->closed = closed;
    *out = ctl;
    return SCSICTL_OK;
}
