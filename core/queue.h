/*
 * queue: the work queue of the controller, with client-go workqueue
 * semantics on our single-threaded loop. Keys (strings, "ns/name") are
 * deduplicated while pending, never dispatched twice at once (a key added
 * while in flight is queued again when it is done), dispatched HIGH before
 * LOW and FIFO within a level, at most `workers` at a time, from a
 * zero-delay loop timer. Delayed adds keep only the earliest due time per
 * key; rate-limited adds wait max(per-key exponential backoff, overall
 * token bucket) like controller-runtime's default rate limiter.
 * Uses loop, log.
 */
#ifndef DITTOFS_QUEUE_H
#define DITTOFS_QUEUE_H

#include <stddef.h>
#include <stdint.h>

struct loop;
struct queue;

/* --- types ------------------------------------------------------------- */

struct queue_opts {
    uint64_t base_delay_ms; /* 0: 5    per-key backoff: base * 2^failures */
    uint64_t max_delay_ms;  /* 0: 1000000 (1000 s) cap */
    double qps;             /* 0: 10   overall bucket of rate-limited adds;
                               < 0: no bucket */
    int burst;              /* 0 (or < 0): 100 */
    unsigned workers;       /* 0: 4    keys processed concurrently */
};

enum queue_prio { QUEUE_HIGH = 0, QUEUE_LOW = 1 }; /* LOW: periodic resync */

/*
 * The work function. It is called from a zero-delay loop timer (never
 * inside a libcurl callback, never re-entrantly from queue_add), starts
 * the work (usually asynchronous) and must later call queue_done(q, key)
 * exactly once; calling it before returning is allowed. `key` is borrowed
 * and stays valid until that queue_done(). It may call any queue function
 * except queue_free().
 */
typedef void (*queue_work_fn)(struct queue *q, const char *key, void *arg);

/* Observer for metrics: kind 0 = queue duration (first add -> dispatch),
 * kind 1 = work duration (dispatch -> queue_done), in seconds. */
typedef void (*queue_observe_fn)(int kind, double seconds, void *arg);

struct queue_stats {
    unsigned long adds;    /* adds that made a key pending (not deduped) */
    unsigned long retries; /* queue_add_rate_limited() calls */
};

/* --- lifetime ---------------------------------------------------------- */

/* Returns a new, running (not paused) queue on loop `l` (borrowed; must
 * outlive the queue); `o` may be NULL (all defaults) and is copied. NULL
 * when out of memory. */
struct queue *queue_new(struct loop *l, const struct queue_opts *o,
                        queue_work_fn fn, void *arg);
/* Stops the queue's timers and frees every key, including the ones in
 * flight (their work must not call queue_done afterwards). NULL is a
 * no-op. Not from inside the work function. */
void queue_free(struct queue *q);

/* --- adding ------------------------------------------------------------ */

/*
 * Makes `key` (copied) pending at `prio`. A pending key is not added twice:
 * adding HIGH to a pending LOW key promotes it (to the tail of HIGH); a key
 * in flight is marked dirty and queued again at queue_done(). Returns 0,
 * -EINVAL (key NULL) or -ENOMEM.
 */
int queue_add(struct queue *q, const char *key, enum queue_prio prio);
/*
 * Adds `key` after `delay_ms` (0: at once, as queue_add). A key holds one
 * delayed add at most: the earliest due time wins and it keeps the higher
 * of the two priorities. A delayed add does not affect a pending copy of
 * the key; when due it is a queue_add (deduplicated then). Returns 0,
 * -EINVAL or -ENOMEM.
 */
int queue_add_after(struct queue *q, const char *key, uint64_t delay_ms,
                    enum queue_prio prio);
/*
 * A retry: adds `key` at HIGH after max(per-key backoff, token-bucket
 * delay), then counts one more failure of the key and one retry in the
 * stats. The backoff is base * 2^failures capped at max (5 ms, 10 ms,
 * 20 ms ... 1000 s by default); the bucket (qps, burst) is shared by all
 * keys. The key's failure count is kept (and the key with it) until
 * queue_forget(). Returns 0, -EINVAL or -ENOMEM.
 */
int queue_add_rate_limited(struct queue *q, const char *key);
/* Resets the failure count of `key` (after a successful reconcile, or
 * when its object is gone). Unknown keys are a no-op. */
void queue_forget(struct queue *q, const char *key);
/* The failure count of `key` (0 when unknown). */
unsigned queue_failures(const struct queue *q, const char *key);
/* The per-key backoff the next queue_add_rate_limited(key) would use,
 * without the bucket and without changing anything. */
uint64_t queue_next_backoff_ms(const struct queue *q, const char *key);

/* --- processing -------------------------------------------------------- */

/* Ends the work on `key`: if it was added meanwhile it is queued again.
 * A key that is not in flight is a no-op. */
void queue_done(struct queue *q, const char *key);
/* Stops dispatching (not the leader, shutting down); adds, delayed adds
 * and queue_done() keep working. */
void queue_pause(struct queue *q);
/* Dispatches again (from the next loop iteration). */
void queue_resume(struct queue *q);

/* --- introspection ----------------------------------------------------- */

/* Keys queued for dispatch: not in flight, not waiting on a delay. */
size_t queue_depth(const struct queue *q);
size_t queue_in_flight(const struct queue *q);
/* Keys holding a delayed add (a key may be pending too). */
size_t queue_delayed(const struct queue *q);
/* Keys the queue holds state for (pending, in flight, delayed or with
 * failures); idle keys are freed. */
size_t queue_tracked(const struct queue *q);
void queue_get_stats(const struct queue *q, struct queue_stats *out);
/* Installs (fn NULL: removes) the duration observer. */
void queue_set_observer(struct queue *q, queue_observe_fn fn, void *arg);

#endif
