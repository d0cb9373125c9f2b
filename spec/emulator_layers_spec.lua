-- The emulator's module graph (tools/layers/emulator.lua) holds: every `require` in
-- lua/cmkflow/emulator/ is one its module may make, sits at the top of its file (not inside a
-- function, where it could hide a cycle), the allowed graph has no cycle, and the Azure clients
-- (lua/cmkflow/azure/) require no emulator module.
local SRC = os.getenv("CMKFLOW_SOURCE_DIR") or "."

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function lua_files(dir)
  local out = {}
  local p = assert(io.popen("ls " .. dir .. "/*.lua"))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

-- {name, line, indented, field (a `key = require ...` line)} for each require of a literal module name, comments left out.
local function requires(path)
  local out, n = {}, 0
  for line in (read(path) .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local code = line:gsub("%-%-.*$", "")
    local field = code:match("^%s+%[?\"?[%w_%.]+\"?%]?%s*=%s*require") ~= nil and not code:match("^%s+local%s")
    for name in code:gmatch("require%s*%(?%s*[\"']([%w_%.]+)[\"']") do
      out[#out + 1] = { name = name, line = n, indented = code:match("^%s") ~= nil, field = field }
    end
  end
  return out
end

local function module_of(path)
  local base = path:match("([%w_]+)%.lua$")
  return base == "init" and "cmkflow.emulator" or "cmkflow.emulator." .. base
end

describe("the emulator's module graph", function()
  local allowed = dofile(SRC .. "/tools/layers/emulator.lua")

  it("lists every emulator module and allows only what each one requires, at the top of its file", function()
    local problems = {}
    for _, path in ipairs(lua_files(SRC .. "/lua/cmkflow/emulator")) do
      local mod = module_of(path)
      local may = allowed[mod]
      if not may then
        problems[#problems + 1] = mod .. " is not in tools/layers/emulator.lua"
      else
        local set = {}
        for _, m in ipairs(may) do set[m] = true end
        for _, r in ipairs(requires(path)) do
          -- indented: inside a function, unless a field of a table built at load time (arm.PROVIDERS)
          local in_function = r.indented and not r.field
          if not set[r.name] then
            problems[#problems + 1] = ("%s:%d requires %s, not allowed for %s"):format(path, r.line, r.name, mod)
          elseif in_function then
            problems[#problems + 1] = ("%s:%d requires %s inside a function"):format(path, r.line, r.name)
          end
        end
      end
    end
    assert.are.same({}, problems)
  end)

  it("has no cycle", function()
    local state, cycle = {}, nil
    local function visit(mod, path)
      if state[mod] == "done" or cycle then return end
      if state[mod] == "open" then
        cycle = table.concat(path, " -> ") .. " -> " .. mod
        return
      end
      state[mod] = "open"
      path[#path + 1] = mod
      for _, dep in ipairs(allowed[mod] or {}) do
        if allowed[dep] then visit(dep, path) end
      end
      path[#path] = nil
      state[mod] = "done"
    end
    for mod in pairs(allowed) do visit(mod, {}) end
    assert.is_nil(cycle)
  end)

  it("keeps the Azure clients free of the emulator", function()
    local problems = {}
    for _, path in ipairs(lua_files(SRC .. "/lua/cmkflow/azure")) do
      for _, r in ipairs(requires(path)) do
        if r.name:match("^cmkflow%.emulator") then problems[#problems + 1] = path .. " requires " .. r.name end
      end
    end
    assert.are.same({}, problems)
  end)
end)
