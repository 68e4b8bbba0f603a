#!/usr/bin/env bash
# deploy/local/toxiproxy.sh: Toxiproxy (a TCP proxy that injects faults:
# latency, bandwidth, blackholes, resets, truncation) for the fault tests
# (spec/integration/faults_test.sh), built from its Go module with the Go
# at /usr/local/go and cached.
#
#   toxiproxy.sh bin     build what is missing, print the directory holding
#                        toxiproxy-server and toxiproxy-cli
#
# Knobs: DITTOFS_CACHE (default ~/.cache/dittofs-operator; the binaries go
# to $DITTOFS_CACHE/tools/toxiproxy-VERSION/bin), DITTOFS_GO (the go
# command, default /usr/local/go/bin/go). Cold build: about 3 min on 2
# busy cores (the module and its dependencies from the Go module proxy).
set -euo pipefail

TOXIPROXY_VERSION=2.5.0
CACHE=${DITTOFS_CACHE:-${HOME:-/root}/.cache/dittofs-operator}
TDIR=$CACHE/tools/toxiproxy-$TOXIPROXY_VERSION
GO=${DITTOFS_GO:-/usr/local/go/bin/go}

log() { printf '[toxiproxy.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

present() { [[ -x $TDIR/bin/toxiproxy-server && -x $TDIR/bin/toxiproxy-cli ]]; }

cmd_bin() {
  if ! present; then
    mkdir -p "$TDIR"
    # One build at a time (parallel test runs).
    exec 9>"$TDIR/.lock"
    flock 9
    if ! present; then
      [[ -x $GO ]] || die "no Go at $GO (DITTOFS_GO)"
      log "building Toxiproxy $TOXIPROXY_VERSION (log: $TDIR/build.log)"
      local gobin
      gobin=$(mktemp -d "$TDIR/gobin.XXXXXX")
      # server and cli are the package names; go install names the
      # binaries after them.
      if ! GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN=$gobin \
        "$GO" install "github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION" \
        "github.com/Shopify/toxiproxy/v2/cmd/cli@v$TOXIPROXY_VERSION" >"$TDIR/build.log" 2>&1; then
        tail -n 20 "$TDIR/build.log" >&2
        rm -rf "$gobin"
        die "go install failed"
      fi
      mkdir -p "$TDIR/bin"
      mv -f "$gobin/server" "$TDIR/bin/toxiproxy-server"
      mv -f "$gobin/cli" "$TDIR/bin/toxiproxy-cli"
      rm -rf "$gobin"
      log "built into $TDIR/bin"
    fi
    exec 9>&-
  fi
  printf '%s\n' "$TDIR/bin"
}

case ${1:-} in
  bin) cmd_bin ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
