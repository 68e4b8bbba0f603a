/*
 * fuzz_lpattern: the step-bounded pattern functions (core/lpattern.c)
 * against Lua's own lstrlib on the same (subject, pattern) pairs. Input:
 * byte 0 picks the function (find, plain find, match, gmatch, gsub) and
 * the gsub replacement, byte 1 the init argument (-8..+8, 0 = absent),
 * byte 2 the pattern's length; then the pattern, then the subject. The
 * bounded call runs first with a budget of 200,000 steps; when it stops
 * with "pattern too complex (step limit)" the pair is skipped (the stock
 * matcher could run for minutes), otherwise the stock call must give the
 * same results, or the same error (the function name in "bad argument"
 * aside: only the stock one is found in the loaded libraries).
 */
#include "fuzz.h"
#include "lpattern.h"

#define BUDGET 200000

static const char COMPARE[] =
    "local stock, bounded, op, s, p, init, repl = ...\n"
    "local pack, concat = table.pack, table.concat\n"
    "local function ser(t)\n"
    "  local out = {}\n"
    "  for i = 1, t.n do\n"
    "    local v = t[i]\n"
    "    out[i] = type(v) == 'string' and string.format('%q', v)\n"
    "      or type(v) .. ':' .. tostring(v)\n"
    "  end\n"
    "  return concat(out, ',')\n"
    "end\n"
    "local function run(lib)\n"
    "  if op == 0 then return pack(pcall(lib.find, s, p, init)) end\n"
    "  if op == 1 then return pack(pcall(lib.find, s, p, init, true)) end\n"
    "  if op == 2 then return pack(pcall(lib.match, s, p, init)) end\n"
    "  if op == 3 then\n"
    "    return pack(pcall(function()\n"
    "      local acc = {}\n"
    "      for a, b, c in lib.gmatch(s, p, init) do\n"
    "        acc[#acc + 1] = ser(pack(a, b, c))\n"
    "        if #acc > 200 then break end\n"
    "      end\n"
    "      return concat(acc, '|')\n"
    "    end))\n"
    "  end\n"
    "  return pack(pcall(lib.gsub, s, p, repl, init))\n"
    "end\n"
    "local rb = run(bounded)\n"
    "if not rb[1] and tostring(rb[2]):find('step limit', 1, true) then\n"
    "  return 'skip'\n"
    "end\n"
    "local rs = run(stock)\n"
    "if not rs[1] and not rb[1] then\n"
    "  local es = tostring(rs[2]):gsub(\"to '[^']*'\", \"to '?'\")\n"
    "  local eb = tostring(rb[2]):gsub(\"to '[^']*'\", \"to '?'\")\n"
    "  if es == eb then return 'same' end\n"
    "  return 'errors differ: ' .. es .. ' / ' .. eb\n"
    "end\n"
    "local a, b = ser(rs), ser(rb)\n"
    "if a == b then return 'same' end\n"
    "return 'results differ: stock ' .. a .. ' / bounded ' .. b\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const repls[] = {"<%0>", "%1-%2", "%%", "x%"};
    if (size < 3)
        return 0;
    int op = data[0] % 5;
    const char *repl = repls[(data[0] / 5) % 4];
    int init = (int)(data[1] % 17) - 8;
    size_t plen = data[2];
    const char *rest = (const char *)data + 3;
    size_t restlen = size - 3;
    if (plen > restlen)
        plen = restlen;

    int fresh;
    lua_State *L = fuzz_lua_kept(&fresh);
    if (fresh) {
        /* stack kept across inputs: [compare, stock, bounded] */
        FUZZ_CHECK(luaL_loadbuffer(L, COMPARE, sizeof(COMPARE) - 1,
                                   "=compare") == LUA_OK,
                   "compare: %s", lua_tostring(L, -1));
        /* stock: the string library as Lua opened it */
        lua_getglobal(L, "string");
        /* bounded: a copy with lpattern's functions */
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, 2) != 0) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, 3);
        }
        FUZZ_CHECK(lpattern_open(L, 3) == 0, "lpattern_open failed");
        FUZZ_CHECK(lpattern_set_budget(L, BUDGET) == 0, "set_budget failed");
    }
    for (int i = 1; i <= 3; i++)
        lua_pushvalue(L, i);
    lua_pushinteger(L, op);
    lua_pushlstring(L, rest + plen, restlen - plen);
    lua_pushlstring(L, rest, plen);
    if (init == 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, init);
    lua_pushstring(L, repl);
    /* [compare, stock, bounded, op, s, p, init, repl] */
    FUZZ_CHECK(lua_pcall(L, 7, 1, 0) == LUA_OK, "compare raised: %s",
               lua_tostring(L, -1));
    const char *verdict = lua_tostring(L, -1);
    FUZZ_CHECK(verdict != NULL && (strcmp(verdict, "same") == 0 ||
                                   strcmp(verdict, "skip") == 0),
               "op %d, pattern %.*s: %s", op, (int)plen, rest,
               verdict ? verdict : "?");
    fuzz_lua_done(L, 3);
    return 0;
}
