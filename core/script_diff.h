/*
 * script_diff: `dittofs-operator --script-test FILE --diff`, the review of
 * a change before it is rolled out. Reads the DittoServer that FILE names
 * from the cluster, renders FILE's spec (on the live object's metadata and
 * status) with the given policies against the live children and Pods,
 * exactly as the controller would (script_test.h), and prints, as a
 * unified diff per object, what the controller would change: each
 * rendered object against what a server-side apply of it would leave
 * (a dry run: `dryRun=All`, the operator's field manager), the children
 * the controller would delete, and the status it would write.
 * Read-only: GETs, LISTs and dry-run PATCHes; no write ever leaves it.
 * Uses script_test, kubeconfig, loop, http, apply, kinds, ljson, lyaml,
 * dbuf.
 */
#ifndef DITTOFS_SCRIPT_DIFF_H
#define DITTOFS_SCRIPT_DIFF_H

#include "dbuf.h"
#include "script_test.h"

/* Exit codes besides script_test's (1 input, 3 invalid, 4 policy). */
enum {
    SCRIPT_DIFF_ECONNECT = 5, /* kubeconfig, network, TLS, 401/403, 5xx */
    SCRIPT_DIFF_DIFFERS = 8,  /* it ran, and something would change */
};

struct script_diff_options {
    /* file, policies_dir, cluster_domain, limits; json is ignored */
    struct script_test_options st;
    const char *kubeconfig; /* NULL: $KUBECONFIG, ~/.kube/config, ... */
    const char *context;    /* NULL: current-context */
    const char *namespace;  /* when FILE names none; NULL: the context's */
    double qps;             /* 0: the client's default */
    int burst;
};

/*
 * Runs the review. Appends the diffs to `out` (nothing when nothing would
 * change) and to `errs` the messages and, last, a one-line summary
 * ("2 to change, 0 to create, 1 to delete; the status unchanged").
 * Returns 0 (no change), SCRIPT_DIFF_DIFFERS, or an error code: those of
 * script_test_run, SCRIPT_TEST_EINPUT when the DittoServer does not exist
 * in the cluster, SCRIPT_TEST_EPOLICY when the apiserver refuses a
 * rendered object (its message in errs), SCRIPT_DIFF_ECONNECT.
 */
int script_diff_run(const struct script_diff_options *o, struct dbuf *out,
                    struct dbuf *errs);

#endif
