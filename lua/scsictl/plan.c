/* plan.c — ctl:plan(id, "map" | "unmap"): the steps that operation would
 * run now, each assumed to succeed, without running anything.
 *
 * The operation is driven on a copy of the controller (scsictl_copy), by
 * the core's own code, so the plan cannot drift from what the operation
 * does; the copy is freed before the call returns. */
#include <stdio.h>

#include "lscsictl.h"

/* { step = name, backend = name, args = { <the callback's arguments> } } */
static void push_step(lua_State *L, const scsictl_step *s)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, scsictl_step_name(s->kind));
    lua_setfield(L, -2, "step");
    lua_pushstring(L, scsictl_step_backend(s->kind));
    lua_setfield(L, -2, "backend");
    luaL_checkstack(L, 8, "scsictl: planning");
    int n = lscsictl_push_args(L, s);
    lua_createtable(L, n, 0);
    lua_insert(L, -n - 1);
    for (int i = n; i >= 1; i--)
        lua_rawseti(L, -i - 1, i);
    lua_setfield(L, -2, "args");
}

int lscsictl_plan(lua_State *L)
{
    static const char *const whats[] = { "map", "unmap", NULL };
    lctl *c = lscsictl_check(L, 1);
    scsictl_id id;
    largs_id_check(L, 2, &id);
    bool map = luaL_checkoption(L, 3, NULL, whats) == 0;
    lua_settop(L, 3);
    if (!c->core)
        return lscsictl_finalized(L, "plan");
    scsictl_error err;
    /* The copy takes a step in flight as maybe done: the operation itself
     * would say busy. */
    scsictl_reservation_info *info = NULL;
    if (scsictl_get_reservation(c->core, &id, &info, &err) == SCSICTL_OK) {
        bool busy = info->busy;
        scsictl_info_free(c->core, info);
        if (busy) {
            err.code = SCSICTL_E_BUSY;
            snprintf(err.message, sizeof err.message,
                     "plan: reservation %s is busy with a backend call; retry later",
                     lua_tostring(L, 2));
            return lscsictl_fail(L, &err);
        }
    }
    lblock *held = lscsictl_push_block(L, c->core); /* owns the copy from the start */
    if (scsictl_copy(c->core, NULL, &held->copy, &err) != SCSICTL_OK)
        return lscsictl_fail(L, &err);
    scsictl *copy = held->copy;
    scsictl_set_single_threaded(copy, true);
    scsictl_op op;
    int st = map ? scsictl_op_start_map(copy, &op, &id, &err)
                 : scsictl_op_start_unmap(copy, &op, &id, &err);
    lua_newtable(L);
    lua_Integer n = 0;
    while (st == SCSICTL_STEP || st == SCSICTL_PERSIST) {
        if (st == SCSICTL_PERSIST) { /* a copy has no state file: never asked */
            st = scsictl_op_persisted(copy, &op, true, NULL, &err);
            continue;
        }
        push_step(L, &op.step);
        lua_rawseti(L, -2, ++n);
        st = scsictl_op_report(copy, &op, true, NULL, &err);
    }
    if (st != SCSICTL_DONE)
        return lscsictl_fail(L, &err);
    return 1;
}
