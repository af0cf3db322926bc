/*
 * test_threads.c — the controller under several threads (spec §7: every
 * function thread-safe, backend calls made with no lock held, busy fails
 * fast).
 *
 * 1. A slow backend call on one disk does not block another disk: thread A
 *    parks inside add_scsi_disk until thread B has run a whole reserve /
 *    map / unmap cycle on another disk (with a timeout, so a held lock shows
 *    up as a failure rather than a hang).
 * 2. Stress: threads cycle reserve / map / unmap on their own disks and on
 *    one shared disk (busy expected and retried), with random backend
 *    failures and callbacks that sleep a little and call back into the
 *    controller. Atomic per-slot flags check that adds/removes and
 *    mounts/unmounts alternate; at the end no slot is used and every add
 *    was matched by a remove, every mount by an unmount.
 * 3. The same stress with a state file whose writes fail now and then (its
 *    directory is swapped for a file by another thread): the threads' writes
 *    go out together (group commit), io is retried like a backend failure,
 *    and at the end the file equals the state in memory.
 * Run it under ThreadSanitizer with -DSCSICTL_TSAN=ON.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sched.h>
#include <time.h>

#define NTHREADS 6
#define ITERS 250
#define NSLOTS 8
#define NPART 3

static scsictl *g_ctl;
static scsictl_guest g_guest;
static uint32_t g_luns = 4;

static atomic_long n_add, n_remove, n_mount, n_unmount, n_eject, n_fail, n_busy, n_calls;
static atomic_int attached[NSLOTS], ejected[NSLOTS], mounted[NSLOTS][NPART];
static atomic_int fail_pct;

static _Thread_local uint64_t t_rng;

static uint64_t trnd(void) { return tu_splitmix64(&t_rng); }

static void nap(void)
{
    if (trnd() % 4) return;
    struct timespec ts = {0, (long)(trnd() % 50000)};
    nanosleep(&ts, NULL);
}

/* Common prologue of every callback: maybe sleep, maybe re-enter, maybe
 * fail. Returns 1 to fail. */
static int prologue(char *msg, size_t n)
{
    atomic_fetch_add(&n_calls, 1);
    nap();
    if (trnd() % 8 == 0) {
        scsictl_stats s;
        scsictl_get_stats(g_ctl, &s);
        if (!s.busy) tu_check(false, __FILE__, __LINE__, "stats.busy false inside a callback");
    }
    if ((int)(trnd() % 100) < atomic_load(&fail_pct)) {
        atomic_fetch_add(&n_fail, 1);
        snprintf(msg, n, "random failure");
        return 1;
    }
    return 0;
}

/* The end of a callback that succeeded: counted under its kind. */
static int succeeded(atomic_long *count)
{
    atomic_fetch_add(count, 1);
    return 0;
}

static int slot_index(uint32_t c, uint32_t l)
{
    int s = (int)(c * g_luns + l);
    if (s < 0 || s >= NSLOTS) {
        tu_check(false, __FILE__, __LINE__, "slot %u:%u outside the geometry", c, l);
        return 0;
    }
    return s;
}

static int cb_add(void *u, const scsictl_disk_config *a, uint32_t c, uint32_t l, char *m, size_t n)
{
    (void)u;
    (void)a;
    if (prologue(m, n)) return 1;
    int s = slot_index(c, l);
    if (atomic_exchange(&attached[s], 1) != 0)
        tu_check(false, __FILE__, __LINE__, "P1: add at %u:%u while attached", c, l);
    atomic_store(&ejected[s], 0);
    return succeeded(&n_add);
}

static int cb_remove(void *u, uint32_t c, uint32_t l, char *m, size_t n)
{
    (void)u;
    if (prologue(m, n)) return 1;
    int s = slot_index(c, l);
    for (int p = 0; p < NPART; p++)
        if (atomic_load(&mounted[s][p]))
            tu_check(false, __FILE__, __LINE__, "P2: remove at %u:%u with %d mounted", c, l, p);
    if (g_guest == SCSICTL_GUEST_LINUX && atomic_load(&ejected[s]) != 1)
        tu_check(false, __FILE__, __LINE__, "P1: remove at %u:%u without eject", c, l);
    if (atomic_exchange(&attached[s], 0) != 1)
        tu_check(false, __FILE__, __LINE__, "P1: remove at %u:%u while not attached", c, l);
    return succeeded(&n_remove);
}

static int cb_eject(void *u, uint32_t c, uint32_t l, char *m, size_t n)
{
    (void)u;
    if (prologue(m, n)) return 1;
    int s = slot_index(c, l);
    if (atomic_load(&attached[s]) != 1)
        tu_check(false, __FILE__, __LINE__, "eject at %u:%u while not attached", c, l);
    if (atomic_exchange(&ejected[s], 1) != 0)
        tu_check(false, __FILE__, __LINE__, "eject at %u:%u twice", c, l);
    return succeeded(&n_eject);
}

static int do_mount(uint32_t c, uint32_t l, uint64_t p, bool on)
{
    int s = slot_index(c, l);
    if (p >= NPART) {
        tu_check(false, __FILE__, __LINE__, "partition %llu", (unsigned long long)p);
        return 0;
    }
    if (on && (atomic_load(&attached[s]) != 1 || atomic_load(&ejected[s])))
        tu_check(false, __FILE__, __LINE__, "P2: mount on %u:%u not attached", c, l);
    if (atomic_exchange(&mounted[s][p], on ? 1 : 0) != (on ? 0 : 1))
        tu_check(false, __FILE__, __LINE__, "P1: %s %u:%u:%llu", on ? "mount" : "unmount", c, l,
                 (unsigned long long)p);
    return succeeded(on ? &n_mount : &n_unmount);
}

static int cb_lmount(void *u, const scsictl_linux_settings *s, char *m, size_t n)
{
    (void)u;
    if (prologue(m, n)) return 1;
    return do_mount(s->controller, s->lun, s->partition, true);
}

static int cb_lunmount(void *u, const scsictl_linux_settings *s, char *m, size_t n)
{
    (void)u;
    if (prologue(m, n)) return 1;
    return do_mount(s->controller, s->lun, s->partition, false);
}

static int win_parse(const scsictl_windows_settings *s, uint32_t *c, uint64_t *p)
{
    unsigned cc = 0, ll = 0;
    unsigned long long pp = 0;
    if (!s->container_path ||
        sscanf(s->container_path, "C:\\mounts\\scsi\\%u_%u_%llu", &cc, &ll, &pp) != 3 ||
        ll != s->lun) {
        tu_check(false, __FILE__, __LINE__, "windows container path %s",
                 s->container_path ? s->container_path : "(null)");
        return -1;
    }
    *c = cc;
    *p = pp;
    return 0;
}

/* A Windows mount (on) or unmount: the slot read back from the path. */
static int win_mount(const scsictl_windows_settings *s, char *m, size_t n, bool on)
{
    if (prologue(m, n)) return 1;
    uint32_t c;
    uint64_t p;
    if (win_parse(s, &c, &p)) return 0;
    return do_mount(c, s->lun, p, on);
}

static int cb_wmount(void *u, const scsictl_windows_settings *s, char *m, size_t n)
{
    (void)u;
    return win_mount(s, m, n, true);
}

static int cb_wunmount(void *u, const scsictl_windows_settings *s, char *m, size_t n)
{
    (void)u;
    return win_mount(s, m, n, false);
}

static scsictl_callbacks g_cb = {
    NULL, cb_add, cb_remove, cb_lmount, cb_lunmount, cb_eject, cb_wmount, cb_wmount, cb_wunmount,
};

/* ------------------------------------------------------------------------ */
/* 1. a slow call on one disk does not block another disk                    */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cv = PTHREAD_COND_INITIALIZER;
static int parked, released_park;

static int park_add(void *u, const scsictl_disk_config *a, uint32_t c, uint32_t l, char *m,
                    size_t n)
{
    (void)u; (void)c; (void)l; (void)m; (void)n;
    if (strcmp(a->host_path, "/slow") != 0) return 0;
    pthread_mutex_lock(&park_mu);
    parked = 1;
    pthread_cond_broadcast(&park_cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (!released_park) {
        if (pthread_cond_timedwait(&park_cv, &park_mu, &until) == ETIMEDOUT) break;
    }
    int ok = released_park;
    pthread_mutex_unlock(&park_mu);
    tu_check(ok, __FILE__, __LINE__, "the other disk's cycle did not finish while a call was slow");
    return 0;
}

static int ok_cb(void *u, uint32_t c, uint32_t l, char *m, size_t n)
{
    (void)u; (void)c; (void)l; (void)m; (void)n;
    return 0;
}

static int ok_ls(void *u, const scsictl_linux_settings *s, char *m, size_t n)
{
    (void)u; (void)s; (void)m; (void)n;
    return 0;
}

static scsictl_callbacks park_cb = {NULL, park_add, ok_cb, ok_ls, ok_ls, ok_cb, NULL, NULL, NULL};

static void *slow_thread(void *arg)
{
    scsictl_id *id = arg;
    scsictl_error err;
    int rc = scsictl_map(g_ctl, &park_cb, id, NULL, 0, &err);
    tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "slow map: %s", scsictl_code_name(rc));
    return NULL;
}

static void test_no_lock_held(void)
{
    TEST("threads: a slow call does not block other disks");
    g_ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    scsictl_id slow, fast, other;
    scsictl_error err;
    CHECK_CODE(tu_reserve(g_ctl, "/slow", 0, &slow), SCSICTL_OK);
    pthread_t th;
    pthread_create(&th, NULL, slow_thread, &slow);
    pthread_mutex_lock(&park_mu);
    while (!parked) pthread_cond_wait(&park_cv, &park_mu);
    pthread_mutex_unlock(&park_mu);
    /* A is inside add_scsi_disk now */
    CHECK_CODE(tu_reserve(g_ctl, "/fast", 0, &fast), SCSICTL_OK);
    CHECK_CODE(scsictl_map(g_ctl, &park_cb, &fast, NULL, 0, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(g_ctl, &park_cb, &fast, &err), SCSICTL_OK);
    CHECK_CODE(tu_reserve(g_ctl, "/slow", 0, &other), SCSICTL_E_BUSY);
    scsictl_stats s;
    scsictl_get_stats(g_ctl, &s);
    CHECK(s.busy);
    CHECK_CODE(scsictl_close(g_ctl, &err), SCSICTL_E_BUSY);
    pthread_mutex_lock(&park_mu);
    released_park = 1;
    pthread_cond_broadcast(&park_cv);
    pthread_mutex_unlock(&park_mu);
    pthread_join(th, NULL);
    CHECK_STATE(g_ctl, "0:0 /slow attached r1 [0 mounted 1]");
    scsictl_free(g_ctl);
    g_ctl = NULL;
}

/* ------------------------------------------------------------------------ */
/* 2. stress                                                                 */
/* ------------------------------------------------------------------------ */

static atomic_long n_io;

static int retry_busy(int rc)
{
    if (rc == SCSICTL_E_IO) { /* the state file could not be written: retry */
        atomic_fetch_add(&n_io, 1);
        sched_yield();
        return 1;
    }
    if (rc == SCSICTL_E_BUSY) {
        atomic_fetch_add(&n_busy, 1);
        sched_yield();
        return 1;
    }
    return 0;
}

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    t_rng = 0x1234567ull * (uint64_t)(t + 1);
    char own[16];
    snprintf(own, sizeof own, "/t%d", t);
    scsictl_error err;
    for (int it = 0; it < ITERS; it++) {
        bool shared = trnd() % 5 < 2;
        const char *path = shared ? "/shared" : own;
        uint64_t part = shared ? (uint64_t)(t % NPART) : trnd() % 2;
        scsictl_id id;
        int rc, guard = 0;
        while (retry_busy(rc = tu_reserve(g_ctl, path, part, &id)) && guard++ < 1000000) {}
        if (!tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "thread %d reserve %s: %s", t, path,
                      scsictl_code_name(rc)))
            continue;
        /* map, retrying busy and (sometimes) backend failures */
        bool mapped = false;
        for (guard = 0; guard < 1000000; guard++) {
            char gp[SCSICTL_GUEST_PATH_MAX];
            rc = scsictl_map(g_ctl, &g_cb, &id, gp, sizeof gp, &err);
            if (retry_busy(rc)) continue;
            if (rc == SCSICTL_OK) {
                mapped = true;
                char want[SCSICTL_GUEST_PATH_MAX];
                scsictl_reservation_info *ri = NULL;
                if (scsictl_get_reservation(g_ctl, &id, &ri, &err) == SCSICTL_OK) {
                    scsictl_guest_path(g_guest, ri->controller, ri->lun, part, want, sizeof want);
                    tu_check(strcmp(gp, want) == 0 && strcmp(ri->host_path, path) == 0,
                             __FILE__, __LINE__, "map path %s, want %s", gp, want);
                    scsictl_info_free(g_ctl, ri);
                }
                break;
            }
            if (!tu_check(rc == SCSICTL_E_BACKEND, __FILE__, __LINE__, "thread %d map: %s (%s)",
                          t, scsictl_code_name(rc), err.message))
                break;
            if (trnd() % 2) break; /* give up */
        }
        (void)mapped;
        if (trnd() % 3 == 0) nap();
        for (guard = 0; guard < 1000000; guard++) {
            rc = scsictl_unmap(g_ctl, &g_cb, &id, &err);
            if (retry_busy(rc)) continue;
            if (rc == SCSICTL_OK) break;
            if (!tu_check(rc == SCSICTL_E_BACKEND, __FILE__, __LINE__, "thread %d unmap: %s (%s)",
                          t, scsictl_code_name(rc), err.message))
                break;
        }
        tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "thread %d: release converged", t);
        if (atomic_load(&tu_failed) > 30) break;
    }
    return NULL;
}

/* Storage that fails: the state file's directory swapped for a file. */
static char g_dir[256];
static atomic_int g_stop_toggling;

static void *toggler(void *arg)
{
    (void)arg;
    char away[300];
    snprintf(away, sizeof away, "%s.away", g_dir);
    struct timespec ts = { 0, 2000000 };
    while (!atomic_load(&g_stop_toggling)) {
        CHECK(rename(g_dir, away) == 0);
        int fd = open(g_dir, O_WRONLY | O_CREAT | O_EXCL, 0600);
        CHECK(fd >= 0);
        if (fd >= 0) close(fd);
        nanosleep(&ts, NULL);
        CHECK(unlink(g_dir) == 0);
        CHECK(rename(away, g_dir) == 0);
        nanosleep(&ts, NULL);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static char *read_file(const char *path, size_t *n)
{
    char *buf = NULL;
    scsictl_error err;
    return scsictl_read_file(path, NULL, &buf, n, &err) == SCSICTL_OK ? buf : NULL;
}

static void test_stress(scsictl_guest guest, bool with_file)
{
    TEST(with_file ? "threads: stress with a failing state file, linux"
         : guest == SCSICTL_GUEST_LINUX ? "threads: stress, linux" : "threads: stress, windows");
    g_guest = guest;
    g_luns = 4;
    g_ctl = tu_new(2, 4, guest);
    char path[300];
    pthread_t tog;
    atomic_store(&n_io, 0);
    if (with_file) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(g_dir, sizeof g_dir, "%s/scsictl-threads-XXXXXX", base);
        CHECK(mkdtemp(g_dir) != NULL);
        snprintf(path, sizeof path, "%s/state", g_dir);
        scsictl_error err;
        CHECK_CODE(scsictl_set_state_file(g_ctl, path, &err), SCSICTL_OK);
        atomic_store(&g_stop_toggling, 0);
        pthread_create(&tog, NULL, toggler, NULL);
    }
    atomic_store(&n_add, 0);
    atomic_store(&n_remove, 0);
    atomic_store(&n_mount, 0);
    atomic_store(&n_unmount, 0);
    atomic_store(&n_eject, 0);
    atomic_store(&n_fail, 0);
    atomic_store(&n_busy, 0);
    atomic_store(&n_calls, 0);
    atomic_store(&fail_pct, 15);
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++)
        pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
    if (with_file) {
        atomic_store(&g_stop_toggling, 1);
        pthread_join(tog, NULL);
        CHECK(atomic_load(&n_io) > 0); /* the failures were met */
        size_t n = 0, m = 0;
        char *f = read_file(path, &n), *snap = NULL;
        scsictl_error err;
        CHECK_CODE(scsictl_save(g_ctl, &snap, &m, &err), SCSICTL_OK);
        CHECK(f && snap && n == m && memcmp(f, snap, n) == 0);
        free(f);
        scsictl_info_free(g_ctl, snap);
    }

    scsictl_stats s;
    scsictl_get_stats(g_ctl, &s);
    CHECK_EQ(s.used, 0);
    CHECK_EQ(s.disks, 0);
    CHECK_EQ(s.reservations, 0);
    CHECK(!s.busy);
    CHECK_STATE(g_ctl, "");
    CHECK_EQ(atomic_load(&n_add), atomic_load(&n_remove));
    CHECK_EQ(atomic_load(&n_mount), atomic_load(&n_unmount));
    if (guest == SCSICTL_GUEST_LINUX) CHECK_EQ(atomic_load(&n_eject), atomic_load(&n_remove));
    else CHECK_EQ(atomic_load(&n_eject), 0);
    CHECK(atomic_load(&n_add) > 0 && atomic_load(&n_mount) > 0);
    for (int i = 0; i < NSLOTS; i++) {
        CHECK_EQ(atomic_load(&attached[i]), 0);
        for (int p = 0; p < NPART; p++) CHECK_EQ(atomic_load(&mounted[i][p]), 0);
    }
    printf("%s: %ld calls, %ld adds, %ld mounts, %ld injected failures, %ld busy retries, "
           "%ld io retries\n",
           guest == SCSICTL_GUEST_LINUX ? "linux" : "windows", atomic_load(&n_calls),
           atomic_load(&n_add), atomic_load(&n_mount), atomic_load(&n_fail),
           atomic_load(&n_busy), atomic_load(&n_io));
    scsictl_free(g_ctl);
    g_ctl = NULL;
    if (with_file) {
        char rm[300];
        snprintf(rm, sizeof rm, "rm -rf '%s'", g_dir);
        CHECK(system(rm) == 0);
    }
}

int main(void)
{
    test_no_lock_held();
    test_stress(SCSICTL_GUEST_LINUX, false);
    test_stress(SCSICTL_GUEST_WINDOWS, false);
    test_stress(SCSICTL_GUEST_LINUX, true);
    return tu_finish();
}
