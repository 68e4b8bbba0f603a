/*
 * kinds: the one table of the Kubernetes kinds the core knows, and the API
 * group of the DittoServer. For each kind: apiVersion, plural, whether it
 * is namespaced and its role (the DittoServer itself; rendered by a policy,
 * so watched, applied and pruned; only observed, so watched and never
 * written; only referenced by name; or the core's own records, Events and
 * the leader Lease). The controller's informers, the API paths (built and
 * checked by kinds_path alone), the check of what render() returns (in
 * the operator and in --script-test alike), the kinds status() observes,
 * the Event recorder, the leader elector and the RBAC test all read this
 * table. No allocation of its own (kinds_path and kinds_describe_rendered
 * append to the caller's dbuf). Uses dbuf.
 */
#ifndef DITTOFS_KINDS_H
#define DITTOFS_KINDS_H

#include <stddef.h>

#include "dbuf.h"

/* The DittoServer's API group and version: the group string lives here. */
#define KINDS_GROUP "dittofs.dittofs.com"
#define KINDS_VERSION "v1alpha1"
#define KINDS_OWNER_API_VERSION KINDS_GROUP "/" KINDS_VERSION
#define KINDS_OWNER_KIND "DittoServer"
#define KINDS_OWNER_PLURAL "dittoservers"

enum kind_role {
    KIND_OWNER,      /* the DittoServer: watched, its status written */
    KIND_RENDERED,   /* a policy may render it: watched, applied, pruned */
    KIND_OBSERVED,   /* watched for status(), never written (Pods: the
                        StatefulSet controller makes them) */
    KIND_REFERENCED, /* only named by rendered objects (a Secret holding S3
                        keys): the core neither reads nor writes it, and
                        RBAC grants nothing on it; known for its API path */
    KIND_RECORD,     /* written by the core for itself, never rendered nor
                        watched: the Events it records (events.c) and the
                        leader-election Lease (leader.c) */
};

/* Indices into kinds_table. The children the controller watches come
 * first (0 .. KINDS_NCHILD-1), in the order observed[] lists them. */
enum {
    KINDS_CONFIGMAP,
    KINDS_SERVICE,
    KINDS_STATEFULSET,
    KINDS_POD,
    KINDS_DITTOSERVER,
    KINDS_SECRET,
    KINDS_EVENT,
    KINDS_LEASE,
    KINDS_N,
    KINDS_NCHILD = KINDS_DITTOSERVER,
};

struct kind_info {
    const char *kind;        /* "StatefulSet" */
    const char *api_version; /* "apps/v1" */
    const char *api_path;    /* "/apis/apps/v1" (made from api_version) */
    const char *plural;      /* "statefulsets" */
    int namespaced;
    enum kind_role role;
};

/* KINDS_N entries, indexed by the enum above. */
extern const struct kind_info kinds_table[KINDS_N];

/* The index of apiVersion/kind in kinds_table, or -1 (either NULL: -1). */
int kinds_find(const char *api_version, const char *kind);

/*
 * The one builder of API paths: appends the path of kinds_table[kind]
 * to `out`, e.g. "/apis/apps/v1/namespaces/NS/statefulsets/NAME", and
 * returns 0. `name` NULL: the collection path; `ns` NULL or "": every
 * namespace (".../statefulsets", a collection only). Returns -1 and
 * appends the reason to `out` instead: a kind outside the table, a name
 * without a namespace, or a name or namespace with characters that would
 * escape the path ('/', '?', '#', '%', space, control characters); a
 * dbuf failure returns -1 too (dbuf_error tells).
 */
int kinds_path(int kind, const char *ns, const char *name, struct dbuf *out);

/* Appends what a policy may render, for messages: "ConfigMaps, Services
 * and StatefulSets (v1 ConfigMap, v1 Service, apps/v1 StatefulSet)".
 * Returns DBUF_OK or the dbuf error. */
int kinds_describe_rendered(struct dbuf *out);

#endif
