/* lstore_tx.c: db:transaction on either backend of the "cmkflow.store" userdata (lstore.c):
 * BEGIN IMMEDIATE on SQLite, BEGIN and the store-wide advisory lock on PostgreSQL, savepoints
 * when nested. */
#include <lauxlib.h>
#include "store_pg.h"
#include "lstore_int.h"

/* Run one SQL command of ours on the store: SQLITE_OK or the failure (message kept). */
static int tx_exec(struct store *s, const char *sql)
{
    if (s->pg)
        return lstore_pg_command(s, sql);
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

/* End the transaction level s->depth (1: the outer BEGIN IMMEDIATE, else a savepoint). */
static int tx_end(struct store *s, int commit)
{
    int rc = SQLITE_OK;
    if (s->pg)
        return lstore_pg_tx_end(s, commit);
    if (commit)
        rc = sqlite3_exec(s->db, s->depth == 1 ? "COMMIT" : "RELEASE cmkflow_tx", NULL, NULL, NULL);
    if ((!commit || rc != SQLITE_OK) && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db,
                     s->depth == 1 ? "ROLLBACK" : "ROLLBACK TO cmkflow_tx; RELEASE cmkflow_tx",
                     NULL, NULL, NULL);
    s->depth--;
    return rc;
}

/* [-2, +n|2, e] db:transaction(fn) -> fn(db)'s results | nil, err when COMMIT fails.
 * BEGIN IMMEDIATE (a savepoint when nested); an error in fn rolls back and is raised again
 * unchanged. fn must not yield. On PostgreSQL, BEGIN and the store-wide advisory lock
 * (PGSTORE_TX_LOCK): transactions of one store run one at a time, as SQLite's do, so a
 * read-then-write in fn (is there a run for this customer? then create one) is never raced. */
int lstore_transaction(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    int rc = tx_exec(s, s->depth > 0 ? "SAVEPOINT cmkflow_tx"
                        : s->pg      ? "BEGIN; " PGSTORE_TX_LOCK
                                     : "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK)
        return lstore_fail_rc(L, s, rc, "transaction");
    s->depth++;
    lua_pushvalue(L, 1);
    int status = lua_pcall(L, 1, LUA_MULTRET, 0);
    if (!s->db && !s->pg) /* fn closed the store: it rolled back */
        return status == LUA_OK ? lua_gettop(L) - 1 : lua_error(L);
    if (status != LUA_OK) {
        tx_end(s, 0);
        return lua_error(L);
    }
    rc = tx_end(s, 1);
    if (rc != SQLITE_OK)
        return lstore_fail_rc(L, s, rc, "transaction commit");
    return lua_gettop(L) - 1;
}
