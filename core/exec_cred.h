/*
 * exec_cred: runs a client-go exec credential plugin
 * (client.authentication.k8s.io v1 and v1beta1 ExecCredential) and parses
 * what it prints. The plugin gets stdin from /dev/null, our stderr, the
 * configured env plus KUBERNETES_EXEC_INFO, and a deadline after which it is
 * killed. It runs either blocking (exec_cred_run) or as a child process
 * watched by the event loop (exec_cred_start). Errors name the plugin,
 * never its output. Used by kubeconfig; uses cJSON, dbuf and loop.
 */
#ifndef DITTOFS_EXEC_CRED_H
#define DITTOFS_EXEC_CRED_H

#include <stddef.h>
#include <time.h>

#define EXEC_CRED_V1 "client.authentication.k8s.io/v1"
#define EXEC_CRED_V1BETA1 "client.authentication.k8s.io/v1beta1"
#define EXEC_CRED_OUTPUT_MAX (1u << 20)

/* What the kubeconfig's user.exec says; every string is owned. */
struct exec_cred_config {
    char *command; /* path or bare name looked up in $PATH */
    char **args;   /* nargs strings (NULL-terminated) or NULL */
    size_t nargs;
    char **env; /* nenv "NAME=value" strings or NULL */
    size_t nenv;
    char *api_version;  /* EXEC_CRED_V1 or EXEC_CRED_V1BETA1 */
    char *install_hint; /* shown when the command is missing, or NULL */
    char *cluster_json; /* spec.cluster (provideClusterInfo) or NULL */
    int timeout_ms;
};

/* A credential; every string is owned (free with exec_cred_result_free). */
struct exec_cred_result {
    char *token;   /* NULL when the plugin returned a certificate only */
    char *cert;    /* PEM client certificate or NULL */
    char *key;     /* PEM client key or NULL */
    time_t expiry; /* wall clock; 0: none given */
};

/*
 * Runs the plugin (blocking, at most cfg->timeout_ms) and parses its
 * output. Returns 0 and fills *out, or -1 with err set: not found (with
 * the install hint), timed out, killed, non-zero exit, output too large,
 * malformed output. `out` must be zeroed by the caller. For callers
 * without an event loop; the operator uses exec_cred_start.
 */
int exec_cred_run(const struct exec_cred_config *cfg,
                  struct exec_cred_result *out, char *err, size_t errlen);

/* --- running on the event loop ------------------------------------------ */

struct loop;
struct exec_cred_job; /* one plugin run; opaque */

/*
 * The end of a run, called once from the loop: rc 0 and `res` filled (the
 * callee may take its strings, setting them to NULL; the rest is wiped and
 * freed after the call), or rc -1, `res` NULL and `err` as precise as
 * exec_cred_run's. The job is already freed: do not cancel it; the
 * callback may start another.
 */
typedef void (*exec_cred_done_fn)(int rc, struct exec_cred_result *res,
                                  const char *err, void *arg);

/*
 * Starts the plugin without waiting for it: its stdout is read from an fd
 * watch on `l`, a loop timer kills it at cfg->timeout_ms (SIGKILL to its
 * process group: the plugin runs in a group of its own), and it is reaped
 * with waitpid(WNOHANG) after its stdout closes. No SIGCHLD handler is
 * installed, but SIGCHLD must not be SIG_IGN. `cfg` is borrowed and must
 * stay unchanged until the job ends. Returns 0 and sets *out (valid until
 * done is called or the job is cancelled); done is never called from
 * within this call. Or -1 with err set (not found with the install hint,
 * spawn failure, out of memory): done is then never called.
 */
int exec_cred_start(struct loop *l, const struct exec_cred_config *cfg,
                    exec_cred_done_fn done, void *arg,
                    struct exec_cred_job **out, char *err, size_t errlen);

/* Kills the plugin, reaps it and frees the job without calling done.
 * NULL is a no-op. */
void exec_cred_cancel(struct exec_cred_job *j);

/*
 * Parses an ExecCredential (`len` bytes of JSON) that must carry
 * `api_version`. `plugin` names it in errors. Returns 0 and fills *out, or
 * -1 with err set (never quoting a secret).
 */
int exec_cred_parse(const char *json, size_t len, const char *api_version,
                    const char *plugin, struct exec_cred_result *out, char *err,
                    size_t errlen);

/* Parses an RFC 3339 timestamp ("2024-01-02T03:04:05Z", fractions and
 * offsets allowed). Returns 0 and sets *out, or -1. */
int exec_cred_parse_time(const char *s, time_t *out);

/* Free and wipe; the struct is left zeroed. NULL-safe members. */
void exec_cred_result_free(struct exec_cred_result *r);
void exec_cred_config_free(struct exec_cred_config *cfg);

#endif
