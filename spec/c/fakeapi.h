/*
 * fakeapi: a small in-memory apiserver on 127.0.0.1 for the controller's
 * unit tests (test_controller, test_controller_pods): lists, watches as
 * chunked streams of events (every change after the requested
 * resourceVersion, as it comes), server-side apply as "store what was
 * sent" (keeping the stored status), the status subresource, deletes,
 * reads of one object (as stored, or 404; not recorded),
 * and Events accepted as they are; a resource's watch events can be held
 * back (fa_hold_watch) to play a lagging watch, and writes stalled
 * (fa_stall) to keep a reconcile in flight. Every request but a GET is
 * recorded (method, path, body) so a test counts and reads the writes; fa_fail
 * scripts answers (a 422, a 500) for the writes whose path matches. The
 * API semantics themselves are the integration tests' business: this
 * server checks only the preconditions a write may carry, as the
 * apiserver does (an apply's metadata.resourceVersion other than the
 * stored one, or its metadata.uid with nothing stored; a delete's
 * preconditions: 409 Conflict). Also: the log to a file
 * and counting its lines, waiting on writes or log lines while the loop runs.
 * One server per test program (the state is the static FA). Header-only; uses
 * fakehttp, nettest, testlib, loop, cJSON, pthreads.
 */
#ifndef DITTOFS_FAKEAPI_H
#define DITTOFS_FAKEAPI_H

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fakehttp.h"
#include "loop.h"
#include "nettest.h"
#include "testlib.h"

/* The namespace of every object the tests store. */
#define FA_NS "t"
#define FA_MAX_OBJS 256
#define FA_MAX_EVENTS 2048
#define FA_MAX_WRITES 512
#define FA_MAX_RULES 16

struct fa_obj {
    char res[32];
    char name[128];
    cJSON *obj; /* NULL: deleted */
};

struct fa_event {
    char res[32];
    long rv;
    char *line; /* {"type":...,"object":...}\n */
};

struct fa_write {
    char method[16];
    char path[512];
    char *body;
    int code; /* the status answered */
};

/* A scripted answer: the next `times` writes (-1: every one) with `method`
 * whose path contains `path_sub` get `code` and a Status with `message`
 * instead of being served. */
struct fa_rule {
    char method[16];
    char path_sub[256];
    int code;
    char message[512];
    int times;
};

static struct {
    pthread_mutex_t mu;
    long rv;
    long uid;
    struct fa_obj objs[FA_MAX_OBJS];
    int nobjs;
    struct fa_event events[FA_MAX_EVENTS];
    int nevents;
    struct fa_write writes[FA_MAX_WRITES];
    int nwrites;
    struct fa_rule rules[FA_MAX_RULES];
    int nrules;
    char held[32];     /* watches of this resource deliver nothing meanwhile */
    char stalled[256]; /* writes whose path contains this wait meanwhile */
    char held_answer[256];   /* writes whose path contains this are stored
                                (their event published) but answered only
                                once released */
    long sent_rv;            /* the newest event a watch has sent */
    char pod_paths[64][600]; /* every request on a pods path */
    int npod_paths;
    int stopping;
    struct fh_server srv;
    struct nt t; /* the client side: loop and HTTP client */
    const char *kubeconfig;
} FA = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *const fa_resources[] = {
    "dittoservers", "configmaps", "services", "statefulsets",
    "pods",         "events",     NULL,
};

/* --- the server ---------------------------------------------------------- */

/* The resource a path names, the object name after it (or "") and whether
 * it is the status subresource. */
static const char *fa_parse_path(const char *path, char *name, size_t nlen,
                                 int *status)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", path);
    char *q = strchr(p, '?');
    if (q != NULL)
        *q = '\0';
    name[0] = '\0';
    *status = 0;
    for (int i = 0; fa_resources[i]; i++) {
        char seg[64];
        snprintf(seg, sizeof(seg), "/%s", fa_resources[i]);
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
        return fa_resources[i];
    }
    return NULL;
}

/* Under FA.mu: the stored object res/name, or NULL. */
static struct fa_obj *fa_find(const char *res, const char *name)
{
    for (int i = 0; i < FA.nobjs; i++)
        if (FA.objs[i].obj != NULL && strcmp(FA.objs[i].res, res) == 0 &&
            strcmp(FA.objs[i].name, name) == 0)
            return &FA.objs[i];
    return NULL;
}

/* Under FA.mu: stamps rv (and uid, namespace), stores `o` (taken over) and
 * logs the event. Returns the stored object (NULL when deleted). */
static cJSON *fa_store(const char *res, cJSON *o, int deleted)
{
    cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    const char *name =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
    struct fa_obj *f = fa_find(res, name);
    if ((f == NULL && FA.nobjs == FA_MAX_OBJS) || FA.nevents == FA_MAX_EVENTS) {
        printf("Bail out! the fake apiserver is full\n");
        exit(1);
    }
    char rv[32];
    snprintf(rv, sizeof(rv), "%ld", ++FA.rv);
    cJSON_DeleteItemFromObjectCaseSensitive(md, "resourceVersion");
    cJSON_AddStringToObject(md, "resourceVersion", rv);
    if (cJSON_GetObjectItemCaseSensitive(md, "namespace") == NULL)
        cJSON_AddStringToObject(md, "namespace", FA_NS);
    if (cJSON_GetObjectItemCaseSensitive(md, "uid") == NULL) {
        const cJSON *old =
            f ? cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(f->obj, "metadata"), "uid")
              : NULL;
        char uid[64];
        snprintf(uid, sizeof(uid), "uid-%ld", ++FA.uid);
        cJSON_AddStringToObject(md, "uid",
                                old ? cJSON_GetStringValue(old) : uid);
    }
    const char *type = deleted ? "DELETED" : f ? "MODIFIED" : "ADDED";
    char *text = cJSON_PrintUnformatted(o);
    struct fa_event *e = &FA.events[FA.nevents++];
    snprintf(e->res, sizeof(e->res), "%s", res);
    e->rv = FA.rv;
    size_t n = strlen(text) + 64;
    e->line = malloc(n);
    snprintf(e->line, n, "{\"type\":\"%s\",\"object\":%s}\n", type, text);
    free(text);
    if (f == NULL) {
        f = &FA.objs[FA.nobjs++];
        snprintf(f->res, sizeof(f->res), "%s", res);
        snprintf(f->name, sizeof(f->name), "%s", name);
    } else {
        cJSON_Delete(f->obj);
    }
    f->obj = deleted ? NULL : o;
    if (deleted)
        cJSON_Delete(o);
    return f->obj;
}

/* The test's own changes (a user's, the kubelet's, the StatefulSet
 * controller's): stores the JSON object `json` as resource `res`. */
__attribute__((unused)) static void fa_put(const char *res, const char *json)
{
    cJSON *o = cJSON_Parse(json);
    if (o == NULL) {
        printf("Bail out! bad test JSON: %s\n", json);
        exit(1);
    }
    pthread_mutex_lock(&FA.mu);
    fa_store(res, o, 0);
    pthread_mutex_unlock(&FA.mu);
}

/* Deletes the stored object res/name (a DELETED event); nothing when it
 * is not there. */
__attribute__((unused)) static void fa_delete(const char *res, const char *name)
{
    pthread_mutex_lock(&FA.mu);
    struct fa_obj *f = fa_find(res, name);
    if (f != NULL)
        fa_store(res, cJSON_Duplicate(f->obj, 1), 1);
    pthread_mutex_unlock(&FA.mu);
}

/* A copy of the stored object res/name (cJSON_Delete it), or NULL. */
__attribute__((unused)) static cJSON *fa_get(const char *res, const char *name)
{
    pthread_mutex_lock(&FA.mu);
    struct fa_obj *f = fa_find(res, name);
    cJSON *o = f != NULL ? cJSON_Duplicate(f->obj, 1) : NULL;
    pthread_mutex_unlock(&FA.mu);
    return o;
}

/* Scripts an answer (struct fa_rule); at most FA_MAX_RULES. */
__attribute__((unused)) static void fa_fail(const char *method,
                                            const char *path_sub, int code,
                                            const char *message, int times)
{
    pthread_mutex_lock(&FA.mu);
    if (FA.nrules < FA_MAX_RULES) {
        struct fa_rule *r = &FA.rules[FA.nrules++];
        snprintf(r->method, sizeof(r->method), "%s", method);
        snprintf(r->path_sub, sizeof(r->path_sub), "%s", path_sub);
        r->code = code;
        snprintf(r->message, sizeof(r->message), "%s", message);
        r->times = times;
    }
    pthread_mutex_unlock(&FA.mu);
}

/* Holds back the watch events of `res` (NULL: releases them): the
 * changes are stored and listed, the watches deliver them only once
 * released, in order, as a lagging watch would. */
__attribute__((unused)) static void fa_hold_watch(const char *res)
{
    pthread_mutex_lock(&FA.mu);
    snprintf(FA.held, sizeof(FA.held), "%s", res ? res : "");
    pthread_mutex_unlock(&FA.mu);
}

/* Holds the answers to the writes whose path contains `path_sub` (NULL:
 * lets them go): the write is stored and its watch event goes out, the
 * answer waits, as when the event overtakes the answer (another stream of
 * the connection, under load). */
__attribute__((unused)) static void fa_hold_answer(const char *path_sub)
{
    pthread_mutex_lock(&FA.mu);
    snprintf(FA.held_answer, sizeof(FA.held_answer), "%s",
             path_sub ? path_sub : "");
    pthread_mutex_unlock(&FA.mu);
}

/* Stalls the writes whose path contains `path_sub` (NULL: lets them go):
 * their answers wait until released, as a slow apiserver's would. */
__attribute__((unused)) static void fa_stall(const char *path_sub)
{
    pthread_mutex_lock(&FA.mu);
    snprintf(FA.stalled, sizeof(FA.stalled), "%s", path_sub ? path_sub : "");
    pthread_mutex_unlock(&FA.mu);
}

/* Drops every scripted answer. */
__attribute__((unused)) static void fa_fail_clear(void)
{
    pthread_mutex_lock(&FA.mu);
    FA.nrules = 0;
    pthread_mutex_unlock(&FA.mu);
}

static int fa_client_gone(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms) > 0) {
        char c;
        if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
            return 1;
    }
    return 0;
}

static int fa_chunk(int fd, const char *p, size_t n)
{
    if (fh_printf(fd, "%zx\r\n", n) != 0 || fh_write(fd, p, n) != 0 ||
        fh_write(fd, "\r\n", 2) != 0)
        return -1;
    return 0;
}

/* A watch: every event of `res` after `from`, as they come. */
static int fa_serve_watch(int fd, const char *res, long from)
{
    fh_printf(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n");
    int next = 0;
    for (;;) {
        char *lines[64];
        long rvs[64];
        int n = 0;
        pthread_mutex_lock(&FA.mu);
        for (; strcmp(FA.held, res) != 0 && next < FA.nevents && n < 64; next++)
            if (strcmp(FA.events[next].res, res) == 0 &&
                FA.events[next].rv > from) {
                rvs[n] = FA.events[next].rv;
                lines[n++] = strdup(FA.events[next].line);
            }
        int stopping = FA.stopping;
        pthread_mutex_unlock(&FA.mu);
        int failed = 0;
        for (int i = 0; i < n; i++) {
            if (!failed && fa_chunk(fd, lines[i], strlen(lines[i])) != 0)
                failed = 1;
            free(lines[i]);
            pthread_mutex_lock(&FA.mu);
            if (!failed && rvs[i] > FA.sent_rv)
                FA.sent_rv = rvs[i];
            pthread_mutex_unlock(&FA.mu);
        }
        if (failed || stopping || fa_client_gone(fd, 20))
            return 0;
    }
}

static int fa_serve_list(int fd, const char *res)
{
    cJSON *list = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(list, "metadata");
    cJSON *items = cJSON_AddArrayToObject(list, "items");
    pthread_mutex_lock(&FA.mu);
    char rv[32];
    snprintf(rv, sizeof(rv), "%ld", FA.rv);
    cJSON_AddStringToObject(md, "resourceVersion", rv);
    for (int i = 0; i < FA.nobjs; i++)
        if (FA.objs[i].obj != NULL && strcmp(FA.objs[i].res, res) == 0)
            cJSON_AddItemToArray(items, cJSON_Duplicate(FA.objs[i].obj, 1));
    pthread_mutex_unlock(&FA.mu);
    char *text = cJSON_PrintUnformatted(list);
    cJSON_Delete(list);
    int rc = fh_respond(fd, 200, NULL, text);
    free(text);
    return rc == 0;
}

/* Records a write; returns its index, or -1 when the record is full. */
static int fa_record(const struct fh_req *r)
{
    int i = -1;
    pthread_mutex_lock(&FA.mu);
    if (FA.nwrites < FA_MAX_WRITES) {
        i = FA.nwrites++;
        struct fa_write *w = &FA.writes[i];
        snprintf(w->method, sizeof(w->method), "%s", r->method);
        snprintf(w->path, sizeof(w->path), "%.500s", r->path);
        w->body = strdup(r->body ? r->body : "");
        w->code = 0;
    }
    pthread_mutex_unlock(&FA.mu);
    return i;
}

/* Under FA.mu: the scripted answer for this write, or NULL (and counts
 * the use of a rule). */
static const struct fa_rule *fa_rule_for(const struct fh_req *r)
{
    for (int i = 0; i < FA.nrules; i++) {
        struct fa_rule *u = &FA.rules[i];
        if (u->times == 0 || strcmp(u->method, r->method) != 0 ||
            strstr(r->path, u->path_sub) == NULL)
            continue;
        if (u->times > 0)
            u->times--;
        return u;
    }
    return NULL;
}

static void fa_set_code(int w, int code)
{
    if (w < 0)
        return;
    pthread_mutex_lock(&FA.mu);
    FA.writes[w].code = code;
    pthread_mutex_unlock(&FA.mu);
}

/* Under FA.mu: why an apply body `in` on the stored `f` (NULL: none) is
 * refused with 409, as the apiserver does (its registry's optimistic
 * lock; the apply handler's uid check on a create, which a status apply
 * never makes), or NULL. */
static const char *fa_precondition(const cJSON *in, const struct fa_obj *f,
                                   int status)
{
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(in, "metadata");
    const char *rv = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(md, "resourceVersion"));
    const char *uid =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "uid"));
    if (f == NULL)
        return !status && uid != NULL && uid[0]
                   ? "uid mismatch: the provided object "
                     "specified uid, and no existing object "
                     "was found"
                   : NULL;
    const char *have = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(f->obj, "metadata"),
        "resourceVersion"));
    if (rv != NULL && rv[0] && (have == NULL || strcmp(rv, have) != 0))
        return "the object has been modified; please apply your changes to "
               "the latest version and try again";
    return NULL;
}

/* Waits while `pattern` (FA.stalled or FA.held_answer, set by the test)
 * is non-empty and found in path, unless the server is stopping. */
static void fa_wait_while(const char *pattern, const char *path)
{
    for (;;) {
        pthread_mutex_lock(&FA.mu);
        int wait =
            pattern[0] != '\0' && !FA.stopping && strstr(path, pattern) != NULL;
        pthread_mutex_unlock(&FA.mu);
        if (!wait)
            return;
        usleep(5000);
    }
}

static int fa_handler(struct fh_server *s, int fd, const struct fh_req *r)
{
    (void)s;
    char name[256];
    int status;
    const char *res = fa_parse_path(r->path, name, sizeof(name), &status);
    if (res != NULL && strcmp(res, "pods") == 0) {
        pthread_mutex_lock(&FA.mu);
        if (FA.npod_paths < 64)
            snprintf(FA.pod_paths[FA.npod_paths++], 600, "%s %.500s", r->method,
                     r->path);
        pthread_mutex_unlock(&FA.mu);
    }
    if (res == NULL)
        return fh_respond(fd, 404, NULL,
                          "{\"kind\":\"Status\",\"code\":404}") == 0;
    if (strcmp(r->method, "GET") == 0 && name[0] == '\0') {
        const char *rv = strstr(r->path, "resourceVersion=");
        if (strstr(r->path, "watch=1") != NULL)
            return fa_serve_watch(fd, res, rv ? atol(rv + 16) : 0);
        return fa_serve_list(fd, res);
    }
    if (strcmp(r->method, "GET") == 0) {
        pthread_mutex_lock(&FA.mu);
        struct fa_obj *f = fa_find(res, name);
        char *text = f != NULL ? cJSON_PrintUnformatted(f->obj) : NULL;
        pthread_mutex_unlock(&FA.mu);
        int rc = text != NULL
                     ? fh_respond(fd, 200, NULL, text)
                     : fh_respond(fd, 404, NULL,
                                  "{\"kind\":\"Status\",\"code\":404}");
        free(text);
        return rc == 0;
    }
    int w = fa_record(r);
    fa_wait_while(FA.stalled, r->path);
    pthread_mutex_lock(&FA.mu);
    const struct fa_rule *u = fa_rule_for(r);
    char fail[1024] = "";
    int fail_code = u != NULL ? u->code : 0;
    if (u != NULL)
        snprintf(fail, sizeof(fail),
                 "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":"
                 "\"Failure\",\"message\":\"%s\",\"code\":%d}",
                 u->message, u->code);
    pthread_mutex_unlock(&FA.mu);
    if (fail_code != 0) {
        fa_set_code(w, fail_code);
        return fh_respond(fd, fail_code, NULL, fail) == 0;
    }
    if (strcmp(res, "events") == 0) {
        fa_set_code(w, 201);
        return fh_respond(fd, 201, NULL, r->body) == 0;
    }
    if (strcmp(r->method, "PATCH") == 0) {
        cJSON *in = cJSON_Parse(r->body);
        pthread_mutex_lock(&FA.mu);
        struct fa_obj *f = fa_find(res, name);
        const char *why = fa_precondition(in, f, status);
        if (why != NULL) {
            pthread_mutex_unlock(&FA.mu);
            cJSON_Delete(in);
            char msg[1024];
            snprintf(msg, sizeof(msg),
                     "{\"kind\":\"Status\",\"apiVersion\":\"v1\","
                     "\"status\":\"Failure\",\"message\":\"Operation cannot "
                     "be fulfilled on %s \\\"%s\\\": %s\",\"reason\":"
                     "\"Conflict\",\"code\":409}",
                     res, name, why);
            fa_set_code(w, 409);
            return fh_respond(fd, 409, NULL, msg) == 0;
        }
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
        char *text = cJSON_PrintUnformatted(fa_store(res, o, 0));
        pthread_mutex_unlock(&FA.mu);
        fa_set_code(w, created ? 201 : 200);
        fa_wait_while(FA.held_answer, r->path);
        int rc = fh_respond(fd, created ? 201 : 200, NULL, text);
        free(text);
        return rc == 0;
    }
    if (strcmp(r->method, "DELETE") == 0) {
        cJSON *opts = cJSON_Parse(r->body ? r->body : "");
        const cJSON *pre =
            cJSON_GetObjectItemCaseSensitive(opts, "preconditions");
        pthread_mutex_lock(&FA.mu);
        struct fa_obj *f = fa_find(res, name);
        const cJSON *md =
            cJSON_GetObjectItemCaseSensitive(f ? f->obj : NULL, "metadata");
        const char *want[2] = {
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pre, "uid")),
            cJSON_GetStringValue(
                cJSON_GetObjectItemCaseSensitive(pre, "resourceVersion"))};
        const char *have[2] = {
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "uid")),
            cJSON_GetStringValue(
                cJSON_GetObjectItemCaseSensitive(md, "resourceVersion"))};
        int mismatch = 0;
        for (int i = 0; i < 2 && f != NULL; i++)
            if (want[i] != NULL &&
                (have[i] == NULL || strcmp(want[i], have[i]) != 0))
                mismatch = 1;
        cJSON_Delete(opts);
        if (mismatch) {
            pthread_mutex_unlock(&FA.mu);
            fa_set_code(w, 409);
            return fh_respond(fd, 409, NULL,
                              "{\"kind\":\"Status\",\"status\":\"Failure\","
                              "\"message\":\"Precondition failed\",\"reason\":"
                              "\"Conflict\",\"code\":409}") == 0;
        }
        if (f != NULL)
            fa_store(res, cJSON_Duplicate(f->obj, 1), 1);
        pthread_mutex_unlock(&FA.mu);
        fa_set_code(w, 200);
        return fh_respond(fd, 200, NULL, "{\"kind\":\"Status\"}") == 0;
    }
    fa_set_code(w, 405);
    return fh_respond(fd, 405, NULL, "{\"kind\":\"Status\",\"code\":405}") == 0;
}

/* --- observations -------------------------------------------------------- */

/* Writes recorded so far. */
__attribute__((unused)) static int fa_nwrites(void)
{
    pthread_mutex_lock(&FA.mu);
    int n = FA.nwrites;
    pthread_mutex_unlock(&FA.mu);
    return n;
}

/* Writes from index `from` whose path contains `sub` (and, when `body` is
 * not NULL, whose body contains it). */
__attribute__((unused)) static int fa_count_writes(int from, const char *sub,
                                                   const char *body)
{
    int n = 0;
    pthread_mutex_lock(&FA.mu);
    for (int i = from; i < FA.nwrites; i++)
        if (strstr(FA.writes[i].path, sub) &&
            (body == NULL || strstr(FA.writes[i].body, body)))
            n++;
    pthread_mutex_unlock(&FA.mu);
    return n;
}

/* Writes from index `from` whose path contains `sub` answered `code`. */
__attribute__((unused)) static int fa_count_answers(int from, const char *sub,
                                                    int code)
{
    int n = 0;
    pthread_mutex_lock(&FA.mu);
    for (int i = from; i < FA.nwrites; i++)
        if (strstr(FA.writes[i].path, sub) && FA.writes[i].code == code)
            n++;
    pthread_mutex_unlock(&FA.mu);
    return n;
}

struct fa_acond {
    int from;
    const char *sub;
    int code;
};

static int fa_answer_cond(void *arg)
{
    struct fa_acond *a = arg;
    return fa_count_answers(a->from, a->sub, a->code) >= 1;
}

/* Runs the loop until a write from index `from` whose path contains `sub`
 * is answered `code` (at most 20 s); 1 when one was. */
__attribute__((unused)) static int fa_wait_answer(int from, const char *sub,
                                                  int code)
{
    struct fa_acond a = {from, sub, code};
    return nt_wait(&FA.t, fa_answer_cond, &a, test_ms(20000));
}

/* The body of the last write whose path contains `sub` (a copy: free it),
 * or NULL. */
__attribute__((unused)) static char *fa_last_write(const char *sub)
{
    char *b = NULL;
    pthread_mutex_lock(&FA.mu);
    for (int i = FA.nwrites - 1; i >= 0 && b == NULL; i--)
        if (strstr(FA.writes[i].path, sub))
            b = strdup(FA.writes[i].body);
    pthread_mutex_unlock(&FA.mu);
    return b;
}

/* Runs the loop until no write came for `quiet_ms` (at most 30 s). */
__attribute__((unused)) static void fa_settle(unsigned quiet_ms)
{
    uint64_t end = loop_now_ms() + test_ms(30000);
    int n = fa_nwrites();
    uint64_t since = loop_now_ms();
    while (loop_now_ms() < end) {
        loop_run_once(FA.t.loop, 20);
        int m = fa_nwrites();
        if (m != n) {
            n = m;
            since = loop_now_ms();
        } else if (loop_now_ms() - since >= test_ms(quiet_ms)) {
            return;
        }
    }
}

struct fa_wcond {
    int from;
    const char *sub, *body;
    int want;
};

static int fa_writes_cond(void *arg)
{
    struct fa_wcond *w = arg;
    return fa_count_writes(w->from, w->sub, w->body) >= w->want;
}

/* Runs the loop until `want` writes from index `from` match (see
 * fa_count_writes), at most 20 s; returns 1 when they came. */
__attribute__((unused)) static int fa_wait_writes(int from, const char *sub,
                                                  const char *body, int want)
{
    struct fa_wcond w = {from, sub, body, want};
    return nt_wait(&FA.t, fa_writes_cond, &w, test_ms(20000));
}

__attribute__((unused)) static int fa_wait_write(int from, const char *sub,
                                                 const char *body)
{
    return fa_wait_writes(from, sub, body, 1);
}

static int fa_sent_cond(void *arg)
{
    long *want = arg;
    pthread_mutex_lock(&FA.mu);
    int sent = FA.sent_rv >= *want;
    pthread_mutex_unlock(&FA.mu);
    return sent;
}

/* Runs the loop until a watch has sent every event stored so far (at most
 * 20 s), then `ms` more for the client to read them; 1 when sent. */
__attribute__((unused)) static int fa_wait_sent(unsigned ms)
{
    pthread_mutex_lock(&FA.mu);
    long want = FA.rv;
    pthread_mutex_unlock(&FA.mu);
    int sent = nt_wait(&FA.t, fa_sent_cond, &want, test_ms(20000));
    nt_run_for(&FA.t, ms);
    return sent;
}

/* --- the log ------------------------------------------------------------- */

/* The log goes to a file while the controller runs. */
static char fa_log_path[256];
static int fa_saved_stderr = -1;

__attribute__((unused)) static void fa_log_to_file(const char *prog)
{
    snprintf(fa_log_path, sizeof(fa_log_path), "/tmp/%s-%d.log", prog,
             (int)getpid());
    int fd = open(fa_log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fflush(stderr);
    fa_saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

__attribute__((unused)) static void fa_log_restore(void)
{
    fflush(stderr);
    dup2(fa_saved_stderr, 2);
    close(fa_saved_stderr);
}

/* Lines of the log containing every one of a, b, c (NULL: any). */
__attribute__((unused)) static int fa_log_count(const char *a, const char *b,
                                                const char *c)
{
    fflush(stderr);
    FILE *f = fopen(fa_log_path, "r");
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

struct fa_lcond {
    const char *a, *b, *c;
    int want;
};

static int fa_log_cond(void *arg)
{
    struct fa_lcond *l = arg;
    return fa_log_count(l->a, l->b, l->c) >= l->want;
}

/* Runs the loop until `want` log lines match (fa_log_count), at most
 * 20 s; returns 1 when they came. */
__attribute__((unused)) static int fa_wait_log(const char *a, const char *b,
                                               const char *c, int want)
{
    struct fa_lcond l = {a, b, c, want};
    return nt_wait(&FA.t, fa_log_cond, &l, test_ms(20000));
}

/* --- lifetime ------------------------------------------------------------ */

/* Starts the server and a client on a fresh loop (FA.t); exits when it
 * cannot listen. */
__attribute__((unused)) static void fa_start(const struct http_opts *o)
{
    if (fh_start(&FA.srv, fa_handler, NULL) != 0) {
        printf("Bail out! cannot listen\n");
        exit(1);
    }
    FA.kubeconfig = fh_kubeconfig(FA.srv.port, "token");
    nt_open(&FA.t, FA.kubeconfig, o);
}

/* Closes the client, stops the server and frees everything stored. */
__attribute__((unused)) static void fa_stop(void)
{
    pthread_mutex_lock(&FA.mu);
    FA.stopping = 1;
    pthread_mutex_unlock(&FA.mu);
    nt_close(&FA.t);
    fh_stop(&FA.srv);
    /* Connection threads see the client gone and end. */
    usleep(200 * 1000);
    pthread_mutex_lock(&FA.mu);
    for (int i = 0; i < FA.nobjs; i++)
        cJSON_Delete(FA.objs[i].obj);
    for (int i = 0; i < FA.nevents; i++)
        free(FA.events[i].line);
    for (int i = 0; i < FA.nwrites; i++)
        free(FA.writes[i].body);
    pthread_mutex_unlock(&FA.mu);
    unlink(FA.kubeconfig);
    if (fa_log_path[0] != '\0')
        unlink(fa_log_path);
}

#endif
