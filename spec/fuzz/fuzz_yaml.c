/*
 * fuzz_yaml: the YAML codec (core/lyaml.c). Any input: yaml_push_all
 * either fails with a message or pushes the list of documents; the list
 * encodes (yaml_encode_all) unless it holds what YAML can decode but we
 * refuse to write (NaN, infinities, keys over 1024 bytes: CODEC_EVALUE),
 * the encoding decodes to an equal list (types, integer vs float, null,
 * markers) and re-encodes byte for byte. The same list also goes through
 * JSON (json_encode, json_push) unchanged when JSON can hold it.
 */
#include "dbuf.h"
#include "fuzz.h"
#include "ljson.h"
#include "lraw.h"
#include "lyaml.h"

#define OUT_MAX ((size_t)64 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    lua_State *L = fuzz_lua_new(0);
    struct dbuf e1, e2;
    dbuf_init(&e1, OUT_MAX);
    dbuf_init(&e2, OUT_MAX);

    err[0] = '\0';
    int rc = yaml_push_all(L, (const char *)data, size, NULL, err, sizeof(err));
    if (rc != CODEC_OK) {
        FUZZ_CHECK(lua_gettop(L) == 0, "a failed decode pushed something");
        FUZZ_CHECK(err[0] != '\0', "a failed decode without a message");
        FUZZ_CHECK(rc == CODEC_EINPUT || rc == CODEC_ELIMIT,
                   "unexpected code %d: %s", rc, err);
        goto done;
    }
    FUZZ_CHECK(lua_gettop(L) == 1 && codec_kind(L, 1) == CODEC_ARRAY,
               "decode did not push one list");
    rc = yaml_encode_all(L, 1, &e1, err, sizeof(err));
    if (rc == CODEC_EVALUE)
        goto done;
    FUZZ_CHECK(rc == CODEC_OK, "decoded value does not encode (%d): %s", rc,
               err);
    rc = yaml_push_all(L, dbuf_ptr(&e1), dbuf_len(&e1), NULL, err, sizeof(err));
    FUZZ_CHECK(rc == CODEC_OK, "encoding does not decode (%d): %s\n%s", rc, err,
               dbuf_ptr(&e1));
    FUZZ_CHECK(fuzz_equal(L, 1, 2, 0), "round trip changed the value:\n%s",
               dbuf_ptr(&e1));
    lraw_force_off(1); /* the API walk must write what the raw walk wrote */
    rc = yaml_encode_all(L, 2, &e2, err, sizeof(err));
    lraw_force_off(0);
    FUZZ_CHECK(rc == CODEC_OK, "re-encode failed (%d): %s", rc, err);
    FUZZ_CHECK(dbuf_len(&e1) == dbuf_len(&e2) &&
                   memcmp(dbuf_ptr(&e1), dbuf_ptr(&e2), dbuf_len(&e1)) == 0,
               "re-encoding differs:\n%s---- vs\n%s", dbuf_ptr(&e1),
               dbuf_ptr(&e2));

    /* YAML data that JSON can hold survives JSON unchanged. */
    dbuf_reset(&e2);
    lua_settop(L, 1);
    if (json_encode(L, 1, &e2, err, sizeof(err)) == CODEC_OK) {
        rc = json_push(L, dbuf_ptr(&e2), dbuf_len(&e2), NULL, err, sizeof(err));
        FUZZ_CHECK(rc == CODEC_OK, "its JSON does not decode (%d): %s", rc,
                   err);
        FUZZ_CHECK(fuzz_equal(L, 1, 2, 0), "JSON changed the value: %s",
                   dbuf_ptr(&e2));
    }
done:
    dbuf_free(&e1);
    dbuf_free(&e2);
    lua_close(L);
    return 0;
}
