/*
 * policy: a compiled policy set and the evaluation of one DittoServer.
 * Loading reads the embedded policies/ and lua/ (embedded.h) or a
 * `--policies DIR` whose modules come first (the embedded policies/ and
 * lua/ stay reachable behind it: a custom dittoserver.lua builds on
 * require("dittoserver.default"), policies/README.md), compiles every file
 * once as text (syntax errors come back as "file:line: message") and keeps
 * the bytecode the host itself dumped. Evaluating runs validate, render and
 * status of the main policy in the set's sandbox (JSON text in, JSON text
 * out), checks what the policy returned and adds what the core owns
 * (namespace, ownerReferences, the managed-by and server labels, on a
 * StatefulSet's pod template too, observedGeneration).
 * The sandbox is prepared once and reused; each evaluation runs the policy
 * and its modules afresh and nothing it makes survives it (sandbox.h).
 * Shared by --script-test and the controller. Uses sandbox, ljson, lcodec,
 * embedded, kinds, dbuf.
 */
#ifndef DITTOFS_POLICY_H
#define DITTOFS_POLICY_H

#include <stddef.h>

#include "dbuf.h"
#include "kinds.h"
#include "sandbox.h"

/* The main policy module of a set (policies/<name>.lua). */
#define POLICY_MAIN "dittoserver"
/* Owner of the rendered children, and the labels the core adds. */
#define POLICY_OWNER_API_VERSION KINDS_OWNER_API_VERSION
#define POLICY_OWNER_KIND KINDS_OWNER_KIND
#define POLICY_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define POLICY_MANAGER "dittofs-operator"
#define POLICY_LABEL_SERVER KINDS_GROUP "/server"
/* Used when the DittoServer has no metadata.uid (script-test). */
#define POLICY_PLACEHOLDER_UID "00000000-0000-0000-0000-000000000000"

/* Time budgets one policy_eval() may use up in the worst case, each the
 * full timeout: preparing the sandbox, the module main chunks, validate,
 * render and status. */
#define POLICY_EVAL_BUDGETS 5

/* The longest requeue delay status() may ask for (one day). */
#define POLICY_MAX_REQUEUE_S 86400

/* Limits of a policy directory. */
#define POLICY_MAX_FILES 256
#define POLICY_MAX_FILE_SIZE ((size_t)1 << 20)

enum policy_status {
    POLICY_OK = 0,
    POLICY_INVALID = 1,   /* validate() returned errors: no objects */
    POLICY_EFAIL = -1,    /* policy failure (message in err) */
    POLICY_ETIMEOUT = -2, /* "policy timeout after N ms" */
    POLICY_EMEMORY = -3,  /* "policy memory limit (N MiB) exceeded" */
    POLICY_ELOAD = -4,    /* the set cannot be loaded (I/O, syntax) */
    POLICY_ENOMEM = -5,   /* host out of memory */
};

struct policy_set;

/* What one evaluation gets. JSON texts need not be NUL-terminated. */
struct policy_input {
    const char *ds_json; /* the DittoServer (CRD defaults applied) */
    size_t ds_len;
    const char *observed_json; /* {"Kind": {"name": obj}}; NULL = none */
    size_t observed_len;
    const char *cluster_domain;   /* NULL = "cluster.local" */
    const char *operator_version; /* NULL = DITTOFS_VERSION */
    /* Non-zero: run status() only (objects and messages stay empty): the
     * controller derives the status again after its writes, from what
     * they returned, for a spec it has just validated and rendered. */
    int status_only;
};

/* What one evaluation returns. Lists hold one message per line. */
struct policy_output {
    struct dbuf errors; /* validate() errors */
    size_t n_errors;
    struct dbuf warnings; /* validate() warnings */
    size_t n_warnings;
    struct dbuf objects; /* JSON array, ready to apply ("" if invalid) */
    struct dbuf status;  /* JSON object: the status ("" on failure) */
    size_t memory_peak;  /* bytes above the prepared baseline (what the
                            memory cap limits), at the peak */
    unsigned long requeue_after_ms; /* status()'s optional second result
                                       in ms; 0: none */
};

/* --- policy sets -----------------------------------------------------------
 */

/*
 * Loads and compiles a policy set: `dir` NULL means the embedded policies/;
 * otherwise every *.lua under dir (recursively, at most POLICY_MAX_FILES of
 * POLICY_MAX_FILE_SIZE each) is read now, so later edits in dir do not
 * affect this set. dir must contain POLICY_MAIN.lua. Returns POLICY_OK with
 * *out set (free with policy_set_free), or POLICY_ELOAD / POLICY_ENOMEM
 * with the message in err ("DIR/x.lua:12: unexpected symbol near ...").
 */
int policy_set_load(const char *dir, struct policy_set **out, struct dbuf *err);
/* Frees a set and its prepared sandbox; NULL is a no-op. */
void policy_set_free(struct policy_set *ps);
/* The directory of the set, or "embedded" (borrowed). */
const char *policy_set_origin(const struct policy_set *ps);
/* A hash of every module's name and source text (16 hex digits and a
 * NUL): which policies are active, for the policy-info metric and logs. */
void policy_set_hash(const struct policy_set *ps, char out[17]);
/* How many times the set prepared a sandbox: 1 after the first evaluation,
 * plus one for each evaluation that followed a failure (or a tainted
 * state, or other limits). A metric, and what tests look at. */
unsigned long policy_set_preparations(const struct policy_set *ps);

/* --- evaluation ------------------------------------------------------------
 */

void policy_output_init(struct policy_output *o);
void policy_output_free(struct policy_output *o);

/*
 * Evaluates one DittoServer with limits `lim` (NULL = defaults; each of
 * validate, render and status gets the full time budget; the memory cap
 * counts from the prepared state). The first evaluation of a set, the
 * first after a failure and the first with other limits prepare the set's
 * sandbox (load every module; the budgets apply to that too); the others
 * reuse it, with a fresh _ENV, require cache and run of every module's
 * main chunk, so no state carries from one evaluation to the next. Not
 * reentrant: one evaluation of a set at a time (one thread).
 * Returns:
 *  - POLICY_OK: errors empty, objects and status set;
 *  - POLICY_INVALID: validate() errors (and warnings) set, status set (the
 *    policy derives the InvalidSpec condition), objects empty;
 *  - POLICY_EFAIL / _ETIMEOUT / _EMEMORY: err holds one line: the script's
 *    "file:line: message", the budget message, or what is wrong with a
 *    returned value ("render() object 2 (ConfigMap \"x\"): ..."); the
 *    traceback of a runtime error goes to the debug log.
 * `out` must have been initialised; it is reset first.
 */
int policy_eval(struct policy_set *ps, const struct sandbox_limits *lim,
                const struct policy_input *in, struct policy_output *out,
                struct dbuf *err);

#endif
