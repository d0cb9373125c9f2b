return {
  description = "a customer tenant that is neither a GUID nor a domain: exit 2 before any request, saying what to fix",
  workflow = "isv-setup",
  params = { "customer=contoso", "customer_tenant=not_a_tenant" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'customer_tenant': tenant 'not_a_tenant' is invalid: use the tenant's GUID or a verified domain" } },
}
