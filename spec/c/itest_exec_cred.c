/*
 * itest_exec_cred: an exec credential plugin against the real local
 * control plane, with leader election on. The kubeconfig's user is a shell
 * plugin that prints the admin token ($DITTOFS_ADMIN_TOKEN_FILE): run 1
 * with an expiry 24 s ahead, run 2 (the renewal, due 12 s before that
 * expiry) hangs until its 8 s timeout kills it, run 3 (after the 1 s
 * backoff) succeeds. One connection serves an elector (lease 4 s, renew
 * deadline 3 s, retry 1 s) and a stream of ConfigMap writes, on one loop.
 * During the hang:
 *  - the elector keeps leading and the Lease's renewTime keeps advancing
 *    (a loop stalled for 8 s would lose the lease after 3 s);
 *  - the writes keep going with the old token, none waits for the plugin;
 *  - afterwards no child process is left.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "leader.h"
#include "nettest.h"
#include "testlib.h"

#define TIMEOUT_MS 8000
#define TTL_S 24

static struct nt D;
static char NS[64];
static char dir[64];

static char *path(const char *name)
{
    static char buf[8][256];
    static int i;
    char *p = buf[i++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static char *slurp(const char *p)
{
    static char buf[1 << 16];
    FILE *f = fopen(p, "r");
    size_t n = 0;
    buf[0] = '\0';
    if (f == NULL)
        return buf;
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void write_file(const char *name, const char *text, int mode)
{
    FILE *f = fopen(path(name), "w");
    if (f == NULL) {
        printf("Bail out! cannot write %s\n", path(name));
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    chmod(path(name), (mode_t)mode);
}

static double now_s(void)
{
    return (double)loop_real_us() / 1e6;
}

static int runs(void)
{
    return atoi(slurp(path("count")));
}

/* Our child processes in any state (a zombie counts), from /proc. */
static int children(void)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        char p[300];
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        snprintf(p, sizeof p, "/proc/%s/stat", de->d_name);
        char *st = slurp(p), *rp = strrchr(st, ')');
        int ppid = 0;
        char state = 0;
        if (rp != NULL && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 &&
            ppid == (int)getpid())
            n++;
    }
    closedir(d);
    return n;
}

/* Run n: 1 prints the admin token expiring in $TTL s, 2 hangs, later ones
 * print it expiring in an hour. The token never reaches a log. */
static const char plugin_sh[] =
    "#!/bin/sh\n"
    "n=$(cat \"$D/count\" 2>/dev/null || echo 0); n=$((n+1))\n"
    "echo $n > \"$D/count\"\n"
    "case $n in\n"
    "1) ttl=$TTL ;;\n"
    "2) echo 'plugin: hanging' >&2; exec sleep 300 ;;\n"
    "*) ttl=3600 ;;\n"
    "esac\n"
    "tok=$(cat \"$TOKFILE\")\n"
    "t=$(date -u -d \"@$(( $(date +%s) + ttl ))\" +%Y-%m-%dT%H:%M:%SZ)\n"
    "printf '{\"kind\":\"ExecCredential\",\"apiVersion\":"
    "\"client.authentication.k8s.io/v1\",\"status\":{\"token\":\"%s\","
    "\"expirationTimestamp\":\"%s\"}}' \"$tok\" \"$t\"\n";

static struct kube_conn *exec_conn(const char *api, const char *ca,
                                   const char *tokfile)
{
    char text[4096], err[512];
    struct kube_conn *c = NULL;
    write_file("plugin.sh", plugin_sh, 0755);
    snprintf(text, sizeof text,
             "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
             "clusters: [{name: c, cluster: {server: '%s', "
             "certificate-authority: '%s'}}]\n"
             "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
             "users:\n- name: u\n  user:\n    exec:\n"
             "      apiVersion: client.authentication.k8s.io/v1\n"
             "      command: %s\n"
             "      env:\n"
             "      - {name: D, value: '%s'}\n"
             "      - {name: TOKFILE, value: '%s'}\n"
             "      - {name: TTL, value: '%d'}\n",
             api, ca, path("plugin.sh"), dir, tokfile, TTL_S);
    write_file("kubeconfig", text, 0600);
    struct kubeconfig_opts o = {.path = path("kubeconfig"),
                                .exec_timeout_ms = TIMEOUT_MS};
    if (kube_conn_load(&c, &o, err, sizeof err) != 0) {
        printf("Bail out! exec kubeconfig: %s\n", err);
        exit(1);
    }
    return c;
}

/* --- the elector ------------------------------------------------------- */

static struct {
    int starts, stops;
} E;

static void on_leading(struct leader *le, int leading, void *arg)
{
    (void)le;
    (void)arg;
    if (leading)
        E.starts++;
    else
        E.stops++;
}

static int leading_cond(void *arg)
{
    return leader_is_leader(arg);
}

/* The Lease's renewTime (admin client), "" when unknown. */
static void lease_renew_time(char out[64])
{
    struct http_response *r = NULL;
    out[0] = '\0';
    if (nt_req(&D, HTTP_GET, NULL, NULL, &r,
               "/apis/coordination.k8s.io/v1/namespaces/%s/leases/exec-lease",
               NS) == 0) {
        cJSON *o = cJSON_Parse(r->body);
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(o, "spec"), "renewTime");
        if (cJSON_IsString(rt))
            snprintf(out, 64, "%s", rt->valuestring);
        cJSON_Delete(o);
    }
    http_response_free(r);
}

/* --- the writes --------------------------------------------------------- */

struct req {
    int done, result;
    double sent, took;
    char message[256];
};

static void req_done(struct http_response *r, void *arg)
{
    struct req *q = arg;
    q->done = 1;
    q->result = r->result;
    q->took = now_s() - q->sent;
    snprintf(q->message, sizeof q->message, "%s", r->message);
}

static int req_cond(void *arg)
{
    return ((struct req *)arg)->done;
}

/* One server-side apply of ConfigMap "beat" with data.n = n. */
static void beat(struct http_client *h, struct req *q, int n)
{
    char p[256], body[512];
    snprintf(p, sizeof p,
             "/api/v1/namespaces/%s/configmaps/beat?fieldManager=itest"
             "&force=true",
             NS);
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
             "{\"name\":\"beat\"},\"data\":{\"n\":\"%d\"}}",
             n);
    struct http_call call = {.method = HTTP_PATCH,
                             .path = p,
                             .content_type = HTTP_CT_APPLY_PATCH,
                             .body = body,
                             .body_len = strlen(body),
                             .on_done = req_done,
                             .arg = q};
    memset(q, 0, sizeof *q);
    q->sent = now_s();
    if (http_send(h, &call, NULL) != 0)
        q->done = 1, q->result = HTTP_ENOMEM;
}

int main(void)
{
    const char *api = getenv("DITTOFS_APISERVER");
    const char *ca = getenv("DITTOFS_CA_CERT");
    const char *tokfile = getenv("DITTOFS_ADMIN_TOKEN_FILE");
    if (api == NULL || ca == NULL || tokfile == NULL) {
        printf("Bail out! needs the cluster env (with-cluster)\n");
        return 1;
    }
    snprintf(dir, sizeof dir, "/tmp/itest-exec.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct http_opts direct = {.qps = -1};
    nt_open(&D, NULL, &direct);
    snprintf(NS, sizeof NS, "x-exec-cred-%d", (int)getpid());
    if (nt_create_ns(&D, NS) != 0) {
        printf("Bail out! cannot create namespace %s\n", NS);
        return 1;
    }

    struct kube_conn *conn = exec_conn(api, ca, tokfile);
    struct http_client *hl = http_client_new(D.loop, conn, &direct);
    struct http_client *hw = http_client_new(D.loop, conn, &direct);
    struct leader_opts lo = {.namespace = NS,
                             .name = "exec-lease",
                             .identity = "x1",
                             .lease_ms = 4000,
                             .renew_deadline_ms = 3000,
                             .retry_ms = 1000};
    struct leader *le = leader_new(hl, &lo, on_leading, NULL);
    double t0 = now_s();
    CHECK(leader_start(le) == 0, "elector starts");
    int led = nt_wait(&D, leading_cond, le, 15000);
    double took = now_s() - t0;
    int nruns = runs();
    CHECK(led && nruns == 1, "leads with the plugin's token (%.2f s, %d run)",
          took, nruns);

    /* Writes every 250 ms and a look at the Lease every 500 ms, until the
     * hanging run is over and the next one succeeded (at most 45 s). */
    struct req q;
    char rt[64], last_rt[64] = "";
    int n = 0, failed = 0, hang_writes = 0, hang_renewals = 0;
    int lost_during_hang = 0;
    double worst = 0, worst_hang = 0, hang_start = 0, hang_end = 0;
    double next_lease = 0;
    while (now_s() - t0 < 45) {
        int hanging = kube_conn_refreshing(conn) && runs() == 2;
        if (hanging && hang_start == 0)
            hang_start = now_s();
        if (!hanging && hang_start != 0 && hang_end == 0)
            hang_end = now_s();
        if (hang_end != 0 && runs() >= 3 && !kube_conn_refreshing(conn) &&
            now_s() - hang_end > 2)
            break;
        beat(hw, &q, n++);
        nt_wait(&D, req_cond, &q, 30000);
        failed += q.result != HTTP_OK;
        if (q.result != HTTP_OK)
            printf("# write %d: %s\n", n, q.message);
        if (q.took > worst)
            worst = q.took;
        if (hanging) {
            hang_writes++;
            if (q.took > worst_hang)
                worst_hang = q.took;
            if (!leader_is_leader(le))
                lost_during_hang++;
        }
        if (now_s() >= next_lease) {
            lease_renew_time(rt);
            if (hanging && rt[0] != '\0' && strcmp(rt, last_rt) != 0 &&
                last_rt[0] != '\0')
                hang_renewals++;
            snprintf(last_rt, sizeof last_rt, "%s", rt);
            next_lease = now_s() + 0.5;
        }
        nt_run_for(&D, 250);
    }
    double hang = hang_end - hang_start;
    CHECK(hang_start > 0 && hang_end > 0 && hang > 6.5 && hang < 10,
          "the renewal hung until its timeout was killed (%.1f s, timeout "
          "%d ms), %.1f s after the first token",
          hang, TIMEOUT_MS, hang_start - t0);
    CHECK(runs() == 3, "then the next run succeeded (%d runs)", runs());
    CHECK(E.starts == 1 && E.stops == 0 && lost_during_hang == 0 &&
              leader_is_leader(le),
          "the elector led throughout (starts %d, stops %d)", E.starts,
          E.stops);
    CHECK(hang_renewals >= 4,
          "the Lease was renewed %d times during the %.1f s hang (retry 1 s, "
          "renew deadline 3 s)",
          hang_renewals, hang);
    CHECK(failed == 0 && hang_writes >= 10,
          "%d writes, %d of them during the hang, none failed", n, hang_writes);
    CHECK(worst_hang < 1.0,
          "no write waited for the plugin: slowest during the hang %.0f ms "
          "(slowest overall %.0f ms)",
          worst_hang * 1000, worst * 1000);

    leader_free(le);
    http_client_free(hl);
    http_client_free(hw);
    kube_conn_free(conn);
    CHECK_INT_EQ(children(), 0, "no plugin process left behind");

    struct http_response *r = NULL;
    nt_req(&D, HTTP_DELETE, NULL, NULL, &r, "/api/v1/namespaces/%s", NS);
    http_response_free(r);
    nt_close(&D);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return TEST_SUMMARY();
}
