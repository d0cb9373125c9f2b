return {
  description = "a key vault URI that is not a vault's: exit 2 before any request, saying what to fix",
  workflow = "new-account",
  params = { "customer=contoso", "app_id=11111111-2222-4333-8444-555555555555", "key_vault_uri=http://x", "key_name=cmk-contoso" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'key_vault_uri': key vault URI 'http://x' is invalid: use https://{vault%-name}%.vault%.azure%.net" } },
}
