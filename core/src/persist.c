/* persist.c — the durable state file.
 *
 * After every change the whole snapshot is written to "<path>.tmp", fsynced,
 * renamed over <path>, and the directory is fsynced, so after a crash at any
 * instant the file holds either the previous or the new state. The write
 * happens under the controller's lock (it is file I/O, not a backend call),
 * which keeps writes in the order of the changes they record. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "internal.h"

static int io_fail(scsictl_error *err, const char *what, const char *path)
{
    return sc_fail(err, SCSICTL_E_IO, "state file: cannot %s '%.200s': %s", what, path,
                   strerror(errno));
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static int fsync_dir_of(const char *path, scsictl_error *err, const scsictl_allocator *a)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    if (slash == path)
        n = 1; /* the root directory */
    char *dir = sc_malloc(a, n + 1);
    if (!dir)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    memcpy(dir, slash ? path : ".", n);
    dir[n] = '\0';
    int rc = SCSICTL_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = io_fail(err, "sync the directory of", path);
    if (fd >= 0)
        close(fd);
    sc_free(a, dir);
    return rc;
}

static int write_atomic(const scsictl_allocator *a, const char *path, const char *buf,
                        size_t len, scsictl_error *err)
{
    size_t plen = strlen(path);
    char *tmp = sc_malloc(a, plen + 5);
    if (!tmp)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int rc = SCSICTL_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = io_fail(err, "create", tmp);
    } else {
        bool ok = write_all(fd, buf, len) && fsync(fd) == 0;
        if (!ok)
            rc = io_fail(err, "write", tmp);
        if (close(fd) != 0 && rc == SCSICTL_OK)
            rc = io_fail(err, "write", tmp);
        if (rc == SCSICTL_OK && rename(tmp, path) != 0)
            rc = io_fail(err, "replace", path);
        if (rc != SCSICTL_OK)
            unlink(tmp);
    }
    sc_free(a, tmp);
    return rc == SCSICTL_OK ? fsync_dir_of(path, err, a) : rc;
}

int sc_persist_write(scsictl *ctl, scsictl_error *err)
{
    char *buf;
    size_t len;
    int rc = sc_snapshot_write(ctl, &buf, &len, err);
    if (rc != SCSICTL_OK)
        return rc;
    rc = write_atomic(&ctl->alloc, ctl->state_path, buf, len, err);
    sc_free(&ctl->alloc, buf);
    if (rc == SCSICTL_OK)
        ctl->dirty = false;
    return rc;
}

int scsictl_set_state_file(scsictl *ctl, const char *path, scsictl_error *err)
{
    if (!ctl || !path || !path[0])
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "state file: no path");
    size_t n = strlen(path) + 1;
    char *copy = sc_malloc(&ctl->alloc, n);
    if (!copy)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    memcpy(copy, path, n);
    int rc;
    sc_lock_acquire(&ctl->lock);
    if (ctl->inflight) {
        rc = sc_fail(err, SCSICTL_E_BUSY, "state file: a backend call is in flight");
        sc_free(&ctl->alloc, copy);
    } else {
        char *old = ctl->state_path;
        bool was_dirty = ctl->dirty;
        ctl->state_path = copy;
        ctl->dirty = true;
        rc = sc_persist_locked(ctl, err);
        if (rc != SCSICTL_OK) {
            ctl->state_path = old;
            ctl->dirty = was_dirty;
            sc_free(&ctl->alloc, copy);
        } else {
            sc_free(&ctl->alloc, old);
        }
    }
    sc_lock_release(&ctl->lock);
    return rc;
}

int scsictl_read_file(const char *path, const scsictl_allocator *allocator, char **out,
                      size_t *len, scsictl_error *err)
{
    const scsictl_allocator *a = allocator ? allocator : &sc_default_allocator;
    if (!path || !out || !len)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "read: missing argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return io_fail(err, "open", path);
    struct stat st;
    int rc = SCSICTL_OK;
    char *buf = NULL;
    size_t n = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) {
        errno = errno ? errno : EINVAL;
        rc = io_fail(err, "read", path);
    } else if (!(buf = sc_malloc(a, (size_t)st.st_size + 1))) {
        rc = sc_fail(err, SCSICTL_E_NO_MEMORY, "read: out of memory for '%.200s'", path);
    } else {
        while (n < (size_t)st.st_size) {
            ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            n += (size_t)r;
        }
        if (n != (size_t)st.st_size) {
            rc = io_fail(err, "read", path);
            sc_free(a, buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    close(fd);
    if (rc == SCSICTL_OK) {
        *out = buf;
        *len = n;
    }
    return rc;
}

int scsictl_open(const char *path, const scsictl_allocator *allocator, scsictl **out,
                 scsictl_error *err)
{
    const scsictl_allocator *a = allocator ? allocator : &sc_default_allocator;
    if (!path || !out)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "open: missing argument");
    char *buf;
    size_t len;
    int rc = scsictl_read_file(path, a, &buf, &len, err);
    if (rc != SCSICTL_OK)
        return rc;
    scsictl *ctl;
    rc = scsictl_import(buf, len, a, &ctl, err);
    sc_free(a, buf);
    if (rc != SCSICTL_OK)
        return rc;
    size_t n = strlen(path) + 1;
    ctl->state_path = sc_malloc(a, n);
    if (!ctl->state_path) {
        scsictl_free(ctl);
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "open: out of memory");
    }
    memcpy(ctl->state_path, path, n);
    *out = ctl;
    return SCSICTL_OK;
}
