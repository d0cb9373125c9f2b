/*
 * A C host of libcmkflow: onboards one customer end to end (both tenants' steps) through the C
 * API, printing each engine event as it happens, then the run and the run store's list.
 *
 *   cc onboard.c $(pkg-config --cflags --libs cmkflow) -o onboard
 *   CMKFLOW_EMULATOR=https://127.0.0.1:PORT CMKFLOW_EMULATOR_CA=ca.pem \
 *   ISV_TENANT=... ISV_CLIENT=... ISV_SECRET=... ISV_SUBSCRIPTION=... \
 *   CUSTOMER_TENANT=... CUSTOMER_CLIENT=... CUSTOMER_SECRET=... CUSTOMER_SUBSCRIPTION=... \
 *   ./onboard contoso [fabrikam]
 *
 * Without CMKFLOW_EMULATOR it talks to Azure's public cloud. With two customers it onboards them at
 * the same time on two threads, one host each (hosts are independent; see cmkflow.h).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmkflow.h>

static void on_event(const char *event_json, void *userdata)
{
    fprintf(stderr, "[%s] %s\n", (const char *)userdata, event_json);
}

static int configure(cmkflow_host *h, const char *who)
{
    const char *emulator = getenv("CMKFLOW_EMULATOR");
    if (cmkflow_host_set_cloud(h, emulator ? "emulator" : "azure", emulator, getenv("CMKFLOW_EMULATOR_CA")) != CMKFLOW_OK)
        return CMKFLOW_USAGE;
    struct cmkflow_credential_spec isv = {
        .size = sizeof isv, .kind = "client_secret", .tenant_id = getenv("ISV_TENANT"),
        .client_id = getenv("ISV_CLIENT"), .client_secret = getenv("ISV_SECRET"),
    };
    struct cmkflow_credential_spec customer = {
        .size = sizeof customer, .kind = "client_secret", .tenant_id = getenv("CUSTOMER_TENANT"),
        .client_id = getenv("CUSTOMER_CLIENT"), .client_secret = getenv("CUSTOMER_SECRET"),
    };
    if (cmkflow_host_set_credential(h, "isv", &isv) != CMKFLOW_OK ||
        cmkflow_host_set_credential(h, "customer", &customer) != CMKFLOW_OK ||
        cmkflow_host_set_subscription(h, "isv", getenv("ISV_SUBSCRIPTION")) != CMKFLOW_OK ||
        cmkflow_host_set_subscription(h, "customer", getenv("CUSTOMER_SUBSCRIPTION")) != CMKFLOW_OK) {
        fprintf(stderr, "%s\n", cmkflow_host_last_error(h)); /* names the bad field */
        return CMKFLOW_USAGE;
    }
    cmkflow_host_set_event_callback(h, on_event, (void *)who);
    return CMKFLOW_OK;
}

struct job {
    const char *customer;
    int rc;
    char result[8192];
};

static void *onboard(void *arg)
{
    struct job *j = arg;
    cmkflow_host *h = cmkflow_host_new();
    if (!h) {
        j->rc = CMKFLOW_FAILED;
        return NULL;
    }
    j->rc = configure(h, j->customer);
    if (j->rc == CMKFLOW_OK) {
        char params[256];
        snprintf(params, sizeof params, "{\"customer\":\"%s\"}", j->customer);
        j->rc = cmkflow_host_run_file(h, "onboard", params); /* a stock workflow, by name */
        const char *out = j->rc == CMKFLOW_OK ? cmkflow_host_result_json(h) : cmkflow_host_last_error_json(h);
        snprintf(j->result, sizeof j->result, "%s", out ? out : "null");
    }
    cmkflow_host_free(h);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s CUSTOMER [CUSTOMER2]\n", argv[0]);
        return CMKFLOW_USAGE;
    }
    struct job jobs[2] = {{.customer = argv[1]}, {.customer = argc > 2 ? argv[2] : NULL}};
    pthread_t threads[2];
    int n = argc - 1;
    for (int i = 0; i < n; i++)
        pthread_create(&threads[i], NULL, onboard, &jobs[i]);
    int rc = CMKFLOW_OK;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        printf("%s\n", jobs[i].result);
        if (jobs[i].rc != CMKFLOW_OK)
            rc = jobs[i].rc;
    }
    /* the run store, as `cmkflow runs list --output json` */
    cmkflow_host *h = cmkflow_host_new();
    if (h && cmkflow_host_list_runs(h) == CMKFLOW_OK)
        printf("%s\n", cmkflow_host_result_json(h));
    cmkflow_host_free(h);
    /* the library installed no signal handler */
    struct sigaction sa;
    sigaction(SIGINT, NULL, &sa);
    if (sa.sa_handler != SIG_DFL) {
        fprintf(stderr, "a signal handler was installed\n");
        return CMKFLOW_FAILED;
    }
    return rc;
}
