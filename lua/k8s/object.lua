--- k8s.object: building and inspecting Kubernetes objects as plain tables.
--
-- Objects are tables in Kubernetes JSON shape. Builders mark lists with
-- `codec.array` so an empty list still encodes as `[]`. Functions that change
-- an object do it in place and return it.
--
-- API:
--   new(api_version, kind, name)        -> {apiVersion=, kind=,
--                                          metadata={name=}}
--   meta(obj)                           -> obj.metadata (created if missing)
--   set_labels(obj, labels)             -> obj; labels replaced by a copy
--   merge_labels(obj, labels)           -> obj; labels added, given ones win
--   set_annotations / merge_annotations -> same for annotations
--   get_label(obj, key), get_annotation(obj, key) -> string | nil
--   selector(labels)                    -> {matchLabels = copy of labels}
--   matches(selector, labels)           -> boolean (matchLabels and
--                                          matchExpressions In, NotIn, Exists,
--                                          DoesNotExist; a nil or empty
--                                          selector matches everything)
--   key(namespace, name)                -> "namespace/name", or "name" when
--                                          namespace is nil or ""
--   is_dns1123_label(s)                 -> true | false, {messages}
--   is_dns1123_subdomain(s)             -> true | false, {messages}
--       messages are apimachinery's (validation.IsDNS1123Label/Subdomain)
--   child_name(parent, suffix, max_len) -> "parent-suffix" | nil, err
--       max_len 63 (default: a DNS-1123 label, e.g. Services) or 253
--       (a DNS-1123 subdomain, e.g. ConfigMaps)
--   owner_reference(owner, opts)        -> ownerReference | nil, err
--       opts: controller (default true), block_owner_deletion (default
--       true), uid (overrides owner.metadata.uid)
--   find_owner_reference(obj, match)    -> ref, index | nil
--       match: {uid=} or {apiVersion=, kind=, name=} (group compared, not
--       version), or controller=true for the controller reference
--   env(name, value)                    -> {name=, value=} (value tostring'd)
--   env_from_secret(name, secret, key, optional) -> env with secretKeyRef
--   env_from_config_map(name, cm, key, optional) -> env with configMapKeyRef
--   env_from_field(name, field_path)    -> env with fieldRef
--   container_port(name, port, protocol)        -> {name=, containerPort=,
--                                                   protocol=}
--   service_port(name, port, target_port, protocol) -> Service port
--   volume_mount(name, mount_path, opts)        -> opts: read_only, sub_path
--   volume_config_map(name, cm_name, opts)      -> opts: items, default_mode
--   volume_secret(name, secret_name, opts)      -> opts: items, default_mode
--   volume_pvc(name, claim_name, read_only)
--   volume_empty_dir(name, opts)                -> opts: medium, size_limit

local codec = require("codec")

local M = {}

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local find = string.find
local format = string.format
local match = string.match

local DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
local DNS1123_LABEL_MSG = "a lowercase RFC 1123 label must consist of lower "
  .. "case alphanumeric characters or '-', and must start and end with an "
  .. "alphanumeric character"
local DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT .. "(\\."
  .. DNS1123_LABEL_FMT .. ")*"
local DNS1123_SUBDOMAIN_MSG = "a lowercase RFC 1123 subdomain must consist "
  .. "of lower case alphanumeric characters, '-' or '.', and must start and "
  .. "end with an alphanumeric character"

--- Maximum length of a DNS-1123 label (Service names, label values...).
M.DNS1123_LABEL_MAX = 63
--- Maximum length of a DNS-1123 subdomain (most object names).
M.DNS1123_SUBDOMAIN_MAX = 253


-- validation.RegexError: msg (e.g. 'a',  or 'b', regex used ... is 'fmt').
-- The doubled space before "or" is apimachinery's own.
local function regex_error(msg, fmt, ...)
  local examples = { ... }
  msg = msg .. " (e.g. "
  for i, ex in ipairs(examples) do
    if i > 1 then
      msg = msg .. " or "
    end
    msg = msg .. "'" .. ex .. "', "
  end
  return msg .. "regex used for validation is '" .. fmt .. "')"
end


local function max_len_error(n)
  return format("must be no more than %d characters", n)
end


local function is_label_syntax(s)
  return find(s, "^[a-z0-9]$") ~= nil
    or find(s, "^[a-z0-9][-a-z0-9]*[a-z0-9]$") ~= nil
end


local function is_subdomain_syntax(s)
  if s == "" then
    return false
  end
  for label in (s .. "."):gmatch("([^.]*)%.") do
    if not is_label_syntax(label) then
      return false
    end
  end
  return true
end


--- Checks a DNS-1123 label (lowercase, '-', <= 63 characters).
-- @param s string
-- @return boolean true when valid
-- @return table|nil codec array of apimachinery's messages when invalid
function M.is_dns1123_label(s)
  if type(s) ~= "string" then
    return false, codec.array({ "must be a string" })
  end
  local errs = codec.array({})
  if #s > M.DNS1123_LABEL_MAX then
    errs[#errs + 1] = max_len_error(M.DNS1123_LABEL_MAX)
  end
  if not is_label_syntax(s) then
    if is_subdomain_syntax(s) then
      errs[#errs + 1] = "must not contain dots"
    else
      errs[#errs + 1] = regex_error(DNS1123_LABEL_MSG, DNS1123_LABEL_FMT,
        "my-name", "123-abc")
    end
  end
  if #errs > 0 then
    return false, errs
  end
  return true
end


--- Checks a DNS-1123 subdomain (dot-separated labels, <= 253 characters).
-- @param s string
-- @return boolean true when valid
-- @return table|nil codec array of apimachinery's messages when invalid
function M.is_dns1123_subdomain(s)
  if type(s) ~= "string" then
    return false, codec.array({ "must be a string" })
  end
  local errs = codec.array({})
  if #s > M.DNS1123_SUBDOMAIN_MAX then
    errs[#errs + 1] = max_len_error(M.DNS1123_SUBDOMAIN_MAX)
  end
  if not is_subdomain_syntax(s) then
    errs[#errs + 1] = regex_error(DNS1123_SUBDOMAIN_MSG,
      DNS1123_SUBDOMAIN_FMT, "example.com")
  end
  if #errs > 0 then
    return false, errs
  end
  return true
end


--- Builds an object skeleton.
-- @param api_version string e.g. "apps/v1"
-- @param kind string e.g. "StatefulSet"
-- @param name string metadata.name
-- @return table {apiVersion=, kind=, metadata={name=}}
function M.new(api_version, kind, name)
  return codec.object({
    apiVersion = api_version,
    kind = kind,
    metadata = codec.object({ name = name }),
  })
end


--- The metadata table of an object, created when missing.
-- @param obj table
-- @return table obj.metadata
function M.meta(obj)
  local md = obj.metadata
  if type(md) ~= "table" then
    md = codec.object({})
    obj.metadata = md
  end
  return md
end


local function copy_map(t)
  local out = codec.object({})
  if t ~= nil then
    for k, v in pairs(t) do
      out[k] = v
    end
  end
  return out
end


local function set_map(obj, field, values)
  M.meta(obj)[field] = copy_map(values)
  return obj
end


local function merge_map(obj, field, values)
  local md = M.meta(obj)
  local cur = md[field]
  if type(cur) ~= "table" then
    cur = codec.object({})
    md[field] = cur
  end
  if values ~= nil then
    for k, v in pairs(values) do
      cur[k] = v
    end
  end
  return obj
end


--- Replaces metadata.labels with a copy of `labels`.
-- @param obj table
-- @param labels table|nil string -> string
-- @return table obj
function M.set_labels(obj, labels)
  return set_map(obj, "labels", labels)
end


--- Adds `labels` to metadata.labels; the given values win.
-- @param obj table
-- @param labels table|nil string -> string
-- @return table obj
function M.merge_labels(obj, labels)
  return merge_map(obj, "labels", labels)
end


--- Replaces metadata.annotations with a copy of `annotations`.
-- @param obj table
-- @param annotations table|nil string -> string
-- @return table obj
function M.set_annotations(obj, annotations)
  return set_map(obj, "annotations", annotations)
end


--- Adds `annotations` to metadata.annotations; the given values win.
-- @param obj table
-- @param annotations table|nil string -> string
-- @return table obj
function M.merge_annotations(obj, annotations)
  return merge_map(obj, "annotations", annotations)
end


local function get_map_value(obj, field, key)
  local md = type(obj) == "table" and obj.metadata or nil
  local m = type(md) == "table" and md[field] or nil
  if type(m) ~= "table" then
    return nil
  end
  return m[key]
end


--- A label value of an object.
-- @param obj table
-- @param key string
-- @return string|nil
function M.get_label(obj, key)
  return get_map_value(obj, "labels", key)
end


--- An annotation value of an object.
-- @param obj table
-- @param key string
-- @return string|nil
function M.get_annotation(obj, key)
  return get_map_value(obj, "annotations", key)
end


--- A label selector matching exactly the given labels.
-- @param labels table string -> string
-- @return table {matchLabels = copy}
function M.selector(labels)
  return codec.object({ matchLabels = copy_map(labels) })
end


local function expression_matches(expr, labels)
  local value = labels[expr.key]
  local op = expr.operator
  if op == "Exists" then
    return value ~= nil
  end
  if op == "DoesNotExist" then
    return value == nil
  end
  local in_set = false
  for _, v in ipairs(expr.values or {}) do
    if v == value then
      in_set = true
      break
    end
  end
  if op == "In" then
    return value ~= nil and in_set
  end
  if op == "NotIn" then
    return not in_set
  end
  return false
end


--- Whether a label selector selects a set of labels.
-- Follows metav1.LabelSelector: every matchLabels pair must be present and
-- every matchExpressions entry must hold (NotIn also matches when the key is
-- absent). A nil or empty selector matches everything; an unknown operator
-- matches nothing.
-- @param selector table|nil {matchLabels=, matchExpressions=}
-- @param labels table|nil string -> string
-- @return boolean
function M.matches(selector, labels)
  labels = labels or {}
  if selector == nil then
    return true
  end
  for k, v in pairs(selector.matchLabels or {}) do
    if labels[k] ~= v then
      return false
    end
  end
  for _, expr in ipairs(selector.matchExpressions or {}) do
    if not expression_matches(expr, labels) then
      return false
    end
  end
  return true
end


--- The cache key of an object, as client-go's MetaNamespaceKeyFunc.
-- @param namespace string|nil
-- @param name string
-- @return string "namespace/name", or "name" for cluster-scoped objects
function M.key(namespace, name)
  if namespace == nil or namespace == "" then
    return name
  end
  return namespace .. "/" .. name
end


--- The name of a child object: parent .. "-" .. suffix, validated.
-- @param parent string the parent's name
-- @param suffix string|nil e.g. "config", "headless"; nil or "" -> parent
-- @param max_len number|nil 63 (default, DNS-1123 label) or 253
--   (DNS-1123 subdomain)
-- @return string|nil the name
-- @return string|nil error naming the limit or the syntax problem
function M.child_name(parent, suffix, max_len)
  max_len = max_len or M.DNS1123_LABEL_MAX
  if type(parent) ~= "string" or parent == "" then
    return nil, "parent name must be a non-empty string"
  end
  local name = parent
  if suffix ~= nil and suffix ~= "" then
    name = parent .. "-" .. suffix
  end
  local ok, errs
  if max_len <= M.DNS1123_LABEL_MAX then
    ok, errs = M.is_dns1123_label(name)
  else
    ok, errs = M.is_dns1123_subdomain(name)
  end
  if ok and #name > max_len then
    ok, errs = false, { max_len_error(max_len) }
  end
  if not ok then
    return nil, format("name %q (from %q): %s", name, parent,
      table.concat(errs, "; "))
  end
  return name
end


--- An ownerReference pointing at `owner`.
-- @param owner table an object with apiVersion, kind, metadata.name and
--   metadata.uid (or opts.uid)
-- @param opts table|nil {controller=true, block_owner_deletion=true, uid=}
-- @return table|nil the reference
-- @return string|nil error when a field is missing
function M.owner_reference(owner, opts)
  opts = opts or {}
  if type(owner) ~= "table" then
    return nil, "owner must be a table"
  end
  local md = type(owner.metadata) == "table" and owner.metadata or {}
  local uid = opts.uid or md.uid
  local fields = {
    { "apiVersion", owner.apiVersion },
    { "kind", owner.kind },
    { "metadata.name", md.name },
    { "metadata.uid", uid },
  }
  for _, f in ipairs(fields) do
    if type(f[2]) ~= "string" or f[2] == "" then
      return nil, "owner " .. f[1] .. " must be a non-empty string"
    end
  end
  local controller = opts.controller
  if controller == nil then
    controller = true
  end
  local block = opts.block_owner_deletion
  if block == nil then
    block = true
  end
  return codec.object({
    apiVersion = owner.apiVersion,
    kind = owner.kind,
    name = md.name,
    uid = uid,
    controller = controller,
    blockOwnerDeletion = block,
  })
end


local function group_of(api_version)
  if type(api_version) ~= "string" then
    return nil
  end
  local group = match(api_version, "^(.*)/[^/]*$")
  return group or ""
end


local function ref_matches(ref, want)
  if want.controller and ref.controller ~= true then
    return false
  end
  if want.uid ~= nil then
    return ref.uid == want.uid
  end
  if want.kind ~= nil and ref.kind ~= want.kind then
    return false
  end
  if want.name ~= nil and ref.name ~= want.name then
    return false
  end
  if want.apiVersion ~= nil
    and group_of(ref.apiVersion) ~= group_of(want.apiVersion) then
    return false
  end
  return true
end


--- Finds an ownerReference of an object.
-- `match` may be an owner object (its apiVersion, kind, metadata.name and
-- metadata.uid are used) or a table of fields {uid=, apiVersion=, kind=,
-- name=, controller=}. A uid decides alone; otherwise every given field must
-- match, apiVersion by API group only (v1alpha1 and v1 of a group match).
-- @param obj table
-- @param match_spec table an owner object or the fields to match
-- @return table|nil the reference
-- @return number|nil its index in metadata.ownerReferences
function M.find_owner_reference(obj, match_spec)
  local md = type(obj) == "table" and obj.metadata or nil
  local refs = type(md) == "table" and md.ownerReferences or nil
  if type(refs) ~= "table" or type(match_spec) ~= "table" then
    return nil
  end
  local want = match_spec
  if type(match_spec.metadata) == "table" then
    want = {
      apiVersion = match_spec.apiVersion,
      kind = match_spec.kind,
      name = match_spec.metadata.name,
      uid = match_spec.metadata.uid,
    }
  end
  for i, ref in ipairs(refs) do
    if type(ref) == "table" and ref_matches(ref, want) then
      return ref, i
    end
  end
  return nil
end


--- A container env var with a literal value.
-- @param name string
-- @param value any converted with tostring (numbers, booleans)
-- @return table {name=, value=}
function M.env(name, value)
  return codec.object({ name = name, value = tostring(value) })
end


local function key_ref(name, ref_field, ref_name, key, optional)
  local ref = codec.object({ name = ref_name, key = key })
  if optional ~= nil then
    ref.optional = optional
  end
  return codec.object({
    name = name,
    valueFrom = codec.object({ [ref_field] = ref }),
  })
end


--- A container env var read from a Secret key.
-- @param name string
-- @param secret string the Secret's name
-- @param key string the key in the Secret
-- @param optional boolean|nil
-- @return table {name=, valueFrom={secretKeyRef={name=, key=}}}
function M.env_from_secret(name, secret, key, optional)
  return key_ref(name, "secretKeyRef", secret, key, optional)
end


--- A container env var read from a ConfigMap key.
-- @param name string
-- @param config_map string the ConfigMap's name
-- @param key string
-- @param optional boolean|nil
-- @return table {name=, valueFrom={configMapKeyRef={name=, key=}}}
function M.env_from_config_map(name, config_map, key, optional)
  return key_ref(name, "configMapKeyRef", config_map, key, optional)
end


--- A container env var from the downward API.
-- @param name string
-- @param field_path string e.g. "metadata.namespace"
-- @return table {name=, valueFrom={fieldRef={fieldPath=}}}
function M.env_from_field(name, field_path)
  return codec.object({
    name = name,
    valueFrom = codec.object({
      fieldRef = codec.object({ fieldPath = field_path }),
    }),
  })
end


--- A container port.
-- @param name string
-- @param port number
-- @param protocol string|nil default "TCP"
-- @return table {name=, containerPort=, protocol=}
function M.container_port(name, port, protocol)
  return codec.object({
    name = name,
    containerPort = port,
    protocol = protocol or "TCP",
  })
end


--- A Service port.
-- @param name string
-- @param port number
-- @param target_port number|string|nil default: port
-- @param protocol string|nil default "TCP"
-- @return table {name=, port=, targetPort=, protocol=}
function M.service_port(name, port, target_port, protocol)
  if target_port == nil then
    target_port = port
  end
  return codec.object({
    name = name,
    port = port,
    targetPort = target_port,
    protocol = protocol or "TCP",
  })
end


--- A container volume mount.
-- @param name string the volume's name
-- @param mount_path string
-- @param opts table|nil {read_only=, sub_path=}
-- @return table
function M.volume_mount(name, mount_path, opts)
  opts = opts or {}
  local vm = codec.object({ name = name, mountPath = mount_path })
  if opts.read_only ~= nil then
    vm.readOnly = opts.read_only
  end
  if opts.sub_path ~= nil then
    vm.subPath = opts.sub_path
  end
  return vm
end


local function source_with_items(source, opts)
  if opts.items ~= nil then
    local items = codec.array({})
    for _, it in ipairs(opts.items) do
      items[#items + 1] = codec.object({ key = it.key, path = it.path })
    end
    source.items = items
  end
  if opts.default_mode ~= nil then
    source.defaultMode = opts.default_mode
  end
  return source
end


--- A volume backed by a ConfigMap.
-- @param name string the volume's name
-- @param config_map string the ConfigMap's name
-- @param opts table|nil {items={{key=, path=}...}, default_mode=}
-- @return table {name=, configMap={name=, ...}}
function M.volume_config_map(name, config_map, opts)
  local source = source_with_items(codec.object({ name = config_map }),
    opts or {})
  return codec.object({ name = name, configMap = source })
end


--- A volume backed by a Secret.
-- @param name string the volume's name
-- @param secret string the Secret's name
-- @param opts table|nil {items=, default_mode=}
-- @return table {name=, secret={secretName=, ...}}
function M.volume_secret(name, secret, opts)
  local source = source_with_items(codec.object({ secretName = secret }),
    opts or {})
  return codec.object({ name = name, secret = source })
end


--- A volume backed by a PersistentVolumeClaim.
-- @param name string the volume's name
-- @param claim string the claim's name
-- @param read_only boolean|nil
-- @return table {name=, persistentVolumeClaim={claimName=}}
function M.volume_pvc(name, claim, read_only)
  local source = codec.object({ claimName = claim })
  if read_only ~= nil then
    source.readOnly = read_only
  end
  return codec.object({ name = name, persistentVolumeClaim = source })
end


--- An emptyDir volume.
-- @param name string
-- @param opts table|nil {medium=, size_limit=}
-- @return table {name=, emptyDir={...}}
function M.volume_empty_dir(name, opts)
  opts = opts or {}
  local source = codec.object({})
  if opts.medium ~= nil then
    source.medium = opts.medium
  end
  if opts.size_limit ~= nil then
    source.sizeLimit = opts.size_limit
  end
  return codec.object({ name = name, emptyDir = source })
end


return M
