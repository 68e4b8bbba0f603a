/*
 * lpattern: step-bounded string.find / match / gmatch / gsub. See
 * lpattern.h for the contract.
 *
 * The matcher is a port of the pattern-matching part of lstrlib.c from
 * Lua 5.4 (5.4.4, the version we link): the same algorithm, results and
 * error messages, with three changes:
 * - every entry into match() (including its tail-call loop), every subject
 *   byte scanned by a repetition or by %b, and every ~32 bytes compared by
 *   a back-reference, walked in a long set or copied from a replacement
 *   string is charged to a per-call budget (charge()); past it the call
 *   raises "pattern too complex (step limit)";
 * - a plain find uses memmem (two-way, linear) instead of the memchr +
 *   memcmp loop, which is quadratic on inputs like ("a"):rep(1e6) and
 *   ("a"):rep(5e5) .. "b";
 * - gmatch's iterator resets the recursion counter before each search, so
 *   an error raised in one call does not shrink the depth of the next.
 *
 * Copyright notice of the original (MIT licence):
 *
 * Copyright (C) 1994-2022 Lua.org, PUC-Rio.
 *
 * Permission is hereby granted, free of charge, to any person obtaining
 * a copy of this software and associated documentation files (the
 * "Software"), to deal in the Software without restriction, including
 * without limitation the rights to use, copy, modify, merge, publish,
 * distribute, sublicense, and/or sell copies of the Software, and to
 * permit persons to whom the Software is furnished to do so, subject to
 * the following conditions:
 *
 * The above copyright notice and this permission notice shall be
 * included in all copies or substantial portions of the Software.
 *
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND,
 * EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 * MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 * IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 * CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 * TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 * SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 */
#define _GNU_SOURCE /* memmem */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>

#include "lpattern.h"

/* Limits of lstrlib.c (luaconf.h may override LUA_MAXCAPTURES there; the
 * Debian build does not). */
#ifndef LUA_MAXCAPTURES
#define LUA_MAXCAPTURES 32
#endif
#define MAXCCALLS 200

#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)

#define L_ESC '%'
#define SPECIALS "^$*+?.([%-"

#define uchar(c) ((unsigned char)(c))

/* Bytes per step for work done by memcmp / memchr / buffer copies, and for
 * walking a set byte by byte (classend, matchbracketclass). */
#define BYTES_PER_STEP 32
#define SET_BYTES_PER_STEP 8

/* Per-state configuration: a full userdata kept in the registry. */
struct lpattern_config {
    uint64_t budget;
    lpattern_check_fn check;
    void *check_ud;
    uint64_t last_steps;
    /* the innermost gsub running its own code or calling out (see
     * enclosing()); may be stale after an error, never read then */
    struct match_state *nest;
};

/* Registry key (its address is the key). */
static const char CONFIG_KEY = 'p';

/* One call's matching state (lstrlib's MatchState plus the budget). The
 * captures point into the subject, which the caller keeps on its stack. */
struct match_state {
    const char *src_init; /* start of the subject */
    const char *src_end;  /* end ('\0') of the subject */
    const char *p_end;    /* end ('\0') of the pattern */
    lua_State *L;
    int matchdepth;      /* recursion left (to avoid C stack overflow) */
    unsigned char level; /* captures, finished or unfinished */
    /* the step budget: `left` in the current slice (hot path), then
     * `remaining` not yet handed out in slices */
    int64_t left;
    uint64_t remaining;
    struct lpattern_config *cfg;
    struct match_state *outer; /* whose budget this call spends, or NULL */
    struct {
        const char *init;
        ptrdiff_t len;
    } capture[LUA_MAXCAPTURES];
};

/* --- the step budget ------------------------------------------------------ */

static struct lpattern_config *get_config(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CONFIG_KEY);
    struct lpattern_config *cfg = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return cfg;
}

/* Steps used so far by this call. */
static uint64_t steps_used(const struct match_state *ms)
{
    return ms->cfg->budget - ms->remaining - (uint64_t)ms->left;
}

static int l_gsub(lua_State *L);

/*
 * The gsub whose budget a call must spend: the one that called it directly
 * as its replacement function or __index metamethod (e.g.
 * s:gsub("(a+),(.-);", string.find), or a gmatch iterator), or NULL.
 * Without this, one gsub could run a full budget per match with no Lua
 * instruction (and so no count hook) in between. A gsub sets cfg->nest to
 * itself before every callout, so when the caller is a gsub, cfg->nest is
 * that gsub (a stale value is only left behind by an error, and is
 * replaced before any gsub calls out again).
 */
static struct match_state *enclosing(lua_State *L, struct lpattern_config *cfg)
{
    lua_Debug ar;
    if (cfg->nest == NULL || lua_getstack(L, 1, &ar) == 0)
        return NULL;
    lua_getinfo(L, "f", &ar); /* [caller] */
    int direct = lua_tocfunction(L, -1) == l_gsub;
    lua_pop(L, 1);
    return direct ? cfg->nest : NULL;
}

/* A call starts: takes the budget of the enclosing gsub, or a fresh one. */
static void budget_start(struct match_state *ms)
{
    ms->outer = enclosing(ms->L, ms->cfg);
    if (ms->outer != NULL) {
        ms->left = ms->outer->left;
        ms->remaining = ms->outer->remaining;
        return;
    }
    uint64_t slice = ms->cfg->budget < LPATTERN_CHECK_INTERVAL
                         ? ms->cfg->budget
                         : LPATTERN_CHECK_INTERVAL;
    ms->left = (int64_t)slice;
    ms->remaining = ms->cfg->budget - slice;
}

/* A call ends: hands what is left back to the enclosing gsub, records the
 * steps used (for a nested call, the enclosing gsub's so far). */
static void budget_end(struct match_state *ms)
{
    if (ms->outer != NULL) {
        ms->outer->left = ms->left;
        ms->outer->remaining = ms->remaining;
    }
    ms->cfg->last_steps = steps_used(ms);
}

/*
 * The slow path of charge(): the slice ran out. Asks the check callback,
 * then hands out the next slice, or raises when the budget is spent.
 */
static void refill(struct match_state *ms)
{
    struct lpattern_config *cfg = ms->cfg;
    if (cfg->check != NULL && cfg->check(ms->L, cfg->check_ud) != 0) {
        cfg->last_steps = steps_used(ms);
        luaL_error(ms->L, "pattern too complex (time limit)");
    }
    while (ms->left < 0) {
        if (ms->remaining == 0) {
            cfg->last_steps = cfg->budget;
            luaL_error(ms->L, "pattern too complex (step limit)");
        }
        uint64_t slice = ms->remaining < LPATTERN_CHECK_INTERVAL
                             ? ms->remaining
                             : LPATTERN_CHECK_INTERVAL;
        ms->remaining -= slice;
        ms->left += (int64_t)slice;
    }
}

/* Charges `n` steps; may raise (see refill). */
static inline void charge(struct match_state *ms, size_t n)
{
    ms->left -= (int64_t)n;
    if (ms->left < 0)
        refill(ms);
}

/* --- the matcher (lstrlib.c) ---------------------------------------------- */

static const char *match(struct match_state *ms, const char *s, const char *p);

static int check_capture(struct match_state *ms, int l)
{
    l -= '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
        return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    return l;
}

static int capture_to_close(struct match_state *ms)
{
    int level = ms->level;
    for (level--; level >= 0; level--)
        if (ms->capture[level].len == CAP_UNFINISHED)
            return level;
    return luaL_error(ms->L, "invalid pattern capture");
}

/* Returns the end of the single-character class at `p`. */
static const char *classend(struct match_state *ms, const char *p)
{
    const char *start = p;
    switch (*p++) {
    case L_ESC:
        if (p == ms->p_end)
            luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return p + 1;
    case '[':
        if (*p == '^')
            p++;
        do { /* look for a ']' */
            if (p == ms->p_end)
                luaL_error(ms->L, "malformed pattern (missing ']')");
            if (*(p++) == L_ESC && p < ms->p_end)
                p++; /* skip escapes (e.g. '%]') */
        } while (*p != ']');
        /* a set of a million items must not cost one step per use */
        charge(ms, (size_t)(p - start) / SET_BYTES_PER_STEP);
        return p + 1;
    default:
        return p;
    }
}

static int match_class(int c, int cl)
{
    int res;
    switch (tolower(cl)) {
    case 'a':
        res = isalpha(c);
        break;
    case 'c':
        res = iscntrl(c);
        break;
    case 'd':
        res = isdigit(c);
        break;
    case 'g':
        res = isgraph(c);
        break;
    case 'l':
        res = islower(c);
        break;
    case 'p':
        res = ispunct(c);
        break;
    case 's':
        res = isspace(c);
        break;
    case 'u':
        res = isupper(c);
        break;
    case 'w':
        res = isalnum(c);
        break;
    case 'x':
        res = isxdigit(c);
        break;
    case 'z': /* deprecated option */
        res = (c == 0);
        break;
    default:
        return (cl == c);
    }
    return (islower(cl) ? res : !res);
}

/* `p` is the '[' of a set, `ec` its closing ']'. Charged by the caller. */
static int matchbracketclass(int c, const char *p, const char *ec)
{
    int sig = 1;
    if (*(p + 1) == '^') {
        sig = 0;
        p++; /* skip the '^' */
    }
    while (++p < ec) {
        if (*p == L_ESC) {
            p++;
            if (match_class(c, uchar(*p)))
                return sig;
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            p += 2;
            if (uchar(*(p - 2)) <= c && c <= uchar(*p))
                return sig;
        } else if (uchar(*p) == c) {
            return sig;
        }
    }
    return !sig;
}

static int singlematch(struct match_state *ms, const char *s, const char *p,
                       const char *ep)
{
    if (s >= ms->src_end)
        return 0;
    int c = uchar(*s);
    switch (*p) {
    case '.':
        return 1; /* matches any char */
    case L_ESC:
        return match_class(c, uchar(*(p + 1)));
    case '[':
        charge(ms, (size_t)(ep - p) / SET_BYTES_PER_STEP);
        return matchbracketclass(c, p, ep - 1);
    default:
        return (uchar(*p) == c);
    }
}

/*
 * %bxy at `s`: the end of the balanced x...y string, or NULL. One step per
 * byte scanned: tried at every start of "((((...", the scans add up to a
 * quadratic amount of work.
 */
static const char *matchbalance(struct match_state *ms, const char *s,
                                const char *p)
{
    if (p >= ms->p_end - 1)
        luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    if (*s != *p)
        return NULL;
    int b = *p;
    int e = *(p + 1);
    int cont = 1;
    while (++s < ms->src_end) {
        charge(ms, 1);
        if (*s == e) {
            if (--cont == 0)
                return s + 1;
        } else if (*s == b) {
            cont++;
        }
    }
    return NULL; /* string ends out of balance */
}

/*
 * Greedy repetition (* and +): scans as far as the item matches, one step
 * per byte, then backs off one byte at a time until the rest matches. Each
 * back-off is a match() call, charged there: nested repetitions
 * (".-.-.-b", "a*a*a*b") are where the polynomial blow-up comes from.
 */
static const char *max_expand(struct match_state *ms, const char *s,
                              const char *p, const char *ep)
{
    ptrdiff_t i = 0; /* counts maximum expand for item */
    while (singlematch(ms, s + i, p, ep)) {
        charge(ms, 1);
        i++;
    }
    /* keeps trying to match with the maximum repetitions */
    while (i >= 0) {
        const char *res = match(ms, s + i, ep + 1);
        if (res != NULL)
            return res;
        i--; /* else didn't match; reduce 1 repetition to try again */
    }
    return NULL;
}

/* Lazy repetition (-): tries the rest first, then one more item. */
static const char *min_expand(struct match_state *ms, const char *s,
                              const char *p, const char *ep)
{
    for (;;) {
        const char *res = match(ms, s, ep + 1);
        if (res != NULL)
            return res;
        if (singlematch(ms, s, p, ep))
            s++; /* try with one more repetition */
        else
            return NULL;
    }
}

static const char *start_capture(struct match_state *ms, const char *s,
                                 const char *p, int what)
{
    int level = ms->level;
    if (level >= LUA_MAXCAPTURES)
        luaL_error(ms->L, "too many captures");
    ms->capture[level].init = s;
    ms->capture[level].len = what;
    ms->level = (unsigned char)(level + 1);
    const char *res = match(ms, s, p);
    if (res == NULL)
        ms->level--; /* undo capture */
    return res;
}

static const char *end_capture(struct match_state *ms, const char *s,
                               const char *p)
{
    int l = capture_to_close(ms);
    ms->capture[l].len = s - ms->capture[l].init; /* close capture */
    const char *res = match(ms, s, p);
    if (res == NULL)
        ms->capture[l].len = CAP_UNFINISHED; /* undo capture */
    return res;
}

static const char *match_capture(struct match_state *ms, const char *s, int l)
{
    l = check_capture(ms, l);
    size_t len = (size_t)ms->capture[l].len; /* huge for a position */
    if ((size_t)(ms->src_end - s) < len)
        return NULL;
    charge(ms, len / BYTES_PER_STEP);
    if (memcmp(ms->capture[l].init, s, len) == 0)
        return s + len;
    return NULL;
}

/*
 * The core: matches pattern `p` at subject position `s`; returns the end of
 * the match or NULL. Tail calls are a loop (goto init), each round charged.
 */
static const char *match(struct match_state *ms, const char *s, const char *p)
{
    if (ms->matchdepth-- == 0)
        luaL_error(ms->L, "pattern too complex");
init:
    charge(ms, 1);
    if (p != ms->p_end) { /* end of pattern? */
        switch (*p) {
        case '(':                /* start capture */
            if (*(p + 1) == ')') /* position capture? */
                s = start_capture(ms, s, p + 2, CAP_POSITION);
            else
                s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
            break;
        case ')': /* end capture */
            s = end_capture(ms, s, p + 1);
            break;
        case '$':
            if ((p + 1) != ms->p_end) /* is the '$' the last char? */
                goto dflt;
            s = (s == ms->src_end) ? s : NULL; /* check end of string */
            break;
        case L_ESC: /* escaped sequences not in the format class[*+?-]? */
            switch (*(p + 1)) {
            case 'b': /* balanced string? */
                s = matchbalance(ms, s, p + 2);
                if (s != NULL) {
                    p += 4;
                    goto init; /* return match(ms, s, p + 4); */
                }
                break;  /* else fail (s == NULL) */
            case 'f': { /* frontier? */
                p += 2;
                if (*p != '[')
                    luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                const char *ep = classend(ms, p); /* points to what is next */
                char previous = (s == ms->src_init) ? '\0' : *(s - 1);
                charge(ms, 2 * (size_t)(ep - p) / SET_BYTES_PER_STEP);
                if (!matchbracketclass(uchar(previous), p, ep - 1) &&
                    matchbracketclass(uchar(*s), p, ep - 1)) {
                    p = ep;
                    goto init; /* return match(ms, s, ep); */
                }
                s = NULL; /* match failed */
                break;
            }
            case '0':
            case '1':
            case '2':
            case '3':
            case '4':
            case '5':
            case '6':
            case '7':
            case '8':
            case '9': /* capture results (%0-%9)? */
                s = match_capture(ms, s, uchar(*(p + 1)));
                if (s != NULL) {
                    p += 2;
                    goto init; /* return match(ms, s, p + 2) */
                }
                break;
            default:
                goto dflt;
            }
            break;
        default:
        dflt : { /* pattern class plus optional suffix */
            const char *ep = classend(ms, p); /* points to optional suffix */
            /* does not match at least once? */
            if (!singlematch(ms, s, p, ep)) {
                if (*ep == '*' || *ep == '?' || *ep == '-') {
                    p = ep + 1; /* accept empty */
                    goto init;  /* return match(ms, s, ep + 1); */
                }
                s = NULL; /* '+' or no suffix: fail */
                break;
            }
            switch (*ep) { /* matched once; handle optional suffix */
            case '?': {    /* optional */
                const char *res = match(ms, s + 1, ep + 1);
                if (res != NULL) {
                    s = res;
                } else {
                    p = ep + 1;
                    goto init; /* else return match(ms, s, ep + 1); */
                }
                break;
            }
            case '+': /* 1 or more repetitions */
                s++;  /* 1 match already done */
                /* FALLTHROUGH */
            case '*': /* 0 or more repetitions */
                s = max_expand(ms, s, p, ep);
                break;
            case '-': /* 0 or more repetitions (minimum) */
                s = min_expand(ms, s, p, ep);
                break;
            default: /* no suffix */
                s++;
                p = ep;
                goto init; /* return match(ms, s + 1, ep); */
            }
            break;
        }
        }
    }
    ms->matchdepth++;
    return s;
}

/* --- captures ------------------------------------------------------------- */

/*
 * Information about the i-th capture. Without captures, i == 0 means the
 * whole match s..e. A string capture returns its length and sets `*cap`; a
 * position capture is pushed and CAP_POSITION returned.
 */
static ptrdiff_t get_onecapture(struct match_state *ms, int i, const char *s,
                                const char *e, const char **cap)
{
    if (i >= ms->level) {
        if (i != 0)
            luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        *cap = s;
        return e - s;
    }
    ptrdiff_t capl = ms->capture[i].len;
    *cap = ms->capture[i].init;
    if (capl == CAP_UNFINISHED)
        luaL_error(ms->L, "unfinished capture");
    else if (capl == CAP_POSITION)
        lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
    return capl;
}

static void push_onecapture(struct match_state *ms, int i, const char *s,
                            const char *e)
{
    const char *cap;
    ptrdiff_t l = get_onecapture(ms, i, s, e, &cap);
    if (l != CAP_POSITION)
        lua_pushlstring(ms->L, cap, (size_t)l);
    /* else position was already pushed */
}

static int push_captures(struct match_state *ms, const char *s, const char *e)
{
    int nlevels = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, nlevels, "too many captures");
    for (int i = 0; i < nlevels; i++)
        push_onecapture(ms, i, s, e);
    return nlevels; /* number of strings pushed */
}

/* --- find, match, gmatch, gsub -------------------------------------------- */

/* Translates a relative initial position (negative means back from the
 * end); clips the result to [1, inf). */
static size_t posrelat_i(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0)
        return 1;
    if (pos < -(lua_Integer)len) /* inverted comparison: no overflow */
        return 1;
    return len + (size_t)pos + 1;
}

/* Whether the pattern has no special characters (it may hold '\0'). */
static int nospecials(const char *p, size_t l)
{
    size_t upto = 0;
    do {
        if (strpbrk(p + upto, SPECIALS))
            return 0;
        upto += strlen(p + upto) + 1; /* may have more after \0 */
    } while (upto <= l);
    return 1;
}

static void prepstate(struct match_state *ms, lua_State *L, const char *s,
                      size_t ls, const char *p, size_t lp)
{
    ms->L = L;
    ms->matchdepth = MAXCCALLS;
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
    ms->cfg = get_config(L);
    if (ms->cfg == NULL)
        luaL_error(L, "lpattern: not opened on this state");
}

static void reprepstate(struct match_state *ms)
{
    ms->level = 0;
    ms->matchdepth = MAXCCALLS;
}

static int str_find_aux(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelat_i(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) { /* start after string's end? */
        luaL_pushfail(L);
        return 1;
    }
    /* explicit request or no special characters? */
    if (find && (lua_toboolean(L, 4) || nospecials(p, lp))) {
        /* memmem is linear; lstrlib's memchr + memcmp loop is not */
        const char *s2 =
            lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
        if (s2 != NULL) {
            lua_pushinteger(L, (s2 - s) + 1);
            lua_pushinteger(L, (lua_Integer)((size_t)(s2 - s) + lp));
            return 2;
        }
    } else {
        struct match_state ms;
        const char *s1 = s + init;
        int anchor = (*p == '^');
        if (anchor) {
            p++;
            lp--; /* skip anchor character */
        }
        prepstate(&ms, L, s, ls, p, lp);
        budget_start(&ms); /* one budget for every start position */
        do {
            reprepstate(&ms);
            const char *res = match(&ms, s1, p);
            if (res != NULL) {
                budget_end(&ms);
                if (find) {
                    lua_pushinteger(L, (s1 - s) + 1); /* start */
                    lua_pushinteger(L, res - s);      /* end */
                    return push_captures(&ms, NULL, 0) + 2;
                }
                return push_captures(&ms, s1, res);
            }
        } while (s1++ < ms.src_end && !anchor);
        budget_end(&ms);
    }
    luaL_pushfail(L); /* not found */
    return 1;
}

/* string.find(s, pattern [, init [, plain]]); raises on a bad pattern and
 * past the step budget. */
static int l_find(lua_State *L)
{
    return str_find_aux(L, 1);
}

/* string.match(s, pattern [, init]); raises like l_find. */
static int l_match(lua_State *L)
{
    return str_find_aux(L, 0);
}

/* State of one gmatch iterator (a userdata upvalue). */
struct gmatch_state {
    const char *src;       /* current position */
    const char *p;         /* pattern */
    const char *lastmatch; /* end of last match */
    struct match_state ms;
};

/* The gmatch iterator; each call has its own step budget. */
static int gmatch_aux(lua_State *L)
{
    struct gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));
    gm->ms.L = L;
    gm->ms.cfg = get_config(L);
    if (gm->ms.cfg == NULL)
        return luaL_error(L, "lpattern: not opened on this state");
    budget_start(&gm->ms);
    for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
        reprepstate(&gm->ms);
        const char *e = match(&gm->ms, src, gm->p);
        if (e != NULL && e != gm->lastmatch) {
            gm->src = gm->lastmatch = e;
            budget_end(&gm->ms);
            return push_captures(&gm->ms, src, e);
        }
    }
    budget_end(&gm->ms);
    return 0; /* not found */
}

/* string.gmatch(s, pattern [, init]); the iterator raises like l_find. */
static int l_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelat_i(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2); /* keep strings on closure to avoid being collected */
    struct gmatch_state *gm = lua_newuserdatauv(L, sizeof(*gm), 0);
    if (init > ls)     /* start after string's end? */
        init = ls + 1; /* avoid overflows in 's + init' */
    prepstate(&gm->ms, L, s, ls, p, lp);
    gm->src = s + init;
    gm->p = p;
    gm->lastmatch = NULL;
    lua_pushcclosure(L, gmatch_aux, 3); /* [s, p, gm] as upvalues */
    return 1;
}

/* Appends the replacement string (argument 3) with its %0-%9 and %%. */
static void add_s(struct match_state *ms, luaL_Buffer *b, const char *s,
                  const char *e)
{
    size_t l;
    lua_State *L = ms->L;
    const char *news = lua_tolstring(L, 3, &l);
    const char *p;
    /* copying the replacement is work too: ("%1"):rep(1e6) on empty
     * captures produces nothing but costs a lot */
    charge(ms, 1 + l / BYTES_PER_STEP);
    while ((p = memchr(news, L_ESC, l)) != NULL) {
        charge(ms, 1);
        luaL_addlstring(b, news, (size_t)(p - news));
        p++;             /* skip ESC */
        if (*p == L_ESC) /* '%%' */
            luaL_addchar(b, *p);
        else if (*p == '0') /* '%0' */
            luaL_addlstring(b, s, (size_t)(e - s));
        else if (isdigit(uchar(*p))) { /* '%n' */
            const char *cap;
            ptrdiff_t resl = get_onecapture(ms, *p - '1', s, e, &cap);
            if (resl == CAP_POSITION)
                luaL_addvalue(b); /* add position to accumulated result */
            else
                luaL_addlstring(b, cap, (size_t)resl);
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", L_ESC);
        }
        l -= (size_t)(p + 1 - news);
        news = p + 1;
    }
    luaL_addlstring(b, news, l);
}

/*
 * Adds the replacement value to `b`. Returns true if the original string was
 * changed (function calls and table lookups giving nil or false do not).
 */
static int add_value(struct match_state *ms, luaL_Buffer *b, const char *s,
                     const char *e, int tr)
{
    lua_State *L = ms->L;
    switch (tr) {
    case LUA_TFUNCTION: {
        lua_pushvalue(L, 3);
        int n = push_captures(ms, s, e); /* all captures as arguments */
        ms->cfg->nest = ms;
        lua_call(L, n, 1);
        ms->cfg->nest = ms; /* an error caught in the callee left it stale */
        break;
    }
    case LUA_TTABLE:
        push_onecapture(ms, 0, s, e); /* first capture is the index */
        ms->cfg->nest = ms;           /* __index may be a C function */
        lua_gettable(L, 3);
        ms->cfg->nest = ms;
        break;
    default: /* LUA_TNUMBER or LUA_TSTRING */
        add_s(ms, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) { /* nil or false? */
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s)); /* keep original text */
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)",
                          luaL_typename(L, -1));
    luaL_addvalue(b); /* add result to accumulator */
    return 1;
}

/* string.gsub(s, pattern, repl [, n]); raises like l_find, on a bad
 * replacement and on whatever a replacement function raises. */
static int l_gsub(lua_State *L)
{
    size_t srcl, lp;
    const char *src = luaL_checklstring(L, 1, &srcl);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *lastmatch = NULL; /* end of last match */
    int tr = lua_type(L, 3);      /* replacement type */
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
    int anchor = (*p == '^');
    lua_Integer n = 0;
    int changed = 0;
    struct match_state ms;
    luaL_Buffer b;
    luaL_argexpected(L,
                     tr == LUA_TNUMBER || tr == LUA_TSTRING ||
                         tr == LUA_TFUNCTION || tr == LUA_TTABLE,
                     3, "string/function/table");
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--; /* skip anchor character */
    }
    prepstate(&ms, L, src, srcl, p, lp);
    budget_start(&ms);
    struct match_state *prev_nest = ms.cfg->nest;
    ms.cfg->nest = &ms;
    /* An empty match right where the previous match ended is not taken
     * again (e != lastmatch): "abc":gsub("x*", "-") is "-a-b-c-". */
    while (n < max_s) {
        reprepstate(&ms);
        const char *e = match(&ms, src, p);
        if (e != NULL && e != lastmatch) { /* match? */
            n++;
            changed = add_value(&ms, &b, src, e, tr) | changed;
            src = lastmatch = e;
        } else if (src < ms.src_end) { /* otherwise, skip one character */
            luaL_addchar(&b, *src++);
        } else {
            break; /* end of subject */
        }
        if (anchor)
            break;
    }
    budget_end(&ms);
    ms.cfg->nest = prev_nest;
    if (!changed) {
        lua_pushvalue(L, 1); /* return original string */
    } else {
        luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n); /* number of substitutions */
    return 2;
}

/* --- setup ---------------------------------------------------------------- */

int lpattern_open(lua_State *L, int string_table_idx)
{
    static const luaL_Reg funcs[] = {
        {"find", l_find}, {"match", l_match}, {"gmatch", l_gmatch},
        {"gsub", l_gsub}, {NULL, NULL},
    };
    int t = lua_absindex(L, string_table_idx);
    if (get_config(L) == NULL) {
        struct lpattern_config *cfg = lua_newuserdatauv(L, sizeof(*cfg), 0);
        cfg->budget = LPATTERN_DEFAULT_BUDGET;
        cfg->check = NULL;
        cfg->check_ud = NULL;
        cfg->last_steps = 0;
        cfg->nest = NULL;
        lua_rawsetp(L, LUA_REGISTRYINDEX, &CONFIG_KEY);
    }
    for (const luaL_Reg *f = funcs; f->name != NULL; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, t, f->name);
    }
    return 0;
}

int lpattern_set_budget(lua_State *L, uint64_t steps)
{
    struct lpattern_config *cfg = get_config(L);
    if (cfg == NULL)
        return -1;
    cfg->budget = steps ? steps : LPATTERN_DEFAULT_BUDGET;
    return 0;
}

int lpattern_set_check(lua_State *L, lpattern_check_fn fn, void *ud)
{
    struct lpattern_config *cfg = get_config(L);
    if (cfg == NULL)
        return -1;
    cfg->check = fn;
    cfg->check_ud = ud;
    return 0;
}

uint64_t lpattern_last_steps(lua_State *L)
{
    struct lpattern_config *cfg = get_config(L);
    return cfg ? cfg->last_steps : 0;
}
