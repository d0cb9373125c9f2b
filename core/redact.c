/* Scrubbing secrets out of text before it reaches a trace, a log or an error message.
 *
 * One left-to-right pass; at each position the matchers below are tried in turn. A match copies
 * what identifies the secret (header name, field name, JSON member name) and writes REDACTED in
 * place of the value, so traces stay readable. Matching errs towards redacting too much. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "buf.h"
#include "redact.h"

#define REDACTED "REDACTED"

/* The output: the core's wiping buffer (the input may hold secrets). */
static void put(struct buf *o, const char *s, size_t n)
{
    buf_add(o, s, n);
}

static int is_word(unsigned char c) { return isalnum(c) || c == '_'; }
static int is_b64url(unsigned char c) { return isalnum(c) || c == '_' || c == '-'; }

/* Case-insensitive prefix test of t[i..len) against lower-case word. */
static size_t starts_with(const char *t, size_t i, size_t len, const char *word)
{
    size_t n = strlen(word);
    if (len - i < n)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (tolower((unsigned char)t[i + k]) != word[k])
            return 0;
    return n;
}

/* ---- headers: "Authorization: Bearer xyz" -> "Authorization: Bearer REDACTED" ---------- */

static const char *const HEADERS[] = {"proxy-authorization", "authorization", "x-identity-header",
                                      NULL};
static const char *const SCHEMES[] = {"bearer ", "basic ", "pop ", "negotiate ", "ntlm ", NULL};

static size_t match_header(const char *t, size_t i, size_t len, struct buf *o)
{
    if (i > 0 && is_word((unsigned char)t[i - 1]))
        return 0;
    for (int h = 0; HEADERS[h]; h++) {
        size_t n = starts_with(t, i, len, HEADERS[h]);
        if (!n)
            continue;
        size_t j = i + n;
        while (j < len && (t[j] == ' ' || t[j] == '\t'))
            j++;
        if (j >= len || t[j] != ':')
            continue;
        j++;
        while (j < len && (t[j] == ' ' || t[j] == '\t'))
            j++;
        for (int s = 0; SCHEMES[s]; s++) {
            size_t m = starts_with(t, j, len, SCHEMES[s]);
            if (m) {
                j += m;
                break;
            }
        }
        size_t end = j;
        while (end < len && t[end] != '\r' && t[end] != '\n')
            end++;
        if (end == j)
            return 0; /* nothing to hide */
        put(o, t + i, j - i);
        put(o, REDACTED, sizeof REDACTED - 1);
        return end - i;
    }
    return 0;
}

/* ---- form fields and query parameters: client_secret=xyz&... ---------------------------- */

static const char *const FIELDS[] = {"client_secret=", "client_assertion=", "assertion=",
                                     "refresh_token=", "access_token=",     "id_token=",
                                     "password=",      "sig=",              NULL};

static int ends_value(unsigned char c)
{
    return c == '&' || c == '"' || c == '\'' || c == '<' || c == '>' || c == '\\' || isspace(c);
}

static size_t match_field(const char *t, size_t i, size_t len, struct buf *o)
{
    if (i > 0 && is_word((unsigned char)t[i - 1]))
        return 0;
    for (int f = 0; FIELDS[f]; f++) {
        size_t n = starts_with(t, i, len, FIELDS[f]);
        if (!n)
            continue;
        size_t end = i + n;
        while (end < len && !ends_value((unsigned char)t[end]))
            end++;
        if (end == i + n)
            return 0;
        put(o, t + i, n);
        put(o, REDACTED, sizeof REDACTED - 1);
        return end - i;
    }
    return 0;
}

/* ---- JSON members: "access_token": "xyz" (also inside an escaped JSON string) ------------ */

static const char *const MEMBERS[] = {"access_token",     "refresh_token", "client_secret",
                                      "id_token",         "client_assertion", "assertion",
                                      "authorization",    "x-identity-header", "password",
                                      NULL};

/* Length of a quote at t[i]: 1 for ", 2 for \", else 0. */
static size_t quote_at(const char *t, size_t i, size_t len)
{
    if (i < len && t[i] == '"')
        return 1;
    if (i + 1 < len && t[i] == '\\' && t[i + 1] == '"')
        return 2;
    return 0;
}

static size_t match_member(const char *t, size_t i, size_t len, struct buf *o)
{
    size_t q = quote_at(t, i, len);
    if (!q)
        return 0;
    for (int m = 0; MEMBERS[m]; m++) {
        size_t n = starts_with(t, i + q, len, MEMBERS[m]);
        if (!n || quote_at(t, i + q + n, len) != q)
            continue;
        size_t j = i + q + n + q;
        while (j < len && isspace((unsigned char)t[j]))
            j++;
        if (j >= len || t[j] != ':')
            return 0;
        j++;
        while (j < len && isspace((unsigned char)t[j]))
            j++;
        if (quote_at(t, j, len) != q)
            return 0; /* null, a number, an object: nothing string-like to hide */
        size_t start = j + q, end = start;
        if (q == 1) {
            while (end < len && t[end] != '"') {
                if (t[end] == '\\' && end + 1 < len)
                    end++; /* skip the escaped character */
                end++;
            }
        } else {
            while (end < len && !(t[end] == '\\' && end + 1 < len && t[end + 1] == '"')) {
                if (t[end] == '\\' && end + 1 < len)
                    end++;
                end++;
            }
        }
        if (end == start)
            return 0;
        put(o, t + i, start - i);
        put(o, REDACTED, sizeof REDACTED - 1);
        return end - i; /* the closing quote is copied by the main loop */
    }
    return 0;
}

/* ---- bare JWTs: eyJ<b64url>.<b64url>.<b64url> ------------------------------------------- */

static size_t match_jwt(const char *t, size_t i, size_t len, struct buf *o)
{
    if ((i > 0 && is_b64url((unsigned char)t[i - 1])) || len - i < 3 || t[i] != 'e' ||
        t[i + 1] != 'y' || t[i + 2] != 'J')
        return 0;
    size_t j = i, parts = 1, seglen = 0;
    for (; j < len; j++) {
        unsigned char c = (unsigned char)t[j];
        if (c == '.') {
            if (seglen == 0 && parts < 3)
                return 0;
            if (parts == 3)
                break;
            parts++;
            seglen = 0;
        } else if (is_b64url(c)) {
            seglen++;
        } else {
            break;
        }
    }
    if (parts < 3)
        return 0;
    put(o, REDACTED, sizeof REDACTED - 1);
    return j - i;
}

char *redact_text(const char *text, size_t len) { return redact_text_n(text, len, NULL); }

char *redact_text_n(const char *text, size_t len, size_t *out_len)
{
    struct buf o = {0};
    put(&o, "", 0); /* allocate even for empty input */
    size_t i = 0;
    while (i < len && !o.oom) {
        size_t used = match_header(text, i, len, &o);
        if (!used)
            used = match_member(text, i, len, &o);
        if (!used)
            used = match_field(text, i, len, &o);
        if (!used)
            used = match_jwt(text, i, len, &o);
        if (!used) {
            put(&o, text + i, 1);
            used = 1;
        }
        i += used;
    }
    size_t n = o.len;
    char *out = buf_take(&o); /* NULL when out of memory (the buffer is wiped then) */
    if (out && out_len)
        *out_len = n;
    return out;
}
