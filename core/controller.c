/*
 * controller: the DittoServer reconciler (see controller.h).
 *
 * One reconcile is a small asynchronous state machine on the event loop:
 *   start   DittoServer and children from the caches (plus what our own
 *           writes returned and the watches have not delivered yet), then
 *           policy_eval();
 *   writes  every apply and prune request at once (the HTTP client's rate
 *           limit paces them); an update or prune carries the uid and
 *           resourceVersion of the child it was computed from, so it
 *           lands on that version only (409 otherwise: result "requeue",
 *           retried on the newer one);
 *   status  after the writes, the status is derived again from what they
 *           returned, stamped (lastTransitionTime) and written only when
 *           it differs from the live one;
 *   finish  metrics, Events, one log line, queue_done() with forget or a
 *           rate-limited requeue.
 * A reconcile caused only by Pod events (after a clean full one) is
 * status-only: status() runs alone on the cached children and the status
 * is written when it differs, nothing else.
 * Objects our writes returned are kept per key ("overlays") until the
 * cache holds that version or a newer one: without them a reconcile that
 * runs before the watch events arrive would see stale children and write
 * again. The watch event of our own write (its echo) queues nothing: it
 * matches the overlay, or, when it overtakes the write's response, it is
 * held with the write in flight until the response tells whose version it
 * was (tracking_write_event, op_settle).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "apply.h"
#include "cache.h"
#include "controller.h"
#include "jscan.h"
#include "kinds.h"
#include "log.h"
#include "loop.h"
#include "queue.h"
#include "text.h"
#include "tracking.h"
#include "watch.h"

#define CONTROLLER_NAME "dittoserver"
#define APPLY_QUERY "?fieldManager=" POLICY_MANAGER "&force=true"
#define MANAGED_SELECTOR POLICY_LABEL_MANAGED_BY "=" POLICY_MANAGER
#define DEFAULT_RESYNC_MS (10ULL * 3600 * 1000)
#define TRIM_DELAY_MS 2000
/* ... and at most this long apart under a load that is never idle. */
#define TRIM_MAX_INTERVAL_MS 60000

/* The kinds the controller watches (kinds.h), each with an informer
 * selected by the managed-by label: the children, indexed as in
 * kinds_table. The rendered ones are what a policy may render (policy_eval
 * refuses a result holding another kind); they are applied and pruned.
 * Pods are only observed: the StatefulSet controller makes them, the
 * policy's status() reads them, the operator never writes one (RBAC grants
 * exactly these verbs). */
#define NKINDS KINDS_NCHILD
#define KIND_STS KINDS_STATEFULSET
#define KIND_POD KINDS_POD
#define KIND_DS KINDS_DITTOSERVER /* overlays of the DittoServer itself */

/* --- a reconcile in flight ---------------------------------------------- */

enum op_type { OP_APPLY, OP_DELETE, OP_STATUS, OP_CONFIRM };

struct op {
    struct op *next;
    struct rec *r;
    struct http_req *req;
    enum op_type type;
    int kind;
    char *name;
    int existed;     /* apply: the live object existed */
    int substituted; /* apply: with the live volumeClaimTemplates */
    int tracked;     /* apply, status: tracking_write_begin'd, not ended */
    uint64_t hash;   /* apply: FNV-1a of the body */
};

struct rec {
    struct rec *next;
    struct controller *c;
    char *key;
    const char *ns; /* into nsname */
    const char *name;
    char *nsname; /* "ns\0name" */
    struct cache_obj *ds;
    cJSON *ds_json;
    struct op *ops;
    unsigned pending;
    int stage; /* 0 writes, 1 status */
    uint64_t start_us;
    int eval_rc;
    struct policy_output out;
    struct dbuf err;                       /* policy failure message */
    struct dbuf apply_err;                 /* apply failures, "; "-joined */
    struct dbuf created, updated, deleted; /* for Events */
    unsigned n_writes;
    int failed;           /* a request failed: requeue with backoff */
    int rejected;         /* a 422 within the retry bound */
    int gave_up;          /* a 422 past the bound (reported, not retried) */
    int request_failed;   /* a write failed in this reconcile */
    struct dbuf stale;    /* updates refused with 409: "Kind name, ..." */
    int ds_gone;          /* the status write found no DittoServer: deleted
                             during the reconcile (its watch event ends the
                             key); no Event, no retry */
    int status_only;      /* only Pods changed: status() alone, no writes but
                             the status */
    int full_ok;          /* a full evaluation returned POLICY_OK */
    unsigned long seq;    /* the key's full_seq when this reconcile began */
    unsigned long ps_gen; /* the controller's ps_gen when it began */
};

/* --- the controller ----------------------------------------------------- */

/*
 * Suspects (tracking.h): a key whose rendered child was deleted while its
 * DittoServer was still cached is a repair to do (someone deleted the
 * child), or the garbage collector at work (the DittoServer is gone, and
 * its own DELETED event, on another watch stream, has not come yet: after
 * a relist, or behind a lagging stream). Re-created from the cache in the
 * second case, the child of a deleted owner is deleted again by the
 * collector, which queues the DittoServer again: a write loop for as long
 * as its watch lags (spec/integration/faults_test.sh after apiserver
 * restarts: one ConfigMap written five times in two seconds). So the next
 * reconcile of a suspect reads the DittoServer from the apiserver first
 * (send_confirm): there, it runs again as usual; gone (404, or another
 * uid), nothing is written for that uid until the watch says so too. The
 * state lives in the key's tracking entry: O(1) per reconcile, however
 * many keys are suspects (a mass deletion makes thousands at once).
 */

struct controller {
    struct http_client *http;
    struct loop *loop;
    struct policy_set *ps; /* borrowed; replaced by controller_set_policies */
    unsigned long ps_gen;  /* bumped by every controller_set_policies */
    struct metrics *m;
    struct events *ev;
    char *namespace;
    char *selector;
    char *cluster_domain;
    struct sandbox_limits limits;
    uint64_t resync_ms;
    struct watch *ds_watch;
    struct watch *child_watch[NKINDS];
    struct queue *q;
    struct tracking keys; /* per-key state (tracking.h) */
    struct rec *recs;
    size_t n_recs;
    int leading;
    int draining;
    int running; /* the queue runs (leading, synced, not draining) */
    struct loop_timer resync_timer;
    struct loop_timer trim_timer; /* idle: give freed heap back */
    uint64_t trimmed_ms;          /* the last malloc_trim */
    struct trial_run *trial;      /* NULL: no sliced trial runs */
    /* metrics */
    struct metric *m_total, *m_errors, *m_time;
    struct metric *m_depth, *m_adds, *m_retries, *m_qdur, *m_wdur;
    struct metric *m_eval, *m_eval_errors;
    struct metric *m_cache_objects, *m_cache_bytes;
};

static const char *const ctl_label[] = {CONTROLLER_NAME, NULL};

/* --- small helpers -------------------------------------------------------
 */

/* Room for a key "namespace/name" (63 + 1 + 253 bytes and a NUL). */
#define KEY_MAX 320

/* The queue and tracking key of namespace/name into key. Returns 0, or -1
 * (logged) when it does not fit: never for names the API accepts. */
static int make_key(char key[KEY_MAX], const char *ns, const char *name)
{
    int n = snprintf(key, KEY_MAX, "%s/%s", ns, name);
    if (n < 0 || n >= KEY_MAX) {
        log_error("a DittoServer key too long, ignored", "namespace", ns,
                  "name", name, NULL);
        return -1;
    }
    return 0;
}

/* Counts one in the counter family f (may be NULL: no metrics) under
 * the labels {controller, v}. */
static void metric_inc1(struct metric *f, const char *v)
{
    if (f == NULL)
        return;
    const char *lv[] = {CONTROLLER_NAME, v, NULL};
    metric_inc(f, 1, lv);
}

/* --- informer events -----------------------------------------------------
 */

/* Queues namespace/name; `full` 0 for a Pod event (a status-only
 * reconcile is enough when the last full one was clean). */
static void enqueue(struct controller *c, const char *ns, const char *name,
                    enum queue_prio prio, int full)
{
    char key[KEY_MAX];
    if (make_key(key, ns, name) != 0)
        return;
    if (full)
        tracking_owe_full(&c->keys, key);
    if (queue_add(c->q, key, prio) != 0)
        log_error("cannot queue a DittoServer (out of memory)", "key", key,
                  NULL);
}

/* A DittoServer event: queues it for a full reconcile at high priority,
 * unless the event is the echo of our own status write (the reconcile
 * that wrote it has taken that version into account). While our status
 * write is in flight an ADDED or MODIFIED event waits for its response
 * (tracking_write_event; op_settle queues it unless it was the echo). */
static void on_ds(enum cache_event ev, const struct cache_obj *old_obj,
                  const struct cache_obj *new_obj, void *arg)
{
    struct controller *c = arg;
    const struct cache_obj *o = new_obj != NULL ? new_obj : old_obj;
    char key[KEY_MAX];
    if (make_key(key, cache_obj_namespace(o), cache_obj_name(o)) != 0)
        return;
    if (tracking_overlay_settle(&c->keys, key, KIND_DS, cache_obj_name(o),
                                ev == CACHE_DELETED ? NULL : new_obj))
        return;
    if (ev != CACHE_DELETED && tracking_write_event(&c->keys, key, KIND_DS,
                                                    cache_obj_name(o), new_obj))
        return;
    enqueue(arg, cache_obj_namespace(o), cache_obj_name(o), QUEUE_HIGH, 1);
}

/*
 * A child's event: keeps the owner index (the server label says which
 * DittoServer) and queues that DittoServer, and the previous one when the
 * label changed. A rendered child queues a full reconcile, unless the
 * event is the echo of our own write, or our write of it is in flight
 * (then the write's response decides, as in on_ds); a Pod (never
 * written, so never an echo) a status-only one, at low priority: a new
 * status can wait for new specs. A deletion is never held: it is no echo
 * of an apply.
 */
static void on_child(enum cache_event ev, const struct cache_obj *old_obj,
                     const struct cache_obj *new_obj, void *arg, int kind)
{
    int full = kinds_table[kind].role == KIND_RENDERED;
    enum queue_prio prio = full ? QUEUE_HIGH : QUEUE_LOW;
    struct controller *c = arg;
    const struct cache_obj *o = new_obj != NULL ? new_obj : old_obj;
    const char *ns = cache_obj_namespace(o);
    const char *name = cache_obj_name(o);
    const char *was =
        old_obj ? cache_obj_label(old_obj, POLICY_LABEL_SERVER) : NULL;
    const char *now = new_obj != NULL && ev != CACHE_DELETED
                          ? cache_obj_label(new_obj, POLICY_LABEL_SERVER)
                          : NULL;
    char key[KEY_MAX];
    if (was != NULL && (now == NULL || strcmp(was, now) != 0) &&
        make_key(key, ns, was) == 0) {
        tracking_kids_remove(&c->keys, key, kind, name);
        if (full)
            tracking_overlay_settle(&c->keys, key, kind, name, NULL);
        if (full && ev == CACHE_DELETED)
            tracking_suspect(&c->keys, key);
        enqueue(c, ns, was, prio, full);
    }
    if (now == NULL || make_key(key, ns, now) != 0)
        return;
    tracking_kids_add(&c->keys, key, kind, name);
    if (full && tracking_overlay_settle(&c->keys, key, kind, name, new_obj))
        return;
    if (full && tracking_write_event(&c->keys, key, kind, name, new_obj))
        return;
    enqueue(c, ns, now, prio, full);
}

/* The child informers' callbacks: on_child with the kind (cache_notify_fn
 * carries no kind of its own). */
static void on_configmap(enum cache_event ev, const struct cache_obj *a,
                         const struct cache_obj *b, void *arg)
{
    on_child(ev, a, b, arg, 0);
}

static void on_service(enum cache_event ev, const struct cache_obj *a,
                       const struct cache_obj *b, void *arg)
{
    on_child(ev, a, b, arg, 1);
}

static void on_statefulset(enum cache_event ev, const struct cache_obj *a,
                           const struct cache_obj *b, void *arg)
{
    on_child(ev, a, b, arg, KIND_STS);
}

static void on_pod(enum cache_event ev, const struct cache_obj *a,
                   const struct cache_obj *b, void *arg)
{
    on_child(ev, a, b, arg, KIND_POD);
}

static const cache_notify_fn child_notify[NKINDS] = {
    on_configmap,
    on_service,
    on_statefulset,
    on_pod,
};

/* --- running the queue ---------------------------------------------------
 */

/* cache_list callback of controller_resync: a full reconcile of every
 * DittoServer, at low priority (behind changes). */
static int list_key(const struct cache_obj *o, void *arg)
{
    enqueue(arg, cache_obj_namespace(o), cache_obj_name(o), QUEUE_LOW, 1);
    return 0;
}

void controller_resync(struct controller *c)
{
    cache_list(watch_cache(c->ds_watch), NULL, NULL, list_key, c);
}

/* Runs the queue exactly while leading, synced and not draining; every
 * DittoServer is queued when it starts (what happened while not running
 * was not reconciled). */
static void update_running(struct controller *c)
{
    int run = c->leading && !c->draining && controller_synced(c);
    if (run == c->running)
        return;
    c->running = run;
    if (run) {
        log_info("controller started", "dittoservers",
                 c->namespace[0] ? c->namespace : "(all namespaces)", NULL);
        controller_resync(c);
        queue_resume(c->q);
    } else {
        queue_pause(c->q);
    }
}

/* The next periodic resync: resync_ms plus up to 10% jitter, so that
 * replicas and restarts do not resync in step. */
static uint64_t resync_delay(const struct controller *c)
{
    return c->resync_ms + (uint64_t)((double)c->resync_ms * 0.1 *
                                     ((double)rand() / ((double)RAND_MAX + 1)));
}

/* The periodic resync (only while running), then the next one. */
static void on_resync_timer(struct loop_timer *t, void *arg)
{
    struct controller *c = arg;
    if (c->running) {
        char n[24];
        snprintf(n, sizeof(n), "%zu", cache_len(watch_cache(c->ds_watch)));
        log_info("periodic resync", "dittoservers", n, NULL);
        controller_resync(c);
    }
    loop_timer_start(c->loop, t, resync_delay(c));
}

/* An informer's notices: a first sync may start the queue; a failed
 * watch is only logged (the watch retries with its own backoff, the
 * cache keeps serving what it holds). */
static void on_notice(struct watch *w, enum watch_notice n, const char *detail,
                      void *arg)
{
    struct controller *c = arg;
    if (n == WATCH_SYNCED) {
        log_debug("informer synced", "resource", watch_name(w), NULL);
        update_running(c);
    } else if (n == WATCH_FAILED) {
        log_warn("watch failed, backing off", "resource", watch_name(w),
                 "error", detail ? detail : "", NULL);
    }
}

/* --- a reconcile ---------------------------------------------------------
 */

/*
 * The end of op's write (an apply or a status apply begun with
 * tracking_write_begin): answered with the object of resourceVersion `rv`,
 * or failed or cancelled (rv NULL). An event of its object held
 * meanwhile (tracking_write_event) that was not its echo is queued now,
 * as on_ds / on_child would have: a full reconcile at high priority. The
 * key is still in flight here (the reconcile is not done, or is being
 * cancelled), so this is the dirty copy that runs after queue_done, as
 * it would have been then. Returns what the watch said (tracking.h).
 */
static enum tracking_seen op_settle(struct rec *r, struct op *op,
                                    const char *rv)
{
    if (!op->tracked)
        return TRACKING_SEEN_NONE;
    op->tracked = 0;
    enum tracking_seen s =
        tracking_write_end(&r->c->keys, r->key, op->kind, op->name, rv);
    if (s == TRACKING_SEEN_OTHER)
        enqueue(r->c, r->ns, r->name, QUEUE_HIGH, 1);
    return s;
}

/* Frees a reconcile, cancelling its requests in flight (their callbacks
 * do not run; an event held by one of its writes is queued). The caller
 * has unlinked it, or is freeing them all. */
static void rec_free(struct rec *r)
{
    while (r->ops != NULL) {
        struct op *op = r->ops;
        r->ops = op->next;
        if (op->req != NULL)
            http_cancel(r->c->http, op->req);
        op_settle(r, op, NULL);
        free(op->name);
        free(op);
    }
    cache_obj_unref(r->ds);
    cJSON_Delete(r->ds_json);
    policy_output_free(&r->out);
    dbuf_free(&r->err);
    dbuf_free(&r->apply_err);
    dbuf_free(&r->created);
    dbuf_free(&r->updated);
    dbuf_free(&r->deleted);
    dbuf_free(&r->stale);
    free(r->nsname);
    free(r->key);
    free(r);
}

/* Takes r out of the controller's list of reconciles in flight. */
static void rec_unlink(struct rec *r)
{
    struct rec **p = &r->c->recs;
    while (*p != NULL && *p != r)
        p = &(*p)->next;
    if (*p == r) {
        *p = r->next;
        r->c->n_recs--;
    }
}

/* An Event on the reconciled DittoServer (none without a recorder, or
 * before the DittoServer was read). */
static void emit(struct rec *r, const char *type, const char *reason,
                 const char *message)
{
    if (r->c->ev == NULL || r->ds == NULL)
        return;
    const char *rv = cache_obj_rv(r->ds);
    struct events_ref ref = {
        .api_version = POLICY_OWNER_API_VERSION,
        .kind = POLICY_OWNER_KIND,
        .namespace = r->ns,
        .name = r->name,
        .uid = cache_obj_uid(r->ds),
        .resource_version = rv,
    };
    events_emit(r->c->ev, &ref, type, reason, message);
}

/* Adds "Kind name" to a comma-separated list. */
static void list_add(struct dbuf *b, int kind, const char *name)
{
    if (dbuf_len(b) > 0)
        dbuf_adds(b, ", ");
    dbuf_addf(b, "%s %s", kinds_table[kind].kind, name);
}

/* Returns the heap's free pages to the system (glibc keeps them
 * otherwise). */
static void trim(struct controller *c, uint64_t now_ms)
{
    c->trimmed_ms = now_ms;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* The end of every reconcile: Events, metrics, log, queue. */
static void finish(struct rec *r, const char *result)
{
    struct controller *c = r->c;
    double secs = (double)(loop_now_us() - r->start_us) / 1e6;
    struct dbuf msg;
    dbuf_init(&msg, 4096);

    if (r->ds_gone) {
        /* No Event on a DittoServer that no longer exists. */
        dbuf_reset(&r->created);
        dbuf_reset(&r->updated);
        dbuf_reset(&r->deleted);
    }
    if (dbuf_len(&r->created) > 0) {
        dbuf_addf(&msg, "Created %s", dbuf_ptr(&r->created));
        emit(r, "Normal", "Created", dbuf_ptr(&msg));
        dbuf_reset(&msg);
    }
    if (dbuf_len(&r->updated) > 0) {
        dbuf_addf(&msg, "Updated %s to the rendered spec",
                  dbuf_ptr(&r->updated));
        emit(r, "Normal", "Updated", dbuf_ptr(&msg));
        dbuf_reset(&msg);
    }
    /* A request that failed now (not an object left alone after its
     * retries: that one was announced when it failed). */
    if (r->request_failed)
        emit(r, "Warning", "ApplyFailed", dbuf_ptr(&r->apply_err));
    if (dbuf_len(&r->deleted) > 0) {
        dbuf_addf(&msg, "Deleted %s (no longer rendered by the policy)",
                  dbuf_ptr(&r->deleted));
        emit(r, "Normal", "Deleted", dbuf_ptr(&msg));
        dbuf_reset(&msg);
    }
    dbuf_free(&msg);

    if (c->m != NULL) {
        metric_inc1(c->m_total, result);
        if (strcmp(result, "error") == 0)
            metric_inc(c->m_errors, 1, ctl_label);
        metric_observe(c->m_time, secs, ctl_label);
    }
    char dur[32], writes[16];
    snprintf(dur, sizeof(dur), "%.3fms", secs * 1e3);
    snprintf(writes, sizeof(writes), "%u", r->n_writes);
    const char *why = dbuf_len(&r->err)         ? dbuf_ptr(&r->err)
                      : dbuf_len(&r->apply_err) ? dbuf_ptr(&r->apply_err)
                                                : NULL;
    /* eval: "full" (validate, render, applies) or "status" (a Pod
     * changed: status() alone); "stale": the writes refused with 409. */
    const char *extra = why != NULL               ? "error"
                        : dbuf_len(&r->stale) > 0 ? "stale"
                                                  : NULL;
    log_emit(strcmp(result, "error") == 0 ? LOG_WARN : LOG_INFO, "reconciled",
             "key", r->key, "result", result, "duration", dur, "writes", writes,
             "eval", r->status_only ? "status" : "full", extra,
             why != NULL ? why : dbuf_ptr(&r->stale), NULL);

    /* A full reconcile that left nothing to retry lets Pod events
     * re-derive just the status; anything else owes a full one. */
    struct kstate *ks = tracking_get(&c->keys, r->key, 0);
    int clean = strcmp(result, "success") == 0 && !r->failed && !r->rejected &&
                !r->gave_up && !r->request_failed &&
                r->out.requeue_after_ms == 0;
    if (ks != NULL && !clean)
        tracking_owe_full(&c->keys, r->key);
    else if (ks != NULL && !r->status_only && r->full_ok &&
             ks->full_seq == r->seq)
        ks->clean = 1;
    if (strcmp(result, "error") == 0 || strcmp(result, "requeue") == 0) {
        queue_add_rate_limited(c->q, r->key);
    } else {
        queue_forget(c->q, r->key);
        if (r->out.requeue_after_ms > 0)
            queue_add_after(c->q, r->key, r->out.requeue_after_ms, QUEUE_LOW);
    }
    queue_done(c->q, r->key);
    rec_unlink(r);
    rec_free(r);
    /* A burst (initial sync, a resync) leaves freed heap behind: once the
     * queue has been idle a moment, hand it back to the system. A steady
     * churn is never idle: its freed chunks stay resident between live
     * ones (the soak: an arena of 18 MiB holding 11 MiB, RssAnon growing
     * for half an hour), so trim once a minute there too. */
    uint64_t now = loop_now_ms();
    if (now - c->trimmed_ms >= TRIM_MAX_INTERVAL_MS)
        trim(c, now);
    else
        loop_timer_start(c->loop, &c->trim_timer, TRIM_DELAY_MS);
}

/* Idle for TRIM_DELAY_MS: returns freed heap to the system (glibc keeps
 * it otherwise, and a burst of reconciles leaves megabytes behind). */
static void on_trim_timer(struct loop_timer *t, void *arg)
{
    (void)t;
    struct controller *c = arg;
    if (c->n_recs > 0 || queue_depth(c->q) > 0)
        return; /* the next finish() starts it again */
    trim(c, loop_now_ms());
}

/* Takes op out of r's requests and frees it. */
static void op_unlink(struct rec *r, struct op *op)
{
    struct op **p = &r->ops;
    while (*p != NULL && *p != op)
        p = &(*p)->next;
    if (*p == op)
        *p = op->next;
    free(op->name);
    free(op);
}

static void stage_done(struct rec *r);

static int send_op(struct rec *r, struct op *op, enum http_method m,
                   const char *suffix, const char *ctype, const char *body,
                   size_t len);

/*
 * A request of a reconcile answered. Success (a delete of an object
 * already gone included): counted as a write, the returned object kept
 * as an overlay (tracking_overlay_put; not when its echo overtook the
 * answer: the cache holds it already) and listed for the Events; an
 * apply that went through unchanged by the core clears the object's
 * reject. A 409 on an update or a prune (its precondition: the object
 * changed since) is listed in r->stale, for a quick retry. Failure: reported in
 * r->apply_err; a 422 on an apply counts a refusal of that rendering
 * (rejected, or gave_up at CONTROLLER_MAX_REJECTS), anything else sets
 * r->failed (retry). The last answer of a stage moves the reconcile on
 * (stage_done). Either way an event of the object held while the write
 * was in flight is settled (op_settle): dropped as the echo, or queued.
 */
static void on_op_done(struct http_response *resp, void *arg)
{
    struct op *op = arg;
    struct rec *r = op->r;
    struct controller *c = r->c;
    op->req = NULL;
    int rc = resp->result;
    const char *kname = kinds_table[op->kind].kind;

    if (rc == HTTP_OK || (op->type == OP_DELETE && rc == HTTP_ENOTFOUND)) {
        r->n_writes++;
        struct cache_obj *obj = NULL;
        char err[128];
        if (op->type != OP_DELETE && resp->body_len > 0 &&
            cache_obj_from_text(resp->body, resp->body_len, NULL, NULL, &obj,
                                err, sizeof(err)) != CACHE_OK)
            obj = NULL;
        /* Its echo came first: the cache holds this very version, no
         * overlay needed. */
        if (op_settle(r, op, obj != NULL ? cache_obj_rv(obj) : NULL) !=
                TRACKING_SEEN_ECHO &&
            obj != NULL)
            tracking_overlay_put(&c->keys, r->key, op->kind, op->name, obj,
                                 loop_now_ms());
        cache_obj_unref(obj);
        if (op->type == OP_DELETE) {
            tracking_overlay_forget(&c->keys, r->key, op->kind, op->name);
            list_add(&r->deleted, op->kind, op->name);
        } else if (op->type == OP_APPLY) {
            list_add(op->existed ? &r->updated : &r->created, op->kind,
                     op->name);
            if (!op->substituted)
                tracking_reject_forget(tracking_get(&c->keys, r->key, 0),
                                       op->kind, op->name);
        }
    } else if (op->type == OP_STATUS && rc == HTTP_ENOTFOUND) {
        /* Deleted while it was reconciled (the soak saw it under churn):
         * not a failure to retry or to warn about; what was applied for it
         * goes with it (garbage collector). */
        r->ds_gone = 1;
        log_debug("DittoServer deleted before its status was written", "key",
                  r->key, NULL);
    } else if (rc == HTTP_ECONFLICT) {
        /* The update (or prune) carried the uid and resourceVersion it was
         * computed from (apply_set_precondition, send_prunes): the object
         * changed since, or is gone. Not a failure: the watch brings the
         * newer version, and the reconcile runs again on it (result
         * "requeue", per-key backoff). A held write of a replica that no
         * longer leads ends here too. */
        list_add(&r->stale, op->kind, op->name);
        log_debug("write refused: the object changed since it was read (409)",
                  "key", r->key, "kind", kname, "name", op->name, "detail",
                  resp->message, NULL);
    } else {
        r->request_failed = 1;
        const char *verb = op->type == OP_DELETE   ? "delete"
                           : op->type == OP_STATUS ? "write the status of"
                                                   : "apply";
        if (dbuf_len(&r->apply_err) > 0)
            dbuf_adds(&r->apply_err, "; ");
        dbuf_addf(&r->apply_err, "cannot %s %s %s: %s%s%s", verb, kname,
                  op->name, http_strerror(rc), resp->message[0] ? ": " : "",
                  resp->message);
        if (rc == HTTP_EINVALID && op->type == OP_APPLY) {
            /* The API refuses this object as rendered: retry a few times
             * (a webhook or a quota may change its mind), then leave it. */
            struct reject *rj =
                tracking_reject_get(&c->keys, r->key, op->kind, op->name);
            if (rj != NULL) {
                if (rj->hash != op->hash)
                    rj->attempts = 0;
                rj->hash = op->hash;
                rj->attempts++;
                free(rj->message);
                rj->message = strdup(resp->message);
                if (rj->attempts >= CONTROLLER_MAX_REJECTS)
                    r->gave_up = 1;
                else
                    r->rejected = 1;
            } else {
                r->failed = 1;
            }
        } else {
            r->failed = 1;
        }
    }
    /* A failure (409 and 404 included) after a held event: queued. */
    op_settle(r, op, NULL);
    op_unlink(r, op);
    if (--r->pending == 0)
        stage_done(r);
}

/*
 * Sends the request of `op` (taken over: freed on failure, else when its
 * response is handled) on the object op->kind/r->ns/op->name, whose path
 * kinds_path builds and checks, followed by `suffix` ("/status", a
 * query). Returns 0, or -1 with r->failed set (a path kinds_path refuses,
 * out of memory, the client refused the request).
 */
static int send_op(struct rec *r, struct op *op, enum http_method m,
                   const char *suffix, const char *ctype, const char *body,
                   size_t len)
{
    struct dbuf path;
    dbuf_init(&path, 2048);
    if (kinds_path(op->kind, r->ns, op->name, &path) != 0 ||
        dbuf_adds(&path, suffix) != DBUF_OK) {
        log_error("cannot build a request path", "key", r->key, "detail",
                  dbuf_ptr(&path), NULL);
        dbuf_free(&path);
        free(op->name);
        free(op);
        r->failed = 1;
        return -1;
    }
    struct http_call call = {
        .method = m,
        .path = dbuf_ptr(&path),
        .content_type = ctype,
        .body = body,
        .body_len = len,
        .on_done = on_op_done,
        .arg = op,
    };
    op->r = r;
    op->next = r->ops;
    r->ops = op;
    /* Its events wait for the response (tracking_write_event). */
    op->tracked =
        (op->type == OP_APPLY || op->type == OP_STATUS) &&
        tracking_write_begin(&r->c->keys, r->key, op->kind, op->name) == 0;
    int rc = http_send(r->c->http, &call, &op->req);
    dbuf_free(&path);
    if (rc != 0) {
        r->ops = op->next;
        op_settle(r, op, NULL);
        free(op->name);
        free(op);
        r->failed = 1;
        return -1;
    }
    r->pending++;
    return 0;
}

/* A request of type t on kind/name (copied); NULL out of memory. */
static struct op *op_new(enum op_type t, int kind, const char *name)
{
    struct op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->type = t;
    op->kind = kind;
    op->name = strdup(name);
    if (op->name == NULL) {
        free(op);
        return NULL;
    }
    return op;
}

/* The answer to send_confirm: the DittoServer as the apiserver has it. */
static void on_confirm_done(struct http_response *resp, void *arg)
{
    struct op *op = arg;
    struct rec *r = op->r;
    struct controller *c = r->c;
    op->req = NULL;
    op_unlink(r, op);
    const char *uid = cache_obj_uid(r->ds);
    int gone = resp->result == HTTP_ENOTFOUND;
    if (resp->result == HTTP_OK) {
        cJSON *o = cJSON_ParseWithLength(resp->body, resp->body_len);
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(md, "uid");
        gone = !cJSON_IsString(u) || strcmp(u->valuestring, uid) != 0;
        cJSON_Delete(o);
    } else if (!gone) {
        dbuf_addf(&r->apply_err, "cannot read DittoServer %s: %s%s%s", r->name,
                  http_strerror(resp->result), resp->message[0] ? ": " : "",
                  resp->message);
        r->failed = 1;
        finish(r, "error");
        return;
    }
    struct kstate *ks = tracking_get(&c->keys, r->key, 0);
    if (!gone) {
        /* There: a repair. Again, from the cache as usual. */
        tracking_suspect_clear(ks);
        enqueue(c, r->ns, r->name, QUEUE_HIGH, 1);
    } else if (ks != NULL && ks->suspect) {
        tracking_suspect_gone(ks, uid);
        log_info("DittoServer gone on the apiserver, its watch event still to "
                 "come: its children are not re-created",
                 "key", r->key, "uid", uid, NULL);
    }
    finish(r, "success");
}

/* Reads r's DittoServer from the apiserver (r a suspect): 0, or -1 when
 * the request could not be sent. */
static int send_confirm(struct rec *r)
{
    struct op *op = op_new(OP_CONFIRM, KIND_DS, r->name);
    if (op == NULL)
        return -1;
    struct dbuf path;
    dbuf_init(&path, 2048);
    if (kinds_path(KIND_DS, r->ns, r->name, &path) != 0) {
        dbuf_free(&path);
        free(op->name);
        free(op);
        return -1;
    }
    struct http_call call = {
        .method = HTTP_GET,
        .path = dbuf_ptr(&path),
        .on_done = on_confirm_done,
        .arg = op,
    };
    op->r = r;
    op->next = r->ops;
    r->ops = op;
    int rc = http_send(r->c->http, &call, &op->req);
    dbuf_free(&path);
    if (rc != 0) {
        op_unlink(r, op);
        return -1;
    }
    return 0;
}

/* The children of the DittoServer: cached objects carrying its label,
 * each replaced by a newer overlay when there is one. */
struct child {
    int kind;
    const char *name;
    const struct cache_obj *obj;
};

struct children {
    struct child *v;
    size_t n, cap;
    int nomem;
};

/* Appends a child (name and obj borrowed). Returns 0, or 1 out of memory
 * (ch->nomem set; the child is left out). */
static int child_add(struct children *ch, int kind, const char *name,
                     const struct cache_obj *obj)
{
    if (ch->n == ch->cap) {
        size_t cap = ch->cap ? ch->cap * 2 : 8;
        struct child *v = realloc(ch->v, cap * sizeof(*v));
        if (v == NULL) {
            ch->nomem = 1;
            return 1;
        }
        ch->v = v;
        ch->cap = cap;
    }
    ch->v[ch->n++] = (struct child){kind, name, obj};
    return 0;
}

/* The child kind/name of ch, or NULL. Linear: a DittoServer has a
 * handful of children. */
static const struct child *child_find(const struct children *ch, int kind,
                                      const char *name)
{
    for (size_t i = 0; i < ch->n; i++)
        if (ch->v[i].kind == kind && strcmp(ch->v[i].name, name) == 0)
            return &ch->v[i];
    return NULL;
}

/* Collects into ch the children of the DittoServer `key` in namespace
 * `ns`: the cached objects its owner index names, each replaced by a
 * newer overlay of our writes, then the overlays the cache does not hold
 * yet (an overlay past its TTL is dropped). The entries are borrowed from
 * the caches and the tracking table until either changes. Returns 0, or
 * -1 out of memory (ch then holds what fitted; free ch->v either way). */
static int gather(struct controller *c, const char *key, const char *ns,
                  struct children *ch)
{
    struct kstate *ks = tracking_get(&c->keys, key, 0);
    for (size_t i = 0; ks != NULL && i < ks->n_kids; i++) {
        int kind = ks->kids[i].kind;
        const struct cache_obj *o =
            cache_get(watch_cache(c->child_watch[kind]), ns, ks->kids[i].name);
        if (o != NULL)
            child_add(ch, kind, cache_obj_name(o), o);
    }
    for (size_t i = 0; i < ch->n; i++)
        ch->v[i].obj = tracking_newest(ks, ch->v[i].kind, ch->v[i].name,
                                       ch->v[i].obj, loop_now_ms());
    /* Overlays of objects the cache does not hold (yet). */
    for (size_t i = 0; ks != NULL && i < ks->n_ov; i++) {
        struct overlay *o = &ks->ov[i];
        if (o->kind == KIND_DS || child_find(ch, o->kind, o->name) != NULL)
            continue;
        if (loop_now_ms() - o->at_ms > TRACKING_OVERLAY_TTL_MS) {
            tracking_overlay_drop(ks, i--);
            continue;
        }
        child_add(ch, o->kind, o->name, o->obj);
    }
    return ch->nomem ? -1 : 0;
}

/* The policy's `observed` for the children ch (apply_observed_json), their
 * texts copied out of the caches into `texts` first. Returns DBUF_OK, or
 * DBUF_NOMEM / the dbufs' error. */
static int observed_json(const struct children *ch, struct dbuf *texts,
                         struct dbuf *b)
{
    struct apply_child *v = malloc((ch->n ? ch->n : 1) * sizeof(*v));
    if (v == NULL)
        return DBUF_NOMEM;
    int rc = DBUF_OK;
    for (size_t i = 0; i < ch->n && rc == DBUF_OK; i++) {
        v[i].kind = ch->v[i].kind;
        v[i].name = ch->v[i].name;
        v[i].len = dbuf_len(texts); /* the offset until all are in */
        rc = cache_obj_json_append(ch->v[i].obj, texts);
    }
    for (size_t i = 0; i < ch->n && rc == DBUF_OK; i++) {
        v[i].json = dbuf_ptr(texts) + v[i].len;
        v[i].len = (i + 1 < ch->n ? v[i + 1].len : dbuf_len(texts)) - v[i].len;
    }
    if (rc == DBUF_OK)
        rc = apply_observed_json(v, ch->n, b);
    free(v);
    return rc;
}

/*
 * Evaluates the policy set `ps` on the DittoServer `ds` and its children
 * `ch`, with the controller's limits and cluster domain: what a reconcile
 * evaluates, and what controller_try_policies evaluates for a candidate
 * set. `out` (initialised) receives the result, `err` the failure; *secs
 * the time policy_eval took. Returns policy_eval's status, or, when the
 * observed JSON cannot be built (*secs -1: nothing evaluated),
 * POLICY_ENOMEM or POLICY_EFAIL (past its 64 MiB) with "the observed
 * children: <dbuf_strerror>" in err.
 */
static int run_policy(struct controller *c, struct policy_set *ps,
                      const struct cache_obj *ds, const struct children *ch,
                      int status_only, struct policy_output *out,
                      struct dbuf *err, double *secs)
{
    struct dbuf obs, texts;
    dbuf_init(&obs, (size_t)64 << 20);
    dbuf_init(&texts, (size_t)64 << 20);
    *secs = -1;
    /* The DittoServer's text first, then the children's. */
    int orc = cache_obj_json_append(ds, &texts);
    size_t ds_len = dbuf_len(&texts);
    if (orc == DBUF_OK)
        orc = observed_json(ch, &texts, &obs);
    if (orc != DBUF_OK) {
        dbuf_free(&obs);
        dbuf_free(&texts);
        dbuf_addf(err, "the observed children: %s", dbuf_strerror(orc));
        return orc == DBUF_NOMEM ? POLICY_ENOMEM : POLICY_EFAIL;
    }
    struct policy_input in = {
        .ds_json = dbuf_ptr(&texts),
        .ds_len = ds_len,
        .observed_json = dbuf_ptr(&obs),
        .observed_len = dbuf_len(&obs),
        .cluster_domain = c->cluster_domain,
        .status_only = status_only,
    };
    uint64_t t0 = loop_now_us();
    int rc = policy_eval(ps, &c->limits, &in, out, err);
    *secs = (double)(loop_now_us() - t0) / 1e6;
    dbuf_free(&obs);
    dbuf_free(&texts);
    return rc;
}

/* Runs the controller's policy set on the DittoServer and the children
 * now known, into r->out and r->err (reset first), and counts it in the
 * evaluation metrics. Returns policy_eval's status. */
static int evaluate(struct rec *r, struct children *ch, int status_only)
{
    struct controller *c = r->c;
    double secs;
    dbuf_reset(&r->err);
    int rc =
        run_policy(c, c->ps, r->ds, ch, status_only, &r->out, &r->err, &secs);
    if (c->m != NULL && secs >= 0) {
        metric_observe(c->m_eval, secs, NULL);
        if (rc < 0) {
            const char *lv[] = {rc == POLICY_ETIMEOUT  ? "timeout"
                                : rc == POLICY_EMEMORY ? "memory"
                                                       : "error",
                                NULL};
            metric_inc(c->m_eval_errors, 1, lv);
        }
    }
    return rc;
}

/* Does the child carry a controller ownerReference with our uid? */
static int owned_by(const struct cache_obj *o, const char *uid)
{
    cJSON *j = cache_obj_parse(o);
    int yes = apply_owned_by(j, uid);
    cJSON_Delete(j);
    return yes;
}

/*
 * Queues a server-side apply of every rendered object (r->out.objects, the
 * result policy_eval checked: managed kinds only, each with a name) that
 * the live child does not already hold (apply_is_subset), each stamped
 * with the applied-hash annotation (FNV-1a of what the policy rendered);
 * an update also with the live child's uid and resourceVersion
 * (apply_set_precondition), so that it lands only on the version it was
 * computed from: a write held in the network past a change, by a new
 * leader or anyone, is refused (409) instead of undoing it. A create
 * carries no precondition (none exists for one): an owner deleted
 * meanwhile leaves the child to the garbage collector.
 * An object the API refused as rendered CONTROLLER_MAX_REJECTS times is
 * not sent again while it renders the same: it is reported in
 * r->apply_err (r->gave_up); a refused StatefulSet is applied with the
 * live volumeClaimTemplates (which cannot change). *rendered receives the
 * parsed list (the caller frees it; send_prunes reads it). Returns 0, or
 * -1 with the reason in r->err (out of memory) before any request of the
 * failing object; a request that cannot be queued sets r->failed.
 */
static int send_applies(struct rec *r, struct children *ch, cJSON **rendered)
{
    struct controller *c = r->c;
    /* Integers stay exact beyond 2^53 (raw nodes), as rendered. */
    cJSON *objs =
        jscan_cjson_parse(dbuf_ptr(&r->out.objects), dbuf_len(&r->out.objects));
    *rendered = objs;
    if (objs == NULL) {
        dbuf_adds(&r->err, "out of memory parsing the rendered objects");
        return -1;
    }
    struct kstate *ks = tracking_get(&c->keys, r->key, 0);
    cJSON *o;
    cJSON_ArrayForEach(o, objs)
    {
        const char *nm;
        /* policy_eval refused any other kind, and objects without a
         * name, before this (check_kinds in policy.c). */
        int kind = apply_rendered_kind(o, &nm);
        if (kind < 0) {
            dbuf_adds(&r->err, "internal error: an unchecked rendering");
            return -1;
        }
        /* The hash of what the policy rendered tells a changed rendering
         * from a stable one (and a reject of it from one of another). */
        uint64_t h;
        if (apply_annotate_hash(o, &h) != 0) {
            dbuf_adds(&r->err, "out of memory");
            return -1;
        }

        const struct child *live = child_find(ch, kind, nm);
        cJSON *lj = live != NULL ? cache_obj_parse(live->obj) : NULL;
        /* Refused before as rendered now (the same hash)? */
        struct reject *rj = tracking_reject_find(ks, kind, nm);
        if (rj != NULL && rj->hash != h)
            rj = NULL;
        int skip = 0, substituted = 0;
        if (rj != NULL && rj->attempts >= CONTROLLER_MAX_REJECTS) {
            /* Refused as rendered, several times: report, not retry. */
            if (dbuf_len(&r->apply_err) > 0)
                dbuf_adds(&r->apply_err, "; ");
            dbuf_addf(&r->apply_err, "cannot apply %s %s: %s",
                      kinds_table[kind].kind, nm,
                      rj->message ? rj->message : "");
            r->gave_up = 1;
            skip = 1;
        } else if (rj != NULL && lj != NULL && kind == KIND_STS) {
            /* The API refused this StatefulSet: its volume claim templates
             * cannot change. Apply everything else with the live ones
             * (status() explains the storage change in Reconciled). */
            substituted = apply_keep_live_claims(o, lj) == 0;
        }
        if (!skip && lj != NULL) {
            struct dbuf why;
            dbuf_init(&why, 1024);
            int same = apply_is_subset(o, lj, &why) == 1;
            if (!same && log_enabled(LOG_DEBUG))
                log_debug("child differs", "key", r->key, "kind",
                          kinds_table[kind].kind, "name", nm, "path",
                          dbuf_ptr(&why), NULL);
            dbuf_free(&why);
            skip = same;
        }
        cJSON_Delete(lj);
        if (!skip && live != NULL &&
            apply_set_precondition(o, cache_obj_uid(live->obj),
                                   cache_obj_rv(live->obj)) != 0) {
            dbuf_adds(&r->err, "out of memory");
            return -1;
        }
        char *body = skip ? NULL : cJSON_PrintUnformatted(o);
        if (!skip && body == NULL) {
            dbuf_adds(&r->err, "out of memory");
            return -1;
        }
        size_t blen = body != NULL ? strlen(body) : 0;
        struct op *op = skip ? NULL : op_new(OP_APPLY, kind, nm);
        if (!skip && op == NULL) {
            free(body);
            r->failed = 1;
            continue;
        }
        if (op != NULL) {
            op->existed = live != NULL;
            op->hash = h;
            op->substituted = substituted;
            send_op(r, op, HTTP_PATCH, APPLY_QUERY, HTTP_CT_APPLY_PATCH, body,
                    blen);
        }
        free(body);
    }
    return 0;
}

/* Deletes the rendered-kind children whose controller ownerReference is
 * ours (never a Pod, never another owner's object) that the policy no
 * longer renders, each with a uid and resourceVersion precondition (a
 * recreated namesake is spared, and so is a child changed since: 409,
 * retried like a stale update); a request that cannot be queued sets
 * r->failed. */
static void send_prunes(struct rec *r, struct children *ch,
                        const cJSON *rendered)
{
    const char *uid = cache_obj_uid(r->ds);
    for (size_t i = 0; i < ch->n; i++) {
        struct child *cd = &ch->v[i];
        int wanted = 0;
        const cJSON *o;
        cJSON_ArrayForEach(o, rendered)
        {
            const char *nm;
            if (apply_rendered_kind(o, &nm) == cd->kind &&
                strcmp(nm, cd->name) == 0)
                wanted = 1;
        }
        /* Pods are the StatefulSet's, never ours to delete. */
        if (kinds_table[cd->kind].role != KIND_RENDERED || wanted ||
            !owned_by(cd->obj, uid))
            continue;
        struct op *op = op_new(OP_DELETE, cd->kind, cd->name);
        if (op == NULL) {
            r->failed = 1;
            continue;
        }
        struct dbuf body;
        dbuf_init(&body, 512);
        /* Only that object as it was read: a recreated namesake has
         * another uid, a changed one another resourceVersion. */
        const char *rv = cache_obj_rv(cd->obj);
        dbuf_addf(&body,
                  "{\"apiVersion\":\"v1\",\"kind\":\"DeleteOptions\","
                  "\"propagationPolicy\":\"Background\",\"preconditions\":"
                  "{\"uid\":\"%s\"%s%s%s}}",
                  cache_obj_uid(cd->obj),
                  rv[0] ? ",\"resourceVersion\":\"" : "", rv,
                  rv[0] ? "\"" : "");
        send_op(r, op, HTTP_DELETE, "", NULL, dbuf_ptr(&body), dbuf_len(&body));
        dbuf_free(&body);
    }
}

/* metadata.generation of the DittoServer, or 0 when absent. */
static double ds_generation(const cJSON *ds)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ds, "metadata"), "generation");
    return cJSON_IsNumber(g) ? g->valuedouble : 0;
}

/*
 * Writes the status when it differs from the live one, fenced like an
 * update of a child: with the uid and resourceVersion of the DittoServer
 * it was derived from (a 409 retries on the newer one). `st` is the status
 * the policy derived (taken over), or NULL after a policy failure: then
 * the live status with a Reconciled=False condition. Returns 1 when a
 * request went out.
 */
static int send_status(struct rec *r, cJSON *st)
{
    cJSON *live_status = cJSON_GetObjectItemCaseSensitive(r->ds_json, "status");
    if (st == NULL) {
        st = live_status != NULL ? cJSON_Duplicate(live_status, 1)
                                 : cJSON_CreateObject();
        if (st != NULL &&
            apply_set_reconciled(st, "PolicyError", dbuf_ptr(&r->err),
                                 ds_generation(r->ds_json)) != 0) {
            cJSON_Delete(st);
            st = NULL;
        }
    }
    /* Every addition checked: a body with a field missing would be a
     * different status, not a failed write. */
    cJSON *desired = st != NULL ? apply_status_body(r->name, r->ns) : NULL;
    if (desired == NULL || !cJSON_AddItemToObject(desired, "status", st)) {
        cJSON_Delete(desired);
        cJSON_Delete(st);
        r->failed = 1;
        return 0;
    }
    if (dbuf_len(&r->apply_err) > 0) {
        int policy_says_false = apply_condition_is(st, "Reconciled", "False");
        /* The policy's own explanation (StorageImmutable) is the better
         * one; otherwise say what the API refused. */
        if (!policy_says_false &&
            apply_set_reconciled(st, "ApplyFailed", dbuf_ptr(&r->apply_err),
                                 ds_generation(r->ds_json)) != 0) {
            cJSON_Delete(desired);
            r->failed = 1;
            return 0;
        }
    }
    char now[32];
    apply_rfc3339((long long)time(NULL), now);
    /* A condition without its time would be written as it is. */
    if (apply_stamp_conditions(st, live_status, now) != 0) {
        cJSON_Delete(desired);
        r->failed = 1;
        return 0;
    }
    if (live_status != NULL && apply_status_equal(st, live_status)) {
        cJSON_Delete(desired);
        return 0;
    }
    const char *phase =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "phase"));
    const char *old_phase = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(live_status, "phase"));
    /* Transitions only: the first phase comes with the Created Event. */
    if (phase != NULL && old_phase != NULL && strcmp(phase, old_phase)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "Phase %s -> %s", old_phase, phase);
        emit(r, strcmp(phase, "Failed") == 0 ? "Warning" : "Normal", phase,
             msg);
    }
    char *body = apply_set_precondition(desired, cache_obj_uid(r->ds),
                                        cache_obj_rv(r->ds)) == 0
                     ? cJSON_PrintUnformatted(desired)
                     : NULL;
    cJSON_Delete(desired);
    struct op *op = body != NULL ? op_new(OP_STATUS, KIND_DS, r->name) : NULL;
    if (op == NULL) {
        free(body);
        r->failed = 1;
        return 0;
    }
    int sent = send_op(r, op, HTTP_PATCH, "/status" APPLY_QUERY,
                       HTTP_CT_APPLY_PATCH, body, strlen(body)) == 0;
    free(body);
    return sent;
}

/* The result label of a finished reconcile (controller-runtime's):
 * "error" (retried with backoff) for a failed request, a refusal within
 * the retry bound or a policy failure; else "requeue" (retried with the
 * same backoff, not an error) when a write was refused as stale (409);
 * else "requeue_after" when status() asked for one, or "success". An
 * object given up after its refusals is not an error: it is reported in
 * the status and not retried until it renders anew. */
static const char *result_of(const struct rec *r)
{
    if (r->failed || r->rejected || r->eval_rc < 0)
        return "error";
    if (dbuf_len(&r->stale) > 0)
        return "requeue";
    return r->out.requeue_after_ms > 0 ? "requeue_after" : "success";
}

/* The status stage: derive it again when our writes changed children.
 * Not after a child's update was refused as stale: the retry on its newer
 * version writes the status. */
static void status_stage(struct rec *r)
{
    struct controller *c = r->c;
    r->stage = 1;
    if (dbuf_len(&r->stale) > 0) {
        finish(r, result_of(r));
        return;
    }
    cJSON *desired = NULL;
    if (r->eval_rc >= 0) {
        /* After a change of policy set meanwhile, the status derived
         * before the writes stands: the new set's status() is not asked
         * about a rendering of the old one (the full reconcile that
         * controller_set_policies queued follows). */
        if (r->n_writes > 0 && r->ps_gen == c->ps_gen) {
            struct children ch = {0};
            if (gather(r->c, r->key, r->ns, &ch) == 0) {
                int rc = evaluate(r, &ch, 1);
                if (rc >= 0)
                    r->eval_rc = rc;
            }
            free(ch.v);
        }
        desired = jscan_cjson_parse(dbuf_ptr(&r->out.status),
                                    dbuf_len(&r->out.status));
        if (desired == NULL) {
            r->failed = 1;
            finish(r, "error");
            return;
        }
    }
    if (send_status(r, desired) == 0)
        finish(r, result_of(r));
}

/* The last request of a stage answered: the writes lead to the status
 * stage, the status write to finish(). */
static void stage_done(struct rec *r)
{
    if (r->stage == 0)
        status_stage(r);
    else
        finish(r, result_of(r));
}

/*
 * The queue's callback for one key ("ns/name"; the queue runs one
 * reconcile per key at a time). Reads the DittoServer and its children
 * from the caches (plus the overlays of our own writes), then: a deleted
 * DittoServer forgets its tracking and Events; one being deleted is left
 * alone; after a clean full reconcile, only Pods having changed since,
 * status() alone runs and only the status may be written; otherwise the
 * full policy runs (validate, render, status): InvalidSpec and
 * PolicyError give a Warning Event and no write but the status, a good
 * rendering sends its applies and prunes at once. The status stage and
 * finish() follow once every request has answered; finish() calls
 * queue_done (forget, requeue after, or a rate-limited retry). Never
 * fails: out of memory is logged and retried with backoff.
 */
static void reconcile(struct queue *q, const char *key, void *arg)
{
    (void)q;
    struct controller *c = arg;
    struct rec *r = calloc(1, sizeof(*r));
    const char *slash = strchr(key, '/');
    if (r == NULL || slash == NULL || (r->key = strdup(key)) == NULL ||
        (r->nsname = strdup(key)) == NULL) {
        if (r != NULL) {
            free(r->key);
            free(r);
        }
        log_error("reconcile: out of memory", "key", key, NULL);
        tracking_owe_full(&c->keys, key);
        queue_add_rate_limited(c->q, key);
        queue_done(c->q, key);
        return;
    }
    r->c = c;
    r->ps_gen = c->ps_gen;
    r->start_us = loop_now_us();
    r->nsname[slash - key] = '\0';
    r->ns = r->nsname;
    r->name = r->nsname + (slash - key) + 1;
    policy_output_init(&r->out);
    dbuf_init(&r->err, 64 * 1024);
    dbuf_init(&r->apply_err, 8 * 1024);
    dbuf_init(&r->created, 4096);
    dbuf_init(&r->updated, 4096);
    dbuf_init(&r->deleted, 4096);
    dbuf_init(&r->stale, 4096);
    r->next = c->recs;
    c->recs = r;
    c->n_recs++;

    struct kstate *ks = tracking_get(&c->keys, key, 0);
    r->seq = ks != NULL ? ks->full_seq : 0;
    /* Objects the API refused are reported by every full reconcile (in
     * Reconciled): a status-only one would lose that. */
    r->status_only = ks != NULL && ks->clean && ks->n_rej == 0;
    const struct cache_obj *ds =
        cache_get(watch_cache(c->ds_watch), r->ns, r->name);
    if (ds == NULL) {
        /* Deleted (children go by garbage collection, PVCs stay). */
        tracking_release(&c->keys, key);
        if (c->ev != NULL)
            events_forget(c->ev, r->ns, r->name);
        finish(r, "success");
        return;
    }
    ds = tracking_newest(ks, KIND_DS, r->name, ds, loop_now_ms());
    r->ds = cache_obj_ref((struct cache_obj *)ds);
    r->ds_json = cache_obj_parse(r->ds);
    if (r->ds_json == NULL) {
        r->failed = 1;
        finish(r, "error");
        return;
    }
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(r->ds_json, "metadata");
    if (cJSON_GetObjectItemCaseSensitive(md, "deletionTimestamp") != NULL) {
        finish(r, "success");
        return;
    }
    if (ks != NULL && ks->suspect) {
        if (ks->gone_uid == NULL ||
            strcmp(ks->gone_uid, cache_obj_uid(r->ds)) != 0) {
            if (send_confirm(r) == 0)
                return; /* on_confirm_done goes on */
            dbuf_adds(&r->apply_err, "cannot read the DittoServer");
            r->failed = 1;
            finish(r, "error");
        } else {
            /* Gone on the apiserver: nothing to write until its watch
             * event comes (then ds == NULL above). */
            finish(r, "success");
        }
        return;
    }

    struct children ch = {0};
    if (gather(r->c, r->key, r->ns, &ch) != 0) {
        free(ch.v);
        r->failed = 1;
        finish(r, "error");
        return;
    }
    if (r->status_only) {
        /* Only Pods changed since a clean full reconcile: the spec was
         * validated and rendered then, and the children hold it. */
        r->eval_rc = evaluate(r, &ch, 1);
        if (r->eval_rc < 0)
            emit(r, "Warning", "PolicyError", dbuf_ptr(&r->err));
        free(ch.v);
        status_stage(r);
        return;
    }
    r->eval_rc = evaluate(r, &ch, 0);
    r->full_ok = r->eval_rc == POLICY_OK;
    cJSON *rendered = NULL;
    if (r->eval_rc == POLICY_INVALID) {
        struct dbuf msg;
        dbuf_init(&msg, 8192);
        const char *p = dbuf_ptr(&r->out.errors);
        for (const char *e = p; *e;) {
            const char *nl = strchr(e, '\n');
            size_t n = nl ? (size_t)(nl - e) : strlen(e);
            if (dbuf_len(&msg) > 0)
                dbuf_adds(&msg, "; ");
            dbuf_add(&msg, e, n);
            e += n + (nl != NULL);
        }
        emit(r, "Warning", "InvalidSpec", dbuf_ptr(&msg));
        dbuf_free(&msg);
    } else if (r->eval_rc < 0) {
        emit(r, "Warning", "PolicyError", dbuf_ptr(&r->err));
    } else if (send_applies(r, &ch, &rendered) != 0) {
        r->eval_rc = POLICY_EFAIL;
        r->full_ok = 0;
        emit(r, "Warning", "PolicyError", dbuf_ptr(&r->err));
    } else {
        send_prunes(r, &ch, rendered);
    }
    cJSON_Delete(rendered);
    free(ch.v);
    /* Nothing to write (steady state) or every request failed to queue:
     * straight on; otherwise the last answer moves on (stage_done). */
    if (r->pending == 0)
        status_stage(r);
}

/* --- policy sets -----------------------------------------------------------
 */

/*
 * Evaluates the candidate set `ps` on cached DittoServer `o` as reconcile()
 * would, nothing written; `out` and `msg` are scratch (initialised).
 * Returns 1 when it is not evaluated (being deleted, or a key too long:
 * never queued either), 0 when it passes (POLICY_OK or POLICY_INVALID),
 * -1 with "namespace/name: <message>" appended to `err` otherwise.
 */
static int trial_eval(struct controller *c, struct policy_set *ps,
                      const struct cache_obj *o, struct policy_output *out,
                      struct dbuf *msg, struct dbuf *err)
{
    const char *ns = cache_obj_namespace(o);
    const char *name = cache_obj_name(o);
    char key[KEY_MAX];
    if (make_key(key, ns, name) != 0)
        return 1; /* never queued either (enqueue) */
    struct kstate *ks = tracking_get(&c->keys, key, 0);
    const struct cache_obj *ds =
        tracking_newest(ks, KIND_DS, name, o, loop_now_ms());
    /* A DittoServer being deleted is not evaluated by a reconcile. */
    cJSON *dj = cache_obj_parse(ds);
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(dj, "metadata");
    int parsed = dj != NULL;
    int deleting = parsed && cJSON_GetObjectItemCaseSensitive(
                                 md, "deletionTimestamp") != NULL;
    cJSON_Delete(dj);
    if (deleting)
        return 1;
    struct children ch = {0};
    int rc;
    double secs;
    dbuf_reset(msg);
    if (!parsed || gather(c, key, ns, &ch) != 0) {
        dbuf_adds(msg, "out of memory");
        rc = POLICY_ENOMEM;
    } else {
        rc = run_policy(c, ps, ds, &ch, 0, out, msg, &secs);
    }
    free(ch.v);
    if (rc != POLICY_OK && rc != POLICY_INVALID) {
        dbuf_addf(err, "%s: %s", key, dbuf_ptr(msg));
        return -1;
    }
    return 0;
}

struct trial {
    struct controller *c;
    struct policy_set *ps;
    struct policy_output out;
    struct dbuf msg;   /* the current evaluation's failure */
    struct dbuf *err;  /* the caller's: the first failure */
    unsigned failures; /* evaluations that failed (0 or 1: the first stops) */
    unsigned tried;    /* DittoServers evaluated */
    uint64_t t0_us;    /* when the trial began */
};

/* One cached DittoServer under a candidate set (cache_list callback). */
static int try_one(const struct cache_obj *o, void *arg)
{
    struct trial *t = arg;
    int rc = trial_eval(t->c, t->ps, o, &t->out, &t->msg, t->err);
    if (rc == 1)
        return 0;
    t->tried++;
    if (rc != 0) {
        /* One failure refuses the set: stop, so that a policy that spends
         * its whole budget on every DittoServer cannot hold the loop (and
         * the Lease's renewals) for budget x fleet. */
        t->failures++;
        return 1;
    }
    uint64_t spent_ms = (loop_now_us() - t->t0_us) / 1000;
    if (spent_ms > CONTROLLER_TRIAL_MAX_MS) {
        t->failures++;
        dbuf_addf(t->err,
                  "the trial took longer than %u ms (%u DittoServers "
                  "evaluated): a policy this slow would hold the operator's "
                  "loop for too long; it was not tried on the others",
                  (unsigned)CONTROLLER_TRIAL_MAX_MS, t->tried);
        return 1;
    }
    return 0;
}

int controller_try_policies(struct controller *c, struct policy_set *ps,
                            struct dbuf *err)
{
    struct trial t = {.c = c, .ps = ps, .err = err, .t0_us = loop_now_us()};
    policy_output_init(&t.out);
    dbuf_init(&t.msg, 64 * 1024);
    cache_list(watch_cache(c->ds_watch), NULL, NULL, try_one, &t);
    policy_output_free(&t.out);
    dbuf_free(&t.msg);
    return t.failures == 0 ? 0 : -1;
}

/*
 * A sliced trial (controller_trial_start). The DittoServers are taken as
 * keys, not cache objects: between two slices the watch may replace or
 * delete any of them, so each is looked up again when its turn comes.
 */
struct trial_run {
    struct controller *c;
    struct loop *loop;     /* c's, also once done may have freed c */
    struct policy_set *ps; /* borrowed: the caller's until done */
    controller_trial_fn done;
    void *arg;
    struct loop_timer timer; /* the next slice */
    struct dbuf names;       /* "namespace\0name\0" per DittoServer */
    size_t *offs;            /* n offsets into names, while taking them */
    const char **keys;       /* n pointers into names, sorted */
    size_t n, next;          /* DittoServers taken, the next one's index */
    struct policy_output out;
    struct dbuf msg; /* the current evaluation's failure */
    struct dbuf err; /* the trial's failure, for done */
    unsigned tried;  /* DittoServers evaluated */
    unsigned skipped;
    unsigned slices;
    uint64_t work_us; /* loop time spent in slices */
    uint64_t t0_us;   /* when it started */
};

static void trial_run_free(struct trial_run *tr)
{
    if (tr == NULL)
        return;
    loop_timer_stop(tr->loop, &tr->timer);
    dbuf_free(&tr->names);
    free(tr->offs);
    free(tr->keys);
    policy_output_free(&tr->out);
    dbuf_free(&tr->msg);
    dbuf_free(&tr->err);
    free(tr);
}

/* cache_list callback: takes one DittoServer's namespace and name. */
static int trial_take_key(const struct cache_obj *o, void *arg)
{
    struct trial_run *tr = arg;
    const char *ns = cache_obj_namespace(o);
    const char *name = cache_obj_name(o);
    if (tr->n == SIZE_MAX) /* out of memory already */
        return 1;
    size_t off = dbuf_len(&tr->names);
    if (dbuf_add(&tr->names, ns, strlen(ns) + 1) != DBUF_OK ||
        dbuf_add(&tr->names, name, strlen(name) + 1) != DBUF_OK) {
        tr->n = SIZE_MAX;
        return 1;
    }
    tr->offs[tr->n++] = off;
    return 0;
}

/* qsort: by namespace, then name (a "namespace\0name" each). */
static int cmp_nsname(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int d = strcmp(x, y);
    return d != 0 ? d : strcmp(x + strlen(x) + 1, y + strlen(y) + 1);
}

/* Is the loop time spent so far past the bound, for `tried` evaluated? */
static int trial_too_slow(uint64_t spent_us, unsigned tried)
{
    return spent_us > (uint64_t)CONTROLLER_TRIAL_MAX_MS * 1000 &&
           spent_us > (uint64_t)tried * CONTROLLER_TRIAL_DS_MS * 1000;
}

/*
 * One slice: evaluates the next DittoServers until CONTROLLER_TRIAL_SLICE_MS
 * have passed, then lets the loop run (a zero-delay timer is due after the
 * pending I/O). The trial ends at the first failure, at the time bound or
 * when every key is done; done is called once it no longer runs.
 */
static void on_trial_slice(struct loop_timer *t, void *arg)
{
    (void)t;
    struct trial_run *tr = arg;
    struct controller *c = tr->c;
    const struct cache *cache = watch_cache(c->ds_watch);
    uint64_t t0 = loop_now_us();
    int rc = 0;
    tr->slices++;
    while (tr->next < tr->n) {
        const char *ns = tr->keys[tr->next++];
        const char *name = ns + strlen(ns) + 1;
        const struct cache_obj *o = cache_get(cache, ns, name);
        int erc = o == NULL
                      ? 1 /* deleted since the start */
                      : trial_eval(c, tr->ps, o, &tr->out, &tr->msg, &tr->err);
        if (erc == 1) {
            tr->skipped++;
            continue;
        }
        tr->tried++;
        if (erc != 0) {
            rc = -1;
            break;
        }
        uint64_t now = loop_now_us();
        if (trial_too_slow(tr->work_us + (now - t0), tr->tried)) {
            uint64_t spent_us = tr->work_us + (now - t0);
            dbuf_addf(&tr->err,
                      "the trial took %.0f ms for %u DittoServers evaluated "
                      "(%.2f ms each, more than %u ms each): a policy this "
                      "slow would hold the operator's loop for too long; it "
                      "was not tried on the others",
                      (double)spent_us / 1e3, tr->tried,
                      (double)spent_us / 1e3 / tr->tried,
                      (unsigned)CONTROLLER_TRIAL_DS_MS);
            rc = -1;
            break;
        }
        if (now - t0 >= (uint64_t)CONTROLLER_TRIAL_SLICE_MS * 1000)
            break;
    }
    tr->work_us += loop_now_us() - t0;
    if (rc == 0 && tr->next < tr->n) {
        if (loop_timer_start(c->loop, &tr->timer, 0) == 0)
            return;
        dbuf_adds(&tr->err, "out of memory");
        rc = -1;
    }
    char n[24], ev[24], sk[24], sl[24], lms[24], wms[24];
    snprintf(n, sizeof(n), "%zu", tr->n);
    snprintf(ev, sizeof(ev), "%u", tr->tried);
    snprintf(sk, sizeof(sk), "%u", tr->skipped);
    snprintf(sl, sizeof(sl), "%u", tr->slices);
    snprintf(lms, sizeof(lms), "%.1f", (double)tr->work_us / 1e3);
    snprintf(wms, sizeof(wms), "%.1f",
             (double)(loop_now_us() - tr->t0_us) / 1e3);
    log_debug(rc == 0 ? "policy trial passed" : "policy trial failed",
              "dittoservers", n, "evaluated", ev, "skipped", sk, "slices", sl,
              "loop_ms", lms, "ms", wms, NULL);
    /* No longer running: done may start another trial. */
    c->trial = NULL;
    tr->done(rc, rc == 0 ? "" : dbuf_ptr(&tr->err), tr->arg);
    trial_run_free(tr);
}

int controller_trial_start(struct controller *c, struct policy_set *ps,
                           controller_trial_fn done, void *arg)
{
    if (c->trial != NULL)
        return -EBUSY;
    struct trial_run *tr = calloc(1, sizeof(*tr));
    if (tr == NULL)
        return -ENOMEM;
    const struct cache *cache = watch_cache(c->ds_watch);
    size_t n = cache_len(cache);
    *tr = (struct trial_run){.c = c,
                             .loop = c->loop,
                             .ps = ps,
                             .done = done,
                             .arg = arg,
                             .t0_us = loop_now_us()};
    loop_timer_init(&tr->timer, on_trial_slice, tr);
    /* Two names and their NULs, at most KEY_MAX together. */
    dbuf_init(&tr->names, n * KEY_MAX + 1);
    policy_output_init(&tr->out);
    dbuf_init(&tr->msg, 64 * 1024);
    dbuf_init(&tr->err, 64 * 1024);
    tr->offs = malloc((n ? n : 1) * sizeof(*tr->offs));
    tr->keys = malloc((n ? n : 1) * sizeof(*tr->keys));
    if (tr->offs != NULL && tr->keys != NULL)
        cache_list(cache, NULL, NULL, trial_take_key, tr);
    if (tr->offs == NULL || tr->keys == NULL || tr->n == SIZE_MAX ||
        loop_timer_start(c->loop, &tr->timer, 0) != 0) {
        trial_run_free(tr);
        return -ENOMEM;
    }
    /* In key order: the first failure met is the same on every run (a
     * few ms for 10,000 keys, once). */
    for (size_t i = 0; i < tr->n; i++)
        tr->keys[i] = dbuf_ptr(&tr->names) + tr->offs[i];
    qsort(tr->keys, tr->n, sizeof(*tr->keys), cmp_nsname);
    c->trial = tr;
    return 0;
}

void controller_trial_cancel(struct controller *c)
{
    trial_run_free(c->trial);
    c->trial = NULL;
}

int controller_trial_running(const struct controller *c)
{
    return c->trial != NULL;
}

void controller_set_policies(struct controller *c, struct policy_set *ps)
{
    c->ps = ps;
    c->ps_gen++;
    /* Every DittoServer owes a full reconcile under the new set (enqueue
     * with full: a clean key loses its status-only shortcut). */
    controller_resync(c);
}

/* --- metrics -------------------------------------------------------------
 */

/* The queue's durations into the workqueue histograms. */
static void on_queue_observe(int kind, double seconds, void *arg)
{
    struct controller *c = arg;
    if (c->m == NULL)
        return;
    metric_observe(kind == 0 ? c->m_qdur : c->m_wdur, seconds, ctl_label);
}

/* The controller-runtime compatible metric families (reconcile totals,
 * errors and times, the workqueue's), the policy evaluation histogram and
 * error counter, and the cache gauges; nothing without a registry. */
static void register_metrics(struct controller *c)
{
    static const char *const l_ctl[] = {"controller", NULL};
    static const char *const l_res[] = {"controller", "result", NULL};
    static const char *const l_name[] = {"name", NULL};
    static const char *const l_reason[] = {"reason", NULL};
    static const double rbuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1,     2.5,  5,     10,   15,  30,   60};
    static const double qbuckets[] = {1e-8, 1e-7, 1e-6, 1e-5, 1e-4,
                                      1e-3, 1e-2, 0.1,  1,    10};
    static const double ebuckets[] = {1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
                                      1e-3, 5e-3, 0.01, 0.1,    1};
    struct metrics *m = c->m;
    if (m == NULL)
        return;
    c->m_total = metrics_add(
        m, METRIC_COUNTER, "controller_runtime_reconcile_total",
        "Total number of reconciliations per controller", l_res, NULL, 0);
    c->m_errors = metrics_add(m, METRIC_COUNTER,
                              "controller_runtime_reconcile_errors_total",
                              "Total number of reconciliation errors per "
                              "controller",
                              l_ctl, NULL, 0);
    c->m_time = metrics_add(
        m, METRIC_HISTOGRAM, "controller_runtime_reconcile_time_seconds",
        "Length of time per reconciliation per "
        "controller",
        l_ctl, rbuckets, sizeof(rbuckets) / sizeof(rbuckets[0]));
    c->m_depth = metrics_add(m, METRIC_GAUGE, "workqueue_depth",
                             "Current depth of workqueue", l_name, NULL, 0);
    c->m_adds = metrics_add(m, METRIC_COUNTER, "workqueue_adds_total",
                            "Total number of adds handled by workqueue", l_name,
                            NULL, 0);
    c->m_retries = metrics_add(m, METRIC_COUNTER, "workqueue_retries_total",
                               "Total number of retries handled by workqueue",
                               l_name, NULL, 0);
    c->m_qdur =
        metrics_add(m, METRIC_HISTOGRAM, "workqueue_queue_duration_seconds",
                    "How long in seconds an item stays in workqueue "
                    "before being requested",
                    l_name, qbuckets, sizeof(qbuckets) / sizeof(qbuckets[0]));
    c->m_wdur =
        metrics_add(m, METRIC_HISTOGRAM, "workqueue_work_duration_seconds",
                    "How long in seconds processing an item from "
                    "workqueue takes",
                    l_name, qbuckets, sizeof(qbuckets) / sizeof(qbuckets[0]));
    c->m_eval =
        metrics_add(m, METRIC_HISTOGRAM, "dittofs_policy_evaluation_seconds",
                    "Time of one policy evaluation (validate, "
                    "render, status) in the sandbox",
                    NULL, ebuckets, sizeof(ebuckets) / sizeof(ebuckets[0]));
    static const char *const l_res_only[] = {"resource", NULL};
    c->m_cache_objects = metrics_add(m, METRIC_GAUGE, "dittofs_cache_objects",
                                     "Objects held by the informer cache, "
                                     "by resource",
                                     l_res_only, NULL, 0);
    c->m_cache_bytes = metrics_add(m, METRIC_GAUGE, "dittofs_cache_bytes",
                                   "Bytes held by the informer cache (the "
                                   "objects, most stored as their "
                                   "differences from a reference object, "
                                   "the reference and the table), by "
                                   "resource",
                                   l_res_only, NULL, 0);
    c->m_eval_errors =
        metrics_add(m, METRIC_COUNTER, "dittofs_policy_errors_total",
                    "Policy evaluations that failed, by "
                    "reason (error, timeout, memory)",
                    l_reason, NULL, 0);
}

void controller_update_metrics(struct controller *c)
{
    if (c->m == NULL)
        return;
    struct queue_stats qs;
    queue_get_stats(c->q, &qs);
    metric_set(c->m_depth, (double)queue_depth(c->q), ctl_label);
    double adds = metric_value(c->m_adds, ctl_label);
    metric_inc(c->m_adds, (double)qs.adds - adds, ctl_label);
    double retries = metric_value(c->m_retries, ctl_label);
    metric_inc(c->m_retries, (double)qs.retries - retries, ctl_label);
    for (size_t k = 0; k <= NKINDS; k++) {
        struct watch *w = k < NKINDS ? c->child_watch[k] : c->ds_watch;
        const char *lv[] = {kinds_table[k].plural, NULL};
        metric_set(c->m_cache_objects, (double)cache_len(watch_cache(w)), lv);
        metric_set(c->m_cache_bytes, (double)cache_mem(watch_cache(w)), lv);
    }
}

/* --- lifecycle -----------------------------------------------------------
 */

struct controller *controller_new(struct http_client *h, struct policy_set *ps,
                                  struct metrics *m, struct events *ev,
                                  const struct controller_opts *o,
                                  struct dbuf *err)
{
    struct controller *c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto nomem;
    c->http = h;
    c->loop = http_client_loop(h);
    c->ps = ps;
    c->m = m;
    c->ev = ev;
    c->limits = o->limits;
    c->resync_ms = o->resync_ms ? o->resync_ms : DEFAULT_RESYNC_MS;
    c->namespace = strdup(o->namespace ? o->namespace : "");
    c->selector = strdup(o->selector ? o->selector : "");
    c->cluster_domain =
        strdup(o->cluster_domain ? o->cluster_domain : "cluster.local");
    if (!c->namespace || !c->selector || !c->cluster_domain)
        goto nomem;
    if (c->selector[0]) {
        struct cache_selector *sel;
        char e[256];
        int rc = cache_selector_parse(c->selector, &sel, e, sizeof(e));
        if (rc == CACHE_EINVAL) {
            dbuf_addf(err, "--selector: %s", e);
            controller_free(c);
            return NULL;
        }
        if (rc != CACHE_OK)
            goto nomem;
        cache_selector_free(sel);
    }
    struct queue_opts qo = {
        .base_delay_ms = o->backoff_base_ms,
        .max_delay_ms = o->backoff_max_ms,
        /* 8: at 4, 1,000 new DittoServers took 18.1 s, at 8 14.7 s
         * (defaults_bench.sh); when the rate limit binds, no difference. */
        .workers = o->workers ? o->workers : 8,
    };
    c->q = queue_new(c->loop, &qo, reconcile, c);
    if (c->q == NULL)
        goto nomem;
    queue_pause(c->q);
    queue_set_observer(c->q, on_queue_observe, c);

    struct watch_opts wo = {
        .api_path = kinds_table[KIND_DS].api_path,
        .resource = kinds_table[KIND_DS].plural,
        .namespace = c->namespace,
        .label_selector = c->selector[0] ? c->selector : NULL,
    };
    c->ds_watch = watch_new(h, &wo);
    if (c->ds_watch == NULL)
        goto nomem;
    watch_set_notice(c->ds_watch, on_notice, c);
    if (cache_subscribe(watch_cache(c->ds_watch), on_ds, c) != CACHE_OK)
        goto nomem;
    for (size_t k = 0; k < NKINDS; k++) {
        struct watch_opts co = {
            .api_path = kinds_table[k].api_path,
            .resource = kinds_table[k].plural,
            .namespace = c->namespace,
            .label_selector = MANAGED_SELECTOR,
        };
        c->child_watch[k] = watch_new(h, &co);
        if (c->child_watch[k] == NULL)
            goto nomem;
        watch_set_notice(c->child_watch[k], on_notice, c);
        if (cache_subscribe(watch_cache(c->child_watch[k]), child_notify[k],
                            c) != CACHE_OK)
            goto nomem;
    }
    loop_timer_init(&c->resync_timer, on_resync_timer, c);
    loop_timer_init(&c->trim_timer, on_trim_timer, c);
    register_metrics(c);
    return c;

nomem:
    dbuf_adds(err, "out of memory");
    controller_free(c);
    return NULL;
}

void controller_free(struct controller *c)
{
    if (c == NULL)
        return;
    while (c->recs != NULL) {
        struct rec *r = c->recs;
        c->recs = r->next;
        rec_free(r);
    }
    controller_trial_cancel(c);
    loop_timer_stop(c->loop, &c->resync_timer);
    loop_timer_stop(c->loop, &c->trim_timer);
    watch_free(c->ds_watch);
    for (size_t k = 0; k < NKINDS; k++)
        watch_free(c->child_watch[k]);
    queue_free(c->q);
    tracking_clear(&c->keys);
    free(c->namespace);
    free(c->selector);
    free(c->cluster_domain);
    free(c);
}

int controller_start(struct controller *c)
{
    if (watch_start(c->ds_watch) != 0)
        return -1;
    for (size_t k = 0; k < NKINDS; k++)
        if (watch_start(c->child_watch[k]) != 0)
            return -1;
    loop_timer_start(c->loop, &c->resync_timer, resync_delay(c));
    return 0;
}

int controller_synced(const struct controller *c)
{
    if (!watch_synced(c->ds_watch))
        return 0;
    for (size_t k = 0; k < NKINDS; k++)
        if (!watch_synced(c->child_watch[k]))
            return 0;
    return 1;
}

void controller_sync_detail(const struct controller *c, struct dbuf *out)
{
    for (size_t k = 0; k <= NKINDS; k++) {
        const struct watch *w = k < NKINDS ? c->child_watch[k] : c->ds_watch;
        if (watch_synced(w))
            continue;
        const char *e = watch_last_error(w);
        dbuf_addf(out, "%s%s not synced%s%s", dbuf_len(out) ? "; " : "",
                  watch_name(w), e[0] ? ": " : "", e);
    }
}

void controller_set_leading(struct controller *c, int leading)
{
    c->leading = leading != 0;
    update_running(c);
}

void controller_drain(struct controller *c)
{
    c->draining = 1;
    update_running(c);
}

size_t controller_in_flight(const struct controller *c)
{
    return c->n_recs;
}

void controller_cancel(struct controller *c)
{
    controller_set_leading(c, 0);
    while (c->recs != NULL) {
        struct rec *r = c->recs;
        c->recs = r->next;
        c->n_recs--;
        log_warn("reconcile cancelled", "key", r->key, NULL);
        queue_done(c->q, r->key);
        rec_free(r);
    }
}
