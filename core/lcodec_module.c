/*
 * lcodec_module: the body of build/codec.so, the Lua C module of the same
 * codecs the operator uses (for busted specs): the codecs (lcodec.h) plus
 * crd_schema (crd.h), as the sandbox's "codec" has them. Defining
 * luaopen_codec here pulls lcodec.o, json.o, yaml.o and crd.o out of the
 * static core library into the module, which exports it to
 * `require("codec")`.
 */
#include "crd.h"
#include "lcodec.h"

int luaopen_codec(lua_State *L);

int luaopen_codec(lua_State *L)
{
    codec_open(L); /* [codec] */
    crd_register(L);
    return 1;
}
