/* args.c — argument checking for the Lua binding.
 *
 * Caller mistakes raise in the standard "bad argument #N to 'name' (...)"
 * form before anything changes: wrong types, missing fields, unknown type
 * strings or keys, non-boolean flags, non-integer or negative numbers,
 * strings with NUL bytes, empty host paths, ids that are not UUIDs. */
#include <stdlib.h>
#include <string.h>

#include "lscsictl.h"

static const char *const disk_keys[] = { "host_path", "read_only", "type", "evd_type", "options",
                                         NULL };
static const char *const mount_keys[] = { "partition", "read_only", "encrypted", "options",
                                          "ensure_filesystem", "filesystem", "block_dev",
                                          "format_with_refs", "verity", NULL };
static const char *const verity_keys[] = { "root_hash", "hash_offset", NULL };

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

/* Pushes the fields keys[0..n-1] of the table at arg and stores each
 * one's stack index in at[] (0 when nil). Returns whether the caller must
 * check the table's raw keys (largs_known_keys), after it has checked the
 * fields' values.
 *
 * A plain table (no metatable, the common case) takes one lua_next pass
 * over its raw keys: a call usually sets one or two of the eight fields,
 * so that is far cheaper than looking every field up, and it sees the
 * unknown keys on the way. A table with a metatable gets each field looked
 * up (so __index is honoured), and its raw keys are always checked: a
 * count of them says nothing when __index supplies fields too. */
static int gather(lua_State *L, int arg, const int *keys, int n, int *at)
{
    int unknown = 0;
    luaL_checkstack(L, n + 3, "scsictl: checking a table argument");
    for (int i = 0; i < n; i++)
        at[i] = 0;
    if (lua_getmetatable(L, arg)) {
        lua_pop(L, 1);
        for (int i = 0; i < n; i++) {
            if (lkey_get(L, arg, keys[i]) == LUA_TNIL)
                lua_pop(L, 1);
            else
                at[i] = lua_gettop(L);
        }
        return 1;
    }
    lua_pushnil(L);
    while (lua_next(L, arg)) { /* ... key value */
        int i = 0;
        while (i < n && !lua_rawequal(L, -2, lua_upvalueindex(keys[i])))
            i++;
        if (i == n) {
            unknown++;
            lua_pop(L, 1);
            continue;
        }
        lua_insert(L, -2); /* ... value key: the value stays */
        at[i] = lua_gettop(L) - 1;
    }
    return unknown > 0;
}

/* Optional boolean at stack index idx (0 = absent). */
static bool opt_bool(lua_State *L, int arg, int idx, const char *what, int key)
{
    if (idx == 0)
        return false;
    if (lua_type(L, idx) != LUA_TBOOLEAN)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s must be a boolean, got %s", what,
                                              lkey_name(key), luaL_typename(L, idx)));
    return lua_toboolean(L, idx);
}

/* Optional string without NUL bytes at stack index idx (0 = absent: NULL).
 * The string stays referenced from the stack. */
static const char *opt_string(lua_State *L, int arg, int idx, const char *what, int key)
{
    if (idx == 0)
        return NULL;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s must be a string, got %s", what,
                                              lkey_name(key), luaL_typename(L, idx)));
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (strlen(s) != len)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s contains a NUL byte", what,
                                              lkey_name(key)));
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

/* Orders "key=value" strings by key, as the core wants them. */
static int cmp_option(const void *pa, const void *pb)
{
    const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;
    size_t ka = strcspn(a, "="), kb = strcspn(b, "=");
    int c = memcmp(a, b, ka < kb ? ka : kb);
    return c ? c : (ka > kb) - (ka < kb);
}

/* Checks disk.options at stack index opts (0 = absent): a table of option
 * names to strings, integers or booleans, handed to the core as sorted
 * "name=value" strings (kept alive by a scratch table left on the stack). */
static void disk_options_check(lua_State *L, int arg, int opts, largs_disk *out)
{
    if (opts == 0)
        return;
    if (lua_type(L, opts) != LUA_TTABLE)
        luaL_argerror(L, arg, lua_pushfstring(L, "disk.options must be a table of option "
                                                 "names to values, got %s",
                                              luaL_typename(L, opts)));
    luaL_checkstack(L, 6, "scsictl: checking disk.options");
    lua_newtable(L); /* the scratch table */
    int scratch = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, opts)) { /* ... key value */
        size_t klen;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        if (!k || klen == 0 || strlen(k) != klen || strchr(k, '='))
            luaL_argerror(L, arg, "disk.options keys must be non-empty option names "
                                  "without '=' or NUL");
        if (n == SCSICTL_DISK_OPTIONS_MAX)
            luaL_argerror(L, arg, lua_pushfstring(L, "disk.options has more than %d options",
                                                  SCSICTL_DISK_OPTIONS_MAX));
        switch (lua_type(L, -1)) {
        case LUA_TSTRING: {
            size_t vlen;
            const char *v = lua_tolstring(L, -1, &vlen);
            if (strlen(v) != vlen)
                luaL_argerror(L, arg, lua_pushfstring(L, "disk.options.%s contains a NUL byte",
                                                      k));
            lua_pushfstring(L, "%s=%s", k, v);
            break;
        }
        case LUA_TNUMBER:
            if (!lua_isinteger(L, -1))
                luaL_argerror(L, arg, lua_pushfstring(L, "disk.options.%s must be an integer, "
                                                         "a string or a boolean, got %s",
                                                      k, lua_tostring(L, -1)));
            lua_pushfstring(L, "%s=%I", k, lua_tointeger(L, -1));
            break;
        case LUA_TBOOLEAN:
            lua_pushfstring(L, "%s=%s", k, lua_toboolean(L, -1) ? "true" : "false");
            break;
        default:
            luaL_argerror(L, arg, lua_pushfstring(L, "disk.options.%s must be a string, an "
                                                     "integer or a boolean, got %s",
                                                  k, luaL_typename(L, -1)));
        }
        size_t olen;
        const char *o = lua_tolstring(L, -1, &olen);
        if (olen > SCSICTL_DISK_OPTION_MAX)
            luaL_argerror(L, arg, lua_pushfstring(L, "disk.options.%s is longer than %d bytes",
                                                  k, SCSICTL_DISK_OPTION_MAX));
        out->options[n++] = o;
        lua_rawseti(L, scratch, (lua_Integer)n); /* keeps o alive */
        lua_pop(L, 1);                           /* the value */
    }
    qsort(out->options, n, sizeof out->options[0], cmp_option);
    out->cfg.options = n ? out->options : NULL;
    out->cfg.n_options = n;
}

void largs_disk_check(lua_State *L, int arg, largs_disk *out)
{
    enum { PATH, RO, TYPE, EVD, OPTS, N };
    static const int keys[N] = { K_HOST_PATH, K_READ_ONLY, K_TYPE, K_EVD_TYPE, K_OPTIONS };
    luaL_checktype(L, arg, LUA_TTABLE);
    out->cfg = (scsictl_disk_config){ 0 }; /* options[] is filled as needed */
    int at[N];
    int unknown = gather(L, arg, keys, N, at);
    const char *path = opt_string(L, arg, at[PATH], "disk", K_HOST_PATH);
    if (!path || !path[0])
        luaL_argerror(L, arg, "disk.host_path must be a non-empty string");
    out->cfg.host_path = path;
    out->cfg.read_only = opt_bool(L, arg, at[RO], "disk", K_READ_ONLY);
    const char *type = opt_string(L, arg, at[TYPE], "disk", K_TYPE);
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
    out->cfg.evd_type = opt_string(L, arg, at[EVD], "disk", K_EVD_TYPE);
    disk_options_check(L, arg, at[OPTS], out);
    if (unknown)
        largs_known_keys(L, arg, disk_keys, "disk");
}

/* Checks the options array at stack index opts (0 = absent). */
static void options_check(lua_State *L, int arg, int opts, largs_mount *out)
{
    if (opts == 0)
        return;
    if (lua_type(L, opts) != LUA_TTABLE)
        luaL_argerror(L, arg, lua_pushfstring(L, "mount.options must be an array of strings, "
                                                 "got %s", luaL_typename(L, opts)));
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
}

/* Checks mount.verity at stack index idx (0 = absent): { root_hash = 64
 * hex digits (sha256; either case, kept lowercase), hash_offset = bytes, a
 * multiple of 512, default 0: right after the file system }. */
static void verity_check(lua_State *L, int arg, int idx, largs_mount *out)
{
    if (idx == 0)
        return;
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_argerror(L, arg, lua_pushfstring(L, "mount.verity must be a table, got %s",
                                              luaL_typename(L, idx)));
    lua_pushnil(L);
    while (lua_next(L, idx)) { /* only known keys: a typo must not pass unchecked */
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!k || (strcmp(k, verity_keys[0]) != 0 && strcmp(k, verity_keys[1]) != 0))
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown field '%s' in mount.verity",
                                                  k ? k : luaL_typename(L, -1)));
    }
    lua_getfield(L, idx, "root_hash");
    size_t len = 0;
    const char *h = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    bool hex = h && len == SCSICTL_VERITY_HASH_HEX;
    for (size_t i = 0; hex && i < len; i++) {
        char c = h[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        out->verity_root_hash[i] = c;
    }
    if (!hex)
        luaL_argerror(L, arg, "mount.verity.root_hash must be the sha256 root hash as 64 hex "
                              "digits");
    out->verity_root_hash[SCSICTL_VERITY_HASH_HEX] = '\0';
    lua_pop(L, 1);
    out->cfg.verity_root_hash = out->verity_root_hash;
    lua_getfield(L, idx, "hash_offset");
    if (!lua_isnil(L, -1) && (!to_uint(L, -1, &out->cfg.verity_hash_offset) ||
                              out->cfg.verity_hash_offset % 512 != 0))
        luaL_argerror(L, arg, "mount.verity.hash_offset must be a non-negative multiple of 512 "
                              "(bytes)");
    lua_pop(L, 1);
    if (!out->cfg.read_only)
        luaL_argerror(L, arg, "mount.verity needs read_only = true (a verified layer is "
                              "read-only)");
    if (out->cfg.encrypted)
        luaL_argerror(L, arg, "mount.verity and mount.encrypted cannot be combined");
}

void largs_mount_check(lua_State *L, int arg, largs_mount *out)
{
    enum { PART, RO, ENC, ENSURE, BLOCK, REFS, FS, OPTS, VERITY, N };
    static const int keys[N] = { K_PARTITION, K_READ_ONLY, K_ENCRYPTED,
                                 K_ENSURE_FILESYSTEM, K_BLOCK_DEV, K_FORMAT_WITH_REFS,
                                 K_FILESYSTEM, K_OPTIONS, K_VERITY };
    out->cfg = (scsictl_mount_config){ 0 }; /* the buffers are filled as needed */
    if (lua_isnoneornil(L, arg))
        return;
    luaL_checktype(L, arg, LUA_TTABLE);
    int at[N];
    int unknown = gather(L, arg, keys, N, at);
    if (at[PART] && !to_uint(L, at[PART], &out->cfg.partition))
        luaL_argerror(L, arg, "mount.partition must be a non-negative integer");
    out->cfg.read_only = opt_bool(L, arg, at[RO], "mount", K_READ_ONLY);
    out->cfg.encrypted = opt_bool(L, arg, at[ENC], "mount", K_ENCRYPTED);
    out->cfg.ensure_filesystem = opt_bool(L, arg, at[ENSURE], "mount", K_ENSURE_FILESYSTEM);
    out->cfg.block_dev = opt_bool(L, arg, at[BLOCK], "mount", K_BLOCK_DEV);
    out->cfg.format_with_refs = opt_bool(L, arg, at[REFS], "mount", K_FORMAT_WITH_REFS);
    const char *fs = opt_string(L, arg, at[FS], "mount", K_FILESYSTEM);
    out->cfg.filesystem = fs ? fs : "";
    options_check(L, arg, at[OPTS], out);
    verity_check(L, arg, at[VERITY], out);
    if (unknown)
        largs_known_keys(L, arg, mount_keys, "mount");
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
