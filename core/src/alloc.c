/* alloc.c — the default allocator (malloc/realloc/free). */
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
