/* http.c: the libcurl multi session — retries on timers, CONNECT_TO, TLS, proxies, traces.
 * The Lua view and the C interface are described in http.h. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include "auth.h"
#include "crypto.h"
#include "http.h"
#include "redact.h"

#define SESSION_MT "cmkflow.http.session"
#define TRANSFER_MT "cmkflow.http.transfer"
#define SESSION_KEY "cmkflow.http.session.instance" /* registry field holding the state's session */

#define TRACE_BODY_MAX 4096            /* bytes of each body shown by the debug trace */
#define RESPONSE_MAX ((size_t)256 << 20) /* a response body larger than this is an error */
#define POLL_MAX_MS 100                /* bound on one wait, so an interrupt hook fires promptly */

static const struct http_retry_policy default_policy = {6, 800, 60000, 300000};

/* ---- small owned buffers and strings ------------------------------------------------ */

struct buf {
    char *data;
    size_t len, cap;
};

static int buf_add(struct buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = malloc(cap);
        if (!d)
            return -1;
        if (b->len)
            memcpy(d, b->data, b->len);
        if (b->data) {
            /* response bodies may hold tokens: never leave a copy behind in freed memory */
            OPENSSL_cleanse(b->data, b->cap);
            free(b->data);
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static void buf_wipe(struct buf *b)
{
    if (b->data) {
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = b->cap = 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static char *dup_s(const char *s)
{
    return s ? dup_n(s, strlen(s)) : NULL;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* Wipe every string of an slist (they may carry a bearer token), then free it. */
static void slist_wipe(struct curl_slist *l)
{
    for (struct curl_slist *i = l; i; i = i->next)
        if (i->data)
            OPENSSL_cleanse(i->data, strlen(i->data));
    curl_slist_free_all(l);
}

/* ---- transfers and the session ------------------------------------------------------ */

enum xfer_kind { XFER_LUA, XFER_INTERNAL, XFER_TIMER };
enum xfer_state { XS_NEW, XS_TOKEN, XS_RUNNING, XS_TIMER, XS_DONE };

struct hdr {
    char *name; /* lower case */
    char *value;
};

/* An owned copy of a struct cmk_error. */
struct owned_error {
    char *code, *message, *target, *request_id, *tenant;
    int status, retryable;
};

struct http_xfer {
    http_session *s;                  /* NULL once the session is gone */
    struct http_xfer *prev, *next;    /* the session's in-flight list */
    struct http_xfer *done_next;      /* the session's finished queue (Lua-visible kinds) */
    enum xfer_kind kind;
    enum xfer_state state;
    int lua_owned;                    /* a transfer userdata points here */
    int awaiting_token;               /* auth_get_token's callback has not run yet */
    int queued;                       /* in the finished queue */
    int linked;                       /* in the in-flight list */
    CURL *easy;
    char errbuf[CURL_ERROR_SIZE];
    /* request */
    char *method, *url, *target;      /* target: the URL with SAS signatures removed */
    int https;
    char *body;
    size_t body_len;
    struct curl_slist *headers;       /* everything but Authorization */
    struct curl_slist *sent_headers;  /* this attempt's list, with Authorization */
    struct curl_slist *connect_to;
    char *ca_file, *proxy;
    long timeout_ms, connect_timeout_ms;
    struct http_retry_policy policy;
    auth_credential *cred;
    char *scope, *tenant;
    int debug;
    char *client_request_id;
    /* progress */
    int attempts;
    int64_t start_ms, wake_ms, elapsed_ms;
    size_t trace_in, trace_out;
    /* response */
    long status;
    struct hdr *hdrs;
    size_t nhdrs, hcap;
    struct buf resp;
    int too_large;
    /* failure (failed = 1) */
    int failed;
    struct owned_error err;
    /* internal transfers */
    http_internal_cb cb;
    void *ud;
};

struct http_session {
    CURLM *multi;
    CURLSH *share;
    struct http_xfer *head;                 /* in flight: running, waiting on a token or a timer */
    struct http_xfer *done_head, *done_tail; /* finished, not yet returned by run */
    int closing;
    int fake_clock;
    int64_t clock_offset_ms;
    int debug;
    FILE *trace; /* NULL: stderr */
    long pending; /* Lua-visible transfers not yet returned by run */
    struct {
        long requests, attempts, retries, connects, tls_handshakes, token_fetches;
        int64_t bytes, slept_ms, skipped_ms;
    } st;
    char user_agent[96];
};

struct transfer_ud {
    struct http_xfer *x;
};

/* ---- clocks, randomness ------------------------------------------------------------- */

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t http_now_ms(http_session *s)
{
    return real_ms() + (s ? s->clock_offset_ms : 0);
}

void http_count_token_fetch(http_session *s)
{
    if (s)
        s->st.token_fetches++;
}

static double jitter01(void)
{
    uint64_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint64_t)real_ms() * 2654435761u;
    return (double)(r >> 11) / 9007199254740992.0; /* 53 bits -> [0, 1) */
}

/* ---- the retry policy (pure) -------------------------------------------------------- */

int http_status_retryable(long status)
{
    switch (status) {
    case 408: case 429: case 500: case 502: case 503: case 504:
        return 1;
    default:
        return 0;
    }
}

int http_curlcode_retryable(int curl_code)
{
    switch ((CURLcode)curl_code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default: /* in particular never a TLS verification failure */
        return 0;
    }
}

/* A non-negative decimal integer (surrounding blanks allowed); -1 otherwise. */
static int64_t parse_count(const char *s)
{
    if (!s)
        return -1;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    int64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    while (*s == ' ' || *s == '\t')
        s++;
    return *s ? -1 : v;
}

int64_t http_retry_delay_ms(const struct http_retry_policy *p, int attempt, int64_t elapsed_ms,
                            const char *retry_after, const char *retry_after_ms, int64_t now_ms,
                            double jitter)
{
    if (attempt < 2 || attempt > p->max_attempts)
        return -1;
    int64_t delay = parse_count(retry_after_ms);
    if (delay < 0 && retry_after) {
        int64_t secs = parse_count(retry_after);
        if (secs >= 0) {
            delay = secs > INT64_MAX / 1000 ? INT64_MAX / 2 : secs * 1000;
        } else {
            time_t t = curl_getdate(retry_after, NULL);
            if (t != (time_t)-1) {
                delay = (int64_t)t * 1000 - now_ms;
                if (delay < 0)
                    delay = 0;
            }
        }
    }
    if (delay < 0) {
        double d = (double)p->base_delay_ms;
        for (int i = 2; i < attempt && d < (double)p->max_delay_ms; i++)
            d *= 2;
        if (jitter < 0)
            jitter = 0;
        if (jitter >= 1)
            jitter = 0.999999;
        d *= 0.8 + 0.4 * jitter;
        /* the cap bounds the jittered value: max_delay_ms is a true maximum */
        delay = d > (double)p->max_delay_ms ? p->max_delay_ms : (int64_t)d;
    }
    if (elapsed_ms + delay > p->max_total_ms)
        return -1;
    return delay;
}

/* ---- URLs --------------------------------------------------------------------------- */

/* The URL with the values of sig= query parameters replaced (SAS signatures). malloc'd. */
static char *redact_url(const char *url)
{
    struct buf b = {0};
    const char *q = strchr(url, '?');
    if (!q)
        return dup_s(url);
    buf_add(&b, url, (size_t)(q - url));
    const char *p = q;
    while (*p) {
        char sep = *p++; /* '?' or '&' */
        const char *end = p + strcspn(p, "&#");
        buf_add(&b, &sep, 1);
        if (end - p >= 4 && strncasecmp(p, "sig=", 4) == 0) {
            buf_add(&b, p, 4);
            buf_add(&b, "REDACTED", 8);
        } else {
            buf_add(&b, p, (size_t)(end - p));
        }
        p = end;
        if (*p == '#') {
            buf_add(&b, p, strlen(p));
            break;
        }
    }
    char *out = b.data ? b.data : dup_s("");
    return out;
}

/* 0 when url is acceptable; otherwise a message in msg. *https tells the scheme. */
static int url_check(const char *url, char *msg, size_t msglen, int *https)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int rc = -1;
    if (!u) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        snprintf(msg, msglen, "%s", curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(msg, msglen, "no scheme or host");
        goto out;
    }
    if (strcmp(scheme, "https") == 0) {
        *https = 1;
        rc = 0;
    } else if (strcmp(scheme, "http") == 0) {
        *https = 0;
        if (strcmp(host, "127.0.0.1") == 0 || strcasecmp(host, "localhost") == 0 ||
            strcmp(host, "169.254.169.254") == 0)
            rc = 0;
        else
            snprintf(msg, msglen,
                     "plain http is allowed only for 127.0.0.1, localhost and 169.254.169.254 "
                     "(IMDS); use https");
    } else {
        snprintf(msg, msglen, "unsupported scheme '%s' (use https)", scheme);
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

/* ---- transfer memory ---------------------------------------------------------------- */

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
        free_secret(x->hdrs[i].value);
    }
    x->nhdrs = 0;
}

static void xfer_free(struct http_xfer *x)
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
    if (x->cred)
        auth_credential_unref(x->cred);
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
static void xfer_maybe_free(struct http_xfer *x)
{
    if (!x->lua_owned && !x->awaiting_token && !x->linked && !x->queued)
        xfer_free(x);
}

static void session_link(http_session *s, struct http_xfer *x)
{
    x->s = s;
    x->prev = NULL;
    x->next = s->head;
    if (s->head)
        s->head->prev = x;
    s->head = x;
    x->linked = 1;
    if (x->kind != XFER_INTERNAL)
        s->pending++;
}

static void session_unlink(http_session *s, struct http_xfer *x)
{
    if (!x->linked)
        return;
    if (x->prev)
        x->prev->next = x->next;
    else
        s->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    x->linked = 0;
}

static void queue_remove(http_session *s, struct http_xfer *x)
{
    struct http_xfer **pp = &s->done_head, *last = NULL;
    while (*pp && *pp != x) {
        last = *pp;
        pp = &(*pp)->done_next;
    }
    if (*pp) {
        *pp = x->done_next;
        if (s->done_tail == x)
            s->done_tail = last;
        x->done_next = NULL;
        x->queued = 0;
    }
}

/* ---- response capture --------------------------------------------------------------- */

static const char *hdr_get(const struct http_xfer *x, const char *name)
{
    for (size_t i = 0; i < x->nhdrs; i++)
        if (strcmp(x->hdrs[i].name, name) == 0)
            return x->hdrs[i].value;
    return NULL;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
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
    char *name = dup_n(p, nlen);
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
            free_secret(x->hdrs[i].value);
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
    char *value = dup_n(p + v, vend - v);
    if (!value) {
        free(name);
        return 0;
    }
    x->hdrs[x->nhdrs].name = name;
    x->hdrs[x->nhdrs].value = value;
    x->nhdrs++;
    return len;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct http_xfer *x = ud;
    size_t len = size * n;
    if (x->resp.len + len > RESPONSE_MAX) {
        x->too_large = 1;
        return 0;
    }
    return buf_add(&x->resp, p, len) == 0 ? len : 0;
}

/* ---- debug trace -------------------------------------------------------------------- */

static int sensitive_header(const char *line, size_t namelen)
{
    static const char *const names[] = {"authorization", "proxy-authorization", "x-identity-header",
                                        "cookie", "set-cookie", "metadata-secret"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == namelen && strncasecmp(line, names[i], namelen) == 0)
            return 1;
    return 0;
}

/* Write data line by line with prefix, masking secret headers (headers = 1) and then passing
 * everything through redact_text. */
static void trace_write(FILE *f, const char *prefix, const char *data, size_t len, int headers)
{
    struct buf masked = {0};
    if (headers) {
        size_t i = 0;
        while (i < len) {
            const char *line = data + i;
            const char *nl = memchr(line, '\n', len - i);
            size_t ll = nl ? (size_t)(nl - line) + 1 : len - i;
            const char *colon = memchr(line, ':', ll);
            if (colon && sensitive_header(line, (size_t)(colon - line))) {
                buf_add(&masked, line, (size_t)(colon - line));
                buf_add(&masked, ": REDACTED\n", 11);
            } else {
                buf_add(&masked, line, ll);
            }
            i += ll;
        }
        data = masked.data ? masked.data : "";
        len = masked.len;
    }
    char *clean = redact_text(data, len);
    buf_wipe(&masked);
    if (!clean)
        return;
    const char *p = clean;
    while (*p) {
        size_t ll = strcspn(p, "\n");
        size_t shown = ll;
        if (shown && p[shown - 1] == '\r')
            shown--;
        fprintf(f, "%s%.*s\n", prefix, (int)shown, p);
        p += ll;
        if (*p == '\n')
            p++;
    }
    free_secret(clean);
}

static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud)
{
    struct http_xfer *x = ud;
    FILE *f = x->s && x->s->trace ? x->s->trace : stderr;
    (void)h;
    switch (type) {
    case CURLINFO_TEXT:
        trace_write(f, "* ", data, size, 0);
        break;
    case CURLINFO_HEADER_OUT:
        trace_write(f, "> ", data, size, 1);
        break;
    case CURLINFO_HEADER_IN:
        trace_write(f, "< ", data, size, 1);
        break;
    case CURLINFO_DATA_OUT:
    case CURLINFO_DATA_IN: {
        size_t *shown = type == CURLINFO_DATA_IN ? &x->trace_in : &x->trace_out;
        const char *prefix = type == CURLINFO_DATA_IN ? "< " : "> ";
        if (*shown < TRACE_BODY_MAX) {
            size_t n = size < TRACE_BODY_MAX - *shown ? size : TRACE_BODY_MAX - *shown;
            trace_write(f, prefix, data, n, 0);
            if (n < size)
                fprintf(f, "%s[body truncated at %d bytes]\n", prefix, TRACE_BODY_MAX);
        }
        *shown += size;
        break;
    }
    default:
        break;
    }
    fflush(f);
    return 0;
}

static int xfer_debug(const struct http_xfer *x)
{
    return x->debug || (x->s && x->s->debug);
}

static void trace_retry(struct http_xfer *x, const char *why, int64_t delay)
{
    if (!xfer_debug(x))
        return;
    FILE *f = x->s && x->s->trace ? x->s->trace : stderr;
    fprintf(f, "* cmkflow: attempt %d of %s %s: %s; retrying in %lld ms\n", x->attempts,
            x->method, x->target, why, (long long)delay);
    fflush(f);
}

/* ---- finishing ---------------------------------------------------------------------- */

static void error_set(struct owned_error *e, const char *code, const char *message,
                      const char *target, int retryable)
{
    error_clear(e);
    e->code = dup_s(code);
    e->message = dup_s(message);
    e->target = dup_s(target);
    e->retryable = retryable;
}

static void error_copy(struct owned_error *e, const struct cmk_error *src)
{
    error_clear(e);
    e->code = dup_s(src->code);
    e->message = dup_s(src->message);
    e->target = dup_s(src->target);
    e->request_id = dup_s(src->request_id);
    e->tenant = dup_s(src->tenant);
    e->status = src->status;
    e->retryable = src->retryable;
}

static const char *response_request_id(const struct http_xfer *x)
{
    const char *id = hdr_get(x, "x-ms-request-id");
    return id ? id : hdr_get(x, "request-id");
}

/* The transfer is over: hand it to its owner. x may be freed on return. */
static void xfer_finish(struct http_xfer *x)
{
    http_session *s = x->s;
    x->state = XS_DONE;
    x->elapsed_ms = http_now_ms(s) - x->start_ms;
    if (s)
        session_unlink(s, x);
    slist_wipe(x->sent_headers);
    x->sent_headers = NULL;
    if (x->easy) {
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    if (x->cred) {
        auth_credential_unref(x->cred);
        x->cred = NULL;
    }
    if (x->body) { /* sent: the copy is no longer needed */
        OPENSSL_cleanse(x->body, x->body_len);
        free(x->body);
        x->body = NULL;
    }
    if (x->kind == XFER_INTERNAL) {
        struct http_internal_response r = {0};
        struct cmk_error e = {0};
        if (x->failed) {
            e.code = x->err.code;
            e.message = x->err.message;
            e.status = x->err.status;
            e.target = x->err.target;
            e.request_id = x->err.request_id;
            e.retryable = x->err.retryable;
            r.err = &e;
        } else {
            r.status = x->status;
            r.body = x->resp.data ? x->resp.data : "";
            r.body_len = x->resp.len;
            r.www_authenticate = hdr_get(x, "www-authenticate");
            r.request_id = response_request_id(x);
        }
        if (x->cb)
            x->cb(x->ud, &r);
        buf_wipe(&x->resp);
        hdrs_clear(x);
        xfer_maybe_free(x);
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
        xfer_maybe_free(x);
    }
}

static void xfer_fail(struct http_xfer *x, const char *code, const char *message, int retryable)
{
    x->failed = 1;
    error_set(&x->err, code, message, x->target, retryable);
    xfer_finish(x);
}

static void xfer_fail_curl(struct http_xfer *x, CURLcode rc, int retryable)
{
    const char *code = "TransportError";
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
        snprintf(msg, sizeof msg,
                 "TLS certificate verification failed for %s: %s. Pass the CA certificate that "
                 "signed the server's certificate as ca_file (or install it in the system trust "
                 "store); verification cannot be turned off",
                 host, d);
        break;
    case CURLE_SSL_CONNECT_ERROR:
        code = "TLSHandshakeFailed";
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
    xfer_fail(x, code, msg, retryable);
}

/* ---- attempts ----------------------------------------------------------------------- */

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
            xfer_fail(x, "TransportError", "out of memory", 0);
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
            xfer_fail(x, "TransportError", "out of memory", 0);
            return;
        }
        x->sent_headers = l;
    }
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->sent_headers);
    if (xfer_debug(x)) {
        curl_easy_setopt(x->easy, CURLOPT_DEBUGFUNCTION, on_debug);
        curl_easy_setopt(x->easy, CURLOPT_DEBUGDATA, x);
        curl_easy_setopt(x->easy, CURLOPT_VERBOSE, 1L);
    } else {
        curl_easy_setopt(x->easy, CURLOPT_VERBOSE, 0L);
    }
    CURLMcode mc = curl_multi_add_handle(s->multi, x->easy);
    if (mc != CURLM_OK) {
        xfer_fail(x, "TransportError", curl_multi_strerror(mc), 0);
        return;
    }
    x->state = XS_RUNNING;
}

static void on_token(void *ud, const char *token, const struct cmk_error *err)
{
    struct http_xfer *x = ud;
    x->awaiting_token = 0;
    if (x->state != XS_TOKEN) { /* cancelled meanwhile */
        xfer_maybe_free(x);
        return;
    }
    if (!x->s || x->s->closing) {
        xfer_fail(x, "Cancelled", "the HTTP session was closed", 0);
        return;
    }
    if (!token) {
        struct cmk_error fallback = {"AuthenticationFailed", "no token", 0, NULL, NULL, 0, NULL};
        x->failed = 1;
        error_copy(&x->err, err ? err : &fallback);
        if (!x->err.target)
            x->err.target = dup_s(x->target);
        xfer_finish(x);
        return;
    }
    xfer_launch(x, token);
}

static void xfer_attempt(struct http_xfer *x)
{
    http_session *s = x->s;
    x->attempts++;
    s->st.attempts++;
    if (x->attempts > 1)
        s->st.retries++;
    if (x->cred && x->scope) {
        /* asked again on every attempt: the cache answers, or refreshes an expired token */
        x->state = XS_TOKEN;
        x->awaiting_token = 1;
        auth_get_token(x->cred, s, x->scope, x->tenant, on_token, x);
        return;
    }
    xfer_launch(x, NULL);
}

static void xfer_attempt_done(struct http_xfer *x, CURLcode rc)
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
        ra = hdr_get(x, "retry-after");
        ra_ms = hdr_get(x, "x-ms-retry-after-ms");
        if (!ra_ms)
            ra_ms = hdr_get(x, "retry-after-ms");
    } else {
        retry = http_curlcode_retryable(rc);
    }
    if (retry) {
        int64_t delay = http_retry_delay_ms(&x->policy, x->attempts + 1, now - x->start_ms, ra,
                                            ra_ms, now, jitter01());
        if (delay >= 0) {
            char why[64];
            if (rc == CURLE_OK)
                snprintf(why, sizeof why, "HTTP %ld", status);
            else
                snprintf(why, sizeof why, "%s", curl_easy_strerror(rc));
            trace_retry(x, why, delay);
            x->state = XS_TIMER;
            x->wake_ms = now + delay;
            s->st.slept_ms += delay;
            return;
        }
    }
    if (rc == CURLE_OK)
        xfer_finish(x);
    else
        xfer_fail_curl(x, rc, retry);
}

/* ---- the session -------------------------------------------------------------------- */

static void session_init(http_session *s)
{
    memset(s, 0, sizeof *s);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s->multi = curl_multi_init();
    s->share = curl_share_init();
    if (s->multi) {
        curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 16L);
        curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 64L);
        curl_multi_setopt(s->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    }
    if (s->share) {
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    }
    snprintf(s->user_agent, sizeof s->user_agent, "cmkflow/%s libcurl/%s", CMKFLOW_VERSION,
             curl_version_info(CURLVERSION_NOW)->version);
}

/* Cancel everything in flight (internal callbacks get a Cancelled error) and free curl. */
static void session_close(http_session *s)
{
    if (!s->multi)
        return;
    s->closing = 1;
    while (s->head) {
        struct http_xfer *x = s->head;
        if (x->state == XS_RUNNING && x->easy)
            curl_multi_remove_handle(s->multi, x->easy);
        session_unlink(s, x);
        x->s = NULL; /* xfer_finish then frees it unless Lua or auth still refer to it */
        x->failed = 1;
        error_set(&x->err, "Cancelled", "the HTTP session was closed", x->target, 1);
        xfer_finish(x); /* internal callbacks may resolve token waiters */
    }
    while (s->done_head) {
        struct http_xfer *x = s->done_head;
        s->done_head = x->done_next;
        x->queued = 0;
        x->s = NULL;
        xfer_maybe_free(x);
    }
    s->done_tail = NULL;
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
    if (s->share)
        curl_share_cleanup(s->share);
    s->share = NULL;
    if (s->trace)
        fclose(s->trace);
    s->trace = NULL;
    curl_global_cleanup();
}

/* Start transfers whose timer is due. */
static void fire_timers(http_session *s)
{
    int64_t now = http_now_ms(s);
again:
    for (struct http_xfer *x = s->head; x; x = x->next) {
        if (x->state == XS_TIMER && x->wake_ms <= now) {
            if (x->kind == XFER_TIMER || x->failed)
                xfer_finish(x);
            else
                xfer_attempt(x);
            goto again; /* the list may have changed */
        }
    }
}

/* ms until the earliest timer (>= 0), or -1 when none. */
static int64_t next_timer(http_session *s)
{
    int64_t now = http_now_ms(s), best = -1;
    for (struct http_xfer *x = s->head; x; x = x->next)
        if (x->state == XS_TIMER) {
            int64_t d = x->wake_ms > now ? x->wake_ms - now : 0;
            if (best < 0 || d < best)
                best = d;
        }
    return best;
}

static void drain_messages(http_session *s)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct http_xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode rc = m->data.result;
        if (x)
            xfer_attempt_done(x, rc);
    }
}

/* One round: start due timers, let curl work, collect completions. Returns running handles. */
static int session_step(http_session *s)
{
    int running = 0;
    fire_timers(s);
    curl_multi_perform(s->multi, &running);
    drain_messages(s);
    fire_timers(s);
    return running;
}

/* ---- building a transfer ------------------------------------------------------------ */

static int header_token_char(int c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int set_common_options(http_session *s, struct http_xfer *x)
{
    CURL *e = x->easy = curl_easy_init();
    if (!e)
        return -1;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_SHARE, s->share);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, s->user_agent);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, x->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, x->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (x->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, x->ca_file);
    if (x->connect_to)
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, x->connect_to);
    if (x->proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, x->proxy);
    if (strcmp(x->method, "GET") == 0 && !x->body) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(x->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        /* POSTFIELDS (even empty) makes curl send Content-Length, which ARM wants on PUT */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body ? x->body : "");
        if (strcmp(x->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
    }
    return 0;
}

/* Adds "Expect:" (no 100-continue round trip), an empty Content-Type unless set (curl would
 * otherwise claim a form), the client request id and the caller's headers are already there. */
static int add_standard_headers(struct http_xfer *x, int has_content_type)
{
    char line[96];
    struct curl_slist *l;
    if (!x->client_request_id) {
        char id[37];
        if (crypto_uuid4(id) != 0)
            return -1;
        x->client_request_id = dup_s(id);
        if (!x->client_request_id)
            return -1;
        snprintf(line, sizeof line, "x-ms-client-request-id: %s", id);
        if (!(l = curl_slist_append(x->headers, line)))
            return -1;
        x->headers = l;
    }
    if (!(l = curl_slist_append(x->headers, "Expect:")))
        return -1;
    x->headers = l;
    if (!has_content_type && strcmp(x->method, "GET") != 0 && strcmp(x->method, "HEAD") != 0) {
        if (!(l = curl_slist_append(x->headers, "Content-Type:")))
            return -1;
        x->headers = l;
    }
    return 0;
}

/* Remember a caller-set client request id / content type while adding a header line. */
static void note_header(struct http_xfer *x, const char *name, const char *value,
                        int *has_content_type)
{
    if (strcasecmp(name, "x-ms-client-request-id") == 0 && !x->client_request_id)
        x->client_request_id = dup_s(value);
    if (strcasecmp(name, "content-type") == 0)
        *has_content_type = 1;
}

/* ---- Lua: transfers ----------------------------------------------------------------- */

static struct transfer_ud *check_transfer(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, TRANSFER_MT);
}

/* [-0, +0, -] __gc: an unfinished transfer is cancelled. */
static int transfer_gc(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    struct http_xfer *x = t->x;
    t->x = NULL;
    if (!x)
        return 0;
    x->lua_owned = 0;
    http_session *s = x->s;
    if (s) {
        if (x->linked || x->queued)
            s->pending--;
        if (x->queued)
            queue_remove(s, x);
        if (x->state == XS_RUNNING && x->easy && s->multi)
            curl_multi_remove_handle(s->multi, x->easy);
        session_unlink(s, x);
    }
    if (x->state == XS_TOKEN)
        x->state = XS_DONE; /* on_token frees it */
    xfer_maybe_free(x);
    return 0;
}

/* [-0, +1, -] t:done() */
static int transfer_done(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    lua_pushboolean(L, t->x && t->x->state == XS_DONE);
    return 1;
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

/* [-0, +1|2, e] t:result() -> resp | nil, err */
static int transfer_result(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    struct http_xfer *x = t->x;
    if (!x || x->state != XS_DONE)
        return luaL_error(L, "transfer:result(): the transfer has not finished (drive session:run)");
    if (x->failed) {
        struct cmk_error e = {x->err.code,      x->err.message, x->err.status, x->err.target,
                              x->err.request_id, x->err.retryable, x->err.tenant};
        return cmk_fail(L, &e);
    }
    if (x->kind == XFER_TIMER) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, x->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)x->nhdrs);
    for (size_t i = 0; i < x->nhdrs; i++) {
        lua_pushstring(L, x->hdrs[i].value);
        lua_setfield(L, -2, x->hdrs[i].name);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, x->resp.data ? x->resp.data : "", x->resp.len);
    lua_setfield(L, -2, "body");
    lua_pushinteger(L, x->attempts);
    lua_setfield(L, -2, "attempts");
    set_str(L, "request_id", response_request_id(x));
    set_str(L, "client_request_id", x->client_request_id);
    lua_pushinteger(L, x->elapsed_ms);
    lua_setfield(L, -2, "elapsed_ms");
    return 1;
}

/* [-0, +1, -] tostring(t) */
static int transfer_tostring(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    if (t->x && t->x->kind == XFER_TIMER)
        lua_pushfstring(L, "cmkflow.http.transfer(timer)");
    else if (t->x)
        lua_pushfstring(L, "cmkflow.http.transfer(%s %s)", t->x->method, t->x->target);
    else
        lua_pushliteral(L, "cmkflow.http.transfer(closed)");
    return 1;
}

/* ---- Lua: the session --------------------------------------------------------------- */

static http_session *check_session(lua_State *L, int idx)
{
    http_session *s = luaL_checkudata(L, idx, SESSION_MT);
    if (!s->multi)
        luaL_error(L, "the HTTP session is closed");
    return s;
}

/* [-0, +0, -] __gc / __close */
static int session_gc(lua_State *L)
{
    http_session *s = luaL_checkudata(L, 1, SESSION_MT);
    session_close(s);
    return 0;
}

/* Pushes the userdata for x (from the session's keep table) and forgets it there.
 * [-0, +1, -] with the session userdata at sidx. */
static void push_and_release(lua_State *L, int sidx, struct http_xfer *x)
{
    lua_getiuservalue(L, sidx, 1);
    lua_rawgetp(L, -1, x);
    lua_pushnil(L);
    lua_rawsetp(L, -3, x);
    lua_remove(L, -2);
}

static struct transfer_ud *new_transfer(lua_State *L, http_session *s, enum xfer_kind kind)
{
    struct transfer_ud *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->x = NULL;
    luaL_setmetatable(L, TRANSFER_MT);
    t->x = calloc(1, sizeof *t->x);
    if (!t->x)
        luaL_error(L, "out of memory");
    t->x->kind = kind;
    t->x->lua_owned = 1;
    (void)s;
    return t;
}

/* Link x into the session and remember its userdata (at the top of the stack) so it lives
 * until run hands it back. [-0, +0, m] */
static void register_transfer(lua_State *L, int sidx, http_session *s, struct http_xfer *x)
{
    lua_getiuservalue(L, sidx, 1);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, x);
    lua_pop(L, 1);
    session_link(s, x);
    x->start_ms = http_now_ms(s);
}

static lua_Integer opt_int_field(lua_State *L, int idx, const char *k, lua_Integer dflt,
                                 lua_Integer min)
{
    lua_Integer v = dflt;
    int t = lua_getfield(L, idx, k);
    if (t != LUA_TNIL) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min)
            luaL_error(L, "req.%s must be an integer >= %d", k, (int)min);
    }
    lua_pop(L, 1);
    return v;
}

static char *opt_str_field(lua_State *L, int idx, const char *k)
{
    char *v = NULL;
    int t = lua_getfield(L, idx, k);
    if (t == LUA_TSTRING) {
        v = dup_s(lua_tostring(L, -1));
        if (!v)
            luaL_error(L, "out of memory");
    } else if (t != LUA_TNIL) {
        luaL_error(L, "req.%s must be a string", k);
    }
    lua_pop(L, 1);
    return v;
}

static void read_retry(lua_State *L, int idx, struct http_retry_policy *p)
{
    *p = default_policy;
    int t = lua_getfield(L, idx, "retry");
    if (t == LUA_TTABLE) {
        int r = lua_gettop(L);
        p->max_attempts = (int)opt_int_field(L, r, "max_attempts", p->max_attempts, 1);
        p->base_delay_ms = opt_int_field(L, r, "base_delay_ms", p->base_delay_ms, 0);
        p->max_delay_ms = opt_int_field(L, r, "max_delay_ms", p->max_delay_ms, 0);
        p->max_total_ms = opt_int_field(L, r, "max_total_ms", p->max_total_ms, 0);
    } else if (t != LUA_TNIL) {
        luaL_error(L, "req.retry must be a table");
    }
    lua_pop(L, 1);
}

static void read_headers(lua_State *L, int idx, struct http_xfer *x, int *has_ct)
{
    int t = lua_getfield(L, idx, "headers");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "req.headers must be a table of name = value");
    int h = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, h)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
            luaL_error(L, "req.headers must map header names to strings");
        size_t nl, vl;
        const char *name = lua_tolstring(L, -2, &nl);
        const char *value = lua_tolstring(L, -1, &vl);
        if (nl == 0)
            luaL_error(L, "req.headers: empty header name");
        for (size_t i = 0; i < nl; i++)
            if (!header_token_char((unsigned char)name[i]))
                luaL_error(L, "req.headers: invalid header name '%s'", name);
        for (size_t i = 0; i < vl; i++)
            if (value[i] == '\r' || value[i] == '\n' || value[i] == 0)
                luaL_error(L, "req.headers: header '%s' has a line break or NUL", name);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, name, nl);
        luaL_addstring(&b, vl ? ": " : ";"); /* "Name;" sends an empty header */
        luaL_addlstring(&b, value, vl);
        luaL_pushresult(&b);
        struct curl_slist *l = curl_slist_append(x->headers, lua_tostring(L, -1));
        if (!l)
            luaL_error(L, "out of memory");
        x->headers = l;
        note_header(x, name, value, has_ct);
        lua_pop(L, 2); /* line, value */
    }
    lua_pop(L, 1);
}

static void read_connect_to(lua_State *L, int idx, struct http_xfer *x)
{
    int t = lua_getfield(L, idx, "connect_to");
    if (t == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                luaL_error(L, "req.connect_to must be an array of \"host:port:addr:port\" strings");
            struct curl_slist *l = curl_slist_append(x->connect_to, lua_tostring(L, -1));
            if (!l)
                luaL_error(L, "out of memory");
            x->connect_to = l;
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_error(L, "req.connect_to must be an array of \"host:port:addr:port\" strings");
    }
    lua_pop(L, 1);
}

/* [-0, +1, e] session:submit(req) -> transfer */
static int session_submit(lua_State *L)
{
    http_session *s = check_session(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct transfer_ud *t = new_transfer(L, s, XFER_LUA); /* index 3: owns x from here */
    struct http_xfer *x = t->x;
    char msg[512];

    x->method = opt_str_field(L, 2, "method");
    if (!x->method && !(x->method = dup_s("GET")))
        return luaL_error(L, "out of memory");
    for (const char *c = x->method; *c; c++)
        if (!isupper((unsigned char)*c))
            return luaL_error(L, "req.method must be an upper-case HTTP method, got '%s'",
                              x->method);
    if (!*x->method)
        return luaL_error(L, "req.method must not be empty");
    if (lua_getfield(L, 2, "url") != LUA_TSTRING)
        return luaL_error(L, "req.url must be a string");
    lua_pop(L, 1);
    x->url = opt_str_field(L, 2, "url");
    x->target = redact_url(x->url);
    if (!x->target)
        return luaL_error(L, "out of memory");
    if (url_check(x->url, msg, sizeof msg, &x->https) != 0)
        return luaL_error(L, "invalid URL '%s': %s", x->target, msg);

    int has_ct = 0;
    read_headers(L, 2, x, &has_ct);
    int bt = lua_getfield(L, 2, "body");
    if (bt == LUA_TSTRING) {
        size_t n;
        const char *b = lua_tolstring(L, -1, &n);
        if (!(x->body = dup_n(b, n)))
            return luaL_error(L, "out of memory");
        x->body_len = n;
    } else if (bt != LUA_TNIL) {
        return luaL_error(L, "req.body must be a string");
    }
    lua_pop(L, 1);
    x->timeout_ms = (long)opt_int_field(L, 2, "timeout_ms", 60000, 1);
    x->connect_timeout_ms = (long)opt_int_field(L, 2, "connect_timeout_ms", 10000, 1);
    x->ca_file = opt_str_field(L, 2, "ca_file");
    x->proxy = opt_str_field(L, 2, "proxy");
    read_connect_to(L, 2, x);
    read_retry(L, 2, &x->policy);
    lua_getfield(L, 2, "debug");
    x->debug = lua_toboolean(L, -1);
    lua_pop(L, 1);

    if (lua_getfield(L, 2, "credential") != LUA_TNIL) {
        auth_credential *c = auth_test_credential(L, -1);
        if (!c)
            return luaL_error(L, "req.credential must be a cmkflow.credential");
        x->scope = opt_str_field(L, 2, "scope");
        if (!x->scope)
            return luaL_error(L, "req.scope is required with req.credential");
        x->tenant = opt_str_field(L, 2, "tenant");
        auth_credential_ref(c);
        x->cred = c;
    }
    lua_pop(L, 1);

    if (add_standard_headers(x, has_ct) != 0 || set_common_options(s, x) != 0)
        return luaL_error(L, "out of memory");
    register_transfer(L, 1, s, x);
    s->st.requests++;
    xfer_attempt(x);
    return 1;
}

/* [-0, +1, e] session:timer(ms) -> transfer finishing after ms on the session clock */
static int session_timer(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_Integer ms = luaL_checkinteger(L, 2);
    luaL_argcheck(L, ms >= 0, 2, "must be >= 0");
    lua_settop(L, 2);
    struct transfer_ud *t = new_transfer(L, s, XFER_TIMER);
    register_transfer(L, 1, s, t->x);
    t->x->state = XS_TIMER;
    t->x->wake_ms = t->x->start_ms + ms;
    s->st.slept_ms += ms;
    return 1;
}

/* [-0, +1, e] session:run([timeout_ms]) -> array of finished transfers */
static int session_run(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_Integer timeout = luaL_optinteger(L, 2, -1);
    int64_t deadline = timeout >= 0 ? real_ms() + timeout : INT64_MAX;
    for (int round = 0;; round++) {
        int running = session_step(s);
        if (s->done_head || !s->head)
            break;
        int64_t now = real_ms();
        if (now >= deadline)
            break;
        if (round > 0 && lua_gethook(L))
            break; /* let a pending hook (Ctrl-C) run between rounds */
        long wait = POLL_MAX_MS, cto = -1;
        curl_multi_timeout(s->multi, &cto);
        if (cto >= 0 && cto < wait)
            wait = cto;
        int64_t next = next_timer(s);
        if (next > 0 && s->fake_clock && running == 0) {
            /* only timers are pending: jump the virtual clock instead of waiting */
            s->clock_offset_ms += next;
            s->st.skipped_ms += next;
            continue;
        }
        if (next >= 0 && next < wait)
            wait = (long)next;
        if (deadline - now < wait)
            wait = (long)(deadline - now);
        if (wait > 0)
            curl_multi_poll(s->multi, NULL, 0, (int)wait, NULL);
    }
    lua_newtable(L);
    lua_Integer n = 0;
    while (s->done_head) {
        struct http_xfer *x = s->done_head;
        s->done_head = x->done_next;
        if (!s->done_head)
            s->done_tail = NULL;
        x->done_next = NULL;
        x->queued = 0;
        s->pending--;
        push_and_release(L, 1, x);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* [-0, +1, -] session:pending() */
static int session_pending(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_pushinteger(L, s->pending);
    return 1;
}

/* [-0, +1, m] session:stats() */
static int session_stats(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_createtable(L, 0, 12);
    static const char *const names[] = {"requests", "attempts", "retries", "connects",
                                        "tls_handshakes", "token_fetches"};
    long vals[] = {s->st.requests, s->st.attempts, s->st.retries, s->st.connects,
                   s->st.tls_handshakes, s->st.token_fetches};
    for (int i = 0; i < 6; i++) {
        lua_pushinteger(L, vals[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_pushinteger(L, s->st.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, s->st.slept_ms);
    lua_setfield(L, -2, "slept_ms");
    lua_pushinteger(L, s->st.skipped_ms);
    lua_setfield(L, -2, "clock_skipped_ms");
    lua_pushinteger(L, s->pending);
    lua_setfield(L, -2, "pending");
    lua_pushstring(L, s->fake_clock ? "fake" : "real");
    lua_setfield(L, -2, "clock");
    return 1;
}

/* [-0, +0, e] session:set_clock("fake" | "real") */
static int session_set_clock(lua_State *L)
{
    http_session *s = check_session(L, 1);
    static const char *const modes[] = {"real", "fake", NULL};
    s->fake_clock = luaL_checkoption(L, 2, NULL, modes);
    return 0;
}

/* [-0, +1, -] session:now() */
static int session_now(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_pushinteger(L, http_now_ms(s));
    return 1;
}

/* [-0, +0, e] session:set_debug(false | true | "path") */
static int session_set_debug(lua_State *L)
{
    http_session *s = check_session(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *path = lua_tostring(L, 2);
        FILE *f = fopen(path, "a");
        if (!f)
            return luaL_error(L, "cannot open trace file '%s'", path);
        if (s->trace)
            fclose(s->trace);
        s->trace = f;
        s->debug = 1;
    } else {
        s->debug = lua_toboolean(L, 2);
        if (s->trace)
            fclose(s->trace);
        s->trace = NULL;
    }
    return 0;
}

/* [-0, +0, -] session:wakeup() */
static int session_wakeup(lua_State *L)
{
    http_session *s = check_session(L, 1);
    curl_multi_wakeup(s->multi);
    return 0;
}

static void push_metatables(lua_State *L)
{
    if (luaL_newmetatable(L, TRANSFER_MT)) {
        static const luaL_Reg methods[] = {{"result", transfer_result}, {"done", transfer_done},
                                           {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, transfer_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, transfer_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, SESSION_MT)) {
        static const luaL_Reg methods[] = {
            {"submit", session_submit}, {"timer", session_timer},     {"run", session_run},
            {"pending", session_pending}, {"stats", session_stats},   {"set_clock", session_set_clock},
            {"now", session_now},       {"set_debug", session_set_debug}, {"wakeup", session_wakeup},
            {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, session_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}

/* [-0, +1, m] the state's session userdata */
static void push_session(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, SESSION_KEY) == LUA_TUSERDATA)
        return;
    lua_pop(L, 1);
    push_metatables(L);
    http_session *s = lua_newuserdatauv(L, sizeof *s, 1);
    memset(s, 0, sizeof *s);
    lua_newtable(L); /* transfers kept alive until run returns them */
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, SESSION_MT);
    session_init(s);
    if (!s->multi || !s->share) {
        session_close(s);
        luaL_error(L, "cannot initialise libcurl");
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, SESSION_KEY);
}

http_session *http_session_get(lua_State *L)
{
    push_session(L);
    http_session *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
}

/* [-0, +1, e] http.session() */
static int http_session_lua(lua_State *L)
{
    push_session(L);
    return 1;
}

/* ---- internal (C) transfers --------------------------------------------------------- */

int http_submit_internal(http_session *s, const char *method, const char *url,
                         const char *const *headers, const char *body, size_t body_len,
                         const char *ca_file, const char *const *connect_to,
                         http_internal_cb cb, void *ud)
{
    if (!s || !s->multi || s->closing || !method || !url)
        return -1;
    struct http_xfer *x = calloc(1, sizeof *x);
    if (!x)
        return -1;
    x->kind = XFER_INTERNAL;
    x->cb = cb;
    x->ud = ud;
    x->policy = default_policy;
    x->timeout_ms = 60000;
    x->connect_timeout_ms = 10000;
    x->method = dup_s(method);
    x->url = dup_s(url);
    x->target = redact_url(url);
    x->ca_file = dup_s(ca_file);
    int ok = x->method && x->url && x->target && (!ca_file || x->ca_file);
    if (ok && body) {
        x->body = dup_n(body, body_len);
        x->body_len = body_len;
        ok = x->body != NULL;
    }
    int has_ct = 0;
    for (const char *const *h = headers; ok && h && *h; h++) {
        struct curl_slist *l = curl_slist_append(x->headers, *h);
        if (!l) {
            ok = 0;
            break;
        }
        x->headers = l;
        const char *colon = strchr(*h, ':');
        if (colon) {
            char name[64];
            size_t nl = (size_t)(colon - *h) < sizeof name - 1 ? (size_t)(colon - *h) : 0;
            memcpy(name, *h, nl);
            name[nl] = 0;
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            note_header(x, name, v, &has_ct);
        }
    }
    for (const char *const *c = connect_to; ok && c && *c; c++) {
        struct curl_slist *l = curl_slist_append(x->connect_to, *c);
        if (!l)
            ok = 0;
        else
            x->connect_to = l;
    }
    if (!ok || add_standard_headers(x, has_ct) != 0 || set_common_options(s, x) != 0) {
        xfer_free(x);
        return -1;
    }
    session_link(s, x);
    x->start_ms = http_now_ms(s);
    s->st.requests++;
    char msg[512];
    if (url_check(url, msg, sizeof msg, &x->https) != 0) {
        /* reported from inside run, as promised */
        char full[1024];
        snprintf(full, sizeof full, "invalid URL '%s': %s", x->target, msg);
        x->failed = 1;
        error_set(&x->err, "InvalidURL", full, x->target, 0);
        x->state = XS_TIMER; /* due now: fire_timers finishes it, without an attempt */
        x->wake_ms = x->start_ms;
        return 0;
    }
    xfer_attempt(x);
    return 0;
}

/* ---- module ------------------------------------------------------------------------- */

/* [-0, +1, -] http.status_retryable(status) */
static int l_status_retryable(lua_State *L)
{
    lua_pushboolean(L, http_status_retryable((long)luaL_checkinteger(L, 1)));
    return 1;
}

/* [-0, +1, e] http.retry_delay_ms(policy, attempt, elapsed_ms, retry_after, retry_after_ms,
 * now_ms, jitter) -> ms | -1 (the pure backoff function, for tests and tools) */
static int l_retry_delay(lua_State *L)
{
    struct http_retry_policy p;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "retry");
    read_retry(L, lua_gettop(L), &p);
    lua_pop(L, 1);
    lua_pushinteger(L, http_retry_delay_ms(&p, (int)luaL_checkinteger(L, 2),
                                           luaL_checkinteger(L, 3), luaL_optstring(L, 4, NULL),
                                           luaL_optstring(L, 5, NULL), luaL_optinteger(L, 6, 0),
                                           luaL_optnumber(L, 7, 0.5)));
    return 1;
}

/* [-0, +1, m] require "cmkflow.core.http" */
int luaopen_cmkflow_core_http(lua_State *L)
{
    static const luaL_Reg fns[] = {{"session", http_session_lua},
                                   {"status_retryable", l_status_retryable},
                                   {"retry_delay_ms", l_retry_delay},
                                   {NULL, NULL}};
    push_metatables(L);
    luaL_newlib(L, fns);
    return 1;
}
