return {
  description = "bulk-onboard of two customers from a CSV: one run each, both succeed",
  workflow = "bulk-onboard",
  files = { ["customers.csv"] = "customer,key_size\nalpha,2048\nbravo,2048\n" },
  params = { "file=${dir}/customers.csv" },
  expect = { exit = 0, result = { succeeded = 2, failed = 0 }, census = { storage_accounts = 2, apps = 1 } },
}
