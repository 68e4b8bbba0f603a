/*
 * policy_bench: timing loop (not a test) for one policy evaluation of a
 * DittoServer in the sandbox: a fresh lua_State, the host-dumped bytecode
 * of the policy and its modules, validate + render + status, output checks
 * and JSON encoding, exactly as policy_eval() runs for the controller and
 * --script-test. Prints median, p99, mean and min in microseconds, plus
 * the sandbox's peak memory. The input is read and defaulted once with the
 * CRD (outside the timed region).
 * Build and run: spec/bench/policy_bench.sh (compiles it against
 * build/libdittofs_core.a). Usage: policy_bench [FILE [ITERATIONS]].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "crd.h"
#include "json.h"
#include "policy.h"
#include "yaml.h"

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
    double t0 = now_us();
    /* POLICIES=DIR benchmarks a custom policy set instead. */
    if (policy_set_load(getenv("POLICIES"), &ps, &err) != POLICY_OK) {
        fprintf(stderr, "%s\n", dbuf_ptr(&err));
        return 1;
    }
    double load_us = now_us() - t0;

    struct policy_input in = {dbuf_ptr(&ds), dbuf_len(&ds), "{}", 2,
                              NULL,          NULL};
    struct policy_output out;
    policy_output_init(&out);
    double *t = malloc(sizeof(double) * (size_t)iters);
    if (t == NULL)
        return 1;
    for (int i = 0; i < 200; i++) /* warm-up */
        policy_eval(ps, NULL, &in, &out, &err);
    for (int i = 0; i < iters; i++) {
        double a = now_us();
        int rc = policy_eval(ps, NULL, &in, &out, &err);
        t[i] = now_us() - a;
        if (rc != POLICY_OK) {
            fprintf(stderr, "eval failed (%d): %s\n", rc, dbuf_ptr(&err));
            return 1;
        }
    }
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    double sum = 0;
    for (int i = 0; i < iters; i++)
        sum += t[i];
    printf("policy_eval (validate+render+status, fresh sandbox) of %s\n",
           file);
    printf("  iterations %d: median %.1f us, p99 %.1f us, mean %.1f us, "
           "min %.1f us\n",
           iters, t[iters / 2], t[(int)(iters * 0.99)], sum / iters, t[0]);
    printf("  sandbox peak memory %zu KiB; policy set load (compile) "
           "%.0f us; output %zu bytes JSON\n",
           out.memory_peak / 1024, load_us,
           dbuf_len(&out.objects) + dbuf_len(&out.status));
    free(t);
    policy_output_free(&out);
    policy_set_free(ps);
    dbuf_free(&ds);
    dbuf_free(&err);
    return 0;
}
