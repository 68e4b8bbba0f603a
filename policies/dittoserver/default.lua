-- dittoserver.default: the default DittoServer policy as a library. new()
-- returns a policy: a table with validate, render and status (the contract
-- of core/policy.h) and every step they are made of, each a field a custom
-- policy may wrap or replace. The steps reach each other through the
-- policy table, never through locals, so replacing p.container changes
-- what p.render returns. policies/dittoserver.lua is `new()` itself;
-- a custom dittoserver.lua mounted in its place requires this module
-- (embedded policies stay reachable behind a --policies directory) and
-- changes what it needs. policies/README.md documents every step.
--
--   validate(ds)               -> errors, warnings
--   render(ds, ctx)            -> objects(prepare(ds, ctx))
--   status(ds, observed, ctx)  -> status
--   prepare(ds, ctx)           -> r, the render input: {ds=, ctx=, name=,
--                                 namespace=, spec= (defaulted, read only),
--                                 config= (effective spec.config),
--                                 params= (defaulted spec.policy)}
--   objects(r)                 -> {config_map, service, headless_service,
--                                  statefulset}
--   labels(r), selector_labels(r), service_ports(r), config_map(r),
--   service(r), headless_service(r), statefulset(r), pod_template(r),
--   container(r), volume_claims(r), liveness_probe(r), readiness_probe(r)
--   server_config(r)           -> config.yaml as a table
--   config_file(r)             -> config.yaml text, its hash
--   default_config(spec), pod_security_context(spec),
--   container_security_context(spec), s3_env_name(backend, key)
--   parameters(ds)             -> spec.policy defaulted by PARAMETERS
--   PARAMETERS                 -> schema of spec.policy (none by default)
--   children(r)                -> the {kind, name} list Reconciled waits for
--   pod_problems(observed, ds), POD_WAITING_REASONS, UNSCHEDULABLE_PHASE
-- Uses: codec, dittoserver_schema, dittoserver.common, .config,
-- .validation, .pod, .services, .status, k8s.tablex.
local codec = require("codec")
local schema = require("dittoserver_schema")
local common = require("dittoserver.common")
local config = require("dittoserver.config")
local validation = require("dittoserver.validation")
local pod = require("dittoserver.pod")
local services = require("dittoserver.services")
local status = require("dittoserver.status")
local tablex = require("k8s.tablex")

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local setmetatable = setmetatable
local array = codec.array
local same = codec.same

local M = {}

--- The constants every policy made by new() carries (read-only: the
-- modules read dittoserver.common; to change a value, replace the step
-- that uses it).
local CONSTANTS = {
  "METRICS_PORT", "CONFIG_HASH_ANNOTATION", "CONFIG_DIR", "CONFIG_FILE",
  "METADATA_DIR", "CONTENT_DIR", "SHARED_CONTENT_DIR", "RUN_AS",
  "TERMINATION_GRACE_SECONDS", "MAX_NAME",
}
for _, k in ipairs(CONSTANTS) do
  M[k] = common[k]
end


-- ---------------------------------------------------------------------------
-- Memoization within one evaluation.
--
-- The engine (core/policy.c) calls validate(ds), render(ds, ctx) and
-- status(ds, observed, ctx) in that order, each on its own decoding of the
-- same DittoServer JSON, in a state where the policy's main chunk ran at
-- the start of the evaluation. So the three calls get equal specs in
-- distinct tables, and what depends only on the spec (the defaulted copy,
-- the default validation, the default config) or on the spec and the
-- DittoServer's identity (config.yaml and its hash) is computed once and
-- found again by content: codec.same compares the spec with a copy of
-- the one each entry was made from (the caller may change its own table
-- later), telling an integer from an integral float. Outside the engine
-- (busted) a policy lives across DittoServers; entries stay correct there
-- because each is a pure function of its spec and its users never mutate
-- it, and the list is bounded. Each policy made by new() has its own
-- memo: one whose steps differ never sees another's results.
local MEMO_MAX = 8
-- validation key of a DittoServer whose name is not a string
local NO_NAME = {}

local function new_memo()
  return {
    entries = {},
    -- defaulted spec -> its entry (weak: entries are dropped with memo)
    of_spec = setmetatable({}, { __mode = "k" }),
  }
end

-- The memo entry of a spec: { source = copy of the spec, spec = defaulted
-- copy (never mutated), valid = { [name] = { errs, warns } }, files = {
-- [identity] = { text, hash } }, default_config = } (the last three
-- filled on first use). A spec that is not a table gets a fresh entry
-- holding it as is.
local function spec_entry(memo, spec)
  if type(spec) ~= "table" then
    return { spec = spec, valid = {}, files = {} }
  end
  local entries = memo.entries
  for i = 1, #entries do
    if same(entries[i].source, spec) then
      return entries[i]
    end
  end
  local entry = {
    source = tablex.deepcopy(spec),
    spec = schema.defaulted_copy(spec, schema.node("spec")),
    valid = {},
    files = {},
  }
  memo.of_spec[entry.spec] = entry
  if #entries >= MEMO_MAX then
    entries = {}
    memo.entries = entries
  end
  entries[#entries + 1] = entry
  return entry
end

-- The DittoServer's name, namespace, a defaulted copy of its spec (shared:
-- read only) and its memo entry.
local function normalize(memo, ds, ctx)
  ctx = ctx or {}
  local meta = type(ds) == "table" and type(ds.metadata) == "table"
    and ds.metadata or {}
  local entry = spec_entry(memo, type(ds) == "table" and ds.spec or nil)
  return meta.name or ctx.name, meta.namespace or ctx.namespace, entry.spec,
    entry
end


-- ---------------------------------------------------------------------------
-- The policy

-- Steps of the modules that take (p, r): bound to each new policy.
local BOUND = {
  labels = services, selector_labels = services,
  service_ports = services, config_map = services, service = services,
  headless_service = services, statefulset = pod, pod_template = pod,
  container = pod, volume_claims = pod, liveness_probe = pod,
  readiness_probe = pod, children = status,
}


--- A new default policy: every step a field of a fresh table, bound to
-- that table (see the module comment and policies/README.md).
-- @return table the policy
function M.new()
  -- Made at its final size (a table grown field by field is rehashed at
  -- every power of two): the nil fields below only size it, every field
  -- is set further down. A field missing here only costs a rehash.
  local p = {
    METRICS_PORT = nil, CONFIG_HASH_ANNOTATION = nil, CONFIG_DIR = nil,
    CONFIG_FILE = nil, METADATA_DIR = nil, CONTENT_DIR = nil,
    SHARED_CONTENT_DIR = nil, RUN_AS = nil, TERMINATION_GRACE_SECONDS = nil,
    MAX_NAME = nil, POD_WAITING_REASONS = nil, UNSCHEDULABLE_PHASE = nil,
    PARAMETERS = nil, labels = nil, selector_labels = nil,
    service_ports = nil, config_map = nil, service = nil,
    headless_service = nil, statefulset = nil, pod_template = nil,
    container = nil, volume_claims = nil, liveness_probe = nil,
    readiness_probe = nil, children = nil, fnv1a64 = nil, cut_message = nil,
    s3_env_name = nil, default_config = nil, pod_security_context = nil,
    container_security_context = nil, parameters = nil, validate = nil,
    prepare = nil, server_config = nil, config_file = nil, objects = nil,
    render = nil, pod_problems = nil, status = nil,
  }
  local memo = new_memo()
  for _, k in ipairs(CONSTANTS) do
    p[k] = common[k]
  end
  local reasons = {}
  for k, v in pairs(status.POD_WAITING_REASONS) do
    reasons[k] = v
  end
  p.POD_WAITING_REASONS = reasons
  p.UNSCHEDULABLE_PHASE = status.UNSCHEDULABLE_PHASE
  --- Schema of spec.policy (the CRD keeps that object as it is): the
  -- structural subset dittoserver_schema.check knows (type, properties,
  -- additionalProperties, required, enum, minimum/maximum, minLength/
  -- maxLength, items, minItems, default). The default policy takes no
  -- parameters: every key is warned about as unknown.
  p.PARAMETERS = { type = "object", properties = {} }

  for name, module in pairs(BOUND) do
    local fn = module[name]
    p[name] = function(r)
      return fn(p, r)
    end
  end

  p.fnv1a64 = codec.fnv1a64
  p.cut_message = common.cut
  p.s3_env_name = config.s3_env_name
  p.default_config = config.default_config
  p.pod_security_context = pod.pod_security_context
  p.container_security_context = pod.container_security_context

  -- spec.config, or the default one (memoized: a memoized spec never
  -- changes, nor does its default config); true when it is the default.
  local function effective_config(spec)
    if spec.config ~= nil then
      return spec.config, false
    end
    local entry = memo.of_spec[spec]
    if entry == nil then
      return p.default_config(spec), true
    end
    if entry.default_config == nil then
      entry.default_config = p.default_config(spec)
    end
    return entry.default_config, true
  end

  -- the default rules of a memo entry, once per name
  local function default_validation(name, entry)
    local key = type(name) == "string" and name or NO_NAME
    local v = entry.valid[key]
    if v == nil then
      v = { validation.check(name, entry.spec, effective_config) }
      entry.valid[key] = v
    end
    return v[1], v[2]
  end

  --- spec.policy, defaulted by p.PARAMETERS (a new table; {} without it).
  function p.parameters(ds)
    local spec = type(ds) == "table" and ds.spec or nil
    local params = type(spec) == "table" and spec.policy or nil
    if not schema.is_object(params) then
      params = {}
    end
    return schema.defaulted_copy(params, p.PARAMETERS)
  end

  --- Checks a DittoServer beyond what the CRD schema can express: the
  -- default rules (dittoserver.validation), then spec.policy against
  -- p.PARAMETERS. Wrap it to add rules of your own.
  -- @param ds table the DittoServer (CRD defaults applied or not)
  -- @return table errors, table warnings (lists of "field: message")
  function p.validate(ds)
    if not schema.is_object(ds) then
      return array({ "DittoServer: must be an object" }), array({})
    end
    local name, _, _, entry = normalize(memo, ds)
    local errs, warns = default_validation(name, entry)
    -- copies: the memoized lists stay as they are whatever the caller does
    errs = array(table.move(errs, 1, #errs, 1, {}))
    warns = array(table.move(warns, 1, #warns, 1, {}))
    -- absent counts as {}, so that PARAMETERS.required holds without it
    local params = schema.is_object(ds.spec) and ds.spec.policy or nil
    if params == nil or params == codec.null then
      params = {}
    end
    if schema.is_object(params) then
      local perrs, pwarns = schema.check(params, p.PARAMETERS,
        "spec.policy")
      tablex.extend(errs, perrs)
      tablex.extend(warns, pwarns)
    end
    return errs, warns
  end

  --- The render input of a DittoServer (see the module comment). r.spec
  -- and r.config are shared with the memo: read them, never change them.
  function p.prepare(ds, ctx)
    ctx = ctx or {}
    local name, namespace, spec = normalize(memo, ds, ctx)
    return {
      ds = ds, ctx = ctx, name = name, namespace = namespace, spec = spec,
      config = type(spec) == "table" and effective_config(spec) or nil,
      params = p.parameters(ds),
    }
  end

  --- The DittoFS configuration of r (dittoserver.config.server_config).
  function p.server_config(r)
    return config.server_config(r.spec, r.config)
  end

  --- config.yaml of r (codec.yaml_encode of p.server_config) and its
  -- FNV-1a 64 hash, memoized per spec and DittoServer.
  function p.config_file(r)
    local entry = memo.of_spec[r.spec]
    local key = tostring(r.name) .. "\0" .. tostring(r.namespace) .. "\0"
      .. tostring(r.ctx.cluster_domain)
    local f = entry and entry.files[key]
    if f == nil then
      local text = codec.yaml_encode(p.server_config(r))
      f = { text = text, hash = codec.fnv1a64(text) }
      if entry then
        entry.files[key] = f
      end
    end
    return f.text, f.hash
  end

  --- The desired children, in a fixed order: ConfigMap, Service, headless
  -- Service, StatefulSet. Wrap it (or render) to add or change objects.
  function p.objects(r)
    return array({
      p.config_map(r), p.service(r), p.headless_service(r),
      p.statefulset(r),
    })
  end

  --- Desired children of a DittoServer. Expects a spec validate() accepts.
  -- @param ds table the DittoServer
  -- @param ctx table {name=, namespace=, cluster_domain=, operator_version=}
  -- @return table list of objects (no namespace/ownerReferences: the core
  -- adds them)
  function p.render(ds, ctx)
    return p.objects(p.prepare(ds, ctx))
  end

  --- What keeps the pods from becoming ready (dittoserver.status).
  function p.pod_problems(observed, ds)
    return status.pod_problems(p, observed, ds)
  end

  --- Status of a DittoServer from its observed children and pods
  -- (dittoserver.status).
  function p.status(ds, observed, ctx)
    return status.status(p, ds, observed, ctx)
  end

  return p
end


return M
