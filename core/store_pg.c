/* store_pg.c: the run store's PostgreSQL backend - connecting, the schema and its version
 * (store_pg.h). The statements a store runs are lstore.c's, beside SQLite's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "store.h"
#include "store_pg.h"

/* The schema of STORE_SCHEMA_VERSION, as SQLite's after its migrations (store.c): the same tables,
 * columns and checks; `seq` gives rows the insertion order SQLite's rowid gives. cmkflow_store
 * records the application id and version, as SQLite's header does. A later version adds an
 * entry to a migrations table like store.c's. */
static const char schema[] =
    "CREATE TABLE cmkflow_store ("
    "  application_id integer NOT NULL, schema_version integer NOT NULL);"
    "CREATE TABLE runs ("
    "  seq bigint GENERATED ALWAYS AS IDENTITY,"
    "  id text PRIMARY KEY CHECK (length(id) > 0),"
    "  workflow text NOT NULL,"
    "  params text NOT NULL DEFAULT '{}',"
    "  status text NOT NULL DEFAULT 'pending' CHECK (status IN"
    "    ('pending','running','waiting','succeeded','failed','interrupted','cancelled')),"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL,"
    "  error text,"
    "  outputs text,"
    "  config text NOT NULL DEFAULT '{}');"
    "CREATE INDEX runs_by_created ON runs (created_at DESC, seq DESC);"
    "CREATE TABLE steps ("
    "  seq bigint GENERATED ALWAYS AS IDENTITY,"
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    "  name text NOT NULL CHECK (length(name) > 0),"
    "  status text NOT NULL CHECK (status IN ('running','succeeded','failed','skipped')),"
    "  attempts bigint NOT NULL DEFAULT 0 CHECK (attempts >= 0),"
    "  started_at bigint,"
    "  finished_at bigint,"
    "  outputs text,"
    "  error text,"
    "  PRIMARY KEY (run_id, name));"
    "CREATE TABLE approvals ("
    "  seq bigint GENERATED ALWAYS AS IDENTITY,"
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    "  gate text NOT NULL CHECK (length(gate) > 0),"
    "  status text NOT NULL CHECK (status IN ('waiting','approved','rejected')),"
    "  requested_at bigint NOT NULL,"
    "  decided_at bigint,"
    "  decided_by text,"
    "  note text,"
    "  PRIMARY KEY (run_id, gate));"
    "CREATE TABLE events ("
    "  run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    "  seq bigint NOT NULL CHECK (seq > 0),"
    "  time bigint NOT NULL,"
    "  kind text NOT NULL,"
    "  message text NOT NULL,"
    "  PRIMARY KEY (run_id, seq));";

int pgstore_is_url(const char *name)
{
    return strncmp(name, "postgresql://", 13) == 0 || strncmp(name, "postgres://", 11) == 0;
}

void pgstore_describe(const char *url, char *out, size_t outlen)
{
    const char *rest = strstr(url, "://");
    rest = rest ? rest + 3 : url;
    size_t scheme = (size_t)(rest - url);
    /* user[:password]@ ends at the last '@' before the path */
    size_t auth_end = strcspn(rest, "/?");
    const char *at = NULL;
    for (const char *p = rest; p < rest + auth_end; p++)
        if (*p == '@')
            at = p;
    const char *host = at ? at + 1 : rest;
    size_t user_len = at ? strcspn(rest, ":@") : 0;
    size_t tail = strcspn(host, "?");
    snprintf(out, outlen, "%.*s%.*s%s%.*s", (int)scheme, url, (int)user_len, rest, at ? "@" : "",
             (int)tail, host);
}

/* One integer from a one-row result of sql (no parameters); -1 when there is no row or a NULL,
 * -2 on failure (message in conn). */
static long long query_int(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    long long v = -2;
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        v = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                                                          : -1;
    PQclear(res);
    return v;
}

static int exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static void no_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Create or check the schema inside one transaction holding the store-wide lock, so that two
 * processes opening a new store at once create it once. */
static int pgstore_migrate(PGconn *conn, const char *where, char *err, size_t errlen)
{
    int kind = STORE_E_SQL;
    if (!exec_ok(conn, "BEGIN") || !exec_ok(conn, PGSTORE_TX_LOCK))
        goto fail;
    long long ours = query_int(conn, "SELECT (to_regclass('cmkflow_store') IS NOT NULL)::int");
    if (ours < 0)
        goto fail;
    if (!ours) {
        if (query_int(conn, "SELECT (to_regclass('runs') IS NOT NULL)::int") != 0) {
            snprintf(err, errlen,
                     "store %s: not a cmkflow store (it has a table 'runs' of another program)",
                     where);
            exec_ok(conn, "ROLLBACK");
            return STORE_E_NOTSTORE;
        }
        char record[128];
        snprintf(record, sizeof record, "INSERT INTO cmkflow_store VALUES (%d, %d)",
                 STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
        if (!exec_ok(conn, schema) || !exec_ok(conn, record))
            goto fail;
    } else {
        long long app = query_int(conn, "SELECT application_id FROM cmkflow_store");
        long long version = query_int(conn, "SELECT schema_version FROM cmkflow_store");
        if (app != STORE_APPLICATION_ID) {
            snprintf(err, errlen, "store %s: not a cmkflow store (its cmkflow_store table is "
                     "another program's)", where);
            exec_ok(conn, "ROLLBACK");
            return STORE_E_NOTSTORE;
        }
        if (version > STORE_SCHEMA_VERSION) {
            snprintf(err, errlen,
                     "store %s has schema version %lld; this cmkflow understands up to %d "
                     "(upgrade cmkflow)",
                     where, version, STORE_SCHEMA_VERSION);
            exec_ok(conn, "ROLLBACK");
            return STORE_E_VERSION;
        }
    }
    if (!exec_ok(conn, "COMMIT"))
        goto fail;
    return STORE_OK;
fail:
    snprintf(err, errlen, "store %s: creating or checking the schema: %s", where,
             PQerrorMessage(conn));
    exec_ok(conn, "ROLLBACK");
    return kind;
}

int pgstore_open(const char *url, PGconn **out, char *err, size_t errlen)
{
    char where[512], app[128], host[64] = "?";
    *out = NULL;
    pgstore_describe(url, where, sizeof where);
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    /* the lock holder others are told about (pg_stat_activity.application_name, 63 bytes) */
    snprintf(app, sizeof app, "process %ld (cmkflow on %s)", (long)getpid(), host);
    /* later keywords override earlier ones: the URL may set its own connect_timeout */
    const char *const keys[] = {"connect_timeout", "dbname", "application_name", NULL};
    const char *const values[] = {"10", url, app, NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (!conn) {
        snprintf(err, errlen, "cannot open store %s: out of memory", where);
        return STORE_E_OPEN;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn));
        msg[strcspn(msg, "\n")] = '\0';
        snprintf(err, errlen, "cannot open store %s: %s", where, msg);
        PQfinish(conn);
        return STORE_E_OPEN;
    }
    PQsetNoticeProcessor(conn, no_notices, NULL);
    int kind = pgstore_migrate(conn, where, err, errlen);
    if (kind != STORE_OK) {
        PQfinish(conn);
        return kind;
    }
    *out = conn;
    return STORE_OK;
}
