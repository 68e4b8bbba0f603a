/*
 * watch: an informer for one kind. Lists (paged: limit/continue), then
 * watches from the list's resourceVersion with allowWatchBookmarks and a
 * jittered timeoutSeconds (300-600 s), parsing the newline-delimited JSON
 * stream incrementally (bounded event size) into a cache (cache.h):
 * ADDED, MODIFIED, DELETED, BOOKMARK. 410 Gone, as an HTTP status or as an
 * ERROR event inside a 200 stream, leads to a relist whose vanished objects
 * are delivered as deletes. Failures reconnect with jittered exponential
 * backoff (800 ms doubling, cap 30 s, reset after 2 min without failure);
 * a "very short watch" counts as a failure; an idle deadline catches a
 * silently dead connection. Label and field selectors; one namespace or
 * all. Uses http, loop, cache, jscan, dbuf, log.
 */
#ifndef DITTOFS_WATCH_H
#define DITTOFS_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "dbuf.h"
#include "http.h"

/* --- the informer ------------------------------------------------------ */

struct watch_opts {
    /* "/api/v1" or "/apis/<group>/<version>" and the plural resource:
     * "configmaps", "dittoservers". Required. */
    const char *api_path;
    const char *resource;
    const char *namespace;      /* NULL or "": all namespaces */
    const char *label_selector; /* NULL: none */
    const char *field_selector; /* NULL: none */
    unsigned page_size;         /* 0: 500 */
    size_t max_event_size;      /* 0: 16 MiB per watch event (one line) */
    /* timeoutSeconds is drawn from [min, max); 0: 300 and 600. */
    unsigned timeout_min_s;
    unsigned timeout_max_s;
    /* No byte for this long aborts the watch and reconnects. 0: adaptive:
     * 70 s once the server has shown periodic bookmarks, otherwise
     * timeoutSeconds + 30 s (Kubernetes 1.20 sends its one bookmark just
     * before timeoutSeconds; TCP keepalive catches a dead peer within about
     * a minute meanwhile). */
    uint64_t idle_timeout_ms;
    /* The adaptive deadline once periodic bookmarks were seen; 0: 70 s
     * (the apiserver sends one a minute). The first bookmark of a stream
     * that comes well before its timeoutSeconds shows them, and shrinks
     * that stream's deadline at once: a young watch is not deaf to a dead
     * connection until its first rotation (5-10 min). */
    uint64_t bookmark_idle_ms;
    /* Backoff; 0: 800 ms, 30000 ms, 120000 ms. */
    uint64_t backoff_initial_ms;
    uint64_t backoff_max_ms;
    uint64_t backoff_reset_ms;
};

enum watch_state {
    WATCH_STOPPED,  /* before watch_start(), or paused */
    WATCH_LISTING,  /* a list page is in flight */
    WATCH_WATCHING, /* the watch stream is open (or being opened) */
    WATCH_BACKOFF,  /* waiting before the next attempt */
};

/* Notices for logs, metrics and tests. */
enum watch_notice {
    WATCH_SYNCED,     /* a (re)list completed: the cache is complete */
    WATCH_RELISTING,  /* a 410 (or a first start) makes us list again */
    WATCH_FAILED,     /* an attempt failed; detail says why; backing off */
    WATCH_RECONNECTED /* the first bytes of a watch stream arrived */
};

struct watch;
typedef void (*watch_notice_fn)(struct watch *w, enum watch_notice n,
                                const char *detail, void *arg);

struct watch_stats {
    unsigned long lists;   /* list pages received */
    unsigned long relists; /* complete lists after the first */
    unsigned long watches; /* watch requests sent */
    unsigned long events;  /* ADDED/MODIFIED/DELETED applied */
    unsigned long bookmarks;
    unsigned long gone;           /* 410s seen (status or ERROR event) */
    unsigned long failures;       /* failed attempts (backoffs) */
    unsigned long relist_deletes; /* deletes delivered by relists */
    uint64_t last_chunk_us;       /* loop_now_us() when the last stream
                                   * bytes arrived (latency measurements) */
};

/*
 * A new informer (not started) with its own empty cache. Strings in `o`
 * are copied. `h` is borrowed and must outlive the watch. Returns NULL when
 * out of memory or when api_path/resource are missing.
 */
struct watch *watch_new(struct http_client *h, const struct watch_opts *o);
/* Cancels everything in flight and frees the watch and its cache. */
void watch_free(struct watch *w);

/* Starts (list, then watch). Returns 0, or -EALREADY if running. */
int watch_start(struct watch *w);
/* Pauses: cancels the request in flight and every timer; the cache and
 * the last resourceVersion stay. No notice or cache change follows. */
void watch_pause(struct watch *w);
/* Resumes after a pause: watches from the last resourceVersion (a 410 then
 * relists), or lists when never synced. Returns 0 or -EALREADY. */
int watch_resume(struct watch *w);

void watch_set_notice(struct watch *w, watch_notice_fn fn, void *arg);
/* The cache this informer fills (borrowed; lives as long as the watch). */
struct cache *watch_cache(struct watch *w);
/* Non-zero once the first list completed. */
int watch_synced(const struct watch *w);
enum watch_state watch_get_state(const struct watch *w);
/* The last resourceVersion seen (list, event or bookmark); "" before. */
const char *watch_rv(const struct watch *w);
/* The last failure message ("" if none). Borrowed. */
const char *watch_last_error(const struct watch *w);
void watch_get_stats(const struct watch *w, struct watch_stats *out);
/* For labels in logs: "configmaps" or "configmaps in ns". Borrowed. */
const char *watch_name(const struct watch *w);

/* --- pieces, exposed for unit tests ------------------------------------ */

/*
 * Incremental splitter of a newline-delimited stream. Each byte is looked
 * at once: complete lines inside a chunk are handed out without copying,
 * only a trailing partial line is buffered (bounded by max_line).
 */
struct watch_lines {
    struct dbuf partial;
};

/* Called with each non-empty line (without its newline); return 0 to go
 * on or a negative value to stop feeding (returned by watch_lines_feed). */
typedef int (*watch_line_fn)(const char *line, size_t len, void *arg);

void watch_lines_init(struct watch_lines *s, size_t max_line);
void watch_lines_free(struct watch_lines *s);
/* Forgets a partial line (after a reconnect). */
void watch_lines_reset(struct watch_lines *s);
/* Returns 0, WATCH_LINES_TOOBIG when a line exceeds max_line (the partial
 * line is dropped), WATCH_LINES_NOMEM, or the callback's negative value. */
int watch_lines_feed(struct watch_lines *s, const char *data, size_t len,
                     watch_line_fn fn, void *arg);
/* Bytes of the partial line held. */
size_t watch_lines_pending(const struct watch_lines *s);

enum {
    WATCH_LINES_TOOBIG = -1000,
    WATCH_LINES_NOMEM = -1001,
};

/* Jittered exponential backoff. */
struct watch_backoff {
    uint64_t initial_ms;
    uint64_t max_ms;
    uint64_t reset_ms;
    uint64_t cur_ms;       /* last base delay, 0: none yet */
    uint64_t last_fail_ms; /* when next() was last called */
};

void watch_backoff_init(struct watch_backoff *b, uint64_t initial_ms,
                        uint64_t max_ms, uint64_t reset_ms);
/*
 * The delay before the next attempt after a failure at `now_ms`, with
 * `rnd` in [0, 1): the base starts at initial_ms and doubles up to max_ms
 * (and starts over when the previous failure is older than reset_ms); the
 * delay is base * (1 + 0.15 * rnd).
 */
uint64_t watch_backoff_next(struct watch_backoff *b, uint64_t now_ms,
                            double rnd);

#endif
