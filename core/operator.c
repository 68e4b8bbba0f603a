/*
 * operator: run mode (see operator.h).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "controller.h"
#include "events.h"
#include "http.h"
#include "kinds.h"
#include "kubeconfig.h"
#include "leader.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "operator.h"
#include "policy.h"
#include "reload.h"
#include "serve.h"

#define DEFAULT_LEADER_ID "dittofs-operator-leader"
#define DEFAULT_SHUTDOWN_MS 10000
#define RELEASE_TIMEOUT_MS 2000
#define EVENTS_QPS 10
#define EVENTS_BURST 25
/* Reasons of the Events on the policies ConfigMap. */
#define REASON_RELOADED "PolicyReloaded"
#define REASON_REJECTED "PolicyRejected"
/* How often a policy change waiting for the caches to sync looks again. */
#define RELOAD_SYNC_WAIT_MS 500

/* Set by the signal handler; read by the loop after each iteration. */
static volatile sig_atomic_t got_signal;
static struct loop *signal_loop;

static void on_signal(int sig)
{
    if (got_signal != 0 && sig != 0) {
        /* A second signal: the user insists. */
        static const char msg[] = "second signal: exiting now\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)w;
        _exit(OPERATOR_EFATAL);
    }
    got_signal = sig;
    if (signal_loop != NULL)
        loop_wakeup(signal_loop);
}

struct op_state {
    const struct operator_opts *o;
    struct kube_conn *conn;
    struct loop *loop;
    struct http_client *http;
    struct http_client *le_http; /* the elector's own: never rate-limited
                                  * behind the controller's requests */
    struct http_client *ev_http; /* the Event recorder's own, likewise */
    struct policy_set *ps;       /* the active set; NULL: waiting for one */
    struct metrics *m;
    struct events *ev;
    struct controller *ctl; /* NULL until there is an active set */
    struct leader *le;
    struct serve *srv;
    struct reload *rl;                  /* NULL without --policies */
    struct policy_event *policy_events; /* waiting for the ConfigMap */
    struct metric *m_rest, *m_leader, *m_policy, *m_reload;
    char policy_hash[17];         /* of s->ps */
    char no_policies[320];        /* /readyz's detail while s->ps is NULL */
    char cm_ns[64], cm_name[254]; /* the policies ConfigMap; "" none */
    int leading;                  /* Events are only sent while leading */
    char host[256];
    const char *lease_name;
    int exit_code;
    int stopping; /* shutdown begun */
    int done;     /* the loop may end */
    uint64_t shutdown_deadline_ms;
    struct loop_timer shutdown_timer;
    struct loop_timer reload_timer; /* a change waiting for synced caches */
    int reload_waiting;
    struct policy_set *trial_ps; /* the candidate on trial (owned); NULL */
    char trial_hash[17];         /* its hash */
    uint64_t trial_t0_us;        /* when its change was seen */
};

/* --- metrics and health --------------------------------------------------
 */

static void on_request(enum http_method m, long status, double seconds,
                       void *arg)
{
    (void)seconds;
    struct op_state *s = arg;
    char code[24];
    if (status > 0)
        snprintf(code, sizeof(code), "%ld", status);
    else
        strcpy(code, "<error>");
    const char *lv[] = {code, http_method_name(m), s->host, NULL};
    metric_inc(s->m_rest, 1, lv);
}

static int healthz(struct dbuf *detail, void *arg)
{
    (void)detail;
    (void)arg;
    /* Answered from the loop itself: an answer means it is alive. */
    return 0;
}

static int readyz(struct dbuf *detail, void *arg)
{
    struct op_state *s = arg;
    if (s->stopping) {
        dbuf_adds(detail, "shutting down");
        return 1;
    }
    /* Never ready without policies: a rollout of a bad set stops at the
     * first new pod while the old ones keep running. */
    if (s->ctl == NULL) {
        dbuf_adds(detail, s->no_policies);
        return 1;
    }
    if (!controller_synced(s->ctl)) {
        controller_sync_detail(s->ctl, detail);
        return 1;
    }
    return 0;
}

static void collect(void *arg)
{
    struct op_state *s = arg;
    if (s->ctl != NULL)
        controller_update_metrics(s->ctl);
}

static void set_leader_metric(struct op_state *s, int leading)
{
    const char *lv[] = {s->lease_name, NULL};
    metric_set(s->m_leader, leading ? 1 : 0, lv);
}

/* --- leadership ----------------------------------------------------------
 */

static void on_leading(struct leader *le, int leading, void *arg)
{
    (void)le;
    struct op_state *s = arg;
    set_leader_metric(s, leading);
    s->leading = leading;
    if (leading) {
        events_set_enabled(s->ev, 1);
        controller_set_leading(s->ctl, 1);
        return;
    }
    /* Lost (could not renew in time, or another holder): no write may go
     * out from now on. Exit so that the process starts over as a
     * candidate, as controller-runtime does. */
    events_set_enabled(s->ev, 0);
    controller_cancel(s->ctl);
    if (!s->stopping) {
        log_error("leader election lost: stopped writing; exiting", NULL);
        s->exit_code = OPERATOR_EFATAL;
        s->done = 1;
        loop_stop(s->loop);
    }
}

/* --- policy reload -------------------------------------------------------
 */

/*
 * An Event about the policies ConfigMap. `kubectl describe configmap`
 * lists the Events whose involvedObject.uid is the ConfigMap's, so the
 * Event waits for one GET of the ConfigMap (on the Event client, the low
 * priority lane) and goes out with its uid, or without one when the GET
 * fails. Only the leader reports reloads, but a replica without policies
 * (no controller yet, not a candidate) reports its own start.
 */
struct policy_event {
    struct policy_event *next;
    struct op_state *s;
    struct http_req *req;
    const char *type, *reason; /* static strings */
    char *message;
    int own; /* sent before the controller existed: leader or not */
};

static void policy_event_free(struct op_state *s, struct policy_event *pe)
{
    for (struct policy_event **p = &s->policy_events; *p; p = &(*p)->next)
        if (*p == pe) {
            *p = pe->next;
            break;
        }
    free(pe->message);
    free(pe);
}

static void policy_event_emit(struct policy_event *pe, const char *uid)
{
    struct op_state *s = pe->s;
    struct events_ref ref = {
        .api_version = "v1",
        .kind = "ConfigMap",
        .namespace = s->cm_ns,
        .name = s->cm_name,
        .uid = uid,
    };
    /* The recorder is disabled on a standby; this one Event is the
     * replica's own story (the elector may have started since). */
    if (pe->own)
        events_set_enabled(s->ev, 1);
    events_emit(s->ev, &ref, pe->type, pe->reason, pe->message);
    if (pe->own)
        events_set_enabled(s->ev, s->leading);
}

static void on_policies_configmap(struct http_response *r, void *arg)
{
    struct policy_event *pe = arg;
    cJSON *cm = r->result == HTTP_OK ? cJSON_Parse(r->body) : NULL;
    const char *uid = cJSON_GetStringValue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cm, "metadata"), "uid"));
    if (uid == NULL)
        log_warn("policies ConfigMap not readable: its Event has no uid",
                 "configmap", pe->s->cm_name, "namespace", pe->s->cm_ns,
                 "error", r->message, NULL);
    policy_event_emit(pe, uid);
    cJSON_Delete(cm);
    policy_event_free(pe->s, pe);
}

static void policy_event(struct op_state *s, const char *type,
                         const char *reason, const char *message)
{
    int own = s->ctl == NULL;
    if (s->cm_name[0] == '\0' || (!s->leading && !own))
        return;
    struct policy_event *pe = calloc(1, sizeof(*pe));
    char *msg = strdup(message);
    if (pe == NULL || msg == NULL) {
        free(pe);
        free(msg);
        log_warn("out of memory: no Event for the policies", NULL);
        return;
    }
    *pe = (struct policy_event){.next = s->policy_events,
                                .s = s,
                                .type = type,
                                .reason = reason,
                                .message = msg,
                                .own = own};
    s->policy_events = pe;
    struct dbuf path;
    dbuf_init(&path, 1024);
    int rc =
        kinds_path(kinds_find("v1", "ConfigMap"), s->cm_ns, s->cm_name, &path);
    struct http_call call = {
        .method = HTTP_GET,
        .path = dbuf_ptr(&path),
        .on_done = on_policies_configmap,
        .arg = pe,
    };
    if (rc != 0 || http_send(s->ev_http, &call, &pe->req) != 0) {
        policy_event_emit(pe, NULL);
        policy_event_free(s, pe);
    }
    dbuf_free(&path);
}

/* dittofs_policy_info{hash,origin} = 1 for the active set only. */
static void set_policy_info(struct op_state *s)
{
    policy_set_hash(s->ps, s->policy_hash);
    metric_clear(s->m_policy);
    const char *pv[] = {s->policy_hash, policy_set_origin(s->ps), NULL};
    metric_set(s->m_policy, 1, pv);
}

static void count_reload(struct op_state *s, const char *result)
{
    const char *lv[] = {result, NULL};
    metric_inc(s->m_reload, 1, lv);
}

/*
 * A candidate failed: the active set keeps running, or, when there is
 * none yet (the set at start failed), the operator keeps waiting for one
 * without reconciling; say why.
 */
static void refuse(struct op_state *s, const char *why, uint64_t t0_us)
{
    char ms[24];
    snprintf(ms, sizeof(ms), "%.1f", (double)(loop_now_us() - t0_us) / 1e3);
    count_reload(s, "rejected");
    char msg[1100];
    if (s->ps == NULL) {
        log_error("cannot load the policies: waiting for a valid set, not "
                  "reconciling",
                  "dir", s->o->policies_dir, "error", why, "ms", ms, NULL);
        snprintf(s->no_policies, sizeof(s->no_policies),
                 "no valid policies: %.*s", (int)strcspn(why, "\n"), why);
        snprintf(msg, sizeof(msg),
                 "policies refused, none active: the operator waits for a "
                 "valid set without reconciling: %s",
                 why);
    } else {
        log_error("policies refused: the active ones stay", "dir",
                  s->o->policies_dir, "active", s->policy_hash, "error", why,
                  "ms", ms, NULL);
        snprintf(msg, sizeof(msg),
                 "policies refused, the active ones (%s) stay: %s",
                 s->policy_hash, why);
    }
    policy_event(s, "Warning", REASON_REJECTED, msg);
}

static int start(struct op_state *s);

/*
 * The first valid set after a start without one: it becomes the active
 * set (takes ownership of `ps`) and the start the failed set held up goes
 * on: controller, informers, leader election.
 */
static void adopt(struct op_state *s, struct policy_set *ps, uint64_t t0_us)
{
    s->ps = ps;
    set_policy_info(s);
    count_reload(s, "accepted");
    char ms[24];
    snprintf(ms, sizeof(ms), "%.1f", (double)(loop_now_us() - t0_us) / 1e3);
    log_info("policies loaded", "origin", policy_set_origin(s->ps), "hash",
             s->policy_hash, "ms", ms, NULL);
    char msg[600];
    snprintf(msg, sizeof(msg),
             "policies %s from %s loaded, none was active; the operator "
             "starts",
             s->policy_hash, policy_set_origin(s->ps));
    policy_event(s, "Normal", REASON_RELOADED, msg);
    int rc = start(s);
    if (rc != OPERATOR_OK) {
        s->exit_code = rc;
        s->done = 1;
        loop_stop(s->loop);
    }
}

/* Drops the candidate on trial, if any (no verdict: a newer change or
 * the shutdown came first). */
static void cancel_trial(struct op_state *s)
{
    if (s->trial_ps == NULL)
        return;
    controller_trial_cancel(s->ctl);
    policy_set_free(s->trial_ps);
    s->trial_ps = NULL;
}

/*
 * controller_trial_fn: the candidate's verdict. Passed, it becomes the
 * active set (every DittoServer reconciled again) and the old one is
 * freed; refused, it is freed and the active set stays. "ms" counts from
 * the directory change to the swap, the trial's slices and the loop's
 * work between them included.
 */
static void on_trial_done(int rc, const char *why, void *arg)
{
    struct op_state *s = arg;
    struct policy_set *ps = s->trial_ps;
    s->trial_ps = NULL;
    if (rc != 0) {
        refuse(s, why, s->trial_t0_us);
        policy_set_free(ps);
        return;
    }
    controller_set_policies(s->ctl, ps);
    char old[17];
    memcpy(old, s->policy_hash, sizeof(old));
    policy_set_free(s->ps);
    s->ps = ps;
    set_policy_info(s);
    count_reload(s, "accepted");
    char ms[24];
    snprintf(ms, sizeof(ms), "%.1f",
             (double)(loop_now_us() - s->trial_t0_us) / 1e3);
    log_info("policies reloaded: every DittoServer is reconciled again",
             "origin", policy_set_origin(s->ps), "hash", s->policy_hash,
             "previous", old, "ms", ms, NULL);
    char msg[600];
    snprintf(msg, sizeof(msg),
             "policies %s from %s replace %s; every DittoServer is "
             "reconciled again",
             s->policy_hash, policy_set_origin(s->ps), old);
    policy_event(s, "Normal", REASON_RELOADED, msg);
}

/*
 * reload_fn: the policy directory changed. Loads the new set (the
 * embedded one when the directory holds no *.lua) and starts its trial on
 * every cached DittoServer (controller_trial_start: no writes, in slices
 * between the loop's I/O); on_trial_done then makes it the active set
 * (every DittoServer reconciled again) or refuses it. A change while a
 * trial runs drops that candidate: the directory as it is now is judged
 * instead. A set equal to the active one (same hash) changes nothing.
 * Without an active set (the one at start failed) a set that loads is
 * adopted and the start goes on (adopt).
 */
static void on_policies_changed(struct reload *r, const struct reload_print *p,
                                void *arg)
{
    struct op_state *s = arg;
    const char *dir = s->o->policies_dir;
    if (s->stopping)
        return;
    if (s->trial_ps != NULL) {
        log_info("policy directory changed during a trial: that set is "
                 "dropped, the new one is judged",
                 "dropped", s->trial_hash, NULL);
        cancel_trial(s);
    }
    /* A trial on half-filled caches would prove little: wait for them. */
    if (s->ctl != NULL && !controller_synced(s->ctl)) {
        if (!s->reload_waiting)
            log_info("policy directory changed: tried once the caches have "
                     "synced",
                     NULL);
        s->reload_waiting = 1;
        loop_timer_start(s->loop, &s->reload_timer, RELOAD_SYNC_WAIT_MS);
        return;
    }
    s->reload_waiting = 0;
    loop_timer_stop(s->loop, &s->reload_timer);
    if (p->missing != 0) {
        log_warn(s->ps ? "policy directory unreadable: the active policies "
                         "stay"
                       : "policy directory unreadable: still waiting for "
                         "valid policies",
                 "dir", dir, "error", strerror(p->missing), NULL);
        return;
    }
    uint64_t t0 = loop_now_us();
    struct dbuf err;
    dbuf_init(&err, 64 * 1024);
    struct policy_set *ps = NULL;
    int rc = policy_set_load(p->n_lua > 0 ? dir : NULL, &ps, &err);
    /* Read while the kubelet (or an editor) was still at it: a mix of two
     * versions is judged on neither; read it again after a quiet time. */
    struct reload_print now;
    reload_fingerprint(dir, &now);
    if (!reload_print_equal(p, &now)) {
        log_debug("policy directory changed while loading; again", NULL);
        reload_kick(r);
        goto done;
    }
    if (rc != POLICY_OK) {
        refuse(s, dbuf_ptr(&err), t0);
        goto done;
    }
    if (s->ps == NULL) {
        adopt(s, ps, t0);
        ps = NULL;
        goto done;
    }
    char hash[17];
    policy_set_hash(ps, hash);
    if (strcmp(hash, s->policy_hash) == 0) {
        log_info("policy directory changed, policies did not", "hash", hash,
                 NULL);
        goto done;
    }
    if (controller_trial_start(s->ctl, ps, on_trial_done, s) != 0) {
        refuse(s, "out of memory starting the trial", t0);
        goto done;
    }
    s->trial_ps = ps;
    ps = NULL;
    memcpy(s->trial_hash, hash, sizeof(hash));
    s->trial_t0_us = t0;
    log_debug("policy trial started", "hash", hash, NULL);

done:
    policy_set_free(ps);
    dbuf_free(&err);
}

/* The change that waited for the caches: judged on the directory as it
 * is now. */
static void on_reload_timer(struct loop_timer *t, void *arg)
{
    (void)t;
    struct op_state *s = arg;
    struct reload_print p;
    reload_fingerprint(s->o->policies_dir, &p);
    on_policies_changed(s->rl, &p, s);
}

/* The policies ConfigMap's namespace and name from "[NS/]NAME". */
static void policies_configmap(struct op_state *s)
{
    const char *v = s->o->policies_configmap;
    if (v == NULL || *v == '\0' || s->o->policies_dir == NULL)
        return;
    const char *slash = strchr(v, '/');
    if (slash != NULL) {
        snprintf(s->cm_ns, sizeof(s->cm_ns), "%.*s", (int)(slash - v), v);
        snprintf(s->cm_name, sizeof(s->cm_name), "%s", slash + 1);
    } else {
        snprintf(s->cm_ns, sizeof(s->cm_ns), "%s",
                 kube_conn_namespace(s->conn));
        snprintf(s->cm_name, sizeof(s->cm_name), "%s", v);
    }
    log_info("policy reloads are reported on", "configmap", s->cm_name,
             "namespace", s->cm_ns, NULL);
}

/* --- shutdown ------------------------------------------------------------
 */

static void released(void *arg)
{
    struct op_state *s = arg;
    s->done = 1;
    loop_stop(s->loop);
}

static void shutdown_step(struct op_state *s)
{
    size_t n = s->ctl ? controller_in_flight(s->ctl) : 0;
    if (n > 0 && loop_now_ms() < s->shutdown_deadline_ms) {
        loop_timer_start(s->loop, &s->shutdown_timer, 20);
        return;
    }
    if (n > 0) {
        char in[24];
        snprintf(in, sizeof(in), "%zu", n);
        log_warn("shutdown timeout: cancelling reconciles in flight",
                 "in_flight", in, NULL);
    }
    if (s->ctl != NULL)
        controller_cancel(s->ctl);
    events_set_enabled(s->ev, 0);
    if (s->le != NULL) {
        set_leader_metric(s, 0);
        leader_release(s->le, RELEASE_TIMEOUT_MS, released, s);
    } else {
        released(s);
    }
}

static void on_shutdown_timer(struct loop_timer *t, void *arg)
{
    (void)t;
    shutdown_step(arg);
}

static void begin_shutdown(struct op_state *s, int sig)
{
    s->stopping = 1;
    cancel_trial(s);
    log_info("shutting down", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM",
             NULL);
    if (s->ctl != NULL)
        controller_drain(s->ctl);
    s->shutdown_deadline_ms =
        loop_now_ms() +
        (s->o->shutdown_ms ? s->o->shutdown_ms : DEFAULT_SHUTDOWN_MS);
    shutdown_step(s);
}

/* --- setup ---------------------------------------------------------------
 */

static void host_of(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t n = strcspn(p, "/");
    snprintf(out, len, "%.*s", (int)n, p);
}

static void identity(char *out, size_t len)
{
    char host[128] = "unknown";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    unsigned char rnd[8];
    FILE *f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd)) {
        unsigned long long t = (unsigned long long)time(NULL) ^
                               ((unsigned long long)getpid() << 32);
        memcpy(rnd, &t, sizeof(rnd));
    }
    if (f != NULL)
        fclose(f);
    snprintf(out, len, "%s_%02x%02x%02x%02x%02x%02x%02x%02x", host, rnd[0],
             rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
}

/*
 * What needs no policies: the connection, the loop and its clients, the
 * metrics, the Event recorder, the policy directory's watcher (from `fp`,
 * its fingerprint before the policies are loaded) and the endpoints.
 * Returns an exit status.
 */
static int setup(struct op_state *s, const struct reload_print *fp)
{
    const struct operator_opts *o = s->o;
    struct dbuf err;
    char e[1024];
    dbuf_init(&err, 64 * 1024);

    struct kubeconfig_opts ko = {.path = o->kubeconfig, .context = o->context};
    int rc = kube_conn_load(&s->conn, &ko, e, sizeof(e));
    if (rc != KUBE_CONN_OK) {
        log_error("cannot load the Kubernetes configuration", "error",
                  rc == KUBE_CONN_ENOMEM ? "out of memory" : e, NULL);
        dbuf_free(&err);
        return OPERATOR_ECONNECT;
    }
    host_of(kube_conn_server(s->conn), s->host, sizeof(s->host));
    log_info("connecting", "server", kube_conn_server(s->conn), "config",
             kube_conn_source(s->conn), NULL);

    s->loop = loop_new();
    struct http_opts ho = {.qps = o->qps, .burst = o->burst};
    s->http = s->loop ? http_client_new(s->loop, s->conn, &ho) : NULL;
    s->m = metrics_new();
    char hostname[128] = "";
    gethostname(hostname, sizeof(hostname) - 1);
    /* Events have their own client, a low-priority lane: at most
     * EVENTS_QPS (burst EVENTS_BURST) whatever --kube-api-qps says, so a
     * burst of new DittoServers reconciles first and its Events follow;
     * the recorder also limits them per object. */
    struct http_opts eho = {.qps = EVENTS_QPS, .burst = EVENTS_BURST};
    s->ev_http = s->loop ? http_client_new(s->loop, s->conn, &eho) : NULL;
    s->ev =
        s->ev_http ? events_new(s->ev_http, POLICY_MANAGER, hostname) : NULL;
    if (s->http == NULL || s->ev == NULL || s->m == NULL)
        goto nomem;
    events_set_enabled(s->ev, 0);

    static const char *const l_rest[] = {"code", "method", "host", NULL};
    static const char *const l_name[] = {"name", NULL};
    static const char *const l_policy[] = {"hash", "origin", NULL};
    static const char *const l_result[] = {"result", NULL};
    s->m_rest = metrics_add(s->m, METRIC_COUNTER, "rest_client_requests_total",
                            "Number of HTTP requests, partitioned by status "
                            "code, method, and host.",
                            l_rest, NULL, 0);
    s->m_leader =
        metrics_add(s->m, METRIC_GAUGE, "leader_election_master_status",
                    "Gauge of if the reporting system is master of "
                    "the relevant lease, 0 indicates backup, 1 "
                    "indicates master. 'name' is the string used "
                    "to identify the lease.",
                    l_name, NULL, 0);
    s->m_policy = metrics_add(s->m, METRIC_GAUGE, "dittofs_policy_info",
                              "The active policy set: hash of its sources "
                              "and where it was loaded from (none while "
                              "there is no valid set)",
                              l_policy, NULL, 0);
    s->m_reload =
        metrics_add(s->m, METRIC_COUNTER, "dittofs_policy_reload_total",
                    "Policy sets tried from the policy directory, at start "
                    "and on each change: accepted (now active) or rejected "
                    "(the active ones stayed, or none is active yet)",
                    l_result, NULL, 0);
    if (o->policies_dir != NULL) { /* both series from the start, at 0 */
        static const char *const acc[] = {"accepted", NULL};
        static const char *const rej[] = {"rejected", NULL};
        metric_inc(s->m_reload, 0, acc);
        metric_inc(s->m_reload, 0, rej);
    }
    http_client_set_observer(s->http, on_request, s);
    http_client_set_observer(s->ev_http, on_request, s);

    loop_timer_init(&s->reload_timer, on_reload_timer, s);
    if (o->policies_dir != NULL) {
        policies_configmap(s);
        s->rl = reload_new(s->loop, o->policies_dir, fp, NULL,
                           on_policies_changed, s);
        if (s->rl == NULL)
            goto nomem;
        log_info("watching the policy directory", "dir", o->policies_dir,
                 "inotify", reload_inotify(s->rl) ? "yes" : "no (polling)",
                 NULL);
    }

    struct serve_opts so = {
        .metrics_addr = o->metrics_addr ? o->metrics_addr : ":8080",
        .health_addr = o->health_addr ? o->health_addr : ":8081",
        .metrics = s->m,
        .healthz = healthz,
        .readyz = readyz,
        .collect = collect,
        .check_arg = s,
    };
    s->srv = serve_new(s->loop, &so, &err);
    if (s->srv == NULL) {
        log_error("cannot serve metrics and health", "error", dbuf_ptr(&err),
                  NULL);
        dbuf_free(&err);
        return OPERATOR_ESERVE;
    }

    char mp[16], hp[16];
    snprintf(mp, sizeof(mp), "%d", serve_metrics_port(s->srv));
    snprintf(hp, sizeof(hp), "%d", serve_health_port(s->srv));
    log_info("serving", "metrics_port", mp, "health_port", hp, NULL);
    s->lease_name = o->leader_id ? o->leader_id : DEFAULT_LEADER_ID;
    dbuf_free(&err);
    return OPERATOR_OK;

nomem:
    log_error("out of memory (or libcurl failed to initialise)", NULL);
    dbuf_free(&err);
    return OPERATOR_EFATAL;
}

/*
 * The policies at start: the embedded ones without --policies or when the
 * directory holds no *.lua (`fp`: its fingerprint). A set from the
 * directory that cannot be loaded is refused as a reload would be, and
 * the operator waits for a valid one (s->ps stays NULL): a bad ConfigMap
 * must not crash-loop the replicas that restart while the others keep the
 * last good set. Returns an exit status: OPERATOR_EPOLICY when the
 * embedded set fails (a broken build) or memory ran out.
 */
static int load_policies(struct op_state *s, const struct reload_print *fp)
{
    const char *dir = s->o->policies_dir;
    if (dir != NULL && fp->n_lua == 0) {
        log_info("no *.lua in the policy directory: the embedded policies "
                 "until files appear",
                 "dir", dir, NULL);
        dir = NULL;
    }
    uint64_t t0 = loop_now_us();
    struct dbuf err;
    dbuf_init(&err, 64 * 1024);
    int rc = policy_set_load(dir, &s->ps, &err);
    if (rc == POLICY_OK) {
        set_policy_info(s);
        log_info("policies loaded", "origin", policy_set_origin(s->ps), "hash",
                 s->policy_hash, NULL);
    } else if (dir != NULL && rc == POLICY_ELOAD) {
        refuse(s, dbuf_ptr(&err), t0);
    } else {
        log_error("cannot load the policies", "error", dbuf_ptr(&err), NULL);
        dbuf_free(&err);
        return OPERATOR_EPOLICY;
    }
    dbuf_free(&err);
    return OPERATOR_OK;
}

/*
 * What needs policies (s->ps): the controller on them, the elector, and
 * their start. Runs from operator_run, or from the watcher when the first
 * valid set appears. Returns an exit status.
 */
static int start(struct op_state *s)
{
    const struct operator_opts *o = s->o;
    struct dbuf err;
    dbuf_init(&err, 64 * 1024);
    s->ctl = controller_new(s->http, s->ps, s->m, s->ev, &o->ctl, &err);
    if (s->ctl == NULL) {
        log_error("cannot start the controller", "error", dbuf_ptr(&err), NULL);
        dbuf_free(&err);
        return OPERATOR_EFATAL;
    }
    dbuf_free(&err);

    if (o->leader_elect) {
        char id[200];
        identity(id, sizeof(id));
        struct leader_opts lo = {
            .namespace =
                o->leader_ns ? o->leader_ns : kube_conn_namespace(s->conn),
            .name = s->lease_name,
            .identity = id,
        };
        struct http_opts lho = {.qps = -1};
        s->le_http = http_client_new(s->loop, s->conn, &lho);
        if (s->le_http != NULL)
            http_client_set_observer(s->le_http, on_request, s);
        s->le = s->le_http ? leader_new(s->le_http, &lo, on_leading, s) : NULL;
        if (s->le == NULL) {
            log_error("out of memory (or libcurl failed to initialise)", NULL);
            return OPERATOR_EFATAL;
        }
        log_info("leader election", "lease", s->lease_name, "namespace",
                 lo.namespace, "identity", id, NULL);
        set_leader_metric(s, 0);
    }

    if (controller_start(s->ctl) != 0)
        return OPERATOR_EFATAL;
    if (s->le != NULL)
        return leader_start(s->le) != 0 ? OPERATOR_EFATAL : OPERATOR_OK;
    s->leading = 1;
    events_set_enabled(s->ev, 1);
    controller_set_leading(s->ctl, 1);
    return OPERATOR_OK;
}

static void teardown(struct op_state *s)
{
    /* Users before what they use: the controller and the elector send
     * through the client, the client's handles use the connection. */
    serve_free(s->srv);
    if (s->rl != NULL) /* else the timer was never started (or inited) */
        loop_timer_stop(s->loop, &s->reload_timer);
    reload_free(s->rl);
    cancel_trial(s);
    controller_free(s->ctl);
    leader_free(s->le);
    events_free(s->ev);
    http_client_free(s->le_http);
    http_client_free(s->ev_http);
    http_client_free(s->http);
    /* The client is gone without calling back: what waited on it. */
    while (s->policy_events != NULL)
        policy_event_free(s, s->policy_events);
    metrics_free(s->m);
    loop_free(s->loop);
    kube_conn_free(s->conn);
    policy_set_free(s->ps);
}

int operator_run(const struct operator_opts *o)
{
    struct op_state s;
    memset(&s, 0, sizeof(s));
    s.o = o;

    /* The fingerprint before the load: a change made while loading is
     * then seen by the watcher. */
    struct reload_print fp = {0};
    if (o->policies_dir != NULL &&
        reload_fingerprint(o->policies_dir, &fp) != 0) {
        log_error("cannot read the policy directory", "dir", o->policies_dir,
                  "error", strerror(fp.missing), NULL);
        return OPERATOR_EPOLICY;
    }
    int rc = setup(&s, &fp);
    if (rc == OPERATOR_OK)
        rc = load_policies(&s, &fp);
    if (rc != OPERATOR_OK) {
        teardown(&s);
        return rc;
    }
    loop_timer_init(&s.shutdown_timer, on_shutdown_timer, &s);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    signal_loop = s.loop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Without policies the loop serves the endpoints, the watcher and the
     * Events until a valid set starts the rest (adopt) or a signal comes. */
    if (s.ps != NULL)
        s.exit_code = start(&s);
    if (s.exit_code != OPERATOR_OK)
        s.done = 1;

    while (!s.done) {
        if (loop_run_once(s.loop, -1) != 0) {
            log_error("event loop failed", NULL);
            s.exit_code = OPERATOR_EFATAL;
            break;
        }
        if (got_signal != 0 && !s.stopping)
            begin_shutdown(&s, got_signal);
    }
    loop_timer_stop(s.loop, &s.shutdown_timer);
    signal_loop = NULL;
    log_info("stopped", NULL);
    rc = s.exit_code;
    teardown(&s);
    return rc;
}
