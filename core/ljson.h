/*
 * ljson: JSON <-> Lua values in the representation of codec.h (null
 * sentinel, array/object marker metatables), plus cJSON <-> Lua for the
 * modules that hold cJSON trees (check_cluster). The decoder parses
 * straight onto the Lua stack and keeps integers exact (int64); the encoder
 * writes compact JSON with bytewise-sorted keys into a dbuf.
 * None of these functions raises a Lua error: each runs its Lua work
 * protected and reports failure (including Lua memory errors) as a negative
 * CODEC_* code with a message in err. Uses codec, jscan, dbuf, cJSON.
 */
#ifndef DITTOFS_LJSON_H
#define DITTOFS_LJSON_H

#include <stddef.h>

#include <cJSON.h>
#include <lua.h>

#include "dbuf.h"
#include "codec.h"

/*
 * Decodes the JSON text s[0..len) (need not be NUL-terminated) and pushes
 * one value. Rejects: syntax errors, trailing characters, invalid UTF-8,
 * raw control characters and lone surrogates in strings, duplicate object
 * keys, numbers beyond the range of a double (1e400), nesting deeper than
 * lim->max_depth, input longer than lim->max_size (lim may be NULL:
 * defaults). Integers that fit int64 become
 * Lua integers, other numbers floats. On failure pushes nothing and writes
 * "line L, column C: message" into err. Returns 0 or a negative CODEC_*.
 */
int json_push(lua_State *L, const char *s, size_t len,
              const struct codec_limits *lim, char *err, size_t errlen);

/*
 * Pushes a copy of the value at idx, a value json_push made: every table
 * a new one with the same marker and entries (keys and scalars are
 * immutable and shared), everything else as it is. Costs about 60 % of
 * decoding the JSON again (callgrind, the README sample): no text to
 * scan, no string to hash, and each table made at its final size. For
 * trees (json_push never puts a table in two places); raises past
 * CODEC_MAX_DEPTH, and memory errors: call it protected.
 */
void json_copy(lua_State *L, int idx);

/*
 * Appends the value at idx to `out` as compact JSON (keys sorted
 * bytewise). Fails (CODEC_EVALUE) on NaN/infinity, functions, userdata
 * other than null, non-string object keys, invalid UTF-8 in strings and
 * nesting deeper than CODEC_MAX_DEPTH (which also catches cycles);
 * CODEC_ETOOBIG when out's maximum is passed (out is then empty).
 */
int json_encode(lua_State *L, int idx, struct dbuf *out, char *err,
                size_t errlen);

/*
 * Pushes the cJSON tree `item` (borrowed, not modified) as a Lua value.
 * cJSON holds numbers as doubles: integral values become integers, which
 * is exact only within +-2^53. Duplicate keys and nesting deeper than
 * CODEC_MAX_DEPTH are errors. Returns 0 or a negative CODEC_*.
 */
int json_push_cjson(lua_State *L, const cJSON *item, char *err, size_t errlen);

/*
 * Converts the value at idx into a new cJSON tree in *out (the caller
 * owns it: cJSON_Delete). Same rules as json_encode; integers beyond
 * +-2^53 stay exact as cJSON_Raw nodes (jscan_cjson_parse). *out is NULL
 * on failure.
 */
int json_to_cjson(lua_State *L, int idx, cJSON **out, char *err, size_t errlen);

#endif
