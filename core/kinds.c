/* kinds: the managed kinds table; see kinds.h for the contract. */
#include <string.h>

#include "kinds.h"

/* The core group ("v1") is served under /api, every named group under
 * /apis: the path is made from the apiVersion, not written again. */
#define CORE(kind, version, plural, role)                                      \
    {                                                                          \
        kind, version, "/api/" version, plural, 1, role                        \
    }
#define NAMED(kind, group_version, plural, role)                               \
    {                                                                          \
        kind, group_version, "/apis/" group_version, plural, 1, role           \
    }

const struct kind_info kinds_table[KINDS_N] = {
    [KINDS_CONFIGMAP] = CORE("ConfigMap", "v1", "configmaps", KIND_RENDERED),
    [KINDS_SERVICE] = CORE("Service", "v1", "services", KIND_RENDERED),
    [KINDS_STATEFULSET] =
        NAMED("StatefulSet", "apps/v1", "statefulsets", KIND_RENDERED),
    [KINDS_POD] = CORE("Pod", "v1", "pods", KIND_OBSERVED),
    [KINDS_DITTOSERVER] = NAMED(KINDS_OWNER_KIND, KINDS_OWNER_API_VERSION,
                                KINDS_OWNER_PLURAL, KIND_OWNER),
    [KINDS_SECRET] = CORE("Secret", "v1", "secrets", KIND_REFERENCED),
    [KINDS_EVENT] = CORE("Event", "v1", "events", KIND_RECORD),
    [KINDS_LEASE] =
        NAMED("Lease", "coordination.k8s.io/v1", "leases", KIND_RECORD),
};

int kinds_find(const char *api_version, const char *kind)
{
    if (api_version == NULL || kind == NULL)
        return -1;
    for (int i = 0; i < KINDS_N; i++)
        if (strcmp(kinds_table[i].api_version, api_version) == 0 &&
            strcmp(kinds_table[i].kind, kind) == 0)
            return i;
    return -1;
}

/* 1 when s is a non-empty path segment that stays one: no '/', '?', '#',
 * '%', space or control character. */
static int path_safe(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' ||
            c == '%')
            return 0;
    }
    return 1;
}

int kinds_path(int kind, const char *ns, const char *name, struct dbuf *out)
{
    if (kind < 0 || kind >= KINDS_N) {
        dbuf_addf(out, "no kind %d in the kinds table", kind);
        return -1;
    }
    const struct kind_info *k = &kinds_table[kind];
    int has_ns = ns != NULL && ns[0] != '\0';
    if (name != NULL && (!has_ns || name[0] == '\0')) {
        dbuf_addf(out, "%s \"%s\": a name needs a namespace", k->kind, name);
        return -1;
    }
    if ((has_ns && !path_safe(ns)) || (name != NULL && !path_safe(name))) {
        dbuf_addf(out, "%s: invalid namespace or name", k->kind);
        return -1;
    }
    int rc;
    if (has_ns)
        rc = dbuf_addf(out, "%s/namespaces/%s/%s", k->api_path, ns, k->plural);
    else
        rc = dbuf_addf(out, "%s/%s", k->api_path, k->plural);
    if (rc == DBUF_OK && name != NULL)
        rc = dbuf_addf(out, "/%s", name);
    return rc == DBUF_OK ? 0 : -1;
}

int kinds_describe_rendered(struct dbuf *out)
{
    int n = 0, total = 0, rc = DBUF_OK;
    for (int i = 0; i < KINDS_N; i++)
        total += kinds_table[i].role == KIND_RENDERED;
    for (int i = 0; i < KINDS_N && rc == DBUF_OK; i++) {
        if (kinds_table[i].role != KIND_RENDERED)
            continue;
        n++;
        rc = dbuf_addf(out, "%s%ss",
                       n == 1       ? ""
                       : n == total ? " and "
                                    : ", ",
                       kinds_table[i].kind);
    }
    n = 0;
    for (int i = 0; i < KINDS_N && rc == DBUF_OK; i++) {
        if (kinds_table[i].role != KIND_RENDERED)
            continue;
        rc = dbuf_addf(out, "%s%s %s", n++ ? ", " : " (",
                       kinds_table[i].api_version, kinds_table[i].kind);
    }
    return rc == DBUF_OK ? dbuf_addc(out, ')') : rc;
}
