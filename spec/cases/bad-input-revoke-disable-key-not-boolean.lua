return {
  description = "disable_key neither true nor false: exit 2 before any request, saying what to fix",
  workflow = "revoke",
  params = { "customer=contoso", "app_id=5e6f7a8b-0000-4000-8000-00000000a0d1", "disable_key=maybe" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'disable_key'" } },
}
