/*
 * test_controller: the controller's own paths without a cluster, against
 * the in-memory apiserver of fakeapi.h:
 *  - controller_try_policies evaluates a candidate policy set on every
 *    cached DittoServer with its observed children and Pods, writes
 *    nothing, passes an InvalidSpec verdict and fails on a script error
 *    or a refused kind with "ns/name: message" and a count of the
 *    others; controller_set_policies switches to a set (the old one freed
 *    at once) and reconciles every DittoServer fully under it.
 * Uses the controller, policy sets from a temporary --policies directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "controller.h"
#include "fakeapi.h"
#include "log.h"
#include "testlib.h"

/* --- fixtures ------------------------------------------------------------ */

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

static struct controller *start(struct policy_set *ps)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct controller_opts o = {
        .namespace = FA_NS,
        .limits = {.timeout_ms = test_ms(1000)},
        .backoff_base_ms = 50,
        .backoff_max_ms = 500,
    };
    struct controller *c = controller_new(FA.t.http, ps, NULL, NULL, &o, &err);
    if (c == NULL || controller_start(c) != 0) {
        printf("Bail out! controller: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    dbuf_free(&err);
    controller_set_leading(c, 1);
    return c;
}

static int is_synced(void *arg)
{
    return controller_synced(arg);
}

/* --- policy sets ---------------------------------------------------------- */

/* Renders ConfigMap <name>-c with data.v = V; a spec with `bad` is
 * invalid. */
#define POLICY_V(V)                                                            \
    "local M = {}\n"                                                           \
    "function M.validate(ds)\n"                                                \
    "  if ds.spec.bad then return { 'spec.bad: not allowed' }, {} end\n"       \
    "  return {}, {}\n"                                                        \
    "end\n"                                                                    \
    "function M.render(ds, ctx)\n"                                             \
    "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"                    \
    "    metadata = { name = ds.metadata.name .. '-c' },\n"                    \
    "    data = { v = '" V "' } } }\n"                                         \
    "end\n"                                                                    \
    "function M.status(ds, observed, ctx)\n"                                   \
    "  return { phase = 'Pending' }\n"                                         \
    "end\n"                                                                    \
    "return M\n"

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

static void test_policy_sets(void)
{
    struct policy_set *a = policy(POLICY_V("a"));
    put_ds("ds1", "");
    put_ds("ds2", ",\"bad\":true");
    put_ds("ds3", "");
    put_pod("ds1", "ds1-0");
    struct controller *c = start(a);
    CHECK(nt_wait(&FA.t, is_synced, c, test_ms(20000)), "informers synced");
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
    CHECK(strstr(dbuf_ptr(&err), "(and 1 more DittoServer failing)") != NULL,
          "... and the count of the others (ds2 is invalid, not failing)");
    policy_set_free(broken);

    dbuf_reset(&err);
    struct policy_set *secret = policy(POLICY_SECRET);
    rc = controller_try_policies(c, secret, &err);
    CHECK(rc == -1 && strstr(dbuf_ptr(&err), "manages only") != NULL,
          "try: a rendered Secret is a failure (%s)", dbuf_ptr(&err));
    CHECK(strstr(dbuf_ptr(&err), "(and 2 more DittoServers failing)") != NULL,
          "... on all three DittoServers");
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
}

int main(void)
{
    fa_start(NULL);
    fa_log_to_file("test_controller");
    test_policy_sets();
    fa_log_restore();
    fa_stop();
    return TEST_SUMMARY();
}
