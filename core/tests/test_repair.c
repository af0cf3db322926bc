/* test_repair.c — scsictl_set_disk_state / scsictl_set_mount_state: the
 * records set to what a reconciler found, and what the next map and unmap
 * then do. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include <stdlib.h>
#include <unistd.h>


/* The state of the disk in the first listed slot and of its first
 * partition ("-" if none), as "disk/partition". */
static const char *states(scsictl *ctl)
{
    static char out[64];
    scsictl_slot_info *s = NULL;
    size_t n = 0;
    scsictl_error err;
    if (scsictl_list_slots(ctl, &s, &n, &err) != SCSICTL_OK || n == 0) {
        snprintf(out, sizeof out, "none");
    } else {
        snprintf(out, sizeof out, "%s/%s%s", scsictl_disk_state_name(s[0].state),
                 s[0].n_partitions ? scsictl_mount_state_name(s[0].partitions[0].state) : "-",
                 s[0].tearing_down ? " (tearing down)" : "");
    }
    scsictl_info_free(ctl, s);
    return out;
}

static void test_records_follow(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a;
    char path[64];
    CHECK_CODE(tu_reserve(ctl, "/a", 1, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(states(ctl), "attached/mounted");

    /* removed behind its back: reserved, and its partition with it */
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_RESERVED, err), SCSICTL_OK);
    CHECK_STR(states(ctl), "reserved/reserved");
    size_t from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "add 0:0 /a, mount 0:0:1 /a");

    /* unmounted behind its back: the next map mounts again */
    CHECK_CODE(scsictl_set_mount_state(ctl, 0, 0, 1, SCSICTL_MOUNT_RESERVED, err), SCSICTL_OK);
    CHECK_STR(states(ctl), "attached/reserved");
    from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "mount 0:0:1 /a");

    /* found in the VM and mounted although recorded otherwise: no call */
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_RESERVED, err), SCSICTL_OK);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_ATTACHED, err), SCSICTL_OK);
    CHECK_CODE(scsictl_set_mount_state(ctl, 0, 0, 1, SCSICTL_MOUNT_MOUNTED, err), SCSICTL_OK);
    CHECK_STR(states(ctl), "attached/mounted");
    from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "");
    CHECK_STR(path, "/run/mounts/scsi/0_0_1");
    /* setting what is already recorded changes nothing */
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_ATTACHED, err), SCSICTL_OK);
    CHECK_STR(states(ctl), "attached/mounted");

    /* and the unmap removes what is there */
    from = r->n;
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "unmount 0:0:1 /a, eject 0:0, remove 0:0");
    CHECK_STR(states(ctl), "none");
}

static void test_teardown(scsictl *ctl, rec_backend *r, scsictl_error *err)
{
    scsictl_id a, b;
    char path[64];
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_EJECT, 1, "eject failed");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_E_BACKEND);
    CHECK_STR(states(ctl), "attached/- (tearing down)");
    /* the guest let it go after all: only the removal is left */
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_EJECTED, err), SCSICTL_OK);
    CHECK_STR(states(ctl), "ejected/- (tearing down)");
    /* ... or it is still there: eject again */
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_ATTACHED, err), SCSICTL_OK);
    CHECK_STR(states(ctl), "attached/- (tearing down)");
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_EJECTED, err), SCSICTL_OK);
    size_t from = r->n;
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "remove 0:0");
    CHECK_STR(states(ctl), "none");

    /* not in the VM at all: the retried unmap just forgets it */
    CHECK_CODE(tu_reserve(ctl, "/b", 0, &b), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_LINUX_EJECT, 1, "eject failed");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_E_BACKEND);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_RESERVED, err), SCSICTL_OK);
    from = r->n;
    CHECK_CODE(scsictl_map(ctl, &r->cb, &b, path, sizeof path, err), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &b, err), SCSICTL_OK);
    CHECK_STR(rec_calls_since(r, from), "");
    CHECK_STR(states(ctl), "none");
}

static void test_refusals(void)
{
    TEST("repair: refusals name what is wrong and change nothing");
    scsictl *ctl = tu_new(2, 4, SCSICTL_GUEST_LINUX);
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id a;
    char path[64];
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_set_disk_state(NULL, 0, 0, SCSICTL_DISK_RESERVED, &err),
               SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, (scsictl_disk_state)7, &err),
               SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_set_mount_state(ctl, 0, 0, 0, (scsictl_mount_state)7, &err),
               SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 1, SCSICTL_DISK_ATTACHED, &err),
               SCSICTL_E_NOT_FOUND);
    CHECK_CONTAINS(err.message, "no disk at controller 0 lun 1");
    CHECK_CODE(scsictl_set_disk_state(ctl, 2, 0, SCSICTL_DISK_ATTACHED, &err),
               SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 9, SCSICTL_DISK_ATTACHED, &err),
               SCSICTL_E_NOT_FOUND);
    CHECK_CODE(scsictl_set_mount_state(ctl, 0, 0, 3, SCSICTL_MOUNT_MOUNTED, &err),
               SCSICTL_E_NOT_FOUND);
    CHECK_CONTAINS(err.message, "partition 3");
    /* mounted needs the disk in the VM; ejected needs a teardown */
    CHECK_CODE(scsictl_set_mount_state(ctl, 0, 0, 0, SCSICTL_MOUNT_MOUNTED, &err),
               SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "its disk is reserved");
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_EJECTED, &err),
               SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "cannot be ejected");
    CHECK_STR(states(ctl), "reserved/reserved");
    /* busy while a step is in flight */
    scsictl_op op;
    CHECK_CODE(scsictl_op_start_map(ctl, &op, &a, &err), SCSICTL_STEP);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_ATTACHED, &err), SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_set_mount_state(ctl, 0, 0, 0, SCSICTL_MOUNT_RESERVED, &err),
               SCSICTL_E_BUSY);
    CHECK_CODE(scsictl_op_report(ctl, &op, false, "no", &err), SCSICTL_E_BACKEND);
    CHECK_STR(states(ctl), "reserved/reserved");
    scsictl_free(ctl);

    /* a Windows guest never ejects */
    ctl = tu_new(1, 4, SCSICTL_GUEST_WINDOWS);
    rec_init(r, SCSICTL_GUEST_WINDOWS);
    CHECK_CODE(tu_reserve(ctl, "/w", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, &err), SCSICTL_OK);
    rec_fail_next(r, SCSICTL_STEP_REMOVE_SCSI_DISK, 1, "remove failed");
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, &err), SCSICTL_E_BACKEND);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_EJECTED, &err),
               SCSICTL_E_INVALID_ARGUMENT);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_RESERVED, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_unmap(ctl, &r->cb, &a, &err), SCSICTL_OK);
    CHECK_STR(states(ctl), "none");
    free(r);
    scsictl_free(ctl);
}

static void test_written(void)
{
    TEST("repair: the change is in the state file when the call returns");
    char dir[] = "/tmp/scsictl-repair-XXXXXX";
    if (!mkdtemp(dir)) exit(2);
    char file[128];
    snprintf(file, sizeof file, "%s/state", dir);
    scsictl *ctl = tu_new(1, 4, SCSICTL_GUEST_LINUX);
    rec_backend *r = rec_new(SCSICTL_GUEST_LINUX);
    scsictl_error err;
    scsictl_id a;
    char path[64];
    CHECK_CODE(scsictl_set_state_file(ctl, file, &err), SCSICTL_OK);
    CHECK_CODE(tu_reserve(ctl, "/a", 0, &a), SCSICTL_OK);
    CHECK_CODE(scsictl_map(ctl, &r->cb, &a, path, sizeof path, &err), SCSICTL_OK);
    CHECK_CODE(scsictl_set_disk_state(ctl, 0, 0, SCSICTL_DISK_RESERVED, &err), SCSICTL_OK);
    char *text = NULL;
    size_t len = 0;
    CHECK_CODE(scsictl_read_file(file, NULL, &text, &len, &err), SCSICTL_OK);
    CHECK(text && strstr(text, "disk 0 0 reserved 0 ") && strstr(text, "part 0 0 0 reserved "));
    free(text);
    free(r);
    scsictl_free(ctl);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    tu_run("repair: a disk or partition set as found; the next map adds what is missing", 1, 4, SCSICTL_GUEST_LINUX, test_records_follow);
    tu_run("repair: a disk whose release began keeps it", 1, 4, SCSICTL_GUEST_LINUX, test_teardown);
    test_refusals();
    test_written();
    return tu_finish();
}
