/*
 * dl: libcurl, libcrypto and libmicrohttpd loaded lazily. dl.c defines
 * every curl_*, OpenSSL and MHD_* function the core (and its tests) call,
 * with the prototypes of <curl/curl.h>, the OpenSSL headers and
 * <microhttpd.h>; each forwards to the real function, resolved with
 * dlopen("libcurl.so.4") / dlopen("libcrypto.so.3") /
 * dlopen("libmicrohttpd.so.12") on first use. So a binary that never
 * touches the transport or the HTTP server (--script-test, --version)
 * never maps those libraries and their ~36 dependencies (GnuTLS among
 * them, through libmicrohttpd).
 * If a library cannot be loaded, the calls return their documented failure
 * value (CURLE_FAILED_INIT, NULL, ...) and one error line names it.
 * Uses log.
 */
#ifndef DITTOFS_DL_H
#define DITTOFS_DL_H

/* Loads libcurl.so.4 (once per process). Returns 0 when it is usable, -1
 * (after logging which library is missing) when it is not. */
int dl_curl_load(void);

/* Loads libcrypto.so.3 (once per process). Returns 0 or -1 as above. */
int dl_crypto_load(void);

/* Loads libmicrohttpd.so.12 (once per process). Returns 0 or -1 as
 * above. */
int dl_mhd_load(void);

#endif
