-- dittoserver.pod: the default policy's StatefulSet and its pod template.
-- The step functions take the policy `p` and the render input `r`
-- (dittoserver.default: r.name, r.spec, r.config, ...) and reach the other
-- steps through p, so a custom policy that replaces p.container or
-- p.pod_template changes what p.statefulset builds.
--   pod_security_context(spec), container_security_context(spec)
--   liveness_probe(p, r), readiness_probe(p, r)
--   container(p, r)     -> the "dittofs" container
--   pod_template(p, r)  -> spec.template of the StatefulSet
--   volume_claims(p, r) -> spec.volumeClaimTemplates (immutable once made)
--   statefulset(p, r)   -> the StatefulSet
-- Uses: codec, dittoserver.common, dittoserver.config, k8s.object,
-- k8s.tablex.
local codec = require("codec")
local common = require("dittoserver.common")
local config = require("dittoserver.config")
local object = require("k8s.object")
local tablex = require("k8s.tablex")

local type = type
local ipairs = ipairs
local pairs = pairs
local next = next
local format = string.format
local array = codec.array
local obj = codec.object

local M = {}


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
    psc.fsGroup = common.RUN_AS
  end
  if psc.runAsUser == nil and csc.runAsUser == nil then
    psc.runAsUser = common.RUN_AS
  end
  if psc.runAsGroup == nil and csc.runAsGroup == nil then
    psc.runAsGroup = common.RUN_AS
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
  local sys_admin = common.has_capability(csc, "SYS_ADMIN")
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


--- The liveness probe of the server container: TCP on the NFS port.
function M.liveness_probe(_, _)
  return tcp_probe(30, 10, 5)
end


--- The readiness probe of the server container: TCP on the NFS port.
function M.readiness_probe(_, _)
  return tcp_probe(10, 5, 3)
end


--- The server container: image, ports, config and volume mounts, probes,
-- security context, S3 credentials from their Secrets, resources.
-- @param p table the policy
-- @param r table the render input
-- @return table a core/v1 Container named "dittofs"
function M.container(p, r)
  local spec = r.spec
  local mounts = array({
    object.volume_mount("config", common.CONFIG_DIR, { read_only = true }),
    object.volume_mount("metadata", common.METADATA_DIR),
  })
  if spec.storage.contentSize ~= nil then
    mounts[#mounts + 1] = object.volume_mount("content", common.CONTENT_DIR)
  end
  local container = obj({
    name = "dittofs",
    image = spec.image,
    command = array({ "/app/dittofs" }),
    args = array({ "start", "--config", common.CONFIG_FILE }),
    ports = array({
      object.container_port("nfs", spec.nfsPort, "TCP"),
      object.container_port("metrics", common.METRICS_PORT, "TCP"),
    }),
    volumeMounts = mounts,
    securityContext = p.container_security_context(spec),
    livenessProbe = p.liveness_probe(r),
    readinessProbe = p.readiness_probe(r),
    -- The server logs why it stops rather than writing
    -- /dev/termination-log: the tail of its log becomes the termination
    -- message, which status() reports with a crash loop.
    terminationMessagePolicy = "FallbackToLogsOnError",
  })
  local env = config.credential_env(r.config)
  if #env > 0 then
    container.env = env
  end
  if type(spec.resources) == "table" and next(spec.resources) ~= nil then
    container.resources = resource_requirements(spec.resources)
  end
  return container
end


--- The pod template: p.labels, the config hash annotation (a new
-- config.yaml rolls the pods), the pod security context, p.container and
-- the config volume.
-- @param p table the policy
-- @param r table the render input (r.config_hash is read through
-- p.config_file)
-- @return table a core/v1 PodTemplateSpec
function M.pod_template(p, r)
  local _, hash = p.config_file(r)
  return obj({
    metadata = obj({
      labels = p.labels(r),
      annotations = obj({ [common.CONFIG_HASH_ANNOTATION] = hash }),
    }),
    spec = obj({
      automountServiceAccountToken = false,
      -- no Service environment variables: DITTOFS_* ones could
      -- override server settings through viper
      enableServiceLinks = false,
      terminationGracePeriodSeconds = common.TERMINATION_GRACE_SECONDS,
      securityContext = p.pod_security_context(r.spec),
      containers = array({ p.container(r) }),
      volumes = array({
        object.volume_config_map("config", r.name .. "-config"),
      }),
    }),
  })
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


--- The volume claim templates: "metadata", and "content" with
-- spec.storage.contentSize. Kubernetes never lets a StatefulSet change
-- them, so they carry only the selector labels.
-- @param p table the policy
-- @param r table the render input
-- @return table list of PersistentVolumeClaim templates
function M.volume_claims(p, r)
  local spec = r.spec
  local claims = array({
    volume_claim("metadata", spec.storage.metadataSize, spec,
      p.selector_labels(r)),
  })
  if spec.storage.contentSize ~= nil then
    claims[#claims + 1] = volume_claim("content", spec.storage.contentSize,
      spec, p.selector_labels(r))
  end
  return claims
end


--- The StatefulSet <name>: p.pod_template and p.volume_claims, selected by
-- p.selector_labels, served by the headless Service.
-- @param p table the policy
-- @param r table the render input
-- @return table an apps/v1 StatefulSet
function M.statefulset(p, r)
  local sts = object.new("apps/v1", "StatefulSet", r.name)
  sts.metadata.labels = p.labels(r)
  sts.spec = obj({
    replicas = r.spec.replicas,
    serviceName = r.name .. "-headless",
    selector = object.selector(p.selector_labels(r)),
    template = p.pod_template(r),
    volumeClaimTemplates = p.volume_claims(r),
  })
  return sts
end


return M
