/* The embedding API (core/include/cmkflow.h): run strings and files, results as JSON,
 * failures as messages with tracebacks, the sandbox, interruption from another thread. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "cmkflow.h"
#include "check.h"

static void runs_and_returns_json(void)
{
    cmkflow_host *h = cmkflow_host_new();
    int rc = cmkflow_host_run_string(h, "return {name = params.customer, tags = json.array(), n = 3}",
                                     "=(t)", "{\"customer\":\"contoso\"}");
    CHECK_INT(rc, CMKFLOW_OK);
    CHECK_STR(cmkflow_host_result_json(h), "{\"n\":3,\"name\":\"contoso\",\"tags\":[]}");
    cmkflow_host_free(h);
}

static void errors_carry_a_traceback(void)
{
    cmkflow_host *h = cmkflow_host_new();
    int rc = cmkflow_host_run_string(h, "local function f() error('boom') end\nf()", "=(wf)", NULL);
    CHECK_INT(rc, CMKFLOW_FAILED);
    const char *msg = cmkflow_host_last_error(h);
    CHECK(msg && strstr(msg, "boom"));
    CHECK(msg && strstr(msg, "stack traceback"));
    CHECK(cmkflow_host_result_json(h) == NULL);

    rc = cmkflow_host_run_string(h, "return (", "=(wf)", NULL);
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "unexpected symbol"));

    rc = cmkflow_host_run_string(h, "return 1", "=(wf)", "{not json");
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "parameters are not valid JSON"));

    rc = cmkflow_host_run_file(h, "/nonexistent/wf.lua", NULL);
    CHECK_INT(rc, CMKFLOW_USAGE);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "/nonexistent/wf.lua"));
    cmkflow_host_free(h);
}

static void workflows_are_sandboxed(void)
{
    cmkflow_host *h = cmkflow_host_new();
    int rc = cmkflow_host_run_string(
        h, "return {os_execute = os.execute == nil, io = io == nil, loadlib = package == nil}", "=(t)", NULL);
    CHECK_INT(rc, CMKFLOW_OK);
    CHECK_STR(cmkflow_host_result_json(h), "{\"io\":true,\"loadlib\":true,\"os_execute\":true}");
    rc = cmkflow_host_run_string(h, "return os.execute('true')", "=(t)", NULL);
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
    int rc = cmkflow_host_run_string(h, "local t = os.clock() while os.clock() - t < 60 do end return 1",
                                     "=(loop)", NULL);
    pthread_join(t, NULL);
    CHECK_INT(rc, CMKFLOW_INTERRUPTED);
    CHECK(cmkflow_host_last_error(h) && strstr(cmkflow_host_last_error(h), "interrupted"));
    /* the host is usable again afterwards */
    rc = cmkflow_host_run_string(h, "return 2", "=(t)", NULL);
    CHECK_INT(rc, CMKFLOW_OK);
    CHECK_STR(cmkflow_host_result_json(h), "2");
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
                                     "local co = coroutine.create(function()\n"
                                     "  pcall(function() local t = os.clock() while os.clock() - t < 60 do end end)\n"
                                     "end)\n"
                                     "coroutine.resume(co) return 'swallowed'",
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
    RUN(version_is_set);
    RUN(runs_and_returns_json);
    RUN(errors_carry_a_traceback);
    RUN(workflows_are_sandboxed);
    RUN(interrupt_stops_a_busy_workflow);
    RUN(interrupt_stops_a_coroutine_under_pcall);
    DONE();
}
