/*
 * test_sandbox: the allow-list environment, the sticky time budget, the
 * memory cap, text-only chunks, isolation between evaluations, require and
 * the allocator contract (never realloc(ptr, 0); a failing allocation at any
 * point is a clean error, never a crash).
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "sandbox.h"
#include "testlib.h"

/* Result of one run: status, error text and the first result as a string. */
struct run {
    int rc;
    char err[1024];
    char out[1024];
};

/* Loads `src` as a text chunk named "@policies/test.lua" in a fresh sandbox
 * and calls it. */
static struct run run_lim(const char *src, const struct sandbox_limits *lim,
                          sandbox_loader_fn loader)
{
    struct run r = {0, "", ""};
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct sandbox *sb = sandbox_new(lim, loader, NULL);
    if (sb == NULL) {
        r.rc = SANDBOX_ERR_NOMEM;
        snprintf(r.err, sizeof(r.err), "sandbox_new failed");
        dbuf_free(&err);
        return r;
    }
    r.rc = sandbox_load(sb, src, strlen(src), "@policies/test.lua", "t", &err);
    if (r.rc == SANDBOX_OK)
        r.rc = sandbox_pcall(sb, 0, 1, &err);
    if (r.rc == SANDBOX_OK) {
        lua_State *L = sandbox_state(sb);
        const char *s = lua_tostring(L, -1);
        snprintf(r.out, sizeof(r.out), "%s",
                 s ? s : lua_typename(L, lua_type(L, -1)));
        lua_pop(L, 1);
    }
    snprintf(r.err, sizeof(r.err), "%s", dbuf_ptr(&err));
    if (lua_gettop(sandbox_state(sb)) != 0)
        CHECK(0, "stack balanced after run of: %s", src);
    sandbox_free(sb);
    dbuf_free(&err);
    return r;
}

static struct run run(const char *src)
{
    return run_lim(src, NULL, NULL);
}

static int contains(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

/* --- the allocator seam ----------------------------------------------------
 */

static long realloc_zero_calls;
static long alloc_calls;
static long fail_at; /* 0 = never */

static void *test_realloc(void *p, size_t n)
{
    if (n == 0)
        realloc_zero_calls++;
    alloc_calls++;
    if (fail_at && alloc_calls == fail_at)
        return NULL;
    return realloc(p, n);
}

static const struct sandbox_allocator test_alloc = {test_realloc, free};

/* --- a loader for require --------------------------------------------------
 */

static int test_loader(lua_State *L, const char *name, void *ud)
{
    (void)ud;
    static const char mod[] = "local M = {}\n"
                              "function M.twice(x) return 2 * x end\n"
                              "pcall(rawset, _ENV, \"mod_private\", 1)\n"
                              "return M\n";
    if (strcmp(name, "k8s.twice") == 0) {
        if (luaL_loadbufferx(L, mod, sizeof(mod) - 1, "@lua/k8s/twice.lua",
                             "t") != LUA_OK)
            return lua_error(L);
        return 1;
    }
    if (strcmp(name, "answer") == 0) {
        lua_pushinteger(L, 42);
        return 1;
    }
    return 0;
}

static void test_forbidden_globals(void)
{
    static const char *const names[] = {
        "io",       "os",     "package",        "debug",   "load",
        "loadfile", "dofile", "collectgarbage", "print",   "coroutine",
        "_G",       "module", "loadstring",     "setfenv", NULL,
    };
    for (int i = 0; names[i]; i++) {
        char src[256];
        snprintf(src, sizeof(src),
                 "local ok, e = pcall(function() return %s end)\n"
                 "assert(rawget(_ENV, %s) == nil)\n"
                 "return ok and 'visible' or e",
                 names[i], "\"x\"");
        struct run r = run(src);
        CHECK(r.rc == SANDBOX_OK && contains(r.out, "undeclared global"),
              "global %s is not reachable (%s)", names[i], r.out);
    }
    static const char *const fields[] = {
        "string.dump",
        "math.random",
        "math.randomseed",
        NULL,
    };
    for (int i = 0; fields[i]; i++) {
        char src[128];
        snprintf(src, sizeof(src), "return tostring(%s == nil)", fields[i]);
        struct run r = run(src);
        CHECK_STR_EQ(r.out, "true", fields[i]);
    }
    struct run r = run("return tostring(getmetatable('') == false)");
    CHECK_STR_EQ(r.out, "true",
                 "getmetatable('') does not expose the "
                 "string metatable");
    r = run("return tostring(('x'):rep(3) .. ('A'):lower())");
    CHECK_STR_EQ(r.out, "xxxa", "string methods still work");
    r = run("local n = 0 for _ in utf8.codes('h\\u{e9}') do n = n + 1 end\n"
            "return tostring(n + math.floor(2.5) + #table.concat({'a','b'}))");
    CHECK_STR_EQ(r.out, "6", "utf8, math and table are open");
    r = run("return require('os')");
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "module 'os' not "
                                                         "found"),
          "require('os') is refused: %s", r.err);
    r = run("return require('io')");
    CHECK(r.rc == SANDBOX_ERR_RUNTIME, "require('io') is refused");
}

static void test_global_writes(void)
{
    struct run r = run("\n\nx = 1\nreturn 'no'");
    CHECK(r.rc == SANDBOX_ERR_RUNTIME, "writing a global fails");
    CHECK_STR_EQ(r.err,
                 "policies/test.lua:3: attempt to assign to undeclared "
                 "global 'x'",
                 "write error names file, line and global");
    r = run("return undefined_thing");
    CHECK_STR_EQ(r.err,
                 "policies/test.lua:1: attempt to read undeclared global "
                 "'undefined_thing'",
                 "read error names file, line and global");
    r = run("string.upper = nil return 'no'");
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "read-only"),
          "library tables are frozen: %s", r.err);
    r = run("local mt = getmetatable(_ENV) return tostring(mt)");
    CHECK_STR_EQ(r.out, "false", "the _ENV metatable is locked");
    r = run("rawset(_ENV, 'x', 1) return 'no'");
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "protected table"),
          "rawset(_ENV, ...) is refused: %s", r.err);
    r = run("rawset(string, 'upper', 1) return 'no'");
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "protected table"),
          "rawset on a library is refused: %s", r.err);
    r = run("local t = rawset({}, 'a', 1) return t.a");
    CHECK_STR_EQ(r.out, "1", "rawset on an ordinary table works");
    r = run("setmetatable(_ENV, {}) return 'no'");
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "protected"),
          "setmetatable(_ENV) is refused: %s", r.err);
}

static void test_timeout(void)
{
    struct sandbox_limits lim = {.timeout_ms = 30};
    struct run r = run_lim("while true do end", &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "while true do end is killed");
    CHECK_STR_EQ(r.err, "policy timeout after 30 ms", "timeout message");

    r = run_lim("local ok, e = pcall(function() while true do end end)\n"
                "return 'survived: ' .. tostring(e)",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "pcall cannot swallow the timeout (%s)",
          r.out);

    r = run_lim("for i = 1, math.huge do\n"
                "  pcall(function() while true do end end)\n"
                "end\nreturn 'survived'",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "pcall in a loop is killed too");

    r = run_lim("local function h() while true do end end\n"
                "while true do xpcall(function() while true do end end, h) "
                "end",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "xpcall with a looping handler is "
                                       "killed");

    r = run_lim("setmetatable({}, {__gc = function() while true do end "
                "end})",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "__gc"),
          "__gc finalizers are refused (they run without hooks): %s", r.err);

    r = run_lim("local ok, v = xpcall(function() error('x') end,\n"
                "  function(m) return 'handled ' .. m end)\n"
                "local ok2, a, b = xpcall(function(x, y) return x, y end, "
                "tostring, 1, 2)\n"
                "return v .. tostring(ok) .. tostring(ok2) .. a .. b",
                &lim, NULL);
    CHECK_STR_EQ(r.out, "handled policies/test.lua:1: xfalsetrue12",
                 "xpcall still works");

    r = run_lim("local x <close> = setmetatable({}, {__close = function()\n"
                "  while true do end end})\n"
                "error('boom')",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "a looping __close is killed");

    r = run_lim("local function f() return f() end return f()", &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "endless tail call is killed");

    r = run_lim("local t = {} for i = 1, 100 do t[i] = i end\n"
                "table.sort(t, function(a, b) while true do end end)",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "a loop inside a table.sort "
                                       "comparator is killed");

    /* A long C function cannot be interrupted, but its overrun is reported
     * as soon as it returns (documented in sandbox.c). */
    struct sandbox_limits lim5 = {.timeout_ms = 5};
    r = run_lim("local s = string.rep('a', 20000)\n"
                "local x = s:find('.-b')\n"
                "return 'done'",
                &lim5, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT,
          "a slow pattern match is reported as "
          "a timeout after it returns (%d)",
          r.rc);

    r = run_lim("local n = 0 for i = 1, 1e5 do n = n + i end return "
                "tostring(n)",
                &lim, NULL);
    CHECK_STR_EQ(r.out, "5000050000", "a short loop runs to completion");
}

static void test_memory(void)
{
    /* A generous time budget: the cap must be what stops these, also under
     * valgrind or sanitizers. */
    struct sandbox_limits lim = {.memory_bytes = (size_t)4 << 20,
                                 .timeout_ms = 20000};
    struct run r =
        run_lim("local s = 'x' while true do s = s .. s end", &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_MEMORY, "string doubling hits the cap");
    CHECK_STR_EQ(r.err, "policy memory limit (4 MiB) exceeded",
                 "memory message");

    r = run_lim("local t = {} for i = 1, 1e9 do t[i] = {i} end", &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_MEMORY, "table growth hits the cap");

    r = run_lim("return string.rep('x', 1e9)", &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_MEMORY,
          "string.rep(x, 1e9) hits the cap "
          "(%s)",
          r.err);
    r = run_lim("return string.rep('x', 1e12)", &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "too large"),
          "string.rep(x, 1e12) is a clean error: %s", r.err);

    r = run_lim("local ok = pcall(string.rep, 'x', 1e9)\n"
                "return 'survived'",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_MEMORY, "a memory error caught by pcall still "
                                      "fails the evaluation");

    r = run_lim("local t = {} for i = 1, 1e6 do t[#t+1] = 'abc' .. i end\n"
                "return table.concat(t):rep(100)",
                &lim, NULL);
    CHECK(r.rc == SANDBOX_ERR_MEMORY, "table.concat / rep bomb is capped");

    r = run("local t = {} for i = 1, 1000 do t[i] = {i} end return 'fine'");
    CHECK_STR_EQ(r.out, "fine", "the process is fine afterwards");

    struct sandbox *sb = sandbox_new(NULL, NULL, NULL);
    CHECK(sb != NULL && sandbox_memory_limit(sb) == SANDBOX_DEFAULT_MEMORY &&
              sandbox_timeout_ms(sb) == SANDBOX_DEFAULT_TIMEOUT_MS,
          "defaults: 32 MiB and 100 ms");
    TEST_NOTE("an empty sandbox uses %zu bytes", sandbox_memory_used(sb));
    sandbox_free(sb);
}

static void test_chunks(void)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct sandbox *sb = sandbox_new(NULL, NULL, NULL);
    static const char bin[] = "\x1bLua\x54\x00\x19\x93\r\n\x1a\n";
    int rc =
        sandbox_load(sb, bin, sizeof(bin) - 1, "@policies/evil.lua", "t", &err);
    CHECK(rc == SANDBOX_ERR_SYNTAX, "a binary chunk is refused");
    CHECK_STR_EQ(dbuf_ptr(&err),
                 "policies/evil.lua: binary chunk refused (only Lua source "
                 "text is loaded)",
                 "binary chunk message");
    rc = sandbox_load(sb, "return (", 8, "@policies/bad.lua", "t", &err);
    CHECK(rc == SANDBOX_ERR_SYNTAX &&
              contains(dbuf_ptr(&err), "policies/bad.lua:1:"),
          "syntax error names file and line: %s", dbuf_ptr(&err));
    CHECK(lua_gettop(sandbox_state(sb)) == 0, "failed loads push nothing");

    /* A runtime error: file:line message and a traceback. */
    const char *src = "local M = {}\nfunction M.f()\n  error('boom')\nend\n"
                      "return M.f()";
    rc = sandbox_load(sb, src, strlen(src), "@policies/x.lua", "t", &err);
    rc = rc ? rc : sandbox_pcall(sb, 0, 0, &err);
    CHECK(rc == SANDBOX_ERR_RUNTIME, "runtime error status");
    CHECK_STR_EQ(dbuf_ptr(&err), "policies/x.lua:3: boom",
                 "runtime error "
                 "message");
    CHECK(contains(sandbox_traceback(sb), "stack traceback"),
          "traceback kept for debugging");
    rc = sandbox_load(sb, "error({})", 9, "@policies/x.lua", "t", &err);
    rc = rc ? rc : sandbox_pcall(sb, 0, 0, &err);
    CHECK_STR_EQ(dbuf_ptr(&err), "(error object is a table value)",
                 "non-string error object");
    sandbox_free(sb);
    dbuf_free(&err);
}

static void test_isolation(void)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    /* Two chunks in one sandbox: separate _ENVs. */
    struct sandbox *sb = sandbox_new(NULL, NULL, NULL);
    lua_State *L = sandbox_state(sb);
    const char *a = "leak = 1 return 1";
    const char *b = "return tostring(rawget(_ENV, 'leak'))";
    sandbox_load(sb, a, strlen(a), "=a", "t", &err);
    sandbox_pcall(sb, 0, 0, &err);
    sandbox_load(sb, b, strlen(b), "=b", "t", &err);
    sandbox_pcall(sb, 0, 1, &err);
    CHECK_STR_EQ(lua_tostring(L, -1), "nil", "chunks do not share _ENV");
    lua_pop(L, 1);
    sandbox_free(sb);
    dbuf_free(&err);

    /* Two evaluations: nothing carries over. */
    struct run r = run("pcall(rawset, _ENV, 'leak', 1)\n"
                       "local ok = pcall(function() string.x = 1 end)\n"
                       "return 'set'");
    CHECK_STR_EQ(r.out, "set", "first evaluation ran");
    r = run("return tostring(rawget(_ENV, 'leak')) .. tostring(string.x)");
    CHECK_STR_EQ(r.out, "nilnil", "no global leaks between evaluations");
}

static void test_require(void)
{
    struct run r = run_lim("local t = require('k8s.twice')\n"
                           "assert(require('k8s.twice') == t)\n"
                           "assert(rawget(_ENV, 'mod_private') == nil)\n"
                           "return tostring(t.twice(21) + require('answer'))",
                           NULL, test_loader);
    CHECK_STR_EQ(r.out, "84", "require loads, caches and isolates modules");
    r = run_lim("return require('nope')", NULL, test_loader);
    CHECK(contains(r.err, "module 'nope' not found"), "unknown module: %s",
          r.err);
}

static void test_allocator(void)
{
    struct sandbox_limits lim = {.alloc = &test_alloc};
    realloc_zero_calls = 0;
    struct run r =
        run_lim("local t = {} for i = 1, 10000 do t[i] = ('x'):rep(i % 50) "
                "end t = nil return 'ok'",
                &lim, NULL);
    CHECK_STR_EQ(r.out, "ok", "workload under the test allocator");
    CHECK(alloc_calls > 100, "the seam is used (%ld calls)", alloc_calls);
    CHECK_INT_EQ(realloc_zero_calls, 0, "realloc is never called with 0");

    /* Fail every allocation index in turn: never a crash, always a clean
     * status. */
    long total = alloc_calls;
    int bad = 0;
    const char *src = "local t = {} for i = 1, 200 do t[i] = {i, 'v' .. i} "
                      "end return 'ok'";
    for (long n = 1; n <= total && n <= 3000; n++) {
        alloc_calls = 0;
        fail_at = n;
        r = run_lim(src, &lim, NULL);
        if (!(r.rc == SANDBOX_OK || r.rc == SANDBOX_ERR_MEMORY ||
              r.rc == SANDBOX_ERR_NOMEM))
            bad++;
    }
    fail_at = 0;
    CHECK(bad == 0,
          "fault injection at every allocation gives clean errors "
          "(%d bad)",
          bad);
}

int main(void)
{
    test_forbidden_globals();
    test_global_writes();
    test_timeout();
    test_memory();
    test_chunks();
    test_isolation();
    test_require();
    test_allocator();
    return TEST_SUMMARY();
}
