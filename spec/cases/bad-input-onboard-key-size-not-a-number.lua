return {
  description = "a key size that is not a number: exit 2 before any request, saying what to fix",
  workflow = "onboard",
  params = { "customer=contoso", "key_size=big" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'key_size' must be a whole number" } },
}
