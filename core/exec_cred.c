/*
 * exec_cred: the exec credential plugin runner; see exec_cred.h. Mirrors
 * client-go's plugin/pkg/client/auth/exec: non-interactive, the plugin's
 * stderr goes to ours, its stdout is the ExecCredential.
 */
#define _GNU_SOURCE /* explicit_bzero,                                         \
                       posix_spawn_file_actions_addclosefrom_np, pipe2, timegm \
                     */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "dbuf.h"
#include "exec_cred.h"
#include "loop.h"

extern char **environ;

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void exec_cred_result_free(struct exec_cred_result *r)
{
    wipe_free(r->token);
    wipe_free(r->cert);
    wipe_free(r->key);
    memset(r, 0, sizeof *r);
}

void exec_cred_config_free(struct exec_cred_config *cfg)
{
    free(cfg->command);
    for (size_t i = 0; i < cfg->nargs; i++)
        free(cfg->args[i]);
    free(cfg->args);
    for (size_t i = 0; i < cfg->nenv; i++)
        wipe_free(cfg->env[i]); /* env values may be secrets */
    free(cfg->env);
    free(cfg->api_version);
    free(cfg->install_hint);
    free(cfg->cluster_json);
    memset(cfg, 0, sizeof *cfg);
}

static int two(const char *s)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

int exec_cred_parse_time(const char *s, time_t *out)
{
    struct tm tm;
    int y1, y2, mo, d, h, mi, sec, off = 0;
    if (strlen(s) < 20)
        return -1;
    y1 = two(s);
    y2 = two(s + 2);
    mo = two(s + 5);
    d = two(s + 8);
    h = two(s + 11);
    mi = two(s + 14);
    sec = two(s + 17);
    if (y1 < 0 || y2 < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 ||
        h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60 || s[4] != '-' ||
        s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return -1;
    s += 19;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -1;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int oh = two(s + 1), om = s[1] && s[2] && s[3] == ':' ? two(s + 4) : -1;
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        off = (oh * 60 + om) * 60 * (*s == '-' ? -1 : 1);
        s += 6;
    } else {
        return -1;
    }
    if (*s != '\0')
        return -1;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y1 * 100 + y2 - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = timegm(&tm) - off;
    return 0;
}

/* Wipes the secret strings of `status` before cJSON frees them. */
static void wipe_status(cJSON *status)
{
    static const char *const keys[] = {"token", "clientCertificateData",
                                       "clientKeyData"};
    for (size_t i = 0; i < 3; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(status, keys[i]);
        if (cJSON_IsString(v) && v->valuestring != NULL)
            explicit_bzero(v->valuestring, strlen(v->valuestring));
    }
}

static int no_ctl(const char *t)
{
    for (; *t; t++)
        if ((unsigned char)*t < 0x20 || *t == 0x7f)
            return 0;
    return 1;
}

int exec_cred_parse(const char *json, size_t len, const char *api_version,
                    const char *plugin, struct exec_cred_result *out, char *err,
                    size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len), *status = NULL;
    const char *why = NULL;
    int rc = -1;

    memset(out, 0, sizeof *out);
    if (root == NULL || !cJSON_IsObject(root)) {
        why = "output is not a JSON object";
        goto done;
    }
    cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    cJSON *api = cJSON_GetObjectItemCaseSensitive(root, "apiVersion");
    status = cJSON_GetObjectItemCaseSensitive(root, "status");
    if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "ExecCredential")) {
        why = "output is not an ExecCredential (kind)";
        goto done;
    }
    if (!cJSON_IsString(api) || strcmp(api->valuestring, api_version) != 0) {
        snprintf(err, errlen,
                 "exec plugin \"%s\": output apiVersion is %s%.80s%s, "
                 "expected %s",
                 plugin, cJSON_IsString(api) ? "\"" : "",
                 cJSON_IsString(api) ? api->valuestring : "missing",
                 cJSON_IsString(api) ? "\"" : "", api_version);
        goto done;
    }
    if (!cJSON_IsObject(status)) {
        why = "output has no status object";
        goto done;
    }
    cJSON *tok = cJSON_GetObjectItemCaseSensitive(status, "token");
    cJSON *crt =
        cJSON_GetObjectItemCaseSensitive(status, "clientCertificateData");
    cJSON *key = cJSON_GetObjectItemCaseSensitive(status, "clientKeyData");
    cJSON *exp =
        cJSON_GetObjectItemCaseSensitive(status, "expirationTimestamp");
    int has_tok = cJSON_IsString(tok) && tok->valuestring[0] != '\0';
    int has_crt = cJSON_IsString(crt) && crt->valuestring[0] != '\0';
    int has_key = cJSON_IsString(key) && key->valuestring[0] != '\0';
    if ((tok != NULL && !cJSON_IsString(tok) && !cJSON_IsNull(tok)) ||
        (crt != NULL && !cJSON_IsString(crt) && !cJSON_IsNull(crt)) ||
        (key != NULL && !cJSON_IsString(key) && !cJSON_IsNull(key))) {
        why = "status.token, clientCertificateData and clientKeyData must "
              "be strings";
        goto done;
    }
    if (has_crt != has_key) {
        why = has_crt ? "status has clientCertificateData without "
                        "clientKeyData"
                      : "status has clientKeyData without "
                        "clientCertificateData";
        goto done;
    }
    if (!has_tok && !has_crt) {
        why = "status has neither a token nor clientCertificateData and "
              "clientKeyData";
        goto done;
    }
    if (has_tok && !no_ctl(tok->valuestring)) {
        why = "status.token contains control characters";
        goto done;
    }
    if (exp != NULL && !cJSON_IsNull(exp)) {
        if (!cJSON_IsString(exp) ||
            exec_cred_parse_time(exp->valuestring, &out->expiry) < 0) {
            why = "status.expirationTimestamp is not an RFC 3339 time";
            goto done;
        }
    }
    if ((has_tok && (out->token = strdup(tok->valuestring)) == NULL) ||
        (has_crt && (out->cert = strdup(crt->valuestring)) == NULL) ||
        (has_key && (out->key = strdup(key->valuestring)) == NULL)) {
        why = "out of memory";
        goto done;
    }
    rc = 0;
done:
    if (why != NULL)
        snprintf(err, errlen, "exec plugin \"%s\": %s", plugin, why);
    if (rc < 0)
        exec_cred_result_free(out);
    if (cJSON_IsObject(status))
        wipe_status(status);
    cJSON_Delete(root);
    return rc;
}

/* environ, minus names that cfg->env sets, plus cfg->env, plus
 * KUBERNETES_EXEC_INFO. Borrowed pointers except `info` (owned). */
static char **build_env(const struct exec_cred_config *cfg, char *info)
{
    size_t n = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + cfg->nenv + 2, sizeof *envp);
    if (envp == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        size_t nl = strcspn(e, "=");
        int drop = strncmp(e, "KUBERNETES_EXEC_INFO=", 21) == 0;
        for (size_t j = 0; j < cfg->nenv && !drop; j++)
            drop = strncmp(e, cfg->env[j], nl + 1) == 0;
        if (!drop)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < cfg->nenv; j++)
        envp[k++] = cfg->env[j];
    envp[k++] = info;
    envp[k] = NULL;
    return envp;
}

/*
 * A command with a slash is used as is; a bare name is searched in $PATH
 * (an empty entry is the current directory). Returns a malloc'd path of an
 * executable file, or NULL with errno ENOENT, EACCES or ENOMEM.
 */
static char *resolve_command(const char *cmd)
{
    const char *path = getenv("PATH");
    int saw_eacces = 0;
    if (strchr(cmd, '/') != NULL) {
        if (access(cmd, X_OK) != 0)
            return NULL;
        return strdup(cmd);
    }
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path;; p++) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *full = NULL;
        if (asprintf(&full, "%.*s%s%s", (int)len, p, len ? "/" : "", cmd) < 0)
            return NULL;
        struct stat st;
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
            if (access(full, X_OK) == 0)
                return full;
            saw_eacces = 1;
        }
        free(full);
        if (end == NULL)
            break;
        p = end;
    }
    errno = saw_eacces ? EACCES : ENOENT;
    return NULL;
}

/* --- spawning (shared by the blocking and the loop runner) ---------------- */

/*
 * Starts the plugin: stdin /dev/null, stdout a pipe whose read end (close-
 * on-exec, non-blocking when `nonblock`) goes to *fd, our stderr, the env
 * of build_env, in a process group of its own so that a kill at the
 * deadline also reaches what it started (a shell script's `sleep`).
 * Returns 0 with *pid and *fd set, or -1 with err set (nothing to reap).
 */
static int spawn_plugin(const struct exec_cred_config *cfg, int nonblock,
                        pid_t *pid, int *fd, char *err, size_t errlen)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    char *info = NULL, **argv = NULL, **envp = NULL, *resolved = NULL;
    int pipefd[2] = {-1, -1}, rc = -1, fa_ok = 0, attr_ok = 0;
    const char *name = cfg->command;

    if (asprintf(
            &info,
            "KUBERNETES_EXEC_INFO={\"kind\":\"ExecCredential\","
            "\"apiVersion\":\"%s\",\"spec\":{%s%s%s\"interactive\":false}}",
            cfg->api_version, cfg->cluster_json ? "\"cluster\":" : "",
            cfg->cluster_json ? cfg->cluster_json : "",
            cfg->cluster_json ? "," : "") < 0) {
        info = NULL;
        snprintf(err, errlen, "exec plugin \"%s\": out of memory", name);
        goto done;
    }
    argv = calloc(cfg->nargs + 2, sizeof *argv);
    envp = build_env(cfg, info);
    if (argv == NULL || envp == NULL) {
        snprintf(err, errlen, "exec plugin \"%s\": out of memory", name);
        goto done;
    }
    argv[0] = cfg->command;
    for (size_t i = 0; i < cfg->nargs; i++)
        argv[i + 1] = cfg->args[i];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "exec plugin \"%s\": pipe: %s", name,
                 strerror(errno));
        goto done;
    }
    if (nonblock && fcntl(pipefd[0], F_SETFL, O_NONBLOCK) < 0) {
        snprintf(err, errlen, "exec plugin \"%s\": fcntl: %s", name,
                 strerror(errno));
        goto done;
    }
    if (posix_spawn_file_actions_init(&fa) != 0 ||
        posix_spawnattr_init(&attr) != 0) {
        snprintf(err, errlen, "exec plugin \"%s\": out of memory", name);
        goto done;
    }
    fa_ok = attr_ok = 1;
    /* Non-interactive: no stdin. Our stderr is inherited (the plugin's
     * messages reach the operator log). Nothing else leaks into it. */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGCHLD);
    if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) !=
            0 ||
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1) != 0 ||
        posix_spawn_file_actions_addclosefrom_np(&fa, 3) != 0 ||
        posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &dfl) != 0 ||
        posix_spawnattr_setpgroup(&attr, 0) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF |
                                            POSIX_SPAWN_SETPGROUP) != 0) {
        snprintf(err, errlen, "exec plugin \"%s\": spawn setup failed", name);
        goto done;
    }
    /* Resolve the program ourselves: the error is then the same whatever
     * posix_spawn does when exec fails in the child. */
    resolved = resolve_command(cfg->command);
    int se = resolved == NULL
                 ? errno
                 : posix_spawn(pid, resolved, &fa, &attr, argv, envp);
    if (se != 0) {
        snprintf(err, errlen, "exec plugin \"%s\": %s%s%s", name,
                 se == ENOENT   ? "executable not found"
                 : se == EACCES ? "not executable"
                                : strerror(se),
                 cfg->install_hint ? "\n" : "",
                 cfg->install_hint ? cfg->install_hint : "");
        goto done;
    }
    *fd = pipefd[0];
    pipefd[0] = -1;
    rc = 0;
done:
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    free(argv);
    free(envp);
    free(info);
    free(resolved);
    return rc;
}

/* Kills the plugin's process group (and the plugin, should it have left
 * the group) and reaps the plugin. Only while it is not reaped yet: until
 * then its pid, which is also the group id, cannot be reused. A SIGKILLed
 * child is reaped at once, so the wait does not block for long. */
static void kill_and_reap(pid_t pid)
{
    int status;
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* Appends `n` bytes of output. Returns 0, or -1 with err set. */
static int add_output(struct dbuf *buf, char *chunk, size_t n, const char *name,
                      char *err, size_t errlen)
{
    int ar = dbuf_add(buf, chunk, n);
    explicit_bzero(chunk, n);
    if (ar == DBUF_OK)
        return 0;
    snprintf(err, errlen, "exec plugin \"%s\": %s", name,
             ar == DBUF_TOOBIG ? "output larger than 1 MiB" : "out of memory");
    return -1;
}

/* The verdict on a reaped plugin: its exit status, then its output.
 * Returns 0 and fills *out, or -1 with err set. */
static int judge(const struct exec_cred_config *cfg, int status,
                 const struct dbuf *buf, struct exec_cred_result *out,
                 char *err, size_t errlen)
{
    const char *name = cfg->command;
    if (WIFSIGNALED(status)) {
        snprintf(err, errlen, "exec plugin \"%s\": killed by signal %d", name,
                 WTERMSIG(status));
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, errlen,
                 "exec plugin \"%s\": exited with status %d (its stderr, if "
                 "any, is above)",
                 name, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return -1;
    }
    return exec_cred_parse(dbuf_ptr(buf), dbuf_len(buf), cfg->api_version, name,
                           out, err, errlen);
}

static void wipe_dbuf(struct dbuf *buf)
{
    if (buf->ptr != NULL)
        explicit_bzero(buf->ptr, buf->len);
    dbuf_free(buf);
}

/* --- the blocking runner ------------------------------------------------- */

static long elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000L +
           (now.tv_nsec - start->tv_nsec) / 1000000L;
}

int exec_cred_run(const struct exec_cred_config *cfg,
                  struct exec_cred_result *out, char *err, size_t errlen)
{
    struct timespec start;
    struct dbuf buf;
    int fd = -1, status = 0, rc = -1, spawned = 0;
    pid_t pid = -1;
    const char *name = cfg->command;

    dbuf_init(&buf, EXEC_CRED_OUTPUT_MAX);
    if (spawn_plugin(cfg, 0, &pid, &fd, err, errlen) < 0)
        goto done;
    spawned = 1;

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        char chunk[4096];
        long left = cfg->timeout_ms - elapsed_ms(&start);
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0) {
            snprintf(err, errlen, "exec plugin \"%s\": timed out after %d ms",
                     name, cfg->timeout_ms);
            goto done;
        }
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            snprintf(err, errlen, "exec plugin \"%s\": poll: %s", name,
                     strerror(errno));
            goto done;
        }
        if (pr == 0)
            continue; /* the deadline check above reports it */
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            snprintf(err, errlen, "exec plugin \"%s\": read: %s", name,
                     strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        if (add_output(&buf, chunk, (size_t)n, name, err, errlen) < 0)
            goto done;
    }
    /* stdout closed; the plugin should exit now. Keep to the deadline. */
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            snprintf(err, errlen, "exec plugin \"%s\": waitpid: %s", name,
                     strerror(errno));
            spawned = 0; /* nothing left to reap */
            goto done;
        }
        if (elapsed_ms(&start) >= cfg->timeout_ms) {
            snprintf(err, errlen, "exec plugin \"%s\": timed out after %d ms",
                     name, cfg->timeout_ms);
            goto done;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    spawned = 0;
    rc = judge(cfg, status, &buf, out, err, errlen);
done:
    if (spawned) /* failed while it ran: no zombie is left */
        kill_and_reap(pid);
    if (fd >= 0)
        close(fd);
    wipe_dbuf(&buf);
    return rc;
}

/* --- the runner on the event loop ---------------------------------------- */

/*
 * A job reads the plugin's stdout from an fd watch, so the loop never
 * waits for the plugin. After EOF the plugin is reaped with
 * waitpid(WNOHANG), polled from a timer at 1, 2, 4 ... 64 ms (a plugin
 * exits right after closing its stdout, so the first poll nearly always
 * finds it); no SIGCHLD handler is installed and no other child is waited
 * for. The deadline timer kills it. Every end goes through job_end(),
 * which frees the job before it calls done, so done may start another.
 */
struct exec_cred_job {
    struct loop *l;
    const struct exec_cred_config *cfg; /* borrowed */
    exec_cred_done_fn done;
    void *arg;
    pid_t pid; /* -1 once reaped */
    int fd;    /* -1 after EOF */
    struct dbuf buf;
    struct loop_timer deadline;
    struct loop_timer reap;
    unsigned reap_ms;
};

/* Stops everything and frees the job; kills and reaps a running plugin. */
static void job_free(struct exec_cred_job *j)
{
    loop_timer_stop(j->l, &j->deadline);
    loop_timer_stop(j->l, &j->reap);
    if (j->fd >= 0) {
        loop_fd_del(j->l, j->fd);
        close(j->fd);
    }
    if (j->pid > 0)
        kill_and_reap(j->pid);
    wipe_dbuf(&j->buf);
    free(j);
}

/* Ends the job with rc, the result in *res (rc 0) or the error `err`. */
static void job_end(struct exec_cred_job *j, int rc,
                    struct exec_cred_result *res, const char *err)
{
    exec_cred_done_fn done = j->done;
    void *arg = j->arg;
    job_free(j);
    done(rc, res, rc < 0 ? err : "", arg);
}

static void job_fail(struct exec_cred_job *j, const char *err)
{
    job_end(j, -1, NULL, err);
}

/* The plugin was reaped with `status`: judge it. */
static void job_reaped(struct exec_cred_job *j, int status)
{
    struct exec_cred_result r;
    char err[512];
    j->pid = -1;
    memset(&r, 0, sizeof r);
    int rc = judge(j->cfg, status, &j->buf, &r, err, sizeof err);
    job_end(j, rc, rc == 0 ? &r : NULL, err);
    exec_cred_result_free(&r); /* whatever done left in it */
}

static void job_try_reap(struct exec_cred_job *j)
{
    char err[512];
    int status = 0;
    pid_t w;
    do
        w = waitpid(j->pid, &status, WNOHANG);
    while (w < 0 && errno == EINTR);
    if (w == j->pid) {
        job_reaped(j, status);
        return;
    }
    if (w < 0) {
        /* ECHILD: someone else reaped it (SIGCHLD set to SIG_IGN?). */
        snprintf(err, sizeof err, "exec plugin \"%s\": waitpid: %s",
                 j->cfg->command, strerror(errno));
        j->pid = -1; /* nothing left to reap */
        job_fail(j, err);
        return;
    }
    if (loop_timer_start(j->l, &j->reap, j->reap_ms) < 0) {
        snprintf(err, sizeof err, "exec plugin \"%s\": out of memory",
                 j->cfg->command);
        job_fail(j, err);
        return;
    }
    if (j->reap_ms < 64)
        j->reap_ms *= 2;
}

static void on_reap(struct loop_timer *t, void *arg)
{
    (void)t;
    job_try_reap(arg);
}

static void on_deadline(struct loop_timer *t, void *arg)
{
    struct exec_cred_job *j = arg;
    char err[512];
    (void)t;
    snprintf(err, sizeof err, "exec plugin \"%s\": timed out after %d ms",
             j->cfg->command, j->cfg->timeout_ms);
    job_fail(j, err);
}

/* stdout is readable (or closed): take what is there without blocking. */
static void on_output(int fd, short revents, void *arg)
{
    struct exec_cred_job *j = arg;
    char chunk[4096], err[512];
    (void)revents;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            snprintf(err, sizeof err, "exec plugin \"%s\": read: %s",
                     j->cfg->command, strerror(errno));
            job_fail(j, err);
            return;
        }
        if (n == 0)
            break;
        if (add_output(&j->buf, chunk, (size_t)n, j->cfg->command, err,
                       sizeof err) < 0) {
            job_fail(j, err);
            return;
        }
    }
    loop_fd_del(j->l, j->fd);
    close(j->fd);
    j->fd = -1;
    j->reap_ms = 1;
    job_try_reap(j);
}

int exec_cred_start(struct loop *l, const struct exec_cred_config *cfg,
                    exec_cred_done_fn done, void *arg,
                    struct exec_cred_job **out, char *err, size_t errlen)
{
    struct exec_cred_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        snprintf(err, errlen, "exec plugin \"%s\": out of memory",
                 cfg->command);
        return -1;
    }
    j->l = l;
    j->cfg = cfg;
    j->done = done;
    j->arg = arg;
    j->pid = -1;
    j->fd = -1;
    dbuf_init(&j->buf, EXEC_CRED_OUTPUT_MAX);
    loop_timer_init(&j->deadline, on_deadline, j);
    loop_timer_init(&j->reap, on_reap, j);
    if (spawn_plugin(cfg, 1, &j->pid, &j->fd, err, errlen) < 0) {
        j->pid = -1;
        job_free(j);
        return -1;
    }
    int rc = loop_fd_add(l, j->fd, POLLIN, on_output, j);
    if (rc < 0) { /* not watched: job_free must not unwatch it */
        close(j->fd);
        j->fd = -1;
    } else {
        rc = loop_timer_start(l, &j->deadline, (uint64_t)cfg->timeout_ms);
    }
    if (rc < 0) {
        snprintf(err, errlen, "exec plugin \"%s\": cannot watch it: %s",
                 cfg->command, strerror(-rc));
        job_free(j);
        return -1;
    }
    *out = j;
    return 0;
}

void exec_cred_cancel(struct exec_cred_job *j)
{
    if (j != NULL)
        job_free(j);
}
