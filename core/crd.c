/*
 * crd: apiserver-style pruning, defaulting and structural schema validation
 * of a custom resource held as Lua values. See crd.h for the contract.
 *
 * Every walk runs inside lua_pcall (the only errors are memory errors and
 * stack exhaustion), and allocates nothing with malloc that an error could
 * jump over (STYLE rule 16): scratch arrays are Lua userdata, and the
 * scratch text of a list-type key lives in the walk, which the entry point
 * outside the pcall owns and frees.
 */
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "crd.h"
#include "embedded.h"
#include "codec.h"
#include "lyaml.h"

#define PATH_MAX_LEN 1024

struct walk {
    struct dbuf *msgs;
    int count;
    int keep; /* for the policies (codec.crd_default, crd_validate): prune
                 nothing, and a null counts as absent */
    struct dbuf *warns; /* codec.crd_validate: unknown fields, or NULL */
    char path[PATH_MAX_LEN];
    size_t plen;
    struct dbuf key;       /* scratch: one list item's key (check_list_type) */
    int marks;             /* the codec's markers known (codec_get_marks) */
    const void *amt, *omt; /* their addresses (codec_kind_ptr) */
    int own;       /* the schema is the state's own decoded CRD (read only: its
                      defaulted properties and its nodes' keys may be cached,
                      push_defaulted, node_keys) */
    unsigned keys; /* validate_node: the keys of its node (node_keys) */
};

/* --- paths and messages ----------------------------------------------------
 */

/* Appends ".name" (or "name" at the root) to the path; returns the old
 * length for path_pop. A path that would overflow is cut. */
static size_t path_field(struct walk *w, const char *name)
{
    /* As snprintf(.., "%s%s", sep, name) would cut it (without its cost:
     * this runs for every field validated). */
    size_t old = w->plen, room = PATH_MAX_LEN - 1 - w->plen;
    char *p = w->path + w->plen;
    if (old > 0 && room > 0) {
        *p++ = '.';
        room--;
    }
    size_t n = strlen(name);
    n = n < room ? n : room;
    memcpy(p, name, n);
    p[n] = '\0';
    w->plen = (size_t)(p + n - w->path);
    return old;
}

static size_t path_index(struct walk *w, size_t i)
{
    size_t old = w->plen;
    int n = snprintf(w->path + w->plen, PATH_MAX_LEN - w->plen, "[%zu]", i);
    if (n > 0)
        w->plen += (size_t)n < PATH_MAX_LEN - w->plen
                       ? (size_t)n
                       : PATH_MAX_LEN - 1 - w->plen;
    return old;
}

static void path_pop(struct walk *w, size_t old)
{
    w->plen = old;
    w->path[old] = '\0';
}

/* Appends s as a Go %q string. */
static void add_quoted(struct dbuf *b, const char *s, size_t len)
{
    dbuf_addc(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            dbuf_addf(b, "\\%c", c);
        else if (c == '\n')
            dbuf_adds(b, "\\n");
        else if (c == '\t')
            dbuf_adds(b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            dbuf_addf(b, "\\x%02x", c);
        else
            dbuf_addc(b, (char)c);
    }
    dbuf_addc(b, '"');
}

/* Appends the scalar at idx as the apiserver prints it (%v of the decoded
 * value, strings quoted). */
static void add_value(lua_State *L, struct dbuf *b, int idx)
{
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        add_quoted(b, s, len);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            dbuf_addf(b, "%lld", (long long)lua_tointeger(L, idx));
        else
            dbuf_addf(b, "%g", (double)lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN:
        dbuf_adds(b, lua_toboolean(L, idx) ? "true" : "false");
        break;
    default:
        dbuf_adds(b, codec_is_null(L, idx) ? "null" : luaL_typename(L, idx));
        break;
    }
}

/* Starts a message line "path: " (or "<root>: " for the root itself). */
static struct dbuf *msg_begin(struct walk *w)
{
    w->count++;
    dbuf_addf(w->msgs, "%s: ", w->plen ? w->path : "<root>");
    return w->msgs;
}

static void msg_end(struct walk *w)
{
    dbuf_addc(w->msgs, '\n');
}

/* --- schema and value helpers ----------------------------------------------
 */

/* codec_kind, with the walk's markers when it has them. */
static int walk_kind(lua_State *L, const struct walk *w, int idx)
{
    return w->marks ? codec_kind_ptr(L, idx, w->amt, w->omt)
                    : codec_kind(L, idx);
}

/* JSON type of the value at idx (absolute), or NULL when absent. */
static const char *value_type(lua_State *L, const struct walk *w, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return NULL;
    case LUA_TBOOLEAN:
        return "boolean";
    case LUA_TNUMBER:
        return lua_isinteger(L, idx) ? "integer" : "number";
    case LUA_TSTRING:
        return "string";
    case LUA_TLIGHTUSERDATA:
        return codec_is_null(L, idx) ? "null" : "userdata";
    case LUA_TTABLE:
        switch (walk_kind(L, w, idx)) {
        case CODEC_ARRAY:
            return "array";
        case CODEC_OBJECT:
            return "object";
        default:
            return lua_rawlen(L, idx) > 0 ? "array" : "object";
        }
    default:
        return luaL_typename(L, idx);
    }
}

/* Pushes s[k] (raw) and returns its Lua type. */
static int sget(lua_State *L, int s, const char *k)
{
    if (lua_type(L, s) != LUA_TTABLE) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    lua_pushstring(L, k);
    return lua_rawget(L, s);
}

/* s[k] == true */
static int sflag(lua_State *L, int s, const char *k)
{
    sget(L, s, k);
    int on = lua_toboolean(L, -1) && lua_type(L, -1) == LUA_TBOOLEAN;
    lua_pop(L, 1);
    return on;
}

/* s[k] as a string (valid while s holds it), or NULL. */
static const char *sstring(lua_State *L, int s, const char *k)
{
    const char *v = sget(L, s, k) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return v;
}

/*
 * The keys of a schema node that the validation reads, as bits of
 * struct walk's `keys`: a key whose bit is clear is absent from the node,
 * and its lookup (wget) is skipped. ALL_KEYS: not known, look every key up.
 */
static const char *const node_key_names[] = {
    "nullable",
    "type",
    "x-kubernetes-int-or-string",
    "enum",
    "maxLength",
    "minLength",
    "pattern",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "minItems",
    "maxItems",
    "items",
    "required",
    "properties",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
};
enum {
    K_NULLABLE = 1u << 0,
    K_TYPE = 1u << 1,
    K_INT_OR_STRING = 1u << 2,
    K_ENUM = 1u << 3,
    K_MAX_LENGTH = 1u << 4,
    K_MIN_LENGTH = 1u << 5,
    K_PATTERN = 1u << 6,
    K_MAXIMUM = 1u << 7,
    K_EXCL_MAXIMUM = 1u << 8,
    K_MINIMUM = 1u << 9,
    K_EXCL_MINIMUM = 1u << 10,
    K_MIN_ITEMS = 1u << 11,
    K_MAX_ITEMS = 1u << 12,
    K_ITEMS = 1u << 13,
    K_REQUIRED = 1u << 14,
    K_PROPERTIES = 1u << 15,
    K_ADDITIONAL = 1u << 16,
    K_PRESERVE = 1u << 17,
    K_LIST_TYPE = 1u << 18,
    K_LIST_MAP_KEYS = 1u << 19,
};
#define ALL_KEYS (~0u)
_Static_assert(sizeof(node_key_names) / sizeof(node_key_names[0]) == 20,
               "a bit per key name");

/* sget(L, s, k) where `bit` is k's bit: nil at once when w->keys says the
 * node has no such key. */
static int wget(lua_State *L, const struct walk *w, int s, unsigned bit,
                const char *k)
{
    if ((w->keys & bit) == 0) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return sget(L, s, k);
}

/* sflag through wget */
static int wflag(lua_State *L, const struct walk *w, int s, unsigned bit,
                 const char *k)
{
    if ((w->keys & bit) == 0)
        return 0;
    return sflag(L, s, k);
}

/* sstring through wget */
static const char *wstring(lua_State *L, const struct walk *w, int s,
                           unsigned bit, const char *k)
{
    if ((w->keys & bit) == 0)
        return NULL;
    return sstring(L, s, k);
}

/* Pushes the registry's table at address key (made now when there is
 * none yet: a cache out of the policies' reach) and returns its index.
 * May raise a memory error. */
static int push_registry_cache(lua_State *L, const void *key)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, key);
    }
    return lua_gettop(L);
}

/* Registry key (its address) of node_keys' cache: schema node of the
 * state's own schema -> its keys (an integer). */
static const char node_keys_key = 'N';

/*
 * The keys (bits above) of the schema node at s (absolute): ALL_KEYS
 * unless the walk's schema is the state's own (w->own), which never
 * changes (resolve_node), so each node's keys are found once and kept in
 * the registry, out of the policies' reach. May raise a memory error.
 */
static unsigned node_keys(lua_State *L, const struct walk *w, int s)
{
    if (!w->own || lua_type(L, s) != LUA_TTABLE)
        return ALL_KEYS;
    luaL_checkstack(L, 6, "crd: nesting too deep");
    int cache = push_registry_cache(L, &node_keys_key);
    lua_pushvalue(L, s);
    if (lua_rawget(L, cache) == LUA_TNUMBER) {
        unsigned keys = (unsigned)lua_tointeger(L, -1);
        lua_pop(L, 2);
        return keys;
    }
    lua_pop(L, 1);
    unsigned keys = 0;
    size_t nn = sizeof(node_key_names) / sizeof(node_key_names[0]);
    lua_pushnil(L);
    while (lua_next(L, s) != 0) { /* [cache, k, v] */
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            continue;
        size_t len;
        const char *k = lua_tolstring(L, -1, &len);
        for (size_t i = 0; i < nn; i++)
            if (strlen(node_key_names[i]) == len &&
                memcmp(node_key_names[i], k, len) == 0)
                keys |= 1u << i;
    }
    lua_pushvalue(L, s);
    lua_pushinteger(L, (lua_Integer)keys);
    lua_rawset(L, cache);
    lua_pop(L, 1);
    return keys;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pushes [keys, scratch] for the table at t and returns the sorted string
 * keys through *out (valid while both stay on the stack). */
static size_t sorted_keys(lua_State *L, int t, const char ***out)
{
    luaL_checkstack(L, 6, "crd: nesting too deep");
    lua_newtable(L);
    int kt = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, kt, (lua_Integer)++n);
        }
    }
    const char **v = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*v), 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, kt, (lua_Integer)i + 1);
        v[i] = lua_tostring(L, -1); /* kept alive by kt */
        lua_pop(L, 1);
    }
    qsort(v, n, sizeof(*v), cmp_str);
    *out = v;
    return n;
}

/* A string key of a table, anchored at stack index idx; `nul`: it holds a
 * NUL, so that a lookup by its C string finds another key. */
struct skey {
    const char *s;
    int idx;
    int nul;
};

#define STACK_KEYS 32

static int cmp_skey(const void *a, const void *b)
{
    return strcmp(((const struct skey *)a)->s, ((const struct skey *)b)->s);
}

/* sorted_keys for the usual small object: pushes the string keys of the
 * table at t (absolute) themselves, which anchors them whatever happens
 * to t, and fills out[] sorted as sorted_keys sorts them (the same qsort
 * of the same order). Returns their count, or STACK_KEYS + 1 with nothing
 * pushed when there are more. */
static size_t stack_keys(lua_State *L, int t, struct skey *out)
{
    luaL_checkstack(L, STACK_KEYS + 4, "crd: nesting too deep");
    int top = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) { /* [.., k, v] */
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) /* the next one replaces it */
            continue;
        if (n == STACK_KEYS) {
            lua_settop(L, top);
            return STACK_KEYS + 1;
        }
        size_t len;
        out[n].s = lua_tolstring(L, -1, &len);
        out[n].nul = strlen(out[n].s) != len;
        out[n].idx = lua_gettop(L);
        n++;
        lua_pushvalue(L, -1); /* the key stays below */
    }
    qsort(out, n, sizeof(*out), cmp_skey);
    return n;
}

/* Pushes t[k] (lua_getfield of its C string) and returns its type. */
static int key_get(lua_State *L, int t, const struct skey *k)
{
    if (k->nul)
        return lua_getfield(L, t, k->s);
    lua_pushvalue(L, k->idx);
    return lua_gettable(L, t);
}

/* sget(L, s, k->s) */
static int key_sget(lua_State *L, int s, const struct skey *k)
{
    if (k->nul || lua_type(L, s) != LUA_TTABLE)
        return sget(L, s, k->s);
    lua_pushvalue(L, k->idx);
    return lua_rawget(L, s);
}

/* Pushes a deep copy of the value at idx (tables keep their metatable). */
static void push_copy(lua_State *L, int idx)
{
    luaL_checkstack(L, 6, "crd: nesting too deep");
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return;
    }
    /* Sized up front: a table that grows is rehashed at every power of
     * two, which made copying the schema cost five times its size. */
    lua_Unsigned narr = lua_rawlen(L, idx);
    lua_Unsigned n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        n++;
    }
    lua_createtable(L, (int)narr, n > narr ? (int)(n - narr) : 0);
    int c = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pushvalue(L, -2); /* [.., k, v, k] */
        push_copy(L, -2);     /* [.., k, v, k, v'] */
        lua_rawset(L, c);
        lua_pop(L, 1);
    }
    if (lua_getmetatable(L, idx))
        lua_setmetatable(L, c);
}

/* --- defaulting ------------------------------------------------------------
 */

static void default_node(lua_State *L, struct walk *w, int s, int v, int root);

/* Registry key (its address) of the cache of push_defaulted: properties
 * table of the state's own schema -> its defaulted properties. */
static const char defaults_key = 'D';

/*
 * Pushes the list {k1, ps1, default1, k2, ...} of the properties of the
 * properties table at props (absolute) that have a default, in props' own
 * iteration order (the order default_keep's walk of props met them in).
 * For the state's own schema only: it is never changed (resolve_node), so
 * the list is made once per table and kept in the registry, out of the
 * policies' reach. May raise a memory error.
 */
static void push_defaulted(lua_State *L, int props)
{
    luaL_checkstack(L, 8, "crd: nesting too deep");
    int cache = push_registry_cache(L, &defaults_key);
    lua_pushvalue(L, props);
    if (lua_rawget(L, cache) == LUA_TTABLE) {
        lua_remove(L, cache); /* [list] */
        return;
    }
    lua_pop(L, 1);
    lua_newtable(L);
    int list = lua_gettop(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, props) != 0) { /* [cache, list, k, ps] */
        int ps = lua_gettop(L);
        if (lua_type(L, ps - 1) == LUA_TSTRING &&
            lua_type(L, ps) == LUA_TTABLE &&
            sget(L, ps, "default") != LUA_TNIL) { /* [.., k, ps, default] */
            lua_pushvalue(L, ps - 1);
            lua_rawseti(L, list, ++n);
            lua_pushvalue(L, ps);
            lua_rawseti(L, list, ++n);
            lua_rawseti(L, list, ++n); /* [.., k, ps] */
        } else if (lua_gettop(L) > ps) {
            lua_pop(L, 1); /* sget's nil */
        }
        lua_pop(L, 1); /* [cache, list, k] */
    }
    lua_pushvalue(L, props);
    lua_pushvalue(L, list);
    lua_rawset(L, cache);
    lua_remove(L, cache); /* [list] */
}

/*
 * The object part of default_node for the policies (w->keep): nothing is
 * pruned, so nothing is reported and no order matters: the keys are
 * walked as they come (no sorting, no path), which keeps a policy's
 * defaulting cheap. A null counts as absent.
 */
static void default_keep(lua_State *L, struct walk *w, int s, int v)
{
    luaL_checkstack(L, 8, "crd: nesting too deep");
    if (sget(L, s, "properties") != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    int props = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, v) != 0) { /* [props, k, val] */
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
            lua_pushvalue(L, -2);
            if (lua_rawget(L, props) == LUA_TTABLE) /* [.., val, ps] */
                default_node(L, w, lua_gettop(L), lua_gettop(L) - 1, 0);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (w->own) {
        /* The same defaults as the walk of props below, from the list. */
        push_defaulted(L, props);
        int list = lua_gettop(L);
        lua_Integer n = (lua_Integer)lua_rawlen(L, list);
        for (lua_Integer i = 1; i + 2 <= n; i += 3) {
            lua_rawgeti(L, list, i); /* [props, list, k] */
            lua_pushvalue(L, -1);
            int t = lua_rawget(L, v);
            int absent = t == LUA_TNIL || codec_is_null(L, -1);
            lua_pop(L, 1);
            if (absent) {
                lua_rawgeti(L, list, i + 1);
                lua_rawgeti(L, list, i + 2);
                push_copy(L, -1); /* [.., k, ps, default, copy] */
                lua_pushvalue(L, -4);
                lua_pushvalue(L, -2);
                lua_rawset(L, v); /* v[k] = copy */
                default_node(L, w, lua_gettop(L) - 2, lua_gettop(L), 0);
                lua_pop(L, 3); /* copy, default, ps */
            }
            lua_pop(L, 1); /* k */
        }
        lua_pop(L, 2); /* list, props */
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, props) != 0) { /* [props, k, ps] */
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
            int ps = lua_gettop(L);
            lua_pushvalue(L, -2);
            int t = lua_rawget(L, v);
            int absent = t == LUA_TNIL || codec_is_null(L, -1);
            lua_pop(L, 1);
            if (absent && sget(L, ps, "default") != LUA_TNIL) {
                push_copy(L, -1); /* [.., k, ps, default, copy] */
                lua_pushvalue(L, -4);
                lua_pushvalue(L, -2);
                lua_rawset(L, v); /* v[k] = copy (v is not being walked) */
                default_node(L, w, ps, lua_gettop(L), 0);
                lua_pop(L, 2); /* copy, default */
            } else if (absent) {
                lua_pop(L, 1); /* sget's nil */
            }
        }
        lua_pop(L, 1); /* [props, k] */
    }
    lua_pop(L, 1); /* props */
}

static void default_node(lua_State *L, struct walk *w, int s, int v, int root)
{
    luaL_checkstack(L, 12, "crd: nesting too deep");
    const char *vt = value_type(L, w, v);
    if (vt && strcmp(vt, "array") == 0) {
        if (sget(L, s, "items") == LUA_TTABLE) {
            int items = lua_gettop(L);
            size_t n = lua_rawlen(L, v);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, v, (lua_Integer)i);
                /* the path only names pruned fields (none when keeping) */
                size_t old = w->keep ? w->plen : path_index(w, i - 1);
                default_node(L, w, items, lua_gettop(L), 0);
                path_pop(w, old);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        return;
    }
    if (vt == NULL || strcmp(vt, "object") != 0)
        return;
    if (w->keep) {
        default_keep(L, w, s, v);
        return;
    }

    int preserve = sflag(L, s, "x-kubernetes-preserve-unknown-fields");
    sget(L, s, "properties");
    int props = lua_gettop(L);
    sget(L, s, "additionalProperties");
    int addl = lua_gettop(L);
    const char **keys;
    size_t n = sorted_keys(L, v, &keys);
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i];
        if (root && strcmp(k, "metadata") == 0)
            continue;
        size_t old = path_field(w, k);
        lua_getfield(L, v, k); /* value (raw: codec tables have no __index) */
        int val = lua_gettop(L);
        int ps = sget(L, props, k) == LUA_TTABLE ? lua_gettop(L) : 0;
        int sub = ps ? ps : (lua_type(L, addl) == LUA_TTABLE ? addl : 0);
        if (!w->keep && codec_is_null(L, val) && sub &&
            !sflag(L, sub, "nullable")) {
            lua_pushnil(L);
            lua_setfield(L, v, k);
        } else if (sub) {
            default_node(L, w, sub, val, 0);
        } else if (!w->keep && !preserve && !lua_toboolean(L, addl)) {
            dbuf_addf(w->msgs, "unknown field \"%s\"\n", w->path);
            w->count++;
            lua_pushnil(L);
            lua_setfield(L, v, k);
        }
        lua_settop(L, val - 1);
        path_pop(w, old);
    }
    lua_pop(L, 2); /* keys, scratch */

    if (lua_type(L, props) == LUA_TTABLE) {
        n = sorted_keys(L, props, &keys);
        for (size_t i = 0; i < n; i++) {
            const char *k = keys[i];
            lua_getfield(L, props, k);
            int ps = lua_gettop(L);
            lua_getfield(L, v, k);
            int absent = lua_isnil(L, -1) || (w->keep && codec_is_null(L, -1));
            if (absent && lua_type(L, ps) == LUA_TTABLE &&
                sget(L, ps, "default") != LUA_TNIL) {
                push_copy(L, -1); /* [ps, nil, default, copy] */
                lua_pushvalue(L, -1);
                lua_setfield(L, v, k);
                size_t old = path_field(w, k);
                default_node(L, w, ps, lua_gettop(L), 0);
                path_pop(w, old);
            }
            lua_settop(L, ps - 1);
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 2); /* props, addl */
}

/* --- validation ------------------------------------------------------------
 */

/*
 * Compiled patterns. regcomp builds an automaton and regexec its
 * transition tables on first use, which cost far more than the match
 * itself (most of a policy's validate() when compiled per call), so each
 * state keeps the patterns it met compiled, in a registry table (out of
 * the policies' reach): pattern text -> struct regex userdata, whose __gc
 * frees it. A compiled pattern is a pure function of its text, so the
 * cache is as good across evaluations as within one. It is bounded (a
 * policy's PARAMETERS may hold patterns of its own): past REGEX_CACHE_MAX
 * entries, or for a pattern longer than REGEX_CACHE_MAX_LEN, a pattern is
 * compiled for the one match and freed, as without the cache. The
 * automata live in libc's heap, outside the sandbox's memory cap, as the
 * one-shot ones always did; the bound keeps that small.
 */
#define REGEX_CACHE_MAX 64
#define REGEX_CACHE_MAX_LEN 1024
#define REGEX_META "dittofs.crd.regex"

struct regex {
    int state; /* 0: empty, 1: re compiled (freed by __gc), -1: invalid */
    regex_t re;
};

/* Registry key of the cache (its address); its integer key 0 holds the
 * number of patterns in it (the other keys are strings). */
static const char regex_key = 'R';

static int regex_gc(lua_State *L)
{
    struct regex *r = luaL_checkudata(L, 1, REGEX_META);
    if (r->state == 1)
        regfree(&r->re);
    r->state = 0;
    return 0;
}

/* Pushes the cached struct regex of pat, the Lua string at stack index
 * pidx (absolute), compiling it now if the cache has room, and returns
 * it, or returns NULL with nothing pushed when pat is not cached and
 * cannot be. The cache is keyed by that string itself: a lookup by its C
 * string would make a new string of a long pattern on every call. May
 * raise a memory error; a compiled pattern is owned by its userdata by
 * then. */
static struct regex *cached_regex(lua_State *L, const char *pat, int pidx)
{
    luaL_checkstack(L, 4, "crd: nesting too deep");
    int cache = push_registry_cache(L, &regex_key);
    lua_pushvalue(L, pidx);
    if (lua_rawget(L, cache) == LUA_TUSERDATA) {
        lua_remove(L, cache); /* [regex] */
        return lua_touserdata(L, -1);
    }
    lua_pop(L, 1);
    lua_rawgeti(L, cache, 0);
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n >= REGEX_CACHE_MAX || strlen(pat) > REGEX_CACHE_MAX_LEN) {
        lua_pop(L, 1);
        return NULL;
    }
    /* The userdata first, empty: a memory error cannot leak the regex. */
    struct regex *r = lua_newuserdatauv(L, sizeof(*r), 0);
    r->state = 0;
    if (luaL_newmetatable(L, REGEX_META)) {
        lua_pushcfunction(L, regex_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2); /* [cache, regex] */
    r->state = regcomp(&r->re, pat, REG_EXTENDED | REG_NOSUB) == 0 ? 1 : -1;
    lua_pushvalue(L, pidx);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
    lua_pushinteger(L, n + 1);
    lua_rawseti(L, cache, 0);
    lua_remove(L, cache); /* [regex] */
    return r;
}

/* Whether the string s (len bytes) matches the POSIX extended pattern pat
 * (the Lua string at stack index pidx, absolute): 0 for a match,
 * REG_NOMATCH, or -1 when pat does not compile (then the pattern is not
 * checked). A string holding a NUL never matches. May raise a memory
 * error. */
static int pattern_match(lua_State *L, const char *pat, int pidx, const char *s,
                         size_t len)
{
    struct regex *r = cached_regex(L, pat, pidx);
    if (r != NULL) {
        int valid = r->state == 1;
        int m = valid && strlen(s) == len ? regexec(&r->re, s, 0, NULL, 0)
                                          : REG_NOMATCH;
        lua_pop(L, 1);
        if (!valid)
            return -1;
        return m == 0 ? 0 : REG_NOMATCH;
    }
    regex_t re;
    if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) != 0)
        return -1;
    int m = strlen(s) == len ? regexec(&re, s, 0, NULL, 0) : REG_NOMATCH;
    regfree(&re);
    return m == 0 ? 0 : REG_NOMATCH;
}

static int type_ok(const char *want, const char *got)
{
    if (strcmp(want, "number") == 0)
        return strcmp(got, "integer") == 0 || strcmp(got, "number") == 0;
    return strcmp(want, got) == 0;
}

static size_t utf8_len(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

static void check_string(lua_State *L, struct walk *w, int s, int v)
{
    size_t len;
    const char *str = lua_tolstring(L, v, &len);
    size_t runes = utf8_len(str, len);
    if (wget(L, w, s, K_MAX_LENGTH, "maxLength") == LUA_TNUMBER &&
        (lua_Number)runes > lua_tonumber(L, -1)) {
        struct dbuf *b = msg_begin(w);
        dbuf_adds(b, "Invalid value: ");
        add_quoted(b, str, len);
        dbuf_addf(b, ": %s in body should be at most %lld chars long", w->path,
                  (long long)lua_tonumber(L, -1));
        msg_end(w);
    }
    lua_pop(L, 1);
    if (wget(L, w, s, K_MIN_LENGTH, "minLength") == LUA_TNUMBER &&
        (lua_Number)runes < lua_tonumber(L, -1)) {
        struct dbuf *b = msg_begin(w);
        dbuf_adds(b, "Invalid value: ");
        add_quoted(b, str, len);
        dbuf_addf(b, ": %s in body should be at least %lld chars long", w->path,
                  (long long)lua_tonumber(L, -1));
        msg_end(w);
    }
    lua_pop(L, 1);
    if (wget(L, w, s, K_PATTERN, "pattern") == LUA_TSTRING) {
        int pidx = lua_gettop(L);
        const char *pat = lua_tostring(L, pidx);
        if (pattern_match(L, pat, pidx, str, len) == REG_NOMATCH) {
            struct dbuf *b = msg_begin(w);
            dbuf_adds(b, "Invalid value: ");
            add_quoted(b, str, len);
            dbuf_addf(b, ": %s in body should match '%s'", w->path, pat);
            msg_end(w);
        }
    }
    lua_pop(L, 1);
}

static void check_number(lua_State *L, struct walk *w, int s, int v)
{
    lua_Number x = lua_tonumber(L, v);
    static const struct {
        const char *key, *excl, *text, *text_excl;
        int max;
        unsigned key_bit, excl_bit;
    } bounds[] = {
        {"maximum", "exclusiveMaximum", "less than or equal to", "less than", 1,
         K_MAXIMUM, K_EXCL_MAXIMUM},
        {"minimum", "exclusiveMinimum", "greater than or equal to",
         "greater than", 0, K_MINIMUM, K_EXCL_MINIMUM},
    };
    for (int i = 0; i < 2; i++) {
        if (wget(L, w, s, bounds[i].key_bit, bounds[i].key) == LUA_TNUMBER) {
            lua_Number lim = lua_tonumber(L, -1);
            int excl = wflag(L, w, s, bounds[i].excl_bit, bounds[i].excl);
            int bad = bounds[i].max ? (excl ? x >= lim : x > lim)
                                    : (excl ? x <= lim : x < lim);
            if (bad) {
                struct dbuf *b = msg_begin(w);
                dbuf_adds(b, "Invalid value: ");
                add_value(L, b, v);
                dbuf_addf(b, ": %s in body should be %s ", w->path,
                          excl ? bounds[i].text_excl : bounds[i].text);
                add_value(L, b, lua_gettop(L));
                msg_end(w);
            }
        }
        lua_pop(L, 1);
    }
}

static void check_enum(lua_State *L, struct walk *w, int s, int v)
{
    if (wget(L, w, s, K_ENUM, "enum") != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    int e = lua_gettop(L);
    size_t n = lua_rawlen(L, e);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, e, (lua_Integer)i);
        int eq = lua_rawequal(L, -1, v);
        lua_pop(L, 1);
        if (eq) {
            lua_pop(L, 1);
            return;
        }
    }
    struct dbuf *b = msg_begin(w);
    dbuf_adds(b, "Unsupported value: ");
    add_value(L, b, v);
    dbuf_adds(b, ": supported values: ");
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, e, (lua_Integer)i);
        if (i > 1)
            dbuf_adds(b, ", ");
        add_value(L, b, lua_gettop(L));
        lua_pop(L, 1);
    }
    msg_end(w);
    lua_pop(L, 1);
}

/* x-kubernetes-list-type map (unique by the map keys) or set. */
static void check_list_type(lua_State *L, struct walk *w, int s, int v)
{
    const char *lt = wstring(L, w, s, K_LIST_TYPE, "x-kubernetes-list-type");
    if (lt == NULL || (strcmp(lt, "map") && strcmp(lt, "set")))
        return;
    int is_map = strcmp(lt, "map") == 0;
    wget(L, w, s, K_LIST_MAP_KEYS, "x-kubernetes-list-map-keys");
    int mk = lua_gettop(L);
    lua_newtable(L);
    int seen = lua_gettop(L);
    size_t n = lua_rawlen(L, v);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, v, (lua_Integer)i);
        int item = lua_gettop(L);
        struct dbuf *key = &w->key;
        dbuf_reset(key);
        if (is_map && lua_type(L, item) == LUA_TTABLE &&
            lua_type(L, mk) == LUA_TTABLE) {
            dbuf_adds(key, "map[string]interface {}{");
            size_t nk = lua_rawlen(L, mk);
            for (size_t j = 1; j <= nk; j++) {
                lua_rawgeti(L, mk, (lua_Integer)j);
                const char *kn = lua_tostring(L, -1);
                lua_getfield(L, item, kn ? kn : "");
                dbuf_addf(key, "%s\"%s\":", j > 1 ? ", " : "", kn ? kn : "");
                add_value(L, key, lua_gettop(L));
                lua_pop(L, 2);
            }
            dbuf_addc(key, '}');
        } else if (!is_map) {
            add_value(L, key, item);
        }
        lua_pop(L, 1);
        if (dbuf_len(key) == 0)
            continue;
        lua_pushlstring(L, dbuf_ptr(key), dbuf_len(key));
        lua_pushvalue(L, -1);
        if (lua_rawget(L, seen) != LUA_TNIL) {
            size_t old = path_index(w, i - 1);
            struct dbuf *b = msg_begin(w);
            dbuf_addf(b, "Duplicate value: %s", lua_tostring(L, -2));
            msg_end(w);
            path_pop(w, old);
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
    }
    lua_pop(L, 2);
}

static void validate_at(lua_State *L, struct walk *w, int s, int v);

/* Validates the value at v against the schema node at s (both absolute),
 * with w->keys the node's keys meanwhile (restored for the caller). */
static void validate_node(lua_State *L, struct walk *w, int s, int v)
{
    unsigned keys = w->keys;
    w->keys = node_keys(L, w, s);
    validate_at(L, w, s, v);
    w->keys = keys;
}

static void validate_at(lua_State *L, struct walk *w, int s, int v)
{
    luaL_checkstack(L, 12, "crd: nesting too deep");
    const char *vt = value_type(L, w, v);
    if (vt == NULL || lua_type(L, s) != LUA_TTABLE)
        return;
    if (strcmp(vt, "null") == 0 &&
        (w->keep || wflag(L, w, s, K_NULLABLE, "nullable")))
        return;
    const char *t = wstring(L, w, s, K_TYPE, "type");
    /* A policy's own unmarked {} is an empty list too. */
    if (w->keep && t && strcmp(t, "array") == 0 && strcmp(vt, "object") == 0 &&
        walk_kind(L, w, v) == CODEC_PLAIN) {
        lua_pushnil(L);
        int empty = lua_next(L, v) == 0;
        if (!empty)
            lua_pop(L, 2);
        if (empty)
            vt = "array";
    }
    int ios = wflag(L, w, s, K_INT_OR_STRING, "x-kubernetes-int-or-string");
    const char *want = ios ? "integer,string" : t;
    int ok = ios ? strcmp(vt, "integer") == 0 || strcmp(vt, "string") == 0
                 : t == NULL || type_ok(t, vt);
    if (!ok) {
        struct dbuf *b = msg_begin(w);
        dbuf_addf(b,
                  "Invalid value: \"%s\": %s in body must be of type %s: "
                  "\"%s\"",
                  vt, w->path, want, vt);
        msg_end(w);
        return;
    }
    check_enum(L, w, s, v);
    if (strcmp(vt, "string") == 0) {
        check_string(L, w, s, v);
    } else if (strcmp(vt, "integer") == 0 || strcmp(vt, "number") == 0) {
        check_number(L, w, s, v);
    } else if (strcmp(vt, "array") == 0) {
        size_t n = lua_rawlen(L, v);
        if (wget(L, w, s, K_MIN_ITEMS, "minItems") == LUA_TNUMBER &&
            (lua_Number)n < lua_tonumber(L, -1)) {
            struct dbuf *b = msg_begin(w);
            dbuf_addf(b,
                      "Invalid value: %zu: %s in body should have at least "
                      "%lld items",
                      n, w->path, (long long)lua_tonumber(L, -1));
            msg_end(w);
        }
        lua_pop(L, 1);
        if (wget(L, w, s, K_MAX_ITEMS, "maxItems") == LUA_TNUMBER &&
            (lua_Number)n > lua_tonumber(L, -1)) {
            struct dbuf *b = msg_begin(w);
            dbuf_addf(b, "Too many: %zu: must have at most %lld items", n,
                      (long long)lua_tonumber(L, -1));
            msg_end(w);
        }
        lua_pop(L, 1);
        check_list_type(L, w, s, v);
        if (wget(L, w, s, K_ITEMS, "items") == LUA_TTABLE) {
            int items = lua_gettop(L);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, v, (lua_Integer)i);
                size_t old = path_index(w, i - 1);
                validate_node(L, w, items, lua_gettop(L));
                path_pop(w, old);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    } else if (strcmp(vt, "object") == 0) {
        if (wget(L, w, s, K_REQUIRED, "required") == LUA_TTABLE) {
            int req = lua_gettop(L);
            size_t n = lua_rawlen(L, req);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, req, (lua_Integer)i);
                const char *k = lua_tostring(L, -1);
                int kt = k ? lua_getfield(L, v, k) : LUA_TNONE;
                if (!k)
                    lua_pushnil(L); /* popped with k below */
                if (k &&
                    (kt == LUA_TNIL || (w->keep && codec_is_null(L, -1)))) {
                    size_t old = path_field(w, k);
                    msg_begin(w);
                    dbuf_adds(w->msgs, "Required value");
                    msg_end(w);
                    path_pop(w, old);
                }
                lua_pop(L, 2);
            }
        }
        lua_pop(L, 1);
        wget(L, w, s, K_PROPERTIES, "properties");
        int props = lua_gettop(L);
        wget(L, w, s, K_ADDITIONAL, "additionalProperties");
        int addl = lua_gettop(L);
        /* Keys on the stack (a few), or in sorted_keys' table. */
        struct skey small[STACK_KEYS];
        const char **keys = NULL;
        size_t n = stack_keys(L, v, small);
        if (n > STACK_KEYS)
            n = sorted_keys(L, v, &keys);
        for (size_t i = 0; i < n; i++) {
            struct skey one = {keys ? keys[i] : NULL, 0, 1};
            const struct skey *k = keys ? &one : &small[i];
            key_get(L, v, k);
            int val = lua_gettop(L);
            int sub = key_sget(L, props, k) == LUA_TTABLE
                          ? lua_gettop(L)
                          : (lua_type(L, addl) == LUA_TTABLE ? addl : 0);
            if (sub) {
                size_t old = path_field(w, k->s);
                validate_node(L, w, sub, val);
                path_pop(w, old);
            } else if (w->warns != NULL &&
                       !wflag(L, w, s, K_PRESERVE,
                              "x-kubernetes-preserve-unknown-fields")) {
                size_t old = path_field(w, k->s);
                dbuf_addf(w->warns, "unknown field \"%s\"\n", w->path);
                path_pop(w, old);
            }
            lua_settop(L, val - 1);
        }
        lua_settop(L, props - 1);
    }
}

/* --- protected entry points ------------------------------------------------
 */

/* The walk of a protected entry point ([walk, schema, value]), with the
 * codec's array and object markers pushed (4, 5) and their addresses
 * kept for the walk's comparisons. */
static struct walk *walk_begin(lua_State *L)
{
    struct walk *w = lua_touserdata(L, 1);
    codec_get_marks(L);
    w->marks = 1;
    w->amt = lua_topointer(L, 4);
    w->omt = lua_topointer(L, 5);
    return w;
}

/* Protected: [walk, schema, value] (a C function sees only its own frame,
 * so both values travel as arguments). */
static int p_default(lua_State *L)
{
    struct walk *w = walk_begin(L);
    default_node(L, w, 2, 3, 1);
    return 0;
}

static int p_validate(lua_State *L)
{
    struct walk *w = walk_begin(L);
    validate_node(L, w, 2, 3);
    return 0;
}

/* Runs f on the walk w (msgs and path set) in protected mode; owns the
 * walk's scratch, so a memory error anywhere in the walk frees it too. */
static int run(lua_State *L, lua_CFunction f, struct walk *w, int s, int v)
{
    s = lua_absindex(L, s);
    v = lua_absindex(L, v);
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 4))
        return CRD_ENOMEM;
    dbuf_init(&w->key, 4096);
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, w);
    lua_pushvalue(L, s);
    lua_pushvalue(L, v);
    int rc = lua_pcall(L, 3, 0, 0);
    lua_settop(L, top);
    dbuf_free(&w->key);
    return rc == LUA_OK ? w->count : CRD_ENOMEM;
}

int crd_default(lua_State *L, int schema_idx, int obj_idx,
                struct dbuf *warnings)
{
    struct walk w;
    memset(&w, 0, sizeof(w));
    w.msgs = warnings;
    return run(L, p_default, &w, schema_idx, obj_idx);
}

int crd_validate(lua_State *L, int schema_idx, int obj_idx, const char *path,
                 struct dbuf *errors)
{
    struct walk w;
    memset(&w, 0, sizeof(w));
    w.msgs = errors;
    snprintf(w.path, sizeof(w.path), "%s", path ? path : "");
    w.plen = strlen(w.path);
    return run(L, p_validate, &w, schema_idx, obj_idx);
}

/* Protected: [docs, version] -> schema */
static int p_find_schema(lua_State *L)
{
    const char *version = lua_tostring(L, 2);
    lua_rawgeti(L, 1, 1); /* the first document */
    if (lua_type(L, -1) != LUA_TTABLE)
        return luaL_error(L, "not a CustomResourceDefinition");
    lua_getfield(L, -1, "spec");
    if (lua_type(L, -1) != LUA_TTABLE ||
        lua_getfield(L, -1, "versions") != LUA_TTABLE)
        return luaL_error(L, "no spec.versions");
    size_t n = lua_rawlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
        lua_settop(L, 5); /* [docs, version, doc, spec, versions] */
        lua_rawgeti(L, 5, (lua_Integer)i);
        if (lua_type(L, -1) == LUA_TTABLE &&
            lua_getfield(L, -1, "name") == LUA_TSTRING &&
            strcmp(lua_tostring(L, -1), version) == 0) {
            lua_pop(L, 1);
            if (lua_getfield(L, -1, "schema") == LUA_TTABLE &&
                lua_getfield(L, -1, "openAPIV3Schema") == LUA_TTABLE)
                return 1;
            return luaL_error(L, "version %s has no openAPIV3Schema", version);
        }
    }
    return luaL_error(L, "no version %s", version);
}

int crd_push_schema(lua_State *L, const char *yaml, size_t len,
                    const char *version, struct dbuf *err)
{
    char msg[256];
    int rc = yaml_push_all(L, yaml, len, NULL, msg, sizeof(msg));
    if (rc != 0) {
        dbuf_addf(err, "crd: %s", msg);
        return rc == CODEC_ENOMEM ? CRD_ENOMEM : CRD_EINPUT;
    }
    lua_pushcfunction(L, p_find_schema);
    lua_insert(L, -2);
    lua_pushstring(L, version);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        dbuf_addf(err, "crd: %s", m ? m : "out of memory");
        lua_pop(L, 1);
        return CRD_EINPUT;
    }
    return CRD_OK;
}

int crd_push_embedded_schema(lua_State *L, struct dbuf *err)
{
    const struct embedded_file *f = embedded_find(CRD_EMBEDDED);
    if (f == NULL) {
        dbuf_addf(err, "crd: %s is not embedded", CRD_EMBEDDED);
        return CRD_EINPUT;
    }
    return crd_push_schema(L, (const char *)f->data, f->len, CRD_VERSION, err);
}

/* --- the schema for the policies ------------------------------------------ */

/* Registry key of the decoded, description-less schema (its address). */
static const char schema_key = 'S';

/* Removes every "description" key under the table at idx, in place. */
static void strip_descriptions(lua_State *L, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    if (depth > CODEC_MAX_DEPTH)
        luaL_error(L, "crd: schema nested too deeply");
    lua_pushnil(L);
    lua_setfield(L, idx, "description");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* [k, v] */
        if (lua_type(L, -1) == LUA_TTABLE)
            strip_descriptions(L, -1, depth + 1);
        lua_pop(L, 1);
    }
}

/* Pushes the state's decoded schema (decoding it on first use). Raises. */
static void push_state_schema(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &schema_key) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    struct dbuf err;
    dbuf_init(&err, 1024);
    int rc = crd_push_embedded_schema(L, &err);
    if (rc != CRD_OK) {
        /* Copied out and freed before anything may raise. */
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", dbuf_ptr(&err));
        dbuf_free(&err);
        luaL_error(L, "%s", msg);
    }
    dbuf_free(&err);
    strip_descriptions(L, -1, 0);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &schema_key);
}

int crd_l_schema(lua_State *L)
{
    push_state_schema(L);
    push_copy(L, -1);
    return 1;
}

/*
 * A schema node argument of crd_default/crd_validate: a table is used as
 * is; a string is the dotted path of a field of the embedded CRD ("spec",
 * "spec.config"), whose node in the state's own decoded schema replaces it
 * at idx. That node is only read (defaults are copied into the value), so
 * no policy ever holds a table of it. Raises for a path the schema lacks.
 */
static void resolve_node(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        return;
    const char *path = lua_tostring(L, idx);
    push_state_schema(L);
    int found = 1;
    for (const char *p = path; found && *path;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        found = n > 0 && sget(L, lua_gettop(L), "properties") == LUA_TTABLE;
        if (found) {
            lua_pushlstring(L, p, n);
            lua_rawget(L, -2); /* [.., node, props, sub] */
            lua_remove(L, -2);
            lua_remove(L, -2);
            found = lua_type(L, -1) == LUA_TTABLE;
        }
        if (dot == NULL)
            break;
        p = dot + 1;
    }
    if (!found)
        luaL_error(L, "crd: the schema has no field \"%s\"", path);
    lua_replace(L, idx);
}

int crd_l_default(lua_State *L)
{
    lua_settop(L, 2);
    int own = lua_type(L, 2) == LUA_TSTRING;
    resolve_node(L, 2);
    if (lua_type(L, 1) == LUA_TTABLE && lua_type(L, 2) == LUA_TTABLE) {
        struct walk w;
        memset(&w, 0, sizeof(w));
        w.keep = 1;
        w.own = own;
        codec_get_marks(L);
        w.marks = 1;
        w.amt = lua_topointer(L, 3);
        w.omt = lua_topointer(L, 4);
        default_node(L, &w, 2, 1, 0);
    }
    lua_settop(L, 1);
    return 1;
}

/* Pushes the lines of b as a codec array of strings. */
static void push_lines(lua_State *L, const struct dbuf *b)
{
    lua_newtable(L);
    codec_mark(L, -1, CODEC_ARRAY);
    const char *p = dbuf_ptr(b);
    lua_Integer i = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        lua_pushlstring(L, p, n);
        lua_rawseti(L, -2, ++i);
        p += n + (nl ? 1 : 0);
    }
}

/* Protected: [walk, schema, value] -> errors, warnings. */
static int p_validate_lists(lua_State *L)
{
    struct walk *w = walk_begin(L);
    validate_node(L, w, 2, 3);
    lua_settop(L, 3);
    if (dbuf_error(w->msgs) != DBUF_OK || dbuf_error(w->warns) != DBUF_OK)
        return luaL_error(L, "not enough memory");
    push_lines(L, w->msgs);
    push_lines(L, w->warns);
    return 2;
}

int crd_l_validate(lua_State *L)
{
    int own = lua_type(L, 2) == LUA_TSTRING;
    resolve_node(L, 2);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *path = luaL_optstring(L, 3, "");
    struct walk w;
    struct dbuf errs, warns;
    memset(&w, 0, sizeof(w));
    w.keep = 1;
    w.own = own;
    dbuf_init(&errs, (size_t)1 << 20);
    dbuf_init(&warns, (size_t)1 << 20);
    w.msgs = &errs;
    w.warns = &warns;
    snprintf(w.path, sizeof(w.path), "%s", path);
    w.plen = strlen(w.path);
    dbuf_init(&w.key, 4096);
    lua_pushcfunction(L, p_validate_lists);
    lua_pushlightuserdata(L, &w);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    /* Everything malloc'd is freed before a failure is raised again. */
    int rc = lua_pcall(L, 3, 2, 0);
    dbuf_free(&w.key);
    dbuf_free(&errs);
    dbuf_free(&warns);
    if (rc != LUA_OK)
        return lua_error(L);
    return 2;
}

void crd_register(lua_State *L)
{
    lua_pushcfunction(L, crd_l_schema);
    lua_setfield(L, -2, "crd_schema");
    lua_pushcfunction(L, crd_l_default);
    lua_setfield(L, -2, "crd_default");
    lua_pushcfunction(L, crd_l_validate);
    lua_setfield(L, -2, "crd_validate");
}
