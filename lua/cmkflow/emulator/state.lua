-- The emulator's whole world: tenants with their directories and signing keys, subscriptions,
-- ARM resources, role assignments, key vault contents, the clock and the knobs. One instance
-- lives in the server's Lua state; every service module reads and writes it through here.
--
-- Shapes (all ids lower-case GUID text unless noted):
--   st.tenants[tid] = { id, name, domain, cloud ("azure" | "usgov" | "china"), key (cmkflow.key, RS256 signing), kid,
--                       subscriptions = {[sub] = {id, name, state}},
--                       applications = {[object_id] = app}, service_principals = {[object_id] = sp} }
--   app = { id, appId, displayName, uniqueName?, signInAudience, tenant, created,
--           passwordCredentials = {{keyId, hint, secret_sha256, endDateTime}},
--           keyCredentials = {{keyId, type, usage, thumbprint_s256, cert_pem}},
--           federatedIdentityCredentials = {[id] = fic}, visible_at }
--   fic = { id, name, issuer, subject, audiences = {..}, description?, visible_at }
--   sp  = { id, appId, displayName, accountEnabled, servicePrincipalType ("Application" |
--           "ManagedIdentity"), appOwnerOrganizationId, tenant, app_roles = {"Application.ReadWrite.All"},
--           alternativeNames?, visible_at }
--   st.resources[lower(arm id)] = { id, type (canonical case), tenant, subscription, body (ARM JSON
--           as returned), visible_at, internal = {...provider-private, never in responses} }
--           (a resource_index map: reads, writes and pairs as a plain table, with indexes by type,
--           scope, name, tenant, principal and operation that every write keeps current)
--   st.vault_keys[vault_name_lower] = { [key_name_lower] = { name, versions = {{version, key
--           (cmkflow.key), created, updated, enabled, ...}}, deleted = nil | {deletedDate, ...} } }
--   st.identities[principal_id] = { clientId, principalId, tenant, resource_id }   (managed identities)
--   st.knobs = { delays = {service_principal, federated_credential, role_assignment} (seconds),
--                faults = {...}, throttling = {...}, lro_retry_after_s = 1 (storage create Retry-After),
--                key_material = "unique" | "pooled" (keyvault_store.lua; pooled for benchmarks only) }
-- Secrets (client secrets, private keys) are kept only as hashes or inside key userdata; `dump`
-- never emits them.
local core = require "cmkflow.core"
local rbac = require "cmkflow.emulator.rbac"
local clouds = require "cmkflow.util.clouds"
local knobs = require "cmkflow.emulator.knobs"
local profiles = require "cmkflow.emulator.profiles"
local resource_index = require "cmkflow.emulator.resource_index"
local crypto = core.crypto
local json = core.json

local M = {}
local State = {}
State.__index = State

local DNS_NAMESPACE = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"

-- ---- seed validation ------------------------------------------------------------------------

local function fail(path, msg) error("seed: " .. path .. " " .. msg, 0) end

local function check_guid(v, path)
  if type(v) ~= "string" or not crypto.is_guid(v) then fail(path, "must be a GUID") end
  return v:lower()
end

local function check_string(v, path, pattern, what)
  if type(v) ~= "string" or v == "" then fail(path, "must be a non-empty string") end
  if pattern and not v:match(pattern) then fail(path, "must be " .. what) end
  return v
end

local function check_array(v, path)
  if v == nil then return {} end
  if type(v) ~= "table" or (next(v) ~= nil and v[1] == nil) then fail(path, "must be an array") end
  return v
end

-- An array whose elements are all objects (tenants, subscriptions, principals, roles).
local function check_objects(v, path)
  v = check_array(v, path)
  for i, x in ipairs(v) do
    if type(x) ~= "table" or json.is_array(x) or x[1] ~= nil then fail(("%s[%d]"):format(path, i), "must be an object") end
  end
  return v
end

local KNOWN_ROLES -- rbac.role_names(), on the first seed checked

-- Validates the seed table; raises "seed: <field path> <problem>" naming the field.
function M.validate_seed(seed)
  if type(seed) ~= "table" then fail("", "must be a JSON object") end
  -- the state file keeps the seed's digest: a seed the codec cannot encode (nesting deeper than
  -- its limit) would load, then fail every save and every /_emulator/state
  local encoded, why = json.encode(seed)
  if not encoded then fail("", "cannot be stored: " .. tostring(why):sub(1, 120)) end
  if seed.random_seed ~= nil and math.type(seed.random_seed) ~= "integer" then
    fail("random_seed", "must be an integer")
  end
  local tenants = check_objects(seed.tenants, "tenants")
  if #tenants == 0 then fail("tenants", "must list at least one tenant") end
  KNOWN_ROLES = KNOWN_ROLES or rbac.role_names()
  local seen_t, seen_app, seen_domain = {}, {}, {}
  for i, t in ipairs(tenants) do
    local p = ("tenants[%d]"):format(i)
    local tid = check_guid(t.id, p .. ".id")
    if seen_t[tid] then fail(p .. ".id", "repeats tenant " .. tid) end
    seen_t[tid] = true
    check_string(t.name, p .. ".name", "^[%w%-_]+$", "letters, digits, '-' or '_'")
    if t.cloud ~= nil and not clouds.CLOUDS[t.cloud] then
      fail(p .. ".cloud", "must be one of " .. table.concat(clouds.NAMES, ", ") .. " (got '" .. tostring(t.cloud) .. "')")
    end
    if t.domain ~= nil then
      check_string(t.domain, p .. ".domain", "^[%w%-]+%.[%w%-%.]+$", "a domain name like contoso.example")
      if seen_domain[t.domain:lower()] then fail(p .. ".domain", "repeats " .. t.domain) end
      seen_domain[t.domain:lower()] = true
    end
    for j, s in ipairs(check_objects(t.subscriptions, p .. ".subscriptions")) do
      local sp = ("%s.subscriptions[%d]"):format(p, j)
      check_guid(s.id, sp .. ".id")
      if s.name ~= nil then check_string(s.name, sp .. ".name") end
    end
    for j, pr in ipairs(check_objects(t.principals, p .. ".principals")) do
      local pp = ("%s.principals[%d]"):format(p, j)
      check_string(pr.name, pp .. ".name")
      local app_id = check_guid(pr.appId, pp .. ".appId")
      if seen_app[app_id] then fail(pp .. ".appId", "repeats " .. app_id) end
      seen_app[app_id] = true
      if pr.secret ~= nil then check_string(pr.secret, pp .. ".secret") end
      if pr.certificate_pem ~= nil then
        check_string(pr.certificate_pem, pp .. ".certificate_pem", "%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-",
                     "a PEM certificate")
      end
      for k, r in ipairs(check_objects(pr.roles, pp .. ".roles")) do
        local rp = ("%s.roles[%d]"):format(pp, k)
        check_string(r.role, rp .. ".role")
        if not KNOWN_ROLES[r.role:lower()] then
          fail(rp .. ".role", "names no built-in role ('" .. r.role .. "')")
        end
        check_string(r.scope, rp .. ".scope", "^/subscriptions/", "an ARM scope starting /subscriptions/")
      end
      for k, g in ipairs(check_array(pr.graph_roles, pp .. ".graph_roles")) do
        check_string(g, ("%s.graph_roles[%d]"):format(pp, k), "^[%w%.]+$", "a Graph application permission")
      end
    end
  end
  if seed.knobs ~= nil then -- test knobs: {delays, faults, throttling, lro_retry_after_s, key_material} (knobs.lua)
    local ok, err = pcall(knobs.validate_knobs, seed.knobs, "knobs")
    if not ok then error("seed: " .. tostring(err), 0) end
  end
  return seed
end

-- ---- construction ---------------------------------------------------------------------------

-- Tenant signing keys when the seed's knobs say key_material = "pooled" (benchmarks only, as for
-- vault keys): 4 RSA keys per process, round-robin, so a seed of 10,000 tenants does not cost
-- 10,000 RSA generations. Tenants then share keys (and kids); tokens name their tenant (tid) and
-- are checked against that tenant's key, so they still verify only as that tenant's.
local POOLED_TENANT_KEYS, pooled_next = {}, 0

local function tenant_key(seed)
  if not (type(seed.knobs) == "table" and seed.knobs.key_material == "pooled") then return crypto.rsa_generate(2048) end
  pooled_next = pooled_next % 4 + 1
  POOLED_TENANT_KEYS[pooled_next] = POOLED_TENANT_KEYS[pooled_next] or crypto.rsa_generate(2048)
  return POOLED_TENANT_KEYS[pooled_next]
end

local function new_tenant(st, t)
  local key = tenant_key(st.seed)
  local tid = t.id:lower()
  local tenant = {
    id = tid, name = t.name, domain = (t.domain or (t.name .. ".onmicrosoft.com")):lower(),
    cloud = t.cloud or "azure", key = key, kid = crypto.b64url_encode(crypto.sha256(key:jwk().n)):sub(1, 27),
    subscriptions = {}, applications = {}, service_principals = {},
  }
  for _, s in ipairs(t.subscriptions or {}) do
    tenant.subscriptions[s.id:lower()] = { id = s.id:lower(), name = s.name or s.id, state = "Enabled" }
    st.subscription_tenant[s.id:lower()] = tid
  end
  st.tenants[tid] = tenant
  st.domains[tenant.domain] = tid
  st.domains[t.name:lower()] = st.domains[t.name:lower()] or tid
  return tenant
end

-- Creates the state from a validated seed. Raises on an invalid seed.
function M.new(seed)
  M.validate_seed(seed)
  local st = setmetatable({
    seed = seed, random_seed = seed.random_seed or 0, counter = 0, clock_offset = 0,
    tenants = {}, domains = {}, subscription_tenant = {}, apps_by_appid = {},
    resources = resource_index.wrap({}), vault_keys = {}, identities = {},
    knobs = { delays = { service_principal = 0, federated_credential = 0, role_assignment = 0 },
              faults = {}, throttling = {}, lro_retry_after_s = 1, key_material = "unique" },
  }, State)
  st.namespace = crypto.uuid5(DNS_NAMESPACE, "cmkflow-emulator:" .. st.random_seed)
  for _, t in ipairs(seed.tenants) do new_tenant(st, t) end
  for _, t in ipairs(seed.tenants) do
    for _, pr in ipairs(t.principals or {}) do st:add_seed_principal(st.tenants[t.id:lower()], pr) end
  end
  st.seed = M.kept_seed(seed)
  return st
end

-- What a state keeps of its seed once built: the fields read afterwards (profile, knobs), its
-- digest, and the rest as JSON text for a reset (M.seed_of). A seed of 10,000 tenants is 16 MiB
-- as Lua tables and 2.3 MiB as text (docs/performance.md, "Emulator at scale").
function M.kept_seed(seed)
  local kept = { profile = seed.profile, knobs = seed.knobs, random_seed = seed.random_seed,
                 text = assert(json.encode(seed)) }
  M.keep_digest(kept, M.seed_digest(seed))
  return kept
end

-- The whole seed a state was built from, as tables.
function M.seed_of(kept) return assert(json.decode(kept.text)) end

-- ---- ids, time, visibility ------------------------------------------------------------------

-- A deterministic GUID: the same seed and the same sequence of creations give the same ids.
function State:id(kind)
  self.counter = self.counter + 1
  return crypto.uuid5(self.namespace, (kind or "id") .. ":" .. self.counter)
end

function State:now() return os.time() + self.clock_offset end
function State:advance(seconds) self.clock_offset = self.clock_offset + seconds end

-- An ISO 8601 UTC timestamp of the emulator's clock (or of t).
function State:iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t or self:now()) end

-- The time at which an object created now becomes visible, per the eventual-consistency knob.
-- A delay drawn from a profile is also noted for the request's journal entry (control.lua).
function State:visible_from(kind)
  local d = self.knobs.delays[kind]
  if type(d) ~= "table" then return self:now() + (d or 0) end
  self.draws = (self.draws or 0) + 1 -- a profile's distribution: one seeded draw per object
  local at = self:now() + math.floor(profiles.sample(d, self.random_seed, self.draws) + 0.5)
  if self.control and self.control.drawn then self.control.drawn[kind] = at end
  return at
end
function State:visible(obj) return obj ~= nil and (obj.visible_at or 0) <= self:now() end

-- ---- directory helpers ----------------------------------------------------------------------

-- A tenant by GUID, verified domain or seed name (case-insensitive), or nil.
function State:tenant(ref)
  if type(ref) ~= "string" then return nil end
  ref = ref:lower()
  return self.tenants[ref] or self.tenants[self.domains[ref] or ""]
end

function State:tenant_of_subscription(sub) return self.subscription_tenant[(sub or ""):lower()] end

-- Service principals by lower appId per tenant.service_principals table: {[appid] = {[sp] = true}},
-- built on the first lookup, added to by add_service_principal. A removal is seen on reading (the
-- principal must still be in the table), so code that removes one directly needs no hook.
local SP_BY_APPID = setmetatable({}, { __mode = "k" })

local function sp_index(sps)
  local ix = SP_BY_APPID[sps]
  if not ix then
    ix = {}
    for _, sp in pairs(sps) do
      local a = sp.appId:lower()
      ix[a] = ix[a] or {}
      ix[a][sp] = true
    end
    SP_BY_APPID[sps] = ix
  end
  return ix
end

function State:add_application(tenant, fields)
  local app = {
    id = fields.id or self:id("application"), appId = fields.appId or self:id("appId"),
    displayName = fields.displayName, uniqueName = fields.uniqueName,
    signInAudience = fields.signInAudience or "AzureADMyOrg", tenant = tenant.id,
    created = self:iso(), passwordCredentials = {}, keyCredentials = {},
    federatedIdentityCredentials = {}, visible_at = fields.visible_at or self:now(),
  }
  tenant.applications[app.id] = app
  self.apps_by_appid[app.appId:lower()] = app
  return app
end

function State:add_service_principal(tenant, fields)
  local sp = {
    id = fields.id or self:id("servicePrincipal"), appId = fields.appId, displayName = fields.displayName,
    accountEnabled = fields.accountEnabled ~= false,
    servicePrincipalType = fields.servicePrincipalType or "Application",
    appOwnerOrganizationId = fields.appOwnerOrganizationId, tenant = tenant.id,
    app_roles = fields.app_roles or {}, alternativeNames = fields.alternativeNames,
    visible_at = fields.visible_at or self:now(),
  }
  tenant.service_principals[sp.id] = sp
  local ix = SP_BY_APPID[tenant.service_principals]
  if ix and sp.appId then
    local a = sp.appId:lower()
    ix[a] = ix[a] or {}
    ix[a][sp] = true
  end
  return sp
end

-- The home application object of appId (in whatever tenant registered it), or nil.
function State:application_by_appid(app_id) return self.apps_by_appid[(app_id or ""):lower()] end

-- The service principal for appId in tenant (only visible ones unless include_hidden), or nil.
function State:service_principal_by_appid(tenant, app_id, include_hidden)
  local sps = tenant.service_principals
  for sp in pairs(sp_index(sps)[(app_id or ""):lower()] or {}) do
    if sps[sp.id] == sp and (include_hidden or self:visible(sp)) then return sp end
  end
end

-- A directory object (service principal) by object id across tenant, or nil.
function State:principal(tenant, object_id, include_hidden)
  local sp = tenant.service_principals[(object_id or ""):lower()]
  if sp and (include_hidden or self:visible(sp)) then return sp end
end

function State:add_seed_principal(tenant, pr)
  local app = self:add_application(tenant, { appId = pr.appId:lower(), displayName = pr.name })
  if pr.secret then
    app.passwordCredentials[1] = { keyId = self:id("secret"), hint = pr.secret:sub(1, 3),
      secret_sha256 = crypto.sha256_hex(pr.secret), displayName = "seed", endDateTime = "2299-12-31T00:00:00Z" }
  end
  if pr.certificate_pem then
    -- only the certificate is needed (and kept): the private key stays with the client
    local kc, err = self:add_key_credential(app, pr.certificate_pem, { displayName = "seed" })
    if not kc then error("seed: principal '" .. pr.name .. "' certificate_pem: " .. err, 0) end
  end
  local sp = self:add_service_principal(tenant, { appId = app.appId, displayName = pr.name,
    appOwnerOrganizationId = tenant.id, app_roles = pr.graph_roles })
  for _, r in ipairs(pr.roles or {}) do
    rbac.seed_assignment(self, tenant, sp.id, r.role, r.scope)
  end
  return app, sp
end

-- Adds a federated identity credential to app; visible to the token service from
-- fields.visible_at (default: per the federated_credential delay knob).
function State:add_federated_credential(app, fields)
  local fic = { id = fields.id or self:id("federatedIdentityCredential"), name = fields.name, issuer = fields.issuer,
    subject = fields.subject, audiences = fields.audiences or {}, description = fields.description,
    visible_at = fields.visible_at or self:visible_from("federated_credential") }
  app.federatedIdentityCredentials[fic.id] = fic
  return fic
end

-- Deletes an application object (and its federated credentials). Its service principal in the
-- home tenant goes with it; service principals in other tenants stay, marked orphaned = true.
function State:delete_application(app)
  local home = self.tenants[app.tenant]
  if home then home.applications[app.id] = nil end
  if self.apps_by_appid[app.appId:lower()] == app then self.apps_by_appid[app.appId:lower()] = nil end
  app.federatedIdentityCredentials = {}
  for tid, t in pairs(self.tenants) do
    for id, sp in pairs(t.service_principals) do
      if sp.appId:lower() == app.appId:lower() then
        if tid == app.tenant then t.service_principals[id] = nil else sp.orphaned = true end
      end
    end
  end
end

function State:delete_service_principal(tenant, sp)
  tenant.service_principals[sp.id] = nil
end

-- Registers a certificate (PEM; only its first CERTIFICATE block is kept, never a private key)
-- as a keyCredential of app. Needs no private key: thumbprint_s256 is base64url SHA-256 of the DER.
-- Returns the keyCredential, or nil, message when the text holds no readable certificate.
function State:add_key_credential(app, pem, fields)
  local b64 = type(pem) == "string" and pem:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-(.-)%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
  if not b64 then return nil, "not a PEM certificate" end
  local cert_pem = "-----BEGIN CERTIFICATE-----" .. b64 .. "-----END CERTIFICATE-----\n"
  local ok, der = pcall(crypto.b64_decode, (b64:gsub("%s", "")))
  if not ok or type(der) ~= "string" or #der == 0 or not pcall(crypto.key_from_pem, cert_pem) then
    return nil, "the certificate cannot be read"
  end
  fields = fields or {}
  local kc = { keyId = fields.keyId or self:id("cert"), type = "AsymmetricX509Cert", usage = "Verify",
    displayName = fields.displayName, thumbprint_s256 = crypto.b64url_encode(crypto.sha256(der)),
    thumbprint = fields.thumbprint, cert_pem = cert_pem }
  app.keyCredentials[#app.keyCredentials + 1] = kc
  return kc
end

-- The key vault resource record named name (case-insensitive; soft-deleted vaults excluded), or nil.
function State:vault(name)
  if type(name) ~= "string" or name == "" then return nil end
  name = name:lower()
  for _, r in pairs(self:resources_named("Microsoft.KeyVault/vaults", name)) do
    if not r.deleted and r.body and type(r.body.name) == "string" and r.body.name:lower() == name then
      return r
    end
  end
end

-- ---- resource lookups (st.resources' indexes, resource_index.lua) --------------------------------
-- Each returns a table lower id -> record (read-only; empty when none), unsorted.

-- Records of rtype whose body.name is name (case-insensitive).
function State:resources_named(rtype, name)
  return resource_index.bucket(self.resources, "name", rtype, name)
end

-- Records of rtype in tenant tenant_id.
function State:resources_in_tenant(tenant_id, rtype)
  return resource_index.bucket(self.resources, "tenant", tenant_id, rtype)
end

-- Role assignment records of principal principal_id in tenant tenant_id (visible or not).
function State:role_assignments_of(tenant_id, principal_id)
  return resource_index.bucket(self.resources, "principal", tenant_id, principal_id)
end

-- Packs the records read or written lately, all but the most recent (resource_index.settle):
-- the emulator calls it between requests, so no handler holds a table that is packed under it.
function State:settle() resource_index.settle(self.resources) end

-- The record whose internal.operation is op, or nil.
function State:resource_by_operation(op)
  local _, r = next(resource_index.bucket(self.resources, "operation", op))
  return r
end

-- Records of any type whose id lies under scope prefix (a resource group's bucket when prefix is
-- in one; every record otherwise).
function State:resources_under(prefix)
  local scope = resource_index.indexed_scope(prefix)
  local b = scope and scope:find("/resourcegroups/", 1, true) and resource_index.bucket(self.resources, "under", scope)
    or self.resources
  local out = {}
  for _, r in pairs(b) do
    if rbac.scope_contains(prefix, r.id) then out[#out + 1] = r end
  end
  return out
end

-- Records of rtype whose id lies under scope prefix (every one when prefix is nil): from the
-- bucket of the deepest subscription or resource group containing prefix, then checked against
-- prefix itself (rbac.scope_contains).
function State:resources_of(rtype, prefix)
  local scope = prefix and resource_index.indexed_scope(prefix)
  local b = scope and resource_index.bucket(self.resources, "scope", scope, rtype)
    or resource_index.bucket(self.resources, "type", rtype)
  local out = {}
  for _, r in pairs(b) do
    if prefix == nil or rbac.scope_contains(prefix, r.id) then out[#out + 1] = r end
  end
  return out
end

-- Key Vault contents without material: { [vault] = array of {name, deleted, versions = array of
-- {version, kty, key_size, enabled, created}} }, sorted by key name (for GET /_emulator/state).
function State:vault_keys_view()
  local out = json.object()
  for vault, keys in pairs(self.vault_keys) do
    local list = json.array()
    for _, rec in pairs(keys) do
      local versions = json.array()
      for _, v in ipairs(rec.versions) do
        versions[#versions + 1] = { version = v.version, kty = v.kty, key_size = v.key_size, enabled = v.enabled,
          created = v.created }
      end
      list[#list + 1] = { name = rec.name, deleted = rec.deleted ~= nil, versions = versions }
    end
    table.sort(list, function(a, b) return a.name:lower() < b.name:lower() end)
    out[vault] = list
  end
  return out
end

-- ---- the whole state as JSON (GET /_emulator/state) -------------------------------------------

local function sorted_values(t, key)
  local out = json.array()
  for _, v in pairs(t) do out[#out + 1] = v end
  table.sort(out, function(a, b) return tostring(a[key or "id"]) < tostring(b[key or "id"]) end)
  return out
end

-- Public view: no secrets, no key material, no internals.
function State:dump()
  local tenants = json.array()
  local by_tenant = {}
  for _, r in pairs(self.resources) do
    if r.tenant ~= nil then
      by_tenant[r.tenant] = by_tenant[r.tenant] or {}
      table.insert(by_tenant[r.tenant], r)
    end
  end
  for _, t in pairs(self.tenants) do
    local apps, sps, fics = json.array(), json.array(), json.array()
    for _, a in pairs(t.applications) do
      apps[#apps + 1] = { id = a.id, appId = a.appId, displayName = a.displayName, uniqueName = a.uniqueName or json.null,
        signInAudience = a.signInAudience, secrets = #a.passwordCredentials, certificates = #a.keyCredentials }
      for _, f in pairs(a.federatedIdentityCredentials) do
        fics[#fics + 1] = { id = f.id, application = a.id, name = f.name, issuer = f.issuer, subject = f.subject,
          audiences = json.array(f.audiences) }
      end
    end
    for _, s in pairs(t.service_principals) do
      sps[#sps + 1] = { id = s.id, appId = s.appId, displayName = s.displayName, accountEnabled = s.accountEnabled,
        servicePrincipalType = s.servicePrincipalType }
    end
    local resources, assignments = json.array(), json.array()
    for _, r in ipairs(by_tenant[t.id] or {}) do
      if r.type:lower() == "microsoft.authorization/roleassignments" then
        assignments[#assignments + 1] = r.body
      else
        resources[#resources + 1] = r.body
      end
    end
    local by = function(a, b) return tostring(a.id or a.name) < tostring(b.id or b.name) end
    table.sort(apps, by) table.sort(sps, by) table.sort(fics, by) table.sort(resources, by) table.sort(assignments, by)
    tenants[#tenants + 1] = { id = t.id, name = t.name, domain = t.domain, cloud = t.cloud,
      subscriptions = sorted_values(t.subscriptions), applications = apps, federated_credentials = fics,
      service_principals = sps, resources = resources, role_assignments = assignments }
  end
  table.sort(tenants, function(a, b) return a.name < b.name end)
  return { tenants = tenants, vault_keys = self:vault_keys_view(), clock = self:iso(), random_seed = self.random_seed }
end

-- ---- snapshots and persistence (control_api.lua) ---------------------------------------------------

-- Fields of a state that are not the world: test bookkeeping, configuration and the seed.
local NOT_WORLD = { control = true, config = true, seed = true, knobs = true }

local function deep_copy(v, memo)
  if type(v) ~= "table" then return v end
  if memo[v] then return memo[v] end
  if resource_index.is_map(v) then -- a copy of the records, with its own indexes
    local c = resource_index.wrap(deep_copy(resource_index.raw(v), memo))
    memo[v] = c
    return c
  end
  local c = {}
  memo[v] = c
  for k, x in pairs(v) do c[deep_copy(k, memo)] = deep_copy(x, memo) end
  return setmetatable(c, getmetatable(v))
end

-- A deep copy of the world (shared references stay shared; key userdata are immutable and shared).
function State:snapshot()
  local memo, snap = {}, {}
  for k, v in pairs(self) do
    if not NOT_WORLD[k] then snap[k] = deep_copy(v, memo) end
  end
  return snap
end

-- Replaces the world with a copy of snapshot (knobs, journal and configuration stay).
function State:restore(snap)
  for k in pairs(self) do
    if not NOT_WORLD[k] then self[k] = nil end
  end
  local memo = {}
  for k, v in pairs(snap) do self[k] = deep_copy(v, memo) end
  if not resource_index.is_map(self.resources) then self.resources = resource_index.wrap(self.resources) end
end

-- The PEM of a key userdata, computed once per key (keys are immutable; the state is saved after
-- every mutating request, and a PEM export costs more than the rest of a small world's encoding).
local PEM_CACHE = setmetatable({}, { __mode = "k" })
local function key_pem(v)
  local pem = PEM_CACHE[v]
  if pem == nil then
    local ok, p = pcall(function() return v:private_pem() end)
    pem = ok and type(p) == "string" and p or false
    PEM_CACHE[v] = pem
  end
  return pem or nil
end

-- The complete state (world and knobs, secret hashes, the emulator's own keys as PEM) as JSON text.
-- Every table is tagged so that identity, metatables and key types survive a round trip.
function State:serialize()
  local ids, n = {}, 0
  local function enc(v)
    local t = type(v)
    if t == "string" or t == "boolean" then return v end
    if t == "number" then
      if v ~= v or v == math.huge or v == -math.huge then return { ["$"] = "num", v = tostring(v) } end
      return v
    end
    if v == json.null then return { ["$"] = "null" } end
    if t == "userdata" then
      local pem = key_pem(v)
      return pem and { ["$"] = "key", pem = pem } or nil
    end
    if t ~= "table" then return nil end
    if ids[v] then return { ["$"] = "ref", id = ids[v] } end
    n = n + 1
    local id = n
    ids[v] = id
    local mt = getmetatable(v)
    local kv = json.array()
    for k, x in pairs(v) do
      local ek, ex = enc(k), enc(x)
      if ek ~= nil and ex ~= nil then kv[#kv + 1] = ek kv[#kv + 1] = ex end
    end
    return { ["$"] = "table", id = id, kv = kv,
             mt = mt == json.array_mt and "array" or mt == json.object_mt and "object" or nil }
  end
  local world = {}
  for k, v in pairs(self) do
    if k ~= "control" and k ~= "config" and k ~= "seed" then world[k] = v end
  end
  -- the records as JSON text (or tables, if touched since the last settle): loading wraps them
  -- again either way, and decoding every one here would only cost time
  world.resources = resource_index.texts(self.resources)
  return assert(json.encode({ version = 1, seed_sha256 = M.seed_digest(self.seed), world = enc(world) }))
end

-- A digest of the seed (persisted state is only loaded for the seed that made it). Kept per seed
-- table (a seed is never changed once loaded): every durable write names it, and encoding a seed
-- of 10,000 tenants for each one costs as much as a small state's whole write.
local SEED_DIGESTS = setmetatable({}, { __mode = "k" })

-- (a kept seed's digest is the one of the seed it was made from: M.keep_digest; never a field of
-- the seed, which the seed file's author could set)
function M.keep_digest(kept, digest) SEED_DIGESTS[kept] = digest end

function M.seed_digest(seed)
  local digest = seed and SEED_DIGESTS[seed]
  if digest then return digest end
  local seed_view = {}
  for k, v in pairs(seed or {}) do if k ~= "knobs" then seed_view[k] = v end end
  digest = crypto.sha256_hex(assert(json.encode(seed_view, { sort_keys = true })))
  if seed then SEED_DIGESTS[seed] = digest end
  return digest
end

-- Loads serialized text into st (replacing its world and knobs). Returns true, or nil, reason.
function State:deserialize(text)
  local doc = json.decode(text)
  if type(doc) ~= "table" or doc.version ~= 1 or type(doc.world) ~= "table" then return nil, "not an emulator state file" end
  if doc.seed_sha256 ~= M.seed_digest(self.seed) then return nil, "it was made from another seed" end
  local tables = {}
  local function dec(v)
    if type(v) ~= "table" then return v end
    local tag = v["$"]
    if tag == "null" then return json.null end
    if tag == "num" then return tonumber(v.v) end
    if tag == "key" then return crypto.key_from_pem(v.pem) end
    if tag == "ref" then return tables[v.id] end
    local t = setmetatable({}, v.mt == "array" and json.array_mt or v.mt == "object" and json.object_mt or nil)
    tables[v.id] = t
    for i = 1, #v.kv, 2 do
      local k = dec(v.kv[i])
      if k ~= nil then t[k] = dec(v.kv[i + 1]) end
    end
    return t
  end
  local ok, world = pcall(dec, doc.world)
  if not ok or type(world) ~= "table" then return nil, "it cannot be read: " .. tostring(world) end
  -- the file holds the records as a plain map (as before the indexes existed); they are rebuilt
  -- (a record that is not a JSON object, or text that does not decode, makes the file unreadable)
  local wrapped, map = pcall(resource_index.wrap, type(world.resources) == "table" and world.resources or {})
  if not wrapped then return nil, "it cannot be read: " .. tostring(map) end
  world.resources = map
  for k in pairs(self) do
    if k ~= "control" and k ~= "config" and k ~= "seed" then self[k] = nil end
  end
  for k, v in pairs(world) do self[k] = v end
  return true
end

-- Writes the serialized state to path: mode 0600, replaced atomically and durably (the file is
-- fsync'd before the rename and the directory after it, core.durable). Returns true or nil, err.
function State:save(path)
  return core.durable.replace(path, self:serialize(), tonumber("600", 8))
end

M.State = State
return M
