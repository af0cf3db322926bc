/* ids.c — reservation ids: random version-4 UUIDs.
 *
 * libuuid's uuid_generate_random() costs a system call per id, more than a
 * whole reserve/map/unmap cycle (docs/performance.md). So each controller keys a ChaCha
 * keystream with 32 bytes from libuuid, takes four ids from every 64-byte
 * block (computed four blocks at a time, half a ring ahead), and draws a
 * fresh key from libuuid every 2^16 ids. Ids stay unpredictable v4 UUIDs;
 * uniqueness among live ids is checked on insert. The stream uses 8 rounds
 * (ChaCha8: the best known attacks reach 7, and Aumasson's "Too Much
 * Crypto" argues 8 keep a comfortable margin; ids are not keys). Tests
 * check the block function at 20 rounds against RFC 8439 (block 0 of the
 * four). */
#include <string.h>
#include <uuid/uuid.h>

#include "internal.h"

#define REKEY_BLOCKS (1u << 14) /* 4 ids per block: a fresh key every 2^16 ids */

/* Scalar or vector: the same rotate for uint32_t and u32x4. */
#define ROTL(x, n) ((x) << (n) | (x) >> (32 - (n)))

#define QR(a, b, c, d)                                                   \
    do {                                                                 \
        a += b; d ^= a; d = ROTL(d, 16);                                 \
        c += d; b ^= c; b = ROTL(b, 12);                                 \
        a += b; d ^= a; d = ROTL(d, 8);                                  \
        c += d; b ^= c; b = ROTL(b, 7);                                  \
    } while (0)

#define ID_ROUNDS 8

/* Word i of four consecutive blocks in the four lanes of one vector, so
 * every quarter round runs on four blocks at once (SSE2 on x86-64, NEON on
 * arm64, scalar code where the target has no vectors). */
typedef uint32_t u32x4 __attribute__((vector_size(16)));

/* Four ChaCha blocks (constants, key, 64-bit counter .. counter+3, zero
 * nonce), 256 bytes, block after block. */
void sc_chacha_blocks4(const uint32_t key[8], uint64_t counter, int rounds, uint8_t out[256])
{
    static const uint32_t sigma[4] = { 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574 };
    u32x4 in[16], x[16];
    for (int i = 0; i < 4; i++)
        in[i] = (u32x4){ sigma[i], sigma[i], sigma[i], sigma[i] };
    for (int i = 0; i < 8; i++)
        in[4 + i] = (u32x4){ key[i], key[i], key[i], key[i] };
    for (int l = 0; l < 4; l++) {
        in[12][l] = (uint32_t)(counter + (uint64_t)l);
        in[13][l] = (uint32_t)((counter + (uint64_t)l) >> 32);
    }
    in[14] = in[15] = (u32x4){ 0, 0, 0, 0 };
    memcpy(x, in, sizeof x);
    for (int i = 0; i < rounds / 2; i++) {
        QR(x[0], x[4], x[8], x[12]);
        QR(x[1], x[5], x[9], x[13]);
        QR(x[2], x[6], x[10], x[14]);
        QR(x[3], x[7], x[11], x[15]);
        QR(x[0], x[5], x[10], x[15]);
        QR(x[1], x[6], x[11], x[12]);
        QR(x[2], x[7], x[8], x[13]);
        QR(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; i++) {
        u32x4 v = x[i] + in[i];
        for (int l = 0; l < 4; l++) {
            uint32_t w = v[l];
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
            w = __builtin_bswap32(w); /* the keystream is little-endian */
#endif
            memcpy(out + 64 * l + 4 * i, &w, 4);
        }
    }
}

static void rekey(sc_idgen *g)
{
    uuid_t a, b;
    uuid_generate_random(a);
    uuid_generate_random(b);
    uint8_t k[32];
    memcpy(k, a, 16);
    memcpy(k + 16, b, 16);
    for (int i = 0; i < 8; i++)
        g->key[i] = (uint32_t)k[4 * i] | (uint32_t)k[4 * i + 1] << 8 |
                    (uint32_t)k[4 * i + 2] << 16 | (uint32_t)k[4 * i + 3] << 24;
    g->counter = 0;
}

/* The id in ring position i (version and variant bits set in registers:
 * byte stores into the id would stall the word loads that hash it right
 * after). */
static void id_at(const sc_idgen *g, unsigned i, scsictl_id *id)
{
    const uint8_t *src = g->ring + 16 * (i % SC_ID_RING);
    uint64_t a, b;
    memcpy(&a, src, 8);
    memcpy(&b, src + 8, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    a = (a & ~(0xf0ull << 48)) | 0x40ull << 48; /* byte 6: version 4 */
    b = (b & ~0xc0ull) | 0x80ull;               /* byte 8: RFC 4122 variant */
#else
    a = (a & ~(0xf0ull << 8)) | 0x40ull << 8;
    b = (b & ~(0xc0ull << 56)) | 0x80ull << 56;
#endif
    memcpy(id->bytes, &a, 8);
    memcpy(id->bytes + 8, &b, 8);
}

/* Computes the half of the ring after the ready ids: 16 more ids. */
static void top_up(sc_idgen *g)
{
    if (g->counter % REKEY_BLOCKS == 0)
        rekey(g);
    unsigned at = (g->next + g->ready) % SC_ID_RING; /* 0 or SC_IDS_PER_HALF */
    sc_chacha_blocks4(g->key, g->counter, ID_ROUNDS, g->ring + 16 * at);
    g->counter += 4;
    g->ready += SC_IDS_PER_HALF;
}

void sc_id_generate(sc_idgen *g, scsictl_id *id)
{
    if (g->ready <= SC_ID_LOOKAHEAD) /* then at most 8 + 16 are ready */
        top_up(g);
    id_at(g, g->next, id);
    g->next = (g->next + 1) % SC_ID_RING;
    g->ready--;
}

uint64_t sc_id_next_hash(sc_idgen *g, unsigned k)
{
    if (g->ready <= k) /* k < 8: only before the first id */
        top_up(g);
    scsictl_id next;
    id_at(g, g->next + k, &next);
    return sc_id_hash(&next);
}

/* The two lowercase hex digits of every byte value. */
static const char hex_pairs[512 + 1] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* where each byte's two hex digits go in "8-4-4-4-12" */
static const uint8_t digits_at[16] = { 0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34 };

void scsictl_id_format(const scsictl_id *id, char out[SCSICTL_ID_STRLEN + 1])
{
    for (int i = 0; i < 16; i++)
        memcpy(out + digits_at[i], hex_pairs + 2 * id->bytes[i], 2);
    out[8] = out[13] = out[18] = out[23] = '-';
    out[SCSICTL_ID_STRLEN] = '\0';
}

/* hex digit value + 1, or 0 for a non-hex byte */
static const uint8_t hex1[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7,
    ['7'] = 8, ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

int scsictl_id_parse(const char *s, size_t len, scsictl_id *out)
{
    if (!s || !out || len != SCSICTL_ID_STRLEN || s[8] != '-' || s[13] != '-' ||
        s[18] != '-' || s[23] != '-')
        return SCSICTL_E_INVALID_ARGUMENT;
    scsictl_id id;
    for (int i = 0; i < 16; i++) {
        unsigned hi = hex1[(unsigned char)s[digits_at[i]]];
        unsigned lo = hex1[(unsigned char)s[digits_at[i] + 1]];
        if (!hi || !lo)
            return SCSICTL_E_INVALID_ARGUMENT;
        id.bytes[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
    }
    *out = id;
    return SCSICTL_OK;
}
