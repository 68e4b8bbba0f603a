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
