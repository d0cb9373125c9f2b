-- Installed as a user installs it: `make package`'s .deb (cmake/Packaging.cmake) into a fresh
-- Debian 12 root, then `cmkflow version`, the demo and `make demo`'s onboarding run there. The root
-- is made offline from this machine's own packages (tools/package/root.lua: what debootstrap's
-- minbase installs, plus the .deb's Depends), so dpkg checks those Depends against a root that
-- has nothing else. Entering the root needs root (chroot) or unprivileged user namespaces
-- (unshare); with neither, this spec fails and says so.
-- And: `make`, `make demo` and `make install` bootstrap only what building and running need.
local json = require("cmkflow.core").json
local files = require "support.files"

local source = os.getenv("CMKFLOW_SOURCE_DIR") or "."
local build = os.getenv("CMKFLOW_BUILD_DIR") or "build"
local host_bin = assert(os.getenv("CMKFLOW_BIN"), "CMKFLOW_BIN is not set (run the specs through ctest)")
local q = files.quote

-- exit code and output (stdout and stderr) of a shell command; a sanitizer build's LD_PRELOAD
-- (CMakeLists.txt) names host files that do not exist in the Debian root
local function sh(cmd)
  local p = assert(io.popen("unset LD_PRELOAD; " .. cmd .. " 2>&1; echo \"exit=$?\""))
  local out = p:read("a")
  p:close()
  return tonumber(out:match("exit=(%d+)%s*$")), (out:gsub("exit=%d+%s*$", ""))
end

-- make -n TARGET in the source tree, whatever make runs this spec (ctest under `make check`)
local function make_n(target)
  return sh("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -n -C " .. q(source) .. " " .. target)
end

-- the set of the output's lines
local function line_set(text)
  local set = {}
  for line in text:gmatch("[^\n]+") do set[line] = true end
  return set
end

describe("make's targets and tools/bootstrap", function()
  it("make, make demo and make install bootstrap only the build and run packages; make check adds --test", function()
    for _, target in ipairs { "all", "build", "demo", "install", "package" } do
      local code, out = make_n(target)
      assert.equal(0, code, out)
      assert.is_truthy(("\n" .. out):find("\ntools/bootstrap\n", 1, true), target .. ":\n" .. out)
      assert.is_nil(out:find("tools/bootstrap -", 1, true), target .. ":\n" .. out)
    end
    local code, out = make_n("check")
    assert.equal(0, code, out)
    assert.is_truthy(("\n" .. out):find("\ntools/bootstrap --test\n", 1, true), out)
  end)

  it("the default package list has no test package; --test adds busted and the Microsoft clients", function()
    local code, out = sh(q(source .. "/tools/bootstrap") .. " --list")
    assert.equal(0, code, out)
    local default = line_set(out)
    assert.is_true(default["libmicrohttpd-dev"] and default["liblua5.4-dev"] and default.file)
    code, out = sh(q(source .. "/tools/bootstrap") .. " --test --list")
    assert.equal(0, code, out)
    local test = line_set(out)
    for p in pairs(default) do assert.is_true(test[p], p) end
    for _, p in ipairs { "lua-busted", "azure-cli", "python3-azure", "strace" } do
      assert.is_nil(default[p], p)
      assert.is_true(test[p], p)
    end
  end)
end)

describe("the Debian package in a fresh Debian 12 root", function()
  local debs, dir, root, version = {}, nil, nil, nil
  local is_root = select(2, sh("id -u")):match("^0%s") ~= nil

  -- cmd run by sh in the root, as its root user, with a clean environment
  local function in_root(cmd)
    local inner = ("/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 sh -c %s")
      :format(q("cd /root && " .. cmd))
    if is_root then
      return sh("chroot " .. q(root) .. " " .. inner)
    end
    -- unprivileged: a user namespace where we are root, /dev's four nodes bound into the root
    local binds = {}
    for _, d in ipairs { "null", "zero", "random", "urandom" } do
      binds[#binds + 1] = ("touch %s/dev/%s && mount --bind /dev/%s %s/dev/%s"):format(q(root), d, d, q(root), d)
    end
    local code, out = sh("unshare --map-root-user --mount sh -c "
      .. q(table.concat(binds, " && ") .. " && exec chroot " .. q(root) .. " " .. inner))
    if code ~= 0 and out:match("unshare:") then
      error("entering the Debian root needs root (chroot) or unprivileged user namespaces (unshare"
        .. " --map-root-user), and neither works here:\n" .. out, 0)
    end
    return code, out
  end

  setup(function()
    local code, out = sh(q(source .. "/tools/package/build") .. " " .. q(build .. "/package"))
    assert(code == 0, out)
    for path in out:gmatch("[^\n]+") do
      local name = path:match("([^/]+)_[^/_]+_[^/_]+%.deb$")
      if name then debs[name] = path end
    end
    assert(debs.cmkflow and debs["cmkflow-dev"], "tools/package/build made no cmkflow and cmkflow-dev .deb:\n" .. out)
    version = select(2, sh(q(host_bin) .. " version")):match("^cmkflow (%S+)")
    assert(version, "no version from " .. host_bin)
    dir = files.tmpdir()
    root = dir .. "/root"
    -- lua5.4 besides: the stock interpreter loads the package's Lua module
    code, out = sh("lua5.4 " .. q(source .. "/tools/package/root.lua") .. " " .. q(root) .. " " .. q(debs.cmkflow) .. " lua5.4")
    assert(code == 0, out)
    files.sh("cp " .. q(debs.cmkflow) .. " " .. q(root .. "/tmp/cmkflow.deb"))
  end)

  teardown(function()
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("Depends names each shared library the program links (dpkg-shlibdeps)", function()
    local _, depends = sh("dpkg-deb -f " .. q(debs.cmkflow) .. " Depends")
    for _, lib in ipairs { "libc6", "liblua5.4-0", "libcurl4", "libssl3", "libsqlite3-0", "libmicrohttpd12", "libjansson4" } do
      assert.is_truthy(depends:find("%f[%w]" .. lib:gsub("%p", "%%%0") .. " %(>= "), lib .. " in " .. depends)
    end
    local _, fields = sh("dpkg-deb -f " .. q(debs.cmkflow) .. " Package Version Section Maintainer")
    assert.matches("Package: cmkflow\n", fields, 1, true)
    assert.matches("Version: " .. version .. "\n", fields, 1, true)
  end)

  it("dpkg -i installs it; cmkflow version and the demo run there", function()
    local code, out = in_root("dpkg -i /tmp/cmkflow.deb")
    assert.equal(0, code, out)
    code, out = in_root("dpkg-query -W -f '${Status} ${Version}' cmkflow")
    assert.equal("install ok installed " .. version, out)

    code, out = in_root("cmkflow version")
    assert.equal(0, code, out)
    assert.equal("cmkflow " .. version, out:match("^[^\n]*"))
    assert.matches("\nlibmicrohttpd ", out, 1, true)

    code, out = in_root("cmkflow demo")
    assert.equal(0, code, out)
    assert.matches("found 1 subscription(s)", out, 1, true)

    -- make demo's job, from the installed workflow file
    code, out = in_root("cmkflow run /usr/share/cmkflow/workflows/onboard.lua --param customer=contoso --output json 2>/dev/null")
    assert.equal(0, code, out)
    local doc = json.decode(out)
    assert.equal("succeeded", doc.status, out)
    assert.matches("^stcontoso", doc.outputs.storage_account.name)
    assert.equal("Microsoft.Keyvault", doc.outputs.storage_account.properties.encryption.keySource)
  end)

  it("the README, docs, examples, man page and completions are installed where Debian looks", function()
    local doc = root .. "/usr/share/doc/cmkflow/"
    assert.equal(files.read(source .. "/README.md"), files.read(doc .. "README.md", false))
    for _, page in ipairs { "README.md", "quickstart.md", "configuration.md", "exit-codes.md" } do
      assert.equal(files.read(source .. "/docs/" .. page), files.read(doc .. "docs/" .. page, false), page)
    end
    assert.is_truthy(files.read(doc .. "examples/policy.lua", false))
    assert.is_truthy(files.read(root .. "/usr/share/cmkflow/workflows/onboard.lua", false))
    -- generated with the command table (cmkflow help), gzipped as Debian ships manual pages
    local code, out = in_root("zcat /usr/share/man/man1/cmkflow.1.gz")
    assert.equal(0, code, out)
    assert.matches("cmkflow", out:lower())
    for _, completion in ipairs { "bash-completion/completions/cmkflow", "zsh/vendor-completions/_cmkflow" } do
      local text = files.read(root .. "/usr/share/" .. completion, false)
      assert.is_truthy(text and text:find("cmkflow", 1, true), completion)
    end
  end)

  it("the stock lua5.4 there loads the installed module (require \"cmkflow\")", function()
    local code, out = in_root("lua5.4 -e 'print(require(\"cmkflow\").version)'")
    assert.equal(0, code, out)
    assert.equal(version, out:match("^(%S+)"))
  end)

  it("cmkflow-dev carries the header, the link library and cmkflow.pc, and needs cmkflow", function()
    local _, listing = sh("dpkg-deb -c " .. q(debs["cmkflow-dev"]))
    assert.matches("%./usr/include/cmkflow%.h\n", listing)
    assert.matches("%./usr/lib/[%w_-]+/libcmkflow%.so %-> libcmkflow%.so%.0\n", listing)
    assert.matches("%./usr/lib/[%w_-]+/pkgconfig/cmkflow%.pc\n", listing)
    local _, depends = sh("dpkg-deb -f " .. q(debs["cmkflow-dev"]) .. " Depends")
    assert.matches("cmkflow (= " .. version .. ")", depends, 1, true)
  end)

  it("lintian finds nothing but what is known and accepted", function()
    -- no-changelog, no-copyright-file: the repository has neither a changelog nor a licence yet;
    -- maintscript-calls-ldconfig: CPack's own postinst/postrm (the triggers file is there too);
    -- package-name-doesnt-match-sonames: libcmkflow.so.0 ships in cmkflow, not in a libcmkflow0
    local accepted = "no-changelog,no-copyright-file,maintscript-calls-ldconfig,package-name-doesnt-match-sonames"
    local code, out = sh(("lintian --tag-display-limit 0 --fail-on error,warning --suppress-tags %s %s %s")
      :format(accepted, q(debs.cmkflow), q(debs["cmkflow-dev"])))
    assert.equal(0, code, out)
    assert.is_nil(out:match("\n[EW]: ") or out:match("^[EW]: "), out)
  end)

  it("dpkg --purge removes it", function()
    local code, out = in_root("dpkg --purge cmkflow")
    assert.equal(0, code, out)
    code = in_root("test -e /usr/bin/cmkflow || test -e /usr/share/doc/cmkflow/README.md")
    assert.equal(1, code)
  end)
end)
