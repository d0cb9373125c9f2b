-- Fault-rule patterns (docs/emulator.md "Fault rule") matched in linear time. A rule's `path` and
-- `host` are Lua patterns, but string.find backtracks: "a?" x30 "a" x30 against "a" x30 runs for
-- minutes on the server thread. Without captures, back-references, %b and %f, a Lua pattern is a
-- regular expression with no alternation: a chain of single-character classes, each once, `?`,
-- `*`, `-` or `+`, optionally anchored. This module compiles one into that chain (each class as a
-- 256-entry byte table, built with string.find on one character) and runs it as a set of chain
-- positions over the subject (Thompson's construction): O(#subject x #pattern), no backtracking.
--   pattern.compile(p) -> matcher | nil, reason      (reason names what is refused)
--   pattern.find(matcher, subject) -> boolean        (string.find(subject, p) ~= nil)
local M = {}

M.MAX_LENGTH = 256

-- The class at p[i..]: its text and the index after it; or nil, reason.
local function class_at(p, i)
  local c = p:sub(i, i)
  if c == "%" then
    local d = p:sub(i + 1, i + 1)
    if d == "" then return nil, "ends with '%'" end
    if d == "b" or d == "f" then return nil, "uses %" .. d .. " (not supported in fault rules)" end
    if d:match("%d") then return nil, "uses a back-reference %" .. d end
    return p:sub(i, i + 1), i + 2
  end
  if c == "[" then
    local j = i + 1
    if p:sub(j, j) == "^" then j = j + 1 end
    if p:sub(j, j) == "]" then j = j + 1 end -- a leading ']' is literal
    while true do
      local d = p:sub(j, j)
      if d == "" then return nil, "has an unclosed '['" end
      if d == "%" then j = j + 2
      elseif d == "]" then break
      else j = j + 1 end
    end
    return p:sub(i, j), j + 1
  end
  return c, i + 1
end

local QUANT = { ["?"] = true, ["*"] = true, ["-"] = true, ["+"] = true }

function M.compile(p)
  if type(p) ~= "string" then return nil, "is not a string" end
  if #p > M.MAX_LENGTH then return nil, "is longer than " .. M.MAX_LENGTH .. " characters" end
  local items, i = {}, 1
  local anchored = p:sub(1, 1) == "^"
  if anchored then i = 2 end
  local to_end = false
  while i <= #p do
    local c = p:sub(i, i)
    if c == "$" and i == #p then
      to_end = true
      break
    end
    if c == "(" or c == ")" then
      i = i + 1 -- captures do not change whether the pattern matches
    else
      local cls, nxt = class_at(p, i)
      if not cls then return nil, nxt end
      local ok = pcall(string.find, "", cls)
      if not ok then return nil, "is not a valid Lua pattern" end
      local set = {}
      for b = 0, 255 do set[b] = string.find(string.char(b), "^" .. cls) ~= nil end
      local q = p:sub(nxt, nxt)
      if QUANT[q] then nxt = nxt + 1 else q = "" end
      items[#items + 1] = { set = set, q = q }
      i = nxt
    end
  end
  if not pcall(string.find, "", p) then return nil, "is not a valid Lua pattern" end
  return { items = items, anchored = anchored, to_end = to_end }
end

-- Adds position k of the chain to the set `states`, following the moves that consume nothing
-- (past an item that may occur zero times).
local function add(m, states, k)
  while not states[k] do
    states[k] = true
    local it = m.items[k]
    if not it or (it.q ~= "?" and it.q ~= "*" and it.q ~= "-") then return end
    k = k + 1
  end
end

function M.find(m, subject)
  local n, final = #subject, #m.items + 1
  local states = {}
  add(m, states, 1)
  for pos = 1, n + 1 do
    if states[final] and (not m.to_end or pos == n + 1) then return true end
    if pos == n + 1 then break end
    local b = subject:byte(pos)
    local nxt = {}
    for k in pairs(states) do
      local it = m.items[k]
      if it and it.set[b] then
        if it.q == "*" or it.q == "-" or it.q == "+" then add(m, nxt, k) end
        add(m, nxt, k + 1)
      end
    end
    if not m.anchored then add(m, nxt, 1) end
    states = nxt
  end
  return false
end

return M
