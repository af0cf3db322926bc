/*
 * shadow_model.h — the one shadow model of spec §6, shared by the property
 * test (test_property.c) and the operation fuzzer (core/fuzz/fuzz_ops.c).
 *
 * The model is built from the steps the core hands out and the results the
 * driver reports (per slot: attached, ejected, mounted partitions) plus the
 * claims the driver holds. It says which step an operation must issue next
 * (map_next, unmap_next: the rules of docs/semantics.md) and checks every
 * step handed out against P1 (balance), P2 (order) and P4 (no alias).
 * It also predicts a reserve (reserve_expect) and drives the ops in flight
 * (op_begin, report_step).
 *
 * The includer defines, before including it:
 *   NPATHS, NPART, MAXSLOTS, MAXIDS, MAXOPS, MAXREL   the pool's sizes;
 *   M1_OPTIONS, M1_FILESYSTEM  the options (a list of strings) and the
 *                              filesystem of the pool's mount config 1;
 *   SM_CHECK(cond, fmt, ...)   an expression: true when cond holds, else
 *                              reports the violation (and may abort);
 * and after it, for check_step: path_names[NPATHS], part_nums[NPART] and
 * dcfg(path, i) (the pool's disk configs). The pool's mount configs,
 * mcfg(part, i), are defined here.
 */
#ifndef SCSICTL_SHADOW_MODEL_H
#define SCSICTL_SHADOW_MODEL_H

#include "scsictl.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct mid {
    bool live;
    scsictl_id id;
    int path, dcfg, part, mcfg;
    bool holds_part; /* still holds its partition claim */
    bool pending;    /* its release began and has not ended */
} mid;

typedef struct mdisk {
    bool present;
    int slot, dcfg;
    bool tearing;    /* eject or remove attempted for its last claim */
} mdisk;

typedef struct mslot {
    bool attached, ejected, pinned;
    bool mounted[NPART];
    int pin_path, pin_dcfg;
} mslot;

typedef struct mop {
    bool used, is_map;
    scsictl_op op;
    int idx, path;
    int expect;      /* the step kind expected in op.step */
} mop;

static struct model {
    scsictl *ctl;
    scsictl_guest guest;
    uint32_t C, L;
    int nslots;
    bool closed;
    mid ids[MAXIDS];
    mdisk disk[NPATHS];
    mslot slot[MAXSLOTS];
    bool part_exists[NPATHS][NPART];
    int part_mcfg[NPATHS][NPART];
    mop ops[MAXOPS];
    scsictl_id released[MAXREL];
    int nreleased;
    /* for the property test's report */
    uint64_t rng;
    int fail_pct;
    long n_steps, n_fail, n_busy, n_mismatch, n_noslots, n_done_nostep, n_pins, n_notfound;
} M;

static const char *const path_names[NPATHS];
static const uint64_t part_nums[NPART];
static scsictl_disk_config dcfg(int path, int i);

static const char *const m1_opts[] = {M1_OPTIONS};

/* Mount config i of the pool for partition part: 0 the defaults; 1 read-only
 * with M1_OPTIONS and M1_FILESYSTEM, formatted with ReFS. */
static scsictl_mount_config mcfg(int part, int i)
{
    scsictl_mount_config m;
    memset(&m, 0, sizeof m);
    m.partition = part_nums[part];
    if (i == 1) {
        m.read_only = true;
        m.options = m1_opts;
        m.n_options = sizeof m1_opts / sizeof m1_opts[0];
        m.filesystem = M1_FILESYSTEM;
        m.format_with_refs = true;
    }
    return m;
}

static bool linux_guest(void) { return M.guest == SCSICTL_GUEST_LINUX; }

/* Claims on (path, part) that still hold the partition. */
static int refs(int path, int part)
{
    int n = 0;
    for (int i = 0; i < MAXIDS; i++)
        n += M.ids[i].live && M.ids[i].path == path && M.ids[i].part == part &&
             M.ids[i].holds_part;
    return n;
}

static int disk_claims(int path)
{
    int n = 0;
    for (int i = 0; i < MAXIDS; i++)
        n += M.ids[i].live && M.ids[i].path == path;
    return n;
}

/* Whether an op is in flight on path (-1: any path) for id idx (-1: any). */
static bool op_in_flight(int path, int idx)
{
    for (int i = 0; i < MAXOPS; i++)
        if (M.ops[i].used && (path < 0 || M.ops[i].path == path) &&
            (idx < 0 || M.ops[i].idx == idx))
            return true;
    return false;
}

static bool path_busy(int path) { return op_in_flight(path, -1); }
static bool any_busy(void) { return op_in_flight(-1, -1); }
static bool id_in_flight(int idx) { return op_in_flight(-1, idx); }

static int free_op(void)
{
    for (int i = 0; i < MAXOPS; i++)
        if (!M.ops[i].used)
            return i;
    return -1;
}

static int path_at(int s)
{
    for (int p = 0; p < NPATHS; p++)
        if (M.disk[p].present && M.disk[p].slot == s)
            return p;
    return -1;
}

/* P9: where a new disk goes. */
static int lowest_free_unpinned(void)
{
    for (int s = 0; s < M.nslots; s++)
        if (!M.slot[s].pinned && path_at(s) < 0)
            return s;
    return -1;
}

static int pinned_slot_of(int path)
{
    for (int s = 0; s < M.nslots; s++)
        if (M.slot[s].pinned && M.slot[s].pin_path == path)
            return s;
    return -1;
}

/* What a reserve of path (disk config dc) and part (mount config mc) must
 * give: the slot the disk holds or gets (-1: none free), and whether it is
 * refused as busy, as a config mismatch or for want of slots. */
static int reserve_expect(int path, int dc, int part, int mc, bool *busy, bool *mismatch,
                          bool *noslots)
{
    int slot;
    *busy = *mismatch = *noslots = false;
    if (M.disk[path].present) {
        *busy = path_busy(path) || M.disk[path].tearing;
        *mismatch = M.disk[path].dcfg != dc ||
                    (M.part_exists[path][part] && M.part_mcfg[path][part] != mc);
        slot = M.disk[path].slot;
    } else if (pinned_slot_of(path) >= 0) {
        slot = pinned_slot_of(path);
        *mismatch = M.slot[slot].pin_dcfg != dc;
    } else {
        slot = lowest_free_unpinned();
        *noslots = slot < 0;
    }
    return slot;
}

/* The state list_slots must show for the disk at a slot. */
static scsictl_disk_state disk_state(const mslot *s)
{
    return !s->attached ? SCSICTL_DISK_RESERVED
           : s->ejected ? SCSICTL_DISK_EJECTED
                        : SCSICTL_DISK_ATTACHED;
}

/* A partition with no claim left and not mounted is forgotten. */
static void part_gc(int path, int part)
{
    bool mounted = M.disk[path].present && M.slot[M.disk[path].slot].mounted[part];
    if (refs(path, part) == 0 && !mounted)
        M.part_exists[path][part] = false;
}

static void forget_id(int idx)
{
    M.ids[idx].live = false;
    M.released[M.nreleased++ % MAXREL] = M.ids[idx].id;
}

/* P3 for one disk: forgotten only with nothing attached or mounted. */
static void disk_gone(int path)
{
    mslot *s = &M.slot[M.disk[path].slot];
    for (int q = 0; q < NPART; q++) {
        SM_CHECK(!s->mounted[q], "P3: %s forgotten with partition %d mounted", path_names[path],
                 q);
        M.part_exists[path][q] = false;
    }
    SM_CHECK(!s->attached, "P3: %s forgotten while attached", path_names[path]);
    M.disk[path].present = false;
    M.disk[path].tearing = false;
}

static int mount_kind(int path, int part)
{
    if (linux_guest())
        return SCSICTL_STEP_LINUX_MOUNT;
    return M.part_mcfg[path][part] == 1 ? SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH
                                        : SCSICTL_STEP_WINDOWS_MOUNT;
}

/* The next step of a map of idx, or -1 when it is done. */
static int map_next(int idx)
{
    mid *d = &M.ids[idx];
    mslot *s = &M.slot[M.disk[d->path].slot];
    if (s->mounted[d->part])
        return -1;
    if (!s->attached)
        return SCSICTL_STEP_ADD_SCSI_DISK;
    return mount_kind(d->path, d->part);
}

/* The next step of a release of idx, applying the claim drops that need no
 * step; -1 when the release is complete (the id is then forgotten). */
static int unmap_next(int idx)
{
    mid *d = &M.ids[idx];
    int p = d->path;
    mslot *s = &M.slot[M.disk[p].slot];
    if (d->holds_part) {
        if (refs(p, d->part) > 1 || !s->mounted[d->part]) {
            d->holds_part = false;
            part_gc(p, d->part);
        } else {
            return linux_guest() ? SCSICTL_STEP_LINUX_UNMOUNT : SCSICTL_STEP_WINDOWS_UNMOUNT;
        }
    }
    if (disk_claims(p) > 1) {
        forget_id(idx);
        return -1;
    }
    if (s->attached) {
        M.disk[p].tearing = true;
        return linux_guest() && !s->ejected ? SCSICTL_STEP_LINUX_EJECT
                                            : SCSICTL_STEP_REMOVE_SCSI_DISK;
    }
    forget_id(idx);
    disk_gone(p);
    return -1;
}

static void canonical(int slot, int part, char *out, size_t size)
{
    scsictl_guest_path(M.guest, (uint32_t)slot / M.L, (uint32_t)slot % M.L, part_nums[part], out,
                       size);
}

/* P1, P2, P4 on a step just handed out. */
static void check_step(mop *o)
{
    const scsictl_step *st = &o->op.step;
    mid *d = &M.ids[o->idx];
    int sl = M.disk[o->path].slot;
    mslot *s = &M.slot[sl];
    uint32_t c = (uint32_t)sl / M.L, l = (uint32_t)sl % M.L;
    M.n_steps++;
    if (!SM_CHECK((int)st->kind == o->expect, "step %s, model expects %s (%s of %s part %d)",
                  scsictl_step_name(st->kind), scsictl_step_name((scsictl_step_kind)o->expect),
                  o->is_map ? "map" : "unmap", path_names[o->path], d->part))
        return;
    bool any_mounted = false;
    for (int q = 0; q < NPART; q++)
        any_mounted = any_mounted || s->mounted[q];
    bool windows_mount_level = !linux_guest() && st->kind != SCSICTL_STEP_ADD_SCSI_DISK &&
                               st->kind != SCSICTL_STEP_REMOVE_SCSI_DISK;
    SM_CHECK(st->lun == l && (windows_mount_level || st->controller == c),
             "P4: %s at %u:%u, disk %s holds %u:%u", scsictl_step_name(st->kind), st->controller,
             st->lun, path_names[o->path], c, l);
    SM_CHECK(st->disk && st->disk->host_path &&
                 strcmp(st->disk->host_path, path_names[o->path]) == 0,
             "P4: %s names %s, id holds %s", scsictl_step_name(st->kind),
             st->disk && st->disk->host_path ? st->disk->host_path : "(null)",
             path_names[o->path]);
    switch (st->kind) {
    case SCSICTL_STEP_ADD_SCSI_DISK: {
        SM_CHECK(!s->attached, "P1: add at %u:%u while attached", c, l);
        scsictl_disk_config want = dcfg(o->path, M.disk[o->path].dcfg);
        SM_CHECK(st->disk && st->disk->read_only == want.read_only &&
                     st->disk->type == want.type &&
                     (st->disk->evd_type == NULL) == (want.evd_type == NULL),
                 "P4: attachment config differs from the reserved one");
        break;
    }
    case SCSICTL_STEP_LINUX_EJECT:
        SM_CHECK(s->attached && !s->ejected && !any_mounted,
                 "P1/P2: eject at %u:%u attached %d ejected %d mounted %d", c, l, s->attached,
                 s->ejected, any_mounted);
        break;
    case SCSICTL_STEP_REMOVE_SCSI_DISK:
        SM_CHECK(s->attached && (s->ejected || !linux_guest()) && !any_mounted,
                 "P1/P2: remove at %u:%u attached %d ejected %d mounted %d", c, l, s->attached,
                 s->ejected, any_mounted);
        break;
    default: {
        bool is_mount = st->kind != SCSICTL_STEP_LINUX_UNMOUNT &&
                        st->kind != SCSICTL_STEP_WINDOWS_UNMOUNT;
        char gp[SCSICTL_GUEST_PATH_MAX];
        canonical(sl, d->part, gp, sizeof gp);
        SM_CHECK(st->guest_path && strcmp(st->guest_path, gp) == 0, "P4: guest path %s, want %s",
                 st->guest_path ? st->guest_path : "(null)", gp);
        SM_CHECK(st->mount && st->mount->partition == part_nums[d->part],
                 "P4: step partition differs");
        if (is_mount)
            SM_CHECK(s->attached && !s->ejected && !s->mounted[d->part],
                     "P1/P2: mount %u:%u:%d attached %d ejected %d mounted %d", c, l, d->part,
                     s->attached, s->ejected, s->mounted[d->part]);
        else
            SM_CHECK(s->mounted[d->part], "P1: unmount of %u:%u:%d not mounted", c, l, d->part);
        scsictl_mount_config want = mcfg(d->part, M.part_mcfg[o->path][d->part]);
        if (linux_guest()) {
            scsictl_linux_settings ls;
            scsictl_step_linux_settings(st, &ls);
            bool same = ls.read_only == want.read_only && ls.n_options == want.n_options &&
                        strcmp(ls.filesystem ? ls.filesystem : "",
                               want.filesystem ? want.filesystem : "") == 0 &&
                        ls.mount_path && strcmp(ls.mount_path, gp) == 0 &&
                        ls.partition == want.partition && ls.controller == c && ls.lun == l;
            for (size_t i = 0; same && i < ls.n_options; i++)
                same = strcmp(ls.options[i], want.options[i]) == 0;
            SM_CHECK(same, "P4: linux settings differ from the mount config");
        } else {
            scsictl_windows_settings ws;
            scsictl_step_windows_settings(st, &ws);
            SM_CHECK(ws.container_path && strcmp(ws.container_path, gp) == 0 && ws.lun == l,
                     "P4: windows settings");
        }
        break;
    }
    }
}

/* A step's result, applied to the model. */
static void apply_result(mop *o, bool ok)
{
    if (!ok)
        return;
    mid *d = &M.ids[o->idx];
    mslot *s = &M.slot[M.disk[o->path].slot];
    switch (o->expect) {
    case SCSICTL_STEP_ADD_SCSI_DISK: s->attached = true; s->ejected = false; break;
    case SCSICTL_STEP_LINUX_EJECT: s->ejected = true; break;
    case SCSICTL_STEP_REMOVE_SCSI_DISK: s->attached = false; s->ejected = false; break;
    case SCSICTL_STEP_LINUX_UNMOUNT:
    case SCSICTL_STEP_WINDOWS_UNMOUNT:
        s->mounted[d->part] = false;
        d->holds_part = false;
        part_gc(o->path, d->part);
        break;
    default: s->mounted[d->part] = true; break;
    }
}

/* Op slot o now carries a map or unmap of idx: returns the step the model
 * expects first (-1: none). A release, once begun, is pending until it ends. */
static int op_begin(mop *o, int idx, bool is_map)
{
    o->used = true;
    o->is_map = is_map;
    o->idx = idx;
    o->path = M.ids[idx].path;
    if (!is_map) M.ids[idx].pending = true;
    return is_map ? map_next(idx) : unmap_next(idx);
}

/* The code start or report returned for an op that the model expected to
 * go on with `next` (-1: done). */
static void settle(mop *o, int st, int next, const scsictl_error *err)
{
    if (next < 0) {
        SM_CHECK(st == SCSICTL_DONE, "op should be done, got %s (%s)", scsictl_code_name(st),
                 st < 0 ? err->message : "");
        if (st == SCSICTL_DONE && o->is_map) {
            char gp[SCSICTL_GUEST_PATH_MAX];
            canonical(M.disk[o->path].slot, M.ids[o->idx].part, gp, sizeof gp);
            SM_CHECK(strcmp(o->op.guest_path, gp) == 0, "P4/P6: map returned %s, want %s",
                     o->op.guest_path, gp);
        }
        o->used = false;
        return;
    }
    if (!SM_CHECK(st == SCSICTL_STEP, "op should issue %s, got %s (%s)",
                  scsictl_step_name((scsictl_step_kind)next), scsictl_code_name(st),
                  st < 0 ? err->message : "")) {
        o->used = false;
        return;
    }
    o->expect = next;
    check_step(o);
}

/* Reports the step of op o to the core as succeeded, or failed with the
 * message why, and applies the result to the model. A success is checked
 * here (settle); a failure ends the op (a failed release stays pending) and
 * its code, in st, and error, in *err, are left to the caller to check. */
static int report_step(mop *o, bool ok, const char *why, scsictl_error *err)
{
    apply_result(o, ok);
    int st = scsictl_op_report(M.ctl, &o->op, ok, ok ? NULL : why, err);
    if (ok) {
        settle(o, st, o->is_map ? map_next(o->idx) : unmap_next(o->idx), err);
        return st;
    }
    if (!o->is_map) M.ids[o->idx].pending = true;
    o->used = false;
    return st;
}

#endif
