/* ops.c — map and unmap as sequences of steps (the sans-I/O engine).
 *
 * Disks and partitions move only through their machines' tables (disk.c,
 * mount.c). The next step is always derived from the current states, never
 * from where an earlier attempt stopped, so a retried operation resumes at
 * the step that failed and never repeats one that succeeded:
 *
 *   map:    the disk takes "map" (reserved: add; attached: nothing), then,
 *           once attached, the partition takes "map" (mount, or done with
 *           its guest path when mounted)
 *   unmap:  the claim's partition reference is dropped; with the last one
 *           the partition takes "release" (unmount, or forgotten); then the
 *           disk reference; with the last one the disk takes "release"
 *           (eject, remove, or forgotten)
 *
 * A reported step is the event "step ok" or "step failed" for the machine
 * whose step was in flight; after ok the operation goes on from the new
 * states. A step taken back unperformed (its state file write failed) is
 * "step failed" too: every in-flight state fails back to where a retry
 * starts again.
 *
 * Maybe-added disks and maybe-mounted partitions come from a state file
 * written while an add or mount was in flight: a crash leaves it unknown
 * whether it took effect. A map issues it again, a release tears it down
 * anyway, so neither path leaves anything behind. Backends accept
 * re-issued steps (spec §8). */
#include <string.h>

#include "internal.h"

enum { OP_MAP = 1, OP_UNMAP = 2 };

static const char *const step_names[SCSICTL_STEP_KIND_COUNT] = {
    [SCSICTL_STEP_ADD_SCSI_DISK] = "add_scsi_disk",
    [SCSICTL_STEP_REMOVE_SCSI_DISK] = "remove_scsi_disk",
    [SCSICTL_STEP_LINUX_MOUNT] = "add_mapped_virtual_disk",
    [SCSICTL_STEP_LINUX_UNMOUNT] = "remove_mapped_virtual_disk",
    [SCSICTL_STEP_LINUX_EJECT] = "remove_scsi_device",
    [SCSICTL_STEP_WINDOWS_MOUNT] = "add_mapped_virtual_disk",
    [SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH] = "add_mapped_virtual_disk_for_container_scratch",
    [SCSICTL_STEP_WINDOWS_UNMOUNT] = "remove_mapped_virtual_disk",
};

static const char *const step_backends[SCSICTL_STEP_KIND_COUNT] = {
    [SCSICTL_STEP_ADD_SCSI_DISK] = "vm",
    [SCSICTL_STEP_REMOVE_SCSI_DISK] = "vm",
    [SCSICTL_STEP_LINUX_MOUNT] = "linux_guest",
    [SCSICTL_STEP_LINUX_UNMOUNT] = "linux_guest",
    [SCSICTL_STEP_LINUX_EJECT] = "linux_guest",
    [SCSICTL_STEP_WINDOWS_MOUNT] = "windows_guest",
    [SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH] = "windows_guest",
    [SCSICTL_STEP_WINDOWS_UNMOUNT] = "windows_guest",
};

const char *scsictl_step_name(scsictl_step_kind kind)
{
    return (unsigned)kind < SCSICTL_STEP_KIND_COUNT ? step_names[kind] : NULL;
}

const char *scsictl_step_backend(scsictl_step_kind kind)
{
    return (unsigned)kind < SCSICTL_STEP_KIND_COUNT ? step_backends[kind] : NULL;
}

static const char *op_name(const scsictl_op *op)
{
    return op->kind_ == OP_MAP ? "map_to_guest" : "unmap_from_guest";
}

/* An illegal move: refused, naming the machine's state and the event. */
static __attribute__((noinline, cold)) int illegal(const scsictl_op *op, const disk *d,
                                                  const mount *m, sc_event ev,
                                                  scsictl_error *err)
{
    if (m)
        return sc_fail(err, SCSICTL_E_BUSY,
                       "%s: illegal move for partition %llu of '%.200s': state %s, event %s",
                       op_name(op), (unsigned long long)m->partition, d->strings,
                       sc_mount_states[m->state].name, sc_event_names[ev]);
    return sc_fail(err, SCSICTL_E_BUSY, "%s: illegal move for '%.200s': state %s, event %s",
                   op_name(op), d->strings, sc_disk_states[d->state].name, sc_event_names[ev]);
}

/* The concrete step of a move's sc_do. */
static scsictl_step_kind step_of(const scsictl *ctl, sc_do what, const mount *m)
{
    bool linux_guest = ctl->guest == SCSICTL_GUEST_LINUX;
    switch (what) {
    case SC_DO_ADD: return SCSICTL_STEP_ADD_SCSI_DISK;
    case SC_DO_EJECT: return SCSICTL_STEP_LINUX_EJECT;
    case SC_DO_REMOVE: return SCSICTL_STEP_REMOVE_SCSI_DISK;
    case SC_DO_MOUNT:
        return linux_guest ? SCSICTL_STEP_LINUX_MOUNT
               : m->format_with_refs ? SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH
                                     : SCSICTL_STEP_WINDOWS_MOUNT;
    case SC_DO_UNMOUNT:
        return linux_guest ? SCSICTL_STEP_LINUX_UNMOUNT : SCSICTL_STEP_WINDOWS_UNMOUNT;
    case SC_DO_NOTHING: break;
    }
    return SCSICTL_STEP_KIND_COUNT;
}

/* Hands out the step of a move on r's disk (and partition m, for a mount
 * step): fills op->step; the disk is busy until the step is reported. */
static int issue(scsictl *ctl, scsictl_op *op, reservation *r, sc_do what, mount *m)
{
    disk *d = r->disk;
    scsictl_step_kind kind = step_of(ctl, what, m);
    bool mount_step = what == SC_DO_MOUNT || what == SC_DO_UNMOUNT;
    /* The configs are copied into the op (their strings stay in the
     * records, which outlive the step and never change). */
    op->disk_ = sc_disk_cfg(d);
    op->step = (scsictl_step){
        .kind = kind,
        .controller = d->controller,
        .lun = d->lun,
        .disk = &op->disk_,
        .mount = NULL,
        .guest_path = NULL,
    };
    if (mount_step) { /* formatted into the op, which outlives the step */
        op->mount_ = sc_mount_cfg(m);
        op->step.mount = &op->mount_;
        op->path_len_ = (int)sc_guest_path(ctl->guest, op->step.controller, op->step.lun,
                                           m->partition, op->guest_path);
        op->step.guest_path = op->guest_path;
        d->step_mount = m;
    }
    ctl->inflight++;
    /* An add or mount may take effect even if we crash before it returns:
     * the state file must say so before the callback runs. */
    if (what == SC_DO_ADD || what == SC_DO_MOUNT)
        sc_changed(ctl);
    return SCSICTL_STEP;
}

static int map_next(scsictl *ctl, scsictl_op *op, reservation *r, scsictl_error *err)
{
    disk *d = r->disk;
    mount *m = r->mount;
    if (d->state != SC_D_ATTACHED) {
        sc_move mv = sc_disk_table[d->state][SC_EV_MAP];
        if (!mv.legal || mv.step == SC_DO_NOTHING)
            return illegal(op, d, NULL, SC_EV_MAP, err);
        d->state = mv.next;
        return issue(ctl, op, r, (sc_do)mv.step, NULL);
    }
    sc_move mv = sc_mount_table[m->state][SC_EV_MAP];
    if (!mv.legal)
        return illegal(op, d, m, SC_EV_MAP, err);
    m->state = mv.next;
    if (mv.step != SC_DO_NOTHING)
        return issue(ctl, op, r, (sc_do)mv.step, m);
    if (!op->path_len_) /* not formatted by this op's mount step */
        op->path_len_ = (int)sc_guest_path(ctl->guest, d->controller, d->lun, m->partition,
                                           op->guest_path);
    return SCSICTL_DONE;
}

static int unmap_next(scsictl *ctl, scsictl_op *op, reservation *r, scsictl_error *err)
{
    sc_event release = ctl->guest == SCSICTL_GUEST_LINUX ? SC_EV_RELEASE_LINUX
                                                         : SC_EV_RELEASE_WINDOWS;
    mount *m = r->mount;
    sc_changed(ctl); /* every path below changes state or issues a step */
    /* From the first change on, only unmap may move this claim: even if
     * this call ends early (a failed state file write takes its step
     * back), a map must not meet a claim whose partition is released. */
    r->pending = true;
    if (m) {
        if (m->refs > 1) {
            m->refs--;
        } else {
            sc_move mv = sc_mount_table[m->state][release];
            if (!mv.legal)
                return illegal(op, r->disk, m, release, err);
            if (mv.step != SC_DO_NOTHING) {
                m->state = mv.next;
                return issue(ctl, op, r, (sc_do)mv.step, m);
            }
            sc_mount_forget(ctl, m); /* next: gone */
        }
        r->mount = NULL;
    }
    disk *d = r->disk;
    if (d->refs > 1) {
        d->refs--;
        sc_res_forget(ctl, r);
        return SCSICTL_DONE;
    }
    sc_move mv = sc_disk_table[d->state][release];
    if (!mv.legal)
        return illegal(op, d, NULL, release, err);
    if (mv.next == SC_D_GONE) {
        sc_disk_forget(ctl, d);
        sc_res_forget(ctl, r);
        return SCSICTL_DONE;
    }
    d->state = mv.next;
    return issue(ctl, op, r, (sc_do)mv.step, NULL);
}

static int next(scsictl *ctl, scsictl_op *op, scsictl_error *err)
{
    reservation *r = op->res_;
    return op->kind_ == OP_MAP ? map_next(ctl, op, r, err) : unmap_next(ctl, op, r, err);
}

/* The step in flight on op's disk ends: "step ok" or "step failed" for the
 * machine whose step it was. */
static void step_ended(scsictl *ctl, scsictl_op *op, sc_event ev)
{
    disk *d = ((reservation *)op->res_)->disk;
    mount *m = d->step_mount;
    ctl->inflight--;
    if (m) {
        d->step_mount = NULL;
        m->state = sc_mount_table[m->state][ev].next; /* in flight: both are legal */
    } else {
        d->state = sc_disk_table[d->state][ev].next;
    }
}

/* Released ids whose release is not yet in the state file (see
 * scsictl.released). */
static size_t released_index(const scsictl *ctl, const scsictl_id *id)
{
    for (size_t i = 0; i < ctl->nreleased; i++)
        if (memcmp(ctl->released[i].id.bytes, id->bytes, sizeof id->bytes) == 0)
            return i;
    return SIZE_MAX;
}

static void released_remember(scsictl *ctl, const scsictl_id *id)
{
    if (!ctl->released)
        return; /* made when the store is attached; none without one */
    if (ctl->nreleased == SC_RELEASED_MAX) {
        memmove(ctl->released, ctl->released + 1, (SC_RELEASED_MAX - 1) * sizeof *ctl->released);
        ctl->nreleased--;
    }
    ctl->released[ctl->nreleased++] = (sc_gone){ .id = *id, .in_file = false };
}

static void released_drop(scsictl *ctl, size_t i)
{
    ctl->released[i] = ctl->released[--ctl->nreleased];
}

/* An unmap of an id whose release finished in memory but not in the state
 * file: write it now. A map of such an id is refused like any pending
 * release. */
static __attribute__((noinline, cold)) int finish_release(scsictl *ctl, scsictl_op *op,
                                                         size_t i, scsictl_error *err)
{
    char ids[SCSICTL_ID_STRLEN + 1];
    if (op->kind_ == OP_MAP) {
        scsictl_id_format(&ctl->released[i].id, ids);
        return sc_fail(err, SCSICTL_E_BUSY,
                       "map_to_guest: reservation %s has a pending release; "
                       "retry unmap_from_guest to finish it", ids);
    }
    /* Dropped before the write, which then records that it is over; a
     * failed write brings it back (scsictl_op_persisted). */
    if (ctl->released[i].in_file)
        sc_changed(ctl);
    released_drop(ctl, i);
    uint64_t seq = sc_unwritten(ctl);
    if (!seq)
        return SCSICTL_DONE;
    op->after_ = SCSICTL_DONE;
    op->persist_seq = seq;
    return SCSICTL_PERSIST;
}

/* With a store, a call that changed the state hands the write to the
 * driver before it goes on, so that the file mirrors memory whenever a
 * call returns: PERSIST, standing in for rc (STEP, DONE, or a step's
 * BACKEND failure) until scsictl_op_persisted(). An unmap that finished in
 * memory leaves a tombstone until its write is known to have succeeded. */
static int durable_first(scsictl *ctl, scsictl_op *op, uint64_t before, int rc)
{
    if (!ctl->store || ctl->seq == before ||
        (rc != SCSICTL_STEP && rc != SCSICTL_DONE && rc != SCSICTL_E_BACKEND))
        return rc;
    if (rc == SCSICTL_DONE && op->kind_ == OP_UNMAP)
        released_remember(ctl, &op->id_);
    op->after_ = rc;
    op->persist_seq = ctl->seq;
    return SCSICTL_PERSIST;
}

/* Whether the op still has a reservation once a call returned rc. */
static bool op_goes_on(const scsictl_op *op, int rc)
{
    return rc == SCSICTL_STEP || (rc == SCSICTL_PERSIST && op->after_ == SCSICTL_STEP);
}

/* Whether releasing r now would lean on claims not yet written: r shares
 * its partition or disk only with reserves whose write is in flight. If
 * that write failed, their undo would then leave a mounted partition or an
 * attached disk with no claim at all, never torn down. Such an unmap waits
 * (BUSY) for the write to end. */
static bool leans_on_tentative(scsictl *ctl, const reservation *r)
{
    size_t on_mount = 0, on_disk = 0;
    for (size_t i = 0; i < ctl->ntentative; i++) {
        const sc_tentative *t = &ctl->tentative[i];
        const reservation *o = t->is_pin || t->outcome != SC_PENDING
                                   ? NULL : sc_res_find(ctl, &t->id);
        if (!o || o == r)
            continue;
        on_mount += o->mount && o->mount == r->mount;
        on_disk += o->disk == r->disk;
    }
    return (r->mount && r->mount->refs > 1 && r->mount->refs - 1 == on_mount) ||
           (r->disk->refs > 1 && r->disk->refs - 1 == on_disk);
}

/* The error for an op that cannot start: the controller is closed, r is
 * NULL (unknown id), r's disk is busy, or a map meets a pending release.
 * Out of line and cold: it keeps start()'s frame small. */
static __attribute__((noinline, cold)) int refusal(const scsictl *ctl, const scsictl_op *op,
                                                  const scsictl_id *id,
                                                  const reservation *r, scsictl_error *err)
{
    char ids[SCSICTL_ID_STRLEN + 1];
    if (ctl->closed)
        return sc_fail(err, SCSICTL_E_CLOSED, "%s: controller is closed", op_name(op));
    scsictl_id_format(id, ids);
    if (!r)
        return sc_fail(err, SCSICTL_E_NOT_FOUND, "%s: no reservation %s", op_name(op), ids);
    if (sc_disk_busy(r->disk))
        return sc_fail(err, SCSICTL_E_BUSY,
                       "%s: reservation %s: '%.200s' at controller %u lun %u is busy "
                       "with a backend call; retry later",
                       op_name(op), ids, r->disk->strings, r->disk->controller, r->disk->lun);
    if (op->kind_ == OP_UNMAP)
        return sc_fail(err, SCSICTL_E_BUSY,
                       "unmap_from_guest: reservation %s: the other claims on '%.200s' are "
                       "still being written to the state file; retry later",
                       ids, r->disk->strings);
    return sc_fail(err, SCSICTL_E_BUSY,
                   "map_to_guest: reservation %s has a pending release; "
                   "retry unmap_from_guest to finish it", ids);
}

static int start(scsictl *ctl, scsictl_op *op, const scsictl_id *id, int kind,
                 scsictl_error *err)
{
    if (!op)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "no operation given");
    op->step = (scsictl_step){ 0 }; /* guest_path is written before it is valid */
    op->guest_path[0] = '\0';
    op->ctl_ = ctl;
    op->res_ = NULL;
    op->kind_ = kind;
    op->after_ = 0;
    op->persist_seq = 0;
    op->path_len_ = 0;
    if (!ctl || !id)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "%s: no controller or id", op_name(op));
    op->id_ = *id;
    int rc;
    sc_lock_acquire(&ctl->lock);
    reservation *r = ctl->closed ? NULL : sc_res_find(ctl, id);
    size_t gone;
    if (!r && !ctl->closed && ctl->nreleased && (gone = released_index(ctl, id)) != SIZE_MAX) {
        rc = finish_release(ctl, op, gone, err);
    } else if (!r || sc_disk_busy(r->disk) || (kind == OP_MAP && r->pending) ||
               (kind == OP_UNMAP && ctl->ntentative && leans_on_tentative(ctl, r))) {
        rc = refusal(ctl, op, id, r, err);
    } else {
        hmap_prefetch(&ctl->res, r->later_hash); /* the caller's next id, likely */
        op->res_ = r;
        uint64_t before = ctl->seq;
        rc = durable_first(ctl, op, before, next(ctl, op, err));
        if (!op_goes_on(op, rc))
            op->res_ = NULL;
    }
    sc_lock_release(&ctl->lock);
    return rc;
}

int scsictl_op_start_map(scsictl *ctl, scsictl_op *op, const scsictl_id *id,
                         scsictl_error *err)
{
    return start(ctl, op, id, OP_MAP, err);
}

int scsictl_op_start_unmap(scsictl *ctl, scsictl_op *op, const scsictl_id *id,
                           scsictl_error *err)
{
    return start(ctl, op, id, OP_UNMAP, err);
}

/* A step failed: the op stops here (an unmap stays pending) and the error
 * names the step. Out of line: it keeps the report path's frame small. */
static __attribute__((noinline, cold)) int step_failed(scsictl *ctl, scsictl_op *op,
                                                      const char *backend_message,
                                                      scsictl_error *err)
{
    reservation *r = op->res_;
    const disk *d = r->disk;
    if (op->kind_ == OP_UNMAP)
        r->pending = true;
    /* The state file may have been written while this step was in
     * flight (recording it as maybe done): the outcome goes out with the
     * next write. */
    sc_changed(ctl);
    const scsictl_step *s = &op->step;
    if (s->mount)
        return sc_fail(err, SCSICTL_E_BACKEND,
                       "%s: %s failed for '%.200s' at controller %u lun %u "
                       "partition %llu: %.200s",
                       op_name(op), scsictl_step_name(s->kind), d->strings, s->controller,
                       s->lun, (unsigned long long)s->mount->partition,
                       backend_message ? backend_message : "failed");
    return sc_fail(err, SCSICTL_E_BACKEND,
                   "%s: %s failed for '%.200s' at controller %u lun %u: %.200s",
                   op_name(op), scsictl_step_name(s->kind), d->strings, s->controller, s->lun,
                   backend_message ? backend_message : "failed");
}

int scsictl_op_report(scsictl *ctl, scsictl_op *op, bool ok,
                      const char *backend_message, scsictl_error *err)
{
    if (!ctl || !op || !op->res_ || !op->kind_ || op->after_)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "report: no step in flight");
    if (op->ctl_ != ctl) /* its reservation lives in another controller */
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "report: the operation was started on another controller");
    int rc;
    sc_lock_acquire(&ctl->lock);
    uint64_t before = ctl->seq;
    step_ended(ctl, op, ok ? SC_EV_OK : SC_EV_FAILED);
    if (ok) {
        sc_changed(ctl);
        rc = next(ctl, op, err);
    } else {
        rc = step_failed(ctl, op, backend_message, err);
    }
    rc = durable_first(ctl, op, before, rc);
    if (!op_goes_on(op, rc))
        op->res_ = NULL; /* the op is over; a stray report is refused */
    sc_lock_release(&ctl->lock);
    return rc;
}

int scsictl_op_persisted(scsictl *ctl, scsictl_op *op, bool ok, const char *message,
                         scsictl_error *err)
{
    if (!ctl || !op || !op->kind_ || !op->after_)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "persisted: the operation awaits no write");
    if (op->ctl_ != ctl)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "persisted: the operation was started on another controller");
    sc_lock_acquire(&ctl->lock);
    int rc = op->after_;
    op->after_ = 0;
    if (rc < 0) {
        /* a step's failure: it stays the answer, err keeps its message */
    } else if (ok) {
        size_t i;
        if (rc == SCSICTL_DONE && op->kind_ == OP_UNMAP &&
            (i = released_index(ctl, &op->id_)) != SIZE_MAX)
            released_drop(ctl, i); /* the release is in the file */
    } else {
        size_t i;
        if (rc == SCSICTL_STEP) { /* take the step back: it was not performed */
            step_ended(ctl, op, SC_EV_FAILED);
        } else if (op->kind_ == OP_UNMAP) {
            /* the caller holds the id: the next writes record that its
             * retried unmap must succeed, even after a restart */
            if ((i = released_index(ctl, &op->id_)) == SIZE_MAX) {
                released_remember(ctl, &op->id_);
                i = ctl->nreleased - 1;
            }
            if (ctl->nreleased)
                ctl->released[i].in_file = true;
        }
        rc = sc_fail(err, SCSICTL_E_IO, "%s: %.400s", op_name(op),
                     message ? message : "the state file could not be written");
    }
    if (rc != SCSICTL_STEP)
        op->res_ = NULL;
    sc_lock_release(&ctl->lock);
    return rc;
}
