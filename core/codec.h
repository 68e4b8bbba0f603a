/*
 * codec: the one Lua representation of JSON/YAML data, shared by the JSON
 * and YAML codecs (ljson.c, lyaml.c) and everything that builds or reads
 * such values (policy, crd, script_test). Representation: JSON null is the
 * lightuserdata `codec.null`; decoded arrays carry the metatable
 * `codec.array_mt`, decoded objects `codec.object_mt` (both kept in the
 * registry, created on first use). An unmarked table encodes as an object
 * when empty, as an array when its keys are exactly 1..n, else as an
 * object (string keys only). Below both codecs, so that they and the Lua
 * module above them (lcodec) form no include circle. Uses lua, dbuf. The
 * helpers below the "shared by ljson.c and lyaml.c" line are internal to
 * the codecs.
 */
#ifndef DITTOFS_CODEC_H
#define DITTOFS_CODEC_H

#include <stddef.h>
#include <string.h>

#include <lua.h>

#include "dbuf.h"

/* Default limits: nesting depth, input size, nodes added by YAML aliases. */
#define CODEC_MAX_DEPTH 128
#define CODEC_MAX_SIZE ((size_t)16 << 20)
#define CODEC_MAX_ALIAS_NODES ((size_t)100000)

/* Limits of one decode or encode; zero fields mean "the default". */
struct codec_limits {
    int max_depth;          /* nesting of arrays/objects */
    size_t max_size;        /* input bytes (decoders) */
    size_t max_alias_nodes; /* YAML: nodes copied through aliases */
};

/* Return codes of every codec function (0 is success). */
enum {
    CODEC_OK = 0,
    CODEC_EINPUT = -1,  /* malformed input: the message has line/column */
    CODEC_ELIMIT = -2,  /* depth, size or alias limit exceeded */
    CODEC_EVALUE = -3,  /* value cannot be encoded (NaN, function, ...) */
    CODEC_ENOMEM = -4,  /* Lua or C allocation failed */
    CODEC_ETOOBIG = -5, /* output passed the dbuf's maximum */
};

/* Kinds returned by codec_kind(). */
enum {
    CODEC_PLAIN = 0, /* not a table, or an unmarked table */
    CODEC_ARRAY = 1,
    CODEC_OBJECT = 2,
};

/* Pushes the null sentinel. Never raises (needs one free stack slot). */
void codec_push_null(lua_State *L);
/* Returns 1 when the value at idx is the null sentinel. Never raises. */
int codec_is_null(lua_State *L, int idx);
/* The address codec.null is the light userdata of (for readers of raw
 * values, lraw.h). */
const void *codec_null_ptr(void);

/* Gives the table at idx the marker metatable of `kind` (CODEC_ARRAY or
 * CODEC_OBJECT). May raise a memory error (first use creates the
 * metatables). */
void codec_mark(lua_State *L, int idx, int kind);
/* Returns CODEC_ARRAY, CODEC_OBJECT or CODEC_PLAIN for the value at idx.
 * Never raises. */
int codec_kind(lua_State *L, int idx);

/* codec_kind with the marker metatables at indices amt and omt (as
 * codec_push_marks pushes them; upvalue indices too): no registry lookup.
 * idx, amt and omt must be absolute or pseudo-indices. Never raises
 * (needs one free stack slot). */
int codec_kind_at(lua_State *L, int idx, int amt, int omt);

/* codec_kind_at with the markers' addresses (lua_topointer of what
 * codec_push_marks or codec_get_marks pushed, NULL for a marker not
 * created yet): an address compare instead of each lua_rawequal. idx
 * must be absolute or a pseudo-index. Never raises (one free slot). */
int codec_kind_ptr(lua_State *L, int idx, const void *amt, const void *omt);

/* Returns the message of a return code ("malformed input", ...). */
const char *codec_strerror(int rc);

/* ---- shared by ljson.c and lyaml.c -------------------------------------- */

/* Fills in the defaults of `lim` (NULL -> all defaults) into `out`. */
void codec_limits_resolve(const struct codec_limits *lim,
                          struct codec_limits *out);

/* Pushes [array_mt, object_mt] (2 slots). May raise a memory error. */
void codec_push_marks(lua_State *L);

/* Pushes [array_mt, object_mt] as they are (nil for a marker not created
 * yet, which no metatable equals), for codec_kind_at: what codec_kind
 * looks up on every call. Allocates nothing, never raises (2 slots). */
void codec_get_marks(lua_State *L);

/*
 * Runs f(L) protected with `ud` as its only argument (a lightuserdata) and
 * `extra` more arguments taken from the top of the stack; leaves f's
 * `nresults` results on success. Returns CODEC_OK, CODEC_ENOMEM, or the
 * code f stored through codec_fail() (its message in err). Never raises.
 */
int codec_pcall(lua_State *L, lua_CFunction f, void *ud, int extra,
                int nresults, int *code, char *err, size_t errlen);

/* Inside a codec_pcall'd function: records `code` and the message in
 * err/errlen and raises. Does not return. */
void codec_fail(lua_State *L, int *code, char *err, size_t errlen, int rc,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)))
__attribute__((noreturn));
/* Like codec_fail, for a message already in err (written by a helper such
 * as codec_table_entries): records `rc` and raises. Does not return. */
void codec_raise(lua_State *L, int *code, int rc) __attribute__((noreturn));

/* One key of an object being encoded: the key sits at stack index idx,
 * its value at idx + 1. */
struct rtable;
struct rtvalue;
struct codec_out;

struct codec_key {
    const char *s;
    size_t len;
    int idx;                 /* the API walk: where the key is on the stack */
    const struct rtvalue *v; /* the raw walk: where the value is (lraw.h) */
};

/* A growable vector of keys (malloc-owned; free with codec_keys_free). */
struct codec_keys {
    struct codec_key *v;
    size_t len;
    size_t cap;
};

void codec_keys_free(struct codec_keys *k);

/*
 * Classifies the table at idx (absolute) for encoding. For an object,
 * pushes every key and value on the stack and appends their entries to
 * `keys`, sorted bytewise; *n receives the entry count. For an array,
 * pushes nothing and *n is the length. The markers are given by address
 * (as codec_kind_ptr). Returns CODEC_ARRAY, CODEC_OBJECT,
 * or a negative code with the message in err (non-string key,
 * CODEC_ENOMEM). Raises only memory errors (call it protected).
 */
int codec_table_entries(lua_State *L, int idx, const void *array_mt,
                        const void *object_mt, struct codec_keys *keys,
                        size_t *n, char *err, size_t errlen);

/*
 * codec_table_entries through lraw.h's views, for the encoders' raw walk
 * (the caller checked lraw_views): the table h classified by the same
 * rules without the C API. For an object, appends its entries (key bytes
 * and value, `v`) to `keys`, sorted the same way; for an array, *n is its
 * length and its values are h->array[0 .. *n - 1]. Returns CODEC_ARRAY,
 * CODEC_OBJECT, CODEC_ENOMEM, or CODEC_RAW_GIVEUP where it cannot tell as
 * codec_table_entries would: a hole in the array part, a key that is not
 * a string in the hash part, keys of both kinds (the API walk then
 * decides, or refuses). Never raises, never lets Lua run.
 */
#define CODEC_RAW_GIVEUP (-100)

/* After an encoder's raw walk gave up: drops what it wrote to out since
 * `start` (staged or not) and empties keys, for the API walk to start
 * over; counts the give-up (lraw_counts). */
void codec_raw_rewind(struct codec_out *o, struct dbuf *out, size_t start,
                      struct codec_keys *keys);
int codec_raw_entries(const struct rtable *h, const void *array_mt,
                      const void *object_mt, struct codec_keys *keys,
                      size_t *n);

/*
 * The encoders' output: a staging buffer in front of a dbuf. An encoder
 * writes many small pieces (quotes, colons, keys, indents), and each
 * dbuf_add is a call, a bound check and a terminator. The bytes reach the
 * dbuf in order, and it fails exactly where it would have: a piece that
 * would take the dbuf past its maximum (or one written to a dbuf already
 * in error) is flushed straight to it, so the same piece meets the same
 * DBUF_TOOBIG. codec_out_flush() must run when the encoder ends, also on
 * failure (the dbuf then holds what it would have held). Never raises.
 */
#define CODEC_OUT_STAGE 4096

struct codec_out {
    struct dbuf *out;
    size_t len;  /* staged bytes */
    size_t room; /* bytes the dbuf takes before its maximum, at most
                    CODEC_OUT_STAGE; 0 when it is in error */
    char buf[CODEC_OUT_STAGE];
};

void codec_out_init(struct codec_out *o, struct dbuf *out);
/* Moves the staged bytes to the dbuf. Returns its DBUF_* status. */
int codec_out_flush(struct codec_out *o);
/* Flushes, then appends s directly. Returns the dbuf's status. */
int codec_out_put_slow(struct codec_out *o, const char *s, size_t n);

/* Appends n bytes of s. Returns DBUF_OK or the dbuf's error (its contents
 * are then empty, as dbuf_add leaves them). */
static inline int codec_out_put(struct codec_out *o, const char *s, size_t n)
{
    if (n <= o->room - o->len) {
        memcpy(o->buf + o->len, s, n);
        o->len += n;
        return DBUF_OK;
    }
    return codec_out_put_slow(o, s, n);
}

static inline int codec_out_putc(struct codec_out *o, char c)
{
    if (o->len < o->room) {
        o->buf[o->len++] = c;
        return DBUF_OK;
    }
    return codec_out_put_slow(o, &c, 1);
}

/* Formats the number at idx into buf (at least 32 bytes): integers
 * exactly, floats shortest round-trip ("1", "0.1", "1e+300"). Returns the
 * length, or 0 for NaN and infinities. Never raises. */
size_t codec_fmt_number(lua_State *L, int idx, char *buf);
/* The same for an integer, and for a float (codec_fmt_number of a
 * float: 0 for NaN and infinities). */
size_t codec_fmt_integer(lua_Integer v, char *buf);
size_t codec_fmt_float(lua_Number d, char *buf);

#endif
