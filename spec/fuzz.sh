#!/usr/bin/env bash
# Builds the fuzz harnesses of spec/fuzz/ (clang, ASan+UBSan, libFuzzer) in
# their own build directory and runs them, each for SECONDS (default 60),
# then prints per harness: execs, execs/s, coverage (cov/ft), corpus size,
# crashes. Exits non-zero when any harness crashed (or did not build).
#
#   spec/fuzz.sh [SECONDS] [HARNESS...]   e.g. spec/fuzz.sh 600 (the long
#                                         run), spec/fuzz.sh 60 json yaml
#   spec/fuzz.sh --smoke                  ctest's fuzz_smoke: seeds and
#                                         regressions, then 4 s per harness
#                                         on a throw-away corpus
#   spec/fuzz.sh --list                   the harness names
#
# Environment:
#   FUZZ_BUILD_DIR  build, corpora, logs, crashes
#                   (default ~/.cache/dittofs-operator/fuzz)
#   FUZZ_JOBS       harnesses run at once (default 1; 2 in --smoke)
#   FUZZ_CPU        1: SECONDS is CPU time, not wall time (libfuzzer only):
#                   a harness runs again on its corpus until its fuzzer
#                   processes have used SECONDS of CPU (a busy machine
#                   gives a wall-time run less); the cpu_s column says
#                   what each harness had, either way
#   FUZZ_TIMEOUT    libFuzzer's -timeout, seconds per input (default 25).
#                   It is wall time: on a machine busy with other work
#                   at a higher priority, a long run wants more (120)
#                   so that a starved input is not reported as a hang
#   FUZZ_ENGINE     libfuzzer (default) or afl: builds with afl-clang-fast
#                   into $FUZZ_BUILD_DIR-afl and runs afl-fuzz -V SECONDS
#                   on the same harnesses (spec/fuzz/README.md)
#
# The corpus of each harness grows in $FUZZ_BUILD_DIR/corpus/NAME; the
# seeds (spec/fuzz/seeds/NAME, the samples, the CRD, the test fixtures) and
# spec/fuzz/regressions/NAME are read, never written. A crash leaves its
# input in $FUZZ_BUILD_DIR/artifacts/NAME/: once fixed, copy it to
# spec/fuzz/regressions/NAME/ so every later run replays it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fz=$root/spec/fuzz
harnesses=(json yaml jscan watch kubeconfig exec_cred quantity lpattern crd
           script_test dittoserver)

smoke=0
seconds=60
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${harnesses[@]}"
  exit 0
fi
if [ "${1:-}" = "--smoke" ]; then
  smoke=1
  seconds=4
  shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
if [ $# -gt 0 ]; then
  for h in "$@"; do
    [ -f "$fz/fuzz_$h.c" ] || { echo "fuzz.sh: no harness $h" >&2; exit 2; }
  done
  harnesses=("$@")
fi
engine=${FUZZ_ENGINE:-libfuzzer}
jobs=${FUZZ_JOBS:-$([ $smoke -eq 1 ] && echo 2 || echo 1)}
build=${FUZZ_BUILD_DIR:-$HOME/.cache/dittofs-operator/fuzz}
case $engine in
libfuzzer) cc=clang ;;
afl) cc=afl-clang-fast; build=$build-afl ;;
*) echo "fuzz.sh: FUZZ_ENGINE is libfuzzer or afl" >&2; exit 2 ;;
esac
command -v "$cc" >/dev/null ||
  { echo "fuzz.sh: $cc not found (deploy/local/deps.sh installs it)" >&2; exit 2; }

# --- build ---------------------------------------------------------------
mkdir -p "$build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=$cc cmake -S "$root" -B "$build" -DFUZZ=ON -DFUZZ_ENGINE="$engine" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
nice cmake --build "$build" -j2 --target fuzz >"$build/build.log" 2>&1 ||
  { tail -30 "$build/build.log"; echo "fuzz.sh: build failed" >&2; exit 1; }

# --- seeds and dictionaries ----------------------------------------------
seeds=$build/seeds
rm -rf "$seeds" "$build/dict"
mkdir -p "$build/dict"
for h in "${harnesses[@]}"; do
  mkdir -p "$seeds/$h"
  if [ -d "$fz/seeds/$h" ]; then cp "$fz/seeds/$h"/* "$seeds/$h/"; fi
done
add() { # add HARNESS FILE...: seeds from the repository
  local h=$1 f
  shift
  [ -d "$seeds/$h" ] || return 0
  for f in "$@"; do cp "$f" "$seeds/$h/$(basename "$(dirname "$f")")-$(basename "$f")"; done
}
samples=("$root"/deploy/samples/*.yaml)
add yaml "${samples[@]}" "$root"/crd/*.yaml "$fz"/seeds/kubeconfig/*
add crd "${samples[@]}"
add script_test "${samples[@]}"
fixtures=$(find "$root/spec/c/fixtures" -name '*.json')
# shellcheck disable=SC2086
add json $fixtures "$fz"/seeds/exec_cred/*.json
# shellcheck disable=SC2086
add jscan $fixtures "$fz"/seeds/exec_cred/*.json
if [ -d "$seeds/quantity" ]; then
  # the shared test vectors: each pair as "a\nb", each single alone
  jq -r '(.equal + .less + .beyond_int64.equal + .beyond_int64.less)[] | @json' \
    "$root/spec/c/fixtures/quantity_vectors.json" |
    while read -r pair; do
      printf '%s' "$pair" | jq -j '.[0] + "\n" + .[1]' \
        >"$seeds/quantity/v-$(printf '%s' "$pair" | md5sum | cut -c1-12)"
    done
  jq -r '.invalid[]' "$root/spec/c/fixtures/quantity_vectors.json" |
    while IFS= read -r q; do
      printf '%s' "$q" >"$seeds/quantity/i-$(printf '%s' "$q" | md5sum | cut -c1-12)"
    done
fi
dicts() { # dicts HARNESS: the dictionaries it gets
  case $1 in
  json | jscan | watch | exec_cred) echo json k8s ;;
  yaml | crd | script_test | kubeconfig) echo yaml k8s ;;
  quantity) echo quantity ;;
  lpattern) echo lpattern ;;
  esac # dittoserver: its input is choices, not text
}
for h in "${harnesses[@]}"; do
  for d in $(dicts "$h"); do cat "$fz/dict/$d.dict"; done >"$build/dict/$h.dict"
done
maxlen() {
  case $1 in
  quantity) echo 300 ;;
  lpattern | exec_cred | dittoserver) echo 4096 ;;
  *) echo 65536 ;;
  esac
}

# --- run -----------------------------------------------------------------
mkdir -p "$build/logs"
tmpcorpus=
if [ $smoke -eq 1 ]; then
  tmpcorpus=$(mktemp -d "$build/smoke.XXXXXX")
  trap 'rm -rf "$tmpcorpus"' EXIT
fi

run_libfuzzer() {
  local h=$1 corpus=$build/corpus/$1 regs=() dict=()
  [ -n "$tmpcorpus" ] && corpus=$tmpcorpus/$h
  mkdir -p "$corpus" "$build/artifacts/$h"
  [ -d "$fz/regressions/$h" ] && regs=("$fz/regressions/$h")
  [ -s "$build/dict/$h.dict" ] && dict=(-dict="$build/dict/$h.dict")
  # Rounds until the harness has had SECONDS of CPU (FUZZ_CPU=1) or once
  # for SECONDS of wall time: on a busy machine -max_total_time (wall) can
  # give a harness much less CPU than it says. The corpus carries over
  # between rounds; the log keeps every round (the report sums the execs).
  local want=$seconds used=0 left=$seconds rc=0
  : >"$build/logs/$h.log"
  while :; do
    # stdin from /dev/null: a kubeconfig naming /dev/stdin must not block
    nice -n 10 "$build/fuzz_$h" -max_total_time="$left" -timeout="${FUZZ_TIMEOUT:-25}" \
      -rss_limit_mb=2560 -max_len="$(maxlen "$h")" -print_final_stats=1 \
      "${dict[@]}" -artifact_prefix="$build/artifacts/$h/" \
      "$corpus" "$seeds/$h" "${regs[@]}" </dev/null >>"$build/logs/$h.log" 2>&1 || rc=$?
    cpu_seconds
    used=$cpu_used
    [ "$rc" = 0 ] && [ "${FUZZ_CPU:-0}" = 1 ] && [ "$used" -lt "$want" ] || break
    left=$((want - used < 30 ? 30 : want - used))
  done
  echo "$used" >"$build/logs/$h.cpu"
  return $rc
}

# cpu_seconds: sets cpu_used to the user+system CPU seconds of this
# (sub)shell's finished children. Not through a pipe or $(...): `times`
# would run in a fork, whose children's times start at zero.
cpu_seconds() {
  local f=$build/logs/.times.$BASHPID
  times >"$f"
  cpu_used=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d\n", t }' "$f")
  rm -f "$f"
}

run_afl() {
  local h=$1
  local in=$build/afl-in/$h dict=()
  [ -s "$build/dict/$h.dict" ] && dict=(-x "$build/dict/$h.dict")
  rm -rf "$in"
  mkdir -p "$in" "$build/afl-out"
  cp "$seeds/$h"/* "$in/" 2>/dev/null || true
  [ -d "$fz/regressions/$h" ] && cp "$fz/regressions/$h"/* "$in/"
  [ -d "$build/corpus/$h" ] && cp "$build/corpus/$h"/* "$in/" 2>/dev/null
  AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_NO_AFFINITY=1 nice -n 10 afl-fuzz -V "$seconds" -m none -t 25000 \
    -i "$in" -o "$build/afl-out/$h" "${dict[@]}" \
    -- "$build/fuzz_$h" </dev/null >"$build/logs/$h.log" 2>&1 || return 1
  cpu_seconds
  echo "$cpu_used" >"$build/logs/$h.cpu"
  # afl-fuzz exits 0 after -V whatever it found: crashes fail the run
  ! ls "$build/afl-out/$h"/default/crashes/id:* >/dev/null 2>&1
}

start=$(date +%s)
for h in "${harnesses[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  rm -f "$build/logs/$h.rc"
  ( rc=0
    if [ "$engine" = afl ]; then run_afl "$h" || rc=$?; else run_libfuzzer "$h" || rc=$?; fi
    echo $rc >"$build/logs/$h.rc" ) &
done
wait
elapsed=$(($(date +%s) - start))

# --- report --------------------------------------------------------------
failed=0
printf '%-12s %10s %8s %6s %7s %7s %7s %6s\n' harness execs execs/s cov ft corpus crashes cpu_s
for h in "${harnesses[@]}"; do
  rc=$(cat "$build/logs/$h.rc" 2>/dev/null || echo 1)
  log=$build/logs/$h.log
  if [ "$engine" = afl ]; then
    st=$build/afl-out/$h/default/fuzzer_stats
    val() { awk -v k="$1" '$1 == k { print $3 }' "$st" 2>/dev/null; }
    crashes=$(val saved_crashes)
    printf '%-12s %10s %8s %6s %7s %7s %7s %6s\n' "$h" "$(val execs_done)" \
      "$(val execs_per_sec)" "$(val bitmap_cvg)" "$(val edges_found)" \
      "$(val corpus_count)" "${crashes:-?}" "$(cat "$build/logs/$h.cpu" 2>/dev/null || echo ?)"
  else
    execs=$(awk -F: '/stat::number_of_executed_units/ { n += $NF; k = 1 } END { if (k) print n }' "$log")
    eps=$(awk -F: '/stat::average_exec_per_sec/ { v = $NF } END { print v }' "$log" | tr -d ' ')
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corpus=$(sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    crashes=$([ "$rc" = 0 ] && echo 0 || echo 1)
    printf '%-12s %10s %8s %6s %7s %7s %7s %6s\n' "$h" "${execs:-?}" "${eps:-?}" \
      "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$crashes" \
      "$(cat "$build/logs/$h.cpu" 2>/dev/null || echo ?)"
  fi
  if [ "$rc" != 0 ]; then
    failed=1
    echo "---- $h failed (log: $log, inputs: $build/artifacts/$h/)"
    grep -E 'property failed|ERROR: |SUMMARY|Test unit written' "$log" | head -8
  fi
done
echo "fuzz.sh: ${#harnesses[@]} harnesses, ${seconds} s each, $jobs at once, $elapsed s in all ($engine)"
exit $failed
