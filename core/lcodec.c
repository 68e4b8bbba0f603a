/*
 * lcodec: the Lua value representation shared by the JSON and YAML codecs,
 * their common helpers, and the Lua module `codec`. See lcodec.h.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "dbuf.h"
#include "json.h"
#include "lcodec.h"
#include "text.h"
#include "yaml.h"

/* Addresses used as registry keys and as the null sentinel. */
static const char null_sentinel = 0;
static const char array_mt_key = 0;
static const char object_mt_key = 0;
/* Error object of codec_fail(): the message is already in the context. */
static const char fail_sentinel = 0;

/* ---- representation ------------------------------------------------------ */

void codec_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&null_sentinel);
}

int codec_is_null(lua_State *L, int idx)
{
    return lua_touserdata(L, idx) == (void *)&null_sentinel &&
           lua_type(L, idx) == LUA_TLIGHTUSERDATA;
}

/* Pushes the marker metatable stored under `key`, creating it when absent.
 * May raise a memory error. */
static void push_mark(lua_State *L, const char *key, const char *name)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key); /* [mt] */
}

void codec_push_marks(lua_State *L)
{
    push_mark(L, &array_mt_key, "codec.array");
    push_mark(L, &object_mt_key, "codec.object"); /* [amt, omt] */
}

void codec_mark(lua_State *L, int idx, int kind)
{
    idx = lua_absindex(L, idx);
    if (kind == CODEC_ARRAY)
        push_mark(L, &array_mt_key, "codec.array");
    else
        push_mark(L, &object_mt_key, "codec.object");
    lua_setmetatable(L, idx);
}

int codec_kind(lua_State *L, int idx)
{
    int kind = CODEC_PLAIN;
    if (lua_type(L, idx) != LUA_TTABLE || !lua_checkstack(L, 3))
        return CODEC_PLAIN;
    idx = lua_absindex(L, idx);
    if (!lua_getmetatable(L, idx))
        return CODEC_PLAIN;
    /* A marker not created yet reads as nil, which no metatable equals. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &object_mt_key); /* [mt, amt, omt] */
    if (lua_rawequal(L, -3, -2))
        kind = CODEC_ARRAY;
    else if (lua_rawequal(L, -3, -1))
        kind = CODEC_OBJECT;
    lua_pop(L, 3);
    return kind;
}

const char *codec_strerror(int rc)
{
    switch (rc) {
    case CODEC_OK:
        return "ok";
    case CODEC_EINPUT:
        return "malformed input";
    case CODEC_ELIMIT:
        return "limit exceeded";
    case CODEC_EVALUE:
        return "value cannot be encoded";
    case CODEC_ENOMEM:
        return "not enough memory";
    case CODEC_ETOOBIG:
        return "output too large";
    default:
        return "unknown error";
    }
}

/* ---- shared helpers ------------------------------------------------------ */

void codec_limits_resolve(const struct codec_limits *lim,
                          struct codec_limits *out)
{
    out->max_depth = CODEC_MAX_DEPTH;
    out->max_size = CODEC_MAX_SIZE;
    out->max_alias_nodes = CODEC_MAX_ALIAS_NODES;
    if (lim == NULL)
        return;
    if (lim->max_depth > 0)
        out->max_depth = lim->max_depth;
    if (lim->max_size > 0)
        out->max_size = lim->max_size;
    if (lim->max_alias_nodes > 0)
        out->max_alias_nodes = lim->max_alias_nodes;
}

static void copy_err(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

int codec_pcall(lua_State *L, lua_CFunction f, void *ud, int extra,
                int nresults, int *code, char *err, size_t errlen)
{
    *code = CODEC_OK;
    if (!lua_checkstack(L, 3)) {
        copy_err(err, errlen, "not enough memory");
        return CODEC_ENOMEM;
    }
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, ud);
    if (extra > 0)
        lua_rotate(L, -(extra + 2), 2); /* [f, ud, args...] */
    int status = lua_pcall(L, extra + 1, nresults, 0);
    if (status == LUA_OK)
        return CODEC_OK;
    if (lua_touserdata(L, -1) == (void *)&fail_sentinel) {
        /* codec_fail() stored the code and the message. */
    } else if (status == LUA_ERRMEM) {
        *code = CODEC_ENOMEM;
        copy_err(err, errlen, "not enough memory");
    } else {
        const char *msg = lua_tostring(L, -1);
        *code = CODEC_EVALUE;
        copy_err(err, errlen, msg ? msg : "error in codec");
    }
    lua_pop(L, 1);
    return *code < 0 ? *code : CODEC_EVALUE;
}

void codec_fail(lua_State *L, int *code, char *err, size_t errlen, int rc,
                const char *fmt, ...)
{
    va_list ap;
    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    codec_raise(L, code, rc);
}

void codec_raise(lua_State *L, int *code, int rc)
{
    *code = rc;
    /* Raising a lightuserdata allocates nothing; the slot exists because
     * every caller keeps one spare (lua_error needs none for a pushed
     * value beyond LUA_MINSTACK). */
    lua_pushlightuserdata(L, (void *)&fail_sentinel);
    lua_error(L);
    abort(); /* not reached */
}

void codec_keys_free(struct codec_keys *k)
{
    free(k->v);
    k->v = NULL;
    k->len = 0;
    k->cap = 0;
}

static int keys_push(struct codec_keys *k, const char *s, size_t len, int idx)
{
    if (k->len == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        struct codec_key *v = realloc(k->v, cap * sizeof(*v));
        if (v == NULL)
            return CODEC_ENOMEM;
        k->v = v;
        k->cap = cap;
    }
    k->v[k->len].s = s;
    k->v[k->len].len = len;
    k->v[k->len].idx = idx;
    k->len++;
    return CODEC_OK;
}

static int key_cmp(const void *a, const void *b)
{
    const struct codec_key *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c != 0)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

int codec_table_entries(lua_State *L, int idx, int array_mt, int object_mt,
                        struct codec_keys *keys, size_t *n, char *err,
                        size_t errlen)
{
    int marked = CODEC_PLAIN;
    if (!lua_checkstack(L, 4)) {
        copy_err(err, errlen, "not enough memory");
        return CODEC_ENOMEM;
    }
    if (lua_getmetatable(L, idx)) {
        if (lua_rawequal(L, -1, array_mt))
            marked = CODEC_ARRAY;
        else if (lua_rawequal(L, -1, object_mt))
            marked = CODEC_OBJECT;
        lua_pop(L, 1);
    }
    if (marked == CODEC_ARRAY) {
        *n = lua_rawlen(L, idx);
        return CODEC_ARRAY;
    }

    /* Pushes every entry, keeping key and value on the stack so that the
     * key strings stay anchored while we hold pointers into them. */
    size_t base = keys->len, count = 0;
    lua_Integer max_int = 0;
    int all_int = 1;
    int bad_key = 0; /* a key that is neither a string nor an int */
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* [... k v] */
        count++;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -2, &len);
            all_int = 0;
            if (keys_push(keys, s, len, lua_gettop(L) - 1) != CODEC_OK) {
                copy_err(err, errlen, "not enough memory");
                return CODEC_ENOMEM;
            }
        } else if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
            lua_Integer i = lua_tointeger(L, -2);
            if (i < 1)
                all_int = 0;
            else if (i > max_int)
                max_int = i;
            if (bad_key == 0)
                bad_key = kt;
        } else {
            all_int = 0;
            bad_key = kt;
        }
        if (!lua_checkstack(L, 4)) {
            copy_err(err, errlen, "not enough memory");
            return CODEC_ENOMEM;
        }
        lua_pushvalue(L, -2); /* [... k v k] */
    }
    if (marked == CODEC_PLAIN && count > 0 && all_int &&
        (size_t)max_int == count) {
        lua_pop(L, (int)(2 * count));
        keys->len = base;
        *n = count;
        return CODEC_ARRAY;
    }
    if (bad_key != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "object keys must be strings, got a %s",
                     lua_typename(L, bad_key));
        return CODEC_EVALUE;
    }
    if (keys->len - base > 1)
        qsort(keys->v + base, keys->len - base, sizeof(*keys->v), key_cmp);
    *n = count;
    return CODEC_OBJECT;
}

/* Writes the decimal digits of v; returns the length. */
static size_t fmt_int(lua_Integer v, char *buf)
{
    char tmp[24];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        buf[len++] = '-';
    while (n > 0)
        buf[len++] = tmp[--n];
    buf[len] = '\0';
    return len;
}

size_t codec_fmt_number(lua_State *L, int idx, char *buf)
{
    if (lua_isinteger(L, idx))
        return fmt_int(lua_tointeger(L, idx), buf);
    double d = lua_tonumber(L, idx);
    if (isnan(d) || isinf(d))
        return 0;
    /* Integral floats within the exact range print as integers, so that a
     * computed 3.0 is a valid int32 for the apiserver. */
    if (d == floor(d) && fabs(d) < 9007199254740992.0)
        return fmt_int((lua_Integer)d, buf);
    int len = 0;
    for (int prec = 15; prec <= 17; prec++) {
        len = snprintf(buf, 32, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* "1e+20" is a string to YAML 1.1: make it "1.0e+20". */
    char *e = strchr(buf, 'e');
    if (e != NULL && memchr(buf, '.', (size_t)(e - buf)) == NULL) {
        memmove(e + 2, e, strlen(e) + 1);
        e[0] = '.';
        e[1] = '0';
        len += 2;
    }
    return (size_t)len;
}

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

static int set_mark(lua_State *L, int kind)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    codec_mark(L, 1, kind);
    return 1;
}

static int l_array(lua_State *L)
{
    return set_mark(L, CODEC_ARRAY);
}

static int l_object(lua_State *L)
{
    return set_mark(L, CODEC_OBJECT);
}

static int l_is_array(lua_State *L)
{
    lua_pushboolean(L, codec_kind(L, 1) == CODEC_ARRAY);
    return 1;
}

static int l_is_object(lua_State *L)
{
    lua_pushboolean(L, codec_kind(L, 1) == CODEC_OBJECT);
    return 1;
}

static int l_is_null(lua_State *L)
{
    lua_pushboolean(L, codec_is_null(L, 1));
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
    {NULL, NULL},
};

int codec_open(lua_State *L)
{
    luaL_newlib(L, codec_funcs);
    codec_push_null(L);
    lua_setfield(L, -2, "null");
    codec_push_marks(L); /* [codec, amt, omt] */
    lua_setfield(L, -3, "object_mt");
    lua_setfield(L, -2, "array_mt");
    return 1;
}
