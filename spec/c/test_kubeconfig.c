/*
 * test_kubeconfig: kubeconfig variants written to a temp directory and
 * loaded through core/kubeconfig.h: contexts, CA/cert/key as files and
 * data, tokens and token files (rotation), exec plugins (v1, v1beta1,
 * expiry, failures), in-cluster, $KUBECONFIG merging, and precise errors
 * for bad input. Every secret used is searched for in everything the
 * module logged (stderr is captured) and in every error message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "exec_cred.h"
#include "kubeconfig.h"
#include "testlib.h"

static char dir[64];
static char errbuf[1024];
static char secrets_seen[16][128];
static int nsecrets;

/* Secret values that must never show up in errors or logs. */
static void secret(const char *s)
{
    snprintf(secrets_seen[nsecrets++], sizeof secrets_seen[0], "%s", s);
}

static int err_is_clean(const char *e)
{
    for (int i = 0; i < nsecrets; i++)
        if (strstr(e, secrets_seen[i]) != NULL)
            return 0;
    return 1;
}

static char *path(const char *name)
{
    static char buf[8][256];
    static int i;
    char *p = buf[i++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(path(name), "w");
    if (f == NULL) {
        perror(name);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static void write_exec(const char *name, const char *text)
{
    write_file(name, text);
    chmod(path(name), 0755);
}

static char *slurp(const char *p)
{
    FILE *f = fopen(p, "r");
    static char buf[1 << 16];
    size_t n = 0;
    buf[0] = '\0';
    if (f == NULL)
        return buf;
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Loads `file` (in dir) with `context`; returns the rc, err in errbuf. */
static int load(struct kube_conn **c, const char *file, const char *context)
{
    struct kubeconfig_opts o = {0};
    o.path = file ? path(file) : NULL;
    o.context = context;
    errbuf[0] = '\0';
    return kube_conn_load(c, &o, errbuf, sizeof errbuf);
}

static int load_opts(struct kube_conn **c, struct kubeconfig_opts *o)
{
    errbuf[0] = '\0';
    return kube_conn_load(c, o, errbuf, sizeof errbuf);
}

/* Expect load failure with `needle` in the message. */
static void expect_fail(const char *file, const char *context, int code,
                        const char *needle, const char *what)
{
    struct kube_conn *c = NULL;
    int rc = load(&c, file, context);
    if (!CHECK(rc == code && c == NULL && strstr(errbuf, needle) != NULL &&
                   err_is_clean(errbuf),
               "%s", what))
        printf("# rc=%d err: %s\n# wanted: %s\n", rc, errbuf, needle);
    kube_conn_free(c);
}

static const char *auth(struct kube_conn *c)
{
    const char *h = NULL;
    errbuf[0] = '\0';
    if (kube_conn_authorization(c, &h, errbuf, sizeof errbuf) < 0)
        return "ERROR";
    return h ? h : "NONE";
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        fprintf(stdout, "# command failed: %s\n", cmd);
        exit(2);
    }
}

static char *b64_file(const char *name)
{
    static char buf[8192];
    char cmd[512];
    snprintf(cmd, sizeof cmd, "base64 -w0 < %s", path(name));
    FILE *p = popen(cmd, "r");
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    pclose(p);
    return buf;
}

#define KC_HEAD                                                                \
    "apiVersion: v1\n"                                                         \
    "kind: Config\n"

/* --- cases ---------------------------------------------------------------- */

static void test_token_basic(void)
{
    struct kube_conn *c = NULL;
    secret("tok-basic-0123456789");
    write_file("basic.yaml", KC_HEAD "current-context: a\n"
                                     "clusters:\n"
                                     "- name: c1\n"
                                     "  cluster:\n"
                                     "    server: https://127.0.0.1:6443///\n"
                                     "    certificate-authority: ca.crt\n"
                                     "contexts:\n"
                                     "- name: a\n"
                                     "  context: {cluster: c1, user: u1, "
                                     "namespace: team-a}\n"
                                     "- name: b\n"
                                     "  context: {cluster: c1, user: u2}\n"
                                     "users:\n"
                                     "- name: u1\n"
                                     "  user:\n"
                                     "    token: tok-basic-0123456789\n"
                                     "- name: u2\n"
                                     "  user: {}\n");
    int rc = load(&c, "basic.yaml", NULL);
    CHECK(rc == 0, "token kubeconfig loads (%s)", errbuf);
    if (rc != 0)
        return;
    CHECK_STR_EQ(kube_conn_server(c), "https://127.0.0.1:6443",
                 "server without trailing slashes");
    CHECK_STR_EQ(kube_conn_namespace(c), "team-a", "context namespace");
    CHECK(strstr(kube_conn_source(c), "context=a") != NULL &&
              strstr(kube_conn_source(c), "basic.yaml") != NULL,
          "source names file and context");
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-basic-0123456789",
                 "bearer header from token");
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    rc = kube_conn_prepare(c, e, &h, errbuf, sizeof errbuf);
    CHECK(rc == 0 && h != NULL && strcmp(h->data, auth(c)) == 0 &&
              h->next == NULL,
          "prepare sets TLS and appends one Authorization header");
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    kube_conn_free(c);

    rc = load(&c, "basic.yaml", "b");
    CHECK(rc == 0, "--context b loads");
    if (rc == 0) {
        CHECK_STR_EQ(kube_conn_namespace(c), "default",
                     "no namespace means default");
        CHECK_STR_EQ(auth(c), "NONE", "empty user: no Authorization header");
    }
    kube_conn_free(c);
    expect_fail("basic.yaml", "nope", KUBE_CONN_ECONFIG,
                "context \"nope\" not found", "unknown --context");
}

static void test_ca_and_certs(void)
{
    struct kube_conn *c = NULL;
    char text[32768];
    char ca64[8192], crt64[8192], key64[8192];
    snprintf(ca64, sizeof ca64, "%s", b64_file("ca.crt"));
    snprintf(crt64, sizeof crt64, "%s", b64_file("client.crt"));
    snprintf(key64, sizeof key64, "%s", b64_file("client.key"));

    snprintf(text, sizeof text,
             KC_HEAD "current-context: x\n"
                     "clusters:\n"
                     "- name: c\n"
                     "  cluster:\n"
                     "    server: https://[::1]:7443/prefix/\n"
                     "    certificate-authority-data: %s\n"
                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                     "users:\n"
                     "- name: u\n"
                     "  user:\n"
                     "    client-certificate-data: %s\n"
                     "    client-key-data: %s\n",
             ca64, crt64, key64);
    write_file("certdata.yaml", text);
    int rc = load(&c, "certdata.yaml", NULL);
    CHECK(rc == 0, "CA and client certificate as data (%s)", errbuf);
    if (rc == 0) {
        CHECK_STR_EQ(kube_conn_server(c), "https://[::1]:7443/prefix",
                     "IPv6 server with path prefix");
        CHECK_STR_EQ(auth(c), "NONE", "certificate only: no bearer header");
        CURL *e = curl_easy_init();
        CHECK(kube_conn_setup_tls(c, e, errbuf, sizeof errbuf) == 0,
              "TLS blobs accepted by curl");
        curl_easy_cleanup(e);
    }
    kube_conn_free(c);

    /* Files, relative to the kubeconfig's directory. */
    sh("mkdir -p %s/sub", dir);
    write_file("sub/files.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://127.0.0.1:1\n"
                       "    certificate-authority: ../ca.crt\n"
                       "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    client-certificate: ../client.crt\n"
                       "    client-key: ../client.key\n");
    rc = load(&c, "sub/files.yaml", NULL);
    CHECK(rc == 0, "CA and client certificate as relative files (%s)", errbuf);
    kube_conn_free(c);

    write_file("sub/missingca.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://127.0.0.1:1\n"
                       "    certificate-authority: nothere.crt\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    expect_fail("sub/missingca.yaml", NULL, KUBE_CONN_EIO,
                "line 8, column 28: clusters[\"c\"].cluster.certificate-"
                "authority: cannot read",
                "missing CA file: path, line, column, key");
    expect_fail("sub/missingca.yaml", NULL, KUBE_CONN_EIO,
                "sub/nothere.crt: No such file", "missing CA file resolved");

    write_file("badb64.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://127.0.0.1:1\n"
                       "    certificate-authority-data: '!!notbase64'\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    expect_fail("badb64.yaml", NULL, KUBE_CONN_ECONFIG,
                "line 8, column 33: clusters[\"c\"].cluster.certificate-"
                "authority-data: not valid base64",
                "bad base64 names key and position");

    write_file("notpem.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://127.0.0.1:1\n"
                       "    certificate-authority-data: aGVsbG8K\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    expect_fail("notpem.yaml", NULL, KUBE_CONN_ECONFIG,
                "no PEM certificate found", "CA that is not PEM");

    snprintf(text, sizeof text,
             KC_HEAD "current-context: x\n"
                     "clusters: [{name: c, cluster: {server: "
                     "'https://h:1'}}]\n"
                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                     "users:\n"
                     "- name: u\n"
                     "  user:\n"
                     "    client-certificate-data: %s\n"
                     "    client-key: other.key\n",
             crt64);
    write_file("mismatch.yaml", text);
    expect_fail("mismatch.yaml", NULL, KUBE_CONN_ECONFIG,
                "does not match the client certificate",
                "key of another certificate refused at load");

    snprintf(text, sizeof text,
             KC_HEAD "current-context: x\n"
                     "clusters: [{name: c, cluster: {server: "
                     "'https://h:1'}}]\n"
                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                     "users:\n"
                     "- name: u\n"
                     "  user:\n"
                     "    client-certificate-data: %s\n",
             crt64);
    write_file("nokey.yaml", text);
    expect_fail("nokey.yaml", NULL, KUBE_CONN_ECONFIG,
                "client-certificate given without client-key",
                "certificate without key");

    write_file("insecure.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://10.1.2.3\n"
                       "    insecure-skip-tls-verify: true\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    rc = load(&c, "insecure.yaml", NULL);
    CHECK(rc == 0, "insecure-skip-tls-verify loads (with a warning)");
    kube_conn_free(c);
    CHECK(strstr(slurp(path("stderr.log")), "TLS VERIFICATION IS DISABLED") !=
              NULL,
          "insecure-skip-tls-verify logs a loud warning");

    write_file("insecure-ca.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://10.1.2.3\n"
                       "    insecure-skip-tls-verify: true\n"
                       "    certificate-authority: ca.crt\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    expect_fail("insecure-ca.yaml", NULL, KUBE_CONN_ECONFIG,
                "together with insecure-skip-tls-verify is not allowed",
                "CA plus insecure refused");

    write_file("insecure-bad.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://10.1.2.3\n"
                       "    insecure-skip-tls-verify: \"maybe\"\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    expect_fail("insecure-bad.yaml", NULL, KUBE_CONN_ECONFIG,
                "line 8, column 31: clusters[\"c\"].cluster.insecure-skip-"
                "tls-verify: expected true or false",
                "non-boolean insecure flag");

    write_file("tlsname.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters:\n"
                       "- name: c\n"
                       "  cluster:\n"
                       "    server: https://127.0.0.1:6443\n"
                       "    tls-server-name: kubernetes.default.svc\n"
                       "    proxy-url: http://127.0.0.1:3128\n"
                       "    certificate-authority: ca.crt\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    rc = load(&c, "tlsname.yaml", NULL);
    CHECK(rc == 0 && strcmp(kube_conn_server(c),
                            "https://kubernetes.default.svc:6443") == 0,
          "tls-server-name: URL host is the TLS name");
    if (rc == 0) {
        CURL *e = curl_easy_init();
        CHECK(kube_conn_setup_tls(c, e, errbuf, sizeof errbuf) == 0,
              "tls-server-name and proxy-url set on curl");
        curl_easy_cleanup(e);
    }
    kube_conn_free(c);
}

static void test_http_and_urls(void)
{
    struct kube_conn *c = NULL;
    struct kubeconfig_opts o = {0};
    static const char *const fmt =
        KC_HEAD "current-context: x\n"
                "clusters: [{name: c, cluster: {server: '%s'}}]\n"
                "contexts: [{name: x, context: {cluster: c}}]\n";
    char text[1024];

    snprintf(text, sizeof text, fmt, "http://127.0.0.1:8080");
    write_file("http.yaml", text);
    expect_fail("http.yaml", NULL, KUBE_CONN_ECONFIG, "http:// is refused",
                "http:// refused by default");
    o.path = path("http.yaml");
    o.allow_insecure_http_loopback = 1;
    int rc = load_opts(&c, &o);
    CHECK(rc == 0 && strcmp(kube_conn_server(c), "http://127.0.0.1:8080") == 0,
          "http:// on 127.0.0.1 allowed when asked");
    kube_conn_free(c);
    c = NULL;

    snprintf(text, sizeof text, fmt, "http://[::1]:8080");
    write_file("http6.yaml", text);
    o.path = path("http6.yaml");
    rc = load_opts(&c, &o);
    CHECK(rc == 0, "http:// on [::1] allowed when asked");
    kube_conn_free(c);
    c = NULL;

    snprintf(text, sizeof text, fmt, "http://10.0.0.1:8080");
    write_file("http-remote.yaml", text);
    o.path = path("http-remote.yaml");
    rc = load_opts(&c, &o);
    CHECK(rc == KUBE_CONN_ECONFIG && strstr(errbuf, "http:// is refused"),
          "http:// to a non-loopback host refused even when allowed");
    kube_conn_free(c);
    c = NULL;

    snprintf(text, sizeof text, fmt, "ftp://h");
    write_file("ftp.yaml", text);
    expect_fail("ftp.yaml", NULL, KUBE_CONN_ECONFIG, "only https://",
                "other schemes refused");
    secret("pw-in-url-77");
    snprintf(text, sizeof text, fmt, "https://user:pw-in-url-77@h:1");
    write_file("userinfo.yaml", text);
    expect_fail("userinfo.yaml", NULL, KUBE_CONN_ECONFIG,
                "credentials (user@ or user:password@) in the URL are not "
                "allowed",
                "credentials in URL refused, not echoed");
    snprintf(text, sizeof text, fmt, "ftp://user:pw-in-url-77@h:1");
    write_file("userinfo2.yaml", text);
    expect_fail("userinfo2.yaml", NULL, KUBE_CONN_ECONFIG,
                "in the URL are not allowed",
                "credentials in a URL of another scheme: not echoed either");
    snprintf(text, sizeof text, fmt, "https://h:1/api?x=1");
    write_file("query.yaml", text);
    expect_fail("query.yaml", NULL, KUBE_CONN_ECONFIG,
                "without query or fragment", "query in URL refused");
    snprintf(text, sizeof text, fmt, "https://h:port");
    write_file("badport.yaml", text);
    expect_fail("badport.yaml", NULL, KUBE_CONN_ECONFIG, "malformed URL",
                "bad port refused");
    snprintf(text, sizeof text, fmt, "k8s.example:443");
    write_file("noscheme.yaml", text);
    rc = load(&c, "noscheme.yaml", NULL);
    CHECK(rc == 0 &&
              strcmp(kube_conn_server(c), "https://k8s.example:443") == 0,
          "host:port without scheme means https");
    kube_conn_free(c);
}

static void test_errors(void)
{
    expect_fail("does-not-exist.yaml", NULL, KUBE_CONN_EIO,
                "does-not-exist.yaml: No such file or directory",
                "missing --kubeconfig file");
    write_file("malformed.yaml", KC_HEAD "clusters:\n"
                                         "- name: c\n"
                                         "  cluster: {server: [1, 2}\n");
    expect_fail("malformed.yaml", NULL, KUBE_CONN_ECONFIG,
                "malformed.yaml: line 5, column",
                "malformed YAML: file, line, column");
    write_file("scalar.yaml", "just a string\n");
    expect_fail("scalar.yaml", NULL, KUBE_CONN_ECONFIG,
                "line 1, column 1: expected a mapping",
                "top level not a mapping");
    write_file("empty.yaml", "");
    expect_fail("empty.yaml", NULL, KUBE_CONN_ECONFIG,
                "no current-context set and no --context given",
                "empty file: no current-context");
    write_file("nocluster.yaml", KC_HEAD "current-context: x\n"
                                         "contexts:\n"
                                         "- name: x\n"
                                         "  context:\n"
                                         "    cluster: gone\n");
    expect_fail("nocluster.yaml", NULL, KUBE_CONN_ECONFIG,
                "line 7, column 14: contexts[\"x\"].context.cluster: cluster "
                "\"gone\" not found",
                "context naming a missing cluster");
    write_file("nouser.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "ghost}}]\n");
    expect_fail("nouser.yaml", NULL, KUBE_CONN_ECONFIG,
                "contexts[\"x\"].context.user: user \"ghost\" not found",
                "context naming a missing user");
    write_file("noserver.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {}}]\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    expect_fail("noserver.yaml", NULL, KUBE_CONN_ECONFIG,
                "clusters[\"c\"].cluster.server: missing",
                "cluster without server");
    write_file("listtype.yaml", KC_HEAD "current-context: x\n"
                                        "contexts: {x: 1}\n");
    expect_fail("listtype.yaml", NULL, KUBE_CONN_ECONFIG,
                "line 4, column 11: contexts: expected a list",
                "contexts not a list");
    write_file("servertype.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: [a]}}]\n"
                       "contexts: [{name: x, context: {cluster: c}}]\n");
    expect_fail("servertype.yaml", NULL, KUBE_CONN_ECONFIG,
                "clusters[\"c\"].cluster.server: expected a string",
                "server of the wrong type");

    static const char *const refused[][2] = {
        {"auth-provider: {name: oidc}", "auth-provider plugins"},
        {"username: admin", "basic auth"},
        {"as: someone", "impersonation (as)"},
    };
    for (size_t i = 0; i < 3; i++) {
        char text[1024];
        snprintf(text, sizeof text,
                 KC_HEAD "current-context: x\n"
                         "clusters: [{name: c, cluster: {server: https://h}}]\n"
                         "contexts: [{name: x, context: {cluster: c, user: "
                         "u}}]\n"
                         "users:\n"
                         "- name: u\n"
                         "  user:\n"
                         "    %s\n",
                 refused[i][0]);
        write_file("refused.yaml", text);
        expect_fail("refused.yaml", NULL, KUBE_CONN_ECONFIG, refused[i][1],
                    "unsupported user fields refused, not ignored");
    }

    secret("tok-ctl\x01secret");
    write_file("ctltoken.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users: [{name: u, user: {token: \"tok-ctl\\x01secret"
                       "\"}}]\n");
    expect_fail("ctltoken.yaml", NULL, KUBE_CONN_ECONFIG,
                "users[\"u\"].user.token: empty or contains control",
                "token with a control character refused, not echoed");
}

static void test_token_file(void)
{
    struct kube_conn *c = NULL;
    struct kubeconfig_opts o = {0};
    secret("tok-file-one");
    secret("tok-file-two");
    secret("tok-file-three");
    secret("tok-static-loser");
    write_file("token1", "  tok-file-one\n");
    write_file("tokenfile.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    token: tok-static-loser\n"
                       "    tokenFile: token1\n");
    o.path = path("tokenfile.yaml");
    o.token_refresh_sec = 1;
    int rc = load_opts(&c, &o);
    CHECK(rc == 0, "tokenFile loads (%s)", errbuf);
    if (rc != 0)
        return;
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-file-one",
                 "tokenFile wins over token, whitespace trimmed");
    write_file("token1", "tok-file-two");
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-file-one",
                 "not re-read before the interval");
    kube_conn_unauthorized(c);
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-file-two",
                 "re-read after a 401");
    write_file("token1", "tok-file-three\n");
    sleep(1);
    usleep(100 * 1000);
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-file-three",
                 "re-read after the interval");
    unlink(path("token1"));
    kube_conn_unauthorized(c);
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-file-three",
                 "file gone: the last good token stays");
    CHECK(strstr(slurp(path("stderr.log")), "cannot re-read the token file"),
          "file gone: warned");
    write_file("token1", "\n\n");
    kube_conn_unauthorized(c);
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-file-three",
                 "empty file: the last good token stays");
    kube_conn_free(c);
    c = NULL;

    rc = load(&c, "tokenfile.yaml", NULL);
    CHECK(rc == KUBE_CONN_ECONFIG &&
              strstr(errbuf, "users[\"u\"].user.tokenFile: token file") &&
              strstr(errbuf, "empty"),
          "empty token file at load: error names key and file (%s)", errbuf);
    kube_conn_free(c);
    c = NULL;
    unlink(path("token1"));
    expect_fail("tokenfile.yaml", NULL, KUBE_CONN_EIO,
                "token1: No such file or directory",
                "missing token file at load");
}

static void test_merge_and_defaults(void)
{
    struct kube_conn *c = NULL;
    char env[1024];
    secret("tok-merge-first");
    secret("tok-merge-second");
    write_file("m1.yaml", KC_HEAD "current-context: m\n"
                                  "users: [{name: u, user: {token: "
                                  "tok-merge-first}}]\n");
    write_file("m2.yaml",
               KC_HEAD "current-context: ignored\n"
                       "clusters: [{name: c, cluster: {server: "
                       "https://merged:1}}]\n"
                       "contexts: [{name: m, context: {cluster: c, user: u, "
                       "namespace: mm}}]\n"
                       "users: [{name: u, user: {token: "
                       "tok-merge-second}}]\n");
    snprintf(env, sizeof env, "%s:%s:%s", path("m1.yaml"), path("absent.yaml"),
             path("m2.yaml"));
    setenv("KUBECONFIG", env, 1);
    int rc = load(&c, NULL, NULL);
    CHECK(rc == 0, "$KUBECONFIG list merged, missing file skipped (%s)",
          errbuf);
    if (rc == 0) {
        CHECK_STR_EQ(kube_conn_server(c), "https://merged:1",
                     "cluster from the second file");
        CHECK_STR_EQ(kube_conn_namespace(c), "mm", "namespace merged");
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-merge-first",
                     "first file wins for the same user name");
    }
    kube_conn_free(c);
    c = NULL;

    setenv("KUBECONFIG", path("absent.yaml"), 1);
    unsetenv("KUBERNETES_SERVICE_HOST");
    rc = load(&c, NULL, NULL);
    CHECK(rc == KUBE_CONN_EIO && strstr(errbuf, "none of its files exists"),
          "$KUBECONFIG with no existing file and not in-cluster");
    kube_conn_free(c);
    c = NULL;

    unsetenv("KUBECONFIG");
    sh("mkdir -p %s/home/.kube && cp %s %s/home/.kube/config", dir,
       path("basic.yaml"), dir);
    sh("cp %s %s/home/.kube/ca.crt", path("ca.crt"), dir);
    setenv("HOME", path("home"), 1);
    rc = load(&c, NULL, NULL);
    CHECK(rc == 0 && strcmp(kube_conn_namespace(c), "team-a") == 0,
          "~/.kube/config used when nothing else is given (%s)", errbuf);
    kube_conn_free(c);
    c = NULL;

    setenv("HOME", path("nohome"), 1);
    rc = load(&c, NULL, NULL);
    CHECK(rc == KUBE_CONN_EIO && strstr(errbuf, "not in a cluster"),
          "nothing configured at all: precise error (%s)", errbuf);
    kube_conn_free(c);
}

static void test_in_cluster(void)
{
    struct kube_conn *c = NULL;
    secret("tok-sa-first");
    secret("tok-sa-rotated");
    sh("mkdir -p %s/sa && cp %s %s/sa/ca.crt", dir, path("ca.crt"), dir);
    write_file("sa/token", "tok-sa-first");
    write_file("sa/namespace", "kube-team\n");
    setenv("DITTOFS_SA_DIR", path("sa"), 1);
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    unsetenv("KUBECONFIG");
    setenv("HOME", path("nohome"), 1);
    int rc = load(&c, NULL, NULL);
    CHECK(rc == 0, "in-cluster loads (%s)", errbuf);
    if (rc == 0) {
        CHECK_STR_EQ(kube_conn_server(c), "https://10.96.0.1:443",
                     "in-cluster server");
        CHECK_STR_EQ(kube_conn_namespace(c), "kube-team",
                     "namespace file, trimmed");
        CHECK_STR_EQ(kube_conn_source(c), "in-cluster", "source");
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-sa-first",
                     "service account token");
        write_file("sa/token", "tok-sa-rotated\n");
        kube_conn_unauthorized(c);
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-sa-rotated",
                     "rotated service account token after a 401");
    }
    kube_conn_free(c);
    c = NULL;

    setenv("POD_NAMESPACE", "from-env", 1);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    rc = load(&c, NULL, NULL);
    CHECK(rc == 0 &&
              strcmp(kube_conn_server(c), "https://[fd00::1]:443") == 0 &&
              strcmp(kube_conn_namespace(c), "from-env") == 0,
          "IPv6 service host bracketed; POD_NAMESPACE wins");
    kube_conn_free(c);
    c = NULL;
    unsetenv("POD_NAMESPACE");

    unlink(path("sa/ca.crt"));
    rc = load(&c, NULL, NULL);
    CHECK(rc == KUBE_CONN_EIO && strstr(errbuf, "in-cluster CA") &&
              strstr(errbuf, "sa/ca.crt"),
          "in-cluster without CA: names the file (%s)", errbuf);
    kube_conn_free(c);
    c = NULL;
    sh("cp %s %s/sa/ca.crt", path("ca.crt"), dir);
    unlink(path("sa/token"));
    rc = load(&c, NULL, NULL);
    CHECK(rc == KUBE_CONN_EIO && strstr(errbuf, "sa/token"),
          "in-cluster without token: names the file (%s)", errbuf);
    kube_conn_free(c);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    unsetenv("DITTOFS_SA_DIR");
}

/* An exec plugin that counts its runs, prints its env/args to files and
 * answers with $1 as apiVersion, token $2, expiry $3. */
static const char *const plugin_sh =
    "#!/bin/sh\n"
    "n=$(cat \"$COUNT\" 2>/dev/null || echo 0); echo $((n+1)) > \"$COUNT\"\n"
    "printf '%s' \"$KUBERNETES_EXEC_INFO\" > \"$INFO\"\n"
    "echo \"args:$*\" > \"$ARGS\"\n"
    "echo 'plugin says hello on stderr' >&2\n"
    "exp=\"\"; [ -n \"$3\" ] && "
    "exp=\",\\\"expirationTimestamp\\\":\\\"$3\\\"\"\n"
    "printf '{\"kind\":\"ExecCredential\",\"apiVersion\":\"%s\","
    "\"status\":{\"token\":\"%s-%s\"%s}}' \"$1\" \"$2\" \"$n\" \"$exp\"\n";

static void write_exec_kc(const char *name, const char *api, const char *args,
                          const char *extra)
{
    char text[4096];
    snprintf(text, sizeof text,
             KC_HEAD "current-context: x\n"
                     "clusters:\n"
                     "- name: c\n"
                     "  cluster:\n"
                     "    server: https://127.0.0.1:6443\n"
                     "    certificate-authority: ca.crt\n"
                     "    extensions:\n"
                     "    - name: client.authentication.k8s.io/exec\n"
                     "      extension: {audience: dittofs, n: 3}\n"
                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                     "users:\n"
                     "- name: u\n"
                     "  user:\n"
                     "    exec:\n"
                     "      apiVersion: %s\n"
                     "      command: ./plugin.sh\n"
                     "      args: [%s]\n"
                     "      env:\n"
                     "      - {name: COUNT, value: %s}\n"
                     "      - {name: INFO, value: %s}\n"
                     "      - {name: ARGS, value: %s}\n"
                     "      installHint: install the dittofs plugin\n"
                     "%s",
             api, args, path("count"), path("info"), path("args"), extra);
    write_file(name, text);
}

static int runs(void)
{
    return atoi(slurp(path("count")));
}

static void test_exec(void)
{
    struct kube_conn *c = NULL;
    char ts[64], args[256];
    struct kubeconfig_opts o = {0};
    secret("tok-exec");

    write_exec("plugin.sh", plugin_sh);
    unlink(path("count"));
    write_exec_kc("exec1.yaml", EXEC_CRED_V1, "'" EXEC_CRED_V1 "', tok-exec",
                  "      provideClusterInfo: true\n"
                  "      interactiveMode: Never\n");
    int rc = load(&c, "exec1.yaml", NULL);
    CHECK(rc == 0, "exec v1 kubeconfig loads (%s)", errbuf);
    if (rc != 0)
        return;
    CHECK(runs() == 0, "the plugin does not run at load");
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-0",
                 "exec v1 token used");
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-0",
                 "cached without expiry");
    CHECK(runs() == 1, "ran once");
    kube_conn_unauthorized(c);
    CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-1",
                 "run again after a 401");
    const char *info = slurp(path("info"));
    CHECK(strstr(info, "\"apiVersion\":\"" EXEC_CRED_V1 "\"") &&
              strstr(info, "\"kind\":\"ExecCredential\"") &&
              strstr(info, "\"interactive\":false") &&
              strstr(info, "\"server\":\"https://127.0.0.1:6443\"") &&
              strstr(info, "\"certificate-authority-data\":\"LS0t") &&
              strstr(info, "\"config\":{\"audience\":\"dittofs\",\"n\":3}"),
          "KUBERNETES_EXEC_INFO carries the cluster (provideClusterInfo)");
    CHECK(strstr(slurp(path("args")), "args:" EXEC_CRED_V1 " tok-exec") != NULL,
          "args passed");
    CHECK(strstr(slurp(path("stderr.log")), "plugin says hello on stderr") !=
              NULL,
          "plugin stderr passed through");
    kube_conn_free(c);
    c = NULL;

    /* v1beta1, an expiry already passed: runs every time. */
    unlink(path("count"));
    write_exec_kc("exec2.yaml", EXEC_CRED_V1BETA1,
                  "'" EXEC_CRED_V1BETA1 "', tok-exec, '2001-01-01T00:00:00Z'",
                  "");
    rc = load(&c, "exec2.yaml", NULL);
    CHECK(rc == 0, "exec v1beta1 loads (%s)", errbuf);
    if (rc == 0) {
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-0",
                     "v1beta1 token");
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-1",
                     "expired credential: plugin runs again");
        CHECK(strstr(slurp(path("info")), "cluster") == NULL,
              "no cluster info without provideClusterInfo");
    }
    kube_conn_free(c);
    c = NULL;

    /* Expiry in the future: cached until then; RFC 3339 with offset. */
    time_t soon = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&soon, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S.25Z", &tm);
    unlink(path("count"));
    snprintf(args, sizeof args, "'%s', tok-exec, '%s'", EXEC_CRED_V1, ts);
    write_exec_kc("exec3.yaml", EXEC_CRED_V1, args, "");
    rc = load(&c, "exec3.yaml", NULL);
    if (rc == 0) {
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-0",
                     "expiring token");
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-0",
                     "cached before its expirationTimestamp");
        sleep(3);
        CHECK_STR_EQ(auth(c), "Authorization: Bearer tok-exec-1",
                     "refreshed after its expirationTimestamp");
    } else {
        CHECK(0, "exec3 loads (%s)", errbuf);
    }
    kube_conn_free(c);
    c = NULL;

    /* apiVersion mismatch between kubeconfig and output. */
    write_exec_kc("exec4.yaml", EXEC_CRED_V1,
                  "'" EXEC_CRED_V1BETA1 "', tok-exec", "");
    rc = load(&c, "exec4.yaml", NULL);
    if (rc == 0) {
        CHECK(strcmp(auth(c), "ERROR") == 0 &&
                  strstr(errbuf, "output apiVersion is \"" EXEC_CRED_V1BETA1
                                 "\", expected " EXEC_CRED_V1) &&
                  err_is_clean(errbuf),
              "apiVersion mismatch: precise error (%s)", errbuf);
    }
    kube_conn_free(c);
    c = NULL;

    /* Non-zero exit: names the plugin, not the output's secrets. */
    secret("tok-leaked-on-stdout");
    write_exec("fail.sh", "#!/bin/sh\n"
                          "n=$(cat fail.count 2>/dev/null || echo 0)\n"
                          "echo $((n+1)) > fail.count\n"
                          "echo tok-leaked-on-stdout\nexit 3\n");
    write_file("execfail.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    exec: {apiVersion: client.authentication.k8s.io/"
                       "v1, command: ./fail.sh}\n");
    rc = load(&c, "execfail.yaml", NULL);
    if (rc == 0) {
        CHECK(strcmp(auth(c), "ERROR") == 0 &&
                  strstr(errbuf, "fail.sh\": exited with status 3") &&
                  err_is_clean(errbuf),
              "non-zero exit: plugin named, output not echoed (%s)", errbuf);
        CURL *e = curl_easy_init();
        struct curl_slist *h = NULL;
        CHECK(kube_conn_prepare(c, e, &h, errbuf, sizeof errbuf) ==
                      KUBE_CONN_EEXEC &&
                  h == NULL,
              "prepare fails with KUBE_CONN_EEXEC and adds no header");
        curl_easy_cleanup(e);
        CHECK(atoi(slurp(path("fail.count"))) == 1 &&
                  strstr(errbuf, "exited with status 3 (its stderr, if "
                                 "any, is above) (not retried yet)"),
              "failed plugin not re-run at once: same error (%s)", errbuf);
        usleep(1100 * 1000);
        CHECK(strcmp(auth(c), "ERROR") == 0 &&
                  atoi(slurp(path("fail.count"))) == 2,
              "failed plugin re-run after the 1 s backoff");
    }
    kube_conn_free(c);
    c = NULL;

    /* Timeout. */
    write_exec("slow.sh", "#!/bin/sh\nexec sleep 10\n");
    write_file("execslow.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    exec: {apiVersion: client.authentication.k8s.io/"
                       "v1beta1, command: ./slow.sh}\n");
    o.path = path("execslow.yaml");
    o.exec_timeout_ms = 300;
    rc = load_opts(&c, &o);
    if (rc == 0) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        const char *r = auth(c);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double took = (double)(b.tv_sec - a.tv_sec) +
                      (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        CHECK(strcmp(r, "ERROR") == 0 &&
                  strstr(errbuf, "slow.sh\": timed out after 300 ms") &&
                  took < 2.0,
              "slow plugin killed at the timeout (%.2fs: %s)", took, errbuf);
    }
    kube_conn_free(c);
    c = NULL;

    /* Missing command: install hint shown. */
    write_file("execmissing.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    exec:\n"
                       "      apiVersion: client.authentication.k8s.io/v1\n"
                       "      command: dittofs-no-such-plugin\n"
                       "      installHint: apt install dittofs-plugin\n");
    rc = load(&c, "execmissing.yaml", NULL);
    if (rc == 0)
        CHECK(strcmp(auth(c), "ERROR") == 0 &&
                  strstr(errbuf, "\"dittofs-no-such-plugin\": executable "
                                 "not found\napt install dittofs-plugin"),
              "missing plugin: install hint shown");
    kube_conn_free(c);
    c = NULL;

    /* Garbage output and a cert-only credential. */
    write_exec("garbage.sh", "#!/bin/sh\necho 'not json tok-exec'\n");
    write_file("execgarbage.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    exec: {apiVersion: client.authentication.k8s.io/"
                       "v1, command: ./garbage.sh}\n");
    rc = load(&c, "execgarbage.yaml", NULL);
    if (rc == 0)
        CHECK(strcmp(auth(c), "ERROR") == 0 &&
                  strstr(errbuf, "output is not a JSON object") &&
                  err_is_clean(errbuf),
              "garbage output: precise error");
    kube_conn_free(c);
    c = NULL;

    char script[16384];
    char crt[8192], key[8192];
    snprintf(crt, sizeof crt, "%s", slurp(path("client.crt")));
    snprintf(key, sizeof key, "%s", slurp(path("client.key")));
    /* JSON-escape the PEM newlines with awk in the script itself. */
    snprintf(script, sizeof script,
             "#!/bin/sh\n"
             "c=$(awk 'BEGIN{ORS=\"\\\\n\"}{print}' %s)\n"
             "k=$(awk 'BEGIN{ORS=\"\\\\n\"}{print}' %s)\n"
             "printf '{\"kind\":\"ExecCredential\",\"apiVersion\":"
             "\"client.authentication.k8s.io/v1\",\"status\":"
             "{\"clientCertificateData\":\"%%s\",\"clientKeyData\":"
             "\"%%s\"}}' \"$c\" \"$k\"\n",
             path("client.crt"), path("client.key"));
    write_exec("certplugin.sh", script);
    write_file("execcert.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    exec: {apiVersion: client.authentication.k8s.io/"
                       "v1, command: ./certplugin.sh}\n");
    rc = load(&c, "execcert.yaml", NULL);
    if (rc == 0) {
        CHECK_STR_EQ(auth(c), "NONE",
                     "exec client certificate: no bearer header");
        CURL *e = curl_easy_init();
        CHECK(kube_conn_setup_tls(c, e, errbuf, sizeof errbuf) == 0,
              "exec client certificate set on curl");
        curl_easy_cleanup(e);
    } else {
        CHECK(0, "execcert loads (%s)", errbuf);
    }
    kube_conn_free(c);
    c = NULL;

    /* Config errors of the exec section. */
    write_file("execbad.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    exec:\n"
                       "      apiVersion: client.authentication.k8s.io/"
                       "v1alpha1\n"
                       "      command: x\n");
    expect_fail("execbad.yaml", NULL, KUBE_CONN_ECONFIG,
                "line 10, column 7: users[\"u\"].user.exec.apiVersion: "
                "\"client.authentication.k8s.io/v1alpha1\" is not supported",
                "unsupported exec apiVersion");
    write_file("execinteractive.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    exec: {apiVersion: client.authentication.k8s.io/"
                       "v1, command: x, interactiveMode: Always}\n");
    expect_fail("execinteractive.yaml", NULL, KUBE_CONN_ECONFIG,
                "interactiveMode: Always needs a terminal",
                "interactive plugin refused");
    write_file("exectoken.yaml",
               KC_HEAD "current-context: x\n"
                       "clusters: [{name: c, cluster: {server: https://h}}]\n"
                       "contexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\n"
                       "users:\n"
                       "- name: u\n"
                       "  user:\n"
                       "    token: tok-exec\n"
                       "    exec: {apiVersion: client.authentication.k8s.io/"
                       "v1, command: x}\n");
    expect_fail("exectoken.yaml", NULL, KUBE_CONN_ECONFIG,
                "exec together with a token", "exec plus token refused");
}

static void test_parse(void)
{
    struct exec_cred_result r = {0};
    char e[256];
    time_t t;
    CHECK(exec_cred_parse_time("2024-01-02T03:04:05Z", &t) == 0 &&
              t == 1704164645,
          "RFC 3339 UTC");
    CHECK(exec_cred_parse_time("2024-01-02T05:04:05.123456+02:00", &t) == 0 &&
              t == 1704164645,
          "RFC 3339 with fraction and offset");
    CHECK(exec_cred_parse_time("2024-01-02 03:04:05", &t) < 0 &&
              exec_cred_parse_time("2024-01-02T03:04:05", &t) < 0 &&
              exec_cred_parse_time("2024-13-02T03:04:05Z", &t) < 0 &&
              exec_cred_parse_time("", &t) < 0,
          "bad timestamps rejected");
    static const char *const bad[][2] = {
        {"{\"kind\":\"ExecCredential\",\"apiVersion\":\"" EXEC_CRED_V1 "\"}",
         "no status object"},
        {"{\"kind\":\"ExecCredential\",\"apiVersion\":\"" EXEC_CRED_V1
         "\",\"status\":{}}",
         "neither a token"},
        {"{\"kind\":\"ExecCredential\",\"apiVersion\":\"" EXEC_CRED_V1
         "\",\"status\":{\"clientCertificateData\":\"x\"}}",
         "without clientKeyData"},
        {"{\"kind\":\"ExecCredential\",\"apiVersion\":\"" EXEC_CRED_V1
         "\",\"status\":{\"token\":\"t\",\"expirationTimestamp\":\"soon\"}}",
         "not an RFC 3339 time"},
        {"{\"kind\":\"Pod\",\"apiVersion\":\"" EXEC_CRED_V1 "\"}",
         "not an ExecCredential"},
        {"{\"kind\":\"ExecCredential\",\"apiVersion\":\"" EXEC_CRED_V1
         "\",\"status\":{\"token\":7}}",
         "must be strings"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = exec_cred_parse(bad[i][0], strlen(bad[i][0]), EXEC_CRED_V1,
                                 "p", &r, e, sizeof e);
        CHECK(rc < 0 && strstr(e, bad[i][1]) && r.token == NULL,
              "malformed ExecCredential: %s", bad[i][1]);
    }
    const char *ok =
        "{\"kind\":\"ExecCredential\",\"apiVersion\":\"" EXEC_CRED_V1
        "\",\"status\":{\"token\":\"abc\","
        "\"expirationTimestamp\":\"2030-01-01T00:00:00Z\"}}";
    CHECK(exec_cred_parse(ok, strlen(ok), EXEC_CRED_V1, "p", &r, e, sizeof e) ==
                  0 &&
              strcmp(r.token, "abc") == 0 && r.expiry == 1893456000,
          "well-formed ExecCredential");
    exec_cred_result_free(&r);
}

/* Every prefix of a full kubeconfig, and every single-byte corruption of
 * its first part: a clean error or a success, never a crash (run it under
 * valgrind). */
static void test_truncations(void)
{
    char text[4096];
    int bad = 0, ok = 0, failed = 0;
    snprintf(text, sizeof text,
             KC_HEAD "current-context: x\n"
                     "clusters:\n"
                     "- name: c\n"
                     "  cluster:\n"
                     "    server: https://127.0.0.1:6443\n"
                     "    certificate-authority: %s\n"
                     "    extensions: [{name: client.authentication.k8s.io/"
                     "exec, extension: {a: [1, {b: c}]}}]\n"
                     "contexts: [{name: x, context: {cluster: c, user: u, "
                     "namespace: n}}]\n"
                     "users:\n"
                     "- name: u\n"
                     "  user:\n"
                     "    exec: {apiVersion: client.authentication.k8s.io/v1, "
                     "command: x, args: [a], env: [{name: A, value: b}], "
                     "provideClusterInfo: true}\n",
             path("ca.crt"));
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) {
        struct kube_conn *c = NULL;
        char *copy = strndup(text, cut);
        write_file("fuzz.yaml", copy);
        free(copy);
        int rc = load(&c, "fuzz.yaml", NULL);
        if (rc == 0)
            ok++;
        else if (errbuf[0] == '\0' || strstr(errbuf, "fuzz.yaml") == NULL)
            bad++;
        else
            failed++;
        kube_conn_free(c);
    }
    static const char junk[] = {'\0', ':', '[',  '{',  '-', '"', '\'',
                                '&',  '*', '\t', '\n', '!', '|', '\xff'};
    for (size_t pos = 0; pos < len; pos += 3) {
        for (size_t j = 0; j < sizeof junk; j++) {
            struct kube_conn *c = NULL;
            char copy[4096];
            memcpy(copy, text, len + 1);
            copy[pos] = junk[j];
            FILE *f = fopen(path("fuzz.yaml"), "w");
            fwrite(copy, 1, len, f);
            fclose(f);
            int rc = load(&c, "fuzz.yaml", NULL);
            if (rc == 0)
                ok++;
            else if (errbuf[0] == '\0')
                bad++;
            else
                failed++;
            kube_conn_free(c);
        }
    }
    CHECK(bad == 0 && failed > 0,
          "truncated and corrupted kubeconfigs: %d loaded, %d precise "
          "errors, %d errors without a message or file name",
          ok, failed, bad);
}

static void test_json_kubeconfig(void)
{
    struct kube_conn *c = NULL;
    secret("tok-json");
    write_file("kc.json",
               "{\"apiVersion\":\"v1\",\"kind\":\"Config\","
               "\"current-context\":\"j\",\"clusters\":[{\"name\":\"c\","
               "\"cluster\":{\"server\":\"https://json:6443\"}}],"
               "\"contexts\":[{\"name\":\"j\",\"context\":{\"cluster\":\"c\","
               "\"user\":\"u\"}}],\"users\":[{\"name\":\"u\",\"user\":"
               "{\"token\":\"tok-json\"}}]}");
    int rc = load(&c, "kc.json", NULL);
    CHECK(rc == 0 && strcmp(auth(c), "Authorization: Bearer tok-json") == 0,
          "JSON kubeconfig");
    kube_conn_free(c);
}

int main(void)
{
    char logpath[128];
    snprintf(dir, sizeof dir, "/tmp/kctest.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* Test PKI: a CA, a client certificate signed by it, a stray key. */
    sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
       "-nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca "
       "2>/dev/null && "
       "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
       "-keyout client.key -out client.csr -subj /CN=tester 2>/dev/null && "
       "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key "
       "-CAcreateserial -out client.crt -days 2 2>/dev/null && "
       "openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 "
       "-out other.key 2>/dev/null",
       dir);
    /* Capture everything the module logs. */
    snprintf(logpath, sizeof logpath, "%s/stderr.log", dir);
    fflush(stderr);
    int saved = dup(2);
    if (freopen(logpath, "w", stderr) == NULL)
        return 2;
    setvbuf(stderr, NULL, _IONBF, 0);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBECONFIG");
    /* Plugins run with the test's cwd; keep their scratch files in dir. */
    if (chdir(dir) != 0)
        return 2;

    test_token_basic();
    test_ca_and_certs();
    test_http_and_urls();
    test_errors();
    test_token_file();
    test_merge_and_defaults();
    test_in_cluster();
    test_exec();
    test_parse();
    test_json_kubeconfig();
    test_truncations();

    const char *log = slurp(logpath);
    int leaked = 0;
    for (int i = 0; i < nsecrets; i++)
        if (strstr(log, secrets_seen[i]) != NULL)
            leaked++;
    CHECK(leaked == 0 && strlen(log) > 0,
          "no secret appears in anything logged (%zu bytes of log)",
          strlen(log));
    dup2(saved, 2);
    close(saved);
    curl_global_cleanup();
    sh("rm -rf %s", dir);
    return TEST_SUMMARY();
}
