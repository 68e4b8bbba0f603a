/*
 * lraw: read-only views of Lua 5.4's tables, strings and upvalues through
 * their own layouts (lobject.h; the same from 5.4.0 to 5.4.7), which
 * lua.h does not publish. Two hot paths read Lua values far more often
 * than they change them, and through the C API each entry of a table
 * costs a lua_next (a hash lookup of the key it stopped at) plus a push
 * and a pop of key and value:
 * - the sandbox's check that shared tables and kept upvalues are intact
 *   after an evaluation (sandbox.c, shared_intact);
 * - the JSON encoder (ljson.c), which walks every object a policy renders.
 *
 * lraw_views() first verifies the layouts on this Lua: it builds tables,
 * strings, numbers, booleans, a light userdata, a Lua closure and a C
 * closure through the API and reads them back through the structures
 * below. If any byte is not where it should be, or DITTOFS_LUA_RAW=0 is
 * set, it answers 0 and the callers use the C API only. A reader must
 * not let Lua run while it holds these pointers (nothing may allocate:
 * a collection could free or move what they point at), and must treat
 * anything it does not know (a tag, a key type) as a reason to hand the
 * value back to the API path.
 * Uses Lua.
 */
#ifndef DITTOFS_LRAW_H
#define DITTOFS_LRAW_H

#include <lua.h>
#include <stddef.h>

union rvalue {
    void *gc;
    void *p;
    lua_CFunction f;
    lua_Integer i;
    lua_Number n;
};

struct rtvalue {
    union rvalue value_;
    unsigned char tt_;
};

union rnode {
    struct {
        union rvalue value_;
        unsigned char tt_;
        unsigned char key_tt;
        int next;
        union rvalue key_val;
    } u;
    struct rtvalue i_val;
};

struct rtable {
    void *next;
    unsigned char tt, marked;
    unsigned char flags, lsizenode;
    unsigned int alimit;
    struct rtvalue *array;
    union rnode *node;
    union rnode *lastfree;
    const void *metatable;
    void *gclist;
};

struct rtstring {
    void *next;
    unsigned char tt, marked;
    unsigned char extra, shrlen;
    unsigned int hash;
    union {
        size_t lnglen;
        void *hnext;
    } u;
    char contents[1];
};

struct rupval {
    void *next;
    unsigned char tt, marked, tbc;
    struct rtvalue *v;
    struct rtvalue value; /* the closed value (u.value) */
};

/* Tags (lobject.h: makevariant, with BIT_ISCOLLECTABLE on collectables). */
#define LRAW_BITRAS (1u << 7) /* rtable flags: alimit is not the size */
#define LRAW_CTB 64           /* BIT_ISCOLLECTABLE */
#define LRAW_VFALSE 0x01
#define LRAW_VTRUE 0x11
#define LRAW_VLIGHTUSERDATA 0x02
#define LRAW_VNUMINT 0x03
#define LRAW_VNUMFLT 0x13
#define LRAW_VSHRSTR 0x04
#define LRAW_VLNGSTR 0x14
#define LRAW_VTABLE 0x05

/* Whether the value with tag tt is nil (nil, an empty slot, an absent
 * key): a table entry whose value is nil is no entry. */
static inline int lraw_isnil(unsigned char tt)
{
    return (tt & 0x0f) == LUA_TNIL;
}

/* The size of the array part (luaH_realasize). */
static inline unsigned lraw_asize(const struct rtable *h)
{
    unsigned n = h->alimit;
    if (!(h->flags & LRAW_BITRAS) || (n & (n - 1)) == 0)
        return n;
    n |= n >> 1;
    n |= n >> 2;
    n |= n >> 4;
    n |= n >> 8;
    n |= n >> 16;
    return n + 1;
}

/* The entries of h: in its array part (*narr), and in all (returned). */
static inline size_t lraw_entries(const struct rtable *h, size_t *narr)
{
    size_t na = 0, n, nodes = (size_t)1 << h->lsizenode;
    unsigned asize = lraw_asize(h);
    for (unsigned i = 0; i < asize; i++)
        na += !lraw_isnil(h->array[i].tt_);
    n = na;
    for (size_t i = 0; i < nodes; i++)
        n += !lraw_isnil(h->node[i].u.tt_);
    *narr = na;
    return n;
}

/* The bytes and the length of the string of a value tagged LRAW_VSHRSTR
 * or LRAW_VLNGSTR with LRAW_CTB. */
static inline const char *lraw_string(const struct rtvalue *v, size_t *len)
{
    const struct rtstring *s = v->value_.gc;
    *len = (v->tt_ & 0x30) == 0 ? s->shrlen : s->u.lnglen;
    return s->contents;
}

/* Where table h holds the value of the short string key s (a TString
 * tagged LRAW_VSHRSTR: interned, so the same key is the same object), or
 * NULL when h has no such key: luaH_getshortstr. */
static inline const struct rtvalue *lraw_getshortstr(const struct rtable *h,
                                                     const void *s)
{
    const struct rtstring *ts = s;
    const union rnode *n =
        &h->node[ts->hash & (((unsigned)1 << h->lsizenode) - 1)];
    for (;;) {
        if (n->u.key_tt == (LRAW_VSHRSTR | LRAW_CTB) && n->u.key_val.gc == s)
            return &n->i_val;
        if (n->u.next == 0)
            return NULL;
        n += n->u.next;
    }
}

/* The entries of the table at idx in its array part (*narr, for
 * lua_createtable) and in all (*n): through the views when they hold, else
 * by a pass of lua_next (then *narr is #t). Call it where lraw_views may
 * be (protected). */
void lraw_sizes(lua_State *L, int idx, lua_Unsigned *narr, lua_Unsigned *n);

/*
 * 1 when the views above hold for this Lua and are not turned off
 * (DITTOFS_LUA_RAW=0, or lraw_force_off), else 0. The first call checks
 * the layouts with values it makes on L's stack (and leaves the stack as
 * it was); it may raise a memory error, so call it protected. The answer
 * is the same for every state of the process (the layouts are the
 * compiled-in Lua's) and is kept.
 */
int lraw_views(lua_State *L);

/* The encoders' raw walks (ljson.c, lyaml.c) count here, per thread, the
 * values they wrote to the end and those they gave up on (which were
 * then encoded through the C API again), for tests and benchmarks. */
void lraw_count(int gave_up);
void lraw_counts(unsigned long *walks, unsigned long *giveups);

/* Tests: nonzero makes lraw_views() answer 0 from now on (0 undoes it),
 * so that the API paths can be compared with the raw ones in one run. */
void lraw_force_off(int off);

#endif
