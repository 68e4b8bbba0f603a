/* loop: the event loop over libcurl's multi interface; see loop.h. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "loop.h"

/* Longest single wait when nothing is due: any value works because a
 * timer, an fd or a wakeup ends the wait; one hour keeps it bounded. */
#define LOOP_MAX_WAIT_MS 3600000

struct loop_fd {
    int fd;
    short events;
    loop_fd_fn fn;
    void *arg;
};

/* Timers live in a binary min-heap ordered by (due, start sequence); each
 * timer knows its heap index, so stopping one is O(log n) without a
 * search. The controller may have one timer per key (backoff, resync). */
struct loop {
    CURLM *multi;
    struct loop_timer **heap;
    size_t nheap;
    size_t capheap;
    uint64_t seq;
    struct loop_fd *fds;
    size_t nfds;
    size_t capfds;
    int stop;
};

/* The installed clock (loop_set_clock); NULL: CLOCK_MONOTONIC. */
static loop_clock_fn clock_fn;
static void *clock_arg;

void loop_set_clock(loop_clock_fn fn, void *arg)
{
    clock_fn = fn;
    clock_arg = arg;
}

uint64_t loop_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t loop_now_us(void)
{
    return clock_fn != NULL ? clock_fn(clock_arg) : loop_real_us();
}

uint64_t loop_now_ms(void)
{
    return loop_now_us() / 1000u;
}

/* --- timer heap -------------------------------------------------------- */

static int timer_before(const struct loop_timer *a, const struct loop_timer *b)
{
    if (a->due_ms != b->due_ms)
        return a->due_ms < b->due_ms;
    return a->seq < b->seq;
}

static void heap_set(struct loop *l, size_t i, struct loop_timer *t)
{
    l->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(struct loop *l, size_t i)
{
    struct loop_timer *t = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, l->heap[parent]))
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, t);
}

static void heap_down(struct loop *l, size_t i)
{
    struct loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && timer_before(l->heap[c + 1], l->heap[c]))
            c++;
        if (!timer_before(l->heap[c], t))
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

static void heap_remove(struct loop *l, size_t i)
{
    struct loop_timer *t = l->heap[i];
    l->nheap--;
    if (i != l->nheap) {
        struct loop_timer *moved = l->heap[l->nheap];
        heap_set(l, i, moved);
        heap_down(l, i);
        heap_up(l, moved->heap_idx);
    }
    t->heap_idx = SIZE_MAX;
}

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *arg)
{
    memset(t, 0, sizeof(*t));
    t->heap_idx = SIZE_MAX;
    t->fn = fn;
    t->arg = arg;
}

int loop_timer_active(const struct loop_timer *t)
{
    return t->heap_idx != SIZE_MAX;
}

void loop_timer_stop(struct loop *l, struct loop_timer *t)
{
    if (t->heap_idx != SIZE_MAX)
        heap_remove(l, t->heap_idx);
}

int loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
    loop_timer_stop(l, t);
    if (l->nheap == l->capheap) {
        size_t cap = l->capheap ? l->capheap * 2 : 64;
        struct loop_timer **h = realloc(l->heap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        l->heap = h;
        l->capheap = cap;
    }
    t->due_ms = loop_now_ms() + delay_ms;
    t->seq = l->seq++;
    l->heap[l->nheap] = t;
    t->heap_idx = l->nheap++;
    heap_up(l, t->heap_idx);
    return 0;
}

/*
 * Fires the timers that are due. Only timers started before this pass
 * fire, so a callback that restarts itself with delay 0 runs again at the
 * next iteration instead of starving I/O.
 */
static void run_timers(struct loop *l)
{
    uint64_t now = loop_now_ms();
    uint64_t mark = l->seq;
    while (l->nheap > 0) {
        struct loop_timer *t = l->heap[0];
        if (t->due_ms > now || t->seq >= mark)
            break;
        heap_remove(l, 0);
        t->fn(t, t->arg);
    }
}

/* --- transfers --------------------------------------------------------- */

int loop_add_easy(struct loop *l, CURL *easy)
{
    CURLMcode mc = curl_multi_add_handle(l->multi, easy);
    if (mc != CURLM_OK) {
        log_error("curl_multi_add_handle failed", "error",
                  curl_multi_strerror(mc), NULL);
        return -EIO;
    }
    return 0;
}

void loop_remove_easy(struct loop *l, CURL *easy)
{
    curl_multi_remove_handle(l->multi, easy);
}

CURLM *loop_multi(struct loop *l)
{
    return l->multi;
}

static void run_done(struct loop *l)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(l->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        struct loop_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(l->multi, easy);
        if (x != NULL && x->done != NULL)
            x->done(x, result);
    }
}

/* --- extra fds --------------------------------------------------------- */

static struct loop_fd *find_fd(struct loop *l, int fd)
{
    for (size_t i = 0; i < l->nfds; i++)
        if (l->fds[i].fd == fd)
            return &l->fds[i];
    return NULL;
}

int loop_fd_add(struct loop *l, int fd, short events, loop_fd_fn fn, void *arg)
{
    if (find_fd(l, fd) != NULL)
        return -EEXIST;
    if (l->nfds == l->capfds) {
        size_t cap = l->capfds ? l->capfds * 2 : 4;
        struct loop_fd *p = realloc(l->fds, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        l->fds = p;
        l->capfds = cap;
    }
    l->fds[l->nfds++] = (struct loop_fd){fd, events, fn, arg};
    return 0;
}

void loop_fd_del(struct loop *l, int fd)
{
    struct loop_fd *f = find_fd(l, fd);
    if (f == NULL)
        return;
    *f = l->fds[--l->nfds];
}

/* --- running ----------------------------------------------------------- */

struct loop *loop_new(void)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        global_done = 1;
    }
    struct loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->multi = curl_multi_init();
    if (l->multi == NULL) {
        free(l);
        return NULL;
    }
    return l;
}

void loop_free(struct loop *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nheap; i++)
        l->heap[i]->heap_idx = SIZE_MAX;
    curl_multi_cleanup(l->multi);
    free(l->heap);
    free(l->fds);
    free(l);
}

/* Milliseconds until the first timer is due, capped by max_wait_ms. */
static int wait_ms(struct loop *l, int max_wait_ms)
{
    long long w = max_wait_ms < 0 ? LOOP_MAX_WAIT_MS : max_wait_ms;
    if (l->nheap > 0) {
        uint64_t now = loop_now_ms();
        uint64_t due = l->heap[0]->due_ms;
        long long t = due <= now ? 0 : (long long)(due - now);
        if (t < w)
            w = t;
    }
    return (int)w;
}

/*
 * curl_multi_poll() sleeps in poll(2) on libcurl's sockets plus our extra
 * fds, bounded by libcurl's own next timeout and by our first timer, and
 * can be interrupted by curl_multi_wakeup(): an idle process makes no
 * system calls between events.
 */
int loop_run_once(struct loop *l, int max_wait_ms)
{
    struct curl_waitfd cw[8];
    struct curl_waitfd *wfds = cw;
    size_t n = l->nfds;
    int rc = 0;

    if (n > 8) {
        wfds = calloc(n, sizeof(*wfds));
        if (wfds == NULL)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        wfds[i].fd = l->fds[i].fd;
        wfds[i].events = 0;
        if (l->fds[i].events & POLLIN)
            wfds[i].events |= CURL_WAIT_POLLIN;
        if (l->fds[i].events & POLLOUT)
            wfds[i].events |= CURL_WAIT_POLLOUT;
        wfds[i].revents = 0;
    }
    int numfds = 0;
    CURLMcode mc = curl_multi_poll(l->multi, n ? wfds : NULL, (unsigned)n,
                                   wait_ms(l, max_wait_ms), &numfds);
    if (mc != CURLM_OK) {
        log_error("curl_multi_poll failed", "error", curl_multi_strerror(mc),
                  NULL);
        rc = -EIO;
        goto done;
    }
    int running = 0;
    mc = curl_multi_perform(l->multi, &running);
    if (mc != CURLM_OK) {
        log_error("curl_multi_perform failed", "error", curl_multi_strerror(mc),
                  NULL);
        rc = -EIO;
        goto done;
    }
    run_done(l);
    /* Callbacks may add or remove fds: wfds is our own copy of the set
     * that was polled, and each fd is looked up again before its call. */
    for (size_t i = 0; i < n; i++) {
        short revents = 0;
        if (wfds[i].revents & CURL_WAIT_POLLIN)
            revents |= POLLIN;
        if (wfds[i].revents & CURL_WAIT_POLLOUT)
            revents |= POLLOUT;
        if (wfds[i].revents & CURL_WAIT_POLLPRI)
            revents |= POLLPRI;
        if (revents == 0)
            continue;
        struct loop_fd *f = find_fd(l, wfds[i].fd);
        if (f != NULL)
            f->fn(f->fd, revents, f->arg);
    }
    /* Timers last, so a caller looping on a condition sees their effect
     * before the next wait. */
    run_timers(l);
done:
    if (wfds != cw)
        free(wfds);
    return rc;
}

int loop_run(struct loop *l)
{
    l->stop = 0;
    while (!l->stop) {
        int rc = loop_run_once(l, -1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void loop_stop(struct loop *l)
{
    l->stop = 1;
    curl_multi_wakeup(l->multi);
}

void loop_wakeup(struct loop *l)
{
    curl_multi_wakeup(l->multi);
}
