/*
 * check_cluster: the --check-cluster diagnostic. Resolves the connection
 * exactly as the operator does (kubeconfig.h), then asks the API server
 * for its version, checks that the DittoServer CRD is served, and runs one
 * informer on dittoservers (watch.h) until it has synced, reporting each
 * DittoServer's phase and NFS endpoint. A one-shot program on its own
 * event loop. Uses kubeconfig, loop, http, watch, cache, ljson, lyaml, kinds,
 * dbuf.
 */
#ifndef DITTOFS_CHECK_CLUSTER_H
#define DITTOFS_CHECK_CLUSTER_H

#include <stdint.h>

#include "dbuf.h"

/* Exit codes (also the return values of check_cluster_run). */
enum {
    CHECK_CLUSTER_OK = 0,
    CHECK_CLUSTER_EOTHER = 1,   /* out of memory */
    CHECK_CLUSTER_EUSAGE = 2,   /* reserved for the command line */
    CHECK_CLUSTER_ECONNECT = 5, /* kubeconfig, network, TLS, 401/403, ... */
    CHECK_CLUSTER_ENOCRD = 6,   /* the DittoServer CRD is not served */
};

enum check_cluster_output {
    CHECK_CLUSTER_TEXT = 0, /* a short human-readable report */
    CHECK_CLUSTER_YAML,
    CHECK_CLUSTER_JSON,
};

struct check_cluster_options {
    const char *kubeconfig; /* --kubeconfig; NULL: $KUBECONFIG, ... */
    const char *context;    /* --context; NULL: current-context */
    const char *namespace;  /* --namespace; NULL or "": all namespaces */
    double qps;             /* --kube-api-qps; 0: the client's default */
    int burst;              /* --kube-api-burst; 0: the client's default */
    enum check_cluster_output output;
    uint64_t sync_timeout_ms; /* informer sync deadline; 0: 30000 */
};

/*
 * Runs the check. On success appends the report to `out` and returns
 * CHECK_CLUSTER_OK. Otherwise appends one precise message (ending with a
 * newline, never a credential) to `errs`, leaves `out` empty (pass it in
 * empty) and returns CHECK_CLUSTER_ECONNECT, CHECK_CLUSTER_ENOCRD or
 * CHECK_CLUSTER_EOTHER. Meanwhile transport warnings (insecure TLS, watch
 * attempts retried) go to the log on stderr.
 * libcurl: the event loop initialises it once per process (loop_new); the
 * caller pairs that with one curl_global_cleanup() before exiting.
 */
int check_cluster_run(const struct check_cluster_options *o, struct dbuf *out,
                      struct dbuf *errs);

#endif
