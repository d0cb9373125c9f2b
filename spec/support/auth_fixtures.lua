-- Fixtures for spec/auth_spec.lua: a scratch directory, test certificates made with the openssl
-- CLI, local Entra/IMDS servers (spec/support/handlers/entra.lua), requests through the http
-- layer, and child processes for the environment-variable cases (Lua cannot setenv).
local core = require "cmkflow.core"
local files = require "support.files"
local json = core.json
local quote = files.quote

local M = {}

M.TENANT = "11111111-2222-4333-8444-555555555555"
M.TENANT2 = "66666666-7777-4888-9999-aaaaaaaaaaaa"
M.APP = "0a1b2c3d-0000-4000-8000-000000000001"     -- client secret app
M.CERT_APP = "0a1b2c3d-0000-4000-8000-000000000002"
M.FED_APP = "0a1b2c3d-0000-4000-8000-000000000003" -- workload identity / chained (multi-tenant)
M.UAMI = "0a1b2c3d-0000-4000-8000-0000000000ff"    -- managed identity client id
M.SECRET = "s3cr3t~Value.With-Specials&=+/%"
M.SCOPE = "https://management.azure.com/.default"
M.SCOPE2 = "https://vault.azure.net/.default"

M.read, M.write = files.read, files.write

-- The spec's one scratch directory, made on first use; cleanup() removes it.
function M.tmpdir()
  if not M.dir then M.dir = files.tmpdir() end
  return M.dir
end

function M.cleanup()
  if M.dir then
    os.execute("rm -rf " .. quote(M.dir))
    M.dir = nil
  end
end

function M.path(name)
  return M.tmpdir() .. "/" .. name
end

-- A self-signed RSA certificate with its key: PEM (cert + key in one file), PKCS#12, public key
-- and the x5t#S256 thumbprint, all made by the openssl CLI (not by the code under test).
function M.make_certificate(password)
  local d = M.tmpdir()
  local cert, key = d .. "/cert.pem", d .. "/key.pem"
  files.sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 -subj /CN=cmkflow-auth-test")
       :format(quote(key), quote(cert)))
  local combined = M.write(d .. "/combined.pem", M.read(cert) .. M.read(key))
  local p12 = d .. "/cert.p12"
  files.sh(("openssl pkcs12 -export -in %s -inkey %s -out %s -passout pass:%s")
       :format(quote(cert), quote(key), quote(p12), quote(password)))
  local pub = d .. "/pub.pem"
  local pp = io.popen(("openssl x509 -in %s -pubkey -noout"):format(quote(cert)))
  M.write(pub, pp:read("a"))
  pp:close()
  local tp = io.popen(("openssl x509 -in %s -outform DER | openssl dgst -sha256 -binary | basenc --base64url")
                      :format(quote(cert)))
  local thumb = tp:read("a"):gsub("%s", ""):gsub("=", "")
  tp:close()
  return { pem = combined, p12 = p12, password = password, pub = pub, x5t_s256 = thumb,
           cert_pem = cert, key_pem = key }
end

-- header, claims, signing input and signature bytes of a compact JWS; raises when it is not one
function M.decode_jwt(jwt)
  local header, claims = core.jose.decode(jwt)
  assert(header, claims)
  local signing_input, signature = jwt:match("^(.*)%.([^.]*)$")
  return header, claims, signing_input, assert(core.crypto.b64url_decode(signature))
end

-- true when openssl verifies the RS256 signature of signing_input with the public key file
function M.openssl_verify(pub, signing_input, signature)
  local input = M.write(M.path("jws-input"), signing_input)
  local sig = M.write(M.path("jws-sig"), signature)
  return os.execute(("openssl dgst -sha256 -verify %s -signature %s %s >/dev/null 2>&1")
                    :format(quote(pub), quote(sig), quote(input))) == true
end

-- One CA for every TLS server of the spec; its PEM is written for ca_file.
function M.ca()
  if not M.ca_pem then
    M.ca_pem, M.ca_key = assert(core.server.make_ca("cmkflow auth spec CA"))
    M.ca_file = M.write(M.path("ca.pem"), M.ca_pem)
  end
  return M.ca_file
end

-- Start the local Entra handler. tls = false gives a plain-HTTP server (IMDS).
function M.start(config, tls)
  local opts = { listen = "127.0.0.1:0", handler = "spec/support/handlers/entra.lua",
                 config = json.encode(config) }
  if tls ~= false then
    M.ca()
    opts.cert_pem, opts.key_pem = assert(core.server.make_cert(M.ca_pem, M.ca_key))
    opts.tls = true
  else
    opts.tls = false
  end
  return assert(core.server.start(opts))
end

M.session = function() return core.http.session() end

-- Submit every request, drive the session until all are done (bounded), return {resp, err} pairs.
function M.run_all(reqs)
  local s = M.session()
  local ts, results, left = {}, {}, #reqs
  for i, r in ipairs(reqs) do
    r.ca_file = r.ca_file or M.ca_file
    ts[i] = s:submit(r)
  end
  local index = {}
  for i, t in ipairs(ts) do index[t] = i end
  for _ = 1, 600 do
    if left == 0 then break end
    for _, t in ipairs(s:run(100) or {}) do
      local i = index[t]
      if i and not results[i] then
        local resp, err = t:result()
        results[i] = { resp = resp, err = err }
        left = left - 1
      end
    end
  end
  assert(left == 0, "requests did not finish")
  return results
end

function M.request(r)
  local res = M.run_all({ r })[1]
  return res.resp, res.err
end

function M.get(url, cred, scope, tenant)
  return M.request({ method = "GET", url = url, credential = cred, scope = scope, tenant = tenant })
end

-- An authenticated GET of the ARM path `path`, routed to the local server at server_url (its
-- certificate names the Azure hosts): a token for ARM goes to the ARM host only
-- (cmkflow.clouds.token_destination), never to another listener.
function M.arm_get(server_url, path, cred, scope)
  local port = assert(server_url:match(":(%d+)$"), server_url)
  return M.request({ method = "GET", url = "https://management.azure.com" .. path, credential = cred,
                     scope = scope or M.SCOPE, connect_to = { "management.azure.com:443:127.0.0.1:" .. port } })
end

function M.journal(srv, kind)
  local resp = assert(M.request({ method = "GET", url = srv:url() .. "/_test/journal" }))
  local all = json.decode(resp.body)
  if not kind then return all end
  local out = {}
  for _, rec in ipairs(all) do
    if rec.kind == kind then out[#out + 1] = rec end
  end
  return out
end

-- Run Lua code in a child lua5.4 with extra environment variables (nil values are unset);
-- the code's return value comes back JSON-encoded. Returns the decoded value or nil, error text.
function M.child(env, code)
  local script = M.write(M.path("child.lua"), ([[
    local core = require "cmkflow.core"
    local ok, v = pcall(function() %s end)
    io.write(core.json.encode(ok and {ok = true, value = v} or {ok = false, error = tostring(v)}))
  ]]):format(code))
  local vars, unset = {}, {}
  for k, v in pairs(env) do
    if v == false then unset[#unset + 1] = "-u " .. k else vars[#vars + 1] = k .. "=" .. quote(v) end
  end
  local p = io.popen(("env %s %s " .. files.lua5_4() .. " %s 2>&1"):format(table.concat(unset, " "), table.concat(vars, " "), quote(script)))
  local out = p:read("a")
  p:close()
  local decoded = json.decode(out)
  assert(decoded, "child output: " .. out)
  return decoded
end

-- Every Azure identity variable unset, for a clean child environment.
M.CLEAN_ENV = {
  AZURE_TENANT_ID = false, AZURE_CLIENT_ID = false, AZURE_CLIENT_SECRET = false,
  AZURE_CLIENT_CERTIFICATE_PATH = false, AZURE_CLIENT_CERTIFICATE_PASSWORD = false,
  AZURE_CLIENT_SEND_CERTIFICATE_CHAIN = false, AZURE_FEDERATED_TOKEN_FILE = false,
  AZURE_AUTHORITY_HOST = false, IDENTITY_ENDPOINT = false, IDENTITY_HEADER = false,
  AZURE_POD_IDENTITY_AUTHORITY_HOST = false,
}

function M.env(extra)
  local e = {}
  for k, v in pairs(M.CLEAN_ENV) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

return M
