-- Timing loop (not a test): decode + encode of a ~2 KiB Kubernetes object.
-- Run: lua5.4 spec/bench/codec_bench.lua [path/to/codec.so dir]
package.cpath = (arg[1] or "build") .. "/?.so;" .. package.cpath
local codec = require("codec")

local obj = {
  apiVersion = "apps/v1", kind = "StatefulSet",
  metadata = {
    name = "dittofs", namespace = "default", generation = 3,
    labels = { ["app.kubernetes.io/name"] = "dittofs",
      ["app.kubernetes.io/managed-by"] = "dittofs-operator" },
    annotations = { ["dittofs.dittofs.com/config-hash"] = string.rep("ab", 32) },
    ownerReferences = { { apiVersion = "dittofs.dittofs.com/v1alpha1",
      kind = "DittoServer", name = "dittofs", uid = "0000-1111-2222",
      controller = true, blockOwnerDeletion = true } },
  },
  spec = {
    replicas = 1, serviceName = "dittofs-headless",
    selector = { matchLabels = { ["app.kubernetes.io/name"] = "dittofs" } },
    template = {
      metadata = { labels = { ["app.kubernetes.io/name"] = "dittofs" } },
      spec = {
        securityContext = { fsGroup = 65532, runAsNonRoot = true },
        containers = { {
          name = "dittofs", image = "ghcr.io/marmos91/dittofs:0.1.0",
          args = { "start", "--config", "/etc/dittofs/config.yaml" },
          ports = { { name = "nfs", containerPort = 2049, protocol = "TCP" },
            { name = "metrics", containerPort = 9090, protocol = "TCP" } },
          resources = { limits = { cpu = "1", memory = "1Gi" },
            requests = { cpu = "100m", memory = "128Mi" } },
          readinessProbe = { tcpSocket = { port = 2049 }, periodSeconds = 10 },
          livenessProbe = { tcpSocket = { port = 2049 }, periodSeconds = 20 },
          volumeMounts = { { name = "config", mountPath = "/etc/dittofs" },
            { name = "metadata", mountPath = "/data/metadata" },
            { name = "content", mountPath = "/data/content" } },
          env = { { name = "S3_KEY", valueFrom = { secretKeyRef = {
            name = "s3", key = "accessKeyId" } } } },
        } },
        volumes = { { name = "config", configMap = { name = "dittofs-config" } } },
      },
    },
    volumeClaimTemplates = { {
      metadata = { name = "metadata" },
      spec = { accessModes = { "ReadWriteOnce" }, storageClassName = "standard",
        resources = { requests = { storage = "10Gi" } } },
    } },
  },
  status = codec.object(),
}

local json = assert(codec.json_encode(obj))
local yaml = assert(codec.yaml_encode(obj))
local function bench(name, n, f)
  local t0 = os.clock()
  for _ = 1, n do f() end
  print(string.format("%-28s %7.2f us", name, (os.clock() - t0) / n * 1e6))
end
print(string.format("object: %d bytes JSON, %d bytes YAML", #json, #yaml))
local N = 20000
bench("json_decode", N, function() codec.json_decode(json) end)
bench("json_encode", N, function() codec.json_encode(obj) end)
bench("json_decode+json_encode", N, function() codec.json_encode(codec.json_decode(json)) end)
bench("yaml_decode", N // 4, function() codec.yaml_decode(yaml) end)
bench("yaml_encode", N, function() codec.yaml_encode(obj) end)
