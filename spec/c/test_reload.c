/*
 * test_reload: the policy directory watcher (core/reload.c) on a real loop
 * and real directories: the fingerprint, a ConfigMap volume updated
 * exactly as the kubelet's AtomicWriter does it (new timestamped
 * directory, "..data_tmp" renamed over "..data", visible links added and
 * removed, the old directory deleted), the quiet time and its upper bound,
 * the poll without inotify, an emptied volume, a directory that goes away
 * and comes back. Also metric_clear, which the operator's policy-info
 * metric needs.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dbuf.h"
#include "loop.h"
#include "metrics.h"
#include "reload.h"
#include "testlib.h"

/* --- helpers ---------------------------------------------------------------
 */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static int rm_one(const char *p, const struct stat *st, int type,
                  struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct file {
    const char *name, *text;
};

/*
 * Updates a ConfigMap volume at `dir` to hold `files` (n of them) in the
 * order of the kubelet's AtomicWriter.Write (pkg/volume/util/
 * atomic_writer.go, steps 2 and 5-12): read the current "..data", write
 * the payload into a new "..<UTC timestamp>.<random>" directory, symlink
 * "..data_tmp" to it and rename that over "..data", create the missing
 * visible links "name -> ..data/name", remove the visible links of files
 * no longer in the payload, remove the old timestamped directory.
 * Returns the loop time of the rename (the moment the update is visible).
 */
/* When set, atomic_write runs this loop for pause_ms between the rename
 * of ..data and the links (test_half_update). */
static struct loop *pause_loop;
static unsigned pause_ms;
static void pause_for(struct loop *l, unsigned ms);

static uint64_t atomic_write(const char *dir, const struct file *files,
                             size_t n)
{
    char data[4096], tmp[4096], old[256] = "", path[4096];
    snprintf(data, sizeof(data), "%s/..data", dir);
    snprintf(tmp, sizeof(tmp), "%s/..data_tmp", dir);
    ssize_t ol = readlink(data, old, sizeof(old) - 1);
    if (ol > 0)
        old[ol] = '\0';

    char stamp[64], ts[1024];
    time_t now = time(NULL);
    strftime(stamp, sizeof(stamp), "..%Y_%m_%d_%H_%M_%S.", gmtime(&now));
    snprintf(ts, sizeof(ts), "%s/%sXXXXXX", dir, stamp);
    if (mkdtemp(ts) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    chmod(ts, 0755);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", ts, files[i].name);
        write_file(path, files[i].text);
    }
    const char *tsname = strrchr(ts, '/') + 1;
    if (symlink(tsname, tmp) != 0 || rename(tmp, data) != 0) {
        perror("swap");
        exit(2);
    }
    uint64_t swapped = loop_now_ms();
    if (pause_loop != NULL) /* a kubelet descheduled mid-update */
        pause_for(pause_loop, pause_ms);
    for (size_t i = 0; i < n; i++) {
        char target[512], link[512];
        snprintf(link, sizeof(link), "%s/%s", dir, files[i].name);
        if (readlink(link, target, sizeof(target)) < 0 && errno == ENOENT) {
            snprintf(target, sizeof(target), "..data/%s", files[i].name);
            if (symlink(target, link) != 0) {
                perror("symlink");
                exit(2);
            }
        }
    }
    if (old[0] != '\0') {
        char olddir[4096];
        snprintf(olddir, sizeof(olddir), "%s/%s", dir, old);
        DIR *d = opendir(olddir);
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL) {
            int kept = de->d_name[0] == '.';
            for (size_t i = 0; i < n && !kept; i++)
                kept = strcmp(files[i].name, de->d_name) == 0;
            if (!kept) {
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                unlink(path);
            }
        }
        if (d != NULL)
            closedir(d);
        rm_rf(olddir);
    }
    return swapped;
}

struct seen {
    int calls;
    struct reload_print last;
    uint64_t at_ms;
    uint64_t first_at_ms;
    int kick_once; /* call reload_kick from the callback (once) */
};

static void on_change(struct reload *r, const struct reload_print *p, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->last = *p;
    s->at_ms = loop_now_ms();
    if (s->first_at_ms == 0)
        s->first_at_ms = s->at_ms;
    if (s->kick_once) {
        s->kick_once = 0;
        reload_kick(r);
    }
}

/* Runs the loop until s->calls reaches `calls` or `ms` pass; returns 1 if
 * it did. */
static int run_until(struct loop *l, struct seen *s, int calls, unsigned ms)
{
    uint64_t end = loop_now_ms() + ms;
    while (s->calls < calls && loop_now_ms() < end)
        loop_run_once(l, 10);
    return s->calls >= calls;
}

static void run_for(struct loop *l, unsigned ms)
{
    uint64_t end = loop_now_ms() + ms;
    while (loop_now_ms() < end)
        loop_run_once(l, 5);
}

static void pause_for(struct loop *l, unsigned ms)
{
    run_for(l, ms);
}

/* --- tests -----------------------------------------------------------------
 */

static void test_fingerprint(const char *base)
{
    char dir[1024], path[4096];
    snprintf(dir, sizeof(dir), "%s/plain", base);
    mkdir(dir, 0755);
    struct reload_print a, b;

    CHECK_INT_EQ(reload_fingerprint(dir, &a), 0, "an empty directory is read");
    CHECK(a.n_lua == 0 && a.missing == 0, "empty: no *.lua, not missing");

    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    write_file(path, "return {}\n");
    reload_fingerprint(dir, &b);
    CHECK_INT_EQ(b.n_lua, 1, "one *.lua counted");
    CHECK(!reload_print_equal(&a, &b), "a new file changes the fingerprint");

    snprintf(path, sizeof(path), "%s/notes.txt", dir);
    write_file(path, "x");
    snprintf(path, sizeof(path), "%s/.hidden.lua", dir);
    write_file(path, "x");
    reload_fingerprint(dir, &a);
    CHECK(reload_print_equal(&a, &b),
          "other files and hidden names are not policies: no change");

    snprintf(path, sizeof(path), "%s/k8s", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/k8s/extra.lua", dir);
    write_file(path, "return 1\n");
    reload_fingerprint(dir, &a);
    CHECK_INT_EQ(a.n_lua, 2,
                 "a module in a subdirectory counts, as the "
                 "loader reads it");

    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    write_file(path, "return { x = 1 }\n");
    reload_fingerprint(dir, &b);
    CHECK(b.n_lua == 2 && !reload_print_equal(&a, &b),
          "an edit in place changes the fingerprint");

    snprintf(path, sizeof(path), "%s/nope", base);
    CHECK_INT_EQ(reload_fingerprint(path, &a), -ENOENT,
                 "a missing directory: -ENOENT");
    CHECK(a.missing == ENOENT && a.n_lua == 0, "missing is set");
}

/* The kubelet's update of a ConfigMap volume, seen through inotify. */
static void test_configmap_swap(struct loop *l, const char *base)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/cm", base);
    mkdir(dir, 0777);
    const struct file v1[] = {{"dittoserver.lua", "return { v = 1 }\n"}};
    atomic_write(dir, v1, 1);

    struct seen s = {0};
    struct reload *r = reload_new(l, dir, NULL, NULL, on_change, &s);
    CHECK(r != NULL, "watcher created");
    CHECK(reload_inotify(r), "inotify watch active");
    run_for(l, 200);
    CHECK_INT_EQ(s.calls, 0, "no callback without a change");

    const struct file v2[] = {{"dittoserver.lua", "return { v = 22 }\n"}};
    uint64_t t0 = atomic_write(dir, v2, 1);
    CHECK(run_until(l, &s, 1, test_ms(2000)), "the ..data swap is noticed");
    TEST_NOTE("swap -> callback: %llu ms", (unsigned long long)(s.at_ms - t0));
    CHECK(s.at_ms - t0 <= test_ms(1000), "within 1 s of the swap");
    /* The rename of ..data is the update's commit point: the short quiet
     * time, not RELOAD_DEFAULT_DEBOUNCE_MS (test_debounce checks that an
     * ordinary edit still waits the whole debounce). */
    CHECK(s.at_ms - t0 < test_ms(RELOAD_DEFAULT_DEBOUNCE_MS),
          "the commit point's quiet time (%d ms), not the debounce (%d ms)",
          RELOAD_COMMIT_DEBOUNCE_MS, RELOAD_DEFAULT_DEBOUNCE_MS);
    CHECK_INT_EQ(s.last.n_lua, 1, "one policy file");
    run_for(l, 400);
    CHECK_INT_EQ(s.calls, 1,
                 "one callback for the whole update (the "
                 "links and the old directory's removal "
                 "follow the swap)");
    struct reload_stats st;
    reload_get_stats(r, &st);
    CHECK(st.events >= 3, "inotify events were read (%lu)", st.events);

    const struct file v3[] = {{"dittoserver.lua", "return { v = 22 }\n"},
                              {"extra.lua", "return 3\n"}};
    atomic_write(dir, v3, 2);
    CHECK(run_until(l, &s, 2, test_ms(2000)), "a file added: noticed");
    CHECK_INT_EQ(s.last.n_lua, 2, "two policy files");

    atomic_write(dir, v2, 1);
    CHECK(run_until(l, &s, 3, test_ms(2000)), "a file removed: noticed");
    CHECK_INT_EQ(s.last.n_lua, 1, "one again (its visible link is gone)");

    /* The bundle's empty policies ConfigMap: ..data and no visible file. */
    atomic_write(dir, NULL, 0);
    CHECK(run_until(l, &s, 4, test_ms(2000)), "emptied: noticed");
    CHECK(s.last.n_lua == 0 && s.last.missing == 0,
          "an empty volume: no policy file, not missing");

    atomic_write(dir, v1, 1);
    CHECK(run_until(l, &s, 5, test_ms(2000)), "files appear: noticed");
    CHECK_INT_EQ(s.last.n_lua, 1, "one policy file after the empty one");
    reload_free(r);
}

/* Many events in a row give one callback after they stop; a burst that
 * never stops still gives one after max_delay. */
/* The kubelet renamed ..data into place and was then descheduled before
 * it linked the new names and unlinked the old: the watcher waits for the
 * links instead of reporting a directory with a dangling a.lua and no
 * b.lua or c.lua. */
static void test_half_update(struct loop *l, const char *base)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/half", base);
    mkdir(dir, 0777);
    const struct file v1[] = {{"dittoserver.lua", "return {}\n"},
                              {"a.lua", "return 1\n"}};
    atomic_write(dir, v1, 2);
    struct reload_print fp;
    reload_fingerprint(dir, &fp);
    CHECK(!fp.incomplete, "a finished update is complete");

    struct seen s = {0};
    struct reload *r = reload_new(l, dir, &fp, NULL, on_change, &s);
    CHECK(r != NULL && reload_inotify(r), "watcher with inotify");
    const struct file v2[] = {{"dittoserver.lua", "return { v = 2 }\n"},
                              {"b.lua", "return 2\n"},
                              {"c.lua", "return 3\n"}};
    pause_loop = l;
    pause_ms = 60;
    atomic_write(dir, v2, 3);
    pause_loop = NULL;
    CHECK(run_until(l, &s, 1, test_ms(2000)), "the update is noticed");
    run_for(l, 200);
    CHECK_INT_EQ(s.calls, 1, "one callback");
    CHECK_INT_EQ(s.last.n_lua, 3, "after the links: the three new files");
    CHECK(!s.last.incomplete, "reported complete");
    struct reload_stats st;
    reload_get_stats(r, &st);
    CHECK(st.incomplete > 0,
          "the quiet time was extended %lu times while "
          "the links were missing",
          st.incomplete);
    reload_free(r);
}

static void test_debounce(struct loop *l, const char *base)
{
    char dir[1024], path[4096];
    snprintf(dir, sizeof(dir), "%s/edit", base);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    write_file(path, "return {}\n");

    struct seen s = {0};
    struct reload_opts o = {.debounce_ms = 100, .max_delay_ms = 500};
    struct reload *r = reload_new(l, dir, NULL, &o, on_change, &s);
    uint64_t last_write = 0;
    for (int i = 0; i < 10; i++) {
        char text[64];
        snprintf(text, sizeof(text), "return { n = %d }\n", i);
        write_file(path, text);
        last_write = loop_now_ms();
        run_for(l, 20);
    }
    CHECK(run_until(l, &s, 1, test_ms(2000)), "a burst of edits: noticed");
    run_for(l, 300);
    CHECK_INT_EQ(s.calls, 1, "ten edits 20 ms apart: one callback");
    CHECK(s.at_ms >= last_write + 100,
          "after the last edit and the quiet time (%llu ms after it)",
          (unsigned long long)(s.at_ms - last_write));

    s = (struct seen){0};
    uint64_t first = loop_now_ms();
    for (int i = 0; i < 30; i++) {
        char text[64];
        snprintf(text, sizeof(text), "return { m = %d }\n", i);
        write_file(path, text);
        run_for(l, 40);
    }
    CHECK(s.calls >= 1,
          "edits every 40 ms for 1.2 s: a callback before "
          "they stop (%d)",
          s.calls);
    CHECK(s.first_at_ms != 0 && s.first_at_ms - first <= test_ms(700),
          "the first within max_delay of the first edit (%llu ms)",
          (unsigned long long)(s.first_at_ms - first));

    /* A kick without a change checks and stays quiet. */
    run_for(l, 300);
    s = (struct seen){0};
    struct reload_stats st0, st1;
    reload_get_stats(r, &st0);
    reload_kick(r);
    run_for(l, 250);
    reload_get_stats(r, &st1);
    CHECK(st1.checks == st0.checks + 1 && s.calls == 0,
          "reload_kick checks once; nothing changed, no callback");

    /* A kick from the callback: the caller saw the directory change while
     * loading; the next change is reported once, the kick finds none. */
    s = (struct seen){.kick_once = 1};
    write_file(path, "return { after = true }\n");
    CHECK(run_until(l, &s, 1, test_ms(2000)), "edit noticed");
    run_for(l, 300);
    CHECK_INT_EQ(s.calls, 1,
                 "the kick from the callback adds no callback "
                 "when nothing changed since");
    reload_free(r);
}

/* Without inotify the poll alone notices the swap within its period. */
static void test_poll_only(struct loop *l, const char *base)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/poll", base);
    mkdir(dir, 0777);
    const struct file v1[] = {{"dittoserver.lua", "return { p = 1 }\n"}};
    atomic_write(dir, v1, 1);

    struct seen s = {0};
    struct reload_opts o = {.no_inotify = 1};
    struct reload *r = reload_new(l, dir, NULL, &o, on_change, &s);
    CHECK(!reload_inotify(r), "no inotify when asked");
    run_for(l, 300);
    const struct file v2[] = {{"dittoserver.lua", "return { p = 2 }\n"}};
    uint64_t t0 = atomic_write(dir, v2, 1);
    CHECK(run_until(l, &s, 1, test_ms(3000)), "the poll notices the swap");
    TEST_NOTE("swap -> callback by the default poll: %llu ms",
              (unsigned long long)(s.at_ms - t0));
    CHECK(s.at_ms - t0 <= test_ms(RELOAD_DEFAULT_POLL_MS +
                                  RELOAD_DEFAULT_MAX_DELAY_MS + 100),
          "within the poll period and the quiet time");
    struct reload_stats st;
    reload_get_stats(r, &st);
    CHECK(st.events == 0 && st.polls >= 1, "no events, %lu polls", st.polls);
    reload_free(r);
}

/* The directory goes away and comes back: reported both times, and the
 * poll puts the inotify watch back. */
static void test_gone_and_back(struct loop *l, const char *base)
{
    char dir[1024], path[4096];
    snprintf(dir, sizeof(dir), "%s/gone", base);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/dittoserver.lua", dir);
    write_file(path, "return {}\n");

    struct seen s = {0};
    struct reload_opts o = {.poll_ms = 200};
    struct reload *r = reload_new(l, dir, NULL, &o, on_change, &s);
    CHECK(reload_inotify(r), "watching");
    rm_rf(dir);
    CHECK(run_until(l, &s, 1, test_ms(2000)), "removal noticed");
    CHECK(s.last.missing == ENOENT, "reported missing");
    run_for(l, 100);
    CHECK(!reload_inotify(r), "the watch ended with the directory");

    mkdir(dir, 0755);
    write_file(path, "return { back = true }\n");
    CHECK(run_until(l, &s, 2, test_ms(2000)), "the new directory noticed");
    CHECK(s.last.missing == 0 && s.last.n_lua == 1, "one file, not missing");
    CHECK(reload_inotify(r), "the poll watches it again");
    snprintf(path, sizeof(path), "%s/more.lua", dir);
    write_file(path, "return 2\n");
    CHECK(run_until(l, &s, 3, test_ms(2000)), "and sees the next change");
    reload_free(r);
}

static void test_metric_clear(void)
{
    struct metrics *m = metrics_new();
    static const char *const labels[] = {"hash", NULL};
    struct metric *f =
        metrics_add(m, METRIC_GAUGE, "x_info", "help", labels, NULL, 0);
    const char *a[] = {"aaaa", NULL}, *b[] = {"bbbb", NULL};
    metric_set(f, 1, a);
    metric_clear(f);
    metric_set(f, 1, b);
    struct dbuf out;
    dbuf_init(&out, 1 << 16);
    metrics_render(m, &out, 0);
    CHECK(strstr(dbuf_ptr(&out), "x_info{hash=\"bbbb\"} 1") != NULL &&
              strstr(dbuf_ptr(&out), "aaaa") == NULL,
          "metric_clear: only the new series is rendered");
    CHECK(metric_value(f, a) == 0 && metric_value(f, b) == 1,
          "the old series is gone, the new one found");
    dbuf_free(&out);
    metrics_free(m);
}

int main(void)
{
    char base[] = "/tmp/test_reload.XXXXXX";
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    struct loop *l = loop_new();
    test_fingerprint(base);
    test_configmap_swap(l, base);
    test_debounce(l, base);
    test_half_update(l, base);
    test_poll_only(l, base);
    test_gone_and_back(l, base);
    test_metric_clear();
    loop_free(l);
    rm_rf(base);
    return TEST_SUMMARY();
}
