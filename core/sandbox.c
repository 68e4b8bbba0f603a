/*
 * sandbox: allow-list lua_State, time budget hook and memory-capped
 * allocator for one policy evaluation. See sandbox.h for the contract.
 *
 * What is bounded and what is not (also in README):
 * - Lua code: time, by the count hook (every `hook_count` instructions the
 *   monotonic clock is compared with the deadline). Once expired the hook
 *   fires on every instruction, so a pcall in the script cannot swallow it;
 *   the host also checks the flag after the call and discards any result.
 * - Memory: every allocation of the state, including the strings built by C
 *   functions (string.rep, table.concat, string.format, gsub), is counted by
 *   our lua_Alloc and refused past the cap. string.rep("x", 1e12) fails with
 *   the memory message, not with an abort.
 * - NOT bounded in time: a single long-running C function, because the count
 *   hook only fires while Lua code runs. The known case is pattern
 *   backtracking, e.g. string.find(string.rep("a", 1e6), ".-.-.-.-b"). The
 *   time check happens as soon as the C function returns; the process-level
 *   watchdog of --script-test (and, later, of the controller) is the backstop.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "sandbox.h"

struct sandbox {
    lua_State *L;
    /* memory accounting (bytes) */
    size_t used;
    size_t peak;
    size_t limit;
    int mem_hit; /* the allocator refused a request during the current call */
    const struct sandbox_allocator *alloc;
    /* time budget */
    unsigned timeout_ms;
    int hook_count;
    uint64_t deadline_ns;
    int expired;
    /* require */
    sandbox_loader_fn loader;
    void *loader_ud;
    /* traceback of the last runtime error */
    struct dbuf trace;
};

/* Registry keys (their addresses are the keys). */
static const char ENV_MT_KEY = 'e';
static const char LOADED_KEY = 'l';
static const char LOCK_MT_KEY = 'k';

#define TRACE_MAX (64u * 1024u)

static struct sandbox *from_state(lua_State *L)
{
    return *(struct sandbox **)lua_getextraspace(L);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- the allocator ---------------------------------------------------------
 */

/*
 * lua_Alloc with a cap (STYLE rule 21). nsize == 0 frees and returns NULL;
 * realloc is never called with 0. Growth past the cap returns NULL (Lua then
 * runs an emergency GC, retries and raises LUA_ERRMEM). The counters only
 * move after the C allocator succeeded, so a failed realloc leaves the
 * accounting as it was (the rollback is implicit). Shrinking never fails:
 * Lua assumes it cannot, so on a failed shrink the old block is kept.
 */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct sandbox *sb = ud;
    void *(*re)(void *, size_t) =
        sb->alloc && sb->alloc->realloc ? sb->alloc->realloc : realloc;
    void (*fr)(void *) = sb->alloc && sb->alloc->free ? sb->alloc->free : free;

    if (ptr == NULL)
        osize = 0; /* osize then encodes the object type, not a size */
    if (nsize == 0) {
        fr(ptr);
        sb->used -= osize;
        return NULL;
    }
    if (nsize > osize && nsize - osize > sb->limit - sb->used) {
        sb->mem_hit = 1;
        return NULL;
    }
    void *np = re(ptr, nsize);
    if (np == NULL) {
        if (nsize <= osize)
            return ptr;
        sb->mem_hit = 1;
        return NULL;
    }
    sb->used = sb->used - osize + nsize;
    if (sb->used > sb->peak)
        sb->peak = sb->used;
    return np;
}

/* --- the time budget -------------------------------------------------------
 */

/*
 * Count hook (STYLE rule 20). Before the deadline it only reads the clock.
 * After it, it re-arms itself with a count of 1 so that it fires again on
 * the very next instruction: a script that catches "timeout" with pcall gets
 * it again at once, and so on up to the host's lua_pcall.
 */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct sandbox *sb = from_state(L);
    (void)ar;
    if (!sb->expired) {
        if (now_ns() < sb->deadline_ns)
            return;
        sb->expired = 1;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    }
    lua_pushliteral(L, "timeout");
    lua_error(L);
}

/* --- the environment -------------------------------------------------------
 */

/* __index of every _ENV: reads through the frozen library table (upvalue 1);
 * an undeclared name is an error at the script's line. */
static int env_index(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    luaL_where(L, 1);
    lua_pushfstring(L, "attempt to read undeclared global '%s'",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
    lua_concat(L, 2);
    return lua_error(L);
}

/* __newindex of every _ENV: policies keep their state in locals. */
static int env_newindex(lua_State *L)
{
    luaL_where(L, 1);
    lua_pushfstring(L, "attempt to assign to undeclared global '%s'",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
    lua_concat(L, 2);
    return lua_error(L);
}

/* __newindex of a frozen library proxy. */
static int frozen_newindex(lua_State *L)
{
    luaL_where(L, 1);
    lua_pushfstring(L, "attempt to modify a read-only library (field '%s')",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
    lua_concat(L, 2);
    return lua_error(L);
}

/*
 * require(name): cached per sandbox; otherwise asks the loader, which knows
 * the policy directory, the embedded lua/ and "codec". A loaded chunk gets
 * its own fresh _ENV, like the policy itself.
 */
static int l_require(lua_State *L)
{
    struct sandbox *sb = from_state(L);
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_KEY); /* [name, loaded] */
    if (lua_getfield(L, 2, name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (sb->loader == NULL || sb->loader(L, name, sb->loader_ud) == 0)
        return luaL_error(L,
                          "module '%s' not found (searched the policy "
                          "directory, the embedded lua/ library and \"codec\")",
                          name);
    /* [name, loaded, mod] */
    if (lua_type(L, 3) == LUA_TFUNCTION) {
        if (!lua_iscfunction(L, 3))
            sandbox_set_env(sb, 3);
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1); /* [name, loaded, result] */
        if (lua_isnil(L, 3)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 1);
        }
    }
    lua_pushvalue(L, 3);
    lua_setfield(L, 2, name);
    return 1;
}

/*
 * setmetatable without finalizers. Lua runs __gc metamethods with hooks
 * switched off (lgc.c GCTM), also from lua_close(), so a looping __gc would
 * escape the time budget. A finalizer is only registered if __gc is present
 * when setmetatable is called, so checking here is enough. Otherwise the
 * same contract as the base library's setmetatable.
 */
static int l_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    if (t == LUA_TTABLE) {
        if (lua_getfield(L, 2, "__gc") != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not allowed in "
                                 "policies");
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* rawset that refuses tables with a protected metatable (_ENV tables,
 * frozen library proxies, tables passed to sandbox_protect_table). */
static int l_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "attempt to rawset a protected table");
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

/*
 * xpcall(f, msgh, ...): the handler runs after the stack is unwound, not
 * inside the error. Lua calls a message handler with hooks disabled when
 * the error came from a hook, so a looping handler would never see the
 * budget again. Without the debug library a handler can only transform the
 * message, which works the same after unwinding. If the handler fails, its
 * error is returned instead.
 */
static int l_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_replace(L, 1);
    lua_replace(L, 2); /* [msgh, f, args...] */
    if (lua_pcall(L, n - 2, LUA_MULTRET, 0) == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_replace(L, 1); /* [true, results...] */
        return lua_gettop(L);
    }
    lua_pushvalue(L, 1);
    lua_insert(L, 2);            /* [msgh, msgh, err] */
    (void)lua_pcall(L, 1, 1, 0); /* [msgh, msg] */
    lua_pushboolean(L, 0);
    lua_replace(L, 1); /* [false, msg] */
    return 2;
}

static const char *const base_allowed[] = {
    "assert", "error",  "getmetatable", "ipairs",   "next",
    "pairs",  "pcall",  "rawequal",     "rawget",   "rawlen",
    "rawset", "select", "setmetatable", "tonumber", "tostring",
    "type",   "xpcall", "_VERSION",     NULL,
};

/* Fields removed from the real library tables (not only hidden: the string
 * metatable's __index is the real string table). */
static const char *const removed[][2] = {
    {"string", "dump"},       {"math", "random"},
    {"math", "randomseed"},   {"_G", "load"},
    {"_G", "loadfile"},       {"_G", "dofile"},
    {"_G", "collectgarbage"}, {"_G", "print"},
    {"_G", "require"},        {NULL, NULL},
};

/* Pushes a read-only proxy of the table at the top, replacing it. */
static void push_frozen(lua_State *L)
{
    lua_newtable(L);          /* [real, proxy] */
    lua_createtable(L, 0, 3); /* [real, proxy, mt] */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, frozen_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2); /* [real, proxy] */
    lua_remove(L, -2);       /* [proxy] */
}

/* Protected: opens the allowed libraries and builds the library table and
 * the _ENV metatable. */
static int setup(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL},
    };
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    for (int i = 0; removed[i][0]; i++) {
        lua_getglobal(L, removed[i][0]);
        lua_pushnil(L);
        lua_setfield(L, -2, removed[i][1]);
        lua_pop(L, 1);
    }
    /* getmetatable("") must not hand out the shared string metatable. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1); /* ["", strmt] */
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    lua_newtable(L); /* [lib] */
    for (int i = 0; base_allowed[i]; i++) {
        lua_getglobal(L, base_allowed[i]);
        lua_setfield(L, -2, base_allowed[i]);
    }
    static const char *const frozen[] = {
        LUA_TABLIBNAME, LUA_STRLIBNAME, LUA_MATHLIBNAME, LUA_UTF8LIBNAME, NULL};
    for (int i = 0; frozen[i]; i++) {
        lua_getglobal(L, frozen[i]);
        push_frozen(L);
        lua_setfield(L, -2, frozen[i]);
    }
    lua_pushcfunction(L, l_require);
    lua_setfield(L, -2, "require");
    lua_pushcfunction(L, l_setmetatable);
    lua_setfield(L, -2, "setmetatable");
    lua_pushcfunction(L, l_xpcall);
    lua_setfield(L, -2, "xpcall");
    lua_pushcfunction(L, l_rawset);
    lua_setfield(L, -2, "rawset");

    lua_createtable(L, 0, 3); /* [lib, envmt] */
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, env_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, env_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY); /* [lib] */
    lua_pop(L, 1);

    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);

    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, frozen_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LOCK_MT_KEY);
    return 0;
}

/* --- lifetime ------------------------------------------------------------- */

struct sandbox *sandbox_new(const struct sandbox_limits *lim,
                            sandbox_loader_fn loader, void *loader_ud)
{
    struct sandbox *sb = calloc(1, sizeof(*sb));
    if (sb == NULL)
        return NULL;
    sb->limit =
        lim && lim->memory_bytes ? lim->memory_bytes : SANDBOX_DEFAULT_MEMORY;
    sb->timeout_ms =
        lim && lim->timeout_ms ? lim->timeout_ms : SANDBOX_DEFAULT_TIMEOUT_MS;
    sb->hook_count = lim && lim->hook_count > 0 ? lim->hook_count
                                                : SANDBOX_DEFAULT_HOOK_COUNT;
    sb->alloc = lim ? lim->alloc : NULL;
    sb->loader = loader;
    sb->loader_ud = loader_ud;
    dbuf_init(&sb->trace, TRACE_MAX);

    sb->L = lua_newstate(sb_alloc, sb);
    if (sb->L == NULL)
        goto fail;
    *(struct sandbox **)lua_getextraspace(sb->L) = sb;
    lua_pushcfunction(sb->L, setup);
    if (lua_pcall(sb->L, 0, 0, 0) != LUA_OK)
        goto fail;
    sb->mem_hit = 0;
    return sb;

fail:
    sandbox_free(sb);
    return NULL;
}

void sandbox_free(struct sandbox *sb)
{
    if (sb == NULL)
        return;
    if (sb->L)
        lua_close(sb->L);
    sb->L = NULL;
    dbuf_free(&sb->trace);
    free(sb);
}

lua_State *sandbox_state(struct sandbox *sb)
{
    return sb->L;
}

/* --- loading ---------------------------------------------------------------
 */

void sandbox_set_env(struct sandbox *sb, int idx)
{
    lua_State *L = sb->L;
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY);
    lua_setmetatable(L, -2);
    if (lua_setupvalue(L, idx, 1) == NULL)
        lua_pop(L, 1);
}

struct load_args {
    const char *buf;
    size_t len;
    const char *chunkname;
    const char *mode;
};

/* Protected: load + fresh _ENV. A load error is re-raised as is. */
static int do_load(lua_State *L)
{
    struct load_args *a = lua_touserdata(L, 1);
    struct sandbox *sb = from_state(L);
    int rc = luaL_loadbufferx(L, a->buf, a->len, a->chunkname, a->mode);
    if (rc != LUA_OK)
        return lua_error(L);
    sandbox_set_env(sb, -1);
    return 1;
}

/* Writes the message of a failed call/load at the top of the stack. */
static void describe_error(lua_State *L, struct dbuf *err)
{
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL)
        dbuf_addf(err, "(error object is a %s value)", luaL_typename(L, -1));
    else
        dbuf_adds(err, msg);
}

static void memory_message(struct sandbox *sb, struct dbuf *err)
{
    if (sb->limit % ((size_t)1 << 20) == 0)
        dbuf_addf(err, "policy memory limit (%zu MiB) exceeded",
                  sb->limit >> 20);
    else
        dbuf_addf(err, "policy memory limit (%zu bytes) exceeded", sb->limit);
}

int sandbox_load(struct sandbox *sb, const char *buf, size_t len,
                 const char *chunkname, const char *mode, struct dbuf *err)
{
    lua_State *L = sb->L;
    struct load_args a = {buf, len, chunkname, mode};
    dbuf_reset(err);
    sb->mem_hit = 0;
    lua_pushcfunction(L, do_load);
    lua_pushlightuserdata(L, &a);
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK)
        return SANDBOX_OK;
    int ret = SANDBOX_ERR_SYNTAX;
    if (rc == LUA_ERRMEM || sb->mem_hit) {
        memory_message(sb, err);
        ret = SANDBOX_ERR_MEMORY;
    } else {
        const char *msg = lua_tostring(L, -1);
        if (msg && strncmp(msg, "attempt to load a binary chunk", 30) == 0) {
            const char *n = chunkname[0] == '@' || chunkname[0] == '='
                                ? chunkname + 1
                                : chunkname;
            dbuf_addf(err,
                      "%s: binary chunk refused (only Lua source text "
                      "is loaded)",
                      n);
        } else {
            describe_error(L, err);
        }
    }
    lua_pop(L, 1);
    return ret;
}

/* --- calling ---------------------------------------------------------------
 */

/* Message handler: keeps a traceback for debugging, returns the message
 * itself so the reported error stays one line ("file:line: message"). */
static int msghandler(lua_State *L)
{
    struct sandbox *sb = from_state(L);
    const char *msg = lua_tostring(L, 1);
    dbuf_reset(&sb->trace);
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    dbuf_adds(&sb->trace, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
}

int sandbox_pcall(struct sandbox *sb, int nargs, int nresults, struct dbuf *err)
{
    lua_State *L = sb->L;
    int fidx = lua_gettop(L) - nargs;
    dbuf_reset(err);
    dbuf_reset(&sb->trace);
    lua_pushcfunction(L, msghandler);
    lua_insert(L, fidx); /* [handler, f, args...] */

    sb->expired = 0;
    sb->mem_hit = 0;
    sb->deadline_ns = now_ns() + (uint64_t)sb->timeout_ms * 1000000u;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, sb->hook_count);
    int rc = lua_pcall(L, nargs, nresults, fidx);
    lua_sethook(L, NULL, 0, 0);
    lua_remove(L, fidx); /* [results...] or [error] */

    /* Host-side check: a budget overrun counts even when the script caught
     * the error and returned normally. */
    int ret = SANDBOX_OK;
    if (sb->expired || now_ns() >= sb->deadline_ns) {
        dbuf_addf(err, "policy timeout after %u ms", sb->timeout_ms);
        ret = SANDBOX_ERR_TIMEOUT;
    } else if (rc == LUA_ERRMEM || sb->mem_hit) {
        memory_message(sb, err);
        ret = SANDBOX_ERR_MEMORY;
    } else if (rc != LUA_OK) {
        describe_error(L, err);
        ret = SANDBOX_ERR_RUNTIME;
    }
    sb->expired = 0;
    if (ret != SANDBOX_OK)
        lua_settop(L, fidx - 1);
    return ret;
}

int sandbox_cpcall(struct sandbox *sb, lua_CFunction fn, void *ud, int nresults,
                   struct dbuf *err)
{
    lua_pushcfunction(sb->L, fn);
    lua_pushlightuserdata(sb->L, ud);
    return sandbox_pcall(sb, 1, nresults, err);
}

void sandbox_protect_table(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOCK_MT_KEY);
    lua_setmetatable(L, idx);
}

void sandbox_budget_restart(lua_State *L)
{
    struct sandbox *sb = from_state(L);
    if (!sb->expired)
        sb->deadline_ns = now_ns() + (uint64_t)sb->timeout_ms * 1000000u;
}

/* --- introspection ---------------------------------------------------------
 */

const char *sandbox_traceback(const struct sandbox *sb)
{
    return dbuf_ptr(&sb->trace);
}

size_t sandbox_memory_used(const struct sandbox *sb)
{
    return sb->used;
}

size_t sandbox_memory_peak(const struct sandbox *sb)
{
    return sb->peak;
}

unsigned sandbox_timeout_ms(const struct sandbox *sb)
{
    return sb->timeout_ms;
}

size_t sandbox_memory_limit(const struct sandbox *sb)
{
    return sb->limit;
}
