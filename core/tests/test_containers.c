/* test_containers.c — the core's small containers, tested directly: the
 * hash map in both slot layouts against a model, the sizes of disk and
 * mount records and the configs they give back, every record freed after
 * a burst, and the reservation map's prefetch hint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/internal.h"
#include "test_util.h"

/* ---- hash map ----------------------------------------------------------- */

typedef struct item {
    uint64_t key;
    uint64_t hash;
} item;

static bool item_eq(const void *it, const void *key)
{
    return ((const item *)it)->key == *(const uint64_t *)key;
}

static uint64_t item_hash_of(const void *it)
{
    return ((const item *)it)->hash;
}

static uint64_t rng_state = 0x853c49e6748fea9bull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Random inserts, unique inserts, finds and removes against a plain array.
 * Hashes take few distinct values so that probe runs are long and wrap
 * around the end of the table, and removal has to shift entries back. */
static void map_model(hmap_hash_fn hash_of, const char *name)
{
    TEST(name);
    enum { N = 512 };
    static item items[N];
    static bool in[N];
    memset(in, 0, sizeof in);
    hmap m;
    hmap_init(&m, hash_of);
    for (int i = 0; i < N; i++)
        items[i] = (item){ .key = (uint64_t)i * 7919, .hash = rnd() % 37 * 0x10001 };
    size_t len = 0, bad = 0;
    for (int step = 0; step < 200000; step++) {
        int i = (int)(rnd() % N);
        switch (rnd() % 4) {
        case 0: /* insert if absent */
            if (!in[i]) {
                if (!hmap_reserve(&m, len + 1, &sc_default_allocator))
                    bad++;
                hmap_insert(&m, items[i].hash, &items[i]);
                in[i] = true;
                len++;
            }
            break;
        case 1: { /* unique insert: refused exactly when present */
            if (!hmap_reserve(&m, len + 1, &sc_default_allocator))
                bad++;
            bool added = hmap_insert_unique(&m, items[i].hash, &items[i], &items[i].key, item_eq);
            if (added == in[i])
                bad++;
            if (added) {
                in[i] = true;
                len++;
            }
            break;
        }
        case 2: /* remove */
            if (hmap_remove(&m, items[i].hash, &items[i]) != in[i])
                bad++;
            if (in[i]) {
                in[i] = false;
                len--;
            }
            break;
        default: { /* find, and index_of agrees */
            item *got = hmap_find(&m, items[i].hash, &items[i].key, item_eq);
            if (got != (in[i] ? &items[i] : NULL))
                bad++;
            size_t at = hmap_index_of(&m, items[i].hash, &items[i]);
            if (in[i] ? (at == SIZE_MAX || hmap_item(&m, at) != &items[i]) : at != SIZE_MAX)
                bad++;
            break;
        }
        }
        if (m.len != len)
            bad++;
    }
    /* every slot holds a present item, each once; the map stays half full */
    size_t seen = 0;
    for (size_t s = 0; s < m.cap; s++) {
        const item *it = hmap_item(&m, s);
        if (it) {
            seen++;
            if (!in[it - items])
                bad++;
        }
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(seen, len);
    CHECK(m.len <= m.cap / 2);
    hmap_destroy(&m, &sc_default_allocator);
    CHECK(m.cap == 0 && m.len == 0 && !m.w);
}

/* A big table goes through the default allocator's huge-page path (4 MiB
 * and more): it must come back zeroed and work like any other. */
static void map_big(void)
{
    TEST("hash map, a 16 MiB table from the default allocator (huge-page advice)");
    hmap m;
    hmap_init(&m, NULL);
    CHECK(hmap_reserve(&m, 300000, &sc_default_allocator));
    CHECK(m.cap * m.stride * sizeof(hmap_word) >= ((size_t)4 << 20));
    size_t nonempty = 0;
    for (size_t i = 0; i < m.cap; i++)
        nonempty += hmap_item(&m, i) != NULL;
    CHECK_EQ(nonempty, 0);
    static item items[1000];
    for (int i = 0; i < 1000; i++) {
        items[i] = (item){ .key = (uint64_t)i, .hash = rnd() };
        hmap_insert(&m, items[i].hash, &items[i]);
    }
    int found = 0;
    for (int i = 0; i < 1000; i++)
        found += hmap_find(&m, items[i].hash, &items[i].key, item_eq) == &items[i];
    CHECK_EQ(found, 1000);
    hmap_destroy(&m, &sc_default_allocator);
}

/* ---- hash_bytes --------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void test_hash_bytes(void)
{
    TEST("hash_bytes: every byte, the length and the chunk order count; low bits spread");
    /* A base string of each length 0..80 and every one-byte change of it:
     * all distinct (a byte the hash skipped, or a length it ignored, would
     * repeat a value). */
    enum { MAXLEN = 80 };
    static uint64_t h[(MAXLEN + 1) * (MAXLEN + 2) / 2]; /* lengths 0..80, len + 1 each */
    size_t n = 0;
    unsigned char buf[MAXLEN + 8];
    for (size_t len = 0; len <= MAXLEN; len++) {
        memset(buf, 'a', sizeof buf);
        h[n++] = hash_bytes(buf, len);
        for (size_t i = 0; i < len; i++) {
            buf[i] = 'b';
            h[n++] = hash_bytes(buf, len);
            buf[i] = 'a';
        }
        CHECK_EQ(hash_bytes(buf, len), h[n - len - 1]); /* bytes past len do not count */
    }
    qsort(h, n, sizeof h[0], cmp_u64);
    size_t repeats = 0;
    for (size_t i = 1; i < n; i++)
        repeats += h[i] == h[i - 1];
    CHECK_EQ(repeats, 0);

    /* Swapping two 16-byte chunks gives another hash. */
    const char *ab = "0123456789abcdefghijklmnopqrstuv", *ba = "ghijklmnopqrstuv0123456789abcdef";
    CHECK(hash_bytes(ab, 32) != hash_bytes(ba, 32));
    const char *abc = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";
    const char *bac = "ghijklmnopqrstuv0123456789abcdefwxyzABCDEFGHIJKLMN";
    CHECK(hash_bytes(abc, 48) != hash_bytes(bac, 48));

    /* Paths that differ in a number, in a map of 8192 slots (the low 13
     * bits): at 1/2 load a fair hash leaves about e^-1/2 of the slots
     * empty (4969) and puts at most a handful in any one. */
    enum { PATHS = 4096, SLOTS = 8192 };
    static unsigned char count[SLOTS];
    memset(count, 0, sizeof count);
    for (int i = 0; i < PATHS; i++) {
        char path[64];
        int len = snprintf(path, sizeof path, "/var/lib/vm/disks/layer-%d.vhdx", i);
        count[hash_bytes(path, (size_t)len) & (SLOTS - 1)]++;
    }
    int empty = 0, most = 0;
    for (int i = 0; i < SLOTS; i++) {
        empty += count[i] == 0;
        most = count[i] > most ? count[i] : most;
    }
    CHECK(empty > 4700 && empty < 5250);
    CHECK(most <= 8);
}

/* ---- a recording allocator ------------------------------------------------ */

typedef struct rec_alloc {
    size_t last_size;
    long live, mallocs;
} rec_alloc;

static void *r_malloc(void *ud, size_t n)
{
    rec_alloc *r = ud;
    r->last_size = n;
    r->mallocs++;
    r->live++;
    return malloc(n);
}

static void *r_realloc(void *ud, void *p, size_t n)
{
    (void)ud;
    return realloc(p, n);
}

static void r_free(void *ud, void *p)
{
    rec_alloc *r = ud;
    if (p)
        r->live--;
    free(p);
}

/* ---- record sizes ------------------------------------------------------- */

/* Runs the test `body` on a Linux controller with `controllers` controllers
 * whose blocks go through a recording allocator, then frees the controller
 * and checks that no block is left alive. */
static void with_recorded(const char *name, uint32_t controllers,
                          void (*body)(scsictl *ctl, rec_alloc *r))
{
    TEST(name);
    rec_alloc r = { 0 };
    scsictl_allocator a = { r_malloc, r_realloc, r_free, &r };
    scsictl_options o = { .controllers = controllers, .guest = SCSICTL_GUEST_LINUX,
                          .allocator = &a };
    scsictl *ctl = NULL;
    CHECK_CODE(scsictl_new(&o, &ctl, NULL), SCSICTL_OK);
    if (!ctl)
        return;
    body(ctl, &r);
    scsictl_free(ctl);
    CHECK_EQ(r.live, 0);
}

/* Disks and mounts free their blocks with the size they were allocated
 * with. */
static void test_record_sizes(scsictl *ctl, rec_alloc *r)
{
    char longs[300];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    const char *opts[] = { "ro", "noatime", longs };
    const scsictl_mount_config mounts[] = {
        { 0 },
        { .filesystem = "ext4" },
        { .options = opts, .n_options = 2 },
        { .options = opts, .n_options = 2, .filesystem = "xfs" },
        { .options = opts, .n_options = 3 },            /* a long option */
        { .options = opts, .n_options = 1, .filesystem = longs },
    };
    for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) {
        mount *m = sc_mount_create(ctl, NULL, &mounts[i]);
        CHECK(m != NULL);
        if (!m)
            continue;
        CHECK_EQ(r->last_size, sc_mount_size(m));
        scsictl_mount_config back = sc_mount_cfg(m); /* what steps and snapshots see */
        CHECK(sc_mount_matches(m, &mounts[i]));
        CHECK(sc_mount_matches(m, &back));
        sc_mount_free(ctl, m);
    }
    /* an option array too big for the record's 32-bit offsets is refused
     * before any option is read */
    static const char *const one[1] = { "x" };
    const scsictl_mount_config huge = { .options = one, .n_options = (size_t)1 << 29 };
    long before = r->mallocs;
    CHECK(sc_mount_create(ctl, NULL, &huge) == NULL);
    CHECK_EQ(r->mallocs, before);

    const scsictl_disk_config disks[] = {
        { .host_path = "/d" },
        { .host_path = "/d/with/evd", .evd_type = "space", .type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK },
        { .host_path = longs, .read_only = true },
        { .host_path = "/e", .evd_type = "" },
    };
    for (size_t i = 0; i < sizeof disks / sizeof disks[0]; i++) {
        size_t len = strlen(disks[i].host_path);
        disk *d = sc_disk_create(ctl, &disks[i], len, hash_bytes(disks[i].host_path, len), 0);
        CHECK(d != NULL);
        if (!d)
            continue;
        CHECK_EQ(r->last_size, sc_disk_size(d));
        scsictl_disk_config back = sc_disk_cfg(d);
        CHECK(sc_disk_config_equal(&back, &disks[i]));
        sc_disk_free(ctl, d);
    }
}

/* A burst of mixed records gives every block back: after each round of
 * reserving and releasing, the blocks alive are the same (the hash maps
 * keep their tables). */
static void test_burst_frees(scsictl *ctl, rec_alloc *r)
{
    static rec_backend rec; /* every call succeeds; the log stops when full */
    rec_init(&rec, SCSICTL_GUEST_LINUX);
    const scsictl_callbacks cb = rec.cb;
    static const char *const opts[] = { "ro", "noatime" };
    enum { N = 2000 };
    static scsictl_id ids[N];
    long after[2] = { 0, 0 };
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            char path[64];
            snprintf(path, sizeof path, "/disks/%d%s", i % 100, i % 3 ? "" : "/a-longer-name.vhdx");
            const scsictl_disk_config d = { .host_path = path, .read_only = i % 3 == 0 };
            const scsictl_mount_config m = { .partition = (uint64_t)(i % 3), .options = opts,
                                             .n_options = (size_t)(i % 3),
                                             .read_only = i % 3 == 0 };
            CHECK_CODE(scsictl_reserve(ctl, &d, &m, &ids[i], NULL), SCSICTL_OK);
            if (i % 2)
                CHECK_CODE(scsictl_map(ctl, &cb, &ids[i], NULL, 0, NULL), SCSICTL_OK);
        }
        for (int i = 0; i < N; i++)
            CHECK_CODE(scsictl_unmap(ctl, &cb, &ids[i], NULL), SCSICTL_OK);
        after[round] = r->live;
    }
    CHECK_EQ(after[1], after[0]);
}

/* Each reservation names the id handed out SC_ID_LOOKAHEAD reserves after
 * it, for the prefetch in map and unmap. A wrong one costs only speed, so
 * nothing else would notice it. */
static void test_later_hash(void)
{
    TEST("a reservation's later_hash is the hash of the id reserved SC_ID_LOOKAHEAD later");
    scsictl_options o = { .controllers = 1, .guest = SCSICTL_GUEST_LINUX };
    scsictl *ctl = NULL;
    CHECK_CODE(scsictl_new(&o, &ctl, NULL), SCSICTL_OK);
    if (!ctl)
        return;
    enum { N = 100 }; /* several id ring wraps */
    scsictl_id ids[N];
    const scsictl_disk_config d = { .host_path = "/shared" };
    for (int i = 0; i < N; i++)
        CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &ids[i], NULL), SCSICTL_OK);
    for (int i = 0; i + SC_ID_LOOKAHEAD < N; i++) {
        reservation *r = sc_res_find(ctl, &ids[i]);
        CHECK(r != NULL);
        if (r)
            CHECK_EQ(r->later_hash, (uint32_t)sc_id_hash(&ids[i + SC_ID_LOOKAHEAD]));
    }
    scsictl_free(ctl);
}

int main(void)
{
    map_model(item_hash_of, "hash map, item-only slots: model check with long, wrapping runs");
    map_model(NULL, "hash map, slots with stored hashes: model check with long, wrapping runs");
    map_big();
    test_hash_bytes();
    with_recorded("disks and mounts free their blocks with the size they were allocated with", 1,
                  test_record_sizes);
    with_recorded("a burst of mixed reservations gives every record back", 4, test_burst_frees);
    test_later_hash();
    return tu_finish();
}
