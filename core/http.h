/*
 * http.c: one libcurl multi "session" per Lua state, shared by every client.
 *
 * Lua view (cmkflow.core.http):
 *   session = http.session()                   -- the state's session (created on first use)
 *   t = session:submit(req)                    -- non-blocking; req fields below
 *   done = session:run(timeout_ms)             -- drive transfers; array of finished transfers
 *   resp, err = t:result()                     -- resp = {status, headers, body, attempts, request_id}
 *   session:stats()                            -- {requests, attempts, connects, token_fetches, ...}
 *   session:set_clock("fake"|"real")           -- fake: waits on timers advance virtual time instantly
 *
 * req = { method, url, headers = {name = value}, body = string?, timeout_ms?,
 *         ca_file?, connect_to = {"host:port:addr:port", ...}?, proxy?,
 *         retry = {max_attempts, base_delay_ms, max_delay_ms, max_total_ms}?,
 *         credential = <cmkflow.credential>?, scope = string?, tenant = string? }
 *
 * Remote HTTP statuses (4xx/5xx after retries) are responses, not errors; transport failures,
 * exhausted retries without a response and token acquisition failures are errors.
 */
#ifndef CMKFLOW_HTTP_H
#define CMKFLOW_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include "cmk.h"

typedef struct http_session http_session;

struct http_retry_policy {
    int max_attempts;      /* total attempts including the first (default 6) */
    int64_t base_delay_ms; /* first backoff (default 800) */
    int64_t max_delay_ms;  /* cap on one backoff (default 60000) */
    int64_t max_total_ms;  /* cap on the whole request including waits (default 300000) */
};

/* 1 when a status or a curl result code is worth retrying. */
int http_status_retryable(long status);
int http_curlcode_retryable(int curl_code);

/* The wait before attempt number `attempt` (2 = first retry). Honours, in order, the
 * x-ms-retry-after-ms / retry-after-ms header (milliseconds) and Retry-After (seconds or
 * HTTP-date, relative to now_ms); otherwise exponential backoff with jitter in [0.8, 1.2)
 * taken from `jitter` (a number in [0,1)). Header values may be NULL.
 * Returns -1 when no further attempt is allowed by the policy (attempts or total time,
 * given elapsed_ms already spent). Pure: the unit tests drive it with a fake clock. */
int64_t http_retry_delay_ms(const struct http_retry_policy *p, int attempt, int64_t elapsed_ms,
                            const char *retry_after, const char *retry_after_ms, int64_t now_ms,
                            double jitter);

/* Current time in ms since the epoch: real, or the session's fake clock. */
int64_t http_now_ms(http_session *s);

/* Used by auth.c for token endpoints and IMDS. Headers are "Name: value" strings,
 * NULL-terminated. The body is copied and cleansed after sending. The callback runs once,
 * from inside session:run, with the response (status 0 and a filled err on transport
 * failure). body is valid only during the call and may hold secrets: never copy it to Lua. */
struct http_internal_response {
    long status;
    const char *body;
    size_t body_len;
    const char *www_authenticate; /* may be NULL */
    const char *request_id;       /* may be NULL */
    const struct cmk_error *err;  /* NULL unless transport failure */
};
typedef void (*http_internal_cb)(void *ud, const struct http_internal_response *r);
int http_submit_internal(http_session *s, const char *method, const char *url,
                         const char *const *headers, const char *body, size_t body_len,
                         const char *ca_file, const char *const *connect_to,
                         http_internal_cb cb, void *ud);

/* [-0, +0, -] The state's session, creating it on first use. */
http_session *http_session_get(lua_State *L);

#endif
