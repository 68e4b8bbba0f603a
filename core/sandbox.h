/*
 * sandbox: one lua_State for one policy evaluation, built by allow-list
 * (STYLE rules 19-21, DESIGN.md "The sandbox"). Only base, table, string,
 * math and utf8 are opened; load, loadfile, dofile, collectgarbage, print,
 * string.dump, math.random and math.randomseed are gone; every chunk gets a
 * fresh _ENV that reads through a frozen library table and raises on reads
 * of undeclared globals and on every global write. Every call into Lua goes
 * through sandbox_pcall(), which arms an instruction-count hook with a
 * monotonic deadline (sticky once expired, so pcall cannot swallow it) and
 * runs under the memory cap of our own lua_Alloc. A sandbox is meant to be
 * used for one evaluation and thrown away: nothing survives it.
 * Uses dbuf.
 */
#ifndef DITTOFS_SANDBOX_H
#define DITTOFS_SANDBOX_H

#include <stddef.h>

#include <lua.h>

#include "dbuf.h"

/* Documented defaults (README, --help). */
#define SANDBOX_DEFAULT_TIMEOUT_MS 100u
#define SANDBOX_DEFAULT_MEMORY ((size_t)32 << 20)
#define SANDBOX_DEFAULT_HOOK_COUNT 1000

/* The allocator seam: tests swap in a fault-injecting realloc/free. A NULL
 * member means the libc function. `realloc` is never called with size 0. */
struct sandbox_allocator {
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
};

/* `require(name)` inside the sandbox calls this. It returns 1 after pushing
 * the module's main function (a loaded chunk, to be called with the module
 * name; its _ENV is replaced by a fresh one) or any other value (the module
 * itself, e.g. a C library), 0 when the name is unknown (nothing pushed), or
 * raises a Lua error. */
typedef int (*sandbox_loader_fn)(lua_State *L, const char *name, void *ud);

struct sandbox_limits {
    unsigned timeout_ms; /* per sandbox_pcall; 0 = default */
    size_t memory_bytes; /* per sandbox (whole state); 0 = default */
    int hook_count;      /* VM instructions between clock checks; 0 = default */
    const struct sandbox_allocator *alloc; /* NULL = libc */
};

enum sandbox_status {
    SANDBOX_OK = 0,
    SANDBOX_ERR_RUNTIME = -1, /* error raised by the script: "file:line: msg" */
    SANDBOX_ERR_SYNTAX = -2,  /* chunk does not compile / binary refused */
    SANDBOX_ERR_TIMEOUT = -3, /* "policy timeout after N ms" */
    SANDBOX_ERR_MEMORY = -4,  /* "policy memory limit (N MiB) exceeded" */
    SANDBOX_ERR_NOMEM = -5,   /* the host could not allocate the state */
};

struct sandbox;

/* --- lifetime ------------------------------------------------------------ */

/* Creates a sandbox state. `lim` may be NULL (all defaults); `loader` may be
 * NULL (then `require` finds nothing). Returns NULL only when out of memory
 * (or when the memory cap is too small to build the environment). */
struct sandbox *sandbox_new(const struct sandbox_limits *lim,
                            sandbox_loader_fn loader, void *loader_ud);
/* Closes the state and frees everything; NULL is a no-op. */
void sandbox_free(struct sandbox *sb);

/* The state, borrowed; valid until sandbox_free(). Host code may push
 * values and call sandbox_load()/sandbox_pcall() on it. */
lua_State *sandbox_state(struct sandbox *sb);

/* --- loading and calling ------------------------------------------------- */

/* Loads a chunk with a fresh _ENV and pushes its function. `mode` is "t"
 * for anything that came from a user (policy files, library modules); "b"
 * is only for bytecode the host itself produced with lua_dump() from a
 * text chunk. Returns SANDBOX_OK, or SANDBOX_ERR_SYNTAX / _MEMORY with the
 * message in `err` (nothing pushed). Never raises. */
int sandbox_load(struct sandbox *sb, const char *buf, size_t len,
                 const char *chunkname, const char *mode, struct dbuf *err);

/* Gives the function at `idx` a fresh _ENV (its first upvalue). */
void sandbox_set_env(struct sandbox *sb, int idx);

/* Calls the function below its `nargs` arguments, like lua_pcall, under the
 * time budget and memory cap, with a message handler that keeps a
 * traceback (sandbox_traceback()). On SANDBOX_OK the results are pushed;
 * on failure nothing is pushed and `err` holds one line: the script's
 * "chunk:line: message", or the timeout / memory-cap message. A budget
 * overrun is reported even if the script caught the error with pcall and
 * returned normally. Never raises. */
int sandbox_pcall(struct sandbox *sb, int nargs, int nresults,
                  struct dbuf *err);

/* Runs fn(L) with `ud` as a light userdata argument in protected mode under
 * the same budget (host work on script-made values, e.g. encoding results,
 * may run script metamethods). Same returns as sandbox_pcall with nresults
 * LUA_MULTRET. */
int sandbox_cpcall(struct sandbox *sb, lua_CFunction fn, void *ud, int nresults,
                   struct dbuf *err);

/* Makes the table at idx read-only for scripts: assignments to new keys
 * raise, rawset refuses it, getmetatable returns false. For tables the host
 * hands out whose contents must not change (e.g. the codec's marker
 * metatables: a script-added __gc there would run with hooks off). May
 * raise a memory error (call it from protected code). */
void sandbox_protect_table(lua_State *L, int idx);

/* Inside a sandbox_pcall()/sandbox_cpcall(): gives the next phase of the
 * same call a full time budget again (host code between policy functions),
 * unless the budget already expired. Never raises. */
void sandbox_budget_restart(lua_State *L);

/* --- introspection ------------------------------------------------------- */

/* Traceback of the last runtime error, or "" (borrowed, valid until the
 * next call). */
const char *sandbox_traceback(const struct sandbox *sb);
/* Bytes currently allocated by the state, and the peak. */
size_t sandbox_memory_used(const struct sandbox *sb);
size_t sandbox_memory_peak(const struct sandbox *sb);
/* The effective limits (defaults resolved). */
unsigned sandbox_timeout_ms(const struct sandbox *sb);
size_t sandbox_memory_limit(const struct sandbox *sb);

#endif
