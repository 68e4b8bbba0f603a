/* text: hex, UTF-8, JSON string, hash and base64 helpers; see text.h. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "text.h"

int text_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t text_utf8_seq(const char *s, const char *end)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t avail = (size_t)(end - s);
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0) /* overlong */
            return 0;
        if (c == 0xED && p[1] > 0x9F) /* surrogate */
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xF4 && p[1] > 0x8F) /* past U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

size_t text_utf8_check(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    while (p < end) {
        /* ASCII eight bytes at a time (config files, scripts). */
        if (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if ((w & 0x8080808080808080u) == 0) {
                p += 8;
                continue;
            }
        }
        if ((unsigned char)*p < 0x80) {
            p++;
            continue;
        }
        size_t n = text_utf8_seq(p, end);
        if (n == 0)
            return (size_t)(p - s);
        p += n;
    }
    return len;
}

uint32_t text_utf8_decode(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    if (n == 1)
        return p[0];
    if (n == 2)
        return ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    if (n == 3)
        return ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    return ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) |
           ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
}

size_t text_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

size_t text_utf8_encode(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads the 4 hex digits at p (bounds checked); returns -1 if invalid. */
static long hex4(const char *p, const char *end)
{
    long v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int h = text_hexval((unsigned char)p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

size_t text_json_unescape(const char *p, const char *end, uint32_t *cp)
{
    if (end - p < 2)
        return 0;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
        *cp = (unsigned char)p[1];
        return 2;
    case 'b':
        *cp = '\b';
        return 2;
    case 'f':
        *cp = '\f';
        return 2;
    case 'n':
        *cp = '\n';
        return 2;
    case 'r':
        *cp = '\r';
        return 2;
    case 't':
        *cp = '\t';
        return 2;
    case 'u':
        break;
    default:
        return 0;
    }
    long hi = hex4(p + 2, end);
    if (hi < 0)
        return 0;
    *cp = (uint32_t)hi;
    if (hi < 0xD800 || hi > 0xDBFF)
        return 6;
    /* A high surrogate combines only with a \u low surrogate right after. */
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u')
        return 6;
    long lo = hex4(p + 8, end);
    if (lo < 0xDC00 || lo > 0xDFFF)
        return 6;
    *cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
    return 12;
}

size_t text_json_escape(unsigned char c, char esc[6])
{
    static const char hex[] = "0123456789abcdef";
    esc[0] = '\\';
    switch (c) {
    case '"':
        esc[1] = '"';
        return 2;
    case '\\':
        esc[1] = '\\';
        return 2;
    case '\n':
        esc[1] = 'n';
        return 2;
    case '\r':
        esc[1] = 'r';
        return 2;
    case '\t':
        esc[1] = 't';
        return 2;
    case '\b':
        esc[1] = 'b';
        return 2;
    case '\f':
        esc[1] = 'f';
        return 2;
    default:
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        return 6;
    }
}

int text_json_quote(struct dbuf *b, const char *s, size_t n)
{
    size_t run = 0;
    /* Copies runs of plain bytes at once; an error empties b, so stop. */
    int rc = dbuf_addc(b, '"');
    if (rc != DBUF_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[6];
        size_t elen = text_json_escape(c, esc);
        rc = dbuf_add(b, s + run, i - run);
        if (rc == DBUF_OK)
            rc = dbuf_add(b, esc, elen);
        if (rc != DBUF_OK)
            return rc;
        run = i + 1;
    }
    rc = dbuf_add(b, s + run, n - run);
    if (rc != DBUF_OK)
        return rc;
    return dbuf_addc(b, '"');
}

/* ---- hashes and base64 --------------------------------------------------- */

uint32_t text_fnv1a32(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

uint64_t text_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

char *text_base64_encode(const void *in, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = in;
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

int text_base64_decode(const char *s, size_t n, unsigned char **out,
                       size_t *outlen)
{
    size_t cap = n / 4 * 3 + 4, o = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    *out = NULL;
    *outlen = 0;
    unsigned char *p = malloc(cap);
    if (p == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isspace(ch))
            continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        int v = b64_value(ch);
        if (pad || v < 0)
            goto fail; /* data after padding, or not base64 */
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (pad > 2 || bits >= 6)
        goto fail;
    p[o] = '\0';
    *out = p;
    *outlen = o;
    return 0;
fail:
    explicit_bzero(p, cap);
    free(p);
    return -EINVAL;
}

/* ---- times ----------------------------------------------------------------
 */

void text_rfc3339(long long unix_s, long usec, char out[TEXT_RFC3339_MAX])
{
    struct tm tm;
    time_t t = (time_t)unix_s;
    size_t n = 0;
    if (gmtime_r(&t, &tm) != NULL)
        n = strftime(out, TEXT_RFC3339_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0)
        n = (size_t)snprintf(out, TEXT_RFC3339_MAX, "1970-01-01T00:00:00");
    if (usec >= 0)
        snprintf(out + n, TEXT_RFC3339_MAX - n, ".%06ldZ", usec % 1000000);
    else
        snprintf(out + n, TEXT_RFC3339_MAX - n, "Z");
}
