/*
 * operator: run mode, the process around the controller. Loads the
 * policies and the Kubernetes connection, starts the event loop with the
 * controller, the metrics and health endpoints and (optionally) leader
 * election, and handles SIGTERM/SIGINT: stop taking work, let the
 * reconciles in flight finish within a bound, release the lease, exit.
 * With a policy directory it also reloads the policies when the directory
 * changes (a ConfigMap volume updated by the kubelet): a new set is
 * compiled and tried on every cached DittoServer without writes, then
 * either replaces the active one (every DittoServer reconciled again) or
 * is refused while the active one keeps running; either way a log line,
 * dittofs_policy_reload_total{result} and an Event on the policies
 * ConfigMap tell. A directory without *.lua files means the embedded
 * policies. A directory whose set cannot be loaded at start is refused the
 * same way, and the process waits for a valid set (alive, never ready, no
 * reconcile, no Lease), then starts as usual. Uses controller, reload,
 * leader, events, serve, metrics, http, kubeconfig, kinds, policy, loop,
 * log.
 */
#ifndef DITTOFS_OPERATOR_H
#define DITTOFS_OPERATOR_H

#include <stdint.h>

#include "controller.h"

/* Exit statuses of run mode (script-test's numbering where they overlap). */
enum {
    OPERATOR_OK = 0,       /* clean shutdown after a signal */
    OPERATOR_EFATAL = 1,   /* leadership lost, loop failure, out of memory */
    OPERATOR_EPOLICY = 4,  /* the policy directory cannot be read, or the
                            * embedded policies cannot be loaded (a set
                            * from the directory that fails is waited
                            * out instead) */
    OPERATOR_ECONNECT = 5, /* no usable Kubernetes configuration */
    OPERATOR_ESERVE = 7,   /* a metrics/health address cannot be bound */
};

struct operator_opts {
    const char *kubeconfig; /* NULL: discovery (kubeconfig.h) */
    const char *context;
    double qps;               /* 0: 20; client-side rate limit */
    int burst;                /* 0: 30 */
    const char *policies_dir; /* NULL: the embedded policies; a directory
                               * without *.lua: the embedded ones until
                               * files appear (watched, reloaded) */
    /* The ConfigMap mounted at policies_dir, "NAME" (in the connection's
     * namespace) or "NAMESPACE/NAME": reload results become Events on it.
     * NULL: none. */
    const char *policies_configmap;
    struct controller_opts ctl;
    int leader_elect;
    const char *leader_ns;    /* NULL: the connection's namespace */
    const char *leader_id;    /* NULL: "dittofs-operator-leader" */
    const char *metrics_addr; /* NULL: ":8080"; "0": off */
    const char *health_addr;  /* NULL: ":8081"; "0": off */
    uint64_t shutdown_ms;     /* 0: 10 s for in-flight work on SIGTERM */
};

/* Runs until SIGTERM/SIGINT (or a fatal error). Returns an exit status. */
int operator_run(const struct operator_opts *o);

#endif
