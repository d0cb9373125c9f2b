return {
  description = "offboard after onboard: the account goes back to Microsoft-managed keys, the shared identity stays",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" } },
  workflow = "offboard",
  params = { "customer=contoso" },
  expect = { exit = 0, status = "succeeded",
             outputs = { identity_deleted = false, ["storage_account.reverted"] = true } },
}
