/* store.c: the schema is created and kept across reopens, constraints hold, errors are redacted
 * before they are stored, and a finished step survives the process being killed. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <lualib.h>
#include "check.h"
#include "cmk.h"
#include "store.h"

static char dir[64];

static const char *in_dir(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static long long int_of(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The first column of the first row as a malloc'd string (NULL when no row); caller frees. */
static char *text_of(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    char *v = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_text(st, 0))
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static int exec_rc(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* A Lua state with the store module as the global `store` and the scratch directory as `dir`. */
static lua_State *lua_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cmkflow.core.store", luaopen_cmkflow_core_store, 0);
    lua_setglobal(L, "store");
    lua_pushstring(L, dir);
    lua_setglobal(L, "dir");
    return L;
}

/* Run chunk in L; 1 on success, else the error goes to stderr. */
static int lua_do(lua_State *L, const char *chunk)
{
    if (luaL_dostring(L, chunk) == LUA_OK)
        return 1;
    fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    return 0;
}

static int lua_run(const char *chunk)
{
    lua_State *L = lua_state();
    int ok = lua_do(L, chunk);
    lua_close(L);
    return ok;
}

static void test_open_migrate_reopen(void)
{
    char err[512] = "";
    sqlite3 *db = NULL;
    const char *path = in_dir("a.db");
    CHECK_INT(store_open_db(path, &db, err, sizeof err), STORE_OK);
    CHECK(db != NULL);
    if (!db)
        return;
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    CHECK_INT(int_of(db, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    CHECK_INT(int_of(db, "PRAGMA application_id"), STORE_APPLICATION_ID);
    char *mode = text_of(db, "PRAGMA journal_mode");
    CHECK_STR(mode, "wal");
    free(mode);
    CHECK_INT(int_of(db, "PRAGMA synchronous"), 1); /* NORMAL: a commit survives SIGKILL (below) */
    CHECK_INT(int_of(db, "PRAGMA foreign_keys"), 1);
    CHECK_INT(int_of(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                         "('runs', 'steps', 'approvals', 'events')"),
              4);
    CHECK_INT(exec_rc(db, "INSERT INTO runs (id, workflow, created_at, updated_at) "
                          "VALUES ('r1', 'wf', 1, 1)"),
              SQLITE_OK);
    /* while open, the write-ahead log exists with the database's mode */
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", path);
    CHECK(stat(wal, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    sqlite3_close_v2(db);

    /* reopening migrates nothing and keeps the data */
    db = NULL;
    CHECK_INT(store_open_db(path, &db, err, sizeof err), STORE_OK);
    if (!db)
        return;
    CHECK_INT(int_of(db, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    char *wf = text_of(db, "SELECT workflow FROM runs WHERE id = 'r1'");
    CHECK_STR(wf, "wf");
    free(wf);
    CHECK_INT(int_of(db, "SELECT status = 'pending' FROM runs WHERE id = 'r1'"), 1);
    /* a schema from the future is refused, naming the file */
    CHECK_INT(exec_rc(db, "PRAGMA user_version = 99"), SQLITE_OK);
    sqlite3_close_v2(db);
    db = NULL;
    CHECK_INT(store_open_db(path, &db, err, sizeof err), STORE_E_VERSION);
    CHECK(db == NULL);
    CHECK(strstr(err, path) != NULL);
    CHECK(strstr(err, "99") != NULL);
}

static void test_open_failures(void)
{
    char err[512] = "";
    sqlite3 *db = NULL;
    CHECK_INT(store_open_db("/nonexistent/dir/x.db", &db, err, sizeof err), STORE_E_OPEN);
    CHECK(db == NULL);
    CHECK(strstr(err, "/nonexistent/dir/x.db") != NULL);
    CHECK(access("/nonexistent/dir", F_OK) != 0); /* the directory is not created */

    /* bytes that are not SQLite */
    const char *garbage = in_dir("garbage.db");
    FILE *f = fopen(garbage, "wb");
    CHECK(f != NULL);
    if (f) {
        for (int i = 0; i < 1000; i++)
            fputs("not a database ", f);
        fclose(f);
    }
    CHECK_INT(store_open_db(garbage, &db, err, sizeof err), STORE_E_NOTSTORE);
    CHECK(db == NULL);
    CHECK(strstr(err, garbage) != NULL);
    CHECK(strstr(err, "not a cmkflow store") != NULL);

    /* an SQLite database of another program is left alone */
    const char *foreign = in_dir("foreign.db");
    sqlite3 *other = NULL;
    CHECK_INT(sqlite3_open(foreign, &other), SQLITE_OK);
    CHECK_INT(exec_rc(other, "CREATE TABLE notes (body TEXT)"), SQLITE_OK);
    sqlite3_close(other);
    CHECK_INT(store_open_db(foreign, &db, err, sizeof err), STORE_E_NOTSTORE);
    CHECK(strstr(err, "not a cmkflow store") != NULL);
    CHECK(sqlite3_open(foreign, &other) == SQLITE_OK);
    CHECK_INT(int_of(other, "SELECT count(*) FROM sqlite_schema"), 1); /* no tables added */
    sqlite3_close(other);
}

static void test_constraints(void)
{
    char err[512] = "";
    sqlite3 *db = NULL;
    CHECK_INT(store_open_db(in_dir("c.db"), &db, err, sizeof err), STORE_OK);
    if (!db)
        return;
    CHECK_INT(exec_rc(db, "INSERT INTO runs (id, workflow, created_at, updated_at) "
                          "VALUES ('r1', 'wf', 1, 1)"),
              SQLITE_OK);
    /* status outside the allowed set */
    CHECK_INT(exec_rc(db, "INSERT INTO runs (id, workflow, status, created_at, updated_at) "
                          "VALUES ('r2', 'wf', 'done', 1, 1)"),
              SQLITE_CONSTRAINT_CHECK);
    CHECK_INT(exec_rc(db, "UPDATE runs SET status = 'paused' WHERE id = 'r1'"),
              SQLITE_CONSTRAINT_CHECK);
    /* duplicate run id */
    CHECK_INT(exec_rc(db, "INSERT INTO runs (id, workflow, created_at, updated_at) "
                          "VALUES ('r1', 'other', 2, 2)"),
              SQLITE_CONSTRAINT_PRIMARYKEY);
    /* a step, approval or event of a run that does not exist */
    CHECK_INT(exec_rc(db, "INSERT INTO steps (run_id, name, status) VALUES ('nope', 's', 'running')"),
              SQLITE_CONSTRAINT_FOREIGNKEY);
    CHECK_INT(exec_rc(db, "INSERT INTO approvals (run_id, gate, status, requested_at) "
                          "VALUES ('nope', 'g', 'waiting', 1)"),
              SQLITE_CONSTRAINT_FOREIGNKEY);
    CHECK_INT(exec_rc(db, "INSERT INTO events (run_id, seq, time, kind, message) "
                          "VALUES ('nope', 1, 1, 'k', 'm')"),
              SQLITE_CONSTRAINT_FOREIGNKEY);
    /* bad step and approval statuses */
    CHECK_INT(exec_rc(db, "INSERT INTO steps (run_id, name, status) VALUES ('r1', 's', 'waiting')"),
              SQLITE_CONSTRAINT_CHECK);
    CHECK_INT(exec_rc(db, "INSERT INTO approvals (run_id, gate, status, requested_at) "
                          "VALUES ('r1', 'g', 'maybe', 1)"),
              SQLITE_CONSTRAINT_CHECK);
    /* one row per (run, step) and per (run, seq); STRICT keeps integers integers */
    CHECK_INT(exec_rc(db, "INSERT INTO steps (run_id, name, status) VALUES ('r1', 's', 'running')"),
              SQLITE_OK);
    CHECK_INT(exec_rc(db, "INSERT INTO steps (run_id, name, status) VALUES ('r1', 's', 'failed')"),
              SQLITE_CONSTRAINT_PRIMARYKEY);
    CHECK_INT(exec_rc(db, "INSERT INTO events (run_id, seq, time, kind, message) "
                          "VALUES ('r1', 1, 1, 'k', 'm')"),
              SQLITE_OK);
    CHECK_INT(exec_rc(db, "INSERT INTO events (run_id, seq, time, kind, message) "
                          "VALUES ('r1', 1, 2, 'k', 'again')"),
              SQLITE_CONSTRAINT_PRIMARYKEY);
    CHECK_INT(exec_rc(db, "UPDATE steps SET attempts = 'many'"), SQLITE_CONSTRAINT_DATATYPE);
    sqlite3_close_v2(db);
}

static void test_errors_are_redacted_before_storing(void)
{
    CHECK(lua_run("local db = assert(store.open(dir .. '/r.db'))\n"
                  "local id = assert(db:create_run{id = 'r1', workflow = 'wf'})\n"
                  "assert(db:step_begin(id, 'token'))\n"
                  "assert(db:step_finish(id, 'token', 'failed', nil,"
                  "  'POST /token: client_secret=abc&scope=x'))\n"
                  "assert(db:set_run(id, {status = 'failed', error = 'body {\"access_token\":\"abc\"}'}))\n"
                  "assert(db:event(id, 'error', 'sent client_secret=abc'))\n"
                  "db:close()\n"));
    char err[512] = "";
    sqlite3 *db = NULL;
    CHECK_INT(store_open_db(in_dir("r.db"), &db, err, sizeof err), STORE_OK);
    if (!db)
        return;
    char *step_error = text_of(db, "SELECT error FROM steps WHERE run_id = 'r1' AND name = 'token'");
    CHECK_STR(step_error, "POST /token: client_secret=REDACTED&scope=x");
    free(step_error);
    char *run_error = text_of(db, "SELECT error FROM runs WHERE id = 'r1'");
    CHECK_STR(run_error, "body {\"access_token\":\"REDACTED\"}");
    free(run_error);
    char *event = text_of(db, "SELECT message FROM events WHERE run_id = 'r1'");
    CHECK_STR(event, "sent client_secret=REDACTED");
    free(event);
    /* nowhere in the file's tables */
    CHECK_INT(int_of(db, "SELECT (SELECT count(*) FROM steps WHERE error LIKE '%abc%')"
                         " + (SELECT count(*) FROM runs WHERE error LIKE '%abc%')"
                         " + (SELECT count(*) FROM events WHERE message LIKE '%abc%')"),
              0);
    sqlite3_close_v2(db);
}

/* The child writes, then leaves without closing anything (_exit: no lua_close, no sqlite3_close,
 * no checkpoint) or is killed outright; the parent must still find what step_finish recorded. */
static pid_t writer(const char *file, int kill_self)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    lua_State *L = lua_state();
    lua_pushstring(L, file);
    lua_setglobal(L, "file");
    int ok = lua_do(L, "db = assert(store.open(dir .. '/' .. file))\n"
                       "assert(db:create_run{id = 'r1', workflow = 'wf'})\n"
                       "assert(db:step_begin('r1', 'one'))\n"
                       "assert(db:step_finish('r1', 'one', 'succeeded', '{\"key_uri\":\"k1\"}'))\n"
                       "assert(db:step_begin('r1', 'two'))\n");
    if (ok && kill_self)
        raise(SIGKILL);
    _exit(ok ? 0 : 2);
}

static void check_survivor(const char *file)
{
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", in_dir(file));
    struct stat sb;
    /* never checkpointed: the rows exist only in the log, which the reopen must replay */
    CHECK(stat(wal, &sb) == 0 && sb.st_size > 0);
    char err[512] = "";
    sqlite3 *db = NULL;
    CHECK_INT(store_open_db(in_dir(file), &db, err, sizeof err), STORE_OK);
    if (!db)
        return;
    char *one = text_of(db, "SELECT status || ' ' || attempts || ' ' || outputs FROM steps"
                            " WHERE run_id = 'r1' AND name = 'one'");
    CHECK_STR(one, "succeeded 1 {\"key_uri\":\"k1\"}");
    free(one);
    char *two = text_of(db, "SELECT status FROM steps WHERE run_id = 'r1' AND name = 'two'");
    CHECK_STR(two, "running");
    free(two);
    sqlite3_close_v2(db);
}

static void test_finished_step_survives_exit_without_close(void)
{
    int status = 0;
    pid_t pid = writer("d.db", 0);
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    check_survivor("d.db");
}

static void test_finished_step_survives_sigkill(void)
{
    int status = 0;
    pid_t pid = writer("k.db", 1);
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    check_survivor("k.db");
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/cmkflow-store-XXXXXX");
    if (!mkdtemp(dir))
        return 2;
    RUN(test_open_migrate_reopen);
    RUN(test_open_failures);
    RUN(test_constraints);
    RUN(test_errors_are_redacted_before_storing);
    RUN(test_finished_step_survives_exit_without_close);
    RUN(test_finished_step_survives_sigkill);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    DONE();
}
