/*
 * fakehttp: a tiny threaded HTTP/1.1 server on 127.0.0.1 for the network
 * tests: a 429-injecting reverse proxy in front of the real apiserver
 * (itest_http) and scripted bad servers (test_watch_fake: garbage, an
 * endless line, a stream cut mid-event, silence). One thread accepts, one
 * thread per connection reads requests (request line, headers,
 * Content-Length body) and calls the handler, which writes the answer and
 * says whether to keep the connection. Header-only; uses pthreads.
 */
#ifndef DITTOFS_FAKEHTTP_H
#define DITTOFS_FAKEHTTP_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct fh_req {
    char method[16];
    char path[4096];
    char authorization[4096];
    char content_type[256];
    char *body;
    size_t body_len;
    int index; /* 0-based request number on this server */
};

struct fh_server;
/* Returns 1 to keep the connection open for another request, 0 to close. */
typedef int (*fh_handler)(struct fh_server *s, int fd, const struct fh_req *r);

struct fh_server {
    int lfd;
    int port;
    fh_handler handler;
    void *arg;
    pthread_t accept_thread;
    pthread_mutex_t mu;
    int nreq;
    int nconn;
    int stopping;
};

__attribute__((unused)) static int fh_write(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

__attribute__((unused)) static int fh_printf(int fd, const char *fmt, ...)
{
    char buf[65536];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    return fh_write(fd, buf,
                    (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* A complete response with a body and Content-Length. */
__attribute__((unused)) static int
fh_respond(int fd, int code, const char *extra_headers, const char *body)
{
    return fh_printf(fd,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s\r\n%s",
                     code, strlen(body), extra_headers ? extra_headers : "",
                     body);
}

/* Reads one request; returns 0, or -1 at EOF / error. */
static int fh_read_req(int fd, struct fh_req *r, char *buf, size_t cap,
                       size_t *have)
{
    char *end = NULL;
    for (;;) {
        buf[*have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL)
            break;
        if (*have + 1 >= cap)
            return -1;
        ssize_t k = recv(fd, buf + *have, cap - 1 - *have, 0);
        if (k <= 0)
            return -1;
        *have += (size_t)k;
    }
    size_t head = (size_t)(end - buf) + 4;
    memset(r, 0, sizeof(*r));
    sscanf(buf, "%15s %4095s", r->method, r->path);
    size_t clen = 0;
    for (char *line = strstr(buf, "\r\n") + 2; line < end;) {
        char *eol = strstr(line, "\r\n");
        *eol = '\0';
        if (strncasecmp(line, "content-length:", 15) == 0)
            clen = strtoul(line + 15, NULL, 10);
        else if (strncasecmp(line, "authorization:", 14) == 0)
            snprintf(r->authorization, sizeof(r->authorization), "%s",
                     line + 15);
        else if (strncasecmp(line, "content-type:", 13) == 0)
            snprintf(r->content_type, sizeof(r->content_type), "%s", line + 14);
        line = eol + 2;
    }
    r->body = malloc(clen + 1);
    size_t got = *have - head < clen ? *have - head : clen;
    memcpy(r->body, buf + head, got);
    while (got < clen) {
        ssize_t k = recv(fd, r->body + got, clen - got, 0);
        if (k <= 0) {
            free(r->body);
            r->body = NULL;
            return -1;
        }
        got += (size_t)k;
    }
    r->body[clen] = '\0';
    r->body_len = clen;
    size_t used = head + (*have - head < clen ? *have - head : clen);
    memmove(buf, buf + used, *have - used);
    *have -= used;
    return 0;
}

struct fh_conn {
    struct fh_server *s;
    int fd;
};

static void *fh_conn_main(void *arg)
{
    struct fh_conn *c = arg;
    static __thread char buf[1 << 16];
    size_t have = 0;
    struct fh_req r;
    while (fh_read_req(c->fd, &r, buf, sizeof(buf), &have) == 0) {
        pthread_mutex_lock(&c->s->mu);
        r.index = c->s->nreq++;
        pthread_mutex_unlock(&c->s->mu);
        int keep = c->s->handler(c->s, c->fd, &r);
        free(r.body);
        if (!keep)
            break;
    }
    close(c->fd);
    free(c);
    return NULL;
}

static void *fh_accept_main(void *arg)
{
    struct fh_server *s = arg;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) {
            if (s->stopping)
                return NULL;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->nconn++;
        pthread_mutex_unlock(&s->mu);
        struct fh_conn *c = malloc(sizeof(*c));
        c->s = s;
        c->fd = fd;
        pthread_t t;
        pthread_create(&t, NULL, fh_conn_main, c);
        pthread_detach(t);
    }
}

/* Starts a server on a free port; returns 0 or -1. */
__attribute__((unused)) static int fh_start(struct fh_server *s, fh_handler h,
                                            void *arg)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(s, 0, sizeof(*s));
    s->handler = h;
    s->arg = arg;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(s->lfd, 64) != 0 ||
        getsockname(s->lfd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    s->port = ntohs(a.sin_port);
    pthread_create(&s->accept_thread, NULL, fh_accept_main, s);
    return 0;
}

/* Stops accepting (connection threads end with their connections). */
__attribute__((unused)) static void fh_stop(struct fh_server *s)
{
    s->stopping = 1;
    shutdown(s->lfd, SHUT_RDWR);
    close(s->lfd);
    pthread_join(s->accept_thread, NULL);
}

/* Writes a kubeconfig for http://127.0.0.1:port with `token`; returns the
 * path (static buffer). */
__attribute__((unused)) static const char *fh_kubeconfig(int port,
                                                         const char *token)
{
    static char path[256];
    snprintf(path, sizeof(path), "/tmp/fakehttp-%d-%d.kubeconfig",
             (int)getpid(), port);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    fprintf(f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
            "    server: http://127.0.0.1:%d\nusers:\n- name: u\n  user:\n"
            "    token: \"%s\"\ncontexts:\n- name: x\n  context:\n"
            "    cluster: c\n    user: u\ncurrent-context: x\n",
            port, token);
    fclose(f);
    return path;
}

__attribute__((unused)) static double fh_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
