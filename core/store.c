/* store.c: the SQLite run store's file - opening it (mode 0600, WAL, synchronous=NORMAL) and its
 * schema migrations, checked against application_id / user_version (store.h). The Lua userdata
 * over it is lstore.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "store.h"

/* ---- schema --------------------------------------------------------------------------- */

/* JSON columns are checked in C (jansson) before they are bound: json_valid() in a CHECK is not
 * allowed with trusted_schema off, which we keep off so a tampered file cannot run its SQL.
 * migrations[v] brings a store from user_version v to v + 1; each ends by recording it. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
    /* v1 */
    "CREATE TABLE runs ("
    "  id TEXT PRIMARY KEY NOT NULL CHECK (length(id) > 0),"
    "  workflow TEXT NOT NULL,"
    "  params TEXT NOT NULL DEFAULT '{}',"
    "  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN"
    "    ('pending','running','waiting','succeeded','failed','interrupted')),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  error TEXT,"
    "  outputs TEXT,"
    "  config TEXT NOT NULL DEFAULT '{}'"
    ") STRICT;"
    "CREATE INDEX runs_by_created ON runs (created_at DESC);"
    "CREATE TABLE steps ("
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL CHECK (length(name) > 0),"
    "  status TEXT NOT NULL CHECK (status IN ('running','succeeded','failed','skipped')),"
    "  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"
    "  started_at INTEGER,"
    "  finished_at INTEGER,"
    "  outputs TEXT,"
    "  error TEXT,"
    "  PRIMARY KEY (run_id, name)"
    ") STRICT;"
    "CREATE TABLE approvals ("
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    "  gate TEXT NOT NULL CHECK (length(gate) > 0),"
    "  status TEXT NOT NULL CHECK (status IN ('waiting','approved','rejected')),"
    "  requested_at INTEGER NOT NULL,"
    "  decided_at INTEGER,"
    "  decided_by TEXT,"
    "  note TEXT,"
    "  PRIMARY KEY (run_id, gate)"
    ") STRICT;"
    "CREATE TABLE events ("
    "  run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL CHECK (seq > 0),"
    "  time INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  PRIMARY KEY (run_id, seq)"
    ") STRICT;"
    "PRAGMA application_id = 1129139014;" /* STORE_APPLICATION_ID */
    "PRAGMA user_version = 1;",
    /* v2: runs may be 'cancelled' (cmkflow runs cancel). SQLite cannot change a CHECK in place and
     * dropping runs would cascade to its children, so all four tables are rebuilt: the copies
     * first, then the old children, then the old runs (no child refers to it by then); renaming
     * runs_v2 to runs rewrites the copies' REFERENCES (https://www.sqlite.org/lang_altertable.html). */
    "CREATE TABLE runs_v2 ("
    "  id TEXT PRIMARY KEY NOT NULL CHECK (length(id) > 0),"
    "  workflow TEXT NOT NULL,"
    "  params TEXT NOT NULL DEFAULT '{}',"
    "  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN"
    "    ('pending','running','waiting','succeeded','failed','interrupted','cancelled')),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  error TEXT,"
    "  outputs TEXT,"
    "  config TEXT NOT NULL DEFAULT '{}'"
    ") STRICT;"
    "INSERT INTO runs_v2 SELECT id, workflow, params, status, created_at, updated_at, error, outputs,"
    "  config FROM runs ORDER BY rowid;"
    "CREATE TABLE steps_v2 ("
    "  run_id TEXT NOT NULL REFERENCES runs_v2 (id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL CHECK (length(name) > 0),"
    "  status TEXT NOT NULL CHECK (status IN ('running','succeeded','failed','skipped')),"
    "  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"
    "  started_at INTEGER,"
    "  finished_at INTEGER,"
    "  outputs TEXT,"
    "  error TEXT,"
    "  PRIMARY KEY (run_id, name)"
    ") STRICT;"
    "INSERT INTO steps_v2 SELECT run_id, name, status, attempts, started_at, finished_at, outputs,"
    "  error FROM steps ORDER BY rowid;"
    "CREATE TABLE approvals_v2 ("
    "  run_id TEXT NOT NULL REFERENCES runs_v2 (id) ON DELETE CASCADE,"
    "  gate TEXT NOT NULL CHECK (length(gate) > 0),"
    "  status TEXT NOT NULL CHECK (status IN ('waiting','approved','rejected')),"
    "  requested_at INTEGER NOT NULL,"
    "  decided_at INTEGER,"
    "  decided_by TEXT,"
    "  note TEXT,"
    "  PRIMARY KEY (run_id, gate)"
    ") STRICT;"
    "INSERT INTO approvals_v2 SELECT run_id, gate, status, requested_at, decided_at, decided_by,"
    "  note FROM approvals ORDER BY rowid;"
    "CREATE TABLE events_v2 ("
    "  run_id TEXT NOT NULL REFERENCES runs_v2 (id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL CHECK (seq > 0),"
    "  time INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  PRIMARY KEY (run_id, seq)"
    ") STRICT;"
    "INSERT INTO events_v2 SELECT run_id, seq, time, kind, message FROM events ORDER BY rowid;"
    "DROP TABLE events; DROP TABLE approvals; DROP TABLE steps; DROP TABLE runs;"
    "ALTER TABLE runs_v2 RENAME TO runs;"
    "ALTER TABLE steps_v2 RENAME TO steps;"
    "ALTER TABLE approvals_v2 RENAME TO approvals;"
    "ALTER TABLE events_v2 RENAME TO events;"
    "CREATE INDEX runs_by_created ON runs (created_at DESC);"
    "PRAGMA user_version = 2;",
};

_Static_assert(STORE_APPLICATION_ID == 1129139014, "the v1 migration writes this id literally");

/* One integer from a single-row query with no parameters; -1 with the SQLite code in *rc. */
static long long query_int(sqlite3 *db, const char *sql, int *rc)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    *rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (*rc == SQLITE_OK) {
        *rc = sqlite3_step(st);
        if (*rc == SQLITE_ROW) {
            v = sqlite3_column_int64(st, 0);
            *rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return v;
}

static int is_notadb(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT;
}

int store_migrate(sqlite3 *db, char *err, size_t errlen)
{
    const char *path = sqlite3_db_filename(db, "main");
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto sql_error;
    /* read again under the write lock: another process may have migrated meanwhile */
    long long version = query_int(db, "PRAGMA user_version", &rc);
    if (rc != SQLITE_OK)
        goto rollback;
    if (version > STORE_SCHEMA_VERSION) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        snprintf(err, errlen,
                 "store %s has schema version %lld; this cmkflow understands up to %d "
                 "(upgrade cmkflow)",
                 path, version, STORE_SCHEMA_VERSION);
        return STORE_E_VERSION;
    }
    for (long long v = version; v < STORE_SCHEMA_VERSION; v++) {
        rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            goto rollback;
    }
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto rollback;
    return STORE_OK;
rollback:
    snprintf(err, errlen, "store %s: migrating the schema: %s", path, sqlite3_errmsg(db));
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return is_notadb(rc) ? STORE_E_NOTSTORE : STORE_E_SQL;
sql_error:
    snprintf(err, errlen, "store %s: migrating the schema: %s", path, sqlite3_errmsg(db));
    return is_notadb(rc) ? STORE_E_NOTSTORE : STORE_E_SQL;
}

static int open_once(const char *path, sqlite3 **out, char *err, size_t errlen, int *busy)
{
    sqlite3 *db = NULL;
    int kind = STORE_E_SQL, rc;
    *out = NULL;
    /* Create the file ourselves: SQLite would use 0644 and then give the -wal/-shm files the
     * same mode. It never creates the directory. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open store %s: %s", path, strerror(errno));
        return STORE_E_OPEN;
    }
    close(fd);
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open store %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return STORE_E_OPEN;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);

    /* The first read of the header: garbage fails here with "file is not a database". */
    long long app_id = query_int(db, "PRAGMA application_id", &rc);
    if (rc != SQLITE_OK)
        goto fail;
    long long objects = query_int(db, "SELECT count(*) FROM sqlite_schema", &rc);
    if (rc != SQLITE_OK)
        goto fail;
    if (app_id != STORE_APPLICATION_ID && (app_id != 0 || objects > 0)) {
        snprintf(err, errlen, "store %s: not a cmkflow store (an SQLite database of another program)",
                 path);
        sqlite3_close_v2(db);
        return STORE_E_NOTSTORE;
    }
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        int wal = mode && strcmp(mode, "wal") == 0;
        sqlite3_finalize(st);
        if (!wal) {
            snprintf(err, errlen, "store %s: cannot use write-ahead logging on this file system",
                     path);
            sqlite3_close_v2(db);
            return STORE_E_SQL;
        }
        rc = SQLITE_OK;
    } else {
        sqlite3_finalize(st);
        goto fail;
    }
    /* NORMAL in WAL mode: a commit is in the WAL (the OS's page cache) when step_finish returns,
     * so a finished step survives a SIGKILL of this process; the WAL is synced at checkpoints,
     * and the last connection's close checkpoints, so a command that ends normally leaves
     * everything synced. Only a power loss in the middle of a run can lose its last commits
     * (never corrupt the file): those steps are idempotent and a resume runs them again.
     * FULL synced the WAL at every commit: 36 fdatasyncs per onboard (docs/performance.md,
     * https://www.sqlite.org/pragma.html#pragma_synchronous). */
    rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    kind = store_migrate(db, err, errlen);
    if (kind != STORE_OK) {
        sqlite3_close_v2(db);
        return kind;
    }
    *out = db;
    return STORE_OK;
fail:
    *busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    if (is_notadb(rc)) {
        snprintf(err, errlen, "store %s: not a cmkflow store (%s)", path, sqlite3_errmsg(db));
        kind = STORE_E_NOTSTORE;
    } else {
        snprintf(err, errlen, "cannot open store %s: %s", path, sqlite3_errmsg(db));
        kind = (rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_PERM ||
                       (rc & 0xff) == SQLITE_READONLY
                   ? STORE_E_OPEN
                   : STORE_E_SQL;
    }
    sqlite3_close_v2(db);
    return kind;
}

/* Two processes (or two hosts of one process) opening a new store at once can meet SQLite's
 * "database is locked" where its busy handler is not consulted (the switch to WAL, the first
 * schema read): open again, a bounded number of times (about 5 s in all). */
int store_open_db(const char *path, sqlite3 **out, char *err, size_t errlen)
{
    int kind = STORE_E_SQL;
    for (int attempt = 0; attempt < 100; attempt++) {
        int busy = 0;
        kind = open_once(path, out, err, errlen, &busy);
        if (kind == STORE_OK || !busy)
            return kind;
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return kind;
}
