/* lstore_int.h: what the "cmkflow.store" userdata's two files share (lstore.c: the Lua methods
 * and SQLite; lstore_pg.c: the same statements on PostgreSQL). Private to the lstore module. */
#ifndef CMKFLOW_LSTORE_INT_H
#define CMKFLOW_LSTORE_INT_H
#include <sqlite3.h>
#include <libpq-fe.h>
#include <lua.h>

enum {
    S_RUN_INSERT,
    S_RUN_GET,
    S_RUN_LIST,
    S_RUN_UPDATE,
    S_STEP_BEGIN,
    S_STEP_FINISH,
    S_STEP_GET,
    S_STEP_LIST,
    S_APPROVAL_REQUEST,
    S_APPROVAL_DECIDE,
    S_APPROVAL_GET,
    S_APPROVAL_LIST,
    S_EVENT_INSERT,
    S_EVENT_LIST,
    S_RUN_EXISTS,
    S_RUN_DELETE,
    S_COUNT
};

#define RUN_COLUMNS "id, workflow, params, status, created_at, updated_at, error, outputs, config"
#define STEP_COLUMNS "run_id, name, status, attempts, started_at, finished_at, outputs, error"
#define APPROVAL_COLUMNS "run_id, gate, status, requested_at, decided_at, decided_by, note"

struct store {
    sqlite3 *db;                 /* an SQLite store, or */
    PGconn *pg;                  /* a PostgreSQL one */
    PGresult *res;               /* PostgreSQL: the last result, owned here (a raise leaks nothing) */
    long long changes;           /* PostgreSQL: rows the last write changed */
    char where[512];             /* PostgreSQL: the URL without its password */
    char pg_err[512];            /* PostgreSQL: the last failure's message */
    sqlite3_stmt *stmt[S_COUNT];
    int depth; /* db:transaction nesting: 1 is BEGIN IMMEDIATE, deeper ones are savepoints */
};

/* The outcome of s->res as the SQLite code the methods act on (SQLITE_DONE on success). */
int lstore_pg_outcome(struct store *s);

/* Run sql with n text parameters (NULL is SQL NULL) into s->res; SQLITE_DONE or a failure. */
int lstore_pg_run(struct store *s, const char *sql, int n, const char *const *values);

/* Run one or two commands of ours without parameters (PQexec): SQLITE_OK or a failure. */
int lstore_pg_command(struct store *s, const char *sql);

/* The PostgreSQL form of statement `which`, its parameters taken from Lua index first as lstore.c's
 * bind_args takes them (the same fmt letters); the result is in s->res. Never raises. */
int lstore_pg_exec(lua_State *L, struct store *s, int which, int first, const char *fmt);

/* [-0, +1, m] Row r of s->res as a table keyed by column name. */
void lstore_pg_push_row(lua_State *L, struct store *s, int r);

/* End the transaction level s->depth: SQLITE_OK or a failure (message in s->pg_err). */
int lstore_pg_tx_end(struct store *s, int commit);

/* lstore.c's helpers: the open store at idx (raises when closed); nil and an error table for a
 * failure rc; a non-empty string argument. */
struct store *lstore_check(lua_State *L, int idx);
int lstore_fail_rc(lua_State *L, struct store *s, int rc, const char *what);
const char *lstore_check_name(lua_State *L, int arg, const char *what);

/* db:try_lock(name), db:unlock(name): a PostgreSQL store's run locks (lstore_pg.c). */
int lstore_pg_try_lock(lua_State *L);
int lstore_pg_unlock(lua_State *L);

/* db:transaction(fn) on either backend (lstore_tx.c). */
int lstore_transaction(lua_State *L);

#endif
