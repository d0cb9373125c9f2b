return {
  description = "Entra ID refuses the ISV tenant's token requests (AADSTS90033): exit 4, the ISV must act",
  workflow = "onboard",
  params = { "customer=contoso" },
  -- (the ISV tenant of the demo seed)
  faults = { { match = { operation = "entra", path = "/7f0d6a2e%-5b1c%-4c8e%-9a3d%-1e2f3a4b5c6d/oauth2/" }, status = 400 } },
  -- refused when the run checks its credentials, before its first change (no step ran)
  expect = { exit = 4, status = "failed", tenant = "ISV",
             error_code = "AADSTS90033", census = { apps = 0, storage_accounts = 0 } },
}
