return {
  description = "429, 500, 503 and dropped connections on a third of the requests: onboard retries them away, no duplicate",
  workflow = "onboard",
  params = { "customer=contoso" },
  -- one guaranteed occurrence of each kind early on, then each kind on 1/12 of the requests (1/12,
  -- 1/11, 1/10, 1/9 of what the earlier rules let through: a third in all), drawn from the
  -- emulator's deterministic PRNG
  faults = {
    { status = 429, count = 1, after = 1 }, { status = 500, count = 1, after = 3 },
    { status = 503, count = 1, after = 5 }, { drop = true, count = 1, after = 7 },
    { status = 429, probability = 1 / 12 }, { status = 500, probability = 1 / 11 },
    { status = 503, probability = 1 / 10 }, { drop = true, probability = 1 / 9 },
  },
  expect = { exit = 0, status = "succeeded", census = "once", faults_fired = { "429", "500", "503", "drop" },
             faulted_share_min = 1 / 5,
             outputs = { ["storage_account.properties.encryption.keySource"] = "Microsoft.Keyvault" } },
}
