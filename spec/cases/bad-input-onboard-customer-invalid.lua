return {
  description = "a customer name with capitals and an underscore: exit 2 before any request, saying what to fix",
  workflow = "onboard",
  params = { "customer=Bad_Name" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'customer' is invalid: use 2%-40 lowercase letters" } },
}
