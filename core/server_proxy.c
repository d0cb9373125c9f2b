/* server_proxy.c: the emulator's HTTPS proxy - a loopback listener that answers `CONNECT host:443`
 * for Azure's host names only and relays the tunnel's bytes to the emulator's own TLS listener, so
 * that a client needs nothing but HTTPS_PROXY and the emulator's CA (docs/emulator.md, "The
 * HTTPS proxy"). Design notes in server.h. */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include "server_int.h"

#define PROXY_HEADER_MAX 8192     /* a CONNECT request's head; longer: 431 */
#define PROXY_RELAY_BUF 16384     /* bytes in flight per direction and tunnel */
#define PROXY_DEFAULT_MAX 64      /* tunnels (and requests being read) at once */
#define PROXY_DEFAULT_IDLE_S 30   /* a tunnel or request with no byte moving for this long is closed */
#define PROXY_HOST_MAX 253

enum tunnel_state { T_REQUEST, T_CONNECTING, T_RELAY };

/* One client connection: its CONNECT request, then the tunnel to the emulator's TLS port. */
struct tunnel {
    int client, upstream;
    enum tunnel_state state;
    uint64_t last_ms;
    size_t head_len;
    char head[PROXY_HEADER_MAX];
    size_t up_len, up_off;        /* client -> emulator */
    size_t down_len, down_off;    /* emulator -> client */
    int client_eof, upstream_eof;
    char up[PROXY_RELAY_BUF], down[PROXY_RELAY_BUF];
};

struct cmk_proxy {
    int listen_fd, wake_fd;
    pthread_t thread;
    int thread_started;
    atomic_int stopping;
    unsigned port, max, idle_s;
    char url[80];
    struct sockaddr_storage target;
    socklen_t target_len;
    char **hosts;                 /* "name" or "*.suffix" (one label), lower case */
    size_t nhosts;
    struct tunnel **tunnels;      /* max slots */
    atomic_ulong refused;         /* connections turned away at the bound */
};

/* ---- helpers ---------------------------------------------------------------------------------- */

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Fill a sockaddr for a loopback HOST:PORT (already checked by server_parse_listen). */
static socklen_t make_addr(struct sockaddr_storage *ss, const char *host, int ipv6, unsigned port)
{
    memset(ss, 0, sizeof *ss);
    if (ipv6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, host, &a->sin6_addr);
        return sizeof *a;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a->sin_addr);
    return sizeof *a;
}

int server_bind_listen(const char *addr, int backlog, int *fd_out, unsigned *port_out, char *err,
                       size_t errlen)
{
    char host[46];
    int ipv6;
    unsigned port;
    *fd_out = -1;
    if (server_parse_listen(addr, host, &ipv6, &port, err, errlen))
        return SERVER_EUSAGE;
    struct sockaddr_storage ss;
    socklen_t len = make_addr(&ss, host, ipv6, port);
    int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return SERVER_EENV;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || (backlog > 0 && listen(fd, backlog) != 0)) {
        int e = errno;
        close(fd);
        snprintf(err, errlen, "%s is %s", addr, e == EADDRINUSE ? "already in use" : strerror(e));
        return e == EADDRINUSE ? SERVER_EINUSE : SERVER_EENV;
    }
    if (port_out) {
        getsockname(fd, (struct sockaddr *)&ss, &len);
        *port_out = ntohs(ipv6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    }
    *fd_out = fd;
    return SERVER_OK;
}

/* Is host (lower case, no port) one the proxy tunnels to? A "*.suffix" entry matches one label. */
static int host_allowed(const struct cmk_proxy *p, const char *host)
{
    for (size_t i = 0; i < p->nhosts; i++) {
        const char *h = p->hosts[i];
        if (h[0] == '*' && h[1] == '.') {
            size_t hl = strlen(host), sl = strlen(h + 1); /* ".suffix" */
            if (hl > sl && strcmp(host + hl - sl, h + 1) == 0 && memchr(host, '.', hl - sl) == NULL)
                return 1;
        } else if (strcmp(host, h) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A short answer to a request the proxy does not tunnel; the connection closes after it. Best
 * effort: a client that does not read it loses nothing but the text. */
static void answer(int fd, const char *status, const char *extra, const char *text)
{
    char msg[768];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n%s",
                     status, strlen(text), extra ? extra : "", text);
    if (n > 0) {
        ssize_t w = send(fd, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1, MSG_NOSIGNAL);
        (void)w;
    }
}

static void tunnel_close(struct cmk_proxy *p, size_t i)
{
    struct tunnel *t = p->tunnels[i];
    if (!t)
        return;
    if (t->client >= 0)
        close(t->client);
    if (t->upstream >= 0)
        close(t->upstream);
    free(t);
    p->tunnels[i] = NULL;
}

/* ---- the CONNECT request ---------------------------------------------------------------------- */

/* The head is complete: decide, and either start the connection to the emulator or answer and
 * close. Returns 0 to keep the tunnel, -1 when it is done. */
static int on_head(struct cmk_proxy *p, struct tunnel *t, size_t head_end)
{
    char method[16], target[PROXY_HOST_MAX + 16], version[16];
    char line[sizeof target + 64];
    size_t ll = strcspn(t->head, "\r\n");
    if (ll >= sizeof line) {
        answer(t->client, "400 Bad Request", NULL, "the request line is too long\n");
        return -1;
    }
    memcpy(line, t->head, ll);
    line[ll] = '\0';
    if (sscanf(line, "%15s %268s %15s", method, target, version) != 3 || strncmp(version, "HTTP/1.", 7) != 0) {
        answer(t->client, "400 Bad Request", NULL, "not an HTTP/1.x request\n");
        return -1;
    }
    if (strcmp(method, "CONNECT") != 0) {
        answer(t->client, "405 Method Not Allowed", "Allow: CONNECT\r\n",
               "the emulator's proxy only tunnels HTTPS (CONNECT host:443); plain HTTP is not proxied\n");
        return -1;
    }
    char *colon = strrchr(target, ':');
    char text[512];
    if (colon)
        *colon = '\0';
    for (char *c = target; *c; c++)
        *c = (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
    if (!colon || strcmp(colon + 1, "443") != 0 || !host_allowed(p, target)) {
        snprintf(text, sizeof text,
                 "CONNECT %s%s%s refused: the emulator's proxy only tunnels to Azure's host names on port "
                 "443 (docs/emulator.md); nothing else is reached\n",
                 target, colon ? ":" : "", colon ? colon + 1 : "");
        answer(t->client, "403 Forbidden", NULL, text);
        return -1;
    }
    int fd = socket(p->target.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        answer(t->client, "502 Bad Gateway", NULL, "the proxy could not reach the emulator\n");
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    t->upstream = fd;
    if (connect(fd, (struct sockaddr *)&p->target, p->target_len) != 0 && errno != EINPROGRESS) {
        answer(t->client, "502 Bad Gateway", NULL, "the proxy could not reach the emulator\n");
        return -1;
    }
    /* bytes the client sent after the head (an eager TLS ClientHello) go up first */
    size_t rest = t->head_len - head_end;
    memcpy(t->up, t->head + head_end, rest);
    t->up_len = rest;
    t->up_off = 0;
    t->state = T_CONNECTING;
    return 0;
}

/* Read the request head; 0 to keep going, -1 when the connection is done. */
static int read_head(struct cmk_proxy *p, struct tunnel *t)
{
    ssize_t n = recv(t->client, t->head + t->head_len, sizeof t->head - 1 - t->head_len, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return -1;
    if (n < 0)
        return 0;
    t->head_len += (size_t)n;
    t->head[t->head_len] = '\0';
    char *end = strstr(t->head, "\r\n\r\n");
    if (end)
        return on_head(p, t, (size_t)(end + 4 - t->head));
    if (t->head_len >= sizeof t->head - 1) {
        answer(t->client, "431 Request Header Fields Too Large", NULL, "the CONNECT request is too large\n");
        return -1;
    }
    return 0;
}

/* ---- relaying --------------------------------------------------------------------------------- */

/* One direction of a tunnel: read from `from` into an empty buffer when it is readable. */
static void fill(int from, short rev, char *buf, size_t cap, size_t *len, size_t *off, int *eof)
{
    if (!(rev & (POLLIN | POLLHUP | POLLERR)) || *eof || *len != 0)
        return;
    ssize_t n = recv(from, buf, cap, 0);
    if (n > 0) {
        *len = (size_t)n;
        *off = 0;
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        *eof = 1;
    }
}

/* ... and write what the buffer holds to `to`. 0, or -1 on an error. */
static int drain(int to, const char *buf, size_t *len, size_t *off)
{
    if (*len <= *off)
        return 0;
    ssize_t n = send(to, buf + *off, *len - *off, MSG_NOSIGNAL);
    if (n > 0)
        *off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR)
        return -1;
    if (*off == *len)
        *len = *off = 0;
    return 0;
}

/* Move what one side can give and the other can take. 0 to keep going, -1 when the tunnel is done
 * (either side closed and what it sent is delivered, or an error). */
static int relay(struct tunnel *t, short crev, short urev)
{
    fill(t->client, crev, t->up, sizeof t->up, &t->up_len, &t->up_off, &t->client_eof);
    fill(t->upstream, urev, t->down, sizeof t->down, &t->down_len, &t->down_off, &t->upstream_eof);
    if (drain(t->upstream, t->up, &t->up_len, &t->up_off) || drain(t->client, t->down, &t->down_len, &t->down_off))
        return -1;
    /* HTTPS needs no half-open tunnel: once a side is gone and its bytes are delivered, close */
    if ((t->client_eof && t->up_len == 0) || (t->upstream_eof && t->down_len == 0))
        return -1;
    return 0;
}

/* ---- the proxy thread ------------------------------------------------------------------------- */

static void accept_one(struct cmk_proxy *p, uint64_t now)
{
    int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    size_t slot = p->max;
    for (size_t i = 0; i < p->max; i++) {
        if (!p->tunnels[i]) {
            slot = i;
            break;
        }
    }
    struct tunnel *t = slot < p->max ? malloc(sizeof *t) : NULL;
    if (!t) {
        /* at the bound: refused at once, never left waiting */
        char text[160];
        snprintf(text, sizeof text, "the emulator's proxy has %u connections open, its limit; retry later\n", p->max);
        answer(fd, "503 Service Unavailable", "Retry-After: 1\r\n", text);
        close(fd);
        atomic_fetch_add(&p->refused, 1);
        return;
    }
    t->client = fd;
    t->upstream = -1;
    t->state = T_REQUEST;
    t->last_ms = now;
    t->head_len = t->up_len = t->up_off = t->down_len = t->down_off = 0;
    t->client_eof = t->upstream_eof = 0;
    t->head[0] = '\0';
    p->tunnels[slot] = t;
}

static void *proxy_main(void *arg)
{
    struct cmk_proxy *p = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    size_t nfds = 2 + 2 * (size_t)p->max;
    struct pollfd *fds = calloc(nfds, sizeof *fds);
    if (!fds)
        return NULL;
    while (!atomic_load(&p->stopping)) {
        fds[0] = (struct pollfd){.fd = p->wake_fd, .events = POLLIN};
        fds[1] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < p->max; i++) {
            struct tunnel *t = p->tunnels[i];
            struct pollfd *c = &fds[2 + 2 * i], *u = c + 1;
            *c = (struct pollfd){.fd = -1};
            *u = (struct pollfd){.fd = -1};
            if (!t)
                continue;
            c->fd = t->client;
            if (t->state == T_REQUEST) {
                c->events = POLLIN;
            } else if (t->state == T_CONNECTING) {
                c->fd = -1;
                u->fd = t->upstream;
                u->events = POLLOUT;
            } else {
                u->fd = t->upstream;
                c->events = (short)((t->up_len == 0 && !t->client_eof ? POLLIN : 0) |
                                    (t->down_len > t->down_off ? POLLOUT : 0));
                u->events = (short)((t->down_len == 0 && !t->upstream_eof ? POLLIN : 0) |
                                    (t->up_len > t->up_off ? POLLOUT : 0));
            }
        }
        if (poll(fds, nfds, 1000) < 0 && errno != EINTR)
            break;
        uint64_t now = server_now_ms();
        for (size_t i = 0; i < p->max; i++) {
            struct tunnel *t = p->tunnels[i];
            if (!t)
                continue;
            short crev = fds[2 + 2 * i].revents, urev = fds[3 + 2 * i].revents;
            int done = 0;
            if (crev || urev)
                t->last_ms = now;
            if (t->state == T_REQUEST && crev) {
                done = read_head(p, t);
            } else if (t->state == T_CONNECTING && urev) {
                int e = 0;
                socklen_t el = sizeof e;
                getsockopt(t->upstream, SOL_SOCKET, SO_ERROR, &e, &el);
                if (e) {
                    answer(t->client, "502 Bad Gateway", NULL, "the proxy could not reach the emulator\n");
                    done = -1;
                } else {
                    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
                    done = send(t->client, ok, sizeof ok - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof ok - 1) ? 0 : -1;
                    t->state = T_RELAY;
                    if (!done && t->up_len)
                        done = relay(t, 0, 0);
                }
            } else if (t->state == T_RELAY && (crev || urev)) {
                done = relay(t, crev, urev);
            } else if (now - t->last_ms > (uint64_t)p->idle_s * 1000u) {
                done = -1; /* idle: a silent client cannot hold a slot */
            }
            if (done)
                tunnel_close(p, i);
        }
        if (fds[1].revents & POLLIN)
            accept_one(p, now);
    }
    free(fds);
    return NULL;
}

/* ---- start / stop ----------------------------------------------------------------------------- */

void proxy_stop(struct cmk_proxy *p)
{
    if (!p)
        return;
    if (p->thread_started) {
        atomic_store(&p->stopping, 1);
        uint64_t one = 1;
        ssize_t w = write(p->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(p->thread, NULL);
    }
    if (p->tunnels)
        for (size_t i = 0; i < p->max; i++)
            tunnel_close(p, i);
    free(p->tunnels);
    for (size_t i = 0; i < p->nhosts; i++)
        free(p->hosts[i]);
    free(p->hosts);
    if (p->listen_fd >= 0)
        close(p->listen_fd);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    free(p);
}

struct cmk_proxy *proxy_start(const struct proxy_options *o, int *kind, char *err, size_t errlen)
{
    char host[46];
    int ipv6;
    unsigned tport;
    *kind = SERVER_EUSAGE;
    if (!o->target || server_parse_listen(o->target, host, &ipv6, &tport, err, errlen) || tport == 0) {
        if (!o->target || tport == 0)
            snprintf(err, errlen, "proxy: target must be the emulator's loopback HOST:PORT");
        return NULL;
    }
    struct cmk_proxy *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        *kind = SERVER_EENV;
        return NULL;
    }
    p->listen_fd = p->wake_fd = -1;
    p->max = o->max_tunnels ? o->max_tunnels : PROXY_DEFAULT_MAX;
    p->idle_s = o->idle_s ? o->idle_s : PROXY_DEFAULT_IDLE_S;
    p->target_len = make_addr(&p->target, host, ipv6, tport);
    atomic_init(&p->stopping, 0);
    atomic_init(&p->refused, 0);
    size_t n = 0;
    while (o->hosts && o->hosts[n])
        n++;
    p->hosts = calloc(n ? n : 1, sizeof *p->hosts);
    p->tunnels = calloc(p->max, sizeof *p->tunnels);
    if (!p->hosts || !p->tunnels) {
        snprintf(err, errlen, "out of memory");
        *kind = SERVER_EENV;
        goto fail;
    }
    for (; p->nhosts < n; p->nhosts++) {
        size_t len = strlen(o->hosts[p->nhosts]);
        char *h = len && len <= PROXY_HOST_MAX ? strdup(o->hosts[p->nhosts]) : NULL;
        if (!h) {
            snprintf(err, errlen, "proxy: host name %zu is empty or too long", p->nhosts + 1);
            goto fail;
        }
        for (char *c = h; *c; c++)
            *c = (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
        p->hosts[p->nhosts] = h;
    }
    *kind = server_bind_listen(o->listen ? o->listen : "127.0.0.1:0", 64, &p->listen_fd, &p->port, err, errlen);
    if (*kind != SERVER_OK)
        goto fail;
    *kind = SERVER_EENV;
    if (set_nonblocking(p->listen_fd) != 0) {
        snprintf(err, errlen, "proxy: %s", strerror(errno));
        goto fail;
    }
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    server_parse_listen(o->listen ? o->listen : "127.0.0.1:0", host, &ipv6, &tport, err, errlen);
    snprintf(p->url, sizeof p->url, ipv6 ? "http://[%s]:%u" : "http://%s:%u", host, p->port);
    int e = pthread_create(&p->thread, NULL, proxy_main, p);
    if (e) {
        snprintf(err, errlen, "could not start the proxy thread: %s", strerror(e));
        goto fail;
    }
    p->thread_started = 1;
    *kind = SERVER_OK;
    return p;
fail:
    proxy_stop(p);
    return NULL;
}

unsigned proxy_port(const struct cmk_proxy *p)
{
    return p->port;
}

const char *proxy_url(const struct cmk_proxy *p)
{
    return p->url;
}

unsigned long proxy_refused(const struct cmk_proxy *p)
{
    return atomic_load(&((struct cmk_proxy *)p)->refused);
}
