/*
 * server_int.h: what the server module's files share (server.c: records, the thread, start/stop;
 * server_dispatch.c: a request through the Lua handler and back). lserver.c uses server.h.
 */
#ifndef CMKFLOW_SERVER_INT_H
#define CMKFLOW_SERVER_INT_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <microhttpd.h>
#include "buf.h"
#include "server.h"

#define MAX_BODY ((size_t)64 << 20)  /* larger uploads get 413 */
#define MAX_DELAY_MS 600000

/* One HTTP request (MHD's con_cls), created by the URI-log callback, returned in NOTIFY_COMPLETED. */
struct req {
    struct req *next;                /* free list or suspended list */
    struct req *all_next;            /* every record this server allocated */
    struct MHD_Connection *conn;
    struct MHD_Response *response;   /* a delayed response waiting for its due time */
    unsigned status;
    uint64_t due_ms;
    int started;                     /* the access handler has seen the headers */
    int suspended;
    struct buf query;                /* raw query string */
    struct buf body;                 /* wiped between requests: token requests carry secrets */
};

struct cmk_server {
    struct MHD_Daemon *daemon;
    lua_State *L;
    int handler_ref, config_ref;
    pthread_t thread;
    int thread_started;
    int wake_fd;
    atomic_int stopping;
    atomic_ulong requests;
    unsigned port;
    int tls, ipv6, debug;
    char url[80];
    char *cert_pem, *key_pem;
    struct req *free_list, *all, *suspended;
    unsigned free_count;
    atomic_uint contexts; /* records allocated (read by stats from other threads) */
};

/* Monotonic milliseconds. */
uint64_t server_now_ms(void);
/* MHD's access handler: collects the body, runs the Lua handler, queues (or delays) the answer. */
enum MHD_Result server_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls);

#endif
