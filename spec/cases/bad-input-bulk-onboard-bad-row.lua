return {
  description = "a customer list with a bad row: exit 2 before any request, naming the line",
  workflow = "bulk-onboard",
  files = { ["bad.csv"] = "customer,key_size\ncontoso,2048\nBad_Name,3072\n" },
  params = { "file=${dir}/bad.csv" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "line 3: parameter 'customer' is invalid" } },
}
