return {
  description = "a key name with a dot: exit 2 before any request, saying what to fix",
  workflow = "verify",
  params = { "customer=contoso", "key_name=bad.name" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'key_name': key name 'bad%.name' is invalid" } },
}
