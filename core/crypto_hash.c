/* crypto_hash.c: randomness, SHA-256 and UUIDs (v4 random, v5 SHA-1 name-based) (crypto.h). */
#include <limits.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "crypto.h"

int crypto_random(unsigned char *buf, size_t n)
{
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(buf, chunk) != 1) {
            ERR_clear_error();
            return -1;
        }
        buf += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

void crypto_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1) {
        /* cannot happen with the default provider; never leave out uninitialised */
        memset(out, 0, 32);
        ERR_clear_error();
    }
}

static void uuid_format(const unsigned char b[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int crypto_is_guid(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (hex_value(s[i]) < 0) {
            return 0; /* also catches an early NUL */
        }
    }
    return s[36] == 0;
}

static int uuid_parse(const char *s, unsigned char b[16])
{
    if (!crypto_is_guid(s))
        return -1;
    for (int i = 0, o = 0; i < 36; i++) {
        if (s[i] == '-')
            continue;
        b[o / 2] = (unsigned char)(o % 2 ? b[o / 2] | hex_value(s[i]) : hex_value(s[i]) << 4);
        o++;
    }
    return 0;
}

int crypto_uuid4(char out[37])
{
    unsigned char b[16];
    if (crypto_random(b, sizeof b) != 0)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    uuid_format(b, out);
    return 0;
}

int crypto_uuid5(const char *ns, const char *name, size_t name_len, char out[37])
{
    unsigned char nsb[16], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (uuid_parse(ns, nsb) != 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, nsb, sizeof nsb) == 1 &&
             EVP_DigestUpdate(ctx, name, name_len) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        return -1;
    }
    md[6] = (unsigned char)((md[6] & 0x0F) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3F) | 0x80);
    uuid_format(md, out);
    return 0;
}
