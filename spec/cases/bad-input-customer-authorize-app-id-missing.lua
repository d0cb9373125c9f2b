return {
  description = "no app id: exit 2 before any request, saying what to fix",
  workflow = "customer-authorize",
  params = { "customer=contoso" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'app_id' is required" } },
}
