/*
 * fuzz_exec_cred: what an exec credential plugin prints
 * (core/exec_cred.c: exec_cred_parse, both API versions, and the RFC 3339
 * parser of its expirationTimestamp). A parsed credential carries a token
 * or a client certificate and key; an error never quotes the token.
 */
#include <cjson/cJSON.h>

#include "exec_cred.h"
#include "fuzz.h"

#define CANARY "zQ7-canary-t0ken-Xv"

/*
 * The input with status.token replaced by CANARY (a word no message holds),
 * printed back; NULL when the input has no string token or already holds
 * the canary. malloc'd.
 */
static char *with_canary(const uint8_t *data, size_t size)
{
    size_t cl = strlen(CANARY);
    for (size_t i = 0; i + cl <= size; i++)
        if (memcmp(data + i, CANARY, cl) == 0)
            return NULL;
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
    cJSON *tok = cJSON_GetObjectItemCaseSensitive(st, "token");
    char *out = NULL;
    if (cJSON_IsString(tok) && cJSON_ReplaceItemInObjectCaseSensitive(
                                   st, "token", cJSON_CreateString(CANARY)))
        out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
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
        /* the same output with a recognisable token: never quoted */
        char *c = with_canary(data, size);
        if (c != NULL) {
            struct exec_cred_result r2;
            err[0] = '\0';
            if (exec_cred_parse(c, strlen(c), versions[i], "fuzz-plugin", &r2,
                                err, sizeof(err)) != 0)
                FUZZ_CHECK(strstr(err, CANARY) == NULL,
                           "the error quotes the token: %s", err);
            exec_cred_result_free(&r2);
            free(c);
        }
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
