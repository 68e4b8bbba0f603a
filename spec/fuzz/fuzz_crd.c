/*
 * fuzz_crd: the apiserver's structural pruning, defaulting and validation
 * as core/crd.c does it with the embedded DittoServer CRD, on every
 * document of a YAML (or JSON) input. Properties: crd_default and
 * crd_validate never fail but for memory; defaulting is idempotent (a
 * second pass warns about nothing and changes nothing, byte for byte);
 * validation is deterministic (the same messages twice); the policies'
 * variant (codec.crd_default: no pruning) is idempotent too.
 */
#include "crd.h"
#include "dbuf.h"
#include "fuzz.h"
#include "ljson.h"
#include "lyaml.h"

#define OUT_MAX ((size_t)64 << 20)

/* JSON of the value at idx into b (reset first); 0 or a CODEC_* code. */
static int encode(lua_State *L, int idx, struct dbuf *b)
{
    char err[256];
    dbuf_reset(b);
    return json_encode(L, idx, b, err, sizeof(err));
}

static int same(const struct dbuf *a, const struct dbuf *b)
{
    return dbuf_len(a) == dbuf_len(b) &&
           memcmp(dbuf_ptr(a), dbuf_ptr(b), dbuf_len(a)) == 0;
}

/* Pushes a deep copy of the decoded value at idx (via JSON), or nothing
 * and returns -1 when JSON cannot hold it. */
static int copy(lua_State *L, int idx, struct dbuf *tmp)
{
    char err[256];
    if (encode(L, idx, tmp) != CODEC_OK)
        return -1;
    FUZZ_CHECK(json_push(L, dbuf_ptr(tmp), dbuf_len(tmp), NULL, err,
                         sizeof(err)) == CODEC_OK,
               "own JSON does not decode: %s", err);
    return 0;
}

static void check_document(lua_State *L, int obj, struct dbuf *b1,
                           struct dbuf *b2, struct dbuf *msgs)
{
    /* the apiserver's pass: prune, default; then the same again */
    dbuf_reset(msgs);
    int n = crd_default(L, 1, obj, msgs);
    FUZZ_CHECK(n >= 0, "crd_default failed: %d", n);
    if (encode(L, obj, b1) != CODEC_OK)
        return;
    dbuf_reset(msgs);
    n = crd_default(L, 1, obj, msgs);
    FUZZ_CHECK(n == 0, "second pass warns: %s", dbuf_ptr(msgs));
    FUZZ_CHECK(encode(L, obj, b2) == CODEC_OK && same(b1, b2),
               "second pass changed %s into %s", dbuf_ptr(b1), dbuf_ptr(b2));

    dbuf_reset(b1);
    dbuf_reset(b2);
    int e1 = crd_validate(L, 1, obj, "", b1);
    int e2 = crd_validate(L, 1, obj, "", b2);
    FUZZ_CHECK(e1 >= 0 && e1 == e2 && same(b1, b2),
               "validation differs: %d %s / %d %s", e1, dbuf_ptr(b1), e2,
               dbuf_ptr(b2));
}

/* codec.crd_default(value, schema) twice on a copy: the same result. */
static void check_policy_default(lua_State *L, int doc, struct dbuf *b1,
                                 struct dbuf *b2)
{
    if (copy(L, doc, b1) != 0)
        return;
    int v = lua_gettop(L);
    for (int pass = 0; pass < 2; pass++) {
        lua_pushcfunction(L, crd_l_default);
        lua_pushvalue(L, v);
        lua_pushvalue(L, 1);
        FUZZ_CHECK(lua_pcall(L, 2, 1, 0) == LUA_OK, "crd_default raised: %s",
                   lua_tostring(L, -1));
        FUZZ_CHECK(lua_rawequal(L, -1, v), "crd_default returned another");
        lua_pop(L, 1);
        FUZZ_CHECK(encode(L, v, pass == 0 ? b1 : b2) == CODEC_OK,
                   "defaulted value does not encode");
    }
    FUZZ_CHECK(same(b1, b2), "codec.crd_default is not idempotent: %s / %s",
               dbuf_ptr(b1), dbuf_ptr(b2));
    lua_settop(L, v - 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    int fresh;
    lua_State *L = fuzz_lua_kept(&fresh);
    struct dbuf b1, b2, msgs;
    if (fresh) {
        /* kept across inputs: [schema] */
        dbuf_init(&msgs, 1 << 20);
        FUZZ_CHECK(crd_push_embedded_schema(L, &msgs) == CRD_OK,
                   "embedded CRD: %s", dbuf_ptr(&msgs));
        dbuf_free(&msgs);
    }
    dbuf_init(&b1, OUT_MAX);
    dbuf_init(&b2, OUT_MAX);
    dbuf_init(&msgs, OUT_MAX);
    if (yaml_push_all(L, (const char *)data, size, NULL, err, sizeof(err)) ==
        CODEC_OK) {
        lua_Integer n = luaL_len(L, 2);
        for (lua_Integer i = 1; i <= n && i <= 8; i++) {
            lua_rawgeti(L, 2, i); /* [schema, docs, doc] */
            if (lua_type(L, 3) == LUA_TTABLE) {
                check_policy_default(L, 3, &b1, &b2);
                check_document(L, 3, &b1, &b2, &msgs);
            }
            lua_settop(L, 2);
        }
    }
    dbuf_free(&b1);
    dbuf_free(&b2);
    dbuf_free(&msgs);
    fuzz_lua_done(L, 1);
    return 0;
}
