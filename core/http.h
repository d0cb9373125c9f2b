/*
 * The HTTP module: one libcurl multi "session" per Lua state, shared by every client.
 *   http_session.c   the session: clock, in-flight list, timers, the loop that drives transfers
 *   http_transfer.c  one transfer: attempts, response capture, retries, its final error
 *   http_request.c   building transfers from a Lua request table or from C; URL rules
 *   http_retry.c     the retry policy (pure)
 *   http_trace.c     the redacted debug trace
 *   lhttp.c          the Lua bindings (above auth: a request's credential is its token source)
 *
 * The session owns a CURLM (up to 16 connections per host, HTTP/2 multiplexing allowed) and a
 * CURLSH sharing DNS, TLS sessions and the connection cache, so sequential requests to one host
 * reuse one TLS connection. Retries wait on timers inside the session; nothing sleeps the
 * process while other transfers could progress.
 *
 * Lua view (cmkflow.core.http):
 *   session = http.session()                   -- the state's session (created on first use)
 *   t = session:submit(req)                    -- non-blocking; req fields below; raises on misuse
 *   t = session:timer(ms)                      -- a transfer that finishes after ms (session clock)
 *   done = session:run([timeout_ms])           -- drive transfers; array of the transfers that
 *                                                 finished (each returned once). Without timeout:
 *                                                 until one finishes or nothing is pending; may
 *                                                 return early (empty) so a Lua hook can fire.
 *   n = session:pending()                      -- submitted transfers/timers not yet returned by run
 *   resp, err = t:result()                     -- raises if not t:done()
 *       resp = {status, headers (lower-case names, repeats joined ", "), body, attempts,
 *               request_id, client_request_id, elapsed_ms}; a timer's result is true
 *   t:done() -> bool
 *   session:stats() -> {requests, attempts, retries, connects, tls_handshakes, token_fetches,
 *                       bytes, slept_ms (sum of retry/timer waits), clock_skipped_ms, pending, clock}
 *   session:set_clock("fake"|"real")           -- fake: when only timers are pending, the session
 *                                                 clock jumps to the next timer instead of waiting
 *   session:now() -> ms since the epoch on the session clock
 *   session:set_debug(false | true | "path")   -- trace every transfer (redacted) to stderr / a file
 *   session:wakeup()                           -- interrupt a blocking run from another thread
 *
 * req = { method = "GET", url, headers = {name = value}?, body = string?,
 *         timeout_ms = 60000?, connect_timeout_ms = 10000?, ca_file?,
 *         connect_to = {"host:port:addr:port", ...}?, proxy?,
 *         retry = {max_attempts = 6, base_delay_ms = 800, max_delay_ms = 60000,
 *                  max_total_ms = 300000}?,
 *         credential = <cmkflow.credential>?, scope = string?, tenant = string?, debug = bool? }
 * URLs must be https, or http to 127.0.0.1 / localhost / 169.254.169.254 (IMDS). TLS
 * verification is always on. Every request carries x-ms-client-request-id (a UUID unless the
 * caller set one) and User-Agent "cmkflow/<version> libcurl/<version>". HTTPS_PROXY /
 * HTTP_PROXY / NO_PROXY are honoured unless req.proxy is set.
 *
 * Remote HTTP statuses (4xx/5xx after retries) are responses, not errors; transport failures,
 * exhausted retries without a response and token acquisition failures are errors
 * {code = "ConnectionFailed" | "Timeout" | "TLSVerificationFailed" | "TLSHandshakeFailed" |
 *  "NameResolutionFailed" | "InvalidURL" | "ResponseTooLarge" | "Cancelled" | "TransportError" |
 *  <the credential's error code>, message, target = URL without SAS sig, retryable,
 *  kind = "network" | "tls" | "config" (local failures; nil for a token service's answer),
 *  status (nil without an HTTP answer), tenant and request_id when known}.
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
/* 1 when a failed attempt (curl result code, the socket's errno from CURLINFO_OS_ERRNO) is worth
 * retrying: the codes above, and a TLS handshake the peer reset or closed (CURLE_SSL_CONNECT_ERROR
 * with ECONNRESET, ECONNABORTED or EPIPE), which is a dropped connection, not a TLS problem.
 * Never a certificate verification failure. */
int http_handshake_reset(int curl_code, long os_errno);
int http_transport_retryable(int curl_code, long os_errno);

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

/* Used by the token module for token endpoints and IMDS. Headers are "Name: value" strings,
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
/* Returns 0 when accepted: the callback then runs exactly once, from inside session:run (an
 * invalid URL is reported there as an InvalidURL error). Returns -1 only when out of memory or
 * the session is closing; the callback never runs then. Uses the default retry policy and
 * timeouts, the session-wide debug trace (redacted) and the proxy environment variables. */
int http_submit_internal(http_session *s, const char *method, const char *url,
                         const char *const *headers, const char *body, size_t body_len,
                         const char *ca_file, const char *const *connect_to,
                         http_internal_cb cb, void *ud);

/* Where a transfer's bearer tokens come from. The HTTP module knows no credential: lhttp.c
 * gives a transfer whose request names one the credential module's source (auth.h). get_token
 * delivers a token (valid only during the callback) or an error, exactly once, possibly before it
 * returns; release drops the reference the transfer holds on owner. */
typedef void (*http_token_cb)(void *ud, const char *token, const struct cmk_error *err);
struct http_token_source {
    void (*get_token)(void *owner, http_session *s, const char *scope, const char *tenant,
                      http_token_cb cb, void *ud);
    void (*release)(void *owner);
};

/* The token module calls this once per token request it sends (stats().token_fetches). */
void http_count_token_fetch(http_session *s);

/* [-0, +0, m] The state's session, creating it on first use (kept in the registry; freed with
 * the state). */
http_session *http_session_get(lua_State *L);

#endif
