/* alloc.h — every allocation of the core goes through the controller's
 * allocator, so tests can make any one of them fail. */
#ifndef SCSICTL_ALLOC_H
#define SCSICTL_ALLOC_H

#include "scsictl.h"

/* The allocator used when scsictl_options.allocator is NULL. */
extern const scsictl_allocator sc_default_allocator;

static inline void *sc_malloc(const scsictl_allocator *a, size_t n)
{
    return a->malloc_fn(a->ud, n ? n : 1);
}

static inline void *sc_calloc(const scsictl_allocator *a, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = sc_malloc(a, count * size);
    if (p)
        __builtin_memset(p, 0, count * size);
    return p;
}

static inline void sc_free(const scsictl_allocator *a, void *p)
{
    if (p)
        a->free_fn(a->ud, p);
}

/* Object blocks (disks, mounts, reservations, pins) go through a
 * per-controller cache of freed blocks, so reserving again after releases
 * reuses memory instead of calling the allocator. Blocks up to
 * SC_CACHE_MAX_BYTES are sized in 8-byte classes, each class a free list
 * threaded through the freed blocks themselves; the caller passes the size
 * it asked for when it frees, so blocks carry no header.
 *
 * The cache keeps at most as many bytes as the controller ever had in such
 * blocks at once (its high-water mark), and at least SC_CACHE_BUDGET: a
 * controller that once held a hundred thousand reservations reserves them
 * again from its own warm, contiguous blocks (from malloc's free lists each
 * allocation is a cache miss), and never holds more than twice its busiest
 * moment. Its hash maps keep their peak size the same way. scsictl_close()
 * hands the kept blocks back, scsictl_free() everything. */
#define SC_CACHE_CLASS_BYTES 8
#define SC_CACHE_MAX_BYTES 256
#define SC_CACHE_CLASSES (SC_CACHE_MAX_BYTES / SC_CACHE_CLASS_BYTES)
#define SC_CACHE_BUDGET ((size_t)64 << 10)

typedef struct sc_cache {
    void *head[SC_CACHE_CLASSES];
    size_t bytes; /* in the free lists */
    size_t live;  /* in cacheable blocks handed out and not freed */
    size_t peak;  /* the most `live` has been */
} sc_cache;

void *sc_obj_alloc(const scsictl_allocator *a, sc_cache *c, size_t n);
void sc_obj_free(const scsictl_allocator *a, sc_cache *c, void *p, size_t n);
void sc_cache_drain(const scsictl_allocator *a, sc_cache *c);

#endif
