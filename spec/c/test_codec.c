/*
 * test_codec: the JSON and YAML codecs (core/ljson.c, core/lyaml.c,
 * core/lcodec.c): round trips, nulls, empty containers, unicode, int64
 * extremes, limits, malformed input with positions, the YAML quoting
 * table, multi-document streams, and a fault-injecting lua_Alloc that
 * fails the Nth allocation (no crash, no leak, every failure reported).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "jscan.h"
#include "ljson.h"
#include "lcodec.h"
#include "lraw.h"
#include "testlib.h"
#include "text.h"
#include "lyaml.h"

static char err[256];

/* Decodes JSON and re-encodes it; returns a static copy or NULL. */
static const char *json_rt(lua_State *L, const char *in)
{
    static char out[4096];
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    err[0] = '\0';
    if (json_push(L, in, strlen(in), NULL, err, sizeof(err)) != 0)
        return NULL;
    int rc = json_encode(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    if (rc != 0) {
        dbuf_free(&b);
        return NULL;
    }
    snprintf(out, sizeof(out), "%s", dbuf_ptr(&b));
    dbuf_free(&b);
    return out;
}

/* Decodes a YAML stream and encodes the list of documents as JSON. */
static const char *yaml_to_json(lua_State *L, const char *in)
{
    static char out[4096];
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    err[0] = '\0';
    if (yaml_push_all(L, in, strlen(in), NULL, err, sizeof(err)) != 0)
        return NULL;
    int rc = json_encode(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    if (rc != 0) {
        dbuf_free(&b);
        return NULL;
    }
    snprintf(out, sizeof(out), "%s", dbuf_ptr(&b));
    dbuf_free(&b);
    return out;
}

/* JSON -> Lua -> YAML. */
static const char *json_to_yaml(lua_State *L, const char *in)
{
    static char out[4096];
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    err[0] = '\0';
    if (json_push(L, in, strlen(in), NULL, err, sizeof(err)) != 0)
        return NULL;
    int rc = yaml_encode(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    if (rc != 0) {
        dbuf_free(&b);
        return NULL;
    }
    snprintf(out, sizeof(out), "%s", dbuf_ptr(&b));
    dbuf_free(&b);
    return out;
}

/* Runs Lua code that returns one value and encodes it as JSON. */
static const char *lua_to_json(lua_State *L, const char *code, int *rc)
{
    static char out[4096];
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    err[0] = '\0';
    if (luaL_dostring(L, code) != LUA_OK) {
        snprintf(err, sizeof(err), "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        *rc = -100;
        return NULL;
    }
    *rc = json_encode(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    snprintf(out, sizeof(out), "%s", dbuf_ptr(&b));
    dbuf_free(&b);
    return *rc == 0 ? out : NULL;
}

static void test_json_round_trips(lua_State *L)
{
    static const char *cases[][2] = {
        {"null", "null"},
        {"true", "true"},
        {" [ ] ", "[]"},
        {"{}", "{}"},
        {"[null,null]", "[null,null]"},
        {"{\"a\":null}", "{\"a\":null}"},
        {"{\"b\":1,\"a\":{\"d\":[],\"c\":{}}}",
         "{\"a\":{\"c\":{},\"d\":[]},\"b\":1}"},
        {"9223372036854775807", "9223372036854775807"},
        {"-9223372036854775808", "-9223372036854775808"},
        {"9223372036854775808", "9.223372036854776e+18"},
        {"0", "0"},
        {"-0", "0"},
        {"1.5", "1.5"},
        {"0.1", "0.1"},
        {"3.0", "3"},
        {"1e300", "1.0e+300"},
        {"1E-7", "1.0e-07"},
        {"123456789.125", "123456789.125"},
        {"\"\\u00e9\\ud83d\\ude00 \\\" \\\\ \\/ \\n\\t\"",
         "\"\xc3\xa9\xf0\x9f\x98\x80 \\\" \\\\ / \\n\\t\""},
        {"\"\\u0000\\u001f\"", "\"\\u0000\\u001f\""},
        {"\"\xe6\x97\xa5\xe6\x9c\xac\"", "\"\xe6\x97\xa5\xe6\x9c\xac\""},
        {"{\"z\":1,\"Z\":2,\"aa\":3,\"a\":4}",
         "{\"Z\":2,\"a\":4,\"aa\":3,\"z\":1}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = json_rt(L, cases[i][0]);
        char msg[160];
        snprintf(msg, sizeof(msg), "json round trip of %.60s", cases[i][0]);
        CHECK_STR_EQ(got, cases[i][1], msg);
    }
}

static void test_json_types(lua_State *L)
{
    const char *in = "{\"i\":9223372036854775807,\"f\":2.5,\"n\":null,"
                     "\"a\":[],\"o\":{}}";
    CHECK(json_push(L, in, strlen(in), NULL, err, sizeof(err)) == 0,
          "decode typed object");
    CHECK(codec_kind(L, -1) == CODEC_OBJECT, "object is marked");
    lua_getfield(L, -1, "i");
    CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == INT64_MAX,
          "int64 max stays an exact integer");
    lua_pop(L, 1);
    lua_getfield(L, -1, "f");
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 2.5,
          "2.5 is a float");
    lua_pop(L, 1);
    lua_getfield(L, -1, "n");
    CHECK(codec_is_null(L, -1), "null decodes to codec.null");
    lua_pop(L, 1);
    lua_getfield(L, -1, "a");
    CHECK(codec_kind(L, -1) == CODEC_ARRAY, "empty array is marked");
    lua_pop(L, 1);
    lua_getfield(L, -1, "o");
    CHECK(codec_kind(L, -1) == CODEC_OBJECT, "empty object is marked");
    lua_pop(L, 2);
}

static void test_json_malformed(lua_State *L)
{
    static const char *cases[][2] = {
        {"", "line 1, column 1: unexpected end of input"},
        {"[1,2", "line 1, column 5: expected ',' or ']' in array"},
        {"{\"a\":1,\n \"a\":2}", "line 2, column 2: duplicate key \"a\""},
        {"{\"a\" 1}", "line 1, column 6: expected ':' after object key"},
        {"[1,]", "line 1, column 4: unexpected character ']'"},
        {"01", "line 1, column 1: leading zero in number"},
        {"1.", "line 1, column 1: invalid number"},
        {"-", "line 1, column 1: invalid number"},
        {"tru", "line 1, column 1: invalid literal"},
        {"1 2", "line 1, column 3: unexpected characters after the value"},
        {"\"abc", "line 1, column 1: unterminated string"},
        {"\"a\nb\"", "line 1, column 3: control character in string"},
        {"\"\xff\"", "line 1, column 2: invalid UTF-8 in string"},
        {"\"\xc0\xaf\"", "line 1, column 2: invalid UTF-8 in string"},
        {"\"\xed\xa0\x80\"", "line 1, column 2: invalid UTF-8 in string"},
        {"[\"\xc3\xa9\",\n  \"\xe2\x82\"]",
         "line 2, column 4: invalid UTF-8 in string"},
        {"\"\\ud800\"",
         "line 1, column 2: unpaired high surrogate in \\u escape"},
        {"\"\\udc00\"", "line 1, column 2: lone low surrogate in \\u escape"},
        {"\"\\u12g4\"", "line 1, column 2: invalid \\u escape"},
        {"\"\\x\"", "line 1, column 2: invalid escape '\\x'"},
        {"{1:2}", "line 1, column 2: expected a string key in object"},
        {"\x01", "line 1, column 1: unexpected byte 0x01"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int top = lua_gettop(L);
        int rc = json_push(L, cases[i][0], strlen(cases[i][0]), NULL, err,
                           sizeof(err));
        char msg[160];
        snprintf(msg, sizeof(msg), "malformed JSON case %zu is rejected", i);
        CHECK(rc == CODEC_EINPUT && lua_gettop(L) == top, "%s", msg);
        CHECK_STR_EQ(err, cases[i][1], "  with its position");
    }
}

static void test_json_limits(lua_State *L)
{
    char deep[600];
    struct codec_limits lim = {0, 0, 0};
    memset(deep, '[', 300);
    memset(deep + 300, ']', 300);
    int top = lua_gettop(L);
    int rc = json_push(L, deep, 600, NULL, err, sizeof(err));
    CHECK(rc == CODEC_ELIMIT && lua_gettop(L) == top,
          "300 nested arrays pass the default depth of 128: %s", err);
    CHECK_STR_EQ(err, "line 1, column 129: nesting deeper than 128",
                 "  depth error names the position");
    rc = json_push(L, deep + 172, 256, NULL, err, sizeof(err));
    CHECK(rc == 0, "exactly 128 levels are accepted");
    lua_pop(L, rc == 0);
    lim.max_depth = 2;
    rc = json_push(L, "[[1]]", 5, &lim, err, sizeof(err));
    CHECK(rc == 0, "max_depth 2 accepts 2 levels");
    lua_pop(L, rc == 0);
    rc = json_push(L, "[[[1]]]", 7, &lim, err, sizeof(err));
    CHECK(rc == CODEC_ELIMIT, "max_depth 2 rejects 3 levels");
    lim.max_depth = 0;
    lim.max_size = 4;
    rc = json_push(L, "[1,2]", 5, &lim, err, sizeof(err));
    CHECK(rc == CODEC_ELIMIT, "max_size rejects a larger input: %s", err);

    /* Output limit: a dbuf of 8 bytes. */
    struct dbuf b;
    dbuf_init(&b, 8);
    json_push(L, "[1,2,3,4,5,6]", 13, NULL, err, sizeof(err));
    rc = json_encode(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    CHECK(rc == CODEC_ETOOBIG && dbuf_len(&b) == 0,
          "encoding past the dbuf maximum fails and leaves it empty");
    dbuf_free(&b);

    /* A cycle is caught by the depth limit. */
    (void)luaL_dostring(L, "local t = {} t.self = t return t");
    dbuf_init(&b, 1 << 20);
    rc = json_encode(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    dbuf_free(&b);
    CHECK(rc == CODEC_EVALUE, "a cyclic table is an error: %s", err);
}

static void test_json_encode_values(lua_State *L)
{
    static const char *cases[][2] = {
        {"return {}", "{}"},
        {"return {1, 2, 'x'}", "[1,2,\"x\"]"},
        {"return {b = 1, a = {true, false}}", "{\"a\":[true,false],\"b\":1}"},
        {"return codec.array()", "[]"},
        {"return codec.object({})", "{}"},
        {"return codec.object({[1] = 'x'})", NULL},
        {"return {[1] = 'a', [3] = 'c'}", NULL},
        {"return {1, x = 2}", NULL},
        {"return {codec.null, 1}", "[null,1]"},
        {"return 0/0", NULL},
        {"return 1/0", NULL},
        {"return print", NULL},
        {"return 'a\\0b\\1'", "\"a\\u0000b\\u0001\""},
        {"return '\\xff'", NULL},
        {"return 7 / 2", "3.5"},
        {"return 6 / 2", "3"},
        {"return math.mininteger", "-9223372036854775808"},
        {"return 2^63", "9.223372036854776e+18"},
        {"return 0.1 + 0.2", "0.30000000000000004"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;
        const char *got = lua_to_json(L, cases[i][0], &rc);
        char msg[160];
        snprintf(msg, sizeof(msg), "json_encode(%s)%s", cases[i][0],
                 cases[i][1] ? "" : " fails");
        if (cases[i][1] == NULL)
            CHECK(got == NULL && rc == CODEC_EVALUE, "%s: %s", msg, err);
        else
            CHECK_STR_EQ(got, cases[i][1], msg);
    }
    /* The message of a key error reaches the caller (JSON and YAML). */
    int rc;
    lua_to_json(L, "return {[1] = 'a', [3] = 'c'}", &rc);
    CHECK_STR_EQ(err, "object keys must be strings, got a number",
                 "json_encode names the bad key type");
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    (void)luaL_dostring(L, "return {x = {[true] = 1}}");
    rc = yaml_encode(L, -1, &b, err, sizeof(err));
    (void)luaL_dostring(L, "return {a = 1}");
    int rc_all = yaml_encode_all(L, -1, &b, err + 128, sizeof(err) - 128);
    lua_pop(L, 2);
    dbuf_free(&b);
    CHECK(rc == CODEC_EVALUE && rc_all == CODEC_EVALUE,
          "yaml_encode(_all) reject a bad key and a non-list");
    CHECK_STR_EQ(err, "object keys must be strings, got a boolean",
                 "  yaml_encode names the bad key type");
    CHECK_STR_EQ(err + 128, "a list of documents is needed, got an object",
                 "  yaml_encode_all says what it needs");
}

static void test_yaml_decode(lua_State *L)
{
    static const char *cases[][2] = {
        {"", "[]"},
        {"---\n", "[null]"},
        {"a: 1\n---\nb: 2\n", "[{\"a\":1},{\"b\":2}]"},
        {"[~, null, Null, NULL, '', \"\"]",
         "[[null,null,null,null,\"\",\"\"]]"},
        {"[yes, Yes, on, ON, y, true, True, no, off, n, false, FALSE]",
         "[[true,true,true,true,true,true,true,false,false,false,false,"
         "false]]"},
        {"[tRue, 'yes', \"true\", !!str true]",
         "[[\"tRue\",\"yes\",\"true\",\"true\"]]"},
        {"[0755, 0o17, 0x1F, -0x10, 0b101, 1_000, +5, 08, 2049]",
         "[[493,15,31,-16,5,1000,5,8,2049]]"},
        {"[1e3, 1.5, .5, -1.5e-3, 1.0]", "[[1000,1.5,0.5,-0.0015,1]]"},
        {"[9223372036854775807, -9223372036854775808, "
         "9223372036854775808]",
         "[[9223372036854775807,-9223372036854775808,"
         "9.223372036854776e+18]]"},
        {"[10Gi, 1.2.3, 0x, 1:30, 2001-12-14, v1]",
         "[[\"10Gi\",\"1.2.3\",\"0x\",\"1:30\",\"2001-12-14\",\"v1\"]]"},
        {"a:\nb: {}\nc: []\n", "[{\"a\":null,\"b\":{},\"c\":[]}]"},
        {"1: one\ntrue: t\nnull: nv\n~: m\n1.5: f\n",
         "[{\"1\":\"one\",\"1.5\":\"f\",\"null\":\"nv\",\"true\":\"t\","
         "\"~\":\"m\"}]"},
        {"s: |\n  line1\n  line2\nt: >-\n  folded\n  text\n",
         "[{\"s\":\"line1\\nline2\\n\",\"t\":\"folded text\"}]"},
        {"a: &x {b: [1, 2]}\nc: *x\nk: &k key\n*k : v\n",
         "[{\"a\":{\"b\":[1,2]},\"c\":{\"b\":[1,2]},\"k\":\"key\","
         "\"key\":\"v\"}]"},
        {"u: \"\\u00e9\\U0001F600\"\nv: caf\xc3\xa9\n",
         "[{\"u\":\"\xc3\xa9\xf0\x9f\x98\x80\",\"v\":\"caf\xc3\xa9\"}]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = yaml_to_json(L, cases[i][0]);
        char msg[160];
        snprintf(msg, sizeof(msg), "yaml decode case %zu", i);
        CHECK_STR_EQ(got, cases[i][1], msg);
        if (got == NULL)
            TEST_NOTE("error: %s", err);
    }
    /* Aliases are deep copies, not shared references. */
    const char *doc = "a: &x {b: 1}\nc: *x\n";
    yaml_push_all(L, doc, strlen(doc), NULL, err, sizeof(err));
    lua_rawgeti(L, -1, 1);
    lua_getfield(L, -1, "a");
    lua_getfield(L, -2, "c");
    CHECK(!lua_rawequal(L, -1, -2) && codec_kind(L, -1) == CODEC_OBJECT,
          "an alias is a marked deep copy");
    lua_pop(L, 4);
}

static void test_yaml_malformed(lua_State *L)
{
    static const char *cases[][2] = {
        {"a: 1\na: 2\n", "line 2, column 1: duplicate key \"a\""},
        {"a: [1\n", "line 2, column 1: did not find expected ',' or ']' "
                    "while parsing a flow sequence"},
        {"a: *nope\n", "line 1, column 4: unknown anchor 'nope'"},
        {"? [1]\n: x\n", "line 1, column 3: mapping keys must be scalars"},
        {"a: &a [*a]\n", "line 1, column 8: unknown anchor 'a'"},
        {"<<: {a: 1}\n", "line 1, column 1: merge keys (<<) are not supported"},
        {"a: b: c\n", "line 1, column 5: mapping values are not allowed in "
                      "this context"},
        {"a: \"\xff\"\n", "line 1, column 5: invalid leading UTF-8 octet"},
        {"\ta: 1\n", "line 1, column 1: found character that cannot start "
                     "any token while scanning for the next token"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int top = lua_gettop(L);
        int rc = yaml_push_all(L, cases[i][0], strlen(cases[i][0]), NULL, err,
                               sizeof(err));
        char msg[160];
        snprintf(msg, sizeof(msg), "malformed YAML case %zu is rejected", i);
        CHECK(rc == CODEC_EINPUT && lua_gettop(L) == top, "%s", msg);
        CHECK_STR_EQ(err, cases[i][1], "  with its position");
    }
}

static void test_yaml_limits(lua_State *L)
{
    /* Billion laughs: each level doubles tenfold. */
    const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    int top = lua_gettop(L);
    int rc = yaml_push_all(L, bomb, strlen(bomb), NULL, err, sizeof(err));
    CHECK(rc == CODEC_ELIMIT && lua_gettop(L) == top,
          "alias expansion is capped: %s", err);
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    rc = yaml_push_all(L, deep, 400, NULL, err, sizeof(err));
    CHECK(rc == CODEC_ELIMIT, "YAML depth is capped: %s", err);
    struct codec_limits lim = {0, 3, 0};
    rc = yaml_push_all(L, "a: 1\n", 5, &lim, err, sizeof(err));
    CHECK(rc == CODEC_ELIMIT, "YAML size is capped: %s", err);
}

static void test_yaml_quoting(void)
{
    static const char *quoted[] = {
        "",     "true",  "True",       "TRUE",
        "tRUE", "false", "yes",        "Yes",
        "no",   "on",    "off",        "y",
        "n",    "Y",     "null",       "Null",
        "~",    "2049",  "0755",       "0o17",
        "0x1F", "0b11",  "1_000",      "1e3",
        "1E3",  "1.5",   ".5",         "-1",
        "+1",   "1.2.3", ".inf",       "-.Inf",
        ".nan", "1:30",  "2001-12-14", "<<",
        "=",    "- a",   "-",          "a: b",
        "a #b", "a:",    " a",         "a ",
        "#a",   "&a",    "*a",         "!a",
        "|a",   ">a",    "'a",         "\"a",
        "%a",   "@a",    "`a",         "[a",
        "]a",   "{a",    "}a",         ",a",
        "?a",   ":a",    "---",        "...",
        "a\nb", "a\tb",  "\xc2\x85",   "\xef\xbb\xbf",
    };
    static const char *plain[] = {
        "a",       "10Gi",        "500m",          "3d",
        "v1",      "-Xmx512m",    "a-b",           "a:b",
        "a#b",     "a b",         "x.y.z",         "apps/v1",
        "/export", "caf\xc3\xa9", "http://x:80/y", "dittofs-operator",
        "y1",      "nope",
    };
    /* Around yaml_plain_safe's fast path (over 5 bytes, a letter, '_' or
     * '/' first, letters, digits and "_-./" only): in it, and of its
     * length but not its bytes. */
    static const char *fast[] = {
        "max_connections", "/data/content", "_abcdef",        "nullable",
        "Truely",          "offset",        "apps.v1-x/y_Z9",
    };
    static const char *slow[] = {
        "abcdef:",  "abcdef ",   "abc: def",
        "abc #def", "abcde\x01", "caf\xc2\x85xx",
    };
    for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++)
        CHECK(yaml_plain_safe(fast[i], strlen(fast[i])), "plain: %s", fast[i]);
    for (size_t i = 0; i < sizeof(slow) / sizeof(slow[0]); i++)
        CHECK(!yaml_plain_safe(slow[i], strlen(slow[i])), "quoted slow %zu", i);
    for (size_t i = 0; i < sizeof(quoted) / sizeof(quoted[0]); i++)
        CHECK(!yaml_plain_safe(quoted[i], strlen(quoted[i])), "quoted case %zu",
              i);
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        CHECK(yaml_plain_safe(plain[i], strlen(plain[i])), "plain: %s",
              plain[i]);
}

static void test_yaml_encode(lua_State *L)
{
    static const char *cases[][2] = {
        {"{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"spec\":{\"ports\":"
         "[{\"port\":2049,\"name\":\"nfs\"}],\"x\":{},\"y\":[]}}",
         "apiVersion: v1\nkind: Service\nspec:\n  ports:\n  - name: nfs\n"
         "    port: 2049\n  x: {}\n  \"y\": []\n"},
        {"[[1,2],[],{}]", "- - 1\n  - 2\n- []\n- {}\n"},
        {"{\"a\":null,\"b\":true,\"c\":\"true\",\"d\":\"0755\",\"e\":\"\"}",
         "a: null\nb: true\nc: \"true\"\nd: \"0755\"\ne: \"\"\n"},
        {"{\"s\":\"l1\\nl2\\n\",\"t\":\"l1\\n  l2\",\"u\":\"x\\n\\n\"}",
         "s: |\n  l1\n  l2\nt: |-\n  l1\n    l2\nu: |+\n  x\n\n"},
        {"{\"a\":[{\"b\":\"x\\ny\"}]}", "a:\n- b: |-\n    x\n    y\n"},
        {"{\"q\":\"a \\n b\",\"r\":\"\\ttab\",\"z\":\"\\u0000\\u0085\"}",
         "q: \"a \\n b\"\nr: \"\\ttab\"\nz: \"\\0\\x85\"\n"},
        {"{\"true\":1,\"a b\":2,\"k: v\":3}",
         "a b: 2\n\"k: v\": 3\n\"true\": 1\n"},
        {"\"plain\"", "plain\n"},
        {"\"---\"", "\"---\"\n"},
        {"1.5", "1.5\n"},
        {"1e300", "1.0e+300\n"},
        {"{}", "{}\n"},
        {"null", "null\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = json_to_yaml(L, cases[i][0]);
        char msg[160];
        snprintf(msg, sizeof(msg), "yaml_encode case %zu", i);
        CHECK_STR_EQ(got, cases[i][1], msg);
    }
}

/* JSON -> Lua -> YAML -> Lua -> JSON must be the identity (normalised). */
static void test_yaml_round_trip(lua_State *L)
{
    static const char *docs[] = {
        "{\"s\":[\"true\",\"yes\",\"2049\",\"0755\",\"null\",\"1e3\",\"\","
        "\"~\",\"0x1F\",\".inf\",\"1_000\",\"1:30\",\"y\",\"a: b\","
        "\"- x\",\"#c\",\" lead\",\"trail \",\"multi\\nline\\n\","
        "\"x\\n\\n\",\"\\ttab\\nx\",\"nul\\u0000\",\"caf\\u00e9\","
        "\"\\u2028\",\"---\",\"2001-12-14\",\"@\",\"a\\n \\nb\"],"
        "\"n\":[0,-1,9223372036854775807,-9223372036854775808,1.5,1e-7,"
        "1e300],\"e\":{\"a\":[],\"o\":{},\"z\":null},\"b\":[true,false]}",
        "[[[[]]],{\"\":{\"\":\"\"}}]",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        struct dbuf y;
        char want[2048];
        snprintf(want, sizeof(want), "[%s]", json_rt(L, docs[i]));
        dbuf_init(&y, 1 << 20);
        json_push(L, docs[i], strlen(docs[i]), NULL, err, sizeof(err));
        int rc = yaml_encode(L, -1, &y, err, sizeof(err));
        lua_pop(L, 1);
        CHECK(rc == 0, "yaml_encode of round-trip doc %zu", i);
        const char *got = yaml_to_json(L, dbuf_ptr(&y));
        CHECK_STR_EQ(got, want, "JSON -> YAML -> JSON is the identity");
        if (got == NULL || strcmp(got, want) != 0)
            TEST_NOTE("yaml was:\n%s", dbuf_ptr(&y));
        dbuf_free(&y);
    }

    /* A quoted key is a simple key of at most 1024 characters as written
     * (fuzz_yaml: a 600-byte key with backslashes was written as 1235 and
     * did not read back). Key '"' x k: 2 + 2k characters. */
    for (int k = 510; k <= 512; k++) {
        char json[1100 * 2 + 16];
        size_t o = 0;
        json[o++] = '{';
        json[o++] = '"';
        for (int i = 0; i < k; i++) {
            json[o++] = '\\';
            json[o++] = '"';
        }
        memcpy(json + o, "\":1}", 5);
        struct dbuf y;
        dbuf_init(&y, 1 << 20);
        json_push(L, json, strlen(json), NULL, err, sizeof(err));
        int rc = yaml_encode(L, -1, &y, err, sizeof(err));
        lua_pop(L, 1);
        if (2 + 2 * k <= 1024) {
            const char *got = rc == 0 ? yaml_to_json(L, dbuf_ptr(&y)) : NULL;
            CHECK(got != NULL && strlen(got) == strlen(json) + 2,
                  "a key of %d characters once quoted reads back", 2 + 2 * k);
        } else {
            CHECK(rc == CODEC_EVALUE &&
                      strstr(err, "1024 characters once quoted") != NULL,
                  "a key of %d characters once quoted is refused (%s)",
                  2 + 2 * k, err);
        }
        dbuf_free(&y);
    }
}

static void test_multi_doc(lua_State *L)
{
    const char *in = "a: 1\n---\n- x\n---\n\"s\"\n";
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    CHECK(yaml_push_all(L, in, strlen(in), NULL, err, sizeof(err)) == 0,
          "decode three documents");
    CHECK(lua_rawlen(L, -1) == 3 && codec_kind(L, -1) == CODEC_ARRAY,
          "  as a marked list of 3");
    int rc = yaml_encode_all(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    CHECK_STR_EQ(rc == 0 ? dbuf_ptr(&b) : err, "a: 1\n---\n- x\n---\ns\n",
                 "yaml_encode_all separates documents with ---");
    dbuf_free(&b);
    dbuf_init(&b, 1 << 20);
    lua_newtable(L);
    rc = yaml_encode_all(L, -1, &b, err, sizeof(err));
    lua_pop(L, 1);
    CHECK(rc == 0 && dbuf_len(&b) == 0, "an empty list is no documents");
    dbuf_free(&b);
}

static void test_cjson(lua_State *L)
{
    cJSON *root = cJSON_Parse("{\"b\":[1,2.5,null,true],\"a\":{\"x\":\"y\"},"
                              "\"c\":{},\"d\":[]}");
    int rc = json_push_cjson(L, root, err, sizeof(err));
    cJSON_Delete(root);
    CHECK(rc == 0, "json_push_cjson");
    struct dbuf b;
    dbuf_init(&b, 1 << 20);
    json_encode(L, -1, &b, err, sizeof(err));
    CHECK_STR_EQ(dbuf_ptr(&b),
                 "{\"a\":{\"x\":\"y\"},\"b\":[1,2.5,null,true],\"c\":{},"
                 "\"d\":[]}",
                 "  cJSON tree -> Lua keeps nulls and empty containers");
    dbuf_free(&b);
    cJSON *out = NULL;
    rc = json_to_cjson(L, -1, &out, err, sizeof(err));
    lua_pop(L, 1);
    char *s = out ? cJSON_PrintUnformatted(out) : NULL;
    CHECK_STR_EQ(s,
                 "{\"a\":{\"x\":\"y\"},\"b\":[1,2.5,null,true],\"c\":{},"
                 "\"d\":[]}",
                 "json_to_cjson");
    free(s);
    cJSON_Delete(out);
}

/* Issue 11: integers beyond 2^53 leave the core exact. */
static void test_exact_integers(lua_State *L)
{
    static const char text[] =
        "{\"n\":9007199254740993,\"m\":-9007199254740993,"
        "\"max\":9223372036854775807,\"s\":\"12345678901234567890\","
        "\"f\":2.5,\"small\":42,\"big_float\":1e300,"
        "\"l\":[9007199254740993,{\"\\\"k1\":18014398509481985}]}";
    cJSON *j = jscan_cjson_parse(text, sizeof(text) - 1);
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    CHECK_STR_EQ(s,
                 "{\"n\":9007199254740993,\"m\":-9007199254740993,"
                 "\"max\":9223372036854775807,\"s\":\"12345678901234567890\","
                 "\"f\":2.5,\"small\":42,\"big_float\":1e+300,"
                 "\"l\":[9007199254740993,{\"\\\"k1\":18014398509481985}]}",
                 "jscan_cjson_parse: 2^53+1 and int64 max print back exactly");
    cJSON *dup = cJSON_Duplicate(j, 1);
    CHECK(dup != NULL && cJSON_Compare(j, dup, 1), "  a raw node duplicates");
    cJSON_Delete(dup);
    free(s);
    cJSON_Delete(j);
    CHECK(jscan_cjson_parse("{\"a\":", 5) == NULL, "  NULL on bad JSON");

    /* Lua -> cJSON: the rendered objects and the status take this way. */
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, (lua_Integer)9007199254740993LL);
    lua_setfield(L, -2, "n");
    cJSON *out = NULL;
    int rc = json_to_cjson(L, -1, &out, err, sizeof(err));
    lua_pop(L, 1);
    s = out ? cJSON_PrintUnformatted(out) : NULL;
    CHECK(rc == 0, "json_to_cjson");
    CHECK_STR_EQ(s, "{\"n\":9007199254740993}", "  keeps 2^53+1 exact");
    free(s);
    cJSON_Delete(out);
}

/* core/text.c: the helpers ljson.c, jscan.c, lyaml.c and log.c share. */
static void test_text(void)
{
    static const struct {
        const char *in;
        size_t len;
        uint32_t cp;
    } esc[] = {
        {"\\n", 2, '\n'},
        {"\\/", 2, '/'},
        {"\\u00e9", 6, 0xE9},
        {"\\ud83d\\ude00", 12, 0x1F600},
        {"\\ud800x", 6, 0xD800}, /* lone: the caller decides */
        {"\\ud800\\u0041", 6, 0xD800},
        {"\\x", 0, 0},
        {"\\u12g4", 0, 0},
        {"\\u12", 0, 0}, /* cut short by end */
        {"\\", 0, 0},
    };
    for (size_t i = 0; i < sizeof(esc) / sizeof(esc[0]); i++) {
        uint32_t cp = 0;
        size_t n =
            text_json_unescape(esc[i].in, esc[i].in + strlen(esc[i].in), &cp);
        CHECK(n == esc[i].len && (n == 0 || cp == esc[i].cp),
              "text_json_unescape case %zu: %zu bytes, U+%04X", i, n,
              (unsigned)cp);
    }
    struct dbuf b;
    dbuf_init(&b, 64);
    CHECK(text_json_quote(&b, "a\"\\\n\b\x01\xc3\xa9", 8) == DBUF_OK,
          "text_json_quote");
    CHECK_STR_EQ(dbuf_ptr(&b), "\"a\\\"\\\\\\n\\b\\u0001\xc3\xa9\"",
                 "  escapes quotes, backslashes and controls only");
    dbuf_free(&b);
    dbuf_init(&b, 4);
    CHECK(text_json_quote(&b, "abcdef", 6) == DBUF_TOOBIG && dbuf_len(&b) == 0,
          "  past the maximum: DBUF_TOOBIG and an empty buffer");
    dbuf_free(&b);
    CHECK(text_utf8_check("a\xc3\xa9\xed\xa0\x80", 6) == 3 &&
              text_utf8_check("\xf0\x9f\x98\x80", 4) == 4 &&
              text_utf8_check("\xf0\x9f\x98", 3) == 0,
          "text_utf8_check stops at a surrogate or a cut sequence");
    /* Issue 11: FNV-1a and base64, once for the core. */
    CHECK(text_fnv1a32(TEXT_FNV1A32_INIT, "", 0) == 0x811c9dc5u &&
              text_fnv1a32(TEXT_FNV1A32_INIT, "a", 1) == 0xe40c292cu &&
              text_fnv1a32(TEXT_FNV1A32_INIT, "foobar", 6) == 0xbf9cf968u,
          "text_fnv1a32: the reference vectors");
    CHECK(text_fnv1a64(TEXT_FNV1A64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL &&
              text_fnv1a64(TEXT_FNV1A64_INIT, "foobar", 6) ==
                  0x85944171f73967e8ULL &&
              text_fnv1a64(text_fnv1a64(TEXT_FNV1A64_INIT, "foo", 3), "bar",
                           3) == 0x85944171f73967e8ULL,
          "text_fnv1a64: the reference vectors, and it continues");
    static const char *const b64[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
        char *e = text_base64_encode(b64[i][0], strlen(b64[i][0]));
        unsigned char *d = NULL;
        size_t dn = 0;
        int rc = text_base64_decode(b64[i][1], strlen(b64[i][1]), &d, &dn);
        CHECK(e && strcmp(e, b64[i][1]) == 0 && rc == 0 &&
                  dn == strlen(b64[i][0]) && memcmp(d, b64[i][0], dn) == 0,
              "base64 \"%s\" <-> \"%s\" (RFC 4648)", b64[i][0], b64[i][1]);
        free(e);
        free(d);
    }
    unsigned char *d = NULL;
    size_t dn = 0;
    CHECK(text_base64_decode("Zm9v\n YmFy\n", 11, &d, &dn) == 0 && dn == 6 &&
              memcmp(d, "foobar", 6) == 0,
          "base64 decode skips whitespace");
    free(d);
    CHECK(text_base64_decode("Zm9v!", 5, &d, &dn) == -EINVAL && d == NULL &&
              text_base64_decode("Zg==Zg", 6, &d, &dn) == -EINVAL &&
              text_base64_decode("Z", 1, &d, &dn) == -EINVAL,
          "base64 decode: -EINVAL outside the alphabet, after padding, cut");
    /* Issue 11: one UTF-8-safe cut for events, conditions and policies. */
    static const char euro[] = "ab\xe2\x82\xac"
                               "cd"; /* ab€cd, 7 bytes */
    CHECK(text_utf8_cut(euro, 7, 7) == 7 && text_utf8_cut(euro, 7, 100) == 7,
          "text_utf8_cut: short enough, whole");
    CHECK(text_utf8_cut(euro, 7, 6) == 6 && text_utf8_cut(euro, 7, 5) == 5,
          "text_utf8_cut: after a whole character");
    CHECK(text_utf8_cut(euro, 7, 4) == 2 && text_utf8_cut(euro, 7, 3) == 2,
          "text_utf8_cut: never inside one");
    CHECK(text_utf8_cut(euro, 7, 0) == 0 &&
              text_utf8_cut("\xf0\x9f\x98\x80", 4, 3) == 0,
          "text_utf8_cut: down to nothing");

    /* jscan_str on a span it did not scan: a bad or cut \u escape is
     * refused, never read past the closing quote. */
    char buf[16];
    struct jscan_span bad = {"\"\\u12\"", 6};
    CHECK(jscan_str(bad, buf, sizeof(buf)) == -1 && jscan_str_len(bad) == -1,
          "jscan_str refuses a cut \\u escape");
    struct jscan_span bad2 = {"\"\\uzzzz\"", 8};
    CHECK(jscan_str(bad2, buf, sizeof(buf)) == -1,
          "jscan_str refuses a \\u escape with non-hex digits");
}

/* ---- fault injection ----------------------------------------------------- */

struct fault {
    size_t count;   /* allocations so far */
    size_t fail_at; /* the allocation that fails (1-based); 0: none */
    int sticky;     /* fail every allocation from fail_at on */
    size_t in_use;  /* bytes held */
};

static void *fault_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fault *f = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        f->in_use -= old;
        return NULL;
    }
    f->count++;
    if (f->fail_at != 0 &&
        (f->count == f->fail_at || (f->sticky && f->count > f->fail_at)))
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        f->in_use = f->in_use - old + nsize;
    return p;
}

static const char k8s_doc[] =
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"StatefulSet\",\"metadata\":"
    "{\"name\":\"ditto\",\"namespace\":\"default\",\"labels\":{\"app\":"
    "\"ditto\"},\"annotations\":{}},\"spec\":{\"replicas\":1,"
    "\"serviceName\":\"ditto-headless\",\"selector\":{\"matchLabels\":"
    "{\"app\":\"ditto\"}},\"template\":{\"spec\":{\"containers\":[{"
    "\"name\":\"dittofs\",\"image\":\"dittofs:1\",\"args\":[\"--config\","
    "\"/c/config.yaml\"],\"ports\":[{\"containerPort\":2049},{"
    "\"containerPort\":9090}],\"env\":[],\"resources\":{\"limits\":{"
    "\"memory\":\"1Gi\"}},\"securityContext\":null}]}}}}";

static int fault_body(lua_State *L)
{
    int *ok = lua_touserdata(L, 1);
    luaL_requiref(L, "codec", codec_open, 1);
    lua_pop(L, 1);
    *ok = 1;
    return 0;
}

/* Runs every codec entry point on a state whose allocator fails; every
 * call must report success or CODEC_ENOMEM, and the state must close with
 * no bytes held (C-side leaks are for valgrind/ASan). */
static int fault_run(size_t fail_at, int sticky, int *bad)
{
    struct fault f = {0, 0, sticky, 0};
    lua_State *L = lua_newstate(fault_alloc, &f);
    if (L == NULL)
        return 0;
    f.fail_at = fail_at + f.count;
    int ok = 0, failures = 0;
    lua_pushcfunction(L, fault_body);
    lua_pushlightuserdata(L, &ok);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        lua_pop(L, 1);
    if (ok) {
        struct dbuf b;
        char e[256];
        int rc = json_push(L, k8s_doc, sizeof(k8s_doc) - 1, NULL, e, sizeof(e));
        failures += rc != 0;
        *bad += rc != 0 && rc != CODEC_ENOMEM;
        if (rc == 0) {
            dbuf_init(&b, 1 << 20);
            rc = yaml_encode(L, -1, &b, e, sizeof(e));
            failures += rc != 0;
            *bad += rc != 0 && rc != CODEC_ENOMEM;
            lua_pop(L, 1);
            if (rc == 0) {
                rc = yaml_push_all(L, dbuf_ptr(&b), dbuf_len(&b), NULL, e,
                                   sizeof(e));
                failures += rc != 0;
                *bad += rc != 0 && rc != CODEC_ENOMEM;
                if (rc == 0) {
                    dbuf_reset(&b);
                    rc = json_encode(L, -1, &b, e, sizeof(e));
                    failures += rc != 0;
                    *bad += rc != 0 && rc != CODEC_ENOMEM;
                    lua_pop(L, 1);
                }
            }
            dbuf_free(&b);
        }
    }
    lua_close(L);
    *bad += f.in_use != 0;
    (void)failures;
    /* 1 when the failing allocation was reached. */
    return f.count >= f.fail_at;
}

/* Encodes the value at the top (popped) into b, JSON or YAML. */
static int encode_top(lua_State *L, int yaml, struct dbuf *b)
{
    int rc = yaml ? yaml_encode(L, -1, b, err, sizeof(err))
                  : json_encode(L, -1, b, err, sizeof(err));
    lua_pop(L, 1);
    return rc;
}

/*
 * The encoders stage their output (codec_out): the dbuf must get the same
 * bytes, and fail at the same piece, as when every piece went to it. Also
 * the eight-bytes-at-a-time scan of JSON strings against the byte loop
 * (text_json_quote) at every offset.
 */
static void test_staged_output(lua_State *L)
{
    struct dbuf b, want;
    /* A text larger than the stage, appended after what b holds. */
    (void)luaL_dostring(L, "local t = {} for i = 1, 3000 do t[i] = "
                           "'abcdefgh' .. i end return t");
    dbuf_init(&want, 1 << 20);
    dbuf_adds(&want, "x[");
    for (int i = 1; i <= 3000; i++)
        dbuf_addf(&want, "%s\"abcdefgh%d\"", i > 1 ? "," : "", i);
    dbuf_addc(&want, ']');
    dbuf_init(&b, 1 << 20);
    dbuf_addc(&b, 'x');
    lua_pushvalue(L, -1);
    int rc = encode_top(L, 0, &b);
    CHECK(rc == 0 && dbuf_len(&b) == dbuf_len(&want) &&
              strcmp(dbuf_ptr(&b), dbuf_ptr(&want)) == 0,
          "a JSON text of %zu bytes (past the stage) follows what the dbuf "
          "held",
          dbuf_len(&want));
    /* The maximum exactly, and one byte less. */
    size_t len = dbuf_len(&want) - 1;
    dbuf_free(&b);
    dbuf_init(&b, len);
    lua_pushvalue(L, -1);
    rc = encode_top(L, 0, &b);
    CHECK(rc == 0 && dbuf_len(&b) == len,
          "a dbuf of exactly its size takes it");
    dbuf_free(&b);
    dbuf_init(&b, len - 1);
    lua_pushvalue(L, -1);
    rc = encode_top(L, 0, &b);
    char msg[64];
    snprintf(msg, sizeof(msg), "output larger than %zu bytes", len - 1);
    CHECK(rc == CODEC_ETOOBIG && dbuf_len(&b) == 0 && strcmp(err, msg) == 0,
          "one byte less: ETOOBIG, the dbuf empty: %s", err);
    dbuf_free(&b);
    /* Its YAML is a byte shorter ("- x\n" per item, no brackets). */
    dbuf_init(&b, len - 1);
    lua_pushvalue(L, -1);
    rc = encode_top(L, 1, &b);
    CHECK(rc == 0 && dbuf_len(&b) == len - 1, "the YAML of the list fits");
    dbuf_free(&b);
    dbuf_init(&b, len - 2);
    lua_pushvalue(L, -1);
    rc = encode_top(L, 1, &b);
    snprintf(msg, sizeof(msg), "output larger than %zu bytes", len - 2);
    CHECK(rc == CODEC_ETOOBIG && dbuf_len(&b) == 0 && strcmp(err, msg) == 0,
          "  one byte less: ETOOBIG too: %s", err);
    dbuf_free(&b);
    dbuf_free(&want);

    /* The piece that passes the maximum fails, not a later bad value. */
    dbuf_init(&b, 6);
    (void)luaL_dostring(L, "return {1, 2, 3, 4, print}");
    rc = encode_top(L, 0, &b);
    CHECK(rc == CODEC_ETOOBIG, "past the maximum before a bad value: ETOOBIG");
    dbuf_free(&b);
    /* A failure leaves in the dbuf what the pieces before it made. */
    dbuf_init(&b, 1 << 20);
    (void)luaL_dostring(L, "return {1, 2, print}");
    rc = encode_top(L, 0, &b);
    CHECK(rc == CODEC_EVALUE && strcmp(dbuf_ptr(&b), "[1,2,") == 0,
          "a bad value: EVALUE after \"[1,2,\" (%s)", dbuf_ptr(&b));
    dbuf_reset(&b);
    (void)luaL_dostring(L, "return {a = 1, b = print}");
    rc = encode_top(L, 1, &b);
    CHECK(rc == CODEC_EVALUE && strcmp(dbuf_ptr(&b), "a: 1\nb:") == 0,
          "  YAML too (%s)", dbuf_ptr(&b));
    dbuf_free(&b);
    /* A dbuf already in error fails the first piece. */
    dbuf_init(&b, 2);
    dbuf_adds(&b, "abc");
    (void)luaL_dostring(L, "return {}");
    rc = encode_top(L, 0, &b);
    CHECK(rc == CODEC_ETOOBIG && dbuf_len(&b) == 0,
          "a dbuf in error: ETOOBIG at once");
    dbuf_free(&b);

    /* Every byte that needs quoting, at every offset of 8-byte words. */
    static const char special[] = {'"',  '\\', 0x01, 0x1f,      '\n',
                                   0x7f, ' ',  '~',  (char)0xc3};
    int bad = 0, cases = 0;
    dbuf_init(&b, 1 << 20);
    dbuf_init(&want, 1 << 20);
    for (size_t n = 1; n <= 19; n++) {
        for (size_t at = 0; at < n; at++) {
            for (size_t k = 0; k < sizeof(special); k++) {
                char s[24];
                memset(s, 'a', sizeof(s));
                s[at] = special[k];
                size_t sl = n;
                if ((unsigned char)special[k] == 0xc3) {
                    if (at + 1 >= n)
                        continue;
                    s[at + 1] = (char)0xa9; /* U+00E9 */
                }
                dbuf_reset(&b);
                dbuf_reset(&want);
                lua_pushlstring(L, s, sl);
                rc = encode_top(L, 0, &b);
                text_json_quote(&want, s, sl);
                cases++;
                if (rc != 0 || strcmp(dbuf_ptr(&b), dbuf_ptr(&want)) != 0)
                    bad++;
            }
        }
    }
    CHECK(bad == 0,
          "%d strings with one byte to quote anywhere: as "
          "text_json_quote quotes them",
          cases);
    /* Many escapes and UTF-8 in one string (a config file, say). */
    char many[600];
    size_t ml = 0;
    static const char piece[] = "key: v\x01al\"ue\\ \xc3\xa9\t\b\f\r\n";
    while (ml + sizeof(piece) < sizeof(many)) {
        memcpy(many + ml, piece, sizeof(piece) - 1);
        ml += sizeof(piece) - 1;
    }
    dbuf_reset(&b);
    dbuf_reset(&want);
    lua_pushlstring(L, many, ml);
    rc = encode_top(L, 0, &b);
    text_json_quote(&want, many, ml);
    CHECK(rc == 0 && strcmp(dbuf_ptr(&b), dbuf_ptr(&want)) == 0,
          "a %zu-byte string with escapes every few bytes: as "
          "text_json_quote quotes it",
          ml);
    dbuf_reset(&b);
    lua_pushlstring(L, "abcdefgh\xff", 9);
    rc = encode_top(L, 0, &b);
    CHECK(rc == CODEC_EVALUE &&
              strcmp(err, "invalid UTF-8 in string at byte 9") == 0,
          "invalid UTF-8 after a plain word: %s", err);
    dbuf_free(&b);
    dbuf_free(&want);
    lua_pop(L, 1); /* the list */
}

static void test_fault_injection(void)
{
    int bad = 0, runs = 0;
    size_t n;
    /* Fail allocation N (then succeed), for every N until a run passes
     * without reaching the failure. */
    for (n = 1; n < 20000; n++) {
        runs++;
        int hit = fault_run(n, 0, &bad);
        if (!hit)
            break;
    }
    CHECK(bad == 0 && n < 20000,
          "failing allocation N for N = 1..%zu: only ENOMEM, no leak "
          "(%d runs)",
          n, runs);
    bad = 0;
    for (size_t m = 1; m < n; m += 7)
        fault_run(m, 1, &bad);
    CHECK(bad == 0, "failing every allocation from N on: only ENOMEM, no "
                    "leak");
}

/* jscan's strings: a special byte (the closing quote, an escape, a control
 * character) or a byte that is not special, at every offset of strings of
 * 0-40 bytes, against what a byte-at-a-time scan expects: where the value
 * ends, or which error at which byte. Covers the 8-bytes-at-a-time path
 * and every place its fall-back to single bytes can start. */
static void test_jscan_strings(void)
{
    static const unsigned char probes[] = {0x00, 0x01, 0x1f, 0x20, 0x21,
                                           '"',  '\\', 0x5b, 0x5d, 0x7f,
                                           0x80, 0xc3, 0xfe, 0xff, 'a'};
    static const char *const escapes[] = {"\\n", "\\\"",    "\\\\",
                                          "\\/", "\\u00e9", "\\uD83D",
                                          "\\x", "\\u12g4", "\\"};
    int bad = 0, cases = 0;
    char buf[64], emsg[128], want_err[64];
    for (size_t n = 0; n <= 40; n++) {
        for (size_t k = 0; k < n; k++) {
            for (size_t i = 0; i < sizeof(probes); i++) {
                unsigned char c = probes[i];
                buf[0] = '"';
                memset(buf + 1, 'a', n);
                buf[1 + k] = (char)c;
                buf[1 + n] = '"';
                long want;
                want_err[0] = '\0';
                if (c == '"') {
                    want = (long)k + 2;
                } else if (c == '\\') {
                    want = -1; /* "\a" */
                    snprintf(want_err, sizeof(want_err),
                             "bad escape in string at byte %zu", k + 1);
                    if (k + 1 == n) /* "\"" then the end: unterminated */
                        snprintf(want_err, sizeof(want_err),
                                 "unterminated string at byte %zu", n + 2);
                } else if (c < 0x20) {
                    want = -1;
                    snprintf(want_err, sizeof(want_err),
                             "control character in string at byte %zu", k + 1);
                } else {
                    want = (long)n + 2;
                }
                long got = jscan_skip(buf, n + 2, emsg, sizeof(emsg));
                cases++;
                if (got != want || (want < 0 && strcmp(emsg, want_err) != 0)) {
                    if (bad++ < 5)
                        TEST_NOTE("n=%zu k=%zu byte 0x%02x: got %ld (%s), "
                                  "want %ld (%s)",
                                  n, k, c, got, got < 0 ? emsg : "", want,
                                  want_err);
                }
            }
        }
        /* An escape at every offset, then the string closed. */
        for (size_t k = 0; k <= n; k++) {
            for (size_t e = 0; e < sizeof(escapes) / sizeof(*escapes); e++) {
                size_t el = strlen(escapes[e]);
                size_t len = 1 + n + el + 1;
                buf[0] = '"';
                memset(buf + 1, 'q', n); /* a backslash then q is no escape */
                memmove(buf + 1 + k + el, buf + 1 + k, n - k);
                memcpy(buf + 1 + k, escapes[e], el);
                buf[len - 1] = '"';
                int valid = e < 6;
                long got = jscan_skip(buf, len, emsg, sizeof(emsg));
                cases++;
                if (valid ? got != (long)len : got != -1) {
                    if (bad++ < 5)
                        TEST_NOTE("n=%zu k=%zu escape %s: got %ld (%s)", n, k,
                                  escapes[e], got, got < 0 ? emsg : "");
                }
            }
        }
        /* Unterminated: the input ends inside the string. */
        buf[0] = '"';
        memset(buf + 1, 'c', n);
        cases++;
        if (jscan_skip(buf, n + 1, emsg, sizeof(emsg)) != -1 ||
            strstr(emsg, "unterminated string") == NULL)
            bad++;
    }
    CHECK(bad == 0, "jscan strings: %d cases of 0-40 bytes, %d differ", cases,
          bad);
}

/* json_copy: equal to what it copied (the same encoding, the markers
 * kept, integers and floats as they were), and independent of it, with
 * and without lraw.h's views. */
static void test_json_copy(lua_State *L)
{
    static const char doc[] =
        "{\"e\":\"x\",\"a\":[1,2.5,{\"c\":[],\"b\":null}],\"d\":{},"
        "\"f\":[[[]]],\"g\":true,\"h\":9007199254740993,\"i\":-0.5}";
    for (int off = 0; off <= 1; off++) {
        char m[256];
        struct dbuf a, b;
        dbuf_init(&a, 1 << 20);
        dbuf_init(&b, 1 << 20);
        lraw_force_off(off);
        int rc = json_push(L, doc, sizeof(doc) - 1, NULL, m, sizeof(m));
        json_copy(L, -1); /* [orig, copy] */
        json_encode(L, -2, &a, m, sizeof(m));
        json_encode(L, -1, &b, m, sizeof(m));
        CHECK(rc == 0 && strcmp(dbuf_ptr(&a), dbuf_ptr(&b)) == 0 &&
                  strcmp(dbuf_ptr(&a), doc) != 0 /* keys sorted */,
              "json_copy%s: the same encoding (%s / %s)",
              off ? " (API only)" : "", dbuf_ptr(&a), dbuf_ptr(&b));
        lua_setglobal(L, "copy");
        lua_setglobal(L, "orig");
        CHECK(luaL_dostring(
                  L, "return codec.is_object(copy) and codec.is_array(copy.a)"
                     " and codec.is_array(copy.a[3].c) and copy.d ~= orig.d"
                     " and codec.is_object(copy.d) and copy.a[3].b == "
                     "codec.null and math.type(copy.h) == 'integer' and "
                     "math.type(copy.a[2]) == 'float'") == LUA_OK &&
                  lua_toboolean(L, -1),
              "json_copy%s: markers, null and number types kept",
              off ? " (API only)" : "");
        lua_pop(L, 1);
        CHECK(luaL_dostring(L, "copy.a[3].b = 1 copy.e = 'y' copy.f[1] = nil "
                               "return orig.a[3].b == codec.null and "
                               "orig.e == 'x' and #orig.f == 1") == LUA_OK &&
                  lua_toboolean(L, -1),
              "json_copy%s: changing the copy leaves the original",
              off ? " (API only)" : "");
        lua_pop(L, 1);
        dbuf_free(&a);
        dbuf_free(&b);
    }
    lraw_force_off(0);
    (void)luaL_dostring(L, "copy, orig = nil, nil");
}

/* codec.same with lraw.h's views and through the C API only: the same
 * answer for every pair (a, b). */
static void test_same_raw(lua_State *L)
{
    static const char *const pairs[] = {
        "{}, {}",
        "{1, 2}, {1, 2}",
        "{1, 2}, {1, 2.0}",
        "{1, 2}, {2, 1}",
        "{1, 2}, {1, 2, 3}",
        "{a = 1}, {a = 1, b = 2}",
        "{a = 1, b = 2}, {a = 1}",
        "{a = {b = {c = 'd'}}}, {a = {b = {c = 'd'}}}",
        "{a = {b = {c = 'd'}}}, {a = {b = {c = 'e'}}}",
        "{a = 0.0}, {a = -0.0}",
        "{a = 0/0}, {a = 0/0}",
        "{a = codec.null}, {a = codec.null}",
        "{a = codec.null}, {}",
        "codec.array({}), codec.object({})",
        "codec.array({}), {}",
        "{}, setmetatable({}, {})",
        "{s = string.rep('x', 50)}, {s = string.rep('x', 50)}",
        "{s = string.rep('x', 50)}, {s = string.rep('x', 49) .. 'y'}",
        "{s = string.rep('x', 50)}, {s = string.rep('x', 51)}",
        "{f = print}, {f = print}",
        "{f = print}, {f = type}",
        "{[100] = 1}, {[100] = 1}",
        "{[1.5] = 1}, {[1.5] = 1}",
        "{[true] = 1}, {[true] = 1}",
        "{[string.rep('k', 50)] = 1}, {[string.rep('k', 50)] = 1}",
        "(function() local t = {} t[1] = 1 t[3] = 3 return t end)(), "
        "{1, nil, 3}",
        "(function() local t = {} for i = 1, 40 do t['k' .. i] = i end "
        "return t end)(), (function() local t = {} for i = 40, 1, -1 do "
        "t['k' .. i] = i end return t end)()",
        "(function() local t = {a = 1, b = 2} t.a = nil return t end)(), "
        "{b = 2}",
        "(function() local t = {} t.self = t return t end)(), "
        "(function() local t = {} t.self = t return t end)()",
        "(function() local x = {} return {x, x} end)(), {{}, {}}",
        "true, true",
        "1, 1.0",
    };
    CHECK(luaL_dostring(L, "function same_pair(...) return codec.same(...) "
                           "end") == LUA_OK,
          "same_pair builds");
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        char code[512];
        int r[2] = {-1, -1};
        for (int off = 0; off <= 1; off++) {
            lraw_force_off(off);
            snprintf(code, sizeof(code), "return same_pair(%s)", pairs[i]);
            if (luaL_dostring(L, code) == LUA_OK)
                r[off] = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        lraw_force_off(0);
        CHECK(r[0] >= 0 && r[0] == r[1],
              "codec.same(%s): %d raw, %d through the API", pairs[i], r[0],
              r[1]);
    }
    (void)luaL_dostring(L, "same_pair = nil");
}

/* Replaces the value on top with the list of documents {value, 1, "x"}. */
static void as_documents(lua_State *L)
{
    lua_createtable(L, 3, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, 1);
    lua_rawseti(L, -2, 2);
    lua_pushliteral(L, "x");
    lua_rawseti(L, -2, 3);
}

typedef int (*encode_fn)(lua_State *L, int idx, struct dbuf *out, char *err,
                         size_t errlen);

/* json_encode, yaml_encode and yaml_encode_all with lraw.h's views and
 * through the C API only: the same bytes, the same failure and message,
 * the same dbuf, for every case; the raw walk runs to the end where it
 * should and gives up where the API walk decides. */
static void test_raw_walk(lua_State *L, encode_fn encode, const char *name)
{
    static const struct {
        const char *code;
        int raw; /* 1: the raw walk ends it, 0: it gives up, -1: either
                    (where Lua put the entries decides) */
    } cases[] = {
        {"return {}", 1},
        {"return codec.array({})", 1},
        {"return codec.object({})", 1},
        {"return {1, 2.5, 3.0, -0.0, 'x', true, false, codec.null}", 1},
        {"return {a = 1, b = {c = {d = 'e'}}, [''] = 'empty', ab = 2}", 1},
        {"local t = {} for i = 1, 40 do t['k' .. (i * 7919 % 97)] = i end "
         "return t",
         1},
        {"return {s = string.rep('long string ', 20), n = 'a\\nb\"c\\\\'}", 1},
        {"return {u = 'h\\195\\169 \\226\\130\\172'}", 1},
        {"local t = codec.array({1, 2}) t.name = 'ignored' return t", 1},
        {"local t = {a = 1, b = 2} t.a = nil return t", 1},
        {"local t = {1, 2, 3} t[3] = nil return t", 1},
        {"return {m = 9007199254740993, f = 1e300, g = 0.1, h = -1e-7}", 1},
        {"return {x = 2^63, y = math.mininteger, z = math.maxinteger}", 1},
        {"local t = {} for i = 1, 100 do t[i] = {i = i} end return t", 1},
        {"return setmetatable({a = 1}, {__index = {b = 2}})", 1},
        {"return {1, nil, 3}", 0},
        {"return codec.array({1, nil, 3})", 0},
        {"return {1, 2, x = 3}", 0},
        {"return codec.object({1, 2})", 0},
        {"return {[1.5] = 'f'}", 0},
        {"return {[0] = 'z'}", 0},
        {"return {[true] = 1}", 0},
        {"local t = {} t[1] = 1 t[2] = 2 t[4] = 4 return t", 0},
        {"local t = {} t[2] = 'b' t[1] = 'a' return t", -1},
        {"return {a = 0/0}", 0},
        {"return {a = 1/0}", 0},
        {"return {a = print}", 0},
        {"return {a = 'bad \\255 utf8'}", 0},
        {"return {[ 'bad \\255 key' ] = 1}", 0},
        {"local t = {} t.self = t return t", 0},
        {"return {a = coroutine.create(print)}", 0},
        {"return {io.stdout}", 0},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    CHECK(lraw_views(L) == 1, "lraw: the views hold for this Lua");
    int all = encode == yaml_encode_all;
    for (size_t i = 0; i < n; i++) {
        char out[2][8192], msg[2][256];
        int rc[2];
        unsigned long walks0, giveups0, walks1, giveups1;
        if (luaL_dostring(L, cases[i].code) != LUA_OK) {
            CHECK(0, "raw walk case %zu: %s", i, lua_tostring(L, -1));
            lua_pop(L, 1);
            continue;
        }
        if (all)
            as_documents(L);
        for (int off = 0; off <= 1; off++) {
            struct dbuf b;
            dbuf_init(&b, 1 << 20);
            dbuf_adds(&b, "prefix:");
            lraw_force_off(off);
            msg[off][0] = '\0';
            lraw_counts(&walks0, &giveups0);
            rc[off] = encode(L, -1, &b, msg[off], sizeof(msg[off]));
            lraw_counts(&walks1, &giveups1);
            if (off == 0 && cases[i].raw)
                CHECK(walks1 == walks0 + 1 && giveups1 == giveups0,
                      "%s raw walk: %s is walked raw to the end", name,
                      cases[i].code);
            else if (off == 0 && cases[i].raw == 0)
                CHECK(giveups1 == giveups0 + 1,
                      "%s raw walk: %s gives up to the API walk", name,
                      cases[i].code);
            snprintf(out[off], sizeof(out[off]), "%s", dbuf_ptr(&b));
            dbuf_free(&b);
        }
        lraw_force_off(0);
        lua_pop(L, 1);
        CHECK(rc[0] == rc[1] && strcmp(out[0], out[1]) == 0 &&
                  strcmp(msg[0], msg[1]) == 0,
              "%s raw walk: %s: the same as through the API (rc %d/%d, "
              "\"%.60s\" / \"%.60s\", \"%s\" / \"%s\")",
              name, cases[i].code, rc[0], rc[1], out[0], out[1], msg[0],
              msg[1]);
    }
    /* A maximum passed midway: the same failure and the same dbuf. */
    CHECK(luaL_dostring(L,
                        "local t = {} for i = 1, 50 do t[i] = "
                        "string.rep('x', 30) end return {list = t}") == LUA_OK,
          "raw walk: the large value builds");
    if (all)
        as_documents(L);
    for (size_t max = 100; max <= 2000; max += 475) {
        char m[2][256];
        int r[2];
        size_t len[2];
        for (int off = 0; off <= 1; off++) {
            struct dbuf b;
            dbuf_init(&b, max);
            dbuf_adds(&b, "prefix:");
            lraw_force_off(off);
            r[off] = encode(L, -1, &b, m[off], sizeof(m[off]));
            len[off] = dbuf_len(&b) + (size_t)dbuf_error(&b) * 1000;
            dbuf_free(&b);
        }
        lraw_force_off(0);
        CHECK(r[0] == r[1] && len[0] == len[1] && strcmp(m[0], m[1]) == 0,
              "%s raw walk: a %zu-byte maximum fails as through the API "
              "(%d/%d, %s / %s)",
              name, max, r[0], r[1], m[0], m[1]);
    }
    lua_pop(L, 1);
}

int main(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "codec", codec_open, 1);
    lua_pop(L, 1);

    test_json_round_trips(L);
    test_json_types(L);
    test_json_malformed(L);
    test_json_limits(L);
    test_json_encode_values(L);
    test_json_copy(L);
    test_same_raw(L);
    test_raw_walk(L, json_encode, "json_encode");
    test_raw_walk(L, yaml_encode, "yaml_encode");
    test_raw_walk(L, yaml_encode_all, "yaml_encode_all");
    test_yaml_decode(L);
    test_yaml_malformed(L);
    test_yaml_limits(L);
    test_yaml_quoting();
    test_yaml_encode(L);
    test_yaml_round_trip(L);
    test_multi_doc(L);
    test_cjson(L);
    test_exact_integers(L);
    test_text();
    test_jscan_strings();
    test_staged_output(L);
    CHECK(lua_gettop(L) == 0, "the stack is balanced after every test");
    lua_close(L);
    test_fault_injection();
    return TEST_SUMMARY();
}
