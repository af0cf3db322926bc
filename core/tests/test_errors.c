/*
 * test_errors.c — every error code of the C API is reached, nothing changes
 * when an error is returned, and messages carry context.
 *
 * not_found, no_slots, config_mismatch, slot_taken, out_of_range, busy,
 * backend, closed, invalid_argument and the id parser. no_memory is
 * test_alloc.c's job.
 */
#include "test_util.h"

#include <ctype.h>

#define SNAP(ctl, buf) char buf[4096]; tu_snapshot((ctl), buf, sizeof buf)
#define CHECK_UNCHANGED(ctl, before)                                         \
    do {                                                                     \
        char tu_after_[4096];                                                \
        tu_snapshot((ctl), tu_after_, sizeof tu_after_);                        \
        CHECK_STR(tu_after_, (before));                                      \
    } while (0)

static void check_err(const scsictl_error *err, int code)
{
    CHECK_CODE(err->code, code);
    CHECK(err->message[0] != '\0');
    CHECK(memchr(err->message, '\0', sizeof err->message) != NULL);
}

/* A reserve of path with no mount config is refused with code, with a
 * proper error in *err. */
static void check_reserve_refused(scsictl *ctl, const char *path, int code, scsictl_error *err)
{
    scsictl_disk_config d = tu_disk(path);
    scsictl_id id;
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &id, err), code);
    check_err(err, code);
}

/* Both op starts on id are refused with code. */
static void check_starts_refused(scsictl *ctl, const scsictl_id *id, int code, scsictl_error *err)
{
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, id, err), code);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, id, err), code);
}

/* ------------------------------------------------------------------------ */

static void test_not_found(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_op op;
    scsictl_id unk = tu_unknown_id(1), id;
    char ids[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&unk, ids);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &id), SCSICTL_OK);
    SNAP(ctl, before);

    CHECK_CODE(scsictl_op_start_map(ctl, &op, &unk, err), SCSICTL_E_NOT_FOUND);
    check_err(err, SCSICTL_E_NOT_FOUND);
    CHECK_CONTAINS(err->message, ids);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &unk, err), SCSICTL_E_NOT_FOUND);
    check_err(err, SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &unk, NULL, 0, err), SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &unk, err), SCSICTL_E_NOT_FOUND);
    scsictl_reservation_info *ri = NULL;
    CHECK_CODE(scsictl_get_reservation(ctl, &unk, &ri, err), SCSICTL_E_NOT_FOUND);
    CHECK(ri == NULL);
    CHECK_EQ(r->n, 0);
    CHECK_UNCHANGED(ctl, before);

    /* the real id works, then is gone */
    CHECK_CODE(scsictl_get_reservation(ctl, &id, &ri, err), SCSICTL_OK);
    if (ri) {
        CHECK(memcmp(ri->id.bytes, id.bytes, 16) == 0);
        CHECK_STR(ri->host_path, "/a");
        CHECK(ri->controller == 0 && ri->lun == 0 && ri->partition == 0 && !ri->release_pending);
        scsictl_info_free(ctl, ri);
    }
    CHECK_CODE(scsictl_map(ctl, &r->cb, &id, NULL, 0, err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &id, err), SCSICTL_OK);
    size_t calls = r->n;
    CHECK_EQ(calls, 5);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &id, err), SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &id, NULL, 0, err), SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &id, err), SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_get_reservation(ctl, &id, &ri, err), SCSICTL_E_NOT_FOUND);
    CHECK_EQ(r->n, calls);
    CHECK_STATE(ctl, "");
}

static void test_no_slots(void)
{
    TEST("no_slots: every slot taken, zero controllers, all pinned");
    scsictl *ctl = tu_new(1, 2, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id a, b, c;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_OK);
    SNAP(ctl, before);
    scsictl_disk_config d = tu_disk("/c-third");
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &c, &err), SCSICTL_E_NO_SLOTS);
    check_err(&err, SCSICTL_E_NO_SLOTS);
    CHECK_CONTAINS(err.message, "/c-third");
    CHECK_UNCHANGED(ctl, before);
    /* the same disk still fits: it shares its slot */
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &c), SCSICTL_OK);
    scsictl_free(ctl);

    ctl = tu_new(0, 0, SCSICTL_GUEST_LINUX);
    scsictl_stats s;
    scsictl_get_stats(ctl, &s);
    CHECK(s.controllers == 0 && s.slots == 0 && s.free == 0 && s.luns_per_controller == 64);
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &c, &err), SCSICTL_E_NO_SLOTS);
    check_err(&err, SCSICTL_E_NO_SLOTS);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 0, NULL, &err), SCSICTL_E_OUT_OF_RANGE);
    CHECK_STATE(ctl, "");
    scsictl_free(ctl);

    ctl = tu_new(1, 2, SCSICTL_GUEST_WINDOWS);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 0, NULL, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 1, NULL, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &c, &err), SCSICTL_E_NO_SLOTS);
    CHECK_STATE(ctl, "0:0P; 0:1P");
    scsictl_free(ctl);
}

static void test_config_mismatch(void)
{
    TEST("config_mismatch: disk and mount configs");
    scsictl *ctl = tu_new(1, 8, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id id, x;
    static const char *const opts[] = {"a", "b"};
    static const char *const opts_rev[] = {"b", "a"};
    static const char *const opts3[] = {"a", "b", "c"};
    scsictl_disk_config d = tu_disk("/img/m.vhdx");
    d.evd_type = NULL;
    scsictl_mount_config m = tu_mount(3);
    m.filesystem = "ext4";
    m.options = opts;
    m.n_options = 2;
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_OK);
    SNAP(ctl, before);

    scsictl_disk_config dv[5];
    for (int i = 0; i < 5; i++) dv[i] = d;
    dv[0].read_only = true;
    dv[1].type = SCSICTL_DISK_PASSTHRU;
    dv[2].evd_type = "";
    dv[3].evd_type = "x";
    dv[4].type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK;
    for (int i = 0; i < 5; i++) {
        memset(&err, 0, sizeof err);
        CHECK_CODE(scsictl_reserve(ctl, &dv[i], &m, &x, &err), SCSICTL_E_CONFIG_MISMATCH);
        check_err(&err, SCSICTL_E_CONFIG_MISMATCH);
        CHECK_CONTAINS(err.message, "/img/m.vhdx");
        /* another partition does not help: the disk itself differs */
        scsictl_mount_config other = tu_mount(4);
        CHECK_CODE(scsictl_reserve(ctl, &dv[i], &other, &x, &err), SCSICTL_E_CONFIG_MISMATCH);
    }
    scsictl_mount_config mv[10];
    for (int i = 0; i < 10; i++) mv[i] = m;
    mv[0].read_only = true;
    mv[1].encrypted = true;
    mv[2].ensure_filesystem = true;
    mv[3].block_dev = true;
    mv[4].format_with_refs = true;
    mv[5].filesystem = "xfs";
    mv[6].options = opts_rev;
    mv[7].options = opts3;
    mv[7].n_options = 3;
    mv[8].n_options = 1;
    mv[9].filesystem = NULL;
    for (int i = 0; i < 10; i++) {
        memset(&err, 0, sizeof err);
        CHECK_CODE(scsictl_reserve(ctl, &d, &mv[i], &x, &err), SCSICTL_E_CONFIG_MISMATCH);
        check_err(&err, SCSICTL_E_CONFIG_MISMATCH);
        CHECK_CONTAINS(err.message, "/img/m.vhdx");
    }
    CHECK_UNCHANGED(ctl, before);

    /* equal configs (fresh copies of the strings) share */
    char fs[8] = "ext4", o1[4] = "a", o2[4] = "b", path[32] = "/img/m.vhdx";
    const char *opts_copy[2] = {o1, o2};
    scsictl_disk_config d2 = tu_disk(path);
    scsictl_mount_config m2 = tu_mount(3);
    m2.filesystem = fs;
    m2.options = opts_copy;
    m2.n_options = 2;
    CHECK_CODE(scsictl_reserve(ctl, &d2, &m2, &x, &err), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0 /img/m.vhdx reserved r2 [3 reserved 2]");

    /* filesystem NULL means "": equal to "" */
    scsictl_mount_config z1 = tu_mount(5), z2 = tu_mount(5);
    z1.filesystem = NULL;
    z2.filesystem = "";
    CHECK_CODE(scsictl_reserve(ctl, &d, &z1, &x, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &d, &z2, &x, &err), SCSICTL_OK);
    /* evd_type "" vs "x", both set */
    scsictl_disk_config e1 = tu_disk("/evd"), e2 = tu_disk("/evd");
    e1.type = e2.type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK;
    e1.evd_type = "";
    e2.evd_type = "x";
    CHECK_CODE(scsictl_reserve(ctl, &e1, NULL, &x, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &e2, NULL, &x, &err), SCSICTL_E_CONFIG_MISMATCH);
    e2.evd_type = NULL;
    CHECK_CODE(scsictl_reserve(ctl, &e2, NULL, &x, &err), SCSICTL_E_CONFIG_MISMATCH);
    e2.evd_type = "";
    CHECK_CODE(scsictl_reserve(ctl, &e2, NULL, &x, &err), SCSICTL_OK);

    /* mount NULL means every default: equal to a zeroed config */
    scsictl_disk_config nd = tu_disk("/null-mount");
    scsictl_mount_config zero;
    memset(&zero, 0, sizeof zero);
    CHECK_CODE(scsictl_reserve(ctl, &nd, NULL, &x, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &nd, &zero, &x, &err), SCSICTL_OK);
    zero.filesystem = "";
    CHECK_CODE(scsictl_reserve(ctl, &nd, &zero, &x, &err), SCSICTL_OK);

    /* a pinned path remembers its config */
    scsictl_disk_config p = tu_disk("/root.img");
    p.read_only = true;
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 7, &p, &err), SCSICTL_OK);
    scsictl_disk_config p2 = tu_disk("/root.img");
    CHECK_CODE(scsictl_reserve(ctl, &p2, NULL, &x, &err), SCSICTL_E_CONFIG_MISMATCH);
    CHECK_CONTAINS(err.message, "/root.img");
    p2.read_only = true;
    CHECK_CODE(scsictl_reserve(ctl, &p2, NULL, &x, &err), SCSICTL_OK);
    scsictl_reservation_info *ri = NULL;
    CHECK_CODE(scsictl_get_reservation(ctl, &x, &ri, &err), SCSICTL_OK);
    if (ri) {
        CHECK(ri->controller == 0 && ri->lun == 7);
        scsictl_info_free(ctl, ri);
    }
    /* ... also after its disk is gone */
    scsictl_op uop;
    CHECK_CODE(scsictl_op_start_unmap(ctl, &uop, &x, &err), SCSICTL_DONE);
    p2.read_only = false;
    CHECK_CODE(scsictl_reserve(ctl, &p2, NULL, &x, &err), SCSICTL_E_CONFIG_MISMATCH);
    p2.read_only = true;
    CHECK_CODE(scsictl_reserve(ctl, &p2, NULL, &x, &err), SCSICTL_OK);
    scsictl_free(ctl);

    TEST("config_mismatch: configs are forgotten with their last claim");
    ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    scsictl_id keep, p0;
    scsictl_disk_config a = tu_disk("/a");
    scsictl_mount_config ro = tu_mount(0);
    ro.read_only = true;
    CHECK_CODE(scsictl_reserve(ctl, &a, NULL, &keep, &err), SCSICTL_OK); /* p0 default */
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &p0), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve(ctl, &a, &ro, &x, &err), SCSICTL_E_CONFIG_MISMATCH);
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &keep, &err), SCSICTL_DONE);
    CHECK_CODE(scsictl_reserve(ctl, &a, &ro, &x, &err), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0 /a reserved r2 [0 reserved 1] [1 reserved 1]");
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &x, &err), SCSICTL_DONE);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &p0, &err), SCSICTL_DONE);
    CHECK_STATE(ctl, "");
    a.read_only = true;
    CHECK_CODE(scsictl_reserve(ctl, &a, NULL, &x, &err), SCSICTL_OK);
    scsictl_free(ctl);
}

static void test_slot_taken(void)
{
    TEST("slot_taken: used, pinned, path pinned or placed elsewhere");
    scsictl *ctl = tu_new(2, 4, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id a;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK); /* 0:0 */
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 2, NULL, &err), SCSICTL_OK);
    scsictl_disk_config r = tu_disk("/rootfs");
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 1, &r, &err), SCSICTL_OK);
    SNAP(ctl, before);

    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 0, NULL, &err), SCSICTL_E_SLOT_TAKEN);
    check_err(&err, SCSICTL_E_SLOT_TAKEN);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 2, NULL, &err), SCSICTL_E_SLOT_TAKEN);
    check_err(&err, SCSICTL_E_SLOT_TAKEN);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 1, NULL, &err), SCSICTL_E_SLOT_TAKEN);
    /* path already pinned at 1:1 */
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 3, &r, &err), SCSICTL_E_SLOT_TAKEN);
    check_err(&err, SCSICTL_E_SLOT_TAKEN);
    /* path already placed at 0:0 */
    scsictl_disk_config da = tu_disk("/a");
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 3, &da, &err), SCSICTL_E_SLOT_TAKEN);
    check_err(&err, SCSICTL_E_SLOT_TAKEN);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 0, &da, &err), SCSICTL_E_SLOT_TAKEN);
    CHECK_UNCHANGED(ctl, before);
    CHECK_STATE(ctl, "0:0 /a reserved r1 [0 reserved 1]; 0:2P; 1:1P");
    scsictl_free(ctl);
}

static void test_out_of_range(void)
{
    TEST("out_of_range: rootfs pins outside the geometry");
    scsictl *ctl = tu_new(2, 3, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    SNAP(ctl, before);
    static const uint64_t bad[][2] = {
        {2, 0}, {0, 3}, {1, 3}, {2, 3}, {UINT64_MAX, 0}, {0, UINT64_MAX},
        {UINT64_MAX, UINT64_MAX}, {1ull << 32, 0}, {0, 1ull << 32}, {0, (1ull << 32) + 1},
        {(uint64_t)INT64_MAX + 1, 0}, {0, 6}, {1024, 0}, {0, 16384},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        CHECK_CODE(scsictl_reserve_for_rootfs(ctl, bad[i][0], bad[i][1], NULL, &err),
                   SCSICTL_E_OUT_OF_RANGE);
        check_err(&err, SCSICTL_E_OUT_OF_RANGE);
        scsictl_disk_config d = tu_disk("/r");
        CHECK_CODE(scsictl_reserve_for_rootfs(ctl, bad[i][0], bad[i][1], &d, &err),
                   SCSICTL_E_OUT_OF_RANGE);
    }
    CHECK_UNCHANGED(ctl, before);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 2, NULL, &err), SCSICTL_OK);
    CHECK_STATE(ctl, "1:2P");
    scsictl_free(ctl);
}

/* A hook that calls back into the controller from inside a callback. */
typedef struct reentry {
    scsictl *ctl;
    int seen;
    int busy_same, ok_other, stats_busy, busy_map, busy_unmap, busy_close;
    scsictl_id other, sibling;
} reentry;

static void reenter_hook(rec_backend *r, const rec_call *c)
{
    reentry *re = r->hook_data;
    if (c->kind != SCSICTL_STEP_ADD_SCSI_DISK || re->seen++) return;
    scsictl_error err;
    scsictl_id x;
    scsictl_stats s;
    scsictl_get_stats(re->ctl, &s);
    re->stats_busy = s.busy;
    re->busy_same = tu_reserve(re->ctl, "/a", 0, &x) == SCSICTL_E_BUSY;
    re->ok_other = tu_reserve(re->ctl, "/z", 0, &re->other) == SCSICTL_OK;
    scsictl_op op;
    re->busy_map = scsictl_op_start_map(re->ctl, &op, &re->sibling, &err) == SCSICTL_E_BUSY;
    re->busy_unmap = scsictl_op_start_unmap(re->ctl, &op, &re->sibling, &err) == SCSICTL_E_BUSY;
    re->busy_close = scsictl_close(re->ctl, &err) == SCSICTL_E_BUSY;
    scsictl_slot_info *si = NULL;
    size_t n = 0;
    if (scsictl_list_slots(re->ctl, &si, &n, &err) == SCSICTL_OK) {
        re->stats_busy += (n >= 1 && si[0].busy) ? 10 : 0;
        scsictl_info_free(re->ctl, si);
    }
}

static void test_busy_in_flight(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a0, a1, b, c;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a0), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &a1), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_OK);
    scsictl_op op, op2;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a0, err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_ADD_SCSI_DISK);
    SNAP(ctl, before);
    CHECK_CONTAINS(before, "0:0B /a reserved r2");
    CHECK_CONTAINS(before, " busy");

    CHECK_CODE(tu_reserve(ctl, "/a", 0, &c), SCSICTL_E_BUSY);
    check_reserve_refused(ctl, "/a", SCSICTL_E_BUSY, err);
    CHECK_CONTAINS(err->message, "/a");
    CHECK_CODE(tu_reserve(ctl, "/a", 2, &c), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_start_map(ctl, &op2, &a1, err), SCSICTL_E_BUSY);
    check_err(err, SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op2, &a1, err), SCSICTL_E_BUSY);
    check_starts_refused(ctl, &a0, SCSICTL_E_BUSY, err);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a1, NULL, 0, err), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a1, err), SCSICTL_E_BUSY);
    /* rootfs pins never say busy */
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 0, NULL, err), SCSICTL_E_SLOT_TAKEN);
    /* close refuses while a step is in flight, and changes nothing */
    CHECK_CODE(scsictl_close(ctl, err), SCSICTL_E_BUSY);
    check_err(err, SCSICTL_E_BUSY);
    CHECK_EQ(r->n, 0);
    CHECK_UNCHANGED(ctl, before);

    /* other disks proceed */
    char path[64];
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_1_0");
    CHECK_CODE(tu_reserve(ctl, "/c", 0, &c), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &c, err), SCSICTL_OK);

    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_MOUNT);
    CHECK_CODE(scsictl_op_start_map(ctl, &op2, &a1, err), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, err), SCSICTL_DONE);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a1, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_0_1");
    CHECK_STATE(ctl, "0:0 /a attached r2 [0 mounted 1] [1 mounted 1]; "
                     "0:1 /b attached r1 [0 mounted 1]");

    /* busy during an unmap step as well */
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &b, err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_UNMOUNT);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &c), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_close(ctl, err), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_EJECT);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &c), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_REMOVE_SCSI_DISK);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, err), SCSICTL_DONE);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &c), SCSICTL_OK);
    scsictl_stats s;
    scsictl_get_stats(ctl, &s);
    CHECK(!s.busy);
}

static void test_busy_pending(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a0, c;
    scsictl_op op;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a0), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a0, NULL, 0, err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_UNMOUNT, 1, "device busy");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a0, err), SCSICTL_E_BACKEND);
    scsictl_reservation_info *ri = NULL;
    CHECK_CODE(scsictl_get_reservation(ctl, &a0, &ri, err), SCSICTL_OK);
    CHECK(ri && ri->release_pending);
    scsictl_info_free(ctl, ri);
    size_t calls = r->n;
    memset(err, 0, sizeof *err);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a0, NULL, 0, err), SCSICTL_E_BUSY);
    check_err(err, SCSICTL_E_BUSY);
    CHECK_CONTAINS(err->message, "release");
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a0, err), SCSICTL_E_BUSY);
    CHECK_EQ(r->n, calls);
    /* eject fails: the disk is being torn down, reserve of it is busy */
    rec_fail_next(r, SCSICTL_STEP_LINUX_EJECT, 1, "eject refused");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a0, err), SCSICTL_E_BACKEND);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &c), SCSICTL_E_BUSY);
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &c), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a0, NULL, 0, err), SCSICTL_E_BUSY);
    CHECK_CODE(tu_reserve(ctl, "/other", 0, &c), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a0, err), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &c), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0 /a reserved r1 [0 reserved 1]; 0:1 /other reserved r1 [0 reserved 1]");
}

static void test_busy_reentry(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a0;
    reentry re;
    memset(&re, 0, sizeof re);
    re.ctl = ctl;
    r->hook = reenter_hook;
    r->hook_data = &re;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a0), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &re.sibling), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a0, NULL, 0, err), SCSICTL_OK);
    CHECK_EQ(re.seen, 1);
    CHECK(re.busy_same);
    CHECK(re.ok_other);
    CHECK(re.busy_map);
    CHECK(re.busy_unmap);
    CHECK(re.busy_close);
    CHECK_EQ(re.stats_busy, 11);
    CHECK_STATE(ctl, "0:0 /a attached r2 [0 mounted 1] [1 reserved 1]; "
                     "0:1 /z reserved r1 [0 reserved 1]");
    scsictl_stats st2;
    scsictl_get_stats(ctl, &st2);
    CHECK(!st2.closed);
}

/* A step that fails during a map or an unmap: the call says BACKEND and
 * its message names each of has[]. */
typedef struct step_failure {
    bool map;
    scsictl_step_kind kind;
    const char *msg;
    const char *has[6];
} step_failure;

static void check_step_failure(scsictl *ctl, rec_backend *r, const scsictl_id *id,
                               const step_failure *f, scsictl_error *err)
{
    rec_fail_next(r, f->kind, 1, f->msg);
    CHECK_CODE(f->map ? scsictl_map(ctl, &r->cb, id, NULL, 0, err)
                      : scsictl_unmap(ctl, &r->cb, id, err),
               SCSICTL_E_BACKEND);
    for (size_t i = 0; i < sizeof f->has / sizeof f->has[0] && f->has[i]; i++)
        CHECK_CONTAINS(err->message, f->has[i]);
}

static void test_backend(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id x, a;
    CHECK_CODE(tu_reserve(ctl, "/x", 0, &x), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/img/a.vhdx", 2, &a), SCSICTL_OK); /* 0:1 */

    static const step_failure fails[] = {
        { true, SCSICTL_STEP_ADD_SCSI_DISK, "disk offline",
          { "map_to_guest", "add_scsi_disk", "/img/a.vhdx", "controller 0", "lun 1",
            "disk offline" } },
        { true, SCSICTL_STEP_LINUX_MOUNT, "bad superblock",
          { "add_mapped_virtual_disk", "/img/a.vhdx", "lun 1", "partition 2", "bad superblock" } },
        /* then mapped: the release's steps fail */
        { false, SCSICTL_STEP_LINUX_UNMOUNT, "target is busy",
          { "unmap_from_guest", "remove_mapped_virtual_disk", "/img/a.vhdx", "target is busy" } },
        { false, SCSICTL_STEP_LINUX_EJECT, "eject-msg",
          { "remove_scsi_device", "eject-msg", "/img/a.vhdx" } },
        { false, SCSICTL_STEP_REMOVE_SCSI_DISK, "remove-msg",
          { "remove_scsi_disk", "remove-msg", "controller 0", "lun 1" } },
    };
    memset(err, 0, sizeof *err);
    check_step_failure(ctl, r, &a, &fails[0], err);
    check_err(err, SCSICTL_E_BACKEND);
    check_step_failure(ctl, r, &a, &fails[1], err);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, err), SCSICTL_OK);
    for (size_t i = 2; i < sizeof fails / sizeof fails[0]; i++)
        check_step_failure(ctl, r, &a, &fails[i], err);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);

    /* step interface: failure with no message still says what failed */
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &x, err), SCSICTL_STEP);
    memset(err, 0, sizeof *err);
    CHECK_CODE(scsictl_op_report(ctl, &op, false, NULL, err), SCSICTL_E_BACKEND);
    check_err(err, SCSICTL_E_BACKEND);
    CHECK_CONTAINS(err->message, "add_scsi_disk");
    CHECK_CONTAINS(err->message, "/x");

    /* blocking driver: a needed callback that is NULL fails its step */
    scsictl_callbacks cb = r->cb;
    cb.add_scsi_disk = NULL;
    CHECK_CODE(scsictl_map(ctl, &cb, &x, NULL, 0, err), SCSICTL_E_BACKEND);
    CHECK_CONTAINS(err->message, "add_scsi_disk");
    CHECK_STATE(ctl, "0:0 /x reserved r1 [0 reserved 1]");
    /* Windows callbacks are not needed by a Linux guest */
    cb = r->cb;
    cb.windows_mount = NULL;
    cb.windows_mount_scratch = NULL;
    cb.windows_unmount = NULL;
    CHECK_CODE(scsictl_map(ctl, &cb, &x, NULL, 0, err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &cb, &x, err), SCSICTL_OK);
    CHECK_STATE(ctl, "");
}

static void test_closed(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a, b, c;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/b", 1, &b), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 3, NULL, err), SCSICTL_OK);
    size_t calls = r->n;
    CHECK_CODE(scsictl_close(ctl, err), SCSICTL_OK);
    SNAP(ctl, before);
    CHECK_CONTAINS(before, " closed");
    CHECK_CONTAINS(before, "0:0 /a attached r1 [0 mounted 1]; 0:1 /b reserved r1 [1 reserved 1]; 0:3P");

    scsictl_op op;
    memset(err, 0, sizeof *err);
    CHECK_CODE(tu_reserve(ctl, "/c", 0, &c), SCSICTL_E_CLOSED);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &c), SCSICTL_E_CLOSED);
    check_reserve_refused(ctl, "/c", SCSICTL_E_CLOSED, err);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 2, NULL, err), SCSICTL_E_CLOSED);
    check_err(err, SCSICTL_E_CLOSED);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &b, err), SCSICTL_E_CLOSED);
    check_starts_refused(ctl, &a, SCSICTL_E_CLOSED, err);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, NULL, 0, err), SCSICTL_E_CLOSED);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_E_CLOSED);
    check_err(err, SCSICTL_E_CLOSED);
    CHECK_EQ(r->n, calls);
    CHECK_CODE(scsictl_close(ctl, err), SCSICTL_OK);
    CHECK_CODE(scsictl_close(ctl, NULL), SCSICTL_OK);
    scsictl_reservation_info *ri = NULL;
    CHECK_CODE(scsictl_get_reservation(ctl, &b, &ri, err), SCSICTL_OK);
    CHECK(ri && ri->partition == 1 && ri->lun == 1 && strcmp(ri->host_path, "/b") == 0);
    scsictl_info_free(ctl, ri);
    CHECK_UNCHANGED(ctl, before);
    scsictl_stats s;
    scsictl_get_stats(ctl, &s);
    CHECK(s.closed && s.reservations == 2 && s.disks == 2 && s.pinned == 1 && s.used == 3);
}

static void test_closed_busy(void)
{
    TEST("closed: close while a step is in flight is busy");
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id a, b;
    scsictl_op op;
    scsictl_stats s;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_close(ctl, &err), SCSICTL_E_BUSY);
    scsictl_get_stats(ctl, &s);
    CHECK(!s.closed && s.busy);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_OK);
    CHECK_CODE(scsictl_op_report(ctl, &op, false, "stop", &err), SCSICTL_E_BACKEND);
    CHECK_CODE(scsictl_close(ctl, &err), SCSICTL_OK);
    scsictl_get_stats(ctl, &s);
    CHECK(s.closed && !s.busy && s.reservations == 2);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_E_CLOSED);
    scsictl_free(ctl);
}

static void test_invalid_argument(void)
{
    TEST("invalid_argument: geometry at scsictl_new");
    static const struct { uint32_t c, l; int guest; int code; uint32_t want_luns; } geo[] = {
        {0, 0, 0, SCSICTL_OK, 64},
        {4, 0, 0, SCSICTL_OK, 64},
        {1024, 0, 0, SCSICTL_OK, 64},
        {1024, 1024, 1, SCSICTL_OK, 1024},
        {1, 16384, 0, SCSICTL_OK, 16384},
        {64, 16384, 0, SCSICTL_OK, 16384},
        {1025, 1, 0, SCSICTL_E_INVALID_ARGUMENT, 0},
        {UINT32_MAX, 1, 0, SCSICTL_E_INVALID_ARGUMENT, 0},
        {1, 16385, 0, SCSICTL_E_INVALID_ARGUMENT, 0},
        {1, UINT32_MAX, 0, SCSICTL_E_INVALID_ARGUMENT, 0},
        {1024, 1025, 0, SCSICTL_E_INVALID_ARGUMENT, 0},
        {65, 16384, 0, SCSICTL_E_INVALID_ARGUMENT, 0},
        {1, 1, 2, SCSICTL_E_INVALID_ARGUMENT, 0},
        {1, 1, -1, SCSICTL_E_INVALID_ARGUMENT, 0},
    };
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++) {
        scsictl_options o;
        memset(&o, 0, sizeof o);
        o.controllers = geo[i].c;
        o.luns_per_controller = geo[i].l;
        o.guest = (scsictl_guest)geo[i].guest;
        scsictl *ctl = (scsictl *)&o; /* sentinel: must stay untouched on error */
        scsictl_error err;
        memset(&err, 0, sizeof err);
        int rc = scsictl_new(&o, &ctl, &err);
        if (!tu_check(rc == geo[i].code, __FILE__, __LINE__,
                      "scsictl_new(%u, %u, guest %d): got %s, want %s", geo[i].c, geo[i].l,
                      geo[i].guest, scsictl_code_name(rc), scsictl_code_name(geo[i].code)))
            continue;
        if (rc == SCSICTL_OK) {
            scsictl_stats s;
            scsictl_get_stats(ctl, &s);
            CHECK_EQ(s.controllers, geo[i].c);
            CHECK_EQ(s.luns_per_controller, geo[i].want_luns);
            CHECK_EQ(s.slots, geo[i].c * geo[i].want_luns);
            CHECK_EQ(s.free, s.slots);
            CHECK(s.used == 0 && s.pinned == 0 && s.disks == 0 && s.reservations == 0);
            CHECK(!s.closed && !s.busy);
            CHECK_EQ(s.guest, geo[i].guest);
            scsictl_free(ctl);
        } else {
            check_err(&err, SCSICTL_E_INVALID_ARGUMENT);
            CHECK(ctl == (scsictl *)&o);
        }
    }
    scsictl_options o;
    memset(&o, 0, sizeof o);
    o.controllers = 1;
    CHECK_CODE(scsictl_new(&o, NULL, NULL), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_free(NULL);

    TEST("invalid_argument: reserve, pin and ops");
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id id;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &id), SCSICTL_OK);
    SNAP(ctl, before);
    scsictl_disk_config d = tu_disk(NULL);
    memset(&err, 0, sizeof err);
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    check_err(&err, SCSICTL_E_INVALID_ARGUMENT);
    d.host_path = "";
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_reserve(ctl, NULL, NULL, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    d.host_path = "/new";
    d.type = (scsictl_disk_type)3;
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    d.type = (scsictl_disk_type)-1;
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    d.type = SCSICTL_DISK_VIRTUAL_DISK;
    scsictl_mount_config m = tu_mount((uint64_t)INT64_MAX + 1);
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    m.partition = UINT64_MAX;
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    static const char *const opts_null[] = {"ok", NULL};
    m = tu_mount(0);
    m.options = opts_null;
    m.n_options = 2;
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    m.options = NULL;
    m.n_options = 1;
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    /* the same errors on an existing disk path */
    d.host_path = "/a";
    m = tu_mount((uint64_t)INT64_MAX + 1);
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_disk_config pd = tu_disk("");
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 3, &pd, &err), SCSICTL_E_INVALID_ARGUMENT);
    pd.host_path = NULL;
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 3, &pd, &err), SCSICTL_E_INVALID_ARGUMENT);
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_UNCHANGED(ctl, before);
    /* INT64_MAX itself is a valid partition */
    d.host_path = "/big";
    m = tu_mount((uint64_t)INT64_MAX);
    CHECK_CODE(scsictl_reserve(ctl, &d, &m, &id, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &id, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_STR(op.step.guest_path, "/run/mounts/scsi/0_1_9223372036854775807");
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_STR(op.guest_path, "/run/mounts/scsi/0_1_9223372036854775807");

    /* An op reported to a controller other than the one that started it
     * is refused, and the op stays in flight on its own controller. */
    scsictl *other = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    scsictl_id oid;
    CHECK_CODE(tu_reserve(other, "/big", 0, &oid), SCSICTL_OK);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &id, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(other, &op, true, NULL, &err), SCSICTL_E_INVALID_ARGUMENT);
    check_err(&err, SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "another controller");
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_EQ(op.step.kind, SCSICTL_STEP_LINUX_EJECT);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_STATE(other, "0:0 /big reserved r1 [0 reserved 1]");
    scsictl_free(other);
    scsictl_free(ctl);
}

static void test_ids(void)
{
    TEST("ids: version 4, distinct, canonical, parse");
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    scsictl_id ids[50];
    for (int i = 0; i < 50; i++) {
        CHECK_CODE(tu_reserve(ctl, "/a", 0, &ids[i]), SCSICTL_OK);
        CHECK_EQ(ids[i].bytes[6] >> 4, 4);
        CHECK_EQ(ids[i].bytes[8] & 0xC0, 0x80);
        for (int j = 0; j < i; j++) CHECK(memcmp(ids[i].bytes, ids[j].bytes, 16) != 0);
        char s[SCSICTL_ID_STRLEN + 1];
        memset(s, 'Z', sizeof s);
        scsictl_id_format(&ids[i], s);
        CHECK_EQ(strlen(s), 36);
        bool canon = s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-';
        for (int k = 0; k < 36; k++)
            if (k != 8 && k != 13 && k != 18 && k != 23)
                canon = canon && isxdigit((unsigned char)s[k]) && !isupper((unsigned char)s[k]);
        CHECK(canon);
        scsictl_id back;
        CHECK_CODE(scsictl_id_parse(s, 36, &back), SCSICTL_OK);
        CHECK(memcmp(back.bytes, ids[i].bytes, 16) == 0);
        for (int k = 0; k < 36; k++) s[k] = (char)toupper((unsigned char)s[k]);
        memset(&back, 0, sizeof back);
        CHECK_CODE(scsictl_id_parse(s, 36, &back), SCSICTL_OK);
        CHECK(memcmp(back.bytes, ids[i].bytes, 16) == 0);
    }
    scsictl_id x = {{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                     0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10}};
    char s[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&x, s);
    CHECK_STR(s, "01234567-89ab-cdef-fedc-ba9876543210");
    scsictl_id y;
    CHECK_CODE(scsictl_id_parse("01234567-89AB-cDeF-fedc-ba9876543210", 36, &y), SCSICTL_OK);
    CHECK(memcmp(x.bytes, y.bytes, 16) == 0);
    /* a longer buffer, parsed for exactly 36 bytes */
    CHECK_CODE(scsictl_id_parse("01234567-89ab-cdef-fedc-ba9876543210xyz", 36, &y), SCSICTL_OK);
    static const struct { const char *s; size_t len; } bad[] = {
        {"", 0},
        {"01234567-89ab-cdef-fedc-ba987654321", 35},
        {"01234567-89ab-cdef-fedc-ba98765432100", 37},
        {"01234567-89ab-cdef-fedc-ba9876543210", 35},
        {"01234567-89ab-cdef-fedc-ba9876543210", 37},
        {"0123456789ab-cdef-fedc-ba9876543210-", 36},
        {"01234567_89ab_cdef_fedc_ba9876543210", 36},
        {"0123456-789ab-cdef-fedc-ba9876543210", 36},
        {"g1234567-89ab-cdef-fedc-ba9876543210", 36},
        {"01234567-89ab-cdef-fedc-ba987654321 ", 36},
        {"01234567-89ab-cdef-fedc-ba98765432\0" "0", 36},
        {"{1234567-89ab-cdef-fedc-ba9876543210", 36},
        {"0123456789abcdeffedcba9876543210", 32},
        {"+1234567-89ab-cdef-fedc-ba9876543210", 36},
        {"01234567-+9ab-cdef-fedc-ba9876543210", 36},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        scsictl_id z;
        memset(&z, 0x5A, sizeof z);
        int rc = scsictl_id_parse(bad[i].s, bad[i].len, &z);
        tu_check(rc == SCSICTL_E_INVALID_ARGUMENT, __FILE__, __LINE__,
                 "id_parse bad case %zu (\"%s\", %zu): got %s", i, bad[i].s, bad[i].len,
                 scsictl_code_name(rc));
    }
    scsictl_free(ctl);
}

static void test_err_struct(void)
{
    TEST("error struct: untouched on success, NULL accepted");
    scsictl *ctl = tu_new(1, 2, SCSICTL_GUEST_LINUX);
    scsictl_error err, marker;
    memset(&marker, 0x7E, sizeof marker);
    marker.message[SCSICTL_MESSAGE_MAX - 1] = '\0';
    err = marker;
    scsictl_id a, b, c;
    scsictl_disk_config d = tu_disk("/a");
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &a, &err), SCSICTL_OK);
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    scsictl_slot_info *si = NULL;
    size_t n = 0;
    CHECK_CODE(scsictl_list_slots(ctl, &si, &n, &err), SCSICTL_OK);
    CHECK(n == 1 && !si[0].busy && !si[0].tearing_down);
    scsictl_info_free(ctl, si);
    CHECK(memcmp(&err, &marker, sizeof err) == 0);
    /* NULL err everywhere */
    scsictl_id unk = tu_unknown_id(9);
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &b, NULL), SCSICTL_OK);
    d.host_path = "/b";
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &c, NULL), SCSICTL_OK);
    d.host_path = "/c";
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &c, NULL), SCSICTL_E_NO_SLOTS);
    d.host_path = "";
    CHECK_CODE(scsictl_reserve(ctl, &d, NULL, &c, NULL), SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &unk, NULL), SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 9, 9, NULL, NULL), SCSICTL_E_OUT_OF_RANGE);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 0, NULL, NULL), SCSICTL_E_SLOT_TAKEN);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &a, NULL), SCSICTL_DONE); /* b holds it */
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &b, NULL), SCSICTL_STEP);
    CHECK_CODE(scsictl_close(ctl, NULL), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_report(ctl, &op, false, NULL, NULL), SCSICTL_E_BACKEND);
    scsictl_reservation_info *ri = NULL;
    CHECK_CODE(scsictl_get_reservation(ctl, &unk, &ri, NULL), SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_close(ctl, NULL), SCSICTL_OK);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &b, NULL), SCSICTL_E_CLOSED);
    scsictl_free(ctl);
}

/* The slot listing says when a disk's teardown began: on a Windows guest a
 * failed removal leaves it "attached" but tearing down. */
static void test_tearing_down_listed(void)
{
    TEST("list_slots: tearing_down from the release's first disk step until it ends");
    scsictl *ctl = tu_new(1, 2, SCSICTL_GUEST_WINDOWS);
    scsictl_id a;
    scsictl_error err;
    scsictl_op op;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &a, &err), SCSICTL_STEP); /* unmount */
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_STEP); /* remove */
    CHECK_CODE(scsictl_op_report(ctl, &op, false, "in use", &err), SCSICTL_E_BACKEND);
    scsictl_slot_info *si = NULL;
    size_t n = 0;
    CHECK_CODE(scsictl_list_slots(ctl, &si, &n, &err), SCSICTL_OK);
    CHECK(n == 1 && si[0].tearing_down && !si[0].busy && si[0].state == SCSICTL_DISK_ATTACHED);
    scsictl_info_free(ctl, si);
    CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &a, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_op_report(ctl, &op, true, NULL, &err), SCSICTL_DONE);
    CHECK_CODE(scsictl_list_slots(ctl, &si, &n, &err), SCSICTL_OK);
    CHECK(n == 0);
    scsictl_info_free(ctl, si);
    scsictl_free(ctl);
}

int main(void)
{
    tu_run("not_found: unknown and released ids, no callback", 1, 4, SCSICTL_GUEST_LINUX,
           test_not_found);
    test_no_slots();
    test_config_mismatch();
    test_tearing_down_listed();
    test_slot_taken();
    test_out_of_range();
    tu_run("busy: a step in flight on the disk", 1, 4, SCSICTL_GUEST_LINUX, test_busy_in_flight);
    tu_run("busy: pending release, teardown in progress", 1, 4, SCSICTL_GUEST_LINUX,
           test_busy_pending);
    tu_run("busy: callbacks may call back into the controller", 1, 4, SCSICTL_GUEST_LINUX,
           test_busy_reentry);
    tu_run("backend: failures carry context", 1, 4, SCSICTL_GUEST_LINUX, test_backend);
    tu_run("closed: mutations refused, introspection works", 1, 4, SCSICTL_GUEST_WINDOWS,
           test_closed);
    test_closed_busy();
    test_invalid_argument();
    test_ids();
    test_err_struct();
    return tu_finish();
}
