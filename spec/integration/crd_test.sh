#!/usr/bin/env bash
# spec/integration/crd_test.sh: the DittoServer CRD against a real
# kube-apiserver (deploy/local/cluster.sh; run through
# spec/integration/with-cluster, which exports KUBECONFIG).
#
#   1. crd/dittoserver.yaml is accepted (server-side apply) and Established
#      (below Kubernetes 1.28 without its CEL rules: crd_install.sh; the
#      rules themselves are spec/integration/cel_test.sh's);
#   2. every deploy/samples/*.yaml is accepted, and the apiserver applies the
#      CRD defaults the policy relies on;
#   3. CRs that break the schema are rejected, each with the apiserver's own
#      message (checked by substring);
#   4. status is a subresource with the declared enum;
#   5. the objects the default policy renders for every sample are accepted
#      too, and the StatefulSet controller creates pods and PVCs from them
#      (needs build/codec.so; skipped without it).
# Everything happens in a fresh namespace, deleted on exit. The CRD itself
# is left installed (other tests share it; applying it again is a no-op).
# Output: one "ok N - ..." / "not ok N - ..." line per check, then a
# summary; exit status 1 when any check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tap.sh
. "$root/spec/integration/tap.sh"
# shellcheck source=crd_install.sh
. "$root/spec/integration/crd_install.sh"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
ns="crd-test-$$"
tmp=$(mktemp -d)

cleanup() {
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

k() {
  "$KUBECTL" -n "$ns" "$@"
}

# --- 1. the CRD -------------------------------------------------------------
check "CRD applies server-side" crd_install --force-conflicts
check "CRD becomes Established" \
  "$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com
check "namespace $ns created" "$KUBECTL" create namespace "$ns"
shortname=$("$KUBECTL" get crd dittoservers.dittofs.dittofs.com \
  -o jsonpath='{.spec.names.shortNames[0]}')
expect_eq "short name is ditto" "ditto" "$shortname"
# The apiserver publishes a new CRD's OpenAPI a few seconds after it is
# established; kubectl explain reads it from there.
explain_ok() {
  for _ in $(seq 60); do
    "$KUBECTL" explain dittoserver.spec.config.backends.credentialsSecretRef \
      >/dev/null 2>&1 && return 0
    sleep 1
  done
  "$KUBECTL" explain dittoserver.spec.config.backends.credentialsSecretRef
}
check "kubectl explain reads the schema" explain_ok

# --- 2. samples -------------------------------------------------------------
for f in "$root"/deploy/samples/*.yaml; do
  check "sample $(basename "$f") is accepted" \
    k apply --server-side -f "$f"
done

get() {
  k get dittoserver "$1" -o jsonpath="$2"
}
expect_eq "default replicas 1" "1" "$(get dittofs-port '{.spec.replicas}')"
expect_eq "default service.type ClusterIP (service defaults to {})" \
  "ClusterIP" "$(get dittofs-port '{.spec.service.type}')"
expect_eq "custom nfsPort kept" "12049" "$(get dittofs-port '{.spec.nfsPort}')"
expect_eq "default nfsPort 2049" "2049" "$(get dittofs-sample '{.spec.nfsPort}')"
expect_eq "replicas 0 kept" "0" "$(get dittofs-stopped '{.spec.replicas}')"
expect_eq "default allowedAuthMethods" '["anonymous","unix"]' \
  "$(get dittofs-shares '{.spec.config.shares[0].allowedAuthMethods}')"
expect_eq "default exportPath only when absent" "/team" \
  "$(get dittofs-shares '{.spec.config.shares[0].exportPath}')"
expect_eq "nested defaults inside a present object (anonymousUID)" "65534" \
  "$(get dittofs-shares '{.spec.config.shares[1].identityMapping.anonymousUID}')"
expect_eq "rootDirectoryAttributes.mode default not applied without parent" "" \
  "$(get dittofs-shares '{.spec.config.shares[0].rootDirectoryAttributes}')"
expect_eq "credentialsSecretRef key defaults" \
  "access_key_id secret_access_key" \
  "$(get dittofs-s3 '{.spec.config.backends[1].credentialsSecretRef.accessKeyIDKey} {.spec.config.backends[1].credentialsSecretRef.secretAccessKeyKey}')"
expect_eq "cache type default memory" "memory" \
  "$(get dittofs-cache '{.spec.config.caches[0].type}')"
expect_eq "LoadBalancer annotations kept" "true" \
  "$(get dittofs-lb '{.spec.service.annotations.service\.beta\.kubernetes\.io/aws-load-balancer-internal}')"
cols=$(k get ditto dittofs-sample --no-headers -o wide | awk '{print $1, $2}')
expect_eq "printer columns (kubectl get ditto)" "dittofs-sample 1" "$cols"
header=$(k get ditto 2>&1 | head -1 | tr -s ' ')
expect_eq "printer column headers" "NAME REPLICAS READY NFS ENDPOINT PHASE AGE" \
  "$header"

# --- 3. schema-breaking CRs -------------------------------------------------
# Kubernetes 1.20 reports fields inside arrays without their index
# ("spec.config.shares.name", not "spec.config.shares[0].name"); the
# policy's own messages carry the index.
# reject NAME EXPECTED-SUBSTRING: the CR on stdin must be refused by the
# apiserver (server-side apply) with a message containing the substring.
# reject NAME WANT [WANT...]: the CR on stdin is refused with a message
# containing one of the WANTs (the apiserver's wording differs between
# versions: 1.20 and current are both given where they differ).
reject() {
  local name=$1 out w
  shift
  cat >"$tmp/cr.yaml"
  if out=$(k apply --server-side --validate=false -f "$tmp/cr.yaml" 2>&1); then
    not_ok "rejects $name" "accepted, want: $*"
    return
  fi
  # current releases name list items by index (shares[0].name), 1.20 not
  local flat
  flat=$(sed 's/\[[0-9]*\]//g' <<<"$out")
  for w in "$@"; do
    case $flat in
      *"$w"*) ok "rejects $name"; return ;;
    esac
    # a wrong type: 1.20 says "P in body must be of type T"; current
    # releases refuse the apply earlier with "typed patch ... .P: expected"
    if [[ $w == *" in body must be of type "* &&
          $flat == *"failed to create typed patch object"*".${w%% in body must be of type *}: expected "* ]]; then
      ok "rejects $name"
      return
    fi
  done
  not_ok "rejects $name" "want: $*
got:  $out"
}

head='apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: bad'

reject "missing spec" 'spec: Required value' <<EOF
$head
EOF

reject "missing image" 'spec.image: Required value' <<EOF
$head
spec:
  storage: {metadataSize: 10Gi}
EOF

reject "empty image" 'spec.image in body should be at least 1 chars long' <<EOF
$head
spec:
  image: ""
  storage: {metadataSize: 10Gi}
EOF

reject "missing storage" 'spec.storage: Required value' <<EOF
$head
spec:
  image: x
EOF

reject "missing storage.metadataSize" 'spec.storage.metadataSize: Required value' <<EOF
$head
spec:
  image: x
  storage: {contentSize: 10Gi}
EOF

reject "metadataSize 10GB" \
  "spec.storage.metadataSize in body should match '^[0-9]+(Mi|Gi|Ti)\$'" <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10GB}
EOF

reject "contentSize 1.5Gi" "spec.storage.contentSize in body should match" <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi, contentSize: 1.5Gi}
EOF

reject "replicas -1" \
  'spec.replicas in body should be greater than or equal to 0' <<EOF
$head
spec:
  image: x
  replicas: -1
  storage: {metadataSize: 10Gi}
EOF

reject "replicas as a string" 'spec.replicas in body must be of type integer' <<EOF
$head
spec:
  image: x
  replicas: "one"
  storage: {metadataSize: 10Gi}
EOF

reject "nfsPort 70000" 'spec.nfsPort in body should be less than or equal to 65535' <<EOF
$head
spec:
  image: x
  nfsPort: 70000
  storage: {metadataSize: 10Gi}
EOF

reject "nfsPort 0" 'spec.nfsPort in body should be greater than or equal to 1' <<EOF
$head
spec:
  image: x
  nfsPort: 0
  storage: {metadataSize: 10Gi}
EOF

reject "service.type ExternalName" \
  'spec.service.type: Unsupported value: "ExternalName": supported values: "ClusterIP", "NodePort", "LoadBalancer"' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  service: {type: ExternalName}
EOF

reject "service annotation value not a string" \
  'spec.service.annotations.a in body must be of type string' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  service: {annotations: {a: 1}}
EOF

reject "config without shares" 'spec.config.shares: Required value' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config: {backends: []}
EOF

reject "empty shares" 'spec.config.shares in body should have at least 1 items' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config: {shares: []}
EOF

reject "share without name and stores" 'spec.config.shares.name: Required value' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{exportPath: /a}]
EOF

reject "exportPath without leading /" \
  "spec.config.shares.exportPath in body should match '^/'" <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, exportPath: export, metadataStore: m, contentStore: c}]
EOF

reject "auth method krb5" \
  'spec.config.shares.allowedAuthMethods: Unsupported value: "krb5"' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares:
      - {name: a, metadataStore: m, contentStore: c, allowedAuthMethods: [krb5]}
EOF

reject "mode above 0777" \
  'spec.config.shares.rootDirectoryAttributes.mode in body should be less than or equal to 511' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares:
      - {name: a, metadataStore: m, contentStore: c, rootDirectoryAttributes: {mode: 1000}}
EOF

reject "backend type nfs" \
  'spec.config.backends.type: Unsupported value: "nfs": supported values: "badger", "local", "s3"' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, metadataStore: m, contentStore: c}]
    backends: [{name: m, type: nfs}]
EOF

reject "backend name with capitals" \
  'spec.config.backends.name in body should match' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, metadataStore: m, contentStore: c}]
    backends: [{name: S3_Content, type: s3}]
EOF

reject "backend config value not a string" \
  'spec.config.backends.config.force_path_style in body must be of type string' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, metadataStore: m, contentStore: c}]
    backends: [{name: c, type: s3, config: {bucket: b, force_path_style: true}}]
EOF

reject "credentialsSecretRef without name" \
  'spec.config.backends.credentialsSecretRef.name: Required value' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, metadataStore: m, contentStore: c}]
    backends: [{name: c, type: s3, credentialsSecretRef: {accessKeyIDKey: k}}]
EOF

reject "cache type disk" \
  'spec.config.caches.type: Unsupported value: "disk"' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, metadataStore: m, contentStore: c}]
    caches: [{name: k, type: disk}]
EOF

reject "flusher workers 0" \
  'spec.config.caches.flusher.workers in body should be greater than or equal to 1' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, metadataStore: m, contentStore: c}]
    caches: [{name: k, flusher: {workers: 0}}]
EOF

reject "flusher interval 10 seconds" \
  'spec.config.caches.flusher.interval in body should match' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  config:
    shares: [{name: a, metadataStore: m, contentStore: c}]
    caches: [{name: k, flusher: {interval: 10 seconds}}]
EOF

reject "resources.limits.cpu two" 'spec.resources.limits.cpu' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  resources: {limits: {cpu: two}}
EOF

reject "securityContext not an object" \
  'spec.securityContext in body must be of type object' <<EOF
$head
spec:
  image: x
  storage: {metadataSize: 10Gi}
  securityContext: privileged
EOF

# --- 4. status subresource --------------------------------------------------
# Through the status subresource with curl: kubectl < 1.24 (the one built
# from the 1.20 tree on a machine without kubectl) has no --subresource.
status_patch() {
  curl -sS --fail-with-body --cacert "$DITTOFS_CA_CERT" \
    -H "Authorization: Bearer $(cat "$DITTOFS_ADMIN_TOKEN_FILE")" \
    -H "Content-Type: application/merge-patch+json" -X PATCH --data "$1" \
    "$DITTOFS_APISERVER/apis/dittofs.dittofs.com/v1alpha1/namespaces/$ns/dittoservers/dittofs-sample/status" 2>&1
}
out=$(status_patch '{"status":{"phase":"Running","availableReplicas":1,"nfsEndpoint":"dittofs-sample.'"$ns"'.svc.cluster.local:2049","observedGeneration":1,"conditions":[{"type":"Ready","status":"True","reason":"StatefulSetReady","message":"StatefulSet has 1/1 ready replicas","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}')
check "status subresource accepts a valid status" test $? -eq 0
cols=$(k get ditto dittofs-sample --no-headers | awk '{print $3, $4, $5}')
expect_eq "printer columns show the status" \
  "1 dittofs-sample.$ns.svc.cluster.local:2049 Running" "$cols"
if out=$(status_patch '{"status":{"phase":"Exploded"}}'); then
  not_ok "status rejects an unknown phase" "accepted"
else
  case $out in
    *'status.phase: Unsupported value: '*Exploded*) ok "status rejects an unknown phase" ;;
    *) not_ok "status rejects an unknown phase" "$out" ;;
  esac
fi
gen=$(get dittofs-sample '{.metadata.generation}')
expect_eq "status writes do not bump metadata.generation" "1" "$gen"

# --- 5. rendered objects ------------------------------------------------------
codec_dir=${DITTOFS_BUILD_DIR:-$root/build}
render_ns="$ns-render"
render() {
  LUA_PATH="$root/lua/?.lua;$root/policies/?.lua" \
  LUA_CPATH="$codec_dir/?.so" lua5.4 - "$1" "$render_ns" <<'LUA'
local codec = require("codec")
local policy = require("dittoserver")
local f = assert(io.open(arg[1], "rb"))
local text = f:read("a")
f:close()
for _, d in ipairs(assert(codec.yaml_decode_all(text))) do
  if d.kind == "DittoServer" then
    local errs = policy.validate(d)
    assert(#errs == 0, table.concat(errs, "\n"))
    io.write(codec.yaml_encode_all(policy.render(d, { name = d.metadata.name,
      namespace = arg[2], cluster_domain = "cluster.local" })))
  end
end
LUA
}
if [ ! -f "$codec_dir/codec.so" ]; then
  n=$((n + 1))
  echo "not ok $n - rendered objects: $codec_dir/codec.so not built"
  failed=$((failed + 1))
else
  "$KUBECTL" create namespace "$render_ns" >/dev/null 2>&1
  trap 'cleanup; "$KUBECTL" delete namespace "$render_ns" --wait=false >/dev/null 2>&1 || true' EXIT
  for f in "$root"/deploy/samples/*.yaml; do
    if out=$(render "$f" 2>&1); then
      check "rendered $(basename "$f") is accepted" \
        sh -c 'printf "%s" "$1" | "$2" apply --server-side -n "$3" -f -' \
        _ "$out" "$KUBECTL" "$render_ns"
    else
      not_ok "rendered $(basename "$f") is accepted" "$out"
    fi
  done
  # the StatefulSet controller turns the template into a pod and PVCs
  pod=""
  for _ in $(seq 1 30); do
    pod=$("$KUBECTL" -n "$render_ns" get pod dittofs-s3-0 \
      -o jsonpath='{.spec.containers[0].env[0].name}' 2>/dev/null) && break
    sleep 1
  done
  expect_eq "pod created from the template, credentials as env" \
    "DITTOFS_CONTENT_STORES_S3-CONTENT_S3_ACCESS_KEY_ID" "$pod"
  # each StatefulSet is synced on its own: wait for this one's claims too
  for _ in $(seq 1 30); do
    pvcs=$("$KUBECTL" -n "$render_ns" get pvc -o name 2>/dev/null \
      | grep -c 'dittofs-sample-0$')
    [ "$pvcs" = 2 ] && break
    sleep 1
  done
  expect_eq "metadata and content PVCs of the README sample" "2" "$pvcs"
fi

tap_summary
