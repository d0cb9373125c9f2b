return {
  description = "Graph refuses every call (403): the ISV's multi-tenant application fails first, the ISV must act",
  workflow = "onboard",
  params = { "customer=contoso" },
  faults = { { match = { operation = "graph" }, status = 403 } },
  expect = { exit = 1, status = "failed", step_failed = "app", tenant = "ISV", error_code = "Forbidden",
             census = { apps = 0 } },
}
