/*
 * lyaml: libyaml events -> Lua values, and a deterministic block-style
 * emitter. See lyaml.h.
 *
 * Like ljson.c, the Lua work runs inside codec_pcall(); the libyaml parser,
 * its current event and the key vector belong to the context struct of
 * the unprotected outer function, which releases them on every path.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include <yaml.h>

#include "lraw.h"
#include "lyaml.h"
#include "text.h"

/* ---- plain scalar resolution (go-yaml v2 rules) --------------------------
 */

enum { R_STR, R_NULL, R_BOOL, R_INT, R_FLOAT };

struct resolved {
    int type;
    int b;
    lua_Integer i;
    double f;
};

static int is_word(const char *s, size_t n, const char *const *words)
{
    for (; *words != NULL; words++)
        if ((*words)[0] == s[0] && strlen(*words) == n &&
            memcmp(s, *words, n) == 0)
            return 1;
    return 0;
}

static const char *const null_words[] = {"~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"y",   "Y",    "yes",  "Yes",
                                         "YES", "true", "True", "TRUE",
                                         "on",  "On",   "ON",   NULL};
static const char *const false_words[] = {"n",   "N",     "no",    "No",
                                          "NO",  "false", "False", "FALSE",
                                          "off", "Off",   "OFF",   NULL};
static const char *const inf_words[] = {".inf",  ".Inf",  ".INF", "+.inf",
                                        "+.Inf", "+.INF", NULL};
static const char *const ninf_words[] = {"-.inf", "-.Inf", "-.INF", NULL};
static const char *const nan_words[] = {".nan", ".NaN", ".NAN", NULL};

/* Go's strconv.ParseInt(s, 0, 64) after underscores were removed. */
static int parse_int(const char *s, size_t n, lua_Integer *out)
{
    size_t i = 0;
    int neg = 0;
    unsigned base = 10;
    uint64_t v = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    if (i >= n)
        return 0;
    if (s[i] == '0' && i + 1 < n) {
        char p = s[i + 1];
        if (p == 'x' || p == 'X')
            base = 16, i += 2;
        else if (p == 'o' || p == 'O')
            base = 8, i += 2;
        else if (p == 'b' || p == 'B')
            base = 2, i += 2;
        else
            base = 8, i += 1;
        if (i >= n)
            return 0;
    }
    for (; i < n; i++) {
        unsigned dg;
        char c = s[i];
        if (c >= '0' && c <= '9')
            dg = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            dg = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            dg = (unsigned)(c - 'A' + 10);
        else
            return 0;
        if (dg >= base)
            return 0;
        if (v > (UINT64_MAX - dg) / base)
            return 0;
        v = v * base + dg;
    }
    if (!neg && v > (uint64_t)INT64_MAX)
        return 0;
    if (neg && v > (uint64_t)INT64_MAX + 1)
        return 0;
    *out = neg ? (lua_Integer)(0 - v) : (lua_Integer)v;
    return 1;
}

/* ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$ */
static int float_syntax(const char *s, size_t n)
{
    size_t i = 0, d;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    if (i < n && s[i] == '.') {
        i++;
        for (d = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++, d++)
            ;
        if (d == 0)
            return 0;
    } else {
        for (d = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++, d++)
            ;
        if (d == 0)
            return 0;
        if (i < n && s[i] == '.')
            for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
                ;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        for (d = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++, d++)
            ;
        if (d == 0)
            return 0;
    }
    return i == n;
}

static void resolve_plain(const char *s, size_t n, struct resolved *r)
{
    r->type = R_STR;
    if (n == 0 || (n <= 4 && is_word(s, n, null_words))) {
        r->type = R_NULL;
        return;
    }
    if (n <= 5 && is_word(s, n, true_words)) {
        r->type = R_BOOL;
        r->b = 1;
        return;
    }
    if (n <= 5 && is_word(s, n, false_words)) {
        r->type = R_BOOL;
        r->b = 0;
        return;
    }
    if (strchr("-+.0123456789", s[0]) == NULL || n > 256)
        return;
    if (is_word(s, n, inf_words) || is_word(s, n, ninf_words)) {
        r->type = R_FLOAT;
        r->f = s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
        return;
    }
    if (is_word(s, n, nan_words)) {
        r->type = R_FLOAT;
        r->f = NAN;
        return;
    }
    char buf[260];
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] != '_')
            buf[m++] = s[i];
    buf[m] = '\0';
    if (parse_int(buf, m, &r->i)) {
        r->type = R_INT;
        return;
    }
    if (float_syntax(buf, m)) {
        r->type = R_FLOAT;
        r->f = strtod(buf, NULL);
    }
}

static int ci_word(const char *s, size_t n, const char *w)
{
    char c0 = s[0] >= 'A' && s[0] <= 'Z' ? (char)(s[0] - 'A' + 'a') : s[0];
    if (c0 != w[0] || strlen(w) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != w[i])
            return 0;
    }
    return 1;
}

/* Code points that YAML treats as breaks or non-printable. */
static int special_cp(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9F) || cp == 0xFEFF || cp == 0x2028 ||
           cp == 0x2029 || cp == 0xFFFE || cp == 0xFFFF;
}

/* Bytes of a word the checks below always pass: letters, digits and
 * "_-./" (bit c of the pair, ASCII only). */
static const uint64_t word_bytes[2] = {0x03ffe00000000000u,
                                       0x07fffffe87fffffeu};

static int word_byte(unsigned char c)
{
    return c < 128 && (word_bytes[c >> 6] >> (c & 63) & 1);
}

/* Whether s (n <= 5 word bytes, a letter first) is, in any case, a YAML
 * word of the lists above that starts with a letter: null, true, false,
 * yes, no, on, off, y or n. */
static int letter_word(const char *s, size_t n)
{
    char w[5];
    for (size_t i = 0; i < n; i++) /* a letter folded, digits and _-./ kept */
        w[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] | 0x20 : s[i]);
    switch (n) {
    case 1:
        return w[0] == 'y' || w[0] == 'n';
    case 2:
        return memcmp(w, "no", 2) == 0 || memcmp(w, "on", 2) == 0;
    case 3:
        return memcmp(w, "yes", 3) == 0 || memcmp(w, "off", 3) == 0;
    case 4:
        return memcmp(w, "null", 4) == 0 || memcmp(w, "true", 4) == 0;
    default:
        return memcmp(w, "false", 5) == 0;
    }
}

int yaml_plain_safe(const char *s, size_t n)
{
    static const char *const ci_words[] = {
        "~", "null", "true",  "false", "yes",  "no", "on", "off", "y",
        "n", ".inf", "+.inf", "-.inf", ".nan", "<<", "=",  NULL};
    struct resolved r;
    if (n == 0)
        return 0;
    /* Most keys and values: starting with a letter, '_' or '/' (not a
     * number, an indicator or a space) and made of word bytes only (no
     * ": ", " #", trailing ':' or space, control or non-ASCII byte) are
     * plain, as the full checks find, unless they are a YAML word (none
     * is longer than 5 bytes; letter_word has those of such bytes). */
    unsigned char c0 = (unsigned char)s[0];
    if ((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z') || c0 == '_' ||
        c0 == '/') {
        size_t i = 1;
        while (i < n && word_byte((unsigned char)s[i]))
            i++;
        if (i == n) /* up to 5 such bytes: plain unless a YAML word */
            return n > 5 || c0 == '_' || c0 == '/' || !letter_word(s, n);
    }
    resolve_plain(s, n, &r);
    if (r.type != R_STR)
        return 0;
    for (const char *const *w = ci_words; n <= 5 && *w != NULL; w++)
        if (ci_word(s, n, *w)) /* none is longer than 5 */
            return 0;
    /* Number-like strings: YAML 1.1 sexagesimals ("1:30"), timestamps,
     * floats like "1.2.3" or "1e3" without a sign in the exponent. */
    int numlike = (s[0] >= '0' && s[0] <= '9') ||
                  (n > 1 && strchr("+-.", s[0]) != NULL &&
                   ((s[1] >= '0' && s[1] <= '9') || s[1] == '.'));
    if (numlike) {
        if (memchr(s, ':', n) != NULL)
            return 0;
        if (strspn(s, "0123456789._eE+-") >= n)
            return 0;
        if (n >= 5 && strspn(s, "0123456789") == 4 && s[4] == '-')
            return 0;
    }
    if (strchr("?:,[]{}#&*!|>'\"%@`", s[0]) != NULL)
        return 0;
    if (s[0] == '-' && (n == 1 || s[1] == ' '))
        return 0;
    if (n >= 3 && (memcmp(s, "---", 3) == 0 || memcmp(s, "...", 3) == 0))
        return 0;
    if (s[0] == ' ' || s[n - 1] == ' ' || s[n - 1] == ':')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F)
            return 0;
        if (c == ':' && i + 1 < n && s[i + 1] == ' ')
            return 0;
        if (c == ' ' && i + 1 < n && s[i + 1] == '#')
            return 0;
        if (c >= 0x80) {
            size_t k = text_utf8_seq(s + i, s + n);
            if (k == 0 || special_cp(text_utf8_decode(s + i, k)))
                return 0;
            i += k - 1;
        }
    }
    return 1;
}

/* ---- decoder ------------------------------------------------------------- */

struct ydec {
    const char *s;
    size_t len;
    yaml_parser_t parser;
    yaml_event_t ev;
    int have_ev;
    struct codec_limits lim;
    int amt, omt, anchors, counts; /* stack indices */
    int depth;
    size_t nodes, alias_nodes;
    int code;
    char *err;
    size_t errlen;
};

__attribute__((noreturn, format(printf, 5, 6))) static void
ydec_fail(lua_State *L, struct ydec *d, int rc, yaml_mark_t mark,
          const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    codec_fail(L, &d->code, d->err, d->errlen, rc, "line %zu, column %zu: %s",
               mark.line + 1, mark.column + 1, msg);
}

/* Position of byte offset `off` as a libyaml mark (for reader errors). */
static yaml_mark_t mark_of(const struct ydec *d, size_t off)
{
    yaml_mark_t m = {0, 0, 0};
    for (size_t i = 0; i < off && i < d->len; i++) {
        if (d->s[i] == '\n') {
            m.line++;
            m.column = 0;
        } else if (((unsigned char)d->s[i] & 0xC0) != 0x80) {
            m.column++;
        }
    }
    m.index = off;
    return m;
}

static void next_event(lua_State *L, struct ydec *d)
{
    if (d->have_ev) {
        yaml_event_delete(&d->ev);
        d->have_ev = 0;
    }
    if (yaml_parser_parse(&d->parser, &d->ev)) {
        d->have_ev = 1;
        return;
    }
    yaml_parser_t *p = &d->parser;
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_MEMORY_ERROR)
        codec_fail(L, &d->code, d->err, d->errlen, CODEC_ENOMEM,
                   "not enough memory");
    if (p->error == YAML_READER_ERROR)
        ydec_fail(L, d, CODEC_EINPUT, mark_of(d, p->problem_offset), "%s",
                  problem);
    if (p->context != NULL)
        ydec_fail(L, d, CODEC_EINPUT, p->problem_mark, "%s %s", problem,
                  p->context);
    ydec_fail(L, d, CODEC_EINPUT, p->problem_mark, "%s", problem);
}

static int tag_is(const yaml_char_t *tag, const char *name)
{
    return tag != NULL && strcmp((const char *)tag, name) == 0;
}

/* Pushes the value of the current scalar event. */
static void push_scalar(lua_State *L, struct ydec *d)
{
    const yaml_event_t *ev = &d->ev;
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const yaml_char_t *tag = ev->data.scalar.tag;
    int resolve = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (tag != NULL) {
        if (tag_is(tag, YAML_STR_TAG) || tag_is(tag, "!") ||
            tag_is(tag, "tag:yaml.org,2002:binary"))
            resolve = 0;
        else if (tag_is(tag, YAML_INT_TAG) || tag_is(tag, YAML_FLOAT_TAG) ||
                 tag_is(tag, YAML_BOOL_TAG) || tag_is(tag, YAML_NULL_TAG))
            resolve = 1;
    }
    struct resolved r = {R_STR, 0, 0, 0};
    if (resolve)
        resolve_plain(s, n, &r);
    switch (r.type) {
    case R_NULL:
        codec_push_null(L);
        break;
    case R_BOOL:
        lua_pushboolean(L, r.b);
        break;
    case R_INT:
        lua_pushinteger(L, r.i);
        break;
    case R_FLOAT:
        lua_pushnumber(L, r.f);
        break;
    default:
        lua_pushlstring(L, s, n);
    }
}

/* Records the value on top under the anchor name at stack index name_idx,
 * with the number of nodes it stands for. */
static void register_anchor(lua_State *L, struct ydec *d, int name_idx,
                            size_t count)
{
    lua_pushvalue(L, name_idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, d->anchors);
    lua_pushvalue(L, name_idx);
    lua_pushinteger(L, (lua_Integer)count);
    lua_rawset(L, d->counts);
}

/* Pushes a deep copy of the value at idx (tables keep their marker). */
static void copy_value(lua_State *L, struct ydec *d, int idx, int depth)
{
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return;
    }
    if (depth > d->lim.max_depth)
        ydec_fail(L, d, CODEC_ELIMIT, d->ev.start_mark,
                  "nesting deeper than %d", d->lim.max_depth);
    if (!lua_checkstack(L, 6))
        codec_fail(L, &d->code, d->err, d->errlen, CODEC_ENOMEM,
                   "not enough memory");
    lua_newtable(L);
    if (lua_getmetatable(L, idx))
        lua_setmetatable(L, -2);
    int dst = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* [dst, k, v] */
        copy_value(L, d, lua_gettop(L), depth + 1);
        lua_remove(L, -2);    /* [dst, k, v'] */
        lua_pushvalue(L, -2); /* [dst, k, v', k] */
        lua_insert(L, -2);    /* [dst, k, k, v'] */
        lua_rawset(L, dst);   /* [dst, k] */
    }
}

static void parse_node(lua_State *L, struct ydec *d);

/* Pushes the key of the current event as a string. */
static void push_key(lua_State *L, struct ydec *d)
{
    yaml_event_t *ev = &d->ev;
    if (ev->type == YAML_SCALAR_EVENT) {
        const char *s = (const char *)ev->data.scalar.value;
        size_t n = ev->data.scalar.length;
        if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && n == 2 &&
            memcmp(s, "<<", 2) == 0 && ev->data.scalar.tag == NULL)
            ydec_fail(L, d, CODEC_EINPUT, ev->start_mark,
                      "merge keys (<<) are not supported");
        lua_pushlstring(L, s, n);
        d->nodes++;
        if (ev->data.scalar.anchor != NULL) {
            lua_pushstring(L, (const char *)ev->data.scalar.anchor);
            lua_pushvalue(L, -2);
            register_anchor(L, d, -2, 1);
            lua_pop(L, 2);
        }
        return;
    }
    if (ev->type == YAML_ALIAS_EVENT) {
        lua_pushstring(L, (const char *)ev->data.alias.anchor);
        int t = lua_rawget(L, d->anchors);
        char num[40];
        if (t == LUA_TSTRING)
            return;
        if (t == LUA_TNUMBER) {
            size_t n = codec_fmt_number(L, -1, num);
            lua_pop(L, 1);
            lua_pushlstring(L, num, n);
            return;
        }
        if (t == LUA_TBOOLEAN) {
            int b = lua_toboolean(L, -1);
            lua_pop(L, 1);
            lua_pushstring(L, b ? "true" : "false");
            return;
        }
        if (t == LUA_TNIL)
            ydec_fail(L, d, CODEC_EINPUT, ev->start_mark,
                      "unknown anchor '%.60s'",
                      (const char *)ev->data.alias.anchor);
    }
    ydec_fail(L, d, CODEC_EINPUT, ev->start_mark,
              "mapping keys must be scalars");
}

static void parse_collection(lua_State *L, struct ydec *d, int is_map)
{
    yaml_event_t *ev = &d->ev;
    const yaml_char_t *anchor =
        is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    size_t nodes0 = d->nodes++;
    if (++d->depth > d->lim.max_depth)
        ydec_fail(L, d, CODEC_ELIMIT, ev->start_mark, "nesting deeper than %d",
                  d->lim.max_depth);
    if (!lua_checkstack(L, 8))
        codec_fail(L, &d->code, d->err, d->errlen, CODEC_ENOMEM,
                   "not enough memory");
    /* The event (and its anchor) dies with the next event: keep a copy. */
    if (anchor != NULL)
        lua_pushstring(L, (const char *)anchor);
    else
        lua_pushnil(L);
    int name = lua_gettop(L);
    lua_newtable(L);
    lua_pushvalue(L, is_map ? d->omt : d->amt);
    lua_setmetatable(L, -2); /* [name, t] */
    lua_Integer i = 1;
    for (;;) {
        next_event(L, d);
        if (ev->type == YAML_SEQUENCE_END_EVENT ||
            ev->type == YAML_MAPPING_END_EVENT)
            break;
        if (!is_map) {
            parse_node(L, d);
            lua_rawseti(L, -2, i++);
            continue;
        }
        yaml_mark_t kmark = ev->start_mark;
        push_key(L, d); /* [name, t, key] */
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) != LUA_TNIL)
            ydec_fail(L, d, CODEC_EINPUT, kmark, "duplicate key \"%.60s\"",
                      lua_tostring(L, -2));
        lua_pop(L, 1);
        next_event(L, d);
        parse_node(L, d); /* [name, t, key, value] */
        lua_rawset(L, -3);
    }
    d->depth--;
    if (anchor != NULL)
        register_anchor(L, d, name, d->nodes - nodes0);
    lua_remove(L, name); /* [t] */
}

/* Pushes the node that starts with the current event. */
static void parse_node(lua_State *L, struct ydec *d)
{
    yaml_event_t *ev = &d->ev;
    if (!lua_checkstack(L, 8))
        codec_fail(L, &d->code, d->err, d->errlen, CODEC_ENOMEM,
                   "not enough memory");
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        d->nodes++;
        push_scalar(L, d);
        if (ev->data.scalar.anchor != NULL) {
            lua_pushstring(L, (const char *)ev->data.scalar.anchor);
            lua_pushvalue(L, -2);
            register_anchor(L, d, -2, 1);
            lua_pop(L, 2);
        }
        return;
    case YAML_SEQUENCE_START_EVENT:
        parse_collection(L, d, 0);
        return;
    case YAML_MAPPING_START_EVENT:
        parse_collection(L, d, 1);
        return;
    case YAML_ALIAS_EVENT: {
        lua_pushstring(L, (const char *)ev->data.alias.anchor);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, d->counts) == LUA_TNIL)
            ydec_fail(L, d, CODEC_EINPUT, ev->start_mark,
                      "unknown anchor '%.60s'",
                      (const char *)ev->data.alias.anchor);
        size_t count = (size_t)lua_tointeger(L, -1);
        lua_pop(L, 1); /* [name] */
        d->alias_nodes += count;
        d->nodes += count;
        if (d->alias_nodes > d->lim.max_alias_nodes)
            ydec_fail(L, d, CODEC_ELIMIT, ev->start_mark,
                      "aliases expand to more than %zu nodes",
                      d->lim.max_alias_nodes);
        lua_rawget(L, d->anchors); /* [value] */
        copy_value(L, d, lua_gettop(L), d->depth + 1);
        lua_remove(L, -2);
        return;
    }
    default:
        ydec_fail(L, d, CODEC_EINPUT, ev->start_mark, "unexpected event");
    }
}

/* Protected body of yaml_push_all: [ud] -> [docs]. */
static int decode_protected(lua_State *L)
{
    struct ydec *d = lua_touserdata(L, 1);
    codec_push_marks(L); /* [ud, amt, omt] */
    d->amt = 2;
    d->omt = 3;
    lua_newtable(L);
    lua_pushvalue(L, d->amt);
    lua_setmetatable(L, -2); /* [ud, amt, omt, docs] */
    lua_newtable(L);
    lua_newtable(L); /* [ud, amt, omt, docs, anchors, counts] */
    d->anchors = 5;
    d->counts = 6;
    next_event(L, d); /* stream start */
    lua_Integer n = 0;
    for (;;) {
        next_event(L, d);
        if (d->ev.type == YAML_STREAM_END_EVENT)
            break;
        /* Anchors are scoped to their document. */
        lua_newtable(L);
        lua_replace(L, d->anchors);
        lua_newtable(L);
        lua_replace(L, d->counts);
        next_event(L, d);
        parse_node(L, d);
        lua_rawseti(L, 4, ++n);
        next_event(L, d); /* document end */
    }
    lua_settop(L, 4);
    return 1;
}

int yaml_push_all(lua_State *L, const char *s, size_t len,
                  const struct codec_limits *lim, char *err, size_t errlen)
{
    struct ydec d;
    memset(&d, 0, sizeof(d));
    codec_limits_resolve(lim, &d.lim);
    if (len > d.lim.max_size) {
        snprintf(err, errlen,
                 "line 1, column 1: input of %zu bytes is "
                 "larger than the limit of %zu",
                 len, d.lim.max_size);
        return CODEC_ELIMIT;
    }
    if (!yaml_parser_initialize(&d.parser)) {
        snprintf(err, errlen, "not enough memory");
        return CODEC_ENOMEM;
    }
    yaml_parser_set_input_string(&d.parser, (const unsigned char *)s, len);
    d.s = s;
    d.len = len;
    d.err = err;
    d.errlen = errlen;
    int rc = codec_pcall(L, decode_protected, &d, 0, 1, &d.code, err, errlen);
    if (d.have_ev)
        yaml_event_delete(&d.ev);
    yaml_parser_delete(&d.parser);
    return rc;
}

/* ---- encoder ------------------------------------------------------------- */

enum { AT_TOP, AT_KEY, AT_ITEM };

struct yenc {
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

__attribute__((noreturn)) static void yput_fail(lua_State *L, struct yenc *e,
                                                int rc)
{
    if (rc == DBUF_TOOBIG)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_ETOOBIG,
                   "output larger than %zu bytes", e->o.out->max);
    codec_fail(L, &e->code, e->err, e->errlen, CODEC_ENOMEM,
               "not enough memory");
}

static void yput(lua_State *L, struct yenc *e, const char *s, size_t n)
{
    int rc = codec_out_put(&e->o, s, n);
    if (rc != DBUF_OK)
        yput_fail(L, e, rc);
}

static void yputs(lua_State *L, struct yenc *e, const char *s)
{
    yput(L, e, s, strlen(s));
}

static void yindent(lua_State *L, struct yenc *e, int col)
{
    static const char spaces[] = "                                ";
    while (col > 0) {
        int k = col < 32 ? col : 32;
        yput(L, e, spaces, (size_t)k);
        col -= k;
    }
}

static void put_double_quoted(lua_State *L, struct yenc *e, const char *s,
                              size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0;
    yput(L, e, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[16];
        size_t elen = 2;
        if (c >= 0x80) {
            size_t k = text_utf8_seq(s + i, s + n); /* valid: checked */
            uint32_t cp = text_utf8_decode(s + i, k);
            if (!special_cp(cp)) {
                i += k - 1;
                continue;
            }
            if (cp <= 0xFF)
                snprintf(esc, sizeof(esc), "\\x%c%c", hex[cp >> 4],
                         hex[cp & 15]);
            else
                snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)(cp & 0xFFFF));
            yput(L, e, s + run, i - run);
            yputs(L, e, esc);
            i += k - 1;
            run = i + 1;
            continue;
        }
        if (c >= 0x20 && c != 0x7F && c != '"' && c != '\\')
            continue;
        esc[0] = '\\';
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case 0:
            esc[1] = '0';
            break;
        default:
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            elen = 4;
        }
        yput(L, e, s + run, i - run);
        yput(L, e, esc, elen);
        run = i + 1;
    }
    yput(L, e, s + run, n - run);
    yput(L, e, "\"", 1);
}

/* A literal block reads back exactly when the string has a line break,
 * no other control character, and no leading space or break, trailing
 * space, or space before a break (as libyaml's emitter decides). */
static int literal_ok(const char *s, size_t n)
{
    if (n == 0 || memchr(s, '\n', n) == NULL)
        return 0;
    if (s[0] == ' ' || s[0] == '\n' || s[0] == '\t')
        return 0;
    size_t end = n;
    while (end > 0 && s[end - 1] == '\n')
        end--;
    if (end == 0 || s[end - 1] == ' ' || s[end - 1] == '\t')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F)
            return 0;
        if ((c == ' ' || c == '\t') && i + 1 < n && s[i + 1] == '\n')
            return 0;
        if (c >= 0x80) {
            size_t k = text_utf8_seq(s + i, s + n); /* valid: checked */
            if (special_cp(text_utf8_decode(s + i, k)))
                return 0;
            i += k - 1;
        }
    }
    return 1;
}

/* Writes a literal block: header, then each line at column `col`. */
static void put_literal(lua_State *L, struct yenc *e, const char *s, size_t n,
                        int col)
{
    size_t trail = 0;
    while (trail < n && s[n - 1 - trail] == '\n')
        trail++;
    yputs(L, e, trail == 0 ? "|-\n" : trail == 1 ? "|\n" : "|+\n");
    size_t i = 0, body = n - trail;
    while (i < body) {
        const char *nl = memchr(s + i, '\n', body - i);
        size_t end = nl ? (size_t)(nl - s) : body;
        if (end > i) {
            yindent(L, e, col);
            yput(L, e, s + i, end - i);
        }
        yput(L, e, "\n", 1);
        i = end + 1;
    }
    for (size_t k = 1; k < trail; k++)
        yput(L, e, "\n", 1);
}

static void check_utf8(lua_State *L, struct yenc *e, const char *s, size_t n)
{
    size_t bad = text_utf8_check(s, n);
    if (bad != n)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                   "invalid UTF-8 in string at byte %zu", bad + 1);
}

/* The characters put_double_quoted writes for s[0..n) (valid UTF-8),
 * quotes included. */
static size_t quoted_chars(const char *s, size_t n)
{
    size_t chars = 2;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t k = text_utf8_seq(s + i, s + n);
            uint32_t cp = text_utf8_decode(s + i, k);
            chars += !special_cp(cp) ? 1 : cp <= 0xFF ? 4 : 6;
            i += k - 1;
        } else if (c >= 0x20 && c != 0x7F && c != '"' && c != '\\') {
            chars++;
        } else {
            chars += c == '"' || c == '\\' || c == '\n' || c == '\t' ||
                             c == '\r' || c == 0
                         ? 2
                         : 4;
        }
    }
    return chars;
}

/* A key is written as an implicit (simple) key, which YAML limits to 1024
 * characters as written: libyaml refuses a longer one when it reads it
 * back ("mapping values are not allowed"), so it is refused here. */
static void put_key(lua_State *L, struct yenc *e, const char *s, size_t n)
{
    check_utf8(L, e, s, n);
    if (n > 1024)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                   "mapping key longer than 1024 bytes");
    if (yaml_plain_safe(s, n)) {
        yput(L, e, s, n);
    } else {
        if (quoted_chars(s, n) > 1024)
            codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                       "mapping key longer than 1024 characters once quoted");
        put_double_quoted(L, e, s, n);
    }
    yput(L, e, ":", 1);
}

static void emit_node(lua_State *L, struct yenc *e, int idx, int col, int at);

static void emit_table(lua_State *L, struct yenc *e, int idx, int col, int at)
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
    if (n == 0) {
        yputs(L, e, at == AT_KEY ? " " : "");
        yputs(L, e, kind == CODEC_ARRAY ? "[]\n" : "{}\n");
    } else if (kind == CODEC_ARRAY) {
        /* Under a key, dashes sit at the key's column (kubectl style). */
        int dash = at == AT_ITEM ? col + 2 : col;
        if (at == AT_KEY)
            yput(L, e, "\n", 1);
        for (size_t i = 1; i <= n; i++) {
            if (i > 1 || at != AT_ITEM)
                yindent(L, e, dash);
            yput(L, e, "- ", 2);
            lua_rawgeti(L, idx, (lua_Integer)i);
            emit_node(L, e, lua_gettop(L), dash, AT_ITEM);
            lua_pop(L, 1);
        }
    } else {
        int kcol = at == AT_TOP ? 0 : col + 2;
        if (at == AT_KEY)
            yput(L, e, "\n", 1);
        for (size_t i = 0; i < n; i++) {
            struct codec_key k = e->keys.v[base + i];
            if (i > 0 || at != AT_ITEM)
                yindent(L, e, kcol);
            put_key(L, e, k.s, k.len);
            emit_node(L, e, k.idx + 1, kcol, AT_KEY);
        }
    }
    e->keys.len = base;
    lua_settop(L, top);
    e->depth--;
}

/* Emits the string s as a value and ends its line (emit_node). */
static void emit_string(lua_State *L, struct yenc *e, const char *s, size_t n,
                        int col, int at)
{
    check_utf8(L, e, s, n);
    yputs(L, e, at == AT_KEY ? " " : "");
    if (yaml_plain_safe(s, n)) {
        yput(L, e, s, n);
        yput(L, e, "\n", 1);
    } else if (literal_ok(s, n)) {
        put_literal(L, e, s, n, at == AT_TOP ? 2 : col + 2);
    } else {
        put_double_quoted(L, e, s, n);
        yput(L, e, "\n", 1);
    }
}

/* Emits a scalar written as it is (a number, true, false, null). */
static void emit_word(lua_State *L, struct yenc *e, const char *w, size_t n,
                      int at)
{
    if (at == AT_KEY)
        yput(L, e, " ", 1);
    yput(L, e, w, n);
    yput(L, e, "\n", 1);
}

/* Emits the value at idx and ends its line. `col` is the column of the
 * key (AT_KEY) or of the dash (AT_ITEM) that introduces it. */
static void emit_node(lua_State *L, struct yenc *e, int idx, int col, int at)
{
    char num[40];
    size_t n;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        emit_word(L, e, "null", 4, at);
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            emit_word(L, e, "true", 4, at);
        else
            emit_word(L, e, "false", 5, at);
        return;
    case LUA_TNUMBER:
        n = codec_fmt_number(L, idx, num);
        if (n == 0)
            codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                       "cannot encode NaN or infinity");
        emit_word(L, e, num, n, at);
        return;
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &n);
        emit_string(L, e, s, n, col, at);
        return;
    }
    case LUA_TLIGHTUSERDATA:
        if (codec_is_null(L, idx)) {
            emit_word(L, e, "null", 4, at);
            return;
        }
        break;
    case LUA_TTABLE:
        emit_table(L, e, idx, col, at);
        return;
    default:
        break;
    }
    codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
               "cannot encode a %s", luaL_typename(L, idx));
}

/*
 * The raw walk: emit_table and emit_node again, reading the tables
 * through lraw.h's views (codec_raw_entries), as json_encode does (see
 * ljson.c): it writes what the API walk writes, or gives up, and
 * encode() then drops what it wrote and runs the API walk.
 */
__attribute__((noreturn)) static void raw_giveup(lua_State *L, struct yenc *e)
{
    codec_raise(L, &e->code, CODEC_EVALUE);
}

static void raw_emit_node(lua_State *L, struct yenc *e, const struct rtvalue *v,
                          int col, int at);

static void raw_emit_table(lua_State *L, struct yenc *e, const struct rtable *h,
                           int col, int at)
{
    size_t n, base = e->keys.len;
    if (++e->depth > CODEC_MAX_DEPTH)
        raw_giveup(L, e);
    int kind = codec_raw_entries(h, e->amt, e->omt, &e->keys, &n);
    if (kind < 0)
        raw_giveup(L, e);
    if (n == 0) {
        yputs(L, e, at == AT_KEY ? " " : "");
        yputs(L, e, kind == CODEC_ARRAY ? "[]\n" : "{}\n");
    } else if (kind == CODEC_ARRAY) {
        int dash = at == AT_ITEM ? col + 2 : col;
        if (at == AT_KEY)
            yput(L, e, "\n", 1);
        for (size_t i = 0; i < n; i++) {
            if (i > 0 || at != AT_ITEM)
                yindent(L, e, dash);
            yput(L, e, "- ", 2);
            raw_emit_node(L, e, &h->array[i], dash, AT_ITEM);
        }
    } else {
        int kcol = at == AT_TOP ? 0 : col + 2;
        if (at == AT_KEY)
            yput(L, e, "\n", 1);
        for (size_t i = 0; i < n; i++) {
            /* Re-read: nested tables may grow (move) the vector. */
            struct codec_key k = e->keys.v[base + i];
            if (i > 0 || at != AT_ITEM)
                yindent(L, e, kcol);
            put_key(L, e, k.s, k.len);
            raw_emit_node(L, e, k.v, kcol, AT_KEY);
        }
    }
    e->keys.len = base;
    e->depth--;
}

static void raw_emit_node(lua_State *L, struct yenc *e, const struct rtvalue *v,
                          int col, int at)
{
    char num[40];
    size_t n;
    switch (v->tt_) {
    case LRAW_VFALSE:
        emit_word(L, e, "false", 5, at);
        return;
    case LRAW_VTRUE:
        emit_word(L, e, "true", 4, at);
        return;
    case LRAW_VNUMINT:
        n = codec_fmt_integer(v->value_.i, num);
        emit_word(L, e, num, n, at);
        return;
    case LRAW_VNUMFLT:
        n = codec_fmt_float(v->value_.n, num);
        if (n == 0)
            raw_giveup(L, e);
        emit_word(L, e, num, n, at);
        return;
    case LRAW_VSHRSTR | LRAW_CTB:
    case LRAW_VLNGSTR | LRAW_CTB: {
        const char *s = lraw_string(v, &n);
        emit_string(L, e, s, n, col, at);
        return;
    }
    case LRAW_VLIGHTUSERDATA:
        if (v->value_.p != codec_null_ptr())
            raw_giveup(L, e);
        emit_word(L, e, "null", 4, at);
        return;
    case LRAW_VTABLE | LRAW_CTB:
        raw_emit_table(L, e, v->value_.gc, col, at);
        return;
    default:
        raw_giveup(L, e);
    }
}

/* Protected body of yaml_encode(_all): [ud, value, all] -> []. */
static int encode_protected(lua_State *L)
{
    struct yenc *e = lua_touserdata(L, 1);
    int all = lua_toboolean(L, 3);
    codec_push_marks(L); /* [ud, value, all, amt, omt] */
    e->amt = lua_topointer(L, 4);
    e->omt = lua_topointer(L, 5);
    if (!all) {
        if (e->raw && lua_type(L, 2) == LUA_TTABLE && lraw_views(L)) {
            e->in_raw = 1;
            raw_emit_table(L, e, lua_topointer(L, 2), 0, AT_TOP);
            e->in_raw = 0;
            lraw_count(0);
        } else {
            emit_node(L, e, 2, 0, AT_TOP);
        }
        int rc = codec_out_flush(&e->o);
        if (rc != DBUF_OK)
            yput_fail(L, e, rc);
        return 0;
    }
    size_t n;
    if (lua_type(L, 2) != LUA_TTABLE)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                   "a list of documents is needed, got a %s",
                   luaL_typename(L, 2));
    if (e->raw && lraw_views(L)) {
        /* A list of documents, each emitted as by yaml_encode. */
        const struct rtable *h = lua_topointer(L, 2);
        e->in_raw = 1;
        if (codec_raw_entries(h, e->amt, e->omt, &e->keys, &n) != CODEC_ARRAY)
            raw_giveup(L, e);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                yput(L, e, "---\n", 4);
            raw_emit_node(L, e, &h->array[i], 0, AT_TOP);
        }
        e->in_raw = 0;
        lraw_count(0);
        int rc = codec_out_flush(&e->o);
        if (rc != DBUF_OK)
            yput_fail(L, e, rc);
        return 0;
    }
    int kind = codec_table_entries(L, 2, e->amt, e->omt, &e->keys, &n, e->err,
                                   e->errlen);
    if (kind < 0)
        codec_raise(L, &e->code, kind);
    if (kind != CODEC_ARRAY && n > 0)
        codec_fail(L, &e->code, e->err, e->errlen, CODEC_EVALUE,
                   "a list of documents is needed, got an object");
    if (kind != CODEC_ARRAY)
        return 0;
    for (size_t i = 1; i <= n; i++) {
        if (i > 1)
            yput(L, e, "---\n", 4);
        lua_rawgeti(L, 2, (lua_Integer)i);
        emit_node(L, e, lua_gettop(L), 0, AT_TOP);
        lua_pop(L, 1);
    }
    int rc = codec_out_flush(&e->o);
    if (rc != DBUF_OK)
        yput_fail(L, e, rc);
    return 0;
}

static int encode(lua_State *L, int idx, struct dbuf *out, int all, char *err,
                  size_t errlen)
{
    struct yenc e;
    codec_out_init(&e.o, out); /* the stage is not cleared: it is staged */
    e.amt = e.omt = NULL;
    e.depth = 0;
    memset(&e.keys, 0, sizeof(e.keys));
    e.code = CODEC_OK;
    e.err = err;
    e.errlen = errlen;
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 5)) {
        snprintf(err, errlen, "not enough memory");
        return CODEC_ENOMEM;
    }
    /* The raw walk, when the dbuf is not already failing (ljson.c's
     * json_encode has the same). */
    size_t start = dbuf_len(out);
    e.raw = dbuf_error(out) == DBUF_OK;
    e.in_raw = 0;
    lua_pushvalue(L, idx);
    lua_pushboolean(L, all);
    int rc = codec_pcall(L, encode_protected, &e, 2, 0, &e.code, err, errlen);
    if (rc != CODEC_OK && e.in_raw && dbuf_error(out) == DBUF_OK) {
        codec_raw_rewind(&e.o, out, start, &e.keys);
        e.depth = 0;
        e.raw = e.in_raw = 0;
        lua_pushvalue(L, idx);
        lua_pushboolean(L, all);
        rc = codec_pcall(L, encode_protected, &e, 2, 0, &e.code, err, errlen);
    }
    /* After a failure: the dbuf gets what it would have held unstaged
     * (a success flushed in encode_protected). */
    codec_out_flush(&e.o);
    codec_keys_free(&e.keys);
    return rc;
}

int yaml_encode(lua_State *L, int idx, struct dbuf *out, char *err,
                size_t errlen)
{
    return encode(L, idx, out, 0, err, errlen);
}

int yaml_encode_all(lua_State *L, int idx, struct dbuf *out, char *err,
                    size_t errlen)
{
    return encode(L, idx, out, 1, err, errlen);
}
