/*
 * fuzz_jscan: the validating scanner (core/jscan.c) against the strict
 * decoder (core/ljson.c) on any input. jscan checks syntax only (no UTF-8,
 * no duplicate keys, depth 256), so whatever json_push accepts jscan must
 * accept too, and then: iterating the top-level object (array) finds every
 * member (element) the decoder found, each key and string value unescapes
 * (jscan_str, jscan_str_len) to exactly the decoder's bytes, jscan_find
 * finds each key, and jscan_cjson_parse builds a tree. jscan_skip never
 * reads past the input (ASan) and returns an offset inside it.
 */
#include <cjson/cJSON.h>

#include "fuzz.h"
#include "jscan.h"
#include "ljson.h"

/* Checks that the string span unescapes to the Lua string at idx. */
static void same_string(lua_State *L, int idx, struct jscan_span sp)
{
    size_t want_len;
    const char *want = lua_tolstring(L, idx, &want_len);
    long n = jscan_str_len(sp);
    FUZZ_CHECK(n >= 0 && (size_t)n == want_len,
               "jscan_str_len %ld, the decoder has %zu bytes", n, want_len);
    char *buf = malloc((size_t)n + 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    long m = jscan_str(sp, buf, (size_t)n + 1);
    FUZZ_CHECK(m == n && memcmp(buf, want, want_len) == 0,
               "jscan_str differs from the decoder: %.*s", (int)sp.len, sp.p);
    if (n > 0)
        FUZZ_CHECK(jscan_str(sp, buf, (size_t)n) == -1,
                   "jscan_str wrote past its buffer size");
    free(buf);
}

static void members(lua_State *L, const char *s, size_t len)
{
    struct jscan_iter it;
    struct jscan_member m;
    struct jscan_span whole = {s, len};
    char err[256];
    size_t count = 0;
    int rc;

    FUZZ_CHECK(jscan_object(&it, s, len) == 0, "not an object to jscan");
    while ((rc = jscan_next_member(&it, &m, err, sizeof(err))) == 1) {
        count++;
        FUZZ_CHECK(jscan_is_string(m.key), "key is not a string");
        long kn = jscan_str_len(m.key);
        char *key = malloc((size_t)kn + 1);
        FUZZ_CHECK(key != NULL && jscan_str(m.key, key, (size_t)kn + 1) == kn,
                   "key does not unescape");
        lua_pushlstring(L, key, (size_t)kn);
        lua_rawget(L, 1);
        FUZZ_CHECK(!lua_isnil(L, -1), "key %s not in the decoded object", key);
        if (lua_type(L, -1) == LUA_TSTRING)
            same_string(L, lua_gettop(L), m.value);
        lua_pop(L, 1);
        if (strlen(key) == (size_t)kn) {
            struct jscan_member f;
            FUZZ_CHECK(jscan_find(whole, key, &f, err, sizeof(err)) == 1 &&
                           f.value.p == m.value.p,
                       "jscan_find misses %s", key);
        }
        free(key);
    }
    FUZZ_CHECK(rc == 0, "iteration failed: %s", err);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        n++;
        lua_pop(L, 1);
    }
    FUZZ_CHECK(n == count, "jscan saw %zu members, the decoder %zu", count, n);
}

static void elements(lua_State *L, const char *s, size_t len)
{
    struct jscan_iter it;
    struct jscan_span v;
    char err[256];
    lua_Integer i = 0;
    int rc;

    FUZZ_CHECK(jscan_array(&it, s, len) == 0, "not an array to jscan");
    while ((rc = jscan_next_element(&it, &v, err, sizeof(err))) == 1) {
        lua_rawgeti(L, 1, ++i);
        if (lua_type(L, -1) == LUA_TSTRING)
            same_string(L, lua_gettop(L), v);
        lua_pop(L, 1);
    }
    FUZZ_CHECK(rc == 0, "iteration failed: %s", err);
    FUZZ_CHECK((lua_Integer)luaL_len(L, 1) == i,
               "jscan saw %lld elements, the decoder %lld", (long long)i,
               (long long)luaL_len(L, 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char err[256];

    long off = jscan_skip(s, size, err, sizeof(err));
    FUZZ_CHECK(off == -1 || (off > 0 && (size_t)off <= size),
               "jscan_skip returned %ld for %zu bytes", off, size);
    int whole = jscan_whole(s, size, err, sizeof(err));

    lua_State *L = fuzz_lua_new(0);
    if (json_push(L, s, size, NULL, err, sizeof(err)) == CODEC_OK) {
        FUZZ_CHECK(whole == 0, "jscan refuses what the decoder accepts: %s",
                   err);
        if (lua_type(L, 1) == LUA_TTABLE) {
            if (codec_kind(L, 1) == CODEC_OBJECT)
                members(L, s, size);
            else
                elements(L, s, size);
        } else if (lua_type(L, 1) == LUA_TSTRING) {
            size_t b = 0;
            while (b < size && strchr(" \t\r\n", s[b]) != NULL)
                b++;
            struct jscan_span sp = {s + b, (size_t)off - b};
            same_string(L, 1, sp);
        }
        cJSON *tree = jscan_cjson_parse(s, size);
        FUZZ_CHECK(tree != NULL, "jscan_cjson_parse refuses valid JSON");
        cJSON_Delete(tree);
    }
    lua_close(L);
    return 0;
}
