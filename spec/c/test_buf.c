/* Unit tests for core/buf.c: the one growable buffer wipes what it held whenever its memory goes
 * back (growth, reset, wipe), hands its bytes over intact, and survives allocation failures. A
 * test allocator (buf_set_allocator) sees every released block after the wipe. */
#include <stdlib.h>
#include <string.h>
#include "buf.h"
#include "check.h"

static int released, released_dirty, allocs, fail_after = -1;

static void *test_alloc(size_t size)
{
    if (fail_after >= 0 && allocs >= fail_after)
        return NULL;
    allocs++;
    return malloc(size);
}

/* Every byte of a block must be zero when it comes back. */
static void test_release(void *p, size_t size)
{
    const unsigned char *b = p;
    released++;
    for (size_t i = 0; i < size; i++) {
        if (b[i] != 0) {
            released_dirty++;
            break;
        }
    }
    free(p);
}

static const struct buf_allocator watcher = {test_alloc, test_release};

static void reset_counts(void)
{
    released = released_dirty = allocs = 0;
    fail_after = -1;
}

static const char SECRET[] = "client_secret=very-secret-value-0123456789";

static void test_wipe_on_grow(void)
{
    reset_counts();
    struct buf b = {0};
    CHECK_INT(buf_adds(&b, SECRET), 0);
    size_t first_cap = b.cap;
    while (b.cap == first_cap) /* grow past the first block */
        CHECK_INT(buf_adds(&b, SECRET), 0);
    CHECK(released >= 1);          /* the first block went back ... */
    CHECK_INT(released_dirty, 0);  /* ... wiped */
    CHECK(strncmp(b.data, SECRET, strlen(SECRET)) == 0); /* and its content moved over */
    CHECK_INT(b.data[b.len], 0);
    int before = released;
    buf_wipe(&b);
    CHECK_INT(released, before + 1);
    CHECK_INT(released_dirty, 0);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
}

static void test_wipe_on_free_and_reset(void)
{
    reset_counts();
    struct buf b = {0};
    CHECK_INT(buf_add(&b, SECRET, sizeof SECRET - 1), 0);
    char *kept = b.data;
    buf_reset(&b); /* keeps the block for reuse, wipes the bytes */
    CHECK(b.data == kept);
    CHECK_INT(b.len, 0);
    CHECK_STR(b.data, "");
    CHECK(memchr(b.data, 'v', b.cap) == NULL);
    CHECK_INT(buf_adds(&b, "x"), 0);
    CHECK_STR(b.data, "x");
    buf_wipe(&b);
    CHECK_INT(released, 1);
    CHECK_INT(released_dirty, 0);
}

static void test_take_and_dup(void)
{
    reset_counts();
    struct buf b = {0};
    char *empty = buf_take(&b);
    CHECK_STR(empty, "");
    free(empty);
    CHECK_INT(buf_add(&b, "a\0b", 3), 0);
    CHECK_INT(b.len, 3);
    char *t = buf_take(&b);
    CHECK(t && memcmp(t, "a\0b", 4) == 0);
    free(t);
    CHECK(b.data == NULL);
    CHECK_INT(released_dirty, 0);
    CHECK(buf_dup(NULL) == NULL);
    char *d = buf_dupn("abc", 2);
    CHECK_STR(d, "ab");
    buf_secret_free(&d);
    CHECK(d == NULL);
    buf_secret_free(&d); /* NULL is a no-op */
}

static void test_out_of_memory(void)
{
    reset_counts();
    struct buf b = {0};
    CHECK_INT(buf_adds(&b, "kept"), 0);
    fail_after = allocs; /* the next allocation fails */
    char big[1024];
    memset(big, 'z', sizeof big);
    CHECK_INT(buf_add(&b, big, sizeof big), -1);
    CHECK(b.oom);
    CHECK_STR(b.data, "kept");       /* the content survives */
    CHECK_INT(buf_adds(&b, "x"), -1); /* and later appends are no-ops */
    CHECK(buf_take(&b) == NULL);      /* an incomplete buffer is never handed over */
    CHECK(b.data == NULL);
    CHECK_INT(released_dirty, 0);
}

int main(void)
{
    buf_set_allocator(&watcher);
    RUN(test_wipe_on_grow);
    RUN(test_wipe_on_free_and_reset);
    RUN(test_take_and_dup);
    RUN(test_out_of_memory);
    buf_set_allocator(NULL);
    DONE();
}
