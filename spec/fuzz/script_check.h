/*
 * script_check.h: the properties of one `--script-test` run, shared by
 * fuzz_script_test (any bytes as the file) and fuzz_dittoserver (generated
 * DittoServers): the exit code is a documented one; the default policies
 * never fail on an input the CRD and validate() accept (exit 4 is a policy
 * bug, a timeout aside: the CPU is shared); a success prints output that
 * decodes, identical on a second run (policies are pure functions); a
 * failure prints nothing and says why. Returns the exit code.
 */
#ifndef DITTOFS_FUZZ_SCRIPT_CHECK_H
#define DITTOFS_FUZZ_SCRIPT_CHECK_H

#include "dbuf.h"
#include "fuzz.h"
#include "ljson.h"
#include "log.h"
#include "lyaml.h"
#include "script_test.h"

static inline int script_check(const uint8_t *data, size_t size, int json)
{
    static int once;
    if (!once) {
        log_set_level(LOG_ERROR);
        once = 1;
    }
    char path[256], err[256];
    if (fuzz_tmpfile(data, size, path) != 0)
        return -1;
    struct script_test_options o = {
        .file = path,
        .json = json,
        .limits = {.timeout_ms = 5000},
    };
    struct dbuf out, errs, out2, errs2;
    dbuf_init(&out, (size_t)64 << 20);
    dbuf_init(&errs, (size_t)64 << 20);
    dbuf_init(&out2, (size_t)64 << 20);
    dbuf_init(&errs2, (size_t)64 << 20);

    int rc = script_test_run(&o, &out, &errs);
    FUZZ_CHECK(rc == SCRIPT_TEST_OK || rc == SCRIPT_TEST_EINPUT ||
                   rc == SCRIPT_TEST_EINVALID || rc == SCRIPT_TEST_EPOLICY,
               "exit code %d", rc);
    if (rc == SCRIPT_TEST_EPOLICY)
        FUZZ_CHECK(strstr(dbuf_ptr(&errs), "timeout") != NULL,
                   "the default policies failed on:\n%.*s\n----\n%s", (int)size,
                   (const char *)data, dbuf_ptr(&errs));
    if (rc != SCRIPT_TEST_OK) {
        FUZZ_CHECK(dbuf_len(&out) == 0, "output on failure %d", rc);
        FUZZ_CHECK(dbuf_len(&errs) > 0, "failure %d without a message", rc);
        goto done;
    }
    FUZZ_CHECK(dbuf_len(&out) > 0, "success without output");
    lua_State *L = fuzz_lua_new(0);
    int drc = json ? json_push(L, dbuf_ptr(&out), dbuf_len(&out), NULL, err,
                               sizeof(err))
                   : yaml_push_all(L, dbuf_ptr(&out), dbuf_len(&out), NULL, err,
                                   sizeof(err));
    FUZZ_CHECK(drc == CODEC_OK, "output does not decode (%s):\n%s", err,
               dbuf_ptr(&out));
    lua_close(L);

    int rc2 = script_test_run(&o, &out2, &errs2);
    FUZZ_CHECK(rc2 == SCRIPT_TEST_OK, "second run: exit %d", rc2);
    FUZZ_CHECK(dbuf_len(&out) == dbuf_len(&out2) &&
                   memcmp(dbuf_ptr(&out), dbuf_ptr(&out2), dbuf_len(&out)) == 0,
               "second run printed something else");
done:
    unlink(path);
    dbuf_free(&out);
    dbuf_free(&errs);
    dbuf_free(&out2);
    dbuf_free(&errs2);
    return rc;
}

#endif
