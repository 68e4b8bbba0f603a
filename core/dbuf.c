/* dbuf: bounded growable buffer; see dbuf.h for the contract. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dbuf.h"

void dbuf_init(struct dbuf *b, size_t max)
{
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    /* Clamped so that max + 1 (the terminator) and the doubling in grow()
     * cannot overflow. */
    b->max = max < SIZE_MAX / 4 ? max : SIZE_MAX / 4;
    b->error = DBUF_OK;
}

/* Frees the contents and records `rc` as the sticky error. */
static int fail(struct dbuf *b, int rc)
{
    free(b->ptr);
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    b->error = rc;
    return rc;
}

void dbuf_free(struct dbuf *b)
{
    fail(b, DBUF_OK);
}

void dbuf_reset(struct dbuf *b)
{
    b->len = 0;
    b->error = DBUF_OK;
    if (b->ptr)
        b->ptr[0] = '\0';
}

int dbuf_error(const struct dbuf *b)
{
    return b->error;
}

const char *dbuf_strerror(int rc)
{
    switch (rc) {
    case DBUF_OK:
        return "ok";
    case DBUF_NOMEM:
        return "out of memory";
    case DBUF_TOOBIG:
        return "too large";
    default:
        return "unknown dbuf error";
    }
}

/* Makes room for `extra` more bytes plus the terminator. */
static int grow(struct dbuf *b, size_t extra)
{
    if (b->error != DBUF_OK)
        return b->error;
    if (extra > b->max || b->len > b->max - extra)
        return fail(b, DBUF_TOOBIG);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return DBUF_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->ptr, cap);
    if (p == NULL)
        return fail(b, DBUF_NOMEM);
    b->ptr = p;
    b->cap = cap;
    return DBUF_OK;
}

int dbuf_add(struct dbuf *b, const void *mem, size_t len)
{
    int rc = grow(b, len);
    if (rc != DBUF_OK)
        return rc;
    if (len)
        memcpy(b->ptr + b->len, mem, len);
    b->len += len;
    b->ptr[b->len] = '\0';
    return DBUF_OK;
}

int dbuf_adds(struct dbuf *b, const char *s)
{
    return dbuf_add(b, s, strlen(s));
}

int dbuf_addc(struct dbuf *b, char c)
{
    /* Fast path (encoders add many single bytes): room for c and the
     * terminator, and c stays within the maximum. */
    if (b->len + 1 < b->cap && b->len < b->max) {
        b->ptr[b->len++] = c;
        b->ptr[b->len] = '\0';
        return DBUF_OK;
    }
    return dbuf_add(b, &c, 1);
}

int dbuf_vaddf(struct dbuf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (b->error != DBUF_OK)
        return b->error;
    if (n < 0)
        return fail(b, DBUF_NOMEM);
    int rc = grow(b, (size_t)n);
    if (rc != DBUF_OK)
        return rc;
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return DBUF_OK;
}

int dbuf_addf(struct dbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dbuf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void dbuf_consume(struct dbuf *b, size_t n)
{
    if (n >= b->len) {
        dbuf_reset(b);
        return;
    }
    memmove(b->ptr, b->ptr + n, b->len - n);
    b->len -= n;
    b->ptr[b->len] = '\0';
}

void dbuf_truncate(struct dbuf *b, size_t n)
{
    if (n < b->len) {
        b->len = n;
        b->ptr[n] = '\0';
    }
}

const char *dbuf_ptr(const struct dbuf *b)
{
    return b->ptr ? b->ptr : "";
}

size_t dbuf_len(const struct dbuf *b)
{
    return b->len;
}

char *dbuf_take(struct dbuf *b, size_t *len)
{
    char *p = b->ptr;
    if (p == NULL)
        p = calloc(1, 1);
    if (len)
        *len = b->len;
    b->ptr = NULL;
    b->len = 0;
    b->cap = 0;
    b->error = DBUF_OK;
    return p;
}
