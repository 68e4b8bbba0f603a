-- dittoserver_schema: the DittoServer fields the default policy reads, with
-- their types, validation and defaults, as a declarative table.
--
-- The tables are the openAPIV3Schema of crd/dittoserver.yaml (no
-- descriptions), as the core decodes it from the embedded CRD
-- (codec.crd_schema): the CRD is the one source. The policy uses them for
-- two things:
--   * apply_defaults(): the apiserver's defaulting algorithm, so a spec the
--     policy sees outside the cluster (busted) is defaulted exactly as one
--     read from the apiserver;
--   * check(): types, required keys, enums and numeric limits, so render()
--     never meets a value of the wrong shape (the apiserver checks the same,
--     but the policy must not depend on it).
local codec = require("codec")
local tablex = require("k8s.tablex")

-- Inside the sandbox a global read misses the empty _ENV and is found
-- through its __index (the library table): the hot ones are locals.
local type = type
local ipairs = ipairs
local pairs = pairs
local next = next
local tostring = tostring
local math_type = math.type
local format = string.format
local concat = table.concat
local sort = table.sort
local codec_is_array = codec.is_array
local codec_is_object = codec.is_object
local null = codec.null
local crd_default = codec.crd_default
local deepcopy = tablex.deepcopy
local contains = tablex.contains

local M = {}


-- The schema is the CRD's: codec.crd_schema() is the openAPIV3Schema of the
-- embedded crd/dittoserver.yaml without descriptions (decoded by the core,
-- a fresh copy each time), so the CRD file is its only source.
local ROOT = codec.crd_schema()

--- Schema of .spec.
M.SPEC = ROOT.properties.spec

--- Schema of .status (written by the core from status()).
M.STATUS = ROOT.properties.status


-- A JSON array: marked by the codec, or a plain table whose keys are exactly
-- 1..n (an empty plain table counts as both an array and an object).
local function is_array(v)
  if type(v) ~= "table" then
    return false
  end
  if codec_is_array(v) then
    return true
  end
  if codec_is_object(v) then
    return false
  end
  local n = 0
  for _ in pairs(v) do
    n = n + 1
  end
  return n == #v
end

local function is_object(v)
  if type(v) ~= "table" or codec_is_array(v) then
    return false
  end
  if codec_is_object(v) or next(v) == nil then
    return true
  end
  for k in pairs(v) do
    if type(k) ~= "string" then
      return false
    end
  end
  return true
end

M.is_array = is_array
M.is_object = is_object


--- Fill in absent fields from the schema defaults, in place, the way the
-- apiserver does (apiextensions structural defaulting): a default applies
-- when its key is absent (or JSON null) and its parent object is present;
-- defaults are set first, then the walk descends into the (possibly new)
-- value, so `service: {}` gets `service.type` too. The walk is the core's
-- (codec.crd_default, the one --script-test applies to a DittoServer),
-- without its pruning: unknown fields stay for check() to report.
-- @param value any decoded JSON value
-- @param node table schema node (for example M.SPEC)
-- @return value (the same table, defaulted)
function M.apply_defaults(value, node)
  return crd_default(value, node)
end


--- A defaulted deep copy: the value of
-- M.apply_defaults(tablex.deepcopy(value), node).
-- @param value any decoded JSON value (not modified)
-- @param node table|nil schema node (for example M.SPEC)
-- @return value a new, defaulted value
function M.defaulted_copy(value, node)
  return crd_default(deepcopy(value), node)
end


local TYPE_NAMES = {
  string = "string", integer = "integer", boolean = "boolean",
  object = "object", array = "array", number = "number",
}

local function type_of(v)
  local t = type(v)
  if t == "string" or t == "boolean" then
    return t
  end
  if t == "number" then
    return math_type(v) == "integer" and "integer" or "number"
  end
  if v == null then
    return "null"
  end
  -- decoded values carry a marker
  if codec_is_object(v) then
    return "object"
  end
  if codec_is_array(v) then
    return "array"
  end
  if is_array(v) and (codec_is_array(v) or next(v) ~= nil) then
    return "array"
  end
  if is_object(v) then
    return "object"
  end
  return t
end

local function matches_type(v, want)
  local got = type_of(v)
  if got == want then
    return true
  end
  -- an unmarked empty table is both {} and []
  return want == "array" and type(v) == "table" and next(v) == nil
end

local function quote(v)
  if type(v) == "string" then
    return format("%q", v)
  end
  return tostring(v)
end

local function enum_text(enum)
  local parts = {}
  for i, e in ipairs(enum) do
    parts[i] = quote(e)
  end
  return concat(parts, ", ")
end

-- Keys of a decoded object in bytewise order (not tablex.sorted_keys: the
-- keys are strings, and a plain sort without a codec array is cheaper on
-- this path, once per object of every spec).
local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = tostring(k)
  end
  sort(keys)
  return keys
end

local check_node

-- True when v is a scalar that check_node would accept without a message:
-- the common case, checked without building the field's path.
local function leaf_ok(v, node)
  if node.enum then
    return false
  end
  local t = node.type
  if t == "string" then
    return type(v) == "string"
      and not (node.minLength and #v < node.minLength)
      and not (node.maxLength and #v > node.maxLength)
  end
  if t == "integer" then
    return math_type(v) == "integer"
      and not (node.minimum and v < node.minimum)
      and not (node.maximum and v > node.maximum)
  end
  return t == "boolean" and type(v) == "boolean"
end

-- Walks value against node; appends "path: message" strings to errs and
-- unknown-field notices to warns.
check_node = function(value, node, path, errs, warns)
  if value == nil then
    return
  end
  if value == null then
    -- the apiserver drops nulls of non-nullable fields
    return
  end
  if node.anyOf then
    local ok = false
    for _, alt in ipairs(node.anyOf) do
      ok = ok or matches_type(value, alt.type)
    end
    if not ok then
      errs[#errs + 1] = path .. ": must be an integer or a string"
    end
    return
  end
  if node.type and not matches_type(value, node.type) then
    errs[#errs + 1] = format("%s: must be %s %s, got %s", path,
      node.type == "integer" and "an" or "a", TYPE_NAMES[node.type],
      type_of(value))
    return
  end
  if node.enum and not contains(node.enum, value) then
    errs[#errs + 1] = format("%s: unsupported value %s: must be one "
      .. "of %s", path, quote(value), enum_text(node.enum))
  end
  if node.minimum and type(value) == "number" and value < node.minimum then
    errs[#errs + 1] = format("%s: must be >= %d, got %s", path,
      node.minimum, tostring(value))
  end
  if node.maximum and type(value) == "number" and value > node.maximum then
    errs[#errs + 1] = format("%s: must be <= %d, got %s", path,
      node.maximum, tostring(value))
  end
  if node.minLength and type(value) == "string"
      and #value < node.minLength then
    errs[#errs + 1] = path .. ": must not be empty"
  end
  if node.maxLength and type(value) == "string"
      and #value > node.maxLength then
    errs[#errs + 1] = format("%s: must be at most %d characters",
      path, node.maxLength)
  end
  if node.type == "array" then
    if node.minItems and #value < node.minItems then
      errs[#errs + 1] = format("%s: must have at least %d item%s",
        path, node.minItems, node.minItems == 1 and "" or "s")
    end
    local items = node.items
    for i, v in ipairs(value) do
      if not leaf_ok(v, items) then
        check_node(v, items, format("%s[%d]", path, i - 1), errs,
          warns)
      end
    end
    return
  end
  if node.type ~= "object" or node["x-kubernetes-preserve-unknown-fields"]
  then
    return
  end
  for _, key in ipairs(node.required or {}) do
    if value[key] == nil or value[key] == null then
      errs[#errs + 1] = format("%s.%s: required", path, key)
    end
  end
  local props = node.properties
  local additional = node.additionalProperties
  for _, key in ipairs(sorted_keys(value)) do
    local sub_node = props and props[key] or additional
    local v = value[key]
    if sub_node == nil then
      warns[#warns + 1] = path .. "." .. key .. ": unknown field, ignored"
    elseif not leaf_ok(v, sub_node) then
      check_node(v, sub_node, path .. "." .. key, errs, warns)
    end
  end
end

--- Check a value against a schema node: types, required keys, enums,
-- numeric and length limits (patterns are left to the policy's own rules,
-- since JSON Schema regexes are not Lua patterns).
-- @param value any decoded JSON value
-- @param node table schema node
-- @param path string field path of value, for example "spec"
-- @return table errors ("path: message"), table warnings
function M.check(value, node, path)
  local errs, warns = {}, {}
  check_node(value, node, path, errs, warns)
  return errs, warns
end


return M
