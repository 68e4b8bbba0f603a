/*
 * lraw: the check that lraw.h's views are this Lua's. See lraw.h.
 */
#include "lraw.h"

#include <lauxlib.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if LUA_VERSION_NUM == 504
#define LRAW_POSSIBLE 1
#else
#define LRAW_POSSIBLE 0
#endif

/* 0: not checked yet, 1: the views hold, 2: they do not (or are off). */
static atomic_int checked;
static atomic_int forced_off;

void lraw_force_off(int off)
{
    atomic_store(&forced_off, off != 0);
}

static _Thread_local unsigned long walks, giveups;

void lraw_count(int gave_up)
{
    if (gave_up)
        giveups++;
    else
        walks++;
}

void lraw_counts(unsigned long *w, unsigned long *g)
{
    *w = walks;
    *g = giveups;
}

static int dummy(lua_State *L)
{
    (void)L;
    return 0;
}

static int same_string(lua_State *L, int idx, const struct rtvalue *v)
{
    size_t n, rn;
    const char *s = lua_tolstring(L, idx, &n);
    if ((v->tt_ != (LRAW_VSHRSTR | LRAW_CTB) &&
         v->tt_ != (LRAW_VLNGSTR | LRAW_CTB)) ||
        v->value_.gc != lua_topointer(L, idx))
        return 0;
    const char *r = lraw_string(v, &rn);
    return r == s && rn == n;
}

/* A table with an array part, a hash part and a metatable. */
static int check_table(lua_State *L)
{
    static const char *const keys[] = {"alpha", "beta", "gamma", "delta"};
    lua_createtable(L, 8, 4); /* [t] */
    for (int i = 1; i <= 5; i++) {
        lua_pushinteger(L, 100 + i);
        lua_rawseti(L, -2, i);
    }
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, i);
        lua_setfield(L, -2, keys[i]);
    }
    lua_newtable(L);
    lua_setmetatable(L, -2);
    lua_getmetatable(L, -1); /* [t, mt] */
    (void)lua_rawlen(L, -2); /* may move alimit (luaH_getn) */
    const struct rtable *h = lua_topointer(L, -2);
    int ok = h->tt == LRAW_VTABLE && h->metatable == lua_topointer(L, -1) &&
             h->lsizenode == 2 && lraw_asize(h) == 8 && h->array != NULL &&
             h->node != NULL;
    for (int i = 0; ok && i < 8; i++)
        ok = i < 5 ? h->array[i].tt_ == LRAW_VNUMINT &&
                         h->array[i].value_.i == 101 + i
                   : lraw_isnil(h->array[i].tt_);
    for (int i = 0; ok && i < 4; i++) {
        lua_pushstring(L, keys[i]);
        const void *ks = lua_topointer(L, -1);
        lua_pop(L, 1);
        int found = 0;
        for (int j = 0; j < 4; j++) {
            const union rnode *n = &h->node[j];
            if (n->u.key_tt == (LRAW_VSHRSTR | LRAW_CTB) &&
                n->u.key_val.gc == ks) {
                struct rtvalue k = {n->u.key_val, n->u.key_tt};
                size_t len;
                const char *s = lraw_string(&k, &len);
                found = len == strlen(keys[i]) &&
                        memcmp(s, keys[i], len) == 0 &&
                        n->i_val.tt_ == LRAW_VNUMINT && n->i_val.value_.i == i;
            }
        }
        /* and the lookup finds it, and nothing for a key not there */
        const struct rtvalue *v = lraw_getshortstr(h, ks);
        ok = found && v != NULL && v->tt_ == LRAW_VNUMINT && v->value_.i == i;
    }
    if (ok) {
        lua_pushliteral(L, "epsilon");
        ok = lraw_getshortstr(h, lua_topointer(L, -1)) == NULL;
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return ok;
}

/* Values of every type the encoders read, in an array part. */
static int check_values(lua_State *L)
{
    static char sentinel;
    char long_s[64];
    memset(long_s, 'x', sizeof(long_s)); /* longer than LUAI_MAXSHORTLEN */
    int top = lua_gettop(L);
    lua_createtable(L, 8, 0); /* [t] */
    int t = lua_gettop(L);
    lua_pushnumber(L, 1.5);
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "short");
    lua_pushlstring(L, long_s, sizeof(long_s));
    lua_pushlightuserdata(L, &sentinel);
    lua_newtable(L);
    lua_pushinteger(L, -7);
    for (int i = 8; i >= 1; i--)
        lua_rawseti(L, t, i); /* pops from the top: t[8] = -7 ... */
    for (int i = 1; i <= 8; i++)
        lua_rawgeti(L, t, i); /* [t, v1 .. v8] */
    const struct rtable *h = lua_topointer(L, t);
    const struct rtvalue *a = h->array;
    int ok = lraw_asize(h) == 8 && h->array != NULL &&
             a[0].tt_ == LRAW_VNUMFLT && a[0].value_.n == 1.5 &&
             a[1].tt_ == LRAW_VTRUE && a[2].tt_ == LRAW_VFALSE &&
             same_string(L, t + 4, &a[3]) && same_string(L, t + 5, &a[4]) &&
             a[3].tt_ == (LRAW_VSHRSTR | LRAW_CTB) &&
             a[4].tt_ == (LRAW_VLNGSTR | LRAW_CTB) &&
             a[5].tt_ == LRAW_VLIGHTUSERDATA && a[5].value_.p == &sentinel &&
             a[6].tt_ == (LRAW_VTABLE | LRAW_CTB) &&
             a[6].value_.gc == lua_topointer(L, t + 7) &&
             a[7].tt_ == LRAW_VNUMINT && a[7].value_.i == -7;
    lua_settop(L, top);
    return ok;
}

/* A closed upvalue of a Lua closure, an upvalue of a C closure. */
static int check_upvalues(lua_State *L)
{
    int top = lua_gettop(L);
    static const char chunk[] = "local x = 42 return function() return x end";
    if (luaL_loadbuffer(L, chunk, sizeof(chunk) - 1, "=selftest") != LUA_OK)
        lua_error(L);
    lua_call(L, 0, 1);
    const struct rupval *u = lua_upvalueid(L, -1, 1);
    int ok = u != NULL && u->v == &u->value && u->value.tt_ == LRAW_VNUMINT &&
             u->value.value_.i == 42;
    lua_settop(L, top);
    if (ok) {
        lua_pushinteger(L, 7);
        lua_pushcclosure(L, dummy, 1);
        const struct rtvalue *v = lua_upvalueid(L, -1, 1);
        ok = v != NULL && v->tt_ == LRAW_VNUMINT && v->value_.i == 7;
        lua_settop(L, top);
    }
    return ok;
}

int lraw_views(lua_State *L)
{
    if (atomic_load(&forced_off))
        return 0;
    int c = atomic_load(&checked);
    if (c != 0)
        return c == 1;
    int ok = LRAW_POSSIBLE && sizeof(void *) == 8 && sizeof(lua_Integer) == 8 &&
             sizeof(lua_Number) == 8;
    const char *env = getenv("DITTOFS_LUA_RAW");
    if (env != NULL && strcmp(env, "0") == 0)
        ok = 0;
    if (ok && !lua_checkstack(L, 12))
        return 0; /* not checked: asked again next time */
    ok = ok && check_table(L) && check_values(L) && check_upvalues(L);
    /* Two threads may both check: they store the same answer. */
    atomic_store(&checked, ok ? 1 : 2);
    return ok;
}

void lraw_sizes(lua_State *L, int idx, lua_Unsigned *narr, lua_Unsigned *n)
{
    idx = lua_absindex(L, idx);
    *narr = *n = 0;
    const struct rtable *h = lraw_views(L) ? lua_topointer(L, idx) : NULL;
    if (h != NULL) {
        size_t na;
        *n = lraw_entries(h, &na);
        *narr = na;
        return;
    }
    *narr = lua_rawlen(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        (*n)++;
    }
}
