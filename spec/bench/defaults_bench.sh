#!/usr/bin/env bash
# The defaults question of issue 10 §4: which --workers and QPS/burst let a
# 1,000-DittoServer cluster converge fastest without hurting the apiserver?
# (controller-runtime shipped 1 worker and QPS 20, burst 30, until it left
# the limit to the apiserver's priority and fairness; the operator's
# defaults, 8 workers and 500/1000, come from this script's figures.)
#
# For each WORKERS:QPS pair of COMBOS, one controller_bench.sh run of the
# operator alone (PARTS=op, N DittoServers, burst = 1.5 x QPS as client-go's
# 20/30), preceded by one run of the reference client (PARTS=ref: the same
# applies, 8 in flight, no rate limit) on the same control plane. Per run:
# converge time, the operator's CPU, the apiserver's and etcd's CPU over the
# converge, the probe's latency (another client reading a small object 10
# times a second: what the load costs everyone else), and the operator's
# answers by code (429: the apiserver's priority and fairness pushed back).
#
# Usage: spec/bench/defaults_bench.sh
#   env: N=1000 COMBOS="1:20 4:20 ..." REF=1 (0: no reference run)
#        BUILD_DIR=build OUT=<dir> (one subdirectory per run, a table
#        in OUT/table.txt); the rest goes to controller_bench.sh.
# Not part of ctest: about 2-7 min per pair at N=1000 on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
N=${N:-1000}
COMBOS=${COMBOS:-"1:20 4:20 4:50 4:100 8:100 4:200 8:200 16:200 8:1000"}
REF=${REF:-1}
OUT=${OUT:-$(mktemp -d /tmp/defaults-bench.XXXXXX)}
mkdir -p "$OUT"
echo "# N=$N combos=\"$COMBOS\" out=$OUT"

run() { # run NAME ENV...: one controller_bench.sh run into OUT/NAME
  local name=$1
  shift
  env N="$N" IDLE=1 LAT_RUNS=0 SETTLE=0 OP_RUNS=raised OUT="$OUT/$name" "$@" \
    "$root/spec/bench/controller_bench.sh" >"$OUT/$name.log" 2>&1 || {
    echo "# $name: controller_bench.sh failed (see $OUT/$name.log)"
    tail -n 5 "$OUT/$name.log"
    return 1
  }
  echo "# $name: $(grep -E '^(ref_seconds|op_raised_converge_seconds)=' "$OUT/$name.log" | tr '\n' ' ')"
}

[ "$REF" = 1 ] && run ref PARTS=ref
for c in $COMBOS; do
  w=${c%%:*}
  q=${c##*:}
  b=$(awk -v q="$q" 'BEGIN { printf "%d", q * 1.5 }')
  run "w$w-q$q" PARTS=op OP_WORKERS="$w" QPS="$q" BURST="$b"
done

# The table: one row per run, from each run's summary.json.
{
  printf '%-12s %9s %9s %9s %9s %9s %11s %11s %s\n' run converge_s op_cpu_s \
    api_cpu_s etcd_cpu_s req/s probe_p50 probe_p99 codes
  for d in "$OUT"/*/; do
    s=$d/summary.json
    [ -f "$s" ] || continue
    jq -r --arg n "$(basename "$d")" '
      def f($k): (.[$k] // "-" | tostring);
      if has("ref_seconds") then
        [$n, f("ref_seconds"), "-", f("ref_apiserver_cpu_seconds"), f("ref_etcd_cpu_seconds"),
         f("ref_requests_per_second"), f("ref_probe_p50_ms"), f("ref_probe_p99_ms"), "errors:" + f("ref_errors")]
      else
        [$n, f("op_raised_converge_seconds"), f("op_raised_cpu_seconds_converge"),
         f("op_raised_converge_apiserver_cpu_seconds"), f("op_raised_converge_etcd_cpu_seconds"),
         (if (.op_raised_converge_seconds | type) == "number" and (.op_raised_requests | type) == "number"
          then (.op_raised_requests / .op_raised_converge_seconds | floor | tostring) else "-" end),
         f("op_raised_probe_p50_ms"), f("op_raised_probe_p99_ms"), f("op_raised_requests_by_code")]
      end | @tsv' "$s" |
      awk -F'\t' '{ printf "%-12s %9s %9s %9s %9s %9s %11s %11s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
  done
} | tee "$OUT/table.txt"
