/*
 * test_http: the parts of the HTTP client that need no server: the
 * token-bucket rate limiter (burst, steady rate, waits, unlimited),
 * Retry-After parsing (seconds and HTTP-date) and the mapping of HTTP
 * statuses to typed results; and the event loop's timers and fds.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "loop.h"
#include "testlib.h"

static void test_ratelimit(void)
{
    struct http_ratelimit rl;
    uint64_t t = 5000000;
    http_ratelimit_init(&rl, 20, 30, t);
    int taken = 0;
    while (http_ratelimit_take(&rl, t) == 0)
        taken++;
    CHECK_INT_EQ(taken, 30, "a full bucket gives the burst at once");
    uint64_t w = http_ratelimit_take(&rl, t);
    CHECK(w >= 49000 && w <= 50000, "then one token per 50 ms (%llu us)",
          (unsigned long long)w);
    CHECK(http_ratelimit_take(&rl, t + w) == 0, "available after the wait");
    /* Over 10 s at most burst + 10 * qps requests. */
    http_ratelimit_init(&rl, 20, 30, t);
    int n = 0;
    for (uint64_t now = t; now < t + 10000000; now += 1000)
        while (http_ratelimit_take(&rl, now) == 0)
            n++;
    CHECK(n >= 229 && n <= 231, "10 s at 20 qps burst 30: %d requests", n);
    /* Idle time refills to the burst, not beyond. */
    t += 60000000;
    taken = 0;
    while (http_ratelimit_take(&rl, t) == 0)
        taken++;
    CHECK_INT_EQ(taken, 30, "idle refills up to the burst only");
    http_ratelimit_init(&rl, -1, 0, t);
    int all = 1;
    for (int i = 0; i < 100000; i++)
        all &= http_ratelimit_take(&rl, t) == 0;
    CHECK(all, "negative qps: unlimited");
    /* Time going backwards does not mint tokens. */
    http_ratelimit_init(&rl, 1, 1, t);
    http_ratelimit_take(&rl, t);
    CHECK(http_ratelimit_take(&rl, t - 5000000) > 0, "clock skew safe");
}

static void test_retry_after(void)
{
    long long now = 1700000000;
    CHECK_INT_EQ(http_parse_retry_after("3", now), 3, "delta seconds");
    CHECK_INT_EQ(http_parse_retry_after(" 10 \r\n", now), 10,
                 "whitespace and CRLF");
    CHECK_INT_EQ(http_parse_retry_after("abc", now), 0, "garbage");
    CHECK_INT_EQ(http_parse_retry_after("5x", now), 0, "trailing junk");
    CHECK_INT_EQ(http_parse_retry_after("999999999", now), 86400,
                 "capped at a day");
    char date[64];
    time_t future = (time_t)(now + 7);
    struct tm tm;
    gmtime_r(&future, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    CHECK_INT_EQ(http_parse_retry_after(date, now), 7, "HTTP-date");
    CHECK_INT_EQ(http_parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT", now),
                 0, "a date in the past");
}

static void test_status(void)
{
    struct {
        long status;
        const char *reason;
        int result;
        const char *word;
    } cases[] = {
        {200, NULL, HTTP_OK, "ok"},
        {201, NULL, HTTP_OK, "ok"},
        {400, NULL, HTTP_EBADREQUEST, "bad_request"},
        {401, NULL, HTTP_EUNAUTHORIZED, "unauthorized"},
        {403, NULL, HTTP_EFORBIDDEN, "forbidden"},
        {404, NULL, HTTP_ENOTFOUND, "not_found"},
        {409, "Conflict", HTTP_ECONFLICT, "conflict"},
        {409, "AlreadyExists", HTTP_EEXISTS, "already_exists"},
        {410, "Expired", HTTP_EGONE, "gone"},
        {415, NULL, HTTP_EHTTP, "http_error"},
        {422, "Invalid", HTTP_EINVALID, "invalid"},
        {429, NULL, HTTP_ETOOMANY, "too_many_requests"},
        {500, NULL, HTTP_ESERVER, "server_error"},
        {504, NULL, HTTP_ESERVER, "server_error"},
        {0, NULL, HTTP_ENETWORK, "network"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = http_result_from_status(cases[i].status, cases[i].reason);
        CHECK(r == cases[i].result &&
                  strcmp(http_strerror(r), cases[i].word) == 0,
              "HTTP %ld %s -> %s", cases[i].status,
              cases[i].reason ? cases[i].reason : "", cases[i].word);
    }
    CHECK_STR_EQ(http_method_name(HTTP_PATCH), "PATCH", "method names");
    CHECK_STR_EQ(http_strerror(HTTP_ETIMEOUT), "timeout", "timeout word");
}

struct tstate {
    struct loop *l;
    char order[32];
    int n;
    int fired_self;
    int fd_calls;
};

static struct tstate ts;

/* A clock that stands still at frozen_us (loop_set_clock). */
static uint64_t frozen_us;
static uint64_t frozen_clock(void *arg)
{
    (void)arg;
    return frozen_us;
}

static void mark(struct loop_timer *t, void *arg)
{
    (void)t;
    ts.order[ts.n++] = *(const char *)arg;
    ts.order[ts.n] = '\0';
}

static void self_restart(struct loop_timer *t, void *arg)
{
    (void)arg;
    if (++ts.fired_self < 3)
        loop_timer_start(ts.l, t, 0);
}

static void on_fd(int fd, short revents, void *arg)
{
    char b[16];
    (void)arg;
    if (revents & POLLIN)
        (void)!read(fd, b, sizeof(b));
    ts.fd_calls++;
}

static void test_loop(void)
{
    struct loop *l = loop_new();
    struct loop_timer a, b, c, d, self;
    memset(&ts, 0, sizeof(ts));
    ts.l = l;
    loop_timer_init(&a, mark, "a");
    loop_timer_init(&b, mark, "b");
    loop_timer_init(&c, mark, "c");
    loop_timer_init(&d, mark, "d");
    /* Before the start: a slow run (valgrind) must not shorten the wait. */
    uint64_t t0 = loop_now_ms();
    loop_timer_start(l, &c, 30);
    loop_timer_start(l, &a, 0);
    loop_timer_start(l, &b, 10);
    loop_timer_start(l, &d, 20);
    loop_timer_stop(l, &d);
    CHECK(!loop_timer_active(&d) && loop_timer_active(&c), "stop/active");
    while (loop_timer_active(&c))
        loop_run_once(l, -1);
    uint64_t el = loop_now_ms() - t0;
    CHECK_STR_EQ(ts.order, "abc", "timers fire in due order, stopped one not");
    CHECK(el >= 29 && el < 10000, "waited for the last one (%llu ms)",
          (unsigned long long)el);

    /* Many timers: heap order holds. */
    static struct loop_timer many[200];
    static char ids[200];
    ts.n = 0;
    for (int i = 0; i < 200; i++) {
        ids[i] = (char)('A' + (i * 7) % 26);
        loop_timer_init(&many[i], mark, &ids[i]);
    }
    /* Started at one instant (a frozen clock): under valgrind on a busy
     * machine the starts themselves take milliseconds, which would make
     * the due order differ from the delays' order. */
    frozen_us = loop_real_us();
    loop_set_clock(frozen_clock, NULL);
    for (int i = 0; i < 26; i++)
        loop_timer_start(l, &many[i], (uint64_t)((i * 7) % 26));
    for (int i = 0; i < 26; i += 3)
        loop_timer_stop(l, &many[i]);
    loop_set_clock(NULL, NULL);
    int active = 1;
    while (active) {
        loop_run_once(l, 5);
        active = 0;
        for (int i = 0; i < 26; i++)
            active |= loop_timer_active(&many[i]);
    }
    int sorted = 1;
    for (int i = 1; i < ts.n; i++)
        sorted &= ts.order[i - 1] <= ts.order[i];
    CHECK(sorted && ts.n == 17, "heap order with removals (%s)", ts.order);

    /* A zero-delay timer restarting itself does not starve the loop. */
    loop_timer_init(&self, self_restart, NULL);
    loop_timer_start(l, &self, 0);
    loop_run_once(l, 0);
    CHECK_INT_EQ(ts.fired_self, 1, "one firing per iteration");
    loop_run_once(l, 0);
    loop_run_once(l, 0);
    CHECK_INT_EQ(ts.fired_self, 3, "then again at the next iterations");

    /* Extra fds. */
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    CHECK(loop_fd_add(l, p[0], POLLIN, on_fd, NULL) == 0, "fd added");
    CHECK(loop_fd_add(l, p[0], POLLIN, on_fd, NULL) < 0, "twice refused");
    (void)!write(p[1], "x", 1);
    t0 = loop_now_ms();
    while (ts.fd_calls == 0 && loop_now_ms() - t0 < 2000)
        loop_run_once(l, 100);
    CHECK_INT_EQ(ts.fd_calls, 1, "fd callback on readable");
    loop_fd_del(l, p[0]);
    (void)!write(p[1], "x", 1);
    loop_run_once(l, 20);
    CHECK_INT_EQ(ts.fd_calls, 1, "no callback after removal");
    close(p[0]);
    close(p[1]);

    /* An idle loop sleeps until its timeout; wakeup ends the wait. */
    t0 = loop_now_ms();
    loop_run_once(l, 200);
    el = loop_now_ms() - t0;
    CHECK(el >= 190 && el < 10000, "idle wait honours the timeout (%llu ms)",
          (unsigned long long)el);
    loop_wakeup(l);
    t0 = loop_now_ms();
    loop_run_once(l, 5000);
    CHECK(loop_now_ms() - t0 < 4000, "wakeup ends the wait");
    loop_free(l);
}

int main(void)
{
    test_ratelimit();
    test_retry_after();
    test_status();
    test_loop();
    return TEST_SUMMARY();
}
