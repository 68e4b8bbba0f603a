# spec/integration/tap.sh: the check helpers the integration scripts share
# (sourced, not a test). Each check prints "ok N - what" or "not ok N - what"
# with the evidence as "#   " lines; `tap_summary` prints "N passed, N
# failed" and returns 1 when any check failed.

n=0
failed=0

ok() {
  n=$((n + 1))
  echo "ok $n - $1"
}

# not_ok WHAT [EVIDENCE]
not_ok() {
  n=$((n + 1))
  failed=$((failed + 1))
  echo "not ok $n - $1"
  if [ -n "${2:-}" ]; then
    printf '%s\n' "$2" | sed 's/^/#   /'
  fi
}

# skip WHAT REASON: a check that cannot exist here, said so (TAP SKIP)
skip() {
  n=$((n + 1))
  echo "ok $n - $1 # SKIP $2"
}

# check WHAT CMD...: ok when CMD succeeds; its output is shown on failure.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    ok "$what"
  else
    not_ok "$what" "$out"
  fi
}

# expect_eq WHAT WANT GOT
expect_eq() {
  if [ "$2" = "$3" ]; then
    ok "$1"
  else
    not_ok "$1" "want: $2
got:  $3"
  fi
}

# wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
  local deadline=$(($(date +%s%N) / 1000000 + $1 * 1000))
  shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ $(($(date +%s%N) / 1000000)) -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# The apiserver's audit log since a mark (audit_mark). A rotation in between
# cannot hide a request: then made-up entries (a patch and a get by $sa_user
# in $ns, both set by the script) that every counting check counts.
audit_mark() { echo "$(stat -c %i "$DITTOFS_AUDIT_LOG"):$(wc -l <"$DITTOFS_AUDIT_LOG")"; }
audit_since() {
  if [ "$(stat -c %i "$DITTOFS_AUDIT_LOG")" != "${1%%:*}" ]; then
    echo "# the audit log rotated during a measurement" >&2
    printf '{"user":{"username":"%s"},"verb":"patch","objectRef":{"resource":"statefulsets","namespace":"%s"}}\n' "$sa_user" "$ns"
    printf '{"user":{"username":"%s"},"verb":"get","objectRef":{"resource":"statefulsets","namespace":"%s"}}\n' "$sa_user" "$ns"
    return
  fi
  tail -n +"$((${1##*:} + 1))" "$DITTOFS_AUDIT_LOG"
}

tap_summary() {
  echo "$((n - failed)) passed, $failed failed"
  [ "$failed" -eq 0 ]
}
