-- dittoserver: the default policy for DittoServer (dittofs.dittofs.com).
--
-- A pure function of its inputs (no clock, no I/O): the same DittoServer
-- always yields byte-identical objects and status.
--   validate(ds)              -> errors, warnings (lists of "field: message")
--   render(ds, ctx)           -> ConfigMap <name>-config, Service <name>,
--                                Service <name>-headless, StatefulSet <name>
--   status(ds, observed, ctx) -> phase, availableReplicas, nfsEndpoint,
--                                conditions Ready and Reconciled
-- The fields it reads, with types and defaults, are declared in
-- dittoserver_schema.lua, which mirrors crd/dittoserver.yaml.
-- Uses: codec (YAML encoding, JSON markers), k8s.quantity, k8s.object,
-- k8s.conditions, k8s.tablex.
local codec = require("codec")
local schema = require("dittoserver_schema")
local quantity = require("k8s.quantity")
local object = require("k8s.object")
local conditions = require("k8s.conditions")
local tablex = require("k8s.tablex")

-- Inside the sandbox a global read misses the empty _ENV and is found
-- through its __index (the library table): the hot ones are locals.
local type = type
local ipairs = ipairs
local pairs = pairs
local next = next
local tostring = tostring
local setmetatable = setmetatable
local math_type = math.type
local format = string.format
local concat = table.concat
local array = codec.array
local obj = codec.object

local M = {}


--- Port of the server's Prometheus endpoint (server.metrics.port).
M.METRICS_PORT = 9090
--- Pod-template annotation carrying the hash of config.yaml.
M.CONFIG_HASH_ANNOTATION = "dittofs.dittofs.com/config-hash"
--- Where the ConfigMap is mounted and the file the server reads.
M.CONFIG_DIR = "/config"
M.CONFIG_FILE = "/config/config.yaml"
--- Mount points of the two persistent volumes.
M.METADATA_DIR = "/data/metadata"
M.CONTENT_DIR = "/data/content"
--- Local content on the metadata volume when there is no content volume.
M.SHARED_CONTENT_DIR = "/data/metadata/content"
--- UID/GID of the server image's non-root user.
M.RUN_AS = 65532
--- Server shutdown budget (server.shutdown_timeout) plus a margin.
M.TERMINATION_GRACE_SECONDS = 40
--- Longest DittoServer name: pods carry "<name>-<revision hash>" (up to
-- 11 more characters) in a label value limited to 63.
M.MAX_NAME = 52

local APP = "dittofs-server"
local S3_KEYS = {
  bucket = true, region = true, endpoint = true, key_prefix = true,
  force_path_style = true,
}
local PATH_KEYS = { path = true }
local CREDENTIAL_KEYS = { "access_key_id", "secret_access_key" }
local DEFAULT_REGION = "us-east-1"


-- ---------------------------------------------------------------------------
-- Small helpers

local function is_str(v)
  return type(v) == "string"
end

local function is_int(v)
  return math_type(v) == "integer"
end

local function list(v)
  if type(v) == "table" then
    return v
  end
  return {}
end

local sorted_keys = tablex.sorted_keys

-- Copy of a list of strings as a codec array ([] when absent).
local function str_array(v)
  local out = array({})
  for i, s in ipairs(list(v)) do
    out[i] = s
  end
  return out
end

local function share_label(i, share)
  local name = type(share) == "table" and share.name or nil
  return format("share[%d] (%s)", i - 1, tostring(name or ""))
end

-- FNV-1a, 64 bit, over the bytes of s: 16 lowercase hex digits (in C:
-- codec.fnv1a64). Not cryptographic; it only has to change when the
-- config does.
local fnv1a64 = codec.fnv1a64

M.fnv1a64 = fnv1a64


-- Size in bytes of a quantity string: integer | nil, error text.
-- "" and "0" are 0 (upstream: unlimited).
local function size_bytes(s)
  if s == "" or s == "0" then
    return 0
  end
  local q, err = quantity.parse(s)
  if not q then
    return nil, err
  end
  if q.sign < 0 then
    return nil, format("%q must not be negative", s)
  end
  if q.scale < 0 then
    return nil, format("%q is not a whole number of bytes", s)
  end
  return quantity.to_bytes(q)
end

local DURATION_UNITS = { ns = true, us = true, ms = true, s = true,
  m = true, h = true }

-- A Go duration as the CRD pattern accepts it: 10s, 1m30s, 1.5h.
local function is_duration(s)
  if not is_str(s) or s == "" then
    return false
  end
  local pos = 1
  while pos <= #s do
    local num, unit, nxt = s:match("^(%d+%.?%d*)(%a+)()", pos)
    if not num or num:sub(-1) == "." or not DURATION_UNITS[unit] then
      return false
    end
    pos = nxt
  end
  return true
end

-- Where local content goes by default: the content volume, or the
-- metadata volume when there is none.
local function local_content_dir(spec)
  local storage = type(spec.storage) == "table" and spec.storage or {}
  return storage.contentSize and M.CONTENT_DIR or M.SHARED_CONTENT_DIR
end

-- True when path is dir or below it.
local function is_under(path, dir)
  return path == dir or path:sub(1, #dir + 1) == dir .. "/"
end


-- ---------------------------------------------------------------------------
-- The spec as the policy sees it

-- Memoization within one evaluation.
--
-- The engine (core/policy.c) calls validate(ds), render(ds, ctx) and
-- status(ds, observed, ctx) in that order, each on its own decoding of the
-- same DittoServer JSON, in a state where this module's main chunk ran
-- at the start of the evaluation. So the three calls get equal specs in
-- distinct tables, and what depends only on the spec (the defaulted copy,
-- the validation result, config.yaml and its hash) is computed once and
-- found again by content: the key is the spec's JSON (codec.json_encode
-- sorts keys). JSON writes an integral float as an integer, so a spec
-- holding any float is not memoized (floats are invalid anyway). Outside
-- the engine (busted) the module lives across DittoServers; entries stay
-- correct there because each is a pure function of its key and its users
-- never mutate it, and the table is bounded.
local MEMO_MAX = 8
local memo = {}
local memo_size = 0
-- validation key of a DittoServer whose name is not a string
local NO_NAME = {}
-- defaulted spec -> its memo entry (weak: entries are dropped with memo)
local entry_of_spec = setmetatable({}, { __mode = "k" })

local function has_float(t)
  for _, v in pairs(t) do
    local tv = type(v)
    if tv == "table" then
      if has_float(v) then
        return true
      end
    elseif tv == "number" and math_type(v) == "float" then
      return true
    end
  end
  return false
end

-- The memo entry of a spec: { spec = defaulted copy (never mutated),
-- valid = { [name] = { errs, warns } }, text =, hash =, default_config = }
-- (the last four filled on first use). A spec that is not a table gets a fresh entry
-- holding it as is.
local function spec_entry(spec)
  if type(spec) ~= "table" then
    return { spec = spec, valid = {} }
  end
  local key = not has_float(spec) and codec.json_encode(spec) or nil
  local entry = key and memo[key]
  if entry then
    return entry
  end
  entry = {
    spec = schema.defaulted_copy(spec, schema.SPEC),
    valid = {},
  }
  entry_of_spec[entry.spec] = entry
  if key then
    if memo_size >= MEMO_MAX then
      memo, memo_size = {}, 0
    end
    memo[key] = entry
    memo_size = memo_size + 1
  end
  return entry
end

-- The DittoServer's name, namespace, a defaulted copy of its spec (shared:
-- read only) and its memo entry.
local function normalize(ds, ctx)
  ctx = ctx or {}
  local meta = type(ds) == "table" and type(ds.metadata) == "table"
    and ds.metadata or {}
  local entry = spec_entry(type(ds) == "table" and ds.spec or nil)
  return meta.name or ctx.name, meta.namespace or ctx.namespace, entry.spec,
    entry
end

--- The spec.config the server gets when the DittoServer has none: one share
-- /export, badger metadata on the metadata volume, filesystem content on the
-- content volume (or on the metadata volume when there is none).
-- @param spec table defaulted spec
-- @return table a spec.config (defaulted)
function M.default_config(spec)
  local content_path = local_content_dir(spec)
  local config = {
    shares = array({ obj({
      name = "default",
      exportPath = "/export",
      metadataStore = "badger-metadata",
      contentStore = "local-content",
    }) }),
    backends = array({
      obj({ name = "badger-metadata", type = "badger",
        config = obj({ path = M.METADATA_DIR }) }),
      obj({ name = "local-content", type = "local",
        config = obj({ path = content_path }) }),
    }),
  }
  return schema.apply_defaults(obj(config),
    schema.SPEC.properties.config)
end

local function effective_config(spec)
  if spec.config ~= nil then
    return spec.config, false
  end
  -- a memoized spec never changes, nor does its default config
  local entry = entry_of_spec[spec]
  if entry == nil then
    return M.default_config(spec), true
  end
  if entry.default_config == nil then
    entry.default_config = M.default_config(spec)
  end
  return entry.default_config, true
end

-- name -> {index=, value=} of the first entry with each name.
local function index_by_name(entries)
  local by = {}
  for i, e in ipairs(list(entries)) do
    if type(e) == "table" and is_str(e.name) and by[e.name] == nil then
      by[e.name] = { index = i, value = e }
    end
  end
  return by
end


-- ---------------------------------------------------------------------------
-- validate

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

local function has_capability(sc, cap)
  local caps = type(sc) == "table" and type(sc.capabilities) == "table"
    and sc.capabilities.add or nil
  for _, c in ipairs(list(caps)) do
    if c == cap or c == "CAP_" .. cap then
      return true
    end
  end
  return false
end

local function check_backend(spec, b, at, errs, warns)
  local cfg = type(b.config) == "table" and b.config or {}
  for _, key in ipairs(CREDENTIAL_KEYS) do
    if cfg[key] ~= nil then
      errs[#errs + 1] = format("%s.config.%s: credentials must not be "
        .. "written inline (they would land in the ConfigMap); put them in "
        .. "a Secret and reference it with %s.credentialsSecretRef", at,
        key, at)
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
      warns[#warns + 1] = format("%s.config.%s: not a setting of a %s "
        .. "backend, ignored (known: %s)", at, key, tostring(b.type),
        concat(names, ", "))
    end
  end
  if b.type == "s3" then
    if cfg.bucket == nil or cfg.bucket == "" then
      errs[#errs + 1] = at .. ".config.bucket: required for an s3 backend"
    end
    local fps = cfg.force_path_style
    if fps ~= nil and fps ~= "true" and fps ~= "false" then
      errs[#errs + 1] = format("%s.config.force_path_style: must be "
        .. "\"true\" or \"false\", got %q", at, tostring(fps))
    end
    return
  end
  local path = cfg.path
  if path == nil then
    return
  end
  if path:sub(1, 1) ~= "/" then
    errs[#errs + 1] = format("%s.config.path: must be an absolute path, "
      .. "got %q", at, path)
    return
  end
  local on_volume = is_under(path, M.METADATA_DIR)
    or (spec.storage.contentSize ~= nil and is_under(path, M.CONTENT_DIR))
  if not on_volume then
    warns[#warns + 1] = format("%s.config.path: %q is not on a persistent "
      .. "volume (%s%s); its data is lost when the pod restarts", at, path,
      M.METADATA_DIR, spec.storage.contentSize and ", " .. M.CONTENT_DIR
        or ", or " .. M.CONTENT_DIR .. " with spec.storage.contentSize")
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
        local _, err = size_bytes(s[2])
        if err then
          errs[#errs + 1] = format("%s.%s: %s", at, s[1], err)
        end
      end
    end
    local flusher = type(c.flusher) == "table" and c.flusher or {}
    for _, key in ipairs({ "interval", "flushTimeout" }) do
      if flusher[key] ~= nil and not is_duration(flusher[key]) then
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
      local n, err = size_bytes(s)
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

local function check_name(name, errs)
  if not is_str(name) then
    return
  end
  -- a DNS-1035 label: Service names are
  if not (name:match("^[a-z][-a-z0-9]*$") and name:match("[a-z0-9]$")) then
    errs[#errs + 1] = "metadata.name: must start with a lowercase letter "
      .. "and contain only lowercase letters, digits and '-' (it names a "
      .. "Service)"
  end
  if #name > M.MAX_NAME then
    errs[#errs + 1] = format("metadata.name: must be at most %d "
      .. "characters, got %d (the pods carry \"<name>-<revision hash>\" in "
      .. "a label)", M.MAX_NAME, #name)
  end
end

local function check_ports(spec, errs, warns)
  if spec.nfsPort == M.METRICS_PORT then
    errs[#errs + 1] = format("spec.nfsPort: %d is the metrics port; "
      .. "choose another port", M.METRICS_PORT)
  elseif is_int(spec.nfsPort) and spec.nfsPort < 1024
      and not has_capability(spec.securityContext, "NET_BIND_SERVICE") then
    warns[#warns + 1] = format("spec.nfsPort: %d is a privileged port; the "
      .. "non-root server needs NET_BIND_SERVICE in "
      .. "spec.securityContext.capabilities.add to bind it", spec.nfsPort)
  end
end

local validate_spec

-- validate_spec() of a memo entry, once per name.
local function validation(name, entry)
  local key = is_str(name) and name or NO_NAME
  local v = entry.valid[key]
  if v == nil then
    v = { validate_spec(name, entry.spec) }
    entry.valid[key] = v
  end
  return v[1], v[2]
end

--- Checks a DittoServer beyond what the CRD schema can express.
-- The upstream webhook's rules come first with their texts, then the
-- rules the server itself would enforce at start. Every message starts with
-- the field it is about. All problems are reported, not only the first.
-- @param ds table the DittoServer (CRD defaults applied or not)
-- @return table errors (list of strings), table warnings (list of strings)
function M.validate(ds)
  if not schema.is_object(ds) then
    return array({ "DittoServer: must be an object" }), array({})
  end
  local name, _, _, entry = normalize(ds)
  local errs, warns = validation(name, entry)
  -- copies: the memoized lists stay as they are whatever the caller does
  return array(table.move(errs, 1, #errs, 1, {})),
    array(table.move(warns, 1, #warns, 1, {}))
end

-- validate() on an already normalized name and spec.
validate_spec = function(name, spec)
  local errs, warns = array({}), array({})
  check_name(name, errs)
  if spec == nil then
    errs[#errs + 1] = "spec: required"
    return errs, warns
  end
  local serrs, swarns = schema.check(spec, schema.SPEC, "spec")
  tablex.extend(warns, swarns)
  if #serrs > 0 then
    -- the semantic rules below assume well-typed values
    tablex.extend(errs, serrs)
    return errs, warns
  end
  check_storage(spec, errs)
  check_resources(spec, errs)
  check_ports(spec, errs, warns)
  local config, is_default = effective_config(spec)
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


-- ---------------------------------------------------------------------------
-- render: the DittoFS configuration (reference §1.7, metrics enabled)

-- Upstream: cache sizes become integer bytes; "" and "0" are 0.
local function bytes_or_string(s)
  local n = size_bytes(s)
  if n == nil then
    return s
  end
  return n
end

-- content_dir: the path of local content without an explicit one (where a
-- volume is).
local function render_backend(b, stores_meta, stores_content, content_dir)
  local cfg = type(b.config) == "table" and b.config or {}
  if b.type == "badger" then
    stores_meta[b.name] = obj({
      type = "badger",
      badger = obj({ db_path = cfg.path or M.METADATA_DIR }),
    })
  elseif b.type == "local" then
    stores_content[b.name] = obj({
      type = "filesystem",
      filesystem = obj({ path = cfg.path or content_dir }),
    })
  elseif b.type == "s3" then
    local s3 = obj({ region = DEFAULT_REGION })
    for _, key in ipairs({ "bucket", "region", "endpoint", "key_prefix" }) do
      if cfg[key] ~= nil and cfg[key] ~= "" then
        s3[key] = cfg[key]
      end
    end
    if cfg.force_path_style == "true" then
      s3.force_path_style = true
    end
    if b.credentialsSecretRef ~= nil then
      -- Empty placeholders: viper binds DITTOFS_* environment overrides
      -- only for keys present in the file. The values come from the
      -- Secret through the pod's environment, never from here.
      s3.access_key_id = ""
      s3.secret_access_key = ""
    end
    stores_content[b.name] = obj({ type = "s3", s3 = s3 })
  end
end

local function render_cache(c)
  local out = obj({ type = c.type })
  if type(c.memory) == "table" and c.memory.maxSize ~= nil
      and c.memory.maxSize ~= "" then
    out.memory = obj({ max_size = bytes_or_string(c.memory.maxSize) })
  end
  if type(c.prefetch) == "table" then
    local p = obj({})
    p.enabled = c.prefetch.enabled
    if c.prefetch.maxFileSize ~= nil then
      p.max_file_size = bytes_or_string(c.prefetch.maxFileSize)
    end
    if c.prefetch.chunkSize ~= nil then
      p.chunk_size = bytes_or_string(c.prefetch.chunkSize)
    end
    out.prefetch = p
  end
  if type(c.flusher) == "table" then
    out.flusher = obj({
      sweep_interval = c.flusher.interval,
      flush_timeout = c.flusher.flushTimeout,
      flush_pool_size = c.flusher.workers,
    })
  end
  return out
end

local function render_share(s)
  local methods = str_array(s.allowedAuthMethods)
  if #methods == 0 then
    methods = array({ "anonymous", "unix" })
  end
  local im = type(s.identityMapping) == "table" and s.identityMapping or {}
  local rda = type(s.rootDirectoryAttributes) == "table"
    and s.rootDirectoryAttributes or {}
  local out = obj({
    name = s.exportPath,
    metadata_store = s.metadataStore,
    content_store = s.contentStore,
    read_only = s.readOnly == true,
    allowed_clients = str_array(s.allowedClients),
    denied_clients = str_array(s.deniedClients),
    require_auth = s.requireAuth == true,
    allowed_auth_methods = methods,
    identity_mapping = obj({
      map_all_to_anonymous = im.mapAllToAnonymous == true,
      map_privileged_to_anonymous = im.mapPrivilegedToAnonymous == true,
      anonymous_uid = im.anonymousUID or 65534,
      anonymous_gid = im.anonymousGID or 65534,
    }),
    root_directory_attributes = obj({
      mode = rda.mode or 493,
      uid = rda.uid or 0,
      gid = rda.gid or 0,
    }),
    dump_restricted = s.dumpRestricted == true,
    dump_allowed_clients = str_array(s.dumpAllowedClients),
  })
  if s.cache ~= nil and s.cache ~= "" then
    out.cache = s.cache
  end
  return out
end

--- The DittoFS server configuration for a defaulted spec, as a Lua table
-- ready for codec.yaml_encode (reference §1.7 with server metrics enabled).
-- @param spec table defaulted spec
-- @return table configuration
function M.server_config(spec)
  local config = effective_config(spec)
  local stores_meta, stores_content = obj({}), obj({})
  local content_dir = local_content_dir(spec)
  for _, b in ipairs(list(config.backends)) do
    render_backend(b, stores_meta, stores_content, content_dir)
  end
  local shares = array({})
  for i, s in ipairs(list(config.shares)) do
    shares[i] = render_share(s)
  end
  local out = obj({
    logging = obj({ level = "INFO", format = "text", output = "stdout" }),
    server = obj({
      shutdown_timeout = "30s",
      metrics = obj({ enabled = true, port = M.METRICS_PORT }),
    }),
    metadata = obj({
      global = obj({
        filesystem_capabilities = obj({
          max_read_size = 1048576,
          preferred_read_size = 65536,
          max_write_size = 1048576,
          preferred_write_size = 65536,
          max_file_size = math.maxinteger,
          max_filename_len = 255,
          max_path_len = 4096,
          max_hard_link_count = 32767,
          supports_hard_links = true,
          supports_symlinks = true,
          case_sensitive = true,
          case_preserving = true,
        }),
      }),
      stores = stores_meta,
    }),
    content = obj({ global = obj({}), stores = stores_content }),
    shares = shares,
    adapters = obj({
      nfs = obj({
        enabled = true,
        port = spec.nfsPort,
        max_connections = 0,
        timeouts = obj({
          read = "5m0s", write = "30s", idle = "5m0s", shutdown = "30s",
        }),
        metrics_log_interval = "5m0s",
      }),
    }),
  })
  if #list(config.caches) > 0 then
    local stores = obj({})
    for _, c in ipairs(config.caches) do
      stores[c.name] = render_cache(c)
    end
    out.cache = obj({ stores = stores })
  end
  return out
end


-- ---------------------------------------------------------------------------
-- render: the Kubernetes objects

--- Name of the environment variable DittoFS reads a store setting from:
-- DITTOFS_ + the config key path upper-cased with "." -> "_" (viper).
-- @param backend string backend name, e.g. "s3-content"
-- @param key string "access_key_id" or "secret_access_key"
-- @return string e.g. DITTOFS_CONTENT_STORES_S3-CONTENT_S3_ACCESS_KEY_ID
function M.s3_env_name(backend, key)
  return ("DITTOFS_CONTENT_STORES_" .. backend .. "_S3_" .. key):upper()
end

local function credential_env(config)
  local env = array({})
  for _, b in ipairs(list(config.backends)) do
    local ref = b.credentialsSecretRef
    if b.type == "s3" and type(ref) == "table" then
      env[#env + 1] = object.env_from_secret(
        M.s3_env_name(b.name, "access_key_id"), ref.name, ref.accessKeyIDKey)
      env[#env + 1] = object.env_from_secret(
        M.s3_env_name(b.name, "secret_access_key"), ref.name,
        ref.secretAccessKeyKey)
    end
  end
  return env
end

local function selector_labels(name)
  return obj({
    ["app.kubernetes.io/name"] = APP,
    ["app.kubernetes.io/instance"] = name,
  })
end

local function new_object(api_version, kind, name, labels)
  local o = object.new(api_version, kind, name)
  o.metadata.labels = labels
  return o
end

local function service_ports(spec)
  return array({
    object.service_port("nfs", spec.nfsPort, spec.nfsPort, "TCP"),
    object.service_port("metrics", M.METRICS_PORT, M.METRICS_PORT, "TCP"),
  })
end

local function any_run_as_root(psc, csc)
  return (type(psc) == "table" and psc.runAsUser == 0)
    or (type(csc) == "table" and csc.runAsUser == 0)
end

--- Pod security context: the user's keys win; absent keys get secure
-- defaults (fsGroup 65532 as upstream; run as the image's non-root user;
-- seccomp RuntimeDefault). runAsNonRoot is not defaulted when the user
-- asks for UID 0 anywhere, which it would contradict.
-- @param spec table defaulted spec
-- @return table PodSecurityContext
function M.pod_security_context(spec)
  local user = type(spec.podSecurityContext) == "table"
    and spec.podSecurityContext or {}
  local csc = type(spec.securityContext) == "table" and spec.securityContext
    or {}
  local psc = obj(tablex.deepcopy(user))
  if psc.fsGroup == nil then
    psc.fsGroup = M.RUN_AS
  end
  if psc.runAsUser == nil and csc.runAsUser == nil then
    psc.runAsUser = M.RUN_AS
  end
  if psc.runAsGroup == nil and csc.runAsGroup == nil then
    psc.runAsGroup = M.RUN_AS
  end
  if psc.runAsNonRoot == nil and csc.runAsNonRoot == nil
      and not any_run_as_root(user, csc) then
    psc.runAsNonRoot = true
  end
  if psc.seccompProfile == nil and csc.seccompProfile == nil then
    psc.seccompProfile = obj({ type = "RuntimeDefault" })
  end
  return psc
end

--- Container security context: the user's keys win; absent keys get
-- allowPrivilegeEscalation false and capabilities drop ALL, except where
-- Kubernetes would reject the combination (privileged, CAP_SYS_ADMIN).
-- @param spec table defaulted spec
-- @return table SecurityContext
function M.container_security_context(spec)
  local user = type(spec.securityContext) == "table" and spec.securityContext
    or {}
  local csc = obj(tablex.deepcopy(user))
  local privileged = csc.privileged == true
  local sys_admin = has_capability(csc, "SYS_ADMIN")
  if csc.allowPrivilegeEscalation == nil and not privileged
      and not sys_admin then
    csc.allowPrivilegeEscalation = false
  end
  if not privileged then
    if type(csc.capabilities) ~= "table" then
      csc.capabilities = obj({})
    end
    if csc.capabilities.drop == nil then
      csc.capabilities.drop = array({ "ALL" })
    end
  end
  return csc
end

-- A core/v1 ResourceRequirements from spec.resources. The CRD accepts
-- integer quantities (cpu: 2), but a server-side apply must send every
-- quantity as a string (the apiserver answers a number with a 500), so
-- integers become their decimal text.
local function resource_requirements(resources)
  local out = obj({})
  for _, kind in ipairs({ "limits", "requests" }) do
    local src = resources[kind]
    if type(src) == "table" then
      local dst = obj({})
      for key, value in pairs(src) do
        local int = math.type(value) == "integer" and value
          or (type(value) == "number" and math.tointeger(value))
        dst[key] = int and format("%d", int) or value
      end
      out[kind] = dst
    end
  end
  return out
end

local function volume_claim(name, size, spec, labels)
  local vct = obj({
    metadata = obj({ name = name, labels = labels }),
    spec = obj({
      accessModes = array({ "ReadWriteOnce" }),
      resources = obj({ requests = obj({ storage = size }) }),
    }),
  })
  if spec.storage.storageClassName ~= nil then
    vct.spec.storageClassName = spec.storage.storageClassName
  end
  return vct
end

local function tcp_probe(initial, period, timeout)
  return obj({
    tcpSocket = obj({ port = "nfs" }),
    initialDelaySeconds = initial,
    periodSeconds = period,
    timeoutSeconds = timeout,
    successThreshold = 1,
    failureThreshold = 3,
  })
end

local function render_statefulset(name, spec, config, config_hash)
  local labels = selector_labels(name)
  local mounts = array({
    object.volume_mount("config", M.CONFIG_DIR, { read_only = true }),
    object.volume_mount("metadata", M.METADATA_DIR),
  })
  local claims = array({
    volume_claim("metadata", spec.storage.metadataSize, spec,
      selector_labels(name)),
  })
  if spec.storage.contentSize ~= nil then
    mounts[#mounts + 1] = object.volume_mount("content", M.CONTENT_DIR)
    claims[#claims + 1] = volume_claim("content", spec.storage.contentSize,
      spec, selector_labels(name))
  end
  local container = obj({
    name = "dittofs",
    image = spec.image,
    command = array({ "/app/dittofs" }),
    args = array({ "start", "--config", M.CONFIG_FILE }),
    ports = array({
      object.container_port("nfs", spec.nfsPort, "TCP"),
      object.container_port("metrics", M.METRICS_PORT, "TCP"),
    }),
    volumeMounts = mounts,
    securityContext = M.container_security_context(spec),
    livenessProbe = tcp_probe(30, 10, 5),
    readinessProbe = tcp_probe(10, 5, 3),
    -- The server logs why it stops rather than writing
    -- /dev/termination-log: the tail of its log becomes the termination
    -- message, which status() reports with a crash loop.
    terminationMessagePolicy = "FallbackToLogsOnError",
  })
  local env = credential_env(config)
  if #env > 0 then
    container.env = env
  end
  if type(spec.resources) == "table" and next(spec.resources) ~= nil then
    container.resources = resource_requirements(spec.resources)
  end
  local sts = new_object("apps/v1", "StatefulSet", name, labels)
  sts.spec = obj({
    replicas = spec.replicas,
    serviceName = name .. "-headless",
    selector = object.selector(labels),
    template = obj({
      metadata = obj({
        labels = selector_labels(name),
        annotations = obj({ [M.CONFIG_HASH_ANNOTATION] = config_hash }),
      }),
      spec = obj({
        automountServiceAccountToken = false,
        -- no Service environment variables: DITTOFS_* ones could
        -- override server settings through viper
        enableServiceLinks = false,
        terminationGracePeriodSeconds = M.TERMINATION_GRACE_SECONDS,
        securityContext = M.pod_security_context(spec),
        containers = array({ container }),
        volumes = array({
          object.volume_config_map("config", name .. "-config"),
        }),
      }),
    }),
    volumeClaimTemplates = claims,
  })
  return sts
end

-- The config file and its hash for a memo entry.
local function config_file(entry)
  if entry.text == nil then
    entry.text = codec.yaml_encode(M.server_config(entry.spec))
    entry.hash = fnv1a64(entry.text)
  end
  return entry.text, entry.hash
end

--- Desired children of a DittoServer, in a fixed order: ConfigMap,
-- Service, headless Service, StatefulSet. Expects a spec validate() accepts.
-- @param ds table the DittoServer
-- @param ctx table {name=, namespace=, cluster_domain=, operator_version=}
-- @return table list of objects (no namespace/ownerReferences: the core
-- adds them)
function M.render(ds, ctx)
  local name, _, spec, entry = normalize(ds, ctx)
  local config = effective_config(spec)
  local text, hash = config_file(entry)
  local labels = selector_labels(name)

  local cm = new_object("v1", "ConfigMap", name .. "-config", labels)
  cm.data = obj({ ["config.yaml"] = text })

  local svc = new_object("v1", "Service", name, selector_labels(name))
  local annotations = spec.service.annotations
  if type(annotations) == "table" and next(annotations) ~= nil then
    svc.metadata.annotations = obj(tablex.deepcopy(annotations))
  end
  svc.spec = obj({
    type = spec.service.type,
    selector = selector_labels(name),
    ports = service_ports(spec),
  })

  local headless = new_object("v1", "Service", name .. "-headless",
    selector_labels(name))
  headless.spec = obj({
    clusterIP = "None",
    publishNotReadyAddresses = true,
    selector = selector_labels(name),
    ports = service_ports(spec),
  })

  return array({
    cm, svc, headless, render_statefulset(name, spec, config, hash),
  })
end


-- ---------------------------------------------------------------------------
-- status

-- Longest condition message, in bytes (metav1.Condition allows 32768).
local MAX_MESSAGE = 32000
-- Longest report of one pod problem (a termination message can be 4 KiB).
local MAX_PROBLEM = 4096

-- s cut to at most max bytes plus "...", on a UTF-8 character boundary:
-- half a character would make the status JSON the encoder refuses. The cut
-- itself is the core's (codec.utf8_cut), the one the Reconciled condition
-- and Events get.
local function cut(s, max)
  if #s <= max then
    return s
  end
  return codec.utf8_cut(s, max) .. "..."
end

M.cut_message = cut

local function observed_of(observed, kind, name)
  local by_kind = type(observed) == "table" and observed[kind] or nil
  if type(by_kind) ~= "table" or name == nil then
    return nil
  end
  local o = by_kind[name]
  if type(o) ~= "table" then
    return nil
  end
  return o
end

local function int_or(v, default)
  if is_int(v) then
    return v
  end
  return default
end

-- ---------------------------------------------------------------------------
-- pods

--- What a container waiting for one of these reasons means for the phase:
-- "Failed" when the server cannot come up until someone changes something
-- (the image reference, a missing Secret or key, the configuration it
-- crashes on), "Pending" when it may still come up by itself. A reason not
-- listed here (ContainerCreating, PodInitializing, ...) is ordinary
-- startup and not reported. A custom policy may change this table before
-- it calls status().
M.POD_WAITING_REASONS = {
  InvalidImageName = "Failed",
  ErrImagePull = "Failed",
  ImagePullBackOff = "Failed",
  ErrImageNeverPull = "Failed",
  CreateContainerConfigError = "Failed",
  CrashLoopBackOff = "Failed",
  CreateContainerError = "Pending",
  RunContainerError = "Pending",
}
--- The phase of an unschedulable pod (PodScheduled=False/Unschedulable,
-- e.g. an unbound PersistentVolumeClaim): a provisioner or a node may
-- still appear.
M.UNSCHEDULABLE_PHASE = "Pending"

local CRASH_LOOP = "CrashLoopBackOff"
-- The kubelet's CrashLoopBackOff message carries the current back-off
-- delay ("back-off 40s restarting failed container=..."), which grows on
-- every restart; this stable text stands for it.
local CRASH_LOOP_TEXT = "back-off restarting failed container"

local function trim(s)
  return (s:match("^%s*(.-)%s*$"))
end

-- "reason, exit code N: message" of a terminated state, "" for none.
local function termination(t)
  if type(t) ~= "table" then
    return ""
  end
  local text = is_str(t.reason) and t.reason ~= "" and t.reason
    or "Terminated"
  if is_int(t.exitCode) then
    text = format("%s, exit code %d", text, t.exitCode)
  end
  local msg = is_str(t.message) and trim(cut(t.message, MAX_PROBLEM)) or ""
  if msg ~= "" then
    text = text .. ": " .. msg
  end
  return text
end

-- How the newest finished run of a container ended: the one that just
-- ended, else the one before the current run (kubelet's lastState); ""
-- when none has ended. A server ending with exit code 0 crash-loops too.
local function last_run(cs)
  local now = termination(tablex.get(cs, "state", "terminated"))
  if now ~= "" then
    return now
  end
  return termination(tablex.get(cs, "lastState", "terminated"))
end

local function crash_loop_message(prefix, cs)
  local last = last_run(cs)
  if last == "" then
    return prefix .. CRASH_LOOP_TEXT
  end
  return prefix .. CRASH_LOOP_TEXT .. "; last termination: " .. last
end

-- The problem of one container status, or nil. `prev` is the previous
-- Ready condition's message when its reason was CrashLoopBackOff.
local function container_problem(pod_name, cs, prev)
  if type(cs) ~= "table" then
    return nil
  end
  local cname = is_str(cs.name) and cs.name or "?"
  local prefix = format("pod %s, container %s: ", pod_name, cname)
  local waiting = tablex.get(cs, "state", "waiting")
  local reason = type(waiting) == "table" and waiting.reason or nil
  local phase = is_str(reason) and M.POD_WAITING_REASONS[reason] or nil
  if phase ~= nil and reason == CRASH_LOOP then
    return { reason = reason, phase = phase,
      message = crash_loop_message(prefix, cs) }
  end
  if phase ~= nil then
    local msg = is_str(waiting.message)
      and trim(cut(waiting.message, MAX_PROBLEM)) or ""
    return { reason = reason, phase = phase,
      message = prefix .. (msg ~= "" and msg or reason) }
  end
  -- Between two back-offs a crash-looping container runs (or has just
  -- ended) for a moment. When the status already reports its crash loop
  -- and it is not ready, the loop goes on: reporting "not ready" for that
  -- moment would flip the phase (and write the status, and send Events)
  -- on every restart.
  phase = M.POD_WAITING_REASONS[CRASH_LOOP]
  if prev ~= nil and phase ~= nil and waiting == nil and cs.ready ~= true
      and last_run(cs) ~= ""
      and prev:find(prefix .. CRASH_LOOP_TEXT, 1, true) then
    return { reason = CRASH_LOOP, phase = phase,
      message = crash_loop_message(prefix, cs) }
  end
  return nil
end

-- The message of the Ready condition the status carries now when it says
-- CrashLoopBackOff, else nil.
local function previous_crash_loop(ds)
  local conds = tablex.get(ds, "status", "conditions")
  for _, c in ipairs(type(conds) == "table" and conds or {}) do
    if type(c) == "table" and c.type == "Ready" then
      if c.reason == CRASH_LOOP and is_str(c.message) then
        return c.message
      end
      return nil
    end
  end
  return nil
end

--- What keeps the server's pods from becoming ready, in a fixed order:
-- pods by name; in each, an Unschedulable PodScheduled condition, then
-- the init containers and the containers in the pod's order. Pods being
-- deleted are left out (they are going away). Only reasons of
-- M.POD_WAITING_REASONS and CrashLoopBackOff count; nothing with a
-- timestamp is read, so the same pods give the same text.
-- @param observed table observed.Pod[name] -> pod
-- @param ds table|nil the DittoServer; its status tells a crash loop
-- between two restarts (see container_problem)
-- @return table list of {reason=, phase="Failed"|"Pending", message=}
function M.pod_problems(observed, ds)
  local pods = type(observed) == "table" and observed.Pod or nil
  local out = {}
  if type(pods) ~= "table" then
    return out
  end
  local prev = previous_crash_loop(ds)
  for _, pod_name in ipairs(sorted_keys(pods)) do
    local pod = pods[pod_name]
    if type(pod) == "table" and is_str(pod_name)
        and not is_str(tablex.get(pod, "metadata", "deletionTimestamp")) then
      for _, c in ipairs(list(tablex.get(pod, "status", "conditions"))) do
        if type(c) == "table" and c.type == "PodScheduled"
            and c.status == "False" and c.reason == "Unschedulable" then
          local msg = is_str(c.message)
            and trim(cut(c.message, MAX_PROBLEM)) or ""
          out[#out + 1] = { reason = "Unschedulable",
            phase = M.UNSCHEDULABLE_PHASE,
            message = format("pod %s: %s", pod_name,
              msg ~= "" and msg or "Unschedulable") }
        end
      end
      for _, field in ipairs({ "initContainerStatuses",
                               "containerStatuses" }) do
        for _, cs in ipairs(list(tablex.get(pod, "status", field))) do
          local p = container_problem(pod_name, cs, prev)
          if p ~= nil then
            out[#out + 1] = p
          end
        end
      end
    end
  end
  for _, p in ipairs(out) do
    p.message = cut(p.message, MAX_PROBLEM)
  end
  return out
end

-- Ready=False from the pods' problems: the first one that fails the
-- server (else the first one) gives the reason and leads the message;
-- the others follow in order. Returns the condition and that problem's
-- phase, or nil when there is no problem.
local function pods_condition(problems)
  if #problems == 0 then
    return nil
  end
  local lead = 1
  for i, p in ipairs(problems) do
    if p.phase == "Failed" then
      lead = i
      break
    end
  end
  local msgs = { problems[lead].message }
  for i, p in ipairs(problems) do
    if i ~= lead then
      msgs[#msgs + 1] = p.message
    end
  end
  return conditions.new("Ready", "False", problems[lead].reason,
    cut(concat(msgs, "; "), MAX_MESSAGE)), problems[lead].phase
end


-- Upstream's Ready condition (reference §1.10), texts kept.
local function ready_condition(desired, ready)
  if desired == 0 then
    return conditions.new("Ready", "True", "Stopped",
      "DittoServer is stopped (replicas=0)")
  end
  local msg = format("StatefulSet has %d/%d ready replicas", ready, desired)
  if ready >= desired then
    return conditions.new("Ready", "True", "StatefulSetReady", msg)
  end
  return conditions.new("Ready", "False", "StatefulSetNotReady", msg)
end

-- What spec.storage changed against the live StatefulSet's volume claim
-- templates, which Kubernetes never lets anyone change: a list of
-- human-readable differences (empty when none).
local function storage_changes(spec, sts)
  local live = {}
  local vcts = tablex.get(sts, "spec", "volumeClaimTemplates")
  for _, c in ipairs(type(vcts) == "table" and vcts or {}) do
    local claim = tablex.get(c, "metadata", "name")
    if claim ~= nil then
      live[claim] = c
    end
  end
  local storage = type(spec.storage) == "table" and spec.storage or {}
  local changes = {}
  for _, v in ipairs({ { "metadata", storage.metadataSize },
                       { "content", storage.contentSize } }) do
    local claim, want = v[1], v[2]
    local c = live[claim]
    local have = tablex.get(c, "spec", "resources", "requests", "storage")
    if want ~= nil and c == nil then
      changes[#changes + 1] = format("a %s volume (%s) was added", claim,
        tostring(want))
    elseif want == nil and c ~= nil then
      changes[#changes + 1] = format("the %s volume was removed", claim)
    elseif c ~= nil then
      if type(have) ~= "string" or type(want) ~= "string"
        or not quantity.equal(have, want) then
        changes[#changes + 1] = format("%s volume %s -> %s", claim,
          tostring(have), tostring(want))
      end
      local sc = tablex.get(c, "spec", "storageClassName")
      if sc ~= storage.storageClassName then
        changes[#changes + 1] = format("%s storage class %s -> %s", claim,
          tostring(sc or "(default)"),
          tostring(storage.storageClassName or "(default)"))
      end
    end
  end
  return changes
end

-- Reconciled: are the children there and do they carry the current spec?
local function reconciled_condition(name, spec, entry, errs, observed)
  if #errs > 0 then
    local msg = cut(concat(errs, "; "), MAX_MESSAGE)
    return conditions.new("Reconciled", "False", "InvalidSpec", msg)
  end
  local wanted = {
    { "ConfigMap", name .. "-config" }, { "Service", name },
    { "Service", name .. "-headless" }, { "StatefulSet", name },
  }
  local missing = {}
  for _, w in ipairs(wanted) do
    if observed_of(observed, w[1], w[2]) == nil then
      missing[#missing + 1] = format("%s %q", w[1], w[2])
    end
  end
  if #missing > 0 then
    return conditions.new("Reconciled", "False", "ChildrenMissing",
      "Waiting for " .. concat(missing, ", ") .. " to be created")
  end
  local changes = storage_changes(spec,
    observed_of(observed, "StatefulSet", name))
  if #changes > 0 then
    return conditions.new("Reconciled", "False", "StorageImmutable",
      format("StatefulSet %q keeps the volumes it was created with (%s): "
        .. "Kubernetes cannot change a StatefulSet's volume claim "
        .. "templates. Restore spec.storage, or expand the PVCs yourself "
        .. "and recreate the StatefulSet (kubectl delete statefulset %s "
        .. "--cascade=orphan; the PVCs and the data are kept)", name,
        concat(changes, "; "), name))
  end
  local text, hash = config_file(entry)
  local stale = {}
  local cm = observed_of(observed, "ConfigMap", name .. "-config")
  if type(cm.data) ~= "table" or cm.data["config.yaml"] ~= text then
    stale[#stale + 1] = format("ConfigMap %q does not hold the current "
      .. "configuration", name .. "-config")
  end
  local sts = observed_of(observed, "StatefulSet", name)
  local got = tablex.get(sts, "spec", "template", "metadata", "annotations",
    M.CONFIG_HASH_ANNOTATION)
  if got ~= hash then
    stale[#stale + 1] = format("StatefulSet %q does not carry the current "
      .. "configuration hash", name)
  end
  local replicas = tablex.get(sts, "spec", "replicas")
  if replicas ~= nil and replicas ~= spec.replicas then
    stale[#stale + 1] = format("StatefulSet %q has %s replicas, want %d",
      name, tostring(replicas), spec.replicas)
  end
  if #stale > 0 then
    return conditions.new("Reconciled", "False", "ChildrenOutOfDate",
      concat(stale, "; "))
  end
  return conditions.new("Reconciled", "True", "ChildrenUpToDate",
    "ConfigMap, Services and StatefulSet match the spec")
end

--- Status of a DittoServer from its observed children and pods.
-- phase: Failed when the spec is invalid (validate() errors: the operator
-- cannot apply it; the running pods, if any, keep the previous spec),
-- else Stopped when replicas is 0, Running when the StatefulSet reports
-- every desired replica ready; otherwise Failed when a pod cannot come up
-- until the user changes something, Pending when it may still come up.
-- Failed from the pods (M.POD_WAITING_REASONS): a bad image reference
-- (InvalidImageName, ErrImagePull, ImagePullBackOff, ErrImageNeverPull)
-- is pulled again and again without success; CreateContainerConfigError
-- waits for a Secret or key the user must create; CrashLoopBackOff is a
-- server that exits on every start, most often on its configuration, and
-- restarting it changes nothing. Pending: Unschedulable (an unbound
-- PersistentVolumeClaim waits for a provisioner, a pod for a node),
-- CreateContainerError and RunContainerError (the runtime may recover;
-- a start that keeps failing ends in CrashLoopBackOff) and ordinary
-- startup. Failed is derived anew each time, never sticky: fix the cause
-- and the phase follows the pods.
-- Ready: as upstream (StatefulSetReady, StatefulSetNotReady, Stopped),
-- except that while not every replica is ready a pod problem replaces
-- StatefulSetNotReady: Ready=False with the kubelet's reason and message,
-- prefixed "pod P, container C: " (M.pod_problems, pods_condition).
-- @param ds table the DittoServer
-- @param observed table observed[kind][name] -> live child, and
-- observed.Pod[name] -> the server's pods
-- @param ctx table {name=, namespace=, cluster_domain=}
-- @return table {phase=, availableReplicas=, nfsEndpoint=, conditions=}
function M.status(ds, observed, ctx)
  ctx = ctx or {}
  local name, namespace, spec, entry = normalize(ds, ctx)
  local errs
  if schema.is_object(ds) then
    errs = validation(name, entry)
  else
    errs = M.validate(ds)
  end
  spec = type(spec) == "table" and spec or {}
  local desired = int_or(spec.replicas, 1)
  local port = int_or(spec.nfsPort, 2049)
  local sts = observed_of(observed, "StatefulSet", name)
  local ready = int_or(tablex.get(sts, "status", "readyReplicas"), 0)

  local running = sts ~= nil and ready >= desired
  local ready_cond, pods_phase
  if desired > 0 and not running then
    ready_cond, pods_phase = pods_condition(M.pod_problems(observed, ds))
  end
  local phase
  if #errs > 0 then
    phase = "Failed"
  elseif desired == 0 then
    phase = "Stopped"
  elseif running then
    phase = "Running"
  else
    phase = pods_phase or "Pending"
  end
  ready_cond = ready_cond or ready_condition(desired, ready)
  return obj({
    phase = phase,
    availableReplicas = ready,
    nfsEndpoint = format("%s.%s.svc.%s:%d", tostring(name),
      tostring(namespace), ctx.cluster_domain or "cluster.local", port),
    conditions = array({
      ready_cond,
      reconciled_condition(name, spec, entry, errs, observed),
    }),
  })
end


return M
