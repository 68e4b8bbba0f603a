/*
 * sandbox: the lua_State policies run in, built by allow-list (STYLE rules
 * 19-21, DESIGN.md "The sandbox"). Only base, table, string, math and utf8
 * are opened; load, loadfile, dofile, collectgarbage, print, string.dump,
 * math.random and math.randomseed are gone; every chunk gets a fresh _ENV
 * that reads through a frozen library table and raises on reads of
 * undeclared globals and on every global write. Every call into Lua goes
 * through sandbox_pcall(), which arms a timer at a deadline in the
 * thread's CPU time whose signal (SIGRTMIN+2, handler installed by sandbox_new)
 * sets a hook that raises "timeout" (sticky once expired, so pcall cannot
 * swallow it), and runs under the memory cap of our own lua_Alloc.
 *
 * One state serves many evaluations, one at a time (one thread):
 *   sandbox_new -> sandbox_preload (modules, once) -> [sandbox_keep]
 *   -> sandbox_seal
 *   -> { sandbox_require / sandbox_pcall ... sandbox_end } * N
 *   -> sandbox_free
 * What an evaluation can reach is either made during the evaluation (its
 * _ENVs, its require cache, the module tables, closures and upvalues of
 * every module main chunk that runs again in each evaluation), or shared
 * and checked: library proxies, the marker metatables the host protects,
 * light C functions, interned strings, and the modules sandbox_keep()
 * loaded once, with every table and upvalue reachable from them, recorded
 * as they were when their main chunks returned. sandbox_end() forgets the
 * former and checks that nothing shared changed. A failed call leaves the
 * state usable for introspection only: throw it away and build a new one.
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
 * member means the libc function. `realloc` is never called with size 0.
 * With a seam every request of the state goes to it; without one, small
 * blocks come from the state's own pool (sandbox.c). */
struct sandbox_allocator {
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
};

/* `require(name)` inside the sandbox calls this the first time a state
 * meets `name`. It returns 1 after pushing the module's main function, 0
 * when the name is unknown (nothing pushed), or raises a Lua error. A Lua
 * function (a loaded chunk) is kept for the life of the state and called
 * again, with a fresh _ENV and the module name, by the first require of
 * every evaluation; a C function is kept too and called the same way (it
 * must build a new module value on every call). Any other value is the
 * module itself, for the current evaluation only (the loader is asked
 * again in the next one). */
typedef int (*sandbox_loader_fn)(lua_State *L, const char *name, void *ud);

struct sandbox_limits {
    unsigned timeout_ms; /* per sandbox_pcall; 0 = default */
    size_t memory_bytes; /* per evaluation above the sealed baseline (whole
                            state before sandbox_seal); 0 = default */
    int hook_count;      /* 0: a timer stops the call at its deadline (no
                            hook before it); > 0: no timer, a count hook
                            reads the clock every hook_count instructions
                            (also the fallback, every
                            SANDBOX_DEFAULT_HOOK_COUNT, when no timer can
                            be made) */
    const struct sandbox_allocator *alloc; /* NULL = libc */
};

enum sandbox_status {
    SANDBOX_OK = 0,
    SANDBOX_ERR_RUNTIME = -1, /* error raised by the script: "file:line: msg" */
    SANDBOX_ERR_SYNTAX = -2,  /* chunk does not compile / binary refused */
    SANDBOX_ERR_TIMEOUT = -3, /* "policy timeout after N ms" */
    SANDBOX_ERR_MEMORY = -4,  /* "policy memory limit (N MiB) exceeded" */
    SANDBOX_ERR_NOMEM = -5,   /* the host could not allocate the state */
    SANDBOX_ERR_TAINTED = -6, /* a shared table changed: discard the state */
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

/* --- modules and evaluations --------------------------------------------- */

/* Asks the loader for module `name` now and keeps its main function for
 * the life of the state (what the first require of an evaluation would
 * do, without running it), so that its memory belongs to the baseline.
 * Unknown names and non-function values are an error. Raises (call it from
 * sandbox_cpcall). */
void sandbox_preload(lua_State *L, const char *name);

/* require(name) as the policy's own `require` does it: pushes the module
 * of the current evaluation, loading and running it on first use. Raises
 * (call it from sandbox_cpcall). */
void sandbox_require(lua_State *L, const char *name);

/* Before sandbox_seal(): requires module `name` once (under the time
 * budget) and keeps every module whose main chunk ran meanwhile, except
 * `name` itself: their values serve every later require of the state, and
 * their main chunks never run again. Each is recorded as its main chunk
 * returned it: the raw contents and metatable of every table reachable
 * from it, and the value of every upvalue of every function reachable
 * from it (an integer and an equal float, 0.0 and -0.0, count as
 * different, a NaN that kept its bits as the same). sandbox_end()
 * compares them after every evaluation, so an
 * evaluation that changes a kept module (a field, a local of the module, a
 * table it holds) makes it return SANDBOX_ERR_TAINTED: the next
 * evaluation, in a new state, cannot see the change. `name` runs again in
 * every evaluation. Returns SANDBOX_OK; or the status of the failed
 * require (with its message in err), SANDBOX_ERR_RUNTIME for a module
 * holding a full userdata or a thread (which cannot be compared), or
 * SANDBOX_ERR_TAINTED when the rest of `name`'s main chunk changed a
 * module it had loaded: then free the state (evaluations there would see
 * that change). Never raises. */
int sandbox_keep(struct sandbox *sb, const char *name, struct dbuf *err);

/* Ends the preparation of a state: collects its garbage and takes the
 * memory in use as the baseline, so every evaluation may allocate
 * `memory_bytes` on top of it. Never raises. */
void sandbox_seal(struct sandbox *sb);

/* Ends one evaluation after its calls succeeded: forgets the require cache
 * and every _ENV of the evaluation, clears the stack, checks that every
 * shared table (library tables, the metatables of _ENV, strings and
 * library proxies, the tables given to sandbox_protect_table) and every
 * kept module (sandbox_keep) is exactly as it was recorded. Returns SANDBOX_OK,
 * or SANDBOX_ERR_TAINTED when something shared changed (or the state's block
 * pool holds more than the memory cap): the state must then be freed. Never
 * raises. */
int sandbox_end(struct sandbox *sb);

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

/* Makes the table at idx read-only for scripts and shared: assignments to
 * new keys raise, rawset refuses it, setmetatable and getmetatable see a
 * protected metatable, and sandbox_end() checks that its contents are
 * still those it had when it was first protected (existing keys can be
 * reassigned by plain assignment; that is caught there). For tables the
 * host hands out to every evaluation (e.g. the codec's marker metatables:
 * a script-added __gc there would run with hooks off). Protecting a table
 * twice is a no-op. May raise a memory error (call it from protected
 * code). */
void sandbox_protect_table(lua_State *L, int idx);

/* Inside a sandbox_pcall()/sandbox_cpcall(): gives the next phase of the
 * same call a full time budget again (host code between policy functions),
 * unless the budget already expired. Never raises. */
void sandbox_budget_restart(lua_State *L);

/* --- introspection ------------------------------------------------------- */

/* Traceback of the last runtime error, or "" (borrowed, valid until the
 * next call). */
const char *sandbox_traceback(const struct sandbox *sb);
/* Bytes currently allocated by the state (garbage included); the peak
 * since the last sandbox_seal() / sandbox_end(); the sealed baseline (0
 * before sandbox_seal). */
size_t sandbox_memory_used(const struct sandbox *sb);
size_t sandbox_memory_peak(const struct sandbox *sb);
size_t sandbox_memory_baseline(const struct sandbox *sb);
/* The number of modules sandbox_keep() kept (0 without it). */
size_t sandbox_kept(const struct sandbox *sb);
/* 1 when sandbox_end() compares shared tables and kept upvalues by their
 * bytes first (Lua 5.4's layouts, verified on this Lua when the state was
 * made; DITTOFS_LUA_RAW=0 turns it off), 0 when only through the C
 * API. Either way a change is found; the bytes are faster. */
int sandbox_raw_views(const struct sandbox *sb);
/* The effective limits (defaults resolved). */
unsigned sandbox_timeout_ms(const struct sandbox *sb);
size_t sandbox_memory_limit(const struct sandbox *sb);

#endif
