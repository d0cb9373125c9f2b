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

/* Bounds that keep one client from stalling or exhausting the server for the others
 * (docs/emulator.md "Limits"). */
#define MAX_BODY ((size_t)4 << 20)          /* one request's body; larger: 413 */
#define MAX_BODY_TOTAL ((size_t)32 << 20)   /* bodies being received on all connections; beyond: 503 */
#define SMALL_BODY ((size_t)64 << 10)       /* bodies up to this size may use the reserve below */
#define BODY_RESERVE ((size_t)4 << 20)      /* kept for small bodies: large uploads cannot starve them */
#define MAX_JSON_DEPTH 64                   /* a JSON body nesting deeper: 400 before the handler */
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
    int committing;                  /* in cmk_server.committing: answered once the commit is done */
    int bad_path;                    /* the raw target holds an encoded NUL (%00) */
    size_t charged;                  /* bytes of this body counted in cmk_server.body_bytes */
    struct buf query;                /* raw query string */
    struct buf body;                 /* wiped between requests: token requests carry secrets */
};

struct cmk_server {
    struct MHD_Daemon *daemon;
    lua_State *L;
    int handler_ref, config_ref, commit_ref; /* commit_ref: the handler table's commit(), or LUA_NOREF */
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
    struct req *committing; /* answers held until the next commit (group commit; server.h) */
    unsigned free_count;
    size_t body_bytes;    /* bodies being received (server thread only; MAX_BODY_TOTAL) */
    unsigned long error_n; /* handler errors so far: the id an answer names, the log line carries */
    atomic_uint contexts; /* records allocated (read by stats from other threads) */
};

/* Queue a JSON error answer {"error":{"code","message"}} (the ARM envelope). close_after: the
 * connection closes after it (the request's rest cannot be trusted). */
enum MHD_Result server_respond_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                     const char *msg, int close_after);
/* Return a request's body charge to the server's budget. */
void server_release_body(struct cmk_server *s, struct req *r);
/* Monotonic milliseconds. */
uint64_t server_now_ms(void);
/* Runs the handler's commit() once for every answer held since the last one, then lets them go
 * (each after its own delay), or replaces them all with the error commit() returned. */
void server_commit(struct cmk_server *s);
/* MHD's access handler: collects the body, runs the Lua handler, queues (or delays) the answer. */
enum MHD_Result server_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls);

#endif
