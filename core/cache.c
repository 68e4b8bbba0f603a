/* cache: the lean object cache of an informer; see cache.h. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "dbuf.h"
#include "jscan.h"
#include "text.h"

/*
 * One allocation per object: the header, then
 * namespace\0 name\0 rv\0 uid\0 labels (k\0v\0...k\0v\0)\0 json.
 * The json part is the compact text and a NUL, or, for an object stored
 * by a cache (cache_upsert), often the text encoded against the cache's
 * reference (struct ref): the objects of one informer are alike (the
 * children of a thousand DittoServers differ in names, uids, versions and
 * a few values), so each costs its differences, not its whole text.
 * Objects are immutable, so an update swaps pointers, and a subscriber (or
 * a reconcile) can keep a reference to the old version cheaply.
 */
struct ref;

struct cache_obj {
    uint32_t refs;
    uint32_t hash;
    uint32_t name_off;
    uint32_t rv_off;
    uint32_t uid_off;
    uint32_t labels_off;
    uint32_t json_off;
    uint32_t json_len; /* of the text */
    uint32_t enc_len;  /* of the encoding; 0: the text is stored as is */
    struct ref *ref;   /* the reference the encoding copies from, or NULL */
    char data[];
};

/*
 * A reference: the text of one object of the cache, kept (reference
 * counted: by the cache while it encodes against it, and by every object
 * encoded against it) with an index of its 8-byte substrings. An encoding
 * is a sequence of (literal length, literal bytes, copy length, copy
 * position) with unsigned LEB128 numbers; the last literal may end it
 * without a copy. Objects that the reference does not help (their encoding
 * would be more than half their text) are stored as text; when most of the
 * recent ones are, the next such object becomes the cache's new reference
 * (the objects encoded against the old one keep it alive).
 */
#define REF_GRAM 8         /* bytes hashed; also the shortest copy */
#define REF_MAX_TEXT 65536 /* larger objects are no reference */
#define REF_RETRY 16       /* upserts before a poor reference is replaced */

struct ref {
    uint32_t refs;
    uint32_t len;
    uint32_t mask; /* of idx: a power of two minus one */
    uint32_t *idx; /* position + 1 of an 8-gram by its hash; 0: none */
    char text[];
};

/* Open addressing with linear probing; deletions shift the following run
 * back instead of leaving tombstones, so lookups never slow down with
 * churn. The epoch marks which relist generation last saw the key. */
struct slot {
    struct cache_obj *o; /* NULL: empty */
    uint32_t epoch;      /* generation that last saw it (relists) */
};

struct sub {
    cache_notify_fn fn;
    void *arg;
};

struct cache {
    struct slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t len;
    size_t bytes; /* held by objects (and references, see cache_mem) */
    uint32_t epoch;
    struct ref *ref;        /* the reference new objects encode against */
    unsigned ref_tries;     /* encodings tried lately */
    unsigned ref_poor;      /* ... that it did not help */
    unsigned char *scratch; /* an encoding in the making */
    size_t scratch_cap;
    struct sub *subs;
    size_t nsubs;
};

static void seterr(char *err, size_t errlen, const char *fmt, const char *a)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, fmt, a);
}

/* FNV-1a over namespace, a NUL, and name. */
static uint32_t key_hash(const char *ns, const char *name)
{
    uint32_t h = text_fnv1a32(TEXT_FNV1A32_INIT, ns, strlen(ns) + 1);
    return text_fnv1a32(h, name, strlen(name));
}

/* --- references ------------------------------------------------------- */

/* The hash of the 8 bytes at p. */
static uint32_t gram_hash(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return (uint32_t)((v * 0x9E3779B97F4A7C15ull) >> 32);
}

/* A reference holding a copy of text (len bytes), one reference taken;
 * NULL when out of memory or the text is too short or too long. */
static struct ref *ref_new(const char *text, size_t len)
{
    if (len < REF_GRAM || len > REF_MAX_TEXT)
        return NULL;
    size_t n = 64;
    while (n < 2 * len)
        n *= 2;
    struct ref *r = malloc(sizeof(*r) + len + 1);
    uint32_t *idx = calloc(n, sizeof(*idx));
    if (r == NULL || idx == NULL) {
        free(r);
        free(idx);
        return NULL;
    }
    r->refs = 1;
    r->len = (uint32_t)len;
    r->mask = (uint32_t)(n - 1);
    r->idx = idx;
    memcpy(r->text, text, len);
    r->text[len] = '\0';
    /* From the end: the first occurrence of a repeated gram wins. */
    for (size_t i = len - REF_GRAM + 1; i-- > 0;)
        idx[gram_hash(text + i) & r->mask] = (uint32_t)i + 1;
    return r;
}

static void ref_unref(struct ref *r)
{
    if (r != NULL && --r->refs == 0) {
        free(r->idx);
        free(r);
    }
}

/* The cache stops encoding against r (may be NULL): its index goes now,
 * its text with the last object encoded against it. */
static void ref_retire(struct ref *r)
{
    if (r == NULL)
        return;
    free(r->idx);
    r->idx = NULL;
    ref_unref(r);
}

static size_t ref_size(const struct ref *r)
{
    if (r == NULL)
        return 0;
    return sizeof(*r) + r->len + 1 +
           (r->idx != NULL ? ((size_t)r->mask + 1) * sizeof(*r->idx) : 0);
}

/* Unsigned LEB128: at most 10 bytes for a size_t. */
#define NUM_MAX 10

static size_t put_num(unsigned char *p, size_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (unsigned char)v;
    return n;
}

static size_t get_num(const unsigned char **p)
{
    size_t v = 0;
    unsigned shift = 0;
    unsigned char b;
    do {
        b = *(*p)++;
        v |= (size_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    return v;
}

/* The length of the common prefix of a (an bytes) and b (bn bytes). */
static size_t common(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/*
 * Encodes s (n bytes) against r into out, at most cap bytes. Greedy: at
 * each position the longer of two candidates, the reference where the last
 * copy left off (shifted by the literal since: a same-length substitution,
 * such as one name for another) and the first occurrence of the next 8
 * bytes; a copy found also grows backwards into the pending literal.
 * Returns the encoding's length, or 0 when it does not fit in cap.
 */
static size_t encode(const struct ref *r, const char *s, size_t n,
                     unsigned char *out, size_t cap)
{
    size_t o = 0, i = 0, lit = 0, expect = 0;
    while (i + REF_GRAM <= n) {
        size_t bpos = 0, blen = 0;
        size_t e = expect + (i - lit);
        if (e < r->len)
            blen = common(s + i, n - i, r->text + e, r->len - e);
        if (blen >= REF_GRAM) {
            bpos = e;
        } else {
            blen = 0;
            uint32_t cand = r->idx[gram_hash(s + i) & r->mask];
            if (cand != 0) {
                size_t l = common(s + i, n - i, r->text + cand - 1,
                                  r->len - (cand - 1));
                if (l >= REF_GRAM) {
                    bpos = cand - 1;
                    blen = l;
                }
            }
        }
        if (blen == 0) {
            i++;
            continue;
        }
        while (i > lit && bpos > 0 && s[i - 1] == r->text[bpos - 1]) {
            i--;
            bpos--;
            blen++;
        }
        size_t ll = i - lit;
        if (o + ll + 3 * NUM_MAX > cap)
            return 0;
        o += put_num(out + o, ll);
        memcpy(out + o, s + lit, ll);
        o += ll;
        o += put_num(out + o, blen);
        o += put_num(out + o, bpos);
        i += blen;
        lit = i;
        expect = bpos + blen;
    }
    if (lit < n) {
        size_t ll = n - lit;
        if (o + ll + NUM_MAX > cap)
            return 0;
        o += put_num(out + o, ll);
        memcpy(out + o, s + lit, ll);
        o += ll;
    }
    return o;
}

/* Appends the text of an encoded object to out. */
static int decode(const struct cache_obj *o, struct dbuf *out)
{
    const unsigned char *p = (const unsigned char *)o->data + o->json_off;
    const unsigned char *end = p + o->enc_len;
    while (p < end) {
        size_t ll = get_num(&p);
        int rc = dbuf_add(out, p, ll);
        if (rc != DBUF_OK)
            return rc;
        p += ll;
        if (p >= end)
            break;
        size_t clen = get_num(&p);
        size_t cpos = get_num(&p);
        assert(cpos + clen <= o->ref->len);
        rc = dbuf_add(out, o->ref->text + cpos, clen);
        if (rc != DBUF_OK)
            return rc;
    }
    return DBUF_OK;
}

/*
 * The object c stores for o (whose reference it takes over): o itself
 * when it is encoded already, or its encoding does not pay, or memory is
 * short; otherwise a copy with the text encoded against c's reference
 * (made from o's text when c has none, or when most recent objects did
 * not encode well against the current one), and o is dropped.
 */
static struct cache_obj *compact(struct cache *c, struct cache_obj *o)
{
    /* Past 4 references' size, an object is stored as it is (and the
     * scratch buffer stays small). */
    if (o->ref != NULL || o->json_len > 4 * REF_MAX_TEXT)
        return o;
    const char *text = o->data + o->json_off;
    size_t cap = o->json_len / 2;
    if (c->scratch_cap < cap) {
        unsigned char *b = realloc(c->scratch, cap);
        if (b == NULL)
            return o;
        c->scratch = b;
        c->scratch_cap = cap;
    }
    size_t n =
        c->ref != NULL ? encode(c->ref, text, o->json_len, c->scratch, cap) : 0;
    c->ref_tries++;
    if (n == 0) {
        c->ref_poor++;
        if (c->ref != NULL &&
            (c->ref_tries < REF_RETRY || c->ref_poor * 2 <= c->ref_tries))
            return o;
        struct ref *r = ref_new(text, o->json_len);
        if (r == NULL)
            return o;
        ref_retire(c->ref);
        c->ref = r;
        c->ref_tries = c->ref_poor = 0;
        n = encode(c->ref, text, o->json_len, c->scratch, cap);
        if (n == 0)
            return o;
    }
    /* A window of recent upserts: old successes do not keep a reference
     * that stopped helping. */
    if (c->ref_tries >= 4 * REF_RETRY) {
        c->ref_tries /= 2;
        c->ref_poor /= 2;
    }
    struct cache_obj *e = malloc(sizeof(*e) + o->json_off + n);
    if (e == NULL)
        return o;
    memcpy(e, o, sizeof(*e) + o->json_off);
    memcpy(e->data + e->json_off, c->scratch, n);
    e->refs = 1;
    e->enc_len = (uint32_t)n;
    e->ref = c->ref;
    c->ref->refs++;
    cache_obj_unref(o);
    return e;
}

/* --- objects ----------------------------------------------------------- */

struct meta {
    struct jscan_span ns, name, rv, uid, labels;
    const char *cut_start; /* managedFields member (with a comma) */
    const char *cut_end;
};

/* CACHE_EINVAL with "duplicate member <where>.<key>" in err. */
static int duplicate(char *err, size_t errlen, const char *where,
                     struct jscan_span key)
{
    char k[64];
    if (jscan_str(key, k, sizeof(k)) < 0)
        snprintf(k, sizeof(k), "?");
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "duplicate member %s.%s", where, k);
    return CACHE_EINVAL;
}

/* Reads metadata of the object span; records the managedFields cut.
 * CACHE_EINVAL for a member it reads given twice. */
static int read_meta(struct jscan_span md, struct meta *m, char *err,
                     size_t errlen)
{
    struct jscan_iter it;
    struct jscan_member mb;
    const char *prev_end = NULL;
    int idx = 0, rc;
    int cut_first = 0;

    if (jscan_object(&it, md.p, md.len) != 0) {
        seterr(err, errlen, "%s", "metadata is not an object");
        return CACHE_EINVAL;
    }
    while ((rc = jscan_next_member(&it, &mb, err, errlen)) == 1) {
        if (cut_first) {
            /* managedFields was the first member: cut up to this key. */
            m->cut_end = mb.start;
            cut_first = 0;
        }
        /* A member read twice would make the cache and a parser that
         * takes the first one (cJSON) see different objects: refused, as
         * the policies' decoder refuses every duplicate key. */
        struct jscan_span *field = NULL;
        if (jscan_str_eq(mb.key, "name"))
            field = &m->name;
        else if (jscan_str_eq(mb.key, "namespace"))
            field = &m->ns;
        else if (jscan_str_eq(mb.key, "resourceVersion"))
            field = &m->rv;
        else if (jscan_str_eq(mb.key, "uid"))
            field = &m->uid;
        else if (jscan_str_eq(mb.key, "labels"))
            field = &m->labels;
        if (field != NULL) {
            if (field->p != NULL)
                return duplicate(err, errlen, "metadata", mb.key);
            *field = mb.value;
        } else if (jscan_str_eq(mb.key, "managedFields")) {
            if (m->cut_start != NULL)
                return duplicate(err, errlen, "metadata", mb.key);
            if (idx > 0) {
                m->cut_start = prev_end;
                m->cut_end = mb.value_end;
            } else {
                m->cut_start = mb.start;
                m->cut_end = mb.value_end;
                cut_first = 1;
            }
        }
        prev_end = mb.value_end;
        idx++;
    }
    return rc < 0 ? CACHE_EINVAL : CACHE_OK;
}

static long str_or_empty(struct jscan_span s)
{
    return jscan_is_string(s) ? jscan_str_len(s) : 0;
}

/* Writes the string s unescaped, with its NUL; sets *nul when it holds a
 * NUL of its own ("\u0000"), which a C string cannot keep (a name "\u0000a"
 * read as ""; a label key "\u0000" as the end of the labels). */
static char *put_str(char *p, struct jscan_span s, int *nul)
{
    long n = 0;
    if (jscan_is_string(s))
        n = jscan_str(s, p, (size_t)jscan_str_len(s) + 1);
    if (n > 0 && memchr(p, '\0', (size_t)n) != NULL)
        *nul = 1;
    p[n < 0 ? 0 : n] = '\0';
    return p + (n < 0 ? 0 : n) + 1;
}

/* A JSON string literal that needs no escaping. */
static int plain(const char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
            return 0;
    return 1;
}

int cache_obj_from_text(const char *json, size_t len, const char *api_version,
                        const char *kind, struct cache_obj **out, char *err,
                        size_t errlen)
{
    struct jscan_iter it;
    struct jscan_member mb;
    struct meta m;
    int have_av = 0, have_kind = 0, have_md = 0, rc;
    struct jscan_span item, md = {NULL, 0};

    *out = NULL;
    memset(&m, 0, sizeof(m));
    long end = jscan_skip(json, len, err, errlen);
    if (end < 0)
        return CACHE_EINVAL;
    for (size_t i = (size_t)end; i < len; i++) {
        if (json[i] != ' ' && json[i] != '\n' && json[i] != '\t' &&
            json[i] != '\r') {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "trailing characters at byte %zu", i);
            return CACHE_EINVAL;
        }
    }
    item.p = json;
    item.len = (size_t)end;
    while (item.len > 0 && (*item.p == ' ' || *item.p == '\n' ||
                            *item.p == '\t' || *item.p == '\r')) {
        item.p++;
        item.len--;
    }
    if (jscan_object(&it, item.p, item.len) != 0) {
        seterr(err, errlen, "%s", "not a JSON object");
        return CACHE_EINVAL;
    }
    while ((rc = jscan_next_member(&it, &mb, err, errlen)) == 1) {
        int *seen = jscan_str_eq(mb.key, "apiVersion") ? &have_av
                    : jscan_str_eq(mb.key, "kind")     ? &have_kind
                    : jscan_str_eq(mb.key, "metadata") ? &have_md
                                                       : NULL;
        if (seen == NULL)
            continue;
        if (*seen)
            return duplicate(err, errlen, "(object)", mb.key);
        *seen = 1;
        if (seen == &have_md)
            md = mb.value;
    }
    if (rc < 0)
        return CACHE_EINVAL;
    if (!have_md) {
        seterr(err, errlen, "%s", "object has no metadata");
        return CACHE_EINVAL;
    }
    rc = read_meta(md, &m, err, errlen);
    if (rc != CACHE_OK)
        return rc;
    if (!jscan_is_string(m.name) || jscan_str_len(m.name) <= 0) {
        seterr(err, errlen, "%s", "object has no metadata.name");
        return CACHE_EINVAL;
    }

    /* Labels: every value must be a string. */
    size_t labels_size = 1;
    if (m.labels.p != NULL && m.labels.len > 0 && *m.labels.p == '{') {
        struct jscan_iter li;
        struct jscan_member lm;
        jscan_object(&li, m.labels.p, m.labels.len);
        while ((rc = jscan_next_member(&li, &lm, err, errlen)) == 1) {
            if (!jscan_is_string(lm.value))
                continue;
            labels_size += (size_t)jscan_str_len(lm.key) + 1 +
                           (size_t)jscan_str_len(lm.value) + 1;
        }
    }

    char prefix[512];
    size_t plen = 0;
    prefix[0] = '\0';
    if (!have_av && api_version != NULL && plain(api_version) &&
        strlen(api_version) < 200)
        plen += (size_t)snprintf(prefix + plen, sizeof(prefix) - plen,
                                 "\"apiVersion\":\"%s\",", api_version);
    if (!have_kind && kind != NULL && plain(kind) && strlen(kind) < 200)
        plen += (size_t)snprintf(prefix + plen, sizeof(prefix) - plen,
                                 "\"kind\":\"%s\",", kind);
    size_t cut = m.cut_start ? (size_t)(m.cut_end - m.cut_start) : 0;
    size_t json_len = item.len - cut + plen;
    size_t sz = (size_t)str_or_empty(m.ns) + 1 + (size_t)jscan_str_len(m.name) +
                1 + (size_t)str_or_empty(m.rv) + 1 +
                (size_t)str_or_empty(m.uid) + 1 + labels_size + json_len + 1;
    if (json_len > UINT32_MAX / 2 || sz > UINT32_MAX / 2) {
        seterr(err, errlen, "%s", "object too large");
        return CACHE_EINVAL;
    }
    struct cache_obj *o = malloc(sizeof(*o) + sz);
    if (o == NULL)
        return CACHE_ENOMEM;
    o->refs = 1;
    o->enc_len = 0;
    o->ref = NULL;
    char *p = o->data;
    int nul = 0;
    p = put_str(p, m.ns, &nul);
    o->name_off = (uint32_t)(p - o->data);
    p = put_str(p, m.name, &nul);
    o->rv_off = (uint32_t)(p - o->data);
    p = put_str(p, m.rv, &nul);
    o->uid_off = (uint32_t)(p - o->data);
    p = put_str(p, m.uid, &nul);
    o->labels_off = (uint32_t)(p - o->data);
    if (labels_size > 1) {
        struct jscan_iter li;
        struct jscan_member lm;
        jscan_object(&li, m.labels.p, m.labels.len);
        while (jscan_next_member(&li, &lm, NULL, 0) == 1) {
            if (!jscan_is_string(lm.value))
                continue;
            p = put_str(p, lm.key, &nul);
            p = put_str(p, lm.value, &nul);
        }
    }
    if (nul) {
        free(o);
        seterr(err, errlen, "%s",
               "a NUL character in metadata (name, namespace, "
               "resourceVersion, uid or a label)");
        return CACHE_EINVAL;
    }
    *p++ = '\0';
    o->json_off = (uint32_t)(p - o->data);
    o->json_len = (uint32_t)json_len;
    /* The text: '{', the added members, then the rest minus the cut. */
    const char *src = item.p;
    const char *src_end = item.p + item.len;
    *p++ = *src++;
    memcpy(p, prefix, plen);
    p += plen;
    if (m.cut_start != NULL) {
        memcpy(p, src, (size_t)(m.cut_start - src));
        p += m.cut_start - src;
        src = m.cut_end;
    }
    memcpy(p, src, (size_t)(src_end - src));
    p += src_end - src;
    *p = '\0';
    o->hash = key_hash(o->data, o->data + o->name_off);
    *out = o;
    return CACHE_OK;
}

int cache_obj_from_json(const cJSON *item, struct cache_obj **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (!cJSON_IsObject(item)) {
        seterr(err, errlen, "%s", "not a JSON object");
        return CACHE_EINVAL;
    }
    char *text = cJSON_PrintUnformatted(item);
    if (text == NULL)
        return CACHE_ENOMEM;
    int rc =
        cache_obj_from_text(text, strlen(text), NULL, NULL, out, err, errlen);
    cJSON_free(text);
    return rc;
}

struct cache_obj *cache_obj_ref(struct cache_obj *o)
{
    o->refs++;
    return o;
}

void cache_obj_unref(struct cache_obj *o)
{
    if (o != NULL && --o->refs == 0) {
        ref_unref(o->ref);
        free(o);
    }
}

const char *cache_obj_namespace(const struct cache_obj *o)
{
    return o->data;
}

const char *cache_obj_name(const struct cache_obj *o)
{
    return o->data + o->name_off;
}

const char *cache_obj_rv(const struct cache_obj *o)
{
    return o->data + o->rv_off;
}

const char *cache_obj_uid(const struct cache_obj *o)
{
    return o->data + o->uid_off;
}

size_t cache_obj_json_len(const struct cache_obj *o)
{
    return o->json_len;
}

int cache_obj_json_append(const struct cache_obj *o, struct dbuf *out)
{
    if (o->enc_len == 0)
        return dbuf_add(out, o->data + o->json_off, o->json_len);
    return decode(o, out);
}

int cache_obj_label_next(const struct cache_obj *o, size_t *pos,
                         const char **key, const char **value)
{
    const char *p = o->data + o->labels_off + *pos;
    if (*p == '\0')
        return -1;
    *key = p;
    p += strlen(p) + 1;
    *value = p;
    p += strlen(p) + 1;
    *pos = (size_t)(p - (o->data + o->labels_off));
    return 0;
}

const char *cache_obj_label(const struct cache_obj *o, const char *key)
{
    size_t pos = 0;
    const char *k, *v;
    while (cache_obj_label_next(o, &pos, &k, &v) == 0)
        if (strcmp(k, key) == 0)
            return v;
    return NULL;
}

cJSON *cache_obj_parse(const struct cache_obj *o)
{
    if (o->enc_len == 0)
        return jscan_cjson_parse(o->data + o->json_off, o->json_len);
    struct dbuf b;
    dbuf_init(&b, (size_t)o->json_len + 1);
    cJSON *j = decode(o, &b) == DBUF_OK
                   ? jscan_cjson_parse(dbuf_ptr(&b), dbuf_len(&b))
                   : NULL;
    dbuf_free(&b);
    return j;
}

size_t cache_obj_size(const struct cache_obj *o)
{
    return sizeof(*o) + o->json_off +
           (o->enc_len != 0 ? o->enc_len : o->json_len + 1);
}

/* --- selectors --------------------------------------------------------- */

enum sel_op { SEL_EXISTS, SEL_NOT_EXISTS, SEL_EQ, SEL_NEQ, SEL_IN, SEL_NOTIN };

struct sel_req {
    enum sel_op op;
    char *key;
    char **vals;
    size_t nvals;
};

struct cache_selector {
    struct sel_req *reqs;
    size_t n;
};

void cache_selector_free(struct cache_selector *sel)
{
    if (sel == NULL)
        return;
    for (size_t i = 0; i < sel->n; i++) {
        free(sel->reqs[i].key);
        for (size_t j = 0; j < sel->reqs[i].nvals; j++)
            free(sel->reqs[i].vals[j]);
        free(sel->reqs[i].vals);
    }
    free(sel->reqs);
    free(sel);
}

static int word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
           c == '/';
}

static const char *skip_sp(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Reads a word (possibly empty for values); *out is malloc'd. */
static const char *read_word(const char *p, char **out)
{
    const char *s = p;
    while (word_char(*p))
        p++;
    *out = strndup(s, (size_t)(p - s));
    return p;
}

static int add_val(struct sel_req *r, char *v)
{
    char **nv = realloc(r->vals, (r->nvals + 1) * sizeof(*nv));
    if (nv == NULL) {
        free(v);
        return CACHE_ENOMEM;
    }
    r->vals = nv;
    r->vals[r->nvals++] = v;
    return CACHE_OK;
}

int cache_selector_parse(const char *s, struct cache_selector **out, char *err,
                         size_t errlen)
{
    struct cache_selector *sel = calloc(1, sizeof(*sel));
    const char *p = s != NULL ? s : "";
    char msg[64];
    int rc = CACHE_OK;

    *out = NULL;
    if (sel == NULL)
        return CACHE_ENOMEM;
    p = skip_sp(p);
    while (*p != '\0') {
        struct sel_req *reqs = realloc(sel->reqs, (sel->n + 1) * sizeof(*reqs));
        if (reqs == NULL) {
            rc = CACHE_ENOMEM;
            goto fail;
        }
        sel->reqs = reqs;
        struct sel_req *r = &sel->reqs[sel->n++];
        memset(r, 0, sizeof(*r));
        int neg = 0;
        if (*p == '!') {
            neg = 1;
            p = skip_sp(p + 1);
        }
        p = read_word(p, &r->key);
        if (r->key == NULL) {
            rc = CACHE_ENOMEM;
            goto fail;
        }
        if (r->key[0] == '\0')
            goto bad;
        p = skip_sp(p);
        if (neg) {
            r->op = SEL_NOT_EXISTS;
        } else if (*p == '\0' || *p == ',') {
            r->op = SEL_EXISTS;
        } else if (p[0] == '!' && p[1] == '=') {
            r->op = SEL_NEQ;
            p += 2;
        } else if (p[0] == '=' && p[1] == '=') {
            r->op = SEL_EQ;
            p += 2;
        } else if (p[0] == '=') {
            r->op = SEL_EQ;
            p += 1;
        } else if (strncmp(p, "in", 2) == 0 && !word_char(p[2])) {
            r->op = SEL_IN;
            p += 2;
        } else if (strncmp(p, "notin", 5) == 0 && !word_char(p[5])) {
            r->op = SEL_NOTIN;
            p += 5;
        } else {
            goto bad;
        }
        p = skip_sp(p);
        if (r->op == SEL_EQ || r->op == SEL_NEQ) {
            char *v;
            p = read_word(p, &v);
            if (v == NULL || add_val(r, v) != CACHE_OK) {
                rc = CACHE_ENOMEM;
                goto fail;
            }
        } else if (r->op == SEL_IN || r->op == SEL_NOTIN) {
            if (*p != '(')
                goto bad;
            p = skip_sp(p + 1);
            for (;;) {
                char *v;
                p = read_word(p, &v);
                if (v == NULL || add_val(r, v) != CACHE_OK) {
                    rc = CACHE_ENOMEM;
                    goto fail;
                }
                p = skip_sp(p);
                if (*p == ',') {
                    p = skip_sp(p + 1);
                    continue;
                }
                if (*p == ')') {
                    p = skip_sp(p + 1);
                    break;
                }
                goto bad;
            }
        }
        p = skip_sp(p);
        if (*p == ',') {
            p = skip_sp(p + 1);
            if (*p == '\0')
                goto bad;
        } else if (*p != '\0') {
            goto bad;
        }
    }
    *out = sel;
    return CACHE_OK;
bad:
    snprintf(msg, sizeof(msg), "%ld", (long)(p - s));
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "invalid label selector \"%s\" at offset %s", s,
                 msg);
    rc = CACHE_EINVAL;
fail:
    cache_selector_free(sel);
    return rc;
}

static int has_val(const struct sel_req *r, const char *v)
{
    for (size_t i = 0; i < r->nvals; i++)
        if (strcmp(r->vals[i], v) == 0)
            return 1;
    return 0;
}

int cache_selector_match(const struct cache_selector *sel,
                         const struct cache_obj *o)
{
    if (sel == NULL)
        return 1;
    for (size_t i = 0; i < sel->n; i++) {
        const struct sel_req *r = &sel->reqs[i];
        const char *v = cache_obj_label(o, r->key);
        int ok;
        switch (r->op) {
        case SEL_EXISTS:
            ok = v != NULL;
            break;
        case SEL_NOT_EXISTS:
            ok = v == NULL;
            break;
        case SEL_EQ:
        case SEL_IN:
            ok = v != NULL && has_val(r, v);
            break;
        case SEL_NEQ:
        case SEL_NOTIN:
        default:
            ok = v == NULL || !has_val(r, v);
            break;
        }
        if (!ok)
            return 0;
    }
    return 1;
}

/* --- the table --------------------------------------------------------- */

struct cache *cache_new(void)
{
    return calloc(1, sizeof(struct cache));
}

void cache_free(struct cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->cap; i++)
        cache_obj_unref(c->slots[i].o);
    free(c->slots);
    free(c->subs);
    ref_retire(c->ref);
    free(c->scratch);
    free(c);
}

int cache_subscribe(struct cache *c, cache_notify_fn fn, void *arg)
{
    struct sub *s = realloc(c->subs, (c->nsubs + 1) * sizeof(*s));
    if (s == NULL)
        return CACHE_ENOMEM;
    c->subs = s;
    c->subs[c->nsubs++] = (struct sub){fn, arg};
    return CACHE_OK;
}

void cache_unsubscribe(struct cache *c, cache_notify_fn fn, void *arg)
{
    for (size_t i = 0; i < c->nsubs; i++) {
        if (c->subs[i].fn == fn && c->subs[i].arg == arg) {
            memmove(&c->subs[i], &c->subs[i + 1],
                    (c->nsubs - i - 1) * sizeof(*c->subs));
            c->nsubs--;
            return;
        }
    }
}

static void notify(struct cache *c, enum cache_event ev,
                   const struct cache_obj *old_obj,
                   const struct cache_obj *new_obj)
{
    for (size_t i = 0; i < c->nsubs; i++)
        c->subs[i].fn(ev, old_obj, new_obj, c->subs[i].arg);
}

/* Index of namespace/name's slot, or of the empty slot ending its probe.
 * c->cap must be non-zero. */
static size_t find_slot(const struct cache *c, const char *ns, const char *name,
                        uint32_t h)
{
    size_t mask = c->cap - 1;
    size_t i = h & mask;
    for (;;) {
        const struct cache_obj *o = c->slots[i].o;
        if (o == NULL)
            return i;
        if (o->hash == h && strcmp(cache_obj_name(o), name) == 0 &&
            strcmp(cache_obj_namespace(o), ns) == 0)
            return i;
        i = (i + 1) & mask;
    }
}

static int grow(struct cache *c)
{
    size_t ncap = c->cap ? c->cap * 2 : 64;
    struct slot *ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL)
        return CACHE_ENOMEM;
    for (size_t i = 0; i < c->cap; i++) {
        struct cache_obj *o = c->slots[i].o;
        if (o == NULL)
            continue;
        size_t j = o->hash & (ncap - 1);
        while (ns[j].o != NULL)
            j = (j + 1) & (ncap - 1);
        ns[j] = c->slots[i];
    }
    free(c->slots);
    c->slots = ns;
    c->cap = ncap;
    return CACHE_OK;
}

const struct cache_obj *cache_get(const struct cache *c, const char *ns,
                                  const char *name)
{
    if (c->cap == 0 || name == NULL)
        return NULL;
    if (ns == NULL)
        ns = "";
    return c->slots[find_slot(c, ns, name, key_hash(ns, name))].o;
}

size_t cache_len(const struct cache *c)
{
    return c->len;
}

size_t cache_mem(const struct cache *c)
{
    return c->bytes + c->cap * sizeof(struct slot) + sizeof(*c) +
           ref_size(c->ref) + c->scratch_cap;
}

void cache_list(const struct cache *c, const char *ns,
                const struct cache_selector *sel, cache_each_fn fn, void *arg)
{
    for (size_t i = 0; i < c->cap; i++) {
        const struct cache_obj *o = c->slots[i].o;
        if (o == NULL)
            continue;
        if (ns != NULL && strcmp(cache_obj_namespace(o), ns) != 0)
            continue;
        if (!cache_selector_match(sel, o))
            continue;
        if (fn(o, arg) != 0)
            return;
    }
}

int cache_upsert(struct cache *c, struct cache_obj *o)
{
    if ((c->len + 1) * 4 > c->cap * 3 && grow(c) != CACHE_OK) {
        cache_obj_unref(o);
        return CACHE_ENOMEM;
    }
    size_t i = find_slot(c, cache_obj_namespace(o), cache_obj_name(o), o->hash);
    struct slot *s = &c->slots[i];
    s->epoch = c->epoch;
    if (s->o == NULL) {
        o = compact(c, o);
        s->o = o;
        c->len++;
        c->bytes += cache_obj_size(o);
        notify(c, CACHE_ADDED, NULL, o);
        return CACHE_OK;
    }
    struct cache_obj *old = s->o;
    if (strcmp(cache_obj_rv(old), cache_obj_rv(o)) == 0 &&
        cache_obj_rv(o)[0] != '\0') {
        cache_obj_unref(o);
        return CACHE_OK;
    }
    o = compact(c, o);
    s->o = o;
    c->bytes += cache_obj_size(o);
    c->bytes -= cache_obj_size(old);
    notify(c, CACHE_UPDATED, old, o);
    cache_obj_unref(old);
    return CACHE_OK;
}

/* Removes slot i with backward-shift deletion (no tombstones). */
static struct cache_obj *remove_slot(struct cache *c, size_t i)
{
    size_t mask = c->cap - 1;
    struct cache_obj *o = c->slots[i].o;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (c->slots[j].o == NULL)
            break;
        size_t home = c->slots[j].o->hash & mask;
        /* Can the entry at j move to the hole at i? Only if its home is
         * not in the cyclic range (i, j]. */
        int between =
            i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (between)
            continue;
        c->slots[i] = c->slots[j];
        i = j;
    }
    c->slots[i].o = NULL;
    c->slots[i].epoch = 0;
    c->len--;
    c->bytes -= cache_obj_size(o);
    return o;
}

int cache_delete(struct cache *c, const char *ns, const char *name,
                 const struct cache_obj *final_obj)
{
    if (c->cap == 0)
        return 0;
    if (ns == NULL)
        ns = "";
    size_t i = find_slot(c, ns, name, key_hash(ns, name));
    if (c->slots[i].o == NULL)
        return 0;
    struct cache_obj *old = remove_slot(c, i);
    notify(c, CACHE_DELETED, old, final_obj);
    cache_obj_unref(old);
    return 1;
}

void cache_replace_begin(struct cache *c)
{
    c->epoch++;
}

size_t cache_replace_end(struct cache *c)
{
    size_t n = 0;
    size_t i = 0;
    /* Backward shifts move entries toward lower indexes, possibly into a
     * slot already visited: re-check slot i after each removal. */
    while (i < c->cap) {
        struct slot *s = &c->slots[i];
        if (s->o != NULL && s->epoch != c->epoch) {
            struct cache_obj *old = remove_slot(c, i);
            notify(c, CACHE_DELETED, old, NULL);
            cache_obj_unref(old);
            n++;
            continue;
        }
        i++;
    }
    /* Entries shifted across the wrap-around into slots < i are covered
     * by re-checking from the start once more. */
    for (i = 0; i < c->cap; i++) {
        struct slot *s = &c->slots[i];
        if (s->o != NULL && s->epoch != c->epoch) {
            struct cache_obj *old = remove_slot(c, i);
            notify(c, CACHE_DELETED, old, NULL);
            cache_obj_unref(old);
            n++;
            i--; /* re-check this slot: size_t wraps and ++ restores */
        }
    }
    return n;
}
