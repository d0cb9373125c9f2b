return {
  description = "a parameter the workflow does not take: exit 2 before any request, saying what to fix",
  workflow = "onboard",
  params = { "customer=contoso", "colour=blue" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "unknown parameter 'colour' %(this workflow takes: customer, customer_tenant, key_size, location, subscription%)" } },
}
