/* slot_map.c — ctl:slot_map(): the controllers drawn as text.
 *
 * One row per controller and one glyph per LUN when the geometry fits 80
 * columns (at most 64 LUNs and 16 controllers); otherwise one line of
 * counts per controller in use. The glyphs and their order of precedence
 * are in `glyphs` below; a slot shows the first that applies. */
#include <stdarg.h>
#include <stdio.h>

#include "lscsictl.h"

enum { MAP_MAX_LUNS = 64, MAP_MAX_ROWS = 16 };

enum glyph { G_BUSY, G_PINNED, G_TEARDOWN, G_MOUNTED, G_ATTACHED, G_RESERVED, G_FREE, G_COUNT };

static const struct {
    char c;
    const char *name;
} glyphs[G_COUNT] = {
    [G_BUSY] = { '*', "busy" },
    [G_PINNED] = { 'p', "pinned" },
    [G_TEARDOWN] = { '~', "removing" }, /* being torn down */
    [G_MOUNTED] = { 'M', "mounted" },
    [G_ATTACHED] = { 'a', "attached" },
    [G_RESERVED] = { 'r', "reserved" },
    [G_FREE] = { '.', "free" },
};

static enum glyph glyph_of(const scsictl_slot_info *s)
{
    if (s->busy)
        return G_BUSY;
    if (s->pinned)
        return G_PINNED;
    if (s->tearing_down)
        return G_TEARDOWN;
    for (size_t i = 0; i < s->n_partitions; i++)
        if (s->partitions[i].state == SCSICTL_MOUNT_MOUNTED)
            return G_MOUNTED;
    return s->state == SCSICTL_DISK_ATTACHED ? G_ATTACHED : G_RESERVED;
}

/* Adds a formatted string to the buffer (pushed, then taken by addvalue,
 * the balanced use of the stack a buffer allows). */
static void addf(luaL_Buffer *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(b->L, fmt, ap);
    va_end(ap);
    luaL_addvalue(b);
}

static void add_legend(luaL_Buffer *b)
{
    luaL_addstring(b, "legend:");
    for (int g = G_FREE; g >= 0; g--)
        addf(b, g == G_FREE ? " %c %s" : "  %c %s", glyphs[g].c, glyphs[g].name);
    luaL_addchar(b, '\n');
}

/* Rows of glyphs; list is sorted by slot index. */
static void add_grid(luaL_Buffer *b, const scsictl_stats *st, const scsictl_slot_info *list,
                     size_t n)
{
    char line[8 + MAP_MAX_LUNS + 2];
    for (int digit = 0; digit < 2; digit++) { /* tens, then units */
        size_t len = (size_t)snprintf(line, sizeof line, "%-6s", "");
        for (uint32_t lun = 0; lun < st->luns_per_controller; lun++)
            line[len++] = digit == 0 ? (lun % 10 ? ' ' : (char)('0' + lun / 10 % 10))
                                     : (char)('0' + lun % 10);
        while (line[len - 1] == ' ')
            len--;
        line[len++] = '\n';
        luaL_addlstring(b, line, len);
    }
    size_t next = 0;
    for (uint32_t c = 0; c < st->controllers; c++) {
        size_t len = (size_t)snprintf(line, sizeof line, "c%-5u", (unsigned)c);
        for (uint32_t lun = 0; lun < st->luns_per_controller; lun++) {
            enum glyph g = G_FREE;
            if (next < n && list[next].controller == c && list[next].lun == lun)
                g = glyph_of(&list[next++]);
            line[len++] = glyphs[g].c;
        }
        line[len++] = '\n';
        luaL_addlstring(b, line, len);
    }
}

/* One line of counts per controller in use (the first MAP_MAX_ROWS). */
static void add_summary(luaL_Buffer *b, const scsictl_stats *st, const scsictl_slot_info *list,
                        size_t n)
{
    uint32_t shown = 0, in_use = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c = list[i].controller, count[G_COUNT] = { 0 }, used = 0;
        for (; i < n && list[i].controller == c; i++, used++)
            count[glyph_of(&list[i])]++;
        in_use++;
        if (shown == MAP_MAX_ROWS)
            continue;
        shown++;
        addf(b, "c%d: %d of %d used:", (int)c, (int)used, (int)st->luns_per_controller);
        for (int g = 0; g < G_FREE; g++)
            if (count[g])
                addf(b, " %c %d", glyphs[g].c, (int)count[g]);
        luaL_addchar(b, '\n');
    }
    if (in_use > shown)
        addf(b, "(%d more controllers in use)\n", (int)(in_use - shown));
    addf(b, "(%d controllers all free)\n", (int)(st->controllers - in_use));
}

int lscsictl_slot_map(lua_State *L)
{
    lctl *c = lscsictl_check(L, 1);
    lua_settop(L, 1);
    if (!c->core) {
        lua_pushliteral(L, "scsictl slot map: controller is closed (it was finalized)");
        return 1;
    }
    scsictl_stats st;
    scsictl_get_stats(c->core, &st);
    lblock *blk = lscsictl_push_block(L, c->core);
    scsictl_slot_info *list = NULL;
    size_t n = 0;
    scsictl_error err;
    if (scsictl_list_slots(c->core, &list, &n, &err) != SCSICTL_OK)
        return luaL_error(L, "%s", err.message);
    blk->info = list;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    addf(&b, "scsictl slot map: %d controllers x %d LUNs, %d of %d slots used%s\n",
         (int)st.controllers, (int)st.luns_per_controller, (int)st.used, (int)st.slots,
         st.closed ? " (closed)" : "");
    if (st.luns_per_controller <= MAP_MAX_LUNS && st.controllers <= MAP_MAX_ROWS)
        add_grid(&b, &st, list, n);
    else
        add_summary(&b, &st, list, n);
    add_legend(&b);
    luaL_pushresult(&b);
    return 1;
}
