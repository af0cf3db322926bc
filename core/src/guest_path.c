/* guest_path.c — the guest paths of partitions: /run/mounts/scsi/C_L_P on
 * Linux, C:\mounts\scsi\C_L_P on Windows, formatted without printf
 * (every mount step formats one). */
#include <string.h>

#include "internal.h"

/* "00" .. "99": two digits per lookup (a slot's controller and lun take up
 * to five digits, and a digit loop is a chain of multiplies). */
static const char two_digits[201] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

size_t sc_fmt_u64_long(char *out, uint64_t v) /* v >= 10: see sc_fmt_u64() */
{
    if (v < 100) {
        memcpy(out, two_digits + 2 * v, 2);
        return 2;
    }
    if (v < 10000) {
        unsigned hi = (unsigned)v / 100, lo = (unsigned)v % 100;
        size_t n = 0;
        if (hi < 10)
            out[n++] = (char)('0' + hi);
        else {
            memcpy(out, two_digits + 2 * hi, 2);
            n = 2;
        }
        memcpy(out + n, two_digits + 2 * lo, 2);
        return n + 2;
    }
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

size_t sc_guest_path(scsictl_guest guest, uint32_t controller, uint32_t lun,
                     uint64_t partition, char out[SCSICTL_GUEST_PATH_MAX])
{
    /* At most 17 + 10 + 1 + 10 + 1 + 20 + 1 = 60 bytes: fits the buffer. */
    char *p = out;
    if (guest == SCSICTL_GUEST_WINDOWS) {
        memcpy(p, "C:\\mounts\\scsi\\", 15);
        p += 15;
    } else {
        memcpy(p, "/run/mounts/scsi/", 17);
        p += 17;
    }
    p += sc_fmt_u64(p, controller);
    *p++ = '_';
    p += sc_fmt_u64(p, lun);
    *p++ = '_';
    p += sc_fmt_u64(p, partition);
    *p = '\0';
    return (size_t)(p - out);
}

int scsictl_guest_path(scsictl_guest guest, uint32_t controller, uint32_t lun,
                       uint64_t partition, char *out, size_t size)
{
    if (out && size >= SCSICTL_GUEST_PATH_MAX)
        return (int)sc_guest_path(guest, controller, lun, partition, out);
    char buf[SCSICTL_GUEST_PATH_MAX];
    size_t n = sc_guest_path(guest, controller, lun, partition, buf);
    if (!out || n + 1 > size)
        return -1;
    memcpy(out, buf, n + 1);
    return (int)n;
}
