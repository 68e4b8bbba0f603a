/*
 * serve: the operator's HTTP endpoints, /metrics (Prometheus text format
 * 0.0.4) on the metrics address and /healthz, /readyz on the health
 * address. libmicrohttpd runs in its external epoll mode, driven by our
 * loop (its epoll descriptor is a loop fd, its timeouts a loop timer): no
 * thread, and no blocking call. At most 16 connections per address, each
 * closed after 10 s without progress, so slow clients cannot hold the
 * loop. libmicrohttpd is loaded on first use (dl.h).
 * Uses loop, metrics, dbuf, dl, log.
 */
#ifndef DITTOFS_SERVE_H
#define DITTOFS_SERVE_H

struct dbuf;
struct loop;
struct metrics;
struct serve;

/*
 * A health check, called on the loop for each /healthz or /readyz request:
 * returns 0 when healthy, else non-zero with a short human-readable reason
 * appended to `detail` (an empty buffer with a 4 KiB maximum). It must not
 * block and must not call serve_free().
 */
typedef int (*serve_check_fn)(struct dbuf *detail, void *arg);

/*
 * Addresses: ":8080" (every interface, IPv6 and IPv4 when the host has
 * IPv6), "127.0.0.1:8080", "[::1]:8080", "localhost:8080"; port 0 picks a
 * free port (see serve_*_port). "0", "" or NULL disable the endpoint.
 * When both addresses are the same string (and the port is not 0) one
 * listener serves all three paths. `metrics` is borrowed and must outlive the
 * server (NULL: only the process metrics); a NULL check always passes.
 */
struct serve_opts {
    const char *metrics_addr;
    const char *health_addr;
    struct metrics *metrics;
    serve_check_fn healthz, readyz;
    /* Called (NULL: not) before each /metrics rendering, to bring gauges
     * kept elsewhere up to date; must not block. */
    void (*collect)(void *arg);
    void *check_arg; /* the argument of the checks and of collect */
};

/*
 * Binds the listeners and registers them with `l`. Responses:
 *   GET|HEAD /metrics   200, text/plain; version=0.0.4 (process metrics
 *                       included)
 *   GET|HEAD /healthz   200 "ok", or 500 with the check's detail;
 *   GET|HEAD /readyz    likewise (`?verbose`: "[+]check ok" or
 *                       "[-]check failed: detail" lines, as Kubernetes
 *                       components write them)
 *   another path        404; another method 405 (Allow: GET, HEAD)
 * Returns the server, or NULL with a message in `err` (may be NULL) when
 * an address is invalid, cannot be bound, libmicrohttpd cannot be loaded
 * or memory runs out. With both endpoints disabled it returns a server
 * that does nothing.
 */
struct serve *serve_new(struct loop *l, const struct serve_opts *o,
                        struct dbuf *err);
/* Closes the listeners and every open connection. NULL is a no-op. Not
 * from inside a check. */
void serve_free(struct serve *s);

/* The bound port of each endpoint (useful with port 0), 0 when the
 * endpoint is disabled. */
int serve_metrics_port(const struct serve *s);
int serve_health_port(const struct serve *s);

#endif
