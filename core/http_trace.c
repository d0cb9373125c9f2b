/* http_trace.c: the debug trace of transfers (session:set_debug, req.debug), with secret headers
 * masked and everything passed through redact_text. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "http_int.h"
#include "redact.h"

#define TRACE_BODY_MAX 4096 /* bytes of each body shown by the debug trace */

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
    buf_secret_free(&clean);
}

int http_trace_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud)
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

int http_xfer_debug(const struct http_xfer *x)
{
    return x->debug || (x->s && x->s->debug);
}

void http_trace_retry(struct http_xfer *x, const char *why, int64_t delay)
{
    /* people watching a run (--progress) hear of a wait once the request has been retried for
     * more than notice_after_ms: what it waits for, how long, and which attempt comes next */
    if (x->s && x->s->notice_after_ms > 0 && http_now_ms(x->s) - x->start_ms + delay > x->s->notice_after_ms) {
        fprintf(stderr, "  waiting %.1f s to retry %s %s (%s; attempt %d of %d next)\n", (double)delay / 1000.0,
                x->method, x->target, why, x->attempts + 1, x->policy.max_attempts);
        fflush(stderr);
    }
    if (!http_xfer_debug(x))
        return;
    FILE *f = x->s && x->s->trace ? x->s->trace : stderr;
    fprintf(f, "* cmkflow: attempt %d of %s %s: %s; retrying in %lld ms\n", x->attempts,
            x->method, x->target, why, (long long)delay);
    fflush(f);
}
