/*
 * jscan: a validating, non-allocating scanner over JSON text. It finds the
 * spans of members and elements without building a tree, so the informer
 * can cut metadata.managedFields out of an object and keep the rest of the
 * server's text byte for byte (integers stay exact, nothing is re-printed),
 * and read the few metadata strings it needs. Skipping a value checks its
 * syntax (strings, numbers, literals, nesting up to JSCAN_MAX_DEPTH); UTF-8
 * is not checked here (the Lua decoder does). Also: cJSON trees whose
 * integers stay exact beyond 2^53 (jscan_cjson_parse), for the JSON that
 * leaves the core. Uses text and cJSON.
 */
#ifndef DITTOFS_JSCAN_H
#define DITTOFS_JSCAN_H

#include <stddef.h>

#include <cjson/cJSON.h>

#define JSCAN_MAX_DEPTH 256

/* A value or key as it appears in the text (strings with their quotes). */
struct jscan_span {
    const char *p;
    size_t len;
};

/*
 * Skips whitespace and one JSON value starting at s[0]. Returns the offset
 * just after the value, or -1 with a message in err naming the byte offset
 * (relative to s) of the first error.
 */
long jscan_skip(const char *s, size_t len, char *err, size_t errlen);
/* Like jscan_skip, but the value must be all of s[0..len) apart from
 * whitespace. Returns 0 or -1 with err set. */
int jscan_whole(const char *s, size_t len, char *err, size_t errlen);

/* Iterator over an object's members or an array's elements. */
struct jscan_iter {
    const char *base; /* start of the container text, for offsets */
    const char *p;
    const char *end;
    int first;
    int done;   /* the closing bracket was consumed */
    char close; /* '}' or ']' */
};

/* One member: key (with quotes), value, where the member starts (its key)
 * and where its value ends. */
struct jscan_member {
    struct jscan_span key;
    struct jscan_span value;
    const char *start;
    const char *value_end;
};

/* Starts iterating the object (array) whose text is s[0..len), leading
 * whitespace allowed. Returns 0, or -1 when it is not an object (array). */
int jscan_object(struct jscan_iter *it, const char *s, size_t len);
int jscan_array(struct jscan_iter *it, const char *s, size_t len);
/* Returns 1 with the next member (element), 0 at the end, -1 on a syntax
 * error (err says where). Every value is validated as it is skipped. */
int jscan_next_member(struct jscan_iter *it, struct jscan_member *m, char *err,
                      size_t errlen);
int jscan_next_element(struct jscan_iter *it, struct jscan_span *v, char *err,
                       size_t errlen);

/* 1 when the string span (with quotes) equals `lit` once unescaped (0 when
 * not, and when out of memory for a `lit` of 256 bytes or more). */
int jscan_str_eq(struct jscan_span s, const char *lit);
/* 1 when the span is a JSON string (starts with a quote). */
int jscan_is_string(struct jscan_span s);
/*
 * Unescapes the string span (with quotes) into out[0..outlen) with a NUL.
 * Returns the length, or -1 when it is not a string (or holds a bad
 * escape) or does not fit.
 */
long jscan_str(struct jscan_span s, char *out, size_t outlen);
/* Length of the unescaped string (without NUL), or -1 if not a string. */
long jscan_str_len(struct jscan_span s);
/* Finds member `key` of the object span; returns 1 and *m, 0 if absent,
 * -1 on a syntax error. */
int jscan_find(struct jscan_span obj, const char *key, struct jscan_member *m,
               char *err, size_t errlen);

/*
 * cJSON_ParseWithLength, except that an integer a double cannot hold
 * exactly (magnitude 2^53 and above) becomes a cJSON_Raw node with the
 * text's digits (valuedouble still holds the nearest double), so printing
 * the tree writes it back unchanged: cJSON alone would turn 2^53+1 into
 * 2^53. Returns NULL on a syntax error or out of memory.
 */
cJSON *jscan_cjson_parse(const char *s, size_t len);

#endif
