/* http_retry.c: the retry policy, a pure function of attempt, clock and jitter (http.h).
 * The unit tests drive it with a fake clock (spec/c/test_http.c). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <time.h>
#include <curl/curl.h>
#include "http_int.h"

const struct http_retry_policy http_default_policy = {6, 800, 60000, 300000};

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

int http_handshake_reset(int curl_code, long os_errno)
{
    return (CURLcode)curl_code == CURLE_SSL_CONNECT_ERROR &&
           (os_errno == ECONNRESET || os_errno == ECONNABORTED || os_errno == EPIPE);
}

int http_transport_retryable(int curl_code, long os_errno)
{
    return http_curlcode_retryable(curl_code) || http_handshake_reset(curl_code, os_errno);
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
