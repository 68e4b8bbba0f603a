/*
 * leader: leader election on a coordination.k8s.io/v1 Lease with
 * client-go's leaderelection semantics. A candidate GETs the Lease, creates
 * it when missing, and takes it over when it is free (empty holder) or
 * expired; the leader renews it every retry period with resourceVersion
 * preconditions (409: someone else won, retry later). Expiry is judged on
 * the local monotonic clock from when this elector last saw the record
 * change, never by comparing remote timestamps. A leader that has not
 * renewed for renew_deadline stops leading at once, from a timer, even
 * while a request hangs. Uses http, loop, kinds, dbuf, log, cJSON.
 */
#ifndef DITTOFS_LEADER_H
#define DITTOFS_LEADER_H

#include <stdint.h>

#include "http.h"

struct leader;

struct leader_opts {
    const char *namespace;      /* the Lease's namespace; required */
    const char *name;           /* the Lease's name; required */
    const char *identity;       /* holderIdentity of this replica; required */
    uint64_t lease_ms;          /* 0: 15000 (leaseDurationSeconds, whole s) */
    uint64_t renew_deadline_ms; /* 0: 10000 */
    uint64_t retry_ms;          /* 0: 2000 */
};

/*
 * Called with leading 1 when this replica becomes the leader and 0 when it
 * stops (renew deadline passed, or another holder observed). Always called
 * from the loop (a timer or a request completion), never from within a
 * leader_* call. It may call leader_release() or leader_free().
 */
typedef void (*leader_fn)(struct leader *le, int leading, void *arg);

/* --- lifecycle --------------------------------------------------------- */

/*
 * A new elector using `h` (borrowed: it must outlive the elector; give the
 * elector its own client so that the controller's requests cannot starve
 * the renewals through the shared client-side rate limit). The strings of
 * `o` are copied. Returns NULL only when out of memory.
 */
struct leader *leader_new(struct http_client *h, const struct leader_opts *o,
                          leader_fn fn, void *arg);

/*
 * Starts campaigning (the first attempt runs at the next loop iteration).
 * Timing: one request at a time, each with a total timeout of retry_ms
 * (at least 1 s, at most renew_deadline_ms / 2); the leader renews
 * retry_ms after the previous attempt ended; a candidate waits a uniform
 * [retry_ms, 1.2 * retry_ms], or less when the observed lease expires
 * sooner. The renew deadline counts from when the last successful write
 * was sent.
 * After losing the lease the elector stays a candidate and may lead again.
 * Returns 0; -EINVAL when a required option is missing, the namespace or
 * name cannot stand in the Lease's API path (kinds_path), or the durations
 * break client-go's rule lease > renew_deadline > 1.2 * retry; -EALREADY
 * when started already or released; -ENOMEM.
 */
int leader_start(struct leader *le);

/* 1 while leading, else 0. */
int leader_is_leader(const struct leader *le);

/*
 * Stops campaigning and renewing. When leading, it ends leading at once
 * (leader_is_leader() returns 0 on return; `fn` is NOT called for this: the
 * caller knows) and writes holderIdentity "" and leaseDurationSeconds 1
 * (client-go's ReleaseOnCancel) so a standby takes over within about one
 * retry period. `done(arg)` (may be NULL) is then called from the loop
 * when the write finished (success or failure) or after `timeout_ms`
 * (0: 5000), whichever comes first; when not leading it is called at the
 * next loop iteration. Call the caller's own work to a stop first: after
 * the release a standby may start at once. A second call is ignored.
 */
void leader_release(struct leader *le, uint64_t timeout_ms,
                    void (*done)(void *arg), void *arg);

/* Frees the elector: cancels its request and timers without releasing the
 * lease or calling any callback. NULL is a no-op. */
void leader_free(struct leader *le);

/* --- introspection (logs, metrics, tests) ------------------------------ */

/* The holderIdentity last observed ("" when none or not yet known).
 * Borrowed: valid until the next loop iteration. */
const char *leader_holder(const struct leader *le);

/* Formats the current wall-clock time as a Kubernetes MicroTime,
 * "2026-11-27T13:00:00.000000Z" (UTC, six fractional digits). */
void leader_microtime(char out[32]);

#endif
