/*
 * test_metrics: the registry and the text exposition format: exact output
 * for counters, gauges and histograms with and without labels, label and
 * help escaping, number formatting, series order, invalid registrations,
 * and the process metrics being present and plausible (with glibc, the
 * allocator's heap gauges too, following a 4 MiB allocation).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__ /* defined by the headers above */
#include <malloc.h>
#endif

#include "dbuf.h"
#include "metrics.h"
#include "testlib.h"

static const char *render(struct metrics *m, struct dbuf *b, int proc)
{
    dbuf_reset(b);
    if (metrics_render(m, b, proc) != 0)
        return "(render failed)";
    return dbuf_ptr(b);
}

static void test_format(void)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {1, "1"},
        {-1, "-1"},
        {42, "42"},
        {123456789, "123456789"},
        {1e14, "100000000000000"},
        {1e15, "1e+15"},
        {2.5e20, "2.5e+20"},
        {0.005, "0.005"},
        {0.1, "0.1"},
        {2.5, "2.5"},
        {1.5e-7, "1.5e-07"},
        {0.0001, "0.0001"},
        {0.00001, "1e-05"},
        {123456.5, "123456.5"},
        {1234567.5, "1.2345675e+06"},
        {1.0 / 3, "0.3333333333333333"},
        {-0.25, "-0.25"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
    };
    struct dbuf b;
    dbuf_init(&b, 1024);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[64];
        dbuf_reset(&b);
        metrics_format_value(&b, cases[i].v);
        snprintf(msg, sizeof msg, "format %s", cases[i].want);
        CHECK_STR_EQ(dbuf_ptr(&b), cases[i].want, msg);
    }
    dbuf_free(&b);
}

static void test_counter_gauge(void)
{
    struct metrics *m = metrics_new();
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    const char *const ctl[] = {"controller", "result", NULL};
    struct metric *rec =
        metrics_add(m, METRIC_COUNTER, "controller_runtime_reconcile_total",
                    "Total number of reconciliations per "
                    "controller",
                    ctl, NULL, 0);
    struct metric *up =
        metrics_add(m, METRIC_GAUGE, "leader_election_master",
                    "Leader\\election \"status\"\nsecond", NULL, NULL, 0);
    struct metric *empty =
        metrics_add(m, METRIC_GAUGE, "workqueue_depth", "Current depth.",
                    (const char *const[]){"name", NULL}, NULL, 0);
    CHECK(rec != NULL && up != NULL && empty != NULL, "families registered");

    metric_inc(rec, 1, (const char *const[]){"dittoserver", "success"});
    metric_inc(rec, 2, (const char *const[]){"dittoserver", "success"});
    metric_inc(rec, 1, (const char *const[]){"dittoserver", "error"});
    metric_inc(rec, -5, (const char *const[]){"dittoserver", "error"});
    metric_inc(rec, 1, (const char *const[]){"a\\b\"c\nd", "requeue"});
    metric_set(up, 1, NULL);
    metric_inc(up, -0.5, NULL);
    metric_observe(up, 3, NULL); /* wrong type: ignored */
    CHECK(metric_value(rec, (const char *const[]){"dittoserver", "success"}) ==
              3,
          "counter value 3");
    CHECK(metric_value(rec, (const char *const[]){"dittoserver", "error"}) == 1,
          "a counter ignores a negative increment");
    CHECK(metric_value(rec, (const char *const[]){"x", "y"}) == 0,
          "absent series reads 0");
    CHECK(metric_value(up, NULL) == 0.5, "gauge set then inc");

    CHECK_STR_EQ(render(m, &b, 0),
                 "# HELP controller_runtime_reconcile_total Total number of "
                 "reconciliations per controller\n"
                 "# TYPE controller_runtime_reconcile_total counter\n"
                 "controller_runtime_reconcile_total{controller=\"a\\\\b\\\"c"
                 "\\nd\",result=\"requeue\"} 1\n"
                 "controller_runtime_reconcile_total{controller=\"dittoserver\""
                 ",result=\"error\"} 1\n"
                 "controller_runtime_reconcile_total{controller=\"dittoserver\""
                 ",result=\"success\"} 3\n"
                 "# HELP leader_election_master Leader\\\\election \"status\""
                 "\\nsecond\n"
                 "# TYPE leader_election_master gauge\n"
                 "leader_election_master 0.5\n",
                 "counters and gauges render exactly (sorted series, "
                 "escaping, empty labelled family omitted)");

    /* Many series: the hash table grows and lookups stay right. */
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "k%04d", i);
        metric_inc(empty, 0, (const char *const[]){name});
        metric_set(empty, i, (const char *const[]){name});
    }
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "k%04d", i);
        ok &= metric_value(empty, (const char *const[]){name}) == i;
    }
    CHECK(ok, "1000 series each found again");
    render(m, &b, 0);
    const char *first = strstr(dbuf_ptr(&b), "workqueue_depth{name=\"k0000\"}");
    const char *last =
        strstr(dbuf_ptr(&b), "workqueue_depth{name=\"k0999\"} 999");
    CHECK(first != NULL && last != NULL && first < last,
          "series rendered in label order");
    dbuf_free(&b);
    metrics_free(m);
}

static void test_histogram(void)
{
    struct metrics *m = metrics_new();
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    static const double bounds[] = {0.1, 1, 2.5};
    struct metric *h =
        metrics_add(m, METRIC_HISTOGRAM, "reconcile_time_seconds",
                    "Length of time per reconciliation.",
                    (const char *const[]){"controller", NULL}, bounds, 3);
    struct metric *d = metrics_add(m, METRIC_HISTOGRAM, "plain_seconds",
                                   "Default buckets.", NULL, NULL, 0);
    CHECK(h != NULL && d != NULL, "histograms registered");
    const char *const c[] = {"ds"};
    metric_observe(h, 0.05, c);
    metric_observe(h, 0.1, c); /* le is inclusive */
    metric_observe(h, 2, c);
    metric_observe(h, 7.25, c);
    metric_inc(h, 1, c); /* wrong type: ignored */
    CHECK(metric_value(h, c) == 4, "histogram count 4");
    CHECK(metric_bucket(h, 0, c) == 2, "bucket 0.1 holds 2");
    CHECK(metric_bucket(h, 3, c) == 4, "+Inf bucket holds all");

    CHECK_STR_EQ(
        render(m, &b, 0),
        "# HELP reconcile_time_seconds Length of time per "
        "reconciliation.\n"
        "# TYPE reconcile_time_seconds histogram\n"
        "reconcile_time_seconds_bucket{controller=\"ds\",le=\"0.1\"} 2\n"
        "reconcile_time_seconds_bucket{controller=\"ds\",le=\"1\"} 2\n"
        "reconcile_time_seconds_bucket{controller=\"ds\",le=\"2.5\"} 3\n"
        "reconcile_time_seconds_bucket{controller=\"ds\",le=\"+Inf\"} "
        "4\n"
        "reconcile_time_seconds_sum{controller=\"ds\"} 9.4\n"
        "reconcile_time_seconds_count{controller=\"ds\"} 4\n"
        "# HELP plain_seconds Default buckets.\n"
        "# TYPE plain_seconds histogram\n"
        "plain_seconds_bucket{le=\"0.005\"} 0\n"
        "plain_seconds_bucket{le=\"0.01\"} 0\n"
        "plain_seconds_bucket{le=\"0.025\"} 0\n"
        "plain_seconds_bucket{le=\"0.05\"} 0\n"
        "plain_seconds_bucket{le=\"0.1\"} 0\n"
        "plain_seconds_bucket{le=\"0.25\"} 0\n"
        "plain_seconds_bucket{le=\"0.5\"} 0\n"
        "plain_seconds_bucket{le=\"1\"} 0\n"
        "plain_seconds_bucket{le=\"2.5\"} 0\n"
        "plain_seconds_bucket{le=\"5\"} 0\n"
        "plain_seconds_bucket{le=\"10\"} 0\n"
        "plain_seconds_bucket{le=\"+Inf\"} 0\n"
        "plain_seconds_sum 0\n"
        "plain_seconds_count 0\n",
        "histograms render exactly (cumulative buckets, +Inf, "
        "_sum, _count)");
    dbuf_free(&b);
    metrics_free(m);
}

static void test_invalid(void)
{
    struct metrics *m = metrics_new();
    CHECK(metrics_add(m, METRIC_COUNTER, "ok_total", "x", NULL, NULL, 0) !=
              NULL,
          "valid name accepted");
    CHECK(metrics_add(m, METRIC_GAUGE, "ok_total", "x", NULL, NULL, 0) == NULL,
          "duplicate name refused");
    CHECK(metrics_add(m, METRIC_GAUGE, "1bad", "x", NULL, NULL, 0) == NULL,
          "name starting with a digit refused");
    CHECK(metrics_add(m, METRIC_GAUGE, "bad-name", "x", NULL, NULL, 0) == NULL,
          "name with '-' refused");
    CHECK(metrics_add(m, METRIC_HISTOGRAM, "h", "x",
                      (const char *const[]){"le", NULL}, NULL, 0) == NULL,
          "histogram label le refused");
    CHECK(metrics_add(m, METRIC_GAUGE, "g", "x",
                      (const char *const[]){"__x", NULL}, NULL, 0) == NULL,
          "reserved label refused");
    CHECK(metrics_add(m, METRIC_HISTOGRAM, "h2", "x", NULL,
                      (const double[]){1, 1}, 2) == NULL,
          "non-increasing buckets refused");
    struct metric *g = metrics_add(m, METRIC_GAUGE, "g2", "x",
                                   (const char *const[]){"a", NULL}, NULL, 0);
    metric_set(g, 1, NULL);
    metric_set(g, 1, (const char *const[]){NULL});
    metric_inc(NULL, 1, NULL);
    struct dbuf b;
    dbuf_init(&b, 1 << 16);
    CHECK_STR_EQ(render(m, &b, 0),
                 "# HELP ok_total x\n# TYPE ok_total counter\nok_total 0\n",
                 "NULL label values create nothing; a fresh counter is 0");
    /* A too-small buffer fails cleanly and leaves it empty. */
    struct dbuf small;
    dbuf_init(&small, 16);
    CHECK(metrics_render(m, &small, 1) == DBUF_TOOBIG && dbuf_len(&small) == 0,
          "render into a too small buffer: DBUF_TOOBIG, buffer empty");
    dbuf_free(&small);
    dbuf_free(&b);
    metrics_free(m);
    metrics_free(NULL);
}

/* The value of the sample line `name value` in text, or NAN. */
static double sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    return p != NULL ? strtod(p + strlen(key), NULL) : NAN;
}

static void test_process(void)
{
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    /* Burn a little CPU so the CPU counter is positive. */
    volatile double x = 0;
    clock_t t0 = clock();
    while (clock() - t0 < CLOCKS_PER_SEC / 50)
        x += 1;
    const char *t = render(NULL, &b, 1);
    TEST_NOTE("%s", t);
    static const char *const fams[] = {
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_max_fds gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_start_time_seconds gauge",
        "# TYPE process_virtual_memory_bytes gauge",
    };
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++)
        CHECK(strstr(t, fams[i]) != NULL, "%s", fams[i]);
    double cpu = sample(t, "process_cpu_seconds_total");
    double rss = sample(t, "process_resident_memory_bytes");
    double vsz = sample(t, "process_virtual_memory_bytes");
    double fds = sample(t, "process_open_fds");
    double max = sample(t, "process_max_fds");
    double start = sample(t, "process_start_time_seconds");
    double now = (double)time(NULL);
    CHECK(cpu > 0 && cpu < 3600, "cpu seconds plausible (%g)", cpu);
    CHECK(rss > 100000 && rss < 1e11, "rss plausible (%g)", rss);
    CHECK(vsz >= rss, "virtual >= resident");
    CHECK(fds >= 3 && fds < 1000, "open fds plausible (%g)", fds);
    CHECK(max >= fds, "max fds >= open fds (%g)", max);
    CHECK(start > now - 3600 && start <= now + 2,
          "start time within the last hour (%.2f, now %.0f)", start, now);
    dbuf_free(&b);
}

#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
/* Where the test's blocks escape to, so that the compiler cannot elide a
 * malloc/free pair. */
static void *volatile heap_sink;

/* The heap gauges: first in the process section, sorted, and following
 * what this process allocates and frees. */
static void test_heap(void)
{
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    const char *t = render(NULL, &b, 1);
    const char *free_h = strstr(t, "# TYPE dittofs_heap_free_bytes gauge\n");
    const char *inuse_h = strstr(t, "# TYPE dittofs_heap_inuse_bytes gauge\n");
    const char *cpu_h = strstr(t, "# HELP process_cpu_seconds_total ");
    static const char first[] = "# HELP dittofs_heap_free_bytes ";
    CHECK(strncmp(t, first, strlen(first)) == 0,
          "dittofs_heap_free_bytes opens the process section");
    CHECK(free_h != NULL && inuse_h != NULL && cpu_h != NULL &&
              free_h < inuse_h && inuse_h < cpu_h,
          "free, inuse, then process_*: sorted by name");
    double inuse0 = sample(t, "dittofs_heap_inuse_bytes");
    double free0 = sample(t, "dittofs_heap_free_bytes");
    struct mallinfo2 mi = mallinfo2();
    /* Under valgrind malloc is valgrind's, and mallinfo2 reports zeros
     * (the plain run of this test checks the figures). */
    size_t probe_before = mi.uordblks + mi.hblkhd;
    char *probe = malloc(1 << 20);
    heap_sink = probe;
    struct mallinfo2 mp = mallinfo2();
    free(probe);
    if (mp.uordblks + mp.hblkhd == probe_before) {
        CHECK(inuse0 == (double)(mi.uordblks + mi.hblkhd) &&
                  free0 == (double)mi.fordblks,
              "the gauges are what mallinfo2 says (%g, %g)", inuse0, free0);
        TEST_NOTE("mallinfo2 does not follow malloc here (valgrind's "
                  "allocator): the figures are checked by the plain run");
        dbuf_free(&b);
        return;
    }
    CHECK(inuse0 > 4096 && inuse0 < 1e10, "in use plausible (%g)", inuse0);
    CHECK(free0 >= 0 && free0 < 1e10, "free plausible (%g)", free0);
    CHECK(fabs(inuse0 - (double)(mi.uordblks + mi.hblkhd)) < 65536,
          "in use is uordblks + hblkhd (%g vs %zu)", inuse0,
          mi.uordblks + mi.hblkhd);
    double rss = sample(t, "process_resident_memory_bytes");
    CHECK(inuse0 < rss, "in use below the RSS (%g < %g)", inuse0, rss);

    /* 4 MiB (above the mmap threshold: hblkhd) and 64 blocks of 16 KiB in
     * the arena, touched so they are real. */
    enum { BIG = 4 << 20, SMALL = 16 << 10, NSMALL = 64 };
    char *big = malloc(BIG);
    char *small[NSMALL];
    for (int i = 0; i < NSMALL; i++) {
        small[i] = malloc(SMALL);
        if (small[i] != NULL)
            memset(small[i], i, SMALL);
        heap_sink = small[i];
    }
    if (big != NULL)
        memset(big, 1, BIG);
    heap_sink = big;
    t = render(NULL, &b, 1);
    double inuse1 = sample(t, "dittofs_heap_inuse_bytes");
    CHECK(inuse1 - inuse0 >= BIG + NSMALL * SMALL &&
              inuse1 - inuse0 < BIG + NSMALL * SMALL + (1 << 20),
          "in use grows by the 5 MiB allocated (%g)", inuse1 - inuse0);
    /* Freed but the last: the arena keeps the freed chunks (below the
     * last one, so not at the top that free trims), the mmap'd block goes
     * back to the system. */
    for (int i = 0; i < NSMALL - 1; i++)
        free(small[i]);
    free(big);
    t = render(NULL, &b, 1);
    double inuse2 = sample(t, "dittofs_heap_inuse_bytes");
    double free2 = sample(t, "dittofs_heap_free_bytes");
    CHECK(inuse1 - inuse2 >= BIG + (NSMALL - 1) * SMALL - 65536,
          "in use falls by what was freed (%g)", inuse1 - inuse2);
    CHECK(free2 >= (NSMALL - 1) * SMALL, "the freed chunks count as free (%g)",
          free2);
    free(small[NSMALL - 1]);
    dbuf_free(&b);
}
#endif

int main(void)
{
    test_format();
    test_counter_gauge();
    test_histogram();
    test_invalid();
    test_process();
#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    test_heap();
#endif
    return TEST_SUMMARY();
}
