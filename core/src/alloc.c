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

typedef struct header {
    size_t cap;
    size_t pad; /* keeps the object 16-byte aligned */
} header;

void *sc_obj_alloc(const scsictl_allocator *a, sc_cache *c, size_t n)
{
    /* First fit among cached blocks that are not much larger than asked. */
    for (unsigned i = 0; i < c->n; i++) {
        header *h = c->blocks[i];
        if (h->cap >= n && h->cap / 2 <= n + 64) {
            c->blocks[i] = c->blocks[--c->n];
            return h + 1;
        }
    }
    if (n > SIZE_MAX - sizeof(header))
        return NULL;
    header *h = sc_malloc(a, sizeof(header) + n);
    if (!h)
        return NULL;
    h->cap = n;
    return h + 1;
}

void sc_obj_free(const scsictl_allocator *a, sc_cache *c, void *p)
{
    if (!p)
        return;
    header *h = (header *)p - 1;
    if (c->n < SC_CACHE_SLOTS && h->cap <= 4096)
        c->blocks[c->n++] = h;
    else
        sc_free(a, h);
}

void sc_cache_drain(const scsictl_allocator *a, sc_cache *c)
{
    while (c->n)
        sc_free(a, c->blocks[--c->n]);
}
