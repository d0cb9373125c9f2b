return {
  description = "--param without name=value: exit 2 before any request, saying what to fix",
  workflow = "onboard",
  params = { "customer" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "%-%-param needs name=value, got 'customer'" } },
}
