/* blocking_driver.c — the C library without Lua: a controller for a Linux
 * guest, driven by the blocking driver with callbacks that print what a
 * real hypervisor and guest agent would be asked to do.
 *
 * Two containers share a read-only image layer; each has its own scratch
 * disk. Run: ./build/examples/blocking_driver */
#include <stdio.h>
#include <stdlib.h>

#include "scsictl.h"

static int add_disk(void *user, const scsictl_disk_config *a, uint32_t c, uint32_t l,
                    char *msg, size_t size)
{
    (void)user, (void)msg, (void)size;
    printf("  vm: hot-add %s (%s%s) at controller %u lun %u\n", a->host_path,
           scsictl_disk_type_name(a->type), a->read_only ? ", read-only" : "", c, l);
    return 0;
}

static int remove_disk(void *user, uint32_t c, uint32_t l, char *msg, size_t size)
{
    (void)user, (void)msg, (void)size;
    printf("  vm: hot-remove controller %u lun %u\n", c, l);
    return 0;
}

static int mount(void *user, const scsictl_linux_settings *s, char *msg, size_t size)
{
    (void)user, (void)msg, (void)size;
    printf("  guest: mount %u:%u partition %llu at %s%s\n", s->controller, s->lun,
           (unsigned long long)s->partition, s->mount_path, s->read_only ? " (ro)" : "");
    return 0;
}

static int unmount(void *user, const scsictl_linux_settings *s, char *msg, size_t size)
{
    (void)user, (void)msg, (void)size;
    printf("  guest: unmount %s\n", s->mount_path);
    return 0;
}

static int eject(void *user, uint32_t c, uint32_t l, char *msg, size_t size)
{
    (void)user, (void)msg, (void)size;
    printf("  guest: eject scsi device %u:%u\n", c, l);
    return 0;
}

static void check(int rc, const scsictl_error *err)
{
    if (rc < 0) {
        fprintf(stderr, "error (%s): %s\n", scsictl_code_name(rc), err->message);
        exit(1);
    }
}

int main(void)
{
    scsictl_options opts = { .controllers = 1, .guest = SCSICTL_GUEST_LINUX };
    scsictl_callbacks cb = {
        .add_scsi_disk = add_disk, .remove_scsi_disk = remove_disk,
        .linux_mount = mount, .linux_unmount = unmount, .linux_eject = eject,
    };
    scsictl_error err;
    scsictl *ctl;
    check(scsictl_new(&opts, &ctl, &err), &err);

    scsictl_disk_config layer = { .host_path = "/images/base-layer.vhdx", .read_only = true };
    scsictl_mount_config ro = { .read_only = true };
    const char *names[2] = { "web", "db" };
    scsictl_id layer_ids[2], scratch_ids[2];
    char path[SCSICTL_GUEST_PATH_MAX];
    for (int i = 0; i < 2; i++) {
        char scratch_path[64];
        snprintf(scratch_path, sizeof scratch_path, "/scratch/%s.vhdx", names[i]);
        scsictl_disk_config scratch = { .host_path = scratch_path };
        printf("start container %s\n", names[i]);
        check(scsictl_reserve(ctl, &layer, &ro, &layer_ids[i], &err), &err);
        check(scsictl_map(ctl, &cb, &layer_ids[i], path, sizeof path, &err), &err);
        printf("  layer at %s\n", path);
        check(scsictl_reserve(ctl, &scratch, NULL, &scratch_ids[i], &err), &err);
        check(scsictl_map(ctl, &cb, &scratch_ids[i], path, sizeof path, &err), &err);
        printf("  scratch at %s\n", path);
    }
    scsictl_stats st;
    scsictl_get_stats(ctl, &st);
    printf("in use: %u of %u slots, %zu disks, %zu reservations\n", st.used, st.slots,
           st.disks, st.reservations);
    for (int i = 0; i < 2; i++) {
        printf("stop container %s\n", names[i]);
        check(scsictl_unmap(ctl, &cb, &scratch_ids[i], &err), &err);
        check(scsictl_unmap(ctl, &cb, &layer_ids[i], &err), &err);
    }
    scsictl_get_stats(ctl, &st);
    printf("in use: %u of %u slots, %zu disks, %zu reservations\n", st.used, st.slots,
           st.disks, st.reservations);
    scsictl_free(ctl);
    if (st.used != 0 || st.reservations != 0) {
        fprintf(stderr, "something leaked\n");
        return 1;
    }
    printf("blocking_driver: ok, nothing left attached\n");
    return 0;
}
