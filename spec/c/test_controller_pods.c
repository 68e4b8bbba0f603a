/*
 * test_controller_pods: the controller and the servers' Pods, against a
 * small in-memory apiserver on 127.0.0.1 (lists, watches as chunked
 * streams of events, server-side apply as "store what was sent", the
 * status subresource, deletes: fakeapi.h). It checks what only the controller
 * can get wrong, the API semantics being itest's and the e2e tests' business:
 *  - the Pod informer lists and watches pods by the managed-by label, and
 *    the applied StatefulSet's pod template carries the core's labels;
 *  - a Pod event maps to its DittoServer by the server label and runs a
 *    status-only reconcile (log eval=status) that writes the status once
 *    when the derived status changes (CrashLoopBackOff, phase Failed),
 *    and nothing when only the pod's times and counters change;
 *  - a StatefulSet event still runs a full reconcile;
 *  - a Pod is never written (no request on a pods path but list/watch),
 *    and a policy that renders one gets PolicyError without any write of
 *    it.
 * Uses the embedded policies and a --policies directory.
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

#define NS FA_NS

/* --- fixtures ----------------------------------------------------------- */

static void put_ds(const char *name)
{
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"dittofs.dittofs.com/v1alpha1\","
             "\"kind\":\"DittoServer\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"" NS "\",\"generation\":1},"
             "\"spec\":{\"image\":\"img\",\"replicas\":1,\"nfsPort\":2049,"
             "\"storage\":{\"metadataSize\":\"1Gi\"},"
             "\"service\":{\"type\":\"ClusterIP\"}}}",
             name);
    fa_put("dittoservers", buf);
}

/* The pod ds-0 of DittoServer ds: its container waiting for `reason`
 * with `message`, after `restarts` restarts, the last run ended at `at`. */
static void put_pod(const char *reason, const char *message, int restarts,
                    const char *at, int ready)
{
    char buf[4096];
    snprintf(
        buf, sizeof(buf),
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{"
        "\"name\":\"ds-0\",\"namespace\":\"" NS "\",\"labels\":{"
        "\"app.kubernetes.io/managed-by\":\"dittofs-operator\","
        "\"dittofs.dittofs.com/server\":\"ds\"},"
        "\"managedFields\":[{\"manager\":\"kubelet\"}]},"
        "\"spec\":{\"containers\":[{\"name\":\"dittofs\",\"image\":\"img\"}]},"
        "\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":"
        "\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"%s\"}],"
        "\"containerStatuses\":[{\"name\":\"dittofs\",\"image\":\"img\","
        "\"ready\":%s,\"restartCount\":%d,\"state\":%s%s%s%s%s,"
        "\"lastState\":{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\","
        "\"message\":\"bad config\",\"finishedAt\":\"%s\"}}}]}}",
        at, ready ? "true" : "false", restarts,
        reason ? "{\"waiting\":{\"reason\":\"" : "{\"running\":{}}",
        reason ? reason : "", reason ? "\",\"message\":\"" : "",
        reason ? message : "", reason ? "\"}}" : "", at);
    fa_put("pods", buf);
}

static void put_sts_status(int ready)
{
    pthread_mutex_lock(&FA.mu);
    struct fa_obj *f = fa_find("statefulsets", "ds");
    cJSON *o = f ? cJSON_Duplicate(f->obj, 1) : NULL;
    if (o != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(o, "status");
        cJSON *st = cJSON_AddObjectToObject(o, "status");
        cJSON_AddNumberToObject(st, "replicas", 1);
        cJSON_AddNumberToObject(st, "readyReplicas", ready);
        fa_store("statefulsets", o, 0);
    }
    pthread_mutex_unlock(&FA.mu);
}

/* --- cases -------------------------------------------------------------- */

static struct controller *start(struct policy_set *ps)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct controller_opts o = {
        .namespace = NS,
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

static void test_pods(void)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(NULL, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    put_ds("ds");
    struct controller *c = start(ps);
    CHECK(nt_wait(&FA.t, is_synced, c, test_ms(20000)),
          "the informers sync, the Pod informer with them");
    CHECK(fa_wait_write(0, "/dittoservers/ds/status", NULL),
          "the DittoServer is reconciled (status written)");
    fa_settle(500);
    int n = 0;
    pthread_mutex_lock(&FA.mu);
    for (int i = 0; i < FA.npod_paths; i++)
        if (strstr(FA.pod_paths[i], "GET /api/v1/namespaces/" NS "/pods?") !=
                NULL &&
            strstr(FA.pod_paths[i], "labelSelector=app.kubernetes.io%2F"
                                    "managed-by%3Ddittofs-operator") != NULL)
            n++;
    pthread_mutex_unlock(&FA.mu);
    CHECK(n >= 2, "pods listed and watched by the managed-by label (%d)", n);
    char *sts = fa_last_write("/statefulsets/ds");
    cJSON *sj = sts ? cJSON_Parse(sts) : NULL;
    cJSON *tl = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(sj, "spec"), "template"),
            "metadata"),
        "labels");
    const char *srv = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(tl, "dittofs.dittofs.com/server"));
    const char *mgr = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(tl, "app.kubernetes.io/managed-by"));
    CHECK(srv && strcmp(srv, "ds") == 0 && mgr &&
              strcmp(mgr, "dittofs-operator") == 0,
          "the applied StatefulSet's pod template carries the core's labels");
    cJSON_Delete(sj);
    free(sts);
    int full0 = fa_log_count("msg=\"reconciled\"", "eval=full", NULL);
    CHECK(full0 >= 1 &&
              fa_log_count("msg=\"reconciled\"", "eval=status", NULL) == 0,
          "startup: full reconciles only (%d)", full0);

    /* The kubelet reports a crash loop. */
    int w0 = fa_nwrites();
    put_pod("CrashLoopBackOff",
            "back-off 40s restarting failed container=dittofs pod=ds-0_t(u)", 2,
            "2024-05-01T10:05:00Z", 0);
    CHECK(fa_wait_write(w0, "/dittoservers/ds/status", "CrashLoopBackOff"),
          "a Pod in CrashLoopBackOff: the status is written");
    fa_settle(500);
    char *st = fa_last_write("/dittoservers/ds/status");
    CHECK(st && strstr(st, "\"phase\":\"Failed\"") &&
              strstr(st, "pod ds-0, container dittofs: back-off restarting "
                         "failed container; last termination: Error, exit "
                         "code 1: bad config"),
          "... phase Failed, Ready=False/CrashLoopBackOff with the last "
          "termination");
    free(st);
    CHECK(fa_count_writes(w0, "", NULL) == 1,
          "... and nothing else is written (%d writes)",
          fa_count_writes(w0, "", NULL));
    /* The write can arrive before the reconcile logs its end: wait. */
    CHECK(fa_wait_log("msg=\"reconciled\"", "eval=status", "writes=1", 1) &&
              fa_log_count("msg=\"reconciled\"", "eval=full", NULL) == full0,
          "... by a status-only reconcile");

    /* Only the back-off, the counters and the times change. */
    w0 = fa_nwrites();
    int st0 = fa_log_count("msg=\"reconciled\"", "eval=status", NULL);
    put_pod("CrashLoopBackOff",
            "back-off 5m0s restarting failed container=dittofs pod=ds-0_t(u)",
            7, "2024-05-01T11:45:00Z", 0);
    CHECK(fa_wait_log("msg=\"reconciled\"", "eval=status", NULL, st0 + 1),
          "a Pod update: a status-only reconcile");
    fa_settle(500);
    CHECK(fa_count_writes(w0, "", NULL) == 0,
          "... which writes nothing when the derived status is the same "
          "(%d writes)",
          fa_count_writes(w0, "", NULL));

    /* Between two restarts: running, not ready. */
    put_pod(NULL, NULL, 8, "2024-05-01T11:50:00Z", 0);
    CHECK(fa_wait_log("msg=\"reconciled\"", "eval=status", NULL, st0 + 2),
          "the restarted container: a status-only reconcile");
    fa_settle(500);
    CHECK(fa_count_writes(w0, "", NULL) == 0,
          "... still CrashLoopBackOff: no write (%d)",
          fa_count_writes(w0, "", NULL));

    /* Ready: the StatefulSet says so, a full reconcile says Running. */
    int full1 = fa_log_count("msg=\"reconciled\"", "eval=full", NULL);
    put_pod(NULL, NULL, 8, "2024-05-01T11:50:00Z", 1);
    put_sts_status(1);
    CHECK(fa_wait_write(w0, "/dittoservers/ds/status", "\"phase\":\"Running\""),
          "a StatefulSet with a ready replica: Running");
    /* The status write is seen before the reconcile logs its end. */
    CHECK(fa_wait_log("msg=\"reconciled\"", "eval=full", NULL, full1 + 1),
          "... from a full reconcile");
    fa_settle(500);

    pthread_mutex_lock(&FA.mu);
    int pod_writes = 0;
    for (int i = 0; i < FA.npod_paths; i++)
        if (strncmp(FA.pod_paths[i], "GET ", 4) != 0)
            pod_writes++;
    pthread_mutex_unlock(&FA.mu);
    CHECK(pod_writes == 0 && fa_count_writes(0, "/pods", NULL) == 0,
          "no request on a pods path but GET (%d)", pod_writes);
    controller_free(c);
    policy_set_free(ps);
    dbuf_free(&err);
}

/* A policy rendering a Pod: refused before any write, PolicyError. */
static void test_rendered_pod(void)
{
    char dir[256], path[320];
    snprintf(dir, sizeof(dir), "/tmp/test_controller_pods-%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("local M = {}\n"
          "function M.render(ds, ctx)\n"
          "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
          "    metadata = { name = ctx.name .. '-c' } },\n"
          "    { apiVersion = 'v1', kind = 'Pod',\n"
          "      metadata = { name = ctx.name .. '-p' } } }\n"
          "end\n"
          "function M.status(ds, observed, ctx)\n"
          "  return { phase = 'Pending' }\n"
          "end\n"
          "return M\n",
          f);
    fclose(f);
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(dir, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    int w0 = fa_nwrites();
    put_ds("podder");
    struct controller *c = start(ps);
    CHECK(fa_wait_write(w0, "/dittoservers/podder/status", "PolicyError"),
          "a rendered Pod: Reconciled=False/PolicyError");
    char *st = fa_last_write("/dittoservers/podder/status");
    CHECK(st && strstr(st, "the operator manages only ConfigMaps, Services "
                           "and StatefulSets"),
          "... saying which kinds are managed");
    free(st);
    CHECK(fa_count_writes(w0, "/configmaps/podder-c", NULL) == 0 &&
              fa_count_writes(w0, "/pods", NULL) == 0,
          "... and nothing of that rendering is written");
    controller_free(c);
    policy_set_free(ps);
    dbuf_free(&err);
    unlink(path);
    rmdir(dir);
}

/* Issue 11: an integer above 2^53 in a rendered object and in the status
 * reaches the apiserver exact (cJSON's doubles made 2^53+1 into 2^53). */
static void test_exact_integers(void)
{
    char dir[256], path[320];
    snprintf(dir, sizeof(dir), "/tmp/test_controller_pods-x%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("local M = {}\n"
          "function M.render(ds, ctx)\n"
          "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
          "    metadata = { name = ctx.name .. '-c' },\n"
          "    x = 9007199254740993 } }\n"
          "end\n"
          "function M.status(ds, observed, ctx)\n"
          "  return { phase = 'Pending', big = -9007199254740993 }\n"
          "end\n"
          "return M\n",
          f);
    fclose(f);
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct policy_set *ps = NULL;
    if (policy_set_load(dir, &ps, &err) != POLICY_OK) {
        printf("Bail out! policies: %s\n", dbuf_ptr(&err));
        exit(1);
    }
    int w0 = fa_nwrites();
    put_ds("exact");
    struct controller *c = start(ps);
    CHECK(fa_wait_write(w0, "/configmaps/exact-c", NULL) &&
              fa_wait_write(w0, "/dittoservers/exact/status", NULL),
          "exact: the ConfigMap and the status are written");
    char *cm = fa_last_write("/configmaps/exact-c");
    char *st = fa_last_write("/dittoservers/exact/status");
    CHECK(cm && strstr(cm, "\"x\":9007199254740993"),
          "... the rendered 2^53+1 exact (%s)", cm ? cm : "none");
    CHECK(st && strstr(st, "\"big\":-9007199254740993"),
          "... the status' -(2^53+1) exact (%s)", st ? st : "none");
    free(cm);
    free(st);
    controller_free(c);
    policy_set_free(ps);
    dbuf_free(&err);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    fa_start(NULL);
    fa_log_to_file("test_controller_pods");
    test_pods();
    test_rendered_pod();
    test_exact_integers();
    fa_log_restore();
    fa_stop();
    return TEST_SUMMARY();
}
