#!/usr/bin/env bash
# spec/integration/rbac_test.sh: deploy/rbac gives the operator's
# ServiceAccount exactly what the operator uses, checked against a real
# kube-apiserver with RBAC (deploy/local/cluster.sh; run through
# spec/integration/with-cluster).
#
#   1. `kubectl apply --server-side -k deploy/rbac` is accepted; no rule
#      holds a wildcard.
#   2. `cluster.sh sa-kubeconfig dittofs-system dittofs-operator FILE` writes
#      a kubeconfig (mode 600) that authenticates as that ServiceAccount; a
#      ServiceAccount that does not exist fails with a message.
#   3. `kubectl auth can-i` with that kubeconfig: every verb of every rule is
#      allowed, in a test namespace and across all namespaces, and a table of
#      neighbours is forbidden (other verbs on the same resources, writing
#      Pods, Secrets, PVCs, Deployments, Namespaces, the CRD, RBAC itself,
#      Leases outside dittofs-system, list/watch/delete on Leases in it).
#   4. real requests with curl and the ServiceAccount token: server-side
#      apply of a ConfigMap, Service and StatefulSet (201) and their deletion,
#      list and watch of StatefulSets across namespaces, list and watch of
#      Pods, a status apply on a DittoServer, an Event; 403 for deleting a
#      Pod, reading a Secret, creating a DittoServer, a Lease in the test
#      namespace; the Lease in dittofs-system can be created, read and
#      updated but not deleted.
# The RBAC objects are shared with other tests and stay installed; the
# namespace rbac-test-<pid> and the Lease it creates are deleted on exit.
# Output: one "ok N - ..." / "not ok N - ..." line per check, then
# "N passed, N failed"; exit status 1 when any check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tap.sh
. "$root/spec/integration/tap.sh"
# shellcheck source=crd_install.sh
. "$root/spec/integration/crd_install.sh"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
: "${KUBECONFIG:?run through spec/integration/with-cluster}"
: "${DITTOFS_APISERVER:?}" "${DITTOFS_CA_CERT:?}" "${DITTOFS_ADMIN_TOKEN_FILE:?}"
SA_NS=dittofs-system
SA=dittofs-operator
ns="rbac-test-$$"
lease="rbac-test-$$"
tmp=$(mktemp -d)
sa_kc=$tmp/sa.kubeconfig
admin_token=$(cat "$DITTOFS_ADMIN_TOKEN_FILE")

cleanup() {
  "$KUBECTL" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  "$KUBECTL" -n "$SA_NS" delete lease "$lease" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# 1. the manifests

if out=$("$KUBECTL" apply --server-side --force-conflicts -k "$root/deploy/rbac" 2>&1); then
  ok "kubectl apply --server-side -k deploy/rbac"
else
  not_ok "kubectl apply --server-side -k deploy/rbac" "$out"
fi
"$KUBECTL" get crd dittoservers.dittofs.dittofs.com >/dev/null 2>&1 ||
  crd_install >/dev/null # without its CEL rules below 1.28
"$KUBECTL" wait --for condition=established --timeout=30s \
  crd/dittoservers.dittofs.dittofs.com >/dev/null 2>&1 || true
"$KUBECTL" create namespace "$ns" >/dev/null

wild=$({
  "$KUBECTL" get clusterrole dittofs-operator -o json
  "$KUBECTL" -n "$SA_NS" get role dittofs-operator-leader-election -o json
} | jq -r '.rules[] | (.apiGroups // [])[], .resources[], .verbs[],
                      (.resourceNames // [])[]' | grep -c '\*')
if [ "$wild" = 0 ]; then
  ok "no wildcard in the ClusterRole or the leader-election Role"
else
  not_ok "no wildcard in the ClusterRole or the leader-election Role" \
    "$wild wildcard entries"
fi

# ---------------------------------------------------------------------------
# 2. the ServiceAccount kubeconfig

if out=$("$root/deploy/local/cluster.sh" sa-kubeconfig "$SA_NS" "$SA" \
  "$sa_kc" 2>&1); then
  ok "cluster.sh sa-kubeconfig writes the kubeconfig"
else
  not_ok "cluster.sh sa-kubeconfig writes the kubeconfig" "$out"
fi
mode=$(stat -c %a "$sa_kc" 2>/dev/null)
if [ "$mode" = 600 ]; then
  ok "the kubeconfig is mode 600"
else
  not_ok "the kubeconfig is mode 600" "mode ${mode:-missing}"
fi
sa_token=$(awk '$1 == "token:" { print $2 }' "$sa_kc" 2>/dev/null)
# The apiserver's TokenReview says who the token is.
who=$(curl -sS --cacert "$DITTOFS_CA_CERT" \
  -H "Authorization: Bearer $admin_token" \
  -H 'Content-Type: application/json' -X POST \
  --data-binary "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"${sa_token:-none}\"}}" \
  "$DITTOFS_APISERVER/apis/authentication.k8s.io/v1/tokenreviews" |
  jq -r '.status.user.username // .status.error // "?"')
if [ "$who" = "system:serviceaccount:$SA_NS:$SA" ]; then
  ok "the kubeconfig's token is the ServiceAccount's ($who)"
else
  not_ok "the kubeconfig's token is the ServiceAccount's" "got: $who"
fi
if out=$(DITTOFS_START_TIMEOUT=2 "$root/deploy/local/cluster.sh" \
  sa-kubeconfig "$ns" no-such-sa "$tmp/none" 2>&1); then
  not_ok "a missing ServiceAccount fails" "$out"
elif [[ $out == *"no token for ServiceAccount $ns/no-such-sa"* ]] &&
  [ ! -e "$tmp/none" ]; then
  ok "a missing ServiceAccount fails with a message, no file"
else
  not_ok "a missing ServiceAccount fails with a message, no file" "$out"
fi

# ---------------------------------------------------------------------------
# 3. kubectl auth can-i

# can VERB RESOURCE[/SUBRESOURCE] WHERE: WHERE is a namespace or -A.
can() {
  local verb=$1 res=$2 where=$3 sub=() scope
  if [[ $res == */* ]]; then
    sub=(--subresource="${res#*/}")
    res=${res%%/*}
  fi
  if [ "$where" = -A ]; then scope=(--all-namespaces); else scope=(-n "$where"); fi
  "$KUBECTL" --kubeconfig "$sa_kc" auth can-i "$verb" "$res" "${sub[@]}" \
    "${scope[@]}" >/dev/null 2>&1
}

expect_can() {
  local verb=$1 res=$2 where=$3
  if can "$verb" "$res" "$where"; then
    ok "can $verb $res in $where"
  else
    not_ok "can $verb $res in $where"
  fi
}

expect_cannot() {
  local verb=$1 res=$2 where=$3
  if can "$verb" "$res" "$where"; then
    not_ok "cannot $verb $res in $where"
  else
    ok "cannot $verb $res in $where"
  fi
}

DS=dittoservers.dittofs.dittofs.com
for where in "$ns" -A; do
  for v in get list watch; do expect_can "$v" "$DS" "$where"; done
  for v in get patch update; do expect_can "$v" "$DS/status" "$where"; done
  expect_can update "$DS/finalizers" "$where"
  for r in configmaps services statefulsets.apps; do
    for v in get list watch create patch update delete; do
      expect_can "$v" "$r" "$where"
    done
  done
  for v in create patch; do expect_can "$v" events "$where"; done
done
for v in get create update; do expect_can "$v" leases.coordination.k8s.io "$SA_NS"; done

for v in create update patch delete deletecollection; do
  expect_cannot "$v" "$DS" "$ns"
done
expect_cannot create "$DS/status" "$ns"
expect_cannot delete "$DS/status" "$ns"
expect_cannot get "$DS/finalizers" "$ns"
for r in configmaps services statefulsets.apps; do
  expect_cannot deletecollection "$r" "$ns"
done
expect_cannot update statefulsets.apps/scale "$ns"
expect_cannot patch statefulsets.apps/status "$ns"
expect_cannot patch services/status "$ns"
for v in get list watch update delete; do expect_cannot "$v" events "$ns"; done
for v in get list watch; do expect_can "$v" pods "$ns"; done
expect_can list pods -A
for v in create update patch delete deletecollection; do
  expect_cannot "$v" pods "$ns"
done
expect_cannot patch pods/status "$ns"
for v in get list watch; do expect_cannot "$v" secrets "$ns"; done
expect_cannot get secrets -A
expect_cannot create pods/exec "$ns"
expect_cannot get persistentvolumeclaims "$ns"
expect_cannot delete persistentvolumeclaims "$ns"
expect_cannot list deployments.apps "$ns"
expect_cannot create deployments.apps "$ns"
expect_cannot list namespaces -A
expect_cannot create namespaces -A
expect_cannot list nodes -A
expect_cannot create serviceaccounts/token "$SA_NS"
expect_cannot get customresourcedefinitions.apiextensions.k8s.io -A
expect_cannot create clusterroles.rbac.authorization.k8s.io -A
expect_cannot create rolebindings.rbac.authorization.k8s.io "$SA_NS"
for v in get create update; do
  expect_cannot "$v" leases.coordination.k8s.io "$ns"
  expect_cannot "$v" leases.coordination.k8s.io default
  expect_cannot "$v" leases.coordination.k8s.io kube-system
done
for v in list watch delete patch; do
  expect_cannot "$v" leases.coordination.k8s.io "$SA_NS"
done

# ---------------------------------------------------------------------------
# 4. real requests with the ServiceAccount token

# req METHOD PATH [BODY [CONTENT-TYPE]]: prints the HTTP status code.
req() {
  local method=$1 path=$2 body=${3:-} ctype=${4:-application/json}
  local args=(-sS -o "$tmp/body" -w '%{http_code}' --max-time 10
    --cacert "$DITTOFS_CA_CERT" -H "Authorization: Bearer $sa_token"
    -X "$method")
  [ -n "$body" ] && args+=(-H "Content-Type: $ctype" --data-binary "$body")
  curl "${args[@]}" "$DITTOFS_APISERVER$path" 2>/dev/null || echo 000
}

# expect_code WANT DESCRIPTION METHOD PATH [BODY [CONTENT-TYPE]]
expect_code() {
  local want=$1 what=$2 code
  shift 2
  code=$(req "$@")
  if [ "$code" = "$want" ]; then
    ok "$what: $code"
  else
    not_ok "$what: want $want" "got $code: $(head -c 400 "$tmp/body")"
  fi
}

apply_ct=application/apply-patch+yaml
fm="fieldManager=dittofs-operator&force=true"
api=/api/v1/namespaces/$ns
apps=/apis/apps/v1/namespaces/$ns
dsp=/apis/dittofs.dittofs.com/v1alpha1/namespaces/$ns/dittoservers

# A DittoServer created by the admin, the owner of everything below.
"$KUBECTL" -n "$ns" apply -f "$root/deploy/samples/dittoserver.yaml" >/dev/null
uid=$("$KUBECTL" -n "$ns" get ditto dittofs-sample -o jsonpath='{.metadata.uid}')

# The children the policy renders for it, with the real uid in their
# ownerReferences (blockOwnerDeletion: true, so this also exercises the
# finalizers rule where the admission plugin is on).
op=${DITTOFS_OPERATOR:-$root/build/dittofs-operator}
if [ -x "$op" ]; then
  "$KUBECTL" -n "$ns" get ditto dittofs-sample -o json |
    "$op" --script-test - --output json >"$tmp/render.json" 2>"$tmp/render.err"
fi
if [ -s "$tmp/render.json" ]; then
  for kind in ConfigMap Service StatefulSet; do
    jq -c --arg uid "$uid" --arg k "$kind" \
      'first(.objects[] | select(.kind == $k))
       | .metadata.ownerReferences[0].uid = $uid' \
      "$tmp/render.json" >"$tmp/$kind.json"
  done
else
  not_ok "render the sample's children with --script-test ($op)" \
    "$(cat "$tmp/render.err" 2>/dev/null)"
fi
name_of() { jq -r .metadata.name "$tmp/$1.json"; }

if [ -s "$tmp/render.json" ]; then
  cm=$(name_of ConfigMap)
  svc=$(name_of Service)
  sts=$(name_of StatefulSet)
  expect_code 201 "apply ConfigMap $cm" PATCH "$api/configmaps/$cm?$fm" \
    "$(cat "$tmp/ConfigMap.json")" "$apply_ct"
  expect_code 201 "apply Service $svc" PATCH "$api/services/$svc?$fm" \
    "$(cat "$tmp/Service.json")" "$apply_ct"
  expect_code 201 "apply StatefulSet $sts" PATCH "$apps/statefulsets/$sts?$fm" \
    "$(cat "$tmp/StatefulSet.json")" "$apply_ct"
  expect_code 200 "apply the StatefulSet again (no change)" PATCH \
    "$apps/statefulsets/$sts?$fm" "$(cat "$tmp/StatefulSet.json")" "$apply_ct"
  expect_code 200 "get StatefulSet" GET "$apps/statefulsets/$sts"
  expect_code 200 "delete ConfigMap" DELETE "$api/configmaps/$cm"
  expect_code 200 "delete Service" DELETE "$api/services/$svc"
  expect_code 200 "delete StatefulSet" DELETE "$apps/statefulsets/$sts"
  status=$(jq -c '.status' "$tmp/render.json")
  expect_code 200 "apply the DittoServer's status" PATCH \
    "$dsp/dittofs-sample/status?$fm" "$status" "$apply_ct"
  phase=$("$KUBECTL" -n "$ns" get ditto dittofs-sample \
    -o jsonpath='{.status.phase}')
  if [ -n "$phase" ]; then
    ok "the status apply is stored (phase $phase)"
  else
    not_ok "the status apply is stored"
  fi
fi
expect_code 200 "list StatefulSets in all namespaces" GET \
  "/apis/apps/v1/statefulsets?limit=1"
expect_code 200 "list ConfigMaps by label in all namespaces" GET \
  "/api/v1/configmaps?labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddittofs-operator"
expect_code 200 "list DittoServers in all namespaces" GET \
  "/apis/dittofs.dittofs.com/v1alpha1/dittoservers"
expect_code 200 "watch Services (1 s)" GET \
  "$api/services?watch=1&timeoutSeconds=1"
event=$(jq -nc --arg ns "$ns" --arg uid "$uid" '{
  apiVersion: "v1", kind: "Event",
  metadata: {name: "dittofs-sample.rbac", namespace: $ns},
  involvedObject: {apiVersion: "dittofs.dittofs.com/v1alpha1",
    kind: "DittoServer", name: "dittofs-sample", namespace: $ns, uid: $uid},
  reason: "RbacTest", message: "rbac_test.sh", type: "Normal", count: 1,
  source: {component: "dittofs-operator"}}')
expect_code 201 "create an Event" POST "$api/events" "$event"
expect_code 200 "patch the Event's count" PATCH "$api/events/dittofs-sample.rbac" \
  '{"count":2}' application/merge-patch+json
expect_code 403 "get the Event" GET "$api/events/dittofs-sample.rbac"

expect_code 403 "delete a Pod" DELETE "$api/pods/any"
expect_code 200 "list Pods by label in all namespaces" GET \
  "/api/v1/pods?labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddittofs-operator"
expect_code 200 "watch Pods (1 s)" GET "$api/pods?watch=1&timeoutSeconds=1"
expect_code 403 "get a Secret" GET "$api/secrets/any"
expect_code 403 "list Secrets in all namespaces" GET "/api/v1/secrets"
expect_code 403 "create a DittoServer" POST "$dsp" \
  '{"apiVersion":"dittofs.dittofs.com/v1alpha1","kind":"DittoServer","metadata":{"name":"x"},"spec":{"storage":{"metadataSize":"1Gi"}}}'
expect_code 403 "delete the DittoServer" DELETE "$dsp/dittofs-sample"
expect_code 403 "list PersistentVolumeClaims" GET "$api/persistentvolumeclaims"

lease_body() {
  jq -nc --arg n "$lease" --arg ns "$1" --arg rv "${2:-}" '{
    apiVersion: "coordination.k8s.io/v1", kind: "Lease",
    metadata: ({name: $n, namespace: $ns}
      + (if $rv == "" then {} else {resourceVersion: $rv} end)),
    spec: {holderIdentity: "rbac-test", leaseDurationSeconds: 15}}'
}
coord=/apis/coordination.k8s.io/v1/namespaces
expect_code 403 "create a Lease in $ns" POST "$coord/$ns/leases" \
  "$(lease_body "$ns")"
expect_code 403 "get a Lease in kube-system" GET \
  "$coord/kube-system/leases/kube-controller-manager"
expect_code 201 "create a Lease in $SA_NS" POST "$coord/$SA_NS/leases" \
  "$(lease_body "$SA_NS")"
expect_code 200 "get the Lease" GET "$coord/$SA_NS/leases/$lease"
rv=$(jq -r '.metadata.resourceVersion // ""' "$tmp/body")
expect_code 200 "update the Lease" PUT "$coord/$SA_NS/leases/$lease" \
  "$(lease_body "$SA_NS" "$rv")"
expect_code 403 "list Leases in $SA_NS" GET "$coord/$SA_NS/leases"
expect_code 403 "delete the Lease" DELETE "$coord/$SA_NS/leases/$lease"

tap_summary
