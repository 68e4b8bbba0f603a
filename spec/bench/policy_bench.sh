#!/usr/bin/env bash
# Benchmarks of the policy engine and --script-test (issue 2 "Numbers"):
#   1. one evaluation of the README sample in the set's prepared sandbox,
#      validate+render+status and render+status alone: median and p99 in
#      us (target for render+status: median <= 200 us), RSS before/after
#      the loop (ITERATIONS, default 5000; e.g. 100000 to check it is flat);
#   2. `dittofs-operator --script-test` of the sample, from process start:
#      median and max wall time over N runs (target <= 30 ms) and peak RSS
#      from /usr/bin/time -v (target <= 8 MiB).
#   3. with CALLGRIND=1 (valgrind installed), instead of 1 and 2: the
#      instructions of one evaluation for both figures of 1, counted by
#      callgrind inside policy_eval (repeatable on a busy machine, where
#      wall times are not): the difference of a run with 10 + N and one
#      with 10 timed iterations, divided by N (CALLGRIND_N, default 400:
#      the collector's work differs from one evaluation to the next, and
#      a window of 50 moved the figure by up to 2 %).
# Usage: spec/bench/policy_bench.sh [BUILD_DIR] [SAMPLE]
# BUILD_DIR defaults to build/ (must hold dittofs-operator and
# libdittofs_core.a, e.g. after spec/test.sh). Not part of ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
sample=${2:-$root/deploy/samples/dittoserver.yaml}
runs=${RUNS:-50}
cd "$root"

bench="$build/policy_bench"
# shellcheck disable=SC2046
cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -I core $(pkg-config --cflags lua5.4 libcjson yaml-0.1) \
  spec/bench/policy_bench.c "$build/libdittofs_core.a" \
  $(pkg-config --libs libcjson yaml-0.1) \
  "$(find /usr/lib -name liblua5.4.a | head -1)" -lm -ldl -o "$bench"

if [ "${CALLGRIND:-0}" = 1 ]; then
  out=$(mktemp -d)
  cn=${CALLGRIND_N:-400}
  for n in 10 $((cn + 10)); do
    TIMEOUT_MS=60000 valgrind -q --tool=callgrind \
      --toggle-collect=policy_eval --dump-after=bench \
      --callgrind-out-file="$out/cg.$n.%p" "$bench" "$sample" "$n" >/dev/null
  done
  for part in 1 2; do
    ir() { awk '/^summary:/ {print $2}' "$out"/cg."$1".*."$part"; }
    label=validate+render+status
    [ "$part" = 2 ] && label=render+status
    echo "policy_eval ($label): $((($(ir $((cn + 10))) - $(ir 10)) / cn))" \
      "instructions per evaluation (callgrind)"
  done
  rm -rf "$out"
  exit 0
fi
"$bench" "$sample" "${ITERATIONS:-5000}"

op="$build/dittofs-operator"
echo "--script-test $(basename "$sample"): $runs runs"
times=()
for _ in $(seq "$runs"); do
  t0=$(date +%s%N)
  "$op" --script-test "$sample" >/dev/null
  t1=$(date +%s%N)
  times+=($(((t1 - t0) / 1000)))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | sed -n "$((runs / 2 + 1))p")
max=$(echo "$sorted" | tail -1)
echo "  wall from process start: median ${median} us, max ${max} us (fork+exec included)"
if [ -x /usr/bin/time ]; then
  rss=$(/usr/bin/time -v "$op" --script-test "$sample" 2>&1 >/dev/null |
    awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
  echo "  peak RSS ${rss} KiB"
fi
