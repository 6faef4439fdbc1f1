#!/usr/bin/env bash
# The whole hutch test suite (run as root after `make deps all image`): unit,
# ASan+UBSan unit, then integration, security and SDK tests against real
# hutchd daemons inside a throwaway network namespace that is always removed.
#
# Environment: HUTCH_TEST_ONLY=unit,asan,npm,py,sdk picks steps;
# HUTCH_PYTEST_ARGS / HUTCH_NODE_TEST_ARGS add runner arguments,
# HUTCH_PYTEST_TARGETS replaces the test paths, HUTCH_BIN_DIR points at other
# binaries, KEEP_TMP=1 keeps the logs.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD=${HUTCH_BUILD:-build}
ONLY=${HUTCH_TEST_ONLY:-unit,asan,npm,py,sdk}
RUN=$$
NS=hutch-test-$RUN

if [[ $(id -u) != 0 ]]; then
  echo "scripts/test.sh: must run as root (sandboxes need namespaces and cgroups)" >&2
  exit 1
fi

TMP=$(mktemp -d /tmp/hutch-test.XXXXXX)
chmod 0755 "$TMP"
SDK_PID=
STEP_PID=
declare -a SUMMARY=()
TOTAL_PASS=0
TOTAL_FAIL=0
FAILED_STEPS=0

want() { [[ ,$ONLY, == *,$1,* ]]; }

# Processes inside cgroups this run created (names hutch-test-$RUN-*), deepest first.
our_cgroups() {
  find /sys/fs/cgroup -maxdepth 2 -type d -name "hutch-test-$RUN-*" 2>/dev/null | while read -r top; do
    find "$top" -depth -type d 2>/dev/null
  done
}

# Kills a process and all its descendants, leaves first (by pid only).
kill_tree() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
  kill -KILL "$1" 2>/dev/null
}

cleanup() {
  local rc=$?
  set +e
  [[ -n ${STEP_PID:-} ]] && kill_tree "$STEP_PID"
  if [[ -n $SDK_PID ]] && kill -0 "$SDK_PID" 2>/dev/null; then
    kill -TERM "$SDK_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SDK_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SDK_PID" 2>/dev/null
  fi
  # Everything still running in our namespace was started by this script.
  if ip netns list 2>/dev/null | grep -qw "$NS"; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  fi
  # Sandbox processes of daemons that died: they sit in our cgroups.
  local cg
  for cg in $(our_cgroups); do
    [[ -f $cg/cgroup.procs ]] && while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$cg/cgroup.procs"
  done
  sleep 0.3
  for cg in $(our_cgroups); do rmdir "$cg" 2>/dev/null; done
  # Mounts under our temp dir (a daemon killed mid-way may leave some).
  grep -F " $TMP" /proc/self/mountinfo 2>/dev/null | awk '{print $5}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
  ip netns del "$NS" 2>/dev/null
  if [[ -n ${KEEP_TMP:-} ]]; then
    echo "test.sh: logs kept in $TMP"
  else
    rm -rf --one-file-system "$TMP" 2>/dev/null
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step NAME LOG COUNTER -- command...: runs, tees to LOG, records the result.
step() {
  local name=$1 log=$2 counter=$3
  shift 4
  local t0=$SECONDS rc
  echo
  echo "=== $name"
  # In the background and waited for, so that a signal reaches our trap at once.
  ( "$@" 2>&1 | tee "$log"; exit "${PIPESTATUS[0]}" ) &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=
  local p f
  read -r p f < <($counter "$log" "$rc")
  TOTAL_PASS=$((TOTAL_PASS + p))
  TOTAL_FAIL=$((TOTAL_FAIL + f))
  local verdict=PASS
  if ((rc != 0)); then verdict="FAIL (exit $rc)"; FAILED_STEPS=$((FAILED_STEPS + 1)); fi
  SUMMARY+=("$(printf '%-28s %-16s %4ss  %s passed, %s failed' "$name" "$verdict" $((SECONDS - t0)) "$p" "$f")")
  return "$rc"
}

# Counters: print "passed failed" for a step's log (exit code as fallback).
count_meson() {
  local ok fail
  ok=$(grep -E '^Ok:' "$1" | tail -1 | awk '{print $2}')
  fail=$(grep -E '^(Fail|Timeout|Unexpected Pass):' "$1" | awk '{s+=$2} END {print s+0}')
  if [[ -z $ok ]]; then [[ $2 == 0 ]] && echo "1 0" || echo "0 1"; return; fi
  echo "$ok $fail"
}
count_pytest() {
  local line p f e
  line=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* in [0-9.]+s' "$1" | tail -1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | awk '{print $1}')
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | awk '{print $1}')
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | awk '{print $1}')
  if [[ -z $line ]]; then [[ $2 == 0 ]] && echo "1 0" || echo "0 1"; return; fi
  echo "${p:-0} $(( ${f:-0} + ${e:-0} ))"
}
count_node() {
  local p f
  p=$(grep -E '^# pass ' "$1" | tail -1 | awk '{print $3}')
  f=$(grep -E '^# fail ' "$1" | tail -1 | awk '{print $3}')
  if [[ -z $p ]]; then [[ $2 == 0 ]] && echo "1 0" || echo "0 1"; return; fi
  echo "$p ${f:-0}"
}
count_rc() { [[ $2 == 0 ]] && echo "0 0" || echo "0 1"; }

# ---------------------------------------------------------------- preflight
if [[ ! -x $BUILD/hutchd && ! -x $BUILD/src/daemon/hutchd ]]; then
  echo "test.sh: no hutchd in $BUILD (run 'make' first, or 'make test')" >&2
fi
IMAGE=${HUTCH_IMAGE_CACHE:-/var/cache/hutch/images}/debian-13/rootfs
[[ -d $IMAGE ]] || echo "test.sh: warning: no image at $IMAGE (run 'make image')" >&2

PY=
for c in /usr/bin/python3 python3; do
  if "$c" -c 'import pytest' 2>/dev/null; then PY=$c; break; fi
done

# ---------------------------------------------------------------- 1. unit
if want unit; then
  step "unit (meson test)" "$TMP/unit.log" count_meson -- \
    timeout --kill-after=30 600 meson test -C "$BUILD" --print-errorlogs
fi

# ---------------------------------------------------------------- 2. ASan+UBSan
if want asan; then
  step "unit under ASan+UBSan" "$TMP/asan.log" count_meson -- \
    timeout --kill-after=30 1200 make --no-print-directory test-asan
fi

# ---------------------------------------------------------------- 3. SDK deps
if want npm || want sdk; then
  step "npm ci (tests/sdk)" "$TMP/npm.log" count_rc -- \
    timeout --kill-after=30 600 bash -c 'cd tests/sdk && npm ci --no-audit --no-fund'
fi

# ---------------------------------------------------------------- the netns
if want py || want sdk; then
  ip netns add "$NS" || { echo "test.sh: cannot create netns $NS" >&2; exit 1; }
  ip -n "$NS" link set lo up
fi
# nsenter, not `ip netns exec`: the latter remounts /sys in a new mount
# namespace, which hides /sys/fs/cgroup from hutchd. We only need the netns.
in_ns() { nsenter --net="/run/netns/$NS" -- "$@"; }

# The ASan+UBSan hutchd (with its hutch-proxy), when built and wanted: the
# integration, security and SDK suites then also hunt memory errors in the
# daemon under real and hostile traffic. hutch-init stays the normal build.
asan_daemon() {
  local asan=${ASAN_BUILD:-build-asan}/src/daemon/hutchd
  if [[ ${HUTCH_SDK_ASAN:-1} == 1 && -x $asan ]]; then echo "$asan"; fi
}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# ---------------------------------------------------------------- 4. pytest
if want py; then
  if [[ -z $PY ]]; then
    echo "test.sh: pytest is not importable (apt-get install python3-pytest)" >&2
    SUMMARY+=("integration+security        FAIL (no pytest)")
    FAILED_STEPS=$((FAILED_STEPS + 1)); TOTAL_FAIL=$((TOTAL_FAIL + 1))
  else
    # shellcheck disable=SC2086
    step "integration + security" "$TMP/pytest.log" count_pytest -- \
      timeout --kill-after=30 1200 nsenter --net="/run/netns/$NS" -- \
      env HUTCH_TEST_RUN="$RUN" HUTCH_TEST_TMP="$TMP/py" HUTCH_BUILD="$BUILD" HUTCH_DAEMON="$(asan_daemon)" \
      "$PY" -m pytest -p no:cacheprovider -rfEs --durations=10 \
      ${HUTCH_PYTEST_TARGETS:-tests/integration tests/security tests/cli} ${HUTCH_PYTEST_ARGS:-}
  fi
fi

# ---------------------------------------------------------------- 5. SDK tests
find_bin() {
  local n=$1 sub=$2
  if [[ -n ${HUTCH_BIN_DIR:-} && -x $HUTCH_BIN_DIR/$n ]]; then echo "$HUTCH_BIN_DIR/$n"
  elif [[ -x $BUILD/$n ]]; then echo "$BUILD/$n"; else echo "$BUILD/src/$sub/$n"; fi
}

start_sdk_daemon() {
  local hutchd init port state=$TMP/sdk/state
  hutchd=$(find_bin hutchd daemon)
  init=$(find_bin hutch-init init)
  # The SDK suite drives the ASan+UBSan build of hutchd (and of hutch-proxy
  # next to it) when there is one: the daemon's real traffic under the
  # sanitizers. hutch-init stays the normal build (PID 1 of a sandbox).
  local asan
  asan=$(asan_daemon)
  [[ -n $asan ]] && hutchd=$asan
  mkdir -p "$state"
  port=$(in_ns "${PY:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local args=(--state-dir "$state" --listen "127.0.0.1:$port" --socket "$TMP/sdk/hutchd.sock"
              --cgroup-name "hutch-test-$RUN-sdk" --dns-upstream 127.0.0.1:9)  # no DNS off the machine
  [[ -x $init ]] && args+=(--init "$init")
  [[ -n ${HUTCH_IMAGE_CACHE:-} ]] && args+=(--image-cache "$HUTCH_IMAGE_CACHE")
  echo "starting $hutchd ${args[*]}"
  # nsenter execs hutchd: $! is hutchd itself (a function here would add a subshell)
  nsenter --net="/run/netns/$NS" -- "$hutchd" "${args[@]}" </dev/null >"$TMP/sdk/hutchd.log" 2>&1 &
  SDK_PID=$!
  local ok=
  for _ in $(seq 300); do
    kill -0 "$SDK_PID" 2>/dev/null || break
    if grep -q 'hutchd: listening on http://' "$TMP/sdk/hutchd.log" ||
       in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then ok=1; break; fi
    sleep 0.1
  done
  for _ in $(seq 50); do [[ -s $state/admin.token ]] && break; sleep 0.1; done
  if [[ -z $ok || ! -s $state/admin.token ]]; then
    echo "hutchd for the SDK tests did not start; its log:"
    tail -n 40 "$TMP/sdk/hutchd.log"
    return 1
  fi
  SDK_PORT=$port
  SDK_TOKEN=$(cat "$state/admin.token")
}

stop_sdk_daemon_and_check() {
  local rc=0 state=$TMP/sdk/state
  if [[ -n $SDK_PID ]]; then
    kill -TERM "$SDK_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$SDK_PID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$SDK_PID" 2>/dev/null; then
      echo "LEAK CHECK: hutchd did not exit within 20s of SIGTERM"; kill -KILL "$SDK_PID"; rc=1
    fi
    wait "$SDK_PID" 2>/dev/null
    SDK_PID=
  fi
  sleep 0.5
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP/sdk/hutchd.log"; then
    echo "SANITIZER: hutchd reported errors:"; grep -E -A20 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP/sdk/hutchd.log" | head -60
    rc=1
  fi
  local left
  left=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d -path "*/hutch-test-$RUN-sdk/*" 2>/dev/null)
  [[ -n $left ]] && { echo "LEAK CHECK: cgroups left:"; echo "$left"; rc=1; }
  if grep -qF "$state" /proc/self/mountinfo; then
    echo "LEAK CHECK: mounts left:"; grep -F "$state" /proc/self/mountinfo; rc=1
  fi
  # New sandbox-uid processes in our cgroups or in no sandbox cgroup at all
  # (other hutchd instances on this machine use the same uid ranges).
  local now p
  now=$(ps -eo pid=,uid= | awk '$2 >= 1000000000 {print $1}' | sort)
  left=$(comm -13 <(echo "$UID_PIDS_BEFORE") <(echo "$now") | while read -r p; do
    [[ -n $p ]] || continue
    if grep -q "/hutch-test-$RUN-sdk/" "/proc/$p/cgroup" 2>/dev/null ||
       ! grep -q sbx_ "/proc/$p/cgroup" 2>/dev/null; then
      [[ -e /proc/$p ]] && echo "$p"
    fi
  done)
  [[ -n $left ]] && { echo "LEAK CHECK: sandbox-uid processes left:"; ps -o pid,uid,cmd -p "$(paste -sd, <<<"$left")"; rc=1; }
  ((rc == 0)) && echo "LEAK CHECK: hutchd (SDK) left nothing behind"
  return $rc
}

run_sdk() {
  UID_PIDS_BEFORE=$(ps -eo pid=,uid= | awk '$2 >= 1000000000 {print $1}' | sort)
  start_sdk_daemon || return 1
  local rc=0
  # shellcheck disable=SC2086
  in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$SDK_PORT" \
    DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$SDK_PORT" DENO_DEPLOY_TOKEN="$SDK_TOKEN" \
    timeout --kill-after=30 900 node --test --test-reporter=tap ${HUTCH_NODE_TEST_ARGS:-} tests/sdk/ || rc=$?
  stop_sdk_daemon_and_check || rc=1
  if ((rc != 0)); then echo "--- hutchd (SDK) log tail:"; tail -n 30 "$TMP/sdk/hutchd.log"; fi
  return $rc
}

if want sdk; then
  mkdir -p "$TMP/sdk"
  step "SDK (@deno/sandbox 0.13.2)" "$TMP/sdk.log" count_node -- run_sdk
fi

# ---------------------------------------------------------------- summary
echo
echo "=================== hutch test summary ==================="
for s in "${SUMMARY[@]}"; do echo "  $s"; done
echo "==========================================================="
if ((FAILED_STEPS > 0)); then
  echo "FAILED: $FAILED_STEPS step(s) failed"
  ((TOTAL_FAIL == 0)) && TOTAL_FAIL=$FAILED_STEPS
else
  echo "OK: every step passed"
fi
echo "total: $TOTAL_PASS passed, $TOTAL_FAIL failed"
((FAILED_STEPS == 0))
