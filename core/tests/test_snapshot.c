/*
 * test_snapshot.c — snapshots (scsictl_save / scsictl_import) and the
 * durable state file (scsictl_set_state_file / scsictl_open), spec §8.
 *
 *   roundtrip      random operation sequences (random step failures, pins,
 *                  both guests, awkward strings) through the op interface;
 *                  after every action save -> import -> save must give the
 *                  same bytes and the imported controller the same state.
 *   hostile        truncation at every byte of real snapshots, every
 *                  single-bit flip of a small one, other version numbers,
 *                  NUL bytes, and hand-made inconsistent snapshots that carry
 *                  a *correct* checksum (so the consistency checks, not the
 *                  checksum, must refuse them): two disks in one slot, a
 *                  reservation at an empty slot, negative refs, slots outside
 *                  the geometry, refs not matching claims, a mounted
 *                  partition on a reserved disk, duplicate ids and paths, a
 *                  disk in another path's pin, ... -> SCSICTL_E_INVALID_SNAPSHOT.
 *   P10            random sequences with random failures; at a random point
 *                  save, import into a second controller and run the same
 *                  remaining actions on both with identically deciding
 *                  backends: callback logs, results, messages and states must
 *                  be identical (ids are compared by the order they were
 *                  handed out).
 *   state file     the file equals scsictl_save() after every call; it can be
 *                  imported at every instant (also while a step is in
 *                  flight); an unwritable file gives SCSICTL_E_IO and changes
 *                  nothing; scsictl_open restores and keeps writing.
 *   regressions    inputs found by the fuzzer (core/fuzz/corpus_import).
 *
 * Usage: test_snapshot [seed]  (default: a fixed list of seeds).
 */
#define _POSIX_C_SOURCE 200809L

#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void) { return tu_splitmix64(&rng_state); }

static int rn(int n) { return (int)(rnd() % (uint64_t)n); }
static bool pct(int p) { return rn(100) < p; }
static bool too_many_failures(void) { return atomic_load(&tu_failed) > 60; }

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* A growable string. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_reset(sbuf *b)
{
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

static void sb_free(sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* scsictl_save into a malloc'd copy; NULL (and a failed check) on error. */
static char *save_dup(scsictl *ctl, size_t *len)
{
    char *s = NULL;
    size_t n = 0;
    scsictl_error err;
    int rc = scsictl_save(ctl, &s, &n, &err);
    if (!tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "save: %s %s", scsictl_code_name(rc),
                  rc ? err.message : ""))
        return NULL;
    tu_check(strlen(s) == n, __FILE__, __LINE__, "save: NUL-terminated, len right");
    char *c = malloc(n + 1);
    if (!c) exit(2);
    memcpy(c, s, n + 1);
    scsictl_info_free(ctl, s);
    *len = n;
    return c;
}

/* Imports text; returns the code. On success the controller is written to
 * *out if out is non-NULL, else freed. */
static int import_text(const char *text, size_t len, scsictl **out, scsictl_error *err)
{
    scsictl *ctl = NULL;
    int rc = scsictl_import(text, len, NULL, &ctl, err);
    if (rc == SCSICTL_OK) {
        if (out) *out = ctl;
        else scsictl_free(ctl);
    } else {
        tu_check(ctl == NULL, __FILE__, __LINE__, "import: *out untouched on failure");
    }
    return rc;
}

/* Body (lines ending in '\n') + a correct "end <records> <checksum>" line. */
static char *with_end(const char *body, size_t *len)
{
    size_t n = strlen(body), lines = 0;
    for (size_t i = 0; i < n; i++) lines += body[i] == '\n';
    char *t = malloc(n + 64);
    if (!t) exit(2);
    memcpy(t, body, n);
    int w = snprintf(t + n, 64, "end %zu %016llx\n", lines + 1,
                     (unsigned long long)fnv1a(body, n));
    *len = n + (size_t)w;
    return t;
}

/* The full state as text without ids: slots (with partitions), stats, and
 * the reservation of each id in ids[0..n) by position. */
static void state_text(scsictl *ctl, const scsictl_id *ids, int n, sbuf *out)
{
    char st[4096];
    tu_snapshot(ctl, st, sizeof st);
    /* tu_snapshot lists ids; keep only the slot part and the stats. */
    char *bar = strchr(st, '|');
    char *bar2 = bar ? strchr(bar + 1, '|') : NULL;
    sb_reset(out);
    if (bar && bar2) {
        sb_add(out, st, (size_t)(bar - st));
        sb_add(out, bar2, strlen(bar2));
    } else {
        sb_add(out, st, strlen(st));
    }
    for (int i = 0; i < n; i++) {
        scsictl_reservation_info *ri = NULL;
        scsictl_error err;
        int rc = scsictl_get_reservation(ctl, &ids[i], &ri, &err);
        if (rc == SCSICTL_OK) {
            sb_printf(out, " #%d@%u:%u:%llu:%s%s", i, ri->controller, ri->lun,
                      (unsigned long long)ri->partition, ri->host_path,
                      ri->release_pending ? "!" : "");
            scsictl_info_free(ctl, ri);
        } else {
            sb_printf(out, " #%d:%s", i, scsictl_code_name(rc));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The random world: paths, configs and actions                              */
/* ------------------------------------------------------------------------ */

#define NPATHS 6
#define MAXIDS 256
#define NACTIONS 220

static const char *const paths[NPATHS] = {
    "/img/a.vhdx", "/img/with space.vhdx", "/img/100%.vhdx", "/img/new\nline=-",
    "/img/\xc3\xbc\xff.vhdx", "-",
};

static scsictl_disk_config disk_cfg(int path, int v)
{
    scsictl_disk_config d = tu_disk(paths[path]);
    switch (v) {
    case 1: d.read_only = true; break;
    case 2: d.type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK; d.evd_type = "space d%"; break;
    case 3: d.type = SCSICTL_DISK_PASSTHRU; d.evd_type = ""; break;
    default: break;
    }
    return d;
}

static const char *const opts1[] = { "ro", "x y", "" };
static const char *const opts2[] = { "%41", "-", "=", "a\tb" };

static scsictl_mount_config mount_cfg(int part, int v)
{
    scsictl_mount_config m = tu_mount((uint64_t)part);
    switch (v) {
    case 1:
        m.read_only = true; m.encrypted = true; m.filesystem = "ext4";
        m.options = opts1; m.n_options = 3; m.format_with_refs = true;
        break;
    case 2:
        m.ensure_filesystem = true; m.block_dev = true; m.filesystem = "x fs";
        m.options = opts2; m.n_options = 4;
        break;
    default: break;
    }
    if (part == 3) m.partition = (uint64_t)INT64_MAX;
    return m;
}

enum { A_RESERVE, A_MAP, A_UNMAP, A_PIN, A_CLOSE };

typedef struct action {
    int type;
    int path, dv, part, mv;   /* reserve / pin (path -1: bare pin)        */
    int idx;                  /* map / unmap: index into the id table      */
    uint64_t c, l;            /* pin                                       */
    uint64_t failmask;        /* step j of this action fails if bit j set  */
} action;

static action random_action(uint32_t C, uint32_t L, int nids_hint, int fail_pct)
{
    action a;
    memset(&a, 0, sizeof a);
    int r = rn(100);
    a.type = r < 34 ? A_RESERVE : r < 67 ? A_MAP : r < 96 ? A_UNMAP : r < 99 ? A_PIN : A_CLOSE;
    if (a.type == A_CLOSE && pct(70)) a.type = A_UNMAP; /* keep closing rare */
    a.path = rn(NPATHS);
    a.dv = pct(80) ? 0 : rn(4);
    a.part = pct(70) ? rn(2) : rn(4);
    a.mv = pct(75) ? 0 : rn(3);
    /* Mostly live ids, sometimes a released or unknown one. */
    a.idx = nids_hint > 0 && pct(92) ? nids_hint - 1 - rn(nids_hint < 12 ? nids_hint : 12)
                                     : rn(nids_hint + 2);
    a.c = (uint64_t)rn((int)C + 1);
    a.l = (uint64_t)rn((int)L + 1);
    if (a.type == A_PIN && pct(50)) a.path = -1;
    for (int j = 0; j < 64; j++)
        if (pct(fail_pct)) a.failmask |= 1ull << j;
    return a;
}

/* One controller under test, with its id table and callback log. */
typedef struct world {
    scsictl *ctl;
    scsictl_guest guest;
    scsictl_id ids[MAXIDS];
    int nids;
    sbuf log;     /* callbacks of the current action */
    sbuf result;  /* result of the current action */
} world;

static void log_step(sbuf *b, const scsictl_step *s, bool fail)
{
    sb_printf(b, "%s %u:%u", scsictl_step_name(s->kind), s->controller, s->lun);
    if (s->disk)
        sb_printf(b, " disk[%s ro%d %s evd%s%s]", s->disk->host_path, s->disk->read_only,
                  scsictl_disk_type_name(s->disk->type), s->disk->evd_type ? "=" : "-",
                  s->disk->evd_type ? s->disk->evd_type : "");
    if (s->mount) {
        const scsictl_mount_config *m = s->mount;
        sb_printf(b, " mount[p%llu ro%d enc%d ens%d bd%d fwr%d fs=%s n%zu",
                  (unsigned long long)m->partition, m->read_only, m->encrypted,
                  m->ensure_filesystem, m->block_dev, m->format_with_refs,
                  m->filesystem ? m->filesystem : "(null)", m->n_options);
        for (size_t k = 0; k < m->n_options; k++) sb_printf(b, " <%s>", m->options[k]);
        sb_printf(b, "] gp=%s", s->guest_path ? s->guest_path : "(null)");
        if (s->kind == SCSICTL_STEP_LINUX_MOUNT || s->kind == SCSICTL_STEP_LINUX_UNMOUNT) {
            scsictl_linux_settings ls;
            scsictl_step_linux_settings(s, &ls);
            sb_printf(b, " ls[%s %u %u %llu]", ls.mount_path, ls.controller, ls.lun,
                      (unsigned long long)ls.partition);
        } else {
            scsictl_windows_settings ws;
            scsictl_step_windows_settings(s, &ws);
            sb_printf(b, " ws[%s %u]", ws.container_path, ws.lun);
        }
    }
    sb_printf(b, "%s; ", fail ? " FAIL" : "");
}

/* Replaces every id string of w's table in msg by "#k". */
static void add_message(world *w, const char *msg)
{
    char buf[SCSICTL_MESSAGE_MAX + 64];
    snprintf(buf, sizeof buf, "%s", msg);
    for (int i = 0; i < w->nids; i++) {
        char s[SCSICTL_ID_STRLEN + 1];
        scsictl_id_format(&w->ids[i], s);
        char *hit;
        while ((hit = strstr(buf, s)) != NULL) {
            char tail[sizeof buf];
            snprintf(tail, sizeof tail, "%s", hit + SCSICTL_ID_STRLEN);
            snprintf(hit, sizeof buf - (size_t)(hit - buf), "#%d%s", i, tail);
        }
    }
    sb_add(&w->result, buf, strlen(buf));
}

static scsictl_id action_id(const world *w, int idx)
{
    if (idx >= 0 && idx < w->nids) return w->ids[idx];
    return tu_unknown_id((unsigned)idx);
}

/* Runs one action on w; fills w->log and w->result. */
static void run_action(world *w, const action *a)
{
    scsictl_error err;
    sb_reset(&w->log);
    sb_reset(&w->result);
    int rc;
    switch (a->type) {
    case A_RESERVE: {
        scsictl_disk_config d = disk_cfg(a->path, a->dv);
        scsictl_mount_config m = mount_cfg(a->part, a->mv);
        scsictl_id id;
        rc = scsictl_reserve(w->ctl, &d, &m, &id, &err);
        if (rc == SCSICTL_OK && w->nids < MAXIDS) w->ids[w->nids++] = id;
        sb_printf(&w->result, "reserve %s ", scsictl_code_name(rc));
        break;
    }
    case A_PIN: {
        scsictl_disk_config d = a->path >= 0 ? disk_cfg(a->path, a->dv) : tu_disk("x");
        rc = scsictl_reserve_for_rootfs(w->ctl, a->c, a->l, a->path >= 0 ? &d : NULL, &err);
        sb_printf(&w->result, "pin %s ", scsictl_code_name(rc));
        break;
    }
    case A_CLOSE:
        rc = scsictl_close(w->ctl, &err);
        sb_printf(&w->result, "close %s ", scsictl_code_name(rc));
        break;
    default: {
        scsictl_id id = action_id(w, a->idx);
        scsictl_op op;
        bool is_map = a->type == A_MAP;
        rc = tu_through(w->ctl, &op,
                        is_map ? scsictl_op_start_map(w->ctl, &op, &id, &err)
                               : scsictl_op_start_unmap(w->ctl, &op, &id, &err), &err);
        for (int j = 0; rc == SCSICTL_STEP; j++) {
            bool fail = j < 64 && ((a->failmask >> j) & 1);
            log_step(&w->log, &op.step, fail);
            rc = tu_through(w->ctl, &op,
                            scsictl_op_report(w->ctl, &op, !fail,
                                              fail ? "injected \"failure\"" : NULL, &err),
                            &err);
            if (j > 16) {
                tu_check(false, __FILE__, __LINE__, "operation did not finish");
                break;
            }
        }
        sb_printf(&w->result, "%s #%d %s %s ", is_map ? "map" : "unmap", a->idx,
                  scsictl_code_name(rc), rc == SCSICTL_DONE && is_map ? op.guest_path : "");
        break;
    }
    }
    if (rc < 0) add_message(w, err.message);
}

static void world_new(world *w, uint32_t C, uint32_t L, scsictl_guest g)
{
    memset(w, 0, sizeof *w);
    w->ctl = tu_new(C, L, g);
    w->guest = g;
}

static void world_free(world *w)
{
    scsictl_free(w->ctl);
    sb_free(&w->log);
    sb_free(&w->result);
}

/* ------------------------------------------------------------------------ */
/* Round trip                                                                */
/* ------------------------------------------------------------------------ */

/* save -> import -> save gives the same bytes, and the same state. Returns
 * the number of bytes of the snapshot (0 on failure). */
static size_t check_roundtrip(world *w)
{
    size_t n1 = 0, n2 = 0;
    char *s1 = save_dup(w->ctl, &n1);
    if (!s1) return 0;
    scsictl *b = NULL;
    scsictl_error err;
    int rc = import_text(s1, n1, &b, &err);
    if (!tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "import of a saved snapshot: %s %s\n%s",
                  scsictl_code_name(rc), rc ? err.message : "", s1)) {
        free(s1);
        return 0;
    }
    char *s2 = save_dup(b, &n2);
    tu_check(s2 && n1 == n2 && memcmp(s1, s2, n1) == 0, __FILE__, __LINE__,
             "save -> import -> save identical\nfirst:\n%s\nsecond:\n%s", s1, s2 ? s2 : "");
    sbuf x = { 0 }, y = { 0 };
    state_text(w->ctl, w->ids, w->nids, &x);
    state_text(b, w->ids, w->nids, &y);
    tu_check(strcmp(x.p, y.p) == 0, __FILE__, __LINE__, "imported state equal\n%s\n%s", x.p,
             y.p);
    sb_free(&x);
    sb_free(&y);
    free(s1);
    free(s2);
    scsictl_free(b);
    return n1;
}

static void test_roundtrip(uint64_t seed)
{
    TEST("roundtrip: save -> import -> save identical over random states");
    char name[64];
    snprintf(name, sizeof name, "roundtrip seed %llu", (unsigned long long)seed);
    tu_test_name = name;
    rng_state = seed;
    uint32_t C = 1 + (uint32_t)rn(3), L = 1 + (uint32_t)rn(4);
    world w;
    world_new(&w, C, L, pct(50) ? SCSICTL_GUEST_LINUX : SCSICTL_GUEST_WINDOWS);
    size_t biggest = 0;
    for (int i = 0; i < NACTIONS && !too_many_failures(); i++) {
        action a = random_action(C, L, w.nids, 25);
        if (a.type == A_CLOSE && i < NACTIONS - 5) a.type = A_MAP;
        run_action(&w, &a);
        size_t n = check_roundtrip(&w);
        if (n > biggest) biggest = n;
    }
    world_free(&w);
    (void)biggest;
}

/* ------------------------------------------------------------------------ */
/* P10                                                                       */
/* ------------------------------------------------------------------------ */

static void test_p10(uint64_t seed)
{
    char name[64];
    snprintf(name, sizeof name, "P10 seed %llu", (unsigned long long)seed);
    TEST(name);
    rng_state = seed * 7919 + 1;
    uint32_t C = 1 + (uint32_t)rn(3), L = 1 + (uint32_t)rn(4);
    scsictl_guest g = pct(50) ? SCSICTL_GUEST_LINUX : SCSICTL_GUEST_WINDOWS;
    int fail_pct = 10 + rn(30);
    action acts[NACTIONS];
    int nids_hint = 0;
    for (int i = 0; i < NACTIONS; i++) {
        acts[i] = random_action(C, L, nids_hint, fail_pct);
        if (acts[i].type == A_RESERVE) nids_hint++;
    }
    int k = rn(NACTIONS);
    world a, b;
    world_new(&a, C, L, g);
    for (int i = 0; i < k; i++) run_action(&a, &acts[i]);
    size_t n = 0;
    char *snap = save_dup(a.ctl, &n);
    memset(&b, 0, sizeof b);
    b.guest = g;
    scsictl_error err;
    int rc = snap ? import_text(snap, n, &b.ctl, &err) : SCSICTL_E_INVALID_ARGUMENT;
    if (!tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "import: %s", scsictl_code_name(rc))) {
        free(snap);
        world_free(&a);
        return;
    }
    memcpy(b.ids, a.ids, sizeof a.ids);
    b.nids = a.nids;
    int diverged = 0;
    sbuf sa = { 0 }, sb = { 0 };
    for (int i = k; i < NACTIONS && diverged < 3; i++) {
        run_action(&a, &acts[i]);
        run_action(&b, &acts[i]);
        bool same = strcmp(a.result.p, b.result.p) == 0 && a.log.len == b.log.len &&
                    (a.log.len == 0 || strcmp(a.log.p, b.log.p) == 0) && a.nids == b.nids;
        state_text(a.ctl, a.ids, a.nids, &sa);
        state_text(b.ctl, b.ids, b.nids, &sb);
        same = same && strcmp(sa.p, sb.p) == 0;
        if (!tu_check(same, __FILE__, __LINE__,
                      "P10: action %d (imported at %d) differs\n original: %s | %s\n   %s\n"
                      " imported: %s | %s\n   %s",
                      i, k, a.result.p, a.log.p ? a.log.p : "", sa.p, b.result.p,
                      b.log.p ? b.log.p : "", sb.p))
            diverged++;
    }
    sb_free(&sa);
    sb_free(&sb);
    free(snap);
    world_free(&a);
    world_free(&b);
}

/* ------------------------------------------------------------------------ */
/* Hostile snapshots                                                         */
/* ------------------------------------------------------------------------ */

#define HDR "scsictl-snapshot 2\ngeometry 2 4 linux open\n"
#define WHDR "scsictl-snapshot 2\ngeometry 2 4 windows open\n"
#define ID1 "11111111-1111-4111-8111-111111111111"
#define ID2 "22222222-2222-4222-8222-222222222222"
#define ID3 "33333333-3333-4333-8333-333333333333"
#define DISK_A "disk 0 1 attached 0 0 VirtualDisk - =/a 0\n"
#define PART_A0 "part 0 1 0 mounted 2 0 0 0 0 0 = - 0 0\n"
#define RES_A0 "res " ID1 " 0 1 0 1 0\nres " ID2 " 0 1 0 1 0\n"

/* A canonical hand-made snapshot (every record kind). */
static const char base_body[] =
    HDR
    "pin 0 0 0 VirtualDisk - =/root%20fs.vhdx 0\n"
    "pin 1 3\n"
    DISK_A
    "disk 1 0 reserved 0 1 ExtensibleVirtualDisk =evd =/b 0\n"
    PART_A0
    "part 0 1 1 reserved 1 1 1 1 1 1 =ext4 - 0 2 =ro =x%20y\n"
    "part 1 0 0 reserved 1 0 0 0 0 0 = - 0 0\n"
    RES_A0
    "res " ID3 " 0 1 1 1 0\n"
    "res 44444444-4444-4444-8444-444444444444 1 0 0 1 0\n";

static void expect_ok(const char *what, const char *body, bool canonical)
{
    size_t n;
    char *t = with_end(body, &n);
    scsictl_error err;
    scsictl *ctl = NULL;
    int rc = import_text(t, n, &ctl, &err);
    tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "%s: import: %s %s", what,
             scsictl_code_name(rc), rc ? err.message : "");
    if (rc == SCSICTL_OK && canonical) {
        size_t m;
        char *s = save_dup(ctl, &m);
        tu_check(s && m == n && memcmp(s, t, n) == 0, __FILE__, __LINE__,
                 "%s: resave identical\nwant:\n%s\ngot:\n%s", what, t, s ? s : "");
        free(s);
    }
    if (rc == SCSICTL_OK) scsictl_free(ctl);
    free(t);
}

static void expect_invalid_raw(const char *what, const char *t, size_t n)
{
    scsictl_error err;
    memset(&err, 0, sizeof err);
    int rc = import_text(t, n, NULL, &err);
    tu_check(rc == SCSICTL_E_INVALID_SNAPSHOT, __FILE__, __LINE__,
             "%s: import gave %s, want invalid_snapshot", what, scsictl_code_name(rc));
    if (rc == SCSICTL_E_INVALID_SNAPSHOT)
        tu_check(err.code == rc && strstr(err.message, "invalid snapshot") != NULL, __FILE__,
                 __LINE__, "%s: message \"%s\"", what, err.message);
}

/* The checksum is right, so only the content can make import refuse it. */
static void expect_invalid(const char *what, const char *body)
{
    size_t n;
    char *t = with_end(body, &n);
    expect_invalid_raw(what, t, n);
    free(t);
}

static void test_handmade(void)
{
    TEST("hostile: hand-made snapshots with a correct checksum");
    expect_ok("base", base_body, true);
    expect_ok("empty linux", HDR, true);
    expect_ok("empty windows, closed", "scsictl-snapshot 2\ngeometry 0 1 windows closed\n", true);
    expect_ok("ejected disk being torn down (Linux), pending release",
              HDR "disk 0 2 ejected 1 0 VirtualDisk - =/e 0\nres " ID1 " 0 2 5 0 1\n", true);
    expect_ok("disk in its own pinned slot",
              HDR "pin 0 0 1 PassThru - =/p 0\ndisk 0 0 attached 0 1 PassThru - =/p 0\n"
                  "part 0 0 0 reserved 1 0 0 0 0 0 = - 0 0\nres " ID1 " 0 0 0 1 0\n", true);
    expect_ok("largest geometry", "scsictl-snapshot 2\ngeometry 64 16384 linux open\n", true);
    expect_ok("gone ids after the claims", HDR DISK_A PART_A0 RES_A0 "gone " ID3 "\n", true);
    expect_ok("gone ids alone", HDR "gone " ID3 "\n", true);

    static const struct { const char *what, *body; } bad[] = {
        /* spec §8's cases */
        { "two disks in one slot",
          HDR DISK_A "disk 0 1 attached 0 0 VirtualDisk - =/b 0\n" PART_A0 RES_A0 },
        { "reservation pointing at an empty slot",
          HDR DISK_A PART_A0 RES_A0 "res " ID3 " 0 2 0 1 0\n" },
        { "partition with negative refs",
          HDR DISK_A "part 0 1 0 mounted -1 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "partition with refs -0", HDR DISK_A "part 0 1 0 mounted -0 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "partition with refs wrapped to 2^64-1",
          HDR DISK_A "part 0 1 0 mounted 18446744073709551615 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "disk at a lun outside the geometry",
          HDR "disk 0 4 attached 0 0 VirtualDisk - =/a 0\npart 0 4 0 mounted 1 0 0 0 0 0 = - 0 0\n"
              "res " ID1 " 0 4 0 1 0\n" },
        { "disk at a controller outside the geometry",
          HDR "disk 2 0 attached 0 0 VirtualDisk - =/a 0\npart 2 0 0 mounted 1 0 0 0 0 0 = - 0 0\n"
              "res " ID1 " 2 0 0 1 0\n" },
        { "pin outside the geometry", HDR "pin 0 4\n" },
        { "pin at a huge controller", HDR "pin 4294967296 0\n" },
        { "partition outside the geometry", HDR DISK_A "part 0 9 0 mounted 2 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "reservation outside the geometry", HDR DISK_A PART_A0 RES_A0 "res " ID3 " 7 1 0 1 0\n" },
        { "gone id that is also a reservation", HDR DISK_A PART_A0 RES_A0 "gone " ID1 "\n" },
        { "gone id listed twice", HDR "gone " ID3 "\ngone " ID3 "\n" },
        { "gone id in upper case",
          HDR "gone 8F0D7A8E-0C1B-4C4F-9E55-3A2B1C0D9E8F\n" },
        { "gone record before the claims", HDR DISK_A PART_A0 "gone " ID3 "\n" RES_A0 },
        { "gone record without an id", HDR "gone\n" },
        /* more inconsistencies */
        { "refs larger than the claims", HDR DISK_A "part 0 1 0 mounted 3 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "refs smaller than the claims", HDR DISK_A "part 0 1 0 mounted 1 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "partition with zero refs", HDR DISK_A "part 0 1 0 mounted 0 0 0 0 0 0 = - 0 0\n" },
        { "mounted partition on a reserved disk",
          HDR "disk 0 1 reserved 0 0 VirtualDisk - =/a 0\n" PART_A0 RES_A0 },
        { "mounted partition on an ejected disk",
          HDR "disk 0 1 ejected 1 0 VirtualDisk - =/a 0\npart 0 1 0 mounted 1 0 0 0 0 0 = - 0 0\n"
              "res " ID1 " 0 1 0 1 1\n" },
        { "partition of a disk being torn down",
          HDR "disk 0 1 attached 1 0 VirtualDisk - =/a 0\npart 0 1 0 reserved 1 0 0 0 0 0 = - 0 0\n"
              "res " ID1 " 0 1 0 1 1\n" },
        { "duplicate reservation id", HDR DISK_A PART_A0 "res " ID1 " 0 1 0 1 0\nres " ID1 " 0 1 0 1 0\n" },
        { "reservation id in upper case",
          HDR DISK_A "part 0 1 0 mounted 1 0 0 0 0 0 = - 0 0\nres AAAAAAAA-1111-4111-8111-111111111111 0 1 0 1 0\n" },
        { "reservation id malformed",
          HDR DISK_A "part 0 1 0 mounted 1 0 0 0 0 0 = - 0 0\nres 11111111-1111-4111-8111-11111111111 0 1 0 1 0\n" },
        { "duplicate host path at two slots",
          HDR DISK_A "disk 0 2 attached 0 0 VirtualDisk - =/a 0\n" PART_A0
              "part 0 2 0 reserved 1 0 0 0 0 0 = - 0 0\n" RES_A0 "res " ID3 " 0 2 0 1 0\n" },
        { "disk in a slot pinned for another path",
          HDR "pin 0 1 0 VirtualDisk - =/root 0\n" DISK_A PART_A0 RES_A0 },
        { "disk in a bare pinned slot", HDR "pin 0 1\n" DISK_A PART_A0 RES_A0 },
        { "pinned path placed at another slot",
          HDR "pin 0 0 0 VirtualDisk - =/a 0\n" DISK_A PART_A0 RES_A0 },
        { "pinned path with another disk config",
          HDR "pin 0 1 1 VirtualDisk - =/a 0\n" DISK_A PART_A0 RES_A0 },
        { "slot pinned twice", HDR "pin 0 1\npin 0 1\n" },
        { "path pinned twice", HDR "pin 0 1 0 VirtualDisk - =/r 0\npin 0 2 0 VirtualDisk - =/r 0\n" },
        { "disk with no claims", HDR DISK_A },
        { "torn-down disk with two claims",
          HDR "disk 0 1 attached 1 0 VirtualDisk - =/a 0\nres " ID1 " 0 1 0 0 1\nres " ID2 " 0 1 0 0 1\n" },
        { "ejected disk not being torn down",
          HDR "disk 0 1 ejected 0 0 VirtualDisk - =/a 0\nres " ID1 " 0 1 0 0 1\n" },
        { "ejected disk on a Windows guest",
          WHDR "disk 0 1 ejected 1 0 VirtualDisk - =/a 0\nres " ID1 " 0 1 0 0 1\n" },
        { "reserved disk being torn down",
          HDR "disk 0 1 reserved 1 0 VirtualDisk - =/a 0\nres " ID1 " 0 1 0 0 1\n" },
        { "claim without its partition and no pending release, disk not torn down",
          HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 0\nres " ID1 " 0 1 0 0 0\n" },
        { "reservation holds a partition that is not listed",
          HDR DISK_A PART_A0 RES_A0 "res " ID3 " 0 1 2 1 0\n" },
        { "partition listed twice", HDR DISK_A PART_A0 PART_A0 RES_A0 },
        { "partition of an empty slot", HDR "part 0 1 0 reserved 1 0 0 0 0 0 = - 0 0\n" },
        { "records out of order (res before part)", HDR DISK_A RES_A0 PART_A0 },
        { "records out of order (disk before pin)", HDR DISK_A "pin 1 3\n" PART_A0 RES_A0 },
        { "unknown record", HDR "slot 0 1\n" },
        { "empty line", HDR "\n" },
        { "unknown disk state", HDR "disk 0 1 plugged 0 0 VirtualDisk - =/a 0\n" PART_A0 RES_A0 },
        { "unknown partition state", HDR DISK_A "part 0 1 0 half 2 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "unknown disk type", HDR "disk 0 1 attached 0 0 Floppy - =/a 0\n" PART_A0 RES_A0 },
        { "flag 2", HDR "disk 0 1 attached 0 2 VirtualDisk - =/a 0\n" PART_A0 RES_A0 },
        { "leading zero", HDR "disk 0 01 attached 0 0 VirtualDisk - =/a 0\n" PART_A0 RES_A0 },
        { "plus sign", HDR "disk 0 +1 attached 0 0 VirtualDisk - =/a 0\n" PART_A0 RES_A0 },
        { "double space", HDR "disk 0 1  attached 0 0 VirtualDisk - =/a\n" PART_A0 RES_A0 },
        { "trailing space", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a \n" PART_A0 RES_A0 },
        { "missing field", HDR "disk 0 1 attached 0 0 VirtualDisk =/a\n" PART_A0 RES_A0 },
        { "extra field", HDR DISK_A PART_A0 "res " ID1 " 0 1 0 1 0 0\nres " ID2 " 0 1 0 1 0\n" },
        { "absent host path", HDR "disk 0 1 attached 0 0 VirtualDisk - - 0\n" PART_A0 RES_A0 },
        { "empty host path", HDR "disk 0 1 attached 0 0 VirtualDisk - = 0\n" PART_A0 RES_A0 },
        { "string without '='", HDR "disk 0 1 attached 0 0 VirtualDisk - /a\n" PART_A0 RES_A0 },
        { "escaped safe byte", HDR "disk 0 1 attached 0 0 VirtualDisk - =%2Fa 0\n" PART_A0 RES_A0 },
        { "lowercase escape", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a%2a 0\n" PART_A0 RES_A0 },
        { "escaped NUL", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a%00 0\n" PART_A0 RES_A0 },
        { "cut escape", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a%2 0\n" PART_A0 RES_A0 },
        { "raw unsafe byte", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a\"\n" PART_A0 RES_A0 },
        { "absent filesystem", HDR DISK_A "part 0 1 0 mounted 2 0 0 0 0 0 - - 0 0\n" RES_A0 },
        { "more options than listed", HDR DISK_A "part 0 1 0 mounted 2 0 0 0 0 0 = - 0 2 =x\n" RES_A0 },
        { "fewer options than listed", HDR DISK_A "part 0 1 0 mounted 2 0 0 0 0 0 = - 0 0 =x\n" RES_A0 },
        { "huge option count", HDR DISK_A "part 0 1 0 mounted 2 0 0 0 0 0 = - 0 4000000000 =x\n" RES_A0 },
        { "absent option", HDR DISK_A "part 0 1 0 mounted 2 0 0 0 0 0 = - 0 1 -\n" RES_A0 },
        { "partition beyond INT64_MAX",
          HDR DISK_A "part 0 1 9223372036854775808 reserved 1 0 0 0 0 0 = - 0 0\n" RES_A0 },
        { "number overflowing 64 bits", HDR "pin 0 184467440737095516160\n" },
        { "zero luns", "scsictl-snapshot 2\ngeometry 2 0 linux open\n" },
        { "too many controllers", "scsictl-snapshot 2\ngeometry 1025 1 linux open\n" },
        { "too many luns", "scsictl-snapshot 2\ngeometry 1 16385 linux open\n" },
        { "too many slots", "scsictl-snapshot 2\ngeometry 1024 16384 linux open\n" },
        { "unknown guest", "scsictl-snapshot 2\ngeometry 2 4 macos open\n" },
        { "no open/closed flag", "scsictl-snapshot 2\ngeometry 2 4 linux\n" },
        { "bad open/closed flag", "scsictl-snapshot 2\ngeometry 2 4 linux ajar\n" },
        { "no geometry", "scsictl-snapshot 2\n" },
        { "geometry twice", HDR "geometry 2 4 linux open\n" },
        { "header twice", HDR "scsictl-snapshot 2\n" },
        { "not a snapshot", "hello world\n" },
        { "CRLF line endings", "scsictl-snapshot 2\r\ngeometry 2 4 linux open\r\n" },
        { "version 0", "scsictl-snapshot 0\ngeometry 2 4 linux open\n" },
        { "version 3", "scsictl-snapshot 3\ngeometry 2 4 linux open\n" },
        { "version 10", "scsictl-snapshot 10\ngeometry 2 4 linux open\n" },
        { "version 01", "scsictl-snapshot 01\ngeometry 2 4 linux open\n" },
        { "version 1.0", "scsictl-snapshot 1.0\ngeometry 2 4 linux open\n" },
        { "version 2^64-1", "scsictl-snapshot 18446744073709551615\ngeometry 2 4 linux open\n" },
        { "version 2^64", "scsictl-snapshot 18446744073709551616\ngeometry 2 4 linux open\n" },
        { "version missing", "scsictl-snapshot\ngeometry 2 4 linux open\n" },
        { "empty body", "" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_invalid(bad[i].what, bad[i].body);

    /* Version 3 says which version it found. */
    size_t n;
    char *t = with_end("scsictl-snapshot 3\ngeometry 2 4 linux open\n", &n);
    scsictl_error err;
    int rc = import_text(t, n, NULL, &err);
    CHECK_CODE(rc, SCSICTL_E_INVALID_SNAPSHOT);
    if (rc == SCSICTL_E_INVALID_SNAPSHOT) CHECK_CONTAINS(err.message, "version 3");
    scsictl_guest g = SCSICTL_GUEST_WINDOWS;
    CHECK_CODE(scsictl_snapshot_guest(t, n, &g, &err), SCSICTL_E_INVALID_SNAPSHOT);
    free(t);

    /* A valid snapshot with a wrong record count or a wrong checksum. */
    t = with_end(base_body, &n);
    char *end = strstr(t, "\nend ") + 5;
    end[0] = end[0] == '9' ? '8' : (char)(end[0] + 1);
    expect_invalid_raw("record count off by one", t, n);
    free(t);
    t = with_end(base_body, &n);
    t[n - 2] = t[n - 2] == '0' ? '1' : '0';
    expect_invalid_raw("wrong checksum", t, n);
    free(t);
    /* Uppercase checksum digits. */
    t = with_end(base_body, &n);
    for (size_t i = n - 17; i < n - 1; i++)
        if (t[i] >= 'a' && t[i] <= 'f') t[i] = (char)(t[i] - 'a' + 'A');
    if (strpbrk(t + n - 17, "ABCDEF")) expect_invalid_raw("uppercase checksum", t, n);
    free(t);
    /* Something after the end record. */
    t = with_end(base_body, &n);
    char *t2 = malloc(n + 32);
    memcpy(t2, t, n);
    memcpy(t2 + n, "pin 1 2\n", 8);
    expect_invalid_raw("record after the end record", t2, n + 8);
    size_t endlen = (size_t)(t + n - (strstr(t, "\nend ") + 1));
    memcpy(t2 + n, t + n - endlen, endlen); /* the end line twice */
    expect_invalid_raw("end record twice", t2, n + endlen);
    free(t2);
    /* A NUL byte inside, with the checksum computed over it. */
    char nulbody[] = HDR "pin 1 3\n";
    size_t bl = sizeof nulbody - 1;
    nulbody[bl - 3] = '\0'; /* "pin 1\0 3" */
    char nt[256];
    memcpy(nt, nulbody, bl);
    int w = snprintf(nt + bl, sizeof nt - bl, "end 4 %016llx\n",
                     (unsigned long long)fnv1a(nulbody, bl));
    expect_invalid_raw("NUL byte", nt, bl + (size_t)w);
    free(t);

    /* scsictl_snapshot_guest reads the header only. */
    t = with_end(WHDR, &n);
    CHECK_CODE(scsictl_snapshot_guest(t, n, &g, &err), SCSICTL_OK);
    CHECK_EQ(g, SCSICTL_GUEST_WINDOWS);
    free(t);
    t = with_end(HDR, &n);
    CHECK_CODE(scsictl_snapshot_guest(t, n, &g, &err), SCSICTL_OK);
    CHECK_EQ(g, SCSICTL_GUEST_LINUX);
    free(t);
    CHECK_CODE(scsictl_snapshot_guest("garbage", 7, &g, &err), SCSICTL_E_INVALID_SNAPSHOT);
    CHECK_CODE(scsictl_snapshot_guest("", 0, &g, &err), SCSICTL_E_INVALID_SNAPSHOT);
}

/* What an imported hand-made snapshot then does. */
static void test_handmade_behaviour(void)
{
    TEST("import: a hand-made state behaves as described");
    size_t n;
    char *t = with_end(HDR "pin 0 0 0 VirtualDisk - =/root 0\n"
                           "disk 0 2 ejected 1 0 VirtualDisk - =/e 0\n"
                           "disk 1 0 attached 0 0 VirtualDisk - =/m 0\n"
                           "part 1 0 3 mounted 2 0 0 0 0 0 =ext4 - 0 1 =ro\n"
                           "res " ID1 " 0 2 5 0 1\n"
                           "res " ID2 " 1 0 3 1 0\n"
                           "res " ID3 " 1 0 3 1 0\n", &n);
    scsictl *ctl = NULL;
    scsictl_error err;
    int rc = import_text(t, n, &ctl, &err);
    free(t);
    if (!tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "import: %s", rc ? err.message : ""))
        return;
    CHECK_STATE(ctl, "0:0P; 0:2 /e ejected r1; 1:0 /m attached r2 [3 mounted 2]");
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_id id1, id2, id3;
    scsictl_id_parse(ID1, 36, &id1);
    scsictl_id_parse(ID2, 36, &id2);
    scsictl_id_parse(ID3, 36, &id3);
    scsictl_op op;
    /* The pending release is not mappable; retried, it only removes. */
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &id1, &err), SCSICTL_E_BUSY);
    scsictl_disk_config e = tu_disk("/e");
    scsictl_id nid;
    CHECK_CODE(scsictl_reserve(ctl, &e, NULL, &nid, &err), SCSICTL_E_BUSY);
    CHECK_CODE(tu_drive(ctl, r, false, &id1, &op, &err), SCSICTL_DONE);
    char log[1024];
    rec_format(r, 0, log, sizeof log);
    CHECK_STR(log, "remove 0:2");
    /* The mounted partition maps with no callback, at its path. */
    rec_clear(r);
    CHECK_CODE(tu_drive(ctl, r, true, &id2, &op, &err), SCSICTL_DONE);
    CHECK_STR(op.guest_path, "/run/mounts/scsi/1_0_3");
    CHECK_EQ(r->n, 0);
    /* A new disk takes the lowest free unpinned slot (0:1), the pinned path its pin. */
    CHECK_CODE(tu_reserve(ctl, "/n", 0, &nid), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/root", 0, &nid), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0P /root reserved r1 [0 reserved 1]; 0:1 /n reserved r1 [0 reserved 1]; "
                     "1:0 /m attached r2 [3 mounted 2]");
    /* Releasing both claims on /m unmounts, ejects and removes it. */
    rec_clear(r);
    CHECK_CODE(tu_drive(ctl, r, false, &id2, &op, &err), SCSICTL_DONE);
    CHECK_CODE(tu_drive(ctl, r, false, &id3, &op, &err), SCSICTL_DONE);
    rec_format(r, 0, log, sizeof log);
    CHECK_STR(log, "unmount 1:0:3 /m, eject 1:0, remove 1:0");
    free(r);
    scsictl_free(ctl);

    /* A closed snapshot imports closed. */
    t = with_end("scsictl-snapshot 2\ngeometry 1 1 linux closed\n", &n);
    rc = import_text(t, n, &ctl, &err);
    free(t);
    if (tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "import closed")) {
        CHECK_CODE(tu_reserve(ctl, "/x", 0, &nid), SCSICTL_E_CLOSED);
        scsictl_free(ctl);
    }
}

/* Builds a few real snapshots by running random actions. */
static char *real_snapshot(uint64_t seed, int actions, scsictl_guest g, size_t *n)
{
    rng_state = seed;
    world w;
    world_new(&w, 2, 3, g);
    for (int i = 0; i < actions; i++) {
        action a = random_action(2, 3, w.nids, 20);
        if (a.type == A_CLOSE) a.type = A_RESERVE;
        run_action(&w, &a);
    }
    char *s = save_dup(w.ctl, n);
    world_free(&w);
    return s;
}

static void test_truncation_and_flips(void)
{
    TEST("hostile: truncation at every byte, every single-bit flip");
    static const struct { uint64_t seed; int actions; scsictl_guest g; } real[] = {
        { 11, 40, SCSICTL_GUEST_LINUX },
        { 12, 60, SCSICTL_GUEST_WINDOWS },
        { 13, 25, SCSICTL_GUEST_LINUX },
    };
    long cases = 0, bad_trunc = 0, bad_flip = 0;
    for (size_t k = 0; k < sizeof real / sizeof real[0]; k++) {
        size_t n = 0;
        char *s = real_snapshot(real[k].seed, real[k].actions, real[k].g, &n);
        if (!s) continue;
        tu_check(n > 100, __FILE__, __LINE__, "real snapshot %zu has content (%zu bytes)", k, n);
        CHECK_CODE(import_text(s, n, NULL, NULL), SCSICTL_OK);
        for (size_t cut = 0; cut < n; cut++) {
            /* a private copy of exactly cut bytes, so ASan sees overreads */
            char *p = malloc(cut ? cut : 1);
            memcpy(p, s, cut);
            scsictl_error err;
            int rc = import_text(p, cut, NULL, &err);
            cases++;
            if (rc != SCSICTL_E_INVALID_SNAPSHOT && bad_trunc++ < 5)
                tu_check(false, __FILE__, __LINE__, "snapshot %zu cut at %zu/%zu: %s", k, cut, n,
                         scsictl_code_name(rc));
            free(p);
        }
        free(s);
    }
    /* Every single-bit flip of a small snapshot (the hand-made base, which
     * has every record kind). */
    size_t n;
    char *t = with_end(base_body, &n);
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) {
            char *p = malloc(n);
            memcpy(p, t, n);
            p[i] = (char)(p[i] ^ (1 << b));
            int rc = import_text(p, n, NULL, NULL);
            cases++;
            if (rc != SCSICTL_E_INVALID_SNAPSHOT && bad_flip++ < 5)
                tu_check(false, __FILE__, __LINE__, "bit %d of byte %zu ('%c') flipped: %s", b, i,
                         t[i], scsictl_code_name(rc));
            free(p);
        }
    free(t);
    CHECK_EQ(bad_trunc, 0);
    CHECK_EQ(bad_flip, 0);
    fprintf(stderr, "   %ld hostile inputs refused\n", cases);
}

/* Import under allocation failure: NO_MEMORY or OK, never anything else,
 * never a leak (ASan checks leaks at exit). */
typedef struct failing_alloc {
    long calls, fail_at;
} failing_alloc;

static void *fa_malloc(void *ud, size_t n)
{
    failing_alloc *f = ud;
    return f->calls++ == f->fail_at ? NULL : malloc(n);
}

static void *fa_realloc(void *ud, void *p, size_t n)
{
    failing_alloc *f = ud;
    return f->calls++ == f->fail_at ? NULL : realloc(p, n);
}

static void fa_free(void *ud, void *p)
{
    (void)ud;
    free(p);
}

static void test_import_nomem(void)
{
    TEST("import and save under allocation failure");
    size_t n;
    char *t = with_end(base_body, &n);
    long k;
    int other = 0;
    for (k = 0; k < 10000; k++) {
        failing_alloc f = { 0, k };
        scsictl_allocator a = { fa_malloc, fa_realloc, fa_free, &f };
        scsictl *ctl = NULL;
        scsictl_error err;
        int rc = scsictl_import(t, n, &a, &ctl, &err);
        if (rc == SCSICTL_OK) {
            char *s;
            size_t m;
            f.fail_at = f.calls; /* the next allocation fails: save says so */
            CHECK_CODE(scsictl_save(ctl, &s, &m, &err), SCSICTL_E_NO_MEMORY);
            f.fail_at = -1;
            if (tu_check(scsictl_save(ctl, &s, &m, &err) == SCSICTL_OK, __FILE__, __LINE__,
                         "save")) {
                tu_check(m == n && memcmp(s, t, n) == 0, __FILE__, __LINE__, "same bytes");
                scsictl_info_free(ctl, s);
            }
            scsictl_free(ctl);
            break;
        }
        if (rc != SCSICTL_E_NO_MEMORY && other++ < 3)
            tu_check(false, __FILE__, __LINE__, "allocation %ld failing: import gave %s (%s)", k,
                     scsictl_code_name(rc), err.message);
    }
    CHECK_EQ(other, 0);
    CHECK(k > 5 && k < 10000);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* State file                                                                */
/* ------------------------------------------------------------------------ */

static char tmpdir[256];

static char *read_all(const char *path, size_t *n)
{
    char *buf = NULL;
    scsictl_error err;
    if (scsictl_read_file(path, NULL, &buf, n, &err) != SCSICTL_OK) return NULL;
    return buf;
}

/* The state file equals scsictl_save's output. */
static bool file_matches(scsictl *ctl, const char *path, const char *where)
{
    size_t n = 0, m = 0;
    char *f = read_all(path, &n);
    char *s = save_dup(ctl, &m);
    bool ok = f && s && n == m && memcmp(f, s, n) == 0;
    tu_check(ok, __FILE__, __LINE__, "%s: state file equals save\nfile:\n%s\nsave:\n%s", where,
             f ? f : "(unreadable)", s ? s : "(none)");
    free(f);
    free(s);
    return ok;
}

/* Whether a temporary file of the state file writer is left in dir. */
static bool tmp_left(const char *dir)
{
    DIR *d = opendir(dir);
    bool found = false;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        found |= strstr(e->d_name, ".tmp-") != NULL;
    if (d)
        closedir(d);
    return found;
}

/* Storage that fails: the state file's directory is moved aside and a
 * regular file takes its name, so the writer cannot create its temporary
 * file (ENOTDIR); the owner's lock stays held. storage_back undoes it. */
static void storage_fail(const char *dir)
{
    char away[320];
    snprintf(away, sizeof away, "%s.away", dir);
    CHECK(rename(dir, away) == 0);
    int fd = open(dir, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
}

static void storage_back(const char *dir)
{
    char away[320];
    snprintf(away, sizeof away, "%s.away", dir);
    CHECK(unlink(dir) == 0);
    CHECK(rename(away, dir) == 0);
}

/* A fresh directory under tmpdir for one test's state file. */
static void test_dir(char *dir, size_t size, const char *name)
{
    snprintf(dir, size, "%s/%s", tmpdir, name);
    CHECK(mkdir(dir, 0700) == 0);
}

static void test_state_file_mirrors(uint64_t seed)
{
    TEST("state file: equals save after every call; importable at every instant");
    char path[300];
    snprintf(path, sizeof path, "%s/state-%llu", tmpdir, (unsigned long long)seed);
    rng_state = seed;
    uint32_t C = 2, L = 3;
    world w;
    world_new(&w, C, L, seed & 1 ? SCSICTL_GUEST_WINDOWS : SCSICTL_GUEST_LINUX);
    scsictl_error err;
    CHECK_CODE(scsictl_set_state_file(w.ctl, path, &err), SCSICTL_OK);
    file_matches(w.ctl, path, "after set_state_file");
    int inflight_bad = 0, calls = 0;
    for (int i = 0; i < 150 && !too_many_failures(); i++) {
        action a = random_action(C, L, w.nids, 25);
        if (a.type == A_MAP || a.type == A_UNMAP) {
            /* Drive by hand to look at the file while each step is in flight. */
            scsictl_id id = action_id(&w, a.idx);
            scsictl_op op;
            int rc = tu_through(w.ctl, &op,
                                a.type == A_MAP ? scsictl_op_start_map(w.ctl, &op, &id, &err)
                                                : scsictl_op_start_unmap(w.ctl, &op, &id, &err),
                                &err);
            for (int j = 0; rc == SCSICTL_STEP && j < 16; j++) {
                size_t n = 0;
                char *f = read_all(path, &n);
                scsictl_error ierr;
                int irc = f ? import_text(f, n, NULL, &ierr) : SCSICTL_E_IO;
                if (irc != SCSICTL_OK && inflight_bad++ < 3)
                    tu_check(false, __FILE__, __LINE__,
                             "state file while %s is in flight does not import: %s\n%s",
                             scsictl_step_name(op.step.kind),
                             irc == SCSICTL_E_IO ? "unreadable" : ierr.message, f ? f : "");
                free(f);
                size_t sn;
                char *s;
                CHECK_CODE(scsictl_save(w.ctl, &s, &sn, &err), SCSICTL_E_BUSY);
                bool fail = (a.failmask >> j) & 1;
                rc = tu_through(w.ctl, &op, scsictl_op_report(w.ctl, &op, !fail, "no", &err),
                                &err);
            }
        } else {
            run_action(&w, &a);
        }
        calls++;
        char where[64];
        snprintf(where, sizeof where, "after action %d (type %d)", i, a.type);
        if (!file_matches(w.ctl, path, where)) break;
        CHECK(!tmp_left(tmpdir));
    }
    CHECK_EQ(inflight_bad, 0);
    /* close is recorded too */
    CHECK_CODE(scsictl_close(w.ctl, &err), SCSICTL_OK);
    file_matches(w.ctl, path, "after close");
    size_t n;
    char *f = read_all(path, &n);
    CHECK(f && strstr(f, " closed\n") != NULL);
    free(f);
    world_free(&w);
    unlink(path);
}

static void test_state_file_io(void)
{
    TEST("state file: unwritable path gives io and changes nothing");
    char dir[280], path[300];
    test_dir(dir, sizeof dir, "io");
    snprintf(path, sizeof path, "%s/state", dir);
    scsictl_error err;
    scsictl *ctl = tu_new(2, 2, SCSICTL_GUEST_LINUX);

    /* A path that cannot be written: set fails, nothing is set. */
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/state", tmpdir);
    CHECK_CODE(scsictl_set_state_file(ctl, nodir, &err), SCSICTL_E_IO);
    CHECK_EQ(err.code, SCSICTL_E_IO);
    CHECK_CONTAINS(err.message, "no/such/dir");
    CHECK_CODE(scsictl_set_state_file(ctl, "", &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_set_state_file(NULL, path, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_id a;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK); /* no state file: works */

    CHECK_CODE(scsictl_set_state_file(ctl, path, &err), SCSICTL_OK);
    file_matches(ctl, path, "set");

    char before[4096], after[4096];
    size_t n0 = 0, n1 = 0;
    char *f0 = read_all(path, &n0);
    tu_snapshot(ctl, before, sizeof before);
    storage_fail(dir);
    scsictl_id b;
    memset(&b, 0x5a, sizeof b);
    scsictl_id b0 = b;
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_E_IO);
    CHECK(memcmp(&b, &b0, sizeof b) == 0); /* id not written */
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &b), SCSICTL_E_IO);  /* joins: also undone */
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &b), SCSICTL_E_IO);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 1, NULL, &err), SCSICTL_E_IO);
    scsictl_disk_config rd = tu_disk("/root");
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 0, &rd, &err), SCSICTL_E_IO);
    CHECK_EQ(err.code, SCSICTL_E_IO);
    tu_snapshot(ctl, after, sizeof after);
    CHECK_STR(after, before);
    /* A second owner is refused, failing storage or not. */
    scsictl *other = tu_new(2, 2, SCSICTL_GUEST_LINUX);
    storage_back(dir);
    CHECK_CODE(scsictl_set_state_file(other, path, &err), SCSICTL_E_BUSY);
    CHECK_CONTAINS(err.message, "in use by another controller");
    scsictl_free(other);
    char *f1 = read_all(path, &n1);
    CHECK(f0 && f1 && n0 == n1 && memcmp(f0, f1, n0) == 0);
    free(f1);
    CHECK(!tmp_left(dir));
    storage_fail(dir);

    /* A hot-add that cannot first be recorded as in flight is not issued:
     * IO, no callback, nothing changes; the write is retried next time. */
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_op op;
    int rc = tu_drive(ctl, r, true, &a, &op, &err);
    CHECK_CODE(rc, SCSICTL_E_IO);
    CHECK_CONTAINS(err.message, "map_to_guest: state file: cannot create");
    CHECK_EQ(r->n, 0);
    scsictl_stats st;
    scsictl_get_stats(ctl, &st);
    CHECK(!st.busy);
    storage_back(dir);
    f1 = read_all(path, &n1);
    CHECK(f0 && f1 && n0 == n1 && memcmp(f0, f1, n0) == 0); /* still the old state */
    free(f1);
    free(f0);
    rc = tu_drive(ctl, r, true, &a, &op, &err);
    CHECK_CODE(rc, SCSICTL_DONE);
    file_matches(ctl, path, "after writing works again");
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 1, NULL, &err), SCSICTL_OK);
    file_matches(ctl, path, "pin");
    rec_check_balanced(r, false);

    /* Unmap with the file unwritable: IO; retried once writable, it finishes. */
    storage_fail(dir);
    rc = tu_drive(ctl, r, false, &a, &op, &err);
    CHECK(rc == SCSICTL_E_IO);
    storage_back(dir);
    for (int i = 0; i < 5 && rc != SCSICTL_DONE; i++) rc = tu_drive(ctl, r, false, &a, &op, &err);
    CHECK_CODE(rc, SCSICTL_DONE);
    file_matches(ctl, path, "after unmap");
    rec_check_balanced(r, true);
    CHECK_STATE(ctl, "1:1P");

    /* close when unwritable: IO; a retried close, once writable, records
     * the closed state in the file. */
    storage_fail(dir);
    CHECK_CODE(scsictl_close(ctl, &err), SCSICTL_E_IO);
    storage_back(dir);
    CHECK_CODE(scsictl_close(ctl, &err), SCSICTL_OK);
    file_matches(ctl, path, "retried close");
    CHECK(!tmp_left(dir));
    free(r);
    scsictl_free(ctl);
}

/* Regressions: a state file write failing in the middle of an unmap. */
static void test_state_file_release_io(void)
{
    TEST("state file: a write failing mid-unmap keeps the id valid and the process alive");
    char dir[280], path[300];
    test_dir(dir, sizeof dir, "release");
    snprintf(path, sizeof path, "%s/state", dir);
    scsictl_error err;
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    CHECK_CODE(scsictl_set_state_file(ctl, path, &err), SCSICTL_OK);
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_op op;
    scsictl_id a, b;
    CHECK_CODE(tu_reserve(ctl, "/d", 1, &a), SCSICTL_OK);
    CHECK_CODE(tu_drive(ctl, r, true, &a, &op, &err), SCSICTL_DONE);

    /* The unmount succeeds; the write made as the eject is issued fails:
     * the eject is taken back with the partition already released. A map
     * of the id then met a claim without a partition and crashed (NULL
     * mount); it is a pending release now. */
    CHECK_CODE(tu_through(ctl, &op, scsictl_op_start_unmap(ctl, &op, &a, &err), &err),
               SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_UNMOUNT);
    rec_call call;
    rec_call_from_step(r->guest, &op.step, &call);
    char msg[256] = "";
    CHECK_EQ(rec_record(r, &call, msg, sizeof msg), 0);  /* the unmount, done */
    storage_fail(dir);
    CHECK_CODE(tu_through(ctl, &op, scsictl_op_report(ctl, &op, true, NULL, &err), &err),
               SCSICTL_E_IO);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_E_BUSY);
    CHECK_CONTAINS(err.message, "pending release");
    storage_back(dir);
    int rc = tu_drive(ctl, r, false, &a, &op, &err);
    CHECK_CODE(rc, SCSICTL_DONE);
    file_matches(ctl, path, "after the release finished");

    /* Two claims on one partition: the second unmap only drops its claim
     * (no step). With the write failing it used to return io with the claim
     * gone from memory (a retry said not_found) but kept in the file. */
    CHECK_CODE(tu_reserve(ctl, "/d", 1, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/d", 1, &b), SCSICTL_OK);
    CHECK_CODE(tu_drive(ctl, r, true, &a, &op, &err), SCSICTL_DONE);
    storage_fail(dir);
    CHECK_CODE(tu_drive(ctl, r, false, &b, &op, &err), SCSICTL_E_IO);
    CHECK_CODE(tu_drive(ctl, r, false, &b, &op, &err), SCSICTL_E_IO); /* still held */
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &b, &err), SCSICTL_E_BUSY);
    storage_back(dir);
    CHECK_CODE(tu_drive(ctl, r, false, &b, &op, &err), SCSICTL_DONE);   /* finished */
    file_matches(ctl, path, "after the retried release");
    CHECK_CODE(tu_drive(ctl, r, false, &b, &op, &err), SCSICTL_E_NOT_FOUND);

    /* The same, with a restart after a later write succeeded: that write
     * recorded the claim as released, and the id as "gone", so the
     * restarted controller still finishes the caller's retried unmap (it
     * said not_found before). */
    CHECK_CODE(tu_reserve(ctl, "/d", 1, &b), SCSICTL_OK);
    storage_fail(dir);
    CHECK_CODE(tu_drive(ctl, r, false, &b, &op, &err), SCSICTL_E_IO);
    storage_back(dir);
    scsictl_id c;
    CHECK_CODE(tu_reserve(ctl, "/e", 0, &c), SCSICTL_OK); /* a later write succeeds */
    file_matches(ctl, path, "a later write");
    size_t n = 0;
    char *f = read_all(path, &n);
    char bs[SCSICTL_ID_STRLEN + 1], line[64];
    scsictl_id_format(&b, bs);
    snprintf(line, sizeof line, "\ngone %s\n", bs);
    CHECK(f && strstr(f, line) != NULL);
    free(f);
    scsictl_free(ctl); /* a crash: no close */
    ctl = NULL;
    CHECK_CODE(scsictl_open(path, NULL, &ctl, &err), SCSICTL_OK);
    if (ctl) {
        CHECK_CODE(scsictl_op_start_map(ctl, &op, &b, &err), SCSICTL_E_BUSY);
        CHECK_CODE(tu_drive(ctl, r, false, &b, &op, &err), SCSICTL_DONE);
        file_matches(ctl, path, "the gone id's release finished after the restart");
        f = read_all(path, &n);
        CHECK(f && strstr(f, "\ngone ") == NULL);
        free(f);
        CHECK_CODE(tu_drive(ctl, r, false, &b, &op, &err), SCSICTL_E_NOT_FOUND);
        CHECK_CODE(tu_drive(ctl, r, false, &c, &op, &err), SCSICTL_DONE);
        CHECK_CODE(tu_drive(ctl, r, false, &a, &op, &err), SCSICTL_DONE);
    }
    rec_check_balanced(r, true);
    free(r);
    scsictl_free(ctl);
}

/* The path a state file is given by: a symbolic link keeps its link (its
 * target is written), a dangling one is refused, a relative path is
 * resolved when the file is set; a second owner, even through the link,
 * is refused. */
static void test_state_file_paths(void)
{
    TEST("state file: symbolic links, relative paths, one owner");
    char dir[280], target[300], link_path[300], dangling[300];
    test_dir(dir, sizeof dir, "paths");
    snprintf(target, sizeof target, "%s/target", dir);
    snprintf(link_path, sizeof link_path, "%s/link", dir);
    snprintf(dangling, sizeof dangling, "%s/dangling", dir);
    FILE *f = fopen(target, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    CHECK(symlink("target", link_path) == 0);
    CHECK(symlink("missing", dangling) == 0);
    scsictl_error err;
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    CHECK_CODE(scsictl_set_state_file(ctl, dangling, &err), SCSICTL_E_IO);
    CHECK_CONTAINS(err.message, "symbolic link to a missing file");
    CHECK_CODE(scsictl_set_state_file(ctl, link_path, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_set_state_file(ctl, link_path, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_id a;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    struct stat st;
    CHECK(lstat(link_path, &st) == 0 && S_ISLNK(st.st_mode)); /* still a link */
    file_matches(ctl, target, "the link's target is written");
    scsictl *other = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    CHECK_CODE(scsictl_set_state_file(other, target, &err), SCSICTL_E_BUSY);
    scsictl *opened = NULL;
    CHECK_CODE(scsictl_open(link_path, NULL, &opened, &err), SCSICTL_E_BUSY);
    CHECK(opened == NULL);
    scsictl_free(ctl);
    CHECK_CODE(scsictl_open(link_path, NULL, &opened, &err), SCSICTL_OK);
    scsictl_free(opened);

    /* relative: resolved against the working directory of the set call */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(dir) == 0);
    CHECK_CODE(scsictl_set_state_file(other, "relative", &err), SCSICTL_OK);
    CHECK(chdir(tmpdir) == 0);
    CHECK_CODE(tu_reserve(other, "/b", 0, &a), SCSICTL_OK);
    char rel[300];
    snprintf(rel, sizeof rel, "%s/relative", dir);
    file_matches(other, rel, "a relative path stays where it was resolved");
    CHECK(access("relative", F_OK) != 0); /* nothing in the new directory */
    CHECK(chdir(cwd) == 0);
    CHECK(!tmp_left(dir));
    scsictl_free(other);
}

/* A driver that writes the state file itself (the Lua module on its event
 * loop): the calls return PERSIST, and scsictl_write_begin / _end carry the
 * writes; a failed write undoes the reserve it carried. The data written
 * here is what scsictl_write_begin handed out, written with write_file. */
static bool write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(data, 1, len, f) == len;
    if (f)
        ok = fclose(f) == 0 && ok;
    return ok;
}

static void test_deferred_writes(void)
{
    TEST("state file: deferred writes (the driver writes; a failed write undoes its reserve)");
    char dir[280], path[300];
    test_dir(dir, sizeof dir, "deferred");
    snprintf(path, sizeof path, "%s/state", dir);
    scsictl_error err;
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    CHECK_CODE(scsictl_set_write_deferred(ctl, true, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK(scsictl_state_file_target(ctl) == NULL);
    scsictl_write w;
    CHECK_CODE(scsictl_write_begin(ctl, 1, false, &w, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_set_state_file(ctl, path, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_set_write_deferred(ctl, true, &err), SCSICTL_OK);
    CHECK_STR(scsictl_state_file_target(ctl), path);

    /* a reserve whose write succeeds */
    scsictl_id a;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_PERSIST);
    uint64_t seq = scsictl_change_seq(ctl);
    CHECK_CODE(scsictl_write_begin(ctl, seq, true, &w, &err), SCSICTL_STEP);
    CHECK_EQ(w.seq, seq);
    scsictl_write w2;
    CHECK_CODE(scsictl_write_begin(ctl, seq, true, &w2, &err), SCSICTL_E_BUSY); /* one at a time */
    CHECK(write_file(path, w.data, w.len));
    scsictl_write_end(ctl, &w, true);
    CHECK_CODE(scsictl_write_begin(ctl, seq, true, &w, &err), SCSICTL_DONE);
    file_matches(ctl, path, "after the deferred write");
    scsictl_stats st;
    scsictl_get_stats(ctl, &st);
    CHECK_EQ(st.reservations, 1);

    /* a reserve whose write fails is undone; the caller learns io */
    scsictl_id b;
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_PERSIST);
    seq = scsictl_change_seq(ctl);
    CHECK_CODE(scsictl_write_begin(ctl, seq, true, &w, &err), SCSICTL_STEP);
    scsictl_write_end(ctl, &w, false);
    CHECK_CODE(scsictl_write_begin(ctl, seq, true, &w, &err), SCSICTL_E_IO);
    scsictl_get_stats(ctl, &st);
    CHECK_EQ(st.reservations, 1);
    CHECK_CODE(scsictl_write_begin(ctl, scsictl_change_seq(ctl), false, &w, &err),
               SCSICTL_E_IO); /* that change's write failed; a later change writes anew */

    /* an op hands its write to the driver too; persisted(false) takes the
     * step back */
    scsictl_op op;
    CHECK_CODE(scsictl_op_persisted(ctl, &op, true, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_PERSIST);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl *other = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    CHECK_CODE(scsictl_op_persisted(other, &op, true, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_free(other);
    CHECK_CODE(scsictl_op_persisted(ctl, &op, false, "disk full", &err), SCSICTL_E_IO);
    CHECK_CONTAINS(err.message, "disk full");
    scsictl_get_stats(ctl, &st);
    CHECK(!st.busy);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_PERSIST);
    CHECK_CODE(scsictl_persist(ctl, op.persist_seq, &err), SCSICTL_PERSIST); /* deferred */
    CHECK_CODE(scsictl_write_begin(ctl, op.persist_seq, false, &w, &err), SCSICTL_STEP);
    CHECK(write_file(path, w.data, w.len));
    scsictl_write_end(ctl, &w, true);
    CHECK_CODE(scsictl_op_persisted(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_ADD_SCSI_DISK);
    CHECK_CODE(scsictl_op_report(ctl, &op, false, "no", &err), SCSICTL_PERSIST);
    CHECK_CODE(scsictl_op_persisted(ctl, &op, false, "still full", &err), SCSICTL_E_BACKEND);
    CHECK_CONTAINS(err.message, "add_scsi_disk failed"); /* the step's failure stays the answer */
    CHECK_CODE(scsictl_persist(NULL, 1, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_set_write_deferred(ctl, false, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_close(ctl, &err), SCSICTL_OK); /* written in place again */
    file_matches(ctl, path, "after close");
    scsictl_free(ctl);
}

static void test_open(void)
{
    TEST("state file: scsictl_open restores and keeps writing");
    char path[300];
    snprintf(path, sizeof path, "%s/open-state", tmpdir);
    scsictl_error err;
    rng_state = 99;
    world w;
    world_new(&w, 2, 4, SCSICTL_GUEST_LINUX);
    CHECK_CODE(scsictl_set_state_file(w.ctl, path, &err), SCSICTL_OK);
    for (int i = 0; i < 60; i++) {
        action a = random_action(2, 4, w.nids, 20);
        if (a.type == A_CLOSE) continue;
        run_action(&w, &a);
    }
    size_t n;
    char *s = save_dup(w.ctl, &n);
    scsictl *b = NULL;
    /* One owner: opening a file another controller writes is refused. */
    CHECK_CODE(scsictl_open(path, NULL, &b, &err), SCSICTL_E_BUSY);
    CHECK_CONTAINS(err.message, "in use by another controller");
    CHECK(b == NULL);
    world_free(&w); /* gives the file up */
    int rc = scsictl_open(path, NULL, &b, &err);
    if (tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "open: %s", rc ? err.message : "")) {
        size_t m;
        char *s2 = save_dup(b, &m);
        CHECK(s && s2 && n == m && memcmp(s, s2, n) == 0);
        free(s2);
        scsictl_id id;
        CHECK_CODE(tu_reserve(b, "/new-after-open", 0, &id), SCSICTL_OK);
        file_matches(b, path, "opened controller keeps writing");
        scsictl_free(b);
    }
    free(s);

    char p2[300];
    snprintf(p2, sizeof p2, "%s/does-not-exist", tmpdir);
    b = NULL;
    CHECK_CODE(scsictl_open(p2, NULL, &b, &err), SCSICTL_E_IO);
    CHECK(b == NULL);
    CHECK_CODE(scsictl_open(tmpdir, NULL, &b, &err), SCSICTL_E_IO); /* a directory */
    FILE *f = fopen(p2, "w");
    fputs("scsictl-snapshot 2\ngeometry 1 1 linux open\nend 3 0000000000000000\n", f);
    fclose(f);
    CHECK_CODE(scsictl_open(p2, NULL, &b, &err), SCSICTL_E_INVALID_SNAPSHOT);
    f = fopen(p2, "w");
    fclose(f);
    CHECK_CODE(scsictl_open(p2, NULL, &b, &err), SCSICTL_E_INVALID_SNAPSHOT); /* empty */
    CHECK(b == NULL);
    CHECK_CODE(scsictl_open(NULL, NULL, &b, &err), SCSICTL_E_INVALID_ARGUMENT);
    unlink(p2);
    unlink(path);

    /* Argument checks of save / import. */
    scsictl *c = tu_new(1, 1, SCSICTL_GUEST_LINUX);
    char *out;
    size_t len;
    CHECK_CODE(scsictl_save(NULL, &out, &len, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_save(c, NULL, &len, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_import(NULL, 0, NULL, &b, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_import("x", 1, NULL, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_free(c);
}

/* A 1 x 4 Linux controller with claims a on "/a" and b on "/b" (partition
 * b_part). */
static scsictl *two_claims(scsictl_id *a, scsictl_id *b, uint64_t b_part)
{
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    tu_reserve(ctl, "/a", 0, a);
    tu_reserve(ctl, "/b", b_part, b);
    return ctl;
}

static void test_save_busy(void)
{
    TEST("save: busy while a step is in flight, no step is issued by save");
    scsictl_id a, b;
    scsictl *ctl = two_claims(&a, &b, 0);
    size_t n0;
    char *s0 = save_dup(ctl, &n0);
    scsictl_op op;
    scsictl_error err;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_STEP);
    char *s;
    size_t n;
    CHECK_CODE(scsictl_save(ctl, &s, &n, &err), SCSICTL_E_BUSY);
    CHECK_EQ(err.code, SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_report(ctl, &op, false, "nope", &err), SCSICTL_E_BACKEND);
    size_t n1;
    char *s1 = save_dup(ctl, &n1);
    CHECK(s0 && s1 && n0 == n1 && memcmp(s0, s1, n0) == 0); /* failed map: same state */
    free(s0);
    free(s1);
    scsictl_free(ctl);
}

static void test_copy(void)
{
    TEST("copy: a dry-run controller in the same state, also with a step in flight");
    scsictl_id a, b;
    scsictl *ctl = two_claims(&a, &b, 1);
    scsictl_op op, dry;
    scsictl_error err;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_STEP);
    char before[4096], after[4096];
    tu_snapshot(ctl, before, sizeof before);
    scsictl_reservation_info *ia = NULL, *ib = NULL;
    CHECK_CODE(scsictl_get_reservation(ctl, &a, &ia, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_get_reservation(ctl, &b, &ib, &err), SCSICTL_OK);
    CHECK(ia && ia->busy && ib && !ib->busy);
    scsictl_info_free(ctl, ia);
    scsictl_info_free(ctl, ib);
    scsictl *copy = NULL;
    CHECK_CODE(scsictl_copy(ctl, NULL, &copy, &err), SCSICTL_OK);
    /* b's map runs on the copy as it would on ctl: add, then mount */
    CHECK_CODE(scsictl_op_start_map(copy, &dry, &b, &err), SCSICTL_STEP);
    CHECK_EQ(dry.step.kind, SCSICTL_STEP_ADD_SCSI_DISK);
    CHECK_EQ(dry.step.lun, 1u);
    CHECK_CODE(scsictl_op_report(copy, &dry, true, NULL, &err), SCSICTL_STEP);
    CHECK_EQ(dry.step.kind, SCSICTL_STEP_LINUX_MOUNT);
    CHECK_EQ(dry.step.mount->partition, 1u);
    CHECK_CODE(scsictl_op_report(copy, &dry, true, NULL, &err), SCSICTL_DONE);
    CHECK_STR(dry.guest_path, "/run/mounts/scsi/0_1_1");
    scsictl_free(copy);
    tu_snapshot(ctl, after, sizeof after);
    CHECK_STR(after, before); /* the copy changed nothing */
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_CODE(scsictl_copy(NULL, NULL, &copy, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_copy(ctl, NULL, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_free(ctl);
}

/* ------------------------------------------------------------------------ */
/* Regressions found by the fuzzer                                           */
/* ------------------------------------------------------------------------ */

/* Each input is imported in a child process, so that a sanitizer abort
 * shows up as one failed check (and the summary line still prints). The
 * inputs carry a correct checksum, so they reach the parser. */
static void test_fuzz_regressions(void)
{
    TEST("regressions from fuzz_import (each in a child process)");
    static const struct { const char *what, *body; } inputs[] = {
        /* fuzz_import, crash-ubsan-escape-shift in core/fuzz/corpus_import:
         * "%pi" in a string: hexv() gives -1 and `hi << 4` shifts a
         * negative value (snapshot.c tok_text) before hi < 0 is checked. */
        { "escape with a non-hex first digit", HDR "pin 0 0 0 VirtualDisk - =/img%pin 0\n" },
        { "escape with a non-hex second digit", HDR "pin 0 0 0 VirtualDisk - =/img%2G 0\n" },
        { "escape of two non-hex digits", HDR "pin 0 0 0 VirtualDisk - =/img%%% 0\n" },
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        size_t n;
        char *t = with_end(inputs[i].body, &n);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            int rc = scsictl_import(t, n, NULL, &(scsictl *){ NULL }, NULL);
            _exit(rc == SCSICTL_E_INVALID_SNAPSHOT ? 0 : 10);
        }
        int status = 0;
        bool ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0;
        tu_check(ok, __FILE__, __LINE__,
                 "%s: import must refuse it cleanly (child %s %d; a sanitizer report is above)",
                 inputs[i].what, WIFSIGNALED(status) ? "killed by signal" : "exit status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        free(t);
    }
}

/* Disk options: part of the disk line from version 2 on; version 1 (no
 * options) is still read and saved again as version 2. */
#define VH "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define VH_UP "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_disk_options_format(void)
{
    TEST("snapshot: disk options and verity (version 2) and version 1 input");
    expect_ok("read-only partitions with verity",
              HDR DISK_A "part 0 1 0 mounted 2 1 0 0 0 0 =ext4 =" VH " 0 0\n"
                  "part 0 1 1 reserved 1 1 0 0 0 0 = =" VH " 1048576 0\n"
                  RES_A0 "res " ID3 " 0 1 1 1 0\n", true);
    expect_ok("disk and pin with options",
              HDR "pin 0 0 0 VirtualDisk - =/p 1 =cache%3Dnone\n"
                  "disk 0 0 attached 0 0 VirtualDisk - =/p 1 =cache%3Dnone\n"
                  "disk 0 1 attached 0 0 VirtualDisk - =/a 3 =a-b%3Dx =bps%3D1048576 =serial%3D\n"
                  "part 0 0 0 reserved 1 0 0 0 0 0 = - 0 0\n" PART_A0
                  "res " ID3 " 0 0 0 1 0\n" RES_A0, true);
    static const struct { const char *what, *body; } bad[] = {
        { "options out of order", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 2 =x%3D1 =b%3D2\n"
                                  PART_A0 RES_A0 },
        { "option key twice", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 2 =b%3D1 =b%3D2\n"
                              PART_A0 RES_A0 },
        { "option without '='", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 1 =cache\n"
                                PART_A0 RES_A0 },
        { "option with an empty key", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 1 =%3Dx\n"
                                      PART_A0 RES_A0 },
        { "absent option", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 1 -\n" PART_A0 RES_A0 },
        { "fewer options than counted",
          HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 2 =b%3D1\n" PART_A0 RES_A0 },
        { "more options than counted",
          HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 1 =b%3D1 =c%3D1\n" PART_A0 RES_A0 },
        { "more than 64 options", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a 65\n"
                                  PART_A0 RES_A0 },
        { "no option count (version 2)", HDR "disk 0 1 attached 0 0 VirtualDisk - =/a\n"
                                         PART_A0 RES_A0 },
        { "pin and its disk with other options",
          HDR "pin 0 1 0 VirtualDisk - =/a 1 =cache%3Dnone\n" DISK_A PART_A0 RES_A0 },
        { "verity root hash too short", HDR DISK_A "part 0 1 0 mounted 2 1 0 0 0 0 = =abc 0 0\n"
                                        RES_A0 },
        { "verity root hash in capitals", HDR DISK_A "part 0 1 0 mounted 2 1 0 0 0 0 = =" VH_UP
                                          " 0 0\n" RES_A0 },
        { "verity on a writable mount", HDR DISK_A "part 0 1 0 mounted 2 0 0 0 0 0 = =" VH
                                        " 0 0\n" RES_A0 },
        { "verity on an encrypted mount", HDR DISK_A "part 0 1 0 mounted 2 1 1 0 0 0 = =" VH
                                          " 0 0\n" RES_A0 },
        { "verity hash offset not a multiple of 512",
          HDR DISK_A "part 0 1 0 mounted 2 1 0 0 0 0 = =" VH " 1000 0\n" RES_A0 },
        { "verity hash offset without a root hash",
          HDR DISK_A "part 0 1 0 mounted 2 1 0 0 0 0 = - 4096 0\n" RES_A0 },
        { "no verity fields (version 2)", HDR DISK_A "part 0 1 0 mounted 2 0 0 0 0 0 = 0\n" RES_A0 },
        { "an option count in version 1",
          "scsictl-snapshot 1\ngeometry 2 4 linux open\n"
          "disk 0 1 attached 0 0 VirtualDisk - =/a 0\n" PART_A0 RES_A0 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_invalid(bad[i].what, bad[i].body);

    /* Version 1 is read, and saved as version 2. */
    size_t n, m;
    char *v1 = with_end("scsictl-snapshot 1\ngeometry 2 4 linux open\n"
                        "pin 0 0 0 VirtualDisk - =/root\n"
                        "disk 0 1 attached 0 0 VirtualDisk - =/a\n"
                        "part 0 1 0 mounted 2 0 0 0 0 0 = 0\n" RES_A0, &n);
    char *v2 = with_end(HDR "pin 0 0 0 VirtualDisk - =/root 0\n" DISK_A PART_A0 RES_A0, &m);
    scsictl *ctl = NULL;
    scsictl_error err;
    int rc = import_text(v1, n, &ctl, &err);
    CHECK_CODE(rc, SCSICTL_OK);
    if (rc == SCSICTL_OK) {
        size_t k;
        char *s2 = save_dup(ctl, &k);
        CHECK(s2 && k == m && memcmp(s2, v2, m) == 0);
        free(s2);
        scsictl_free(ctl);
    }
    free(v1);
    free(v2);

    /* Sharing: the same path with other options is another disk config. */
    ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    const char *none[] = { "cache=none" }, *wb[] = { "cache=writeback" };
    const char *unsorted[] = { "z=1", "a=1" }, *dup[] = { "a=1", "a=2" }, *nokey[] = { "=1" };
    scsictl_disk_config d = tu_disk("/opt");
    scsictl_mount_config mc = tu_mount(0);
    scsictl_id id;
    d.options = none;
    d.n_options = 1;
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_OK);
    d.options = wb;
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_E_CONFIG_MISMATCH);
    d.n_options = 0;
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_E_CONFIG_MISMATCH);
    d.host_path = "/other";
    d.options = unsorted;
    d.n_options = 2;
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "sorted by key");
    d.options = dup;
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    d.options = nokey;
    d.n_options = 1;
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    d.options = NULL;
    CHECK_CODE(scsictl_reserve(ctl, &d, &mc, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    /* verity is part of the mount's identity; a bad one is refused */
    scsictl_disk_config lay = tu_disk("/layer");
    scsictl_mount_config v = tu_mount(0);
    v.read_only = true;
    v.verity_root_hash = VH;
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_OK);
    v.verity_hash_offset = 4096;
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_E_CONFIG_MISMATCH);
    v.verity_hash_offset = 0;
    v.verity_root_hash = "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_E_CONFIG_MISMATCH);
    v.verity_root_hash = NULL;
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_E_CONFIG_MISMATCH);
    v.verity_root_hash = VH_UP;
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "mount verity needs");
    v.verity_root_hash = VH;
    v.read_only = false;
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    v.read_only = true;
    v.verity_hash_offset = 100;
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    v.verity_root_hash = NULL;
    CHECK_CODE(scsictl_reserve(ctl, &lay, &v, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    /* slots() lists them */
    scsictl_slot_info *slots = NULL;
    size_t ns = 0;
    CHECK_CODE(scsictl_list_slots(ctl, &slots, &ns, &err), SCSICTL_OK);
    CHECK(ns == 2 && slots && slots[0].n_options == 1 &&
          strcmp(slots[0].options[0], "cache=none") == 0);
    scsictl_info_free(ctl, slots);
    scsictl_free(ctl);
}

/* A remap that renames every path by a table of pairs (ud: NULL-ended
 * array of from, to). */
static const char *remap_pairs(void *ud, const char *path)
{
    const char *const *pairs = ud;
    for (size_t i = 0; pairs[i]; i += 2)
        if (strcmp(pairs[i], path) == 0)
            return pairs[i + 1];
    return NULL;
}

static void test_remap(void)
{
    TEST("snapshot: host paths remapped on import and open");
    size_t n;
    char *t = with_end(HDR "pin 0 0 0 VirtualDisk - =/old/root 0\n"
                           "disk 0 0 attached 0 0 VirtualDisk - =/old/root 0\n" DISK_A
                           "disk 0 2 reserved 0 0 VirtualDisk - =/b 0\n"
                           "part 0 0 0 reserved 1 0 0 0 0 0 = - 0 0\n" PART_A0
                           "part 0 2 0 reserved 1 0 0 0 0 0 = - 0 0\n"
                           "res " ID3 " 0 0 0 1 0\n" RES_A0
                           "res 44444444-4444-4444-8444-444444444444 0 2 0 1 0\n", &n);
    scsictl_error err;
    scsictl *ctl = NULL;
    /* a swap, and the pin renamed with its disk */
    static const char *const swap[] = { "/a", "/b", "/b", "/a", "/old/root", "/new/root", NULL };
    scsictl_remap r = { remap_pairs, (void *)swap };
    int rc = scsictl_import_remap(t, n, NULL, &r, &ctl, &err);
    CHECK_CODE(rc, SCSICTL_OK);
    if (rc == SCSICTL_OK) {
        size_t k;
        char *s = save_dup(ctl, &k);
        CHECK(s && strstr(s, "pin 0 0 0 VirtualDisk - =/new/root 0\n") &&
              strstr(s, "disk 0 0 attached 0 0 VirtualDisk - =/new/root 0\n") &&
              strstr(s, "disk 0 1 attached 0 0 VirtualDisk - =/b 0\n") &&
              strstr(s, "disk 0 2 reserved 0 0 VirtualDisk - =/a 0\n"));
        free(s);
        scsictl_id id;
        CHECK_CODE(tu_reserve(ctl, "/new/root", 0, &id), SCSICTL_OK); /* shares slot 0 0 */
        scsictl_free(ctl);
    }
    /* two disks made one, either way round; a disk onto another slot's pin */
    static const char *const clash1[] = { "/a", "/b", NULL };
    static const char *const clash2[] = { "/b", "/a", NULL };
    static const char *const clash3[] = { "/a", "/new", "/b", "/new", NULL };
    static const char *const onto_pin[] = { "/a", "/old/root", NULL };
    static const char *const empty[] = { "/a", "", NULL };
    const char *const *bad[] = { clash1, clash2, clash3, onto_pin };
    for (size_t i = 0; i < 4; i++) {
        r.ud = (void *)bad[i];
        ctl = NULL;
        CHECK_CODE(scsictl_import_remap(t, n, NULL, &r, &ctl, &err), SCSICTL_E_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.message, "makes two disks one");
        CHECK(ctl == NULL);
    }
    r.ud = (void *)empty;
    CHECK_CODE(scsictl_import_remap(t, n, NULL, &r, &ctl, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "empty path");
    scsictl_remap nofn = { NULL, NULL };
    CHECK_CODE(scsictl_import_remap(t, n, NULL, &nofn, &ctl, &err), SCSICTL_E_INVALID_ARGUMENT);
    /* a bad snapshot is still a bad snapshot */
    static const char *const none[] = { NULL };
    r.ud = (void *)none;
    size_t n2;
    char *t2 = with_end(HDR DISK_A "disk 0 2 attached 0 0 VirtualDisk - =/a 0\n", &n2);
    CHECK_CODE(scsictl_import_remap(t2, n2, NULL, &r, &ctl, &err), SCSICTL_E_INVALID_SNAPSHOT);
    free(t2);

    /* open: the remapped state is written before it returns */
    char path[300];
    snprintf(path, sizeof path, "%s/remap-state", tmpdir);
    FILE *f = fopen(path, "w");
    if (!f || fwrite(t, 1, n, f) != n) exit(2);
    fclose(f);
    r.ud = (void *)swap;
    rc = scsictl_open_remap(path, NULL, &r, &ctl, &err);
    CHECK_CODE(rc, SCSICTL_OK);
    if (rc == SCSICTL_OK) {
        file_matches(ctl, path, "remapped state written at open");
        scsictl_free(ctl);
    }
    r.ud = (void *)clash1;
    CHECK_CODE(scsictl_open_remap(path, NULL, &r, &ctl, &err), SCSICTL_E_INVALID_ARGUMENT);
    free(t);
}

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/scsictl-snap-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    uint64_t one = 0;
    const char *env = getenv("SCSICTL_SEED");
    if (argc > 1) one = strtoull(argv[1], NULL, 10);
    else if (env) one = strtoull(env, NULL, 10);

    test_handmade();
    test_handmade_behaviour();
    test_disk_options_format();
    test_truncation_and_flips();
    test_import_nomem();
    test_save_busy();
    test_copy();
    test_fuzz_regressions();
    if (one) {
        test_roundtrip(one);
        test_p10(one);
    } else {
        for (uint64_t s = 1; s <= 40 && !too_many_failures(); s++) test_roundtrip(s);
        for (uint64_t s = 1; s <= 300 && !too_many_failures(); s++) test_p10(s);
    }
    test_state_file_io();
    test_state_file_release_io();
    test_state_file_paths();
    test_deferred_writes();
    test_open();
    test_remap();
    for (uint64_t s = 1; s <= 6; s++) test_state_file_mirrors(s);
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf '%s'", tmpdir); /* state, lock files, test dirs */
    if (system(rm) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return tu_finish();
}
