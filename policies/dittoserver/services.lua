-- dittoserver.services: the default policy's labels, ConfigMap and
-- Services. Step functions take the policy `p` and the render input `r`
-- (dittoserver.default) and reach the other steps through p.
--   selector_labels(p, r)  -> the labels that select the server's pods
--   labels(p, r)           -> metadata.labels of every rendered object
--   service_ports(p, r)    -> nfs and metrics
--   config_map(p, r)       -> ConfigMap <name>-config (config.yaml)
--   service(p, r)          -> Service <name> (spec.service.type, annotations)
--   headless_service(p, r) -> Service <name>-headless (stable pod DNS)
-- Uses: codec, dittoserver.common, k8s.object, k8s.tablex.
local codec = require("codec")
local common = require("dittoserver.common")
local object = require("k8s.object")
local tablex = require("k8s.tablex")

local type = type
local next = next
local array = codec.array
local obj = codec.object

local M = {}


--- The labels that select the server's pods (app.kubernetes.io/name and
-- instance). A new table on every call. The StatefulSet's selector is
-- immutable: a policy must not change these for an existing server.
function M.selector_labels(_, r)
  return obj({
    ["app.kubernetes.io/name"] = common.APP,
    ["app.kubernetes.io/instance"] = r.name,
  })
end


--- metadata.labels of every object the default renders, and of the pod
-- template: the selector labels (a new table on every call). The core adds
-- app.kubernetes.io/managed-by and dittofs.dittofs.com/server.
function M.labels(p, r)
  return p.selector_labels(r)
end


--- The ports of both Services: nfs (spec.nfsPort) and metrics.
function M.service_ports(_, r)
  return array({
    object.service_port("nfs", r.spec.nfsPort, r.spec.nfsPort, "TCP"),
    object.service_port("metrics", common.METRICS_PORT,
      common.METRICS_PORT, "TCP"),
  })
end


--- The ConfigMap <name>-config holding config.yaml (p.config_file).
function M.config_map(p, r)
  local cm = object.new("v1", "ConfigMap", r.name .. "-config")
  cm.metadata.labels = p.labels(r)
  cm.data = obj({ ["config.yaml"] = (p.config_file(r)) })
  return cm
end


--- The Service <name>: type spec.service.type, annotations
-- spec.service.annotations, the nfs and metrics ports.
function M.service(p, r)
  local spec = r.spec
  local svc = object.new("v1", "Service", r.name)
  svc.metadata.labels = p.labels(r)
  local annotations = spec.service.annotations
  if type(annotations) == "table" and next(annotations) ~= nil then
    svc.metadata.annotations = obj(tablex.deepcopy(annotations))
  end
  svc.spec = obj({
    type = spec.service.type,
    selector = p.selector_labels(r),
    ports = p.service_ports(r),
  })
  return svc
end


--- The headless Service <name>-headless: stable DNS names of the pods,
-- published before they are ready.
function M.headless_service(p, r)
  local headless = object.new("v1", "Service", r.name .. "-headless")
  headless.metadata.labels = p.labels(r)
  headless.spec = obj({
    clusterIP = "None",
    publishNotReadyAddresses = true,
    selector = p.selector_labels(r),
    ports = p.service_ports(r),
  })
  return headless
end


return M
