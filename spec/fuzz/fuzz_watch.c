/*
 * fuzz_watch: the watch stream (core/watch.c's line splitter, then what the
 * informer does with each line: jscan over the event, cache_obj_from_text
 * cutting managedFields, the cache). Input: byte 0 seeds the chunking,
 * byte 1 picks the longest line allowed, the rest is the stream, fed in
 * chunks of pseudo-random sizes. The lines handed out must be exactly the
 * lines of the stream (CR stripped, empty ones skipped) whatever the
 * chunking, up to the first one longer than the maximum, which must fail
 * with WATCH_LINES_TOOBIG; a stored object's text is valid JSON without
 * metadata.managedFields and parses back when the event's object does.
 */
#include <cjson/cJSON.h>

#include "cache.h"
#include "fuzz.h"
#include "jscan.h"
#include "watch.h"

struct ref {
    const char *p, *end; /* the reference splitter's position */
    size_t max;
    size_t lines; /* lines handed out */
    struct cache *cache;
};

/* The next line the reference splitter expects, or NULL when the stream
 * has no more complete lines. */
static const char *ref_next(struct ref *r, size_t *len)
{
    while (r->p < r->end) {
        const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
        if (nl == NULL)
            return NULL;
        const char *line = r->p;
        size_t n = (size_t)(nl - line);
        r->p = nl + 1;
        FUZZ_CHECK(n <= r->max, "a line of %zu bytes passed max %zu", n,
                   r->max);
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (n > 0) {
            *len = n;
            return line;
        }
    }
    return NULL;
}

/* What handle_line does with an event, through the public functions. */
static void event(struct ref *r, const char *line, size_t len)
{
    struct jscan_iter it;
    struct jscan_member m;
    struct jscan_span type = {NULL, 0}, obj = {NULL, 0};
    char err[256];
    int rc;

    if (jscan_object(&it, line, len) != 0)
        return;
    while ((rc = jscan_next_member(&it, &m, err, sizeof(err))) == 1) {
        FUZZ_CHECK(jscan_is_string(m.key), "a member key is not a string");
        if (jscan_str_eq(m.key, "type"))
            type = m.value;
        else if (jscan_str_eq(m.key, "object"))
            obj = m.value;
    }
    if (rc < 0 || type.p == NULL || obj.p == NULL)
        return;
    if (jscan_str_eq(type, "ERROR")) {
        cJSON *st = cJSON_ParseWithLength(obj.p, obj.len);
        cJSON_Delete(st);
        return;
    }
    struct cache_obj *o;
    rc = cache_obj_from_text(obj.p, obj.len, NULL, NULL, &o, err, sizeof(err));
    if (rc != CACHE_OK)
        return;
    struct dbuf text;
    dbuf_init(&text, (size_t)1 << 26);
    cache_obj_json_append(o, &text);
    size_t jlen = dbuf_len(&text);
    const char *json = dbuf_ptr(&text);
    FUZZ_CHECK(jscan_whole(json, jlen, err, sizeof(err)) == 0,
               "stored text is not JSON (%s): %.*s", err, (int)jlen, json);
    struct jscan_span whole = {json, jlen}, mdv;
    struct jscan_member md, mf;
    FUZZ_CHECK(jscan_find(whole, "metadata", &md, err, sizeof(err)) == 1,
               "stored object without metadata");
    mdv = md.value;
    FUZZ_CHECK(jscan_find(mdv, "managedFields", &mf, err, sizeof(err)) == 0,
               "managedFields kept: %.*s", (int)jlen, json);
    /* cutting managedFields loses nothing cJSON needs: the stored text
     * parses whenever the event's object does (jscan, which accepted it,
     * does not check escapes such as a lone \ud800 that cJSON refuses) */
    cJSON *orig = jscan_cjson_parse(obj.p, obj.len);
    cJSON *tree = cache_obj_parse(o);
    FUZZ_CHECK(tree != NULL || orig == NULL, "stored text does not parse");
    cJSON_Delete(tree);
    cJSON_Delete(orig);
    FUZZ_CHECK(cache_obj_name(o)[0] != '\0', "stored object without name");
    if (jscan_str_eq(type, "DELETED")) {
        cache_delete(r->cache, cache_obj_namespace(o), cache_obj_name(o), o);
    } else {
        /* upsert takes over a reference: keep ours for the check; the
         * cached object with the same resourceVersion stays instead */
        const struct cache_obj *prev =
            cache_get(r->cache, cache_obj_namespace(o), cache_obj_name(o));
        int kept = prev != NULL && cache_obj_rv(o)[0] != '\0' &&
                   strcmp(cache_obj_rv(prev), cache_obj_rv(o)) == 0;
        FUZZ_CHECK(cache_upsert(r->cache, cache_obj_ref(o)) == CACHE_OK,
                   "upsert failed");
        const struct cache_obj *got =
            cache_get(r->cache, cache_obj_namespace(o), cache_obj_name(o));
        FUZZ_CHECK(got != NULL &&
                       strcmp(cache_obj_rv(got), cache_obj_rv(o)) == 0,
                   "upserted object not found");
        /* the cache may store it against its reference: the same text */
        struct dbuf back;
        dbuf_init(&back, (size_t)1 << 26);
        if (got != o && !kept) {
            cache_obj_json_append(got, &back);
            FUZZ_CHECK(dbuf_len(&back) == jlen &&
                           memcmp(dbuf_ptr(&back), json, jlen) == 0,
                       "the stored text differs: %.*s", (int)jlen, json);
        }
        dbuf_free(&back);
    }
    dbuf_free(&text);
    cache_obj_unref(o);
}

static int on_line(const char *line, size_t len, void *arg)
{
    struct ref *r = arg;
    size_t want_len = 0;
    const char *want = ref_next(r, &want_len);
    FUZZ_CHECK(want != NULL, "an extra line: %.*s", (int)len, line);
    FUZZ_CHECK(len == want_len && memcmp(line, want, len) == 0,
               "line differs: got %.*s, want %.*s", (int)len, line,
               (int)want_len, want);
    r->lines++;
    event(r, line, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = data[0] * 2654435761u + 1;
    size_t max = data[1] < 128 ? (size_t)1 << 20 : 16 + (data[1] - 128) * 4u;
    const char *s = (const char *)data + 2, *end = (const char *)data + size;
    struct ref r = {s, end, max, 0, cache_new()};
    struct watch_lines wl;
    FUZZ_CHECK(r.cache != NULL, "out of memory");
    watch_lines_init(&wl, max);

    /* where the splitter must stop: the first line longer than max, or a
     * trailing partial line longer than max */
    const char *stop = NULL;
    size_t before = 0; /* non-empty lines before it */
    for (const char *p = s; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        if ((size_t)(e - p) > max) {
            stop = p;
            break;
        }
        if (nl != NULL && e > p && !(e - p == 1 && *p == '\r'))
            before++;
        p = nl ? nl + 1 : end;
    }

    int rc = 0;
    for (const char *p = s; p < end && rc == 0;) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % ((seed & 1) ? 7 : 301);
        if (n > (size_t)(end - p))
            n = (size_t)(end - p);
        rc = watch_lines_feed(&wl, p, n, on_line, &r);
        p += n;
    }
    if (stop != NULL) {
        FUZZ_CHECK(rc == WATCH_LINES_TOOBIG, "no TOOBIG (%d) for max %zu", rc,
                   max);
        /* every line before the long one was handed out */
        FUZZ_CHECK(r.lines == before, "%zu lines handed out, want %zu", r.lines,
                   before);
    } else {
        FUZZ_CHECK(rc == 0, "feed failed with %d", rc);
        size_t rest = 0;
        FUZZ_CHECK(ref_next(&r, &rest) == NULL, "a line was not handed out");
        FUZZ_CHECK(watch_lines_pending(&wl) == (size_t)(end - r.p),
                   "%zu bytes pending, want %td", watch_lines_pending(&wl),
                   end - r.p);
    }
    watch_lines_free(&wl);
    cache_free(r.cache);
    return 0;
}
