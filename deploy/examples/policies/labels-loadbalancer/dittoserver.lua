-- Example policy: team labels and annotations on every object, and a
-- second, internal LoadBalancer Service whose cloud annotations come from
-- the DittoServer. Everything else is the default policy.
--   spec.policy.team                        label example.com/team (required)
--   spec.policy.costCenter                  annotation example.com/cost-center
--   spec.policy.loadBalancer.annotations    the LB Service's annotations
--   spec.policy.loadBalancer.sourceRanges   loadBalancerSourceRanges
local codec = require("codec")
local edit = require("k8s.edit")
local object = require("k8s.object")

local policy = require("dittoserver.default").new()

policy.PARAMETERS = {
  type = "object",
  required = { "team" },
  properties = {
    team = { type = "string", minLength = 1 },
    costCenter = { type = "string" },
    loadBalancer = { type = "object", default = {}, properties = {
      annotations = { type = "object",
        additionalProperties = { type = "string" } },
      sourceRanges = { type = "array", items = { type = "string" } },
    } },
  },
}

local function lb_name(r)
  return r.name .. "-lb"
end

local function lb_service(r)
  local lb = r.params.loadBalancer
  local svc = object.new("v1", "Service", lb_name(r))
  svc.metadata.labels = policy.labels(r)
  svc.metadata.annotations = codec.object(lb.annotations or {})
  svc.spec = codec.object({
    type = "LoadBalancer",
    selector = policy.selector_labels(r),
    ports = codec.array({ object.service_port("nfs", r.spec.nfsPort,
      r.spec.nfsPort, "TCP") }),
    loadBalancerSourceRanges = codec.array(lb.sourceRanges or {}),
  })
  return svc
end

local objects = policy.objects
function policy.objects(r)
  local list = objects(r)
  list[#list + 1] = lb_service(r)
  edit.label_all(list, { ["example.com/team"] = r.params.team })
  edit.annotate_all(list, { ["example.com/cost-center"] = r.params.costCenter })
  return list
end

local children = policy.children
function policy.children(r)
  local list = children(r)
  list[#list + 1] = { "Service", lb_name(r) }
  return list
end

return policy
