/* store.c: the SQLite run store behind durable, resumable workflow runs (runs, steps, approvals,
 * events). One file per store, mode 0600, WAL with synchronous=NORMAL so a committed step survives
 * the process being killed right after (a power loss may lose the last commits, never the file). */
#ifndef CMKFLOW_STORE_H
#define CMKFLOW_STORE_H
#include <stddef.h>
#include <sqlite3.h>
#include <lua.h>

#define STORE_MT "cmkflow.store"
/* The schema version this build writes (PRAGMA user_version) and its application id ("CMKF"). */
#define STORE_SCHEMA_VERSION 2
#define STORE_APPLICATION_ID 0x434d4b46

/* Why store_open_db failed. */
enum store_open_error {
    STORE_OK = 0,
    STORE_E_OPEN,     /* the file cannot be created or opened (missing directory, permissions) */
    STORE_E_NOTSTORE, /* not an SQLite database, corrupt, or another program's database */
    STORE_E_VERSION,  /* written by a newer cmkflow (schema version above ours) */
    STORE_E_SQL,      /* anything else SQLite reported while configuring or migrating */
};

/* Open the store at path, creating the file (mode 0600, never its directory) when missing;
 * set WAL, synchronous=NORMAL, busy_timeout 5000, foreign_keys=ON and migrate the schema to
 * STORE_SCHEMA_VERSION. On success *out owns the handle (sqlite3_close_v2 it) and 0 is returned;
 * otherwise *out is NULL, a STORE_E_* is returned and err holds a message naming the path. */
int store_open_db(const char *path, sqlite3 **out, char *err, size_t errlen);

/* Bring an open database to STORE_SCHEMA_VERSION inside BEGIN IMMEDIATE (safe when two processes
 * open a new store at once). Returns STORE_OK or a STORE_E_*, with a message in err. */
int store_migrate(sqlite3 *db, char *err, size_t errlen);

#endif
