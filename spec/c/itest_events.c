/*
 * itest_events: the event recorder against the real local control plane,
 * in a namespace of its own:
 *  - an emit creates one Event with every field set (involvedObject,
 *    source, reporting*, timestamps, count 1, name "<object>.<16 hex>");
 *  - repeats PATCH the same Event's count (also repeats sent while the
 *    previous request is in flight), a different message creates another;
 *  - the per-object rate limit drops after a burst of 25;
 *  - a message over 1024 bytes is cut on a UTF-8 boundary;
 *  - disabled: nothing written; forget: the next repeat is a new Event;
 *  - a POST that fails (no such namespace) is counted and not retried;
 *  - a cluster-scoped object gets its Events in "default".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "events.h"
#include "nettest.h"
#include "testlib.h"

static struct nt D;
static char NS[64];
static struct events *E;

static int idle_cond(void *arg)
{
    (void)arg;
    return events_pending(E) == 0;
}

static void settle(void)
{
    nt_wait(&D, idle_cond, NULL, 10000);
}

/* Events about `name` in `ns` (cJSON_Delete the result; an array). */
static cJSON *list_events(const char *ns, const char *name)
{
    struct http_response *r = NULL;
    cJSON *items = NULL;
    int rc = nt_req(&D, HTTP_GET, NULL, NULL, &r,
                    "/api/v1/namespaces/%s/events?fieldSelector="
                    "involvedObject.name%%3D%s",
                    ns, name);
    if (rc == 0) {
        cJSON *list = cJSON_Parse(r->body);
        items = cJSON_DetachItemFromObjectCaseSensitive(list, "items");
        cJSON_Delete(list);
    }
    http_response_free(r);
    return items ? items : cJSON_CreateArray();
}

static const char *str_at(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b != NULL)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    return cJSON_IsString(v) ? v->valuestring : "(none)";
}

static long count_of(const cJSON *ev)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, "count");
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

static const cJSON *find_msg(const cJSON *items, const char *msg)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        if (strcmp(str_at(it, "message", NULL), msg) == 0)
            return it;
    }
    return NULL;
}

static int is_event_name(const char *s, const char *obj)
{
    size_t n = strlen(obj);
    if (strncmp(s, obj, n) != 0 || s[n] != '.' || strlen(s + n + 1) != 16)
        return 0;
    for (const char *p = s + n + 1; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static void test_emit_and_repeat(const char *uid)
{
    struct events_ref ref = {"v1", "ConfigMap", NS, "cm1", uid, "12"};
    CHECK(events_emit(E, &ref, "Normal", "Created", "created children") == 0,
          "emit returns 0");
    settle();
    cJSON *items = list_events(NS, "cm1");
    CHECK_INT_EQ(cJSON_GetArraySize(items), 1, "one Event");
    const cJSON *ev = cJSON_GetArrayItem(items, 0);
    CHECK(is_event_name(str_at(ev, "metadata", "name"), "cm1"),
          "name %s is <object>.<16 hex>", str_at(ev, "metadata", "name"));
    CHECK_STR_EQ(str_at(ev, "reason", NULL), "Created", "reason");
    CHECK_STR_EQ(str_at(ev, "type", NULL), "Normal", "type");
    CHECK_STR_EQ(str_at(ev, "message", NULL), "created children", "message");
    CHECK_STR_EQ(str_at(ev, "involvedObject", "kind"), "ConfigMap",
                 "involvedObject.kind");
    CHECK_STR_EQ(str_at(ev, "involvedObject", "apiVersion"), "v1",
                 "involvedObject.apiVersion");
    CHECK_STR_EQ(str_at(ev, "involvedObject", "namespace"), NS,
                 "involvedObject.namespace");
    CHECK_STR_EQ(str_at(ev, "involvedObject", "uid"), uid,
                 "involvedObject.uid");
    CHECK_STR_EQ(str_at(ev, "involvedObject", "resourceVersion"), "12",
                 "involvedObject.resourceVersion");
    CHECK_STR_EQ(str_at(ev, "source", "component"), "dittofs-operator",
                 "source.component");
    CHECK_STR_EQ(str_at(ev, "source", "host"), "itest-host", "source.host");
    CHECK_STR_EQ(str_at(ev, "reportingComponent", NULL), "dittofs-operator",
                 "reportingComponent");
    CHECK_STR_EQ(str_at(ev, "reportingInstance", NULL), "itest-host",
                 "reportingInstance");
    CHECK(strcmp(str_at(ev, "firstTimestamp", NULL), "(none)") != 0 &&
              strcmp(str_at(ev, "firstTimestamp", NULL),
                     str_at(ev, "lastTimestamp", NULL)) == 0,
          "firstTimestamp == lastTimestamp (%s)",
          str_at(ev, "firstTimestamp", NULL));
    CHECK_INT_EQ(count_of(ev), 1, "count 1");
    char name[300];
    snprintf(name, sizeof(name), "%s", str_at(ev, "metadata", "name"));
    cJSON_Delete(items);

    sleep(1); /* lastTimestamp has second precision */
    events_emit(E, &ref, "Normal", "Created", "created children");
    settle();
    items = list_events(NS, "cm1");
    ev = cJSON_GetArrayItem(items, 0);
    CHECK(cJSON_GetArraySize(items) == 1 &&
              strcmp(str_at(ev, "metadata", "name"), name) == 0 &&
              count_of(ev) == 2,
          "a repeat: the same Event, count %ld", count_of(ev));
    CHECK(strcmp(str_at(ev, "lastTimestamp", NULL),
                 str_at(ev, "firstTimestamp", NULL)) > 0,
          "lastTimestamp moved (%s)", str_at(ev, "lastTimestamp", NULL));
    cJSON_Delete(items);

    /* Three repeats back to back: folded while in flight, count exact. */
    for (int i = 0; i < 3; i++)
        events_emit(E, &ref, "Normal", "Created", "created children");
    settle();
    items = list_events(NS, "cm1");
    ev = cJSON_GetArrayItem(items, 0);
    CHECK(cJSON_GetArraySize(items) == 1 && count_of(ev) == 5,
          "three quick repeats: count %ld", count_of(ev));
    cJSON_Delete(items);

    /* Another message, another type: a second Event. */
    events_emit(E, &ref, "Warning", "InvalidSpec", "spec.replicas: too big");
    settle();
    items = list_events(NS, "cm1");
    ev = find_msg(items, "spec.replicas: too big");
    CHECK(cJSON_GetArraySize(items) == 2 && ev != NULL &&
              strcmp(str_at(ev, "type", NULL), "Warning") == 0,
          "a different message: a second Event (Warning)");
    cJSON_Delete(items);

    /* Forget: the same message starts a new Event. */
    events_forget(E, NS, "cm1");
    events_emit(E, &ref, "Normal", "Created", "created children");
    settle();
    items = list_events(NS, "cm1");
    CHECK_INT_EQ(cJSON_GetArraySize(items), 3,
                 "after forget a repeat creates a new Event");
    cJSON_Delete(items);
}

static void test_rate_limit(void)
{
    struct events_ref ref = {"v1", "ConfigMap", NS, "cm2", NULL, NULL};
    int sent = 0, dropped = 0;
    for (int i = 0; i < 30; i++) {
        char msg[64];
        snprintf(msg, sizeof(msg), "message %d", i);
        int rc = events_emit(E, &ref, "Normal", "Test", msg);
        sent += rc == 0;
        dropped += rc == 1;
    }
    CHECK(sent == 25 && dropped == 5, "burst 25: %d sent, %d dropped", sent,
          dropped);
    settle();
    cJSON *items = list_events(NS, "cm2");
    CHECK_INT_EQ(cJSON_GetArraySize(items), 25, "25 Events on the server");
    cJSON_Delete(items);
    struct events_ref other = {"v1", "ConfigMap", NS, "cm2b", NULL, NULL};
    CHECK(events_emit(E, &other, "Normal", "Test", "x") == 0,
          "another object has its own bucket");
    settle();
}

static void test_long_message(void)
{
    struct events_ref ref = {"v1", "ConfigMap", NS, "cm3", NULL, NULL};
    char msg[3001];
    /* "é" is two bytes: 1023 ASCII bytes, then é straddles byte 1024. */
    memset(msg, 'a', 1023);
    for (int i = 1023; i + 1 < 3000; i += 2) {
        msg[i] = (char)0xc3;
        msg[i + 1] = (char)0xa9;
    }
    msg[2999] = 'z';
    msg[3000] = '\0';
    events_emit(E, &ref, "Warning", "Long", msg);
    settle();
    cJSON *items = list_events(NS, "cm3");
    const char *m = str_at(cJSON_GetArrayItem(items, 0), "message", NULL);
    CHECK(strlen(m) == 1023 && m[1022] == 'a',
          "message cut to 1023 bytes on the UTF-8 boundary (%zu)", strlen(m));
    cJSON_Delete(items);
}

static void test_disabled(void)
{
    struct events_ref ref = {"v1", "ConfigMap", NS, "cm4", NULL, NULL};
    events_set_enabled(E, 0);
    int rc = 0;
    for (int i = 0; i < 30; i++)
        rc |= events_emit(E, &ref, "Normal", "Test", "standby");
    CHECK(rc == 0 && events_pending(E) == 0,
          "disabled: emits return 0, nothing sent");
    nt_run_for(&D, 300);
    cJSON *items = list_events(NS, "cm4");
    CHECK_INT_EQ(cJSON_GetArraySize(items), 0, "disabled: no Event written");
    cJSON_Delete(items);
    events_set_enabled(E, 1);
    CHECK(events_emit(E, &ref, "Normal", "Test", "leader now") == 0,
          "enabled again: not rate limited by the dropped ones");
    settle();
    items = list_events(NS, "cm4");
    CHECK_INT_EQ(cJSON_GetArraySize(items), 1, "enabled again: one Event");
    cJSON_Delete(items);
}

static void test_failure_and_cluster_scope(void)
{
    struct events_stats before, after;
    events_get_stats(E, &before);
    struct events_ref ref = {"v1",   "ConfigMap", "no-such-ns-leader-itest",
                             "gone", NULL,        NULL};
    CHECK(events_emit(E, &ref, "Normal", "Test", "lost") == 0,
          "emit into a missing namespace returns 0 (fire and forget)");
    settle();
    events_get_stats(E, &after);
    CHECK(after.failed == before.failed + 1 &&
              after.posted == before.posted + 1,
          "one POST, one failure, no retry");
    events_emit(E, &ref, "Normal", "Test", "lost");
    settle();
    events_get_stats(E, &after);
    CHECK(after.posted == before.posted + 2 && after.patched == before.patched,
          "the repeat of a failed Event is a new POST, not a PATCH");

    struct events_ref ns = {"v1", "Namespace", NULL, NS, NULL, NULL};
    events_emit(E, &ns, "Normal", "Test", "cluster scoped");
    settle();
    cJSON *items = list_events("default", NS);
    CHECK(cJSON_GetArraySize(items) == 1 &&
              strcmp(str_at(cJSON_GetArrayItem(items, 0), "involvedObject",
                            "kind"),
                     "Namespace") == 0,
          "a cluster-scoped object's Event is in \"default\"");
    cJSON_Delete(items);
    struct http_response *r = NULL;
    nt_req(&D, HTTP_DELETE, NULL, NULL, &r,
           "/api/v1/namespaces/default/events?fieldSelector="
           "involvedObject.name%%3D%s",
           NS);
    http_response_free(r);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct http_opts o = {.qps = -1};
    nt_open(&D, NULL, &o);
    snprintf(NS, sizeof(NS), "events-test-%d", (int)getpid());
    if (nt_create_ns(&D, NS) != 0) {
        printf("Bail out! cannot create namespace %s\n", NS);
        return 1;
    }
    char rv[64];
    nt_put_cm(&D, NS, "cm1", "", "1", rv, sizeof(rv));
    struct http_response *r = NULL;
    nt_req(&D, HTTP_GET, NULL, NULL, &r, "/api/v1/namespaces/%s/configmaps/cm1",
           NS);
    cJSON *cm = cJSON_Parse(r ? r->body : "{}");
    char uid[64];
    snprintf(uid, sizeof(uid), "%s", str_at(cm, "metadata", "uid"));
    cJSON_Delete(cm);
    http_response_free(r);

    E = events_new(D.http, "dittofs-operator", "itest-host");
    test_emit_and_repeat(uid);
    test_rate_limit();
    test_long_message();
    test_disabled();
    test_failure_and_cluster_scope();
    events_free(E);

    r = NULL;
    nt_req(&D, HTTP_DELETE, NULL, NULL, &r, "/api/v1/namespaces/%s", NS);
    http_response_free(r);
    nt_close(&D);
    return TEST_SUMMARY();
}
