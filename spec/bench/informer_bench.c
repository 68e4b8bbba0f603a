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
 * Prints "key=value" lines.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jscan.h"
#include "nettest.h"
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
    size_t len;
    cache_obj_json(o, &len);
    *(size_t *)arg += len;
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
    const char *j = cache_obj_json(n, NULL);
    const char *p = strstr(j, "\"seq\":\"");
    if (p == NULL)
        return;
    int seq = atoi(p + 7);
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

int main(int argc, char **argv)
{
    struct http_opts o = {.qps = -1};
    if (argc < 2) {
        fprintf(stderr, "usage: informer_bench populate|sync|latency|idle\n");
        return 2;
    }
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
