/*
 * metrics: a registry of Prometheus metric families (counters, gauges,
 * histograms) with labels, rendered in the text exposition format 0.0.4,
 * plus the process_* metrics of client_golang's process collector read
 * from /proc/self. Single-threaded: call it from the loop only. Families
 * render in registration order, series sorted by their label values.
 * Uses dbuf.
 */
#ifndef DITTOFS_METRICS_H
#define DITTOFS_METRICS_H

#include <stddef.h>

struct dbuf;

struct metrics; /* a registry */
struct metric;  /* a family, owned by its registry */

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* --- registry ---------------------------------------------------------- */

/* Returns an empty registry, or NULL when out of memory. */
struct metrics *metrics_new(void);
/* Frees the registry and every family of it. NULL is a no-op. */
void metrics_free(struct metrics *m);

/*
 * Registers a family. `name` and each label name must match
 * [a-zA-Z_:][a-zA-Z0-9_:]* (labels: no ':', not starting with "__", and a
 * histogram may not use "le"); `labels` is a NULL-terminated list (NULL
 * or {NULL}: no labels). `buckets`: the upper bounds of a histogram,
 * strictly increasing, without +Inf (added implicitly); NULL takes the
 * Prometheus defaults .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10. Ignored
 * for other types. Every string is copied.
 * Returns the family, or NULL when out of memory, when a name is invalid,
 * or when `name` is registered already. A family without labels has its
 * one series from the start (rendered as 0); a family with labels renders
 * nothing until a series exists.
 */
struct metric *metrics_add(struct metrics *m, enum metric_type t,
                           const char *name, const char *help,
                           const char *const *labels, const double *buckets,
                           size_t nbuckets);

/* --- series ------------------------------------------------------------ */

/*
 * `label_values` holds one value per label of the family, in the order of
 * registration (NULL when the family has no labels); the series is
 * created on first use. Every function below is a no-op when f is NULL,
 * when the call does not fit the type, or when the series cannot be
 * allocated: metrics never fail the caller.
 */

/* Counter or gauge += v (a counter ignores v < 0 and NaN). */
void metric_inc(struct metric *f, double v, const char *const *label_values);
/* Gauge = v; also allowed on a counter, to mirror a count kept elsewhere
 * (the caller keeps it monotonic). */
void metric_set(struct metric *f, double v, const char *const *label_values);
/* Histogram: counts v in the first bucket with v <= bound, adds it to the
 * sum and the count. */
void metric_observe(struct metric *f, double v,
                    const char *const *label_values);
/* Drops every series of a family with labels (an info metric whose
 * labels changed: only the new series should be rendered); a no-op for a
 * family without labels. */
void metric_clear(struct metric *f);
/* For tests: a counter's or gauge's value, a histogram's count; 0 when
 * the series does not exist. */
double metric_value(struct metric *f, const char *const *label_values);
/* For tests: the cumulative count of histogram bucket `i` (i == nbuckets:
 * +Inf), 0 when absent. */
double metric_bucket(struct metric *f, size_t i,
                     const char *const *label_values);

/* --- exposition -------------------------------------------------------- */

/*
 * Appends the text exposition format 0.0.4 of every family to `out`:
 * "# HELP" (help escaped: \\ and \n) and "# TYPE" lines, samples with
 * label values escaped (\\ \" \n), histograms as _bucket{le="..."}
 * (cumulative, last le="+Inf"), _sum and _count. Numbers: integral values
 * below 1e15 in magnitude plainly ("42", "0"), others like Go's
 * strconv.FormatFloat(v, 'g', -1, 64) ("0.005", "1.5e-07", "2.5e+20"),
 * and "+Inf", "-Inf", "NaN". When with_process != 0, adds
 * process_cpu_seconds_total, process_max_fds, process_open_fds,
 * process_resident_memory_bytes, process_start_time_seconds and
 * process_virtual_memory_bytes (each skipped if /proc cannot tell),
 * preceded with glibc 2.33+ by dittofs_heap_free_bytes and
 * dittofs_heap_inuse_bytes (mallinfo2: free bytes the allocator holds,
 * bytes allocated).
 * m may be NULL (process metrics only). Returns 0 or the dbuf error
 * (DBUF_NOMEM, DBUF_TOOBIG: out is then empty).
 */
int metrics_render(struct metrics *m, struct dbuf *out, int with_process);

/* Appends v formatted as described above (for tests and other users). */
int metrics_format_value(struct dbuf *out, double v);

#endif
