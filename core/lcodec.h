/*
 * lcodec: the Lua module `codec`: the JSON and YAML codecs (ljson.h,
 * lyaml.h) as Lua functions (json_decode, json_encode, yaml_decode,
 * yaml_decode_all, yaml_encode, yaml_encode_all), the markers of the data
 * representation (codec.h: null, array, object, is_array, is_object,
 * is_null, array_mt, object_mt, same, deepcopy) and core helpers the
 * policies share with the core (fnv1a64, utf8_cut). Uses codec, ljson,
 * lyaml, text, dbuf.
 */
#ifndef DITTOFS_LCODEC_H
#define DITTOFS_LCODEC_H

#include <lua.h>

#include "codec.h"

/* Opens the codecs: returns 1 with the `codec` table pushed. Raises only
 * on memory errors (it is a lua_CFunction, call it through luaL_requiref
 * or lua_pcall). The Lua module "codec" (in the sandbox: policy.c; for
 * busted: lcodec_module.c's luaopen_codec) is this table plus
 * crd_schema (crd_register). */
int codec_open(lua_State *L);

/* The body of codec.array and codec.object: marks argument 1 (a new table
 * when it is nil or absent) with the metatable at index `mt` (an upvalue
 * index, say) and returns it. Raises for an argument that is not a table,
 * as they do. The functions of the table codec_open pushes have the two
 * marker metatables as upvalues 1 (array) and 2 (object). */
int codec_set_mark(lua_State *L, int mt);

#endif
