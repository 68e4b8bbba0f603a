-- Specs for lua/k8s/edit.lua.

local codec = require("codec_shim").install()
-- Loaded as the policy sandbox loads it: no globals beyond the allow-list.
local helper = require("k8s_spec_helper")
local edit = helper.require("k8s.edit")
local object = helper.require("k8s.object")


local function sts(name)
  return {
    apiVersion = "apps/v1", kind = "StatefulSet",
    metadata = { name = name, labels = { app = "x" } },
    spec = {
      selector = { matchLabels = { app = "x" } },
      template = {
        metadata = { labels = { app = "x" } },
        spec = { containers = { { name = "main", image = "i" } } },
      },
      volumeClaimTemplates = { { metadata = { name = "data",
        labels = { app = "x" } } } },
    },
  }
end

local function objects()
  return {
    { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "a" } },
    { apiVersion = "v1", kind = "Service", metadata = { name = "a" } },
    { apiVersion = "v1", kind = "Service", metadata = { name = "a-h" } },
    sts("a"),
  }
end


describe("k8s.edit", function()
  describe("find", function()
    it("returns the object of a kind and name and its index", function()
      local list = objects()
      local o, i = edit.find(list, "Service", "a-h")
      assert.equal(list[3], o)
      assert.equal(3, i)
    end)

    it("returns nil when no object matches", function()
      assert.is_nil(edit.find(objects(), "Service", "b"))
      assert.is_nil(edit.find(objects(), "Secret", "a"))
      assert.is_nil(edit.find({ 7, {} }, "Service", "a"))
    end)

    it("raises when the list is not a table", function()
      assert.has_error(function() edit.find(nil, "Service", "a") end,
        "k8s.edit: objects must be a table, got nil")
    end)
  end)

  describe("find_all", function()
    it("returns every object of a kind in order", function()
      local list = objects()
      local svcs = edit.find_all(list, "Service")
      assert.equal(2, #svcs)
      assert.equal(list[2], svcs[1])
      assert.equal(list[3], svcs[2])
      assert.same({}, edit.find_all(list, "Pod"))
    end)
  end)

  describe("pod_spec", function()
    it("returns the template's spec of a workload and a Pod's spec",
      function()
        local s = sts("a")
        assert.equal(s.spec.template.spec, edit.pod_spec(s))
        local pod = { kind = "Pod", spec = { containers = {} } }
        assert.equal(pod.spec, edit.pod_spec(pod))
      end)

    it("raises for an object without a pod template", function()
      assert.has_error(function()
        edit.pod_spec({ kind = "Service", metadata = { name = "a" } })
      end, 'k8s.edit: Service "a" has no pod template (spec.template)')
    end)
  end)

  describe("container", function()
    it("finds containers and init containers by name", function()
      local s = sts("a")
      local init = { name = "init", image = "busybox" }
      s.spec.template.spec.initContainers = { init }
      assert.equal(s.spec.template.spec.containers[1],
        edit.container(s, "main"))
      assert.equal(init, edit.container(s, "init"))
      assert.is_nil(edit.container(s, "other"))
    end)
  end)

  describe("add_container", function()
    it("appends a sidecar, and replaces one of the same name", function()
      local s = sts("a")
      edit.add_container(s, { name = "side", image = "s:1" })
      edit.add_container(s, { name = "side", image = "s:2" })
      local cs = s.spec.template.spec.containers
      assert.equal(2, #cs)
      assert.equal("s:2", cs[2].image)
    end)

    it("adds init containers as a JSON array", function()
      local s = sts("a")
      edit.add_container(s, { name = "init", image = "i" }, { init = true })
      local inits = s.spec.template.spec.initContainers
      assert.equal("init", inits[1].name)
      assert.is_true(codec.is_array(inits))
    end)
  end)

  describe("add_volume", function()
    it("adds a volume, replacing one of the same name", function()
      local s = sts("a")
      edit.add_volume(s, object.volume_empty_dir("tmp"))
      edit.add_volume(s, object.volume_config_map("tmp", "cm"))
      local vols = s.spec.template.spec.volumes
      assert.equal(1, #vols)
      assert.equal("cm", vols[1].configMap.name)
    end)
  end)

  describe("add_toleration", function()
    it("adds a toleration once", function()
      local s = sts("a")
      local t = { key = "dedicated", operator = "Equal", value = "nfs",
        effect = "NoSchedule" }
      edit.add_toleration(s, t)
      edit.add_toleration(s, { key = "dedicated", operator = "Equal",
        value = "nfs", effect = "NoSchedule" })
      edit.add_toleration(s, { key = "other", operator = "Exists" })
      local ts = s.spec.template.spec.tolerations
      assert.equal(2, #ts)
      assert.same(t, ts[1])
      assert.equal('[{"effect":"NoSchedule","key":"dedicated",'
        .. '"operator":"Equal","value":"nfs"},'
        .. '{"key":"other","operator":"Exists"}]', codec.json_encode(ts))
    end)
  end)

  describe("set_node_selector", function()
    it("merges labels, the given ones winning", function()
      local s = sts("a")
      edit.set_node_selector(s, { zone = "a", disk = "ssd" })
      edit.set_node_selector(s, { zone = "b" })
      assert.same({ zone = "b", disk = "ssd" },
        s.spec.template.spec.nodeSelector)
    end)
  end)

  describe("add_env", function()
    it("adds env vars, replacing one of the same name", function()
      local c = { name = "main" }
      edit.add_env(c, object.env("A", 1))
      edit.add_env(c, object.env("B", "x"))
      edit.add_env(c, object.env_from_secret("A", "s", "k"))
      assert.equal(2, #c.env)
      assert.same({ name = "A", valueFrom = { secretKeyRef = { name = "s",
        key = "k" } } }, c.env[1])
      assert.same({ name = "B", value = "x" }, c.env[2])
    end)

    it("raises when the container is not a table", function()
      assert.has_error(function() edit.add_env(nil, { name = "A" }) end,
        "k8s.edit: container must be a table, got nil")
    end)
  end)

  describe("add_volume_mount", function()
    it("adds a mount, replacing one of the same name", function()
      local c = { name = "main" }
      edit.add_volume_mount(c, object.volume_mount("tmp", "/tmp"))
      edit.add_volume_mount(c, object.volume_mount("tmp", "/scratch"))
      assert.equal(1, #c.volumeMounts)
      assert.equal("/scratch", c.volumeMounts[1].mountPath)
    end)
  end)

  describe("label_all", function()
    it("labels every object and the pod template, not the selector or "
      .. "the claim templates", function()
        local list = edit.label_all(objects(), { team = "storage" })
        for _, o in ipairs(list) do
          assert.equal("storage", o.metadata.labels.team)
        end
        local s = list[4]
        assert.equal("storage", s.spec.template.metadata.labels.team)
        assert.equal("x", s.spec.template.metadata.labels.app)
        assert.same({ app = "x" }, s.spec.selector.matchLabels)
        assert.same({ app = "x" },
          s.spec.volumeClaimTemplates[1].metadata.labels)
      end)
  end)

  describe("annotate_all", function()
    it("annotates every object, not the pod template", function()
      local list = edit.annotate_all(objects(), { owner = "team-a" })
      for _, o in ipairs(list) do
        assert.equal("team-a", o.metadata.annotations.owner)
      end
      assert.is_nil(list[4].spec.template.metadata.annotations)
    end)
  end)
end)
