return {
  description = "Graph refuses the customer's service principal of the ISV app (403): the customer must act",
  workflow = "onboard",
  params = { "customer=contoso" },
  faults = { { match = { operation = "graph", method = "POST", path = "/servicePrincipals" }, status = 403 } },
  expect = { exit = 1, status = "failed", step_failed = "service_principal", tenant = "customer",
             error_code = "Forbidden", census = { apps = 1, app_sps = 0, storage_accounts = 0 } },
}
