return {
  description = "no app id: exit 2 before any request, saying what to fix",
  workflow = "new-account",
  params = { "customer=contoso", "key_vault_uri=https://kv-contoso.vault.azure.net", "key_name=cmk-contoso" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'app_id' is required" } },
}
