/*
 * events: a Kubernetes event recorder (core/v1 Events), after client-go's
 * EventRecorder with a light correlator: a per-object token bucket (burst
 * 25, one token per 5 minutes, like client-go's spam filter) and
 * de-duplication (the same type, reason and message for the same object
 * within 10 minutes PATCHes the existing Event's count and lastTimestamp).
 * Fire and forget: requests run on the loop and a failure is logged once,
 * never retried. The per-object state is an LRU map of bounded size.
 * Uses http, loop, kinds, log, dbuf, text, cJSON.
 */
#ifndef DITTOFS_EVENTS_H
#define DITTOFS_EVENTS_H

#include <stddef.h>

#include "http.h"

struct events;

/* The involved object. Strings are copied; any may be NULL (omitted). A
 * cluster-scoped object (namespace NULL or "") gets its Events in
 * "default". */
struct events_ref {
    const char *api_version, *kind, *namespace, *name, *uid, *resource_version;
};

/* --- lifecycle --------------------------------------------------------- */

/*
 * A recorder writing through `h` (borrowed: it must outlive the recorder).
 * `component` is source.component and reportingComponent
 * ("dittofs-operator"); `host` is source.host and reportingInstance (the
 * hostname; NULL: ""). Enabled on creation. Returns NULL only when out of
 * memory.
 */
struct events *events_new(struct http_client *h, const char *component,
                          const char *host);
/* Cancels the requests in flight and frees the recorder. NULL is a no-op. */
void events_free(struct events *e);

/* --- recording --------------------------------------------------------- */

/*
 * Records an event about `obj` (obj->name required). `type` is "Normal" or
 * "Warning"; `message` is cut at 1024 bytes (on a UTF-8 boundary). Returns
 * 0 when sent, or dropped because the recorder is disabled (silently); 1
 * when dropped by the per-object rate limit; -EINVAL without a name, type
 * or reason, or with a namespace or name that kinds_path refuses in the
 * Event's path (logged); -ENOMEM. Never calls back.
 */
int events_emit(struct events *e, const struct events_ref *obj,
                const char *type, const char *reason, const char *message);

/* Forgets the state of one object (it was deleted): its bucket and the
 * Events it may PATCH. A no-op for an unknown object. */
void events_forget(struct events *e, const char *namespace, const char *name);

/* Non-zero: write (the leader); 0: drop every emit silently (a standby).
 * Disabling keeps the state; requests in flight finish. */
void events_set_enabled(struct events *e, int enabled);

/* --- tuning and introspection (tests) ---------------------------------- */

/* Objects whose state is kept (least recently used dropped first); 0: the
 * default, 4096. */
void events_set_max_objects(struct events *e, size_t n);
/* Objects currently tracked. */
size_t events_objects(const struct events *e);

struct events_stats {
    unsigned long posted;   /* new Events sent */
    unsigned long patched;  /* count updates sent */
    unsigned long limited;  /* dropped by the rate limit */
    unsigned long disabled; /* dropped while disabled */
    unsigned long failed;   /* requests that failed */
};
void events_get_stats(const struct events *e, struct events_stats *out);
/* Requests in flight. */
size_t events_pending(const struct events *e);

#endif
