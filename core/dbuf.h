/*
 * dbuf: a growable byte buffer with a maximum size fixed at init (after
 * curl's dynbuf). Every append keeps the contents NUL-terminated. An append
 * that would pass the maximum, or that cannot allocate, frees the contents,
 * leaves the buffer empty and valid, and returns DBUF_TOOBIG or DBUF_NOMEM.
 * Uses nothing.
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
};

/* Initialises an empty buffer that may hold at most `max` bytes. */
void dbuf_init(struct dbuf *b, size_t max);
/* Frees the contents; the buffer stays usable (empty). */
void dbuf_free(struct dbuf *b);
/* Empties the buffer but keeps its allocation. */
void dbuf_reset(struct dbuf *b);

int dbuf_add(struct dbuf *b, const void *mem, size_t len);
int dbuf_adds(struct dbuf *b, const char *s);
int dbuf_addc(struct dbuf *b, char c);
int dbuf_addf(struct dbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int dbuf_vaddf(struct dbuf *b, const char *fmt, va_list ap);

/* Drops the first `n` bytes (n <= len). */
void dbuf_consume(struct dbuf *b, size_t n);

/* Returns the contents ("" when empty); valid until the next mutation. */
const char *dbuf_ptr(const struct dbuf *b);
size_t dbuf_len(const struct dbuf *b);

/* Transfers the contents to the caller (free() it; never NULL unless out of
 * memory) and leaves the buffer empty. `len` may be NULL. */
char *dbuf_take(struct dbuf *b, size_t *len);

#endif
