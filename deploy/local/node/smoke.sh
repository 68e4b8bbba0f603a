#!/usr/bin/env bash
# deploy/local/node/smoke.sh: check a running node end to end (after
# cluster.sh start + node.sh start), in a namespace of its own that it deletes:
#   a Debian pod running sleep; a StatefulSet whose pod writes a PVC of class
#   standard and serves HTTP; its Service's ClusterIP from the host (curl) and
#   from a pod; the apiserver's ClusterIP (10.96.0.1:443) from a pod; the
#   StatefulSet's pod deleted comes back with its data; kubectl exec and logs.
# Prints one line per check and the seconds each took; exits 1 at the first
# failure (with the namespace's events).
set -euo pipefail

DIR=${DITTOFS_CLUSTER_DIR:-/tmp/dittofs-cluster}
NS=${DITTOFS_SMOKE_NAMESPACE:-node-smoke}
TIMEOUT=${DITTOFS_SMOKE_TIMEOUT:-120}
# shellcheck disable=SC1091
source "$DIR/env"
KUBECTL=${DITTOFS_KUBECTL:-kubectl}
kc() { "$KUBECTL" --kubeconfig="$DIR/kubeconfig" -n "$NS" "$@"; }

t=$SECONDS
ok() { printf 'ok   %-58s %3d s\n' "$1" "$((SECONDS - t))"; t=$SECONDS; }
fail() {
  printf 'FAIL %s\n' "$1"
  kc get pods,pvc -o wide 2>&1 || true
  kc get events --sort-by=.lastTimestamp 2>&1 | tail -n 20 || true
  exit 1
}
# until TEXT COMMAND...: retry COMMAND for up to TIMEOUT seconds.
until_ok() {
  local what=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (not within ${TIMEOUT}s)"
    sleep 0.5
  done
  ok "$what"
}

"$KUBECTL" --kubeconfig="$DIR/kubeconfig" delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
"$KUBECTL" --kubeconfig="$DIR/kubeconfig" create namespace "$NS" >/dev/null
trap '"$KUBECTL" --kubeconfig="$DIR/kubeconfig" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true' EXIT

kc apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: sleep
    image: dittofs-local/debian:bookworm
    imagePullPolicy: IfNotPresent
    command: [sleep, infinity]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: dittofs-local/debian:bookworm
        imagePullPolicy: IfNotPresent
        # perl-base is in every Debian: count boots in the PVC, serve the count.
        command:
        - perl
        - -MIO::Socket::INET
        - -e
        - |
          my $n = 0; if (open(my $f, "<", "/data/boots")) { $n = <$f>; close $f } $n++;
          open(my $g, ">", "/data/boots") or die "write /data/boots: $!"; print $g $n; close $g;
          $| = 1; print "boot $n\n";
          my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "listen: $!";
          while (my $c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\r\n\r\nboots=$n\n"; close $c }
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      storageClassName: standard
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
EOF

ready() { [[ $(kc get pod "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
bound() { [[ $(kc get pvc data-web-0 -o 'jsonpath={.status.phase}') == Bound ]]; }
until_ok "pod sleeper (debian, sleep) Ready" ready sleeper
until_ok "PVC data-web-0 (standard) Bound" bound
until_ok "StatefulSet pod web-0 Ready (wrote its PVC)" ready web-0

ip=$(kc get svc web -o 'jsonpath={.spec.clusterIP}')
host_get() { curl -sS --max-time 2 "http://$ip/" | grep -qx "boots=$1"; }
# shellcheck disable=SC2016 # perl code, not shell
pod_get() {
  kc exec sleeper -- perl -MIO::Socket::INET -e \
    '$s = IO::Socket::INET->new(PeerAddr => $ARGV[0], Timeout => 2) or exit 1; print $s "GET / HTTP/1.0\r\n\r\n"; print <$s>' \
    "$ip:80" | grep -qx "boots=$1"
}
until_ok "Service web ClusterIP $ip from the host (curl)" host_get 1
until_ok "Service web ClusterIP from a pod (exec)" pod_get 1
apiserver_from_pod() {
  kc exec sleeper -- perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "10.96.0.1:443", Timeout => 2) or exit 1'
}
until_ok "apiserver ClusterIP 10.96.0.1:443 from a pod" apiserver_from_pod

uid=$(kc get pod web-0 -o 'jsonpath={.metadata.uid}')
kc delete pod web-0 --wait=false >/dev/null
t=$SECONDS
back() { [[ $(kc get pod web-0 -o 'jsonpath={.metadata.uid}') != "$uid" ]] && ready web-0; }
until_ok "StatefulSet pod web-0 deleted, back and Ready" back
until_ok "its PVC kept the data (boots=2 through the ClusterIP)" host_get 2
logs() { kc logs web-0 | grep -qx 'boot 2'; }
until_ok "kubectl logs web-0" logs
echo "all checks passed"
