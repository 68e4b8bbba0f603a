/*
 * kubeconfig: kubeconfig files, in-cluster service account and credential
 * refresh; see kubeconfig.h. The exec credential plugin runner lives in
 * exec_cred.c. Errors name the file, the key path and the line/column;
 * no error or log line ever contains a token or key material.
 */
#define _GNU_SOURCE /* explicit_bzero, timegm */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <yaml.h>

#include "dbuf.h"
#include "exec_cred.h"
#include "kubeconfig.h"
#include "log.h"
#include "text.h"

#define KC_FILE_MAX (16u << 20)  /* a kubeconfig file */
#define CRED_FILE_MAX (1u << 20) /* a CA, certificate, key or token file */
#define MAX_FILES 32             /* entries of $KUBECONFIG */
#define DEFAULT_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* One parsed kubeconfig file. */
struct kc_file {
    char *path;
    char *dir; /* relative paths in the file resolve against this */
    yaml_document_t doc;
    int has_doc;
};

/* A node together with the file it came from (for errors and paths). */
struct loc {
    struct kc_file *f;
    yaml_node_t *n;
};

/* Byte string holding secret or certificate material. */
struct blob {
    unsigned char *ptr;
    size_t len;
};

enum cred_kind {
    CRED_NONE = 0,
    CRED_TOKEN,      /* static token from the kubeconfig */
    CRED_TOKEN_FILE, /* tokenFile or the in-cluster token */
    CRED_EXEC,       /* exec credential plugin */
};

struct kube_conn {
    char *server;    /* what requests use (tls-server-name host if set) */
    char *namespace; /* never NULL */
    char *source;    /* for logs */
    char *proxy;     /* proxy-url or NULL */
    int insecure;    /* insecure-skip-tls-verify */
    int allow_http;  /* server is http:// on loopback, explicitly allowed */
    struct curl_slist *connect_to; /* tls-server-name mapping or NULL */
    struct blob ca;                /* empty: the system store */

    /* Static client certificate; paths set when it came from files. */
    struct blob cert, key;
    char *cert_path, *key_path;

    enum cred_kind kind;
    char *token;  /* current bearer token or NULL */
    char *header; /* "Authorization: Bearer ..." or NULL */
    char *token_path;
    double read_at; /* monotonic time of the last file read */
    int refresh_sec;
    int stale; /* set by kube_conn_unauthorized */

    struct exec_cred_config exec;
    int exec_have;
    time_t exec_expiry;   /* 0: no expiry */
    time_t exec_obtained; /* when the current credential came */
    /* After a failed run the plugin is not run again before exec_retry_at
     * (1 s, doubling to 30 s): a broken plugin is not hammered. */
    int exec_failures;
    double exec_retry_at;
    char exec_err[512];
    struct blob exec_cert, exec_key;
    /* The run on the event loop (kube_conn_authorization_async), at most
     * one, and the waiters told when it ends. While they are told,
     * exec_handout is set: the new credential then serves the requests
     * that waited for it even if the plugin stamped it expired already
     * (else they would start the plugin again at once, forever). */
    struct exec_cred_job *exec_job;
    struct kube_conn_waiter *waiters;
    int exec_handout;
};

/* --- small helpers ------------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wipe_str(char **s)
{
    if (*s != NULL) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

static void blob_free(struct blob *b)
{
    if (b->ptr != NULL) {
        explicit_bzero(b->ptr, b->len);
        free(b->ptr);
    }
    b->ptr = NULL;
    b->len = 0;
}

/* Moves `src` into `dst` (freeing what dst held). */
static void blob_move(struct blob *dst, struct blob *src)
{
    blob_free(dst);
    *dst = *src;
    src->ptr = NULL;
    src->len = 0;
}

/* Joins `rel` to `dir` unless it is absolute. Returns malloc'd or NULL. */
static char *path_resolve(const char *dir, const char *rel)
{
    char *out;
    if (rel[0] == '/' || dir == NULL || dir[0] == '\0')
        return strdup(rel);
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    if (asprintf(&out, "%s/%s", dir, rel) < 0)
        return NULL;
    return out;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/*
 * Reads a whole file of at most `max` bytes into *out (NUL-terminated,
 * caller frees with blob_free). Returns 0, or -ENOENT / -EFBIG / -errno.
 */
static int read_file(const char *path, size_t max, struct blob *out)
{
    struct dbuf b;
    char chunk[8192];
    int fd, rc = 0;
    dbuf_init(&b, max);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        int r = dbuf_add(&b, chunk, (size_t)n);
        if (r != DBUF_OK) {
            rc = r == DBUF_TOOBIG ? -EFBIG : -ENOMEM;
            break;
        }
    }
    close(fd);
    explicit_bzero(chunk, sizeof chunk);
    if (rc != 0) {
        if (b.ptr != NULL)
            explicit_bzero(b.ptr, b.len);
        dbuf_free(&b);
        return rc;
    }
    size_t len = 0;
    char *p = dbuf_take(&b, &len);
    if (p == NULL)
        p = calloc(1, 1);
    if (p == NULL)
        return -ENOMEM;
    out->ptr = (unsigned char *)p;
    out->len = len;
    return 0;
}

static const char *read_strerror(int rc)
{
    if (rc == -EFBIG)
        return "file too large";
    return strerror(-rc);
}

/* Removes leading and trailing whitespace in place (token files). */
static void trim(char *s)
{
    size_t len = strlen(s), start = 0;
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';
    while (start < len && isspace((unsigned char)s[start]))
        start++;
    if (start > 0)
        memmove(s, s + start, len - start + 1);
}

/* A token is sent in a header: refuse control characters. */
static int token_ok(const char *t)
{
    if (*t == '\0')
        return 0;
    for (; *t; t++)
        if ((unsigned char)*t < 0x20 || *t == 0x7f)
            return 0;
    return 1;
}

/* Installs `tok` (consumed) as the current token and rebuilds the header. */
static int set_token(struct kube_conn *c, char *tok)
{
    char *hdr = NULL;
    if (tok != NULL && asprintf(&hdr, "Authorization: Bearer %s", tok) < 0) {
        wipe_str(&tok);
        return KUBE_CONN_ENOMEM;
    }
    wipe_str(&c->token);
    wipe_str(&c->header);
    c->token = tok;
    c->header = hdr;
    return 0;
}

/* --- PEM checks (OpenSSL), so a bad certificate fails at load ---------- */

static int pem_has_cert(const struct blob *b)
{
    BIO *bio = BIO_new_mem_buf(b->ptr, (int)b->len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    int ok = x != NULL;
    X509_free(x);
    BIO_free(bio);
    ERR_clear_error();
    return ok;
}

/* Returns NULL when the pair is usable, else what is wrong. */
static const char *pem_check_pair(const struct blob *cert,
                                  const struct blob *key)
{
    const char *why = NULL;
    BIO *cb = BIO_new_mem_buf(cert->ptr, (int)cert->len);
    BIO *kb = BIO_new_mem_buf(key->ptr, (int)key->len);
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    if (x == NULL)
        why = "the client certificate is not a PEM certificate";
    else if (k == NULL)
        why = "the client key is not a PEM private key (or is encrypted)";
    else if (X509_check_private_key(x, k) != 1)
        why = "the client key does not match the client certificate";
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    return why;
}

/* --- YAML navigation ------------------------------------------------------ */

/* Writes "kubeconfig FILE: line L, column C: " style prefixes. */
static void loc_err(char *err, size_t errlen, struct loc l, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static void loc_err(char *err, size_t errlen, struct loc l, const char *fmt,
                    ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (l.n != NULL)
        seterr(err, errlen, "kubeconfig %s: line %zu, column %zu: %s",
               l.f->path, l.n->start_mark.line + 1, l.n->start_mark.column + 1,
               msg);
    else
        seterr(err, errlen, "kubeconfig %s: %s", l.f->path, msg);
}

static yaml_node_t *node(struct kc_file *f, yaml_node_item_t id)
{
    return yaml_document_get_node(&f->doc, id);
}

/* Plain null-ish scalars (null, ~, empty) count as absent, as in Go. */
static int is_null(const yaml_node_t *n)
{
    if (n == NULL)
        return 1;
    if (n->type != YAML_SCALAR_NODE ||
        n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* Looks `key` up in mapping `m`; returns the value node or NULL. */
static yaml_node_t *map_get(struct kc_file *f, yaml_node_t *m, const char *key)
{
    if (m == NULL || m->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
         p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(f, p->key);
        if (k != NULL && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return node(f, p->value);
    }
    return NULL;
}

/*
 * Reads string `key` of mapping `m` into *out (borrowed from the document;
 * NULL when absent or null). `what` names the mapping for errors.
 */
static int get_str(struct loc m, const char *what, const char *key,
                   const char **out, char *err, size_t errlen)
{
    yaml_node_t *v = map_get(m.f, m.n, key);
    *out = NULL;
    if (is_null(v))
        return 0;
    if (v->type != YAML_SCALAR_NODE) {
        loc_err(err, errlen, (struct loc){m.f, v}, "%s.%s: expected a string",
                what, key);
        return KUBE_CONN_ECONFIG;
    }
    *out = (const char *)v->data.scalar.value;
    return 0;
}

/* Reads boolean `key` (YAML 1.1 plain true/false/yes/no/on/off). */
static int get_bool(struct loc m, const char *what, const char *key, int *out,
                    char *err, size_t errlen)
{
    static const char *const yes[] = {"true", "yes", "on", "y"};
    static const char *const no[] = {"false", "no", "off", "n"};
    yaml_node_t *v = map_get(m.f, m.n, key);
    *out = 0;
    if (is_null(v))
        return 0;
    if (v->type == YAML_SCALAR_NODE &&
        v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        const char *s = (const char *)v->data.scalar.value;
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(s, yes[i]) == 0) {
                *out = 1;
                return 0;
            }
            if (strcasecmp(s, no[i]) == 0)
                return 0;
        }
    }
    loc_err(err, errlen, (struct loc){m.f, v}, "%s.%s: expected true or false",
            what, key);
    return KUBE_CONN_ECONFIG;
}

/*
 * Finds the entry named `name` in the list `list` ("clusters", "contexts",
 * "users") of the files, first file first (kubectl's merge rule), and
 * returns its `field` mapping ("cluster", "context", "user") in *out
 * (out->n is NULL for an entry without one: an empty entry). Returns 1 when
 * found, 0 when not, or a negative error for a malformed list.
 */
static int find_named(struct kc_file *files, size_t nfiles, const char *list,
                      const char *field, const char *name, struct loc *out,
                      char *err, size_t errlen)
{
    out->f = NULL;
    out->n = NULL;
    for (size_t i = 0; i < nfiles; i++) {
        struct kc_file *f = &files[i];
        if (!f->has_doc)
            continue;
        yaml_node_t *seq =
            map_get(f, yaml_document_get_root_node(&f->doc), list);
        if (is_null(seq))
            continue;
        if (seq->type != YAML_SEQUENCE_NODE) {
            loc_err(err, errlen, (struct loc){f, seq}, "%s: expected a list",
                    list);
            return KUBE_CONN_ECONFIG;
        }
        size_t idx = 0;
        for (yaml_node_item_t *it = seq->data.sequence.items.start;
             it < seq->data.sequence.items.top; it++, idx++) {
            yaml_node_t *e = node(f, *it);
            const char *ename = NULL;
            if (e == NULL || e->type != YAML_MAPPING_NODE) {
                loc_err(err, errlen, (struct loc){f, e},
                        "%s[%zu]: expected a mapping with name and %s", list,
                        idx, field);
                return KUBE_CONN_ECONFIG;
            }
            yaml_node_t *nn = map_get(f, e, "name");
            if (nn != NULL && nn->type == YAML_SCALAR_NODE)
                ename = (const char *)nn->data.scalar.value;
            if (ename == NULL || strcmp(ename, name) != 0)
                continue;
            yaml_node_t *body = map_get(f, e, field);
            if (is_null(body)) {
                /* An entry with no body is an empty one ({}). */
                out->f = f;
                out->n = NULL;
                return 1;
            }
            if (body->type != YAML_MAPPING_NODE) {
                loc_err(err, errlen, (struct loc){f, body},
                        "%s[\"%s\"].%s: expected a mapping", list, name, field);
                return KUBE_CONN_ECONFIG;
            }
            out->f = f;
            out->n = body;
            return 1;
        }
    }
    return 0;
}

/* Parses one file. Returns 0, PARSE_ENOENT for a missing file (err set
 * too, callers decide whether that matters) or a negative KUBE_CONN_E*. */
#define PARSE_ENOENT 1
static int parse_file(struct kc_file *f, const char *path, char *err,
                      size_t errlen)
{
    struct blob text = {0};
    yaml_parser_t p;
    int rc;

    f->path = strdup(path);
    f->dir = dir_of(path);
    if (f->path == NULL || f->dir == NULL)
        return KUBE_CONN_ENOMEM;
    rc = read_file(path, KC_FILE_MAX, &text);
    if (rc < 0) {
        seterr(err, errlen, "kubeconfig %s: %s", path, read_strerror(rc));
        return rc == -ENOENT ? PARSE_ENOENT : KUBE_CONN_EIO;
    }
    if (!yaml_parser_initialize(&p)) {
        blob_free(&text);
        return KUBE_CONN_ENOMEM;
    }
    yaml_parser_set_input_string(&p, text.ptr, text.len);
    if (!yaml_parser_load(&p, &f->doc)) {
        seterr(err, errlen, "kubeconfig %s: line %zu, column %zu: %s%s%s", path,
               p.problem_mark.line + 1, p.problem_mark.column + 1,
               p.problem ? p.problem : "malformed YAML", p.context ? " " : "",
               p.context ? p.context : "");
        rc = KUBE_CONN_ECONFIG;
        goto done;
    }
    f->has_doc = 1;
    yaml_node_t *root = yaml_document_get_root_node(&f->doc);
    if (root != NULL && !is_null(root) && root->type != YAML_MAPPING_NODE) {
        loc_err(err, errlen, (struct loc){f, root},
                "expected a mapping (apiVersion, kind, clusters, ...)");
        rc = KUBE_CONN_ECONFIG;
    }
done:
    yaml_parser_delete(&p);
    blob_free(&text);
    return rc;
}

static void files_free(struct kc_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (files[i].has_doc)
            yaml_document_delete(&files[i].doc);
        free(files[i].path);
        free(files[i].dir);
    }
}

/* Parses `path` into files[*nfiles] and counts it, or skips it when it does
 * not exist (kubectl's rule for $KUBECONFIG entries and ~/.kube/config).
 * Returns 0 or a negative KUBE_CONN_E*. */
static int parse_optional_file(struct kc_file *files, size_t *nfiles,
                               const char *path, char *err, size_t errlen)
{
    struct kc_file *f = &files[*nfiles];
    int rc = parse_file(f, path, err, errlen);
    if (rc == PARSE_ENOENT) {
        files_free(f, 1);
        memset(f, 0, sizeof *f);
        return 0;
    }
    (*nfiles)++;
    return rc;
}

/* --- server URL ------------------------------------------------------------
 */

static int is_loopback(const char *host)
{
    return strcmp(host, "127.0.0.1") == 0 || strcmp(host, "::1") == 0 ||
           strcasecmp(host, "localhost") == 0;
}

/*
 * Validates `server` and fills c->server (and c->connect_to when
 * tls_name is set). `where` prefixes errors.
 */
static int set_server(struct kube_conn *c, const char *server,
                      const char *tls_name, int allow_http, const char *where,
                      char *err, size_t errlen)
{
    char host[256], port[16] = "";
    const char *p, *auth, *end;
    int https;

    /* Checked first, and the URL is then not echoed: the part before '@'
     * may be a password. */
    p = strstr(server, "://");
    p = p != NULL ? p + 3 : server;
    if (memchr(p, '@', strcspn(p, "/?#")) != NULL) {
        seterr(err, errlen,
               "%s: server: credentials (user@ or user:password@) in the URL "
               "are not allowed",
               where);
        return KUBE_CONN_ECONFIG;
    }
    if (strncasecmp(server, "https://", 8) == 0) {
        https = 1;
        auth = server + 8;
    } else if (strncasecmp(server, "http://", 7) == 0) {
        https = 0;
        auth = server + 7;
    } else if (strstr(server, "://") != NULL) {
        seterr(err, errlen, "%s: server \"%s\": only https:// is supported",
               where, server);
        return KUBE_CONN_ECONFIG;
    } else {
        https = 1; /* "host:port" as client-go: https */
        auth = server;
    }
    end = auth + strcspn(auth, "/?#");
    if (strpbrk(end, "?#") != NULL) {
        seterr(err, errlen,
               "%s: server \"%s\": must be scheme://host[:port][/path] "
               "without query or fragment",
               where, server);
        return KUBE_CONN_ECONFIG;
    }
    /* host and port */
    if (*auth == '[') {
        const char *rb = memchr(auth, ']', (size_t)(end - auth));
        if (rb == NULL || (size_t)(rb - auth - 1) >= sizeof host)
            goto bad;
        memcpy(host, auth + 1, (size_t)(rb - auth - 1));
        host[rb - auth - 1] = '\0';
        p = rb + 1;
    } else {
        p = memchr(auth, ':', (size_t)(end - auth));
        if (p == NULL)
            p = end;
        if ((size_t)(p - auth) >= sizeof host)
            goto bad;
        memcpy(host, auth, (size_t)(p - auth));
        host[p - auth] = '\0';
    }
    if (p < end) {
        if (*p != ':' || end - p - 1 < 1 || (size_t)(end - p) > sizeof port)
            goto bad;
        memcpy(port, p + 1, (size_t)(end - p - 1));
        port[end - p - 1] = '\0';
        for (const char *d = port; *d; d++)
            if (!isdigit((unsigned char)*d))
                goto bad;
    }
    if (host[0] == '\0')
        goto bad;
    if (!https) {
        if (!allow_http || !is_loopback(host)) {
            seterr(err, errlen,
                   "%s: server \"%s\": http:// is refused (a token would "
                   "travel in clear); use https://%s",
                   where, server, allow_http ? " or a loopback address" : "");
            return KUBE_CONN_ECONFIG;
        }
        c->allow_http = 1;
    }

    /* Path prefix without trailing slashes. */
    size_t plen = strlen(end);
    while (plen > 0 && end[plen - 1] == '/')
        plen--;
    const char *scheme = https ? "https" : "http";
    int v6 = strchr(host, ':') != NULL;
    const char *dport = port[0] ? port : (https ? "443" : "80");
    int n;
    if (tls_name != NULL && tls_name[0] != '\0') {
        n = asprintf(&c->server, "%s://%s:%s%.*s", scheme, tls_name, dport,
                     (int)plen, end);
        if (n >= 0) {
            char *map = NULL;
            if (asprintf(&map, "%s:%s:%s%s%s:%s", tls_name, dport,
                         v6 ? "[" : "", host, v6 ? "]" : "", dport) < 0)
                return KUBE_CONN_ENOMEM;
            c->connect_to = curl_slist_append(NULL, map);
            free(map);
            if (c->connect_to == NULL)
                return KUBE_CONN_ENOMEM;
        }
    } else {
        n = asprintf(&c->server, "%s://%s%s%s%s%s%.*s", scheme, v6 ? "[" : "",
                     host, v6 ? "]" : "", port[0] ? ":" : "", port, (int)plen,
                     end);
    }
    if (n < 0) {
        c->server = NULL;
        return KUBE_CONN_ENOMEM;
    }
    return 0;
bad:
    seterr(err, errlen, "%s: server \"%s\": malformed URL", where, server);
    return KUBE_CONN_ECONFIG;
}

/* --- credential material ---------------------------------------------------
 */

/*
 * Loads file-or-data material: `data_key` (base64) wins over `file_key`
 * (path relative to the entry's file). *path_out (optional) receives the
 * resolved path when it came from a file.
 */
static int load_material(struct loc m, const char *what, const char *file_key,
                         const char *data_key, struct blob *out,
                         char **path_out, char *err, size_t errlen)
{
    const char *file = NULL, *data = NULL;
    int rc;
    if ((rc = get_str(m, what, file_key, &file, err, errlen)) < 0 ||
        (rc = get_str(m, what, data_key, &data, err, errlen)) < 0)
        return rc;
    if (data != NULL) {
        if (file != NULL)
            log_warn("kubeconfig: both a file and data given; the data wins",
                     "file", m.f->path, "entry", what, "key", data_key, NULL);
        if (text_base64_decode(data, strlen(data), &out->ptr, &out->len) < 0) {
            loc_err(err, errlen, (struct loc){m.f, map_get(m.f, m.n, data_key)},
                    "%s.%s: not valid base64", what, data_key);
            return KUBE_CONN_ECONFIG;
        }
        return 0;
    }
    if (file == NULL)
        return 0;
    char *path = path_resolve(m.f->dir, file);
    if (path == NULL)
        return KUBE_CONN_ENOMEM;
    rc = read_file(path, CRED_FILE_MAX, out);
    if (rc < 0) {
        loc_err(err, errlen, (struct loc){m.f, map_get(m.f, m.n, file_key)},
                "%s.%s: cannot read %s: %s", what, file_key, path,
                read_strerror(rc));
        free(path);
        return KUBE_CONN_EIO;
    }
    if (path_out != NULL)
        *path_out = path;
    else
        free(path);
    return 0;
}

/* Reads the token file into the connection. On failure returns <0 and
 * leaves the current token as it was. */
static int read_token_file(struct kube_conn *c, char *err, size_t errlen)
{
    struct blob b = {0};
    int rc = read_file(c->token_path, CRED_FILE_MAX, &b);
    if (rc < 0) {
        seterr(err, errlen, "token file %s: %s", c->token_path,
               read_strerror(rc));
        return KUBE_CONN_EIO;
    }
    char *tok = (char *)b.ptr;
    if (strlen(tok) != b.len) {
        blob_free(&b);
        seterr(err, errlen, "token file %s: contains a NUL byte",
               c->token_path);
        return KUBE_CONN_ECONFIG;
    }
    trim(tok);
    if (!token_ok(tok)) {
        int empty = tok[0] == '\0';
        blob_free(&b);
        seterr(err, errlen, "token file %s: %s", c->token_path,
               empty ? "empty" : "contains control characters");
        return KUBE_CONN_ECONFIG;
    }
    b.ptr = NULL;
    return set_token(c, tok);
}

/* Re-reads client certificate files; keeps the old pair on any problem
 * (a rotation may be half-written). */
static void reread_cert_files(struct kube_conn *c)
{
    struct blob cert = {0}, key = {0};
    if (c->cert_path == NULL || c->key_path == NULL)
        return;
    if (read_file(c->cert_path, CRED_FILE_MAX, &cert) < 0 ||
        read_file(c->key_path, CRED_FILE_MAX, &key) < 0 ||
        pem_check_pair(&cert, &key) != NULL) {
        log_warn("kubeconfig: client certificate files unreadable or "
                 "mismatched; keeping the previous pair",
                 "certificate", c->cert_path, "key", c->key_path, NULL);
        blob_free(&cert);
        blob_free(&key);
        return;
    }
    blob_move(&c->cert, &cert);
    blob_move(&c->key, &key);
}

/* --- YAML node to JSON (exec cluster info "config") --------------------- */

static cJSON *yaml_to_json(struct kc_file *f, yaml_node_t *n, int depth)
{
    if (n == NULL || depth > 64)
        return cJSON_CreateNull();
    if (n->type == YAML_SCALAR_NODE) {
        const char *s = (const char *)n->data.scalar.value;
        if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            char *endp;
            if (is_null(n))
                return cJSON_CreateNull();
            if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)
                return cJSON_CreateBool(s[0] == 't');
            double d = strtod(s, &endp);
            if (*s != '\0' && *endp == '\0' && !isspace((unsigned char)*s))
                return cJSON_CreateNumber(d);
        }
        return cJSON_CreateString(s);
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        cJSON *a = cJSON_CreateArray();
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             a != NULL && it < n->data.sequence.items.top; it++)
            cJSON_AddItemToArray(a, yaml_to_json(f, node(f, *it), depth + 1));
        return a;
    }
    cJSON *o = cJSON_CreateObject();
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
         o != NULL && p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node(f, p->key);
        if (k == NULL || k->type != YAML_SCALAR_NODE)
            continue;
        cJSON_AddItemToObject(o, (const char *)k->data.scalar.value,
                              yaml_to_json(f, node(f, p->value), depth + 1));
    }
    return o;
}

/*
 * The spec.cluster object of KUBERNETES_EXEC_INFO (provideClusterInfo),
 * as client-go fills it: server, tls-server-name, insecure-skip-tls-verify,
 * certificate-authority-data, proxy-url, config (the cluster extension
 * "client.authentication.k8s.io/exec").
 */
static char *cluster_info_json(struct kube_conn *c, struct loc cl,
                               const char *server, const char *tls_name)
{
    cJSON *o = cJSON_CreateObject();
    char *ca = NULL, *out = NULL;
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "server", server);
    if (tls_name != NULL)
        cJSON_AddStringToObject(o, "tls-server-name", tls_name);
    if (c->insecure)
        cJSON_AddBoolToObject(o, "insecure-skip-tls-verify", 1);
    if (c->ca.len > 0) {
        /* certificate-authority-data in KUBERNETES_EXEC_INFO */
        ca = text_base64_encode(c->ca.ptr, c->ca.len);
        if (ca != NULL)
            cJSON_AddStringToObject(o, "certificate-authority-data", ca);
    }
    if (c->proxy != NULL)
        cJSON_AddStringToObject(o, "proxy-url", c->proxy);
    yaml_node_t *exts = map_get(cl.f, cl.n, "extensions");
    if (exts != NULL && exts->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = exts->data.sequence.items.start;
             it < exts->data.sequence.items.top; it++) {
            yaml_node_t *e = node(cl.f, *it);
            yaml_node_t *nm = map_get(cl.f, e, "name");
            if (nm != NULL && nm->type == YAML_SCALAR_NODE &&
                strcmp((const char *)nm->data.scalar.value,
                       "client.authentication.k8s.io/exec") == 0) {
                cJSON_AddItemToObject(
                    o, "config",
                    yaml_to_json(cl.f, map_get(cl.f, e, "extension"), 0));
                break;
            }
        }
    }
    out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    free(ca);
    return out;
}

/* --- exec section ----------------------------------------------------------
 */

/*
 * Reads the optional list `key` of mapping `m` (`expected` describes it for
 * errors): *seq is NULL when it is absent or null; otherwise *seq is the
 * sequence, *n its length and *arr a zeroed array of n + 1 strings for the
 * caller to fill (owned by the caller's struct, freed with it).
 */
static int get_list(struct loc m, const char *what, const char *key,
                    const char *expected, yaml_node_t **seq, size_t *n,
                    char ***arr, char *err, size_t errlen)
{
    yaml_node_t *v = map_get(m.f, m.n, key);
    *seq = NULL;
    *n = 0;
    if (is_null(v))
        return 0;
    if (v->type != YAML_SEQUENCE_NODE) {
        loc_err(err, errlen, (struct loc){m.f, v}, "%s.%s: expected %s", what,
                key, expected);
        return KUBE_CONN_ECONFIG;
    }
    *n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    *arr = calloc(*n + 1, sizeof **arr);
    if (*arr == NULL)
        return KUBE_CONN_ENOMEM;
    *seq = v;
    return 0;
}

static int load_exec(struct kube_conn *c, struct loc u, const char *what,
                     struct loc cl, const char *server, const char *tls_name,
                     char *err, size_t errlen)
{
    struct loc ex = {u.f, map_get(u.f, u.n, "exec")};
    struct exec_cred_config *e = &c->exec;
    const char *cmd, *api, *hint, *imode;
    char w[320];
    int rc, pci;

    snprintf(w, sizeof w, "%s.exec", what);
    if (ex.n->type != YAML_MAPPING_NODE) {
        loc_err(err, errlen, ex, "%s: expected a mapping", w);
        return KUBE_CONN_ECONFIG;
    }
    if ((rc = get_str(ex, w, "command", &cmd, err, errlen)) < 0 ||
        (rc = get_str(ex, w, "apiVersion", &api, err, errlen)) < 0 ||
        (rc = get_str(ex, w, "installHint", &hint, err, errlen)) < 0 ||
        (rc = get_str(ex, w, "interactiveMode", &imode, err, errlen)) < 0 ||
        (rc = get_bool(ex, w, "provideClusterInfo", &pci, err, errlen)) < 0)
        return rc;
    if (cmd == NULL) {
        loc_err(err, errlen, ex, "%s.command: missing", w);
        return KUBE_CONN_ECONFIG;
    }
    if (api == NULL || (strcmp(api, EXEC_CRED_V1) != 0 &&
                        strcmp(api, EXEC_CRED_V1BETA1) != 0)) {
        loc_err(err, errlen, ex,
                "%s.apiVersion: %s%s%s; supported: " EXEC_CRED_V1
                " and " EXEC_CRED_V1BETA1,
                w, api ? "\"" : "missing", api ? api : "",
                api ? "\" is not supported" : "");
        return KUBE_CONN_ECONFIG;
    }
    if (imode != NULL && strcmp(imode, "Always") == 0) {
        loc_err(err, errlen, ex,
                "%s.interactiveMode: Always needs a terminal; an operator "
                "is never interactive",
                w);
        return KUBE_CONN_ECONFIG;
    }
    if (imode != NULL && strcmp(imode, "Never") != 0 &&
        strcmp(imode, "IfAvailable") != 0) {
        loc_err(err, errlen, ex,
                "%s.interactiveMode: \"%s\" is not Never, IfAvailable or "
                "Always",
                w, imode);
        return KUBE_CONN_ECONFIG;
    }
    /* A command with a slash resolves against the kubeconfig's directory;
     * a bare name is looked up in $PATH (as client-go does). */
    e->command = strchr(cmd, '/') ? path_resolve(u.f->dir, cmd) : strdup(cmd);
    e->api_version = strdup(api);
    e->install_hint = hint ? strdup(hint) : NULL;
    if (e->command == NULL || e->api_version == NULL ||
        (hint != NULL && e->install_hint == NULL))
        return KUBE_CONN_ENOMEM;

    yaml_node_t *args;
    size_t n;
    rc = get_list(ex, w, "args", "a list of strings", &args, &n, &e->args, err,
                  errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *a = node(ex.f, args->data.sequence.items.start[i]);
        if (a == NULL || a->type != YAML_SCALAR_NODE) {
            loc_err(err, errlen, (struct loc){ex.f, a},
                    "%s.args[%zu]: expected a string", w, i);
            return KUBE_CONN_ECONFIG;
        }
        e->args[i] = strdup((const char *)a->data.scalar.value);
        if (e->args[i] == NULL)
            return KUBE_CONN_ENOMEM;
        e->nargs = i + 1;
    }
    yaml_node_t *env;
    rc = get_list(ex, w, "env", "a list of {name, value}", &env, &n, &e->env,
                  err, errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct loc en = {ex.f, node(ex.f, env->data.sequence.items.start[i])};
        const char *name = NULL, *value = NULL;
        char ew[360];
        snprintf(ew, sizeof ew, "%s.env[%zu]", w, i);
        if (en.n == NULL || en.n->type != YAML_MAPPING_NODE) {
            loc_err(err, errlen, en, "%s: expected {name, value}", ew);
            return KUBE_CONN_ECONFIG;
        }
        if ((rc = get_str(en, ew, "name", &name, err, errlen)) < 0 ||
            (rc = get_str(en, ew, "value", &value, err, errlen)) < 0)
            return rc;
        if (name == NULL || name[0] == '\0' || strchr(name, '=')) {
            loc_err(err, errlen, en, "%s.name: missing or invalid", ew);
            return KUBE_CONN_ECONFIG;
        }
        if (asprintf(&e->env[i], "%s=%s", name, value ? value : "") < 0)
            return KUBE_CONN_ENOMEM;
        e->nenv = i + 1;
    }
    if (pci) {
        e->cluster_json = cluster_info_json(c, cl, server, tls_name);
        if (e->cluster_json == NULL)
            return KUBE_CONN_ENOMEM;
    }
    return 0;
}

/* --- user section ----------------------------------------------------------
 */

static int load_user(struct kube_conn *c, struct loc u, const char *uname,
                     struct loc cl, const char *server, const char *tls_name,
                     char *err, size_t errlen)
{
    char what[300];
    const char *token = NULL, *token_file = NULL;
    int rc;

    snprintf(what, sizeof what, "users[\"%s\"].user", uname);
    if (u.n == NULL)
        return 0; /* empty user: anonymous */
    /* Methods we do not implement must not be silently ignored: acting
     * with other credentials than configured would be worse than failing.
     */
    static const char *const refused[][2] = {
        {"auth-provider", "auth-provider plugins are not supported; use an "
                          "exec credential plugin"},
        {"username", "basic auth (username/password) is not supported"},
        {"password", "basic auth (username/password) is not supported"},
        {"as", "impersonation (as) is not supported"},
        {"as-groups", "impersonation (as-groups) is not supported"},
        {"as-uid", "impersonation (as-uid) is not supported"},
        {"as-user-extra", "impersonation (as-user-extra) is not supported"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        yaml_node_t *v = map_get(u.f, u.n, refused[i][0]);
        if (!is_null(v)) {
            loc_err(err, errlen, (struct loc){u.f, v}, "%s.%s: %s", what,
                    refused[i][0], refused[i][1]);
            return KUBE_CONN_ECONFIG;
        }
    }
    if ((rc = get_str(u, what, "token", &token, err, errlen)) < 0 ||
        (rc = get_str(u, what, "tokenFile", &token_file, err, errlen)) < 0)
        return rc;
    rc = load_material(u, what, "client-certificate", "client-certificate-data",
                       &c->cert, &c->cert_path, err, errlen);
    if (rc < 0)
        return rc;
    rc = load_material(u, what, "client-key", "client-key-data", &c->key,
                       &c->key_path, err, errlen);
    if (rc < 0)
        return rc;
    if ((c->cert.ptr != NULL) != (c->key.ptr != NULL)) {
        loc_err(err, errlen, u, "%s: %s given without %s", what,
                c->cert.ptr ? "client-certificate" : "client-key",
                c->cert.ptr ? "client-key" : "client-certificate");
        return KUBE_CONN_ECONFIG;
    }
    if (c->cert.ptr != NULL) {
        const char *why = pem_check_pair(&c->cert, &c->key);
        if (why != NULL) {
            loc_err(err, errlen, u, "%s: %s", what, why);
            return KUBE_CONN_ECONFIG;
        }
        /* Only files rotate; data is fixed. */
        if (c->cert_path == NULL || c->key_path == NULL) {
            free(c->cert_path);
            free(c->key_path);
            c->cert_path = c->key_path = NULL;
        }
    }

    yaml_node_t *exec = map_get(u.f, u.n, "exec");
    if (!is_null(exec)) {
        if (token != NULL || token_file != NULL || c->cert.ptr != NULL) {
            loc_err(err, errlen, (struct loc){u.f, exec},
                    "%s: exec together with %s: choose one credential", what,
                    c->cert.ptr ? "a client certificate" : "a token");
            return KUBE_CONN_ECONFIG;
        }
        c->kind = CRED_EXEC;
        return load_exec(c, u, what, cl, server, tls_name, err, errlen);
    }
    if (token_file != NULL) {
        /* The file wins over a static token, as in client-go. */
        c->token_path = path_resolve(u.f->dir, token_file);
        if (c->token_path == NULL)
            return KUBE_CONN_ENOMEM;
        c->kind = CRED_TOKEN_FILE;
        rc = read_token_file(c, err, errlen);
        if (rc < 0) {
            char inner[512];
            snprintf(inner, sizeof inner, "%s", err ? err : "");
            loc_err(err, errlen,
                    (struct loc){u.f, map_get(u.f, u.n, "tokenFile")},
                    "%s.tokenFile: %s", what, inner);
            return rc;
        }
        c->read_at = mono_now();
        return 0;
    }
    if (token != NULL) {
        if (!token_ok(token)) {
            loc_err(err, errlen, (struct loc){u.f, map_get(u.f, u.n, "token")},
                    "%s.token: empty or contains control characters", what);
            return KUBE_CONN_ECONFIG;
        }
        char *t = strdup(token);
        if (t == NULL)
            return KUBE_CONN_ENOMEM;
        c->kind = CRED_TOKEN;
        return set_token(c, t);
    }
    return 0;
}

/* --- kubeconfig ------------------------------------------------------------
 */

static int load_kubeconfig(struct kube_conn *c, struct kc_file *files,
                           size_t nfiles, const struct kubeconfig_opts *o,
                           char *err, size_t errlen)
{
    const char *ctx_name = o->context, *cluster_name = NULL, *user_name = NULL;
    const char *ns = NULL, *server = NULL, *tls_name = NULL, *proxy = NULL;
    struct loc ctx, cl, u;
    struct dbuf names;
    char what[300];
    int rc;

    /* Names every file, for errors that are about all of them. */
    dbuf_init(&names, 4096);
    for (size_t i = 0; i < nfiles; i++)
        dbuf_addf(&names, "%s%s", i ? ":" : "", files[i].path);

    if (ctx_name == NULL || ctx_name[0] == '\0') {
        ctx_name = NULL;
        for (size_t i = 0; i < nfiles && ctx_name == NULL; i++) {
            struct loc root = {&files[i],
                               files[i].has_doc
                                   ? yaml_document_get_root_node(&files[i].doc)
                                   : NULL};
            if (root.n == NULL)
                continue;
            rc = get_str(root, "config", "current-context", &ctx_name, err,
                         errlen);
            if (rc < 0)
                goto done;
            if (ctx_name != NULL && ctx_name[0] == '\0')
                ctx_name = NULL;
        }
        if (ctx_name == NULL) {
            seterr(err, errlen,
                   "kubeconfig %s: no current-context set and no --context "
                   "given",
                   dbuf_ptr(&names));
            rc = KUBE_CONN_ECONFIG;
            goto done;
        }
    }
    rc = find_named(files, nfiles, "contexts", "context", ctx_name, &ctx, err,
                    errlen);
    if (rc < 0)
        goto done;
    if (rc == 0) {
        seterr(err, errlen, "kubeconfig %s: context \"%s\" not found",
               dbuf_ptr(&names), ctx_name);
        rc = KUBE_CONN_ECONFIG;
        goto done;
    }
    snprintf(what, sizeof what, "contexts[\"%s\"].context", ctx_name);
    if ((rc = get_str(ctx, what, "cluster", &cluster_name, err, errlen)) < 0 ||
        (rc = get_str(ctx, what, "user", &user_name, err, errlen)) < 0 ||
        (rc = get_str(ctx, what, "namespace", &ns, err, errlen)) < 0)
        goto done;
    if (cluster_name == NULL || cluster_name[0] == '\0') {
        loc_err(err, errlen, ctx, "%s.cluster: missing", what);
        rc = KUBE_CONN_ECONFIG;
        goto done;
    }
    rc = find_named(files, nfiles, "clusters", "cluster", cluster_name, &cl,
                    err, errlen);
    if (rc < 0)
        goto done;
    if (rc == 0) {
        loc_err(err, errlen,
                (struct loc){ctx.f, map_get(ctx.f, ctx.n, "cluster")},
                "%s.cluster: cluster \"%s\" not found", what, cluster_name);
        rc = KUBE_CONN_ECONFIG;
        goto done;
    }
    snprintf(what, sizeof what, "clusters[\"%s\"].cluster", cluster_name);
    if ((rc = get_str(cl, what, "server", &server, err, errlen)) < 0 ||
        (rc = get_str(cl, what, "tls-server-name", &tls_name, err, errlen)) <
            0 ||
        (rc = get_str(cl, what, "proxy-url", &proxy, err, errlen)) < 0 ||
        (rc = get_bool(cl, what, "insecure-skip-tls-verify", &c->insecure, err,
                       errlen)) < 0)
        goto done;
    if (server == NULL || server[0] == '\0') {
        loc_err(err, errlen, cl, "%s.server: missing", what);
        rc = KUBE_CONN_ECONFIG;
        goto done;
    }
    {
        char where[600];
        yaml_node_t *sn = map_get(cl.f, cl.n, "server");
        snprintf(where, sizeof where,
                 "kubeconfig %s: line %zu, column %zu: %s.server", cl.f->path,
                 sn->start_mark.line + 1, sn->start_mark.column + 1, what);
        rc = set_server(c, server, tls_name, o->allow_insecure_http_loopback,
                        where, err, errlen);
        if (rc < 0)
            goto done;
    }
    if (proxy != NULL && proxy[0] != '\0' &&
        (c->proxy = strdup(proxy)) == NULL) {
        rc = KUBE_CONN_ENOMEM;
        goto done;
    }
    rc = load_material(cl, what, "certificate-authority",
                       "certificate-authority-data", &c->ca, NULL, err, errlen);
    if (rc < 0)
        goto done;
    if (c->ca.ptr != NULL && c->insecure) {
        loc_err(err, errlen, cl,
                "%s: certificate-authority together with "
                "insecure-skip-tls-verify is not allowed",
                what);
        rc = KUBE_CONN_ECONFIG;
        goto done;
    }
    if (c->ca.ptr != NULL && !pem_has_cert(&c->ca)) {
        loc_err(err, errlen, cl,
                "%s: certificate-authority: no PEM certificate found", what);
        rc = KUBE_CONN_ECONFIG;
        goto done;
    }

    if (user_name != NULL && user_name[0] != '\0') {
        rc = find_named(files, nfiles, "users", "user", user_name, &u, err,
                        errlen);
        if (rc < 0)
            goto done;
        if (rc == 0) {
            snprintf(what, sizeof what, "contexts[\"%s\"].context", ctx_name);
            loc_err(err, errlen,
                    (struct loc){ctx.f, map_get(ctx.f, ctx.n, "user")},
                    "%s.user: user \"%s\" not found", what, user_name);
            rc = KUBE_CONN_ECONFIG;
            goto done;
        }
        rc = load_user(c, u, user_name, cl, server, tls_name, err, errlen);
        if (rc < 0)
            goto done;
    }
    c->namespace = strdup(ns != NULL && ns[0] != '\0' ? ns : "default");
    if (asprintf(&c->source, "%s context=%s", dbuf_ptr(&names), ctx_name) < 0)
        c->source = NULL;
    rc = c->namespace && c->source ? 0 : KUBE_CONN_ENOMEM;
done:
    dbuf_free(&names);
    return rc;
}

/* --- in-cluster ------------------------------------------------------------
 */

static int load_in_cluster(struct kube_conn *c, const char *host,
                           const char *port, char *err, size_t errlen)
{
    const char *dir = getenv("DITTOFS_SA_DIR");
    char *path = NULL, *url = NULL;
    struct blob nsfile = {0};
    int rc;

    if (dir == NULL || dir[0] == '\0')
        dir = DEFAULT_SA_DIR;
    /* JoinHostPort: brackets for IPv6. */
    if (asprintf(&url, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s",
                 host, port) < 0)
        return KUBE_CONN_ENOMEM;
    rc = set_server(c, url, NULL, 0,
                    "in-cluster (KUBERNETES_SERVICE_HOST/PORT)", err, errlen);
    free(url);
    if (rc < 0)
        return rc;

    if (asprintf(&path, "%s/ca.crt", dir) < 0)
        return KUBE_CONN_ENOMEM;
    rc = read_file(path, CRED_FILE_MAX, &c->ca);
    if (rc < 0 || !pem_has_cert(&c->ca)) {
        seterr(err, errlen, "in-cluster CA %s: %s", path,
               rc < 0 ? read_strerror(rc) : "no PEM certificate found");
        free(path);
        return rc < 0 ? KUBE_CONN_EIO : KUBE_CONN_ECONFIG;
    }
    free(path);

    if (asprintf(&c->token_path, "%s/token", dir) < 0) {
        c->token_path = NULL;
        return KUBE_CONN_ENOMEM;
    }
    c->kind = CRED_TOKEN_FILE;
    rc = read_token_file(c, err, errlen);
    if (rc < 0) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", err ? err : "");
        seterr(err, errlen, "in-cluster %s", inner);
        return rc;
    }
    c->read_at = mono_now();

    const char *ns = getenv("POD_NAMESPACE");
    if (ns != NULL && ns[0] != '\0') {
        c->namespace = strdup(ns);
    } else {
        if (asprintf(&path, "%s/namespace", dir) < 0)
            return KUBE_CONN_ENOMEM;
        if (read_file(path, 4096, &nsfile) == 0) {
            trim((char *)nsfile.ptr);
            if (nsfile.ptr[0] != '\0')
                c->namespace = strdup((char *)nsfile.ptr);
        }
        free(path);
        blob_free(&nsfile);
        if (c->namespace == NULL)
            c->namespace = strdup("default");
    }
    c->source = strdup("in-cluster");
    return c->namespace && c->source ? 0 : KUBE_CONN_ENOMEM;
}

/* --- public API ------------------------------------------------------------
 */

int kube_conn_load(struct kube_conn **out, const struct kubeconfig_opts *o,
                   char *err, size_t errlen)
{
    static const struct kubeconfig_opts defaults = {0};
    struct kc_file files[MAX_FILES];
    struct kube_conn *c;
    size_t nfiles = 0;
    char *list = NULL, *home_cfg = NULL;
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    int in_cluster = host && host[0] && port && port[0];
    int rc = 0;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (o == NULL)
        o = &defaults;
    memset(files, 0, sizeof files);
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return KUBE_CONN_ENOMEM;
    c->refresh_sec = o->token_refresh_sec > 0 ? o->token_refresh_sec : 60;
    c->exec.timeout_ms = o->exec_timeout_ms > 0 ? o->exec_timeout_ms : 30000;

    if (o->path != NULL && o->path[0] != '\0') {
        rc = parse_file(&files[nfiles++], o->path, err, errlen);
        if (rc == PARSE_ENOENT)
            rc = KUBE_CONN_EIO;
    } else if (getenv("KUBECONFIG") != NULL && getenv("KUBECONFIG")[0]) {
        /* Missing files in the list are skipped, as kubectl does. */
        char *save = NULL;
        list = strdup(getenv("KUBECONFIG"));
        if (list == NULL) {
            rc = KUBE_CONN_ENOMEM;
            goto done;
        }
        for (char *p = strtok_r(list, ":", &save); p != NULL && rc == 0;
             p = strtok_r(NULL, ":", &save)) {
            if (nfiles == MAX_FILES) {
                seterr(err, errlen, "$KUBECONFIG: more than %d files",
                       MAX_FILES);
                rc = KUBE_CONN_ECONFIG;
                break;
            }
            rc = parse_optional_file(files, &nfiles, p, err, errlen);
        }
        if (rc == 0 && nfiles == 0 && !in_cluster) {
            seterr(err, errlen,
                   "$KUBECONFIG=%s: none of its files exists, and not in a "
                   "cluster (KUBERNETES_SERVICE_HOST/PORT unset)",
                   getenv("KUBECONFIG"));
            rc = KUBE_CONN_EIO;
        }
    } else {
        const char *home = getenv("HOME");
        if (home != NULL && home[0] != '\0') {
            if (asprintf(&home_cfg, "%s/.kube/config", home) < 0) {
                home_cfg = NULL;
                rc = KUBE_CONN_ENOMEM;
                goto done;
            }
            rc = parse_optional_file(files, &nfiles, home_cfg, err, errlen);
        }
        if (rc == 0 && nfiles == 0 && !in_cluster) {
            seterr(err, errlen,
                   "no configuration: no --kubeconfig, $KUBECONFIG unset, "
                   "%s missing, and not in a cluster "
                   "(KUBERNETES_SERVICE_HOST/PORT unset)",
                   home_cfg ? home_cfg : "~/.kube/config ($HOME unset)");
            rc = KUBE_CONN_EIO;
        }
    }
    if (rc < 0)
        goto done;
    if (nfiles > 0)
        rc = load_kubeconfig(c, files, nfiles, o, err, errlen);
    else
        rc = load_in_cluster(c, host, port, err, errlen);
    if (rc < 0)
        goto done;
    if (c->insecure)
        log_warn("!!! TLS VERIFICATION IS DISABLED (insecure-skip-tls-verify)"
                 ": anyone on the path to the API server can read and change "
                 "this operator's traffic, including its credentials !!!",
                 "server", c->server, "source", c->source, NULL);
    if (c->allow_http)
        log_warn("plain http:// to a loopback API server (explicitly "
                 "allowed); never use this outside tests",
                 "server", c->server, NULL);
done:
    files_free(files, nfiles);
    free(list);
    free(home_cfg);
    if (rc < 0) {
        kube_conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

const char *kube_conn_server(const struct kube_conn *c)
{
    return c->server;
}

const char *kube_conn_namespace(const struct kube_conn *c)
{
    return c->namespace;
}

const char *kube_conn_source(const struct kube_conn *c)
{
    return c->source;
}

/* A failed run: the plugin waits 1 s, doubling to 30 s, before the next
 * one; `err` is kept for the requests refused meanwhile. */
static void exec_failed(struct kube_conn *c, const char *err)
{
    int shift = c->exec_failures < 5 ? c->exec_failures : 5;
    c->exec_failures++;
    c->exec_retry_at = mono_now() + (shift < 5 ? (1 << shift) : 30);
    snprintf(c->exec_err, sizeof c->exec_err, "%s", err ? err : "");
}

static int exec_backing_off(const struct kube_conn *c)
{
    return c->exec_failures > 0 && mono_now() < c->exec_retry_at;
}

static int exec_expired(const struct kube_conn *c, time_t now)
{
    return c->exec_expiry != 0 && now >= c->exec_expiry;
}

/* Takes the strings of `r` (a successful run) as the credential.
 * Returns 0 or KUBE_CONN_ENOMEM (the old credential stays). */
static int exec_install(struct kube_conn *c, struct exec_cred_result *r)
{
    int rc = set_token(c, r->token);
    r->token = NULL;
    if (rc < 0)
        return rc;
    blob_free(&c->exec_cert);
    blob_free(&c->exec_key);
    c->exec_cert.ptr = (unsigned char *)r->cert;
    c->exec_cert.len = r->cert ? strlen(r->cert) : 0;
    c->exec_key.ptr = (unsigned char *)r->key;
    c->exec_key.len = r->key ? strlen(r->key) : 0;
    r->cert = r->key = NULL;
    c->exec_expiry = r->expiry;
    c->exec_obtained = time(NULL);
    c->exec_have = 1;
    c->exec_failures = 0;
    c->stale = 0;
    if (c->exec_expiry != 0 && c->exec_expiry <= c->exec_obtained)
        log_warn("exec credential plugin returned a credential that has "
                 "already expired; using it once",
                 "plugin", c->exec.command, NULL);
    return 0;
}

/* Runs the exec plugin (blocking) when there is no credential, it
 * expired, or a 401 was seen. */
static int refresh_exec(struct kube_conn *c, char *err, size_t errlen)
{
    struct exec_cred_result r;
    int expired = exec_expired(c, time(NULL));
    int rc;

    if (c->exec_have && !c->stale && !expired)
        return 0;
    if (c->exec_job != NULL || exec_backing_off(c)) {
        if (c->exec_have && !expired)
            return 0;
        if (c->exec_job != NULL)
            seterr(err, errlen,
                   "exec plugin \"%s\": a run on the event loop is in "
                   "progress",
                   c->exec.command);
        else
            seterr(err, errlen, "%s (not retried yet)", c->exec_err);
        return KUBE_CONN_EEXEC;
    }
    memset(&r, 0, sizeof r);
    rc = exec_cred_run(&c->exec, &r, err, errlen);
    if (rc < 0) {
        exec_cred_result_free(&r);
        exec_failed(c, err);
        if (c->exec_have && !expired) {
            log_warn("exec credential plugin failed; keeping the previous "
                     "credential",
                     "plugin", c->exec.command, "error", err, NULL);
            c->stale = 0;
            return 0;
        }
        return KUBE_CONN_EEXEC;
    }
    rc = exec_install(c, &r);
    exec_cred_result_free(&r);
    return rc;
}

int kube_conn_authorization(struct kube_conn *c, const char **header, char *err,
                            size_t errlen)
{
    int rc = 0;
    *header = NULL;
    if (c->kind == CRED_EXEC) {
        rc = refresh_exec(c, err, errlen);
    } else if (c->stale || mono_now() - c->read_at >= c->refresh_sec) {
        if (c->kind == CRED_TOKEN_FILE) {
            char e[512];
            /* The last good token stays in use if the file is briefly
             * unreadable (client-go does the same). */
            if (read_token_file(c, e, sizeof e) < 0)
                log_warn("kubeconfig: cannot re-read the token file; "
                         "keeping the previous token",
                         "error", e, NULL);
        }
        reread_cert_files(c);
        c->read_at = mono_now();
        c->stale = 0;
    }
    if (rc < 0)
        return rc;
    *header = c->header;
    return 0;
}

/* --- exec plugins on the event loop --------------------------------------- */

static void waiter_unlink(struct kube_conn_waiter *w)
{
    if (w->pprev == NULL)
        return;
    *w->pprev = w->next;
    if (w->next != NULL)
        w->next->pprev = w->pprev;
    w->next = NULL;
    w->pprev = NULL;
}

void kube_conn_wait(struct kube_conn *c, struct kube_conn_waiter *w)
{
    if (w->pprev != NULL)
        return;
    w->next = c->waiters;
    if (w->next != NULL)
        w->next->pprev = &w->next;
    w->pprev = &c->waiters;
    c->waiters = w;
}

void kube_conn_wait_cancel(struct kube_conn_waiter *w)
{
    waiter_unlink(w);
}

/*
 * Tells every waiter how the run ended. The list is moved aside first:
 * a callback may register again (for a later run) or cancel any waiter,
 * including one not told yet, since each is unlinked before its call.
 */
static void notify(struct kube_conn *c, int rc, const char *err)
{
    struct kube_conn_waiter *list = c->waiters;
    c->waiters = NULL;
    if (list != NULL)
        list->pprev = &list;
    if (rc == 0)
        c->exec_handout++;
    while (list != NULL) {
        struct kube_conn_waiter *w = list;
        waiter_unlink(w);
        w->fn(w, rc, err);
    }
    if (rc == 0)
        c->exec_handout--;
}

/* The end of a run on the loop (exec_cred_done_fn). */
static void exec_done(int rc, struct exec_cred_result *res, const char *err,
                      void *arg)
{
    struct kube_conn *c = arg;
    c->exec_job = NULL;
    if (rc == 0) {
        rc = exec_install(c, res);
        if (rc == 0) {
            log_debug("exec credential plugin succeeded", "plugin",
                      c->exec.command, NULL);
            notify(c, 0, "");
            return;
        }
        err = "out of memory";
    } else {
        rc = KUBE_CONN_EEXEC;
    }
    exec_failed(c, err);
    if (c->exec_have && !exec_expired(c, time(NULL))) {
        log_warn("exec credential plugin failed; keeping the previous "
                 "credential",
                 "plugin", c->exec.command, "error", err, NULL);
        c->stale = 0;
        notify(c, 0, "");
        return;
    }
    notify(c, rc, err);
}

/* Starts a run on `l`. Returns 0, or -1 with err set and the failure
 * counted (exec_failed). */
static int exec_begin(struct kube_conn *c, struct loop *l, const char *why,
                      char *err, size_t errlen)
{
    log_debug("running the exec credential plugin", "plugin", c->exec.command,
              "reason", why, NULL);
    if (exec_cred_start(l, &c->exec, exec_done, c, &c->exec_job, err, errlen) <
        0) {
        c->exec_job = NULL;
        exec_failed(c, err);
        return -1;
    }
    return 0;
}

/* A credential with an expiry is renewed ahead of it: once less than the
 * plugin's timeout plus 10 s is left (at most half its lifetime), so a run
 * that takes its whole timeout still ends before the old one expires. */
static int exec_renew_due(const struct kube_conn *c, time_t now)
{
    if (c->exec_expiry == 0 || c->exec_expiry <= c->exec_obtained)
        return 0;
    time_t margin = c->exec.timeout_ms / 1000 + 10;
    time_t half = (c->exec_expiry - c->exec_obtained) / 2;
    return now >= c->exec_expiry - (margin < half ? margin : half);
}

int kube_conn_authorization_async(struct kube_conn *c, struct loop *l,
                                  const char **header, char *err, size_t errlen)
{
    if (c->kind != CRED_EXEC)
        return kube_conn_authorization(c, header, err, errlen);
    *header = NULL;
    time_t now = time(NULL);
    int expired = exec_expired(c, now);
    if (c->exec_have && (c->exec_handout > 0 || (!c->stale && !expired))) {
        if (c->exec_job == NULL && c->exec_handout == 0 &&
            exec_renew_due(c, now) && !exec_backing_off(c)) {
            char e[512];
            if (exec_begin(c, l, "expires soon", e, sizeof e) < 0)
                log_warn("cannot run the exec credential plugin; keeping the "
                         "current credential until it expires",
                         "plugin", c->exec.command, "error", e, NULL);
        }
        *header = c->header;
        return 0;
    }
    if (c->exec_job != NULL)
        return KUBE_CONN_PENDING;
    if (exec_backing_off(c)) {
        if (c->exec_have && !expired) {
            *header = c->header;
            return 0;
        }
        seterr(err, errlen, "%s (not retried yet)", c->exec_err);
        return KUBE_CONN_EEXEC;
    }
    const char *why = !c->exec_have ? "no credential"
                      : c->stale    ? "unauthorized"
                                    : "expired";
    if (exec_begin(c, l, why, err, errlen) < 0) {
        if (c->exec_have && !expired) {
            log_warn("exec credential plugin failed; keeping the previous "
                     "credential",
                     "plugin", c->exec.command, "error", err, NULL);
            c->stale = 0;
            *header = c->header;
            return 0;
        }
        return KUBE_CONN_EEXEC;
    }
    return KUBE_CONN_PENDING;
}

int kube_conn_refreshing(const struct kube_conn *c)
{
    return c->exec_job != NULL;
}

int kube_conn_setup_tls(struct kube_conn *c, CURL *easy, char *err,
                        size_t errlen)
{
    struct curl_blob ca = {c->ca.ptr, c->ca.len, CURL_BLOB_COPY};
    const struct blob *cert = c->exec_cert.ptr ? &c->exec_cert : &c->cert;
    const struct blob *key = c->exec_key.ptr ? &c->exec_key : &c->key;
    struct curl_blob cb = {cert->ptr, cert->len, CURL_BLOB_COPY};
    struct curl_blob kb = {key->ptr, key->len, CURL_BLOB_COPY};
    CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                          \
    do {                                                                       \
        if (rc == CURLE_OK)                                                    \
            rc = curl_easy_setopt(easy, opt, val);                             \
    } while (0)
    SET(CURLOPT_PROTOCOLS_STR, c->allow_http ? "http,https" : "https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
    SET(CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
    if (c->ca.ptr != NULL) {
        /* Only this CA: drop the system bundle and directory. */
        SET(CURLOPT_CAINFO, (char *)NULL);
        SET(CURLOPT_CAPATH, (char *)NULL);
        SET(CURLOPT_CAINFO_BLOB, &ca);
    }
    SET(CURLOPT_SSLCERTTYPE, "PEM");
    SET(CURLOPT_SSLKEYTYPE, "PEM");
    SET(CURLOPT_SSLCERT_BLOB, cert->ptr ? &cb : NULL);
    SET(CURLOPT_SSLKEY_BLOB, key->ptr ? &kb : NULL);
    SET(CURLOPT_CONNECT_TO, c->connect_to);
    if (c->proxy != NULL)
        SET(CURLOPT_PROXY, c->proxy);
#undef SET
    if (rc != CURLE_OK) {
        seterr(err, errlen, "setting TLS options on the curl handle: %s",
               curl_easy_strerror(rc));
        return KUBE_CONN_ECURL;
    }
    return 0;
}

int kube_conn_prepare(struct kube_conn *c, CURL *easy,
                      struct curl_slist **headers, char *err, size_t errlen)
{
    const char *h = NULL;
    int rc = kube_conn_authorization(c, &h, err, errlen);
    if (rc < 0)
        return rc;
    rc = kube_conn_setup_tls(c, easy, err, errlen);
    if (rc < 0)
        return rc;
    if (h != NULL) {
        struct curl_slist *n = curl_slist_append(*headers, h);
        if (n == NULL) {
            seterr(err, errlen, "out of memory");
            return KUBE_CONN_ENOMEM;
        }
        *headers = n;
    }
    return 0;
}

void kube_conn_unauthorized(struct kube_conn *c)
{
    c->stale = 1;
}

void kube_conn_free(struct kube_conn *c)
{
    if (c == NULL)
        return;
    free(c->server);
    free(c->namespace);
    free(c->source);
    free(c->proxy);
    curl_slist_free_all(c->connect_to);
    blob_free(&c->ca);
    blob_free(&c->cert);
    blob_free(&c->key);
    free(c->cert_path);
    free(c->key_path);
    wipe_str(&c->token);
    wipe_str(&c->header);
    free(c->token_path);
    exec_cred_cancel(c->exec_job);
    while (c->waiters != NULL) /* left behind by a careless caller */
        waiter_unlink(c->waiters);
    exec_cred_config_free(&c->exec);
    blob_free(&c->exec_cert);
    blob_free(&c->exec_key);
    free(c);
}
