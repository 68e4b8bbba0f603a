/*
 * kubeconfig: where the Kubernetes API is and how to authenticate to it.
 * Resolves --kubeconfig, then $KUBECONFIG (a colon list, merged as kubectl
 * does), then ~/.kube/config, then the in-cluster service account, into one
 * opaque connection description: the server URL, the TLS material (CA,
 * client certificate) and a credential source (static token, token file
 * re-read every 60 s and after a 401, or an exec credential plugin run again
 * when it expires, ahead of its expiry, and after a 401). The HTTP client
 * calls kube_conn_authorization_async() and kube_conn_setup_tls() on every
 * request: an exec plugin then runs as a child process watched by the
 * event loop, never blocking it. Uses libyaml, cJSON, libcurl (only to set
 * options on an easy handle), exec_cred, loop, log. Single-threaded.
 */
#ifndef DITTOFS_KUBECONFIG_H
#define DITTOFS_KUBECONFIG_H

#include <stddef.h>

#include <curl/curl.h>

/* Error codes (negative returns); the err buffer always says more. */
enum {
    KUBE_CONN_OK = 0,
    KUBE_CONN_ENOMEM = -1,
    KUBE_CONN_ECONFIG = -2, /* malformed or incomplete kubeconfig, bad URL */
    KUBE_CONN_EIO = -3,     /* a referenced file missing or unreadable */
    KUBE_CONN_EEXEC = -4,   /* exec plugin failed, timed out, bad output */
    KUBE_CONN_ECURL = -5,   /* curl_easy_setopt refused an option */
};

/* kube_conn_authorization_async: wait for the exec plugin's run. */
#define KUBE_CONN_PENDING 1

struct kube_conn; /* opaque */
struct loop;

struct kubeconfig_opts {
    /* --kubeconfig: must exist when given. NULL: $KUBECONFIG (missing
     * files in the list are skipped), else ~/.kube/config, else in-cluster.
     */
    const char *path;
    /* --context: NULL or "" uses current-context. */
    const char *context;
    /* Non-zero allows an http:// server, and only when its host is
     * 127.0.0.1, ::1 or localhost (test proxies); the bearer token is then
     * sent in clear over loopback, with a warning at load. Refused
     * otherwise. */
    int allow_insecure_http_loopback;
    /* Seconds between token file re-reads; 0 means 60 (tests lower it). */
    int token_refresh_sec;
    /* Exec plugin timeout in milliseconds; 0 means 30000. */
    int exec_timeout_ms;
};

/*
 * Loads the configuration and reads every file it references (CA, client
 * certificate and key, token file) so that a missing file fails here. Does
 * not run an exec plugin yet (the first request does).
 * In-cluster: KUBERNETES_SERVICE_HOST and _PORT, and the files token,
 * ca.crt, namespace under $DITTOFS_SA_DIR, by default
 * /var/run/secrets/kubernetes.io/serviceaccount; $POD_NAMESPACE wins over
 * the namespace file.
 * Returns 0 and sets *out (free with kube_conn_free), or a negative
 * KUBE_CONN_E* with a message naming the file, the key and the line/column
 * in err (never a token). `o` may be NULL (all defaults).
 */
int kube_conn_load(struct kube_conn **out, const struct kubeconfig_opts *o,
                   char *err, size_t errlen);

/* "https://127.0.0.1:6443" (a path prefix is kept, no trailing slash).
 * With tls-server-name the host part is that name and kube_conn_setup_tls
 * maps it to the real address (CURLOPT_CONNECT_TO), so curl verifies the
 * certificate against it. Borrowed: valid until kube_conn_free(). */
const char *kube_conn_server(const struct kube_conn *c);

/* The context's namespace, the in-cluster namespace, or "default".
 * Borrowed: valid until kube_conn_free(). */
const char *kube_conn_namespace(const struct kube_conn *c);

/* Where the configuration came from, for a startup log line, e.g.
 * "/root/.kube/config context=admin" or "in-cluster". Never secret.
 * Borrowed: valid until kube_conn_free(). */
const char *kube_conn_source(const struct kube_conn *c);

/*
 * Everything one request needs, in the right order, for callers without
 * an event loop (tests, tools): refreshes the credential if due (re-reads
 * a token file, runs an exec plugin: this blocks for at most
 * exec_timeout_ms), sets the TLS options on `easy`
 * (kube_conn_setup_tls) and, when there is a bearer token, appends
 * "Authorization: Bearer <token>" to *headers (curl copies the string; the
 * caller owns the list and sets CURLOPT_HTTPHEADER itself).
 * Returns 0 or a negative KUBE_CONN_E* with err set (and *headers
 * unchanged). A failed refresh with a still-valid old credential keeps the
 * old one and returns 0.
 */
int kube_conn_prepare(struct kube_conn *c, CURL *easy,
                      struct curl_slist **headers, char *err, size_t errlen);

/*
 * The pieces of kube_conn_prepare, for callers that need them apart.
 * kube_conn_authorization refreshes the credential if due and sets *header
 * to "Authorization: Bearer <token>" or to NULL when the credential is a
 * client certificate only. Borrowed: valid until the next call on `c`.
 * Call it BEFORE kube_conn_setup_tls: an exec plugin may return a client
 * certificate. kube_conn_setup_tls sets on `easy`: CURLOPT_PROTOCOLS_STR
 * (https, or http too when allowed for loopback), VERIFYPEER=1,
 * VERIFYHOST=2 (0/0 only with insecure-skip-tls-verify, warned about
 * loudly at load), the CA as a blob (only that CA is trusted; the system
 * store when the kubeconfig names none), the client certificate and key as
 * blobs, tls-server-name (via CURLOPT_CONNECT_TO) and proxy-url.
 * Both return 0 or a negative KUBE_CONN_E* with err set.
 */
int kube_conn_authorization(struct kube_conn *c, const char **header, char *err,
                            size_t errlen);
int kube_conn_setup_tls(struct kube_conn *c, CURL *easy, char *err,
                        size_t errlen);

/* --- on the event loop --------------------------------------------------- */

/*
 * Told once when the exec plugin's run ends: rc 0 (a credential is there:
 * call kube_conn_authorization_async again; the one just obtained is
 * handed out during the call even if already expired), or a negative
 * KUBE_CONN_E* with the plugin's error in `err` (borrowed for the call).
 * Embed it in the waiting object and set fn; the links are private and
 * must start zeroed. The callback may register again, cancel any waiter
 * and start or cancel requests, but must not free the connection.
 */
struct kube_conn_waiter;
typedef void (*kube_conn_wait_fn)(struct kube_conn_waiter *w, int rc,
                                  const char *err);
struct kube_conn_waiter {
    kube_conn_wait_fn fn;
    struct kube_conn_waiter *next, **pprev;
};

/*
 * kube_conn_authorization for callers on the loop `l`. With an exec
 * plugin it never blocks: when a run is needed it starts the plugin as a
 * child process watched by `l` (at most one run per connection) and:
 *  - returns 0 and sets *header when a credential still valid is there
 *    (also while a run renews it ahead of its expiry, and while a failed
 *    plugin backs off, as kube_conn_authorization);
 *  - returns KUBE_CONN_PENDING when there is none (none yet, expired, or
 *    refused with a 401): register a waiter (kube_conn_wait) and try
 *    again when told;
 *  - returns a negative KUBE_CONN_E* with err set when the plugin cannot
 *    start or failed less than its backoff ago ("... (not retried yet)").
 * A failed run counts for the backoff and is logged; an old credential
 * that has not expired then stays in use. Other credentials are as in
 * kube_conn_authorization. *header is borrowed until the next call on c.
 */
int kube_conn_authorization_async(struct kube_conn *c, struct loop *l,
                                  const char **header, char *err,
                                  size_t errlen);
/* Registers `w` to be told when the current run ends (a no-op when it is
 * registered already). Call it after KUBE_CONN_PENDING. */
void kube_conn_wait(struct kube_conn *c, struct kube_conn_waiter *w);
/* Unregisters `w`; a no-op when it is not registered. */
void kube_conn_wait_cancel(struct kube_conn_waiter *w);
/* Non-zero while an exec plugin runs on the loop. */
int kube_conn_refreshing(const struct kube_conn *c);

/* Call after a 401: the next prepare re-reads the token file / client
 * certificate files or runs the exec plugin again (and requests on the
 * loop wait for that run). Exec plugins are reaped with waitpid(): SIGCHLD
 * must not be set to SIG_IGN. */
void kube_conn_unauthorized(struct kube_conn *c);

/* Frees everything and wipes the secrets it held; kills and reaps a
 * running exec plugin (its waiters are not told: free them first, as
 * http_client_free does). NULL is a no-op. Easy
 * handles set up by kube_conn_setup_tls keep a pointer to a list owned by
 * `c` (CURLOPT_CONNECT_TO): free `c` only after them. */
void kube_conn_free(struct kube_conn *c);

#endif
