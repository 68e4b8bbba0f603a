-- Specs for the example policy deploy/examples/policies/labels-loadbalancer:
-- its exact --script-test output, its ConfigMap, and its behaviour as the
-- operator loads it (spec/lua/policy_helper.lua).
local codec = require("codec")
local helper = require("policy_helper")
local edit = require("k8s.edit")

local DIR = "deploy/examples/policies/labels-loadbalancer"
local NAME = "dittofs-team"


local function load_ds()
  return helper.load_ds(DIR .. "/dittoserver.yaml")
end

local function render(policy, ds)
  return policy.render(ds, helper.ctx_for(ds))
end

local function reconciled(st)
  for _, c in ipairs(st.conditions) do
    if c.type == "Reconciled" then
      return c
    end
  end
  error("no Reconciled condition")
end

-- observed[kind][name] of a list of objects.
local function observe(objects)
  local observed = { ConfigMap = {}, Service = {}, StatefulSet = {} }
  for _, o in ipairs(objects) do
    observed[o.kind][o.metadata.name] = o
  end
  return observed
end


describe("example labels-loadbalancer", function()
  local policy = helper.load(DIR)

  it("gives the exact --script-test output of expected.yaml", function()
    local out, err, code = helper.script_test(DIR .. "/dittoserver.yaml", DIR)
    assert.equal("", err)
    assert.equal(0, code)
    assert.equal(helper.read(DIR .. "/expected.yaml"), out)
  end)

  it("ships as the bundle's policies ConfigMap holding dittoserver.lua",
    function()
      local cm = helper.read_yaml(DIR .. "/configmap.yaml")[1]
      local bundle = helper.read_yaml("deploy/policies_configmap.yaml")[1]
      assert.equal(bundle.metadata.name, cm.metadata.name)
      assert.equal(bundle.metadata.namespace, cm.metadata.namespace)
      assert.equal(helper.read(DIR .. "/dittoserver.lua"),
        cm.data["dittoserver.lua"])
    end)

  describe("render", function()
    it("labels and annotates every object, and the pods", function()
      local objects = render(policy, load_ds())
      assert.equal(5, #objects)
      for _, o in ipairs(objects) do
        assert.equal("analytics", o.metadata.labels["example.com/team"])
        assert.equal("cc-4711",
          o.metadata.annotations["example.com/cost-center"])
      end
      local sts = edit.find(objects, "StatefulSet", NAME)
      assert.equal("analytics",
        sts.spec.template.metadata.labels["example.com/team"])
      assert.is_nil(sts.spec.selector.matchLabels["example.com/team"])
      for _, vct in ipairs(sts.spec.volumeClaimTemplates) do
        assert.is_nil(vct.metadata.labels["example.com/team"])
      end
    end)

    it("adds a LoadBalancer Service with the given annotations", function()
      local lb = edit.find(render(policy, load_ds()), "Service", NAME .. "-lb")
      assert.equal("LoadBalancer", lb.spec.type)
      assert.equal("internal", lb.metadata.annotations[
        "service.beta.kubernetes.io/aws-load-balancer-scheme"])
      assert.same({ "10.0.0.0/8" }, lb.spec.loadBalancerSourceRanges)
      assert.equal(1, #lb.spec.ports)
      assert.equal(2049, lb.spec.ports[1].port)
      assert.same({ ["app.kubernetes.io/name"] = "dittofs-server",
        ["app.kubernetes.io/instance"] = NAME }, lb.spec.selector)
    end)

    it("renders an LB Service without annotations or ranges", function()
      local ds = load_ds()
      ds.spec.policy = { team = "t" }
      local lb = edit.find(render(policy, ds), "Service", NAME .. "-lb")
      assert.equal("{}", codec.json_encode(lb.metadata.annotations))
      assert.equal("[]", codec.json_encode(lb.spec.loadBalancerSourceRanges))
    end)
  end)

  describe("validate", function()
    it("accepts the example", function()
      local errs, warns = policy.validate(load_ds())
      assert.same({}, errs)
      assert.same({}, warns)
    end)

    it("requires a team", function()
      local ds = load_ds()
      ds.spec.policy = nil
      local errs = policy.validate(ds)
      assert.equal(1, #errs)
      assert.matches("^spec%.policy%.team: [Rr]equired", errs[1])
    end)

    it("refuses annotations that are not strings", function()
      local ds = load_ds()
      ds.spec.policy.loadBalancer.annotations.x = 1
      local errs = policy.validate(ds)
      assert.equal(1, #errs)
      assert.matches("^spec%.policy%.loadBalancer%.annotations%.x: .*string",
        errs[1])
    end)
  end)

  describe("status", function()
    it("waits for the LoadBalancer Service too", function()
      local ds = load_ds()
      local objects = render(policy, ds)
      local lb = table.remove(objects)
      local st = policy.status(ds, observe(objects), helper.ctx_for(ds))
      assert.equal("ChildrenMissing", reconciled(st).reason)
      assert.equal('Waiting for Service "dittofs-team-lb" to be created',
        reconciled(st).message)
      objects[#objects + 1] = lb
      st = policy.status(ds, observe(objects), helper.ctx_for(ds))
      assert.equal("ChildrenUpToDate", reconciled(st).reason)
    end)
  end)
end)
