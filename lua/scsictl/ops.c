/* ops.c — map_to_guest / unmap_from_guest: core steps as Lua callbacks.
 *
 * An operation lives in an "op" userdata, never on the C stack:
 *
 *   stack: [1] controller  [2] id  [3] op (to-be-closed once a step is issued)
 *          [4..] callback results
 *
 * drive() asks the core for the next step, calls the backend callback with
 * lua_pcallk and, when the callback returns without yielding, calls the
 * continuation finish_step() itself; after a yield, Lua calls it on resume.
 * The op slot is to-be-closed and the op has __gc: if the coroutine is
 * closed or collected while a callback is suspended (or a memory error hits
 * between steps), the step in flight is reported as failed, so the disk is
 * never left busy. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <string.h>
#include <time.h>

#include "lscsictl.h"

enum { OP_MAP = 1, OP_UNMAP = 2 };
enum { IDX_CTL = 1, IDX_OP = 3, IDX_RESULTS = 4 };

typedef struct lop {
    scsictl_op op;
    lctl *ctl;     /* kept alive by the op's uservalue */
    scsictl_id id; /* for the trace */
    double started; /* when the step in flight started (traced only) */
    int kind;
    bool active;   /* a step is in flight */
    bool persisting; /* the state writer is writing its change */
    bool closing;  /* its stack slot is to-be-closed in the current call */
} lop;

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* What trace_event needs, passed as a light userdata. */
typedef struct trace_args {
    lop *o;
    bool end, ok;
    const char *msg;
} trace_args;

/* Builds the event and calls the trace function: (trace_args, fn) ->. Runs
 * under lua_pcall, so a memory error here cannot get between a step and its
 * report. */
static int trace_event(lua_State *L)
{
    const trace_args *a = lua_touserdata(L, 1);
    const lop *o = a->o;
    const scsictl_step *s = &o->op.step;
    lua_createtable(L, 0, 12);
    lua_pushstring(L, a->end ? "end" : "start");
    lua_setfield(L, -2, "event");
    lua_pushstring(L, o->kind == OP_MAP ? "map" : "unmap");
    lua_setfield(L, -2, "op");
    char id[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&o->id, id);
    lua_pushstring(L, id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, scsictl_step_name(s->kind));
    lua_setfield(L, -2, "step");
    lua_pushstring(L, scsictl_step_backend(s->kind));
    lua_setfield(L, -2, "backend");
    lua_pushinteger(L, s->controller);
    lua_setfield(L, -2, "controller");
    lua_pushinteger(L, s->lun);
    lua_setfield(L, -2, "lun");
    if (s->mount) {
        lua_pushinteger(L, (lua_Integer)s->mount->partition);
        lua_setfield(L, -2, "partition");
    }
    if (a->end) {
        lua_pushnumber(L, seconds_now() - o->started);
        lua_setfield(L, -2, "duration");
        lua_pushboolean(L, a->ok);
        lua_setfield(L, -2, "ok");
        if (a->msg) {
            lua_pushstring(L, a->msg);
            lua_setfield(L, -2, "error");
        }
    }
    lua_call(L, 1, 0); /* fn (argument 2) with the event above it */
    return 0;
}

/* Calls the trace function of the controller at ctl with the event of the
 * op's step: its start, or its end (ok, the failure message, the time since
 * its start). Raises nothing: if the event cannot be built or the function
 * raises (or yields: it runs in a protected call, which cannot), the error
 * becomes a Lua warning and the operation goes on. */
static void trace(lua_State *L, int ctl, lop *o, bool end, bool ok, const char *msg)
{
    trace_args a = { o, end, ok, msg };
    if (!end)
        o->started = seconds_now();
    ctl = lua_absindex(L, ctl);
    if (!lua_checkstack(L, 4)) {
        lua_warning(L, "scsictl: a step was not traced (no stack space)", 0);
        return;
    }
    lua_pushcfunction(L, trace_event); /* a light C function: no allocation */
    lua_pushlightuserdata(L, &a);
    lua_getiuservalue(L, ctl, UV_TRACE);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        lua_warning(L, "scsictl: the trace function failed: ", 1);
        lua_warning(L, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)",
                    0);
        lua_pop(L, 1);
    }
}

/* Reports an in-flight step as failed. Shared by __gc and __close. */
static int op_abandon(lua_State *L)
{
    lop *o = lkey_testudata(L, 1, K_OP_MT);
    if (o && o->active) {
        static const char abandoned[] =
            "the operation was abandoned while a callback was in flight";
        if (o->ctl->core && o->ctl->trace) {
            lua_getiuservalue(L, 1, 1); /* the controller */
            trace(L, -1, o, true, false, abandoned);
            lua_pop(L, 1);
        }
        o->active = false;
        if (o->ctl->core)
            scsictl_op_report(o->ctl->core, &o->op, false, abandoned, NULL);
    } else if (o && o->persisting) { /* a step about to be issued is taken back */
        o->persisting = false;
        if (o->ctl->core)
            scsictl_op_persisted(o->ctl->core, &o->op, false,
                                 "the operation was abandoned while its change was written",
                                 NULL);
    }
    return 0;
}

void lscsictl_op_register(lua_State *L, int keys)
{
    lua_rawgeti(L, keys, K_OP_MT);
    lkey_pushcfunction(L, op_abandon);
    lua_setfield(L, -2, "__gc");
    lkey_pushcfunction(L, op_abandon);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}

/* t[k] = v for the fresh table t on top of the stack. */
static void set_bool(lua_State *L, int k, bool v)
{
    lkey_push(L, k);
    lua_pushboolean(L, v);
    lua_rawset(L, -3);
}

static void set_int(lua_State *L, int k, lua_Integer v)
{
    lkey_push(L, k);
    lua_pushinteger(L, v);
    lua_rawset(L, -3);
}

static void set_str(lua_State *L, int k, const char *v)
{
    lkey_push(L, k);
    lua_pushstring(L, v);
    lua_rawset(L, -3);
}

static void set_key(lua_State *L, int k, int value_key)
{
    lkey_push(L, k);
    lkey_push(L, value_key);
    lua_rawset(L, -3);
}

void lscsictl_push_disk_options(lua_State *L, const char *const *options, size_t n)
{
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(options[i], '='); /* the core checked there is one */
        lua_pushlstring(L, options[i], (size_t)(eq - options[i]));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
}

int lscsictl_push_args(lua_State *L, const scsictl_step *s)
{
    switch (s->kind) {
    case SCSICTL_STEP_ADD_SCSI_DISK: {
        static const int type_keys[] = { K_VIRTUAL_DISK, K_PASSTHRU, K_EVD };
        lua_createtable(L, 0, 4);
        set_str(L, K_PATH, s->disk->host_path);
        set_key(L, K_TYPE, type_keys[s->disk->type]);
        set_bool(L, K_READ_ONLY, s->disk->read_only);
        if (s->disk->evd_type)
            set_str(L, K_EVD_TYPE, s->disk->evd_type);
        if (s->disk->n_options) { /* absent when none: most disks have none */
            lkey_push(L, K_OPTIONS);
            lscsictl_push_disk_options(L, s->disk->options, s->disk->n_options);
            lua_rawset(L, -3);
        }
        lua_pushinteger(L, s->controller);
        lua_pushinteger(L, s->lun);
        return 3;
    }
    case SCSICTL_STEP_REMOVE_SCSI_DISK:
        lua_pushinteger(L, s->controller);
        lua_pushinteger(L, s->lun);
        return 2;
    case SCSICTL_STEP_LINUX_EJECT:
        lua_createtable(L, 0, 2);
        set_int(L, K_CONTROLLER, s->controller);
        set_int(L, K_LUN, s->lun);
        return 1;
    case SCSICTL_STEP_LINUX_MOUNT:
    case SCSICTL_STEP_LINUX_UNMOUNT: {
        const scsictl_mount_config *m = s->mount;
        lua_createtable(L, 0, 10);
        set_str(L, K_MOUNT_PATH, s->guest_path);
        set_int(L, K_CONTROLLER, s->controller);
        set_int(L, K_LUN, s->lun);
        set_int(L, K_PARTITION, (lua_Integer)m->partition);
        set_bool(L, K_READ_ONLY, m->read_only);
        set_bool(L, K_ENCRYPTED, m->encrypted);
        lkey_push(L, K_OPTIONS);
        lua_createtable(L, (int)m->n_options, 0);
        for (size_t i = 0; i < m->n_options; i++) {
            lua_pushstring(L, m->options[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_rawset(L, -3);
        set_bool(L, K_ENSURE_FILESYSTEM, m->ensure_filesystem);
        set_str(L, K_FILESYSTEM, m->filesystem ? m->filesystem : "");
        set_bool(L, K_BLOCK_DEV, m->block_dev);
        if (m->verity_root_hash) { /* absent without verity, as for most mounts */
            lkey_push(L, K_VERITY);
            lua_createtable(L, 0, 2);
            set_str(L, K_ROOT_HASH, m->verity_root_hash);
            set_int(L, K_HASH_OFFSET, (lua_Integer)m->verity_hash_offset);
            lua_rawset(L, -3);
        }
        return 1;
    }
    case SCSICTL_STEP_WINDOWS_MOUNT:
    case SCSICTL_STEP_WINDOWS_MOUNT_SCRATCH:
    case SCSICTL_STEP_WINDOWS_UNMOUNT:
        lua_createtable(L, 0, 2);
        set_str(L, K_CONTAINER_PATH, s->guest_path);
        set_int(L, K_LUN, s->lun);
        return 1;
    case SCSICTL_STEP_KIND_COUNT:
        break;
    }
    return 0;
}


/* A short description of a Lua value used as a failure message. Calls no
 * metamethod, so it cannot raise or yield. */
static const char *value_message(lua_State *L, int idx, const char *fallback)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
        return lua_tostring(L, idx);
    case LUA_TNONE:
    case LUA_TNIL:
        return fallback;
    default:
        return lua_pushfstring(L, "%s (error object is a %s value)", fallback,
                               luaL_typename(L, idx));
    }
}

/* Applies spec §4's failure convention to a finished callback. Returns the
 * failure message, or NULL on success. */
static const char *callback_failure(lua_State *L, int status)
{
    if (status != LUA_OK && status != LUA_YIELD)
        return value_message(L, -1, "raised an error");
    int n = lua_gettop(L) - IDX_RESULTS + 1;
    if (n >= 1 && lua_type(L, IDX_RESULTS) == LUA_TBOOLEAN && !lua_toboolean(L, IDX_RESULTS))
        return value_message(L, IDX_RESULTS + 1, "returned false");
    if (n >= 2 && lua_isnil(L, IDX_RESULTS) && !lua_isnil(L, IDX_RESULTS + 1))
        return value_message(L, IDX_RESULTS + 1, "returned nil and a message");
    return NULL;
}

static int drive(lua_State *L, lop *o, int st, scsictl_error *err);

static int finish_step(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    lop *o = lua_touserdata(L, IDX_OP);
    const char *msg = callback_failure(L, status);
    scsictl_error err = { SCSICTL_E_BACKEND, "the operation was abandoned" };
    int st = SCSICTL_E_BACKEND;
    if (o->active) {
        if (o->ctl->trace)
            trace(L, IDX_CTL, o, true, msg == NULL, msg);
        o->active = false;
        st = scsictl_op_report(o->ctl->core, &o->op, msg == NULL, msg, &err);
    }
    lua_settop(L, IDX_OP);
    return drive(L, o, st, &err);
}

/* The state writer wrote (or failed to write) the op's change. */
static int finish_persist(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    lop *o = lua_touserdata(L, IDX_OP);
    scsictl_error err = { SCSICTL_E_BACKEND, "the operation was abandoned" };
    int st = SCSICTL_E_BACKEND;
    scsictl_error werr;
    bool ok = lscsictl_writer_outcome(L, o->ctl, o->op.persist_seq, false, status, &werr) ==
              SCSICTL_OK;
    if (o->persisting) {
        o->persisting = false;
        st = scsictl_op_persisted(o->ctl->core, &o->op, ok, ok ? NULL : werr.message, &err);
    }
    lua_settop(L, IDX_OP);
    return drive(L, o, st, &err);
}

static int drive(lua_State *L, lop *o, int st, scsictl_error *err)
{
    if (st == SCSICTL_PERSIST && lscsictl_has_writer(L, IDX_CTL)) {
        if (!o->closing) { /* a close must take the change back */
            o->closing = true;
            lua_toclose(L, IDX_OP);
        }
        o->persisting = true;
        lua_settop(L, IDX_OP);
        return lscsictl_call_writer(L, IDX_CTL, o->op.persist_seq, false, 0, finish_persist);
    }
    while (st == SCSICTL_PERSIST) { /* the state file is written in place */
        scsictl_error perr;
        bool ok = scsictl_persist(o->ctl->core, o->op.persist_seq, &perr) == SCSICTL_OK;
        st = scsictl_op_persisted(o->ctl->core, &o->op, ok, ok ? NULL : perr.message, err);
    }
    if (st == SCSICTL_STEP) {
        const scsictl_step *s = &o->op.step;
        if (!o->closing) { /* from the first step on, a close must report it */
            o->closing = true;
            lua_toclose(L, IDX_OP);
        }
        o->active = true;
        if (o->ctl->trace)
            trace(L, IDX_CTL, o, false, true, NULL);
        lua_getiuservalue(L, IDX_CTL, s->kind == SCSICTL_STEP_ADD_SCSI_DISK ||
                                              s->kind == SCSICTL_STEP_REMOVE_SCSI_DISK
                                          ? UV_VM
                                          : UV_GUEST);
        int backend = lua_gettop(L);
        const char *name = scsictl_step_name(s->kind);
        lua_pushvalue(L, backend);
        lkey_get(L, backend, K_STEP + (int)s->kind); /* looked up at each call */
        lua_replace(L, backend); /* function, backend (its self) */
        int nargs = 1 + lscsictl_push_args(L, s);
        if (lua_type(L, -nargs - 1) != LUA_TFUNCTION && !luaL_getmetafield(L, -nargs - 1, "__call")) {
            lua_settop(L, IDX_OP);
            lua_pushfstring(L, "callback %s:%s is missing or not callable",
                            scsictl_step_backend(s->kind), name);
            return finish_step(L, LUA_ERRRUN, 0);
        } else if (lua_type(L, -nargs - 1) != LUA_TFUNCTION) {
            lua_pop(L, 1); /* the __call field pushed by luaL_getmetafield */
        }
        return finish_step(L, lua_pcallk(L, nargs, LUA_MULTRET, 0, 0, finish_step), 0);
    }
    /* The op is finished: the controller may reuse it. */
    lua_pushvalue(L, IDX_OP);
    lua_setiuservalue(L, IDX_CTL, UV_FREE_OP);
    if (st == SCSICTL_DONE) {
        if (o->kind == OP_MAP)
            lua_pushstring(L, o->op.guest_path);
        else
            lua_pushboolean(L, 1);
        return 1;
    }
    return lscsictl_fail(L, err);
}

/* Pushes an op userdata for the controller at IDX_CTL: the one the
 * controller keeps for reuse when it is free, else a new one. An op in use
 * is referenced only from its own stack slot, so an abandoned one is
 * collected (and reports its step as failed) like any other. */
static lop *push_op(lua_State *L, lctl *c)
{
    if (lua_getiuservalue(L, IDX_CTL, UV_FREE_OP) == LUA_TUSERDATA) {
        lua_pushnil(L);
        lua_setiuservalue(L, IDX_CTL, UV_FREE_OP);
        return lua_touserdata(L, -1);
    }
    lua_pop(L, 1);
    lop *o = lua_newuserdatauv(L, sizeof *o, 1);
    memset(o, 0, sizeof *o);
    o->ctl = c;
    lkey_push(L, K_OP_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, IDX_CTL);
    lua_setiuservalue(L, -2, 1);
    return o;
}

static int start(lua_State *L, int kind)
{
    lctl *c = lscsictl_check(L, 1);
    scsictl_id id;
    largs_id_check(L, 2, &id);
    lua_settop(L, 2);
    if (!c->core)
        return lscsictl_finalized(L, kind == OP_MAP ? "map_to_guest" : "unmap_from_guest");
    lop *o = push_op(L, c);
    o->kind = kind;
    o->id = id;
    o->active = false;
    o->persisting = false;
    o->closing = false; /* marked at the first step: a call without one
                           (already mapped, nothing left) needs no close */
    scsictl_error err;
    int st = kind == OP_MAP ? scsictl_op_start_map(c->core, &o->op, &id, &err)
                            : scsictl_op_start_unmap(c->core, &o->op, &id, &err);
    return drive(L, o, st, &err);
}

int lscsictl_map(lua_State *L)
{
    return start(L, OP_MAP);
}

int lscsictl_unmap(lua_State *L)
{
    return start(L, OP_UNMAP);
}
