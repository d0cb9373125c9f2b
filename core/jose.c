/* jose.c: compact JWS (RS256, PS256) for client assertions, the emulator's tokens and inspecting
 * tokens in traces (jose.h); plain C, the Lua bindings are ljose.c. Verification checks the
 * signature only; claims are the caller's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include "buf.h"
#include "crypto.h"
#include "jose.h"

static const char *const ALG_NAMES[] = {"RS256", "PS256", NULL};

int jose_alg_from_name(const char *name)
{
    for (int i = 0; name && ALG_NAMES[i]; i++)
        if (strcmp(name, ALG_NAMES[i]) == 0)
            return i;
    return -1;
}

/* base64url of the compact JSON text of v (sorted keys, so tokens are reproducible). */
static char *encode_part(json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!text)
        return NULL;
    size_t len = strlen(text);
    char *out = crypto_b64url_encode((const unsigned char *)text, len);
    OPENSSL_cleanse(text, len);
    free(text);
    return out;
}

char *jose_sign(json_t *header, json_t *claims, EVP_PKEY *key, enum jose_alg alg)
{
    if (!claims || !key || (header && !json_is_object(header)))
        return NULL;
    json_t *h = header ? json_deep_copy(header) : json_object();
    if (!h)
        return NULL;
    json_object_set_new(h, "alg", json_string(ALG_NAMES[alg]));
    if (!json_object_get(h, "typ"))
        json_object_set_new(h, "typ", json_string("JWT"));
    char *hp = encode_part(h);
    json_decref(h);
    char *cp = encode_part(claims);
    char *token = NULL;
    size_t siglen = (size_t)EVP_PKEY_get_size(key);
    unsigned char *sig = siglen ? malloc(siglen) : NULL;
    if (hp && cp && sig) {
        size_t hl = strlen(hp), cl = strlen(cp);
        size_t input_len = hl + 1 + cl;
        /* room for the signature's base64url and the NUL */
        size_t cap = input_len + 1 + (siglen + 2) / 3 * 4 + 1;
        token = malloc(cap);
        if (token) {
            memcpy(token, hp, hl);
            token[hl] = '.';
            memcpy(token + hl + 1, cp, cl);
            token[input_len] = 0;
            char *sp = NULL;
            if (crypto_sign(key, alg == JOSE_PS256, token, input_len, sig, &siglen) == 0 &&
                (sp = crypto_b64url_encode(sig, siglen)) != NULL) {
                size_t sl = strlen(sp);
                token[input_len] = '.';
                memcpy(token + input_len + 1, sp, sl + 1);
                free(sp);
            } else {
                OPENSSL_cleanse(token, cap);
                free(token);
                token = NULL;
            }
        }
    }
    free(sig);
    buf_secret_free(&cp);
    free(hp);
    return token;
}

/* Find the two dots of a compact JWS; -1 unless there are exactly three non-empty-able parts. */
static int split_token(const char *token, size_t *dot1, size_t *dot2, size_t *len)
{
    const char *a = strchr(token, '.');
    const char *b = a ? strchr(a + 1, '.') : NULL;
    if (!a || !b || strchr(b + 1, '.'))
        return -1;
    *dot1 = (size_t)(a - token);
    *dot2 = (size_t)(b - token);
    *len = strlen(token);
    return 0;
}

static json_t *decode_part(const char *text, size_t len, const char *what, char *err, size_t errlen)
{
    size_t n = 0;
    unsigned char *raw = crypto_b64url_decode(text, len, &n);
    if (!raw) {
        snprintf(err, errlen, "malformed token: the %s is not base64url", what);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb((const char *)raw, n, 0, &je);
    OPENSSL_cleanse(raw, n);
    free(raw);
    if (!v) {
        snprintf(err, errlen, "malformed token: the %s is not JSON (column %d: %s)", what,
                 je.column, je.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        snprintf(err, errlen, "malformed token: the %s is not a JSON object", what);
        return NULL;
    }
    return v;
}

int jose_decode(const char *token, json_t **header, json_t **claims, char *err, size_t errlen)
{
    size_t d1, d2, len;
    *header = *claims = NULL;
    if (!token || split_token(token, &d1, &d2, &len) != 0) {
        snprintf(err, errlen, "malformed token: expected three dot-separated parts");
        return -1;
    }
    json_t *h = decode_part(token, d1, "header", err, errlen);
    if (!h)
        return -1;
    json_t *alg = json_object_get(h, "alg");
    if (!json_is_string(alg)) {
        json_decref(h);
        snprintf(err, errlen, "malformed token: the header has no \"alg\"");
        return -1;
    }
    json_t *c = decode_part(token + d1 + 1, d2 - d1 - 1, "payload", err, errlen);
    if (!c) {
        json_decref(h);
        return -1;
    }
    *header = h;
    *claims = c;
    return 0;
}

int jose_verify(const char *token, EVP_PKEY *pub, char *err, size_t errlen)
{
    json_t *h, *c;
    if (jose_decode(token, &h, &c, err, errlen) != 0)
        return -1;
    json_decref(c);
    const char *alg_name = json_string_value(json_object_get(h, "alg"));
    int alg = jose_alg_from_name(alg_name);
    if (alg < 0) {
        if (strcmp(alg_name, "none") == 0)
            snprintf(err, errlen, "unsigned token (alg \"none\") rejected");
        else
            snprintf(err, errlen, "unsupported token alg \"%.32s\" (expected RS256 or PS256)",
                     alg_name);
        json_decref(h);
        return -1;
    }
    json_decref(h);
    size_t d1, d2, len;
    split_token(token, &d1, &d2, &len);
    size_t siglen = 0;
    unsigned char *sig = crypto_b64url_decode(token + d2 + 1, len - d2 - 1, &siglen);
    if (!sig || siglen == 0) {
        free(sig);
        snprintf(err, errlen, "malformed token: the signature is %s",
                 sig ? "empty" : "not base64url");
        return -1;
    }
    int rc = crypto_verify(pub, alg == JOSE_PS256, token, d2, sig, siglen);
    free(sig);
    if (rc != 1) {
        snprintf(err, errlen, rc < 0 ? "the key cannot verify %s signatures"
                                     : "%s signature does not match the key",
                 ALG_NAMES[alg]);
        return -1;
    }
    return 0;
}

/* ---- JWK -------------------------------------------------------------------------- */

static json_t *bn_param_b64url(EVP_PKEY *key, const char *name)
{
    BIGNUM *bn = NULL;
    json_t *out = NULL;
    if (EVP_PKEY_get_bn_param(key, name, &bn) == 1) {
        int n = BN_num_bytes(bn);
        unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
        if (buf) {
            BN_bn2bin(bn, buf);
            char *b = crypto_b64url_encode(buf, (size_t)n);
            if (b)
                out = json_string(b);
            free(b);
            free(buf);
        }
    }
    BN_free(bn);
    ERR_clear_error();
    return out;
}

json_t *jose_jwk_from_key(EVP_PKEY *key)
{
    if (!key || !EVP_PKEY_is_a(key, "RSA"))
        return NULL;
    json_t *n = bn_param_b64url(key, OSSL_PKEY_PARAM_RSA_N);
    json_t *e = bn_param_b64url(key, OSSL_PKEY_PARAM_RSA_E);
    if (!n || !e) {
        json_decref(n);
        json_decref(e);
        return NULL;
    }
    return json_pack("{s:s, s:o, s:o}", "kty", "RSA", "n", n, "e", e);
}

static BIGNUM *b64url_bn(json_t *v)
{
    const char *s = json_string_value(v);
    if (!s)
        return NULL;
    size_t n = 0;
    unsigned char *raw = crypto_b64url_decode(s, json_string_length(v), &n);
    BIGNUM *bn = raw && n > 0 ? BN_bin2bn(raw, (int)n, NULL) : NULL;
    free(raw);
    return bn;
}

EVP_PKEY *jose_key_from_jwk(json_t *jwk)
{
    if (!json_is_object(jwk) || !json_is_string(json_object_get(jwk, "kty")) ||
        strcmp(json_string_value(json_object_get(jwk, "kty")), "RSA") != 0)
        return NULL;
    BIGNUM *n = b64url_bn(json_object_get(jwk, "n"));
    BIGNUM *e = b64url_bn(json_object_get(jwk, "e"));
    EVP_PKEY *key = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    /* 1024..16384-bit moduli and an odd exponent > 1 */
    if (n && e && BN_num_bits(n) >= 1024 && BN_num_bits(n) <= 16384 && BN_is_odd(e) &&
        !BN_is_one(e) && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) == 1 &&
        (params = OSSL_PARAM_BLD_to_param(bld)) != NULL &&
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) != NULL &&
        EVP_PKEY_fromdata_init(ctx) == 1) {
        if (EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
            key = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    ERR_clear_error();
    return key;
}
