/* repair.c — the records made to match what is really there.
 *
 * After a restart, a reconciler compares the records with the VM and the
 * guest (lua/scsictl/reconcile.lua does it for QEMU) and tells the core
 * what it found: a disk that is (not) in the VM, a partition that is (not)
 * mounted. The machines are not driven (no step is issued): a record is
 * set to the resting state that says what is there, keeping whether its
 * teardown began, so that the next map adds or mounts what is missing and
 * the next unmap removes what is present. */
#include "internal.h"

static disk *disk_at(scsictl *ctl, uint32_t controller, uint32_t lun)
{
    if (controller >= ctl->controllers || lun >= ctl->luns)
        return NULL;
    uint32_t slot = controller * ctl->luns + lun;
    for (size_t i = 0; i < ctl->disks.cap; i++) {
        disk *d = hmap_item(&ctl->disks, i);
        if (d && d->slot == slot)
            return d;
    }
    return NULL;
}

/* The resting state that says `want` for d, or -1 when none does: ejected
 * exists only in a Linux guest's teardown. */
static int disk_target(const scsictl *ctl, const disk *d, scsictl_disk_state want)
{
    bool teardown = sc_disk_tearing_down(d);
    switch (want) {
    case SCSICTL_DISK_RESERVED: return SC_D_RESERVED; /* a release then just forgets it */
    case SCSICTL_DISK_ATTACHED: return teardown ? SC_D_RELEASING : SC_D_ATTACHED;
    case SCSICTL_DISK_EJECTED:
        return teardown && ctl->guest == SCSICTL_GUEST_LINUX ? SC_D_EJECTED : -1;
    }
    return -1;
}

/* Checks shared by both setters; the lock is held. */
static int find_quiet_disk(scsictl *ctl, const char *what, uint32_t controller, uint32_t lun,
                           disk **out, scsictl_error *err)
{
    disk *d = disk_at(ctl, controller, lun);
    if (!d)
        return sc_fail(err, SCSICTL_E_NOT_FOUND, "%s: no disk at controller %u lun %u", what,
                       controller, lun);
    if (sc_disk_busy(d))
        return sc_fail(err, SCSICTL_E_BUSY,
                       "%s: '%.200s' at controller %u lun %u is busy with a backend call",
                       what, d->strings, controller, lun);
    *out = d;
    return SCSICTL_OK;
}

int scsictl_set_disk_state(scsictl *ctl, uint32_t controller, uint32_t lun,
                           scsictl_disk_state state, scsictl_error *err)
{
    if (!ctl || (unsigned)state > SCSICTL_DISK_EJECTED)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "set_disk_state: no controller, or an unknown state");
    disk *d;
    uint64_t seq = 0;
    sc_lock_acquire(&ctl->lock);
    int rc = find_quiet_disk(ctl, "set_disk_state", controller, lun, &d, err);
    int next = rc == SCSICTL_OK ? disk_target(ctl, d, state) : -1;
    if (rc == SCSICTL_OK && next < 0) {
        rc = sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                     "set_disk_state: '%.200s' at controller %u lun %u cannot be ejected: "
                     "only a Linux guest's disk whose release began is",
                     d->strings, controller, lun);
    } else if (rc == SCSICTL_OK && d->state != next) {
        d->state = (uint8_t)next;
        if (next != SC_D_ATTACHED) /* nothing is mounted from a disk the guest lacks */
            for (size_t i = 0; i < ctl->mounts.cap; i++) {
                mount *m = hmap_item(&ctl->mounts, i);
                if (m && m->disk == d)
                    m->state = SC_M_RESERVED;
            }
        sc_changed(ctl);
    }
    if (rc == SCSICTL_OK)
        seq = sc_unwritten(ctl);
    sc_lock_release(&ctl->lock);
    return rc == SCSICTL_OK && seq ? sc_sync(ctl, seq, false, err) : rc;
}

int scsictl_set_mount_state(scsictl *ctl, uint32_t controller, uint32_t lun, uint64_t partition,
                            scsictl_mount_state state, scsictl_error *err)
{
    if (!ctl || (unsigned)state > SCSICTL_MOUNT_MOUNTED)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                       "set_mount_state: no controller, or an unknown state");
    disk *d;
    uint64_t seq = 0;
    sc_lock_acquire(&ctl->lock);
    int rc = find_quiet_disk(ctl, "set_mount_state", controller, lun, &d, err);
    mount *m = rc == SCSICTL_OK ? sc_mount_find(ctl, d, partition) : NULL;
    if (rc == SCSICTL_OK && !m) {
        rc = sc_fail(err, SCSICTL_E_NOT_FOUND,
                     "set_mount_state: no claim on partition %llu of controller %u lun %u",
                     (unsigned long long)partition, controller, lun);
    } else if (rc == SCSICTL_OK && state == SCSICTL_MOUNT_MOUNTED && d->state != SC_D_ATTACHED) {
        rc = sc_fail(err, SCSICTL_E_INVALID_ARGUMENT,
                     "set_mount_state: partition %llu of controller %u lun %u cannot be "
                     "mounted: its disk is %s",
                     (unsigned long long)partition, controller, lun,
                     sc_disk_states[d->state].name);
    } else if (rc == SCSICTL_OK) {
        uint8_t next = state == SCSICTL_MOUNT_MOUNTED ? SC_M_MOUNTED : SC_M_RESERVED;
        if (m->state != next) {
            m->state = next;
            sc_changed(ctl);
        }
        seq = sc_unwritten(ctl);
    }
    sc_lock_release(&ctl->lock);
    return rc == SCSICTL_OK && seq ? sc_sync(ctl, seq, false, err) : rc;
}
