#!/usr/bin/env bash
# spec/bench/sample_controller_qps.sh: build Kubernetes' sample-controller
# with its client rate limit settable, for controller_bench.sh's "raised
# limits" run, and print the binary's path.
#
# The sample-controller that cluster.sh builds has no QPS/burst flag: its
# main.go passes clientcmd.BuildConfigFromFlags() straight to the clientsets,
# so client-go's defaults (QPS 5, burst 10, one bucket per clientset) apply.
# This builds the same package from the same source tree with one change,
# through `go build -overlay` (the tree is not modified): after that call,
# cfg.QPS and cfg.Burst are read from $SAMPLE_CONTROLLER_QPS and
# $SAMPLE_CONTROLLER_BURST when set. Unset, it behaves as the original.
#
# Output: $DITTOFS_CACHE/kube-1.20.2/bench/sample-controller-qps (built once,
# about 3 minutes cold on 2 cores; the build log is beside it).
set -euo pipefail

CACHE=${DITTOFS_CACHE:-${HOME:-/root}/.cache/dittofs-operator}
KDIR=$CACHE/kube-1.20.2
TREE=$KDIR/work/src/kubernetes
OUT=$KDIR/bench
BIN=$OUT/sample-controller-qps

if [[ -x $BIN ]]; then
  printf '%s\n' "$BIN"
  exit 0
fi
main=$TREE/staging/src/k8s.io/sample-controller/main.go
[[ -f $main ]] || {
  echo "sample_controller_qps.sh: $main missing (run deploy/local/cluster.sh install)" >&2
  exit 1
}
mkdir -p "$OUT"
patched=$OUT/main.go
awk '
  { print }
  /cfg, err := clientcmd.BuildConfigFromFlags/ { found = 1 }
  found == 1 && /^\t}$/ {
    print "\tif v, err := strconv.ParseFloat(os.Getenv(\"SAMPLE_CONTROLLER_QPS\"), 32); err == nil {"
    print "\t\tcfg.QPS = float32(v)"
    print "\t}"
    print "\tif v, err := strconv.Atoi(os.Getenv(\"SAMPLE_CONTROLLER_BURST\")); err == nil {"
    print "\t\tcfg.Burst = v"
    print "\t}"
    found = 2
  }
  /^import \($/ { print "\t\"os\""; print "\t\"strconv\"" }
  END { if (found != 2) exit 1 }
' "$main" >"$patched" || {
  echo "sample_controller_qps.sh: main.go has an unexpected shape" >&2
  exit 1
}
# kubernetes 1.20 builds in GOPATH mode (hack/lib/init.sh: GO111MODULE=off)
# under _output/local/go; the same GOPATH, cache and trimpath flags as
# `make` reuse its compiled dependencies.
gopath=$TREE/_output/local/go
pkgdir=$gopath/src/k8s.io/kubernetes
printf '{"Replace": {"%s": "%s"}}\n' \
  "$pkgdir/vendor/k8s.io/sample-controller/main.go" "$patched" >"$OUT/overlay.json"
echo "sample_controller_qps.sh: building $BIN (log: $OUT/build.log)" >&2
(
  [[ -d $pkgdir ]] || { mkdir -p "$gopath/src/k8s.io" && ln -sfn "$TREE" "$pkgdir"; }
  cd "$pkgdir"
  export GO111MODULE=off GOPATH=$gopath GOCACHE=$gopath/cache CGO_ENABLED=0 \
    GOPROXY=off GOFLAGS=
  go build -overlay "$OUT/overlay.json" -gcflags "all=-trimpath=$TREE" \
    -asmflags "all=-trimpath=$TREE" -ldflags "-s -w" \
    -o "$BIN.tmp" ./vendor/k8s.io/sample-controller
) >"$OUT/build.log" 2>&1 || {
  tail -n 20 "$OUT/build.log" >&2
  exit 1
}
mv -f "$BIN.tmp" "$BIN"
printf '%s\n' "$BIN"
