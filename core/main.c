/*
 * main: the command line of dittofs-operator: run mode (the controller,
 * without a mode flag), the offline dry run (--script-test) and a cluster
 * diagnostic (--check-cluster). Every setting flag also reads its default
 * from $DITTOFS_OPERATOR_<FLAG> (the flag table below).
 * Exit codes: 0 ok, 1 bad input (run mode: fatal, e.g. leadership lost),
 * 2 usage, 3 invalid spec, 4 policy failure, 5 cannot connect or
 * authenticate, 6 the DittoServer CRD is missing, 7 cannot bind the
 * metrics/health addresses.
 * Uses operator, script_test, check_cluster, policy, reload, sandbox, log.
 */
#include <ctype.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cache.h"
#include "check_cluster.h"
#include "log.h"
#include "operator.h"
#include "policy.h"
#include "reload.h"
#include "script_diff.h"
#include "script_test.h"

static const char usage_head[] =
    "Usage: dittofs-operator [options]\n"
    "       dittofs-operator --script-test FILE|- [options]\n"
    "       dittofs-operator --script-test FILE|- --diff [options]\n"
    "       dittofs-operator --check-cluster [options]\n"
    "\n"
    "Without a mode flag the operator runs: it watches DittoServers and\n"
    "reconciles each into its ConfigMap, Services and StatefulSet by\n"
    "server-side apply, and keeps their status, until SIGTERM or SIGINT.\n"
    "\n"
    "--script-test renders a DittoServer offline exactly as the operator\n"
    "would apply it: CRD defaults and validation as the apiserver does\n"
    "them, then the policy's validate, render and status in the Lua\n"
    "sandbox. FILE is a DittoServer (YAML or JSON), optionally followed by\n"
    "observed children in the same YAML stream; - reads standard input.\n"
    "\n"
    "--diff (with --script-test) reviews a change before it is rolled\n"
    "out: it reads the DittoServer FILE names from the cluster, renders\n"
    "FILE's spec with the given policies against the live children, and\n"
    "prints a unified diff of what the operator would change (server-side\n"
    "apply dry runs, the children it would delete, the status). Read-only.\n"
    "\n"
    "--check-cluster connects to Kubernetes as the operator will, prints\n"
    "where the configuration came from and the server's version, checks\n"
    "that the DittoServer CRD is served, syncs an informer on DittoServers\n"
    "and prints one line per DittoServer (namespace/name, phase, NFS\n"
    "endpoint).\n"
    "\n"
    "Options:\n";

static const char usage_tail[] =
    "\n"
    "A flag marked [$VAR] takes its default from that environment variable\n"
    "when it is set and not empty; the flag on the command line wins.\n"
    "\n"
    "Exit status: 0 ok, 1 bad input (unreadable, malformed, not a\n"
    "DittoServer), 2 usage, 3 invalid spec (every message names its\n"
    "field), 4 policy failure (file:line and message, timeout, memory\n"
    "cap, unusable output), 5 cannot connect or authenticate (kubeconfig,\n"
    "network, TLS, 401/403: the precise message), 6 the DittoServer CRD is\n"
    "not installed, 8 (--diff) something would change. Nothing is printed\n"
    "on standard output unless the exit status is 0 or 8.\n";

/*
 * The flags, in --help order; the index is the getopt value minus one.
 * `env` marks the settings that $DITTOFS_OPERATOR_<NAME> (upper case, '-'
 * as '_') can set; modes and actions are command line only, so that a
 * stray variable cannot switch a deployed operator into another mode.
 * The controller adds its flags here.
 */
enum {
    OPT_SCRIPT_TEST = 1,
    OPT_CHECK_CLUSTER,
    OPT_DIFF,
    OPT_OUTPUT,
    OPT_POLICIES,
    OPT_POLICIES_CONFIGMAP,
    OPT_CLUSTER_DOMAIN,
    OPT_TIMEOUT,
    OPT_MEMORY,
    OPT_KUBECONFIG,
    OPT_CONTEXT,
    OPT_NAMESPACE,
    OPT_QPS,
    OPT_BURST,
    OPT_SELECTOR,
    OPT_WORKERS,
    OPT_RESYNC,
    OPT_LEADER_ELECT,
    OPT_LEADER_NS,
    OPT_LEADER_ID,
    OPT_METRICS_ADDR,
    OPT_HEALTH_ADDR,
    OPT_LOG_FORMAT,
    OPT_LOG_LEVEL,
    OPT_SHUTDOWN,
    OPT_HELP,
    OPT_VERSION,
};

struct flag {
    const char *name;
    const char *arg; /* shown in --help; NULL: the flag takes no argument;
                      * "[=BOOL]": an optional true/false */
    int env;
    const char *help; /* lines separated by '\n' */
};

static const struct flag flags[] = {
    [OPT_SCRIPT_TEST - 1] = {"script-test", "FILE|-", 0, "dry run"},
    [OPT_CHECK_CLUSTER - 1] = {"check-cluster", NULL, 0,
                               "check the connection to Kubernetes and\n"
                               "list the DittoServers"},
    [OPT_DIFF - 1] = {"diff", NULL, 0,
                      "with --script-test: what would change in the\n"
                      "cluster (uses --kubeconfig, --context,\n"
                      "--namespace)"},
    [OPT_OUTPUT - 1] = {"output", "yaml|json", 1,
                        "output format. --script-test: default yaml\n"
                        "(the objects, then the DittoServer status, as\n"
                        "documents), json: {\"objects\": [...],\n"
                        "\"status\": {...}}. --check-cluster: default\n"
                        "text, or the report as yaml or json"},
    [OPT_POLICIES - 1] = {"policies", "DIR", 1,
                          "policies from DIR (must hold dittoserver.lua)\n"
                          "instead of the embedded ones. Run mode:\n"
                          "a DIR without *.lua means the embedded\n"
                          "ones, and a change to DIR (a ConfigMap\n"
                          "volume updated by the kubelet) is reloaded\n"
                          "live when it passes on every DittoServer"},
    [OPT_POLICIES_CONFIGMAP - 1] = {"policies-configmap", "NAME", 1,
                                    "the ConfigMap mounted at --policies\n"
                                    "(NAME or NAMESPACE/NAME):\n"
                                    "Events on it say whether a reload was\n"
                                    "accepted (default NS: the operator's)"},
    [OPT_CLUSTER_DOMAIN - 1] = {"cluster-domain", "NAME", 1,
                                "cluster DNS domain (default cluster.local)"},
    [OPT_TIMEOUT - 1] = {"policy-timeout", "MS", 1,
                         "CPU-time budget of each policy call in ms\n"
                         "(default 100)"},
    [OPT_MEMORY - 1] = {"policy-memory", "MIB", 1,
                        "memory cap of one evaluation in MiB\n"
                        "(default 32)"},
    [OPT_KUBECONFIG - 1] = {"kubeconfig", "FILE", 1,
                            "kubeconfig to use (default $KUBECONFIG,\n"
                            "then ~/.kube/config, then in-cluster)"},
    [OPT_CONTEXT - 1] = {"context", "NAME", 1,
                         "kubeconfig context (default current-context)"},
    [OPT_NAMESPACE - 1] = {"namespace", "NS", 1,
                           "only DittoServers in NS (default all)"},
    [OPT_QPS - 1] = {"kube-api-qps", "N", 1,
                     "client-side rate limit of API requests per\n"
                     "second (default 500)"},
    [OPT_BURST - 1] = {"kube-api-burst", "N", 1,
                       "burst of the rate limit (default 1000)"},
    [OPT_SELECTOR - 1] = {"selector", "LABELS", 1,
                          "only DittoServers matching this label\n"
                          "selector (shard a fleet across operators)"},
    [OPT_WORKERS - 1] = {"workers", "N", 1,
                         "DittoServers reconciled concurrently\n"
                         "(default 8)"},
    [OPT_RESYNC - 1] = {"resync-period", "DURATION", 1,
                        "reconcile every DittoServer this often\n"
                        "(jittered +10%; default 10h; e.g. 30s, 5m)"},
    [OPT_LEADER_ELECT - 1] = {"leader-elect", "[=BOOL]", 1,
                              "elect a leader (a Lease) among replicas;\n"
                              "only the leader writes"},
    [OPT_LEADER_NS - 1] = {"leader-election-namespace", "NS", 1,
                           "namespace of the Lease (default: the\n"
                           "in-cluster or kubeconfig namespace)"},
    [OPT_LEADER_ID - 1] = {"leader-election-id", "NAME", 1,
                           "name of the Lease (default\n"
                           "dittofs-operator-leader)"},
    [OPT_METRICS_ADDR - 1] = {"metrics-bind-address", "ADDR", 1,
                              "serve /metrics here (default :8080;\n"
                              "0 disables)"},
    [OPT_HEALTH_ADDR - 1] = {"health-probe-bind-address", "ADDR", 1,
                             "serve /healthz and /readyz here\n"
                             "(default :8081; 0 disables)"},
    [OPT_LOG_FORMAT - 1] = {"log-format", "text|json", 1,
                            "log line format (default text)"},
    [OPT_LOG_LEVEL - 1] = {"log-level", "LEVEL", 1,
                           "debug, info, warn or error (default info)"},
    [OPT_SHUTDOWN - 1] = {"shutdown-timeout", "DURATION", 1,
                          "on SIGTERM, how long reconciles in flight\n"
                          "may take before they are cancelled\n"
                          "(default 10s)"},
    [OPT_HELP - 1] = {"help", NULL, 0, "this text"},
    [OPT_VERSION - 1] = {"version", NULL, 0, "print the version"},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))
#define ENV_PREFIX "DITTOFS_OPERATOR_"

/* "DITTOFS_OPERATOR_KUBE_API_QPS" for "kube-api-qps" (buf: 96 bytes). */
static void env_name(const struct flag *f, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", ENV_PREFIX, f->name);
    for (char *p = buf + strlen(ENV_PREFIX); *p != '\0'; p++)
        *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
}

/* --help: the head, one entry per flag (help lines in a column, then the
 * environment variable), the tail. */
static void print_usage(FILE *out)
{
    fputs(usage_head, out);
    for (size_t i = 0; i < NFLAGS; i++) {
        const struct flag *f = &flags[i];
        char left[64], env[96];
        snprintf(left, sizeof(left), "--%s%s%s", f->name,
                 f->arg && f->arg[0] != '[' ? " " : "", f->arg ? f->arg : "");
        const char *h = f->help;
        int first = 1;
        while (*h != '\0') {
            const char *nl = strchr(h, '\n');
            int len = nl != NULL ? (int)(nl - h) : (int)strlen(h);
            if (first && strlen(left) > 21)
                fprintf(out, "  %s\n  %-21s  %.*s\n", left, "", len, h);
            else
                fprintf(out, "  %-21s  %.*s\n", first ? left : "", len, h);
            first = 0;
            h += len + (nl != NULL);
        }
        if (f->env) {
            env_name(f, env, sizeof(env));
            fprintf(out, "  %-21s  [$%s]\n", "", env);
        }
    }
    fputs(usage_tail, out);
}

/* Parses a positive integer with an optional unit suffix from `units`
 * (each a suffix and a multiplier); returns 0 or -1. */
static int parse_amount(const char *s, unsigned long max, unsigned long *out,
                        const char *const *suffixes, const unsigned long *mul)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || *s == '-' || *s == '+')
        return -1;
    unsigned long m = 1;
    if (*end) {
        int found = 0;
        for (int i = 0; suffixes[i]; i++)
            if (strcmp(end, suffixes[i]) == 0) {
                m = mul[i];
                found = 1;
            }
        if (!found)
            return -1;
    }
    if (v == 0 || v > max / m)
        return -1;
    *out = v * m;
    return 0;
}

/*
 * Last backstop, should everything else fail: the count hook stops Lua
 * code, and the pattern functions check the deadline themselves (lpattern),
 * but a long C function (string.rep or table.concat up to the memory cap,
 * table.sort) is only caught when it returns, and the host's own work
 * (reading, decoding, the CRD) has no budget at all. Only
 * async-signal-safe calls.
 */
static void watchdog(int sig)
{
    (void)sig;
    static const char msg[] =
        "policy timeout: the evaluation did not return (stuck inside a "
        "library function); killed by the watchdog\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    _exit(SCRIPT_TEST_EPOLICY);
}

static void arm_watchdog(unsigned ms)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = watchdog;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it;
    memset(&it, 0, sizeof(it));
    it.it_value.tv_sec = ms / 1000;
    it.it_value.tv_usec = (ms % 1000) * 1000;
    setitimer(ITIMER_REAL, &it, NULL);
}

/* The environment variable whose value is being applied, for messages;
 * NULL while parsing the command line. */
static const char *from_env;

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "dittofs-operator: ");
    if (from_env != NULL)
        fprintf(stderr, "$%s: ", from_env);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'dittofs-operator --help'.\n");
    return SCRIPT_TEST_EUSAGE;
}

/* What the command line asks for. */
struct cli {
    struct script_test_options st;
    struct check_cluster_options cc;
    struct operator_opts op;
    int check_cluster;
    int output; /* 0: the mode's default, 1: yaml, 2: json */
    int diff;   /* --diff */
};

/* A positive number of requests per second (fractions allowed). */
static int parse_qps(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0) || v > 1e6)
        return -1;
    *out = v;
    return 0;
}

/* A Kubernetes namespace name: an RFC 1123 label ("" means all). */
static int valid_namespace(const char *s)
{
    size_t n = strlen(s);
    if (n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (c != '-' || i == 0 || i == n - 1))
            return 0;
    }
    return 1;
}

/* A ConfigMap "NAME" or "NAMESPACE/NAME": the name a DNS subdomain
 * (lower case letters, digits, '-' and '.', at most 253). */
static int valid_configmap(const char *s)
{
    const char *slash = strchr(s, '/');
    if (slash != NULL) {
        char ns[64];
        size_t n = (size_t)(slash - s);
        if (n == 0 || n >= sizeof(ns))
            return 0;
        memcpy(ns, s, n);
        ns[n] = '\0';
        if (!valid_namespace(ns))
            return 0;
        s = slash + 1;
    }
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && ((c != '-' && c != '.') || i == 0 || i == n - 1))
            return 0;
    }
    return 1;
}

/* A duration: a positive number with a unit ms, s, m or h ("90s", "10h");
 * a bare number is seconds. Returns 0 or -1. */
static int parse_duration(const char *s, uint64_t *out_ms)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0))
        return -1;
    double mul;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (*end == '\0' || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60e3;
    else if (strcmp(end, "h") == 0)
        mul = 3600e3;
    else
        return -1;
    v *= mul;
    if (v < 1 || v > 1e12)
        return -1;
    *out_ms = (uint64_t)v;
    return 0;
}

/* true/false (also 1/0, yes/no); NULL (the bare flag) is true. */
static int parse_bool(const char *s, int *out)
{
    if (s == NULL || strcmp(s, "true") == 0 || strcmp(s, "1") == 0 ||
        strcmp(s, "yes") == 0)
        *out = 1;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0 ||
             strcmp(s, "no") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

/* A listen address: "0" (off), ":PORT", "HOST:PORT" or "[V6]:PORT". */
static int valid_addr(const char *s)
{
    if (strcmp(s, "0") == 0)
        return 1;
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon[1] == '\0')
        return 0;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    return *end == '\0' && port <= 65535;
}

/*
 * Applies one flag (id as in the flag table) with its argument, from the
 * command line or from the environment (from_env set). Returns 0, or the
 * usage exit status after printing the message; --help and --version
 * return -1 after printing (exit 0).
 */
static int apply_flag(struct cli *c, int id, const char *arg)
{
    static const char *const ms_suffix[] = {"ms", "s", NULL};
    static const unsigned long ms_mul[] = {1, 1000};
    static const char *const mib_suffix[] = {"Mi", "MiB", "M", NULL};
    static const unsigned long mib_mul[] = {1, 1, 1};
    static const char *const no_suffix[] = {NULL};
    unsigned long v;

    switch (id) {
    case OPT_SCRIPT_TEST:
        c->st.file = arg;
        break;
    case OPT_DIFF:
        c->diff = 1;
        break;
    case OPT_CHECK_CLUSTER:
        c->check_cluster = 1;
        break;
    case OPT_OUTPUT:
        if (strcmp(arg, "json") == 0)
            c->output = 2;
        else if (strcmp(arg, "yaml") == 0)
            c->output = 1;
        else
            return usage_error("--output must be yaml or json, not '%s'", arg);
        break;
    case OPT_POLICIES:
        c->st.policies_dir = arg;
        break;
    case OPT_POLICIES_CONFIGMAP:
        if (!valid_configmap(arg))
            return usage_error("--policies-configmap: '%s' is not a "
                               "ConfigMap name, or NAMESPACE/NAME",
                               arg);
        c->op.policies_configmap = arg;
        break;
    case OPT_CLUSTER_DOMAIN:
        if (*arg == '\0')
            return usage_error("--cluster-domain must not be empty%s", "");
        c->st.cluster_domain = arg;
        break;
    case OPT_TIMEOUT:
        if (parse_amount(arg, 600000, &v, ms_suffix, ms_mul) != 0)
            return usage_error("--policy-timeout: '%s' is not a number "
                               "of milliseconds (1..600000)",
                               arg);
        c->st.limits.timeout_ms = (unsigned)v;
        break;
    case OPT_MEMORY:
        if (parse_amount(arg, 4096, &v, mib_suffix, mib_mul) != 0)
            return usage_error("--policy-memory: '%s' is not a number "
                               "of MiB (1..4096)",
                               arg);
        c->st.limits.memory_bytes = (size_t)v << 20;
        break;
    case OPT_KUBECONFIG:
        c->cc.kubeconfig = arg;
        break;
    case OPT_CONTEXT:
        c->cc.context = arg;
        break;
    case OPT_NAMESPACE:
        if (!valid_namespace(arg))
            return usage_error("--namespace: '%s' is not a namespace name "
                               "(lower case letters, digits and '-', at "
                               "most 63)",
                               arg);
        c->cc.namespace = arg;
        break;
    case OPT_QPS:
        if (parse_qps(arg, &c->cc.qps) != 0)
            return usage_error("--kube-api-qps: '%s' is not a positive "
                               "number of requests per second",
                               arg);
        break;
    case OPT_BURST:
        if (parse_amount(arg, 1000000, &v, no_suffix, ms_mul) != 0)
            return usage_error("--kube-api-burst: '%s' is not a positive "
                               "integer",
                               arg);
        c->cc.burst = (int)v;
        break;
    case OPT_SELECTOR: {
        struct cache_selector *sel;
        char err[256];
        int rc = cache_selector_parse(arg, &sel, err, sizeof(err));
        if (rc == CACHE_EINVAL)
            return usage_error("--selector: %s", err);
        cache_selector_free(rc == CACHE_OK ? sel : NULL);
        c->op.ctl.selector = arg;
        break;
    }
    case OPT_WORKERS:
        if (parse_amount(arg, 1024, &v, no_suffix, ms_mul) != 0)
            return usage_error("--workers: '%s' is not a number from 1 to "
                               "1024",
                               arg);
        c->op.ctl.workers = (unsigned)v;
        break;
    case OPT_RESYNC:
        if (parse_duration(arg, &c->op.ctl.resync_ms) != 0)
            return usage_error("--resync-period: '%s' is not a duration "
                               "(e.g. 30s, 5m, 10h)",
                               arg);
        break;
    case OPT_LEADER_ELECT:
        if (parse_bool(arg, &c->op.leader_elect) != 0)
            return usage_error("--leader-elect: '%s' is not true or false",
                               arg);
        break;
    case OPT_LEADER_NS:
        if (!valid_namespace(arg) || *arg == '\0')
            return usage_error("--leader-election-namespace: '%s' is not a "
                               "namespace name",
                               arg);
        c->op.leader_ns = arg;
        break;
    case OPT_LEADER_ID:
        if (*arg == '\0' || strlen(arg) > 253)
            return usage_error("--leader-election-id: '%s' is not a Lease "
                               "name",
                               arg);
        c->op.leader_id = arg;
        break;
    case OPT_METRICS_ADDR:
        if (!valid_addr(arg))
            return usage_error("--metrics-bind-address: '%s' is not 0, "
                               ":PORT or HOST:PORT",
                               arg);
        c->op.metrics_addr = arg;
        break;
    case OPT_HEALTH_ADDR:
        if (!valid_addr(arg))
            return usage_error("--health-probe-bind-address: '%s' is not "
                               "0, :PORT or HOST:PORT",
                               arg);
        c->op.health_addr = arg;
        break;
    case OPT_LOG_FORMAT:
        if (strcmp(arg, "json") != 0 && strcmp(arg, "text") != 0)
            return usage_error("--log-format must be text or json, not '%s'",
                               arg);
        log_set_json(strcmp(arg, "json") == 0);
        break;
    case OPT_LOG_LEVEL: {
        enum log_level lvl;
        if (log_parse_level(arg, &lvl) != 0)
            return usage_error("--log-level must be debug, info, warn or "
                               "error, not '%s'",
                               arg);
        log_set_level(lvl);
        break;
    }
    case OPT_SHUTDOWN:
        if (parse_duration(arg, &c->op.shutdown_ms) != 0)
            return usage_error("--shutdown-timeout: '%s' is not a duration",
                               arg);
        break;
    case OPT_HELP:
        print_usage(stdout);
        return -1;
    case OPT_VERSION:
        printf("dittofs-operator %s\n", DITTOFS_VERSION);
        return -1;
    default:
        return usage_error("unknown or incomplete option '%s'", arg);
    }
    return 0;
}

/* Applies $DITTOFS_OPERATOR_<FLAG> of every setting flag that has one set
 * (and not empty), before the command line overrides them. */
static int apply_env(struct cli *c)
{
    char name[96];
    for (size_t i = 0; i < NFLAGS; i++) {
        if (!flags[i].env)
            continue;
        env_name(&flags[i], name, sizeof(name));
        const char *v = getenv(name);
        if (v == NULL || v[0] == '\0')
            continue;
        from_env = name;
        int rc = apply_flag(c, (int)i + 1, v);
        from_env = NULL;
        if (rc != 0)
            return rc;
    }
    return 0;
}

/*
 * Writes what a one-shot mode produced: errs to stderr, then out to stdout
 * when show_out (a failed write of it turns `code` into `write_fail`), and
 * frees both. Returns the exit code.
 */
static int finish_output(struct dbuf *out, struct dbuf *errs, int show_out,
                         int code, int write_fail)
{
    fwrite(dbuf_ptr(errs), 1, dbuf_len(errs), stderr);
    if (show_out) {
        fwrite(dbuf_ptr(out), 1, dbuf_len(out), stdout);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            perror("dittofs-operator: stdout");
            code = write_fail;
        }
    }
    dbuf_free(out);
    dbuf_free(errs);
    return code;
}

static int run_script_test(struct script_test_options *o)
{
    /* Every budget one evaluation may spend, plus a generous margin for
     * everything else. */
    arm_watchdog(POLICY_EVAL_BUDGETS * o->limits.timeout_ms + 2000);

    struct dbuf out, errs;
    dbuf_init(&out, (size_t)64 << 20);
    dbuf_init(&errs, (size_t)4 << 20);
    int code = script_test_run(o, &out, &errs);
    arm_watchdog(0);
    return finish_output(&out, &errs, code == SCRIPT_TEST_OK, code,
                         SCRIPT_TEST_EINPUT);
}

static int run_check_cluster(struct check_cluster_options *o)
{
    struct dbuf out, errs;
    dbuf_init(&out, (size_t)64 << 20);
    dbuf_init(&errs, (size_t)1 << 20);
    int code = check_cluster_run(o, &out, &errs);
    /* The event loop initialised libcurl once (loop_new); everything that
     * used it is gone now, so this is the one matching cleanup. */
    curl_global_cleanup();
    return finish_output(&out, &errs, code == CHECK_CLUSTER_OK, code,
                         CHECK_CLUSTER_EOTHER);
}

static int run_script_diff(struct cli *c)
{
    struct script_diff_options o = {.st = c->st,
                                    .kubeconfig = c->cc.kubeconfig,
                                    .context = c->cc.context,
                                    .namespace = c->cc.namespace,
                                    .qps = c->cc.qps,
                                    .burst = c->cc.burst};
    struct dbuf out, errs;
    dbuf_init(&out, (size_t)64 << 20);
    dbuf_init(&errs, (size_t)4 << 20);
    int code = script_diff_run(&o, &out, &errs);
    curl_global_cleanup(); /* loop_new initialised it */
    /* A diff (8) is printed as well as an empty one (0). */
    return finish_output(&out, &errs, 1, code, SCRIPT_TEST_EINPUT);
}

static int run_operator(struct cli *c)
{
    struct operator_opts *o = &c->op;
    o->kubeconfig = c->cc.kubeconfig;
    o->context = c->cc.context;
    o->qps = c->cc.qps;
    o->burst = c->cc.burst;
    o->policies_dir = c->st.policies_dir;
    o->ctl.namespace = c->cc.namespace;
    o->ctl.cluster_domain = c->st.cluster_domain;
    o->ctl.limits = c->st.limits;
    if (c->output != 0)
        return usage_error("--output applies to --script-test and "
                           "--check-cluster only%s",
                           "");
    int rc = operator_run(o);
    curl_global_cleanup();
    return rc;
}

int main(int argc, char **argv)
{
    struct option opts[NFLAGS + 1];
    struct cli c;
    int opt, rc;

    memset(opts, 0, sizeof(opts));
    for (size_t i = 0; i < NFLAGS; i++) {
        opts[i].name = flags[i].name;
        opts[i].has_arg = flags[i].arg == NULL     ? no_argument
                          : flags[i].arg[0] == '[' ? optional_argument
                                                   : required_argument;
        opts[i].val = (int)i + 1;
    }
    memset(&c, 0, sizeof(c));
    c.st.limits.timeout_ms = SANDBOX_DEFAULT_TIMEOUT_MS;
    c.st.limits.memory_bytes = SANDBOX_DEFAULT_MEMORY;

    rc = apply_env(&c);
    if (rc != 0)
        return rc;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        rc = apply_flag(&c, opt == '?' ? 0 : opt,
                        opt == '?' ? argv[optind - 1] : optarg);
        if (rc != 0)
            return rc < 0 ? 0 : rc;
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (c.st.file != NULL && c.check_cluster)
        return usage_error("--script-test and --check-cluster exclude each "
                           "other%s",
                           "");
    if (c.check_cluster) {
        c.cc.output = c.output == 2   ? CHECK_CLUSTER_JSON
                      : c.output == 1 ? CHECK_CLUSTER_YAML
                                      : CHECK_CLUSTER_TEXT;
        return run_check_cluster(&c.cc);
    }
    if (c.diff && c.st.file == NULL)
        return usage_error("--diff needs --script-test FILE%s", "");
    if (c.diff && c.output != 0)
        return usage_error("--diff prints a unified diff: no --output%s", "");
    if (c.st.file == NULL)
        return run_operator(&c);
    /* As in run mode: a policy directory without *.lua files (the bundle's
     * empty ConfigMap) means the embedded policies. */
    struct reload_print fp;
    if (c.st.policies_dir != NULL &&
        reload_fingerprint(c.st.policies_dir, &fp) == 0 && fp.n_lua == 0) {
        fprintf(stderr,
                "dittofs-operator: %s holds no *.lua file: the embedded "
                "policies\n",
                c.st.policies_dir);
        c.st.policies_dir = NULL;
    }
    if (c.diff)
        return run_script_diff(&c);
    c.st.json = c.output == 2;
    return run_script_test(&c.st);
}
