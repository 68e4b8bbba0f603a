/*
 * http: the Kubernetes API client. Asynchronous requests over libcurl's
 * multi interface on the event loop (loop.h): keep-alive connections reused
 * across requests (HTTP/1.1, or HTTP/2 multiplexing when asked), TLS set up
 * and verified by kube_conn (kubeconfig.h), credentials that never block
 * the loop (requests wait, queued, while an exec plugin runs for a
 * credential they lack), connect and total timeouts,
 * TCP keepalive, a client-side token-bucket rate limit, results typed by
 * HTTP status with the apiserver's Status message kept, one retry after a
 * 401 (credential refreshed), retries after 429 (and 5xx with Retry-After)
 * that honour Retry-After, streaming for watches with an idle deadline.
 * Every buffer is bounded (dbuf.h). Uses loop, kubeconfig, dbuf, log,
 * cJSON.
 */
#ifndef DITTOFS_HTTP_H
#define DITTOFS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "kubeconfig.h"
#include "loop.h"

/* Result of a request: 0 or one of these (negative). */
enum http_result {
    HTTP_OK = 0,
    HTTP_ENETWORK = -1,      /* no HTTP answer: DNS, connect, TLS, reset */
    HTTP_ETIMEOUT = -2,      /* connect/total timeout, or a stream idle */
    HTTP_EBADREQUEST = -3,   /* 400 */
    HTTP_EUNAUTHORIZED = -4, /* 401, also after the one retry */
    HTTP_EFORBIDDEN = -5,    /* 403 */
    HTTP_ENOTFOUND = -6,     /* 404 */
    HTTP_ECONFLICT = -7,     /* 409 (stale resourceVersion, apply conflict) */
    HTTP_EEXISTS = -8,       /* 409 with reason AlreadyExists (a create) */
    HTTP_EGONE = -9,         /* 410 (Expired: relist) */
    HTTP_EINVALID = -10,     /* 422 */
    HTTP_ETOOMANY = -11,     /* 429 after the retries */
    HTTP_ESERVER = -12,      /* 5xx */
    HTTP_EHTTP = -13,        /* any other non-2xx (405, 406, 415, ...) */
    HTTP_ETOOBIG = -14,      /* response body over the maximum */
    HTTP_ENOMEM = -15,
    HTTP_EAUTH = -16,   /* credential refresh failed (exec plugin, file) */
    HTTP_EABORTED = -17 /* the streaming callback asked to stop */
};

/* A short stable word for a result ("ok", "not_found", "conflict",
 * "timeout", ...), for logs and for Lua's "<code>: <detail>" errors. */
const char *http_strerror(int result);
/* Maps an HTTP status to a result (2xx -> HTTP_OK). */
int http_result_from_status(long status, const char *reason);

enum http_method {
    HTTP_GET = 0,
    HTTP_POST,
    HTTP_PUT,
    HTTP_PATCH,
    HTTP_DELETE,
};

const char *http_method_name(enum http_method m);

#define HTTP_CT_JSON "application/json"
#define HTTP_CT_MERGE_PATCH "application/merge-patch+json"
#define HTTP_CT_JSON_PATCH "application/json-patch+json"
#define HTTP_CT_STRATEGIC_PATCH "application/strategic-merge-patch+json"
#define HTTP_CT_APPLY_PATCH "application/apply-patch+yaml"

/*
 * What a request produced; passed borrowed to the completion callback
 * (valid during the call), owned by the caller of http_send_sync().
 */
struct http_response {
    int result;  /* enum http_result */
    long status; /* last HTTP status, 0 when none arrived */
    char *body;  /* NUL-terminated; "" for a 2xx stream */
    size_t body_len;
    char *message; /* "" on success; else Status.message of the apiserver,
                    * or libcurl's error text, or "HTTP 415 ..." */
    char *reason;  /* Status.reason ("Expired", "AlreadyExists") or "" */
    unsigned retry_after_s; /* Retry-After of the last answer, 0: none */
    unsigned attempts;      /* requests sent (retries included) */
    unsigned connects;      /* new connections opened (0: all reused) */
    int http_version;       /* 11 or 2 for the last answer, 0: none */
    double seconds;         /* from http_send() to completion */
};

/* Transfers the body to the caller (free() it) and leaves "" behind.
 * Returns NULL when out of memory. */
char *http_response_take_body(struct http_response *r, size_t *len);
void http_response_free(struct http_response *r);

/* Called with the response at the end of a request; never called after
 * http_cancel() or http_client_free(). */
typedef void (*http_done_fn)(struct http_response *r, void *arg);
/* Streaming: called with each chunk of a 2xx body as it arrives. Return 0
 * to go on, or a negative value to abort (the request then completes with
 * HTTP_EABORTED). Runs inside a libcurl callback: it may call http_send()
 * and http_cancel(), which defer their libcurl work. */
typedef int (*http_data_fn)(const char *data, size_t len, void *arg);

/* One request. Strings and the body are copied by http_send(). */
struct http_call {
    enum http_method method;
    /* Path and query appended to the server URL, already escaped:
     * "/api/v1/namespaces/ns/configmaps?limit=500". */
    const char *path;
    const char *content_type; /* NULL: application/json with a body */
    const char *body;         /* NULL: none */
    size_t body_len;
    /* Streaming (watch): no total timeout; 2xx bytes go to on_data. */
    http_data_fn on_data;
    /* Streaming: abort with HTTP_ETIMEOUT after this long without a byte
     * (0: never). */
    uint64_t idle_timeout_ms;
    /* Non-streaming total timeout per attempt (0: the client's). */
    uint64_t timeout_ms;
    http_done_fn on_done;
    void *arg;
};

struct http_opts {
    double qps;                  /* 0: 500; negative: no client-side limit */
    int burst;                   /* 0: 1000 */
    uint64_t connect_timeout_ms; /* 0: 10000 */
    uint64_t request_timeout_ms; /* 0: 60000, non-streaming requests */
    size_t max_body;             /* 0: 256 MiB per response body */
    int max_retries;             /* 429/Retry-After retries; 0: 10, <0: 0 */
    unsigned max_retry_after_s;  /* cap on one Retry-After wait; 0: 60 */
    int http2;                   /* non-zero: HTTP/2 with multiplexing */
};

struct http_client;
struct http_req;

/*
 * A client for the API server described by `conn` (borrowed: it must
 * outlive the client), running on `loop`. `o` may be NULL (defaults).
 * Returns NULL only when out of memory.
 */
struct http_client *http_client_new(struct loop *loop, struct kube_conn *conn,
                                    const struct http_opts *o);
/* Cancels every request (no callbacks) and frees the client. NULL ok. */
void http_client_free(struct http_client *c);

/* Per-attempt observer for metrics (rest_client_requests_total{code,method,
 * host}, latency). status is 0 when no HTTP answer came. */
typedef void (*http_observe_fn)(enum http_method m, long status, double seconds,
                                void *arg);
void http_client_set_observer(struct http_client *c, http_observe_fn fn,
                              void *arg);
/* Requests not yet completed (queued, waiting to retry or on the wire). */
size_t http_client_pending(const struct http_client *c);
struct loop *http_client_loop(struct http_client *c);
struct kube_conn *http_client_conn(struct http_client *c);

/*
 * Queues a request; it goes out when the rate limiter allows. Returns 0 and
 * (if `out` is not NULL) a handle for http_cancel(), valid until on_done
 * has been called; or HTTP_ENOMEM, in which case on_done is never called.
 * on_done is always called from the loop, never from within http_send().
 */
int http_send(struct http_client *c, const struct http_call *call,
              struct http_req **out);
/* Cancels a request: on_done will not be called. `r` must be pending. */
void http_cancel(struct http_client *c, struct http_req *r);
/* Sets the idle deadline of a pending streaming request (its
 * http_call.idle_timeout_ms; 0: none), counted from the last byte it
 * received: a running attempt's deadline moves at once. */
void http_set_idle_timeout(struct http_client *c, struct http_req *r,
                           uint64_t ms);

/*
 * Sends the request and runs the loop until it completes (for tests and
 * one-shot CLI work; never from a loop callback). call->on_done and
 * call->arg are ignored. Returns the result and sets *out to the response
 * (free with http_response_free) when `out` is not NULL.
 */
int http_send_sync(struct http_client *c, const struct http_call *call,
                   struct http_response **out);

/* --- client-side rate limit (a token bucket; exposed for tests) -------- */

struct http_ratelimit {
    double qps; /* <= 0: unlimited */
    double burst;
    double tokens;
    uint64_t last_us;
};

/* A full bucket at `now_us`. */
void http_ratelimit_init(struct http_ratelimit *rl, double qps, int burst,
                         uint64_t now_us);
/* Takes one token at `now_us` and returns 0, or takes nothing and returns
 * the microseconds until a token is available. */
uint64_t http_ratelimit_take(struct http_ratelimit *rl, uint64_t now_us);

/* Parses a Retry-After header value (delta-seconds, or an HTTP-date
 * relative to `now`, a Unix time) into seconds; 0 when unparseable. */
unsigned http_parse_retry_after(const char *value, long long now);

#endif
