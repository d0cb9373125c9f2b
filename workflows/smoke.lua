-- smoke: one authenticated ARM call through the production code path (token from the Entra v2
-- endpoint, bearer-authenticated HTTPS GET, paging): the subscriptions the ISV context sees
-- (Subscriptions - List, https://learn.microsoft.com/rest/api/resources/subscriptions/list).
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "smoke",
  description = "List the subscriptions the ISV context can see (one authenticated ARM call)",
  steps = {
    { name = "subscriptions", tenant = "isv", title = "list subscriptions", mutates = false, run = cmk.list_subscriptions },
  },
}
