return {
  description = "the customer disabled the key (and re-authorized the app): verify names the key, the customer must act",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" },
             { workflow = "revoke", params = { "customer=contoso", "app_id=${onboard.handoff.appId}", "disable_key=true" } },
             { workflow = "customer-authorize", params = { "customer=contoso", "app_id=${onboard.handoff.appId}" } } },
  workflow = "verify",
  params = { "customer=contoso" },
  expect = { exit = 1, status = "failed", tenant = "customer", error_contains = { "disabled" },
             outputs = { ok = false, ["broken.link"] = "key", ["broken.tenant"] = "customer" } },
}
