/* store_pg.c: the run store's PostgreSQL backend (libpq) - connecting to a shared store named by
 * a URL (state = "postgresql://..." in the config file), its schema, and the advisory locks that
 * keep two processes from running one run at once (docs/scaling.md says why advisory locks). The
 * Lua userdata over it is lstore.c, the same as for SQLite. */
#ifndef CMKFLOW_STORE_PG_H
#define CMKFLOW_STORE_PG_H
#include <stddef.h>
#include <libpq-fe.h>

/* The advisory-lock class of every lock cmkflow takes ("CMKF" = STORE_APPLICATION_ID), so that
 * other programs sharing the database do not meet ours: pg_advisory_lock(class, key). Key 0 is
 * the store-wide write lock that db:transaction takes (the counterpart of SQLite's BEGIN
 * IMMEDIATE); a run's lock is hashtext(run id) & 0x7fffffff. */
#define PGSTORE_LOCK_CLASS 1129139014
#define PGSTORE_TX_LOCK "SELECT pg_advisory_xact_lock(1129139014, 0)"

/* Does name look like a PostgreSQL URL (postgresql:// or postgres://)? */
int pgstore_is_url(const char *name);

/* The URL without its password and query (safe for messages and logs) into out (always
 * terminated). */
void pgstore_describe(const char *url, char *out, size_t outlen);

/* Connect to url (application_name "process PID (cmkflow on HOST)", connect_timeout 10 s unless
 * the URL says otherwise; no notices on stderr) and bring the schema to STORE_SCHEMA_VERSION
 * under the store-wide lock. On success *out owns the connection (PQfinish it) and STORE_OK is
 * returned; otherwise *out is NULL, a STORE_E_* is returned and err names the store (never its
 * password). */
int pgstore_open(const char *url, PGconn **out, char *err, size_t errlen);

#endif
