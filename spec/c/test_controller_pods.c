/*
 * test_controller_pods: the controller and the servers' Pods, against a
 * small in-memory apiserver on 127.0.0.1 (lists, watches as chunked
 * streams of events, server-side apply as "store what was sent", the
 * status subresource, deletes). It checks what only the controller can
 * get wrong, the API semantics being itest's and the e2e tests' business:
 *  - the Pod informer lists and watches pods by the managed-by label, and
 *    the applied StatefulSet's pod template carries the core's labels;
 *  - a Pod event maps to its DittoServer by the server label and runs a
 *    status-only reconcile (log eval=status) that writes the status once
 *    when the derived status changes (CrashLoopBackOff, phase Failed),
 *    and nothing when only the pod's times and counters change;
 *  - a StatefulSet event still runs a full reconcile;
 *  - a Pod is never written (no request on a pods path but list/watch),
 *    and a policy that renders one gets PolicyError without any write of
 *    it.
 * Uses the embedded policies and a --policies directory.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "controller.h"
#include "fakehttp.h"
#include "log.h"
#include "nettest.h"
#include "testlib.h"

#define NS "t"
#define MAX_OBJS 256
#define MAX_EVENTS 1024
#define MAX_WRITES 256

/* --- the fake apiserver ------------------------------------------------- */

struct fobj {
    char res[32];
    char name[128];
    cJSON *obj; /* NULL: deleted */
};

struct fevent {
    char res[32];
    long rv;
    char *line; /* {"type":...,"object":...}\n */
};

struct fwrite {
    char method[16];
    char path[512];
    char *body;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long rv;
    long uid;
    struct fobj objs[MAX_OBJS];
    int nobjs;
    struct fevent events[MAX_EVENTS];
    int nevents;
    struct fwrite writes[MAX_WRITES];
    int nwrites;
    char pod_paths[64][600];
    int npod_paths;
    int stopping;
} F = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static struct fh_server SRV;
static struct nt T;

static const char *const resources[] = {
    "dittoservers", "configmaps", "services", "statefulsets",
    "pods",         "events",     NULL,
};

/* The resource a path names, the object name after it (or "") and whether
 * it is the status subresource. */
static const char *parse_path(const char *path, char *name, size_t nlen,
                              int *status)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", path);
    char *q = strchr(p, '?');
    if (q != NULL)
        *q = '\0';
    name[0] = '\0';
    *status = 0;
    for (int i = 0; resources[i]; i++) {
        char seg[64];
        snprintf(seg, sizeof(seg), "/%s", resources[i]);
        char *at = strstr(p, seg);
        if (at == NULL)
            continue;
        char *rest = at + strlen(seg);
        if (*rest != '\0' && *rest != '/')
            continue;
        if (*rest == '/') {
            snprintf(name, nlen, "%s", rest + 1);
            char *slash = strchr(name, '/');
            if (slash != NULL) {
                *status = strcmp(slash + 1, "status") == 0;
                *slash = '\0';
            }
        }
        return resources[i];
    }
    return NULL;
}

static struct fobj *find(const char *res, const char *name)
{
    for (int i = 0; i < F.nobjs; i++)
        if (F.objs[i].obj != NULL && strcmp(F.objs[i].res, res) == 0 &&
            strcmp(F.objs[i].name, name) == 0)
            return &F.objs[i];
    return NULL;
}

/* Under F.mu: stamps rv (and uid, namespace), stores `o` (taken over) and
 * logs the event. Returns the stored object. */
static cJSON *store(const char *res, cJSON *o, int deleted)
{
    cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    const char *name =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
    struct fobj *f = find(res, name);
    char rv[32];
    snprintf(rv, sizeof(rv), "%ld", ++F.rv);
    cJSON_DeleteItemFromObjectCaseSensitive(md, "resourceVersion");
    cJSON_AddStringToObject(md, "resourceVersion", rv);
    if (cJSON_GetObjectItemCaseSensitive(md, "namespace") == NULL)
        cJSON_AddStringToObject(md, "namespace", NS);
    if (cJSON_GetObjectItemCaseSensitive(md, "uid") == NULL) {
        const cJSON *old =
            f ? cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(f->obj, "metadata"), "uid")
              : NULL;
        char uid[64];
        snprintf(uid, sizeof(uid), "uid-%ld", ++F.uid);
        cJSON_AddStringToObject(md, "uid",
                                old ? cJSON_GetStringValue(old) : uid);
    }
    const char *type = deleted ? "DELETED" : f ? "MODIFIED" : "ADDED";
    char *text = cJSON_PrintUnformatted(o);
    struct fevent *e = &F.events[F.nevents++];
    snprintf(e->res, sizeof(e->res), "%s", res);
    e->rv = F.rv;
    size_t n = strlen(text) + 64;
    e->line = malloc(n);
    snprintf(e->line, n, "{\"type\":\"%s\",\"object\":%s}\n", type, text);
    free(text);
    if (f == NULL) {
        f = &F.objs[F.nobjs++];
        snprintf(f->res, sizeof(f->res), "%s", res);
        snprintf(f->name, sizeof(f->name), "%s", name);
    } else {
        cJSON_Delete(f->obj);
    }
    f->obj = deleted ? NULL : o;
    if (deleted)
        cJSON_Delete(o);
    pthread_cond_broadcast(&F.cv);
    return f->obj;
}

/* The test's own changes (the kubelet's, the StatefulSet controller's). */
static void put(const char *res, const char *json)
{
    cJSON *o = cJSON_Parse(json);
    if (o == NULL) {
        printf("Bail out! bad test JSON: %s\n", json);
        exit(1);
    }
    pthread_mutex_lock(&F.mu);
    store(res, o, 0);
    pthread_mutex_unlock(&F.mu);
}

static int client_gone(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms) > 0) {
        char c;
        if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
            return 1;
    }
    return 0;
}

static int chunk(int fd, const char *p, size_t n)
{
    if (fh_printf(fd, "%zx\r\n", n) != 0 || fh_write(fd, p, n) != 0 ||
        fh_write(fd, "\r\n", 2) != 0)
        return -1;
    return 0;
}

/* A watch: every event of `res` after `from`, as they come. */
static int serve_watch(int fd, const char *res, long from)
{
    fh_printf(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n");
    int next = 0;
    for (;;) {
        char *lines[64];
        int n = 0;
        pthread_mutex_lock(&F.mu);
        for (; next < F.nevents && n < 64; next++)
            if (strcmp(F.events[next].res, res) == 0 &&
                F.events[next].rv > from)
                lines[n++] = strdup(F.events[next].line);
        int stopping = F.stopping;
        pthread_mutex_unlock(&F.mu);
        int failed = 0;
        for (int i = 0; i < n; i++) {
            if (!failed && chunk(fd, lines[i], strlen(lines[i])) != 0)
                failed = 1;
            free(lines[i]);
        }
        if (failed || stopping || client_gone(fd, 20))
            return 0;
    }
}

static int serve_list(int fd, const char *res)
{
    cJSON *list = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(list, "metadata");
    cJSON *items = cJSON_AddArrayToObject(list, "items");
    pthread_mutex_lock(&F.mu);
    char rv[32];
    snprintf(rv, sizeof(rv), "%ld", F.rv);
    cJSON_AddStringToObject(md, "resourceVersion", rv);
    for (int i = 0; i < F.nobjs; i++)
        if (F.objs[i].obj != NULL && strcmp(F.objs[i].res, res) == 0)
            cJSON_AddItemToArray(items, cJSON_Duplicate(F.objs[i].obj, 1));
    pthread_mutex_unlock(&F.mu);
    char *text = cJSON_PrintUnformatted(list);
    cJSON_Delete(list);
    int rc = fh_respond(fd, 200, NULL, text);
    free(text);
    return rc == 0;
}

static void record(const struct fh_req *r)
{
    pthread_mutex_lock(&F.mu);
    if (F.nwrites < MAX_WRITES) {
        struct fwrite *w = &F.writes[F.nwrites++];
        snprintf(w->method, sizeof(w->method), "%s", r->method);
        snprintf(w->path, sizeof(w->path), "%.500s", r->path);
        w->body = strdup(r->body ? r->body : "");
    }
    pthread_mutex_unlock(&F.mu);
}

static int handler(struct fh_server *s, int fd, const struct fh_req *r)
{
    (void)s;
    char name[256];
    int status;
    const char *res = parse_path(r->path, name, sizeof(name), &status);
    if (res != NULL && strcmp(res, "pods") == 0) {
        pthread_mutex_lock(&F.mu);
        if (F.npod_paths < 64)
            snprintf(F.pod_paths[F.npod_paths++], 600, "%s %.500s", r->method,
                     r->path);
        pthread_mutex_unlock(&F.mu);
    }
    if (res == NULL)
        return fh_respond(fd, 404, NULL,
                          "{\"kind\":\"Status\",\"code\":404}") == 0;
    if (strcmp(r->method, "GET") == 0 && name[0] == '\0') {
        const char *rv = strstr(r->path, "resourceVersion=");
        if (strstr(r->path, "watch=1") != NULL)
            return serve_watch(fd, res, rv ? atol(rv + 16) : 0);
        return serve_list(fd, res);
    }
    record(r);
    if (strcmp(res, "events") == 0)
        return fh_respond(fd, 201, NULL, r->body) == 0;
    if (strcmp(r->method, "PATCH") == 0) {
        cJSON *in = cJSON_Parse(r->body);
        pthread_mutex_lock(&F.mu);
        struct fobj *f = find(res, name);
        cJSON *o;
        int created = f == NULL;
        if (status && f != NULL) {
            o = cJSON_Duplicate(f->obj, 1);
            cJSON_DeleteItemFromObjectCaseSensitive(o, "status");
            cJSON *st = cJSON_DetachItemFromObjectCaseSensitive(in, "status");
            if (st != NULL)
                cJSON_AddItemToObject(o, "status", st);
        } else {
            /* apply: what was sent, keeping the status */
            o = cJSON_Duplicate(in, 1);
            cJSON *st =
                f ? cJSON_GetObjectItemCaseSensitive(f->obj, "status") : NULL;
            if (st != NULL)
                cJSON_AddItemToObject(o, "status", cJSON_Duplicate(st, 1));
        }
        cJSON_Delete(in);
        char *text = cJSON_PrintUnformatted(store(res, o, 0));
        pthread_mutex_unlock(&F.mu);
        int rc = fh_respond(fd, created ? 201 : 200, NULL, text);
        free(text);
        return rc == 0;
    }
    if (strcmp(r->method, "DELETE") == 0) {
        pthread_mutex_lock(&F.mu);
        struct fobj *f = find(res, name);
        if (f != NULL)
            store(res, cJSON_Duplicate(f->obj, 1), 1);
        pthread_mutex_unlock(&F.mu);
        return fh_respond(fd, 200, NULL, "{\"kind\":\"Status\"}") == 0;
    }
    return fh_respond(fd, 405, NULL, "{\"kind\":\"Status\",\"code\":405}") == 0;
}

/* --- observations ------------------------------------------------------- */

static int nwrites(void)
{
    pthread_mutex_lock(&F.mu);
    int n = F.nwrites;
    pthread_mutex_unlock(&F.mu);
    return n;
}

/* Writes from index `from` whose path contains `sub` (and, when `body` is
 * not NULL, whose body contains it). */
static int count_writes(int from, const char *sub, const char *body)
{
    int n = 0;
    pthread_mutex_lock(&F.mu);
    for (int i = from; i < F.nwrites; i++)
        if (strstr(F.writes[i].path, sub) &&
            (body == NULL || strstr(F.writes[i].body, body)))
            n++;
    pthread_mutex_unlock(&F.mu);
    return n;
}

/* The body of the last write whose path contains `sub` (a copy). */
static char *last_write(const char *sub)
{
    char *b = NULL;
    pthread_mutex_lock(&F.mu);
    for (int i = F.nwrites - 1; i >= 0 && b == NULL; i--)
        if (strstr(F.writes[i].path, sub))
            b = strdup(F.writes[i].body);
    pthread_mutex_unlock(&F.mu);
    return b;
}

/* Runs the loop until no write came for `quiet_ms` (at most 30 s). */
static void settle(unsigned quiet_ms)
{
    uint64_t end = loop_now_ms() + test_ms(30000);
    int n = nwrites();
    uint64_t since = loop_now_ms();
    while (loop_now_ms() < end) {
        loop_run_once(T.loop, 20);
        int m = nwrites();
        if (m != n) {
            n = m;
            since = loop_now_ms();
        } else if (loop_now_ms() - since >= test_ms(quiet_ms)) {
            return;
        }
    }
}

struct wcond {
    int from;
    const char *sub, *body;
    int want;
};

static int writes_cond(void *arg)
{
    struct wcond *w = arg;
    return count_writes(w->from, w->sub, w->body) >= w->want;
}

static int wait_write(int from, const char *sub, const char *body)
{
    struct wcond w = {from, sub, body, 1};
    return nt_wait(&T, writes_cond, &w, test_ms(20000));
}

/* The log goes to a file while the controller runs. */
static char log_path[256];
static int saved_stderr = -1;

static void log_to_file(void)
{
    snprintf(log_path, sizeof(log_path), "/tmp/test_controller_pods-%d.log",
             (int)getpid());
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fflush(stderr);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

static void log_restore(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
}

/* Lines of the log containing every one of a, b, c (NULL: any). */
static int log_count(const char *a, const char *b, const char *c)
{
    fflush(stderr);
    FILE *f = fopen(log_path, "r");
    char line[8192];
    int n = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, a) && (b == NULL || strstr(line, b)) &&
            (c == NULL || strstr(line, c)))
            n++;
    if (f != NULL)
        fclose(f);
    return n;
}

struct lcond {
    const char *a, *b, *c;
    int want;
};

static int log_cond(void *arg)
{
    struct lcond *l = arg;
    return log_count(l->a, l->b, l->c) >= l->want;
}

static int wait_log(const char *a, const char *b, const char *c, int want)
{
    struct lcond l = {a, b, c, want};
    return nt_wait(&T, log_cond, &l, test_ms(20000));
}

/* --- fixtures ----------------------------------------------------------- */

static void put_ds(const char *name)
{
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"dittofs.dittofs.com/v1alpha1\","
             "\"kind\":\"DittoServer\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"" NS "\",\"generation\":1},"
             "\"spec\":{\"image\":\"img\",\"replicas\":1,\"nfsPort\":2049,"
             "\"storage\":{\"metadataSize\":\"1Gi\"},"
             "\"service\":{\"type\":\"ClusterIP\"}}}",
             name);
    put("dittoservers", buf);
}

/* The pod ds-0 of DittoServer ds: its container waiting for `reason`
 * with `message`, after `restarts` restarts, the last run ended at `at`. */
static void put_pod(const char *reason, const char *message, int restarts,
                    const char *at, int ready)
{
    char buf[4096];
    snprintf(
        buf, sizeof(buf),
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{"
        "\"name\":\"ds-0\",\"namespace\":\"" NS "\",\"labels\":{"
        "\"app.kubernetes.io/managed-by\":\"dittofs-operator\","
        "\"dittofs.dittofs.com/server\":\"ds\"},"
        "\"managedFields\":[{\"manager\":\"kubelet\"}]},"
        "\"spec\":{\"containers\":[{\"name\":\"dittofs\",\"image\":\"img\"}]},"
        "\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":"
        "\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"%s\"}],"
        "\"containerStatuses\":[{\"name\":\"dittofs\",\"image\":\"img\","
        "\"ready\":%s,\"restartCount\":%d,\"state\":%s%s%s%s%s,"
        "\"lastState\":{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\","
        "\"message\":\"bad config\",\"finishedAt\":\"%s\"}}}]}}",
        at, ready ? "true" : "false", restarts,
        reason ? "{\"waiting\":{\"reason\":\"" : "{\"running\":{}}",
        reason ? reason : "", reason ? "\",\"message\":\"" : "",
        reason ? message : "", reason ? "\"}}" : "", at);
    put("pods", buf);
}

static void put_sts_status(int ready)
{
    pthread_mutex_lock(&F.mu);
    struct fobj *f = find("statefulsets", "ds");
    cJSON *o = f ? cJSON_Duplicate(f->obj, 1) : NULL;
    if (o != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(o, "status");
        cJSON *st = cJSON_AddObjectToObject(o, "status");
        cJSON_AddNumberToObject(st, "replicas", 1);
        cJSON_AddNumberToObject(st, "readyReplicas", ready);
        store("statefulsets", o, 0);
    }
    pthread_mutex_unlock(&F.mu);
}

/* --- cases -------------------------------------------------------------- */

static struct controller *start(struct policy_set *ps)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct controller_opts o = {
        .namespace = NS,
        .limits = {.timeout_ms = test_ms(1000)},
        .backoff_base_ms = 50,
        .backoff_max_ms = 500,
    };
    struct controller *c = controller_new(T.http, ps, NULL, NULL, &o, &err);
    if (c == NULL || controller_start(c) != 0) {
        printf("Bail out! controller: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    dbuf_free(&err);
    controller_set_leading(c, 1);
    return c;
}

static int is_synced(void *arg)
{
    return controller_synced(arg);
}

static void test_pods(void)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(NULL, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    put_ds("ds");
    struct controller *c = start(ps);
    CHECK(nt_wait(&T, is_synced, c, test_ms(20000)),
          "the informers sync, the Pod informer with them");
    CHECK(wait_write(0, "/dittoservers/ds/status", NULL),
          "the DittoServer is reconciled (status written)");
    settle(500);
    int n = 0;
    pthread_mutex_lock(&F.mu);
    for (int i = 0; i < F.npod_paths; i++)
        if (strstr(F.pod_paths[i], "GET /api/v1/namespaces/" NS "/pods?") !=
                NULL &&
            strstr(F.pod_paths[i], "labelSelector=app.kubernetes.io%2F"
                                   "managed-by%3Ddittofs-operator") != NULL)
            n++;
    pthread_mutex_unlock(&F.mu);
    CHECK(n >= 2, "pods listed and watched by the managed-by label (%d)", n);
    char *sts = last_write("/statefulsets/ds");
    cJSON *sj = sts ? cJSON_Parse(sts) : NULL;
    cJSON *tl = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(sj, "spec"), "template"),
            "metadata"),
        "labels");
    const char *srv = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(tl, "dittofs.dittofs.com/server"));
    const char *mgr = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(tl, "app.kubernetes.io/managed-by"));
    CHECK(srv && strcmp(srv, "ds") == 0 && mgr &&
              strcmp(mgr, "dittofs-operator") == 0,
          "the applied StatefulSet's pod template carries the core's labels");
    cJSON_Delete(sj);
    free(sts);
    int full0 = log_count("msg=\"reconciled\"", "eval=full", NULL);
    CHECK(full0 >= 1 &&
              log_count("msg=\"reconciled\"", "eval=status", NULL) == 0,
          "startup: full reconciles only (%d)", full0);

    /* The kubelet reports a crash loop. */
    int w0 = nwrites();
    put_pod("CrashLoopBackOff",
            "back-off 40s restarting failed container=dittofs pod=ds-0_t(u)", 2,
            "2024-05-01T10:05:00Z", 0);
    CHECK(wait_write(w0, "/dittoservers/ds/status", "CrashLoopBackOff"),
          "a Pod in CrashLoopBackOff: the status is written");
    settle(500);
    char *st = last_write("/dittoservers/ds/status");
    CHECK(st && strstr(st, "\"phase\":\"Failed\"") &&
              strstr(st, "pod ds-0, container dittofs: back-off restarting "
                         "failed container; last termination: Error, exit "
                         "code 1: bad config"),
          "... phase Failed, Ready=False/CrashLoopBackOff with the last "
          "termination");
    free(st);
    CHECK(count_writes(w0, "", NULL) == 1,
          "... and nothing else is written (%d writes)",
          count_writes(w0, "", NULL));
    CHECK(log_count("msg=\"reconciled\"", "eval=status", "writes=1") == 1 &&
              log_count("msg=\"reconciled\"", "eval=full", NULL) == full0,
          "... by a status-only reconcile");

    /* Only the back-off, the counters and the times change. */
    w0 = nwrites();
    int st0 = log_count("msg=\"reconciled\"", "eval=status", NULL);
    put_pod("CrashLoopBackOff",
            "back-off 5m0s restarting failed container=dittofs pod=ds-0_t(u)",
            7, "2024-05-01T11:45:00Z", 0);
    CHECK(wait_log("msg=\"reconciled\"", "eval=status", NULL, st0 + 1),
          "a Pod update: a status-only reconcile");
    settle(500);
    CHECK(count_writes(w0, "", NULL) == 0,
          "... which writes nothing when the derived status is the same "
          "(%d writes)",
          count_writes(w0, "", NULL));

    /* Between two restarts: running, not ready. */
    put_pod(NULL, NULL, 8, "2024-05-01T11:50:00Z", 0);
    CHECK(wait_log("msg=\"reconciled\"", "eval=status", NULL, st0 + 2),
          "the restarted container: a status-only reconcile");
    settle(500);
    CHECK(count_writes(w0, "", NULL) == 0,
          "... still CrashLoopBackOff: no write (%d)",
          count_writes(w0, "", NULL));

    /* Ready: the StatefulSet says so, a full reconcile says Running. */
    int full1 = log_count("msg=\"reconciled\"", "eval=full", NULL);
    put_pod(NULL, NULL, 8, "2024-05-01T11:50:00Z", 1);
    put_sts_status(1);
    CHECK(wait_write(w0, "/dittoservers/ds/status", "\"phase\":\"Running\""),
          "a StatefulSet with a ready replica: Running");
    CHECK(log_count("msg=\"reconciled\"", "eval=full", NULL) > full1,
          "... from a full reconcile");
    settle(500);

    pthread_mutex_lock(&F.mu);
    int pod_writes = 0;
    for (int i = 0; i < F.npod_paths; i++)
        if (strncmp(F.pod_paths[i], "GET ", 4) != 0)
            pod_writes++;
    pthread_mutex_unlock(&F.mu);
    CHECK(pod_writes == 0 && count_writes(0, "/pods", NULL) == 0,
          "no request on a pods path but GET (%d)", pod_writes);
    controller_free(c);
    policy_set_free(ps);
    dbuf_free(&err);
}

/* A policy rendering a Pod: refused before any write, PolicyError. */
static void test_rendered_pod(void)
{
    char dir[256], path[320];
    snprintf(dir, sizeof(dir), "/tmp/test_controller_pods-%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("local M = {}\n"
          "function M.render(ds, ctx)\n"
          "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
          "    metadata = { name = ctx.name .. '-c' } },\n"
          "    { apiVersion = 'v1', kind = 'Pod',\n"
          "      metadata = { name = ctx.name .. '-p' } } }\n"
          "end\n"
          "function M.status(ds, observed, ctx)\n"
          "  return { phase = 'Pending' }\n"
          "end\n"
          "return M\n",
          f);
    fclose(f);
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(dir, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    int w0 = nwrites();
    put_ds("podder");
    struct controller *c = start(ps);
    CHECK(wait_write(w0, "/dittoservers/podder/status", "PolicyError"),
          "a rendered Pod: Reconciled=False/PolicyError");
    char *st = last_write("/dittoservers/podder/status");
    CHECK(st && strstr(st, "the operator manages only ConfigMaps, Services "
                           "and StatefulSets"),
          "... saying which kinds are managed");
    free(st);
    CHECK(count_writes(w0, "/configmaps/podder-c", NULL) == 0 &&
              count_writes(w0, "/pods", NULL) == 0,
          "... and nothing of that rendering is written");
    controller_free(c);
    policy_set_free(ps);
    dbuf_free(&err);
    unlink(path);
    rmdir(dir);
}

/* Issue 11: an integer above 2^53 in a rendered object and in the status
 * reaches the apiserver exact (cJSON's doubles made 2^53+1 into 2^53). */
static void test_exact_integers(void)
{
    char dir[256], path[320];
    snprintf(dir, sizeof(dir), "/tmp/test_controller_pods-x%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("local M = {}\n"
          "function M.render(ds, ctx)\n"
          "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
          "    metadata = { name = ctx.name .. '-c' },\n"
          "    x = 9007199254740993 } }\n"
          "end\n"
          "function M.status(ds, observed, ctx)\n"
          "  return { phase = 'Pending', big = -9007199254740993 }\n"
          "end\n"
          "return M\n",
          f);
    fclose(f);
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(dir, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    int w0 = nwrites();
    put_ds("exact");
    struct controller *c = start(ps);
    CHECK(wait_write(w0, "/configmaps/exact-c", NULL) &&
              wait_write(w0, "/dittoservers/exact/status", NULL),
          "exact: the ConfigMap and the status are written");
    char *cm = last_write("/configmaps/exact-c");
    char *st = last_write("/dittoservers/exact/status");
    CHECK(cm && strstr(cm, "\"x\":9007199254740993"),
          "... the rendered 2^53+1 exact (%s)", cm ? cm : "none");
    CHECK(st && strstr(st, "\"big\":-9007199254740993"),
          "... the status' -(2^53+1) exact (%s)", st ? st : "none");
    free(cm);
    free(st);
    controller_free(c);
    policy_set_free(ps);
    dbuf_free(&err);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    if (fh_start(&SRV, handler, NULL) != 0) {
        printf("Bail out! cannot listen\n");
        return 1;
    }
    const char *kc = fh_kubeconfig(SRV.port, "token");
    nt_open(&T, kc, NULL);
    log_to_file();
    test_pods();
    test_rendered_pod();
    test_exact_integers();
    log_restore();
    pthread_mutex_lock(&F.mu);
    F.stopping = 1;
    pthread_mutex_unlock(&F.mu);
    nt_close(&T);
    fh_stop(&SRV);
    /* Connection threads see the client gone and end. */
    usleep(200 * 1000);
    pthread_mutex_lock(&F.mu);
    for (int i = 0; i < F.nobjs; i++)
        cJSON_Delete(F.objs[i].obj);
    for (int i = 0; i < F.nevents; i++)
        free(F.events[i].line);
    for (int i = 0; i < F.nwrites; i++)
        free(F.writes[i].body);
    pthread_mutex_unlock(&F.mu);
    unlink(kc);
    unlink(log_path);
    return TEST_SUMMARY();
}
