/*
 * itest_watch: the informer against the real local control plane
 * (deploy/local/cluster.sh; run through spec/integration/with-cluster).
 *  - create, update, delete seen with the right resourceVersions and old /
 *    new objects; managedFields dropped; kind and apiVersion present;
 *  - pagination over 1,203 objects (3 pages), label and field selectors,
 *    one namespace and all namespaces; the cache equals the server;
 *  - kube-apiserver killed mid-watch and started again; changes (deletes
 *    included) made while the informer is away are delivered;
 *  - etcd compacted past the watch's resourceVersion while the informer is
 *    paused: 410, relist, deletes delivered, cache equal to the server;
 *    a paged list at a compacted resourceVersion is typed "gone";
 *  - the server's timeoutSeconds close: re-watch from the last rv without
 *    a relist.
 * Each test uses its own namespace (itw-<pid>-<n>).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "log.h"
#include "nettest.h"
#include "testlib.h"
#include "watch.h"

static struct nt T;
static int PID;

/* --- recording subscriber ---------------------------------------------- */

#define MAX_REC 4096

struct rec {
    enum cache_event ev;
    char name[64];
    char old_rv[32];
    char new_rv[32];
    int new_null;
};

struct recorder {
    struct rec r[MAX_REC];
    int n;
};

static void record(enum cache_event ev, const struct cache_obj *o,
                   const struct cache_obj *n, void *arg)
{
    struct recorder *rc = arg;
    if (rc->n >= MAX_REC)
        return;
    struct rec *r = &rc->r[rc->n++];
    r->ev = ev;
    snprintf(r->name, sizeof(r->name), "%s", cache_obj_name(n != NULL ? n : o));
    snprintf(r->old_rv, sizeof(r->old_rv), "%s", o ? cache_obj_rv(o) : "");
    snprintf(r->new_rv, sizeof(r->new_rv), "%s", n ? cache_obj_rv(n) : "");
    r->new_null = n == NULL;
}

static const struct rec *find_rec(const struct recorder *rc,
                                  enum cache_event ev, const char *name)
{
    for (int i = rc->n - 1; i >= 0; i--)
        if (rc->r[i].ev == ev && strcmp(rc->r[i].name, name) == 0)
            return &rc->r[i];
    return NULL;
}

static struct watch *new_watch(const char *ns, const char *lsel,
                               const char *fsel, struct recorder *rec)
{
    struct watch_opts o = {
        .api_path = "/api/v1",
        .resource = "configmaps",
        .namespace = ns,
        .label_selector = lsel,
        .field_selector = fsel,
        /* Quick retries keep the test short on a loaded machine. */
        .backoff_initial_ms = 200,
        .backoff_max_ms = 2000,
    };
    struct watch *w = watch_new(T.http, &o);
    if (rec != NULL)
        cache_subscribe(watch_cache(w), record, rec);
    return w;
}

static int synced_cond(void *arg)
{
    return watch_synced(arg);
}

struct rv_cond {
    struct watch *w;
    const char *ns;
    const char *name;
    const char *rv; /* NULL: wait until absent */
};

static int rv_cond(void *arg)
{
    struct rv_cond *c = arg;
    const struct cache_obj *o = cache_get(watch_cache(c->w), c->ns, c->name);
    if (c->rv == NULL)
        return o == NULL;
    return o != NULL && strcmp(cache_obj_rv(o), c->rv) == 0;
}

static int wait_rv(struct watch *w, const char *ns, const char *name,
                   const char *rv)
{
    struct rv_cond c = {w, ns, name, rv};
    return nt_wait(&T, rv_cond, &c, 60000);
}

static void make_ns(char *ns, size_t len, int n)
{
    snprintf(ns, len, "itw-%d-%d", PID, n);
    if (nt_create_ns(&T, ns) != 0) {
        printf("Bail out! cannot create namespace %s\n", ns);
        exit(1);
    }
}

static int cluster_sh(const char *args)
{
    char cmd[1024];
    const char *src = getenv("DITTOFS_SOURCE_DIR");
    snprintf(cmd, sizeof(cmd), "%s/deploy/local/cluster.sh %s >&2",
             src != NULL ? src : ".", args);
    return system(cmd);
}

/* --- create, update, delete -------------------------------------------- */

static void test_events(void)
{
    char ns[64], rv1[32], rv2[32], rv3[32];
    static struct recorder rec;
    make_ns(ns, sizeof(ns), 1);
    nt_put_cm(&T, ns, "before", "", "x", NULL, 0);
    struct watch *w = new_watch(ns, NULL, NULL, &rec);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 60000), "events: synced");
    CHECK(cache_get(watch_cache(w), ns, "before") != NULL,
          "object created before the watch is listed");
    CHECK(find_rec(&rec, CACHE_ADDED, "before") != NULL,
          "and announced as added");

    CHECK(nt_put_cm(&T, ns, "a", "\"k\":\"1\"", "one", rv1, sizeof(rv1)) == 0,
          "create a");
    CHECK(wait_rv(w, ns, "a", rv1), "cache has a at the create's rv %s", rv1);
    const struct rec *r = find_rec(&rec, CACHE_ADDED, "a");
    CHECK(r != NULL && strcmp(r->new_rv, rv1) == 0 && r->old_rv[0] == '\0',
          "ADDED a with rv %s", rv1);

    CHECK(nt_put_cm(&T, ns, "a", "\"k\":\"2\"", "two", rv2, sizeof(rv2)) == 0,
          "update a");
    CHECK(wait_rv(w, ns, "a", rv2), "cache has a at the update's rv %s", rv2);
    r = find_rec(&rec, CACHE_UPDATED, "a");
    CHECK(r != NULL && strcmp(r->old_rv, rv1) == 0 &&
              strcmp(r->new_rv, rv2) == 0,
          "UPDATED a: old rv %s, new rv %s", rv1, rv2);
    const struct cache_obj *o = cache_get(watch_cache(w), ns, "a");
    struct dbuf text;
    dbuf_init(&text, (size_t)1 << 20);
    cache_obj_json_append(o, &text);
    const char *json = dbuf_ptr(&text);
    CHECK(strstr(json, "managedFields") == NULL &&
              strstr(json, "\"kind\":\"ConfigMap\"") != NULL &&
              strstr(json, "\"apiVersion\":\"v1\"") != NULL &&
              strstr(json, "\"v\":\"two\"") != NULL,
          "cached JSON: no managedFields, kind and apiVersion, new data");
    dbuf_free(&text);
    CHECK_STR_EQ(cache_obj_label(o, "k"), "2", "label from the update");
    CHECK_STR_EQ(watch_rv(w), rv2, "watch resourceVersion follows events");

    struct http_response *resp = NULL;
    CHECK(nt_req(&T, HTTP_DELETE, NULL, NULL, &resp,
                 "/api/v1/namespaces/%s/configmaps/a", ns) == 0,
          "delete a");
    snprintf(rv3, sizeof(rv3), "%s", resp ? nt_rv_of(resp->body) : "");
    http_response_free(resp);
    CHECK(wait_rv(w, ns, "a", NULL), "a gone from the cache");
    r = find_rec(&rec, CACHE_DELETED, "a");
    CHECK(r != NULL && strcmp(r->old_rv, rv2) == 0 && !r->new_null &&
              r->new_rv[0] != '\0',
          "DELETED a: last cached rv %s, final state rv %s", rv2,
          r ? r->new_rv : "?");

    /* Typed errors with the apiserver's message. */
    resp = NULL;
    int rc = nt_req(&T, HTTP_GET, NULL, NULL, &resp,
                    "/api/v1/namespaces/%s/configmaps/nope", ns);
    CHECK(rc == HTTP_ENOTFOUND && resp != NULL &&
              strstr(resp->message, "\"nope\" not found") != NULL &&
              strcmp(resp->reason, "NotFound") == 0,
          "404 typed not_found with Status message '%s'",
          resp ? resp->message : "");
    http_response_free(resp);
    resp = NULL;
    char body[256];
    snprintf(body, sizeof(body),
             "{\"metadata\":{\"name\":\"before\",\"namespace\":\"%s\"}}", ns);
    rc = nt_req(&T, HTTP_POST, NULL, body, &resp,
                "/api/v1/namespaces/%s/configmaps", ns);
    CHECK(rc == HTTP_EEXISTS && strstr(resp->message, "already exists"),
          "409 AlreadyExists typed already_exists ('%s')", resp->message);
    http_response_free(resp);
    resp = NULL;
    snprintf(body, sizeof(body),
             "{\"metadata\":{\"name\":\"before\",\"namespace\":\"%s\","
             "\"resourceVersion\":\"1\"},\"data\":{}}",
             ns);
    rc = nt_req(&T, HTTP_PUT, NULL, body, &resp,
                "/api/v1/namespaces/%s/configmaps/before", ns);
    CHECK(rc == HTTP_ECONFLICT && strstr(resp->message, "modified"),
          "409 stale resourceVersion typed conflict ('%s')", resp->message);
    http_response_free(resp);
    resp = NULL;
    rc = nt_req(&T, HTTP_POST, NULL, "{\"metadata\":{\"name\":\"Bad_Name\"}}",
                &resp, "/api/v1/namespaces/%s/configmaps", ns);
    CHECK(rc == HTTP_EINVALID && strstr(resp->message, "Bad_Name"),
          "422 typed invalid ('%.80s')", resp->message);
    http_response_free(resp);
    resp = NULL;
    rc = nt_req(&T, HTTP_PATCH, HTTP_CT_MERGE_PATCH,
                "{\"data\":{\"m\":\"merged\"}}", &resp,
                "/api/v1/namespaces/%s/configmaps/before", ns);
    CHECK(rc == 0 && strstr(resp->body, "merged"), "merge patch");
    http_response_free(resp);
    resp = NULL;
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
             "{\"name\":\"applied\",\"namespace\":\"%s\"},\"data\":{\"a\":"
             "\"1\"}}",
             ns);
    rc = nt_req(&T, HTTP_PATCH, HTTP_CT_APPLY_PATCH, body, &resp,
                "/api/v1/namespaces/%s/configmaps/"
                "applied?fieldManager=itest&force=true",
                ns);
    CHECK(rc == 0 && strstr(resp->body, "\"manager\":\"itest\""),
          "server-side apply (application/apply-patch+yaml)");
    http_response_free(resp);
    watch_free(w);
}

/* --- pagination and selectors ------------------------------------------ */

static int count_obj(const struct cache_obj *o, void *arg)
{
    (void)o;
    (*(int *)arg)++;
    return 0;
}

struct prefix_count {
    const char *prefix;
    int n;
};

static int count_prefixed(const struct cache_obj *o, void *arg)
{
    struct prefix_count *pc = arg;
    const char *name = cache_obj_name(o);
    if (name != NULL && strncmp(name, pc->prefix, strlen(pc->prefix)) == 0)
        pc->n++;
    return 0;
}

static void test_pages(void)
{
    char ns[64], prefix[32], sel[64], fsel[64], path[128];
    make_ns(ns, sizeof(ns), 2);
    snprintf(prefix, sizeof(prefix), "pg%d", PID);
    uint64_t t0 = loop_now_ms();
    int failed = nt_bulk_create(&T, ns, prefix, 1203, 64, 3);
    CHECK(failed == 0, "1203 ConfigMaps created (%llu ms)",
          (unsigned long long)(loop_now_ms() - t0));

    struct watch *w = new_watch(ns, NULL, NULL, NULL);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 120000), "pages: synced");
    struct watch_stats st;
    watch_get_stats(w, &st);
    CHECK_INT_EQ(st.lists, 3, "listed in 3 pages of 500");
    /* ours; current releases also publish kube-root-ca.crt in every
     * namespace (the cache must hold it too: compared below) */
    struct prefix_count pc = {prefix, 0};
    cache_list(watch_cache(w), ns, NULL, count_prefixed, &pc);
    CHECK_INT_EQ(pc.n, 1203, "all 1203 cached");
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps", ns);
    CHECK_INT_EQ(nt_diff_cache(&T, watch_cache(w), path, NULL), 0,
                 "cache equals the server, object for object");
    struct cache_selector *cs;
    char err[128];
    int n = 0;
    cache_selector_parse("sel=yes", &cs, err, sizeof(err));
    cache_list(watch_cache(w), ns, cs, count_obj, &n);
    cache_selector_free(cs);
    CHECK_INT_EQ(n, 401, "cache_list by label selector: 401");
    watch_free(w);

    /* Label selector: every third object. */
    w = new_watch(ns, "sel=yes", NULL, NULL);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 60000), "label selector: synced");
    CHECK_INT_EQ(cache_len(watch_cache(w)), 401, "401 selected by sel=yes");
    CHECK_INT_EQ(
        nt_diff_cache(&T, watch_cache(w), path, "&labelSelector=sel%3Dyes"), 0,
        "selected cache equals the server's selection");
    /* A new labelled object appears, an unlabelled one does not. */
    char rv[32];
    nt_put_cm(&T, ns, "late-sel", "\"sel\":\"yes\"", "x", rv, sizeof(rv));
    nt_put_cm(&T, ns, "late-other", "", "x", NULL, 0);
    CHECK(wait_rv(w, ns, "late-sel", rv), "selected new object arrives");
    CHECK(cache_get(watch_cache(w), ns, "late-other") == NULL,
          "unselected new object does not");
    watch_free(w);

    /* Field selector. */
    snprintf(fsel, sizeof(fsel), "metadata.name=%s-00007", prefix);
    w = new_watch(ns, NULL, fsel, NULL);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 60000), "field selector: synced");
    CHECK_INT_EQ(cache_len(watch_cache(w)), 1, "one object by name");

    watch_free(w);

    /* All namespaces, narrowed by a label unique to this run. */
    snprintf(sel, sizeof(sel), "bench=%s", prefix);
    w = new_watch(NULL, sel, NULL, NULL);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 120000), "all namespaces: synced");
    CHECK_INT_EQ(cache_len(watch_cache(w)), 1203,
                 "all namespaces with a label selector");
    watch_free(w);
}

/* --- apiserver killed and restarted ------------------------------------ */

struct fail_cond {
    struct watch *w;
    unsigned long failures;
};

static int failed_cond(void *arg)
{
    struct fail_cond *c = arg;
    struct watch_stats st;
    watch_get_stats(c->w, &st);
    return st.failures > c->failures;
}

static int readyz_cond(void *arg)
{
    (void)arg;
    struct http_response *r = NULL;
    int rc = nt_req(&T, HTTP_GET, NULL, NULL, &r, "/readyz");
    int ok = rc == 0 && strcmp(r->body, "ok") == 0;
    http_response_free(r);
    return ok;
}

struct equal_cond {
    struct watch *w;
    const char *path;
};

static int equal_cond(void *arg)
{
    struct equal_cond *c = arg;
    nt_quiet = 1;
    int eq = nt_diff_cache(&T, watch_cache(c->w), c->path, NULL) == 0;
    nt_quiet = 0;
    return eq;
}

/* Deletes 0..4, updates 5..9, creates new-0..4 in ns. */
static void churn(const char *ns, const char *tag)
{
    char name[64];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "obj-%d", i);
        nt_delete_cm(&T, ns, name);
        snprintf(name, sizeof(name), "obj-%d", i + 5);
        nt_put_cm(&T, ns, name, "", tag, NULL, 0);
        snprintf(name, sizeof(name), "%s-new-%d", tag, i);
        nt_put_cm(&T, ns, name, "", tag, NULL, 0);
    }
}

static int deletes_seen(const struct recorder *rec)
{
    int n = 0;
    char name[64];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "obj-%d", i);
        n += find_rec(rec, CACHE_DELETED, name) != NULL;
    }
    return n;
}

/* Waits until the cache equals the server; prints the differences if not. */
static int wait_equal(struct equal_cond *ec)
{
    if (nt_wait(&T, equal_cond, ec, 120000))
        return 1;
    nt_diff_cache(&T, watch_cache(ec->w), ec->path, NULL);
    return 0;
}

static void test_restart(void)
{
    char ns[64], name[64], path[128];
    static struct recorder rec;
    make_ns(ns, sizeof(ns), 3);
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps", ns);
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof(name), "obj-%d", i);
        nt_put_cm(&T, ns, name, "", "v0", NULL, 0);
    }
    struct watch *w = new_watch(ns, NULL, NULL, &rec);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 60000), "restart: synced");
    struct fail_cond fc = {w, 0};
    struct watch_stats st0;
    watch_get_stats(w, &st0);
    fc.failures = st0.failures;

    CHECK(cluster_sh("kill-apiserver") == 0, "kube-apiserver killed");
    CHECK(nt_wait(&T, failed_cond, &fc, 120000), "the informer noticed (%s)",
          watch_last_error(w));
    /* Keep the informer away while the changes are made. */
    watch_pause(w);
    CHECK(cluster_sh("start-apiserver") == 0, "kube-apiserver started");
    CHECK(nt_wait(&T, readyz_cond, NULL, 120000), "apiserver ready again");
    churn(ns, "r1");
    CHECK(deletes_seen(&rec) == 0, "deletes not seen while paused");
    watch_resume(w);
    struct equal_cond ec = {w, path};
    CHECK(wait_equal(&ec), "after the restart the cache equals the server");
    CHECK_INT_EQ(deletes_seen(&rec), 5,
                 "the 5 deletes made while away were delivered");
    struct watch_stats st;
    watch_get_stats(w, &st);
    TEST_NOTE("restart: failures %lu, relists %lu, gone %lu, watches %lu",
              st.failures - st0.failures, st.relists, st.gone, st.watches);

    /* And it keeps watching: a fresh change arrives. */
    char rv[32];
    nt_put_cm(&T, ns, "after-restart", "", "x", rv, sizeof(rv));
    CHECK(wait_rv(w, ns, "after-restart", rv), "watching after the restart");

    /* Unpaused: kill, start, change at once; the informer catches up. */
    CHECK(cluster_sh("restart-apiserver") == 0, "kube-apiserver restarted");
    CHECK(nt_wait(&T, readyz_cond, NULL, 120000), "apiserver ready again");
    nt_put_cm(&T, ns, "obj-11", "", "after-second-restart", rv, sizeof(rv));
    nt_delete_cm(&T, ns, "obj-10");
    CHECK(wait_equal(&ec),
          "no pause: cache equals the server after the restart");
    CHECK(find_rec(&rec, CACHE_DELETED, "obj-10") != NULL,
          "delete made around the restart delivered");
    watch_free(w);
}

/* --- etcd compaction --------------------------------------------------- */

/* Discards the response body of the compaction request. */
static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* Compacts etcd's history up to `rev` through its own HTTP gateway
 * (POST /v3/kv/compaction, in etcd 3.4 and later), so the test needs no
 * etcdctl: Debian's etcd-client is installed for 1.20 only. */
static int etcd_compact(const char *rev)
{
    const char *url = getenv("DITTOFS_ETCD_URL");
    if (url == NULL)
        return -1;
    char endpoint[256], body[128];
    snprintf(endpoint, sizeof(endpoint), "%s/v3/kv/compaction", url);
    snprintf(body, sizeof(body), "{\"revision\":\"%s\",\"physical\":true}",
             rev);
    CURL *c = curl_easy_init();
    if (c == NULL)
        return -1;
    long status = 0;
    curl_easy_setopt(c, CURLOPT_URL, endpoint);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK || status != 200) {
        TEST_NOTE("etcd compaction at %s: %s, HTTP %ld", endpoint,
                  curl_easy_strerror(rc), status);
        return -1;
    }
    return 0;
}

/* Whether kube-apiserver runs without its watch cache. */
static int watch_cache_off(void)
{
    char path[512], buf[16384];
    const char *dir = getenv("DITTOFS_CLUSTER_DIR");
    snprintf(path, sizeof(path), "%s/kube-apiserver.cmd",
             dir ? dir : "/tmp/dittofs-cluster");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, "--watch-cache=false") != NULL;
}

struct relist_cond {
    struct watch *w;
    unsigned long relists;
};

static int relisted_cond(void *arg)
{
    struct relist_cond *c = arg;
    struct watch_stats st;
    watch_get_stats(c->w, &st);
    return st.relists > c->relists && watch_get_state(c->w) == WATCH_WATCHING;
}

static void test_compaction(void)
{
    char ns[64], name[64], path[128], rv[32], old_rv[32];
    static struct recorder rec;
    make_ns(ns, sizeof(ns), 4);
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps", ns);
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof(name), "obj-%d", i);
        nt_put_cm(&T, ns, name, "", "v0", NULL, 0);
    }
    struct watch *w = new_watch(ns, NULL, NULL, &rec);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 60000), "compaction: synced");
    snprintf(old_rv, sizeof(old_rv), "%s", watch_rv(w));
    watch_pause(w);
    churn(ns, "c1");
    /* Many more writes elsewhere so the history moves well past us. */
    for (int i = 0; i < 20; i++)
        nt_put_cm(&T, ns, "spin", "", i % 2 ? "a" : "b", rv, sizeof(rv));
    CHECK(etcd_compact(rv) == 0, "etcd compacted at revision %s", rv);

    int cache_off = watch_cache_off();
    if (!cache_off) {
        /* The watch cache hides compactions (it keeps its own history, and
         * from 1.34 serves Exact lists from its snapshots too); a restart
         * empties it, so the old rv is then gone for good. */
        TEST_NOTE("watch cache on: restarting the apiserver after the "
                  "compaction so the list and the watch see the 410");
        cluster_sh("restart-apiserver");
        CHECK(nt_wait(&T, readyz_cond, NULL, 120000), "apiserver ready");
    }
    struct http_response *resp = NULL;
    int rc =
        nt_req(&T, HTTP_GET, NULL, NULL, &resp,
               "%s?limit=500&resourceVersion=%s&resourceVersionMatch=Exact",
               path, old_rv);
    CHECK(rc == HTTP_EGONE && resp != NULL && resp->status == 410 &&
              strstr(resp->message, "too old") != NULL,
          "a list at the compacted rv %s is typed gone ('%s')", old_rv,
          resp ? resp->message : "");
    http_response_free(resp);
    struct watch_stats st0;
    watch_get_stats(w, &st0);
    struct relist_cond rc2 = {w, st0.relists};
    watch_resume(w);
    CHECK(nt_wait(&T, relisted_cond, &rc2, 120000),
          "a relist followed the compaction");
    struct watch_stats st;
    watch_get_stats(w, &st);
    CHECK(st.gone > st0.gone, "410 seen (%lu): %s", st.gone - st0.gone,
          watch_last_error(w));
    CHECK_INT_EQ(nt_diff_cache(&T, watch_cache(w), path, NULL), 0,
                 "the cache ends exactly equal to the server");
    CHECK_INT_EQ(deletes_seen(&rec), 5,
                 "objects deleted meanwhile delivered as deletes");
    const struct rec *r = find_rec(&rec, CACHE_DELETED, "obj-0");
    CHECK(r != NULL && r->new_null,
          "a relist delete carries the last known state only");
    CHECK(st.relist_deletes >= 5, "counted as relist deletes (%lu)",
          st.relist_deletes);
    watch_free(w);
}

/* --- timeoutSeconds, bookmarks, re-watch without relist ------------------ */

struct count_cond {
    struct watch *w;
    unsigned long watches;
};

static int watches_cond(void *arg)
{
    struct count_cond *c = arg;
    struct watch_stats st;
    watch_get_stats(c->w, &st);
    return st.watches >= c->watches;
}

static void test_bookmarks(void)
{
    char ns[64], rv[32];
    make_ns(ns, sizeof(ns), 5);
    nt_put_cm(&T, ns, "one", "", "1", rv, sizeof(rv));
    struct watch_opts o = {
        .api_path = "/api/v1",
        .resource = "configmaps",
        .namespace = ns,
        .timeout_min_s = 4,
        .timeout_max_s = 5,
    };
    struct watch *w = watch_new(T.http, &o);
    watch_start(w);
    CHECK(nt_wait(&T, synced_cond, w, 60000), "bookmarks: synced");
    struct count_cond cc = {w, 3};
    CHECK(nt_wait(&T, watches_cond, &cc, 60000),
          "the server closes at timeoutSeconds and we watch again");
    struct watch_stats st;
    watch_get_stats(w, &st);
    CHECK(st.relists == 0 && st.failures == 0 && st.lists == 1,
          "re-watch without relist or failure (lists %lu, failures %lu)",
          st.lists, st.failures);
    /* kube-apiserver 1.20 rarely sends its single bookmark (2 s before the
     * deadline) in practice; the idle deadline does not depend on it. */
    TEST_NOTE("bookmarks received: %lu over %lu watches", st.bookmarks,
              st.watches);
    CHECK(watch_rv(w)[0] != '\0', "resourceVersion kept across re-watches (%s)",
          watch_rv(w));
    /* A change made now still arrives on the renewed watch. */
    nt_put_cm(&T, ns, "two", "", "2", rv, sizeof(rv));
    CHECK(wait_rv(w, ns, "two", rv), "events after re-watches");
    watch_free(w);
}

static void cleanup(void)
{
    for (int i = 1; i <= 5; i++) {
        struct http_response *r = NULL;
        nt_req(&T, HTTP_DELETE, NULL, NULL, &r, "/api/v1/namespaces/itw-%d-%d",
               PID, i);
        http_response_free(r);
    }
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    struct http_opts o = {.qps = -1};
    PID = (int)getpid();
    if (getenv("DITTOFS_TEST_DEBUG") != NULL)
        log_set_level(LOG_DEBUG);
    nt_open(&T, NULL, &o);
    if (only == NULL || strcmp(only, "events") == 0)
        test_events();
    if (only == NULL || strcmp(only, "pages") == 0)
        test_pages();
    if (only == NULL || strcmp(only, "restart") == 0)
        test_restart();
    if (only == NULL || strcmp(only, "compaction") == 0)
        test_compaction();
    if (only == NULL || strcmp(only, "bookmarks") == 0)
        test_bookmarks();
    cleanup();
    nt_close(&T);
    return TEST_SUMMARY();
}
