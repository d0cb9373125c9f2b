return {
  description = "a customer name with punctuation: exit 2 before any request, saying what to fix",
  workflow = "isv-setup",
  params = { "customer=Contoso!" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'customer' is invalid" } },
}
