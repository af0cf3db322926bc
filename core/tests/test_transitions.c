/*
 * test_transitions.c — table-driven tests of the disk state machine
 * (reserved -> attached -> ejected -> gone on Linux; reserved -> attached ->
 * gone on Windows) and the mount state machine (reserved -> mounted -> gone).
 *
 * Each row is a small script on a fresh controller: reserve / map / unmap /
 * pin actions, each with the step results to feed ('o' ok, 'f' fail), the
 * expected return code, the expected steps issued (kinds and arguments) and
 * the expected guest path, interleaved with expected states read back with
 * scsictl_list_slots(). Every row runs twice: through the step interface fed
 * by hand (scsictl_op_start_* / scsictl_op_report) and through the blocking
 * driver (scsictl_map / scsictl_unmap) with the recording backend.
 */
#include "test_util.h"

/* Disk configs by index. */
enum { DA, DB, DC, DD, DE, DR, DA_RO, N_DISKS };
/* Mount configs by index. */
enum { P0, P1, P2, P0_SCRATCH, P0_RO, N_MOUNTS };

static scsictl_disk_config disk_cfg(int i)
{
    static const char *paths[N_DISKS] = {"/a", "/b", "/c", "/d", "/e", "/r", "/a"};
    scsictl_disk_config d = tu_disk(paths[i]);
    if (i == DA_RO) d.read_only = true;
    return d;
}

static scsictl_mount_config mount_cfg(int i)
{
    scsictl_mount_config m = tu_mount(0);
    switch (i) {
    case P1: m.partition = 1; break;
    case P2: m.partition = 2; break;
    case P0_SCRATCH: m.format_with_refs = true; break;
    case P0_RO: m.read_only = true; break;
    default: break;
    }
    return m;
}

typedef enum { END = 0, RES, MAP, UNMAP, PIN, STATE, STATE_NP } act_kind;

typedef struct act {
    act_kind k;
    int id;              /* RES/MAP/UNMAP: id slot; PIN: controller */
    int a;               /* RES: disk index; PIN: lun */
    int b;               /* RES: mount index; PIN: disk index or -1 */
    const char *results; /* MAP/UNMAP: step results */
    int code;            /* expected code (DONE for a finished op) */
    const char *want;    /* MAP/UNMAP: steps; STATE: state */
    const char *path;    /* MAP: expected guest path when DONE */
} act;

#define R(i, d, m, c) {RES, i, d, m, NULL, c, NULL, NULL}
#define M(i, res, c, steps, p) {MAP, i, 0, 0, res, c, steps, p}
#define U(i, res, c, steps) {UNMAP, i, 0, 0, res, c, steps, NULL}
#define PINR(ct, l, d, c) {PIN, ct, l, d, NULL, c, NULL, NULL}
#define S(st) {STATE, 0, 0, 0, NULL, 0, st, NULL}
#define SNP(st) {STATE_NP, 0, 0, 0, NULL, 0, st, NULL}

#define OK SCSICTL_OK
#define DONE SCSICTL_DONE
#define EBACKEND SCSICTL_E_BACKEND
#define EBUSY SCSICTL_E_BUSY
#define ENOTFOUND SCSICTL_E_NOT_FOUND
#define ENOSLOTS SCSICTL_E_NO_SLOTS
#define EMISMATCH SCSICTL_E_CONFIG_MISMATCH

typedef struct row {
    const char *name;
    scsictl_guest guest;
    uint32_t controllers, luns;
    act acts[24];
} row;

#define LP0 "/run/mounts/scsi/0_0_0"
#define LINUX SCSICTL_GUEST_LINUX
#define WINDOWS SCSICTL_GUEST_WINDOWS

static const row rows[] = {
    {"linux: reserve, map, map again, unmap", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        S("0:0 /a reserved r1 [0 reserved 1]"),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        S("0:0 /a attached r1 [0 mounted 1]"),
        M(0, "", DONE, "", LP0),
        S("0:0 /a attached r1 [0 mounted 1]"),
        U(0, "", DONE, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        S(""),
        U(0, "", ENOTFOUND, ""),
        M(0, "", ENOTFOUND, "", NULL),
    }},
    {"linux: add fails, map retried", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "f", EBACKEND, "add 0:0 /a", NULL),
        S("0:0 /a reserved r1 [0 reserved 1]"),
        M(0, "f", EBACKEND, "add 0:0 /a", NULL),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        S("0:0 /a attached r1 [0 mounted 1]"),
        U(0, "", DONE, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        S(""),
    }},
    {"linux: add fails, give up (never added: no callback)", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "f", EBACKEND, "add 0:0 /a", NULL),
        U(0, "", DONE, ""),
        S(""),
    }},
    {"linux: mount fails, map retried from the mount", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "of", EBACKEND, "add 0:0 /a, mount 0:0:0 /a", NULL),
        S("0:0 /a attached r1 [0 reserved 1]"),
        M(0, "", DONE, "mount 0:0:0 /a", LP0),
        S("0:0 /a attached r1 [0 mounted 1]"),
        U(0, "", DONE, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        S(""),
    }},
    {"linux: mount fails, give up (no unmount)", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "of", EBACKEND, "add 0:0 /a, mount 0:0:0 /a", NULL),
        U(0, "", DONE, "eject 0:0, remove 0:0"),
        S(""),
    }},
    {"linux: unmount fails, release pending, retried", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        U(0, "f", EBACKEND, "unmount 0:0:0 /a"),
        S("0:0 /a attached r1 [0 mounted 1]"),
        M(0, "", EBUSY, "", NULL),
        U(0, "f", EBACKEND, "unmount 0:0:0 /a"),
        U(0, "", DONE, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        S(""),
        U(0, "", ENOTFOUND, ""),
    }},
    {"linux: eject fails, teardown resumes at eject", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        U(0, "of", EBACKEND, "unmount 0:0:0 /a, eject 0:0"),
        SNP("0:0 /a attached r1"),
        R(1, DA, P0, EBUSY),
        M(0, "", EBUSY, "", NULL),
        U(0, "", DONE, "eject 0:0, remove 0:0"),
        S(""),
        R(1, DA, P0, OK),
        S("0:0 /a reserved r1 [0 reserved 1]"),
    }},
    {"linux: remove fails, retry only removes", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        U(0, "oof", EBACKEND, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        SNP("0:0 /a ejected r1"),
        R(1, DA, P0, EBUSY),
        U(0, "f", EBACKEND, "remove 0:0"),
        SNP("0:0 /a ejected r1"),
        U(0, "", DONE, "remove 0:0"),
        S(""),
    }},
    {"linux: two partitions on one disk", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        R(1, DA, P1, OK),
        S("0:0 /a reserved r2 [0 reserved 1] [1 reserved 1]"),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        M(1, "", DONE, "mount 0:0:1 /a", "/run/mounts/scsi/0_0_1"),
        S("0:0 /a attached r2 [0 mounted 1] [1 mounted 1]"),
        U(0, "", DONE, "unmount 0:0:0 /a"),
        S("0:0 /a attached r1 [1 mounted 1]"),
        U(1, "", DONE, "unmount 0:0:1 /a, eject 0:0, remove 0:0"),
        S(""),
    }},
    {"linux: two claims share one partition mount", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        R(1, DA, P0, OK),
        S("0:0 /a reserved r2 [0 reserved 2]"),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        M(1, "", DONE, "", LP0),
        U(0, "", DONE, ""),
        S("0:0 /a attached r1 [0 mounted 1]"),
        M(1, "", DONE, "", LP0),
        U(1, "", DONE, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        S(""),
    }},
    {"linux: shared add fails, second claim adds on its own slot", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        R(1, DA, P1, OK),
        M(0, "f", EBACKEND, "add 0:0 /a", NULL),
        S("0:0 /a reserved r2 [0 reserved 1] [1 reserved 1]"),
        U(0, "", DONE, ""),
        S("0:0 /a reserved r1 [1 reserved 1]"),
        R(2, DB, P0, OK),
        S("0:0 /a reserved r1 [1 reserved 1]; 0:1 /b reserved r1 [0 reserved 1]"),
        M(1, "", DONE, "add 0:0 /a, mount 0:0:1 /a", "/run/mounts/scsi/0_0_1"),
        M(2, "", DONE, "add 0:1 /b, mount 0:1:0 /b", "/run/mounts/scsi/0_1_0"),
        U(1, "", DONE, "unmount 0:0:1 /a, eject 0:0, remove 0:0"),
        U(2, "", DONE, "unmount 0:1:0 /b, eject 0:1, remove 0:1"),
        S(""),
    }},
    {"linux: reserve then release without map frees the slot", LINUX, 1, 1, {
        R(0, DA, P0, OK),
        U(0, "", DONE, ""),
        S(""),
        R(1, DB, P0, OK),
        S("0:0 /b reserved r1 [0 reserved 1]"),
        U(1, "", DONE, ""),
        R(2, DC, P0, OK),
        U(2, "", DONE, ""),
        S(""),
    }},
    {"linux: never-mapped partition claim does not keep the disk", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        R(1, DA, P1, OK),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        U(1, "", DONE, ""),
        S("0:0 /a attached r1 [0 mounted 1]"),
        U(0, "", DONE, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        S(""),
    }},
    {"linux: failed unmount is joined by a new claim", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "", DONE, "add 0:0 /a, mount 0:0:0 /a", LP0),
        U(0, "f", EBACKEND, "unmount 0:0:0 /a"),
        R(1, DA, P0, OK),
        S("0:0 /a attached r2 [0 mounted 2]"),
        M(1, "", DONE, "", LP0),
        U(0, "", DONE, ""),
        S("0:0 /a attached r1 [0 mounted 1]"),
        U(1, "", DONE, "unmount 0:0:0 /a, eject 0:0, remove 0:0"),
        S(""),
    }},
    {"linux: config mismatch on disk and mount", LINUX, 1, 4, {
        R(0, DA, P0, OK),
        R(1, DA_RO, P0, EMISMATCH),
        R(1, DA, P0_RO, EMISMATCH),
        R(1, DA, P1, OK),
        S("0:0 /a reserved r2 [0 reserved 1] [1 reserved 1]"),
    }},
    {"linux: lowest free slot, controller-major, 2x2", LINUX, 2, 2, {
        R(0, DA, P0, OK),
        R(1, DB, P0, OK),
        R(2, DC, P2, OK),
        R(3, DD, P0, OK),
        R(4, DE, P0, ENOSLOTS),
        S("0:0 /a reserved r1 [0 reserved 1]; 0:1 /b reserved r1 [0 reserved 1]; "
          "1:0 /c reserved r1 [2 reserved 1]; 1:1 /d reserved r1 [0 reserved 1]"),
        M(2, "", DONE, "add 1:0 /c, mount 1:0:2 /c", "/run/mounts/scsi/1_0_2"),
        M(3, "", DONE, "add 1:1 /d, mount 1:1:0 /d", "/run/mounts/scsi/1_1_0"),
        U(1, "", DONE, ""),
        R(4, DE, P0, OK),
        S("0:0 /a reserved r1 [0 reserved 1]; 0:1 /e reserved r1 [0 reserved 1]; "
          "1:0 /c attached r1 [2 mounted 1]; 1:1 /d attached r1 [0 mounted 1]"),
        U(2, "", DONE, "unmount 1:0:2 /c, eject 1:0, remove 1:0"),
        U(0, "", DONE, ""),
        R(1, DB, P1, OK),
        S("0:0 /b reserved r1 [1 reserved 1]; 0:1 /e reserved r1 [0 reserved 1]; "
          "1:1 /d attached r1 [0 mounted 1]"),
    }},
    {"linux: pinned slots", LINUX, 1, 4, {
        PINR(0, 0, -1, OK),
        S("0:0P"),
        R(0, DA, P0, OK),
        S("0:0P; 0:1 /a reserved r1 [0 reserved 1]"),
        PINR(0, 2, DR, OK),
        R(1, DR, P0, OK),
        S("0:0P; 0:1 /a reserved r1 [0 reserved 1]; 0:2P /r reserved r1 [0 reserved 1]"),
        M(1, "", DONE, "add 0:2 /r, mount 0:2:0 /r", "/run/mounts/scsi/0_2_0"),
        U(1, "", DONE, "unmount 0:2:0 /r, eject 0:2, remove 0:2"),
        S("0:0P; 0:1 /a reserved r1 [0 reserved 1]; 0:2P"),
        R(2, DB, P0, OK),
        R(3, DR, P1, OK),
        S("0:0P; 0:1 /a reserved r1 [0 reserved 1]; 0:2P /r reserved r1 [1 reserved 1]; "
          "0:3 /b reserved r1 [0 reserved 1]"),
        R(4, DC, P0, ENOSLOTS),
    }},
    {"windows: reserve, map, unmap (no eject)", WINDOWS, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "", DONE, "add 0:0 /a, wmount 0:0:0 /a", "C:\\mounts\\scsi\\0_0_0"),
        S("0:0 /a attached r1 [0 mounted 1]"),
        M(0, "", DONE, "", "C:\\mounts\\scsi\\0_0_0"),
        U(0, "", DONE, "wunmount 0:0:0 /a, remove 0:0"),
        S(""),
    }},
    {"windows: scratch mount (format_with_refs)", WINDOWS, 1, 4, {
        R(0, DA, P0_SCRATCH, OK),
        R(1, DA, P0, EMISMATCH),
        M(0, "", DONE, "add 0:0 /a, wscratch 0:0:0 /a", "C:\\mounts\\scsi\\0_0_0"),
        S("0:0 /a attached r1 [0 mounted 1]"),
        U(0, "", DONE, "wunmount 0:0:0 /a, remove 0:0"),
        S(""),
    }},
    {"windows: mount fails, give up", WINDOWS, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "of", EBACKEND, "add 0:0 /a, wmount 0:0:0 /a", NULL),
        S("0:0 /a attached r1 [0 reserved 1]"),
        U(0, "", DONE, "remove 0:0"),
        S(""),
    }},
    {"windows: remove fails, disk stays attached, retried", WINDOWS, 1, 4, {
        R(0, DA, P0, OK),
        M(0, "", DONE, "add 0:0 /a, wmount 0:0:0 /a", "C:\\mounts\\scsi\\0_0_0"),
        U(0, "of", EBACKEND, "wunmount 0:0:0 /a, remove 0:0"),
        SNP("0:0 /a attached r1"),
        R(1, DA, P0, EBUSY),
        U(0, "", DONE, "remove 0:0"),
        S(""),
    }},
    {"windows: unmount fails, retried", WINDOWS, 1, 4, {
        R(0, DA, P1, OK),
        M(0, "", DONE, "add 0:0 /a, wmount 0:0:1 /a", "C:\\mounts\\scsi\\0_0_1"),
        U(0, "f", EBACKEND, "wunmount 0:0:1 /a"),
        S("0:0 /a attached r1 [1 mounted 1]"),
        U(0, "", DONE, "wunmount 0:0:1 /a, remove 0:0"),
        S(""),
    }},
    {"windows: 2x3 geometry, partitions", WINDOWS, 2, 3, {
        R(0, DA, P0, OK),
        R(1, DB, P0, OK),
        R(2, DC, P0, OK),
        R(3, DD, P2, OK),
        R(4, DD, P1, OK),
        M(3, "", DONE, "add 1:0 /d, wmount 1:0:2 /d", "C:\\mounts\\scsi\\1_0_2"),
        M(4, "", DONE, "wmount 1:0:1 /d", "C:\\mounts\\scsi\\1_0_1"),
        M(2, "", DONE, "add 0:2 /c, wmount 0:2:0 /c", "C:\\mounts\\scsi\\0_2_0"),
        S("0:0 /a reserved r1 [0 reserved 1]; 0:1 /b reserved r1 [0 reserved 1]; "
          "0:2 /c attached r1 [0 mounted 1]; 1:0 /d attached r2 [1 mounted 1] [2 mounted 1]"),
        U(3, "", DONE, "wunmount 1:0:2 /d"),
        U(4, "", DONE, "wunmount 1:0:1 /d, remove 1:0"),
        U(2, "", DONE, "wunmount 0:2:0 /c, remove 0:2"),
        U(0, "", DONE, ""),
        U(1, "", DONE, ""),
        S(""),
    }},
};

/* Checks the guest path every mount-level call carried. */
static void check_call_paths(scsictl_guest g, const rec_backend *r, size_t from)
{
    for (size_t i = from; i < r->n && i < REC_MAX_CALLS; i++) {
        const rec_call *c = &r->calls[i];
        if (!rec_kind_is_mount_level(c->kind)) continue;
        char want[SCSICTL_GUEST_PATH_MAX];
        scsictl_guest_path(g, c->controller, c->lun, c->partition, want, sizeof want);
        CHECK_STR(c->guest_path, want);
        if (g == SCSICTL_GUEST_LINUX)
            CHECK(c->kind == SCSICTL_STEP_LINUX_MOUNT || c->kind == SCSICTL_STEP_LINUX_UNMOUNT);
        else
            CHECK(c->kind != SCSICTL_STEP_LINUX_MOUNT && c->kind != SCSICTL_STEP_LINUX_UNMOUNT);
    }
    for (size_t i = from; i < r->n && i < REC_MAX_CALLS; i++)
        if (g == SCSICTL_GUEST_WINDOWS) CHECK(r->calls[i].kind != SCSICTL_STEP_LINUX_EJECT);
}

static void run_row(const row *rw, bool blocking)
{
    char name[256];
    snprintf(name, sizeof name, "%s [%s]", rw->name, blocking ? "blocking" : "steps");
    TEST(name);
    scsictl *ctl = tu_new(rw->controllers, rw->luns, rw->guest);
    rec_backend *r = rec_new(rw->guest);
    scsictl_id ids[8];
    memset(ids, 0, sizeof ids);
    for (size_t i = 0; i < sizeof rw->acts / sizeof rw->acts[0]; i++) {
        const act *a = &rw->acts[i];
        if (a->k == END) break;
        char where[320];
        snprintf(where, sizeof where, "%s [%s] action %zu", rw->name,
                 blocking ? "blocking" : "steps", i);
        tu_test_name = where;
        scsictl_error err;
        memset(&err, 0, sizeof err);
        switch (a->k) {
        case RES: {
            scsictl_disk_config d = disk_cfg(a->a);
            scsictl_mount_config m = mount_cfg(a->b);
            scsictl_id id;
            int rc = scsictl_reserve(ctl, &d, &m, &id, &err);
            CHECK_CODE(rc, a->code);
            if (rc == SCSICTL_OK) ids[a->id] = id;
            break;
        }
        case PIN: {
            scsictl_disk_config d;
            if (a->b >= 0) d = disk_cfg(a->b);
            int rc = scsictl_reserve_for_rootfs(ctl, (uint64_t)a->id, (uint64_t)a->a,
                                                a->b >= 0 ? &d : NULL, &err);
            CHECK_CODE(rc, a->code);
            break;
        }
        case MAP:
        case UNMAP: {
            size_t from = r->n;
            rec_script(r, a->results, "injected failure");
            int rc;
            char path[SCSICTL_GUEST_PATH_MAX] = "";
            if (blocking) {
                rc = a->k == MAP
                         ? scsictl_map(ctl, &r->cb, &ids[a->id], path, sizeof path, &err)
                         : scsictl_unmap(ctl, &r->cb, &ids[a->id], &err);
                int want = a->code == SCSICTL_DONE ? SCSICTL_OK : a->code;
                CHECK_CODE(rc, want);
            } else {
                scsictl_op op;
                rc = tu_drive(ctl, r, a->k == MAP, &ids[a->id], &op, &err);
                CHECK_CODE(rc, a->code);
                if (rc == SCSICTL_DONE && a->k == MAP)
                    snprintf(path, sizeof path, "%s", op.guest_path);
            }
            rec_script(r, NULL, NULL);
            char got[1024];
            rec_format(r, from, got, sizeof got);
            CHECK_STR(got, a->want);
            check_call_paths(rw->guest, r, from);
            if (a->k == MAP && a->path && rc >= 0) CHECK_STR(path, a->path);
            if (rc < 0) CHECK(err.code == rc && err.message[0] != '\0');
            break;
        }
        case STATE:
        case STATE_NP: {
            char st[2048];
            tu_state(ctl, a->k == STATE, st, sizeof st);
            CHECK_STR(st, a->want);
            break;
        }
        case END:
            break;
        }
    }
    tu_test_name = name;
    free(r);
    scsictl_free(ctl);
}

/* The settings and attachment every callback receives. */
static void test_settings(bool blocking)
{
    TEST(blocking ? "settings and attachment [blocking]" : "settings and attachment [steps]");
    scsictl *ctl = tu_new(2, 4, SCSICTL_GUEST_LINUX);
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_disk_config d = tu_disk("/img/x.vhdx");
    d.read_only = true;
    d.type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK;
    d.evd_type = "space";
    static const char *const opts[] = {"noatime", "ro"};
    scsictl_mount_config m = tu_mount(1);
    m.read_only = true;
    m.encrypted = true;
    m.ensure_filesystem = true;
    m.filesystem = "ext4";
    m.block_dev = true;
    m.options = opts;
    m.n_options = 2;
    scsictl_id id;
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 0, NULL, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_OK);
    scsictl_op op;
    if (blocking) {
        char path[64];
        CHECK_CODE(scsictl_map(ctl, &r->cb, &id, path, sizeof path, &err), SCSICTL_OK);
        CHECK_STR(path, "/run/mounts/scsi/0_1_1");
        CHECK_CODE(scsictl_unmap(ctl, &r->cb, &id, &err), SCSICTL_OK);
    } else {
        CHECK_CODE(tu_drive(ctl, r, true, &id, &op, &err), SCSICTL_DONE);
        CHECK_STR(op.guest_path, "/run/mounts/scsi/0_1_1");
        CHECK_CODE(tu_drive(ctl, r, false, &id, &op, &err), SCSICTL_DONE);
    }
    CHECK_EQ(r->n, 5);
    const rec_call *add = &r->calls[0];
    CHECK_EQ(add->kind, SCSICTL_STEP_ADD_SCSI_DISK);
    CHECK_STR(add->host_path, "/img/x.vhdx");
    CHECK(add->disk_read_only);
    CHECK_EQ(add->disk_type, SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK);
    CHECK(add->has_evd_type);
    CHECK_STR(add->evd_type, "space");
    CHECK_EQ(add->controller, 0);
    CHECK_EQ(add->lun, 1);
    for (int i = 1; i <= 2; i++) {
        const rec_call *c = &r->calls[i];
        CHECK_EQ(c->kind, i == 1 ? SCSICTL_STEP_LINUX_MOUNT : SCSICTL_STEP_LINUX_UNMOUNT);
        CHECK_STR(c->guest_path, "/run/mounts/scsi/0_1_1");
        CHECK_EQ(c->controller, 0);
        CHECK_EQ(c->lun, 1);
        CHECK_EQ(c->partition, 1);
        CHECK(c->read_only && c->encrypted && c->ensure_filesystem && c->block_dev);
        CHECK_STR(c->filesystem, "ext4");
        CHECK_EQ(c->n_options, 2);
        CHECK_STR(c->options[0], "noatime");
        CHECK_STR(c->options[1], "ro");
    }
    CHECK_EQ(r->calls[3].kind, SCSICTL_STEP_LINUX_EJECT);
    CHECK_EQ(r->calls[4].kind, SCSICTL_STEP_REMOVE_SCSI_DISK);
    CHECK(r->calls[3].controller == 0 && r->calls[3].lun == 1);
    CHECK(r->calls[4].controller == 0 && r->calls[4].lun == 1);

    /* Defaults: filesystem NULL reads back as "", no options. */
    rec_clear(r);
    scsictl_disk_config d2 = tu_disk("/img/y");
    scsictl_id id2;
    CHECK_CODE(scsictl_reserve(ctl, &d2, NULL, &id2, &err), SCSICTL_OK);
    if (blocking) {
        CHECK_CODE(scsictl_map(ctl, &r->cb, &id2, NULL, 0, &err), SCSICTL_OK);
    } else {
        CHECK_CODE(tu_drive(ctl, r, true, &id2, &op, &err), SCSICTL_DONE);
    }
    CHECK_EQ(r->n, 2);
    CHECK(!r->calls[0].disk_read_only && !r->calls[0].has_evd_type);
    CHECK_EQ(r->calls[0].disk_type, SCSICTL_DISK_VIRTUAL_DISK);
    CHECK_STR(r->calls[1].filesystem, "");
    CHECK_EQ(r->calls[1].n_options, 0);
    CHECK_EQ(r->calls[1].partition, 0);
    CHECK(!r->calls[1].read_only && !r->calls[1].encrypted && !r->calls[1].block_dev &&
          !r->calls[1].ensure_filesystem);
    CHECK_STR(r->calls[1].guest_path, "/run/mounts/scsi/0_1_0");
    free(r);
    scsictl_free(ctl);
}

static void test_windows_settings(void)
{
    TEST("windows settings: container path and lun");
    scsictl *ctl = tu_new(3, 5, SCSICTL_GUEST_WINDOWS);
    scsictl_error err;
    for (int i = 0; i < 7; i++)
        CHECK_CODE(scsictl_reserve_for_rootfs(ctl, (uint64_t)(i / 5), (uint64_t)(i % 5),
                                              NULL, &err), SCSICTL_OK);
    scsictl_id id;
    scsictl_disk_config d = tu_disk("/w");
    scsictl_mount_config m = tu_mount(12);
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_OK);
    scsictl_op op;
    int st = scsictl_op_start_map(ctl, &op, &id, &err);
    CHECK_CODE(st, SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_ADD_SCSI_DISK);
    CHECK_EQ(op.step.controller, 1);
    CHECK_EQ(op.step.lun, 2);
    st = scsictl_op_report(ctl, &op, true, NULL, &err);
    CHECK_CODE(st, SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_WINDOWS_MOUNT);
    scsictl_windows_settings ws;
    scsictl_step_windows_settings(&op.step, &ws);
    CHECK_STR(ws.container_path, "C:\\mounts\\scsi\\1_2_12");
    CHECK_EQ(ws.lun, 2);
    CHECK_STR(op.step.guest_path, "C:\\mounts\\scsi\\1_2_12");
    CHECK(op.step.mount && op.step.mount->partition == 12);
    CHECK(op.step.disk && strcmp(op.step.disk->host_path, "/w") == 0);
    st = scsictl_op_report(ctl, &op, true, NULL, &err);
    CHECK_CODE(st, SCSICTL_DONE);
    CHECK_STR(op.guest_path, "C:\\mounts\\scsi\\1_2_12");
    scsictl_free(ctl);
}

static void test_linux_steps(void)
{
    TEST("linux steps: fields of the step struct");
    scsictl *ctl = tu_new(2, 3, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id a, b, c, dd;
    CHECK_CODE(tu_reserve(ctl, "/1", 0, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/2", 0, &b), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/3", 0, &c), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/4", 7, &dd), SCSICTL_OK);
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &dd, &err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_ADD_SCSI_DISK);
    CHECK(op.step.controller == 1 && op.step.lun == 0);
    CHECK(op.step.disk && strcmp(op.step.disk->host_path, "/4") == 0);
    CHECK(op.step.mount == NULL && op.step.guest_path == NULL);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_MOUNT);
    CHECK(op.step.controller == 1 && op.step.lun == 0);
    CHECK(op.step.mount && op.step.mount->partition == 7);
    CHECK(op.step.guest_path && strcmp(op.step.guest_path, "/run/mounts/scsi/1_0_7") == 0);
    scsictl_linux_settings ls;
    scsictl_step_linux_settings(&op.step, &ls);
    CHECK_STR(ls.mount_path, "/run/mounts/scsi/1_0_7");
    CHECK(ls.controller == 1 && ls.lun == 0 && ls.partition == 7);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_STR(op.guest_path, "/run/mounts/scsi/1_0_7");
    /* unmap: unmount, eject, remove with the same slot */
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &dd, &err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_UNMOUNT);
    CHECK(op.step.guest_path && strcmp(op.step.guest_path, "/run/mounts/scsi/1_0_7") == 0);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_EJECT);
    CHECK(op.step.controller == 1 && op.step.lun == 0);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_REMOVE_SCSI_DISK);
    CHECK(op.step.controller == 1 && op.step.lun == 0);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_STATE(ctl, "0:0 /1 reserved r1 [0 reserved 1]; 0:1 /2 reserved r1 [0 reserved 1]; "
                     "0:2 /3 reserved r1 [0 reserved 1]");
    scsictl_free(ctl);
}

static void test_names_and_paths(void)
{
    TEST("names and guest paths");
    char buf[SCSICTL_GUEST_PATH_MAX];
    CHECK_EQ(scsictl_guest_path(SCSICTL_GUEST_LINUX, 3, 17, 2, buf, sizeof buf),
             (int)strlen("/run/mounts/scsi/3_17_2"));
    CHECK_STR(buf, "/run/mounts/scsi/3_17_2");
    CHECK_EQ(scsictl_guest_path(SCSICTL_GUEST_WINDOWS, 1023, 16383, 9, buf, sizeof buf),
             (int)strlen("C:\\mounts\\scsi\\1023_16383_9"));
    CHECK_STR(buf, "C:\\mounts\\scsi\\1023_16383_9");
    /* every width the number formatting handles, against printf */
    static const uint64_t parts[] = { 0, 9, 10, 99, 100, 999, 1000, 9999, 10000, 99999,
                                      123456789, 9223372036854775807ull };
    int wrong = 0;
    for (uint32_t c = 0; c < 1024; c++) {
        uint32_t lun = c * 16 + c % 16; /* 0 .. 16383 */
        uint64_t part = parts[c % (sizeof parts / sizeof parts[0])];
        char want[SCSICTL_GUEST_PATH_MAX];
        snprintf(want, sizeof want, "/run/mounts/scsi/%u_%u_%llu", (unsigned)c, (unsigned)lun,
                 (unsigned long long)part);
        if (scsictl_guest_path(SCSICTL_GUEST_LINUX, c, lun, part, buf, sizeof buf) !=
                (int)strlen(want) ||
            strcmp(buf, want) != 0)
            wrong++;
    }
    CHECK_EQ(wrong, 0);
    CHECK(scsictl_guest_path(SCSICTL_GUEST_LINUX, 0, 0, 0, buf, 5) == -1);
    CHECK_EQ(scsictl_guest_path(SCSICTL_GUEST_LINUX, 0, 0, 0, buf, 23), 22);
    CHECK(scsictl_guest_path(SCSICTL_GUEST_LINUX, 0, 0, 0, buf, 22) == -1);
    CHECK_STR(scsictl_disk_state_name(SCSICTL_DISK_RESERVED), "reserved");
    CHECK_STR(scsictl_disk_state_name(SCSICTL_DISK_ATTACHED), "attached");
    CHECK_STR(scsictl_disk_state_name(SCSICTL_DISK_EJECTED), "ejected");
    CHECK_STR(scsictl_mount_state_name(SCSICTL_MOUNT_RESERVED), "reserved");
    CHECK_STR(scsictl_mount_state_name(SCSICTL_MOUNT_MOUNTED), "mounted");
    static const char *const names[] = {
        "add_scsi_disk", "remove_scsi_disk", "add_mapped_virtual_disk",
        "remove_mapped_virtual_disk", "remove_scsi_device", "add_mapped_virtual_disk",
        "add_mapped_virtual_disk_for_container_scratch", "remove_mapped_virtual_disk"};
    static const char *const backends[] = {
        "vm", "vm", "linux_guest", "linux_guest", "linux_guest",
        "windows_guest", "windows_guest", "windows_guest"};
    for (int k = 0; k < SCSICTL_STEP_KIND_COUNT; k++) {
        CHECK_STR(scsictl_step_name((scsictl_step_kind)k), names[k]);
        CHECK_STR(scsictl_step_backend((scsictl_step_kind)k), backends[k]);
    }
    CHECK(scsictl_step_name(SCSICTL_STEP_KIND_COUNT) == NULL);
    CHECK(scsictl_step_backend(SCSICTL_STEP_KIND_COUNT) == NULL);
    CHECK_STR(scsictl_disk_type_name(SCSICTL_DISK_VIRTUAL_DISK), "VirtualDisk");
    CHECK_STR(scsictl_disk_type_name(SCSICTL_DISK_PASSTHRU), "PassThru");
    CHECK_STR(scsictl_disk_type_name(SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK),
              "ExtensibleVirtualDisk");
    CHECK(scsictl_disk_type_name((scsictl_disk_type)3) == NULL);
    static const struct { int code; const char *name; } codes[] = {
        {SCSICTL_STEP, "step"}, {SCSICTL_DONE, "done"}, {SCSICTL_OK, "ok"},
        {SCSICTL_E_NOT_FOUND, "not_found"}, {SCSICTL_E_NO_SLOTS, "no_slots"},
        {SCSICTL_E_CONFIG_MISMATCH, "config_mismatch"}, {SCSICTL_E_SLOT_TAKEN, "slot_taken"},
        {SCSICTL_E_OUT_OF_RANGE, "out_of_range"}, {SCSICTL_E_BUSY, "busy"},
        {SCSICTL_E_BACKEND, "backend"}, {SCSICTL_E_CLOSED, "closed"},
        {SCSICTL_E_INVALID_SNAPSHOT, "invalid_snapshot"},
        {SCSICTL_E_INVALID_ARGUMENT, "invalid_argument"}, {SCSICTL_E_NO_MEMORY, "no_memory"},
        {SCSICTL_E_IO, "io"}, {SCSICTL_PERSIST, "persist"}, {-13, "unknown"},
        {4, "unknown"},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK_STR(scsictl_code_name(codes[i].code), codes[i].name);
}

/* P9 on a large geometry: the lowest free, unpinned slot, across words
 * and controllers. */
static void test_large_geometry(void)
{
    TEST("lowest free slot on a 1024x1024 geometry");
    scsictl *ctl = tu_new(1024, 1024, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    enum { N = 3000 };
    static scsictl_id ids[N];
    /* pins at a few places, including the whole of controller 1 */
    for (uint64_t l = 0; l < 1024; l++)
        CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, l, NULL, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 63, NULL, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 64, NULL, &err), SCSICTL_OK);
    uint32_t expect = 0;
    int bad = 0;
    for (int i = 0; i < N; i++) {
        while (expect == 63 || expect == 64 || (expect >= 1024 && expect < 2048)) expect++;
        char p[32];
        snprintf(p, sizeof p, "/big/%d", i);
        if (tu_reserve(ctl, p, 0, &ids[i]) != SCSICTL_OK) { bad++; continue; }
        scsictl_reservation_info *ri = NULL;
        if (scsictl_get_reservation(ctl, &ids[i], &ri, &err) == SCSICTL_OK) {
            if (ri->controller * 1024u + ri->lun != expect && bad++ < 5)
                tu_check(false, __FILE__, __LINE__, "disk %d at %u:%u, want slot %u", i,
                         ri->controller, ri->lun, expect);
            scsictl_info_free(ctl, ri);
        }
        expect++;
    }
    CHECK_EQ(bad, 0);
    /* free a few and take them back in order */
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &ids[2500], &err), SCSICTL_DONE);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &ids[7], &err), SCSICTL_DONE);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &ids[1500], &err), SCSICTL_DONE);
    static const uint32_t want[] = {7, 1500 + 2 + 1024, 2500 + 2 + 1024, 3000 + 2 + 1024};
    for (int i = 0; i < 4; i++) {
        scsictl_id id;
        char p[32];
        snprintf(p, sizeof p, "/again/%d", i);
        CHECK_CODE(tu_reserve(ctl, p, 0, &id), SCSICTL_OK);
        scsictl_reservation_info *ri = NULL;
        if (scsictl_get_reservation(ctl, &id, &ri, &err) == SCSICTL_OK) {
            tu_check(ri->controller * 1024u + ri->lun == want[i], __FILE__, __LINE__,
                     "re-used slot %u:%u, want %u", ri->controller, ri->lun, want[i]);
            scsictl_info_free(ctl, ri);
        }
    }
    scsictl_stats s;
    scsictl_get_stats(ctl, &s);
    CHECK_EQ(s.used, N + 1 + 1026);
    CHECK_EQ(s.pinned, 1026);
    CHECK_EQ(s.disks, N + 1);
    CHECK_EQ(s.slots, 1u << 20);
    scsictl_free(ctl);
}

/* Step data stays valid and unchanged until reported, while the
 * controller grows and changes around it. */
static void test_step_stability(void)
{
    TEST("step data stays valid while other operations run");
    scsictl *ctl = tu_new(16, 64, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    char path[32] = "/stable";
    static const char *const o[] = {"a", "b"};
    char fs[8] = "xfs";
    scsictl_disk_config d = tu_disk(path);
    d.evd_type = "e";
    scsictl_mount_config m = tu_mount(2);
    m.options = o;
    m.n_options = 2;
    m.filesystem = fs;
    scsictl_id id;
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_OK);
    memset(path, 'X', sizeof path - 1); /* the core copied what it keeps */
    memset(fs, 'Y', sizeof fs - 1);
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &id, &err), SCSICTL_STEP);
    const scsictl_disk_config *sd = op.step.disk;
    scsictl_id many[600];
    for (int i = 0; i < 600; i++) {
        char p[32];
        snprintf(p, sizeof p, "/other/%d", i % 300);
        CHECK_CODE(tu_reserve(ctl, p, (uint64_t)(i / 300), &many[i]), SCSICTL_OK);
    }
    for (int i = 0; i < 600; i += 3) {
        scsictl_op o2;
        CHECK_CODE(scsictl_op_start_unmap(ctl, &o2, &many[i], &err), SCSICTL_DONE);
    }
    CHECK(op.step.disk == sd);
    CHECK(sd && strcmp(sd->host_path, "/stable") == 0 && sd->evd_type &&
          strcmp(sd->evd_type, "e") == 0);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    const scsictl_mount_config *sm = op.step.mount;
    for (int i = 1; i < 600; i += 3) {
        scsictl_op o2;
        CHECK_CODE(scsictl_op_start_unmap(ctl, &o2, &many[i], &err), SCSICTL_DONE);
    }
    CHECK(sm && sm->partition == 2 && sm->n_options == 2 && strcmp(sm->options[0], "a") == 0 &&
          strcmp(sm->options[1], "b") == 0 && sm->filesystem && strcmp(sm->filesystem, "xfs") == 0);
    CHECK(op.step.disk && strcmp(op.step.disk->host_path, "/stable") == 0);
    CHECK(op.step.guest_path && strcmp(op.step.guest_path, "/run/mounts/scsi/0_0_2") == 0);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_STR(op.guest_path, "/run/mounts/scsi/0_0_2");
    scsictl_free(ctl);
}

int main(void)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        run_row(&rows[i], false);
        run_row(&rows[i], true);
    }
    test_settings(false);
    test_settings(true);
    test_windows_settings();
    test_linux_steps();
    test_names_and_paths();
    test_large_geometry();
    test_step_stability();
    return tu_finish();
}
