/*
 * reload: the policy directory watcher (see reload.h).
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "reload.h"
#include "text.h"

/* As deep as policy_set_load() scans (policy.c MAX_DEPTH). */
#define MAX_DEPTH 8

/* Every change of the directory's entries: the kubelet's creations,
 * renames and deletions, and an edit in place (a write, a chmod). The
 * directory itself going away ends the watch (IN_IGNORED follows). */
#define WATCH_MASK                                                             \
    (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE |    \
     IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct reload {
    struct loop *loop;
    char *dir;
    uint64_t debounce_ms, max_delay_ms, poll_ms;
    reload_fn fn;
    void *arg;
    int ifd; /* inotify instance, -1 without */
    int wd;  /* its watch on dir, -1 while there is none */
    struct reload_print last;
    uint64_t burst_start_ms; /* first event of a pending burst; 0: none */
    int committed;           /* the burst renamed "..data" into place */
    struct loop_timer quiet; /* fires when the burst has been quiet */
    struct loop_timer poll;
    struct reload_stats st;
};

/* --- fingerprint ---------------------------------------------------------
 */

/* Adds the *.lua files under root/rel to p (as policy.c scan_dir walks). */
static void scan(const char *root, const char *rel, int depth,
                 struct reload_print *p)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s%s%s", root, *rel ? "/" : "", rel) >=
        (int)sizeof(path))
        return;
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", "..data" and the timestamped dirs */
        char sub[2048], full[4096];
        if (snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "",
                     de->d_name) >= (int)sizeof(sub) ||
            snprintf(full, sizeof(full), "%s/%s", root, sub) >=
                (int)sizeof(full))
            continue;
        struct stat st;
        if (stat(full, &st) != 0) {
            /* A dangling link: the kubelet has renamed ..data into place
             * and not yet removed the links of names that went away. */
            if (depth == 0 && errno == ENOENT)
                p->incomplete = 1;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (depth < MAX_DEPTH)
                scan(root, sub, depth + 1, p);
            continue;
        }
        size_t n = strlen(sub);
        if (!S_ISREG(st.st_mode) || n < 5 || strcmp(sub + n - 4, ".lua") != 0)
            continue;
        uint64_t meta[6] = {
            (uint64_t)st.st_size,         (uint64_t)st.st_mtim.tv_sec,
            (uint64_t)st.st_mtim.tv_nsec, (uint64_t)st.st_ino,
            (uint64_t)st.st_dev,          (uint64_t)st.st_ctim.tv_nsec,
        };
        uint64_t h = text_fnv1a64(TEXT_FNV1A64_INIT, sub, n + 1);
        /* A sum: readdir's order is not fixed. */
        p->hash += text_fnv1a64(h, meta, sizeof(meta));
        p->n_lua++;
    }
    closedir(d);
}

/* A kubelet volume (dir/..data a directory): is every file of ..data
 * linked at the top yet? The kubelet adds the links of new names just
 * after renaming ..data into place. */
static void links_pending(const char *dir, struct reload_print *p)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/..data", dir) >= (int)sizeof(path))
        return;
    DIR *d = opendir(path);
    if (d == NULL)
        return; /* not a ConfigMap volume */
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (de->d_name[0] == '.' || snprintf(path, sizeof(path), "%s/%s", dir,
                                             de->d_name) >= (int)sizeof(path))
            continue;
        if (lstat(path, &st) != 0 && errno == ENOENT) {
            p->incomplete = 1;
            break;
        }
    }
    closedir(d);
}

int reload_fingerprint(const char *dir, struct reload_print *out)
{
    memset(out, 0, sizeof(*out));
    DIR *d = opendir(dir);
    if (d == NULL) {
        out->missing = errno != 0 ? errno : ENOENT;
        return -out->missing;
    }
    closedir(d);
    scan(dir, "", 0, out);
    links_pending(dir, out);
    return 0;
}

int reload_print_equal(const struct reload_print *a,
                       const struct reload_print *b)
{
    return a->hash == b->hash && a->n_lua == b->n_lua &&
           (a->missing != 0) == (b->missing != 0);
}

/* --- the watcher ---------------------------------------------------------
 */

/* The quiet time is over (or the burst lasted max_delay): compare. */
static void on_quiet(struct loop_timer *t, void *arg)
{
    (void)t;
    struct reload *r = arg;
    struct reload_print p;
    reload_fingerprint(r->dir, &p);
    r->st.checks++;
    /* Half an update: wait for the rest (the kubelet's links), but never
     * past max_delay after the burst's first event; then it is judged as
     * it is. */
    uint64_t now = loop_now_ms();
    if (p.incomplete && r->burst_start_ms != 0 &&
        now - r->burst_start_ms < r->max_delay_ms) {
        r->st.incomplete++;
        if (loop_timer_start(r->loop, &r->quiet, RELOAD_COMMIT_DEBOUNCE_MS) ==
            0)
            return;
    }
    r->burst_start_ms = 0;
    r->committed = 0;
    if (reload_print_equal(&p, &r->last))
        return;
    r->last = p;
    r->st.changes++;
    r->fn(r, &p, r->arg);
}

/* Something happened: (re)start the quiet timer, but never past
 * max_delay after the first event of the burst. */
static void pending(struct reload *r)
{
    uint64_t now = loop_now_ms();
    if (r->burst_start_ms == 0)
        r->burst_start_ms = now;
    uint64_t due =
        now + (r->committed ? RELOAD_COMMIT_DEBOUNCE_MS : r->debounce_ms);
    uint64_t latest = r->burst_start_ms + r->max_delay_ms;
    if (due > latest)
        due = latest > now ? latest : now;
    if (loop_timer_start(r->loop, &r->quiet, due - now) != 0)
        log_warn("policy watcher: no timer (out of memory); the poll "
                 "will see the change",
                 NULL);
}

void reload_kick(struct reload *r)
{
    pending(r);
}

static void add_watch(struct reload *r)
{
    r->wd = inotify_add_watch(r->ifd, r->dir, WATCH_MASK);
    if (r->wd < 0)
        log_debug("policy watcher: no inotify watch yet", "dir", r->dir,
                  "error", strerror(errno), NULL);
}

static void on_inotify(int fd, short revents, void *arg)
{
    (void)revents;
    struct reload *r = arg;
    /* Aligned as struct inotify_event requires. */
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int any = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break; /* EAGAIN: drained */
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const void *)p;
            r->st.events++;
            any = 1;
            /* The directory was deleted or unmounted (IN_IGNORED), or
             * renamed (the watch would follow it elsewhere): the poll
             * watches the path for a directory to come back. */
            if (ev->wd == r->wd && (ev->mask & IN_MOVE_SELF) != 0)
                inotify_rm_watch(fd, r->wd);
            if (ev->wd == r->wd && (ev->mask & (IN_IGNORED | IN_MOVE_SELF)))
                r->wd = -1;
            if ((ev->mask & IN_MOVED_TO) != 0 && ev->len > 0 &&
                strcmp(ev->name, "..data") == 0)
                r->committed = 1;
            p += sizeof(*ev) + ev->len;
        }
    }
    if (any)
        pending(r);
}

static void on_poll(struct loop_timer *t, void *arg)
{
    (void)t;
    struct reload *r = arg;
    if (r->ifd >= 0 && r->wd < 0) {
        add_watch(r);
        if (r->wd >= 0)
            log_info("policy watcher: watching the directory again", "dir",
                     r->dir, NULL);
    }
    struct reload_print p;
    reload_fingerprint(r->dir, &p);
    r->st.polls++;
    /* A difference goes through the quiet time like an event: the poll
     * may catch a directory in the middle of an edit. */
    if (!reload_print_equal(&p, &r->last) && r->burst_start_ms == 0)
        pending(r);
    loop_timer_start(r->loop, &r->poll, r->poll_ms);
}

struct reload *reload_new(struct loop *l, const char *dir,
                          const struct reload_print *base,
                          const struct reload_opts *o, reload_fn fn, void *arg)
{
    struct reload *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->dir = strdup(dir);
    if (r->dir == NULL) {
        free(r);
        return NULL;
    }
    static const struct reload_opts none;
    if (o == NULL)
        o = &none;
    r->loop = l;
    r->fn = fn;
    r->arg = arg;
    r->debounce_ms =
        o->debounce_ms ? o->debounce_ms : RELOAD_DEFAULT_DEBOUNCE_MS;
    r->max_delay_ms =
        o->max_delay_ms ? o->max_delay_ms : RELOAD_DEFAULT_MAX_DELAY_MS;
    if (base != NULL)
        r->last = *base;
    else
        reload_fingerprint(dir, &r->last);
    loop_timer_init(&r->quiet, on_quiet, r);
    loop_timer_init(&r->poll, on_poll, r);

    r->ifd = -1;
    r->wd = -1;
    if (!o->no_inotify) {
        r->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (r->ifd < 0) {
            log_warn("policy watcher: no inotify; polling only", "error",
                     strerror(errno), NULL);
        } else if (loop_fd_add(l, r->ifd, POLLIN, on_inotify, r) != 0) {
            close(r->ifd);
            r->ifd = -1;
            log_warn("policy watcher: cannot watch the inotify descriptor; "
                     "polling only",
                     NULL);
        } else {
            add_watch(r);
        }
    }
    r->poll_ms = o->poll_ms    ? o->poll_ms
                 : r->ifd >= 0 ? RELOAD_DEFAULT_POLL_INOTIFY_MS
                               : RELOAD_DEFAULT_POLL_MS;
    if (loop_timer_start(l, &r->poll, r->poll_ms) != 0) {
        reload_free(r);
        return NULL;
    }
    return r;
}

void reload_free(struct reload *r)
{
    if (r == NULL)
        return;
    loop_timer_stop(r->loop, &r->quiet);
    loop_timer_stop(r->loop, &r->poll);
    if (r->ifd >= 0) {
        loop_fd_del(r->loop, r->ifd);
        close(r->ifd); /* removes the watch with it */
    }
    free(r->dir);
    free(r);
}

int reload_inotify(const struct reload *r)
{
    return r->ifd >= 0 && r->wd >= 0;
}

void reload_get_stats(const struct reload *r, struct reload_stats *out)
{
    *out = r->st;
}
