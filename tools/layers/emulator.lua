-- The emulator's module graph: which emulator module may require which. Data for the layer test
-- (a `require` of a module not listed for the requiring file fails it) and for docs/architecture.md.
--
-- Shape: { [module] = { modules it may require... } }. Every emulator module may also require the
-- shared utilities in EXTERNAL (the C core, form encoding, file helpers) and nothing else outside
-- lua/cmkflow/emulator/: not the workflow layer (cmkflow.workflow.*, cmkflow.host, cmkflow.sandbox,
-- cmkflow.policy), not the CLI (cmkflow.cli), not the Azure clients (cmkflow.azure.*, cmkflow.http):
-- the emulator plays Azure and must not share code with the clients it is testing. Conversely
-- nothing under lua/cmkflow/azure/ may require an emulator module.
--
-- The lists below are exactly today's edges, grouped from the bottom up; the graph is acyclic and
-- every require sits at the top of its file (none hidden in a function to dodge a cycle). A new
-- module gets its own entry; an edge that would close a cycle is a design error, not an entry:
-- move the shared part down (as arm_context.lua, knobs.lua and keyvault_store.lua were) or hand the
-- upper module in as data (as arm.lua hands its PROVIDERS table to requests, ctx.providers).
-- A module is named as `require` names it ("cmkflow.emulator" is init.lua).
local EXTERNAL = { "cmkflow.core", "cmkflow.form", "cmkflow.util.file", "cmkflow.util.clouds" }

local function may(...)
  local out = {}
  for _, m in ipairs(EXTERNAL) do out[#out + 1] = m end
  for _, m in ipairs({ ... }) do out[#out + 1] = m end
  return out
end

local E = "cmkflow.emulator."

return {
  -- foundations: no other emulator module
  [E .. "respond"] = may(),
  [E .. "tokens"] = may(),
  [E .. "rbac"] = may(),
  [E .. "pattern"] = may(),
  [E .. "profiles"] = may(),
  [E .. "knobs"] = may(E .. "pattern", E .. "profiles"),
  [E .. "router"] = may(),
  [E .. "demo_seed"] = may(),
  [E .. "keyvault_store"] = may(),
  [E .. "api_versions"] = may(),
  [E .. "pack_dictionary"] = may(),
  [E .. "resource_index"] = may(E .. "pack_dictionary"),
  -- the emulated world (the one state every service reads and writes)
  [E .. "state"] = may(E .. "knobs", E .. "profiles", E .. "rbac", E .. "resource_index"),
  -- what the modules of one service share: ARM's request context, Graph's OData layer, Key Vault's
  -- authentication and envelope, Entra's token issuance (also used by Storage's key check)
  [E .. "arm_context"] = may(E .. "api_versions", E .. "rbac", E .. "respond"),
  [E .. "graph_odata"] = may(E .. "respond"),
  [E .. "keyvault_auth"] = may(E .. "keyvault_store", E .. "rbac", E .. "respond", E .. "tokens"),
  [E .. "entra_grant"] = may(E .. "tokens"),
  -- one module per resource type or job
  [E .. "graph_applications"] = may(E .. "graph_odata", E .. "respond"),
  [E .. "graph_service_principals"] = may(E .. "graph_applications", E .. "graph_odata", E .. "respond"),
  [E .. "graph_federated_credentials"] = may(E .. "graph_applications", E .. "graph_odata", E .. "respond"),
  [E .. "keyvault_keys"] = may(E .. "keyvault_auth", E .. "keyvault_store", E .. "respond"),
  [E .. "keyvault_arm_keys"] = may(E .. "keyvault_keys", E .. "keyvault_store", E .. "rbac", E .. "respond"),
  [E .. "storage_cmk"] = may(E .. "entra_grant", E .. "keyvault_auth", E .. "keyvault_store"),
  [E .. "arm_resources"] = may(E .. "arm_context", E .. "rbac"),
  [E .. "arm_authorization"] = may(E .. "arm_context", E .. "rbac"),
  [E .. "arm_identity"] = may(E .. "arm_context"),
  [E .. "arm_keyvault"] = may(E .. "arm_context", E .. "keyvault_arm_keys"),
  [E .. "arm_storage"] = may(E .. "arm_context", E .. "storage_cmk"),
  -- Storage's data plane (List Blobs: can the account use its key?)
  [E .. "storage_blob"] = may(E .. "arm_storage", E .. "rbac", E .. "storage_cmk", E .. "tokens"),
  -- services: each router holds its resource modules as data (arm.PROVIDERS, graph's merged routes,
  -- keyvault's route table); entra serves the token endpoints, discovery and IMDS
  [E .. "entra"] = may(E .. "entra_grant", E .. "respond", E .. "tokens"),
  [E .. "graph"] = may(E .. "graph_applications", E .. "graph_federated_credentials", E .. "graph_odata",
    E .. "graph_service_principals", E .. "tokens"),
  [E .. "keyvault"] = may(E .. "api_versions", E .. "keyvault_auth", E .. "keyvault_store", E .. "keyvault_keys", E .. "respond"),
  [E .. "arm"] = may(E .. "arm_authorization", E .. "arm_context", E .. "arm_identity", E .. "arm_keyvault",
    E .. "arm_resources", E .. "arm_storage", E .. "respond", E .. "tokens"),
  -- the test knobs at run time, and the /_emulator/ API over them
  [E .. "control"] = may(E .. "knobs", E .. "pattern", E .. "profiles", E .. "respond", E .. "state"),
  [E .. "control_api"] = may(E .. "control", E .. "knobs", E .. "respond"),
  -- entry points: the server handler (core/server.c loads it) and `cmkflow emulator`
  ["cmkflow.emulator"] = may(E .. "arm", E .. "control", E .. "control_api", E .. "demo_seed", E .. "entra",
    E .. "graph", E .. "keyvault", E .. "respond", E .. "router", E .. "state", E .. "storage_blob"),
  [E .. "locator"] = may(),
  [E .. "cli"] = may(E .. "knobs", E .. "locator", E .. "state"),
}
