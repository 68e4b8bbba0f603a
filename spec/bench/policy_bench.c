/*
 * policy_bench: timing loop (not a test) for policy evaluations of a
 * DittoServer, exactly as policy_eval() runs them for the controller and
 * --script-test: the set's prepared sandbox (built by the first call),
 * the policy and its modules run afresh, output checks, core additions
 * and JSON encoding. Two figures:
 *   1. validate + render + status (the default policy set);
 *   2. render + status alone: the same policies behind a main module that
 *      exports only render and status (so policy_eval skips validate).
 * Each prints median, p99, mean and min in microseconds, the peak memory
 * of one evaluation above the prepared state, and the process RSS before
 * and after the timed loop (flat RSS = no growth across evaluations). The
 * input is read and defaulted once with the CRD (outside the timed
 * region). Build and run: spec/bench/policy_bench.sh (compiles it against
 * build/libdittofs_core.a). Usage: policy_bench [FILE [ITERATIONS]];
 * POLICIES=DIR benchmarks a custom set (figure 1 only); TIMEOUT_MS=N gives
 * each policy call N ms instead of the default budget (under valgrind,
 * where an evaluation takes 50-100 times as long).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "crd.h"
#include "embedded.h"
#include "ljson.h"
#include "policy.h"
#include "lyaml.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Reads FILE, keeps its first document, applies the CRD defaults and
 * encodes it as JSON into ds. */
static int prepare(const char *file, struct dbuf *ds)
{
    FILE *f = fopen(file, "rb");
    if (f == NULL) {
        perror(file);
        return -1;
    }
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    lua_State *L = luaL_newstate();
    char err[256];
    struct dbuf e;
    dbuf_init(&e, 1 << 20);
    int rc = -1;
    if (yaml_push_all(L, buf, n, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", file, err);
        goto done;
    }
    lua_rawgeti(L, 1, 1); /* [docs, ds] */
    lua_getfield(L, 2, "metadata");
    lua_pushliteral(L, "default");
    lua_setfield(L, -2, "namespace");
    lua_pop(L, 1);
    if (crd_push_embedded_schema(L, &e) != CRD_OK ||
        crd_default(L, 3, 2, &e) < 0 || crd_validate(L, 3, 2, "", &e) != 0) {
        fprintf(stderr, "%s: %s\n", file, dbuf_ptr(&e));
        goto done;
    }
    rc = json_encode(L, 2, ds, err, sizeof(err));
done:
    dbuf_free(&e);
    lua_close(L);
    return rc;
}

/* Resident set size of this process in KiB (0 if unknown). */
static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Times `iters` evaluations of `in` with the set `ps` and limits `lim`
 * after a warm-up. */
static int bench(struct policy_set *ps, const struct sandbox_limits *lim,
                 const struct policy_input *in, int iters, const char *label,
                 const char *file)
{
    struct policy_output out;
    struct dbuf err;
    dbuf_init(&err, 1 << 20);
    policy_output_init(&out);
    double *t = malloc(sizeof(double) * (size_t)iters);
    int rc = 1;
    if (t == NULL)
        goto done;
    for (int i = 0; i < iters; i++)
        t[i] = -1; /* touched now, so that it is not RSS growth later */
    for (int i = 0; i < 200; i++) { /* warm-up */
        int r = policy_eval(ps, lim, in, &out, &err);
        if (r != POLICY_OK) {
            fprintf(stderr, "eval failed (%d): %s\n", r, dbuf_ptr(&err));
            goto done;
        }
    }
    long rss[11] = {0};    /* at 0%, 10%, ... 100% of the loop */
    int step = iters / 10; /* iters >= 10 */
    rss[0] = rss_kib();
    for (int i = 0; i < iters; i++) {
        double a = now_us();
        int r = policy_eval(ps, lim, in, &out, &err);
        t[i] = now_us() - a;
        if (r != POLICY_OK) {
            fprintf(stderr, "eval failed (%d): %s\n", r, dbuf_ptr(&err));
            goto done;
        }
        if ((i + 1) % step == 0 && (i + 1) / step <= 10)
            rss[(i + 1) / step] = rss_kib();
    }
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    double sum = 0;
    for (int i = 0; i < iters; i++)
        sum += t[i];
    printf("policy_eval (%s, prepared sandbox) of %s\n", label, file);
    printf("  iterations %d: median %.1f us, p99 %.1f us, mean %.1f us, "
           "min %.1f us\n",
           iters, t[iters / 2], t[(int)(iters * 0.99)], sum / iters, t[0]);
    printf("  evaluation peak memory %zu KiB above the prepared state; "
           "output %zu bytes JSON\n",
           out.memory_peak / 1024,
           dbuf_len(&out.objects) + dbuf_len(&out.status));
    printf("  RSS KiB at 0%%, 10%%, ... 100%% of the loop:");
    for (int k = 0; k <= 10; k++)
        printf(" %ld", rss[k]);
    printf("\n");
    rc = 0;
done:
    free(t);
    policy_output_free(&out);
    dbuf_free(&err);
    return rc;
}

/* Makes a policies directory under /tmp whose dittoserver.lua builds the
 * default policy (dittoserver.default, embedded behind the directory) and
 * exports only render and status. Returns 0 with the directory in dir. */
static int render_status_dir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/policy-bench-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    char path[512];
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    FILE *o = fopen(path, "wb");
    if (o == NULL)
        return -1;
    fputs("local M = require(\"dittoserver.default\").new()\n"
          "return { render = M.render, status = M.status }\n",
          o);
    fclose(o);
    return 0;
}

int main(int argc, char **argv)
{
    const char *file = argc > 1 ? argv[1] : "deploy/samples/dittoserver.yaml";
    int iters = argc > 2 ? atoi(argv[2]) : 5000;
    if (iters < 10)
        iters = 10;
    struct dbuf ds, err;
    dbuf_init(&ds, 1 << 20);
    dbuf_init(&err, 1 << 20);
    if (prepare(file, &ds) != 0)
        return 1;
    struct policy_set *ps;
    const char *custom = getenv("POLICIES");
    double t0 = now_us();
    if (policy_set_load(custom, &ps, &err) != POLICY_OK) {
        fprintf(stderr, "%s\n", dbuf_ptr(&err));
        return 1;
    }
    double load_us = now_us() - t0;
    printf("policy set load (compile) %.0f us\n", load_us);

    struct policy_input in = {.ds_json = dbuf_ptr(&ds),
                              .ds_len = dbuf_len(&ds),
                              .observed_json = "{}",
                              .observed_len = 2};
    const char *timeout = getenv("TIMEOUT_MS");
    struct sandbox_limits lim = {.timeout_ms =
                                     timeout ? (unsigned)atoi(timeout) : 0};
    int rc = bench(ps, &lim, &in, iters, "validate+render+status", file);
    policy_set_free(ps);

    char dir[64];
    if (rc == 0 && custom == NULL) {
        if (render_status_dir(dir, sizeof(dir)) != 0 ||
            policy_set_load(dir, &ps, &err) != POLICY_OK) {
            fprintf(stderr, "render+status set: %s\n", dbuf_ptr(&err));
            return 1;
        }
        rc = bench(ps, &lim, &in, iters, "render+status", file);
        policy_set_free(ps);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
    dbuf_free(&ds);
    dbuf_free(&err);
    return rc;
}
