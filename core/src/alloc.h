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

/* Object blocks (disks, mounts, reservations) go through a small per-
 * controller cache of freed blocks, so a steady reserve/map/unmap cycle
 * reuses memory instead of calling the allocator. Each block carries its
 * capacity in a header. */
#define SC_CACHE_SLOTS 16

typedef struct sc_cache {
    void *blocks[SC_CACHE_SLOTS]; /* header pointers */
    unsigned n;
} sc_cache;

void *sc_obj_alloc(const scsictl_allocator *a, sc_cache *c, size_t n);
void sc_obj_free(const scsictl_allocator *a, sc_cache *c, void *p);
void sc_cache_drain(const scsictl_allocator *a, sc_cache *c);

#endif
