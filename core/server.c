/* server.c: the HTTPS server on libmicrohttpd - request records, the server thread and its loop,
 * start and stop (design notes in server.h). server_dispatch.c runs the Lua handler. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <lualib.h>
#include "server_int.h"

#define POOL_MAX 64                  /* request records kept for reuse */
#define KEEP_BUF ((size_t)64 << 10)  /* larger body buffers are not kept in the pool */
#define CONNECTION_TIMEOUT_S 30     /* an idle or slow connection is closed after this */
#define CONNECTION_LIMIT 512         /* beyond: new connections are closed at once (not left hanging) */
#define PER_IP_CONNECTION_LIMIT 256  /* one address cannot take all of them */
/* TLS 1.2 and 1.3 only (libmicrohttpd's TLS is GnuTLS: these are GnuTLS priority strings) */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* ---- small helpers ---------------------------------------------------------------------------- */

uint64_t server_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int is_loopback(const char *host, int ipv6)
{
    unsigned char a[16];
    if (!ipv6)
        return inet_pton(AF_INET, host, a) == 1 && a[0] == 127;
    static const unsigned char one[16] = {[15] = 1};
    return inet_pton(AF_INET6, host, a) == 1 && memcmp(a, one, 16) == 0;
}

int server_parse_listen(const char *listen, char host[46], int *ipv6, unsigned *port, char *err,
                        size_t errlen)
{
    const char *colon, *h = listen;
    size_t hlen;
    *ipv6 = 0;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            goto bad;
        h = listen + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        *ipv6 = 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            goto bad;
        hlen = (size_t)(colon - listen);
    }
    if (hlen == 0 || hlen >= 46)
        goto bad;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || p < 0 || p > 65535)
        goto bad;
    *port = (unsigned)p;
    if (!is_loopback(host, *ipv6)) {
        snprintf(err, errlen,
                 "listen address '%s' refused: the server only binds a loopback IP literal "
                 "(127.0.0.1 or [::1])",
                 listen);
        return -1;
    }
    return 0;
bad:
    snprintf(err, errlen, "listen address '%s' is not HOST:PORT with a loopback IP literal host "
                          "(e.g. 127.0.0.1:0)", listen);
    return -1;
}

/* ---- request records -------------------------------------------------------------------------- */

static struct req *req_get(struct cmk_server *s)
{
    struct req *r = s->free_list;
    if (r) {
        s->free_list = r->next;
        s->free_count--;
    } else {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
        r->all_next = s->all;
        s->all = r;
        atomic_fetch_add(&s->contexts, 1);
    }
    r->next = NULL;
    r->conn = NULL;
    r->response = NULL;
    r->started = r->suspended = r->committing = r->bad_path = 0;
    r->charged = 0;
    buf_reset(&r->body);
    buf_reset(&r->query);
    return r;
}

/* Takes r out of the list at *head (the suspended or the committing one). */
static void unlink_req(struct req **head, struct req *r)
{
    for (struct req **p = head; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    r->next = NULL;
}

static void req_put(struct cmk_server *s, struct req *r)
{
    if (r->suspended)
        unlink_req(&s->suspended, r);
    if (r->committing)
        unlink_req(&s->committing, r);
    r->suspended = r->committing = 0;
    server_release_body(s, r);
    if (r->response) {
        MHD_destroy_response(r->response);
        r->response = NULL;
    }
    if (r->body.cap > KEEP_BUF)
        buf_wipe(&r->body);
    buf_reset(&r->body);
    if (s->free_count < POOL_MAX) {
        r->next = s->free_list;
        s->free_list = r;
        s->free_count++;
    } else {
        /* beyond POOL_MAX idle records keep no buffers (records are freed at stop) */
        buf_wipe(&r->body);
        buf_wipe(&r->query);
        r->next = s->free_list;
        s->free_list = r;
        s->free_count++;
    }
}

/* MHD_OPTION_URI_LOG_CALLBACK: the raw request target, before MHD splits off the query. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct cmk_server *s = cls;
    struct req *r = req_get(s);
    if (!r)
        return NULL;
    r->conn = conn;
    const char *q = uri ? strchr(uri, '?') : NULL;
    /* a percent-encoded NUL would cut the decoded path short: refused in the access handler */
    size_t plen = uri ? (q ? (size_t)(q - uri) : strlen(uri)) : 0;
    for (size_t i = 0; i + 2 < plen; i++) {
        if (uri[i] == '%' && uri[i + 1] == '0' && uri[i + 2] == '0') {
            r->bad_path = 1;
            break;
        }
    }
    q = q ? q + 1 : "";
    size_t n = strcspn(q, "#");
    buf_reset(&r->query);
    buf_add(&r->query, q, n);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    struct cmk_server *s = cls;
    if (*con_cls)
        req_put(s, *con_cls);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct cmk_server *s = cls;
    if (s->debug) {
        fputs("cmkflow server: ", stderr);
        vfprintf(stderr, fmt, ap);
    }
}

/* ---- the server thread ------------------------------------------------------------------------ */

static void resume_due(struct cmk_server *s, uint64_t now, int all)
{
    while (s->suspended && (all || s->suspended->due_ms <= now)) {
        struct req *r = s->suspended;
        s->suspended = r->next;
        r->next = NULL;
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

static void *server_main(void *arg)
{
    struct cmk_server *s = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    int epfd = di ? di->epoll_fd : -1;
    while (!atomic_load(&s->stopping)) {
        int timeout = -1;
        MHD_UNSIGNED_LONG_LONG t;
        if (MHD_get_timeout(s->daemon, &t) == MHD_YES)
            timeout = t > INT_MAX ? INT_MAX : (int)t;
        if (s->suspended) {
            uint64_t now = server_now_ms(), due = s->suspended->due_ms;
            uint64_t wait = due > now ? due - now : 0;
            if (timeout < 0 || wait < (uint64_t)timeout)
                timeout = (int)wait;
        }
        struct pollfd p[2] = {{.fd = epfd, .events = POLLIN}, {.fd = s->wake_fd, .events = POLLIN}};
        if (poll(p, 2, timeout) < 0 && errno != EINTR) {
            fprintf(stderr, "cmkflow server: poll failed: %s\n", strerror(errno));
            break;
        }
        if (s->suspended)
            resume_due(s, server_now_ms(), 0);
        MHD_run(s->daemon);
        /* group commit: the answers of every request this turn handled wait for one commit */
        if (s->committing)
            server_commit(s);
    }
    /* connections must not be suspended when the daemon stops */
    if (s->committing)
        server_commit(s);
    resume_due(s, 0, 1);
    MHD_run(s->daemon);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    return NULL;
}

/* ---- start / stop ----------------------------------------------------------------------------- */

struct load_args {
    struct cmk_server *s;
    const struct server_options *o;
};

/* [-1, +0, e] runs protected in the new state: libraries, searcher, handler chunk, init(config) */
static int load_handler(lua_State *L)
{
    struct load_args *a = lua_touserdata(L, 1);
    const struct server_options *o = a->o;
    luaL_openlibs(L);
    host_install_searcher(L);
    int status;
    if (o->handler_path) {
        status = luaL_loadfilex(L, o->handler_path, "t");
    } else if (o->handler_source) {
        status = luaL_loadbufferx(L, o->handler_source, o->handler_source_len, "=handler_source", "t");
    } else {
        lua_getglobal(L, "require");
        lua_pushstring(L, o->handler_module);
        lua_call(L, 1, 1);
        status = LUA_OK;
    }
    if (status != LUA_OK)
        return lua_error(L);
    if (!o->handler_module)
        lua_call(L, 0, 1);
    if (o->config)
        lua_pushlstring(L, o->config, o->config_len);
    else
        lua_pushnil(L);
    lua_pushvalue(L, -1);
    a->s->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* stack: chunk result, config */
    if (lua_type(L, -2) == LUA_TTABLE) {
        if (lua_getfield(L, -2, "handle") != LUA_TFUNCTION)
            return luaL_error(L, "handler table has no 'handle' function");
        a->s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        if (lua_getfield(L, -2, "commit") == LUA_TFUNCTION)
            a->s->commit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
        if (lua_getfield(L, -2, "init") == LUA_TFUNCTION) {
            lua_pushvalue(L, -2);
            lua_call(L, 1, 0);
        } else {
            lua_pop(L, 1);
        }
    } else if (lua_type(L, -2) == LUA_TFUNCTION) {
        lua_pushvalue(L, -2);
        a->s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        return luaL_error(L, "handler must return a function or a table with 'handle' (got %s)",
                          luaL_typename(L, -2));
    }
    return 0;
}

static void server_free(struct cmk_server *s)
{
    if (s->L)
        lua_close(s->L);
    for (struct req *r = s->all, *next; r; r = next) {
        next = r->all_next;
        if (r->response)
            MHD_destroy_response(r->response);
        buf_wipe(&r->body);
        buf_wipe(&r->query);
        free(r);
    }
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    free(s->cert_pem);
    buf_secret_free(&s->key_pem);
    free(s);
}

void server_stop(struct cmk_server *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        atomic_store(&s->stopping, 1);
        uint64_t one = 1;
        ssize_t w = write(s->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(s->thread, NULL);
    } else if (s->daemon) {
        MHD_stop_daemon(s->daemon);
    }
    server_free(s);
}

unsigned server_port(const struct cmk_server *s)
{
    return s->port;
}

const char *server_url(const struct cmk_server *s)
{
    return s->url;
}

unsigned server_contexts(const struct cmk_server *s)
{
    return atomic_load(&((struct cmk_server *)s)->contexts);
}

unsigned long server_requests(const struct cmk_server *s)
{
    return atomic_load(&((struct cmk_server *)s)->requests);
}

struct cmk_server *server_start(const struct server_options *o, int *kind, char *err, size_t errlen)
{
    char host[46];
    int ipv6;
    unsigned port;
    *kind = SERVER_EUSAGE;
    if (server_parse_listen(o->listen ? o->listen : "127.0.0.1:0", host, &ipv6, &port, err, errlen))
        return NULL;
    int nsrc = !!o->handler_path + !!o->handler_source + !!o->handler_module;
    if (nsrc != 1) {
        snprintf(err, errlen, "exactly one of handler, handler_source, handler_module is required");
        return NULL;
    }
#ifdef __GLIBC__
    /* One malloc arena for the process. A server's memory is made in one thread and freed in
     * another (libmicrohttpd's connections and TLS sessions, the handler's Lua state, the key
     * pool's generator), and glibc gives each thread an arena whose free memory the others do not
     * reuse: 10,000 customers' onboarding peaked at 301.5 MiB of RSS, 221.1 MiB with one arena
     * (CPU 105.8 and 112.1 s, within the shared machine's noise; docs/performance.md, "Emulator
     * at scale"; mallopt(3) M_ARENA_MAX). Arenas already made stay; later threads share. */
    mallopt(M_ARENA_MAX, 1);
#endif
    if (o->tls && (!o->cert_pem || !o->key_pem)) {
        snprintf(err, errlen, "tls needs cert_pem and key_pem");
        return NULL;
    }
    struct cmk_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        *kind = SERVER_EENV;
        return NULL;
    }
    s->wake_fd = -1;
    s->handler_ref = s->config_ref = s->commit_ref = LUA_NOREF;
    s->tls = o->tls;
    s->ipv6 = ipv6;
    s->debug = o->debug;
    atomic_init(&s->stopping, 0);
    atomic_init(&s->requests, 0);
    atomic_init(&s->contexts, 0);

    s->L = luaL_newstate();
    if (!s->L) {
        snprintf(err, errlen, "out of memory");
        *kind = SERVER_EENV;
        goto fail;
    }
    lua_State *L = s->L;
    lua_gc(L, LUA_GCGEN, 0, 0); /* before the handler loads: its init may choose otherwise */
    struct load_args la = {s, o};
    lua_pushcfunction(L, cmk_msghandler);
    lua_pushcfunction(L, load_handler);
    lua_pushlightuserdata(L, &la);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
        snprintf(err, errlen, "server handler failed to load: %s", lua_tostring(L, -1));
        goto fail;
    }
    lua_settop(L, 0);

    *kind = SERVER_EENV;
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (o->tls) {
        s->cert_pem = strdup(o->cert_pem);
        s->key_pem = strdup(o->key_pem);
        if (!s->cert_pem || !s->key_pem) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr *sa;
    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (ipv6) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, host, &sin6.sin6_addr);
        sa = (struct sockaddr *)&sin6;
    } else {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &sin.sin_addr);
        sa = (struct sockaddr *)&sin;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    if (o->tls)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls_opts[] = {
        {o->tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES},
        {MHD_OPTION_END, 0, NULL},
    };
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, server_on_request, s, MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)PER_IP_CONNECTION_LIMIT, MHD_OPTION_ARRAY,
        tls_opts, MHD_OPTION_END);
    if (!s->daemon) {
        /* MHD does not say why: a bind of our own tells a taken address from the rest */
        int probe;
        if (server_bind_listen(o->listen ? o->listen : "127.0.0.1:0", 0, &probe, NULL, err, errlen) == SERVER_EINUSE) {
            *kind = SERVER_EINUSE;
            goto fail;
        }
        if (probe >= 0)
            close(probe);
        snprintf(err, errlen, "could not start the server on %s:%u%s", host, port,
                 o->tls ? " (socket in use, or the certificate/key were rejected)" : " (socket in use?)");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : port;
    if (ipv6)
        snprintf(s->url, sizeof s->url, "%s://[%s]:%u", o->tls ? "https" : "http", host, s->port);
    else
        snprintf(s->url, sizeof s->url, "%s://%s:%u", o->tls ? "https" : "http", host, s->port);
    int e = pthread_create(&s->thread, NULL, server_main, s);
    if (e) {
        snprintf(err, errlen, "could not start the server thread: %s", strerror(e));
        goto fail;
    }
    s->thread_started = 1;
    *kind = SERVER_OK;
    return s;
fail:
    server_stop(s);
    return NULL;
}
