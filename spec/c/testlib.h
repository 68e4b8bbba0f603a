/*
 * testlib: the assertion macros of the C tests (after Redis testhelp.h).
 * Each check prints one numbered TAP-like line, "ok N - msg" or
 * "not ok N - msg (file:line)"; TEST_SUMMARY() prints "N passed, N failed"
 * and evaluates to the exit status (0 when nothing failed), so a test ends
 * with `return TEST_SUMMARY();`. Header-only; uses nothing.
 */
#ifndef DITTOFS_TESTLIB_H
#define DITTOFS_TESTLIB_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int testlib_passed;
static int testlib_failed;

/* Records one result; returns `ok` so a test may branch on it. */
__attribute__((format(printf, 4, 5), unused)) static int
testlib_check(int ok, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    int n = testlib_passed + testlib_failed + 1;
    printf("%s %d - ", ok ? "ok" : "not ok", n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (ok)
        printf("\n");
    else
        printf(" (%s:%d)\n", file, line);
    fflush(stdout);
    if (ok)
        testlib_passed++;
    else
        testlib_failed++;
    return ok;
}

/* CHECK(cond, fmt, ...): a numbered result line; evaluates to !!cond. */
#define CHECK(cond, ...)                                                       \
    testlib_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* CHECK_STR_EQ(a, b, msg): string equality (NULL equals only NULL); prints
 * both strings on failure. */
#define CHECK_STR_EQ(a, b, msg)                                                \
    testlib_check_str((a), (b), __FILE__, __LINE__, (msg))

/* CHECK_INT_EQ(a, b, msg): integer equality; prints both on failure. */
#define CHECK_INT_EQ(a, b, msg)                                                \
    testlib_check_int((long long)(a), (long long)(b), __FILE__, __LINE__, (msg))

__attribute__((unused)) static int testlib_check_str(const char *a,
                                                     const char *b,
                                                     const char *file, int line,
                                                     const char *msg)
{
    int ok = (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
    if (!ok)
        printf("# got:      \"%s\"\n# expected: \"%s\"\n", a ? a : "(null)",
               b ? b : "(null)");
    return testlib_check(ok, file, line, "%s", msg);
}

__attribute__((unused)) static int testlib_check_int(long long a, long long b,
                                                     const char *file, int line,
                                                     const char *msg)
{
    if (a != b)
        printf("# got: %lld, expected: %lld\n", a, b);
    return testlib_check(a == b, file, line, "%s", msg);
}

/* Prints "# note" lines that are not results. */
#define TEST_NOTE(...)                                                         \
    do {                                                                       \
        printf("# ");                                                          \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
    } while (0)

/* Prints "N passed, N failed"; evaluates to 0 when nothing failed, else 1. */
/*
 * A wall-clock budget of `ms` scaled by $DITTOFS_TEST_TIME_SCALE (default
 * 1): spec/memcheck.sh raises it, since code under valgrind runs ~30-50x
 * slower. Use it for budgets that working code must fit in, not for the
 * ones a test expects to be exceeded.
 */
static inline unsigned test_ms(unsigned ms)
{
    const char *s = getenv("DITTOFS_TEST_TIME_SCALE");
    unsigned long k = s ? strtoul(s, NULL, 10) : 1;
    return (unsigned)(ms * (k ? k : 1));
}

#define TEST_SUMMARY()                                                         \
    (printf("%d passed, %d failed\n", testlib_passed, testlib_failed),         \
     fflush(stdout), testlib_failed ? 1 : 0)

#endif
