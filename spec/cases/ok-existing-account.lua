return {
  description = "existing-account on an account onboard already switched: nothing to change",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" } },
  workflow = "existing-account",
  params = { "customer=contoso", "app_id=${onboard.handoff.appId}", "storage_account_id=${onboard.storage_account.id}",
             "key_vault_uri=${onboard.key.vaultUri}", "key_name=cmk-contoso" },
  expect = { exit = 0, status = "succeeded", census = "once", outputs = { changed = false } },
}
