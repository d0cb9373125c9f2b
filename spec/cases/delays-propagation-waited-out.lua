return {
  description = "service principal, federated credential and role assignment propagate late: onboard waits, says so, succeeds once",
  workflow = "onboard",
  params = { "customer=contoso" },
  -- the wait is under test: 1 s each (the least that still makes every wait necessary)
  delays = { service_principal = 1, federated_credential = 1, role_assignment = 1 },
  expect = { exit = 0, status = "succeeded", stderr_matches = { "waiting %d+ s for [^\n]+ to propagate" },
             census = "once" },
}
