-- Where a run talks to: a config file (core/config.c reads it; secrets stay in C), the Azure SDK
-- environment variables, or the embedded emulator when nothing is configured.
local core = require "cmkflow.core"
local host = require "cmkflow.host"
local embedded = require "cmkflow.app.embedded"
local state = require "cmkflow.app.state"
local file = require "cmkflow.util.file"
local locator = require "cmkflow.emulator.locator"

local M = {}

local function dir_of(path) return path:match("^(.*)/[^/]*$") or "." end

-- A path from the config file: relative paths are relative to the file.
local function relative_to(base_dir, path)
  if not path or path:match("^/") then return path end
  return base_dir .. "/" .. path
end

local function config_error(message, field)
  return core.error.new { code = "InvalidConfig", kind = "config", field = field, message = message }
end

-- The Azure SDK environment variables (when set) give the "default" and "isv" contexts their
-- credential and subscription. true | nil, error.
local function use_environment_credential()
  if os.getenv("AZURE_CLIENT_ID") or os.getenv("AZURE_TENANT_ID") then
    local ok, cred = pcall(core.auth.credential, { kind = "environment", authority = host.current_cloud().authority })
    if not ok then return nil, config_error(tostring(cred)) end
    for _, ctx in ipairs({ "default", "isv" }) do
      host.set_credential(ctx, cred)
      host.contexts[ctx].subscription = os.getenv("AZURE_SUBSCRIPTION_ID")
    end
  end
  return true
end

-- The name under which the config file's `customers` entry for `tenant` (an id or a domain, any
-- case) is kept in host.contexts.
function M.customer_context(tenant)
  return "customer:" .. tostring(tenant):lower()
end

-- The context a run's "customer" stands for: the `customers` entry of its customer_tenant when the
-- config file has one, else the config's `customer` context.
function M.customer_context_of(values)
  local t = values and values.customer_tenant
  if t and host.contexts[M.customer_context(t)] then return M.customer_context(t) end
  return "customer"
end

-- Is a configuration named (--config or $CMKFLOW_CONFIG)? opts.embedded forces the embedded
-- emulator whatever is configured (cmkflow demo).
function M.named(opts)
  if opts.embedded then return nil end
  local path = opts.config or os.getenv("CMKFLOW_CONFIG")
  return path ~= nil and path ~= "" and path or nil
end

-- Does this invocation go to the embedded emulator (no configuration, no real cloud named)?
function M.embedded_target(opts)
  return not M.named(opts) and (not opts.cloud or opts.cloud == "emulator")
end

-- Resolves where a run talks to. opts: {config, cloud}. Returns a target stored with the run
-- (never a secret): {config = path | nil, cloud = name, emulator = url | nil, policy = path | nil},
-- or nil, error (kind "config").
function M.configure(opts)
  -- the C API: the host set its cloud and credentials in code (cmkflow_host_set_*); use those
  if opts.host_configured then
    return { cloud = host.cloud.name, emulator = host.cloud.name == "emulator" and host.cloud.endpoint or nil }
  end
  -- absolute, so that a run resumed from another directory finds the same file
  local config_path = file.absolute(M.named(opts))
  if config_path then
    state.use_config(config_path) -- its `state` names the run store
    local base = dir_of(config_path)
    local field_error -- a file field that names no readable file: exit 2 naming the field
    local function resolve_cloud(desc, emulator_state)
      if desc == "emulator" then
        -- a running `cmkflow emulator`, found through its state directory (docs/emulator.md)
        local dir = relative_to(base, emulator_state) or locator.default_dir()
        local found, why = locator.find(dir)
        if not found then error({ emulator = why }, 0) end
        host.set_cloud("emulator", found.url, found.ca_cert)
      elseif type(desc) == "table" then
        if not desc.emulator then
          error("field 'cloud' must name \"azure\", \"usgov\", \"china\", \"emulator\" or { emulator = url }", 0)
        end
        local ca_cert = relative_to(base, desc.ca_cert)
        if ca_cert and not file.read(ca_cert) then
          field_error = config_error(("config %s: field 'ca_cert': cannot read %s (the emulator's CA certificate, PEM: "
            .. "the ca_cert of its ready line)"):format(config_path, ca_cert), "ca_cert")
          error(field_error, 0)
        end
        host.set_cloud("emulator", desc.emulator, ca_cert)
      else
        host.set_cloud(desc)
      end
      local c = host.current_cloud()
      return { authority = c.authority, ca_file = c.ca_file, connect_to = c.connect_to }
    end
    local ok, cfg = pcall(core.config.load, config_path, resolve_cloud)
    if not ok and type(cfg) == "table" and cfg.emulator then
      return nil, config_error(("config %s: cloud = \"emulator\": %s"):format(config_path, cfg.emulator), "cloud")
    end
    if not ok then return nil, field_error or config_error(tostring(cfg)) end
    local cloud = type(cfg.cloud) == "table" and "emulator" or cfg.cloud
    if opts.cloud and opts.cloud ~= cloud then
      return nil, config_error(("--cloud %s contradicts the cloud of %s"):format(opts.cloud, config_path), "cloud")
    end
    if cfg.limits then
      core.limits.set { instructions = cfg.limits.instructions,
                        memory = cfg.limits.memory_mb and cfg.limits.memory_mb * 1024 * 1024 }
    end
    for name, ctx in pairs(cfg.contexts) do
      host.contexts[name] = host.contexts[name] or {}
      for k, v in pairs(ctx) do host.contexts[name][k] = v end
    end
    -- customers = { ["<tenant>"] = context }: the "customer" context of a run whose customer_tenant
    -- is that tenant (M.customer_context)
    for tenant, ctx in pairs(cfg.customers or {}) do host.contexts[M.customer_context(tenant)] = ctx end
    return { config = config_path, cloud = cloud, policy = relative_to(base, cfg.policy),
             emulator = cloud == "emulator" and host.cloud.endpoint or nil }
  end
  if opts.cloud and opts.cloud ~= "emulator" then
    host.set_cloud(opts.cloud)
    local ok, err = use_environment_credential()
    if not ok then return nil, err end
    return { cloud = opts.cloud }
  end
  local e = embedded.start()
  return { cloud = "emulator", emulator = e.url, embedded = true }
end

M.finish = embedded.finish

return M
