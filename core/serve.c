/* serve: /metrics, /healthz and /readyz over libmicrohttpd; see serve.h. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "dbuf.h"
#include "dl.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "serve.h"

#define ROUTE_METRICS 1
#define ROUTE_HEALTH 2

/* Limits that keep a slow or hostile client from holding resources: a
 * client that makes no progress for CONN_TIMEOUT_S is closed; beyond
 * MAX_CONNS further connections are refused at accept. */
#define MAX_CONNS 16u
#define CONN_TIMEOUT_S 10u
#define CONN_MEMORY 32768u
#define LISTEN_BACKLOG 64
#define METRICS_MAX ((size_t)64 << 20)
#define DETAIL_MAX 4096

#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define TEXT_TYPE "text/plain; charset=utf-8"

/* One libmicrohttpd daemon on one listening socket. */
struct listener {
    struct serve *s;
    struct MHD_Daemon *d;
    int epfd; /* registered with the loop when >= 0 */
    int routes;
    int port;
    struct loop_timer timer;
};

struct serve {
    struct loop *l;
    struct serve_opts o; /* borrowed pointers; the addresses are not kept */
    struct listener ls[2];
    size_t nls;
    int metrics_port;
    int health_port;
};

static void set_err(struct dbuf *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_err(struct dbuf *err, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL)
        return;
    dbuf_reset(err);
    va_start(ap, fmt);
    dbuf_vaddf(err, fmt, ap);
    va_end(ap);
}

static int disabled(const char *addr)
{
    return addr == NULL || addr[0] == '\0' || strcmp(addr, "0") == 0;
}

/* --- listening sockets ------------------------------------------------- */

/*
 * Splits "host:port", "[v6]:port" or ":port" into host (empty for every
 * interface) and port. Returns 0 or -1 with a message in err.
 */
static int parse_addr(const char *addr, char *host, size_t hostsize, char *port,
                      size_t portsize, struct dbuf *err)
{
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hlen;

    if (colon == NULL)
        goto bad;
    hlen = (size_t)(colon - addr);
    if (hlen > 0 && addr[0] == '[') {
        if (hlen < 2 || addr[hlen - 1] != ']')
            goto bad;
        h = addr + 1;
        hlen -= 2;
    } else if (memchr(addr, ':', hlen) != NULL) {
        goto bad; /* an IPv6 address needs brackets */
    }
    if (hlen >= hostsize)
        goto bad;
    memcpy(host, h, hlen);
    host[hlen] = '\0';

    const char *p = colon + 1;
    size_t plen = strlen(p);
    long v = 0;
    if (plen == 0 || plen > 5 || plen >= portsize)
        goto bad;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9')
            goto bad;
        v = v * 10 + (p[i] - '0');
    }
    if (v > 65535)
        goto bad;
    memcpy(port, p, plen + 1);
    return 0;
bad:
    set_err(err, "invalid address \"%s\": want host:port, :port or [ipv6]:port",
            addr);
    return -1;
}

/* A listening, non-blocking socket bound to `sa`, or -1 (errno set). */
static int listen_on(const struct sockaddr *sa, socklen_t salen, int dual)
{
    int one = 1, zero = 0;
    int fd =
        socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (dual &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) != 0) ||
        bind(fd, sa, salen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/*
 * Opens the listening socket of `addr`. Every interface means the IPv6
 * wildcard accepting IPv4 too, or the IPv4 wildcard on hosts without
 * IPv6; a host name tries each of its addresses. Returns the fd and sets
 * *port, or -1 with a message in err.
 */
static int open_listener(const char *addr, int *port, struct dbuf *err)
{
    char host[256], portstr[8];
    int fd = -1;

    if (parse_addr(addr, host, sizeof host, portstr, sizeof portstr, err) != 0)
        return -1;
    if (host[0] == '\0') {
        struct sockaddr_in6 s6;
        struct sockaddr_in s4;
        memset(&s6, 0, sizeof s6);
        s6.sin6_family = AF_INET6;
        s6.sin6_addr = in6addr_any;
        s6.sin6_port = htons((uint16_t)atoi(portstr));
        fd = listen_on((struct sockaddr *)&s6, sizeof s6, 1);
        if (fd < 0 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
            memset(&s4, 0, sizeof s4);
            s4.sin_family = AF_INET;
            s4.sin_addr.s_addr = htonl(INADDR_ANY);
            s4.sin_port = s6.sin6_port;
            fd = listen_on((struct sockaddr *)&s4, sizeof s4, 0);
        }
    } else {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        int rc = getaddrinfo(host, portstr, &hints, &res);
        if (rc != 0) {
            set_err(err, "cannot resolve \"%s\": %s", addr, gai_strerror(rc));
            return -1;
        }
        errno = EADDRNOTAVAIL;
        for (const struct addrinfo *ai = res; ai != NULL && fd < 0;
             ai = ai->ai_next)
            fd = listen_on(ai->ai_addr, ai->ai_addrlen, 0);
        int e = errno;
        freeaddrinfo(res);
        errno = e;
    }
    if (fd < 0) {
        set_err(err, "cannot listen on %s: %s", addr, strerror(errno));
        return -1;
    }
    *port = bound_port(fd);
    return fd;
}

/* --- requests ---------------------------------------------------------- */

/* Queues a response with a copy of body. */
static enum MHD_Result respond(struct MHD_Connection *c, unsigned status,
                               const char *type, const char *body, size_t len,
                               int allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO; /* closes the connection */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result respond_str(struct MHD_Connection *c, unsigned status,
                                   const char *body)
{
    return respond(c, status, TEXT_TYPE, body, strlen(body), 0);
}

static enum MHD_Result serve_metrics(struct serve *s, struct MHD_Connection *c)
{
    struct dbuf b;
    dbuf_init(&b, METRICS_MAX);
    enum MHD_Result rc;
    if (s->o.collect != NULL)
        s->o.collect(s->o.check_arg);
    if (metrics_render(s->o.metrics, &b, 1) != 0) {
        log_warn("cannot render the metrics", "error", "out of memory", NULL);
        rc = respond_str(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                         "cannot render the metrics\n");
    } else {
        rc = respond(c, MHD_HTTP_OK, METRICS_TYPE, dbuf_ptr(&b), dbuf_len(&b),
                     0);
    }
    dbuf_free(&b);
    return rc;
}

static enum MHD_Result find_verbose(void *cls, enum MHD_ValueKind kind,
                                    const char *key, const char *value)
{
    if (strcmp(key, "verbose") != 0)
        return MHD_YES;
    *(int *)cls = 1;
    return MHD_NO;
}

/* /healthz or /readyz: `name` is the check's name in verbose output. */
static enum MHD_Result serve_check(struct serve *s, struct MHD_Connection *c,
                                   serve_check_fn fn, const char *name)
{
    struct dbuf detail, body;
    int verbose = 0;
    int failed = 0;

    dbuf_init(&detail, DETAIL_MAX);
    dbuf_init(&body, DETAIL_MAX + 256);
    if (fn != NULL)
        failed = fn(&detail, s->o.check_arg) != 0;
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, find_verbose, &verbose);
    if (verbose && failed)
        dbuf_addf(&body, "[-]%s failed: %s\n%s check failed\n", name,
                  dbuf_len(&detail) > 0 ? dbuf_ptr(&detail) : "unhealthy",
                  name);
    else if (verbose)
        dbuf_addf(&body, "[+]%s ok\n%s check passed\n", name, name);
    else if (failed)
        dbuf_adds(&body,
                  dbuf_len(&detail) > 0 ? dbuf_ptr(&detail) : "unhealthy");
    else
        dbuf_adds(&body, "ok");
    enum MHD_Result rc =
        respond(c, failed ? MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_OK,
                TEXT_TYPE, dbuf_ptr(&body), dbuf_len(&body), 0);
    dbuf_free(&detail);
    dbuf_free(&body);
    return rc;
}

/*
 * The access handler. Called by MHD_run (so from our loop) once the
 * request headers are in; every answer is queued on this first call, so
 * an uploaded body is never read (a POST gets 405 and the connection is
 * closed rather than drained).
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct listener *li = cls;
    struct serve *s = li->s;
    int route = 0;
    const char *name = NULL;
    serve_check_fn fn = NULL;

    if (strcmp(url, "/metrics") == 0 && (li->routes & ROUTE_METRICS)) {
        route = ROUTE_METRICS;
    } else if (strcmp(url, "/healthz") == 0 && (li->routes & ROUTE_HEALTH)) {
        route = ROUTE_HEALTH;
        name = "healthz";
        fn = s->o.healthz;
    } else if (strcmp(url, "/readyz") == 0 && (li->routes & ROUTE_HEALTH)) {
        route = ROUTE_HEALTH;
        name = "readyz";
        fn = s->o.readyz;
    }
    if (route == 0)
        return respond_str(c, MHD_HTTP_NOT_FOUND, "404 page not found\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static const char msg[] = "method not allowed\n";
        return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT_TYPE, msg,
                       sizeof msg - 1, 1);
    }
    if (route == ROUTE_METRICS)
        return serve_metrics(s, c);
    return serve_check(s, c, fn, name);
}

/* libmicrohttpd's messages, one log line each: errors while the daemon
 * starts, debug afterwards (they are then about single connections: a
 * client gone mid-request, the connection limit reached). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    const struct listener *li = cls;
    char buf[256];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    log_emit(li->d == NULL ? LOG_ERROR : LOG_DEBUG, "libmicrohttpd", "error",
             buf, NULL);
}

/* --- loop integration -------------------------------------------------- */

/*
 * After every MHD_run the timer is set to libmicrohttpd's next deadline
 * (connection timeouts, or 0 when it has work that no socket event will
 * announce); without one the timer is stopped and an idle server makes no
 * system call at all.
 */
static void schedule(struct listener *li)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(li->d, &ms) == MHD_YES)
        loop_timer_start(li->s->l, &li->timer, (uint64_t)ms);
    else
        loop_timer_stop(li->s->l, &li->timer);
}

static void run(struct listener *li)
{
    MHD_run(li->d);
    schedule(li);
}

static void on_epoll_ready(int fd, short revents, void *arg)
{
    run(arg);
}

static void on_timer(struct loop_timer *t, void *arg)
{
    run(arg);
}

static int listener_start(struct serve *s, struct listener *li,
                          const char *addr, int routes, struct dbuf *err)
{
    int port = 0;

    li->s = s;
    li->epfd = -1;
    li->routes = routes;
    loop_timer_init(&li->timer, on_timer, li);
    if (dl_mhd_load() != 0) {
        set_err(err, "cannot serve %s: libmicrohttpd.so.12 is not available",
                addr);
        return -1;
    }
    int fd = open_listener(addr, &port, err);
    if (fd < 0)
        return -1;
    /* The logger goes first so that option errors reach it. */
    li->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                             on_request, li, MHD_OPTION_EXTERNAL_LOGGER,
                             on_mhd_log, (void *)li, MHD_OPTION_LISTEN_SOCKET,
                             fd, MHD_OPTION_CONNECTION_LIMIT, MAX_CONNS,
                             MHD_OPTION_CONNECTION_TIMEOUT, CONN_TIMEOUT_S,
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                             (size_t)CONN_MEMORY, MHD_OPTION_END);
    if (li->d == NULL) {
        /* Whether a failed start closed the socket is not documented. */
        if (fcntl(fd, F_GETFD) != -1)
            close(fd);
        set_err(err, "cannot serve %s: libmicrohttpd did not start", addr);
        return -1;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(li->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL || info->epoll_fd < 0) {
        set_err(err, "cannot serve %s: no epoll descriptor", addr);
        return -1;
    }
    if (loop_fd_add(s->l, info->epoll_fd, POLLIN, on_epoll_ready, li) != 0) {
        set_err(err, "cannot serve %s: out of memory", addr);
        return -1;
    }
    li->epfd = info->epoll_fd;
    li->port = port;
    schedule(li);
    return 0;
}

static void listener_stop(struct serve *s, struct listener *li)
{
    if (li->epfd >= 0)
        loop_fd_del(s->l, li->epfd);
    loop_timer_stop(s->l, &li->timer);
    MHD_stop_daemon(li->d);
    li->d = NULL;
    li->epfd = -1;
}

/* --- public ------------------------------------------------------------ */

struct serve *serve_new(struct loop *l, const struct serve_opts *o,
                        struct dbuf *err)
{
    struct serve *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        set_err(err, "out of memory");
        return NULL;
    }
    s->l = l;
    s->o = *o;
    s->o.metrics_addr = NULL;
    s->o.health_addr = NULL;

    int want_metrics = !disabled(o->metrics_addr);
    int want_health = !disabled(o->health_addr);
    /* Port 0 twice means two ephemeral ports, not one. */
    size_t alen = want_metrics ? strlen(o->metrics_addr) : 0;
    int shared = want_metrics && want_health &&
                 strcmp(o->metrics_addr, o->health_addr) == 0 &&
                 !(alen >= 2 && strcmp(o->metrics_addr + alen - 2, ":0") == 0);
    if (want_metrics) {
        struct listener *li = &s->ls[s->nls++];
        int routes = ROUTE_METRICS | (shared ? ROUTE_HEALTH : 0);
        if (listener_start(s, li, o->metrics_addr, routes, err) != 0)
            goto fail;
        s->metrics_port = li->port;
        if (shared)
            s->health_port = li->port;
    }
    if (want_health && !shared) {
        struct listener *li = &s->ls[s->nls++];
        if (listener_start(s, li, o->health_addr, ROUTE_HEALTH, err) != 0)
            goto fail;
        s->health_port = li->port;
    }
    return s;
fail:
    serve_free(s);
    return NULL;
}

void serve_free(struct serve *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nls; i++)
        listener_stop(s, &s->ls[i]);
    free(s);
}

int serve_metrics_port(const struct serve *s)
{
    return s != NULL ? s->metrics_port : 0;
}

int serve_health_port(const struct serve *s)
{
    return s != NULL ? s->health_port : 0;
}
