/*
 * test_dbuf: the bounded buffer's contract (dbuf.h): appends keep a NUL,
 * the maximum is a hard limit, a failed append leaves the buffer empty and
 * valid, and its error is sticky until reset, free or take (issue 11: a
 * failure midway must not leave a truncated text that reads as whole).
 */
#include "dbuf.h"
#include "testlib.h"

static void test_appends(void)
{
    struct dbuf b;
    dbuf_init(&b, 16);
    CHECK(dbuf_adds(&b, "ab") == DBUF_OK && dbuf_addc(&b, 'c') == DBUF_OK &&
              dbuf_addf(&b, "%d", 42) == DBUF_OK,
          "appends within the maximum");
    CHECK_STR_EQ(dbuf_ptr(&b), "abc42", "contents NUL-terminated");
    CHECK(dbuf_error(&b) == DBUF_OK, "no error");
    dbuf_free(&b);
    CHECK_STR_EQ(dbuf_ptr(&b), "", "empty after free");
}

static void test_sticky(void)
{
    struct dbuf b;
    dbuf_init(&b, 8);
    dbuf_adds(&b, "{\"a\":");
    CHECK(dbuf_adds(&b, "\"too long\"") == DBUF_TOOBIG && dbuf_len(&b) == 0,
          "past the maximum: DBUF_TOOBIG, buffer empty");
    CHECK(dbuf_addc(&b, '}') == DBUF_TOOBIG && dbuf_len(&b) == 0,
          "a later addc fails with the same error and adds nothing");
    CHECK(dbuf_adds(&b, "1}") == DBUF_TOOBIG &&
              dbuf_addf(&b, "%d", 1) == DBUF_TOOBIG &&
              dbuf_add(&b, "x", 1) == DBUF_TOOBIG && dbuf_len(&b) == 0,
          "... adds, addf and add too: no truncated text");
    CHECK(dbuf_error(&b) == DBUF_TOOBIG, "dbuf_error reports it");
    dbuf_reset(&b);
    CHECK(dbuf_error(&b) == DBUF_OK && dbuf_adds(&b, "ok") == DBUF_OK,
          "reset clears the error");
    CHECK_STR_EQ(dbuf_ptr(&b), "ok", "... and the buffer works again");
    dbuf_adds(&b, "0123456789");
    dbuf_free(&b);
    CHECK(dbuf_error(&b) == DBUF_OK && dbuf_adds(&b, "x") == DBUF_OK,
          "free clears it too");
    dbuf_adds(&b, "0123456789");
    char *p = dbuf_take(&b, NULL);
    CHECK(p != NULL && *p == '\0' && dbuf_error(&b) == DBUF_OK,
          "take gives the empty contents and clears the error");
    free(p);
    dbuf_free(&b);
}

int main(void)
{
    test_appends();
    test_sticky();
    return TEST_SUMMARY();
}
