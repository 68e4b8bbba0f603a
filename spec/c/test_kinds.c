/*
 * test_kinds: the managed kinds table (core/kinds.h) against the RBAC the
 * bundle grants (deploy/rbac/cluster_role.yaml): a rendered kind gets
 * exactly get/list/watch/create/patch/update/delete, an observed one
 * exactly get/list/watch, the DittoServer get/list/watch plus its status
 * (get/patch/update) and finalizers (update), a referenced one nothing,
 * the core's own records their writers' verbs (Events create/patch; the
 * Lease nothing here, get/create/update in the leader-election Role);
 * and the roles grant no resource the table does not hold. Also the
 * lookups, the paths kinds_path builds and refuses, and the message
 * naming what a policy may render.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "kinds.h"
#include "lcodec.h"
#include "testlib.h"
#include "lyaml.h"

#define ROLE_FILE "deploy/rbac/cluster_role.yaml"
#define LEADER_ROLE_FILE "deploy/rbac/leader_election_role.yaml"

static const char *const all_verbs[] = {"get",   "list",   "watch", "create",
                                        "patch", "update", "delete"};
#define NVERBS (sizeof(all_verbs) / sizeof(all_verbs[0]))

/* The API group of an apiVersion: "" for "v1", "apps" for "apps/v1". */
static void group_of(const char *api_version, char *out, size_t len)
{
    const char *slash = strchr(api_version, '/');
    size_t n = slash ? (size_t)(slash - api_version) : 0;
    snprintf(out, len, "%.*s", (int)n, api_version);
}

/* 1 when the list at the top of the stack holds the string s. */
static int list_has(lua_State *L, const char *s)
{
    int n = (int)lua_rawlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        int yes = lua_type(L, -1) == LUA_TSTRING &&
                  strcmp(lua_tostring(L, -1), s) == 0;
        lua_pop(L, 1);
        if (yes)
            return 1;
    }
    return 0;
}

/* The verbs the role (a rules list at index `rules`) grants on
 * group/resource, as a bit set over all_verbs; bit NVERBS: a verb outside
 * them. */
static unsigned granted(lua_State *L, int rules, const char *group,
                        const char *resource)
{
    unsigned bits = 0;
    int n = (int)lua_rawlen(L, rules);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, rules, i);
        lua_getfield(L, -1, "apiGroups");
        int g = list_has(L, group);
        lua_pop(L, 1);
        lua_getfield(L, -1, "resources");
        int r = list_has(L, resource);
        lua_pop(L, 1);
        if (g && r) {
            lua_getfield(L, -1, "verbs");
            int nv = (int)lua_rawlen(L, -1);
            for (int v = 1; v <= nv; v++) {
                lua_rawgeti(L, -1, v);
                const char *verb = lua_tostring(L, -1);
                size_t k = 0;
                while (k < NVERBS && strcmp(all_verbs[k], verb) != 0)
                    k++;
                bits |= 1u << k;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return bits;
}

static unsigned verbs(int n)
{
    return (1u << n) - 1; /* the first n of all_verbs */
}

/* Pushes the rules list of the first document of the role file `path`
 * and returns its stack index. */
static int push_rules(lua_State *L, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        printf("Bail out! %s: cannot open (run from the source tree)\n", path);
        exit(1);
    }
    static char text[65536];
    size_t len = fread(text, 1, sizeof(text), f);
    fclose(f);
    char err[256];
    if (yaml_push_all(L, text, len, NULL, err, sizeof(err)) != 0) {
        printf("Bail out! %s: %s\n", path, err);
        exit(1);
    }
    lua_rawgeti(L, -1, 1);
    lua_getfield(L, -1, "rules");
    return lua_gettop(L);
}

/* No resource in the rules at index `rules` (of role file `file`) is
 * outside the kinds table. */
static void check_known(lua_State *L, int rules, const char *file)
{
    char group[64], res[128];
    int n = (int)lua_rawlen(L, rules);
    for (int r = 1; r <= n; r++) {
        lua_rawgeti(L, rules, r);
        lua_getfield(L, -1, "apiGroups");
        lua_rawgeti(L, -1, 1);
        snprintf(group, sizeof(group), "%s", lua_tostring(L, -1));
        lua_pop(L, 2);
        lua_getfield(L, -1, "resources");
        int nr = (int)lua_rawlen(L, -1);
        for (int j = 1; j <= nr; j++) {
            lua_rawgeti(L, -1, j);
            snprintf(res, sizeof(res), "%s", lua_tostring(L, -1));
            lua_pop(L, 1);
            char *sub = strchr(res, '/');
            if (sub != NULL)
                *sub = '\0';
            int known = 0;
            for (int i = 0; i < KINDS_N && !known; i++) {
                char g2[64];
                group_of(kinds_table[i].api_version, g2, sizeof(g2));
                known = strcmp(kinds_table[i].plural, res) == 0 &&
                        strcmp(g2, group) == 0;
            }
            CHECK(known, "%s: %s/%s is in the kinds table", file, group, res);
        }
        lua_pop(L, 2);
    }
}

static void test_rbac(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "codec", codec_open, 1);
    lua_pop(L, 1);
    int rules = push_rules(L, ROLE_FILE);
    int lrules = push_rules(L, LEADER_ROLE_FILE);

    char group[64], res[128];
    for (int i = 0; i < KINDS_N; i++) {
        const struct kind_info *k = &kinds_table[i];
        group_of(k->api_version, group, sizeof(group));
        unsigned g = granted(L, rules, group, k->plural);
        switch (k->role) {
        case KIND_RENDERED:
            CHECK(g == verbs(7), "%s: rendered, every verb granted (%#x)",
                  k->kind, g);
            break;
        case KIND_OBSERVED:
            CHECK(g == verbs(3), "%s: observed, get/list/watch only (%#x)",
                  k->kind, g);
            break;
        case KIND_OWNER:
            CHECK(g == verbs(3), "%s: get/list/watch (%#x)", k->kind, g);
            snprintf(res, sizeof(res), "%s/status", k->plural);
            g = granted(L, rules, group, res);
            CHECK(g == ((1u << 0) | (1u << 4) | (1u << 5)),
                  "%s: status get/patch/update (%#x)", k->kind, g);
            snprintf(res, sizeof(res), "%s/finalizers", k->plural);
            g = granted(L, rules, group, res);
            CHECK(g == (1u << 5), "%s: finalizers update (%#x)", k->kind, g);
            break;
        case KIND_REFERENCED:
            CHECK(g == 0, "%s: referenced only, nothing granted (%#x)", k->kind,
                  g);
            break;
        case KIND_RECORD:
            if (i == KINDS_EVENT) {
                CHECK(g == ((1u << 3) | (1u << 4)),
                      "%s: the recorder's create/patch only (%#x)", k->kind, g);
            } else {
                unsigned lg = granted(L, lrules, group, k->plural);
                CHECK(g == 0 && lg == ((1u << 0) | (1u << 3) | (1u << 5)),
                      "%s: nothing cluster-wide, the elector's get/create/"
                      "update in its namespace (%#x, %#x)",
                      k->kind, g, lg);
            }
            break;
        }
    }
    check_known(L, rules, ROLE_FILE);
    check_known(L, lrules, LEADER_ROLE_FILE);
    lua_close(L);
}

/* kinds_path's result, or its message on -1 ("!" prefixed); a static
 * buffer. */
static const char *path_of(int kind, const char *ns, const char *name)
{
    static char out[1100];
    struct dbuf b;
    dbuf_init(&b, 1024);
    int rc = kinds_path(kind, ns, name, &b);
    snprintf(out, sizeof(out), "%s%s", rc != 0 ? "!" : "", dbuf_ptr(&b));
    dbuf_free(&b);
    return out;
}

static void test_paths(void)
{
    CHECK_STR_EQ(path_of(KINDS_EVENT, "ns1", NULL),
                 "/api/v1/namespaces/ns1/events", "the Events collection");
    CHECK_STR_EQ(path_of(KINDS_EVENT, "ns1", "d.0123456789abcdef"),
                 "/api/v1/namespaces/ns1/events/d.0123456789abcdef",
                 "an Event");
    CHECK_STR_EQ(path_of(KINDS_LEASE, "dittofs-system", "lead"),
                 "/apis/coordination.k8s.io/v1/namespaces/dittofs-system/"
                 "leases/lead",
                 "the leader Lease");
    CHECK_STR_EQ(path_of(KINDS_LEASE, "dittofs-system", NULL),
                 "/apis/coordination.k8s.io/v1/namespaces/dittofs-system/"
                 "leases",
                 "the Leases collection");
    CHECK_STR_EQ(path_of(KINDS_DITTOSERVER, NULL, NULL),
                 "/apis/" KINDS_OWNER_API_VERSION "/" KINDS_OWNER_PLURAL,
                 "every namespace's DittoServers");
    CHECK_STR_EQ(path_of(KINDS_N, "ns", "x"), "!no kind 8 in the kinds table",
                 "a kind outside the table");
    CHECK_STR_EQ(path_of(-1, "ns", "x"), "!no kind -1 in the kinds table",
                 "a negative kind");
    CHECK_STR_EQ(path_of(KINDS_LEASE, "", "lead"),
                 "!Lease \"lead\": a name needs a namespace",
                 "a name without a namespace");
    CHECK_STR_EQ(path_of(KINDS_LEASE, "ns", ""),
                 "!Lease \"\": a name needs a namespace", "an empty name");
    CHECK_STR_EQ(path_of(KINDS_EVENT, "ns", "../x"),
                 "!Event: invalid namespace or name",
                 "a name escaping the path");
    CHECK_STR_EQ(path_of(KINDS_EVENT, "a b", NULL),
                 "!Event: invalid namespace or name",
                 "a namespace with a space");
    struct dbuf b;
    dbuf_init(&b, 20);
    CHECK(kinds_path(KINDS_LEASE, "dittofs-system", "lead", &b) == -1 &&
              dbuf_error(&b) == DBUF_TOOBIG,
          "a path longer than the buffer: -1, the dbuf error set");
    dbuf_free(&b);
}

static void test_lookups(void)
{
    CHECK(kinds_find("apps/v1", "StatefulSet") == KINDS_STATEFULSET &&
              kinds_find("v1", "Pod") == KINDS_POD &&
              kinds_find(KINDS_OWNER_API_VERSION, "DittoServer") ==
                  KINDS_DITTOSERVER,
          "kinds_find");
    CHECK(kinds_find("v1", "StatefulSet") == -1 &&
              kinds_find("rbac.authorization.k8s.io/v1", "RoleBinding") == -1 &&
              kinds_find(NULL, "Pod") == -1,
          "kinds_find: -1 for anything else");
    CHECK_STR_EQ(kinds_table[KINDS_STATEFULSET].api_path, "/apis/apps/v1",
                 "api_path of a named group");
    CHECK_STR_EQ(kinds_table[KINDS_CONFIGMAP].api_path, "/api/v1",
                 "api_path of the core group");
    struct dbuf b;
    dbuf_init(&b, 1024);
    kinds_describe_rendered(&b);
    CHECK_STR_EQ(dbuf_ptr(&b),
                 "ConfigMaps, Services and StatefulSets (v1 ConfigMap, v1 "
                 "Service, apps/v1 StatefulSet)",
                 "kinds_describe_rendered");
    dbuf_free(&b);
    for (int i = 0; i < KINDS_NCHILD; i++)
        CHECK(kinds_table[i].role == KIND_RENDERED ||
                  kinds_table[i].role == KIND_OBSERVED,
              "%s: the children come first", kinds_table[i].kind);
}

int main(void)
{
    test_lookups();
    test_paths();
    test_rbac();
    return TEST_SUMMARY();
}
