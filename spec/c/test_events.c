/*
 * test_events: the event recorder against a scripted local HTTP server
 * (fakehttp.h) that records every request: the POSTed Event's fields and
 * path, the merge-patch of a repeat, repeats folded while a request is in
 * flight, the per-object bucket, the LRU bound on the object map, forget,
 * disabled, a 404 on PATCH starting a new Event, cluster-scoped objects,
 * a namespace the path builder refuses, and freeing with requests in
 * flight.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events.h"
#include "fakehttp.h"
#include "nettest.h"
#include "testlib.h"

#define MAXREQ 64

static struct {
    struct fh_server srv;
    pthread_mutex_t mu;
    int patch_404;
    int n;
    char method[MAXREQ][16];
    char path[MAXREQ][4096];
    char ctype[MAXREQ][256];
    char *body[MAXREQ];
} S;

static int handler(struct fh_server *s, int fd, const struct fh_req *r)
{
    (void)s;
    int p404;
    pthread_mutex_lock(&S.mu);
    if (S.n < MAXREQ) {
        snprintf(S.method[S.n], 16, "%s", r->method);
        snprintf(S.path[S.n], 4096, "%s", r->path);
        snprintf(S.ctype[S.n], 256, "%s", r->content_type);
        S.body[S.n] = strdup(r->body ? r->body : "");
        S.n++;
    }
    p404 = S.patch_404;
    pthread_mutex_unlock(&S.mu);
    if (strcmp(r->method, "PATCH") == 0 && p404) {
        fh_respond(fd, 404, NULL,
                   "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":"
                   "\"events not found\",\"reason\":\"NotFound\","
                   "\"code\":404}");
        return 1;
    }
    fh_respond(fd, strcmp(r->method, "POST") == 0 ? 201 : 200, NULL,
               r->body && r->body[0] ? r->body : "{}");
    return 1;
}

static void reset(void)
{
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < S.n; i++)
        free(S.body[i]);
    S.n = 0;
    S.patch_404 = 0;
    pthread_mutex_unlock(&S.mu);
}

static int nreq(void)
{
    pthread_mutex_lock(&S.mu);
    int n = S.n;
    pthread_mutex_unlock(&S.mu);
    return n;
}

static struct nt T;
static struct events *E;

static int idle_cond(void *arg)
{
    (void)arg;
    return events_pending(E) == 0;
}

static void settle(void)
{
    nt_wait(&T, idle_cond, NULL, test_ms(5000));
}

static const char *jstr(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b != NULL)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : "(none)";
}

static void test_post(void)
{
    reset();
    struct events_ref ref = {"dittofs.dittofs.com/v1alpha1",
                             "DittoServer",
                             "ns1",
                             "srv",
                             "u-1",
                             "42"};
    char msg[1100];
    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    CHECK(events_emit(E, &ref, "Warning", "InvalidSpec", msg) == 0,
          "emit returns 0");
    settle();
    CHECK_INT_EQ(nreq(), 1, "one request");
    CHECK_STR_EQ(S.method[0], "POST", "POST");
    CHECK_STR_EQ(S.path[0], "/api/v1/namespaces/ns1/events",
                 "into the object's namespace");
    cJSON *ev = cJSON_Parse(S.body[0]);
    const char *name = jstr(ev, "metadata", "name");
    CHECK(strncmp(name, "srv.", 4) == 0 && strlen(name) == 20,
          "name %s: srv.<16 hex>", name);
    CHECK_STR_EQ(jstr(ev, "metadata", "namespace"), "ns1", "namespace");
    CHECK_STR_EQ(jstr(ev, "involvedObject", "apiVersion"),
                 "dittofs.dittofs.com/v1alpha1", "involvedObject.apiVersion");
    CHECK_STR_EQ(jstr(ev, "involvedObject", "kind"), "DittoServer",
                 "involvedObject.kind");
    CHECK_STR_EQ(jstr(ev, "involvedObject", "uid"), "u-1",
                 "involvedObject.uid");
    CHECK_STR_EQ(jstr(ev, "involvedObject", "resourceVersion"), "42",
                 "involvedObject.resourceVersion");
    CHECK_STR_EQ(jstr(ev, "reason", NULL), "InvalidSpec", "reason");
    CHECK_STR_EQ(jstr(ev, "type", NULL), "Warning", "type");
    CHECK_INT_EQ(strlen(jstr(ev, "message", NULL)), 1024,
                 "message cut at 1024 bytes");
    CHECK_STR_EQ(jstr(ev, "source", "component"), "test-op",
                 "source.component");
    CHECK_STR_EQ(jstr(ev, "reportingInstance", NULL), "host-1",
                 "reportingInstance");
    const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(ev, "count");
    CHECK(cJSON_IsNumber(cnt) && cnt->valueint == 1, "count 1");
    char evname[64];
    snprintf(evname, sizeof(evname), "%s", name);
    cJSON_Delete(ev);

    /* A repeat: one merge patch of count and lastTimestamp. */
    reset();
    events_emit(E, &ref, "Warning", "InvalidSpec", msg);
    settle();
    char want[128];
    snprintf(want, sizeof(want), "/api/v1/namespaces/ns1/events/%s", evname);
    CHECK(nreq() == 1 && strcmp(S.method[0], "PATCH") == 0 &&
              strcmp(S.path[0], want) == 0,
          "a repeat PATCHes %s", S.path[0]);
    CHECK_STR_EQ(S.ctype[0], "application/merge-patch+json",
                 "merge-patch content type");
    ev = cJSON_Parse(S.body[0]);
    cnt = cJSON_GetObjectItemCaseSensitive(ev, "count");
    CHECK(cJSON_IsNumber(cnt) && cnt->valueint == 2 &&
              strcmp(jstr(ev, "lastTimestamp", NULL), "(none)") != 0,
          "patch: count 2 and lastTimestamp (%s)", S.body[0]);
    cJSON_Delete(ev);

    /* A longer message that only differs after byte 1024 is the same. */
    reset();
    char msg2[1200];
    memset(msg2, 'm', sizeof(msg2) - 1);
    msg2[sizeof(msg2) - 1] = '\0';
    events_emit(E, &ref, "Warning", "InvalidSpec", msg2);
    settle();
    CHECK(nreq() == 1 && strcmp(S.method[0], "PATCH") == 0,
          "messages equal in their first 1024 bytes are one Event");
}

static void test_in_flight(void)
{
    reset();
    struct events_ref ref = {"v1", "ConfigMap", "ns1", "cm", NULL, NULL};
    for (int i = 0; i < 3; i++)
        events_emit(E, &ref, "Normal", "Synced", "in flight");
    settle();
    CHECK(nreq() == 2 && strcmp(S.method[0], "POST") == 0 &&
              strcmp(S.method[1], "PATCH") == 0,
          "three emits before the POST completed: POST + one PATCH (%d)",
          nreq());
    cJSON *ev = cJSON_Parse(nreq() == 2 ? S.body[1] : "{}");
    const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(ev, "count");
    CHECK(cJSON_IsNumber(cnt) && cnt->valueint == 3, "the PATCH says count 3");
    cJSON_Delete(ev);

    /* PATCH 404 (the Event expired): the next repeat is a new POST. */
    reset();
    S.patch_404 = 1;
    events_emit(E, &ref, "Normal", "Synced", "in flight");
    settle();
    pthread_mutex_lock(&S.mu);
    S.patch_404 = 0;
    pthread_mutex_unlock(&S.mu);
    events_emit(E, &ref, "Normal", "Synced", "in flight");
    settle();
    CHECK(nreq() == 2 && strcmp(S.method[1], "POST") == 0,
          "after a PATCH 404 the repeat POSTs a new Event");
}

static void test_limits(void)
{
    reset();
    struct events_ref ref = {"v1", "ConfigMap", "ns2", "busy", NULL, NULL};
    int dropped = 0;
    for (int i = 0; i < 27; i++)
        dropped += events_emit(E, &ref, "Normal", "Same", "same") == 1;
    CHECK(dropped == 2, "repeats take tokens too: 2 of 27 dropped");
    struct events_stats st;
    events_get_stats(E, &st);
    CHECK(st.limited == 2, "stats: limited %lu", st.limited);
    settle();

    /* The object map is bounded; the least recently used goes first. */
    CHECK_INT_EQ(events_objects(E), 3, "3 objects tracked");
    events_set_max_objects(E, 2);
    CHECK(events_objects(E) == 2, "shrinking the bound drops objects (%zu)",
          events_objects(E));
    events_set_max_objects(E, 3);
    reset();
    char name[16];
    for (int i = 0; i < 5; i++) {
        struct events_ref r = {"v1", "ConfigMap", "ns3", name, NULL, NULL};
        snprintf(name, sizeof(name), "o%d", i);
        events_emit(E, &r, "Normal", "X", "y");
    }
    settle();
    CHECK_INT_EQ(events_objects(E), 3, "5 objects, 3 kept");
    struct events_ref o0 = {"v1", "ConfigMap", "ns3", "o0", NULL, NULL};
    struct events_ref o4 = {"v1", "ConfigMap", "ns3", "o4", NULL, NULL};
    reset();
    events_emit(E, &o4, "Normal", "X", "y");
    events_emit(E, &o0, "Normal", "X", "y");
    settle();
    /* Two connections: the server may see them in either order. */
    int patched = 0, posted = 0;
    for (int i = 0; i < nreq() && i < 2; i++) {
        patched += strcmp(S.method[i], "PATCH") == 0 &&
                   strstr(S.path[i], "/events/o4.") != NULL;
        posted += strcmp(S.method[i], "POST") == 0 &&
                  strstr(S.body[i], "\"name\":\"o0\"") != NULL;
    }
    CHECK(nreq() == 2 && patched == 1 && posted == 1,
          "a kept object PATCHes, an evicted one POSTs anew");
    events_forget(E, "ns3", "o4");
    CHECK_INT_EQ(events_objects(E), 2, "forget drops one object");
    events_forget(E, "ns3", "nobody");
    CHECK_INT_EQ(events_objects(E), 2, "forgetting an unknown object: no-op");
    events_set_max_objects(E, 0);
}

static void test_disabled_and_misc(void)
{
    reset();
    struct events_ref ref = {"v1", "ConfigMap", "ns4", "x", NULL, NULL};
    events_set_enabled(E, 0);
    CHECK(events_emit(E, &ref, "Normal", "A", "b") == 0 &&
              events_pending(E) == 0,
          "disabled: 0 and nothing pending");
    nt_run_for(&T, 100);
    CHECK_INT_EQ(nreq(), 0, "disabled: no request");
    events_set_enabled(E, 1);

    struct events_ref noname = {"v1", "ConfigMap", "ns4", NULL, NULL, NULL};
    CHECK(events_emit(E, &noname, "Normal", "A", "b") == -EINVAL,
          "no name: -EINVAL");
    CHECK(events_emit(E, &ref, "Normal", NULL, "b") == -EINVAL,
          "no reason: -EINVAL");

    struct events_ref node = {"v1", "Node", NULL, "n1", NULL, NULL};
    events_emit(E, &node, "Normal", "A", "b");
    settle();
    CHECK(nreq() == 1 &&
              strcmp(S.path[0], "/api/v1/namespaces/default/events") == 0,
          "a cluster-scoped object's Event goes to default");
    cJSON *ev = cJSON_Parse(S.body[0]);
    CHECK(cJSON_GetObjectItemCaseSensitive(
              cJSON_GetObjectItemCaseSensitive(ev, "involvedObject"),
              "namespace") == NULL,
          "no involvedObject.namespace for it");
    cJSON_Delete(ev);

    /* The path comes from kinds_path, which refuses what would escape it. */
    reset();
    struct events_ref bad = {"v1", "ConfigMap", "a/b", "x", NULL, NULL};
    int rc = events_emit(E, &bad, "Normal", "A", "b");
    settle();
    CHECK(rc == -EINVAL && nreq() == 0 && events_pending(E) == 0,
          "a namespace that would escape the path: -EINVAL, no request (%d)",
          rc);

    /* Freed with requests queued: cancelled, nothing leaks. */
    for (int i = 0; i < 5; i++) {
        char m[16];
        snprintf(m, sizeof(m), "m%d", i);
        events_emit(E, &ref, "Normal", "A", m);
    }
    CHECK(events_pending(E) == 5, "5 requests pending");
}

int main(void)
{
    pthread_mutex_init(&S.mu, NULL);
    if (fh_start(&S.srv, handler, NULL) != 0) {
        printf("Bail out! cannot start the server\n");
        return 1;
    }
    const char *kc = fh_kubeconfig(S.srv.port, "t");
    struct http_opts o = {.qps = -1};
    nt_open(&T, kc, &o);
    E = events_new(T.http, "test-op", "host-1");
    test_post();
    test_in_flight();
    test_limits();
    test_disabled_and_misc();
    events_free(E);
    reset();
    nt_close(&T);
    fh_stop(&S.srv);
    unlink(kc);
    return TEST_SUMMARY();
}
