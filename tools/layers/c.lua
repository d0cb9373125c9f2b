-- tools/layers/c.lua: fail when a dependency crosses the layers the wrong way.
--
--   lua5.4 tools/layers/c.lua [source root]     (ctest entry c_layers)
--
-- The layers are data (LAYERS below): each kind of source (only C today) lists its modules in
-- layers, lowest first, and each module the files that make it up (globs relative to the kind's
-- root). A file may depend on its own module and on modules of lower layers, never on a module of
-- its own layer or a higher one, so no two modules can depend on each other. A header listed in
-- PRIVATE may be included only by the modules named there. A file that belongs to no module is
-- an error too: new files take a place in the table. The Lua side (require) is meant to be one
-- more entry in LAYERS with its own edge reader.
local ipairs, pairs, print, type = ipairs, pairs, print, type
local concat, sort = table.concat, table.sort

local LAYERS = {
  c = {
    root = "core",
    list = "ls core/*.c core/*.h core/include/*.h",
    layers = {
      -- 1: no project includes
      { api = { "include/cmkflow.h" }, buf = { "buf.h", "buf.c" }, embedded = { "embedded.h" } },
      -- 2: the core's shared declarations and error tables; plain C services over OpenSSL
      { cmk = { "cmk.h", "lerror.c" }, crypto = { "crypto.h", "crypto_*.c" },
        certgen = { "certgen.h", "certgen.c" }, redact = { "redact.h", "redact.c" } },
      -- 3: JSON over jansson (packed: and zlib), JOSE over crypto
      { json = { "json.h", "json.c", "json_pack.c" }, jose = { "jose.h", "jose.c" } },
      -- 4: the HTTP session, the run store (SQLite and PostgreSQL), the server loop (and its CONNECT proxy)
      { http = { "http.h", "http_int.h", "http_*.c" }, store = { "store.h", "store.c", "store_pg.h", "store_pg.c" },
        server = { "server.h", "server_int.h", "server.c", "server_dispatch.c", "server_proxy.c" } },
      -- 5: credentials (over HTTP); the crypto module's Lua side (over jose)
      { auth = { "auth.h", "auth_int.h", "auth_*.c" }, lcrypto = { "lcrypto.h", "lcrypto*.c" } },
      -- 6: Lua bindings and C-API configuration
      { lhttp = { "lhttp.c" }, lauth = { "lauth.c" }, ljose = { "ljose.c" },
        lserver = { "lserver.c" }, lstore = { "lstore.c", "lstore_pg.c", "lstore_tx.c", "lstore_int.h" }, keypool = { "keypool.c" }, config = { "config.c" },
        lexit = { "lexit.c" }, fs = { "fs.c" },
        ldurable = { "ldurable.c" } },
      -- 7: cmkflow.core and the host
      { lmod = { "lmod.c" }, host = { "host.c" }, main = { "main.c" } },
    },
    -- private headers: the only modules that may include them
    private = {
      ["http_int.h"] = { http = true, lhttp = true },
      ["auth_int.h"] = { auth = true, lauth = true },
      ["server_int.h"] = { server = true },
      ["lstore_int.h"] = { lstore = true },
    },
  },
}

-- "http_*.c" -> "^http_.*%.c$"
local function glob(g)
  return "^" .. g:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".*") .. "$"
end

-- module of each path, rank of each module
local function index(spec)
  local rank, patterns = {}, {}
  for r, layer in ipairs(spec.layers) do
    local names = {}
    for name in pairs(layer) do names[#names + 1] = name end
    sort(names)
    for _, name in ipairs(names) do
      rank[name] = r
      for _, g in ipairs(layer[name]) do patterns[#patterns + 1] = { glob(g), name } end
    end
  end
  local function module_of(path)
    for _, p in ipairs(patterns) do
      if path:match(p[1]) then return p[2] end
    end
  end
  return rank, module_of
end

-- Problems of one edge list ({from = path, to = path}, paths relative to the root) against spec.
local function check(spec, files, edges)
  local rank, module_of = index(spec)
  local problems = {}
  for _, f in ipairs(files) do
    if not module_of(f) then
      problems[#problems + 1] = f .. " belongs to no module: add it to LAYERS in tools/layers/c.lua"
    end
  end
  for _, e in ipairs(edges) do
    local a, b = module_of(e.from), module_of(e.to)
    if a and b and a ~= b and rank[b] >= rank[a] then
      problems[#problems + 1] = ("%s includes %s: module %s (layer %d) may not use module %s (layer %d)")
        :format(e.from, e.to, a, rank[a], b, rank[b])
    end
    local friends = spec.private[e.to]
    if a and friends and not friends[a] then
      problems[#problems + 1] = ("%s includes %s, private to %s"):format(e.from, e.to, b)
    end
  end
  return problems
end

-- The C edges: every #include "x" of the listed files, resolved against the root and include/.
local function c_edges(root, spec)
  local files, edges, known = {}, {}, {}
  local list = io.popen("cd '" .. root .. "' && " .. spec.list .. " 2>/dev/null")
  for path in list:lines() do
    local rel = path:sub(#spec.root + 2)
    files[#files + 1] = rel
    known[rel] = true
  end
  list:close()
  for _, rel in ipairs(files) do
    local n = 0
    for line in io.lines(root .. "/" .. spec.root .. "/" .. rel) do
      n = n + 1
      local inc = line:match('^%s*#%s*include%s+"([^"]+)"')
      if inc then
        local to = known[inc] and inc or (known["include/" .. inc] and "include/" .. inc) or nil
        if to then edges[#edges + 1] = { from = rel, to = to, line = n } end
      end
    end
  end
  return files, edges
end

local function self_test()
  -- the checker itself must catch an upward include, a same-layer include and a private header
  local spec = LAYERS.c
  local bad = {
    { from = "crypto_key.c", to = "jose.h" },   -- crypto (2) -> jose (3)
    { from = "http_session.c", to = "store.h" }, -- same layer
    { from = "config.c", to = "auth_int.h" },    -- private
    { from = "jose.c", to = "crypto.h" },        -- fine
  }
  local p = check(spec, { "crypto_key.c", "jose.c", "nowhere.c" }, bad)
  return #p == 4, p
end

local root = arg and arg[1] or "."
local ok_self, got = self_test()
if not ok_self then
  print("tools/layers/c.lua: the self-test did not find the 4 planted problems:\n  " .. concat(got, "\n  "))
  os.exit(2)
end
local files, edges = c_edges(root, LAYERS.c)
if #files == 0 then
  print("tools/layers/c.lua: no C sources under " .. root .. "/" .. LAYERS.c.root)
  os.exit(2)
end
local problems = check(LAYERS.c, files, edges)
if #problems > 0 then
  print(#problems .. " layering problem(s):\n  " .. concat(problems, "\n  "))
  os.exit(1)
end
print(("C layers: %d files, %d includes, all downward"):format(#files, #edges))
