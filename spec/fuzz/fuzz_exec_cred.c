/*
 * fuzz_exec_cred: what an exec credential plugin prints
 * (core/exec_cred.c: exec_cred_parse, both API versions, and the RFC 3339
 * parser of its expirationTimestamp). A parsed credential carries a token
 * or a client certificate and key; an error never quotes the token.
 */
#include <cjson/cJSON.h>

#include "exec_cred.h"
#include "fuzz.h"

/* The status.token of the input, if any (for the "no secret in errors"
 * check); malloc'd or NULL. */
static char *input_token(const uint8_t *data, size_t size)
{
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(st, "token");
    char *t = cJSON_IsString(tok) && tok->valuestring != NULL
                  ? strdup(tok->valuestring)
                  : NULL;
    cJSON_Delete(root);
    return t;
}

/* How often the string t occurs in data[0..size). */
static size_t occurrences(const uint8_t *data, size_t size, const char *t)
{
    size_t n = 0, tl = strlen(t);
    for (size_t i = 0; i + tl <= size; i++)
        n += memcmp(data + i, t, tl) == 0;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const versions[] = {EXEC_CRED_V1, EXEC_CRED_V1BETA1};
    char err[512];

    for (int i = 0; i < 2; i++) {
        struct exec_cred_result r;
        err[0] = '\0';
        int rc = exec_cred_parse((const char *)data, size, versions[i],
                                 "fuzz-plugin", &r, err, sizeof(err));
        if (rc == 0) {
            FUZZ_CHECK(r.token != NULL || (r.cert != NULL && r.key != NULL),
                       "a credential without token or certificate");
            exec_cred_result_free(&r);
            continue;
        }
        FUZZ_CHECK(rc == -1 && err[0] != '\0', "failure %d without message",
                   rc);
        /* a token that also appears elsewhere in the input (say, in the
         * apiVersion an error quotes) proves nothing */
        char *tok = input_token(data, size);
        if (tok != NULL && strlen(tok) >= 8 &&
            occurrences(data, size, tok) == 1)
            FUZZ_CHECK(strstr(err, tok) == NULL, "the error quotes the token");
        free(tok);
        exec_cred_result_free(&r);
    }

    /* the timestamp parser on the input as a C string */
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    time_t t;
    if (exec_cred_parse_time(s, &t) == 0 && strlen(s) == 20 && s[19] == 'Z' &&
        s[10] == 'T' && s[17] < '6') {
        /* plain UTC without fraction or offset: formatting the result
         * gives the input back when the date exists */
        struct tm tm;
        char back[64];
        if (gmtime_r(&t, &tm) != NULL &&
            strftime(back, sizeof(back), "%Y-%m-%dT%H:%M:%SZ", &tm) == 20 &&
            memcmp(back, s, 8) == 0)
            FUZZ_CHECK(memcmp(back, s, 20) == 0 ||
                           memcmp(back + 8, s + 8, 2) != 0,
                       "%s parsed as %s", s, back);
    }
    free(s);
    return 0;
}
