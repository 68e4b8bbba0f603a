/*
 * test_lpattern: the step-bounded pattern functions (core/lpattern.c).
 * - differential: thousands of (subject, pattern, init) cases, hand-written
 *   edge cases and deterministic random ones, through the stock lstrlib
 *   functions (saved before lpattern_open replaces them) and the bounded
 *   ones; results, gsub callback arguments and error messages must be
 *   identical;
 * - pathological patterns stop with the step-limit error quickly (under
 *   LPATTERN_TEST_MAX_MS of CPU time, default 100 ms; raise it under
 *   valgrind);
 * - ordinary patterns over 1 MiB subjects stay well inside the budget;
 * - budget and check callback settings; the string metatable path.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lpattern.h"
#include "testlib.h"

/* The differential harness: called with (stock, bounded, kind) where kind
 * is "edge" or a random seed; returns total, mismatches, cases where stock
 * raised, and the first mismatches. */
static const char HARNESS[] =
    "local stock, bounded, kind = ...\n"
    "local pack, concat, fmt = table.pack, table.concat, string.format\n"
    "\n"
    "local function ser(t)\n"
    "  local out = {}\n"
    "  for i = 1, t.n do\n"
    "    local v = t[i]\n"
    "    if type(v) == \"string\" then\n"
    "      out[#out + 1] = fmt(\"%q\", v)\n"
    "    else\n"
    "      out[#out + 1] = type(v) .. \":\" .. tostring(v)\n"
    "    end\n"
    "  end\n"
    "  return concat(out, \",\")\n"
    "end\n"
    "\n"
    "local calls\n"
    "local function frepl(...)\n"
    "  local a = pack(...)\n"
    "  calls[#calls + 1] = ser(a)\n"
    "  local k = #calls % 6\n"
    "  if k == 0 then return nil end\n"
    "  if k == 1 then return \"<\" .. tostring(a[1]) .. \">\" end\n"
    "  if k == 2 then return false end\n"
    "  if k == 3 then return 42 end\n"
    "  if k == 4 then return a[a.n] end\n"
    "  if #calls > 20 then return {} end\n"
    "  return \"z\"\n"
    "end\n"
    "local trepl = { a = \"A\", b = false, c = 7, [\"1\"] = \"one\", [1] = "
    "\"p1\",\n"
    "  [2] = true, ab = \"AB\", [\"\"] = \"E\" }\n"
    "\n"
    "local function run(lib, op, s, p, a3, a4)\n"
    "  calls = {}\n"
    "  local r\n"
    "  if op == \"find\" then\n"
    "    r = pack(pcall(function() return lib.find(s, p, a3, a4) end))\n"
    "  elseif op == \"match\" then\n"
    "    r = pack(pcall(function() return lib.match(s, p, a3) end))\n"
    "  elseif op == \"gmatch\" then\n"
    "    r = pack(pcall(function()\n"
    "      local it = lib.gmatch(s, p, a3)\n"
    "      local acc = {}\n"
    "      for _ = 1, 300 do\n"
    "        local x = pack(it())\n"
    "        if x[1] == nil then break end\n"
    "        acc[#acc + 1] = ser(x)\n"
    "      end\n"
    "      return concat(acc, \"|\")\n"
    "    end))\n"
    "  else -- gsub: a3 is the replacement (or \"<f>\" / \"<t>\"), a4 the max\n"
    "    local repl = a3\n"
    "    if a3 == \"<f>\" then repl = frepl elseif a3 == \"<t>\" then repl = "
    "trepl end\n"
    "    r = pack(pcall(function() return lib.gsub(s, p, repl, a4) end))\n"
    "  end\n"
    "  return ser(r) .. (#calls > 0 and (\" calls=\" .. concat(calls, \";\")) "
    "or \"\")\n"
    "end\n"
    "\n"
    "local total, bad, errors, report = 0, 0, 0, {}\n"
    "local function case(op, s, p, a3, a4)\n"
    "  total = total + 1\n"
    "  local want = run(stock, op, s, p, a3, a4)\n"
    "  local got = run(bounded, op, s, p, a3, a4)\n"
    "  if want:sub(1, 13) == \"boolean:false\" then\n"
    "    errors = errors + 1\n"
    "  end\n"
    "  if want ~= got then\n"
    "    bad = bad + 1\n"
    "    if #report < 10 then\n"
    "      report[#report + 1] = fmt(\"%s(%q, %q, %s, %s): want %s got %s\", "
    "op, s,\n"
    "        p, tostring(a3), tostring(a4), want, got)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "\n"
    "-- every op on one (subject, pattern, init)\n"
    "local REPLS = { \"x\", \"%0\", \"%1\", \"%%\", \"%2\", \"<%1|%0>\", "
    "\"%\", \"%x\", \"<f>\",\n"
    "  \"<t>\", \"\" }\n"
    "local function all(s, p, init, k)\n"
    "  k = k or 1\n"
    "  case(\"find\", s, p, init)\n"
    "  case(\"find\", s, p, init, true)\n"
    "  case(\"match\", s, p, init)\n"
    "  case(\"gmatch\", s, p, init)\n"
    "  case(\"gsub\", s, p, REPLS[k % #REPLS + 1], init and (init % 4) or "
    "nil)\n"
    "end\n"
    "\n"
    "if kind == \"edge\" then\n"
    "  local bytes = {}\n"
    "  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end\n"
    "  local ALL = concat(bytes)\n"
    "  for c in (\"acdglpsuwxzACDGLPSUWXZ\"):gmatch(\".\") do\n"
    "    for _, p in ipairs({ \"%\" .. c, \"%\" .. c .. \"+\", \"[%\" .. c .. "
    "\"]\",\n"
    "      \"[^%\" .. c .. \"]\", \"[%\" .. c .. \"_]+\" }) do\n"
    "      all(ALL, p, nil, 0)\n"
    "      all(ALL, p, 100, 1)\n"
    "    end\n"
    "  end\n"
    "  local subjects = { \"\", \"a\", \"abc\", \"hello world\", \"  trim me  "
    "\",\n"
    "    \"key: value\\nother: 12\\n\", \"(a(b)c)(d\", \"THE (quick) fox\", "
    "\"a\\0b\\0c\",\n"
    "    \"aaa\", \"x=1, y=2, z=3\", \"192.168.0.1\", \"[]]^$%\", "
    "\"f(a,b)[c]{d}\",\n"
    "    \"abcabcabc\", \"-12.5e+3\", \"\\n\\t\\r \", \"caf\\195\\169\" }\n"
    "  local patterns = { \"\", \"a\", \"^a\", \"a$\", \"^$\", \"$\", \"^\", "
    "\"a^\", \"$a\",\n"
    "    \"a$b\", \".\", \"..\", \".-\", \".*\", \".+\", \".?\", \"a*\", "
    "\"a+\", \"a-\", \"a?\",\n"
    "    \"%a+\", \"%d+\", \"%s*\", \"%w+\", \"%p\", \"%x+\", \"%u\", \"%l+\", "
    "\"%g+\", \"%c\",\n"
    "    \"%S+\", \"%D+\", \"%W\", \"[a-c]\", \"[^a-c]+\", \"[%a_]+\", "
    "\"[]]\", \"[^]]\",\n"
    "    \"[a-]\", \"[-a]\", \"[%]]\", \"[%-]\", \"[a-%%]\", \"[%a-z]\", "
    "\"[z-a]\", \"[.]\",\n"
    "    \"(a)(b)\", \"()a()\", \"((a)(b))\", \"(a*(.)%w(%s*))\", \"(a)%1\", "
    "\"(.)%1\",\n"
    "    \"%0\", \"(%w+)=(%w+)\", \"^%s*(.-)%s*$\", \"%b()\", \"%b{}\", "
    "\"%b((\", \"%bxx\",\n"
    "    \"%f[%w]%w+\", \"%f[%W]\", \"%f[%a]\", \"%f[^%z]\", \"%f[%z]\", "
    "\"%\", \"%g%\",\n"
    "    \"[a\", \"[^\", \"[%\", \"[a%\", \"(\", \")\", \"%1\", \"(()\", "
    "\"%b\", \"%ba\", \"%f\",\n"
    "    \"%fa\", \"%f[a\", \"(.-)%2\", \"a)\", \"(()\", \"[\", \"%z\", "
    "\"\\0\", \"[\\0]\", \"a\\0\",\n"
    "    \"%d+%.?%d*\", \"(%d+)%.(%d+)%.(%d+)%.(%d+)\", \"(h)(e)(l)(l)(o)\",\n"
    "    \"[%w%.%-]+\", \"%.\", \"%%\", \"%$\", \"%(\", \"%[\", \"%]\", "
    "\"x*\", \"o*\", \"()\",\n"
    "    \"(x*)\", \"(()())\", \"%bac\", \"[a-c-e]\", \"[%d-z]\", \"[\\255]\", "
    "\".-$\",\n"
    "    \".-b\", \"(.-)b\", \"[^%s]+\", \"%f[%S]%S*\", \"(%a+)%s*(%p?)\",\n"
    "    (\"()\"):rep(32), (\"()\"):rep(33), (\"(a)\"):rep(10) }\n"
    "  local inits = { nil, 1, 2, -1, -2, 0, 3, 4, 5, 100, -100,\n"
    "    math.mininteger, math.maxinteger }\n"
    "  local k = 0\n"
    "  for _, s in ipairs(subjects) do\n"
    "    for _, p in ipairs(patterns) do\n"
    "      k = k + 1\n"
    "      all(s, p, nil, k)\n"
    "    end\n"
    "    for i = 1, 13 do\n"
    "      k = k + 1\n"
    "      all(s, \"a\", inits[i], k)\n"
    "      all(s, \"\", inits[i], k)\n"
    "      all(s, \"b+\", inits[i], k)\n"
    "    end\n"
    "  end\n"
    "  -- gsub specifics\n"
    "  local g = {\n"
    "    { \"hello world\", \"o\", \"0\", nil }, { \"hello\", \"\", \"-\", nil "
    "},\n"
    "    { \"abc\", \"x*\", \"-\", nil }, { \"hello world\", \"o*\", \"X\", "
    "nil },\n"
    "    { \"aaa\", \"^a\", \"b\", nil }, { \"abc\", \"%w\", \"%0%0\", nil },\n"
    "    { \"abc\", \"%w\", \"%1\", nil }, { \"abc\", \"%w\", \"%2\", nil },\n"
    "    { \"abc\", \"()\", \"%1\", nil }, { \"abc\", \"(a)\", \"%2\", nil },\n"
    "    { \"abc\", \"a\", \"%\", nil }, { \"abc\", \"a\", \"%x\", nil },\n"
    "    { \"abc\", \"a\", \"100%%\", nil }, { \"abc\", \".\", \"x\", 0 },\n"
    "    { \"abc\", \".\", \"x\", -1 }, { \"abc\", \".\", \"x\", 2 },\n"
    "    { \"abc\", \".\", \"x\", 2.0 }, { \"abc\", \".\", \"<t>\", nil },\n"
    "    { \"abc\", \"(.)\", \"<f>\", nil }, { \"a1b2\", \"(%a)(%d)\", "
    "\"<f>\", nil },\n"
    "    { \"abab\", \"ab\", \"<t>\", nil }, { \"abc\", \"()\", \"<t>\", nil "
    "},\n"
    "    { \"abc\", \"\", \"<f>\", nil }, { (\"x\"):rep(40), \".\", \"<f>\", "
    "nil },\n"
    "    { \"abc\", \"b\", 5, nil }, { \"abc\", \"b\", 5.5, nil },\n"
    "  }\n"
    "  for _, c in ipairs(g) do case(\"gsub\", c[1], c[2], c[3], c[4]) end\n"
    "  -- plain find, non-string arguments, type errors\n"
    "  case(\"find\", \"a.c\", \".\", 1, true)\n"
    "  case(\"find\", \"a[c\", \"[\", 1, true)\n"
    "  case(\"find\", \"a.c\", \".\", 1, false)\n"
    "  case(\"find\", \"a\\0c\", \"\\0c\", nil, nil)\n"
    "  case(\"find\", 12345, 34, nil, nil)\n"
    "  case(\"match\", 12.5, \"%d+\", nil)\n"
    "  case(\"find\", nil, \"a\", nil, nil)\n"
    "  case(\"find\", \"a\", nil, nil, nil)\n"
    "  case(\"find\", \"a\", \"a\", \"x\", nil)\n"
    "  case(\"find\", \"a\", \"a\", 1.5, nil)\n"
    "  case(\"gmatch\", {}, \"a\", nil)\n"
    "  case(\"gmatch\", \"abcabc\", \"b\", 3)\n"
    "  case(\"gmatch\", \"abcabc\", \"b\", -2)\n"
    "  case(\"gmatch\", \"abcabc\", \"\", 7)\n"
    "  case(\"gmatch\", \"abcabc\", \"\", 8)\n"
    "  case(\"gmatch\", \"abc\", \"x*\", nil)\n"
    "  case(\"gsub\", \"abc\", \"b\", true, nil)\n"
    "  case(\"gsub\", \"abc\", \"b\", nil, nil)\n"
    "  case(\"gsub\", \"abc\", \"b\", \"x\", \"y\")\n"
    "  case(\"gsub\", \"abc\", \"b\", \"x\", 1.5)\n"
    "  -- depth limit (MAXCCALLS) and capture limits\n"
    "  case(\"match\", (\"a\"):rep(300), (\"a?\"):rep(300) .. "
    "(\"a\"):rep(300), nil)\n"
    "  case(\"match\", (\"a\"):rep(250), (\"a\"):rep(250), nil)\n"
    "  case(\"match\", (\"a\"):rep(199), (\"(a)\"):rep(32), nil)\n"
    "  case(\"find\", (\"a\"):rep(250), (\"a?\"):rep(250), nil, nil)\n"
    "else\n"
    "  -- random (deterministic LCG: the test must not depend on math.random)\n"
    "  local seed = tonumber(kind)\n"
    "  local function rnd(n)\n"
    "    seed = (seed * 1103515245 + 12345) % 2147483648\n"
    "    return seed % n + 1\n"
    "  end\n"
    "  local ITEMS = { \"a\", \"b\", \"c\", \".\", \"%a\", \"%d\", \"%w\", "
    "\"%s\", \"%A\", \"%p\",\n"
    "    \"[ab]\", \"[^a]\", \"[a-c]\", \"[%d_]\", \"%%\", \"%.\", \"(\", "
    "\")\", \"()\", \"%1\",\n"
    "    \"%2\", \"%bab\", \"%b()\", \"%f[ab]\", \"%f[^a]\", \"%f[%w]\", "
    "\"1\", \" \", \"_\",\n"
    "    \"[]]\", \"x\" }\n"
    "  local QUANT = { \"\", \"\", \"\", \"*\", \"+\", \"-\", \"?\" }\n"
    "  local BROKEN = { \"%\", \"[a\", \"%b\", \"%f\", \"%fa\", \"[^\", \"(\", "
    "\")\" }\n"
    "  local SUBJ = \"abc1 _.()ab\"\n"
    "  local function pattern()\n"
    "    local t = {}\n"
    "    if rnd(5) == 1 then t[#t + 1] = \"^\" end\n"
    "    for _ = 1, rnd(6) do\n"
    "      local it = ITEMS[rnd(#ITEMS)]\n"
    "      t[#t + 1] = it\n"
    "      if #it == 1 and it ~= \"(\" and it ~= \")\" or it:sub(1, 1) == "
    "\"[\" or\n"
    "          (#it == 2 and it:sub(1, 1) == \"%\" and not it:match(\"%d\")) "
    "then\n"
    "        t[#t + 1] = QUANT[rnd(#QUANT)]\n"
    "      end\n"
    "    end\n"
    "    if rnd(6) == 1 then t[#t + 1] = \"$\" end\n"
    "    if rnd(25) == 1 then t[#t + 1] = BROKEN[rnd(#BROKEN)] end\n"
    "    return concat(t)\n"
    "  end\n"
    "  local function subject()\n"
    "    local t = {}\n"
    "    for _ = 1, rnd(13) - 1 do\n"
    "      local i = rnd(#SUBJ)\n"
    "      t[#t + 1] = SUBJ:sub(i, i)\n"
    "    end\n"
    "    return concat(t)\n"
    "  end\n"
    "  local N = 1000\n"
    "  for k = 1, N do\n"
    "    local init = rnd(4) == 1 and (rnd(31) - 16) or nil\n"
    "    all(subject(), pattern(), init, k)\n"
    "  end\n"
    "end\n"
    "return total, bad, errors, concat(report, \"\\n\")\n";

/* --- helpers -------------------------------------------------------------- */

/* CPU time of the process, so that a loaded machine does not fail the time
 * limits (the shared development VM has 2 cores for several builds). */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time limit of one pathological call: 100 ms, or LPATTERN_TEST_MAX_MS
 * (raise it under valgrind). */
/* The CPU-time bound of a stopped match. The step budget is the bound that
 * holds everywhere (checked exactly, lpattern_last_steps); the time is a
 * sanity bound on what the budget costs: 8M steps take 60-100 ms of CPU on
 * these 2-core VMs when idle and 105-175 ms when the machine is busy, so
 * 250 ms keeps it from failing on load while still catching a budget that
 * stopped bounding anything (seconds). */
static double max_ms(void)
{
    const char *e = getenv("LPATTERN_TEST_MAX_MS");
    return e && atof(e) > 0 ? atof(e) : 250.0;
}

/* Protected part of new_state(): saves the stock functions as the global
 * STOCK, replaces them, and records the bounded ones as BOUNDED. */
static int setup(lua_State *L)
{
    static const char *const names[] = {"find", "match", "gmatch", "gsub",
                                        NULL};
    luaL_openlibs(L);
    lua_getglobal(L, "string"); /* [string] */
    lua_newtable(L);            /* [string, stock] */
    for (int i = 0; names[i]; i++) {
        lua_getfield(L, -2, names[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_setglobal(L, "STOCK"); /* [string] */
    lpattern_open(L, -1);
    lua_newtable(L); /* [string, bounded] */
    for (int i = 0; names[i]; i++) {
        lua_getfield(L, -2, names[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_setglobal(L, "BOUNDED");
    lua_pop(L, 1);
    return 0;
}

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    lua_pushcfunction(L, setup);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "setup: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    return L;
}

/*
 * Runs `code` (a chunk) in protected mode; returns the error message in
 * `err` (empty when none; truncated), and the time taken in ms.
 */
static double run(lua_State *L, const char *code, char *err, size_t errsz)
{
    err[0] = '\0';
    if (luaL_loadstring(L, code) != LUA_OK) {
        snprintf(err, errsz, "load: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    double t0 = now_ms();
    int rc = lua_pcall(L, 0, 0, 0);
    double t = now_ms() - t0;
    if (rc != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        snprintf(err, errsz, "%s", m ? m : "(non-string error)");
        lua_pop(L, 1);
    }
    return t;
}

/* --- the differential test ------------------------------------------------ */

static void differential(lua_State *L, const char *kind)
{
    if (luaL_loadbuffer(L, HARNESS, sizeof(HARNESS) - 1, "=harness") !=
        LUA_OK) {
        CHECK(0, "harness loads: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    lua_getglobal(L, "STOCK");
    lua_getglobal(L, "BOUNDED");
    lua_pushstring(L, kind);
    if (lua_pcall(L, 3, 4, 0) != LUA_OK) {
        CHECK(0, "harness %s runs: %s", kind, lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    lua_Integer total = lua_tointeger(L, -4);
    lua_Integer bad = lua_tointeger(L, -3);
    lua_Integer errors = lua_tointeger(L, -2);
    TEST_NOTE("differential %s: %lld cases (%lld raising), %lld mismatches",
              kind, (long long)total, (long long)errors, (long long)bad);
    if (bad != 0)
        printf("%s\n", lua_tostring(L, -1));
    CHECK(total > 1000 && errors > 0 && bad == 0,
          "differential %s: %lld cases identical to stock lstrlib", kind,
          (long long)total);
    lua_pop(L, 4);
}

/* --- pathological patterns ------------------------------------------------ */

static void pathological(lua_State *L)
{
    static const char *const cases[] = {
        "string.find(string.rep('a', 1e5), '.-.-.-.-b')",
        "('a'):rep(1e5):find('.-.-.-.-b')",
        "string.match(string.rep('a', 1e5), '.-.-b')",
        "string.gsub(string.rep('a', 1e5), 'a*a*a*b', '')",
        "string.find(string.rep('(', 1e5), '%b()')",
        "string.gmatch(string.rep('a', 1e5), '.-.-.-b')()",
        "string.find(string.rep('a', 1e5), '(.*)%1b')",
        "string.find(string.rep('a', 1e4), '[' .. string.rep('b', 1e5) .. "
        "']')",
        "string.find(string.rep('a', 1e4), '%f[' .. string.rep('b', 1e5) .. "
        "']')",
        "string.gsub(string.rep('x', 1e5), '.-', string.rep('%0', 1e5))",
        "string.find(string.rep('a', 1e6), string.rep('a', 1e5) .. '$')",
        "string.match('x' .. string.rep(' ', 1e5) .. 'x', "
        "'^%s*(.-)%s*$')",
        "string.match(string.rep('a', 1e5), '(a-)(a-)(a-)(a-)%4%3%2%1b')",
        "for _ in string.gmatch(string.rep('a', 1e5), 'a-a-a-b') do end",
        NULL,
    };
    char err[256];
    double limit = max_ms();
    for (int i = 0; cases[i]; i++) {
        double t = run(L, cases[i], err, sizeof(err));
        TEST_NOTE("%.1f ms, %llu steps: %s", t,
                  (unsigned long long)lpattern_last_steps(L), cases[i]);
        CHECK(
            strstr(err, "pattern too complex (step limit)") != NULL &&
                lpattern_last_steps(L) <= LPATTERN_DEFAULT_BUDGET && t < limit,
            "stops with the step limit in %.1f ms: %s (%s)", t, cases[i], err);
    }

    /* Plain finds are linear (memmem), so the quadratic input of lstrlib's
     * memchr + memcmp loop is fast and not an error. */
    static const char *const plain[] = {
        "assert(string.find(string.rep('a', 1e6), string.rep('a', 1e3) .. "
        "'b', 1, true) == nil)",
        "assert(string.find(string.rep('a', 1e6), string.rep('a', 2e5) .. "
        "'b', 1, true) == nil)",
        "assert(select(2, string.find(string.rep('a', 1e6) .. 'b', "
        "string.rep('a', 1e3) .. 'b', 1, true)) == 1e6 + 1)",
        NULL,
    };
    for (int i = 0; plain[i]; i++) {
        double t = run(L, plain[i], err, sizeof(err));
        TEST_NOTE("%.1f ms: %s", t, plain[i]);
        CHECK(err[0] == '\0' && t < limit, "plain find is linear: %s (%s)",
              plain[i], err);
    }
}

/* --- calls nested in gsub ------------------------------------------------ */

/*
 * A bounded function called directly by gsub (as the replacement function or
 * __index) spends the gsub's budget: no Lua instruction runs between those
 * calls, so the count hook could not stop a gsub that runs a full budget per
 * match. Called through a Lua function, each call has its own budget.
 */
static void nested(lua_State *L)
{
    static const char *const stopped[] = {
        /* 20 finds of ~1.4M steps each: fine alone, not 20 in one gsub */
        "local u = string.rep('a', 200) .. ',.-.-b;' "
        "string.gsub(string.rep(u, 20), '(a+),([^;]+);', string.find)",
        "local u = string.rep('a', 200) .. ',.-.-b;' "
        "string.gsub(string.rep(u, 20), '(a+),([^;]+);', string.match)",
        "local u = string.rep('a', 200) .. ',.-.-b,;' "
        "string.gsub(string.rep(u, 20), '(a+),([^,]+),(%w*);', string.gsub)",
        /* a gmatch iterator ignores its arguments: ~4.5M steps per call */
        "local it = string.rep('a', 300):gmatch('.-.-b') "
        "string.gsub(string.rep('x', 100), '.', it)",
        "local it = string.rep('a', 300):gmatch('.-.-b') "
        "string.gsub(string.rep('x', 100), '.', "
        "setmetatable({}, {__index = it}))",
        NULL,
    };
    char err[256];
    double limit = max_ms();
    run(L, "assert(not string.find(string.rep('a', 200), '.-.-b'))", err,
        sizeof(err));
    uint64_t one = lpattern_last_steps(L);
    CHECK(err[0] == '\0' && one > LPATTERN_DEFAULT_BUDGET / 20 &&
              one < LPATTERN_DEFAULT_BUDGET / 2,
          "one inner find alone: %llu steps (%s)", (unsigned long long)one,
          err);
    for (int i = 0; stopped[i]; i++) {
        double t = run(L, stopped[i], err, sizeof(err));
        TEST_NOTE("%.1f ms: %s", t, stopped[i]);
        CHECK(strstr(err, "pattern too complex (step limit)") != NULL &&
                  t < limit,
              "nested in gsub, one budget: %s (%s)", stopped[i], err);
    }

    double t = run(L,
                   "local u = string.rep('a', 200) .. ',.-.-b;' "
                   "local _, n = string.gsub(string.rep(u, 20), "
                   "'(a+),([^;]+);', function(a, p) return a:find(p) end) "
                   "assert(n == 20)",
                   err, sizeof(err));
    TEST_NOTE("%.1f ms: 20 finds of ~1.4M steps from a Lua replacement", t);
    CHECK(err[0] == '\0',
          "through a Lua function each call has its own budget (%s)", err);

    /* an inner gsub that fails under pcall leaves no stale state behind */
    run(L,
        "local _, n = string.gsub('ab', '(.)', function(c) "
        "  assert(not pcall(string.gsub, string.rep('a', 1e5), '.-.-.-b', "
        "'')) return c end) "
        "assert(n == 2) "
        "assert(not string.find(string.rep('a', 200), '.-.-b')) "
        "assert(string.gsub('abc', '%w', string.upper) == 'ABC') "
        "local u = string.rep('a', 200) .. ',.-.-b;' "
        "local ok, e = pcall(string.gsub, string.rep(u, 20), "
        "'(a+),([^;]+);', string.find) "
        "assert(not ok and e:find('step limit', 1, true))",
        err, sizeof(err));
    CHECK(err[0] == '\0', "nesting state recovers after errors (%s)", err);
}

/* --- ordinary patterns on Kubernetes-sized strings ------------------------ */

static void ordinary(lua_State *L)
{
    /* ~1 MiB of YAML-ish text; the largest Kubernetes object is 1.5 MiB */
    char err[256];
    run(L,
        "local t = {} for i = 1, 30000 do t[i] = string.format("
        "'  key%d: value-%d.example # c\\n', i, i * 7) end "
        "S = table.concat(t) assert(#S > 1000000)",
        err, sizeof(err));
    CHECK(err[0] == '\0', "builds a 1 MiB subject (%s)", err);
    lua_getglobal(L, "S");
    double len = (double)lua_rawlen(L, -1);
    lua_pop(L, 1);
    static const char *const cases[] = {
        "local n = 0 for l in S:gmatch('[^\\n]+') do n = n + 1 end "
        "assert(n == 30000)",
        "assert(select(2, S:gsub('%s+$', '')) == 1)",
        "assert(#S:match('^%s*(.-)%s*$') == #S - 3)",
        "assert(select(2, S:gsub('(%w+)', '%1')) > 100000)",
        "assert(S:find('key29999:%s*(%S+)'))",
        "assert(select(2, S:gsub('[%-%.]', '_')) == 60000)",
        "assert(select(2, S:gsub('\\n', '\\\\n')) == 30000)",
        "assert(S:match('.*key'))",
        "assert(select(2, S:gsub('%f[%w]%w+', string.upper)) > 100000)",
        "assert(select(2, S:gsub('#[^\\n]*', '')) == 30000)",
        "assert(not S:find('^%s*[%w_]+%s*=%s*(.*)$'))",
        "assert(S:find('value%-182000%.example', 1))",
        "assert(not S:find('%d%d%d%d%d%d%d%d'))",
        "assert(#S:gsub('[^%w]', '') > 0)",
        NULL,
    };
    uint64_t worst = 0;
    for (int i = 0; cases[i]; i++) {
        double t = run(L, cases[i], err, sizeof(err));
        uint64_t steps = lpattern_last_steps(L);
        if (steps > worst)
            worst = steps;
        TEST_NOTE("%.1f ms, %llu steps: %s", t, (unsigned long long)steps,
                  cases[i]);
        /* at this rate, would a 2 MiB subject fit in the budget? */
        double at_2mib = (double)steps * (double)(2 << 20) / len;
        CHECK(err[0] == '\0' && at_2mib < (double)LPATTERN_DEFAULT_BUDGET,
              "ordinary pattern, %.2f steps/byte, fits on 2 MiB: %s (%s)",
              (double)steps / len, cases[i], err);
    }
    TEST_NOTE("worst ordinary call: %llu steps of %llu",
              (unsigned long long)worst,
              (unsigned long long)LPATTERN_DEFAULT_BUDGET);
    lua_pushnil(L);
    lua_setglobal(L, "S");
}

/* --- settings ------------------------------------------------------------- */

static int check_calls;

/* Says stop at its third call. */
static int stop_third(lua_State *L, void *ud)
{
    (void)L;
    int *calls = ud;
    return ++*calls >= 3;
}

static void settings(lua_State *L)
{
    char err[256];
    CHECK(lpattern_set_budget(L, 1000) == 0, "set_budget on an opened state");
    run(L, "string.find(string.rep('a', 1000), '.-b')", err, sizeof(err));
    CHECK(strstr(err, "pattern too complex (step limit)") != NULL,
          "a budget of 1000 stops .-b on 1000 bytes (%s)", err);
    CHECK_INT_EQ(lpattern_last_steps(L), 1000, "last_steps is the budget");
    run(L, "assert(string.find(string.rep('a', 100), 'a+$') == 1)", err,
        sizeof(err));
    CHECK(err[0] == '\0', "a small match fits (%s)", err);
    CHECK(lpattern_last_steps(L) > 100 && lpattern_last_steps(L) < 1000,
          "last_steps of a small match: %llu",
          (unsigned long long)lpattern_last_steps(L));
    run(L,
        "local ok, e = pcall(string.gsub, string.rep('a', 1000), '.-b', '') "
        "assert(not ok and e:find('step limit', 1, true)) "
        "assert(string.gsub('abc', 'b', 'x') == 'axc')",
        err, sizeof(err));
    CHECK(err[0] == '\0', "pcall catches the limit; the next call works (%s)",
          err);
    CHECK(lpattern_set_budget(L, 0) == 0, "set_budget(0) restores default");
    run(L, "string.find(string.rep('a', 200), '.-.-b')", err, sizeof(err));
    CHECK(err[0] == '\0', "default budget again (%s)", err);

    CHECK(lpattern_set_check(L, stop_third, &check_calls) == 0,
          "set_check on an opened state");
    run(L, "string.find(string.rep('a', 1e5), '.-.-.-.-b')", err, sizeof(err));
    CHECK(strstr(err, "pattern too complex (time limit)") != NULL &&
              check_calls == 3,
          "the check callback stops a call (%s, %d calls)", err, check_calls);
    CHECK(lpattern_last_steps(L) >= 3 * LPATTERN_CHECK_INTERVAL &&
              lpattern_last_steps(L) < 3 * LPATTERN_CHECK_INTERVAL + 10,
          "callback every LPATTERN_CHECK_INTERVAL steps (%llu)",
          (unsigned long long)lpattern_last_steps(L));
    CHECK(lpattern_set_check(L, NULL, NULL) == 0, "set_check(NULL) removes");

    lua_State *L2 = luaL_newstate();
    CHECK(L2 && lpattern_set_budget(L2, 5) == -1 &&
              lpattern_set_check(L2, stop_third, NULL) == -1 &&
              lpattern_last_steps(L2) == 0,
          "settings refuse a state without lpattern_open");
    lua_close(L2);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    lua_State *L = new_state();
    if (!CHECK(L != NULL, "state with bounded pattern functions"))
        return TEST_SUMMARY();
    char err[256];
    run(L,
        "assert(string.find ~= STOCK.find and ('x').find == string.find "
        "and string.gsub == BOUNDED.gsub)",
        err, sizeof(err));
    CHECK(err[0] == '\0', "string table and metatable use the bounded (%s)",
          err);

    differential(L, "edge");
    static const char *const seeds[] = {"1", "42", "2024", "777", "31337"};
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
        differential(L, seeds[i]);
    pathological(L);
    nested(L);
    ordinary(L);
    settings(L);
    lua_close(L);
    return TEST_SUMMARY();
}
