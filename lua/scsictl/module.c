/* module.c — the Lua module `scsictl`: scsictl.new and controller methods.
 *
 * Each method has the same three beats: check arguments (raise on caller
 * mistakes), call the core, convert the result (values, or nil, msg, code).
 * Backend tables are kept in the controller's uservalues, never as raw
 * pointers, and are looked up by callback name at each step (ops.c). */
#include <string.h>

#include "lscsictl.h"

#define MODULE_VERSION "scsictl " SCSICTL_VERSION

#define LSCSICTL_KEY_NAME(name, str) [name] = str,
static const char *const key_names[K_COUNT] = { LSCSICTL_KEYS(LSCSICTL_KEY_NAME) };

const char *lkey_name(int k)
{
    if (k >= K_STEP && k < K_CTL_MT)
        return scsictl_step_name((scsictl_step_kind)(k - K_STEP));
    return k > K_NONE && k < K_STEP ? key_names[k] : "?";
}

/* The keys live in the registry while the module loads; every function
 * then gets them as upvalues 1 .. K_COUNT-1. */
static const char *const keys_registry = "scsictl.keys";

static void push_keys_as_upvalues(lua_State *L)
{
    luaL_checkstack(L, K_COUNT + 2, "scsictl: registering functions");
    lua_getfield(L, LUA_REGISTRYINDEX, keys_registry);
    for (int k = K_NONE + 1; k < K_COUNT; k++)
        lua_rawgeti(L, -k, k); /* the table is k-1 slots below after k-1 pushes */
    lua_remove(L, -(K_COUNT - 1) - 1);
}

void lkey_setfuncs(lua_State *L, const luaL_Reg *funcs)
{
    push_keys_as_upvalues(L);
    luaL_setfuncs(L, funcs, K_COUNT - 1);
}

void lkey_pushcfunction(lua_State *L, lua_CFunction f)
{
    push_keys_as_upvalues(L);
    lua_pushcclosure(L, f, K_COUNT - 1);
}

void *lkey_testudata(lua_State *L, int arg, int mt)
{
    void *p = lua_touserdata(L, arg);
    if (!p || !lua_getmetatable(L, arg))
        return NULL;
    bool same = lua_rawequal(L, -1, lua_upvalueindex(mt));
    lua_pop(L, 1);
    return same ? p : NULL;
}

lctl *lscsictl_check(lua_State *L, int arg)
{
    lctl *c = lkey_testudata(L, arg, K_CTL_MT);
    if (!c)
        luaL_typeerror(L, arg, LSCSICTL_CONTROLLER);
    return c;
}

/* nil, message, code */
int lscsictl_fail(lua_State *L, const scsictl_error *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err->message);
    lua_pushstring(L, scsictl_code_name(err->code));
    return 3;
}

/* A controller reached after its finaliser ran (resurrected by another
 * object's __gc) has no core: it behaves as a closed, empty controller. */
int lscsictl_finalized(lua_State *L, const char *what)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: controller is closed (it was finalized)", what);
    lua_pushliteral(L, "closed");
    return 3;
}

/* ---- scsictl.new ------------------------------------------------------ */

static const char *const new_keys[] = { "controllers", "luns_per_controller", "vm",
                                        "linux_guest", "windows_guest", "state_file",
                                        "state_writer", "trace", NULL };
static const char *const backend_keys[] = { "vm", "linux_guest", "windows_guest",
                                            "state_writer", "trace", "remap", NULL };

static bool callable(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TFUNCTION)
        return true;
    if (luaL_getmetafield(L, idx, "__call") == LUA_TNIL)
        return false;
    lua_pop(L, 1);
    return true;
}

/* Checks that tbl[field] is an indexable backend with the callback of
 * every step the core hands to it (scsictl_step_backend); leaves it on the
 * stack. */
static void check_backend(lua_State *L, int arg, int tbl, const char *field)
{
    int t = lua_getfield(L, tbl, field);
    if (t != LUA_TTABLE && t != LUA_TUSERDATA)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a backend table, got %s", field,
                                              luaL_typename(L, -1)));
    int backend = lua_gettop(L);
    for (int k = 0; k < SCSICTL_STEP_KIND_COUNT; k++) {
        if (strcmp(scsictl_step_backend((scsictl_step_kind)k), field) != 0)
            continue;
        const char *name = scsictl_step_name((scsictl_step_kind)k);
        lua_getfield(L, backend, name);
        if (!callable(L, -1))
            luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s must be a function, got %s",
                                                  field, name, luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
}

/* The guest flavour the table at tbl names (exactly one of the two). */
static scsictl_guest which_guest(lua_State *L, int arg, int tbl)
{
    lua_getfield(L, tbl, "linux_guest");
    lua_getfield(L, tbl, "windows_guest");
    bool has_linux = !lua_isnil(L, -2), has_windows = !lua_isnil(L, -1);
    lua_pop(L, 2);
    if (has_linux == has_windows)
        luaL_argerror(L, arg, has_linux ? "give linux_guest or windows_guest, not both"
                                        : "linux_guest or windows_guest is required");
    return has_linux ? SCSICTL_GUEST_LINUX : SCSICTL_GUEST_WINDOWS;
}

/* Checks the backends in the table at tbl for a controller of `guest` and
 * pushes a controller userdata holding them, with no core yet (a memory
 * error before the core exists leaves nothing half-built). */
static lctl *push_controller(lua_State *L, int arg, int tbl, scsictl_guest guest)
{
    check_backend(L, arg, tbl, "vm");
    check_backend(L, arg, tbl, guest == SCSICTL_GUEST_LINUX ? "linux_guest" : "windows_guest");
    lctl *c = lua_newuserdatauv(L, sizeof *c, UV_COUNT);
    c->core = NULL;
    c->guest = guest;
    c->trace = false;
    lkey_push(L, K_CTL_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -3);
    lua_setiuservalue(L, -2, UV_VM);
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, UV_GUEST);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return c;
}

static uint32_t geometry_field(lua_State *L, const char *field, lua_Integer lo,
                               lua_Integer hi, lua_Integer dflt)
{
    int t = lua_getfield(L, 1, field);
    lua_Integer v = dflt;
    if (t == LUA_TNIL) {
        if (dflt < 0)
            luaL_argerror(L, 1, lua_pushfstring(L, "%s is required", field));
    } else {
        int isint = 0;
        if (t == LUA_TNUMBER)
            v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < lo || v > hi)
            luaL_argerror(L, 1, lua_pushfstring(L, "%s must be an integer %d..%d", field,
                                                (int)lo, (int)hi));
    }
    lua_pop(L, 1);
    return (uint32_t)v;
}

/* Optional string argument field without NUL bytes. */
static const char *path_field(lua_State *L, int arg, int tbl, const char *field)
{
    int t = lua_getfield(L, tbl, field);
    const char *s = NULL;
    if (t == LUA_TSTRING) {
        size_t len;
        s = lua_tolstring(L, -1, &len);
        if (len == 0 || strlen(s) != len)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a non-empty string "
                                                     "without NUL bytes", field));
    } else if (t != LUA_TNIL) {
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a string, got %s", field,
                                              luaL_typename(L, -1)));
    }
    lua_pop(L, 1); /* still referenced by the table */
    return s;
}

/* The state writer option at tbl[state_writer]: with a state file, the
 * controller's writes are deferred to it (it writes on the event loop). */
static int set_writer(lua_State *L, int arg, int tbl, int ctl_idx, lctl *c, bool has_file)
{
    int t = lua_getfield(L, tbl, "state_writer");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return SCSICTL_OK;
    }
    if (!callable(L, -1))
        luaL_argerror(L, arg, lua_pushfstring(L, "state_writer must be a function, got %s",
                                              luaL_typename(L, -1)));
    if (!has_file)
        luaL_argerror(L, arg, "state_writer needs a state file");
    lua_setiuservalue(L, ctl_idx, UV_WRITER);
    scsictl_error err;
    if (scsictl_set_write_deferred(c->core, true, &err) != SCSICTL_OK)
        return luaL_error(L, "%s", err.message); /* a fresh controller: not reached */
    return SCSICTL_OK;
}

/* The trace option at tbl[trace]: a function called at each step's start
 * and end (ops.c). */
static void set_trace(lua_State *L, int arg, int tbl, int ctl_idx, lctl *c)
{
    if (lua_getfield(L, tbl, "trace") == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (!callable(L, -1))
        luaL_argerror(L, arg, lua_pushfstring(L, "trace must be a function, got %s",
                                              luaL_typename(L, -1)));
    lua_setiuservalue(L, ctl_idx, UV_TRACE);
    c->trace = true;
}

bool lscsictl_has_writer(lua_State *L, int idx)
{
    bool has = lua_getiuservalue(L, idx, UV_WRITER) != LUA_TNIL;
    lua_pop(L, 1);
    return has;
}

int lscsictl_call_writer(lua_State *L, int ctl_idx, uint64_t seq, bool tentative,
                         lua_KContext ctx, lua_KFunction k)
{
    luaL_checkstack(L, 4, "scsictl: calling the state writer");
    lua_getiuservalue(L, ctl_idx, UV_WRITER);
    lua_pushvalue(L, ctl_idx);
    lua_pushinteger(L, (lua_Integer)seq);
    lua_pushboolean(L, tentative);
    return k(L, lua_pcallk(L, 3, 2, 0, ctx, k), ctx);
}

int lscsictl_writer_outcome(lua_State *L, lctl *c, uint64_t seq, bool tentative, int status,
                            scsictl_error *err)
{
    const char *why = NULL; /* the writer's reason, if it gave one */
    if (status != LUA_OK && status != LUA_YIELD)
        why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "the state writer raised";
    else if (!lua_toboolean(L, -2))
        why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    scsictl_write w;
    int rc = scsictl_write_begin(c->core, seq, tentative, &w, err);
    if (rc == SCSICTL_STEP) { /* the writer gave up without writing: it failed */
        scsictl_write_end(c->core, &w, false);
        rc = scsictl_write_begin(c->core, seq, tentative, &w, err);
        if (!why)
            why = "the state writer returned before the change was written";
    }
    if (rc == SCSICTL_DONE) {
        lua_settop(L, lua_gettop(L) - (status != LUA_OK && status != LUA_YIELD ? 1 : 2));
        return SCSICTL_OK;
    }
    if (rc == SCSICTL_E_BUSY && !why)
        why = "the state writer returned while a write was in flight";
    err->code = SCSICTL_E_IO;
    if (why)
        snprintf(err->message, sizeof err->message, "state file: %s", why);
    lua_settop(L, lua_gettop(L) - (status != LUA_OK && status != LUA_YIELD ? 1 : 2));
    return SCSICTL_E_IO;
}

static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    largs_known_keys(L, 1, new_keys, "options");
    scsictl_options opts = { .single_threaded = true }; /* a Lua state is one thread */
    opts.controllers = geometry_field(L, "controllers", 0, SCSICTL_MAX_CONTROLLERS, -1);
    opts.luns_per_controller = geometry_field(L, "luns_per_controller", 1, SCSICTL_MAX_LUNS,
                                              SCSICTL_DEFAULT_LUNS);
    if ((uint64_t)opts.controllers * opts.luns_per_controller > SCSICTL_MAX_SLOTS)
        luaL_argerror(L, 1, "controllers * luns_per_controller must be at most 1048576");
    opts.guest = which_guest(L, 1, 1);
    const char *state_file = path_field(L, 1, 1, "state_file");
    lctl *c = push_controller(L, 1, 1, opts.guest);
    scsictl_error err;
    int rc = scsictl_new(&opts, &c->core, &err);
    if (rc == SCSICTL_E_NO_MEMORY)
        return luaL_error(L, "not enough memory");
    if (rc != SCSICTL_OK)
        return luaL_argerror(L, 1, err.message);
    if (state_file && scsictl_set_state_file(c->core, state_file, &err) != SCSICTL_OK)
        return lscsictl_fail(L, &err); /* the controller is collected */
    set_writer(L, 1, 1, lua_gettop(L), c, state_file != NULL);
    set_trace(L, 1, 1, lua_gettop(L), c);
    return 1;
}

/* backends.remap during an import: the core calls remap_path for each host
 * path it reads, on the stack of the import call. */
typedef struct lremap {
    lua_State *L;
    int spec;    /* stack index (of the import call) of the table or function */
    int anchor;  /* ... of a table keeping the answers alive */
    bool failed; /* the error is on the stack top */
    const char *answer;
    const char *fname; /* "import" or "open", for messages */
} lremap;

/* (lremap, path, spec, anchor) -> : looks the path up in spec or calls it,
 * protected. */
static int remap_lookup(lua_State *L)
{
    lremap *r = lua_touserdata(L, 1);
    const char *path = lua_touserdata(L, 2);
    lua_pushvalue(L, 3);
    lua_pushstring(L, path);
    if (lua_type(L, 3) == LUA_TTABLE)
        lua_gettable(L, -2);
    else
        lua_call(L, 1, 1);
    size_t len;
    const char *to = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!to && !lua_isnil(L, -1))
        return luaL_error(L, "bad argument #2 to '%s' (backends.remap gave a %s for '%s': "
                             "a string or nil expected)", r->fname, luaL_typename(L, -1), path);
    if (to && strlen(to) != len)
        return luaL_error(L, "bad argument #2 to '%s' (backends.remap gave a path with a NUL "
                             "byte for '%s')", r->fname, path);
    if (to)
        lua_rawseti(L, 4, (lua_Integer)lua_rawlen(L, 4) + 1);
    r->answer = to;
    return 0;
}

static const char *remap_path(void *ud, const char *path)
{
    lremap *r = ud;
    lua_State *L = r->L;
    if (r->failed || !lua_checkstack(L, 6))
        return NULL;
    /* nothing here allocates outside the protected call: a light C
     * function, two light userdata and two copies */
    lua_pushcfunction(L, remap_lookup);
    lua_pushlightuserdata(L, r);
    lua_pushlightuserdata(L, (void *)path);
    lua_pushvalue(L, r->spec);
    lua_pushvalue(L, r->anchor);
    r->answer = NULL;
    if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
        r->failed = true; /* the error stays on the top, raised after the import */
        return NULL;
    }
    return r->answer;
}

/* scsictl.import(snapshot, backends) and scsictl.open(path, backends) */
static int import_or_open(lua_State *L, bool from_file)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    largs_known_keys(L, 2, backend_keys, "backends");
    if (from_file && (len == 0 || strlen(s) != len))
        luaL_argerror(L, 1, "path must be a non-empty string without NUL bytes");
    lua_getfield(L, 2, "remap"); /* 3 */
    if (!lua_isnil(L, 3) && !lua_istable(L, 3) && !callable(L, 3))
        luaL_argerror(L, 2, "backends.remap must be a table (old path -> new path) or a "
                            "function");
    lua_newtable(L); /* 4: the remap's answers, alive until the import returns */
    lremap remap = { L, 3, 4, false, NULL, from_file ? "open" : "import" };
    scsictl_remap cremap = { remap_path, &remap };
    const scsictl_remap *rm = lua_isnil(L, 3) ? NULL : &cremap;
    /* A userdata owns the core from the moment it exists (its __gc frees
     * it), so neither a memory error nor a raise below can leak it. */
    lctl *holder = lua_newuserdatauv(L, sizeof *holder, 0);
    holder->core = NULL;
    lkey_push(L, K_CTL_MT);
    lua_setmetatable(L, -2);
    scsictl_error err;
    int rc = from_file ? scsictl_open_remap(s, NULL, rm, &holder->core, &err)
                       : scsictl_import_remap(s, len, NULL, rm, &holder->core, &err);
    if (remap.failed)
        return lua_error(L); /* the remap's error; the holder frees the core */
    if (rc != SCSICTL_OK)
        return lscsictl_fail(L, &err);
    scsictl_set_single_threaded(holder->core, true); /* a Lua state is one thread */
    scsictl_stats st;
    scsictl_get_stats(holder->core, &st);
    scsictl_guest given = SCSICTL_GUEST_LINUX;
    bool ok = false;
    given = which_guest(L, 2, 2);
    ok = given == st.guest;
    if (!ok)
        luaL_argerror(L, 2, lua_pushfstring(L, "the snapshot is of a %s-guest controller: "
                                               "give %s",
                                            st.guest == SCSICTL_GUEST_LINUX ? "Linux" : "Windows",
                                            st.guest == SCSICTL_GUEST_LINUX ? "linux_guest"
                                                                            : "windows_guest"));
    lctl *c = push_controller(L, 2, 2, st.guest);
    c->core = holder->core;
    holder->core = NULL;
    set_writer(L, 2, 2, lua_gettop(L), c, from_file);
    set_trace(L, 2, 2, lua_gettop(L), c);
    return 1;
}

static int l_import(lua_State *L)
{
    return import_or_open(L, false);
}

static int l_open(lua_State *L)
{
    return import_or_open(L, true);
}

/* ---- mutating methods ------------------------------------------------- */

/* A reserve, pin or close whose change a state writer is writing: the
 * context is the stack index below its (result, change number) pair. */
static int written_k(lua_State *L, int status, lua_KContext ctx)
{
    lctl *c = lscsictl_check(L, 1);
    int base = (int)ctx;
    uint64_t seq = (uint64_t)lua_tointeger(L, base + 2);
    bool tentative = lua_toboolean(L, base + 3);
    scsictl_error err;
    if (lscsictl_writer_outcome(L, c, seq, tentative, status, &err) != SCSICTL_OK)
        return lscsictl_fail(L, &err);
    lua_pushvalue(L, base + 1);
    return 1;
}

/* After a call that returned PERSIST: its result goes back once the writer
 * wrote the change (tentative: a reserve or pin, undone if the write
 * fails). */
static int write_then_return(lua_State *L, lctl *c, bool tentative)
{
    /* the result is on the stack top */
    int base = lua_gettop(L) - 1;
    uint64_t seq = scsictl_change_seq(c->core);
    lua_pushinteger(L, (lua_Integer)seq);
    lua_pushboolean(L, tentative);
    return lscsictl_call_writer(L, 1, seq, tentative, base, written_k);
}

/* ctl:set_disk_state(controller, lun, state) and
 * ctl:set_mount_state(controller, lun, partition, state): records set to
 * what a reconciler found (scsictl.reconcile). */
static uint32_t slot_coordinate(lua_State *L, int arg, const char *what)
{
    uint64_t v = largs_uint_check(L, arg, what);
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; /* beyond any geometry: not_found */
}

static int state_set(lua_State *L, lctl *c, int rc, const scsictl_error *err)
{
    if (rc != SCSICTL_OK && rc != SCSICTL_PERSIST)
        return lscsictl_fail(L, err);
    lua_pushboolean(L, 1);
    return rc == SCSICTL_PERSIST ? write_then_return(L, c, false) : 1;
}

static int l_set_disk_state(lua_State *L)
{
    static const char *const states[] = { "reserved", "attached", "ejected", NULL };
    lctl *c = lscsictl_check(L, 1);
    uint32_t controller = slot_coordinate(L, 2, "controller");
    uint32_t lun = slot_coordinate(L, 3, "lun");
    int state = luaL_checkoption(L, 4, NULL, states);
    lua_settop(L, 4);
    if (!c->core)
        return lscsictl_finalized(L, "set_disk_state");
    scsictl_error err;
    return state_set(L, c, scsictl_set_disk_state(c->core, controller, lun,
                                                  (scsictl_disk_state)state, &err), &err);
}

static int l_set_mount_state(lua_State *L)
{
    static const char *const states[] = { "reserved", "mounted", NULL };
    lctl *c = lscsictl_check(L, 1);
    uint32_t controller = slot_coordinate(L, 2, "controller");
    uint32_t lun = slot_coordinate(L, 3, "lun");
    uint64_t partition = largs_uint_check(L, 4, "partition");
    int state = luaL_checkoption(L, 5, NULL, states);
    lua_settop(L, 5);
    if (!c->core)
        return lscsictl_finalized(L, "set_mount_state");
    scsictl_error err;
    return state_set(L, c, scsictl_set_mount_state(c->core, controller, lun, partition,
                                                   (scsictl_mount_state)state, &err), &err);
}

static int l_reserve(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    largs_disk disk;
    largs_mount mount;
    lua_settop(L, 3); /* the checks push the fields' values above the arguments */
    largs_disk_check(L, 2, &disk);
    largs_mount_check(L, 3, &mount);
    if (!c->core)
        return lscsictl_finalized(L, "reserve");
    scsictl_id id;
    scsictl_error err;
    int rc = scsictl_reserve(c->core, &disk.cfg, &mount.cfg, &id, &err);
    if (rc != SCSICTL_OK && rc != SCSICTL_PERSIST)
        return lscsictl_fail(L, &err);
    char text[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&id, text);
    lua_pushlstring(L, text, SCSICTL_ID_STRLEN);
    return rc == SCSICTL_PERSIST ? write_then_return(L, c, true) : 1;
}

static int l_reserve_for_rootfs(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    uint64_t controller = largs_uint_check(L, 2, "controller");
    uint64_t lun = largs_uint_check(L, 3, "lun");
    largs_disk disk;
    bool with_disk = !lua_isnoneornil(L, 4);
    if (with_disk)
        largs_disk_check(L, 4, &disk);
    if (!c->core)
        return lscsictl_finalized(L, "reserve_for_rootfs");
    scsictl_error err;
    int rc = scsictl_reserve_for_rootfs(c->core, controller, lun, with_disk ? &disk.cfg : NULL,
                                        &err);
    if (rc != SCSICTL_OK && rc != SCSICTL_PERSIST)
        return lscsictl_fail(L, &err);
    lua_pushboolean(L, 1);
    return rc == SCSICTL_PERSIST ? write_then_return(L, c, true) : 1;
}

static int l_close(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    lua_settop(L, 1);
    scsictl_error err;
    int rc = c->core ? scsictl_close(c->core, &err) : SCSICTL_OK;
    if (rc != SCSICTL_OK && rc != SCSICTL_PERSIST)
        return lscsictl_fail(L, &err);
    lua_pushboolean(L, 1);
    return rc == SCSICTL_PERSIST ? write_then_return(L, c, false) : 1;
}

/* __close: like close(), but never raises; a controller with a callback in
 * flight stays open (the callback's operation still needs it). */
static int l_toclose(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    if (c->core && scsictl_close(c->core, NULL) == SCSICTL_PERSIST) {
        /* __close cannot wait for the state writer: write in place */
        uint64_t seq = scsictl_change_seq(c->core);
        if (scsictl_set_write_deferred(c->core, false, NULL) == SCSICTL_OK) {
            scsictl_persist(c->core, seq, NULL);
            scsictl_set_write_deferred(c->core, true, NULL);
        }
    }
    return 0;
}

/* __gc: frees the core. Makes no backend call. An operation suspended in a
 * coroutine keeps its controller alive, so none can be in flight here. */
static int l_gc(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    scsictl_free(c->core);
    c->core = NULL;
    return 0;
}

/* ---- for state writers ------------------------------------------------- */

static int push_write_data(lua_State *L)
{
    const scsictl_write *w = lua_touserdata(L, 1);
    lua_pushlstring(L, w->data, w->len);
    return 1;
}

/* ctl:write_begin(seq, tentative) -> "done" | "busy" | "write", data, wseq
 * | nil, msg, "io": the steps of writing change seq (scsictl_write_begin). */
static int l_write_begin(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    lua_Integer seq = luaL_checkinteger(L, 2);
    bool tentative = lua_toboolean(L, 3);
    luaL_argcheck(L, seq >= 0, 2, "a change number is not negative");
    if (!c->core)
        return lscsictl_finalized(L, "write_begin");
    scsictl_write w;
    scsictl_error err;
    int rc = scsictl_write_begin(c->core, (uint64_t)seq, tentative, &w, &err);
    switch (rc) {
    case SCSICTL_DONE: lua_pushliteral(L, "done"); return 1;
    case SCSICTL_E_BUSY: lua_pushliteral(L, "busy"); return 1;
    case SCSICTL_STEP: break;
    case SCSICTL_E_INVALID_ARGUMENT: return luaL_error(L, "%s", err.message);
    default: return lscsictl_fail(L, &err);
    }
    /* The snapshot goes to Lua as a string (copied under a protected call:
     * on a memory error the write is ended as failed, never left open);
     * the write stays open in the core until write_end gets its change
     * number back. */
    lua_pushliteral(L, "write");
    lua_pushcfunction(L, push_write_data);
    lua_pushlightuserdata(L, &w);
    int status = lua_pcall(L, 1, 1, 0);
    scsictl_info_free(c->core, w.data);
    w.data = NULL;
    if (status != LUA_OK) {
        scsictl_write_end(c->core, &w, false);
        return lua_error(L);
    }
    lua_pushinteger(L, (lua_Integer)w.seq);
    return 3;
}

/* ctl:write_end(wseq, ok): the write of change wseq ended. */
static int l_write_end(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    lua_Integer seq = luaL_checkinteger(L, 2);
    luaL_checkany(L, 3);
    if (c->core) {
        scsictl_write w = { .seq = (uint64_t)seq, .data = NULL, .len = 0 };
        scsictl_write_end(c->core, &w, lua_toboolean(L, 3));
    }
    return 0;
}

/* ctl:state_file() -> the file written (absolute, links resolved) or nil */
static int l_state_file(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    const char *t = c->core ? scsictl_state_file_target(c->core) : NULL;
    if (t)
        lua_pushstring(L, t);
    else
        lua_pushnil(L);
    return 1;
}

/* ---- introspection ---------------------------------------------------- */

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, bool v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

static void push_reservation(lua_State *L, const scsictl_reservation_info *r)
{
    char id[SCSICTL_ID_STRLEN + 1];
    scsictl_id_format(&r->id, id);
    lua_createtable(L, 0, 6);
    set_str(L, "id", id);
    set_int(L, "controller", r->controller);
    set_int(L, "lun", r->lun);
    set_int(L, "partition", (lua_Integer)r->partition);
    set_str(L, "host_path", r->host_path);
    set_bool(L, "release_pending", r->release_pending);
}

/* Runs after a listing call: raises on out-of-memory (the only failure). */
static void check_listing(lua_State *L, int rc, const scsictl_error *err)
{
    if (rc == SCSICTL_E_NO_MEMORY)
        luaL_error(L, "not enough memory");
    if (rc != SCSICTL_OK)
        luaL_error(L, "%s", err->message);
}


static int block_free(lua_State *L)
{
    lblock *b = lua_touserdata(L, 1);
    scsictl_info_free(b->core, b->info);
    b->info = NULL;
    scsictl_free(b->copy);
    b->copy = NULL;
    return 0;
}

lblock *lscsictl_push_block(lua_State *L, scsictl *core)
{
    lblock *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->core = core;
    b->info = NULL;
    b->copy = NULL;
    if (luaL_newmetatable(L, "scsictl.listing")) {
        lua_pushcfunction(L, block_free);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, block_free);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_toclose(L, -1);
    return b;
}

static int l_save(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    lua_settop(L, 1);
    if (!c->core)
        return lscsictl_finalized(L, "save");
    lblock *b = lscsictl_push_block(L, c->core); /* owns the buffer from the start */
    char *snap;
    size_t len;
    scsictl_error err;
    if (scsictl_save(c->core, &snap, &len, &err) != SCSICTL_OK)
        return lscsictl_fail(L, &err);
    b->info = snap;
    lua_pushlstring(L, snap, len);
    return 1;
}

static int l_reservation(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    scsictl_id id;
    largs_id_check(L, 2, &id);
    lua_settop(L, 2);
    if (!c->core) {
        lua_pushnil(L);
        return 1;
    }
    lblock *b = lscsictl_push_block(L, c->core);
    scsictl_reservation_info *info = NULL;
    scsictl_error err;
    int rc = scsictl_get_reservation(c->core, &id, &info, &err);
    b->info = info;
    if (rc == SCSICTL_E_NOT_FOUND) {
        lua_pushnil(L);
        return 1;
    }
    check_listing(L, rc, &err);
    push_reservation(L, info);
    return 1;
}

static int l_reservations(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    lua_settop(L, 1);
    if (!c->core) {
        lua_newtable(L);
        return 1;
    }
    lblock *b = lscsictl_push_block(L, c->core);
    scsictl_reservation_info *list = NULL;
    size_t n = 0;
    scsictl_error err;
    int rc = scsictl_list_reservations(c->core, &list, &n, &err);
    b->info = list;
    check_listing(L, rc, &err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_reservation(L, &list[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_slots(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    lua_settop(L, 1);
    if (!c->core) {
        lua_newtable(L);
        return 1;
    }
    lblock *b = lscsictl_push_block(L, c->core);
    scsictl_slot_info *list = NULL;
    size_t n = 0;
    scsictl_error err;
    int rc = scsictl_list_slots(c->core, &list, &n, &err);
    b->info = list;
    check_listing(L, rc, &err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const scsictl_slot_info *s = &list[i];
        lua_createtable(L, 0, 10);
        set_int(L, "controller", s->controller);
        set_int(L, "lun", s->lun);
        set_bool(L, "pinned", s->pinned);
        set_bool(L, "busy", s->busy);
        set_bool(L, "tearing_down", s->tearing_down);
        if (s->has_disk) {
            set_str(L, "host_path", s->host_path);
            set_str(L, "state", scsictl_disk_state_name(s->state));
            lscsictl_push_disk_options(L, s->options, s->n_options);
            lua_setfield(L, -2, "options");
        }
        set_int(L, "reservations", (lua_Integer)s->reservations);
        lua_createtable(L, (int)s->n_partitions, 0);
        for (size_t j = 0; j < s->n_partitions; j++) {
            const scsictl_partition_info *p = &s->partitions[j];
            lua_createtable(L, 0, 4);
            set_int(L, "partition", (lua_Integer)p->partition);
            set_str(L, "state", scsictl_mount_state_name(p->state));
            set_int(L, "refs", (lua_Integer)p->refs);
            set_str(L, "guest_path", p->guest_path);
            lua_rawseti(L, -2, (lua_Integer)j + 1);
        }
        lua_setfield(L, -2, "partitions");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_stats(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    scsictl_stats st = { .closed = true };
    scsictl_get_stats(c->core, &st); /* leaves st as it is without a core */
    lua_createtable(L, 0, 8);
    set_int(L, "controllers", st.controllers);
    set_int(L, "luns_per_controller", st.luns_per_controller);
    set_int(L, "slots", st.slots);
    set_int(L, "used", st.used);
    set_int(L, "free", st.free);
    set_int(L, "pinned", st.pinned);
    set_int(L, "disks", (lua_Integer)st.disks);
    set_int(L, "reservations", (lua_Integer)st.reservations);
    return 1;
}

static int l_tostring(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    if (!c->core) {
        lua_pushliteral(L, "scsictl.controller (finalized, closed)");
        return 1;
    }
    scsictl_stats st;
    scsictl_get_stats(c->core, &st);
    lua_pushfstring(L, "scsictl.controller (%s guest, %d controllers x %d luns): "
                       "%d of %d slots used, %d pinned, %d disks, %d reservations%s",
                    st.guest == SCSICTL_GUEST_LINUX ? "linux" : "windows",
                    (int)st.controllers, (int)st.luns_per_controller, (int)st.used,
                    (int)st.slots, (int)st.pinned, (int)st.disks, (int)st.reservations,
                    st.closed ? ", closed" : "");
    return 1;
}

/* ---- module ----------------------------------------------------------- */

static const luaL_Reg controller_methods[] = {
    { "reserve", l_reserve },
    { "map_to_guest", lscsictl_map },
    { "unmap_from_guest", lscsictl_unmap },
    { "reserve_for_rootfs", l_reserve_for_rootfs },
    { "reservation", l_reservation },
    { "reservations", l_reservations },
    { "slots", l_slots },
    { "set_disk_state", l_set_disk_state },
    { "set_mount_state", l_set_mount_state },
    { "slot_map", lscsictl_slot_map },
    { "plan", lscsictl_plan },
    { "stats", l_stats },
    { "close", l_close },
    { "save", l_save },
    { "write_begin", l_write_begin },
    { "write_end", l_write_end },
    { "state_file", l_state_file },
    { NULL, NULL },
};

static const luaL_Reg controller_meta[] = {
    { "__gc", l_gc },
    { "__close", l_toclose },
    { "__tostring", l_tostring },
    { NULL, NULL },
};

static void push_defaults(lua_State *L)
{
    lua_createtable(L, 0, 3);
    set_int(L, "luns_per_controller", SCSICTL_DEFAULT_LUNS);
    lua_createtable(L, 0, 2);
    set_bool(L, "read_only", false);
    set_str(L, "type", "VirtualDisk");
    lua_setfield(L, -2, "disk");
    lua_createtable(L, 0, 8);
    set_int(L, "partition", 0);
    set_bool(L, "read_only", false);
    set_bool(L, "encrypted", false);
    lua_newtable(L);
    lua_setfield(L, -2, "options");
    set_bool(L, "ensure_filesystem", false);
    set_str(L, "filesystem", "");
    set_bool(L, "block_dev", false);
    set_bool(L, "format_with_refs", false);
    lua_setfield(L, -2, "mount");
}

static void push_limits(lua_State *L)
{
    lua_createtable(L, 0, 3);
    set_int(L, "controllers", SCSICTL_MAX_CONTROLLERS);
    set_int(L, "luns_per_controller", SCSICTL_MAX_LUNS);
    set_int(L, "slots", SCSICTL_MAX_SLOTS);
}

__attribute__((visibility("default"))) int luaopen_scsictl(lua_State *L);

static const luaL_Reg module_functions[] = {
    { "new", l_new },
    { "import", l_import },
    { "open", l_open },
    { NULL, NULL },
};

int luaopen_scsictl(lua_State *L)
{
    /* The key table; its entries become upvalues of every function. */
    lua_createtable(L, K_COUNT, 0);
    int keys = lua_gettop(L);
    for (int k = K_NONE + 1; k < K_CTL_MT; k++) {
        lua_pushstring(L, lkey_name(k));
        lua_rawseti(L, keys, k);
    }
    luaL_newmetatable(L, LSCSICTL_CONTROLLER);
    lua_rawseti(L, keys, K_CTL_MT);
    luaL_newmetatable(L, LSCSICTL_OP);
    lua_rawseti(L, keys, K_OP_MT);
    lua_pushvalue(L, keys);
    lua_setfield(L, LUA_REGISTRYINDEX, keys_registry);

    lua_rawgeti(L, keys, K_CTL_MT);
    lkey_setfuncs(L, controller_meta);
    lua_createtable(L, 0, 12);
    lkey_setfuncs(L, controller_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lscsictl_op_register(L, keys);

    lua_createtable(L, 0, 8);
    lkey_setfuncs(L, module_functions);
    lua_pushliteral(L, MODULE_VERSION);
    lua_setfield(L, -2, "_VERSION");
    push_defaults(L);
    lua_setfield(L, -2, "defaults");
    push_limits(L);
    lua_setfield(L, -2, "limits");
    return 1;
}
