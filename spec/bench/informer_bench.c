/*
 * informer_bench: measurements for spec/bench/informer_bench.sh against the
 * local control plane ($KUBECONFIG from cluster.sh env).
 *   populate NS N VALUE_BYTES   create N ConfigMaps bench-00000.. in NS
 *   sync [NS]                   time an informer's initial sync (all
 *                               namespaces without NS), then exit
 *   memory [NS]                 the same, then the cache memory by malloc
 *                               accounting (mallinfo2 deltas) against the
 *                               objects' JSON size
 *   latency NS RATE SECONDS     update objects at RATE/s; time from the
 *                               event's bytes arriving to the subscriber,
 *                               and from sending the write to the
 *                               subscriber (p50/p99/max)
 *   idle NS SECONDS             CPU time of a synced, idle watch
 *                               (/proc/self/stat) and loop wakeups
 *   synthetic N FILE            no cluster: N DittoServers and their
 *                               children (FILE: one object per line as the
 *                               apiserver serves them, the DittoServer
 *                               first; informer_bench_objects.json) cloned
 *                               with their own names, uids and
 *                               resourceVersions into one cache per kind
 *                               and the controller's owner index, as the
 *                               informers and on_child() would; heap per
 *                               DittoServer (mallinfo2 deltas) against the
 *                               JSON served and stored, the time of an
 *                               object's way in (text to object, upsert,
 *                               owner index) and of cache_upsert alone
 *                               (the encoding), of reading a text back
 *                               and of parsing it
 * Prints "key=value" lines.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jscan.h"
#include "kinds.h"
#include "nettest.h"
#include "tracking.h"
#include "watch.h"

static struct nt T;

static int synced(void *arg)
{
    return watch_synced(arg);
}

static size_t heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static int cmd_populate(const char *ns, int n, size_t vsize)
{
    nt_create_ns(&T, ns);
    uint64_t t0 = loop_now_ms();
    int failed = nt_bulk_create(&T, ns, "bench", n, vsize, 0);
    printf("populate_seconds=%.2f\npopulate_failed=%d\n",
           (double)(loop_now_ms() - t0) / 1000.0, failed);
    return failed != 0;
}

struct json_size {
    size_t served;
    size_t items;
};

/* Sums the size of every item as the server sends it (compact JSON with
 * managedFields), by listing the same set again with a plain client. */
static void served_size(const char *path, struct json_size *js)
{
    char *cont = NULL;
    memset(js, 0, sizeof(*js));
    do {
        struct http_response *r = NULL;
        char *esc = cont ? curl_easy_escape(NULL, cont, 0) : NULL;
        nt_req(&T, HTTP_GET, NULL, NULL, &r, "%s?limit=500%s%s", path,
               esc ? "&continue=" : "", esc ? esc : "");
        curl_free(esc);
        free(cont);
        cont = NULL;
        struct jscan_member items, md, ct;
        struct jscan_span body = {r->body, r->body_len};
        if (jscan_find(body, "items", &items, NULL, 0) == 1) {
            struct jscan_iter it;
            struct jscan_span item;
            jscan_array(&it, items.value.p, items.value.len);
            while (jscan_next_element(&it, &item, NULL, 0) == 1) {
                js->served += item.len;
                js->items++;
            }
        }
        if (jscan_find(body, "metadata", &md, NULL, 0) == 1 &&
            jscan_find(md.value, "continue", &ct, NULL, 0) == 1 &&
            jscan_str_len(ct.value) > 0) {
            cont = malloc((size_t)jscan_str_len(ct.value) + 1);
            jscan_str(ct.value, cont, (size_t)jscan_str_len(ct.value) + 1);
        }
        http_response_free(r);
    } while (cont != NULL);
}

static int add_len(const struct cache_obj *o, void *arg)
{
    *(size_t *)arg += cache_obj_json_len(o);
    return 0;
}

static int cmd_sync(const char *ns, int time_only)
{
    malloc_trim(0);
    size_t h0 = heap_used();
    struct watch_opts o = {
        .api_path = "/api/v1", .resource = "configmaps", .namespace = ns};
    uint64_t t0 = loop_now_us();
    struct watch *w = watch_new(T.http, &o);
    watch_start(w);
    if (!nt_wait(&T, synced, w, 600000)) {
        printf("error=not synced: %s\n", watch_last_error(w));
        return 1;
    }
    uint64_t t1 = loop_now_us();
    if (time_only) {
        printf("sync_seconds=%.3f\nobjects=%zu\n", (double)(t1 - t0) / 1e6,
               cache_len(watch_cache(w)));
        watch_free(w);
        return 0;
    }
    /* Let the watch settle, then measure what stays allocated. */
    nt_run_for(&T, 200);
    malloc_trim(0);
    size_t h1 = heap_used();
    size_t stored = 0;
    cache_list(watch_cache(w), NULL, NULL, add_len, &stored);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1%s%s/configmaps",
             ns ? "/namespaces/" : "", ns ? ns : "");
    struct json_size js;
    served_size(path, &js);
    size_t n = cache_len(watch_cache(w));
    printf("sync_seconds=%.3f\nobjects=%zu\n", (double)(t1 - t0) / 1e6, n);
    printf("json_served_bytes=%zu\njson_stored_bytes=%zu\n", js.served, stored);
    printf("cache_accounted_bytes=%zu\nheap_delta_bytes=%zu\n",
           cache_mem(watch_cache(w)), h1 - h0);
    printf("ratio_heap_to_served_json=%.3f\n",
           (double)(h1 - h0) / (double)js.served);
    printf("ratio_heap_to_stored_json=%.3f\n",
           (double)(h1 - h0) / (double)stored);
    printf("avg_served_object_bytes=%.0f\n",
           js.items ? (double)js.served / (double)js.items : 0);
    watch_free(w);
    return 0;
}

/* --- latency ----------------------------------------------------------- */

#define LAT_MAX 100000

struct lat {
    struct watch *w;
    uint64_t sent_us[LAT_MAX];
    double arrive_ms[LAT_MAX]; /* bytes arrived -> subscriber */
    double e2e_ms[LAT_MAX];    /* write sent -> subscriber */
    double ack_ms[LAT_MAX];    /* write acknowledged -> subscriber (0 when
                                * the event came before the answer) */
    uint64_t ack_us[LAT_MAX];
    int event_first;
    int n;
    int sent;
    int total;
    int acked;
    const char *ns;
    struct loop_timer timer;
    uint64_t period_us;
    uint64_t start_us;
    int objects;
};

static struct lat L;

static void on_update(enum cache_event ev, const struct cache_obj *o,
                      const struct cache_obj *n, void *arg)
{
    (void)o;
    (void)arg;
    uint64_t now = loop_now_us();
    if (ev != CACHE_UPDATED || L.n >= LAT_MAX)
        return;
    struct dbuf text;
    dbuf_init(&text, (size_t)1 << 24);
    cache_obj_json_append(n, &text);
    const char *p = strstr(dbuf_ptr(&text), "\"seq\":\"");
    int seq = p != NULL ? atoi(p + 7) : -1;
    dbuf_free(&text);
    if (seq < 0 || seq >= L.sent)
        return;
    struct watch_stats st;
    watch_get_stats(L.w, &st);
    L.arrive_ms[L.n] = (double)(now - st.last_chunk_us) / 1000.0;
    L.e2e_ms[L.n] = (double)(now - L.sent_us[seq]) / 1000.0;
    if (L.ack_us[seq] == 0) {
        L.event_first++;
        L.ack_ms[L.n] = 0;
    } else {
        L.ack_ms[L.n] = (double)(now - L.ack_us[seq]) / 1000.0;
    }
    L.n++;
}

static void write_done(struct http_response *r, void *arg)
{
    int seq = (int)(intptr_t)arg;
    L.ack_us[seq] = loop_now_us();
    L.acked += r->result == HTTP_OK;
}

static void tick(struct loop_timer *t, void *arg)
{
    (void)arg;
    if (L.sent >= L.total)
        return;
    char body[256], path[256];
    int seq = L.sent++;
    snprintf(body, sizeof(body), "{\"data\":{\"seq\":\"%d\"}}", seq);
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps/lat-%03d",
             L.ns, seq % L.objects);
    struct http_call call = {
        .method = HTTP_PATCH,
        .path = path,
        .content_type = HTTP_CT_MERGE_PATCH,
        .body = body,
        .body_len = strlen(body),
        .on_done = write_done,
        .arg = (void *)(intptr_t)seq,
    };
    L.sent_us[seq] = loop_now_us();
    http_send(T.http, &call, NULL);
    /* Keep a steady rate: schedule from the start time, not from now. */
    uint64_t next = L.start_us + (uint64_t)(seq + 1) * L.period_us;
    uint64_t now = loop_now_us();
    loop_timer_start(T.loop, t, next > now ? (next - now) / 1000 : 0);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void pct(const char *name, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    if (n == 0) {
        printf("%s_n=0\n", name);
        return;
    }
    printf("%s_p50_ms=%.3f\n%s_p99_ms=%.3f\n%s_max_ms=%.3f\n", name, v[n / 2],
           name, v[(int)((double)n * 0.99)], name, v[n - 1]);
}

static int done_cond(void *arg)
{
    (void)arg;
    return L.n >= L.total && L.acked >= L.total;
}

static int cmd_latency(const char *ns, int rate, int seconds)
{
    nt_create_ns(&T, ns);
    L.objects = 20;
    L.ns = ns;
    for (int i = 0; i < L.objects; i++) {
        char name[32];
        snprintf(name, sizeof(name), "lat-%03d", i);
        nt_put_cm(&T, ns, name, "\"lat\":\"yes\"", "0", NULL, 0);
    }
    struct watch_opts o = {.api_path = "/api/v1",
                           .resource = "configmaps",
                           .namespace = ns,
                           .label_selector = "lat=yes"};
    L.w = watch_new(T.http, &o);
    cache_subscribe(watch_cache(L.w), on_update, NULL);
    watch_start(L.w);
    nt_wait(&T, synced, L.w, 60000);
    L.total = rate * seconds;
    if (L.total > LAT_MAX)
        L.total = LAT_MAX;
    L.period_us = 1000000u / (uint64_t)rate;
    L.start_us = loop_now_us();
    loop_timer_init(&L.timer, tick, NULL);
    loop_timer_start(T.loop, &L.timer, 0);
    nt_wait(&T, done_cond, NULL, (uint64_t)seconds * 1000 + 60000);
    double el = (double)(loop_now_us() - L.start_us) / 1e6;
    printf("latency_rate=%d\nlatency_events=%d\nlatency_sent=%d\n"
           "latency_seconds=%.2f\n",
           rate, L.n, L.sent, el);
    static double a[LAT_MAX], e[LAT_MAX], k[LAT_MAX];
    memcpy(a, L.arrive_ms, sizeof(double) * (size_t)L.n);
    memcpy(e, L.e2e_ms, sizeof(double) * (size_t)L.n);
    memcpy(k, L.ack_ms, sizeof(double) * (size_t)L.n);
    pct("arrival_to_subscriber", a, L.n);
    pct("write_to_subscriber", e, L.n);
    pct("write_ack_to_subscriber", k, L.n);
    printf("events_before_write_ack=%d\n", L.event_first);
    watch_free(L.w);
    return L.n < L.total;
}

/* --- idle -------------------------------------------------------------- */

static double cpu_seconds(void)
{
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[2048];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name in parentheses: utime is 14th. */
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
           &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmd_idle(const char *ns, int seconds)
{
    nt_create_ns(&T, ns);
    nt_put_cm(&T, ns, "idle", "", "x", NULL, 0);
    struct watch_opts o = {
        .api_path = "/api/v1", .resource = "configmaps", .namespace = ns};
    struct watch *w = watch_new(T.http, &o);
    watch_start(w);
    nt_wait(&T, synced, w, 60000);
    nt_run_for(&T, 500);
    double c0 = cpu_seconds();
    uint64_t end = loop_now_ms() + (uint64_t)seconds * 1000;
    unsigned long wakeups = 0;
    while (loop_now_ms() < end) {
        loop_run_once(T.loop, (int)(end - loop_now_ms()));
        wakeups++;
    }
    double c1 = cpu_seconds();
    printf("idle_seconds=%d\nidle_cpu_seconds=%.3f\nidle_loop_wakeups=%lu\n",
           seconds, c1 - c0, wakeups);
    printf("idle_watch_state=%d\n", (int)watch_get_state(w));
    watch_free(w);
    return 0;
}

/* --- synthetic -------------------------------------------------------- */

#define SYN_MAX_TEMPLATES 16

/* Replaces every `from` in `in` with `to`, into a new string. */
static char *replace_all(const char *in, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = strstr(in, from); p; p = strstr(p + fl, from))
        n++;
    char *out = malloc(strlen(in) + n * (tl > fl ? tl - fl : 0) + 1);
    char *o = out;
    const char *p = in;
    for (const char *q = strstr(p, from); q; q = strstr(p, from)) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
        p = q + fl;
    }
    strcpy(o, p);
    return out;
}

/* The kind index (kinds.h) of a template's top-level "kind", or -1. */
static int template_kind(const char *json)
{
    struct jscan_member m;
    struct jscan_span obj = {json, strlen(json)};
    if (jscan_find(obj, "kind", &m, NULL, 0) != 1)
        return -1;
    for (int k = 0; k < KINDS_N; k++)
        if (jscan_str_eq(m.value, kinds_table[k].kind))
            return k;
    return -1;
}

struct read_cost {
    struct dbuf text;
    size_t bytes;
};

static int read_text(const struct cache_obj *o, void *arg)
{
    struct read_cost *rc = arg;
    dbuf_reset(&rc->text);
    cache_obj_json_append(o, &rc->text);
    rc->bytes += dbuf_len(&rc->text);
    return 0;
}

static int read_tree(const struct cache_obj *o, void *arg)
{
    (void)arg;
    cJSON_Delete(cache_obj_parse(o));
    return 0;
}

static int cmd_synthetic(int n, const char *file)
{
    char *tpl[SYN_MAX_TEMPLATES];
    int kinds[SYN_MAX_TEMPLATES], nt = 0;
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        printf("error=cannot open %s\n", file);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (nt < SYN_MAX_TEMPLATES && (len = getline(&line, &cap, f)) > 1) {
        line[len - 1] = '\0';
        kinds[nt] = template_kind(line);
        if (kinds[nt] < 0) {
            printf("error=template %d: not a managed kind\n", nt + 1);
            return 1;
        }
        tpl[nt++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (nt == 0 || kinds[0] != KINDS_DITTOSERVER) {
        printf("error=%s: the DittoServer first, then its children\n", file);
        return 1;
    }

    malloc_trim(0);
    size_t h0 = heap_used();
    struct cache *caches[KINDS_N] = {0};
    for (int k = 0; k < KINDS_N; k++)
        caches[k] = cache_new();
    static struct tracking owners;
    size_t served = 0, stored = 0, objects = 0;
    size_t served_kind[KINDS_N] = {0}, stored_kind[KINDS_N] = {0};
    size_t heap_kind[KINDS_N] = {0}, n_kind[KINDS_N] = {0};
    uint64_t upsert_us = 0, store_us = 0, rv = 1000;
    for (int i = 0; i < n; i++) {
        char name[32], dsuid[40], stsuid[40], key[64];
        snprintf(name, sizeof(name), "ds-%05d", i);
        snprintf(dsuid, sizeof(dsuid), "5f0c%04x-1d2e-4c3b-9a8f-%012x",
                 i & 0xffff, (unsigned)i * 2654435761u);
        snprintf(stsuid, sizeof(stsuid), "a1b2%04x-3c4d-4e5f-8a9b-%012x",
                 i & 0xffff, (unsigned)i * 40503u + 7u);
        snprintf(key, sizeof(key), "bench/%s", name);
        for (int t = 0; t < nt; t++) {
            char uid[40], rvs[24];
            snprintf(uid, sizeof(uid), "%08x-%04x-4%03x-8%03x-%012x",
                     (unsigned)(i * 7 + t) * 2246822519u, t, i & 0xfff,
                     (i >> 12) & 0xfff, (unsigned)i * 3266489917u + t);
            snprintf(rvs, sizeof(rvs), "%llu", (unsigned long long)rv++);
            char *a = replace_all(tpl[t], "dittofs-sample", name);
            char *b = replace_all(a, "@DSUID@", t == 0 ? dsuid : dsuid);
            char *c = replace_all(b, "@STSUID@", stsuid);
            char *d = replace_all(c, "@UID@", t == 0 ? dsuid : uid);
            char *e = replace_all(d, "@RV@", rvs);
            free(a);
            free(b);
            free(c);
            free(d);
            size_t el = strlen(e);
            struct cache_obj *o;
            char err[256];
            size_t hb = heap_used();
            uint64_t t0 = loop_now_us();
            if (cache_obj_from_text(e, el, NULL, NULL, &o, err, sizeof(err)) !=
                CACHE_OK) {
                printf("error=template %d: %s\n", t + 1, err);
                return 1;
            }
            uint64_t t1 = loop_now_us();
            int k = kinds[t];
            char oname[256];
            snprintf(oname, sizeof(oname), "%s", cache_obj_name(o));
            cache_upsert(caches[k], o);
            store_us += loop_now_us() - t1;
            if (k != KINDS_DITTOSERVER)
                tracking_kids_add(&owners, key, k, oname);
            upsert_us += loop_now_us() - t0;
            size_t sl =
                cache_obj_json_len(cache_get(caches[k], "bench", oname));
            /* The text was there before and after: this delta is what the
             * cache and the index keep (with malloc's own overhead). */
            heap_kind[k] += heap_used() - hb;
            free(e);
            served += el;
            stored += sl;
            served_kind[k] += el;
            stored_kind[k] += sl;
            n_kind[k]++;
            objects++;
        }
    }
    malloc_trim(0);
    size_t h1 = heap_used();
    size_t total = h1 - h0;
    printf("dittoservers=%d\nobjects=%zu\n", n, objects);
    printf("json_served_bytes=%zu\njson_stored_bytes=%zu\n", served, stored);
    printf("heap_delta_bytes=%zu\n", total);
    printf("heap_per_dittoserver_bytes=%.0f\n", (double)total / n);
    printf("json_stored_per_dittoserver_bytes=%.0f\n", (double)stored / n);
    printf("ratio_heap_to_served_json=%.3f\n", (double)total / served);
    printf("projected_heap_10000_mib=%.1f\n",
           (double)total / n * 10000 / 1048576.0);
    printf("upsert_us_per_object=%.2f\n", (double)upsert_us / objects);
    printf("cache_upsert_us_per_object=%.2f\n", (double)store_us / objects);
    for (int k = 0; k < KINDS_N; k++) {
        if (n_kind[k] == 0)
            continue;
        printf("kind_%s: objects=%zu served_avg=%.0f stored_avg=%.0f "
               "heap_avg=%.0f\n",
               kinds_table[k].plural, n_kind[k],
               (double)served_kind[k] / n_kind[k],
               (double)stored_kind[k] / n_kind[k],
               (double)heap_kind[k] / n_kind[k]);
    }
    size_t index = 0;
    for (int k = 0; k < KINDS_N; k++)
        index += cache_mem(caches[k]);
    printf("cache_accounted_bytes=%zu\n", index);
    /* Reading back: the text (what a reconcile copies for the policy) and
     * the tree (what it parses to compare), per object. */
    struct read_cost rc = {0};
    dbuf_init(&rc.text, (size_t)1 << 24);
    uint64_t t0 = loop_now_us();
    for (int k = 0; k < KINDS_N; k++)
        cache_list(caches[k], NULL, NULL, read_text, &rc);
    uint64_t t1 = loop_now_us();
    for (int k = 0; k < KINDS_N; k++)
        cache_list(caches[k], NULL, NULL, read_tree, &rc);
    uint64_t t2 = loop_now_us();
    dbuf_free(&rc.text);
    printf("read_text_us_per_object=%.2f\nparse_us_per_object=%.2f\n",
           (double)(t1 - t0) / objects, (double)(t2 - t1) / objects);
    tracking_clear(&owners);
    for (int k = 0; k < KINDS_N; k++)
        cache_free(caches[k]);
    for (int t = 0; t < nt; t++)
        free(tpl[t]);
    return 0;
}

int main(int argc, char **argv)
{
    struct http_opts o = {.qps = -1};
    if (argc < 2) {
        fprintf(stderr,
                "usage: informer_bench populate|sync|latency|idle|synthetic\n");
        return 2;
    }
    if (strcmp(argv[1], "synthetic") == 0 && argc == 4)
        return cmd_synthetic(atoi(argv[2]), argv[3]);
    /* The informer measurements run with the client's defaults (20 qps,
     * burst 30), as the operator would; writers are not limited. */
    int writer =
        strcmp(argv[1], "populate") == 0 || strcmp(argv[1], "latency") == 0;
    nt_open(&T, NULL, writer ? &o : NULL);
    int rc = 2;
    if (strcmp(argv[1], "populate") == 0 && argc == 5)
        rc = cmd_populate(argv[2], atoi(argv[3]), (size_t)atol(argv[4]));
    else if (strcmp(argv[1], "sync") == 0)
        rc = cmd_sync(argc > 2 ? argv[2] : NULL, 1);
    else if (strcmp(argv[1], "memory") == 0)
        rc = cmd_sync(argc > 2 ? argv[2] : NULL, 0);
    else if (strcmp(argv[1], "latency") == 0 && argc == 5)
        rc = cmd_latency(argv[2], atoi(argv[3]), atoi(argv[4]));
    else if (strcmp(argv[1], "idle") == 0 && argc == 4)
        rc = cmd_idle(argv[2], atoi(argv[3]));
    nt_close(&T);
    return rc;
}
