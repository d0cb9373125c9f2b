return {
  description = "an app id that is not a GUID: exit 2 before any request, saying what to fix",
  workflow = "customer-authorize",
  params = { "customer=contoso", "app_id=not-a-guid" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'app_id': GUID 'not%-a%-guid' is invalid: use the form xxxxxxxx%-xxxx" } },
}
