/* hmap.c — open addressing with linear probing; see hmap.h. */
#include "hmap.h"

#include <string.h>

#include "alloc.h"

static uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static uint64_t load32(const unsigned char *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* The 128-bit product of a and b with its halves xored: each half depends
 * on most bits of both, and one multiply does the work of a mixing round. */
static uint64_t fold_mul(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 p = (unsigned __int128)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
#else
    uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
    uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
    uint64_t lo = (mid << 32) | (uint32_t)ll;
    uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
    return lo ^ hi;
#endif
}

/* Odd constants with balanced bits: the fractions of sqrt(2), sqrt(3) and
 * sqrt(5). */
#define HASH_K1 0x6a09e667f3bcc909ull
#define HASH_K2 0xbb67ae8584caa73bull
#define HASH_K3 0x3c6ef372fe94f82bull

uint64_t hash_bytes(const void *data, size_t len)
{
    /* Sixteen bytes per multiply, in one chain through h: a host path of
     * 17 to 32 bytes takes three dependent multiplies where one per 8 bytes
     * and a finaliser took four to six (the hash is on reserve's critical
     * path). The last 16 bytes are read whole, overlapping bytes already
     * hashed; shorter inputs read overlapping words the same way. The
     * length, multiplied into h first (not xored into the data, where a
     * word could cancel it), tells apart inputs that give the same words.
     * Inputs crafted to collide only make probes longer; correctness never
     * depends on it. */
    const unsigned char *p = data;
    uint64_t h = fold_mul(len ^ HASH_K2, HASH_K3), a, b; /* off the data's path */
    if (len > 16) {
        const unsigned char *last = p + len - 16;
        for (; p < last; p += 16)
            h = fold_mul(load64(p) ^ HASH_K1, load64(p + 8) ^ h);
        a = load64(last);
        b = load64(last + 8);
    } else if (len >= 8) {
        a = load64(p);
        b = load64(p + len - 8);
    } else if (len >= 4) {
        a = load32(p);
        b = load32(p + len - 4);
    } else {
        a = len ? (uint64_t)p[0] << 16 | (uint64_t)p[len / 2] << 8 | p[len - 1] : 0;
        b = 0;
    }
    h = fold_mul(a ^ HASH_K1, b ^ h);
    return fold_mul(h ^ HASH_K2, HASH_K3);
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
