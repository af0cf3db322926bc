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

#endif
