return {
  description = "a customer's own identity and federated credential offboarded: verify names the identity, the ISV must act",
  policy = "return { identity_per_customer = true, propagation_timeout_s = 20 }\n",
  before = { { workflow = "onboard", params = { "customer=contoso" } },
             { workflow = "offboard", params = { "customer=contoso", "delete_account=true" } } },
  workflow = "verify",
  params = { "customer=contoso" },
  expect = { exit = 1, status = "failed", tenant = "ISV",
             outputs = { ok = false, ["broken.link"] = "identity", ["broken.tenant"] = "ISV" } },
}
