/*
 * test_queue: the work queue on a real loop: deduplication, one dispatch
 * per key at a time with the dirty re-queue, HIGH before LOW and FIFO,
 * promotion, the workers limit, delayed adds (earliest wins), per-key
 * backoff and forget, the token bucket, pause/resume, stats, the
 * observer, freeing of idle keys, and a run over many keys.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "queue.h"
#include "testlib.h"

#define MAX_REC 20000

/* What the work function saw. */
struct rec {
    struct loop *loop;
    size_t n;
    char *keys[MAX_REC];
    uint64_t at_ms[MAX_REC];
    int auto_done;    /* call queue_done before returning */
    int readd;        /* re-add the key (HIGH) before the synchronous done */
    int max_readd;    /* how many times */
    unsigned busy_us; /* work spins this long (real time) first */
};

static void rec_reset(struct rec *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->keys[i]);
    r->n = 0;
    r->auto_done = 0;
    r->readd = 0;
    r->busy_us = 0;
}

static void work(struct queue *q, const char *key, void *arg)
{
    struct rec *r = arg;
    for (uint64_t t0 = loop_now_us(); loop_now_us() - t0 < r->busy_us;)
        ;
    if (r->n < MAX_REC) {
        r->keys[r->n] = strdup(key);
        r->at_ms[r->n] = loop_now_ms();
        r->n++;
    }
    if (r->readd && r->max_readd > 0) {
        r->max_readd--;
        queue_add(q, key, QUEUE_HIGH);
    }
    if (r->auto_done)
        queue_done(q, key);
}

/* The number of dispatches of `key` so far. */
static int count(const struct rec *r, const char *key)
{
    int c = 0;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->keys[i], key) == 0)
            c++;
    return c;
}

/* Runs the loop for `ms` milliseconds. */
static void run_for(struct loop *l, unsigned ms)
{
    uint64_t end = loop_now_ms() + ms;
    for (uint64_t now = loop_now_ms(); now < end; now = loop_now_ms())
        loop_run_once(l, (int)(end - now));
}

/* Runs the loop until r->n >= n or `ms` pass; returns r->n >= n. */
static int run_until(struct loop *l, struct rec *r, size_t n, unsigned ms)
{
    uint64_t end = loop_now_ms() + ms;
    while (r->n < n) {
        uint64_t now = loop_now_ms();
        if (now >= end)
            return 0;
        loop_run_once(l, (int)(end - now));
    }
    return 1;
}

/* The dispatch order as "a,b,c". */
static const char *order(const struct rec *r)
{
    static char buf[512];
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->n && off < sizeof(buf) - 64; i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s",
                                i ? "," : "", r->keys[i]);
    return buf;
}

static void test_dedup(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, NULL, work, r);
    struct queue_stats st;
    CHECK(q != NULL, "queue_new with default options");
    CHECK(queue_add(q, "a", QUEUE_HIGH) == 0 &&
              queue_add(q, "a", QUEUE_HIGH) == 0 &&
              queue_add(q, "b", QUEUE_LOW) == 0 &&
              queue_add(q, "a", QUEUE_LOW) == 0,
          "adds return 0");
    CHECK_INT_EQ(queue_depth(q), 2, "pending keys are deduplicated");
    CHECK_INT_EQ(r->n, 0, "nothing dispatched inside queue_add");
    CHECK(queue_add(q, NULL, QUEUE_HIGH) == -EINVAL &&
              queue_add_after(q, NULL, 5, QUEUE_HIGH) == -EINVAL &&
              queue_add_rate_limited(q, NULL) == -EINVAL,
          "a NULL key is -EINVAL");
    loop_run_once(l, 100);
    CHECK_STR_EQ(order(r), "a,b", "one iteration dispatches both, once each");
    CHECK_INT_EQ(queue_in_flight(q), 2, "two in flight");
    CHECK_INT_EQ(queue_depth(q), 0, "none queued");
    queue_get_stats(q, &st);
    CHECK(st.adds == 2 && st.retries == 0, "stats: 2 adds (got %lu), 0 retries",
          st.adds);
    queue_done(q, "a");
    queue_done(q, "b");
    queue_done(q, "b");
    queue_done(q, "unknown");
    CHECK_INT_EQ(queue_in_flight(q), 0,
                 "done ends them; repeated/unknown done "
                 "are no-ops");
    CHECK_INT_EQ(queue_tracked(q), 0, "idle keys are freed");
    queue_free(q);
    queue_free(NULL);
    rec_reset(r);
}

static void test_in_flight(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, NULL, work, r);
    queue_add(q, "a", QUEUE_LOW);
    loop_run_once(l, 100);
    CHECK(r->n == 1 && queue_in_flight(q) == 1, "a dispatched");
    queue_add(q, "a", QUEUE_LOW);
    queue_add(q, "a", QUEUE_HIGH);
    CHECK_INT_EQ(queue_depth(q), 0, "re-added while in flight: not queued");
    queue_add(q, "x", QUEUE_LOW);
    run_for(l, 20);
    CHECK_INT_EQ(count(r, "a"), 1, "never dispatched twice at once");
    CHECK_INT_EQ(count(r, "x"), 1, "other keys still flow");
    /* x (LOW) is in flight; add y LOW then finish a: the dirty a went
     * HIGH, so it comes before y. */
    queue_pause(q);
    queue_add(q, "y", QUEUE_LOW);
    queue_done(q, "a");
    CHECK_INT_EQ(queue_depth(q), 2, "done queues the dirty key again");
    queue_resume(q);
    loop_run_once(l, 100);
    CHECK_STR_EQ(order(r), "a,x,a,y",
                 "the dirty key kept its promotion to HIGH");
    queue_done(q, "a");
    queue_done(q, "x");
    queue_done(q, "y");
    CHECK_INT_EQ(queue_tracked(q), 0, "all idle and freed");
    queue_free(q);
    rec_reset(r);
}

static void test_priority(struct loop *l, struct rec *r)
{
    struct queue *q =
        queue_new(l, &(struct queue_opts){.workers = 100}, work, r);
    queue_pause(q);
    queue_add(q, "l1", QUEUE_LOW);
    queue_add(q, "h1", QUEUE_HIGH);
    queue_add(q, "l2", QUEUE_LOW);
    queue_add(q, "l3", QUEUE_LOW);
    queue_add(q, "h2", QUEUE_HIGH);
    queue_add(q, "l2", QUEUE_HIGH); /* promoted to the tail of HIGH */
    queue_add(q, "h1", QUEUE_LOW);  /* no demotion, no move */
    queue_add(q, "h3", QUEUE_HIGH);
    run_for(l, 20);
    CHECK_INT_EQ(r->n, 0, "nothing dispatched while paused");
    CHECK_INT_EQ(queue_depth(q), 6, "six keys queued");
    queue_resume(q);
    loop_run_once(l, 100);
    CHECK_STR_EQ(order(r), "h1,h2,l2,h3,l1,l3",
                 "HIGH before LOW, FIFO within a level, promotion");
    for (size_t i = 0; i < r->n; i++)
        queue_done(q, r->keys[i]);
    rec_reset(r);

    /* FIFO over many keys of one level. */
    char key[32];
    queue_pause(q);
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        queue_add(q, key, QUEUE_LOW);
    }
    queue_resume(q);
    loop_run_once(l, 100);
    int fifo = r->n == 50;
    for (size_t i = 0; fifo && i < r->n; i++) {
        snprintf(key, sizeof(key), "k%02zu", i);
        fifo = strcmp(r->keys[i], key) == 0;
    }
    CHECK(fifo, "50 LOW keys dispatched in add order");
    for (size_t i = 0; i < r->n; i++)
        queue_done(q, r->keys[i]);
    queue_free(q);
    rec_reset(r);
}

static void test_workers(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, &(struct queue_opts){.workers = 2}, work, r);
    queue_add(q, "a", QUEUE_HIGH);
    queue_add(q, "b", QUEUE_HIGH);
    queue_add(q, "c", QUEUE_HIGH);
    queue_add(q, "d", QUEUE_LOW);
    queue_add(q, "e", QUEUE_HIGH);
    run_for(l, 20);
    CHECK(r->n == 2 && queue_in_flight(q) == 2 && queue_depth(q) == 3,
          "workers=2: two in flight, three queued (n=%zu)", r->n);
    queue_done(q, "b");
    run_for(l, 10);
    CHECK_STR_EQ(order(r), "a,b,c", "a freed worker takes the next key");
    queue_done(q, "a");
    queue_done(q, "c");
    run_for(l, 10);
    CHECK_STR_EQ(order(r), "a,b,c,e,d", "then HIGH e before LOW d");
    queue_done(q, "d");
    queue_done(q, "e");
    queue_free(q);
    rec_reset(r);

    /* Default: 4 workers. */
    q = queue_new(l, NULL, work, r);
    for (int i = 0; i < 6; i++) {
        char key[8];
        snprintf(key, sizeof(key), "w%d", i);
        queue_add(q, key, QUEUE_HIGH);
    }
    run_for(l, 10);
    CHECK_INT_EQ(queue_in_flight(q), 4, "default workers: 4");
    queue_free(q); /* frees keys in flight and queued */
    rec_reset(r);
}

static void test_sync_done(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, &(struct queue_opts){.workers = 1}, work, r);
    r->auto_done = 1;
    r->readd = 1;
    r->max_readd = 3;
    queue_add(q, "a", QUEUE_HIGH);
    loop_run_once(l, 100);
    CHECK_INT_EQ(r->n, 1,
                 "a key re-added and done inside the work "
                 "function waits for the next iteration");
    CHECK_INT_EQ(queue_depth(q), 1, "and is queued");
    run_for(l, 20);
    CHECK_INT_EQ(count(r, "a"), 4, "dispatched once per re-add");
    CHECK_INT_EQ(queue_tracked(q), 0, "then idle and freed");
    queue_free(q);
    rec_reset(r);
}

/* Work that finishes at once but takes its time (a converged reconcile):
 * a pass stops after a few milliseconds and the loop gets its turn. */
static void test_pass_bound(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, NULL, work, r);
    r->auto_done = 1;
    r->busy_us = 1000;
    char key[16];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        queue_add(q, key, QUEUE_LOW);
    }
    loop_run_once(l, 100);
    size_t n1 = r->n;
    CHECK(n1 >= 1 && n1 < 40,
          "40 keys of 1 ms each: one pass runs %zu of them, not all", n1);
    queue_add(q, "urgent", QUEUE_HIGH);
    loop_run_once(l, 100);
    CHECK(r->n > n1, "... and the next pass goes on (%zu)", r->n);
    int first = -1;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->keys[i], "urgent") == 0)
            first = (int)i;
    CHECK(first >= 1 && (size_t)first < 40,
          "a HIGH key added between passes is served before the rest "
          "(dispatch %d)",
          first + 1);
    run_for(l, test_ms(500));
    CHECK_INT_EQ(r->n, 41, "all 41 dispatched in the end");
    queue_free(q);
    rec_reset(r);
}

static void test_add_after(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, NULL, work, r);
    r->auto_done = 1;
    uint64_t t0 = loop_now_ms();
    queue_add_after(q, "a", 400, QUEUE_HIGH);
    queue_add_after(q, "a", 30, QUEUE_LOW);
    queue_add_after(q, "b", 30, QUEUE_HIGH);
    queue_add_after(q, "b", 400, QUEUE_HIGH);
    CHECK(queue_delayed(q) == 2 && queue_depth(q) == 0,
          "two delayed keys, none queued");
    loop_run_once(l, 0);
    CHECK_INT_EQ(r->n, 0, "not dispatched before the delay");
    int ok = run_until(l, r, 2, test_ms(500));
    CHECK(ok && r->at_ms[0] >= t0 + 30 && r->at_ms[1] >= t0 + 30,
          "both dispatched after >= 30 ms (%llu, %llu ms)",
          (unsigned long long)(r->at_ms[0] - t0),
          (unsigned long long)(r->at_ms[1] - t0));
    CHECK(ok && r->at_ms[1] - t0 < 400, "the earliest delay won");
    CHECK_STR_EQ(order(r), "a,b", "equal due times: add order");
    while (loop_now_ms() < t0 + 600)
        loop_run_once(l, (int)(t0 + 600 - loop_now_ms()));
    CHECK(count(r, "a") == 1 && count(r, "b") == 1,
          "the later delayed adds were dropped (%zu dispatches)", r->n);
    CHECK(queue_delayed(q) == 0 && queue_tracked(q) == 0,
          "nothing delayed or tracked afterwards");
    rec_reset(r);

    /* The kept delayed add takes the higher priority. */
    queue_pause(q);
    queue_add(q, "x", QUEUE_LOW);
    queue_add_after(q, "k", 10, QUEUE_LOW);
    queue_add_after(q, "k", 50, QUEUE_HIGH);
    uint64_t end = loop_now_ms() + test_ms(500);
    while (queue_depth(q) < 2 && loop_now_ms() < end)
        loop_run_once(l, 10);
    CHECK(queue_depth(q) == 2 && queue_delayed(q) == 0,
          "the delayed add is queued when due, even while paused");
    queue_resume(q);
    loop_run_once(l, 100);
    CHECK_STR_EQ(order(r), "k,x", "and it is HIGH");
    rec_reset(r);

    /* A delayed add of a pending key: deduplicated when it fires if
     * still pending, a second run if the first one is over. */
    r->auto_done = 0;
    queue_add(q, "p", QUEUE_HIGH);
    queue_add_after(q, "p", 20, QUEUE_HIGH);
    loop_run_once(l, 100);
    CHECK_INT_EQ(count(r, "p"), 1, "p dispatched at once");
    queue_done(q, "p");
    run_for(l, 60);
    CHECK_INT_EQ(count(r, "p"), 2, "and again when its delayed add fires");
    queue_done(q, "p");
    /* Zero delay is a plain add. */
    queue_add_after(q, "z", 0, QUEUE_HIGH);
    CHECK(queue_depth(q) == 1 && queue_delayed(q) == 0,
          "add_after with delay 0 queues at once");
    loop_run_once(l, 100);
    queue_done(q, "z");
    /* Free with delayed keys left. */
    queue_add_after(q, "later", 100000, QUEUE_LOW);
    queue_free(q);
    rec_reset(r);
}

static void test_backoff(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, &(struct queue_opts){.qps = -1}, work, r);
    uint64_t want = 5;
    int ok = 1;
    for (unsigned i = 0; i < 25; i++) {
        uint64_t got = queue_next_backoff_ms(q, "a");
        if (got != want) {
            TEST_NOTE("failure %u: backoff %llu ms, expected %llu", i,
                      (unsigned long long)got, (unsigned long long)want);
            ok = 0;
        }
        queue_add_rate_limited(q, "a");
        if (queue_failures(q, "a") != i + 1)
            ok = 0;
        want = want * 2 > 1000000 ? 1000000 : want * 2;
    }
    CHECK(ok, "backoff 5, 10, 20, ... ms capped at 1000 s; failures count");
    CHECK_INT_EQ(queue_next_backoff_ms(q, "a"), 1000000, "stays capped");
    CHECK(queue_delayed(q) == 1 && queue_depth(q) == 0,
          "the retries are one delayed add");
    struct queue_stats st;
    queue_get_stats(q, &st);
    CHECK(st.retries == 25 && st.adds == 0, "stats: 25 retries, 0 adds yet");
    CHECK(queue_failures(q, "b") == 0 && queue_next_backoff_ms(q, "b") == 5,
          "an unknown key has no failures");
    CHECK(run_until(l, r, 1, test_ms(200)), "the 5 ms retry is dispatched");
    queue_done(q, "a");
    CHECK_INT_EQ(queue_tracked(q), 1, "a key with failures is kept");
    queue_forget(q, "a");
    queue_forget(q, "unknown");
    CHECK(queue_failures(q, "a") == 0 && queue_next_backoff_ms(q, "a") == 5 &&
              queue_tracked(q) == 0,
          "forget resets the failures and frees the idle key");
    rec_reset(r);
    queue_free(q);

    /* Custom base and cap; the delay is really waited. */
    q = queue_new(l,
                  &(struct queue_opts){
                      .base_delay_ms = 40, .max_delay_ms = 100, .qps = -1},
                  work, r);
    r->auto_done = 1;
    CHECK(queue_next_backoff_ms(q, "k") == 40, "base 40");
    uint64_t t0 = loop_now_ms();
    queue_add_rate_limited(q, "k");
    ok = run_until(l, r, 1, test_ms(500));
    CHECK(ok && r->at_ms[0] >= t0 + 40, "retried after >= 40 ms (%llu)",
          (unsigned long long)(r->at_ms[0] - t0));
    queue_add_rate_limited(q, "k");
    queue_add_rate_limited(q, "k");
    CHECK(queue_next_backoff_ms(q, "k") == 100, "capped at 100 (3 failures)");
    queue_free(q);
    rec_reset(r);
}

static void test_bucket(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(
        l, &(struct queue_opts){.base_delay_ms = 1, .qps = 10, .burst = 3},
        work, r);
    r->auto_done = 1;
    uint64_t t0 = loop_now_ms();
    char key[8];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        queue_add_rate_limited(q, key);
    }
    int ok = run_until(l, r, 6, test_ms(2000));
    CHECK(ok, "all six dispatched");
    CHECK_STR_EQ(order(r), "k0,k1,k2,k3,k4,k5", "in order");
    if (r->n == 6) {
        unsigned long d[6];
        for (int i = 0; i < 6; i++)
            d[i] = (unsigned long)(r->at_ms[i] - t0);
        TEST_NOTE("dispatched after %lu %lu %lu %lu %lu %lu ms", d[0], d[1],
                  d[2], d[3], d[4], d[5]);
        CHECK(d[2] < test_ms(60), "the burst of 3 passes at once");
        CHECK(d[3] >= 99 && d[4] >= 199 && d[5] >= 299,
              "then 10 per second: 100, 200, 300 ms");
        CHECK(d[5] < 300 + test_ms(150), "and not much later");
    }
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        queue_forget(q, key);
    }
    CHECK_INT_EQ(queue_tracked(q), 0, "forgotten keys freed");
    queue_free(q);
    rec_reset(r);
}

struct obs {
    int n[2];
    double last[2];
};

static void observe(int kind, double seconds, void *arg)
{
    struct obs *o = arg;
    if (kind == 0 || kind == 1) {
        o->n[kind]++;
        o->last[kind] = seconds;
    }
}

static void test_observer(struct loop *l, struct rec *r)
{
    struct obs o = {{0, 0}, {0, 0}};
    struct queue *q = queue_new(l, NULL, work, r);
    queue_set_observer(q, observe, &o);
    queue_pause(q);
    queue_add(q, "a", QUEUE_HIGH);
    run_for(l, 30);
    queue_resume(q);
    loop_run_once(l, 100);
    CHECK(o.n[0] == 1 && o.last[0] >= 0.029 && o.last[0] < 10,
          "queue duration observed (%.3f s)", o.last[0]);
    run_for(l, 20);
    queue_done(q, "a");
    CHECK(o.n[1] == 1 && o.last[1] >= 0.019 && o.last[1] < 10,
          "work duration observed (%.3f s)", o.last[1]);
    queue_set_observer(q, NULL, NULL);
    queue_add(q, "b", QUEUE_HIGH);
    loop_run_once(l, 100);
    queue_done(q, "b");
    CHECK(o.n[0] == 1 && o.n[1] == 1, "observer removed");
    queue_free(q);
    rec_reset(r);
}

static void test_pause(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, NULL, work, r);
    queue_add(q, "a", QUEUE_HIGH);
    loop_run_once(l, 100);
    queue_pause(q);
    queue_add(q, "b", QUEUE_HIGH);
    queue_add(q, "a", QUEUE_HIGH);
    run_for(l, 20);
    CHECK_INT_EQ(r->n, 1, "paused: nothing new dispatched");
    queue_done(q, "a");
    CHECK(queue_in_flight(q) == 0 && queue_depth(q) == 2,
          "done works while paused; the dirty key is queued");
    run_for(l, 20);
    CHECK_INT_EQ(r->n, 1, "still nothing dispatched");
    queue_resume(q);
    queue_resume(q);
    loop_run_once(l, 100);
    CHECK_STR_EQ(order(r), "a,b,a", "resume dispatches the kept adds");
    queue_done(q, "a");
    queue_done(q, "b");
    queue_free(q);
    rec_reset(r);
}

static void test_many(struct loop *l, struct rec *r)
{
    struct queue *q = queue_new(l, &(struct queue_opts){.workers = 8}, work, r);
    r->auto_done = 1;
    char key[32];
    int n = 10000;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "ns-%d/name-%d", i % 7, i);
        queue_add(q, key, i % 3 ? QUEUE_LOW : QUEUE_HIGH);
    }
    CHECK_INT_EQ(queue_tracked(q), n, "10000 keys tracked");
    CHECK(run_until(l, r, (size_t)n, test_ms(5000)), "all processed");
    int once = 1;
    /* The first n/3 (rounded up) dispatches are the HIGH keys. */
    for (int i = 0; i < (n + 2) / 3 && once; i++) {
        snprintf(key, sizeof(key), "ns-%d/name-%d", (3 * i) % 7, 3 * i);
        once = strcmp(r->keys[i], key) == 0;
    }
    CHECK(once, "HIGH keys first, in add order");
    run_for(l, 10);
    CHECK(r->n == (size_t)n && queue_tracked(q) == 0 && queue_depth(q) == 0,
          "each exactly once, then nothing tracked");
    queue_free(q);
    rec_reset(r);
}

int main(void)
{
    struct loop *l = loop_new();
    struct rec *r = calloc(1, sizeof(*r));
    if (l == NULL || r == NULL)
        return 1;
    r->loop = l;
    test_dedup(l, r);
    test_in_flight(l, r);
    test_priority(l, r);
    test_workers(l, r);
    test_sync_done(l, r);
    test_pass_bound(l, r);
    test_add_after(l, r);
    test_backoff(l, r);
    test_bucket(l, r);
    test_observer(l, r);
    test_pause(l, r);
    test_many(l, r);
    free(r);
    loop_free(l);
    return TEST_SUMMARY();
}
