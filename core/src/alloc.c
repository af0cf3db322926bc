/* alloc.c — the default allocator (malloc/realloc/free) and the object
 * cache. */
#define _DEFAULT_SOURCE /* madvise, posix_memalign */

#include "alloc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Blocks this big are hash-map tables (or a big snapshot). A map of a
 * million reservations is 32 MiB, and a lookup at a random place in it
 * misses the TLB as well as the cache; on Linux, transparent huge pages
 * (often enabled for those who ask only) take the TLB miss away. */
#define HUGE_BLOCK ((size_t)4 << 20)
#define HUGE_PAGE ((size_t)2 << 20)

static void *default_malloc(void *ud, size_t n)
{
    (void)ud;
#ifdef MADV_HUGEPAGE
    if (n >= HUGE_BLOCK) {
        void *p;
        if (posix_memalign(&p, HUGE_PAGE, n) != 0)
            return NULL;
        /* Advice only. The block may reuse memory the process already
         * touched (small pages): drop those pages first, so that the first
         * write (calloc's zeroing) faults in huge ones. */
        size_t whole = n & ~(HUGE_PAGE - 1);
        (void)madvise(p, whole, MADV_HUGEPAGE);
        (void)madvise(p, whole, MADV_DONTNEED);
        return p;
    }
#endif
    return malloc(n);
}

static void *default_realloc(void *ud, void *p, size_t n)
{
    (void)ud;
    return realloc(p, n);
}

static void default_free(void *ud, void *p)
{
    (void)ud;
    free(p);
}

const scsictl_allocator sc_default_allocator = {
    default_malloc, default_realloc, default_free, NULL
};

/* The class of an n-byte block, or -1 when blocks of that size are not
 * cached. A class-k block holds (k + 1) * 8 bytes. */
static int class_of(size_t n)
{
    if (n == 0 || n > SC_CACHE_MAX_BYTES)
        return -1;
    return (int)((n - 1) / SC_CACHE_CLASS_BYTES);
}

static size_t class_bytes(int k)
{
    return (size_t)(k + 1) * SC_CACHE_CLASS_BYTES;
}

void *sc_obj_alloc(const scsictl_allocator *a, sc_cache *c, size_t n)
{
    int k = class_of(n);
    if (k < 0)
        return sc_malloc(a, n);
    size_t cb = class_bytes(k);
    void *p = c->head[k];
    if (p) {
        memcpy(&c->head[k], p, sizeof(void *)); /* the next free block */
        c->bytes -= cb;
    } else if (!(p = sc_malloc(a, cb))) {
        return NULL;
    }
    c->live += cb;
    if (c->live > c->peak)
        c->peak = c->live;
    return p;
}

void sc_obj_free(const scsictl_allocator *a, sc_cache *c, void *p, size_t n)
{
    if (!p)
        return;
    int k = class_of(n);
    if (k < 0) {
        sc_free(a, p);
        return;
    }
    size_t cb = class_bytes(k);
    c->live -= cb;
    size_t budget = c->peak > SC_CACHE_BUDGET ? c->peak : SC_CACHE_BUDGET;
    if (c->bytes + cb > budget) {
        sc_free(a, p);
        return;
    }
    memcpy(p, &c->head[k], sizeof(void *));
    c->head[k] = p;
    c->bytes += cb;
}

void sc_cache_drain(const scsictl_allocator *a, sc_cache *c)
{
    for (int k = 0; k < SC_CACHE_CLASSES; k++) {
        while (c->head[k]) {
            void *p = c->head[k];
            memcpy(&c->head[k], p, sizeof(void *));
            sc_free(a, p);
        }
    }
    c->bytes = 0;
}
