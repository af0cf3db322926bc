/* bitmap.c — multi-level bitmap; see bitmap.h for the layout. */
#include "bitmap.h"

#include "alloc.h"

#define FULL UINT64_MAX

/* Sets the bits of `word` from `from` (0..63) upwards. */
static uint64_t bits_from(uint32_t from)
{
    return from >= 64 ? 0 : FULL << from;
}

bool slotmap_init(slotmap *m, uint32_t nbits, const scsictl_allocator *a)
{
    *m = (slotmap){ .nbits = nbits };
    if (nbits == 0)
        return true;
    uint32_t below = nbits; /* bits at the level being built */
    for (uint32_t k = 0; k < SLOTMAP_MAX_LEVELS; k++) {
        uint32_t words = (below + 63) / 64;
        m->level[k] = sc_calloc(a, words, sizeof(uint64_t));
        if (!m->level[k]) {
            slotmap_destroy(m, a);
            return false;
        }
        m->nwords[k] = words;
        m->nlevels = k + 1;
        /* Bits past the end count as taken, so they are never found free
         * and a partly used last word can still become "full". */
        if (below % 64)
            m->level[k][words - 1] = bits_from(below % 64);
        if (words == 1)
            break;
        below = words;
    }
    /* A tail word that is all padding is full: tell the levels above. */
    for (uint32_t k = 0; k + 1 < m->nlevels; k++)
        for (uint32_t w = 0; w < m->nwords[k]; w++)
            if (m->level[k][w] == FULL)
                m->level[k + 1][w >> 6] |= 1ull << (w & 63);
    return true;
}

void slotmap_destroy(slotmap *m, const scsictl_allocator *a)
{
    for (uint32_t k = 0; k < SLOTMAP_MAX_LEVELS; k++)
        sc_free(a, m->level[k]);
    *m = (slotmap){ 0 };
}

void slotmap_set(slotmap *m, uint32_t bit)
{
    for (uint32_t k = 0; k < m->nlevels; k++) {
        uint64_t *w = &m->level[k][bit >> 6];
        *w |= 1ull << (bit & 63);
        if (*w != FULL)
            return;
        bit >>= 6; /* this word became full: mark it one level up */
    }
}

void slotmap_clear(slotmap *m, uint32_t bit)
{
    for (uint32_t k = 0; k < m->nlevels; k++) {
        uint64_t *w = &m->level[k][bit >> 6];
        bool was_full = *w == FULL;
        *w &= ~(1ull << (bit & 63));
        if (!was_full)
            return;
        bit >>= 6; /* the word is no longer full: clear its summary bit */
    }
}

int64_t slotmap_first_clear(const slotmap *m)
{
    if (m->nlevels == 0)
        return -1;
    uint32_t top = m->nlevels - 1;
    if (m->level[top][0] == FULL)
        return -1;
    uint64_t index = 0;
    for (uint32_t k = m->nlevels; k-- > 0;) {
        uint64_t word = m->level[k][index];
        index = index * 64 + (uint64_t)__builtin_ctzll(~word);
    }
    return (int64_t)index;
}
