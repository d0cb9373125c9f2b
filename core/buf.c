/* buf.c: the growable, secret-wiping byte buffer (buf.h). */
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include "buf.h"

static void *default_alloc(size_t size)
{
    return malloc(size);
}

static void default_release(void *p, size_t size)
{
    (void)size;
    free(p);
}

static const struct buf_allocator default_allocator = {default_alloc, default_release};
/* Only unit tests change this (buf_set_allocator); everything else uses malloc/free. */
static const struct buf_allocator *allocator = &default_allocator;

void buf_set_allocator(const struct buf_allocator *a)
{
    allocator = a ? a : &default_allocator;
}

/* Wipe and release one block. */
static void release(char *p, size_t cap)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, cap);
    allocator->release(p, cap);
}

int buf_reserve(struct buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (extra > (size_t)-1 / 2 - b->len - 1) {
        b->oom = 1;
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    /* never realloc: it may leave the old bytes in freed memory */
    char *d = allocator->alloc(cap);
    if (!d) {
        b->oom = 1;
        return -1;
    }
    if (b->len)
        memcpy(d, b->data, b->len);
    d[b->len] = '\0';
    release(b->data, b->cap);
    b->data = d;
    b->cap = cap;
    return 0;
}

int buf_add(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_adds(struct buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

void buf_reset(struct buf *b)
{
    if (b->data) {
        OPENSSL_cleanse(b->data, b->len);
        b->data[0] = '\0';
    }
    b->len = 0;
    b->oom = 0;
}

void buf_wipe(struct buf *b)
{
    release(b->data, b->cap);
    memset(b, 0, sizeof *b);
}

char *buf_take(struct buf *b)
{
    if (b->oom || buf_reserve(b, 0) != 0) {
        buf_wipe(b);
        return NULL;
    }
    if (allocator == &default_allocator) { /* already a malloc'd block: hand it over */
        char *out = b->data;
        memset(b, 0, sizeof *b);
        return out;
    }
    /* the caller frees with free(): copy out of a test allocator's block */
    char *out = malloc(b->len + 1);
    if (out)
        memcpy(out, b->data, b->len + 1);
    buf_wipe(b);
    return out;
}

char *buf_dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *buf_dup(const char *s)
{
    return s ? buf_dupn(s, strlen(s)) : NULL;
}

void buf_secret_free(char **s)
{
    if (s && *s) {
        OPENSSL_cleanse(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}
