-- The step library's failures are data (lua/cmkflow/workflow/cmk.lua, docs/lua-api.md "Errors"):
-- error tables with code, message, the party that must act (tenant = "isv" | "customer") and a
-- hint; the propagation wait decides by codes, never by an error's message text. No emulator: a
-- ctx with stub clients.
local core = require "cmkflow.core"
local errors = require "cmkflow.azure.errors"
local policy_mod = require "cmkflow.policy"
local cmk = require "cmkflow.workflow.cmk"

local SUB = "22222222-2222-4333-8444-555555555555"

-- A ctx whose "isv" ARM client answers GET with `get_answer` (doc | nil, err).
local function ctx_with(get_answer, params)
  local arm = { get = function() return get_answer() end }
  return {
    params = params or { customer = "contoso" }, policy = policy_mod.merge { propagation_timeout_s = 0 },
    outputs = {}, step = "account", log = function() end,
    context = function() return { arm = arm, subscription = SUB, tenant = "t1" } end,
    context_info = function() return { tenant = "t1", subscription = SUB } end,
  }
end

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "no error was raised")
  assert.is_true(core.error.is(err), "not an error table: " .. tostring(err))
  return err
end

describe("step library errors", function()
  it("a missing storage account: code, the ISV to act, a hint; no tenant text in the message", function()
    local ctx = ctx_with(function()
      return nil, errors.new { code = "ResourceNotFound", message = "gone", status = 404 }
    end)
    local err = raised(cmk.read_account, ctx)
    assert.equal("StorageAccountNotFound", err.code)
    assert.equal("isv", err.tenant)
    assert.matches("create it with new-account", err.hint, 1, true)
    assert.equal("storage account " .. cmk.account_id(ctx) .. " does not exist", err.message)
    assert.is_nil(err.message:find("must fix this", 1, true))
  end)

  it("a remote failure keeps its code, status and request id, and gets cmkflow.azure.errors' hint", function()
    local remote = errors.new { code = "AuthorizationFailed", status = 403, request_id = "req-1", tenant = "t1",
      message = "The client 'x' with object id 'y' does not have authorization to perform action "
        .. "'Microsoft.Storage/storageAccounts/read' over scope '/subscriptions/s'" }
    local err = raised(cmk.read_account, ctx_with(function() return nil, remote end))
    assert.equal("AuthorizationFailed", err.code)
    assert.equal(403, err.status)
    assert.equal("req-1", err.request_id)
    assert.equal("isv", err.tenant)
    assert.equal("t1", err.azure_tenant)
    assert.equal(errors.explain(remote), err.hint)
  end)

  it("a transport failure (a TLS handshake reset, a refused connection) blames no tenant", function()
    for _, kind in ipairs { "network", "tls", "timeout" } do
      local transport = errors.new { code = "ConnectionFailed", kind = kind, retryable = true,
        message = "the connection to management.azure.com was reset during the TLS handshake" }
      local err = raised(cmk.read_account, ctx_with(function() return nil, transport end))
      assert.equal("ConnectionFailed", err.code)
      assert.is_nil(err.tenant)
      assert.equal(kind, err.kind)
      assert.is_nil(require("cmkflow.errors").text(err):find("must fix this", 1, true))
    end
  end)

  it("the propagation wait decides by code: AADSTS70021 quoted under another code is not waited out", function()
    local calls = 0
    local other = errors.new { code = "InvalidTemplate", message = "see AADSTS70021 in the docs", status = 400 }
    local res, err = cmk.until_visible(ctx_with(), "x", function() calls = calls + 1 return nil, other end)
    assert.is_nil(res)
    assert.equal(other, err)
    assert.equal(1, calls)
  end)

  it("past the bound a propagation code becomes PropagationTimeout, naming who acts by the code", function()
    local e = raised(cmk.until_visible, ctx_with(), "the ISV app's service principal", function()
      return nil, errors.new { code = "PrincipalNotFound", message = "not yet", status = 400 }
    end, "isv")
    assert.equal("PropagationTimeout", e.code)
    assert.equal("customer", e.tenant) -- PrincipalNotFound: the customer tenant's directory
    assert.matches("is still not visible after 0 s of waiting", e.message, 1, true)
    e = raised(cmk.until_visible, ctx_with(), "the grant", function()
      return nil, errors.new { code = "KeyVaultAuthenticationFailure", message = "later", status = 400 }
    end, "isv")
    assert.equal("isv", e.tenant) -- ambiguous code: the caller's party
  end)

  it("verify's verdict fails with BrokenLink and the tenant of the broken link", function()
    local ctx = ctx_with()
    ctx.outputs = { app = { ok = true }, role_assignment = { ok = false, link = "role_assignment", tenant = "customer",
                    problem = "no role", fix = "the customer runs customer-authorize" } }
    local e = raised(cmk.require_whole_chain, ctx)
    assert.equal("BrokenLink", e.code)
    assert.equal("customer", e.tenant)
    assert.equal("the customer runs customer-authorize", e.hint)
    assert.matches("broken link: role_assignment", e.message, 1, true)
  end)

  it("an error's text stays whole past luaL_Buffer's size (a long remote message)", function()
    local long = ("x"):rep(5000)
    local s = tostring(errors.new { code = "C", message = long, status = 400, tenant = "isv", request_id = "r" })
    assert.equal("C: " .. long .. " (HTTP 400; tenant isv; request id r)", s)
  end)

  it("names the built-in roles by their ids", function()
    assert.equal("e147488a-f6f5-4113-8e2d-b22465e65bf6", cmk.ROLE.crypto_service_encryption_user)
    assert.equal("14b46e9e-c2b7-41b4-b07b-48a6ebf60603", cmk.ROLE.crypto_officer)
    assert.is_true(cmk.KEY_ACCESS_ROLES[cmk.ROLE.crypto_officer])
  end)
end)
