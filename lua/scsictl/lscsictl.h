/* lscsictl.h — shared declarations of the Lua binding's C files.
 *
 *   module.c  luaopen_scsictl, scsictl.new, controller methods, introspection
 *   args.c    argument checking: raise "bad argument #N to 'name' (...)"
 *   ops.c     map_to_guest / unmap_from_guest: steps as Lua callbacks,
 *             continuations for yields, abandonment of suspended steps */
#ifndef LSCSICTL_H
#define LSCSICTL_H

#include <lauxlib.h>
#include <lua.h>

#include "scsictl.h"

#define LSCSICTL_CONTROLLER "scsictl.controller"
#define LSCSICTL_OP "scsictl.op"

/* Uservalues of a controller userdata. */
enum { UV_VM = 1, UV_GUEST = 2, UV_COUNT = 2 };

typedef struct lctl {
    scsictl *core;   /* NULL once collected */
    scsictl_guest guest;
} lctl;

/* args.c */
typedef struct largs_disk {
    scsictl_disk_config cfg;
} largs_disk;

/* Mount config; options point into Lua strings held by the caller's table
 * (the array is in a scratch userdata pushed on the stack when large). */
typedef struct largs_mount {
    scsictl_mount_config cfg;
    const char *small_options[8];
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

/* ops.c */
int lscsictl_map(lua_State *L);
int lscsictl_unmap(lua_State *L);
void lscsictl_op_register(lua_State *L);

#endif
