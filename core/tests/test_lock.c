/* test_lock.c — the controller's mutex (core/src/lock.h), tested directly:
 * mutual exclusion under contention (the futex paths), and a lock taken
 * while the process had one thread (the plain load/store path) holding off
 * a thread started inside the critical section. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <time.h>

#include "../src/lock.h"
#include "test_util.h"

enum { WORKERS = 4, ROUNDS = 200000 };

static sc_lock counter_lock;
static uint64_t counter; /* plain on purpose: only the lock protects it */

static void *bump(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        sc_lock_acquire(&counter_lock);
        uint64_t v = counter;
        if (i % 64 == 0)
            sched_yield(); /* hold it long enough now and then for others to sleep */
        counter = v + 1;
        sc_lock_release(&counter_lock);
    }
    return NULL;
}

static void test_exclusion(void)
{
    TEST("lock: 4 threads x 200000 increments under contention lose none");
    sc_lock_init(&counter_lock);
    pthread_t th[WORKERS];
    for (int t = 0; t < WORKERS; t++)
        CHECK(pthread_create(&th[t], NULL, bump, NULL) == 0);
    for (int t = 0; t < WORKERS; t++)
        pthread_join(th[t], NULL);
    CHECK_EQ(counter, (uint64_t)WORKERS * ROUNDS);
    CHECK_EQ(atomic_load(&counter_lock.word), 0u); /* free, no waiter mark left */
}

static sc_lock gate;
static atomic_int entered;

static void *enter(void *arg)
{
    (void)arg;
    sc_lock_acquire(&gate);
    atomic_store(&entered, 1);
    sc_lock_release(&gate);
    return NULL;
}

static void test_single_threaded_hold(void)
{
    TEST("lock: taken with one thread, it holds off a thread started inside");
#ifdef __GLIBC__
    CHECK(SC_SINGLE_THREADED()); /* runs before any thread: the plain path */
#endif
    sc_lock_init(&gate);
    sc_lock_acquire(&gate);
    CHECK_EQ(atomic_load(&gate.word), 1u);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, enter, NULL) == 0);
    CHECK(!SC_SINGLE_THREADED());
    struct timespec pause = { 0, 50 * 1000 * 1000 };
    nanosleep(&pause, NULL); /* time for it to try; it must still be waiting */
    CHECK_EQ(atomic_load(&entered), 0);
    sc_lock_release(&gate); /* now multi-threaded: the atomic path */
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&entered), 1);
    CHECK_EQ(atomic_load(&gate.word), 0u);
}

int main(void)
{
    test_single_threaded_hold(); /* first: needs a process with one thread */
    test_exclusion();
    return tu_finish();
}
