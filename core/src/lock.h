/* lock.h — the controller's mutex: a pthread mutex, or none for a
 * controller declared single-threaded (scsictl_options.single_threaded,
 * like SQLite's no-mutex open flag): every call then comes from one thread
 * at a time, as from a Lua state, and locking would only cost time. */
#ifndef SCSICTL_LOCK_H
#define SCSICTL_LOCK_H

#include <pthread.h>
#include <stdbool.h>

typedef struct sc_lock {
    pthread_mutex_t mu;
    bool off; /* single-threaded: no locking */
} sc_lock;

/* false if the mutex cannot be made (it is always made, so that a
 * controller can be switched to locking before it is shared). */
static inline bool sc_lock_init(sc_lock *l, bool off)
{
    l->off = off;
    return pthread_mutex_init(&l->mu, NULL) == 0;
}

static inline void sc_lock_destroy(sc_lock *l)
{
    pthread_mutex_destroy(&l->mu);
}

static inline void sc_lock_acquire(sc_lock *l)
{
    if (!l->off)
        pthread_mutex_lock(&l->mu);
}

static inline void sc_lock_release(sc_lock *l)
{
    if (!l->off)
        pthread_mutex_unlock(&l->mu);
}

#endif
