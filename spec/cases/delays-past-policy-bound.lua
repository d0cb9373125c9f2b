return {
  description = "propagation slower than the policy's bound: onboard fails naming what is still not visible",
  workflow = "onboard",
  params = { "customer=contoso" },
  policy = "return { propagation_timeout_s = 1 }\n",
  delays = { service_principal = 120, federated_credential = 120, role_assignment = 120 },
  expect = { exit = 1, status = "failed", error_contains = { "is still not visible after 1 s of waiting", "service principal" },
             error_not_contains = { "stack traceback" } },
}
