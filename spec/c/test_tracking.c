/*
 * test_tracking: the controller's per-key state (core/tracking.c) without
 * a cluster or a loop, on a test clock: an overlay stands in for the cache
 * until the cache holds its version or a newer one, or until it is too
 * old; the echo of our own write is recognised; rejects are found by kind
 * and name, kept once, forgotten; the owner index holds each child once;
 * releasing a DittoServer keeps the entry while children point at it; a
 * full reconcile owed clears `clean`; a suspect keeps its gone uid until
 * it is cleared or released; a write in flight holds the events of its
 * object, and its end tells its echo from another version (and a failure
 * after an event from nothing seen), also across a release; the table grows to
 * 20,000 keys and shrinks back, every key found all along.
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

static void test_suspects(void)
{
    static struct tracking t;
    tracking_suspect(&t, "ns/d");
    struct kstate *k = tracking_get(&t, "ns/d", 0);
    CHECK(k != NULL && k->suspect && k->gone_uid == NULL,
          "suspect: marked, no uid confirmed gone");
    tracking_suspect_gone(k, "u1");
    tracking_suspect(&t, "ns/d");
    CHECK(k->suspect && k->gone_uid != NULL && strcmp(k->gone_uid, "u1") == 0,
          "marking again keeps the uid the apiserver said is gone");
    tracking_suspect_clear(k);
    CHECK(!k->suspect && k->gone_uid == NULL, "clear: no suspect any more");
    tracking_kids_add(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_suspect(&t, "ns/d");
    tracking_suspect_gone(k, "u1");
    tracking_release(&t, "ns/d");
    CHECK(tracking_get(&t, "ns/d", 0) == k && !k->suspect &&
              k->gone_uid == NULL,
          "release clears the suspicion of an entry children keep");
    tracking_clear(&t);
}

static void test_writes(void)
{
    static struct tracking t;
    struct cache_obj *v5 = obj("c", "5"), *v6 = obj("c", "6");
    CHECK(tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v5) == 0,
          "writes: an event with no write in flight is not held");
    CHECK(tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "c") == 0 &&
              tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "e") == 0,
          "two writes begin");
    CHECK(tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "e", "3") ==
              TRACKING_SEEN_NONE,
          "... one ends with no event seen");
    CHECK(tracking_write_event(&t, "ns/d", KINDS_SERVICE, "c", v5) == 0 &&
              tracking_write_event(&t, "ns/x", KINDS_CONFIGMAP, "c", v5) == 0,
          "... another kind's or key's event is not held");
    CHECK(tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v5) == 1,
          "... the written object's event is");
    CHECK(tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "c", "5") ==
              TRACKING_SEEN_ECHO,
          "... and is the echo when the write returned its version");
    CHECK(tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "c", "5") ==
              TRACKING_SEEN_NONE,
          "... ended once");

    tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v5);
    CHECK(tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "c", "6") ==
              TRACKING_SEEN_OTHER,
          "an event of another version than the write returned: other");
    tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v5);
    tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v6);
    CHECK(tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "c", "6") ==
              TRACKING_SEEN_OTHER,
          "two versions seen, one of them the write's: other");
    tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v5);
    CHECK(tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "c", NULL) ==
              TRACKING_SEEN_OTHER,
          "a failed (or cancelled) write after an event: other");
    tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "c");
    CHECK(tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "c", NULL) ==
              TRACKING_SEEN_NONE,
          "a failed write with no event: none");

    tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v6);
    tracking_release(&t, "ns/d");
    CHECK(tracking_get(&t, "ns/d", 0) != NULL &&
              tracking_write_end(&t, "ns/d", KINDS_CONFIGMAP, "c", NULL) ==
                  TRACKING_SEEN_OTHER,
          "release keeps the entry and the event of a write in flight");
    tracking_write_begin(&t, "ns/d", KINDS_CONFIGMAP, "c");
    tracking_write_event(&t, "ns/d", KINDS_CONFIGMAP, "c", v6);
    tracking_clear(&t); /* frees the write and its version */
    cache_obj_unref(v5);
    cache_obj_unref(v6);
}

/* Keys "ns/d-<i>" for i in [from, to). */
static void add_range(struct tracking *t, int from, int to)
{
    char key[32];
    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "ns/d-%d", i);
        tracking_kids_add(t, key, KINDS_CONFIGMAP, "c");
    }
}

/* How many of the keys "ns/d-<i>", i in [from, to), have an entry. */
static int found_range(struct tracking *t, int from, int to)
{
    char key[32];
    int n = 0;
    for (int i = from; i < to; i++) {
        snprintf(key, sizeof(key), "ns/d-%d", i);
        n += tracking_get(t, key, 0) != NULL;
    }
    return n;
}

static void test_growth(void)
{
    static struct tracking t;
    enum { N = 20000 };
    add_range(&t, 0, N);
    CHECK(t.n == N && t.nbuckets >= N && found_range(&t, 0, N) == N,
          "20,000 keys: the table grew to %zu buckets, every key found",
          t.nbuckets);
    char key[32];
    for (int i = 0; i < N - 100; i++) {
        snprintf(key, sizeof(key), "ns/d-%d", i);
        tracking_kids_remove(&t, key, KINDS_CONFIGMAP, "c");
        tracking_release(&t, key);
    }
    CHECK(t.n == 100 && t.nbuckets <= 1024 &&
              found_range(&t, N - 100, N) == 100 &&
              found_range(&t, 0, N - 100) == 0,
          "released down to 100: %zu buckets, the rest found, the released "
          "gone",
          t.nbuckets);
    tracking_clear(&t);
    CHECK(t.n == 0 && t.nbuckets == 0 && t.buckets == NULL,
          "clear frees the buckets too");
    add_range(&t, 0, 3);
    CHECK(found_range(&t, 0, 3) == 3, "... and the table is usable again");
    tracking_clear(&t);
}

int main(void)
{
    test_overlays();
    test_rejects_kids();
    test_suspects();
    test_writes();
    test_growth();
    return TEST_SUMMARY();
}
