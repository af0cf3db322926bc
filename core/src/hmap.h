/* hmap.h — an open-addressing hash map of item pointers.
 *
 * Linear probing, capacity a power of two, at most half full, deletion by
 * backward shift (no tombstones). The map stores each item's hash beside
 * it; the caller supplies the key comparison. Growth happens only in
 * hmap_reserve(), so a caller can make room first and then insert without
 * any failure point (this is what keeps reserve all-or-nothing). */
#ifndef SCSICTL_HMAP_H
#define SCSICTL_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scsictl.h"

typedef struct hmap_entry {
    uint64_t hash;
    void *item; /* NULL = empty */
} hmap_entry;

typedef struct hmap {
    hmap_entry *e;
    size_t cap; /* 0 or a power of two */
    size_t len;
} hmap;

typedef bool (*hmap_eq_fn)(const void *item, const void *key);

void hmap_destroy(hmap *m, const scsictl_allocator *a);

/* Makes room for `n` items in total. False when out of memory (unchanged). */
bool hmap_reserve(hmap *m, size_t n, const scsictl_allocator *a);

void *hmap_find(const hmap *m, uint64_t hash, const void *key, hmap_eq_fn eq);

/* Inserts an item not already present. Room must have been reserved. */
void hmap_insert(hmap *m, uint64_t hash, void *item);

/* Removes this exact item pointer. Returns false if it was not there. */
bool hmap_remove(hmap *m, uint64_t hash, const void *item);

/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->e[i].item) ... */

uint64_t hash_bytes(const void *data, size_t len);
uint64_t hash_mix(uint64_t x);

#endif
