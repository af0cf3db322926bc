/* persist.c — durability without I/O: which changes are written, and what
 * a failed write undoes.
 *
 * Every change is numbered (sc_changed). A store, attached by a driver,
 * writes snapshots: it asks sc_write_begin for one, writes it with no lock
 * held, and reports with sc_write_end. One write is in flight at a time;
 * the changes made meanwhile wait and go out together in the next one
 * (group commit). A call returns once the write carrying its change ended:
 *
 *   change   first write carrying it   the call returns
 *   -------  ------------------------  --------------------------------------
 *   reserve  written                   OK (the id)
 *   reserve  failed                    IO; the reservation is undone, so
 *                                      memory and file agree it never was
 *   pin      as reserve
 *   other    written                   OK / DONE / the next step
 *   other    failed                    IO; the change stays in memory and
 *                                      goes out with the next write (see
 *                                      scsictl_op_persisted for ops)
 *
 * The undo happens in sc_write_end, before any later write can start, so
 * no later file ever holds an undone reservation. */
#include <string.h>

#include "alloc.h"
#include "internal.h"

bool sc_tentative_room(scsictl *ctl)
{
    if (ctl->ntentative < ctl->tentative_cap)
        return true;
    size_t cap = ctl->tentative_cap ? 2 * ctl->tentative_cap : 8;
    sc_tentative *t = ctl->tentative ? ctl->alloc.realloc_fn(ctl->alloc.ud, ctl->tentative,
                                                             cap * sizeof *t)
                                     : sc_malloc(&ctl->alloc, cap * sizeof *t);
    if (!t)
        return false;
    ctl->tentative = t;
    ctl->tentative_cap = cap;
    return true;
}

void sc_tentative_add(scsictl *ctl, uint64_t seq, const scsictl_id *id, bool is_pin,
                      uint32_t slot)
{
    sc_tentative *t = &ctl->tentative[ctl->ntentative++];
    *t = (sc_tentative){ .seq = seq, .outcome = SC_PENDING, .is_pin = is_pin, .slot = slot };
    if (id)
        t->id = *id;
}

static sc_tentative *tentative_find(scsictl *ctl, uint64_t seq)
{
    for (size_t i = 0; i < ctl->ntentative; i++)
        if (ctl->tentative[i].seq == seq)
            return &ctl->tentative[i];
    return NULL;
}

static void tentative_drop(scsictl *ctl, sc_tentative *t)
{
    size_t i = (size_t)(t - ctl->tentative);
    memmove(t, t + 1, (ctl->ntentative - i - 1) * sizeof *t);
    ctl->ntentative--;
}

int sc_sync(scsictl *ctl, uint64_t seq, bool tentative, scsictl_error *err)
{
    sc_store *s = ctl->store; /* set once, before any change it carries */
    if (s && ctl->deferred)
        return SCSICTL_PERSIST; /* the driver writes (scsictl_write_begin) */
    return s ? s->sync(s, ctl, seq, tentative, err) : SCSICTL_OK;
}

int sc_write_begin(scsictl *ctl, uint64_t seq, bool tentative, sc_write *w,
                   scsictl_error *err)
{
    int rc;
    sc_lock_acquire(&ctl->lock);
    sc_tentative *t = tentative ? tentative_find(ctl, seq) : NULL;
    if (t && t->outcome != SC_PENDING) {
        /* its first write ended: the caller collects the outcome */
        rc = t->outcome == SC_WRITTEN ? SCSICTL_DONE : SCSICTL_E_IO;
        tentative_drop(ctl, t);
    } else if (!t && ctl->durable >= seq) {
        rc = SCSICTL_DONE;
    } else if (!t && ctl->failed >= seq) {
        rc = SCSICTL_E_IO;
    } else if (ctl->writing) {
        rc = SCSICTL_E_BUSY;
    } else {
        rc = sc_snapshot_write(ctl, &w->data, &w->len, err);
        if (rc == SCSICTL_OK) {
            w->seq = ctl->seq;
            ctl->writing = true;
            rc = SCSICTL_STEP;
        }
    }
    sc_lock_release(&ctl->lock);
    return rc;
}

void sc_write_end(scsictl *ctl, sc_write *w, bool ok)
{
    sc_lock_acquire(&ctl->lock);
    ctl->writing = false;
    if (ok) {
        ctl->writes++;
        if (w->seq > ctl->durable)
            ctl->durable = w->seq;
    } else {
        ctl->write_failures++;
        if (w->seq > ctl->failed)
            ctl->failed = w->seq;
    }
    for (size_t i = 0; i < ctl->ntentative; i++) {
        sc_tentative *t = &ctl->tentative[i];
        if (t->outcome != SC_PENDING || t->seq > w->seq)
            continue;
        if (!ok) {
            reservation *r = t->is_pin ? NULL : sc_res_find(ctl, &t->id);
            if (t->is_pin)
                sc_pin_undo(ctl, t->slot);
            else if (r)
                sc_unreserve(ctl, r);
        }
        t->outcome = ok ? SC_WRITTEN : SC_UNDONE;
    }
    sc_lock_release(&ctl->lock);
    sc_free(&ctl->alloc, w->data);
    w->data = NULL;
}

int sc_store_attach(scsictl *ctl, sc_store *s, scsictl_error *err)
{
    if (ctl->store)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "state file: one is set already");
    if (ctl->inflight)
        return sc_fail(err, SCSICTL_E_BUSY, "state file: a backend call is in flight");
    /* A release finishing while a write fails leaves a tombstone; the room
     * for them is made now, so that recording one never fails. */
    if (!ctl->released) {
        ctl->released = sc_calloc(&ctl->alloc, SC_RELEASED_MAX, sizeof *ctl->released);
        if (!ctl->released)
            return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    }
    ctl->store = s;
    return SCSICTL_OK;
}

int scsictl_persist(scsictl *ctl, uint64_t seq, scsictl_error *err)
{
    if (!ctl)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "persist: no controller");
    return sc_sync(ctl, seq, false, err);
}

/* ---- a driver that writes the state file itself ------------------------- */

int scsictl_set_write_deferred(scsictl *ctl, bool deferred, scsictl_error *err)
{
    if (!ctl)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "deferred writes: no controller");
    int rc = SCSICTL_OK;
    sc_lock_acquire(&ctl->lock);
    if (!ctl->store)
        rc = sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "deferred writes: no state file is set");
    else if (ctl->inflight || ctl->writing)
        rc = sc_fail(err, SCSICTL_E_BUSY, "deferred writes: a step or a write is in flight");
    else
        ctl->deferred = deferred;
    sc_lock_release(&ctl->lock);
    return rc;
}

uint64_t scsictl_change_seq(scsictl *ctl)
{
    if (!ctl)
        return 0;
    sc_lock_acquire(&ctl->lock);
    uint64_t seq = ctl->seq;
    sc_lock_release(&ctl->lock);
    return seq;
}

const char *scsictl_state_file_target(scsictl *ctl)
{
    return ctl && ctl->store ? ctl->store->target : NULL;
}

int scsictl_write_begin(scsictl *ctl, uint64_t seq, bool tentative, scsictl_write *w,
                        scsictl_error *err)
{
    if (!ctl || !w)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "write_begin: missing argument");
    if (!ctl->store)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "write_begin: no state file is set");
    int rc = sc_write_begin(ctl, seq, tentative, w, err);
    if (rc == SCSICTL_E_IO)
        sc_fail(err, SCSICTL_E_IO, "state file: the write that carried change %llu failed",
                (unsigned long long)seq);
    else if (rc == SCSICTL_E_BUSY)
        sc_fail(err, SCSICTL_E_BUSY, "state file: a write is in flight");
    return rc;
}

void scsictl_write_end(scsictl *ctl, scsictl_write *w, bool ok)
{
    if (ctl && w)
        sc_write_end(ctl, w, ok);
}
