/*
 * test_util.h — the C tests' tiny assertion framework, a recording backend
 * and helpers that drive the step interface by hand.
 *
 * Assertions: CHECK(cond), CHECK_EQ(a, b), CHECK_STR(a, b), CHECK_CODE(got,
 * want), CHECK_CONTAINS(haystack, needle). Each prints file:line on failure
 * and counts; tu_finish() prints "N passed, N failed" and returns the exit
 * status (non-zero on any failure). The counters are atomic, so threads may
 * CHECK too.
 *
 * Recording backend (rec_backend): a scsictl_callbacks implementation that
 * logs every call (kind, controller, lun, partition, host path, guest path
 * and the settings it received) and can be told to fail the next N calls of
 * one step kind with a message (rec_fail_next), or to follow a positional
 * script of results ("of" = first call ok, second fails; rec_script). The
 * same log and the same failure decisions serve the op driver (tu_drive),
 * which runs scsictl_op_start_map / scsictl_op_start_unmap and feeds the
 * results to scsictl_op_report by hand.
 *
 * Everything here is static so each test file is one translation unit.
 */
#ifndef SCSICTL_TEST_UTIL_H
#define SCSICTL_TEST_UTIL_H

#include "scsictl.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Assertions                                                                */
/* ------------------------------------------------------------------------ */

static atomic_int tu_passed;
static atomic_int tu_failed;
static const char *tu_test_name = "";

static inline bool tu_check(bool ok, const char *file, int line,
                            const char *fmt, ...)
{
    if (ok) {
        atomic_fetch_add(&tu_passed, 1);
        return true;
    }
    atomic_fetch_add(&tu_failed, 1);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: FAIL [%s] ", file, line, tu_test_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return false;
}

#define CHECK(cond) tu_check((cond) ? true : false, __FILE__, __LINE__, "%s", #cond)

#define CHECK_EQ(a, b)                                                       \
    do {                                                                     \
        long long tu_a_ = (long long)(a), tu_b_ = (long long)(b);            \
        tu_check(tu_a_ == tu_b_, __FILE__, __LINE__,                         \
                 "%s == %s (%lld != %lld)", #a, #b, tu_a_, tu_b_);           \
    } while (0)

#define CHECK_STR(a, b)                                                      \
    do {                                                                     \
        const char *tu_sa_ = (a), *tu_sb_ = (b);                             \
        tu_check(tu_sa_ && tu_sb_ && strcmp(tu_sa_, tu_sb_) == 0, __FILE__,  \
                 __LINE__, "%s == %s\n      got:  \"%s\"\n      want: \"%s\"",\
                 #a, #b, tu_sa_ ? tu_sa_ : "(null)",                         \
                 tu_sb_ ? tu_sb_ : "(null)");                                \
    } while (0)

#define CHECK_CODE(got, want)                                                \
    do {                                                                     \
        int tu_g_ = (int)(got), tu_w_ = (int)(want);                         \
        tu_check(tu_g_ == tu_w_, __FILE__, __LINE__, "%s: got %s, want %s", \
                 #got, scsictl_code_name(tu_g_), scsictl_code_name(tu_w_));  \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                          \
    do {                                                                     \
        const char *tu_h_ = (hay), *tu_n_ = (needle);                        \
        tu_check(tu_h_ && tu_n_ && strstr(tu_h_, tu_n_) != NULL, __FILE__,   \
                 __LINE__, "\"%s\" contains \"%s\"", tu_h_ ? tu_h_ : "(null)",\
                 tu_n_ ? tu_n_ : "(null)");                                  \
    } while (0)

#define TEST(name) (tu_test_name = (name), fprintf(stderr, "-- %s\n", (name)))

static inline int tu_finish(void)
{
    int p = atomic_load(&tu_passed), f = atomic_load(&tu_failed);
    printf("%d passed, %d failed\n", p, f);
    fflush(stdout);
    return f ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static inline scsictl *tu_new(uint32_t controllers, uint32_t luns,
                              scsictl_guest guest)
{
    scsictl_options o;
    memset(&o, 0, sizeof o);
    o.controllers = controllers;
    o.luns_per_controller = luns;
    o.guest = guest;
    scsictl *ctl = NULL;
    scsictl_error err;
    int rc = scsictl_new(&o, &ctl, &err);
    if (rc != SCSICTL_OK || !ctl) {
        fprintf(stderr, "scsictl_new(%u, %u) failed: %s\n", controllers, luns,
                rc ? err.message : "(null controller)");
        exit(2);
    }
    return ctl;
}

static inline scsictl_disk_config tu_disk(const char *path)
{
    scsictl_disk_config d;
    memset(&d, 0, sizeof d);
    d.host_path = path;
    d.type = SCSICTL_DISK_VIRTUAL_DISK;
    return d;
}

static inline scsictl_mount_config tu_mount(uint64_t partition)
{
    scsictl_mount_config m;
    memset(&m, 0, sizeof m);
    m.partition = partition;
    return m;
}

/* Reserve, returning the code; *id written on success. */
static inline int tu_reserve(scsictl *ctl, const char *path, uint64_t part,
                             scsictl_id *id)
{
    scsictl_disk_config d = tu_disk(path);
    scsictl_mount_config m = tu_mount(part);
    scsictl_error err;
    return scsictl_reserve(ctl, &d, &m, id, &err);
}

static inline void tu_id_str(const scsictl_id *id, char out[SCSICTL_ID_STRLEN + 1])
{
    scsictl_id_format(id, out);
}

/* splitmix64, the tests' seeded generator: *state is the seed and advances
 * by one draw. */
static inline uint64_t tu_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A syntactically valid id that the controller never handed out. */
static inline scsictl_id tu_unknown_id(unsigned salt)
{
    scsictl_id id;
    for (int i = 0; i < 16; i++)
        id.bytes[i] = (uint8_t)(0xA5u ^ (unsigned)(i * 37) ^ salt);
    id.bytes[6] = (uint8_t)((id.bytes[6] & 0x0F) | 0x40);
    id.bytes[8] = (uint8_t)((id.bytes[8] & 0x3F) | 0x80);
    return id;
}

/* ------------------------------------------------------------------------ */
/* Recording backend                                                         */
/* ------------------------------------------------------------------------ */

#define REC_MAX_CALLS 2048
#define REC_PATH_MAX 128
#define REC_MAX_OPTS 4
#define REC_MAX_SLOTS 64

typedef struct rec_call {
    scsictl_step_kind kind;
    uint32_t controller;
    uint32_t lun;
    uint64_t partition;
    char host_path[REC_PATH_MAX];    /* "" when the call does not name one */
    char guest_path[SCSICTL_GUEST_PATH_MAX];
    bool failed;                     /* the result given back */
    /* attachment (ADD) */
    bool disk_read_only;
    scsictl_disk_type disk_type;
    bool has_evd_type;
    char evd_type[32];
    /* Linux settings (mount / unmount) */
    bool read_only, encrypted, ensure_filesystem, block_dev;
    char filesystem[32];
    size_t n_options;
    char options[REC_MAX_OPTS][32];
} rec_call;

typedef struct rec_slot_path {
    bool used;
    uint32_t controller, lun;
    char path[REC_PATH_MAX];
} rec_slot_path;

typedef struct rec_backend {
    scsictl_callbacks cb;        /* cb.user == this                       */
    scsictl_guest guest;
    rec_call calls[REC_MAX_CALLS];
    size_t n;                    /* calls logged                          */
    int fail_next[SCSICTL_STEP_KIND_COUNT];
    char fail_msg[SCSICTL_STEP_KIND_COUNT][128];
    const char *script;          /* 'o' ok / 'f' fail per call, or NULL   */
    size_t script_pos;
    const char *script_msg;      /* message for scripted failures         */
    /* what the blocking callbacks believe is at each slot (from adds) */
    rec_slot_path slots[REC_MAX_SLOTS];
    /* optional hook run inside every call (re-entrancy tests) */
    void (*hook)(struct rec_backend *r, const rec_call *c);
    void *hook_data;
} rec_backend;

static inline void rec_copy(char *dst, size_t size, const char *src)
{
    if (!src) src = "";
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static inline const char *rec_slot_lookup(rec_backend *r, uint32_t c, uint32_t l)
{
    for (int i = 0; i < REC_MAX_SLOTS; i++)
        if (r->slots[i].used && r->slots[i].controller == c && r->slots[i].lun == l)
            return r->slots[i].path;
    return "";
}

static inline void rec_slot_set(rec_backend *r, uint32_t c, uint32_t l,
                                const char *path)
{
    for (int i = 0; i < REC_MAX_SLOTS; i++)
        if (r->slots[i].used && r->slots[i].controller == c && r->slots[i].lun == l) {
            r->slots[i].used = path != NULL;
            if (path) rec_copy(r->slots[i].path, REC_PATH_MAX, path);
            return;
        }
    if (!path) return;
    for (int i = 0; i < REC_MAX_SLOTS; i++)
        if (!r->slots[i].used) {
            r->slots[i].used = true;
            r->slots[i].controller = c;
            r->slots[i].lun = l;
            rec_copy(r->slots[i].path, REC_PATH_MAX, path);
            return;
        }
}

/* Fail the next n calls of `kind` with msg (NULL: no message). */
static inline void rec_fail_next(rec_backend *r, scsictl_step_kind kind, int n,
                                 const char *msg)
{
    r->fail_next[kind] = n;
    rec_copy(r->fail_msg[kind], sizeof r->fail_msg[kind], msg);
}

/* Positional results for the following calls: 'o' ok, 'f' fail; calls past
 * the end of the script succeed. NULL clears it. */
static inline void rec_script(rec_backend *r, const char *script, const char *msg)
{
    r->script = script;
    r->script_pos = 0;
    r->script_msg = msg;
}

/* Decides the result of the next call of `kind`; *msg is the failure
 * message (may be ""). */
static inline bool rec_decide(rec_backend *r, scsictl_step_kind kind,
                              const char **msg)
{
    *msg = "";
    if (r->script && r->script[r->script_pos]) {
        char c = r->script[r->script_pos++];
        if (c == 'f') {
            *msg = r->script_msg ? r->script_msg : "scripted failure";
            return false;
        }
        return true;
    }
    if (r->fail_next[kind] > 0) {
        r->fail_next[kind]--;
        *msg = r->fail_msg[kind];
        return false;
    }
    return true;
}

/* Logs c, decides its result, writes the message. Returns 0 / 1. */
static inline int rec_record(rec_backend *r, rec_call *c, char *msg, size_t msg_size)
{
    const char *m;
    bool ok = rec_decide(r, c->kind, &m);
    c->failed = !ok;
    if (r->n < REC_MAX_CALLS)
        r->calls[r->n] = *c;
    r->n++;
    if (r->hook) r->hook(r, c);
    if (!ok && msg && msg_size) rec_copy(msg, msg_size, m);
    return ok ? 0 : 1;
}

static inline void rec_fill_linux(rec_call *c, const scsictl_linux_settings *s)
{
    c->controller = s->controller;
    c->lun = s->lun;
    c->partition = s->partition;
    rec_copy(c->guest_path, sizeof c->guest_path, s->mount_path);
    c->read_only = s->read_only;
    c->encrypted = s->encrypted;
    c->ensure_filesystem = s->ensure_filesystem;
    c->block_dev = s->block_dev;
    rec_copy(c->filesystem, sizeof c->filesystem, s->filesystem);
    c->n_options = s->n_options;
    for (size_t i = 0; i < s->n_options && i < REC_MAX_OPTS; i++)
        rec_copy(c->options[i], sizeof c->options[i],
                 s->options ? s->options[i] : "(null array)");
}

/* Windows settings carry only the container path and the lun: the
 * controller and partition are read back from the path. */
static inline void rec_fill_windows(rec_call *c, const scsictl_windows_settings *s)
{
    unsigned ctl_ = 0xFFFFFFFFu, lun_ = 0xFFFFFFFFu;
    unsigned long long part = 0xFFFFFFFFull;
    rec_copy(c->guest_path, sizeof c->guest_path, s->container_path);
    if (!s->container_path ||
        sscanf(s->container_path, "C:\\mounts\\scsi\\%u_%u_%llu", &ctl_, &lun_, &part) != 3) {
        ctl_ = 0xFFFFFFFFu;
        part = 0xFFFFFFFFull;
    }
    c->controller = ctl_;
    c->lun = s->lun;
    c->partition = part;
}

static inline void rec_fill_disk(rec_call *c, const scsictl_disk_config *d)
{
    if (!d) return;
    rec_copy(c->host_path, sizeof c->host_path, d->host_path);
    c->disk_read_only = d->read_only;
    c->disk_type = d->type;
    c->has_evd_type = d->evd_type != NULL;
    rec_copy(c->evd_type, sizeof c->evd_type, d->evd_type);
}

/* A zeroed call of `kind` at controller:lun. */
static inline rec_call rec_call_at(scsictl_step_kind kind, uint32_t ctl_, uint32_t lun)
{
    rec_call c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.controller = ctl_;
    c.lun = lun;
    return c;
}

/* Logs c with the host path the adds put at its slot; returns 0 / 1. */
static inline int rec_record_at_slot(rec_backend *r, rec_call *c, char *msg, size_t n)
{
    rec_copy(c->host_path, sizeof c->host_path, rec_slot_lookup(r, c->controller, c->lun));
    return rec_record(r, c, msg, n);
}

static inline int rec_cb_add(void *u, const scsictl_disk_config *a, uint32_t ctl_,
                      uint32_t lun, char *msg, size_t n)
{
    rec_backend *r = u;
    rec_call c = rec_call_at(SCSICTL_STEP_ADD_SCSI_DISK, ctl_, lun);
    rec_fill_disk(&c, a);
    int rc = rec_record(r, &c, msg, n);
    if (rc == 0) rec_slot_set(r, ctl_, lun, c.host_path);
    return rc;
}

static inline int rec_cb_remove(void *u, uint32_t ctl_, uint32_t lun, char *msg, size_t n)
{
    rec_backend *r = u;
    rec_call c = rec_call_at(SCSICTL_STEP_REMOVE_SCSI_DISK, ctl_, lun);
    int rc = rec_record_at_slot(r, &c, msg, n);
    if (rc == 0) rec_slot_set(r, ctl_, lun, NULL);
    return rc;
}

static inline int rec_cb_eject(void *u, uint32_t ctl_, uint32_t lun, char *msg, size_t n)
{
    rec_call c = rec_call_at(SCSICTL_STEP_LINUX_EJECT, ctl_, lun);
    return rec_record_at_slot(u, &c, msg, n);
}

/* The mount-level callbacks: the slot comes from the settings. */
static inline int rec_linux(void *u, scsictl_step_kind k, const scsictl_linux_settings *s,
                     char *msg, size_t n)
{
    rec_call c = rec_call_at(k, 0, 0);
    rec_fill_linux(&c, s);
    return rec_record_at_slot(u, &c, msg, n);
}

static inline int rec_windows(void *u, scsictl_step_kind k, const scsictl_windows_settings *s,
                       char *msg, size_t n)
{
    rec_call c = rec_call_at(k, 0, 0);
    rec_fill_windows(&c, s);
    return rec_record_at_slot(u, &c, msg, n);
}

static inline int rec_cb_lmount(void *u, const scsictl_linux_settings *s, char *m, size_t n)
{
    return rec_linux(u, SCSICTL_STEP_LINUX_MOUNT, s, m, n);
}

static inline int rec_cb_lunmount(void *u, const scsictl_linux_settings *s, char *m, size_t n)
{
    return rec_linux(u, SCSICTL_STEP_LINUX_UNMOUNT, s, m, n);
}

static inline int rec_cb_wmount(void *u, const scsictl_windows_settings *s, char *m, size_t n)
{
    return rec_windows(u, SCSICTL_STEP_WINDOWS_MOUNT, s, m, n);
}

static inline int rec_cb_wscratch(void *u, const scsictl_windows_settings *s, char *m, size_t n)
{
    return rec_windows(u, SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH, s, m, n);
}

static inline int rec_cb_wunmount(void *u, const scsictl_windows_settings *s, char *m, size_t n)
{
    return rec_windows(u, SCSICTL_STEP_WINDOWS_UNMOUNT, s, m, n);
}

/* r is large: allocate it (rec_new) rather than putting it on the stack. */
static inline void rec_init(rec_backend *r, scsictl_guest guest)
{
    memset(r, 0, sizeof *r);
    r->guest = guest;
    r->cb.user = r;
    r->cb.add_scsi_disk = rec_cb_add;
    r->cb.remove_scsi_disk = rec_cb_remove;
    r->cb.linux_mount = rec_cb_lmount;
    r->cb.linux_unmount = rec_cb_lunmount;
    r->cb.linux_eject = rec_cb_eject;
    r->cb.windows_mount = rec_cb_wmount;
    r->cb.windows_mount_scratch = rec_cb_wscratch;
    r->cb.windows_unmount = rec_cb_wunmount;
}

static inline rec_backend *rec_new(scsictl_guest guest)
{
    rec_backend *r = malloc(sizeof *r);
    if (!r) { fprintf(stderr, "out of memory\n"); exit(2); }
    rec_init(r, guest);
    return r;
}

/* Forgets the log (not the failure settings nor the slot map). */
static inline void rec_clear(rec_backend *r) { r->n = 0; }

/* A test on a fresh controller with a recording backend of the same guest:
 * TEST(name), then body(ctl, r, err) on `controllers` x `luns` (err for the
 * body's calls); both are freed afterwards. */
typedef void tu_body(scsictl *ctl, rec_backend *r, scsictl_error *err);

static inline void tu_run(const char *name, uint32_t controllers, uint32_t luns,
                          scsictl_guest guest, tu_body *body)
{
    TEST(name);
    scsictl *ctl = tu_new(controllers, luns, guest);
    rec_backend *r = rec_new(guest);
    scsictl_error err;
    body(ctl, r, &err);
    free(r);
    scsictl_free(ctl);
}

static inline const char *rec_kind_short(scsictl_step_kind k)
{
    switch (k) {
    case SCSICTL_STEP_ADD_SCSI_DISK: return "add";
    case SCSICTL_STEP_REMOVE_SCSI_DISK: return "remove";
    case SCSICTL_STEP_LINUX_MOUNT: return "mount";
    case SCSICTL_STEP_LINUX_UNMOUNT: return "unmount";
    case SCSICTL_STEP_LINUX_EJECT: return "eject";
    case SCSICTL_STEP_WINDOWS_MOUNT: return "wmount";
    case SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH: return "wscratch";
    case SCSICTL_STEP_WINDOWS_UNMOUNT: return "wunmount";
    default: return "?";
    }
}

static inline bool rec_kind_is_mount_level(scsictl_step_kind k)
{
    return k == SCSICTL_STEP_LINUX_MOUNT || k == SCSICTL_STEP_LINUX_UNMOUNT ||
           k == SCSICTL_STEP_WINDOWS_MOUNT || k == SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH ||
           k == SCSICTL_STEP_WINDOWS_UNMOUNT;
}

/* One call as text:
 *   "add c:l path", "remove c:l", "eject c:l", "<kind> c:l:p path". */
static inline void rec_format_call(const rec_call *c, char *out, size_t size)
{
    if (c->kind == SCSICTL_STEP_ADD_SCSI_DISK)
        snprintf(out, size, "add %u:%u %s", c->controller, c->lun, c->host_path);
    else if (rec_kind_is_mount_level(c->kind))
        snprintf(out, size, "%s %u:%u:%llu %s", rec_kind_short(c->kind), c->controller,
                 c->lun, (unsigned long long)c->partition, c->host_path);
    else
        snprintf(out, size, "%s %u:%u", rec_kind_short(c->kind), c->controller, c->lun);
}

/* Calls [from, n) as "a, b, c". */
static inline void rec_format(const rec_backend *r, size_t from, char *out, size_t size)
{
    out[0] = '\0';
    size_t len = 0;
    for (size_t i = from; i < r->n && i < REC_MAX_CALLS; i++) {
        char one[256];
        rec_format_call(&r->calls[i], one, sizeof one);
        int w = snprintf(out + len, size - len, "%s%s", len ? ", " : "", one);
        if (w < 0 || (size_t)w >= size - len) break;
        len += (size_t)w;
    }
}

/* rec_format of the calls logged since `from`, in a buffer of its own (valid
 * until the next call). */
static inline const char *rec_calls_since(const rec_backend *r, size_t from)
{
    static char buf[2048];
    rec_format(r, from, buf, sizeof buf);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Driving the step interface by hand                                        */
/* ------------------------------------------------------------------------ */

/* A step as a rec_call (the same shape the blocking callbacks log). */
static inline void rec_call_from_step(scsictl_guest guest, const scsictl_step *s,
                                      rec_call *c)
{
    memset(c, 0, sizeof *c);
    c->kind = s->kind;
    c->controller = s->controller;
    c->lun = s->lun;
    switch (s->kind) {
    case SCSICTL_STEP_ADD_SCSI_DISK:
        rec_fill_disk(c, s->disk);
        break;
    case SCSICTL_STEP_REMOVE_SCSI_DISK:
    case SCSICTL_STEP_LINUX_EJECT:
        if (s->disk) rec_copy(c->host_path, sizeof c->host_path, s->disk->host_path);
        break;
    case SCSICTL_STEP_LINUX_MOUNT:
    case SCSICTL_STEP_LINUX_UNMOUNT: {
        scsictl_linux_settings ls;
        scsictl_step_linux_settings(s, &ls);
        rec_fill_linux(c, &ls);
        if (s->disk) rec_copy(c->host_path, sizeof c->host_path, s->disk->host_path);
        break;
    }
    default: {
        scsictl_windows_settings ws;
        scsictl_step_windows_settings(s, &ws);
        rec_fill_windows(c, &ws);
        if (s->disk) rec_copy(c->host_path, sizeof c->host_path, s->disk->host_path);
        break;
    }
    }
    (void)guest;
}

/* Runs one map (is_map) or unmap operation of *id through the step
 * interface: every step is logged into r and answered as r decides
 * (script / fail_next). Returns the final code: SCSICTL_DONE, or the error
 * of start/report. op->guest_path holds the path after a DONE map. */
/* After SCSICTL_PERSIST: the blocking write through the controller's store,
 * then scsictl_op_persisted, as a driver does. */
static inline int tu_persist(scsictl *ctl, scsictl_op *op, scsictl_error *err)
{
    scsictl_error perr;
    bool ok = scsictl_persist(ctl, op->persist_seq, &perr) == SCSICTL_OK;
    return scsictl_op_persisted(ctl, op, ok, ok ? NULL : perr.message, err);
}

/* The op's next step, or its end: PERSIST is written through (tu_persist). */
static inline int tu_through(scsictl *ctl, scsictl_op *op, int st, scsictl_error *err)
{
    while (st == SCSICTL_PERSIST)
        st = tu_persist(ctl, op, err);
    return st;
}

static inline int tu_drive(scsictl *ctl, rec_backend *r, bool is_map,
                           const scsictl_id *id, scsictl_op *op, scsictl_error *err)
{
    int st = tu_through(ctl, op, is_map ? scsictl_op_start_map(ctl, op, id, err)
                                        : scsictl_op_start_unmap(ctl, op, id, err), err);
    int guard = 0;
    while (st == SCSICTL_STEP && guard++ < 64) {
        rec_call c;
        rec_call_from_step(r->guest, &op->step, &c);
        char msg[256] = "";
        int fail = rec_record(r, &c, msg, sizeof msg);
        st = tu_through(ctl, op, scsictl_op_report(ctl, op, fail == 0, fail ? msg : NULL, err),
                        err);
    }
    if (guard >= 64) {
        tu_check(false, __FILE__, __LINE__, "operation did not finish in 64 steps");
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* P1 / P2 / P3 over a call log                                              */
/* ------------------------------------------------------------------------ */

/* Replays the successful calls of r in order and checks: adds and removes
 * alternate per slot starting with add; mounts and unmounts alternate per
 * (slot, partition) starting with mount; on Linux a remove follows an eject
 * since the last add; mounts only on attached, un-ejected disks; ejects and
 * removes only with no partition mounted. With `all_released`, also that
 * nothing is left attached or mounted (P3). Returns the number of
 * violations (each also reported). */
static inline int rec_check_balanced(const rec_backend *r, bool all_released)
{
    enum { NS = 64, NP = 8 };
    struct { uint32_t c, l; bool used, attached, ejected; bool mounted[NP]; } s[NS];
    memset(s, 0, sizeof s);
    int bad = 0;
    size_t n = r->n < REC_MAX_CALLS ? r->n : REC_MAX_CALLS;
    for (size_t i = 0; i < n; i++) {
        const rec_call *c = &r->calls[i];
        if (c->failed) continue;
        int k = -1;
        for (int j = 0; j < NS; j++)
            if (s[j].used && s[j].c == c->controller && s[j].l == c->lun) { k = j; break; }
        if (k < 0)
            for (int j = 0; j < NS; j++)
                if (!s[j].used) {
                    k = j;
                    s[j].used = true;
                    s[j].c = c->controller;
                    s[j].l = c->lun;
                    break;
                }
        if (k < 0) break;
        bool any_mounted = false;
        for (int p = 0; p < NP; p++) any_mounted = any_mounted || s[k].mounted[p];
        char one[256];
        rec_format_call(c, one, sizeof one);
        const char *why = NULL;
        size_t p = c->partition < NP ? (size_t)c->partition : NP - 1;
        switch (c->kind) {
        case SCSICTL_STEP_ADD_SCSI_DISK:
            if (s[k].attached) why = "add while attached";
            s[k].attached = true;
            s[k].ejected = false;
            break;
        case SCSICTL_STEP_REMOVE_SCSI_DISK:
            if (!s[k].attached) why = "remove while not attached";
            else if (r->guest == SCSICTL_GUEST_LINUX && !s[k].ejected) why = "remove without eject";
            else if (any_mounted) why = "remove with a partition mounted";
            s[k].attached = false;
            s[k].ejected = false;
            break;
        case SCSICTL_STEP_LINUX_EJECT:
            if (!s[k].attached || s[k].ejected) why = "eject while not attached";
            else if (any_mounted) why = "eject with a partition mounted";
            s[k].ejected = true;
            break;
        case SCSICTL_STEP_LINUX_MOUNT:
        case SCSICTL_STEP_WINDOWS_MOUNT:
        case SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH:
            if (!s[k].attached || s[k].ejected) why = "mount on a disk not attached";
            else if (s[k].mounted[p]) why = "mount while mounted";
            s[k].mounted[p] = true;
            break;
        default:
            if (!s[k].mounted[p]) why = "unmount while not mounted";
            s[k].mounted[p] = false;
            break;
        }
        if (why) {
            bad++;
            tu_check(false, __FILE__, __LINE__, "call %zu (%s): %s", i, one, why);
        }
    }
    if (all_released)
        for (int j = 0; j < NS; j++) {
            if (!s[j].used) continue;
            if (s[j].attached) {
                bad++;
                tu_check(false, __FILE__, __LINE__, "slot %u:%u left attached", s[j].c, s[j].l);
            }
            for (int p = 0; p < NP; p++)
                if (s[j].mounted[p]) {
                    bad++;
                    tu_check(false, __FILE__, __LINE__, "%u:%u:%d left mounted", s[j].c,
                             s[j].l, p);
                }
        }
    if (!bad) tu_check(true, __FILE__, __LINE__, "balanced");
    return bad;
}

/* ------------------------------------------------------------------------ */
/* State as text (via scsictl_list_slots), with consistency checks           */
/* ------------------------------------------------------------------------ */

/* "c:l[P][B] [path state rN [p state refs]...]; ..." for every listed slot.
 * with_parts false leaves the partitions out. Also checks: guest_path is
 * set exactly for mounted partitions and is the canonical path; the stats
 * agree with the listing. */
static inline void tu_state(scsictl *ctl, bool with_parts, char *out, size_t size)
{
    scsictl_slot_info *s = NULL;
    size_t n = 0;
    scsictl_error err;
    out[0] = '\0';
    int rc = scsictl_list_slots(ctl, &s, &n, &err);
    if (!tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "list_slots: %s",
                  scsictl_code_name(rc)))
        return;
    scsictl_stats st;
    scsictl_get_stats(ctl, &st);
    size_t len = 0, pinned = 0, disks = 0, claims = 0;
    for (size_t i = 0; i < n; i++) {
        char one[512];
        int w = snprintf(one, sizeof one, "%u:%u%s%s", s[i].controller, s[i].lun,
                         s[i].pinned ? "P" : "", s[i].busy ? "B" : "");
        if (s[i].pinned) pinned++;
        if (s[i].has_disk) {
            disks++;
            claims += s[i].reservations;
            w += snprintf(one + w, sizeof one - (size_t)w, " %s %s r%zu",
                          s[i].host_path ? s[i].host_path : "(null)",
                          scsictl_disk_state_name(s[i].state), s[i].reservations);
            for (size_t j = 0; j < s[i].n_partitions; j++) {
                const scsictl_partition_info *p = &s[i].partitions[j];
                if (with_parts && w < (int)sizeof one)
                    w += snprintf(one + w, sizeof one - (size_t)w, " [%llu %s %zu]",
                                  (unsigned long long)p->partition,
                                  scsictl_mount_state_name(p->state), p->refs);
                if (p->state == SCSICTL_MOUNT_MOUNTED) {
                    char gp[SCSICTL_GUEST_PATH_MAX];
                    scsictl_guest_path(st.guest, s[i].controller, s[i].lun,
                                       p->partition, gp, sizeof gp);
                    tu_check(p->guest_path && strcmp(p->guest_path, gp) == 0,
                             __FILE__, __LINE__, "mounted guest_path %s, want %s",
                             p->guest_path ? p->guest_path : "(null)", gp);
                } else {
                    tu_check(p->guest_path == NULL, __FILE__, __LINE__,
                             "guest_path of an unmounted partition is NULL");
                }
            }
        } else {
            tu_check(s[i].host_path == NULL && s[i].pinned, __FILE__, __LINE__,
                     "a listed slot without a disk is a bare pinned slot");
        }
        int w2 = snprintf(out + len, size - len, "%s%s", len ? "; " : "", one);
        if (w2 > 0 && (size_t)w2 < size - len) len += (size_t)w2;
    }
    tu_check(st.used == n && st.pinned == pinned && st.disks == disks &&
                 st.free == st.slots - st.used && claims == st.reservations,
             __FILE__, __LINE__,
             "stats agree with slots: used %u/%zu pinned %u/%zu disks %zu/%zu "
             "reservations %zu/claims %zu",
             st.used, n, st.pinned, pinned, st.disks, disks, st.reservations, claims);
    scsictl_info_free(ctl, s);
}

/* State, reservations and stats as one string, to show "nothing changed". */
static inline void tu_snapshot(scsictl *ctl, char *out, size_t size)
{
    char st[2048];
    tu_state(ctl, true, st, sizeof st);
    scsictl_reservation_info *ri = NULL;
    size_t n = 0;
    scsictl_error err;
    int rc = scsictl_list_reservations(ctl, &ri, &n, &err);
    tu_check(rc == SCSICTL_OK, __FILE__, __LINE__, "list_reservations: %s",
             scsictl_code_name(rc));
    int w = snprintf(out, size, "%s |", st);
    for (size_t i = 0; rc == SCSICTL_OK && i < n && w > 0 && (size_t)w < size; i++) {
        char ids[SCSICTL_ID_STRLEN + 1];
        scsictl_id_format(&ri[i].id, ids);
        w += snprintf(out + w, size - (size_t)w, " %s@%u:%u:%llu%s%s", ids, ri[i].controller,
                      ri[i].lun, (unsigned long long)ri[i].partition, ri[i].host_path,
                      ri[i].release_pending ? "!" : "");
    }
    if (rc == SCSICTL_OK) scsictl_info_free(ctl, ri);
    scsictl_stats s;
    scsictl_get_stats(ctl, &s);
    if (w > 0 && (size_t)w < size)
        snprintf(out + w, size - (size_t)w,
                 " | used %u free %u pinned %u disks %zu res %zu%s%s", s.used, s.free,
                 s.pinned, s.disks, s.reservations, s.closed ? " closed" : "",
                 s.busy ? " busy" : "");
}

#define CHECK_STATE(ctl, want)                                               \
    do {                                                                     \
        char tu_st_[2048];                                                   \
        tu_state((ctl), true, tu_st_, sizeof tu_st_);                        \
        CHECK_STR(tu_st_, (want));                                           \
    } while (0)

#endif /* SCSICTL_TEST_UTIL_H */
