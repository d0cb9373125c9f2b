return {
  description = "a workflow that does not exist: exit 2 before any request, saying what to fix",
  workflow = "no-such-workflow",
  params = {},
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "no stock workflow named 'no%-such%-workflow'" } },
}
