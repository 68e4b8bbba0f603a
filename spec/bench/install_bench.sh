#!/usr/bin/env bash
# spec/bench/install_bench.sh: how long each step of the install flow takes
# (issue 9 section 5) on the running local test ground
# (deploy/local/cluster.sh start: control plane and node).
#
# It runs spec/integration/install_test.sh (through with-cluster) RUNS
# times: image import, `kubectl apply -f deploy/install.yaml` -> both
# operator pods Ready and one leader, the README sample Running and serving,
# the policies ConfigMap replaced with the example policy -> reload ->
# StatefulSet updated, a broken policy refused, the rollback noticed, the
# leader pod deleted -> the other replica leads and reconciles, uninstall.
# The test prints "# time STEP: N ms" per step; this script prints each
# run's value and, with RUNS > 1, the p50 and the max per step. A run whose
# checks fail is reported (its timings are still shown, marked).
#
# Usage: spec/bench/install_bench.sh
#   env: RUNS=1, DITTOFS_OPERATOR (the binary --script-test runs; default
#        build/dittofs-operator), KEEP_LOGS=1 (keep the test's TAP output
#        in /tmp/install_bench.<run>.tap)
# Output: "# " progress lines, then "STEP<TAB>run1 run2 ...<TAB>p50<TAB>max"
# (ms) per step.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${RUNS:-1}
export DITTOFS_OPERATOR=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
[ -x "$DITTOFS_OPERATOR" ] || { echo "no $DITTOFS_OPERATOR: build first" >&2; exit 1; }
p50() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
max() { sort -n | tail -n1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$RUNS"); do
  t0=$(date +%s)
  rc=0
  "$root/spec/integration/with-cluster" "$root/spec/integration/install_test.sh" \
    >"$out/run$i.tap" 2>&1 || rc=$?
  echo "# run $i: $(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out/run$i.tap" || echo "no summary") in $(($(date +%s) - t0)) s$([ "$rc" = 0 ] || echo " (FAILED: timings of a failed run)")"
  if [ "$rc" != 0 ]; then grep '^not ok' "$out/run$i.tap" | sed 's/^/#   /' || true; fi
  [ "${KEEP_LOGS:-0}" = 1 ] && cp "$out/run$i.tap" "/tmp/install_bench.$i.tap"
  sed -n 's/^# time \(.*\): \([0-9-]*\) ms$/\1\t\2/p' "$out/run$i.tap" >"$out/times$i"
done

echo "# Kubernetes: $(sed -n 's/^# Kubernetes //p' "$out/run1.tap")"
printf 'step\truns (ms)%s\n' "$([ "$RUNS" -gt 1 ] && printf '\tp50\tmax')"
cut -f1 "$out/times1" | while IFS= read -r step; do
  vals=$(for i in $(seq 1 "$RUNS"); do
    awk -F'\t' -v s="$step" '$1 == s { print $2 }' "$out/times$i"
  done)
  line="$step\t$(echo "$vals" | tr '\n' ' ' | sed 's/ $//')"
  if [ "$RUNS" -gt 1 ]; then
    line="$line\t$(echo "$vals" | p50)\t$(echo "$vals" | max)"
  fi
  printf '%b\n' "$line"
done
