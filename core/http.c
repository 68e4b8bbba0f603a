/* http: the Kubernetes API client on the event loop; see http.h. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "dbuf.h"
#include "http.h"
#include "log.h"

#ifndef DITTOFS_VERSION
#define DITTOFS_VERSION "dev"
#endif

#define HTTP_USER_AGENT "dittofs-operator/" DITTOFS_VERSION
/* Error bodies of streaming requests are small Status objects. */
#define HTTP_MAX_STREAM_ERROR_BODY (1u << 20)
/* TCP keepalive: first probe after 30 s idle, then every 10 s, 3 probes:
 * a silently dead peer is noticed in about a minute. */
#define HTTP_KEEPIDLE_S 30L
#define HTTP_KEEPINTVL_S 10L
#define HTTP_KEEPCNT 3

enum req_state {
    REQ_QUEUED,  /* waiting for the rate limiter */
    REQ_WAITING, /* waiting out a Retry-After */
    REQ_RUNNING, /* on the multi handle */
    REQ_REAPING, /* cancelled inside a libcurl callback; freed by reap */
    REQ_CRED,    /* waiting for the exec credential plugin's run */
};

struct http_req {
    struct http_client *c;
    struct http_req *qnext; /* rate-limiter queue, reap or cred list */
    struct http_req *anext; /* all requests of the client */
    struct http_req *aprev;
    enum req_state state;
    struct loop_xfer xfer;
    struct loop_timer timer; /* Retry-After wait, or the idle deadline */
    CURL *easy;
    struct curl_slist *headers;

    enum http_method method;
    char *path;
    char *ctype;
    char *body;
    size_t body_len;
    http_data_fn on_data;
    http_done_fn on_done;
    void *arg;
    uint64_t idle_timeout_ms;
    uint64_t timeout_ms;

    uint64_t start_us;
    uint64_t attempt_us;
    uint64_t last_rx_ms;
    long status;
    int status_seen;
    int streaming; /* this attempt's 2xx body goes to on_data */
    int aborted;   /* on_data returned an error */
    int toobig;
    int retried_401;
    unsigned retry_after;
    unsigned attempts;
    unsigned connects;
    int http_version;
    struct dbuf resp; /* its maximum is set by each start_attempt() */
    char errbuf[CURL_ERROR_SIZE];
};

struct http_client {
    struct loop *loop;
    struct kube_conn *conn;
    struct http_opts o;
    struct http_ratelimit rl;
    struct http_req *qhead;
    struct http_req *qtail;
    struct http_req *all;
    struct http_req *reap;
    /* REQ_CRED requests in arrival order, and how the connection tells
     * us that the exec plugin's run ended (one waiter per client). */
    struct http_req *credq;
    struct http_req *credq_tail;
    struct kube_conn_waiter cred_waiter;
    size_t pending;
    struct loop_timer kick;
    struct loop_timer reap_timer;
    int in_cb; /* > 0 while inside a libcurl callback */
    http_observe_fn observe;
    void *observe_arg;
};

/* --- results ----------------------------------------------------------- */

const char *http_strerror(int result)
{
    switch (result) {
    case HTTP_OK:
        return "ok";
    case HTTP_ENETWORK:
        return "network";
    case HTTP_ETIMEOUT:
        return "timeout";
    case HTTP_EBADREQUEST:
        return "bad_request";
    case HTTP_EUNAUTHORIZED:
        return "unauthorized";
    case HTTP_EFORBIDDEN:
        return "forbidden";
    case HTTP_ENOTFOUND:
        return "not_found";
    case HTTP_ECONFLICT:
        return "conflict";
    case HTTP_EEXISTS:
        return "already_exists";
    case HTTP_EGONE:
        return "gone";
    case HTTP_EINVALID:
        return "invalid";
    case HTTP_ETOOMANY:
        return "too_many_requests";
    case HTTP_ESERVER:
        return "server_error";
    case HTTP_EHTTP:
        return "http_error";
    case HTTP_ETOOBIG:
        return "too_big";
    case HTTP_ENOMEM:
        return "no_memory";
    case HTTP_EAUTH:
        return "auth";
    case HTTP_EABORTED:
        return "aborted";
    default:
        return "unknown";
    }
}

int http_result_from_status(long status, const char *reason)
{
    if (status >= 200 && status < 300)
        return HTTP_OK;
    switch (status) {
    case 400:
        return HTTP_EBADREQUEST;
    case 401:
        return HTTP_EUNAUTHORIZED;
    case 403:
        return HTTP_EFORBIDDEN;
    case 404:
        return HTTP_ENOTFOUND;
    case 409:
        if (reason != NULL && strcmp(reason, "AlreadyExists") == 0)
            return HTTP_EEXISTS;
        return HTTP_ECONFLICT;
    case 410:
        return HTTP_EGONE;
    case 422:
        return HTTP_EINVALID;
    case 429:
        return HTTP_ETOOMANY;
    default:
        break;
    }
    if (status >= 500 && status < 600)
        return HTTP_ESERVER;
    if (status == 0)
        return HTTP_ENETWORK;
    return HTTP_EHTTP;
}

const char *http_method_name(enum http_method m)
{
    static const char *const names[] = {"GET", "POST", "PUT", "PATCH",
                                        "DELETE"};
    if ((unsigned)m >= sizeof(names) / sizeof(names[0]))
        return "GET";
    return names[m];
}

/* Stands in for "" when even that cannot be allocated; never freed. */
static char empty_str[1];

static void free_str(char *s)
{
    if (s != empty_str)
        free(s);
}

char *http_response_take_body(struct http_response *r, size_t *len)
{
    char *b = r->body;
    if (len != NULL)
        *len = r->body_len;
    r->body = empty_str;
    r->body_len = 0;
    if (b == empty_str) {
        b = strdup("");
        if (len != NULL)
            *len = 0;
    }
    return b;
}

void http_response_free(struct http_response *r)
{
    if (r == NULL)
        return;
    free_str(r->body);
    free_str(r->message);
    free_str(r->reason);
    free(r);
}

/* --- rate limit and Retry-After ---------------------------------------- */

void http_ratelimit_init(struct http_ratelimit *rl, double qps, int burst,
                         uint64_t now_us)
{
    rl->qps = qps;
    rl->burst = burst < 1 ? 1 : burst;
    rl->tokens = rl->burst;
    rl->last_us = now_us;
}

uint64_t http_ratelimit_take(struct http_ratelimit *rl, uint64_t now_us)
{
    if (rl->qps <= 0)
        return 0;
    if (now_us > rl->last_us) {
        rl->tokens += (double)(now_us - rl->last_us) * rl->qps / 1e6;
        if (rl->tokens > rl->burst)
            rl->tokens = rl->burst;
        rl->last_us = now_us;
    }
    if (rl->tokens >= 1.0) {
        rl->tokens -= 1.0;
        return 0;
    }
    double wait = ceil((1.0 - rl->tokens) * 1e6 / rl->qps);
    return wait < 1 ? 1 : (uint64_t)wait;
}

unsigned http_parse_retry_after(const char *value, long long now)
{
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        char *end;
        unsigned long v = strtoul(value, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (*end != '\0')
            return 0;
        return v > 86400 ? 86400 : (unsigned)v;
    }
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1 || (long long)t <= now)
        return 0;
    long long d = (long long)t - now;
    return d > 86400 ? 86400 : (unsigned)d;
}

/* --- request lifecycle ------------------------------------------------- */

/*
 * A request moves QUEUED (rate limiter) -> RUNNING (on the multi handle)
 * -> done; a 401 goes back to QUEUED once, a 429 (or a 5xx carrying
 * Retry-After) to WAITING for the Retry-After delay and then QUEUED again,
 * each retry taking a new token. A request whose credential is being
 * fetched by an exec plugin (kube_conn_authorization_async) waits in CRED
 * with its token and starts, or fails with the plugin's error, when the
 * run ends; the loop goes on meanwhile. Only finish() calls on_done, and
 * it frees the request first, so a callback may send new requests freely.
 */

static void kick_cb(struct loop_timer *t, void *arg);
static void req_timer_cb(struct loop_timer *t, void *arg);
static void xfer_done(struct loop_xfer *x, CURLcode result);
static void start_attempt(struct http_req *r);

static void req_free(struct http_req *r)
{
    struct http_client *c = r->c;
    loop_timer_stop(c->loop, &r->timer);
    if (r->aprev != NULL)
        r->aprev->anext = r->anext;
    else
        c->all = r->anext;
    if (r->anext != NULL)
        r->anext->aprev = r->aprev;
    if (r->state != REQ_REAPING)
        c->pending--;
    if (r->easy != NULL)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    dbuf_free(&r->resp);
    free(r->path);
    free(r->ctype);
    free(r->body);
    free(r);
}

static void enqueue(struct http_req *r)
{
    struct http_client *c = r->c;
    r->state = REQ_QUEUED;
    r->qnext = NULL;
    if (c->qtail != NULL)
        c->qtail->qnext = r;
    else
        c->qhead = r;
    c->qtail = r;
    if (!loop_timer_active(&c->kick))
        loop_timer_start(c->loop, &c->kick, 0);
}

static void dequeue(struct http_req *r)
{
    struct http_client *c = r->c;
    struct http_req **pp = &c->qhead;
    struct http_req *prev = NULL;
    while (*pp != NULL && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp == NULL)
        return;
    *pp = r->qnext;
    if (c->qtail == r)
        c->qtail = prev;
    r->qnext = NULL;
}

/* Releases the easy handle and the per-attempt state. */
static void attempt_reset(struct http_req *r)
{
    if (r->easy != NULL) {
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    dbuf_free(&r->resp);
    r->status = 0;
    r->status_seen = 0;
    r->streaming = 0;
    r->aborted = 0;
    r->toobig = 0;
    r->retry_after = 0;
    r->errbuf[0] = '\0';
}

/* Copies at most 200 printable bytes of a non-JSON error body. */
static void add_excerpt(struct dbuf *m, const char *body, size_t len)
{
    size_t n = len > 200 ? 200 : len;
    dbuf_adds(m, ": ");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)body[i];
        dbuf_addc(m, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
    }
    if (len > n)
        dbuf_adds(m, "...");
}

/*
 * Completes a request: builds the response, calls on_done and frees the
 * request. `message` is used when the body has no Status message.
 */
static void finish(struct http_req *r, int result, const char *message)
{
    struct http_response resp;
    struct dbuf msg;
    char *reason = NULL;

    memset(&resp, 0, sizeof(resp));
    dbuf_init(&msg, 64 * 1024);
    resp.status = r->status;
    resp.retry_after_s = r->retry_after;
    resp.attempts = r->attempts;
    resp.connects = r->connects;
    resp.http_version = r->http_version;
    resp.seconds = (double)(loop_now_us() - r->start_us) / 1e6;
    resp.body = dbuf_take(&r->resp, &resp.body_len);
    if (result == HTTP_OK && r->status && (r->status < 200 || r->status > 299))
        result = http_result_from_status(r->status, NULL);
    if (result != HTTP_OK && r->status >= 300 && resp.body != NULL) {
        /* The apiserver explains every failure in a Status object. */
        cJSON *st = cJSON_ParseWithLength(resp.body, resp.body_len);
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(st, "kind");
        if (cJSON_IsString(kind) && strcmp(kind->valuestring, "Status") == 0) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(st, "message");
            const cJSON *rs = cJSON_GetObjectItemCaseSensitive(st, "reason");
            if (cJSON_IsString(m))
                dbuf_adds(&msg, m->valuestring);
            if (cJSON_IsString(rs))
                reason = strdup(rs->valuestring);
        }
        cJSON_Delete(st);
        if (result != HTTP_ETOOBIG)
            result = http_result_from_status(r->status, reason);
        if (dbuf_len(&msg) == 0) {
            dbuf_addf(&msg, "HTTP %ld", r->status);
            if (resp.body_len > 0)
                add_excerpt(&msg, resp.body, resp.body_len);
        }
    }
    if (dbuf_len(&msg) == 0 && result != HTTP_OK)
        dbuf_adds(&msg, message != NULL && *message ? message
                                                    : http_strerror(result));
    resp.message = dbuf_take(&msg, NULL);
    if (reason == NULL)
        reason = strdup("");
    resp.reason = reason;
    if (resp.body == NULL)
        resp.body = strdup("");
    if (resp.message == NULL || resp.reason == NULL || resp.body == NULL) {
        result = HTTP_ENOMEM;
        free(resp.message);
        free(resp.reason);
        free(resp.body);
        resp.message = empty_str;
        resp.reason = empty_str;
        resp.body = empty_str;
        resp.body_len = 0;
    }
    resp.result = result;

    http_done_fn done = r->on_done;
    void *arg = r->arg;
    req_free(r);
    if (done != NULL)
        done(&resp, arg);
    /* The callback may have taken and replaced any of the three. */
    free_str(resp.body);
    free_str(resp.message);
    free_str(resp.reason);
}

/* --- libcurl callbacks ------------------------------------------------- */

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct http_req *r = arg;
    size_t n = size * nmemb;
    size_t ret = n;

    if (r->state == REQ_REAPING)
        return 0;
    r->c->in_cb++;
    r->last_rx_ms = loop_now_ms();
    if (!r->status_seen) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        r->status_seen = 1;
        /* A non-2xx answer of a stream is buffered like any body, bounded
         * by the HTTP_MAX_STREAM_ERROR_BODY start_attempt() gave it. */
        r->streaming =
            r->on_data != NULL && r->status >= 200 && r->status < 300;
    }
    if (r->streaming) {
        if (r->on_data(ptr, n, r->arg) < 0) {
            r->aborted = 1;
            ret = 0;
        }
    } else if (dbuf_add(&r->resp, ptr, n) != DBUF_OK) {
        r->toobig = 1;
        ret = 0;
    }
    r->c->in_cb--;
    return ret;
}

static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct http_req *r = arg;
    size_t n = size * nmemb;
    static const char ra[] = "retry-after:";

    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        r->retry_after = 0; /* a new response begins */
    } else if (n > sizeof(ra) - 1 &&
               strncasecmp(ptr, ra, sizeof(ra) - 1) == 0) {
        char v[128];
        size_t len = n - (sizeof(ra) - 1);
        if (len >= sizeof(v))
            len = sizeof(v) - 1;
        memcpy(v, ptr + sizeof(ra) - 1, len);
        v[len] = '\0';
        r->retry_after = http_parse_retry_after(v, (long long)time(NULL));
        if (r->retry_after == 0)
            r->retry_after = 1; /* present but unreadable: wait a second */
    }
    return n;
}

/* libcurl 7.88 sets keepalive idle and interval but not the probe count
 * (CURLOPT_TCP_KEEPCNT came in 8.9); the kernel default of 9 probes would
 * take two minutes to declare a silent peer dead. */
static int sockopt_cb(void *arg, curl_socket_t fd, curlsocktype purpose)
{
    int cnt = HTTP_KEEPCNT;
    (void)arg;
    (void)purpose;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    return CURL_SOCKOPT_OK;
}

/* --- attempts ---------------------------------------------------------- */

#define SETOPT(opt, val)                                                       \
    do {                                                                       \
        if (curl_easy_setopt(e, opt, val) != CURLE_OK)                         \
            goto fail_opt;                                                     \
    } while (0)

/* Appends one header line to the attempt's list (curl copies it).
 * Returns 0, or -1 when out of memory (the list stays as it was). */
static int add_header(struct http_req *r, const char *line)
{
    struct curl_slist *h = curl_slist_append(r->headers, line);
    if (h == NULL)
        return -1;
    r->headers = h;
    return 0;
}

/* --- waiting for an exec credential plugin ------------------------------ */

/* Parks `r` (its token taken) until the plugin's run ends. */
static void cred_park(struct http_req *r)
{
    struct http_client *c = r->c;
    r->state = REQ_CRED;
    r->qnext = NULL;
    if (c->credq_tail != NULL)
        c->credq_tail->qnext = r;
    else
        c->credq = r;
    c->credq_tail = r;
    kube_conn_wait(c->conn, &c->cred_waiter);
}

static void cred_unlink(struct http_req *r)
{
    struct http_client *c = r->c;
    struct http_req **pp = &c->credq, *prev = NULL;
    while (*pp != NULL && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp == NULL)
        return;
    *pp = r->qnext;
    if (c->credq_tail == r)
        c->credq_tail = prev;
    r->qnext = NULL;
}

/*
 * The plugin's run ended (kube_conn_waiter): the requests parked until
 * now start (a request that must wait again, for a later run, goes to the
 * back and is not seen twice), or fail with the plugin's error. A
 * callback may cancel any of them meanwhile: each is taken off the queue
 * before it is handled.
 */
static void cred_ready(struct kube_conn_waiter *w, int rc, const char *err)
{
    struct http_client *c =
        (struct http_client *)((char *)w -
                               offsetof(struct http_client, cred_waiter));
    size_t n = 0;
    for (struct http_req *r = c->credq; r != NULL; r = r->qnext)
        n++;
    if (rc < 0 && n > 0)
        log_warn("cannot prepare credentials", "error", err, NULL);
    while (n-- > 0 && c->credq != NULL) {
        struct http_req *r = c->credq;
        cred_unlink(r);
        r->state = REQ_QUEUED;
        if (rc == 0)
            start_attempt(r);
        else
            finish(r, HTTP_EAUTH, err);
    }
}

/* --- attempts ------------------------------------------------------------ */

/* Starts one attempt of `r` (state QUEUED, token taken). Completes the
 * request with an error when it cannot start, or parks it (CRED) while an
 * exec plugin runs for its credential. */
static void start_attempt(struct http_req *r)
{
    struct http_client *c = r->c;
    char err[512];
    struct dbuf url;
    const char *what = "curl option";

    attempt_reset(r);
    /* First the credential: an exec plugin may have to run for it (then
     * the request waits without a curl handle), or it may return a client
     * certificate that kube_conn_setup_tls sets. */
    const char *auth = NULL;
    err[0] = '\0';
    int ar = kube_conn_authorization_async(c->conn, c->loop, &auth, err,
                                           sizeof(err));
    if (ar == KUBE_CONN_PENDING) {
        cred_park(r);
        return;
    }
    if (ar < 0) {
        log_warn("cannot prepare credentials", "error", err, NULL);
        finish(r, HTTP_EAUTH, err);
        return;
    }
    dbuf_init(&url, 64 * 1024);
    r->attempts++;
    r->attempt_us = loop_now_us();
    r->last_rx_ms = loop_now_ms();
    dbuf_init(&r->resp,
              r->on_data != NULL ? HTTP_MAX_STREAM_ERROR_BODY : c->o.max_body);
    CURL *e = curl_easy_init();
    if (e == NULL) {
        finish(r, HTTP_ENOMEM, "out of memory");
        return;
    }
    r->easy = e;
    if (auth != NULL && add_header(r, auth) != 0) {
        finish(r, HTTP_ENOMEM, "out of memory");
        return;
    }
    if (kube_conn_setup_tls(c->conn, e, err, sizeof(err)) != 0) {
        log_warn("cannot prepare credentials", "error", err, NULL);
        finish(r, HTTP_EAUTH, err);
        return;
    }
    char ct[256];
    snprintf(ct, sizeof(ct), "Content-Type: %s",
             r->ctype != NULL ? r->ctype : HTTP_CT_JSON);
    if (add_header(r, "Accept: application/json") != 0 ||
        add_header(r, "Expect:") != 0 ||
        (r->body != NULL && add_header(r, ct) != 0) ||
        dbuf_adds(&url, kube_conn_server(c->conn)) != 0 ||
        dbuf_adds(&url, r->path) != 0) {
        dbuf_free(&url);
        finish(r, HTTP_ENOMEM, "out of memory");
        return;
    }
    what = "URL";
    SETOPT(CURLOPT_URL, dbuf_ptr(&url));
    what = "curl option";
    SETOPT(CURLOPT_HTTPHEADER, r->headers);
    SETOPT(CURLOPT_USERAGENT, HTTP_USER_AGENT);
    SETOPT(CURLOPT_PRIVATE, (void *)&r->xfer);
    SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
    SETOPT(CURLOPT_WRITEDATA, r);
    SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
    SETOPT(CURLOPT_HEADERDATA, r);
    SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)c->o.connect_timeout_ms);
    if (r->on_data == NULL) {
        uint64_t t = r->timeout_ms ? r->timeout_ms : c->o.request_timeout_ms;
        SETOPT(CURLOPT_TIMEOUT_MS, (long)t);
    }
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_TCP_KEEPIDLE, HTTP_KEEPIDLE_S);
    SETOPT(CURLOPT_TCP_KEEPINTVL, HTTP_KEEPINTVL_S);
    SETOPT(CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
    /* Large receive buffers for lists; the default 16 KiB for watches,
     * which stay open (memory) and carry small events. */
    if (r->on_data == NULL)
        SETOPT(CURLOPT_BUFFERSIZE, 256L * 1024L);
    if (c->o.http2) {
        SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        SETOPT(CURLOPT_PIPEWAIT, 1L);
    } else {
        SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    }
    switch (r->method) {
    case HTTP_GET:
        SETOPT(CURLOPT_HTTPGET, 1L);
        break;
    case HTTP_POST:
        SETOPT(CURLOPT_POST, 1L);
        break;
    default:
        SETOPT(CURLOPT_CUSTOMREQUEST, http_method_name(r->method));
        break;
    }
    if (r->body != NULL || r->method == HTTP_POST) {
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        SETOPT(CURLOPT_POSTFIELDS, r->body != NULL ? r->body : "");
    }
    dbuf_free(&url);
    if (loop_add_easy(c->loop, e) != 0) {
        finish(r, HTTP_ENETWORK, "cannot add the transfer to the loop");
        return;
    }
    r->state = REQ_RUNNING;
    if (r->idle_timeout_ms > 0)
        loop_timer_start(c->loop, &r->timer, r->idle_timeout_ms);
    return;

fail_opt:
    dbuf_free(&url);
    snprintf(err, sizeof(err), "libcurl refused the %s of %s %s", what,
             http_method_name(r->method), r->path);
    finish(r, HTTP_ENETWORK, err);
}

/* Runs queued requests as the rate limiter allows. */
static void kick_cb(struct loop_timer *t, void *arg)
{
    struct http_client *c = arg;
    (void)t;
    while (c->qhead != NULL) {
        uint64_t wait = http_ratelimit_take(&c->rl, loop_now_us());
        if (wait > 0) {
            loop_timer_start(c->loop, &c->kick, (wait + 999) / 1000);
            return;
        }
        struct http_req *r = c->qhead;
        c->qhead = r->qnext;
        if (c->qhead == NULL)
            c->qtail = NULL;
        r->qnext = NULL;
        start_attempt(r);
    }
}

static void observe(struct http_req *r)
{
    struct http_client *c = r->c;
    if (c->observe != NULL)
        c->observe(r->method, r->status,
                   (double)(loop_now_us() - r->attempt_us) / 1e6,
                   c->observe_arg);
}

/* The Retry-After wait is over (WAITING), or the idle deadline of a
 * streaming attempt is due (RUNNING). */
static void req_timer_cb(struct loop_timer *t, void *arg)
{
    struct http_req *r = arg;
    (void)t;
    if (r->state == REQ_WAITING) {
        enqueue(r);
        return;
    }
    if (r->state != REQ_RUNNING)
        return;
    uint64_t now = loop_now_ms();
    uint64_t idle = now - r->last_rx_ms;
    if (idle < r->idle_timeout_ms) {
        loop_timer_start(r->c->loop, &r->timer, r->idle_timeout_ms - idle);
        return;
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "no data from the server for %llu ms",
             (unsigned long long)idle);
    loop_remove_easy(r->c->loop, r->easy);
    observe(r);
    finish(r, HTTP_ETIMEOUT, msg);
}

static int curl_result(CURLcode cc)
{
    switch (cc) {
    case CURLE_OK:
        return HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return HTTP_ETIMEOUT;
    case CURLE_OUT_OF_MEMORY:
        return HTTP_ENOMEM;
    default:
        return HTTP_ENETWORK;
    }
}

static void xfer_done(struct loop_xfer *x, CURLcode cc)
{
    struct http_req *r =
        (struct http_req *)((char *)x - offsetof(struct http_req, xfer));
    struct http_client *c = r->c;
    char msg[CURL_ERROR_SIZE + 128];

    if (r->state != REQ_RUNNING)
        return; /* cancelled: the reaper frees it */
    loop_timer_stop(c->loop, &r->timer);
    if (!r->status_seen)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    long nc = 0, ver = 0;
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &nc);
    curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &ver);
    r->connects += (unsigned)nc;
    r->http_version = ver == CURL_HTTP_VERSION_2_0   ? 2
                      : ver == CURL_HTTP_VERSION_1_1 ? 11
                      : ver == CURL_HTTP_VERSION_1_0 ? 10
                                                     : 0;
    observe(r);
    if (r->aborted) {
        finish(r, HTTP_EABORTED, "aborted by the stream consumer");
        return;
    }
    if (r->toobig) {
        snprintf(msg, sizeof(msg), "response to %s %s is larger than %zu bytes",
                 http_method_name(r->method), r->path, r->resp.max);
        finish(r, HTTP_ETOOBIG, msg);
        return;
    }
    if (cc != CURLE_OK) {
        snprintf(msg, sizeof(msg), "%s %s: %s", http_method_name(r->method),
                 r->path, r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
        /* A failure before any answer is a network error whatever
         * status a partial exchange left behind. */
        if (r->streaming || r->status == 0 || r->status < 300) {
            int res = curl_result(cc);
            finish(r, res, msg);
            return;
        }
    }
    int res = http_result_from_status(r->status, NULL);
    if (res == HTTP_EUNAUTHORIZED && !r->retried_401) {
        /* The token may have rotated: refresh and try once more. */
        r->retried_401 = 1;
        kube_conn_unauthorized(c->conn);
        attempt_reset(r);
        enqueue(r);
        return;
    }
    /* A 429 (and a 5xx with Retry-After, like client-go) means the request
     * was not processed, so even a write may be sent again. Other errors
     * are the caller's to retry: writes are not idempotent. One retry is
     * libcurl's own, below us: a request on a reused connection that dies
     * before any byte of the answer is sent again on a new one, whatever
     * its method (spec/integration/faults_test.sh saw a server-side apply
     * twice so). If the first copy had arrived, an apply repeats itself
     * harmlessly (or gets 409 when it carries the resourceVersion the
     * first one changed: the controller runs again), an update with a
     * resourceVersion gets 409 and a POST (an Event) may be doubled; Go's
     * net/http resends only idempotent requests there. */
    int retryable =
        res == HTTP_ETOOMANY || (res == HTTP_ESERVER && r->retry_after > 0);
    if (retryable && r->attempts <= (unsigned)c->o.max_retries) {
        unsigned wait = r->retry_after ? r->retry_after : 1;
        if (wait > c->o.max_retry_after_s)
            wait = c->o.max_retry_after_s;
        log_debug("retrying after Retry-After", "path", r->path, NULL);
        unsigned ra = r->retry_after;
        attempt_reset(r);
        r->retry_after = ra;
        r->state = REQ_WAITING;
        loop_timer_start(c->loop, &r->timer, (uint64_t)wait * 1000u);
        return;
    }
    finish(r, res, NULL);
}

/* Frees requests cancelled inside libcurl callbacks. */
static void reap_cb(struct loop_timer *t, void *arg)
{
    struct http_client *c = arg;
    (void)t;
    while (c->reap != NULL) {
        struct http_req *r = c->reap;
        c->reap = r->qnext;
        if (r->easy != NULL)
            loop_remove_easy(c->loop, r->easy);
        req_free(r);
    }
}

/*
 * libcurl refuses curl_multi_remove_handle() from inside its own callbacks
 * (CURLM_RECURSIVE_API_CALL), and a watch subscriber running inside the
 * write callback may well cancel a request. Such cancellations are parked
 * on the reap list and finished by a zero-delay timer; meanwhile the write
 * callback refuses the request's data.
 */
void http_cancel(struct http_client *c, struct http_req *r)
{
    switch (r->state) {
    case REQ_QUEUED:
        dequeue(r);
        req_free(r);
        break;
    case REQ_WAITING:
        req_free(r);
        break;
    case REQ_CRED:
        cred_unlink(r);
        req_free(r);
        break;
    case REQ_RUNNING:
        loop_timer_stop(c->loop, &r->timer);
        if (c->in_cb > 0) {
            /* libcurl refuses multi calls from its callbacks. */
            c->pending--;
            r->state = REQ_REAPING;
            r->qnext = c->reap;
            c->reap = r;
            loop_timer_start(c->loop, &c->reap_timer, 0);
        } else {
            loop_remove_easy(c->loop, r->easy);
            req_free(r);
        }
        break;
    case REQ_REAPING:
        break;
    }
}

void http_set_idle_timeout(struct http_client *c, struct http_req *r,
                           uint64_t ms)
{
    r->idle_timeout_ms = ms;
    if (r->state != REQ_RUNNING || r->on_data == NULL)
        return;
    if (ms == 0) {
        loop_timer_stop(c->loop, &r->timer);
        return;
    }
    uint64_t idle = loop_now_ms() - r->last_rx_ms;
    loop_timer_start(c->loop, &r->timer, idle < ms ? ms - idle : 0);
}

/* --- the client -------------------------------------------------------- */

struct http_client *http_client_new(struct loop *loop, struct kube_conn *conn,
                                    const struct http_opts *o)
{
    struct http_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->conn = conn;
    if (o != NULL)
        c->o = *o;
    /* The defaults of --kube-api-qps and --kube-api-burst: 1,000 new
     * DittoServers converge in 16 s at 500/s against 249 s at client-go's
     * 20/s, and other clients see the apiserver as they do beside a client
     * with no limit at all (defaults_bench.sh, README "Defaults"): the
     * apiserver's priority and fairness is the real limit; this one only
     * bounds a runaway loop. */
    if (c->o.qps == 0)
        c->o.qps = 500;
    if (c->o.burst <= 0)
        c->o.burst = 1000;
    if (c->o.connect_timeout_ms == 0)
        c->o.connect_timeout_ms = 10000;
    if (c->o.request_timeout_ms == 0)
        c->o.request_timeout_ms = 60000;
    if (c->o.max_body == 0)
        c->o.max_body = 256u << 20;
    if (c->o.max_retries == 0)
        c->o.max_retries = 10;
    else if (c->o.max_retries < 0)
        c->o.max_retries = 0;
    if (c->o.max_retry_after_s == 0)
        c->o.max_retry_after_s = 60;
    http_ratelimit_init(&c->rl, c->o.qps, c->o.burst, loop_now_us());
    loop_timer_init(&c->kick, kick_cb, c);
    loop_timer_init(&c->reap_timer, reap_cb, c);
    c->cred_waiter.fn = cred_ready;
    CURLM *m = loop_multi(loop);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, 64L);
    if (c->o.http2)
        curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    return c;
}

void http_client_free(struct http_client *c)
{
    if (c == NULL)
        return;
    reap_cb(&c->reap_timer, c);
    kube_conn_wait_cancel(&c->cred_waiter);
    while (c->all != NULL) {
        struct http_req *r = c->all;
        if (r->state == REQ_RUNNING)
            loop_remove_easy(c->loop, r->easy);
        req_free(r);
    }
    loop_timer_stop(c->loop, &c->kick);
    loop_timer_stop(c->loop, &c->reap_timer);
    free(c);
}

void http_client_set_observer(struct http_client *c, http_observe_fn fn,
                              void *arg)
{
    c->observe = fn;
    c->observe_arg = arg;
}

size_t http_client_pending(const struct http_client *c)
{
    return c->pending;
}

struct loop *http_client_loop(struct http_client *c)
{
    return c->loop;
}

struct kube_conn *http_client_conn(struct http_client *c)
{
    return c->conn;
}

static char *dup_or_null(const char *s, int *fail)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *fail = 1;
    return d;
}

int http_send(struct http_client *c, const struct http_call *call,
              struct http_req **out)
{
    int fail = 0;
    struct http_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return HTTP_ENOMEM;
    r->c = c;
    r->method = call->method;
    r->path = dup_or_null(call->path != NULL ? call->path : "/", &fail);
    r->ctype = dup_or_null(call->content_type, &fail);
    if (call->body != NULL) {
        r->body = malloc(call->body_len + 1);
        if (r->body == NULL) {
            fail = 1;
        } else {
            memcpy(r->body, call->body, call->body_len);
            r->body[call->body_len] = '\0';
        }
        r->body_len = call->body_len;
    }
    if (fail) {
        free(r->path);
        free(r->ctype);
        free(r->body);
        free(r);
        return HTTP_ENOMEM;
    }
    r->on_data = call->on_data;
    r->on_done = call->on_done;
    r->arg = call->arg;
    r->idle_timeout_ms = call->idle_timeout_ms;
    r->timeout_ms = call->timeout_ms;
    r->xfer.done = xfer_done;
    r->start_us = loop_now_us();
    loop_timer_init(&r->timer, req_timer_cb, r);
    r->anext = c->all;
    if (c->all != NULL)
        c->all->aprev = r;
    c->all = r;
    c->pending++;
    enqueue(r);
    if (out != NULL)
        *out = r;
    return 0;
}

struct sync_ctx {
    int done;
    struct http_response *resp;
};

static void sync_done(struct http_response *r, void *arg)
{
    struct sync_ctx *s = arg;
    s->done = 1;
    s->resp = calloc(1, sizeof(*s->resp));
    if (s->resp == NULL)
        return;
    *s->resp = *r;
    /* Move the strings: finish() frees what is left in `r`. */
    r->body = empty_str;
    r->message = empty_str;
    r->reason = empty_str;
}

int http_send_sync(struct http_client *c, const struct http_call *call,
                   struct http_response **out)
{
    struct sync_ctx s = {0, NULL};
    struct http_call copy = *call;
    copy.on_done = sync_done;
    copy.arg = &s;
    if (out != NULL)
        *out = NULL;
    int rc = http_send(c, &copy, NULL);
    if (rc != 0)
        return rc;
    while (!s.done)
        if (loop_run_once(c->loop, -1) != 0)
            loop_run_once(c->loop, 10);
    if (s.resp == NULL)
        return HTTP_ENOMEM;
    rc = s.resp->result;
    if (out != NULL)
        *out = s.resp;
    else
        http_response_free(s.resp);
    return rc;
}
