return {
  description = "no customer: exit 2 before any request, saying what to fix",
  workflow = "onboard",
  params = {},
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'customer' is required" } },
}
