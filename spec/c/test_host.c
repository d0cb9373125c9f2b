/* The embedding API (core/include/cmkflow.h): workflows (strings, files, stock names) run through
 * the same pipeline and engine as the CLI, results as JSON, failures as text and structured JSON,
 * the sandbox, interruption from another thread. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "cmkflow.h"
#include "check.h"

/* A one-step workflow definition whose step runs BODY (ctx in scope). */
#define WF(body) "return { name = 't', steps = { { name = 's', run = function(ctx) " body " end } } }"

static void runs_a_workflow_and_returns_its_run(void)
{
    cmkflow_host *h = cmkflow_host_new();
    int rc = cmkflow_host_run_string(
        h, WF("return {name = ctx.params.customer, n = ctx.params.n}") " ", "=(t)",
        "{\"customer\":\"contoso\",\"n\":3}");
    /* undeclared parameters are refused before any step runs */
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "customer"));
    const char *ej = cmkflow_host_last_error_json(h);
    CHECK(ej && strstr(ej, "\"kind\":\"usage\""));

    rc = cmkflow_host_run_string(h,
                                 "return { name = 't', params = { customer = { type = 'string', required = true },"
                                 " n = { type = 'integer' } }, steps = { { name = 's', run = function(ctx)"
                                 " return {name = ctx.params.customer, n = ctx.params.n} end } } }",
                                 "=(t)", "{\"customer\":\"contoso\",\"n\":3}");
    CHECK_INT(rc, CMKFLOW_OK);
    const char *json = cmkflow_host_result_json(h);
    CHECK(json && strstr(json, "\"status\":\"succeeded\""));
    CHECK(json && strstr(json, "\"s\":{\"n\":3,\"name\":\"contoso\"}"));
    CHECK(json && strstr(json, "\"run_id\":\""));

    /* the run store: list, show, cancel */
    CHECK_INT(cmkflow_host_list_runs(h), CMKFLOW_OK);
    CHECK(cmkflow_host_result_json(h) && strstr(cmkflow_host_result_json(h), "\"workflow\":\"t\""));
    CHECK_INT(cmkflow_host_cancel(h, "no-such-run"), CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error_json(h) && strstr(cmkflow_host_last_error_json(h), "\"kind\":\"usage\""));
    /* a run waiting at a gate (the policy asks for the review): approve with a value and resume,
     * or cancel for good; a run of a file is resumed from the file */
    char wf[512], policy[512];
    snprintf(wf, sizeof wf, "%s/gated.lua", getenv("CMKFLOW_STATE_DIR"));
    snprintf(policy, sizeof policy, "%s/policy.lua", getenv("CMKFLOW_STATE_DIR"));
    FILE *f = fopen(wf, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("return { name = 'gated', steps = { { name = 'review', gate = true },\n"
              "  { name = 'after', needs = { 'review' }, mutates = false,\n"
              "    run = function(ctx) return { got = ctx.outputs.review.note } end } } }\n", f);
        fclose(f);
    }
    f = fopen(policy, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("return { approval = function(gate) return gate == 'review' end }\n", f);
        fclose(f);
    }
    CHECK_INT(cmkflow_host_set_policy(h, policy), CMKFLOW_OK);
    rc = cmkflow_host_run_file(h, wf, NULL);
    CHECK_INT(rc, CMKFLOW_WAITING);
    char run_id[64] = "";
    const char *at = cmkflow_host_result_json(h) ? strstr(cmkflow_host_result_json(h), "\"run_id\":\"") : NULL;
    if (at)
        sscanf(at + 10, "%63[^\"]", run_id);
    CHECK(run_id[0] != '\0');
    CHECK_INT(cmkflow_host_approve(h, run_id, "review", 1, "{\"note\":\"looks fine\"}"), CMKFLOW_OK);
    CHECK_INT(cmkflow_host_resume(h, run_id), CMKFLOW_OK);
    CHECK(cmkflow_host_result_json(h) && strstr(cmkflow_host_result_json(h), "\"got\":\"looks fine\""));
    rc = cmkflow_host_run_file(h, wf, NULL);
    CHECK_INT(rc, CMKFLOW_WAITING);
    at = cmkflow_host_result_json(h) ? strstr(cmkflow_host_result_json(h), "\"run_id\":\"") : NULL;
    if (at)
        sscanf(at + 10, "%63[^\"]", run_id);
    CHECK_INT(cmkflow_host_cancel(h, run_id), CMKFLOW_OK);
    CHECK_INT(cmkflow_host_show_run(h, run_id), CMKFLOW_OK);
    CHECK(cmkflow_host_result_json(h) && strstr(cmkflow_host_result_json(h), "\"status\":\"cancelled\""));
    CHECK_INT(cmkflow_host_set_policy(h, NULL), CMKFLOW_OK);

    /* a stock workflow by name (resolved like the CLI's): its parameters are checked first */
    rc = cmkflow_host_run_file(h, "onboard", "{\"customer\":\"Not Valid\"}");
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "customer"));
    cmkflow_host_free(h);
}

static void failures_are_structured(void)
{
    cmkflow_host *h = cmkflow_host_new();
    int rc = cmkflow_host_run_string(h, WF("error({code = 'KeyDisabled', message = 'boom', tenant = 'customer'})"),
                                     "=(wf)", NULL);
    CHECK_INT(rc, CMKFLOW_FAILED);
    const char *msg = cmkflow_host_last_error(h);
    CHECK(msg && strstr(msg, "boom"));
    const char *ej = cmkflow_host_last_error_json(h);
    CHECK(ej && strstr(ej, "\"code\":\"KeyDisabled\""));
    CHECK(ej && strstr(ej, "\"tenant\":\"customer\""));
    CHECK(ej && strstr(ej, "\"step\":\"s\""));
    CHECK(cmkflow_host_result_json(h) == NULL);

    rc = cmkflow_host_run_string(h, WF("local function f() error('boom') end f()"), "=(wf)", NULL);
    CHECK_INT(rc, CMKFLOW_FAILED);
    ej = cmkflow_host_last_error_json(h);
    CHECK(ej && strstr(ej, "\"code\":\"InternalError\""));
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "boom"));

    rc = cmkflow_host_run_string(h, "return (", "=(wf)", NULL);
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "unexpected symbol"));

    rc = cmkflow_host_run_string(h, "return 1", "=(wf)", NULL);
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "workflow definition"));

    rc = cmkflow_host_run_string(h, WF("return {}"), "=(wf)", "{not json");
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "not a valid JSON object"));

    rc = cmkflow_host_run_file(h, "/nonexistent/wf.lua", NULL);
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "/nonexistent/wf.lua"));
    cmkflow_host_free(h);
}

static void workflows_are_sandboxed(void)
{
    cmkflow_host *h = cmkflow_host_new();
    int rc = cmkflow_host_run_string(
        h, WF("return {os_execute = os.execute == nil, io = io == nil, loadlib = package == nil}"), "=(t)", NULL);
    CHECK_INT(rc, CMKFLOW_OK);
    CHECK(cmkflow_host_result_json(h) &&
          strstr(cmkflow_host_result_json(h), "{\"io\":true,\"loadlib\":true,\"os_execute\":true}"));
    rc = cmkflow_host_run_string(h, WF("return os.execute('true')"), "=(t)", NULL);
    CHECK_INT(rc, CMKFLOW_FAILED);
    cmkflow_host_free(h);
}

static void *interrupt_later(void *arg)
{
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    cmkflow_host_interrupt(arg);
    return NULL;
}

static void interrupt_stops_a_busy_workflow(void)
{
    cmkflow_host *h = cmkflow_host_new();
    pthread_t t;
    pthread_create(&t, NULL, interrupt_later, h);
    /* bounded: gives up after 60 s of CPU if the interrupt never arrives */
    int rc = cmkflow_host_run_string(h, WF("local t = os.clock() while os.clock() - t < 60 do end return {}"),
                                     "=(loop)", NULL);
    pthread_join(t, NULL);
    CHECK_INT(rc, CMKFLOW_INTERRUPTED);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "interrupted"));
    /* the host is usable again afterwards */
    rc = cmkflow_host_run_string(h, WF("return {n = 2}"), "=(t)", NULL);
    CHECK_INT(rc, CMKFLOW_OK);
    CHECK(cmkflow_host_result_json(h) && strstr(cmkflow_host_result_json(h), "{\"n\":2}"));
    cmkflow_host_free(h);
}

static void interrupt_stops_a_coroutine_under_pcall(void)
{
    cmkflow_host *h = cmkflow_host_new();
    pthread_t t;
    pthread_create(&t, NULL, interrupt_later, h);
    /* the count hook is inherited by the coroutine; the sandbox's pcall and coroutine.resume
     * hand the interruption on (bounded: 60 s of CPU if it never arrives) */
    int rc = cmkflow_host_run_string(h,
                                     WF("local co = coroutine.create(function()\n"
                                        "  pcall(function() local t = os.clock() while os.clock() - t < 60 do end end)\n"
                                        "end)\n"
                                        "coroutine.resume(co) return {swallowed = true}"),
                                     "=(co)", NULL);
    pthread_join(t, NULL);
    CHECK_INT(rc, CMKFLOW_INTERRUPTED);
    CHECK(cmkflow_host_result_json(h) == NULL);
    cmkflow_host_free(h);
}

static void version_is_set(void)
{
    CHECK(cmkflow_version() && strlen(cmkflow_version()) >= 5);
}

int main(void)
{
    unsetenv("CMKFLOW_LUA_PATH");
    /* the runs go to a run store of their own */
    char state[] = "/tmp/cmkflow-test-host-XXXXXX";
    CHECK(mkdtemp(state) != NULL);
    setenv("CMKFLOW_STATE_DIR", state, 1);
    RUN(version_is_set);
    RUN(runs_a_workflow_and_returns_its_run);
    RUN(failures_are_structured);
    RUN(workflows_are_sandboxed);
    RUN(interrupt_stops_a_busy_workflow);
    RUN(interrupt_stops_a_coroutine_under_pcall);
    DONE();
}
