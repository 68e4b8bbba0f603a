/*
 * test_apply: the server-side apply helpers (apply.h) without a cluster:
 *  - quantities: apimachinery's parse table (equal and unequal pairs,
 *    ordering, rounding to 1n, invalid spellings);
 *  - apply_is_subset: every rule (omitempty zero values, maps, numbers,
 *    quantities only where Kubernetes has them, arrays by name / uid /
 *    type / metadata.name with order and live extras, element-wise
 *    arrays, Secret stringData) and the why-path text;
 *  - condition stamping, status equality, RFC 3339, API paths;
 *  - shaping: ownership, annotations, the applied-hash, live claim
 *    templates, the uid/resourceVersion precondition of an update.
 */
#include <cjson/cJSON.h>

#include "apply.h"
#include "jscan.h"
#include "testlib.h"
#include "text.h"

#define QTY_VECTORS "spec/c/fixtures/quantity_vectors.json"

/* --- quantities ----------------------------------------------------------- */

static void qty_eq(const char *a, const char *b)
{
    int cmp = 99;
    int rc = apply_quantity_cmp(a, b, &cmp);
    CHECK(rc == 0 && cmp == 0, "quantity %s == %s (rc %d cmp %d)", a, b, rc,
          cmp);
    rc = apply_quantity_cmp(b, a, &cmp);
    CHECK(rc == 0 && cmp == 0, "quantity %s == %s (reversed)", b, a);
}

/* a < b */
static void qty_lt(const char *a, const char *b)
{
    int cmp = 99;
    int rc = apply_quantity_cmp(a, b, &cmp);
    CHECK(rc == 0 && cmp == -1, "quantity %s < %s (rc %d cmp %d)", a, b, rc,
          cmp);
    rc = apply_quantity_cmp(b, a, &cmp);
    CHECK(rc == 0 && cmp == 1, "quantity %s > %s", b, a);
}

static void qty_invalid(const char *a)
{
    int cmp = 99;
    CHECK(apply_quantity_cmp(a, "1", &cmp) == -1 && cmp == 99,
          "quantity \"%s\" is invalid", a);
    CHECK(apply_quantity_cmp("1", a, &cmp) == -1,
          "quantity \"%s\" is invalid "
          "(second)",
          a);
}

/* Runs check(a, b) on every pair of the list `key` of `from`. */
static void qty_pairs(const cJSON *from, const char *key,
                      void (*check)(const char *, const char *))
{
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(from, key))
        check(cJSON_GetStringValue(cJSON_GetArrayItem(p, 0)),
              cJSON_GetStringValue(cJSON_GetArrayItem(p, 1)));
}

static void test_quantities(void)
{
    /* The vectors lua/k8s/quantity.lua passes too (issue 11: one table
     * of apimachinery's cases for both implementations). */
    FILE *f = fopen(QTY_VECTORS, "rb");
    static char text[65536];
    size_t len = f ? fread(text, 1, sizeof(text), f) : 0;
    if (f)
        fclose(f);
    cJSON *v = cJSON_ParseWithLength(text, len);
    if (!CHECK(v != NULL, "%s parses", QTY_VECTORS))
        return;
    qty_pairs(v, "equal", qty_eq);
    qty_pairs(v, "less", qty_lt);
    const cJSON *b;
    cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(v, "invalid"))
        qty_invalid(cJSON_GetStringValue(b));
    /* Past int64 the C comparison stays exact (Lua refuses those). */
    const cJSON *big = cJSON_GetObjectItemCaseSensitive(v, "beyond_int64");
    qty_pairs(big, "equal", qty_eq);
    qty_pairs(big, "less", qty_lt);
    cJSON_Delete(v);

    int cmp = 99;
    CHECK(apply_quantity_cmp(NULL, "1", &cmp) == -1, "NULL is not a quantity");
    /* Go accepts a bare sign and a bare point as zero; so do we */
    CHECK(apply_quantity_cmp("-", "0", &cmp) == 0 && cmp == 0, "\"-\" is 0");
    CHECK(apply_quantity_cmp(".", "0", &cmp) == 0 && cmp == 0, "\".\" is 0");
    /* long digit strings stay exact */
    qty_lt("123456789012345678901234567890", "123456789012345678901234567891");
    qty_eq("123456789012345678901234567890Ki",
           "126419751948641975194864197519360");
}

/* --- apply_is_subset ------------------------------------------------------ */

/* Parses both texts, checks the result and (when want_why is not NULL)
 * the why-path. */
static void subset(const char *desired, const char *live, int want,
                   const char *want_why, const char *what)
{
    cJSON *d = cJSON_Parse(desired);
    cJSON *l = cJSON_Parse(live);
    struct dbuf why;
    dbuf_init(&why, 4096);
    if (d == NULL || l == NULL) {
        CHECK(0, "%s: test JSON parses", what);
        goto done;
    }
    int got = apply_is_subset(d, l, &why);
    if (!CHECK(got == want, "%s: subset %d", what, want))
        TEST_NOTE("why: %s", dbuf_ptr(&why));
    if (want_why != NULL)
        CHECK_STR_EQ(dbuf_ptr(&why), want_why, what);
    if (want == 1)
        CHECK(dbuf_len(&why) == 0, "%s: no why when equal", what);
done:
    dbuf_free(&why);
    cJSON_Delete(d);
    cJSON_Delete(l);
}

static void test_subset_objects(void)
{
    subset("{\"a\":1,\"b\":{\"c\":\"x\"}}", "{\"a\":1,\"b\":{\"c\":\"x\"}}", 1,
           NULL, "identical objects");
    subset("{\"a\":1}", "{\"a\":1,\"uid\":\"u\",\"status\":{\"x\":1}}", 1, NULL,
           "extra live keys are ignored");
    subset("{\"spec\":{\"replicas\":2}}", "{\"spec\":{}}", 0, "spec.replicas",
           "a missing key");
    subset("{\"spec\":{\"replicas\":2}}", "{}", 0, "spec", "a missing object");
    subset("{\"a\":{\"b\":1}}", "{\"a\":\"x\"}", 0, "a",
           "object against string");
    subset("{\"a\":\"x\"}", "{\"a\":{}}", 0, "a", "string against object");
    subset("{}", "{\"a\":1}", 1, NULL, "empty desired");

    /* omitempty: a desired zero value matches an absent key */
    subset("{\"readOnly\":false}", "{}", 1, NULL, "false vs absent");
    subset("{\"n\":0}", "{}", 1, NULL, "0 vs absent");
    subset("{\"s\":\"\"}", "{}", 1, NULL, "\"\" vs absent");
    subset("{\"l\":[]}", "{}", 1, NULL, "[] vs absent");
    subset("{\"o\":{}}", "{}", 1, NULL, "{} vs absent");
    subset("{\"z\":null}", "{}", 1, NULL, "null vs absent");
    subset("{\"o\":{\"a\":false,\"b\":{\"c\":\"\"}}}", "{}", 1, NULL,
           "object of zero values vs absent");
    subset("{\"o\":{\"a\":false,\"b\":1}}", "{}", 0, "o",
           "object with a value vs absent");
    /* ...but not a different present value */
    subset("{\"spec\":{\"replicas\":0}}", "{\"spec\":{\"replicas\":3}}", 0,
           "spec.replicas", "0 vs 3 (scaled by someone)");
    subset("{\"a\":false}", "{\"a\":true}", 0, "a", "false vs true");
    subset("{\"a\":\"\"}", "{\"a\":\"x\"}", 0, "a", "\"\" vs \"x\"");
    subset("{\"a\":null}", "{\"a\":1}", 0, "a", "null vs 1");
    subset("{\"a\":null}", "{\"a\":null}", 1, NULL, "null vs null");
    /* map entries are data, not omitempty fields */
    subset("{\"metadata\":{\"labels\":{\"a\":\"\"}}}",
           "{\"metadata\":{\"labels\":{}}}", 0, "metadata.labels[a]",
           "a label with an empty value must be there");
    subset("{\"data\":{\"k\":\"\"}}", "{\"data\":{}}", 0, "data[k]",
           "an empty data entry must be there");
    subset("{\"metadata\":{\"labels\":{}}}", "{\"metadata\":{}}", 1, NULL,
           "empty labels vs absent");
    subset("{\"metadata\":{\"labels\":{\"a\":\"\"}}}", "{\"metadata\":{}}", 0,
           "metadata.labels", "labels with an entry vs absent");

    /* numbers, booleans, strings */
    subset("{\"a\":40}", "{\"a\":40.0}", 1, NULL, "40 == 40.0");
    subset("{\"a\":40}", "{\"a\":41}", 0, "a", "40 != 41");
    subset("{\"a\":40}", "{\"a\":\"40\"}", 0, "a", "40 != \"40\"");
    subset("{\"a\":\"40\"}", "{\"a\":40}", 0, "a", "\"40\" != 40");
    subset("{\"a\":0.5}", "{\"a\":0.5}", 1, NULL, "0.5 == 0.5");
    subset("{\"a\":1e3}", "{\"a\":1000}", 1, NULL, "1e3 == 1000");
    subset("{\"a\":true}", "{\"a\":true}", 1, NULL, "true == true");
    subset("{\"a\":true}", "{\"a\":\"true\"}", 0, "a", "true != \"true\"");
    subset("{\"a\":true}", "{}", 0, "a", "true vs absent");
    subset("{\"a\":\"x\"}", "{\"a\":\"X\"}", 0, "a", "strings are exact");
    subset("{\"a\":\"x\"}", "{\"a\":null}", 0, "a", "\"x\" vs null");
    subset("{\"metadata\":{}}", "{\"metadata\":null}", 1, NULL,
           "{} vs null (the apiserver's unset)");
    subset("{\"a\":\"\"}", "{\"a\":null}", 1, NULL, "\"\" vs null");
}

static void test_subset_quantities(void)
{
    subset("{\"resources\":{\"limits\":{\"cpu\":\"2\",\"memory\":\"4Gi\"},"
           "\"requests\":{\"cpu\":\"0.5\",\"memory\":\"1024Mi\"}}}",
           "{\"resources\":{\"limits\":{\"cpu\":\"2\",\"memory\":\"4Gi\"},"
           "\"requests\":{\"cpu\":\"500m\",\"memory\":\"1Gi\"}}}",
           1, NULL, "resources: the apiserver's canonical spellings");
    subset("{\"resources\":{\"limits\":{\"cpu\":2}}}",
           "{\"resources\":{\"limits\":{\"cpu\":\"2\"}}}", 1, NULL,
           "a quantity as a JSON number");
    subset("{\"resources\":{\"limits\":{\"cpu\":0.5}}}",
           "{\"resources\":{\"limits\":{\"cpu\":\"500m\"}}}", 1, NULL,
           "0.5 as a JSON number");
    subset("{\"resources\":{\"limits\":{\"cpu\":0.1}}}",
           "{\"resources\":{\"limits\":{\"cpu\":\"100m\"}}}", 1, NULL,
           "0.1 as a JSON number (no float noise)");
    subset("{\"resources\":{\"requests\":{\"cpu\":\"1e3\"}}}",
           "{\"resources\":{\"requests\":{\"cpu\":\"1k\"}}}", 1, NULL,
           "1e3 == 1k");
    subset("{\"resources\":{\"requests\":{\"memory\":\"1Gi\"}}}",
           "{\"resources\":{\"requests\":{\"memory\":\"1G\"}}}", 0,
           "resources.requests[memory]", "1Gi != 1G");
    subset("{\"resources\":{\"requests\":{\"cpu\":\"500m\"}}}",
           "{\"resources\":{\"requests\":{\"cpu\":\"501m\"}}}", 0,
           "resources.requests[cpu]", "500m != 501m");
    subset("{\"resources\":{\"requests\":{\"cpu\":\"0\"}}}",
           "{\"resources\":{\"requests\":{}}}", 0, "resources.requests[cpu]",
           "a zero request is an entry");
    subset("{\"resources\":{\"requests\":{\"cpu\":\"x\"}}}",
           "{\"resources\":{\"requests\":{\"cpu\":\"x\"}}}", 1, NULL,
           "not a quantity: compared as text");
    subset("{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"10Gi\"}}}}",
           "{\"spec\":{\"resources\":{\"requests\":{\"storage\":"
           "\"10240Mi\"}}}}",
           1, NULL, "PVC storage");
    subset("{\"emptyDir\":{\"sizeLimit\":\"1Gi\"}}",
           "{\"emptyDir\":{\"sizeLimit\":\"1024Mi\"}}", 1, NULL,
           "emptyDir sizeLimit");
    subset("{\"overhead\":{\"cpu\":\"0.25\"}}",
           "{\"overhead\":{\"cpu\":"
           "\"250m\"}}",
           1, NULL, "pod overhead");
    /* only where Kubernetes has quantities */
    subset("{\"metadata\":{\"labels\":{\"size\":\"1k\"}}}",
           "{\"metadata\":{\"labels\":{\"size\":\"1000\"}}}", 0,
           "metadata.labels[size]", "a label 1k != 1000");
    subset("{\"data\":{\"cpu\":\"0.5\"}}", "{\"data\":{\"cpu\":\"500m\"}}", 0,
           "data[cpu]", "a data value 0.5 != 500m");
    subset("{\"spec\":{\"memory\":\"1Gi\"}}",
           "{\"spec\":{\"memory\":\"1024Mi\"}}", 0, "spec.memory",
           "a CR field is not a quantity");
}

static void test_subset_arrays(void)
{
    const char *live =
        "{\"containers\":[{\"name\":\"a\",\"image\":\"i:1\","
        "\"imagePullPolicy\":\"IfNotPresent\"},{\"name\":\"sidecar\","
        "\"image\":\"s\"},{\"name\":\"b\",\"image\":\"j\",\"env\":["
        "{\"name\":\"X\",\"value\":\"1\"},{\"name\":\"FOREIGN\",\"value\":"
        "\"f\"},{\"name\":\"Y\",\"valueFrom\":{\"secretKeyRef\":{\"name\":"
        "\"s\",\"key\":\"k\"}}}]}]}";
    subset("{\"containers\":[{\"name\":\"a\",\"image\":\"i:1\"},{\"name\":"
           "\"b\",\"image\":\"j\",\"env\":[{\"name\":\"X\",\"value\":\"1\"},"
           "{\"name\":\"Y\",\"valueFrom\":{\"secretKeyRef\":{\"name\":\"s\","
           "\"key\":\"k\"}}}]}]}",
           live, 1, NULL, "by name with live extras (sidecar, env)");
    subset("{\"containers\":[{\"name\":\"b\",\"image\":\"j\"},{\"name\":"
           "\"a\",\"image\":\"i:1\"}]}",
           live, 1, "", "by name: in any order (apply never reorders)");
    subset("{\"containers\":[{\"name\":\"a\",\"image\":\"i:2\"}]}", live, 0,
           "containers[a].image", "by name: a changed image");
    subset("{\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}", live, 0,
           "containers[c]", "by name: a missing element");
    subset("{\"containers\":[{\"name\":\"b\",\"env\":[{\"name\":\"X\","
           "\"value\":\"2\"}]}]}",
           live, 0, "containers[b].env[X].value", "by name: nested env");
    subset("{\"containers\":[{\"name\":\"b\",\"env\":[{\"name\":\"Z\","
           "\"value\":\"\"}]}]}",
           live, 0, "containers[b].env[Z]", "by name: a missing env var");
    subset("{\"containers\":{\"name\":\"a\"}}",
           "{\"containers\":[{\"name\":\"a\"}]}", 0, "containers",
           "object vs array");
    subset("{\"containers\":[{\"name\":\"a\"}]}", "{\"containers\":{}}", 0,
           "containers", "array vs object");

    /* element-wise */
    subset("{\"args\":[\"a\",\"b\"]}", "{\"args\":[\"a\",\"b\"]}", 1, NULL,
           "strings element-wise");
    subset("{\"args\":[\"a\",\"b\"]}", "{\"args\":[\"a\",\"b\",\"c\"]}", 0,
           "args", "element-wise: lengths differ");
    subset("{\"args\":[\"a\",\"b\"]}", "{\"args\":[\"b\",\"a\"]}", 0, "args[0]",
           "element-wise: order");
    subset("{\"t\":[{\"key\":\"k\",\"effect\":\"\"}]}",
           "{\"t\":[{\"key\":\"k\",\"operator\":\"Equal\"}]}", 1, NULL,
           "unnamed objects element-wise, defaults in live");
    subset("{\"t\":[{\"name\":\"a\"},{\"key\":\"k\"}]}",
           "{\"t\":[{\"name\":\"a\"},{\"key\":\"x\"}]}", 0, "t[1].key",
           "a partly named array is element-wise");
    subset("{\"n\":[1,2]}", "{\"n\":[1.0,2.0]}", 1, NULL,
           "numbers element-wise");
    subset("{\"args\":[]}", "{\"args\":[\"x\"]}", 0, "args",
           "[] vs a non-empty list");
    subset("{\"args\":[]}", "{\"args\":[]}", 1, NULL, "[] vs []");
    subset("{\"capabilities\":{\"drop\":[\"ALL\"]}}",
           "{\"capabilities\":{\"drop\":[\"ALL\"]}}", 1, NULL,
           "capabilities.drop");

    /* ownerReferences by uid */
    const char *owner_live =
        "{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":\"x/v1\","
        "\"kind\":\"Other\",\"name\":\"o\",\"uid\":\"u-other\"},"
        "{\"apiVersion\":\"dittofs.dittofs.com/v1alpha1\",\"kind\":"
        "\"DittoServer\",\"name\":\"ds\",\"uid\":\"u-1\",\"controller\":true,"
        "\"blockOwnerDeletion\":true}]}}";
    subset("{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":"
           "\"dittofs.dittofs.com/v1alpha1\",\"kind\":\"DittoServer\","
           "\"name\":\"ds\",\"uid\":\"u-1\",\"controller\":true,"
           "\"blockOwnerDeletion\":true}]}}",
           owner_live, 1, NULL, "ownerReferences by uid, another owner too");
    subset("{\"metadata\":{\"ownerReferences\":[{\"name\":\"ds\",\"uid\":"
           "\"u-2\"}]}}",
           owner_live, 0, "metadata.ownerReferences[u-2]",
           "ownerReferences: a new uid (DittoServer recreated)");
    subset("{\"metadata\":{\"ownerReferences\":[{\"uid\":\"u-1\","
           "\"controller\":false}]}}",
           owner_live, 0, "metadata.ownerReferences[u-1].controller",
           "ownerReferences: controller changed");

    /* conditions by type */
    subset("{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}",
           "{\"conditions\":[{\"type\":\"Other\",\"status\":\"False\"},"
           "{\"type\":\"Ready\",\"status\":\"True\"}]}",
           1, NULL, "conditions by type");
    subset("{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}",
           "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\"}]}", 0,
           "conditions[Ready].status", "conditions: status differs");

    /* volumeClaimTemplates by metadata.name */
    const char *vct_live =
        "{\"spec\":{\"volumeClaimTemplates\":[{\"apiVersion\":\"v1\","
        "\"kind\":\"PersistentVolumeClaim\",\"metadata\":{\"name\":"
        "\"metadata\",\"creationTimestamp\":null},\"spec\":{\"accessModes\":"
        "[\"ReadWriteOnce\"],\"resources\":{\"requests\":{\"storage\":"
        "\"10Gi\"}},\"volumeMode\":\"Filesystem\"},\"status\":{\"phase\":"
        "\"Pending\"}},{\"metadata\":{\"name\":\"content\"},\"spec\":{"
        "\"resources\":{\"requests\":{\"storage\":\"100Gi\"}}}}]}}";
    subset("{\"spec\":{\"volumeClaimTemplates\":[{\"metadata\":{\"name\":"
           "\"metadata\"},\"spec\":{\"accessModes\":[\"ReadWriteOnce\"],"
           "\"resources\":{\"requests\":{\"storage\":\"10240Mi\"}}}},"
           "{\"metadata\":{\"name\":\"content\"},\"spec\":{\"resources\":"
           "{\"requests\":{\"storage\":\"100Gi\"}}}}]}}",
           vct_live, 1, NULL, "volumeClaimTemplates by metadata.name");
    subset("{\"spec\":{\"volumeClaimTemplates\":[{\"metadata\":{\"name\":"
           "\"content\"},\"spec\":{\"resources\":{\"requests\":{\"storage\":"
           "\"200Gi\"}}}}]}}",
           vct_live, 0,
           "spec.volumeClaimTemplates[content].spec.resources.requests"
           "[storage]",
           "volumeClaimTemplates: a changed size");
}

static void test_subset_k8s(void)
{
    /* metadata: labels and annotations as subsets */
    const char *meta_live =
        "{\"metadata\":{\"name\":\"x\",\"namespace\":\"ns\",\"uid\":\"u\","
        "\"resourceVersion\":\"12\",\"creationTimestamp\":"
        "\"2026-01-01T00:00:00Z\",\"labels\":{\"app.kubernetes.io/name\":"
        "\"dittofs-server\",\"foreign\":\"yes\"},\"annotations\":{\"a\":"
        "\"1\",\"kubectl.kubernetes.io/last-applied-configuration\":\"{}\"}}}";
    subset("{\"metadata\":{\"name\":\"x\",\"namespace\":\"ns\",\"labels\":{"
           "\"app.kubernetes.io/name\":\"dittofs-server\"},\"annotations\":{"
           "\"a\":\"1\"}}}",
           meta_live, 1, NULL, "metadata: labels and annotations subsets");
    subset("{\"metadata\":{\"labels\":{\"app.kubernetes.io/name\":\"other\"}}}",
           meta_live, 0, "metadata.labels[app.kubernetes.io/name]",
           "metadata: a label value changed");
    subset("{\"metadata\":{\"labels\":{\"dittofs.dittofs.com/server\":"
           "\"x\"}}}",
           meta_live, 0, "metadata.labels[dittofs.dittofs.com/server]",
           "metadata: a label removed");
    subset("{\"metadata\":{\"annotations\":{\"a\":\"2\"}}}", meta_live, 0,
           "metadata.annotations[a]", "metadata: an annotation changed");
    subset("{\"metadata\":{\"name\":\"y\"}}", meta_live, 0, "metadata.name",
           "metadata: another name");
    subset("{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":"
           "\"dittofs\",\"image\":\"a\"}]}}}}",
           "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":"
           "\"dittofs\",\"image\":\"b\"}]}}}}",
           0, "spec.template.spec.containers[dittofs].image",
           "why: the contract's example");

    /* Secret: stringData folded into data */
    subset("{\"kind\":\"Secret\",\"stringData\":{\"k\":\"hello\",\"e\":\"\"}}",
           "{\"kind\":\"Secret\",\"data\":{\"k\":\"aGVsbG8=\",\"e\":\"\"}}", 1,
           NULL, "Secret: stringData vs data");
    subset("{\"kind\":\"Secret\",\"stringData\":{\"k\":\"hi!\"}}",
           "{\"kind\":\"Secret\",\"data\":{\"k\":\"aGkh\"}}", 1, NULL,
           "Secret: base64 without padding");
    subset("{\"kind\":\"Secret\",\"stringData\":{\"k\":\"hello\"}}",
           "{\"kind\":\"Secret\",\"stringData\":{\"k\":\"hello\"}}", 1, NULL,
           "Secret: stringData vs stringData");
    subset("{\"kind\":\"Secret\",\"stringData\":{\"k\":\"hello\"}}",
           "{\"kind\":\"Secret\",\"data\":{\"k\":\"aGVsbG9v\"}}", 0,
           "stringData[k]", "Secret: changed data");
    subset("{\"kind\":\"Secret\",\"stringData\":{\"k\":\"hello\"}}",
           "{\"kind\":\"Secret\"}", 0, "stringData[k]", "Secret: missing data");
    subset("{\"kind\":\"ConfigMap\",\"stringData\":{\"k\":\"hello\"}}",
           "{\"kind\":\"ConfigMap\",\"data\":{\"k\":\"aGVsbG8=\"}}", 0,
           "stringData", "not a Secret: no folding");

    /* NULL arguments */
    cJSON *o = cJSON_CreateObject();
    struct dbuf why;
    dbuf_init(&why, 256);
    CHECK(apply_is_subset(NULL, o, &why) == 0, "NULL desired: 0");
    CHECK(apply_is_subset(o, NULL, NULL) == 0, "NULL live: 0");
    CHECK(apply_is_subset(o, o, NULL) == 1, "{} vs {}: 1");
    cJSON *s = cJSON_CreateString("x");
    CHECK(apply_is_subset(s, o, &why) == 0, "root type mismatch: 0");
    CHECK_STR_EQ(dbuf_ptr(&why), "(root)", "root why");
    cJSON_Delete(s);
    cJSON_Delete(o);
    dbuf_free(&why);
}

/* --- status --------------------------------------------------------------- */

static const char *cond_time(const cJSON *status, const char *type)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(status, "conditions"))
    {
        const cJSON *t = cJSON_GetObjectItem(c, "type");
        if (cJSON_IsString(t) && strcmp(t->valuestring, type) == 0) {
            const cJSON *lt = cJSON_GetObjectItem(c, "lastTransitionTime");
            return cJSON_IsString(lt) ? lt->valuestring : NULL;
        }
    }
    return NULL;
}

static void test_stamp(void)
{
    const char *now = "2026-11-27T13:00:00Z";
    const char *desired_text =
        "{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\","
        "\"status\":\"True\",\"reason\":\"R\"},{\"type\":\"Reconciled\","
        "\"status\":\"True\",\"lastTransitionTime\":\"1999-01-01T00:00:00Z\"},"
        "{\"type\":\"New\",\"status\":\"False\"}]}";
    cJSON *d = cJSON_Parse(desired_text);
    CHECK(apply_stamp_conditions(d, NULL, now) == 0, "stamp: no live status");
    CHECK_STR_EQ(cond_time(d, "Ready"), now, "no live: Ready now");
    CHECK_STR_EQ(cond_time(d, "Reconciled"), now,
                 "no live: a stale desired time replaced");
    CHECK_STR_EQ(cond_time(d, "New"), now, "no live: New now");
    cJSON_Delete(d);

    cJSON *live = cJSON_Parse(
        "{\"conditions\":[{\"type\":\"Reconciled\",\"status\":\"False\","
        "\"lastTransitionTime\":\"2026-01-02T00:00:00Z\"},{\"type\":"
        "\"Ready\",\"status\":\"True\",\"lastTransitionTime\":"
        "\"2026-01-01T00:00:00Z\"},{\"type\":\"Gone\",\"status\":\"True\","
        "\"lastTransitionTime\":\"2020-01-01T00:00:00Z\"}]}");
    d = cJSON_Parse(desired_text);
    CHECK(apply_stamp_conditions(d, live, now) == 0, "stamp: with live");
    CHECK_STR_EQ(cond_time(d, "Ready"), "2026-01-01T00:00:00Z",
                 "same status: live time kept");
    CHECK_STR_EQ(cond_time(d, "Reconciled"), now, "flipped: now");
    CHECK_STR_EQ(cond_time(d, "New"), now, "new condition: now");
    CHECK(cond_time(d, "Gone") == NULL, "a live-only condition not added");
    CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(d, "conditions")), 3,
                 "three conditions");
    /* stamping again with a later time changes nothing: status equal */
    cJSON *again = cJSON_Duplicate(d, 1);
    CHECK(apply_stamp_conditions(again, d, "2030-01-01T00:00:00Z") == 0,
          "stamp again");
    CHECK(apply_status_equal(again, d) == 1, "restamped against itself: equal");
    cJSON_Delete(again);
    cJSON_Delete(d);

    /* a live condition without a time: now */
    cJSON *live2 = cJSON_Parse(
        "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}");
    d = cJSON_Parse(desired_text);
    apply_stamp_conditions(d, live2, now);
    CHECK_STR_EQ(cond_time(d, "Ready"), now, "live without a time: now");
    cJSON_Delete(d);
    cJSON_Delete(live2);

    d = cJSON_Parse("{\"phase\":\"Pending\"}");
    CHECK(apply_stamp_conditions(d, live, now) == 0, "no conditions: 0");
    CHECK(cJSON_GetArraySize(d) == 1, "no conditions: unchanged");
    cJSON_Delete(d);
    cJSON *arr = cJSON_CreateArray();
    CHECK(apply_stamp_conditions(arr, live, now) == -1, "not an object: -1");
    CHECK(apply_stamp_conditions(NULL, live, now) == -1, "NULL: -1");
    cJSON_Delete(arr);
    cJSON_Delete(live);
}

static void status_eq(const char *a, const char *b, int want, const char *what)
{
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
    CHECK(apply_status_equal(ja, jb) == want, "status %s: %d", what, want);
    CHECK(apply_status_equal(jb, ja) == want, "status %s (reversed)", what);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
}

static void test_status_equal(void)
{
    const char *s =
        "{\"phase\":\"Running\",\"observedGeneration\":3,\"conditions\":["
        "{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":"
        "\"2026-01-01T00:00:00Z\"}]}";
    status_eq(s, s, 1, "identical");
    status_eq(s,
              "{\"observedGeneration\":3.0,\"phase\":\"Running\",\"conditions\""
              ":[{\"lastTransitionTime\":\"2026-01-01T00:00:00Z\",\"status\":"
              "\"True\",\"type\":\"Ready\",\"message\":\"\"}]}",
              1, "key order, 3.0, an empty message");
    status_eq(s,
              "{\"phase\":\"Running\",\"observedGeneration\":4,\"conditions\":"
              "[{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":"
              "\"2026-01-01T00:00:00Z\"}]}",
              0, "observedGeneration differs");
    status_eq(s,
              "{\"phase\":\"Running\",\"observedGeneration\":3,\"extra\":1,"
              "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\","
              "\"lastTransitionTime\":\"2026-01-01T00:00:00Z\"}]}",
              0, "an extra field");
    status_eq(
        s,
        "{\"phase\":\"Running\",\"observedGeneration\":3,\"conditions\":"
        "[{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":"
        "\"2026-01-01T00:00:00Z\"},{\"type\":\"X\",\"status\":\"True\"}]}",
        0, "an extra condition");
    status_eq(s,
              "{\"phase\":\"Running\",\"observedGeneration\":3,\"conditions\":"
              "[{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":"
              "\"2026-01-01T00:00:01Z\"}]}",
              0, "another transition time");
    CHECK(apply_status_equal(NULL, NULL) == 1, "status NULL == NULL");
    cJSON *o = cJSON_CreateObject();
    CHECK(apply_status_equal(o, NULL) == 0, "status {} != NULL");
    cJSON_Delete(o);
}

static void test_rfc3339(void)
{
    char t[32];
    apply_rfc3339(0, t);
    CHECK_STR_EQ(t, "1970-01-01T00:00:00Z", "rfc3339 epoch");
    apply_rfc3339(1795784400LL, t);
    CHECK_STR_EQ(t, "2026-11-27T13:00:00Z", "rfc3339 2026");
    apply_rfc3339(951868799LL, t);
    CHECK_STR_EQ(t, "2000-02-29T23:59:59Z", "rfc3339 leap day");
    /* The one implementation (text.c), with Kubernetes' MicroTime too. */
    text_rfc3339(1795784400LL, 123, t);
    CHECK_STR_EQ(t, "2026-11-27T13:00:00.000123Z", "rfc3339 microseconds");
    text_rfc3339(0, 0, t);
    CHECK_STR_EQ(t, "1970-01-01T00:00:00.000000Z", "rfc3339 zero microseconds");
    text_rfc3339(951868799LL, -1, t);
    CHECK_STR_EQ(t, "2000-02-29T23:59:59Z", "rfc3339 without microseconds");
}

/* --- paths ---------------------------------------------------------------- */

static void path_is(const char *av, const char *kind, const char *ns,
                    const char *name, const char *want)
{
    struct dbuf b;
    dbuf_init(&b, 1024);
    int rc = apply_path(av, kind, ns, name, &b);
    CHECK(rc == 0, "path %s %s: 0", av, kind);
    CHECK_STR_EQ(dbuf_ptr(&b), want, "path text");
    dbuf_free(&b);
}

static void path_fails(const char *av, const char *kind, const char *ns,
                       const char *name, const char *in_msg)
{
    struct dbuf b;
    dbuf_init(&b, 1024);
    int rc = apply_path(av, kind, ns, name, &b);
    CHECK(rc == -1, "path %s %s %s/%s: -1", av ? av : "NULL",
          kind ? kind : "NULL", ns ? ns : "NULL", name ? name : "NULL");
    if (!CHECK(strstr(dbuf_ptr(&b), in_msg) != NULL, "message has \"%s\"",
               in_msg))
        TEST_NOTE("message: %s", dbuf_ptr(&b));
    dbuf_free(&b);
}

static void test_paths(void)
{
    path_is("v1", "ConfigMap", "ns", "c", "/api/v1/namespaces/ns/configmaps/c");
    path_is("v1", "Secret", "ns", "s", "/api/v1/namespaces/ns/secrets/s");
    path_is("v1", "Service", "ns", "svc", "/api/v1/namespaces/ns/services/svc");
    path_is("apps/v1", "StatefulSet", "ns", "x",
            "/apis/apps/v1/namespaces/ns/statefulsets/x");
    path_is("dittofs.dittofs.com/v1alpha1", "DittoServer", "ns", "d",
            "/apis/dittofs.dittofs.com/v1alpha1/namespaces/ns/dittoservers/d");
    path_is("apps/v1", "StatefulSet", "ns", NULL,
            "/apis/apps/v1/namespaces/ns/statefulsets");
    path_is("v1", "Service", NULL, NULL, "/api/v1/services");
    path_is("v1", "Service", "", NULL, "/api/v1/services");
    path_fails("apps/v1", "Deployment", "ns", "x", "supported: v1 ConfigMap");
    path_fails("v1", "StatefulSet", "ns", "x",
               "unsupported kind v1 "
               "StatefulSet");
    path_fails("apps/v1beta1", "StatefulSet", "ns", "x", "unsupported");
    path_fails(NULL, NULL, "ns", "x", "unsupported");
    path_fails("v1", "ConfigMap", NULL, "x", "needs a namespace");
    path_fails("v1", "ConfigMap", "ns", "a/b", "invalid");
    path_fails("v1", "ConfigMap", "ns", "a?b", "invalid");
    path_fails("v1", "ConfigMap", "n s", "a", "invalid");
    path_fails("v1", "ConfigMap", "ns", "", "needs a namespace");
    /* appends */
    struct dbuf b;
    dbuf_init(&b, 1024);
    dbuf_adds(&b, "https://h");
    apply_path("v1", "ConfigMap", "ns", "c", &b);
    CHECK_STR_EQ(dbuf_ptr(&b), "https://h/api/v1/namespaces/ns/configmaps/c",
                 "path appends");
    dbuf_free(&b);
}

/* --- the Reconciled condition under allocation failures ------------------ */

/* cJSON's allocator for the fault tests: fails the fail_at-th call. */
static int alloc_n, alloc_fail_at;

static void *failing_malloc(size_t n)
{
    return ++alloc_n == alloc_fail_at ? NULL : malloc(n);
}

/* The shaping helpers the controller uses (moved from controller.c). */
static void test_shaping(void)
{
    cJSON *o = cJSON_Parse(
        "{\"metadata\":{\"name\":\"x\",\"annotations\":7,"
        "\"ownerReferences\":[{\"uid\":\"u1\",\"controller\":false},"
        "{\"uid\":\"u2\",\"controller\":true}]},\"spec\":{}}");
    CHECK(apply_owned_by(o, "u2") == 1 && apply_owned_by(o, "u1") == 0 &&
              apply_owned_by(NULL, "u2") == 0,
          "owned_by: a controller reference with that uid only");
    CHECK(apply_set_annotation(o, "a/b", "1") == 0 &&
              apply_set_annotation(o, "a/b", "2") == 0,
          "set_annotation: set, then replaced");
    char *t = cJSON_PrintUnformatted(
        cJSON_GetObjectItem(cJSON_GetObjectItem(o, "metadata"), "annotations"));
    CHECK_STR_EQ(t, "{\"a/b\":\"2\"}", "  a non-object annotations replaced");
    free(t);
    cJSON *live = cJSON_Parse(
        "{\"spec\":{\"volumeClaimTemplates\":[{\"metadata\":{\"name\":"
        "\"data\",\"creationTimestamp\":null},\"spec\":{},\"status\":"
        "{\"phase\":\"Pending\"}}]}}");
    CHECK(apply_keep_live_claims(o, live) == 0, "keep_live_claims");
    t = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "spec"));
    CHECK_STR_EQ(t,
                 "{\"volumeClaimTemplates\":[{\"metadata\":{\"name\":"
                 "\"data\"},\"spec\":{}}]}",
                 "  the live templates without status and timestamp");
    free(t);
    CHECK(apply_keep_live_claims(o, o) == 0 &&
              apply_keep_live_claims(live, cJSON_GetObjectItem(o, "x")) == -1,
          "  replaced again; -1 without live templates");
    cJSON_Delete(live);
    cJSON_Delete(o);
    cJSON *st = cJSON_Parse("{\"conditions\":[{\"type\":\"Ready\","
                            "\"status\":\"True\"},{\"type\":\"Reconciled\","
                            "\"status\":\"False\"}]}");
    CHECK(apply_condition_is(st, "Reconciled", "False") == 1 &&
              apply_condition_is(st, "Reconciled", "True") == 0 &&
              apply_condition_is(st, "Other", "False") == 0 &&
              apply_condition_is(NULL, "Ready", "True") == 0,
          "condition_is");
    cJSON_Delete(st);

    /* The applied-hash: FNV-1a 64 of the object's compact JSON as the
     * policy rendered it (computed independently: 7468d10a8b6aefc3). */
    o = cJSON_Parse("{\"metadata\":{\"name\":\"x\"}}");
    uint64_t h = 0;
    CHECK(apply_annotate_hash(o, &h) == 0 && h == 0x7468d10a8b6aefc3ULL,
          "annotate_hash: FNV-1a 64 of the rendered JSON (%016llx)",
          (unsigned long long)h);
    t = cJSON_PrintUnformatted(o);
    CHECK_STR_EQ(t,
                 "{\"metadata\":{\"name\":\"x\",\"annotations\":{\""
                 "dittofs.dittofs.com/applied-hash\":\"7468d10a8b6aefc3\"}}}",
                 "  stamped as the annotation");
    free(t);
    CHECK(apply_annotate_hash(o, NULL) == 0,
          "  a NULL hash pointer is allowed (the stamp is hashed too)");
    cJSON_Delete(o);

    /* The fence of an update: the live object's uid and resourceVersion,
     * replacing what the body held. */
    o = cJSON_Parse("{\"metadata\":{\"name\":\"x\",\"resourceVersion\":"
                    "\"1\"},\"data\":{}}");
    CHECK(apply_set_precondition(o, "u-1", "42") == 0, "set_precondition: set");
    t = cJSON_PrintUnformatted(o);
    CHECK_STR_EQ(t,
                 "{\"metadata\":{\"name\":\"x\",\"resourceVersion\":\"42\","
                 "\"uid\":\"u-1\"},\"data\":{}}",
                 "  uid added, resourceVersion replaced");
    free(t);
    CHECK(apply_set_precondition(o, "u-2", "") == 0 &&
              apply_set_precondition(o, NULL, "43") == 0,
          "  an empty or NULL one is left out");
    t = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "metadata"));
    CHECK_STR_EQ(t,
                 "{\"name\":\"x\",\"resourceVersion\":\"43\",\"uid\":\"u-2\"}",
                 "  (each set alone)");
    free(t);
    CHECK(apply_set_precondition(cJSON_GetObjectItem(o, "data"), "u", "1") ==
                  -1 &&
              apply_set_precondition(NULL, "u", "1") == -1,
          "  -1 without metadata");
    cJSON_Delete(o);
}

/* The policy's `observed` argument and the identity of a rendered object
 * (moved from controller.c). */
static void test_observed(void)
{
    struct dbuf b;
    dbuf_init(&b, 4096);
    CHECK(apply_observed_json(NULL, 0, &b) == DBUF_OK, "observed: none");
    CHECK_STR_EQ(dbuf_ptr(&b),
                 "{\"ConfigMap\":{},\"Service\":{},\"StatefulSet\":{},"
                 "\"Pod\":{}}",
                 "  every child kind present, empty");
    const char *cm = "{\"kind\":\"ConfigMap\"}xx"; /* len stops at } */
    struct apply_child v[] = {
        {KINDS_POD, "p-0", "{\"a\":1}", 7},
        {KINDS_CONFIGMAP, "c", cm, 20},
        {KINDS_POD, "we\"ird", "{}", 2},
        {KINDS_SECRET, "s", "{}", 2},
    };
    dbuf_reset(&b);
    CHECK(apply_observed_json(v, 4, &b) == DBUF_OK, "observed: four");
    CHECK_STR_EQ(dbuf_ptr(&b),
                 "{\"ConfigMap\":{\"c\":{\"kind\":\"ConfigMap\"}},"
                 "\"Service\":{},\"StatefulSet\":{},\"Pod\":{\"p-0\":"
                 "{\"a\":1},\"we\\\"ird\":{}}}",
                 "  by kind in table order, names quoted, texts as they are, "
                 "a Secret left out");
    dbuf_free(&b);
    dbuf_init(&b, 40);
    int rc = apply_observed_json(v, 4, &b);
    CHECK(rc == DBUF_TOOBIG && dbuf_len(&b) == 0,
          "observed: too big for the buffer: the dbuf error, nothing left");
    CHECK_STR_EQ(dbuf_strerror(rc), "too large", "  dbuf_strerror names it");
    CHECK_STR_EQ(dbuf_strerror(DBUF_NOMEM), "out of memory",
                 "  and out of memory");
    dbuf_free(&b);

    cJSON *o = cJSON_Parse("[{\"apiVersion\":\"apps/v1\",\"kind\":"
                           "\"StatefulSet\",\"metadata\":{\"name\":\"s\"}},"
                           "{\"apiVersion\":\"v1\",\"kind\":\"Pod\","
                           "\"metadata\":{\"name\":\"p\"}},"
                           "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
                           "\"metadata\":{}}]");
    const char *nm = "x";
    CHECK(apply_rendered_kind(cJSON_GetArrayItem(o, 0), &nm) ==
                  KINDS_STATEFULSET &&
              nm != NULL && strcmp(nm, "s") == 0,
          "rendered_kind: a StatefulSet and its name");
    CHECK(apply_rendered_kind(cJSON_GetArrayItem(o, 1), &nm) == -1 &&
              nm == NULL,
          "rendered_kind: a Pod is observed, never rendered");
    CHECK(apply_rendered_kind(cJSON_GetArrayItem(o, 2), &nm) == -1 &&
              apply_rendered_kind(NULL, &nm) == -1,
          "rendered_kind: no name, or no object: -1");
    cJSON_Delete(o);
}

/* Issue 11: integers beyond 2^53 compare by their digits. */
static void test_subset_exact(void)
{
    const char *a = "{\"x\":9007199254740993}";
    const char *b = "{\"x\":9007199254740992}";
    cJSON *ja = jscan_cjson_parse(a, strlen(a));
    cJSON *ja2 = jscan_cjson_parse(a, strlen(a));
    cJSON *jb = jscan_cjson_parse(b, strlen(b));
    CHECK(apply_is_subset(ja, ja2, NULL) == 1, "subset: the same 2^53+1");
    CHECK(apply_is_subset(ja, jb, NULL) == 0 &&
              apply_is_subset(jb, ja, NULL) == 0,
          "subset: 2^53+1 differs from 2^53");
    cJSON_Delete(ja);
    cJSON_Delete(ja2);
    cJSON_Delete(jb);
}

static void test_set_reconciled(void)
{
    cJSON *st = cJSON_Parse("{\"phase\":\"Running\",\"conditions\":["
                            "{\"type\":\"Ready\",\"status\":\"True\"}]}");
    CHECK(apply_set_reconciled(st, "PolicyError", "boom", 3) == 0,
          "set_reconciled: added");
    char *t = cJSON_PrintUnformatted(st);
    CHECK_STR_EQ(t,
                 "{\"phase\":\"Running\",\"conditions\":[{\"type\":"
                 "\"Ready\",\"status\":\"True\"},{\"type\":\"Reconciled\","
                 "\"status\":\"False\",\"reason\":\"PolicyError\","
                 "\"message\":\"boom\",\"observedGeneration\":3}]}",
                 "  after the others, every field set");
    free(t);
    CHECK(apply_set_reconciled(st, "ApplyFailed", "no", 0) == 0 &&
              cJSON_GetArraySize(cJSON_GetObjectItem(st, "conditions")) == 2,
          "set_reconciled: replaces the one of that type");
    cJSON_Delete(st);

    /* A message cut on a UTF-8 boundary (a 3-byte character across the
     * limit), "..." appended. */
    char long_msg[APPLY_MAX_MESSAGE + 8];
    memset(long_msg, 'x', sizeof(long_msg));
    memcpy(long_msg + APPLY_MAX_MESSAGE - 1, "\xe2\x82\xac", 3);
    long_msg[sizeof(long_msg) - 1] = '\0';
    st = cJSON_CreateObject();
    apply_set_reconciled(st, "R", long_msg, 0);
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(
        cJSON_GetArrayItem(cJSON_GetObjectItem(st, "conditions"), 0),
        "message"));
    CHECK(m && strlen(m) == APPLY_MAX_MESSAGE - 1 + 3 &&
              strcmp(m + APPLY_MAX_MESSAGE - 1, "...") == 0,
          "set_reconciled: cut before a character across the limit");
    cJSON_Delete(st);

    /* Issue 11: every allocation failure leaves the status as it was. */
    static const char *const before[] = {
        "{\"phase\":\"Running\"}",
        "{\"conditions\":[{\"type\":\"Reconciled\",\"status\":\"True\"}]}",
        "{\"conditions\":7}",
    };
    for (size_t b = 0; b < sizeof(before) / sizeof(before[0]); b++) {
        int failures = 0, intact = 1, done = 0;
        for (int n = 1; n < 64 && !done; n++) {
            cJSON *v = cJSON_Parse(before[b]);
            alloc_n = 0;
            alloc_fail_at = n;
            cJSON_Hooks h = {failing_malloc, free};
            cJSON_InitHooks(&h);
            int rc = apply_set_reconciled(v, "PolicyError", "boom", 2);
            cJSON_InitHooks(NULL);
            char *after = cJSON_PrintUnformatted(v);
            if (rc != 0) {
                failures++;
                if (strcmp(after, before[b]) != 0) {
                    intact = 0;
                    TEST_NOTE("failing allocation %d: %s", n, after);
                }
            } else {
                done = strstr(after, "\"reason\":\"PolicyError\","
                                     "\"message\":\"boom\","
                                     "\"observedGeneration\":2") != NULL;
            }
            free(after);
            cJSON_Delete(v);
        }
        CHECK(failures > 0 && intact && done,
              "set_reconciled %s: %d allocation failures return -1 and "
              "leave it as it was, then it succeeds whole",
              before[b], failures);
    }
}

int main(void)
{
    test_quantities();
    test_subset_objects();
    test_subset_quantities();
    test_subset_arrays();
    test_subset_k8s();
    test_stamp();
    test_status_equal();
    test_rfc3339();
    test_paths();
    test_set_reconciled();
    test_subset_exact();
    test_shaping();
    test_observed();
    return TEST_SUMMARY();
}
