#!/usr/bin/env bash
# The README's run command: installs what is missing, builds the operator,
# starts the local control plane (etcd + kube-apiserver +
# kube-controller-manager, cached under ~/.cache after the first build),
# installs the DittoServer CRD, applies the README's sample, and performs one
# reconcile pass with --script-test: renders the DittoServer exactly as the
# apiserver stored it (CRD defaults included), applies the children with
# server-side apply, plays the kubelet so the pod turns ready, derives the
# status from the live children and writes it, then shows `kubectl get ditto`.
# (The controller issue replaces the hand-driven pass with the operator.)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
say() { printf '\n==> %s\n' "$*"; }

say "installing build dependencies"
deploy/local/deps.sh
say "building"
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
say "starting the local control plane"
deploy/local/cluster.sh start
set -a
eval "$(deploy/local/cluster.sh env)"
set +a
kubectl=${DITTOFS_KUBECTL:-kubectl}

say "installing the DittoServer CRD"
"$kubectl" apply --server-side -f crd/dittoserver.yaml
"$kubectl" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com

say "applying the README sample (deploy/samples/dittoserver.yaml)"
"$kubectl" apply --server-side -f deploy/samples/dittoserver.yaml
"$kubectl" get ditto

name=dittofs-sample
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "what the operator applies for it (dittofs-operator --script-test)"
"$kubectl" get ditto "$name" -o yaml >"$work/ds.yaml"
build/dittofs-operator --script-test "$work/ds.yaml" | tee "$work/out.yaml"

say "applying the children (server-side apply, field manager dittofs-operator)"
# Every document but the last (the DittoServer with its status).
awk 'BEGIN { n = 0 } /^---$/ { n++ } { doc[n] = doc[n] $0 "\n" }
     END { for (i = 0; i < n; i++) printf "%s", doc[i] }' "$work/out.yaml" |
  "$kubectl" apply --server-side --field-manager=dittofs-operator --force-conflicts -f -

say "playing the kubelet: marking the pod Running and Ready"
deploy/local/kubelet.sh ready default "$name" --timeout 120

say "deriving the status from the live children"
{
  cat "$work/ds.yaml"
  for obj in configmap/$name-config service/$name service/$name-headless \
             statefulset/$name; do
    echo "---"
    "$kubectl" get "$obj" -o yaml
  done
} >"$work/observed.yaml"
build/dittofs-operator --script-test "$work/observed.yaml" --output json \
  >"$work/out.json"
# The status object of the JSON output, written through the status subresource.
status=$(sed -n 's/.*"status":\({"apiVersion".*}\)}$/\1/p' "$work/out.json")
if [ -z "$status" ]; then
  status=$(tr -d '\n' <"$work/out.json" | sed 's/.*"status"://; s/}$//')
fi
curl -sS --fail -o /dev/null --cacert "$DITTOFS_CA_CERT" \
  -H "Authorization: Bearer $(cat "$DITTOFS_ADMIN_TOKEN_FILE")" \
  -H "Content-Type: application/merge-patch+json" -X PATCH \
  --data "$status" \
  "$DITTOFS_APISERVER/apis/dittofs.dittofs.com/v1alpha1/namespaces/default/dittoservers/$name/status"
"$kubectl" get ditto

say "the same through the operator's own Kubernetes client (--check-cluster)"
build/dittofs-operator --check-cluster

say "done: the control plane keeps running (deploy/local/cluster.sh stop ends it)"
