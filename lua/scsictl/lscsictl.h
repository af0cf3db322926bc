/* lscsictl.h — shared declarations of the Lua binding's C files.
 *
 *   module.c  luaopen_scsictl, scsictl.new, controller methods, introspection
 *   args.c    argument checking: raise "bad argument #N to 'name' (...)"
 *   ops.c     map_to_guest / unmap_from_guest: steps as Lua callbacks,
 *             continuations for yields, abandonment of suspended steps
 *   slot_map.c  ctl:slot_map(), the controllers drawn as text
 *   plan.c    ctl:plan(), the steps an operation would run now */
#ifndef LSCSICTL_H
#define LSCSICTL_H

#include <lauxlib.h>
#include <lua.h>

#include "scsictl.h"

#define LSCSICTL_CONTROLLER "scsictl.controller"
#define LSCSICTL_OP "scsictl.op"

/* Uservalues of a controller userdata. */
enum { UV_VM = 1, UV_GUEST = 2, UV_FREE_OP = 3, UV_WRITER = 4, UV_TRACE = 5, UV_COUNT = 5 };

/* Every function of the module has the same upvalues: the interned field
 * names, the callback name of each step kind (K_STEP + kind, taken from the
 * core's one table, scsictl_step_name) and the two metatables (upvalue k
 * holds key k), so hot paths never intern a C string or look a metatable
 * up by name. */
#define LSCSICTL_KEYS(X)                                                   \
    X(K_PATH, "path") X(K_TYPE, "type") X(K_READ_ONLY, "read_only")        \
    X(K_EVD_TYPE, "evd_type") X(K_CONTROLLER, "controller") X(K_LUN, "lun")\
    X(K_MOUNT_PATH, "mount_path") X(K_PARTITION, "partition")              \
    X(K_ENCRYPTED, "encrypted") X(K_OPTIONS, "options")                    \
    X(K_ENSURE_FILESYSTEM, "ensure_filesystem") X(K_FILESYSTEM, "filesystem") \
    X(K_BLOCK_DEV, "block_dev") X(K_FORMAT_WITH_REFS, "format_with_refs")  \
    X(K_CONTAINER_PATH, "container_path") X(K_HOST_PATH, "host_path")      \
    X(K_VIRTUAL_DISK, "VirtualDisk") X(K_PASSTHRU, "PassThru")             \
    X(K_EVD, "ExtensibleVirtualDisk") X(K_VERITY, "verity")                 \
    X(K_ROOT_HASH, "root_hash") X(K_HASH_OFFSET, "hash_offset")

#define LSCSICTL_KEY_ENUM(name, str) name,
enum {
    K_NONE,
    LSCSICTL_KEYS(LSCSICTL_KEY_ENUM)
    K_STEP, /* K_STEP + kind: the callback name of step kind `kind` */
    K_CTL_MT = K_STEP + SCSICTL_STEP_KIND_COUNT,
    K_OP_MT,
    K_COUNT
};

/* Pushes key k (a string, or a metatable for K_CTL_MT / K_OP_MT). */
static inline void lkey_push(lua_State *L, int k)
{
    lua_pushvalue(L, lua_upvalueindex(k));
}

/* Registers funcs into the table on top with the key upvalues. */
void lkey_setfuncs(lua_State *L, const luaL_Reg *funcs);
/* Pushes a C closure of f with the key upvalues. */
void lkey_pushcfunction(lua_State *L, lua_CFunction f);

/* Pushes t[k] (honouring metamethods) for the table at idx; returns its type. */
static inline int lkey_get(lua_State *L, int idx, int k)
{
    idx = lua_absindex(L, idx);
    lkey_push(L, k);
    return lua_gettable(L, idx);
}

/* The udata at arg if its metatable is key mt, else NULL. */
void *lkey_testudata(lua_State *L, int arg, int mt);
const char *lkey_name(int k);

typedef struct lctl {
    scsictl *core;   /* NULL once collected */
    scsictl_guest guest;
    bool trace;      /* a trace function is in UV_TRACE */
} lctl;

/* args.c */
/* Disk config; its options ("key=value", sorted by key) are Lua strings
 * held by a scratch table that the check leaves on the stack. */
typedef struct largs_disk {
    scsictl_disk_config cfg;
    const char *options[SCSICTL_DISK_OPTIONS_MAX];
} largs_disk;

/* Mount config; options point into Lua strings held by the caller's table
 * (the array is in a scratch userdata pushed on the stack when large). */
typedef struct largs_mount {
    scsictl_mount_config cfg;
    const char *small_options[8];
    char verity_root_hash[SCSICTL_VERITY_HASH_HEX + 1]; /* lowercased */
} largs_mount;

void largs_disk_check(lua_State *L, int arg, largs_disk *out);
void largs_mount_check(lua_State *L, int arg, largs_mount *out);
void largs_id_check(lua_State *L, int arg, scsictl_id *out);
uint64_t largs_uint_check(lua_State *L, int arg, const char *what);
/* Raises unless every string key of the table at arg is in `known`. */
void largs_known_keys(lua_State *L, int arg, const char *const known[],
                      const char *what);

/* module.c */
lctl *lscsictl_check(lua_State *L, int arg);
int lscsictl_fail(lua_State *L, const scsictl_error *err);
/* nil, "<what>: controller is closed (it was finalized)", "closed" */
int lscsictl_finalized(lua_State *L, const char *what);
/* Whether the controller at idx has a state writer (writes are deferred). */
bool lscsictl_has_writer(lua_State *L, int idx);
/* Calls the state writer of the controller at ctl_idx for change seq (it
 * may yield) with lua_pcallk, then continues with k(L, status, ctx); k
 * finds the writer's two results (or its error) on the stack top and
 * passes status to lscsictl_writer_outcome. */
int lscsictl_call_writer(lua_State *L, int ctl_idx, uint64_t seq, bool tentative,
                         lua_KContext ctx, lua_KFunction k);
/* In k: SCSICTL_OK when change seq is written (tentative: and kept), else
 * SCSICTL_E_IO with err naming the writer's reason. Pops the results. */
int lscsictl_writer_outcome(lua_State *L, lctl *c, uint64_t seq, bool tentative, int status,
                            scsictl_error *err);

/* What a call owns until it returns: a listing copied out of the core (one
 * block) and a dry-run copy of the controller (plan.c). Held by a
 * to-be-closed userdata, so a memory error while building Lua values
 * cannot leak them. */
typedef struct lblock {
    scsictl *core;
    void *info;    /* freed with scsictl_info_free(core, info) */
    scsictl *copy; /* freed with scsictl_free */
} lblock;
lblock *lscsictl_push_block(lua_State *L, scsictl *core);

/* slot_map.c */
int lscsictl_slot_map(lua_State *L);

/* plan.c */
int lscsictl_plan(lua_State *L);

/* ops.c */
/* Pushes the arguments of step s's callback after self, as spec §4 lists
 * them (fresh tables); returns how many. */
int lscsictl_push_args(lua_State *L, const scsictl_step *s);
/* Pushes a disk's options as a table of name -> value (strings). */
void lscsictl_push_disk_options(lua_State *L, const char *const *options, size_t n);
int lscsictl_map(lua_State *L);
int lscsictl_unmap(lua_State *L);
void lscsictl_op_register(lua_State *L, int keys);

#endif
