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
--   * check(): the apiserver's structural checks with its messages
--     (codec.crd_validate, the core's walk), so render() never meets a
--     value of the wrong shape (the apiserver checks the same, but the
--     policy must not depend on it), and a custom policy's PARAMETERS are
--     checked the same way.
-- Their node is a table (M.SPEC, M.STATUS, PARAMETERS) or what node(path)
-- returns.
local codec = require("codec")
local tablex = require("k8s.tablex")

-- Inside the sandbox a global read misses the empty _ENV and is found
-- through its __index (the library table): the hot ones are locals.
local type = type
local pairs = pairs
local next = next
local codec_is_array = codec.is_array
local codec_is_object = codec.is_object
local crd_default = codec.crd_default
local crd_validate = codec.crd_validate
local deepcopy = tablex.deepcopy

local M = {}


-- The schema is the CRD's: codec.crd_schema() is the openAPIV3Schema of the
-- embedded crd/dittoserver.yaml without descriptions (decoded by the core,
-- a fresh copy each time), so the CRD file is its only source.
--
-- M.SPEC and M.STATUS are that copy's nodes of .spec and .status, made
-- when one of them is first read: the copy cost more than anything else
-- the default policy does with the schema, and it needs none (see node()).
local FIELDS = { spec = "SPEC", status = "STATUS" }

--- M.SPEC: schema of .spec. M.STATUS: schema of .status (written by the
-- core from status()). Both made on first read.
setmetatable(M, {
  __index = function(t, k)
    if k ~= "SPEC" and k ~= "STATUS" then
      return nil
    end
    local root = codec.crd_schema()
    for field, name in pairs(FIELDS) do
      if rawget(t, name) == nil then
        rawset(t, name, root.properties[field])
      end
    end
    return rawget(t, k)
  end,
})


--- The schema node of a field, for check(), apply_defaults() and
-- defaulted_copy(): its node in M.SPEC or M.STATUS once they are made (a
-- policy that read them may have changed them), else the path itself,
-- which the core resolves in its own decoded copy of the CRD (the schema
-- M.SPEC would be) without copying it.
-- @param path string dotted field path: "spec", "spec.config", "status"
-- @return table|string the node, or path
function M.node(path)
  local top, rest = path:match("^([^.]*)%.?(.*)$")
  local node = FIELDS[top] and rawget(M, FIELDS[top])
  if not node then
    return path
  end
  for name in rest:gmatch("[^.]+") do
    node = node.properties[name]
  end
  return node
end


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
-- @param node table|string schema node (for example M.SPEC, node("spec"))
-- @return value (the same table, defaulted)
function M.apply_defaults(value, node)
  return crd_default(value, node)
end


--- A defaulted deep copy: the value of
-- M.apply_defaults(tablex.deepcopy(value), node).
-- @param value any decoded JSON value (not modified)
-- @param node table|string|nil schema node (for example M.SPEC,
-- node("spec"))
-- @return value a new, defaulted value
function M.defaulted_copy(value, node)
  return crd_default(deepcopy(value), node)
end


--- Check a value against a schema node: the apiserver's structural checks
-- (types, required keys, enums, patterns, numeric, length and item limits,
-- list-map keys), done by the core's walk (codec.crd_validate, the one
-- --script-test applies to a DittoServer), with the apiserver's messages,
-- for example "spec.replicas: Invalid value: -1: spec.replicas in body
-- should be greater than or equal to 0". A null counts as absent; an
-- unmarked empty table as an empty list where the schema wants one.
-- @param value any decoded JSON value
-- @param node table|string schema node (M.SPEC, node("spec"), or a
-- policy's PARAMETERS)
-- @param path string field path of value, for example "spec"
-- @return table errors ("path: message"), table warnings (the unknown
-- fields: `unknown field "spec.x"`), codec arrays
function M.check(value, node, path)
  return crd_validate(value, node, path)
end


return M
