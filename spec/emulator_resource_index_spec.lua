-- The emulator's indexes (resource_index.lua, state.lua) agree with the data they index: after
-- sequences of creates, replaces (also of records changed in place), deletes, snapshot/restore
-- and a save/load round trip, every lookup answers what a full scan of st.resources answers; and
-- records packed at rest read back as they were.
-- No timings here: the flat cost is measured by tools/bench/emulator_scale.lua.
local emulator = require "cmkflow.emulator"
local resource_index = require "cmkflow.emulator.resource_index"
local json = require("cmkflow.core").json
local rbac = require "cmkflow.emulator.rbac"

local RA = "Microsoft.Authorization/roleAssignments"
local TYPES = { "Microsoft.Resources/resourceGroups", "Microsoft.KeyVault/vaults", "Microsoft.Storage/storageAccounts",
                "Microsoft.ManagedIdentity/userAssignedIdentities", RA }

local function ids(list)
  local out = {}
  for _, r in pairs(list) do out[#out + 1] = r.id:lower() end
  table.sort(out)
  return out
end

local function scan(st, keep)
  local out = {}
  for _, r in pairs(st.resources) do
    if keep(r) then out[#out + 1] = r end
  end
  return ids(out)
end

local function lower(s) return type(s) == "string" and s:lower() or nil end

-- Every lookup of the indexes equals the same question answered by a full scan.
local function assert_consistent(st, tenants, principals, subs)
  for _, rtype in ipairs(TYPES) do
    local t = rtype:lower()
    assert.same(scan(st, function(r) return r.type:lower() == t end), ids(st:resources_of(rtype)))
    local prefixes = {}
    for _, sub in ipairs(subs) do
      prefixes[#prefixes + 1] = "/subscriptions/" .. sub
      prefixes[#prefixes + 1] = "/subscriptions/" .. sub:upper() .. "/"
      prefixes[#prefixes + 1] = "/subscriptions/" .. sub .. "/resourceGroups"
      for g = 1, 3 do
        prefixes[#prefixes + 1] = "/subscriptions/" .. sub .. "/resourceGroups/RG" .. g
        prefixes[#prefixes + 1] = "/subscriptions/" .. sub .. "/resourcegroups/rg" .. g
          .. "/providers/Microsoft.KeyVault/vaults/kv" .. g
      end
    end
    prefixes[#prefixes + 1] = "/"
    for _, p in ipairs(prefixes) do
      assert.same(scan(st, function(r) return r.type:lower() == t and rbac.scope_contains(p, r.id) end),
                  ids(st:resources_of(rtype, p)), rtype .. " under " .. p)
      if p:find("/resource", 1, true) then
        assert.same(scan(st, function(r) return rbac.scope_contains(p, r.id) end), ids(st:resources_under(p)), p)
      end
    end
    for _, tid in ipairs(tenants) do
      assert.same(scan(st, function(r) return r.type:lower() == t and r.tenant == tid end),
                  ids(st:resources_in_tenant(tid, rtype)))
    end
    for n = 1, 6 do
      for _, name in ipairs { "kv" .. n, "st" .. n, "RG" .. n, "KV" .. n } do
        assert.same(scan(st, function(r) return r.type:lower() == t and lower(r.body.name) == name:lower() end),
                    ids(st:resources_named(rtype, name)))
      end
    end
  end
  for _, tid in ipairs(tenants) do
    for _, pid in ipairs(principals) do
      assert.same(scan(st, function(r)
        return r.type == RA and r.tenant == tid and r.body.properties.principalId:lower() == pid:lower()
      end), ids(st:role_assignments_of(tid, pid:upper())))
    end
  end
  for _, r in pairs(st.resources) do
    local op = type(r.internal) == "table" and r.internal.operation
    if op then assert.equal(r, st:resource_by_operation(op)) end
  end
  assert.is_nil(st:resource_by_operation("no-such-operation"))
end

-- A deterministic stream of create / replace / delete operations over a small id space, so the
-- same id is created, replaced (sometimes by a record changed in place) and deleted many times.
local function churn(st, steps, tenants, principals, subs)
  local x = 12345
  local function rnd(n)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % n + 1
  end
  for _ = 1, steps do
    local sub, g, n = subs[rnd(#subs)], rnd(3), rnd(6)
    local tid = tenants[rnd(#tenants)]
    local rg = "/subscriptions/" .. sub .. "/resourceGroups/RG" .. g
    local kind = rnd(5)
    local rec
    if kind == 1 then
      rec = { id = rg, type = TYPES[1], tenant = tid, body = { name = "RG" .. g } }
    elseif kind == 2 then
      local id = rg .. "/providers/Microsoft.KeyVault/vaults/kv" .. n
      rec = { id = id, type = TYPES[2], tenant = tid, body = { name = "kv" .. n, properties = {} } }
    elseif kind == 3 then
      local id = rg .. "/providers/Microsoft.Storage/storageAccounts/st" .. n
      rec = { id = id, type = TYPES[3], tenant = tid, body = { name = "st" .. n },
              internal = { operation = "op-" .. sub:sub(1, 4) .. "-" .. g .. "-" .. n } }
    elseif kind == 4 then
      local id = rg .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id" .. n
      rec = { id = id, type = TYPES[4], tenant = tid, body = { name = "id" .. n } }
    else
      local scope = rnd(2) == 1 and rg or (rg .. "/providers/Microsoft.KeyVault/vaults/kv" .. g)
      local id = scope .. "/providers/Microsoft.Authorization/roleAssignments/0000000" .. n
      rec = { id = id, type = RA, tenant = tid,
              body = { name = "0000000" .. n, properties = { principalId = principals[rnd(#principals)], scope = scope } } }
    end
    local key = rec.id:lower()
    local action = rnd(4)
    if action == 1 then
      st.resources[key] = nil
    elseif action == 2 and st.resources[key] then
      -- changed in place, then stored again: the old index entries must go
      local old = st.resources[key]
      old.tenant = tenants[rnd(#tenants)]
      if old.type == RA then old.body.properties.principalId = principals[rnd(#principals)] end
      st.resources[key] = old
    else
      st.resources[key] = rec
    end
  end
end

describe("emulator indexes", function()
  local st, tenants, principals, subs
  before_each(function()
    st = emulator.new_state {}
    tenants, subs = {}, {}
    for tid, t in pairs(st.tenants) do
      tenants[#tenants + 1] = tid
      for sub in pairs(t.subscriptions) do subs[#subs + 1] = sub end
    end
    table.sort(tenants)
    table.sort(subs)
    principals = { "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
                   "AAAAAAAA-3333-4333-8333-333333333333" }
  end)

  it("answer what a full scan answers after creates, replaces and deletes", function()
    assert_consistent(st, tenants, principals, subs) -- the seed's own role assignments
    for _ = 1, 6 do
      churn(st, 150, tenants, principals, subs)
      assert_consistent(st, tenants, principals, subs)
    end
    local n = 0
    for _ in pairs(st.resources) do n = n + 1 end
    assert.is_true(n > 20) -- the churn leaves a world worth checking
  end)

  it("stay consistent through snapshot and restore, and a copy's changes stay in the copy", function()
    churn(st, 300, tenants, principals, subs)
    local before = scan(st, function() return true end)
    local snap = st:snapshot()
    churn(st, 300, tenants, principals, subs)
    assert_consistent(st, tenants, principals, subs)
    st:restore(snap)
    assert.same(before, scan(st, function() return true end))
    assert_consistent(st, tenants, principals, subs)
    -- writing to the restored world does not reach the snapshot
    for key in pairs(st.resources) do st.resources[key] = nil end
    assert.same({}, ids(st:resources_of(TYPES[1])))
    st:restore(snap)
    assert.same(before, scan(st, function() return true end))
    assert_consistent(st, tenants, principals, subs)
  end)

  it("are rebuilt when a saved state is loaded (the file keeps the plain map it always had)", function()
    churn(st, 400, tenants, principals, subs)
    local text = st:serialize()
    local loaded = emulator.new_state {}
    assert(loaded:deserialize(text))
    assert.same(scan(st, function() return true end), scan(loaded, function() return true end))
    assert_consistent(loaded, tenants, principals, subs)
    churn(loaded, 200, tenants, principals, subs)
    assert_consistent(loaded, tenants, principals, subs)
  end)

  it("pack records at rest and unpack them when read, changes made in place included", function()
    churn(st, 400, tenants, principals, subs)
    local texts = {}
    for key, r in pairs(st.resources) do texts[key] = json.encode(r) end
    resource_index.settle(st.resources, 0)
    local n = 0
    for _, v in pairs(resource_index.raw(st.resources)) do
      assert.equal("string", type(v))
      assert.equal(1, v:byte(1)) -- json.pack's version byte
      n = n + 1
    end
    assert.is_true(n > 20)
    assert_consistent(st, tenants, principals, subs) -- every lookup unpacks what it answers
    for key, r in pairs(st.resources) do assert.equal(texts[key], json.encode(r)) end
    local key = next(texts)
    st.resources[key].body.tags = { changed = "in place" }
    resource_index.settle(st.resources, 0)
    assert.equal("string", type(resource_index.raw(st.resources)[key]))
    assert.same({ changed = "in place" }, st.resources[key].body.tags)
  end)

  it("keep the records read most recently as tables, and pack the older ones", function()
    churn(st, 200, tenants, principals, subs)
    resource_index.settle(st.resources, 0)
    local keys = {}
    for key in pairs(resource_index.raw(st.resources)) do keys[#keys + 1] = key end
    table.sort(keys)
    for i = 1, 3 do assert.is_table(st.resources[keys[i]]) end
    assert.is_table(st.resources[keys[1]]) -- read again: still the first one read
    resource_index.settle(st.resources, 2)
    local raw = resource_index.raw(st.resources)
    assert.equal("string", type(raw[keys[1]]))
    assert.equal("table", type(raw[keys[2]]))
    assert.equal("table", type(raw[keys[3]]))
    assert.equal("string", type(raw[keys[4]]))
  end)

  it("save packed records as JSON text and load them again", function()
    churn(st, 400, tenants, principals, subs)
    resource_index.settle(st.resources, 0)
    local text = st:serialize()
    assert.is_nil(text:find("\1", 1, true)) -- no packed bytes in the file
    local loaded = emulator.new_state {}
    assert(loaded:deserialize(text))
    assert.same(scan(st, function() return true end), scan(loaded, function() return true end))
    for key, r in pairs(st.resources) do assert.equal(json.encode(r), json.encode(loaded.resources[key])) end
    assert_consistent(loaded, tenants, principals, subs)
  end)

  it("refuse a state file holding a damaged record, and leave the world as it was", function()
    churn(st, 200, tenants, principals, subs)
    local doc = json.decode(st:serialize())
    local before = scan(st, function() return true end)
    local loaded = emulator.new_state {}
    local damaged = false
    for i = 1, #doc.world.kv, 2 do -- the world's tagged fields: find the resources' map
      local field = doc.world.kv[i + 1]
      if doc.world.kv[i] == "resources" then
        field.kv[2] = "\1not deflate"
        damaged = true
      end
    end
    assert.is_true(damaged)
    local ok, why = loaded:deserialize(json.encode(doc))
    assert.is_nil(ok)
    assert.matches("cannot be read", why)
    assert.same(scan(emulator.new_state {}, function() return true end), scan(loaded, function() return true end))
    assert.is_true(#before > 20)
  end)

  it("name a state's seed by the seed's content, never by a field the seed's author wrote", function()
    local state = require "cmkflow.emulator.state"
    local seed = require("cmkflow.emulator.demo_seed")
    local other = json.decode(json.encode(seed))
    other.random_seed = 99
    local theirs = emulator.new_state { seed = other }
    other.digest = state.seed_digest(st.seed) -- claims to be the demo seed
    local spoofed = emulator.new_state { seed = other }
    assert.are_not.equal(state.seed_digest(st.seed), state.seed_digest(spoofed.seed))
    local ok, why = spoofed:deserialize(st:serialize())
    assert.is_nil(ok)
    assert.matches("another seed", why)
    assert.is_true(theirs:deserialize(theirs:serialize()))
  end)

  it("find a service principal by appId per tenant, and not once it is removed", function()
    local isv = st:tenant("isv")
    local app = st:add_application(isv, { displayName = "multi" })
    assert.is_nil(st:service_principal_by_appid(isv, app.appId))
    local sp = st:add_service_principal(isv, { appId = app.appId, displayName = "multi" })
    assert.equal(sp, st:service_principal_by_appid(isv, app.appId:upper()))
    assert.is_nil(st:service_principal_by_appid(st:tenant("customer"), app.appId))
    isv.service_principals[sp.id] = nil -- removed without the state's help
    assert.is_nil(st:service_principal_by_appid(isv, app.appId))
    isv.service_principals[sp.id] = sp
    assert.equal(sp, st:service_principal_by_appid(isv, app.appId))
    local other = st:tenant("customer")
    local sp2 = st:add_service_principal(other, { appId = app.appId, displayName = "multi" })
    assert.equal(sp2, st:service_principal_by_appid(other, app.appId))
    assert.equal(sp, st:service_principal_by_appid(isv, app.appId))
  end)
end)
