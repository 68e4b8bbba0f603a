/*
 * check_cluster: --check-cluster, a diagnostic that drives the real
 * transport (kubeconfig, http, watch) from the binary. Each step names what
 * it tried, so the first failing one tells the user what to fix:
 * configuration, then the server (/version), then the CRD (discovery),
 * then permission to list DittoServers, then an informer sync.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>

#include "cache.h"
#include "check_cluster.h"
#include "http.h"
#include "ljson.h"
#include "kinds.h"
#include "kubeconfig.h"
#include "loop.h"
#include "watch.h"
#include "lyaml.h"

#define GROUP_VERSION KINDS_OWNER_API_VERSION
#define API_PATH "/apis/" GROUP_VERSION
#define RESOURCE KINDS_OWNER_PLURAL
#define CRD_NAME RESOURCE "." KINDS_GROUP
#define CRD_HINT                                                               \
    "the DittoServer CRD is not installed: kubectl apply -f "                  \
    "crd/dittoserver.yaml"
/* Before 1.28 the apiserver does not know the CRD's CEL rules
 * (x-kubernetes-validations): kubectl's validation and a server-side apply
 * refuse the file, a client-side apply drops them (README, Validation). */
#define CRD_HINT_OLD                                                           \
    "the DittoServer CRD is not installed: kubectl apply --validate=false "    \
    "-f crd/dittoserver.yaml (Kubernetes before 1.28: its CEL rules are "      \
    "dropped, validate() enforces them)"
#define CEL_MIN_MINOR 28
#define DEFAULT_SYNC_TIMEOUT_MS 30000

/* One DittoServer of the report; the strings are owned. */
struct row {
    char *namespace;
    char *name;
    char *phase;    /* NULL: no status.phase */
    char *endpoint; /* NULL: no status.nfsEndpoint */
};

struct rows {
    struct row *v;
    size_t n;
    int nomem;
};

/* Everything one run holds; freed in one place (state_free). */
struct state {
    const struct check_cluster_options *o;
    struct kube_conn *conn;
    struct loop *loop;
    struct http_client *http;
    struct watch *watch;
    char *version; /* gitVersion */
    struct rows rows;
    struct dbuf *errs;
};

static void rows_free(struct rows *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].namespace);
        free(r->v[i].name);
        free(r->v[i].phase);
        free(r->v[i].endpoint);
    }
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

static void state_free(struct state *s)
{
    /* The watch uses the client, the client's handles use the connection's
     * TLS material (kube_conn_free's contract): free in that order. */
    watch_free(s->watch);
    s->watch = NULL;
    http_client_free(s->http);
    s->http = NULL;
    loop_free(s->loop);
    s->loop = NULL;
    kube_conn_free(s->conn);
    s->conn = NULL;
    free(s->version);
    s->version = NULL;
    rows_free(&s->rows);
}

/* Where the check talks to, for messages: "https://host:port". */
static const char *server(const struct state *s)
{
    return s->conn != NULL ? kube_conn_server(s->conn) : "?";
}

/*
 * Maps a failed request to an exit code and a message: who we asked, what
 * came back (the apiserver's Status message or libcurl's text, never a
 * header) and, for the usual causes, what to look at.
 */
static int request_failed(struct state *s, const char *path,
                          const struct http_response *r, int rc)
{
    const char *msg = r != NULL && r->message[0] ? r->message : "";
    const char *hint = "";
    if (rc == HTTP_ENOMEM) {
        dbuf_adds(s->errs, "out of memory\n");
        return CHECK_CLUSTER_EOTHER;
    }
    if (rc == HTTP_ENETWORK) {
        /* libcurl's text already names the request ("GET /version: ..."). */
        int tls = strstr(msg, "SSL") != NULL || strstr(msg, "certificate");
        dbuf_addf(s->errs, "cannot connect to %s: %s (%s)\n", server(s), msg,
                  tls ? "TLS: the server's certificate is not signed by the "
                        "certificate authority of the kubeconfig, or does "
                        "not name the server"
                      : "is the server address right and the server up?");
        return CHECK_CLUSTER_ECONNECT;
    }
    switch (rc) {
    case HTTP_ETIMEOUT:
        hint = " (no answer in time: is the server reachable?)";
        break;
    case HTTP_EUNAUTHORIZED:
        hint = " (the credentials were rejected: check the token, client "
               "certificate or exec plugin of the kubeconfig)";
        break;
    case HTTP_EFORBIDDEN:
        hint = " (authenticated, but not allowed: check RBAC)";
        break;
    case HTTP_EAUTH:
        hint = " (cannot obtain credentials)";
        break;
    default:
        break;
    }
    dbuf_addf(s->errs, "GET %s%s: %s%s%s%s\n", server(s), path,
              http_strerror(rc), msg[0] ? ": " : "", msg, hint);
    return CHECK_CLUSTER_ECONNECT;
}

/* A GET; returns the result and *out (free it) on HTTP_OK only. */
static int get(struct state *s, const char *path, struct http_response **out,
               int *code)
{
    struct http_call call = {.method = HTTP_GET, .path = path};
    struct http_response *r = NULL;
    int rc = http_send_sync(s->http, &call, &r);
    *out = NULL;
    if (rc != HTTP_OK) {
        *code = request_failed(s, path, r, rc);
        http_response_free(r);
        return rc;
    }
    *out = r;
    return rc;
}

/* Step 2: the server answers, TLS and the credentials work. */
static int check_version(struct state *s)
{
    struct http_response *r;
    int code = CHECK_CLUSTER_OK;
    if (get(s, "/version", &r, &code) != HTTP_OK)
        return code;
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "gitVersion");
    if (cJSON_IsString(v)) {
        s->version = strdup(v->valuestring);
        if (s->version == NULL) {
            dbuf_adds(s->errs, "out of memory\n");
            code = CHECK_CLUSTER_EOTHER;
        }
    } else {
        dbuf_addf(s->errs,
                  "GET %s/version: the answer has no gitVersion: is this a "
                  "Kubernetes API server?\n",
                  server(s));
        code = CHECK_CLUSTER_ECONNECT;
    }
    cJSON_Delete(j);
    http_response_free(r);
    return code;
}

/* The install hint for this server: gitVersion "v1.MINOR..." below
 * CEL_MIN_MINOR gets the client-side form; anything else (a version that
 * does not parse included) the plain one. */
static const char *crd_hint(const struct state *s)
{
    const char *v = s->version;
    if (v == NULL || strncmp(v, "v1.", 3) != 0 || !isdigit((unsigned char)v[3]))
        return CRD_HINT;
    long minor = strtol(v + 3, NULL, 10);
    return minor < CEL_MIN_MINOR ? CRD_HINT_OLD : CRD_HINT;
}

/* Step 3: discovery lists the dittoservers resource of our group/version.
 * A 404 means no CRD of the group (or not at this version) is served. */
static int check_crd(struct state *s)
{
    struct http_call call = {.method = HTTP_GET, .path = API_PATH};
    struct http_response *r = NULL;
    int found = 0, code = CHECK_CLUSTER_OK;
    int rc = http_send_sync(s->http, &call, &r);
    if (rc == HTTP_ENOTFOUND) {
        dbuf_addf(s->errs, "%s (GET %s%s: 404)\n", crd_hint(s), server(s),
                  API_PATH);
        http_response_free(r);
        return CHECK_CLUSTER_ENOCRD;
    }
    if (rc != HTTP_OK) {
        code = request_failed(s, API_PATH, r, rc);
        http_response_free(r);
        return code;
    }
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "resources");
    const cJSON *it;
    cJSON_ArrayForEach(it, res)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, RESOURCE) == 0)
            found = 1;
    }
    cJSON_Delete(j);
    http_response_free(r);
    if (!found) {
        dbuf_addf(s->errs, "%s (%s%s does not list %s)\n", crd_hint(s),
                  server(s), API_PATH, RESOURCE);
        return CHECK_CLUSTER_ENOCRD;
    }
    return CHECK_CLUSTER_OK;
}

/* The collection path, namespaced or not, with an optional query. */
static void list_path(const struct state *s, char *buf, size_t len,
                      const char *query)
{
    const char *ns = s->o->namespace;
    if (ns != NULL && ns[0] != '\0')
        snprintf(buf, len, "%s/namespaces/%s/%s%s", API_PATH, ns, RESOURCE,
                 query);
    else
        snprintf(buf, len, "%s/%s%s", API_PATH, RESOURCE, query);
}

/*
 * Step 4: may we list? One small request turns a missing RBAC rule into a
 * 403 with the apiserver's message at once, where the informer would only
 * retry with backoff until the sync deadline.
 */
static int check_list(struct state *s)
{
    char path[1024];
    struct http_response *r;
    int code = CHECK_CLUSTER_OK;
    list_path(s, path, sizeof(path), "?limit=1");
    if (get(s, path, &r, &code) != HTTP_OK)
        return code;
    http_response_free(r);
    return CHECK_CLUSTER_OK;
}

static char *dup_status_string(const cJSON *status, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(status, key);
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return NULL;
    return strdup(v->valuestring);
}

/* cache_list callback: one row per object. */
static int collect(const struct cache_obj *o, void *arg)
{
    struct rows *rows = arg;
    struct row *v = realloc(rows->v, (rows->n + 1) * sizeof(*v));
    if (v == NULL) {
        rows->nomem = 1;
        return 1;
    }
    rows->v = v;
    struct row *row = &v[rows->n++];
    memset(row, 0, sizeof(*row));
    row->namespace = strdup(cache_obj_namespace(o));
    row->name = strdup(cache_obj_name(o));
    cJSON *j = cache_obj_parse(o);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    row->phase = dup_status_string(st, "phase");
    row->endpoint = dup_status_string(st, "nfsEndpoint");
    cJSON_Delete(j);
    if (row->namespace == NULL || row->name == NULL || j == NULL)
        rows->nomem = 1;
    return rows->nomem;
}

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    int c = strcmp(x->namespace, y->namespace);
    return c != 0 ? c : strcmp(x->name, y->name);
}

/* Step 5: the informer the controller will run, until its first sync. */
static int sync_informer(struct state *s)
{
    struct watch_opts wo = {
        .api_path = API_PATH,
        .resource = RESOURCE,
        .namespace = s->o->namespace,
    };
    uint64_t limit =
        s->o->sync_timeout_ms ? s->o->sync_timeout_ms : DEFAULT_SYNC_TIMEOUT_MS;
    s->watch = watch_new(s->http, &wo);
    if (s->watch == NULL || watch_start(s->watch) != 0) {
        dbuf_adds(s->errs, "out of memory\n");
        return CHECK_CLUSTER_EOTHER;
    }
    uint64_t deadline = loop_now_ms() + limit;
    while (!watch_synced(s->watch)) {
        uint64_t now = loop_now_ms();
        if (now >= deadline) {
            const char *e = watch_last_error(s->watch);
            dbuf_addf(s->errs,
                      "the %s informer did not sync within %llu ms%s%s\n",
                      watch_name(s->watch), (unsigned long long)limit,
                      e[0] ? "; last error: " : "", e);
            return CHECK_CLUSTER_ECONNECT;
        }
        uint64_t left = deadline - now;
        if (loop_run_once(s->loop, left > 1000 ? 1000 : (int)left) != 0) {
            dbuf_adds(s->errs, "the event loop failed (libcurl multi)\n");
            return CHECK_CLUSTER_ECONNECT;
        }
    }
    cache_list(watch_cache(s->watch), NULL, NULL, collect, &s->rows);
    if (s->rows.nomem) {
        dbuf_adds(s->errs, "out of memory\n");
        return CHECK_CLUSTER_EOTHER;
    }
    if (s->rows.n > 1)
        qsort(s->rows.v, s->rows.n, sizeof(*s->rows.v), row_cmp);
    return CHECK_CLUSTER_OK;
}

/* --- the report -------------------------------------------------------- */

static const char *dash(const char *s)
{
    return s != NULL ? s : "-";
}

static int all_namespaces(const struct state *s)
{
    return s->o->namespace == NULL || s->o->namespace[0] == '\0';
}

/* The text report: a few "key: value" lines, then one aligned line per
 * DittoServer. */
static int report_text(const struct state *s, struct dbuf *out)
{
    int wkey = (int)strlen("NAMESPACE/NAME"), wphase = (int)strlen("PHASE");
    int rc = 0;
    for (size_t i = 0; i < s->rows.n; i++) {
        const struct row *r = &s->rows.v[i];
        int k = (int)(strlen(r->namespace) + 1 + strlen(r->name));
        int p = (int)strlen(dash(r->phase));
        wkey = k > wkey ? k : wkey;
        wphase = p > wphase ? p : wphase;
    }
    rc |= dbuf_addf(out, "config: %s\n", kube_conn_source(s->conn));
    rc |= dbuf_addf(out, "server: %s\n", kube_conn_server(s->conn));
    rc |= dbuf_addf(out, "version: %s\n", s->version);
    rc |= dbuf_addf(out, "crd: %s/%s is served\n", CRD_NAME, "v1alpha1");
    if (all_namespaces(s))
        rc |=
            dbuf_addf(out, "dittoservers in all namespaces: %zu\n", s->rows.n);
    else
        rc |= dbuf_addf(out, "dittoservers in namespace %s: %zu\n",
                        s->o->namespace, s->rows.n);
    if (s->rows.n == 0)
        return rc != 0 ? -1 : 0;
    rc |= dbuf_addf(out, "%-*s  %-*s  %s\n", wkey, "NAMESPACE/NAME", wphase,
                    "PHASE", "NFS ENDPOINT");
    for (size_t i = 0; i < s->rows.n; i++) {
        const struct row *r = &s->rows.v[i];
        int k = (int)(strlen(r->namespace) + 1 + strlen(r->name));
        rc |=
            dbuf_addf(out, "%s/%s%*s  %-*s  %s\n", r->namespace, r->name,
                      wkey - k, "", wphase, dash(r->phase), dash(r->endpoint));
    }
    return rc != 0 ? -1 : 0;
}

/* Adds `item` (may be NULL after a failed allocation) to `obj` under
 * `key`, or to the array `obj` when key is NULL; frees it when that fails.
 * Returns 0 or -1. */
static int add(cJSON *obj, const char *key, cJSON *item)
{
    cJSON_bool ok =
        item != NULL && (key != NULL ? cJSON_AddItemToObject(obj, key, item)
                                     : cJSON_AddItemToArray(obj, item));
    if (!ok)
        cJSON_Delete(item);
    return ok ? 0 : -1;
}

static cJSON *string_or_null(const char *v)
{
    return v != NULL ? cJSON_CreateString(v) : cJSON_CreateNull();
}

/* The report as a tree (the caller owns it); NULL when out of memory. */
static cJSON *report_tree(const struct state *s)
{
    cJSON *t = cJSON_CreateObject(), *list = cJSON_CreateArray();
    int rc = 0;
    if (t == NULL || add(t, "dittoServers", list) != 0) {
        cJSON_Delete(t);
        return NULL;
    }
    rc |= add(t, "config", cJSON_CreateString(kube_conn_source(s->conn)));
    rc |= add(t, "server", cJSON_CreateString(kube_conn_server(s->conn)));
    rc |= add(t, "serverVersion", cJSON_CreateString(s->version));
    rc |= add(t, "crd", cJSON_CreateString(CRD_NAME "/v1alpha1"));
    rc |= add(t, "namespace",
              all_namespaces(s) ? cJSON_CreateNull()
                                : cJSON_CreateString(s->o->namespace));
    for (size_t i = 0; rc == 0 && i < s->rows.n; i++) {
        const struct row *r = &s->rows.v[i];
        cJSON *o = cJSON_CreateObject();
        if (add(list, NULL, o) != 0) {
            rc = -1;
            break;
        }
        rc |= add(o, "namespace", cJSON_CreateString(r->namespace));
        rc |= add(o, "name", cJSON_CreateString(r->name));
        rc |= add(o, "phase", string_or_null(r->phase));
        rc |= add(o, "nfsEndpoint", string_or_null(r->endpoint));
    }
    if (rc != 0) {
        cJSON_Delete(t);
        return NULL;
    }
    return t;
}

/* YAML or JSON through the project's encoders (sorted keys, Kubernetes'
 * quoting), so the output reads like --script-test's. */
static int report_structured(const struct state *s, struct dbuf *out, char *err,
                             size_t errlen)
{
    cJSON *t = report_tree(s);
    lua_State *L = luaL_newstate();
    int rc = -1;
    snprintf(err, errlen, "out of memory");
    if (t == NULL || L == NULL)
        goto done;
    if (json_push_cjson(L, t, err, errlen) != 0)
        goto done;
    if (s->o->output == CHECK_CLUSTER_JSON) {
        rc = json_encode(L, -1, out, err, errlen);
        if (rc == 0 && dbuf_addc(out, '\n') != 0)
            rc = -1;
    } else {
        rc = yaml_encode(L, -1, out, err, errlen);
    }
done:
    if (L != NULL)
        lua_close(L);
    cJSON_Delete(t);
    return rc;
}

/* --- entry point -------------------------------------------------------- */

int check_cluster_run(const struct check_cluster_options *o, struct dbuf *out,
                      struct dbuf *errs)
{
    struct state s;
    struct kubeconfig_opts ko;
    char err[1024];
    int code;

    memset(&s, 0, sizeof(s));
    memset(&ko, 0, sizeof(ko));
    s.o = o;
    s.errs = errs;
    ko.path = o->kubeconfig;
    ko.context = o->context;

    /* Step 1: the configuration, resolved as the operator will. */
    int rc = kube_conn_load(&s.conn, &ko, err, sizeof(err));
    if (rc != KUBE_CONN_OK) {
        dbuf_addf(errs, "cannot load the Kubernetes configuration: %s\n",
                  rc == KUBE_CONN_ENOMEM ? "out of memory" : err);
        code = rc == KUBE_CONN_ENOMEM ? CHECK_CLUSTER_EOTHER
                                      : CHECK_CLUSTER_ECONNECT;
        goto done;
    }
    struct http_opts ho = {.qps = o->qps, .burst = o->burst};
    s.loop = loop_new();
    s.http = s.loop != NULL ? http_client_new(s.loop, s.conn, &ho) : NULL;
    if (s.http == NULL) {
        dbuf_adds(errs, "out of memory (or libcurl failed to initialise)\n");
        code = CHECK_CLUSTER_EOTHER;
        goto done;
    }

    code = check_version(&s);
    if (code == CHECK_CLUSTER_OK)
        code = check_crd(&s);
    if (code == CHECK_CLUSTER_OK)
        code = check_list(&s);
    if (code == CHECK_CLUSTER_OK)
        code = sync_informer(&s);
    if (code != CHECK_CLUSTER_OK)
        goto done;

    if (o->output == CHECK_CLUSTER_TEXT)
        rc = report_text(&s, out);
    else
        rc = report_structured(&s, out, err, sizeof(err));
    if (rc != 0) {
        /* Nothing half-written may reach stdout. */
        dbuf_reset(out);
        dbuf_addf(errs, "cannot format the report: %s\n",
                  o->output == CHECK_CLUSTER_TEXT ? "out of memory" : err);
        code = CHECK_CLUSTER_EOTHER;
    }
done:
    state_free(&s);
    return code;
}
