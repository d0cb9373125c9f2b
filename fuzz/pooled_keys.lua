-- Shared by the emulator harnesses: every tenant's signing key and every vault key the emulator
-- makes comes from crypto.rsa_generate; generating an RSA key costs tens of milliseconds, far more
-- than the code under test, so keys come from a pool of three made once. (Where core.crypto is
-- read-only the replacement is skipped and keys are generated as usual, only slower.)
local crypto = require("cmkflow.core").crypto

local pool, turn = { crypto.rsa_generate(2048), crypto.rsa_generate(2048), crypto.rsa_generate(2048) }, 0
pcall(function()
  crypto.rsa_generate = function()
    turn = turn % #pool + 1
    return pool[turn]
  end
end)
return pool
