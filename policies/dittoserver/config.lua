-- dittoserver.config: the DittoFS server configuration (config.yaml) the
-- default policy renders from a DittoServer's spec: reference §1.7, with
-- the server's metrics really enabled. Pure functions of the spec; the
-- default policy (dittoserver.default) memoizes their results.
--   default_config(spec)          -> the spec.config used when there is none
--   server_config(spec, config)   -> config.yaml as a table
--   s3_env_name(backend, key)     -> DITTOFS_CONTENT_STORES_<B>_S3_<KEY>
--   credential_env(config)        -> the env vars reading S3 Secrets
-- Uses: codec, dittoserver_schema, dittoserver.common, k8s.object.
local codec = require("codec")
local schema = require("dittoserver_schema")
local common = require("dittoserver.common")
local object = require("k8s.object")

local type = type
local ipairs = ipairs
local array = codec.array
local obj = codec.object
local list = common.list
local str_array = common.str_array

local M = {}

local DEFAULT_REGION = "us-east-1"


--- The spec.config the server gets when the DittoServer has none: one share
-- /export, badger metadata on the metadata volume, filesystem content on the
-- content volume (or on the metadata volume when there is none).
-- @param spec table defaulted spec
-- @return table a spec.config (defaulted)
function M.default_config(spec)
  local content_path = common.local_content_dir(spec)
  local config = {
    shares = array({ obj({
      name = "default",
      exportPath = "/export",
      metadataStore = "badger-metadata",
      contentStore = "local-content",
    }) }),
    backends = array({
      obj({ name = "badger-metadata", type = "badger",
        config = obj({ path = common.METADATA_DIR }) }),
      obj({ name = "local-content", type = "local",
        config = obj({ path = content_path }) }),
    }),
  }
  return schema.apply_defaults(obj(config),
    schema.node("spec.config"))
end


-- Upstream: cache sizes become integer bytes; "" and "0" are 0.
local function bytes_or_string(s)
  local n = common.size_bytes(s)
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
      badger = obj({ db_path = cfg.path or common.METADATA_DIR }),
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


--- The DittoFS server configuration, as a Lua table ready for
-- codec.yaml_encode (reference §1.7 with server metrics enabled).
-- @param spec table defaulted spec
-- @param config table the spec.config to serve (spec.config, or
-- default_config(spec) when the DittoServer has none)
-- @return table configuration
function M.server_config(spec, config)
  local stores_meta, stores_content = obj({}), obj({})
  local content_dir = common.local_content_dir(spec)
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
      metrics = obj({ enabled = true, port = common.METRICS_PORT }),
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


--- Name of the environment variable DittoFS reads a store setting from:
-- DITTOFS_ + the config key path upper-cased with "." -> "_" (viper).
-- @param backend string backend name, e.g. "s3-content"
-- @param key string "access_key_id" or "secret_access_key"
-- @return string e.g. DITTOFS_CONTENT_STORES_S3-CONTENT_S3_ACCESS_KEY_ID
function M.s3_env_name(backend, key)
  return ("DITTOFS_CONTENT_STORES_" .. backend .. "_S3_" .. key):upper()
end


--- The server container's env vars that read S3 credentials from the
-- Secrets the backends reference (a codec array, [] when none).
-- @param config table the effective spec.config
-- @return table list of env vars
function M.credential_env(config)
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


return M
