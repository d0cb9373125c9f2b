/* redact.c: scrub secrets from text before it reaches a trace, a log or an error message. */
#ifndef CMKFLOW_REDACT_H
#define CMKFLOW_REDACT_H
#include <stddef.h>

/* Returns a malloc'd, NUL-terminated copy of text[0..len) in which the values of
 *   Authorization / Proxy-Authorization / X-IDENTITY-HEADER headers (case-insensitive, to the
 *     end of the line; a leading Bearer/Basic/PoP scheme word is kept),
 *   client_secret=, client_assertion=, assertion=, refresh_token=, access_token=, id_token=,
 *     password= form fields and SAS sig= query parameters (to the next &, quote or whitespace),
 *   "access_token" / "refresh_token" / "client_secret" / "id_token" / "client_assertion" /
 *     "assertion" / "password" / "authorization" / "x-identity-header" JSON string members
 *     (also inside escaped JSON, \"name\":\"value\"),
 *   and bare JWTs (eyJ<b64url>.<b64url>.<b64url>)
 * are replaced by "REDACTED". NULL only when out of memory. Caller frees. */
char *redact_text(const char *text, size_t len);
/* The same, also giving the output length (the text may hold NUL bytes). */
char *redact_text_n(const char *text, size_t len, size_t *out_len);

#endif
