-- The Lua layers of cmkflow and the requires each may make (docs/architecture.md), as data, and a
-- check that every `require` in lua/ and workflows/ goes the allowed way. spec/layers_spec.lua
-- runs it on the tree and on planted violations. The C side (#include) is tools/layers/c.lua, the
-- emulator's own module graph tools/layers/emulator.lua.
local M = {}

-- ---- Lua: groups by module name, lowest first; a group may require itself and what it lists ----
M.LUA_GROUPS = {
  -- pattern (anchored module name) -> group; the first match wins
  { "^cmkflow$", "app" },            -- require "cmkflow": the Lua host API (lua/cmkflow/init.lua)
  { "^cmkflow%.core$", "core" },
  { "^cmkflow%.core%.", "core" },
  { "^cmkflow%.emulator$", "emulator" },
  { "^cmkflow%.emulator%.", "emulator" },
  { "^cmkflow%.azure$", "azure" },
  { "^cmkflow%.azure%.", "azure" },
  { "^cmkflow%.workflow%.engine$", "engine" },
  { "^cmkflow%.workflow%.params$", "engine" },
  { "^cmkflow%.workflow%.", "steps" },
  { "^cmkflow%.app%.", "app" },
  { "^cmkflow%.cli$", "cli" },
  { "^cmkflow%.cli%.", "cli" },
  { "^cmkflow%.host$", "host" },
  { "^cmkflow%.sandbox$", "host" },
  { "^cmkflow%.policy$", "host" },
  { "^workflows%.", "workflows" },
  { "^argparse$", "argparse" },      -- Debian's lua-argparse, embedded: the command line's parser
  { "^cmkflow%.", "base" },           -- errors, json, async, http, form, util.*
}

M.LUA_ALLOWED = {
  core = {},
  base = { "core" },
  azure = { "base", "core" },                         -- the Azure clients: ARM, Graph, Key Vault
  engine = { "base", "core" },                        -- knows nothing of Azure or the emulator
  emulator = { "base", "core" },                      -- a wing of its own: no client, no engine
  steps = { "azure", "engine", "base", "core" },      -- the step library the workflows use
  host = { "azure", "base", "core" },                 -- what the C host calls; the sandbox
  workflows = { "steps", "azure", "base", "core" },   -- through the sandbox's allow-list
  app = { "host", "steps", "engine", "emulator", "azure", "base", "core" },
  argparse = {},
  cli = { "app", "host", "engine", "emulator", "base", "core", "argparse" },
}

local function group_of(module)
  for _, g in ipairs(M.LUA_GROUPS) do
    if module:match(g[1]) then return g[2] end
  end
  return nil
end
M.group_of = group_of

local function allowed(from, to)
  if from == to then return true end
  for _, g in ipairs(M.LUA_ALLOWED[from] or {}) do if g == to then return true end end
  return false
end

-- The module name of a file under lua/ or workflows/.
function M.module_of(path)
  local m = path:match("lua/(cmkflow/.-)%.lua$")
  if m then return (m:gsub("/init$", ""):gsub("/", ".")) end
  m = path:match("workflows/([^/]+)%.lua$")
  if m then return "workflows." .. m end
  return nil
end

-- Every required module name in a Lua source (require "x", require("x"), require 'x').
function M.requires(source)
  local out = {}
  for name in source:gmatch("require%s*%(?%s*[\"']([%w_%.%-]+)[\"']") do out[#out + 1] = name end
  return out
end

-- files: { {path = ..., source = ...} }. Returns a list of violation messages.
function M.check_lua(files)
  local problems = {}
  for _, f in ipairs(files) do
    local module = M.module_of(f.path)
    local from = module and group_of(module)
    if module and not from then problems[#problems + 1] = f.path .. ": module " .. module .. " is in no layer" end
    for _, req in ipairs(from and M.requires(f.source) or {}) do
      local to = group_of(req)
      if to and not allowed(from, to) then
        problems[#problems + 1] = ("%s: %s (%s) requires %s (%s): not allowed by docs/architecture.md")
          :format(f.path, module, from, req, to)
      end
    end
  end
  return problems
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Reads the named files (paths relative to root) into { {path, source} }.
function M.load(root, paths)
  local files = {}
  for _, p in ipairs(paths) do
    local s = read(root .. "/" .. p)
    if s then files[#files + 1] = { path = p, source = s } end
  end
  return files
end

return M
