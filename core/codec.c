/* codec: the Lua representation of JSON/YAML data and the helpers both
 * codecs share; see codec.h. */
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
#include "codec.h"
#include "lraw.h"
#include "text.h"

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

const void *codec_null_ptr(void)
{
    return &null_sentinel;
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

void codec_get_marks(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &object_mt_key);
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

int codec_kind_ptr(lua_State *L, int idx, const void *amt, const void *omt)
{
    int kind = CODEC_PLAIN;
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return CODEC_PLAIN;
    const void *mt = lua_topointer(L, -1); /* a table: never NULL */
    if (mt == amt)
        kind = CODEC_ARRAY;
    else if (mt == omt)
        kind = CODEC_OBJECT;
    lua_pop(L, 1);
    return kind;
}

int codec_kind_at(lua_State *L, int idx, int amt, int omt)
{
    int kind = CODEC_PLAIN;
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return CODEC_PLAIN;
    if (lua_rawequal(L, -1, amt))
        kind = CODEC_ARRAY;
    else if (lua_rawequal(L, -1, omt))
        kind = CODEC_OBJECT;
    lua_pop(L, 1);
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
    k->v[k->len].v = NULL;
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

/* Sorts n keys bytewise (keys are distinct: either order of equal ones
 * is the same). Objects are mostly small: an insertion sort without
 * qsort's indirect calls up to 16. */
static void sort_keys(struct codec_key *v, size_t n)
{
    if (n > 16) {
        qsort(v, n, sizeof(*v), key_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct codec_key k = v[i];
        size_t j = i;
        while (j > 0 && key_cmp(&v[j - 1], &k) > 0) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = k;
    }
}

int codec_table_entries(lua_State *L, int idx, const void *array_mt,
                        const void *object_mt, struct codec_keys *keys,
                        size_t *n, char *err, size_t errlen)
{
    if (!lua_checkstack(L, 4)) {
        copy_err(err, errlen, "not enough memory");
        return CODEC_ENOMEM;
    }
    int marked = codec_kind_ptr(L, idx, array_mt, object_mt);
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
    int top = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* [... k v] */
        count++;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -2, &len);
            all_int = 0;
            /* the key's slot: each entry before it left its key and value */
            if (keys_push(keys, s, len, top + 2 * (int)count - 1) != CODEC_OK) {
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
        /* Room for the next 16 entries (2 slots each) and the key copy. */
        if ((count & 15) == 1 && !lua_checkstack(L, 36)) {
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
    if (keys->len - base > 1) /* keys->v may be NULL */
        sort_keys(keys->v + base, keys->len - base);
    *n = count;
    return CODEC_OBJECT;
}

int codec_raw_entries(const struct rtable *h, const void *array_mt,
                      const void *object_mt, struct codec_keys *keys, size_t *n)
{
    int kind = CODEC_PLAIN;
    if (h->metatable == array_mt)
        kind = CODEC_ARRAY;
    else if (h->metatable == object_mt)
        kind = CODEC_OBJECT;
    /* The array part: entries 1..n, then nothing. */
    const struct rtvalue *a = h->array;
    unsigned asize = lraw_asize(h), na = 0;
    while (na < asize && !lraw_isnil(a[na].tt_))
        na++;
    for (unsigned i = na + 1; i < asize; i++)
        if (!lraw_isnil(a[i].tt_))
            return CODEC_RAW_GIVEUP;
    /* The hash part: string keys only. With no integer key there, #t is
     * na (the only border), whatever else a marked array holds. */
    size_t base = keys->len, nodes = (size_t)1 << h->lsizenode;
    for (size_t i = 0; i < nodes; i++) {
        const union rnode *nd = &h->node[i];
        if (lraw_isnil(nd->u.tt_))
            continue;
        struct rtvalue k = {nd->u.key_val, nd->u.key_tt};
        if (k.tt_ != (LRAW_VSHRSTR | LRAW_CTB) &&
            k.tt_ != (LRAW_VLNGSTR | LRAW_CTB))
            return CODEC_RAW_GIVEUP;
        if (kind == CODEC_ARRAY)
            continue;
        size_t len;
        const char *s = lraw_string(&k, &len);
        if (keys_push(keys, s, len, 0) != CODEC_OK)
            return CODEC_ENOMEM;
        keys->v[keys->len - 1].v = &nd->i_val;
    }
    size_t nk = keys->len - base;
    if (kind == CODEC_ARRAY || (kind == CODEC_PLAIN && na > 0)) {
        if (nk > 0) /* an unmarked table with both kinds of keys */
            return CODEC_RAW_GIVEUP;
        *n = na;
        return CODEC_ARRAY;
    }
    if (na > 0) /* an object with integer keys */
        return CODEC_RAW_GIVEUP;
    if (nk > 1) /* keys->v may be NULL */
        sort_keys(keys->v + base, nk);
    *n = nk;
    return CODEC_OBJECT;
}

void codec_raw_rewind(struct codec_out *o, struct dbuf *out, size_t start,
                      struct codec_keys *keys)
{
    lraw_count(1);
    dbuf_truncate(out, start);
    codec_out_init(o, out);
    keys->len = 0;
}

/* ---- staged output ------------------------------------------------------- */

/* What the dbuf takes before its maximum, capped to the stage. */
static size_t out_room(const struct dbuf *b)
{
    if (dbuf_error(b) != DBUF_OK || b->len >= b->max)
        return 0;
    size_t room = b->max - b->len;
    return room < CODEC_OUT_STAGE ? room : CODEC_OUT_STAGE;
}

void codec_out_init(struct codec_out *o, struct dbuf *out)
{
    o->out = out;
    o->len = 0;
    o->room = out_room(out);
}

int codec_out_flush(struct codec_out *o)
{
    int rc = DBUF_OK;
    if (o->len > 0)
        rc = dbuf_add(o->out, o->buf, o->len);
    o->len = 0;
    o->room = out_room(o->out);
    return rc;
}

int codec_out_put_slow(struct codec_out *o, const char *s, size_t n)
{
    int rc = codec_out_flush(o);
    if (rc != DBUF_OK)
        return rc;
    if (n <= o->room) {
        memcpy(o->buf, s, n);
        o->len = n;
        return DBUF_OK;
    }
    rc = dbuf_add(o->out, s, n);
    o->room = out_room(o->out);
    return rc;
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
    return codec_fmt_float(lua_tonumber(L, idx), buf);
}

size_t codec_fmt_integer(lua_Integer v, char *buf)
{
    return fmt_int(v, buf);
}

size_t codec_fmt_float(lua_Number d, char *buf)
{
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
