/* jscan: validating span scanner over JSON text; see jscan.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"
#include "text.h"

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static void seterr(char *err, size_t errlen, const char *base, const char *p,
                   const char *what)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s at byte %ld", what, (long)(p - base));
}

/* The bytes of x that are '"', '\\' or a control character (below 0x20)
 * get their high bit set, by the classic "has a zero byte" test on x itself
 * (bytes below 0x20) and on x with the quote and the backslash made zero.
 * Exact for "any", and for which byte comes first: a wrong bit can only
 * follow a right one (a borrow moves up, to the later bytes in memory on a
 * little-endian machine). */
static uint64_t special_bytes(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x)) &
           highs;
}

#if defined(__GNUC__) && defined(__BYTE_ORDER__) &&                            \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FIRST_SPECIAL(m) ((size_t)__builtin_ctzll(m) / 8)
#else
#define FIRST_SPECIAL(m) ((size_t)0) /* then byte by byte from there */
#endif

/* p at the opening quote; returns the position after the closing quote.
 * Plain bytes are passed 8 at a time, and a word holding a special byte
 * moves p to the first of them: the strings of Kubernetes objects (keys,
 * names, a ConfigMap's file, managedFields) are plain. */
static const char *skip_string(const char *p, const char *end,
                               const char **errat, const char **what)
{
    p++;
    while (p < end) {
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t m = special_bytes(x);
            if (m != 0) {
                p += FIRST_SPECIAL(m);
                break;
            }
            p += 8;
        }
        if (p >= end)
            break;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20) {
            *errat = p;
            *what = "control character in string";
            return NULL;
        }
        if (c == '\\') {
            if (p + 1 >= end)
                break;
            char e = p[1];
            if (e == 'u') {
                if (p + 6 > end)
                    break;
                for (int i = 2; i < 6; i++)
                    if (text_hexval((unsigned char)p[i]) < 0) {
                        *errat = p;
                        *what = "bad \\u escape";
                        return NULL;
                    }
                p += 6;
                continue;
            }
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0') {
                *errat = p;
                *what = "bad escape in string";
                return NULL;
            }
            p += 2;
            continue;
        }
        p++;
    }
    *errat = end;
    *what = "unterminated string";
    return NULL;
}

static const char *skip_number(const char *p, const char *end,
                               const char **errat, const char **what)
{
    const char *s = p;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        goto bad;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9')
            goto bad;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            goto bad;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    return p;
bad:
    *errat = s;
    *what = "bad number";
    return NULL;
}

/* Skips one value at p (no leading whitespace). Iterative over nesting. */
static const char *skip_value(const char *p, const char *end,
                              const char **errat, const char **what)
{
    char stack[JSCAN_MAX_DEPTH];
    int depth = 0;
    /* Top of the loop: a value is expected; after_value: ',' or a close;
     * member_key: a key and ':' (then a value). */
    for (;;) {
        p = ws(p, end);
        if (p >= end) {
            *errat = end;
            *what = "unexpected end of input";
            return NULL;
        }
        char c = *p;
        if (c == '{' || c == '[') {
            if (depth == JSCAN_MAX_DEPTH) {
                *errat = p;
                *what = "nesting too deep";
                return NULL;
            }
            stack[depth++] = c == '{' ? '}' : ']';
            p = ws(p + 1, end);
            if (p < end && *p == stack[depth - 1]) {
                p++;
                depth--;
                goto after_value;
            }
            if (c == '{')
                goto member_key;
            continue;
        }
        if (c == '"') {
            p = skip_string(p, end, errat, what);
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            p = skip_number(p, end, errat, what);
        } else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            p += 4;
        } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
            p += 5;
        } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            p += 4;
        } else {
            *errat = p;
            *what = "unexpected character";
            return NULL;
        }
        if (p == NULL)
            return NULL;
    after_value:
        if (depth == 0)
            return p;
        p = ws(p, end);
        if (p >= end) {
            *errat = end;
            *what = "unexpected end of input";
            return NULL;
        }
        if (*p == stack[depth - 1]) {
            p++;
            depth--;
            goto after_value;
        }
        if (*p != ',') {
            *errat = p;
            *what = "expected ',' or a closing bracket";
            return NULL;
        }
        p = ws(p + 1, end);
        if (stack[depth - 1] == ']')
            continue;
    member_key:
        if (p >= end || *p != '"') {
            *errat = p < end ? p : end;
            *what = "expected a string key";
            return NULL;
        }
        p = skip_string(p, end, errat, what);
        if (p == NULL)
            return NULL;
        p = ws(p, end);
        if (p >= end || *p != ':') {
            *errat = p < end ? p : end;
            *what = "expected ':'";
            return NULL;
        }
        p++;
    }
}

long jscan_skip(const char *s, size_t len, char *err, size_t errlen)
{
    const char *errat = s, *what = "error";
    const char *p = skip_value(ws(s, s + len), s + len, &errat, &what);
    if (p == NULL) {
        seterr(err, errlen, s, errat, what);
        return -1;
    }
    return (long)(p - s);
}

int jscan_whole(const char *s, size_t len, char *err, size_t errlen)
{
    long n = jscan_skip(s, len, err, errlen);
    if (n < 0)
        return -1;
    const char *p = ws(s + n, s + len);
    if (p != s + len) {
        seterr(err, errlen, s, p, "trailing characters");
        return -1;
    }
    return 0;
}

static int iter_begin(struct jscan_iter *it, const char *s, size_t len,
                      char open, char close)
{
    const char *p = ws(s, s + len);
    if (p >= s + len || *p != open)
        return -1;
    it->base = s;
    it->p = p + 1;
    it->end = s + len;
    it->first = 1;
    it->done = 0;
    it->close = close;
    return 0;
}

int jscan_object(struct jscan_iter *it, const char *s, size_t len)
{
    return iter_begin(it, s, len, '{', '}');
}

int jscan_array(struct jscan_iter *it, const char *s, size_t len)
{
    return iter_begin(it, s, len, '[', ']');
}

/* Moves past ',' or detects the close; returns 1 more, 0 end, -1 error. */
static int iter_sep(struct jscan_iter *it, char *err, size_t errlen)
{
    const char *p = ws(it->p, it->end);
    if (p < it->end && *p == it->close) {
        it->p = p + 1;
        it->done = 1;
        return 0;
    }
    if (!it->first) {
        if (p >= it->end || *p != ',') {
            seterr(err, errlen, it->base, p,
                   "expected ',' or a closing bracket");
            return -1;
        }
        p = ws(p + 1, it->end);
    }
    it->first = 0;
    it->p = p;
    if (p >= it->end) {
        seterr(err, errlen, it->base, p, "unexpected end of input");
        return -1;
    }
    return 1;
}

int jscan_next_member(struct jscan_iter *it, struct jscan_member *m, char *err,
                      size_t errlen)
{
    const char *errat = it->p, *what = "error";
    if (it->done)
        return 0;
    int rc = iter_sep(it, err, errlen);
    if (rc <= 0)
        return rc;
    const char *p = it->p;
    if (*p != '"') {
        seterr(err, errlen, it->base, p, "expected a string key");
        return -1;
    }
    m->start = p;
    const char *k = skip_string(p, it->end, &errat, &what);
    if (k == NULL)
        goto fail;
    m->key.p = p;
    m->key.len = (size_t)(k - p);
    p = ws(k, it->end);
    if (p >= it->end || *p != ':') {
        errat = p;
        what = "expected ':'";
        goto fail;
    }
    p = ws(p + 1, it->end);
    const char *v = skip_value(p, it->end, &errat, &what);
    if (v == NULL)
        goto fail;
    m->value.p = p;
    m->value.len = (size_t)(v - p);
    m->value_end = v;
    it->p = v;
    return 1;
fail:
    seterr(err, errlen, it->base, errat, what);
    return -1;
}

int jscan_next_element(struct jscan_iter *it, struct jscan_span *out, char *err,
                       size_t errlen)
{
    const char *errat = it->p, *what = "error";
    if (it->done)
        return 0;
    int rc = iter_sep(it, err, errlen);
    if (rc <= 0)
        return rc;
    const char *v = skip_value(it->p, it->end, &errat, &what);
    if (v == NULL) {
        seterr(err, errlen, it->base, errat, what);
        return -1;
    }
    out->p = it->p;
    out->len = (size_t)(v - it->p);
    it->p = v;
    return 1;
}

int jscan_is_string(struct jscan_span s)
{
    return s.len >= 2 && s.p[0] == '"';
}

/* Unescapes into out (room outlen, may be 0 with out NULL to measure).
 * Returns the length, or -1 when s is not a string, holds a bad escape
 * or does not fit. */
static long unescape(struct jscan_span s, char *out, size_t outlen)
{
    if (!jscan_is_string(s))
        return -1;
    const char *p = s.p + 1, *end = s.p + s.len - 1;
    size_t n = 0;
    while (p < end) {
        char tmp[4];
        const char *src = p;
        size_t k = 1, adv = 1;
        if (*p == '\\') {
            uint32_t cp;
            adv = text_json_unescape(p, end, &cp);
            if (adv == 0)
                return -1;
            k = text_utf8_encode(tmp, cp);
            src = tmp;
        }
        if (out != NULL) {
            if (n + k > outlen)
                return -1;
            memcpy(out + n, src, k);
        }
        n += k;
        p += adv;
    }
    return (long)n;
}

long jscan_str(struct jscan_span s, char *out, size_t outlen)
{
    if (outlen == 0)
        return -1;
    long n = unescape(s, out, outlen - 1);
    if (n < 0)
        return -1;
    out[n] = '\0';
    return n;
}

long jscan_str_len(struct jscan_span s)
{
    return unescape(s, NULL, 0);
}

int jscan_str_eq(struct jscan_span s, const char *lit)
{
    size_t n = strlen(lit);
    if (!jscan_is_string(s))
        return 0;
    if (memchr(s.p, '\\', s.len) == NULL)
        return s.len == n + 2 && memcmp(s.p + 1, lit, n) == 0;
    /* Unescaped into room for n bytes: a longer string does not fit (-1),
     * so it differs; a key over the stack buffer is rare (heap). */
    char stack[256];
    char *buf = n < sizeof(stack) ? stack : malloc(n + 1);
    if (buf == NULL)
        return 0;
    long k = jscan_str(s, buf, n + 1);
    int eq = k >= 0 && (size_t)k == n && memcmp(buf, lit, n) == 0;
    if (buf != stack)
        free(buf);
    return eq;
}

int jscan_find(struct jscan_span obj, const char *key, struct jscan_member *m,
               char *err, size_t errlen)
{
    struct jscan_iter it;
    if (jscan_object(&it, obj.p, obj.len) != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "not an object");
        return -1;
    }
    int rc;
    while ((rc = jscan_next_member(&it, m, err, errlen)) == 1)
        if (jscan_str_eq(m->key, key))
            return 1;
    return rc;
}

/* --- exact integers in cJSON trees ---------------------------------------- */

/* The text of the next number token at or after *p, skipping strings (keys
 * and values): tokens come in the order cJSON's tree holds numbers. */
static const char *next_number(const char **p, const char *end, size_t *len)
{
    const char *q = *p;
    while (q < end) {
        if (*q == '"') {
            for (q++; q < end && *q != '"'; q++)
                if (*q == '\\')
                    q++;
            q++;
        } else if (*q == '-' || (*q >= '0' && *q <= '9')) {
            const char *t = q;
            while (q < end && strchr("0123456789+-.eE", *q) != NULL)
                q++;
            *len = (size_t)(q - t);
            *p = q;
            return t;
        } else {
            q++;
        }
    }
    *p = q;
    return NULL;
}

/* Walks v in document order; returns 0, or -1 out of memory or when the
 * text and the tree disagree. */
static int exact_walk(cJSON *v, const char **p, const char *end)
{
    if (cJSON_IsNumber(v)) {
        size_t len = 0;
        const char *t = next_number(p, end, &len);
        if (t == NULL)
            return -1;
        char buf[64];
        if (!(v->valuedouble >= 9007199254740992.0 ||
              v->valuedouble <= -9007199254740992.0) ||
            len >= sizeof(buf) || memchr(t, '.', len) || memchr(t, 'e', len) ||
            memchr(t, 'E', len))
            return 0;
        memcpy(buf, t, len);
        buf[len] = '\0';
        /* Through cJSON's own allocator: cJSON_Delete frees it. */
        cJSON *raw = cJSON_CreateRaw(buf);
        if (raw == NULL)
            return -1;
        v->type = cJSON_Raw;
        v->valuestring = raw->valuestring;
        raw->valuestring = NULL;
        cJSON_Delete(raw);
        return 0;
    }
    for (cJSON *c = v->child; c != NULL; c = c->next)
        if (exact_walk(c, p, end) != 0)
            return -1;
    return 0;
}

cJSON *jscan_cjson_parse(const char *s, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(s, len);
    const char *p = s;
    if (root != NULL && exact_walk(root, &p, s + len) != 0) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}
