/* test_ids.c — reservation ids: the ChaCha block function against RFC 8439,
 * version/variant bits, uniqueness, and the text form. */
#include <string.h>

#include "../src/internal.h"
#include "test_util.h"

static void test_chacha_vector(void)
{
    TEST("ChaCha20 block 0 of four, RFC 8439 A.1 test vector #1 (zero key, nonce, counter)");
    static const uint8_t want[64] = {
        0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53,
        0x86, 0xbd, 0x28, 0xbd, 0xd2, 0x19, 0xb8, 0xa0, 0x8d, 0xed, 0x1a, 0xa8, 0x36,
        0xef, 0xcc, 0x8b, 0x77, 0x0d, 0xc7, 0xda, 0x41, 0x59, 0x7c, 0x51, 0x57, 0x48,
        0x8d, 0x77, 0x24, 0xe0, 0x3f, 0xb8, 0xd8, 0x4a, 0x37, 0x6a, 0x43, 0xb8, 0xf4,
        0x15, 0x18, 0xa1, 0x1c, 0xc3, 0x87, 0xb6, 0x69, 0xb2, 0xee, 0x65, 0x86,
    };
    uint32_t key[8] = { 0 };
    uint8_t out[256]; /* block 0 of four */
    sc_chacha_blocks4(key, 0, 20, out);
    CHECK(memcmp(out, want, sizeof want) == 0);
    /* fewer rounds give a different, still key-dependent block */
    uint8_t out8[256], out8b[256];
    sc_chacha_blocks4(key, 0, 8, out8);
    key[0] = 1;
    sc_chacha_blocks4(key, 0, 8, out8b);
    CHECK(memcmp(out8, out, 64) != 0);
    CHECK(memcmp(out8, out8b, 64) != 0);

    TEST("four blocks at once: block k is the single block at counter + k");
    uint8_t four[256], one[64];
    key[3] = 0xdeadbeef;
    const uint64_t counter = 0xfffffffeull; /* the counter's low word wraps */
    sc_chacha_blocks4(key, counter, 8, four);
    for (int k = 0; k < 4; k++) {
        sc_chacha_blocks4(key, counter + (uint64_t)k, 8, four + 0); /* lane 0 */
        memcpy(one, four, 64);
        sc_chacha_blocks4(key, counter, 8, four);
        CHECK(memcmp(four + 64 * k, one, 64) == 0);
    }
}

static void test_generated_ids(void)
{
    TEST("generated ids: version 4, RFC 4122 variant, all distinct, distinct streams");
    enum { N = 200000 };
    static scsictl_id ids[N];
    sc_idgen g = { 0 }, h = { 0 };
    for (int i = 0; i < N; i++) {
        sc_id_generate(&g, &ids[i]);
        CHECK((ids[i].bytes[6] >> 4) == 4);
        CHECK((ids[i].bytes[8] & 0xc0) == 0x80);
    }
    /* uniqueness: sort-free check through the core's own hash of ids */
    size_t cap = 1u << 19, dup = 0;
    static int32_t slot[1u << 19];
    memset(slot, -1, sizeof slot);
    for (int i = 0; i < N; i++) {
        size_t j = (size_t)sc_id_hash(&ids[i]) & (cap - 1);
        while (slot[j] >= 0) {
            if (memcmp(&ids[slot[j]], &ids[i], sizeof ids[i]) == 0)
                dup++;
            j = (j + 1) & (cap - 1);
        }
        slot[j] = i;
    }
    CHECK_EQ(dup, (size_t)0);
    /* two generators are keyed independently (libuuid randomness) */
    scsictl_id a, b;
    sc_id_generate(&h, &a);
    sc_idgen g2 = { 0 };
    sc_id_generate(&g2, &b);
    CHECK(memcmp(&a, &b, sizeof a) != 0);
}

static void test_lookahead(void)
{
    TEST("sc_id_next_hash(k): the hash of the id k+1 generates later, across ring halves");
    sc_idgen g = { 0 };
    int wrong = 0;
    for (int round = 0; round < 200; round++) { /* many wraps of the 32-id ring */
        uint64_t want[SC_ID_LOOKAHEAD];
        for (unsigned k = 0; k < SC_ID_LOOKAHEAD; k++)
            want[k] = sc_id_next_hash(&g, k);
        for (unsigned k = 0; k < SC_ID_LOOKAHEAD; k++) {
            scsictl_id id;
            sc_id_generate(&g, &id);
            wrong += sc_id_hash(&id) != want[k];
        }
        scsictl_id skip; /* shift the phase against the ring */
        if (round % 3 == 0)
            sc_id_generate(&g, &skip);
    }
    CHECK_EQ(wrong, 0);
}

static void test_text_form(void)
{
    TEST("format and parse: canonical lowercase, any case accepted, strict shape");
    scsictl_id id = { { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba,
                        0x98, 0x76, 0x54, 0x32, 0x10 } };
    char s[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&id, s);
    CHECK_STR(s, "01234567-89ab-cdef-fedc-ba9876543210");
    scsictl_id back;
    CHECK_CODE(scsictl_id_parse(s, strlen(s), &back), SCSICTL_OK);
    CHECK(memcmp(&back, &id, sizeof id) == 0);
    const char *upper = "01234567-89AB-CDEF-FEDC-BA9876543210";
    CHECK_CODE(scsictl_id_parse(upper, strlen(upper), &back), SCSICTL_OK);
    CHECK(memcmp(&back, &id, sizeof id) == 0);
    const char *bad[] = { "01234567-89ab-cdef-fedc-ba987654321",   /* short */
                          "01234567-89ab-cdef-fedc-ba98765432100", /* long */
                          "0123456789ab-cdef-fedc-ba9876543210-", /* dash moved */
                          "01234567-89ab-cdef-fedc-ba987654321g", /* not hex */
                          "01234567+89ab-cdef-fedc-ba9876543210" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_CODE(scsictl_id_parse(bad[i], strlen(bad[i]), &back),
                   SCSICTL_E_INVALID_ARGUMENT);
}

int main(void)
{
    test_chacha_vector();
    test_generated_ids();
    test_lookahead();
    test_text_form();
    return tu_finish();
}
