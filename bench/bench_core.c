/* bench_core.c — benchmarks of the C core through the public API.
 *
 * Cases: B1 reserve+map+unmap of one disk; B2 the same with
 * 4 controllers and 255 of 256 slots taken; B2 scaling at 99% occupancy for
 * 64 .. 2^20 slots; B3 N reservations of one shared disk+partition (reserve
 * all, map all, unmap all); B4 reserve+unmap without map; B5
 * reserve_for_rootfs; id generation; BC threads cycling different disks with
 * a VM backend that sleeps 200 us per call; memory per live reservation and
 * resident size of 100000 reservations.
 *
 * Every case is timed with CLOCK_MONOTONIC over a measured region, repeated
 * (default 7 times) and reported as median/min/max ns per op. Allocations
 * and bytes per op come from a separate pass with a counting allocator
 * (scsictl_options.allocator), so the timed passes use plain malloc.
 *
 *   bench_core [--smoke] [--repeats N] [--only SUBSTR] [--out FILE] [--append]
 *              [--iters N] [--no-count]
 *
 * --iters fixes the ops per sample (no calibration) and --no-count skips the
 * allocation pass, for profilers: valgrind --tool=callgrind
 * --toggle-collect=cycle_run bench_core --only B1 --repeats 1 --iters 20000
 * --no-count
 *
 * Output: a table on stdout, and one JSON object per case per line in FILE. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "scsictl.h"

/* ------------------------------------------------------------------------ */
/* Reference figures (hcsshim's Go controller, no-op callbacks)              */
/* ------------------------------------------------------------------------ */

#define REF_B1_NS 1016.0
#define REF_B1_ALLOCS 8.0
#define REF_B1_BYTES 496.0
#define REF_B2_NS 1396.0
#define REF_B3_NS 579.0 /* N = 1000 */
#define REF_B4_NS 512.0
#define REF_B5_NS 52.0
#define REF_ID_NS 351.0

/* Targets. */
#define TARGET_B1_NS 100.0
#define TARGET_B1_ALLOCS 1.0
#define TARGET_B2_FLAT 1.10
#define TARGET_B3_B4_NS 60.0
#define TARGET_BC_SPEEDUP 6.0
#define TARGET_BYTES_PER_RES 256.0

/* ------------------------------------------------------------------------ */
/* Settings                                                                  */
/* ------------------------------------------------------------------------ */

static struct {
    bool smoke;
    int repeats;
    const char *only;
    const char *out_path;
    bool append;
    bool no_count;    /* skip the counting-allocator pass (profiling) */
    uint64_t iters;   /* fixed ops per sample (0: calibrate) */
    double sample_ns; /* target duration of one timed sample */
} cfg = { .repeats = 7, .sample_ns = 30e6 };

static FILE *out_json;

/* Figures the targets are checked against, kept as the cases run. */
static struct {
    double b1, b1_allocs, b2_ratio, b2p_ratio, b4, b3[3], bc1, bc8, live_shared,
        live_distinct;
} got = { -1, -1, -1, -1, -1, { -1, -1, -1 }, -1, -1, -1, -1 };

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_core: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* A zeroed block of size bytes (a case's context); out of memory ends the run. */
static void *new_ctx(size_t size)
{
    void *x = calloc(1, size);
    if (!x)
        die("out of memory");
    return x;
}

static void check(int rc, const scsictl_error *err, const char *what)
{
    if (rc < 0)
        die("%s: %s (%s)", what, scsictl_code_name(rc), err ? err->message : "");
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Counting allocator                                                        */
/* ------------------------------------------------------------------------ */

/* A 16-byte header keeps the size (and malloc's alignment). */
#define HDR 16

static struct counts {
    uint64_t allocs; /* malloc + realloc calls */
    uint64_t bytes;  /* bytes requested by them */
    int64_t live;    /* bytes currently allocated */
} g_cnt;

static void *count_malloc(void *ud, size_t n)
{
    (void)ud;
    unsigned char *p = malloc(n + HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    g_cnt.allocs++;
    g_cnt.bytes += n;
    g_cnt.live += (int64_t)n;
    return p + HDR;
}

static void *count_realloc(void *ud, void *ptr, size_t n)
{
    (void)ud;
    if (!ptr)
        return count_malloc(ud, n);
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    unsigned char *q = realloc(p, n + HDR);
    if (!q)
        return NULL;
    memcpy(q, &n, sizeof n);
    g_cnt.allocs++;
    g_cnt.bytes += n;
    g_cnt.live += (int64_t)n - (int64_t)old;
    return q + HDR;
}

static void count_free(void *ud, void *ptr)
{
    (void)ud;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    g_cnt.live -= (int64_t)old;
    free(p);
}

static const scsictl_allocator counting = { count_malloc, count_realloc, count_free, NULL };

/* ------------------------------------------------------------------------ */
/* Measured regions                                                          */
/* ------------------------------------------------------------------------ */

/* A case brackets what it measures with region_begin/region_end (setup and
 * teardown stay outside); the runner reads the accumulated totals. */
static struct {
    uint64_t ns, allocs, bytes;
    uint64_t t0, a0, b0;
} g_reg;

static void region_reset(void)
{
    g_reg.ns = g_reg.allocs = g_reg.bytes = 0;
}

static inline void region_begin(void)
{
    g_reg.a0 = g_cnt.allocs;
    g_reg.b0 = g_cnt.bytes;
    g_reg.t0 = now_ns();
}

static inline void region_end(void)
{
    uint64_t t = now_ns();
    g_reg.ns += t - g_reg.t0;
    g_reg.allocs += g_cnt.allocs - g_reg.a0;
    g_reg.bytes += g_cnt.bytes - g_reg.b0;
}

/* ------------------------------------------------------------------------ */
/* No-op backend (blocking driver)                                           */
/* ------------------------------------------------------------------------ */

static int noop_add(void *u, const scsictl_disk_config *a, uint32_t c, uint32_t l, char *m,
                    size_t n)
{
    (void)u, (void)a, (void)c, (void)l, (void)m, (void)n;
    return 0;
}

static int noop_remove(void *u, uint32_t c, uint32_t l, char *m, size_t n)
{
    (void)u, (void)c, (void)l, (void)m, (void)n;
    return 0;
}

static int noop_mount(void *u, const scsictl_linux_settings *s, char *m, size_t n)
{
    (void)u, (void)s, (void)m, (void)n;
    return 0;
}

static const scsictl_callbacks noop_cb = {
    .add_scsi_disk = noop_add,
    .remove_scsi_disk = noop_remove,
    .linux_mount = noop_mount,
    .linux_unmount = noop_mount,
    .linux_eject = noop_remove,
};

static scsictl *new_ctl(uint32_t controllers, uint32_t luns, const scsictl_allocator *a)
{
    scsictl_options o = {
        .controllers = controllers,
        .luns_per_controller = luns,
        .guest = SCSICTL_GUEST_LINUX,
        .allocator = a,
    };
    scsictl *ctl;
    scsictl_error err;
    check(scsictl_new(&o, &ctl, &err), &err, "scsictl_new");
    return ctl;
}

/* Reserves `n` distinct disks (never mapped): they occupy slots 0..n-1. */
static void fill_slots(scsictl *ctl, uint32_t n)
{
    char path[64];
    scsictl_error err;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "/bench/fill/%" PRIu32 ".vhdx", i);
        scsictl_disk_config d = { .host_path = path };
        scsictl_id id;
        check(scsictl_reserve(ctl, &d, NULL, &id, &err), &err, "fill reserve");
    }
}

/* ------------------------------------------------------------------------ */
/* Results: table row + JSON line                                            */
/* ------------------------------------------------------------------------ */

typedef struct result {
    const char *name;
    char params[200];  /* JSON object */
    char label[40];    /* short parameter text for the table */
    int repeats;
    uint64_t iters;    /* ops per sample */
    double med, min, max; /* ns per op; med < 0: no timing */
    double allocs, bytes; /* per op; < 0: not measured */
    double ref;        /* reference ns per op; 0: none */
    char extra[400];   /* extra JSON members, starting with ',' or empty */
    char note[80];     /* shown after the row */
} result;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarize(double *s, int n, result *r)
{
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    r->min = s[0];
    r->max = s[n - 1];
    r->med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void json_num(char *buf, size_t size, double v)
{
    if (v < 0 || v != v)
        snprintf(buf, size, "null");
    else
        snprintf(buf, size, "%.6g", v);
}

static void print_header(void)
{
    printf("%-26s %-20s %10s %10s %10s %7s %8s %9s %8s %8s\n", "case (C core)", "params",
           "median ns", "min", "max", "spread", "allocs", "bytes", "ref ns", "ours/ref");
    printf("%.*s\n", 126,
           "-------------------------------------------------------------------------------"
           "-------------------------------------------------------------------------------");
}

static void emit(result *r)
{
    char med[32], mn[32], mx[32], al[32], by[32], ref[32], ratio[32], spread[32];
    json_num(med, sizeof med, r->med);
    json_num(mn, sizeof mn, r->med < 0 ? -1 : r->min);
    json_num(mx, sizeof mx, r->med < 0 ? -1 : r->max);
    json_num(al, sizeof al, r->allocs);
    json_num(by, sizeof by, r->bytes);
    json_num(ref, sizeof ref, r->ref > 0 ? r->ref : -1);
    json_num(ratio, sizeof ratio, r->ref > 0 && r->med >= 0 ? r->med / r->ref : -1);
    json_num(spread, sizeof spread,
             r->med > 0 ? 100.0 * (r->max - r->min) / r->med : -1);
    if (out_json) {
        fprintf(out_json,
                "{\"lang\":\"c\",\"name\":\"%s\",\"params\":%s,\"repeats\":%d,"
                "\"iters\":%" PRIu64 ",\"ns_per_op\":{\"median\":%s,\"min\":%s,\"max\":%s},"
                "\"spread_pct\":%s,\"allocs_per_op\":%s,\"bytes_per_op\":%s,"
                "\"ref_ns\":%s,\"ratio\":%s%s}\n",
                r->name, r->params[0] ? r->params : "{}", r->repeats, r->iters, med, mn, mx,
                spread, al, by, ref, ratio, r->extra);
        fflush(out_json);
    }
    char c_med[16] = "-", c_min[16] = "-", c_max[16] = "-", c_spr[16] = "-";
    char c_al[16] = "-", c_by[16] = "-", c_ref[16] = "-", c_rat[16] = "-";
    if (r->med >= 0) {
        snprintf(c_med, sizeof c_med, "%.1f", r->med);
        snprintf(c_min, sizeof c_min, "%.1f", r->min);
        snprintf(c_max, sizeof c_max, "%.1f", r->max);
        if (r->med > 0)
            snprintf(c_spr, sizeof c_spr, "%.1f%%", 100.0 * (r->max - r->min) / r->med);
    }
    if (r->allocs >= 0)
        snprintf(c_al, sizeof c_al, "%.2f", r->allocs);
    if (r->bytes >= 0)
        snprintf(c_by, sizeof c_by, "%.1f", r->bytes);
    if (r->ref > 0) {
        snprintf(c_ref, sizeof c_ref, "%.0f", r->ref);
        if (r->med >= 0)
            snprintf(c_rat, sizeof c_rat, "%.3f", r->med / r->ref);
    }
    printf("%-26s %-20s %10s %10s %10s %7s %8s %9s %8s %8s%s%s\n", r->name, r->label, c_med,
           c_min, c_max, c_spr, c_al, c_by, c_ref, c_rat, r->note[0] ? "  " : "", r->note);
    fflush(stdout);
}

static bool selected(const char *name, const char *label)
{
    if (!cfg.only)
        return true;
    char full[128];
    snprintf(full, sizeof full, "%s %s", name, label);
    return strstr(full, cfg.only) != NULL;
}

/* ------------------------------------------------------------------------ */
/* Generic runner                                                            */
/* ------------------------------------------------------------------------ */

/* A case: setup(param, allocator) builds its state; run(ctx, n) performs n
 * ops (n a multiple of unit), bracketing what it measures with regions. */
typedef struct bench_case {
    const char *name;
    void *(*setup)(const void *param, const scsictl_allocator *a);
    void (*run)(void *ctx, uint64_t n);
    void (*teardown)(void *ctx);
    uint64_t unit;
} bench_case;

static uint64_t round_up(uint64_t n, uint64_t unit)
{
    return (n + unit - 1) / unit * unit;
}

/* The ops per sample for c on ctx: enough for cfg.sample_ns (this also
 * warms the case up). */
static uint64_t calibrate(const bench_case *c, void *ctx)
{
    uint64_t n = cfg.iters ? round_up(cfg.iters, c->unit) : c->unit;
    if (cfg.smoke || cfg.iters)
        return n;
    for (;;) {
        region_reset();
        c->run(ctx, n);
        double ns = (double)g_reg.ns;
        if (ns >= cfg.sample_ns * 0.8 || n >= (1ull << 34))
            return n;
        double f = ns > 0 ? cfg.sample_ns * 1.1 / ns : 100;
        if (f < 2)
            f = 2;
        if (f > 100)
            f = 100;
        n = round_up((uint64_t)((double)n * f), c->unit);
    }
}

static double sample(const bench_case *c, void *ctx, uint64_t n)
{
    region_reset();
    c->run(ctx, n);
    return (double)g_reg.ns / (double)n;
}

/* Counts c's allocations over n ops on a fresh context (after a warm-up). */
static void count_allocs(const bench_case *c, const void *param, uint64_t n, result *r)
{
    r->allocs = r->bytes = -1;
    if (cfg.no_count)
        return;
    void *ctx = c->setup(param, &counting);
    region_reset();
    c->run(ctx, c->unit);
    region_reset();
    c->run(ctx, n);
    r->allocs = (double)g_reg.allocs / (double)n;
    r->bytes = (double)g_reg.bytes / (double)n;
    c->teardown(ctx);
}

/* Times c (repeats samples of a calibrated n) and counts its allocations
 * in a second pass. Fills r's timing and memory fields. */
static void run_case(const bench_case *c, const void *param, result *r)
{
    r->name = c->name;
    void *ctx = c->setup(param, NULL);
    uint64_t n = calibrate(c, ctx);
    double samples[64];
    int reps = cfg.repeats;
    for (int i = 0; i < reps; i++)
        samples[i] = sample(c, ctx, n);
    c->teardown(ctx);
    r->repeats = reps;
    r->iters = n;
    summarize(samples, reps, r);
    count_allocs(c, param, n, r);
}

/* Runs one case over k parameter sets with their repeats interleaved
 * (repeat i of every set, then repeat i + 1), so that a burst of noise on
 * this shared machine hits every set alike. ratio[j] gets the median, min
 * and max over the repeats of sample(set j) / sample(set 0). */
#define SERIES_MAX 8

static void run_series(const bench_case *c, const void *const params[], int k, result rs[],
                       double ratio[][3])
{
    void *ctx[SERIES_MAX];
    uint64_t n[SERIES_MAX];
    double samples[SERIES_MAX][64], ratios[SERIES_MAX][64];
    int reps = cfg.repeats;
    for (int j = 0; j < k; j++) {
        ctx[j] = c->setup(params[j], NULL);
        n[j] = calibrate(c, ctx[j]);
    }
    for (int i = 0; i < reps; i++) {
        for (int j = 0; j < k; j++)
            samples[j][i] = sample(c, ctx[j], n[j]);
        for (int j = 0; j < k; j++)
            ratios[j][i] = samples[j][i] / samples[0][i];
    }
    for (int j = 0; j < k; j++) {
        c->teardown(ctx[j]);
        rs[j].name = c->name;
        rs[j].repeats = reps;
        rs[j].iters = n[j];
        summarize(samples[j], reps, &rs[j]);
        count_allocs(c, params[j], n[j], &rs[j]);
        result q;
        summarize(ratios[j], reps, &q);
        ratio[j][0] = q.med;
        ratio[j][1] = q.min;
        ratio[j][2] = q.max;
    }
}

/* ------------------------------------------------------------------------ */
/* B1 / B2 / B2 scaling / B4: cycles of one disk on a (partly full) ctl      */
/* ------------------------------------------------------------------------ */

typedef struct geom {
    uint32_t controllers, luns, occupied;
    bool pin_fill; /* occupy slots with rootfs pins (no disks) instead of disks */
} geom;

typedef struct cycle_ctx {
    scsictl *ctl;
} cycle_ctx;

static void *cycle_setup(const void *param, const scsictl_allocator *a)
{
    const geom *g = param;
    cycle_ctx *x = new_ctx(sizeof *x);
    x->ctl = new_ctl(g->controllers, g->luns, a);
    if (g->pin_fill) {
        scsictl_error err;
        for (uint32_t i = 0; i < g->occupied; i++)
            check(scsictl_reserve_for_rootfs(x->ctl, i / g->luns, i % g->luns, NULL, &err), &err,
                  "pin fill");
    } else {
        fill_slots(x->ctl, g->occupied);
    }
    return x;
}

static void cycle_teardown(void *ctx)
{
    cycle_ctx *x = ctx;
    scsictl_free(x->ctl);
    free(x);
}

/* B1 with a durable state file: every change is an fsync'd atomic rewrite
 * of the snapshot. The file lives in a fresh directory under the current
 * directory (the build tree), i.e. on a real disk, not a tmpfs. */
typedef struct state_ctx {
    cycle_ctx base;
    char dir[64];
    char path[96];
} state_ctx;

static void *state_setup(const void *param, const scsictl_allocator *a)
{
    (void)param;
    state_ctx *x = new_ctx(sizeof *x);
    snprintf(x->dir, sizeof x->dir, "bench-state.XXXXXX");
    if (!mkdtemp(x->dir))
        die("mkdtemp: %s", strerror(errno));
    snprintf(x->path, sizeof x->path, "%s/state", x->dir);
    x->base.ctl = new_ctl(1, 64, a);
    scsictl_error err;
    check(scsictl_set_state_file(x->base.ctl, x->path, &err), &err, "state file");
    return x;
}

static void state_teardown(void *ctx)
{
    state_ctx *x = ctx;
    scsictl_free(x->base.ctl);
    char lock[112];
    snprintf(lock, sizeof lock, "%s.lock", x->path); /* the owner's lock file */
    unlink(x->path);
    unlink(lock);
    rmdir(x->dir);
    free(x);
}

static const scsictl_disk_config cycle_disk = { .host_path = "/bench/cycle/disk.vhdx" };
static const scsictl_mount_config cycle_mount = { 0 };

/* reserve + map + unmap */
static void cycle_run(void *ctx, uint64_t n)
{
    cycle_ctx *x = ctx;
    scsictl_error err;
    char path[SCSICTL_GUEST_PATH_MAX];
    region_begin();
    for (uint64_t i = 0; i < n; i++) {
        scsictl_id id;
        int rc = scsictl_reserve(x->ctl, &cycle_disk, &cycle_mount, &id, &err);
        if (rc == SCSICTL_OK)
            rc = scsictl_map(x->ctl, &noop_cb, &id, path, sizeof path, &err);
        if (rc == SCSICTL_OK)
            rc = scsictl_unmap(x->ctl, &noop_cb, &id, &err);
        check(rc, &err, "cycle");
    }
    region_end();
}

/* B4: reserve + unmap, no map */
static void reserve_unmap_run(void *ctx, uint64_t n)
{
    cycle_ctx *x = ctx;
    scsictl_error err;
    region_begin();
    for (uint64_t i = 0; i < n; i++) {
        scsictl_id id;
        int rc = scsictl_reserve(x->ctl, &cycle_disk, &cycle_mount, &id, &err);
        if (rc == SCSICTL_OK)
            rc = scsictl_unmap(x->ctl, &noop_cb, &id, &err);
        check(rc, &err, "reserve+unmap");
    }
    region_end();
}

/* ------------------------------------------------------------------------ */
/* B3: N reservations of one shared disk+partition                           */
/* ------------------------------------------------------------------------ */

typedef struct shared_ctx {
    scsictl *ctl;
    uint64_t N;
    scsictl_id *ids;
    int phases;          /* 1: time the three phases separately */
    uint64_t phase_ns[3];
    int only_reserve;    /* id case: time only the reserve phase */
} shared_ctx;

static const scsictl_disk_config shared_disk = { .host_path = "/bench/shared/layer.vhdx",
                                                 .read_only = true };
static const scsictl_mount_config shared_mount = { .read_only = true };

static void *shared_setup(const void *param, const scsictl_allocator *a)
{
    shared_ctx *x = new_ctx(sizeof *x);
    x->N = *(const uint64_t *)param;
    x->ids = malloc(x->N * sizeof *x->ids);
    if (!x->ids)
        die("out of memory");
    x->ctl = new_ctl(1, 64, a);
    return x;
}

static void *shared_reserve_setup(const void *param, const scsictl_allocator *a)
{
    shared_ctx *x = shared_setup(param, a);
    x->only_reserve = 1;
    return x;
}

static void shared_teardown(void *ctx)
{
    shared_ctx *x = ctx;
    scsictl_free(x->ctl);
    free(x->ids);
    free(x);
}

static void shared_batch(shared_ctx *x)
{
    scsictl_error err;
    char path[SCSICTL_GUEST_PATH_MAX];
    uint64_t t0 = x->phases ? now_ns() : 0;
    for (uint64_t i = 0; i < x->N; i++)
        check(scsictl_reserve(x->ctl, &shared_disk, &shared_mount, &x->ids[i], &err), &err,
              "B3 reserve");
    uint64_t t1 = x->phases ? now_ns() : 0;
    for (uint64_t i = 0; i < x->N; i++)
        check(scsictl_map(x->ctl, &noop_cb, &x->ids[i], path, sizeof path, &err), &err,
              "B3 map");
    uint64_t t2 = x->phases ? now_ns() : 0;
    for (uint64_t i = 0; i < x->N; i++)
        check(scsictl_unmap(x->ctl, &noop_cb, &x->ids[i], &err), &err, "B3 unmap");
    if (x->phases) {
        uint64_t t3 = now_ns();
        x->phase_ns[0] += t1 - t0;
        x->phase_ns[1] += t2 - t1;
        x->phase_ns[2] += t3 - t2;
    }
}

/* n reservations = n / N batches */
static void shared_run(void *ctx, uint64_t n)
{
    shared_ctx *x = ctx;
    if (x->only_reserve) {
        scsictl_error err;
        for (uint64_t b = 0; b < n / x->N; b++) {
            region_begin();
            for (uint64_t i = 0; i < x->N; i++)
                check(scsictl_reserve(x->ctl, &shared_disk, &shared_mount, &x->ids[i], &err),
                      &err, "id reserve");
            region_end();
            for (uint64_t i = 0; i < x->N; i++)
                check(scsictl_unmap(x->ctl, &noop_cb, &x->ids[i], &err), &err, "id unmap");
        }
        return;
    }
    region_begin();
    for (uint64_t b = 0; b < n / x->N; b++)
        shared_batch(x);
    region_end();
}

/* Per-phase breakdown of B3: one extra pass of n reservations. */
static void shared_phases(uint64_t N, uint64_t n, double out[3])
{
    shared_ctx *x = shared_setup(&N, NULL);
    x->phases = 1;
    for (uint64_t b = 0; b < n / N; b++)
        shared_batch(x);
    for (int i = 0; i < 3; i++)
        out[i] = (double)x->phase_ns[i] / (double)n;
    shared_teardown(x);
}

/* ------------------------------------------------------------------------ */
/* B5: reserve_for_rootfs, fresh controller per batch                        */
/* ------------------------------------------------------------------------ */

#define B5_CONTROLLERS 64u
#define B5_LUNS 64u
#define B5_BATCH ((uint64_t)B5_CONTROLLERS * B5_LUNS)

typedef struct rootfs_ctx {
    const scsictl_allocator *a;
} rootfs_ctx;

static void *rootfs_setup(const void *param, const scsictl_allocator *a)
{
    (void)param;
    rootfs_ctx *x = new_ctx(sizeof *x);
    x->a = a;
    return x;
}

static void rootfs_teardown(void *ctx)
{
    free(ctx);
}

static void rootfs_run(void *ctx, uint64_t n)
{
    rootfs_ctx *x = ctx;
    scsictl_error err;
    for (uint64_t b = 0; b < n / B5_BATCH; b++) {
        scsictl *ctl = new_ctl(B5_CONTROLLERS, B5_LUNS, x->a);
        region_begin();
        for (uint32_t c = 0; c < B5_CONTROLLERS; c++)
            for (uint32_t l = 0; l < B5_LUNS; l++)
                check(scsictl_reserve_for_rootfs(ctl, c, l, NULL, &err), &err, "B5");
        region_end();
        scsictl_free(ctl);
    }
}

/* ------------------------------------------------------------------------ */
/* Id generation and formatting (no controller)                              */
/* ------------------------------------------------------------------------ */

static void *nothing_setup(const void *param, const scsictl_allocator *a)
{
    (void)param, (void)a;
    static int dummy;
    return &dummy;
}

static void nothing_teardown(void *ctx)
{
    (void)ctx;
}

static volatile uint8_t sink;

static void uuid_run(void *ctx, uint64_t n)
{
    (void)ctx;
    uuid_t u;
    region_begin();
    for (uint64_t i = 0; i < n; i++) {
        uuid_generate_random(u);
        sink ^= u[0];
    }
    region_end();
}

static void id_format_run(void *ctx, uint64_t n)
{
    (void)ctx;
    scsictl_id id = { { 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45,
                        0x67, 0x89, 0xab, 0xcd, 0xef } };
    char s[SCSICTL_ID_STRLEN + 1];
    region_begin();
    for (uint64_t i = 0; i < n; i++) {
        id.bytes[15] = (uint8_t)i;
        scsictl_id_format(&id, s);
        sink ^= (uint8_t)s[35];
    }
    region_end();
}

static void id_parse_run(void *ctx, uint64_t n)
{
    (void)ctx;
    char s[] = "12345678-9abc-4def-8123-456789abcdef";
    scsictl_id id;
    region_begin();
    for (uint64_t i = 0; i < n; i++) {
        s[35] = "0123456789abcdef"[i & 15];
        if (scsictl_id_parse(s, SCSICTL_ID_STRLEN, &id) != SCSICTL_OK)
            die("id parse");
        sink ^= id.bytes[15];
    }
    region_end();
}

static void guest_path_run(void *ctx, uint64_t n)
{
    (void)ctx;
    char s[SCSICTL_GUEST_PATH_MAX];
    region_begin();
    for (uint64_t i = 0; i < n; i++) {
        if (scsictl_guest_path(SCSICTL_GUEST_LINUX, (uint32_t)(i & 1023), (uint32_t)(i & 63),
                               0, s, sizeof s) < 0)
            die("guest path");
        sink ^= (uint8_t)s[20];
    }
    region_end();
}

/* ------------------------------------------------------------------------ */
/* Memory: live bytes per reservation, resident size                         */
/* ------------------------------------------------------------------------ */

/* Holds n reservations, all mapped: shared = one disk+partition; else one
 * disk each (1024 controllers x 128 luns holds 131072 disks). Returns the
 * controller; ids are kept in *ids. */
static scsictl *hold_reservations(bool shared, uint64_t n, const scsictl_allocator *a,
                                  scsictl_id **ids_out)
{
    scsictl *ctl = shared ? new_ctl(1, 64, a) : new_ctl(1024, 128, a);
    scsictl_id *ids = malloc(n * sizeof *ids);
    if (!ids)
        die("out of memory");
    scsictl_error err;
    char path[64], guest[SCSICTL_GUEST_PATH_MAX];
    for (uint64_t i = 0; i < n; i++) {
        scsictl_disk_config d = shared_disk;
        if (!shared) {
            snprintf(path, sizeof path, "/bench/distinct/%" PRIu64 ".vhdx", i);
            d.host_path = path;
        }
        check(scsictl_reserve(ctl, &d, &shared_mount, &ids[i], &err), &err, "hold reserve");
        check(scsictl_map(ctl, &noop_cb, &ids[i], guest, sizeof guest, &err), &err, "hold map");
    }
    *ids_out = ids;
    return ctl;
}

static void release_reservations(scsictl *ctl, scsictl_id *ids, uint64_t n)
{
    scsictl_error err;
    for (uint64_t i = 0; i < n; i++)
        check(scsictl_unmap(ctl, &noop_cb, &ids[i], &err), &err, "release");
    free(ids);
}

/* The row of a memory case over n reservations (shared: of one disk). */
static result mem_result(const char *name, bool shared, uint64_t n)
{
    result r = { .name = name, .allocs = -1, .bytes = -1 };
    snprintf(r.label, sizeof r.label, "n=%" PRIu64, n);
    snprintf(r.params, sizeof r.params,
             "{\"reservations\":%" PRIu64 ",\"disks\":%" PRIu64 ",\"geometry\":\"%s\"}", n,
             shared ? (uint64_t)1 : n, shared ? "1x64" : "1024x128");
    return r;
}

/* Live core bytes per reservation, counted by the allocator. */
static void mem_live_case(bool shared, uint64_t n)
{
    result r = mem_result(shared ? "mem_live_shared" : "mem_live_distinct", shared, n);
    if (!selected(r.name, r.label))
        return;
    int reps = cfg.smoke ? 1 : 3;
    double samples[8];
    double per_res = 0, allocs = 0;
    int64_t empty = 0, held = 0;
    for (int i = 0; i < reps; i++) {
        int64_t before = g_cnt.live;
        uint64_t a0 = g_cnt.allocs, b0 = g_cnt.bytes;
        scsictl *ctl = shared ? new_ctl(1, 64, &counting) : new_ctl(1024, 128, &counting);
        empty = g_cnt.live - before;
        scsictl_free(ctl);
        before = g_cnt.live;
        scsictl_id *ids;
        uint64_t t0 = now_ns();
        ctl = hold_reservations(shared, n, &counting, &ids);
        samples[i] = (double)(now_ns() - t0) / (double)n;
        held = g_cnt.live - before;
        per_res = (double)(held - empty) / (double)n;
        allocs = (double)(g_cnt.allocs - a0) / (double)n;
        r.bytes = (double)(g_cnt.bytes - b0) / (double)n;
        release_reservations(ctl, ids, n);
        scsictl_free(ctl);
    }
    r.repeats = reps;
    r.iters = n;
    r.allocs = allocs;
    summarize(samples, reps, &r);
    snprintf(r.extra, sizeof r.extra,
             ",\"timed\":\"reserve+map per reservation (fill)\","
             "\"live_bytes_empty_ctl\":%" PRId64 ",\"live_bytes_held\":%" PRId64
             ",\"live_bytes_per_reservation\":%.1f,\"target_bytes_per_reservation\":%.0f",
             empty, held, per_res, TARGET_BYTES_PER_RES);
    if (shared)
        got.live_shared = per_res;
    else
        got.live_distinct = per_res;
    snprintf(r.note, sizeof r.note, "live %.1f B/reservation (target <= %.0f)", per_res,
             TARGET_BYTES_PER_RES);
    emit(&r);
}

static long vmrss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* Child mode (a fresh process, so no freed heap hides the growth):
 * prints "rss_before_kb rss_after_kb ns_per_reservation". */
static int rss_child(const char *kind, uint64_t n)
{
    bool shared = strcmp(kind, "shared") == 0;
    long before = vmrss_kb();
    scsictl_id *ids;
    uint64_t t0 = now_ns();
    scsictl *ctl = hold_reservations(shared, n, NULL, &ids);
    double ns = (double)(now_ns() - t0) / (double)n;
    long after = vmrss_kb();
    printf("%ld %ld %.1f\n", before, after, ns);
    release_reservations(ctl, ids, n);
    scsictl_free(ctl);
    return 0;
}

static void rss_case(const char *self, bool shared, uint64_t n)
{
    result r = mem_result(shared ? "rss_shared" : "rss_distinct", shared, n);
    if (!selected(r.name, r.label))
        return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' --rss-child %s %" PRIu64, self,
             shared ? "shared" : "distinct", n);
    FILE *p = popen(cmd, "r");
    long before = -1, after = -1;
    double ns = -1;
    if (!p || fscanf(p, "%ld %ld %lf", &before, &after, &ns) != 3)
        die("rss child failed: %s", cmd);
    if (pclose(p) != 0)
        die("rss child exited with an error");
    r.repeats = 1;
    r.iters = n;
    r.med = r.min = r.max = ns;
    double per = (double)(after - before) * 1024.0 / (double)n;
    snprintf(r.extra, sizeof r.extra,
             ",\"timed\":\"reserve+map per reservation (fill)\",\"vmrss_before_kb\":%ld,"
             "\"vmrss_after_kb\":%ld,\"rss_delta_kb\":%ld,\"rss_bytes_per_reservation\":%.1f",
             before, after, after - before, per);
    snprintf(r.note, sizeof r.note, "VmRSS %ld -> %ld kB (+%.1f B/reservation)", before,
             after, per);
    emit(&r);
}

/* ------------------------------------------------------------------------ */
/* BC: threads cycling different disks, VM calls sleep 200 us                */
/* ------------------------------------------------------------------------ */

static void sleep_us(long us)
{
    struct timespec ts = { 0, us * 1000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int slow_add(void *u, const scsictl_disk_config *a, uint32_t c, uint32_t l, char *m,
                    size_t n)
{
    sleep_us(200);
    return noop_add(u, a, c, l, m, n);
}

static int slow_remove(void *u, uint32_t c, uint32_t l, char *m, size_t n)
{
    sleep_us(200);
    return noop_remove(u, c, l, m, n);
}

/* The no-op backend with slow VM calls (add and remove). */
static scsictl_callbacks slow_callbacks(void)
{
    scsictl_callbacks cb = noop_cb;
    cb.add_scsi_disk = slow_add;
    cb.remove_scsi_disk = slow_remove;
    return cb;
}

/* The row of a threaded case (BC, BD): t threads of `cycles` cycles each,
 * VM calls sleeping 200 us, on a state file or not. */
static result threads_result(const char *name, int t, uint64_t cycles, bool state_file)
{
    result r = { .name = name, .allocs = -1, .bytes = -1 };
    snprintf(r.label, sizeof r.label, "threads=%d", t);
    snprintf(r.params, sizeof r.params,
             "{\"threads\":%d,\"cycles_per_thread\":%" PRIu64
             ",\"vm_call_sleep_us\":200,\"geometry\":\"1x64\"%s}",
             t, cycles, state_file ? ",\"state_file\":true" : "");
    return r;
}

typedef struct bc_worker {
    pthread_t th;
    scsictl *ctl;
    int index;
    uint64_t cycles;
    pthread_barrier_t *start;
} bc_worker;

static void *bc_thread(void *arg)
{
    bc_worker *w = arg;
    char path[64];
    snprintf(path, sizeof path, "/bench/bc/worker-%d.vhdx", w->index);
    scsictl_disk_config d = { .host_path = path };
    scsictl_error err;
    char guest[SCSICTL_GUEST_PATH_MAX];
    const scsictl_callbacks slow_cb = slow_callbacks();
    pthread_barrier_wait(w->start);
    for (uint64_t i = 0; i < w->cycles; i++) {
        scsictl_id id;
        int rc = scsictl_reserve(w->ctl, &d, NULL, &id, &err);
        if (rc == SCSICTL_OK)
            rc = scsictl_map(w->ctl, &slow_cb, &id, guest, sizeof guest, &err);
        if (rc == SCSICTL_OK)
            rc = scsictl_unmap(w->ctl, &slow_cb, &id, &err);
        check(rc, &err, "BC cycle");
    }
    return NULL;
}

/* Wall ns for `threads` (at most 16) workers doing `cycles` cycles each
 * on ctl. */
static uint64_t run_workers(scsictl *ctl, int threads, uint64_t cycles)
{
    bc_worker w[16];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i] = (bc_worker){ .ctl = ctl, .index = i, .cycles = cycles, .start = &start };
        if (pthread_create(&w[i].th, NULL, bc_thread, &w[i]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&start);
    uint64_t t0 = now_ns();
    for (int i = 0; i < threads; i++)
        pthread_join(w[i].th, NULL);
    uint64_t ns = now_ns() - t0;
    pthread_barrier_destroy(&start);
    return ns;
}

/* Returns wall ns for `threads` workers doing `cycles` cycles each. */
static uint64_t bc_sample(int threads, uint64_t cycles)
{
    scsictl *ctl = new_ctl(1, 64, NULL);
    uint64_t ns = run_workers(ctl, threads, cycles);
    scsictl_free(ctl);
    return ns;
}

static void bc_cases(void)
{
    static const int counts[] = { 1, 2, 4, 8 };
    uint64_t cycles = cfg.smoke ? 3 : 100;
    int reps = cfg.smoke ? 1 : 5;
    double base = 0;
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        int t = counts[k];
        if (cfg.smoke && t > 2)
            break;
        result r = threads_result("BC", t, cycles, false);
        if (!selected(r.name, r.label))
            continue;
        double samples[16];
        for (int i = 0; i < reps; i++)
            samples[i] = (double)bc_sample(t, cycles) / (double)(cycles * (uint64_t)t);
        r.repeats = reps;
        r.iters = cycles * (uint64_t)t;
        summarize(samples, reps, &r);
        if (t == 1)
            base = got.bc1 = r.med;
        if (t == 8)
            got.bc8 = r.med;
        double speedup = base > 0 ? base / r.med : -1;
        snprintf(r.extra, sizeof r.extra,
                 ",\"unit\":\"wall ns per cycle (all threads)\",\"cycles_per_s\":%.1f,"
                 "\"speedup_vs_1_thread\":%.3f,\"ref_speedup\":1",
                 1e9 / r.med, speedup);
        snprintf(r.note, sizeof r.note, "%.0f cycles/s, %.2fx vs 1 thread (ref 1x)",
                 1e9 / r.med, speedup);
        emit(&r);
    }
}

/* ------------------------------------------------------------------------ */
/* BD: BC with a durable state file: writes per cycle, alone and with 16     */
/* threads in flight (group commit)                                          */
/* ------------------------------------------------------------------------ */

/* Wall ns per cycle and state file writes per cycle for `threads` workers
 * doing `cycles` cycles each on a controller with a state file in the
 * current directory (the build tree: a real disk). */
static void bd_sample(int threads, uint64_t cycles, double *ns_per_cycle,
                      double *writes_per_cycle)
{
    char dir[64], path[96];
    snprintf(dir, sizeof dir, "bench-durable.XXXXXX");
    if (!mkdtemp(dir))
        die("mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/state", dir);
    scsictl *ctl = new_ctl(1, 64, NULL);
    scsictl_error err;
    check(scsictl_set_state_file(ctl, path, &err), &err, "state file");
    scsictl_stats before, after;
    scsictl_get_stats(ctl, &before);
    uint64_t ns = run_workers(ctl, threads, cycles);
    scsictl_get_stats(ctl, &after);
    double total = (double)(cycles * (uint64_t)threads);
    *ns_per_cycle = (double)ns / total;
    *writes_per_cycle = (double)(after.state_writes - before.state_writes) / total;
    scsictl_free(ctl);
    char lock[112];
    snprintf(lock, sizeof lock, "%s.lock", path);
    unlink(path);
    unlink(lock);
    rmdir(dir);
}

static void bd_cases(void)
{
    static const int counts[] = { 1, 16 };
    uint64_t cycles = cfg.smoke ? 2 : 30;
    int reps = cfg.smoke ? 1 : 3;
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        int t = counts[k];
        result r = threads_result("BD", t, cycles, true);
        if (!selected(r.name, r.label))
            continue;
        double samples[16], writes = 0;
        for (int i = 0; i < reps; i++) {
            double wpc;
            bd_sample(t, cycles, &samples[i], &wpc);
            writes += wpc / reps;
        }
        r.repeats = reps;
        r.iters = cycles * (uint64_t)t;
        summarize(samples, reps, &r);
        /* each write is two fsyncs: the temporary file and the directory */
        snprintf(r.extra, sizeof r.extra,
                 ",\"unit\":\"wall ns per cycle (all threads)\",\"writes_per_cycle\":%.2f,"
                 "\"fsyncs_per_cycle\":%.2f",
                 writes, 2 * writes);
        snprintf(r.note, sizeof r.note, "%.2f writes (%.2f fsyncs) per cycle, %.0f cycles/s",
                 writes, 2 * writes, 1e9 / r.med);
        emit(&r);
    }
}

/* ------------------------------------------------------------------------ */
/* Targets                                                                   */
/* ------------------------------------------------------------------------ */

static void target_line(const char *what, double value, const char *unit, double limit,
                        bool at_most)
{
    if (value < 0) {
        printf("  %-58s not measured\n", what);
        return;
    }
    bool met = at_most ? value <= limit : value >= limit;
    printf("  %-58s %10.2f %-6s target %s %-8.2f %s (%.2fx of target)\n", what, value, unit,
           at_most ? "<=" : ">=", limit, met ? "MET" : "NOT MET", value / limit);
}

static void print_targets(void)
{
    printf("\nTargets, C core:\n");
    target_line("B1 reserve+map+unmap, ns per cycle", got.b1, "ns", TARGET_B1_NS, true);
    target_line("B1 heap allocations per cycle", got.b1_allocs, "allocs", TARGET_B1_ALLOCS,
                true);
    target_line("B2 flat: 2^20-slot / 64-slot, median of interleaved repeats", got.b2_ratio,
                "x", TARGET_B2_FLAT, true);
    target_line("  (slots filled by rootfs pins: free-slot search alone)", got.b2p_ratio, "x",
                TARGET_B2_FLAT, true);
    target_line("B3 N=10, ns per reservation", got.b3[0], "ns", TARGET_B3_B4_NS, true);
    target_line("B3 N=1000, ns per reservation", got.b3[1], "ns", TARGET_B3_B4_NS, true);
    target_line("B3 N=100000, ns per reservation", got.b3[2], "ns", TARGET_B3_B4_NS, true);
    target_line("B4 reserve+unmap, ns per reservation", got.b4, "ns", TARGET_B3_B4_NS, true);
    target_line("BC 8 threads / 1 thread throughput",
                got.bc1 > 0 && got.bc8 > 0 ? got.bc1 / got.bc8 : -1, "x", TARGET_BC_SPEEDUP,
                false);
    target_line("live bytes per reservation, one shared disk", got.live_shared, "B",
                TARGET_BYTES_PER_RES, true);
    target_line("live bytes per reservation, one disk each", got.live_distinct, "B",
                TARGET_BYTES_PER_RES, true);
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

/* One line saying where the numbers come from. */
static void print_machine(void)
{
    char model[128] = "unknown CPU", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v) {
                snprintf(model, sizeof model, "%s", v + 2);
                model[strcspn(model, "\n")] = '\0';
            }
            break;
        }
    if (f)
        fclose(f);
    struct utsname u;
    if (uname(&u) != 0)
        strcpy(u.release, "?");
#ifdef __OPTIMIZE__
    const char *opt = "optimized";
#else
    const char *opt = "NOT optimized";
#endif
#if defined(__clang__)
    const char *cc = "";
#else
    const char *cc = "gcc ";
#endif
    printf("machine: %s, %ld online CPUs, Linux %s; compiler %s%s (%s); scsictl %s\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), u.release, cc, __VERSION__, opt, SCSICTL_VERSION);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_core [--smoke] [--repeats N] [--only SUBSTR] "
                    "[--out FILE] [--append] [--iters N] [--no-count]\n");
    exit(2);
}

static void set_label(result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_label(result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->label, sizeof r->label, fmt, ap);
    va_end(ap);
}

/* Runs the map/unmap cycle case `name` at g (Linux guest, disks filling
 * the occupied slots) into r, labelled `label`, if it is selected; returns
 * whether it ran. r's reference is set by the caller. */
static bool run_cycle(const char *name, const geom *g, const char *label, result *r)
{
    bench_case c = { name, cycle_setup, cycle_run, cycle_teardown, 1 };
    set_label(r, "%s", label);
    snprintf(r->params, sizeof r->params,
             "{\"controllers\":%u,\"luns\":%u,\"occupied\":%u,\"guest\":\"linux\"}",
             g->controllers, g->luns, g->occupied);
    if (!selected(c.name, r->label))
        return false;
    run_case(&c, g, r);
    return true;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--rss-child") == 0)
        return rss_child(argv[2], strtoull(argv[3], NULL, 10));
    const char *env = getenv("SCSICTL_BENCH_SMOKE");
    if (env && *env && strcmp(env, "0") != 0)
        cfg.smoke = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smoke") == 0)
            cfg.smoke = true;
        else if (strcmp(argv[i], "--append") == 0)
            cfg.append = true;
        else if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc)
            cfg.repeats = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-count") == 0)
            cfg.no_count = true;
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            cfg.iters = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            cfg.only = argv[++i];
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            cfg.out_path = argv[++i];
        else
            usage();
    }
    if (cfg.smoke)
        cfg.repeats = 2;
    if (cfg.repeats < 1 || cfg.repeats > 64)
        die("--repeats must be 1..64");
    if (cfg.out_path) {
        out_json = fopen(cfg.out_path, cfg.append ? "a" : "w");
        if (!out_json)
            die("cannot open %s: %s", cfg.out_path, strerror(errno));
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        die("readlink /proc/self/exe");
    self[len] = '\0';

    printf("scsictl C core benchmarks%s: %d repeats per case, ~%.0f ms per sample; "
           "ns per op (median, min, max over repeats), allocs/bytes per op from a "
           "counting allocator\n\n",
           cfg.smoke ? " (SMOKE: tiny counts, numbers meaningless)" : "", cfg.repeats,
           cfg.smoke ? 0.0 : cfg.sample_ns / 1e6);
    print_machine();
    printf("\n");
    print_header();

    /* Id generation and formatting */
    {
        static const bench_case cs[] = {
            { "id_uuid_generate_random", nothing_setup, uuid_run, nothing_teardown, 1 },
            { "id_format", nothing_setup, id_format_run, nothing_teardown, 1 },
            { "id_parse", nothing_setup, id_parse_run, nothing_teardown, 1 },
            { "guest_path_format", nothing_setup, guest_path_run, nothing_teardown, 1 },
        };
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
            result r = { 0 };
            set_label(&r, "-");
            if (!selected(cs[i].name, r.label))
                continue;
            run_case(&cs[i], NULL, &r);
            r.allocs = r.bytes = -1; /* no controller, no allocator */
            if (i == 0) {
                r.ref = REF_ID_NS;
                snprintf(r.note, sizeof r.note, "libuuid directly");
            }
            emit(&r);
        }
        uint64_t N = cfg.smoke ? 10 : 1000;
        bench_case c = { "id_via_reserve_shared", shared_reserve_setup, shared_run,
                         shared_teardown, N };
        result r = { .ref = REF_ID_NS };
        set_label(&r, "N=%" PRIu64, N);
        snprintf(r.params, sizeof r.params,
                 "{\"shared_reservations\":%" PRIu64 ",\"timed\":\"reserve only\"}", N);
        snprintf(r.note, sizeof r.note, "reserve on a shared disk (id + record)");
        if (selected(c.name, r.label)) {
            run_case(&c, &N, &r);
            emit(&r);
        }
    }

    /* B1 */
    {
        static const geom g = { 1, 64, 0, false };
        result r = { .ref = REF_B1_NS };
        if (run_cycle("B1", &g, "1x64 empty", &r)) {
            snprintf(r.note, sizeof r.note, "ref %.0f allocs %.0f B", REF_B1_ALLOCS,
                     REF_B1_BYTES);
            snprintf(r.extra, sizeof r.extra,
                     ",\"ref_allocs_per_op\":%.0f,\"ref_bytes_per_op\":%.0f", REF_B1_ALLOCS,
                     REF_B1_BYTES);
            got.b1 = r.med;
            got.b1_allocs = r.allocs;
            emit(&r);
        }
    }

    /* B2 (the case): 4 controllers, 255 of 256 slots taken */
    {
        static const geom g = { 4, 64, 255, false };
        result r = { .ref = REF_B2_NS };
        if (run_cycle("B2", &g, "4x64 255/256", &r))
            emit(&r);
    }

    /* B2 scaling: 99% occupancy (lowest slots taken, the top 1% free).
     * B2_scaling: the slots hold reserved disks (so the hash maps hold as
     * many disks and reservations); B2_scaling_pinned: the slots are rootfs
     * pins (bitmap only), which isolates the free-slot search. */
    for (int pinned = 0; pinned < 2; pinned++) {
        static const geom gs[] = {
            { 1, 64, 0, false }, { 4, 64, 0, false }, { 64, 64, 0, false },
            { 1024, 64, 0, false }, { 1024, 1024, 0, false },
        };
        enum { NG = sizeof gs / sizeof gs[0] };
        bench_case c = { pinned ? "B2_scaling_pinned" : "B2_scaling", cycle_setup, cycle_run,
                         cycle_teardown, 1 };
        geom g[NG];
        const void *params[NG];
        result rs[NG];
        double ratio[NG][3];
        int k = 0;
        for (size_t i = 0; i < NG; i++) {
            geom x = gs[i];
            x.pin_fill = pinned;
            uint32_t slots = x.controllers * x.luns;
            if (cfg.smoke && slots > 4096)
                break;
            uint32_t free_slots = slots / 100 ? slots / 100 : 1;
            x.occupied = slots - free_slots;
            rs[k] = (result){ 0 };
            set_label(&rs[k], "%ux%u %u slots", x.controllers, x.luns, slots);
            snprintf(rs[k].params, sizeof rs[k].params,
                     "{\"controllers\":%u,\"luns\":%u,\"slots\":%u,\"occupied\":%u,"
                     "\"occupancy\":%.4f,\"filled_with\":\"%s\"}",
                     x.controllers, x.luns, slots, x.occupied,
                     (double)x.occupied / (double)slots, pinned ? "rootfs pins" : "disks");
            if (!selected(c.name, rs[k].label))
                continue;
            g[k] = x;
            params[k] = &g[k];
            k++;
        }
        if (k == 0)
            continue;
        run_series(&c, params, k, rs, ratio);
        bool from64 = g[0].controllers * g[0].luns == 64;
        for (int j = 0; j < k; j++) {
            uint32_t slots = g[j].controllers * g[j].luns;
            if (from64) {
                snprintf(rs[j].note, sizeof rs[j].note, "%.3fx of 64-slot (%.3f-%.3f)",
                         ratio[j][0], ratio[j][1], ratio[j][2]);
                snprintf(rs[j].extra, sizeof rs[j].extra,
                         ",\"vs_64_slots\":%.4f,\"vs_64_slots_min\":%.4f,"
                         "\"vs_64_slots_max\":%.4f",
                         ratio[j][0], ratio[j][1], ratio[j][2]);
                if (slots == SCSICTL_MAX_SLOTS)
                    *(pinned ? &got.b2p_ratio : &got.b2_ratio) = ratio[j][0];
            }
            emit(&rs[j]);
        }
    }

    /* B3: N reservations of one shared disk+partition */
    {
        static const uint64_t Ns[] = { 10, 1000, 100000 };
        for (size_t i = 0; i < 3; i++) {
            uint64_t N = Ns[i];
            if (cfg.smoke && N > 1000)
                break;
            bench_case c = { "B3", shared_setup, shared_run, shared_teardown, N };
            result r = { .ref = N == 1000 ? REF_B3_NS : 0 };
            set_label(&r, "N=%" PRIu64, N);
            snprintf(r.params, sizeof r.params,
                     "{\"reservations\":%" PRIu64 ",\"unit\":\"ns per reservation\"}", N);
            if (!selected(c.name, r.label))
                continue;
            run_case(&c, &N, &r);
            double ph[3];
            shared_phases(N, r.iters, ph);
            snprintf(r.extra, sizeof r.extra,
                     ",\"phase_ns_per_reservation\":{\"reserve\":%.1f,\"map\":%.1f,"
                     "\"unmap\":%.1f}",
                     ph[0], ph[1], ph[2]);
            snprintf(r.note, sizeof r.note, "reserve %.0f + map %.0f + unmap %.0f", ph[0],
                     ph[1], ph[2]);
            got.b3[i] = r.med;
            emit(&r);
        }
    }

    /* B1 with a state file: the cost of durability per cycle */
    {
        bench_case c = { "B1_state_file", state_setup, cycle_run, state_teardown, 1 };
        result r = { .ref = -1 };
        set_label(&r, "1x64 empty");
        snprintf(r.params, sizeof r.params,
                 "{\"controllers\":1,\"luns\":64,\"occupied\":0,\"state_file\":true}");
        if (selected(c.name, r.label)) {
            run_case(&c, NULL, &r);
            snprintf(r.note, sizeof r.note, "fsync'd snapshot rewrite after each change");
            emit(&r);
        }
    }

    /* B4: reserve + unmap without map */
    {
        static const geom g = { 1, 64, 0, false };
        bench_case c = { "B4", cycle_setup, reserve_unmap_run, cycle_teardown, 1 };
        result r = { .ref = REF_B4_NS };
        set_label(&r, "1x64 empty");
        snprintf(r.params, sizeof r.params, "{\"controllers\":1,\"luns\":64,\"occupied\":0}");
        if (selected(c.name, r.label)) {
            run_case(&c, &g, &r);
            got.b4 = r.med;
            emit(&r);
        }
    }

    /* B5: reserve_for_rootfs */
    {
        bench_case c = { "B5", rootfs_setup, rootfs_run, rootfs_teardown, B5_BATCH };
        result r = { .ref = REF_B5_NS };
        set_label(&r, "%ux%u fresh", B5_CONTROLLERS, B5_LUNS);
        snprintf(r.params, sizeof r.params,
                 "{\"controllers\":%u,\"luns\":%u,\"pins_per_controller\":%" PRIu64
                 ",\"disk\":null}",
                 B5_CONTROLLERS, B5_LUNS, B5_BATCH);
        if (selected(c.name, r.label)) {
            run_case(&c, NULL, &r);
            emit(&r);
        }
    }

    /* Memory */
    {
        uint64_t n = cfg.smoke ? 1000 : 100000;
        mem_live_case(true, n);
        mem_live_case(false, n);
        rss_case(self, true, n);
        rss_case(self, false, n);
    }

    /* BC */
    bc_cases();
    bd_cases();

    print_targets();
    if (out_json) {
        fclose(out_json);
        printf("\nC results (JSON lines): %s\n", cfg.out_path);
    }
    return 0;
}
