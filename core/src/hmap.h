/* hmap.h — an open-addressing hash map of item pointers.
 *
 * Linear probing, capacity a power of two, at most half full, deletion by
 * backward shift (no tombstones). Growth happens only in hmap_reserve(), so
 * a caller can make room first and then insert without any failure point
 * (this is what keeps reserve all-or-nothing).
 *
 * Two slot layouts, chosen at hmap_init():
 * - with hash_of: a slot is just the item pointer (8 bytes). Lookups
 *   compare keys through eq(); moving items (growth, removal) asks
 *   hash_of() for an item's hash. Map memory is most of what a live
 *   reservation costs, so the disk and mount maps use this.
 * - without: a slot keeps the item's hash beside it (16 bytes), so probes
 *   and moves never touch other items. The reservation map uses this: its
 *   keys are random, every access lands on a cold part of a big map, and a
 *   visit to each neighbouring item would cost a cache miss. */
#ifndef SCSICTL_HMAP_H
#define SCSICTL_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scsictl.h"

typedef bool (*hmap_eq_fn)(const void *item, const void *key);
typedef uint64_t (*hmap_hash_fn)(const void *item);

typedef union hmap_word {
    void *item;
    uint64_t hash;
} hmap_word;

typedef struct hmap {
    hmap_word *w;         /* cap slots of `stride` words: item [, hash] */
    size_t cap;           /* 0 or a power of two */
    size_t len;
    size_t stride;        /* 1: item only; 2: item and its hash */
    hmap_hash_fn hash_of; /* NULL when the slots keep the hashes */
} hmap;

/* hash_of NULL: slots keep the hashes (see above). */
void hmap_init(hmap *m, hmap_hash_fn hash_of);
void hmap_destroy(hmap *m, const scsictl_allocator *a);

bool hmap_grow(hmap *m, size_t n, const scsictl_allocator *a);

/* Makes room for `n` items in total. False when out of memory (unchanged).
 * Inline: there is almost always room already. */
static inline bool hmap_reserve(hmap *m, size_t n, const scsictl_allocator *a)
{
    return n <= m->cap / 2 || hmap_grow(m, n, a);
}

void *hmap_find(const hmap *m, uint64_t hash, const void *key, hmap_eq_fn eq);

/* Maps with fewer slots than this stay in the caches: prefetching their
 * slots costs more than it saves. */
#define HMAP_PREFETCH_MIN_CAP 4096

/* Starts loading the slots where a probe for hash begins: the slot's cache
 * line and the next one, since at a load near 1/2 a probe run often
 * crosses into it. No effect on the map's contents. always_inline: GCC 12
 * takes a function that only prefetches for a const one and drops calls
 * to it. */
__attribute__((always_inline)) static inline void hmap_prefetch(const hmap *m, uint64_t hash)
{
    if (m->cap >= HMAP_PREFETCH_MIN_CAP) {
        const char *p = (const char *)&m->w[((size_t)hash & (m->cap - 1)) * m->stride];
        __builtin_prefetch(p);
        __builtin_prefetch(p + 64);
    }
}

/* Inserts an item not already present. Room must have been reserved. */
void hmap_insert(hmap *m, uint64_t hash, void *item);

/* Inserts item unless an item equal to key is present (then returns false
 * and changes nothing): one probe instead of a find and an insert. Room
 * must have been reserved. */
bool hmap_insert_unique(hmap *m, uint64_t hash, void *item, const void *key, hmap_eq_fn eq);

/* Removes this exact item pointer, inserted with this hash. Returns false
 * if it was not there. */
bool hmap_remove(hmap *m, uint64_t hash, const void *item);

/* The slot of this exact item, inserted with this hash, or SIZE_MAX if it
 * is not there. */
size_t hmap_index_of(const hmap *m, uint64_t hash, const void *item);

/* The item in slot i (NULL when empty), for iteration:
 * for (size_t i = 0; i < m->cap; i++) if (hmap_item(m, i)) ... */
static inline void *hmap_item(const hmap *m, size_t i)
{
    return m->w[i * m->stride].item;
}

uint64_t hash_bytes(const void *data, size_t len);

#endif
