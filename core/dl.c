/*
 * dl: lazy libcurl / libcrypto / libmicrohttpd. Each public function below has
 * the exact prototype of the library's header (the compiler checks it against
 * the header's declaration) and forwards to a pointer filled in by dlsym the
 * first time any function of that library is called. Release functions
 * (cleanup, free) never load a library: nothing can have been allocated
 * by a library that is not loaded.
 */
/* The gcc typecheck wrappers (and the 3-argument macros) would rewrite
 * our own definitions of the variadic functions. */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <microhttpd.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "dl.h"
#include "log.h"

/* Every definition below is hidden: the binary links with -Wl,-E, and an
 * exported curl_* or X509_free would interpose on the libraries' calls to
 * their own functions (libcrypto calls BIO_free, X509_free, ... through its
 * PLT), sending them here, possibly before this file has resolved them.
 * Hidden, the core's calls still bind here (static linking) and the
 * libraries bind to themselves. */
#pragma GCC visibility push(hidden)

/* X(name) for every function forwarded; the pointer is p_<name>. */
#define CURL_FUNCTIONS(X)                                                      \
    X(curl_global_init)                                                        \
    X(curl_global_cleanup)                                                     \
    X(curl_free)                                                               \
    X(curl_getdate)                                                            \
    X(curl_slist_append)                                                       \
    X(curl_slist_free_all)                                                     \
    X(curl_easy_init)                                                          \
    X(curl_easy_cleanup)                                                       \
    X(curl_easy_setopt)                                                        \
    X(curl_easy_getinfo)                                                       \
    X(curl_easy_perform)                                                       \
    X(curl_easy_escape)                                                        \
    X(curl_easy_strerror)                                                      \
    X(curl_multi_init)                                                         \
    X(curl_multi_cleanup)                                                      \
    X(curl_multi_setopt)                                                       \
    X(curl_multi_add_handle)                                                   \
    X(curl_multi_remove_handle)                                                \
    X(curl_multi_perform)                                                      \
    X(curl_multi_poll)                                                         \
    X(curl_multi_wakeup)                                                       \
    X(curl_multi_info_read)                                                    \
    X(curl_multi_strerror)

#define CRYPTO_FUNCTIONS(X)                                                    \
    X(BIO_new_mem_buf)                                                         \
    X(BIO_free)                                                                \
    X(ERR_clear_error)                                                         \
    X(EVP_DecodeBlock)                                                         \
    X(EVP_PKEY_free)                                                           \
    X(PEM_read_bio_PrivateKey)                                                 \
    X(PEM_read_bio_X509)                                                       \
    X(X509_check_private_key)                                                  \
    X(X509_free)

/* MHD_start_daemon is variadic: it forwards to MHD_start_daemon_va. */
#define MHD_FUNCTIONS(X)                                                       \
    X(MHD_start_daemon_va)                                                     \
    X(MHD_stop_daemon)                                                         \
    X(MHD_get_daemon_info)                                                     \
    X(MHD_run)                                                                 \
    X(MHD_get_timeout)                                                         \
    X(MHD_get_connection_values)                                               \
    X(MHD_create_response_from_buffer)                                         \
    X(MHD_add_response_header)                                                 \
    X(MHD_queue_response)                                                      \
    X(MHD_destroy_response)

#define DECLARE_POINTER(name) static __typeof__(name) *p_##name;
CURL_FUNCTIONS(DECLARE_POINTER)
CRYPTO_FUNCTIONS(DECLARE_POINTER)
MHD_FUNCTIONS(DECLARE_POINTER)

struct symbol {
    const char *name;
    void *slot; /* address of the p_<name> function pointer */
};

#define SYMBOL_ENTRY(name) {#name, &p_##name},
static const struct symbol curl_symbols[] = {CURL_FUNCTIONS(SYMBOL_ENTRY)};
static const struct symbol crypto_symbols[] = {CRYPTO_FUNCTIONS(SYMBOL_ENTRY)};
static const struct symbol mhd_symbols[] = {MHD_FUNCTIONS(SYMBOL_ENTRY)};

struct library {
    const char *soname;
    const char *hint; /* how to install it, for the error line */
    const struct symbol *symbols;
    size_t nsymbols;
    int state; /* 0 loaded, -1 unusable; valid after the once-call */
};

static struct library curl_lib = {
    "libcurl.so.4", "apt-get install libcurl4", curl_symbols,
    sizeof curl_symbols / sizeof curl_symbols[0], -1};
static struct library crypto_lib = {
    "libcrypto.so.3", "apt-get install libssl3", crypto_symbols,
    sizeof crypto_symbols / sizeof crypto_symbols[0], -1};

static struct library mhd_lib = {
    "libmicrohttpd.so.12", "apt-get install libmicrohttpd12", mhd_symbols,
    sizeof mhd_symbols / sizeof mhd_symbols[0], -1};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static pthread_once_t crypto_once = PTHREAD_ONCE_INIT;
static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;

/* Opens lib and resolves every symbol, or leaves it unusable (state -1)
 * with one error line; the handle is kept for the life of the process.
 * RTLD_LOCAL keeps the library's symbols out of the global scope, so they
 * never compete with the definitions in this file. */
static void library_open(struct library *lib)
{
    char msg[128];
    void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);

    if (h == NULL) {
        const char *why = dlerror();

        snprintf(msg, sizeof msg, "%s not found: %s", lib->soname, lib->hint);
        log_error(msg, "error", why != NULL ? why : "dlopen failed", NULL);
        return;
    }
    for (size_t i = 0; i < lib->nsymbols; i++) {
        void *sym = dlsym(h, lib->symbols[i].name);

        if (sym == NULL) {
            snprintf(msg, sizeof msg, "%s lacks a function", lib->soname);
            log_error(msg, "symbol", lib->symbols[i].name, NULL);
            return;
        }
        /* POSIX: a data pointer from dlsym converts to a function pointer
         * of the same representation; memcpy avoids the aliasing cast. */
        memcpy(lib->symbols[i].slot, &sym, sizeof sym);
    }
    lib->state = 0;
}

static void curl_open(void)
{
    library_open(&curl_lib);
}

static void crypto_open(void)
{
    library_open(&crypto_lib);
}

static void mhd_open(void)
{
    library_open(&mhd_lib);
}

int dl_curl_load(void)
{
    pthread_once(&curl_once, curl_open);
    return curl_lib.state;
}

int dl_crypto_load(void)
{
    pthread_once(&crypto_once, crypto_open);
    return crypto_lib.state;
}

int dl_mhd_load(void)
{
    pthread_once(&mhd_once, mhd_open);
    return mhd_lib.state;
}

/* --- libcurl: global and helpers --------------------------------------- */

CURLcode curl_global_init(long flags)
{
    if (dl_curl_load() != 0)
        return CURLE_FAILED_INIT;
    return p_curl_global_init(flags);
}

void curl_global_cleanup(void)
{
    /* Without a prior curl_global_init the library is never opened here:
     * pthread_once has run at most with a failed load, or not at all. */
    if (curl_lib.state == 0)
        p_curl_global_cleanup();
}

void curl_free(void *p)
{
    if (p != NULL && curl_lib.state == 0)
        p_curl_free(p);
}

time_t curl_getdate(const char *p, const time_t *unused)
{
    if (dl_curl_load() != 0)
        return -1;
    return p_curl_getdate(p, unused);
}

struct curl_slist *curl_slist_append(struct curl_slist *list, const char *data)
{
    if (dl_curl_load() != 0)
        return NULL;
    return p_curl_slist_append(list, data);
}

void curl_slist_free_all(struct curl_slist *list)
{
    if (list != NULL && curl_lib.state == 0)
        p_curl_slist_free_all(list);
}

/* --- libcurl: easy interface ------------------------------------------- */

CURL *curl_easy_init(void)
{
    if (dl_curl_load() != 0)
        return NULL;
    return p_curl_easy_init();
}

void curl_easy_cleanup(CURL *curl)
{
    if (curl != NULL && curl_lib.state == 0)
        p_curl_easy_cleanup(curl);
}

/* curl_easy_setopt and curl_multi_setopt take exactly one argument after
 * the option, whose C type is encoded in the option number: below
 * CURLOPTTYPE_OBJECTPOINT a long, then a data pointer (object, string,
 * slist, callback data), then a function pointer, then a curl_off_t, then
 * a struct curl_blob *. Read it as that type and pass it on as that type. */
CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    va_list ap;
    CURLcode rc;

    if (dl_curl_load() != 0)
        return CURLE_FAILED_INIT;
    va_start(ap, option);
    if (option < CURLOPTTYPE_OBJECTPOINT)
        rc = p_curl_easy_setopt(curl, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        rc = p_curl_easy_setopt(curl, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        rc = p_curl_easy_setopt(curl, option, va_arg(ap, void (*)(void)));
    else if (option < CURLOPTTYPE_BLOB)
        rc = p_curl_easy_setopt(curl, option, va_arg(ap, curl_off_t));
    else
        rc = p_curl_easy_setopt(curl, option, va_arg(ap, struct curl_blob *));
    va_end(ap);
    return rc;
}

/* Every CURLINFO takes a pointer to the result. */
CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    va_list ap;
    CURLcode rc;

    if (dl_curl_load() != 0)
        return CURLE_FAILED_INIT;
    va_start(ap, info);
    rc = p_curl_easy_getinfo(curl, info, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

CURLcode curl_easy_perform(CURL *curl)
{
    if (dl_curl_load() != 0)
        return CURLE_FAILED_INIT;
    return p_curl_easy_perform(curl);
}

char *curl_easy_escape(CURL *handle, const char *string, int length)
{
    if (dl_curl_load() != 0)
        return NULL;
    return p_curl_easy_escape(handle, string, length);
}

/* Always returns a string, also when libcurl is missing (the code is then
 * most likely our own CURLE_FAILED_INIT). */
const char *curl_easy_strerror(CURLcode code)
{
    if (dl_curl_load() != 0)
        return "libcurl.so.4 is not available";
    return p_curl_easy_strerror(code);
}

/* --- libcurl: multi interface ------------------------------------------ */

CURLM *curl_multi_init(void)
{
    if (dl_curl_load() != 0)
        return NULL;
    return p_curl_multi_init();
}

CURLMcode curl_multi_cleanup(CURLM *multi_handle)
{
    if (multi_handle == NULL || curl_lib.state != 0)
        return CURLM_BAD_HANDLE;
    return p_curl_multi_cleanup(multi_handle);
}

CURLMcode curl_multi_setopt(CURLM *multi_handle, CURLMoption option, ...)
{
    va_list ap;
    CURLMcode rc;

    if (dl_curl_load() != 0)
        return CURLM_INTERNAL_ERROR;
    va_start(ap, option);
    if (option < CURLOPTTYPE_OBJECTPOINT)
        rc = p_curl_multi_setopt(multi_handle, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        rc = p_curl_multi_setopt(multi_handle, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        rc = p_curl_multi_setopt(multi_handle, option,
                                 va_arg(ap, void (*)(void)));
    else if (option < CURLOPTTYPE_BLOB)
        rc = p_curl_multi_setopt(multi_handle, option, va_arg(ap, curl_off_t));
    else
        rc = p_curl_multi_setopt(multi_handle, option,
                                 va_arg(ap, struct curl_blob *));
    va_end(ap);
    return rc;
}

CURLMcode curl_multi_add_handle(CURLM *multi_handle, CURL *curl_handle)
{
    if (dl_curl_load() != 0)
        return CURLM_INTERNAL_ERROR;
    return p_curl_multi_add_handle(multi_handle, curl_handle);
}

CURLMcode curl_multi_remove_handle(CURLM *multi_handle, CURL *curl_handle)
{
    if (dl_curl_load() != 0)
        return CURLM_INTERNAL_ERROR;
    return p_curl_multi_remove_handle(multi_handle, curl_handle);
}

CURLMcode curl_multi_perform(CURLM *multi_handle, int *running_handles)
{
    if (dl_curl_load() != 0)
        return CURLM_INTERNAL_ERROR;
    return p_curl_multi_perform(multi_handle, running_handles);
}

CURLMcode curl_multi_poll(CURLM *multi_handle, struct curl_waitfd extra_fds[],
                          unsigned int extra_nfds, int timeout_ms, int *ret)
{
    if (dl_curl_load() != 0)
        return CURLM_INTERNAL_ERROR;
    return p_curl_multi_poll(multi_handle, extra_fds, extra_nfds, timeout_ms,
                             ret);
}

CURLMcode curl_multi_wakeup(CURLM *multi_handle)
{
    if (dl_curl_load() != 0)
        return CURLM_INTERNAL_ERROR;
    return p_curl_multi_wakeup(multi_handle);
}

CURLMsg *curl_multi_info_read(CURLM *multi_handle, int *msgs_in_queue)
{
    if (dl_curl_load() != 0) {
        if (msgs_in_queue != NULL)
            *msgs_in_queue = 0;
        return NULL;
    }
    return p_curl_multi_info_read(multi_handle, msgs_in_queue);
}

const char *curl_multi_strerror(CURLMcode code)
{
    if (dl_curl_load() != 0)
        return "libcurl.so.4 is not available";
    return p_curl_multi_strerror(code);
}

/* --- libcrypto --------------------------------------------------------- */

BIO *BIO_new_mem_buf(const void *buf, int len)
{
    if (dl_crypto_load() != 0)
        return NULL;
    return p_BIO_new_mem_buf(buf, len);
}

int BIO_free(BIO *a)
{
    if (a == NULL || crypto_lib.state != 0)
        return 0;
    return p_BIO_free(a);
}

void ERR_clear_error(void)
{
    if (crypto_lib.state == 0)
        p_ERR_clear_error();
}

int EVP_DecodeBlock(unsigned char *t, const unsigned char *f, int n)
{
    if (dl_crypto_load() != 0)
        return -1;
    return p_EVP_DecodeBlock(t, f, n);
}

void EVP_PKEY_free(EVP_PKEY *pkey)
{
    if (pkey != NULL && crypto_lib.state == 0)
        p_EVP_PKEY_free(pkey);
}

EVP_PKEY *PEM_read_bio_PrivateKey(BIO *out, EVP_PKEY **x, pem_password_cb *cb,
                                  void *u)
{
    if (dl_crypto_load() != 0)
        return NULL;
    return p_PEM_read_bio_PrivateKey(out, x, cb, u);
}

X509 *PEM_read_bio_X509(BIO *out, X509 **x, pem_password_cb *cb, void *u)
{
    if (dl_crypto_load() != 0)
        return NULL;
    return p_PEM_read_bio_X509(out, x, cb, u);
}

int X509_check_private_key(const X509 *cert, const EVP_PKEY *pkey)
{
    if (dl_crypto_load() != 0)
        return 0;
    return p_X509_check_private_key(cert, pkey);
}

void X509_free(X509 *a)
{
    if (a != NULL && crypto_lib.state == 0)
        p_X509_free(a);
}

/* --- libmicrohttpd ---------------------------------------------------- */

struct MHD_Daemon *MHD_start_daemon_va(unsigned int flags, uint16_t port,
                                       MHD_AcceptPolicyCallback apc,
                                       void *apc_cls,
                                       MHD_AccessHandlerCallback dh,
                                       void *dh_cls, va_list ap)
{
    if (dl_mhd_load() != 0)
        return NULL;
    return p_MHD_start_daemon_va(flags, port, apc, apc_cls, dh, dh_cls, ap);
}

/* The option list (pairs up to MHD_OPTION_END) goes on as a va_list. */
struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port,
                                    MHD_AcceptPolicyCallback apc, void *apc_cls,
                                    MHD_AccessHandlerCallback dh, void *dh_cls,
                                    ...)
{
    va_list ap;
    struct MHD_Daemon *d;

    if (dl_mhd_load() != 0)
        return NULL;
    va_start(ap, dh_cls);
    d = p_MHD_start_daemon_va(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}

void MHD_stop_daemon(struct MHD_Daemon *daemon)
{
    if (daemon != NULL && mhd_lib.state == 0)
        p_MHD_stop_daemon(daemon);
}

/* No MHD_DaemonInfoType of 0.9.75 reads an argument after the type (the
 * variadic part is reserved), so none is passed on. */
const union MHD_DaemonInfo *
MHD_get_daemon_info(struct MHD_Daemon *daemon,
                    enum MHD_DaemonInfoType info_type, ...)
{
    if (daemon == NULL || mhd_lib.state != 0)
        return NULL;
    return p_MHD_get_daemon_info(daemon, info_type);
}

enum MHD_Result MHD_run(struct MHD_Daemon *daemon)
{
    if (daemon == NULL || mhd_lib.state != 0)
        return MHD_NO;
    return p_MHD_run(daemon);
}

enum MHD_Result MHD_get_timeout(struct MHD_Daemon *daemon,
                                MHD_UNSIGNED_LONG_LONG *timeout)
{
    if (daemon == NULL || mhd_lib.state != 0)
        return MHD_NO;
    return p_MHD_get_timeout(daemon, timeout);
}

/* The functions below take objects only a loaded library hands out
 * (connections, responses), or create one: a daemon exists, so the
 * library is loaded; they still check, for a misuse. */
int MHD_get_connection_values(struct MHD_Connection *connection,
                              enum MHD_ValueKind kind,
                              MHD_KeyValueIterator iterator, void *iterator_cls)
{
    if (mhd_lib.state != 0)
        return -1;
    return p_MHD_get_connection_values(connection, kind, iterator,
                                       iterator_cls);
}

struct MHD_Response *
MHD_create_response_from_buffer(size_t size, void *buffer,
                                enum MHD_ResponseMemoryMode mode)
{
    if (dl_mhd_load() != 0)
        return NULL;
    return p_MHD_create_response_from_buffer(size, buffer, mode);
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *response,
                                        const char *header, const char *content)
{
    if (response == NULL || mhd_lib.state != 0)
        return MHD_NO;
    return p_MHD_add_response_header(response, header, content);
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection,
                                   unsigned int status_code,
                                   struct MHD_Response *response)
{
    if (mhd_lib.state != 0)
        return MHD_NO;
    return p_MHD_queue_response(connection, status_code, response);
}

void MHD_destroy_response(struct MHD_Response *response)
{
    if (response != NULL && mhd_lib.state == 0)
        p_MHD_destroy_response(response);
}

#pragma GCC visibility pop
