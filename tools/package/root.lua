-- A fresh Debian root made offline from this machine's own installed packages: what `debootstrap
-- --variant=minbase` installs (the Essential and the required packages), plus the dependency
-- closure of the given .debs' Depends and Pre-Depends and of any extra package named, each copied
-- file by file (`dpkg-query -L`) with its status stanza and its /var/lib/dpkg/info files, so that
-- `dpkg -i` in the root checks dependencies against exactly what is there. No network, no mirror.
-- Usage: lua5.4 tools/package/root.lua ROOT [FILE.deb | PACKAGE]...
-- Needs a Debian host with those packages installed; as root it also makes /dev/null, /dev/zero,
-- /dev/random, /dev/urandom (otherwise the caller binds /dev into the root).
local root = assert(arg[1], "usage: root.lua ROOT [FILE.deb | PACKAGE]...")

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok, _, code = p:close()
  if not ok then error(cmd .. ": exit " .. tostring(code), 0) end
  return out
end

local function sh(cmd)
  local ok, _, code = os.execute(cmd)
  if not ok then error(cmd .. ": exit " .. tostring(code), 0) end
end

-- installed packages: name -> { essential, priority, depends }; virtual name -> providers
local installed, provided = {}, {}
local fields = "${db:Status-Status}\\t${Package}\\t${Essential}\\t${Priority}\\t${Provides}\\t${Pre-Depends}, ${Depends}\\n"
for line in read("dpkg-query -W -f='" .. fields .. "'"):gmatch("[^\n]+") do
  local status, name, essential, priority, provides, depends = line:match("^(.-)\t(.-)\t(.-)\t(.-)\t(.-)\t(.*)$")
  if status == "installed" and not installed[name] then
    installed[name] = { essential = essential == "yes", priority = priority, depends = depends }
    for virtual in provides:gmatch("([^,%s(]+)[^,]*") do
      provided[virtual] = provided[virtual] or name
    end
  end
end

-- "a (>= 1) | b:any, c" -> the installed package that satisfies each group
local function resolve(depends, wanted_by)
  local out = {}
  for group in depends:gmatch("[^,]+") do
    if group:match("%S") then
      local chosen
      for alternative in group:gmatch("[^|]+") do
        local name = alternative:match("^%s*([^%s:(]+)")
        if installed[name] then chosen = name elseif provided[name] then chosen = provided[name] end
        if chosen then break end
      end
      if not chosen then
        error(("%s needs %s, which this machine does not have installed"):format(wanted_by, group:gsub("^%s+", "")), 0)
      end
      out[#out + 1] = chosen
    end
  end
  return out
end

local closure, order = {}, {}
local function add(name)
  if closure[name] then return end
  closure[name] = true
  order[#order + 1] = name
  for _, dep in ipairs(resolve(installed[name].depends, name)) do add(dep) end
end

for name, p in pairs(installed) do
  if p.essential or p.priority == "required" then add(name) end
end
-- the .debs given are to be installed in the root later: they satisfy each other's dependencies
for i = 2, #arg do
  if arg[i]:match("%.deb$") then
    installed[read("dpkg-deb -f " .. quote(arg[i]) .. " Package"):match("%S+")] = { depends = "", given = true }
  end
end
for i = 2, #arg do
  local item = arg[i]
  if item:match("%.deb$") then
    local depends = read("dpkg-deb -f " .. quote(item) .. " Pre-Depends Depends | sed 's/^[A-Za-z-]*: //' | paste -sd,")
    for _, dep in ipairs(resolve(depends, item)) do
      if not installed[dep].given then add(dep) end
    end
  elseif installed[item] then
    add(item)
  else
    error(item .. " is not installed on this machine", 0)
  end
end
table.sort(order)

-- the merged /usr of Debian 12: /bin, /lib, ... are links into /usr (no package owns them)
sh("mkdir -p " .. quote(root))
for _, d in ipairs { "bin", "sbin", "lib", "lib32", "lib64", "libx32" } do
  local target = read("readlink /" .. d .. " || true"):gsub("%s+$", "")
  if target ~= "" then
    sh(("mkdir -p %s/%s && ln -sfn %s %s/%s"):format(quote(root), quote(target), quote(target), quote(root), d))
  end
end

-- every file and directory the packages list and this machine still has (images drop docs), less
-- their documentation and translations (a third of the bytes; dpkg and the programs need none)
local list = os.tmpname()
local names = {}
for _, name in ipairs(order) do names[#names + 1] = quote(name) end
sh(("dpkg-query -L %s | grep '^/.' | grep -Ev '^/usr/share/(doc|man|info|locale)/' | sort -u | while IFS= read -r f; do"
    .. " { [ -e \"$f\" ] || [ -L \"$f\" ]; } && printf '%%s\\n' \"${f#/}\"; done > %s")
   :format(table.concat(names, " "), quote(list)))
sh(("tar -C / -cf - --no-recursion -T %s | tar -C %s -xpf - --keep-directory-symlink")
   :format(quote(list), quote(root)))
os.remove(list)

-- the dpkg database of exactly these packages
local db = root .. "/var/lib/dpkg"
sh(("mkdir -p %s/info %s/updates %s/triggers %s/alternatives"):format(quote(db), quote(db), quote(db), quote(db)))
local status = assert(io.open(db .. "/status", "w"))
for _, name in ipairs(order) do
  status:write((read("dpkg-query -s " .. quote(name)):gsub("\n*$", "\n\n")))
  sh(("for f in /var/lib/dpkg/info/%s.* /var/lib/dpkg/info/%s:*.*; do [ -e \"$f\" ] && cp -p \"$f\" %s/info/; done; true")
     :format(name, name, quote(db)))
end
status:close()
sh(("cp -p /var/lib/dpkg/info/format %s/info/ 2>/dev/null; : > %s/available; : > %s/diversions; : > %s/statoverride")
   :format(quote(db), quote(db), quote(db), quote(db)))

-- trigger interests of these packages only (File: "PATH PACKAGE[:ARCH][/noawait]"; one file per
-- named trigger: "PACKAGE[:ARCH][/noawait]")
local function owner(word) return word:match("^([^:/]+)") end
for file in read("ls /var/lib/dpkg/triggers"):gmatch("[^\n]+") do
  if file ~= "Lock" and file ~= "Unincorp" then
    local kept = {}
    for line in io.lines("/var/lib/dpkg/triggers/" .. file) do
      local who = file == "File" and line:match("%S+$") or line
      if closure[owner(who)] then kept[#kept + 1] = line end
    end
    if #kept > 0 then
      local f = assert(io.open(db .. "/triggers/" .. file, "w"))
      f:write(table.concat(kept, "\n"), "\n")
      f:close()
    end
  end
end
io.open(db .. "/triggers/Unincorp", "w"):close()

-- what maintainer scripts made at install time: users and groups, the alternatives links
sh(("mkdir -p %s/etc %s/tmp %s/root %s/dev %s/proc && chmod 1777 %s/tmp && chmod 700 %s/root")
   :format(quote(root), quote(root), quote(root), quote(root), quote(root), quote(root), quote(root)))
sh(("cp /usr/share/base-passwd/passwd.master %s/etc/passwd && cp /usr/share/base-passwd/group.master %s/etc/group")
   :format(quote(root), quote(root)))
sh(("cp -a /etc/alternatives %s/etc/ && cp -a /var/lib/dpkg/alternatives/. %s/alternatives/"):format(quote(root), quote(db)))
if read("id -u"):match("^0") then
  for _, node in ipairs { "null 1 3", "zero 1 5", "random 1 8", "urandom 1 9" } do
    local name, major, minor = node:match("(%S+) (%S+) (%S+)")
    sh(("mknod -m 666 %s/dev/%s c %s %s"):format(quote(root), name, major, minor))
  end
end
io.write(#order, " packages\n")
