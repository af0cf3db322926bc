/* hmap.c — open addressing with linear probing; see hmap.h. */
#include "hmap.h"

#include <string.h>

#include "alloc.h"

uint64_t hash_mix(uint64_t x)
{
    /* splitmix64 finaliser: every input bit affects every output bit. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* The last len (< 8) bytes at p as a word, with whole loads (a byte loop
 * into a word stalls on the reload). Distinct tails may share a word: the
 * length is mixed in separately. */
static uint64_t load_tail(const unsigned char *p, size_t len, size_t total)
{
    uint64_t w = 0;
    if (len == 0)
        return 0;
    if (total >= 8) { /* the last 8 bytes, overlapping words already read */
        memcpy(&w, p + len - 8, 8);
        return w;
    }
    if (len >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + len - 4, 4);
        return (uint64_t)a << 32 | b;
    }
    return (uint64_t)p[0] << 16 | (uint64_t)p[len / 2] << 8 | p[len - 1];
}

uint64_t hash_bytes(const void *data, size_t len)
{
    /* One multiply and shift per 8 bytes (a short dependency chain), then
     * the full finaliser so that every byte reaches the low bits the map
     * indexes with. */
    const unsigned char *p = data;
    const size_t total = len;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ len;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        len -= 8;
    }
    return hash_mix(h ^ load_tail(p, len, total));
}

void hmap_destroy(hmap *m, const scsictl_allocator *a)
{
    sc_free(a, m->e);
    *m = (hmap){ 0 };
}

static void place(hmap_entry *e, size_t cap, uint64_t hash, void *item)
{
    size_t i = (size_t)hash & (cap - 1);
    while (e[i].item)
        i = (i + 1) & (cap - 1);
    e[i].hash = hash;
    e[i].item = item;
}

bool hmap_reserve(hmap *m, size_t n, const scsictl_allocator *a)
{
    if (n <= m->cap / 2)
        return true;
    size_t cap = m->cap ? m->cap : 8;
    while (n > cap / 2) {
        if (cap > SIZE_MAX / 4 / sizeof(hmap_entry))
            return false;
        cap *= 2;
    }
    hmap_entry *e = sc_calloc(a, cap, sizeof *e);
    if (!e)
        return false;
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].item)
            place(e, cap, m->e[i].hash, m->e[i].item);
    sc_free(a, m->e);
    m->e = e;
    m->cap = cap;
    return true;
}

void *hmap_find(const hmap *m, uint64_t hash, const void *key, hmap_eq_fn eq)
{
    if (m->len == 0)
        return NULL;
    for (size_t i = (size_t)hash & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->e[i].item)
            return NULL;
        if (m->e[i].hash == hash && eq(m->e[i].item, key))
            return m->e[i].item;
    }
}

void hmap_insert(hmap *m, uint64_t hash, void *item)
{
    place(m->e, m->cap, hash, item);
    m->len++;
}

bool hmap_remove(hmap *m, uint64_t hash, const void *item)
{
    if (m->len == 0)
        return false;
    size_t mask = m->cap - 1;
    size_t i = (size_t)hash & mask;
    while (m->e[i].item != item) {
        if (!m->e[i].item)
            return false;
        i = (i + 1) & mask;
    }
    /* Backward shift: pull later entries of the probe run into the hole
     * when their home position is at or before it. */
    size_t hole = i;
    for (size_t j = (hole + 1) & mask; m->e[j].item; j = (j + 1) & mask) {
        size_t home = (size_t)m->e[j].hash & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->e[hole] = m->e[j];
            hole = j;
        }
    }
    m->e[hole] = (hmap_entry){ 0 };
    m->len--;
    return true;
}
