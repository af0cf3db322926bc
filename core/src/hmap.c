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

void hmap_init(hmap *m, hmap_hash_fn hash_of)
{
    *m = (hmap){ .stride = hash_of ? 1 : 2, .hash_of = hash_of };
}

void hmap_destroy(hmap *m, const scsictl_allocator *a)
{
    sc_free(a, m->w);
    m->w = NULL;
    m->cap = m->len = 0;
}

static uint64_t hash_at(const hmap *m, size_t i)
{
    return m->hash_of ? m->hash_of(hmap_item(m, i)) : m->w[i * 2 + 1].hash;
}

static void set_slot(hmap_word *w, size_t stride, size_t i, void *item, uint64_t hash)
{
    w[i * stride].item = item;
    if (stride == 2)
        w[i * 2 + 1].hash = hash;
}

/* The first empty slot of hash's probe run. */
static size_t empty_slot(const hmap_word *w, size_t stride, size_t cap, uint64_t hash)
{
    size_t i = (size_t)hash & (cap - 1);
    while (w[i * stride].item)
        i = (i + 1) & (cap - 1);
    return i;
}

/* The slow half of hmap_reserve(): a bigger table. */
bool hmap_grow(hmap *m, size_t n, const scsictl_allocator *a)
{
    if (n <= m->cap / 2)
        return true;
    size_t cap = m->cap ? m->cap : 8;
    while (n > cap / 2) {
        if (cap > SIZE_MAX / 4 / (m->stride * sizeof(hmap_word)))
            return false;
        cap *= 2;
    }
    hmap_word *w = sc_calloc(a, cap * m->stride, sizeof *w);
    if (!w)
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        void *item = hmap_item(m, i);
        if (item) {
            uint64_t hash = hash_at(m, i);
            set_slot(w, m->stride, empty_slot(w, m->stride, cap, hash), item, hash);
        }
    }
    sc_free(a, m->w);
    m->w = w;
    m->cap = cap;
    return true;
}

/* Whether slot i may hold key: its stored hash agrees (when kept) and
 * eq() says so. */
static bool holds(const hmap *m, size_t i, void *item, uint64_t hash, const void *key,
                  hmap_eq_fn eq)
{
    return (m->hash_of || m->w[i * 2 + 1].hash == hash) && eq(item, key);
}

void *hmap_find(const hmap *m, uint64_t hash, const void *key, hmap_eq_fn eq)
{
    if (m->len == 0)
        return NULL;
    for (size_t i = (size_t)hash & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        void *item = hmap_item(m, i);
        if (!item)
            return NULL;
        if (holds(m, i, item, hash, key, eq))
            return item;
    }
}

void hmap_insert(hmap *m, uint64_t hash, void *item)
{
    set_slot(m->w, m->stride, empty_slot(m->w, m->stride, m->cap, hash), item, hash);
    m->len++;
}

bool hmap_insert_unique(hmap *m, uint64_t hash, void *item, const void *key, hmap_eq_fn eq)
{
    size_t mask = m->cap - 1, i = (size_t)hash & mask;
    for (void *other; (other = hmap_item(m, i)) != NULL; i = (i + 1) & mask)
        if (holds(m, i, other, hash, key, eq))
            return false;
    set_slot(m->w, m->stride, i, item, hash);
    m->len++;
    return true;
}

size_t hmap_index_of(const hmap *m, uint64_t hash, const void *item)
{
    if (m->len == 0)
        return SIZE_MAX;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)hash & mask; hmap_item(m, i); i = (i + 1) & mask)
        if (hmap_item(m, i) == item)
            return i;
    return SIZE_MAX;
}

bool hmap_remove(hmap *m, uint64_t hash, const void *item)
{
    size_t hole = hmap_index_of(m, hash, item);
    if (hole == SIZE_MAX)
        return false;
    /* Backward shift: pull later entries of the probe run into the hole
     * when their home position is at or before it. */
    size_t mask = m->cap - 1;
    for (size_t j = (hole + 1) & mask; hmap_item(m, j); j = (j + 1) & mask) {
        uint64_t h = hash_at(m, j);
        size_t home = (size_t)h & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            set_slot(m->w, m->stride, hole, hmap_item(m, j), h);
            hole = j;
        }
    }
    m->w[hole * m->stride].item = NULL;
    m->len--;
    return true;
}
