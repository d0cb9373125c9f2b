/* redact.c: scrub secrets from text before it reaches a trace, a log or an error message. */
#ifndef CMKFLOW_REDACT_H
#define CMKFLOW_REDACT_H
#include <stddef.h>

/* Returns a malloc'd copy of text[0..len) in which the values of
 *   Authorization / Proxy-Authorization / X-IDENTITY-HEADER headers,
 *   client_secret=, client_assertion=, assertion=, refresh_token= form fields,
 *   "access_token" / "refresh_token" / "client_secret" / "id_token" JSON members,
 *   SAS "sig=" query parameters and bare JWTs (eyJ...x.y.z)
 * are replaced by "REDACTED". Caller frees. */
char *redact_text(const char *text, size_t len);

#endif
