/*
 * log: one structured line per event on stderr, as text
 * (`ts=... level=info msg="..." key=value`) or as JSON. Callers pass the
 * message and then key/value string pairs, ending with NULL:
 *     log_info("watch restarted", "resource", "configmaps", "rv", rv, NULL);
 * Never pass a token or a secret value. Uses dbuf, text.
 */
#ifndef DITTOFS_LOG_H
#define DITTOFS_LOG_H

enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO = 1,
    LOG_WARN = 2,
    LOG_ERROR = 3,
};

/* Returns 0 and sets *out for "debug", "info", "warn", "error"; else -1. */
int log_parse_level(const char *s, enum log_level *out);
void log_set_level(enum log_level level);
/* json != 0 selects JSON lines. */
void log_set_json(int json);
int log_enabled(enum log_level level);

void log_emit(enum log_level level, const char *msg, ...)
    __attribute__((sentinel));

#define log_debug(...) log_emit(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_emit(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_emit(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_emit(LOG_ERROR, __VA_ARGS__)

#endif
