return {
  description = "the customer revoked the ISV app's role on the key: verify names the role assignment, the customer must act",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" },
             { workflow = "revoke", params = { "customer=contoso", "app_id=${onboard.handoff.appId}" } } },
  workflow = "verify",
  params = { "customer=contoso" },
  expect = { exit = 1, status = "failed", tenant = "customer",
             error_contains = { "broken link: role_assignment", "customer-authorize" },
             error_not_contains = { "traceback" },
             outputs = { ok = false, ["broken.link"] = "role_assignment", ["broken.tenant"] = "customer" } },
}
