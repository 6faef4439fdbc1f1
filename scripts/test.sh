#!/usr/bin/env bash
# The whole hutch test suite (run as root after `make deps all image`): unit,
# ASan+UBSan unit, then integration, security and SDK tests against real
# hutchd daemons inside a throwaway network namespace that is always removed.
#
# Environment: HUTCH_TEST_ONLY=unit,asan,fuzz,npm,py,sdk,scale picks steps;
# HUTCH_SCALE_N is the scale step's number of sandboxes (1000), HUTCH_SCALE_ARGS more hutchd flags for it;
# HUTCH_FUZZ_SECONDS is each fuzz target's time (docs/fuzzing.md);
# HUTCH_PYTEST_ARGS / HUTCH_NODE_TEST_ARGS add runner arguments,
# HUTCH_PYTEST_TARGETS replaces the test paths, HUTCH_BIN_DIR points at other
# binaries, KEEP_TMP=1 keeps the logs.
#
# No silent skips: a step whose runner reports a skipped (or xfail/todo) test
# fails unless the skip matches EXPECTED_SKIPS below. A suite that cannot run
# a test has not tested it; CI (CI=true) and a local run are held to the same list.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD=${HUTCH_BUILD:-build}
ONLY=${HUTCH_TEST_ONLY:-unit,asan,fuzz,npm,py,sdk,scale}
RUN=$$
NS=hutch-test-$RUN
# The SDK suite's upstream "internet": one HTTP host in a netns of its own,
# on documentation addresses (RFC 5737 / RFC 3849), joined to $NS by a veth.
UPNS=hutch-test-$RUN-up
UP_NAME=sdk-up.test UP4=192.0.2.2 UP6=2001:db8:2::2
UP_PID=
SDK_CGROUP=hutch-test-$RUN-sdk

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

# Skips that are expected, as extended regexes matched against the runner's
# skip lines (pytest "SKIPPED [1] file:line: reason", TAP "ok N - name # SKIP",
# meson "N/M name SKIP"). Each entry says why it may skip. Today no test may
# skip itself; the only entry is node's report of tests left out by a
# --test-name-pattern in HUTCH_NODE_TEST_ARGS (a targeted run, not a skip).
EXPECTED_SKIPS=(
  '# SKIP test name does not match pattern$'
)
TOTAL_SKIP=0

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

# netns_census: what is left in our namespaces once every step ended: hutch
# nftables tables and sandbox veths (hxs*) in $NS, processes in either, any
# link but lo and the upstream veth. Read-only; prints and fails on a find.
netns_census() {
  local ns left=0 out
  for ns in "$NS" "$UPNS"; do
    ip netns list 2>/dev/null | grep -qw "$ns" || continue
    out=$(ip netns pids "$ns" 2>/dev/null)
    [[ -n $out ]] && { echo "LEAK CHECK: processes left in netns $ns:"; ps -o pid,uid,cmd -p "$(paste -sd, <<<"$out")"; left=1; }
    out=$(ip -n "$ns" -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -vxE 'lo|hxu[0-9a-z]+')
    [[ -n $out ]] && { echo "LEAK CHECK: links left in netns $ns:" $out; left=1; }
    out=$(nsenter --net="/run/netns/$ns" -- nft list tables 2>/dev/null)
    [[ -n $out ]] && { echo "LEAK CHECK: nftables tables left in netns $ns:"; echo "$out"; left=1; }
  done
  ((left == 0))
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
  [[ -n $UP_PID ]] && kill -KILL "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
  # Look before removing anything: deleting the netns would take a leaked
  # veth, nftables table or process with it, unseen.
  if ! netns_census && ((rc == 0)); then rc=1; fi
  # Everything still running in our namespaces was started by this script.
  local ns
  for ns in "$NS" "$UPNS"; do
    ip netns list 2>/dev/null | grep -qw "$ns" || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
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
  ip netns del "$UPNS" 2>/dev/null
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
  local p f k
  read -r p f < <($counter "$log" "$rc")
  k=$(check_skips "${counter#count_}" "$log")
  TOTAL_PASS=$((TOTAL_PASS + p))
  TOTAL_FAIL=$((TOTAL_FAIL + f))
  TOTAL_SKIP=$((TOTAL_SKIP + k))
  if ((k > 0 && rc == 0)); then rc=1; fi
  local verdict=PASS
  if ((rc != 0)); then verdict="FAIL (exit $rc)"; FAILED_STEPS=$((FAILED_STEPS + 1)); fi
  SUMMARY+=("$(printf '%-28s %-16s %4ss  %s passed, %s failed, %s skipped unexpectedly' \
    "$name" "$verdict" $((SECONDS - t0)) "$p" "$f" "$k")")
  return "$rc"
}

# check_skips KIND LOG: prints how many skips in LOG are not in
# EXPECTED_SKIPS (and lists them on stderr). The runner's own skip count
# is compared with the lines found, so a skip is never lost to a format change.
check_skips() {
  local kind=$1 log=$2 lines reported found unexpected=0 line pat ok
  case $kind in
    meson)
      lines=$(grep -E '^ *[0-9]+/[0-9]+ .* (SKIP|EXPECTEDFAIL) ' "$log")
      reported=$(grep -E '^(Skipped|Expected Fail):' "$log" | awk '{s+=$NF} END {print s+0}') ;;
    pytest)
      lines=$(grep -E '^(SKIPPED|XFAIL|XPASS) ' "$log")
      reported=$(grep -E '^=+ .* in [0-9.]+s' "$log" | tail -1 | grep -oE '[0-9]+ (skipped|xfailed|xpassed)' |
                 awk '{s+=$1} END {print s+0}') ;;
    node)
      lines=$(grep -E '^ *(not )?ok [0-9]+ .*# (SKIP|TODO)' "$log")
      reported=$(grep -E '^# (skipped|skip|todo) ' "$log" | awk '{s+=$3} END {print s+0}') ;;
    *) echo 0; return ;;
  esac
  found=0
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    found=$((found + 1))
    ok=
    for pat in "${EXPECTED_SKIPS[@]}"; do [[ $line =~ $pat ]] && ok=1 && break; done
    if [[ -z $ok ]]; then
      echo "test.sh: UNEXPECTED SKIP: $line" >&2
      unexpected=$((unexpected + 1))
    fi
  done <<<"$lines"
  if ((reported > found)); then
    echo "test.sh: UNEXPECTED SKIP: the runner reported $reported skipped, only $found named" >&2
    unexpected=$((unexpected + reported - found))
  fi
  echo "$unexpected"
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
# scripts/fuzz.sh: one line per target, ending "ok" or naming what failed.
count_fuzz() {
  local p f
  p=$(grep -cE '^[a-z0-9_]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+  ok$' "$1")
  f=$(grep -cE '^[a-z0-9_]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+  (CRASH|REGRESSION)' "$1")
  if ((p + f == 0)); then [[ $2 == 0 ]] && echo "1 0" || echo "0 1"; return; fi
  echo "$p $f"
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

# ---------------------------------------------------------------- 2b. fuzz
# Every libFuzzer target briefly (about 3 minutes in all), after replaying
# the crashes found before (tests/fuzz/regressions); `make fuzz` runs longer.
if want fuzz; then
  step "fuzz (libFuzzer, short)" "$TMP/fuzz.log" count_fuzz -- \
    timeout --kill-after=30 900 env FUZZ_OUT="$TMP/fuzz" bash scripts/fuzz.sh "${HUTCH_FUZZ_SECONDS:-12}"
fi

# ---------------------------------------------------------------- 3. SDK deps
if want npm || want sdk || want scale; then
  step "npm ci (tests/sdk)" "$TMP/npm.log" count_rc -- \
    timeout --kill-after=30 600 bash -c 'cd tests/sdk && npm ci --no-audit --no-fund'
  # examples/claude-snapshot: deno and the SDK; its test's fake registry serves test/'s node and npm
  step "npm ci (examples/claude-snapshot)" "$TMP/npm-example.log" count_rc -- \
    timeout --kill-after=30 600 bash -c 'cd examples/claude-snapshot && npm ci --no-audit --no-fund &&
      cd test && npm ci --no-audit --no-fund --ignore-scripts'
fi

# ---------------------------------------------------------------- the netns
if want py || want sdk || want scale; then
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
      "$PY" -m pytest -p no:cacheprovider -rfEsxX --durations=10 \
      ${HUTCH_PYTEST_TARGETS:-tests/integration tests/security tests/cli} ${HUTCH_PYTEST_ARGS:-}
  fi
fi

# ---------------------------------------------------------------- 5. SDK tests
find_bin() {
  local n=$1 sub=$2
  if [[ -n ${HUTCH_BIN_DIR:-} && -x $HUTCH_BIN_DIR/$n ]]; then echo "$HUTCH_BIN_DIR/$n"
  elif [[ -x $BUILD/$n ]]; then echo "$BUILD/$n"; else echo "$BUILD/src/$sub/$n"; fi
}

# start_upstream: $UPNS with an HTTP server on $UP4 and [$UP6] port 80 (any
# GET answers 200 "hello from ADDR"), joined to $NS by the veth hxu$RUN{a,b}.
# hutchd reaches it through --resolve $UP_NAME=...; nothing else is routed.
start_upstream() {
  ip netns add "$UPNS" || return 1
  ip -n "$UPNS" link set lo up
  ip link add "hxu${RUN}a" netns "$NS" type veth peer name "hxu${RUN}b" netns "$UPNS" || return 1
  ip -n "$NS" addr add 192.0.2.1/24 dev "hxu${RUN}a"
  ip -n "$NS" addr add 2001:db8:2::1/64 dev "hxu${RUN}a" nodad
  ip -n "$UPNS" addr add "$UP4/24" dev "hxu${RUN}b"
  ip -n "$UPNS" addr add "$UP6/64" dev "hxu${RUN}b" nodad
  ip -n "$NS" link set "hxu${RUN}a" up
  ip -n "$UPNS" link set "hxu${RUN}b" up
  cat >"$TMP/sdk/upstream.py" <<'PY'
import http.server, socket, socketserver, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"hello from {self.server.server_address[0]}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; allow_reuse_address = True
    def server_bind(self):  # no getfqdn(): no DNS here
        socketserver.TCPServer.server_bind(self); self.server_name = "up"; self.server_port = 80
class S6(S):
    address_family = socket.AF_INET6
for s in (S((sys.argv[1], 80), H), S6((sys.argv[2], 80), H)):
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
PY
  nsenter --net="/run/netns/$UPNS" -- "${PY:-python3}" "$TMP/sdk/upstream.py" "$UP4" "$UP6" \
    </dev/null >"$TMP/sdk/upstream.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 100); do grep -q ready "$TMP/sdk/upstream.log" && return 0; sleep 0.1; done
  echo "test.sh: the SDK upstream server did not start:"; cat "$TMP/sdk/upstream.log"
  return 1
}

stop_upstream() {
  [[ -n $UP_PID ]] || return 0
  kill -KILL "$UP_PID" 2>/dev/null
  wait "$UP_PID" 2>/dev/null
  UP_PID=
}

# The daemon the SDK (and scale) steps drive: D_DIR (its files), D_CG (its
# cgroup name), D_ARGS (its own flags), D_ASAN (1: the ASan+UBSan build).
D_DIR=$TMP/sdk D_CG=$SDK_CGROUP D_ASAN=1
D_ARGS=(--disk 1024 --storage-size 4GiB  # promised in full: fit a small CI disk
        --deno-call-timeout 15000)       # deno.test.mjs: a REPL call that never answers fails in 15 s
start_sdk_daemon() {
  local hutchd init port state=$D_DIR/state
  hutchd=$(find_bin hutchd daemon)
  init=$(find_bin hutch-init init)
  # The SDK suite drives the ASan+UBSan build of hutchd (and of hutch-proxy
  # next to it) when there is one: the daemon's real traffic under the
  # sanitizers. hutch-init stays the normal build (PID 1 of a sandbox).
  local asan asan_env=()
  asan=$(asan_daemon)
  # fs.test.mjs bounds hutchd's RSS growth over a 200 MB round trip at
  # 32 MiB: ASan's default 256 MiB quarantine of freed blocks would count as
  # growth. 16 MiB still catches a use of anything freed in the last 16 MiB.
  [[ -n $asan && $D_ASAN == 1 ]] && hutchd=$asan && asan_env=(env "ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=16")
  mkdir -p "$state"
  port=$(in_ns "${PY:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local args=(--state-dir "$state" --listen "127.0.0.1:$port" --socket "$D_DIR/hutchd.sock"
              --cgroup-name "$D_CG" --resolve "$UP_NAME=$UP4" --resolve "$UP_NAME=$UP6"
              --dns-upstream 127.0.0.1:9   # no DNS off the machine
              "${D_ARGS[@]}")
  [[ -x $init ]] && args+=(--init "$init")
  [[ -n ${HUTCH_IMAGE_CACHE:-} ]] && args+=(--image-cache "$HUTCH_IMAGE_CACHE")
  # the web dashboard's files (make dashboard): the ASan hutchd has none beside it
  [[ -f $BUILD/dashboard/index.html ]] && args+=(--dashboard-dir "$(realpath "$BUILD/dashboard")")
  echo "starting $hutchd ${args[*]}"
  # nsenter execs hutchd: $! is hutchd itself (a function here would add a subshell)
  # (env execs too: $! stays hutchd's pid)
  nsenter --net="/run/netns/$NS" -- "${asan_env[@]}" "$hutchd" "${args[@]}" </dev/null >"$D_DIR/hutchd.log" 2>&1 &
  SDK_PID=$!
  local ok=
  for _ in $(seq 300); do
    kill -0 "$SDK_PID" 2>/dev/null || break
    if grep -q 'hutchd: listening on http://' "$D_DIR/hutchd.log" ||
       in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then ok=1; break; fi
    sleep 0.1
  done
  for _ in $(seq 50); do [[ -s $state/admin.token ]] && break; sleep 0.1; done
  if [[ -z $ok || ! -s $state/admin.token ]]; then
    echo "hutchd for the SDK tests did not start; its log:"
    tail -n 40 "$D_DIR/hutchd.log"
    return 1
  fi
  SDK_PORT=$port
  SDK_TOKEN=$(cat "$state/admin.token")
}

stop_sdk_daemon_and_check() {
  local rc=0 state=$D_DIR/state
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
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|LeakSanitizer has encountered a fatal error|Sanitizer: CHECK failed|runtime error:' "$D_DIR/hutchd.log"; then
    echo "SANITIZER: hutchd reported errors:"; grep -E -A20 'ERROR: (Address|Leak)Sanitizer|LeakSanitizer has encountered a fatal error|Sanitizer: CHECK failed|runtime error:' "$D_DIR/hutchd.log" | head -60
    rc=1
  fi
  local left
  left=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d -path "*/$D_CG/*" 2>/dev/null)
  [[ -n $left ]] && { echo "LEAK CHECK: cgroups left:"; echo "$left"; rc=1; }
  if grep -qF "$state" /proc/self/mountinfo; then
    echo "LEAK CHECK: mounts left:"; grep -F "$state" /proc/self/mountinfo; rc=1
  fi
  local dev
  left=$(for dev in /sys/block/loop*/loop/backing_file; do
    [[ -r $dev ]] && grep -qF "$state/" "$dev" 2>/dev/null && echo "${dev%/loop/backing_file} -> $(cat "$dev")"
  done)
  [[ -n $left ]] && { echo "LEAK CHECK: loop devices left:"; echo "$left"; rc=1; }
  # hutchd deletes its nftables table at exit: one left still carries
  # sandbox rules and set elements. Read-only look inside hutchd's netns.
  local table=hutch_${D_CG//[^A-Za-z0-9]/_}
  if left=$(in_ns nft list table inet "$table" 2>/dev/null); then
    echo "LEAK CHECK: nftables table inet $table left:"; echo "$left" | head -40; rc=1
  fi
  left=$(in_ns ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -E '^hxs')
  [[ -n $left ]] && { echo "LEAK CHECK: sandbox veths left in hutchd's netns:" $left; rc=1; }
  # New sandbox-uid processes in our cgroups or in no sandbox cgroup at all
  # (other hutchd instances on this machine use the same uid ranges).
  # A leak stays; another daemon's process in transit does not: counted are
  # only the pids found in two looks 2 s apart and alive after the second.
  left=$(uid_leftovers)
  if [[ -n $left ]]; then
    sleep 2
    left=$(comm -12 <(echo "$left") <(uid_leftovers) | while read -r p; do [[ -e /proc/$p ]] && echo "$p"; done)
  fi
  [[ -n $left ]] && { echo "LEAK CHECK: sandbox-uid processes left:"; ps -o pid,uid,cmd -p "$(paste -sd, <<<"$left")"; rc=1; }
  ((rc == 0)) && echo "LEAK CHECK: hutchd (SDK) left nothing behind"
  return $rc
}

# Sandbox-uid processes that were not there before the run, in our cgroups
# or in no sandbox cgroup at all and not below another daemon; sorted.
uid_leftovers() {
  local now p
  now=$(ps -eo pid=,uid= | awk '$2 >= 1000000000 {print $1}' | sort)
  comm -13 <(echo "$UID_PIDS_BEFORE") <(echo "$now") | while read -r p; do
    [[ -n $p ]] || continue
    if grep -q "/$D_CG/" "/proc/$p/cgroup" 2>/dev/null; then
      echo "$p"
    elif [[ -e /proc/$p ]] && ! grep -q sbx_ "/proc/$p/cgroup" 2>/dev/null; then
      # not in a sandbox cgroup yet, below another live hutchd: that
      # daemon's create in progress (ours were re-parented when ours exited)
      another_daemons "$p" || { [[ -e /proc/$p ]] && echo "$p"; }
    fi
  done | sort
}

# Whether pid's parent or an ancestor is a live hutchd, or sits in another
# daemon's sandbox cgroup (pid itself is in none).
another_daemons() {
  local pid i
  pid=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $2}')
  for ((i = 0; i < 16; i++)); do
    [[ -z $pid || $pid == 0 || $pid == 1 || $pid == "$$" ]] && return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1 | grep -q hutchd && return 0
    if grep -q sbx_ "/proc/$pid/cgroup" 2>/dev/null; then
      grep -q "/$D_CG/" "/proc/$pid/cgroup" && return 1
      return 0
    fi
    pid=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $2}')
  done
  return 1
}

run_sdk() {
  UID_PIDS_BEFORE=$(ps -eo pid=,uid= | awk '$2 >= 1000000000 {print $1}' | sort)
  start_upstream || { stop_upstream; return 1; }
  start_sdk_daemon || { stop_upstream; return 1; }
  local rc=0
  # HUTCHD_PID: the memory bounds measure the daemon itself;
  # HUTCH_NET_TEST_HOST: the allowNet test's host (the upstream above).
  # shellcheck disable=SC2086
  in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$SDK_PORT" \
    DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$SDK_PORT" DENO_DEPLOY_TOKEN="$SDK_TOKEN" \
    HUTCHD_PID="$SDK_PID" HUTCH_NET_TEST_HOST="$UP_NAME" \
    timeout --kill-after=30 900 node --test --test-reporter=tap ${HUTCH_NODE_TEST_ARGS:-} tests/sdk/ || rc=$?
  stop_sdk_daemon_and_check || rc=1
  stop_upstream
  if ((rc != 0)); then echo "--- hutchd (SDK) log tail:"; tail -n 30 "$TMP/sdk/hutchd.log"; fi
  return $rc
}

if want sdk; then
  mkdir -p "$TMP/sdk"
  step "SDK (@deno/sandbox 0.13.2)" "$TMP/sdk.log" count_node -- run_sdk
fi

# ---------------------------------------------------------------- 6. scale
# SCALE_N sandboxes alive at once, every one streaming (issue 11.5;
# tests/scale/scale.test.mjs). The normal build of hutchd (the ASan one runs
# everything above); writable layers on a tmpfs of this step's own, so that
# 1,000 promised layers fit any CI disk. The numbers go to the bench table.
SCALE_N=${HUTCH_SCALE_N:-1000}
run_scale() {
  UID_PIDS_BEFORE=$(ps -eo pid=,uid= | awk '$2 >= 1000000000 {print $1}' | sort)
  D_DIR=$TMP/scale D_CG=hutch-test-$RUN-scale D_ASAN=0
  mkdir -p "$D_DIR/disks"
  mount -t tmpfs -o size=$((SCALE_N * 17 + 512))m,mode=0700 hutch-scale "$D_DIR/disks" || return 1
  # --loop-stall-ms: hutchd logs each event loop iteration busier than that
  # (or that waited as long for a CPU); counted below (HUTCH_SCALE_LOOP_STALL_MS=0: off)
  local stall_ms=${HUTCH_SCALE_LOOP_STALL_MS:-100}
  D_ARGS=(--disk 16 --disk-dir "$D_DIR/disks" --disk-reserve 64 --max-sandboxes $((SCALE_N + 20)) --storage-size 1GiB)
  ((stall_ms > 0)) && D_ARGS+=(--loop-stall-ms "$stall_ms")
  # HUTCH_SCALE_ARGS: more hutchd flags for this step (an A/B of an option, e.g. "--sandbox-slice-us 100")
  # shellcheck disable=SC2206
  D_ARGS+=(${HUTCH_SCALE_ARGS:-})
  local rc=0
  if start_sdk_daemon; then
    # shellcheck disable=SC2086
    in_ns env DENO_SANDBOX_ENDPOINT="http://127.0.0.1:$SDK_PORT" \
      DENO_DEPLOY_ENDPOINT="http://127.0.0.1:$SDK_PORT" DENO_DEPLOY_TOKEN="$SDK_TOKEN" SCALE_N="$SCALE_N" \
      HUTCHD_PID="$SDK_PID" HUTCH_CGROUP_NAME="$D_CG" \
      timeout --kill-after=30 1800 node --test --test-reporter=tap tests/scale/ || rc=$?
  else
    rc=1
  fi
  stop_sdk_daemon_and_check || rc=1
  if ((stall_ms > 0)); then
    echo "# hutchd event loop stalls (--loop-stall-ms $stall_ms): $(grep -c 'event loop stalled' "$D_DIR/hutchd.log")"
    grep 'event loop stalled' "$D_DIR/hutchd.log" | sort -t' ' -k8 -g -r | head -5 | sed 's/^/#   /'
  fi
  umount "$D_DIR/disks" || { echo "LEAK CHECK: the scale step's tmpfs is still mounted"; rc=1; }
  if ((rc != 0)); then echo "--- hutchd (scale) log tail:"; tail -n 30 "$D_DIR/hutchd.log"; fi
  return $rc
}

if want scale; then
  step "scale ($SCALE_N sandboxes at once)" "$TMP/scale.log" count_node -- run_scale
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
echo "total: $TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped unexpectedly"
((FAILED_STEPS == 0))
