/*
 * leader: Lease-based leader election (see leader.h). One request at a time
 * per elector: an attempt is a GET of the Lease followed by a create (404)
 * or an update with the read object's resourceVersion; the next attempt is
 * scheduled when the previous one completed. A separate timer enforces the
 * renew deadline, so a hanging request cannot keep a stale leader leading.
 */
#include "leader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dbuf.h"
#include "kinds.h"
#include "log.h"
#include "text.h"

enum op {
    OP_NONE = 0,
    OP_GET,         /* campaign: read the Lease */
    OP_CREATE,      /* campaign: POST a new Lease held by us */
    OP_UPDATE,      /* campaign: PUT our record (acquire or renew) */
    OP_RELEASE,     /* release: PUT the empty holder */
    OP_RELEASE_GET, /* release: re-read after a 409 */
};

struct leader {
    struct http_client *h;
    struct loop *loop;
    char *ns;
    char *name;
    char *id;
    char *path;       /* the Lease */
    char *collection; /* its collection, for the create */
    uint64_t lease_ms;
    uint64_t deadline_ms;
    uint64_t retry_ms;
    uint64_t timeout_ms; /* per request */
    leader_fn fn;
    void *arg;

    int started;
    int leading;
    int released;
    int release_retried;
    int failing; /* the last attempt failed (warn once per streak) */

    enum op op;
    struct http_req *req;
    uint64_t sent_ms; /* when the current write was sent */

    cJSON *lease;        /* the last Lease read or written; owned */
    char *observed_spec; /* its spec, printed, when it last changed */
    uint64_t observed_ms;
    char *holder;    /* holderIdentity of `lease` ("" none) */
    char *logged;    /* the holder last logged by "leader is" */
    long duration_s; /* leaseDurationSeconds of `lease` */

    struct loop_timer tick;     /* next attempt */
    struct loop_timer deadline; /* leader: renew deadline */
    struct loop_timer rtimer;   /* release timeout, or its done at once */
    void (*done)(void *arg);
    void *done_arg;
};

static void attempt(struct leader *le);

/* --- small helpers ----------------------------------------------------- */

void leader_microtime(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    text_rfc3339((long long)ts.tv_sec, ts.tv_nsec / 1000, out);
}

static int set_str(char **dst, const char *s)
{
    char *c = strdup(s);
    if (c == NULL)
        return -ENOMEM;
    free(*dst);
    *dst = c;
    return 0;
}

/* A uniform value in [0, 1) from a per-process xorshift generator: the
 * jitter only needs to de-synchronise replicas, not to be secret. */
static double jitter_unit(void)
{
    static uint64_t s;
    if (s == 0)
        s = loop_now_us() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15u;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (double)(s >> 11) / 9007199254740992.0;
}

static const char *lease_holder_of(const cJSON *spec)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(spec, "holderIdentity");
    return cJSON_IsString(h) ? h->valuestring : "";
}

static long spec_long(const cJSON *spec, const char *key)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(spec, key);
    return cJSON_IsNumber(n) ? (long)n->valuedouble : 0;
}

/* --- observing the record ---------------------------------------------- */

/*
 * Takes ownership of `obj`, the Lease as read or written, and notes the
 * local time when its spec differs from the one seen before: expiry is
 * measured from there (client-go's observedTime). Returns 0 or -ENOMEM.
 */
static int observe(struct leader *le, cJSON *obj)
{
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(obj, "spec");
    char *printed = spec ? cJSON_PrintUnformatted(spec) : strdup("");
    if (printed == NULL || set_str(&le->holder, lease_holder_of(spec)) != 0) {
        free(printed);
        cJSON_Delete(obj);
        return -ENOMEM;
    }
    le->duration_s = spec_long(spec, "leaseDurationSeconds");
    if (le->observed_spec == NULL || strcmp(le->observed_spec, printed) != 0) {
        free(le->observed_spec);
        le->observed_spec = printed;
        le->observed_ms = loop_now_ms();
    } else {
        free(printed);
    }
    cJSON_Delete(le->lease);
    le->lease = obj;
    return 0;
}

/* Milliseconds until the observed holder's lease expires, 0 when expired
 * or free. */
static uint64_t expires_in(const struct leader *le)
{
    if (le->holder == NULL || le->holder[0] == '\0')
        return 0;
    uint64_t dur =
        le->duration_s > 0 ? (uint64_t)le->duration_s * 1000 : le->lease_ms;
    uint64_t end = le->observed_ms + dur;
    uint64_t now = loop_now_ms();
    return end > now ? end - now : 0;
}

/*
 * The Lease to write: the last one read (metadata kept, resourceVersion
 * included as the precondition; managedFields dropped, which an update
 * leaves as they are) with a new spec. Returns the JSON text (free it) or
 * NULL when out of memory. Without a Lease read: a new object to create.
 */
static char *lease_body(struct leader *le, const char *holder, long duration_s,
                        const char *acquire, const char *renew, long trans)
{
    char *out = NULL;
    cJSON *obj =
        le->lease ? cJSON_Duplicate(le->lease, 1) : cJSON_CreateObject();
    cJSON *spec = cJSON_CreateObject();
    if (obj == NULL || spec == NULL)
        goto done;
    if (le->lease == NULL) {
        cJSON *md = cJSON_AddObjectToObject(obj, "metadata");
        if (cJSON_AddStringToObject(obj, "apiVersion",
                                    kinds_table[KINDS_LEASE].api_version) ==
                NULL ||
            cJSON_AddStringToObject(obj, "kind",
                                    kinds_table[KINDS_LEASE].kind) == NULL ||
            md == NULL ||
            cJSON_AddStringToObject(md, "name", le->name) == NULL ||
            cJSON_AddStringToObject(md, "namespace", le->ns) == NULL)
            goto done;
    } else {
        cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
        cJSON_DeleteItemFromObjectCaseSensitive(md, "managedFields");
    }
    if (cJSON_AddStringToObject(spec, "holderIdentity", holder) == NULL ||
        cJSON_AddNumberToObject(spec, "leaseDurationSeconds",
                                (double)duration_s) == NULL ||
        cJSON_AddStringToObject(spec, "acquireTime", acquire) == NULL ||
        cJSON_AddStringToObject(spec, "renewTime", renew) == NULL ||
        cJSON_AddNumberToObject(spec, "leaseTransitions", (double)trans) ==
            NULL)
        goto done;
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "spec");
    cJSON_AddItemToObject(obj, "spec", spec);
    spec = NULL;
    out = cJSON_PrintUnformatted(obj);
done:
    cJSON_Delete(spec);
    cJSON_Delete(obj);
    return out;
}

/* --- requests ---------------------------------------------------------- */

static void on_response(struct http_response *r, void *arg);

/* Sends one request of kind `op`; takes ownership of `body` (may be NULL).
 * Returns 0 or HTTP_ENOMEM. */
static int send_op(struct leader *le, enum op op, enum http_method m,
                   const char *path, char *body)
{
    struct http_call call = {
        .method = m,
        .path = path,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = le->timeout_ms,
        .on_done = on_response,
        .arg = le,
    };
    int rc = http_send(le->h, &call, &le->req);
    free(body);
    if (rc != 0) {
        le->req = NULL;
        return rc;
    }
    le->op = op;
    le->sent_ms = loop_now_ms();
    return 0;
}

static void cancel_req(struct leader *le)
{
    if (le->req != NULL)
        http_cancel(le->h, le->req);
    le->req = NULL;
    le->op = OP_NONE;
}

/* --- campaign ---------------------------------------------------------- */

static void schedule(struct leader *le)
{
    if (le->released || !le->started)
        return;
    uint64_t delay = le->retry_ms;
    if (!le->leading) {
        /* client-go's JitterFactor 1.2 bounds a candidate's wait; it also
         * wakes right when the observed lease runs out. */
        delay += (uint64_t)(0.2 * jitter_unit() * (double)le->retry_ms);
        uint64_t left = expires_in(le);
        if (left > 0 && left + 5 < delay)
            delay = left + 5;
    }
    loop_timer_start(le->loop, &le->tick, delay);
}

static void failed(struct leader *le, const char *what, struct http_response *r)
{
    if (r->result == HTTP_ECONFLICT || r->result == HTTP_EEXISTS) {
        log_debug("lease changed meanwhile, retrying", "lease", le->name, "op",
                  what, NULL);
    } else if (!le->failing || le->leading) {
        log_warn("lease request failed", "lease", le->name, "op", what, "error",
                 http_strerror(r->result), "detail", r->message, NULL);
        le->failing = 1;
    } else {
        log_debug("lease request failed", "lease", le->name, "op", what,
                  "error", http_strerror(r->result), NULL);
    }
}

/* Stops leading; calls fn last so that it may free the elector. */
static void stop_leading(struct leader *le, const char *why)
{
    le->leading = 0;
    loop_timer_stop(le->loop, &le->deadline);
    log_info("lost leadership", "lease", le->name, "identity", le->id, "reason",
             why, NULL);
    if (le->fn != NULL)
        le->fn(le, 0, le->arg);
}

static void on_deadline(struct loop_timer *t, void *arg)
{
    (void)t;
    struct leader *le = arg;
    if (!le->leading)
        return;
    /* A renew still on the wire must not make us leader again later. */
    if (le->op == OP_GET || le->op == OP_UPDATE || le->op == OP_CREATE) {
        cancel_req(le);
        schedule(le);
    }
    stop_leading(le, "renew deadline passed");
}

static void on_tick(struct loop_timer *t, void *arg)
{
    (void)t;
    attempt(arg);
}

static void attempt(struct leader *le)
{
    if (le->released || le->op != OP_NONE)
        return;
    if (send_op(le, OP_GET, HTTP_GET, le->path, NULL) != 0) {
        log_warn("lease request failed", "lease", le->name, "error",
                 "out of memory", NULL);
        schedule(le);
    }
}

/* The Lease was read: take it over, renew it, or wait. */
static void got_lease(struct leader *le, struct http_response *r)
{
    cJSON *obj = cJSON_ParseWithLength(r->body, r->body_len);
    if (obj == NULL || observe(le, obj) != 0) {
        log_warn("lease unreadable", "lease", le->name, NULL);
        schedule(le);
        return;
    }
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(le->lease, "spec");
    int ours = strcmp(le->holder, le->id) == 0;
    if (!ours && expires_in(le) > 0) {
        int changed = le->logged == NULL || strcmp(le->logged, le->holder);
        if (changed && set_str(&le->logged, le->holder) == 0)
            log_info("leader is", "lease", le->name, "holder", le->holder,
                     NULL);
        schedule(le);
        if (le->leading)
            stop_leading(le, "another holder");
        return;
    }
    char now[32];
    leader_microtime(now);
    const cJSON *acq = cJSON_GetObjectItemCaseSensitive(spec, "acquireTime");
    long trans = spec_long(spec, "leaseTransitions");
    const char *acquire = now;
    if (ours && cJSON_IsString(acq))
        acquire = acq->valuestring;
    else if (!ours)
        trans++;
    long dur = (long)((le->lease_ms + 999) / 1000);
    char *body = lease_body(le, le->id, dur, acquire, now, trans);
    if (body == NULL || send_op(le, OP_UPDATE, HTTP_PUT, le->path, body) != 0) {
        log_warn("lease request failed", "lease", le->name, "error",
                 "out of memory", NULL);
        schedule(le);
    }
}

/* Our create or update succeeded: we hold the Lease as of sent_ms. */
static void wrote_lease(struct leader *le, struct http_response *r)
{
    uint64_t sent = le->sent_ms;
    cJSON *obj = cJSON_ParseWithLength(r->body, r->body_len);
    if (obj == NULL || observe(le, obj) != 0) {
        log_warn("lease unreadable", "lease", le->name, NULL);
        schedule(le);
        return;
    }
    le->failing = 0;
    /* The deadline counts from when the successful renew was sent. */
    uint64_t now = loop_now_ms();
    uint64_t due = sent + le->deadline_ms;
    loop_timer_start(le->loop, &le->deadline, due > now ? due - now : 0);
    int became = !le->leading;
    le->leading = 1;
    schedule(le);
    if (became) {
        set_str(&le->logged, le->id);
        log_info("became leader", "lease", le->name, "identity", le->id, NULL);
        if (le->fn != NULL)
            le->fn(le, 1, le->arg);
    }
}

/* --- release ----------------------------------------------------------- */

static void release_finish(struct leader *le)
{
    void (*done)(void *) = le->done;
    void *arg = le->done_arg;
    cancel_req(le);
    loop_timer_stop(le->loop, &le->rtimer);
    le->done = NULL;
    if (done != NULL)
        done(arg);
}

static void on_release_timer(struct loop_timer *t, void *arg)
{
    (void)t;
    struct leader *le = arg;
    if (le->req != NULL)
        log_warn("lease release timed out", "lease", le->name, NULL);
    release_finish(le);
}

static int send_release(struct leader *le)
{
    char now[32];
    leader_microtime(now);
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(le->lease, "spec");
    char *body =
        lease_body(le, "", 1, now, now, spec_long(spec, "leaseTransitions"));
    if (body == NULL)
        return HTTP_ENOMEM;
    return send_op(le, OP_RELEASE, HTTP_PUT, le->path, body);
}

static void released_done(struct leader *le, struct http_response *r)
{
    if (r->result == HTTP_OK) {
        log_info("released the lease", "lease", le->name, "identity", le->id,
                 NULL);
    } else if (r->result == HTTP_ECONFLICT && !le->release_retried) {
        /* A cancelled renew may have landed: re-read and try once more. */
        le->release_retried = 1;
        if (send_op(le, OP_RELEASE_GET, HTTP_GET, le->path, NULL) == 0)
            return;
    } else {
        log_warn("lease release failed", "lease", le->name, "error",
                 http_strerror(r->result), "detail", r->message, NULL);
    }
    release_finish(le);
}

static void release_reread(struct leader *le, struct http_response *r)
{
    cJSON *obj = r->result == HTTP_OK
                     ? cJSON_ParseWithLength(r->body, r->body_len)
                     : NULL;
    if (obj != NULL && observe(le, obj) == 0 &&
        strcmp(le->holder, le->id) == 0 && send_release(le) == 0)
        return;
    release_finish(le);
}

void leader_release(struct leader *le, uint64_t timeout_ms,
                    void (*done)(void *arg), void *arg)
{
    if (le->released)
        return;
    le->released = 1;
    le->done = done;
    le->done_arg = arg;
    loop_timer_stop(le->loop, &le->tick);
    cancel_req(le);
    if (!le->leading || le->lease == NULL) {
        loop_timer_start(le->loop, &le->rtimer, 0);
        return;
    }
    le->leading = 0;
    loop_timer_stop(le->loop, &le->deadline);
    log_info("releasing the lease", "lease", le->name, "identity", le->id,
             NULL);
    if (send_release(le) != 0)
        timeout_ms = 0;
    loop_timer_start(le->loop, &le->rtimer, timeout_ms ? timeout_ms : 5000);
}

/* --- completion dispatch ----------------------------------------------- */

static void on_response(struct http_response *r, void *arg)
{
    struct leader *le = arg;
    enum op op = le->op;
    le->req = NULL;
    le->op = OP_NONE;
    switch (op) {
    case OP_GET:
        if (r->result == HTTP_OK) {
            got_lease(le, r);
        } else if (r->result == HTTP_ENOTFOUND) {
            char now[32];
            leader_microtime(now);
            cJSON_Delete(le->lease);
            le->lease = NULL;
            long dur = (long)((le->lease_ms + 999) / 1000);
            char *body = lease_body(le, le->id, dur, now, now, 0);
            if (body == NULL ||
                send_op(le, OP_CREATE, HTTP_POST, le->collection, body) != 0)
                schedule(le);
        } else {
            failed(le, "get", r);
            schedule(le);
        }
        break;
    case OP_CREATE:
    case OP_UPDATE:
        if (r->result == HTTP_OK) {
            wrote_lease(le, r);
        } else {
            failed(le, op == OP_CREATE ? "create" : "update", r);
            schedule(le);
        }
        break;
    case OP_RELEASE:
        released_done(le, r);
        break;
    case OP_RELEASE_GET:
        release_reread(le, r);
        break;
    case OP_NONE:
        break;
    }
}

/* --- lifecycle --------------------------------------------------------- */

struct leader *leader_new(struct http_client *h, const struct leader_opts *o,
                          leader_fn fn, void *arg)
{
    struct leader *le = calloc(1, sizeof(*le));
    if (le == NULL)
        return NULL;
    le->h = h;
    le->loop = http_client_loop(h);
    le->fn = fn;
    le->arg = arg;
    le->lease_ms = o->lease_ms ? o->lease_ms : 15000;
    le->deadline_ms = o->renew_deadline_ms ? o->renew_deadline_ms : 10000;
    le->retry_ms = o->retry_ms ? o->retry_ms : 2000;
    /* Per-request timeout: about one retry period, at least 1 s (a busy
     * apiserver), at most half the renew deadline. */
    le->timeout_ms = le->retry_ms < 1000 ? 1000 : le->retry_ms;
    if (le->timeout_ms > le->deadline_ms / 2)
        le->timeout_ms = le->deadline_ms / 2;
    le->ns = strdup(o->namespace ? o->namespace : "");
    le->name = strdup(o->name ? o->name : "");
    le->id = strdup(o->identity ? o->identity : "");
    le->holder = strdup("");
    loop_timer_init(&le->tick, on_tick, le);
    loop_timer_init(&le->deadline, on_deadline, le);
    loop_timer_init(&le->rtimer, on_release_timer, le);
    if (le->ns == NULL || le->name == NULL || le->id == NULL ||
        le->holder == NULL) {
        leader_free(le);
        return NULL;
    }
    /* The Lease's paths; a namespace or name kinds_path refuses leaves
     * them NULL, for leader_start to refuse (-EINVAL). */
    struct dbuf p;
    dbuf_init(&p, 1024);
    int nomem = 0;
    if (le->ns[0] != '\0' && le->name[0] != '\0' &&
        kinds_path(KINDS_LEASE, le->ns, le->name, &p) == 0) {
        le->path = dbuf_take(&p, NULL);
        /* The namespace passed above: only memory can fail now. */
        if (kinds_path(KINDS_LEASE, le->ns, NULL, &p) == 0)
            le->collection = dbuf_take(&p, NULL);
        nomem = le->path == NULL || le->collection == NULL;
    }
    nomem |= dbuf_error(&p) == DBUF_NOMEM;
    dbuf_free(&p);
    if (nomem) {
        leader_free(le);
        return NULL;
    }
    return le;
}

int leader_start(struct leader *le)
{
    if (le->started || le->released)
        return -EALREADY;
    if (le->path == NULL || le->id[0] == '\0' ||
        le->lease_ms <= le->deadline_ms ||
        (double)le->deadline_ms <= 1.2 * (double)le->retry_ms)
        return -EINVAL;
    if (loop_timer_start(le->loop, &le->tick, 0) != 0)
        return -ENOMEM;
    le->started = 1;
    log_debug("leader election started", "lease", le->name, "namespace", le->ns,
              "identity", le->id, NULL);
    return 0;
}

int leader_is_leader(const struct leader *le)
{
    return le->leading;
}

const char *leader_holder(const struct leader *le)
{
    return le->holder ? le->holder : "";
}

void leader_free(struct leader *le)
{
    if (le == NULL)
        return;
    if (le->loop != NULL) {
        loop_timer_stop(le->loop, &le->tick);
        loop_timer_stop(le->loop, &le->deadline);
        loop_timer_stop(le->loop, &le->rtimer);
    }
    if (le->req != NULL)
        http_cancel(le->h, le->req);
    cJSON_Delete(le->lease);
    free(le->observed_spec);
    free(le->holder);
    free(le->logged);
    free(le->ns);
    free(le->name);
    free(le->id);
    free(le->path);
    free(le->collection);
    free(le);
}
