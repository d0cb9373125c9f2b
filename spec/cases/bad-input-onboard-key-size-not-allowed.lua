return {
  description = "a key size the policy does not allow: exit 2 before any request, saying what to fix",
  workflow = "onboard",
  params = { "customer=contoso", "key_size=1024" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'key_size' must be one of 2048, 3072, 4096, got '1024'" } },
}
