/*
 * fuzz_json: the JSON codec (core/ljson.c). Any input: json_push either
 * fails with a message or pushes a value; a decoded value always encodes
 * (json_encode), the encoding decodes to an equal value (types, integer vs
 * float, null, array/object markers) and re-encodes byte for byte; the
 * second encoding goes through the C API only (lraw_force_off), so the
 * raw walk and the API walk must write the same bytes.
 */
#include "dbuf.h"
#include "fuzz.h"
#include "ljson.h"
#include "lraw.h"

#define OUT_MAX ((size_t)64 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    lua_State *L = fuzz_lua_new(0);
    struct dbuf e1, e2;
    dbuf_init(&e1, OUT_MAX);
    dbuf_init(&e2, OUT_MAX);

    err[0] = '\0';
    int rc = json_push(L, (const char *)data, size, NULL, err, sizeof(err));
    if (rc != CODEC_OK) {
        FUZZ_CHECK(lua_gettop(L) == 0, "a failed decode pushed something");
        FUZZ_CHECK(err[0] != '\0', "a failed decode without a message");
        FUZZ_CHECK(rc == CODEC_EINPUT || rc == CODEC_ELIMIT,
                   "unexpected code %d: %s", rc, err);
        goto done;
    }
    FUZZ_CHECK(lua_gettop(L) == 1, "decode pushed %d values", lua_gettop(L));
    rc = json_encode(L, 1, &e1, err, sizeof(err));
    FUZZ_CHECK(rc == CODEC_OK, "decoded value does not encode (%d): %s", rc,
               err);
    rc = json_push(L, dbuf_ptr(&e1), dbuf_len(&e1), NULL, err, sizeof(err));
    FUZZ_CHECK(rc == CODEC_OK, "encoding does not decode (%d): %s", rc, err);
    FUZZ_CHECK(fuzz_equal(L, 1, 2, 0), "round trip changed the value: %s",
               dbuf_ptr(&e1));
    lraw_force_off(1);
    rc = json_encode(L, 2, &e2, err, sizeof(err));
    lraw_force_off(0);
    FUZZ_CHECK(rc == CODEC_OK, "re-encode failed (%d): %s", rc, err);
    FUZZ_CHECK(dbuf_len(&e1) == dbuf_len(&e2) &&
                   memcmp(dbuf_ptr(&e1), dbuf_ptr(&e2), dbuf_len(&e1)) == 0,
               "re-encoding differs: %s vs %s", dbuf_ptr(&e1), dbuf_ptr(&e2));
done:
    dbuf_free(&e1);
    dbuf_free(&e2);
    lua_close(L);
    return 0;
}
