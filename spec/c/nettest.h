/*
 * nettest: helpers shared by the C tests of the HTTP client and the
 * informer (itest_watch, itest_http, test_watch_fake, the benchmark):
 * an HTTP client on a fresh loop from $KUBECONFIG (or a given file),
 * waiting on a condition while the loop runs, synchronous JSON requests,
 * bulk creation of ConfigMaps with bounded concurrency, and a server-side
 * listing to compare a cache with. Header-only; uses loop, http, cache,
 * kubeconfig, cJSON.
 */
#ifndef DITTOFS_NETTEST_H
#define DITTOFS_NETTEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cache.h"
#include "http.h"
#include "kubeconfig.h"
#include "loop.h"

struct nt {
    struct loop *loop;
    struct kube_conn *conn;
    struct http_client *http;
};

/* Connects from `kubeconfig` (NULL: $KUBECONFIG); exits on failure. */
__attribute__((unused)) static void
nt_open(struct nt *t, const char *kubeconfig, const struct http_opts *o)
{
    char err[512];
    struct kubeconfig_opts ko;
    memset(&ko, 0, sizeof(ko));
    ko.path = kubeconfig;
    ko.allow_insecure_http_loopback = 1;
    t->loop = loop_new();
    if (t->loop == NULL ||
        kube_conn_load(&t->conn, &ko, err, sizeof(err)) != 0) {
        printf("# cannot load the kubeconfig: %s\n", err);
        printf("Bail out!\n");
        exit(1);
    }
    t->http = http_client_new(t->loop, t->conn, o);
}

/* The first 4 KiB of a token file without trailing newlines, malloc'd;
 * NULL when it cannot be read. */
__attribute__((unused)) static char *nt_read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    return strdup(buf);
}

__attribute__((unused)) static void nt_close(struct nt *t)
{
    http_client_free(t->http);
    kube_conn_free(t->conn);
    loop_free(t->loop);
}

typedef int (*nt_cond_fn)(void *arg);

/* Runs the loop until cond(arg) holds or `ms` pass; returns cond's value. */
__attribute__((unused)) static int nt_wait(struct nt *t, nt_cond_fn cond,
                                           void *arg, uint64_t ms)
{
    uint64_t end = loop_now_ms() + ms;
    while (!cond(arg)) {
        uint64_t now = loop_now_ms();
        if (now >= end)
            return cond(arg);
        uint64_t left = end - now;
        loop_run_once(t->loop, left > 100 ? 100 : (int)left);
    }
    return 1;
}

/* Runs the loop for `ms` (for "nothing happens" checks only). */
__attribute__((unused)) static void nt_run_for(struct nt *t, uint64_t ms)
{
    uint64_t end = loop_now_ms() + ms;
    while (loop_now_ms() < end)
        loop_run_once(t->loop, (int)(end - loop_now_ms()));
}

/* A synchronous request; returns the result, *out the response (free). */
__attribute__((unused)) static int nt_req(struct nt *t, enum http_method m,
                                          const char *ctype, const char *body,
                                          struct http_response **out,
                                          const char *pathfmt, ...)
{
    char path[2048];
    va_list ap;
    va_start(ap, pathfmt);
    vsnprintf(path, sizeof(path), pathfmt, ap);
    va_end(ap);
    struct http_call call = {
        .method = m,
        .path = path,
        .content_type = ctype,
        .body = body,
        .body_len = body ? strlen(body) : 0,
    };
    return http_send_sync(t->http, &call, out);
}

/* The resourceVersion of a response body (static buffer). */
__attribute__((unused)) static const char *nt_rv_of(const char *json)
{
    static char rv[64];
    rv[0] = '\0';
    cJSON *j = cJSON_Parse(json);
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "metadata");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(md, "resourceVersion");
    if (cJSON_IsString(r))
        snprintf(rv, sizeof(rv), "%s", r->valuestring);
    cJSON_Delete(j);
    return rv;
}

__attribute__((unused)) static int nt_create_ns(struct nt *t, const char *ns)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":"
             "{\"name\":\"%s\"}}",
             ns);
    struct http_response *r = NULL;
    int rc = nt_req(t, HTTP_POST, NULL, body, &r, "/api/v1/namespaces");
    if (rc != 0 && rc != HTTP_EEXISTS)
        printf("# create namespace %s: %s\n", ns, r ? r->message : "?");
    http_response_free(r);
    return rc == HTTP_EEXISTS ? 0 : rc;
}

/* Creates or replaces ConfigMap ns/name with one data key; returns the
 * result and copies the new resourceVersion into rv (may be NULL). */
__attribute__((unused)) static int
nt_put_cm(struct nt *t, const char *ns, const char *name, const char *labels,
          const char *value, char *rv, size_t rvlen)
{
    char body[4096];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
             "{\"name\":\"%s\",\"namespace\":\"%s\",\"labels\":{%s}},"
             "\"data\":{\"v\":\"%s\"}}",
             name, ns, labels ? labels : "", value);
    struct http_response *r = NULL;
    int rc = nt_req(t, HTTP_PUT, NULL, body, &r,
                    "/api/v1/namespaces/%s/configmaps/%s", ns, name);
    if (rc == HTTP_ENOTFOUND) {
        http_response_free(r);
        rc = nt_req(t, HTTP_POST, NULL, body, &r,
                    "/api/v1/namespaces/%s/configmaps", ns);
    }
    if (rc != 0)
        printf("# put configmap %s/%s: %s\n", ns, name, r ? r->message : "?");
    if (rv != NULL)
        snprintf(rv, rvlen, "%s", rc == 0 ? nt_rv_of(r->body) : "");
    http_response_free(r);
    return rc;
}

__attribute__((unused)) static int nt_delete_cm(struct nt *t, const char *ns,
                                                const char *name)
{
    struct http_response *r = NULL;
    int rc = nt_req(t, HTTP_DELETE, NULL, NULL, &r,
                    "/api/v1/namespaces/%s/configmaps/%s", ns, name);
    if (rc != 0)
        printf("# delete configmap %s/%s: %s\n", ns, name,
               r ? r->message : "?");
    http_response_free(r);
    return rc;
}

/* --- bulk creation ----------------------------------------------------- */

struct nt_bulk {
    struct nt *t;
    const char *ns;
    const char *prefix;
    int n;
    int next;
    int inflight;
    int done;
    int failed;
    size_t value_size;
    int label_every; /* every k-th object gets label sel=yes (0: none) */
    char last_error[256];
};

static void nt_bulk_pump(struct nt_bulk *b);

static void nt_bulk_done(struct http_response *r, void *arg)
{
    struct nt_bulk *b = arg;
    b->inflight--;
    b->done++;
    if (r->result != HTTP_OK && r->result != HTTP_EEXISTS) {
        b->failed++;
        snprintf(b->last_error, sizeof(b->last_error), "%s", r->message);
    }
    nt_bulk_pump(b);
}

static void nt_bulk_pump(struct nt_bulk *b)
{
    static char *value;
    static size_t value_len;
    if (value == NULL || value_len != b->value_size) {
        free(value);
        value = malloc(b->value_size + 1);
        memset(value, 'v', b->value_size);
        value[b->value_size] = '\0';
        value_len = b->value_size;
    }
    while (b->inflight < 32 && b->next < b->n) {
        char body[8192 + 512], path[512];
        int i = b->next++;
        const char *label =
            b->label_every && i % b->label_every == 0 ? "\"sel\":\"yes\"" : "";
        snprintf(body, sizeof(body),
                 "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
                 "{\"name\":\"%s-%05d\",\"namespace\":\"%s\",\"labels\":"
                 "{\"bench\":\"%s\"%s%s}},\"data\":{\"v\":\"%s\"}}",
                 b->prefix, i, b->ns, b->prefix, *label ? "," : "", label,
                 value);
        snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps", b->ns);
        struct http_call call = {
            .method = HTTP_POST,
            .path = path,
            .body = body,
            .body_len = strlen(body),
            .on_done = nt_bulk_done,
            .arg = b,
        };
        if (http_send(b->t->http, &call, NULL) != 0) {
            b->failed++;
            b->done++;
            continue;
        }
        b->inflight++;
    }
}

static int nt_bulk_finished(void *arg)
{
    struct nt_bulk *b = arg;
    return b->done >= b->n;
}

/* Creates n ConfigMaps <prefix>-00000.. in ns, 32 in flight; returns the
 * number that failed (AlreadyExists counts as success). */
__attribute__((unused)) static int nt_bulk_create(struct nt *t, const char *ns,
                                                  const char *prefix, int n,
                                                  size_t value_size,
                                                  int label_every)
{
    struct nt_bulk b;
    memset(&b, 0, sizeof(b));
    b.t = t;
    b.ns = ns;
    b.prefix = prefix;
    b.n = n;
    b.value_size = value_size > 8192 ? 8192 : value_size;
    b.label_every = label_every;
    nt_bulk_pump(&b);
    nt_wait(t, nt_bulk_finished, &b, 600000);
    if (b.failed)
        printf("# bulk create: %d failed, last: %s\n", b.failed, b.last_error);
    return b.failed;
}

/* --- comparing a cache with the server --------------------------------- */

/* Non-zero: nt_diff_cache prints nothing (for polling). */
static int nt_quiet;

/*
 * Lists `path` (paged, with `query` appended, e.g. "&labelSelector=...")
 * and compares every item, managedFields dropped, byte for byte with the
 * cache, and the counts. Returns the number of differences and prints the
 * first few.
 */
__attribute__((unused)) static int nt_diff_cache(struct nt *t, struct cache *c,
                                                 const char *path,
                                                 const char *query)
{
    int diffs = 0;
    size_t seen = 0;
    char *cont = NULL;
    do {
        struct http_response *r = NULL;
        char *esc = cont ? curl_easy_escape(NULL, cont, 0) : NULL;
        int rc =
            nt_req(t, HTTP_GET, NULL, NULL, &r, "%s?limit=500%s%s%s", path,
                   esc ? "&continue=" : "", esc ? esc : "", query ? query : "");
        curl_free(esc);
        free(cont);
        cont = NULL;
        if (rc != 0) {
            printf("# list %s: %s\n", path, r ? r->message : "?");
            http_response_free(r);
            return -1;
        }
        cJSON *list = cJSON_Parse(r->body);
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(list, "items");
        const cJSON *it;
        cJSON_ArrayForEach(it, items)
        {
            char err[256];
            struct cache_obj *want = NULL;
            char *text = cJSON_PrintUnformatted(it);
            cache_obj_from_text(text, strlen(text), NULL, NULL, &want, err,
                                sizeof(err));
            free(text);
            if (want == NULL) {
                diffs++;
                continue;
            }
            seen++;
            const struct cache_obj *got =
                cache_get(c, cache_obj_namespace(want), cache_obj_name(want));
            if (got == NULL) {
                if (diffs++ < 5 && !nt_quiet)
                    printf("# missing from cache: %s/%s\n",
                           cache_obj_namespace(want), cache_obj_name(want));
            } else if (strcmp(cache_obj_rv(got), cache_obj_rv(want)) != 0) {
                if (diffs++ < 5 && !nt_quiet)
                    printf("# stale in cache: %s/%s rv %s, server %s\n",
                           cache_obj_namespace(want), cache_obj_name(want),
                           cache_obj_rv(got), cache_obj_rv(want));
            } else {
                /* Same content (cJSON re-print vs server text: compare
                 * parsed trees without apiVersion/kind). */
                cJSON *a = cache_obj_parse(got);
                cJSON *b = cache_obj_parse(want);
                cJSON_DeleteItemFromObject(a, "apiVersion");
                cJSON_DeleteItemFromObject(a, "kind");
                cJSON_DeleteItemFromObject(b, "apiVersion");
                cJSON_DeleteItemFromObject(b, "kind");
                if (!cJSON_Compare(a, b, 1) && diffs++ < 5 && !nt_quiet)
                    printf("# content differs: %s/%s\n",
                           cache_obj_namespace(want), cache_obj_name(want));
                cJSON_Delete(a);
                cJSON_Delete(b);
            }
            cache_obj_unref(want);
        }
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(list, "metadata");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(md, "continue");
        if (cJSON_IsString(ct) && ct->valuestring[0])
            cont = strdup(ct->valuestring);
        cJSON_Delete(list);
        http_response_free(r);
    } while (cont != NULL);
    if (seen != cache_len(c)) {
        if (diffs++ < 5 && !nt_quiet)
            printf("# server has %zu objects, cache %zu\n", seen, cache_len(c));
    }
    return diffs;
}

#endif
