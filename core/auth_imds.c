/* auth_imds.c: managed identity tokens from IMDS or the App Service identity endpoint. */
#include <stdlib.h>
#include <string.h>
#include "auth_int.h"

void auth_fetch_managed_identity(struct fetch *f)
{
    auth_credential *c = f->c;
    /* IMDS and App Service take a resource, not a scope */
    const char *scope = f->e->scope;
    size_t n = strlen(scope);
    static const char suffix[] = "/.default";
    if (n >= sizeof suffix - 1 && strcmp(scope + n - (sizeof suffix - 1), suffix) == 0)
        n -= sizeof suffix - 1;
    char *resource = malloc(n + 1);
    if (!resource) {
        auth_fetch_fail(f, "OutOfMemory", 0, NULL, "out of memory");
        return;
    }
    memcpy(resource, scope, n);
    resource[n] = '\0';
    int app_service = c->app_service_header != NULL;
    struct buf url = {0}, hdr = {0};
    buf_adds(&url, c->imds_endpoint);
    buf_adds(&url, strchr(c->imds_endpoint, '?') ? "&" : "?");
    buf_adds(&url, app_service ? "api-version=2019-08-01" : "api-version=2018-02-01");
    buf_adds(&url, "&resource=");
    auth_add_escaped(&url, resource);
    free(resource);
    if (c->identity_client_id) {
        buf_adds(&url, "&client_id=");
        auth_add_escaped(&url, c->identity_client_id);
    } else if (c->identity_object_id) {
        buf_adds(&url, app_service ? "&principal_id=" : "&object_id=");
        auth_add_escaped(&url, c->identity_object_id);
    } else if (c->identity_resource_id) {
        buf_adds(&url, app_service ? "&mi_res_id=" : "&msi_res_id=");
        auth_add_escaped(&url, c->identity_resource_id);
    }
    if (app_service) {
        buf_adds(&hdr, "X-IDENTITY-HEADER: ");
        buf_adds(&hdr, c->app_service_header);
    } else {
        buf_adds(&hdr, "Metadata: true");
    }
    if (url.oom || hdr.oom) {
        buf_wipe(&url);
        buf_wipe(&hdr);
        auth_fetch_fail(f, "OutOfMemory", 0, NULL, "out of memory");
        return;
    }
    const char *headers[] = {hdr.data, "Accept: application/json", NULL};
    auth_submit(f, "GET", url.data, headers, NULL);
    buf_wipe(&url);
    buf_wipe(&hdr);
}
