return {
  description = "rotate-key after onboard: a new key version, the versionless account follows",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" } },
  workflow = "rotate-key",
  params = { "customer=contoso" },
  expect = { exit = 0, status = "succeeded", outputs = { tracking = "versionless" }, census = { key_versions = 2 } },
}
