-- bulk-onboard's placement (storage accounts over subscriptions and regions, never past 250 per
-- region per subscription) and the ARM pacer (cmkflow.azure.pacer) against a simulated ARM token
-- bucket on a fake clock: no server, no timing.
local placement = require "cmkflow.app.placement"
local pacer = require "cmkflow.azure.pacer"

describe("placement", function()
  local policy = { location = "westeurope",
                   placement = { subscriptions = { "s1", "s2" }, locations = { "westeurope", "northeurope" } } }

  it("spreads new accounts evenly over every subscription and region, keeping the ones already placed", function()
    local slots, cap, n_subs, n_locs = placement.slots(policy, "isv-sub")
    assert.equals(4, #slots)
    assert.equals(250, cap)
    local wanted = { { fixed = { subscription = "s2", location = "northeurope" } } }
    for i = 2, 9 do wanted[i] = {} end
    local taken = { [placement.slot_key("s2", "northeurope")] = 1, [placement.slot_key("s1", "westeurope")] = 200 }
    local out = assert(placement.assign(slots, cap, taken, wanted, n_subs, n_locs))
    assert.same({ subscription = "s2", location = "northeurope" }, out[1])
    local per = {}
    for i = 2, 9 do
      local k = out[i].subscription .. "/" .. out[i].location
      per[k] = (per[k] or 0) + 1
    end
    -- the full slot gets none; the others share the eight
    assert.is_nil(per["s1/westeurope"])
    assert.equals(8, (per["s1/northeurope"] or 0) + (per["s2/westeurope"] or 0) + (per["s2/northeurope"] or 0))
    assert.is_true(math.abs((per["s1/northeurope"] or 0) - (per["s2/westeurope"] or 0)) <= 1)
  end)

  it("without a placement in the policy: the ISV's subscription and the policy's location", function()
    local slots, cap = placement.slots({ location = "westeurope" }, "isv-sub")
    assert.same({ { subscription = "isv-sub", location = "westeurope" } }, slots)
    assert.equals(250, cap)
  end)

  it("refuses what cannot fit and says how many subscriptions or regions to add", function()
    local slots, cap, n_subs, n_locs = placement.slots(policy, "isv-sub")
    local wanted = {}
    for i = 1, 1001 do wanted[i] = {} end
    local out, problem = placement.assign(slots, cap, {}, wanted, n_subs, n_locs)
    assert.is_nil(out)
    assert.matches("1001 new storage account%(s%) do not fit", problem)
    assert.matches("room for 1000; add 1 subscription%(s%) to placement.subscriptions or 1 region%(s%)", problem)
    for i = 1002, 1600 do wanted[i] = {} end
    _, problem = placement.assign(slots, cap, {}, wanted, n_subs, n_locs)
    -- 600 short: 2 subscriptions of 2 x 250, or 2 regions across 2 subscriptions
    assert.matches("add 2 subscription%(s%) to placement.subscriptions or 2 region%(s%)", problem)
  end)

  it("checks the policy's placement table", function()
    assert.is_nil(placement.check { placement = { subscriptions = { "a" } } })
    assert.matches("placement.locations", placement.check { placement = { locations = {} } })
    assert.matches("accounts_per_region", placement.check { placement = { accounts_per_region = 0 } })
  end)
end)

describe("ARM pacer", function()
  -- an ARM write bucket as Azure documents it (capacity, refill per second) on a fake clock, and
  -- `workers` requests in flight, each answered `rtt_ms` after it is sent
  local function simulate(opts)
    local t = 0
    local p = pacer.new { now = function() return t end, rates = { writes = opts.assumed_rate } }
    local server = { tokens = opts.capacity, t = 0 }
    local granted, throttled = 0, 0
    local url = "https://management.azure.com/subscriptions/0000/resourceGroups/rg?api-version=1"
    local key, kind = p:key("principal", url, "PUT")
    local ready = {}   -- per worker: the time it may act next, and its request in flight
    for w = 1, opts.workers do ready[w] = { at = 0 } end
    while t < opts.seconds * 1000 do
      -- the worker that acts next
      local w, at = 1, math.huge
      for i, r in ipairs(ready) do if r.at < at then w, at = i, r.at end end
      t = at
      local r = ready[w]
      if r.inflight then
        -- the server answers
        server.tokens = math.min(opts.capacity, server.tokens + (t - server.t) * opts.rate / 1000)
        server.t = t
        local resp
        if server.tokens >= 1 then
          server.tokens = server.tokens - 1
          granted = granted + 1
          resp = { status = 200, headers = { ["x-ms-ratelimit-remaining-subscription-writes"] =
            tostring(math.floor(server.tokens)) } }
        else
          throttled = throttled + 1
          resp = { status = 429, headers = { ["retry-after"] = tostring(math.ceil((1 - server.tokens) * 1000 / opts.rate / 1000)) } }
        end
        p:observe(key, resp)
        r.inflight, r.at = false, t
      else
        local wait = p:acquire(key, kind)
        if wait > 0 then r.at = t + wait else r.inflight, r.at = true, t + opts.rtt_ms end
      end
    end
    return granted / (opts.capacity + opts.rate * opts.seconds), throttled, granted
  end

  it("uses at least 90 % of Azure's write budget with few 429s, when it knows the refill rate", function()
    local use, throttled = simulate { capacity = 200, rate = 10, assumed_rate = 10, workers = 32, rtt_ms = 50,
                                      seconds = 120 }
    assert.is_true(use >= 0.9, ("used %.3f of the budget"):format(use))
    assert.is_true(throttled <= 40, ("%d answers were 429"):format(throttled))
  end)

  it("learns a slower server's refill rate from the remaining-writes header", function()
    local use, throttled = simulate { capacity = 60, rate = 2, assumed_rate = 10, workers = 32, rtt_ms = 50,
                                      seconds = 300 }
    assert.is_true(use >= 0.9, ("used %.3f of the budget"):format(use))
    -- without learning it would send 5 x too fast for 300 s
    assert.is_true(throttled <= 100, ("%d answers were 429"):format(throttled))
  end)

  it("learns a faster server's refill rate too, instead of leaving its budget unused", function()
    local use = simulate { capacity = 100, rate = 20, assumed_rate = 10, workers = 32, rtt_ms = 50, seconds = 120 }
    assert.is_true(use >= 0.9, ("used %.3f of the budget"):format(use))
  end)

  it("forgets buckets at rest: one per customer principal and subscription does not pile up", function()
    local t = 0
    local p = pacer.new { now = function() return t end }
    local function answer(key, status, remaining)
      p:observe(key, { status = status, headers = { ["x-ms-ratelimit-remaining-subscription-writes"] = remaining,
                                                    ["retry-after"] = status == 429 and "1" or nil } })
    end
    -- one throttled bucket, which bulk's report must still show
    local hot, kind = p:key("isv", "https://management.azure.com/subscriptions/isv/x", "PUT")
    assert.equals(0, p:acquire(hot, kind))
    answer(hot, 429, "0")
    for i = 1, 2000 do
      t = t + 1000
      local key = p:key("customer" .. i, ("https://management.azure.com/subscriptions/%d/x"):format(i), "PUT")
      assert.equals(0, p:acquire(key, kind))
      answer(key, 200, "199")
    end
    local n, seen_hot = 0, false
    for k, st in pairs(p:stats()) do
      n = n + 1
      if k == hot then seen_hot = st.throttled == 1 end
    end
    assert.is_true(n <= 512, ("%d buckets held for 2000 finished customers"):format(n))
    assert.is_true(seen_hot, "the throttled bucket was forgotten")
  end)

  it("does not pace a server that sends no remaining-requests header", function()
    local t = 0
    local p = pacer.new { now = function() return t end }
    local key, kind = p:key("principal", "https://management.azure.com/subscriptions/1/x", "PUT")
    for _ = 1, 1000 do
      assert.equals(0, p:acquire(key, kind))
      p:observe(key, { status = 200, headers = {} })
    end
  end)
end)
