--- dittoserver_spec: the default DittoServer policy (policies/dittoserver.lua).
--
-- Table-driven: every sample in deploy/samples renders to the objects in
-- spec/lua/fixtures/dittoserver/<sample>.objects.yaml (reviewed by eye
-- against the upstream reference; regenerate with
-- DITTOFS_UPDATE_FIXTURES=1 and review the diff), every validation message,
-- status for every phase and condition, determinism.
local codec = require("codec")
local policy = require("dittoserver")
local schema = require("dittoserver_schema")

local SAMPLES_DIR = "deploy/samples"
local FIXTURES_DIR = "spec/lua/fixtures/dittoserver"
local SAMPLES = {
  "dittoserver.yaml",
  "dittoserver-s3.yaml",
  "dittoserver-cache.yaml",
  "dittoserver-shares.yaml",
  "dittoserver-nodeport.yaml",
  "dittoserver-loadbalancer.yaml",
  "dittoserver-custom-port.yaml",
  "dittoserver-stopped.yaml",
}
local UPDATE = os.getenv("DITTOFS_UPDATE_FIXTURES") == "1"


local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The DittoServer document of a YAML file (samples may carry a Secret).
local function load_ds(path)
  local docs = assert(codec.yaml_decode_all(read_file(path)))
  for _, d in ipairs(docs) do
    if type(d) == "table" and d.kind == "DittoServer" then
      return d
    end
  end
  error("no DittoServer in " .. path)
end

-- JSON round trip: the same markers on both sides of a comparison.
local function norm(v)
  return assert(codec.json_decode(codec.json_encode(v)))
end

local function ctx_for(ds, extra)
  local ctx = {
    name = ds.metadata.name,
    namespace = ds.metadata.namespace or "default",
    cluster_domain = "cluster.local",
    operator_version = "0.1.0",
  }
  for k, v in pairs(extra or {}) do
    ctx[k] = v
  end
  return ctx
end

local function render(ds, extra_ctx)
  return policy.render(ds, ctx_for(ds, extra_ctx))
end

local function find(objects, kind, name)
  for _, o in ipairs(objects) do
    if o.kind == kind and o.metadata.name == name then
      return o
    end
  end
  return nil
end

local function config_of(objects, name)
  local cm = find(objects, "ConfigMap", name .. "-config")
  return assert(codec.yaml_decode(cm.data["config.yaml"]))
end

local function container_of(objects, name)
  return find(objects, "StatefulSet", name).spec.template.spec.containers[1]
end

-- observed children as the core would pass them: kind -> name -> object.
local function observe(objects, ready)
  local observed = { ConfigMap = {}, Service = {}, StatefulSet = {} }
  for _, o in ipairs(objects) do
    local copy = norm(o)
    if o.kind == "StatefulSet" then
      copy.status = { replicas = o.spec.replicas, readyReplicas = ready }
    end
    observed[o.kind][o.metadata.name] = copy
  end
  return observed
end

-- A valid DittoServer with an explicit config, as plain tables.
local function base_ds()
  return {
    apiVersion = "dittofs.dittofs.com/v1alpha1",
    kind = "DittoServer",
    metadata = { name = "ds", namespace = "ns", generation = 1 },
    spec = {
      image = "ghcr.io/marmos91/dittofs:latest",
      storage = { metadataSize = "10Gi", contentSize = "20Gi" },
      config = {
        backends = {
          { name = "badger-metadata", type = "badger" },
          { name = "local-content", type = "local" },
          { name = "s3-content", type = "s3",
            config = { bucket = "b" },
            credentialsSecretRef = { name = "creds" } },
        },
        caches = { { name = "c1", memory = { maxSize = "1Gi" } } },
        shares = {
          { name = "a", exportPath = "/a", metadataStore = "badger-metadata",
            contentStore = "local-content" },
          { name = "b", exportPath = "/b", metadataStore = "badger-metadata",
            contentStore = "s3-content", cache = "c1" },
        },
      },
    },
  }
end

-- The README sample as plain tables (no spec.config).
local function readme_ds()
  return load_ds(SAMPLES_DIR .. "/dittoserver.yaml")
end


describe("dittoserver policy", function()

  describe("samples", function()
    for _, file in ipairs(SAMPLES) do
      local path = SAMPLES_DIR .. "/" .. file
      local fixture = FIXTURES_DIR .. "/"
        .. file:gsub("%.yaml$", ".objects.yaml")

      it("accepts " .. file .. " without errors or warnings", function()
        local errs, warns = policy.validate(load_ds(path))
        assert.same({}, norm(errs))
        assert.same({}, norm(warns))
      end)

      it("renders " .. file .. " as in its fixture", function()
        local objects = render(load_ds(path))
        if UPDATE then
          write_file(fixture, codec.yaml_encode_all(objects))
        end
        local want = assert(codec.yaml_decode_all(read_file(fixture)))
        assert.same(norm(want), norm(objects))
      end)

      it("renders " .. file .. " the same with CRD defaults applied",
        function()
          local raw = load_ds(path)
          local defaulted = load_ds(path)
          schema.apply_defaults(defaulted.spec, schema.SPEC)
          assert.equal(codec.json_encode(render(raw)),
            codec.json_encode(render(defaulted)))
        end)
    end
  end)

  describe("render", function()
    it("is deterministic: twice -> byte-identical JSON", function()
      for _, file in ipairs(SAMPLES) do
        local a = codec.json_encode(render(load_ds(SAMPLES_DIR .. "/" .. file)))
        local b = codec.json_encode(render(load_ds(SAMPLES_DIR .. "/" .. file)))
        assert.equal(a, b)
      end
      local ds = base_ds()
      assert.equal(codec.json_encode(render(ds)), codec.json_encode(render(ds)))
    end)

    it("does not modify its input", function()
      local ds = base_ds()
      local before = codec.json_encode(ds)
      render(ds)
      policy.validate(ds)
      policy.status(ds, {}, ctx_for(ds))
      assert.equal(before, codec.json_encode(ds))
    end)

    it("returns ConfigMap, Service, headless Service, StatefulSet in order",
      function()
        local got = {}
        for i, o in ipairs(render(readme_ds())) do
          got[i] = o.apiVersion .. " " .. o.kind .. " " .. o.metadata.name
        end
        assert.same({
          "v1 ConfigMap dittofs-sample-config",
          "v1 Service dittofs-sample",
          "v1 Service dittofs-sample-headless",
          "apps/v1 StatefulSet dittofs-sample",
        }, got)
      end)

    it("governs the StatefulSet by the headless Service", function()
      local objects = render(readme_ds())
      local sts = find(objects, "StatefulSet", "dittofs-sample")
      local headless = find(objects, "Service", "dittofs-sample-headless")
      assert.equal("dittofs-sample-headless", sts.spec.serviceName)
      assert.equal("None", headless.spec.clusterIP)
      assert.is_true(headless.spec.publishNotReadyAddresses)
    end)

    it("enables the server's metrics on the advertised port 9090", function()
      local objects = render(readme_ds())
      local config = config_of(objects, "dittofs-sample")
      assert.same({ enabled = true, port = 9090 }, norm(config.server.metrics))
      local svc = find(objects, "Service", "dittofs-sample")
      assert.same({ name = "metrics", port = 9090, targetPort = 9090,
        protocol = "TCP" }, norm(svc.spec.ports[2]))
    end)

    it("annotates the pod template with the FNV-1a 64 of config.yaml",
      function()
        local objects = render(readme_ds())
        local cm = find(objects, "ConfigMap", "dittofs-sample-config")
        local sts = find(objects, "StatefulSet", "dittofs-sample")
        assert.equal(policy.fnv1a64(cm.data["config.yaml"]),
          sts.spec.template.metadata.annotations[
            "dittofs.dittofs.com/config-hash"])
      end)

    it("hashes with FNV-1a 64 (reference vectors)", function()
      assert.equal("cbf29ce484222325", policy.fnv1a64(""))
      assert.equal("af63dc4c8601ec8c", policy.fnv1a64("a"))
      assert.equal("85944171f73967e8", policy.fnv1a64("foobar"))
    end)

    it("changes the config hash with the config, not with other fields",
      function()
        local function hash(mutate)
          local ds = readme_ds()
          mutate(ds.spec)
          local sts = find(render(ds), "StatefulSet", "dittofs-sample")
          return sts.spec.template.metadata.annotations[
            "dittofs.dittofs.com/config-hash"]
        end
        local base = hash(function() end)
        assert.not_equal(base, hash(function(s) s.nfsPort = 2050 end))
        assert.equal(base, hash(function(s) s.resources = nil end))
        assert.equal(base, hash(function(s) s.image = "other:1" end))
      end)

    it("keeps local content on the metadata volume without contentSize",
      function()
        local ds = readme_ds()
        ds.spec.storage.contentSize = nil
        local objects = render(ds)
        local config = config_of(objects, "dittofs-sample")
        assert.equal("/data/metadata/content",
          config.content.stores["local-content"].filesystem.path)
        local sts = find(objects, "StatefulSet", "dittofs-sample")
        assert.equal(1, #sts.spec.volumeClaimTemplates)
        local mounts = {}
        for _, m in ipairs(sts.spec.template.spec.containers[1].volumeMounts)
        do
          mounts[#mounts + 1] = m.mountPath
        end
        assert.same({ "/config", "/data/metadata" }, mounts)
      end)

    it("puts default local content on the content volume when there is one",
      function()
        local objects = render(readme_ds())
        local config = config_of(objects, "dittofs-sample")
        assert.equal("/data/content",
          config.content.stores["local-content"].filesystem.path)
        assert.equal("/data/metadata",
          config.metadata.stores["badger-metadata"].badger.db_path)
        assert.equal("/export", config.shares[1].name)
      end)

    it("passes S3 credentials only as Secret-backed env vars", function()
      local ds = load_ds(SAMPLES_DIR .. "/dittoserver-s3.yaml")
      local objects = render(ds)
      local c = container_of(objects, "dittofs-s3")
      assert.same({
        { name = "DITTOFS_CONTENT_STORES_S3-CONTENT_S3_ACCESS_KEY_ID",
          valueFrom = { secretKeyRef = { name = "dittofs-s3-credentials",
            key = "access_key_id" } } },
        { name = "DITTOFS_CONTENT_STORES_S3-CONTENT_S3_SECRET_ACCESS_KEY",
          valueFrom = { secretKeyRef = { name = "dittofs-s3-credentials",
            key = "secret_access_key" } } },
      }, norm(c.env))
      local config = config_of(objects, "dittofs-s3")
      -- empty placeholders so viper binds the env overrides
      assert.same({ bucket = "dittofs-bucket", region = "eu-north-1",
        access_key_id = "", secret_access_key = "" },
        norm(config.content.stores["s3-content"].s3))
      local text = find(objects, "ConfigMap", "dittofs-s3-config")
        .data["config.yaml"]
      assert.is_nil(text:find("REPLACE_WITH", 1, true))
      assert.is_nil(text:find("dittofs-s3-credentials", 1, true))
    end)

    it("names the credential env vars after the backend", function()
      assert.equal("DITTOFS_CONTENT_STORES_MY-S3_S3_SECRET_ACCESS_KEY",
        policy.s3_env_name("my-s3", "secret_access_key"))
    end)

    it("converts cache sizes to integer bytes", function()
      local ds = load_ds(SAMPLES_DIR .. "/dittoserver-cache.yaml")
      local config = config_of(render(ds), "dittofs-cache")
      assert.same({
        type = "memory",
        memory = { max_size = 1073741824 },
        prefetch = { enabled = true, max_file_size = 104857600,
          chunk_size = 524288 },
        flusher = { sweep_interval = "10s", flush_timeout = "30s",
          flush_pool_size = 4 },
      }, norm(config.cache.stores["main-cache"]))
      assert.equal("main-cache", config.shares[1].cache)
    end)

    it("uses nfsPort everywhere the NFS port appears", function()
      local ds = load_ds(SAMPLES_DIR .. "/dittoserver-custom-port.yaml")
      local objects = render(ds)
      local c = container_of(objects, "dittofs-port")
      assert.same({ name = "nfs", containerPort = 12049, protocol = "TCP" },
        norm(c.ports[1]))
      assert.equal("nfs", c.livenessProbe.tcpSocket.port)
      assert.equal("nfs", c.readinessProbe.tcpSocket.port)
      for _, svc in ipairs({ "dittofs-port", "dittofs-port-headless" }) do
        assert.same({ name = "nfs", port = 12049, targetPort = 12049,
          protocol = "TCP" }, norm(find(objects, "Service", svc).spec.ports[1]))
      end
      assert.equal(12049, config_of(objects, "dittofs-port").adapters.nfs.port)
    end)

    it("sends integer quantities as strings (server-side apply needs them)",
      function()
        local ds = base_ds()
        ds.spec.resources = {
          limits = { cpu = 2, memory = "4Gi" },
          requests = { cpu = "500m", memory = 1073741824 },
        }
        local c = container_of(render(ds), "ds")
        assert.same({ limits = { cpu = "2", memory = "4Gi" },
          requests = { cpu = "500m", memory = "1073741824" } },
          norm(c.resources))
      end)

    it("copies the Service type and annotations", function()
      local ds = load_ds(SAMPLES_DIR .. "/dittoserver-loadbalancer.yaml")
      local svc = find(render(ds), "Service", "dittofs-lb")
      assert.equal("LoadBalancer", svc.spec.type)
      assert.same({
        ["service.beta.kubernetes.io/aws-load-balancer-type"] = "nlb",
        ["service.beta.kubernetes.io/aws-load-balancer-internal"] = "true",
      }, norm(svc.metadata.annotations))
    end)

    it("does not mount the service account token", function()
      local sts = find(render(readme_ds()), "StatefulSet", "dittofs-sample")
      assert.is_false(sts.spec.template.spec.automountServiceAccountToken)
    end)

    describe("security contexts", function()
      local cases = {
        {
          "secure defaults when the spec sets nothing",
          nil, nil,
          { fsGroup = 65532, runAsUser = 65532, runAsGroup = 65532,
            runAsNonRoot = true, seccompProfile = { type = "RuntimeDefault" } },
          { allowPrivilegeEscalation = false,
            capabilities = { drop = { "ALL" } } },
        },
        {
          "the user's pod keys win, the others are defaulted",
          { runAsUser = 1000, fsGroup = 1000 }, nil,
          { fsGroup = 1000, runAsUser = 1000, runAsGroup = 65532,
            runAsNonRoot = true, seccompProfile = { type = "RuntimeDefault" } },
          { allowPrivilegeEscalation = false,
            capabilities = { drop = { "ALL" } } },
        },
        {
          "no runAsNonRoot default when the user runs as root",
          nil, { runAsUser = 0 },
          { fsGroup = 65532, runAsGroup = 65532,
            seccompProfile = { type = "RuntimeDefault" } },
          { runAsUser = 0, allowPrivilegeEscalation = false,
            capabilities = { drop = { "ALL" } } },
        },
        {
          "privileged: no escalation or capability defaults",
          nil, { privileged = true },
          { fsGroup = 65532, runAsUser = 65532, runAsGroup = 65532,
            runAsNonRoot = true, seccompProfile = { type = "RuntimeDefault" } },
          { privileged = true },
        },
        {
          "CAP_SYS_ADMIN: no allowPrivilegeEscalation false",
          nil, { capabilities = { add = { "SYS_ADMIN" } } },
          { fsGroup = 65532, runAsUser = 65532, runAsGroup = 65532,
            runAsNonRoot = true, seccompProfile = { type = "RuntimeDefault" } },
          { capabilities = { add = { "SYS_ADMIN" }, drop = { "ALL" } } },
        },
        {
          "explicit values are kept, also false and custom drops",
          { runAsNonRoot = false, seccompProfile = { type = "Unconfined" } },
          { allowPrivilegeEscalation = true,
            capabilities = { drop = { "NET_RAW" } } },
          { fsGroup = 65532, runAsUser = 65532, runAsGroup = 65532,
            runAsNonRoot = false, seccompProfile = { type = "Unconfined" } },
          { allowPrivilegeEscalation = true,
            capabilities = { drop = { "NET_RAW" } } },
        },
      }
      for _, case in ipairs(cases) do
        it(case[1], function()
          local ds = readme_ds()
          ds.spec.podSecurityContext = case[2]
          ds.spec.securityContext = case[3]
          local sts = find(render(ds), "StatefulSet", "dittofs-sample")
          local pod = sts.spec.template.spec
          assert.same(case[4], norm(pod.securityContext))
          assert.same(case[5], norm(pod.containers[1].securityContext))
        end)
      end
    end)

    describe("every spec field reaches the output", function()
      -- Paths whose change must not alter the rendered objects, and why.
      local EXEMPT = {
        ["spec.config.shares[].name"] = "only names the share in messages",
        ["spec.policy"] = "parameters of custom policies; the default takes "
          .. "none",
      }
      -- Paths that cannot vary: a single-valued enum.
      local FIXED = {
        ["spec.config.caches[].type"] = "memory is the only cache type",
      }
      -- Valid replacement values where the generic rule does not fit; a
      -- function makes the change itself (renames update the references).
      local VARIANTS = {
        ["spec.image"] = "other/image:2",
        ["spec.replicas"] = 0,
        ["spec.storage.metadataSize"] = "21Gi",
        ["spec.storage.contentSize"] = "201Gi",
        ["spec.config.shares[].exportPath"] = "/other",
        ["spec.config.shares[].metadataStore"] = "badger-archive",
        ["spec.config.shares[].contentStore"] = "s3-content",
        ["spec.config.shares[].cache"] = "",
        ["spec.config.shares[].allowedAuthMethods"] = { "anonymous" },
        ["spec.config.shares[].identityMapping.anonymousUID"] = 7,
        ["spec.config.shares[].rootDirectoryAttributes.mode"] = 511,
        ["spec.config.caches[].memory.maxSize"] = "3Gi",
        ["spec.config.caches[].prefetch.maxFileSize"] = "60Mi",
        ["spec.config.caches[].prefetch.chunkSize"] = "2Mi",
        ["spec.config.caches[].flusher.interval"] = "21s",
        ["spec.config.caches[].flusher.flushTimeout"] = "2m",
        ["spec.config.backends[].config"] = { bucket = "bucket-b" },
        ["spec.service.type"] = "NodePort",
        ["spec.config.backends[].name"] = function(spec)
          spec.config.backends[4].name = "s3-other"
          spec.config.shares[2].contentStore = "s3-other"
        end,
        ["spec.config.caches[].name"] = function(spec)
          spec.config.caches[1].name = "other-cache"
          spec.config.shares[1].cache = "other-cache"
          spec.config.shares[2].cache = "other-cache"
        end,
        ["spec.config.backends[].type"] = function(spec)
          -- s3 -> local: drop what only s3 takes
          local b = spec.config.backends[4]
          b.type = "local"
          b.credentialsSecretRef = nil
          b.config = { path = "/data/content/other" }
        end,
      }
      -- Where the array entry to change lives in all-fields.yaml.
      local ITEM = {
        ["spec.config.shares"] = 1,
        ["spec.config.backends"] = 4,
        ["spec.config.caches"] = 1,
      }

      local leaves = {}
      local function collect(node, path)
        if node.properties then
          local keys = {}
          for k in pairs(node.properties) do keys[#keys + 1] = k end
          table.sort(keys)
          for _, k in ipairs(keys) do
            collect(node.properties[k], path .. "." .. k)
          end
        elseif node.type == "array" and node.items.properties then
          collect(node.items, path .. "[]")
        else
          leaves[#leaves + 1] = path
        end
      end
      collect(schema.SPEC, "spec")

      -- Returns parent table, key for a leaf path inside ds.spec.
      local function locate(spec, path)
        local cur, key = { spec = spec }, nil
        local prefix = ""
        for part in path:gmatch("[^.]+") do
          if key ~= nil then
            cur = cur[key]
          end
          local name, is_item = part:match("^(.-)(%[%])$")
          if is_item then
            prefix = prefix .. (prefix == "" and "" or ".") .. name
            cur = cur[name][ITEM[prefix]]
            key = nil
          else
            prefix = prefix .. (prefix == "" and "" or ".") .. part
            key = part
          end
          if cur == nil then
            return nil
          end
        end
        return cur, key
      end

      local function variant(path, value)
        if VARIANTS[path] ~= nil then
          return VARIANTS[path]
        end
        local t = type(value)
        if t == "boolean" then
          return not value
        elseif math.type(value) == "integer" then
          return value + 1
        elseif t == "string" then
          return value .. "x"
        elseif t == "table" and #value > 0 then
          local copy = { table.unpack(value) }
          copy[#copy + 1] = "10.1.2.3"
          return copy
        elseif t == "table" then
          local copy = {}
          for k, v in pairs(value) do copy[k] = v end
          copy.extraKey = "1"
          return copy
        end
        error("no variant for " .. path)
      end

      local fixture = FIXTURES_DIR .. "/all-fields.yaml"

      it("all-fields.yaml sets every field and is valid", function()
        local ds = load_ds(fixture)
        local missing = {}
        for _, path in ipairs(leaves) do
          local parent, key = locate(ds.spec, path)
          if parent == nil or parent[key] == nil then
            missing[#missing + 1] = path
          end
        end
        assert.same({}, missing)
        local errs, warns = policy.validate(ds)
        assert.same({}, norm(errs))
        assert.same({}, norm(warns))
      end)

      for _, path in ipairs(leaves) do
        it(path, function()
          local base = codec.json_encode(render(load_ds(fixture)))
          local ds = load_ds(fixture)
          if FIXED[path] then
            local parent, key = locate(ds.spec, path)
            local node = schema.SPEC
            for part in path:gsub("^spec%.", ""):gmatch("[^.]+") do
              node = node.properties[part:gsub("%[%]$", "")]
              if part:find("%[%]$") then
                node = node.items
              end
            end
            assert.same({ parent[key] }, node.enum)
            return
          end
          local v = VARIANTS[path]
          if type(v) == "function" then
            v(ds.spec)
          else
            local parent, key = locate(ds.spec, path)
            parent[key] = variant(path, parent[key])
          end
          local errs = policy.validate(ds)
          assert.same({}, norm(errs))
          local changed = codec.json_encode(render(ds))
          if EXEMPT[path] then
            assert.equal(base, changed)
          else
            assert.not_equal(base, changed)
          end
        end)
      end
    end)
  end)

  describe("validate", function()
    -- { description, mutate(ds), errors, warnings }
    local S0 = "spec.config.shares[0]"
    local cases = {
      { "accepts the base spec", function() end, {}, {} },
      -- upstream webhook rules, texts kept after the field path
      { "empty metadataStore",
        function(ds) ds.spec.config.shares[1].metadataStore = "" end,
        { S0 .. ".metadataStore: share[0] (a): metadataStore cannot be "
          .. "empty" }, {} },
      { "dangling metadataStore",
        function(ds) ds.spec.config.shares[1].metadataStore = "nope" end,
        { S0 .. ".metadataStore: share[0] (a): metadataStore 'nope' does "
          .. "not exist in backends list" }, {} },
      { "empty contentStore",
        function(ds) ds.spec.config.shares[1].contentStore = "" end,
        { S0 .. ".contentStore: share[0] (a): contentStore cannot be empty" },
        { "spec.config.backends[1]: backend 'local-content' is not used by "
          .. "any share" } },
      { "dangling contentStore",
        function(ds) ds.spec.config.shares[1].contentStore = "missing-store"
        end,
        { S0 .. ".contentStore: share[0] (a): contentStore 'missing-store' "
          .. "does not exist in backends list" },
        { "spec.config.backends[1]: backend 'local-content' is not used by "
          .. "any share" } },
      { "same backend for metadata and content",
        function(ds)
          ds.spec.config.shares[1].contentStore = "badger-metadata"
        end,
        { S0 .. ".contentStore: share[0] (a): backend 'badger-metadata' has "
          .. "type 'badger', but content needs a 'local' or 's3' backend "
          .. "(the server would fail to start)" },
        { S0 .. ": share[0] (a): metadataStore and contentStore reference "
          .. "the same backend 'badger-metadata' - this may not be optimal",
          "spec.config.backends[1]: backend 'local-content' is not used by "
          .. "any share" } },
      { "dangling cache",
        function(ds) ds.spec.config.shares[1].cache = "nocache" end,
        { S0 .. ".cache: share[0] (a): cache 'nocache' does not exist in "
          .. "caches list" }, {} },
      { "s3 backend as metadata store",
        function(ds) ds.spec.config.shares[1].metadataStore = "s3-content" end,
        { S0 .. ".metadataStore: share[0] (a): backend 's3-content' has type "
          .. "'s3', but metadata needs a 'badger' backend (the server only "
          .. "keeps metadata in badger stores and would fail to start)" },
        {} },
      { "local backend as metadata store",
        function(ds)
          ds.spec.config.shares[1].metadataStore = "local-content"
        end,
        { S0 .. ".metadataStore: share[0] (a): backend 'local-content' has "
          .. "type 'local', but metadata needs a 'badger' backend (the "
          .. "server only keeps metadata in badger stores and would fail to "
          .. "start)" },
        { S0 .. ": share[0] (a): metadataStore and contentStore reference "
          .. "the same backend 'local-content' - this may not be optimal" } },
      { "duplicate backend name",
        function(ds)
          table.insert(ds.spec.config.backends,
            { name = "badger-metadata", type = "badger" })
        end,
        { "spec.config.backends[3].name: duplicate backend name "
          .. "'badger-metadata' at indices 0 and 3" }, {} },
      { "duplicate cache name",
        function(ds)
          table.insert(ds.spec.config.caches, { name = "c1" })
        end,
        { "spec.config.caches[1].name: duplicate cache name 'c1' at indices "
          .. "0 and 1" }, {} },
      { "duplicate share name",
        function(ds) ds.spec.config.shares[2].name = "a" end,
        { "spec.config.shares[1].name: duplicate share name 'a' at indices "
          .. "0 and 1" }, {} },
      { "duplicate export path",
        function(ds) ds.spec.config.shares[2].exportPath = "/a" end,
        { "spec.config.shares[1].exportPath: duplicate export path '/a' at "
          .. "indices 0 and 1" }, {} },
      -- server-side rules
      { "export path without leading /",
        function(ds) ds.spec.config.shares[1].exportPath = "a" end,
        { S0 .. ".exportPath: Invalid value: \"a\": " .. S0
          .. ".exportPath in body should match '^/'" }, {} },
      { "auth method other than anonymous/unix",
        function(ds)
          ds.spec.config.shares[1].allowedAuthMethods = { "unix", "krb5" }
        end,
        { S0 .. ".allowedAuthMethods[1]: Unsupported value: \"krb5\": "
          .. "supported values: \"anonymous\", \"unix\"" }, {} },
      { "dumpRestricted without dumpAllowedClients",
        function(ds) ds.spec.config.shares[1].dumpRestricted = true end,
        { S0 .. ".dumpAllowedClients: must not be empty when dumpRestricted "
          .. "is true (nobody could call DUMP)" }, {} },
      { "mode above 0777",
        function(ds)
          ds.spec.config.shares[1].rootDirectoryAttributes = { mode = 512 }
        end,
        { S0 .. ".rootDirectoryAttributes.mode: Invalid value: 512: " .. S0
          .. ".rootDirectoryAttributes.mode in body should be less than or "
          .. "equal to 511" },
        {} },
      { "metadataSize that does not parse",
        function(ds) ds.spec.storage.metadataSize = "10GB" end,
        { "spec.storage.metadataSize: Invalid value: \"10GB\": "
          .. "spec.storage.metadataSize in body should match "
          .. "'^[0-9]+(Mi|Gi|Ti)$'" }, {} },
      { "zero contentSize",
        function(ds) ds.spec.storage.contentSize = "0Gi" end,
        { "spec.storage.contentSize: must be greater than zero" }, {} },
      { "cache sizes that do not parse, are negative or fractional",
        function(ds)
          ds.spec.config.caches[1] = { name = "c1",
            memory = { maxSize = "lots" },
            prefetch = { maxFileSize = "-1Mi", chunkSize = "0.5" } }
        end,
        { "spec.config.caches[0].memory.maxSize: invalid quantity \"lots\": "
          .. "quantities must match the regular expression "
          .. "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
          "spec.config.caches[0].prefetch.maxFileSize: \"-1Mi\" must not be "
          .. "negative",
          "spec.config.caches[0].prefetch.chunkSize: \"0.5\" is not a whole "
          .. "number of bytes" }, {} },
      { "resource quantities that do not parse",
        function(ds)
          ds.spec.resources = { limits = { cpu = "two", memory = "4Gi" },
            requests = { cpu = 1 } }
        end,
        { "spec.resources.limits.cpu: Invalid value: \"two\": "
          .. "spec.resources.limits.cpu in body should match "
          .. "'^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
          .. "|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$'" }, {} },
      { "flusher durations that do not parse",
        function(ds)
          ds.spec.config.caches[1].flusher = { interval = "soon",
            flushTimeout = "1.m" }
        end,
        { "spec.config.caches[0].flusher.flushTimeout: Invalid value: "
          .. "\"1.m\": spec.config.caches[0].flusher.flushTimeout in body "
          .. "should match '^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$'",
          "spec.config.caches[0].flusher.interval: Invalid value: \"soon\": "
          .. "spec.config.caches[0].flusher.interval in body should match "
          .. "'^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$'" }, {} },
      { "inline S3 credentials",
        function(ds)
          ds.spec.config.backends[3].config.access_key_id = "AKIA"
          ds.spec.config.backends[3].config.secret_access_key = "s"
        end,
        { "spec.config.backends[2].config[access_key_id]: credentials must "
          .. "not be written inline (they would land in the ConfigMap); put "
          .. "them in a Secret and reference it with the backend's "
          .. "credentialsSecretRef",
          "spec.config.backends[2].config[secret_access_key]: credentials "
          .. "must not be written inline (they would land in the ConfigMap); "
          .. "put them in a Secret and reference it with the backend's "
          .. "credentialsSecretRef" }, {} },
      { "credentials on a non-s3 backend",
        function(ds)
          ds.spec.config.backends[2].credentialsSecretRef = { name = "x" }
        end,
        { "spec.config.backends[1].credentialsSecretRef: only s3 backends "
          .. "take credentials" }, {} },
      { "s3 backend without bucket, bad force_path_style, unknown key",
        function(ds)
          ds.spec.config.backends[3].config = { force_path_style = "yes",
            part_size = "5Mi" }
        end,
        { "spec.config.backends[2].config[bucket]: required for an s3 "
          .. "backend",
          "spec.config.backends[2].config[force_path_style]: must be "
          .. "\"true\" or \"false\"" },
        { "spec.config.backends[2].config[part_size]: not a setting of a s3 "
          .. "backend, ignored (known: bucket, endpoint, force_path_style, "
          .. "key_prefix, region)" } },
      { "relative and off-volume paths",
        function(ds)
          ds.spec.config.backends[1].config = { path = "data" }
          ds.spec.config.backends[2].config = { path = "/tmp/files",
            mode = "x" }
        end,
        { "spec.config.backends[0].config[path]: must be an absolute path "
          .. "(starting with \"/\")" },
        { "spec.config.backends[1].config[mode]: not a setting of a local "
          .. "backend, ignored (known: path)",
          "spec.config.backends[1].config[path]: \"/tmp/files\" is not on a "
          .. "persistent volume (/data/metadata, /data/content); its data is "
          .. "lost when the pod restarts" } },
      { "content path without a content volume",
        function(ds)
          ds.spec.storage.contentSize = nil
          ds.spec.config.backends[2].config = { path = "/data/content/x" }
        end,
        {},
        { "spec.config.backends[1].config[path]: \"/data/content/x\" is not "
          .. "on a persistent volume (/data/metadata, or /data/content with "
          .. "spec.storage.contentSize); its data is lost when the pod "
          .. "restarts" } },
      { "unused backend and cache",
        function(ds)
          table.insert(ds.spec.config.backends,
            { name = "spare", type = "badger" })
          table.insert(ds.spec.config.caches, { name = "c2" })
        end,
        {},
        { "spec.config.backends[3]: backend 'spare' is not used by any share",
          "spec.config.caches[1]: cache 'c2' is not used by any share" } },
      { "replicas above 1 with private stores",
        function(ds) ds.spec.replicas = 3 end,
        { "spec.replicas: must be 0 or 1, got 3: share[0] (a) keeps "
          .. "metadata in badger backend 'badger-metadata' and content in "
          .. "local backend 'local-content'; share[1] (b) keeps metadata in "
          .. "badger backend 'badger-metadata' on each pod's own volume, so "
          .. "every replica would serve its own diverging copy of the files "
          .. "(only s3 content is shared between pods, and no shared "
          .. "metadata store type exists yet)" }, {} },
      { "replicas above 1 without spec.config",
        function(ds) ds.spec.config = nil; ds.spec.replicas = 2 end,
        { "spec.replicas: must be 0 or 1, got 2: the default share /export "
          .. "keeps metadata in badger backend 'badger-metadata' and content "
          .. "in local backend 'local-content' on each pod's own volume, so "
          .. "every replica would serve its own diverging copy of the files "
          .. "(only s3 content is shared between pods, and no shared "
          .. "metadata store type exists yet)" }, {} },
      { "nfsPort on the metrics port",
        function(ds) ds.spec.nfsPort = 9090 end,
        { "spec.nfsPort: 9090 is the metrics port; choose another port" },
        {} },
      { "privileged nfsPort without NET_BIND_SERVICE",
        function(ds) ds.spec.nfsPort = 111 end,
        {},
        { "spec.nfsPort: 111 is a privileged port; the non-root server needs "
          .. "NET_BIND_SERVICE in spec.securityContext.capabilities.add to "
          .. "bind it" } },
      { "privileged nfsPort with NET_BIND_SERVICE",
        function(ds)
          ds.spec.nfsPort = 111
          ds.spec.securityContext = {
            capabilities = { add = { "NET_BIND_SERVICE" } } }
        end,
        {}, {} },
      { "name that cannot name a Service",
        function(ds) ds.metadata.name = "1ds.example" end,
        { "metadata.name: must start with a lowercase letter and contain "
          .. "only lowercase letters, digits and '-' (it names a Service)" },
        {} },
      { "name too long for the pods' revision label",
        function(ds) ds.metadata.name = string.rep("a", 53) end,
        { "metadata.name: must be at most 52 characters, got 53 (the pods "
          .. "carry \"<name>-<revision hash>\" in a label)" }, {} },
      -- shape errors (the apiserver refuses these too)
      { "missing spec",
        function(ds) ds.spec = nil end, { "spec: required" }, {} },
      { "missing image and storage",
        function(ds) ds.spec.image = nil; ds.spec.storage = nil end,
        { "spec.image: Required value", "spec.storage: Required value" },
        {} },
      { "wrong types",
        function(ds)
          ds.spec.replicas = "one"
          ds.spec.nfsPort = 2049.5
          ds.spec.config.shares[1].readOnly = "yes"
          ds.spec.service = { type = "ExternalName", annotations = { a = 1 } }
        end,
        { "spec.config.shares[0].readOnly: Invalid value: \"string\": "
            .. "spec.config.shares[0].readOnly in body must be of type "
            .. "boolean: \"string\"",
          "spec.nfsPort: Invalid value: \"number\": spec.nfsPort in body "
            .. "must be of type integer: \"number\"",
          "spec.replicas: Invalid value: \"string\": spec.replicas in body "
            .. "must be of type integer: \"string\"",
          "spec.service.annotations.a: Invalid value: \"integer\": "
            .. "spec.service.annotations.a in body must be of type string: "
            .. "\"integer\"",
          "spec.service.type: Unsupported value: \"ExternalName\": "
            .. "supported values: \"ClusterIP\", \"NodePort\", "
            .. "\"LoadBalancer\"" },
        {} },
      { "limits: minimum, minLength, maxLength, int-or-string",
        function(ds)
          ds.spec.replicas = -1
          ds.spec.image = ""
          ds.spec.config.caches[1].name = string.rep("c", 64)
          ds.spec.resources = { requests = { cpu = true } }
        end,
        { "spec.config.caches[0].name: Invalid value: \"" .. string.rep("c",
            64) .. "\": spec.config.caches[0].name in body should be at most "
            .. "63 chars long",
          "spec.image: Invalid value: \"\": spec.image in body should be at "
            .. "least 1 chars long",
          "spec.replicas: Invalid value: -1: spec.replicas in body should be "
            .. "greater than or equal to 0",
          "spec.resources.requests.cpu: Invalid value: \"boolean\": "
            .. "spec.resources.requests.cpu in body must be of type "
            .. "integer,string: \"boolean\"" },
        {} },
      { "empty shares and a backend without type",
        function(ds)
          ds.spec.config.shares = {}
          ds.spec.config.backends[1].type = nil
        end,
        { "spec.config.backends[0].type: Required value",
          "spec.config.shares: Invalid value: 0: spec.config.shares in body "
            .. "should have at least 1 items" }, {} },
      { "unknown fields are reported and ignored",
        function(ds)
          ds.spec.replica = 2
          ds.spec.storage.size = "1Gi"
        end,
        {},
        { "unknown field \"spec.replica\"",
          "unknown field \"spec.storage.size\"" } },
    }

    for _, case in ipairs(cases) do
      it(case[1], function()
        local ds = base_ds()
        case[2](ds)
        local errs, warns = policy.validate(ds)
        assert.same(case[3], norm(errs))
        assert.same(case[4], norm(warns))
      end)
    end

    it("refuses something that is not a DittoServer object", function()
      assert.same({ "DittoServer: must be an object" },
        norm((policy.validate("nope"))))
      assert.same({ "DittoServer: must be an object" },
        norm((policy.validate({ 1, 2 }))))
    end)

    it("reports every problem, not only the first", function()
      local ds = base_ds()
      ds.spec.config.shares[1].metadataStore = "x"
      ds.spec.config.shares[2].dumpRestricted = true
      ds.spec.replicas = 2
      local errs = policy.validate(ds)
      assert.equal(3, #errs)
    end)
  end)

  describe("sandbox", function()
    -- The sandbox's allow-list (DESIGN.md): base without load/loadfile/
    -- dofile/collectgarbage/print, string without dump, table, math, utf8;
    -- reads and writes of undeclared globals raise. require resolves
    -- policies/, then lua/, then "codec", each module in its own _ENV.
    local function sandboxed_policy()
      local allowed = {
        "assert", "error", "getmetatable", "ipairs", "next", "pairs",
        "pcall", "rawequal", "rawget", "rawlen", "rawset", "select",
        "setmetatable", "tonumber", "tostring", "type", "xpcall", "_VERSION",
        "table", "math", "utf8",
      }
      local lib = {}
      for _, k in ipairs(allowed) do
        lib[k] = _G[k]
      end
      lib.string = {}
      for k, v in pairs(string) do
        if k ~= "dump" then
          lib.string[k] = v
        end
      end
      local loaded = { codec = codec }
      local function new_env()
        local env = {}
        for k, v in pairs(lib) do
          env[k] = v
        end
        env.require = function(name)
          if loaded[name] then
            return loaded[name]
          end
          local rel = name:gsub("%.", "/") .. ".lua"
          for _, dir in ipairs({ "policies/", "lua/" }) do
            local f = io.open(dir .. rel, "rb")
            if f then
              local text = f:read("a")
              f:close()
              local chunk = assert(load(text, "@" .. dir .. rel, "t",
                new_env()))
              loaded[name] = chunk()
              return loaded[name]
            end
          end
          error("module '" .. name .. "' not found")
        end
        return setmetatable(env, {
          __index = function(_, k)
            error("read of undeclared global '" .. tostring(k) .. "'", 2)
          end,
          __newindex = function(_, k)
            error("write of undeclared global '" .. tostring(k) .. "'", 2)
          end,
        })
      end
      return new_env().require("dittoserver")
    end

    it("validates, renders and derives status with only allowed globals",
      function()
        local sp = sandboxed_policy()
        assert.is_not.equal(policy, sp)
        for _, file in ipairs(SAMPLES) do
          local ds = load_ds(SAMPLES_DIR .. "/" .. file)
          local errs = sp.validate(ds)
          assert.same({}, norm(errs))
          local objects = sp.render(ds, ctx_for(ds))
          assert.equal(codec.json_encode(render(ds)),
            codec.json_encode(objects))
          local st = sp.status(ds, observe(objects, 1), ctx_for(ds))
          assert.equal(codec.json_encode(
            policy.status(ds, observe(objects, 1), ctx_for(ds))),
            codec.json_encode(st))
        end
      end)
  end)

  describe("status", function()
    local function cond(list, ctype)
      for _, c in ipairs(list) do
        if c.type == ctype then
          return { c.status, c.reason, c.message }
        end
      end
      return nil
    end

    -- { description, mutate spec, observed builder, phase, available,
    --   Ready {status, reason, message}, Reconciled {status, reason, msg} }
    local NAME = "dittofs-sample"
    local UP_TO_DATE = { "True", "ChildrenUpToDate",
      "ConfigMap, Services and StatefulSet match the spec" }
    local cases = {
      { "nothing observed yet: Pending",
        function() end,
        function() return {} end,
        "Pending", 0,
        { "False", "StatefulSetNotReady",
          "StatefulSet has 0/1 ready replicas" },
        { "False", "ChildrenMissing", "Waiting for ConfigMap "
          .. "\"dittofs-sample-config\", Service \"dittofs-sample\", Service "
          .. "\"dittofs-sample-headless\", StatefulSet \"dittofs-sample\" to "
          .. "be created" } },
      { "children applied, pod not ready: Pending",
        function() end,
        function(objects) return observe(objects, nil) end,
        "Pending", 0,
        { "False", "StatefulSetNotReady",
          "StatefulSet has 0/1 ready replicas" },
        UP_TO_DATE },
      { "all replicas ready: Running",
        function() end,
        function(objects) return observe(objects, 1) end,
        "Running", 1,
        { "True", "StatefulSetReady", "StatefulSet has 1/1 ready replicas" },
        UP_TO_DATE },
      { "replicas 0: Stopped",
        function(spec) spec.replicas = 0 end,
        function(objects) return observe(objects, 0) end,
        "Stopped", 0,
        { "True", "Stopped", "DittoServer is stopped (replicas=0)" },
        UP_TO_DATE },
      { "replicas 0 with the pod still terminating: Stopped",
        function(spec) spec.replicas = 0 end,
        function(objects) return observe(objects, 1) end,
        "Stopped", 1,
        { "True", "Stopped", "DittoServer is stopped (replicas=0)" },
        UP_TO_DATE },
      { "invalid spec: Failed, running pods still counted",
        function(spec) spec.replicas = 2 end,
        function(objects) return observe(objects, 1) end,
        "Failed", 1,
        { "False", "StatefulSetNotReady",
          "StatefulSet has 1/2 ready replicas" },
        { "False", "InvalidSpec", "spec.replicas: must be 0 or 1, got 2: the "
          .. "default share /export keeps metadata in badger backend "
          .. "'badger-metadata' and content in local backend 'local-content' "
          .. "on each pod's own volume, so every replica would serve its own "
          .. "diverging copy of the files (only s3 content is shared between "
          .. "pods, and no shared metadata store type exists yet)" } },
      { "ConfigMap and StatefulSet from an older spec: ChildrenOutOfDate",
        function() end,
        function(objects)
          local observed = observe(objects, 1)
          observed.ConfigMap[NAME .. "-config"].data["config.yaml"] = "old"
          observed.StatefulSet[NAME].spec.template.metadata.annotations[
            "dittofs.dittofs.com/config-hash"] = "0000000000000000"
          observed.StatefulSet[NAME].spec.replicas = 0
          return observed
        end,
        "Running", 1,
        { "True", "StatefulSetReady", "StatefulSet has 1/1 ready replicas" },
        { "False", "ChildrenOutOfDate", "ConfigMap \"dittofs-sample-config\" "
          .. "does not hold the current configuration; StatefulSet "
          .. "\"dittofs-sample\" does not carry the current configuration "
          .. "hash; StatefulSet \"dittofs-sample\" has 0 replicas, want 1" } },
      { "storage size changed after creation: StorageImmutable",
        function(spec) spec.storage.metadataSize = "20Gi" end,
        function(objects)
          local observed = observe(objects, 1)
          local vct = observed.StatefulSet[NAME].spec.volumeClaimTemplates
          vct[1].spec.resources.requests.storage = "10Gi"
          table.remove(vct, 2)
          return observed
        end,
        "Running", 1,
        { "True", "StatefulSetReady", "StatefulSet has 1/1 ready replicas" },
        { "False", "StorageImmutable", "StatefulSet \"dittofs-sample\" keeps "
          .. "the volumes it was created with (metadata volume 10Gi -> 20Gi; "
          .. "a content volume (100Gi) was added): Kubernetes cannot change a "
          .. "StatefulSet's volume claim templates. Restore spec.storage, or "
          .. "expand the PVCs yourself and recreate the StatefulSet (kubectl "
          .. "delete statefulset dittofs-sample --cascade=orphan; the PVCs and "
          .. "the data are kept)" } },
      { "storage class changed after creation: StorageImmutable",
        function(spec) spec.storage.storageClassName = "fast" end,
        function(objects)
          local observed = observe(objects, 1)
          for _, c in ipairs(
            observed.StatefulSet[NAME].spec.volumeClaimTemplates) do
            c.spec.storageClassName = "standard"
          end
          return observed
        end,
        "Running", 1,
        { "True", "StatefulSetReady", "StatefulSet has 1/1 ready replicas" },
        { "False", "StorageImmutable", "StatefulSet \"dittofs-sample\" keeps "
          .. "the volumes it was created with (metadata storage class "
          .. "standard -> fast; content storage class standard -> fast): "
          .. "Kubernetes cannot change a StatefulSet's volume claim "
          .. "templates. Restore spec.storage, or expand the PVCs yourself "
          .. "and recreate the StatefulSet (kubectl delete statefulset "
          .. "dittofs-sample --cascade=orphan; the PVCs and the data are "
          .. "kept)" } },
      { "the same size spelled differently by the apiserver: up to date",
        function() end,
        function(objects)
          local observed = observe(objects, 1)
          observed.StatefulSet[NAME].spec.volumeClaimTemplates[1].spec
            .resources.requests.storage = "10240Mi"
          return observed
        end,
        "Running", 1,
        { "True", "StatefulSetReady", "StatefulSet has 1/1 ready replicas" },
        UP_TO_DATE },
      { "only the headless Service missing: ChildrenMissing",
        function() end,
        function(objects)
          local observed = observe(objects, 1)
          observed.Service[NAME .. "-headless"] = nil
          return observed
        end,
        "Running", 1,
        { "True", "StatefulSetReady", "StatefulSet has 1/1 ready replicas" },
        { "False", "ChildrenMissing", "Waiting for Service "
          .. "\"dittofs-sample-headless\" to be created" } },
    }

    for _, case in ipairs(cases) do
      it(case[1], function()
        local ds = readme_ds()
        case[2](ds.spec)
        local observed = case[3](render(ds))
        local st = policy.status(ds, observed, ctx_for(ds))
        assert.equal(case[4], st.phase)
        assert.equal(case[5], st.availableReplicas)
        assert.same(case[6], cond(st.conditions, "Ready"))
        assert.same(case[7], cond(st.conditions, "Reconciled"))
        assert.equal(2, #st.conditions)
        for _, c in ipairs(st.conditions) do
          assert.is_nil(c.lastTransitionTime)
        end
      end)
    end

    it("builds nfsEndpoint from name, namespace, cluster domain and port",
      function()
        local ds = load_ds(SAMPLES_DIR .. "/dittoserver-custom-port.yaml")
        local st = policy.status(ds, {}, ctx_for(ds, {
          namespace = "files", cluster_domain = "corp.internal" }))
        assert.equal("dittofs-port.files.svc.corp.internal:12049",
          st.nfsEndpoint)
        local readme = readme_ds()
        st = policy.status(readme, {}, ctx_for(readme))
        assert.equal("dittofs-sample.default.svc.cluster.local:2049",
          st.nfsEndpoint)
      end)

    it("is deterministic", function()
      local ds = readme_ds()
      local observed = observe(render(ds), 1)
      assert.equal(codec.json_encode(policy.status(ds, observed, ctx_for(ds))),
        codec.json_encode(policy.status(ds, observed, ctx_for(ds))))
    end)

    it("survives garbage in observed and in the spec", function()
      local ds = readme_ds()
      ds.spec.replicas = "many"
      ds.spec.nfsPort = {}
      local st = policy.status(ds, { StatefulSet = { [NAME] = "x" },
        ConfigMap = 7 }, ctx_for(ds))
      assert.equal("Failed", st.phase)
      assert.equal("dittofs-sample.default.svc.cluster.local:2049",
        st.nfsEndpoint)
      st = policy.status(readme_ds(), nil, ctx_for(ds))
      assert.equal("Pending", st.phase)
    end)
  end)

  -- The policy memoizes by spec content within an evaluation (validate,
  -- render and status see equal specs); in busted the module outlives a
  -- DittoServer, so memoized results must never leak into another one.
  describe("memoization", function()
    it("tells an integer from an integral float", function()
      local ds = readme_ds()
      local errs = policy.validate(ds)
      assert.same({}, norm(errs))
      ds = readme_ds()
      ds.spec.replicas = 1.0
      errs = policy.validate(ds)
      assert.equal(1, #errs)
      assert.matches("^spec%.replicas: ", errs[1])
      assert.equal("Failed", policy.status(ds, {}, ctx_for(ds)).phase)
      ds.spec.replicas = 1
      assert.same({}, norm(policy.validate(ds)))
    end)

    it("returns lists the caller may change", function()
      local ds = readme_ds()
      ds.spec.nfsPort = 9090
      local errs, warns = policy.validate(ds)
      local n_errs, n_warns = #errs, #warns
      errs[#errs + 1] = "changed"
      warns[#warns + 1] = "changed"
      local errs2, warns2 = policy.validate(readme_ds())
      assert.same({}, norm(errs2))
      assert.same({}, norm(warns2))
      errs2, warns2 = policy.validate(ds)
      assert.equal(n_errs, #errs2)
      assert.equal(n_warns, #warns2)
    end)

    it("keeps config.yaml and its hash with their own spec", function()
      local a, b = readme_ds(), readme_ds()
      b.spec.storage.contentSize = nil
      local function hash(ds)
        local sts = find(render(ds), "StatefulSet", ds.metadata.name)
        return sts.spec.template.metadata.annotations[
          policy.CONFIG_HASH_ANNOTATION]
      end
      local ha, hb = hash(a), hash(b)
      assert.are_not.equal(ha, hb)
      assert.equal(ha, hash(readme_ds()))
      local objects = render(b)
      local text = find(objects, "ConfigMap", b.metadata.name .. "-config")
        .data["config.yaml"]
      assert.equal(policy.fnv1a64(text), hb)
    end)

    it("validates each name on its own", function()
      local ds = readme_ds()
      ds.metadata.name = "Bad_Name"
      assert.matches("^metadata%.name: ", policy.validate(ds)[1])
      assert.same({}, norm(policy.validate(readme_ds())))
    end)
  end)
end)
