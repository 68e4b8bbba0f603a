/*
 * script_diff: --script-test FILE --diff. See script_diff.h for the
 * contract.
 *
 * One trusted host Lua state holds the data (never the sandbox: the policy
 * runs inside script_test_run, in its own). The work runs in one protected
 * call (p_main); everything it allocates outside Lua lives in struct sd
 * and is freed in one place, so an error raised midway leaks nothing.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>

#include "apply.h"
#include "http.h"
#include "jscan.h"
#include "kinds.h"
#include "kubeconfig.h"
#include "ljson.h"
#include "loop.h"
#include "lyaml.h"
#include "policy.h"
#include "script_diff.h"

#define DRY_RUN_QUERY                                                          \
    "?fieldManager=" APPLY_FIELD_MANAGER "&force=true&dryRun=All"
/* Lines of context around a change, as diff -u. */
#define CONTEXT 3
/* Largest LCS table (cells) before an object is shown replaced whole. */
#define MAX_CELLS ((size_t)4 << 20)

struct sd {
    const struct script_diff_options *o;
    struct dbuf *out, *errs;
    struct kube_conn *conn;
    struct loop *loop;
    struct http_client *http;
    struct http_response *resp; /* the last response, freed before the next */
    struct dbuf path, body, rendered, a, b;
    cJSON *cj;   /* a live object or status, converted for apply.c */
    cJSON *root; /* what the controller would render */
    char ns[64], name[254], uid[128];
    int code;    /* exit code of a raised failure */
    int refused; /* the apiserver refused a rendered object */
    size_t n_change, n_create, n_delete;
    int status_changed;
};

static void sd_free(struct sd *s)
{
    http_response_free(s->resp);
    http_client_free(s->http);
    loop_free(s->loop);
    kube_conn_free(s->conn);
    dbuf_free(&s->path);
    dbuf_free(&s->body);
    dbuf_free(&s->rendered);
    dbuf_free(&s->a);
    dbuf_free(&s->b);
    cJSON_Delete(s->cj);
    cJSON_Delete(s->root);
}

/* Records the exit code and raises the message. */
static int fail(lua_State *L, struct sd *s, int code, const char *fmt, ...)
{
    va_list ap;
    s->code = code;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

static void check_dbuf(lua_State *L, struct sd *s, int rc)
{
    if (rc != DBUF_OK)
        fail(L, s, SCRIPT_TEST_EINPUT, "out of memory");
}

static const char *field_string(lua_State *L, int t, const char *k)
{
    if (lua_type(L, t) != LUA_TTABLE)
        return NULL;
    lua_getfield(L, t, k);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return v;
}

/* One request; raises on a transport or HTTP failure except 404 (returned
 * as HTTP_ENOTFOUND, and as HTTP_EINVALID/EBADREQUEST/ECONFLICT for a
 * dry-run apply, which the caller reports). The body is in s->resp. */
static int request(lua_State *L, struct sd *s, enum http_method m,
                   const char *content_type, const struct dbuf *body)
{
    struct http_call call = {.method = m,
                             .path = dbuf_ptr(&s->path),
                             .content_type = content_type,
                             .body = body ? dbuf_ptr(body) : NULL,
                             .body_len = body ? dbuf_len(body) : 0};
    http_response_free(s->resp);
    s->resp = NULL;
    int rc = http_send_sync(s->http, &call, &s->resp);
    if (rc == HTTP_OK || rc == HTTP_ENOTFOUND)
        return rc;
    if (m == HTTP_PATCH &&
        (rc == HTTP_EINVALID || rc == HTTP_EBADREQUEST || rc == HTTP_ECONFLICT))
        return rc;
    const char *msg = s->resp && s->resp->message[0] ? s->resp->message : "";
    return fail(L, s,
                rc == HTTP_ENOMEM ? SCRIPT_TEST_EINPUT : SCRIPT_DIFF_ECONNECT,
                "%s %s: %s%s%s", http_method_name(m), dbuf_ptr(&s->path),
                http_strerror(rc), msg[0] ? ": " : "", msg);
}

/* Pushes the JSON body of s->resp. */
static void push_body(lua_State *L, struct sd *s)
{
    char err[256];
    if (json_push(L, s->resp->body, s->resp->body_len, NULL, err,
                  sizeof(err)) != 0)
        fail(L, s, SCRIPT_DIFF_ECONNECT, "%s: the answer: %s",
             dbuf_ptr(&s->path), err);
}

/* s->path = the API path of kind `k` (a collection when name is NULL). */
static void set_path(lua_State *L, struct sd *s, int k, const char *name)
{
    dbuf_reset(&s->path);
    if (apply_path(kinds_table[k].api_version, kinds_table[k].kind, s->ns, name,
                   &s->path) != 0)
        fail(L, s, SCRIPT_TEST_EINPUT, "%s", dbuf_ptr(&s->path));
}

/* --- the diff ------------------------------------------------------------ */

struct line {
    const char *p;
    int n;
};

/* Splits s (NUL-terminated) into lines; *n set. NULL when out of memory
 * (an empty text has no lines and returns a non-NULL pointer). */
static struct line *split_lines(const char *s, size_t *n)
{
    size_t cap = 1;
    for (const char *q = s; *q; q++)
        cap += *q == '\n';
    struct line *v = malloc(cap * sizeof(*v));
    *n = 0;
    if (v == NULL)
        return NULL;
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        v[(*n)++] = (struct line){s, (int)len};
        s += len + (nl ? 1 : 0);
    }
    return v;
}

static int line_eq(const struct line *a, const struct line *b)
{
    return a->n == b->n && memcmp(a->p, b->p, (size_t)a->n) == 0;
}

/* One edit: ' ' both, '-' only in a, '+' only in b. */
struct edit {
    char op;
    int ai, bi;
};

/*
 * The edit script from a to b: a longest common subsequence by dynamic
 * programming (the objects are a few hundred lines), or, past MAX_CELLS,
 * a whole replacement. Returns the count, -1 when out of memory.
 */
static long edits(const struct line *a, size_t na, const struct line *b,
                  size_t nb, struct edit **out)
{
    struct edit *e = malloc((na + nb + 1) * sizeof(*e));
    long k = 0;
    *out = e;
    if (e == NULL)
        return -1;
    uint32_t *t = NULL;
    if ((na + 1) * (nb + 1) <= MAX_CELLS)
        t = calloc((na + 1) * (nb + 1), sizeof(*t));
    if (t != NULL) {
        /* t[i][j]: the LCS length of a[i..] and b[j..] */
        for (size_t i = na; i-- > 0;)
            for (size_t j = nb; j-- > 0;) {
                uint32_t *c = &t[i * (nb + 1) + j];
                if (line_eq(&a[i], &b[j]))
                    *c = t[(i + 1) * (nb + 1) + j + 1] + 1;
                else {
                    uint32_t d = t[(i + 1) * (nb + 1) + j];
                    uint32_t r = t[i * (nb + 1) + j + 1];
                    *c = d >= r ? d : r;
                }
            }
        size_t i = 0, j = 0;
        while (i < na || j < nb) {
            if (i < na && j < nb && line_eq(&a[i], &b[j])) {
                e[k++] = (struct edit){' ', (int)i++, (int)j++};
            } else if (j < nb && (i == na || t[i * (nb + 1) + j + 1] >=
                                                 t[(i + 1) * (nb + 1) + j])) {
                e[k++] = (struct edit){'+', (int)i, (int)j++};
            } else {
                e[k++] = (struct edit){'-', (int)i++, (int)j};
            }
        }
        free(t);
        return k;
    }
    if ((na + 1) * (nb + 1) <= MAX_CELLS) /* calloc failed */
        return -1;
    for (size_t i = 0; i < na; i++)
        e[k++] = (struct edit){'-', (int)i, 0};
    for (size_t j = 0; j < nb; j++)
        e[k++] = (struct edit){'+', (int)na, (int)j};
    return k;
}

/* Appends the hunks of an edit script, diff -u style. */
static int hunks(struct dbuf *out, const struct edit *e, long n,
                 const struct line *a, const struct line *b)
{
    int rc = DBUF_OK;
    long i = 0;
    while (i < n) {
        while (i < n && e[i].op == ' ')
            i++;
        if (i == n)
            break;
        long start = i >= CONTEXT ? i - CONTEXT : 0, end = i;
        /* Extend over changes closer than two contexts apart. */
        for (long j = i; j < n; j++) {
            if (e[j].op != ' ') {
                end = j + 1;
                continue;
            }
            if (j - end >= 2 * CONTEXT)
                break;
        }
        long stop = end + CONTEXT < n ? end + CONTEXT : n;
        int a0 = e[start].ai, b0 = e[start].bi, na = 0, nb = 0;
        for (long j = start; j < stop; j++) {
            na += e[j].op != '+';
            nb += e[j].op != '-';
        }
        rc |= dbuf_addf(out, "@@ -%d,%d +%d,%d @@\n", na ? a0 + 1 : a0, na,
                        nb ? b0 + 1 : b0, nb);
        for (long j = start; j < stop; j++) {
            const struct line *l = e[j].op == '+' ? &b[e[j].bi] : &a[e[j].ai];
            rc |= dbuf_addf(out, "%c%.*s\n", e[j].op, l->n, l->p);
        }
        i = stop;
    }
    return rc == DBUF_OK ? 0 : -1;
}

/* Appends a unified diff of texts a and b under the two names; returns 1
 * when they differ, 0 when equal, -1 when out of memory. */
static int udiff(struct dbuf *out, const char *a_name, const char *a,
                 const char *b_name, const char *b)
{
    if (strcmp(a, b) == 0)
        return 0;
    size_t na, nb;
    struct line *la = split_lines(a, &na), *lb = split_lines(b, &nb);
    struct edit *e = NULL;
    long n = la && lb ? edits(la, na, lb, nb, &e) : -1;
    int rc = n < 0 ? -1 : 1;
    if (rc == 1 &&
        (dbuf_addf(out, "--- %s\n+++ %s\n", a_name, b_name) != DBUF_OK ||
         hunks(out, e, n, la, lb) != 0))
        rc = -1;
    free(la);
    free(lb);
    free(e);
    return rc;
}

/* --- objects ---------------------------------------------------------------
 */

/* Drops what the server owns and a diff must not show: the bookkeeping
 * metadata, and a child's status (written by its controller, not us). */
static void normalize(lua_State *L, int idx, int drop_status)
{
    static const char *const md_keys[] = {"managedFields", "resourceVersion",
                                          "uid",           "creationTimestamp",
                                          "generation",    "selfLink"};
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE)
        return;
    if (lua_getfield(L, idx, "metadata") == LUA_TTABLE)
        for (size_t i = 0; i < sizeof(md_keys) / sizeof(*md_keys); i++) {
            lua_pushnil(L);
            lua_setfield(L, -2, md_keys[i]);
        }
    lua_pop(L, 1);
    if (drop_status) {
        lua_pushnil(L);
        lua_setfield(L, idx, "status");
    }
}

/* YAML of the value at idx into buf ("" for nil). */
static void to_yaml(lua_State *L, struct sd *s, int idx, struct dbuf *buf)
{
    char err[256];
    dbuf_reset(buf);
    if (lua_isnil(L, idx)) {
        check_dbuf(L, s, dbuf_adds(buf, ""));
        return;
    }
    if (yaml_encode(L, idx, buf, err, sizeof(err)) != 0)
        fail(L, s, SCRIPT_TEST_EINPUT, "cannot print an object: %s", err);
}

/* Diffs the values at ia and ib (either may be nil) under "live/ID" and
 * "NEWNAME/ID"; returns whether they differ. */
static int diff_values(lua_State *L, struct sd *s, int ia, int ib,
                       const char *newname, const char *id)
{
    char an[512], bn[512];
    ia = lua_absindex(L, ia);
    ib = lua_absindex(L, ib);
    to_yaml(L, s, ia, &s->a);
    to_yaml(L, s, ib, &s->b);
    snprintf(an, sizeof(an), "%s%s", lua_isnil(L, ia) ? "" : "live/",
             lua_isnil(L, ia) ? "/dev/null" : id);
    snprintf(bn, sizeof(bn), "%s%s", lua_isnil(L, ib) ? "" : newname,
             lua_isnil(L, ib) ? "/dev/null" : id);
    int rc = udiff(s->out, an, dbuf_ptr(&s->a), bn, dbuf_ptr(&s->b));
    if (rc < 0)
        fail(L, s, SCRIPT_TEST_EINPUT, "out of memory");
    return rc;
}

/* Whether the live child at idx is controlled by the DittoServer (the
 * controller's rule, apply_owned_by). */
static int owned(lua_State *L, struct sd *s, int idx)
{
    char err[256];
    cJSON_Delete(s->cj);
    s->cj = NULL;
    if (json_to_cjson(L, idx, &s->cj, err, sizeof(err)) != 0)
        fail(L, s, SCRIPT_TEST_EINPUT, "%s", err);
    return apply_owned_by(s->cj, s->uid);
}

/* Copies the string field k of the table at t into buf, or raises. */
static void copy_field(lua_State *L, struct sd *s, int t, const char *k,
                       char *buf, size_t len, const char *what)
{
    const char *v = field_string(L, t, k);
    if (v == NULL || strlen(v) >= len)
        fail(L, s, SCRIPT_TEST_EINPUT, "%s: %s", s->o->st.file, what);
    memcpy(buf, v, strlen(v) + 1);
}

/* A dry-run server-side apply of `ob` (kind k, name nm), as the
 * controller's apply but for dryRun=All; returns the request's result. */
static int dry_run(lua_State *L, struct sd *s, int k, const char *nm,
                   const cJSON *ob)
{
    set_path(L, s, k, nm);
    check_dbuf(L, s, dbuf_adds(&s->path, DRY_RUN_QUERY));
    char *text = cJSON_PrintUnformatted(ob);
    dbuf_reset(&s->body);
    int rc = text ? dbuf_adds(&s->body, text) : DBUF_NOMEM;
    free(text);
    check_dbuf(L, s, rc);
    return request(L, s, HTTP_PATCH, HTTP_CT_APPLY_PATCH, &s->body);
}

/* [sd, docs] -> []: everything, protected. */
static int p_main(lua_State *L)
{
    struct sd *s = lua_touserdata(L, 1);
    const struct script_diff_options *o = s->o;
    char err[1024];

    /* 3: the DittoServer of the file (the others are ignored: the live
     * children stand in for them). */
    lua_pushnil(L);
    size_t ndocs = lua_rawlen(L, 2), others = 0;
    for (size_t i = 1; i <= ndocs; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i);
        const char *kind = field_string(L, -1, "kind");
        if (kind && strcmp(kind, KINDS_OWNER_KIND) == 0 && lua_isnil(L, 3))
            lua_replace(L, 3);
        else {
            others += lua_type(L, -1) == LUA_TTABLE;
            lua_pop(L, 1);
        }
    }
    if (lua_isnil(L, 3))
        fail(L, s, SCRIPT_TEST_EINPUT,
             "%s: no DittoServer (apiVersion " KINDS_OWNER_API_VERSION
             ", kind " KINDS_OWNER_KIND ") in the input",
             o->st.file);
    if (others)
        check_dbuf(L, s,
                   dbuf_addf(s->errs,
                             "Warning: %s: %zu other document(s) ignored: "
                             "--diff reads the live children and Pods\n",
                             o->st.file, others));
    lua_getfield(L, 3, "metadata");
    copy_field(L, s, -1, "name", s->name, sizeof(s->name),
               "metadata.name is required");
    const char *ns = field_string(L, -1, "namespace");
    lua_pop(L, 1);

    /* The connection, resolved as the operator's. */
    struct kubeconfig_opts ko = {.path = o->kubeconfig, .context = o->context};
    int rc = kube_conn_load(&s->conn, &ko, err, sizeof(err));
    if (rc != KUBE_CONN_OK)
        fail(L, s,
             rc == KUBE_CONN_ENOMEM ? SCRIPT_TEST_EINPUT : SCRIPT_DIFF_ECONNECT,
             "cannot load the Kubernetes configuration: %s",
             rc == KUBE_CONN_ENOMEM ? "out of memory" : err);
    if (ns == NULL)
        ns = o->namespace && o->namespace[0] ? o->namespace
                                             : kube_conn_namespace(s->conn);
    if (strlen(ns) >= sizeof(s->ns))
        fail(L, s, SCRIPT_TEST_EINPUT, "namespace too long: %s", ns);
    memcpy(s->ns, ns, strlen(ns) + 1);
    struct http_opts ho = {.qps = o->qps, .burst = o->burst};
    s->loop = loop_new();
    s->http = s->loop ? http_client_new(s->loop, s->conn, &ho) : NULL;
    if (s->http == NULL)
        fail(L, s, SCRIPT_TEST_EINPUT,
             "out of memory (or libcurl failed to initialise)");

    /* 4: the live DittoServer, with the file's spec, labels and
     * annotations: a change to either shows. */
    set_path(L, s, KINDS_DITTOSERVER, s->name);
    if (request(L, s, HTTP_GET, NULL, NULL) == HTTP_ENOTFOUND)
        fail(L, s, SCRIPT_TEST_EINPUT,
             "DittoServer %s/%s does not exist in the cluster: --diff "
             "compares with what exists (--script-test alone renders a new "
             "one)",
             s->ns, s->name);
    push_body(L, s);
    lua_getfield(L, 4, "metadata"); /* 5 */
    copy_field(L, s, 5, "uid", s->uid, sizeof(s->uid),
               "the live DittoServer has no metadata.uid");
    lua_getfield(L, 3, "spec");
    lua_setfield(L, 4, "spec");
    lua_getfield(L, 3, "metadata"); /* 6 */
    if (lua_type(L, 6) == LUA_TTABLE) {
        lua_getfield(L, 6, "labels");
        lua_setfield(L, 5, "labels");
        lua_getfield(L, 6, "annotations");
        lua_setfield(L, 5, "annotations");
    }
    lua_settop(L, 4);

    /* 5: the input list [ds, children..., pods...]; 6: the live children
     * by kind and name. */
    lua_createtable(L, 8, 0);
    lua_pushvalue(L, 4);
    lua_rawseti(L, 5, 1);
    lua_newtable(L);
    for (int k = 0; k < KINDS_NCHILD; k++) {
        set_path(L, s, k, NULL);
        check_dbuf(L, s,
                   dbuf_addf(&s->path, "?labelSelector=%s%%3D%s%%2C%s%%3D%s",
                             POLICY_LABEL_MANAGED_BY, POLICY_MANAGER,
                             POLICY_LABEL_SERVER, s->name));
        request(L, s, HTTP_GET, NULL, NULL);
        push_body(L, s); /* 7 */
        lua_newtable(L); /* 8: by name */
        lua_getfield(L, 7, "items");
        size_t n = lua_type(L, 9) == LUA_TTABLE ? lua_rawlen(L, 9) : 0;
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, 9, (lua_Integer)i); /* 10 */
            lua_pushstring(L, kinds_table[k].api_version);
            lua_setfield(L, 10, "apiVersion");
            lua_pushstring(L, kinds_table[k].kind);
            lua_setfield(L, 10, "kind");
            lua_getfield(L, 10, "metadata");
            const char *nm = field_string(L, -1, "name");
            lua_pop(L, 1);
            if (nm != NULL) {
                lua_pushvalue(L, 10);
                lua_setfield(L, 8, nm);
            }
            lua_rawseti(L, 5, (lua_Integer)lua_rawlen(L, 5) + 1);
        }
        lua_settop(L, 8);
        lua_setfield(L, 6, kinds_table[k].kind);
        lua_settop(L, 6);
    }

    /* What the controller would render ({objects, status}). */
    if (json_encode(L, 5, &s->body, err, sizeof(err)) != 0)
        fail(L, s, SCRIPT_TEST_EINPUT, "%s", err);
    struct script_test_options st = o->st;
    st.json = 1;
    st.live = 1;
    st.input = dbuf_ptr(&s->body);
    st.input_len = dbuf_len(&s->body);
    rc = script_test_run(&st, &s->rendered, s->errs);
    if (rc != SCRIPT_TEST_OK)
        fail(L, s, rc, "");
    s->root = jscan_cjson_parse(dbuf_ptr(&s->rendered), dbuf_len(&s->rendered));
    if (s->root == NULL)
        fail(L, s, SCRIPT_TEST_EINPUT, "out of memory");
    lua_settop(L, 6);

    /* Each rendered object as the controller sends it (send_applies):
     * the applied-hash annotation; unchanged when the live object already
     * holds it all; else what a dry-run apply of it would leave. */
    lua_newtable(L); /* 7: the rendered names by kind */
    const cJSON *obj;
    cJSON_ArrayForEach(obj,
                       cJSON_GetObjectItemCaseSensitive(s->root, "objects"))
    {
        lua_settop(L, 7);
        cJSON *ob = (cJSON *)obj;
        const char *kind =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ob, "kind"));
        const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(ob, "metadata"), "name"));
        int k =
            kinds_find(cJSON_GetStringValue(
                           cJSON_GetObjectItemCaseSensitive(ob, "apiVersion")),
                       kind);
        if (k < 0 || nm == NULL) /* script_test_run checked both */
            fail(L, s, SCRIPT_TEST_EPOLICY, "an unchecked rendering");
        if (lua_getfield(L, 7, kind) != LUA_TTABLE) { /* 8 */
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_setfield(L, 7, kind);
        }
        lua_pushboolean(L, 1);
        lua_setfield(L, 8, nm);
        if (apply_annotate_hash(ob, NULL) != 0)
            fail(L, s, SCRIPT_TEST_EINPUT, "out of memory");
        char id[400];
        snprintf(id, sizeof(id), "%s/%s/%s", kind, s->ns, nm);
        lua_getfield(L, 6, kind);
        lua_getfield(L, -1, nm); /* 10: the live one, or nil */
        int live = !lua_isnil(L, 10);
        cJSON_Delete(s->cj);
        s->cj = NULL;
        if (live && json_to_cjson(L, 10, &s->cj, err, sizeof(err)) != 0)
            fail(L, s, SCRIPT_TEST_EINPUT, "%s", err);
        if (live && apply_is_subset(ob, s->cj, NULL) == 1)
            continue;
        rc = dry_run(L, s, k, nm, ob);
        if (rc != HTTP_OK && rc != HTTP_ENOMEM && live &&
            k == KINDS_STATEFULSET && apply_keep_live_claims(ob, s->cj) == 0) {
            /* As the controller does once the API has refused it: the
             * claim templates cannot change, everything else can. */
            check_dbuf(L, s,
                       dbuf_addf(s->errs,
                                 "Warning: %s: refused as rendered (%s); "
                                 "the controller applies it with the live "
                                 "volumeClaimTemplates\n",
                                 id, s->resp ? s->resp->message : ""));
            rc = dry_run(L, s, k, nm, ob);
        }
        if (rc != HTTP_OK) {
            s->refused = 1;
            check_dbuf(L, s,
                       dbuf_addf(s->errs,
                                 "%s: the apiserver refuses it (%s): %s\n", id,
                                 http_strerror(rc),
                                 s->resp ? s->resp->message : ""));
            continue;
        }
        push_body(L, s); /* 11: what the apply would leave */
        normalize(L, 10, 1);
        normalize(L, 11, 1);
        if (diff_values(L, s, 10, 11, "dry-run/", id)) {
            if (live)
                s->n_change++;
            else
                s->n_create++;
        }
    }

    /* The children the controller would delete (send_prunes): owned,
     * labelled, of a kind it renders, and no longer rendered. */
    for (int k = 0; k < KINDS_NCHILD; k++) {
        if (kinds_table[k].role != KIND_RENDERED)
            continue;
        lua_settop(L, 7);
        lua_getfield(L, 6, kinds_table[k].kind); /* 8 */
        lua_getfield(L, 7, kinds_table[k].kind); /* 9 */
        lua_pushnil(L);
        while (lua_next(L, 8)) { /* 10: name, 11: obj */
            int keep = lua_type(L, 9) == LUA_TTABLE &&
                       lua_getfield(L, 9, lua_tostring(L, 10)) != LUA_TNIL;
            if (lua_type(L, 9) == LUA_TTABLE)
                lua_pop(L, 1);
            if (!keep && owned(L, s, 11)) {
                char id[400];
                snprintf(id, sizeof(id), "%s/%s/%s", kinds_table[k].kind, s->ns,
                         lua_tostring(L, 10));
                normalize(L, 11, 1);
                lua_pushnil(L);
                diff_values(L, s, 11, -1, "dry-run/", id);
                lua_pop(L, 1);
                s->n_delete++;
            }
            lua_pop(L, 1);
        }
    }

    /* The status the controller would write (status_stage): the
     * conditions' lastTransitionTime kept where their status holds, and
     * nothing written when it equals the live one. */
    lua_settop(L, 7);
    cJSON *desired = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(s->root, "status"), "status");
    cJSON_Delete(s->cj);
    s->cj = NULL;
    lua_getfield(L, 4, "status"); /* 8 */
    if (!lua_isnil(L, 8) && json_to_cjson(L, 8, &s->cj, err, sizeof(err)) != 0)
        fail(L, s, SCRIPT_TEST_EINPUT, "%s", err);
    char now[32];
    apply_rfc3339((long long)time(NULL), now);
    if (!cJSON_IsObject(desired) ||
        apply_stamp_conditions(desired, s->cj, now) != 0)
        fail(L, s, SCRIPT_TEST_EPOLICY, "status(): no status object");
    if (s->cj == NULL || !apply_status_equal(desired, s->cj)) {
        if (json_push_cjson(L, desired, err, sizeof(err)) != 0) /* 9 */
            fail(L, s, SCRIPT_TEST_EINPUT, "%s", err);
        char id[400];
        snprintf(id, sizeof(id), "%s/%s/%s/status", KINDS_OWNER_KIND, s->ns,
                 s->name);
        s->status_changed = diff_values(L, s, 8, 9, "rendered/", id);
    }
    return 0;
}

int script_diff_run(const struct script_diff_options *o, struct dbuf *out,
                    struct dbuf *errs)
{
    struct sd s;
    memset(&s, 0, sizeof(s));
    s.o = o;
    s.out = out;
    s.errs = errs;
    dbuf_init(&s.path, 8192);
    dbuf_init(&s.body, SCRIPT_TEST_MAX_INPUT);
    dbuf_init(&s.rendered, (size_t)64 << 20);
    dbuf_init(&s.a, (size_t)64 << 20);
    dbuf_init(&s.b, (size_t)64 << 20);
    dbuf_reset(out);
    int code;
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        dbuf_adds(errs, "out of memory\n");
        code = SCRIPT_TEST_EINPUT;
        goto done;
    }
    code = script_test_read_docs(L, o->st.file, errs);
    if (code != 0)
        goto done;
    lua_pushcfunction(L, p_main);
    lua_pushlightuserdata(L, &s);
    lua_rotate(L, 1, 2); /* [p_main, sd, docs] */
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg != NULL && msg[0])
            dbuf_addf(errs, "%s\n", s.code ? msg : "out of memory");
        code = s.code ? s.code : SCRIPT_TEST_EINPUT;
        goto done;
    }
    dbuf_addf(errs,
              "%zu to change, %zu to create, %zu to delete; the status %s\n",
              s.n_change, s.n_create, s.n_delete,
              s.status_changed ? "changes" : "unchanged");
    if (s.refused)
        code = SCRIPT_TEST_EPOLICY;
    else if (s.n_change || s.n_create || s.n_delete || s.status_changed)
        code = SCRIPT_DIFF_DIFFERS;
    else
        code = SCRIPT_TEST_OK;
done:
    if (code != SCRIPT_TEST_OK && code != SCRIPT_DIFF_DIFFERS)
        dbuf_reset(out);
    if (L)
        lua_close(L);
    sd_free(&s);
    return code;
}
