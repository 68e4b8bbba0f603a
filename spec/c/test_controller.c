/*
 * test_controller: the controller's own paths without a cluster, against
 * the in-memory apiserver of fakeapi.h:
 *  - controller_try_policies evaluates a candidate policy set on every
 *    cached DittoServer with its observed children and Pods, writes
 *    nothing, passes an InvalidSpec verdict and fails on a script error
 *    or a refused kind with "ns/name: message" and a count of the
 *    others; controller_set_policies switches to a set (the old one freed
 *    at once, also while a reconcile is in flight) and reconciles every
 *    DittoServer fully under it;
 *  - overlays: a reconcile before the watch delivers our write does not
 *    write again, the echo reconciles nothing, the TTL (test clock);
 *  - the echo race: the echo of our write that arrives before the write's
 *    answer reconciles nothing; another writer's change that arrives
 *    while our write is in flight is reconciled;
 *  - 422 refusals: CONTROLLER_MAX_REJECTS attempts, then reported
 *    (ApplyFailed) and not sent while rendered the same; full reconciles
 *    meanwhile, status-only ones once clean; a refused StatefulSet retried
 *    with the live claim templates;
 *  - requeues: status()'s requeue-after and the per-key backoff of a
 *    failed write, each due only when the test clock (loop_set_clock)
 *    reaches it;
 *  - 409: an update (and the status write) carries the uid and
 *    resourceVersion it was computed from; a held write that arrives
 *    after another writer's change, or on a child deleted meanwhile, is
 *    refused and requeued (no error), the retry lands;
 *  - Events: InvalidSpec, PolicyError, Created.
 * Uses the controller, policy sets from a temporary --policies directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "controller.h"
#include "events.h"
#include "fakeapi.h"
#include "log.h"
#include "tracking.h"
#include "testlib.h"

/* --- fixtures ------------------------------------------------------------ */

static int is_synced(void *arg)
{
    return controller_synced(arg);
}

static char policy_dir[256];

/* A policy set whose dittoserver.lua is `source`; exits when it does not
 * load. */
static struct policy_set *policy(const char *source)
{
    char path[320];
    snprintf(policy_dir, sizeof(policy_dir), "/tmp/test_controller-%d",
             (int)getpid());
    mkdir(policy_dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", policy_dir);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(source, f) < 0 || fclose(f) != 0) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(policy_dir, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    dbuf_free(&err);
    unlink(path);
    rmdir(policy_dir);
    return ps;
}

/* A DittoServer; `extra` goes into its spec (may be ""). */
static void put_ds(const char *name, const char *extra)
{
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"dittofs.dittofs.com/v1alpha1\","
             "\"kind\":\"DittoServer\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"" FA_NS "\",\"generation\":1},"
             "\"spec\":{\"image\":\"img\"%s}}",
             name, extra);
    fa_put("dittoservers", buf);
}

/* Deletes DittoServer `name` and its ConfigMap from the fake apiserver. */
static void cleanup(const char *name)
{
    char cm[160];
    snprintf(cm, sizeof(cm), "%s-c", name);
    fa_delete("dittoservers", name);
    fa_delete("configmaps", cm);
}

/* A Pod of DittoServer `ds` (as the StatefulSet controller makes it). */
static void put_pod(const char *ds, const char *name)
{
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{"
             "\"name\":\"%s\",\"namespace\":\"" FA_NS "\",\"labels\":{"
             "\"app.kubernetes.io/managed-by\":\"dittofs-operator\","
             "\"dittofs.dittofs.com/server\":\"%s\"}},"
             "\"status\":{\"phase\":\"Running\"}}",
             name, ds);
    fa_put("pods", buf);
}

/* A leading controller on set `ps` with a per-key backoff from base_ms
 * (doubling, capped at 1000 s); waits for its informers to sync. */
static struct controller *start_backoff(struct policy_set *ps, uint64_t base_ms)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct controller_opts o = {
        .namespace = FA_NS,
        .limits = {.timeout_ms = test_ms(1000)},
        .backoff_base_ms = base_ms,
        .backoff_max_ms = base_ms > 500 ? 1000000 : 500,
    };
    struct controller *c = controller_new(FA.t.http, ps, NULL, NULL, &o, &err);
    if (c == NULL || controller_start(c) != 0) {
        printf("Bail out! controller: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    dbuf_free(&err);
    controller_set_leading(c, 1);
    if (!nt_wait(&FA.t, is_synced, c, test_ms(20000))) {
        printf("Bail out! the informers do not sync\n");
        exit(1);
    }
    return c;
}

static struct controller *start(struct policy_set *ps)
{
    return start_backoff(ps, 50);
}

/* The test clock: CLOCK_MONOTONIC plus what advance() added. */
static uint64_t clock_offset_us;

static uint64_t test_clock(void *arg)
{
    (void)arg;
    return loop_real_us() + clock_offset_us;
}

/* Moves the clock `ms` ahead, then lets the loop run what fell due. */
static void advance(uint64_t ms)
{
    clock_offset_us += ms * 1000;
    nt_run_for(&FA.t, 50);
}

/* "reconciled" log lines of DittoServer `name`, with `what` (NULL: any),
 * e.g. "eval=status" or "result=error". */
static int reconciles(const char *name, const char *what)
{
    char key[160];
    snprintf(key, sizeof(key), "key=" FA_NS "/%s ", name);
    return fa_log_count("msg=\"reconciled\"", key, what);
}

static int wait_reconciles(const char *name, const char *what, int want)
{
    char key[160];
    snprintf(key, sizeof(key), "key=" FA_NS "/%s ", name);
    return fa_wait_log("msg=\"reconciled\"", key, what, want);
}

/* --- policy sets ---------------------------------------------------------- */

/* Renders ConfigMap <name>-c with data.v = spec.v or V; a spec with `bad`
 * is invalid; status() asks for a requeue after spec.requeue seconds. */
#define POLICY_V(V)                                                            \
    "local M = {}\n"                                                           \
    "function M.validate(ds)\n"                                                \
    "  if ds.spec.bad then return { 'spec.bad: not allowed' }, {} end\n"       \
    "  return {}, {}\n"                                                        \
    "end\n"                                                                    \
    "function M.render(ds, ctx)\n"                                             \
    "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"                    \
    "    metadata = { name = ds.metadata.name .. '-c' },\n"                    \
    "    data = { v = ds.spec.v or '" V "', p = '" V "' } } }\n"               \
    "end\n"                                                                    \
    "function M.status(ds, observed, ctx)\n"                                   \
    "  return { phase = 'Pending' }, ds.spec.requeue\n"                        \
    "end\n"                                                                    \
    "return M\n"

/* Renders ConfigMap <name>-c unless spec.drop. */
static const char *const POLICY_DROP =
    "local M = {}\n"
    "function M.render(ds, ctx)\n"
    "  if ds.spec.drop then return {} end\n"
    "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
    "    metadata = { name = ds.metadata.name .. '-c' }, data = { v = 'a' } } "
    "}\n"
    "end\n"
    "function M.status(ds, observed, ctx)\n"
    "  return { phase = 'Pending' }\n"
    "end\n"
    "return M\n";

/* Fails in render() (line 7) on every valid DittoServer. */
static const char *const POLICY_BROKEN =
    "local M = {}\n"
    "function M.validate(ds)\n"
    "  if ds.spec.bad then return { 'spec.bad: not allowed' }, {} end\n"
    "  return {}, {}\n"
    "end\n"
    "function M.render(ds, ctx)\n"
    "  error('boom in render')\n"
    "end\n"
    "function M.status(ds, observed, ctx)\n"
    "  return { phase = 'Pending' }\n"
    "end\n"
    "return M\n";

/* Spends its whole time budget in render() on every DittoServer. */
static const char *const POLICY_LOOP = "local M = {}\n"
                                       "function M.render(ds, ctx)\n"
                                       "  while true do end\n"
                                       "end\n"
                                       "function M.status(ds, observed, ctx)\n"
                                       "  return { phase = 'Pending' }\n"
                                       "end\n"
                                       "return M\n";

/* Renders a Secret: a kind the core refuses. */
static const char *const POLICY_SECRET =
    "local M = {}\n"
    "function M.render(ds, ctx)\n"
    "  return { { apiVersion = 'v1', kind = 'Secret',\n"
    "    metadata = { name = ds.metadata.name .. '-s' } } }\n"
    "end\n"
    "function M.status(ds, observed, ctx)\n"
    "  return { phase = 'Pending' }\n"
    "end\n"
    "return M\n";

/* Fails unless status() sees the live ConfigMap and (for ds1) the Pod. */
static const char *const POLICY_OBSERVES =
    "local M = {}\n"
    "function M.validate(ds)\n"
    "  if ds.spec.bad then return { 'spec.bad: not allowed' }, {} end\n"
    "  return {}, {}\n"
    "end\n"
    "function M.render(ds, ctx)\n"
    "  return {}\n"
    "end\n"
    "function M.status(ds, observed, ctx)\n"
    "  local n = ds.metadata.name\n"
    "  if n ~= 'ds2' and not observed.ConfigMap[n .. '-c'] then\n"
    "    error('no live ConfigMap for ' .. n)\n"
    "  end\n"
    "  if n == 'ds1' and not observed.Pod['ds1-0'] then\n"
    "    error('no Pod for ds1')\n"
    "  end\n"
    "  return { phase = 'Pending' }\n"
    "end\n"
    "return M\n";

/* CPU time of the calling thread, in ms. */
static double thread_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void test_policy_sets(void)
{
    struct policy_set *a = policy(POLICY_V("a"));
    put_ds("ds1", "");
    put_ds("ds2", ",\"bad\":true");
    put_ds("ds3", "");
    put_pod("ds1", "ds1-0");
    struct controller *c = start(a);
    CHECK(controller_synced(c), "informers synced");
    CHECK(fa_wait_write(0, "/configmaps/ds1-c", "\"v\":\"a\"") &&
              fa_wait_write(0, "/configmaps/ds3-c", "\"v\":\"a\"") &&
              fa_wait_write(0, "/dittoservers/ds2/status", "Pending"),
          "set a: ds1 and ds3 rendered, ds2's status written");
    CHECK(fa_count_writes(0, "/configmaps/ds2-c", NULL) == 0,
          "... ds2 is invalid: nothing rendered");
    fa_settle(300);

    int w0 = fa_nwrites();
    int full0 = fa_log_count("msg=\"reconciled\"", "eval=full", NULL);
    struct dbuf err;
    dbuf_init(&err, 4096);

    struct policy_set *broken = policy(POLICY_BROKEN);
    int rc = controller_try_policies(c, broken, &err);
    CHECK(rc == -1, "try: a set whose render() raises fails (%d)", rc);
    CHECK((strncmp(dbuf_ptr(&err), FA_NS "/ds1: ", 6) == 0 ||
           strncmp(dbuf_ptr(&err), FA_NS "/ds3: ", 6) == 0) &&
              strstr(dbuf_ptr(&err), "dittoserver.lua:7: boom in render"),
          "... with ns/name and the policy's file:line message (%s)",
          dbuf_ptr(&err));
    CHECK(strstr(dbuf_ptr(&err) + 1, FA_NS "/ds") == NULL &&
              strstr(dbuf_ptr(&err), "more") == NULL,
          "... the first failure only: the trial stops there (%s)",
          dbuf_ptr(&err));
    policy_set_free(broken);

    /* A policy that spends its whole budget: one evaluation's worth of
     * loop time, not one per DittoServer (the Lease renews on this loop).
     * The budget is CPU time of this thread (sandbox.c BUDGET_CLOCK), so
     * that is what is measured: wall time on a loaded machine is several
     * times longer (8 s for a 1 s budget at load 9, stop 18). */
    dbuf_reset(&err);
    struct policy_set *loop = policy(POLICY_LOOP);
    double t0 = thread_cpu_ms();
    rc = controller_try_policies(c, loop, &err);
    double spent_ms = thread_cpu_ms() - t0;
    CHECK(rc == -1 && strstr(dbuf_ptr(&err), "policy timeout") != NULL,
          "try: an endless loop fails on the time budget (%s)", dbuf_ptr(&err));
    CHECK(spent_ms < 2.0 * (double)test_ms(1000),
          "... after one evaluation, not three (%.0f ms of CPU, budget %u ms "
          "each)",
          spent_ms, (unsigned)test_ms(1000));
    policy_set_free(loop);

    dbuf_reset(&err);
    struct policy_set *secret = policy(POLICY_SECRET);
    rc = controller_try_policies(c, secret, &err);
    CHECK(rc == -1 && strstr(dbuf_ptr(&err), "manages only") != NULL,
          "try: a rendered Secret is a failure (%s)", dbuf_ptr(&err));
    policy_set_free(secret);

    dbuf_reset(&err);
    struct policy_set *obs = policy(POLICY_OBSERVES);
    rc = controller_try_policies(c, obs, &err);
    CHECK(rc == 0 && dbuf_len(&err) == 0,
          "try: status() sees the cached children and Pods (%s)",
          dbuf_ptr(&err));
    policy_set_free(obs);

    dbuf_reset(&err);
    struct policy_set *b = policy(POLICY_V("b"));
    rc = controller_try_policies(c, b, &err);
    CHECK(rc == 0 && dbuf_len(&err) == 0,
          "try: a good set passes, an invalid spec included (%s)",
          dbuf_ptr(&err));
    fa_settle(300);
    CHECK(fa_nwrites() == w0, "try: nothing was written (%d writes)",
          fa_nwrites() - w0);
    CHECK(fa_log_count("msg=\"reconciled\"", NULL, NULL) ==
                  fa_log_count("msg=\"reconciled\"", "eval=full", NULL) &&
              fa_log_count("msg=\"reconciled\"", "eval=full", NULL) == full0,
          "try: and nothing was reconciled");

    controller_set_policies(c, b);
    policy_set_free(a); /* never held across I/O: free at once */
    CHECK(fa_wait_write(w0, "/configmaps/ds1-c", "\"v\":\"b\"") &&
              fa_wait_write(w0, "/configmaps/ds3-c", "\"v\":\"b\""),
          "set: the new set renders ds1 and ds3");
    int full = fa_wait_log("msg=\"reconciled\"", "eval=full", NULL, full0 + 3);
    CHECK(full, "set: every DittoServer gets a full reconcile (%d)",
          fa_log_count("msg=\"reconciled\"", "eval=full", NULL) - full0);
    fa_settle(300);
    CHECK(fa_count_writes(w0, "/configmaps/", NULL) == 2,
          "set: nothing more is written than the two changed ConfigMaps (%d)",
          fa_count_writes(w0, "/configmaps/", NULL));

    controller_free(c);
    policy_set_free(b);
    dbuf_free(&err);
    cleanup("ds1");
    cleanup("ds2");
    cleanup("ds3");
    fa_delete("pods", "ds1-0");
}

/*
 * A set replaced while a reconcile is in flight (its apply stalled): the
 * old set is freed at once, as controller.h allows; the reconcile ends
 * without it and the new set's full reconcile follows.
 */
static void test_set_in_flight(void)
{
    struct policy_set *a = policy(POLICY_V("a"));
    put_ds("fl", "");
    int w0 = fa_nwrites();
    struct controller *c = start(a);
    CHECK(fa_wait_write(w0, "/configmaps/fl-c", "\"p\":\"a\"") &&
              wait_reconciles("fl", NULL, 1),
          "in flight: set a renders");
    fa_settle(200);
    int n = reconciles("fl", NULL);
    fa_stall("/configmaps/fl-c");
    w0 = fa_nwrites();
    put_ds("fl", ",\"v\":\"x\"");
    CHECK(fa_wait_write(w0, "/configmaps/fl-c", "\"v\":\"x\""),
          "... an apply of set a is in flight");
    nt_run_for(&FA.t, 50);
    CHECK(controller_in_flight(c) == 1, "... one reconcile in flight (%zu)",
          controller_in_flight(c));
    struct policy_set *b = policy(POLICY_V("b"));
    controller_set_policies(c, b);
    policy_set_free(a); /* at once, whatever is in flight */
    fa_stall(NULL);
    CHECK(fa_wait_write(w0, "/configmaps/fl-c", "\"p\":\"b\""),
          "... set b renders once the stalled apply answered");
    CHECK(wait_reconciles("fl", NULL, n + 2),
          "... after the reconcile in flight ended (%d reconciles)",
          reconciles("fl", NULL) - n);
    fa_settle(200);
    CHECK(reconciles("fl", "result=error") == 0, "... no error on the way");
    controller_free(c);
    policy_set_free(b);
    cleanup("fl");
}

/* A StatefulSet renders volumeClaimTemplates of spec.size (default 1Gi). */
static const char *const POLICY_STS =
    "local M = {}\n"
    "function M.render(ds, ctx)\n"
    "  return { { apiVersion = 'apps/v1', kind = 'StatefulSet',\n"
    "    metadata = { name = ds.metadata.name },\n"
    "    spec = { serviceName = ds.metadata.name, replicas = 1,\n"
    "      selector = { matchLabels = { app = 'd' } },\n"
    "      template = { metadata = { labels = { app = 'd' } },\n"
    "        spec = { containers = { { name = 'c', image = 'i' } } } },\n"
    "      volumeClaimTemplates = { { metadata = { name = 'data' },\n"
    "        spec = { resources = { requests = {\n"
    "          storage = ds.spec.size or '1Gi' } } } } } } } }\n"
    "end\n"
    "function M.status(ds, observed, ctx)\n"
    "  return { phase = 'Pending' }\n"
    "end\n"
    "return M\n";

/*
 * A StatefulSet the API refuses (its claim templates cannot change): the
 * retry applies everything else with the live templates, and once that
 * is applied nothing more is sent while it renders the same.
 */
static void test_sts_claims(void)
{
    struct policy_set *ps = policy(POLICY_STS);
    put_ds("st", "");
    int w0 = fa_nwrites();
    struct controller *c = start(ps);
    CHECK(fa_wait_write(w0, "/statefulsets/st", "\"storage\":\"1Gi\""),
          "claims: the StatefulSet is applied with 1Gi");
    fa_settle(200);
    fa_fail("PATCH", "/statefulsets/st", 422,
            "StatefulSet.apps st is invalid: spec: Forbidden: updates to "
            "statefulset spec for fields other than replicas, template are "
            "forbidden",
            1);
    w0 = fa_nwrites();
    put_ds("st", ",\"size\":\"2Gi\"");
    CHECK(fa_wait_writes(w0, "/statefulsets/st", NULL, 2),
          "... 2Gi refused, then retried");
    fa_settle(300);
    char *body = fa_last_write("/statefulsets/st");
    CHECK(body && strstr(body, "\"storage\":\"1Gi\"") && !strstr(body, "2Gi"),
          "... with the live claim templates (%s)", body ? body : "none");
    free(body);
    CHECK(fa_count_writes(w0, "/statefulsets/st", NULL) == 2,
          "... and then left alone: it matches the live one (%d writes)",
          fa_count_writes(w0, "/statefulsets/st", NULL));
    cJSON *live = fa_get("statefulsets", "st");
    const cJSON *st = cJSON_GetObjectItem(
        cJSON_GetArrayItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(live, "spec"),
                                "volumeClaimTemplates"),
            0),
        "spec");
    char *t = cJSON_PrintUnformatted(st);
    CHECK_STR_EQ(t, "{\"resources\":{\"requests\":{\"storage\":\"1Gi\"}}}",
                 "... the stored templates unchanged");
    free(t);
    cJSON_Delete(live);
    controller_free(c);
    policy_set_free(ps);
    fa_fail_clear();
    fa_delete("dittoservers", "st");
    fa_delete("statefulsets", "st");
}

/*
 * Events: an invalid spec gives a Warning InvalidSpec Event with the
 * messages, a policy failure a Warning PolicyError one with the policy's
 * file:line, a created child a Normal Created one; all on the
 * DittoServer.
 */
static void test_events(void)
{
    struct events *ev = events_new(FA.t.http, "dittofs-operator", "host-1");
    struct policy_set *a = policy(POLICY_V("a"));
    put_ds("evb", ",\"bad\":true");
    put_ds("evg", "");
    int w0 = fa_nwrites();
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct controller_opts o = {
        .namespace = FA_NS,
        .limits = {.timeout_ms = test_ms(1000)},
        .backoff_base_ms = 50,
        .backoff_max_ms = 500,
    };
    struct controller *c = controller_new(FA.t.http, a, NULL, ev, &o, &err);
    if (c == NULL || controller_start(c) != 0) {
        printf("Bail out! controller: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    controller_set_leading(c, 1);
    CHECK(fa_wait_write(w0, "/events", "\"reason\":\"InvalidSpec\""),
          "events: an invalid spec: Warning InvalidSpec");
    char *e = fa_last_write("/events");
    CHECK(e && strstr(e, "spec.bad: not allowed") &&
              strstr(e, "\"type\":\"Warning\"") &&
              strstr(e, "\"name\":\"evb\""),
          "... with the message, on the DittoServer (%s)", e ? e : "none");
    free(e);
    CHECK(fa_wait_write(w0, "/events", "Created ConfigMap evg-c"),
          "events: a created child: Normal Created");
    fa_settle(300);

    /* Deleted while reconciled: the status write finds no DittoServer.
     * Not an error (no retry, no warning), no Event on a missing object. */
    fa_fail("PATCH", "/dittoservers/evd/status", 404,
            "dittoservers.dittofs.dittofs.com \"evd\" not found", 1);
    int w1 = fa_nwrites();
    put_ds("evd", "");
    CHECK(fa_wait_write(w1, "/dittoservers/evd/status", NULL) &&
              wait_reconciles("evd", "result=success", 1),
          "events: a status write answered 404: result=success");
    fa_settle(300);
    CHECK(reconciles("evd", "result=error") == 0 &&
              fa_count_writes(w1, "/events", "evd") == 0,
          "... no error, no Event for it (%d errors, %d Events)",
          reconciles("evd", "result=error"),
          fa_count_writes(w1, "/events", "evd"));
    fa_fail_clear();

    struct policy_set *broken = policy(POLICY_BROKEN);
    controller_set_policies(c, broken);
    policy_set_free(a);
    CHECK(fa_wait_write(w0, "/events", "\"reason\":\"PolicyError\""),
          "events: a failing policy: Warning PolicyError");
    CHECK(fa_count_writes(w0, "/events", "dittoserver.lua:7: boom in render") >=
              1,
          "... with the policy's file:line");
    fa_settle(300);
    controller_free(c);
    events_free(ev);
    policy_set_free(broken);
    dbuf_free(&err);
    cleanup("evb");
    cleanup("evg");
    cleanup("evd");
}

/*
 * Overlays: a reconcile that runs before the watch has delivered our own
 * write sees what the write returned and does not write again; the echo
 * of that write, once delivered, reconciles nothing; an overlay older
 * than TRACKING_OVERLAY_TTL_MS (on the test clock) is not trusted.
 */
static void test_overlays(void)
{
    struct policy_set *ps = policy(POLICY_V("a"));
    fa_hold_watch("configmaps");
    put_ds("ov", "");
    int w0 = fa_nwrites();
    struct controller *c = start(ps);
    CHECK(fa_wait_write(w0, "/configmaps/ov-c", NULL) &&
              wait_reconciles("ov", NULL, 1),
          "overlays: the ConfigMap is applied (its watch lagging)");
    fa_settle(200);
    /* A change of the DittoServer that renders the same ConfigMap. */
    put_ds("ov", ",\"note\":\"x\"");
    CHECK(wait_reconciles("ov", "eval=full", 2),
          "... a DittoServer change: a full reconcile");
    fa_settle(200);
    CHECK(fa_count_writes(w0, "/configmaps/ov-c", NULL) == 1,
          "... which sees the overlay: no second apply (%d)",
          fa_count_writes(w0, "/configmaps/ov-c", NULL));
    int n = reconciles("ov", NULL);
    fa_hold_watch(NULL);
    fa_settle(300);
    CHECK(reconciles("ov", NULL) == n,
          "the echo of our own write reconciles nothing (%d more)",
          reconciles("ov", NULL) - n);

    /* An overlay past its TTL: the cache (still lagging) is believed. */
    fa_hold_watch("configmaps");
    put_ds("ov", ",\"v\":\"b\"");
    CHECK(fa_wait_write(w0, "/configmaps/ov-c", "\"v\":\"b\""),
          "a new rendering is applied");
    fa_settle(200);
    int applies = fa_count_writes(w0, "/configmaps/ov-c", NULL);
    advance(TRACKING_OVERLAY_TTL_MS + 1000);
    put_ds("ov", ",\"v\":\"b\",\"note\":\"y\"");
    CHECK(fa_wait_writes(w0, "/configmaps/ov-c", NULL, applies + 1),
          "after the TTL the overlay is dropped: applied again (%d)",
          fa_count_writes(w0, "/configmaps/ov-c", NULL) - applies);
    fa_hold_watch(NULL);
    fa_settle(300);
    controller_free(c);
    policy_set_free(ps);
    cleanup("ov");
}

/*
 * The echo race: the watch event of our own apply arrives before the
 * apply's answer (fa_hold_answer). Held with the write in flight, it is
 * recognised as the echo when the answer returns that version: no second
 * reconcile (which, after a failed write, would also skip the backoff:
 * test_requeue under load). Another writer's change that comes while our
 * write is in flight is not lost: the answer's version differs, the key
 * is queued and the change is reconciled.
 */
static void test_echo_race(void)
{
    struct policy_set *ps = policy(POLICY_V("a"));
    fa_hold_answer("/configmaps/ec-c");
    put_ds("ec", "");
    int w0 = fa_nwrites();
    struct controller *c = start(ps);
    CHECK(fa_wait_answer(w0, "/configmaps/ec-c", 201),
          "echo race: the ConfigMap is created, its answer held");
    CHECK(fa_wait_sent(test_ms(200)), "... its watch event is sent first");
    CHECK(reconciles("ec", NULL) == 0, "... the reconcile is in flight");
    fa_hold_answer(NULL);
    CHECK(wait_reconciles("ec", "result=success", 1),
          "... the answer comes: the reconcile succeeds");
    fa_settle(300);
    CHECK(reconciles("ec", NULL) == 1,
          "... and the echo that overtook it reconciles nothing (%d more)",
          reconciles("ec", NULL) - 1);

    /* Another writer's change while our apply of a new rendering is in
     * flight (the ConfigMap, then its echo and the change). */
    fa_hold_answer("/configmaps/ec-c");
    int w1 = fa_nwrites();
    put_ds("ec", ",\"v\":\"b\"");
    CHECK(fa_wait_answer(w1, "/configmaps/ec-c", 200),
          "a new rendering is applied, its answer held");
    cJSON *cm = fa_get("configmaps", "ec-c");
    cJSON *data = cJSON_GetObjectItemCaseSensitive(cm, "data");
    cJSON_ReplaceItemInObjectCaseSensitive(data, "v", cJSON_CreateString("x"));
    char *text = cJSON_PrintUnformatted(cm);
    fa_put("configmaps", text);
    free(text);
    cJSON_Delete(cm);
    CHECK(fa_wait_sent(test_ms(200)),
          "... another writer changes the ConfigMap meanwhile");
    int n = reconciles("ec", NULL);
    fa_hold_answer(NULL);
    CHECK(wait_reconciles("ec", NULL, n + 2),
          "... the answer's version is not the last one seen: the change is "
          "reconciled");
    CHECK(fa_wait_writes(w1, "/configmaps/ec-c", "\"v\":\"b\"", 2),
          "... and the rendering applied again (%d)",
          fa_count_writes(w1, "/configmaps/ec-c", NULL));
    fa_settle(300);
    controller_free(c);
    policy_set_free(ps);
    cleanup("ec");
}

/*
 * 422: an object the API refuses as rendered is retried until
 * CONTROLLER_MAX_REJECTS refusals, then left alone and reported in the
 * status; while it is reported a Pod event runs a full reconcile (not a
 * status-only one) that still does not send it; a new rendering of it is
 * sent again.
 */
static void test_rejects(void)
{
    struct policy_set *ps = policy(POLICY_V("a"));
    fa_fail("PATCH", "/configmaps/rj-c", 422,
            "ConfigMap rj-c is invalid: data.v: Invalid value", -1);
    put_ds("rj", "");
    int w0 = fa_nwrites();
    struct controller *c = start(ps);
    CHECK(fa_wait_writes(w0, "/configmaps/rj-c", NULL, CONTROLLER_MAX_REJECTS),
          "422: the refused apply is retried");
    CHECK(wait_reconciles("rj", "result=success", 1),
          "... then given up: the reconcile succeeds, nothing to retry");
    fa_settle(500);
    CHECK(fa_count_writes(w0, "/configmaps/rj-c", NULL) ==
              CONTROLLER_MAX_REJECTS,
          "... after exactly CONTROLLER_MAX_REJECTS attempts (%d)",
          fa_count_writes(w0, "/configmaps/rj-c", NULL));
    CHECK(reconciles("rj", "result=error") == CONTROLLER_MAX_REJECTS - 1,
          "... the earlier refusals were errors, retried with backoff (%d)",
          reconciles("rj", "result=error"));
    char *st = fa_last_write("/dittoservers/rj/status");
    CHECK(st && strstr(st, "\"reason\":\"ApplyFailed\"") &&
              strstr(st, "cannot apply ConfigMap rj-c: ") &&
              strstr(st, "ConfigMap rj-c is invalid: data.v: Invalid value"),
          "... and reported: Reconciled=False/ApplyFailed with the API's "
          "message (%s)",
          st ? st : "none");
    free(st);

    int full = reconciles("rj", "eval=full");
    put_pod("rj", "rj-0");
    CHECK(wait_reconciles("rj", "eval=full", full + 1),
          "a Pod event while an object is refused: a full reconcile");
    fa_settle(300);
    CHECK(reconciles("rj", "eval=status") == 0, "... never a status-only one");
    CHECK(fa_count_writes(w0, "/configmaps/rj-c", NULL) ==
              CONTROLLER_MAX_REJECTS,
          "... which does not send the refused object again");

    fa_fail_clear();
    w0 = fa_nwrites();
    put_ds("rj", ",\"v\":\"short\"");
    CHECK(fa_wait_write(w0, "/configmaps/rj-c", "\"v\":\"short\""),
          "a new rendering of the refused object is sent");
    fa_settle(300);
    st = fa_last_write("/dittoservers/rj/status");
    CHECK(st && strstr(st, "ApplyFailed") == NULL,
          "... accepted: the ApplyFailed condition goes (%s)",
          st ? st : "none");
    free(st);
    int status0 = reconciles("rj", "eval=status");
    put_pod("rj", "rj-0"); /* an update of the Pod */
    CHECK(wait_reconciles("rj", "eval=status", status0 + 1),
          "clean again: a Pod event runs status() alone");
    controller_free(c);
    policy_set_free(ps);
    cleanup("rj");
    fa_delete("pods", "rj-0");
}

/*
 * Requeues on the test clock: status()'s requeue-after comes due only
 * when the clock reaches it; a failed write is retried after the per-key
 * backoff (base, then twice base), not before.
 */
static void test_requeue(void)
{
    struct policy_set *ps = policy(POLICY_V("a"));
    put_ds("rq", ",\"requeue\":120");
    struct controller *c = start_backoff(ps, 60000);
    CHECK(wait_reconciles("rq", "result=requeue_after", 1),
          "requeue: status() asks for a reconcile in 120 s");
    fa_settle(300);
    int n = reconciles("rq", NULL);
    advance(60000);
    fa_settle(300);
    CHECK(reconciles("rq", NULL) == n, "... not after 60 s (%d)",
          reconciles("rq", NULL) - n);
    advance(61000);
    CHECK(wait_reconciles("rq", NULL, n + 1), "... after 121 s");
    fa_settle(200);

    fa_fail("PATCH", "/configmaps/bo-c", 500, "etcdserver: request timed out",
            2);
    int w0 = fa_nwrites();
    put_ds("bo", "");
    CHECK(fa_wait_write(w0, "/configmaps/bo-c", NULL) &&
              wait_reconciles("bo", "result=error", 1),
          "backoff: a failed apply is an error");
    fa_settle(300);
    CHECK(fa_count_writes(w0, "/configmaps/bo-c", NULL) == 1,
          "... not retried before the backoff (60 s) passes");
    advance(61000);
    CHECK(fa_wait_writes(w0, "/configmaps/bo-c", NULL, 2) &&
              wait_reconciles("bo", "result=error", 2),
          "... retried after it, failing again");
    advance(61000);
    fa_settle(300);
    CHECK(fa_count_writes(w0, "/configmaps/bo-c", NULL) == 2,
          "... the second backoff is twice as long: nothing after 61 s");
    advance(60000);
    CHECK(fa_wait_writes(w0, "/configmaps/bo-c", NULL, 3) &&
              wait_reconciles("bo", "result=success", 1),
          "... retried after 121 s: applied");
    controller_free(c);
    policy_set_free(ps);
    fa_fail_clear();
    cleanup("rq");
    cleanup("bo");
}

/*
 * A child deleted while its DittoServer is cached: re-created once the
 * apiserver confirms the DittoServer (a repair); not re-created when the
 * apiserver no longer has it and only its watch lags (the garbage
 * collector deleted the child: re-creating it from the cache was a write
 * loop against the collector, spec/integration/faults_test.sh), nor by
 * the reconciles that follow, until the DittoServer's DELETED event.
 */
static void test_suspects(void)
{
    struct policy_set *ps = policy(POLICY_V("a"));
    put_ds("sus", "");
    int w0 = fa_nwrites();
    struct controller *c = start(ps);
    CHECK(fa_wait_write(w0, "/configmaps/sus-c", NULL),
          "suspects: the ConfigMap is applied");
    fa_settle(200);
    int w1 = fa_nwrites();
    fa_delete("configmaps", "sus-c");
    CHECK(fa_wait_write(w1, "/configmaps/sus-c", NULL),
          "a ConfigMap deleted by someone is re-created (the DittoServer "
          "is there)");
    fa_settle(200);
    int w2 = fa_nwrites();
    int gone0 = fa_log_count("DittoServer gone on the apiserver", NULL, NULL);
    fa_hold_watch("dittoservers");
    fa_delete("dittoservers", "sus");
    fa_delete("configmaps", "sus-c");
    CHECK(fa_wait_log("DittoServer gone on the apiserver", "key=" FA_NS "/sus",
                      NULL, gone0 + 1),
          "the DittoServer gone, its DELETED event held back: the reconcile "
          "asks the apiserver");
    /* the reconciles that follow (a Pod of it, say) write nothing either */
    put_pod("sus", "sus-0");
    fa_settle(300);
    CHECK(fa_count_writes(w2, "/configmaps/sus-c", NULL) == 0 &&
              fa_count_writes(w2, "/dittoservers/sus", NULL) == 0,
          "... and writes nothing (%d ConfigMap, %d status writes)",
          fa_count_writes(w2, "/configmaps/sus-c", NULL),
          fa_count_writes(w2, "/dittoservers/sus", NULL));
    fa_hold_watch(NULL);
    fa_settle(300);
    CHECK(fa_count_writes(w2, "/configmaps/sus-c", NULL) == 0,
          "... nor once its DELETED event comes");
    put_ds("sus", "");
    CHECK(fa_wait_write(w2, "/configmaps/sus-c", NULL),
          "a new DittoServer of that name gets its ConfigMap");
    fa_settle(200);
    controller_free(c);
    policy_set_free(ps);
    fa_delete("pods", "sus-0");
    cleanup("sus");
}

/*
 * The fence of an update (409): an apply carries the uid and
 * resourceVersion of the child it was computed from, so a write held
 * until someone else changed the object (a new leader, a user) is refused
 * instead of undoing that change, and so is one computed on a cached
 * child the apiserver no longer has. A refusal is no error: result
 * "requeue" with the stale child named, no ApplyFailed Event or
 * condition, no status written from the stale state; the retry on the
 * version the watch brings lands, and then nothing more is written. The
 * status write is fenced the same way.
 */
static void test_conflicts(void)
{
    struct policy_set *ps = policy(POLICY_V("a"));
    put_ds("cf", "");
    int w0 = fa_nwrites();
    struct controller *c = start(ps);
    CHECK(fa_wait_write(w0, "/configmaps/cf-c", NULL) &&
              wait_reconciles("cf", "result=success", 1),
          "conflicts: the ConfigMap is created");
    fa_settle(200);
    char *b = fa_last_write("/configmaps/cf-c");
    cJSON *sent = cJSON_Parse(b ? b : "");
    const cJSON *smd = cJSON_GetObjectItem(sent, "metadata");
    CHECK(smd && !cJSON_GetObjectItem(smd, "resourceVersion") &&
              !cJSON_GetObjectItem(smd, "uid"),
          "... a create carries no precondition (%s)", b ? b : "none");
    cJSON_Delete(sent);
    free(b);
    cJSON *live = fa_get("configmaps", "cf-c");
    const cJSON *md = cJSON_GetObjectItem(live, "metadata");
    char rv0[32], uid[64];
    snprintf(rv0, sizeof(rv0), "\"resourceVersion\":\"%s\"",
             cJSON_GetStringValue(cJSON_GetObjectItem(md, "resourceVersion")));
    snprintf(uid, sizeof(uid), "\"uid\":\"%s\"",
             cJSON_GetStringValue(cJSON_GetObjectItem(md, "uid")));
    cJSON_Delete(live);

    /* A held write: the apply is stalled while another writer (the new
     * leader) changes the ConfigMap; it reaches the server after that. */
    int w1 = fa_nwrites();
    fa_stall("/configmaps/cf-c");
    put_ds("cf", ",\"v\":\"x\"");
    CHECK(fa_wait_write(w1, "/configmaps/cf-c", "\"v\":\"x\""),
          "held: an update is sent");
    b = fa_last_write("/configmaps/cf-c");
    CHECK(b && strstr(b, rv0) && strstr(b, uid),
          "... with the uid and resourceVersion it was computed from (%s)",
          b ? b : "none");
    free(b);
    fa_hold_watch("configmaps");
    fa_put("configmaps",
           "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{"
           "\"name\":\"cf-c\",\"namespace\":\"" FA_NS "\",\"labels\":{"
           "\"app.kubernetes.io/managed-by\":\"dittofs-operator\","
           "\"dittofs.dittofs.com/server\":\"cf\"}},"
           "\"data\":{\"v\":\"leader-b\",\"p\":\"a\"}}");
    int req0 = reconciles("cf", "result=requeue");
    fa_stall(NULL);
    CHECK(wait_reconciles("cf", "result=requeue", req0 + 1),
          "... it arrives after another writer's change: refused, the "
          "reconcile requeued");
    CHECK(fa_count_answers(w1, "/configmaps/cf-c", 409) >= 1 &&
              fa_count_answers(w1, "/configmaps/cf-c", 200) == 0,
          "... 409, nothing landed while the watch lags (%d refused)",
          fa_count_answers(w1, "/configmaps/cf-c", 409));
    CHECK(fa_log_count("msg=\"reconciled\"", "key=" FA_NS "/cf ",
                       "stale=\"ConfigMap cf-c\"") >= 1,
          "... the log line names the stale child");
    cJSON *now = fa_get("configmaps", "cf-c");
    char *data = cJSON_PrintUnformatted(cJSON_GetObjectItem(now, "data"));
    CHECK_STR_EQ(data, "{\"v\":\"leader-b\",\"p\":\"a\"}",
                 "... the other writer's data stands");
    free(data);
    cJSON_Delete(now);
    /* the watch lags a second more, then catches up: the retries meanwhile
     * back off (50 ms doubling, 500 ms at most here); the one on the
     * version the watch brings lands */
    nt_run_for(&FA.t, 1000);
    fa_hold_watch(NULL);
    CHECK(fa_wait_answer(w1, "/configmaps/cf-c", 200) &&
              wait_reconciles("cf", "result=success", 2),
          "... the retry on the version the watch brings lands");
    fa_settle(300);
    int refused = fa_count_answers(w1, "/configmaps/cf-c", 409);
    CHECK(refused >= 1 && refused <= 7,
          "... after a bounded number of refusals in 1 s of lag (%d; "
          "per-key backoff)",
          refused);
    CHECK(reconciles("cf", "result=error") == 0 &&
              fa_count_writes(w1, "/dittoservers/cf/status", "ApplyFailed") ==
                  0,
          "... no error, no ApplyFailed condition");
    int w2 = fa_nwrites();
    fa_settle(300);
    CHECK(fa_nwrites() == w2, "... then nothing is written (%d)",
          fa_nwrites() - w2);

    /* A cached child the apiserver no longer has (its DELETED event held
     * back): the update is refused (uid mismatch), not a create; the
     * child is created once the watch says it is gone. */
    fa_hold_watch("configmaps");
    fa_delete("configmaps", "cf-c");
    int w3 = fa_nwrites();
    put_ds("cf", ",\"v\":\"y\"");
    CHECK(fa_wait_write(w3, "/configmaps/cf-c", "\"v\":\"y\"") &&
              wait_reconciles("cf", "result=requeue", req0 + 2),
          "gone: an update of a child deleted meanwhile is refused");
    CHECK(fa_count_answers(w3, "/configmaps/cf-c", 201) == 0,
          "... it does not create the child again");
    fa_hold_watch(NULL);
    CHECK(fa_wait_answer(w3, "/configmaps/cf-c", 201),
          "... created once the watch has its DELETED event");
    fa_settle(300);
    CHECK(reconciles("cf", "result=error") == 0, "... no error");

    /* The status write: refused once (the DittoServer changed), written
     * by the retry. */
    fa_fail("PATCH", "/dittoservers/cs/status", 409,
            "Operation cannot be fulfilled on dittoservers \\\"cs\\\": the "
            "object has been modified",
            1);
    int w4 = fa_nwrites();
    put_ds("cs", "");
    CHECK(wait_reconciles("cs", "result=requeue", 1) &&
              fa_wait_answer(w4, "/dittoservers/cs/status", 200),
          "status: a refused status write is requeued, then written");
    b = fa_last_write("/dittoservers/cs/status");
    CHECK(b && strstr(b, "\"resourceVersion\":\"") && strstr(b, "\"uid\":\""),
          "... fenced with the DittoServer's uid and resourceVersion (%s)",
          b ? b : "none");
    free(b);
    fa_settle(300);
    CHECK(reconciles("cs", "result=error") == 0 &&
              fa_count_writes(w4, "/events", "cs") == 0,
          "... no error, no Event");
    controller_free(c);
    policy_set_free(ps);
    fa_fail_clear();
    cleanup("cf");
    cleanup("cs");

    /* A prune: fenced by the uid and resourceVersion it was read at. */
    ps = policy(POLICY_DROP);
    put_ds("pr", "");
    w0 = fa_nwrites();
    c = start(ps);
    CHECK(fa_wait_write(w0, "/configmaps/pr-c", NULL),
          "prune: the ConfigMap is created");
    fa_settle(200);
    fa_hold_watch("configmaps");
    /* another writer changes the ConfigMap (its watch lagging) */
    cJSON *cm = fa_get("configmaps", "pr-c");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(cm, "data"), "v",
                              cJSON_CreateString("other"));
    char *text = cJSON_PrintUnformatted(cm);
    fa_put("configmaps", text);
    free(text);
    cJSON_Delete(cm);
    int w5 = fa_nwrites();
    int rq = reconciles("pr", "result=requeue");
    put_ds("pr", ",\"drop\":true");
    CHECK(fa_wait_write(w5, "/configmaps/pr-c", "\"resourceVersion\"") &&
              wait_reconciles("pr", "result=requeue", rq + 1),
          "prune: a prune computed before another writer's change carries "
          "its resourceVersion and is refused (requeued)");
    CHECK(fa_count_answers(w5, "/configmaps/pr-c", 200) == 0,
          "... the changed ConfigMap is not deleted while the watch lags");
    fa_hold_watch(NULL);
    CHECK(fa_wait_answer(w5, "/configmaps/pr-c", 200),
          "... deleted by the retry on the version the watch brings");
    fa_settle(300);
    CHECK(reconciles("pr", "result=error") == 0, "... no error");
    controller_free(c);
    policy_set_free(ps);
    cleanup("pr");
}

int main(void)
{
    loop_set_clock(test_clock, NULL);
    fa_start(NULL);
    fa_log_to_file("test_controller");
    test_policy_sets();
    test_set_in_flight();
    test_sts_claims();
    test_events();
    test_overlays();
    test_echo_race();
    test_rejects();
    test_requeue();
    test_suspects();
    test_conflicts();
    fa_log_restore();
    fa_stop();
    return TEST_SUMMARY();
}
