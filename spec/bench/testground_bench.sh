#!/usr/bin/env bash
# spec/bench/testground_bench.sh: how fast the real test ground is.
#
#   1. warm start: `cluster.sh stop` then `cluster.sh start` (control plane +
#      node, binaries and images cached), RUNS times; prints each and the p50;
#   2. README sample applied -> first write through its Service succeeds:
#      the operator (under its ServiceAccount) runs, the README sample (with
#      the DittoFS stand-in image, deploy/local/standin/) is applied, and the
#      time until a file PUT through the Service's ClusterIP succeeds is
#      taken, RUNS times (each in a fresh namespace); prints each and the p50.
#
# Usage: spec/bench/testground_bench.sh        (RUNS=5, DITTOFS_KUBE_VERSION=current)
#   BUILD_DIR=build  the operator binary's build directory
# The cold build times are in the caches' BUILD-INFO and the cluster.sh log
# lines ("build done in N s"); this script does not wipe caches.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
RUNS=${RUNS:-5}
BIN=${BUILD_DIR:-$root/build}/dittofs-operator
STANDIN=${DITTOFS_STANDIN_IMAGE:-dittofs-local/dittofs-standin:0.1}
[ -x "$BIN" ] || { echo "no $BIN: build first (cmake --build build)" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
p50() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

deploy/local/cluster.sh start >/dev/null 2>&1 # cold builds happen here, not below
echo "# warm start of control plane + node (Kubernetes ${DITTOFS_KUBE_VERSION:-current})"
starts=()
for i in $(seq 1 "$RUNS"); do
  deploy/local/cluster.sh stop >/dev/null 2>&1
  t0=$(now_ms)
  deploy/local/cluster.sh start >/dev/null 2>"/tmp/testground-start.$i.log"
  starts+=($(($(now_ms) - t0)))
  echo "start $i: ${starts[-1]} ms"
done
echo "warm start p50: $(printf '%s\n' "${starts[@]}" | p50) ms"

set -a
eval "$(deploy/local/cluster.sh env)"
set +a
kubectl=${DITTOFS_KUBECTL:-kubectl}
# shellcheck source=../integration/crd_install.sh
. "$root/spec/integration/crd_install.sh"
KUBECTL=$kubectl crd_install --force-conflicts >/dev/null # without its CEL rules below 1.28
"$kubectl" wait --for condition=established --timeout=60s crd/dittoservers.dittofs.dittofs.com >/dev/null
"$kubectl" apply --server-side --force-conflicts -k deploy/rbac >/dev/null
work=$(mktemp -d)
op=
trap '[ -n "$op" ] && kill "$op" 2>/dev/null; rm -rf "$work"' EXIT
deploy/local/cluster.sh sa-kubeconfig dittofs-system dittofs-operator "$work/sa.kubeconfig" 2>/dev/null
"$BIN" --kubeconfig "$work/sa.kubeconfig" --metrics-bind-address 127.0.0.1:0 \
  --health-probe-bind-address 127.0.0.1:0 >"$work/op.log" 2>&1 &
op=$!
"$kubectl" create --dry-run=client -o json -f deploy/samples/dittoserver.yaml |
  jq --arg img "$STANDIN" '.spec.image = $img | del(.spec.resources) | del(.metadata.namespace)' >"$work/sample.json"

echo "# README sample applied -> first write through the Service succeeds"
writes=()
for i in $(seq 1 "$RUNS"); do
  ns=bench-tg-$$-$i
  "$kubectl" create namespace "$ns" >/dev/null
  t0=$(now_ms)
  "$kubectl" -n "$ns" apply -f "$work/sample.json" >/dev/null
  ip=""
  while :; do
    [ -n "$ip" ] || ip=$("$kubectl" -n "$ns" get service dittofs-sample -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)
    if [ -n "$ip" ] && curl -sf --max-time 1 -X PUT --data-binary hello "http://$ip:9090/files/bench" >/dev/null 2>&1; then
      break
    fi
    if [ $(($(now_ms) - t0)) -gt 180000 ]; then
      echo "run $i: no write after 180 s" >&2
      exit 1
    fi
    sleep 0.1
  done
  writes+=($(($(now_ms) - t0)))
  echo "run $i: ${writes[-1]} ms"
  "$kubectl" delete namespace "$ns" --wait=false >/dev/null
done
echo "apply -> first write p50: $(printf '%s\n' "${writes[@]}" | p50) ms"
