/*
 * sandbox: allow-list lua_State, time budget hook and memory-capped
 * allocator for policy evaluations. See sandbox.h for the contract.
 *
 * What is bounded and what is not (also in README):
 * - Lua code: CPU time, by a POSIX timer (one per state, on the CPU clock of
 *   the thread that made it: time spent waiting for a CPU on a busy node
 *   does not count, so a policy is not stopped for the node's load) armed
 *   at the deadline when a call starts and disarmed when it returns. Its
 *   signal, sent to the thread that armed it, only sets a hook (lua_sethook
 *   is safe in a signal handler; lua.c stops a script on SIGINT the same
 *   way); the hook raises "timeout" at the next instruction. Once expired
 *   the hook fires on every instruction, so a pcall in the script cannot
 *   swallow it; the host also checks the flag after the call and discards
 *   any result. No hook is set before the deadline: in Lua 5.4 any count
 *   hook, whatever its count, sends every instruction through
 *   luaG_traceexec (a third of an evaluation of the default policy, ~0.4M
 *   of ~2.2M instructions). Without a timer (timer_create failed, or
 *   hook_count asks for it) a count hook compares the clock with the
 *   deadline every `hook_count` instructions instead.
 * - Memory: every allocation of the state, including the strings built by C
 *   functions (string.rep, table.concat, string.format, gsub), is counted by
 *   our lua_Alloc and refused past the cap. string.rep("x", 1e12) fails with
 *   the memory message, not with an abort.
 * - Long C functions: the count hook only fires while Lua code runs. The
 *   only superlinear library functions are the pattern matchers, and they
 *   are replaced by lpattern's step-bounded port, which also calls
 *   pattern_deadline() every few thousand steps: a backtracking
 *   string.find(string.rep("a", 1e6), ".-.-.-.-b") stops at the deadline.
 *   Everything else is linear in its input and so bounded by the memory
 *   cap; a short overrun is caught as soon as the C function returns, and
 *   --script-test keeps a process-level watchdog as a last backstop.
 *
 * Why one state for many evaluations: a fresh lua_State per evaluation
 * spent most of its time building the state and undumping the modules
 * (~300 us of ~650 us for the default policy). Reuse is only safe if
 * nothing an evaluation can write survives it, so:
 * - what an evaluation makes is unreachable after it: the main chunks of
 *   modules not kept run again in each evaluation (new module tables,
 *   closures, upvalues) under a fresh _ENV, the require cache is per
 *   evaluation, and sandbox_end() drops both (it also unhooks the stored
 *   main chunks from the evaluation's _ENVs);
 * - what is shared is frozen and checked: every shared table is snapshotted
 *   (raw contents and metatable) and compared after each evaluation; a
 *   difference (e.g. a reassigned existing key of a protected table) makes
 *   sandbox_end() fail and the caller rebuilds the state. Kept modules
 *   (sandbox_keep: loaded once, their main chunks were 17% of an
 *   evaluation of the default policy) are shared the same way: every
 *   table reachable from them is snapshotted as their main chunk left it,
 *   and every upvalue of every function reachable from them too (a
 *   module's locals), so an evaluation that changes any of it, even to an
 *   equal number of the other subtype, leaves a state that is thrown
 *   away. We check rather than freeze: read-only proxies would change
 *   what next, rawget, # and pairs see of a module, and upvalues cannot be
 *   frozen without the debug library;
 * - any failed call (error, timeout, memory cap) also means a new state,
 *   so an evaluation killed halfway leaves nothing behind.
 * The memory cap counts from the baseline sealed after preparation. Garbage
 * of earlier evaluations may still be in `used`, but Lua answers a refused
 * allocation with an emergency full collection and asks again; only the
 * second refusal of the same request is an out-of-memory (see sb_alloc).
 * What reuse does NOT hide: when the collector runs depends on the garbage
 * earlier evaluations left, so a policy using weak tables could see them
 * cleared at other moments (__gc is refused and collectgarbage is gone,
 * so weak tables are the only way to observe the collector); and object
 * addresses (tostring, %p) depend on the heap, as they always did.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lpattern.h"
#include "lraw.h"
#include "sandbox.h"

/* The block pool (see "the block pool" below). AddressSanitizer must see
 * every block, so it gets libc's allocator. */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_ENABLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ENABLED 0
#endif
#endif
#ifndef POOL_ENABLED
#define POOL_ENABLED 1
#endif
#define POOL_STEP 16
#define POOL_MAX 512
#define POOL_CLASSES (POOL_MAX / POOL_STEP)
#define SLAB_SIZE ((size_t)64 << 10)
#define SLAB_HEAD 16 /* keeps the blocks 16-byte aligned */
#define GC_PAUSE 300 /* see sandbox_seal() */

struct pool {
    void *free[POOL_CLASSES]; /* lists linked through each block's first word */
    char *bump;               /* the unused part of the newest slab */
    char *end;
    void *slabs; /* list linked through each slab's first word */
    void *spare; /* a slab in reserve for shrinks, which must not fail */
    size_t bytes;
};

struct sandbox {
    lua_State *L;
    /* memory accounting (bytes) */
    size_t used;
    size_t peak;
    size_t limit; /* configured: per evaluation once sealed */
    size_t base;  /* used at sandbox_seal(), 0 before */
    size_t cap;   /* used may not grow past this: limit, then base + limit */
    int mem_hit;  /* a request was refused even after an emergency GC */
    int pending;  /* the last refused request may still be retried */
    const void *ref_ptr;
    size_t ref_osize;
    size_t ref_nsize;
    void *(*re)(void *, size_t);
    void (*fr)(void *);
    int use_pool;
    struct pool pool;
    /* time budget */
    unsigned timeout_ms;
    int hook_count; /* > 0: count hook every hook_count instructions */
    uint64_t deadline_ns;
    int expired;
    int has_timer;               /* else the count hook */
    int timed;                   /* the current call is under the timer */
    volatile sig_atomic_t fired; /* the armed timer fired (timer_signal) */
    uint64_t armed_mono;         /* CLOCK_MONOTONIC when it was armed */
    timer_t timer;
    pid_t timer_tid;       /* the thread its signal goes to */
    struct sandbox *outer; /* the call this one runs inside, if any */
    /* require */
    sandbox_loader_fn loader;
    void *loader_ud;
    const char *keep_root; /* during sandbox_keep(): its module name */
    size_t kept;           /* modules kept for the life of the state */
    int raw;               /* lraw.h's views hold for this Lua (lraw_views) */
    /* traceback of the last runtime error */
    struct dbuf trace;
};

/* Registry keys (their addresses are the keys). */
static const char ENV_MT_KEY = 'e';
static const char LOADED_KEY = 'l'; /* name -> module, this evaluation */
static const char MAINS_KEY = 'm';  /* name -> main function, state life */
static const char SHARED_KEY = 's'; /* shared table -> snapshot (share) */
static const char LOCK_MT_KEY = 'k';
static const char KEPT_KEY = 'K';    /* name -> module kept for the state */
static const char UPVALS_KEY = 'u';  /* {f, n, value, ...}: kept upvalues */
static const char UPBITS_KEY = 'b';  /* struct upbits[]: the same, for the
                                        fast check */
static const char CHECKS_KEY = 'c';  /* {t1, bits1, t2, bits2, ...}: the
                                        shared tables in a sequence, with
                                        their struct snapbits */
static const char KEEPING_KEY = 'g'; /* during sandbox_keep(): {seen, ids,
                                        names} */
/* Value of LOADED[name] while the module's main chunk runs. */
static const char LOADING = 'i';

#define TRACE_MAX (64u * 1024u)

static struct sandbox *from_state(lua_State *L)
{
    return *(struct sandbox **)lua_getextraspace(L);
}

/* The budget's clock: this thread's CPU time. */
#define BUDGET_CLOCK CLOCK_THREAD_CPUTIME_ID

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(BUDGET_CLOCK, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- the block pool --------------------------------------------------------
 */

/*
 * Small blocks (<= POOL_MAX bytes: most strings, tables, closures) come from
 * free lists, one per 16-byte size class, carved from 64 KiB slabs; larger
 * ones from libc. Lua gives the size of every block it frees or resizes,
 * so a block's class is known without a header, and a free is a push.
 * Every block whose size (as Lua knows it) is <= POOL_MAX is a pool block.
 * A block shrunk to another class moves to a block of that class: keeping
 * it in place would move memory from larger classes to smaller ones for
 * good, and the pool would grow a little with every evaluation. Slabs go back
 * to libc with the state only: what one evaluation frees serves the next one
 * (the same objects, mostly) without malloc's bookkeeping. sandbox_end() asks
 * for a new state when the pool holds more than the memory cap (classes that
 * grew in turn). Only with libc's allocator: a test's allocator seam sees every
 * request.
 */
static int pool_slab(struct pool *p, int shrink)
{
    void *s = malloc(SLAB_SIZE);
    if (s == NULL && shrink) {
        s = p->spare;
        p->spare = NULL;
    }
    if (s == NULL)
        return -1;
    if (p->spare == NULL && !shrink)
        p->spare = malloc(SLAB_SIZE); /* may fail: then none in reserve */
    *(void **)s = p->slabs;
    p->slabs = s;
    p->bump = (char *)s + SLAB_HEAD;
    p->end = (char *)s + SLAB_SIZE;
    p->bytes += SLAB_SIZE;
    return 0;
}

static void *pool_get(struct pool *p, size_t n, int shrink)
{
    size_t c = (n - 1) / POOL_STEP;
    void *b = p->free[c];
    if (b) {
        p->free[c] = *(void **)b;
        return b;
    }
    size_t sz = (c + 1) * POOL_STEP;
    if ((size_t)(p->end - p->bump) < sz && pool_slab(p, shrink) != 0)
        return NULL;
    b = p->bump;
    p->bump += sz;
    return b;
}

static void pool_put(struct pool *p, void *b, size_t n)
{
    size_t c = (n - 1) / POOL_STEP;
    *(void **)b = p->free[c];
    p->free[c] = b;
}

static void pool_free(struct pool *p)
{
    while (p->slabs) {
        void *next = *(void **)p->slabs;
        free(p->slabs);
        p->slabs = next;
    }
    free(p->spare);
    memset(p, 0, sizeof(*p));
}

/* realloc for sb_alloc: osize is 0 when ptr is NULL, nsize > 0. Returns
 * NULL on failure, the block unchanged. */
static void *block_realloc(struct sandbox *sb, void *ptr, size_t osize,
                           size_t nsize)
{
    if (!sb->use_pool)
        return sb->re(ptr, nsize);
    int in_old = ptr != NULL && osize <= POOL_MAX;
    int in_new = nsize <= POOL_MAX;
    if (in_old && in_new && (nsize - 1) / POOL_STEP == (osize - 1) / POOL_STEP)
        return ptr; /* same class */
    if (!in_old && !in_new)
        return realloc(ptr, nsize);
    void *np =
        in_new ? pool_get(&sb->pool, nsize, nsize < osize) : malloc(nsize);
    if (np == NULL && in_old && nsize < osize)
        return ptr; /* a shrink that found no block: this one serves the
                       smaller class from now on (the pool loses the
                       difference until the state goes) */
    if (np == NULL)
        return NULL;
    if (ptr) {
        memcpy(np, ptr, osize < nsize ? osize : nsize);
        if (in_old)
            pool_put(&sb->pool, ptr, osize);
        else
            free(ptr);
    }
    return np;
}

static void block_free(struct sandbox *sb, void *ptr, size_t osize)
{
    if (!sb->use_pool)
        sb->fr(ptr);
    else if (ptr == NULL)
        return; /* Lua frees empty parts too */
    else if (osize <= POOL_MAX)
        pool_put(&sb->pool, ptr, osize);
    else
        free(ptr);
}

/* --- the allocator ---------------------------------------------------------
 */

/*
 * lua_Alloc with a cap (STYLE rule 21). nsize == 0 frees and returns NULL;
 * realloc is never called with 0. Growth past the cap returns NULL (Lua then
 * runs an emergency GC, retries and raises LUA_ERRMEM). The counters only
 * move after the C allocator succeeded, so a failed realloc leaves the
 * accounting as it was (the rollback is implicit). Shrinking never fails:
 * Lua assumes it cannot, so on a failed shrink the old block is kept (the
 * pool keeps a spare slab for the one shrink that needs a new block).
 * `used` counts the sizes Lua asked for, not size classes or slabs.
 *
 * Refusals and Lua's retry. Lua (lmem.c, luaM_realloc_ / luaM_malloc_)
 * answers a refused growth with an emergency full collection, during which
 * blocks are only freed or shrunk, and then repeats the very same request
 * once; only if that fails too does it raise. So a first refusal is only
 * pending: the garbage of earlier evaluations may be what is in the way.
 * It becomes an out-of-memory (mem_hit, which a script catching the error
 * with pcall cannot undo) when the retry is refused as well, or when no
 * retry comes: the next growing request has other arguments, or the call
 * ends (lauxlib's buffers call the allocator directly and raise at once).
 */
static int is_pending(const struct sandbox *sb, const void *ptr, size_t osize,
                      size_t nsize)
{
    return sb->pending && sb->ref_ptr == ptr && sb->ref_osize == osize &&
           sb->ref_nsize == nsize;
}

static void *refuse(struct sandbox *sb, const void *ptr, size_t osize,
                    size_t nsize)
{
    if (sb->pending) {
        sb->mem_hit = 1; /* the retry failed too */
        sb->pending = 0;
        return NULL;
    }
    sb->pending = 1;
    sb->ref_ptr = ptr;
    sb->ref_osize = osize;
    sb->ref_nsize = nsize;
    return NULL;
}

static __attribute__((noinline)) void *sb_realloc(struct sandbox *sb, void *ptr,
                                                  size_t osize, size_t nsize)
{
    size_t rawo = osize;

    if (ptr == NULL)
        osize = 0; /* osize then encodes the object type, not a size */
    if (nsize == 0) {
        block_free(sb, ptr, osize);
        sb->used -= osize;
        return NULL;
    }
    if (nsize > osize) {
        if (sb->pending && !is_pending(sb, ptr, rawo, nsize)) {
            sb->mem_hit = 1; /* the refused request was never retried */
            sb->pending = 0;
        }
        if (sb->used > sb->cap || nsize - osize > sb->cap - sb->used)
            return refuse(sb, ptr, rawo, nsize);
    }
    void *np = block_realloc(sb, ptr, osize, nsize);
    if (np == NULL) {
        if (nsize <= osize)
            return ptr;
        return refuse(sb, ptr, rawo, nsize);
    }
    if (nsize > osize)
        sb->pending = 0; /* this was the retry, and it succeeded */
    sb->used = sb->used - osize + nsize;
    if (sb->used > sb->peak)
        sb->peak = sb->used;
    return np;
}

/* Frees from the pool here (half of the calls, and they need none of the
 * checks above); the rest in sb_realloc. */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct sandbox *sb = ud;
    if (nsize == 0 && sb->use_pool) {
        if (ptr != NULL) {
            if (osize <= POOL_MAX)
                pool_put(&sb->pool, ptr, osize);
            else
                free(ptr);
            sb->used -= osize;
        }
        return NULL;
    }
    return sb_realloc(sb, ptr, osize, nsize);
}

/* --- the time budget -------------------------------------------------------
 */

/*
 * The budget's signal: a real-time one, so that it is not SIGALRM (the
 * --script-test watchdog) and queues once per timer. SIGRTMIN is a
 * function call in glibc, hence the macro.
 */
#define TIMER_SIGNAL (SIGRTMIN + 2)

/* Events the timer's signal arms the hook for: the first that comes, also
 * the return of a C function the signal interrupted. */
#define HOOK_ALL (LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT)

/* The innermost sandbox_pcall() of this thread with a timer, or NULL; the
 * signal handler touches no other state. */
static _Thread_local struct sandbox *volatile running;

static pid_t this_thread(void)
{
    static _Thread_local pid_t tid;
    if (tid == 0)
        tid = (pid_t)syscall(SYS_gettid);
    return tid;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * The timer's slack: it is armed for the budget and 1/BUDGET_SLACK more,
 * relative to now, so that arming needs no read of the CPU clock. Reading
 * it (CLOCK_THREAD_CPUTIME_ID) is a system call, and under a hypervisor
 * one cost 1.3 us: five of them and the timer's two were 9 % of an
 * evaluation of the default policy. sandbox_budget_restart re-arms only
 * when the timer fired or the slack may be spent: a call that starts less
 * than the slack of wall time (which bounds CPU time) after the arming
 * has at least its budget left. So each of validate, render and status
 * gets its budget, and at most 1/BUDGET_SLACK more.
 */
#define BUDGET_SLACK 16

static uint64_t budget_ns(const struct sandbox *sb)
{
    return (uint64_t)sb->timeout_ms * 1000000u;
}

/* Arms the timer (see BUDGET_SLACK). Returns 0, or -1 when it cannot (a
 * forked child has no timers): the count hook does then. */
static int timer_arm(struct sandbox *sb)
{
    struct itimerspec its;
    uint64_t ns = budget_ns(sb) + budget_ns(sb) / BUDGET_SLACK;
    memset(&its, 0, sizeof(its));
    its.it_value.tv_sec = (time_t)(ns / 1000000000u);
    its.it_value.tv_nsec = (long)(ns % 1000000000u);
    if (timer_settime(sb->timer, 0, &its, NULL) != 0)
        return -1;
    /* After the call: a signal of the arming it replaced was handled
     * before it returned. */
    sb->fired = 0;
    sb->armed_mono = mono_ns();
    return 0;
}

/* Whether the budget of sb's current call is spent: its timer fired (or,
 * for an outer call's timer, which fires without a trace here: it is no
 * longer armed), or without a timer the deadline passed. */
static int budget_passed(struct sandbox *sb, int outer)
{
    if (!sb->timed)
        return now_ns() >= sb->deadline_ns;
    if (!outer)
        return sb->fired;
    struct itimerspec its;
    return timer_gettime(sb->timer, &its) == 0 && its.it_value.tv_sec == 0 &&
           its.it_value.tv_nsec == 0;
}

static void timer_disarm(struct sandbox *sb)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    timer_settime(sb->timer, 0, &its, NULL);
}

/*
 * Count hook (STYLE rule 20). Before the deadline it only reads the clock;
 * with a timer it was armed early (sandbox_budget_restart moved the
 * deadline, which re-arms nothing), so it takes itself off and re-arms the
 * timer at the new deadline. After the deadline it re-arms itself with a
 * count of 1 so that it fires again on the very next instruction: a script
 * that catches "timeout" with pcall gets it again at once, and so on up to
 * the host's lua_pcall.
 */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct sandbox *sb = from_state(L);
    (void)ar;
    if (!sb->expired) {
        if (!budget_passed(sb, 0)) {
            if (sb->timed) /* a signal of an earlier arming */
                lua_sethook(L, NULL, 0, 0);
            return;
        }
        sb->expired = 1;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    }
    lua_pushliteral(L, "timeout");
    lua_error(L);
}

/*
 * The timer's signal handler: arms the hook on the state whose timer this
 * is, if its call is still running in this thread (a signal that comes
 * after the call, or of a call this one runs inside, does nothing; the
 * pointer is compared, never followed). Only lua_sethook, which is
 * async-signal-safe.
 */
static void timer_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    struct sandbox *sb = running;
    if (sb != NULL && si->si_value.sival_ptr == (void *)sb) {
        sb->fired = 1;
        lua_sethook(sb->L, budget_hook, HOOK_ALL, 1);
    }
}

/* Creates the state's timer (signal to the calling thread), or leaves
 * has_timer 0: the count hook does then. */
static void timer_open(struct sandbox *sb)
{
#ifdef SIGEV_THREAD_ID
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = timer_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(TIMER_SIGNAL, &sa, NULL) != 0)
        return;
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = TIMER_SIGNAL;
    sev.sigev_value.sival_ptr = sb;
    sb->timer_tid = this_thread();
#ifdef sigev_notify_thread_id
    sev.sigev_notify_thread_id = sb->timer_tid;
#else
    sev._sigev_un._tid = sb->timer_tid; /* glibc < 2.41 */
#endif
    sb->has_timer = timer_create(BUDGET_CLOCK, &sev, &sb->timer) == 0;
#else
    (void)sb;
#endif
}

/* Starts the budget of a call (sandbox_pcall): the timer, or the count
 * hook when the state has none, runs in another thread than the one that
 * made it (the signal would go there) or the timer cannot be armed. */
static void budget_start(struct sandbox *sb)
{
    sb->expired = 0;
    sb->timed = sb->has_timer && sb->timer_tid == this_thread();
    if (sb->timed) {
        sb->outer = running;
        running = sb;
        atomic_signal_fence(memory_order_seq_cst);
        if (timer_arm(sb) == 0)
            return;
        running = sb->outer;
        sb->outer = NULL;
        sb->timed = 0;
    }
    sb->deadline_ns = now_ns() + budget_ns(sb);
    lua_sethook(sb->L, budget_hook, LUA_MASKCOUNT, sb->hook_count);
}

/* Ends it: from here a signal of sb's timer does nothing, and none comes
 * after the disarm. An outer call whose deadline passed meanwhile (its
 * signal did nothing) gets its hook now. */
static void budget_stop(struct sandbox *sb)
{
    if (sb->timed) {
        running = sb->outer;
        atomic_signal_fence(memory_order_seq_cst);
        timer_disarm(sb);
        struct sandbox *o = sb->outer;
        sb->outer = NULL;
        if (o != NULL && o != sb && budget_passed(o, 1)) {
            o->fired = 1;
            lua_sethook(o->L, budget_hook, HOOK_ALL, 1);
        }
    }
    lua_sethook(sb->L, NULL, 0, 0);
}

/*
 * Deadline check of long pattern matches (lpattern), which the count hook
 * cannot interrupt: called every LPATTERN_CHECK_INTERVAL steps of a match.
 * Past the deadline it arms the hook like budget_hook (so a pcall cannot
 * swallow it) and raises "timeout".
 */
static int pattern_deadline(lua_State *L, void *ud)
{
    struct sandbox *sb = ud;
    if (!sb->expired && !budget_passed(sb, 0))
        return 0;
    sb->expired = 1;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    lua_pushliteral(L, "timeout");
    return lua_error(L);
}

/* --- the environment -------------------------------------------------------
 */

/* Raises "<where>" .. fmt with the key (argument 2) named, at the
 * script's line. */
static int raise_key(lua_State *L, const char *fmt)
{
    luaL_where(L, 1);
    lua_pushfstring(L, fmt,
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
    lua_concat(L, 2);
    return lua_error(L);
}

/*
 * Global reads: every _ENV is empty and its metatable's __index is the
 * library table itself, so a declared name is found by the VM's own table
 * lookup (no C call: policies read globals in their hot paths). A name the
 * library table lacks falls through to this, its own __index, which
 * raises at the script's line (the VM calls it from the script's frame).
 */
static int env_index(lua_State *L)
{
    return raise_key(L, "attempt to read undeclared global '%s'");
}

/* __newindex of every _ENV: policies keep their state in locals. */
static int env_newindex(lua_State *L)
{
    return raise_key(L, "attempt to assign to undeclared global '%s'");
}

/* __newindex of a frozen library proxy. */
static int frozen_newindex(lua_State *L)
{
    return raise_key(L, "attempt to modify a read-only library (field '%s')");
}

/* Gives the function at `idx` a fresh _ENV (its first upvalue). May raise
 * a memory error. */
static void set_env(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY);
    lua_setmetatable(L, -2);
    if (lua_setupvalue(L, idx, 1) == NULL)
        lua_pop(L, 1);
}

/* Pushes the require cache of the current evaluation, creating it, and
 * returns its index. */
static int push_loaded(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);
    }
    return lua_gettop(L);
}

/*
 * Pushes what starts module `name`: its kept main function (1), asking the
 * loader on first use and keeping a function it returns; or a non-function
 * module value from the loader (2), which is not kept. Returns 0, pushing
 * nothing, for an unknown name.
 */
static int push_main(lua_State *L, struct sandbox *sb, const char *name)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &MAINS_KEY); /* [mains] */
    if (lua_getfield(L, -1, name) != LUA_TNIL) {
        lua_remove(L, -2); /* [main] */
        return 1;
    }
    lua_pop(L, 1);
    if (sb->loader == NULL || sb->loader(L, name, sb->loader_ud) == 0) {
        lua_pop(L, 1);
        return 0;
    }
    int kind = 2;
    if (lua_type(L, -1) == LUA_TFUNCTION) { /* [mains, main] */
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
        kind = 1;
    }
    lua_remove(L, -2);
    return kind;
}

static void keep_record(lua_State *L, const char *name);

void sandbox_require(lua_State *L, const char *name)
{
    struct sandbox *sb = from_state(L);
    if (sb->kept > 0) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &KEPT_KEY);
        if (lua_getfield(L, -1, name) != LUA_TNIL) {
            lua_remove(L, -2); /* [mod] */
            return;
        }
        lua_pop(L, 2);
    }
    int loaded = push_loaded(L);
    int t = lua_getfield(L, loaded, name); /* [loaded, mod] */
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == &LOADING)
        luaL_error(L,
                   "module '%s' is required while it loads (a require "
                   "cycle, or an earlier error loading it)",
                   name);
    if (t != LUA_TNIL) {
        lua_remove(L, loaded);
        return;
    }
    lua_pop(L, 1);
    int kind = push_main(L, sb, name); /* [loaded, main or mod] */
    if (kind == 0)
        luaL_error(L,
                   "module '%s' not found (searched the policy "
                   "directory, the embedded lua/ library and \"codec\")",
                   name);
    if (kind == 1) {
        lua_pushlightuserdata(L, (void *)&LOADING);
        lua_setfield(L, loaded, name);
        if (!lua_iscfunction(L, -1))
            set_env(L, -1);
        lua_pushstring(L, name);
        lua_call(L, 1, 1); /* [loaded, result] */
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 1);
        }
        if (sb->keep_root != NULL && strcmp(name, sb->keep_root) != 0)
            keep_record(L, name);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, loaded, name);
    lua_remove(L, loaded); /* [mod] */
}

void sandbox_preload(lua_State *L, const char *name)
{
    int kind = push_main(L, from_state(L), name);
    if (kind != 1)
        luaL_error(L, "module '%s' %s", name,
                   kind == 0 ? "not found" : "is not a function");
    lua_pop(L, 1);
}

/* require(name): the module of this evaluation (see sandbox_require). */
static int l_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    sandbox_require(L, name);
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

/* type(v) as the base library's, the names from upvalues (LUA_TNIL + 1
 * ...): lua_pushstring of the name cost more than the rest, and policies
 * call type() on every value they look at. */
static int l_type(lua_State *L)
{
    int t = lua_type(L, 1);
    luaL_argcheck(L, t != LUA_TNONE, 1, "value expected");
    lua_pushvalue(L, lua_upvalueindex(t + 1));
    return 1;
}

/* tostring(v) as the base library's, a string returned as it is at once:
 * the string metatable, which the library would search for __tostring,
 * has none, and no script can give it one (getmetatable("") is false;
 * sandbox_end checks it). Policies build keys and messages with it. */
static int l_tostring(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_settop(L, 1);
        return 1;
    }
    luaL_checkany(L, 1);
    luaL_tolstring(L, 1, NULL);
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

/* --- raw views of tables and upvalues -------------------------------------
 */

/*
 * The fast check of shared tables and kept upvalues after every evaluation
 * (shared_intact) compares bytes: a table's array and hash parts, an
 * upvalue's value, as they were when recorded. Through the C API the same
 * check costs a lua_next per entry (a hash lookup of the key it stopped
 * at) and took 12 % of an evaluation of the default policy; comparing
 * the parts field by field costs a small part of that.
 *
 * The layouts are Lua 5.4's own (lraw.h), verified by lraw_views() when
 * a state is made; if they do not hold, sb->raw stays 0 and only the API
 * check runs (as it does under DITTOFS_LUA_RAW=0). Equal fields prove
 * equal contents; different ones prove nothing (the collector marks the
 * key of a removed entry dead, a long string may be an equal copy): then
 * the API check decides, and the recorded bytes are refreshed when it
 * finds the table intact and its parts where they were.
 */

/* Bytes of the parts of table h: array, then nodes. */
static size_t raw_table_bytes(const struct rtable *h)
{
    return lraw_asize(h) * sizeof(struct rtvalue) +
           ((size_t)1 << h->lsizenode) * sizeof(union rnode);
}

static int raw_upval_closed(const struct rupval *u)
{
    return u->v == &u->value;
}

/* Where the value of upvalue n of the function at idx lives, for a raw
 * compare: NULL when there is none (an upvalue still open). */
static const struct rtvalue *raw_upvalue(lua_State *L, int idx, int n)
{
    void *id = lua_upvalueid(L, idx, n);
    if (id == NULL)
        return NULL;
    if (lua_iscfunction(L, idx))
        return id;
    const struct rupval *u = id;
    return raw_upval_closed(u) ? u->v : NULL;
}

/* Whether a tag's value has bits: nil (empty, absent key) and the
 * booleans are the tag alone, and their value_ may never have been
 * written. */
static int raw_has_value(unsigned char tt)
{
    return (tt & 0x0f) > LUA_TBOOLEAN;
}

static int raw_same_tvalue(const struct rtvalue *a, const struct rtvalue *b)
{
    return a->tt_ == b->tt_ &&
           (!raw_has_value(a->tt_) || a->value_.i == b->value_.i);
}

/*
 * A value as the fast check sees it: its type (numbers: integer or float)
 * and its bits (an integer, a float's bit pattern, a boolean, or the
 * address lua_topointer gives: strings, tables, functions, userdata).
 * Two values with the same `struct bits` are the same value, subtype and
 * sign of zero included; the converse fails only for long strings, which
 * are not interned, and NaN (never rawequal). The snapshot table keeps every
 * recorded object alive, so an address cannot be reused by another one.
 */
struct bits {
    uint64_t v;
    int tag;
};
_Static_assert(sizeof(lua_Number) <= sizeof(uint64_t), "lua_Number bits");

static void value_bits(lua_State *L, int idx, struct bits *b)
{
    b->tag = lua_type(L, idx);
    switch (b->tag) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            b->v = (uint64_t)lua_tointeger(L, idx);
        } else {
            lua_Number x = lua_tonumber(L, idx);
            b->tag = LUA_NUMTYPES; /* a float */
            b->v = 0;
            memcpy(&b->v, &x, sizeof(x));
        }
        break;
    case LUA_TBOOLEAN:
        b->v = (uint64_t)lua_toboolean(L, idx);
        break;
    default:
        b->v = (uint64_t)(uintptr_t)lua_topointer(L, idx);
        break;
    }
}

/*
 * Whether the value at idx has the bits b. A string, table, function or
 * userdata recorded is compared by its address alone (one call instead of
 * two: this runs for every entry of every shared table after every
 * evaluation): the snapshot keeps the recorded object alive, so no other
 * object has its address, and the only values with an address that are
 * not objects, light C functions and light userdata, never have a heap
 * object's (scripts get no light userdata but codec.null and the
 * sandbox's sentinels, all static; a light C function recorded is
 * compared with its code address, which only it has).
 */
static int same_bits_slow(lua_State *L, int idx, const struct bits *b)
{
    struct bits now;
    value_bits(L, idx, &now);
    return now.tag == b->tag && now.v == b->v;
}

static inline __attribute__((always_inline)) int
same_bits(lua_State *L, int idx, const struct bits *b)
{
    if (b->tag >= LUA_TSTRING && b->tag <= LUA_TTHREAD)
        return lua_topointer(L, idx) == (const void *)(uintptr_t)b->v;
    return same_bits_slow(L, idx, b);
}

/* The fast check's record of a shared table (snapshot slot 2, and
 * CHECKS_KEY): its metatable's address (NULL: none; the snapshot keeps it
 * alive) and the bits of k1, v1, k2, v2, ...; with raw views, the table,
 * where its parts were, their sizes and (after b[n]) their bytes. */
struct snapbits {
    const void *mt;
    size_t n;
    const struct rtable *h; /* NULL: no raw view */
    const void *array, *node;
    unsigned asize, lsizenode;
    struct bits b[];
};

/* A kept upvalue (UPVALS_KEY) for the fast check: its number, whether its
 * function is the previous record's (the records of one function come
 * together), and its bits; with raw views, where its value lives (NULL:
 * no raw view) and that value as recorded. */
struct upbits {
    int up;
    int same_f;
    struct bits b;
    const struct rtvalue *slot;
    struct rtvalue tv;
};

static unsigned char *raw_bytes(struct snapbits *s)
{
    return (unsigned char *)(s->b + s->n);
}

/* Records where the parts of the table are and their bytes (the space
 * after b[] holds raw_table_bytes(h) as it was at share()). */
static void raw_record(struct snapbits *s, const struct rtable *h)
{
    s->h = h;
    s->array = h->array;
    s->node = h->node;
    s->asize = lraw_asize(h);
    s->lsizenode = h->lsizenode;
    size_t a = s->asize * sizeof(struct rtvalue);
    if (a > 0)
        memcpy(raw_bytes(s), h->array, a);
    memcpy(raw_bytes(s) + a, h->node,
           ((size_t)1 << h->lsizenode) * sizeof(union rnode));
}

/* Whether the table's parts are where, and as large as, recorded. */
static int raw_parts_same(const struct snapbits *s, const struct rtable *h)
{
    return h->array == s->array && h->node == s->node &&
           h->lsizenode == s->lsizenode && lraw_asize(h) == s->asize;
}

/* Whether the table's metatable and parts are where they were, with the
 * same fields (then its contents are those recorded). */
static int raw_intact(struct snapbits *s)
{
    const struct rtable *h = s->h;
    if (h == NULL || h->metatable != s->mt || !raw_parts_same(s, h))
        return 0;
    /* Field by field: the padding of a TValue or a Node, and the value
     * bits of nil and booleans, may never have been written (memcheck
     * rightly objects to deciding on them). */
    const struct rtvalue *a = (const struct rtvalue *)raw_bytes(s);
    for (unsigned i = 0; i < s->asize; i++)
        if (!raw_same_tvalue(&h->array[i], &a[i]))
            return 0;
    const union rnode *n = (const union rnode *)(a + s->asize);
    for (size_t i = 0, nn = (size_t)1 << s->lsizenode; i < nn; i++) {
        const union rnode *x = &h->node[i], *y = &n[i];
        if (x->u.tt_ != y->u.tt_ || x->u.key_tt != y->u.key_tt ||
            x->u.next != y->u.next ||
            (raw_has_value(x->u.tt_) && x->u.value_.i != y->u.value_.i) ||
            (raw_has_value(x->u.key_tt) && x->u.key_val.i != y->u.key_val.i))
            return 0;
    }
    return 1;
}

/* After the API check found the table intact: new bytes for the same
 * parts (a dead key, an equal long string) become the record. */
static void raw_refresh(struct snapbits *s)
{
    if (s->h != NULL && raw_parts_same(s, s->h))
        raw_record(s, s->h);
}

/*
 * Records the table at idx as shared: its metatable and raw contents now
 * are what sandbox_end() expects after every evaluation. The snapshot is
 * {mt or false, bits, k1, v1, k2, v2, ...} in the table's own iteration
 * order, which stays the same as long as the table is not modified; `bits`
 * is a userdata (struct snapbits) holding the metatable's address and the
 * struct bits of k1, v1, k2, ... for the fast check, which finds the
 * table and its bits in CHECKS_KEY. A table recorded before keeps its
 * first snapshot. May raise a memory error.
 */
static void share(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &SHARED_KEY); /* [shared] */
    int shared = lua_gettop(L);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, shared) != LUA_TNIL) {
        lua_pop(L, 2);
        return;
    }
    lua_pop(L, 1);
    lua_newtable(L); /* [shared, snap] */
    int snap = lua_gettop(L);
    if (!lua_getmetatable(L, idx))
        lua_pushboolean(L, 0);
    lua_rawseti(L, snap, 1);
    lua_Integer i = 3;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* [shared, snap, k, v] */
        lua_pushvalue(L, -2);
        lua_rawseti(L, snap, i++);
        lua_rawseti(L, snap, i++); /* [shared, snap, k] */
    }
    size_t n = (size_t)(i - 3);
    const struct rtable *h = from_state(L)->raw ? lua_topointer(L, idx) : NULL;
    struct snapbits *sb = lua_newuserdatauv(
        L, sizeof(*sb) + n * sizeof(sb->b[0]) + (h ? raw_table_bytes(h) : 0),
        0);
    sb->mt = NULL;
    sb->h = NULL;
    if (lua_getmetatable(L, idx)) {
        sb->mt = lua_topointer(L, -1);
        lua_pop(L, 1);
    }
    sb->n = n;
    for (size_t j = 0; j < n; j++) {
        lua_rawgeti(L, snap, (lua_Integer)j + 3);
        value_bits(L, -1, &sb->b[j]);
        lua_pop(L, 1);
    }
    if (h != NULL)
        raw_record(sb, h);
    lua_pushvalue(L, -1);
    lua_rawseti(L, snap, 2); /* [shared, snap, bits] */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CHECKS_KEY);
    lua_Integer c = (lua_Integer)lua_rawlen(L, -1);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, c + 1);
    lua_insert(L, -2); /* [shared, snap, checks, bits] */
    lua_rawseti(L, -2, c + 2);
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_insert(L, -2);     /* [shared, t, snap] */
    lua_rawset(L, shared); /* [shared] */
    lua_pop(L, 1);
}

/*
 * Raw equality that also tells an integer from an equal float and 0.0
 * from -0.0 (rawequal does neither): either would let an evaluation pass
 * a bit to the next one through a value that still compares equal.
 */
static int same_value(lua_State *L, int a, int b)
{
    if (!lua_rawequal(L, a, b))
        return 0;
    if (lua_type(L, a) != LUA_TNUMBER)
        return 1;
    if (lua_isinteger(L, a) != lua_isinteger(L, b))
        return 0;
    if (lua_isinteger(L, a))
        return 1;
    lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
    return memcmp(&x, &y, sizeof(x)) == 0;
}

/* The fast way: each entry of the table at t against the recorded bits,
 * in order. Allocates nothing. */
static int entries_same_bits(lua_State *L, int t, const struct snapbits *s)
{
    const struct bits *b = s->b;
    size_t n = s->n, j = 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) { /* [.., k, v] */
        if (j + 2 > n || !same_bits(L, -2, &b[j]) ||
            !same_bits(L, -1, &b[j + 1])) {
            lua_pop(L, 2);
            return 0;
        }
        j += 2;
        lua_pop(L, 1);
    }
    return j == n;
}

/*
 * The table at t against its snapshot at snap (share()), without the
 * metatable, when its bits differ (a change, or an equal long string at
 * another address): entry by entry with same_value, or the same bits (a
 * NaN that stayed is no change, though never rawequal). Keys need no
 * more than rawequal: a float key with an integral value (-0.0 too) is
 * stored as an integer. Allocates nothing.
 */
static int table_intact(lua_State *L, int t, int snap, const struct snapbits *s)
{
    const struct bits *b = s->b;
    size_t n = s->n;
    lua_Integer i = 3;
    int ok = 1;
    lua_pushnil(L);
    while (ok && lua_next(L, t) != 0) { /* [.., k, v] */
        size_t vb = (size_t)(i - 2);    /* the bits of v0 (a NaN that stayed) */
        lua_rawgeti(L, snap, i++);
        lua_rawgeti(L, snap, i++); /* [.., k, v, k0, v0] */
        ok = lua_rawequal(L, -4, -2) &&
             (same_value(L, -3, -1) || (vb < n && same_bits(L, -3, &b[vb])));
        lua_pop(L, 3);
    }
    if (!ok)
        lua_pop(L, 1); /* the key next stopped at */
    return ok && (lua_Unsigned)i == lua_rawlen(L, snap) + 1;
}

/*
 * Returns 1 when every shared table still has the metatable and the raw
 * contents it was recorded with, in the same order, and every recorded
 * upvalue of a kept module (record_graph) its value. Allocates nothing
 * and never raises; a stack that cannot grow counts as a change (the state
 * is then rebuilt). The tables come from CHECKS_KEY (a sequence: cheaper
 * to walk than SHARED_KEY), their snapshot from SHARED_KEY only when the
 * fast check finds a difference.
 */
static int shared_intact(lua_State *L)
{
    if (!lua_checkstack(L, 12))
        return 0;
    int top = lua_gettop(L);
    int ok = 1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CHECKS_KEY);
    int checks = top + 1, t = top + 2;
    lua_Integer nc = (lua_Integer)lua_rawlen(L, checks);
    for (lua_Integer i = 1; ok && i < nc; i += 2) {
        lua_rawgeti(L, checks, i + 1); /* [checks, bits] */
        struct snapbits *s = lua_touserdata(L, -1);
        lua_pop(L, 1); /* CHECKS_KEY keeps it */
        if (raw_intact(s))
            continue;
        lua_rawgeti(L, checks, i); /* [checks, t] */
        if (lua_getmetatable(L, t)) {
            ok = lua_topointer(L, -1) == s->mt;
            lua_pop(L, 1);
        } else {
            ok = s->mt == NULL;
        }
        if (ok && !entries_same_bits(L, t, s)) {
            lua_rawgetp(L, LUA_REGISTRYINDEX, &SHARED_KEY);
            lua_pushvalue(L, t);
            lua_rawget(L, -2); /* [checks, t, shared, snap] */
            ok = table_intact(L, t, lua_gettop(L), s);
        }
        if (ok)
            raw_refresh(s);
        lua_settop(L, checks);
    }
    lua_settop(L, top);
    if (ok && lua_rawgetp(L, LUA_REGISTRYINDEX, &UPVALS_KEY) == LUA_TTABLE) {
        int ups = top + 1;
        lua_Integer n = (lua_Integer)lua_rawlen(L, ups);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &UPBITS_KEY);
        struct upbits *u = lua_touserdata(L, -1);
        size_t nu = u ? lua_rawlen(L, -1) / sizeof(*u) : 0;
        lua_settop(L, ups); /* the registry keeps it */
        int fast = u != NULL && nu == (size_t)(n / 3);
        int raw = fast;
        for (size_t j = 0; raw && j < nu; j++)
            raw = u[j].slot != NULL && raw_same_tvalue(u[j].slot, &u[j].tv);
        if (raw) {
            lua_settop(L, top);
            return 1;
        }
        for (size_t j = 0; fast && j < nu; j++) {
            if (j == 0 || !u[j].same_f) {
                lua_settop(L, ups);
                lua_rawgeti(L, ups, (lua_Integer)(3 * j + 1)); /* [ups, f] */
            }
            fast = lua_getupvalue(L, ups + 1, u[j].up) != NULL &&
                   same_bits(L, -1, &u[j].b);
            lua_settop(L, ups + 1);
        }
        lua_settop(L, ups);
        /* Bits that differ: entry by entry. */
        for (lua_Integer i = 1; !fast && ok && i + 2 <= n; i += 3) {
            size_t j = (size_t)(i / 3);
            lua_rawgeti(L, ups, i); /* [ups, f] */
            lua_rawgeti(L, ups, i + 1);
            int up = (int)lua_tointeger(L, -1); /* < 0: a number */
            lua_pop(L, 1);
            ok = lua_getupvalue(L, -1, up < 0 ? -up : up) != NULL;
            lua_rawgeti(L, ups, i + 2); /* [ups, f, now, then] */
            ok = ok &&
                 ((up < 0 ? same_value(L, -1, -2) : lua_rawequal(L, -1, -2)) ||
                  (j < nu && same_bits(L, -2, &u[j].b)));
            lua_settop(L, ups);
        }
        for (size_t j = 0; ok && j < nu; j++) /* the raw record follows */
            if (u[j].slot != NULL)
                u[j].tv = *u[j].slot;
    }
    lua_settop(L, top);
    return ok;
}

/* --- kept modules ----------------------------------------------------------
 */

/*
 * Records the graph of the value at the top for shared_intact(), before
 * any evaluation can touch it: every table reachable from it through keys,
 * values, metatables and upvalues (share(): its raw contents and
 * metatable) and every upvalue of every function reached (UPVALS_KEY: the
 * function, the upvalue's number and its value; an upvalue shared by
 * several closures, as a module's locals are, once). Tables shared before
 * (the sandbox's own, the host's protected ones) have their snapshot and
 * are not entered. A full userdata or a thread has state we cannot
 * compare: it raises, and nothing is kept. Leaves the stack as it was.
 */
static void record_graph(lua_State *L, const char *name)
{
    luaL_checkstack(L, 16, "recording a module");
    int v0 = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEEPING_KEY);
    int keeping = lua_gettop(L);
    lua_rawgeti(L, keeping, 1); /* seen: values met */
    lua_rawgeti(L, keeping, 2); /* ids: upvalues met */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &SHARED_KEY);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UPVALS_KEY);
    lua_newtable(L); /* todo, a stack (no C recursion: any depth) */
    int seen = keeping + 1, ids = keeping + 2, shared = keeping + 3,
        ups = keeping + 4, todo = keeping + 5;
    lua_Integer nups = (lua_Integer)lua_rawlen(L, ups), n = 0;
    lua_pushvalue(L, v0);
    lua_rawseti(L, todo, ++n);
    while (n > 0) {
        lua_rawgeti(L, todo, n);
        lua_pushnil(L);
        lua_rawseti(L, todo, n--);
        int v = todo + 1, t = lua_type(L, v);
        if (t != LUA_TTABLE && t != LUA_TFUNCTION && t != LUA_TUSERDATA &&
            t != LUA_TTHREAD) {
            lua_settop(L, todo);
            continue;
        }
        lua_pushvalue(L, v);
        int met = lua_rawget(L, seen) != LUA_TNIL;
        lua_pop(L, 1);
        if (!met && t == LUA_TTABLE) {
            lua_pushvalue(L, v);
            met = lua_rawget(L, shared) != LUA_TNIL;
            lua_pop(L, 1);
        }
        if (met) {
            lua_settop(L, todo);
            continue;
        }
        if (t == LUA_TUSERDATA || t == LUA_TTHREAD)
            luaL_error(L, "module '%s' holds a %s: modules are not kept", name,
                       lua_typename(L, t));
        lua_pushvalue(L, v);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
        if (t == LUA_TTABLE) {
            share(L, v);
            if (lua_getmetatable(L, v))
                lua_rawseti(L, todo, ++n);
            lua_pushnil(L);
            while (lua_next(L, v) != 0) { /* [v, k, x] */
                lua_rawseti(L, todo, ++n);
                lua_pushvalue(L, -1);
                lua_rawseti(L, todo, ++n); /* [v, k] */
            }
        } else {
            for (int i = 1; lua_getupvalue(L, v, i) != NULL; i++) {
                lua_pushlightuserdata(L, lua_upvalueid(L, v, i));
                if (lua_rawget(L, ids) != LUA_TNIL) {
                    lua_pop(L, 2);
                    continue;
                }
                lua_pop(L, 1); /* [v, x] */
                lua_pushlightuserdata(L, lua_upvalueid(L, v, i));
                lua_pushboolean(L, 1);
                lua_rawset(L, ids);
                lua_pushvalue(L, v);
                lua_rawseti(L, ups, ++nups);
                lua_pushinteger(L, lua_type(L, -1) == LUA_TNUMBER ? -i : i);
                lua_rawseti(L, ups, ++nups);
                lua_pushvalue(L, -1);
                lua_rawseti(L, ups, ++nups);
                lua_rawseti(L, todo, ++n); /* [v] */
            }
        }
        lua_settop(L, todo);
    }
    lua_settop(L, v0);
}

/* Called by sandbox_require() during sandbox_keep() when the main chunk
 * of module `name` (not the root) has returned its value (at the top):
 * records it as it is now and the name to keep. */
static void keep_record(lua_State *L, const char *name)
{
    record_graph(L, name);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEEPING_KEY);
    lua_rawgeti(L, -1, 3); /* [value, keeping, names] */
    lua_pushstring(L, name);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 2);
}

/* Protected (stack: [root name]): requires the root once and moves every
 * module whose main chunk completed meanwhile from the require cache to
 * KEPT_KEY, and its main function out of MAINS_KEY (sandbox_end() must
 * not take their _ENV, which their functions share). */
static int keep_main(lua_State *L)
{
    struct sandbox *sb = from_state(L);
    const char *root = lua_touserdata(L, 1);
    lua_createtable(L, 3, 0);
    for (int i = 1; i <= 3; i++) {
        lua_newtable(L);
        lua_rawseti(L, -2, i);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEEPING_KEY);
    sandbox_require(L, root);
    lua_pop(L, 1);

    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEEPING_KEY);
    lua_rawgeti(L, -1, 3);
    int names = lua_gettop(L);
    int loaded = push_loaded(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEPT_KEY);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &MAINS_KEY);
    int kept = loaded + 1, mains = loaded + 2;
    lua_Integer n = (lua_Integer)lua_rawlen(L, names);
    size_t count = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, names, i); /* [.., name] */
        lua_pushvalue(L, -1);
        lua_rawget(L, loaded); /* [.., name, mod] */
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, kept);
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_rawset(L, mains);
        count++;
    }
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEEPING_KEY);
    sb->kept = count;

    /* The bits of the recorded upvalues (as record_graph found them). */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UPVALS_KEY);
    int ups = lua_gettop(L);
    size_t nu = lua_rawlen(L, ups) / 3;
    struct upbits *u = lua_newuserdatauv(L, nu * sizeof(*u), 0);
    for (size_t j = 0; j < nu; j++) {
        lua_rawgeti(L, ups, (lua_Integer)(3 * j + 2));
        int up = (int)lua_tointeger(L, -1);
        u[j].up = up < 0 ? -up : up;
        lua_rawgeti(L, ups, (lua_Integer)(3 * j + 3));
        value_bits(L, -1, &u[j].b);
        lua_rawgeti(L, ups, (lua_Integer)(3 * j + 1));
        /* The raw record is the value now, so only where it is still the
         * one record_graph saw (the root ran since, and may have changed
         * it: then the API check finds that). */
        u[j].slot = NULL;
        const struct rtvalue *slot =
            sb->raw ? raw_upvalue(L, -1, u[j].up) : NULL;
        if (slot != NULL && lua_getupvalue(L, -1, u[j].up) != NULL) {
            if (same_bits(L, -1, &u[j].b)) {
                u[j].slot = slot;
                u[j].tv = *slot;
            }
            lua_pop(L, 1);
        }
        u[j].same_f = 0;
        if (j > 0) {
            lua_rawgeti(L, ups, (lua_Integer)(3 * j - 2));
            u[j].same_f = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
        }
        lua_pop(L, 3);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &UPBITS_KEY);
    return 0;
}

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
    share(L, -1);
    lua_setmetatable(L, -2); /* [real, proxy] */
    share(L, -1);
    lua_remove(L, -2); /* [proxy] */
}

/* Protected: opens the allowed libraries and builds the library table and
 * the _ENV metatable. */
static int setup(lua_State *L)
{
    from_state(L)->raw = lraw_views(L);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SHARED_KEY);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CHECKS_KEY);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &MAINS_KEY);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEPT_KEY);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &UPVALS_KEY);

    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL},
    };
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        if (l->func == luaopen_string)
            lpattern_open(L, -1); /* bounded find/match/gmatch/gsub */
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
    share(L, -1);
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
    for (int t = LUA_TNIL; t < LUA_NUMTYPES; t++)
        lua_pushstring(L, lua_typename(L, t));
    /* type and tostring replace the real ones in _G too, where an error
     * message finds a function's name when the call site has none
     * (pcall(type): "bad argument #1 to 'type'"). */
    lua_pushcclosure(L, l_type, LUA_NUMTYPES);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "type");
    lua_setfield(L, -2, "type");
    lua_pushcfunction(L, l_tostring);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "tostring");
    lua_setfield(L, -2, "tostring");

    lua_createtable(L, 0, 3); /* [lib, libmt] */
    lua_pushcfunction(L, env_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, frozen_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    share(L, -1);
    lua_setmetatable(L, -2);

    lua_createtable(L, 0, 3); /* [lib, envmt] */
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, env_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    share(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY); /* [lib] */
    share(L, -1);
    lua_pop(L, 1);

    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, frozen_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    share(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LOCK_MT_KEY);

    /* The real libraries are out of reach of scripts (only the proxies
     * and the string metatable's __index lead there); recorded anyway, so
     * that a way in we did not foresee is still caught. */
    static const char *const reals[] = {
        LUA_GNAME,       LUA_TABLIBNAME,  LUA_STRLIBNAME,
        LUA_MATHLIBNAME, LUA_UTF8LIBNAME, NULL,
    };
    for (int i = 0; reals[i]; i++) {
        lua_getglobal(L, reals[i]);
        share(L, -1);
        lua_pop(L, 1);
    }
    return 0;
}

/* Forgets refusals and the peak: a new evaluation (or call) starts. */
static void memory_restart(struct sandbox *sb)
{
    sb->mem_hit = 0;
    sb->pending = 0;
    sb->peak = sb->used;
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
    if (!(lim && lim->hook_count > 0))
        timer_open(sb);
    sb->cap = sb->limit;
    const struct sandbox_allocator *a = lim ? lim->alloc : NULL;
    sb->re = a && a->realloc ? a->realloc : realloc;
    sb->fr = a && a->free ? a->free : free;
    sb->use_pool = POOL_ENABLED && a == NULL;
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
    lpattern_set_check(sb->L, pattern_deadline, sb);
    memory_restart(sb);
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
    if (sb->has_timer)
        timer_delete(sb->timer);
    sb->has_timer = 0;
    pool_free(&sb->pool);
    dbuf_free(&sb->trace);
    free(sb);
}

lua_State *sandbox_state(struct sandbox *sb)
{
    return sb->L;
}

void sandbox_seal(struct sandbox *sb)
{
    lua_settop(sb->L, 0);
    lua_gc(sb->L, LUA_GCCOLLECT);
    /* A collection cycle starts when the heap reaches GC_PAUSE % of what
     * the last one left (Lua's default: 200): each cycle marks and sweeps
     * the whole prepared state, which is most of what is live, for the
     * garbage of a few evaluations. 300: ~11k fewer instructions per
     * evaluation of the default policy, ~270 KiB more resident. */
    lua_gc(sb->L, LUA_GCINC, GC_PAUSE, 0, 0);
    sb->base = sb->used;
    sb->cap = sb->limit > SIZE_MAX - sb->base ? SIZE_MAX : sb->base + sb->limit;
    memory_restart(sb);
}

int sandbox_end(struct sandbox *sb)
{
    lua_State *L = sb->L;
    lua_settop(L, 0);
    /* Nothing here allocates: the require cache entry exists if it is
     * set, and upvalues are assigned in place. */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_KEY) != LUA_TNIL) {
        lua_pushnil(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);
    }
    lua_pop(L, 1);
    /* The kept main chunks still point at this evaluation's _ENVs. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &MAINS_KEY); /* [mains] */
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) { /* [mains, name, main] */
        lua_pushnil(L);
        if (lua_setupvalue(L, 3, 1) == NULL)
            lua_pop(L, 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    int intact = shared_intact(L);
    memory_restart(sb);
    /* Garbage is left to the incremental collector, which runs as the next
     * evaluations allocate: a forced step here cost more than it saved. */
    if (sb->pool.bytes > sb->cap)
        return SANDBOX_ERR_TAINTED; /* pooled memory to give back */
    return intact ? SANDBOX_OK : SANDBOX_ERR_TAINTED;
}

/* --- loading ---------------------------------------------------------------
 */

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
    int rc = luaL_loadbufferx(L, a->buf, a->len, a->chunkname, a->mode);
    if (rc != LUA_OK)
        return lua_error(L);
    set_env(L, -1);
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

    sb->mem_hit = 0;
    sb->pending = 0;
    int timed = sb->timed; /* a call of this state this one runs inside */
    budget_start(sb);
    int rc = lua_pcall(L, nargs, nresults, fidx);
    budget_stop(sb);
    int passed = sb->expired || budget_passed(sb, 0);
    sb->timed = timed;
    if (sb->pending)
        sb->mem_hit = 1; /* refused, and the error went to the script */
    lua_remove(L, fidx); /* [results...] or [error] */

    /* Host-side check: a budget overrun counts even when the script caught
     * the error and returned normally. */
    int ret = SANDBOX_OK;
    if (passed) {
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

int sandbox_keep(struct sandbox *sb, const char *name, struct dbuf *err)
{
    sb->keep_root = name;
    int rc = sandbox_cpcall(sb, keep_main, (void *)name, 0, err);
    sb->keep_root = NULL;
    if (rc != SANDBOX_OK) {
        sb->kept = 0;
        return rc;
    }
    rc = sandbox_end(sb);
    if (rc != SANDBOX_OK)
        dbuf_addf(err, "%s changed a module it had loaded", name);
    return rc;
}

size_t sandbox_kept(const struct sandbox *sb)
{
    return sb->kept;
}

int sandbox_raw_views(const struct sandbox *sb)
{
    return sb->raw;
}

void sandbox_protect_table(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &SHARED_KEY);
    lua_pushvalue(L, idx);
    int known = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    if (known)
        return; /* a change since is sandbox_end()'s to find */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOCK_MT_KEY);
    lua_setmetatable(L, idx);
    share(L, idx);
}

/* The timer stays armed at the old deadline: when it fires, budget_hook
 * finds the deadline ahead and re-arms it (no system call here). */
void sandbox_budget_restart(lua_State *L)
{
    struct sandbox *sb = from_state(L);
    if (sb->expired)
        return;
    if (!sb->timed) {
        sb->deadline_ns = now_ns() + budget_ns(sb);
        return;
    }
    /* The timer: kept while the slack cannot be spent (BUDGET_SLACK). */
    if (!sb->fired && mono_ns() - sb->armed_mono < budget_ns(sb) / BUDGET_SLACK)
        return;
    if (timer_arm(sb) == 0) {
        lua_sethook(L, NULL, 0, 0); /* set by a signal of the last arming */
        return;
    }
    /* The count hook from here, as budget_start falls back. */
    running = sb->outer;
    atomic_signal_fence(memory_order_seq_cst);
    sb->outer = NULL;
    sb->timed = 0;
    sb->deadline_ns = now_ns() + budget_ns(sb);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, sb->hook_count);
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

size_t sandbox_memory_baseline(const struct sandbox *sb)
{
    return sb->base;
}

unsigned sandbox_timeout_ms(const struct sandbox *sb)
{
    return sb->timeout_ms;
}

size_t sandbox_memory_limit(const struct sandbox *sb)
{
    return sb->limit;
}
