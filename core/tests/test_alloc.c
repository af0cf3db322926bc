/*
 * test_alloc.c — allocation-failure injection through
 * scsictl_options.allocator.
 *
 * A counting allocator fails the Nth allocation (malloc or realloc) made
 * while a call under test runs. For every N over a scenario (new, pins,
 * reserves, maps, unmaps including a failed and retried release, the
 * introspection functions, close) it checks that the call that met the
 * failure returns SCSICTL_E_NO_MEMORY and leaves the state unchanged
 * (stats, slots and reservations identical to before the call), that the
 * call then succeeds when repeated, and that freeing the controller leaves
 * no allocation alive. N grows until a run meets no injected failure.
 */
#include "test_util.h"

typedef struct counter {
    bool armed;       /* count (and maybe fail) allocations */
    long count;       /* allocations counted while armed */
    long fail_at;     /* 0: never */
    long injected;    /* failures handed out */
    long live;        /* blocks alive */
    long realloc0;    /* realloc_fn called with size 0 (forbidden) */
    long foreign;     /* free_fn on NULL is fine; counts nothing */
} counter;

static bool should_fail(counter *c)
{
    if (!c->armed) return false;
    c->count++;
    if (c->fail_at && c->count == c->fail_at) {
        c->injected++;
        return true;
    }
    return false;
}

static void *a_malloc(void *ud, size_t n)
{
    counter *c = ud;
    if (should_fail(c)) return NULL;
    void *p = malloc(n ? n : 1);
    if (p) c->live++;
    return p;
}

static void *a_realloc(void *ud, void *ptr, size_t n)
{
    counter *c = ud;
    if (n == 0) c->realloc0++;
    if (should_fail(c)) return NULL;
    void *p = realloc(ptr, n ? n : 1);
    if (p && !ptr) c->live++;
    return p;
}

static void a_free(void *ud, void *ptr)
{
    counter *c = ud;
    if (ptr) c->live--;
    free(ptr);
}

typedef struct ctx {
    scsictl *ctl;
    counter *a;
    scsictl_id ids[8];
    long n_nomem;      /* NO_MEMORY results seen in this run */
} ctx;

/* Snapshot with the busy markers and pending flags removed (an op that
 * fails with NO_MEMORY at a report is over, so its disk is no longer
 * busy, and a release that failed is pending either way). */
static void snap(ctx *c, char *out, size_t size, bool loose)
{
    bool armed = c->a->armed;
    c->a->armed = false;
    tu_snapshot(c->ctl, out, size);
    c->a->armed = armed;
    if (!loose) return;
    char *w = out;
    for (char *r = out; *r; r++) {
        if (strncmp(r, " busy", 5) == 0) { r += 4; continue; }
        if (*r == 'B' || *r == '!') continue;
        *w++ = *r;
    }
    *w = '\0';
}

static void check_same(ctx *c, const char *before, bool loose, const char *what)
{
    char after[4096];
    snap(c, after, sizeof after, loose);
    tu_check(strcmp(before, after) == 0, __FILE__, __LINE__,
             "%s: NO_MEMORY changed the state (fail_at %ld)\n  before %s\n  after  %s", what,
             c->a->fail_at, before, after);
}

static bool injected_since(ctx *c, long before) { return c->a->injected != before; }

/* One armed call: arm() notes the state and the failures injected so far
 * and arms the allocator; disarm() disarms it and, when the call answered
 * NO_MEMORY, checks that a failure was injected and that nothing changed,
 * and returns true (the caller repeats the call). */
typedef struct armed_call {
    char before[4096];
    bool loose;
    long injected;
} armed_call;

static void arm(ctx *c, armed_call *g, bool loose)
{
    snap(c, g->before, sizeof g->before, loose);
    g->loose = loose;
    g->injected = c->a->injected;
    c->a->armed = true;
}

static bool disarm(ctx *c, armed_call *g, int st, const char *what)
{
    c->a->armed = false;
    if (st != SCSICTL_E_NO_MEMORY)
        return false;
    c->n_nomem++;
    tu_check(injected_since(c, g->injected), __FILE__, __LINE__,
             "%s: NO_MEMORY without a failure", what);
    check_same(c, g->before, g->loose, what);
    return true;
}

/* Runs a map / unmap op; every start and report is armed. With
 * fail_first, the first step is reported as a backend failure. */
static int run_op(ctx *c, bool is_map, int idx, bool fail_first, const char *what)
{
    scsictl_op op;
    scsictl_error err;
    int restarts = 0;
    bool first = true;
    int st;
    armed_call g;
again:
    arm(c, &g, false);
    st = is_map ? scsictl_op_start_map(c->ctl, &op, &c->ids[idx], &err)
                : scsictl_op_start_unmap(c->ctl, &op, &c->ids[idx], &err);
    if (disarm(c, &g, st, what) && restarts++ < 3) goto again;
    while (st == SCSICTL_STEP) {
        bool ok = !(fail_first && first);
        first = false;
        arm(c, &g, true);
        st = scsictl_op_report(c->ctl, &op, ok, ok ? NULL : "injected backend failure", &err);
        if (disarm(c, &g, st, what)) {
            first = true;
            if (restarts++ < 3) goto again;
        }
    }
    return st;
}

/* Runs an armed call (by kind) and, if it met the injected failure, checks
 * NO_MEMORY + unchanged state and repeats it unarmed. */
enum { A_PIN, A_RES, A_MAP, A_UNMAP, A_UNMAP_FAIL, A_GET, A_LIST_R, A_LIST_S, A_CLOSE };

typedef struct action {
    int kind;
    int idx;
    const char *path;
    uint64_t part;   /* A_PIN: controller * 100 + lun */
    int fancy;
    int want;
} action;

/* A listing's answer: on success a non-empty list, then freed. */
static int check_listed(ctx *c, int rc, void *list, size_t n, const char *what)
{
    if (rc == SCSICTL_OK) {
        tu_check(n > 0 && list != NULL, __FILE__, __LINE__, "%s", what);
        scsictl_info_free(c->ctl, list);
    }
    return rc;
}

static int call_once(ctx *c, const action *a)
{
    scsictl_error err;
    static const char *const opts[] = {"noatime", "discard", "x-long-option-string"};
    switch (a->kind) {
    case A_PIN: {
        scsictl_disk_config d = tu_disk(a->path);
        return scsictl_reserve_for_rootfs(c->ctl, a->part / 100, a->part % 100,
                                          a->path ? &d : NULL, &err);
    }
    case A_RES: {
        scsictl_disk_config d = tu_disk(a->path);
        scsictl_mount_config m = tu_mount(a->part);
        if (a->fancy) {
            d.type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK;
            d.evd_type = "space-disk";
            m.options = opts;
            m.n_options = 3;
            m.filesystem = "ext4";
            m.encrypted = true;
        }
        return scsictl_reserve(c->ctl, &d, &m, &c->ids[a->idx], &err);
    }
    case A_GET: {
        scsictl_reservation_info *ri = NULL;
        int rc = scsictl_get_reservation(c->ctl, &c->ids[a->idx], &ri, &err);
        if (rc == SCSICTL_OK) {
            tu_check(ri != NULL && ri->host_path != NULL, __FILE__, __LINE__, "get_reservation");
            bool armed = c->a->armed;
            c->a->armed = false;
            scsictl_info_free(c->ctl, ri);
            c->a->armed = armed;
        }
        return rc;
    }
    case A_LIST_R: {
        scsictl_reservation_info *ri = NULL;
        size_t n = 0;
        int rc = scsictl_list_reservations(c->ctl, &ri, &n, &err);
        return check_listed(c, rc, ri, n, "list_reservations");
    }
    case A_LIST_S: {
        scsictl_slot_info *si = NULL;
        size_t n = 0;
        int rc = scsictl_list_slots(c->ctl, &si, &n, &err);
        return check_listed(c, rc, si, n, "list_slots");
    }
    case A_CLOSE:
        return scsictl_close(c->ctl, &err);
    default:
        return -100;
    }
}

static void do_action(ctx *c, const action *a, int step)
{
    char what[64];
    snprintf(what, sizeof what, "action %d", step);
    int rc;
    if (a->kind == A_MAP || a->kind == A_UNMAP || a->kind == A_UNMAP_FAIL) {
        rc = run_op(c, a->kind == A_MAP, a->idx, a->kind == A_UNMAP_FAIL, what);
    } else {
        armed_call g;
        arm(c, &g, false);
        rc = call_once(c, a);
        if (disarm(c, &g, rc, what))
            rc = call_once(c, a);
    }
    tu_check(rc == a->want, __FILE__, __LINE__, "%s (fail_at %ld): got %s, want %s", what,
             c->a->fail_at, scsictl_code_name(rc), scsictl_code_name(a->want));
}

static const action scenario[] = {
    {A_PIN, 0, "/root", 103, 0, SCSICTL_OK},
    {A_PIN, 0, NULL, 101, 0, SCSICTL_OK},
    {A_RES, 0, "/a", 0, 0, SCSICTL_OK},
    {A_RES, 1, "/a", 1, 0, SCSICTL_OK},
    {A_RES, 2, "/b", 2, 1, SCSICTL_OK},
    {A_RES, 3, "/root", 0, 0, SCSICTL_OK},
    {A_RES, 4, "/a", 0, 0, SCSICTL_OK},
    {A_RES, 5, "/c", 0, 1, SCSICTL_OK},
    {A_RES, 6, "/c", 0, 0, SCSICTL_E_CONFIG_MISMATCH},
    {A_MAP, 0, NULL, 0, 0, SCSICTL_DONE},
    {A_MAP, 1, NULL, 0, 0, SCSICTL_DONE},
    {A_MAP, 2, NULL, 0, 0, SCSICTL_DONE},
    {A_MAP, 3, NULL, 0, 0, SCSICTL_DONE},
    {A_MAP, 4, NULL, 0, 0, SCSICTL_DONE},
    {A_GET, 2, NULL, 0, 0, SCSICTL_OK},
    {A_LIST_R, 0, NULL, 0, 0, SCSICTL_OK},
    {A_LIST_S, 0, NULL, 0, 0, SCSICTL_OK},
    {A_UNMAP, 4, NULL, 0, 0, SCSICTL_DONE},
    {A_UNMAP, 5, NULL, 0, 0, SCSICTL_DONE},
    {A_UNMAP, 0, NULL, 0, 0, SCSICTL_DONE},
    {A_UNMAP_FAIL, 1, NULL, 0, 0, SCSICTL_E_BACKEND},
    {A_LIST_R, 0, NULL, 0, 0, SCSICTL_OK},
    {A_UNMAP, 1, NULL, 0, 0, SCSICTL_DONE},
    {A_RES, 6, "/d", 0, 0, SCSICTL_OK},
    {A_RES, 7, "/e", 5, 1, SCSICTL_OK},
    {A_LIST_S, 0, NULL, 0, 0, SCSICTL_OK},
    {A_UNMAP, 3, NULL, 0, 0, SCSICTL_DONE},
    {A_RES, 3, "/root", 1, 0, SCSICTL_OK},
    {A_GET, 3, NULL, 0, 0, SCSICTL_OK},
    {A_CLOSE, 0, NULL, 0, 0, SCSICTL_OK},
    {A_LIST_S, 0, NULL, 0, 0, SCSICTL_OK},
    {A_LIST_R, 0, NULL, 0, 0, SCSICTL_OK},
};

/* One run with the Nth armed allocation failing; returns the number of
 * injected failures (0 when N is past the scenario's allocations). */
static long run(scsictl_guest guest, long fail_at, long *allocations)
{
    counter a;
    memset(&a, 0, sizeof a);
    a.fail_at = fail_at;
    scsictl_allocator al = {a_malloc, a_realloc, a_free, &a};
    scsictl_options o;
    memset(&o, 0, sizeof o);
    o.controllers = 2;
    o.luns_per_controller = 4;
    o.guest = guest;
    o.allocator = &al;
    ctx c;
    memset(&c, 0, sizeof c);
    c.a = &a;
    scsictl_error err;
    scsictl *sentinel = (scsictl *)&c;
    c.ctl = sentinel;
    a.armed = true;
    int rc = scsictl_new(&o, &c.ctl, &err);
    a.armed = false;
    if (rc == SCSICTL_E_NO_MEMORY) {
        tu_check(c.ctl == sentinel, __FILE__, __LINE__, "scsictl_new: *out set on NO_MEMORY");
        tu_check(a.live == 0, __FILE__, __LINE__, "scsictl_new leaked %ld blocks on NO_MEMORY",
                 a.live);
        c.ctl = sentinel;
        rc = scsictl_new(&o, &c.ctl, &err);
    }
    if (!tu_check(rc == SCSICTL_OK && c.ctl != sentinel, __FILE__, __LINE__,
                  "scsictl_new (fail_at %ld): %s", fail_at, scsictl_code_name(rc)))
        return 0;
    /* the allocator is copied: changing our struct must not matter */
    al.malloc_fn = NULL;
    for (size_t i = 0; i < sizeof scenario / sizeof scenario[0]; i++) {
        do_action(&c, &scenario[i], (int)i);
        if (atomic_load(&tu_failed) > 60) break;
    }
    scsictl_free(c.ctl);
    tu_check(a.live == 0, __FILE__, __LINE__, "fail_at %ld: %ld blocks alive after scsictl_free",
             fail_at, a.live);
    tu_check(a.realloc0 == 0, __FILE__, __LINE__, "realloc_fn called with size 0");
    if (allocations) *allocations = a.count;
    return a.injected;
}

/* scsictl_free with a step in flight abandons it and frees everything. */
static void test_free_in_flight(void)
{
    TEST("scsictl_free with a step in flight frees everything");
    counter a;
    memset(&a, 0, sizeof a);
    scsictl_allocator al = {a_malloc, a_realloc, a_free, &a};
    scsictl_options o;
    memset(&o, 0, sizeof o);
    o.controllers = 1;
    o.luns_per_controller = 4;
    o.allocator = &al;
    scsictl *ctl = NULL;
    scsictl_error err;
    CHECK_CODE(scsictl_new(&o, &ctl, &err), SCSICTL_OK);
    scsictl_id x, y;
    CHECK_CODE(tu_reserve(ctl, "/x", 0, &x), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/y", 1, &y), SCSICTL_OK);
    scsictl_op op, op2;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &x, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_start_map(ctl, &op2, &y, &err), SCSICTL_STEP);
    CHECK(a.live > 0);
    scsictl_free(ctl);
    CHECK_EQ(a.live, 0);
}

int main(void)
{
    test_free_in_flight();
    static const scsictl_guest guests[] = {SCSICTL_GUEST_LINUX, SCSICTL_GUEST_WINDOWS};
    for (int g = 0; g < 2; g++) {
        TEST(g ? "allocation failures: windows" : "allocation failures: linux");
        long total = 0;
        run(guests[g], 0, &total);
        printf("%s: %ld allocations counted in the scenario\n", g ? "windows" : "linux", total);
        tu_check(total > 0, __FILE__, __LINE__, "the scenario allocates through the allocator");
        long n;
        for (n = 1; n <= total + 5 && atomic_load(&tu_failed) <= 60; n++) {
            long injected = run(guests[g], n, NULL);
            if (n <= total)
                tu_check(injected == 1, __FILE__, __LINE__, "fail_at %ld: %ld failures injected",
                         n, injected);
            else
                tu_check(injected == 0, __FILE__, __LINE__, "fail_at %ld past the end", n);
        }
        printf("%s: injected a failure at each of %ld allocation points\n",
               g ? "windows" : "linux", total);
    }
    return tu_finish();
}
