/*
 * dbuf: a growable byte buffer with a maximum size fixed at init (after
 * curl's dynbuf). Every append keeps the contents NUL-terminated. An append
 * that would pass the maximum, or that cannot allocate, frees the contents,
 * leaves the buffer empty and valid, and returns DBUF_TOOBIG or DBUF_NOMEM.
 * The error is sticky: every later append adds nothing and returns it
 * again, until dbuf_reset, dbuf_free or dbuf_take, so a failure midway
 * cannot leave a truncated text that reads as a whole one (a writer may
 * check only its last append, or dbuf_error once at the end).
 * Uses nothing.
 *
 * The core's error convention, defined here: a fallible function returns
 * int, 0 (or an enum's *_OK) on success and a negative code on failure
 * (-errno, or a module's enum with a *_strerror where callers branch on
 * the cause); the human-readable reason goes into a caller's
 * `struct dbuf *err` (appended, one line, no trailing newline) or, in
 * modules below dbuf's users, `char *err, size_t errlen`.
 */
#ifndef DITTOFS_DBUF_H
#define DITTOFS_DBUF_H

#include <stdarg.h>
#include <stddef.h>

enum {
    DBUF_OK = 0,
    DBUF_NOMEM = -1,
    DBUF_TOOBIG = -2,
};

struct dbuf {
    char *ptr;
    size_t len;
    size_t cap;
    size_t max;
    int error; /* sticky: DBUF_OK, or the first failed append's code */
};

/* Initialises an empty buffer that may hold at most `max` bytes. */
void dbuf_init(struct dbuf *b, size_t max);
/* Frees the contents and clears the error; the buffer stays usable. */
void dbuf_free(struct dbuf *b);
/* Empties the buffer and clears the error, keeping the allocation. */
void dbuf_reset(struct dbuf *b);
/* DBUF_OK, or the error of the first append that failed since the last
 * init, reset, free or take (the contents are then empty). */
int dbuf_error(const struct dbuf *b);
/* "out of memory" (DBUF_NOMEM), "too large" (DBUF_TOOBIG), "ok" or
 * "unknown dbuf error": static strings. */
const char *dbuf_strerror(int rc);

int dbuf_add(struct dbuf *b, const void *mem, size_t len);
int dbuf_adds(struct dbuf *b, const char *s);
int dbuf_addc(struct dbuf *b, char c);
int dbuf_addf(struct dbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int dbuf_vaddf(struct dbuf *b, const char *fmt, va_list ap);

/* Drops the first `n` bytes (n <= len). */
void dbuf_consume(struct dbuf *b, size_t n);
/* Drops the bytes from `n` on (nothing when n >= len). */
void dbuf_truncate(struct dbuf *b, size_t n);

/* Returns the contents ("" when empty); valid until the next mutation. */
const char *dbuf_ptr(const struct dbuf *b);
size_t dbuf_len(const struct dbuf *b);

/* Transfers the contents to the caller (free() it; never NULL unless out of
 * memory) and leaves the buffer empty, its error cleared. `len` may be
 * NULL. */
char *dbuf_take(struct dbuf *b, size_t *len);

#endif
