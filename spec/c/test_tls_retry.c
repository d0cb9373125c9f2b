/* A TLS handshake reset by the peer is a transient connection error: retried like a refused or
 * reset connection, and reported (when the attempts run out) as a network failure that blames no
 * tenant. A certificate that does not verify is never retried.
 *
 * The server is a thread on 127.0.0.1 (an ephemeral port): the first `resets` connections read
 * the ClientHello and close with an RST (SO_LINGER 0), the next ones complete the handshake
 * (certificate from core/certgen.c) and answer 200. The session runs on the fake clock, so the
 * retry delays cost no time. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <lauxlib.h>
#include <lualib.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include "check.h"
#include "certgen.h"
#include <curl/curl.h>
#include "cmk.h"
#include "http.h"

struct tls_server {
    int fd, port, resets;
    SSL_CTX *ctx;
    atomic_int accepted, handshakes, stop;
    pthread_t thread;
};

static void reset_connection(int c)
{
    char hello[4096];
    struct pollfd p = {.fd = c, .events = POLLIN};
    if (poll(&p, 1, 5000) == 1)
        (void)recv(c, hello, sizeof hello, 0); /* the ClientHello: the handshake has begun */
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(c); /* RST */
}

static void serve_tls(struct tls_server *s, int c)
{
    SSL *ssl = SSL_new(s->ctx);
    if (ssl && SSL_set_fd(ssl, c) == 1 && SSL_accept(ssl) == 1) {
        atomic_fetch_add(&s->handshakes, 1);
        char req[4096];
        size_t n = 0;
        while (n < sizeof req - 1) {
            int r = SSL_read(ssl, req + n, (int)(sizeof req - 1 - n));
            if (r <= 0)
                break;
            n += (size_t)r;
            req[n] = 0;
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        SSL_write(ssl, answer, (int)sizeof answer - 1);
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(c);
}

static void *server_main(void *arg)
{
    struct tls_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 100) != 1)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        if (atomic_fetch_add(&s->accepted, 1) < s->resets)
            reset_connection(c);
        else
            serve_tls(s, c);
    }
    return NULL;
}

/* Certificate and key PEM into the server's context. */
static SSL_CTX *server_ctx(const char *cert_pem, const char *key_pem)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
    X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    int ok = ctx && cert && key && SSL_CTX_use_certificate(ctx, cert) == 1 && SSL_CTX_use_PrivateKey(ctx, key) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int server_start(struct tls_server *s, SSL_CTX *ctx, int resets)
{
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    s->resets = resets;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t n = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->fd, 16) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &n) != 0)
        return -1;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->thread, NULL, server_main, s) == 0 ? 0 : -1;
}

static void server_stop(struct tls_server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/* One GET of https://127.0.0.1:port/x with max_attempts on the fake clock; leaves result, err on
 * L's stack (the transfer's t:result()). */
static void get(lua_State *L, int port, const char *ca_file, int max_attempts)
{
    static const char chunk[] =
        "local http, port, ca_file, attempts = ...\n"
        "local s = http.session()\n"
        "s:set_clock('fake')\n"
        "local t = s:submit{ url = ('https://127.0.0.1:%d/x'):format(port), ca_file = ca_file,\n"
        "                    retry = { max_attempts = attempts } }\n"
        "while not t:done() do s:run(1000) end\n"
        "return t:result()\n";
    lua_settop(L, 0);
    CHECK_INT(luaL_loadstring(L, chunk), LUA_OK);
    luaL_requiref(L, "cmkflow.core.http", luaopen_cmkflow_core_http, 0);
    lua_pushinteger(L, port);
    lua_pushstring(L, ca_file);
    lua_pushinteger(L, max_attempts);
    if (lua_pcall(L, 4, 2, 0) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        CHECK(0);
        lua_settop(L, 0);
        lua_pushnil(L);
        lua_pushnil(L);
    }
}

static const char *field(lua_State *L, int idx, const char *name, char *buf, size_t len)
{
    lua_getfield(L, idx, name);
    snprintf(buf, len, "%s", lua_isnil(L, -1) ? "(nil)" : luaL_tolstring(L, -1, NULL));
    lua_settop(L, 2);
    return buf;
}

static char ca_path[64], other_ca_path[64];
static SSL_CTX *ctx;

static int write_pem(char *path, size_t len, const char *pem)
{
    snprintf(path, len, "/tmp/cmkflow-tls-retry-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t n = strlen(pem);
    int ok = write(fd, pem, n) == (ssize_t)n;
    close(fd);
    return ok ? 0 : -1;
}

static int setup(void)
{
    char *ca = NULL, *ca_key = NULL, *cert = NULL, *key = NULL, *other = NULL, *other_key = NULL;
    const char *dns[] = {"localhost", NULL}, *ips[] = {"127.0.0.1", NULL};
    int ok = certgen_make_ca("tls retry test CA", &ca, &ca_key) == 0 &&
             certgen_make_server(ca, ca_key, dns, ips, &cert, &key) == 0 &&
             certgen_make_ca("another CA", &other, &other_key) == 0 &&
             write_pem(ca_path, sizeof ca_path, ca) == 0 &&
             write_pem(other_ca_path, sizeof other_ca_path, other) == 0 &&
             (ctx = server_ctx(cert, key)) != NULL;
    free(ca);
    free(cert);
    free(other);
    OPENSSL_clear_free(ca_key, ca_key ? strlen(ca_key) : 0);
    OPENSSL_clear_free(key, key ? strlen(key) : 0);
    OPENSSL_clear_free(other_key, other_key ? strlen(other_key) : 0);
    return ok ? 0 : -1;
}

/* Start a server that resets `resets` handshakes, GET from it; the result is at 1..2 of the state. */
static lua_State *get_from_new_server(struct tls_server *s, int resets, const char *ca_file, int max_attempts)
{
    CHECK_INT(server_start(s, ctx, resets), 0);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    get(L, s->port, ca_file, max_attempts);
    return L;
}

static void finish(lua_State *L, struct tls_server *s)
{
    lua_close(L);
    server_stop(s);
}

/* Two resets during the handshake, then a handshake that completes: the third attempt answers. */
static void test_reset_then_through(void)
{
    struct tls_server s;
    lua_State *L = get_from_new_server(&s, 2, ca_path, 4);
    CHECK_INT(lua_type(L, 1), LUA_TTABLE);
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_getfield(L, 1, "status");
        CHECK_INT(lua_tointeger(L, -1), 200);
        lua_getfield(L, 1, "body");
        CHECK_STR(lua_tostring(L, -1), "ok");
    } else {
        char code[128], msg[512];
        fprintf(stderr, "failed: %s: %s\n", field(L, 2, "code", code, sizeof code),
                field(L, 2, "message", msg, sizeof msg));
    }
    finish(L, &s);
    CHECK_INT(atomic_load(&s.accepted), 3);
    CHECK_INT(atomic_load(&s.handshakes), 1);
}

/* The transfer failed with this code, kind and retryable flag, naming no tenant and no status. */
static void check_failure(lua_State *L, const char *code, const char *kind, const char *retryable)
{
    char buf[512];
    CHECK(lua_isnil(L, 1));
    CHECK_INT(lua_type(L, 2), LUA_TTABLE);
    CHECK_STR(field(L, 2, "code", buf, sizeof buf), code);
    CHECK_STR(field(L, 2, "kind", buf, sizeof buf), kind);
    CHECK_STR(field(L, 2, "retryable", buf, sizeof buf), retryable);
    CHECK_STR(field(L, 2, "tenant", buf, sizeof buf), "(nil)");
    CHECK_STR(field(L, 2, "status", buf, sizeof buf), "(nil)");
}

/* Resets every time: retried up to max_attempts, then a network failure that blames nobody. */
static void test_reset_every_time(void)
{
    struct tls_server s;
    lua_State *L = get_from_new_server(&s, 1000, ca_path, 3);
    check_failure(L, "ConnectionFailed", "network", "true");
    char buf[512];
    CHECK(strstr(field(L, 2, "message", buf, sizeof buf), "gave up after 3 attempts") != NULL);
    finish(L, &s);
    CHECK_INT(atomic_load(&s.accepted), 3);
}

/* A certificate from a CA the client does not trust: one attempt, a tls failure, not retryable. */
static void test_verification_failure_not_retried(void)
{
    struct tls_server s;
    lua_State *L = get_from_new_server(&s, 0, other_ca_path, 4);
    check_failure(L, "TLSVerificationFailed", "tls", "false");
    finish(L, &s);
    CHECK_INT(atomic_load(&s.accepted), 1);
}

/* The pure decision: a handshake error is retryable only when the socket was reset. */
static void test_handshake_table(void)
{
    CHECK(http_transport_retryable(CURLE_SSL_CONNECT_ERROR, ECONNRESET));
    CHECK(http_transport_retryable(CURLE_SSL_CONNECT_ERROR, EPIPE));
    CHECK(http_transport_retryable(CURLE_RECV_ERROR, ECONNRESET));
    CHECK(http_transport_retryable(CURLE_COULDNT_CONNECT, 0));
    CHECK(!http_transport_retryable(CURLE_SSL_CONNECT_ERROR, 0));        /* e.g. no shared cipher */
    CHECK(!http_transport_retryable(CURLE_PEER_FAILED_VERIFICATION, ECONNRESET));
    CHECK(!http_transport_retryable(CURLE_SSL_CACERT_BADFILE, ECONNRESET));
}

int main(void)
{
    if (setup() != 0) {
        fprintf(stderr, "test_tls_retry: cannot make the test certificates\n");
        return 1;
    }
    RUN(test_handshake_table);
    RUN(test_reset_then_through);
    RUN(test_reset_every_time);
    RUN(test_verification_failure_not_retried);
    SSL_CTX_free(ctx);
    unlink(ca_path);
    unlink(other_ca_path);
    DONE();
}
