/*
 * fuzz_import.c — libFuzzer target for scsictl_import (spec §8).
 *
 * Every input must be either refused (SCSICTL_E_INVALID_SNAPSHOT, nothing
 * built) or imported. An imported controller must then:
 *   - save, import that, and save again to the same bytes
 *     (save -> import -> save is the identity);
 *   - survive a few operations through the op interface (map and unmap of
 *     its reservations, alternating step results, a reserve, a pin) with
 *     P1/P2 checked on the steps it hands out, and an unmap-everything
 *     teardown that ends with no reservation and no disk;
 * and nothing may crash, leak or read out of bounds (ASan/UBSan).
 *
 * Each input is tried twice: as it is (random mutations almost always break
 * the checksum, which must refuse them), and with its last line rewritten as
 * "end <its record count> <correct checksum>", so that the mutations reach
 * the parser and the consistency checks.
 *
 * Build (clang only):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include -Icore/src \
 *         core/fuzz/fuzz_import.c core/src/[a-z]*.c -luuid -lpthread -o fuzz_import
 *   ./fuzz_import core/fuzz/corpus_import -max_total_time=180
 * or with CMake: -DCMAKE_C_COMPILER=clang -DSCSICTL_FUZZ=ON (target fuzz_import).
 */
#include "scsictl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSLOTS_TRACKED 4096

/* Per-slot shadow of the VM and guest, for P1/P2 on the steps handed out.
 * Seeded from the imported state (attached / ejected / mounted). A disk
 * saved as "adding" or a partition saved as "mounting" had its step in
 * flight: it may or may not have taken effect, and a release issues the
 * eject / remove / unmount anyway (ops.c), so those count as "maybe". */
typedef struct shadow {
    uint32_t luns;
    uint8_t attached[NSLOTS_TRACKED];
    uint8_t ejected[NSLOTS_TRACKED];
    uint8_t maybe_attached[NSLOTS_TRACKED];
    uint16_t mounted[NSLOTS_TRACKED]; /* count of mounted partitions */
    uint16_t maybe_mounted[NSLOTS_TRACKED];
} shadow;

static shadow S;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_import: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* Marks the slots of "adding" disks and "mounting" partitions in a saved
 * snapshot (records "disk C L adding ..." and "part C L P mounting ..."). */
static void seed_maybe(const char *snap, size_t len)
{
    const char *p = snap, *end = snap + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char line[128]; /* the fields read here come first: a prefix will do */
        size_t k = n < sizeof line ? n : sizeof line - 1;
        memcpy(line, p, k);
        line[k] = '\0';
        unsigned c, l;
        unsigned long long part;
        char state[16];
        if (sscanf(line, "disk %u %u %15s", &c, &l, state) == 3 &&
            strcmp(state, "adding") == 0 && (uint64_t)c * S.luns + l < NSLOTS_TRACKED)
            S.maybe_attached[(uint64_t)c * S.luns + l] = 1;
        if (sscanf(line, "part %u %u %llu %15s", &c, &l, &part, state) == 4 &&
            strcmp(state, "mounting") == 0 && (uint64_t)c * S.luns + l < NSLOTS_TRACKED)
            S.maybe_mounted[(uint64_t)c * S.luns + l]++;
        p += n + 1;
    }
}

static void seed_shadow(scsictl *ctl)
{
    scsictl_stats st;
    scsictl_get_stats(ctl, &st);
    memset(&S, 0, sizeof S);
    S.luns = st.luns_per_controller;
    scsictl_slot_info *s = NULL;
    size_t n = 0;
    if (scsictl_list_slots(ctl, &s, &n, NULL) != SCSICTL_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        uint64_t slot = (uint64_t)s[i].controller * S.luns + s[i].lun;
        if (slot >= NSLOTS_TRACKED || !s[i].has_disk)
            continue;
        S.attached[slot] = s[i].state != SCSICTL_DISK_RESERVED;
        S.ejected[slot] = s[i].state == SCSICTL_DISK_EJECTED;
        for (size_t j = 0; j < s[i].n_partitions; j++)
            S.mounted[slot] += s[i].partitions[j].state == SCSICTL_MOUNT_MOUNTED;
    }
    scsictl_info_free(ctl, s);
}

/* Checks a step before it is performed; applies it if it succeeds. */
static void shadow_step(const scsictl_step *st, bool ok)
{
    uint64_t slot = (uint64_t)st->controller * S.luns + st->lun;
    if (slot >= NSLOTS_TRACKED)
        return;
    switch (st->kind) {
    case SCSICTL_STEP_ADD_SCSI_DISK:
        if (S.attached[slot]) die("P1", "add while attached");
        if (ok) S.attached[slot] = 1, S.ejected[slot] = 0, S.maybe_attached[slot] = 0;
        break;
    case SCSICTL_STEP_LINUX_EJECT:
        if ((!S.attached[slot] && !S.maybe_attached[slot]) || S.ejected[slot])
            die("P1", "eject while not attached");
        if (S.mounted[slot]) die("P2", "eject with a partition mounted");
        if (ok) S.ejected[slot] = 1, S.attached[slot] = 1;
        break;
    case SCSICTL_STEP_REMOVE_SCSI_DISK:
        if (!S.attached[slot] && !S.maybe_attached[slot]) die("P1", "remove while not attached");
        if (S.mounted[slot]) die("P2", "remove with a partition mounted");
        if (ok) S.attached[slot] = 0, S.ejected[slot] = 0, S.maybe_attached[slot] = 0;
        break;
    case SCSICTL_STEP_LINUX_MOUNT:
    case SCSICTL_STEP_WINDOWS_MOUNT:
    case SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH:
        if (!S.attached[slot] || S.ejected[slot]) die("P2", "mount on a disk not attached");
        if (ok) S.mounted[slot]++;
        if (ok && S.maybe_mounted[slot]) S.maybe_mounted[slot]--; /* now certain */
        break;
    default:
        if (!S.mounted[slot] && !S.maybe_mounted[slot]) die("P1", "unmount with nothing mounted");
        if (ok && S.mounted[slot]) S.mounted[slot]--;
        else if (ok) S.maybe_mounted[slot]--;
        break;
    }
}

static int drive(scsictl *ctl, const scsictl_id *id, bool map, uint32_t *bits)
{
    scsictl_op op;
    int rc = map ? scsictl_op_start_map(ctl, &op, id, NULL)
                 : scsictl_op_start_unmap(ctl, &op, id, NULL);
    for (int guard = 0; rc == SCSICTL_STEP; guard++) {
        if (guard > 16) die("op", "did not finish in 16 steps");
        bool ok = (*bits & 1) == 0;
        *bits = (*bits >> 1) | (*bits << 31);
        shadow_step(&op.step, ok);
        rc = scsictl_op_report(ctl, &op, ok, ok ? NULL : "fuzz", NULL);
    }
    return rc;
}

static int run_one(const uint8_t *data, size_t size)
{
    scsictl *ctl = NULL;
    scsictl_error err;
    int rc = scsictl_import((const char *)data, size, NULL, &ctl, &err);
    if (rc != SCSICTL_OK) {
        if (rc != SCSICTL_E_INVALID_SNAPSHOT) die("import gave", scsictl_code_name(rc));
        if (ctl) die("import", "set *out on failure");
        return 0;
    }
    /* save -> import -> save */
    char *s1 = NULL;
    size_t n1 = 0;
    if (scsictl_save(ctl, &s1, &n1, &err) != SCSICTL_OK) die("save", err.message);
    /* (import accepts records in any order within a group, so s1 may be a
     * normalised form of the input; from there on it must be a fixed point) */
    scsictl *ctl2 = NULL;
    if (scsictl_import(s1, n1, NULL, &ctl2, &err) != SCSICTL_OK) die("re-import", err.message);
    char *s2 = NULL;
    size_t n2 = 0;
    if (scsictl_save(ctl2, &s2, &n2, &err) != SCSICTL_OK) die("save 2", err.message);
    if (n1 != n2 || memcmp(s1, s2, n1) != 0) die("round trip", "bytes differ");
    scsictl_info_free(ctl2, s2);
    scsictl_free(ctl2);

    /* A few operations. */
    seed_shadow(ctl);
    seed_maybe(s1, n1);
    scsictl_info_free(ctl, s1);
    uint32_t bits = 0x9A3u ^ (uint32_t)size;
    scsictl_reservation_info *ri = NULL;
    size_t n = 0;
    if (scsictl_list_reservations(ctl, &ri, &n, NULL) == SCSICTL_OK) {
        for (size_t i = 0; i < n && i < 64; i++)
            drive(ctl, &ri[i].id, (i & 1) == 0, &bits);
        scsictl_info_free(ctl, ri);
    }
    scsictl_disk_config d = { .host_path = "/fuzz/new", .type = SCSICTL_DISK_VIRTUAL_DISK };
    scsictl_id nid;
    if (scsictl_reserve(ctl, &d, NULL, &nid, NULL) == SCSICTL_OK)
        drive(ctl, &nid, true, &bits);
    scsictl_reserve_for_rootfs(ctl, 0, 0, NULL, NULL);
    /* Teardown: backends succeed now; every release must finish. */
    bits = 0;
    if (scsictl_list_reservations(ctl, &ri, &n, NULL) == SCSICTL_OK) {
        for (size_t i = 0; i < n; i++) {
            rc = drive(ctl, &ri[i].id, false, &bits);
            if (rc != SCSICTL_DONE && rc != SCSICTL_E_CLOSED) die("teardown", scsictl_code_name(rc));
        }
        scsictl_info_free(ctl, ri);
    }
    scsictl_stats st;
    scsictl_get_stats(ctl, &st);
    if (!st.closed && (st.reservations != 0 || st.disks != 0)) die("P3", "claims left after teardown");
    if (!st.closed)
        for (size_t i = 0; i < NSLOTS_TRACKED; i++)
            if (S.attached[i] || S.mounted[i]) die("P3", "left attached or mounted");
    scsictl_free(ctl);
    return 0;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_one(data, size);
    /* The same with a correct checksum. */
    size_t body = size;
    if (body && data[body - 1] == '\n')
        body--;
    while (body && data[body - 1] != '\n')
        body--;
    const uint8_t *last = data + body;
    size_t last_len = size - body;
    char count[32] = "0";
    if (last_len > 4 && memcmp(last, "end ", 4) == 0) {
        size_t k = 0;
        while (4 + k < last_len && last[4 + k] != ' ' && last[4 + k] != '\n' && k < sizeof count - 1) {
            count[k] = (char)last[4 + k];
            k++;
        }
        count[k] = '\0';
    }
    uint8_t *fixed = malloc(body + 64);
    if (!fixed)
        return 0;
    memcpy(fixed, data, body);
    int w = snprintf((char *)fixed + body, 64, "end %s %016llx\n", count,
                     (unsigned long long)fnv1a(data, body));
    size_t n = body + (size_t)w;
    if (n != size || memcmp(fixed, data, size) != 0)
        run_one(fixed, n);
    free(fixed);
    return 0;
}
