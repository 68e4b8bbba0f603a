-- Specs for lua/k8s/object.lua.

local codec = require("codec_shim").install()
-- Loaded as the policy sandbox loads it: no globals beyond the allow-list.
local object = require("k8s_spec_helper").require("k8s.object")

local LABEL_REGEX_MSG = "a lowercase RFC 1123 label must consist of lower "
  .. "case alphanumeric characters or '-', and must start and end with an "
  .. "alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
  .. "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
local SUBDOMAIN_REGEX_MSG = "a lowercase RFC 1123 subdomain must consist of "
  .. "lower case alphanumeric characters, '-' or '.', and must start and end "
  .. "with an alphanumeric character (e.g. 'example.com', regex used for "
  .. "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
  .. "[a-z0-9])?)*')"


describe("k8s.object", function()
  describe("new", function()
    it("returns apiVersion, kind and metadata.name", function()
      local obj = object.new("v1", "ConfigMap", "x-config")
      assert.same({ apiVersion = "v1", kind = "ConfigMap",
        metadata = { name = "x-config" } }, obj)
      assert.is_true(codec.is_object(obj))
      assert.is_true(codec.is_object(obj.metadata))
    end)
  end)

  describe("meta", function()
    it("returns the existing metadata", function()
      local obj = object.new("v1", "Service", "x")
      assert.equal(obj.metadata, object.meta(obj))
    end)

    it("returns a new metadata table when it is missing", function()
      local obj = {}
      local md = object.meta(obj)
      assert.equal(md, obj.metadata)
      assert.is_true(codec.is_object(md))
    end)
  end)

  describe("set_labels", function()
    it("returns obj with labels replaced by a copy", function()
      local obj = object.new("v1", "Service", "x")
      obj.metadata.labels = { old = "1" }
      local labels = { app = "x" }
      assert.equal(obj, object.set_labels(obj, labels))
      assert.same({ app = "x" }, obj.metadata.labels)
      labels.app = "changed"
      assert.equal("x", obj.metadata.labels.app)
    end)

    it("returns an empty object of labels when given nil", function()
      local obj = object.set_labels(object.new("v1", "Service", "x"), nil)
      assert.same({}, obj.metadata.labels)
      assert.is_true(codec.is_object(obj.metadata.labels))
    end)
  end)

  describe("merge_labels", function()
    it("returns obj with labels added, given values winning", function()
      local obj = object.new("v1", "Service", "x")
      object.set_labels(obj, { a = "1", b = "2" })
      object.merge_labels(obj, { b = "20", c = "30" })
      assert.same({ a = "1", b = "20", c = "30" }, obj.metadata.labels)
    end)

    it("creates metadata.labels when missing", function()
      local obj = object.merge_labels({}, { a = "1" })
      assert.same({ metadata = { labels = { a = "1" } } }, obj)
    end)
  end)

  describe("set_annotations", function()
    it("returns obj with annotations replaced", function()
      local obj = object.new("v1", "Service", "x")
      obj.metadata.annotations = { old = "1" }
      object.set_annotations(obj, { ["example.com/a"] = "b" })
      assert.same({ ["example.com/a"] = "b" }, obj.metadata.annotations)
    end)
  end)

  describe("merge_annotations", function()
    it("returns obj with annotations added", function()
      local obj = object.new("v1", "Service", "x")
      object.set_annotations(obj, { a = "1" })
      object.merge_annotations(obj, { b = "2" })
      object.merge_annotations(obj, nil)
      assert.same({ a = "1", b = "2" }, obj.metadata.annotations)
    end)
  end)

  describe("get_label", function()
    it("returns the value, or nil when absent", function()
      local obj = object.set_labels(object.new("v1", "Pod", "p"), { a = "1" })
      assert.equal("1", object.get_label(obj, "a"))
      assert.is_nil(object.get_label(obj, "b"))
      assert.is_nil(object.get_label({}, "a"))
      assert.is_nil(object.get_label(nil, "a"))
    end)
  end)

  describe("get_annotation", function()
    it("returns the value, or nil when absent", function()
      local obj = object.set_annotations(object.new("v1", "Pod", "p"),
        { a = "1" })
      assert.equal("1", object.get_annotation(obj, "a"))
      assert.is_nil(object.get_annotation(obj, "b"))
    end)
  end)

  describe("selector", function()
    it("returns matchLabels holding a copy of the labels", function()
      local labels = { app = "x" }
      local sel = object.selector(labels)
      assert.same({ matchLabels = { app = "x" } }, sel)
      labels.app = "y"
      assert.equal("x", sel.matchLabels.app)
    end)
  end)

  describe("matches", function()
    local labels = { app = "x", tier = "db" }
    local cases = {
      { "a nil selector", nil, true },
      { "an empty selector", {}, true },
      { "equal matchLabels", { matchLabels = { app = "x" } }, true },
      { "a differing matchLabels value", { matchLabels = { app = "y" } },
        false },
      { "a missing matchLabels key", { matchLabels = { zone = "a" } }, false },
      { "In with the value", { matchExpressions = { { key = "tier",
        operator = "In", values = { "web", "db" } } } }, true },
      { "In without the value", { matchExpressions = { { key = "tier",
        operator = "In", values = { "web" } } } }, false },
      { "In on a missing key", { matchExpressions = { { key = "zone",
        operator = "In", values = { "a" } } } }, false },
      { "NotIn without the value", { matchExpressions = { { key = "tier",
        operator = "NotIn", values = { "web" } } } }, true },
      { "NotIn with the value", { matchExpressions = { { key = "tier",
        operator = "NotIn", values = { "db" } } } }, false },
      { "NotIn on a missing key", { matchExpressions = { { key = "zone",
        operator = "NotIn", values = { "a" } } } }, true },
      { "Exists on a present key", { matchExpressions = { { key = "app",
        operator = "Exists" } } }, true },
      { "Exists on a missing key", { matchExpressions = { { key = "zone",
        operator = "Exists" } } }, false },
      { "DoesNotExist on a missing key", { matchExpressions = { { key = "zone",
        operator = "DoesNotExist" } } }, true },
      { "DoesNotExist on a present key", { matchExpressions = { { key = "app",
        operator = "DoesNotExist" } } }, false },
      { "an unknown operator", { matchExpressions = { { key = "app",
        operator = "Gt", values = { "1" } } } }, false },
      { "labels and expressions both holding", { matchLabels = { app = "x" },
        matchExpressions = { { key = "tier", operator = "Exists" } } }, true },
    }
    for _, case in ipairs(cases) do
      it("returns " .. tostring(case[3]) .. " when given " .. case[1],
        function()
          assert.equal(case[3], object.matches(case[2], labels))
        end)
    end

    it("returns false when labels are nil and the selector needs some",
      function()
        assert.is_false(object.matches({ matchLabels = { a = "1" } }, nil))
        assert.is_true(object.matches({}, nil))
      end)
  end)

  describe("key", function()
    it("returns namespace/name", function()
      assert.equal("ns/x", object.key("ns", "x"))
    end)

    it("returns the bare name when the namespace is nil or empty", function()
      assert.equal("x", object.key(nil, "x"))
      assert.equal("x", object.key("", "x"))
    end)
  end)

  describe("is_dns1123_label", function()
    local valid = { "a", "0", "my-name", "123-abc", "a1", string.rep("a", 63) }
    for _, s in ipairs(valid) do
      it("returns true when given " .. s:sub(1, 20), function()
        local ok, errs = object.is_dns1123_label(s)
        assert.is_true(ok)
        assert.is_nil(errs)
      end)
    end

    local invalid = {
      { "", { LABEL_REGEX_MSG } },
      { "A", { LABEL_REGEX_MSG } },
      { "-a", { LABEL_REGEX_MSG } },
      { "a-", { LABEL_REGEX_MSG } },
      { "a_b", { LABEL_REGEX_MSG } },
      { "a.b", { "must not contain dots" } },
      { string.rep("a", 64), { "must be no more than 63 characters" } },
      { string.rep("A", 64), { "must be no more than 63 characters",
        LABEL_REGEX_MSG } },
    }
    for _, case in ipairs(invalid) do
      it("returns false and apimachinery's messages when given \""
        .. case[1]:sub(1, 20) .. "\"", function()
        local ok, errs = object.is_dns1123_label(case[1])
        assert.is_false(ok)
        assert.same(case[2], errs)
        assert.is_true(codec.is_array(errs))
      end)
    end

    it("returns false when given a non-string", function()
      local ok, errs = object.is_dns1123_label(42)
      assert.is_false(ok)
      assert.same({ "must be a string" }, errs)
    end)
  end)

  describe("is_dns1123_subdomain", function()
    local valid = { "a", "example.com", "a-b.c-d.e", "x-config",
      string.rep("a", 63) .. "." .. string.rep("b", 63) }
    for _, s in ipairs(valid) do
      it("returns true when given " .. s:sub(1, 20), function()
        assert.is_true(object.is_dns1123_subdomain(s))
      end)
    end

    local too_long = string.rep(string.rep("a", 50) .. ".", 5) .. "abc"
    local invalid = {
      { "", { SUBDOMAIN_REGEX_MSG } },
      { "Example.com", { SUBDOMAIN_REGEX_MSG } },
      { "a..b", { SUBDOMAIN_REGEX_MSG } },
      { ".a", { SUBDOMAIN_REGEX_MSG } },
      { "a.", { SUBDOMAIN_REGEX_MSG } },
      { "a.-b", { SUBDOMAIN_REGEX_MSG } },
      { too_long, { "must be no more than 253 characters" } },
    }
    for _, case in ipairs(invalid) do
      it("returns false and apimachinery's messages when given \""
        .. case[1]:sub(1, 20) .. "\"", function()
        local ok, errs = object.is_dns1123_subdomain(case[1])
        assert.is_false(ok)
        assert.same(case[2], errs)
      end)
    end

    it("returns false when given a non-string", function()
      assert.is_false(object.is_dns1123_subdomain(nil))
    end)
  end)

  describe("child_name", function()
    it("returns parent-suffix", function()
      assert.equal("ditto-config", object.child_name("ditto", "config"))
    end)

    it("returns the parent when the suffix is nil or empty", function()
      assert.equal("ditto", object.child_name("ditto"))
      assert.equal("ditto", object.child_name("ditto", ""))
    end)

    it("returns a name of exactly 63 characters", function()
      local parent = string.rep("a", 56)
      assert.equal(63, #object.child_name(parent, "config"))
    end)

    it("returns nil, err when the name passes 63 characters", function()
      local name, err = object.child_name(string.rep("a", 57), "config")
      assert.is_nil(name)
      assert.matches("must be no more than 63 characters", err, 1, true)
    end)

    it("returns a long name when the limit is 253", function()
      local parent = string.rep("a", 200)
      assert.equal(207, #object.child_name(parent, "config", 253))
    end)

    it("returns nil, err when the name passes 253 characters", function()
      local name, err = object.child_name(string.rep("a", 250), "config",
        253)
      assert.is_nil(name)
      assert.matches("must be no more than 253 characters", err, 1, true)
    end)

    it("returns nil, err when the result is not a DNS-1123 name", function()
      local name, err = object.child_name("Ditto", "config")
      assert.is_nil(name)
      assert.matches("RFC 1123 label", err, 1, true)
      name, err = object.child_name("a.b", "config")
      assert.is_nil(name)
      assert.matches("must not contain dots", err, 1, true)
    end)

    it("returns nil, err when the parent is empty", function()
      local name, err = object.child_name("", "config")
      assert.is_nil(name)
      assert.matches("parent name", err)
    end)
  end)

  describe("owner_reference", function()
    local owner = { apiVersion = "dittofs.dittofs.com/v1alpha1",
      kind = "DittoServer", metadata = { name = "ditto", uid = "u-1" } }

    it("returns a controller reference by default", function()
      assert.same({ apiVersion = "dittofs.dittofs.com/v1alpha1",
        kind = "DittoServer", name = "ditto", uid = "u-1", controller = true,
        blockOwnerDeletion = true }, object.owner_reference(owner))
    end)

    it("returns the flags and uid given in opts", function()
      local ref = object.owner_reference(owner, { controller = false,
        block_owner_deletion = false, uid = "u-2" })
      assert.same({ false, false, "u-2" },
        { ref.controller, ref.blockOwnerDeletion, ref.uid })
    end)

    local missing = {
      { "apiVersion", { kind = "K", metadata = { name = "n", uid = "u" } } },
      { "kind", { apiVersion = "v1", metadata = { name = "n", uid = "u" } } },
      { "metadata.name", { apiVersion = "v1", kind = "K",
        metadata = { uid = "u" } } },
      { "metadata.uid", { apiVersion = "v1", kind = "K",
        metadata = { name = "n" } } },
    }
    for _, case in ipairs(missing) do
      it("returns nil, err when " .. case[1] .. " is missing", function()
        local ref, err = object.owner_reference(case[2])
        assert.is_nil(ref)
        assert.equal("owner " .. case[1] .. " must be a non-empty string",
          err)
      end)
    end

    it("returns nil, err when the owner is not a table", function()
      local ref, err = object.owner_reference("ditto")
      assert.is_nil(ref)
      assert.equal("owner must be a table", err)
    end)
  end)

  describe("find_owner_reference", function()
    local refs = {
      { apiVersion = "apps/v1", kind = "ReplicaSet", name = "rs", uid = "u-rs",
        controller = false },
      { apiVersion = "dittofs.dittofs.com/v1alpha1", kind = "DittoServer",
        name = "ditto", uid = "u-1", controller = true },
    }
    local obj = { metadata = { ownerReferences = refs } }

    it("returns the reference and its index when the uid matches", function()
      local ref, i = object.find_owner_reference(obj, { uid = "u-1" })
      assert.equal(refs[2], ref)
      assert.equal(2, i)
    end)

    it("returns the reference matching an owner object", function()
      local owner = { apiVersion = "dittofs.dittofs.com/v1alpha1",
        kind = "DittoServer", metadata = { name = "ditto", uid = "u-1" } }
      assert.equal(refs[2], object.find_owner_reference(obj, owner))
    end)

    it("returns the reference when group, kind and name match", function()
      local ref = object.find_owner_reference(obj, {
        apiVersion = "dittofs.dittofs.com/v1", kind = "DittoServer",
        name = "ditto" })
      assert.equal(refs[2], ref)
    end)

    it("returns the controller reference when asked for it", function()
      assert.equal(refs[2],
        object.find_owner_reference(obj, { controller = true }))
    end)

    it("returns nil when nothing matches", function()
      assert.is_nil(object.find_owner_reference(obj, { uid = "other" }))
      assert.is_nil(object.find_owner_reference(obj, { kind = "DittoServer",
        apiVersion = "other.io/v1" }))
      assert.is_nil(object.find_owner_reference(obj, { kind = "ReplicaSet",
        controller = true }))
    end)

    it("returns nil when the object has no references", function()
      assert.is_nil(object.find_owner_reference({}, { uid = "u-1" }))
      assert.is_nil(object.find_owner_reference(nil, { uid = "u-1" }))
      assert.is_nil(object.find_owner_reference(obj, nil))
    end)
  end)

  describe("env", function()
    it("returns name and a string value", function()
      assert.same({ name = "A", value = "1" }, object.env("A", "1"))
      assert.same({ name = "N", value = "2049" }, object.env("N", 2049))
      assert.same({ name = "B", value = "true" }, object.env("B", true))
    end)
  end)

  describe("env_from_secret", function()
    it("returns a secretKeyRef", function()
      assert.same({ name = "AWS_ACCESS_KEY_ID", valueFrom = { secretKeyRef = {
        name = "s3-creds", key = "accessKeyId" } } },
        object.env_from_secret("AWS_ACCESS_KEY_ID", "s3-creds",
          "accessKeyId"))
    end)

    it("returns optional when given", function()
      local env = object.env_from_secret("A", "s", "k", true)
      assert.is_true(env.valueFrom.secretKeyRef.optional)
    end)
  end)

  describe("env_from_config_map", function()
    it("returns a configMapKeyRef", function()
      assert.same({ name = "A", valueFrom = { configMapKeyRef = {
        name = "cm", key = "k", optional = false } } },
        object.env_from_config_map("A", "cm", "k", false))
    end)
  end)

  describe("env_from_field", function()
    it("returns a fieldRef", function()
      assert.same({ name = "POD_NAMESPACE", valueFrom = { fieldRef = {
        fieldPath = "metadata.namespace" } } },
        object.env_from_field("POD_NAMESPACE", "metadata.namespace"))
    end)
  end)

  describe("container_port", function()
    it("returns a TCP port by default", function()
      assert.same({ name = "nfs", containerPort = 2049, protocol = "TCP" },
        object.container_port("nfs", 2049))
    end)

    it("returns the given protocol", function()
      assert.equal("UDP", object.container_port("d", 53, "UDP").protocol)
    end)
  end)

  describe("service_port", function()
    it("returns targetPort = port by default", function()
      assert.same({ name = "nfs", port = 2049, targetPort = 2049,
        protocol = "TCP" }, object.service_port("nfs", 2049))
    end)

    it("returns a named targetPort when given", function()
      assert.same({ name = "metrics", port = 9090, targetPort = "metrics",
        protocol = "TCP" }, object.service_port("metrics", 9090, "metrics"))
    end)
  end)

  describe("volume_mount", function()
    it("returns name and mountPath", function()
      assert.same({ name = "config", mountPath = "/config" },
        object.volume_mount("config", "/config"))
    end)

    it("returns readOnly and subPath when given", function()
      assert.same({ name = "c", mountPath = "/c/config.yaml", readOnly = true,
        subPath = "config.yaml" }, object.volume_mount("c", "/c/config.yaml",
        { read_only = true, sub_path = "config.yaml" }))
    end)
  end)

  describe("volume_config_map", function()
    it("returns a configMap volume", function()
      assert.same({ name = "config", configMap = { name = "x-config" } },
        object.volume_config_map("config", "x-config"))
    end)

    it("returns items as a codec array and defaultMode", function()
      local v = object.volume_config_map("config", "x-config", { items = {
        { key = "config.yaml", path = "config.yaml" } }, default_mode = 420 })
      assert.same({ name = "config", configMap = { name = "x-config",
        defaultMode = 420, items = { { key = "config.yaml",
        path = "config.yaml" } } } }, v)
      assert.is_true(codec.is_array(v.configMap.items))
    end)
  end)

  describe("volume_secret", function()
    it("returns a secret volume", function()
      assert.same({ name = "creds", secret = { secretName = "s3" } },
        object.volume_secret("creds", "s3"))
    end)
  end)

  describe("volume_pvc", function()
    it("returns a persistentVolumeClaim volume", function()
      assert.same({ name = "data", persistentVolumeClaim = {
        claimName = "data-0" } }, object.volume_pvc("data", "data-0"))
      assert.is_true(object.volume_pvc("d", "c", true)
        .persistentVolumeClaim.readOnly)
    end)
  end)

  describe("builders with the real codec", function()
    it("encode to Kubernetes JSON, empty containers kept", function()
      if codec.json_encode == nil then
        pending("build/codec.so is not built; the shim has no JSON")
        return
      end
      assert.equal('{"emptyDir":{},"name":"tmp"}',
        codec.json_encode(object.volume_empty_dir("tmp")))
      local obj = object.set_labels(object.new("v1", "ConfigMap", "c"), nil)
      assert.equal('{"apiVersion":"v1","kind":"ConfigMap",'
        .. '"metadata":{"labels":{},"name":"c"}}', codec.json_encode(obj))
      assert.equal('{"configMap":{"items":[],"name":"c"},"name":"v"}',
        codec.json_encode(object.volume_config_map("v", "c", { items = {} })))
    end)
  end)

  describe("volume_empty_dir", function()
    it("returns an emptyDir volume that encodes as an object", function()
      local v = object.volume_empty_dir("tmp")
      assert.same({ name = "tmp", emptyDir = {} }, v)
      assert.is_true(codec.is_object(v.emptyDir))
    end)

    it("returns medium and sizeLimit when given", function()
      assert.same({ name = "tmp", emptyDir = { medium = "Memory",
        sizeLimit = "64Mi" } }, object.volume_empty_dir("tmp",
        { medium = "Memory", size_limit = "64Mi" }))
    end)
  end)
end)
