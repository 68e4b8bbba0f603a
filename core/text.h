/*
 * text: the byte-level helpers that the JSON, YAML and log writers and the
 * JSON scanners share: hex digits, strict UTF-8 (no surrogates, no
 * overlongs), one JSON escape sequence decoded, and a string written as a
 * JSON string literal; FNV-1a hashes, base64 and RFC 3339 times, each
 * written once for the whole core. Nothing here allocates except
 * text_json_quote (through its dbuf) and the base64 functions. Uses dbuf.
 */
#ifndef DITTOFS_TEXT_H
#define DITTOFS_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "dbuf.h"

/* ---- hex and UTF-8 ------------------------------------------------------- */

/* Returns the value of the hex digit c (either case), or -1. */
int text_hexval(int c);

/* Returns the length (1..4) of the valid UTF-8 sequence at p (p < end),
 * or 0 when it is invalid or cut short by end. */
size_t text_utf8_seq(const char *p, const char *end);

/* Returns the byte offset of the first invalid UTF-8 sequence in s, or
 * len when all of s is valid. */
size_t text_utf8_check(const char *s, size_t len);

/* Returns the code point of the valid n-byte sequence at p (n from
 * text_utf8_seq). */
uint32_t text_utf8_decode(const char *p, size_t n);

/* Returns the length of s[0..len) cut to at most `max` bytes without
 * splitting a UTF-8 sequence: len when len <= max, else the largest
 * n <= max where s[n] does not continue a sequence. The one cut of
 * messages (Events, conditions; codec.utf8_cut for the policies): half a
 * character is not JSON the apiserver takes. */
size_t text_utf8_cut(const char *s, size_t len, size_t max);

/* Writes cp (at most 0x10FFFF) as UTF-8 into out, which has room for 4
 * bytes; returns the length. Surrogates are written as given. */
size_t text_utf8_encode(char *out, uint32_t cp);

/* ---- JSON strings -------------------------------------------------------- */

/*
 * Decodes the JSON escape sequence at p (on its backslash; p < end) into
 * *cp and returns the bytes it spans: 2, 6, or 12 for a surrogate pair
 * written as two \u escapes. A \u surrogate that is not part of a pair
 * comes back alone, as that surrogate (the caller decides whether to
 * accept it). Returns 0 when the escape is invalid or cut short by end.
 */
size_t text_json_unescape(const char *p, const char *end, uint32_t *cp);

/*
 * Appends s[0..n) to b as a JSON string literal, quotes included: '"',
 * '\\' and control characters are escaped (\n, \t, ... or \u00XX), every
 * other byte is copied as is (the caller checks UTF-8 if it must).
 * Returns DBUF_OK or the dbuf error (b is then empty).
 */
int text_json_quote(struct dbuf *b, const char *s, size_t n);
/* The escape of c ('"', '\\' or a control character) as text_json_quote
 * writes it, in esc; returns its length (2 or 6). */
size_t text_json_escape(unsigned char c, char esc[6]);

/* ---- hashes and base64 --------------------------------------------------- */

/* FNV-1a's offset bases: start a hash with these. */
#define TEXT_FNV1A32_INIT 2166136261u
#define TEXT_FNV1A64_INIT 0xcbf29ce484222325ULL

/* FNV-1a over p[0..n), continuing from h (32 and 64 bit). Not keyed: for
 * hash tables of names from the API server and change detection, not
 * against an adversary. */
uint32_t text_fnv1a32(uint32_t h, const void *p, size_t n);
uint64_t text_fnv1a64(uint64_t h, const void *p, size_t n);

/* Standard base64 (with padding) of p[0..n), NUL-terminated and malloc'd;
 * NULL only when out of memory. */
char *text_base64_encode(const void *p, size_t n);

/*
 * Decodes standard base64 s[0..n), skipping whitespace, into a malloc'd
 * buffer (*out, NUL-terminated, *outlen bytes before the NUL). Returns 0,
 * -EINVAL (a character outside the alphabet, data after padding, a cut
 * group) or -ENOMEM; on failure *out is NULL and nothing is left behind
 * (the partial output is wiped: it may be key material).
 */
int text_base64_decode(const char *s, size_t n, unsigned char **out,
                       size_t *outlen);

/* ---- times ----------------------------------------------------------------
 */

/* Room for any text_rfc3339 result, NUL included. */
#define TEXT_RFC3339_MAX 32

/*
 * RFC 3339 UTC of a Unix time: "2026-11-27T13:00:00Z" (metav1.Time) when
 * `usec` < 0, else with the microseconds `usec` (0 .. 999999),
 * "2026-11-27T13:00:00.000123Z" (metav1.MicroTime). A time gmtime cannot
 * represent gives the epoch.
 */
void text_rfc3339(long long unix_s, long usec, char out[TEXT_RFC3339_MAX]);

#endif
