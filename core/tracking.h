/*
 * tracking: what the controller keeps per DittoServer key ("ns/name")
 * between reconciles, in a hash table it owns: the objects our writes
 * returned that the cache has not caught up with yet ("overlays": without
 * them a reconcile that runs before the watch events arrive would see
 * stale children and write again), the rendered objects the API refused
 * with a 422 ("rejects": retried a bounded number of times while they
 * render the same), the children carrying the DittoServer's label (the
 * owner index, kept by the child informers' events, so a reconcile finds
 * its children without a scan), whether a status-only reconcile is
 * enough, and whether the DittoServer is a suspect (its child was deleted
 * while it was cached: the controller reads it from the apiserver before
 * re-creating anything), and the writes in flight with the versions the
 * watch delivered of their objects meanwhile (an echo that overtakes its
 * write's response is told from another writer's change when the
 * response comes). The table grows and shrinks with the number of
 * keys, so every lookup is O(1) whatever the fleet's size. No I/O and no clock
 * of its own: times come in as arguments, so a test drives it with any clock.
 * Kinds are indices of kinds_table. Uses cache, log.
 */
#ifndef DITTOFS_TRACKING_H
#define DITTOFS_TRACKING_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

/* The smallest table; it doubles past one entry per bucket and halves
 * below one per eight. */
#define TRACKING_MIN_BUCKETS 64
/* An overlay older than this is not trusted any more (the watch has
 * surely delivered something newer, or the write was lost). */
#define TRACKING_OVERLAY_TTL_MS 60000

/* An object one of our writes returned, newer than the cache. */
struct overlay {
    int kind;
    char *name;
    struct cache_obj *obj; /* a reference of ours */
    uint64_t at_ms;        /* when the write returned it */
};

/* A rendered object the API refused (422): retried a bounded number of
 * times while it renders the same (hash). */
struct reject {
    int kind;
    char *name;
    uint64_t hash;     /* FNV-1a of what was applied */
    unsigned attempts; /* refusals of that hash in a row */
    char *message;     /* the API's last message, or NULL */
};

/* A write of ours (an apply, a status apply) in flight on kind/name, and
 * what the watch said of that object meanwhile. */
struct wflight {
    int kind;
    char *name;
    char *seen_rv; /* the first event's resourceVersion, or NULL: none */
    int other;     /* an event of another version came too (or the
                      version could not be kept: out of memory) */
};

/* A cached child carrying the DittoServer's label (the owner index). */
struct kchild {
    int kind;
    char *name;
};

/*
 * Status-only reconciles: a Pod event owes the DittoServer a new status,
 * not a new rendering. Every other cause of a reconcile (the DittoServer
 * or a rendered child changed, a resync, a retry, a requested requeue)
 * bumps full_seq and clears `clean` (tracking_owe_full); a full reconcile
 * that ends cleanly (policy OK, every write done, nothing rejected) sets
 * `clean` when no such cause came meanwhile. While clean, a reconcile
 * runs status() only and writes nothing but a changed status.
 */
struct kstate {
    struct kstate *next;
    uint32_t hash;          /* of key */
    unsigned long full_seq; /* causes of a full reconcile so far */
    int clean;              /* the last full reconcile ended cleanly and
                               nothing but Pods changed since */
    int suspect;            /* a rendered child was deleted while the
                               DittoServer was cached (tracking_suspect) */
    char *gone_uid;         /* suspect: the apiserver said this uid is gone,
                               or NULL */
    struct overlay *ov;
    size_t n_ov;
    struct reject *rej;
    size_t n_rej;
    struct kchild *kids;
    size_t n_kids;
    struct wflight *wr; /* writes in flight (tracking_write_begin) */
    size_t n_wr;
    char key[]; /* "ns/name" */
};

/* The table; zero-initialised it is empty and ready (the buckets come with
 * the first entry). */
struct tracking {
    struct kstate **buckets;
    size_t nbuckets; /* a power of two, or 0 */
    size_t n;        /* entries */
};

/* --- entries ---------------------------------------------------------------
 */

/* Frees every entry (and the overlays' references) and the buckets; the
 * table stays usable, empty. */
void tracking_clear(struct tracking *t);

/* The entry of `key` (borrowed: valid until tracking_release of that key
 * or tracking_clear), created when absent and `create` is set. NULL when
 * absent, or out of memory. */
struct kstate *tracking_get(struct tracking *t, const char *key, int create);

/* The DittoServer is gone: drops its overlays, rejects and suspicion, and
 * the whole entry once no cached child points at it any more and none of
 * its writes is in flight. */
void tracking_release(struct tracking *t, const char *key);

/* A full reconcile of `key` is owed (see struct kstate): full_seq++,
 * clean = 0. Nothing when the key has no entry. */
void tracking_owe_full(struct tracking *t, const char *key);

/* --- suspects --------------------------------------------------------------
 *
 * A key whose rendered child was deleted while its DittoServer was still
 * cached: a repair to do (someone deleted the child), or the garbage
 * collector at work (the DittoServer is gone, and its own DELETED event, on
 * another watch stream, has not come yet). The controller reads a suspect's
 * DittoServer from the apiserver before re-creating anything.
 */

/* Marks `key` a suspect (again: a confirmed-gone uid is kept). Out of
 * memory it is not marked (logged). */
void tracking_suspect(struct tracking *t, const char *key);
/* The apiserver said the DittoServer of suspect k with `uid` is gone:
 * nothing is written for that uid until its DELETED event. Out of memory
 * the uid is not recorded (the next reconcile asks again). */
void tracking_suspect_gone(struct kstate *k, const char *uid);
/* k (may be NULL) is no suspect any more (the DittoServer is there). */
void tracking_suspect_clear(struct kstate *k);

/* --- the owner index --------------------------------------------------------
 */

/* Records the child kind/name of `key` (once; the name is copied). Out of
 * memory: logged, not recorded. */
void tracking_kids_add(struct tracking *t, const char *key, int kind,
                       const char *name);
/* Forgets the child kind/name of `key`; nothing when it is not there. */
void tracking_kids_remove(struct tracking *t, const char *key, int kind,
                          const char *name);

/* --- overlays ---------------------------------------------------------------
 */

/* Keeps `obj` (a write's response; a reference is taken) as the newest
 * known state of kind/name, returned at now_ms. Out of memory: not kept
 * (the next reconcile may write again, nothing worse). */
void tracking_overlay_put(struct tracking *t, const char *key, int kind,
                          const char *name, struct cache_obj *obj,
                          uint64_t now_ms);
/* Drops the overlay of kind/name (the object was deleted). */
void tracking_overlay_forget(struct tracking *t, const char *key, int kind,
                             const char *name);
/* Drops overlay i of k (i < k->n_ov; the last one takes its place). */
void tracking_overlay_drop(struct kstate *k, size_t i);

/*
 * A watch event for an object: its overlay goes once the cache holds that
 * version or a newer one (resourceVersions compared as etcd's decimal
 * revisions), or the object is gone (`cached` NULL). Returns 1 when the
 * event is the echo of our own write (the cache now holds exactly the
 * version our write returned, which the reconcile that wrote it has
 * already taken into account): nothing new to reconcile; else 0.
 */
int tracking_overlay_settle(struct tracking *t, const char *key, int kind,
                            const char *name, const struct cache_obj *cached);

/*
 * The newest state of kind/name in k (may be NULL): `cached`, unless one
 * of our writes returned a newer version the watch has not delivered yet.
 * Drops the overlay the cache has caught up with, or one older than
 * TRACKING_OVERLAY_TTL_MS at now_ms. The result is borrowed.
 */
const struct cache_obj *tracking_newest(struct kstate *k, int kind,
                                        const char *name,
                                        const struct cache_obj *cached,
                                        uint64_t now_ms);

/* --- writes in flight --------------------------------------------------------
 *
 * The echo race: the watch event of our own write may arrive before the
 * write's response (another stream of the connection; it happens under
 * load), when there is no overlay yet to recognise it by. So while a write
 * of kind/name is in flight, an ADDED or MODIFIED event of that object is
 * not queued at once: its resourceVersion is kept with the write, and the
 * response decides. The key is being reconciled meanwhile (the write is
 * its reconcile's), so a queue_add then or at the response is the same:
 * the dirty copy, run after queue_done.
 */

/* What the watch said of an object while our write of it was in flight
 * (tracking_write_end). */
enum tracking_seen {
    TRACKING_SEEN_NONE,  /* no event */
    TRACKING_SEEN_ECHO,  /* only the version our write returned: its echo,
                            which the cache now holds */
    TRACKING_SEEN_OTHER, /* another version (another writer's, older or
                            newer), or the write failed after an event:
                            queue the key as the event would have */
};

/* A write of kind/name for `key` goes out. Returns 0, or -1 out of
 * memory (not tracked: its events are queued at once, as before). */
int tracking_write_begin(struct tracking *t, const char *key, int kind,
                         const char *name);
/* An ADDED or MODIFIED event of kind/name, `cached` the version the cache
 * now holds. Returns 1 when a write of that object is in flight: the
 * version is kept with it and the event is not to be queued now (the
 * response decides, tracking_write_end); 0 when none is (queue it). */
int tracking_write_event(struct tracking *t, const char *key, int kind,
                         const char *name, const struct cache_obj *cached);
/* The write of kind/name for `key` (tracking_write_begin) answered, or
 * was cancelled: `rv` is the resourceVersion the write returned, NULL
 * when it failed, returned no object, or was cancelled. Forgets the write
 * and says what its events were (enum tracking_seen); TRACKING_SEEN_NONE
 * when no such write is tracked. */
enum tracking_seen tracking_write_end(struct tracking *t, const char *key,
                                      int kind, const char *name,
                                      const char *rv);

/* --- rejects ----------------------------------------------------------------
 */

/* The reject of kind/name in k (may be NULL), whatever its hash; NULL when
 * there is none. Borrowed until the next change of k's rejects. */
struct reject *tracking_reject_find(struct kstate *k, int kind,
                                    const char *name);
/* The reject of kind/name of `key`, created (attempts 0, no hash, no
 * message) when absent; NULL out of memory. */
struct reject *tracking_reject_get(struct tracking *t, const char *key,
                                   int kind, const char *name);
/* Forgets the reject of kind/name in k (may be NULL): applied at last. */
void tracking_reject_forget(struct kstate *k, int kind, const char *name);

#endif
