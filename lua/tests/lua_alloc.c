/*
 * lua_alloc.c — allocation failure in the Lua binding (and the core under it).
 *
 * A C program embedding Lua 5.4 with the scsictl module linked in
 * statically. A scenario script (new, reserve, map, unmap, a yielding
 * callback in a coroutine, rootfs pin, slots, reservations, stats, save,
 * import, tostring, a failing callback) runs once per allocation point N:
 *
 *   mode "lua":  from the Nth growing allocation made through the
 *                lua_State's allocator on, every one fails until the
 *                scenario returns (Lua strings, tables, userdata, the
 *                binding's op and listing objects; Lua retries a failed
 *                allocation once after an emergency collection);
 *   mode "core": the Nth malloc/realloc made by the core (and the binding's
 *                C code) fails. The binding gives the core no allocator
 *                (scsictl_new is called with opts.allocator = NULL, so the
 *                core uses malloc), hence the injection goes through the
 *                linker: -Wl,--wrap=malloc,--wrap=realloc,--wrap=free apply
 *                to the statically linked core and binding objects only.
 *
 * For every N, with failures then disabled again, it checks:
 *   1. the scenario either completed or ended in a Lua error (never a
 *      crash; under ASan/valgrind never a memory error);
 *   2. the controller (if it was created) is consistent: stats() agrees with
 *      slots(), and slots() agrees with the backend's own log (which slots
 *      are attached / ejected, which partitions mounted);
 *   3. every suspended coroutine can be finished, every reservation can be
 *      released with good backends, after which nothing is used but pins
 *      and every add has its remove, every mount its unmount (P3);
 *   4. after lua_close, every block the core and binding malloc'd was
 *      freed (a live-block counter; ASan/valgrind check the rest).
 *
 * Usage: lua_alloc [lua|core|both] [max-points]. Prints the number of
 * allocation points exercised per mode; exits non-zero on any violation.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int luaopen_scsictl(lua_State *L);

/* ---- failure injection ------------------------------------------------ */

static long lua_count, lua_fail_at = -1;   /* Lua allocator */
static long core_count, core_fail_at = -1; /* core malloc/realloc */
static long core_live;                     /* blocks malloc'd, not freed */
static bool injected;

void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

void *__wrap_malloc(size_t n)
{
    if (core_fail_at >= 0 && ++core_count == core_fail_at) {
        injected = true;
        return NULL;
    }
    void *p = __real_malloc(n);
    if (p) core_live++;
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (core_fail_at >= 0 && ++core_count == core_fail_at) {
        injected = true;
        return NULL;
    }
    void *q = __real_realloc(p, n);
    if (q && !p) core_live++;
    return q;
}

void __wrap_free(void *p)
{
    if (p) core_live--;
    __real_free(p);
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        __real_free(ptr);
        return NULL;
    }
    /* Lua assumes shrinking never fails: count growing requests only.
     * From the Nth on, every growing request fails until the scenario's
     * pcall returns: Lua answers a failed allocation with an emergency
     * collection and one retry, which a single failure would pass. */
    if (lua_fail_at >= 0 && nsize > (ptr ? osize : 0) && ++lua_count >= lua_fail_at) {
        injected = true;
        return NULL;
    }
    return __real_realloc(ptr, nsize);
}

/* ---- the scenario and the checks (Lua) -------------------------------- */

static const char scenario[] =
    "local scsictl = require('scsictl')\n"
    "LOG = { attached = {}, ejected = {}, mounted = {}, adds = 0, removes = 0, mounts = 0, unmounts = 0 }\n"
    "FAIL = {}\n"
    "CO = {}\n"
    "local function key(c, l) return c .. ':' .. l end\n"
    "local function outcome(name)\n"
    "  if FAIL[name] then FAIL[name] = nil; return false end\n"
    "  if YIELD == name then YIELD = nil; return coroutine.yield(name) ~= false end\n"
    "  return true\n"
    "end\n"
    "VM = {\n"
    "  add_scsi_disk = function(_, att, c, l)\n"
    "    if not outcome('add') then return nil, 'add refused' end\n"
    "    LOG.attached[key(c, l)] = att.path; LOG.adds = LOG.adds + 1\n"
    "  end,\n"
    "  remove_scsi_disk = function(_, c, l)\n"
    "    if not outcome('remove') then return false end\n"
    "    LOG.attached[key(c, l)] = nil; LOG.ejected[key(c, l)] = nil; LOG.removes = LOG.removes + 1\n"
    "  end,\n"
    "}\n"
    "GUEST = {\n"
    "  add_mapped_virtual_disk = function(_, s)\n"
    "    if not outcome('mount') then error('mount refused') end\n"
    "    LOG.mounted[s.mount_path] = true; LOG.mounts = LOG.mounts + 1\n"
    "  end,\n"
    "  remove_mapped_virtual_disk = function(_, s)\n"
    "    if not outcome('unmount') then return nil, 'unmount refused' end\n"
    "    LOG.mounted[s.mount_path] = nil; LOG.unmounts = LOG.unmounts + 1\n"
    "  end,\n"
    "  remove_scsi_device = function(_, d)\n"
    "    if not outcome('eject') then error({}) end\n"
    "    LOG.ejected[key(d.controller, d.lun)] = true\n"
    "  end,\n"
    "}\n"
    "function SCENARIO()\n"
    "  CTL = scsictl.new{ controllers = 2, luns_per_controller = 2, vm = VM, linux_guest = GUEST,\n"
    "                     trace = function(e) TRACED = (TRACED or 0) + 1 end }\n"
    "  local ctl = CTL\n"
    "  assert(ctl:reserve_for_rootfs(1, 1, { host_path = '/img/root' }))\n"
    "  local a = assert(ctl:reserve({ host_path = '/img/a' }, { options = { 'ro', 'noatime' } }))\n"
    "  local a2 = assert(ctl:reserve({ host_path = '/img/a' }, { options = { 'ro', 'noatime' } }))\n"
    "  local b = assert(ctl:reserve({ host_path = '/img/b', read_only = true,\n"
    "                                 options = { cache = 'none', bps = 4096 } }, { partition = 2 }))\n"
    "  assert(ctl:map_to_guest(a))\n"
    "  assert(ctl:map_to_guest(a2))\n"
    "  local plan = assert(ctl:plan(b, 'map'))\n"
    "  assert(#plan == 2 and plan[2].args[1].partition == 2)\n"
    "  assert(ctl:slot_map():find('legend', 1, true))\n"
    "  YIELD = 'add'\n"
    "  local co = coroutine.create(function() return ctl:map_to_guest(b) end)\n"
    "  CO[#CO + 1] = co\n"
    "  assert(coroutine.resume(co))\n"
    "  assert(ctl:stats().used == 3)\n"
    "  local slots = ctl:slots()\n"
    "  assert(#slots == 3)\n"
    "  local ok, path = coroutine.resume(co, true)\n"
    "  assert(ok and path, path)\n"
    "  assert(#ctl:reservations() == 3)\n"
    "  assert(ctl:reservation(a).host_path == '/img/a')\n"
    "  assert(tostring(ctl):find('scsictl'))\n"
    "  local snap = assert(ctl:save())\n"
    "  local ctl2 = assert(scsictl.import(snap, { vm = VM, linux_guest = GUEST }))\n"
    "  assert(ctl2:save() == snap)\n"
    "  ctl2:close()\n"
    "  local ctl3 = assert(scsictl.import(snap, { vm = VM, linux_guest = GUEST,\n"
    "                                           remap = function(p) return p .. '.moved' end }))\n"
    "  assert(ctl3:slots()[2].options.cache == 'none')\n"
    "  ctl3:close()\n"
    "  assert(select(3, scsictl.import(snap, { vm = VM, linux_guest = GUEST,\n"
    "                                        remap = { ['/img/a'] = '/img/b' } })) == 'invalid_argument')\n"
    "  -- unmounted behind the controller's back, then recorded so and mounted again\n"
    "  LOG.mounted['/run/mounts/scsi/0_1_2'] = nil; LOG.unmounts = LOG.unmounts + 1\n"
    "  assert(ctl:set_mount_state(0, 1, 2, 'reserved'))\n"
    "  assert(ctl:map_to_guest(b))\n"
    "  FAIL.unmount = true\n"
    "  assert(ctl:unmap_from_guest(a))\n"
    "  assert(select(3, ctl:unmap_from_guest(a2)) == 'backend')\n"
    "  assert(ctl:unmap_from_guest(a2))\n"
    "  local r = ctl:reserve({ host_path = '/img/root' })\n"
    "  assert(r and ctl:map_to_guest(r))\n"
    "  assert(ctl:unmap_from_guest(r))\n"
    "  assert(ctl:unmap_from_guest(b))\n"
    "  local many = {}\n"
    "  for i = 1, 20 do many[i] = 'opt' .. i end\n"
    "  local c = assert(ctl:reserve({ host_path = '/img/c', type = 'ExtensibleVirtualDisk', evd_type = 'e' },\n"
    "    { options = many, filesystem = 'xfs' }))\n"
    "  assert(ctl:unmap_from_guest(c))\n"
    "  return 'completed'\n"
    "end\n"
    "function CHECK()\n"
    "  FAIL = {}; YIELD = nil\n"
    "  -- an op whose __close Lua could not call (the memory error went on while\n"
    "  -- the stack unwound) reports its step from __gc\n"
    "  collectgarbage()\n"
    "  local ctl = CTL\n"
    "  if not ctl then return 'no controller' end\n"
    "  for _, co in ipairs(CO) do\n"
    "    if coroutine.status(co) == 'suspended' then assert(coroutine.resume(co, true)) end\n"
    "    -- a coroutine that died of an error keeps its to-be-closed op until closed\n"
    "    coroutine.close(co)\n"
    "  end\n"
    "  local st, slots = ctl:stats(), ctl:slots()\n"
    "  local used, pinned, disks, res = 0, 0, 0, 0\n"
    "  for _, s in ipairs(slots) do\n"
    "    used = used + 1\n"
    "    if s.pinned then pinned = pinned + 1 end\n"
    "    if s.host_path then disks = disks + 1; res = res + s.reservations end\n"
    "    local k = s.controller .. ':' .. s.lun\n"
    "    local want = LOG.attached[k] and (LOG.ejected[k] and 'ejected' or 'attached') or 'reserved'\n"
    "    assert(not s.host_path or s.state == want, 'slot ' .. k .. ' state ' .. tostring(s.state) .. ' log ' .. want)\n"
    "    assert(s.host_path or not LOG.attached[k], 'slot ' .. k .. ' attached in the log, empty in slots()')\n"
    "    for _, p in ipairs(s.partitions) do\n"
    "      local gp = '/run/mounts/scsi/' .. s.controller .. '_' .. s.lun .. '_' .. p.partition\n"
    "      assert((p.state == 'mounted') == (LOG.mounted[gp] == true), 'partition ' .. gp)\n"
    "    end\n"
    "    assert(not s.busy, 'slot ' .. k .. ' left busy')\n"
    "  end\n"
    "  assert(st.used == used and st.pinned == pinned and st.disks == disks and st.free == st.slots - st.used,\n"
    "    'stats disagree with slots()')\n"
    "  assert(st.reservations == #ctl:reservations(), 'stats.reservations')\n"
    "  for _, r in ipairs(ctl:reservations()) do\n"
    "    local ok, msg = ctl:unmap_from_guest(r.id)\n"
    "    assert(ok, 'release with good backends failed: ' .. tostring(msg))\n"
    "  end\n"
    "  st = ctl:stats()\n"
    "  assert(st.reservations == 0 and st.disks == 0 and st.used == st.pinned, 'P3: not everything released')\n"
    "  assert(LOG.adds == LOG.removes and LOG.mounts == LOG.unmounts, 'P3: log unbalanced')\n"
    "  assert(next(LOG.attached) == nil and next(LOG.mounted) == nil, 'P3: still attached or mounted')\n"
    "  return 'consistent'\n"
    "end\n";

static int failures;

static void violation(const char *mode, long n, const char *what)
{
    fprintf(stderr, "lua_alloc: %s point %ld: %s\n", mode, n, what);
    failures++;
}

/* Runs the scenario with allocation point n failing; returns false once a
 * run completes without reaching point n. */
static bool run_point(const char *mode, long n, long *errors)
{
    bool core = strcmp(mode, "core") == 0;
    lua_count = core_count = 0;
    lua_fail_at = core_fail_at = -1;
    injected = false;
    long live_before = core_live;
    lua_State *L = lua_newstate(l_alloc, NULL);
    if (!L) {
        violation(mode, n, "lua_newstate failed");
        return false;
    }
    luaL_openlibs(L);
    luaL_requiref(L, "scsictl", luaopen_scsictl, 0);
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, scenario, sizeof scenario - 1, "=scenario") != LUA_OK ||
        lua_pcall(L, 0, 0, 0) != LUA_OK) {
        violation(mode, n, lua_tostring(L, -1));
        lua_close(L);
        return false;
    }
    lua_getglobal(L, "SCENARIO");
    if (core) core_fail_at = n; else lua_fail_at = n;
    int st = lua_pcall(L, 0, 1, 0);
    lua_fail_at = core_fail_at = -1;
    bool reached = injected;
    if (st != LUA_OK) {
        (*errors)++;
        if (!reached) {
            char buf[600];
            snprintf(buf, sizeof buf, "scenario failed with no injected failure: %s",
                     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
            violation(mode, n, buf);
        } else if (getenv("LUA_ALLOC_VERBOSE")) {
            fprintf(stderr, "  %s %ld: %s\n", mode, n,
                    lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
        }
    } else if (reached && getenv("LUA_ALLOC_VERBOSE")) {
        fprintf(stderr, "  %s %ld: completed despite the failure (absorbed)\n", mode, n);
    }
    lua_settop(L, 0);
    lua_getglobal(L, "CHECK");
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
        char buf[600];
        snprintf(buf, sizeof buf, "inconsistent after the failure: %s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
        violation(mode, n, buf);
    }
    lua_close(L);
    if (core_live != live_before) {
        char buf[100];
        snprintf(buf, sizeof buf, "%ld block(s) malloc'd by the core/binding leaked",
                 core_live - live_before);
        violation(mode, n, buf);
        core_live = live_before;
    }
    return reached;
}

static long run_mode(const char *mode, long max)
{
    long n = 1, errors = 0;
    for (; n <= max && run_point(mode, n, &errors); n++) {
    }
    printf("lua_alloc: %s: %ld allocation points failed one at a time, %ld surfaced as Lua "
           "errors, the rest were absorbed; %d violations so far\n",
           mode, n - 1, errors, failures);
    if (n > max) {
        fprintf(stderr, "lua_alloc: %s: stopped at the limit of %ld points\n", mode, max);
    }
    return n - 1;
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "both";
    long max = argc > 2 ? atol(argv[2]) : 100000;
    long total = 0;
    if (strcmp(which, "lua") == 0 || strcmp(which, "both") == 0) total += run_mode("lua", max);
    if (strcmp(which, "core") == 0 || strcmp(which, "both") == 0) total += run_mode("core", max);
    printf("lua_alloc: %ld allocation points, %d violations\n", total, failures);
    return failures || total == 0 ? 1 : 0;
}
