/* metrics: Prometheus families and the text exposition; see metrics.h. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __GLIBC__ /* defined by the headers above */
#include <malloc.h>
#endif

#include "dbuf.h"
#include "metrics.h"
#include "text.h"

static const double default_buckets[] = {.005, .01, .025, .05, .1, .25,
                                         .5,   1,   2.5,  5,   10};

/*
 * One series is a single allocation: the struct, the bucket counts
 * (nbounds + 1, the last for +Inf; not cumulative), the array of label
 * value pointers and the value strings themselves.
 */
struct series {
    double value; /* counter, gauge; histogram: the sum */
    uint64_t count;
    uint64_t *buckets;
    char **values;
};

/* Series are found through an open-addressing table of indexes into the
 * series array (slot = index + 1, 0 = empty), kept at most half full. */
struct metric {
    struct metric *next;
    enum metric_type type;
    char *name;
    char *help;
    size_t nlabels;
    char **labels;
    double *bounds;
    size_t nbounds;
    struct series **series;
    size_t nseries;
    size_t capseries;
    size_t *slots;
    size_t nslots; /* a power of two, or 0 */
};

struct metrics {
    struct metric *first;
    struct metric *last;
};

/* --- names ------------------------------------------------------------- */

static int valid_name(const char *s, int allow_colon)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (allow_colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static int valid_label(const char *s, enum metric_type t)
{
    if (!valid_name(s, 0) || strncmp(s, "__", 2) == 0)
        return 0;
    return !(t == METRIC_HISTOGRAM && strcmp(s, "le") == 0);
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* --- families ---------------------------------------------------------- */

static void family_free(struct metric *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->nseries; i++)
        free(f->series[i]);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->series);
    free(f->slots);
    free(f->labels);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

struct metrics *metrics_new(void)
{
    return calloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    struct metric *f = m->first;
    while (f != NULL) {
        struct metric *next = f->next;
        family_free(f);
        f = next;
    }
    free(m);
}

static struct series *series_get(struct metric *f, const char *const *values,
                                 int create);

struct metric *metrics_add(struct metrics *m, enum metric_type t,
                           const char *name, const char *help,
                           const char *const *labels, const double *buckets,
                           size_t nbuckets)
{
    size_t nlabels = 0;

    if (m == NULL || !valid_name(name, 1))
        return NULL;
    for (struct metric *g = m->first; g != NULL; g = g->next)
        if (strcmp(g->name, name) == 0)
            return NULL;
    while (labels != NULL && labels[nlabels] != NULL) {
        if (!valid_label(labels[nlabels], t))
            return NULL;
        nlabels++;
    }
    if (t == METRIC_HISTOGRAM && buckets == NULL) {
        buckets = default_buckets;
        nbuckets = sizeof default_buckets / sizeof default_buckets[0];
    }
    if (t != METRIC_HISTOGRAM)
        nbuckets = 0;
    for (size_t i = 1; i < nbuckets; i++)
        if (!(buckets[i - 1] < buckets[i]))
            return NULL;
    if (nbuckets > 0 && isinf(buckets[nbuckets - 1]))
        nbuckets--; /* +Inf is implicit */

    struct metric *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->type = t;
    f->name = dup_str(name);
    f->help = dup_str(help != NULL ? help : "");
    f->labels = calloc(nlabels + 1, sizeof(char *));
    f->bounds = malloc((nbuckets + 1) * sizeof(double));
    if (f->name == NULL || f->help == NULL || f->labels == NULL ||
        f->bounds == NULL)
        goto fail;
    for (size_t i = 0; i < nlabels; i++) {
        f->labels[i] = dup_str(labels[i]);
        if (f->labels[i] == NULL)
            goto fail;
        f->nlabels = i + 1;
    }
    if (nbuckets > 0)
        memcpy(f->bounds, buckets, nbuckets * sizeof(double));
    f->nbounds = nbuckets;
    /* Without labels the one series exists from the start, as in
     * client_golang, so a counter that never moved still renders 0. */
    if (nlabels == 0 && series_get(f, NULL, 1) == NULL)
        goto fail;
    if (m->last != NULL)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    return f;
fail:
    family_free(f);
    return NULL;
}

/* --- series ------------------------------------------------------------ */

/* FNV-1a over the values, each with its terminating NUL so that ("ab","")
 * and ("a","b") differ. */
static uint64_t hash_values(size_t n, const char *const *values)
{
    uint64_t h = TEXT_FNV1A64_INIT;
    for (size_t i = 0; i < n; i++)
        h = text_fnv1a64(h, values[i], strlen(values[i]) + 1);
    return h;
}

static int same_values(const struct metric *f, const struct series *s,
                       const char *const *values)
{
    for (size_t i = 0; i < f->nlabels; i++)
        if (strcmp(s->values[i], values[i]) != 0)
            return 0;
    return 1;
}

/* Puts series index `idx` into the first free slot of its probe chain. */
static void slot_insert(struct metric *f, size_t idx)
{
    size_t mask = f->nslots - 1;
    const char *const *values = (const char *const *)f->series[idx]->values;
    size_t i = (size_t)hash_values(f->nlabels, values) & mask;
    while (f->slots[i] != 0)
        i = (i + 1) & mask;
    f->slots[i] = idx + 1;
}

/* Makes room for one more series in both the array and the table. */
static int reserve(struct metric *f)
{
    if (f->nseries == f->capseries) {
        size_t cap = f->capseries ? f->capseries * 2 : 4;
        struct series **p = realloc(f->series, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        f->series = p;
        f->capseries = cap;
    }
    if ((f->nseries + 1) * 2 > f->nslots) {
        size_t n = f->nslots ? f->nslots * 2 : 8;
        size_t *slots = calloc(n, sizeof(*slots));
        if (slots == NULL)
            return -1;
        free(f->slots);
        f->slots = slots;
        f->nslots = n;
        for (size_t i = 0; i < f->nseries; i++)
            slot_insert(f, i);
    }
    return 0;
}

static struct series *series_new(const struct metric *f,
                                 const char *const *values)
{
    size_t nb = f->type == METRIC_HISTOGRAM ? f->nbounds + 1 : 0;
    size_t size = sizeof(struct series) + nb * sizeof(uint64_t) +
                  f->nlabels * sizeof(char *);
    for (size_t i = 0; i < f->nlabels; i++)
        size += strlen(values[i]) + 1;

    struct series *s = calloc(1, size);
    if (s == NULL)
        return NULL;
    s->buckets = (uint64_t *)(s + 1);
    s->values = (char **)(s->buckets + nb);
    char *str = (char *)(s->values + f->nlabels);
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t len = strlen(values[i]) + 1;
        memcpy(str, values[i], len);
        s->values[i] = str;
        str += len;
    }
    return s;
}

/* Returns the series of `values`, creating it when `create` is set;
 * NULL when absent (or out of memory, or a NULL value). */
static struct series *series_get(struct metric *f, const char *const *values,
                                 int create)
{
    if (f->nlabels > 0 && values == NULL)
        return NULL;
    for (size_t i = 0; i < f->nlabels; i++)
        if (values[i] == NULL)
            return NULL;
    if (f->nslots > 0) {
        size_t mask = f->nslots - 1;
        size_t i = (size_t)hash_values(f->nlabels, values) & mask;
        while (f->slots[i] != 0) {
            struct series *s = f->series[f->slots[i] - 1];
            if (same_values(f, s, values))
                return s;
            i = (i + 1) & mask;
        }
    }
    if (!create || reserve(f) != 0)
        return NULL;
    struct series *s = series_new(f, values);
    if (s == NULL)
        return NULL;
    f->series[f->nseries] = s;
    slot_insert(f, f->nseries++);
    return s;
}

void metric_clear(struct metric *f)
{
    if (f == NULL || f->nlabels == 0)
        return;
    for (size_t i = 0; i < f->nseries; i++)
        free(f->series[i]);
    f->nseries = 0;
    if (f->nslots > 0)
        memset(f->slots, 0, f->nslots * sizeof(*f->slots));
}

void metric_inc(struct metric *f, double v, const char *const *label_values)
{
    if (f == NULL || f->type == METRIC_HISTOGRAM)
        return;
    if (f->type == METRIC_COUNTER && !(v >= 0))
        return;
    struct series *s = series_get(f, label_values, 1);
    if (s != NULL)
        s->value += v;
}

void metric_set(struct metric *f, double v, const char *const *label_values)
{
    if (f == NULL || f->type == METRIC_HISTOGRAM)
        return;
    struct series *s = series_get(f, label_values, 1);
    if (s != NULL)
        s->value = v;
}

void metric_observe(struct metric *f, double v, const char *const *label_values)
{
    if (f == NULL || f->type != METRIC_HISTOGRAM)
        return;
    struct series *s = series_get(f, label_values, 1);
    if (s == NULL)
        return;
    size_t i = 0;
    while (i < f->nbounds && !(v <= f->bounds[i]))
        i++;
    s->buckets[i]++;
    s->count++;
    s->value += v;
}

double metric_value(struct metric *f, const char *const *label_values)
{
    struct series *s = f != NULL ? series_get(f, label_values, 0) : NULL;
    if (s == NULL)
        return 0;
    return f->type == METRIC_HISTOGRAM ? (double)s->count : s->value;
}

double metric_bucket(struct metric *f, size_t i,
                     const char *const *label_values)
{
    struct series *s = f != NULL ? series_get(f, label_values, 0) : NULL;
    if (s == NULL || f->type != METRIC_HISTOGRAM || i > f->nbounds)
        return 0;
    uint64_t n = 0;
    for (size_t k = 0; k <= i; k++)
        n += s->buckets[k];
    return (double)n;
}

/* --- number formatting ------------------------------------------------- */

/*
 * Go's strconv.FormatFloat(v, 'g', -1, 64): the shortest digits that
 * read back as v, in %e form when the decimal exponent is below -4 or at
 * least 6, else plainly. The shortest digits are found by widening %.*e
 * until strtod gives v back.
 */
static void format_go(char *out, size_t size, double v)
{
    char tmp[40];
    char digits[24];
    size_t nd = 0;
    int exp = 0;

    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    const char *q = tmp;
    int neg = *q == '-';
    if (neg)
        q++;
    for (; *q != 'e' && *q != '\0'; q++)
        if (*q >= '0' && *q <= '9' && nd < sizeof digits - 1)
            digits[nd++] = *q;
    if (*q == 'e')
        exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';

    size_t n = 0;
    char buf[64];
    if (neg)
        buf[n++] = '-';
    if (exp < -4 || exp >= 6) {
        buf[n++] = digits[0];
        if (nd > 1) {
            buf[n++] = '.';
            memcpy(buf + n, digits + 1, nd - 1);
            n += nd - 1;
        }
        snprintf(buf + n, sizeof buf - n, "e%c%02d", exp < 0 ? '-' : '+',
                 exp < 0 ? -exp : exp);
    } else if (exp >= 0) {
        /* exp <= 5: at most 6 integer digits, padded with zeros. */
        for (int i = 0; i <= exp; i++)
            buf[n++] = (size_t)i < nd ? digits[i] : '0';
        if (nd > (size_t)exp + 1) {
            buf[n++] = '.';
            memcpy(buf + n, digits + exp + 1, nd - (size_t)exp - 1);
            n += nd - (size_t)exp - 1;
        }
        buf[n] = '\0';
    } else {
        buf[n++] = '0';
        buf[n++] = '.';
        for (int i = -1; i > exp; i--)
            buf[n++] = '0';
        memcpy(buf + n, digits, nd);
        n += nd;
        buf[n] = '\0';
    }
    snprintf(out, size, "%s", buf);
}

static void format_value(char *out, size_t size, double v)
{
    if (isnan(v))
        snprintf(out, size, "NaN");
    else if (isinf(v))
        snprintf(out, size, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v == 0)
        snprintf(out, size, "0"); /* also -0, as Go writes it */
    else if (fabs(v) < 1e15 && v == trunc(v))
        snprintf(out, size, "%.0f", v);
    else
        format_go(out, size, v);
}

int metrics_format_value(struct dbuf *out, double v)
{
    char buf[64];
    format_value(buf, sizeof buf, v);
    return dbuf_adds(out, buf);
}

/* --- rendering --------------------------------------------------------- */

/* Appends stop at the first failure: a failed dbuf append empties the
 * buffer, and later appends must not refill it with a truncated text. */
struct writer {
    struct dbuf *out;
    int rc;
};

static void put(struct writer *w, const char *s)
{
    if (w->rc == 0)
        w->rc = dbuf_adds(w->out, s);
}

static void put_char(struct writer *w, char c)
{
    if (w->rc == 0)
        w->rc = dbuf_addc(w->out, c);
}

static void put_value(struct writer *w, double v)
{
    char buf[64];
    format_value(buf, sizeof buf, v);
    put(w, buf);
}

/* Escapes \ and newline, plus " when `quote` (label values). */
static void put_escaped(struct writer *w, const char *s, int quote)
{
    const char *run = s;
    for (const char *p = s;; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (*p == '"' && quote)
            esc = "\\\"";
        else if (*p != '\0')
            continue;
        if (w->rc == 0 && p > run)
            w->rc = dbuf_add(w->out, run, (size_t)(p - run));
        if (esc == NULL)
            return;
        put(w, esc);
        run = p + 1;
    }
}

static void put_header(struct writer *w, const char *name, const char *help,
                       const char *type)
{
    put(w, "# HELP ");
    put(w, name);
    put_char(w, ' ');
    put_escaped(w, help, 0);
    put(w, "\n# TYPE ");
    put(w, name);
    put_char(w, ' ');
    put(w, type);
    put_char(w, '\n');
}

/* One sample line: name+suffix, the series' labels plus an optional le,
 * the value. */
static void put_sample(struct writer *w, const struct metric *f,
                       const struct series *s, const char *suffix,
                       const char *le, double v)
{
    put(w, f->name);
    put(w, suffix);
    if (f->nlabels > 0 || le != NULL) {
        put_char(w, '{');
        for (size_t i = 0; i < f->nlabels; i++) {
            if (i > 0)
                put_char(w, ',');
            put(w, f->labels[i]);
            put(w, "=\"");
            put_escaped(w, s->values[i], 1);
            put_char(w, '"');
        }
        if (le != NULL) {
            if (f->nlabels > 0)
                put_char(w, ',');
            put(w, "le=\"");
            put(w, le);
            put_char(w, '"');
        }
        put_char(w, '}');
    }
    put_char(w, ' ');
    put_value(w, v);
    put_char(w, '\n');
}

static const struct metric *sort_family; /* qsort has no context argument */

static int series_cmp(const void *a, const void *b)
{
    const struct series *x = *(const struct series *const *)a;
    const struct series *y = *(const struct series *const *)b;
    for (size_t i = 0; i < sort_family->nlabels; i++) {
        int c = strcmp(x->values[i], y->values[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

static void put_family(struct writer *w, const struct metric *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};

    if (f->nseries == 0 || w->rc != 0)
        return;
    struct series **order = malloc(f->nseries * sizeof(*order));
    if (order == NULL) {
        w->rc = DBUF_NOMEM;
        return;
    }
    memcpy(order, f->series, f->nseries * sizeof(*order));
    sort_family = f;
    qsort(order, f->nseries, sizeof(*order), series_cmp);
    sort_family = NULL;

    put_header(w, f->name, f->help, types[f->type]);
    for (size_t i = 0; i < f->nseries; i++) {
        const struct series *s = order[i];
        if (f->type != METRIC_HISTOGRAM) {
            put_sample(w, f, s, "", NULL, s->value);
            continue;
        }
        uint64_t cum = 0;
        char le[64];
        for (size_t b = 0; b <= f->nbounds; b++) {
            cum += s->buckets[b];
            format_value(le, sizeof le,
                         b < f->nbounds ? f->bounds[b] : INFINITY);
            put_sample(w, f, s, "_bucket", le, (double)cum);
        }
        put_sample(w, f, s, "_sum", NULL, s->value);
        put_sample(w, f, s, "_count", NULL, (double)s->count);
    }
    free(order);
}

/* --- process metrics --------------------------------------------------- */

/* Reads a small /proc file into buf (NUL-terminated); 0 or -1. */
static int read_small(const char *path, char *buf, size_t size)
{
    FILE *fp = fopen(path, "re");
    if (fp == NULL)
        return -1;
    size_t n = fread(buf, 1, size - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* Seconds since the epoch at which the process started: starttime (clock
 * ticks after boot, field 22 of /proc/self/stat) plus btime of /proc/stat.
 * Constant for the process, so computed once; -1 when unknown. */
static double start_time(void)
{
    static double cached = -2;
    char buf[4096];

    if (cached != -2)
        return cached;
    cached = -1;
    if (read_small("/proc/self/stat", buf, sizeof buf) != 0)
        return cached;
    /* The command name (field 2) may hold spaces and parentheses: count
     * fields from the last ')', which ends it; field 3 follows. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return cached;
    p++;
    unsigned long long ticks = 0;
    for (int field = 3; field <= 22; field++) {
        char *end;
        while (*p == ' ')
            p++;
        if (field == 22)
            ticks = strtoull(p, &end, 10);
        else
            end = strpbrk(p, " ");
        if (end == NULL || end == p)
            return cached;
        p = end;
    }
    long hz = sysconf(_SC_CLK_TCK);
    FILE *fp = fopen("/proc/stat", "re");
    if (fp == NULL || hz <= 0) {
        if (fp != NULL)
            fclose(fp);
        return cached;
    }
    unsigned long long btime = 0;
    int found = 0;
    while (!found && fgets(buf, sizeof buf, fp) != NULL)
        found = sscanf(buf, "btime %llu", &btime) == 1;
    fclose(fp);
    if (found)
        cached = (double)btime + (double)ticks / (double)hz;
    return cached;
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (d == NULL)
        return -1;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void put_process_one(struct writer *w, const char *name,
                            const char *type, const char *help, double v)
{
    put_header(w, name, help, type);
    put(w, name);
    put_char(w, ' ');
    put_value(w, v);
    put_char(w, '\n');
}

/*
 * The allocator's own figures, which RssAnon cannot tell apart: bytes
 * handed out by malloc (arena chunks in use plus mmap'd blocks) and free
 * bytes it keeps (free chunks and the arena's top, resident or not until
 * malloc_trim returns them). glibc 2.33+ only (mallinfo2; mallinfo's int
 * fields wrap at 2 GiB); elsewhere nothing is rendered. They come first:
 * "dittofs_heap_*" sorts before "process_*".
 */
static void put_heap(struct writer *w)
{
#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    put_process_one(w, "dittofs_heap_free_bytes", "gauge",
                    "Free bytes held by the allocator (glibc mallinfo2 "
                    "fordblks: free chunks and the top of the arenas).",
                    (double)mi.fordblks);
    put_process_one(w, "dittofs_heap_inuse_bytes", "gauge",
                    "Bytes allocated and not freed (glibc mallinfo2 "
                    "uordblks + hblkhd: arena chunks in use and mmap'd "
                    "blocks).",
                    (double)(mi.uordblks + mi.hblkhd));
#else
    (void)w;
#endif
}

/* The families of client_golang's process collector, in its (sorted)
 * order, with its help texts, after the allocator's (put_heap). */
static void put_process(struct writer *w)
{
    struct rusage ru;
    struct rlimit rl;
    char buf[256];
    unsigned long long vsize = 0, rss = 0;
    int have_statm = 0;

    put_heap(w);
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                     (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
        put_process_one(w, "process_cpu_seconds_total", "counter",
                        "Total user and system CPU time spent in seconds.",
                        cpu);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        double max =
            rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
        put_process_one(w, "process_max_fds", "gauge",
                        "Maximum number of open file descriptors.", max);
    }
    long fds = open_fds();
    if (fds >= 0)
        put_process_one(w, "process_open_fds", "gauge",
                        "Number of open file descriptors.", (double)fds);
    if (read_small("/proc/self/statm", buf, sizeof buf) == 0 &&
        sscanf(buf, "%llu %llu", &vsize, &rss) == 2)
        have_statm = 1;
    long page = sysconf(_SC_PAGESIZE);
    if (have_statm && page > 0)
        put_process_one(w, "process_resident_memory_bytes", "gauge",
                        "Resident memory size in bytes.",
                        (double)rss * (double)page);
    double start = start_time();
    if (start >= 0)
        put_process_one(
            w, "process_start_time_seconds", "gauge",
            "Start time of the process since unix epoch in seconds.", start);
    if (have_statm && page > 0)
        put_process_one(w, "process_virtual_memory_bytes", "gauge",
                        "Virtual memory size in bytes.",
                        (double)vsize * (double)page);
}

int metrics_render(struct metrics *m, struct dbuf *out, int with_process)
{
    struct writer w = {out, 0};
    for (const struct metric *f = m != NULL ? m->first : NULL; f != NULL;
         f = f->next)
        put_family(&w, f);
    if (with_process)
        put_process(&w);
    if (w.rc != 0)
        dbuf_free(out);
    return w.rc;
}
