/*
 * reload: notices that a policy directory changed, without a restart. It
 * is made for a ConfigMap volume as the kubelet's AtomicWriter updates
 * it: the visible files are symlinks "x.lua -> ..data/x.lua", "..data" is
 * a symlink to a timestamped directory "..2026_12_04_16_30_00.123", and an
 * update writes a new timestamped directory, renames a new "..data_tmp"
 * link over "..data" (the atomic step), adds and removes visible links and
 * deletes the old directory. A plain directory edited in place works too.
 * inotify on the directory wakes the loop; a poll of the directory's
 * fingerprint backs it up (and is all there is when inotify is not
 * available). After a change the watcher waits for the directory to be
 * quiet, then calls back once if the fingerprint differs from the last
 * one reported. Uses loop, text, log.
 */
#ifndef DITTOFS_RELOAD_H
#define DITTOFS_RELOAD_H

#include <stdint.h>

#include "loop.h"

/* Defaults of struct reload_opts (milliseconds). */
#define RELOAD_DEFAULT_DEBOUNCE_MS 100
/* The quiet time once the kubelet has renamed "..data" into place (its
 * update's commit point; what follows is links for new names and the old
 * directory's removal, microseconds of work): shorter, whatever else
 * happens in that burst. The loader checks the fingerprint again after
 * loading, so a later change is not missed. */
#define RELOAD_COMMIT_DEBOUNCE_MS 10
#define RELOAD_DEFAULT_MAX_DELAY_MS 500
#define RELOAD_DEFAULT_POLL_MS 1000
#define RELOAD_DEFAULT_POLL_INOTIFY_MS 10000

/*
 * What the policy loader would see in a directory, cheaply: every *.lua
 * file under it (recursively to the depth policy_set_load() goes, skipping
 * names that start with '.', following symlinks) contributes its relative
 * path, size, modification time, inode and device to `hash`. A kubelet
 * update gives every file a new inode, an edit a new mtime or size.
 */
struct reload_print {
    uint64_t hash;  /* order-independent; 0 when missing */
    unsigned n_lua; /* *.lua files, as policy_set_load() counts them */
    int missing;    /* the directory cannot be opened: errno (else 0) */
    int incomplete; /* a kubelet update is half done: a top-level link
                     * dangles, or a file of ..data has no link yet */
};

struct reload_opts {
    uint64_t debounce_ms;  /* quiet time after the last event; 0: default */
    uint64_t max_delay_ms; /* the longest wait after the first event of a
                            * burst, however busy; 0: default */
    uint64_t poll_ms;      /* fingerprint poll; 0: RELOAD_DEFAULT_POLL_MS
                            * without inotify, _POLL_INOTIFY_MS with it */
    int no_inotify;        /* non-zero: poll only (tests) */
};

struct reload_stats {
    unsigned long events;     /* inotify events read */
    unsigned long checks;     /* fingerprints computed after a quiet time */
    unsigned long polls;      /* fingerprints computed by the poll */
    unsigned long changes;    /* callbacks */
    unsigned long incomplete; /* quiet times extended: half an update */
};

struct reload;

/* Called when the directory's fingerprint `p` (borrowed) differs from the
 * last one reported; `p` becomes the last one. Runs from a loop timer;
 * it may call reload_kick() but not reload_free(). */
typedef void (*reload_fn)(struct reload *r, const struct reload_print *p,
                          void *arg);

/* --- fingerprint ---------------------------------------------------------
 */

/* Computes the fingerprint of `dir` into *out. Returns 0, or -errno when
 * the directory cannot be opened (out->missing is then that errno). */
int reload_fingerprint(const char *dir, struct reload_print *out);
/* 1 when a and b describe the same directory contents. */
int reload_print_equal(const struct reload_print *a,
                       const struct reload_print *b);

/* --- the watcher ---------------------------------------------------------
 */

/*
 * Watches `dir` (copied) on loop `l` (borrowed) and calls fn(r, p, arg)
 * after each change. `base` is the fingerprint the caller's current state
 * came from (take it before loading, so that a change made while loading
 * is reported); NULL: the fingerprint now. `o` may be NULL (defaults).
 * An inotify failure (no instances left, not Linux) is logged once and
 * leaves the poll. Returns NULL only when out of memory.
 */
struct reload *reload_new(struct loop *l, const char *dir,
                          const struct reload_print *base,
                          const struct reload_opts *o, reload_fn fn, void *arg);
/* Stops watching and frees; NULL is a no-op. Not from inside fn. */
void reload_free(struct reload *r);

/* Schedules a check after the quiet time, as an event would: for a caller
 * that saw the directory change under it while loading. */
void reload_kick(struct reload *r);
/* 1 while an inotify watch on the directory is active. */
int reload_inotify(const struct reload *r);
void reload_get_stats(const struct reload *r, struct reload_stats *out);

#endif
