/*
 * test_defects.c — one regression test per defect D1-D6 of the reference
 * design (spec §6). Each is written so that the reference behaviour
 * described there fails it.
 */
#include "test_util.h"


/* D1: a failed guest mount makes every later unmap_from_guest fail,
 * leaking the disk; a second reservation on that partition can never map
 * either. */
static void test_d1(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a, b;
    char path[64];
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &b), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_MOUNT, 1, "mount failed");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_E_BACKEND);
    /* the second claim on the same partition maps */
    size_t from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "mount 0:0:0 /a");
    CHECK_STR(path, "/run/mounts/scsi/0_0_0");
    /* both releases succeed and everything is torn down */
    from = r->n;
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "");
    from = r->n;
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "unmount 0:0:0 /a, eject 0:0, remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);

    TEST("D1: failed mount, give up alone");
    rec_clear(r);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_MOUNT, 2, "mount failed");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_E_BACKEND);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_E_BACKEND);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, 0), "add 0:0 /a, mount 0:0:0 /a, mount 0:0:0 /a, eject 0:0, remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);

    TEST("D1: failed mount, the other claim releases first, then maps");
    rec_clear(r);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &b), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_MOUNT, 1, "mount failed");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_E_BACKEND);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, 0),
              "add 0:0 /a, mount 0:0:0 /a, mount 0:0:0 /a, unmount 0:0:0 /a, eject 0:0, remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);
}

/* D2: a never-mapped partition claim, once released, keeps its disk
 * attached forever even after every other claim is released. */
static void test_d2(void)
{
    TEST("D2: never-mapped partition claim does not pin the disk");
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id a, b;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &b), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, &err), SCSICTL_OK);
    size_t from = r->n;
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, &err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, &err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "unmount 0:0:0 /a, eject 0:0, remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);

    TEST("D2: Windows, released in the other order");
    scsictl_free(ctl);
    free(r);
    ctl = tu_new(1, 4, SCSICTL_GUEST_WINDOWS);
    r = rec_new(SCSICTL_GUEST_WINDOWS);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &b), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, &err), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0 /a attached r1 [1 reserved 1]");
    from = r->n;
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, &err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);
    free(r);
    scsictl_free(ctl);
}

/* D3: a failed attach shared by two reservations frees the slot while the
 * second still points at it; the slot goes to another disk and the second
 * reservation then mounts the other disk. */
static void test_d3(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a1, a2, b;
    char path[64];
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a1), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &a2), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_ADD_SCSI_DISK, 1, "attach failed");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a1, NULL, 0, err), SCSICTL_E_BACKEND);
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_OK);
    scsictl_reservation_info *ri = NULL;
    CHECK_CODE(scsictl_get_reservation(ctl, &b, &ri, err), SCSICTL_OK);
    CHECK(ri && ri->controller == 0 && ri->lun == 1);
    scsictl_info_free(ctl, ri);
    CHECK_CODE(scsictl_get_reservation(ctl, &a2, &ri, err), SCSICTL_OK);
    CHECK(ri && ri->controller == 0 && ri->lun == 0 && strcmp(ri->host_path, "/a") == 0);
    scsictl_info_free(ctl, ri);
    size_t from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_1_0");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a2, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_0_1");
    CHECK_STR(rec_calls_since(r, from),
              "add 0:1 /b, mount 0:1:0 /b, add 0:0 /a, mount 0:0:1 /a");
    CHECK_STATE(ctl, "0:0 /a attached r2 [0 reserved 1] [1 mounted 1]; "
                     "0:1 /b attached r1 [0 mounted 1]");

    TEST("D3: first claim gives up after the failed attach");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a2, err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a1, err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_STATE(ctl, "");
    rec_clear(r);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a1), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a2), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_ADD_SCSI_DISK, 1, "attach failed");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a1, NULL, 0, err), SCSICTL_E_BACKEND);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a1, err), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0 /a reserved r1 [0 reserved 1]");
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_1_0");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a2, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_0_0");
    CHECK_STR(rec_calls_since(r, 0),
              "add 0:0 /a, add 0:1 /b, mount 0:1:0 /b, add 0:0 /a, mount 0:0:0 /a");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a2, err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);
}

/* D4: reserve then unmap_from_guest without ever mapping leaves the slot
 * taken; repeated, it exhausts every slot. */
static void test_d4(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    for (int i = 0; i < 20; i++) {
        char p[16];
        snprintf(p, sizeof p, "/d%d", i);
        scsictl_id id;
        CHECK_CODE(tu_reserve(ctl, p, (uint64_t)(i % 3), &id), SCSICTL_OK);
        scsictl_reservation_info *ri = NULL;
        CHECK_CODE(scsictl_get_reservation(ctl, &id, &ri, err), SCSICTL_OK);
        CHECK(ri && ri->controller == 0 && ri->lun == 0);
        scsictl_info_free(ctl, ri);
        if (i % 2) CHECK_CODE(scsictl_unmap(ctl, &r->cb, &id, err), SCSICTL_OK);
        else {
            scsictl_op op;
            CHECK_CODE(scsictl_op_start_unmap(ctl, &op, &id, err), SCSICTL_DONE);
        }
    }
    CHECK_EQ(r->n, 0);
    CHECK_STATE(ctl, "");
    scsictl_stats s;
    scsictl_get_stats(ctl, &s);
    CHECK(s.used == 0 && s.free == 2 && s.disks == 0 && s.reservations == 0);
}

/* D5: retrying an unmap that failed at eject, after another caller has
 * claimed and mounted the same disk and partition, unmounts and removes the
 * other caller's disk; a variant drives a reference count negative and
 * leaks a guest mount. */
static void test_d5(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a, b;
    char path[64];
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_EJECT, 1, "eject failed");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_E_BACKEND);
    int rc = tu_reserve(ctl, "/a", 0, &b);
    CHECK_CODE(rc, SCSICTL_E_BUSY); /* docs/semantics.md: being torn down */
    bool other = rc == SCSICTL_OK;
    if (other) CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    size_t from = r->n;
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    if (other) {
        /* had the claim been accepted, its disk must survive the retry */
        CHECK_STR(rec_calls_since(r, from), "");
        CHECK_STATE(ctl, "0:0 /a attached r1 [0 mounted 1]");
        CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    } else {
        CHECK_STR(rec_calls_since(r, from), "eject 0:0, remove 0:0");
    }
    CHECK_STATE(ctl, "");
    /* afterwards the path can be claimed again, on the lowest free slot */
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &b), SCSICTL_OK);
    from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "add 0:0 /a, mount 0:0:0 /a");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);

    TEST("D5: failed remove, another caller on another partition");
    rec_clear(r);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_REMOVE_SCSI_DISK, 1, "remove failed");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_E_BACKEND);
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &b), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, 0),
              "add 0:0 /a, mount 0:0:0 /a, unmount 0:0:0 /a, eject 0:0, remove 0:0, remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);

    TEST("D5: failed unmount joined by another caller (refcount variant)");
    rec_clear(r);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_UNMOUNT, 1, "unmount failed");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_E_BACKEND);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &b), SCSICTL_OK);
    from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(path, "/run/mounts/scsi/0_0_0");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "");
    CHECK_STATE(ctl, "0:0 /a attached r1 [0 mounted 1]");
    /* a repeated release of the finished id must not touch the count */
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_E_NOT_FOUND);
    CHECK_STATE(ctl, "0:0 /a attached r1 [0 mounted 1]");
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "unmount 0:0:0 /a, eject 0:0, remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);

    TEST("D5: two pending releases on one partition");
    rec_clear(r);
    scsictl_id c;
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, NULL, 0, err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_UNMOUNT, 1, "unmount failed");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_E_BACKEND);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &b), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &c), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0 /a attached r3 [0 mounted 3]");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_STATE(ctl, "0:0 /a attached r1 [0 mounted 1]");
    from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &c, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &c, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "unmount 0:0:0 /a, eject 0:0, remove 0:0");
    CHECK_STATE(ctl, "");
    rec_check_balanced(r, true);
}

/* D6: reserve_for_rootfs accepts a lun beyond luns_per_controller
 * (silently pinning a slot of the next controller) and crashes on huge
 * values. */
static void test_d6(void)
{
    TEST("D6: rootfs pin outside the geometry");
    scsictl *ctl = tu_new(2, 4, SCSICTL_GUEST_LINUX);
    scsictl_error err;
    static const uint64_t bad[][2] = {
        {0, 4}, {0, 5}, {0, 7}, {1, 4}, {0, 8}, {2, 0}, {0, UINT64_MAX}, {UINT64_MAX, 0},
        {UINT64_MAX, UINT64_MAX}, {1ull << 32, 0}, {0, 1ull << 32}, {0, (1ull << 32) | 1},
        {(1ull << 32) | 1, 0}, {1ull << 63, 1ull << 63}, {0, 0xFFFFFFFFull}, {0xFFFFFFFFull, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        int rc = scsictl_reserve_for_rootfs(ctl, bad[i][0], bad[i][1], NULL, &err);
        tu_check(rc == SCSICTL_E_OUT_OF_RANGE, __FILE__, __LINE__,
                 "reserve_for_rootfs(%llu, %llu): got %s, want out_of_range",
                 (unsigned long long)bad[i][0], (unsigned long long)bad[i][1],
                 scsictl_code_name(rc));
        CHECK_STATE(ctl, "");
    }
    /* every slot is still handed out, in order */
    scsictl_id ids[8];
    for (int i = 0; i < 8; i++) {
        char p[8];
        snprintf(p, sizeof p, "/%d", i);
        CHECK_CODE(tu_reserve(ctl, p, 0, &ids[i]), SCSICTL_OK);
        scsictl_reservation_info *ri = NULL;
        CHECK_CODE(scsictl_get_reservation(ctl, &ids[i], &ri, &err), SCSICTL_OK);
        CHECK(ri && ri->controller == (uint32_t)(i / 4) && ri->lun == (uint32_t)(i % 4));
        scsictl_info_free(ctl, ri);
    }
    scsictl_free(ctl);

    ctl = tu_new(2, 4, SCSICTL_GUEST_LINUX);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 0, 4, NULL, &err), SCSICTL_E_OUT_OF_RANGE);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 3, NULL, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_reserve_for_rootfs(ctl, 1, 0, NULL, &err), SCSICTL_OK);
    CHECK_STATE(ctl, "1:0P; 1:3P");
    scsictl_free(ctl);
}

int main(void)
{
    tu_run("D1: failed mount, then release and a second claim", 1, 4, SCSICTL_GUEST_LINUX, test_d1);
    test_d2();
    tu_run("D3: failed shared attach keeps the slot", 1, 4, SCSICTL_GUEST_LINUX, test_d3);
    tu_run("D4: reserve/release without map never exhausts slots", 1, 2, SCSICTL_GUEST_LINUX, test_d4);
    tu_run("D5: failed eject, another caller, retried release", 1, 4, SCSICTL_GUEST_LINUX, test_d5);
    test_d6();
    return tu_finish();
}
