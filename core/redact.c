/* STUB: to be implemented (see core/redact.h). */
#include <stdlib.h>
#include <string.h>
#include "redact.h"

char *redact_text(const char *text, size_t len)
{
    char *out = malloc(len + 1);
    if (out) {
        memcpy(out, text, len);
        out[len] = 0;
    }
    return out;
}
