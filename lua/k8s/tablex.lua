--- k8s.tablex: table helpers for JSON-shaped values.
--
-- Values follow the codec contract: tables may carry `codec.array_mt` or
-- `codec.object_mt`, and JSON null is the `codec.null` sentinel. Every
-- function here keeps those markers and never depends on pairs() order.
--
-- API:
--   deepcopy(v)            -> copy of v; tables copied recursively, metatables
--                             (codec markers) kept, codec.null kept as is
--   merge(dst, src)        -> dst; deep merge in place, src wins; objects are
--                             merged key by key, arrays and scalars replaced
--                             (by a deep copy of src's value)
--   equal(a, b)            -> boolean; deep, marker aware: an empty array is
--                             not equal to an empty object; an unmarked table
--                             counts as the kind the codec would encode it as
--   kind(v)                -> "array" | "object" | "null" | type(v)
--   is_array(v)            -> boolean (marked array, or unmarked 1..n list)
--   sorted_keys(t)         -> array of t's keys, numbers first (ascending),
--                             then strings (bytewise), then others by tostring
--   is_empty(t)            -> true when t has no keys (nil counts as empty)
--   shallow_copy(t)        -> one-level copy, metatable kept
--   contains(list, v)      -> boolean (ipairs, ==)
--   map(list, fn)          -> codec array of fn(item, i)
--   filter(list, fn)       -> codec array of the items where fn(item, i)
--   extend(dst, src)       -> dst with src's items appended (ipairs)
--   get(t, path...)        -> nested lookup; nil on any missing/non-table step

local codec = require("codec")

local M = {}

local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local getmetatable = getmetatable
local setmetatable = setmetatable
local tostring = tostring
local sort = table.sort

local null = codec.null
-- nil with the spec's stand-in codec (no C module)
local c_deepcopy = codec.deepcopy


local function copy_value(v, seen)
  if type(v) ~= "table" or v == null then
    return v
  end
  local done = seen[v]
  if done then
    return done
  end
  local out = {}
  seen[v] = out
  for k, item in pairs(v) do
    -- scalars (most keys and values) without a call
    if type(k) == "table" then
      k = copy_value(k, seen)
    end
    if type(item) == "table" then
      item = copy_value(item, seen)
    end
    out[k] = item
  end
  local mt = getmetatable(v)
  if mt ~= nil then
    setmetatable(out, mt)
  end
  return out
end


--- Deep copy of a JSON-shaped value.
-- Metatables (the codec array/object markers) are carried over; `codec.null`
-- and other non-table values are returned as they are. Shared sub-tables and
-- cycles are copied once.
-- @param v any value
-- @return any the copy
function M.deepcopy(v)
  -- the codec's copy (C) when it takes v: JSON-shaped values
  if c_deepcopy ~= nil and type(v) == "table" then
    local copy = c_deepcopy(v)
    if copy ~= nil then
      return copy
    end
  end
  return copy_value(v, {})
end


--- The JSON kind of a value, as the codec would encode it.
-- @param v any value
-- @return string "array", "object", "null", or type(v) for scalars
function M.kind(v)
  if v == null then
    return "null"
  end
  if type(v) ~= "table" then
    return type(v)
  end
  local mt = getmetatable(v)
  if mt == codec.array_mt then
    return "array"
  end
  if mt == codec.object_mt then
    return "object"
  end
  -- Unmarked: empty -> object; keys exactly 1..n -> array; else object.
  local n = #v
  if n == 0 then
    return "object"
  end
  local count = 0
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      return "object"
    end
    count = count + 1
  end
  if count ~= n then
    return "object"
  end
  return "array"
end


--- Whether a value is (or would encode as) a JSON array.
-- @param v any value
-- @return boolean
function M.is_array(v)
  return M.kind(v) == "array"
end


local function equal_value(a, b)
  if a == b then
    return true
  end
  if type(a) ~= "table" or type(b) ~= "table" then
    -- Integers and floats of the same value are already == in Lua 5.4.
    return false
  end
  if a == null or b == null then
    return false
  end
  local ka = M.kind(a)
  if ka ~= M.kind(b) then
    return false
  end
  for k, va in pairs(a) do
    local vb = b[k]
    if vb == nil or not equal_value(va, vb) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end


--- Deep equality of two JSON-shaped values.
-- Marker aware: `codec.array()` and `codec.object()` differ even when both
-- are empty; an unmarked table compares as the kind the codec would encode it
-- as (so an unmarked `{}` equals `codec.object()`). `codec.null` equals only
-- itself. Numbers compare by value (1 == 1.0).
-- @param a any value
-- @param b any value
-- @return boolean
function M.equal(a, b)
  return equal_value(a, b)
end


local function is_mergeable(v)
  return type(v) == "table" and v ~= null and M.kind(v) == "object"
end


--- Deep merge `src` into `dst`, in place; `src` wins.
-- For every key of `src`: when both sides hold objects, they are merged
-- recursively; otherwise `dst[k]` becomes a deep copy of `src[k]` (arrays are
-- replaced, never concatenated; `codec.null` replaces too). Keys absent from
-- `src` are kept. `src` is never modified or aliased.
-- @param dst table the table to update
-- @param src table|nil the values to merge in (nil merges nothing)
-- @return table dst
function M.merge(dst, src)
  if src == nil then
    return dst
  end
  for k, v in pairs(src) do
    local cur = dst[k]
    if is_mergeable(v) and is_mergeable(cur) then
      M.merge(cur, v)
    else
      dst[k] = copy_value(v, {})
    end
  end
  return dst
end


local KEY_RANK = { number = 1, string = 2 }


local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    local ra, rb = KEY_RANK[ta] or 3, KEY_RANK[tb] or 3
    if ra ~= rb then
      return ra < rb
    end
    return ta < tb
  end
  if ta == "number" or ta == "string" then
    return a < b
  end
  return tostring(a) < tostring(b)
end


--- The keys of a table in a deterministic order.
-- Numbers first (ascending), then strings (bytewise), then anything else
-- ordered by type name and tostring().
-- @param t table
-- @return table a codec array of keys
function M.sorted_keys(t)
  local keys = codec.array({})
  if t == nil then
    return keys
  end
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  sort(keys, key_less)
  return keys
end


--- Whether a table has no keys at all.
-- @param t table|nil
-- @return boolean true for nil and for empty tables (arrays or objects)
function M.is_empty(t)
  return t == nil or next(t) == nil
end


--- One-level copy of a table, metatable kept.
-- @param t table
-- @return table
function M.shallow_copy(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  return setmetatable(out, getmetatable(t))
end


--- Whether a list holds a value (compared with ==).
-- @param list table|nil
-- @param value any
-- @return boolean
function M.contains(list, value)
  if list == nil then
    return false
  end
  for _, v in ipairs(list) do
    if v == value then
      return true
    end
  end
  return false
end


--- Maps a list through a function.
-- @param list table|nil
-- @param fn function called as fn(item, index)
-- @return table a codec array of the results (nil results are skipped)
function M.map(list, fn)
  local out = codec.array({})
  if list == nil then
    return out
  end
  for i, v in ipairs(list) do
    local r = fn(v, i)
    if r ~= nil then
      out[#out + 1] = r
    end
  end
  return out
end


--- Keeps the items of a list for which a predicate holds.
-- @param list table|nil
-- @param fn function called as fn(item, index)
-- @return table a codec array of the kept items (same order)
function M.filter(list, fn)
  local out = codec.array({})
  if list == nil then
    return out
  end
  for i, v in ipairs(list) do
    if fn(v, i) then
      out[#out + 1] = v
    end
  end
  return out
end


--- Appends the items of one list to another, in place.
-- @param dst table
-- @param src table|nil
-- @return table dst
function M.extend(dst, src)
  if src == nil then
    return dst
  end
  for _, v in ipairs(src) do
    dst[#dst + 1] = v
  end
  return dst
end


--- Nested lookup: get(t, "spec", "storage", "size").
-- @param t any
-- @param ... keys
-- @return any the value, or nil when a step is missing, null or not a table
function M.get(t, ...)
  local cur = t
  for i = 1, select("#", ...) do
    if type(cur) ~= "table" or cur == null then
      return nil
    end
    cur = cur[(select(i, ...))]
  end
  return cur
end


return M
