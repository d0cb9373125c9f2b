return {
  description = "verify after onboard: every link of the chain holds",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" } },
  workflow = "verify",
  params = { "customer=contoso" },
  expect = { exit = 0, status = "succeeded",
             outputs = { ok = true, ["checks.federated_credential"] = "ok", ["checks.storage_account"] = "ok" } },
}
