/*
 * ljson: a direct JSON -> Lua stack parser (exact int64, strict UTF-8), a
 * JSON encoder into a dbuf, and cJSON <-> Lua. See ljson.h.
 *
 * Both directions run inside codec_pcall(): a Lua memory error or a
 * codec_fail() unwinds to it, and the C resources of a call (the scratch
 * buffer, the key vector) live in the context struct owned by the
 * unprotected outer function, which frees them on every path.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "jscan.h"
#include "ljson.h"
#include "lraw.h"
#include "text.h"

/* ---- decoder ------------------------------------------------------------- */

struct jdec {
    const char *s, *p, *end;
    struct codec_limits lim;
    int depth;
    int amt, omt;  /* stack indices of the marker metatables */
    char *scratch; /* unescaped strings, long numbers (malloc-owned) */
    size_t scap;
    int code;
    char *err;
    size_t errlen;
};

/* Raises with "line L, column C: msg" for the position `at`. Columns
 * count characters (UTF-8 lead bytes), from 1. */
__attribute__((noreturn, format(printf, 5, 6))) static void
dec_fail_rc(lua_State *L, struct jdec *d, int rc, const char *at,
            const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    size_t line = 1, col = 1;
    for (const char *q = d->s; q < at && q < d->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)*q & 0xC0) != 0x80) {
            col++;
        }
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    codec_fail(L, &d->code, d->err, d->errlen, rc, "line %zu, column %zu: %s",
               line, col, msg);
}

#define dec_fail(L, d, at, ...) dec_fail_rc(L, d, CODEC_EINPUT, at, __VA_ARGS__)

static void scratch_reserve(lua_State *L, struct jdec *d, size_t need)
{
    if (need <= d->scap)
        return;
    size_t cap = d->scap ? d->scap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(d->scratch, cap);
    if (p == NULL)
        codec_fail(L, &d->code, d->err, d->errlen, CODEC_ENOMEM,
                   "not enough memory");
    d->scratch = p;
    d->scap = cap;
}

static void skip_ws(struct jdec *d)
{
    const char *p = d->p;
    while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

/* Checks the multi-byte UTF-8 sequence at p; returns its length. */
static size_t check_utf8(lua_State *L, struct jdec *d, const char *p)
{
    size_t n = text_utf8_seq(p, d->end);
    if (n == 0)
        dec_fail(L, d, p, "invalid UTF-8 in string");
    return n;
}

/* Parses the string at d->p (on its opening quote) and pushes it. */
static void parse_string(lua_State *L, struct jdec *d)
{
    const char *start = ++d->p, *p = start, *end = d->end;
    /* Fast path: no escapes. */
    for (;;) {
        if (p >= end)
            dec_fail(L, d, start - 1, "unterminated string");
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            lua_pushlstring(L, start, (size_t)(p - start));
            d->p = p + 1;
            return;
        }
        if (c == '\\')
            break;
        if (c < 0x20)
            dec_fail(L, d, p, "control character in string");
        if (c >= 0x80)
            p += check_utf8(L, d, p);
        else
            p++;
    }
    /* Slow path: unescape into the scratch buffer (never longer than the
     * rest of the input). */
    scratch_reserve(L, d, (size_t)(end - start) + 4);
    char *o = d->scratch;
    size_t olen = (size_t)(p - start);
    memcpy(o, start, olen);
    for (;;) {
        if (p >= end)
            dec_fail(L, d, start - 1, "unterminated string");
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            break;
        if (c < 0x20)
            dec_fail(L, d, p, "control character in string");
        if (c >= 0x80) {
            size_t n = check_utf8(L, d, p);
            memcpy(o + olen, p, n);
            olen += n;
            p += n;
            continue;
        }
        if (c != '\\') {
            o[olen++] = (char)c;
            p++;
            continue;
        }
        uint32_t cp;
        size_t n = text_json_unescape(p, end, &cp);
        if (n == 0 && p + 1 >= end)
            dec_fail(L, d, start - 1, "unterminated string");
        if (n == 0 && p[1] == 'u')
            dec_fail(L, d, p, "invalid \\u escape");
        if (n == 0)
            dec_fail(L, d, p, "invalid escape '\\%c'",
                     (unsigned char)p[1] >= 0x20 ? p[1] : '?');
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            dec_fail(L, d, p, "lone low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF)
            dec_fail(L, d, p, "unpaired high surrogate in \\u escape");
        olen += text_utf8_encode(o + olen, cp);
        p += n;
    }
    lua_pushlstring(L, o, olen);
    d->p = p + 1;
}

static void parse_number(lua_State *L, struct jdec *d)
{
    const char *start = d->p, *p = d->p, *end = d->end;
    int neg = 0, is_float = 0, ovf = 0;
    uint64_t m = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        dec_fail(L, d, start, "invalid number");
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            dec_fail(L, d, start, "leading zero in number");
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned dg = (unsigned)(*p - '0');
            if (m > (UINT64_MAX - dg) / 10)
                ovf = 1;
            else
                m = m * 10 + dg;
            p++;
        }
    }
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            dec_fail(L, d, start, "invalid number");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_float = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            dec_fail(L, d, start, "invalid number");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    d->p = p;
    if (!is_float && !ovf) {
        if (!neg && m <= (uint64_t)INT64_MAX) {
            lua_pushinteger(L, (lua_Integer)m);
            return;
        }
        if (neg && m <= (uint64_t)INT64_MAX + 1) {
            lua_pushinteger(L, (lua_Integer)(0 - m));
            return;
        }
    }
    /* Floats and out-of-range integers: strtod needs a terminated copy. */
    size_t n = (size_t)(p - start);
    char small[64], *buf = small;
    if (n >= sizeof(small)) {
        scratch_reserve(L, d, n + 1);
        buf = d->scratch;
    }
    memcpy(buf, start, n);
    buf[n] = '\0';
    double v = strtod(buf, NULL);
    /* 1e400 would become an infinity no encoder writes back (Go's
     * encoding/json refuses it too) */
    if (isinf(v))
        dec_fail(L, d, start, "number out of range");
    lua_pushnumber(L, v);
}

static void parse_value(lua_State *L, struct jdec *d);

static void enter(lua_State *L, struct jdec *d)
{
    if (++d->depth > d->lim.max_depth) {
        dec_fail_rc(L, d, CODEC_ELIMIT, d->p, "nesting deeper than %d",
                    d->lim.max_depth);
    }
    if (!lua_checkstack(L, 6))
        codec_fail(L, &d->code, d->err, d->errlen, CODEC_ENOMEM,
                   "not enough memory");
}

/*
 * Arrays and objects are made at their final size: their first
 * PENDING_MAX items (or members) wait on the stack, above a placeholder
 * for the table, and the table is made when the value closes or when
 * there are that many (then it grows as usual). A table that grows from
 * empty is rehashed at every power of two, which cost about a third of
 * decoding.
 */
#define PENDING_MAX 32

/* Makes the table of the n pending items at base+1.. (array) or n pending
 * key/value pairs (object) in place of the placeholder at base, with room
 * for them, and moves them into it. */
static void flush(lua_State *L, struct jdec *d, int base, int n, int object)
{
    if (object)
        lua_createtable(L, 0, n);
    else
        lua_createtable(L, n, 0);
    lua_pushvalue(L, object ? d->omt : d->amt);
    lua_setmetatable(L, -2);
    lua_replace(L, base);
    if (object) {
        for (int i = 0; i < n; i++) {
            lua_pushvalue(L, base + 1 + 2 * i);
            lua_pushvalue(L, base + 2 + 2 * i);
            lua_rawset(L, base);
        }
    } else {
        for (int i = 0; i < n; i++) {
            lua_pushvalue(L, base + 1 + i);
            lua_rawseti(L, base, i + 1);
        }
    }
    lua_settop(L, base);
}

/* Room for one more pending item or member and what parsing it pushes. */
static void reserve(lua_State *L, struct jdec *d)
{
    if (!lua_checkstack(L, 4))
        codec_fail(L, &d->code, d->err, d->errlen, CODEC_ENOMEM,
                   "not enough memory");
}

static void parse_array(lua_State *L, struct jdec *d)
{
    enter(L, d);
    lua_pushnil(L); /* the array's place */
    int base = lua_gettop(L), n = 0, made = 0;
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        flush(L, d, base, 0, 0);
        d->depth--;
        return;
    }
    for (lua_Integer i = 1;; i++) {
        reserve(L, d);
        parse_value(L, d);
        if (made) {
            lua_rawseti(L, base, i);
        } else if (++n == PENDING_MAX) {
            flush(L, d, base, n, 0);
            made = 1;
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            break;
        }
        dec_fail(L, d, d->p, "expected ',' or ']' in array");
    }
    if (!made)
        flush(L, d, base, n, 0);
    d->depth--;
}

/* Whether the key at the top is already a key of the object being parsed:
 * in its table at base (made), or among its n pending members. */
static int seen_key(lua_State *L, int base, int n, int made)
{
    if (made) {
        lua_pushvalue(L, -1);
        int seen = lua_rawget(L, base) != LUA_TNIL;
        lua_pop(L, 1);
        return seen;
    }
    for (int i = 0; i < n; i++)
        if (lua_rawequal(L, base + 1 + 2 * i, -1))
            return 1;
    return 0;
}

static void parse_object(lua_State *L, struct jdec *d)
{
    enter(L, d);
    lua_pushnil(L); /* the object's place */
    int base = lua_gettop(L), n = 0, made = 0;
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        flush(L, d, base, 0, 1);
        d->depth--;
        return;
    }
    for (;;) {
        reserve(L, d);
        skip_ws(d);
        if (d->p >= d->end || *d->p != '"')
            dec_fail(L, d, d->p, "expected a string key in object");
        const char *kpos = d->p;
        parse_string(L, d); /* [.., key] */
        if (seen_key(L, base, n, made))
            dec_fail(L, d, kpos, "duplicate key \"%.60s\"",
                     lua_tostring(L, -1));
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':')
            dec_fail(L, d, d->p, "expected ':' after object key");
        d->p++;
        parse_value(L, d); /* [.., key, value] */
        if (made) {
            lua_rawset(L, base);
        } else if (++n == PENDING_MAX) {
            flush(L, d, base, n, 1);
            made = 1;
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            break;
        }
        dec_fail(L, d, d->p, "expected ',' or '}' in object");
    }
    if (!made)
        flush(L, d, base, n, 1);
    d->depth--;
}

static void parse_literal(lua_State *L, struct jdec *d, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        dec_fail(L, d, d->p, "invalid literal");
    d->p += n;
}

static void parse_value(lua_State *L, struct jdec *d)
{
    skip_ws(d);
    if (d->p >= d->end)
        dec_fail(L, d, d->p, "unexpected end of input");
    switch (*d->p) {
    case '{':
        parse_object(L, d);
        return;
    case '[':
        parse_array(L, d);
        return;
    case '"':
        parse_string(L, d);
        return;
    case 't':
        parse_literal(L, d, "true");
        lua_pushboolean(L, 1);
        return;
    case 'f':
        parse_literal(L, d, "false");
        lua_pushboolean(L, 0);
        return;
    case 'n':
        parse_literal(L, d, "null");
        codec_push_null(L);
        return;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) {
            parse_number(L, d);
            return;
        }
        if ((unsigned char)*d->p >= 0x20 && (unsigned char)*d->p < 0x7F)
            dec_fail(L, d, d->p, "unexpected character '%c'", *d->p);
        dec_fail(L, d, d->p, "unexpected byte 0x%02x", (unsigned char)*d->p);
    }
}

/* Protected body of json_push: [ud] -> [value]. */
static int decode_protected(lua_State *L)
{
    struct jdec *d = lua_touserdata(L, 1);
    codec_push_marks(L); /* [ud, amt, omt] */
    d->amt = 2;
    d->omt = 3;
    parse_value(L, d);
    skip_ws(d);
    if (d->p < d->end)
        dec_fail(L, d, d->p, "unexpected characters after the value");
    return 1;
}

int json_push(lua_State *L, const char *s, size_t len,
              const struct codec_limits *lim, char *err, size_t errlen)
{
    struct jdec d;
    memset(&d, 0, sizeof(d));
    codec_limits_resolve(lim, &d.lim);
    if (len > d.lim.max_size) {
        snprintf(err, errlen,
                 "line 1, column 1: input of %zu bytes is "
                 "larger than the limit of %zu",
                 len, d.lim.max_size);
        return CODEC_ELIMIT;
    }
    d.s = s;
    d.p = s;
    d.end = s + len;
    d.err = err;
    d.errlen = errlen;
    int rc = codec_pcall(L, decode_protected, &d, 0, 1, &d.code, err, errlen);
    free(d.scratch);
    return rc;
}

/* ---- copy ---------------------------------------------------------------- */

/* The table at src (absolute) copied, pushed. */
static void copy_table(lua_State *L, int src, int depth)
{
    if (depth > CODEC_MAX_DEPTH)
        luaL_error(L, "json_copy: nesting deeper than %d", CODEC_MAX_DEPTH);
    luaL_checkstack(L, 6, NULL);
    lua_Unsigned narr, n; /* without a pass over the entries (lraw.h) */
    lraw_sizes(L, src, &narr, &n);
    if (narr > (lua_Unsigned)INT_MAX || n - narr > (lua_Unsigned)INT_MAX)
        luaL_error(L, "json_copy: table too large");
    lua_createtable(L, (int)narr, n > narr ? (int)(n - narr) : 0);
    int dst = lua_gettop(L);
    if (lua_getmetatable(L, src))
        lua_setmetatable(L, dst);
    lua_pushnil(L);
    while (lua_next(L, src) != 0) { /* [dst, k, v] */
        if (lua_type(L, -1) == LUA_TTABLE) {
            copy_table(L, dst + 2, depth + 1);
            lua_replace(L, dst + 2);
        }
        lua_pushvalue(L, dst + 1);
        lua_insert(L, dst + 2); /* [dst, k, k, v] */
        lua_rawset(L, dst);     /* [dst, k] */
    }
}

void json_copy(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE)
        copy_table(L, idx, 1);
    else
        lua_pushvalue(L, idx);
}

/* ---- encoder ------------------------------------------------------------- */

struct jenc {
    struct codec_out o;    /* staged output (see codec.h) */
    const void *amt, *omt; /* the markers' addresses (codec_kind_ptr) */
    int depth;
    struct codec_keys keys; /* malloc-owned, freed by the outer function */
    int code;
    char *err;
    size_t errlen;
    int raw;    /* try the raw walk (cleared for the second try) */
    int in_raw; /* the raw walk is running: a failure means "try again" */
};

__attribute__((noreturn)) static void enc_out_fail(lua_State *L, struct jenc *e,
                                                   int rc)
{
    if (rc == DBUF_TOOBIG)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_ETOOBIG,
                   "output larger than %zu bytes", e->o.out->max);
    codec_fail(L, &e->code, e->err, e->errlen, CODEC_ENOMEM,
               "not enough memory");
}

static void put(lua_State *L, struct jenc *e, const char *s, size_t n)
{
    int rc = codec_out_put(&e->o, s, n);
    if (rc != DBUF_OK)
        enc_out_fail(L, e, rc);
}

static void putc_(lua_State *L, struct jenc *e, char c)
{
    int rc = codec_out_putc(&e->o, c);
    if (rc != DBUF_OK)
        enc_out_fail(L, e, rc);
}

/* Nonzero when one of the 8 bytes of w is below 0x20 or from 0x80, or is
 * '"' or '\\'. A byte below 0x20 borrows into its high bit in w - 0x20..,
 * a '"' or '\\' is a zero byte of w ^ '"'.. or w ^ '\\'.. (the classic
 * haszero; a borrow can only mark a byte above one that matched, so the
 * test of the word is exact), and a byte from 0x80 has its high bit set. */
static inline uint64_t special8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101u, high = ones << 7;
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    return (((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b) |
            w) &
           high;
}

/* Whether s is printable ASCII without '"' and '\\' (most keys and
 * values): valid UTF-8 that JSON takes as it is. Eight bytes at a time,
 * the last eight overlapping (or a short string padded with 'a'). */
static int is_plain(const char *s, size_t n)
{
    uint64_t w;
    if (n < 8) {
        w = 0x6161616161616161u;
        memcpy(&w, s, n);
        return special8(w) == 0;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        if (special8(w))
            return 0;
    }
    if (i < n) {
        memcpy(&w, s + n - 8, 8);
        if (special8(w))
            return 0;
    }
    return 1;
}

/* Index of the first byte of s[i..n) below 0x20 or '"' or '\\' (n if
 * none): bytes from 0x80 are valid UTF-8 here, taken as they are. */
static size_t next_escape(const char *s, size_t i, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, high = ones << 7;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, b;
        memcpy(&w, s + i, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        if ((((w - ones * 0x20) | (q - ones) | (b - ones)) & ~w) & high)
            break;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\')
            return i;
    }
    return n;
}

/*
 * s (valid UTF-8) as a JSON string, escaped exactly as text_json_quote
 * escapes it (test_codec compares them), in runs through the stage:
 * config files and scripts rendered into ConfigMaps have a newline every
 * few dozen bytes.
 */
static void put_quoted(lua_State *L, struct jenc *e, const char *s, size_t n)
{
    putc_(L, e, '"');
    size_t i = 0;
    while (i < n) {
        size_t j = next_escape(s, i, n);
        put(L, e, s + i, j - i);
        if (j == n)
            break;
        unsigned char c = (unsigned char)s[j];
        char esc[6];
        size_t elen = text_json_escape(c, esc);
        put(L, e, esc, elen);
        i = j + 1;
    }
    putc_(L, e, '"');
}

/* Loads s (n <= 16 bytes) as the two words is_plain checks: the first
 * eight bytes (a shorter string padded with 'a') and the last eight (the
 * first again when n <= 8). Copies of constant size: no call. */
static inline void load16(const char *s, size_t n, uint64_t *w1, uint64_t *w2)
{
    uint64_t w = 0x6161616161616161u;
    char *b = (char *)&w;
    if (n >= 8) {
        memcpy(w1, s, 8);
        memcpy(w2, s + n - 8, 8);
        return;
    }
    if (n >= 4) {
        memcpy(b, s, 4);
        memcpy(b + n - 4, s + n - 4, 4);
    } else if (n > 0) {
        b[0] = s[0];
        b[n / 2] = s[n / 2];
        b[n - 1] = s[n - 1];
    }
    *w1 = *w2 = w;
}

static void put_string(lua_State *L, struct jenc *e, const char *s, size_t n)
{
    struct codec_out *o = &e->o;
    /* A short string (most keys and values): checked and staged as two
     * words, the quote after it written over the padding. */
    if (n <= 16 && o->room - o->len >= 18) {
        uint64_t w1, w2;
        load16(s, n, &w1, &w2);
        if ((special8(w1) | special8(w2)) == 0) {
            char *p = o->buf + o->len;
            p[0] = '"';
            memcpy(p + 1, &w1, 8);
            if (n > 8)
                memcpy(p + 1 + n - 8, &w2, 8);
            p[n + 1] = '"';
            o->len += n + 2;
            return;
        }
    }
    if (is_plain(s, n)) { /* one scan instead of checking, then quoting */
        if (n + 2 <= o->room - o->len) {
            char *p = o->buf + o->len;
            p[0] = '"';
            memcpy(p + 1, s, n);
            p[n + 1] = '"';
            o->len += n + 2;
            return;
        }
        putc_(L, e, '"');
        put(L, e, s, n);
        putc_(L, e, '"');
        return;
    }
    size_t bad = text_utf8_check(s, n);
    if (bad != n)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                   "invalid UTF-8 in string at byte %zu", bad + 1);
    put_quoted(L, e, s, n);
}

static void encode_value(lua_State *L, struct jenc *e, int idx);

static void encode_table(lua_State *L, struct jenc *e, int idx)
{
    size_t n, base = e->keys.len;
    if (++e->depth > CODEC_MAX_DEPTH)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                   "nesting deeper than %d (a cycle?)", CODEC_MAX_DEPTH);
    int top = lua_gettop(L);
    int kind = codec_table_entries(L, idx, e->amt, e->omt, &e->keys, &n, e->err,
                                   e->errlen);
    if (kind < 0)
        codec_raise(L, &e->code, kind);
    if (kind == CODEC_ARRAY) {
        putc_(L, e, '[');
        for (size_t i = 1; i <= n; i++) {
            if (i > 1)
                putc_(L, e, ',');
            lua_rawgeti(L, idx, (lua_Integer)i);
            encode_value(L, e, lua_gettop(L));
            lua_pop(L, 1);
        }
        putc_(L, e, ']');
    } else {
        putc_(L, e, '{');
        for (size_t i = 0; i < n; i++) {
            /* Re-read: nested tables may grow (move) the vector. */
            struct codec_key k = e->keys.v[base + i];
            if (i > 0)
                putc_(L, e, ',');
            put_string(L, e, k.s, k.len);
            putc_(L, e, ':');
            encode_value(L, e, k.idx + 1);
        }
        putc_(L, e, '}');
    }
    e->keys.len = base;
    lua_settop(L, top);
    e->depth--;
}

static void encode_value(lua_State *L, struct jenc *e, int idx)
{
    char num[40];
    size_t n;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        put(L, e, "null", 4);
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            put(L, e, "true", 4);
        else
            put(L, e, "false", 5);
        return;
    case LUA_TNUMBER:
        n = codec_fmt_number(L, idx, num);
        if (n == 0)
            codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                       "cannot encode NaN or infinity");
        put(L, e, num, n);
        return;
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &n);
        put_string(L, e, s, n);
        return;
    }
    case LUA_TLIGHTUSERDATA:
        if (codec_is_null(L, idx)) {
            put(L, e, "null", 4);
            return;
        }
        break;
    case LUA_TTABLE:
        encode_table(L, e, idx);
        return;
    default:
        break;
    }
    codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
               "cannot encode a %s", luaL_typename(L, idx));
}

/*
 * The raw walk: encode_table and encode_value again, reading the tables
 * through lraw.h's views instead of lua_next (which finds the key it
 * stopped at by a hash lookup for every entry, and pushes and pops key
 * and value): the objects a policy renders are most of an evaluation's
 * encoding. It writes exactly what the API walk writes, or gives up
 * (raw_giveup) on anything the API walk would refuse or that it does not
 * read the same way: a hole in an array, a key that is not a string, a
 * value of another type, a float that is not finite, invalid UTF-8,
 * depth. json_encode() then drops what it wrote and encodes the value
 * again through the API, which writes the same or fails with its own
 * message. Nothing here lets Lua run or allocate, so the views stay
 * valid; a raise is a longjmp to codec_pcall.
 */
__attribute__((noreturn)) static void raw_giveup(lua_State *L, struct jenc *e)
{
    codec_raise(L, &e->code, CODEC_EVALUE);
}

static void raw_value(lua_State *L, struct jenc *e, const struct rtvalue *v);

/* encode_table of h (codec_raw_entries). */
static void raw_table(lua_State *L, struct jenc *e, const struct rtable *h)
{
    size_t n, base = e->keys.len;
    if (++e->depth > CODEC_MAX_DEPTH)
        raw_giveup(L, e);
    int kind = codec_raw_entries(h, e->amt, e->omt, &e->keys, &n);
    if (kind < 0)
        raw_giveup(L, e);
    if (kind == CODEC_ARRAY) {
        putc_(L, e, '[');
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                putc_(L, e, ',');
            raw_value(L, e, &h->array[i]);
        }
        putc_(L, e, ']');
    } else {
        putc_(L, e, '{');
        for (size_t i = 0; i < n; i++) {
            /* Re-read: nested tables may grow (move) the vector. */
            struct codec_key k = e->keys.v[base + i];
            if (i > 0)
                putc_(L, e, ',');
            put_string(L, e, k.s, k.len);
            putc_(L, e, ':');
            raw_value(L, e, k.v);
        }
        putc_(L, e, '}');
    }
    e->keys.len = base;
    e->depth--;
}

static void raw_value(lua_State *L, struct jenc *e, const struct rtvalue *v)
{
    char num[40];
    size_t n;
    switch (v->tt_) {
    case LRAW_VFALSE:
        put(L, e, "false", 5);
        return;
    case LRAW_VTRUE:
        put(L, e, "true", 4);
        return;
    case LRAW_VNUMINT:
        n = codec_fmt_integer(v->value_.i, num);
        put(L, e, num, n);
        return;
    case LRAW_VNUMFLT:
        n = codec_fmt_float(v->value_.n, num);
        if (n == 0)
            raw_giveup(L, e);
        put(L, e, num, n);
        return;
    case LRAW_VSHRSTR | LRAW_CTB:
    case LRAW_VLNGSTR | LRAW_CTB: {
        const char *s = lraw_string(v, &n);
        put_string(L, e, s, n);
        return;
    }
    case LRAW_VLIGHTUSERDATA:
        if (v->value_.p != codec_null_ptr())
            raw_giveup(L, e);
        put(L, e, "null", 4);
        return;
    case LRAW_VTABLE | LRAW_CTB:
        raw_table(L, e, v->value_.gc);
        return;
    default:
        raw_giveup(L, e);
    }
}

/* Protected body of json_encode: [ud, value] -> []. */
static int encode_protected(lua_State *L)
{
    struct jenc *e = lua_touserdata(L, 1);
    codec_push_marks(L); /* [ud, value, amt, omt] */
    e->amt = lua_topointer(L, 3);
    e->omt = lua_topointer(L, 4);
    if (e->raw && lua_type(L, 2) == LUA_TTABLE && lraw_views(L)) {
        e->in_raw = 1;
        raw_table(L, e, lua_topointer(L, 2));
        e->in_raw = 0;
        lraw_count(0);
    } else {
        encode_value(L, e, 2);
    }
    int rc = codec_out_flush(&e->o);
    if (rc != DBUF_OK)
        enc_out_fail(L, e, rc);
    return 0;
}

int json_encode(lua_State *L, int idx, struct dbuf *out, char *err,
                size_t errlen)
{
    struct jenc e;
    codec_out_init(&e.o, out); /* the stage is not cleared: it is staged */
    e.amt = e.omt = NULL;
    e.depth = 0;
    memset(&e.keys, 0, sizeof(e.keys));
    e.code = CODEC_OK;
    e.err = err;
    e.errlen = errlen;
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 4)) {
        snprintf(err, errlen, "not enough memory");
        return CODEC_ENOMEM;
    }
    /* The raw walk, when the dbuf is not already failing (the API walk
     * would then fail at its first write). */
    size_t start = dbuf_len(out);
    e.raw = dbuf_error(out) == DBUF_OK;
    e.in_raw = 0;
    lua_pushvalue(L, idx);
    int rc = codec_pcall(L, encode_protected, &e, 1, 0, &e.code, err, errlen);
    if (rc != CODEC_OK && e.in_raw && dbuf_error(out) == DBUF_OK) {
        /* The raw walk gave up (or met what the API walk will report):
         * what it wrote goes, and the API walk starts over. A dbuf that
         * failed under it would have failed at the same byte under the
         * API walk, which writes the same bytes up to there. */
        codec_raw_rewind(&e.o, out, start, &e.keys);
        e.depth = 0;
        e.raw = e.in_raw = 0;
        lua_pushvalue(L, idx);
        rc = codec_pcall(L, encode_protected, &e, 1, 0, &e.code, err, errlen);
    }
    /* After a failure: the dbuf gets what it would have held unstaged
     * (a success flushed in encode_protected). */
    codec_out_flush(&e.o);
    codec_keys_free(&e.keys);
    return rc;
}

/* ---- cJSON ----------------------------------------------------------------
 */

struct cjdec {
    const cJSON *root;
    int amt, omt;
    int code;
    char *err;
    size_t errlen;
};

static void push_cjson(lua_State *L, struct cjdec *c, const cJSON *it,
                       int depth)
{
    if (depth > CODEC_MAX_DEPTH)
        codec_fail(L, &c->code, c->err, c->errlen, CODEC_ELIMIT,
                   "nesting deeper than %d", CODEC_MAX_DEPTH);
    if (!lua_checkstack(L, 6))
        codec_fail(L, &c->code, c->err, c->errlen, CODEC_ENOMEM,
                   "not enough memory");
    if (cJSON_IsFalse(it) || cJSON_IsTrue(it)) {
        lua_pushboolean(L, cJSON_IsTrue(it));
    } else if (cJSON_IsNull(it)) {
        codec_push_null(L);
    } else if (cJSON_IsNumber(it)) {
        double v = it->valuedouble;
        if (v == floor(v) && v >= -9223372036854775808.0 &&
            v < 9223372036854775808.0)
            lua_pushinteger(L, (lua_Integer)v);
        else
            lua_pushnumber(L, v);
    } else if (cJSON_IsString(it)) {
        const char *s = it->valuestring ? it->valuestring : "";
        size_t n = strlen(s);
        if (text_utf8_check(s, n) != n)
            codec_fail(L, &c->code, c->err, c->errlen, CODEC_EINPUT,
                       "invalid UTF-8 in string");
        lua_pushlstring(L, s, n);
    } else if (cJSON_IsArray(it)) {
        lua_createtable(L, cJSON_GetArraySize(it), 0);
        lua_pushvalue(L, c->amt);
        lua_setmetatable(L, -2);
        lua_Integer i = 1;
        for (const cJSON *ch = it->child; ch != NULL; ch = ch->next) {
            push_cjson(L, c, ch, depth + 1);
            lua_rawseti(L, -2, i++);
        }
    } else if (cJSON_IsObject(it)) {
        lua_createtable(L, 0, cJSON_GetArraySize(it));
        lua_pushvalue(L, c->omt);
        lua_setmetatable(L, -2);
        for (const cJSON *ch = it->child; ch != NULL; ch = ch->next) {
            lua_pushstring(L, ch->string ? ch->string : "");
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) != LUA_TNIL)
                codec_fail(L, &c->code, c->err, c->errlen, CODEC_EINPUT,
                           "duplicate key \"%.60s\"", ch->string);
            lua_pop(L, 1);
            push_cjson(L, c, ch, depth + 1);
            lua_rawset(L, -3);
        }
    } else {
        codec_fail(L, &c->code, c->err, c->errlen, CODEC_EINPUT,
                   "unsupported cJSON item type %d", it->type);
    }
}

static int push_cjson_protected(lua_State *L)
{
    struct cjdec *c = lua_touserdata(L, 1);
    codec_push_marks(L); /* [ud, amt, omt] */
    c->amt = 2;
    c->omt = 3;
    push_cjson(L, c, c->root, 1);
    return 1;
}

int json_push_cjson(lua_State *L, const cJSON *item, char *err, size_t errlen)
{
    struct cjdec c;
    memset(&c, 0, sizeof(c));
    c.root = item;
    c.err = err;
    c.errlen = errlen;
    if (item == NULL) {
        snprintf(err, errlen, "no cJSON item");
        return CODEC_EINPUT;
    }
    return codec_pcall(L, push_cjson_protected, &c, 0, 1, &c.code, err, errlen);
}

int json_to_cjson(lua_State *L, int idx, cJSON **out, char *err, size_t errlen)
{
    struct dbuf b;
    *out = NULL;
    dbuf_init(&b, CODEC_MAX_SIZE);
    int rc = json_encode(L, idx, &b, err, errlen);
    if (rc == CODEC_OK) {
        *out = jscan_cjson_parse(dbuf_ptr(&b), dbuf_len(&b));
        if (*out == NULL) {
            snprintf(err, errlen, "not enough memory");
            rc = CODEC_ENOMEM;
        }
    }
    dbuf_free(&b);
    return rc;
}
