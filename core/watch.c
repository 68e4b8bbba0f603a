/*
 * watch: list+watch informer filling a cache; see watch.h.
 *
 * The state machine, after client-go's Reflector:
 *
 *   STOPPED --start--> LISTING --last page--> WATCHING --clean close--+
 *                        ^  |                    |  ^                  |
 *                        |  +-- error --+        |  +------------------+
 *                        |              v        |  (re-watch from rv,
 *                      410 /         BACKOFF <---+   no relist)
 *                   first sync          |   error, malformed event,
 *                        +--- timer ----+   idle deadline, short watch
 *
 * Lists never pass a resourceVersion: every page comes from one
 * consistent etcd snapshot (the continue token pins it), so a relist is
 * exact. Network errors, 429 and 5xx re-watch from the last rv without a
 * relist (the history is usually still there); only 410 relists.
 * Everything runs on the loop thread; stream bytes are parsed inside
 * libcurl's write callback, so subscribers run there too (see http.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jscan.h"
#include "log.h"
#include "watch.h"

#define WATCH_RV_MAX 128
/* A watch that ends cleanly this fast without an event is a failure
 * (client-go's "very short watch"), so a flapping server cannot make us
 * reconnect in a tight loop. */
#define WATCH_SHORT_MS 1000
/* A stream's idle deadline once the server was seen sending bookmarks
 * every minute (before: the watch's timeout + 30 s); watch_opts can set
 * another. */
#define WATCH_BOOKMARK_IDLE_MS 70000
/* Two relists closer than this are separated by a backoff delay. */
#define WATCH_RELIST_GAP_MS 1000

enum after_abort {
    ABORT_NONE,
    ABORT_RELIST,  /* 410 inside the stream */
    ABORT_BACKOFF, /* malformed or oversized event, ERROR event */
};

struct watch {
    struct http_client *h;
    struct loop *loop;
    char *api_path;
    char *resource;
    char *ns;
    char *lsel; /* escaped for a query string, or NULL */
    char *fsel;
    char *name;
    unsigned page_size;
    size_t max_event;
    unsigned tmin;
    unsigned tmax;
    uint64_t idle_ms;

    struct cache *cache;
    enum watch_state state;
    int synced;
    int need_list;   /* the next attempt lists (first sync, 410) */
    int cancel_feed; /* a pause happened inside a callback */
    char rv[WATCH_RV_MAX];
    char *cont;      /* continue token of the list in progress */
    char *list_kind; /* item kind derived from the list's kind */
    char *list_av;
    struct http_req *req;
    struct loop_timer timer;
    struct watch_backoff backoff;
    struct watch_lines lines;
    uint64_t watch_start_ms;
    uint64_t last_relist_ms;
    unsigned timeout_s;
    unsigned long watch_events; /* events + bookmarks in this stream */
    int periodic_bookmarks;
    uint64_t bookmark_idle_ms; /* the idle deadline once they are seen */
    int stream_open;           /* bytes arrived on this watch stream */
    enum after_abort after;
    uint64_t rng;
    char last_error[512];
    struct watch_stats stats;
    watch_notice_fn notice;
    void *notice_arg;
};

/* --- lines ------------------------------------------------------------- */

void watch_lines_init(struct watch_lines *s, size_t max_line)
{
    dbuf_init(&s->partial, max_line);
}

void watch_lines_free(struct watch_lines *s)
{
    dbuf_free(&s->partial);
}

void watch_lines_reset(struct watch_lines *s)
{
    dbuf_free(&s->partial);
}

size_t watch_lines_pending(const struct watch_lines *s)
{
    return dbuf_len(&s->partial);
}

static int emit(const char *line, size_t len, watch_line_fn fn, void *arg)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len == 0)
        return 0;
    return fn(line, len, arg);
}

int watch_lines_feed(struct watch_lines *s, const char *data, size_t len,
                     watch_line_fn fn, void *arg)
{
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            int rc = dbuf_add(&s->partial, p, (size_t)(end - p));
            if (rc == DBUF_TOOBIG)
                return WATCH_LINES_TOOBIG;
            if (rc != DBUF_OK)
                return WATCH_LINES_NOMEM;
            return 0;
        }
        int rc;
        if (dbuf_len(&s->partial) > 0) {
            rc = dbuf_add(&s->partial, p, (size_t)(nl - p));
            if (rc == DBUF_TOOBIG)
                return WATCH_LINES_TOOBIG;
            if (rc != DBUF_OK)
                return WATCH_LINES_NOMEM;
            rc = emit(dbuf_ptr(&s->partial), dbuf_len(&s->partial), fn, arg);
            dbuf_reset(&s->partial);
        } else {
            if ((size_t)(nl - p) > s->partial.max)
                return WATCH_LINES_TOOBIG;
            rc = emit(p, (size_t)(nl - p), fn, arg);
        }
        if (rc < 0)
            return rc;
        p = nl + 1;
    }
    return 0;
}

/* --- backoff ----------------------------------------------------------- */

void watch_backoff_init(struct watch_backoff *b, uint64_t initial_ms,
                        uint64_t max_ms, uint64_t reset_ms)
{
    b->initial_ms = initial_ms;
    b->max_ms = max_ms;
    b->reset_ms = reset_ms;
    b->cur_ms = 0;
    b->last_fail_ms = 0;
}

uint64_t watch_backoff_next(struct watch_backoff *b, uint64_t now_ms,
                            double rnd)
{
    if (b->cur_ms != 0 && now_ms - b->last_fail_ms > b->reset_ms)
        b->cur_ms = 0;
    if (b->cur_ms == 0)
        b->cur_ms = b->initial_ms;
    else if (b->cur_ms < b->max_ms)
        b->cur_ms = b->cur_ms * 2 > b->max_ms ? b->max_ms : b->cur_ms * 2;
    b->last_fail_ms = now_ms;
    if (rnd < 0)
        rnd = 0;
    if (rnd >= 1)
        rnd = 0.999999;
    return b->cur_ms + (uint64_t)((double)b->cur_ms * 0.15 * rnd);
}

/* --- helpers ----------------------------------------------------------- */

static double rand01(struct watch *w)
{
    /* xorshift64*: jitter only, no need for quality. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return (double)((x * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* Percent-encodes everything but RFC 3986 unreserved characters. */
static char *qescape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1), *p = out;
    if (out == NULL)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return out;
}

static void say(struct watch *w, enum watch_notice n, const char *detail)
{
    if (w->notice != NULL)
        w->notice(w, n, detail != NULL ? detail : "", w->notice_arg);
}

static int set_rv(struct watch *w, struct jscan_span s)
{
    long n = jscan_str_len(s);
    if (n <= 0 || n >= WATCH_RV_MAX)
        return -1;
    jscan_str(s, w->rv, sizeof(w->rv));
    return 0;
}

/* Appends "/namespaces/<ns>/<resource>" or "/<resource>" and the query. */
static int base_path(struct watch *w, struct dbuf *b)
{
    int rc = dbuf_adds(b, w->api_path);
    if (rc == 0 && w->ns != NULL)
        rc = dbuf_addf(b, "/namespaces/%s", w->ns);
    if (rc == 0)
        rc = dbuf_addf(b, "/%s", w->resource);
    return rc;
}

static int add_selectors(struct watch *w, struct dbuf *b)
{
    int rc = 0;
    if (w->lsel != NULL)
        rc = dbuf_addf(b, "&labelSelector=%s", w->lsel);
    if (rc == 0 && w->fsel != NULL)
        rc = dbuf_addf(b, "&fieldSelector=%s", w->fsel);
    return rc;
}

static void do_list(struct watch *w);
static void do_watch(struct watch *w);

/* The next attempt: a list until one has completed (need_list is set
 * from watch_new() until the first sync, and again by a 410), else a
 * watch from the last resourceVersion. */
static void next_attempt(struct watch *w)
{
    if (w->need_list)
        do_list(w);
    else
        do_watch(w);
}

static void timer_cb(struct loop_timer *t, void *arg)
{
    (void)t;
    next_attempt(arg);
}

/* Records a failed attempt and schedules the next one after a backoff. */
static void fail(struct watch *w, const char *what, const char *msg)
{
    char copy[sizeof(w->last_error)];
    snprintf(copy, sizeof(copy), "%s", msg); /* msg may be last_error */
    snprintf(w->last_error, sizeof(w->last_error), "%s: %.480s", what, copy);
    w->stats.failures++;
    uint64_t delay = watch_backoff_next(&w->backoff, loop_now_ms(), rand01(w));
    char ms[32];
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)delay);
    log_warn("watch attempt failed", "watch", w->name, "error", w->last_error,
             "retry_ms", ms, NULL);
    w->state = WATCH_BACKOFF;
    loop_timer_start(w->loop, &w->timer, delay);
    say(w, WATCH_FAILED, w->last_error);
}

/* Starts a relist now, or after a backoff if the last one was recent. */
static void relist(struct watch *w, const char *why)
{
    w->need_list = 1;
    free(w->cont);
    w->cont = NULL;
    say(w, WATCH_RELISTING, why);
    log_info("relisting", "watch", w->name, "reason", why, NULL);
    if (loop_now_ms() - w->last_relist_ms < WATCH_RELIST_GAP_MS) {
        fail(w, "relist", why);
        return;
    }
    do_list(w);
}

/* --- list -------------------------------------------------------------- */

static void list_done(struct http_response *r, void *arg);

static void do_list(struct watch *w)
{
    struct dbuf path;
    char lim[32];

    dbuf_init(&path, 64 * 1024);
    w->state = WATCH_LISTING;
    w->need_list = 1;
    snprintf(lim, sizeof(lim), "?limit=%u", w->page_size);
    int rc = base_path(w, &path);
    if (rc == 0)
        rc = dbuf_adds(&path, lim);
    if (rc == 0 && w->cont != NULL) {
        char *e = qescape(w->cont);
        rc = e != NULL ? dbuf_addf(&path, "&continue=%s", e) : -1;
        free(e);
    }
    if (rc == 0)
        rc = add_selectors(w, &path);
    struct http_call call = {
        .method = HTTP_GET,
        .path = dbuf_ptr(&path),
        .on_done = list_done,
        .arg = w,
    };
    if (rc == 0)
        rc = http_send(w->h, &call, &w->req);
    dbuf_free(&path);
    if (rc != 0)
        fail(w, "list", "out of memory");
}

/* Derives the item kind from the list kind ("ConfigMapList"). */
static void set_list_kind(struct watch *w, struct jscan_span kind,
                          struct jscan_span av)
{
    char buf[256];
    long n = jscan_str(kind, buf, sizeof(buf));
    free(w->list_kind);
    w->list_kind = NULL;
    if (n > 4 && strcmp(buf + n - 4, "List") == 0) {
        buf[n - 4] = '\0';
        w->list_kind = strdup(buf);
    }
    free(w->list_av);
    w->list_av = NULL;
    if (jscan_str(av, buf, sizeof(buf)) > 0)
        w->list_av = strdup(buf);
}

/*
 * Applies one page; returns 0, or -1 with err set. Items go straight into
 * the cache (notifying as they come) instead of into a second copy: the
 * first page opens a cache "generation", and after the last page every
 * object the list did not mention is deleted. A list that fails halfway is
 * simply started over, which opens a new generation.
 */
static int apply_page(struct watch *w, const char *body, size_t len, int first,
                      char *err, size_t errlen)
{
    struct jscan_iter it;
    struct jscan_member m;
    struct jscan_span items = {NULL, 0}, md = {NULL, 0};
    struct jscan_span kind = {"\"\"", 2}, av = {"\"\"", 2};
    int rc;

    if (jscan_object(&it, body, len) != 0) {
        snprintf(err, errlen, "response is not a JSON object");
        return -1;
    }
    while ((rc = jscan_next_member(&it, &m, err, errlen)) == 1) {
        if (jscan_str_eq(m.key, "items"))
            items = m.value;
        else if (jscan_str_eq(m.key, "metadata"))
            md = m.value;
        else if (jscan_str_eq(m.key, "kind"))
            kind = m.value;
        else if (jscan_str_eq(m.key, "apiVersion"))
            av = m.value;
    }
    if (rc < 0)
        return -1;
    if (md.p == NULL) {
        snprintf(err, errlen, "list response has no metadata");
        return -1;
    }
    struct jscan_member lrv, lcont;
    if (jscan_find(md, "resourceVersion", &lrv, err, errlen) != 1 ||
        jscan_str_len(lrv.value) <= 0 ||
        jscan_str_len(lrv.value) >= WATCH_RV_MAX) {
        snprintf(err, errlen, "list response has no valid resourceVersion");
        return -1;
    }
    set_list_kind(w, kind, av);
    if (first)
        cache_replace_begin(w->cache);
    if (items.p != NULL && items.len > 0 && *items.p == '[') {
        struct jscan_iter ai;
        struct jscan_span item;
        jscan_array(&ai, items.p, items.len);
        unsigned long idx = 0;
        while ((rc = jscan_next_element(&ai, &item, err, errlen)) == 1) {
            struct cache_obj *o;
            char oerr[256];
            int orc = cache_obj_from_text(item.p, item.len, w->list_av,
                                          w->list_kind, &o, oerr, sizeof(oerr));
            if (orc != CACHE_OK) {
                snprintf(err, errlen, "items[%lu]: %s", idx, oerr);
                return -1;
            }
            if (cache_upsert(w->cache, o) != CACHE_OK) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            if (w->state != WATCH_LISTING) {
                snprintf(err, errlen, "paused");
                return -1;
            }
            idx++;
        }
        if (rc < 0)
            return -1;
    } else if (items.p != NULL &&
               !(items.len == 4 && memcmp(items.p, "null", 4) == 0)) {
        snprintf(err, errlen, "list items is not an array");
        return -1;
    }
    free(w->cont);
    w->cont = NULL;
    int has_cont = jscan_find(md, "continue", &lcont, NULL, 0) == 1 &&
                   jscan_str_len(lcont.value) > 0;
    if (has_cont) {
        size_t n = (size_t)jscan_str_len(lcont.value);
        w->cont = malloc(n + 1);
        if (w->cont == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        jscan_str(lcont.value, w->cont, n + 1);
    } else {
        jscan_str(lrv.value, w->rv, sizeof(w->rv));
    }
    return 0;
}

static void list_done(struct http_response *r, void *arg)
{
    struct watch *w = arg;
    char err[512];
    int first = w->cont == NULL;

    w->req = NULL;
    if (r->result == HTTP_EGONE && w->cont != NULL) {
        /* The continue token expired: start the list over. */
        w->stats.gone++;
        free(w->cont);
        w->cont = NULL;
        log_info("list continue token expired, listing again", "watch", w->name,
                 NULL);
        do_list(w);
        return;
    }
    if (r->result != HTTP_OK) {
        free(w->cont);
        w->cont = NULL;
        fail(w, "list", r->message);
        return;
    }
    w->stats.lists++;
    err[0] = '\0';
    if (apply_page(w, r->body, r->body_len, first, err, sizeof(err)) != 0) {
        if (w->state != WATCH_LISTING)
            return; /* paused from a subscriber */
        free(w->cont);
        w->cont = NULL;
        char msg[600];
        snprintf(msg, sizeof(msg), "malformed list response: %s", err);
        fail(w, "list", msg);
        return;
    }
    if (w->cont != NULL) {
        do_list(w);
        return;
    }
    size_t gone = cache_replace_end(w->cache);
    w->stats.relist_deletes += w->synced ? gone : 0;
    if (w->synced)
        w->stats.relists++;
    w->synced = 1;
    w->need_list = 0;
    w->last_relist_ms = loop_now_ms();
    char n[32];
    snprintf(n, sizeof(n), "%zu", cache_len(w->cache));
    log_debug("list complete", "watch", w->name, "objects", n, "rv", w->rv,
              NULL);
    say(w, WATCH_SYNCED, w->rv);
    if (w->state == WATCH_LISTING)
        do_watch(w);
}

/* --- watch ------------------------------------------------------------- */

static int stream_data(const char *data, size_t len, void *arg);
static void watch_done(struct http_response *r, void *arg);

static void do_watch(struct watch *w)
{
    struct dbuf path;
    char q[256];

    dbuf_init(&path, 64 * 1024);
    w->state = WATCH_WATCHING;
    w->cancel_feed = 0;
    w->after = ABORT_NONE;
    w->watch_events = 0;
    w->stream_open = 0;
    watch_lines_reset(&w->lines);
    w->timeout_s = w->tmin;
    if (w->tmax > w->tmin)
        w->timeout_s += (unsigned)(rand01(w) * (double)(w->tmax - w->tmin));
    w->watch_start_ms = loop_now_ms();
    snprintf(q, sizeof(q),
             "?watch=1&resourceVersion=%s&allowWatchBookmarks=true"
             "&timeoutSeconds=%u",
             w->rv, w->timeout_s);
    uint64_t idle = w->idle_ms;
    if (idle == 0)
        idle = w->periodic_bookmarks ? w->bookmark_idle_ms
                                     : (uint64_t)w->timeout_s * 1000 + 30000;
    int rc = base_path(w, &path);
    if (rc == 0)
        rc = dbuf_adds(&path, q);
    if (rc == 0)
        rc = add_selectors(w, &path);
    struct http_call call = {
        .method = HTTP_GET,
        .path = dbuf_ptr(&path),
        .on_data = stream_data,
        .idle_timeout_ms = idle,
        .on_done = watch_done,
        .arg = w,
    };
    if (rc == 0)
        rc = http_send(w->h, &call, &w->req);
    dbuf_free(&path);
    if (rc != 0) {
        fail(w, "watch", "out of memory");
        return;
    }
    w->stats.watches++;
}

/* An ERROR event: 410 relists, anything else backs off. */
static int error_event(struct watch *w, struct jscan_span obj)
{
    cJSON *st = cJSON_ParseWithLength(obj.p, obj.len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(st, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(st, "message");
    int c = cJSON_IsNumber(code) ? code->valueint : 0;
    snprintf(w->last_error, sizeof(w->last_error), "ERROR event %d: %s", c,
             cJSON_IsString(msg) ? msg->valuestring : "(no message)");
    cJSON_Delete(st);
    if (c == 410) {
        w->stats.gone++;
        w->after = ABORT_RELIST;
    } else {
        w->after = ABORT_BACKOFF;
    }
    return -1;
}

static int bad_event(struct watch *w, const char *line, size_t len,
                     const char *why)
{
    char ex[81];
    size_t n = len < 80 ? len : 80;
    for (size_t i = 0; i < n; i++)
        ex[i] = line[i] >= 0x20 && line[i] < 0x7f ? line[i] : '?';
    ex[n] = '\0';
    snprintf(w->last_error, sizeof(w->last_error),
             "malformed watch event (%zu bytes): %s; starts with \"%s\"", len,
             why, ex);
    w->after = ABORT_BACKOFF;
    return -1;
}

/*
 * One watch event. The object's text is cut out of the line by span and
 * stored as is (cache_obj_from_text), so an event costs one validating
 * scan and one copy; nothing is parsed into a tree except ERROR events.
 * Returns -1 to abort the stream, with w->after saying what to do next.
 */
static int handle_line(const char *line, size_t len, void *arg)
{
    struct watch *w = arg;
    struct jscan_iter it;
    struct jscan_member m;
    struct jscan_span type = {NULL, 0}, obj = {NULL, 0};
    char err[256];
    int rc;

    if (w->cancel_feed || w->state != WATCH_WATCHING)
        return -1;
    if (jscan_object(&it, line, len) != 0)
        return bad_event(w, line, len, "not a JSON object");
    while ((rc = jscan_next_member(&it, &m, err, sizeof(err))) == 1) {
        if (jscan_str_eq(m.key, "type"))
            type = m.value;
        else if (jscan_str_eq(m.key, "object"))
            obj = m.value;
    }
    if (rc < 0)
        return bad_event(w, line, len, err);
    for (const char *p = it.p; p < line + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r')
            return bad_event(w, line, len, "trailing characters");
    if (type.p == NULL || obj.p == NULL)
        return bad_event(w, line, len, "no type or object");
    if (jscan_str_eq(type, "ERROR"))
        return error_event(w, obj);
    if (jscan_str_eq(type, "BOOKMARK")) {
        struct jscan_member md, rv;
        if (jscan_find(obj, "metadata", &md, err, sizeof(err)) != 1 ||
            jscan_find(md.value, "resourceVersion", &rv, err, sizeof(err)) !=
                1 ||
            set_rv(w, rv.value) != 0)
            return bad_event(w, line, len, "bookmark without resourceVersion");
        w->stats.bookmarks++;
        w->watch_events++;
        if (!w->periodic_bookmarks &&
            loop_now_ms() + 10000 <
                w->watch_start_ms + (uint64_t)w->timeout_s * 1000) {
            /* The server sends bookmarks every minute: this stream's
             * idle deadline shrinks now, not at the next watch. */
            w->periodic_bookmarks = 1;
            if (w->idle_ms == 0 && w->req != NULL)
                http_set_idle_timeout(w->h, w->req, w->bookmark_idle_ms);
        }
        return 0;
    }
    int is_add = jscan_str_eq(type, "ADDED");
    int is_mod = jscan_str_eq(type, "MODIFIED");
    int is_del = jscan_str_eq(type, "DELETED");
    if (!is_add && !is_mod && !is_del)
        return bad_event(w, line, len, "unknown event type");
    struct cache_obj *o;
    rc = cache_obj_from_text(obj.p, obj.len, NULL, NULL, &o, err, sizeof(err));
    if (rc == CACHE_ENOMEM) {
        snprintf(w->last_error, sizeof(w->last_error), "out of memory");
        w->after = ABORT_BACKOFF;
        return -1;
    }
    if (rc != CACHE_OK)
        return bad_event(w, line, len, err);
    const char *orv = cache_obj_rv(o);
    if (orv[0] == '\0' || strlen(orv) >= WATCH_RV_MAX) {
        cache_obj_unref(o);
        return bad_event(w, line, len, "object without resourceVersion");
    }
    memcpy(w->rv, orv, strlen(orv) + 1);
    w->stats.events++;
    w->watch_events++;
    if (is_del) {
        cache_delete(w->cache, cache_obj_namespace(o), cache_obj_name(o), o);
        cache_obj_unref(o);
    } else if (cache_upsert(w->cache, o) != CACHE_OK) {
        snprintf(w->last_error, sizeof(w->last_error), "out of memory");
        w->after = ABORT_BACKOFF;
        return -1;
    }
    return 0;
}

/* libcurl hands us whatever arrived; events can be split anywhere, so the
 * splitter keeps only the unfinished tail (bounded by max_event). */
static int stream_data(const char *data, size_t len, void *arg)
{
    struct watch *w = arg;
    if (w->cancel_feed || w->state != WATCH_WATCHING)
        return -1;
    w->stats.last_chunk_us = loop_now_us();
    if (!w->stream_open) {
        w->stream_open = 1;
        say(w, WATCH_RECONNECTED, w->rv);
        if (w->cancel_feed || w->state != WATCH_WATCHING)
            return -1;
    }
    int rc = watch_lines_feed(&w->lines, data, len, handle_line, w);
    if (rc == WATCH_LINES_TOOBIG) {
        snprintf(w->last_error, sizeof(w->last_error),
                 "watch event larger than %zu bytes", w->max_event);
        w->after = ABORT_BACKOFF;
        return -1;
    }
    if (rc == WATCH_LINES_NOMEM) {
        snprintf(w->last_error, sizeof(w->last_error), "out of memory");
        w->after = ABORT_BACKOFF;
        return -1;
    }
    return rc < 0 ? -1 : 0;
}

/* The stream ended: decide between relist, backoff and re-watch. */
static void watch_done(struct http_response *r, void *arg)
{
    struct watch *w = arg;
    char msg[sizeof(w->last_error) + 128];
    size_t partial = watch_lines_pending(&w->lines);
    w->req = NULL;
    watch_lines_reset(&w->lines);
    if (r->result == HTTP_EABORTED) {
        if (w->after == ABORT_RELIST) {
            relist(w, w->last_error);
            return;
        }
        fail(w, "watch", w->last_error); /* fail() copies it first */
        return;
    }
    if (r->result == HTTP_EGONE) {
        w->stats.gone++;
        relist(w, r->message);
        return;
    }
    if (r->result != HTTP_OK) {
        if (partial > 0) {
            snprintf(msg, sizeof(msg),
                     "%s (stream cut mid-event: %zu bytes of an incomplete "
                     "event dropped)",
                     r->message, partial);
            fail(w, "watch", msg);
        } else {
            fail(w, "watch", r->message);
        }
        return;
    }
    if (partial > 0) {
        snprintf(msg, sizeof(msg),
                 "stream cut mid-event: %zu bytes of an incomplete event "
                 "dropped",
                 partial);
        fail(w, "watch", msg);
        return;
    }
    if (r->status >= 200 && w->watch_events == 0 &&
        loop_now_ms() - w->watch_start_ms < WATCH_SHORT_MS) {
        fail(w, "watch", "very short watch: closed at once without events");
        return;
    }
    /* A normal close (timeoutSeconds): watch again from where we are. */
    do_watch(w);
}

/* --- public ------------------------------------------------------------ */

struct watch *watch_new(struct http_client *h, const struct watch_opts *o)
{
    if (o == NULL || o->api_path == NULL || o->resource == NULL)
        return NULL;
    struct watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    int fail_alloc = 0;
    w->h = h;
    w->loop = http_client_loop(h);
    w->api_path = strdup(o->api_path);
    w->resource = strdup(o->resource);
    fail_alloc |= w->api_path == NULL || w->resource == NULL;
    if (o->namespace != NULL && o->namespace[0] != '\0') {
        w->ns = qescape(o->namespace);
        fail_alloc |= w->ns == NULL;
    }
    if (o->label_selector != NULL && o->label_selector[0] != '\0') {
        w->lsel = qescape(o->label_selector);
        fail_alloc |= w->lsel == NULL;
    }
    if (o->field_selector != NULL && o->field_selector[0] != '\0') {
        w->fsel = qescape(o->field_selector);
        fail_alloc |= w->fsel == NULL;
    }
    size_t nl = strlen(o->resource) + (w->ns ? strlen(o->namespace) : 0) + 8;
    w->name = malloc(nl);
    if (w->name != NULL) {
        if (w->ns != NULL)
            snprintf(w->name, nl, "%s in %s", o->resource, o->namespace);
        else
            snprintf(w->name, nl, "%s", o->resource);
    }
    w->cache = cache_new();
    fail_alloc |= w->name == NULL || w->cache == NULL;
    w->page_size = o->page_size ? o->page_size : 500;
    w->max_event = o->max_event_size ? o->max_event_size : 16u << 20;
    w->tmin = o->timeout_min_s ? o->timeout_min_s : 300;
    w->tmax = o->timeout_max_s ? o->timeout_max_s : 600;
    if (w->tmax < w->tmin)
        w->tmax = w->tmin;
    w->idle_ms = o->idle_timeout_ms;
    w->bookmark_idle_ms =
        o->bookmark_idle_ms ? o->bookmark_idle_ms : WATCH_BOOKMARK_IDLE_MS;
    watch_backoff_init(&w->backoff,
                       o->backoff_initial_ms ? o->backoff_initial_ms : 800,
                       o->backoff_max_ms ? o->backoff_max_ms : 30000,
                       o->backoff_reset_ms ? o->backoff_reset_ms : 120000);
    watch_lines_init(&w->lines, w->max_event);
    loop_timer_init(&w->timer, timer_cb, w);
    w->rng = loop_now_us() ^ (uint64_t)(uintptr_t)w ^ 0x9e3779b97f4a7c15ull;
    if (w->rng == 0)
        w->rng = 1;
    w->state = WATCH_STOPPED;
    w->need_list = 1;
    if (fail_alloc) {
        watch_free(w);
        return NULL;
    }
    return w;
}

void watch_pause(struct watch *w)
{
    if (w->req != NULL) {
        http_cancel(w->h, w->req);
        w->req = NULL;
    }
    loop_timer_stop(w->loop, &w->timer);
    w->cancel_feed = 1;
    if (w->state == WATCH_LISTING) {
        free(w->cont);
        w->cont = NULL;
    }
    w->state = WATCH_STOPPED;
}

void watch_free(struct watch *w)
{
    if (w == NULL)
        return;
    watch_pause(w);
    cache_free(w->cache);
    watch_lines_free(&w->lines);
    free(w->api_path);
    free(w->resource);
    free(w->ns);
    free(w->lsel);
    free(w->fsel);
    free(w->name);
    free(w->cont);
    free(w->list_kind);
    free(w->list_av);
    free(w);
}

int watch_start(struct watch *w)
{
    if (w->state != WATCH_STOPPED)
        return -EALREADY;
    w->cancel_feed = 0;
    next_attempt(w);
    return 0;
}

int watch_resume(struct watch *w)
{
    return watch_start(w);
}

void watch_set_notice(struct watch *w, watch_notice_fn fn, void *arg)
{
    w->notice = fn;
    w->notice_arg = arg;
}

struct cache *watch_cache(struct watch *w)
{
    return w->cache;
}

int watch_synced(const struct watch *w)
{
    return w->synced;
}

enum watch_state watch_get_state(const struct watch *w)
{
    return w->state;
}

const char *watch_rv(const struct watch *w)
{
    return w->rv;
}

const char *watch_last_error(const struct watch *w)
{
    return w->last_error;
}

void watch_get_stats(const struct watch *w, struct watch_stats *out)
{
    *out = w->stats;
}

const char *watch_name(const struct watch *w)
{
    return w->name;
}
