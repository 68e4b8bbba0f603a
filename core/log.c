/* log: structured log lines; see log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dbuf.h"
#include "log.h"
#include "text.h"

static enum log_level min_level = LOG_INFO;
static int as_json;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_parse_level(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(enum log_level level)
{
    min_level = level;
}

void log_set_json(int json)
{
    as_json = json;
}

int log_enabled(enum log_level level)
{
    return level >= min_level;
}

/* Appends `s` quoted for JSON, or for logfmt when it needs quoting. */
static void add_quoted(struct dbuf *b, const char *s, int always)
{
    int need = always || *s == '\0';
    for (const char *p = s; !need && *p; p++)
        need = (unsigned char)*p <= ' ' || *p == '"' || *p == '=' ||
               *p == '\\' || (unsigned char)*p >= 0x7f;
    if (!need) {
        dbuf_adds(b, s);
        return;
    }
    text_json_quote(b, s, strlen(s));
}

void log_emit(enum log_level level, const char *msg, ...)
{
    if (level < min_level)
        return;
    char ts[40];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

    struct dbuf b;
    dbuf_init(&b, 64 * 1024);
    if (as_json)
        dbuf_addf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts,
                  level_names[level]);
    else
        dbuf_addf(&b, "ts=%s level=%s msg=", ts, level_names[level]);
    add_quoted(&b, msg, 1);

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        if (v == NULL)
            v = "";
        if (as_json) {
            dbuf_addc(&b, ',');
            add_quoted(&b, k, 1);
            dbuf_addc(&b, ':');
            add_quoted(&b, v, 1);
        } else {
            dbuf_addf(&b, " %s=", k);
            add_quoted(&b, v, 0);
        }
    }
    va_end(ap);
    dbuf_adds(&b, as_json ? "}\n" : "\n");
    fwrite(dbuf_ptr(&b), 1, dbuf_len(&b), stderr);
    dbuf_free(&b);
}
