/*
 * libcmkflow — embed the cmkflow interpreter in another tool.
 *
 *   cmkflow_host *h = cmkflow_host_new();
 *   cmkflow_host_set_cloud(h, "azure", NULL, NULL);
 *   struct cmkflow_credential_spec isv = { .size = sizeof isv, .kind = "client_secret", .tenant_id = "...",
 *                                           .client_id = "...", .client_secret = secret };
 *   cmkflow_host_set_credential(h, "isv", &isv);
 *   int rc = cmkflow_host_run_file(h, "onboard.lua", "{\"customer\":\"contoso\"}");
 *   puts(rc == CMKFLOW_OK ? cmkflow_host_result_json(h) : cmkflow_host_last_error(h));
 *   cmkflow_host_free(h);
 *
 * Threads: a host is one Lua state; use each host from one thread at a time. Different hosts are
 * independent and may run at the same time on different threads (spec/c/test_threads.c).
 * Signals: the library installs no signal handler; a program that wants Ctrl-C to stop a run calls
 * cmkflow_host_interrupt (async-signal-safe) from its own handler, as the cmkflow CLI does.
 * Strings passed in are copied; strings returned are owned by the host and valid until the next
 * call on it.
 */
#ifndef CMKFLOW_H
#define CMKFLOW_H

#include <stddef.h>

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

/* Only the functions of this header are exported from libcmkflow (-fvisibility=hidden and the
 * version script cmake/libcmkflow.map); spec/exports_spec.lua holds the two together. */
#if defined(__GNUC__)
#define CMKFLOW_API __attribute__((visibility("default")))
#else
#define CMKFLOW_API
#endif

typedef struct cmkflow_host cmkflow_host;

/* Credential of any kind the core supports. Unused fields stay NULL. Secrets are copied into
 * the host's C memory and cleansed on free; they never become Lua strings. */
struct cmkflow_credential_spec {
    size_t size;                      /* sizeof(struct cmkflow_credential_spec): fields added later
                                         go at the end, and an older caller's smaller size says
                                         which it knows (libcurl's and Win32's convention) */
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

CMKFLOW_API const char *cmkflow_version(void);

/* Returns NULL only when out of memory. */
CMKFLOW_API cmkflow_host *cmkflow_host_new(void);
CMKFLOW_API void cmkflow_host_free(cmkflow_host *h);

/* cloud: "azure", "usgov", "china" or "emulator" (endpoint = "https://127.0.0.1:PORT").
 * ca_file: extra CA bundle to trust (the emulator's), or NULL. */
CMKFLOW_API int cmkflow_host_set_cloud(cmkflow_host *h, const char *cloud, const char *endpoint, const char *ca_file);
/* context: "isv", "customer" or "default". */
CMKFLOW_API int cmkflow_host_set_credential(cmkflow_host *h, const char *context,
                                const struct cmkflow_credential_spec *spec);
/* The subscription a context works in (the ISV's or the customer's). */
CMKFLOW_API int cmkflow_host_set_subscription(cmkflow_host *h, const char *context, const char *subscription_id);
/* A configuration file instead of (or besides) the setters above: cloud, contexts, credentials,
 * policy, limits (docs/configuration.md). */
CMKFLOW_API int cmkflow_host_set_config(cmkflow_host *h, const char *path);
/* The policy file (docs/customizing.md), or NULL for the defaults. */
CMKFLOW_API int cmkflow_host_set_policy(cmkflow_host *h, const char *path);
/* Where the run store lives (default: $CMKFLOW_STATE_DIR, else ~/.local/state/cmkflow). */
CMKFLOW_API int cmkflow_host_set_state_dir(cmkflow_host *h, const char *dir);
/* Trace HTTP to stderr with secrets redacted. */
CMKFLOW_API void cmkflow_host_set_debug(cmkflow_host *h, int on);

/* Progress and events of the runs of this host: event_json is {"kind": "start" | "done" | "skip" |
 * "fail" | "wait", "run_id", "step", "title", "elapsed_ms", "error"} (wait: stopped at an
 * approval gate), valid during the call only. The callback runs on the calling thread, inside
 * cmkflow_host_run_* / resume; it must not call this host. NULL removes it. */
typedef void (*cmkflow_event_fn)(const char *event_json, void *userdata);
CMKFLOW_API void cmkflow_host_set_event_callback(cmkflow_host *h, cmkflow_event_fn fn, void *userdata);

/* Run a workflow (sandboxed) with parameters as a JSON object (or NULL). Returns a status. */
CMKFLOW_API int cmkflow_host_run_file(cmkflow_host *h, const char *path, const char *params_json);
CMKFLOW_API int cmkflow_host_run_string(cmkflow_host *h, const char *chunk, const char *chunkname,
                            const char *params_json);

/* Continue a failed, interrupted or waiting run where it stopped. */
CMKFLOW_API int cmkflow_host_resume(cmkflow_host *h, const char *run_id);
/* Approve an approval gate, with values for the steps after it as a JSON object (or NULL), as
 * `cmkflow approve RUN GATE --param k=v`; reject with approve = 0. */
CMKFLOW_API int cmkflow_host_approve(cmkflow_host *h, const char *run_id, const char *gate, int approve,
                                     const char *values_json);
/* End a run for good (it will not be resumed), as `cmkflow runs cancel`; result_json says what
 * it was: {"run_id", "status": "cancelled", "was"}. */
CMKFLOW_API int cmkflow_host_cancel(cmkflow_host *h, const char *run_id);
/* The runs of the store as a JSON array (cmkflow_host_result_json), newest first. */
CMKFLOW_API int cmkflow_host_list_runs(cmkflow_host *h);
/* One run with its steps and approvals as JSON (cmkflow_host_result_json), as `runs show`. */
CMKFLOW_API int cmkflow_host_show_run(cmkflow_host *h, const char *run_id);

/* The last call's result as JSON, or NULL. */
CMKFLOW_API const char *cmkflow_host_result_json(cmkflow_host *h);
/* The last failure's message (never holds a secret), or NULL. */
CMKFLOW_API const char *cmkflow_host_last_error(cmkflow_host *h);
/* The last failure as a JSON object (never holds a secret), or NULL: {"code", "message",
 * "tenant" (the party that must act: "isv" | "customer", when one must), "hint", "status",
 * "request_id", "retryable", "kind" (auth | config | usage | network | tls | remote | timeout |
 * interrupt | internal)}; fields that do not apply are absent. */
CMKFLOW_API const char *cmkflow_host_last_error_json(cmkflow_host *h);

/* Ask a running workflow to stop; async-signal-safe. The run returns CMKFLOW_INTERRUPTED. */
CMKFLOW_API void cmkflow_host_interrupt(cmkflow_host *h);

#ifdef __cplusplus
}
#endif
#endif
