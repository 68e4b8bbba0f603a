/*
 * lcodec: the Lua module `codec` (see lcodec.h): the JSON and YAML codecs
 * (ljson.c, lyaml.c), the value markers and a few core helpers as Lua
 * functions.
 */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "dbuf.h"
#include "ljson.h"
#include "codec.h"
#include "lcodec.h"
#include "lraw.h"
#include "text.h"
#include "lyaml.h"

/* Addresses used as registry keys and as the null sentinel. */
/* ---- the Lua module ------------------------------------------------------ */

/* Reads the optional options table at idx into lim. Raises on misuse. */
static void check_opts(lua_State *L, int idx, struct codec_limits *lim)
{
    memset(lim, 0, sizeof(*lim));
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    if (lua_getfield(L, idx, "max_depth") != LUA_TNIL) {
        lua_Integer v = luaL_checkinteger(L, -1);
        luaL_argcheck(L, v > 0 && v <= 1000, idx, "max_depth out of range");
        lim->max_depth = (int)v;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "max_size") != LUA_TNIL) {
        lua_Integer v = luaL_checkinteger(L, -1);
        luaL_argcheck(L, v > 0, idx, "max_size out of range");
        lim->max_size = (size_t)v;
    }
    lua_pop(L, 1);
}

/* Returns nil, err for an expected failure; raises for memory errors, so
 * that the sandbox's memory cap cannot be swallowed as a decode error. */
static int fail_result(lua_State *L, int rc, const char *err)
{
    if (rc == CODEC_ENOMEM)
        return luaL_error(L, "not enough memory");
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static int l_json_decode(lua_State *L)
{
    struct codec_limits lim;
    char err[256];
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    check_opts(L, 2, &lim);
    int rc = json_push(L, s, len, &lim, err, sizeof(err));
    if (rc != CODEC_OK)
        return fail_result(L, rc, err);
    return 1;
}

static int l_yaml_decode_all(lua_State *L)
{
    struct codec_limits lim;
    char err[256];
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    check_opts(L, 2, &lim);
    int rc = yaml_push_all(L, s, len, &lim, err, sizeof(err));
    if (rc != CODEC_OK)
        return fail_result(L, rc, err);
    return 1;
}

static int l_yaml_decode(lua_State *L)
{
    int n = l_yaml_decode_all(L);
    if (n != 1)
        return n;
    if (lua_rawgeti(L, -1, 1) == LUA_TNIL) {
        lua_pop(L, 1);
        codec_push_null(L); /* an empty stream is one null document */
    }
    return 1;
}

struct push_buf {
    const char *ptr;
    size_t len;
};

static int push_buf_protected(lua_State *L)
{
    struct push_buf *pb = lua_touserdata(L, 1);
    lua_pushlstring(L, pb->ptr, pb->len);
    return 1;
}

typedef int (*encode_fn)(lua_State *L, int idx, struct dbuf *out, char *err,
                         size_t errlen);

/* Shared body of the encoders: the dbuf is freed before anything raises. */
static int encode_common(lua_State *L, encode_fn fn)
{
    struct codec_limits lim;
    struct dbuf out;
    char err[256];
    int code;
    luaL_checkany(L, 1);
    check_opts(L, 2, &lim);
    lua_settop(L, 1);
    dbuf_init(&out, lim.max_size ? lim.max_size : CODEC_MAX_SIZE);
    int rc = fn(L, 1, &out, err, sizeof(err));
    if (rc == CODEC_OK) {
        struct push_buf pb = {dbuf_ptr(&out), dbuf_len(&out)};
        rc = codec_pcall(L, push_buf_protected, &pb, 0, 1, &code, err,
                         sizeof(err));
    }
    dbuf_free(&out);
    if (rc != CODEC_OK)
        return fail_result(L, rc, err);
    return 1;
}

static int l_json_encode(lua_State *L)
{
    return encode_common(L, json_encode);
}

static int l_yaml_encode(lua_State *L)
{
    return encode_common(L, yaml_encode);
}

static int l_yaml_encode_all(lua_State *L)
{
    return encode_common(L, yaml_encode_all);
}

/* The marker metatables, upvalues of every function of the module (a
 * registry lookup costs more than the rest of codec.array). */
#define AMT lua_upvalueindex(1)
#define OMT lua_upvalueindex(2)

int codec_set_mark(lua_State *L, int mt)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    lua_pushvalue(L, mt);
    lua_setmetatable(L, 1);
    return 1;
}

static int l_array(lua_State *L)
{
    return codec_set_mark(L, AMT);
}

static int l_object(lua_State *L)
{
    return codec_set_mark(L, OMT);
}

static int l_is_array(lua_State *L)
{
    lua_pushboolean(L, codec_kind_at(L, 1, AMT, OMT) == CODEC_ARRAY);
    return 1;
}

static int l_is_object(lua_State *L)
{
    lua_pushboolean(L, codec_kind_at(L, 1, AMT, OMT) == CODEC_OBJECT);
    return 1;
}

static int l_is_null(lua_State *L)
{
    lua_pushboolean(L, codec_is_null(L, 1));
    return 1;
}

/* Whether the values at a and b (absolute) are the same, for l_same;
 * mt: the markers' addresses (codec_kind_ptr). */
static int same_value(lua_State *L, int a, int b, int depth,
                      const void *const mt[2])
{
    int t = lua_type(L, a);
    if (t != lua_type(L, b))
        return 0;
    if (t == LUA_TNUMBER && lua_isinteger(L, a) != lua_isinteger(L, b))
        return 0;
    if (t != LUA_TTABLE)
        return lua_rawequal(L, a, b);
    if (lua_rawequal(L, a, b))
        return 1;
    if (depth > CODEC_MAX_DEPTH || codec_kind_ptr(L, a, mt[0], mt[1]) !=
                                       codec_kind_ptr(L, b, mt[0], mt[1]))
        return 0;
    luaL_checkstack(L, 4, "nesting too deep");
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, a) != 0) { /* [k, va] */
        n++;
        lua_pushvalue(L, -2);
        lua_rawget(L, b); /* [k, va, vb] */
        int top = lua_gettop(L);
        int same = same_value(L, top - 1, top, depth + 1, mt);
        lua_pop(L, 2);
        if (!same) {
            lua_pop(L, 1);
            return 0;
        }
    }
    lua_pushnil(L);
    while (lua_next(L, b) != 0) {
        lua_pop(L, 1);
        n--;
    }
    return n == 0;
}

/*
 * same_value through lraw.h's views: 1 same, 0 not, -1 when it cannot
 * tell as same_value would (a key other than a short string or an integer
 * in the array part, a value of a type it does not read): l_same then
 * asks same_value. Reads only; nothing runs Lua meanwhile.
 */
static int raw_same_table(const struct rtable *a, const struct rtable *b,
                          int depth, const void *const mt[2]);

static int raw_same(const struct rtvalue *a, const struct rtvalue *b, int depth,
                    const void *const mt[2])
{
    if (a->tt_ != b->tt_) /* other types, subtypes or string lengths */
        return lraw_isnil(a->tt_) && lraw_isnil(b->tt_);
    switch (a->tt_) {
    case LRAW_VFALSE:
    case LRAW_VTRUE:
        return 1;
    case LRAW_VNUMINT:
        return a->value_.i == b->value_.i;
    case LRAW_VNUMFLT:
        return a->value_.n == b->value_.n;
    case LRAW_VSHRSTR | LRAW_CTB: /* interned */
    case LRAW_VLIGHTUSERDATA:
        return a->value_.p == b->value_.p;
    case LRAW_VLNGSTR | LRAW_CTB: {
        size_t na, nb;
        const char *sa = lraw_string(a, &na), *sb = lraw_string(b, &nb);
        return na == nb && memcmp(sa, sb, na) == 0;
    }
    case LRAW_VTABLE | LRAW_CTB:
        return raw_same_table(a->value_.gc, b->value_.gc, depth + 1, mt);
    default:
        return lraw_isnil(a->tt_) ? 1 : -1;
    }
}

static int raw_kind(const struct rtable *h, const void *const mt[2])
{
    return h->metatable == mt[0]   ? CODEC_ARRAY
           : h->metatable == mt[1] ? CODEC_OBJECT
                                   : CODEC_PLAIN;
}

static int raw_same_table(const struct rtable *a, const struct rtable *b,
                          int depth, const void *const mt[2])
{
    static const struct rtvalue absent = {{0}, 0};
    if (a == b)
        return 1;
    if (depth > CODEC_MAX_DEPTH || raw_kind(a, mt) != raw_kind(b, mt))
        return 0;
    unsigned na = lraw_asize(a), nb = lraw_asize(b);
    size_t n = 0, nodes = (size_t)1 << a->lsizenode;
    for (unsigned i = 0; i < na; i++) {
        if (lraw_isnil(a->array[i].tt_))
            continue;
        if (i >= nb) /* b may hold i + 1 in its hash part */
            return -1;
        n++;
        int r = raw_same(&a->array[i], &b->array[i], depth, mt);
        if (r != 1)
            return r;
    }
    for (size_t i = 0; i < nodes; i++) {
        const union rnode *nd = &a->node[i];
        if (lraw_isnil(nd->u.tt_))
            continue;
        const struct rtvalue *vb;
        if (nd->u.key_tt == (LRAW_VSHRSTR | LRAW_CTB))
            vb = lraw_getshortstr(b, nd->u.key_val.gc);
        else if (nd->u.key_tt == LRAW_VNUMINT && nd->u.key_val.i >= 1 &&
                 (lua_Unsigned)nd->u.key_val.i <= nb)
            vb = &b->array[nd->u.key_val.i - 1];
        else
            return -1;
        n++;
        int r = raw_same(&nd->i_val, vb ? vb : &absent, depth, mt);
        if (r != 1)
            return r;
    }
    size_t nb_arr;
    return lraw_entries(b, &nb_arr) == n;
}

/* codec.same(a, b): whether a and b are the same value, as the policies'
 * memos compare specs: tables with the same codec marker (codec.array,
 * codec.object or none) and the same keys holding the same values,
 * recursively (raw: metatables other than the markers are not looked
 * at); numbers of the same subtype (1 is not 1.0) and value; anything else
 * by rawequal. Tables nested deeper than the codec's limit (a cycle) are
 * not the same. Linear in the size of a; allocates nothing but stack
 * (raises only when that fails). */
static int l_same(lua_State *L)
{
    luaL_checkany(L, 2);
    const void *const mt[2] = {lua_topointer(L, AMT), lua_topointer(L, OMT)};
    if (lua_type(L, 1) == LUA_TTABLE && lua_type(L, 2) == LUA_TTABLE &&
        lraw_views(L)) {
        int r = raw_same_table(lua_topointer(L, 1), lua_topointer(L, 2), 1, mt);
        if (r >= 0) {
            lua_pushboolean(L, r);
            return 1;
        }
    }
    lua_pushboolean(L, same_value(L, 1, 2, 1, mt));
    return 1;
}

/* Deepest nesting codec.deepcopy copies in C (each level is a C call);
 * deeper values are left to the caller's Lua copy. */
#define COPY_MAX_DEPTH 100

/*
 * Pushes a copy of the value at idx (absolute) for l_deepcopy, the tables
 * met before (shared or cyclic) found in the table at `seen` (absolute).
 * Returns 0, with the stack as it may be, when it meets what it leaves to
 * Lua: a table with a metatable other than the markers (Lua's setmetatable
 * must judge it: the sandbox's refuses __gc) or nesting past
 * COPY_MAX_DEPTH. Tables are made at their size (a table grown key by key
 * is rehashed at every power of two).
 */
static int copy_value(lua_State *L, int idx, int seen, int depth)
{
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return 1;
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, seen) != LUA_TNIL)
        return 1; /* [copy] */
    lua_pop(L, 1);
    if (depth > COPY_MAX_DEPTH || !lua_checkstack(L, 6))
        return 0;
    int marked = lua_getmetatable(L, idx);
    if (marked && !lua_rawequal(L, -1, AMT) && !lua_rawequal(L, -1, OMT))
        return 0;
    lua_Unsigned narr, n; /* without a pass over the entries (lraw.h) */
    lraw_sizes(L, idx, &narr, &n);
    lua_createtable(L, narr < INT_MAX ? (int)narr : 0,
                    n > narr && n - narr < INT_MAX ? (int)(n - narr) : 0);
    if (marked) {
        lua_insert(L, -2); /* [copy, mt] */
        lua_setmetatable(L, -2);
    }
    int out = lua_gettop(L);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, out);
    lua_rawset(L, seen); /* before the contents: cycles */
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* [out, k, v] */
        int k = out + 1;
        if (!copy_value(L, k, seen, depth + 1) ||
            !copy_value(L, k + 1, seen, depth + 1))
            return 0;
        lua_rawset(L, out); /* [out, k, v] */
        lua_pop(L, 1);
    }
    return 1;
}

/* codec.deepcopy(v): a deep copy of v as k8s.tablex.deepcopy makes it
 * (tables copied, shared ones and cycles once, keys too; the markers kept;
 * anything else as it is), or nil when v holds a table with another
 * metatable or nests deeper than COPY_MAX_DEPTH, which the Lua copy
 * handles. Linear in the size of v. Raises only memory errors. */
static int l_deepcopy(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_createtable(L, 0, 8); /* [v, seen] */
    if (!copy_value(L, 1, 2, 1)) {
        lua_settop(L, 2);
        lua_pushnil(L);
    }
    return 1;
}

/* codec.fnv1a64(s): the 64-bit FNV-1a hash of the bytes of s as 16
 * lowercase hex digits (policies use it for config-hash annotations; Lua
 * code would need ~2 VM instructions a byte). Linear in #s. Raises on a
 * non-string argument. */
static int l_fnv1a64(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    uint64_t h = text_fnv1a64(TEXT_FNV1A64_INIT, s, n);
    char hex[17];
    snprintf(hex, sizeof(hex), "%016" PRIx64, h);
    lua_pushlstring(L, hex, 16);
    return 1;
}

/* codec.utf8_cut(s, max): s cut to at most max bytes on a UTF-8
 * character boundary (s itself when it is short enough): the core's cut
 * (text_utf8_cut), so policies cut messages where the core does. Raises
 * on a bad argument. */
static int l_utf8_cut(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer max = luaL_checkinteger(L, 2);
    luaL_argcheck(L, max >= 0, 2, "must not be negative");
    lua_pushlstring(L, s, text_utf8_cut(s, n, (size_t)max));
    return 1;
}

static const luaL_Reg codec_funcs[] = {
    {"utf8_cut", l_utf8_cut},
    {"fnv1a64", l_fnv1a64},
    {"json_decode", l_json_decode},
    {"json_encode", l_json_encode},
    {"yaml_decode", l_yaml_decode},
    {"yaml_decode_all", l_yaml_decode_all},
    {"yaml_encode", l_yaml_encode},
    {"yaml_encode_all", l_yaml_encode_all},
    {"array", l_array},
    {"object", l_object},
    {"is_array", l_is_array},
    {"is_object", l_is_object},
    {"is_null", l_is_null},
    {"same", l_same},
    {"deepcopy", l_deepcopy},
    {NULL, NULL},
};

int codec_open(lua_State *L)
{
    luaL_checkversion(L);
    luaL_newlibtable(L, codec_funcs);
    codec_push_marks(L); /* [codec, amt, omt] */
    luaL_setfuncs(L, codec_funcs, 2);
    codec_push_null(L);
    lua_setfield(L, -2, "null");
    codec_push_marks(L); /* [codec, amt, omt] */
    lua_setfield(L, -3, "object_mt");
    lua_setfield(L, -2, "array_mt");
    return 1;
}
