/*
 * lyaml: YAML <-> Lua values in the representation of codec.h. Decoding
 * uses libyaml's event parser and resolves plain scalars like Kubernetes'
 * go-yaml v2 (YAML 1.1 booleans, octal, underscores); encoding is our own
 * deterministic block-style emitter (sorted keys, 2-space indent,
 * sequences under a key at the key's column as kubectl prints them,
 * quoting whenever YAML 1.1 or 1.2 would read a string as another type).
 * None of these functions raises a Lua error: Lua work runs protected and
 * failures (including Lua memory errors) come back as negative CODEC_*
 * codes with a message in err. Named lyaml so that it never shadows
 * libyaml's <yaml.h>. Uses codec, dbuf, libyaml.
 */
#ifndef DITTOFS_LYAML_H
#define DITTOFS_LYAML_H

#include <stddef.h>

#include <lua.h>

#include "dbuf.h"
#include "codec.h"

/*
 * Decodes every document of the YAML stream s[0..len) and pushes them as
 * one array-marked list (empty for an empty stream; an empty document is
 * codec.null). Mapping keys must be scalars and become strings (their
 * text as written); duplicate keys, merge keys (<<), unknown aliases,
 * nesting deeper than lim->max_depth, aliases expanding to more than
 * lim->max_alias_nodes nodes (each alias is a deep copy) and input longer
 * than lim->max_size are errors (lim may be NULL). On failure pushes
 * nothing and writes "line L, column C: message" into err.
 * Returns 0 or a negative CODEC_*.
 */
int yaml_push_all(lua_State *L, const char *s, size_t len,
                  const struct codec_limits *lim, char *err, size_t errlen);

/*
 * Appends the value at idx to `out` as one block-style YAML document
 * (no "---" line; ends with a newline). Rejects what json_encode
 * rejects, and mapping keys longer than 1024 bytes.
 */
int yaml_encode(lua_State *L, int idx, struct dbuf *out, char *err,
                size_t errlen);

/*
 * Appends every element of the list at idx (an array: marked, or keys
 * 1..n) as YAML documents separated by "---\n". An empty list appends
 * nothing.
 */
int yaml_encode_all(lua_State *L, int idx, struct dbuf *out, char *err,
                    size_t errlen);

/*
 * Returns 1 when the string s[0..len) can be written as a plain scalar
 * and reads back as the same string under YAML 1.1 and 1.2; 0 when it
 * must be quoted. Exposed for tests.
 */
int yaml_plain_safe(const char *s, size_t len);

#endif
