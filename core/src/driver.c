/* driver.c — the blocking driver: runs an operation's steps through C
 * function pointers, and its writes through the controller's store, with
 * no lock held during each call. */
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
        .verity_root_hash = m->verity_root_hash,
        .verity_hash_offset = m->verity_hash_offset,
    };
}

void scsictl_step_windows_settings(const scsictl_step *step, scsictl_windows_settings *out)
{
    *out = (scsictl_windows_settings){
        .container_path = step->guest_path,
        .lun = step->lun,
    };
}

/* Performs one step: the callback's result (0 ok, -1 failed or missing).
 * Each kind builds only the arguments its callback takes. */
static int perform(const scsictl_callbacks *cb, const scsictl_step *s, char *msg, size_t size)
{
    switch (s->kind) {
    case SCSICTL_STEP_ADD_SCSI_DISK:
        if (!cb->add_scsi_disk)
            break;
        return cb->add_scsi_disk(cb->user, s->disk, s->controller, s->lun, msg, size);
    case SCSICTL_STEP_REMOVE_SCSI_DISK:
    case SCSICTL_STEP_LINUX_EJECT: {
        int (*fn)(void *, uint32_t, uint32_t, char *, size_t) =
            s->kind == SCSICTL_STEP_LINUX_EJECT ? cb->linux_eject : cb->remove_scsi_disk;
        if (!fn)
            break;
        return fn(cb->user, s->controller, s->lun, msg, size);
    }
    case SCSICTL_STEP_LINUX_MOUNT:
    case SCSICTL_STEP_LINUX_UNMOUNT: {
        int (*fn)(void *, const scsictl_linux_settings *, char *, size_t) =
            s->kind == SCSICTL_STEP_LINUX_MOUNT ? cb->linux_mount : cb->linux_unmount;
        if (!fn)
            break;
        scsictl_linux_settings ls;
        scsictl_step_linux_settings(s, &ls);
        return fn(cb->user, &ls, msg, size);
    }
    case SCSICTL_STEP_WINDOWS_MOUNT:
    case SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH:
    case SCSICTL_STEP_WINDOWS_UNMOUNT: {
        int (*fn)(void *, const scsictl_windows_settings *, char *, size_t) =
            s->kind == SCSICTL_STEP_WINDOWS_MOUNT           ? cb->windows_mount
            : s->kind == SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH ? cb->windows_mount_scratch
                                                            : cb->windows_unmount;
        if (!fn)
            break;
        scsictl_windows_settings ws;
        scsictl_step_windows_settings(s, &ws);
        return fn(cb->user, &ws, msg, size);
    }
    case SCSICTL_STEP_KIND_COUNT:
        break;
    }
    return -1;
}

static int run(scsictl *ctl, const scsictl_callbacks *cb, scsictl_op *op, int st,
               scsictl_error *err)
{
    char msg[SCSICTL_MESSAGE_MAX];
    while (st == SCSICTL_STEP || st == SCSICTL_PERSIST) {
        if (st == SCSICTL_PERSIST) { /* the store writes, no lock held */
            scsictl_error perr;
            bool ok = scsictl_persist(ctl, op->persist_seq, &perr) == SCSICTL_OK;
            st = scsictl_op_persisted(ctl, op, ok, ok ? NULL : perr.message, err);
            continue;
        }
        msg[0] = '\0';
        int rc = perform(cb, &op->step, msg, sizeof msg);
        msg[sizeof msg - 1] = '\0';
        bool ok = rc == 0;
        if (rc == -1 && msg[0] == '\0')
            strcpy(msg, "no callback");
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
        size_t n = (size_t)op.path_len_; /* the path of a DONE map */
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
