/*
 * events: the event recorder (see events.h). The per-object state lives in
 * a chained hash table threaded on an LRU list: a token bucket and the few
 * Events recently written about the object, each known by the hash of
 * (type, reason, message) so that a repeat becomes a count PATCH. A request
 * in flight points back at its Event slot (and the slot at it) so that a
 * repeat arriving meanwhile is folded into one follow-up PATCH, and so that
 * dropping the slot (LRU, forget) can detach the request.
 */
#include "events.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "kinds.h"
#include "log.h"
#include "text.h"

#define BURST 25.0
#define REFILL_MS 300000.0 /* one token per 5 minutes */
#define DEDUP_MS 600000    /* identical events within 10 minutes */
#define MAX_MESSAGE 1024
#define MAX_NAME_PREFIX 236 /* 253 - "." - 16 hex digits */
#define RECENT 8            /* Events remembered per object */
#define NBUCKETS 8192
#define DEFAULT_MAX_OBJECTS 4096

struct ev_req;

/* One Event written about an object; name NULL: the slot is free. */
struct recent {
    uint64_t hash;
    char *name;
    unsigned count;
    uint64_t last_ms; /* loop clock of the last emit */
    time_t last_wall; /* its wall-clock time, for lastTimestamp */
    struct ev_req *req;
    int dirty; /* the count moved while req was in flight */
};

struct obj {
    char *key;   /* "<namespace>/<name>" of the involved object */
    char *ev_ns; /* namespace of its Events */
    uint64_t hash;
    struct obj *hnext;
    struct obj *prev, *next; /* LRU list, most recent first */
    double tokens;
    uint64_t refill_ms;
    struct recent recent[RECENT];
};

struct ev_req {
    struct events *e;
    struct http_req *req;
    struct recent *rec; /* NULL once the slot is dropped */
    struct obj *obj;    /* owner of rec; valid while rec is not NULL */
    int patch;
    struct ev_req *prev, *next;
};

struct events {
    struct http_client *h;
    char *component;
    char *host;
    int enabled;
    struct obj **buckets;
    struct obj *head, *tail;
    size_t nobjs;
    size_t max_objs;
    struct ev_req *inflight;
    size_t npending;
    unsigned long long last_nanos;
    struct events_stats stats;
};

/* --- helpers ----------------------------------------------------------- */

static uint64_t fnv_str(uint64_t h, const char *s)
{
    /* The NUL is hashed too, so ("ab","c") and ("a","bc") differ. */
    return text_fnv1a64(h, s ? s : "", strlen(s ? s : "") + 1);
}

/* Length of `s` cut to at most `max` bytes without splitting a UTF-8
 * sequence. */
static size_t utf8_cut(const char *s, size_t max)
{
    return text_utf8_cut(s, strlen(s), max);
}

/* --- requests ---------------------------------------------------------- */

static void on_done(struct http_response *r, void *arg);

static void rec_drop(struct recent *rec)
{
    if (rec->req != NULL)
        rec->req->rec = NULL;
    free(rec->name);
    memset(rec, 0, sizeof(*rec));
}

/*
 * Sends a POST (body: the Event) or a count PATCH for `rec` to the path
 * kinds_path builds; takes ownership of `body`. Returns 0, -EINVAL (a
 * namespace or name kinds_path refuses) or -ENOMEM (both logged; the slot
 * is dropped for a POST, since that Event will not exist).
 */
static int send_req(struct events *e, struct obj *o, struct recent *rec,
                    int patch, char *body)
{
    struct dbuf path;
    dbuf_init(&path, 1024);
    if (kinds_path(KINDS_EVENT, o->ev_ns, patch ? rec->name : NULL, &path) !=
        0) {
        log_warn("event not recorded", "event", rec->name, "error",
                 dbuf_ptr(&path), NULL);
        dbuf_free(&path);
        free(body);
        if (!patch)
            rec_drop(rec);
        return -EINVAL;
    }
    struct ev_req *q = body ? calloc(1, sizeof(*q)) : NULL;
    struct http_call call = {
        .method = patch ? HTTP_PATCH : HTTP_POST,
        .path = dbuf_ptr(&path),
        .content_type = patch ? HTTP_CT_MERGE_PATCH : NULL,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .on_done = on_done,
        .arg = q,
    };
    int sent = q != NULL && http_send(e->h, &call, &q->req) == 0;
    dbuf_free(&path);
    if (!sent) {
        free(q);
        free(body);
        log_warn("event not recorded", "event", rec->name, "error",
                 "out of memory", NULL);
        if (!patch)
            rec_drop(rec);
        return -ENOMEM;
    }
    free(body);
    q->e = e;
    q->rec = rec;
    q->obj = o;
    q->patch = patch;
    q->next = e->inflight;
    if (e->inflight != NULL)
        e->inflight->prev = q;
    e->inflight = q;
    e->npending++;
    rec->req = q;
    rec->dirty = 0;
    if (patch)
        e->stats.patched++;
    else
        e->stats.posted++;
    return 0;
}

static int send_patch(struct events *e, struct obj *o, struct recent *rec)
{
    char ts[32];
    char body[128];
    text_rfc3339((long long)rec->last_wall, -1, ts);
    snprintf(body, sizeof(body), "{\"count\":%u,\"lastTimestamp\":\"%s\"}",
             rec->count, ts);
    char *copy = strdup(body);
    return send_req(e, o, rec, 1, copy);
}

static void on_done(struct http_response *r, void *arg)
{
    struct ev_req *q = arg;
    struct events *e = q->e;
    struct recent *rec = q->rec;
    struct obj *o = q->obj;
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        e->inflight = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    e->npending--;
    if (rec != NULL)
        rec->req = NULL;
    if (r->result != HTTP_OK) {
        e->stats.failed++;
        log_warn(q->patch ? "event update failed" : "event not recorded",
                 "event", rec ? rec->name : "(dropped)", "error",
                 http_strerror(r->result), "detail", r->message, NULL);
        /* The Event does not exist (POST failed, or it expired): the next
         * repeat creates a new one. */
        if (rec != NULL && (!q->patch || r->result == HTTP_ENOTFOUND))
            rec_drop(rec);
    }
    free(q);
    if (rec != NULL && rec->name != NULL && rec->dirty && e->enabled)
        send_patch(e, o, rec);
}

/* --- per-object state -------------------------------------------------- */

static void obj_unlink(struct events *e, struct obj *o)
{
    if (o->prev != NULL)
        o->prev->next = o->next;
    else
        e->head = o->next;
    if (o->next != NULL)
        o->next->prev = o->prev;
    else
        e->tail = o->prev;
    o->prev = o->next = NULL;
}

static void obj_push_front(struct events *e, struct obj *o)
{
    o->next = e->head;
    o->prev = NULL;
    if (e->head != NULL)
        e->head->prev = o;
    e->head = o;
    if (e->tail == NULL)
        e->tail = o;
}

static void obj_free(struct obj *o)
{
    for (int i = 0; i < RECENT; i++)
        rec_drop(&o->recent[i]);
    free(o->key);
    free(o->ev_ns);
    free(o);
}

/* Removes `o` from the table and the list and frees it. */
static void obj_remove(struct events *e, struct obj *o)
{
    struct obj **pp = &e->buckets[o->hash & (NBUCKETS - 1)];
    while (*pp != NULL && *pp != o)
        pp = &(*pp)->hnext;
    if (*pp == o)
        *pp = o->hnext;
    obj_unlink(e, o);
    e->nobjs--;
    obj_free(o);
}

static struct obj *obj_find(struct events *e, const char *key, uint64_t hash)
{
    for (struct obj *o = e->buckets[hash & (NBUCKETS - 1)]; o != NULL;
         o = o->hnext)
        if (o->hash == hash && strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

static char *make_key(const char *ns, const char *name)
{
    size_t n = strlen(ns ? ns : "") + strlen(name ? name : "") + 2;
    char *k = malloc(n);
    if (k != NULL)
        snprintf(k, n, "%s/%s", ns ? ns : "", name ? name : "");
    return k;
}

/* The state of the object `ref`, created (full bucket) when new and moved
 * to the front of the LRU list. NULL when out of memory. */
static struct obj *obj_get(struct events *e, const struct events_ref *ref)
{
    char *key = make_key(ref->namespace, ref->name);
    if (key == NULL)
        return NULL;
    uint64_t hash = fnv_str(TEXT_FNV1A64_INIT, key);
    struct obj *o = obj_find(e, key, hash);
    if (o != NULL) {
        free(key);
        obj_unlink(e, o);
        obj_push_front(e, o);
        return o;
    }
    o = calloc(1, sizeof(*o));
    const char *ns =
        ref->namespace && ref->namespace[0] ? ref->namespace : "default";
    char *ev_ns = strdup(ns);
    if (o == NULL || ev_ns == NULL) {
        free(o);
        free(ev_ns);
        free(key);
        return NULL;
    }
    o->key = key;
    o->ev_ns = ev_ns;
    o->hash = hash;
    o->tokens = BURST;
    o->refill_ms = loop_now_ms();
    o->hnext = e->buckets[hash & (NBUCKETS - 1)];
    e->buckets[hash & (NBUCKETS - 1)] = o;
    obj_push_front(e, o);
    e->nobjs++;
    while (e->nobjs > e->max_objs && e->tail != NULL && e->tail != o)
        obj_remove(e, e->tail);
    return o;
}

/* Takes a token from the object's bucket; 0 when taken, 1 when empty. */
static int bucket_take(struct obj *o)
{
    uint64_t now = loop_now_ms();
    o->tokens += (double)(now - o->refill_ms) / REFILL_MS;
    if (o->tokens > BURST)
        o->tokens = BURST;
    o->refill_ms = now;
    if (o->tokens < 1.0)
        return 1;
    o->tokens -= 1.0;
    return 0;
}

/* --- the Event --------------------------------------------------------- */

static int add_opt(cJSON *o, const char *key, const char *v)
{
    if (v == NULL)
        return 0;
    return cJSON_AddStringToObject(o, key, v) ? 0 : -1;
}

/* The Event JSON text (free it), or NULL when out of memory. */
static char *event_body(struct events *e, const struct obj *o,
                        const struct recent *rec, const struct events_ref *ref,
                        const char *type, const char *reason,
                        const char *message)
{
    char ts[32];
    char *out = NULL;
    char *msg = NULL;
    size_t mlen = utf8_cut(message ? message : "", MAX_MESSAGE);
    cJSON *ev = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(ev, "metadata");
    cJSON *inv = cJSON_AddObjectToObject(ev, "involvedObject");
    cJSON *src = cJSON_AddObjectToObject(ev, "source");
    msg = malloc(mlen + 1);
    if (ev == NULL || md == NULL || inv == NULL || src == NULL || msg == NULL)
        goto done;
    memcpy(msg, message ? message : "", mlen);
    msg[mlen] = '\0';
    text_rfc3339((long long)rec->last_wall, -1, ts);
    if (add_opt(ev, "apiVersion", kinds_table[KINDS_EVENT].api_version) ||
        add_opt(ev, "kind", kinds_table[KINDS_EVENT].kind) ||
        add_opt(md, "name", rec->name) || add_opt(md, "namespace", o->ev_ns) ||
        add_opt(inv, "apiVersion", ref->api_version) ||
        add_opt(inv, "kind", ref->kind) ||
        add_opt(inv, "namespace",
                ref->namespace && ref->namespace[0] ? ref->namespace : NULL) ||
        add_opt(inv, "name", ref->name) || add_opt(inv, "uid", ref->uid) ||
        add_opt(inv, "resourceVersion", ref->resource_version) ||
        add_opt(ev, "reason", reason) || add_opt(ev, "message", msg) ||
        add_opt(ev, "type", type) || add_opt(src, "component", e->component) ||
        add_opt(src, "host", e->host[0] ? e->host : NULL) ||
        add_opt(ev, "reportingComponent", e->component) ||
        add_opt(ev, "reportingInstance", e->host) ||
        add_opt(ev, "firstTimestamp", ts) || add_opt(ev, "lastTimestamp", ts) ||
        cJSON_AddNumberToObject(ev, "count", 1) == NULL)
        goto done;
    out = cJSON_PrintUnformatted(ev);
done:
    free(msg);
    cJSON_Delete(ev);
    return out;
}

/* "<name>.<16 hex digits>": the wall clock in nanoseconds like client-go,
 * kept strictly increasing within the process. */
static char *event_name(struct events *e, const char *name)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long n = (unsigned long long)ts.tv_sec * 1000000000ull +
                           (unsigned long long)ts.tv_nsec;
    if (n <= e->last_nanos)
        n = e->last_nanos + 1;
    e->last_nanos = n;
    size_t len = strlen(name);
    if (len > MAX_NAME_PREFIX)
        len = MAX_NAME_PREFIX;
    char *out = malloc(len + 18);
    if (out != NULL)
        snprintf(out, len + 18, "%.*s.%016llx", (int)len, name, n);
    return out;
}

int events_emit(struct events *e, const struct events_ref *obj,
                const char *type, const char *reason, const char *message)
{
    if (obj == NULL || obj->name == NULL || obj->name[0] == '\0' ||
        type == NULL || reason == NULL)
        return -EINVAL;
    if (!e->enabled) {
        e->stats.disabled++;
        return 0;
    }
    struct obj *o = obj_get(e, obj);
    if (o == NULL)
        return -ENOMEM;
    if (bucket_take(o) != 0) {
        e->stats.limited++;
        log_debug("event dropped by the rate limit", "object", o->key, "reason",
                  reason, NULL);
        return 1;
    }
    if (message == NULL)
        message = "";
    uint64_t h = fnv_str(TEXT_FNV1A64_INIT, type);
    h = fnv_str(h, reason);
    h = text_fnv1a64(h, message, utf8_cut(message, MAX_MESSAGE));
    uint64_t now = loop_now_ms();
    struct recent *rec = NULL;
    struct recent *slot = NULL; /* a free slot, else the oldest */
    for (int i = 0; i < RECENT; i++) {
        struct recent *r = &o->recent[i];
        if (r->name != NULL && r->hash == h && now - r->last_ms < DEDUP_MS) {
            rec = r;
            break;
        }
        if (slot == NULL || (slot->name != NULL &&
                             (r->name == NULL || r->last_ms < slot->last_ms)))
            slot = r;
    }
    if (rec != NULL) {
        rec->count++;
        rec->last_ms = now;
        rec->last_wall = time(NULL);
        if (rec->req != NULL) {
            rec->dirty = 1; /* one PATCH after the request in flight */
            return 0;
        }
        return send_patch(e, o, rec) == 0 ? 0 : -ENOMEM;
    }
    rec_drop(slot);
    slot->name = event_name(e, obj->name);
    if (slot->name == NULL)
        return -ENOMEM;
    slot->hash = h;
    slot->count = 1;
    slot->last_ms = now;
    slot->last_wall = time(NULL);
    char *body = event_body(e, o, slot, obj, type, reason, message);
    if (body == NULL) {
        rec_drop(slot);
        return -ENOMEM;
    }
    return send_req(e, o, slot, 0, body);
}

void events_forget(struct events *e, const char *namespace, const char *name)
{
    char *key = make_key(namespace, name);
    if (key == NULL)
        return;
    struct obj *o = obj_find(e, key, fnv_str(TEXT_FNV1A64_INIT, key));
    free(key);
    if (o != NULL)
        obj_remove(e, o);
}

void events_set_enabled(struct events *e, int enabled)
{
    e->enabled = enabled != 0;
}

void events_set_max_objects(struct events *e, size_t n)
{
    e->max_objs = n ? n : DEFAULT_MAX_OBJECTS;
    while (e->nobjs > e->max_objs && e->tail != NULL)
        obj_remove(e, e->tail);
}

size_t events_objects(const struct events *e)
{
    return e->nobjs;
}

void events_get_stats(const struct events *e, struct events_stats *out)
{
    *out = e->stats;
}

size_t events_pending(const struct events *e)
{
    return e->npending;
}

/* --- lifecycle --------------------------------------------------------- */

struct events *events_new(struct http_client *h, const char *component,
                          const char *host)
{
    struct events *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->h = h;
    e->enabled = 1;
    e->max_objs = DEFAULT_MAX_OBJECTS;
    e->component = strdup(component ? component : "dittofs-operator");
    e->host = strdup(host ? host : "");
    e->buckets = calloc(NBUCKETS, sizeof(*e->buckets));
    if (e->component == NULL || e->host == NULL || e->buckets == NULL) {
        events_free(e);
        return NULL;
    }
    return e;
}

void events_free(struct events *e)
{
    if (e == NULL)
        return;
    while (e->inflight != NULL) {
        struct ev_req *q = e->inflight;
        e->inflight = q->next;
        http_cancel(e->h, q->req);
        if (q->rec != NULL)
            q->rec->req = NULL;
        free(q);
    }
    while (e->head != NULL && e->buckets != NULL)
        obj_remove(e, e->head);
    free(e->buckets);
    free(e->component);
    free(e->host);
    free(e);
}
