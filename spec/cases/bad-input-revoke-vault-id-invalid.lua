return {
  description = "a key vault id that is not an ARM id: exit 2 before any request, saying what to fix",
  workflow = "revoke",
  params = { "customer=contoso", "app_id=11111111-2222-4333-8444-555555555555", "key_vault_id=/subscriptions/x" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'key_vault_id': must be an ARM id /subscriptions/SUB/resourceGroups/RG/providers/Microsoft%.KeyVault/vaults/NAME" } },
}
