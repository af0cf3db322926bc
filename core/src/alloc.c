/* alloc.c — the default allocator: plain malloc/realloc/free. */
#include "alloc.h"

#include <stdlib.h>

static void *default_malloc(void *ud, size_t n)
{
    (void)ud;
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
