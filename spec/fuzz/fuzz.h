/*
 * fuzz.h: what the harnesses in spec/fuzz/ share. Each harness is one
 * LLVMFuzzerTestOneInput (libFuzzer; AFL++ runs the same file through
 * afl-clang-fast's libAFLDriver) over one parser of outside bytes; a broken
 * property aborts with a message (FUZZ_CHECK), which both engines report as
 * a crash. Helpers: a temporary file holding the input (for loaders that only
 * take a path), a fresh Lua state, and deep equality of decoded values in the
 * codec representation (codec.h). Header-only: every harness is one
 * translation unit.
 */
#ifndef DITTOFS_FUZZ_H
#define DITTOFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken property: says which, and aborts (a crash for the engine). */
#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__,          \
                    __LINE__, #cond);                                          \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

/*
 * Writes data[0..size) into a new file under $TMPDIR (or /tmp) and stores
 * its path in path (at least 256 bytes). Returns 0, or -1 (the harness then
 * skips the input). The caller unlinks the file when done.
 */
static inline int fuzz_tmpfile(const uint8_t *data, size_t size, char *path)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, 256, "%s/dittofs-fuzz-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0) {
            close(fd);
            unlink(path);
            return -1;
        }
        off += (size_t)n;
    }
    close(fd);
    return 0;
}

/*
 * A new Lua state (with the standard libraries when `libs`); aborts when
 * out of memory. One per input, closed before returning: libFuzzer runs a
 * leak check after every input whose mallocs and frees do not balance,
 * which a state kept across inputs would trigger every time.
 */
static inline lua_State *fuzz_lua_new(int libs)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        abort();
    if (libs)
        luaL_openlibs(L);
    return L;
}

/*
 * A state kept across inputs (for harnesses whose setup, such as compiling
 * a Lua module, costs more than the input): *fresh is 1 on the first call.
 * After each input call fuzz_lua_done(L, keep), which drops the stack above
 * `keep` and collects every garbage of the input, so that mallocs and frees
 * of an input balance and libFuzzer does not start a leak scan each time.
 */
static inline lua_State *fuzz_lua_kept(int *fresh)
{
    static lua_State *L;
    *fresh = L == NULL;
    if (L == NULL)
        L = fuzz_lua_new(1);
    return L;
}

static inline void fuzz_lua_done(lua_State *L, int keep)
{
    lua_settop(L, keep);
    lua_gc(L, LUA_GCCOLLECT);
}

/*
 * 1 when the values at a and b (absolute indices) are equal in the codec
 * representation: same type, numbers by exact value (an integer equals an
 * integral float of the same value; NaN equals NaN), the same null
 * sentinel, the same array/object marker, and tables with the same keys
 * holding equal values.
 * Never raises on trees of decoded data (needs stack room: checked).
 */
static inline int fuzz_equal(lua_State *L, int a, int b, int depth)
{
    if (depth > CODEC_MAX_DEPTH + 8 || !lua_checkstack(L, 6))
        return 0;
    int ta = lua_type(L, a), tb = lua_type(L, b);
    if (ta != tb)
        return 0;
    switch (ta) {
    case LUA_TNIL:
        return 1;
    case LUA_TBOOLEAN:
        return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TNUMBER:
        if (lua_isinteger(L, a) && lua_isinteger(L, b))
            return lua_tointeger(L, a) == lua_tointeger(L, b);
        if (!lua_isinteger(L, a) && !lua_isinteger(L, b)) {
            double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
            return x == y || (x != x && y != y);
        }
        /* the encoders write an integral float as an integer (below 2^53
         * by design, codec_fmt_number; above it "%.17g" has no exponent
         * either): it comes back as one, of exactly the same value */
        return lua_rawequal(L, a, b);
    case LUA_TSTRING: {
        size_t la, lb;
        const char *sa = lua_tolstring(L, a, &la);
        const char *sb = lua_tolstring(L, b, &lb);
        return la == lb && memcmp(sa, sb, la) == 0;
    }
    case LUA_TLIGHTUSERDATA:
        return lua_touserdata(L, a) == lua_touserdata(L, b);
    case LUA_TTABLE:
        break;
    default:
        return 0;
    }
    if (codec_kind(L, a) != codec_kind(L, b))
        return 0;
    /* every key of a is in b with an equal value... */
    size_t na = 0, nb = 0;
    lua_pushnil(L);
    while (lua_next(L, a) != 0) {
        int v = lua_gettop(L);
        na++;
        lua_pushvalue(L, v - 1);
        lua_rawget(L, b);
        if (!fuzz_equal(L, v, v + 1, depth + 1)) {
            lua_pop(L, 3);
            return 0;
        }
        lua_pop(L, 2);
    }
    /* ...and b has no other key */
    lua_pushnil(L);
    while (lua_next(L, b) != 0) {
        nb++;
        lua_pop(L, 1);
    }
    return na == nb;
}

#endif
