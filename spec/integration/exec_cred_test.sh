#!/usr/bin/env bash
# spec/integration/exec_cred_test.sh: the operator with --leader-elect on the
# local control plane, its kubeconfig's user an exec credential plugin (run
# through spec/integration/with-cluster). The plugin prints the admin token
# ($DITTOFS_ADMIN_TOKEN_FILE): run 1 expiring in 80 s, so that the renewal
# is due 40 s later (the 30 s plugin timeout plus 10 s, at most half the
# lifetime); run 2, that renewal, hangs until the timeout kills it; run 3
# (after the 1 s backoff) succeeds. While run 2 hangs:
#   - the operator keeps leading (default lease 15 s, renew deadline 10 s:
#     a process stalled for 30 s would lose the lease and exit) and the
#     Lease's renewTime keeps advancing;
#   - a DittoServer created and then changed is reconciled, with the old
#     token, well before the plugin's timeout;
# then the failed run is logged, the next one succeeds, no plugin process
# is left (no zombie) and no token is logged.
# Output: one "ok N - ..." / "not ok N - ..." line per check, then a
# summary; exit status 1 when any check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tap.sh
. "$root/spec/integration/tap.sh"
# shellcheck source=crd_install.sh
. "$root/spec/integration/crd_install.sh"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
BIN=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
STANDIN=${DITTOFS_STANDIN_IMAGE:-dittofs-local/dittofs-standin:0.1}
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
: "${DITTOFS_APISERVER:?run through spec/integration/with-cluster}"
: "${DITTOFS_CA_CERT:?run through spec/integration/with-cluster}"
: "${DITTOFS_ADMIN_TOKEN_FILE:?run through spec/integration/with-cluster}"
ns="x-exec-$$"
lease=exec-lease
tmp=$(mktemp -d)
op=""

cleanup() {
  [ -n "$op" ] && kill -9 "$op" 2>/dev/null
  wait 2>/dev/null
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  if [ "${failed:-0}" -gt 0 ] && [ -f "$tmp/op.log" ]; then
    echo "# --- last lines of the operator log"
    tail -n 40 "$tmp/op.log" | sed 's/^/#   /'
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
runs() { cat "$tmp/count" 2>/dev/null || echo 0; }
renew_time() { "$KUBECTL" -n "$ns" get lease "$lease" -o 'jsonpath={.spec.renewTime}' 2>/dev/null; }
holder() { "$KUBECTL" -n "$ns" get lease "$lease" -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null; }
hanging() { [ "$(runs)" = 2 ] && ! grep -q 'timed out after 30000 ms' "$tmp/op.log"; }

# --- the plugin and the kubeconfig -----------------------------------------
cat >"$tmp/plugin.sh" <<'EOF'
#!/bin/sh
n=$(cat "$D/count" 2>/dev/null || echo 0); n=$((n+1))
echo $n > "$D/count"
case $n in
1) ttl=80 ;;
2) date +%s%N > "$D/hang.start"; echo 'exec plugin: hanging' >&2; exec sleep 300 ;;
*) ttl=3600 ;;
esac
tok=$(cat "$TOKFILE")
t=$(date -u -d "@$(( $(date +%s) + ttl ))" +%Y-%m-%dT%H:%M:%SZ)
printf '{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"%s","expirationTimestamp":"%s"}}' "$tok" "$t"
EOF
chmod 755 "$tmp/plugin.sh"
cat >"$tmp/exec.kubeconfig" <<EOF
apiVersion: v1
kind: Config
current-context: x
clusters:
- name: c
  cluster:
    server: $DITTOFS_APISERVER
    certificate-authority: $DITTOFS_CA_CERT
contexts:
- name: x
  context: {cluster: c, user: u, namespace: $ns}
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: $tmp/plugin.sh
      env:
      - {name: D, value: "$tmp"}
      - {name: TOKFILE, value: "$DITTOFS_ADMIN_TOKEN_FILE"}
EOF

# --- setup -------------------------------------------------------------------
# The CRD is shared with the other tests: installed only when missing.
if ! "$KUBECTL" get crd dittoservers.dittofs.dittofs.com >/dev/null 2>&1; then
  check "CRD installed" crd_install --force-conflicts
fi
"$KUBECTL" wait --for condition=established --timeout=60s \
  crd/dittoservers.dittofs.dittofs.com >/dev/null
"$KUBECTL" create namespace "$ns" >/dev/null

"$BIN" --kubeconfig "$tmp/exec.kubeconfig" --namespace "$ns" --leader-elect \
  --leader-election-namespace "$ns" --leader-election-id "$lease" \
  --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
  --log-level debug >"$tmp/op.log" 2>&1 &
op=$!
t_start=$(now_ms)
check "the operator leads with the plugin's token" \
  wait_for 30 grep -q 'became leader' "$tmp/op.log"
expect_eq "one plugin run so far" 1 "$(runs)"
me=$(holder)
check "the Lease names the operator ($me)" test -n "$me"

# --- the renewal hangs ------------------------------------------------------
check "the renewal starts ahead of the expiry (~40 s after the first token)" \
  wait_for 60 test -f "$tmp/hang.start"
t_hang=$(now_ms)
echo "# renewal started $(((t_hang - t_start) / 1000)) s after the operator"
r0=$(renew_time)

cat >"$tmp/ds.yaml" <<EOF
apiVersion: dittofs.dittofs.com/v1alpha1
kind: DittoServer
metadata:
  name: ex-1
spec:
  image: $STANDIN
  replicas: 0
  storage:
    metadataSize: 1Gi
EOF
"$KUBECTL" -n "$ns" apply -f "$tmp/ds.yaml" >/dev/null
check "a DittoServer created during the hang is reconciled" \
  wait_for 15 grep -q "msg=\"reconciled\" key=$ns/ex-1 result=success" "$tmp/op.log"
echo "# reconciled $(($(now_ms) - t_hang)) ms into the hang"
check "... while the plugin still hangs (1)" hanging
"$KUBECTL" -n "$ns" patch ditto ex-1 --type merge -p '{"spec":{"nfsPort":2050}}' >/dev/null
check "a change during the hang is reconciled" \
  wait_for 10 sh -c "$KUBECTL -n $ns get configmap ex-1-config -o jsonpath='{.data.config\.yaml}' | grep -q 'port: 2050'"
check "... while the plugin still hangs (2)" hanging

# renewTime samples every 2 s over 12 s of the hang.
distinct=0
last=$r0
for _ in 1 2 3 4 5 6; do
  sleep 2
  r=$(renew_time)
  if [ -n "$r" ] && [ "$r" != "$last" ]; then distinct=$((distinct + 1)); fi
  last=$r
done
echo "# renewTime changed $distinct times in 12 s of the hang ($r0 -> $last)"
check "the Lease keeps being renewed during the hang" test "$distinct" -ge 4
check "... while the plugin still hangs (3)" hanging
expect_eq "the holder is unchanged" "$me" "$(holder)"
check "the operator runs and still leads" \
  sh -c "kill -0 $op && ! grep -q 'leader election lost' '$tmp/op.log'"

# --- the end of the hang ------------------------------------------------------
check "the hanging run is killed at its timeout and logged" \
  wait_for 40 grep -q 'exec credential plugin failed; keeping the previous credential.*timed out after 30000 ms' "$tmp/op.log"
t_end=$(now_ms)
echo "# the plugin hung $(((t_end - t_hang) / 1000)) s"
check "the next run (after the 1 s backoff) succeeds" \
  wait_for 15 sh -c "[ \"\$(cat $tmp/count)\" -ge 3 ]"
sleep 3
check "no plugin process is left (no zombie)" \
  sh -c "[ -z \"\$(ps -o pid= --ppid $op)\" ]"
"$KUBECTL" -n "$ns" patch ditto ex-1 --type merge -p '{"spec":{"nfsPort":2051}}' >/dev/null
check "reconciles go on with the new token" \
  wait_for 10 sh -c "$KUBECTL -n $ns get configmap ex-1-config -o jsonpath='{.data.config\.yaml}' | grep -q 'port: 2051'"
check "the operator still leads" \
  sh -c "kill -0 $op && ! grep -q 'leader election lost' '$tmp/op.log'"
expect_eq "and the holder is unchanged" "$me" "$(holder)"
tok=$(head -c 40 "$DITTOFS_ADMIN_TOKEN_FILE")
check "no token in the log" sh -c "! grep -qF '$tok' '$tmp/op.log'"
kill -TERM "$op"
wait "$op"
expect_eq "SIGTERM: the operator exits 0" 0 "$?"
op=""

tap_summary
