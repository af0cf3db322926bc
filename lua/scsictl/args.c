/* args.c — argument checking for the Lua binding.
 *
 * Caller mistakes raise in the standard "bad argument #N to 'name' (...)"
 * form before anything changes: wrong types, missing fields, unknown type
 * strings or keys, non-boolean flags, non-integer or negative numbers,
 * strings with NUL bytes, empty host paths, ids that are not UUIDs. */
#include <string.h>

#include "lscsictl.h"

static const char *const disk_keys[] = { "host_path", "read_only", "type", "evd_type", NULL };
static const char *const mount_keys[] = { "partition", "read_only", "encrypted", "options",
                                          "ensure_filesystem", "filesystem", "block_dev",
                                          "format_with_refs", NULL };

void largs_known_keys(lua_State *L, int arg, const char *const known[], const char *what)
{
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pushfstring(L, "%s has a non-string key (%s)", what, luaL_typename(L, -1));
            luaL_argerror(L, arg, lua_tostring(L, -1));
        }
        const char *k = lua_tostring(L, -1);
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = strcmp(k, known[i]) == 0;
        if (!ok)
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown field '%s' in %s", k, what));
    }
}

/* Raises if the table at arg has a key that is not a known field: cheap
 * when every raw key was one of the `found` known fields, else a scan
 * that names the offending key. */
static void no_unknown_keys(lua_State *L, int arg, int found, const char *const known[],
                            const char *what)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        n++;
    }
    if (n != found)
        largs_known_keys(L, arg, known, what);
}

/* Optional boolean field of the table at arg. */
static bool opt_bool(lua_State *L, int arg, const char *what, int key, int *present)
{
    const char *field = lkey_name(key);
    int t = lkey_get(L, arg, key);
    bool v = false;
    *present += t != LUA_TNIL; /* counted to detect unknown keys cheaply */
    if (t == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s must be a boolean, got %s", what,
                                              field, luaL_typename(L, -1)));
    lua_pop(L, 1);
    return v;
}

/* Optional string field without NUL bytes; NULL when absent. The string
 * stays referenced by the table, which the caller keeps on the stack. */
static const char *opt_string(lua_State *L, int arg, const char *what, int key,
                              int *present)
{
    const char *field = lkey_name(key);
    int t = lkey_get(L, arg, key);
    const char *s = NULL;
    *present += t != LUA_TNIL; /* counted to detect unknown keys cheaply */
    if (t == LUA_TSTRING) {
        size_t len;
        s = lua_tolstring(L, -1, &len);
        if (strlen(s) != len)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s contains a NUL byte", what, field));
    } else if (t != LUA_TNIL) {
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s must be a string, got %s", what,
                                              field, luaL_typename(L, -1)));
    }
    lua_pop(L, 1);
    return s;
}

/* A non-negative integer (an integer-valued float is accepted). */
static bool to_uint(lua_State *L, int idx, uint64_t *out)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return false;
    int isint;
    lua_Integer v = lua_tointegerx(L, idx, &isint);
    if (!isint || v < 0)
        return false;
    *out = (uint64_t)v;
    return true;
}

uint64_t largs_uint_check(lua_State *L, int arg, const char *what)
{
    uint64_t v = 0;
    if (!to_uint(L, arg, &v))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a non-negative integer, got %s",
                                              what, lua_type(L, arg) == LUA_TNUMBER
                                                        ? lua_tostring(L, arg)
                                                        : luaL_typename(L, arg)));
    return v;
}

void largs_disk_check(lua_State *L, int arg, largs_disk *out)
{
    luaL_checktype(L, arg, LUA_TTABLE);
    memset(out, 0, sizeof *out);
    int present = 0; /* known fields found, to detect unknown keys cheaply */
    const char *path = opt_string(L, arg, "disk", K_HOST_PATH, &present);
    if (!path || !path[0])
        luaL_argerror(L, arg, "disk.host_path must be a non-empty string");
    out->cfg.host_path = path;
    out->cfg.read_only = opt_bool(L, arg, "disk", K_READ_ONLY, &present);
    const char *type = opt_string(L, arg, "disk", K_TYPE, &present);
    if (!type || strcmp(type, "VirtualDisk") == 0)
        out->cfg.type = SCSICTL_DISK_VIRTUAL_DISK;
    else if (strcmp(type, "PassThru") == 0)
        out->cfg.type = SCSICTL_DISK_PASSTHRU;
    else if (strcmp(type, "ExtensibleVirtualDisk") == 0)
        out->cfg.type = SCSICTL_DISK_EXTENSIBLE_VIRTUAL_DISK;
    else
        luaL_argerror(L, arg, lua_pushfstring(L, "disk.type must be \"VirtualDisk\", "
                                                 "\"PassThru\" or \"ExtensibleVirtualDisk\", "
                                                 "got \"%s\"", type));
    out->cfg.evd_type = opt_string(L, arg, "disk", K_EVD_TYPE, &present);
    no_unknown_keys(L, arg, present, disk_keys, "disk");
}

/* Returns 1 when options is present, 0 when absent. */
static int options_check(lua_State *L, int arg, largs_mount *out)
{
    int t = lkey_get(L, arg, K_OPTIONS); /* stays on the stack */
    if (t == LUA_TNIL)
        return 0;
    if (t != LUA_TTABLE)
        luaL_argerror(L, arg, lua_pushfstring(L, "mount.options must be an array of strings, "
                                                 "got %s", luaL_typename(L, -1)));
    int opts = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, opts);
    /* Every key must be 1..n: no holes, no named fields. */
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        lua_pop(L, 1);

        int isint;
        lua_Integer k = lua_tointegerx(L, -1, &isint);
        if (lua_type(L, -1) != LUA_TNUMBER || !isint || k < 1 || k > n)
            luaL_argerror(L, arg, "mount.options must be an array of strings");
    }
    const char **list = out->small_options;
    if ((size_t)n > sizeof out->small_options / sizeof out->small_options[0])
        list = lua_newuserdatauv(L, (size_t)n * sizeof(char *), 0); /* freed by the GC */
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, opts, i) != LUA_TSTRING)
            luaL_argerror(L, arg, lua_pushfstring(L, "mount.options[%d] must be a string, "
                                                     "got %s", (int)i, luaL_typename(L, -1)));
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (strlen(s) != len)
            luaL_argerror(L, arg, lua_pushfstring(L, "mount.options[%d] contains a NUL byte",
                                                  (int)i));
        list[i - 1] = s; /* kept alive by the options table */
        lua_pop(L, 1);
    }
    out->cfg.options = list;
    out->cfg.n_options = (size_t)n;
    return 1;
}

void largs_mount_check(lua_State *L, int arg, largs_mount *out)
{
    memset(out, 0, sizeof *out);
    if (lua_isnoneornil(L, arg))
        return;
    luaL_checktype(L, arg, LUA_TTABLE);
    int present = 0; /* known fields found, to detect unknown keys cheaply */
    if (lkey_get(L, arg, K_PARTITION) != LUA_TNIL) {
        present++;
        if (!to_uint(L, -1, &out->cfg.partition))
            luaL_argerror(L, arg, "mount.partition must be a non-negative integer");
    }
    lua_pop(L, 1);
    out->cfg.read_only = opt_bool(L, arg, "mount", K_READ_ONLY, &present);
    out->cfg.encrypted = opt_bool(L, arg, "mount", K_ENCRYPTED, &present);
    out->cfg.ensure_filesystem = opt_bool(L, arg, "mount", K_ENSURE_FILESYSTEM, &present);
    out->cfg.block_dev = opt_bool(L, arg, "mount", K_BLOCK_DEV, &present);
    out->cfg.format_with_refs = opt_bool(L, arg, "mount", K_FORMAT_WITH_REFS, &present);
    const char *fs = opt_string(L, arg, "mount", K_FILESYSTEM, &present);
    out->cfg.filesystem = fs ? fs : "";
    int found = present;
    found += options_check(L, arg, out);
    no_unknown_keys(L, arg, found, mount_keys, "mount");
}

void largs_id_check(lua_State *L, int arg, scsictl_id *out)
{
    size_t len;
    const char *s = lua_type(L, arg) == LUA_TSTRING ? lua_tolstring(L, arg, &len) : NULL;
    if (!s)
        luaL_typeerror(L, arg, "reservation id (UUID string)");
    if (scsictl_id_parse(s, len, out) != SCSICTL_OK)
        luaL_argerror(L, arg, "reservation id must be a UUID string "
                              "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
}
