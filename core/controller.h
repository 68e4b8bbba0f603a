/*
 * controller: the DittoServer reconciler. Informers on DittoServers (one
 * namespace or all, an optional label selector), on the kinds the
 * policies render (ConfigMaps, Services, StatefulSets) and on the servers'
 * Pods, all carrying the managed-by label, feed a work queue keyed
 * "namespace/name"; a child's event maps to its owner by the server
 * label. One reconcile reads the DittoServer and its children from the
 * caches, evaluates the policy (validate, render, status) in the sandbox,
 * server-side applies every rendered object that the live one does not
 * already hold (an update only onto the version it was computed from: a
 * stale one is refused with 409 and retried), deletes the children it
 * owns that are no longer rendered, and writes the status subresource
 * only when it changed. Pods are read,
 * never written: a Pod event alone re-derives only the status (status()
 * without validate and render) once a full reconcile has converged.
 * Results go to metrics, Events and one log line per reconcile. Writes
 * happen only while the controller is leading (see
 * controller_set_leading). The policy set can be tried and replaced while
 * running (controller_trial_start, in slices between the loop's I/O, or
 * controller_try_policies at once; controller_set_policies). Seams for
 * tests: the transport is the HTTP client passed in, every time comes
 * from the loop's clock (loop_set_clock), so spec/c/test_controller
 * drives overlays, 422 refusals, 409 conflicts, requeues, backoff and
 * status-only passes against an in-memory apiserver. Uses queue, watch, cache,
 * tracking, http, loop, policy, apply, kinds, events, metrics, log.
 */
#ifndef DITTOFS_CONTROLLER_H
#define DITTOFS_CONTROLLER_H

#include <stddef.h>
#include <stdint.h>

#include "dbuf.h"
#include "events.h"
#include "http.h"
#include "metrics.h"
#include "policy.h"
#include "sandbox.h"

/* Server-side apply rejections of one unchanged object retried at most
 * this many times; then the object is left alone (and reported in the
 * Reconciled condition) until what the policy renders for it changes. */
#define CONTROLLER_MAX_REJECTS 3

/* The longest a synchronous trial of a new policy set may hold the loop
 * (controller_try_policies): half the Lease's renew deadline. About 7,000
 * DittoServers at the ~0.5-0.7 ms each measured at 10,000 (policy
 * evaluation with the observed children). The sliced trial
 * (controller_trial_start) holds the loop CONTROLLER_TRIAL_SLICE_MS at a
 * time and refuses a set only past both this and
 * CONTROLLER_TRIAL_DS_MS per DittoServer tried. */
#define CONTROLLER_TRIAL_MAX_MS 5000

/* One slice of a sliced trial: it evaluates DittoServers until this much
 * time has passed (one evaluation may overrun it, by at most the policy's
 * time budget), then lets the loop do its I/O; the work queue's dispatch
 * pass has the same bound. */
#define CONTROLLER_TRIAL_SLICE_MS 5

/*
 * The loop time a sliced trial may spend per DittoServer, on average, once
 * it has spent CONTROLLER_TRIAL_MAX_MS. The default policy takes ~0.5-0.7
 * ms per DittoServer measured at 10,000, and 3-10 ms of wall time at load
 * 10-12 on 2 cores (the slices' time is wall time: other processes' share
 * counts): 20 ms is twice the worst of those, so a fine set is not refused
 * for a busy machine. A set slower than that on average costs as much in
 * every reconcile: 10,000 x 20 ms is 200 s of the one loop per resync or
 * reload, too slow to accept. A trial is then bounded by that much loop
 * time, never more than one slice at once.
 */
#define CONTROLLER_TRIAL_DS_MS 20

struct controller_opts {
    const char *namespace;      /* NULL or "": all namespaces */
    const char *selector;       /* label selector on DittoServers; NULL: all */
    const char *cluster_domain; /* NULL: cluster.local */
    struct sandbox_limits limits;
    unsigned workers;         /* 0: 8 concurrent reconciles */
    uint64_t resync_ms;       /* 0: 10 h (jittered by up to +10%) */
    uint64_t backoff_base_ms; /* 0: 5 */
    uint64_t backoff_max_ms;  /* 0: 1000 s */
};

struct controller;

/*
 * A controller on client `h` (borrowed) with policy set `ps` (borrowed),
 * metrics registry `m` and event recorder `ev` (both borrowed, may be
 * NULL). Strings in `o` are copied. Returns NULL with the reason in err
 * (bad selector, out of memory).
 */
struct controller *controller_new(struct http_client *h, struct policy_set *ps,
                                  struct metrics *m, struct events *ev,
                                  const struct controller_opts *o,
                                  struct dbuf *err);
/* Cancels everything in flight (no callbacks) and frees. NULL is a no-op. */
void controller_free(struct controller *c);

/* Starts the informers (reconciles wait for leading and synced caches).
 * Returns 0 or -1 (logged). */
int controller_start(struct controller *c);
/* 1 once every informer has completed its first list. */
int controller_synced(const struct controller *c);
/* Appends to `out` which informers have not synced yet, and why (nothing
 * when all have). */
void controller_sync_detail(const struct controller *c, struct dbuf *out);

/*
 * Leading: reconciles run (every DittoServer is queued once the caches are
 * synced). Not leading: nothing new starts; reconciles in flight finish
 * unless controller_cancel() is called.
 */
void controller_set_leading(struct controller *c, int leading);
/* Stops taking work (shutdown): like not leading, for good. */
void controller_drain(struct controller *c);
/* Reconciles in flight. */
size_t controller_in_flight(const struct controller *c);
/* Cancels every request in flight at once (leadership lost). */
void controller_cancel(struct controller *c);
/* Brings the work queue's gauges and counters into the metrics registry
 * (call before rendering /metrics). */
void controller_update_metrics(struct controller *c);
/* Queues every cached DittoServer as a periodic resync would. */
void controller_resync(struct controller *c);

/* --- policy sets (live reload) ----------------------------------------------
 */

/*
 * Tries the candidate policy set `ps` (borrowed) on every DittoServer in
 * the cache, writing nothing: for each one a reconcile would evaluate
 * (those being deleted are skipped), validate, render and status run
 * with the controller's sandbox limits and cluster domain on the same
 * inputs as a reconcile (the DittoServer and its observed children and
 * Pods from the caches, with the objects our own writes returned that the
 * watches have not delivered yet). No request, Event, status, metric or
 * queue change results; the candidate's sandbox is prepared, and
 * overlays past their TTL are dropped, as a reconcile would. Synchronous: it
 * blocks the loop for one evaluation per cached DittoServer (each bounded by
 * POLICY_EVAL_BUDGETS timeouts), ~5 s at 10,000, so the operator's reloads
 * use the sliced controller_trial_start instead; before the caches have synced
 * (controller_synced) it sees only what is cached. Returns 0 when every
 * evaluation is POLICY_OK or POLICY_INVALID (an invalid spec is the policy's
 * verdict on it, not a broken policy), and also when nothing is cached. Returns
 * -1 otherwise, with `err` holding "namespace/name: <policy_eval's message>"
 * (the script's "file:line: message", a budget message, or a rendered object
 * the core refuses, such as a kind outside the managed ones) for the first
 * failure met (in no particular order): the trial stops there, so a policy
 * that spends its whole time budget blocks the loop for one evaluation, not
 * one per DittoServer. A trial that passes CONTROLLER_TRIAL_MAX_MS stops too
 * and fails ("the trial took longer than ..."): the Lease is renewed from the
 * same loop, and its renew deadline is 10 s.
 */
int controller_try_policies(struct controller *c, struct policy_set *ps,
                            struct dbuf *err);

/*
 * The end of a sliced trial: rc 0 when the set passed every cached
 * DittoServer (err ""), -1 when it is refused, with `err` (borrowed, valid
 * during the call) holding controller_try_policies' message for the first
 * failure, a time bound's or "out of memory". Called from a loop timer,
 * after the trial is no longer running: it may start another one or cancel
 * (a no-op).
 */
typedef void (*controller_trial_fn)(int rc, const char *err, void *arg);

/*
 * Starts a trial of the candidate set `ps` (borrowed: keep it until `done`
 * is called or the trial is cancelled) on what controller_try_policies
 * evaluates, without blocking the loop: it takes the keys of the cached
 * DittoServers now, then evaluates them in namespace/name order from a
 * zero-delay timer, CONTROLLER_TRIAL_SLICE_MS at a time, each looked up in
 * the cache again when its turn comes (one deleted or being deleted meanwhile
 * is skipped; one added after the start is not tried). The first failure ends
 * the trial, as does loop time past CONTROLLER_TRIAL_MAX_MS that is also more
 * than CONTROLLER_TRIAL_DS_MS per DittoServer tried ("the trial took
 * ..."). done(rc, err, arg) is called exactly once, from the loop (never
 * from here, also when nothing is cached), unless the trial is cancelled
 * or the controller freed first. Returns 0, -EBUSY when a trial is
 * running already, or -ENOMEM; done is never called after an error.
 */
int controller_trial_start(struct controller *c, struct policy_set *ps,
                           controller_trial_fn done, void *arg);
/* Stops the running trial without calling its done function and frees
 * its state (the candidate set is the caller's); a no-op when none runs.
 * controller_free does it too. */
void controller_trial_cancel(struct controller *c);
/* 1 while a trial started by controller_trial_start runs. */
int controller_trial_running(const struct controller *c);

/*
 * Makes `ps` (borrowed, must stay valid until it is replaced again or the
 * controller is freed) the policy set of every reconcile that starts from
 * now on, and queues every cached DittoServer for a full reconcile (not a
 * status-only one) under it; while not leading they run once leading.
 * The set it replaces is no longer used once this returns: reconciles
 * call the set only synchronously (policy_eval copies its results out)
 * and never hold it across I/O; one in flight that started with the old
 * set keeps the status that set derived before its writes instead of
 * asking the new set, and is followed by the queued full reconcile. So
 * the caller may free the old set right away, whatever
 * controller_in_flight() says.
 */
void controller_set_policies(struct controller *c, struct policy_set *ps);

#endif
