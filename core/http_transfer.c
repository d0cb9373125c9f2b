/* http_transfer.c: one transfer's life - attempts (with a bearer token from its token source),
 * response capture, retries on the session's timers, and the error it ends with (http.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include "http_int.h"
#include "redact.h"

#define RESPONSE_MAX ((size_t)256 << 20) /* a response body larger than this is an error */

/* Wipe every string of an slist (they may carry a bearer token), then free it. */
static void slist_wipe(struct curl_slist *l)
{
    for (struct curl_slist *i = l; i; i = i->next)
        if (i->data)
            OPENSSL_cleanse(i->data, strlen(i->data));
    curl_slist_free_all(l);
}

static void error_clear(struct owned_error *e)
{
    free(e->code);
    free(e->message);
    free(e->target);
    free(e->request_id);
    free(e->tenant);
    memset(e, 0, sizeof *e);
}

static void hdrs_clear(struct http_xfer *x)
{
    for (size_t i = 0; i < x->nhdrs; i++) {
        free(x->hdrs[i].name);
        buf_secret_free(&x->hdrs[i].value);
    }
    x->nhdrs = 0;
}

void http_xfer_free(struct http_xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    free(x->method);
    free(x->url);
    free(x->target);
    if (x->body) {
        OPENSSL_cleanse(x->body, x->body_len);
        free(x->body);
    }
    slist_wipe(x->headers);
    slist_wipe(x->sent_headers);
    curl_slist_free_all(x->connect_to);
    free(x->ca_file);
    free(x->proxy);
    if (x->token_owner)
        x->token_src->release(x->token_owner);
    free(x->scope);
    free(x->tenant);
    free(x->client_request_id);
    hdrs_clear(x);
    free(x->hdrs);
    buf_wipe(&x->resp);
    error_clear(&x->err);
    free(x);
}

/* Free x when nothing refers to it any more. */
void http_xfer_maybe_free(struct http_xfer *x)
{
    if (!x->lua_owned && !x->awaiting_token && !x->linked && !x->queued)
        http_xfer_free(x);
}

const char *http_hdr_get(const struct http_xfer *x, const char *name)
{
    for (size_t i = 0; i < x->nhdrs; i++)
        if (strcmp(x->hdrs[i].name, name) == 0)
            return x->hdrs[i].value;
    return NULL;
}

size_t http_on_header(char *p, size_t size, size_t n, void *ud)
{
    struct http_xfer *x = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { /* a new response (after 100, CONNECT) */
        hdrs_clear(x);
        return len;
    }
    size_t end = len;
    while (end && (p[end - 1] == '\r' || p[end - 1] == '\n'))
        end--;
    char *colon = memchr(p, ':', end);
    if (!colon || colon == p)
        return len;
    size_t nlen = (size_t)(colon - p), v = nlen + 1;
    while (v < end && (p[v] == ' ' || p[v] == '\t'))
        v++;
    size_t vend = end;
    while (vend > v && (p[vend - 1] == ' ' || p[vend - 1] == '\t'))
        vend--;
    char *name = buf_dupn(p, nlen);
    if (!name)
        return 0;
    for (char *c = name; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    for (size_t i = 0; i < x->nhdrs; i++) {
        if (strcmp(x->hdrs[i].name, name) == 0) { /* repeated: join with ", " */
            free(name);
            size_t old = strlen(x->hdrs[i].value);
            char *joined = malloc(old + 2 + (vend - v) + 1);
            if (!joined)
                return 0;
            memcpy(joined, x->hdrs[i].value, old);
            memcpy(joined + old, ", ", 2);
            memcpy(joined + old + 2, p + v, vend - v);
            joined[old + 2 + (vend - v)] = 0;
            buf_secret_free(&x->hdrs[i].value);
            x->hdrs[i].value = joined;
            return len;
        }
    }
    if (x->nhdrs == x->hcap) {
        size_t cap = x->hcap ? x->hcap * 2 : 16;
        struct hdr *h = realloc(x->hdrs, cap * sizeof *h);
        if (!h) {
            free(name);
            return 0;
        }
        x->hdrs = h;
        x->hcap = cap;
    }
    char *value = buf_dupn(p + v, vend - v);
    if (!value) {
        free(name);
        return 0;
    }
    x->hdrs[x->nhdrs].name = name;
    x->hdrs[x->nhdrs].value = value;
    x->nhdrs++;
    return len;
}

size_t http_on_write(char *p, size_t size, size_t n, void *ud)
{
    struct http_xfer *x = ud;
    size_t len = size * n;
    if (x->resp.len + len > RESPONSE_MAX) {
        x->too_large = 1;
        return 0;
    }
    return buf_add(&x->resp, p, len) == 0 ? len : 0;
}

void http_error_set(struct owned_error *e, const char *code, const char *message,
                    const char *target, int retryable, const char *kind)
{
    error_clear(e);
    e->code = buf_dup(code);
    e->message = buf_dup(message);
    e->target = buf_dup(target);
    e->retryable = retryable;
    e->kind = kind;
}

/* The owned error as a struct cmk_error borrowing its strings. */
static struct cmk_error error_view(const struct owned_error *o)
{
    struct cmk_error e = {.code = o->code, .message = o->message, .status = o->status,
                          .target = o->target, .request_id = o->request_id,
                          .retryable = o->retryable, .tenant = o->tenant, .kind = o->kind};
    return e;
}

int http_push_failure(lua_State *L, const struct http_xfer *x)
{
    struct cmk_error e = error_view(&x->err);
    return cmk_fail(L, &e);
}

static void error_copy(struct owned_error *e, const struct cmk_error *src)
{
    error_clear(e);
    e->code = buf_dup(src->code);
    e->message = buf_dup(src->message);
    e->target = buf_dup(src->target);
    e->request_id = buf_dup(src->request_id);
    e->tenant = buf_dup(src->tenant);
    e->status = src->status;
    e->retryable = src->retryable;
    e->kind = src->kind; /* static text */
}

const char *http_response_request_id(const struct http_xfer *x)
{
    const char *id = http_hdr_get(x, "x-ms-request-id");
    return id ? id : http_hdr_get(x, "request-id");
}

/* The transfer is over: hand it to its owner. x may be freed on return. */
void http_xfer_finish(struct http_xfer *x)
{
    http_session *s = x->s;
    x->state = XS_DONE;
    x->elapsed_ms = http_now_ms(s) - x->start_ms;
    if (s)
        http_session_unlink(s, x);
    slist_wipe(x->sent_headers);
    x->sent_headers = NULL;
    if (x->easy) {
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    if (x->token_owner) {
        x->token_src->release(x->token_owner);
        x->token_owner = NULL;
    }
    if (x->body) { /* sent: the copy is no longer needed */
        OPENSSL_cleanse(x->body, x->body_len);
        free(x->body);
        x->body = NULL;
    }
    if (x->kind == XFER_INTERNAL) {
        struct http_internal_response r = {0};
        struct cmk_error e = error_view(&x->err);
        if (x->failed) {
            r.err = &e;
        } else {
            r.status = x->status;
            r.body = x->resp.data ? x->resp.data : "";
            r.body_len = x->resp.len;
            r.www_authenticate = http_hdr_get(x, "www-authenticate");
            r.request_id = http_response_request_id(x);
        }
        if (x->cb)
            x->cb(x->ud, &r);
        buf_wipe(&x->resp);
        hdrs_clear(x);
        http_xfer_maybe_free(x);
        return;
    }
    if (s && !s->closing) {
        x->queued = 1;
        x->done_next = NULL;
        if (s->done_tail)
            s->done_tail->done_next = x;
        else
            s->done_head = x;
        s->done_tail = x;
    } else {
        http_xfer_maybe_free(x);
    }
}

static void xfer_fail(struct http_xfer *x, const char *code, const char *message, int retryable,
                      const char *kind)
{
    x->failed = 1;
    http_error_set(&x->err, code, message, x->target, retryable, kind);
    http_xfer_finish(x);
}

static void xfer_fail_curl(struct http_xfer *x, CURLcode rc, int retryable)
{
    const char *code = "TransportError", *kind = "network";
    char msg[CURL_ERROR_SIZE + 512];
    char host[256] = "";
    CURLU *u = curl_url();
    char *h = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, x->url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK)
        snprintf(host, sizeof host, "%s", h);
    curl_free(h);
    curl_url_cleanup(u);
    char *detail = redact_text(x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc),
                               strlen(x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc)));
    const char *d = detail ? detail : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        code = "TLSVerificationFailed";
        kind = "tls";
        snprintf(msg, sizeof msg,
                 "TLS certificate verification failed for %s: %s. Pass the CA certificate that "
                 "signed the server's certificate as ca_file (or install it in the system trust "
                 "store); verification cannot be turned off",
                 host, d);
        break;
    case CURLE_SSL_CONNECT_ERROR:
        if (http_handshake_reset(rc, x->os_errno)) { /* a dropped connection, not a TLS problem */
            code = "ConnectionFailed";
            snprintf(msg, sizeof msg, "the connection to %s was reset during the TLS handshake: %s", host, d);
            break;
        }
        code = "TLSHandshakeFailed";
        kind = "tls";
        snprintf(msg, sizeof msg, "TLS handshake with %s failed: %s", host, d);
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        code = "NameResolutionFailed";
        snprintf(msg, sizeof msg, "could not resolve %s: %s", host, d);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        code = "Timeout";
        snprintf(msg, sizeof msg, "%s %s timed out: %s", x->method, x->target, d);
        break;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        code = "InvalidURL";
        kind = "config";
        snprintf(msg, sizeof msg, "invalid URL '%s': %s", x->target, d);
        break;
    default:
        if (rc == CURLE_WRITE_ERROR && x->too_large)
            code = "ResponseTooLarge";
        else if (http_curlcode_retryable(rc))
            code = "ConnectionFailed";
        snprintf(msg, sizeof msg, "%s %s failed: %s", x->method, x->target, d);
        break;
    }
    free(detail);
    if (retryable && x->attempts > 1) {
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, " (gave up after %d attempts)", x->attempts);
    }
    xfer_fail(x, code, msg, retryable, kind);
}

static void xfer_launch(struct http_xfer *x, const char *token)
{
    http_session *s = x->s;
    x->status = 0;
    hdrs_clear(x);
    buf_wipe(&x->resp);
    x->too_large = 0;
    x->errbuf[0] = 0;
    x->trace_in = x->trace_out = 0;
    slist_wipe(x->sent_headers);
    x->sent_headers = NULL;
    for (struct curl_slist *i = x->headers; i; i = i->next) {
        struct curl_slist *l = curl_slist_append(x->sent_headers, i->data);
        if (!l) {
            xfer_fail(x, "TransportError", "out of memory", 0, NULL);
            return;
        }
        x->sent_headers = l;
    }
    if (token) {
        static const char prefix[] = "Authorization: Bearer ";
        size_t tl = strlen(token), n = sizeof prefix - 1 + tl + 1;
        char *line = malloc(n);
        struct curl_slist *l = NULL;
        if (line) {
            memcpy(line, prefix, sizeof prefix - 1);
            memcpy(line + sizeof prefix - 1, token, tl + 1);
            l = curl_slist_append(x->sent_headers, line); /* copies; the copy is wiped later */
            OPENSSL_cleanse(line, n);
            free(line);
        }
        if (!l) {
            xfer_fail(x, "TransportError", "out of memory", 0, NULL);
            return;
        }
        x->sent_headers = l;
    }
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->sent_headers);
    if (http_xfer_debug(x)) {
        curl_easy_setopt(x->easy, CURLOPT_DEBUGFUNCTION, http_trace_debug);
        curl_easy_setopt(x->easy, CURLOPT_DEBUGDATA, x);
        curl_easy_setopt(x->easy, CURLOPT_VERBOSE, 1L);
    } else {
        curl_easy_setopt(x->easy, CURLOPT_VERBOSE, 0L);
    }
    CURLMcode mc = curl_multi_add_handle(s->multi, x->easy);
    if (mc != CURLM_OK) {
        xfer_fail(x, "TransportError", curl_multi_strerror(mc), 0, "network");
        return;
    }
    x->state = XS_RUNNING;
}

static void on_token(void *ud, const char *token, const struct cmk_error *err)
{
    struct http_xfer *x = ud;
    x->awaiting_token = 0;
    if (x->state != XS_TOKEN) { /* cancelled meanwhile */
        http_xfer_maybe_free(x);
        return;
    }
    if (!x->s || x->s->closing) {
        xfer_fail(x, "Cancelled", "the HTTP session was closed", 0, NULL);
        return;
    }
    if (!token) {
        struct cmk_error fallback = {.code = "AuthenticationFailed", .message = "no token"};
        x->failed = 1;
        error_copy(&x->err, err ? err : &fallback);
        if (!x->err.target)
            x->err.target = buf_dup(x->target);
        http_xfer_finish(x);
        return;
    }
    xfer_launch(x, token);
}

void http_xfer_attempt(struct http_xfer *x)
{
    http_session *s = x->s;
    x->attempts++;
    s->st.attempts++;
    if (x->attempts > 1)
        s->st.retries++;
    if (x->token_owner && x->scope) {
        /* asked again on every attempt: the cache answers, or refreshes an expired token */
        x->state = XS_TOKEN;
        x->awaiting_token = 1;
        x->token_src->get_token(x->token_owner, s, x->scope, x->tenant, on_token, x);
        return;
    }
    xfer_launch(x, NULL);
}

void http_xfer_attempt_done(struct http_xfer *x, CURLcode rc)
{
    http_session *s = x->s;
    curl_multi_remove_handle(s->multi, x->easy);
    slist_wipe(x->sent_headers);
    x->sent_headers = NULL;
    long connects = 0, status = 0;
    curl_off_t up = 0, down = 0;
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    curl_easy_getinfo(x->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
    s->st.connects += connects;
    if (x->https)
        s->st.tls_handshakes += connects;
    s->st.bytes += (int64_t)up + (int64_t)down;

    int64_t now = http_now_ms(s);
    int retry;
    const char *ra = NULL, *ra_ms = NULL;
    if (rc == CURLE_OK) {
        x->status = status;
        retry = http_status_retryable(status);
        ra = http_hdr_get(x, "retry-after");
        ra_ms = http_hdr_get(x, "x-ms-retry-after-ms");
        if (!ra_ms)
            ra_ms = http_hdr_get(x, "retry-after-ms");
    } else {
        x->os_errno = 0;
        curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &x->os_errno);
        retry = http_transport_retryable(rc, x->os_errno);
    }
    if (retry) {
        int64_t delay = http_retry_delay_ms(&x->policy, x->attempts + 1, now - x->start_ms, ra,
                                            ra_ms, now, http_jitter01());
        if (delay >= 0) {
            char why[64];
            if (rc == CURLE_OK)
                snprintf(why, sizeof why, "HTTP %ld", status);
            else
                snprintf(why, sizeof why, "%s", curl_easy_strerror(rc));
            http_trace_retry(x, why, delay);
            x->state = XS_TIMER;
            x->wake_ms = now + delay;
            s->st.slept_ms += delay;
            return;
        }
    }
    if (rc == CURLE_OK)
        http_xfer_finish(x);
    else
        xfer_fail_curl(x, rc, retry);
}
