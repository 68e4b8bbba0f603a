#!/usr/bin/env bash
# spec/integration/check_cluster_test.sh: `dittofs-operator --check-cluster`
# against a real kube-apiserver (deploy/local/cluster.sh; run through
# spec/integration/with-cluster; the binary is $DITTOFS_OPERATOR).
#
#   1. CRD missing -> exit 6 with the install hint. Checked only when the
#      CRD is absent when this test starts (ctest runs it before
#      crd_test.sh, alphabetically); it is never deleted here, because other
#      tests share the cluster. Then it is installed if missing.
#   2. the report: config source, server version, DittoServers with phase
#      and nfsEndpoint from status (patched through the status subresource
#      with curl), "-" when absent; --namespace; --output json and yaml.
#   3. connection: --context picks a second context of a copied kubeconfig,
#      $DITTOFS_OPERATOR_KUBECONFIG/_CONTEXT/_NAMESPACE/_KUBE_API_QPS set
#      defaults and the flags win; a wrong CA, a bad token, a ServiceAccount
#      without RBAC, and no configuration at all -> exit 5 with the precise
#      message, and never the token.
#   4. usage errors -> exit 2, nothing on stdout; --help names every
#      environment variable.
# Namespaces cc-<pid>-a and -b, deleted on exit.
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
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
: "${DITTOFS_APISERVER:?}" "${DITTOFS_CA_CERT:?}" "${DITTOFS_ADMIN_TOKEN_FILE:?}"
GV=dittofs.dittofs.com/v1alpha1
CRD=dittoservers.dittofs.dittofs.com
ns_a="cc-$$-a"
ns_b="cc-$$-b"
tmp=$(mktemp -d)
admin_token=$(cat "$DITTOFS_ADMIN_TOKEN_FILE")

# Settings of the caller's environment must not leak into the cases.
for v in $(compgen -e | grep '^DITTOFS_OPERATOR_'); do
  unset "$v"
done

cleanup() {
  "$KUBECTL" delete namespace "$ns_a" "$ns_b" --wait=false >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# run [-u VAR ...] [VAR=value ...] -- ARGS...: runs the binary under `env`
# with those changes; sets $rc, $out (stdout) and $err (stderr).
run() {
  local envargs=()
  while [ "$1" != "--" ]; do
    envargs+=("$1")
    shift
  done
  shift
  env "${envargs[@]}" "$BIN" "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
}

shown() {
  printf 'exit %s\nstdout:\n%s\nstderr:\n%s' "$rc" "$out" "$err"
}

# expect NAME RC [SUBSTRING-OF-STDERR]: exit status, and for failures an
# empty stdout and the message on stderr.
expect() {
  local name=$1 want=$2 sub=${3:-}
  if [ "$rc" != "$want" ]; then
    not_ok "$name" "want exit $want; $(shown)"
  elif [ "$want" != 0 ] && [ -n "$out" ]; then
    not_ok "$name" "stdout not empty on failure; $(shown)"
  elif [ -n "$sub" ] && [[ $err != *"$sub"* ]]; then
    not_ok "$name" "stderr lacks: $sub; $(shown)"
  else
    ok "$name"
  fi
}

# has NAME SUBSTRING / lacks NAME SUBSTRING: on stdout (normalised blanks).
has() {
  if [[ $(printf '%s' "$out" | tr -s ' ') == *"$2"* ]]; then
    ok "$1"
  else
    not_ok "$1" "stdout lacks: $2; $(shown)"
  fi
}

lacks() {
  if [[ $(printf '%s' "$out" | tr -s ' ') != *"$2"* ]]; then
    ok "$1"
  else
    not_ok "$1" "stdout has: $2; $(shown)"
  fi
}

# no_token NAME TOKEN: the token appears neither on stdout nor on stderr.
no_token() {
  if [[ $out$err == *"$2"* ]]; then
    not_ok "$1" "the token was printed"
  else
    ok "$1"
  fi
}

api() {
  curl -sS --fail-with-body --cacert "$DITTOFS_CA_CERT" \
    -H "Authorization: Bearer $admin_token" "$@" 2>&1
}

# --- 1. CRD missing ------------------------------------------------------------
if "$KUBECTL" get crd "$CRD" >/dev/null 2>&1; then
  ok "missing CRD -> exit 6 # SKIP the CRD was installed before this test"
else
  run -- --check-cluster
  if crd_has_cel; then
    hint="the DittoServer CRD is not installed: kubectl apply -f crd/dittoserver.yaml"
  else # the rules are a field this apiserver refuses (crd_install.sh)
    hint="the DittoServer CRD is not installed: kubectl apply --validate=false -f crd/dittoserver.yaml"
  fi
  expect "missing CRD -> exit 6 with the install hint for this version" 6 "$hint"
  crd_install >/dev/null # without its CEL rules below 1.28
  "$KUBECTL" wait --for condition=established --timeout=60s "crd/$CRD" \
    >/dev/null
fi
# Established comes a moment before discovery serves the resource.
for _ in $(seq 60); do
  api "$DITTOFS_APISERVER/apis/$GV" | grep -q '"name":"dittoservers"' && break
  sleep 1
done

# --- 2. the report -------------------------------------------------------------
"$KUBECTL" create namespace "$ns_a" >/dev/null
"$KUBECTL" create namespace "$ns_b" >/dev/null
version=$(api "$DITTOFS_APISERVER/version" | jq -r .gitVersion)
case $version in
  v1.*) ;;
  *) echo "not ok - cannot read the server version (jq installed?): '$version'"
     exit 1 ;;
esac
context=$("$KUBECTL" config current-context)

run -- --check-cluster --namespace "$ns_a"
expect "empty namespace: exit 0" 0
has "config source names the kubeconfig and context" \
  "config: $KUBECONFIG context=$context"
has "server URL" "server: $DITTOFS_APISERVER"
has "server gitVersion $version" "version: $version"
has "CRD reported served" "crd: $CRD/v1alpha1 is served"
has "zero DittoServers counted" "dittoservers in namespace $ns_a: 0"

ds() {
  printf 'apiVersion: %s\nkind: DittoServer\nmetadata: {name: %s}\n' "$GV" "$1"
  printf 'spec: {image: x, storage: {metadataSize: 1Gi}}\n'
}
ds alpha | "$KUBECTL" -n "$ns_a" apply --server-side -f - >/dev/null
ds beta | "$KUBECTL" -n "$ns_a" apply --server-side -f - >/dev/null
ds gamma | "$KUBECTL" -n "$ns_b" apply --server-side -f - >/dev/null
status_patch() {
  api -H "Content-Type: application/merge-patch+json" -X PATCH --data "$3" \
    "$DITTOFS_APISERVER/apis/$GV/namespaces/$1/dittoservers/$2/status" \
    >/dev/null
}
status_patch "$ns_a" alpha \
  '{"status":{"phase":"Running","nfsEndpoint":"alpha.'"$ns_a"'.svc.cluster.local:2049"}}'
status_patch "$ns_b" gamma '{"status":{"phase":"Pending"}}'

run -- --check-cluster
expect "all namespaces: exit 0" 0
has "phase and nfsEndpoint from status" \
  "$ns_a/alpha Running alpha.$ns_a.svc.cluster.local:2049"
has "no status: '-' for both" "$ns_a/beta - -"
has "the other namespace, phase without endpoint" "$ns_b/gamma Pending -"
has "header of the list" "NAMESPACE/NAME PHASE NFS ENDPOINT"
a_line=$(printf '%s\n' "$out" | grep -n "^$ns_a/alpha " | cut -d: -f1)
b_line=$(printf '%s\n' "$out" | grep -n "^$ns_a/beta " | cut -d: -f1)
if [ -n "$a_line" ] && [ -n "$b_line" ] && [ "$a_line" -lt "$b_line" ]; then
  ok "sorted by namespace/name"
else
  not_ok "sorted by namespace/name" "$(shown)"
fi

run -- --check-cluster --namespace "$ns_a"
expect "--namespace: exit 0" 0
has "--namespace: counted" "dittoservers in namespace $ns_a: 2"
has "--namespace: its DittoServers" "$ns_a/beta - -"
lacks "--namespace: nothing from another namespace" "$ns_b/gamma"

run -- --check-cluster --namespace "$ns_a" --output json
expect "--output json: exit 0" 0
got=$(printf '%s' "$out" | jq -c '[.serverVersion, .namespace, .crd,
  [.dittoServers[] | [.namespace, .name, .phase, .nfsEndpoint]]]' 2>&1)
want='["'$version'","'$ns_a'","'$CRD'/v1alpha1",[["'$ns_a'","alpha","Running","alpha.'$ns_a'.svc.cluster.local:2049"],["'$ns_a'","beta",null,null]]]'
if [ "$got" = "$want" ]; then
  ok "--output json: the report as one object, null without status"
else
  not_ok "--output json: the report as one object, null without status" \
    "want: $want
got:  $got"
fi

run -- --check-cluster --namespace "$ns_b" --output yaml
expect "--output yaml: exit 0" 0
has "--output yaml: serverVersion key" "serverVersion: $version"
has "--output yaml: the DittoServer" "phase: Pending"

# --- 3. connection -------------------------------------------------------------
cluster=$("$KUBECTL" config view --minify -o jsonpath='{.contexts[0].context.cluster}')
kc2="$tmp/kc2.yaml"
cp "$KUBECONFIG" "$kc2"
bad_token="not-a-valid-token-$$-x9q"
"$KUBECTL" config --kubeconfig="$kc2" set-credentials bad --token="$bad_token" >/dev/null
"$KUBECTL" config --kubeconfig="$kc2" set-context broken --cluster="$cluster" \
  --user=bad >/dev/null
"$KUBECTL" config --kubeconfig="$kc2" use-context broken >/dev/null

run -- --check-cluster --kubeconfig "$kc2"
expect "bad token (current-context broken): exit 5, Unauthorized" 5 \
  "Unauthorized"
no_token "bad token: not printed" "$bad_token"
run -- --check-cluster --kubeconfig "$kc2" --context "$context"
expect "--context picks the second context: exit 0" 0
has "--context: named in the source" "config: $kc2 context=$context"
run -- --check-cluster --kubeconfig "$kc2" --context nope
expect "--context of an unknown name: exit 5" 5 'context "nope" not found'

run -u KUBECONFIG DITTOFS_OPERATOR_KUBECONFIG="$kc2" \
  DITTOFS_OPERATOR_CONTEXT="$context" -- --check-cluster
expect "\$DITTOFS_OPERATOR_KUBECONFIG and _CONTEXT: exit 0" 0
has "\$DITTOFS_OPERATOR_KUBECONFIG: the file is the source" \
  "config: $kc2 context=$context"
run KUBECONFIG="$kc2" DITTOFS_OPERATOR_KUBECONFIG="$KUBECONFIG" -- \
  --check-cluster
expect "\$DITTOFS_OPERATOR_KUBECONFIG beats \$KUBECONFIG" 0
run DITTOFS_OPERATOR_KUBECONFIG=/nonexistent/kubeconfig -- --check-cluster
expect "\$DITTOFS_OPERATOR_KUBECONFIG of a missing file: exit 5" 5 \
  "/nonexistent/kubeconfig"
run DITTOFS_OPERATOR_KUBECONFIG=/nonexistent/kubeconfig -- --check-cluster \
  --kubeconfig "$KUBECONFIG"
expect "--kubeconfig wins over \$DITTOFS_OPERATOR_KUBECONFIG" 0
run DITTOFS_OPERATOR_CONTEXT=nope -- --check-cluster --kubeconfig "$kc2" \
  --context "$context"
expect "--context wins over \$DITTOFS_OPERATOR_CONTEXT" 0

run DITTOFS_OPERATOR_NAMESPACE="$ns_b" -- --check-cluster
expect "\$DITTOFS_OPERATOR_NAMESPACE: exit 0" 0
has "\$DITTOFS_OPERATOR_NAMESPACE filters" "dittoservers in namespace $ns_b: 1"
run DITTOFS_OPERATOR_NAMESPACE="$ns_b" -- --check-cluster --namespace "$ns_a"
has "--namespace wins over \$DITTOFS_OPERATOR_NAMESPACE" \
  "dittoservers in namespace $ns_a: 2"

# Four requests before the informer syncs (version, discovery, list probe,
# the informer's list) at one per second after a burst of one: >= 3 s.
elapsed() {
  local t0 t1
  t0=$(date +%s%N)
  run "$@"
  t1=$(date +%s%N)
  ms=$(((t1 - t0) / 1000000))
}
elapsed DITTOFS_OPERATOR_KUBE_API_QPS=1 DITTOFS_OPERATOR_KUBE_API_BURST=1 -- \
  --check-cluster --namespace "$ns_a"
if [ "$rc" = 0 ] && [ "$ms" -ge 2900 ]; then
  ok "\$DITTOFS_OPERATOR_KUBE_API_QPS=1 and _BURST=1 rate-limit (${ms} ms)"
else
  not_ok "\$DITTOFS_OPERATOR_KUBE_API_QPS=1 and _BURST=1 rate-limit" \
    "${ms} ms; $(shown)"
fi
elapsed DITTOFS_OPERATOR_KUBE_API_QPS=1 DITTOFS_OPERATOR_KUBE_API_BURST=1 -- \
  --check-cluster --namespace "$ns_a" --kube-api-qps 1000 --kube-api-burst 100
if [ "$rc" = 0 ] && [ "$ms" -lt 2500 ]; then
  ok "--kube-api-qps/--kube-api-burst win over the environment (${ms} ms)"
else
  not_ok "--kube-api-qps/--kube-api-burst win over the environment" \
    "${ms} ms; $(shown)"
fi

# A CA that did not sign the server's certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$tmp/other-ca.key" -out "$tmp/other-ca.crt" -days 1 \
  -subj /CN=not-the-cluster-ca 2>/dev/null
kc_ca="$tmp/wrong-ca.yaml"
cat >"$kc_ca" <<EOF
apiVersion: v1
kind: Config
current-context: c
clusters: [{name: c, cluster: {server: "$DITTOFS_APISERVER", certificate-authority: "$tmp/other-ca.crt"}}]
users: [{name: u, user: {token: "$admin_token"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
EOF
run -- --check-cluster --kubeconfig "$kc_ca"
expect "wrong CA: exit 5 naming the certificate problem" 5 "SSL certificate"
no_token "wrong CA: the token is not printed" "$admin_token"

# A ServiceAccount without RBAC: authenticated, then 403 on the list.
# Its token from a service-account-token Secret asked for by name (1.20
# makes one by itself, current releases only fill one that is asked for).
"$KUBECTL" -n "$ns_a" create serviceaccount nobody >/dev/null
"$KUBECTL" -n "$ns_a" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: nobody-token
  annotations:
    kubernetes.io/service-account.name: nobody
EOF
sa_token=""
for _ in $(seq 60); do
  sa_token=$("$KUBECTL" -n "$ns_a" get secret nobody-token \
    -o jsonpath='{.data.token}' 2>/dev/null | base64 -d)
  [ -n "$sa_token" ] && break
  sleep 1
done
sed "s|token: \"$admin_token\"|token: \"$sa_token\"|; s|$tmp/other-ca.crt|$DITTOFS_CA_CERT|" \
  "$kc_ca" >"$tmp/sa.yaml"
run -- --check-cluster --kubeconfig "$tmp/sa.yaml" --namespace "$ns_a"
expect "ServiceAccount without RBAC: exit 5, forbidden" 5 \
  "cannot list resource \"dittoservers\""
no_token "ServiceAccount: the token is not printed" "${sa_token:-unset}"

run -u KUBECONFIG -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT \
  HOME=/nonexistent -- --check-cluster
expect "no configuration anywhere: exit 5" 5 "no configuration"
if [[ $err == *"/nonexistent/.kube/config"* && $err == *KUBERNETES_SERVICE_HOST* ]]; then
  ok "no configuration: names what was tried"
else
  not_ok "no configuration: names what was tried" "$(shown)"
fi

# --- 4. usage ------------------------------------------------------------------
run -- --check-cluster --output xml
expect "--output xml: exit 2" 2 "--output must be yaml or json"
run -- --check-cluster --kube-api-qps fast
expect "--kube-api-qps fast: exit 2" 2 "--kube-api-qps: 'fast'"
run -- --check-cluster --kube-api-burst 0
expect "--kube-api-burst 0: exit 2" 2 "--kube-api-burst: '0'"
run -- --check-cluster --namespace ../kube-system
expect "--namespace with a slash: exit 2" 2 "is not a namespace name"
run DITTOFS_OPERATOR_KUBE_API_BURST=many -- --check-cluster
expect "bad \$DITTOFS_OPERATOR_KUBE_API_BURST: exit 2 naming the variable" 2 \
  "\$DITTOFS_OPERATOR_KUBE_API_BURST: --kube-api-burst: 'many'"
run -- --check-cluster --script-test "$root/deploy/samples/dittoserver.yaml"
expect "--check-cluster with --script-test: exit 2" 2 "exclude each other"
run -- --check-cluster extra
expect "a stray argument: exit 2" 2 "unexpected argument 'extra'"

run -- --help
missing=""
for f in kubeconfig context namespace kube-api-qps kube-api-burst output; do
  var=DITTOFS_OPERATOR_$(printf '%s' "$f" | tr a-z- A-Z_)
  [[ $out == *"--$f "* && $out == *"[\$$var]"* ]] || missing="$missing --$f/$var"
done
if [ "$rc" = 0 ] && [ -z "$missing" ]; then
  ok "--help lists every flag with its environment variable"
else
  not_ok "--help lists every flag with its environment variable" \
    "missing:$missing"
fi

tap_summary
