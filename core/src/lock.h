/* lock.h — the controller's mutex: one futex word.
 *
 *   word   meaning                  lock()                  unlock()
 *   0      free                     0 -> 1                  -
 *   1      held, nobody waits       set 2, sleep            1 -> 0
 *   2      held, maybe waiters      set 2, sleep            2 -> 0, wake one
 *
 * Why not pthread_mutex_t: a B1 cycle (reserve, map, unmap) takes the lock
 * eight times, and glibc's lock and unlock cost about 55 instructions a round
 * trip, out of line. Here the uncontended paths are inline: one atomic
 * instruction each, or, while the process has a single thread (a Lua script,
 * say), a plain load and store: with no other thread nobody can see the word
 * change, and the word still says "held", so a thread started inside the
 * critical section (by an allocator hook) waits like any other. glibc's own
 * mutex skips its atomics the same way. */
#ifndef SCSICTL_LOCK_H
#define SCSICTL_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define SC_SINGLE_THREADED() (__libc_single_threaded != 0)
#endif
#endif
#ifndef SC_SINGLE_THREADED
#define SC_SINGLE_THREADED() false
#endif

typedef struct sc_lock {
    _Atomic uint32_t word;
} sc_lock;

/* The slow paths (lock.c): take a word that was seen held, sleeping while
 * it stays held; wake one sleeper after an unlock that saw waiters. */
void sc_lock_wait(sc_lock *l);
void sc_lock_wake(sc_lock *l);

static inline void sc_lock_init(sc_lock *l)
{
    atomic_init(&l->word, 0);
}

/* Takes a free word; false if it is held. */
static inline bool sc_lock_take(sc_lock *l)
{
    if (SC_SINGLE_THREADED()) {
        if (atomic_load_explicit(&l->word, memory_order_relaxed) != 0)
            return false;
        atomic_store_explicit(&l->word, 1, memory_order_relaxed);
        return true;
    }
    uint32_t free = 0;
    return atomic_compare_exchange_strong_explicit(&l->word, &free, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void sc_lock_acquire(sc_lock *l)
{
    if (__builtin_expect(!sc_lock_take(l), 0))
        sc_lock_wait(l);
}

static inline void sc_lock_release(sc_lock *l)
{
    if (SC_SINGLE_THREADED() && atomic_load_explicit(&l->word, memory_order_relaxed) == 1) {
        atomic_store_explicit(&l->word, 0, memory_order_relaxed);
        return;
    }
    if (__builtin_expect(atomic_exchange_explicit(&l->word, 0, memory_order_release) != 1, 0))
        sc_lock_wake(l);
}

#endif
