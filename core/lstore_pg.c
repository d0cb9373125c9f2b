/* lstore_pg.c: the "cmkflow.store" userdata on a PostgreSQL store (store_pg.h): lstore.c's
 * statements in PostgreSQL's dialect, sent with their parameters as text (PQexecParams: one round
 * trip each, nothing to finalize), rows pushed as lstore.c pushes SQLite's, and libpq's outcomes
 * mapped to the SQLite codes lstore.c's methods act on, so each method is written once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include "redact.h"
#include "lstore_int.h"

#define PG_MAX_PARAMS 8

/* The statements above in PostgreSQL's dialect: $n parameters, sent as text and cast where the
 * type cannot be inferred; `seq` orders rows as SQLite's rowid does (store_pg.c). */
static const char *const pg_statements[S_COUNT] = {
    [S_RUN_INSERT] = "INSERT INTO runs (id, workflow, params, status, created_at, updated_at, config)"
                     " VALUES ($1, $2, $3, 'pending', $4::bigint, $4::bigint, $5)",
    [S_RUN_GET] = "SELECT " RUN_COLUMNS " FROM runs WHERE id = $1",
    [S_RUN_LIST] = "SELECT " RUN_COLUMNS " FROM runs"
                   " WHERE ($1::text IS NULL OR status = $1::text)"
                   " AND ($2::text IS NULL OR workflow = $2::text)"
                   " ORDER BY created_at DESC, seq DESC LIMIT $3::bigint",
    [S_RUN_UPDATE] = "UPDATE runs SET"
                     " status = CASE WHEN $1::int <> 0 THEN $2::text ELSE status END,"
                     " error = CASE WHEN $3::int <> 0 THEN $4::text ELSE error END,"
                     " outputs = CASE WHEN $5::int <> 0 THEN $6::text ELSE outputs END,"
                     " updated_at = $7::bigint WHERE id = $8",
    [S_STEP_BEGIN] = "INSERT INTO steps (run_id, name, status, attempts, started_at)"
                     " VALUES ($1, $2, 'running', 1, $3::bigint)"
                     " ON CONFLICT (run_id, name) DO UPDATE SET status = 'running',"
                     " attempts = steps.attempts + 1, started_at = excluded.started_at,"
                     " finished_at = NULL, outputs = NULL, error = NULL"
                     " RETURNING attempts",
    [S_STEP_FINISH] = "INSERT INTO steps (run_id, name, status, attempts, finished_at, outputs, error)"
                      " VALUES ($1, $2, $3, 0, $4::bigint, $5, $6)"
                      " ON CONFLICT (run_id, name) DO UPDATE SET status = excluded.status,"
                      " finished_at = excluded.finished_at, outputs = excluded.outputs,"
                      " error = excluded.error",
    [S_STEP_GET] = "SELECT " STEP_COLUMNS " FROM steps WHERE run_id = $1 AND name = $2",
    [S_STEP_LIST] = "SELECT " STEP_COLUMNS " FROM steps WHERE run_id = $1"
                    " ORDER BY coalesce(started_at, finished_at), seq",
    [S_APPROVAL_REQUEST] = "INSERT INTO approvals (run_id, gate, status, requested_at)"
                           " VALUES ($1, $2, 'waiting', $3::bigint)"
                           " ON CONFLICT (run_id, gate) DO UPDATE SET status = approvals.status"
                           " RETURNING status",
    [S_APPROVAL_DECIDE] = "UPDATE approvals SET status = $3, decided_at = $4::bigint, decided_by = $5,"
                          " note = $6 WHERE run_id = $1 AND gate = $2"
                          " AND (status = 'waiting' OR $7::int <> 0)",
    [S_APPROVAL_GET] = "SELECT " APPROVAL_COLUMNS " FROM approvals WHERE run_id = $1 AND gate = $2",
    [S_APPROVAL_LIST] = "SELECT " APPROVAL_COLUMNS " FROM approvals WHERE run_id = $1"
                        " ORDER BY requested_at, seq",
    [S_EVENT_INSERT] = "INSERT INTO events (run_id, seq, time, kind, message)"
                       " SELECT $1, coalesce(max(seq), 0) + 1, $2::bigint, $3, $4 FROM events"
                       " WHERE run_id = $1 RETURNING seq",
    [S_EVENT_LIST] = "SELECT seq, time, kind, message FROM events WHERE run_id = $1"
                     " AND seq > $2::bigint ORDER BY seq",
    [S_RUN_EXISTS] = "SELECT 1 FROM runs WHERE id = $1",
    /* its steps, approvals and events go with it (ON DELETE CASCADE) */
    [S_RUN_DELETE] = "DELETE FROM runs WHERE id = $1",
};

/* The outcome of s->res as the SQLite code the methods act on (SQLITE_DONE on success), keeping
 * the server's message in s->pg_err: a foreign or unique key, a serialization failure or
 * deadlock (busy, retryable), a lost connection (SQLSTATE absent). */
int lstore_pg_outcome(struct store *s)
{
    ExecStatusType st = PQresultStatus(s->res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        s->changes = strtoll(PQcmdTuples(s->res), NULL, 10);
        return SQLITE_DONE;
    }
    snprintf(s->pg_err, sizeof s->pg_err, "%s",
             s->res ? PQresultErrorMessage(s->res) : PQerrorMessage(s->pg));
    s->pg_err[strcspn(s->pg_err, "\n")] = '\0';
    const char *state = s->res ? PQresultErrorField(s->res, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return SQLITE_IOERR;
    if (strcmp(state, "23503") == 0)
        return SQLITE_CONSTRAINT_FOREIGNKEY;
    if (strcmp(state, "23505") == 0)
        return SQLITE_CONSTRAINT_PRIMARYKEY;
    if (strncmp(state, "40", 2) == 0 || strcmp(state, "55P03") == 0)
        return SQLITE_BUSY;
    return SQLITE_ERROR;
}

/* Make text of n bytes acceptable to a UTF-8 database, in place: PostgreSQL refuses a NUL and an
 * invalid UTF-8 sequence (SQLite stores any bytes), and an error message may quote a response body
 * in another encoding. Each offending byte becomes '?'. Lead bytes and the ranges of their second
 * byte as RFC 3629 section 4 gives them: no overlong forms, no surrogates, nothing above U+10FFFF. */
static void utf8_scrub(char *text, size_t n)
{
    unsigned char *p = (unsigned char *)text;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                                : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
        unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        int ok = len > 0 && i + len <= n && c != 0;
        for (size_t k = 1; ok && k < len; k++)
            ok = k == 1 ? p[i + k] >= lo && p[i + k] <= hi : p[i + k] >= 0x80 && p[i + k] <= 0xbf;
        if (!ok) {
            p[i++] = '?';
            continue;
        }
        i += len;
    }
}

/* Run sql with n text parameters (NULL is SQL NULL) into s->res; SQLITE_DONE or a failure. */
int lstore_pg_run(struct store *s, const char *sql, int n, const char *const *values)
{
    PQclear(s->res);
    s->res = PQexecParams(s->pg, sql, n, NULL, values, NULL, NULL, 0);
    return lstore_pg_outcome(s);
}

/* pg_statements[which] with its parameters taken from Lua as bind_args takes them (the same fmt
 * letters), sent as text; the result is in s->res. Nothing here raises: the redacted copies are
 * freed before returning. */
int lstore_pg_exec(lua_State *L, struct store *s, int which, int first, const char *fmt)
{
    const char *values[PG_MAX_PARAMS];
    char nums[PG_MAX_PARAMS][24];
    char *owned[PG_MAX_PARAMS] = {NULL};
    int n = 0, idx = first, rc = SQLITE_DONE;
    for (; fmt[n] && n < PG_MAX_PARAMS; n++) {
        size_t len, out_len;
        const char *v;
        switch (fmt[n]) {
        case 'f':
            values[n] = lua_isnoneornil(L, idx) ? "0" : "1";
            continue;
        case 't':
            snprintf(nums[n], sizeof nums[n], "%lld", (long long)time(NULL));
            values[n] = nums[n];
            continue;
        case 's':
            values[n] = lua_tostring(L, idx);
            break;
        case 'r':
        case 'j':
            v = lua_tolstring(L, idx, &len);
            if (!v) {
                values[n] = fmt[n] == 'j' ? "{}" : NULL;
                break;
            }
            owned[n] = redact_text_n(v, len, &out_len);
            values[n] = owned[n];
            if (!owned[n])
                rc = SQLITE_NOMEM;
            else
                utf8_scrub(owned[n], out_len);
            break;
        case 'i':
            snprintf(nums[n], sizeof nums[n], "%lld", (long long)lua_tointeger(L, idx));
            values[n] = nums[n];
            break;
        }
        idx++;
    }
    if (rc == SQLITE_DONE)
        rc = lstore_pg_run(s, pg_statements[which], n, values);
    else
        snprintf(s->pg_err, sizeof s->pg_err, "out of memory");
    for (int i = 0; i < n; i++)
        free(owned[i]);
    return rc;
}

/* [-0, +1, m] Row r of s->res as a table keyed by column name (integers as integers); NULL
 * columns are left out. */
void lstore_pg_push_row(lua_State *L, struct store *s, int r)
{
    int n = PQnfields(s->res);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        if (PQgetisnull(s->res, r, i))
            continue;
        Oid type = PQftype(s->res, i);
        if (type == 20 || type == 21 || type == 23) /* int8, int2, int4 (pg_type.dat) */
            lua_pushinteger(L, (lua_Integer)strtoll(PQgetvalue(s->res, r, i), NULL, 10));
        else
            lua_pushlstring(L, PQgetvalue(s->res, r, i), (size_t)PQgetlength(s->res, r, i));
        lua_setfield(L, -2, PQfname(s->res, i));
    }
}

int lstore_pg_command(struct store *s, const char *sql)
{
    PQclear(s->res);
    s->res = PQexec(s->pg, sql);
    int rc = lstore_pg_outcome(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* PostgreSQL: end the transaction level s->depth. COMMIT of a transaction a failed statement
 * aborted answers ROLLBACK, which is a failure here. */
int lstore_pg_tx_end(struct store *s, int commit)
{
    int rc = SQLITE_OK;
    if (commit) {
        rc = lstore_pg_command(s, s->depth == 1 ? "COMMIT" : "RELEASE cmkflow_tx");
        if (rc == SQLITE_OK && s->depth == 1 && strcmp(PQcmdStatus(s->res), "COMMIT") != 0) {
            snprintf(s->pg_err, sizeof s->pg_err, "a statement failed: the transaction rolled back");
            rc = SQLITE_ABORT;
        }
    }
    if ((!commit || rc != SQLITE_OK) && PQtransactionStatus(s->pg) != PQTRANS_IDLE) {
        char keep[sizeof s->pg_err];
        memcpy(keep, s->pg_err, sizeof keep);
        lstore_pg_command(s, s->depth == 1 ? "ROLLBACK" : "ROLLBACK TO cmkflow_tx; RELEASE cmkflow_tx");
        memcpy(s->pg_err, keep, sizeof keep);
    }
    s->depth--;
    return rc;
}

/* ---- run locks (advisory locks: a PostgreSQL store only) ---------------------------------- */

/* A run's advisory lock (store_pg.h): the name's hash in the class of cmkflow's locks. */
#define PG_LOCK_KEY "1129139014, hashtext($1) & 2147483647"

/* [-0, +0, v] Run sql (its one parameter: the lock name at 2) on the PostgreSQL store at 1, which
 * *out is set to; raises for an SQLite store, whose runs are locked by lock files (app/state.lua).
 * SQLITE_DONE or the failure. */
static int lock_query(lua_State *L, const char *what, const char *sql, struct store **out)
{
    struct store *s = *out = lstore_check(L, 1);
    const char *name = lstore_check_name(L, 2, "lock name");
    if (!s->pg)
        return luaL_error(L, "%s: an SQLite store locks runs with lock files (app/state.lua)", what);
    return lstore_pg_run(s, sql, 1, &name);
}

/* [-2, +1|2, e] db:try_lock(name) -> true | false, holder | nil, err. A PostgreSQL store only:
 * a session advisory lock on this connection, held until db:unlock(name) or the connection ends
 * (the process exits or dies: the server drops it), as an flock(2) is on SQLite's side (the lock
 * files of app/state.lua). holder names the process that holds it (its application_name). */
int lstore_pg_try_lock(lua_State *L)
{
    struct store *s;
    int rc = lock_query(L, "try_lock", "SELECT pg_try_advisory_lock(" PG_LOCK_KEY ")", &s);
    const char *name = lua_tostring(L, 2);
    if (rc != SQLITE_DONE)
        return lstore_fail_rc(L, s, rc, "try_lock");
    if (strcmp(PQgetvalue(s->res, 0, 0), "t") == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    rc = lstore_pg_run(s,
                "SELECT a.application_name || ', connected since ' ||"
                " to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
                " AND l.classid = 1129139014 AND l.objid = (hashtext($1) & 2147483647)::bigint::oid"
                " LIMIT 1",
                1, &name);
    lua_pushboolean(L, 0);
    if (rc == SQLITE_DONE && PQntuples(s->res) > 0)
        lua_pushstring(L, PQgetvalue(s->res, 0, 0));
    else
        lua_pushliteral(L, "");
    return 2;
}

/* [-2, +1|2, e] db:unlock(name) -> true (whether it was held or not) | nil, err */
int lstore_pg_unlock(lua_State *L)
{
    struct store *s;
    int rc = lock_query(L, "unlock", "SELECT pg_advisory_unlock(" PG_LOCK_KEY ")", &s);
    if (rc != SQLITE_DONE)
        return lstore_fail_rc(L, s, rc, "unlock");
    lua_pushboolean(L, 1);
    return 1;
}
