return {
  description = "a tracking mode that does not exist: exit 2 before any request, saying what to fix",
  workflow = "rotate-key",
  params = { "customer=contoso", "tracking=sometimes" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'tracking' must be one of versionless, versioned" } },
}
