-- Specs for policies/dittoserver/default.lua: the default policy as a
-- library (new(), the steps bound to the policy table, the memo per
-- policy, spec.policy parameters).
local codec = require("codec")
local default = require("dittoserver.default")
local edit = require("k8s.edit")
local helper = require("policy_helper")

local SAMPLE = "deploy/samples/dittoserver.yaml"


local function sample()
  return helper.load_ds(SAMPLE)
end

local function render(policy, ds)
  ds = ds or sample()
  return policy.render(ds, helper.ctx_for(ds))
end

local function json(v)
  return codec.json_encode(v)
end


describe("dittoserver.default", function()
  describe("new", function()
    it("renders what policies/dittoserver.lua renders", function()
      assert.equal(json(render((require("dittoserver")))),
        json(render(default.new())))
    end)

    it("makes independent policies", function()
      local a, b = default.new(), default.new()
      assert.is_not.equal(a.container, b.container)
      a.POD_WAITING_REASONS.CrashLoopBackOff = "Pending"
      assert.equal("Failed", b.POD_WAITING_REASONS.CrashLoopBackOff)
      assert.equal("Failed", default.new().POD_WAITING_REASONS
        .CrashLoopBackOff)
    end)

    it("carries the constants", function()
      local p = default.new()
      assert.equal(9090, p.METRICS_PORT)
      assert.equal("/config/config.yaml", p.CONFIG_FILE)
      assert.equal(9090, default.METRICS_PORT)
    end)
  end)

  describe("steps", function()
    it("reach each other through the policy table", function()
      local p = default.new()
      local container = p.container
      function p.container(r)
        local c = container(r)
        c.imagePullPolicy = "Always"
        return c
      end
      local sts = edit.find(render(p), "StatefulSet", "dittofs-sample")
      assert.equal("Always", edit.container(sts, "dittofs").imagePullPolicy)
    end)

    it("give every object p.labels and the selectors p.selector_labels",
      function()
        local p = default.new()
        local labels = p.labels
        function p.labels(r)
          local l = labels(r)
          l["example.com/team"] = "a"
          return l
        end
        local objects = render(p)
        for _, o in ipairs(objects) do
          assert.equal("a", o.metadata.labels["example.com/team"])
        end
        local sts = objects[4]
        assert.equal("a", sts.spec.template.metadata.labels["example.com/team"])
        assert.is_nil(sts.spec.selector.matchLabels["example.com/team"])
        assert.is_nil(objects[2].spec.selector["example.com/team"])
        assert.is_nil(
          sts.spec.volumeClaimTemplates[1].metadata.labels["example.com/team"])
      end)

    it("hash the config a custom server_config renders, per policy",
      function()
        local p, plain = default.new(), default.new()
        local server_config = p.server_config
        function p.server_config(r)
          local c = server_config(r)
          c.logging.level = "DEBUG"
          return c
        end
        local mine, base = render(p), render(plain)
        assert.matches("level: DEBUG", mine[1].data["config.yaml"])
        assert.matches("level: INFO", base[1].data["config.yaml"])
        local hash = p.CONFIG_HASH_ANNOTATION
        assert.equal(codec.fnv1a64(mine[1].data["config.yaml"]),
          mine[4].spec.template.metadata.annotations[hash])
        assert.are_not.equal(base[4].spec.template.metadata.annotations[hash],
          mine[4].spec.template.metadata.annotations[hash])
      end)

    it("let status count the children p.children lists", function()
      local p = default.new()
      local ds = sample()
      local objects = render(p, ds)
      local observed = { ConfigMap = {}, Service = {}, StatefulSet = {} }
      for _, o in ipairs(objects) do
        observed[o.kind][o.metadata.name] = o
      end
      local children = p.children
      function p.children(r)
        local list = children(r)
        list[#list + 1] = { "Service", r.name .. "-extra" }
        return list
      end
      local st = p.status(ds, observed, helper.ctx_for(ds))
      assert.equal('Waiting for Service "dittofs-sample-extra" to be created',
        st.conditions[2].message)
    end)
  end)

  describe("parameters", function()
    it("warns about every key of spec.policy without PARAMETERS", function()
      local ds = sample()
      ds.spec.policy = { b = 1, a = { x = 1 } }
      local errs, warns = default.new().validate(ds)
      assert.same({}, errs)
      assert.equal(2, #warns)
      for i, key in ipairs({ "spec.policy.a", "spec.policy.b" }) do
        assert.matches("unknown field", warns[i])
        assert.matches(key, warns[i], 1, true)
      end
    end)

    it("checks spec.policy against PARAMETERS, absent counting as {}",
      function()
        local p = default.new()
        p.PARAMETERS = { type = "object", required = { "team" },
          properties = { team = { type = "string" },
            size = { type = "integer", minimum = 1, default = 3 } } }
        local ds = sample()
        local errs = p.validate(ds)
        assert.equal(1, #errs)
        assert.matches("^spec%.policy%.team: [Rr]equired", errs[1])
        ds.spec.policy = { team = 7, size = 0 }
        errs = p.validate(ds)
        assert.equal(2, #errs)
        table.sort(errs)
        assert.matches("^spec%.policy%.size: .*1", errs[1])
        assert.matches("^spec%.policy%.team: .*string", errs[2])
      end)

    it("applies PARAMETERS' defaults in parameters() and r.params",
      function()
        local p = default.new()
        p.PARAMETERS = { type = "object", properties = {
          size = { type = "integer", default = 3 },
          lb = { type = "object", default = {}, properties = {
            scheme = { type = "string", default = "internal" } } } } }
        local ds = sample()
        ds.spec.policy = { size = 5 }
        assert.same({ size = 5, lb = { scheme = "internal" } },
          p.parameters(ds))
        assert.same({ size = 5, lb = { scheme = "internal" } },
          p.prepare(ds, helper.ctx_for(ds)).params)
        ds.spec.policy = nil
        assert.equal(3, p.parameters(ds).size)
      end)

    it("lists invalid spec.policy in the InvalidSpec condition", function()
      local p = default.new()
      p.PARAMETERS = { type = "object", required = { "team" },
        properties = { team = { type = "string" } } }
      local ds = sample()
      local st = p.status(ds, {}, helper.ctx_for(ds))
      assert.equal("Failed", st.phase)
      assert.equal("InvalidSpec", st.conditions[2].reason)
      assert.equal(p.validate(ds)[1], st.conditions[2].message)
      assert.matches("^spec%.policy%.team: ", st.conditions[2].message)
    end)
  end)
end)
