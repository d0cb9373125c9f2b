/* C tests for server.c and certgen.c: listen parsing, PKI, requests over TLS with libcurl,
 * keep-alive, dropped connections, and stopping with a delayed response pending. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include "check.h"
#include "certgen.h"
#include "server.h"

/* certgen knows no host names: its caller (core.server.default_names) gives them. */
static const char *const test_dns[] = {"localhost", "management.azure.com", "*.vault.azure.net", NULL};
static const char *const test_ip[] = {"127.0.0.1", "::1", NULL};

static char *ca_cert, *ca_key, *leaf_cert, *leaf_key;

struct buf {
    char data[65536];
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    size_t len = size * n;
    if (b->len + len >= sizeof b->data)
        len = sizeof b->data - b->len - 1;
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return size * n;
}

static CURL *client(struct buf *b, struct curl_slist **connect_to, unsigned port)
{
    CURL *c = curl_easy_init();
    struct curl_blob blob = {.data = ca_cert, .len = strlen(ca_cert), .flags = CURL_BLOB_COPY};
    curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    char entry[128];
    snprintf(entry, sizeof entry, "management.azure.com:443:127.0.0.1:%u", port);
    *connect_to = curl_slist_append(NULL, entry);
    curl_easy_setopt(c, CURLOPT_CONNECT_TO, *connect_to);
    return c;
}

static void test_parse_listen(void)
{
    char host[46], err[256];
    int v6;
    unsigned port;
    CHECK_INT(server_parse_listen("127.0.0.1:0", host, &v6, &port, err, sizeof err), 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_INT(v6, 0);
    CHECK_INT(port, 0);
    CHECK_INT(server_parse_listen("127.1.2.3:8443", host, &v6, &port, err, sizeof err), 0);
    CHECK_INT(port, 8443);
    CHECK_INT(server_parse_listen("[::1]:99", host, &v6, &port, err, sizeof err), 0);
    CHECK_STR(host, "::1");
    CHECK_INT(v6, 1);
    CHECK_INT(server_parse_listen("0.0.0.0:0", host, &v6, &port, err, sizeof err), -1);
    CHECK(strstr(err, "loopback") != NULL);
    CHECK_INT(server_parse_listen("localhost:0", host, &v6, &port, err, sizeof err), -1);
    CHECK_INT(server_parse_listen("[::]:0", host, &v6, &port, err, sizeof err), -1);
    CHECK_INT(server_parse_listen("127.0.0.1:65536", host, &v6, &port, err, sizeof err), -1);
    CHECK_INT(server_parse_listen("127.0.0.1:", host, &v6, &port, err, sizeof err), -1);
    CHECK_INT(server_parse_listen("127.0.0.1", host, &v6, &port, err, sizeof err), -1);
}

static void test_certgen(void)
{
    CHECK_INT(certgen_make_ca("unit CA", &ca_cert, &ca_key), 0);
    CHECK(ca_cert && strncmp(ca_cert, "-----BEGIN CERTIFICATE-----", 27) == 0);
    CHECK(ca_key && strncmp(ca_key, "-----BEGIN PRIVATE KEY-----", 27) == 0);
    CHECK_INT(certgen_make_server(ca_cert, ca_key, test_dns, test_ip, &leaf_cert,
                                  &leaf_key),
              0);
    CHECK(leaf_cert && strcmp(leaf_cert, ca_cert) != 0);
    static const char *const bad_ip[] = {"300.1.1.1", NULL};
    char *c, *k, err[256];
    CHECK_INT(certgen_make_server(ca_cert, ca_key, NULL, bad_ip, &c, &k), -1);
    CHECK(c == NULL && k == NULL);
    certgen_last_error(err, sizeof err);
    CHECK(strstr(err, "IP") != NULL || strstr(err, "ip") != NULL);
    CHECK_INT(certgen_make_server("not pem", ca_key, test_dns, NULL, &c, &k), -1);
    certgen_last_error(err, sizeof err);
    CHECK(err[0] != '\0');
}

static const char echo_src[] =
    "return function(req, config)\n"
    "  if req.path == '/drop' then return nil end\n"
    "  if req.path == '/error' then error('unit failure') end\n"
    "  return 200, {['x-host'] = req.host}, req.method .. ' ' .. req.path .. ' ' .. #req.body .. ' ' .. config,\n"
    "         tonumber(req.args.delay_ms)\n"
    "end\n";

static struct cmk_server *start_echo(void)
{
    struct server_options o = {.tls = 1, .cert_pem = leaf_cert, .key_pem = leaf_key,
                               .handler_source = echo_src, .handler_source_len = sizeof echo_src - 1,
                               .config = "CFG", .config_len = 3};
    int kind;
    char err[512];
    struct cmk_server *s = server_start(&o, &kind, err, sizeof err);
    if (!s)
        fprintf(stderr, "server_start: %s\n", err);
    return s;
}

static void test_requests(void)
{
    struct cmk_server *s = start_echo();
    CHECK(s != NULL);
    if (!s)
        return;
    unsigned port = server_port(s);
    CHECK(port > 0);
    struct buf b = {.len = 0};
    struct curl_slist *ct;
    CURL *c = client(&b, &ct, port);
    curl_easy_setopt(c, CURLOPT_URL, "https://management.azure.com/subscriptions?x=1");
    CHECK_INT(curl_easy_perform(c), CURLE_OK);
    CHECK_STR(b.data, "GET /subscriptions 0 CFG");
    long connects = -1, status = 0;
    /* keep-alive: the same handle reuses its connection */
    b.len = 0;
    static char body[50000];
    memset(body, 'x', sizeof body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)sizeof body);
    curl_easy_setopt(c, CURLOPT_URL, "https://management.azure.com/upload");
    CHECK_INT(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
    CHECK_INT(connects, 0);
    CHECK_STR(b.data, "POST /upload 50000 CFG");
    /* handler error */
    b.len = 0;
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_URL, "https://management.azure.com/error");
    CHECK_INT(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    CHECK_INT(status, 500);
    CHECK(strstr(b.data, "\"code\":\"InternalServerError\"") != NULL);
    /* the answer names the log line; the error's text and source name stay in the log */
    CHECK(strstr(b.data, "details are in its log") != NULL);
    CHECK(strstr(b.data, "unit failure") == NULL);
    CHECK(strstr(b.data, "handler_source") == NULL);
    /* dropped connection (on a fresh connection: libcurl retries once when a reused one dies) */
    curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(c, CURLOPT_URL, "https://management.azure.com/drop");
    CHECK_INT(curl_easy_perform(c), CURLE_GOT_NOTHING);
    CHECK_INT(server_requests(s), 4);
    curl_easy_cleanup(c);
    curl_slist_free_all(ct);
    server_stop(s);
}

static void test_stop_with_pending_delay(void)
{
    struct cmk_server *s = start_echo();
    CHECK(s != NULL);
    if (!s)
        return;
    struct buf b = {.len = 0};
    struct curl_slist *ct;
    CURL *c = client(&b, &ct, server_port(s));
    curl_easy_setopt(c, CURLOPT_URL, "https://management.azure.com/late?delay_ms=60000");
    CURLM *m = curl_multi_init();
    curl_multi_add_handle(m, c);
    int running = 1;
    for (int i = 0; i < 400 && server_requests(s) == 0; i++) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 25, NULL);
    }
    CHECK_INT(server_requests(s), 1);
    server_stop(s); /* must not hang or crash with a suspended connection */
    for (int i = 0; i < 400 && running; i++) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 25, NULL);
    }
    CHECK_INT(running, 0);
    int left;
    CURLMsg *msg = curl_multi_info_read(m, &left);
    CHECK(msg && msg->data.result != CURLE_OK);
    CHECK_INT(b.len, 0);
    curl_multi_remove_handle(m, c);
    curl_multi_cleanup(m);
    curl_easy_cleanup(c);
    curl_slist_free_all(ct);
    server_stop(NULL);
}

static void test_start_errors(void)
{
    int kind;
    char err[512];
    struct server_options o = {.listen = "10.0.0.1:0", .handler_source = "return function() end",
                               .handler_source_len = 22};
    CHECK(server_start(&o, &kind, err, sizeof err) == NULL);
    CHECK_INT(kind, SERVER_EUSAGE);
    o.listen = NULL;
    o.handler_source = "return (";
    o.handler_source_len = 8;
    CHECK(server_start(&o, &kind, err, sizeof err) == NULL);
    CHECK_INT(kind, SERVER_EUSAGE);
    CHECK(strstr(err, "failed to load") != NULL);
    o.handler_source = "return function() end";
    o.handler_source_len = 21;
    o.tls = 1;
    o.cert_pem = "garbage";
    o.key_pem = "garbage";
    CHECK(server_start(&o, &kind, err, sizeof err) == NULL);
    CHECK_INT(kind, SERVER_EENV);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    RUN(test_parse_listen);
    RUN(test_certgen);
    if (leaf_cert) {
        RUN(test_requests);
        RUN(test_stop_with_pending_delay);
    }
    RUN(test_start_errors);
    free(ca_cert);
    free(leaf_cert);
    if (ca_key) {
        OPENSSL_cleanse(ca_key, strlen(ca_key));
        free(ca_key);
    }
    if (leaf_key) {
        OPENSSL_cleanse(leaf_key, strlen(leaf_key));
        free(leaf_key);
    }
    curl_global_cleanup();
    DONE();
}
