/* tracking: per-key state of the controller; see tracking.h. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "text.h"
#include "tracking.h"

/* Is resourceVersion a at least as new as b? etcd revisions are decimal
 * integers; anything else only compares equal. */
static int rv_at_least(const char *a, const char *b)
{
    char *ea, *eb;
    if (a == NULL || b == NULL || !*a || !*b)
        return 0;
    unsigned long long x = strtoull(a, &ea, 10);
    unsigned long long y = strtoull(b, &eb, 10);
    if (*ea || *eb)
        return strcmp(a, b) == 0;
    return x >= y;
}

static uint32_t key_hash(const char *key)
{
    return text_fnv1a32(TEXT_FNV1A32_INIT, key, strlen(key));
}

/* The link that points (or would point) at key's entry (hash h); the
 * table must have buckets. */
static struct kstate **slot(struct tracking *t, const char *key, uint32_t h)
{
    struct kstate **p = &t->buckets[h & (t->nbuckets - 1)];
    while (*p != NULL && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
        p = &(*p)->next;
    return p;
}

/* Moves every entry to a table of n buckets (a power of two). Out of
 * memory the old table stays: chains only get longer. */
static void rehash(struct tracking *t, size_t n)
{
    struct kstate **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct kstate *k = t->buckets[i];
        while (k != NULL) {
            struct kstate *next = k->next;
            k->next = b[k->hash & (n - 1)];
            b[k->hash & (n - 1)] = k;
            k = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

struct kstate *tracking_get(struct tracking *t, const char *key, int create)
{
    if (t->nbuckets == 0) {
        if (!create)
            return NULL;
        rehash(t, TRACKING_MIN_BUCKETS);
        if (t->nbuckets == 0)
            return NULL;
    }
    uint32_t h = key_hash(key);
    struct kstate **p = slot(t, key, h);
    if (*p != NULL || !create)
        return *p;
    size_t len = strlen(key);
    struct kstate *k = calloc(1, sizeof(*k) + len + 1);
    if (k == NULL)
        return NULL;
    memcpy(k->key, key, len + 1);
    k->hash = h;
    *p = k;
    if (++t->n > t->nbuckets)
        rehash(t, t->nbuckets * 2);
    return k;
}

void tracking_overlay_drop(struct kstate *k, size_t i)
{
    free(k->ov[i].name);
    cache_obj_unref(k->ov[i].obj);
    k->ov[i] = k->ov[--k->n_ov];
}

/* Drops reject i of k (the last one takes its place). */
static void reject_drop(struct kstate *k, size_t i)
{
    free(k->rej[i].name);
    free(k->rej[i].message);
    k->rej[i] = k->rej[--k->n_rej];
}

/* Drops write i of k (the last one takes its place). */
static void wflight_drop(struct kstate *k, size_t i)
{
    free(k->wr[i].name);
    free(k->wr[i].seen_rv);
    k->wr[i] = k->wr[--k->n_wr];
}

/* Frees an entry (unlinked by the caller) and all it holds. */
static void kstate_free(struct kstate *k)
{
    while (k->n_wr > 0)
        wflight_drop(k, 0);
    free(k->wr);
    while (k->n_ov > 0)
        tracking_overlay_drop(k, 0);
    while (k->n_rej > 0)
        reject_drop(k, 0);
    for (size_t i = 0; i < k->n_kids; i++)
        free(k->kids[i].name);
    free(k->kids);
    free(k->ov);
    free(k->rej);
    free(k->gone_uid);
    free(k);
}

void tracking_release(struct tracking *t, const char *key)
{
    if (t->nbuckets == 0)
        return;
    struct kstate **p = slot(t, key, key_hash(key));
    struct kstate *k = *p;
    if (k == NULL)
        return;
    while (k->n_ov > 0)
        tracking_overlay_drop(k, 0);
    while (k->n_rej > 0)
        reject_drop(k, 0);
    tracking_suspect_clear(k);
    if (k->n_kids == 0 && k->n_wr == 0) {
        *p = k->next;
        kstate_free(k);
        t->n--;
        if (t->nbuckets > TRACKING_MIN_BUCKETS && t->n < t->nbuckets / 8)
            rehash(t, t->nbuckets / 2);
    }
}

void tracking_suspect(struct tracking *t, const char *key)
{
    struct kstate *k = tracking_get(t, key, 1);
    if (k == NULL) {
        log_error("out of memory marking a suspect", "key", key, NULL);
        return;
    }
    k->suspect = 1;
}

void tracking_suspect_gone(struct kstate *k, const char *uid)
{
    free(k->gone_uid);
    k->gone_uid = strdup(uid);
}

void tracking_suspect_clear(struct kstate *k)
{
    if (k == NULL)
        return;
    k->suspect = 0;
    free(k->gone_uid);
    k->gone_uid = NULL;
}

void tracking_kids_add(struct tracking *t, const char *key, int kind,
                       const char *name)
{
    struct kstate *k = tracking_get(t, key, 1);
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->n_kids; i++)
        if (k->kids[i].kind == kind && strcmp(k->kids[i].name, name) == 0)
            return;
    struct kchild *v = realloc(k->kids, (k->n_kids + 1) * sizeof(*v));
    char *dup = strdup(name);
    if (v == NULL || dup == NULL) {
        if (v != NULL)
            k->kids = v;
        free(dup);
        log_error("out of memory indexing a child", "key", key, NULL);
        return;
    }
    k->kids = v;
    v[k->n_kids].kind = kind;
    v[k->n_kids].name = dup;
    k->n_kids++;
}

void tracking_kids_remove(struct tracking *t, const char *key, int kind,
                          const char *name)
{
    struct kstate *k = tracking_get(t, key, 0);
    for (size_t i = 0; k != NULL && i < k->n_kids; i++)
        if (k->kids[i].kind == kind && strcmp(k->kids[i].name, name) == 0) {
            free(k->kids[i].name);
            k->kids[i] = k->kids[--k->n_kids];
            break;
        }
}

/* The overlay of kind/name in k (may be NULL), or NULL. */
static struct overlay *overlay_find(struct kstate *k, int kind,
                                    const char *name)
{
    for (size_t i = 0; k != NULL && i < k->n_ov; i++)
        if (k->ov[i].kind == kind && strcmp(k->ov[i].name, name) == 0)
            return &k->ov[i];
    return NULL;
}

void tracking_overlay_put(struct tracking *t, const char *key, int kind,
                          const char *name, struct cache_obj *obj,
                          uint64_t now_ms)
{
    struct kstate *k = tracking_get(t, key, 1);
    if (k == NULL)
        return;
    struct overlay *o = overlay_find(k, kind, name);
    if (o == NULL) {
        struct overlay *v = realloc(k->ov, (k->n_ov + 1) * sizeof(*v));
        if (v == NULL)
            return;
        k->ov = v;
        o = &k->ov[k->n_ov];
        o->kind = kind;
        o->name = strdup(name);
        if (o->name == NULL)
            return;
        o->obj = NULL;
        k->n_ov++;
    }
    cache_obj_unref(o->obj);
    o->obj = cache_obj_ref(obj);
    o->at_ms = now_ms;
}

void tracking_overlay_forget(struct tracking *t, const char *key, int kind,
                             const char *name)
{
    struct kstate *k = tracking_get(t, key, 0);
    for (size_t i = 0; k != NULL && i < k->n_ov; i++)
        if (k->ov[i].kind == kind && strcmp(k->ov[i].name, name) == 0) {
            tracking_overlay_drop(k, i);
            return;
        }
}

int tracking_overlay_settle(struct tracking *t, const char *key, int kind,
                            const char *name, const struct cache_obj *cached)
{
    struct kstate *k = tracking_get(t, key, 0);
    struct overlay *o = overlay_find(k, kind, name);
    if (o == NULL)
        return 0;
    int echo = cached != NULL &&
               strcmp(cache_obj_rv(cached), cache_obj_rv(o->obj)) == 0;
    if (cached == NULL ||
        rv_at_least(cache_obj_rv(cached), cache_obj_rv(o->obj)))
        tracking_overlay_drop(k, (size_t)(o - k->ov));
    return echo;
}

const struct cache_obj *tracking_newest(struct kstate *k, int kind,
                                        const char *name,
                                        const struct cache_obj *cached,
                                        uint64_t now_ms)
{
    struct overlay *o = overlay_find(k, kind, name);
    if (o == NULL)
        return cached;
    if ((cached != NULL &&
         rv_at_least(cache_obj_rv(cached), cache_obj_rv(o->obj))) ||
        now_ms - o->at_ms > TRACKING_OVERLAY_TTL_MS) {
        tracking_overlay_drop(k, (size_t)(o - k->ov));
        return cached;
    }
    return o->obj;
}

int tracking_write_begin(struct tracking *t, const char *key, int kind,
                         const char *name)
{
    struct kstate *k = tracking_get(t, key, 1);
    if (k == NULL)
        return -1;
    struct wflight *v = realloc(k->wr, (k->n_wr + 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    k->wr = v;
    v[k->n_wr].kind = kind;
    v[k->n_wr].name = strdup(name);
    if (v[k->n_wr].name == NULL)
        return -1;
    v[k->n_wr].seen_rv = NULL;
    v[k->n_wr].other = 0;
    k->n_wr++;
    return 0;
}

int tracking_write_event(struct tracking *t, const char *key, int kind,
                         const char *name, const struct cache_obj *cached)
{
    struct kstate *k = tracking_get(t, key, 0);
    int found = 0;
    /* Every write of the object (one per reconcile; a cancelled one is
     * ended at once) keeps the version. */
    for (size_t i = 0; k != NULL && i < k->n_wr; i++) {
        struct wflight *w = &k->wr[i];
        if (w->kind != kind || strcmp(w->name, name) != 0)
            continue;
        found = 1;
        const char *rv = cache_obj_rv(cached);
        if (w->seen_rv == NULL && !w->other) {
            w->seen_rv = strdup(rv);
            /* Not kept: no version can pass for the echo any more. */
            w->other = w->seen_rv == NULL;
        } else if (w->seen_rv == NULL || strcmp(w->seen_rv, rv) != 0) {
            /* Two versions: at most one is ours. */
            w->other = 1;
        }
    }
    return found;
}

enum tracking_seen tracking_write_end(struct tracking *t, const char *key,
                                      int kind, const char *name,
                                      const char *rv)
{
    struct kstate *k = tracking_get(t, key, 0);
    for (size_t i = 0; k != NULL && i < k->n_wr; i++) {
        struct wflight *w = &k->wr[i];
        if (w->kind != kind || strcmp(w->name, name) != 0)
            continue;
        enum tracking_seen s = TRACKING_SEEN_NONE;
        if (w->other || (w->seen_rv != NULL && rv == NULL) ||
            (w->seen_rv != NULL && strcmp(w->seen_rv, rv) != 0))
            s = TRACKING_SEEN_OTHER;
        else if (w->seen_rv != NULL)
            s = TRACKING_SEEN_ECHO;
        wflight_drop(k, i);
        return s;
    }
    return TRACKING_SEEN_NONE;
}

void tracking_owe_full(struct tracking *t, const char *key)
{
    struct kstate *k = tracking_get(t, key, 0);
    if (k != NULL) {
        k->full_seq++;
        k->clean = 0;
    }
}

void tracking_clear(struct tracking *t)
{
    for (size_t i = 0; i < t->nbuckets; i++)
        while (t->buckets[i] != NULL) {
            struct kstate *k = t->buckets[i];
            t->buckets[i] = k->next;
            kstate_free(k);
        }
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->n = 0;
}

struct reject *tracking_reject_find(struct kstate *k, int kind,
                                    const char *name)
{
    for (size_t i = 0; k != NULL && i < k->n_rej; i++)
        if (k->rej[i].kind == kind && strcmp(k->rej[i].name, name) == 0)
            return &k->rej[i];
    return NULL;
}

struct reject *tracking_reject_get(struct tracking *t, const char *key,
                                   int kind, const char *name)
{
    struct kstate *k = tracking_get(t, key, 1);
    if (k == NULL)
        return NULL;
    struct reject *rj = tracking_reject_find(k, kind, name);
    if (rj != NULL)
        return rj;
    struct reject *v = realloc(k->rej, (k->n_rej + 1) * sizeof(*v));
    if (v == NULL)
        return NULL;
    k->rej = v;
    rj = &v[k->n_rej];
    memset(rj, 0, sizeof(*rj));
    rj->kind = kind;
    rj->name = strdup(name);
    if (rj->name == NULL)
        return NULL;
    k->n_rej++;
    return rj;
}

void tracking_reject_forget(struct kstate *k, int kind, const char *name)
{
    struct reject *rj = tracking_reject_find(k, kind, name);
    if (rj != NULL)
        reject_drop(k, (size_t)(rj - k->rej));
}
