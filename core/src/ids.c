/* ids.c — reservation ids: random version-4 UUIDs from libuuid. */
#include <uuid/uuid.h>

#include "internal.h"

void sc_id_generate(scsictl_id *id)
{
    uuid_generate_random(id->bytes);
}

uint64_t sc_id_hash(const scsictl_id *id)
{
    return hash_bytes(id->bytes, sizeof id->bytes);
}

void scsictl_id_format(const scsictl_id *id, char out[SCSICTL_ID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[n++] = '-';
        out[n++] = hex[id->bytes[i] >> 4];
        out[n++] = hex[id->bytes[i] & 15];
    }
    out[n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int scsictl_id_parse(const char *s, size_t len, scsictl_id *out)
{
    if (!s || !out || len != SCSICTL_ID_STRLEN)
        return SCSICTL_E_INVALID_ARGUMENT;
    scsictl_id id;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return SCSICTL_E_INVALID_ARGUMENT;
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return SCSICTL_E_INVALID_ARGUMENT;
        id.bytes[n++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    *out = id;
    return SCSICTL_OK;
}
