# shellcheck shell=bash
# spec/integration/crd_install.sh: installs crd/dittoserver.yaml in the form
# the cluster's apiserver takes (sourced, not a test; needs $root and
# $KUBECTL).
#
# The CRD's CEL rules (x-kubernetes-validations with fieldPath) need
# Kubernetes 1.28+. An older apiserver does not know the field: a 1.20 one
# refuses a server-side apply of it ("field not declared in schema") and
# kubectl's client-side validation refuses it too, so below 1.28 the CRD is
# applied without its rules; the policy's validate() enforces the same rules
# there (README, Validation).
#
#   crd_server_minor       prints the apiserver's minor version (20, 37, ...)
#   crd_has_cel            true when the apiserver takes the CEL rules
#   crd_manifest           prints the CRD as this apiserver takes it (JSON
#                          without the rules below 1.28, else the file)
#   crd_install [ARGS...]  server-side applies crd_manifest (ARGS are extra
#                          kubectl apply arguments, e.g. --force-conflicts)

crd_server_minor() {
  "$KUBECTL" version -o json 2>/dev/null | python3 -c '
import json, re, sys
v = json.load(sys.stdin)["serverVersion"]
print(int(re.match(r"[0-9]+", v["minor"]).group(0)))'
}

crd_has_cel() {
  local minor
  minor=$(crd_server_minor) || return 1
  [ "$minor" -ge 28 ]
}

crd_manifest() {
  : "${root:?crd_install.sh needs \$root}"
  if crd_has_cel; then
    cat "$root/crd/dittoserver.yaml"
    return
  fi
  python3 - "$root/crd/dittoserver.yaml" <<'EOF'
import json, sys
import yaml


def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items()
                if k != "x-kubernetes-validations"}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


with open(sys.argv[1]) as f:
    print(json.dumps(strip(yaml.safe_load(f)), indent=1))
EOF
}

crd_install() {
  local manifest
  manifest=$(crd_manifest) || return 1
  printf '%s\n' "$manifest" | "$KUBECTL" apply --server-side "$@" -f -
}
