/* state_file.c — the durable state file: the blocking store the C API and
 * the Lua module attach to a controller (scsictl_set_state_file,
 * scsictl_open). All of the library's file I/O is here; the core asks for
 * writes (persist.c) and never does one.
 *
 * A write: the snapshot goes to a uniquely named temporary file beside the
 * target ("<target>.tmp-XXXXXX"), which is fsynced and renamed over the
 * target, then the directory is fsynced; after a crash at any instant the
 * file holds the previous or the new state. No lock of the controller is
 * held meanwhile. One write is in flight at a time: callers whose changes
 * come in meanwhile wait on `changed` and the first of them writes for all
 * (group commit).
 *
 * One owner per file: "<target>.lock" is flock'ed for the store's lifetime
 * (a second owner, in this process or another, is refused with BUSY) and
 * holds the owner's pid for the refusal's message. */
#define _GNU_SOURCE /* flock, mkostemp */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "internal.h"

typedef struct file_store {
    sc_store base;
    scsictl_allocator alloc;
    char *target;   /* absolute, symbolic links resolved */
    int lock_fd;
    pthread_mutex_t mu; /* guards the fields below and the write in flight */
    pthread_cond_t changed;
    char last_error[SCSICTL_MESSAGE_MAX]; /* of the latest failed write */
} file_store;

static int io_fail(scsictl_error *err, const char *what, const char *path)
{
    return sc_fail(err, SCSICTL_E_IO, "state file: cannot %s '%.200s': %s", what, path,
                   strerror(errno));
}

static char *str_concat(const scsictl_allocator *a, const char *x, const char *y)
{
    size_t nx = strlen(x), ny = strlen(y);
    char *s = sc_malloc(a, nx + ny + 1);
    if (s) {
        memcpy(s, x, nx);
        memcpy(s + nx, y, ny + 1);
    }
    return s;
}

/* ---- resolving the path ------------------------------------------------ */

/* The file to write for `path`: absolute, with every symbolic link of its
 * directories resolved, and, when path itself is a link, its target (so
 * the link stays a link). A dangling link, a path to something other than
 * a regular file and a missing directory are refused (IO). */
static int resolve(const scsictl_allocator *a, const char *path, bool must_exist, char **out,
                   scsictl_error *err)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (S_ISLNK(st.st_mode) && stat(path, &st) != 0)
            return sc_fail(err, SCSICTL_E_IO,
                           "state file: '%.200s' is a symbolic link to a missing file: %s",
                           path, strerror(errno));
        if (!S_ISREG(st.st_mode))
            return sc_fail(err, SCSICTL_E_IO, "state file: '%.200s' is not a regular file",
                           path);
        char *real = realpath(path, NULL);
        if (!real)
            return io_fail(err, "resolve", path);
        *out = str_concat(a, real, "");
        free(real);
        return *out ? SCSICTL_OK : sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    }
    if (errno != ENOENT || must_exist)
        return io_fail(err, must_exist ? "open" : "look up", path);
    /* A new file: resolve its directory, keep its name. */
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (!*name)
        return sc_fail(err, SCSICTL_E_IO, "state file: '%.200s' names a directory", path);
    char *dir = slash ? sc_malloc(a, (size_t)(slash - path) + 2) : NULL;
    if (slash && !dir)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    if (dir) {
        size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x": the root */
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    char *real = realpath(dir ? dir : ".", NULL);
    int saved = errno;
    sc_free(a, dir);
    if (!real) {
        errno = saved;
        return io_fail(err, "find the directory of", path);
    }
    char *with_slash = str_concat(a, real, strcmp(real, "/") == 0 ? "" : "/");
    free(real);
    *out = with_slash ? str_concat(a, with_slash, name) : NULL;
    sc_free(a, with_slash);
    return *out ? SCSICTL_OK : sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
}

/* ---- the owner's lock ---------------------------------------------------- */

static int take_lock(file_store *s, const char *shown, scsictl_error *err)
{
    char *lock_path = str_concat(&s->alloc, s->target, ".lock");
    if (!lock_path)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    int rc = SCSICTL_OK;
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        rc = io_fail(err, "create the lock", lock_path);
    } else if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            char pid[24] = "";
            ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
            pid[n > 0 ? n : 0] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
            rc = sc_fail(err, SCSICTL_E_BUSY,
                         "state file: '%.200s' is in use by another controller%s%s%s",
                         shown, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        } else {
            rc = io_fail(err, "lock", lock_path);
        }
    } else {
        char pid[24];
        int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        /* the pid only names the owner in a refusal: best effort */
        if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) < 0)
            pid[0] = '\0';
    }
    if (rc != SCSICTL_OK && fd >= 0)
        close(fd);
    else if (rc == SCSICTL_OK)
        s->lock_fd = fd;
    sc_free(&s->alloc, lock_path);
    return rc;
}

/* ---- writing ----------------------------------------------------------- */

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

static int fsync_dir_of(const file_store *s, scsictl_error *err)
{
    const char *slash = strrchr(s->target, '/'); /* absolute: there is one */
    size_t n = slash == s->target ? 1 : (size_t)(slash - s->target);
    char *dir = sc_malloc(&s->alloc, n + 1);
    if (!dir)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    memcpy(dir, s->target, n);
    dir[n] = '\0';
    int rc = SCSICTL_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = io_fail(err, "sync the directory of", s->target);
    if (fd >= 0)
        close(fd);
    sc_free(&s->alloc, dir);
    return rc;
}

static int write_atomic(const file_store *s, const char *buf, size_t len, scsictl_error *err)
{
    char *tmp = str_concat(&s->alloc, s->target, ".tmp-XXXXXX");
    if (!tmp)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    int rc = SCSICTL_OK;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = io_fail(err, "create", tmp);
    } else {
        bool ok = fchmod(fd, 0644) == 0 && write_all(fd, buf, len) && fsync(fd) == 0;
        if (!ok)
            rc = io_fail(err, "write", tmp);
        if (close(fd) != 0 && rc == SCSICTL_OK)
            rc = io_fail(err, "write", tmp);
        if (rc == SCSICTL_OK && rename(tmp, s->target) != 0)
            rc = io_fail(err, "replace", s->target);
        if (rc != SCSICTL_OK)
            unlink(tmp);
    }
    sc_free(&s->alloc, tmp);
    return rc == SCSICTL_OK ? fsync_dir_of(s, err) : rc;
}

/* The store's sync: returns once the write carrying change seq ended,
 * writing it if no other caller is. */
static int file_sync(sc_store *base, scsictl *ctl, uint64_t seq, bool tentative,
                     scsictl_error *err)
{
    file_store *s = (file_store *)base;
    int rc;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        sc_write w;
        rc = sc_write_begin(ctl, seq, tentative, &w, err);
        if (rc == SCSICTL_E_BUSY) {
            pthread_cond_wait(&s->changed, &s->mu);
            continue;
        }
        if (rc != SCSICTL_STEP)
            break;
        pthread_mutex_unlock(&s->mu);
        scsictl_error werr;
        bool ok = write_atomic(s, w.data, w.len, &werr) == SCSICTL_OK;
        pthread_mutex_lock(&s->mu);
        if (!ok)
            memcpy(s->last_error, werr.message, sizeof s->last_error);
        sc_write_end(ctl, &w, ok);
        pthread_cond_broadcast(&s->changed);
    }
    if (rc == SCSICTL_E_IO)
        sc_fail(err, SCSICTL_E_IO, "%s", s->last_error);
    pthread_mutex_unlock(&s->mu);
    return rc == SCSICTL_DONE ? SCSICTL_OK : rc;
}

static void file_destroy(sc_store *base)
{
    file_store *s = (file_store *)base;
    scsictl_allocator a = s->alloc;
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* gives up the flock */
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->mu);
    sc_free(&a, s->target);
    sc_free(&a, s);
}

/* A store owning the state file at path (resolved and locked). */
static int store_new(const scsictl_allocator *a, const char *path, bool must_exist,
                     file_store **out, scsictl_error *err)
{
    file_store *s = sc_calloc(a, 1, sizeof *s);
    if (!s)
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: out of memory");
    s->base.sync = file_sync;
    s->base.destroy = file_destroy;
    s->alloc = *a;
    s->lock_fd = -1;
    strcpy(s->last_error, "state file: the write failed");
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        sc_free(a, s);
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: cannot make a mutex");
    }
    if (pthread_cond_init(&s->changed, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        sc_free(a, s);
        return sc_fail(err, SCSICTL_E_NO_MEMORY, "state file: cannot make a condition");
    }
    int rc = resolve(a, path, must_exist, &s->target, err);
    s->base.target = s->target;
    if (rc == SCSICTL_OK)
        rc = take_lock(s, path, err);
    if (rc != SCSICTL_OK) {
        file_destroy(&s->base);
        return rc;
    }
    *out = s;
    return SCSICTL_OK;
}

/* ---- the public functions ------------------------------------------------ */

int scsictl_set_state_file(scsictl *ctl, const char *path, scsictl_error *err)
{
    if (!ctl || !path || !path[0])
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "state file: no path");
    sc_lock_acquire(&ctl->lock);
    bool has_one = ctl->store != NULL;
    sc_lock_release(&ctl->lock);
    if (has_one) /* before the lock file, which this controller may hold */
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "state file: one is set already");
    file_store *s;
    int rc = store_new(&ctl->alloc, path, false, &s, err);
    if (rc != SCSICTL_OK)
        return rc;
    uint64_t seq = 0;
    sc_lock_acquire(&ctl->lock);
    rc = sc_store_attach(ctl, &s->base, err);
    if (rc == SCSICTL_OK)
        seq = sc_changed(ctl); /* the whole state is written now */
    sc_lock_release(&ctl->lock);
    if (rc == SCSICTL_OK)
        rc = sc_sync(ctl, seq, false, err);
    if (rc != SCSICTL_OK) {
        sc_lock_acquire(&ctl->lock);
        if (ctl->store == &s->base)
            ctl->store = NULL;
        sc_lock_release(&ctl->lock);
        file_destroy(&s->base);
    }
    return rc;
}

int scsictl_read_file(const char *path, const scsictl_allocator *allocator, char **out,
                      size_t *len, scsictl_error *err)
{
    const scsictl_allocator *a = allocator ? allocator : &sc_default_allocator;
    if (!path || !out || !len)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "read: missing argument");
    /* O_NONBLOCK: a FIFO is refused below rather than waited on */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
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
    return scsictl_open_remap(path, allocator, NULL, out, err);
}

int scsictl_open_remap(const char *path, const scsictl_allocator *allocator,
                       const scsictl_remap *remap, scsictl **out, scsictl_error *err)
{
    const scsictl_allocator *a = allocator ? allocator : &sc_default_allocator;
    if (!path || !out)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "open: missing argument");
    if (!a->malloc_fn || !a->realloc_fn || !a->free_fn)
        return sc_fail(err, SCSICTL_E_INVALID_ARGUMENT, "open: incomplete allocator");
    file_store *s;
    int rc = store_new(a, path, true, &s, err); /* owner first: nobody writes meanwhile */
    if (rc != SCSICTL_OK)
        return rc;
    char *buf;
    size_t len;
    rc = scsictl_read_file(s->target, a, &buf, &len, err);
    scsictl *ctl = NULL;
    if (rc == SCSICTL_OK) {
        rc = scsictl_import_remap(buf, len, a, remap, &ctl, err);
        sc_free(a, buf);
    }
    uint64_t seq = 0;
    if (rc == SCSICTL_OK) {
        sc_lock_acquire(&ctl->lock);
        rc = sc_store_attach(ctl, &s->base, err);
        ctl->durable = ctl->seq; /* the file holds exactly this state */
        if (remap) /* ... but for the paths: written now */
            seq = sc_changed(ctl);
        sc_lock_release(&ctl->lock);
    }
    if (rc == SCSICTL_OK && seq && (rc = sc_sync(ctl, seq, false, err)) != SCSICTL_OK) {
        scsictl_free(ctl); /* the store went with it */
        return rc;
    }
    if (rc != SCSICTL_OK) {
        scsictl_free(ctl);
        file_destroy(&s->base);
        return rc;
    }
    *out = ctl;
    return SCSICTL_OK;
}
