return {
  description = "onboard on the demo seed: both tenants, one of everything, the account encrypted with the customer's key",
  workflow = "onboard",
  params = { "customer=contoso" },
  expect = { exit = 0, status = "succeeded", census = "once", requests_min = 10,
             outputs = { ["storage_account.properties.encryption.keySource"] = "Microsoft.Keyvault",
                         ["key.name"] = "cmk-contoso" } },
}
