-- Example policy: DittoFS servers on a dedicated node pool, with a log
-- shipper sidecar. Everything else is the default policy.
--   spec.policy.nodePool      node pool label value (default "storage")
--   spec.policy.shipperImage  sidecar image (default fluent-bit)
local edit = require("k8s.edit")
local object = require("k8s.object")

local policy = require("dittoserver.default").new()

policy.PARAMETERS = {
  type = "object",
  properties = {
    nodePool = { type = "string", minLength = 1, default = "storage" },
    shipperImage = { type = "string", minLength = 1,
      default = "cr.fluentbit.io/fluent/fluent-bit:3.1" },
  },
}

local POOL_KEY = "node.example.com/pool"

local validate = policy.validate
function policy.validate(ds)
  local errs, warns = validate(ds)
  local pool = policy.parameters(ds).nodePool
  local ok, msgs = object.is_dns1123_label(pool)
  if type(pool) == "string" and not ok then
    errs[#errs + 1] = "spec.policy.nodePool: " .. table.concat(msgs, "; ")
  end
  return errs, warns
end

local statefulset = policy.statefulset
function policy.statefulset(r)
  local sts = statefulset(r)
  local pool = r.params.nodePool
  edit.set_node_selector(sts, { [POOL_KEY] = pool })
  edit.add_toleration(sts, { key = POOL_KEY, operator = "Equal",
    value = pool, effect = "NoSchedule" })
  edit.add_volume(sts, object.volume_empty_dir("shipper-state"))
  local shipper = edit.add_container(sts, {
    name = "log-shipper",
    image = r.params.shipperImage,
    resources = { requests = { cpu = "10m", memory = "32Mi" },
      limits = { memory = "64Mi" } },
    securityContext = { allowPrivilegeEscalation = false,
      readOnlyRootFilesystem = true, capabilities = { drop = { "ALL" } } },
  })
  edit.add_env(shipper, object.env_from_field("NODE_NAME", "spec.nodeName"))
  edit.add_volume_mount(shipper, object.volume_mount("shipper-state",
    "/var/lib/fluent-bit"))
  return sts
end

return policy
