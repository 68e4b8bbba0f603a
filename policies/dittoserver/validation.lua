-- dittoserver.validation: the default policy's rules beyond what the CRD
-- schema expresses. The upstream webhook's rules come first with their
-- texts, then the rules the server itself would enforce at start. Every
-- message starts with the field it is about; all problems are reported,
-- not only the first. A backend's config keys are named as Kubernetes
-- names map keys (config[bucket]).
--
-- Some rules are also x-kubernetes-validations (CEL) rules of
-- crd/dittoserver.yaml, so a 1.25+ apiserver refuses the DittoServer at
-- `kubectl apply` with the same field and text: nfsPort 9090, a zero
-- storage size, dumpRestricted without dumpAllowedClients, inline
-- credentials, credentialsSecretRef off s3, an s3 backend without bucket,
-- force_path_style, a relative config[path]. Their texts are the CRD's
-- `message`s (spec/cel_check.sh fails when the two differ); they stay here
-- for older clusters and for --script-test.
--   check(name, spec, config_of) -> errors, warnings (codec arrays)
--   check_name(name, errs)       -> appends the metadata.name rules
-- Uses: codec, dittoserver_schema, dittoserver.common, k8s.quantity,
-- k8s.tablex.
local codec = require("codec")
local schema = require("dittoserver_schema")
local common = require("dittoserver.common")
local quantity = require("k8s.quantity")
local tablex = require("k8s.tablex")

local type = type
local ipairs = ipairs
local tostring = tostring
local format = string.format
local concat = table.concat
local array = codec.array
local is_str = common.is_str
local is_int = common.is_int
local list = common.list
local share_label = common.share_label
local index_by_name = common.index_by_name
local sorted_keys = tablex.sorted_keys

local M = {}

local S3_KEYS = {
  bucket = true, region = true, endpoint = true, key_prefix = true,
  force_path_style = true,
}
local PATH_KEYS = { path = true }
local CREDENTIAL_KEYS = { "access_key_id", "secret_access_key" }


-- Upstream webhook rules (reference §1.11), each message prefixed with the
-- field it is about, the upstream text kept intact after the prefix.
local function check_share_refs(config, backends, errs, warns)
  local caches = index_by_name(config.caches)
  for i, share in ipairs(list(config.shares)) do
    local at = format("spec.config.shares[%d]", i - 1)
    local who = share_label(i, share)
    local meta, content = share.metadataStore, share.contentStore
    if meta == nil or meta == "" then
      errs[#errs + 1] = format("%s.metadataStore: %s: metadataStore cannot "
        .. "be empty", at, who)
    elseif not backends[meta] then
      errs[#errs + 1] = format("%s.metadataStore: %s: metadataStore '%s' "
        .. "does not exist in backends list", at, who, meta)
    end
    if content == nil or content == "" then
      errs[#errs + 1] = format("%s.contentStore: %s: contentStore cannot "
        .. "be empty", at, who)
    elseif not backends[content] then
      errs[#errs + 1] = format("%s.contentStore: %s: contentStore '%s' "
        .. "does not exist in backends list", at, who, content)
    end
    if meta ~= nil and meta ~= "" and meta == content then
      warns[#warns + 1] = format("%s: %s: metadataStore and contentStore "
        .. "reference the same backend '%s' - this may not be optimal", at,
        who, meta)
    end
    if share.cache ~= nil and share.cache ~= "" and not caches[share.cache]
    then
      errs[#errs + 1] = format("%s.cache: %s: cache '%s' does not exist in "
        .. "caches list", at, who, share.cache)
    end
  end
end

-- Backend type against the role a share gives it. Upstream only warned
-- about s3/local metadata; the server cannot start with either mistake, so
-- both are errors here.
local function check_share_roles(config, backends, errs)
  for i, share in ipairs(list(config.shares)) do
    local at = format("spec.config.shares[%d]", i - 1)
    local meta = backends[share.metadataStore or ""]
    if meta and meta.value.type ~= "badger" then
      errs[#errs + 1] = format("%s.metadataStore: %s: backend '%s' has "
        .. "type '%s', but metadata needs a 'badger' backend (the server "
        .. "only keeps metadata in badger stores and would fail to start)",
        at, share_label(i, share), share.metadataStore,
        tostring(meta.value.type))
    end
    local content = backends[share.contentStore or ""]
    if content and content.value.type == "badger" then
      errs[#errs + 1] = format("%s.contentStore: %s: backend '%s' has "
        .. "type 'badger', but content needs a 'local' or 's3' backend "
        .. "(the server would fail to start)", at, share_label(i, share),
        share.contentStore)
    end
  end
end

local function check_duplicates(entries, field, what, at, errs)
  local first = {}
  for i, e in ipairs(list(entries)) do
    local v = type(e) == "table" and e[field] or nil
    if is_str(v) then
      if first[v] then
        errs[#errs + 1] = format("%s[%d].%s: duplicate %s '%s' at indices "
          .. "%d and %d", at, i - 1, field, what, v, first[v] - 1, i - 1)
      else
        first[v] = i
      end
    end
  end
end

local function check_shares(config, errs)
  for i, share in ipairs(list(config.shares)) do
    local at = format("spec.config.shares[%d]", i - 1)
    if is_str(share.exportPath) and share.exportPath:sub(1, 1) ~= "/" then
      errs[#errs + 1] = at .. ".exportPath: must start with \"/\""
    end
    if share.dumpRestricted == true
        and #list(share.dumpAllowedClients) == 0 then
      errs[#errs + 1] = at .. ".dumpAllowedClients: must not be empty "
        .. "when dumpRestricted is true (nobody could call DUMP)"
    end
  end
end

local function check_backend(spec, b, at, errs, warns)
  local cfg = type(b.config) == "table" and b.config or {}
  for _, key in ipairs(CREDENTIAL_KEYS) do
    if cfg[key] ~= nil then
      errs[#errs + 1] = format("%s.config[%s]: credentials must not be "
        .. "written inline (they would land in the ConfigMap); put them in "
        .. "a Secret and reference it with the backend's "
        .. "credentialsSecretRef", at, key)
    end
  end
  if b.credentialsSecretRef ~= nil and b.type ~= "s3" then
    errs[#errs + 1] = format("%s.credentialsSecretRef: only s3 backends "
      .. "take credentials", at)
  end
  local known = b.type == "s3" and S3_KEYS or PATH_KEYS
  for _, key in ipairs(sorted_keys(cfg)) do
    if not known[key] and key ~= "access_key_id"
        and key ~= "secret_access_key" then
      local names = sorted_keys(known)
      warns[#warns + 1] = format("%s.config[%s]: not a setting of a %s "
        .. "backend, ignored (known: %s)", at, key, tostring(b.type),
        concat(names, ", "))
    end
  end
  if b.type == "s3" then
    if cfg.bucket == nil or cfg.bucket == "" then
      errs[#errs + 1] = at .. ".config[bucket]: required for an s3 backend"
    end
    local fps = cfg.force_path_style
    if fps ~= nil and fps ~= "true" and fps ~= "false" then
      errs[#errs + 1] = at .. ".config[force_path_style]: must be \"true\" "
        .. "or \"false\""
    end
    return
  end
  local path = cfg.path
  if path == nil then
    return
  end
  if path:sub(1, 1) ~= "/" then
    errs[#errs + 1] = at .. ".config[path]: must be an absolute path "
      .. "(starting with \"/\")"
    return
  end
  local on_volume = common.is_under(path, common.METADATA_DIR)
    or (spec.storage.contentSize ~= nil
      and common.is_under(path, common.CONTENT_DIR))
  if not on_volume then
    warns[#warns + 1] = format("%s.config[path]: %q is not on a persistent "
      .. "volume (%s%s); its data is lost when the pod restarts", at, path,
      common.METADATA_DIR, spec.storage.contentSize
        and ", " .. common.CONTENT_DIR
        or ", or " .. common.CONTENT_DIR .. " with spec.storage.contentSize")
  end
end

local function check_backends(spec, config, errs, warns)
  local used = {}
  for _, share in ipairs(list(config.shares)) do
    used[share.metadataStore or ""] = true
    used[share.contentStore or ""] = true
  end
  for i, b in ipairs(list(config.backends)) do
    local at = format("spec.config.backends[%d]", i - 1)
    check_backend(spec, b, at, errs, warns)
    if is_str(b.name) and not used[b.name] then
      warns[#warns + 1] = format("%s: backend '%s' is not used by any share",
        at, b.name)
    end
  end
end

local function check_caches(config, errs, warns)
  local used = {}
  for _, share in ipairs(list(config.shares)) do
    used[share.cache or ""] = true
  end
  for i, c in ipairs(list(config.caches)) do
    local at = format("spec.config.caches[%d]", i - 1)
    local sizes = {
      { "memory.maxSize", type(c.memory) == "table" and c.memory.maxSize },
      { "prefetch.maxFileSize",
        type(c.prefetch) == "table" and c.prefetch.maxFileSize },
      { "prefetch.chunkSize",
        type(c.prefetch) == "table" and c.prefetch.chunkSize },
    }
    for _, s in ipairs(sizes) do
      if is_str(s[2]) then
        local _, err = common.size_bytes(s[2])
        if err then
          errs[#errs + 1] = format("%s.%s: %s", at, s[1], err)
        end
      end
    end
    local flusher = type(c.flusher) == "table" and c.flusher or {}
    for _, key in ipairs({ "interval", "flushTimeout" }) do
      if flusher[key] ~= nil and not common.is_duration(flusher[key]) then
        errs[#errs + 1] = format("%s.flusher.%s: %q is not a duration "
          .. "(for example 10s or 1m30s)", at, key, tostring(flusher[key]))
      end
    end
    if is_str(c.name) and not used[c.name] then
      warns[#warns + 1] = format("%s: cache '%s' is not used by any share",
        at, c.name)
    end
  end
end

local function check_storage(spec, errs)
  for _, key in ipairs({ "metadataSize", "contentSize" }) do
    local s = spec.storage[key]
    if is_str(s) then
      local n, err = common.size_bytes(s)
      if err then
        errs[#errs + 1] = format("spec.storage.%s: %s", key, err)
      elseif n == 0 then
        errs[#errs + 1] = format("spec.storage.%s: must be greater than "
          .. "zero", key)
      end
    end
  end
end

-- resources.limits/requests: quantities as Kubernetes parses them (the
-- CRD's regex is not a Lua pattern, so the schema check skips it).
local function check_resources(spec, errs)
  local res = type(spec.resources) == "table" and spec.resources or {}
  for _, kind in ipairs({ "limits", "requests" }) do
    local values = type(res[kind]) == "table" and res[kind] or {}
    for _, key in ipairs(sorted_keys(values)) do
      local v = values[key]
      local ok, err = quantity.parse(v)
      if not ok then
        errs[#errs + 1] = format("spec.resources.%s.%s: %s", kind, key,
          tostring(err))
      end
    end
  end
end

-- replicas > 1 is safe only when every store of every share is shared
-- between pods. badger metadata and local content live on each pod's own
-- volume, and badger is the only metadata type, so today this refuses every
-- replicas > 1 with a message that says why.
local function check_replicas(spec, config, is_default, errs)
  if not is_int(spec.replicas) or spec.replicas <= 1 then
    return
  end
  local backends = index_by_name(config.backends)
  local private = {}
  for i, share in ipairs(list(config.shares)) do
    local parts = {}
    for _, role in ipairs({ "metadataStore", "contentStore" }) do
      local b = backends[share[role] or ""]
      if b and b.value.type ~= "s3" then
        parts[#parts + 1] = format("%s in %s backend '%s'",
          role == "metadataStore" and "metadata" or "content",
          tostring(b.value.type), b.value.name)
      end
    end
    if #parts > 0 then
      private[#private + 1] = format("%s keeps %s", is_default
        and "the default share /export" or share_label(i, share),
        concat(parts, " and "))
    end
  end
  if #private == 0 then
    return
  end
  errs[#errs + 1] = format("spec.replicas: must be 0 or 1, got %d: %s on "
    .. "each pod's own volume, so every replica would serve its own "
    .. "diverging copy of the files (only s3 content is shared between "
    .. "pods, and no shared metadata store type exists yet)",
    spec.replicas, concat(private, "; "))
end

--- Appends the rules of metadata.name to errs: a DNS-1035 label (it names
-- a Service) of at most common.MAX_NAME characters.
-- @param name any the DittoServer's metadata.name (ignored unless a string)
-- @param errs table list the messages are appended to
function M.check_name(name, errs)
  if not is_str(name) then
    return
  end
  -- a DNS-1035 label: Service names are
  if not (name:match("^[a-z][-a-z0-9]*$") and name:match("[a-z0-9]$")) then
    errs[#errs + 1] = "metadata.name: must start with a lowercase letter "
      .. "and contain only lowercase letters, digits and '-' (it names a "
      .. "Service)"
  end
  if #name > common.MAX_NAME then
    errs[#errs + 1] = format("metadata.name: must be at most %d "
      .. "characters, got %d (the pods carry \"<name>-<revision hash>\" in "
      .. "a label)", common.MAX_NAME, #name)
  end
end

local function check_ports(spec, errs, warns)
  local metrics = common.METRICS_PORT
  if spec.nfsPort == metrics then
    errs[#errs + 1] = format("spec.nfsPort: %d is the metrics port; "
      .. "choose another port", metrics)
  elseif is_int(spec.nfsPort) and spec.nfsPort < 1024
      and not common.has_capability(spec.securityContext,
        "NET_BIND_SERVICE") then
    warns[#warns + 1] = format("spec.nfsPort: %d is a privileged port; the "
      .. "non-root server needs NET_BIND_SERVICE in "
      .. "spec.securityContext.capabilities.add to bind it", spec.nfsPort)
  end
end


--- Every rule of the default policy on a DittoServer's name and defaulted
-- spec: the CRD schema (types, required keys, enums, limits; spec.policy is
-- left to the policy's PARAMETERS), then the semantic rules.
-- @param name any metadata.name
-- @param spec table|nil the defaulted spec
-- @param config_of function(spec) -> the effective spec.config, and true
-- when it is the default one
-- @return table errors, table warnings (codec arrays of "field: message")
function M.check(name, spec, config_of)
  local errs, warns = array({}), array({})
  M.check_name(name, errs)
  if spec == nil then
    errs[#errs + 1] = "spec: required"
    return errs, warns
  end
  local serrs, swarns = schema.check(spec, schema.node("spec"), "spec")
  tablex.extend(warns, swarns)
  if #serrs > 0 then
    -- the semantic rules below assume well-typed values
    tablex.extend(errs, serrs)
    return errs, warns
  end
  check_storage(spec, errs)
  check_resources(spec, errs)
  check_ports(spec, errs, warns)
  local config, is_default = config_of(spec)
  if not is_default then
    local backends = index_by_name(config.backends)
    check_share_refs(config, backends, errs, warns)
    check_share_roles(config, backends, errs)
    check_duplicates(config.backends, "name", "backend name",
      "spec.config.backends", errs)
    check_duplicates(config.caches, "name", "cache name",
      "spec.config.caches", errs)
    check_duplicates(config.shares, "name", "share name",
      "spec.config.shares", errs)
    check_duplicates(config.shares, "exportPath", "export path",
      "spec.config.shares", errs)
    check_shares(config, errs)
    check_backends(spec, config, errs, warns)
    check_caches(config, errs, warns)
  end
  check_replicas(spec, config, is_default, errs)
  return errs, warns
end


return M
