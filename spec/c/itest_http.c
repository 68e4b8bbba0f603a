/*
 * itest_http: the HTTP client against the real local control plane, some
 * of it through a local reverse proxy (fakehttp.h) that forwards to the
 * apiserver over verified TLS and can inject 429 + Retry-After, a 401, or
 * a delay:
 *  - 429 with Retry-After honoured (request spacing measured at the proxy),
 *    retries exhausted -> too_many_requests with the Status message;
 *  - the informer synced through 429s and watching through the proxy;
 *  - the client-side token bucket (QPS/burst) spaces requests;
 *  - a 401 refreshes the credential and retries once; a bad token ends
 *    typed unauthorized after exactly two attempts;
 *  - keep-alive: sequential requests reuse one connection; HTTP/2
 *    multiplexes concurrent requests over one connection;
 *  - a per-request total timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fakehttp.h"
#include "fhproxy.h"
#include "nettest.h"
#include "testlib.h"
#include "watch.h"

/* --- the proxy --------------------------------------------------------- */

struct proxy {
    struct fh_server srv;
    const char *upstream;
    const char *ca;
    pthread_mutex_t mu;
    char match[256]; /* path prefix the injections apply to ("" all) */
    int inject_429;
    int inject_401;
    unsigned retry_after;
    int delay_ms;
    double times[4096]; /* arrivals of matching requests */
    int n;
};

static struct proxy P;

static int proxy_handler(struct fh_server *s, int fd, const struct fh_req *r)
{
    (void)s;
    int inject429 = 0, inject401 = 0, delay = 0;
    pthread_mutex_lock(&P.mu);
    if (strncmp(r->path, P.match, strlen(P.match)) == 0) {
        if (P.n < 4096)
            P.times[P.n++] = fh_now();
        if (P.inject_429 > 0) {
            P.inject_429--;
            inject429 = 1;
        } else if (P.inject_401 > 0) {
            P.inject_401--;
            inject401 = 1;
        }
        delay = P.delay_ms;
    }
    unsigned ra = P.retry_after;
    pthread_mutex_unlock(&P.mu);
    if (delay > 0)
        usleep((useconds_t)delay * 1000);
    if (inject429) {
        char hdr[64];
        snprintf(hdr, sizeof(hdr), "Retry-After: %u\r\n", ra);
        fh_respond(fd, 429, hdr,
                   "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":"
                   "\"Failure\",\"message\":\"injected: too many requests, "
                   "please try again later\",\"reason\":\"TooManyRequests\","
                   "\"code\":429}");
        return 1;
    }
    if (inject401) {
        fh_respond(fd, 401, NULL,
                   "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":"
                   "\"Failure\",\"message\":\"Unauthorized\",\"reason\":"
                   "\"Unauthorized\",\"code\":401}");
        return 1;
    }
    /* Forward over TLS, verified against the cluster CA. */
    return fh_forward(fd, r, P.upstream, P.ca);
}

static void proxy_set(const char *match, int n429, int n401, unsigned ra,
                      int delay_ms)
{
    pthread_mutex_lock(&P.mu);
    snprintf(P.match, sizeof(P.match), "%s", match);
    P.inject_429 = n429;
    P.inject_401 = n401;
    P.retry_after = ra;
    P.delay_ms = delay_ms;
    P.n = 0;
    pthread_mutex_unlock(&P.mu);
}

static int proxy_count(void)
{
    pthread_mutex_lock(&P.mu);
    int n = P.n;
    pthread_mutex_unlock(&P.mu);
    return n;
}

/* Smallest gap between consecutive matching arrivals, in seconds. */
static double proxy_min_gap(void)
{
    double g = 1e9;
    pthread_mutex_lock(&P.mu);
    for (int i = 1; i < P.n; i++)
        if (P.times[i] - P.times[i - 1] < g)
            g = P.times[i] - P.times[i - 1];
    pthread_mutex_unlock(&P.mu);
    return g;
}

/* --- tests
 * ---------------------------------------------------------------------------
 */

static struct nt D; /* direct to the apiserver */
static struct nt X; /* through the proxy */

static void test_429(void)
{
    struct http_response *r = NULL;
    proxy_set("/api/v1/namespaces/default", 2, 0, 2, 0);
    double t0 = fh_now();
    int rc = nt_req(&X, HTTP_GET, NULL, NULL, &r, "/api/v1/namespaces/default");
    double el = fh_now() - t0;
    CHECK(rc == 0 && r->attempts == 3, "429 twice, then OK (attempts %u)",
          r ? r->attempts : 0);
    CHECK(el >= 3.9 && el < 30, "Retry-After: 2 honoured twice (%.2f s)", el);
    CHECK(proxy_count() == 3 && proxy_min_gap() >= 1.95,
          "no request sooner than Retry-After (min gap %.2f s)",
          proxy_min_gap());
    http_response_free(r);

    /* Retries exhausted: a separate client allowing one retry. */
    struct http_opts o = {.qps = -1, .max_retries = 1};
    struct http_client *c1 = http_client_new(X.loop, X.conn, &o);
    struct http_client *save = X.http;
    X.http = c1;
    proxy_set("/api/v1/namespaces/default", 5, 0, 1, 0);
    r = NULL;
    rc = nt_req(&X, HTTP_GET, NULL, NULL, &r, "/api/v1/namespaces/default");
    CHECK(rc == HTTP_ETOOMANY && r->attempts == 2 && r->retry_after_s == 1 &&
              strstr(r->message, "injected: too many requests") &&
              strcmp(r->reason, "TooManyRequests") == 0,
          "retries exhausted: too_many_requests, Retry-After %u, '%s'",
          r ? r->retry_after_s : 0, r ? r->message : "");
    http_response_free(r);
    X.http = save;
    http_client_free(c1);

    /* A write is retried too: a 429 means it was not processed. */
    proxy_set("/api/v1/namespaces/default/configmaps", 1, 0, 1, 0);
    char body[256];
    snprintf(body, sizeof(body),
             "{\"metadata\":{\"name\":\"ith-%d\"},\"data\":{\"a\":\"b\"}}",
             (int)getpid());
    r = NULL;
    rc = nt_req(&X, HTTP_POST, NULL, body, &r,
                "/api/v1/namespaces/default/configmaps");
    CHECK(rc == 0 && r->attempts == 2, "POST after a 429 succeeds (%s)",
          r ? r->message : "");
    http_response_free(r);
    r = NULL;
    nt_req(&D, HTTP_DELETE, NULL, NULL, &r,
           "/api/v1/namespaces/default/configmaps/ith-%d", (int)getpid());
    http_response_free(r);
}

static int synced_cond(void *arg)
{
    return watch_synced(arg);
}

struct present {
    struct watch *w;
    const char *ns;
    const char *name;
};

static int present_cond(void *arg)
{
    struct present *p = arg;
    return cache_get(watch_cache(p->w), p->ns, p->name) != NULL;
}

static void test_informer_429(void)
{
    char ns[64], match[128];
    snprintf(ns, sizeof(ns), "ith-%d", (int)getpid());
    nt_create_ns(&D, ns);
    nt_put_cm(&D, ns, "one", "", "1", NULL, 0);
    snprintf(match, sizeof(match), "/api/v1/namespaces/%s/configmaps", ns);
    proxy_set(match, 2, 0, 1, 0);
    struct watch_opts o = {
        .api_path = "/api/v1", .resource = "configmaps", .namespace = ns};
    struct watch *w = watch_new(X.http, &o);
    double t0 = fh_now();
    watch_start(w);
    CHECK(nt_wait(&X, synced_cond, w, 60000), "informer synced through 429s");
    double el = fh_now() - t0;
    struct watch_stats st;
    watch_get_stats(w, &st);
    CHECK(el >= 1.9 && st.failures == 0 && st.lists == 1,
          "the list waited out Retry-After (%.2f s), no failure counted", el);
    CHECK(cache_get(watch_cache(w), ns, "one") != NULL, "object listed");
    /* The watch stream runs through the proxy. */
    nt_put_cm(&D, ns, "two", "", "2", NULL, 0);
    struct present p = {w, ns, "two"};
    CHECK(nt_wait(&X, present_cond, &p, 60000),
          "event delivered through the proxied watch stream");
    watch_free(w);
    struct http_response *r = NULL;
    nt_req(&D, HTTP_DELETE, NULL, NULL, &r, "/api/v1/namespaces/%s", ns);
    http_response_free(r);
}

struct many {
    int done;
    int ok;
    unsigned connects;
    int h2;
};

static void many_done(struct http_response *r, void *arg)
{
    struct many *m = arg;
    m->done++;
    m->ok += r->result == HTTP_OK;
    m->connects += r->connects;
    m->h2 += r->http_version == 2;
}

static struct many *M_target;
static int M_n;

static int many_all(void *arg)
{
    (void)arg;
    return M_target->done >= M_n;
}

static void send_many(struct nt *t, int n, struct many *m, const char *path)
{
    memset(m, 0, sizeof(*m));
    M_target = m;
    M_n = n;
    for (int i = 0; i < n; i++) {
        struct http_call call = {
            .method = HTTP_GET, .path = path, .on_done = many_done, .arg = m};
        http_send(t->http, &call, NULL);
    }
    nt_wait(t, many_all, NULL, 120000);
}

static void test_ratelimit(void)
{
    struct http_opts o = {.qps = 5, .burst = 1};
    struct http_client *c = http_client_new(X.loop, X.conn, &o);
    struct http_client *save = X.http;
    struct many m;
    X.http = c;
    proxy_set("/api/v1/namespaces/kube-system", 0, 0, 0, 0);
    double t0 = fh_now();
    send_many(&X, 11, &m, "/api/v1/namespaces/kube-system");
    double el = fh_now() - t0;
    CHECK(m.ok == 11, "11 requests at 5 qps, burst 1: all OK");
    CHECK(el >= 1.9, "they took %.2f s (>= 2 s)", el);
    CHECK(proxy_min_gap() >= 0.15, "spaced at the server (min gap %.3f s)",
          proxy_min_gap());
    X.http = save;
    http_client_free(c);
}

static void test_401(const char *apiserver, const char *ca)
{
    struct http_response *r = NULL;
    proxy_set("/api/v1/namespaces/kube-public", 0, 1, 0, 0);
    int rc =
        nt_req(&X, HTTP_GET, NULL, NULL, &r, "/api/v1/namespaces/kube-public");
    CHECK(rc == 0 && r->attempts == 2,
          "a 401 refreshes the credential and retries once (attempts %u)",
          r ? r->attempts : 0);
    http_response_free(r);

    /* A wrong token against the real apiserver: two attempts, typed. */
    char path[256];
    snprintf(path, sizeof(path), "/tmp/itest-http-%d.kubeconfig",
             (int)getpid());
    FILE *f = fopen(path, "w");
    fprintf(f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
            "    server: %s\n    certificate-authority: %s\nusers:\n"
            "- name: u\n  user:\n    token: not-a-valid-token\ncontexts:\n"
            "- name: x\n  context:\n    cluster: c\n    user: u\n"
            "current-context: x\n",
            apiserver, ca);
    fclose(f);
    struct nt B;
    nt_open(&B, path, NULL);
    r = NULL;
    rc = nt_req(&B, HTTP_GET, NULL, NULL, &r, "/api/v1/namespaces");
    CHECK(rc == HTTP_EUNAUTHORIZED && r->attempts == 2 && r->status == 401,
          "bad token: unauthorized after exactly 2 attempts ('%s')",
          r ? r->message : "");
    http_response_free(r);
    nt_close(&B);
    unlink(path);
}

static void test_keepalive(void)
{
    struct http_response *r = NULL;
    nt_req(&D, HTTP_GET, NULL, NULL, &r, "/version");
    http_response_free(r);
    unsigned total = 0;
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        r = NULL;
        ok += nt_req(&D, HTTP_GET, NULL, NULL, &r, "/version") == 0;
        total += r ? r->connects : 99;
        http_response_free(r);
    }
    CHECK(ok == 20 && total == 0,
          "20 sequential requests reuse the connection (%u new)", total);

    struct http_opts o = {.qps = -1, .http2 = 1};
    struct nt H;
    nt_open(&H, NULL, &o);
    struct many m;
    send_many(&H, 1, &m, "/version"); /* establish the connection */
    send_many(&H, 30, &m, "/api/v1/namespaces/default");
    CHECK(m.ok == 30 && m.h2 == 30 && m.connects <= 1,
          "HTTP/2: 30 concurrent requests, %d over h2, %u new connections",
          m.h2, m.connects);
    nt_close(&H);
}

static void test_timeout(void)
{
    proxy_set("/api/v1/namespaces/default/configmaps", 0, 0, 0, 3000);
    struct http_call call = {
        .method = HTTP_GET,
        .path = "/api/v1/namespaces/default/configmaps",
        .timeout_ms = 500,
    };
    struct http_response *r = NULL;
    double t0 = fh_now();
    int rc = http_send_sync(X.http, &call, &r);
    double el = fh_now() - t0;
    CHECK(rc == HTTP_ETIMEOUT && el < 2.5,
          "per-request total timeout: %s after %.2f s ('%s')",
          http_strerror(rc), el, r ? r->message : "");
    http_response_free(r);
    proxy_set("", 0, 0, 0, 0);
}

int main(void)
{
    const char *api = getenv("DITTOFS_APISERVER");
    const char *ca = getenv("DITTOFS_CA_CERT");
    const char *tokfile = getenv("DITTOFS_ADMIN_TOKEN_FILE");
    char *token = tokfile ? nt_read_token(tokfile) : NULL;
    if (api == NULL || ca == NULL || token == NULL) {
        printf("Bail out! needs the cluster env (with-cluster)\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct http_opts direct = {.qps = -1};
    nt_open(&D, NULL, &direct);
    pthread_mutex_init(&P.mu, NULL);
    P.upstream = api;
    P.ca = ca;
    if (fh_start(&P.srv, proxy_handler, NULL) != 0) {
        printf("Bail out! cannot start the proxy\n");
        return 1;
    }
    const char *kc = fh_kubeconfig(P.srv.port, token);
    struct http_opts viaproxy = {.qps = -1};
    nt_open(&X, kc, &viaproxy);

    test_429();
    test_informer_429();
    test_ratelimit();
    test_401(api, ca);
    test_keepalive();
    test_timeout();

    nt_close(&X);
    nt_close(&D);
    unlink(kc);
    free(token);
    return TEST_SUMMARY();
}
