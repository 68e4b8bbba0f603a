/*
 * test_tracking: the controller's per-key state (core/tracking.c) without
 * a cluster or a loop, on a test clock: an overlay stands in for the cache
 * until the cache holds its version or a newer one, or until it is too
 * old; the echo of our own write is recognised; rejects are found by kind
 * and name, kept once, forgotten; the owner index holds each child once;
 * releasing a DittoServer keeps the entry while children point at it; a
 * full reconcile owed clears `clean`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kinds.h"
#include "testlib.h"
#include "tracking.h"

static struct cache_obj *obj(const char *name, const char *rv)
{
    char text[256], err[128];
    snprintf(text, sizeof(text),
             "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
             "{\"name\":\"%s\",\"namespace\":\"ns\",\"resourceVersion\":"
             "\"%s\"}}",
             name, rv);
    struct cache_obj *o = NULL;
    if (cache_obj_from_text(text, strlen(text), NULL, NULL, &o, err,
                            sizeof(err)) != CACHE_OK) {
        printf("Bail out! %s\n", err);
        exit(1);
    }
    return o;
}

static void test_overlays(void)
{
    static struct tracking t; /* zero: empty */
    struct cache_obj *v5 = obj("c", "5"), *v7 = obj("c", "7");
    struct cache_obj *v9 = obj("c", "9");
    CHECK(tracking_get(&t, "ns/d", 0) == NULL, "no entry before a write");
    tracking_overlay_put(&t, "ns/d", KINDS_CONFIGMAP, "c", v7, 1000);
    struct kstate *k = tracking_get(&t, "ns/d", 0);
    CHECK(k != NULL && k->n_ov == 1, "a write's response is kept");
    CHECK(tracking_newest(k, KINDS_CONFIGMAP, "c", v5, 2000) == v7,
          "newest: the overlay while the cache is behind (5 < 7)");
    CHECK(tracking_newest(k, KINDS_SERVICE, "c", v5, 2000) == v5,
          "newest: another kind is not overlaid");
    CHECK(tracking_overlay_settle(&t, "ns/d", KINDS_CONFIGMAP, "c", v5) == 0 &&
              k->n_ov == 1,
          "settle: an older event neither echoes nor drops it");
    CHECK(tracking_overlay_settle(&t, "ns/d", KINDS_CONFIGMAP, "c", v7) == 1 &&
              k->n_ov == 0,
          "settle: our own version is an echo, and the overlay goes");

    tracking_overlay_put(&t, "ns/d", KINDS_CONFIGMAP, "c", v7, 1000);
    CHECK(tracking_newest(k, KINDS_CONFIGMAP, "c", v9, 2000) == v9 &&
              k->n_ov == 0,
          "newest: a newer cached version wins and drops the overlay");
    tracking_overlay_put(&t, "ns/d", KINDS_CONFIGMAP, "c", v7, 1000);
    CHECK(tracking_newest(k, KINDS_CONFIGMAP, "c", v5,
                          1000 + TRACKING_OVERLAY_TTL_MS + 1) == v5 &&
              k->n_ov == 0,
          "newest: an overlay older than the TTL is not trusted");
    tracking_overlay_put(&t, "ns/d", KINDS_CONFIGMAP, "c", v7, 1000);
    CHECK(tracking_overlay_settle(&t, "ns/d", KINDS_CONFIGMAP, "c", NULL) ==
                  0 &&
              k->n_ov == 0,
          "settle: a deletion drops it");
    tracking_overlay_put(&t, "ns/d", KINDS_CONFIGMAP, "c", v7, 1000);
    tracking_overlay_forget(&t, "ns/d", KINDS_CONFIGMAP, "c");
    CHECK(k->n_ov == 0, "forget drops it");
    cache_obj_unref(v5);
    cache_obj_unref(v7);
    tracking_overlay_put(&t, "ns/d", KINDS_CONFIGMAP, "c", v9, 1000);
    cache_obj_unref(v9); /* the table holds its own reference */
    tracking_clear(&t);
    CHECK(tracking_get(&t, "ns/d", 0) == NULL, "clear empties the table");
}

static void test_rejects_kids(void)
{
    static struct tracking t;
    struct reject *r = tracking_reject_get(&t, "ns/d", KINDS_STATEFULSET, "s");
    CHECK(r != NULL && r->attempts == 0 && r->message == NULL,
          "reject_get creates an empty reject");
    r->hash = 42;
    r->attempts = 2;
    CHECK(tracking_reject_get(&t, "ns/d", KINDS_STATEFULSET, "s") == r,
          "... and finds it again, not a second one");
    struct kstate *k = tracking_get(&t, "ns/d", 0);
    CHECK(tracking_reject_find(k, KINDS_STATEFULSET, "s") == r &&
              tracking_reject_find(k, KINDS_CONFIGMAP, "s") == NULL,
          "reject_find by kind and name");
    tracking_reject_forget(k, KINDS_STATEFULSET, "s");
    CHECK(k->n_rej == 0 &&
              tracking_reject_find(k, KINDS_STATEFULSET, "s") == NULL,
          "reject_forget");

    tracking_kids_add(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_kids_add(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_kids_add(&t, "ns/d", KINDS_POD, "d-0");
    CHECK(k->n_kids == 2, "the owner index holds each child once");
    k->clean = 1;
    tracking_owe_full(&t, "ns/d");
    CHECK(k->clean == 0 && k->full_seq == 1, "owe_full: not clean, seq++");
    tracking_release(&t, "ns/d");
    CHECK(tracking_get(&t, "ns/d", 0) == k,
          "release keeps the entry while children point at it");
    tracking_kids_remove(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_kids_remove(&t, "ns/d", KINDS_POD, "d-0");
    tracking_release(&t, "ns/d");
    CHECK(tracking_get(&t, "ns/d", 0) == NULL,
          "... and frees it when none does");
    tracking_clear(&t);
}

int main(void)
{
    test_overlays();
    test_rejects_kids();
    return TEST_SUMMARY();
}
