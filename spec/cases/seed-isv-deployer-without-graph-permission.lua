return {
  description = "the ISV's deployer lacks Application.ReadWrite.All: the app step fails, the ISV must act",
  seed = { ["tenants.1.principals.1.graph_roles"] = {} },
  workflow = "onboard",
  params = { "customer=contoso" },
  expect = { exit = 1, status = "failed", step_failed = "app", tenant = "ISV",
             error_contains = { "Application.ReadWrite.All" }, census = { apps = 0 } },
}
