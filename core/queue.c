/*
 * queue: the controller's work queue on the loop; see queue.h.
 *
 * client-go keeps a queue slice plus dirty and processing sets, a delaying
 * heap fed by a goroutine, and a rate limiter. Here one struct per key
 * holds all of it: flags for pending/in flight, links into one of two
 * intrusive FIFO lists (O(1) removal for promotion), a slot in our own
 * delay heap (one loop timer for the whole heap, not one per key) and the
 * failure count. Keys live in a chained hash table and are freed as soon
 * as they are idle, so memory follows the number of active keys.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"
#include "queue.h"
#include "text.h"

#define QUEUE_MIN_BUCKETS 64
/* The longest one dispatch pass runs work functions that finish at once
 * (a converged reconcile writes nothing and calls queue_done before it
 * returns): then the loop reads its sockets before the next pass, so a
 * resync of 10,000 keys cannot hold watch events and Lease renewals for
 * seconds. */
#define QUEUE_PASS_US 5000

/*
 * The state of one key. A key is "pending" when it wants processing: then
 * it sits in the list of its priority, or, when in flight too, it is the
 * dirty copy queued again at queue_done(). A key with a delayed add sits
 * in the delay heap (heap_idx != SIZE_MAX). A key that is none of these and
 * has no failures is idle and freed at once.
 */
struct qkey {
    struct qkey *hnext;       /* hash chain */
    struct qkey *prev, *next; /* list of `prio` while queued */
    uint64_t added_us;        /* when it became pending */
    uint64_t started_us;      /* when it was dispatched */
    uint64_t due_ms;          /* delayed add: due time */
    uint64_t dseq;            /* delayed add: FIFO among equal dues */
    size_t heap_idx;          /* SIZE_MAX: no delayed add */
    unsigned failures;        /* rate-limited adds since forget */
    uint32_t hash;            /* FNV-1a of key */
    unsigned char pending;    /* wants processing */
    unsigned char in_flight;  /* dispatched, queue_done not yet */
    unsigned char prio;       /* of the pending copy */
    unsigned char dprio;      /* of the delayed add */
    char key[];
};

struct queue_list {
    struct qkey *head, *tail;
};

struct queue {
    struct loop *loop;
    queue_work_fn fn;
    void *arg;
    queue_observe_fn observe;
    void *observe_arg;
    uint64_t base_ms, max_ms;
    double qps;
    double burst;
    unsigned workers;
    int paused;

    struct qkey **buckets; /* chained hash table, power-of-two size */
    size_t nbuckets;
    size_t nkeys;

    struct queue_list lists[2]; /* QUEUE_HIGH, QUEUE_LOW */
    size_t depth;
    size_t nflight;

    struct qkey **heap; /* delayed adds, min-heap by (due_ms, dseq) */
    size_t nheap, capheap;
    uint64_t dseq;

    double tokens; /* the token bucket */
    uint64_t tokens_us;

    struct loop_timer dispatch; /* zero-delay: hands keys to fn */
    struct loop_timer delay;    /* due time of the heap's first key */
    struct queue_stats stats;
};

/* --- hash table -------------------------------------------------------- */

/* FNV-1a: short keys, no adversary worth a keyed hash (keys come from the
 * API server's object names). */
static uint32_t key_hash(const char *s)
{
    return text_fnv1a32(TEXT_FNV1A32_INIT, s, strlen(s));
}

/* The state of `key`, or NULL when the queue holds none. */
static struct qkey *key_find(const struct queue *q, const char *key)
{
    uint32_t h = key_hash(key);
    struct qkey *k = q->buckets[h & (q->nbuckets - 1)];
    for (; k != NULL; k = k->hnext)
        if (k->hash == h && strcmp(k->key, key) == 0)
            return k;
    return NULL;
}

/* Moves every key to a table of `n` buckets; on allocation failure the
 * old table stays (chains only get longer). */
static void rehash(struct queue *q, size_t n)
{
    struct qkey **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct qkey *k = q->buckets[i];
        while (k != NULL) {
            struct qkey *next = k->hnext;
            k->hnext = b[k->hash & (n - 1)];
            b[k->hash & (n - 1)] = k;
            k = next;
        }
    }
    free(q->buckets);
    q->buckets = b;
    q->nbuckets = n;
}

/* Returns the state of `key`, created idle when absent; NULL on OOM. */
static struct qkey *key_get(struct queue *q, const char *key)
{
    struct qkey *k = key_find(q, key);
    if (k != NULL)
        return k;
    size_t len = strlen(key);
    k = calloc(1, sizeof(*k) + len + 1);
    if (k == NULL)
        return NULL;
    memcpy(k->key, key, len + 1);
    k->hash = key_hash(key);
    k->heap_idx = SIZE_MAX;
    size_t b = k->hash & (q->nbuckets - 1);
    k->hnext = q->buckets[b];
    q->buckets[b] = k;
    q->nkeys++;
    if (q->nkeys > q->nbuckets)
        rehash(q, q->nbuckets * 2);
    return k;
}

/* Frees `k` when nothing refers to it any more. */
static void key_release_if_idle(struct queue *q, struct qkey *k)
{
    if (k->pending || k->in_flight || k->heap_idx != SIZE_MAX ||
        k->failures > 0)
        return;
    struct qkey **p = &q->buckets[k->hash & (q->nbuckets - 1)];
    while (*p != k)
        p = &(*p)->hnext;
    *p = k->hnext;
    free(k);
    q->nkeys--;
    if (q->nbuckets > QUEUE_MIN_BUCKETS && q->nkeys < q->nbuckets / 8)
        rehash(q, q->nbuckets / 2);
}

/* --- priority lists ---------------------------------------------------- */

/* Appends `k` to the list of its priority; it must be in no list. */
static void list_push(struct queue *q, struct qkey *k)
{
    struct queue_list *l = &q->lists[k->prio];
    k->next = NULL;
    k->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = k;
    else
        l->head = k;
    l->tail = k;
    q->depth++;
}

/* Unlinks `k` from the list of its priority (k->prio must not have
 * changed since list_push). */
static void list_remove(struct queue *q, struct qkey *k)
{
    struct queue_list *l = &q->lists[k->prio];
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        l->head = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    else
        l->tail = k->prev;
    k->prev = k->next = NULL;
    q->depth--;
}

/* --- delay heap -------------------------------------------------------- */

/* Heap order: due time, then the order the delayed adds were made, so
 * keys due in the same millisecond are queued in add order. */
static int delay_before(const struct qkey *a, const struct qkey *b)
{
    if (a->due_ms != b->due_ms)
        return a->due_ms < b->due_ms;
    return a->dseq < b->dseq;
}

static void heap_set(struct queue *q, size_t i, struct qkey *k)
{
    q->heap[i] = k;
    k->heap_idx = i;
}

static void heap_up(struct queue *q, size_t i)
{
    struct qkey *k = q->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!delay_before(k, q->heap[parent]))
            break;
        heap_set(q, i, q->heap[parent]);
        i = parent;
    }
    heap_set(q, i, k);
}

static void heap_down(struct queue *q, size_t i)
{
    struct qkey *k = q->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->nheap)
            break;
        if (c + 1 < q->nheap && delay_before(q->heap[c + 1], q->heap[c]))
            c++;
        if (!delay_before(q->heap[c], k))
            break;
        heap_set(q, i, q->heap[c]);
        i = c;
    }
    heap_set(q, i, k);
}

/* Inserts `k` (k->due_ms and k->dseq set). Returns 0 or -ENOMEM. */
static int heap_push(struct queue *q, struct qkey *k)
{
    if (q->nheap == q->capheap) {
        size_t cap = q->capheap ? q->capheap * 2 : 16;
        struct qkey **h = realloc(q->heap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        q->heap = h;
        q->capheap = cap;
    }
    q->heap[q->nheap] = k;
    k->heap_idx = q->nheap++;
    heap_up(q, k->heap_idx);
    return 0;
}

/* Removes and returns the earliest key; the heap must not be empty. */
static struct qkey *heap_pop(struct queue *q)
{
    struct qkey *k = q->heap[0];
    q->nheap--;
    if (q->nheap > 0) {
        heap_set(q, 0, q->heap[q->nheap]);
        heap_down(q, 0);
    }
    k->heap_idx = SIZE_MAX;
    return k;
}

/* --- dispatch ---------------------------------------------------------- */

static void timer_start(struct queue *q, struct loop_timer *t, uint64_t ms)
{
    /* The loop's timer heap only fails to grow when memory is gone; the
     * keys stay queued and the next add, done or resume retries. */
    if (loop_timer_start(q->loop, t, ms) != 0)
        log_error("queue: cannot start a timer", "error", "out of memory",
                  NULL);
}

/* Schedules a dispatch pass when one could hand out a key. Dispatching
 * from a timer, never from queue_add() or queue_done() directly, keeps
 * the work function out of libcurl callbacks and out of its own call
 * stack. */
static void arm_dispatch(struct queue *q)
{
    if (q->paused || q->depth == 0 || q->nflight >= q->workers ||
        loop_timer_active(&q->dispatch))
        return;
    timer_start(q, &q->dispatch, 0);
}

/*
 * Makes `k` pending at `prio` (client-go's Add). A pending key only moves
 * up: HIGH promotes a pending LOW to the tail of HIGH, LOW never demotes.
 * The queue duration counts from the first add, as client-go's metrics
 * do, so a promoted or deduplicated key keeps its original add time.
 */
static void key_add(struct queue *q, struct qkey *k, enum queue_prio prio)
{
    if (k->pending) {
        if ((unsigned)prio < k->prio) {
            if (!k->in_flight)
                list_remove(q, k);
            k->prio = (unsigned char)prio;
            if (!k->in_flight)
                list_push(q, k);
        }
        return;
    }
    k->pending = 1;
    k->prio = (unsigned char)prio;
    k->added_us = loop_now_us();
    q->stats.adds++;
    if (!k->in_flight) {
        list_push(q, k);
        arm_dispatch(q);
    }
}

/*
 * Hands queued keys to the work function, HIGH first. One pass takes at
 * most the keys queued when it starts, for at most QUEUE_PASS_US: a work
 * function that finishes and re-adds its key synchronously is served
 * again at the next iteration, and a long run of work that finishes at
 * once goes on after the loop's I/O, instead of spinning here and starving
 * it. A key the time bound leaves behind keeps its place.
 */
static void on_dispatch(struct loop_timer *t, void *arg)
{
    struct queue *q = arg;
    size_t budget = q->depth;
    uint64_t t0 = loop_now_us();
    while (budget-- > 0 && !q->paused && q->nflight < q->workers &&
           loop_now_us() - t0 < QUEUE_PASS_US) {
        struct qkey *k = q->lists[QUEUE_HIGH].head;
        if (k == NULL)
            k = q->lists[QUEUE_LOW].head;
        if (k == NULL)
            break;
        list_remove(q, k);
        k->pending = 0;
        k->in_flight = 1;
        q->nflight++;
        k->started_us = loop_now_us();
        if (q->observe != NULL)
            q->observe(0, (double)(k->started_us - k->added_us) / 1e6,
                       q->observe_arg);
        /* k may be freed inside fn (a synchronous queue_done). */
        q->fn(q, k->key, q->arg);
    }
    arm_dispatch(q);
}

/* (Re)starts the delay timer for the earliest delayed add, or stops it
 * when the heap is empty. */
static void arm_delay(struct queue *q)
{
    if (q->nheap == 0) {
        loop_timer_stop(q->loop, &q->delay);
        return;
    }
    uint64_t now = loop_now_ms();
    uint64_t due = q->heap[0]->due_ms;
    timer_start(q, &q->delay, due > now ? due - now : 0);
}

/* Queues every delayed add that is due, then waits for the next one.
 * This also runs while paused: due keys are then counted in the depth. */
static void on_delay(struct loop_timer *t, void *arg)
{
    struct queue *q = arg;
    uint64_t now = loop_now_ms();
    while (q->nheap > 0 && q->heap[0]->due_ms <= now) {
        struct qkey *k = heap_pop(q);
        key_add(q, k, (enum queue_prio)k->dprio);
    }
    arm_delay(q);
}

/* --- lifetime ---------------------------------------------------------- */

struct queue *queue_new(struct loop *l, const struct queue_opts *o,
                        queue_work_fn fn, void *arg)
{
    struct queue_opts d = {0};
    if (o == NULL)
        o = &d;
    struct queue *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->buckets = calloc(QUEUE_MIN_BUCKETS, sizeof(*q->buckets));
    if (q->buckets == NULL) {
        free(q);
        return NULL;
    }
    q->nbuckets = QUEUE_MIN_BUCKETS;
    q->loop = l;
    q->fn = fn;
    q->arg = arg;
    q->base_ms = o->base_delay_ms ? o->base_delay_ms : 5;
    q->max_ms = o->max_delay_ms ? o->max_delay_ms : 1000000;
    q->qps = o->qps == 0 ? 10 : o->qps;
    q->burst = o->burst > 0 ? o->burst : 100;
    q->workers = o->workers ? o->workers : 4;
    q->tokens = q->burst;
    q->tokens_us = loop_now_us();
    loop_timer_init(&q->dispatch, on_dispatch, q);
    loop_timer_init(&q->delay, on_delay, q);
    return q;
}

void queue_free(struct queue *q)
{
    if (q == NULL)
        return;
    loop_timer_stop(q->loop, &q->dispatch);
    loop_timer_stop(q->loop, &q->delay);
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct qkey *k = q->buckets[i];
        while (k != NULL) {
            struct qkey *next = k->hnext;
            free(k);
            k = next;
        }
    }
    free(q->buckets);
    free(q->heap);
    free(q);
}

/* --- adding ------------------------------------------------------------ */

int queue_add(struct queue *q, const char *key, enum queue_prio prio)
{
    if (key == NULL)
        return -EINVAL;
    struct qkey *k = key_get(q, key);
    if (k == NULL)
        return -ENOMEM;
    key_add(q, k, prio == QUEUE_LOW ? QUEUE_LOW : QUEUE_HIGH);
    return 0;
}

int queue_add_after(struct queue *q, const char *key, uint64_t delay_ms,
                    enum queue_prio prio)
{
    if (delay_ms == 0)
        return queue_add(q, key, prio);
    if (key == NULL)
        return -EINVAL;
    struct qkey *k = key_get(q, key);
    if (k == NULL)
        return -ENOMEM;
    uint64_t now = loop_now_ms();
    uint64_t due = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
    unsigned char p = prio == QUEUE_LOW ? QUEUE_LOW : QUEUE_HIGH;
    /* One delayed add per key: the earliest due time wins and the higher
     * priority is kept, so a retry is never pushed back behind a resync. */
    if (k->heap_idx != SIZE_MAX) {
        if (p < k->dprio)
            k->dprio = p;
        if (due >= k->due_ms)
            return 0;
        k->due_ms = due;
        heap_up(q, k->heap_idx);
    } else {
        k->due_ms = due;
        k->dseq = q->dseq++;
        k->dprio = p;
        if (heap_push(q, k) != 0) {
            key_release_if_idle(q, k);
            return -ENOMEM;
        }
    }
    if (q->heap[0] == k)
        arm_delay(q);
    return 0;
}

/* base * 2^failures capped at max (client-go's
 * ItemExponentialFailureRateLimiter), doubling step by step so a large
 * failure count cannot overflow a shift. */
static uint64_t backoff_ms(const struct queue *q, unsigned failures)
{
    uint64_t d = q->base_ms;
    for (unsigned i = 0; i < failures && d < q->max_ms; i++) {
        if (d > UINT64_MAX / 2) {
            d = UINT64_MAX;
            break;
        }
        d *= 2;
    }
    return d < q->max_ms ? d : q->max_ms;
}

/* Takes one token (golang.org/x/time/rate Reserve): the bucket may go
 * negative; the wait is the time until the debt is paid back. */
static uint64_t bucket_delay_ms(struct queue *q)
{
    if (q->qps < 0)
        return 0;
    uint64_t now = loop_now_us();
    q->tokens += (double)(now - q->tokens_us) / 1e6 * q->qps;
    if (q->tokens > q->burst)
        q->tokens = q->burst;
    q->tokens_us = now;
    q->tokens -= 1;
    if (q->tokens >= 0)
        return 0;
    return (uint64_t)ceil(-q->tokens / q->qps * 1000.0);
}

int queue_add_rate_limited(struct queue *q, const char *key)
{
    if (key == NULL)
        return -EINVAL;
    struct qkey *k = key_get(q, key);
    if (k == NULL)
        return -ENOMEM;
    /* Both limiters are consulted, as controller-runtime's
     * MaxOfRateLimiter does: each takes its step (a failure, a token). */
    uint64_t d = backoff_ms(q, k->failures);
    uint64_t b = bucket_delay_ms(q);
    if (k->failures < UINT_MAX)
        k->failures++;
    q->stats.retries++;
    return queue_add_after(q, key, d > b ? d : b, QUEUE_HIGH);
}

void queue_forget(struct queue *q, const char *key)
{
    if (key == NULL)
        return;
    struct qkey *k = key_find(q, key);
    if (k == NULL)
        return;
    k->failures = 0;
    key_release_if_idle(q, k);
}

unsigned queue_failures(const struct queue *q, const char *key)
{
    const struct qkey *k = key != NULL ? key_find(q, key) : NULL;
    return k != NULL ? k->failures : 0;
}

uint64_t queue_next_backoff_ms(const struct queue *q, const char *key)
{
    return backoff_ms(q, queue_failures(q, key));
}

/* --- processing -------------------------------------------------------- */

void queue_done(struct queue *q, const char *key)
{
    if (key == NULL)
        return;
    struct qkey *k = key_find(q, key);
    if (k == NULL || !k->in_flight)
        return;
    k->in_flight = 0;
    q->nflight--;
    if (q->observe != NULL)
        q->observe(1, (double)(loop_now_us() - k->started_us) / 1e6,
                   q->observe_arg);
    /* Added while in flight (dirty): queued now at its latest priority. */
    if (k->pending)
        list_push(q, k);
    else
        key_release_if_idle(q, k);
    arm_dispatch(q);
}

/* In-flight work is not interrupted: the controller waits for it (or
 * drops its results) itself. */
void queue_pause(struct queue *q)
{
    q->paused = 1;
    loop_timer_stop(q->loop, &q->dispatch);
}

void queue_resume(struct queue *q)
{
    q->paused = 0;
    arm_dispatch(q);
}

/* --- introspection ----------------------------------------------------- */

size_t queue_depth(const struct queue *q)
{
    return q->depth;
}

size_t queue_in_flight(const struct queue *q)
{
    return q->nflight;
}

size_t queue_delayed(const struct queue *q)
{
    return q->nheap;
}

size_t queue_tracked(const struct queue *q)
{
    return q->nkeys;
}

void queue_get_stats(const struct queue *q, struct queue_stats *out)
{
    *out = q->stats;
}

void queue_set_observer(struct queue *q, queue_observe_fn fn, void *arg)
{
    q->observe = fn;
    q->observe_arg = arg;
}
