/*
 * fuzz_quantity: the core's quantity comparison (core/apply.c,
 * apply_quantity_cmp) against lua/k8s/quantity.lua (embedded) as the
 * oracle. Input: two strings separated by the first newline (one string:
 * compared with itself). Where they overlap they must agree: a string the
 * Lua parser accepts the C one accepts (up to the C parser's 128 bytes);
 * one the C parser accepts the Lua one accepts unless its magnitude passes
 * int64 (a documented Lua limit); both compare a and b alike. The Lua
 * canonical form of a quantity is the same value for both.
 */
#include "apply.h"
#include "embedded.h"
#include "fuzz.h"

#define QTY_C_MAX 128

/* Stack: [q, a, b] -> pushes Lua's verdicts: ok_a, err_a, ok_b, err_b,
 * cmp (or nil), canonical(a) (or nil). */
static const char CHECK[] =
    "local q, a, b = ...\n"
    "local qa, ea = q.parse(a)\n"
    "local qb, eb = q.parse(b)\n"
    "local cmp = qa and qb and q.compare(qa, qb) or nil\n"
    "local canon = qa and tostring(qa) or nil\n"
    "if canon then assert(q.compare(q.parse(canon), qa) == 0, canon) end\n"
    "return qa ~= nil, ea, qb ~= nil, eb, cmp, canon\n";

static int c_valid(const char *s)
{
    int cmp;
    return apply_quantity_cmp(s, s, &cmp) == 0;
}

/* The Lua verdict on one string against the C one. */
static void agree(const char *s, int lua_ok, const char *lua_err)
{
    int c_ok = c_valid(s);
    if (lua_ok && strlen(s) <= QTY_C_MAX)
        FUZZ_CHECK(c_ok, "Lua accepts \"%s\", C refuses it", s);
    if (c_ok && !lua_ok)
        FUZZ_CHECK(lua_err != NULL && strstr(lua_err, "exceeds") != NULL,
                   "C accepts \"%s\", Lua refuses it: %s", s,
                   lua_err ? lua_err : "?");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *a = malloc(size + 1);
    if (a == NULL)
        return 0;
    memcpy(a, data, size);
    a[size] = '\0';
    char *nl = strchr(a, '\n'), *b = a;
    if (nl != NULL) {
        *nl = '\0';
        b = nl + 1;
    }

    int fresh;
    lua_State *L = fuzz_lua_kept(&fresh);
    if (fresh) {
        /* stack kept across inputs: [check, q] */
        const struct embedded_file *f = embedded_find("lua/k8s/quantity.lua");
        FUZZ_CHECK(f != NULL, "lua/k8s/quantity.lua is not embedded");
        FUZZ_CHECK(luaL_loadbuffer(L, CHECK, sizeof(CHECK) - 1, "=check") ==
                       LUA_OK,
                   "check: %s", lua_tostring(L, -1));
        FUZZ_CHECK(luaL_loadbuffer(L, (const char *)f->data, f->len,
                                   "=quantity.lua") == LUA_OK &&
                       lua_pcall(L, 0, 1, 0) == LUA_OK,
                   "quantity.lua: %s", lua_tostring(L, -1));
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushstring(L, a);
    lua_pushstring(L, b);
    FUZZ_CHECK(lua_pcall(L, 3, 6, 0) == LUA_OK, "Lua raised: %s",
               lua_tostring(L, -1));
    /* [check, q, ok_a, err_a, ok_b, err_b, cmp, canonical] */
    int ok_a = lua_toboolean(L, 3), ok_b = lua_toboolean(L, 5);
    agree(a, ok_a, lua_tostring(L, 4));
    agree(b, ok_b, lua_tostring(L, 6));

    int cmp;
    if (ok_a && ok_b && apply_quantity_cmp(a, b, &cmp) == 0)
        FUZZ_CHECK(cmp == lua_tointeger(L, 7),
                   "compare(\"%s\", \"%s\"): C %d, Lua %d", a, b, cmp,
                   (int)lua_tointeger(L, 7));
    if (ok_a && c_valid(a)) {
        const char *canon = lua_tostring(L, 8);
        FUZZ_CHECK(apply_quantity_cmp(a, canon, &cmp) == 0 && cmp == 0,
                   "C: \"%s\" != its canonical form \"%s\"", a, canon);
    }
    fuzz_lua_done(L, 2);
    free(a);
    return 0;
}
