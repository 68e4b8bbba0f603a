/* cache: the lean object cache of an informer; see cache.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "jscan.h"
#include "text.h"

/*
 * One allocation per object: the header, then
 * namespace\0 name\0 rv\0 uid\0 labels (k\0v\0...k\0v\0)\0 json\0.
 */
/* A 1 KiB ConfigMap costs its JSON plus about 100 bytes: no tree, no
 * per-field allocations. Objects are immutable, so an update swaps
 * pointers, and a subscriber (or a reconcile) can keep a reference to the
 * old version cheaply. */
struct cache_obj {
    uint32_t refs;
    uint32_t hash;
    uint32_t name_off;
    uint32_t rv_off;
    uint32_t uid_off;
    uint32_t labels_off;
    uint32_t json_off;
    uint32_t json_len;
    char data[];
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
    size_t bytes; /* held by objects */
    uint32_t epoch;
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

/* --- objects ----------------------------------------------------------- */

struct meta {
    struct jscan_span ns, name, rv, uid, labels;
    const char *cut_start; /* managedFields member (with a comma) */
    const char *cut_end;
};

/* Reads metadata of the object span; records the managedFields cut. */
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
        if (jscan_str_eq(mb.key, "name"))
            m->name = mb.value;
        else if (jscan_str_eq(mb.key, "namespace"))
            m->ns = mb.value;
        else if (jscan_str_eq(mb.key, "resourceVersion"))
            m->rv = mb.value;
        else if (jscan_str_eq(mb.key, "uid"))
            m->uid = mb.value;
        else if (jscan_str_eq(mb.key, "labels"))
            m->labels = mb.value;
        else if (jscan_str_eq(mb.key, "managedFields")) {
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

static char *put_str(char *p, struct jscan_span s)
{
    long n = 0;
    if (jscan_is_string(s))
        n = jscan_str(s, p, (size_t)jscan_str_len(s) + 1);
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
        if (jscan_str_eq(mb.key, "apiVersion"))
            have_av = 1;
        else if (jscan_str_eq(mb.key, "kind"))
            have_kind = 1;
        else if (jscan_str_eq(mb.key, "metadata")) {
            md = mb.value;
            have_md = 1;
        }
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
    char *p = o->data;
    p = put_str(p, m.ns);
    o->name_off = (uint32_t)(p - o->data);
    p = put_str(p, m.name);
    o->rv_off = (uint32_t)(p - o->data);
    p = put_str(p, m.rv);
    o->uid_off = (uint32_t)(p - o->data);
    p = put_str(p, m.uid);
    o->labels_off = (uint32_t)(p - o->data);
    if (labels_size > 1) {
        struct jscan_iter li;
        struct jscan_member lm;
        jscan_object(&li, m.labels.p, m.labels.len);
        while (jscan_next_member(&li, &lm, NULL, 0) == 1) {
            if (!jscan_is_string(lm.value))
                continue;
            p = put_str(p, lm.key);
            p = put_str(p, lm.value);
        }
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
    if (o != NULL && --o->refs == 0)
        free(o);
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

const char *cache_obj_json(const struct cache_obj *o, size_t *len)
{
    if (len != NULL)
        *len = o->json_len;
    return o->data + o->json_off;
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
    return jscan_cjson_parse(o->data + o->json_off, o->json_len);
}

size_t cache_obj_size(const struct cache_obj *o)
{
    return sizeof(*o) + o->json_off + o->json_len + 1;
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
    return c->bytes + c->cap * sizeof(struct slot) + sizeof(*c);
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
