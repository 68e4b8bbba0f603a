/*
 * fuzz_script_test: `--script-test`'s whole path (core/script_test.c: read,
 * YAML/JSON decode, the CRD's pruning/defaulting/validation, the embedded
 * policies' validate, render and status, the managed-kinds check, the
 * output) on any input as the DittoServer file; odd sizes ask for JSON
 * output. Properties: the exit code is one of the documented ones; the
 * default policies never fail on an input the CRD and validate() accept
 * (exit 4 is a policy bug, a timeout aside: the CPU is shared); a success
 * prints output that decodes, identical on a second run (policies are pure
 * functions); a failure prints nothing and says why on stderr.
 */
#include "dbuf.h"
#include "fuzz.h"
#include "ljson.h"
#include "lyaml.h"
#include "log.h"
#include "script_test.h"

#define OUT_MAX ((size_t)64 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        log_set_level(LOG_ERROR);
        once = 1;
    }
    char path[256], err[256];
    if (fuzz_tmpfile(data, size, path) != 0)
        return 0;
    struct script_test_options o = {
        .file = path,
        .json = (int)(size & 1),
        .limits = {.timeout_ms = 5000},
    };
    struct dbuf out, errs, out2, errs2;
    dbuf_init(&out, OUT_MAX);
    dbuf_init(&errs, OUT_MAX);
    dbuf_init(&out2, OUT_MAX);
    dbuf_init(&errs2, OUT_MAX);

    int rc = script_test_run(&o, &out, &errs);
    FUZZ_CHECK(rc == SCRIPT_TEST_OK || rc == SCRIPT_TEST_EINPUT ||
                   rc == SCRIPT_TEST_EINVALID || rc == SCRIPT_TEST_EPOLICY,
               "exit code %d", rc);
    if (rc == SCRIPT_TEST_EPOLICY)
        FUZZ_CHECK(strstr(dbuf_ptr(&errs), "timeout") != NULL,
                   "the default policies failed:\n%s", dbuf_ptr(&errs));
    if (rc != SCRIPT_TEST_OK) {
        FUZZ_CHECK(dbuf_len(&out) == 0, "output on failure %d", rc);
        FUZZ_CHECK(dbuf_len(&errs) > 0, "failure %d without a message", rc);
        goto done;
    }
    FUZZ_CHECK(dbuf_len(&out) > 0, "success without output");
    lua_State *L = fuzz_lua_new(0);
    int drc = o.json ? json_push(L, dbuf_ptr(&out), dbuf_len(&out), NULL, err,
                                 sizeof(err))
                     : yaml_push_all(L, dbuf_ptr(&out), dbuf_len(&out), NULL,
                                     err, sizeof(err));
    FUZZ_CHECK(drc == CODEC_OK, "output does not decode (%s):\n%s", err,
               dbuf_ptr(&out));
    lua_close(L);

    rc = script_test_run(&o, &out2, &errs2);
    FUZZ_CHECK(rc == SCRIPT_TEST_OK, "second run: exit %d", rc);
    FUZZ_CHECK(dbuf_len(&out) == dbuf_len(&out2) &&
                   memcmp(dbuf_ptr(&out), dbuf_ptr(&out2), dbuf_len(&out)) == 0,
               "second run printed something else");
done:
    unlink(path);
    dbuf_free(&out);
    dbuf_free(&errs);
    dbuf_free(&out2);
    dbuf_free(&errs2);
    return 0;
}
