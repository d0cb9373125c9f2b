/* lstore.c: the "cmkflow.store" userdata - runs, their steps, approval gates and event log, for
 * durable and resumable workflow runs (`cmkflow runs`, `cmkflow resume`, `cmkflow approve`).
 *
 * Every statement is prepared once per connection (SQLITE_PREPARE_PERSISTENT) and owned by the
 * userdata, so a raise between sqlite3_step calls leaks nothing: the statement is reset on its
 * next use and finalized on __gc / __close. Text that may hold an error message (run and step
 * errors, event messages, approval notes) goes through redact_text before it is bound.
 *
 * The same userdata speaks to a PostgreSQL store (store_pg.h) when opened with a postgresql:// URL:
 * run_query, run_write and the transactions hand over to lstore_pg.c, whose outcomes are the
 * SQLite codes the methods below act on, so each method is written once. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <lauxlib.h>
#include "cmk.h"
#include "crypto.h"
#include "redact.h"
#include "store.h"
#include "store_pg.h"
#include "lstore_int.h"

/* ---- the "cmkflow.store" userdata --------------------------------------------------------- */

static const char *const statements[S_COUNT] = {
    [S_RUN_INSERT] = "INSERT INTO runs (id, workflow, params, status, created_at, updated_at, config)"
                     " VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?5)",
    [S_RUN_GET] = "SELECT " RUN_COLUMNS " FROM runs WHERE id = ?1",
    [S_RUN_LIST] = "SELECT " RUN_COLUMNS " FROM runs"
                   " WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2)"
                   " ORDER BY created_at DESC, rowid DESC LIMIT ?3",
    [S_RUN_UPDATE] = "UPDATE runs SET"
                     " status = CASE WHEN ?1 THEN ?2 ELSE status END,"
                     " error = CASE WHEN ?3 THEN ?4 ELSE error END,"
                     " outputs = CASE WHEN ?5 THEN ?6 ELSE outputs END,"
                     " updated_at = ?7 WHERE id = ?8",
    [S_STEP_BEGIN] = "INSERT INTO steps (run_id, name, status, attempts, started_at)"
                     " VALUES (?1, ?2, 'running', 1, ?3)"
                     " ON CONFLICT (run_id, name) DO UPDATE SET status = 'running',"
                     " attempts = attempts + 1, started_at = excluded.started_at,"
                     " finished_at = NULL, outputs = NULL, error = NULL"
                     " RETURNING attempts",
    /* a step never begun (skipped, or failed before it could start) is recorded with 0 attempts */
    [S_STEP_FINISH] = "INSERT INTO steps (run_id, name, status, attempts, finished_at, outputs, error)"
                      " VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)"
                      " ON CONFLICT (run_id, name) DO UPDATE SET status = excluded.status,"
                      " finished_at = excluded.finished_at, outputs = excluded.outputs,"
                      " error = excluded.error",
    [S_STEP_GET] = "SELECT " STEP_COLUMNS " FROM steps WHERE run_id = ?1 AND name = ?2",
    [S_STEP_LIST] = "SELECT " STEP_COLUMNS " FROM steps WHERE run_id = ?1"
                    " ORDER BY coalesce(started_at, finished_at), rowid",
    /* asking again keeps an earlier decision (a resumed run asks for the same gate again) */
    [S_APPROVAL_REQUEST] = "INSERT INTO approvals (run_id, gate, status, requested_at)"
                           " VALUES (?1, ?2, 'waiting', ?3)"
                           " ON CONFLICT (run_id, gate) DO UPDATE SET status = status"
                           " RETURNING status",
    [S_APPROVAL_DECIDE] = "UPDATE approvals SET status = ?3, decided_at = ?4, decided_by = ?5,"
                          " note = ?6 WHERE run_id = ?1 AND gate = ?2 AND (status = 'waiting' OR ?7)",
    [S_APPROVAL_GET] = "SELECT " APPROVAL_COLUMNS " FROM approvals WHERE run_id = ?1 AND gate = ?2",
    [S_APPROVAL_LIST] = "SELECT " APPROVAL_COLUMNS " FROM approvals WHERE run_id = ?1"
                        " ORDER BY requested_at, rowid",
    [S_EVENT_INSERT] = "INSERT INTO events (run_id, seq, time, kind, message)"
                       " SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4 FROM events"
                       " WHERE run_id = ?1 RETURNING seq",
    [S_EVENT_LIST] = "SELECT seq, time, kind, message FROM events WHERE run_id = ?1 AND seq > ?2"
                     " ORDER BY seq",
    [S_RUN_EXISTS] = "SELECT 1 FROM runs WHERE id = ?1",
    /* its steps, approvals and events go with it (ON DELETE CASCADE, foreign_keys = ON) */
    [S_RUN_DELETE] = "DELETE FROM runs WHERE id = ?1",
};

static const char *const run_statuses[] = {"pending",   "running", "waiting", "succeeded",
                                           "failed",    "interrupted", "cancelled", NULL};
static const char *const finish_statuses[] = {"succeeded", "failed", "skipped", NULL};
static const char *const decisions[] = {"approved", "rejected", NULL};

static void store_close_db(struct store *s)
{
    for (int i = 0; i < S_COUNT; i++) {
        sqlite3_finalize(s->stmt[i]);
        s->stmt[i] = NULL;
    }
    sqlite3_close_v2(s->db); /* rolls back an open transaction */
    s->db = NULL;
    PQclear(s->res);
    s->res = NULL;
    PQfinish(s->pg); /* the server rolls back an open transaction and drops the session's locks */
    s->pg = NULL;
    s->depth = 0;
}

/* Where the store is: its file, or its URL without the password. */
static const char *store_where(struct store *s)
{
    return s->pg ? s->where : sqlite3_db_filename(s->db, "main");
}

/* Rows the last write changed. */
static long long store_changes(struct store *s)
{
    return s->pg ? s->changes : sqlite3_changes(s->db);
}

/* [-0, +0, v] The open store at idx; raises when it is not one or was closed. */
struct store *lstore_check(lua_State *L, int idx)
{
    struct store *s = luaL_checkudata(L, idx, STORE_MT);
    if (!s->db && !s->pg)
        luaL_argerror(L, idx, "store is closed");
    return s;
}

/* [-0, +2, m] nil and an error table for a failure SQLite reported. */
int lstore_fail_rc(lua_State *L, struct store *s, int rc, const char *what)
{
    const char *path = store_where(s);
    const char *msg = lua_pushfstring(L, "store %s: %s: %s", path ? path : "?", what,
                                      s->pg ? s->pg_err : sqlite3_errmsg(s->db));
    int busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    struct cmk_error e = {.code = busy ? "StoreBusy" : "StoreError",
                          .message = msg,
                          .target = path,
                          .retryable = busy};
    return cmk_fail(L, &e);
}

/* [-0, +2, m] nil and an error table with a message of ours. */
static int store_fail_msg(lua_State *L, struct store *s, const char *code, const char *msg)
{
    struct cmk_error e = {.code = code, .message = msg, .target = store_where(s)};
    return cmk_fail(L, &e);
}

/* The cached statement, reset and unbound; NULL when it cannot be prepared (message in db). */
static sqlite3_stmt *stmt(struct store *s, int which, int *rc)
{
    sqlite3_stmt *st = s->stmt[which];
    if (!st) {
        *rc = sqlite3_prepare_v3(s->db, statements[which], -1, SQLITE_PREPARE_PERSISTENT,
                                 &s->stmt[which], NULL);
        if (*rc != SQLITE_OK)
            return NULL;
        return s->stmt[which];
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    *rc = SQLITE_OK;
    return st;
}

/* Bind a Lua string at Lua index idx without redaction; nil, false or none bind NULL. */
static int bind_lua_text(lua_State *L, sqlite3_stmt *st, int param, int idx)
{
    size_t len;
    const char *v = lua_tolstring(L, idx, &len);
    if (!v)
        return sqlite3_bind_null(st, param);
    return sqlite3_bind_text64(st, param, v, len, SQLITE_TRANSIENT, SQLITE_UTF8);
}

/* Bind the Lua string at idx with its secrets redacted (or NULL when nil or false). The redacted
 * copy is freed before returning; nothing in between can raise. */
static int bind_redacted(lua_State *L, sqlite3_stmt *st, int param, int idx)
{
    size_t len, out_len = 0;
    const char *v = lua_tolstring(L, idx, &len);
    if (!v)
        return sqlite3_bind_null(st, param);
    char *clean = redact_text_n(v, len, &out_len);
    if (!clean)
        return SQLITE_NOMEM;
    int rc = sqlite3_bind_text64(st, param, clean, out_len, SQLITE_TRANSIENT, SQLITE_UTF8);
    free(clean);
    return rc;
}

/* Bind ?1, ?2, ... of st in turn, one letter of fmt a parameter, from the Lua values at first,
 * first + 1, ...: 's' text (nil -> NULL), 'r' text with its secrets redacted, 'j' redacted JSON
 * text ('{}' when nil), 'i' an integer; 'f' 1 when the value is not nil, and 't' the time now,
 * take no value of their own. SQLITE_OK or the first failure. Nothing here raises. */
static int bind_args(lua_State *L, sqlite3_stmt *st, int first, const char *fmt)
{
    int rc = SQLITE_OK, idx = first;
    for (int param = 1; rc == SQLITE_OK && fmt[param - 1]; param++) {
        switch (fmt[param - 1]) {
        case 'f':
            rc = sqlite3_bind_int(st, param, !lua_isnoneornil(L, idx));
            continue;
        case 't':
            rc = sqlite3_bind_int64(st, param, (sqlite3_int64)time(NULL));
            continue;
        case 's':
            rc = bind_lua_text(L, st, param, idx);
            break;
        case 'r':
            rc = bind_redacted(L, st, param, idx);
            break;
        case 'j':
            rc = lua_isnoneornil(L, idx) ? sqlite3_bind_text(st, param, "{}", 2, SQLITE_STATIC)
                                         : bind_redacted(L, st, param, idx);
            break;
        case 'i':
            rc = sqlite3_bind_int64(st, param, (sqlite3_int64)lua_tointeger(L, idx));
            break;
        }
        idx++;
    }
    return rc;
}

/* The cached statement `which` bound by bind_args from Lua index first; NULL when it cannot be
 * prepared or bound (*rc set, message in db; a half-bound statement is reset). */
static sqlite3_stmt *bound_stmt(lua_State *L, struct store *s, int which, int first,
                                const char *fmt, int *rc)
{
    sqlite3_stmt *st = stmt(s, which, rc);
    if (!st)
        return NULL;
    *rc = bind_args(L, st, first, fmt);
    if (*rc != SQLITE_OK) {
        sqlite3_reset(st);
        return NULL;
    }
    return st;
}

/* [-0, +0, v] Raise unless the string at idx is JSON text (any value) or nil when optional. */
static void check_json(lua_State *L, int idx, const char *what, int optional)
{
    if (optional && lua_isnoneornil(L, idx))
        return;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "%s must be JSON text (a string), got %s", what, luaL_typename(L, idx));
    size_t len;
    const char *text = lua_tolstring(L, idx, &len);
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!j)
        luaL_error(L, "%s is not valid JSON: %s (line %d, column %d)", what, jerr.text, jerr.line,
                   jerr.column);
    json_decref(j);
}

/* [-0, +0, v] A non-empty string argument. */
const char *lstore_check_name(lua_State *L, int arg, const char *what)
{
    size_t len;
    const char *v = luaL_checklstring(L, arg, &len);
    if (len == 0)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must not be empty", what));
    return v;
}

/* [-0, +0, v] The index of the string at arg in list; raises naming the allowed values (field: the
 * value came from a table field, not argument arg). */
static int check_enum(lua_State *L, int arg, const char *what, const char *const list[], int field)
{
    const char *v = luaL_checkstring(L, arg);
    for (int i = 0; list[i]; i++)
        if (strcmp(v, list[i]) == 0)
            return i;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; list[i]; i++) {
        if (i)
            luaL_addstring(&b, ", ");
        luaL_addstring(&b, list[i]);
    }
    luaL_pushresult(&b);
    const char *msg = lua_pushfstring(L, "invalid %s '%s' (expected one of %s)", what, v,
                                      lua_tostring(L, -1));
    if (field) /* a table field has no argument number worth naming */
        return luaL_error(L, "%s", msg);
    return luaL_argerror(L, arg, msg);
}

/* [-0, +1, m] Column i of the current row: an integer, a string, or nil for NULL. */
static void push_column(lua_State *L, sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, i));
        break;
    case SQLITE_NULL:
        lua_pushnil(L);
        break;
    default:
        lua_pushlstring(L, (const char *)sqlite3_column_text(st, i),
                        (size_t)sqlite3_column_bytes(st, i));
        break;
    }
}

/* [-0, +1, m] The current row as a table keyed by column name; NULL columns are left out. */
static void push_row(lua_State *L, sqlite3_stmt *st)
{
    int n = sqlite3_column_count(st);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        push_column(L, st, i);
        lua_setfield(L, -2, sqlite3_column_name(st, i)); /* a nil leaves the field out */
    }
}

/* [-0, +1|2, m] Run the query `which`, bound by bind_args from Lua index first: one row -> table,
 * none -> nil; an array when many. */
static int run_query(lua_State *L, struct store *s, int which, int first, const char *fmt,
                     int many, const char *what)
{
    int rc, n = 0;
    if (s->pg) {
        rc = lstore_pg_exec(L, s, which, first, fmt);
        if (rc != SQLITE_DONE)
            return lstore_fail_rc(L, s, rc, what);
        int rows = PQntuples(s->res);
        if (!many && rows == 0) {
            lua_pushnil(L);
            return 1;
        }
        if (!many) {
            lstore_pg_push_row(L, s, 0);
            return 1;
        }
        lua_createtable(L, rows, 0);
        for (int r = 0; r < rows; r++) {
            lstore_pg_push_row(L, s, r);
            lua_rawseti(L, -2, r + 1);
        }
        return 1;
    }
    sqlite3_stmt *st = bound_stmt(L, s, which, first, fmt, &rc);
    if (!st)
        return lstore_fail_rc(L, s, rc, what);
    if (many)
        lua_newtable(L);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        push_row(L, st);
        if (!many) {
            sqlite3_reset(st);
            return 1;
        }
        lua_rawseti(L, -2, ++n);
    }
    if (rc != SQLITE_DONE) {
        if (many)
            lua_pop(L, 1);
        int r = lstore_fail_rc(L, s, rc, what);
        sqlite3_reset(st);
        return r;
    }
    sqlite3_reset(st);
    if (!many)
        lua_pushnil(L);
    return 1;
}

/* [-0, +0, m] Run the write `which`, bound by bind_args from Lua index first, to its end and
 * reset it. Each row it returns (RETURNING) replaces the value on top of the stack with its
 * column 0. SQLITE_DONE, or the failure code. */
static int run_write(lua_State *L, struct store *s, int which, int first, const char *fmt)
{
    int rc;
    if (s->pg) {
        rc = lstore_pg_exec(L, s, which, first, fmt);
        if (rc == SQLITE_DONE && PQntuples(s->res) > 0) {
            if (PQftype(s->res, 0) == 25) /* text: RETURNING status */
                lua_pushlstring(L, PQgetvalue(s->res, 0, 0), (size_t)PQgetlength(s->res, 0, 0));
            else /* RETURNING attempts / seq */
                lua_pushinteger(L, (lua_Integer)strtoll(PQgetvalue(s->res, 0, 0), NULL, 10));
            lua_replace(L, -2);
        }
        return rc;
    }
    sqlite3_stmt *st = bound_stmt(L, s, which, first, fmt, &rc);
    if (!st)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        push_column(L, st, 0);
        lua_replace(L, -2);
    }
    sqlite3_reset(st);
    return rc;
}

/* [-0, +2, m] nil, err "unknown run" when a foreign key failed, else the SQLite failure. */
static int write_failed(lua_State *L, struct store *s, int rc, const char *run_id,
                        const char *what)
{
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return store_fail_msg(L, s, "UnknownRun", lua_pushfstring(L, "unknown run %s", run_id));
    return lstore_fail_rc(L, s, rc, what);
}

/* [-1, +1|2, e] store.open(path) -> store | nil, err */
static int store_open(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    if (len == 0 || strlen(path) != len)
        luaL_argerror(L, 1, "path must be a non-empty file name");
    struct store *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, STORE_MT);
    char err[1024];
    int kind;
    if (pgstore_is_url(path)) {
        pgstore_describe(path, s->where, sizeof s->where);
        kind = pgstore_open(path, &s->pg, err, sizeof err);
    } else {
        kind = store_open_db(path, &s->db, err, sizeof err);
    }
    if (kind != STORE_OK) {
        static const char *const codes[] = {
            [STORE_E_OPEN] = "StoreOpenFailed", [STORE_E_NOTSTORE] = "NotAStore",
            [STORE_E_VERSION] = "StoreTooNew", [STORE_E_SQL] = "StoreError"};
        struct cmk_error e = {.code = codes[kind], .message = err,
                              .target = s->where[0] ? s->where : path};
        return cmk_fail(L, &e);
    }
    return 1;
}

/* [-0, +0, -] __gc / __close / db:close() */
static int store_gc(lua_State *L)
{
    struct store *s = luaL_checkudata(L, 1, STORE_MT);
    if (s->db || s->pg)
        store_close_db(s);
    return 0;
}

/* [-0, +1, m] "cmkflow.store(path)" */
static int store_tostring(lua_State *L)
{
    struct store *s = luaL_checkudata(L, 1, STORE_MT);
    if (!s->db && !s->pg)
        lua_pushliteral(L, "cmkflow.store(closed)");
    else
        lua_pushfstring(L, "cmkflow.store(%s)", store_where(s));
    return 1;
}

/* [-0, +1, m] db:path() -> the file name, or the URL without its password */
static int store_path(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    lua_pushstring(L, store_where(s));
    return 1;
}

/* [-0, +1, m] db:backend() -> "sqlite" | "postgresql" */
static int store_backend(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    lua_pushstring(L, s->pg ? "postgresql" : "sqlite");
    return 1;
}

/* [-2, +1|2, e] db:create_run{id?, workflow, params?, config?} -> id | nil, err */
static int store_create_run(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_getfield(L, 2, "id");       /* 3 */
    lua_getfield(L, 2, "workflow"); /* 4 */
    lua_getfield(L, 2, "params");   /* 5 */
    lua_getfield(L, 2, "config");   /* 6 */
    if (!lua_isnil(L, 3) && (lua_type(L, 3) != LUA_TSTRING || lua_rawlen(L, 3) == 0))
        luaL_error(L, "create_run: id must be a non-empty string");
    if (lua_type(L, 4) != LUA_TSTRING || lua_rawlen(L, 4) == 0)
        luaL_error(L, "create_run: workflow must be a non-empty string");
    check_json(L, 5, "create_run: params", 1);
    check_json(L, 6, "create_run: config", 1);
    if (lua_isnil(L, 3)) {
        char id[37];
        if (crypto_uuid4(id) != 0)
            luaL_error(L, "create_run: no randomness for a run id");
        lua_pushstring(L, id);
        lua_replace(L, 3);
    }
    /* params and config describe the run, never hold secrets: redaction is the safety net */
    int rc = run_write(L, s, S_RUN_INSERT, 3, "ssjtj");
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return store_fail_msg(L, s, "RunExists",
                              lua_pushfstring(L, "run %s already exists", lua_tostring(L, 3)));
    if (rc != SQLITE_DONE)
        return lstore_fail_rc(L, s, rc, "create_run");
    lua_pushvalue(L, 3);
    return 1;
}

/* The lookups that take only strings: db:run(id) -> run | nil, db:step(run_id, name) -> step | nil,
 * db:steps(run_id) -> array in start order, db:approval(run_id, gate) -> approval | nil,
 * db:approvals(run_id) -> array in request order (each | nil, err on an SQLite failure). */
static const struct lookup {
    const char *name;
    int which;
    const char *fmt; /* one 's' per string argument */
    int many;
} lookups[] = {
    {"run", S_RUN_GET, "s", 0},           {"step", S_STEP_GET, "ss", 0},
    {"steps", S_STEP_LIST, "s", 1},       {"approval", S_APPROVAL_GET, "ss", 0},
    {"approvals", S_APPROVAL_LIST, "s", 1},
};

/* [-(n+1), +1|2, e] One of the lookups above: its entry is upvalue 1 (a light userdata). */
static int store_lookup(lua_State *L)
{
    const struct lookup *q = lua_touserdata(L, lua_upvalueindex(1));
    struct store *s = lstore_check(L, 1);
    for (int i = 0; q->fmt[i]; i++)
        luaL_checkstring(L, 2 + i);
    return run_query(L, s, q->which, 2, q->fmt, q->many, q->name);
}

/* [-2, +1|2, e] db:runs{status?, workflow?, limit? = 50} -> array, newest first */
static int store_runs(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_getfield(L, 2, "status");   /* 3 */
    lua_getfield(L, 2, "workflow"); /* 4 */
    lua_getfield(L, 2, "limit");    /* 5 */
    if (!lua_isnil(L, 3))
        check_enum(L, 3, "run status", run_statuses, 1);
    if (!lua_isnil(L, 4) && lua_type(L, 4) != LUA_TSTRING)
        luaL_error(L, "runs: workflow must be a string");
    lua_Integer limit = 50;
    if (!lua_isnil(L, 5)) {
        int isint;
        limit = lua_tointegerx(L, 5, &isint);
        if (!isint || limit < 1)
            luaL_error(L, "runs: limit must be a positive integer");
    }
    lua_pushinteger(L, limit);
    lua_replace(L, 5);
    return run_query(L, s, S_RUN_LIST, 3, "ssi", 1, "runs");
}

/* [-3, +1|2, e] db:set_run(id, {status?, error? (false clears), outputs? (false clears)})
 * -> true | nil, err (unknown run) */
static int store_set_run(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    const char *id = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_getfield(L, 3, "status");  /* 4 */
    lua_getfield(L, 3, "error");   /* 5 */
    lua_getfield(L, 3, "outputs"); /* 6 */
    if (!lua_isnil(L, 4))
        check_enum(L, 4, "run status", run_statuses, 1);
    if (!lua_isnil(L, 5) && !lua_isstring(L, 5) && !(lua_isboolean(L, 5) && !lua_toboolean(L, 5)))
        luaL_error(L, "set_run: error must be a string, or false to clear it");
    if (!lua_isnil(L, 6) && !(lua_isboolean(L, 6) && !lua_toboolean(L, 6)))
        check_json(L, 6, "set_run: outputs", 0);
    lua_pushvalue(L, 2); /* 7 */
    /* each field: whether it is set, then its value (false binds NULL, which clears it) */
    int rc = run_write(L, s, S_RUN_UPDATE, 4, "fsfrfsts");
    if (rc != SQLITE_DONE)
        return lstore_fail_rc(L, s, rc, "set_run");
    if (store_changes(s) == 0)
        return store_fail_msg(L, s, "UnknownRun", lua_pushfstring(L, "unknown run %s", id));
    lua_pushboolean(L, 1);
    return 1;
}

/* [-2, +1|2, e] db:delete_run(id) -> true | false (no such run) | nil, err: the run and its
 * journal (`cmkflow runs prune`) */
static int store_delete_run(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    int rc = run_write(L, s, S_RUN_DELETE, 2, "s");
    if (rc != SQLITE_DONE)
        return lstore_fail_rc(L, s, rc, "delete_run");
    lua_pushboolean(L, store_changes(s) > 0);
    return 1;
}

/* [-3, +1|2, e] db:step_begin(run_id, name) -> attempts | nil, err (unknown run) */
static int store_step_begin(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    const char *run_id = luaL_checkstring(L, 2);
    lstore_check_name(L, 3, "step name");
    lua_settop(L, 3);
    lua_pushinteger(L, 0); /* replaced by RETURNING attempts */
    int rc = run_write(L, s, S_STEP_BEGIN, 2, "sst");
    if (rc != SQLITE_DONE)
        return write_failed(L, s, rc, run_id, "step_begin");
    return 1;
}

/* [-6, +1|2, e] db:step_finish(run_id, name, status, outputs_json?, error?) -> true | nil, err
 * Returns once the row is committed to the WAL (survives a SIGKILL; synchronous=NORMAL, store.c). */
static int store_step_finish(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    const char *run_id = luaL_checkstring(L, 2);
    lstore_check_name(L, 3, "step name");
    check_enum(L, 4, "step finish status", finish_statuses, 0);
    check_json(L, 5, "step_finish: outputs", 1);
    if (!lua_isnoneornil(L, 6))
        luaL_checkstring(L, 6);
    lua_settop(L, 6);
    int rc = run_write(L, s, S_STEP_FINISH, 2, "ssstsr");
    if (rc != SQLITE_DONE)
        return write_failed(L, s, rc, run_id, "step_finish");
    lua_pushboolean(L, 1);
    return 1;
}

/* [-3, +1|2, e] db:request_approval(run_id, gate) -> status ("waiting", or an earlier decision)
 * | nil, err (unknown run) */
static int store_request_approval(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    const char *run_id = luaL_checkstring(L, 2);
    lstore_check_name(L, 3, "gate");
    lua_settop(L, 3);
    lua_pushliteral(L, "waiting"); /* replaced by RETURNING status */
    int rc = run_write(L, s, S_APPROVAL_REQUEST, 2, "sst");
    if (rc != SQLITE_DONE)
        return write_failed(L, s, rc, run_id, "request_approval");
    return 1;
}

/* [-7, +1|2, e] db:decide(run_id, gate, "approved"|"rejected", by?, note?, redecide?)
 * -> true | nil, err (unknown run, unknown gate, already decided and not redecide) */
static int store_decide(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    const char *run_id = luaL_checkstring(L, 2);
    const char *gate = luaL_checkstring(L, 3);
    check_enum(L, 4, "decision", decisions, 0);
    if (!lua_isnoneornil(L, 5))
        luaL_checkstring(L, 5);
    if (!lua_isnoneornil(L, 6))
        luaL_checkstring(L, 6);
    lua_settop(L, 7);
    if (!lua_toboolean(L, 7)) { /* redecide: only true counts ('f' binds "not nil") */
        lua_pushnil(L);
        lua_replace(L, 7);
    }
    int rc = run_write(L, s, S_APPROVAL_DECIDE, 2, "ssstsrf");
    if (rc != SQLITE_DONE)
        return lstore_fail_rc(L, s, rc, "decide");
    if (store_changes(s) > 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    /* nothing waiting: say which of run, gate or decision is the reason */
    if (run_query(L, s, S_RUN_EXISTS, 2, "s", 0, "decide") == 2)
        return 2;
    if (lua_isnil(L, -1))
        return store_fail_msg(L, s, "UnknownRun", lua_pushfstring(L, "unknown run %s", run_id));
    if (run_query(L, s, S_APPROVAL_GET, 2, "ss", 0, "decide") == 2)
        return 2;
    if (lua_isnil(L, -1))
        return store_fail_msg(L, s, "UnknownGate",
                              lua_pushfstring(L, "run %s has no approval gate %s waiting", run_id,
                                              gate));
    lua_getfield(L, -1, "status");
    return store_fail_msg(L, s, "AlreadyDecided",
                          lua_pushfstring(L, "approval gate %s of run %s was already %s", gate,
                                          run_id, lua_tostring(L, -1)));
}

/* [-4, +1|2, e] db:event(run_id, kind, message) -> seq | nil, err (unknown run) */
static int store_event(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    const char *run_id = luaL_checkstring(L, 2);
    lstore_check_name(L, 3, "event kind");
    luaL_checkstring(L, 4);
    lua_settop(L, 4);
    lua_pushinteger(L, 0); /* replaced by RETURNING seq */
    int rc = run_write(L, s, S_EVENT_INSERT, 2, "stsr");
    if (rc != SQLITE_DONE)
        return write_failed(L, s, rc, run_id, "event");
    return 1;
}

/* [-3, +1|2, e] db:events(run_id, after_seq? = 0) -> array of {seq, time, kind, message} */
static int store_events(lua_State *L)
{
    struct store *s = lstore_check(L, 1);
    luaL_checkstring(L, 2);
    lua_Integer after = luaL_optinteger(L, 3, 0);
    lua_settop(L, 2);
    lua_pushinteger(L, after); /* 3 */
    return run_query(L, s, S_EVENT_LIST, 2, "si", 1, "events");
}

static void push_metatable(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"create_run", store_create_run},
        {"runs", store_runs},
        {"set_run", store_set_run},
        {"delete_run", store_delete_run},
        {"step_begin", store_step_begin},
        {"step_finish", store_step_finish},
        {"request_approval", store_request_approval},
        {"decide", store_decide},
        {"event", store_event},
        {"events", store_events},
        {"transaction", lstore_transaction},
        {"path", store_path},
        {"backend", store_backend},
        {"try_lock", lstore_pg_try_lock},
        {"unlock", lstore_pg_unlock},
        {"close", store_gc},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", store_gc}, {"__close", store_gc}, {"__tostring", store_tostring}, {NULL, NULL}};
    if (luaL_newmetatable(L, STORE_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        for (size_t i = 0; i < sizeof lookups / sizeof lookups[0]; i++) {
            lua_pushlightuserdata(L, (void *)&lookups[i]);
            lua_pushcclosure(L, store_lookup, 1);
            lua_setfield(L, -2, lookups[i].name);
        }
        lua_setfield(L, -2, "__index");
    }
}

/* [-0, +1, e] cmkflow.core.store: {open, schema_version} */
int luaopen_cmkflow_core_store(lua_State *L)
{
    static const luaL_Reg fns[] = {{"open", store_open}, {NULL, NULL}};
    push_metatable(L);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    lua_pushinteger(L, STORE_SCHEMA_VERSION);
    lua_setfield(L, -2, "schema_version");
    return 1;
}
