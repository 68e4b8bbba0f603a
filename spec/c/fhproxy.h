/*
 * fhproxy: the forwarding half of a fakehttp reverse proxy in front of the
 * real apiserver (itest_http, itest_leader): one request passed on over
 * verified TLS with its method, path, Authorization, Content-Type and body;
 * the answer's status and body streamed back, the connection then closed.
 * Header-only; uses fakehttp, libcurl (easy interface, on the proxy's
 * connection thread).
 */
#ifndef DITTOFS_FHPROXY_H
#define DITTOFS_FHPROXY_H

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "fakehttp.h"

struct fh_fwd {
    int fd;
    int sent_head;
    long code;
};

static size_t fh_fwd_header(char *p, size_t size, size_t n, void *arg)
{
    struct fh_fwd *f = arg;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        sscanf(p, "%*s %ld", &f->code);
    } else if (len == 2 && p[0] == '\r' && f->code >= 200 && !f->sent_head) {
        f->sent_head = 1;
        if (fh_printf(f->fd,
                      "HTTP/1.1 %ld X\r\nContent-Type: application/json\r\n"
                      "Connection: close\r\n\r\n",
                      f->code) != 0)
            return 0;
    }
    return len;
}

static size_t fh_fwd_body(char *p, size_t size, size_t n, void *arg)
{
    struct fh_fwd *f = arg;
    return fh_write(f->fd, p, size * n) == 0 ? size * n : 0;
}

/* Forwards request `r` read on `fd` to upstream (the apiserver URL), TLS
 * verified against the CA file `ca`. Answers 502 when no answer came.
 * Returns 0: the body is close-delimited, the connection must close. */
__attribute__((unused)) static int
fh_forward(int fd, const struct fh_req *r, const char *upstream, const char *ca)
{
    char url[8192], auth[4200], ct[300];
    struct curl_slist *h = NULL;
    struct fh_fwd f = {fd, 0, 0};
    CURL *e = curl_easy_init();
    snprintf(url, sizeof(url), "%s%s", upstream, r->path);
    if (r->authorization[0]) {
        snprintf(auth, sizeof(auth), "Authorization: %s", r->authorization);
        h = curl_slist_append(h, auth);
    }
    if (r->content_type[0]) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", r->content_type);
        h = curl_slist_append(h, ct);
    }
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (r->body_len > 0 || strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->body_len);
    }
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, fh_fwd_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &f);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fh_fwd_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &f);
    CURLcode cc = curl_easy_perform(e);
    if (!f.sent_head)
        fh_respond(fd, 502, "Connection: close\r\n",
                   cc == CURLE_OK ? "{}" : curl_easy_strerror(cc));
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    return 0;
}

#endif
