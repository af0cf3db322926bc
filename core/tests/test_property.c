/*
 * test_property.c — randomized model-based test of spec §6 P1-P9.
 *
 * A seeded PRNG drives thousands of random operations per seed on small
 * geometries: reserves over a pool of 5 host paths, 3 partitions, two disk
 * configs and two mount configs (so config_mismatch happens), rootfs pins
 * (in and out of range), Linux and Windows guests, random step failures,
 * unknown and released ids, and up to MAXOPS operations in flight at once
 * on different disks (start an op, take its step, start others, report in
 * random order).
 *
 * A shadow model is built from the steps issued and their results (per
 * slot: attached, ejected; per (slot, partition): mounted) plus the claims
 * this test holds. After every action it checks:
 *   P1 adds/removes and mounts/unmounts alternate; Linux removes follow an
 *      eject (checked when each step is issued);
 *   P2 mounts only on attached disks; eject/remove only with nothing
 *      mounted;
 *   P3 after releasing everything (failed releases retried with backends
 *      succeeding) nothing is attached, mounted or used except pins;
 *   P4 every step of an id names its own host path, the slot its disk
 *      holds, the canonical guest path; a slot never goes to a second disk;
 *   P5 a failed reserve (or pin) changes nothing (stats, slots and
 *      reservations identical);
 *   P6 mapping a mounted partition returns DONE with no step, same path;
 *   P7 once backends succeed, a retried map and a retried unmap succeed;
 *   P8 unknown / released ids give not_found and no step;
 *   P9 a new disk takes the lowest free unpinned slot (computed here).
 * and that the introspection (slots, stats, reservations) agrees with the
 * model.
 *
 * Usage: test_property [seed [ops]]; or SCSICTL_SEED=<n>. Default: a fixed
 * list of seeds. The seed of each run is printed.
 */
#include "test_util.h"

#define NPATHS 5
#define NPART 3
#define MAXSLOTS 8
#define MAXIDS 12
#define MAXOPS 3
#define MAXREL 32
#define M1_OPTIONS "noatime"
#define M1_FILESYSTEM "ext4"

#define SM_CHECK(cond, ...) tu_check((cond), __FILE__, __LINE__, __VA_ARGS__)
#include "shadow_model.h"

static const char *const path_names[NPATHS] = {"/p0", "/p1", "/p2", "/p3", "/p4"};
static const uint64_t part_nums[NPART] = {0, 1, 2};

static uint64_t rnd(void) { return tu_splitmix64(&M.rng); }

static int rn(int n) { return (int)(rnd() % (uint64_t)n); }
static bool pct(int p) { return rn(100) < p; }

static bool stop_now(void) { return atomic_load(&tu_failed) > 40; }

static scsictl_disk_config dcfg(int path, int i)
{
    scsictl_disk_config d = tu_disk(path_names[path]);
    d.read_only = i == 1;
    return d;
}

/* Reports the step of op slot k. */
static void report(int k, bool ok)
{
    scsictl_error err;
    int st = report_step(&M.ops[k], ok, "injected", &err);
    if (ok) return;
    M.n_fail++;
    tu_check(st == SCSICTL_E_BACKEND, __FILE__, __LINE__, "failed step: got %s",
             scsictl_code_name(st));
}

static int pick_live(void)
{
    int c[MAXIDS], n = 0;
    for (int i = 0; i < MAXIDS; i++)
        if (M.ids[i].live) c[n++] = i;
    return n ? c[rn(n)] : -1;
}

/* Starts a map or unmap of idx. */
static void start(int idx, bool is_map)
{
    int k = free_op();
    if (k < 0) return;
    mid *d = &M.ids[idx];
    mop *o = &M.ops[k];
    scsictl_error err;
    int st = is_map ? scsictl_op_start_map(M.ctl, &o->op, &d->id, &err)
                    : scsictl_op_start_unmap(M.ctl, &o->op, &d->id, &err);
    if (path_busy(d->path) || (is_map && d->pending)) {
        M.n_busy++;
        tu_check(st == SCSICTL_E_BUSY, __FILE__, __LINE__,
                 "%s of an id on busy %s (pending %d): got %s", is_map ? "map" : "unmap",
                 path_names[d->path], d->pending, scsictl_code_name(st));
        return;
    }
    int next = op_begin(o, idx, is_map);
    if (is_map && next < 0) M.n_done_nostep++;
    settle(o, st, next, &err);
}

static void do_reserve(void)
{
    int idx = -1;
    for (int i = 0; i < MAXIDS; i++)
        if (!M.ids[i].live) { idx = i; break; }
    if (idx < 0) return;
    int p = rn(NPATHS), dc = pct(12) ? 1 : 0, part = rn(NPART), mc = pct(12) ? 1 : 0;
    scsictl_disk_config d = dcfg(p, dc);
    scsictl_mount_config m = mcfg(part, mc);
    /* prediction: the acceptable codes and the slot */
    bool busy, mismatch, noslots;
    int slot = reserve_expect(p, dc, part, mc, &busy, &mismatch, &noslots);
    char before[4096], after[4096];
    tu_snapshot(M.ctl, before, sizeof before);
    scsictl_id id;
    scsictl_error err;
    int rc = scsictl_reserve(M.ctl, &d, &m, &id, &err);
    if (busy || mismatch || noslots) {
        bool okc = (busy && rc == SCSICTL_E_BUSY) ||
                   (mismatch && rc == SCSICTL_E_CONFIG_MISMATCH) ||
                   (noslots && rc == SCSICTL_E_NO_SLOTS);
        tu_check(okc, __FILE__, __LINE__,
                 "reserve %s dcfg %d part %d mcfg %d: got %s, model: busy %d mismatch %d "
                 "no_slots %d", path_names[p], dc, part, mc, scsictl_code_name(rc), busy,
                 mismatch, noslots);
        if (rc == SCSICTL_E_BUSY) M.n_busy++;
        if (rc == SCSICTL_E_CONFIG_MISMATCH) M.n_mismatch++;
        if (rc == SCSICTL_E_NO_SLOTS) M.n_noslots++;
        if (rc != SCSICTL_OK) {
            tu_snapshot(M.ctl, after, sizeof after);
            tu_check(strcmp(before, after) == 0, __FILE__, __LINE__,
                     "P5: failed reserve changed state\n  before %s\n  after  %s", before, after);
            return;
        }
        /* accepted against the model: stop here, the model is off */
        tu_check(false, __FILE__, __LINE__, "reserve accepted where the model refuses");
        return;
    }
    if (!tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "reserve %s: got %s (%s)",
                  path_names[p], scsictl_code_name(rc), err.message))
        return;
    if (!M.disk[p].present) {
        tu_check(!M.slot[slot].attached, __FILE__, __LINE__,
                 "P4: slot %d handed out while still attached", slot);
        M.disk[p].present = true;
        M.disk[p].slot = slot;
        M.disk[p].dcfg = dc;
        M.disk[p].tearing = false;
    }
    if (!M.part_exists[p][part]) {
        M.part_exists[p][part] = true;
        M.part_mcfg[p][part] = mc;
    }
    mid *n = &M.ids[idx];
    memset(n, 0, sizeof *n);
    n->live = true;
    n->id = id;
    n->path = p;
    n->dcfg = dc;
    n->part = part;
    n->mcfg = mc;
    n->holds_part = true;
    scsictl_reservation_info *ri = NULL;
    if (scsictl_get_reservation(M.ctl, &id, &ri, &err) == SCSICTL_OK) {
        tu_check(ri->controller == (uint32_t)slot / M.L && ri->lun == (uint32_t)slot % M.L,
                 __FILE__, __LINE__, "P9: %s got %u:%u, model says slot %d", path_names[p],
                 ri->controller, ri->lun, slot);
        scsictl_info_free(M.ctl, ri);
    } else {
        tu_check(false, __FILE__, __LINE__, "get_reservation of a new id");
    }
}

static void do_pin(void)
{
    uint64_t c = (uint64_t)rn((int)M.C + 1), l = (uint64_t)rn((int)M.L + 1);
    if (pct(10)) c = pct(50) ? UINT64_MAX : (1ull << 32) + c;
    if (pct(10)) l = pct(50) ? UINT64_MAX : (1ull << 32) + l;
    int p = pct(50) ? rn(NPATHS) : -1, dc = pct(20) ? 1 : 0;
    scsictl_disk_config d;
    if (p >= 0) d = dcfg(p, dc);
    int want;
    int s = -1;
    if (c >= M.C || l >= M.L) want = SCSICTL_E_OUT_OF_RANGE;
    else {
        s = (int)(c * M.L + l);
        if (M.slot[s].pinned || path_at(s) >= 0) want = SCSICTL_E_SLOT_TAKEN;
        else if (p >= 0 && (pinned_slot_of(p) >= 0 || M.disk[p].present)) want = SCSICTL_E_SLOT_TAKEN;
        else want = SCSICTL_OK;
    }
    int pinned = 0;
    for (int i = 0; i < M.nslots; i++) pinned += M.slot[i].pinned;
    if (want == SCSICTL_OK && pinned * 2 >= M.nslots) return; /* keep slots for disks */
    char before[4096], after[4096];
    tu_snapshot(M.ctl, before, sizeof before);
    scsictl_error err;
    int rc = scsictl_reserve_for_rootfs(M.ctl, c, l, p >= 0 ? &d : NULL, &err);
    tu_check(rc == want, __FILE__, __LINE__, "pin %llu:%llu path %d: got %s, want %s",
             (unsigned long long)c, (unsigned long long)l, p, scsictl_code_name(rc),
             scsictl_code_name(want));
    if (rc != SCSICTL_OK) {
        tu_snapshot(M.ctl, after, sizeof after);
        tu_check(strcmp(before, after) == 0, __FILE__, __LINE__, "P5: failed pin changed state");
        return;
    }
    if (want == SCSICTL_OK) {
        M.n_pins++;
        M.slot[s].pinned = true;
        M.slot[s].pin_path = p;
        M.slot[s].pin_dcfg = dc;
    }
}

/* P8: unknown and released ids. */
static void do_unknown(void)
{
    scsictl_id id = M.nreleased && pct(70) ? M.released[rn(M.nreleased < MAXREL ? M.nreleased : MAXREL)]
                                           : tu_unknown_id((unsigned)rnd());
    scsictl_op op;
    scsictl_error err;
    int st = pct(50) ? scsictl_op_start_map(M.ctl, &op, &id, &err)
                     : scsictl_op_start_unmap(M.ctl, &op, &id, &err);
    M.n_notfound++;
    tu_check(st == SCSICTL_E_NOT_FOUND, __FILE__, __LINE__, "P8: unknown id: got %s",
             scsictl_code_name(st));
}

/* Introspection agrees with the model. */
static void check_introspection(void)
{
    scsictl_slot_info *si = NULL;
    size_t n = 0;
    scsictl_error err;
    if (!tu_check(scsictl_list_slots(M.ctl, &si, &n, &err) == SCSICTL_OK, __FILE__, __LINE__,
                  "list_slots"))
        return;
    size_t k = 0;
    int used = 0, pinned = 0, disks = 0, live = 0;
    for (int i = 0; i < MAXIDS; i++) live += M.ids[i].live;
    for (int s = 0; s < M.nslots; s++) {
        int p = path_at(s);
        mslot *ms = &M.slot[s];
        if (p < 0 && !ms->pinned) {
            tu_check(!ms->attached, __FILE__, __LINE__, "P3: free slot %d still attached", s);
            continue;
        }
        used++;
        pinned += ms->pinned;
        disks += p >= 0;
        if (!tu_check(k < n, __FILE__, __LINE__, "slot %d missing from list_slots", s)) break;
        scsictl_slot_info *x = &si[k++];
        tu_check(x->controller == (uint32_t)s / M.L && x->lun == (uint32_t)s % M.L, __FILE__,
                 __LINE__, "list_slots order: %u:%u, want slot %d", x->controller, x->lun, s);
        tu_check(x->pinned == ms->pinned && x->has_disk == (p >= 0), __FILE__, __LINE__,
                 "slot %d pinned %d/%d has_disk %d/%d", s, x->pinned, ms->pinned, x->has_disk,
                 p >= 0);
        if (p < 0) continue;
        scsictl_disk_state want = disk_state(ms);
        tu_check(x->host_path && strcmp(x->host_path, path_names[p]) == 0 && x->state == want &&
                     x->reservations == (size_t)disk_claims(p) && x->busy == path_busy(p),
                 __FILE__, __LINE__,
                 "slot %d: %s %s r%zu busy %d; model %s %s r%d busy %d", s,
                 x->host_path ? x->host_path : "(null)", scsictl_disk_state_name(x->state),
                 x->reservations, x->busy, path_names[p], scsictl_disk_state_name(want),
                 disk_claims(p), path_busy(p));
        if (M.disk[p].tearing) continue; /* partition claims of a teardown: see semantics */
        size_t np = 0;
        for (int q = 0; q < NPART; q++) {
            if (!M.part_exists[p][q]) continue;
            bool found = false;
            for (size_t j = 0; j < x->n_partitions; j++) {
                if (x->partitions[j].partition != (uint64_t)q) continue;
                found = true;
                bool mnt = x->partitions[j].state == SCSICTL_MOUNT_MOUNTED;
                tu_check(mnt == ms->mounted[q] && x->partitions[j].refs == (size_t)refs(p, q),
                         __FILE__, __LINE__, "partition %s:%d mounted %d/%d refs %zu/%d",
                         path_names[p], q, mnt, ms->mounted[q], x->partitions[j].refs,
                         refs(p, q));
            }
            tu_check(found, __FILE__, __LINE__, "partition %s:%d not listed", path_names[p], q);
            np++;
        }
        tu_check(x->n_partitions == np, __FILE__, __LINE__, "slot %d lists %zu partitions, model %zu",
                 s, x->n_partitions, np);
    }
    tu_check(k == n, __FILE__, __LINE__, "list_slots has %zu entries, model %zu", n, k);
    scsictl_info_free(M.ctl, si);
    scsictl_stats st;
    scsictl_get_stats(M.ctl, &st);
    tu_check(st.used == (uint32_t)used && st.pinned == (uint32_t)pinned &&
                 st.disks == (size_t)disks && st.reservations == (size_t)live &&
                 st.free == st.slots - st.used && st.busy == any_busy(),
             __FILE__, __LINE__, "stats: used %u/%d pinned %u/%d disks %zu/%d res %zu/%d busy %d",
             st.used, used, st.pinned, pinned, st.disks, disks, st.reservations, live, st.busy);

    scsictl_reservation_info *ri = NULL;
    if (!tu_check(scsictl_list_reservations(M.ctl, &ri, &n, &err) == SCSICTL_OK, __FILE__,
                  __LINE__, "list_reservations"))
        return;
    tu_check(n == (size_t)live, __FILE__, __LINE__, "list_reservations: %zu, model %d", n, live);
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            const scsictl_reservation_info *a = &ri[i - 1], *b = &ri[i];
            int c = a->controller != b->controller ? (a->controller < b->controller ? -1 : 1)
                    : a->lun != b->lun             ? (a->lun < b->lun ? -1 : 1)
                    : a->partition != b->partition ? (a->partition < b->partition ? -1 : 1)
                                                   : memcmp(a->id.bytes, b->id.bytes, 16);
            tu_check(c < 0, __FILE__, __LINE__, "list_reservations sorted");
        }
        int idx = -1;
        for (int j = 0; j < MAXIDS; j++)
            if (M.ids[j].live && memcmp(M.ids[j].id.bytes, ri[i].id.bytes, 16) == 0) idx = j;
        if (!tu_check(idx >= 0, __FILE__, __LINE__, "listed id unknown to the model")) continue;
        mid *d = &M.ids[idx];
        int s = M.disk[d->path].slot;
        tu_check(ri[i].controller == (uint32_t)s / M.L && ri[i].lun == (uint32_t)s % M.L &&
                     ri[i].partition == (uint64_t)d->part &&
                     strcmp(ri[i].host_path, path_names[d->path]) == 0 &&
                     ri[i].release_pending == d->pending,
                 __FILE__, __LINE__, "reservation %s:%d pending %d/%d", path_names[d->path],
                 d->part, ri[i].release_pending, d->pending);
    }
    scsictl_info_free(M.ctl, ri);
}

static void finish_ops(void)
{
    for (int k = 0; k < MAXOPS; k++)
        while (M.ops[k].used && !stop_now()) report(k, true);
}

static void run_seed(uint64_t seed, int nops)
{
    memset(&M, 0, sizeof M);
    M.rng = seed;
    M.C = (uint32_t)(1 + rn(2));
    M.L = (uint32_t)(2 + rn(3));
    M.nslots = (int)(M.C * M.L);
    M.guest = pct(50) ? SCSICTL_GUEST_LINUX : SCSICTL_GUEST_WINDOWS;
    M.fail_pct = 10 + rn(25);
    for (int s = 0; s < MAXSLOTS; s++) M.slot[s].pin_path = -1;
    M.ctl = tu_new(M.C, M.L, M.guest);
    printf("seed %llu: %ux%u %s, %d ops, failure rate %d%%\n", (unsigned long long)seed, M.C,
           M.L, linux_guest() ? "linux" : "windows", nops, M.fail_pct);
    if (pct(40)) do_pin();

    for (int i = 0; i < nops && !stop_now(); i++) {
        int r = rn(100);
        if (r < 22) {
            do_reserve();
        } else if (r < 40) {
            int idx = pick_live();
            if (idx >= 0 && !id_in_flight(idx)) start(idx, true);
        } else if (r < 62) {
            int idx = pick_live();
            if (idx >= 0 && !id_in_flight(idx)) start(idx, false);
        } else if (r < 93) {
            int c[MAXOPS], n = 0;
            for (int k = 0; k < MAXOPS; k++)
                if (M.ops[k].used) c[n++] = k;
            if (n) report(c[rn(n)], !pct(M.fail_pct));
        } else if (r < 95) {
            do_pin();
        } else {
            do_unknown();
        }
        check_introspection();
    }

    /* P7 / P3: backends succeed from here on */
    finish_ops();
    check_introspection();
    for (int i = 0; i < MAXIDS && !stop_now(); i++) {
        if (!M.ids[i].live || M.ids[i].pending) continue;
        start(i, true); /* a retried map succeeds (or is already mapped) */
        finish_ops();
        mid *d = &M.ids[i];
        tu_check(M.slot[M.disk[d->path].slot].mounted[d->part], __FILE__, __LINE__,
                 "P7: map retried with good backends leaves the partition mounted");
    }
    check_introspection();
    for (int i = 0; i < MAXIDS && !stop_now(); i++) {
        if (!M.ids[i].live) continue;
        start(i, false);
        finish_ops();
        tu_check(!M.ids[i].live, __FILE__, __LINE__, "P7: release retried with good backends");
    }
    check_introspection();
    int pinned = 0;
    for (int s = 0; s < M.nslots; s++) {
        pinned += M.slot[s].pinned;
        tu_check(!M.slot[s].attached, __FILE__, __LINE__, "P3: slot %d attached at the end", s);
        for (int q = 0; q < NPART; q++)
            tu_check(!M.slot[s].mounted[q], __FILE__, __LINE__, "P3: %d:%d mounted at the end",
                     s, q);
    }
    scsictl_stats st;
    scsictl_get_stats(M.ctl, &st);
    tu_check(st.used == (uint32_t)pinned && st.disks == 0 && st.reservations == 0 && !st.busy,
             __FILE__, __LINE__, "P3: used %u pinned %d disks %zu reservations %zu", st.used,
             pinned, st.disks, st.reservations);
    printf("  steps %ld, failed %ld, busy %ld, mismatch %ld, no_slots %ld, map-no-step %ld, "
           "pins %ld, not_found %ld\n",
           M.n_steps, M.n_fail, M.n_busy, M.n_mismatch, M.n_noslots, M.n_done_nostep, M.n_pins,
           M.n_notfound);
    scsictl_free(M.ctl);
    M.ctl = NULL;
}

int main(int argc, char **argv)
{
    TEST("properties P1-P9");
    const char *env = getenv("SCSICTL_SEED");
    int nops = argc > 2 ? atoi(argv[2]) : 12000;
    if (argc > 1 || (env && *env)) {
        uint64_t seed = strtoull(argc > 1 ? argv[1] : env, NULL, 0);
        run_seed(seed, nops);
    } else {
        static const uint64_t seeds[] = {1, 2, 3, 4, 5, 6, 7, 8, 42, 1234, 0xC0FFEE, 99991,
                                         31337, 271828, 314159, 0xDEADBEEF};
        for (size_t i = 0; i < sizeof seeds / sizeof seeds[0] && !stop_now(); i++)
            run_seed(seeds[i], nops);
    }
    return tu_finish();
}
