-- Where bulk-onboard puts each customer's storage account: a (subscription, region) slot of those
-- the policy allows (`placement = { subscriptions = {...}, locations = {...}, accounts_per_region =
-- 250 }`), never past Azure Storage's default of 250 accounts per region per subscription
-- (https://learn.microsoft.com/azure/storage/common/scalability-targets-standard-account), counting
-- the accounts the run store already holds. Pure: no call, no I/O.
--
--   local slots = placement.slots(policy, isv_subscription)       -- {{subscription, location}, ...}, cap
--   local assigned, problem = placement.assign(slots, cap, taken, wanted)
local M = {}

M.ACCOUNTS_PER_REGION = 250

local function slot_key(sub, loc) return tostring(sub):lower() .. "|" .. tostring(loc):lower() end
M.slot_key = slot_key

-- The slots the policy allows, in order (subscription by subscription), and the accounts a slot may
-- hold. Without `placement` in the policy: the ISV context's subscription and the policy's location.
function M.slots(policy, isv_subscription)
  local p = type(policy.placement) == "table" and policy.placement or {}
  local subs = p.subscriptions or { isv_subscription }
  local locs = p.locations or { policy.location }
  local slots = {}
  for _, s in ipairs(subs) do
    for _, l in ipairs(locs) do slots[#slots + 1] = { subscription = s, location = l } end
  end
  return slots, p.accounts_per_region or M.ACCOUNTS_PER_REGION, #subs, #locs
end

-- Checks a policy's placement table: nil | a problem (text).
function M.check(policy)
  local p = policy.placement
  if p == nil then return nil end
  if type(p) ~= "table" then return "policy field 'placement' must be a table { subscriptions = {...}, locations = {...} }" end
  for _, f in ipairs { "subscriptions", "locations" } do
    local v = p[f]
    if v ~= nil and (type(v) ~= "table" or #v == 0) then
      return ("policy field 'placement.%s' must be a non-empty list"):format(f)
    end
    for i, x in ipairs(v or {}) do
      if type(x) ~= "string" or x == "" then return ("policy field 'placement.%s[%d]' must be a string"):format(f, i) end
    end
  end
  local cap = p.accounts_per_region
  if cap ~= nil and (math.type(cap) ~= "integer" or cap < 1) then
    return "policy field 'placement.accounts_per_region' must be a whole number >= 1"
  end
  return nil
end

-- Assigns a slot to every wanted customer without one. taken: {[slot_key] = accounts already
-- there}; wanted: array of {fixed = {subscription, location} | nil} (a customer whose account has a
-- place already: an earlier run, or the list's own columns). The new ones go to the slot with the
-- fewest accounts, so that storage accounts (and the writes that create them) spread evenly over
-- the subscriptions and regions. Returns an array of {subscription, location} (index as wanted), or
-- nil and a problem naming what to add.
function M.assign(slots, cap, taken, wanted, n_subs, n_locs)
  local count = {}
  for _, s in ipairs(slots) do count[slot_key(s.subscription, s.location)] = 0 end
  for k, n in pairs(taken) do count[k] = n end
  local out, new = {}, 0
  for i, w in ipairs(wanted) do
    if w.fixed then out[i] = w.fixed else new = new + 1 end
  end
  local room = 0
  for _, s in ipairs(slots) do room = room + math.max(0, cap - count[slot_key(s.subscription, s.location)]) end
  if new > room then
    local short = new - room
    local subs_needed = math.ceil(short / (cap * math.max(1, n_locs or 1)))
    local locs_needed = math.ceil(short / (cap * math.max(1, n_subs or 1)))
    return nil, ("%d new storage account(s) do not fit: the policy's placement allows %d subscription(s) x %d "
      .. "region(s) x %d accounts per region, with room for %d; add %d subscription(s) to placement.subscriptions "
      .. "or %d region(s) to placement.locations (or fewer customers per list)")
      :format(new, n_subs or 1, n_locs or 1, cap, room, subs_needed, locs_needed)
  end
  for i, w in ipairs(wanted) do
    if not w.fixed then
      local best, best_n
      for _, s in ipairs(slots) do
        local n = count[slot_key(s.subscription, s.location)]
        if n < cap and (best_n == nil or n < best_n) then best, best_n = s, n end
      end
      count[slot_key(best.subscription, best.location)] = best_n + 1
      out[i] = { subscription = best.subscription, location = best.location }
    end
  end
  return out
end

return M
