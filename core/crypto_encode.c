/* crypto_encode.c: base64 (RFC 4648 section 4, padded) and base64url (section 5, unpadded), and
 * lower-case hex (crypto.h). */
#include <stdint.h>
#include <stdlib.h>
#include "crypto.h"

static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t crypto_b64_encoded_len(size_t len, int pad)
{
    return pad ? (len + 2) / 3 * 4 : len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
}

/* out must hold crypto_b64_encoded_len(len, pad) bytes; no NUL is written. Returns the length. */
size_t crypto_b64_encode_to(const unsigned char *in, size_t len, char *out, int url, int pad)
{
    const char *abc = url ? B64_URL : B64_STD;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        if (pad)
            out[o++] = '=';
    }
    return o;
}

static int b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Validates text and returns the decoded length, or (size_t)-1 when invalid. */
size_t crypto_b64_decoded_len(const char *text, size_t len, int url)
{
    size_t n = len;
    while (n > 0 && text[n - 1] == '=' && len - n < 2)
        n--;
    if (n < len && len % 4 != 0)
        return (size_t)-1; /* padding present but not to a multiple of 4 */
    if (n % 4 == 1)
        return (size_t)-1;
    for (size_t i = 0; i < n; i++)
        if (b64_value((unsigned char)text[i], url) < 0)
            return (size_t)-1;
    if (n < len && (len - n) != (4 - n % 4) % 4)
        return (size_t)-1; /* e.g. "Zg=" or "Zm9v=" */
    return n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
}

/* text must have passed b64_decoded_len; out must hold that many bytes. */
void crypto_b64_decode_to(const char *text, size_t len, unsigned char *out, int url)
{
    size_t n = len, o = 0;
    while (n > 0 && text[n - 1] == '=')
        n--;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 6 | (uint32_t)b64_value((unsigned char)text[i], url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xFF);
        }
    }
}

static char *b64_encode_alloc(const unsigned char *data, size_t len, int url, int pad)
{
    size_t n = crypto_b64_encoded_len(len, pad);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    crypto_b64_encode_to(data, len, out, url, pad);
    out[n] = 0;
    return out;
}

static unsigned char *b64_decode_alloc(const char *text, size_t len, size_t *out_len, int url)
{
    size_t n = crypto_b64_decoded_len(text, len, url);
    if (n == (size_t)-1)
        return NULL;
    unsigned char *out = malloc(n + 1);
    if (!out)
        return NULL;
    crypto_b64_decode_to(text, len, out, url);
    out[n] = 0;
    if (out_len)
        *out_len = n;
    return out;
}

char *crypto_b64url_encode(const unsigned char *data, size_t len)
{
    return b64_encode_alloc(data, len, 1, 0);
}

unsigned char *crypto_b64url_decode(const char *text, size_t text_len, size_t *out_len)
{
    return b64_decode_alloc(text, text_len, out_len, 1);
}

char *crypto_b64_encode(const unsigned char *data, size_t len)
{
    return b64_encode_alloc(data, len, 0, 1);
}

unsigned char *crypto_b64_decode(const char *text, size_t text_len, size_t *out_len)
{
    return b64_decode_alloc(text, text_len, out_len, 0);
}

void crypto_hex_encode(const unsigned char *data, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[data[i] >> 4];
        out[2 * i + 1] = hex[data[i] & 15];
    }
    out[2 * len] = '\0';
}
