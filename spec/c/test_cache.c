/*
 * test_cache: the JSON span scanner (jscan), cache objects (managedFields
 * cut out of the server's text, exact numbers, metadata, labels), label
 * selectors, and the cache table (get/list, notifications, relist
 * replacement, a randomised comparison with a reference model), and the
 * objects a cache stores against its reference: every text comes back
 * byte for byte (alike objects, unlike ones, a family that changes, random
 * fragments), alike objects cost a fraction of their text, an object
 * outlives its cache.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cache.h"
#include "jscan.h"
#include "testlib.h"

/* The text of o, in a buffer reused by the next call; NULL frees it. */
static const char *text_of(const struct cache_obj *o)
{
    static struct dbuf b;
    dbuf_free(&b);
    dbuf_init(&b, (size_t)1 << 24);
    if (o == NULL || cache_obj_json_append(o, &b) != DBUF_OK)
        return NULL;
    return dbuf_ptr(&b);
}

static void test_jscan(void)
{
    char err[128];
    const char *good[] = {
        "{}",
        "[]",
        "{\"a\":[1,2.5,-3e+2,true,false,null,\"x\\u00e9\\n\"]}",
        "  {\"a\" : { \"b\" : [ ] } }  ",
        "\"\\ud83d\\ude00\"",
        "0",
        "-0.5E-3",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        long n = jscan_skip(good[i], strlen(good[i]), err, sizeof(err));
        CHECK(n > 0, "jscan accepts %s", good[i]);
    }
    const char *bad[] = {
        "{",   "{\"a\"}", "{\"a\":}", "[1,]",  "[1 2]",    "1.",         "-",
        "tru", "\"abc",   "\"\\x\"",  "{a:1}", "[\"\t\"]", "{\"a\":1,}", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = jscan_whole(bad[i], strlen(bad[i]), err, sizeof(err));
        CHECK(n < 0 && strstr(err, "at byte") != NULL,
              "jscan rejects '%s' (%s)", bad[i], err);
    }
    CHECK(jscan_skip("01", 2, err, sizeof(err)) == 1 &&
              jscan_whole("01", 2, err, sizeof(err)) == -1 &&
              strstr(err, "trailing") != NULL &&
              jscan_whole(" [1] \n", 6, err, sizeof(err)) == 0,
          "jscan_skip reads one value, jscan_whole wants nothing after it");
    /* Deep nesting is refused, not a stack overflow. */
    char deep[2 * JSCAN_MAX_DEPTH + 10];
    size_t k = 0;
    for (int i = 0; i < JSCAN_MAX_DEPTH + 2; i++)
        deep[k++] = '[';
    for (int i = 0; i < JSCAN_MAX_DEPTH + 2; i++)
        deep[k++] = ']';
    CHECK(jscan_skip(deep, k, err, sizeof(err)) < 0 &&
              strstr(err, "deep") != NULL,
          "nesting deeper than %d refused", JSCAN_MAX_DEPTH);

    const char *o = "{\"k\\u0069nd\":\"a\\\"b\",\"n\":1,\"s\":\"\\u00e9\"}";
    struct jscan_span obj = {o, strlen(o)};
    struct jscan_member m;
    char buf[32];
    CHECK(jscan_find(obj, "kind", &m, err, sizeof(err)) == 1,
          "escaped key found");
    CHECK(jscan_str(m.value, buf, sizeof(buf)) == 3 && strcmp(buf, "a\"b") == 0,
          "string unescaped");
    CHECK(jscan_find(obj, "s", &m, err, sizeof(err)) == 1 &&
              jscan_str(m.value, buf, sizeof(buf)) == 2 &&
              strcmp(buf, "\xc3\xa9") == 0,
          "\\u00e9 decoded as UTF-8");
    CHECK(jscan_find(obj, "missing", &m, err, sizeof(err)) == 0, "absent key");
    CHECK(jscan_str(m.value, buf, 2) == -1, "too small buffer refused");

    /* An escaped key of 256 bytes and more (fuzz_jscan: jscan_str_eq
     * unescaped into 256 bytes and missed it); one byte more or less is
     * another key. */
    for (size_t klen = 250; klen <= 600; klen += 350) {
        char key[602], text[1300];
        memset(key, 'k', klen);
        key[0] = '\n';
        key[klen] = '\0';
        snprintf(text, sizeof(text), "{\"a\":0,\"\\n%s\":7}", key + 1);
        struct jscan_span big = {text, strlen(text)};
        CHECK(jscan_find(big, key, &m, err, sizeof(err)) == 1 &&
                  m.value.len == 1 && m.value.p[0] == '7',
              "escaped key of %zu bytes found", klen);
        key[klen - 1] = '\0';
        CHECK(jscan_find(big, key, &m, err, sizeof(err)) == 0,
              "a prefix of the %zu-byte key is not it", klen);
        key[klen - 1] = 'k';
        key[klen] = 'k';
        key[klen + 1] = '\0';
        CHECK(jscan_find(big, key, &m, err, sizeof(err)) == 0,
              "a longer key than the %zu-byte one is not it", klen);
    }

    /* The iterators tell the closing bracket from input that runs out. */
    const char *cut[] = {"{\"a\":1", "{\"a\":1,", "{", "[1", "[1,", "["};
    for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
        struct jscan_iter it;
        struct jscan_span v;
        int rc = cut[i][0] == '{' ? jscan_object(&it, cut[i], strlen(cut[i]))
                                  : jscan_array(&it, cut[i], strlen(cut[i]));
        while (rc == 0 || rc == 1)
            rc = cut[i][0] == '{'
                     ? jscan_next_member(&it, &m, err, sizeof(err))
                     : jscan_next_element(&it, &v, err, sizeof(err));
        CHECK(rc == -1, "iterating the truncated '%s' is an error (%s)", cut[i],
              err);
    }
    struct jscan_iter it;
    int n = 0;
    jscan_object(&it, "{\"a\":1,\"b\":2}", 13);
    while (jscan_next_member(&it, &m, err, sizeof(err)) == 1)
        n++;
    CHECK(n == 2 && jscan_next_member(&it, &m, err, sizeof(err)) == 0,
          "a complete object ends with 0, also when asked again");
}

static const char *OBJ_FMT =
    "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{%s},"
    "\"data\":{\"big\":\"x\"},\"n\":9223372036854775807,\"f\":0.1}";

static void test_objects(void)
{
    char err[256], text[2048], expect[2048];
    struct cache_obj *o;
    const char *mf = "\"managedFields\":[{\"manager\":\"kubectl\","
                     "\"fieldsV1\":{\"f:data\":{}}}]";
    const char *rest[3][2] = {
        /* managedFields first, middle, last */
        {"%s,\"name\":\"a\",\"namespace\":\"ns\"",
         "\"name\":\"a\",\"namespace\":\"ns\""},
        {"\"name\":\"a\",%s,\"namespace\":\"ns\"",
         "\"name\":\"a\",\"namespace\":\"ns\""},
        {"\"name\":\"a\",\"namespace\":\"ns\",%s",
         "\"name\":\"a\",\"namespace\":\"ns\""},
    };
    for (int i = 0; i < 3; i++) {
        char md[1024], md2[1024];
        snprintf(md, sizeof(md), rest[i][0], mf);
        snprintf(text, sizeof(text), OBJ_FMT, md);
        snprintf(md2, sizeof(md2), "%s", rest[i][1]);
        snprintf(expect, sizeof(expect), OBJ_FMT, md2);
        int rc = cache_obj_from_text(text, strlen(text), NULL, NULL, &o, err,
                                     sizeof(err));
        CHECK(rc == CACHE_OK, "object %d parsed", i);
        if (rc != CACHE_OK)
            continue;
        CHECK_STR_EQ(text_of(o), expect,
                     "managedFields cut, rest byte for byte");
        CHECK_STR_EQ(cache_obj_name(o), "a", "name");
        CHECK_STR_EQ(cache_obj_namespace(o), "ns", "namespace");
        cJSON *j = cache_obj_parse(o);
        CHECK(j != NULL, "stored text is valid JSON");
        cJSON_Delete(j);
        cache_obj_unref(o);
    }

    /* A NUL of its own in a metadata string (fuzz_watch: a name "\u0000a"
     * was stored, and read back as ""): refused, wherever it is. */
    const char *nul_md[] = {
        "\"name\":\"\\u0000a\"",
        "\"name\":\"a\",\"namespace\":\"n\\u0000s\"",
        "\"name\":\"a\",\"uid\":\"\\u0000\"",
        "\"name\":\"a\",\"resourceVersion\":\"1\\u0000\"",
        "\"name\":\"a\",\"labels\":{\"\\u0000\":\"v\"}",
        "\"name\":\"a\",\"labels\":{\"k\":\"v\\u0000w\"}",
    };
    for (size_t i = 0; i < sizeof(nul_md) / sizeof(nul_md[0]); i++) {
        snprintf(text, sizeof(text), OBJ_FMT, nul_md[i]);
        err[0] = '\0';
        int rc = cache_obj_from_text(text, strlen(text), NULL, NULL, &o, err,
                                     sizeof(err));
        CHECK(rc == CACHE_EINVAL && o == NULL && strstr(err, "NUL") != NULL,
              "a NUL in metadata refused: {%s} (%s)", nul_md[i], err);
        if (rc == CACHE_OK)
            cache_obj_unref(o);
    }
    snprintf(text, sizeof(text), OBJ_FMT,
             "\"name\":\"a\",\"labels\":{\"k\":\"\\u0001\"}");
    CHECK(cache_obj_from_text(text, strlen(text), NULL, NULL, &o, err,
                              sizeof(err)) == CACHE_OK,
          "another control character is kept");
    cache_obj_unref(o);

    const char *list_item =
        "{\"metadata\":{\"name\":\"n1\",\"namespace\":\"d\","
        "\"resourceVersion\":\"42\",\"uid\":\"u-1\",\"labels\":{\"app\":"
        "\"web\",\"tier\":\"a\\u002fb\"}},\"data\":{}}";
    CHECK(cache_obj_from_text(list_item, strlen(list_item), "v1", "ConfigMap",
                              &o, err, sizeof(err)) == CACHE_OK,
          "list item parsed");
    CHECK_STR_EQ(text_of(o),
                 "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
                 "{\"name\":\"n1\",\"namespace\":\"d\",\"resourceVersion\":"
                 "\"42\",\"uid\":\"u-1\",\"labels\":{\"app\":\"web\","
                 "\"tier\":\"a\\u002fb\"}},\"data\":{}}",
                 "apiVersion and kind added to a list item");
    CHECK_STR_EQ(cache_obj_rv(o), "42", "resourceVersion");
    CHECK_STR_EQ(cache_obj_uid(o), "u-1", "uid");
    CHECK_STR_EQ(cache_obj_label(o, "app"), "web", "label app");
    CHECK_STR_EQ(cache_obj_label(o, "tier"), "a/b", "label unescaped");
    CHECK(cache_obj_label(o, "none") == NULL, "absent label");
    size_t pos = 0, nl = 0;
    const char *k, *v;
    while (cache_obj_label_next(o, &pos, &k, &v) == 0)
        nl++;
    CHECK_INT_EQ(nl, 2, "two labels iterated");
    struct cache_obj *o2 = cache_obj_ref(o);
    cache_obj_unref(o);
    CHECK_STR_EQ(cache_obj_name(o2), "n1", "still alive with a reference");
    cache_obj_unref(o2);

    const char *cluster = "{\"kind\":\"Namespace\",\"metadata\":{\"name\":"
                          "\"x\"},\"n\":12345678901234567890}";
    CHECK(cache_obj_from_text(cluster, strlen(cluster), "v1", "Ignored", &o,
                              err, sizeof(err)) == CACHE_OK &&
              strstr(text_of(o), "12345678901234567890") != NULL &&
              strstr(text_of(o), "Ignored") == NULL &&
              strncmp(text_of(o), "{\"apiVersion\":\"v1\",", 19) == 0 &&
              strcmp(cache_obj_namespace(o), "") == 0,
          "cluster-scoped, big integer kept exactly, only apiVersion added");
    cache_obj_unref(o);

    const char *invalid[] = {
        "[]",
        "{\"kind\":\"X\"}",
        "{\"metadata\":{\"namespace\":\"a\"}}",
        "{\"metadata\":{\"name\":\"\"}}",
        "{\"metadata\":{\"name\":\"a\"}",
        "{\"metadata\":[]}",
        "{\"metadata\":{\"name\":\"a\"}} trailing",
        "{\"metadata\":{\"name\":\"a\"},\"metadata\":{\"name\":\"b\"}}",
        "{\"kind\":\"A\",\"metadata\":{\"name\":\"a\"},\"kind\":\"B\"}",
        "{\"metadata\":{\"name\":\"a\",\"name\":\"b\"}}",
        "{\"metadata\":{\"name\":\"a\",\"managedFields\":[],"
        "\"managedFields\":[]}}",
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        err[0] = '\0';
        int rc = cache_obj_from_text(invalid[i], strlen(invalid[i]), NULL, NULL,
                                     &o, err, sizeof(err));
        int ok = rc == CACHE_EINVAL && o == NULL && err[0] != '\0';
        CHECK(ok, "invalid object %zu refused (%s)", i, err);
    }

    cJSON *tree = cJSON_Parse("{\"metadata\":{\"name\":\"t\",\"managedFields\""
                              ":[],\"labels\":{\"a\":\"b\"}}}");
    CHECK(cache_obj_from_json(tree, &o, err, sizeof(err)) == CACHE_OK &&
              strcmp(text_of(o),
                     "{\"metadata\":{\"name\":\"t\",\"labels\":{\"a\":"
                     "\"b\"}}}") == 0,
          "from a cJSON tree, managedFields dropped");
    cache_obj_unref(o);
    cJSON_Delete(tree);
}

static struct cache_obj *mk(const char *ns, const char *name, const char *rv,
                            const char *labels)
{
    char text[1024], err[128];
    struct cache_obj *o = NULL;
    snprintf(text, sizeof(text),
             "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\","
             "\"resourceVersion\":\"%s\",\"labels\":{%s}}}",
             name, ns, rv, labels);
    if (cache_obj_from_text(text, strlen(text), "v1", "ConfigMap", &o, err,
                            sizeof(err)) != CACHE_OK) {
        printf("# mk failed: %s\n", err);
        abort();
    }
    return o;
}

static void test_selectors(void)
{
    struct {
        const char *sel;
        int match; /* against app=web,tier=front,env absent */
    } cases[] = {
        {"", 1},
        {"app", 1},
        {"!app", 0},
        {"env", 0},
        {"!env", 1},
        {"app=web", 1},
        {"app==web", 1},
        {"app=db", 0},
        {"app!=db", 1},
        {"env!=x", 1},
        {"app in (db, web)", 1},
        {"app in (db)", 0},
        {"app notin (db)", 1},
        {"app notin (web,db)", 0},
        {"env notin (x)", 1},
        {"env in (x)", 0},
        {"app=web,tier=front", 1},
        {"app=web, tier in (back)", 0},
        {" app = web ", 1},
        {"example.com/role=x", 0},
    };
    struct cache_obj *o =
        mk("d", "o", "1", "\"app\":\"web\",\"tier\":\"front\"");
    char err[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cache_selector *s;
        int rc = cache_selector_parse(cases[i].sel, &s, err, sizeof(err));
        CHECK(rc == CACHE_OK && cache_selector_match(s, o) == cases[i].match,
              "selector '%s' -> %d", cases[i].sel, cases[i].match);
        cache_selector_free(s);
    }
    const char *bad[] = {"app=", "=x",       "app in x",    "app in (a",
                         "a,",   "app >= 1", "app in (a b)"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cache_selector *s = NULL;
        int rc = cache_selector_parse(bad[i], &s, err, sizeof(err));
        /* "app=" selects an empty value, which Kubernetes allows. */
        if (i == 0) {
            CHECK(rc == CACHE_OK && !cache_selector_match(s, o),
                  "'app=' means an empty value");
            cache_selector_free(s);
            continue;
        }
        CHECK(rc == CACHE_EINVAL && s == NULL && strstr(err, "offset"),
              "bad selector '%s' refused (%s)", bad[i], err);
    }
    CHECK(cache_selector_match(NULL, o), "NULL selector matches");
    cache_obj_unref(o);
}

struct rec {
    int added, updated, deleted;
    char last_old_rv[32], last_new_rv[32];
    int last_new_null;
};

static void on_change(enum cache_event ev, const struct cache_obj *old_obj,
                      const struct cache_obj *new_obj, void *arg)
{
    struct rec *r = arg;
    if (ev == CACHE_ADDED)
        r->added++;
    else if (ev == CACHE_UPDATED)
        r->updated++;
    else
        r->deleted++;
    snprintf(r->last_old_rv, sizeof(r->last_old_rv), "%s",
             old_obj ? cache_obj_rv(old_obj) : "-");
    snprintf(r->last_new_rv, sizeof(r->last_new_rv), "%s",
             new_obj ? cache_obj_rv(new_obj) : "-");
    r->last_new_null = new_obj == NULL;
}

static int count_cb(const struct cache_obj *o, void *arg)
{
    (void)o;
    (*(int *)arg)++;
    return 0;
}

static void test_table(void)
{
    struct cache *c = cache_new();
    struct rec r;
    memset(&r, 0, sizeof(r));
    cache_subscribe(c, on_change, &r);

    cache_upsert(c, mk("a", "x", "1", "\"app\":\"web\""));
    cache_upsert(c, mk("b", "x", "2", "\"app\":\"db\""));
    cache_upsert(c, mk("a", "y", "3", "\"app\":\"web\""));
    CHECK_INT_EQ(r.added, 3, "three added");
    CHECK_INT_EQ(cache_len(c), 3, "three cached");
    CHECK(cache_get(c, "a", "x") != NULL && cache_get(c, "b", "x") != NULL &&
              cache_get(c, "c", "x") == NULL && cache_get(c, NULL, "x") == NULL,
          "get by namespace/name");
    cache_upsert(c, mk("a", "x", "1", ""));
    CHECK_INT_EQ(r.updated, 0, "same resourceVersion: no update event");
    cache_upsert(c, mk("a", "x", "4", ""));
    CHECK(r.updated == 1 && strcmp(r.last_old_rv, "1") == 0 &&
              strcmp(r.last_new_rv, "4") == 0,
          "update carries old and new");
    CHECK_STR_EQ(cache_obj_rv(cache_get(c, "a", "x")), "4", "new version");

    int n = 0;
    cache_list(c, "a", NULL, count_cb, &n);
    CHECK_INT_EQ(n, 2, "list in namespace a");
    struct cache_selector *s;
    char err[128];
    cache_selector_parse("app=web", &s, err, sizeof(err));
    n = 0;
    cache_list(c, NULL, s, count_cb, &n);
    CHECK_INT_EQ(n, 1, "list by label (x lost its label in the update)");
    cache_selector_free(s);

    struct cache_obj *fin = mk("b", "x", "9", "");
    CHECK(cache_delete(c, "b", "x", fin) == 1 && r.deleted == 1 &&
              strcmp(r.last_old_rv, "2") == 0 &&
              strcmp(r.last_new_rv, "9") == 0,
          "delete carries last cached and final state");
    cache_obj_unref(fin);
    CHECK(cache_delete(c, "b", "x", NULL) == 0 && r.deleted == 1,
          "deleting twice is a no-op");

    /* Relist: y survives (re-seen), x vanished, z is new. */
    cache_replace_begin(c);
    cache_upsert(c, mk("a", "y", "3", ""));
    cache_upsert(c, mk("a", "z", "5", ""));
    size_t gone = cache_replace_end(c);
    CHECK(gone == 1 && cache_get(c, "a", "x") == NULL &&
              cache_get(c, "a", "y") != NULL &&
              cache_get(c, "a", "z") != NULL && r.last_new_null,
          "replace deletes what the relist did not see, with new NULL");
    CHECK(cache_mem(c) > 0, "memory accounted");
    cache_unsubscribe(c, on_change, &r);
    int before = r.added;
    cache_upsert(c, mk("a", "w", "6", ""));
    CHECK_INT_EQ(r.added, before, "unsubscribed: no notification");
    cache_free(c);
}

/* Randomised: the table against a plain array model, with many deletions
 * (backward-shift deletion must keep every probe chain intact). */
static void test_random(void)
{
    enum { N = 3000, OPS = 40000 };
    static int present[N];
    static int rvs[N];
    struct cache *c = cache_new();
    unsigned seed = 12345;
    int mismatches = 0;
    memset(present, 0, sizeof(present));
    for (int op = 0; op < OPS; op++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N);
        char name[32], rv[32];
        snprintf(name, sizeof(name), "obj-%d", k);
        if ((seed >> 4) % 3 == 0) {
            int d = cache_delete(c, "ns", name, NULL);
            if (d != present[k])
                mismatches++;
            present[k] = 0;
        } else {
            rvs[k]++;
            snprintf(rv, sizeof(rv), "%d", rvs[k]);
            cache_upsert(c, mk("ns", name, rv, ""));
            present[k] = 1;
        }
        if (op % 5000 == 0 || op == OPS - 1) {
            size_t cnt = 0;
            for (int i = 0; i < N; i++) {
                snprintf(name, sizeof(name), "obj-%d", i);
                const struct cache_obj *o = cache_get(c, "ns", name);
                if ((o != NULL) != present[i])
                    mismatches++;
                if (o != NULL) {
                    snprintf(rv, sizeof(rv), "%d", rvs[i]);
                    if (strcmp(cache_obj_rv(o), rv) != 0)
                        mismatches++;
                }
                cnt += present[i];
            }
            if (cnt != cache_len(c))
                mismatches++;
        }
    }
    CHECK_INT_EQ(mismatches, 0, "random upserts/deletes match the model");
    /* A relist that keeps every other object. */
    cache_replace_begin(c);
    size_t kept = 0;
    for (int i = 0; i < N; i += 2) {
        if (!present[i])
            continue;
        char name[32], rv[32];
        snprintf(name, sizeof(name), "obj-%d", i);
        snprintf(rv, sizeof(rv), "%d", rvs[i]);
        cache_upsert(c, mk("ns", name, rv, ""));
        kept++;
    }
    cache_replace_end(c);
    CHECK_INT_EQ(cache_len(c), kept, "replace keeps exactly the seen ones");
    cache_free(c);
}

/* What alike objects share beyond their metadata (a pod template's
 * probes and security context, a configuration), 650 bytes. */
#define LIKE_COMMON                                                            \
    "\"livenessProbe\":{\"failureThreshold\":3,\"initialDelaySeconds\":30,"    \
    "\"periodSeconds\":10,\"successThreshold\":1,\"tcpSocket\":{\"port\":"     \
    "\"nfs\"},\"timeoutSeconds\":5},\"readinessProbe\":{\"failureThreshold\":" \
    "3,\"initialDelaySeconds\":10,\"periodSeconds\":5,\"successThreshold\":1," \
    "\"tcpSocket\":{\"port\":\"nfs\"},\"timeoutSeconds\":3},\"resources\":{"   \
    "\"limits\":{\"cpu\":\"2\",\"memory\":\"4Gi\"},\"requests\":{\"cpu\":"     \
    "\"500m\",\"memory\":\"1Gi\"}},\"securityContext\":{"                      \
    "\"allowPrivilegeEscalation\":false,\"capabilities\":{\"drop\":["          \
    "\"ALL\"]}},\"terminationMessagePolicy\":\"FallbackToLogsOnError\","       \
    "\"volumeMounts\":[{\"mountPath\":\"/config\",\"name\":\"config\","        \
    "\"readOnly\":true},{\"mountPath\":\"/data/metadata\",\"name\":"           \
    "\"metadata\"},{\"mountPath\":\"/data/content\",\"name\":\"content\"}]"

/* A StatefulSet-like object text of DittoServer i at resourceVersion rv
 * (family 0), or a differently shaped one (family 1). */
static void like_text(char *buf, size_t n, int family, int i, int rv)
{
    if (family == 0)
        snprintf(
            buf, n,
            "{\"apiVersion\":\"apps/v1\",\"kind\":\"StatefulSet\","
            "\"metadata\":{\"name\":\"ds-%d\",\"namespace\":\"bench\","
            "\"uid\":\"%08x-1d2e-4c3b-9a8f-%012x\",\"resourceVersion\":"
            "\"%d\",\"labels\":{\"app.kubernetes.io/instance\":\"ds-%d\","
            "\"app.kubernetes.io/managed-by\":\"dittofs-operator\"},"
            "\"ownerReferences\":[{\"apiVersion\":\"dittofs.dittofs.com/"
            "v1alpha1\",\"controller\":true,\"kind\":\"DittoServer\","
            "\"name\":\"ds-%d\",\"uid\":\"%08x\"}]},\"spec\":{\"replicas\":"
            "%d,\"serviceName\":\"ds-%d-headless\",\"template\":{\"spec\":"
            "{\"containers\":[{\"image\":\"ghcr.io/marmos91/dittofs:%s\","
            "\"name\":\"dittofs\",\"terminationMessagePath\":\"/dev/"
            "termination-log\",%s}]}}},\"status\":{\"replicas\":%d}}",
            i, (unsigned)i * 2654435761u, (unsigned)i * 40503u, rv, i, i,
            (unsigned)i * 97u, i % 3, i, i % 7 ? "latest" : "v1.2.3",
            LIKE_COMMON, i % 3);
    else
        snprintf(
            buf, n,
            "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
            "{\"name\":\"cm-%d\",\"namespace\":\"bench\",\"resourceVersion\""
            ":\"%d\"},\"data\":{\"config.yaml\":\"adapters:\\n  nfs:\\n"
            "    port: %d\\nlogging:\\n  level: INFO\\nshares:\\n- name: "
            "/export-%d\\n  read_only: false\\n\",\"common\":{%s}}}",
            i, rv, 2049 + i % 5, i, LIKE_COMMON);
}

/* How many of the n objects of `family` at rv cache_get gives back byte
 * for byte. */
static int same_family(struct cache *c, int family, int n, int rv)
{
    char text[4096];
    int same = 0;
    for (int i = 0; i < n; i++) {
        like_text(text, sizeof(text), family, i, rv + i);
        char name[32];
        snprintf(name, sizeof(name), family == 0 ? "ds-%d" : "cm-%d", i);
        const struct cache_obj *o = cache_get(c, "bench", name);
        const char *t = o != NULL ? text_of(o) : NULL;
        same += t != NULL && strcmp(t, text) == 0 &&
                cache_obj_json_len(o) == strlen(text);
    }
    return same;
}

/* Upserts n objects of `family` at rv into c; returns how many of them
 * cache_get then gives back byte for byte. */
static int put_family(struct cache *c, int family, int n, int rv,
                      size_t *text_bytes)
{
    char text[4096], err[128];
    for (int i = 0; i < n; i++) {
        like_text(text, sizeof(text), family, i, rv + i);
        struct cache_obj *o;
        if (cache_obj_from_text(text, strlen(text), NULL, NULL, &o, err,
                                sizeof(err)) != CACHE_OK) {
            printf("# %s\n", err);
            continue;
        }
        *text_bytes += strlen(text);
        cache_upsert(c, o);
    }
    return same_family(c, family, n, rv);
}

static void test_encoding(void)
{
    struct cache *c = cache_new();
    size_t text_bytes = 0;
    CHECK_INT_EQ(put_family(c, 0, 2000, 100, &text_bytes), 2000,
                 "2000 alike objects: each text back byte for byte");
    size_t mem = cache_mem(c);
    CHECK(mem * 4 < text_bytes,
          "... stored in %zu bytes for %zu bytes of text (under a quarter)",
          mem, text_bytes);
    const struct cache_obj *o = cache_get(c, "bench", "ds-1234");
    cJSON *j = o != NULL ? cache_obj_parse(o) : NULL;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "metadata");
    CHECK_STR_EQ(cJSON_GetStringValue(
                     cJSON_GetObjectItemCaseSensitive(md, "resourceVersion")),
                 "1334", "an encoded object parses");
    cJSON_Delete(j);
    struct cache_obj *kept = cache_obj_ref((struct cache_obj *)o);

    /* Updates of the same objects, then objects of another shape: a new
     * reference is taken and pays again; the first ones keep theirs. */
    CHECK_INT_EQ(put_family(c, 0, 2000, 5000, &text_bytes), 2000,
                 "updated: every text back byte for byte");
    size_t mem0 = cache_mem(c), text1 = 0;
    CHECK_INT_EQ(put_family(c, 1, 2000, 9000, &text1), 2000,
                 "2000 objects of another shape: every text back");
    mem = cache_mem(c) - mem0;
    CHECK(mem * 2 < text1,
          "... with a new reference, %zu more bytes for %zu of text", mem,
          text1);
    CHECK_INT_EQ(same_family(c, 0, 2000, 5000), 2000,
                 "the first shape, against the retired reference: every "
                 "text still back");

    /* Random fragments: partial matches everywhere, some objects stored
     * as text, some encoded. */
    static const char *frag[] = {
        "\"a\":",     "\"bb\":\"",
        "1234567890", "xyzzy",
        "\",",        "\"name\"",
        "{}",         "[1,2]",
        "true,",      "\"long-ish-fragment-of-text\":"};
    struct cache *r = cache_new();
    unsigned seed = 7;
    int bad = 0;
    for (int i = 0; i < 3000; i++) {
        char text[2048], name[32], err[128];
        snprintf(name, sizeof(name), "r-%d", i % 700);
        size_t n = (size_t)snprintf(
            text, sizeof(text),
            "{\"metadata\":{\"name\":\"%s\",\"resourceVersion\":\"%d\"},"
            "\"d\":\"",
            name, i + 1);
        int parts = 5 + (int)(seed % 60);
        for (int k = 0; k < parts && n < sizeof(text) - 64; k++) {
            seed = seed * 1103515245u + 12345u;
            const char *f = frag[(seed >> 8) % 10];
            for (const char *p = f; *p; p++)
                text[n++] = *p == '"' ? '\'' : *p;
        }
        n += (size_t)snprintf(text + n, sizeof(text) - n, "\"}");
        struct cache_obj *ro;
        if (cache_obj_from_text(text, n, NULL, NULL, &ro, err, sizeof(err)) !=
            CACHE_OK) {
            printf("# %s: %s\n", err, text);
            bad++;
            continue;
        }
        cache_upsert(r, ro);
        const struct cache_obj *got = cache_get(r, "", name);
        const char *t = got != NULL ? text_of(got) : NULL;
        bad += t == NULL || strcmp(t, text) != 0;
    }
    CHECK_INT_EQ(bad, 0, "3000 random texts: each back byte for byte");
    cache_free(r);

    cache_free(c);
    CHECK_STR_EQ(cache_obj_rv(kept), "1334",
                 "an object kept outlives its cache ...");
    const char *t = text_of(kept);
    CHECK(t != NULL && strstr(t, "\"name\":\"ds-1234\"") != NULL &&
              strstr(t, "\"resourceVersion\":\"1334\"") != NULL,
          "... and its text still decodes");
    cache_obj_unref(kept);
}

int main(void)
{
    test_jscan();
    test_objects();
    test_selectors();
    test_table();
    test_random();
    test_encoding();
    text_of(NULL);
    return TEST_SUMMARY();
}
