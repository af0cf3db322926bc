/* bitmap.h — the slot allocator: a multi-level bitmap of taken slots.
 *
 * Level 0 has one bit per slot (set = taken). Each higher level has one bit
 * per word of the level below, set when that word is full. The top level is
 * a single word, so the lowest free slot is found with one count-trailing-
 * zeros per level: at most 4 for 2^20 slots, whatever the occupancy. */
#ifndef SCSICTL_BITMAP_H
#define SCSICTL_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "scsictl.h"

#define SLOTMAP_MAX_LEVELS 4 /* 64^4 > 2^20 */

typedef struct slotmap {
    uint32_t nbits;
    uint32_t nlevels; /* 0 when nbits is 0 */
    uint32_t nwords[SLOTMAP_MAX_LEVELS];
    uint64_t *level[SLOTMAP_MAX_LEVELS];
} slotmap;

/* All bits clear. Returns false when out of memory (nothing to free). */
bool slotmap_init(slotmap *m, uint32_t nbits, const scsictl_allocator *a);
void slotmap_destroy(slotmap *m, const scsictl_allocator *a);

static inline bool slotmap_test(const slotmap *m, uint32_t bit)
{
    return (m->level[0][bit >> 6] >> (bit & 63)) & 1u;
}

void slotmap_set(slotmap *m, uint32_t bit);
void slotmap_clear(slotmap *m, uint32_t bit);

/* Lowest clear bit, or -1 when every bit is set. */
int64_t slotmap_first_clear(const slotmap *m);

#endif
