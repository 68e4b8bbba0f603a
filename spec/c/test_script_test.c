/*
 * test_script_test: --script-test end to end, in process (script_test_run
 * is what main() calls): the README sample and the other samples, JSON
 * output, determinism, observed children, and every kind of bad input of
 * issue 2 (malformed YAML/JSON, not a DittoServer, schema violations with
 * the apiserver's messages, validate() errors, and policies that fail,
 * loop, allocate without bound or return garbage). Every failure must give
 * its exit code, a precise message and no standard output.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "script_test.h"
#include "testlib.h"

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
    o.limits.timeout_ms = timeout_ms;
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
    expect_fail("timeout",
                run_stub("function M.render() while true do end "
                         "end\n"),
                4, "policy timeout after 50 ms");
    expect_fail("timeout inside pcall",
                run_stub("function M.status() while true do\n"
                         "  pcall(function() while true do end end) end "
                         "end\n"),
                4, "policy timeout after 50 ms");
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
    expect_fail("codec marker metatables are locked (assignment)",
                run_stub("local codec = require('codec')\n"
                         "getmetatable(codec.object({})).__gc = "
                         "function() end\n"),
                4, "read-only");
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
    test_bad_input();
    test_schema();
    test_validate_errors();
    test_policies();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        TEST_NOTE("could not remove %s", tmpdir);
    return TEST_SUMMARY();
}
