/*
 * loop: the single-threaded event loop of the operator. One libcurl multi
 * handle carries every HTTP transfer (requests and watches); the loop waits
 * in curl_multi_poll() until a socket is ready, a timer is due, an extra
 * file descriptor is readable, or loop_wakeup() is called, so an idle
 * process uses no CPU. Timers are caller-owned structs kept in a min-heap
 * (no allocation per timer); a zero-delay timer is how work is deferred to
 * run "between I/O events". Timer and fd callbacks never run inside a
 * libcurl callback, so they may start and cancel transfers freely.
 * Uses libcurl, log.
 */
#ifndef DITTOFS_LOOP_H
#define DITTOFS_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

struct loop;

/* --- timers ------------------------------------------------------------ */

struct loop_timer;
typedef void (*loop_timer_fn)(struct loop_timer *t, void *arg);

/*
 * A one-shot timer. Embed it in the owning struct, initialise it once with
 * loop_timer_init(), then start/stop it as often as needed. The loop keeps
 * a pointer to a started timer: stop it before freeing its memory.
 * Fields are private.
 */
struct loop_timer {
    uint64_t due_ms;
    uint64_t seq;
    size_t heap_idx; /* SIZE_MAX when not started */
    loop_timer_fn fn;
    void *arg;
};

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *arg);
/* (Re)starts `t` to fire once after `delay_ms` (0: at the next iteration,
 * after the pending I/O; timers with equal due times fire in start order).
 * Returns 0, or -ENOMEM when the heap cannot grow (the timer is stopped). */
int loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t delay_ms);
/* Stops `t` if started; a no-op otherwise. */
void loop_timer_stop(struct loop *l, struct loop_timer *t);
int loop_timer_active(const struct loop_timer *t);

/* --- transfers --------------------------------------------------------- */

/*
 * Completion hook of one easy handle on the multi handle: put a pointer to
 * a struct loop_xfer in CURLOPT_PRIVATE, then loop_add_easy(). When the
 * transfer ends the loop removes the handle from the multi handle and calls
 * done(x, result) outside any libcurl callback; the callee owns the easy
 * handle again (cleanup or reuse).
 */
struct loop_xfer {
    void (*done)(struct loop_xfer *x, CURLcode result);
};

/* Returns 0 or -EIO (curl_multi_add_handle failed; logged). Must not be
 * called from inside a libcurl callback (use a zero-delay timer). */
int loop_add_easy(struct loop *l, CURL *easy);
/* Removes a running transfer without calling its done hook. Must not be
 * called from inside a libcurl callback. */
void loop_remove_easy(struct loop *l, CURL *easy);
/* The multi handle, for options (CURLMOPT_*). Borrowed. */
CURLM *loop_multi(struct loop *l);

/* --- extra file descriptors -------------------------------------------- */

typedef void (*loop_fd_fn)(int fd, short revents, void *arg);

/* Watches `fd` for `events` (POLLIN/POLLOUT) and calls fn(fd, revents, arg)
 * when ready. Returns 0, -EEXIST if fd is watched already, -ENOMEM. */
int loop_fd_add(struct loop *l, int fd, short events, loop_fd_fn fn, void *arg);
/* Stops watching `fd`; a no-op if it is not watched. */
void loop_fd_del(struct loop *l, int fd);

/* --- running ----------------------------------------------------------- */

/* Returns a new loop, or NULL when out of memory (or curl_multi_init
 * failed). Calls curl_global_init once per process. */
struct loop *loop_new(void);
/* Frees the loop. Transfers still on the multi handle are removed without
 * their done hooks; started timers are forgotten. NULL is a no-op. */
void loop_free(struct loop *l);

/*
 * One iteration: waits for I/O at most `max_wait_ms` (-1: until the next
 * timer or event; 0 when a timer is due), drives libcurl, runs completion
 * hooks and fd callbacks, then the timers that are due. Returns 0, -EIO
 * when libcurl's multi interface failed (logged), or -ENOMEM when more
 * than 8 extra fds are watched and their poll set cannot be allocated.
 */
int loop_run_once(struct loop *l, int max_wait_ms);
/* Runs iterations until loop_stop(). Returns 0 or the first error. */
int loop_run(struct loop *l);
/* Makes loop_run() return after the current iteration. */
void loop_stop(struct loop *l);
/* Wakes a loop blocked in curl_multi_poll(); safe from another thread and
 * (curl writes one byte to a socketpair) from a signal handler. */
void loop_wakeup(struct loop *l);

/* --- the clock ----------------------------------------------------------- */

/*
 * Every duration the core measures or waits for (timers, queue delays and
 * backoff, rate limits, overlay TTLs, watch idle checks, latencies) reads
 * loop_now_us()/loop_now_ms(). By default that is CLOCK_MONOTONIC; a test
 * installs its own clock with loop_set_clock() to drive delays of minutes
 * in no time (for example CLOCK_MONOTONIC plus an offset it advances).
 * Process-wide, since the modules read the clock without a loop at hand;
 * wall-clock times (timestamps written to the API) are not affected.
 */
typedef uint64_t (*loop_clock_fn)(void *arg);

/* Makes fn(arg) the clock, in microseconds; it must never go backwards.
 * fn NULL restores CLOCK_MONOTONIC. Not thread-safe: set it before the
 * loop runs. */
void loop_set_clock(loop_clock_fn fn, void *arg);
/* CLOCK_MONOTONIC in microseconds, whatever clock is installed. */
uint64_t loop_real_us(void);
/* The clock in milliseconds. */
uint64_t loop_now_ms(void);
/* The same in microseconds, for latency measurements. */
uint64_t loop_now_us(void);

#endif
