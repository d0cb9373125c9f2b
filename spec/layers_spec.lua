-- The Lua layers of docs/architecture.md hold: no require goes the wrong way, and the check
-- catches one that does (the C includes: the ctest entry c_layers, tools/layers/c.lua).
local layers = dofile((os.getenv("CMKFLOW_SOURCE_DIR") or ".") .. "/tools/layers/check.lua")

local root = os.getenv("CMKFLOW_SOURCE_DIR") or "."

local function tree(dir, pattern)
  local p = assert(io.popen(("cd '%s' && find %s -type f -name '%s' | sort"):format(root, dir, pattern)))
  local out = {}
  for line in p:lines() do out[#out + 1] = line:gsub("^%./", "") end
  p:close()
  return out
end

describe("layers", function()
  it("every Lua require in lua/ and workflows/ goes down or sideways as allowed", function()
    local paths = tree("lua workflows", "*.lua")
    assert.is_true(#paths > 50)
    local problems = layers.check_lua(layers.load(root, paths))
    assert.same({}, problems)
  end)

  it("catches the engine requiring the Azure layer and the emulator requiring the CLI", function()
    local problems = layers.check_lua {
      { path = "lua/cmkflow/workflow/engine.lua", source = 'local v = require "cmkflow.azure.validate"' },
      { path = "lua/cmkflow/emulator/arm.lua", source = 'local cli = require("cmkflow.cli")' },
      { path = "lua/cmkflow/app/pipeline.lua", source = 'local e = require "cmkflow.workflow.engine"' },
    }
    assert.equal(2, #problems)
    assert.matches("cmkflow.workflow.engine %(engine%) requires cmkflow.azure.validate %(azure%)", problems[1])
    assert.matches("cmkflow.emulator.arm %(emulator%) requires cmkflow.cli %(cli%)", problems[2])
  end)

  it("lets only the CLI require the embedded lua-argparse", function()
    local problems = layers.check_lua {
      { path = "lua/cmkflow/app/pipeline.lua", source = 'local argparse = require "argparse"' },
      { path = "lua/cmkflow/cli/parser.lua", source = 'local argparse = require "argparse"' },
    }
    assert.equal(1, #problems)
    assert.matches("cmkflow.app.pipeline %(app%) requires argparse %(argparse%)", problems[1])
  end)

  it("places every module in a layer", function()
    assert.equal("engine", layers.group_of("cmkflow.workflow.params"))
    assert.equal("steps", layers.group_of("cmkflow.workflow.cmk"))
    assert.equal("base", layers.group_of("cmkflow.errors"))
    assert.equal("app", layers.group_of("cmkflow.app.pipeline"))
  end)

  -- the repository stands alone: comments and docs cite Microsoft's docs, REST specs or docs/,
  -- never files a reader of the project cannot open
  it("cites no file outside the repository", function()
    local paths = tree("lua workflows core docs tools spec examples README.md", "*")
    local outside = {}
    for _, f in ipairs(layers.load(root, paths)) do
      if not f.path:match("^spec/layers_spec%.lua$") then
        for _, pattern in ipairs({ "reference section", "reference sections", "reference/[%w%-]+%.md",
                                   "%.%./shared/", "reference %d+%.%d" }) do
          if f.source:find(pattern) then outside[#outside + 1] = f.path .. ": " .. pattern end
        end
      end
    end
    assert.same({}, outside)
  end)
end)
