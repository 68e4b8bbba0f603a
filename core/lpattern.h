/*
 * lpattern: Lua 5.4's string.find, string.match, string.gmatch and
 * string.gsub with a bounded amount of work per call. The matcher is a port
 * of lstrlib.c (same patterns, results and error messages) that charges
 * every step of backtracking to a budget; past it the call raises
 * "pattern too complex (step limit)". The count hook of the sandbox never
 * fires inside one C function, so without this a pattern such as
 * string.find(string.rep("a", 1e5), ".-.-.-.-b") blocks the event loop for
 * minutes. Plain finds use memmem (linear). Uses only Lua.
 */
#ifndef DITTOFS_LPATTERN_H
#define DITTOFS_LPATTERN_H

#include <stdint.h>

#include <lua.h>

/*
 * Steps a single call may take. One step is one entry into the matcher's
 * core (about one pattern item tried at one subject position), one subject
 * byte scanned by a repetition or %b, 8 bytes of a set walked, or 32 bytes
 * compared or copied; a step of backtracking costs 5-7 ns. Ordinary
 * patterns cost 1-3.5 steps per subject byte (the trim idiom
 * "^%s*(.-)%s*$" is the most expensive measured), so 8 million covers any
 * of them on a string of 2 MiB, more than the largest Kubernetes object
 * (1.5 MiB); pathological patterns stop after 40-60 ms. Each call of
 * find, match, gsub or of a gmatch iterator has its own budget, except a
 * call made directly by gsub (its replacement function or __index, e.g.
 * s:gsub("(.-),(.-);", string.find)), which spends that gsub's.
 */
#define LPATTERN_DEFAULT_BUDGET UINT64_C(8000000)

/* Steps between two calls of the optional check callback. */
#define LPATTERN_CHECK_INTERVAL 65536

/*
 * Called every LPATTERN_CHECK_INTERVAL steps of one call (e.g. to compare a
 * clock with a deadline). Returns 0 to go on; non-zero stops the call with
 * "pattern too complex (time limit)". It may also raise itself: the matcher
 * holds no C resources.
 */
typedef int (*lpattern_check_fn)(lua_State *L, void *ud);

/* --- setup ---------------------------------------------------------------- */

/*
 * Replaces find, match, gmatch and gsub in the table at `string_table_idx`
 * (the string library table, before it is frozen: the string metatable's
 * __index is that table, so ("x"):find() uses them too) and creates the
 * per-state configuration in the registry (budget LPATTERN_DEFAULT_BUDGET, no
 * check callback) unless it exists. Returns 0. Raises a Lua memory error:
 * call it in protected mode (as sandbox setup does) or accept the panic.
 */
int lpattern_open(lua_State *L, int string_table_idx);

/*
 * Sets the step budget of every later call in this state (0 = default).
 * Returns 0, or -1 when lpattern_open() was not called on this state.
 * Never raises.
 */
int lpattern_set_budget(lua_State *L, uint64_t steps);

/*
 * Installs (or, with fn == NULL, removes) the check callback; `ud` is
 * borrowed and passed back. Returns 0, or -1 when lpattern_open() was not
 * called on this state. Never raises.
 */
int lpattern_set_check(lua_State *L, lpattern_check_fn fn, void *ud);

/*
 * Steps used by the most recent call of a bounded function in this state
 * (the budget when it was stopped), for tuning and tests; 0 when
 * lpattern_open() was not called. Never raises.
 */
uint64_t lpattern_last_steps(lua_State *L);

#endif
