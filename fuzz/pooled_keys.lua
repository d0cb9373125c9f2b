-- Shared by the emulator harnesses: RSA keys the emulator makes (tenant signing keys through
-- crypto.rsa_generate, Key Vault keys through a core.keypool) come from a few keys per size made
-- on first use. Generating an RSA key costs tens of milliseconds (seconds at 4096 bits), far more
-- than the code under test, and the key pool's generator thread would take a core from the
-- fuzzer. (Where core's tables are read-only the replacement is skipped: only slower.)
local core = require "cmkflow.core"
local crypto = core.crypto

local generate = crypto.rsa_generate
local KEYS_PER_SIZE = 3
local stock, turn = {}, {}

local function pooled(bits)
  bits = math.tointeger(bits) or 2048
  local keys = stock[bits]
  if not keys then
    keys = {}
    for i = 1, KEYS_PER_SIZE do keys[i] = generate(bits) end
    stock[bits], turn[bits] = keys, 0
  end
  turn[bits] = turn[bits] % #keys + 1
  return keys[turn[bits]]
end

pcall(function()
  crypto.rsa_generate = pooled
  core.keypool.new = function()
    return { take = function(_, bits) return pooled(bits) end, stats = function() return {} end, close = function() end }
  end
end)
return pooled
