/*
 * apply: pure helpers around server-side apply, so that the controller
 * writes nothing in steady state. apply_is_subset() tells whether a live
 * object (from the cache, after the apiserver's defaulting and
 * normalisation) already holds everything a rendered object sets; the
 * Kubernetes quantity parser behind it is exact (big decimals, never
 * floats). Also the cJSON shaping the controller (and --diff) needs:
 * the applied-hash stamp, ownership, annotations, the live claim
 * templates, the identity of a rendered object, the policy's `observed`
 * argument, the status body and its Reconciled condition, stamping and
 * comparing conditions, RFC 3339 times; and the API path of an
 * apiVersion/kind (kinds_path). No I/O, no clock. Uses kinds, text,
 * jscan, dbuf and cJSON.
 */
#ifndef DITTOFS_APPLY_H
#define DITTOFS_APPLY_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "dbuf.h"
#include "kinds.h"

/* The field manager of every apply. */
#define APPLY_FIELD_MANAGER "dittofs-operator"

/* --- paths ---------------------------------------------------------------- */

/*
 * The API path of apiVersion/kind, a kind in kinds_table (kinds.h), built
 * and checked by kinds_path (see there: "/api/v1/namespaces/NS/
 * configmaps/NAME"; `name` NULL: the collection; `ns` NULL or "": every
 * namespace). Returns 0, or -1 with the reason appended to `out`: an
 * apiVersion/kind outside the table (naming the ones in it), or what
 * kinds_path refuses.
 */
int apply_path(const char *api_version, const char *kind, const char *ns,
               const char *name, struct dbuf *out);

/* --- comparison ----------------------------------------------------------- */

/*
 * 1 when the live object already holds everything `desired` sets, so a
 * server-side apply would change nothing we own; else 0 (also when either
 * is NULL). Rules:
 *  - objects: every desired key must match. A desired zero value (null,
 *    false, 0, "", [], {}) also matches an absent key (omitempty), except
 *    inside string/quantity maps (labels, annotations, data, binaryData,
 *    stringData, selector, matchLabels, nodeSelector, limits, requests),
 *    where an entry is an entry: "" must be there.
 *  - numbers compare numerically (40 == 40.0); booleans and strings
 *    exactly; a number never equals a string...
 *  - ...except for quantities: values of limits, requests, capacity,
 *    hard, overhead, sizeLimit compare by value ("1Gi" == "1024Mi",
 *    "0.5" == "500m", 2 == "2"). Only there: elsewhere "1k" != "1000".
 *    (The 1.20 apiserver refuses a JSON number there in an apply, with a
 *    500 "expected string": render quantities as strings.)
 *  - a live null counts as absent (the apiserver writes some unset fields,
 *    like creationTimestamp, as null).
 *  - arrays of objects that all carry a match key are matched by it in
 *    live, in any order (server-side apply appends a changed key and
 *    never reorders), extra live elements allowed. The key is
 *    "uid" for ownerReferences, "type" for conditions, otherwise "name"
 *    (or metadata.name: volumeClaimTemplates). Other arrays: same length,
 *    element by element. An empty desired array matches only an absent or
 *    empty live one.
 *  - Secret: a stringData entry also matches the live data entry holding
 *    its base64 (the apiserver folds stringData into data).
 * `why` (may be NULL) receives the first differing path on 0, e.g.
 * "spec.template.spec.containers[dittofs].image" or
 * "metadata.labels[app.kubernetes.io/name]", for debug logs.
 * What it cannot see: a field we applied before and no longer render
 * (removal); live extras always pass.
 */
int apply_is_subset(const cJSON *desired, const cJSON *live, struct dbuf *why);

/*
 * Kubernetes quantities (k8s.io/apimachinery resource.ParseQuantity,
 * including rounding finer than 1n up): compares a and b by value. Returns
 * 0 and sets *cmp to -1, 0 or 1, or -1 when either is not a quantity.
 */
int apply_quantity_cmp(const char *a, const char *b, int *cmp);

/* --- status ------------------------------------------------------------- */

/*
 * For every condition in `desired_status` (an object with a "conditions"
 * array), sets lastTransitionTime to the live condition's when the live
 * condition of the same type has the same status (and a time), else to
 * `now_rfc3339` ("2026-11-27T13:00:00Z"). live_status may be NULL.
 * Returns 0, or -1 when desired_status is not an object or out of memory.
 */
int apply_stamp_conditions(cJSON *desired_status, const cJSON *live_status,
                           const char *now_rfc3339);

/* --- shaping ---------------------------------------------------------------
 */

/* One live child of a DittoServer, for apply_observed_json. */
struct apply_child {
    int kind;         /* index in kinds_table, < KINDS_NCHILD */
    const char *name; /* metadata.name */
    const char *json; /* the object's JSON text (need not end in NUL) */
    size_t len;
};

/*
 * Appends the `observed` argument of the policy's status() for the n
 * children in v: {"ConfigMap": {"NAME": {...}}, "Service": {...},
 * "StatefulSet": {...}, "Pod": {...}}, one member per child kind of
 * kinds_table (0 .. KINDS_NCHILD-1, in that order, present even when
 * empty), each mapping the names (JSON-quoted) to the objects' JSON text,
 * copied as it is, in the order of v. A child of another kind is left
 * out. Returns DBUF_OK or the dbuf's error (out is then empty).
 */
int apply_observed_json(const struct apply_child *v, size_t n,
                        struct dbuf *out);

/*
 * The kinds_table index of a rendered object `o` whose apiVersion and
 * kind are a kind a policy may render (KIND_RENDERED) and that has a
 * string metadata.name (*name receives it, borrowed from `o`); -1
 * otherwise (*name is then NULL). `o` may be NULL.
 */
int apply_rendered_kind(const cJSON *o, const char **name);

/* 1 when the object `o` (may be NULL) carries a controller ownerReference
 * (controller: true) with `uid`; else 0. */
int apply_owned_by(const cJSON *o, const char *uid);

/* On every applied child: the hash of what the policy rendered for it. */
#define APPLY_HASH_ANNOTATION KINDS_GROUP "/applied-hash"

/*
 * Stamps a rendered object `o` (as the policy returned it, before any
 * other change by the core) with APPLY_HASH_ANNOTATION: 16 hex digits of
 * the FNV-1a 64 of its compact JSON (cJSON_PrintUnformatted), so that a
 * rendering that changed (a field the policy stopped setting is invisible
 * to apply_is_subset) tells itself from a stable one. *hash (may be NULL)
 * receives the hash. Returns 0, or -1 out of memory (or without
 * metadata): `o` may then lack the annotation, nothing else changes.
 */
int apply_annotate_hash(cJSON *o, uint64_t *hash);

/*
 * Sets metadata.annotations[key] = value on the object `o` (an
 * annotations that is not an object is replaced; metadata must exist).
 * Returns 0, or -1 out of memory (or without metadata): `o` may then lack
 * the annotation, nothing else changes.
 */
int apply_set_annotation(cJSON *o, const char *key, const char *value);

/*
 * The fence of an apply that updates an existing object: sets
 * metadata.uid and metadata.resourceVersion of the apply body `o` to those
 * of the live object it was computed from (replacing any). The apiserver
 * then refuses it with 409 Conflict when the object changed since (its
 * resourceVersion differs: "the object has been modified") or is gone (a
 * uid with no object: "uid mismatch"), where an apply without them would
 * land, or create the object again. Neither field is a managed field.
 * A NULL or empty uid or rv is left out (a live object always has both).
 * Returns 0, or -1 when `o` has no metadata object or out of memory (`o`
 * may then hold one of them: do not send it).
 */
int apply_set_precondition(cJSON *o, const char *uid, const char *rv);

/*
 * Replaces a rendered StatefulSet's volumeClaimTemplates with the live
 * ones (a copy, without their status and creationTimestamp), so that an
 * apply changes only what may change (the API refuses other changes).
 * Returns 0, or -1 when the live object has none, `o` has no spec, or out
 * of memory (then `o` is unchanged).
 */
int apply_keep_live_claims(cJSON *o, const cJSON *live);

/* 1 when the status object holds a condition of `type` whose status is
 * `value` ("True", "False"); else 0. */
int apply_condition_is(const cJSON *status, const char *type,
                       const char *value);

/*
 * A new status apply body for the DittoServer ns/name: apiVersion, kind
 * and metadata (name, namespace), every addition checked; the caller adds
 * "status". Returns NULL only when out of memory.
 */
cJSON *apply_status_body(const char *name, const char *ns);

/* The longest Reconciled message the core writes, in bytes ("..." is
 * added after a cut). */
#define APPLY_MAX_MESSAGE 1024

/*
 * Sets (adds, or replaces the one of that type) the condition
 * Reconciled=False with `reason` and `message` (cut on a UTF-8 boundary
 * at APPLY_MAX_MESSAGE bytes, "..." appended) and, when generation > 0,
 * observedGeneration, in the status object `status` (a "conditions" that
 * is not an array is replaced by one). Returns 0, or -1 when status is not
 * an object or out of memory: then `status` is as it was (no condition
 * with missing fields).
 */
int apply_set_reconciled(cJSON *status, const char *reason, const char *message,
                         double generation);

/* 1 when two status objects are semantically equal (apply_is_subset both
 * ways); 0 otherwise (NULL equals only NULL). */
int apply_status_equal(const cJSON *a, const cJSON *b);

/* RFC 3339 UTC, second precision, of a Unix time: "2026-11-27T13:00:00Z"
 * (text_rfc3339 without microseconds). */
void apply_rfc3339(long long unix_s, char out[32]);

#endif
