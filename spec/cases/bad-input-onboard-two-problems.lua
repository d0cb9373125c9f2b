return {
  description = "two bad parameters: exit 2 before any request, naming both",
  workflow = "onboard",
  params = { "customer=Bad_Name", "key_size=1024" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_contains = { "parameter 'customer' is invalid: use 2-40 lowercase letters",
                                 "parameter 'key_size' must be one of 2048, 3072, 4096, got '1024'" } },
}
