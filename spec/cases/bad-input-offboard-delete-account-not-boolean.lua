return {
  description = "a boolean that is neither true nor false: exit 2 before any request, saying what to fix",
  workflow = "offboard",
  params = { "customer=contoso", "delete_account=maybe" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'delete_account' must be true or false, got 'maybe'" } },
}
