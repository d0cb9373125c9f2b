-- Smoke workflow: one authenticated ARM call through the production code path
-- (token from the Entra v2 endpoint, bearer-authenticated HTTPS GET, paging).
local isv = context("isv")
local subscriptions, err = isv.arm:list("/subscriptions", { api_version = "2022-12-01" })
if not subscriptions then error(err, 0) end

local names = {}
for _, s in ipairs(subscriptions) do names[#names + 1] = s.displayName end
log("found %d subscription(s) in tenant %s", #subscriptions, isv.tenant)

return {
  tenant = isv.tenant,
  subscriptions = subscriptions,
  summary = ("%d subscription(s): %s"):format(#subscriptions, table.concat(names, ", ")),
}
