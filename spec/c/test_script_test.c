/*
 * test_script_test: --script-test end to end, in process (script_test_run
 * is what main() calls): the README sample and the other samples, JSON
 * output, determinism, observed children and Pods (the status the default
 * policy derives from a crash-looping, image-pulling or unschedulable pod),
 * the core's labels on a StatefulSet's pod template, every kind of bad
 * input of issue 2 (malformed YAML/JSON, not a DittoServer, schema
 * violations with the apiserver's messages, validate() errors, and
 * policies that fail, loop, allocate without bound or return garbage).
 * Every failure must give its exit code, a precise message and no standard
 * output. Then policy_eval with one policy set for many evaluations: every
 * sample gives byte-identical output in a reused state and in a fresh one;
 * nothing a policy writes survives into the next evaluation; the state is
 * rebuilt after a timeout, a memory kill, an error or a tampered shared
 * table, and the next evaluation succeeds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#include "crd.h"
#include "ljson.h"
#include "policy.h"
#include "script_test.h"
#include "testlib.h"
#include "lyaml.h"

static char tmpdir[256];

struct res {
    int code;
    struct dbuf out;
    struct dbuf err;
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

/* Runs the dry run on `file` with optional policies dir and limits. */
static struct res run_opts(const char *file, const char *policies, int json,
                           unsigned timeout_ms, size_t memory)
{
    struct res r;
    struct script_test_options o;
    memset(&o, 0, sizeof(o));
    o.file = file;
    o.policies_dir = policies;
    o.json = json;
    o.limits.timeout_ms = test_ms(timeout_ms ? timeout_ms : 100);
    o.limits.memory_bytes = memory;
    dbuf_init(&r.out, (size_t)64 << 20);
    dbuf_init(&r.err, (size_t)4 << 20);
    r.code = script_test_run(&o, &r.out, &r.err);
    return r;
}

/* Writes `yaml` to a temporary file and runs the embedded policy on it. */
static struct res run_yaml(const char *yaml)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/input.yaml", tmpdir);
    write_file(path, yaml);
    return run_opts(path, NULL, 0, 0, 0);
}

static void res_free(struct res *r)
{
    dbuf_free(&r->out);
    dbuf_free(&r->err);
}

static int has(const struct dbuf *b, const char *s)
{
    return strstr(dbuf_ptr(b), s) != NULL;
}

/* Checks a failure: exit code, message, nothing on stdout. */
static void expect_fail(const char *what, struct res r, int code,
                        const char *msg)
{
    CHECK(r.code == code, "%s: exit %d (got %d)", what, code, r.code);
    CHECK(has(&r.err, msg), "%s: message contains '%s'", what, msg);
    if (!has(&r.err, msg))
        TEST_NOTE("stderr was: %s", dbuf_ptr(&r.err));
    CHECK(dbuf_len(&r.out) == 0, "%s: nothing on stdout", what);
    res_free(&r);
}

static const char ds_head[] = "apiVersion: dittofs.dittofs.com/v1alpha1\n"
                              "kind: DittoServer\n"
                              "metadata:\n"
                              "  name: t1\n";

/* A DittoServer with `spec` (indented two spaces) appended. */
static struct res run_spec(const char *spec)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%sspec:\n%s", ds_head, spec);
    return run_yaml(buf);
}

static const char good_spec[] = "  image: img\n"
                                "  storage:\n"
                                "    metadataSize: 1Gi\n";

static void test_samples(void)
{
    struct res r = run_opts("deploy/samples/dittoserver.yaml", NULL, 0, 0, 0);
    CHECK(r.code == 0, "README sample: exit 0 (%s)", dbuf_ptr(&r.err));
    CHECK(has(&r.out, "kind: ConfigMap") && has(&r.out, "kind: StatefulSet") &&
              has(&r.out, "name: dittofs-sample-headless"),
          "README sample: ConfigMap, Services and StatefulSet");
    CHECK(has(&r.out, "uid: \"00000000-0000-0000-0000-000000000000\"") &&
              has(&r.out, "controller: true") &&
              has(&r.out, "blockOwnerDeletion: true"),
          "owner reference with the placeholder UID");
    CHECK(has(&r.out, "app.kubernetes.io/managed-by: dittofs-operator") &&
              has(&r.out, "dittofs.dittofs.com/server: dittofs-sample") &&
              has(&r.out, "namespace: default"),
          "core labels and the default namespace");
    const char *last = strstr(dbuf_ptr(&r.out), "---\napiVersion: "
                                                "dittofs.dittofs.com/"
                                                "v1alpha1\nkind: "
                                                "DittoServer\n");
    CHECK(last && strstr(last, "status:\n") && strstr(last, "phase: Pending") &&
              strstr(last, "observedGeneration: 1") &&
              !strstr(last, "lastTransitionTime"),
          "the status document comes last, stamped, without a clock");
    CHECK(has(&r.out, "storage: 100Gi") && has(&r.out, "nfsEndpoint: "
                                                       "dittofs-sample."
                                                       "default.svc."
                                                       "cluster.local:"
                                                       "2049"),
          "README sample: content volume and endpoint");
    CHECK(dbuf_len(&r.err) == 0, "README sample: nothing on stderr");

    struct res r2 = run_opts("deploy/samples/dittoserver.yaml", NULL, 0, 0, 0);
    CHECK(dbuf_len(&r.out) == dbuf_len(&r2.out) &&
              memcmp(dbuf_ptr(&r.out), dbuf_ptr(&r2.out), dbuf_len(&r.out)) ==
                  0,
          "two runs are byte-identical");
    res_free(&r);
    res_free(&r2);

    r = run_opts("deploy/samples/dittoserver.yaml", NULL, 1, 0, 0);
    CHECK(r.code == 0 && strncmp(dbuf_ptr(&r.out), "{\"objects\":[", 12) == 0 &&
              has(&r.out, "],\"status\":{\"apiVersion\":\"dittofs.dittofs.com/"
                          "v1alpha1\""),
          "--output json: {\"objects\": [...], \"status\": {...}}");
    res_free(&r);

    static const char *const samples[] = {
        "dittoserver-cache.yaml",        "dittoserver-custom-port.yaml",
        "dittoserver-loadbalancer.yaml", "dittoserver-nodeport.yaml",
        "dittoserver-s3.yaml",           "dittoserver-shares.yaml",
        "dittoserver-stopped.yaml",      NULL,
    };
    for (int i = 0; samples[i]; i++) {
        char path[256];
        snprintf(path, sizeof(path), "deploy/samples/%s", samples[i]);
        if (access(path, R_OK) != 0)
            continue;
        r = run_opts(path, NULL, 0, 0, 0);
        CHECK(r.code == 0, "sample %s renders (%s)", samples[i],
              dbuf_ptr(&r.err));
        res_free(&r);
    }
}

static void test_observed(void)
{
    char buf[4096];
    snprintf(buf, sizeof(buf),
             "%sspec:\n%s---\napiVersion: apps/v1\nkind: StatefulSet\n"
             "metadata:\n  name: t1\nstatus:\n  readyReplicas: 1\n",
             ds_head, good_spec);
    struct res r = run_yaml(buf);
    CHECK(r.code == 0 && has(&r.out, "phase: Running") &&
              has(&r.out, "availableReplicas: 1"),
          "observed StatefulSet with a ready replica -> Running (%s)",
          dbuf_ptr(&r.err));
    res_free(&r);

    snprintf(buf, sizeof(buf),
             "%sspec:\n%s---\napiVersion: v1\nkind: ConfigMap\n"
             "data: {}\n",
             ds_head, good_spec);
    expect_fail("observed child without a name", run_yaml(buf), 1,
                "needs kind and metadata.name");

    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"dittofs.dittofs.com/v1alpha1\",\"kind\":"
             "\"DittoServer\",\"metadata\":{\"name\":\"j\",\"namespace\":"
             "\"ns1\"},\"spec\":{\"image\":\"i\",\"storage\":{"
             "\"metadataSize\":\"1Gi\"}}}");
    struct res j = run_yaml(buf);
    CHECK(j.code == 0 && has(&j.out, "namespace: ns1") &&
              has(&j.out, "j.ns1.svc.cluster.local:2049"),
          "JSON input with a namespace (%s)", dbuf_ptr(&j.err));
    res_free(&j);
}

/* A Pod of the DittoServer t1 whose container dittofs is in `state` (YAML
 * at six spaces) after a last run `last` (same, "" for none). */
static void pod_doc(char *buf, size_t n, const char *name, const char *state,
                    const char *last)
{
    snprintf(buf, n,
             "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n"
             "  namespace: default\n  labels:\n"
             "    app.kubernetes.io/managed-by: dittofs-operator\n"
             "    dittofs.dittofs.com/server: t1\n"
             "status:\n  phase: Running\n  conditions:\n"
             "  - type: PodScheduled\n    status: \"True\"\n"
             "    lastTransitionTime: \"2024-05-01T10:00:00Z\"\n"
             "  containerStatuses:\n  - name: dittofs\n    image: img\n"
             "    ready: false\n    restartCount: 4\n    state:\n%s"
             "    lastState:%s\n",
             name, state, last[0] ? "\n" : " {}");
    if (last[0])
        snprintf(buf + strlen(buf), n - strlen(buf), "%s", last);
}

static const char sts_not_ready[] =
    "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: t1\n"
    "spec:\n  replicas: 1\nstatus:\n  replicas: 1\n  readyReplicas: 0\n";

/* Observed Pods: --script-test prints the status the operator would write
 * for the server's pods (the default policy's rules). */
static void test_observed_pods(void)
{
    static char buf[65536], pod[32768];
    pod_doc(pod, sizeof(pod), "t1-0",
            "      waiting:\n        reason: CrashLoopBackOff\n"
            "        message: back-off 1m20s restarting failed "
            "container=dittofs pod=t1-0_default(u)\n",
            "      terminated:\n        exitCode: 1\n        reason: Error\n"
            "        message: |\n          Error: bad config\n"
            "        startedAt: \"2024-05-01T10:03:00Z\"\n"
            "        finishedAt: \"2024-05-01T10:03:01Z\"\n");
    snprintf(buf, sizeof(buf), "%sspec:\n%s%s%s", ds_head, good_spec,
             sts_not_ready, pod);
    struct res r = run_yaml(buf);
    CHECK(r.code == 0, "a Pod in CrashLoopBackOff: exit 0 (%s)",
          dbuf_ptr(&r.err));
    CHECK(has(&r.out, "phase: Failed") &&
              has(&r.out, "reason: CrashLoopBackOff") &&
              has(&r.out, "message: \"pod t1-0, container dittofs: back-off "
                          "restarting failed container; last termination: "
                          "Error, exit code 1: Error: bad config\""),
          "... prints phase Failed, Ready=False/CrashLoopBackOff with the "
          "last termination");
    if (!has(&r.out, "reason: CrashLoopBackOff"))
        TEST_NOTE("stdout was: %s", dbuf_ptr(&r.out));
    res_free(&r);

    /* The same as JSON, and with a Pod in a JSON list. */
    pod_doc(pod, sizeof(pod), "t1-0",
            "      waiting:\n        reason: ImagePullBackOff\n"
            "        message: Back-off pulling image \"img\"\n",
            "");
    snprintf(buf, sizeof(buf), "%sspec:\n%s%s%s", ds_head, good_spec,
             sts_not_ready, pod);
    char path[600];
    snprintf(path, sizeof(path), "%s/pods.yaml", tmpdir);
    write_file(path, buf);
    r = run_opts(path, NULL, 1, 0, 0);
    CHECK(r.code == 0 && has(&r.out, "\"phase\":\"Failed\"") &&
              has(&r.out, "\"reason\":\"ImagePullBackOff\"") &&
              has(&r.out, "\"message\":\"pod t1-0, container dittofs: "
                          "Back-off pulling image \\\"img\\\"\""),
          "a Pod in ImagePullBackOff, --output json (%s)", dbuf_ptr(&r.err));
    res_free(&r);

    /* Unschedulable (an unbound PVC): Pending. */
    snprintf(buf, sizeof(buf),
             "%sspec:\n%s%s---\napiVersion: v1\nkind: Pod\nmetadata:\n"
             "  name: t1-0\nstatus:\n  phase: Pending\n  conditions:\n"
             "  - type: PodScheduled\n    status: \"False\"\n"
             "    reason: Unschedulable\n    message: '0/1 nodes are "
             "available: 1 pod has unbound immediate "
             "PersistentVolumeClaims.'\n",
             ds_head, good_spec, sts_not_ready);
    r = run_yaml(buf);
    CHECK(r.code == 0 && has(&r.out, "phase: Pending") &&
              has(&r.out, "reason: Unschedulable") &&
              has(&r.out, "message: \"pod t1-0: 0/1 nodes are available: 1 "
                          "pod has unbound immediate "
                          "PersistentVolumeClaims.\""),
          "an unschedulable Pod: Pending, Ready=False/Unschedulable (%s)",
          dbuf_ptr(&r.err));
    res_free(&r);

    /* A termination message of 3-byte characters longer than the cut: the
     * status stays valid UTF-8 (the encoders refuse anything else). */
    struct dbuf big;
    dbuf_init(&big, sizeof(pod));
    dbuf_adds(&big, "      terminated:\n        exitCode: 2\n"
                    "        reason: Error\n        message: \"");
    for (int i = 0; i < 3000; i++)
        dbuf_adds(&big, "\xe2\x82\xac");
    dbuf_adds(&big, "\"\n");
    pod_doc(pod, sizeof(pod), "t1-0",
            "      waiting:\n        reason: CrashLoopBackOff\n",
            dbuf_ptr(&big));
    dbuf_free(&big);
    snprintf(buf, sizeof(buf), "%sspec:\n%s%s%s", ds_head, good_spec,
             sts_not_ready, pod);
    r = run_yaml(buf);
    CHECK(r.code == 0 && has(&r.out, "\xe2\x82\xac...") &&
              has(&r.out, "reason: CrashLoopBackOff"),
          "a long multi-byte termination message is cut on a character "
          "boundary (%s)",
          dbuf_ptr(&r.err));
    res_free(&r);

    /* observed.Pod reaches a custom policy (an empty table without
     * Pods); a Pod is never among the rendered objects. */
    static const char count_pods[] =
        "local M = {}\n"
        "function M.render(ds, ctx) return {} end\n"
        "function M.status(ds, observed, ctx)\n"
        "  local n = 0\n"
        "  for _ in pairs(observed.Pod) do n = n + 1 end\n"
        "  return { phase = 'Pending', availableReplicas = n }\n"
        "end\n"
        "return M\n";
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/pods-policy", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    write_file(path, count_pods);
    snprintf(buf, sizeof(buf), "%sspec:\n%s%s", ds_head, good_spec, pod);
    snprintf(path, sizeof(path), "%s/pods.yaml", tmpdir);
    write_file(path, buf);
    r = run_opts(path, dir, 0, 0, 0);
    CHECK(r.code == 0 && has(&r.out, "availableReplicas: 1") &&
              !has(&r.out, "kind: Pod"),
          "observed.Pod holds the Pod documents (%s)", dbuf_ptr(&r.err));
    res_free(&r);
    snprintf(buf, sizeof(buf), "%sspec:\n%s", ds_head, good_spec);
    write_file(path, buf);
    r = run_opts(path, dir, 0, 0, 0);
    CHECK(r.code == 0 && has(&r.out, "availableReplicas: 0"),
          "observed.Pod is an empty table without Pods (%s)", dbuf_ptr(&r.err));
    res_free(&r);
}

static void test_bad_input(void)
{
    expect_fail("missing file", run_opts("/nonexistent/x.yaml", NULL, 0, 0, 0),
                1, "/nonexistent/x.yaml: No such file or directory");
    expect_fail("malformed YAML", run_yaml("a: [1, 2\nb: c\n"), 1, "line ");
    expect_fail("malformed JSON", run_yaml("{\"apiVersion\": }"), 1,
                "line 1, column");
    expect_fail("empty input", run_yaml(""), 1, "no DittoServer");
    expect_fail("not a DittoServer",
                run_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                         "  name: x\n"),
                1, "no DittoServer (apiVersion dittofs.dittofs.com/v1alpha1");
    expect_fail("wrong apiVersion",
                run_yaml("apiVersion: dittofs.dittofs.com/v1\nkind: "
                         "DittoServer\nmetadata:\n  name: x\n"),
                1, "apiVersion dittofs.dittofs.com/v1 is not served");
    expect_fail("a list as document", run_yaml("- 1\n- 2\n"), 1,
                "document 1 is not an object");
    expect_fail("no metadata.name",
                run_yaml("apiVersion: dittofs.dittofs.com/v1alpha1\nkind: "
                         "DittoServer\nmetadata: {}\nspec: {}\n"),
                3, "metadata.name: Required value");
    expect_fail("bad metadata.name",
                run_yaml("apiVersion: dittofs.dittofs.com/v1alpha1\nkind: "
                         "DittoServer\nmetadata:\n  name: Foo_bar\n"),
                3, "metadata.name: Invalid value: \"Foo_bar\"");
}

static void test_schema(void)
{
    expect_fail("no spec",
                run_yaml("apiVersion: dittofs.dittofs.com/v1alpha1\nkind: "
                         "DittoServer\nmetadata:\n  name: x\n"),
                3, "spec: Required value");
    expect_fail("missing metadataSize",
                run_spec("  image: img\n  storage: {}\n"), 3,
                "spec.storage.metadataSize: Required value");
    expect_fail("missing image",
                run_spec("  storage:\n    metadataSize: 1Gi\n"), 3,
                "spec.image: Required value");
    expect_fail("nfsPort too large",
                run_spec("  image: img\n  nfsPort: 70000\n  storage:\n"
                         "    metadataSize: 1Gi\n"),
                3,
                "spec.nfsPort: Invalid value: 70000: spec.nfsPort in body "
                "should be less than or equal to 65535");
    expect_fail("nfsPort a string",
                run_spec("  image: img\n  nfsPort: http\n  storage:\n"
                         "    metadataSize: 1Gi\n"),
                3,
                "spec.nfsPort: Invalid value: \"string\": spec.nfsPort in "
                "body must be of type integer: \"string\"");
    expect_fail("replicas a float",
                run_spec("  image: img\n  replicas: 1.5\n  storage:\n"
                         "    metadataSize: 1Gi\n"),
                3, "must be of type integer: \"number\"");
    expect_fail("service type enum",
                run_spec("  image: img\n  service:\n    type: Internal\n"
                         "  storage:\n    metadataSize: 1Gi\n"),
                3,
                "spec.service.type: Unsupported value: \"Internal\": "
                "supported values: \"ClusterIP\", \"NodePort\", "
                "\"LoadBalancer\"");
    expect_fail("size pattern",
                run_spec("  image: img\n  storage:\n    metadataSize: 10GB\n"),
                3,
                "spec.storage.metadataSize: Invalid value: \"10GB\": "
                "spec.storage.metadataSize in body should match "
                "'^[0-9]+(Mi|Gi|Ti)$'");
    expect_fail("minItems",
                run_spec("  image: img\n  storage:\n    metadataSize: 1Gi\n"
                         "  config:\n    shares: []\n"),
                3,
                "spec.config.shares: Invalid value: 0: spec.config.shares "
                "in body should have at least 1 items");
    expect_fail("minLength",
                run_spec("  image: \"\"\n  storage:\n    metadataSize: 1Gi\n"),
                3, "spec.image in body should be at least 1 chars long");
    expect_fail("storage a list", run_spec("  image: img\n  storage: [1]\n"), 3,
                "spec.storage in body must be of type object: \"array\"");

    /* Every message, not only the first. */
    struct res r = run_spec("  nfsPort: 0\n  replicas: -1\n  storage:\n"
                            "    metadataSize: x\n");
    CHECK(r.code == 3 && has(&r.err, "spec.image: Required value") &&
              has(&r.err, "spec.nfsPort: Invalid value: 0") &&
              has(&r.err, "spec.replicas: Invalid value: -1") &&
              has(&r.err, "spec.storage.metadataSize: Invalid value: \"x\""),
          "every schema violation is reported: %s", dbuf_ptr(&r.err));
    res_free(&r);

    /* Unknown fields are pruned with a warning; the run succeeds. */
    r = run_spec("  image: img\n  colour: blue\n  storage:\n"
                 "    metadataSize: 1Gi\n");
    CHECK(r.code == 0 && has(&r.err, "Warning: unknown field \"spec.colour\""),
          "unknown field: warning and exit 0 (%d: %s)", r.code,
          dbuf_ptr(&r.err));
    res_free(&r);

    /* Defaults only where the parent exists. */
    r = run_spec("  image: img\n  storage:\n    metadataSize: 1Gi\n"
                 "  config:\n    shares:\n    - name: s\n"
                 "      metadataStore: m\n      contentStore: c\n"
                 "    backends:\n    - name: m\n      type: badger\n"
                 "    - name: c\n      type: local\n");
    CHECK(r.code == 0 && has(&r.out, "name: /export") &&
              has(&r.out, "mode: 493"),
          "share defaults applied (exportPath, mode) (%s)", dbuf_ptr(&r.err));
    res_free(&r);
}

static void test_validate_errors(void)
{
    expect_fail("dangling store reference",
                run_spec("  image: img\n  storage:\n    metadataSize: 1Gi\n"
                         "  config:\n    shares:\n    - name: s\n"
                         "      metadataStore: nope\n      contentStore: c\n"
                         "    backends:\n    - name: c\n      type: local\n"),
                3, "nope");
    expect_fail("dangling cache reference",
                run_spec("  image: img\n  storage:\n    metadataSize: 1Gi\n"
                         "  config:\n    shares:\n    - name: s\n"
                         "      metadataStore: m\n      contentStore: c\n"
                         "      cache: ghost\n"
                         "    backends:\n    - name: m\n      type: badger\n"
                         "    - name: c\n      type: local\n"),
                3, "ghost");
    expect_fail("unparsable size",
                run_spec("  image: img\n  storage:\n    metadataSize: 1Gi\n"
                         "  config:\n    shares:\n    - name: s\n"
                         "      metadataStore: m\n      contentStore: c\n"
                         "      cache: k\n"
                         "    backends:\n    - name: m\n      type: badger\n"
                         "    - name: c\n      type: local\n"
                         "    caches:\n    - name: k\n      memory:\n"
                         "        maxSize: lots\n"),
                3, "maxSize");
}

/* --- custom policies -------------------------------------------------------
 */

static const char stub_head[] = "local M = {}\n"
                                "function M.validate(ds) return {}, {} end\n";
static const char stub_render[] =
    "function M.render(ds, ctx)\n"
    "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
    "    metadata = { name = ctx.name .. '-x' } } }\n"
    "end\n";
static const char stub_status[] = "function M.status(ds, observed, ctx)\n"
                                  "  return { phase = 'Running' }\n"
                                  "end\n";

static int policy_n;

/* Writes a policies dir whose dittoserver.lua is `src` and runs the good
 * spec through it. */
static struct res run_policy_lim(const char *src, unsigned timeout_ms,
                                 size_t memory)
{
    char dir[512], path[600], input[600];
    snprintf(dir, sizeof(dir), "%s/p%d", tmpdir, ++policy_n);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    write_file(path, src);
    snprintf(path, sizeof(path), "%s/helper.lua", dir);
    write_file(path, "return { answer = 42 }\n");
    snprintf(input, sizeof(input), "%s/in.yaml", tmpdir);
    char buf[1024];
    snprintf(buf, sizeof(buf), "%sspec:\n%s", ds_head, good_spec);
    write_file(input, buf);
    return run_opts(input, dir, 0, timeout_ms, memory);
}

static struct res run_policy(const char *src)
{
    return run_policy_lim(src, 50, (size_t)8 << 20);
}

/* stub_head + body + render + status, where body may override either. */
static struct res run_stub(const char *body)
{
    char src[4096];
    snprintf(src, sizeof(src), "%s%s%s%s\nreturn M\n", stub_head, stub_render,
             stub_status, body);
    return run_policy(src);
}

/* The core puts its labels on a StatefulSet's pod template, whatever the
 * policy rendered there, so the Pod informer sees the pods. */
static void test_pod_template_labels(void)
{
    struct res r = run_stub(
        "function M.render(ds, ctx)\n"
        "  return { { apiVersion = 'apps/v1', kind = 'StatefulSet',\n"
        "    metadata = { name = ctx.name },\n"
        "    spec = { template = { spec = { containers = {} } } } },\n"
        "    { apiVersion = 'apps/v1', kind = 'StatefulSet',\n"
        "    metadata = { name = 'b' },\n"
        "    spec = { template = { metadata = { labels = { a = 'b' } },\n"
        "      spec = {} } } } }\n"
        "end\n");
    CHECK(r.code == 0 &&
              has(&r.out, "  template:\n    metadata:\n      labels:\n"
                          "        app.kubernetes.io/managed-by: "
                          "dittofs-operator\n"
                          "        dittofs.dittofs.com/server: t1\n") &&
              has(&r.out, "  template:\n    metadata:\n      labels:\n"
                          "        a: b\n"
                          "        app.kubernetes.io/managed-by: "
                          "dittofs-operator\n"
                          "        dittofs.dittofs.com/server: t1\n"),
          "pod template labels added (template without metadata, and with "
          "labels of its own) (%s)",
          dbuf_ptr(&r.err));
    if (r.code == 0 && !has(&r.out, "        a: b\n"))
        TEST_NOTE("stdout was: %s", dbuf_ptr(&r.out));
    CHECK(!has(&r.out, "selector"), "no selector made up");
    res_free(&r);

    r = run_stub("function M.render(ds, ctx)\n"
                 "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
                 "    metadata = { name = 'c' },\n"
                 "    spec = { template = { spec = {} } } } }\n"
                 "end\n");
    CHECK(r.code == 0 && !has(&r.out, "template:\n    metadata"),
          "only a StatefulSet's template is labelled (%s)", dbuf_ptr(&r.err));
    res_free(&r);

    expect_fail("pod template metadata not a table",
                run_stub("function M.render(ds, ctx)\n"
                         "  return { { apiVersion = 'apps/v1', kind = "
                         "'StatefulSet', metadata = { name = 'x' },\n"
                         "    spec = { template = { metadata = 'm' } } } }\n"
                         "end\n"),
                4,
                "render() object 1 (StatefulSet \"x\"): "
                "spec.template.metadata is a string");
    expect_fail("pod template labels not a table",
                run_stub("function M.render(ds, ctx)\n"
                         "  return { { apiVersion = 'apps/v1', kind = "
                         "'StatefulSet', metadata = { name = 'x' },\n"
                         "    spec = { template = { metadata = { labels = 3 "
                         "} } } } }\n"
                         "end\n"),
                4,
                "render() object 1 (StatefulSet \"x\"): "
                "spec.template.metadata.labels is a number");
}

static void test_policies(void)
{
    struct res r = run_stub("");
    CHECK(r.code == 0 && has(&r.out, "name: t1-x") &&
              has(&r.out, "phase: Running"),
          "a stub policy from --policies works (%s)", dbuf_ptr(&r.err));
    res_free(&r);

    r = run_stub("local h = require('helper')\n"
                 "local q = require('k8s.quantity')\n"
                 "local codec = require('codec')\n"
                 "local s = M.status\n"
                 "function M.status(...) local st = s(...)\n"
                 "  st.availableReplicas = h.answer return st end\n");
    CHECK(r.code == 0 && has(&r.out, "availableReplicas: 42"),
          "require: policy dir, embedded lua/, codec (%s)", dbuf_ptr(&r.err));
    res_free(&r);

    /* Each call gets its own DittoServer: what validate and render change
     * reaches neither the next call nor what the core adds. */
    r = run_stub("function M.validate(ds)\n"
                 "  ds.spec.image = 'v' ds.metadata.name = 'v'\n"
                 "  return {}, {} end\n"
                 "local render = M.render\n"
                 "function M.render(ds, ctx) local o = render(ds, ctx)\n"
                 "  ds.spec.image = 'r' ds.metadata.name = 'r' return o end\n"
                 "function M.status(ds) return { phase = 'Running',\n"
                 "  nfsEndpoint = ds.spec.image .. '/' .. ds.metadata.name }\n"
                 "end\n");
    CHECK(r.code == 0 && has(&r.out, "nfsEndpoint: img/t1") &&
              has(&r.out, "dittofs.dittofs.com/server: t1") &&
              !has(&r.out, ": r\n") && !has(&r.out, ": v\n"),
          "validate and render change their own DittoServer only (%s)",
          dbuf_ptr(&r.err));
    res_free(&r);

    /* A custom dittoserver.lua that wraps the default one: the embedded
     * policies/ stay reachable behind the directory (its own module wins). */
    r = run_stub("local schema = require('dittoserver_schema')\n"
                 "local s = M.status\n"
                 "function M.status(...) local st = s(...)\n"
                 "  st.availableReplicas = type(schema.SPEC) == 'table' "
                 "and 7 or 0\n"
                 "  return st end\n");
    CHECK(r.code == 0 && has(&r.out, "availableReplicas: 7"),
          "require: embedded policies/ behind --policies (%s)",
          dbuf_ptr(&r.err));
    res_free(&r);

    char dir[600];
    snprintf(dir, sizeof(dir), "%s/p", tmpdir);
    expect_fail("runtime error with file:line",
                run_stub("function M.render() error('boom') end\n"), 4,
                "/dittoserver.lua:10: boom");
    expect_fail("syntax error with file:line", run_policy("local M = {\n"), 4,
                "/dittoserver.lua:2: unexpected symbol near <eof>");
    expect_fail("binary chunk", run_policy("\x1bLua\x54\x00junk"), 4,
                "binary chunk refused");
    expect_fail("no dittoserver.lua", run_opts("x.yaml", "/tmp", 0, 0, 0), 1,
                "x.yaml");
    expect_fail("unknown module", run_stub("require('os')\n"), 4,
                "module 'os' not found");
    expect_fail("global write", run_stub("helper = 1\n"), 4,
                "assign to undeclared global 'helper'");
    char timeout_msg[64];
    snprintf(timeout_msg, sizeof(timeout_msg), "policy timeout after %u ms",
             test_ms(50));
    expect_fail("timeout",
                run_stub("function M.render() while true do end "
                         "end\n"),
                4, timeout_msg);
    expect_fail("timeout inside pcall",
                run_stub("function M.status() while true do\n"
                         "  pcall(function() while true do end end) end "
                         "end\n"),
                4, timeout_msg);
    /* A generous time budget: the memory cap must be what stops it, even
     * under sanitizers or valgrind. */
    char bomb[4096];
    snprintf(bomb, sizeof(bomb),
             "%s%s%sfunction M.render() local t = {}\n"
             "  for i = 1, 1e9 do t[i] = ('x'):rep(100) .. i end end\n"
             "return M\n",
             stub_head, stub_render, stub_status);
    expect_fail("memory bomb", run_policy_lim(bomb, 20000, (size_t)8 << 20), 4,
                "policy memory limit (8 MiB) exceeded");
    snprintf(bomb, sizeof(bomb),
             "%s%s%sfunction M.render() local s = 'x'\n"
             "  while true do s = s .. s end end\nreturn M\n",
             stub_head, stub_render, stub_status);
    expect_fail("string doubling bomb",
                run_policy_lim(bomb, 20000, (size_t)8 << 20), 4,
                "policy memory limit (8 MiB) exceeded");
    expect_fail("validate errors",
                run_stub("function M.validate()\n"
                         "  return {'spec.x: bad one', "
                         "'spec.y: bad two'}, {'w'} "
                         "end\n"),
                3, "spec.x: bad one\nspec.y: bad two\nWarning: w\n");

    /* Garbage output. */
    expect_fail("module not a table", run_policy("return 42\n"), 4,
                "the policy must return a table (got number)");
    expect_fail("no render", run_policy("return {}\n"), 4,
                "the policy has no render function");
    expect_fail("render returns a string",
                run_stub("function M.render() return 'x' end\n"), 4,
                "render() must return a list of objects (got string)");
    expect_fail("object without apiVersion",
                run_stub("function M.render() return {{kind = 'A', "
                         "metadata = {name = 'a'}}} end\n"),
                4, "render() object 1 has no apiVersion");
    expect_fail("object without kind",
                run_stub("function M.render() return {{apiVersion = 'v1', "
                         "metadata = {name = 'a'}}} end\n"),
                4, "render() object 1 has no kind");
    expect_fail("object without metadata.name",
                run_stub("function M.render() return {{apiVersion = 'v1', "
                         "kind = 'A', metadata = {}}} end\n"),
                4, "render() object 1 (A) has no metadata.name");
    expect_fail("object not a table",
                run_stub("function M.render() return {1} end\n"), 4,
                "render() object 1 is a number, not a table");
    expect_fail("function inside an object",
                run_stub("function M.render() return {{apiVersion = 'v1', "
                         "kind = 'A', metadata = {name = 'a'}, f = print}} "
                         "end\n"),
                4, "undeclared global 'print'");
    expect_fail("function value inside an object",
                run_stub("function M.render() return {{apiVersion = 'v1', "
                         "kind = 'A', metadata = {name = 'a'}, f = "
                         "function() end}} end\n"),
                4, "render() object 1 (A \"a\")");
    expect_fail("duplicate objects",
                run_stub("function M.render() local o = {apiVersion = "
                         "'v1', kind = 'A', metadata = {name = 'a'}}\n"
                         "  return {o, {apiVersion = 'v1', kind = 'A', "
                         "metadata = {name = 'a'}}} end\n"),
                4, "render() returned A \"a\" twice");
    expect_fail("status a string",
                run_stub("function M.status() return 'ok' end\n"), 4,
                "status() must return a table (got string)");
    expect_fail("status a list",
                run_stub("function M.status() return {1, 2} end\n"), 4,
                "status() must return an object, not a list");
    expect_fail("status rejected by the CRD",
                run_stub("function M.status() return {phase = 'Bogus'} "
                         "end\n"),
                4, "status.phase: Unsupported value: \"Bogus\"");
    /* Issue 11: a kind outside the managed ones refuses the whole result
     * (here a Secret and a ClusterRoleBinding to cluster-admin after a
     * ConfigMap), naming the object and the kinds allowed; a Pod, which
     * the core observes, is no kind a policy may render either. */
    expect_fail("unmanaged kinds refused",
                run_stub("function M.render(ds, ctx)\n"
                         "  return { { apiVersion = 'v1', kind = "
                         "'ConfigMap', metadata = { name = 'c' } },\n"
                         "    { apiVersion = 'v1', kind = 'Secret',\n"
                         "      metadata = { name = 's' } },\n"
                         "    { apiVersion = 'rbac.authorization.k8s.io/v1',\n"
                         "      kind = 'ClusterRoleBinding',\n"
                         "      metadata = { name = 'own' },\n"
                         "      roleRef = { kind = 'ClusterRole',\n"
                         "        name = 'cluster-admin' } } }\n"
                         "end\n"),
                4,
                "render() object 2 (v1 Secret \"s\"): the operator manages "
                "only ConfigMaps, Services and StatefulSets (v1 ConfigMap, "
                "v1 Service, apps/v1 StatefulSet)");
    expect_fail("a rendered Pod refused",
                run_stub("function M.render(ds, ctx)\n"
                         "  return { { apiVersion = 'v1', kind = 'Pod',\n"
                         "    metadata = { name = 'p' } } }\n"
                         "end\n"),
                4, "render() object 1 (v1 Pod \"p\"): the operator manages");
    expect_fail("a managed kind under another apiVersion refused",
                run_stub("function M.render(ds, ctx)\n"
                         "  return { { apiVersion = 'apps/v1beta1',\n"
                         "    kind = 'StatefulSet',\n"
                         "    metadata = { name = 'x' } } }\n"
                         "end\n"),
                4, "(apps/v1beta1 StatefulSet \"x\"): the operator manages");
    expect_fail("validate returns garbage",
                run_stub("function M.validate() return 'bad' end\n"), 4,
                "validate() must return lists of strings (errors is a "
                "string)");
    expect_fail("__gc refused",
                run_stub("setmetatable({}, {__gc = function() end})\n"), 4,
                "__gc metamethods are not allowed");
    expect_fail("codec marker metatables are locked",
                run_stub("local codec = require('codec')\n"
                         "rawset(getmetatable(codec.array({})), '__gc', "
                         "function() while true do end end)\n"),
                4, "protected table");
    expect_fail("codec.array cannot unlock a marker metatable",
                run_stub("local codec = require('codec')\n"
                         "codec.array(getmetatable(codec.array({})))\n"),
                4, "cannot change a protected metatable");
    expect_fail("codec.object cannot unlock a library",
                run_stub("local codec = require('codec')\n"
                         "codec.object(string)\n"),
                4, "cannot change a protected metatable");
    expect_fail("codec marker metatables are locked (assignment)",
                run_stub("local codec = require('codec')\n"
                         "getmetatable(codec.object({})).__gc = "
                         "function() end\n"),
                4, "read-only");
}

/* --- one policy set, many evaluations ------------------------------------
 */

/* The DittoServer of FILE with CRD defaults, as JSON. */
static int ds_json_of(const char *file, struct dbuf *ds)
{
    FILE *f = fopen(file, "rb");
    if (f == NULL)
        return -1;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    lua_State *L = luaL_newstate();
    char err[256];
    struct dbuf e;
    dbuf_init(&e, 1 << 20);
    int rc = -1;
    if (L == NULL || yaml_push_all(L, buf, n, NULL, err, sizeof(err)) != 0)
        goto done;
    /* The first DittoServer (a sample may start with its Secret). */
    for (lua_Integer i = 1; lua_rawgeti(L, 1, i) == LUA_TTABLE; i++) {
        lua_getfield(L, 2, "kind");
        int is_ds = lua_isstring(L, -1) &&
                    strcmp(lua_tostring(L, -1), "DittoServer") == 0;
        lua_pop(L, 1);
        if (is_ds)
            break;
        lua_pop(L, 1);
    }
    if (lua_type(L, 2) != LUA_TTABLE)
        goto done;
    lua_settop(L, 2); /* [docs, ds] */
    lua_getfield(L, 2, "metadata");
    lua_pushliteral(L, "default");
    lua_setfield(L, -2, "namespace");
    lua_pop(L, 1);
    if (crd_push_embedded_schema(L, &e) != CRD_OK ||
        crd_default(L, 3, 2, &e) < 0 || crd_validate(L, 3, 2, "", &e) != 0)
        goto done;
    rc = json_encode(L, 2, ds, err, sizeof(err));
done:
    dbuf_free(&e);
    if (L)
        lua_close(L);
    return rc;
}

static int same(const struct dbuf *a, const struct dbuf *b)
{
    return dbuf_len(a) == dbuf_len(b) &&
           memcmp(dbuf_ptr(a), dbuf_ptr(b), dbuf_len(a)) == 0;
}

/* A lua_Alloc that refuses every growth once `left` allocations are spent
 * (left < 0: no limit). */
struct oom_alloc {
    long left;
};

static void *oom_realloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct oom_alloc *a = ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (ptr == NULL || nsize > osize) {
        if (a->left == 0)
            return NULL;
        if (a->left > 0)
            a->left--;
    }
    return realloc(ptr, nsize);
}

/* crd_validate when Lua runs out of memory at every possible allocation of
 * a list-type uniqueness check: CRD_ENOMEM or the full answer, and no
 * scratch buffer left behind (memcheck runs this test under valgrind). */
static void test_crd_out_of_memory(void)
{
    static const char schema[] =
        "{\"type\":\"object\",\"properties\":{"
        "\"tags\":{\"type\":\"array\",\"x-kubernetes-list-type\":\"set\","
        "\"items\":{\"type\":\"string\"}},"
        "\"ports\":{\"type\":\"array\",\"x-kubernetes-list-type\":\"map\","
        "\"x-kubernetes-list-map-keys\":[\"name\",\"port\"],"
        "\"items\":{\"type\":\"object\"}}}}";
    static const char value[] =
        "{\"tags\":[\"a\",\"b\",\"a\",\"c\",\"b\"],"
        "\"ports\":[{\"name\":\"nfs\",\"port\":2049},"
        "{\"name\":\"nfs\",\"port\":2049},{\"name\":\"m\",\"port\":9090}]}";
    struct oom_alloc a = {-1};
    lua_State *L = lua_newstate(oom_realloc, &a);
    char err[256];
    struct dbuf msgs;
    dbuf_init(&msgs, 1 << 20);
    if (!CHECK(
            L != NULL &&
                json_push(L, schema, strlen(schema), NULL, err, sizeof(err)) ==
                    0 &&
                json_push(L, value, strlen(value), NULL, err, sizeof(err)) == 0,
            "crd oom: schema and value decode"))
        goto done;
    int want = crd_validate(L, 1, 2, "spec", &msgs);
    CHECK_INT_EQ(want, 3, "crd oom: three duplicates without a limit");
    int bad = 0, completed = 0;
    for (long n = 0; n < 200 && !completed; n++) {
        dbuf_reset(&msgs);
        a.left = n;
        int rc = crd_validate(L, 1, 2, "spec", &msgs);
        a.left = -1;
        if (rc == want)
            completed = 1;
        else if (rc != CRD_ENOMEM)
            bad++;
        lua_gc(L, LUA_GCCOLLECT);
    }
    CHECK(bad == 0 && completed,
          "crd oom: every allocation failure is CRD_ENOMEM, then it "
          "completes");
done:
    dbuf_free(&msgs);
    if (L)
        lua_close(L);
}

static void test_reuse_samples(void)
{
    static const char *const samples[] = {
        "dittoserver.yaml",
        "dittoserver-cache.yaml",
        "dittoserver-custom-port.yaml",
        "dittoserver-loadbalancer.yaml",
        "dittoserver-nodeport.yaml",
        "dittoserver-s3.yaml",
        "dittoserver-shares.yaml",
        "dittoserver-stopped.yaml",
        NULL,
    };
    struct dbuf err, ds;
    struct policy_output fresh, reused;
    dbuf_init(&err, 1 << 20);
    dbuf_init(&ds, 1 << 20);
    policy_output_init(&fresh);
    policy_output_init(&reused);
    struct policy_set *shared = NULL;
    CHECK(policy_set_load(NULL, &shared, &err) == POLICY_OK,
          "the embedded set loads");
    /* The default budget (100 ms) with the test time scale: preparing a
     * fresh state under valgrind on a loaded machine may take longer. */
    struct sandbox_limits lim = {.timeout_ms = test_ms(100)};
    int n = 0, differ = 0;
    /* Two rounds over all samples in one state: each evaluation follows
     * one of another DittoServer. */
    for (int round = 0; round < 2 && shared; round++) {
        for (int i = 0; samples[i]; i++) {
            char path[256];
            snprintf(path, sizeof(path), "deploy/samples/%s", samples[i]);
            if (access(path, R_OK) != 0)
                continue;
            dbuf_reset(&ds);
            if (ds_json_of(path, &ds) != 0) {
                CHECK(0, "sample %s reads", samples[i]);
                continue;
            }
            struct policy_input in = {.ds_json = dbuf_ptr(&ds),
                                      .ds_len = dbuf_len(&ds),
                                      .observed_json = "{}",
                                      .observed_len = 2};
            struct policy_set *ps = NULL;
            int rf = policy_set_load(NULL, &ps, &err);
            rf = rf ? rf : policy_eval(ps, &lim, &in, &fresh, &err);
            policy_set_free(ps);
            int rr = policy_eval(shared, &lim, &in, &reused, &err);
            n++;
            if (rf != rr || !same(&fresh.objects, &reused.objects) ||
                !same(&fresh.status, &reused.status)) {
                differ++;
                TEST_NOTE("%s differs (round %d)", samples[i], round + 1);
            }
        }
    }
    CHECK(n >= 2 && differ == 0,
          "%d evaluations of the samples in one reused state are "
          "byte-identical to evaluations in fresh states",
          n);
    CHECK(shared && policy_set_preparations(shared) == 1,
          "the set prepared its state once for all of them");
    policy_set_free(shared);
    policy_output_free(&fresh);
    policy_output_free(&reused);
    dbuf_free(&ds);
    dbuf_free(&err);
}

static const char reuse_helper[] = "local n = 0\n"
                                   "local M = { items = {} }\n"
                                   "function M.bump() n = n + 1 return n end\n"
                                   "return M\n";

/* Misbehaves according to the DittoServer's name; status() reports what
 * it saw of the module state and shared tables, then writes to them. */
static const char reuse_policy[] =
    "local codec = require('codec')\n"
    "local helper = require('helper')\n"
    "local M = {}\n"
    "local calls = 0\n"
    "function M.render(ds, ctx)\n"
    "  local name = ds.metadata.name\n"
    "  if name == 'loop' then while true do end end\n"
    "  if name == 'bomb' then\n"
    "    local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(64) .. i end\n"
    "  end\n"
    "  if name == 'boom' then error('boom') end\n"
    "  if name == 'taint' then\n"
    "    getmetatable(codec.array({})).__name = 'tampered'\n"
    "  end\n"
    "  return { { apiVersion = 'v1', kind = 'ConfigMap',\n"
    "    metadata = { name = ctx.name } } }\n"
    "end\n"
    "function M.status(ds, observed, ctx)\n"
    "  calls = calls + 1\n"
    "  local seen = table.concat({ calls, helper.bump(), #helper.items,\n"
    "    tostring(helper.flag), getmetatable(codec.array({})).__name,\n"
    "    tostring(rawget(string, 'leak')),\n"
    "    tostring(codec.json_encode == nil) }, ' ')\n"
    "  helper.items[#helper.items + 1] = 'x'\n"
    "  helper.flag = true\n"
    "  codec.json_encode = nil\n"
    "  M.render = nil\n"
    "  pcall(function() string.leak = 1 end)\n"
    "  pcall(codec.array, string)\n"
    "  return { phase = seen }\n"
    "end\n"
    "return M\n";

static const char reuse_seen[] =
    "\"phase\":\"1 1 0 nil codec.array nil false\"";

/* One evaluation of the DittoServer named `name` with set ps. */
static int eval_named(struct policy_set *ps, const struct sandbox_limits *lim,
                      const char *name, struct policy_output *out,
                      struct dbuf *err)
{
    char ds[256];
    snprintf(ds, sizeof(ds),
             "{\"apiVersion\":\"dittofs.dittofs.com/v1alpha1\","
             "\"kind\":\"DittoServer\",\"metadata\":{\"name\":\"%s\"},"
             "\"spec\":{}}",
             name);
    struct policy_input in = {.ds_json = ds, .ds_len = strlen(ds)};
    return policy_eval(ps, lim, &in, out, err);
}

/* status() may return a requeue delay in seconds as a second result. */
static void test_requeue_after(void)
{
    static const char *const srcs[] = {
        "return { render = function() return {} end,\n"
        "  status = function() return { phase = 'Pending' }, 2.5 end }\n",
        "return { render = function() return {} end,\n"
        "  status = function() return { phase = 'Pending' } end }\n",
        "return { render = function() return {} end,\n"
        "  status = function() return { phase = 'Pending' }, 'soon' end }\n",
        "return { render = function() return {} end,\n"
        "  status = function() return { phase = 'Pending' }, -1 end }\n",
    };
    for (int i = 0; i < 4; i++) {
        char dir[512], path[600];
        snprintf(dir, sizeof(dir), "%s/requeue%d", tmpdir, i);
        mkdir(dir, 0755);
        snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
        write_file(path, srcs[i]);
        struct policy_set *ps = NULL;
        struct dbuf err;
        dbuf_init(&err, 4096);
        struct policy_output out;
        policy_output_init(&out);
        int rc = policy_set_load(dir, &ps, &err);
        if (rc == POLICY_OK)
            rc = eval_named(ps, NULL, "rq", &out, &err);
        if (i == 0)
            CHECK(rc == POLICY_OK && out.requeue_after_ms == 2500,
                  "status() asks to requeue after 2.5 s (%d, %lu, %s)", rc,
                  out.requeue_after_ms, dbuf_ptr(&err));
        if (i == 0 && rc == POLICY_OK) {
            /* status only: neither validate nor render runs */
            const char *ds = "{\"apiVersion\":\"dittofs.dittofs.com/v1alpha1\","
                             "\"kind\":\"DittoServer\",\"metadata\":"
                             "{\"name\":\"rq\"},\"spec\":{}}";
            struct policy_input in = {
                .ds_json = ds, .ds_len = strlen(ds), .status_only = 1};
            rc = policy_eval(ps, NULL, &in, &out, &err);
            CHECK(rc == POLICY_OK && dbuf_len(&out.objects) == 0 &&
                      strstr(dbuf_ptr(&out.status), "Pending") != NULL,
                  "status_only: the status without render (%d, %s)", rc,
                  dbuf_ptr(&err));
        } else if (i == 1)
            CHECK(rc == POLICY_OK && out.requeue_after_ms == 0,
                  "no second result: no requeue (%d, %s)", rc, dbuf_ptr(&err));
        else
            CHECK(rc == POLICY_EFAIL &&
                      strstr(dbuf_ptr(&err), "requeue after") != NULL,
                  "a bad requeue delay is a policy failure (%s)",
                  dbuf_ptr(&err));
        policy_output_free(&out);
        dbuf_free(&err);
        policy_set_free(ps);
    }
}

static void test_reuse_isolation(void)
{
    char dir[512], path[600];
    snprintf(dir, sizeof(dir), "%s/reuse", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    write_file(path, reuse_policy);
    snprintf(path, sizeof(path), "%s/helper.lua", dir);
    write_file(path, reuse_helper);

    struct dbuf err;
    struct policy_output out;
    dbuf_init(&err, 1 << 20);
    policy_output_init(&out);
    struct policy_set *ps = NULL;
    if (!CHECK(policy_set_load(dir, &ps, &err) == POLICY_OK,
               "the reuse policy loads (%s)", dbuf_ptr(&err)))
        return;
    /* One budget for all, generous enough for valgrind: a change of limits
     * would rebuild the state by itself. */
    struct sandbox_limits lim = {.timeout_ms = 2000,
                                 .memory_bytes = (size_t)4 << 20};
    int bad = 0;
    for (int i = 0; i < 5; i++) {
        int rc = eval_named(ps, &lim, "t1", &out, &err);
        if (rc != POLICY_OK || !has(&out.status, reuse_seen)) {
            bad++;
            TEST_NOTE("evaluation %d: %d %s %s", i + 1, rc,
                      dbuf_ptr(&out.status), dbuf_ptr(&err));
        }
    }
    CHECK(bad == 0,
          "5 evaluations: fresh module upvalues, module tables and codec "
          "table each time; no write to string or the codec reached the "
          "next one");
    /* helper and codec are kept (loaded once per state); the first
     * evaluation changes both, so its state is dropped and the set stops
     * keeping modules: the other four share the second state. */
    CHECK(policy_set_preparations(ps) == 2,
          "... in two prepared states: the kept modules changed by the "
          "first evaluation are not the next one's (%lu)",
          policy_set_preparations(ps));

    static const struct {
        const char *name;
        int rc;
        const char *msg;
    } kills[] = {
        {"loop", POLICY_ETIMEOUT, "policy timeout after 2000 ms"},
        {"bomb", POLICY_EMEMORY, "policy memory limit (4 MiB) exceeded"},
        {"boom", POLICY_EFAIL, "dittoserver.lua:11: boom"},
        {"taint", POLICY_OK, ""},
    };
    for (size_t k = 0; k < sizeof(kills) / sizeof(kills[0]); k++) {
        unsigned long before = policy_set_preparations(ps);
        int rc = eval_named(ps, &lim, kills[k].name, &out, &err);
        CHECK(rc == kills[k].rc && strstr(dbuf_ptr(&err), kills[k].msg),
              "%s: status %d, '%s' (%s)", kills[k].name, kills[k].rc,
              kills[k].msg, dbuf_ptr(&err));
        rc = eval_named(ps, &lim, "t1", &out, &err);
        CHECK(rc == POLICY_OK && has(&out.status, reuse_seen) &&
                  policy_set_preparations(ps) == before + 1,
              "after %s the state is rebuilt and the next evaluation "
              "succeeds, pristine (%s)",
              kills[k].name, dbuf_ptr(&out.status));
    }
    unsigned long before = policy_set_preparations(ps);
    struct sandbox_limits other = lim;
    other.timeout_ms = 3000;
    int rc = eval_named(ps, &other, "t1", &out, &err);
    CHECK(rc == POLICY_OK && policy_set_preparations(ps) == before + 1,
          "other limits: a new state");
    policy_set_free(ps);
    policy_output_free(&out);
    dbuf_free(&err);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/dittofs-st-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_samples();
    test_observed();
    test_observed_pods();
    test_bad_input();
    test_schema();
    test_validate_errors();
    test_policies();
    test_pod_template_labels();
    test_crd_out_of_memory();
    test_reuse_samples();
    test_reuse_isolation();
    test_requeue_after();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        TEST_NOTE("could not remove %s", tmpdir);
    return TEST_SUMMARY();
}
