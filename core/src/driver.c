/* driver.c — the blocking driver: runs an operation's steps through C
 * function pointers, with no lock held during each call. */
#include <string.h>

#include "internal.h"

void scsictl_step_linux_settings(const scsictl_step *step, scsictl_linux_settings *out)
{
    static const scsictl_mount_config none = { 0 };
    const scsictl_mount_config *m = step->mount ? step->mount : &none;
    *out = (scsictl_linux_settings){
        .mount_path = step->guest_path,
        .controller = step->controller,
        .lun = step->lun,
        .partition = m->partition,
        .read_only = m->read_only,
        .encrypted = m->encrypted,
        .options = m->options,
        .n_options = m->n_options,
        .ensure_filesystem = m->ensure_filesystem,
        .filesystem = m->filesystem ? m->filesystem : "",
        .block_dev = m->block_dev,
    };
}

void scsictl_step_windows_settings(const scsictl_step *step, scsictl_windows_settings *out)
{
    *out = (scsictl_windows_settings){
        .container_path = step->guest_path,
        .lun = step->lun,
    };
}

/* Performs one step; returns true on success. */
static bool perform(const scsictl_callbacks *cb, const scsictl_step *s, char *msg,
                    size_t size)
{
    scsictl_linux_settings ls;
    scsictl_windows_settings ws;
    if (s->kind == SCSICTL_STEP_LINUX_MOUNT || s->kind == SCSICTL_STEP_LINUX_UNMOUNT)
        scsictl_step_linux_settings(s, &ls);
    else
        scsictl_step_windows_settings(s, &ws);
    int rc = -1;
    switch (s->kind) {
    case SCSICTL_STEP_ADD_SCSI_DISK:
        if (cb->add_scsi_disk)
            rc = cb->add_scsi_disk(cb->user, s->disk, s->controller, s->lun, msg, size);
        break;
    case SCSICTL_STEP_REMOVE_SCSI_DISK:
        if (cb->remove_scsi_disk)
            rc = cb->remove_scsi_disk(cb->user, s->controller, s->lun, msg, size);
        break;
    case SCSICTL_STEP_LINUX_MOUNT:
        if (cb->linux_mount)
            rc = cb->linux_mount(cb->user, &ls, msg, size);
        break;
    case SCSICTL_STEP_LINUX_UNMOUNT:
        if (cb->linux_unmount)
            rc = cb->linux_unmount(cb->user, &ls, msg, size);
        break;
    case SCSICTL_STEP_LINUX_EJECT:
        if (cb->linux_eject)
            rc = cb->linux_eject(cb->user, s->controller, s->lun, msg, size);
        break;
    case SCSICTL_STEP_WINDOWS_MOUNT:
        if (cb->windows_mount)
            rc = cb->windows_mount(cb->user, &ws, msg, size);
        break;
    case SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH:
        if (cb->windows_mount_scratch)
            rc = cb->windows_mount_scratch(cb->user, &ws, msg, size);
        break;
    case SCSICTL_STEP_WINDOWS_UNMOUNT:
        if (cb->windows_unmount)
            rc = cb->windows_unmount(cb->user, &ws, msg, size);
        break;
    case SCSICTL_STEP_KIND_COUNT:
        break;
    }
    if (rc == -1 && msg[0] == '\0')
        strcpy(msg, "no callback");
    return rc == 0;
}

static int run(scsictl *ctl, const scsictl_callbacks *cb, scsictl_op *op, int st,
               scsictl_error *err)
{
    char msg[SCSICTL_MESSAGE_MAX];
    while (st == SCSICTL_STEP) {
        msg[0] = '\0';
        bool ok = perform(cb, &op->step, msg, sizeof msg);
        msg[sizeof msg - 1] = '\0';
        st = scsictl_op_report(ctl, op, ok, msg[0] ? msg : NULL, err);
    }
    return st;
}

int scsictl_map(scsictl *ctl, const scsictl_callbacks *cb, const scsictl_id *id,
                char *path, size_t path_size, scsictl_error *err)
{
    if (!cb)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "map_to_guest: no callbacks");
    scsictl_op op;
    int st = run(ctl, cb, &op, scsictl_op_start_map(ctl, &op, id, err), err);
    if (st != SCSICTL_DONE)
        return st;
    if (path && path_size) {
        size_t n = strlen(op.guest_path);
        if (n >= path_size)
            n = path_size - 1;
        memcpy(path, op.guest_path, n);
        path[n] = '\0';
    }
    return SCSICTL_OK;
}

int scsictl_unmap(scsictl *ctl, const scsictl_callbacks *cb, const scsictl_id *id,
                  scsictl_error *err)
{
    if (!cb)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "unmap_from_guest: no callbacks");
    scsictl_op op;
    int st = run(ctl, cb, &op, scsictl_op_start_unmap(ctl, &op, id, err), err);
    return st == SCSICTL_DONE ? SCSICTL_OK : st;
}
