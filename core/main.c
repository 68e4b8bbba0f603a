/*
 * main: the command line of dittofs-operator. For now only the offline dry
 * run (--script-test); the controller (run mode) comes with its own issue.
 * Exit codes: 0 ok, 1 bad input, 2 usage, 3 invalid spec, 4 policy failure.
 * Uses script_test, sandbox, log.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "script_test.h"

static const char usage_text[] =
    "Usage: dittofs-operator --script-test FILE|- [options]\n"
    "\n"
    "Renders a DittoServer offline exactly as the operator would apply it:\n"
    "CRD defaults and validation as the apiserver does them, then the\n"
    "policy's validate, render and status in the Lua sandbox. FILE is a\n"
    "DittoServer (YAML or JSON), optionally followed by observed children\n"
    "in the same YAML stream; - reads standard input.\n"
    "\n"
    "Options:\n"
    "  --script-test FILE|-   dry run (the only mode so far)\n"
    "  --output yaml|json     output format (default yaml: the objects,\n"
    "                         then the DittoServer status, as documents;\n"
    "                         json: {\"objects\": [...], \"status\": {...}})\n"
    "  --policies DIR         policies from DIR (must hold dittoserver.lua)\n"
    "                         instead of the embedded ones\n"
    "  --cluster-domain NAME  cluster DNS domain (default cluster.local)\n"
    "  --policy-timeout MS    time budget of each policy call in ms\n"
    "                         (default 100)\n"
    "  --policy-memory MIB    memory cap of one evaluation in MiB\n"
    "                         (default 32)\n"
    "  --help                 this text\n"
    "  --version              print the version\n"
    "\n"
    "Exit status: 0 ok, 1 bad input (unreadable, malformed, not a\n"
    "DittoServer), 2 usage, 3 invalid spec (every message names its\n"
    "field), 4 policy failure (file:line and message, timeout, memory\n"
    "cap, unusable output). Nothing is printed on standard output unless\n"
    "the exit status is 0.\n";

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

static volatile unsigned watchdog_ms;

/*
 * Backstop for what the sandbox cannot interrupt: a single C function that
 * runs for long (pattern backtracking). Only async-signal-safe calls.
 */
static void watchdog(int sig)
{
    (void)sig;
    static const char msg[] =
        "policy timeout: the evaluation did not return (stuck inside a "
        "library function such as a pattern match); killed by the "
        "watchdog\n";
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
    watchdog_ms = ms;
    setitimer(ITIMER_REAL, &it, NULL);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "dittofs-operator: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'dittofs-operator --help'.\n");
    return SCRIPT_TEST_EUSAGE;
}

int main(int argc, char **argv)
{
    enum {
        OPT_SCRIPT_TEST = 1,
        OPT_OUTPUT,
        OPT_POLICIES,
        OPT_CLUSTER_DOMAIN,
        OPT_TIMEOUT,
        OPT_MEMORY,
        OPT_HELP,
        OPT_VERSION,
    };
    static const struct option opts[] = {
        {"script-test", required_argument, NULL, OPT_SCRIPT_TEST},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"policies", required_argument, NULL, OPT_POLICIES},
        {"cluster-domain", required_argument, NULL, OPT_CLUSTER_DOMAIN},
        {"policy-timeout", required_argument, NULL, OPT_TIMEOUT},
        {"policy-memory", required_argument, NULL, OPT_MEMORY},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    static const char *const ms_suffix[] = {"ms", "s", NULL};
    static const unsigned long ms_mul[] = {1, 1000};
    static const char *const mib_suffix[] = {"Mi", "MiB", "M", NULL};
    static const unsigned long mib_mul[] = {1, 1, 1};
    struct script_test_options o;
    memset(&o, 0, sizeof(o));
    o.limits.timeout_ms = SANDBOX_DEFAULT_TIMEOUT_MS;
    o.limits.memory_bytes = SANDBOX_DEFAULT_MEMORY;
    unsigned long v;
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_SCRIPT_TEST:
            o.file = optarg;
            break;
        case OPT_OUTPUT:
            if (strcmp(optarg, "json") == 0)
                o.json = 1;
            else if (strcmp(optarg, "yaml") == 0)
                o.json = 0;
            else
                return usage_error("--output must be yaml or json, not '%s'",
                                   optarg);
            break;
        case OPT_POLICIES:
            o.policies_dir = optarg;
            break;
        case OPT_CLUSTER_DOMAIN:
            if (*optarg == '\0')
                return usage_error("--cluster-domain must not be empty%s", "");
            o.cluster_domain = optarg;
            break;
        case OPT_TIMEOUT:
            if (parse_amount(optarg, 600000, &v, ms_suffix, ms_mul) != 0)
                return usage_error("--policy-timeout: '%s' is not a number "
                                   "of milliseconds (1..600000)",
                                   optarg);
            o.limits.timeout_ms = (unsigned)v;
            break;
        case OPT_MEMORY:
            if (parse_amount(optarg, 4096, &v, mib_suffix, mib_mul) != 0)
                return usage_error("--policy-memory: '%s' is not a number "
                                   "of MiB (1..4096)",
                                   optarg);
            o.limits.memory_bytes = (size_t)v << 20;
            break;
        case OPT_HELP:
            fputs(usage_text, stdout);
            return 0;
        case OPT_VERSION:
            printf("dittofs-operator %s\n", DITTOFS_VERSION);
            return 0;
        default:
            return usage_error("unknown or incomplete option '%s'",
                               argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (o.file == NULL) {
        fprintf(stderr,
                "dittofs-operator: run mode (the controller) is not "
                "implemented yet; use --script-test FILE (see --help)\n");
        return SCRIPT_TEST_EUSAGE;
    }

    /* Three policy calls plus a generous margin for everything else. */
    arm_watchdog(3 * o.limits.timeout_ms + 2000);

    struct dbuf out, errs;
    dbuf_init(&out, (size_t)64 << 20);
    dbuf_init(&errs, (size_t)4 << 20);
    int code = script_test_run(&o, &out, &errs);
    arm_watchdog(0);
    fwrite(dbuf_ptr(&errs), 1, dbuf_len(&errs), stderr);
    if (code == SCRIPT_TEST_OK) {
        fwrite(dbuf_ptr(&out), 1, dbuf_len(&out), stdout);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            perror("dittofs-operator: stdout");
            code = SCRIPT_TEST_EINPUT;
        }
    }
    dbuf_free(&out);
    dbuf_free(&errs);
    return code;
}
