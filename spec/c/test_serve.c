/*
 * test_serve: the HTTP endpoints on a real loop. A raw-socket client in
 * this process sends one request (Connection: close) and reads until EOF
 * while the loop runs, so no thread or child is needed. Covers routing,
 * status codes and bodies, HEAD, 405 for POST, failing checks, one shared
 * listener, address errors, a stalled client not blocking others, an
 * idle server not waking the loop, and no leaked descriptors.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dbuf.h"
#include "loop.h"
#include "metrics.h"
#include "serve.h"
#include "testlib.h"

struct resp {
    int status;
    char head[2048];
    char body[65536];
    size_t body_len;
};

static int connect_to(int family, int port)
{
    int fd = socket(family, SOCK_STREAM, 0);
    int rc;
    if (fd < 0)
        return -1;
    if (family == AF_INET6) {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_addr = in6addr_loopback;
        a.sin6_port = htons((uint16_t)port);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)port);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends `req` and runs the loop until the server closes the connection.
 * Returns 0 and fills r, or -1 (connect failure, timeout). */
static int fetch_raw(struct loop *l, int family, int port, const char *req,
                     struct resp *r)
{
    static char buf[1 << 17];
    size_t len = 0;
    int fd = connect_to(family, port);

    memset(r, 0, sizeof *r);
    if (fd < 0)
        return -1;
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
        close(fd);
        return -1;
    }
    uint64_t deadline = loop_now_ms() + test_ms(5000);
    for (;;) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, MSG_DONTWAIT);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        if (loop_now_ms() > deadline) {
            close(fd);
            return -1;
        }
        loop_run_once(l, 10);
    }
    close(fd);
    buf[len] = '\0';
    const char *sep = strstr(buf, "\r\n\r\n");
    if (sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
        return -1;
    size_t hl = (size_t)(sep - buf);
    if (hl >= sizeof r->head)
        hl = sizeof r->head - 1;
    memcpy(r->head, buf, hl);
    r->body_len = len - (size_t)(sep + 4 - buf);
    if (r->body_len >= sizeof r->body)
        r->body_len = sizeof r->body - 1;
    memcpy(r->body, sep + 4, r->body_len);
    return 0;
}

static int fetch(struct loop *l, int port, const char *method, const char *path,
                 struct resp *r)
{
    char req[512];
    snprintf(req, sizeof req,
             "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
             method, path);
    return fetch_raw(l, AF_INET, port, req, r);
}

static int ready_ok = 1;

static int check_ready(struct dbuf *detail, void *arg)
{
    int *calls = arg;
    (*calls)++;
    if (ready_ok)
        return 0;
    dbuf_adds(detail, "informers not synced: statefulsets");
    return 1;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    const struct dirent *e;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

static void stop_timer(struct loop_timer *t, void *arg)
{
    *(int *)arg = 1;
}

/* Loop iterations during `ms` with nothing to do. */
static int idle_iterations(struct loop *l, unsigned ms)
{
    struct loop_timer t;
    int done = 0, n = 0;
    loop_timer_init(&t, stop_timer, &done);
    loop_timer_start(l, &t, ms);
    while (!done) {
        loop_run_once(l, -1);
        n++;
    }
    return n;
}

static void test_addresses(struct loop *l)
{
    static const char *const bad[] = {"nonsense",   "127.0.0.1:99999",
                                      "127.0.0.1:", "[::1:80",
                                      "::1:80",     "127.0.0.1:8x"};
    struct dbuf err;
    dbuf_init(&err, 1024);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct serve_opts o = {.metrics_addr = bad[i], .health_addr = "0"};
        struct serve *s = serve_new(l, &o, &err);
        CHECK(s == NULL && strstr(dbuf_ptr(&err), "invalid address") != NULL,
              "\"%s\" refused: %s", bad[i], dbuf_ptr(&err));
        serve_free(s);
    }

    struct serve_opts off = {.metrics_addr = "0", .health_addr = NULL};
    struct serve *s = serve_new(l, &off, &err);
    CHECK(s != NULL && serve_metrics_port(s) == 0 && serve_health_port(s) == 0,
          "both disabled: a server without ports");
    serve_free(s);

    /* A port someone else listens on. */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(busy, (struct sockaddr *)&a, sizeof a);
    listen(busy, 1);
    getsockname(busy, (struct sockaddr *)&a, &alen);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    struct serve_opts o = {.metrics_addr = "127.0.0.1:0", .health_addr = addr};
    s = serve_new(l, &o, &err);
    CHECK(s == NULL && strstr(dbuf_ptr(&err), "in use") != NULL,
          "busy port refused: %s", dbuf_ptr(&err));
    close(busy);
    dbuf_free(&err);
}

static void test_routes(struct loop *l)
{
    struct metrics *m = metrics_new();
    struct metric *c = metrics_add(m, METRIC_COUNTER, "test_requests_total",
                                   "Requests.", NULL, NULL, 0);
    int calls = 0;
    struct dbuf err;
    struct resp r;
    dbuf_init(&err, 1024);
    metric_inc(c, 7, NULL);

    struct serve_opts o = {.metrics_addr = "127.0.0.1:0",
                           .health_addr = "127.0.0.1:0",
                           .metrics = m,
                           .readyz = check_ready,
                           .check_arg = &calls};
    struct serve *s = serve_new(l, &o, &err);
    if (!CHECK(s != NULL, "serve on 127.0.0.1:0 twice%s", dbuf_ptr(&err)))
        goto out;
    int mp = serve_metrics_port(s), hp = serve_health_port(s);
    CHECK(mp > 0 && hp > 0 && mp != hp, "two ephemeral ports (%d, %d)", mp, hp);

    CHECK(fetch(l, mp, "GET", "/metrics", &r) == 0 && r.status == 200,
          "GET /metrics: 200");
    CHECK(strstr(r.head, "Content-Type: text/plain; version=0.0.4") != NULL,
          "metrics content type");
    CHECK(strstr(r.body, "# TYPE test_requests_total counter\n"
                         "test_requests_total 7\n") != NULL,
          "metrics body has the counter");
    CHECK(strstr(r.body, "\nprocess_open_fds ") != NULL,
          "metrics body has the process metrics");

    CHECK(fetch(l, mp, "HEAD", "/metrics", &r) == 0 && r.status == 200 &&
              r.body_len == 0,
          "HEAD /metrics: 200 without a body");
    CHECK(fetch(l, mp, "POST", "/metrics", &r) == 0 && r.status == 405 &&
              strstr(r.head, "Allow: GET, HEAD") != NULL,
          "POST /metrics: 405 with Allow");
    CHECK(fetch_raw(l, AF_INET, mp,
                    "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: "
                    "5\r\nConnection: close\r\n\r\nhello",
                    &r) == 0 &&
              r.status == 405,
          "POST with a body: 405");
    CHECK(fetch(l, mp, "GET", "/nope", &r) == 0 && r.status == 404,
          "GET /nope: 404");
    CHECK(fetch(l, mp, "GET", "/healthz", &r) == 0 && r.status == 404,
          "/healthz is not on the metrics port");
    CHECK(fetch(l, hp, "GET", "/metrics", &r) == 0 && r.status == 404,
          "/metrics is not on the health port");

    CHECK(fetch(l, hp, "GET", "/healthz", &r) == 0 && r.status == 200 &&
              strcmp(r.body, "ok") == 0,
          "GET /healthz without a check: 200 ok");
    CHECK(fetch(l, hp, "GET", "/readyz", &r) == 0 && r.status == 200 &&
              strcmp(r.body, "ok") == 0 && calls == 1,
          "GET /readyz: 200 ok, check called");
    ready_ok = 0;
    CHECK(fetch(l, hp, "GET", "/readyz", &r) == 0 && r.status == 500,
          "failing /readyz: 500");
    CHECK_STR_EQ(r.body, "informers not synced: statefulsets",
                 "failing /readyz body is the detail");
    CHECK(fetch(l, hp, "GET", "/readyz?verbose", &r) == 0 && r.status == 500,
          "failing /readyz?verbose: 500");
    CHECK_STR_EQ(r.body,
                 "[-]readyz failed: informers not synced: statefulsets\n"
                 "readyz check failed\n",
                 "verbose body");
    ready_ok = 1;
    CHECK(fetch(l, hp, "GET", "/readyz?verbose=1", &r) == 0 && r.status == 200,
          "/readyz?verbose=1: 200");
    CHECK_STR_EQ(r.body, "[+]readyz ok\nreadyz check passed\n",
                 "verbose ok body");
    CHECK(fetch(l, hp, "DELETE", "/healthz", &r) == 0 && r.status == 405,
          "DELETE /healthz: 405");

    /* Stalled clients (half a request line, then nothing) must not keep
     * others from being served. */
    int stalled[4];
    for (int i = 0; i < 4; i++) {
        stalled[i] = connect_to(AF_INET, mp);
        send(stalled[i], "GET /met", 8, MSG_NOSIGNAL);
    }
    loop_run_once(l, 10);
    CHECK(fetch(l, mp, "GET", "/metrics", &r) == 0 && r.status == 200,
          "served while 4 clients stall");
    for (int i = 0; i < 4; i++)
        close(stalled[i]);
    for (int i = 0; i < 5; i++)
        loop_run_once(l, 10); /* let the server see the closes */

    int n = idle_iterations(l, 300);
    CHECK(n <= 3, "idle server: %d loop iterations in 300 ms", n);
out:
    serve_free(s);
    metrics_free(m);
    dbuf_free(&err);
}

static void test_shared(struct loop *l)
{
    struct resp r;
    struct dbuf err;
    dbuf_init(&err, 1024);
    /* A free port: bound once, then released. */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    bind(probe, (struct sockaddr *)&a, sizeof a);
    getsockname(probe, (struct sockaddr *)&a, &alen);
    close(probe);
    char addr[32];
    snprintf(addr, sizeof addr, ":%d", ntohs(a.sin_port));

    struct serve_opts o = {.metrics_addr = addr, .health_addr = addr};
    struct serve *s = serve_new(l, &o, &err);
    if (!CHECK(s != NULL, "serve on %s (%s)", addr, dbuf_ptr(&err)))
        goto out;
    int p = serve_metrics_port(s);
    CHECK(p == ntohs(a.sin_port) && serve_health_port(s) == p,
          "one listener for both");
    CHECK(fetch(l, p, "GET", "/metrics", &r) == 0 && r.status == 200 &&
              strstr(r.body, "process_cpu_seconds_total") != NULL,
          "/metrics on the shared listener (no registry: process metrics)");
    CHECK(fetch(l, p, "GET", "/healthz", &r) == 0 && r.status == 200,
          "/healthz on the shared listener");
    serve_free(s);
    s = NULL;

    /* IPv6 loopback, when the host has it. */
    probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6;
    memset(&a6, 0, sizeof a6);
    a6.sin6_family = AF_INET6;
    a6.sin6_addr = in6addr_loopback;
    int have6 =
        probe >= 0 && bind(probe, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (probe >= 0)
        close(probe);
    if (!have6) {
        TEST_NOTE("no IPv6 loopback: [::1] not tested");
        goto out;
    }
    struct serve_opts o6 = {.metrics_addr = "0", .health_addr = "[::1]:0"};
    s = serve_new(l, &o6, &err);
    CHECK(s != NULL && serve_metrics_port(s) == 0, "serve on [::1]:0 (%s)",
          dbuf_ptr(&err));
    if (s != NULL) {
        char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: "
                     "close\r\n\r\n";
        CHECK(fetch_raw(l, AF_INET6, serve_health_port(s), req, &r) == 0 &&
                  r.status == 200,
              "/healthz over IPv6");
    }
out:
    serve_free(s);
    dbuf_free(&err);
}

int main(void)
{
    struct loop *l = loop_new();
    if (l == NULL) {
        printf("Bail out! no loop\n");
        return 1;
    }
    /* The first server loads libmicrohttpd (and whatever descriptors the
     * loader keeps); count the process's descriptors after that. */
    struct serve_opts warm = {.metrics_addr = "127.0.0.1:0"};
    serve_free(serve_new(l, &warm, NULL));
    int fds = count_fds();

    test_addresses(l);
    test_routes(l);
    test_shared(l);
    CHECK_INT_EQ(count_fds(), fds, "no descriptor leaked");
    loop_free(l);
    return TEST_SUMMARY();
}
