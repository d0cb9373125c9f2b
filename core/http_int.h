/*
 * http_int.h: what the HTTP module's files share (http_session.c, http_transfer.c,
 * http_request.c, http_trace.c, http_retry.c) and the Lua bindings (lhttp.c) build on.
 * Nothing outside the HTTP module and lhttp.c includes it: other modules use http.h.
 */
#ifndef CMKFLOW_HTTP_INT_H
#define CMKFLOW_HTTP_INT_H
#include <stdio.h>
#include <curl/curl.h>
#include "buf.h"
#include "http.h"

#define HTTP_SESSION_MT "cmkflow.http.session"
#define HTTP_TRANSFER_MT "cmkflow.http.transfer"

/* Connections a session keeps: per host (Azure's hosts are many; a politeness bound) and in all */
#define HTTP_MAX_HOST_CONNECTIONS 16L
#define HTTP_MAX_TOTAL_CONNECTIONS 64L

enum xfer_kind { XFER_LUA, XFER_INTERNAL, XFER_TIMER };
enum xfer_state { XS_NEW, XS_TOKEN, XS_RUNNING, XS_TIMER, XS_DONE };

struct hdr {
    char *name; /* lower case */
    char *value;
};

/* An owned copy of a struct cmk_error. */
struct owned_error {
    char *code, *message, *target, *request_id, *tenant;
    const char *kind; /* static text */
    int status, retryable;
};

struct http_xfer {
    http_session *s;                  /* NULL once the session is gone */
    struct http_xfer *prev, *next;    /* the session's in-flight list */
    struct http_xfer *done_next;      /* the session's finished queue (Lua-visible kinds) */
    enum xfer_kind kind;
    enum xfer_state state;
    int lua_owned;                    /* a transfer userdata points here */
    int awaiting_token;               /* the token source's callback has not run yet */
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
    const struct http_token_source *token_src; /* with token_owner: where bearer tokens come from */
    void *token_owner;                /* a reference, released through token_src->release */
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
    long os_errno; /* CURLINFO_OS_ERRNO of the last failed attempt */
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
    int64_t notice_after_ms; /* > 0: a retry wait that ends later than this into its request is told on stderr */
    long pending; /* Lua-visible transfers not yet returned by run */
    int pinned_route; /* a request went through CONNECT_TO: see http_set_common_options */
    struct {
        long requests, attempts, retries, connects, tls_handshakes, token_fetches;
        int64_t bytes, slept_ms, skipped_ms;
    } st;
    char user_agent[96];
};

/* ---- http_retry.c ---- */
extern const struct http_retry_policy http_default_policy;

/* ---- http_session.c ---- */
int64_t http_real_ms(void);
double http_jitter01(void);
void http_session_link(http_session *s, struct http_xfer *x);
void http_session_unlink(http_session *s, struct http_xfer *x);
void http_queue_remove(http_session *s, struct http_xfer *x);
/* Drive transfers until one finishes, nothing is pending, timeout_ms (-1: none) passes, or (after
 * the first round) a Lua hook is pending on L. */
void http_session_drive(http_session *s, int64_t timeout_ms, lua_State *L);
/* [-0, +1, m] The session metatable (with __gc; lhttp.c adds __index). */
void http_session_metatable(lua_State *L);
/* [-0, +1, m] The state's session userdata (created on first use). */
void http_push_session(lua_State *L);

/* ---- http_transfer.c ---- */
void http_xfer_free(struct http_xfer *x);
/* Free x when nothing refers to it any more. */
void http_xfer_maybe_free(struct http_xfer *x);
const char *http_hdr_get(const struct http_xfer *x, const char *name);
const char *http_response_request_id(const struct http_xfer *x);
void http_error_set(struct owned_error *e, const char *code, const char *message,
                    const char *target, int retryable, const char *kind);
void http_xfer_finish(struct http_xfer *x);
void http_xfer_attempt(struct http_xfer *x);
void http_xfer_attempt_done(struct http_xfer *x, CURLcode rc);
size_t http_on_header(char *p, size_t size, size_t n, void *ud);
size_t http_on_write(char *p, size_t size, size_t n, void *ud);
/* [-0, +2, m] nil and x's error as a cmkflow.error table. */
int http_push_failure(lua_State *L, const struct http_xfer *x);

/* ---- http_trace.c ---- */
int http_xfer_debug(const struct http_xfer *x);
int http_trace_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud);
void http_trace_retry(struct http_xfer *x, const char *why, int64_t delay);

/* ---- http_request.c ---- */
/* The URL with the values of sig= query parameters replaced (SAS signatures). malloc'd. */
char *http_redact_url(const char *url);
int http_set_common_options(http_session *s, struct http_xfer *x);
int http_add_standard_headers(struct http_xfer *x, int has_content_type);
/* [-0, +0, e] Fill x from the request table at idx (every field but credential, scope and
 * tenant) and prepare its curl handle; raises on misuse. */
void http_request_from_lua(lua_State *L, int idx, http_session *s, struct http_xfer *x);
/* [-0, +0, e] The retry policy of the table at idx (its "retry" field), defaults filled in. */
void http_read_retry(lua_State *L, int idx, struct http_retry_policy *p);

#endif
