--- crd_spec: crd/dittoserver.yaml against the policy's schema table.
--
-- The CRD is the one source of truth for the DittoServer API. The policy
-- reads its schema (policies/dittoserver_schema.lua) from the CRD the core
-- embeds (codec.crd_schema) for defaulting and type checks; these specs
-- fail on any disagreement with the file (a field, a type, a default, a
-- limit present on one side only), and check the CRD is something
-- `kubectl explain` and a 1.20 apiserver like.
local codec = require("codec")
local schema = require("dittoserver_schema")
local policy = require("dittoserver")

local CRD_PATH = "crd/dittoserver.yaml"


local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function load_crd()
  local crd, err = codec.yaml_decode(read_file(CRD_PATH))
  assert(crd, err)
  return crd
end

local function version_of(crd)
  return crd.spec.versions[1]
end

local function root_schema(crd)
  return version_of(crd).schema.openAPIV3Schema
end

-- Plain-data copy without descriptions and without codec markers, so two
-- schemas compare with ==.
local function strip(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if k ~= "description" then
      out[k] = strip(x)
    end
  end
  return out
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- Every difference between a and b as "path: ..." lines, both ways.
local function diff(a, b, path, out)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b and not (type(a) == "number" and type(b) == "number"
        and math.type(a) == math.type(b) and a == b) then
      out[#out + 1] = string.format("%s: CRD has %s, schema table has %s",
        path, tostring(a), tostring(b))
    end
    return out
  end
  local keys = {}
  for k in pairs(a) do keys[k] = true end
  for k in pairs(b) do keys[k] = true end
  for _, k in ipairs(sorted_keys(keys)) do
    local sub = type(k) == "number" and string.format("%s[%d]", path, k)
      or path .. "." .. k
    if a[k] == nil then
      out[#out + 1] = sub .. ": only in the schema table"
    elseif b[k] == nil then
      out[#out + 1] = sub .. ": only in the CRD"
    else
      diff(a[k], b[k], sub, out)
    end
  end
  return out
end

-- Calls fn(node, path) for every schema node under node.
local function walk(node, path, fn)
  fn(node, path)
  for _, k in ipairs(sorted_keys(node.properties or {})) do
    walk(node.properties[k], path .. "." .. k, fn)
  end
  if node.items then
    walk(node.items, path .. "[]", fn)
  end
  if type(node.additionalProperties) == "table" then
    walk(node.additionalProperties, path .. "{}", fn)
  end
end


describe("crd/dittoserver.yaml", function()
  local crd = load_crd()

  describe("identity", function()
    it("is an apiextensions.k8s.io/v1 CRD for dittofs.dittofs.com", function()
      assert.equal("apiextensions.k8s.io/v1", crd.apiVersion)
      assert.equal("CustomResourceDefinition", crd.kind)
      assert.equal("dittoservers.dittofs.dittofs.com", crd.metadata.name)
      assert.equal("dittofs.dittofs.com", crd.spec.group)
      assert.equal("Namespaced", crd.spec.scope)
    end)

    it("names DittoServer, dittoservers, dittoserver, short name ditto",
      function()
        assert.same({
          kind = "DittoServer", listKind = "DittoServerList",
          plural = "dittoservers", singular = "dittoserver",
          shortNames = { "ditto" },
        }, strip(crd.spec.names))
      end)

    it("serves and stores exactly v1alpha1 with a status subresource",
      function()
        assert.equal(1, #crd.spec.versions)
        local v = version_of(crd)
        assert.equal("v1alpha1", v.name)
        assert.is_true(v.served)
        assert.is_true(v.storage)
        assert.same({ status = {} }, strip(v.subresources))
      end)

    it("has the printer columns Replicas, Ready, NFS Endpoint, Phase, Age",
      function()
        local got = {}
        for i, c in ipairs(version_of(crd).additionalPrinterColumns) do
          got[i] = { c.name, c.type, c.jsonPath }
        end
        assert.same({
          { "Replicas", "integer", ".spec.replicas" },
          { "Ready", "integer", ".status.availableReplicas" },
          { "NFS Endpoint", "string", ".status.nfsEndpoint" },
          { "Phase", "string", ".status.phase" },
          { "Age", "date", ".metadata.creationTimestamp" },
        }, got)
      end)
  end)

  describe("schema against dittoserver_schema.lua", function()
    local root = root_schema(crd)

    it("has the same spec schema: fields, types, defaults and limits",
      function()
        local d = diff(strip(root.properties.spec), strip(schema.SPEC),
          "spec", {})
        assert.same({}, d)
      end)

    it("has the same status schema", function()
      local d = diff(strip(root.properties.status), strip(schema.STATUS),
        "status", {})
      assert.same({}, d)
    end)

    it("requires spec, spec.image and spec.storage.metadataSize", function()
      assert.same({ "spec" }, strip(root.required))
      assert.same({ "image", "storage" }, strip(root.properties.spec.required))
      assert.same({ "metadataSize" },
        strip(root.properties.spec.properties.storage.required))
    end)

    it("reports a default that differs (the comparison is live)", function()
      local changed = strip(schema.SPEC)
      changed.properties.nfsPort.default = 2050
      local d = diff(strip(root.properties.spec), changed, "spec", {})
      assert.same({ "spec.properties.nfsPort.default: CRD has 2049, "
        .. "schema table has 2050" }, d)
    end)

    it("reports a field present on one side only", function()
      local changed = strip(schema.SPEC)
      changed.properties.extra = { type = "string" }
      local d = diff(strip(root.properties.spec), changed, "spec", {})
      assert.same({ "spec.properties.extra: only in the schema table" }, d)
    end)
  end)

  describe("schema quality", function()
    local root = root_schema(crd)

    it("describes every field (kubectl explain)", function()
      local missing = {}
      walk(root, "", function(node, path)
        -- array items and map values are explained by their parent
        if path ~= ".metadata" and path:sub(-2) ~= "{}"
            and path:sub(-2) ~= "[]"
            and (node.description == nil or node.description == "") then
          missing[#missing + 1] = path
        end
      end)
      assert.same({}, missing)
    end)

    it("is structural: every node has a type (or int-or-string)", function()
      local bad = {}
      walk(root, "", function(node, path)
        if node.type == nil and not node["x-kubernetes-int-or-string"] then
          bad[#bad + 1] = path
        end
      end)
      assert.same({}, bad)
    end)

    -- The CEL rules (x-kubernetes-validations) are the one thing a 1.20
    -- apiserver lacks (README, Validation); everything else must be 1.20's.
    it("uses nothing a 1.20 apiserver lacks but x-kubernetes-validations",
      function()
        local known = {}
        for _, k in ipairs({ "type", "format", "description", "default",
          "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
          "minItems", "maxItems", "required", "properties", "items",
          "additionalProperties", "anyOf", "nullable",
          "x-kubernetes-preserve-unknown-fields",
          "x-kubernetes-int-or-string", "x-kubernetes-list-type",
          "x-kubernetes-list-map-keys", "x-kubernetes-validations" }) do
          known[k] = true
        end
        local bad = {}
        walk(root, "", function(node, path)
          for k in pairs(node) do
            if not known[k] then
              bad[#bad + 1] = path .. "." .. k
            end
          end
        end)
        assert.same({}, bad)
      end)

    it("writes each CEL rule as rule, message and fieldPath only", function()
      local rules, bad = 0, {}
      walk(root, "", function(node, path)
        for i, r in ipairs(node["x-kubernetes-validations"] or {}) do
          rules = rules + 1
          for k in pairs(r) do
            -- messageExpression and reason would need a CEL evaluator in
            -- spec/cel_check.sh to compare with validate()'s text
            if k ~= "rule" and k ~= "message" and k ~= "fieldPath" then
              bad[#bad + 1] = string.format("%s[%d].%s", path, i, k)
            end
          end
          if type(r.message) ~= "string" or r.message == ""
              or r.message:find("\n") then
            bad[#bad + 1] = string.format("%s[%d]: no one-line message",
              path, i)
          end
        end
      end)
      assert.same({}, bad)
      assert.is_true(rules >= 10)
    end)

    it("lists only declared properties as required", function()
      local bad = {}
      walk(root, "", function(node, path)
        for _, r in ipairs(node.required or {}) do
          if not (node.properties and node.properties[r]) then
            bad[#bad + 1] = path .. "." .. r
          end
        end
      end)
      assert.same({}, bad)
    end)

    it("has defaults that pass their own schema", function()
      local bad = {}
      walk(schema.SPEC, "spec", function(node, path)
        if node.default ~= nil then
          local errs = schema.check(node.default, node, path)
          for _, e in ipairs(errs) do
            bad[#bad + 1] = e
          end
        end
      end)
      assert.same({}, bad)
    end)

    it("keeps status conditions a map list keyed by a required type",
      function()
        local c = root.properties.status.properties.conditions
        assert.equal("map", c["x-kubernetes-list-type"])
        assert.same({ "type" }, strip(c["x-kubernetes-list-map-keys"]))
        assert.truthy(strip(c.items.required)[1] == "type")
      end)

    it("enumerates exactly the phases status() produces", function()
      local enum = strip(root.properties.status.properties.phase.enum)
      table.sort(enum)
      assert.same({ "Failed", "Pending", "Running", "Stopped" }, enum)
    end)
  end)

  describe("defaulting (apply_defaults) as the apiserver does", function()
    it("fills top-level defaults and descends into new objects", function()
      local spec = { image = "x", storage = { metadataSize = "1Gi" } }
      schema.apply_defaults(spec, schema.SPEC)
      assert.equal(1, spec.replicas)
      assert.equal(2049, spec.nfsPort)
      assert.equal("ClusterIP", spec.service.type)
      assert.is_nil(spec.config)
    end)

    it("fills nested defaults only under present parents", function()
      local spec = {
        image = "x", storage = { metadataSize = "1Gi" },
        config = { shares = { { name = "a", metadataStore = "m",
          contentStore = "c", identityMapping = {} } } },
      }
      schema.apply_defaults(spec, schema.SPEC)
      local share = spec.config.shares[1]
      assert.equal("/export", share.exportPath)
      assert.same({ "anonymous", "unix" }, share.allowedAuthMethods)
      assert.equal(65534, share.identityMapping.anonymousUID)
      assert.is_nil(share.rootDirectoryAttributes)
    end)

    it("keeps values that are present, false and 0 included", function()
      local spec = { image = "x", replicas = 0, storage = {
        metadataSize = "1Gi" }, service = { type = "NodePort" } }
      schema.apply_defaults(spec, schema.SPEC)
      assert.equal(0, spec.replicas)
      assert.equal("NodePort", spec.service.type)
    end)

    it("keeps unknown fields and defaults a null (no pruning)", function()
      local spec = { image = "x", storage = { metadataSize = "1Gi" },
        replicas = codec.null, bogus = { a = 1 } }
      schema.apply_defaults(spec, schema.SPEC)
      assert.equal(1, spec.replicas)
      assert.same({ a = 1 }, spec.bogus)
    end)

    it("is the core's walk (codec.crd_default), which passes non-tables",
      function()
        assert.equal(7, codec.crd_default(7, schema.SPEC))
        local v = { image = "x" }
        assert.equal(v, codec.crd_default(v, nil))
        assert.is_nil(v.replicas)
        assert.equal(v, codec.crd_default(v, schema.SPEC))
        assert.equal(1, v.replicas)
      end)

    it("produces a default config the schema accepts", function()
      local spec = { image = "x", storage = { metadataSize = "1Gi" } }
      schema.apply_defaults(spec, schema.SPEC)
      local config = policy.default_config(spec)
      local errs = schema.check(config, schema.SPEC.properties.config,
        "spec.config")
      assert.same({}, errs)
    end)
  end)

  describe("checking (codec.crd_validate, the core's walk)", function()
    local node = { type = "object", required = { "team" },
      properties = { team = { type = "string", pattern = "^[a-z]+$" },
        zones = { type = "array", items = { type = "string" } },
        size = { type = "integer", minimum = 1 } } }

    it("speaks the apiserver's messages, patterns included", function()
      local errs, warns = codec.crd_validate({ team = "A", size = 0 }, node,
        "spec.policy")
      assert.same({
        "spec.policy.size: Invalid value: 0: spec.policy.size in body should "
          .. "be greater than or equal to 1",
        "spec.policy.team: Invalid value: \"A\": spec.policy.team in body "
          .. "should match '^[a-z]+$'" }, errs)
      assert.same({}, warns)
      assert.is_true(codec.is_array(errs) and codec.is_array(warns))
    end)

    it("counts a null as absent and a plain {} as an empty list", function()
      local errs = codec.crd_validate({ team = codec.null, zones = {} }, node,
        "p")
      assert.same({ "p.team: Required value" }, errs)
    end)

    it("reports unknown fields as warnings, as crd_default words them",
      function()
        local errs, warns = codec.crd_validate({ team = "a", x = { y = 1 } },
          node, "spec.policy")
        assert.same({}, errs)
        assert.same({ 'unknown field "spec.policy.x"' }, warns)
      end)

    it("walks the keys in byte order however many (on the stack to 32)",
      function()
        for _, n in ipairs({ 3, 32, 33, 40 }) do
          local v, want = { team = "a", size = 0 }, {}
          for i = 1, n do
            v[string.format("k%02d", i)] = i
            want[#want + 1] = string.format('unknown field "p.k%02d"', i)
          end
          local errs, warns = codec.crd_validate(v, node, "p")
          assert.same({ "p.size: Invalid value: 0: p.size in body should be "
            .. "greater than or equal to 1" }, errs)
          assert.same(want, warns)
        end
      end)

    it("looks a key holding a NUL up by its C string, as it always did",
      function()
        -- "size\0x" is read as "size" (absent here: no value to check)
        local errs, warns = codec.crd_validate(
          { team = "a", ["size\0x"] = "no" }, node, "p")
        assert.same({}, errs)
        assert.same({}, warns)
        errs = codec.crd_validate({ team = "a", ["size\0x"] = "no", size = 0 },
          node, "p")
        assert.equal(2, #errs)
      end)

    it("gives a pattern the same verdict on every use (kept compiled)",
      function()
        for _ = 1, 3 do
          assert.same({}, (codec.crd_validate({ team = "abc" }, node, "p")))
          assert.same({ "p.team: Invalid value: \"a1\": p.team in body "
            .. "should match '^[a-z]+$'" },
            (codec.crd_validate({ team = "a1" }, node, "p")))
        end
      end)

    it("skips a pattern that does not compile, every time", function()
      local n = { type = "string", pattern = "([" }
      for _ = 1, 2 do
        assert.same({}, (codec.crd_validate("anything", n, "p")))
      end
    end)

    it("checks patterns past the number the state keeps compiled",
      function()
        -- 200 distinct patterns: more than the core keeps compiled per
        -- state, so the later ones are compiled for one match each
        for i = 1, 200 do
          local n = { type = "string", pattern = "^x{" .. i .. "}$" }
          local long = string.rep("x", i + 1)
          assert.same({}, (codec.crd_validate(string.rep("x", i), n, "p")))
          assert.same({ "p: Invalid value: \"" .. long .. "\": p in body "
            .. "should match '^x{" .. i .. "}$'" },
            (codec.crd_validate(long, n, "p")))
        end
        local bad = { type = "string", pattern = "(x[" }
        assert.same({}, (codec.crd_validate("anything", bad, "p")))
      end)

    it("is what dittoserver_schema.check runs", function()
      local v = { image = "", storage = { metadataSize = "1Gi" } }
      assert.same({ codec.crd_validate(v, schema.SPEC, "spec") },
        { schema.check(v, schema.SPEC, "spec") })
    end)
  end)

  describe("a schema node named by its field path", function()
    local helper = require("policy_helper")

    -- The policy of a temporary directory holding dittoserver.lua = text,
    -- loaded as the operator loads it (fresh modules).
    local function load_policy(text)
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      local f = assert(io.open(dir .. "/dittoserver.lua", "wb"))
      f:write(text)
      f:close()
      local ok, loaded = pcall(helper.load, dir)
      os.remove(dir .. "/dittoserver.lua")
      os.remove(dir)
      assert(ok, loaded)
      return loaded
    end

    it("validates as the node itself does", function()
      local v = { image = "", replicas = -1, x = 1,
        storage = { metadataSize = "1G" } }
      assert.same({ codec.crd_validate(v, schema.SPEC, "spec") },
        { codec.crd_validate(v, "spec", "spec") })
      assert.same({ codec.crd_validate(v, schema.SPEC.properties.storage,
        "s") }, { codec.crd_validate(v, "spec.storage", "s") })
    end)

    it("defaults as the node itself does", function()
      local function config()
        return { shares = { { name = "a" } }, backends = {} }
      end
      assert.same(
        codec.crd_default(config(), schema.SPEC.properties.config),
        codec.crd_default(config(), "spec.config"))
      assert.same(codec.crd_default({ spec = {} }, codec.crd_schema()),
        codec.crd_default({ spec = {} }, ""))
    end)

    it("raises for a field the schema lacks", function()
      assert.has_error(function()
        codec.crd_validate({}, "spec.nope")
      end, 'crd: the schema has no field "spec.nope"')
      assert.has_error(function()
        codec.crd_default({}, "spec.image.x")
      end, 'crd: the schema has no field "spec.image.x"')
      assert.has_error(function()
        codec.crd_default({}, "spec.")
      end, 'crd: the schema has no field "spec."')
    end)

    it("is what dittoserver_schema.node gives until SPEC is read",
      function()
        local fresh = load_policy('return require("dittoserver_schema")')
        assert.equal("spec", fresh.node("spec"))
        assert.equal("spec.config", fresh.node("spec.config"))
        local spec = fresh.SPEC
        assert.equal(spec, fresh.node("spec"))
        assert.equal(spec.properties.config, fresh.node("spec.config"))
        assert.equal(fresh.STATUS, fresh.node("status"))
        assert.same(strip(schema.SPEC), strip(spec))
      end)

    it("leaves the default policy honouring a change to SPEC", function()
      local custom = load_policy([[
        local schema = require("dittoserver_schema")
        schema.SPEC.properties.image.maxLength = 3
        return require("dittoserver.default").new()
      ]])
      local errs = custom.validate({ metadata = { name = "a" },
        spec = { image = "abcd", storage = { metadataSize = "1Gi" } } })
      assert.same({ 'spec.image: Invalid value: "abcd": spec.image in '
        .. "body should be at most 3 chars long" }, errs)
    end)
  end)
end)
