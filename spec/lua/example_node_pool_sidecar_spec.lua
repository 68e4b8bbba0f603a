-- Specs for the example policy deploy/examples/policies/node-pool-sidecar:
-- its exact --script-test output, its ConfigMap, and its behaviour as the
-- operator loads it (spec/lua/policy_helper.lua).
local codec = require("codec")
local helper = require("policy_helper")

local DIR = "deploy/examples/policies/node-pool-sidecar"
local edit = require("k8s.edit")


local function ds_with(params)
  local ds = helper.load_ds(DIR .. "/dittoserver.yaml")
  ds.spec.policy = params
  return ds
end

local function render(policy, ds)
  return policy.render(ds, helper.ctx_for(ds))
end

local function json(v)
  return codec.json_encode(v)
end


describe("example node-pool-sidecar", function()
  local policy = helper.load(DIR)
  local default = helper.load("policies")

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
      assert.equal("ConfigMap", cm.kind)
      assert.equal(bundle.metadata.name, cm.metadata.name)
      assert.equal(bundle.metadata.namespace, cm.metadata.namespace)
      assert.equal(helper.read(DIR .. "/dittoserver.lua"),
        cm.data["dittoserver.lua"])
    end)

  describe("render", function()
    it("puts the pods on the pool, tolerating its taint", function()
      local sts = edit.find(render(policy, ds_with({ nodePool = "fast" })),
        "StatefulSet", "dittofs-pool")
      local ps = edit.pod_spec(sts)
      assert.same({ ["node.example.com/pool"] = "fast" }, ps.nodeSelector)
      assert.same({ { key = "node.example.com/pool", operator = "Equal",
        value = "fast", effect = "NoSchedule" } }, ps.tolerations)
    end)

    it("uses the parameters' defaults without spec.policy", function()
      local sts = edit.find(render(policy, ds_with(nil)), "StatefulSet",
        "dittofs-pool")
      assert.equal("storage",
        edit.pod_spec(sts).nodeSelector["node.example.com/pool"])
      assert.equal("cr.fluentbit.io/fluent/fluent-bit:3.1",
        edit.container(sts, "log-shipper").image)
    end)

    it("adds the log shipper with its volume next to the server", function()
      local sts = edit.find(render(policy, ds_with({ shipperImage = "fb:9" })),
        "StatefulSet", "dittofs-pool")
      local shipper = edit.container(sts, "log-shipper")
      assert.equal("fb:9", shipper.image)
      assert.equal("spec.nodeName",
        shipper.env[1].valueFrom.fieldRef.fieldPath)
      assert.equal("shipper-state", shipper.volumeMounts[1].name)
      local vols = edit.pod_spec(sts).volumes
      assert.equal("shipper-state", vols[#vols].name)
      assert.equal("dittofs", edit.pod_spec(sts).containers[1].name)
    end)

    it("leaves everything else as the default policy renders it", function()
      local ds = ds_with({ nodePool = "fast" })
      local mine, base = render(policy, ds), render(default, ds)
      assert.equal(#base, #mine)
      for i = 1, 3 do
        assert.equal(json(base[i]), json(mine[i]))
      end
      local ps = edit.pod_spec(mine[4])
      ps.nodeSelector, ps.tolerations = nil, nil
      table.remove(ps.containers, 2)
      table.remove(ps.volumes, 2)
      assert.equal(json(base[4]), json(mine[4]))
    end)
  end)

  describe("validate", function()
    it("accepts the example", function()
      local errs, warns = policy.validate(ds_with({ nodePool = "nfs-ssd" }))
      assert.same({}, errs)
      assert.same({}, warns)
    end)

    it("refuses a pool that is not a label value", function()
      local errs = policy.validate(ds_with({ nodePool = "NFS_SSD" }))
      assert.equal(1, #errs)
      assert.matches("^spec%.policy%.nodePool: a lowercase RFC 1123 label",
        errs[1])
    end)

    it("checks the parameters' types and warns about unknown ones",
      function()
        local errs, warns = policy.validate(ds_with({ nodePool = 5,
          zone = "a" }))
        assert.equal(1, #errs)
        assert.matches("^spec%.policy%.nodePool: .*string", errs[1])
        assert.equal(1, #warns)
        assert.matches("unknown field", warns[1])
        assert.matches("spec.policy.zone", warns[1], 1, true)
      end)

    it("keeps the default rules", function()
      local ds = ds_with(nil)
      ds.spec.nfsPort = 9090
      local errs = policy.validate(ds)
      assert.same({ "spec.nfsPort: 9090 is the metrics port; choose "
        .. "another port" }, errs)
    end)
  end)
end)
