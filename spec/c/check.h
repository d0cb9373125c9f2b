/* Minimal C test harness: CHECK(cond), CHECK_STR(a, b), CHECK_INT(a, b); main returns failures.
 * Each test file defines static test functions and calls RUN(fn) from main, then DONE(). */
#ifndef CMKFLOW_CHECK_H
#define CMKFLOW_CHECK_H
#include <stdio.h>
#include <string.h>

static int check_failures, check_total;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        check_total++;                                                                   \
        if (!(cond)) {                                                                   \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                \
    } while (0)

#define CHECK_STR(a, b)                                                                  \
    do {                                                                                 \
        const char *check_a_ = (a), *check_b_ = (b);                                     \
        check_total++;                                                                   \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                 \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" vs \"%s\"\n", __FILE__,      \
                    __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                    \
                    check_b_ ? check_b_ : "(null)");                                     \
        }                                                                                \
    } while (0)

#define CHECK_INT(a, b)                                                                  \
    do {                                                                                 \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                  \
        check_total++;                                                                   \
        if (check_a_ != check_b_) {                                                      \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld vs %lld\n", __FILE__,          \
                    __LINE__, #a, #b, check_a_, check_b_);                               \
        }                                                                                \
    } while (0)

#define RUN(fn)                                                                          \
    do {                                                                                 \
        int before_ = check_failures;                                                    \
        fn();                                                                            \
        printf("%s %s\n", check_failures == before_ ? "ok" : "FAIL", #fn);              \
    } while (0)

#define DONE()                                                                           \
    do {                                                                                 \
        printf("%d checks, %d failed\n", check_total, check_failures);                   \
        return check_failures ? 1 : 0;                                                   \
    } while (0)

#endif
