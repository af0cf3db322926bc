/*
 * fuzz_ops.c — libFuzzer target: operation sequences on the C core, checked
 * against a shadow model for every property of spec §6 (P1-P9).
 *
 * The input bytes choose a geometry (0..2 controllers x 1..4 luns, Linux or
 * Windows guest) and then a sequence of actions over a small pool of host
 * paths (two disk configs each, one of them differing only in evd_type NULL
 * vs ""), four partitions (0, 1, 2 and INT64_MAX) and two mount configs:
 *
 *   reserve, start map, start unmap (through scsictl_op_start_*), report the
 *   step of any op in flight with success or failure (so several ops on
 *   different disks are interleaved), rootfs pins (in and out of range,
 *   with or without a disk), unknown and released ids, close while busy,
 *   save while busy, save + import (the run continues on the imported
 *   controller), and rarely a real close (the run then ends closed).
 *
 * The model is built from the steps the core hands out and the results the
 * fuzzer reports (per slot: attached / ejected / mounted partitions) plus
 * the claims it holds. Checked after every action (abort() on violation):
 *   P1 adds/removes and mounts/unmounts alternate; a Linux remove follows
 *      an eject since the last add (checked when each step is handed out);
 *   P2 mount only on an attached, not ejected disk; eject/remove only with
 *      nothing mounted;
 *   P3 at the end every release is retried with succeeding backends: then
 *      nothing is attached or mounted and only pinned slots are used;
 *   P4 every step of an id names its own host path, the slot its disk
 *      holds, the canonical guest path of that slot and partition; a slot
 *      is never handed to a disk while another disk or attached state
 *      refers to it;
 *   P5 a failed reserve or pin leaves the introspection byte-identical;
 *   P6 mapping an id whose partition is mounted returns DONE, no step,
 *      the canonical path;
 *   P7 once backends succeed a retried map and a retried unmap complete;
 *   P8 unknown or released ids: NOT_FOUND, no step;
 *   P9 a new disk takes the lowest free unpinned slot (its pin if pinned);
 * plus: introspection (stats, slots, reservations) agrees with the model,
 * and save -> import -> save is byte-identical.
 *
 * Build (clang): see ops.cmake. With -DSCSICTL_FUZZ_REPLAY_MAIN the file
 * also has a main() that runs every file or directory given on the command
 * line through LLVMFuzzerTestOneInput (the regression replay, any compiler).
 */
#include "scsictl.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPATHS 4
#define NPART 4
#define MAXSLOTS 8
#define MAXIDS 10
#define MAXOPS 3
#define MAXREL 16
#define M1_OPTIONS "ro", "noatime"
#define M1_FILESYSTEM "xfs"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- input ---------------------------------------------------------- */

static const uint8_t *in_data;
static size_t in_size, in_pos;

static bool more(void) { return in_pos < in_size; }
static unsigned byte(void) { return in_pos < in_size ? in_data[in_pos++] : 0; }

/* ---- violations ----------------------------------------------------- */

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_ops: property violated: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#define REQUIRE(cond, ...)                                                   \
    do {                                                                     \
        if (!(cond)) fail(__VA_ARGS__);                                      \
    } while (0)

/* ---- the pool --------------------------------------------------------- */

static const char *const path_names[NPATHS] = {"/img/a.vhdx", "/img/b.vhdx", "/img/c",
                                                 "/img/a.vhdx/"};
static const uint64_t part_nums[NPART] = {0, 1, 2, INT64_MAX};

static scsictl_disk_config dcfg(int path, int i)
{
    scsictl_disk_config d;
    memset(&d, 0, sizeof d);
    d.host_path = path_names[path];
    d.type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK;
    d.evd_type = i == 1 ? "" : NULL; /* differs only in NULL vs "" */
    return d;
}

/* ---- the model: core/tests/shadow_model.h ------------------------------ */

#define SM_CHECK(cond, ...) ((cond) ? true : (fail(__VA_ARGS__), false))
#include "../tests/shadow_model.h"

/* ---- introspection: the core agrees with the model ------------------ */

/* A textual dump of everything introspection shows, for P5. */
static size_t dump(char *out, size_t size)
{
    size_t w = 0;
#define PUT(...)                                                             \
    do {                                                                     \
        int n_ = snprintf(out + w, w < size ? size - w : 0, __VA_ARGS__);    \
        if (n_ > 0) w += (size_t)n_;                                         \
        if (w >= size) w = size - 1;                                         \
    } while (0)
    scsictl_stats st;
    scsictl_get_stats(M.ctl, &st);
    PUT("used %u free %u pinned %u disks %zu res %zu c%d b%d|", st.used, st.free, st.pinned,
        st.disks, st.reservations, st.closed, st.busy);
    scsictl_slot_info *si = NULL;
    size_t n = 0;
    REQUIRE(scsictl_list_slots(M.ctl, &si, &n, NULL) == SCSICTL_OK, "list_slots failed");
    for (size_t i = 0; i < n; i++) {
        PUT("%u:%u p%d b%d %s %d r%zu[", si[i].controller, si[i].lun, si[i].pinned, si[i].busy,
            si[i].host_path ? si[i].host_path : "-", si[i].has_disk ? (int)si[i].state : -1,
            si[i].reservations);
        for (size_t j = 0; j < si[i].n_partitions; j++)
            PUT("%llu %d %zu %s;", (unsigned long long)si[i].partitions[j].partition,
                (int)si[i].partitions[j].state, si[i].partitions[j].refs,
                si[i].partitions[j].guest_path ? si[i].partitions[j].guest_path : "-");
        PUT("]");
    }
    scsictl_info_free(M.ctl, si);
    scsictl_reservation_info *ri = NULL;
    REQUIRE(scsictl_list_reservations(M.ctl, &ri, &n, NULL) == SCSICTL_OK, "list_reservations");
    for (size_t i = 0; i < n; i++) {
        char ids[SCSICTL_ID_STRLEN + 1];
        scsictl_id_format(&ri[i].id, ids);
        PUT("|%s %u:%u:%llu %s %d", ids, ri[i].controller, ri[i].lun,
            (unsigned long long)ri[i].partition, ri[i].host_path, ri[i].release_pending);
    }
    scsictl_info_free(M.ctl, ri);
#undef PUT
    return w;
}

static void check_introspection(void)
{
    scsictl_slot_info *si = NULL;
    size_t n = 0, k = 0;
    REQUIRE(scsictl_list_slots(M.ctl, &si, &n, NULL) == SCSICTL_OK, "list_slots failed");
    int used = 0, pinned = 0, disks = 0, live = 0;
    for (int i = 0; i < MAXIDS; i++) live += M.ids[i].live;
    for (int s = 0; s < M.nslots; s++) {
        int p = path_at(s);
        mslot *ms = &M.slot[s];
        if (p < 0) {
            REQUIRE(!ms->attached, "P3/P4: slot %d attached with no disk", s);
            for (int q = 0; q < NPART; q++) REQUIRE(!ms->mounted[q], "P3: slot %d mounted", s);
        }
        if (p < 0 && !ms->pinned) continue;
        used++;
        pinned += ms->pinned;
        disks += p >= 0;
        REQUIRE(k < n, "slot %d missing from list_slots", s);
        scsictl_slot_info *x = &si[k++];
        REQUIRE(x->controller == (uint32_t)s / M.L && x->lun == (uint32_t)s % M.L,
                "list_slots order: %u:%u, want slot %d", x->controller, x->lun, s);
        REQUIRE(x->pinned == ms->pinned && x->has_disk == (p >= 0), "slot %d pinned/has_disk", s);
        if (p < 0) continue;
        scsictl_disk_state want = disk_state(ms);
        REQUIRE(x->host_path && strcmp(x->host_path, path_names[p]) == 0 && x->state == want &&
                    x->reservations == (size_t)disk_claims(p) && x->busy == path_busy(p),
                "slot %d: %s %s r%zu busy %d; model %s %s r%d busy %d", s,
                x->host_path ? x->host_path : "-", scsictl_disk_state_name(x->state),
                x->reservations, x->busy, path_names[p], scsictl_disk_state_name(want),
                disk_claims(p), path_busy(p));
        if (M.disk[p].tearing) continue;
        size_t np = 0;
        for (int q = 0; q < NPART; q++) {
            if (!M.part_exists[p][q]) continue;
            np++;
            bool found = false;
            for (size_t j = 0; j < x->n_partitions; j++) {
                if (x->partitions[j].partition != part_nums[q]) continue;
                found = true;
                bool mnt = x->partitions[j].state == SCSICTL_MOUNT_MOUNTED;
                REQUIRE(mnt == ms->mounted[q] && x->partitions[j].refs == (size_t)refs(p, q),
                        "partition %s:%d mounted %d/%d refs %zu/%d", path_names[p], q, mnt,
                        ms->mounted[q], x->partitions[j].refs, refs(p, q));
                REQUIRE(mnt == (x->partitions[j].guest_path != NULL), "guest_path iff mounted");
            }
            REQUIRE(found, "partition %s:%d not listed", path_names[p], q);
        }
        REQUIRE(x->n_partitions == np, "slot %d lists %zu partitions, model %zu", s,
                x->n_partitions, np);
    }
    REQUIRE(k == n, "list_slots has %zu entries, model %zu", n, k);
    scsictl_info_free(M.ctl, si);
    scsictl_stats st;
    scsictl_get_stats(M.ctl, &st);
    REQUIRE(st.used == (uint32_t)used && st.pinned == (uint32_t)pinned &&
                st.disks == (size_t)disks && st.reservations == (size_t)live &&
                st.free == st.slots - st.used && st.busy == any_busy() &&
                st.closed == M.closed && st.slots == (uint32_t)M.nslots,
            "stats: used %u/%d pinned %u/%d disks %zu/%d res %zu/%d busy %d", st.used, used,
            st.pinned, pinned, st.disks, disks, st.reservations, live, st.busy);
    scsictl_reservation_info *ri = NULL;
    REQUIRE(scsictl_list_reservations(M.ctl, &ri, &n, NULL) == SCSICTL_OK, "list_reservations");
    REQUIRE(n == (size_t)live, "list_reservations: %zu, model %d", n, live);
    for (size_t i = 0; i < n; i++) {
        int idx = -1;
        for (int j = 0; j < MAXIDS; j++)
            if (M.ids[j].live && memcmp(M.ids[j].id.bytes, ri[i].id.bytes, 16) == 0) idx = j;
        REQUIRE(idx >= 0, "listed id unknown to the model");
        mid *d = &M.ids[idx];
        int s = M.disk[d->path].slot;
        REQUIRE(ri[i].controller == (uint32_t)s / M.L && ri[i].lun == (uint32_t)s % M.L &&
                    ri[i].partition == part_nums[d->part] &&
                    strcmp(ri[i].host_path, path_names[d->path]) == 0 &&
                    ri[i].release_pending == d->pending,
                "P4: reservation %s:%d listed at %u:%u pending %d/%d", path_names[d->path],
                d->part, ri[i].controller, ri[i].lun, ri[i].release_pending, d->pending);
    }
    scsictl_info_free(M.ctl, ri);
}

/* ---- actions ---------------------------------------------------------- */

static void report(int k, bool ok)
{
    mop *o = &M.ops[k];
    scsictl_error err;
    int st = report_step(o, ok, "injected failure", &err);
    if (ok) return;
    REQUIRE(st == SCSICTL_E_BACKEND, "failed step: got %s", scsictl_code_name(st));
    REQUIRE(strstr(err.message, "injected failure") && strstr(err.message, path_names[o->path]),
            "backend error message lacks context: %s", err.message);
    /* a stray second report of a finished op is refused */
    REQUIRE(scsictl_op_report(M.ctl, &o->op, true, NULL, NULL) == SCSICTL_E_INVALID_ARGUMENT,
            "a report of a finished op was accepted");
}

static int pick_live(unsigned b)
{
    int c[MAXIDS], n = 0;
    for (int i = 0; i < MAXIDS; i++)
        if (M.ids[i].live) c[n++] = i;
    return n ? c[b % (unsigned)n] : -1;
}

static void start(int idx, bool is_map)
{
    int k = free_op();
    if (k < 0 || id_in_flight(idx)) return;
    mid *d = &M.ids[idx];
    mop *o = &M.ops[k];
    scsictl_error err;
    char before[4096], after[4096];
    bool refused = path_busy(d->path) || (is_map && d->pending);
    if (refused) dump(before, sizeof before);
    int st = is_map ? scsictl_op_start_map(M.ctl, &o->op, &d->id, &err)
                    : scsictl_op_start_unmap(M.ctl, &o->op, &d->id, &err);
    if (refused) {
        REQUIRE(st == SCSICTL_E_BUSY, "%s of an id on busy %s (pending %d): got %s",
                is_map ? "map" : "unmap", path_names[d->path], d->pending, scsictl_code_name(st));
        dump(after, sizeof after);
        REQUIRE(strcmp(before, after) == 0, "a busy refusal changed state");
        return;
    }
    settle(o, st, op_begin(o, idx, is_map), &err);
}

static void do_reserve(unsigned b1, unsigned b2)
{
    int idx = -1;
    for (int i = 0; i < MAXIDS; i++)
        if (!M.ids[i].live) { idx = i; break; }
    if (idx < 0) return;
    int p = (int)(b1 % NPATHS), dc = (int)((b1 >> 2) & 1), part = (int)(b2 % NPART),
        mc = (int)((b2 >> 2) & 1);
    bool null_mount = part == 0 && mc == 0 && (b2 & 8);
    scsictl_disk_config d = dcfg(p, dc);
    scsictl_mount_config m = mcfg(part, mc);
    bool busy, mismatch, noslots;
    int slot = reserve_expect(p, dc, part, mc, &busy, &mismatch, &noslots);
    char before[4096], after[4096];
    dump(before, sizeof before);
    scsictl_id id;
    scsictl_error err;
    int rc = scsictl_reserve(M.ctl, &d, null_mount ? NULL : &m, &id, &err);
    if (M.closed || busy || mismatch || noslots) {
        REQUIRE((M.closed && rc == SCSICTL_E_CLOSED) ||
                    (!M.closed && ((busy && rc == SCSICTL_E_BUSY) ||
                                   (mismatch && rc == SCSICTL_E_CONFIG_MISMATCH) ||
                                   (noslots && rc == SCSICTL_E_NO_SLOTS))),
                "reserve %s dcfg %d part %d mcfg %d: got %s; model closed %d busy %d mismatch %d "
                "no_slots %d",
                path_names[p], dc, part, mc, scsictl_code_name(rc), M.closed, busy, mismatch,
                noslots);
        dump(after, sizeof after);
        REQUIRE(strcmp(before, after) == 0, "P5: failed reserve changed state\n%s\n%s", before,
                after);
        return;
    }
    REQUIRE(rc == SCSICTL_OK, "reserve %s: got %s (%s)", path_names[p], scsictl_code_name(rc),
            err.message);
    if (!M.disk[p].present) {
        REQUIRE(path_at(slot) < 0 && !M.slot[slot].attached,
                "P4: slot %d handed to %s while in use", slot, path_names[p]);
        M.disk[p] = (mdisk){ .present = true, .slot = slot, .dcfg = dc, .tearing = false };
    }
    if (!M.part_exists[p][part]) {
        M.part_exists[p][part] = true;
        M.part_mcfg[p][part] = mc;
    }
    M.ids[idx] = (mid){ .live = true, .id = id, .path = p, .part = part, .holds_part = true };
    scsictl_reservation_info *ri = NULL;
    REQUIRE(scsictl_get_reservation(M.ctl, &id, &ri, NULL) == SCSICTL_OK, "new id not found");
    REQUIRE(ri->controller == (uint32_t)slot / M.L && ri->lun == (uint32_t)slot % M.L,
            "P9: %s got %u:%u, model says slot %d", path_names[p], ri->controller, ri->lun, slot);
    scsictl_info_free(M.ctl, ri);
}

static void do_pin(unsigned b1, unsigned b2)
{
    uint64_t c = b1 % (M.C + 1), l = (b1 >> 4) % (M.L + 1);
    if ((b2 & 7) == 0) c = (b2 & 8) ? UINT64_MAX : (1ull << 32) + c;
    if ((b2 & 7) == 1) l = (b2 & 8) ? UINT64_MAX : (1ull << 32) + l;
    int p = (b2 & 16) ? (int)((b2 >> 5) % NPATHS) : -1, dc = (b2 >> 7) & 1;
    scsictl_disk_config d;
    if (p >= 0) d = dcfg(p, dc);
    int want, s = -1;
    if (M.closed) want = SCSICTL_E_CLOSED;
    else if (c >= M.C || l >= M.L) want = SCSICTL_E_OUT_OF_RANGE;
    else {
        s = (int)(c * M.L + l);
        if (M.slot[s].pinned || path_at(s) >= 0) want = SCSICTL_E_SLOT_TAKEN;
        else if (p >= 0 && (pinned_slot_of(p) >= 0 || M.disk[p].present)) want = SCSICTL_E_SLOT_TAKEN;
        else want = SCSICTL_OK;
    }
    char before[4096], after[4096];
    dump(before, sizeof before);
    int rc = scsictl_reserve_for_rootfs(M.ctl, c, l, p >= 0 ? &d : NULL, NULL);
    REQUIRE(rc == want, "pin %llu:%llu path %d: got %s, want %s", (unsigned long long)c,
            (unsigned long long)l, p, scsictl_code_name(rc), scsictl_code_name(want));
    if (rc != SCSICTL_OK) {
        dump(after, sizeof after);
        REQUIRE(strcmp(before, after) == 0, "P5: failed pin changed state");
        return;
    }
    REQUIRE(!M.slot[s].attached, "P4: pinned a slot that is attached");
    M.slot[s].pinned = true;
    M.slot[s].pin_path = p;
    M.slot[s].pin_dcfg = dc;
}

static void do_unknown(unsigned b)
{
    scsictl_id id;
    if (M.nreleased && (b & 1)) {
        int n = M.nreleased < MAXREL ? M.nreleased : MAXREL;
        id = M.released[(b >> 1) % (unsigned)n];
    } else {
        memset(&id, 0, sizeof id);
        for (int i = 0; i < 16; i++) id.bytes[i] = (uint8_t)(b * 31u + (unsigned)i * 7u + 1u);
        id.bytes[6] = 0x4f; /* never a real id: a fixed pattern */
        id.bytes[8] = 0xbf;
        id.bytes[15] = 0xfe;
    }
    scsictl_op op;
    scsictl_error err;
    char before[4096], after[4096];
    dump(before, sizeof before);
    int st = (b & 2) ? scsictl_op_start_map(M.ctl, &op, &id, &err)
                     : scsictl_op_start_unmap(M.ctl, &op, &id, &err);
    REQUIRE(st == (M.closed ? SCSICTL_E_CLOSED : SCSICTL_E_NOT_FOUND), "P8: unknown id: got %s",
            scsictl_code_name(st));
    scsictl_reservation_info *ri = NULL;
    REQUIRE(scsictl_get_reservation(M.ctl, &id, &ri, NULL) == SCSICTL_E_NOT_FOUND,
            "P8: unknown id listed");
    dump(after, sizeof after);
    REQUIRE(strcmp(before, after) == 0, "P8: unknown id changed state");
}

/* save + import: the run continues on the imported controller. */
static void do_save_import(void)
{
    char *snap = NULL, *snap2 = NULL;
    size_t len = 0, len2 = 0;
    int rc = scsictl_save(M.ctl, &snap, &len, NULL);
    if (any_busy()) {
        REQUIRE(rc == SCSICTL_E_BUSY, "save with a step in flight: got %s", scsictl_code_name(rc));
        return;
    }
    REQUIRE(rc == SCSICTL_OK, "save: %s", scsictl_code_name(rc));
    scsictl *ctl2 = NULL;
    scsictl_error err;
    rc = scsictl_import(snap, len, NULL, &ctl2, &err);
    REQUIRE(rc == SCSICTL_OK, "import of a fresh save: %s (%s)", scsictl_code_name(rc),
            err.message);
    REQUIRE(scsictl_save(ctl2, &snap2, &len2, NULL) == SCSICTL_OK, "save of the import");
    REQUIRE(len == len2 && memcmp(snap, snap2, len) == 0, "P10: save/import/save differs");
    char before[4096], after[4096];
    dump(before, sizeof before);
    scsictl_info_free(M.ctl, snap);
    scsictl_info_free(ctl2, snap2);
    scsictl_free(M.ctl);
    M.ctl = ctl2;
    dump(after, sizeof after);
    REQUIRE(strcmp(before, after) == 0, "import: introspection differs");
}

static void do_close(bool really)
{
    scsictl_error err;
    if (any_busy()) {
        char before[4096], after[4096];
        dump(before, sizeof before);
        REQUIRE(scsictl_close(M.ctl, &err) == SCSICTL_E_BUSY, "close with a step in flight");
        dump(after, sizeof after);
        REQUIRE(strcmp(before, after) == 0, "a refused close changed state");
        return;
    }
    if (!really) return;
    REQUIRE(scsictl_close(M.ctl, &err) == SCSICTL_OK, "close");
    REQUIRE(scsictl_close(M.ctl, &err) == SCSICTL_OK, "close is idempotent");
    M.closed = true;
    /* every mutating call is refused, nothing changes */
    for (int i = 0; i < MAXIDS; i++) {
        if (!M.ids[i].live) continue;
        scsictl_op op;
        REQUIRE(scsictl_op_start_map(M.ctl, &op, &M.ids[i].id, NULL) == SCSICTL_E_CLOSED,
                "map after close");
        REQUIRE(scsictl_op_start_unmap(M.ctl, &op, &M.ids[i].id, NULL) == SCSICTL_E_CLOSED,
                "unmap after close");
    }
}

/* P7 and P3: backends succeed from here on. */
static void teardown(void)
{
    for (int k = 0; k < MAXOPS; k++)
        for (int guard = 0; M.ops[k].used; guard++) {
            REQUIRE(guard < 16, "P7: an op does not converge");
            report(k, true);
        }
    check_introspection();
    if (M.closed) return;
    for (int i = 0; i < MAXIDS; i++) {
        if (!M.ids[i].live || M.ids[i].pending) continue;
        start(i, true);
        for (int guard = 0; M.ops[0].used; guard++) {
            REQUIRE(guard < 16, "P7: a retried map does not converge");
            report(0, true);
        }
        mid *d = &M.ids[i];
        REQUIRE(M.slot[M.disk[d->path].slot].mounted[d->part],
                "P7: a retried map with good backends leaves the partition unmounted");
    }
    check_introspection();
    for (int i = 0; i < MAXIDS; i++) {
        if (!M.ids[i].live) continue;
        start(i, false);
        for (int guard = 0; M.ops[0].used; guard++) {
            REQUIRE(guard < 16, "P7: a retried unmap does not converge");
            report(0, true);
        }
        REQUIRE(!M.ids[i].live, "P7: a retried release with good backends did not complete");
        check_introspection();
    }
    int pinned = 0;
    for (int s = 0; s < M.nslots; s++) {
        pinned += M.slot[s].pinned;
        REQUIRE(!M.slot[s].attached, "P3: slot %d attached at the end", s);
        for (int q = 0; q < NPART; q++) REQUIRE(!M.slot[s].mounted[q], "P3: %d:%d mounted", s, q);
    }
    scsictl_stats st;
    scsictl_get_stats(M.ctl, &st);
    REQUIRE(st.used == (uint32_t)pinned && st.disks == 0 && st.reservations == 0 && !st.busy,
            "P3: used %u pinned %d disks %zu reservations %zu", st.used, pinned, st.disks,
            st.reservations);
    /* closing the quiet controller: every mutation refused afterwards */
    do_close(true);
    scsictl_disk_config d = dcfg(0, 0);
    scsictl_id id;
    REQUIRE(scsictl_reserve(M.ctl, &d, NULL, &id, NULL) == SCSICTL_E_CLOSED, "reserve after close");
    REQUIRE(scsictl_reserve_for_rootfs(M.ctl, 0, 0, NULL, NULL) == SCSICTL_E_CLOSED,
            "pin after close");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in_data = data;
    in_size = size;
    in_pos = 0;
    memset(&M, 0, sizeof M);
    unsigned g = byte();
    M.C = g % 3;                    /* 0..2 controllers */
    M.L = 1 + (g >> 2) % 4;         /* 1..4 luns */
    M.guest = (g & 0x80) ? SCSICTL_GUEST_WINDOWS : SCSICTL_GUEST_LINUX;
    M.nslots = (int)(M.C * M.L);
    for (int s = 0; s < MAXSLOTS; s++) M.slot[s].pin_path = -1;
    scsictl_options o = { .controllers = M.C, .luns_per_controller = M.L, .guest = M.guest };
    if (scsictl_new(&o, &M.ctl, NULL) != SCSICTL_OK) abort();
    check_introspection();

    for (int steps = 0; more() && steps < 4096 && !M.closed; steps++) {
        unsigned a = byte(), b1 = byte(), b2 = byte();
        switch (a % 16) {
        case 0: case 1: case 2:
            do_reserve(b1, b2);
            break;
        case 3: case 4: {
            int idx = pick_live(b1);
            if (idx >= 0) start(idx, true);
            break;
        }
        case 5: case 6: {
            int idx = pick_live(b1);
            if (idx >= 0) start(idx, false);
            break;
        }
        case 7: case 8: case 9: case 10: case 11: {
            int c[MAXOPS], n = 0;
            for (int k = 0; k < MAXOPS; k++)
                if (M.ops[k].used) c[n++] = k;
            if (n) report(c[b1 % (unsigned)n], (b2 % 4) != 0);
            break;
        }
        case 12:
            do_pin(b1, b2);
            break;
        case 13:
            do_unknown(b1);
            break;
        case 14:
            do_save_import();
            break;
        default:
            do_close(b1 == 0xC5 && b2 == 0x5C); /* a real close is rare: it ends the run */
            break;
        }
        check_introspection();
    }
    teardown();
    scsictl_free(M.ctl);
    M.ctl = NULL;
    return 0;
}

#ifdef SCSICTL_FUZZ_REPLAY_MAIN
/* Replay driver: runs every file (directories: every file inside) given on
 * the command line through the target. Exits non-zero if nothing ran. */
#include <dirent.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 1;
}

int main(int argc, char **argv)
{
    int ran = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "cannot stat %s\n", argv[i]);
            return 2;
        }
        if (!S_ISDIR(sb.st_mode)) {
            if (run_file(argv[i]) < 0) return 2;
            ran++;
            continue;
        }
        DIR *dir = opendir(argv[i]);
        if (!dir) return 2;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
            if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
            if (run_file(p) < 0) return 2;
            ran++;
        }
        closedir(dir);
    }
    printf("fuzz_ops replay: %d inputs, 0 violations\n", ran);
    return ran > 0 ? 0 : 1;
}
#endif
