/*
 * test_sandbox: the allow-list environment, the sticky time budget, the
 * memory cap, text-only chunks, isolation between evaluations, require and
 * the allocator contract (never realloc(ptr, 0); a failing allocation at any
 * point is a clean error, never a crash). Then one prepared state reused
 * for many evaluations: nothing a script writes reaches the next
 * evaluation, a change to a shared table is caught, require cycles, memory
 * back to the baseline after 10,000 evaluations, and a cap that counts
 * from the baseline without tripping over earlier evaluations' garbage.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
    /* type and tostring are the sandbox's own (l_type, l_tostring). */
    r = run("local s = '' for _, v in ipairs({1, 1.5, 'x', true, {}, type})"
            " do\n  s = s .. type(v) .. ',' end\n"
            "return s .. type(nil) .. tostring(nil) .. tostring(1.0)\n"
            "  .. tostring(2) .. tostring('s') .. tostring(false)\n"
            "  .. tostring(setmetatable({}, {__tostring = function()\n"
            "    return 'T' end}))");
    CHECK_STR_EQ(r.out,
                 "number,number,string,boolean,table,function,nilnil1.02"
                 "sfalseT",
                 "type and tostring answer as the base library's");
    r = run("local ok, e = pcall(type) local ok2, e2 = pcall(tostring)\n"
            "return e .. '|' .. e2");
    CHECK(contains(r.out, "bad argument #1 to 'type' (value expected)") &&
              contains(r.out, "bad argument #1 to 'tostring' (value "
                              "expected)"),
          "type() and tostring() without a value: %s", r.out);
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

/* The endless loops, with the timer (hook_count 0) or the count hook. */
static void test_timeout(int hook_count)
{
    TEST_NOTE("the time budget with %s",
              hook_count ? "a count hook" : "the timer");
    struct sandbox_limits lim = {.timeout_ms = 30, .hook_count = hook_count};
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

    /* Pattern matching is the one superlinear C library function; the
     * bounded matcher (lpattern) checks the deadline while it works, so a
     * pathological match stops at the budget, also in a pcall loop. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    r = run_lim("local s = string.rep('a', 100000)\n"
                "for i = 1, 100 do pcall(string.find, s, '.-.-.-.-b') end\n"
                "return 'survived'",
                &lim, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT,
          "pathological pattern matches in a pcall loop are killed (%s)",
          r.err);
    CHECK(ms < test_ms(2000),
          "... within the budget, not after the matches (%.0f ms)", ms);
    r = run_lim("return (('x'):rep(10) .. 'y'):find('x-y') .. ''", &lim, NULL);
    CHECK_STR_EQ(r.out, "1", "ordinary patterns still work");

    /* A short overrun of one C call is still reported as a timeout as soon
     * as it returns. */
    struct sandbox_limits lim5 = {.timeout_ms = 5, .hook_count = hook_count};
    r = run_lim("local s = string.rep('a', 20000)\n"
                "local x = s:find('.-b')\n"
                "return 'done'",
                &lim5, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT,
          "a slow pattern match is reported as "
          "a timeout after it returns (%d)",
          r.rc);

    /* Work that fits its budget is not cut short (a budget scaled for
     * valgrind, where 1e5 iterations took more than 30 ms). */
    struct sandbox_limits fits = {.timeout_ms = test_ms(100),
                                  .hook_count = hook_count};
    r = run_lim("local n = 0 for i = 1, 1e5 do n = n + i end return "
                "tostring(n)",
                &fits, NULL);
    CHECK_STR_EQ(r.out, "5000050000", "a short loop runs to completion");
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 +
           (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Host work that reads no Lua: spins for `ms` milliseconds. */
static void spin_ms(double ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (ms_since(&t0) < ms)
        ;
}

/* Sleeps `ms` milliseconds; 0, or -1 when a signal cut the sleep short
 * (nanosleep is never restarted, SA_RESTART or not). */
static int sleep_ms(unsigned ms)
{
    struct timespec d = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    return nanosleep(&d, NULL);
}

/* What a test_timer call does inside its sandbox_cpcall: spin `host_ms`,
 * optionally give the budget back, run `inner`'s call (a spin of
 * `inner_ms` in another state), then load and run `src` in `sb`. */
struct timed {
    struct sandbox *sb;
    double host_ms;
    int restart;
    double after_ms; /* host spin after the restart */
    struct sandbox *inner;
    double inner_ms;
    int inner_rc;
    const char *src;
};

static int spin_fn(lua_State *L)
{
    spin_ms(*(double *)lua_touserdata(L, 1));
    return 0;
}

static int timed_fn(lua_State *L)
{
    struct timed *t = lua_touserdata(L, 1);
    spin_ms(t->host_ms);
    if (t->restart)
        sandbox_budget_restart(L);
    spin_ms(t->after_ms);
    if (t->inner) {
        struct dbuf err;
        dbuf_init(&err, 1024);
        t->inner_rc = sandbox_cpcall(t->inner, spin_fn, &t->inner_ms, 0, &err);
        dbuf_free(&err);
    }
    struct dbuf err;
    dbuf_init(&err, 1024);
    int rc = sandbox_load(t->sb, t->src, strlen(t->src), "@policies/test.lua",
                          "t", &err);
    dbuf_free(&err);
    if (rc != SANDBOX_OK)
        return luaL_error(L, "load failed");
    lua_call(L, 0, 0);
    return 0;
}

static int run_timed(struct timed *t, unsigned timeout_ms, char *msg,
                     size_t msg_size)
{
    struct sandbox_limits lim = {.timeout_ms = timeout_ms};
    t->sb = sandbox_new(&lim, NULL, NULL);
    if (t->sb == NULL)
        return SANDBOX_ERR_NOMEM;
    struct dbuf err;
    dbuf_init(&err, 1024);
    int rc = sandbox_cpcall(t->sb, timed_fn, t, 0, &err);
    snprintf(msg, msg_size, "%s", dbuf_ptr(&err));
    dbuf_free(&err);
    sandbox_free(t->sb);
    t->sb = NULL;
    return rc;
}

/*
 * The timer (the default): no hook runs before the deadline, its signal
 * arms one. A loop stops soon after the budget, also one of long C calls;
 * no signal comes after a call (the sleep after it is not cut short); a
 * budget given back by sandbox_budget_restart after the first deadline
 * passed in host code holds (the early signal re-arms the timer); a call
 * of another state inside a call does not make the outer call's deadline
 * get lost.
 */
static void test_timer(void)
{
    char msg[256];
    struct timespec t0;
    struct sandbox_limits lim = {.timeout_ms = 30};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct run r = run_lim("while true do end", &lim, NULL);
    double ms = ms_since(&t0);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT && ms >= 30 && ms < 30 + test_ms(1000),
          "the timer stops a loop after its 30 ms budget (%.1f ms)", ms);
    CHECK(sleep_ms(100) == 0, "no signal after a timed-out call");

    clock_gettime(CLOCK_MONOTONIC, &t0);
    r = run_lim("local s = string.rep('a', 1 << 20)\n"
                "while true do local u = s:upper() end",
                &lim, NULL);
    ms = ms_since(&t0);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT && ms < 30 + test_ms(1000),
          "... and a loop of long C calls (%.1f ms)", ms);

    r = run_lim("return 'quick'", &lim, NULL);
    CHECK_STR_EQ(r.out, "quick", "a quick call returns");
    CHECK(sleep_ms(100) == 0, "no signal after a call that returned");

    /* Host work past the deadline, the budget given back, then Lua work
     * for less than a budget but past the first deadline: the timer fired
     * early, the hook finds the deadline ahead and re-arms it. */
    unsigned budget = test_ms(100);
    struct timed t = {.host_ms = budget + 20.0,
                      .restart = 1,
                      .src = "local n = 0 for i = 1, 1e4 do n = n + i end"};
    int rc = run_timed(&t, budget, msg, sizeof(msg));
    CHECK(rc == SANDBOX_OK,
          "a budget given back after the first deadline "
          "holds (%s)",
          msg);
    CHECK(sleep_ms(budget + 50) == 0, "no signal of the re-armed timer after "
                                      "the call");
    t.src = "while true do end";
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = run_timed(&t, budget, msg, sizeof(msg));
    ms = ms_since(&t0);
    CHECK(rc == SANDBOX_ERR_TIMEOUT && ms < 2.0 * budget + 20 + test_ms(1000),
          "... and a loop after it stops at the new deadline (%.1f ms, %s)", ms,
          msg);

    /* The timer is armed for the budget and 1/16 more, and a budget
     * given back within that slack keeps it (no system call): host work
     * of 1/20 of the budget, the budget given back, then 97 % of a budget
     * more (102 % since the arming) is within the call's budget. */
    budget = test_ms(400);
    struct timed g = {.host_ms = budget / 20.0,
                      .restart = 1,
                      .after_ms = budget * 0.97,
                      .src = "return"};
    rc = run_timed(&g, budget, msg, sizeof(msg));
    CHECK(rc == SANDBOX_OK,
          "a budget given back within the timer's slack is whole (%s)", msg);
    g.src = "while true do end";
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = run_timed(&g, budget, msg, sizeof(msg));
    ms = ms_since(&t0);
    CHECK(rc == SANDBOX_ERR_TIMEOUT && ms < budget * 17.0 / 16 + test_ms(1000),
          "... and a loop after it stops at the arming's deadline (%.1f ms, "
          "%s)",
          ms, msg);

    /* Another state's call spins past the outer deadline: the outer
     * signal came while the inner call ran, and the outer loop (a few
     * seconds unstopped) stops as soon as the inner call returns. */
    struct sandbox_limits slow = {.timeout_ms = 20000};
    struct timed n = {.inner = sandbox_new(&slow, NULL, NULL),
                      .inner_ms = 60,
                      .src = "for i = 1, 2e9 do end"};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = n.inner ? run_timed(&n, 30, msg, sizeof(msg)) : SANDBOX_ERR_NOMEM;
    ms = ms_since(&t0);
    CHECK(n.inner_rc == SANDBOX_OK, "the inner call of another state returns");
    CHECK(rc == SANDBOX_ERR_TIMEOUT && ms < 60 + test_ms(1000),
          "the outer call stops right after it (%.1f ms, %s)", ms, msg);
    sandbox_free(n.inner);
    CHECK(sleep_ms(50) == 0, "no signal after both");

    /* A forked child has no timers: its calls fall back to the count hook
     * (an unstopped loop would be killed here after 10 s). */
    struct sandbox *sb = sandbox_new(&lim, NULL, NULL);
    pid_t pid = sb ? fork() : -1;
    if (pid == 0) {
        struct dbuf err;
        dbuf_init(&err, 1024);
        const char *src = "while true do end";
        int crc = sandbox_load(sb, src, strlen(src), "=loop", "t", &err);
        crc = crc ? crc : sandbox_pcall(sb, 0, 0, &err);
        sandbox_free(sb);
        dbuf_free(&err);
        _exit(crc == SANDBOX_ERR_TIMEOUT ? 0 : 1);
    }
    int status = -1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (pid > 0 && waitpid(pid, &status, WNOHANG) == 0) {
        if (ms_since(&t0) > test_ms(10000)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        sleep_ms(5);
    }
    CHECK(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a forked child's call (no timer there) is stopped by the count "
          "hook (%.0f ms)",
          ms_since(&t0));
    sandbox_free(sb);

    /* The count hook still works when asked for. */
    struct sandbox_limits counted = {.timeout_ms = 30, .hook_count = 1000};
    r = run_lim("while true do end", &counted, NULL);
    CHECK(r.rc == SANDBOX_ERR_TIMEOUT, "hook_count: the count hook stops a "
                                       "loop too");
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
    /* The default budget scaled: under valgrind the workload below takes
     * longer than the unscaled 100 ms. */
    struct sandbox_limits lim = {.alloc = &test_alloc,
                                 .timeout_ms =
                                     test_ms(SANDBOX_DEFAULT_TIMEOUT_MS)};
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

/* --- one state, many evaluations ------------------------------------------
 */

/* The module a policy mutates: state in an upvalue and in its table. */
static const char counter_src[] = "local n = 0\n"
                                  "local M = { items = {} }\n"
                                  "function M.bump() n = n + 1 return n end\n"
                                  "return M\n";

/* Reports what it sees, then writes everything it can reach. */
static const char policy_src[] =
    "local counter = require('counter')\n"
    "local codec = require('marks')\n"
    "return function()\n"
    "  local seen = {}\n"
    "  local function add(v) seen[#seen + 1] = tostring(v) end\n"
    "  add(counter.bump())\n"
    "  add(#counter.items)\n"
    "  add(counter.flag)\n"
    "  add(rawget(_ENV, 'leak'))\n"
    "  add(rawget(string, 'leak'))\n"
    "  add(('x').leak)\n"
    "  add(string.upper('a') .. math.floor(math.pi))\n"
    "  add(require('counter') == counter)\n"
    "  add(codec.mark.name)\n"
    "  counter.items[#counter.items + 1] = 'x'\n"
    "  counter.flag = 'set'\n"
    "  counter.bump = function() return 'hijacked' end\n"
    "  add(pcall(function() string.leak = 1 end))\n"
    "  add(pcall(rawset, string, 'leak', 1))\n"
    "  add(pcall(setmetatable, string, {}))\n"
    "  add(pcall(function() math.pi = 3 end))\n"
    "  add(pcall(function() table.insert = tostring end))\n"
    "  add(pcall(table.insert, string, 'v'))\n"
    "  add(pcall(function() leak = 1 end))\n"
    "  add(pcall(rawset, _ENV, 'leak', 1))\n"
    "  add(pcall(setmetatable, _ENV, {}))\n"
    "  add(pcall(function() getmetatable('').__index = {} end))\n"
    "  add(pcall(function() ('x').leak = 1 end))\n"
    "  add(pcall(function() codec.mark.other = 1 end))\n"
    "  add(pcall(rawset, codec.mark, 'other', 1))\n"
    "  return table.concat(seen, ' ')\n"
    "end\n";

static const char expected_seen[] =
    "1 0 nil nil nil nil A3 true orig false false false false false false "
    "false false false false false false false";

/* Writes to an existing key of a protected table (allowed by Lua). */
static const char tamper_src[] = "local codec = require('marks')\n"
                                 "return function()\n"
                                 "  local before = codec.mark.name\n"
                                 "  codec.mark.name = 'changed'\n"
                                 "  return before\n"
                                 "end\n";

/* Churns through ~40 KiB of short-lived tables and strings. */
static const char churn_src[] = "return function()\n"
                                "  local t = {}\n"
                                "  for i = 1, 300 do\n"
                                "    t[i] = { i, 'v' .. i, { k = i } }\n"
                                "  end\n"
                                "  return tostring(#t)\n"
                                "end\n";

/* ~300 KiB of data that is garbage once the evaluation is over. */
static const char garbage_src[] = "return function()\n"
                                  "  local t = {}\n"
                                  "  for i = 1, 2000 do\n"
                                  "    t[i] = ('g'):rep(100) .. i\n"
                                  "  end\n"
                                  "  return tostring(#t)\n"
                                  "end\n";

static const char bomb_src[] =
    "return function()\n"
    "  local t = {}\n"
    "  for i = 1, 1e9 do t[i] = ('b'):rep(64) .. i end\n"
    "end\n";

/* A module kept by sandbox_keep(): state in upvalues, in its table and in
 * tables it holds. */
static const char kmod_src[] =
    "local n, z, s = 0, 0.0, string.rep('L', 50)\n"
    "local M = { items = {}, x = 1, deep = { list = { 1, 2 } }, "
    "long = string.rep('L', 50), nan = 0/0 }\n"
    "function M.bump() n = n + 1 return n end\n"
    "function M.float() n = 0.0 end\n"
    "function M.negz() z = -0.0 end\n"
    "function M.leak() leak = 1 end\n"
    "function M.set_s(v) s = v end\n"
    "function M.seen()\n"
    "  return table.concat({ n, #M.items, M.x, #M.deep.list, z }, ' ')\n"
    "end\n"
    "return M\n";

#define KMOD_ROOT(body)                                                        \
    "local k = require('kmod')\nreturn function()\n" body                      \
    "\n  return k.seen()\nend\n"

/* kread only reads; every other k* root changes kmod in one way. */
static const char *const keep_modules[][2] = {
    {"kmod", kmod_src},
    {"kread", KMOD_ROOT("")},
    {"kbump", KMOD_ROOT("k.bump()")},
    {"kitems", KMOD_ROOT("k.items[#k.items + 1] = 'x'")},
    {"kx", KMOD_ROOT("k.x = 1.0")},
    {"kfloat", KMOD_ROOT("k.float()")},
    {"knegz", KMOD_ROOT("k.negz()")},
    {"kdeep", KMOD_ROOT("k.deep.list[3] = 3")},
    {"ksame", KMOD_ROOT("k.deep.list[1] = 1")},
    {"klsame", KMOD_ROOT("k.long = string.rep('L', 50)")},
    {"klong", KMOD_ROOT("k.long = string.rep('M', 50)")},
    {"kssame", KMOD_ROOT("k.set_s(string.rep('L', 50))")},
    {"ks", KMOD_ROOT("k.set_s(string.rep('M', 50))")},
    {"kswap", KMOD_ROOT("k.long = nil k.long2 = string.rep('L', 50)")},
    {"knan", KMOD_ROOT("k.nan = -k.nan")},
    {"kmeta", KMOD_ROOT("setmetatable(k.deep, {})")},
    {"ktable", KMOD_ROOT("k.deep = { list = { 1, 2 } }")},
    {"kcfunc", KMOD_ROOT("k.bump = string.len")},
    {"kleak", "local k = require('kmod')\nreturn function()\n"
              "  local ok, err = pcall(k.leak)\n"
              "  return tostring(ok) .. ' ' .. err\nend\n"},
    {"kload", "local k = require('kmod')\nk.x = 2\n"
              "return function() return k.seen() end\n"},
    {"kloadup", "local k = require('kmod')\nk.bump()\n"
                "return function() return k.seen() end\n"},
    {"kud", "local g = require('kiter')\nreturn function() end\n"},
    {"kiter", "return { it = ('a b'):gmatch('%a') }\n"},
    {NULL, NULL},
};

static const char *const reuse_modules[][2] = {
    {"counter", counter_src},
    {"policy", policy_src},
    {"tamper", tamper_src},
    {"churn", churn_src},
    {"garbage", garbage_src},
    {"bomb", bomb_src},
    {"cyc_a", "return require('cyc_b')"},
    {"cyc_b", "return require('cyc_a')"},
    {NULL, NULL},
};

/* The host's shared table, as the codec's marker metatables are: the same
 * protected table for every evaluation of a state. */
static const char MARK_KEY = 'm';

static int open_marks(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MARK_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "orig");
        lua_setfield(L, -2, "name");
        sandbox_protect_table(L, -1);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &MARK_KEY);
    }
    lua_createtable(L, 0, 1); /* [mark, module] */
    lua_insert(L, -2);
    lua_setfield(L, -2, "mark");
    return 1;
}

/* Kept in the registry by preload_fn for the name "@big", so that the
 * prepared state is large. */
static char big[700 * 1024];
static const char BIG_KEY = 'b';

static int reuse_loader(lua_State *L, const char *name, void *ud)
{
    (void)ud;
    const char *src = NULL;
    for (int i = 0; reuse_modules[i][0]; i++)
        if (strcmp(name, reuse_modules[i][0]) == 0)
            src = reuse_modules[i][1];
    for (int i = 0; keep_modules[i][0]; i++)
        if (strcmp(name, keep_modules[i][0]) == 0)
            src = keep_modules[i][1];
    if (strcmp(name, "marks") == 0) {
        lua_pushcfunction(L, open_marks);
        return 1;
    }
    if (src == NULL)
        return 0;
    char chunk[64];
    snprintf(chunk, sizeof(chunk), "@lua/%s.lua", name);
    if (luaL_loadbufferx(L, src, strlen(src), chunk, "t") != LUA_OK)
        return lua_error(L);
    return 1;
}

/* Protected: preloads the modules named in the NULL-terminated list. */
static int preload_fn(lua_State *L)
{
    const char *const *names = lua_touserdata(L, 1);
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], "@big") == 0) {
            lua_pushlstring(L, big, sizeof(big));
            lua_rawsetp(L, LUA_REGISTRYINDEX, &BIG_KEY);
            continue;
        }
        sandbox_preload(L, names[i]);
    }
    return 0;
}

/* A state with `names` preloaded and sealed, or NULL. */
static struct sandbox *prepared(const struct sandbox_limits *lim,
                                const char *const *names)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    struct sandbox *sb = sandbox_new(lim, reuse_loader, NULL);
    if (sb && sandbox_cpcall(sb, preload_fn, (void *)names, 0, &err) != 0) {
        TEST_NOTE("preload: %s", dbuf_ptr(&err));
        sandbox_free(sb);
        sb = NULL;
    }
    if (sb)
        sandbox_seal(sb);
    dbuf_free(&err);
    return sb;
}

/* Protected: require(main) returns a function; call it. */
static int eval_fn(lua_State *L)
{
    sandbox_require(L, lua_touserdata(L, 1));
    lua_call(L, 0, 1);
    return 1;
}

/* One evaluation in a reused state. r.rc is the call's status; `end`
 * receives sandbox_end's (only called after a successful call). */
static struct run eval_in(struct sandbox *sb, const char *main, int *end)
{
    struct run r = {0, "", ""};
    struct dbuf err;
    dbuf_init(&err, 4096);
    lua_State *L = sandbox_state(sb);
    r.rc = sandbox_cpcall(sb, eval_fn, (void *)main, 1, &err);
    if (r.rc == SANDBOX_OK) {
        const char *s = lua_tostring(L, -1);
        snprintf(r.out, sizeof(r.out), "%s", s ? s : "(not a string)");
        lua_pop(L, 1);
        *end = sandbox_end(sb);
    }
    snprintf(r.err, sizeof(r.err), "%s", dbuf_ptr(&err));
    dbuf_free(&err);
    return r;
}

static void test_reuse_isolation(void)
{
    static const char *const names[] = {"counter", "policy", "marks", NULL};
    struct sandbox *sb = prepared(NULL, names);
    CHECK(sb != NULL, "a prepared state");
    if (sb == NULL)
        return;
    CHECK(sandbox_memory_baseline(sb) > 0 &&
              sandbox_memory_baseline(sb) <= sandbox_memory_used(sb),
          "the baseline is the memory of the sealed state (%zu)",
          sandbox_memory_baseline(sb));
    int bad = 0, tainted = 0;
    for (int i = 0; i < 5; i++) {
        int end = -99;
        struct run r = eval_in(sb, "policy", &end);
        if (strcmp(r.out, expected_seen) != 0) {
            bad++;
            TEST_NOTE("evaluation %d saw: %s %s", i + 1, r.out, r.err);
        }
        if (end != SANDBOX_OK)
            tainted++;
    }
    CHECK(bad == 0,
          "5 evaluations in one state: each sees fresh module upvalues "
          "and tables, no global, no change to string/math/table, the "
          "string metatable, _ENV or the host's protected table");
    CHECK(tainted == 0, "failed writes leave the shared tables intact");
    CHECK(lua_gettop(sandbox_state(sb)) == 0, "stack empty between "
                                              "evaluations");

    int end = -99;
    struct run r = eval_in(sb, "tamper", &end);
    CHECK(r.rc == SANDBOX_OK && strcmp(r.out, "orig") == 0 &&
              end == SANDBOX_ERR_TAINTED,
          "reassigning an existing key of a shared table is caught by "
          "sandbox_end (%s, %d)",
          r.out, end);
    sandbox_free(sb);

    sb = prepared(NULL, names);
    CHECK(sb != NULL, "a rebuilt prepared state");
    if (sb == NULL)
        return;
    r = eval_in(sb, "policy", &end);
    CHECK_STR_EQ(r.out, expected_seen, "a rebuilt state is pristine again");
    r = eval_in(sb, "cyc_a", &end);
    CHECK(r.rc == SANDBOX_ERR_RUNTIME && contains(r.err, "require cycle"),
          "a require cycle is an error: %s", r.err);
    sandbox_free(sb);
}

/* A state whose modules required by `root` are kept (sandbox_keep), then
 * sealed; NULL with the status in *rc if keeping failed. */
static struct sandbox *kept_state(const char *root, int *rc, struct dbuf *err)
{
    struct sandbox *sb = sandbox_new(NULL, reuse_loader, NULL);
    if (sb == NULL) {
        *rc = SANDBOX_ERR_NOMEM;
        return NULL;
    }
    *rc = sandbox_keep(sb, root, err);
    if (*rc != SANDBOX_OK) {
        sandbox_free(sb);
        return NULL;
    }
    sandbox_seal(sb);
    return sb;
}

/*
 * Kept modules are loaded once per state and shared by its evaluations;
 * an evaluation that changes one (a field, a table it holds, a local of
 * the module, even to an equal value of another subtype) is reported by
 * sandbox_end, so the host drops the state and the next evaluation cannot
 * see the change. A write to a global fails clearly, as before.
 */
static void test_keep(void)
{
    struct dbuf err;
    dbuf_init(&err, 4096);
    int rc = 0, end = -99, bad = 0;
    struct sandbox *sb = kept_state("kread", &rc, &err);
    const char *raw = getenv("DITTOFS_LUA_RAW");
    int want_raw = !(raw != NULL && strcmp(raw, "0") == 0);
    CHECK(sb != NULL && sandbox_raw_views(sb) == want_raw,
          "sandbox_end compares bytes first on this Lua (the layouts hold) "
          "unless DITTOFS_LUA_RAW=0 (raw views %d, want %d)",
          sb ? sandbox_raw_views(sb) : -1, want_raw);
    if (!CHECK(sb != NULL && sandbox_kept(sb) == 1,
               "sandbox_keep keeps the module the root requires, not the "
               "root (%d, %s)",
               rc, dbuf_ptr(&err)))
        return;
    for (int i = 0; i < 5; i++) {
        struct run r = eval_in(sb, "kread", &end);
        if (strcmp(r.out, "0 0 1 2 0.0") != 0 || end != SANDBOX_OK) {
            bad++;
            TEST_NOTE("evaluation %d: %s %s %d", i + 1, r.out, r.err, end);
        }
    }
    CHECK(bad == 0, "5 evaluations read the kept module: all in one state");
    struct run r = eval_in(sb, "kleak", &end);
    CHECK(r.rc == SANDBOX_OK &&
              contains(r.out, "false lua/kmod.lua:6: attempt to assign to "
                              "undeclared global 'leak'") &&
              end == SANDBOX_OK,
          "a kept module's function writing a global fails clearly (%s)",
          r.out);
    r = eval_in(sb, "ksame", &end);
    CHECK(r.rc == SANDBOX_OK && end == SANDBOX_OK,
          "writing the same value back is no change (%d)", end);
    /* Long strings are not interned: an equal one is another object, which
     * the fast check (addresses) cannot tell from a change; the check
     * entry by entry then can. */
    r = eval_in(sb, "klsame", &end);
    CHECK(r.rc == SANDBOX_OK && end == SANDBOX_OK,
          "an equal long string written to a field is no change (%d)", end);
    r = eval_in(sb, "kssame", &end);
    CHECK(r.rc == SANDBOX_OK && end == SANDBOX_OK,
          "... nor to a module's local (%d)", end);
    r = eval_in(sb, "kread", &end);
    CHECK(r.rc == SANDBOX_OK && end == SANDBOX_OK,
          "... and the next evaluations pass too (%d)", end);
    /* The equal long strings above left other bytes than recorded: the
     * API check passed them, and they are the record from then on. */
    r = eval_in(sb, "kbump", &end);
    CHECK(r.rc == SANDBOX_OK && end == SANDBOX_ERR_TAINTED,
          "... and a change after that is still found (%d)", end);
    sandbox_free(sb);
    static const char *const longs[] = {"klong", "ks", "knan"};
    for (size_t i = 0; i < sizeof(longs) / sizeof(longs[0]); i++) {
        sb = kept_state("kread", &rc, &err);
        if (sb == NULL)
            break;
        r = eval_in(sb, longs[i], &end);
        CHECK(r.rc == SANDBOX_OK && end == SANDBOX_ERR_TAINTED,
              "%s (another long string, or NaN with the other sign) is a "
              "change (%d)",
              longs[i], end);
        sandbox_free(sb);
    }

    static const char *const changes[][2] = {
        {"kbump", "1 0 1 2 0.0"},
        {"kitems", "0 1 1 2 0.0"},
        {"kx", "0 0 1.0 2 0.0"},
        {"kfloat", "0.0 0 1 2 0.0"},
        {"knegz", "0 0 1 2 -0.0"},
        {"kdeep", "0 0 1 3 0.0"},
        /* a metatable given, an equal table, a C function for a Lua one */
        {"kmeta", "0 0 1 2 0.0"},
        {"ktable", "0 0 1 2 0.0"},
        {"kcfunc", "0 0 1 2 0.0"},
        /* a key replaced by another with an equal value */
        {"kswap", "0 0 1 2 0.0"},
    };
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        sb = kept_state("kread", &rc, &err);
        if (sb == NULL)
            break;
        r = eval_in(sb, changes[i][0], &end);
        CHECK(r.rc == SANDBOX_OK && strcmp(r.out, changes[i][1]) == 0 &&
                  end == SANDBOX_ERR_TAINTED,
              "%s changes the kept module (%s): sandbox_end says the state "
              "is tainted (%d)",
              changes[i][0], r.out, end);
        sandbox_free(sb);
        sb = kept_state("kread", &rc, &err);
        r = eval_in(sb, "kread", &end);
        CHECK_STR_EQ(r.out, "0 0 1 2 0.0",
                     "... and a new state is pristine again");
        sandbox_free(sb);
    }

    sb = kept_state("policy", &rc, &err);
    r = eval_in(sb, "policy", &end);
    CHECK(r.rc == SANDBOX_OK && strcmp(r.out, expected_seen) == 0 &&
              end == SANDBOX_ERR_TAINTED && sandbox_kept(sb) == 2,
          "the reuse policy with counter and marks kept: what it sees is "
          "what a fresh state shows, its writes to counter taint the state "
          "(%s, %d)",
          r.out, end);
    sandbox_free(sb);

    sb = kept_state("kload", &rc, &err);
    CHECK(sb == NULL && rc == SANDBOX_ERR_TAINTED,
          "a root that changes a module it loaded cannot keep it (%d, %s)", rc,
          dbuf_ptr(&err));
    sb = kept_state("kloadup", &rc, &err);
    CHECK(sb == NULL && rc == SANDBOX_ERR_TAINTED,
          "... nor one that changes a local of the module (%d, %s)", rc,
          dbuf_ptr(&err));
    sb = kept_state("kud", &rc, &err);
    CHECK(sb == NULL && rc == SANDBOX_ERR_RUNTIME &&
              contains(dbuf_ptr(&err), "modules are not kept"),
          "a module holding a userdata is not kept (%s)", dbuf_ptr(&err));
    sandbox_free(sb);
    dbuf_free(&err);
}

static void test_reuse_memory(void)
{
    static const char *const names[] = {"churn", "garbage", "bomb", NULL};
    /* A memory test: a generous time budget, so that a loaded machine
     * (the wall clock runs while we are descheduled) fails nothing. */
    struct sandbox_limits slow = {.timeout_ms = 20000};
    struct sandbox *sb = prepared(&slow, names);
    CHECK(sb != NULL, "a prepared state with a generous budget");
    if (sb == NULL)
        return;
    lua_State *L = sandbox_state(sb);
    size_t base = sandbox_memory_baseline(sb), high = 0;
    int bad = 0, end = 0;
    for (int i = 0; i < 10000; i++) {
        struct run r = eval_in(sb, "churn", &end);
        if ((r.rc != SANDBOX_OK || end != SANDBOX_OK) && bad++ == 0)
            TEST_NOTE("evaluation %d: %s", i + 1, r.err);
        if (sandbox_memory_used(sb) > high)
            high = sandbox_memory_used(sb);
    }
    lua_gc(L, LUA_GCCOLLECT);
    size_t after = sandbox_memory_used(sb);
    CHECK(bad == 0, "10,000 evaluations in one state succeed");
    CHECK(after <= base + 4096 && after + 4096 >= base,
          "after 10,000 evaluations and a full collection the state is "
          "back to its baseline (%zu -> %zu bytes)",
          base, after);
    CHECK(high < base + ((size_t)2 << 20),
          "garbage is collected along the way (highest %zu KiB above the "
          "baseline)",
          (high - base) / 1024);
    sandbox_free(sb);

    /* The cap counts from the baseline, and garbage left by earlier
     * evaluations does not count against the next: a refused request is
     * retried by Lua after an emergency collection. */
    memset(big, 'x', sizeof(big));
    static const char *const big_names[] = {"@big", "garbage", "bomb", NULL};
    struct sandbox_limits lim = {.memory_bytes = (size_t)1 << 20,
                                 .timeout_ms = 20000};
    sb = prepared(&lim, big_names);
    CHECK(sb != NULL && sandbox_memory_baseline(sb) > ((size_t)700 << 10),
          "a prepared state of %zu KiB under a 1 MiB cap",
          sb ? sandbox_memory_baseline(sb) / 1024 : 0);
    if (sb == NULL)
        return;
    bad = 0;
    for (int i = 0; i < 30; i++) {
        struct run r = eval_in(sb, "garbage", &end);
        if (r.rc != SANDBOX_OK || end != SANDBOX_OK) {
            bad++;
            TEST_NOTE("evaluation %d: %s", i + 1, r.err);
        }
    }
    CHECK(bad == 0,
          "30 evaluations of ~300 KiB each under a 1 MiB cap on top of a "
          "%zu KiB state: no false memory failure",
          sandbox_memory_baseline(sb) / 1024);
    struct run r = eval_in(sb, "bomb", &end);
    CHECK(r.rc == SANDBOX_ERR_MEMORY, "a real bomb still hits the cap: %s",
          r.err);
    sandbox_free(sb);
}

int main(void)
{
    test_forbidden_globals();
    test_global_writes();
    test_timeout(0);
    test_timeout(1000);
    test_timer();
    test_memory();
    test_chunks();
    test_isolation();
    test_require();
    test_allocator();
    test_reuse_isolation();
    test_keep();
    test_reuse_memory();
    return TEST_SUMMARY();
}
