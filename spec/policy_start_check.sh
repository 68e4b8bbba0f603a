#!/usr/bin/env bash
# The operator started on a policy directory whose set cannot be loaded,
# without a cluster (spec/integration/reload_start_test.sh checks the same
# against a real apiserver, with the Event, the Lease and the audit log).
# The kubeconfig points at a closed port: every request fails at once, which
# is all the waiting process makes (the ConfigMap GET and the Event).
#   1. an unreadable directory: exit 4, as before;
#   2. a syntax error: the process stays up, /healthz 200, /readyz 500 "no
#      valid policies: FILE:LINE: ...", the log line with file:line,
#      dittofs_policy_reload_total{result="rejected"} 1, no
#      dittofs_policy_info, no leader election, no informer;
#   3. no dittoserver.lua instead: rejected 2, /readyz says so;
#   4. a valid set: "policies loaded", accepted 1, dittofs_policy_info, the
#      informers and the elector start (/readyz: caches not synced);
#   5. SIGTERM, while waiting and after the start: exit 0.
# The binary: env DITTOFS_OPERATOR, else build/dittofs-operator. Output: TAP
# lines and a summary; exit status 1 when a check failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=integration/tap.sh
. "$root/spec/integration/tap.sh"
BIN=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
tmp=$(mktemp -d)
pol="$tmp/policies"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${failed:-0}" -gt 0 ]; then
    for f in "$tmp"/*.log; do
      [ -f "$f" ] || continue
      echo "# --- last lines of $f"
      tail -n 20 "$f" | sed 's/^/#   /'
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters:
- name: closed
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
contexts:
- name: closed
  context: {cluster: closed, user: u, namespace: start-check}
current-context: closed
users:
- name: u
  user: {token: t}
EOF
mkdir "$pol" "$tmp/nomain" "$tmp/good"
printf '%s\n' 'local policy = require("dittoserver.default").new()' \
  'return = policy' >"$pol/dittoserver.lua"
printf '%s\n' 'return require("dittoserver.default").new()' \
  >"$tmp/nomain/helper.lua"
printf '%s\n' 'return require("dittoserver.default").new()' \
  >"$tmp/good/dittoserver.lua"
syntax_err="$pol/dittoserver.lua:2: unexpected symbol near '='"

metrics() { curl -sf "http://127.0.0.1:$mport/metrics"; }
reloads() {
  metrics | sed -n "s/^dittofs_policy_reload_total{result=\"$1\"} //p"
}
reloads_above() { [ "$(reloads "$1")" -gt "$2" ]; }
info_lines() { metrics | grep -c '^dittofs_policy_info{'; }
readyz() {
  curl -s -o "$tmp/readyz.body" -w '%{http_code}' "http://127.0.0.1:$hport/readyz"
  echo " $(cat "$tmp/readyz.body")"
}
readyz_has() {
  local r
  r=$(readyz)
  grep -qF -- "$1" <<<"$r" || { echo "$r"; return 1; }
}
# replace SRC: the policy directory holds the files of SRC only
replace() {
  rm -f "$pol"/*.lua
  cp "$1"/*.lua "$pol"/
}
# start_operator LOG ARGS...: sets $op, $mport, $hport
start_operator() {
  local log=$1
  shift
  "$BIN" --kubeconfig "$tmp/kubeconfig" --policies "$pol" \
    --policies-configmap start-policies \
    --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
    --log-level debug "$@" >"$log" 2>&1 &
  op=$!
  pids+=("$op")
  wait_for 20 grep -q 'health_port=' "$log"
  mport=$(sed -n 's/.*metrics_port=\([0-9]*\).*/\1/p' "$log" | head -n1)
  hport=$(sed -n 's/.*health_port=\([0-9]*\).*/\1/p' "$log" | head -n1)
}
# sigterm: SIGTERM to $op; $rc is its exit status
sigterm() {
  kill -TERM "$op"
  wait "$op"
  rc=$?
}

# --- 1. what stays fatal -----------------------------------------------------
"$BIN" --kubeconfig "$tmp/kubeconfig" --policies "$tmp/none" >"$tmp/none.log" 2>&1
expect_eq "an unreadable policy directory: exit 4" 4 "$?"

# --- 2. a syntax error at start ----------------------------------------------
start_operator "$tmp/term.log"
check "SIGTERM test: waiting" \
  wait_for 10 grep -q 'cannot load the policies: waiting' "$tmp/term.log"
sigterm
expect_eq "SIGTERM while waiting: exit 0" 0 "$rc"

start_operator "$tmp/op.log" --leader-elect --leader-election-namespace ns
sleep 2
check "a syntax error at start: still running after 2 s" kill -0 "$op"
check "/healthz 200" curl -sf "http://127.0.0.1:$hport/healthz"
expect_eq "/readyz 500 with the reason" "500 no valid policies: $syntax_err" \
  "$(readyz)"
check "the log line has file:line" grep -qF \
  "msg=\"cannot load the policies: waiting for a valid set, not reconciling\" dir=$pol error=\"$syntax_err\"" \
  "$tmp/op.log"
expect_eq "dittofs_policy_reload_total: accepted 0, rejected 1" "0 1" \
  "$(reloads accepted) $(reloads rejected)"
expect_eq "no dittofs_policy_info" 0 "$(info_lines)"
check "no leader election, no informer" \
  sh -c "! grep -E 'msg=\"(leader election|watch attempt|watch failed)' '$tmp/op.log'"
# requests METHOD: rest_client_requests_total of METHOD (all codes)
requests() {
  metrics | awk -v m="method=\"$1\"" \
    '/^rest_client_requests_total\{/ && index($0, m) { n += $NF } END { print n + 0 }'
}
expect_eq "its only requests: the ConfigMap's GET and the Event's POST" "1 1 0 0 0" \
  "$(requests GET) $(requests POST) $(requests PUT) $(requests PATCH) $(requests DELETE)"

# --- 3. still broken ---------------------------------------------------------
replace "$tmp/nomain"
check "no dittoserver.lua: rejected too" wait_for 10 reloads_above rejected 1
check "... /readyz says so" readyz_has "500 no valid policies: $pol: no dittoserver.lua policy"
expect_eq "... still no dittofs_policy_info" 0 "$(info_lines)"

# --- 4. a valid set ----------------------------------------------------------
replace "$tmp/good"
check "a valid set: policies loaded" \
  wait_for 10 grep -q "msg=\"policies loaded\" origin=$pol" "$tmp/op.log"
expect_eq "dittofs_policy_reload_total: accepted 1, rejected 2" "1 2" \
  "$(reloads accepted) $(reloads rejected)"
expect_eq "dittofs_policy_info: one series, the directory's" 1 "$(info_lines)"
check "the elector starts" grep -q 'msg="leader election"' "$tmp/op.log"
check "the informers start (/readyz: caches not synced)" \
  wait_for 10 readyz_has " not synced: list: GET "
check "/healthz 200" curl -sf "http://127.0.0.1:$hport/healthz"
sigterm
expect_eq "SIGTERM: exit 0" 0 "$rc"

tap_summary
