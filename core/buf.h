/*
 * buf.c: the core's one growable byte buffer. Whatever it held is wiped (OPENSSL_cleanse) before
 * its memory is released, on growth as on free: bodies, forms and traces may carry tokens and
 * client secrets, so no copy is ever left behind in freed memory. Also the one helper that frees
 * a secret string.
 *
 *   struct buf b = {0};             -- empty; no allocation until the first append
 *   buf_add(&b, p, n); buf_adds(&b, "text");
 *   b.data is NUL-terminated after any successful append (b.len excludes the NUL)
 *   buf_wipe(&b);                   -- wipe, free, back to empty
 *
 * After a failed allocation the buffer keeps its content and sets b.oom; later appends are
 * no-ops, so a builder can append several parts and check oom once.
 */
#ifndef CMKFLOW_BUF_H
#define CMKFLOW_BUF_H
#include <stddef.h>

struct buf {
    char *data;   /* NULL until the first append; NUL-terminated after one */
    size_t len;   /* bytes held, without the terminating NUL */
    size_t cap;   /* bytes allocated */
    int oom;      /* an allocation failed: the content is incomplete */
};

/* Make room for extra more bytes (plus the NUL). 0, or -1 (and oom set) when out of memory. */
int buf_reserve(struct buf *b, size_t extra);
/* Append n bytes. 0, or -1 when out of memory (or after an earlier failure). */
int buf_add(struct buf *b, const void *p, size_t n);
/* Append a NUL-terminated string. */
int buf_adds(struct buf *b, const char *s);
/* Empty the buffer but keep its memory for reuse (the bytes held are wiped). */
void buf_reset(struct buf *b);
/* Wipe the whole allocation, free it and reset b to empty. */
void buf_wipe(struct buf *b);
/* Hand the bytes over: a malloc'd NUL-terminated string (the caller frees it, wiping it first
 * when it may hold a secret), or NULL when out of memory; b is reset. An empty buffer gives "". */
char *buf_take(struct buf *b);

/* Owned copies: buf_dup(NULL) is NULL; buf_dupn copies n bytes (NULs included) and terminates.
 * NULL when out of memory. Caller frees. */
char *buf_dup(const char *s);
char *buf_dupn(const char *s, size_t n);

/* Wipe the NUL-terminated string *s (strlen bytes), free it and set *s to NULL. NULL is a no-op. */
void buf_secret_free(char **s);

/* Test hook: where the buffer's memory comes from and goes back to. release receives the block
 * and its size after the wipe, so a test can check that every byte is zero. NULL restores
 * malloc/free. Not thread-safe: set it only in single-threaded unit tests. */
struct buf_allocator {
    void *(*alloc)(size_t size);
    void (*release)(void *p, size_t size);
};
void buf_set_allocator(const struct buf_allocator *a);

#endif
