/* lock.c — the slow paths of the controller's mutex (see lock.h). */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lock.h"

static void futex(sc_lock *l, int op, uint32_t val)
{
    (void)syscall(SYS_futex, &l->word, op, val, NULL, NULL, 0);
}

void sc_lock_wait(sc_lock *l)
{
    /* Take the word with 2, not 1: we cannot know whether others sleep
     * besides us, so the unlock after ours must wake one (at worst a wake
     * with nobody asleep). FUTEX_WAIT returns at once if the word is no
     * longer 2, so a wake between the exchange and the wait is not lost. */
    while (atomic_exchange_explicit(&l->word, 2, memory_order_acquire) != 0)
        futex(l, FUTEX_WAIT_PRIVATE, 2);
}

void sc_lock_wake(sc_lock *l)
{
    futex(l, FUTEX_WAKE_PRIVATE, 1);
}
