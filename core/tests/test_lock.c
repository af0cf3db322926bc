/* test_lock.c — the controller's mutex (core/src/lock.h): mutual exclusion
 * under contention, and the single-threaded mode (no locking) that the Lua
 * binding uses, both directly and through a controller. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>

#include "../src/lock.h"
#include "test_util.h"

enum { WORKERS = 4, ROUNDS = 100000 };

static sc_lock counter_lock;
static uint64_t counter; /* plain on purpose: only the lock protects it */

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        sc_lock_acquire(&counter_lock);
        uint64_t v = counter;
        if (i % 64 == 0)
            sched_yield(); /* hold it now and then while others wait */
        counter = v + 1;
        sc_lock_release(&counter_lock);
    }
    return NULL;
}

static void test_exclusion(void)
{
    TEST("mutex: increments under contention are not lost");
    CHECK(sc_lock_init(&counter_lock, false));
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&th[i], NULL, bump, NULL);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(counter, (uint64_t)WORKERS * ROUNDS);
    sc_lock_destroy(&counter_lock);
}

static void test_single_threaded(void)
{
    TEST("single-threaded: no locking, and a controller works the same");
    sc_lock l;
    CHECK(sc_lock_init(&l, true));
    sc_lock_acquire(&l);
    /* with locking off the mutex is not taken: a trylock succeeds */
    CHECK_EQ(pthread_mutex_trylock(&l.mu), 0);
    pthread_mutex_unlock(&l.mu);
    sc_lock_release(&l);
    sc_lock_destroy(&l);

    scsictl_options o = { .controllers = 1, .single_threaded = true };
    scsictl *ctl = NULL;
    scsictl_error err;
    CHECK_CODE(scsictl_new(&o, &ctl, &err), SCSICTL_OK);
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_id id;
    char path[64];
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &id), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &id, path, sizeof path, &err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_0_0");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &id, &err), SCSICTL_OK);
    rec_check_balanced(r, true);
    scsictl_set_single_threaded(ctl, false); /* locking again: still works */
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &id), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &id, &err), SCSICTL_OK);
    scsictl_set_single_threaded(NULL, true); /* a no-op */
    free(r);
    scsictl_free(ctl);
}

int main(void)
{
    test_exclusion();
    test_single_threaded();
    return tu_finish();
}
