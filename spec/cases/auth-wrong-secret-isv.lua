return {
  description = "the ISV's deployer has a wrong client secret: exit 4, Entra's AADSTS code, the secret never shown",
  workflow = "onboard",
  params = { "customer=contoso" },
  wrong_secret = "isv",
  expect = { exit = 4, status = "failed", error_code = "AADSTS7000215", tenant = "ISV",
             error_not_contains = { "not-the-secret-isv" }, census = { apps = 0, storage_accounts = 0 } },
}
