-- libcmkflow exports the functions its public header declares and nothing else (a stable ABI:
-- -fvisibility=hidden plus cmake/libcmkflow.map), and core.so exports only its Lua entry point.
local build = os.getenv("CMKFLOW_BUILD_DIR") or "build"
local source = os.getenv("CMKFLOW_SOURCE_DIR") or "."

local function defined_symbols(lib)
  local p = assert(io.popen("nm -D --defined-only " .. lib .. " 2>&1"))
  local out = {}
  for line in p:lines() do
    local kind, name = line:match("^%x+ (%a) ([%w_@.]+)$")
    if kind and kind:match("[TDBRVW]") then out[#out + 1] = name:gsub("@.*$", "") end
  end
  p:close()
  table.sort(out)
  return out
end

local function header_functions()
  local f = assert(io.open(source .. "/core/include/cmkflow.h", "rb"))
  local text = f:read("a")
  f:close()
  local out = {}
  for name in text:gmatch("CMKFLOW_API[^;(]-[%s%*](cmkflow_[%w_]+)%s*%(") do out[#out + 1] = name end
  table.sort(out)
  return out
end

describe("exported symbols", function()
  it("libcmkflow exports exactly the functions cmkflow.h declares", function()
    local declared = header_functions()
    assert.is_true(#declared >= 12)
    assert.same(declared, defined_symbols(build .. "/libcmkflow.so"))
  end)

  it("core.so exports only luaopen_cmkflow_core", function()
    assert.same({ "luaopen_cmkflow_core" }, defined_symbols(build .. "/lua/cmkflow/core.so"))
  end)
end)
