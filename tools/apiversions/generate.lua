#!/usr/bin/env lua5.4
-- Generates lua/cmkflow/emulator/api_versions.lua (the api-versions the emulator accepts per
-- resource type and data plane) from a checkout of Azure/azure-rest-api-specs, or checks that file
-- against one.
--
--   lua5.4 tools/apiversions/generate.lua SPECS_DIR > lua/cmkflow/emulator/api_versions.lua
--   lua5.4 tools/apiversions/generate.lua SPECS_DIR --check lua/cmkflow/emulator/api_versions.lua
--
-- Source of truth: each service's AutoRest configuration (the readme.md beside its stable/ and
-- preview/ folders). Every tag there lists its `input-file`s as `stable/<version>/<file>` or
-- `preview/<version>/<file>`, in the older readmes one folder up with a namespace in front
-- (`Microsoft.Authorization/stable/<version>/<file>`, `$(this-folder)/Microsoft.KeyVault/...`);
-- a version counts for a resource type when one of its input files is a file that defines that
-- type (`files` in SOURCES below). A sparse checkout is enough:
--   git clone --filter=blob:none --sparse https://github.com/Azure/azure-rest-api-specs
--   git -C azure-rest-api-specs sparse-checkout set --no-cone '**/readme.md'
-- The checker (and spec/emulator_api_versions_spec.lua, through M.parse_readme) never reaches the
-- network: it reads the files it is given.
local M = {}

-- One entry per resource type (ARM types in lower case, as arm_context.lua looks them up) or data
-- plane ("keyvault"): the AutoRest readmes that list its versions and the spec files defining it.
M.SOURCES = {
  { type = "microsoft.storage/storageaccounts", files = { "storage.json", "openapi.json" },
    readmes = { "specification/storage/resource-manager/Microsoft.Storage/Storage/readme.md",
                "specification/storage/resource-manager/readme.md" } },
  { type = "microsoft.keyvault/vaults", files = { "keyvault.json", "openapi.json" },
    readmes = { "specification/keyvault/resource-manager/Microsoft.KeyVault/KeyVault/readme.md" } },
  { type = "microsoft.keyvault/vaults/keys", files = { "keys.json", "openapi.json" },
    readmes = { "specification/keyvault/resource-manager/Microsoft.KeyVault/KeyVault/readme.md" } },
  { type = "microsoft.managedidentity/userassignedidentities", files = { "ManagedIdentity.json", "openapi.json" },
    readmes = { "specification/msi/resource-manager/Microsoft.ManagedIdentity/ManagedIdentity/readme.md" } },
  { type = "microsoft.resources/resourcegroups", files = { "resources.json", "openapi.json" },
    readmes = { "specification/resources/resource-manager/Microsoft.Resources/resources/readme.md",
                "specification/resources/resource-manager/readme.md" } },
  { type = "microsoft.resources/subscriptions", files = { "subscriptions.json", "openapi.json" },
    readmes = { "specification/resources/resource-manager/Microsoft.Resources/subscriptions/readme.md",
                "specification/resources/resource-manager/readme.md" } },
  { type = "microsoft.resources/tenants", files = { "subscriptions.json", "openapi.json" },
    readmes = { "specification/resources/resource-manager/Microsoft.Resources/subscriptions/readme.md",
                "specification/resources/resource-manager/readme.md" } },
  { type = "microsoft.authorization/roleassignments", files = { "authorization-RoleAssignmentsCalls.json" },
    readmes = { "specification/authorization/resource-manager/Microsoft.Authorization/Authorization/readme.md",
                "specification/authorization/resource-manager/readme.md" } },
  { type = "microsoft.authorization/roledefinitions", files = { "authorization-RoleDefinitionsCalls.json" },
    readmes = { "specification/authorization/resource-manager/Microsoft.Authorization/Authorization/readme.md",
                "specification/authorization/resource-manager/readme.md" } },
  { type = "keyvault", files = { "keys.json", "KeyVault.json", "keyvault.json" },
    readmes = { "specification/keyvault/data-plane/Keys/readme.md",
                "specification/keyvault/data-plane/readme.md" } },
}

-- The versions a readme's input-file lists give for files in `files` (a set), as a set.
function M.parse_readme(text, files, out)
  out = out or {}
  local in_list = false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*input%-file:%s*$") then in_list = true
    elseif in_list then
      local path = line:match("^%s*%-%s*(%S+)%s*$")
      if path then
        -- the last three segments, whatever folders come before them
        local kind, version, file = path:match("(%a+)/([^/]+)/([^/]+)$")
        if (kind == "stable" or kind == "preview") and files[file] then out[version] = true end
      else in_list = false end
    end
  end
  return out
end

-- Sorts versions: dates as text; Key Vault's "7.x[-preview...]" numerically before dates.
function M.sorted(set)
  local list = {}
  for v in pairs(set) do list[#list + 1] = v end
  local function key(v)
    local major, minor, rest = v:match("^(%d+)%.(%d+)(.*)$")
    if major then return ("0%04d.%04d%s"):format(tonumber(major), tonumber(minor), rest) end
    return "1" .. v
  end
  table.sort(list, function(a, b) return key(a) < key(b) end)
  return list
end

function M.collect(specs_dir, read)
  read = read or function(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local t = f:read("a") f:close() return t
  end
  local result = {}
  for _, src in ipairs(M.SOURCES) do
    local files, set, seen = {}, {}, {}
    for _, f in ipairs(src.files) do files[f] = true end
    for _, rel in ipairs(src.readmes) do
      local text = read(specs_dir .. "/" .. rel)
      if text then seen[#seen + 1] = rel M.parse_readme(text, files, set) end
    end
    result[#result + 1] = { type = src.type, versions = M.sorted(set), readmes = seen }
  end
  return result
end

function M.render(result)
  local out = { "-- GENERATED by tools/apiversions/generate.lua from Azure/azure-rest-api-specs (the AutoRest",
    "-- readme.md of each service lists its stable/ and preview/ versions). Do not edit by hand: regenerate.",
    "-- The api-versions the emulator accepts, per ARM resource type (lower case) and per data plane.",
    "return {" }
  for _, r in ipairs(result) do
    for _, rel in ipairs(r.readmes) do out[#out + 1] = "  -- " .. rel end
    local quoted = {}
    for _, v in ipairs(r.versions) do quoted[#quoted + 1] = ('"%s"'):format(v) end
    out[#out + 1] = ('  ["%s"] = {'):format(r.type)
    for i = 1, #quoted, 5 do out[#out + 1] = "    " .. table.concat(quoted, ", ", i, math.min(i + 4, #quoted)) .. "," end
    out[#out + 1] = "  },"
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

if arg and arg[0] and arg[0]:match("generate%.lua$") and ... ~= "tools.apiversions.generate" then
  local specs_dir = arg[1]
  if not specs_dir then io.stderr:write("usage: generate.lua SPECS_DIR [--check FILE]\n") os.exit(2) end
  local text = M.render(M.collect(specs_dir))
  if arg[2] == "--check" then
    local f = assert(io.open(arg[3], "rb"))
    local have = f:read("a") f:close()
    if have ~= text then io.stderr:write(arg[3] .. " differs from the specs; regenerate it\n") os.exit(1) end
    print("ok: " .. arg[3] .. " matches the specs")
  else
    io.write(text)
  end
end

return M
