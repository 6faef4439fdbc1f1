#!/usr/bin/env bash
# Runs the libFuzzer targets (docs/fuzzing.md). Builds build-fuzz/ (clang,
# ASan+UBSan, -Dfuzz=true) when needed, then for each target: replays every
# input in tests/fuzz/regressions/<name>/ (a crash found earlier must stay
# fixed), then fuzzes from tests/fuzz/corpus/<name>/ for the time given.
# Any crash, leak, sanitizer report or oracle failure fails the run; the
# input is left in $FUZZ_OUT/<name>/ (crash-*) to be kept as a regression.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Environment: FUZZ_BUILD (build-fuzz), FUZZ_OUT (a temp dir), FUZZ_JOBS (1),
# FUZZ_KEEP_CORPUS=1 merges what a run found back into tests/fuzz/corpus.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
SECS=${1:-20}
shift || true
BUILD=${FUZZ_BUILD:-build-fuzz}
OUT=${FUZZ_OUT:-$(mktemp -d /tmp/hutch-fuzz.XXXXXX)}
mkdir -p "$OUT" || exit 1

if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang is not installed (scripts/deps.sh installs clang and libfuzzer-14-dev)" >&2
  exit 1
fi
if [[ ! -f $BUILD/build.ninja ]]; then
  CC=clang meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >"$OUT/setup.log" 2>&1 ||
    { cat "$OUT/setup.log"; exit 1; }
fi
ninja -C "$BUILD" >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }

targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in tests/fuzz/fuzz_*.c; do n=${f##*/fuzz_}; targets+=("${n%.c}"); done
fi
# A crash report of ASan/UBSan or libFuzzer's own (leak, timeout, oom).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fail=0
printf '%-10s %8s %10s %8s %6s  %s\n' target corpus execs exec/s cov result
for t in "${targets[@]}"; do
  bin=$BUILD/tests/fuzz/fuzz_$t
  [[ -x $bin ]] || { echo "fuzz.sh: no target $bin" >&2; fail=1; continue; }
  mkdir -p "$OUT/$t/corpus"
  log=$OUT/$t/log
  res=ok
  reg=tests/fuzz/regressions/$t
  if [[ -d $reg ]] && compgen -G "$reg/*" >/dev/null; then
    # every regression input, run once each (no fuzzing)
    if ! nice "$bin" -runs=1 "$reg"/* >"$OUT/$t/replay.log" 2>&1; then
      res="REGRESSION (see $OUT/$t/replay.log)"
      grep -E 'ERROR|SUMMARY|oracle' "$OUT/$t/replay.log" | head -5
    fi
  fi
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: runaway memory.
  # -jobs/-workers: FUZZ_JOBS processes (the machine is shared: default 1).
  if [[ $res == ok ]]; then
    nice "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$OUT/$t/" "$OUT/$t/corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    if ((rc != 0)); then
      res="CRASH (exit $rc; $(ls "$OUT/$t"/crash-* "$OUT/$t"/leak-* "$OUT/$t"/timeout-* "$OUT/$t"/oom-* 2>/dev/null | head -1))"
      grep -E 'ERROR|SUMMARY|oracle|runtime error' "$log" | head -5
    fi
  fi
  [[ $res == ok ]] || fail=1
  # fuzz_fsops's chroot was a tmpfs in its own mount namespace: only the empty mount point is left
  for d in $(grep -ohE 'confined to a tmpfs chroot at /tmp/hutch-fuzz-fs\.[A-Za-z0-9]+' "$log" "$OUT/$t/replay.log" 2>/dev/null | awk '{print $NF}'); do
    rmdir "$d" 2>/dev/null
  done
  execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" 2>/dev/null | awk '{print $2}')
  rate=$(grep -oE 'exec/s: [0-9]+' "$log" 2>/dev/null | tail -1 | awk '{print $2}')
  cov=$(grep -oE 'cov: [0-9]+' "$log" 2>/dev/null | tail -1 | awk '{print $2}')
  nseed=$(find "tests/fuzz/corpus/$t" -type f 2>/dev/null | wc -l)
  printf '%-10s %8s %10s %8s %6s  %s\n' "$t" "$nseed" "${execs:-0}" "${rate:-0}" "${cov:-0}" "$res"
  if [[ ${FUZZ_KEEP_CORPUS:-} == 1 && $res == ok ]]; then
    nice "$bin" -merge=1 "tests/fuzz/corpus/$t" "$OUT/$t/corpus" >/dev/null 2>&1
  fi
done
echo "fuzz.sh: logs in $OUT"
if ((fail)); then echo "fuzz.sh: FAILED"; else echo "fuzz.sh: every target ran clean"; fi
((fail == 0))
