/*
 * cache: the local copy of one kind of Kubernetes object, keyed by
 * namespace/name, filled by an informer (watch.h). Memory-lean: each
 * object is one immutable, reference-counted allocation holding its compact
 * JSON text (managedFields dropped) and the few metadata fields the core
 * reads often (namespace, name, resourceVersion, uid, labels); the JSON is
 * parsed on demand. A cache stores most objects as their differences from
 * one reference object of the same cache (the objects of an informer are
 * alike), so the text is copied out (cache_obj_json_append), never
 * borrowed. Offers get, list (by namespace and label selector) and change
 * notifications (added, updated, deleted, with the old and new object).
 * Label selectors follow Kubernetes' syntax. Uses cJSON, dbuf, jscan.
 */
#ifndef DITTOFS_CACHE_H
#define DITTOFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "dbuf.h"

enum {
    CACHE_OK = 0,
    CACHE_ENOMEM = -1,
    CACHE_EINVAL = -2, /* not an object, no metadata.name, a member the
                          cache reads given twice, bad selector */
};

/* --- objects ----------------------------------------------------------- */

struct cache_obj; /* opaque, immutable, reference-counted */

/*
 * Builds an object from a decoded Kubernetes object (borrowed, not
 * modified): its compact JSON without metadata.managedFields. cJSON holds
 * numbers as doubles, so prefer cache_obj_from_text() for server text.
 * Returns CACHE_OK and *out with one reference, CACHE_EINVAL (not an
 * object, no metadata.name; err says so) or CACHE_ENOMEM.
 */
int cache_obj_from_json(const cJSON *item, struct cache_obj **out, char *err,
                        size_t errlen);
/*
 * The same from JSON text, without building a tree: the text is validated,
 * metadata.managedFields is cut out and everything else is kept byte for
 * byte (integers stay exact). `api_version` and `kind` (may be NULL) are
 * added when the object lacks them (list items do). Returns as above; err
 * names the byte offset of a syntax error.
 */
int cache_obj_from_text(const char *json, size_t len, const char *api_version,
                        const char *kind, struct cache_obj **out, char *err,
                        size_t errlen);

struct cache_obj *cache_obj_ref(struct cache_obj *o);
/* Drops one reference; the last one frees. NULL is a no-op. */
void cache_obj_unref(struct cache_obj *o);

/* Borrowed strings, valid while the caller holds a reference (or, for an
 * object from cache_get(), until the next change of the cache). The
 * namespace is "" for cluster-scoped objects; rv and uid "" when absent. */
const char *cache_obj_namespace(const struct cache_obj *o);
const char *cache_obj_name(const struct cache_obj *o);
const char *cache_obj_rv(const struct cache_obj *o);
const char *cache_obj_uid(const struct cache_obj *o);
/* The length of the compact JSON text. */
size_t cache_obj_json_len(const struct cache_obj *o);
/* Appends the compact JSON text to `out` (decoded when the object is
 * stored against its cache's reference: a copy of a few chunks). Returns
 * DBUF_OK, or the dbuf's error (then `out` is empty, see dbuf.h). */
int cache_obj_json_append(const struct cache_obj *o, struct dbuf *out);
/* The value of label `key`, or NULL when the object does not carry it. */
const char *cache_obj_label(const struct cache_obj *o, const char *key);
/* Iterates the labels: pass *pos = 0 first; returns 0 and sets key and
 * value, or -1 at the end. */
int cache_obj_label_next(const struct cache_obj *o, size_t *pos,
                         const char **key, const char **value);
/* Parses the JSON (the caller owns the tree: cJSON_Delete). NULL on OOM. */
cJSON *cache_obj_parse(const struct cache_obj *o);
/* Bytes this object occupies (for accounting; its share of a reference
 * not included). */
size_t cache_obj_size(const struct cache_obj *o);

/* --- label selectors --------------------------------------------------- */

struct cache_selector; /* opaque */

/*
 * Parses a Kubernetes label selector: comma-separated requirements
 * `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`.
 * "" or NULL selects everything. Returns CACHE_OK and *out (free with
 * cache_selector_free), CACHE_EINVAL with a message naming the position
 * in err, or CACHE_ENOMEM.
 */
int cache_selector_parse(const char *s, struct cache_selector **out, char *err,
                         size_t errlen);
void cache_selector_free(struct cache_selector *sel);
/* 1 when the object's labels satisfy every requirement (NULL: all). */
int cache_selector_match(const struct cache_selector *sel,
                         const struct cache_obj *o);

/* --- the cache --------------------------------------------------------- */

struct cache;

enum cache_event {
    CACHE_ADDED,
    CACHE_UPDATED,
    CACHE_DELETED,
};

/*
 * A change: ADDED (old NULL), UPDATED (both), DELETED (old = last cached
 * state; new = the final state the server sent, or NULL when the object
 * vanished while no watch was running). Both objects are borrowed for the
 * call; take a reference to keep one. A subscriber may read the cache but
 * must not change it.
 */
typedef void (*cache_notify_fn)(enum cache_event ev,
                                const struct cache_obj *old_obj,
                                const struct cache_obj *new_obj, void *arg);

/* Returns an empty cache, or NULL when out of memory. */
struct cache *cache_new(void);
/* Drops every object and subscription. NULL is a no-op. */
void cache_free(struct cache *c);

/* Adds a subscriber; returns CACHE_OK or CACHE_ENOMEM. */
int cache_subscribe(struct cache *c, cache_notify_fn fn, void *arg);
/* Removes the first subscription with this fn and arg. */
void cache_unsubscribe(struct cache *c, cache_notify_fn fn, void *arg);

/* The object or NULL; `ns` NULL or "" for cluster-scoped objects. The
 * pointer is borrowed (see cache_obj_namespace). */
const struct cache_obj *cache_get(const struct cache *c, const char *ns,
                                  const char *name);
size_t cache_len(const struct cache *c);
/* Bytes held by the objects, the table and the current reference. */
size_t cache_mem(const struct cache *c);

/* Called for each object; return non-zero to stop. */
typedef int (*cache_each_fn)(const struct cache_obj *o, void *arg);
/* Visits the objects in namespace `ns` (NULL: all) matching `sel` (NULL:
 * all), in no particular order. The cache must not change meanwhile. */
void cache_list(const struct cache *c, const char *ns,
                const struct cache_selector *sel, cache_each_fn fn, void *arg);

/*
 * Inserts or replaces an object, taking over the caller's reference (the
 * cache may store an encoded copy instead and drop `o`: look the object up
 * again with cache_get, or keep a reference of your own before the call).
 * Notifies ADDED or UPDATED with the stored object; an object with the
 * same resourceVersion as the cached one replaces nothing and notifies
 * nothing. Returns CACHE_OK or CACHE_ENOMEM (the reference is dropped).
 */
int cache_upsert(struct cache *c, struct cache_obj *o);
/* Removes namespace/name, notifying DELETED with `final_obj` (borrowed,
 * may be NULL) as the new object. Returns 1 when it was cached, else 0. */
int cache_delete(struct cache *c, const char *ns, const char *name,
                 const struct cache_obj *final_obj);

/*
 * Replacing the whole content after a relist, without a second copy:
 * cache_replace_begin() starts a generation, every cache_upsert() marks
 * its key as seen, and cache_replace_end() deletes (and notifies) every
 * object that was not seen. Returns the number of deletions.
 */
void cache_replace_begin(struct cache *c);
size_t cache_replace_end(struct cache *c);

#endif
