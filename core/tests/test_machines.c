/*
 * test_machines.c — every row of the disk and mount transition tables
 * (disk.c, mount.c), through both drivers: the step interface
 * (scsictl_op_*) and the blocking driver (scsictl_map / scsictl_unmap with
 * callbacks). White-box: it reads the machines' states from the records.
 *
 * For each legal cell (state, event) -> (next, step): a controller is put
 * in `state` (a resting state from a hand-made snapshot, an in-flight one
 * by starting an operation from there), the event is applied, and the test
 * checks the step handed out and the state reached. An operation that goes
 * on after a "step ok" (an eject is followed by the removal, an add by the
 * mount) is checked one move further. Every illegal cell that an operation
 * can meet is refused, naming the state and the event, and changes
 * nothing; the others cannot be reached because busy is checked first.
 */
#include "test_util.h"

#include "internal.h"

#define ID1 "11111111-1111-4111-8111-111111111111"

/* ---- building a state ----------------------------------------------------- */

/* A snapshot with one disk at 0:0 holding one claim: the disk's file word
 * and teardown flag, the partition's file word (NULL: the claim holds no
 * partition: its release reached the disk). */
static scsictl *import_one(scsictl_guest guest, const char *disk_word, bool teardown,
                           const char *part_word)
{
    char body[1024];
    size_t n = (size_t)snprintf(body, sizeof body,
                                "scsictl-snapshot 1\ngeometry 1 4 %s open\n"
                                "disk 0 0 %s %d 0 VirtualDisk - =/d\n",
                                guest == SCSICTL_GUEST_LINUX ? "linux" : "windows", disk_word,
                                teardown);
    int records = 3;
    if (part_word) {
        n += (size_t)snprintf(body + n, sizeof body - n, "part 0 0 0 %s 1 0 0 0 0 0 = 0\n",
                              part_word);
        records++;
    }
    n += (size_t)snprintf(body + n, sizeof body - n, "res " ID1 " 0 0 0 %d %d\n",
                          part_word != NULL, part_word == NULL);
    records++;
    snprintf(body + n, sizeof body - n, "end %d %016llx\n", records + 1,
             (unsigned long long)sc_snapshot_checksum(body, n));
    scsictl *ctl = NULL;
    scsictl_error err;
    int rc = scsictl_import(body, strlen(body), NULL, &ctl, &err);
    tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "import: %s\n%s", rc ? err.message : "",
             body);
    return ctl;
}

static scsictl_id the_id(void)
{
    scsictl_id id;
    scsictl_id_parse(ID1, SCSICTL_ID_STRLEN, &id);
    return id;
}

static disk *disk_of(scsictl *ctl)
{
    scsictl_id id = the_id();
    reservation *r = sc_res_find(ctl, &id);
    for (size_t i = 0; !r && i < ctl->disks.cap; i++)
        if (hmap_item(&ctl->disks, i))
            return hmap_item(&ctl->disks, i);
    return r ? r->disk : NULL;
}

static mount *mount_of(scsictl *ctl)
{
    for (size_t i = 0; i < ctl->mounts.cap; i++)
        if (hmap_item(&ctl->mounts, i))
            return hmap_item(&ctl->mounts, i);
    return NULL;
}

/* How to reach each state: the resting state to import, then an operation
 * started from there (its first step puts the machine in flight). */
typedef struct recipe {
    const char *disk_word;
    bool teardown;
    const char *part_word; /* NULL: the claim's release already reached the disk */
    int start;             /* 0 none, 1 map, 2 unmap */
} recipe;

static const recipe disk_recipes[SC_D_COUNT] = {
    [SC_D_RESERVED] = { "reserved", false, "reserved", 0 },
    [SC_D_ADDING] = { "reserved", false, "reserved", 1 },
    [SC_D_MAYBE_ADDED] = { "adding", false, "reserved", 0 },
    [SC_D_READDING] = { "adding", false, "reserved", 1 },
    [SC_D_ATTACHED] = { "attached", false, "reserved", 0 },
    [SC_D_RELEASING] = { "attached", true, NULL, 0 },
    [SC_D_EJECTING] = { "attached", true, NULL, 2 },
    [SC_D_EJECTED] = { "ejected", true, NULL, 0 },
    [SC_D_REMOVING] = { "attached", true, NULL, 2 },        /* Windows */
    [SC_D_REMOVING_EJECTED] = { "ejected", true, NULL, 2 },
    [SC_D_MAYBE_RELEASING] = { "adding", true, NULL, 0 },
    [SC_D_MAYBE_EJECTING] = { "adding", true, NULL, 2 },    /* Linux */
    [SC_D_MAYBE_REMOVING] = { "adding", true, NULL, 2 },    /* Windows */
};

/* A partition's states, all on an attached disk whose teardown has not
 * begun: the partition's file word and the operation started. */
static const struct { const char *part_word; int start; } mount_recipes[SC_M_COUNT] = {
    [SC_M_RESERVED] = { "reserved", 0 },
    [SC_M_MOUNTING] = { "reserved", 1 },
    [SC_M_MAYBE_MOUNTED] = { "mounting", 0 },
    [SC_M_REMOUNTING] = { "mounting", 1 },
    [SC_M_MOUNTED] = { "mounted", 0 },
    [SC_M_UNMOUNTING] = { "mounted", 2 },
    [SC_M_UNMOUNTING_MAYBE] = { "mounting", 2 },
};

static recipe recipe_of(bool is_disk, int state)
{
    if (is_disk)
        return disk_recipes[state];
    return (recipe){ "attached", false, mount_recipes[state].part_word, mount_recipes[state].start };
}

/* The guest a state lives in (some exist in one guest only). */
static bool state_in_guest(bool is_disk, int state, scsictl_guest g)
{
    if (!is_disk)
        return true;
    if (sc_disk_states[state].linux_only)
        return g == SCSICTL_GUEST_LINUX;
    if (state == SC_D_REMOVING || state == SC_D_MAYBE_REMOVING)
        return g == SCSICTL_GUEST_WINDOWS;
    return true;
}

static bool event_in_guest(sc_event ev, scsictl_guest g)
{
    if (ev == SC_EV_RELEASE_LINUX)
        return g == SCSICTL_GUEST_LINUX;
    if (ev == SC_EV_RELEASE_WINDOWS)
        return g == SCSICTL_GUEST_WINDOWS;
    return true;
}

static int state_now(scsictl *ctl, bool is_disk)
{
    if (is_disk) {
        disk *d = disk_of(ctl);
        return d ? d->state : SC_D_GONE;
    }
    mount *m = mount_of(ctl);
    return m ? m->state : SC_M_GONE;
}

/* ---- the two drivers -------------------------------------------------------- */

/* The blocking driver's callbacks: the recording backend of test_util.h,
 * failing its first call when told to; its hook notes the step kind and
 * the machine's state at the first call. */
typedef struct cb_state {
    scsictl *ctl;
    bool is_disk;
    int calls;
    scsictl_step_kind first_kind;
    int state_at_first;
} cb_state;

static cb_state cbs;
static rec_backend *rec;

static void note_call(rec_backend *r, const rec_call *c)
{
    (void)r;
    if (cbs.calls++ == 0) {
        cbs.first_kind = c->kind;
        cbs.state_at_first = state_now(cbs.ctl, cbs.is_disk);
    }
}

static const scsictl_callbacks *blocking_callbacks(scsictl *ctl, scsictl_guest g, bool is_disk,
                                                   bool fail_first)
{
    cbs = (cb_state){ .ctl = ctl, .is_disk = is_disk };
    rec_init(rec, g);
    rec_script(rec, fail_first ? "f" : NULL, NULL);
    rec->hook = note_call;
    return &rec->cb;
}

static scsictl_step_kind step_kind_of(sc_do what, scsictl_guest g)
{
    switch (what) {
    case SC_DO_ADD: return SCSICTL_STEP_ADD_SCSI_DISK;
    case SC_DO_EJECT: return SCSICTL_STEP_LINUX_EJECT;
    case SC_DO_REMOVE: return SCSICTL_STEP_REMOVE_SCSI_DISK;
    case SC_DO_MOUNT:
        return g == SCSICTL_GUEST_LINUX ? SCSICTL_STEP_LINUX_MOUNT : SCSICTL_STEP_WINDOWS_MOUNT;
    case SC_DO_UNMOUNT:
        return g == SCSICTL_GUEST_LINUX ? SCSICTL_STEP_LINUX_UNMOUNT
                                        : SCSICTL_STEP_WINDOWS_UNMOUNT;
    case SC_DO_NOTHING: break;
    }
    return SCSICTL_STEP_KIND_COUNT;
}

/* Where a state goes after "step ok" when the operation goes on with the
 * same machine: an eject is followed by the removal (Linux release); a
 * removal leaves the disk reserved, which the release then forgets; an
 * unmount leaves the partition reserved, which the release forgets. */
static int after_ok(bool is_disk, int next, scsictl_guest g)
{
    sc_event rel = g == SCSICTL_GUEST_LINUX ? SC_EV_RELEASE_LINUX : SC_EV_RELEASE_WINDOWS;
    if (is_disk && (next == SC_D_EJECTED || next == SC_D_RESERVED))
        return sc_disk_table[next][rel].next;
    if (!is_disk && next == SC_M_RESERVED)
        return SC_M_GONE;
    return next;
}

/* Applies one row through one driver and checks it. */
static void check_row(scsictl_guest g, bool is_disk, int state, sc_event ev, bool blocking)
{
    const recipe rc = recipe_of(is_disk, state);
    const sc_move mv = is_disk ? sc_disk_table[state][ev] : sc_mount_table[state][ev];
    const char *sname = is_disk ? sc_disk_states[state].name : sc_mount_states[state].name;
    char what[160];
    snprintf(what, sizeof what, "%s %s: %s + %s [%s]", g == SCSICTL_GUEST_LINUX ? "linux" : "windows",
             is_disk ? "disk" : "partition", sname, sc_event_names[ev],
             blocking ? "blocking" : "steps");
    scsictl *ctl = import_one(g, rc.disk_word, rc.teardown, rc.part_word);
    if (!ctl)
        return;
    scsictl_id id = the_id();
    scsictl_error err;
    scsictl_op op;
    int st = SCSICTL_DONE;
    bool in_flight = rc.start != 0;
    if (rc.start)
        st = rc.start == 1 ? scsictl_op_start_map(ctl, &op, &id, &err)
                            : scsictl_op_start_unmap(ctl, &op, &id, &err);
    tu_check(st == (in_flight ? SCSICTL_STEP : SCSICTL_DONE) && state_now(ctl, is_disk) == state,
             __FILE__, __LINE__, "%s: the recipe reached %d, not the state", what,
             state_now(ctl, is_disk));
    bool is_event_of_op = ev == SC_EV_OK || ev == SC_EV_FAILED;
    if (is_event_of_op && !blocking) {
        st = scsictl_op_report(ctl, &op, ev == SC_EV_OK, "no", &err);
        int want = ev == SC_EV_OK ? after_ok(is_disk, mv.next, g) : mv.next;
        tu_check(state_now(ctl, is_disk) == want, __FILE__, __LINE__, "%s: state %d, want %d",
                 what, state_now(ctl, is_disk), want);
        tu_check(ev == SC_EV_OK ? st != SCSICTL_E_BACKEND : st == SCSICTL_E_BACKEND, __FILE__,
                 __LINE__, "%s: report returned %s", what, scsictl_code_name(st));
        while (st == SCSICTL_STEP) /* finish the op; the next rows start afresh */
            st = scsictl_op_report(ctl, &op, true, NULL, &err);
    } else if (is_event_of_op) {
        /* The blocking driver meets the in-flight state as the first step
         * of a fresh operation: take the recipe's step back, run the
         * operation through callbacks, and fail or pass its first step. */
        scsictl_op_report(ctl, &op, false, "taken back", &err);
        const scsictl_callbacks *cb = blocking_callbacks(ctl, g, is_disk, ev == SC_EV_FAILED);
        char path[64];
        st = rc.start == 1 ? scsictl_map(ctl, cb, &id, path, sizeof path, &err)
                            : scsictl_unmap(ctl, cb, &id, &err);
        tu_check(cbs.calls > 0 && cbs.state_at_first == state, __FILE__, __LINE__,
                 "%s: the callback saw state %d", what, cbs.state_at_first);
        if (ev == SC_EV_FAILED)
            tu_check(st == SCSICTL_E_BACKEND && state_now(ctl, is_disk) == mv.next, __FILE__,
                     __LINE__, "%s: %s, state %d, want %d", what, scsictl_code_name(st),
                     state_now(ctl, is_disk), mv.next);
        else
            tu_check(st == SCSICTL_OK, __FILE__, __LINE__, "%s: %s", what, scsictl_code_name(st));
    } else if (!blocking) { /* map or release from a resting state */
        st = ev == SC_EV_MAP ? scsictl_op_start_map(ctl, &op, &id, &err)
                             : scsictl_op_start_unmap(ctl, &op, &id, &err);
        if (mv.step != SC_DO_NOTHING) {
            tu_check(st == SCSICTL_STEP && op.step.kind == step_kind_of((sc_do)mv.step, g) &&
                         state_now(ctl, is_disk) == mv.next,
                     __FILE__, __LINE__, "%s: %s step %s, state %d, want %s and %d", what,
                     scsictl_code_name(st), st == SCSICTL_STEP ? scsictl_step_name(op.step.kind) : "-",
                     state_now(ctl, is_disk), scsictl_step_name(step_kind_of((sc_do)mv.step, g)),
                     mv.next);
            scsictl_op_report(ctl, &op, false, "stop", &err);
        } else {
            /* no step on this machine: the op is done, forgets it, or goes
             * on with the partition's machine */
            tu_check(state_now(ctl, is_disk) == mv.next, __FILE__, __LINE__, "%s: state %d, want %d",
                     what, state_now(ctl, is_disk), mv.next);
            if (st == SCSICTL_STEP)
                scsictl_op_report(ctl, &op, false, "stop", &err);
        }
    } else {
        const scsictl_callbacks *cb = blocking_callbacks(ctl, g, is_disk, true);
        char path[64];
        st = ev == SC_EV_MAP ? scsictl_map(ctl, cb, &id, path, sizeof path, &err)
                             : scsictl_unmap(ctl, cb, &id, &err);
        if (mv.step != SC_DO_NOTHING)
            tu_check(cbs.calls == 1 && cbs.first_kind == step_kind_of((sc_do)mv.step, g) &&
                         cbs.state_at_first == mv.next && st == SCSICTL_E_BACKEND,
                     __FILE__, __LINE__, "%s: %d calls, first %s in state %d", what, cbs.calls,
                     cbs.calls ? scsictl_step_name(cbs.first_kind) : "-", cbs.state_at_first);
        else if (cbs.calls == 0)
            tu_check(state_now(ctl, is_disk) == mv.next && st == SCSICTL_OK, __FILE__, __LINE__,
                     "%s: state %d, want %d (%s)", what, state_now(ctl, is_disk), mv.next,
                     scsictl_code_name(st));
        else if (is_disk) /* went on with the partition's machine */
            tu_check(state == SC_D_ATTACHED && cbs.state_at_first == SC_D_ATTACHED, __FILE__,
                     __LINE__, "%s: a step on another machine", what);
        else /* the partition is forgotten; the release went on with the disk */
            tu_check(state_now(ctl, false) == mv.next, __FILE__, __LINE__, "%s: state %d", what,
                     state_now(ctl, false));
    }
    scsictl_free(ctl);
}

/* An illegal cell met by an operation is refused, naming both. The cells
 * an operation can meet with the disk idle and the claim not pending: map
 * on a disk whose teardown began is refused as a pending release first,
 * so the table's refusal is reached by corrupting a record by hand. */
static void check_illegal(void)
{
    TEST("illegal moves are refused, naming the state and the event");
    scsictl *ctl = import_one(SCSICTL_GUEST_LINUX, "attached", true, NULL);
    if (!ctl)
        return;
    scsictl_id id = the_id();
    reservation *r = sc_res_find(ctl, &id);
    r->pending = false; /* by hand: a map now meets the releasing disk */
    scsictl_op op;
    scsictl_error err;
    char before[2048], after[2048];
    tu_state(ctl, true, before, sizeof before);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &id, &err), SCSICTL_E_BUSY);
    CHECK_CONTAINS(err.message, "illegal move");
    CHECK_CONTAINS(err.message, "state releasing, event map");
    tu_state(ctl, true, after, sizeof after);
    CHECK_STR(after, before);
    scsictl_free(ctl);

    /* every cell the table leaves out is marked illegal */
    int illegal_cells = 0;
    for (int s = 0; s < SC_D_COUNT; s++)
        for (int e = 0; e < SC_EV_COUNT; e++)
            illegal_cells += !sc_disk_table[s][e].legal;
    for (int s = 0; s < SC_M_COUNT; s++)
        for (int e = 0; e < SC_EV_COUNT; e++)
            illegal_cells += !sc_mount_table[s][e].legal;
    CHECK(illegal_cells > 0);
    /* an in-flight state takes only "ok" and "failed"; a resting one only
     * "map" and "release": the busy check and the op's own step keep the
     * other cells unreachable */
    for (int s = 0; s < SC_D_COUNT; s++)
        for (int e = 0; e < SC_EV_COUNT; e++) {
            bool op_event = e == SC_EV_OK || e == SC_EV_FAILED;
            if (sc_disk_table[s][e].legal)
                CHECK(op_event == sc_disk_states[s].in_flight);
        }
    for (int s = 0; s < SC_M_COUNT; s++)
        for (int e = 0; e < SC_EV_COUNT; e++) {
            bool op_event = e == SC_EV_OK || e == SC_EV_FAILED;
            if (sc_mount_table[s][e].legal)
                CHECK(op_event == sc_mount_states[s].in_flight);
        }
}

int main(void)
{
    rec = rec_new(SCSICTL_GUEST_LINUX);
    int rows = 0, runs = 0;
    for (int gi = 0; gi < 2; gi++) {
        scsictl_guest g = gi ? SCSICTL_GUEST_WINDOWS : SCSICTL_GUEST_LINUX;
        for (int is_disk = 1; is_disk >= 0; is_disk--) {
            int n = is_disk ? SC_D_COUNT : SC_M_COUNT;
            for (int s = 0; s < n; s++) {
                if (!state_in_guest(is_disk, s, g))
                    continue;
                for (int e = 0; e < SC_EV_COUNT; e++) {
                    const sc_move mv = is_disk ? sc_disk_table[s][e] : sc_mount_table[s][e];
                    if (!mv.legal || !event_in_guest((sc_event)e, g))
                        continue;
                    rows++;
                    for (int b = 0; b < 2; b++, runs++)
                        check_row(g, is_disk, s, (sc_event)e, b);
                }
            }
        }
    }
    printf("-- %d table rows checked, %d runs through the two drivers\n", rows, runs);
    int legal = 0;
    for (int s = 0; s < SC_D_COUNT; s++)
        for (int e = 0; e < SC_EV_COUNT; e++)
            legal += sc_disk_table[s][e].legal;
    for (int s = 0; s < SC_M_COUNT; s++)
        for (int e = 0; e < SC_EV_COUNT; e++)
            legal += sc_mount_table[s][e].legal;
    /* Each legal cell is met in at least one guest. */
    CHECK(rows >= legal);
    check_illegal();
    free(rec);
    return tu_finish();
}
