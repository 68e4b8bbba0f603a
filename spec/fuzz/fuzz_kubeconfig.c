/*
 * fuzz_kubeconfig: the kubeconfig loader (core/kubeconfig.c) on any bytes
 * as the file given to --kubeconfig: YAML, the clusters/users/contexts
 * lookup, base64 *-data fields, exec sections, URLs. It only loads: an
 * exec plugin named by the input is never run (kube_conn_authorization is
 * not called). A successful load has a server URL with a scheme, a
 * namespace and a source; a failure has a message. The input also goes
 * through the base64 decoder used for *-data (core/text.c): what decodes,
 * re-encodes and decodes to the same bytes.
 */
#include <errno.h>

#include "fuzz.h"
#include "kubeconfig.h"
#include "log.h"
#include "text.h"

static void check_base64(const uint8_t *data, size_t size)
{
    unsigned char *out = NULL, *again = NULL;
    size_t outlen = 0, againlen = 0;
    int rc = text_base64_decode((const char *)data, size, &out, &outlen);
    if (rc != 0) {
        FUZZ_CHECK(rc == -EINVAL && out == NULL, "decode failed with %d", rc);
        return;
    }
    FUZZ_CHECK(outlen <= size / 4 * 3 + 3, "%zu bytes from %zu", outlen, size);
    char *enc = text_base64_encode(out, outlen);
    FUZZ_CHECK(enc != NULL, "encode failed");
    rc = text_base64_decode(enc, strlen(enc), &again, &againlen);
    FUZZ_CHECK(rc == 0 && againlen == outlen && memcmp(again, out, outlen) == 0,
               "re-encoding does not decode to the same bytes: %s", enc);
    free(enc);
    free(out);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        log_set_level(LOG_ERROR);
        once = 1;
    }
    check_base64(data, size);

    char path[256], err[512];
    if (fuzz_tmpfile(data, size, path) != 0)
        return 0;
    struct kubeconfig_opts o = {
        .path = path,
        /* odd sizes also try the loopback http:// allowance */
        .allow_insecure_http_loopback = (int)(size & 1),
    };
    struct kube_conn *c = NULL;
    err[0] = '\0';
    int rc = kube_conn_load(&c, &o, err, sizeof(err));
    unlink(path);
    if (rc != KUBE_CONN_OK) {
        FUZZ_CHECK(c == NULL, "failed load returned a connection");
        FUZZ_CHECK(err[0] != '\0', "failed load without a message (%d)", rc);
        FUZZ_CHECK(rc == KUBE_CONN_ECONFIG || rc == KUBE_CONN_EIO ||
                       rc == KUBE_CONN_ENOMEM,
                   "unexpected code %d: %s", rc, err);
        return 0;
    }
    const char *server = kube_conn_server(c);
    FUZZ_CHECK(server != NULL && (strncmp(server, "https://", 8) == 0 ||
                                  strncmp(server, "http://", 7) == 0),
               "server without a scheme: %s", server ? server : "(null)");
    FUZZ_CHECK(server[strlen(server) - 1] != '/', "trailing slash: %s", server);
    FUZZ_CHECK(kube_conn_namespace(c)[0] != '\0', "empty namespace");
    FUZZ_CHECK(kube_conn_source(c) != NULL, "no source");
    kube_conn_free(c);
    return 0;
}
