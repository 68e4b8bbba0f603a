/*
 * itest_leader: leader election against the real local control plane,
 * several electors in one process (separate HTTP clients on one loop),
 * short durations (lease 3 s, renew deadline 2 s, retry 500 ms):
 *  - the first elector creates the Lease and leads (MicroTime fields,
 *    leaseTransitions 0, renewals advance renewTime); a second stays
 *    standby and knows the holder;
 *  - release: holder "" and leaseDurationSeconds 1 on the server, the
 *    standby leads within about 1.2 retry periods, leaseTransitions 1;
 *  - kill (freed without release): the standby leads once the lease
 *    expires on its own clock, leaseTransitions 2;
 *  - a leader behind a proxy that starts hanging every request stops
 *    leading within the renew deadline (from its timer, with the request
 *    still hanging), and the standby takes over after expiry;
 *  - option checks; release when not leading calls done at once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fakehttp.h"
#include "fhproxy.h"
#include "leader.h"
#include "nettest.h"
#include "testlib.h"

#define LEASE_MS 3000
#define DEADLINE_MS 2000
#define RETRY_MS 500

/* --- a forwarding proxy that can hang requests ------------------------- */

static struct {
    struct fh_server srv;
    const char *upstream;
    const char *ca;
    pthread_mutex_t mu;
    int hang;
    int hung; /* requests caught hanging */
} P;

static int proxy_hanging(void)
{
    pthread_mutex_lock(&P.mu);
    int h = P.hang && !P.srv.stopping;
    pthread_mutex_unlock(&P.mu);
    return h;
}

static int proxy_handler(struct fh_server *s, int fd, const struct fh_req *r)
{
    (void)s;
    if (proxy_hanging()) {
        pthread_mutex_lock(&P.mu);
        P.hung++;
        pthread_mutex_unlock(&P.mu);
        while (proxy_hanging())
            usleep(20000);
        fh_respond(fd, 503, "Connection: close\r\n", "{}");
        return 0;
    }
    return fh_forward(fd, r, P.upstream, P.ca);
}

static void proxy_set_hang(int on)
{
    pthread_mutex_lock(&P.mu);
    P.hang = on;
    P.hung = 0;
    pthread_mutex_unlock(&P.mu);
}

static int proxy_hung(void)
{
    pthread_mutex_lock(&P.mu);
    int n = P.hung;
    pthread_mutex_unlock(&P.mu);
    return n;
}

/* --- electors ---------------------------------------------------------- */

static struct nt D;
static char NS[64];

struct cand {
    struct leader *le;
    struct http_client *h;
    int starts, stops;
    double t_start, t_stop;
    int released;
    double t_released;
};

static void on_leading(struct leader *le, int leading, void *arg)
{
    struct cand *c = arg;
    (void)le;
    if (leading) {
        c->starts++;
        c->t_start = fh_now();
    } else {
        c->stops++;
        c->t_stop = fh_now();
    }
}

static void on_released(void *arg)
{
    struct cand *c = arg;
    c->released = 1;
    c->t_released = fh_now();
}

static void cand_open(struct cand *c, struct kube_conn *conn, const char *lease,
                      const char *id)
{
    memset(c, 0, sizeof(*c));
    struct http_opts o = {.qps = -1};
    c->h = http_client_new(D.loop, conn, &o);
    struct leader_opts lo = {
        .namespace = NS,
        .name = lease,
        .identity = id,
        .lease_ms = LEASE_MS,
        .renew_deadline_ms = DEADLINE_MS,
        .retry_ms = RETRY_MS,
    };
    c->le = leader_new(c->h, &lo, on_leading, c);
}

static void cand_close(struct cand *c)
{
    leader_free(c->le);
    http_client_free(c->h);
    c->le = NULL;
    c->h = NULL;
}

static int leading_cond(void *arg)
{
    return leader_is_leader(((struct cand *)arg)->le);
}

static int not_leading_cond(void *arg)
{
    return !leader_is_leader(((struct cand *)arg)->le);
}

static int released_cond(void *arg)
{
    return ((struct cand *)arg)->released;
}

/* The Lease's spec from the server (cJSON_Delete it), NULL when absent. */
static cJSON *get_spec(const char *lease)
{
    struct http_response *r = NULL;
    cJSON *spec = NULL;
    int rc = nt_req(&D, HTTP_GET, NULL, NULL, &r,
                    "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", NS,
                    lease);
    if (rc == 0) {
        cJSON *obj = cJSON_Parse(r->body);
        spec = cJSON_DetachItemFromObjectCaseSensitive(obj, "spec");
        cJSON_Delete(obj);
    }
    http_response_free(r);
    return spec;
}

static const char *spec_str(const cJSON *spec, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, key);
    return cJSON_IsString(v) ? v->valuestring : "(none)";
}

static long spec_num(const cJSON *spec, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, key);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

/* "2026-11-27T13:00:00.000000Z" */
static int is_microtime(const char *s)
{
    if (strlen(s) != 27 || s[4] != '-' || s[10] != 'T' || s[19] != '.' ||
        s[26] != 'Z')
        return 0;
    for (int i = 20; i < 26; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* --- tests ------------------------------------------------------------- */

static void test_options(void)
{
    struct http_client *h = http_client_new(D.loop, D.conn, NULL);
    struct leader_opts bad = {.namespace = NS,
                              .name = "x",
                              .identity = "x",
                              .lease_ms = 2000,
                              .renew_deadline_ms = 2000,
                              .retry_ms = 500};
    struct leader *le = leader_new(h, &bad, NULL, NULL);
    CHECK(leader_start(le) == -EINVAL,
          "lease not longer than the renew deadline: -EINVAL");
    leader_free(le);
    bad.lease_ms = 3000;
    bad.retry_ms = 1700;
    le = leader_new(h, &bad, NULL, NULL);
    CHECK(leader_start(le) == -EINVAL,
          "renew deadline not above 1.2 retry periods: -EINVAL");
    leader_free(le);
    struct leader_opts noid = {.namespace = NS, .name = "x"};
    le = leader_new(h, &noid, NULL, NULL);
    CHECK(leader_start(le) == -EINVAL, "no identity: -EINVAL");
    leader_free(le);

    /* Release when not leading: done at the next iteration. */
    struct cand c;
    memset(&c, 0, sizeof(c));
    struct leader_opts ok = {.namespace = NS, .name = "x", .identity = "x"};
    le = leader_new(h, &ok, on_leading, &c);
    double t0 = fh_now();
    leader_release(le, 5000, on_released, &c);
    CHECK(!c.released, "release: done not called from within the call");
    nt_wait(&D, released_cond, &c, 2000);
    CHECK(c.released && c.t_released - t0 < 0.5,
          "release when not leading: done at once (%.3f s)", c.t_released - t0);
    CHECK(leader_start(le) == -EALREADY, "start after release: -EALREADY");
    leader_free(le);
    http_client_free(h);
}

static void test_handover(void)
{
    struct cand a, b, c;
    cand_open(&a, D.conn, "l1", "a");
    cand_open(&b, D.conn, "l1", "b");
    double t0 = fh_now();
    CHECK(leader_start(a.le) == 0, "a starts");
    CHECK(nt_wait(&D, leading_cond, &a, 5000) && a.starts == 1,
          "a creates the Lease and leads (%.2f s)", fh_now() - t0);
    cJSON *spec = get_spec("l1");
    CHECK_STR_EQ(spec_str(spec, "holderIdentity"), "a", "holderIdentity a");
    CHECK_INT_EQ(spec_num(spec, "leaseDurationSeconds"), 3,
                 "leaseDurationSeconds 3");
    CHECK_INT_EQ(spec_num(spec, "leaseTransitions"), 0, "leaseTransitions 0");
    CHECK(is_microtime(spec_str(spec, "renewTime")) &&
              is_microtime(spec_str(spec, "acquireTime")),
          "renewTime/acquireTime are MicroTime (%s)",
          spec_str(spec, "renewTime"));
    char first_renew[64];
    snprintf(first_renew, sizeof(first_renew), "%s",
             spec_str(spec, "renewTime"));
    cJSON_Delete(spec);

    CHECK(leader_start(b.le) == 0, "b starts");
    nt_run_for(&D, 2000);
    CHECK(!leader_is_leader(b.le) && b.starts == 0, "b stays standby");
    CHECK_STR_EQ(leader_holder(b.le), "a", "b knows the holder");
    CHECK(leader_is_leader(a.le) && a.stops == 0, "a still leads");
    spec = get_spec("l1");
    CHECK(strcmp(spec_str(spec, "renewTime"), first_renew) != 0 &&
              strcmp(spec_str(spec, "acquireTime"), first_renew) == 0,
          "a renewed (renewTime %s), acquireTime kept",
          spec_str(spec, "renewTime"));
    cJSON_Delete(spec);

    /* Release: the standby follows within about 1.2 retry periods. */
    leader_release(a.le, 3000, on_released, &a);
    CHECK(!leader_is_leader(a.le), "a stops leading at release");
    CHECK(nt_wait(&D, released_cond, &a, 5000), "release done");
    spec = get_spec("l1");
    int rel_seen = strcmp(spec_str(spec, "holderIdentity"), "") == 0 &&
                   spec_num(spec, "leaseDurationSeconds") == 1;
    int b_already = strcmp(spec_str(spec, "holderIdentity"), "b") == 0;
    CHECK(rel_seen || b_already,
          "released record: holder \"%s\", leaseDurationSeconds %ld",
          spec_str(spec, "holderIdentity"),
          spec_num(spec, "leaseDurationSeconds"));
    cJSON_Delete(spec);
    CHECK(nt_wait(&D, leading_cond, &b, 5000), "b leads after the release");
    double handover = b.t_start - a.t_released;
    CHECK(handover < RETRY_MS * 1.2 / 1000 + 0.7,
          "handover took %.3f s (<= 1.2 x retry + slack)", handover);
    CHECK(a.stops == 0, "release does not call a's callback");
    spec = get_spec("l1");
    CHECK_STR_EQ(spec_str(spec, "holderIdentity"), "b", "holderIdentity b");
    CHECK_INT_EQ(spec_num(spec, "leaseTransitions"), 1, "leaseTransitions 1");
    cJSON_Delete(spec);
    cand_close(&a);

    /* Kill: c waits out the lease on its own clock. */
    cand_open(&c, D.conn, "l1", "c");
    leader_start(c.le);
    nt_run_for(&D, 1500);
    CHECK(!leader_is_leader(c.le), "c is standby");
    double tk = fh_now();
    cand_close(&b);
    CHECK(nt_wait(&D, leading_cond, &c, 10000), "c leads after b is killed");
    double el = c.t_start - tk;
    CHECK(el >= 2.0 && el < 5.5,
          "c took over after lease expiry: %.2f s (lease 3 s)", el);
    spec = get_spec("l1");
    CHECK_STR_EQ(spec_str(spec, "holderIdentity"), "c", "holderIdentity c");
    CHECK_INT_EQ(spec_num(spec, "leaseTransitions"), 2, "leaseTransitions 2");
    cJSON_Delete(spec);
    CHECK(c.starts == 1 && c.stops == 0, "c: one start, no stop");
    cand_close(&c);
}

static void test_cut_off(struct kube_conn *proxied)
{
    struct cand d, e;
    cand_open(&d, proxied, "l2", "d");
    cand_open(&e, D.conn, "l2", "e");
    leader_start(d.le);
    CHECK(nt_wait(&D, leading_cond, &d, 5000), "d leads through the proxy");
    leader_start(e.le);
    nt_run_for(&D, 1500);
    CHECK(!leader_is_leader(e.le) && leader_is_leader(d.le),
          "e standby, d leading");

    double t0 = fh_now();
    proxy_set_hang(1);
    CHECK(nt_wait(&D, not_leading_cond, &d, 5000) && d.stops == 1,
          "d stops leading once cut off");
    double el = d.t_stop - t0;
    CHECK(el <= DEADLINE_MS / 1000.0 + 0.3,
          "d stopped %.2f s after the cut (renew deadline 2 s)", el);
    CHECK(proxy_hung() >= 1, "a request was hanging when d stopped (%d hung)",
          proxy_hung());
    CHECK(nt_wait(&D, leading_cond, &e, 8000), "e takes over");
    CHECK(e.t_start > d.t_stop, "e leads only after d stopped (%.2f s later)",
          e.t_start - d.t_stop);
    cJSON *spec = get_spec("l2");
    CHECK_STR_EQ(spec_str(spec, "holderIdentity"), "e", "holderIdentity e");
    CHECK_INT_EQ(spec_num(spec, "leaseTransitions"), 1, "leaseTransitions 1");
    cJSON_Delete(spec);

    /* The network heals: d sees e's renewals and stays standby. */
    proxy_set_hang(0);
    nt_run_for(&D, 2000);
    CHECK(!leader_is_leader(d.le) && d.starts == 1,
          "d stays standby after reconnecting");
    CHECK_STR_EQ(leader_holder(d.le), "e", "d knows e leads");
    cand_close(&d);
    cand_close(&e);
}

int main(void)
{
    const char *api = getenv("DITTOFS_APISERVER");
    const char *ca = getenv("DITTOFS_CA_CERT");
    const char *tokfile = getenv("DITTOFS_ADMIN_TOKEN_FILE");
    char *token = tokfile ? nt_read_token(tokfile) : NULL;
    if (api == NULL || ca == NULL || token == NULL) {
        printf("Bail out! needs the cluster env (with-cluster)\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct http_opts direct = {.qps = -1};
    nt_open(&D, NULL, &direct);
    snprintf(NS, sizeof(NS), "leader-test-%d", (int)getpid());
    if (nt_create_ns(&D, NS) != 0) {
        printf("Bail out! cannot create namespace %s\n", NS);
        return 1;
    }
    pthread_mutex_init(&P.mu, NULL);
    P.upstream = api;
    P.ca = ca;
    if (fh_start(&P.srv, proxy_handler, NULL) != 0) {
        printf("Bail out! cannot start the proxy\n");
        return 1;
    }
    const char *kc = fh_kubeconfig(P.srv.port, token);
    char err[512];
    struct kubeconfig_opts ko = {.path = kc, .allow_insecure_http_loopback = 1};
    struct kube_conn *proxied = NULL;
    if (kube_conn_load(&proxied, &ko, err, sizeof(err)) != 0) {
        printf("Bail out! proxy kubeconfig: %s\n", err);
        return 1;
    }

    test_options();
    test_handover();
    test_cut_off(proxied);

    struct http_response *r = NULL;
    nt_req(&D, HTTP_DELETE, NULL, NULL, &r, "/api/v1/namespaces/%s", NS);
    http_response_free(r);
    fh_stop(&P.srv);
    kube_conn_free(proxied);
    nt_close(&D);
    unlink(kc);
    free(token);
    return TEST_SUMMARY();
}
