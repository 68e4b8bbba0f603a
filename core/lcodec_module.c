/*
 * lcodec_module: the body of build/codec.so, the Lua C module of the same
 * codecs the operator uses (for busted specs). Referencing luaopen_codec
 * pulls lcodec.o, json.o and yaml.o out of the static core library into
 * the module, which then exports luaopen_codec to `require("codec")`.
 */
#include "lcodec.h"

lua_CFunction codec_module_entry = luaopen_codec;
