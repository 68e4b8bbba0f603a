#!/usr/bin/env bash
# The README's run command: installs what is missing, builds the operator,
# starts the local control plane (etcd + kube-apiserver +
# kube-controller-manager, cached under ~/.cache after the first build),
# installs the DittoServer CRD, applies the README's sample, and shows what
# the operator renders for the DittoServer exactly as the apiserver stored
# it (CRD defaults included), with --script-test.
# (The controller issue turns the last step into a live reconcile.)
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

say "what the operator applies for it (dittofs-operator --script-test)"
"$kubectl" get ditto dittofs-sample -o yaml |
  build/dittofs-operator --script-test -

say "done: the control plane keeps running (deploy/local/cluster.sh stop ends it)"
