#!/usr/bin/env bash
# Informer benchmark against the local control plane (deploy/local/cluster.sh):
#   1. initial sync of N ConfigMaps (~1 KiB each) by our informer vs
#      `kubectl get configmaps -A -o json`, same control plane, same run
#      (median of RUNS; target: ours <= 1.5x kubectl);
#   2. cache memory for those objects by malloc accounting (mallinfo2
#      deltas) against their JSON size (target <= 2x);
#   3. watch event -> subscriber latency at RATE events/s (target p99 <= 5 ms);
#   4. CPU of an idle watch over IDLE seconds (target ~0).
# Usage: spec/bench/informer_bench.sh   (env: N=10000 VALUE=900 RUNS=3
#        RATE=100 LAT_SECONDS=30 IDLE=30 BUILD_DIR=build). Starts the control
# plane if needed (cluster.sh start is idempotent).
# SYNTHETIC=1 (no cluster): instead, the cache memory of N DittoServers
# (default 1000 and 10000) with their ConfigMap, Services, StatefulSet and
# Pod as the apiserver serves them (informer_bench_objects.json), cloned
# into one cache per kind and the controller's owner index: heap bytes per
# DittoServer and the 10,000 projection, per kind, and the times of an
# object's way in and of reading it back.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
syn_n=${N:-1000 10000}
N=${N:-10000}
VALUE=${VALUE:-900}
RUNS=${RUNS:-3}
RATE=${RATE:-100}
SECONDS_LAT=${LAT_SECONDS:-30}
IDLE=${IDLE:-30}
NS=${BENCH_NS:-informer-bench}

# Build the core library (if needed) and the benchmark program.
if [ ! -f "$build/libdittofs_core.a" ]; then
  cmake -S "$root" -B "$build" -DWERROR=ON >/dev/null
  cmake --build "$build" -j2 --target dittofs_core >/dev/null
fi
bin=$build/informer_bench
cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -D_GNU_SOURCE \
  -I"$root/core" -I"$root/spec/c" "$root/spec/bench/informer_bench.c" \
  "$build/libdittofs_core.a" \
  $(pkg-config --cflags libcurl openssl) \
  $(pkg-config --cflags --libs libcjson yaml-0.1) -lm -ldl \
  -o "$bin"

if [ -n "${SYNTHETIC:-}" ]; then
  for n in $syn_n; do
    echo "# synthetic: $n DittoServers and their children, no cluster"
    "$bin" synthetic "$n" "$root/spec/bench/informer_bench_objects.json"
  done
  exit 0
fi

set -a
eval "$("$root/deploy/local/cluster.sh" start)"
set +a
kubectl=${DITTOFS_KUBECTL:-kubectl}

have=$("$kubectl" get configmaps -n "$NS" -l bench=bench --no-headers 2>/dev/null | wc -l || true)
if [ "$have" -lt "$N" ]; then
  echo "# populating $NS with $N ConfigMaps (value $VALUE bytes)"
  "$bin" populate "$NS" "$N" "$VALUE"
fi
total=$("$kubectl" get configmaps -A --no-headers | wc -l)
echo "# configmaps in the cluster: $total"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# initial sync (median of $RUNS)"
k=(); o=()
for i in $(seq "$RUNS"); do
  s=$(date +%s.%N)
  "$kubectl" get configmaps -A -o json >/dev/null
  e=$(date +%s.%N)
  k+=("$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.3f", b-a}')")
  s=$(date +%s.%N)
  "$bin" sync >"$build/informer_bench.sync.out"
  e=$(date +%s.%N)
  o+=("$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.3f", b-a}')")
done
kmed=$(printf '%s\n' "${k[@]}" | median)
omed=$(printf '%s\n' "${o[@]}" | median)
echo "kubectl_get_all_json_seconds=$kmed  (runs: ${k[*]})"
echo "informer_process_sync_seconds=$omed  (runs: ${o[*]}; process start to synced)"
grep -E '^(sync_seconds|objects)=' "$build/informer_bench.sync.out"
echo "sync_ratio_vs_kubectl=$(awk -v a="$omed" -v b="$kmed" 'BEGIN{printf "%.3f", a/b}')  (target <= 1.5)"

echo "# cache memory (all namespaces)"
"$bin" memory | grep -E '^(objects|json_|cache_|heap_|ratio_|avg_)'


echo "# event -> subscriber latency at $RATE/s for ${SECONDS_LAT}s"
"$bin" latency "$NS-lat" "$RATE" "$SECONDS_LAT"

echo "# idle watch CPU over ${IDLE}s"
"$bin" idle "$NS-idle" "$IDLE"
