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

typedef struct mid {
    bool live;
    scsictl_id id;
    int path, dcfg, part, mcfg;
    int stage;     /* 0: holds its partition claim; 1: dropped it */
    bool pending;  /* a release failed and awaits a retry */
} mid;

typedef struct mdisk {
    bool present;
    int slot, dcfg;
    bool tearing;  /* eject or remove attempted for its last claim */
} mdisk;

typedef struct mslot {
    bool attached, ejected;
    bool mounted[NPART];
    bool pinned;
    int pin_path, pin_dcfg;
} mslot;

typedef struct mpart {
    bool exists;
    int mcfg;
} mpart;

typedef struct mop {
    bool used;
    scsictl_op op;
    bool is_map;
    int idx, path;
    int expect;    /* step kind expected to be in op.step */
} mop;

static struct model {
    scsictl *ctl;
    scsictl_guest guest;
    uint32_t C, L;
    int nslots;
    mid ids[MAXIDS];
    mdisk disk[NPATHS];
    mslot slot[MAXSLOTS];
    mpart part[NPATHS][NPART];
    mop ops[MAXOPS];
    scsictl_id released[MAXREL];
    int nreleased;
    uint64_t rng;
    int fail_pct;
    long n_steps, n_fail, n_busy, n_mismatch, n_noslots, n_done_nostep, n_pins;
    long n_notfound;
} M;

static const char *const path_names[NPATHS] = {"/p0", "/p1", "/p2", "/p3", "/p4"};
static const char *const m1_opts[] = {"noatime"};

static uint64_t rnd(void)
{
    uint64_t z = (M.rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int rn(int n) { return (int)(rnd() % (uint64_t)n); }
static bool pct(int p) { return rn(100) < p; }

static bool stop_now(void) { return atomic_load(&tu_failed) > 40; }

static scsictl_disk_config dcfg(int path, int i)
{
    scsictl_disk_config d = tu_disk(path_names[path]);
    d.read_only = i == 1;
    return d;
}

static scsictl_mount_config mcfg(int part, int i)
{
    scsictl_mount_config m = tu_mount((uint64_t)part);
    if (i == 1) {
        m.read_only = true;
        m.options = m1_opts;
        m.n_options = 1;
        m.filesystem = "ext4";
        m.format_with_refs = true;
    }
    return m;
}

static bool linux_guest(void) { return M.guest == SCSICTL_GUEST_LINUX; }

static int mount_kind(int mc)
{
    if (linux_guest()) return SCSICTL_STEP_LINUX_MOUNT;
    return mc == 1 ? SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH : SCSICTL_STEP_WINDOWS_MOUNT;
}

static int unmount_kind(void)
{
    return linux_guest() ? SCSICTL_STEP_LINUX_UNMOUNT : SCSICTL_STEP_WINDOWS_UNMOUNT;
}

static int refs(int path, int part)
{
    int n = 0;
    for (int i = 0; i < MAXIDS; i++)
        if (M.ids[i].live && M.ids[i].path == path && M.ids[i].part == part && M.ids[i].stage == 0)
            n++;
    return n;
}

static int disk_claims(int path)
{
    int n = 0;
    for (int i = 0; i < MAXIDS; i++)
        if (M.ids[i].live && M.ids[i].path == path) n++;
    return n;
}

static bool path_busy(int path)
{
    for (int i = 0; i < MAXOPS; i++)
        if (M.ops[i].used && M.ops[i].path == path) return true;
    return false;
}

static bool any_busy(void)
{
    for (int i = 0; i < MAXOPS; i++)
        if (M.ops[i].used) return true;
    return false;
}

static int path_at(int s)
{
    for (int p = 0; p < NPATHS; p++)
        if (M.disk[p].present && M.disk[p].slot == s) return p;
    return -1;
}

static void part_gc(int path, int part)
{
    mslot *s = M.disk[path].present ? &M.slot[M.disk[path].slot] : NULL;
    if (refs(path, part) == 0 && !(s && s->mounted[part])) M.part[path][part].exists = false;
}

static void forget_id(int idx)
{
    mid *d = &M.ids[idx];
    d->live = false;
    M.released[M.nreleased++ % MAXREL] = d->id;
}

static void disk_gone(int path)
{
    mslot *s = &M.slot[M.disk[path].slot];
    for (int p = 0; p < NPART; p++) {
        tu_check(!s->mounted[p], __FILE__, __LINE__, "P3: disk %s forgotten with %d mounted",
                 path_names[path], p);
        M.part[path][p].exists = false;
    }
    tu_check(!s->attached, __FILE__, __LINE__, "P3: disk %s forgotten while attached",
             path_names[path]);
    M.disk[path].present = false;
    M.disk[path].tearing = false;
}

/* Next step of a map of idx, or -1 when it is done. */
static int map_next(int idx)
{
    mid *d = &M.ids[idx];
    mslot *s = &M.slot[M.disk[d->path].slot];
    if (!s->attached) return SCSICTL_STEP_ADD_SCSI_DISK;
    if (!s->mounted[d->part]) return mount_kind(d->mcfg);
    return -1;
}

/* Next step of a release of idx, applying the claim drops that need no
 * step; -1 when the release is complete (the id is then forgotten). */
static int unmap_next(int idx)
{
    mid *d = &M.ids[idx];
    int p = d->path;
    mslot *s = &M.slot[M.disk[p].slot];
    if (d->stage == 0) {
        if (refs(p, d->part) > 1 || !s->mounted[d->part]) {
            d->stage = 1;
            part_gc(p, d->part);
        } else {
            return unmount_kind();
        }
    }
    if (disk_claims(p) > 1) {
        forget_id(idx);
        return -1;
    }
    if (s->attached && !s->ejected && linux_guest()) {
        M.disk[p].tearing = true;
        return SCSICTL_STEP_LINUX_EJECT;
    }
    if (s->attached) {
        M.disk[p].tearing = true;
        return SCSICTL_STEP_REMOVE_SCSI_DISK;
    }
    forget_id(idx);
    disk_gone(p);
    return -1;
}

static void canonical(int slot, int part, char *out, size_t size)
{
    scsictl_guest_path(M.guest, (uint32_t)slot / M.L, (uint32_t)slot % M.L, (uint64_t)part, out,
                       size);
}

/* Checks op->step against the expected kind and the model (P1, P2, P4). */
static void check_step(mop *o)
{
    const scsictl_step *st = &o->op.step;
    mid *d = &M.ids[o->idx];
    int sl = M.disk[o->path].slot;
    mslot *s = &M.slot[sl];
    uint32_t c = (uint32_t)sl / M.L, l = (uint32_t)sl % M.L;
    M.n_steps++;
    if (!tu_check((int)st->kind == o->expect, __FILE__, __LINE__,
                  "step kind %s, model expects %s (id on %s part %d, %s)",
                  scsictl_step_name(st->kind), scsictl_step_name((scsictl_step_kind)o->expect),
                  path_names[o->path], d->part, o->is_map ? "map" : "unmap"))
        return;
    bool mounted_any = false;
    for (int p = 0; p < NPART; p++) mounted_any = mounted_any || s->mounted[p];
    bool mount_level = rec_kind_is_mount_level(st->kind);
    if (!mount_level || linux_guest())
        tu_check(st->controller == c && st->lun == l, __FILE__, __LINE__,
                 "P4: %s at %u:%u, disk %s holds %u:%u", scsictl_step_name(st->kind),
                 st->controller, st->lun, path_names[o->path], c, l);
    else
        tu_check(st->lun == l, __FILE__, __LINE__, "P4: windows step lun %u, want %u", st->lun, l);
    if (st->disk || st->kind == SCSICTL_STEP_ADD_SCSI_DISK || mount_level)
        tu_check(st->disk && st->disk->host_path &&
                     strcmp(st->disk->host_path, path_names[o->path]) == 0,
                 __FILE__, __LINE__, "P4: %s names %s, id holds %s", scsictl_step_name(st->kind),
                 st->disk && st->disk->host_path ? st->disk->host_path : "(null)",
                 path_names[o->path]);
    switch (st->kind) {
    case SCSICTL_STEP_ADD_SCSI_DISK: {
        tu_check(!s->attached, __FILE__, __LINE__, "P1: add while attached at %u:%u", c, l);
        scsictl_disk_config want = dcfg(o->path, M.disk[o->path].dcfg);
        tu_check(st->disk && st->disk->read_only == want.read_only &&
                     st->disk->type == want.type && st->disk->evd_type == NULL,
                 __FILE__, __LINE__, "add: attachment fields");
        break;
    }
    case SCSICTL_STEP_LINUX_EJECT:
        tu_check(s->attached && !s->ejected && !mounted_any, __FILE__, __LINE__,
                 "P1/P2: eject at %u:%u attached %d ejected %d mounted %d", c, l, s->attached,
                 s->ejected, mounted_any);
        break;
    case SCSICTL_STEP_REMOVE_SCSI_DISK:
        tu_check(s->attached && (s->ejected || !linux_guest()) && !mounted_any, __FILE__,
                 __LINE__, "P1/P2: remove at %u:%u attached %d ejected %d mounted %d", c, l,
                 s->attached, s->ejected, mounted_any);
        break;
    default: {
        bool is_mount = st->kind != SCSICTL_STEP_LINUX_UNMOUNT &&
                        st->kind != SCSICTL_STEP_WINDOWS_UNMOUNT;
        char gp[SCSICTL_GUEST_PATH_MAX];
        canonical(sl, d->part, gp, sizeof gp);
        tu_check(st->guest_path && strcmp(st->guest_path, gp) == 0, __FILE__, __LINE__,
                 "P4: guest path %s, want %s", st->guest_path ? st->guest_path : "(null)", gp);
        tu_check(st->mount && st->mount->partition == (uint64_t)d->part, __FILE__, __LINE__,
                 "P4: step partition, want %d", d->part);
        if (is_mount)
            tu_check(s->attached && !s->ejected && !s->mounted[d->part], __FILE__, __LINE__,
                     "P1/P2: mount %u:%u:%d attached %d ejected %d mounted %d", c, l, d->part,
                     s->attached, s->ejected, s->mounted[d->part]);
        else
            tu_check(s->mounted[d->part], __FILE__, __LINE__, "P1: unmount of %u:%u:%d not mounted",
                     c, l, d->part);
        int pm = M.part[o->path][d->part].mcfg;
        scsictl_mount_config want = mcfg(d->part, pm);
        if (linux_guest()) {
            scsictl_linux_settings ls;
            scsictl_step_linux_settings(st, &ls);
            tu_check(ls.read_only == want.read_only && ls.n_options == want.n_options &&
                         (want.n_options == 0 ||
                          (ls.options && strcmp(ls.options[0], want.options[0]) == 0)) &&
                         strcmp(ls.filesystem ? ls.filesystem : "",
                                want.filesystem ? want.filesystem : "") == 0 &&
                         ls.mount_path && strcmp(ls.mount_path, gp) == 0 &&
                         ls.partition == (uint64_t)d->part,
                     __FILE__, __LINE__, "linux settings follow the mount config");
        } else {
            scsictl_windows_settings ws;
            scsictl_step_windows_settings(st, &ws);
            tu_check(ws.container_path && strcmp(ws.container_path, gp) == 0 && ws.lun == l,
                     __FILE__, __LINE__, "windows settings");
        }
        break;
    }
    }
}

/* Applies a step result to the model. */
static void apply_result(mop *o, bool ok)
{
    mid *d = &M.ids[o->idx];
    mslot *s = &M.slot[M.disk[o->path].slot];
    if (!ok) return;
    switch (o->expect) {
    case SCSICTL_STEP_ADD_SCSI_DISK: s->attached = true; s->ejected = false; break;
    case SCSICTL_STEP_LINUX_EJECT: s->ejected = true; break;
    case SCSICTL_STEP_REMOVE_SCSI_DISK: s->attached = false; s->ejected = false; break;
    case SCSICTL_STEP_LINUX_UNMOUNT:
    case SCSICTL_STEP_WINDOWS_UNMOUNT:
        s->mounted[d->part] = false;
        d->stage = 1;
        part_gc(o->path, d->part);
        break;
    default: s->mounted[d->part] = true; break;
    }
}

/* Handles the code returned by start/report for an op that the model
 * expected to continue with `next` (-1: done). */
static void settle(mop *o, int st, int next, scsictl_error *err)
{
    if (next < 0) {
        tu_check(st == SCSICTL_DONE, __FILE__, __LINE__, "op should be done, got %s (%s)",
                 scsictl_code_name(st), st < 0 ? err->message : "");
        if (st == SCSICTL_DONE && o->is_map) {
            char gp[SCSICTL_GUEST_PATH_MAX];
            canonical(M.disk[o->path].slot, M.ids[o->idx].part, gp, sizeof gp);
            tu_check(strcmp(o->op.guest_path, gp) == 0, __FILE__, __LINE__,
                     "P4: map returned %s, want %s", o->op.guest_path, gp);
        }
        o->used = false;
        return;
    }
    if (!tu_check(st == SCSICTL_STEP, __FILE__, __LINE__, "op should issue %s, got %s (%s)",
                  scsictl_step_name((scsictl_step_kind)next), scsictl_code_name(st),
                  st < 0 ? err->message : "")) {
        o->used = false;
        return;
    }
    o->expect = next;
    check_step(o);
}

/* Reports the step of op slot k. */
static void report(int k, bool ok)
{
    mop *o = &M.ops[k];
    scsictl_error err;
    apply_result(o, ok);
    int st = scsictl_op_report(M.ctl, &o->op, ok, ok ? NULL : "injected", &err);
    if (!ok) {
        M.n_fail++;
        tu_check(st == SCSICTL_E_BACKEND, __FILE__, __LINE__, "failed step: got %s",
                 scsictl_code_name(st));
        if (!o->is_map) M.ids[o->idx].pending = true;
        o->used = false;
        return;
    }
    int next = o->is_map ? map_next(o->idx) : unmap_next(o->idx);
    settle(o, st, next, &err);
}

static int free_op(void)
{
    for (int i = 0; i < MAXOPS; i++)
        if (!M.ops[i].used) return i;
    return -1;
}

static int pick_live(void)
{
    int c[MAXIDS], n = 0;
    for (int i = 0; i < MAXIDS; i++)
        if (M.ids[i].live) c[n++] = i;
    return n ? c[rn(n)] : -1;
}

static bool id_in_flight(int idx)
{
    for (int i = 0; i < MAXOPS; i++)
        if (M.ops[i].used && M.ops[i].idx == idx) return true;
    return false;
}

/* Starts a map or unmap of idx. */
static void start(int idx, bool is_map)
{
    int k = free_op();
    if (k < 0) return;
    mid *d = &M.ids[idx];
    mop *o = &M.ops[k];
    scsictl_error err;
    size_t calls_before = (size_t)M.n_steps;
    int st = is_map ? scsictl_op_start_map(M.ctl, &o->op, &d->id, &err)
                    : scsictl_op_start_unmap(M.ctl, &o->op, &d->id, &err);
    if (path_busy(d->path) || (is_map && d->pending)) {
        M.n_busy++;
        tu_check(st == SCSICTL_E_BUSY, __FILE__, __LINE__,
                 "%s of an id on busy %s (pending %d): got %s", is_map ? "map" : "unmap",
                 path_names[d->path], d->pending, scsictl_code_name(st));
        return;
    }
    o->used = true;
    o->is_map = is_map;
    o->idx = idx;
    o->path = d->path;
    if (!is_map) d->pending = true; /* a release, once begun, is pending until it ends */
    int next;
    if (is_map) {
        next = map_next(idx);
        if (next < 0) M.n_done_nostep++;
    } else {
        next = unmap_next(idx);
        if (next >= 0 || M.ids[idx].live) { /* still pending or stepping */ }
    }
    settle(o, st, next, &err);
    (void)calls_before;
}

static int lowest_free_unpinned(void)
{
    for (int s = 0; s < M.nslots; s++)
        if (!M.slot[s].pinned && path_at(s) < 0) return s;
    return -1;
}

static int pinned_slot_of(int path)
{
    for (int s = 0; s < M.nslots; s++)
        if (M.slot[s].pinned && M.slot[s].pin_path == path) return s;
    return -1;
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
    bool busy = false, mismatch = false, noslots = false;
    int slot = -1;
    if (M.disk[p].present) {
        busy = path_busy(p) || M.disk[p].tearing;
        mismatch = M.disk[p].dcfg != dc ||
                   (M.part[p][part].exists && M.part[p][part].mcfg != mc);
        slot = M.disk[p].slot;
    } else if (pinned_slot_of(p) >= 0) {
        slot = pinned_slot_of(p);
        mismatch = M.slot[slot].pin_dcfg != dc;
    } else {
        slot = lowest_free_unpinned();
        noslots = slot < 0;
    }
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
    if (!M.part[p][part].exists) {
        M.part[p][part].exists = true;
        M.part[p][part].mcfg = mc;
    }
    mid *n = &M.ids[idx];
    memset(n, 0, sizeof *n);
    n->live = true;
    n->id = id;
    n->path = p;
    n->dcfg = dc;
    n->part = part;
    n->mcfg = mc;
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
        scsictl_disk_state want = !ms->attached ? SCSICTL_DISK_RESERVED
                                  : ms->ejected ? SCSICTL_DISK_EJECTED
                                                : SCSICTL_DISK_ATTACHED;
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
            if (!M.part[p][q].exists) continue;
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
