/*
 * libcmkflow — embed the cmkflow interpreter in another tool.
 *
 *   cmkflow_host *h = cmkflow_host_new();
 *   cmkflow_host_set_cloud(h, "azure", NULL, NULL);
 *   struct cmkflow_credential_spec isv = { .kind = "client_secret", .tenant_id = "...",
 *                                           .client_id = "...", .client_secret = secret };
 *   cmkflow_host_set_credential(h, "isv", &isv);
 *   int rc = cmkflow_host_run_file(h, "onboard.lua", "{\"customer\":\"contoso\"}");
 *   puts(rc == CMKFLOW_OK ? cmkflow_host_result_json(h) : cmkflow_host_last_error(h));
 *   cmkflow_host_free(h);
 *
 * A host is one Lua state; use it from one thread at a time. Strings passed in are copied;
 * strings returned are owned by the host and valid until the next call on it.
 */
#ifndef CMKFLOW_H
#define CMKFLOW_H

#ifdef __cplusplus
extern "C" {
#endif

/* Exit codes shared by the CLI and the API (docs/exit-codes.md). The one definition: Lua code
 * reads them as require("cmkflow.core").exit (ok, failed, usage, auth, waiting, interrupted,
 * terminated). */
enum cmkflow_status {
    CMKFLOW_OK = 0,
    CMKFLOW_FAILED = 1,
    CMKFLOW_USAGE = 2,
    CMKFLOW_AUTH = 4,
    CMKFLOW_WAITING = 6,
    CMKFLOW_UNVERIFIED = 7, /* verify: no link is broken, but some could not be checked */
    CMKFLOW_INTERRUPTED = 130, /* SIGINT (Ctrl-C): 128 + 2, as shells report it */
    CMKFLOW_TERMINATED = 143   /* SIGTERM: 128 + 15 */
};

typedef struct cmkflow_host cmkflow_host;

/* Credential of any kind the core supports. Unused fields stay NULL. Secrets are copied into
 * the host's C memory and cleansed on free; they never become Lua strings. */
struct cmkflow_credential_spec {
    const char *kind;                 /* client_secret, client_certificate, workload_identity,
                                         managed_identity, environment */
    const char *tenant_id;
    const char *client_id;
    const char *client_secret;
    const char *certificate_path;     /* PEM or PKCS#12 */
    const char *certificate_password;
    const char *federated_token_file;
    const char *identity_client_id;   /* managed identity selection */
};

const char *cmkflow_version(void);

/* Returns NULL only when out of memory. */
cmkflow_host *cmkflow_host_new(void);
void cmkflow_host_free(cmkflow_host *h);

/* cloud: "azure", "usgov", "china" or "emulator" (endpoint = "https://127.0.0.1:PORT").
 * ca_file: extra CA bundle to trust (the emulator's), or NULL. */
int cmkflow_host_set_cloud(cmkflow_host *h, const char *cloud, const char *endpoint, const char *ca_file);
/* context: "isv", "customer" or "default". */
int cmkflow_host_set_credential(cmkflow_host *h, const char *context,
                                const struct cmkflow_credential_spec *spec);
/* Trace HTTP to stderr with secrets redacted. */
void cmkflow_host_set_debug(cmkflow_host *h, int on);

/* Run a workflow (sandboxed) with parameters as a JSON object (or NULL). Returns a status. */
int cmkflow_host_run_file(cmkflow_host *h, const char *path, const char *params_json);
int cmkflow_host_run_string(cmkflow_host *h, const char *chunk, const char *chunkname,
                            const char *params_json);

/* The last run's result as JSON, or NULL. */
const char *cmkflow_host_result_json(cmkflow_host *h);
/* The last failure's message (never holds a secret), or NULL. */
const char *cmkflow_host_last_error(cmkflow_host *h);
/* The last failure as a JSON object (never holds a secret), or NULL: {"code", "message",
 * "tenant" (the party that must act: "isv" | "customer", when one must), "hint", "status",
 * "request_id", "retryable", "kind" (auth | config | usage | network | tls | remote | timeout |
 * interrupt | internal)}; fields that do not apply are absent. */
const char *cmkflow_host_last_error_json(cmkflow_host *h);

/* Ask a running workflow to stop; async-signal-safe. The run returns CMKFLOW_INTERRUPTED. */
void cmkflow_host_interrupt(cmkflow_host *h);

#ifdef __cplusplus
}
#endif
#endif
