/*
 * test_trial: the sliced trial of a candidate policy set
 * (controller_trial_start) against the in-memory apiserver of fakeapi.h,
 * on a controller that is not leading (nothing is reconciled or written):
 *  - a trial over many DittoServers spans several slices, the loop's
 *    timers firing between them, and calls done once, later, with 0;
 *  - a failing DittoServer refuses the set with "ns/name: message";
 *  - a DittoServer deleted while the trial runs is skipped;
 *  - the time bound: past CONTROLLER_TRIAL_MAX_MS of loop time and
 *    CONTROLLER_TRIAL_DS_MS per DittoServer, refused ("the trial took");
 *  - cancel (and controller_free) stop it without calling done and free
 *    everything (spec/memcheck.sh runs this under valgrind).
 * The test clock can move ahead at every read (clock_step_us), so that
 * evaluations take as much loop time as a test wants on any machine.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "controller.h"
#include "fakeapi.h"
#include "log.h"
#include "testlib.h"

#define NDS 40

/* --- fixtures ------------------------------------------------------------ */

static uint64_t clock_offset_us;
static uint64_t clock_step_us; /* added at every read; 0: real time */

static uint64_t test_clock(void *arg)
{
    (void)arg;
    clock_offset_us += clock_step_us;
    return loop_real_us() + clock_offset_us;
}

static int is_synced(void *arg)
{
    return controller_synced(arg);
}

/* A policy set whose dittoserver.lua is `source`; exits when it does not
 * load. */
static struct policy_set *policy(const char *source)
{
    char dir[256], path[320];
    snprintf(dir, sizeof(dir), "/tmp/test_trial-%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(source, f) < 0 || fclose(f) != 0) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(dir, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    dbuf_free(&err);
    unlink(path);
    rmdir(dir);
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

/* Renders a ConfigMap; raises on a spec with `fail` (line 3). */
static const char *const POLICY =
    "local M = {}\n"
    "function M.render(ds, ctx)\n"
    "  if ds.spec.fail then error('fails on ' .. ds.metadata.name) end\n"
    "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
    "    metadata = { name = ds.metadata.name .. '-c' } } }\n"
    "end\n"
    "function M.status(ds, observed, ctx)\n"
    "  return { phase = 'Pending' }\n"
    "end\n"
    "return M\n";

/* What done received. */
static struct {
    int calls;
    int rc;
    char err[2048];
} got;

static struct policy_set *fail_ps; /* POLICY, for bad_cached */

static void on_done(int rc, const char *err, void *arg)
{
    (void)arg;
    got.calls++;
    got.rc = rc;
    snprintf(got.err, sizeof(got.err), "%s", err);
}

/* A zero-delay timer that re-arms itself: how often the loop got to run
 * its timers while a trial went on. */
static struct loop_timer tick_timer;
static unsigned ticks;
static void (*on_tick_hook)(void);

static void on_tick(struct loop_timer *t, void *arg)
{
    (void)arg;
    ticks++;
    if (on_tick_hook != NULL)
        on_tick_hook();
    loop_timer_start(FA.t.loop, t, 0);
}

/* Starts a trial of `ps` and the tick timer; returns start's result. */
static int begin(struct controller *c, struct policy_set *ps)
{
    memset(&got, 0, sizeof(got));
    ticks = 0;
    int rc = controller_trial_start(c, ps, on_done, NULL);
    loop_timer_start(FA.t.loop, &tick_timer, 0);
    return rc;
}

/* Runs the loop until done was called (at most 60 s of real time: the
 * test clock may run fast); stops the ticks. */
static void finish(void)
{
    uint64_t end = loop_real_us() + (uint64_t)test_ms(60000) * 1000;
    while (got.calls == 0 && loop_real_us() < end)
        loop_run_once(FA.t.loop, 100);
    loop_timer_stop(FA.t.loop, &tick_timer);
    on_tick_hook = NULL;
}

/* --- tests --------------------------------------------------------------- */

static void test_slices(struct controller *c, struct policy_set *ps)
{
    int w0 = fa_nwrites();
    int passed0 =
        fa_log_count("policy trial passed", "evaluated=40 ", "skipped=0 ");
    /* Every evaluation reads the clock a few times: >= 3 ms each, so a
     * slice holds at most two DittoServers whatever the machine. */
    clock_step_us = 1000;
    int rc = begin(c, ps);
    CHECK(rc == 0 && controller_trial_running(c), "start: running (%d)", rc);
    CHECK(got.calls == 0, "start: done is not called from start");
    CHECK(controller_trial_start(c, ps, on_done, NULL) == -EBUSY,
          "start: a second one is refused while one runs (-EBUSY)");
    finish();
    clock_step_us = 0;
    CHECK(got.calls == 1 && got.rc == 0 && got.err[0] == '\0',
          "%d DittoServers: done once, passed (%d calls, rc %d, '%s')", NDS,
          got.calls, got.rc, got.err);
    CHECK(!controller_trial_running(c), "... and no longer running");
    CHECK(ticks >= 5,
          "... in slices: the loop's timers ran %u times in between", ticks);
    CHECK(fa_wait_log("policy trial passed", "evaluated=40 ", "skipped=0 ",
                      passed0 + 1),
          "... all %d evaluated (the debug line)", NDS);
    fa_settle(200);
    CHECK(fa_nwrites() == w0, "... nothing was written (%d)",
          fa_nwrites() - w0);
}

/* Is ds-bad cached? The synchronous trial fails on it. */
static int bad_cached(void *arg)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    int rc = controller_try_policies(arg, fail_ps, &err);
    dbuf_free(&err);
    return rc != 0;
}

static void test_failure(struct controller *c, struct policy_set *ps)
{
    put_ds("ds-bad", ",\"fail\":true");
    CHECK(nt_wait(&FA.t, bad_cached, c, test_ms(20000)), "ds-bad cached");
    int rc = begin(c, ps);
    finish();
    CHECK(rc == 0 && got.calls == 1 && got.rc == -1,
          "a failing DittoServer refuses the set (rc %d)", got.rc);
    CHECK(strncmp(got.err, FA_NS "/ds-bad: ", 9) == 0 &&
              strstr(got.err, "dittoserver.lua:3: fails on ds-bad") != NULL,
          "... with ns/name and the policy's message (%s)", got.err);
    CHECK(!controller_trial_running(c), "... and no longer running");
}

/* Between slices, once: deletes ds-bad (sorted first of "ds-b..": after
 * ds-00..ds-39, so dozens of slices away) and gives the server time to
 * send the event. */
static void delete_bad(void)
{
    if (ticks != 1)
        return;
    fa_delete("dittoservers", "ds-bad");
    usleep(test_ms(50) * 1000);
}

static void test_deleted(struct controller *c, struct policy_set *ps)
{
    int passed0 =
        fa_log_count("policy trial passed", "dittoservers=41 ", "skipped=1 ");
    clock_step_us = 1000;
    on_tick_hook = delete_bad;
    int rc = begin(c, ps);
    finish();
    clock_step_us = 0;
    CHECK(rc == 0 && got.calls == 1 && got.rc == 0,
          "a DittoServer deleted during the trial is skipped (rc %d, %s)",
          got.rc, got.err);
    CHECK(fa_wait_log("policy trial passed", "dittoservers=41 ", "skipped=1 ",
                      passed0 + 1),
          "... taken at the start, skipped when its turn came");
}

static void test_too_slow(struct controller *c, struct policy_set *ps)
{
    /* ~0.6-1 s of loop time per DittoServer: past both bounds after a
     * handful. */
    clock_step_us = 200 * 1000;
    int rc = begin(c, ps);
    finish();
    clock_step_us = 0;
    CHECK(rc == 0 && got.calls == 1 && got.rc == -1 &&
              strstr(got.err, "the trial took") != NULL &&
              strstr(got.err, "was not tried on the others") != NULL,
          "a slow policy is refused on the time bound (%s)", got.err);
    unsigned n = 0;
    const char *p = strstr(got.err, " ms for ");
    if (p != NULL)
        n = (unsigned)strtoul(p + 8, NULL, 10);
    CHECK(n > 0 && n < NDS, "... before the end (%u evaluated)", n);
}

static void test_cancel(struct controller *c, struct policy_set *ps)
{
    clock_step_us = 1000;
    int rc = begin(c, ps);
    for (int i = 0; i < 3; i++)
        loop_run_once(FA.t.loop, 0);
    CHECK(rc == 0 && controller_trial_running(c) && got.calls == 0,
          "cancel: a trial under way");
    controller_trial_cancel(c);
    CHECK(!controller_trial_running(c), "cancel: no longer running");
    nt_run_for(&FA.t, 200);
    CHECK(got.calls == 0, "cancel: done is never called");
    controller_trial_cancel(c); /* a no-op */
    loop_timer_stop(FA.t.loop, &tick_timer);
    /* Free with one running: freed with the controller (valgrind). */
    rc = begin(c, ps);
    loop_run_once(FA.t.loop, 0);
    loop_timer_stop(FA.t.loop, &tick_timer);
    clock_step_us = 0;
    CHECK(rc == 0 && controller_trial_running(c), "free: a trial under way");
}

int main(void)
{
    loop_set_clock(test_clock, NULL);
    fa_start(NULL);
    fa_log_to_file("test_trial");
    log_set_level(LOG_DEBUG);
    loop_timer_init(&tick_timer, on_tick, NULL);
    char name[32];
    for (int i = 0; i < NDS; i++) {
        snprintf(name, sizeof(name), "ds-%02d", i);
        put_ds(name, "");
    }
    struct policy_set *ps = policy(POLICY);
    fail_ps = ps;
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct controller_opts o = {
        .namespace = FA_NS,
        .limits = {.timeout_ms = test_ms(1000)},
    };
    struct controller *c = controller_new(FA.t.http, ps, NULL, NULL, &o, &err);
    if (c == NULL || controller_start(c) != 0 ||
        !nt_wait(&FA.t, is_synced, c, test_ms(20000))) {
        printf("Bail out! controller: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    dbuf_free(&err);

    test_slices(c, ps);
    test_failure(c, ps);
    test_deleted(c, ps);
    test_too_slow(c, ps);
    test_cancel(c, ps);

    controller_free(c);
    policy_set_free(ps);
    fa_log_restore();
    fa_stop();
    return TEST_SUMMARY();
}
