/*
 * script_test: `dittofs-operator --script-test FILE`, the offline dry run.
 * Reads a DittoServer (with, optionally, observed children and Pods in
 * the same YAML stream or JSON list), applies the CRD as the apiserver
 * would (crd), evaluates the policy (policy) and renders what the operator
 * would apply, then the derived status, as multi-document YAML or as one
 * JSON object {"objects": [...], "status": {...}}. Everything is buffered:
 * the caller prints `out` only when the exit code is 0.
 * Uses crd, policy, sandbox, ljson, lyaml, kinds, dbuf.
 */
#ifndef DITTOFS_SCRIPT_TEST_H
#define DITTOFS_SCRIPT_TEST_H

#include "dbuf.h"
#include "sandbox.h"

/* Exit codes (contracts.md). */
enum script_test_exit {
    SCRIPT_TEST_OK = 0,
    SCRIPT_TEST_EINPUT = 1,   /* unreadable, malformed, not a DittoServer */
    SCRIPT_TEST_EUSAGE = 2,   /* bad command line (main.c) */
    SCRIPT_TEST_EINVALID = 3, /* CRD schema violations, validate() errors */
    SCRIPT_TEST_EPOLICY = 4,  /* policy error, timeout, memory, garbage */
};

/* Largest input accepted. */
#define SCRIPT_TEST_MAX_INPUT ((size_t)16 << 20)

struct script_test_options {
    const char *file;           /* path, or "-" for stdin */
    int json;                   /* --output json */
    const char *policies_dir;   /* NULL = the embedded policies */
    const char *cluster_domain; /* NULL = "cluster.local" */
    struct sandbox_limits limits;
    /* --diff (script_diff.h): the input is this JSON list (`file` only
     * names it in messages), and its DittoServer is a live one: its
     * metadata and status are kept as they are, not reset as on create. */
    const char *input;
    size_t input_len;
    int live;
};

/*
 * Runs the dry run. Appends the whole standard output to `out` (only when
 * the result is SCRIPT_TEST_OK; otherwise out is left empty) and every
 * message for standard error to `errs`, one per line: each validation
 * error names its field, warnings start with "Warning: ". Returns a
 * script_test_exit code. Never raises, never exits.
 */
int script_test_run(const struct script_test_options *o, struct dbuf *out,
                    struct dbuf *errs);

/*
 * Reads `file` ("-": standard input, at most SCRIPT_TEST_MAX_INPUT) and
 * pushes its documents as one Lua list (a JSON object or list, else a YAML
 * stream), exactly as script_test_run reads its input. Returns 0, or
 * SCRIPT_TEST_EINPUT with the message in errs and nothing pushed.
 */
struct lua_State;
int script_test_read_docs(struct lua_State *L, const char *file,
                          struct dbuf *errs);

#endif
