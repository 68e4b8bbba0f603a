/*
 * test_watch_fake: the informer against a scripted local HTTP server that
 * misbehaves in ways a real apiserver does not on demand (these bad-input
 * cases only; API semantics are tested against the real apiserver in
 * itest_watch): garbage instead of JSON, a malformed watch event, a stream
 * cut mid-event, an endless line, a silent stream (idle deadline), a watch
 * that closes at once (very short watch), 410 as an ERROR event and as a
 * status, an expired continue token, a 500 with a Status message, and a
 * server that is gone. Each case checks the error says what and where,
 * memory stays bounded, and the informer recovers from the right place.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakehttp.h"
#include "log.h"
#include "nettest.h"
#include "testlib.h"
#include "watch.h"

enum act_kind {
    A_STATUS,  /* code + body, Content-Length */
    A_STREAM,  /* 200 chunked: body, then a proper end */
    A_CUT,     /* 200 chunked: body, then close without the last chunk */
    A_ENDLESS, /* 200 chunked: 'x' until the client goes away */
    A_SILENT,  /* 200 chunked headers (and body, if any), then nothing
                * until the client goes */
};

struct act {
    enum act_kind kind;
    int code;
    char body[4096];
};

#define QMAX 32

struct script {
    pthread_mutex_t mu;
    struct act list[QMAX];
    int nlist, ilist;
    struct act watch[QMAX];
    int nwatch, iwatch;
    char paths[256][512];
    int npaths;
    long endless_bytes;
};

static struct script S;
static struct fh_server SRV;

static void reset_script(void)
{
    pthread_mutex_lock(&S.mu);
    S.nlist = S.ilist = S.nwatch = S.iwatch = S.npaths = 0;
    S.endless_bytes = 0;
    pthread_mutex_unlock(&S.mu);
}

static void push(int watch, enum act_kind k, int code, const char *body)
{
    pthread_mutex_lock(&S.mu);
    struct act *a = watch ? &S.watch[S.nwatch++] : &S.list[S.nlist++];
    a->kind = k;
    a->code = code;
    snprintf(a->body, sizeof(a->body), "%s", body);
    pthread_mutex_unlock(&S.mu);
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
    if (n == 0)
        return 0;
    if (fh_printf(fd, "%zx\r\n", n) != 0 || fh_write(fd, p, n) != 0 ||
        fh_write(fd, "\r\n", 2) != 0)
        return -1;
    return 0;
}

static int handler(struct fh_server *s, int fd, const struct fh_req *r)
{
    (void)s;
    int is_watch = strstr(r->path, "watch=1") != NULL;
    struct act a;
    pthread_mutex_lock(&S.mu);
    if (S.npaths < 256)
        snprintf(S.paths[S.npaths++], 512, "%.500s", r->path);
    int have = is_watch ? S.iwatch < S.nwatch : S.ilist < S.nlist;
    if (have)
        a = is_watch ? S.watch[S.iwatch++] : S.list[S.ilist++];
    pthread_mutex_unlock(&S.mu);
    if (!have) {
        a.kind = is_watch ? A_SILENT : A_STATUS;
        a.code = 503;
        snprintf(a.body, sizeof(a.body),
                 "{\"kind\":\"Status\",\"code\":503,"
                 "\"message\":\"script exhausted\"}");
    }
    if (a.kind == A_STATUS)
        return fh_respond(fd, a.code, NULL, a.body) == 0;
    fh_printf(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n");
    switch (a.kind) {
    case A_STREAM:
        chunk(fd, a.body, strlen(a.body));
        fh_write(fd, "0\r\n\r\n", 5);
        return 1;
    case A_CUT:
        chunk(fd, a.body, strlen(a.body));
        return 0;
    case A_ENDLESS: {
        static char x[16384];
        memset(x, 'x', sizeof(x));
        long sent = 0;
        while (chunk(fd, x, sizeof(x)) == 0 && sent < (64L << 20))
            sent += (long)sizeof(x);
        pthread_mutex_lock(&S.mu);
        S.endless_bytes = sent;
        pthread_mutex_unlock(&S.mu);
        return 0;
    }
    case A_SILENT:
    default:
        if (a.body[0] != '\0' && a.kind == A_SILENT)
            chunk(fd, a.body, strlen(a.body));
        for (int i = 0; i < 600 && !client_gone(fd, 50); i++)
            ;
        return 0;
    }
}

static int count_paths(const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < S.npaths; i++)
        n += strstr(S.paths[i], needle) != NULL;
    pthread_mutex_unlock(&S.mu);
    return n;
}

static int last_path_has(const char *kind, const char *needle)
{
    int ok = 0;
    pthread_mutex_lock(&S.mu);
    for (int i = S.npaths - 1; i >= 0; i--) {
        if (strstr(S.paths[i], kind) != NULL) {
            ok = strstr(S.paths[i], needle) != NULL;
            break;
        }
    }
    pthread_mutex_unlock(&S.mu);
    return ok;
}

/* --- informer plumbing ------------------------------------------------- */

static struct nt T;

struct seen {
    int added, updated, deleted, deleted_null;
    char deleted_names[256];
};

static void on_change(enum cache_event ev, const struct cache_obj *o,
                      const struct cache_obj *n, void *arg)
{
    struct seen *s = arg;
    if (ev == CACHE_ADDED)
        s->added++;
    else if (ev == CACHE_UPDATED)
        s->updated++;
    else {
        s->deleted++;
        s->deleted_null += n == NULL;
        strncat(s->deleted_names, cache_obj_name(o),
                sizeof(s->deleted_names) - strlen(s->deleted_names) - 2);
        strcat(s->deleted_names, ",");
    }
}

static struct watch *mk(struct seen *s, size_t max_event, uint64_t idle)
{
    struct watch_opts o = {
        .api_path = "/api/v1",
        .resource = "configmaps",
        .namespace = "t",
        .max_event_size = max_event,
        .idle_timeout_ms = idle,
        .backoff_initial_ms = 100,
        .backoff_max_ms = 400,
    };
    struct watch *w = watch_new(T.http, &o);
    memset(s, 0, sizeof(*s));
    cache_subscribe(watch_cache(w), on_change, s);
    return w;
}

struct fcond {
    struct watch *w;
    unsigned long n;
};

static int failures_at_least(void *arg)
{
    struct fcond *c = arg;
    struct watch_stats st;
    watch_get_stats(c->w, &st);
    return st.failures >= c->n;
}

static int wait_failures(struct watch *w, unsigned long n)
{
    struct fcond c = {w, n};
    return nt_wait(&T, failures_at_least, &c, 20000);
}

static int synced(void *arg)
{
    return watch_synced(arg);
}

struct has {
    struct watch *w;
    const char *name;
    int want;
};

static int has_cond(void *arg)
{
    struct has *h = arg;
    return (cache_get(watch_cache(h->w), "t", h->name) != NULL) == h->want;
}

static int wait_has(struct watch *w, const char *name, int want)
{
    struct has h = {w, name, want};
    return nt_wait(&T, has_cond, &h, 20000);
}

static char *cm(char *buf, size_t len, const char *name, int rv)
{
    snprintf(buf, len,
             "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"t\","
             "\"resourceVersion\":\"%d\"},\"data\":{\"k\":\"v\"}}",
             name, rv);
    return buf;
}

static char *list_body(char *buf, size_t len, int rv, const char *cont,
                       const char *const *names, const int *rvs, int n)
{
    char item[512];
    size_t k = (size_t)snprintf(
        buf, len,
        "{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\",\"metadata\":"
        "{\"resourceVersion\":\"%d\"%s%s%s},\"items\":[",
        rv, cont ? ",\"continue\":\"" : "", cont ? cont : "", cont ? "\"" : "");
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? "," : "",
                              cm(item, sizeof(item), names[i], rvs[i]));
    snprintf(buf + k, len - k, "]}");
    return buf;
}

static char *event(char *buf, size_t len, const char *type, const char *name,
                   int rv)
{
    char obj[512];
    snprintf(buf, len, "{\"type\":\"%s\",\"object\":%s}\n", type,
             cm(obj, sizeof(obj), name, rv));
    return buf;
}

/* --- cases ------------------------------------------------------------- */

static void test_garbage_and_cut(void)
{
    char lb[4096], e1[1024], e2[1024], body[4096];
    const char *names[] = {"a", "b"};
    int rvs[] = {5, 6};
    struct seen s;
    reset_script();
    push(0, A_STATUS, 200, "<html>this is not JSON</html>");
    push(0, A_STATUS, 200, list_body(lb, sizeof(lb), 10, NULL, names, rvs, 2));
    push(1, A_STREAM, 0, "this is not json\n");
    /* c complete, then half of d, then the connection drops. */
    event(e1, sizeof(e1), "ADDED", "c", 11);
    event(e2, sizeof(e2), "ADDED", "d", 12);
    snprintf(body, sizeof(body), "%s%.*s", e1, (int)strlen(e2) / 2, e2);
    push(1, A_CUT, 0, body);
    push(1, A_STREAM, 0, e2);
    struct watch *w = mk(&s, 0, 0);
    watch_start(w);
    CHECK(wait_failures(w, 1) &&
              strstr(watch_last_error(w), "malformed list response") &&
              strstr(watch_last_error(w), "not a JSON object"),
          "garbage list: '%s'", watch_last_error(w));
    CHECK(nt_wait(&T, synced, w, 20000) && s.added == 2,
          "retried and synced with 2 objects");
    CHECK(wait_failures(w, 2) &&
              strstr(watch_last_error(w), "malformed watch event") &&
              strstr(watch_last_error(w), "this is not json"),
          "garbage event: '%s'", watch_last_error(w));
    CHECK(wait_has(w, "c", 1), "event before the cut applied");
    CHECK(wait_failures(w, 3), "the cut is a failure: '%s'",
          watch_last_error(w));
    CHECK(strstr(watch_last_error(w), "cut") ||
              strstr(watch_last_error(w), "transfer closed"),
          "error names the cut stream");
    CHECK(wait_has(w, "d", 1), "the cut event arrives whole after reconnect");
    CHECK(count_paths("resourceVersion=11") == 1,
          "re-watched from the last event's rv 11");
    CHECK(count_paths("resourceVersion=10") == 2,
          "the garbage event re-watched from the list rv 10");
    const struct cache_obj *d = cache_get(watch_cache(w), "t", "d");
    CHECK(d != NULL && strcmp(cache_obj_rv(d), "12") == 0 && s.added == 4,
          "no partial object was applied");
    watch_free(w);
}

static void test_endless(void)
{
    char lb[1024];
    struct seen s;
    reset_script();
    push(0, A_STATUS, 200, list_body(lb, sizeof(lb), 10, NULL, NULL, NULL, 0));
    push(1, A_ENDLESS, 0, "");
    struct watch *w = mk(&s, 64 * 1024, 0);
    watch_start(w);
    CHECK(wait_failures(w, 1) &&
              strstr(watch_last_error(w), "larger than 65536 bytes"),
          "endless line: '%s'", watch_last_error(w));
    watch_pause(w);
    /* Let the server notice the client went away. */
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&S.mu);
        long b = S.endless_bytes;
        pthread_mutex_unlock(&S.mu);
        if (b > 0)
            break;
        usleep(20000);
    }
    TEST_NOTE("server wrote %ld bytes before the client hung up",
              S.endless_bytes);
    CHECK(S.endless_bytes < (16L << 20),
          "the client stopped reading early (bounded memory)");
    watch_free(w);
}

static void test_gone(void)
{
    char lb[4096], ev[2048], mod[1024], lb2[4096];
    const char *names[] = {"a", "b", "c"};
    int rvs[] = {5, 6, 7};
    const char *names2[] = {"a", "c", "e"};
    int rvs2[] = {5, 21, 22};
    struct seen s;
    reset_script();
    push(0, A_STATUS, 200, list_body(lb, sizeof(lb), 10, NULL, names, rvs, 3));
    snprintf(ev, sizeof(ev),
             "%s{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\","
             "\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":"
             "\"too old resource version: 11 (20)\",\"reason\":\"Expired\","
             "\"code\":410}}\n",
             event(mod, sizeof(mod), "MODIFIED", "a", 11));
    push(1, A_STREAM, 0, ev);
    push(0, A_STATUS, 200,
         list_body(lb2, sizeof(lb2), 23, NULL, names2, rvs2, 3));
    push(1, A_STATUS, 410,
         "{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\","
         "\"message\":\"too old resource version: 23 (30)\"}");
    push(0, A_STATUS, 200,
         list_body(lb2, sizeof(lb2), 31, NULL, names2, rvs2, 3));
    struct watch *w = mk(&s, 0, 0);
    watch_start(w);
    CHECK(wait_has(w, "e", 1), "relisted after a 410 ERROR event");
    CHECK(wait_has(w, "b", 0) && strstr(s.deleted_names, "b,") &&
              s.deleted_null >= 1,
          "b, gone meanwhile, delivered as a delete (%s)", s.deleted_names);
    const struct cache_obj *a = cache_get(watch_cache(w), "t", "a");
    CHECK(a != NULL && strcmp(cache_obj_rv(a), "5") == 0,
          "a back at the list's version");
    struct watch_stats st;
    struct fcond c = {w, 0};
    (void)c;
    for (int i = 0; i < 200; i++) {
        watch_get_stats(w, &st);
        if (st.relists >= 2)
            break;
        loop_run_once(T.loop, 50);
    }
    CHECK(st.relists == 2 && st.gone == 2,
          "410 as HTTP status relists too (relists %lu, gone %lu)", st.relists,
          st.gone);
    CHECK(last_path_has("watch=1", "resourceVersion=31") ||
              count_paths("watch=1") >= 2,
          "watch resumed from the new list");
    watch_free(w);
}

static void test_idle_short_and_errors(void)
{
    char lb[1024];
    struct seen s;
    reset_script();
    push(0, A_STATUS, 200, list_body(lb, sizeof(lb), 10, NULL, NULL, NULL, 0));
    push(1, A_SILENT, 0, "");
    struct watch *w = mk(&s, 0, 600);
    watch_start(w);
    uint64_t t0 = loop_now_ms();
    CHECK(wait_failures(w, 1) &&
              strstr(watch_last_error(w), "no data from the server for"),
          "silent stream hits the idle deadline: '%s'", watch_last_error(w));
    uint64_t el = loop_now_ms() - t0;
    CHECK(el >= 550 && el < 15000, "after about 600 ms (%llu ms)",
          (unsigned long long)el);
    watch_free(w);

    /* A watch that ends at once with nothing: backoff, not a hot loop. */
    reset_script();
    push(0, A_STATUS, 200, list_body(lb, sizeof(lb), 10, NULL, NULL, NULL, 0));
    for (int i = 0; i < QMAX; i++)
        push(1, A_STREAM, 0, "");
    w = mk(&s, 0, 0);
    watch_start(w);
    nt_run_for(&T, 2000);
    int n = count_paths("watch=1");
    CHECK(strstr(watch_last_error(w), "very short watch") && n >= 2 && n <= 12,
          "very short watches back off: %d in 2 s ('%s')", n,
          watch_last_error(w));
    watch_free(w);

    /* 500 with a Status message, then a continue token that expired. */
    char p1[4096], p2[4096];
    const char *n1[] = {"a", "b"};
    const char *n2[] = {"c"};
    int r1[] = {1, 2}, r2[] = {3};
    reset_script();
    push(0, A_STATUS, 500,
         "{\"kind\":\"Status\",\"code\":500,\"message\":\"etcdserver: "
         "leader changed\"}");
    push(0, A_STATUS, 200, list_body(p1, sizeof(p1), 10, "tok1", n1, r1, 2));
    push(0, A_STATUS, 410,
         "{\"kind\":\"Status\",\"code\":410,\"message\":\"The provided "
         "continue parameter is too old\"}");
    push(0, A_STATUS, 200, list_body(p1, sizeof(p1), 12, "tok2", n1, r1, 2));
    push(0, A_STATUS, 200, list_body(p2, sizeof(p2), 12, NULL, n2, r2, 1));
    w = mk(&s, 0, 0);
    watch_start(w);
    CHECK(wait_failures(w, 1) &&
              strstr(watch_last_error(w), "etcdserver: leader changed"),
          "500: the Status message is kept: '%s'", watch_last_error(w));
    CHECK(nt_wait(&T, synced, w, 20000) && cache_len(watch_cache(w)) == 3,
          "expired continue: listed again from the start, 3 objects");
    CHECK(count_paths("continue=tok1") == 1 &&
              count_paths("continue=tok2") == 1,
          "continue tokens sent");
    watch_free(w);
}

/* The first stream of a watch that shows periodic bookmarks (one well
 * before its timeoutSeconds) gets the short idle deadline at once, not at
 * its next rotation: a young watch on a dead connection is not deaf for
 * its timeout + 30 s (faults_test's deadconn: 150 s and more). */
static void test_bookmark_shrinks_idle(void)
{
    char lb[1024];
    struct seen s;
    reset_script();
    push(0, A_STATUS, 200, list_body(lb, sizeof(lb), 10, NULL, NULL, NULL, 0));
    push(1, A_SILENT, 0,
         "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"ConfigMap\","
         "\"metadata\":{\"resourceVersion\":\"11\"}}}\n");
    struct watch_opts o = {
        .api_path = "/api/v1",
        .resource = "configmaps",
        .namespace = "t",
        .timeout_min_s = 300,
        .timeout_max_s = 301,
        .bookmark_idle_ms = 500,
        .backoff_initial_ms = 100,
        .backoff_max_ms = 400,
    };
    struct watch *w = watch_new(T.http, &o);
    memset(&s, 0, sizeof(s));
    cache_subscribe(watch_cache(w), on_change, &s);
    watch_start(w);
    uint64_t t0 = loop_now_ms();
    CHECK(wait_failures(w, 1) &&
              strstr(watch_last_error(w), "no data from the server for"),
          "a silent stream after a periodic bookmark hits the short idle "
          "deadline: '%s'",
          watch_last_error(w));
    uint64_t el = loop_now_ms() - t0;
    CHECK(el >= 450 && el < 15000,
          "after about 500 ms, not timeoutSeconds + 30 s (%llu ms)",
          (unsigned long long)el);
    watch_free(w);
}

static void test_server_gone(void)
{
    struct seen s;
    /* A port nobody listens on: bind, read the port, close. */
    struct fh_server dead;
    fh_start(&dead, handler, NULL);
    fh_stop(&dead);
    struct nt save = T, G;
    struct http_opts o = {.qps = -1};
    nt_open(&G, fh_kubeconfig(dead.port, "fake-token"), &o);
    T = G;
    struct watch *w = mk(&s, 0, 0);
    watch_start(w);
    CHECK(wait_failures(w, 2) &&
              (strstr(watch_last_error(w), "onnect") ||
               strstr(watch_last_error(w), "refused")) &&
              strstr(watch_last_error(w), "127.0.0.1"),
          "server gone: '%s'", watch_last_error(w));
    struct watch_stats st;
    watch_get_stats(w, &st);
    CHECK(!watch_synced(w) && st.failures >= 2, "keeps retrying, not synced");
    watch_free(w);
    nt_close(&G);
    T = save;
}

int main(void)
{
    pthread_mutex_init(&S.mu, NULL);
    if (getenv("DITTOFS_TEST_DEBUG") == NULL)
        log_set_level(LOG_ERROR);
    if (fh_start(&SRV, handler, NULL) != 0) {
        printf("Bail out! cannot listen\n");
        return 1;
    }
    const char *kc = fh_kubeconfig(SRV.port, "fake-token");
    struct http_opts o = {.qps = -1};
    nt_open(&T, kc, &o);
    test_garbage_and_cut();
    test_endless();
    test_gone();
    test_idle_short_and_errors();
    test_bookmark_shrinks_idle();
    test_server_gone();
    nt_close(&T);
    unlink(kc);
    return TEST_SUMMARY();
}
