/*
 * test_watch: the pieces of the informer that need no server: the
 * incremental NDJSON splitter (a stream split at every byte boundary and
 * fed byte by byte gives the same lines; a line over the maximum is an
 * error; nothing is scanned twice), and the jittered exponential backoff.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "watch.h"
#include "testlib.h"

struct collect {
    char buf[8192];
    size_t len;
    int lines;
    int stop_after; /* return -7 at this line (0: never) */
};

static int on_line(const char *line, size_t len, void *arg)
{
    struct collect *c = arg;
    if (c->len + len + 1 < sizeof(c->buf)) {
        memcpy(c->buf + c->len, line, len);
        c->len += len;
        c->buf[c->len++] = '|';
        c->buf[c->len] = '\0';
    }
    c->lines++;
    if (c->stop_after && c->lines == c->stop_after)
        return -7;
    return 0;
}

static const char *STREAM =
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n"
    "{\"type\":\"MODIFIED\",\"object\":{\"s\":\"x\\ny\"}}\r\n"
    "\n"
    "{\"type\":\"BOOKMARK\",\"object\":{}}\n"
    "{\"type\":\"DELETED\",\"object\":{\"n\":1}}\n";

static const char *EXPECT =
    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}|"
    "{\"type\":\"MODIFIED\",\"object\":{\"s\":\"x\\ny\"}}|"
    "{\"type\":\"BOOKMARK\",\"object\":{}}|"
    "{\"type\":\"DELETED\",\"object\":{\"n\":1}}|";

static void test_lines(void)
{
    size_t n = strlen(STREAM);
    int bad = 0;
    /* Every split into two chunks, and every split into three. */
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            struct watch_lines s;
            struct collect c;
            memset(&c, 0, sizeof(c));
            watch_lines_init(&s, 1024);
            int rc = watch_lines_feed(&s, STREAM, i, on_line, &c);
            rc |= watch_lines_feed(&s, STREAM + i, j - i, on_line, &c);
            rc |= watch_lines_feed(&s, STREAM + j, n - j, on_line, &c);
            if (rc != 0 || strcmp(c.buf, EXPECT) != 0 || c.lines != 4 ||
                watch_lines_pending(&s) != 0) {
                if (bad++ < 3)
                    printf("# split %zu/%zu: got %s\n", i, j, c.buf);
            }
            watch_lines_free(&s);
        }
    }
    CHECK_INT_EQ(bad, 0, "every two- and three-way split gives the 4 events");

    struct watch_lines s;
    struct collect c;
    memset(&c, 0, sizeof(c));
    watch_lines_init(&s, 1024);
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        rc |= watch_lines_feed(&s, STREAM + i, 1, on_line, &c);
    CHECK(rc == 0 && strcmp(c.buf, EXPECT) == 0, "byte by byte");
    watch_lines_free(&s);

    /* A partial line is kept until its newline. */
    memset(&c, 0, sizeof(c));
    watch_lines_init(&s, 1024);
    watch_lines_feed(&s, "{\"a\":1", 6, on_line, &c);
    CHECK(c.lines == 0 && watch_lines_pending(&s) == 6,
          "partial line buffered, not emitted");
    watch_lines_reset(&s);
    watch_lines_feed(&s, "{\"b\":2}\n", 8, on_line, &c);
    CHECK(c.lines == 1 && strcmp(c.buf, "{\"b\":2}|") == 0,
          "reset drops the partial line (stream cut mid-event)");
    watch_lines_free(&s);

    /* Maximum event size: a line longer than max fails, whole or split. */
    char big[200];
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 1] = '\n';
    memset(&c, 0, sizeof(c));
    watch_lines_init(&s, 100);
    CHECK_INT_EQ(watch_lines_feed(&s, big, sizeof(big), on_line, &c),
                 WATCH_LINES_TOOBIG, "a complete line over the maximum");
    watch_lines_free(&s);
    watch_lines_init(&s, 100);
    rc = 0;
    for (size_t i = 0; i < sizeof(big) && rc == 0; i += 7)
        rc = watch_lines_feed(&s, big + i,
                              i + 7 <= sizeof(big) ? 7 : sizeof(big) - i,
                              on_line, &c);
    CHECK(rc == WATCH_LINES_TOOBIG && c.lines == 0 &&
              watch_lines_pending(&s) == 0,
          "an endless line fails in pieces, memory released");
    watch_lines_free(&s);
    watch_lines_init(&s, 100);
    rc = watch_lines_feed(&s, big, 100, on_line, &c);
    CHECK(rc == 0 && watch_lines_pending(&s) == 100,
          "exactly the maximum is allowed");
    rc = watch_lines_feed(&s, "\n", 1, on_line, &c);
    CHECK(rc == 0 && c.lines == 1, "and emitted at its newline");
    watch_lines_free(&s);

    /* The callback's error stops feeding and is returned. */
    memset(&c, 0, sizeof(c));
    c.stop_after = 2;
    watch_lines_init(&s, 1024);
    rc = watch_lines_feed(&s, STREAM, n, on_line, &c);
    CHECK(rc == -7 && c.lines == 2, "callback error stops the feed");
    watch_lines_free(&s);
}

static void test_backoff(void)
{
    struct watch_backoff b;
    watch_backoff_init(&b, 800, 30000, 120000);
    uint64_t expect[] = {800,   1600,  3200,  6400, 12800,
                         25600, 30000, 30000, 30000};
    uint64_t now = 1000000;
    int ok = 1;
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        uint64_t d = watch_backoff_next(&b, now, 0.0);
        if (d != expect[i]) {
            printf("# step %zu: %llu != %llu\n", i, (unsigned long long)d,
                   (unsigned long long)expect[i]);
            ok = 0;
        }
        now += d;
    }
    CHECK(ok, "800 ms doubling, capped at 30 s");
    uint64_t d = watch_backoff_next(&b, now, 0.999);
    CHECK(d >= 30000 && d <= 34500, "jitter at most 15%% (%llu)",
          (unsigned long long)d);
    d = watch_backoff_next(&b, now + 120001, 0.5);
    CHECK(d >= 800 && d < 1000, "reset after 2 min without failure (%llu)",
          (unsigned long long)d);
    d = watch_backoff_next(&b, now + 120001 + 1000, 0.0);
    CHECK_INT_EQ(d, 1600, "doubling again after the reset");
    /* Jitter spreads: 1000 draws over [800, 920). */
    watch_backoff_init(&b, 800, 30000, 120000);
    uint64_t lo = ~0ull, hi = 0;
    for (int i = 0; i < 1000; i++) {
        b.cur_ms = 0;
        d = watch_backoff_next(&b, now, (double)i / 1000.0);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    CHECK(lo == 800 && hi >= 910 && hi < 920, "jitter range [%llu, %llu]",
          (unsigned long long)lo, (unsigned long long)hi);
}

int main(void)
{
    test_lines();
    test_backoff();
    return TEST_SUMMARY();
}
