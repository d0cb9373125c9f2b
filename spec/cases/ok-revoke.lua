return {
  description = "revoke after onboard: the ISV app's role on the customer's key is deleted",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" } },
  workflow = "revoke",
  params = { "customer=contoso", "app_id=${onboard.handoff.appId}" },
  expect = { exit = 0, status = "succeeded", census = { crypto_roles = 0, keys = 1 } },
}
